//! TLS for the PostgreSQL task store: the `sslmode` of `PIXMILL_DATABASE_URL` and the CA
//! file `PIXMILL_DATABASE_CA_FILE`, turned into a tokio-postgres configuration and a
//! rustls connector.
//!
//! | `sslmode`     | TLS      | certificate checked                                   |
//! |---------------|----------|-------------------------------------------------------|
//! | (none), `disable` | no   | –                                                     |
//! | `require`     | required | nothing: encrypts against eavesdropping only           |
//! | `verify-ca`   | required | chain to a trusted CA (system store + CA file)         |
//! | `verify-full` | required | chain to a trusted CA, and the URL's host is in the certificate |
//!
//! `prefer` and `allow` are refused: either may end up in plain text without saying so.
//! A required TLS session that cannot be had is an error; there is no plain fallback.

use std::sync::Arc;

use rustls::{
    DigitallySignedStruct, SignatureScheme,
    client::{
        WebPkiServerVerifier,
        danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier},
    },
    pki_types::{CertificateDer, ServerName, UnixTime, pem::PemObject},
};
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

/// The setting naming extra CA certificates for the database server.
pub const CA_FILE_VAR: &str = "PIXMILL_DATABASE_CA_FILE";

/// How the connection to PostgreSQL is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsMode {
    Disable,
    Require,
    VerifyCa,
    VerifyFull,
}

/// Splits `sslmode` off a `postgres://` URL (tokio-postgres knows only disable, prefer
/// and require) and returns the URL without it, and the mode.
pub fn split_sslmode(url: &str) -> Result<(String, TlsMode), String> {
    let Some((base, query)) = url.split_once('?') else {
        return Ok((url.to_string(), TlsMode::Disable));
    };
    let mut mode = TlsMode::Disable;
    let mut rest = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => {
                mode = match value {
                    "disable" => TlsMode::Disable,
                    "require" => TlsMode::Require,
                    "verify-ca" => TlsMode::VerifyCa,
                    "verify-full" => TlsMode::VerifyFull,
                    "prefer" | "allow" => {
                        return Err(format!(
                            "sslmode={value} may connect in plain text without saying so; \
                             use disable, require, verify-ca or verify-full"
                        ));
                    }
                    other => {
                        return Err(format!(
                            "unknown sslmode={other}; use disable, require, verify-ca or verify-full"
                        ));
                    }
                }
            }
            _ => rest.push(pair),
        }
    }
    Ok(if rest.is_empty() {
        (base.to_string(), mode)
    } else {
        (format!("{base}?{}", rest.join("&")), mode)
    })
}

/// The tokio-postgres configuration and TLS connector for `url`, with the CA file
/// `ca_file` (PEM) trusted besides the system's store.
pub fn config(
    url: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), String> {
    let (plain_url, mode) = split_sslmode(url)?;
    let mut config: tokio_postgres::Config = plain_url
        .parse()
        .map_err(|e| format!("postgres URL: {e}"))?;
    config.ssl_mode(match mode {
        TlsMode::Disable => SslMode::Disable,
        _ => SslMode::Require,
    });
    Ok((config, connector(mode, ca_file)?))
}

/// An error with its causes, `outer: inner: …`: tokio-postgres's own text for a failed
/// handshake ("error performing TLS handshake") leaves out why.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.ends_with(&cause_text) {
            text = format!("{text}: {cause_text}");
        }
        source = cause.source();
    }
    text
}

/// `PIXMILL_DATABASE_CA_FILE` from the environment, if set and not empty.
pub fn ca_file_from_env() -> Option<std::path::PathBuf> {
    std::env::var_os(CA_FILE_VAR)
        .filter(|p| !p.is_empty())
        .map(Into::into)
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn connector(
    mode: TlsMode,
    ca_file: Option<&std::path::Path>,
) -> Result<MakeRustlsConnect, String> {
    let builder = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let config = match mode {
        // Never used for a disabled session, but tokio-postgres wants a connector.
        TlsMode::Disable | TlsMode::Require => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(EncryptOnly(provider())))
            .with_no_client_auth(),
        TlsMode::VerifyCa | TlsMode::VerifyFull => {
            let verifier =
                WebPkiServerVerifier::builder_with_provider(Arc::new(roots(ca_file)?), provider())
                    .build()
                    .map_err(|e| format!("TLS set-up: {e}"))?;
            if mode == TlsMode::VerifyCa {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(AnyName(verifier)))
                    .with_no_client_auth()
            } else {
                builder.with_webpki_verifier(verifier).with_no_client_auth()
            }
        }
    };
    Ok(MakeRustlsConnect::new(config))
}

/// The system's CA store plus the certificates of `ca_file`.
fn roots(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if let Some(path) = ca_file {
        let certs = CertificateDer::pem_file_iter(path)
            .map_err(|e| format!("{CA_FILE_VAR} {}: {e}", path.display()))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("{CA_FILE_VAR} {}: {e}", path.display()))?;
        if certs.is_empty() {
            return Err(format!(
                "{CA_FILE_VAR} {} holds no PEM certificate",
                path.display()
            ));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| format!("{CA_FILE_VAR} {}: {e}", path.display()))?;
        }
    }
    if roots.is_empty() {
        return Err(format!(
            "no CA certificates to verify the database server with: the system has none, \
             and {CA_FILE_VAR} is unset"
        ));
    }
    Ok(roots)
}

/// `sslmode=require`: the session is encrypted, and the server's certificate is not
/// checked at all (as libpq's `require` without a root certificate). The handshake
/// signatures are still verified, so the session key belongs to whoever holds the
/// certificate the server presented.
#[derive(Debug)]
struct EncryptOnly(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for EncryptOnly {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `sslmode=verify-ca`: the chain must lead to a trusted CA; the host name is not
/// compared with the certificate.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::NotValidForName
                | rustls::CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sslmode_is_taken_off_the_url() {
        assert_eq!(
            split_sslmode("postgres://u@h/db").expect("ok"),
            ("postgres://u@h/db".into(), TlsMode::Disable)
        );
        assert_eq!(
            split_sslmode("postgres://u@h/db?sslmode=verify-full&application_name=x").expect("ok"),
            (
                "postgres://u@h/db?application_name=x".into(),
                TlsMode::VerifyFull
            )
        );
        assert_eq!(
            split_sslmode("postgres://u@h/db?sslmode=require").expect("ok"),
            ("postgres://u@h/db".into(), TlsMode::Require)
        );
        let prefer = split_sslmode("postgres://u@h/db?sslmode=prefer").expect_err("refused");
        assert!(prefer.contains("plain text"), "{prefer}");
        assert!(split_sslmode("postgres://u@h/db?sslmode=bogus").is_err());
    }
}

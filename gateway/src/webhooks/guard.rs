//! The guard on callback URLs: http(s) only, no credentials, and no loopback, private,
//! link-local or otherwise non-public address unless the host is on
//! `PIXMILL_WEBHOOK_ALLOW` (when that list is set, only its hosts are allowed).

use std::{
    net::{IpAddr, SocketAddr},
    time::Duration,
};

use super::WebhookSettings;
use crate::error::{ApiCode, ApiError};

/// Checks a `callback_url` at submit time: the answer is a 422 naming the rule broken.
pub async fn check_url(settings: &WebhookSettings, raw: &str) -> Result<String, ApiError> {
    let refused = |why: String| {
        ApiError::new(
            ApiCode::CallbackNotAllowed,
            format!("callback_url {raw:?} is refused: {why}"),
        )
    };
    if settings.secret.is_none() {
        return Err(refused(
            "webhooks are off on this gateway (set PIXMILL_WEBHOOK_SECRET to sign them)".into(),
        ));
    }
    if raw.len() > 2048 {
        return Err(refused("it is longer than 2048 characters".into()));
    }
    resolve(settings, raw).await.map_err(refused)?;
    Ok(raw.to_string())
}

/// Parses and resolves a callback URL under the rules above; returns the URL, its host
/// and the one address to connect to.
pub(super) async fn resolve(
    settings: &WebhookSettings,
    raw: &str,
) -> Result<(reqwest::Url, String, SocketAddr), String> {
    let url = reqwest::Url::parse(raw).map_err(|e| format!("not a URL ({e})"))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("only http and https are allowed".into());
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("credentials in the URL are not allowed".into());
    }
    let host = url.host_str().ok_or("it has no host")?.to_string();
    let port = url.port_or_known_default().ok_or("it has no port")?;
    let listed = settings.allow.iter().any(|a| {
        a.eq_ignore_ascii_case(&host) || a.eq_ignore_ascii_case(&format!("{host}:{port}"))
    });
    if !settings.allow.is_empty() && !listed {
        return Err(format!("{host} is not on PIXMILL_WEBHOOK_ALLOW"));
    }
    let lookup = tokio::time::timeout(
        Duration::from_secs(3),
        tokio::net::lookup_host((host.trim_matches(['[', ']']), port)),
    )
    .await
    .map_err(|_| format!("{host} did not resolve within 3 s"))?
    .map_err(|e| format!("{host} does not resolve ({e})"))?;
    let addrs: Vec<SocketAddr> = lookup.collect();
    let first = *addrs
        .first()
        .ok_or_else(|| format!("{host} has no address"))?;
    if !listed && let Some(bad) = addrs.iter().find(|a| !is_public(a.ip())) {
        return Err(format!(
            "{host} resolves to {}, a loopback, private or otherwise non-public address \
             (name the host in PIXMILL_WEBHOOK_ALLOW to allow it)",
            bad.ip()
        ));
    }
    Ok((url, host, first))
}

/// True for an address on the public internet.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            !(v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
                || (a == 198 && (b == 18 || b == 19)) // benchmarking
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let first = v6.segments()[0];
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (first & 0xfe00) == 0xfc00 // unique local
                || (first & 0xffc0) == 0xfe80) // link local
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_public_addresses_pass() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
        ] {
            assert!(!is_public(private.parse().expect("ip")), "{private}");
        }
        for public in ["93.184.216.34", "1.1.1.1", "2606:4700:4700::1111"] {
            assert!(is_public(public.parse().expect("ip")), "{public}");
        }
    }

    #[tokio::test]
    async fn callbacks_to_private_or_unlisted_hosts_are_refused() {
        let open = WebhookSettings {
            secret: Some("s".into()),
            ..WebhookSettings::default()
        };
        for url in [
            "http://127.0.0.1:9/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/x",
            "ftp://example.com/x",
            "http://user:pw@example.com/",
            "not a url",
        ] {
            let err = check_url(&open, url).await.expect_err(url);
            assert!(err.to_string().contains("is refused"), "{url}: {err}");
        }
        let listed = WebhookSettings {
            allow: vec!["127.0.0.1".into()],
            ..open.clone()
        };
        check_url(&listed, "http://127.0.0.1:9/hook")
            .await
            .expect("listed");
        let err = check_url(&listed, "http://localhost:9/hook")
            .await
            .expect_err("unlisted");
        assert!(err.to_string().contains("PIXMILL_WEBHOOK_ALLOW"), "{err}");
        let off = WebhookSettings::default();
        let err = check_url(&off, "http://127.0.0.1:9/")
            .await
            .expect_err("off");
        assert!(err.to_string().contains("PIXMILL_WEBHOOK_SECRET"), "{err}");
    }
}

//! Delivery signatures: `Pixmill-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"`, with the secret of the job's tenant.
//!
//! Each tenant has its own secret, derived from `PIXMILL_WEBHOOK_SECRET` (the master) by
//! [`tenant_secret`], so a receiver holds only its own tenant's secret and cannot sign a
//! delivery that another tenant's receiver would accept. Nothing is stored: any gateway
//! with the master derives the same secret, and changing the master changes them all.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The header a delivery's signature travels in.
pub const SIGNATURE_HEADER: &str = "Pixmill-Signature";

/// What a tenant's secret is derived under: the master signs this label followed by the
/// tenant's name, so the master's HMACs for other uses can never be a tenant's secret. A
/// new way of deriving secrets would take a new label (`v2`).
pub const TENANT_SECRET_LABEL: &[u8] = b"pixmill webhook secret v1\0";

/// Lowercase hex of HMAC-SHA256 of `parts`, in order, under `key`.
fn hmac_hex(key: &[u8], parts: &[&[u8]]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    for part in parts {
        mac.update(part);
    }
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The webhook secret of `tenant`: lowercase hex of HMAC-SHA256 with `master`
/// (`PIXMILL_WEBHOOK_SECRET`) as the key over [`TENANT_SECRET_LABEL`] followed by the
/// tenant's name. Receivers use these 64 characters, as text, as their HMAC key.
pub fn tenant_secret(master: &str, tenant: &str) -> String {
    hmac_hex(master.as_bytes(), &[TENANT_SECRET_LABEL, tenant.as_bytes()])
}

/// `t=<unix>,v1=<hex>`: the signature header for `body` at `timestamp`, with `secret` (a
/// tenant's, from [`tenant_secret`]).
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let hex = hmac_hex(
        secret.as_bytes(),
        &[timestamp.to_string().as_bytes(), b".", body],
    );
    format!("t={timestamp},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stripe_style_and_stable() {
        // HMAC-SHA256("secret", "1700000000.{}"), computed independently (Python's hmac).
        let sig = signature("secret", 1_700_000_000, b"{}");
        assert_eq!(
            sig,
            "t=1700000000,v1=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163"
        );
        assert_ne!(sig, signature("secret", 1_700_000_001, b"{}"));
        assert_ne!(sig, signature("other", 1_700_000_000, b"{}"));
    }

    /// Fixed vectors, computed independently with Python:
    /// `hmac.new(master, b"pixmill webhook secret v1\0" + tenant, hashlib.sha256).hexdigest()`.
    #[test]
    fn tenant_secrets_are_derived_from_the_master() {
        assert_eq!(
            tenant_secret("test-webhook-secret", "alpha"),
            "657570e2705032d94701c4dafa3351e2d790e3b39daee305013391b3e57c88c9"
        );
        assert_eq!(
            tenant_secret("test-webhook-secret", "beta"),
            "3221cd6a9aa682f1fdb09c6ca7a47363bf2df83b6d067ec82bfb5bf6d694eedc"
        );
        assert_eq!(
            tenant_secret("secret", "local"),
            "f4e0103641294cd2bc8f4ac731bc21cd67c1a4f4b73a205d6efad4e2d0321b89"
        );
        // Neither the master nor another tenant's secret verifies a tenant's delivery.
        let body = br#"{"id":"4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27"}"#;
        let alpha = signature(&tenant_secret("m", "alpha"), 1_700_000_000, body);
        assert_ne!(
            alpha,
            signature(&tenant_secret("m", "beta"), 1_700_000_000, body)
        );
        assert_ne!(alpha, signature("m", 1_700_000_000, body));
        assert_ne!(tenant_secret("m", "alpha"), tenant_secret("n", "alpha"));
    }
}

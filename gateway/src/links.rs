//! Signed result links: `GET /v1/jobs/{id}/result?exp=<unix seconds>&kid=<key id>&sig=<sig>`
//! is served without a credential while the link has not expired, so `<img src>` and
//! shared links keep working when the API asks for one.
//!
//! `sig` is the unpadded base64url HMAC-SHA256, under the key named by `kid`, of one
//! canonical string ([`canonical`]):
//!
//! ```text
//! GET\n/v1/jobs/<id, lowercase hyphenated>/result\n<exp>\n<kid>
//! ```
//!
//! A link is checked by parsing its parts (the id from the path; `exp`, `kid` and `sig`
//! from the query, each exactly once), rebuilding that string from the parsed values and
//! comparing its MAC in constant time. Nothing is cut out of or replaced in the URL, so no
//! spelling of the URL can make the gateway check one string and serve another.
//!
//! The keys come from `PIXMILL_LINK_KEYS` (`kid:secret,kid:secret`): the first signs new
//! links and every listed key verifies, so a key is rotated by putting a new one first
//! and removing the old one once its links may expire.

use std::{
    fmt,
    sync::Arc,
    time::{SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

use crate::error::{ApiCode, ApiError};

/// The shortest secret accepted, in bytes: HMAC-SHA256's own output size.
pub const MIN_SECRET_BYTES: usize = 32;
/// The longest key id, in characters.
pub const MAX_KID_CHARS: usize = 32;
/// A link's life when the request names none: an hour.
pub const DEFAULT_TTL_SECS: u64 = 3600;
/// The longest life a link may be given: 7 days.
pub const MAX_TTL_SECS: u64 = 7 * 86_400;
/// How long a result may be cached when it is not served through a link.
pub const RESULT_MAX_AGE_SECS: u64 = 86_400;

/// The one string a link's signature covers: the method, the result path of job `id`
/// (its lowercase hyphenated form), the expiry and the key id, one per line.
pub fn canonical(id: Uuid, exp: u64, kid: &str) -> String {
    format!("GET\n/v1/jobs/{}/result\n{exp}\n{kid}", id.as_hyphenated())
}

/// One key: its id, which links name, and its secret.
#[derive(Clone)]
struct LinkKey {
    kid: String,
    secret: Vec<u8>,
}

impl fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LinkKey")
            .field("kid", &self.kid)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl LinkKey {
    /// The MAC of `canonical` under this key.
    fn mac(&self, canonical: &str) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes any key");
        mac.update(canonical.as_bytes());
        mac
    }
}

/// The link keys, `PIXMILL_LINK_KEYS`: the first signs, all verify. None: links are off.
/// Its `Debug` names the key ids only.
#[derive(Debug, Clone, Default)]
pub struct LinkKeys(Arc<[LinkKey]>);

/// A minted link: the path and query to fetch the result with, and its expiry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedLink {
    /// `/v1/jobs/<id>/result?exp=…&kid=…&sig=…`, relative to the gateway.
    pub url: String,
    /// Unix seconds; the link is refused from this second on.
    pub exp: u64,
}

impl LinkKeys {
    /// Parses `kid:secret,kid:secret`. Key ids are 1 to 32 of `A-Z a-z 0-9 . _ -`, each
    /// listed once; secrets are at least [`MIN_SECRET_BYTES`] bytes. Errors name the key
    /// id, never a secret.
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut keys: Vec<LinkKey> = Vec::new();
        for (n, entry) in text.split(',').map(str::trim).enumerate() {
            if entry.is_empty() {
                continue;
            }
            let Some((kid, secret)) = entry.split_once(':') else {
                return Err(format!(
                    "entry {} has no `:`; expected kid:secret,kid:secret",
                    n + 1
                ));
            };
            let kid = kid.trim();
            let valid_kid = (1..=MAX_KID_CHARS).contains(&kid.len())
                && kid
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
            if !valid_kid {
                return Err(format!(
                    "entry {}: a key id is 1 to {MAX_KID_CHARS} of A-Z a-z 0-9 . _ -",
                    n + 1
                ));
            }
            if keys.iter().any(|k| k.kid == kid) {
                return Err(format!("key id {kid:?} is listed twice"));
            }
            let secret = secret.trim();
            if secret.len() < MIN_SECRET_BYTES {
                return Err(format!(
                    "the secret of key {kid:?} is {} bytes; at least {MIN_SECRET_BYTES} are needed \
                     (e.g. `openssl rand -hex 32`)",
                    secret.len()
                ));
            }
            keys.push(LinkKey {
                kid: kid.into(),
                secret: secret.as_bytes().to_vec(),
            });
        }
        Ok(Self(keys.into()))
    }

    /// True when at least one key is configured.
    pub fn is_on(&self) -> bool {
        !self.0.is_empty()
    }

    /// The key ids, the signing one first.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(|k| k.kid.as_str())
    }

    /// A link to job `id`'s result that expires at `exp` (Unix seconds), signed with the
    /// first key; `None` when links are off.
    pub fn sign(&self, id: Uuid, exp: u64) -> Option<SignedLink> {
        let key = self.0.first()?;
        let sig = URL_SAFE_NO_PAD.encode(
            key.mac(&canonical(id, exp, &key.kid))
                .finalize()
                .into_bytes(),
        );
        Some(SignedLink {
            url: format!(
                "/v1/jobs/{}/result?exp={exp}&kid={}&sig={sig}",
                id.as_hyphenated(),
                key.kid
            ),
            exp,
        })
    }

    /// Checks the link `parts` on a request for the result of `id` (the path segment) at
    /// `now` (Unix seconds). Answers its expiry, or 403 `link_invalid` or `link_expired`.
    pub fn verify(&self, id: &str, parts: &LinkParts, now: u64) -> Result<u64, ApiError> {
        let invalid = |why: &str| ApiError::new(ApiCode::LinkInvalid, why);
        if !self.is_on() {
            return Err(invalid(
                "signed links are off on this gateway (PIXMILL_LINK_KEYS is unset)",
            ));
        }
        let id = Uuid::parse_str(id).map_err(|_| invalid("the link's path does not name a job"))?;
        // Only the canonical spelling: digits, no sign, no leading zero.
        let exp = parts
            .exp
            .parse::<u64>()
            .ok()
            .filter(|e| e.to_string() == parts.exp)
            .ok_or_else(|| invalid("the link's exp is not a whole number of Unix seconds"))?;
        let key = self.0.iter().find(|k| k.kid == parts.kid).ok_or_else(|| {
            invalid("the link's kid names no key this gateway holds (unknown, or retired)")
        })?;
        // The decoder refuses padding and non-zero trailing bits, so each signature has
        // exactly one spelling.
        let sig = URL_SAFE_NO_PAD
            .decode(&parts.sig)
            .map_err(|_| invalid("the link's sig is not unpadded base64url"))?;
        key.mac(&canonical(id, exp, &key.kid))
            .verify_slice(&sig)
            .map_err(|_| {
                invalid(
                    "the link's signature does not match: it was changed, or made for another job",
                )
            })?;
        if now >= exp {
            return Err(ApiError::new(
                ApiCode::LinkExpired,
                format!("the link expired at {}; ask for a new one", rfc3339(exp)),
            ));
        }
        Ok(exp)
    }
}

/// The link in a result request's query: `exp`, `kid` and `sig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinkParts {
    pub exp: String,
    pub kid: String,
    pub sig: String,
}

impl LinkParts {
    /// The link in a decoded query string: `None` when it has no `sig` (not a link);
    /// 403 `link_invalid` when `sig` is there but `exp`, `kid` or `sig` is missing or
    /// given twice.
    pub fn from_query(query: &[(String, String)]) -> Result<Option<Self>, ApiError> {
        if !query.iter().any(|(name, _)| name == "sig") {
            return Ok(None);
        }
        let once = |name: &str| {
            let mut values = query.iter().filter(|(n, _)| n == name).map(|(_, v)| v);
            match (values.next(), values.next()) {
                (Some(value), None) => Ok(value.clone()),
                (None, _) => Err(ApiError::new(
                    ApiCode::LinkInvalid,
                    format!("the link has no `{name}`; a link has exp, kid and sig"),
                )),
                (Some(_), Some(_)) => Err(ApiError::new(
                    ApiCode::LinkInvalid,
                    format!("the link gives `{name}` more than once"),
                )),
            }
        };
        Ok(Some(Self {
            exp: once("exp")?,
            kid: once("kid")?,
            sig: once("sig")?,
        }))
    }
}

/// The `Cache-Control` of a result: a day, or no longer than the link it was fetched
/// through has left (`exp`, at `now`).
pub fn result_cache_control(link_exp: Option<u64>, now: u64) -> String {
    let max_age = match link_exp {
        Some(exp) => exp.saturating_sub(now).min(RESULT_MAX_AGE_SECS),
        None => RESULT_MAX_AGE_SECS,
    };
    format!("private, max-age={max_age}, immutable")
}

/// The time now, in Unix seconds.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Unix seconds as RFC 3339 (UTC).
pub fn rfc3339(secs: u64) -> String {
    i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "9999-12-31T23:59:59Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27";
    const OTHER: &str = "00000000-0000-4000-8000-000000000000";
    const NOW: u64 = 1_764_583_200;
    const SECRET_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const SECRET_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";

    fn id() -> Uuid {
        Uuid::parse_str(ID).expect("uuid")
    }

    fn keys(text: &str) -> LinkKeys {
        LinkKeys::parse(text).expect("keys")
    }

    /// The link parts of a minted URL, and the job id of its path.
    fn parts_of(url: &str) -> (String, LinkParts) {
        let (path, query) = url.split_once('?').expect("query");
        let id = path
            .strip_prefix("/v1/jobs/")
            .and_then(|p| p.strip_suffix("/result"))
            .expect("result path");
        let pairs: Vec<(String, String)> = query
            .split('&')
            .map(|pair| {
                let (k, v) = pair.split_once('=').expect("k=v");
                (k.to_string(), v.to_string())
            })
            .collect();
        (
            id.to_string(),
            LinkParts::from_query(&pairs)
                .expect("parts")
                .expect("a link"),
        )
    }

    fn code(result: Result<u64, ApiError>) -> Option<ApiCode> {
        result.err().map(|e| e.code())
    }

    #[test]
    fn the_canonical_string_is_pinned() {
        assert_eq!(
            canonical(id(), 1_764_586_800, "k1"),
            "GET\n/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27/result\n1764586800\nk1"
        );
        // An uppercase id is the same job, so the same string.
        let upper = Uuid::parse_str(&ID.to_uppercase()).expect("uuid");
        assert_eq!(canonical(upper, 1, "k"), canonical(id(), 1, "k"));
    }

    /// Pins the signature: HMAC-SHA256 of the canonical string, unpadded base64url.
    #[test]
    fn signatures_are_pinned() {
        let link = keys(&format!("k1:{SECRET_A}"))
            .sign(id(), 1_764_586_800)
            .expect("on");
        let mut mac = Hmac::<Sha256>::new_from_slice(SECRET_A.as_bytes()).expect("key");
        mac.update(b"GET\n/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27/result\n1764586800\nk1");
        let sig = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(sig.len(), 43);
        assert_eq!(
            link.url,
            format!("/v1/jobs/{ID}/result?exp=1764586800&kid=k1&sig={sig}")
        );
        assert_eq!(link.exp, 1_764_586_800);
    }

    #[test]
    fn a_minted_link_verifies_until_it_expires() {
        let keys = keys(&format!("k1:{SECRET_A}"));
        let link = keys.sign(id(), NOW + 60).expect("on");
        let (path_id, parts) = parts_of(&link.url);
        assert_eq!(keys.verify(&path_id, &parts, NOW).ok(), Some(NOW + 60));
        assert_eq!(
            keys.verify(&ID.to_uppercase(), &parts, NOW).ok(),
            Some(NOW + 60)
        );
        assert_eq!(keys.verify(&path_id, &parts, NOW + 59).ok(), Some(NOW + 60));
        for later in [NOW + 60, NOW + 10_000] {
            assert_eq!(
                code(keys.verify(&path_id, &parts, later)),
                Some(ApiCode::LinkExpired)
            );
        }
    }

    /// Every one-character change to the id, `exp`, `kid` or `sig` is refused, with
    /// `link_invalid`: a changed `exp` is not an expired link, it is a forged one.
    #[test]
    fn any_changed_character_is_refused() {
        let keys = keys(&format!("k1:{SECRET_A},k2:{SECRET_B}"));
        let link = keys.sign(id(), NOW + 600).expect("on");
        let (path_id, parts) = parts_of(&link.url);
        let variants = |text: &str| -> Vec<String> {
            let mut out = Vec::new();
            for i in 0..text.len() {
                for c in ['0', '1', '9', 'a', 'f', 'A', 'Z', '-', '_', '+', '/', '='] {
                    let mut changed = text.to_string();
                    changed.replace_range(i..=i, &c.to_string());
                    if changed != text {
                        out.push(changed);
                    }
                }
            }
            out.push(format!("{text}0"));
            out.push(text[..text.len() - 1].to_string());
            out
        };
        let mut tried = 0;
        for changed in variants(&path_id) {
            // An uppercase hex digit names the same job.
            if changed.eq_ignore_ascii_case(&path_id) {
                continue;
            }
            assert_eq!(
                code(keys.verify(&changed, &parts, NOW)),
                Some(ApiCode::LinkInvalid),
                "id {changed}"
            );
            tried += 1;
        }
        for (field, value) in [
            ("exp", &parts.exp),
            ("kid", &parts.kid),
            ("sig", &parts.sig),
        ] {
            for changed in variants(value) {
                let mut bad = parts.clone();
                match field {
                    "exp" => bad.exp = changed.clone(),
                    "kid" => bad.kid = changed.clone(),
                    _ => bad.sig = changed.clone(),
                }
                assert_eq!(
                    code(keys.verify(&path_id, &bad, NOW)),
                    Some(ApiCode::LinkInvalid),
                    "{field} {changed}"
                );
                tried += 1;
            }
        }
        assert!(tried > 1000, "{tried}");
    }

    #[test]
    fn another_jobs_link_is_refused() {
        let keys = keys(&format!("k1:{SECRET_A}"));
        let (_, parts) = parts_of(&keys.sign(id(), NOW + 600).expect("on").url);
        let error = keys.verify(OTHER, &parts, NOW).expect_err("other job");
        assert_eq!(error.code(), ApiCode::LinkInvalid);
        assert!(
            error.message().contains("another job"),
            "{}",
            error.message()
        );
        assert_eq!(
            code(keys.verify("not-a-uuid", &parts, NOW)),
            Some(ApiCode::LinkInvalid)
        );
    }

    #[test]
    fn an_unknown_kid_or_a_foreign_key_is_refused() {
        let ours = keys(&format!("k1:{SECRET_A}"));
        let theirs = keys(&format!("k1:{SECRET_B}"));
        let (path_id, parts) = parts_of(&theirs.sign(id(), NOW + 600).expect("on").url);
        assert_eq!(
            code(ours.verify(&path_id, &parts, NOW)),
            Some(ApiCode::LinkInvalid)
        );
        let mut unknown = parts.clone();
        unknown.kid = "k9".into();
        let error = ours
            .verify(&path_id, &unknown, NOW)
            .expect_err("unknown kid");
        assert!(error.message().contains("kid"), "{}", error.message());
    }

    /// The first key signs; a link stays valid while its key is listed, and is refused
    /// once that key is removed.
    #[test]
    fn rotation_keeps_old_links_until_their_key_is_removed() {
        let before = keys(&format!("old:{SECRET_A}"));
        let (path_id, old_link) = parts_of(&before.sign(id(), NOW + 600).expect("on").url);
        let during = keys(&format!("new:{SECRET_B},old:{SECRET_A}"));
        assert_eq!(during.kids().collect::<Vec<_>>(), ["new", "old"]);
        let (_, new_link) = parts_of(&during.sign(id(), NOW + 600).expect("on").url);
        assert_eq!(new_link.kid, "new");
        assert_eq!(
            during.verify(&path_id, &old_link, NOW).ok(),
            Some(NOW + 600)
        );
        assert_eq!(
            during.verify(&path_id, &new_link, NOW).ok(),
            Some(NOW + 600)
        );
        let after = keys(&format!("new:{SECRET_B}"));
        assert_eq!(
            code(after.verify(&path_id, &old_link, NOW)),
            Some(ApiCode::LinkInvalid)
        );
        assert_eq!(after.verify(&path_id, &new_link, NOW).ok(), Some(NOW + 600));
    }

    #[test]
    fn with_no_keys_links_are_off_and_refused() {
        let off = LinkKeys::default();
        assert!(!off.is_on());
        assert_eq!(off.sign(id(), NOW + 1), None);
        let (path_id, parts) = parts_of(
            &keys(&format!("k1:{SECRET_A}"))
                .sign(id(), NOW + 60)
                .expect("on")
                .url,
        );
        assert_eq!(
            code(off.verify(&path_id, &parts, NOW)),
            Some(ApiCode::LinkInvalid)
        );
        assert!(!LinkKeys::parse(" , ").expect("empty").is_on());
    }

    #[test]
    fn a_query_is_a_link_only_with_sig_and_then_needs_each_part_once() {
        let pair = |k: &str, v: &str| (k.to_string(), v.to_string());
        assert_eq!(LinkParts::from_query(&[]).ok(), Some(None));
        assert_eq!(
            LinkParts::from_query(&[pair("exp", "1"), pair("kid", "k")]).ok(),
            Some(None)
        );
        for query in [
            vec![pair("sig", "x")],
            vec![pair("sig", "x"), pair("exp", "1")],
            vec![
                pair("sig", "x"),
                pair("exp", "1"),
                pair("kid", "k"),
                pair("sig", "y"),
            ],
            vec![
                pair("sig", "x"),
                pair("exp", "1"),
                pair("kid", "k"),
                pair("exp", "2"),
            ],
        ] {
            let error = LinkParts::from_query(&query).expect_err("refused");
            assert_eq!(error.code(), ApiCode::LinkInvalid, "{query:?}");
        }
        assert_eq!(
            LinkParts::from_query(&[pair("kid", "k"), pair("sig", "x"), pair("exp", "1")])
                .ok()
                .flatten(),
            Some(LinkParts {
                exp: "1".into(),
                kid: "k".into(),
                sig: "x".into()
            })
        );
    }

    #[test]
    fn keys_are_checked_and_secrets_never_shown() {
        for (text, needle) in [
            ("k1:short", "at least 32"),
            ("nocolon", "no `:`"),
            (&format!(":{SECRET_A}"), "key id"),
            (&format!("k 1:{SECRET_A}"), "key id"),
            (&format!("k1:{SECRET_A},k1:{SECRET_B}"), "twice"),
        ] {
            let error = LinkKeys::parse(text).expect_err(text);
            assert!(error.contains(needle), "{text}: {error}");
            assert!(
                !error.contains(SECRET_A) && !error.contains("short"),
                "{error}"
            );
        }
        let keys = keys(&format!("k1:{SECRET_A},k2:{SECRET_B}"));
        let debug = format!("{keys:?}");
        assert!(debug.contains("k1") && debug.contains("k2"), "{debug}");
        assert!(
            !debug.contains(SECRET_A) && !debug.contains(SECRET_B),
            "{debug}"
        );
    }

    /// A result fetched through a link is not cached past the link's expiry.
    #[test]
    fn cache_control_never_outlives_the_link() {
        assert_eq!(
            result_cache_control(None, NOW),
            "private, max-age=86400, immutable"
        );
        assert_eq!(
            result_cache_control(Some(NOW + 600), NOW),
            "private, max-age=600, immutable"
        );
        assert_eq!(
            result_cache_control(Some(NOW + 7 * 86_400), NOW),
            "private, max-age=86400, immutable"
        );
        assert_eq!(
            result_cache_control(Some(NOW), NOW + 5),
            "private, max-age=0, immutable"
        );
    }
}

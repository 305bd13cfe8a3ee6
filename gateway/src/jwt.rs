//! Bearer JWTs from an existing identity provider: `Authorization: Bearer <JWT>` is
//! verified here and turned into a tenant and pixmill scopes ([`JwtIdentity`]).
//!
//! The keys come from the settings ([`JwtSettings`]), one of:
//!
//! - an HS256 secret shared with the provider (`PIXMILL_JWT_HS256_SECRET`), or
//! - a JWK set (`PIXMILL_JWT_JWKS`), a file or an `https://` URL, holding RS256 (`RSA`)
//!   and ES256 (`EC`, P-256) public keys. The set is read on first use and again when a
//!   token names a key id (`kid`) it lacks, or when it is an hour old, at most once per
//!   [`JWKS_MIN_REFRESH`]; a failed read keeps the keys already known.
//!
//! The algorithm is never taken from the token: HS256 alone with a secret; with a JWK set,
//! RS256 or ES256, and only the one the named key is for (its `kty`, its curve and its
//! own `alg` when it gives one). A token whose header names any other algorithm,
//! `none` included, is refused before its signature is looked at, so an HS256 token
//! "signed" with an RSA public key as the HMAC secret gets nowhere.
//!
//! Claims: `exp` is required and checked, `nbf` is checked when present, both with
//! [`JwtSettings::leeway`]; `iss` and `aud` must match when the settings name them; the
//! tenant is the string claim named by [`JwtSettings::tenant_claim`] (`sub` by default);
//! the scopes are those of [`SCOPES`] found in `scope`, a space-separated string (as
//! OAuth 2 writes it) or a JSON array of strings. Errors ([`JwtError`]) say what was
//! wrong and never repeat the token.

use std::{
    collections::HashMap,
    fmt,
    path::PathBuf,
    sync::{Arc, RwLock},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse},
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The shortest HS256 secret accepted, in bytes: HMAC-SHA256's own output size.
pub const MIN_SECRET_BYTES: usize = 32;
/// The clock skew allowed on `exp` and `nbf` unless the settings say otherwise.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;
/// The largest leeway the settings may ask for.
pub const MAX_LEEWAY_SECS: u64 = 300;
/// The tenant claim unless the settings name another.
pub const DEFAULT_TENANT_CLAIM: &str = "sub";
/// pixmill's scopes; any other scope in a token is ignored.
pub const SCOPES: [&str; 3] = ["jobs:write", "jobs:read", "admin"];
/// The JWK set is read again at most this often, whatever tokens arrive.
pub const JWKS_MIN_REFRESH: Duration = Duration::from_secs(30);
/// A JWK set this old is read again on the next token (rate-limited as above), so a key
/// the provider has withdrawn stops working.
pub const JWKS_MAX_AGE: Duration = Duration::from_secs(3600);
/// One fetch of a JWKS URL, connecting included, takes at most this long.
pub const JWKS_FETCH_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWK set read, file or URL.
pub const JWKS_MAX_BYTES: usize = 1 << 20;
/// The longest tenant accepted, in bytes.
pub const MAX_TENANT_BYTES: usize = 256;

/// An HS256 secret. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct JwtSecret(Vec<u8>);

impl JwtSecret {
    /// A secret of at least [`MIN_SECRET_BYTES`] bytes.
    pub fn new(secret: impl Into<Vec<u8>>) -> Result<Self, String> {
        let secret = secret.into();
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "an HS256 secret needs at least {MIN_SECRET_BYTES} bytes, this one has {} \
                 (e.g. openssl rand -hex 32)",
                secret.len()
            ));
        }
        Ok(Self(secret))
    }
}

impl fmt::Debug for JwtSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtSecret(<redacted>)")
    }
}

/// Where the verification keys come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtKeys {
    /// `PIXMILL_JWT_HS256_SECRET`: HS256 with a shared secret.
    Hs256(JwtSecret),
    /// `PIXMILL_JWT_JWKS` naming a file: a JWK set read from disk.
    JwksFile(PathBuf),
    /// `PIXMILL_JWT_JWKS` naming an `https://` URL: a JWK set fetched from the provider.
    JwksUrl(String),
}

/// The JWT settings, `PIXMILL_JWT_*` (read in [`crate::config`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtSettings {
    /// The keys tokens are checked against.
    pub keys: JwtKeys,
    /// `PIXMILL_JWT_ISSUER`: when set, `iss` must equal it.
    pub issuer: Option<String>,
    /// `PIXMILL_JWT_AUDIENCE`: when set, `aud` must be or contain it.
    pub audience: Option<String>,
    /// `PIXMILL_JWT_TENANT_CLAIM`: the claim that holds the tenant.
    pub tenant_claim: String,
    /// `PIXMILL_JWT_LEEWAY_SECS`: clock skew allowed on `exp` and `nbf`, in seconds.
    pub leeway: u64,
}

impl JwtSettings {
    /// Settings with `keys` and the defaults: no issuer or audience check, the tenant in
    /// `sub`, [`DEFAULT_LEEWAY_SECS`].
    pub fn new(keys: JwtKeys) -> Self {
        Self {
            keys,
            issuer: None,
            audience: None,
            tenant_claim: DEFAULT_TENANT_CLAIM.into(),
            leeway: DEFAULT_LEEWAY_SECS,
        }
    }
}

/// Who a verified token speaks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtIdentity {
    /// The tenant claim's value.
    pub tenant: String,
    /// The token's pixmill scopes, each once, in the order of [`SCOPES`].
    pub scopes: Vec<String>,
    /// The token's `exp`, in Unix seconds.
    pub expires_at: u64,
}

/// Why a token was refused. The messages name what was wrong, never the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not three base64url segments of JSON, or a claim of the wrong type.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// `exp` has passed (beyond the leeway).
    #[error("token expired")]
    Expired,
    /// `nbf` is still ahead (beyond the leeway).
    #[error("token not yet valid (nbf is in the future)")]
    NotYetValid,
    /// The signature does not match the header and claims.
    #[error("bad token signature")]
    BadSignature,
    /// The header names an algorithm that is not allowed (`none` included), or one the
    /// named key is not for.
    #[error("token algorithm not allowed: {0}")]
    WrongAlgorithm(String),
    /// The token names no key id, or one the JWK set does not hold.
    #[error("token key id (kid) missing or unknown")]
    UnknownKid,
    /// `iss` is missing or not the configured issuer.
    #[error("token issuer (iss) missing or not accepted")]
    WrongIssuer,
    /// `aud` is missing or does not name the configured audience.
    #[error("token audience (aud) missing or not accepted")]
    WrongAudience,
    /// The tenant claim is missing, empty or not a string.
    #[error("token has no usable tenant claim {0:?}")]
    MissingTenant(String),
    /// The JWK set could not be read, and no keys are known.
    #[error("JWK set unavailable: {0}")]
    JwksUnavailable(String),
}

/// Whether `token` has the shape of a compact JWT: three base64url segments separated
/// by dots, the first two non-empty (the third is empty in an unsigned token, which is
/// still a JWT, to be refused as one). An API key (`pmk_…`) never has this shape.
pub fn looks_like_jwt(token: &str) -> bool {
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let base64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !header.is_empty()
        && !payload.is_empty()
        && base64url(header)
        && base64url(payload)
        && base64url(signature)
}

/// Reads a JWK set's bytes: from a file, from a URL, or from anything a test provides.
#[async_trait]
pub trait JwksFetch: Send + Sync + fmt::Debug {
    /// The set's bytes, or why they could not be had.
    async fn fetch(&self) -> Result<Vec<u8>, String>;
}

/// A JWK set in a file.
#[derive(Debug)]
pub struct FileFetch(pub PathBuf);

#[async_trait]
impl JwksFetch for FileFetch {
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let bytes = tokio::fs::read(&self.0)
            .await
            .map_err(|e| format!("reading {}: {e}", self.0.display()))?;
        if bytes.len() > JWKS_MAX_BYTES {
            return Err(format!(
                "{} is over {JWKS_MAX_BYTES} bytes",
                self.0.display()
            ));
        }
        Ok(bytes)
    }
}

/// A JWK set at a URL, fetched with a timeout, without redirects or proxies.
#[derive(Debug)]
pub struct HttpFetch {
    client: reqwest::Client,
    url: String,
}

impl HttpFetch {
    /// A fetcher of `url`. [`JwtVerifier::new`] only builds one for `https://` URLs.
    pub fn new(url: &str) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(JWKS_FETCH_TIMEOUT)
            .connect_timeout(JWKS_FETCH_TIMEOUT)
            .build()
            .map_err(|e| format!("building the HTTP client: {e}"))?;
        Ok(Self {
            client,
            url: url.into(),
        })
    }
}

#[async_trait]
impl JwksFetch for HttpFetch {
    async fn fetch(&self) -> Result<Vec<u8>, String> {
        let mut response = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("fetching the JWK set: {e}"))?;
        if !response.status().is_success() {
            return Err(format!(
                "fetching the JWK set: HTTP {}",
                response.status().as_u16()
            ));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("reading the JWK set: {e}"))?
        {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err(format!("the JWK set is over {JWKS_MAX_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

/// One verification key and the one algorithm it is for.
struct VerifyKey {
    alg: Algorithm,
    key: DecodingKey,
}

/// The usable keys of a JWK set, by key id.
type KeyRing = HashMap<String, Arc<VerifyKey>>;

/// Parses a JWK set, keeping the keys pixmill accepts: RS256 (`kty` `RSA`) and ES256
/// (`kty` `EC`, `crv` `P-256`), each with a `kid`, a `use` of `sig` or none, and an `alg`
/// that is the one its type is for, or none. Other keys (symmetric `oct` keys above
/// all) are left out. A set with no usable key is an error.
fn parse_jwks(bytes: &[u8]) -> Result<KeyRing, String> {
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<Value>,
    }
    let set: RawSet = serde_json::from_slice(bytes).map_err(|e| format!("not a JWK set ({e})"))?;
    let mut ring = KeyRing::new();
    for raw in set.keys {
        // A key this crate cannot read is one pixmill does not use; the rest still count.
        let Ok(jwk) = serde_json::from_value::<Jwk>(raw) else {
            continue;
        };
        if let (Some(kid), Some(key)) = (jwk.common.key_id.clone(), usable_key(&jwk)) {
            ring.insert(kid, Arc::new(key));
        }
    }
    if ring.is_empty() {
        return Err("the JWK set holds no RS256 or ES256 (P-256) signing key with a kid".into());
    }
    Ok(ring)
}

/// The key and its algorithm, if `jwk` is one pixmill accepts.
fn usable_key(jwk: &Jwk) -> Option<VerifyKey> {
    if !matches!(
        jwk.common.public_key_use,
        None | Some(PublicKeyUse::Signature)
    ) {
        return None;
    }
    let (alg, key_alg) = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => (Algorithm::RS256, KeyAlgorithm::RS256),
        AlgorithmParameters::EllipticCurve(ec) if ec.curve == EllipticCurve::P256 => {
            (Algorithm::ES256, KeyAlgorithm::ES256)
        }
        _ => return None,
    };
    if jwk.common.key_algorithm.is_some_and(|a| a != key_alg) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    Some(VerifyKey { alg, key })
}

/// The JWK set as last read, and when.
struct Cached {
    ring: Arc<KeyRing>,
    read_at: Option<Instant>,
}

/// A JWK set read through a [`JwksFetch`], cached, and read again when a token names an
/// unknown key id or the set is [`JWKS_MAX_AGE`] old, at most once per `min_refresh`.
struct JwksCache {
    fetch: Arc<dyn JwksFetch>,
    min_refresh: Duration,
    cached: RwLock<Cached>,
    /// The last read tried. Held while reading, so one read runs at a time and the
    /// tokens that wait for it then use its keys.
    last_try: tokio::sync::Mutex<LastTry>,
}

/// When a read of the JWK set was last tried, and why it failed if it did.
#[derive(Default)]
struct LastTry {
    at: Option<Instant>,
    failure: Option<String>,
}

impl JwksCache {
    fn new(fetch: Arc<dyn JwksFetch>, min_refresh: Duration) -> Self {
        Self {
            fetch,
            min_refresh,
            cached: RwLock::new(Cached {
                ring: Arc::new(KeyRing::new()),
                read_at: None,
            }),
            last_try: tokio::sync::Mutex::new(LastTry::default()),
        }
    }

    fn current(&self) -> (Arc<KeyRing>, Option<Instant>) {
        let cached = self.cached.read().unwrap_or_else(|e| e.into_inner());
        (cached.ring.clone(), cached.read_at)
    }

    /// The key named `kid`, reading the set again when it is unknown or stale and the
    /// last read is far enough back.
    async fn key(&self, kid: &str) -> Result<Arc<VerifyKey>, JwtError> {
        let (ring, read_at) = self.current();
        let stale = read_at.is_none_or(|at| at.elapsed() >= JWKS_MAX_AGE);
        if !stale && let Some(key) = ring.get(kid) {
            return Ok(key.clone());
        }
        let failure = self.refresh(read_at).await;
        let (ring, _) = self.current();
        match ring.get(kid) {
            Some(key) => Ok(key.clone()),
            None if ring.is_empty() => Err(JwtError::JwksUnavailable(
                failure.unwrap_or_else(|| "it holds no usable key".into()),
            )),
            None => Err(JwtError::UnknownKid),
        }
    }

    /// Reads the set again unless another task did since `seen` or the last try is
    /// within `min_refresh`. Returns why the last read tried failed, if it did.
    async fn refresh(&self, seen: Option<Instant>) -> Option<String> {
        let mut last_try = self.last_try.lock().await;
        let (_, read_at) = self.current();
        if read_at != seen {
            return None;
        }
        if last_try
            .at
            .is_some_and(|at| at.elapsed() < self.min_refresh)
        {
            return last_try.failure.clone();
        }
        last_try.at = Some(Instant::now());
        let read = self
            .fetch
            .fetch()
            .await
            .and_then(|bytes| parse_jwks(&bytes));
        last_try.failure = match read {
            Ok(ring) => {
                let mut cached = self.cached.write().unwrap_or_else(|e| e.into_inner());
                *cached = Cached {
                    ring: Arc::new(ring),
                    read_at: Some(Instant::now()),
                };
                None
            }
            Err(reason) => {
                tracing::warn!(%reason, "JWK set read failed; keeping the keys already known");
                Some(reason)
            }
        };
        last_try.failure.clone()
    }
}

/// Where a [`JwtVerifier`] finds its keys.
enum Keys {
    Hs256(DecodingKey),
    Jwks(JwksCache),
}

/// Verifies bearer JWTs against the configured keys and claims.
pub struct JwtVerifier {
    keys: Keys,
    /// The checks for each allowed algorithm, built once.
    validations: Vec<(Algorithm, Validation)>,
    tenant_claim: String,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let algorithms: Vec<_> = self.validations.iter().map(|(a, _)| a).collect();
        f.debug_struct("JwtVerifier")
            .field("algorithms", &algorithms)
            .field("tenant_claim", &self.tenant_claim)
            .finish_non_exhaustive()
    }
}

impl JwtVerifier {
    /// A verifier for `settings`. A JWK set is read on the first token, not here.
    pub fn new(settings: &JwtSettings) -> Result<Self, JwtError> {
        let fetch: Arc<dyn JwksFetch> = match &settings.keys {
            JwtKeys::Hs256(secret) => {
                let key = DecodingKey::from_secret(&secret.0)
                    .map_err(|_| JwtError::JwksUnavailable("unusable HS256 secret".into()))?;
                return Ok(Self::with_keys(settings, Keys::Hs256(key)));
            }
            JwtKeys::JwksFile(path) => Arc::new(FileFetch(path.clone())),
            JwtKeys::JwksUrl(url) if url.starts_with("https://") => {
                Arc::new(HttpFetch::new(url).map_err(JwtError::JwksUnavailable)?)
            }
            JwtKeys::JwksUrl(_) => {
                return Err(JwtError::JwksUnavailable(
                    "a JWK set URL must be https://".into(),
                ));
            }
        };
        Ok(Self::with_fetch(settings, fetch, JWKS_MIN_REFRESH))
    }

    /// A JWK-set verifier reading its set through `fetch`, at most once per
    /// `min_refresh`; `settings.keys` is not used.
    pub fn with_fetch(
        settings: &JwtSettings,
        fetch: Arc<dyn JwksFetch>,
        min_refresh: Duration,
    ) -> Self {
        Self::with_keys(settings, Keys::Jwks(JwksCache::new(fetch, min_refresh)))
    }

    fn with_keys(settings: &JwtSettings, keys: Keys) -> Self {
        let algorithms: &[Algorithm] = match keys {
            Keys::Hs256(_) => &[Algorithm::HS256],
            Keys::Jwks(_) => &[Algorithm::RS256, Algorithm::ES256],
        };
        let validations = algorithms
            .iter()
            .map(|&alg| (alg, validation(settings, alg)))
            .collect();
        Self {
            keys,
            validations,
            tenant_claim: settings.tenant_claim.clone(),
        }
    }

    /// Checks `token` (the part after `Bearer `) and returns who it speaks for.
    pub async fn verify(&self, token: &str) -> Result<JwtIdentity, JwtError> {
        if !looks_like_jwt(token) {
            return Err(JwtError::Malformed("not three base64url segments"));
        }
        let header = read_header(token)?;
        // The allowed algorithms come from the settings; the header only picks among them.
        let Some((alg, validation)) = self
            .validations
            .iter()
            .find(|(alg, _)| alg_name(*alg) == header.alg)
        else {
            return Err(JwtError::WrongAlgorithm(printable(&header.alg)));
        };
        let found;
        let key = match &self.keys {
            Keys::Hs256(key) => key,
            Keys::Jwks(cache) => {
                let kid = header.kid.as_deref().ok_or(JwtError::UnknownKid)?;
                found = cache.key(kid).await?;
                if found.alg != *alg {
                    return Err(JwtError::WrongAlgorithm(format!(
                        "{} with a {} key",
                        header.alg,
                        alg_name(found.alg)
                    )));
                }
                &found.key
            }
        };
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map_err(|e| map_error(e.kind()))?;
        self.identity(&data.claims)
    }

    fn identity(&self, claims: &Map<String, Value>) -> Result<JwtIdentity, JwtError> {
        let tenant = match claims.get(&self.tenant_claim) {
            Some(Value::String(t))
                if !t.trim().is_empty()
                    && t.len() <= MAX_TENANT_BYTES
                    && !t.chars().any(char::is_control) =>
            {
                t.clone()
            }
            _ => return Err(JwtError::MissingTenant(self.tenant_claim.clone())),
        };
        let given: Vec<&str> = match claims.get("scope") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => s.split_whitespace().collect(),
            Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).collect(),
            Some(_) => {
                return Err(JwtError::Malformed(
                    "scope is neither a string nor an array",
                ));
            }
        };
        let scopes = SCOPES
            .iter()
            .filter(|s| given.contains(s))
            .map(|s| s.to_string())
            .collect();
        let expires_at = claims
            .get("exp")
            .and_then(|exp| exp.as_u64().or_else(|| exp.as_f64().map(|f| f as u64)))
            .ok_or(JwtError::Malformed("exp is not a whole number of seconds"))?;
        Ok(JwtIdentity {
            tenant,
            scopes,
            expires_at,
        })
    }
}

/// The checks for tokens signed with `alg`.
fn validation(settings: &JwtSettings, alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = settings.leeway;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp"];
    if let Some(issuer) = &settings.issuer {
        v.set_issuer(&[issuer]);
        required.push("iss");
    }
    match &settings.audience {
        Some(audience) => {
            v.set_audience(&[audience]);
            required.push("aud");
        }
        // No audience configured: `aud` is not looked at (the crate would otherwise
        // refuse every token that has one).
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// The header fields read before the crate sees the token.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

fn read_header(token: &str) -> Result<RawHeader, JwtError> {
    let segment = token.split('.').next().unwrap_or_default();
    let bytes = URL_SAFE_NO_PAD
        .decode(segment)
        .map_err(|_| JwtError::Malformed("the header is not base64url"))?;
    serde_json::from_slice(&bytes)
        .map_err(|_| JwtError::Malformed("the header is not a JSON object with an alg"))
}

fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        _ => "other",
    }
}

/// An algorithm name from a header, safe to show: at most 16 printable ASCII characters.
fn printable(alg: &str) -> String {
    if alg.len() <= 16 && alg.bytes().all(|b| b.is_ascii_graphic()) {
        alg.into()
    } else {
        "(unreadable)".into()
    }
}

fn map_error(kind: &ErrorKind) -> JwtError {
    match kind {
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidSignature => JwtError::BadSignature,
        ErrorKind::InvalidIssuer => JwtError::WrongIssuer,
        ErrorKind::InvalidAudience => JwtError::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "iss" => JwtError::WrongIssuer,
            "aud" => JwtError::WrongAudience,
            _ => JwtError::Malformed("exp is missing"),
        },
        ErrorKind::InvalidClaimFormat(_) => {
            JwtError::Malformed("exp, nbf, iss or aud has the wrong type")
        }
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => JwtError::WrongAlgorithm("not allowed".into()),
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => JwtError::Malformed("a segment is not base64url JSON"),
        // A signature of the wrong size or shape for the key.
        _ => JwtError::BadSignature,
    }
}

/// Reads and checks a JWK set file at start-up, so a bad one stops the gateway.
pub fn check_jwks_file(path: &std::path::Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
    if bytes.len() > JWKS_MAX_BYTES {
        return Err(format!("it is over {JWKS_MAX_BYTES} bytes"));
    }
    parse_jwks(&bytes).map(drop)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    };

    use jsonwebtoken::{EncodingKey, Header, encode, get_current_timestamp, jwk::JwkSet};
    use serde_json::json;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-test";

    // Test keys, made with `openssl genpkey` (RSA 2048, EC P-256) for these tests only.
    const RSA_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIIEvgIBADANBgkqhkiG9w0BAQEFAASCBKgwggSkAgEAAoIBAQDSrytV4TZdHC9R
F6Xhwu038kCTJDvYZq9Gwm92ai8H1H92poRDLb+w0K5LBJISLzK0G/vBHKOLT9zc
/Ji3aXJoXRpd3gARNdh4atYxSX0cUYtvbqLUUMqIePf4937wpy51+KlWkEsrRwqS
PGaBI+z58jAvwc7lAoExmLbMRgMsr8e81odZVMpXf7Cb+WqSIu5fCe3wTwfyB6r1
DOBbigYkcOst2NI9mbjgvuGKzuiJkAn61mgjZVUktV5Pc2U4f96c+jGWFP/rCAJD
aaJ5gYIxDmwQxNKiSrLivhfcqpgB/eVzExK4bI1uGEyMDh5l/0bjfu3mDZnbqvTx
DXxRQ5XnAgMBAAECggEALht80eYgNh9RcZ9Jw88biCdhn3IKENFkIYmyyAjz8vQ7
0vUdM/CCp4j749oDt6wRnh4Tqg8A8Z+QN+Kl71nJ2nIpr4pCnIGatru21YF+OmDU
MZZWVz25HUXQCvHrG3KS9elt8c5RTQ7WjuteCXwZxBePGRyCkVbLfFWuB6V402Hd
G6WYDzS8takXMu8TWPINsT/yg+x5P7hVClJKuwYghwX7wGdXfoX9RQgOXmJGsM0n
8MC8GKHtXBRkr+M6Oh1fEvrb4vxFBrgyQZDWnueSgzTaNFtTGDZHBfe+2afVMRqk
wqvFdQO3481TX70FfZn1DbKpzD03425acIhVWJaSCQKBgQDsOALFL5LLIj4uMM1D
9KXNzbUTMbvtR6tZhWpkwHrMVQv1E5WObshiP+6f2C8h8jEtT/+ro0sRW4GjMowG
qQhT5AsS6am4v/L5KiYbWZcYd0KTvhwG0SPfW6PTTbOrzZ0DMP+aSaahqCdOlY/5
cWu9SiktivM18J3EUoNVEtpEvwKBgQDkU8GsdlV3nprEISXGEb3NAIB0eL/Ur0/x
rp45k5C/HPLEYtXX1RwcnAYuLk541J0GodAgPkZes8LHARizvSilTWLEJVo9qfMB
uzTe1J/74vxA00m7pSWpcbk8FPjRQPAtrHSxIlBHlFXDvz4tnnAPS2SqErUBY4T1
mDLIzASw2QKBgQDljtUaXc4xPHjjGKgSV0leRH+pRJbV0+VwXRh1Cx0LP8ccB0k7
Huv7lxfGHShIu/4QhAL6APntx1iniXLM8i3WoPImEg/PLDLq84wO3jTZIOUBgSnp
cguDf6IosgVee7YPqOltPhACX9C7LNu61P+X998mlDcg/1HCvVFGNskJLwKBgQCZ
az4DqC+dhNDxYGSFRn6GNQQbPteHDZVmC7L9dQ4ZnFXzZ4XQ1L1i6+OrPCo2PoaU
Yj36rF2UXK1QEoiKnVumVu06Zu7P6FYEn8nSwIQPOGHPHSm6ECnSRTv2BxF5aWz5
A5wVOb0/m4hVUzdwZ7lcTYiCTreZC0nXzECzc4LjYQKBgBAzXDwbHLcyxq0jadhP
NZeWb7agLPJOyfrceZSq2E8kwcj2H8YqaIx4q3W4v+y8Mj3CmJSuplaNJ1IThF5g
wGqHei7z1mU41rdFP5b3GLS4cFbRZXQvGpdPnXJyEIbTmemqljWcEZGXD9cKw1LQ
faC14jYOsjTEBwZbSMHj4oIw
-----END PRIVATE KEY-----";
    const RSA_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA0q8rVeE2XRwvURel4cLt
N/JAkyQ72GavRsJvdmovB9R/dqaEQy2/sNCuSwSSEi8ytBv7wRyji0/c3PyYt2ly
aF0aXd4AETXYeGrWMUl9HFGLb26i1FDKiHj3+Pd+8KcudfipVpBLK0cKkjxmgSPs
+fIwL8HO5QKBMZi2zEYDLK/HvNaHWVTKV3+wm/lqkiLuXwnt8E8H8geq9QzgW4oG
JHDrLdjSPZm44L7his7oiZAJ+tZoI2VVJLVeT3NlOH/enPoxlhT/6wgCQ2mieYGC
MQ5sEMTSokqy4r4X3KqYAf3lcxMSuGyNbhhMjA4eZf9G437t5g2Z26r08Q18UUOV
5wIDAQAB
-----END PUBLIC KEY-----";
    const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgUbUnQxm/NO4SWjxb
TGJaxw9nfIF2vNTzEmvBXsB4rpqhRANCAAQeqpqeZNTp8ax9/3aMF+4GDysrURXK
xXA4iFCHQMy8NTAG0cGDeirYukQphAK4GPyt5UNvjUdgZ79dsoYXfRBZ
-----END PRIVATE KEY-----";

    fn now() -> u64 {
        get_current_timestamp()
    }

    fn claims() -> Value {
        json!({"sub": "acme", "exp": now() + 600, "scope": "jobs:write jobs:read other"})
    }

    fn hs_settings() -> JwtSettings {
        JwtSettings::new(JwtKeys::Hs256(JwtSecret::new(SECRET).unwrap()))
    }

    fn hs_token(claims: &Value) -> String {
        encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET).unwrap(),
        )
        .unwrap()
    }

    fn signed(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        encode(&header, claims, key).unwrap()
    }

    fn rsa_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).unwrap()
    }

    fn ec_key() -> EncodingKey {
        EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).unwrap()
    }

    fn jwk(key: &EncodingKey, alg: Algorithm, kid: &str) -> Jwk {
        let mut jwk = Jwk::from_encoding_key(key, alg).unwrap();
        jwk.common.key_id = Some(kid.into());
        jwk
    }

    fn jwks(keys: Vec<Jwk>) -> Vec<u8> {
        serde_json::to_vec(&JwkSet { keys }).unwrap()
    }

    /// The RSA key as `rsa1` and the EC key as `ec1`.
    fn both_keys() -> Vec<u8> {
        jwks(vec![
            jwk(&rsa_key(), Algorithm::RS256, "rsa1"),
            jwk(&ec_key(), Algorithm::ES256, "ec1"),
        ])
    }

    /// A JWK set held in memory, counting its reads; `None` makes reads fail.
    #[derive(Debug, Default)]
    struct MemoryFetch {
        set: Mutex<Option<Vec<u8>>>,
        reads: AtomicUsize,
    }

    impl MemoryFetch {
        fn new(set: Vec<u8>) -> Arc<Self> {
            Arc::new(Self {
                set: Mutex::new(Some(set)),
                reads: AtomicUsize::new(0),
            })
        }
        fn put(&self, set: Option<Vec<u8>>) {
            *self.set.lock().unwrap() = set;
        }
        fn reads(&self) -> usize {
            self.reads.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl JwksFetch for MemoryFetch {
        async fn fetch(&self) -> Result<Vec<u8>, String> {
            self.reads.fetch_add(1, Ordering::SeqCst);
            self.set
                .lock()
                .unwrap()
                .clone()
                .ok_or_else(|| "unreachable".into())
        }
    }

    fn jwks_verifier(fetch: Arc<MemoryFetch>, min_refresh: Duration) -> JwtVerifier {
        let settings = JwtSettings::new(JwtKeys::JwksUrl("https://idp.invalid/jwks".into()));
        JwtVerifier::with_fetch(&settings, fetch, min_refresh)
    }

    #[tokio::test]
    async fn valid_hs256_gives_tenant_scopes_and_expiry() {
        let claims = claims();
        let identity = JwtVerifier::new(&hs_settings())
            .unwrap()
            .verify(&hs_token(&claims))
            .await
            .unwrap();
        assert_eq!(identity.tenant, "acme");
        assert_eq!(identity.scopes, ["jobs:write", "jobs:read"]);
        assert_eq!(identity.expires_at, claims["exp"].as_u64().unwrap());
    }

    #[tokio::test]
    async fn exp_is_required_and_checked_with_leeway() {
        let v = JwtVerifier::new(&hs_settings()).unwrap();
        let expired = json!({"sub": "acme", "exp": now() - 120});
        assert_eq!(v.verify(&hs_token(&expired)).await, Err(JwtError::Expired));
        let within_leeway = json!({"sub": "acme", "exp": now() - 10});
        assert!(v.verify(&hs_token(&within_leeway)).await.is_ok());
        let no_exp = json!({"sub": "acme"});
        assert!(matches!(
            v.verify(&hs_token(&no_exp)).await,
            Err(JwtError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn nbf_in_the_future_is_refused() {
        let v = JwtVerifier::new(&hs_settings()).unwrap();
        let mut later = claims();
        later["nbf"] = json!(now() + 300);
        assert_eq!(
            v.verify(&hs_token(&later)).await,
            Err(JwtError::NotYetValid)
        );
        later["nbf"] = json!(now() + 10);
        assert!(v.verify(&hs_token(&later)).await.is_ok());
    }

    #[tokio::test]
    async fn audience_must_match_when_set() {
        let mut settings = hs_settings();
        settings.audience = Some("pixmill".into());
        let v = JwtVerifier::new(&settings).unwrap();
        let mut c = claims();
        assert_eq!(v.verify(&hs_token(&c)).await, Err(JwtError::WrongAudience));
        c["aud"] = json!("other");
        assert_eq!(v.verify(&hs_token(&c)).await, Err(JwtError::WrongAudience));
        c["aud"] = json!(["other", "pixmill"]);
        assert!(v.verify(&hs_token(&c)).await.is_ok());
        c["aud"] = json!("pixmill");
        assert!(v.verify(&hs_token(&c)).await.is_ok());
        // No audience configured: `aud` is not looked at.
        let open = JwtVerifier::new(&hs_settings()).unwrap();
        c["aud"] = json!("other");
        assert!(open.verify(&hs_token(&c)).await.is_ok());
    }

    #[tokio::test]
    async fn issuer_must_match_when_set() {
        let mut settings = hs_settings();
        settings.issuer = Some("https://idp.example".into());
        let v = JwtVerifier::new(&settings).unwrap();
        let mut c = claims();
        assert_eq!(v.verify(&hs_token(&c)).await, Err(JwtError::WrongIssuer));
        c["iss"] = json!("https://evil.example");
        assert_eq!(v.verify(&hs_token(&c)).await, Err(JwtError::WrongIssuer));
        c["iss"] = json!("https://idp.example");
        assert!(v.verify(&hs_token(&c)).await.is_ok());
    }

    fn b64(value: &Value) -> String {
        URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
    }

    #[tokio::test]
    async fn alg_none_is_refused_in_every_mode() {
        let hs = JwtVerifier::new(&hs_settings()).unwrap();
        let fetch = MemoryFetch::new(both_keys());
        let jwks = jwks_verifier(fetch.clone(), JWKS_MIN_REFRESH);
        for alg in ["none", "None", "NONE"] {
            let token = format!(
                "{}.{}.",
                b64(&json!({"alg": alg, "typ": "JWT", "kid": "rsa1"})),
                b64(&claims())
            );
            assert!(looks_like_jwt(&token));
            for v in [&hs, &jwks] {
                assert!(matches!(
                    v.verify(&token).await,
                    Err(JwtError::WrongAlgorithm(_))
                ));
            }
        }
        // Refused before any key was looked up.
        assert_eq!(fetch.reads(), 0);
    }

    #[tokio::test]
    async fn a_changed_signature_or_payload_is_refused() {
        let v = JwtVerifier::new(&hs_settings()).unwrap();
        let token = hs_token(&claims());
        let (message, signature) = token.rsplit_once('.').unwrap();
        let mut sig: Vec<u8> = signature.bytes().collect();
        sig[10] = if sig[10] == b'A' { b'B' } else { b'A' };
        let bad_sig = format!("{message}.{}", String::from_utf8(sig).unwrap());
        assert_eq!(v.verify(&bad_sig).await, Err(JwtError::BadSignature));

        // Another tenant in the payload, the signature kept.
        let (header, _) = message.split_once('.').unwrap();
        let mut other = claims();
        other["sub"] = json!("someone-else");
        let swapped = format!("{header}.{}.{signature}", b64(&other));
        assert_eq!(v.verify(&swapped).await, Err(JwtError::BadSignature));

        // One character of the payload changed.
        let mut bytes: Vec<u8> = token.bytes().collect();
        let at = header.len() + 5;
        bytes[at] = if bytes[at] == b'x' { b'y' } else { b'x' };
        let changed = String::from_utf8(bytes).unwrap();
        assert_eq!(v.verify(&changed).await, Err(JwtError::BadSignature));
    }

    #[tokio::test]
    async fn hs256_is_refused_when_only_a_jwk_set_is_configured() {
        let v = jwks_verifier(MemoryFetch::new(both_keys()), JWKS_MIN_REFRESH);
        let c = claims();
        // The classic confusion: HS256 "signed" with the RSA public key as the secret.
        let public_pem = EncodingKey::from_secret(RSA_PUBLIC.as_bytes()).unwrap();
        let token = signed(Algorithm::HS256, "rsa1", &public_pem, &c);
        assert!(matches!(
            v.verify(&token).await,
            Err(JwtError::WrongAlgorithm(_))
        ));
        // The same with the key's modulus, as a JWK gives it.
        let rsa = jwk(&rsa_key(), Algorithm::RS256, "rsa1");
        let AlgorithmParameters::RSA(params) = &rsa.algorithm else {
            panic!("an RSA key");
        };
        let modulus = EncodingKey::from_secret(params.n.as_bytes()).unwrap();
        let token = signed(Algorithm::HS256, "rsa1", &modulus, &c);
        assert!(matches!(
            v.verify(&token).await,
            Err(JwtError::WrongAlgorithm(_))
        ));
        // And a plain HS256 token.
        assert!(matches!(
            v.verify(&hs_token(&c)).await,
            Err(JwtError::WrongAlgorithm(_))
        ));
    }

    #[tokio::test]
    async fn rs256_and_es256_verify_and_keys_keep_to_their_algorithm() {
        let v = jwks_verifier(MemoryFetch::new(both_keys()), JWKS_MIN_REFRESH);
        let c = claims();
        let rs = signed(Algorithm::RS256, "rsa1", &rsa_key(), &c);
        assert_eq!(v.verify(&rs).await.unwrap().tenant, "acme");
        let es = signed(Algorithm::ES256, "ec1", &ec_key(), &c);
        assert_eq!(v.verify(&es).await.unwrap().tenant, "acme");
        // An ES256 token naming the RSA key, and the other way round.
        let crossed = signed(Algorithm::ES256, "rsa1", &ec_key(), &c);
        assert!(matches!(
            v.verify(&crossed).await,
            Err(JwtError::WrongAlgorithm(_))
        ));
        let crossed = signed(Algorithm::RS256, "ec1", &rsa_key(), &c);
        assert!(matches!(
            v.verify(&crossed).await,
            Err(JwtError::WrongAlgorithm(_))
        ));
        // A token with no kid.
        let no_kid = encode(&Header::new(Algorithm::RS256), &c, &rsa_key()).unwrap();
        assert_eq!(v.verify(&no_kid).await, Err(JwtError::UnknownKid));
        // Other RSA algorithms are not allowed.
        let rs512 = signed(Algorithm::RS512, "rsa1", &rsa_key(), &c);
        assert!(matches!(
            v.verify(&rs512).await,
            Err(JwtError::WrongAlgorithm(_))
        ));
    }

    #[tokio::test]
    async fn keys_for_other_algorithms_are_left_out_of_the_set() {
        let mut rs512 = jwk(&rsa_key(), Algorithm::RS512, "rs512");
        rs512.common.key_id = Some("rs512".into());
        let oct = jwk(
            &EncodingKey::from_secret(SECRET).unwrap(),
            Algorithm::HS256,
            "oct",
        );
        let mut encryption = jwk(&rsa_key(), Algorithm::RS256, "enc");
        encryption.common.public_key_use = Some(PublicKeyUse::Encryption);
        let ring = parse_jwks(&jwks(vec![
            rs512,
            oct,
            encryption,
            jwk(&ec_key(), Algorithm::ES256, "ec1"),
        ]))
        .unwrap();
        assert_eq!(ring.keys().collect::<Vec<_>>(), ["ec1"]);
        let oct_only = jwks(vec![jwk(
            &EncodingKey::from_secret(SECRET).unwrap(),
            Algorithm::HS256,
            "oct",
        )]);
        assert!(parse_jwks(&oct_only).is_err());
        assert!(parse_jwks(b"{\"keys\": 3}").is_err());
        // A key the crate cannot read does not spoil the others.
        let mut set: Value = serde_json::from_slice(&both_keys()).unwrap();
        set["keys"]
            .as_array_mut()
            .unwrap()
            .push(json!({"kty": "RSA", "kid": "odd", "n": 5}));
        assert_eq!(
            parse_jwks(&serde_json::to_vec(&set).unwrap())
                .unwrap()
                .len(),
            2
        );
    }

    #[tokio::test]
    async fn an_unknown_kid_reads_the_set_at_most_once_per_window() {
        let fetch = MemoryFetch::new(both_keys());
        let v = jwks_verifier(fetch.clone(), JWKS_MIN_REFRESH);
        let c = claims();
        assert!(
            v.verify(&signed(Algorithm::RS256, "rsa1", &rsa_key(), &c))
                .await
                .is_ok()
        );
        assert_eq!(fetch.reads(), 1);
        let unknown = signed(Algorithm::RS256, "rsa9", &rsa_key(), &c);
        for _ in 0..5 {
            assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKid));
        }
        // The first read was within the window: no other read.
        assert_eq!(fetch.reads(), 1);
        // Known keys need no read at all.
        assert!(
            v.verify(&signed(Algorithm::ES256, "ec1", &ec_key(), &c))
                .await
                .is_ok()
        );
        assert_eq!(fetch.reads(), 1);
    }

    #[tokio::test]
    async fn a_new_kid_is_picked_up_and_a_failed_read_keeps_the_old_set() {
        let fetch = MemoryFetch::new(jwks(vec![jwk(&rsa_key(), Algorithm::RS256, "rsa1")]));
        let v = jwks_verifier(fetch.clone(), Duration::ZERO);
        let c = claims();
        let rs = signed(Algorithm::RS256, "rsa1", &rsa_key(), &c);
        let es = signed(Algorithm::ES256, "ec1", &ec_key(), &c);
        assert!(v.verify(&rs).await.is_ok());
        assert_eq!(v.verify(&es).await, Err(JwtError::UnknownKid));
        // The provider adds a key: the next token naming it reads the set again.
        fetch.put(Some(both_keys()));
        assert!(v.verify(&es).await.is_ok());
        // The provider is down: the keys already known keep working.
        fetch.put(None);
        let unknown = signed(Algorithm::RS256, "rsa9", &rsa_key(), &c);
        assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKid));
        assert!(v.verify(&rs).await.is_ok());
        assert!(v.verify(&es).await.is_ok());
    }

    #[tokio::test]
    async fn no_set_at_all_is_jwks_unavailable() {
        let fetch = MemoryFetch::new(Vec::new());
        fetch.put(None);
        let v = jwks_verifier(fetch.clone(), JWKS_MIN_REFRESH);
        let rs = signed(Algorithm::RS256, "rsa1", &rsa_key(), &claims());
        for _ in 0..3 {
            assert!(matches!(
                v.verify(&rs).await,
                Err(JwtError::JwksUnavailable(_))
            ));
        }
        assert_eq!(fetch.reads(), 1);
    }

    #[tokio::test]
    async fn a_jwk_set_file_verifies_rs256() {
        let dir = std::env::temp_dir().join(format!("pixmill-jwt-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("jwks.json");
        std::fs::write(&path, both_keys()).unwrap();
        check_jwks_file(&path).unwrap();
        let v = JwtVerifier::new(&JwtSettings::new(JwtKeys::JwksFile(path.clone()))).unwrap();
        let rs = signed(Algorithm::RS256, "rsa1", &rsa_key(), &claims());
        assert_eq!(v.verify(&rs).await.unwrap().tenant, "acme");
        std::fs::write(&path, b"{\"keys\": []}").unwrap();
        assert!(check_jwks_file(&path).is_err());
        assert!(check_jwks_file(&dir.join("missing.json")).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn the_tenant_comes_from_the_configured_claim() {
        let mut settings = hs_settings();
        settings.tenant_claim = "org".into();
        let v = JwtVerifier::new(&settings).unwrap();
        let mut c = claims();
        c["org"] = json!("tenant-7");
        assert_eq!(v.verify(&hs_token(&c)).await.unwrap().tenant, "tenant-7");
        c["org"] = json!(7);
        assert_eq!(
            v.verify(&hs_token(&c)).await,
            Err(JwtError::MissingTenant("org".into()))
        );
        c["org"] = json!("  ");
        assert!(matches!(
            v.verify(&hs_token(&c)).await,
            Err(JwtError::MissingTenant(_))
        ));
        let no_sub = json!({"exp": now() + 60});
        assert_eq!(
            JwtVerifier::new(&hs_settings())
                .unwrap()
                .verify(&hs_token(&no_sub))
                .await,
            Err(JwtError::MissingTenant("sub".into()))
        );
    }

    #[tokio::test]
    async fn scopes_come_from_a_string_or_an_array() {
        let v = JwtVerifier::new(&hs_settings()).unwrap();
        let mut c = claims();
        c["scope"] = json!("admin  jobs:read\tjobs:read openid");
        assert_eq!(
            v.verify(&hs_token(&c)).await.unwrap().scopes,
            ["jobs:read", "admin"]
        );
        c["scope"] = json!(["jobs:write", "profile", 3, "admin"]);
        assert_eq!(
            v.verify(&hs_token(&c)).await.unwrap().scopes,
            ["jobs:write", "admin"]
        );
        c.as_object_mut().unwrap().remove("scope");
        assert!(v.verify(&hs_token(&c)).await.unwrap().scopes.is_empty());
        c["scope"] = json!({"admin": true});
        assert!(matches!(
            v.verify(&hs_token(&c)).await,
            Err(JwtError::Malformed(_))
        ));
    }

    #[tokio::test]
    async fn errors_never_repeat_the_token() {
        let v = JwtVerifier::new(&hs_settings()).unwrap();
        let mut c = claims();
        c["exp"] = json!(now() - 600);
        c["sub"] = json!("secret-tenant-name");
        let token = hs_token(&c);
        let payload = token.split('.').nth(1).unwrap();
        let garbage = format!("{}.{payload}.xyz", b64(&json!({"alg": "HS256-{payload}"})));
        for t in [token.as_str(), garbage.as_str(), "not a token"] {
            let message = v.verify(t).await.unwrap_err().to_string();
            assert!(!message.contains(payload), "{message}");
            assert!(!message.contains("secret-tenant-name"), "{message}");
        }
    }

    #[test]
    fn jwts_are_told_from_api_keys() {
        assert!(looks_like_jwt(&hs_token(&claims())));
        assert!(looks_like_jwt("eyJh.eyJz."));
        for other in [
            "pmk_abc123",
            "a.b",
            "a.b.c.d",
            ".b.c",
            "a..c",
            "a.b+.c",
            "a b.c.d",
            "",
        ] {
            assert!(!looks_like_jwt(other), "{other}");
        }
    }

    #[test]
    fn short_secrets_and_plain_http_urls_are_refused() {
        assert!(JwtSecret::new(&b"short"[..]).is_err());
        assert!(!format!("{:?}", hs_settings()).contains("0123456789"));
        let http = JwtSettings::new(JwtKeys::JwksUrl("http://idp.example/jwks".into()));
        assert!(matches!(
            JwtVerifier::new(&http),
            Err(JwtError::JwksUnavailable(_))
        ));
    }

    /// Serves `body` with `status` to every request on 127.0.0.1, counting requests.
    async fn serve(status: u16, body: Vec<u8>) -> (String, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/jwks", listener.local_addr().unwrap());
        let count = Arc::new(AtomicUsize::new(0));
        let served = count.clone();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                served.fetch_add(1, Ordering::SeqCst);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => request.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = format!(
                        "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n\
                         content-length: {}\r\nconnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes()).await;
                    let _ = stream.write_all(&body).await;
                });
            }
        });
        (url, count)
    }

    #[tokio::test]
    async fn a_jwk_set_is_fetched_over_http_and_refreshed_once_per_window() {
        let (url, requests) = serve(200, both_keys()).await;
        let settings = JwtSettings::new(JwtKeys::JwksUrl(url.clone()));
        let fetch = Arc::new(HttpFetch::new(&url).unwrap());
        let v = JwtVerifier::with_fetch(&settings, fetch, JWKS_MIN_REFRESH);
        let c = claims();
        let rs = signed(Algorithm::RS256, "rsa1", &rsa_key(), &c);
        assert!(v.verify(&rs).await.is_ok());
        assert!(v.verify(&rs).await.is_ok());
        assert_eq!(requests.load(Ordering::SeqCst), 1);
        let unknown = signed(Algorithm::RS256, "rsa9", &rsa_key(), &c);
        assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKid));
        assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKid));
        assert_eq!(requests.load(Ordering::SeqCst), 1);

        let v = JwtVerifier::with_fetch(
            &settings,
            Arc::new(HttpFetch::new(&url).unwrap()),
            Duration::ZERO,
        );
        assert!(v.verify(&rs).await.is_ok());
        assert_eq!(v.verify(&unknown).await, Err(JwtError::UnknownKid));
        assert_eq!(requests.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn a_failing_jwks_url_is_jwks_unavailable() {
        let (url, requests) = serve(500, b"oops".to_vec()).await;
        let settings = JwtSettings::new(JwtKeys::JwksUrl(url.clone()));
        let v = JwtVerifier::with_fetch(
            &settings,
            Arc::new(HttpFetch::new(&url).unwrap()),
            JWKS_MIN_REFRESH,
        );
        let rs = signed(Algorithm::RS256, "rsa1", &rsa_key(), &claims());
        let err = v.verify(&rs).await.unwrap_err();
        assert!(err.to_string().contains("HTTP 500"), "{err}");
        assert!(matches!(
            v.verify(&rs).await,
            Err(JwtError::JwksUnavailable(_))
        ));
        assert_eq!(requests.load(Ordering::SeqCst), 1);
    }
}

//! Who is calling: API keys, the [`Principal`] a request acts as, and the edge check.
//!
//! Identity is decided once, at the edge ([`layer`]), and travels as a typed
//! [`Principal`] request extension; no route reads a header itself. The principal's
//! tenant becomes the [`Scope`] of every store query the request makes, so another
//! tenant's job is never read in the first place.
//!
//! - [`key`]: the key format (`pmk_<id>_<secret>`), making keys, checking them.
//! - [`Authenticator`]: a presented key to a principal, with a short cache (so a
//!   revocation takes effect within [`KEY_CACHE_TTL`] on every gateway).
//! - [`layer`]: the axum middleware, which route needs which scope, and the
//!   `PIXMILL_AUTH` modes.

use std::{
    collections::{BTreeSet, HashMap},
    fmt,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::store::{ApiKey, LOCAL_TENANT, Scope, Store, StoreError};

pub mod key;
pub mod layer;

pub use layer::{AuthMode, AuthState, authenticate};

/// What a key may do. A key holds one or more; `admin` implies the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum ApiScope {
    /// Submit, cancel and delete its tenant's jobs; read its tenant's webhook secret.
    JobsWrite,
    /// Read its tenant's jobs: status, list, events, result.
    JobsRead,
    /// Everything, for every tenant: all jobs, keys, stats and metrics.
    Admin,
}

impl ApiScope {
    /// Every scope.
    pub const ALL: [ApiScope; 3] = [ApiScope::JobsWrite, ApiScope::JobsRead, ApiScope::Admin];

    /// The name in the API, the `keys` command and the store.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApiScope::JobsWrite => "jobs:write",
            ApiScope::JobsRead => "jobs:read",
            ApiScope::Admin => "admin",
        }
    }

    /// Parses a name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == name.trim())
    }

    /// Parses a comma- or space-separated list (`jobs:write,jobs:read`); names the
    /// first unknown one. An empty list is refused: a key that may do nothing is a
    /// mistake.
    pub fn parse_list(list: &str) -> Result<BTreeSet<ApiScope>, String> {
        let scopes = list
            .split([',', ' '])
            .filter(|s| !s.trim().is_empty())
            .map(|name| {
                Self::parse(name).ok_or_else(|| {
                    format!(
                        "unknown scope {:?}; the scopes are jobs:write, jobs:read and admin",
                        name.trim()
                    )
                })
            })
            .collect::<Result<BTreeSet<_>, _>>()?;
        if scopes.is_empty() {
            return Err("name at least one scope: jobs:write, jobs:read or admin".into());
        }
        Ok(scopes)
    }
}

impl fmt::Display for ApiScope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a request acts as: decided at the edge, read by every route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Whose jobs it submits and sees.
    pub tenant: String,
    /// What it may do.
    pub scopes: BTreeSet<ApiScope>,
    /// The public id of the key it presented; None for an anonymous caller in
    /// `PIXMILL_AUTH=open` mode.
    pub key_id: Option<String>,
}

impl Principal {
    /// An anonymous caller in `open` mode: the tenant `local`, with every scope.
    pub fn anonymous() -> Self {
        Principal {
            tenant: LOCAL_TENANT.into(),
            scopes: ApiScope::ALL.into_iter().collect(),
            key_id: None,
        }
    }

    /// The principal a verified JWT stands for. Scope names pixmill does not know grant
    /// nothing.
    pub fn of_token(token: crate::jwt::JwtIdentity) -> Self {
        Principal {
            tenant: token.tenant,
            scopes: token
                .scopes
                .iter()
                .filter_map(|s| ApiScope::parse(s))
                .collect(),
            key_id: None,
        }
    }

    /// The principal a stored key stands for. Unknown scope names in the store (from a
    /// newer gateway) grant nothing.
    pub fn of_key(key: &ApiKey) -> Self {
        Principal {
            tenant: key.tenant.clone(),
            scopes: key
                .scopes
                .iter()
                .filter_map(|s| ApiScope::parse(s))
                .collect(),
            key_id: Some(key.id.clone()),
        }
    }

    /// Whether it may do what `scope` allows (`admin` allows everything).
    pub fn allows(&self, scope: ApiScope) -> bool {
        self.scopes.contains(&scope) || self.scopes.contains(&ApiScope::Admin)
    }

    /// Whether it is an administrator.
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&ApiScope::Admin)
    }

    /// Whose jobs it may read and change: every tenant's for an administrator, its own
    /// otherwise.
    pub fn scope(&self) -> Scope {
        if self.is_admin() {
            Scope::All
        } else {
            Scope::tenant(&self.tenant)
        }
    }

    /// Whether it owns or administers a job of `tenant`.
    pub fn sees(&self, tenant: &str) -> bool {
        self.scope().covers(tenant)
    }
}

/// Checks a tenant name: 1–64 characters of `a-z`, `A-Z`, `0-9`, `-`, `_` and `.`, so
/// it reads the same in URLs, logs and metrics labels.
pub fn check_tenant(name: &str) -> Result<(), String> {
    let ok = (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "tenant must be 1 to 64 characters of letters, digits, '-', '_' and '.' (got {name:?})"
        ))
    }
}

/// What a new key is for.
#[derive(Debug, Clone)]
pub struct KeyRequest {
    pub tenant: String,
    pub scopes: BTreeSet<ApiScope>,
    /// How long it is valid; None: until revoked.
    pub ttl: Option<Duration>,
    pub label: Option<String>,
}

/// Why a key could not be made.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// The request is not acceptable (the message says why).
    #[error("{0}")]
    Invalid(String),
    #[error("the operating system has no randomness to give: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Longest label, in bytes.
pub const MAX_LABEL: usize = 200;

/// Makes a key and stores its record. Returns the key's full text, which exists only
/// here (show it once), and the record.
pub async fn issue(
    store: &Store,
    request: KeyRequest,
    now_ms: i64,
) -> Result<(String, ApiKey), IssueError> {
    check_tenant(&request.tenant).map_err(IssueError::Invalid)?;
    if request.scopes.is_empty() {
        return Err(IssueError::Invalid(
            "name at least one scope: jobs:write, jobs:read or admin".into(),
        ));
    }
    let label = request
        .label
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty());
    if label.as_ref().is_some_and(|l| l.len() > MAX_LABEL) {
        return Err(IssueError::Invalid(format!(
            "label must be at most {MAX_LABEL} bytes"
        )));
    }
    let expires_at = match request.ttl {
        None => None,
        Some(ttl) if ttl.is_zero() => {
            return Err(IssueError::Invalid("ttl must be at least 1 second".into()));
        }
        Some(ttl) => {
            Some(now_ms.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)))
        }
    };
    let new = key::generate().map_err(IssueError::Random)?;
    let record = ApiKey {
        id: new.id.clone(),
        tenant: request.tenant,
        scopes: request
            .scopes
            .iter()
            .map(|s| s.as_str().to_string())
            .collect(),
        secret_hash: new.secret_hash.clone(),
        label,
        created_at: now_ms,
        expires_at,
        revoked_at: None,
    };
    store.insert_api_key(&record).await?;
    Ok((new.token, record))
}

/// Why a presented credential was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("{0}")]
    Malformed(#[from] key::MalformedKey),
    /// No key has this id, or its secret is not this one (not told apart, so a caller
    /// cannot probe for ids).
    #[error("the API key is not valid")]
    Invalid,
    #[error("the API key expired")]
    Expired,
    #[error("the API key was revoked")]
    Revoked,
    /// The store could not be asked.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A bearer JWT was refused; the message says why, never the token.
    #[error(transparent)]
    Token(#[from] crate::jwt::JwtError),
}

/// How long a key looked up in the store is trusted before it is read again. A key
/// revoked on one gateway (or with `keys revoke`) is refused by every gateway within
/// this time, well inside the 5 s the API promises.
pub const KEY_CACHE_TTL: Duration = Duration::from_secs(2);

/// Entries kept at most; beyond, the cache is emptied (it refills from the store).
const KEY_CACHE_MAX: usize = 10_000;

/// Turns presented keys into principals, reading keys from the store through a short
/// cache.
#[derive(Debug)]
pub struct Authenticator {
    store: Store,
    cache: Mutex<HashMap<String, (Instant, Option<ApiKey>)>>,
    ttl: Duration,
}

impl Authenticator {
    pub fn new(store: Store) -> Self {
        Self::with_ttl(store, KEY_CACHE_TTL)
    }

    /// With a cache lifetime of `ttl` (zero: ask the store every time).
    pub fn with_ttl(store: Store, ttl: Duration) -> Self {
        Authenticator {
            store,
            cache: Mutex::new(HashMap::new()),
            ttl,
        }
    }

    /// The principal `token` (`pmk_…`) stands for, at `now_ms`.
    pub async fn verify(&self, token: &str, now_ms: i64) -> Result<Principal, Refused> {
        let presented = key::parse(token)?;
        let stored = self.lookup(&presented.id).await?;
        let Some(stored) = stored.filter(|k| presented.matches(&k.secret_hash)) else {
            return Err(Refused::Invalid);
        };
        if stored.revoked_at.is_some() {
            return Err(Refused::Revoked);
        }
        if stored.expires_at.is_some_and(|at| at <= now_ms) {
            return Err(Refused::Expired);
        }
        Ok(Principal::of_key(&stored))
    }

    /// The stored key `id`, from the cache while it is fresh.
    async fn lookup(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        if let Some((at, key)) = self.lock().get(id)
            && at.elapsed() < self.ttl
        {
            return Ok(key.clone());
        }
        let key = self.store.get_api_key(id).await?;
        if !self.ttl.is_zero() {
            let mut cache = self.lock();
            if cache.len() >= KEY_CACHE_MAX {
                cache.clear();
            }
            cache.insert(id.to_string(), (Instant::now(), key.clone()));
        }
        Ok(key)
    }

    /// Forgets a key at once (this gateway revoked it).
    pub fn forget(&self, id: &str) {
        self.lock().remove(id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Option<ApiKey>)>> {
        self.cache
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn issued_keys_verify_and_bad_requests_are_refused() {
        let (store, path) = store().await;
        let request = |tenant: &str, scopes: &str| KeyRequest {
            tenant: tenant.into(),
            scopes: ApiScope::parse_list(scopes).unwrap_or_default(),
            ttl: Some(Duration::from_secs(60)),
            label: Some("  ci  ".into()),
        };
        let (token, record) = issue(&store, request("acme", "jobs:read"), 1_000)
            .await
            .expect("issued");
        assert_eq!(record.expires_at, Some(61_000));
        assert_eq!(record.label.as_deref(), Some("ci"));
        assert_eq!(record.scopes, vec!["jobs:read".to_string()]);
        let auth = Authenticator::with_ttl(store.clone(), Duration::ZERO);
        let principal = auth.verify(&token, 2_000).await.expect("valid");
        assert_eq!(principal.tenant, "acme");
        assert!(matches!(
            auth.verify(&token, 61_000).await,
            Err(Refused::Expired)
        ));
        for bad in ["", "a b", "x/y", &"t".repeat(65)] {
            assert!(matches!(
                issue(&store, request(bad, "jobs:read"), 0).await,
                Err(IssueError::Invalid(_))
            ));
        }
        assert!(matches!(
            issue(&store, request("acme", ""), 0).await,
            Err(IssueError::Invalid(_))
        ));
        cleanup(&path);
    }

    #[test]
    fn scopes_parse_and_admin_allows_everything() {
        let scopes = ApiScope::parse_list("jobs:write, jobs:read").expect("parses");
        assert_eq!(
            scopes.into_iter().collect::<Vec<_>>(),
            vec![ApiScope::JobsWrite, ApiScope::JobsRead]
        );
        assert!(ApiScope::parse_list("jobs:write,root").is_err());
        assert!(ApiScope::parse_list(" , ").is_err());
        for scope in ApiScope::ALL {
            assert_eq!(ApiScope::parse(scope.as_str()), Some(scope));
        }

        let admin = Principal {
            tenant: "ops".into(),
            scopes: [ApiScope::Admin].into(),
            key_id: Some("k".into()),
        };
        assert!(ApiScope::ALL.iter().all(|s| admin.allows(*s)));
        assert_eq!(admin.scope(), Scope::All);
        assert!(admin.sees("anyone"));

        let reader = Principal {
            tenant: "alpha".into(),
            scopes: [ApiScope::JobsRead].into(),
            key_id: Some("k".into()),
        };
        assert!(reader.allows(ApiScope::JobsRead));
        assert!(!reader.allows(ApiScope::JobsWrite) && !reader.allows(ApiScope::Admin));
        assert_eq!(reader.scope(), Scope::tenant("alpha"));
        assert!(reader.sees("alpha") && !reader.sees("beta"));

        let anonymous = Principal::anonymous();
        assert_eq!(anonymous.tenant, "local");
        assert!(ApiScope::ALL.iter().all(|s| anonymous.allows(*s)));
    }

    /// A store on a fresh SQLite file.
    async fn store() -> (Store, std::path::PathBuf) {
        let path = std::env::temp_dir().join(format!("pixmill-auth-{}.db", uuid::Uuid::new_v4()));
        let url = crate::store::DatabaseUrl::Sqlite(path.clone());
        (crate::store::open(&url).await.expect("open"), path)
    }

    fn cleanup(path: &std::path::Path) {
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(std::path::PathBuf::from(name));
        }
    }

    fn record(new: &key::NewKey, tenant: &str, scopes: &[&str]) -> ApiKey {
        ApiKey {
            id: new.id.clone(),
            tenant: tenant.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            secret_hash: new.secret_hash.clone(),
            label: None,
            created_at: 0,
            expires_at: None,
            revoked_at: None,
        }
    }

    #[tokio::test]
    async fn keys_verify_to_their_principal_or_say_why_not() {
        let (store, path) = store().await;
        let auth = Authenticator::with_ttl(store.clone(), Duration::ZERO);
        let now = 1_000_000;

        let good = key::generate().expect("key");
        store
            .insert_api_key(&record(&good, "alpha", &["jobs:read", "jobs:write"]))
            .await
            .expect("insert");
        let principal = auth.verify(&good.token, now).await.expect("valid");
        assert_eq!(principal.tenant, "alpha");
        assert_eq!(principal.key_id.as_deref(), Some(good.id.as_str()));
        assert!(principal.allows(ApiScope::JobsWrite) && !principal.is_admin());

        let unknown = key::generate().expect("key");
        assert!(matches!(
            auth.verify(&unknown.token, now).await,
            Err(Refused::Invalid)
        ));
        let wrong_secret = format!("pmk_{}_{}", good.id, &unknown.token[21..]);
        assert!(matches!(
            auth.verify(&wrong_secret, now).await,
            Err(Refused::Invalid)
        ));
        assert!(matches!(
            auth.verify("pmk_nope", now).await,
            Err(Refused::Malformed(_))
        ));

        let expiring = key::generate().expect("key");
        store
            .insert_api_key(&ApiKey {
                expires_at: Some(now),
                ..record(&expiring, "alpha", &["jobs:read"])
            })
            .await
            .expect("insert");
        assert!(auth.verify(&expiring.token, now - 1).await.is_ok());
        assert!(matches!(
            auth.verify(&expiring.token, now).await,
            Err(Refused::Expired)
        ));

        store
            .revoke_api_key(&good.id, now)
            .await
            .expect("revoke")
            .expect("exists");
        assert!(matches!(
            auth.verify(&good.token, now).await,
            Err(Refused::Revoked)
        ));
        cleanup(&path);
    }

    #[tokio::test]
    async fn a_revocation_is_seen_once_the_cache_entry_is_stale() {
        let (store, path) = store().await;
        let auth = Authenticator::with_ttl(store.clone(), Duration::from_millis(200));
        let new = key::generate().expect("key");
        store
            .insert_api_key(&record(&new, "alpha", &["jobs:read"]))
            .await
            .expect("insert");
        assert!(auth.verify(&new.token, 0).await.is_ok());
        store.revoke_api_key(&new.id, 1).await.expect("revoke");
        // Still cached for a moment…
        assert!(auth.verify(&new.token, 0).await.is_ok());
        tokio::time::sleep(Duration::from_millis(250)).await;
        // …then read again.
        assert!(matches!(
            auth.verify(&new.token, 0).await,
            Err(Refused::Revoked)
        ));
        assert!(KEY_CACHE_TTL <= Duration::from_secs(2));
        cleanup(&path);
    }
}

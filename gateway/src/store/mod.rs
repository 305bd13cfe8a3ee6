//! The task store: one record per job, behind one interface with two backends.
//!
//! - `sqlite://PATH` ([`sqlite`]): an embedded file, the one-machine default. One
//!   gateway per file; a second one is refused at start-up.
//! - `postgres://…` ([`postgres`]): for any number of gateways.
//!
//! Only gateways write here (workers report through replies). Every write that a reply
//! causes is a [`Change`], applied only when the job's current state is one of
//! [`JobState::sources`]: the forward-only rule lives in the domain, the SQL per backend
//! only carries it out. Background passes *claim* their rows with a lease, so N
//! gateways never sweep or expire the same job at once.

use std::{fmt, path::PathBuf, sync::Arc};

use pixmill_shared::{
    Hop, JobResult, JobStep, OutputFormat, Variant,
    events::{EventError, EventOutput, EventResult, JobEvent},
};
use uuid::Uuid;

mod callback;
pub mod pg_tls;
pub mod postgres;
pub mod sqlite;

pub use callback::{Attempt, Callback, CallbackState};
pub use pixmill_shared::JobState;

/// A job as it is stored: one row of the task store, blob keys and bookkeeping included.
/// What clients see of it is [`crate::view::JobView`].
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    /// Whose job it is: every read of it names the tenant (see [`Scope`]).
    pub tenant: String,
    pub state: JobState,
    pub steps: Vec<JobStep>,
    /// The named outputs asked for (empty: one result).
    pub variants: Vec<Variant>,
    pub format: OutputFormat,
    pub quality: u8,
    pub input_key: String,
    pub created_at: i64,
    pub updated_at: i64,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub attempts: u32,
    /// The worker that last reported on the job.
    pub worker: Option<String>,
    /// Why the job failed, was cancelled, or expired.
    pub error: Option<JobError>,
    pub result: Option<JobResult>,
    /// When the broker confirmed the job's message (None: not yet, or the gateway died
    /// before it heard back; the sweeper re-publishes such jobs).
    pub published_at: Option<i64>,
    /// How often the sweeper re-published the job.
    pub republished: u32,
    /// When the result was deleted on request (`DELETE` on a finished job).
    pub result_deleted_at: Option<i64>,
    /// The webhook to call when the job ends, and how its deliveries went.
    pub callback: Option<Callback>,
    /// The workers that ran a job of custom ops, one hop each (its routing slip); empty
    /// for a job one worker ran whole.
    pub hops: Vec<Hop>,
}

/// Why a job failed or was cancelled (`error_code`, `error_message`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobError {
    /// A worker's failure code, `cancelled` or `expired`.
    pub code: String,
    pub message: String,
}

impl Job {
    /// Every blob key the job's result is stored under: the result, and for a job with
    /// variants each output (the first of which is the result).
    pub fn result_keys(&self) -> Vec<String> {
        let Some(result) = &self.result else {
            return Vec::new();
        };
        let mut keys = vec![result.key.clone()];
        for output in &result.outputs {
            if !keys.contains(&output.key) {
                keys.push(output.key.clone());
            }
        }
        keys
    }

    /// The change notice for this job's current state.
    pub fn event(&self) -> JobEvent {
        JobEvent {
            job_id: self.id,
            state: self.state,
            at_ms: self.updated_at,
            attempts: self.attempts,
            worker: self.worker.clone(),
            error: self
                .error
                .clone()
                .map(|JobError { code, message }| EventError { code, message }),
            result: self
                .result
                .as_ref()
                .filter(|_| self.state == JobState::Succeeded)
                .map(|r| EventResult {
                    content_type: r.content_type.clone(),
                    width: r.width,
                    height: r.height,
                    bytes: r.bytes,
                    processing_ms: r.processing_ms,
                    outputs: r
                        .outputs
                        .iter()
                        .map(|o| EventOutput {
                            name: o.name.clone(),
                            content_type: o.content_type.clone(),
                            width: o.width,
                            height: o.height,
                            bytes: o.bytes,
                        })
                        .collect(),
                }),
            tenant: Some(self.tenant.clone()),
        }
    }
}

/// A finished job, as `GET /v1/stats` counts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    pub state: JobState,
    pub processing_ms: Option<u64>,
    /// The ops of its steps, each once, in order of first use.
    pub ops: Vec<String>,
}

impl Finished {
    /// From the stored columns; `steps` is the stored JSON array of steps.
    pub fn from_columns(
        state: JobState,
        processing_ms: Option<i64>,
        steps: &str,
    ) -> Result<Self, StoreError> {
        #[derive(serde::Deserialize)]
        struct OpOnly {
            op: String,
        }
        let mut ops: Vec<String> = Vec::new();
        for step in serde_json::from_str::<Vec<OpOnly>>(steps)? {
            if !ops.contains(&step.op) {
                ops.push(step.op);
            }
        }
        Ok(Self {
            state,
            processing_ms: processing_ms.and_then(|v| u64::try_from(v).ok()),
            ops,
        })
    }
}

/// A new job, as accepted by the gateway.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    /// Whose job it is.
    pub tenant: String,
    pub steps: Vec<JobStep>,
    /// The named outputs asked for (empty: one result).
    pub variants: Vec<Variant>,
    pub format: OutputFormat,
    pub quality: u8,
    pub input_key: String,
    /// `Idempotency-Key` header and a hash of the request it came with; unique per tenant.
    pub idempotency: Option<(String, String)>,
    /// Where to POST the job record when it ends (checked by [`crate::webhooks::guard`]).
    pub callback_url: Option<String>,
}

/// How a new job is let in: its tenant's in-flight quota, and its fair-share window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Admission {
    /// Most jobs the tenant may have `queued` or `running`; one more is refused with
    /// [`StoreError::OverQuota`]. Counted in the same transaction as the insert, under a
    /// per-tenant lock, so it holds across any number of gateways.
    pub max_inflight: u32,
    /// The fair-share window: most of the tenant's jobs released to the broker and not
    /// yet finished. A job past it is stored *held* and released in turn
    /// ([`TaskStore::release_held`]). None: every job is released at once.
    pub window: Option<u32>,
    /// A job someone waits for at a screen (the upload page): it may use
    /// [`INTERACTIVE_EXTRA`] slots beyond the window and is released before held bulk work.
    pub interactive: bool,
}

/// Slots beyond the fair-share window that only interactive jobs may use, so a person
/// at the upload page is not queued behind their own tenant's bulk work.
pub const INTERACTIVE_EXTRA: u32 = 4;

/// Whether a new job went to the broker at once or waits for its turn.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    /// Within the window: publish it now.
    Released,
    /// Past the window: stored, and published when one of the tenant's jobs ends.
    Held,
}

impl Admission {
    /// No quota and no window: every job is let in and released at once.
    pub const fn unlimited() -> Self {
        Self {
            max_inflight: u32::MAX,
            window: None,
            interactive: false,
        }
    }

    /// Whether a new job is released now, with `released` of the tenant's jobs released
    /// and unfinished and `held` of them waiting: within the window, and not ahead of
    /// older held work (interactive jobs excepted).
    pub fn releases(&self, released: u64, held: u64) -> bool {
        match self.window {
            None => true,
            Some(window) if self.interactive => {
                released < u64::from(window.saturating_add(INTERACTIVE_EXTRA))
            }
            Some(window) => held == 0 && released < u64::from(window),
        }
    }
}

/// A tenant's own limits, where they differ from the gateway's defaults
/// (`pixmill-gateway tenants set`, `PUT /v1/tenants/{name}`). None: the default.
#[derive(Debug, Clone, PartialEq)]
pub struct TenantLimits {
    pub name: String,
    /// Most jobs `queued` or `running` at once.
    pub max_inflight: Option<u32>,
    /// Submits per second, per gateway.
    pub rate: Option<f64>,
    /// Submits allowed at once above the rate.
    pub burst: Option<u32>,
    pub updated_at: i64,
}

impl TenantLimits {
    /// A tenant's limits after a change: each given limit replaces (or with None,
    /// clears) the current one; the others stay.
    pub fn updated(
        name: &str,
        current: Option<TenantLimits>,
        max_inflight: Option<Option<u32>>,
        rate: Option<Option<f64>>,
        burst: Option<Option<u32>>,
    ) -> TenantLimits {
        let current = current.unwrap_or(TenantLimits {
            name: name.to_string(),
            max_inflight: None,
            rate: None,
            burst: None,
            updated_at: 0,
        });
        TenantLimits {
            name: name.to_string(),
            max_inflight: max_inflight.unwrap_or(current.max_inflight),
            rate: rate.unwrap_or(current.rate),
            burst: burst.unwrap_or(current.burst),
            updated_at: pixmill_shared::now_ms(),
        }
    }
}

/// A tenant's jobs in flight: how many are `queued` or `running`, and how many of those
/// are held back by fair share.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InFlight {
    pub open: u64,
    pub held: u64,
}

/// The tenant that owns jobs made before pixmill knew tenants, and every job of an
/// anonymous caller in `PIXMILL_AUTH=open` mode.
pub const LOCAL_TENANT: &str = "local";

/// Whose jobs a read may touch. Every lookup a caller can trigger names one, and the
/// backends put it into the query itself, so another tenant's job is simply not found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// One tenant's jobs only.
    Tenant(String),
    /// Every tenant's jobs: administrators and the gateway's own background passes.
    All,
}

impl Scope {
    /// One tenant's jobs.
    pub fn tenant(name: impl Into<String>) -> Self {
        Scope::Tenant(name.into())
    }

    /// The tenant this scope is limited to, None for [`Scope::All`].
    pub fn only(&self) -> Option<&str> {
        match self {
            Scope::Tenant(name) => Some(name),
            Scope::All => None,
        }
    }

    /// Whether a job of `tenant` is within this scope.
    pub fn covers(&self, tenant: &str) -> bool {
        self.only().is_none_or(|only| only == tenant)
    }
}

/// An API key as stored: never its secret, only the SHA-256 of it (see
/// `crate::auth` for why a fast hash is the right one for a random secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The public id, the part of the key between `pmk_` and the secret.
    pub id: String,
    /// The tenant whose jobs the key acts on.
    pub tenant: String,
    /// What the key may do (`jobs:write`, `jobs:read`, `admin`), as named in the API.
    pub scopes: Vec<String>,
    /// SHA-256 of the secret.
    pub secret_hash: Vec<u8>,
    /// A note for people, e.g. where the key is used.
    pub label: Option<String>,
    pub created_at: i64,
    /// After this (ms) the key is refused; None: it does not expire.
    pub expires_at: Option<i64>,
    /// When the key was revoked; a revoked key is refused.
    pub revoked_at: Option<i64>,
}

impl ApiKey {
    /// The scopes as stored: space-separated, as OAuth writes them.
    pub(crate) fn scopes_column(&self) -> String {
        self.scopes.join(" ")
    }

    /// The scopes from their stored form.
    pub(crate) fn parse_scopes(column: &str) -> Vec<String> {
        column.split_whitespace().map(str::to_string).collect()
    }
}

/// A move of a job to another state. Applied only from [`Change::target`]'s sources.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// A worker started the job (or started it again after a redelivery).
    Running { worker: String, attempt: u32 },
    /// The result is stored.
    /// `started_at` is when the worker started it, for a job whose start was not
    /// reported (it stays `queued` until this change).
    Succeeded {
        worker: String,
        attempt: u32,
        result: JobResult,
        started_at: Option<i64>,
        /// The routing slip's hops, when the job made more than one.
        hops: Vec<Hop>,
    },
    /// The job failed for good. `worker` is None when no worker reported it (the
    /// dead-letter queue, the sweeper).
    /// `started_at` as for `Succeeded`.
    Failed {
        worker: Option<String>,
        attempt: u32,
        code: String,
        message: String,
        started_at: Option<i64>,
        /// The hops the job made, when a worker that was not its first reported it.
        hops: Vec<Hop>,
    },
    /// Cancelled while still queued.
    Cancelled,
    /// Its blobs were removed after the retention period.
    Expired,
}

impl Change {
    /// The state the job is in after the change.
    pub fn target(&self) -> JobState {
        match self {
            Change::Running { .. } => JobState::Running,
            Change::Succeeded { .. } => JobState::Succeeded,
            Change::Failed { .. } => JobState::Failed,
            Change::Cancelled => JobState::Cancelled,
            Change::Expired => JobState::Expired,
        }
    }
}

/// Which background pass claims rows (each has its own lease column value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sweep {
    /// `queued` jobs whose publish was never confirmed, released before the cutoff.
    Unpublished,
    /// `running` jobs with no news since before the cutoff.
    StaleRunning,
    /// Finished jobs older than the cutoff that still hold blobs.
    Expiry,
    /// Finished jobs whose webhook is due (the cutoff is now).
    Webhooks,
}

impl Sweep {
    /// The SQL condition (the same for every backend) that selects this pass's jobs.
    /// `cutoff` is a timestamp our code computed, never input, so it is written inline.
    pub fn condition(self, cutoff: i64) -> String {
        match self {
            // A held job has no message yet, by design; it is not lost.
            Sweep::Unpublished => format!(
                "state = 'queued' AND published_at IS NULL \
                 AND released_at IS NOT NULL AND released_at < {cutoff}"
            ),
            Sweep::StaleRunning => format!("state = 'running' AND updated_at < {cutoff}"),
            Sweep::Expiry => format!(
                "state IN ({}) AND finished_at < {cutoff}",
                JobState::Expired.sources_sql()
            ),
            Sweep::Webhooks => format!(
                "callback_url IS NOT NULL AND state IN ({}) \
                 AND COALESCE(webhook_state, 'pending') = 'pending' \
                 AND COALESCE(webhook_next_at, 0) <= {cutoff}",
                JobState::Expired.sources_sql()
            ),
        }
    }
}

/// Errors of the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The idempotency key is taken for this tenant (two identical requests raced), or
    /// an API key's id is taken.
    #[error("a record with this key already exists")]
    DuplicateKey,
    /// The tenant already has `max` jobs queued or running.
    #[error("the tenant has {open} jobs queued or running, its limit is {max}")]
    OverQuota { open: u64, max: u32 },
    /// The database could not be reached or refused the query: a 503 to clients.
    #[error("task store unavailable: {0}")]
    Unavailable(String),
    /// A stored row could not be read back: a bug or a hand-edited database.
    #[error("task store: a stored job is unreadable: {0}")]
    Corrupt(String),
}

impl From<serde_json::Error> for StoreError {
    fn from(e: serde_json::Error) -> Self {
        StoreError::Corrupt(e.to_string())
    }
}

/// Turns a change into the one to apply, given the job as stored
/// ([`TaskStore::apply_checked`]).
pub type CheckChange = Box<dyn FnOnce(&Job, Change) -> Change + Send>;

/// What every task-store backend offers.
#[async_trait::async_trait]
pub trait TaskStore: Send + Sync + fmt::Debug + 'static {
    /// `sqlite` or `postgres`, for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Records a new `queued` job if its tenant is within `admission`'s quota, released
    /// or held as the fair-share window says.
    async fn insert(&self, job: NewJob, admission: Admission) -> Result<Admitted, StoreError>;

    /// Releases the tenant's oldest held jobs (interactive ones first) while fewer than
    /// `window` of its jobs are released and unfinished, and returns them, for
    /// publishing. Under the same per-tenant lock as [`TaskStore::insert`].
    async fn release_held(&self, tenant: &str, window: u32) -> Result<Vec<Job>, StoreError>;

    /// The tenants that have held jobs.
    async fn held_tenants(&self) -> Result<Vec<String>, StoreError>;

    /// A tenant's jobs in flight.
    async fn in_flight(&self, tenant: &str) -> Result<InFlight, StoreError>;

    /// Sets a tenant's own limits (all of them: None returns one to the default).
    async fn put_tenant(&self, limits: &TenantLimits) -> Result<(), StoreError>;

    /// A tenant's own limits, None when it has none.
    async fn get_tenant(&self, name: &str) -> Result<Option<TenantLimits>, StoreError>;

    /// Every tenant with limits of its own, by name.
    async fn list_tenants(&self) -> Result<Vec<TenantLimits>, StoreError>;

    /// Removes a job whose publish failed, so no job is left `queued` with no message.
    async fn delete(&self, id: Uuid) -> Result<(), StoreError>;

    /// Looks a job up within `scope`: another tenant's job is not found.
    async fn get(&self, scope: &Scope, id: Uuid) -> Result<Option<Job>, StoreError>;

    /// The job `tenant` created earlier with this idempotency key, and its request hash.
    /// Keys are per tenant: another tenant's use of the same key is not found.
    async fn find_by_key(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(Job, String)>, StoreError>;

    /// Applies `change` if the job's state allows it; returns the job as it is now when
    /// it changed, None when the change did not apply (late, duplicate, unknown id).
    async fn apply(&self, id: Uuid, change: Change) -> Result<Option<Job>, StoreError>;

    /// [`apply`](Self::apply) of the change `check` makes of `change`, given the job as
    /// stored: a worker's reply is checked against the job it claims to finish before it
    /// is recorded. A backend that can read and change the row in one call overrides
    /// this; the default reads it first. An unknown id changes nothing (None).
    async fn apply_checked(
        &self,
        id: Uuid,
        change: Change,
        check: CheckChange,
    ) -> Result<Option<Job>, StoreError> {
        match self.get(&Scope::All, id).await? {
            Some(job) => self.apply(id, check(&job, change)).await,
            None => Ok(None),
        }
    }

    /// The broker confirmed these jobs' messages (one statement for all of them).
    async fn mark_published(&self, ids: &[Uuid]) -> Result<(), StoreError>;

    /// The sweeper published the job again.
    async fn mark_republished(&self, id: Uuid) -> Result<(), StoreError>;

    /// A finished job's result was deleted on request.
    async fn mark_result_deleted(&self, id: Uuid) -> Result<(), StoreError>;

    /// Claims up to `limit` jobs that `sweep` should handle, whose cutoff timestamp
    /// is before `cutoff` (ms), and which no other pass holds: each is leased until
    /// `lease_until` (ms), so another gateway's pass skips it until then.
    async fn claim(
        &self,
        sweep: Sweep,
        cutoff: i64,
        limit: u32,
        lease_until: i64,
    ) -> Result<Vec<Job>, StoreError>;

    /// Jobs within `scope`, newest first (by creation, then id), optionally in one
    /// state, strictly older than `before` (the last job of the previous page), at most
    /// `limit`.
    async fn list(
        &self,
        scope: &Scope,
        state: Option<JobState>,
        before: Option<(i64, Uuid)>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError>;

    /// Jobs that succeeded or failed at or after `since` (ms), newest first, at most
    /// `limit`: their state, processing time and ops, for `GET /v1/stats`.
    async fn recently_finished(&self, since: i64, limit: u32) -> Result<Vec<Finished>, StoreError>;

    /// Records a webhook's progress (the pass that claimed the job is the only writer)
    /// and releases the claim; `next_at` (ms) schedules the next attempt, None ends it.
    async fn record_callback(
        &self,
        id: Uuid,
        callback: &Callback,
        next_at: Option<i64>,
    ) -> Result<(), StoreError>;

    /// Gives up a claim early (the pass could not finish the job), so the next pass, on
    /// any gateway, may claim it again at once.
    async fn release(&self, id: Uuid) -> Result<(), StoreError>;

    /// Records a new API key. [`StoreError::DuplicateKey`] if its id is taken.
    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError>;

    /// Looks an API key up by its public id.
    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;

    /// API keys, oldest first, of one tenant or of all.
    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, StoreError>;

    /// Revokes a key at `at` (ms); revoking it again keeps the first time. Returns the
    /// key as it is now, None when there is no such key.
    async fn revoke_api_key(&self, id: &str, at: i64) -> Result<Option<ApiKey>, StoreError>;

    /// Answers when the database responds.
    async fn ping(&self) -> Result<(), StoreError>;
}

/// A shared handle to the configured task store.
pub type Store = Arc<dyn TaskStore>;

/// A parsed `PIXMILL_DATABASE_URL`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    /// `sqlite://PATH` (relative to the working directory).
    Sqlite(PathBuf),
    /// `postgres://user[:password]@host[:port]/db[?…]`, as libpq spells it.
    Postgres(String),
}

impl fmt::Debug for DatabaseUrl {
    /// Never prints a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl fmt::Display for DatabaseUrl {
    /// The URL with any password replaced by `***`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DatabaseUrl::Sqlite(path) => write!(f, "sqlite://{}", path.display()),
            // Both forms: `user:pass@host` and `?password=…`.
            DatabaseUrl::Postgres(url) => {
                write!(f, "{}", pixmill_shared::redact::mask_secrets(url))
            }
        }
    }
}

impl std::str::FromStr for DatabaseUrl {
    type Err = String;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        if let Some(path) = url.strip_prefix("sqlite://") {
            if path.is_empty() {
                return Err("sqlite:// needs a file, e.g. sqlite://var/data/pixmill.db".into());
            }
            Ok(DatabaseUrl::Sqlite(path.into()))
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            let (plain, _) = pg_tls::split_sslmode(url)?;
            plain
                .parse::<tokio_postgres::Config>()
                .map_err(|e| format!("not a PostgreSQL URL: {e}"))?;
            Ok(DatabaseUrl::Postgres(url.into()))
        } else {
            Err("expected sqlite://PATH or postgres://user@host:port/database".into())
        }
    }
}

/// Opens (creating and migrating as needed) the store a URL names.
pub async fn open(url: &DatabaseUrl) -> Result<Store, StoreError> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => Arc::new(sqlite::SqliteStore::open(path)?),
        DatabaseUrl::Postgres(url) => Arc::new(postgres::PgStore::connect(url).await?),
    })
}

/// Opens the store a URL names for managing API keys (`pixmill-gateway keys`), beside
/// any gateways that use it: a SQLite file is opened without the one-gateway lock.
pub async fn open_for_keys(url: &DatabaseUrl) -> Result<Store, StoreError> {
    Ok(match url {
        DatabaseUrl::Sqlite(path) => Arc::new(sqlite::SqliteStore::open_for_keys(path)?),
        DatabaseUrl::Postgres(url) => Arc::new(postgres::PgStore::connect(url).await?),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_urls_parse_and_hide_passwords() {
        let sqlite: DatabaseUrl = "sqlite://var/data/pixmill.db".parse().expect("sqlite");
        assert_eq!(sqlite, DatabaseUrl::Sqlite("var/data/pixmill.db".into()));
        let pg: DatabaseUrl = "postgres://pixmill:s3cret@db:5432/pixmill"
            .parse()
            .expect("postgres");
        assert_eq!(pg.to_string(), "postgres://pixmill:***@db:5432/pixmill");
        assert!(!format!("{pg:?}").contains("s3cret"));
        let query: DatabaseUrl = "postgresql://pixmill@db/pixmill?password=s3cret&sslmode=disable"
            .parse()
            .expect("password as a parameter");
        assert_eq!(
            query.to_string(),
            "postgresql://pixmill@db/pixmill?password=***&sslmode=disable"
        );
        assert!(!format!("{query:?}").contains("s3cret"));
        let both: DatabaseUrl = "postgres://a:s3cret@db/p?password=s3cret"
            .parse()
            .expect("both");
        assert_eq!(both.to_string(), "postgres://a:***@db/p?password=***");
        for bad in ["var/data/pixmill.db", "sqlite://", "mysql://x/y"] {
            assert!(bad.parse::<DatabaseUrl>().is_err(), "{bad}");
        }
    }

    #[test]
    fn scopes_cover_their_tenant_or_everyone() {
        let alpha = Scope::tenant("alpha");
        assert_eq!(alpha.only(), Some("alpha"));
        assert!(alpha.covers("alpha") && !alpha.covers("beta"));
        assert_eq!(Scope::All.only(), None);
        assert!(Scope::All.covers("alpha") && Scope::All.covers("beta"));
        let key = ApiKey {
            id: "k".into(),
            tenant: "alpha".into(),
            scopes: vec!["jobs:read".into(), "admin".into()],
            secret_hash: vec![],
            label: None,
            created_at: 0,
            expires_at: None,
            revoked_at: None,
        };
        assert_eq!(key.scopes_column(), "jobs:read admin");
        assert_eq!(ApiKey::parse_scopes(" jobs:read  admin "), key.scopes);
    }

    #[test]
    fn changes_name_their_target_state() {
        assert_eq!(Change::Cancelled.target(), JobState::Cancelled);
        assert_eq!(
            Change::Running {
                worker: "w".into(),
                attempt: 1
            }
            .target(),
            JobState::Running
        );
    }
}

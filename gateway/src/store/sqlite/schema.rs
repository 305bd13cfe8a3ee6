//! The SQLite schema, its migrations, and turning rows into [`Job`]s.

use pixmill_shared::JobResult;
use rusqlite::Connection;
use uuid::Uuid;

use super::{
    super::{ApiKey, Job, JobError, callback},
    StoreError, parse_state,
};

/// Version 1: the jobs table.
pub(super) const SCHEMA_V1: &str = "
CREATE TABLE IF NOT EXISTS jobs (
    id                  TEXT PRIMARY KEY,
    state               TEXT NOT NULL,
    steps               TEXT NOT NULL,
    format              TEXT NOT NULL,
    quality             INTEGER NOT NULL,
    input_key           TEXT NOT NULL,
    created_at          INTEGER NOT NULL,
    updated_at          INTEGER NOT NULL,
    started_at          INTEGER,
    finished_at         INTEGER,
    attempts            INTEGER NOT NULL DEFAULT 0,
    worker              TEXT,
    error_code          TEXT,
    error_message       TEXT,
    result_key          TEXT,
    result_content_type TEXT,
    result_width        INTEGER,
    result_height       INTEGER,
    result_bytes        INTEGER,
    processing_ms       INTEGER
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs(state, updated_at);
";

/// Version 2: idempotency keys, publish tracking for the sweeper, retention.
pub(super) const SCHEMA_V2: &str = "
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
ALTER TABLE jobs ADD COLUMN request_hash TEXT;
ALTER TABLE jobs ADD COLUMN published_at INTEGER;
ALTER TABLE jobs ADD COLUMN republished INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN result_deleted_at INTEGER;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_key ON jobs(idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at);
";

/// Version 3: leases, so a background pass claims a job once.
pub(super) const SCHEMA_V3: &str = "ALTER TABLE jobs ADD COLUMN lease_until INTEGER;";

/// Version 4: newest-first listing.
pub(super) const SCHEMA_V4: &str =
    "CREATE INDEX IF NOT EXISTS jobs_listing ON jobs(created_at DESC, id DESC);
CREATE INDEX IF NOT EXISTS jobs_state_listing ON jobs(state, created_at DESC, id DESC);";

/// Version 5: webhooks.
pub(super) const SCHEMA_V5: &str = "ALTER TABLE jobs ADD COLUMN callback_url TEXT;
ALTER TABLE jobs ADD COLUMN webhook_state TEXT;
ALTER TABLE jobs ADD COLUMN webhook_next_at INTEGER;
ALTER TABLE jobs ADD COLUMN webhook_log TEXT;
CREATE INDEX IF NOT EXISTS jobs_webhooks ON jobs(webhook_next_at) WHERE callback_url IS NOT NULL;";

/// Version 6: tenants and API keys. Jobs made before belong to the tenant `local`; an
/// idempotency key is unique per tenant, so two tenants may use the same one.
const SCHEMA_V6: &str = "ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'local';
DROP INDEX IF EXISTS jobs_idempotency_key;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_tenant_idempotency_key ON jobs(tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_tenant_listing ON jobs(tenant, created_at DESC, id DESC);
CREATE TABLE IF NOT EXISTS api_keys (
    id          TEXT PRIMARY KEY,
    tenant      TEXT NOT NULL,
    scopes      TEXT NOT NULL,
    secret_hash BLOB NOT NULL,
    label       TEXT,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER,
    revoked_at  INTEGER
);
CREATE INDEX IF NOT EXISTS api_keys_tenant ON api_keys(tenant, created_at);";

/// Version 7: quotas and fair share. A job is *released* to the broker at once or held
/// for its turn; every job before this one was released when it was made. Tenants may
/// have limits of their own.
const SCHEMA_V7: &str = "ALTER TABLE jobs ADD COLUMN released_at INTEGER;
ALTER TABLE jobs ADD COLUMN interactive INTEGER NOT NULL DEFAULT 0;
UPDATE jobs SET released_at = created_at;
CREATE INDEX IF NOT EXISTS jobs_tenant_open ON jobs(tenant, state)
    WHERE state IN ('queued', 'running');
CREATE INDEX IF NOT EXISTS jobs_held ON jobs(tenant, interactive, created_at)
    WHERE state = 'queued' AND released_at IS NULL;
CREATE TABLE IF NOT EXISTS tenants (
    name         TEXT PRIMARY KEY,
    max_inflight INTEGER,
    rate         REAL,
    burst        INTEGER,
    updated_at   INTEGER NOT NULL
);";

/// Version 8: the hops of a job's routing slip (JSON), when it made more than one.
const SCHEMA_V8: &str = "ALTER TABLE jobs ADD COLUMN hops TEXT;";

/// Version 9: a job's variants and, once it succeeded, their outputs (JSON).
const SCHEMA_V9: &str = "ALTER TABLE jobs ADD COLUMN variants TEXT;
ALTER TABLE jobs ADD COLUMN outputs TEXT;";

/// Brings the schema up to date. `user_version` records how far a file has come, so
/// a database made by an older gateway keeps its jobs.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let has_column = |name: &str| -> Result<bool, StoreError> {
        Ok(conn
            .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = ?1")?
            .exists([name])?)
    };
    if version < 1 {
        conn.execute_batch(SCHEMA_V1)?;
    }
    if version < 2 && !has_column("published_at")? {
        conn.execute_batch(SCHEMA_V2)?;
    }
    if version < 3 && !has_column("lease_until")? {
        conn.execute_batch(SCHEMA_V3)?;
    }
    if version < 4 {
        conn.execute_batch(SCHEMA_V4)?;
    }
    if version < 5 && !has_column("callback_url")? {
        conn.execute_batch(SCHEMA_V5)?;
    }
    if version < 6 && !has_column("tenant")? {
        conn.execute_batch(SCHEMA_V6)?;
    }
    if version < 7 && !has_column("released_at")? {
        conn.execute_batch(SCHEMA_V7)?;
    }
    if version < 8 && !has_column("hops")? {
        conn.execute_batch(SCHEMA_V8)?;
    }
    if version < 9 && !has_column("variants")? {
        conn.execute_batch(SCHEMA_V9)?;
    }
    conn.pragma_update(None, "user_version", 9)?;
    Ok(())
}

/// Reads one row. The outer error is SQLite's; the inner one a row we cannot parse.
pub(super) fn row_to_job(row: &rusqlite::Row<'_>) -> rusqlite::Result<Result<Job, StoreError>> {
    let result_key: Option<String> = row.get("result_key")?;
    let outputs: Option<String> = row.get("outputs")?;
    let outputs = match outputs.as_deref().map(serde_json::from_str) {
        None => Vec::new(),
        Some(Ok(outputs)) => outputs,
        Some(Err(e)) => return Ok(Err(e.into())),
    };
    let result = match result_key {
        Some(key) => Some(JobResult {
            key,
            content_type: row.get("result_content_type")?,
            width: row.get("result_width")?,
            height: row.get("result_height")?,
            bytes: u64::try_from(row.get::<_, i64>("result_bytes")?).unwrap_or(0),
            processing_ms: u64::try_from(row.get::<_, i64>("processing_ms")?).unwrap_or(0),
            outputs,
        }),
        None => None,
    };
    let id: String = row.get("id")?;
    let tenant: String = row.get("tenant")?;
    let state: String = row.get("state")?;
    let steps: String = row.get("steps")?;
    let format: String = row.get("format")?;
    let error_code: Option<String> = row.get("error_code")?;
    let error_message: Option<String> = row.get("error_message")?;
    let (quality, input_key) = (row.get("quality")?, row.get("input_key")?);
    let (created_at, updated_at) = (row.get("created_at")?, row.get("updated_at")?);
    let (started_at, finished_at) = (row.get("started_at")?, row.get("finished_at")?);
    let (attempts, worker) = (row.get("attempts")?, row.get("worker")?);
    let (published_at, republished) = (row.get("published_at")?, row.get("republished")?);
    let result_deleted_at = row.get("result_deleted_at")?;
    let callback_url: Option<String> = row.get("callback_url")?;
    let webhook_state: Option<String> = row.get("webhook_state")?;
    let webhook_log: Option<String> = row.get("webhook_log")?;
    let hops: Option<String> = row.get("hops")?;
    let variants: Option<String> = row.get("variants")?;
    Ok((|| {
        Ok(Job {
            id: Uuid::parse_str(&id).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            tenant,
            state: parse_state(&state)?,
            steps: serde_json::from_str(&steps)?,
            variants: match variants {
                Some(text) => serde_json::from_str(&text)?,
                None => Vec::new(),
            },
            format: pixmill_shared::OutputFormat::parse(&format)
                .ok_or_else(|| StoreError::Corrupt(format!("unknown format {format:?}")))?,
            quality,
            input_key,
            created_at,
            updated_at,
            started_at,
            finished_at,
            attempts,
            worker,
            error: error_code
                .zip(error_message)
                .map(|(code, message)| JobError { code, message }),
            result,
            published_at,
            republished,
            result_deleted_at,
            callback: callback::from_columns(callback_url, webhook_state, webhook_log.as_deref())?,
            hops: match hops {
                Some(text) => serde_json::from_str(&text)?,
                None => Vec::new(),
            },
        })
    })())
}

/// Reads one row of `api_keys`.
pub(super) fn row_to_api_key(row: &rusqlite::Row<'_>) -> rusqlite::Result<ApiKey> {
    let scopes: String = row.get("scopes")?;
    Ok(ApiKey {
        id: row.get("id")?,
        tenant: row.get("tenant")?,
        scopes: ApiKey::parse_scopes(&scopes),
        secret_hash: row.get("secret_hash")?,
        label: row.get("label")?,
        created_at: row.get("created_at")?,
        expires_at: row.get("expires_at")?,
        revoked_at: row.get("revoked_at")?,
    })
}

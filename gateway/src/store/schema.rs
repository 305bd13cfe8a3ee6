//! The schema, its migrations, and turning rows into [`Job`]s.

use pixmill_shared::JobResult;
use rusqlite::Connection;
use uuid::Uuid;

use super::{Job, State, StoreError};

/// Version 1: the jobs table.
const SCHEMA_V1: &str = "
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
const SCHEMA_V2: &str = "
ALTER TABLE jobs ADD COLUMN idempotency_key TEXT;
ALTER TABLE jobs ADD COLUMN request_hash TEXT;
ALTER TABLE jobs ADD COLUMN published_at INTEGER;
ALTER TABLE jobs ADD COLUMN republished INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN result_deleted_at INTEGER;
CREATE UNIQUE INDEX IF NOT EXISTS jobs_idempotency_key ON jobs(idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs(state, finished_at);
";

/// Brings the schema up to date. `user_version` records how far a file has come, so
/// a database made by an older gateway keeps its jobs.
pub(super) fn migrate(conn: &Connection) -> Result<(), StoreError> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if version < 1 {
        conn.execute_batch(SCHEMA_V1)?;
    }
    if version < 2 {
        let has_column = conn
            .prepare("SELECT 1 FROM pragma_table_info('jobs') WHERE name = 'published_at'")?
            .exists([])?;
        if !has_column {
            conn.execute_batch(SCHEMA_V2)?;
        }
    }
    conn.pragma_update(None, "user_version", 2)?;
    Ok(())
}

/// A row as read, before the JSON columns are parsed.
pub(super) struct Parts {
    id: String,
    state: State,
    steps: String,
    format: String,
    quality: u8,
    input_key: String,
    created_at: i64,
    updated_at: i64,
    started_at: Option<i64>,
    finished_at: Option<i64>,
    attempts: u32,
    worker: Option<String>,
    error_code: Option<String>,
    error_message: Option<String>,
    result: Option<JobResult>,
    published_at: Option<i64>,
    republished: u32,
    result_deleted_at: Option<i64>,
}

pub(super) fn row_to_parts(row: &rusqlite::Row<'_>) -> rusqlite::Result<Parts> {
    let result_key: Option<String> = row.get("result_key")?;
    let result = match result_key {
        Some(key) => Some(JobResult {
            key,
            content_type: row.get("result_content_type")?,
            width: row.get("result_width")?,
            height: row.get("result_height")?,
            bytes: u64::try_from(row.get::<_, i64>("result_bytes")?).unwrap_or(0),
            processing_ms: u64::try_from(row.get::<_, i64>("processing_ms")?).unwrap_or(0),
        }),
        None => None,
    };
    Ok(Parts {
        id: row.get("id")?,
        state: State::parse(&row.get::<_, String>("state")?)?,
        steps: row.get("steps")?,
        format: row.get("format")?,
        quality: row.get("quality")?,
        input_key: row.get("input_key")?,
        created_at: row.get("created_at")?,
        updated_at: row.get("updated_at")?,
        started_at: row.get("started_at")?,
        finished_at: row.get("finished_at")?,
        attempts: row.get("attempts")?,
        worker: row.get("worker")?,
        error_code: row.get("error_code")?,
        error_message: row.get("error_message")?,
        result,
        published_at: row.get("published_at")?,
        republished: row.get("republished")?,
        result_deleted_at: row.get("result_deleted_at")?,
    })
}

impl Parts {
    pub(super) fn into_job(self) -> Result<Job, StoreError> {
        Ok(Job {
            id: Uuid::parse_str(&self.id).map_err(|e| {
                rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    Box::new(e),
                )
            })?,
            state: self.state,
            steps: serde_json::from_str(&self.steps)?,
            format: serde_json::from_value(serde_json::Value::String(self.format))?,
            quality: self.quality,
            input_key: self.input_key,
            created_at: self.created_at,
            updated_at: self.updated_at,
            started_at: self.started_at,
            finished_at: self.finished_at,
            attempts: self.attempts,
            worker: self.worker,
            error: self.error_code.zip(self.error_message),
            result: self.result,
            published_at: self.published_at,
            republished: self.republished,
            result_deleted_at: self.result_deleted_at,
        })
    }
}

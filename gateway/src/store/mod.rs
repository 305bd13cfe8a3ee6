//! The task store: one row per job, in an embedded SQLite file.
//!
//! Only the gateway writes here (workers report through replies), and every write that
//! comes from a reply is conditional on the current state, so a duplicate or late reply
//! can never move a job backwards.

use std::{
    path::Path,
    sync::{Arc, Mutex},
};

use pixmill_shared::{JobResult, OutputFormat, Step};
use rusqlite::{Connection, OptionalExtension, params};

mod schema;
mod upkeep;

use schema::{Parts, migrate, row_to_parts};
use serde::Serialize;
use uuid::Uuid;

/// Where a job is in its life. Stored as its wire name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
    /// Finished, and its input and result were removed after the retention period.
    Expired,
}

impl State {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            State::Queued => "queued",
            State::Running => "running",
            State::Succeeded => "succeeded",
            State::Failed => "failed",
            State::Cancelled => "cancelled",
            State::Expired => "expired",
        }
    }

    fn parse(s: &str) -> rusqlite::Result<Self> {
        Ok(match s {
            "queued" => State::Queued,
            "running" => State::Running,
            "succeeded" => State::Succeeded,
            "failed" => State::Failed,
            "cancelled" => State::Cancelled,
            "expired" => State::Expired,
            other => {
                return Err(rusqlite::Error::FromSqlConversionFailure(
                    0,
                    rusqlite::types::Type::Text,
                    format!("unknown state {other:?}").into(),
                ));
            }
        })
    }

    /// True once nothing more will happen to the job.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            State::Succeeded | State::Failed | State::Cancelled | State::Expired
        )
    }
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    pub id: Uuid,
    pub state: State,
    pub steps: Vec<Step>,
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
    pub error: Option<(String, String)>,
    pub result: Option<JobResult>,
    /// When the broker confirmed the job's message (None: not yet, or the gateway died
    /// before it heard back; the sweeper re-publishes such jobs).
    pub published_at: Option<i64>,
    /// How often the sweeper re-published the job.
    pub republished: u32,
    /// When the result was deleted on request (`DELETE` on a finished job).
    pub result_deleted_at: Option<i64>,
}

/// A new job, as accepted by the gateway.
#[derive(Debug, Clone)]
pub struct NewJob {
    pub id: Uuid,
    pub steps: Vec<Step>,
    pub format: OutputFormat,
    pub quality: u8,
    pub input_key: String,
    /// `Idempotency-Key` header and a hash of the request it came with.
    pub idempotency: Option<(String, String)>,
}

/// Errors of the store. All of them mean "the store is unavailable" to a client.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("a job with this idempotency key already exists")]
    DuplicateKey,
    #[error("task store: {0}")]
    Sql(#[from] rusqlite::Error),
    #[error("task store: stored steps are unreadable: {0}")]
    Corrupt(#[from] serde_json::Error),
    #[error("task store: worker thread failed: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// Handle to the SQLite task store. Cheap to clone.
///
/// SQLite serialises writers anyway, so one connection behind a mutex, used from blocking
/// threads, is both the simplest and the fastest arrangement for a single gateway.
#[derive(Debug, Clone)]
pub struct TaskStore {
    conn: Arc<Mutex<Connection>>,
}

impl TaskStore {
    /// Opens (creating if needed) the database file at `path`.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(|e| {
                rusqlite::Error::SqliteFailure(
                    rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CANTOPEN),
                    Some(e.to_string()),
                )
            })?;
        }
        let conn = Connection::open(path)?;
        // WAL lets readers run beside the writer; NORMAL sync is durable across process
        // crashes, which is the failure that matters for a single-machine gateway.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrate(&conn)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut guard)
        })
        .await?
    }

    /// Records a new `queued` job.
    pub async fn insert(&self, job: NewJob) -> Result<(), StoreError> {
        let steps = serde_json::to_string(&job.steps)?;
        let format = serde_json::to_value(job.format)?
            .as_str()
            .unwrap_or("jpeg")
            .to_string();
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            let (key, hash) = job.idempotency.unzip();
            let inserted = c.execute(
                "INSERT INTO jobs (id, state, steps, format, quality, input_key, created_at, updated_at,
                                   idempotency_key, request_hash)
                 VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8)",
                params![job.id.to_string(), steps, format, job.quality, job.input_key, now, key, hash],
            );
            match inserted {
                Err(rusqlite::Error::SqliteFailure(e, _))
                    if e.code == rusqlite::ErrorCode::ConstraintViolation =>
                {
                    Err(StoreError::DuplicateKey)
                }
                other => other.map(|_| ()).map_err(StoreError::from),
            }
        })
        .await
    }

    /// Removes a job whose publish failed, so no job is left `queued` with no message.
    pub async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        self.with(move |c| {
            c.execute("DELETE FROM jobs WHERE id = ?1", params![id.to_string()])?;
            Ok(())
        })
        .await
    }

    /// Looks a job up.
    pub async fn get(&self, id: Uuid) -> Result<Option<Job>, StoreError> {
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT * FROM jobs WHERE id = ?1",
                    params![id.to_string()],
                    row_to_parts,
                )
                .optional()?;
            row.map(Parts::into_job).transpose()
        })
        .await
    }

    /// A worker started the job. Moves `queued` → `running`; never touches a finished job.
    pub async fn mark_running(
        &self,
        id: Uuid,
        worker: String,
        attempt: u32,
    ) -> Result<bool, StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            let n = c.execute(
                "UPDATE jobs SET state = 'running', worker = ?2, attempts = MAX(attempts, ?3),
                        started_at = COALESCE(started_at, ?4), updated_at = ?4
                 WHERE id = ?1 AND state IN ('queued', 'running')",
                params![id.to_string(), worker, attempt, now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// The job succeeded. Only a job not yet terminal changes.
    pub async fn mark_succeeded(
        &self,
        id: Uuid,
        worker: String,
        attempt: u32,
        result: JobResult,
    ) -> Result<bool, StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            let n = c.execute(
                "UPDATE jobs SET state = 'succeeded', worker = ?2, attempts = MAX(attempts, ?3),
                        started_at = COALESCE(started_at, ?4), finished_at = ?4, updated_at = ?4,
                        result_key = ?5, result_content_type = ?6, result_width = ?7,
                        result_height = ?8, result_bytes = ?9, processing_ms = ?10
                 WHERE id = ?1 AND state IN ('queued', 'running')",
                params![
                    id.to_string(),
                    worker,
                    attempt,
                    now,
                    result.key,
                    result.content_type,
                    result.width,
                    result.height,
                    i64::try_from(result.bytes).unwrap_or(i64::MAX),
                    i64::try_from(result.processing_ms).unwrap_or(i64::MAX),
                ],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// The job failed for good. Only a job not yet terminal changes.
    pub async fn mark_failed(
        &self,
        id: Uuid,
        worker: Option<String>,
        attempt: u32,
        code: String,
        message: String,
    ) -> Result<bool, StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            let n = c.execute(
                "UPDATE jobs SET state = 'failed', worker = COALESCE(?2, worker), attempts = MAX(attempts, ?3),
                        finished_at = ?4, updated_at = ?4, error_code = ?5, error_message = ?6
                 WHERE id = ?1 AND state IN ('queued', 'running')",
                params![id.to_string(), worker, attempt, now, code, message],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// The job created earlier with this idempotency key, and the request hash it had.
    pub async fn find_by_key(&self, key: String) -> Result<Option<(Job, String)>, StoreError> {
        self.with(move |c| {
            let row = c
                .query_row(
                    "SELECT * FROM jobs WHERE idempotency_key = ?1",
                    params![key],
                    |row| {
                        Ok((
                            row_to_parts(row)?,
                            row.get::<_, Option<String>>("request_hash")?,
                        ))
                    },
                )
                .optional()?;
            row.map(|(parts, hash)| Ok((parts.into_job()?, hash.unwrap_or_default())))
                .transpose()
        })
        .await
    }

    /// The broker confirmed the job's message.
    pub async fn mark_published(&self, id: Uuid) -> Result<(), StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            c.execute(
                "UPDATE jobs SET published_at = ?2 WHERE id = ?1",
                params![id.to_string(), now],
            )?;
            Ok(())
        })
        .await
    }

    /// Cancels a job that is still queued. Returns false when it was not queued.
    pub async fn cancel(&self, id: Uuid) -> Result<bool, StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            let n = c.execute(
                "UPDATE jobs SET state = 'cancelled', finished_at = ?2, updated_at = ?2,
                        error_code = 'cancelled', error_message = 'the job was cancelled before it ran'
                 WHERE id = ?1 AND state = 'queued'",
                params![id.to_string(), now],
            )?;
            Ok(n == 1)
        })
        .await
    }

    /// Records that a finished job's result was deleted on request.
    pub async fn mark_result_deleted(&self, id: Uuid) -> Result<(), StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            c.execute(
                "UPDATE jobs SET result_deleted_at = COALESCE(result_deleted_at, ?2), updated_at = ?2
                 WHERE id = ?1",
                params![id.to_string(), now],
            )?;
            Ok(())
        })
        .await
    }

    /// Answers when the database responds.
    pub async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    async fn store() -> TaskStore {
        let path = std::env::temp_dir().join(format!("pixmill-store-{}.db", Uuid::new_v4()));
        TaskStore::open(&path).expect("open")
    }

    fn new_job(id: Uuid) -> NewJob {
        NewJob {
            id,
            steps: vec![Step::Grayscale],
            format: OutputFormat::Png,
            quality: 85,
            input_key: format!("inputs/{id}"),
            idempotency: None,
        }
    }

    fn result() -> JobResult {
        JobResult {
            key: "results/x.png".into(),
            content_type: "image/png".into(),
            width: 1,
            height: 2,
            bytes: 3,
            processing_ms: 4,
        }
    }

    #[tokio::test]
    async fn a_job_moves_forward_only() {
        let store = store().await;
        let id = Uuid::new_v4();
        store.insert(new_job(id)).await.expect("insert");
        assert_eq!(
            store.get(id).await.expect("get").expect("exists").state,
            State::Queued
        );

        assert!(
            store
                .mark_running(id, "w1".into(), 1)
                .await
                .expect("running")
        );
        assert!(
            store
                .mark_succeeded(id, "w1".into(), 1, result())
                .await
                .expect("succeeded")
        );
        // A late `started` and a duplicate terminal reply change nothing.
        assert!(
            !store
                .mark_running(id, "w2".into(), 2)
                .await
                .expect("late start")
        );
        assert!(
            !store
                .mark_failed(id, None, 2, "internal".into(), "x".into())
                .await
                .expect("late fail")
        );

        let job = store.get(id).await.expect("get").expect("exists");
        assert_eq!(job.state, State::Succeeded);
        assert_eq!(job.result, Some(result()));
        assert_eq!(job.worker.as_deref(), Some("w1"));
        assert_eq!(job.steps, vec![Step::Grayscale]);
        assert!(job.finished_at.is_some());
    }

    #[tokio::test]
    async fn unknown_and_deleted_jobs_are_absent() {
        let store = store().await;
        let id = Uuid::new_v4();
        assert_eq!(store.get(id).await.expect("get"), None);
        store.insert(new_job(id)).await.expect("insert");
        store.delete(id).await.expect("delete");
        assert_eq!(store.get(id).await.expect("get"), None);
        store.ping().await.expect("ping");
    }
}

//! The SQLite backend: an embedded file, for one gateway on one machine.
//!
//! SQLite serialises writers anyway, so one connection, owned by one thread, does every
//! call. That thread commits in groups: the calls that arrive while it is busy run in
//! one transaction, each in a savepoint of its own (a call that fails rolls back only
//! itself), and one commit, one sync of the log, makes all of them durable. No caller
//! hears back before the commit that holds its change, so an answer still means the
//! change is on disk; under load, many changes share a sync. A lock file next to the
//! database keeps a second gateway off the same file: replies and sweeps from two
//! processes would be safe, but long-polls on one would never hear the other.

use std::{
    fs::File,
    panic::AssertUnwindSafe,
    path::{Path, PathBuf},
    sync::{Arc, mpsc},
};

use rusqlite::{Connection, OptionalExtension, params};
use uuid::Uuid;

use super::{
    Admission, Admitted, ApiKey, Callback, Change, CheckChange, Finished, INTERACTIVE_EXTRA,
    InFlight, Job, JobState, NewJob, Scope, StoreError, Sweep, TaskStore, TenantLimits,
};

mod schema;

use schema::{migrate, row_to_api_key, row_to_job};

/// Handle to the SQLite task store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    /// The queue of the thread that owns the connection (see the module docs).
    calls: mpsc::Sender<Call>,
    /// Held (locked) for as long as the store is open; see the module docs. None for a
    /// handle that only manages keys beside a running gateway.
    _lock: Option<Arc<File>>,
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        match e {
            rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::InvalidColumnType(..) => StoreError::Corrupt(e.to_string()),
            other => StoreError::Unavailable(format!("sqlite: {other}")),
        }
    }
}

impl SqliteStore {
    /// Opens (creating if needed) the database file at `path`. Fails when another
    /// gateway holds it.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, true)
    }

    /// Opens the file without taking the gateway's lock, for `pixmill-gateway keys`
    /// beside a running gateway. Key records are written in their own transactions, and
    /// WAL lets the gateway read them at once; jobs are left to the gateway.
    pub fn open_for_keys(path: &Path) -> Result<Self, StoreError> {
        Self::open_with(path, false)
    }

    fn open_with(path: &Path, exclusive: bool) -> Result<Self, StoreError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let lock = if exclusive {
            Some(Arc::new(lock_file(path)?))
        } else {
            None
        };
        let conn = Connection::open(path)?;
        // WAL lets readers run beside the writer. FULL syncs the log at every commit, so
        // a job answered 202 survives a power cut, not only a process crash.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", synchronous()?)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        // Every statement of the hot path stays prepared: parsing one costs more than
        // running it (see `prepare_cached` below).
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        migrate(&conn)?;
        let (calls, queue) = mpsc::channel();
        std::thread::Builder::new()
            .name("sqlite".into())
            .spawn(move || group_commit(conn, &queue))
            .map_err(|e| StoreError::Unavailable(format!("cannot start the sqlite thread: {e}")))?;
        Ok(Self { calls, _lock: lock })
    }

    /// Runs `f` on the connection's thread, in the next group commit, and answers once
    /// that commit is durable.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (answer, answered) = tokio::sync::oneshot::channel();
        let call: Call = Box::new(move |conn| {
            let result = f(conn);
            let ok = result.is_ok();
            let reply: Reply = Box::new(move |committed| {
                let _ = answer.send(committed.and(result));
            });
            (ok, reply)
        });
        let gone = || StoreError::Unavailable("the sqlite thread has stopped".into());
        self.calls.send(call).map_err(|_| gone())?;
        answered.await.map_err(|_| {
            StoreError::Unavailable("the sqlite call failed (it panicked; see the log)".into())
        })?
    }

    /// Runs an `UPDATE … RETURNING *` and reads back the rows it changed.
    async fn returning(
        &self,
        sql: String,
        bind: Vec<rusqlite::types::Value>,
    ) -> Result<Vec<Job>, StoreError> {
        self.with(move |c| {
            let mut statement = c.prepare_cached(&sql)?;
            let rows = statement.query_map(rusqlite::params_from_iter(bind), row_to_job)?;
            rows.map(|row| row?).collect()
        })
        .await
    }
}

/// One call on the connection: runs, and says whether it succeeded and how to answer
/// once the commit that holds it is known.
type Call = Box<dyn FnOnce(&mut Connection) -> (bool, Reply) + Send>;
/// Answers a call with the outcome of its commit.
type Reply = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Prepared statements the connection keeps: more than the store's distinct fixed
/// statements, so none is parsed again while the gateway runs.
const STATEMENT_CACHE: usize = 96;

/// Most calls one commit takes: a bound on how long the first of them waits.
const MAX_GROUP: usize = 64;

/// The connection's thread: takes the calls waiting, runs them in one transaction, one
/// savepoint each, commits once, then answers each. Ends when every handle is gone.
fn group_commit(mut conn: Connection, queue: &mpsc::Receiver<Call>) {
    // The same few statements around every call: parsed once, kept prepared.
    let run = |conn: &Connection, sql: &str| -> rusqlite::Result<()> {
        conn.prepare_cached(sql)?.execute([]).map(|_| ())
    };
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(call) => group.push(call),
                Err(_) => break,
            }
        }
        if let Err(e) = run(&conn, "BEGIN IMMEDIATE") {
            let message = format!("sqlite: cannot begin a transaction: {e}");
            // Each call still runs, on its own, so it can say what it needed.
            for call in group {
                let (_, reply) = call(&mut conn);
                reply(Err(StoreError::Unavailable(message.clone())));
            }
            continue;
        }
        let mut replies = Vec::with_capacity(group.len());
        for call in group {
            if run(&conn, "SAVEPOINT call").is_err() {
                let (_, reply) = call(&mut conn);
                replies.push((false, reply));
                continue;
            }
            // A call that panics rolls back alone; its caller hears that it failed.
            match std::panic::catch_unwind(AssertUnwindSafe(|| call(&mut conn))) {
                Ok((true, reply)) => {
                    let _ = run(&conn, "RELEASE call");
                    replies.push((true, reply));
                }
                Ok((false, reply)) => {
                    let _ =
                        run(&conn, "ROLLBACK TO call").and_then(|()| run(&conn, "RELEASE call"));
                    replies.push((false, reply));
                }
                Err(_) => {
                    tracing::error!("a task-store call panicked; its change was rolled back");
                    let _ =
                        run(&conn, "ROLLBACK TO call").and_then(|()| run(&conn, "RELEASE call"));
                }
            }
        }
        let committed = run(&conn, "COMMIT").map_err(|e| e.to_string());
        if committed.is_err() {
            let _ = run(&conn, "ROLLBACK");
        }
        for (_, reply) in replies {
            reply(
                committed
                    .clone()
                    .map_err(|e| StoreError::Unavailable(format!("sqlite: commit: {e}"))),
            );
        }
    }
}

/// Job `id`, if it is `tenant`'s (any tenant's for None).
fn get_job(c: &Connection, id: Uuid, tenant: Option<&str>) -> Result<Option<Job>, StoreError> {
    c.prepare_cached("SELECT * FROM jobs WHERE id = ?1 AND (?2 IS NULL OR tenant = ?2)")?
        .query_row(params![id.to_string(), tenant], row_to_job)
        .optional()?
        .transpose()
}

/// The tenant's jobs queued or running, and how many of them are held.
fn in_flight(c: &Connection, tenant: &str) -> Result<InFlight, StoreError> {
    let (open, released): (i64, i64) = c
        .prepare_cached(
            "SELECT COUNT(*), COUNT(released_at) FROM jobs
             WHERE tenant = ?1 AND state IN ('queued', 'running')",
        )?
        .query_row([tenant], |row| Ok((row.get(0)?, row.get(1)?)))?;
    let open = u64::try_from(open).unwrap_or(0);
    let released = u64::try_from(released).unwrap_or(0);
    Ok(InFlight {
        open,
        held: open.saturating_sub(released),
    })
}

/// Reads one row of `tenants`.
fn row_to_tenant(row: &rusqlite::Row<'_>) -> rusqlite::Result<TenantLimits> {
    Ok(TenantLimits {
        name: row.get("name")?,
        max_inflight: row.get("max_inflight")?,
        rate: row.get("rate")?,
        burst: row.get("burst")?,
        updated_at: row.get("updated_at")?,
    })
}

/// `PIXMILL_SQLITE_SYNC`: `full` (the default) syncs the write-ahead log at every
/// commit, so nothing answered survives only in the page cache; `normal` syncs it at
/// checkpoints only, which a process crash never notices but a power cut or kernel
/// panic can: the last commits before it are rolled back.
fn synchronous() -> Result<&'static str, StoreError> {
    match std::env::var("PIXMILL_SQLITE_SYNC").as_deref() {
        Err(_) | Ok("" | "full") => Ok("FULL"),
        Ok("normal") => Ok("NORMAL"),
        Ok(other) => Err(StoreError::Unavailable(format!(
            "PIXMILL_SQLITE_SYNC={other:?}: must be full or normal"
        ))),
    }
}

/// Takes `<db>.lock` exclusively, or explains who has it and what to do instead.
fn lock_file(db: &Path) -> Result<File, StoreError> {
    let mut name = db.as_os_str().to_owned();
    name.push(".lock");
    let path = PathBuf::from(name);
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "another pixmill-gateway is already using the SQLite task store {}. SQLite \
             serves one gateway per file; to run several gateways, point every one at \
             PostgreSQL with PIXMILL_DATABASE_URL=postgres://…",
            db.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StoreError::Unavailable(format!(
            "cannot lock {}: {e}",
            path.display()
        ))),
    }
}

/// A routing slip's hops, a job's variants or its outputs as a column value: JSON, or
/// NULL for none.
fn json_list<T: serde::Serialize>(items: &[T]) -> rusqlite::types::Value {
    if items.is_empty() {
        return rusqlite::types::Value::Null;
    }
    serde_json::to_string(items).map_or(rusqlite::types::Value::Null, rusqlite::types::Value::Text)
}

/// The statement that carries out `change`, and its parameters after the id.
fn change_sql(change: Change, now: i64) -> (String, Vec<rusqlite::types::Value>) {
    use rusqlite::types::Value;
    let text = |s: String| Value::Text(s);
    let int = |n: i64| Value::Integer(n);
    let sources = change.target().sources_sql();
    let (set, values): (&str, Vec<Value>) = match change {
        Change::Running { worker, attempt } => (
            "state = 'running', worker = ?2, attempts = MAX(attempts, ?3),
             started_at = COALESCE(started_at, ?4), updated_at = ?4",
            vec![text(worker), int(attempt.into()), int(now)],
        ),
        Change::Succeeded {
            worker,
            attempt,
            result,
            started_at,
            hops,
        } => (
            "state = 'succeeded', worker = ?2, attempts = MAX(attempts, ?3),
             started_at = COALESCE(started_at, ?11, ?4), finished_at = ?4, updated_at = ?4,
             result_key = ?5, result_content_type = ?6, result_width = ?7,
             result_height = ?8, result_bytes = ?9, processing_ms = ?10, hops = ?12,
             outputs = ?13",
            vec![
                text(worker),
                int(attempt.into()),
                int(now),
                text(result.key),
                text(result.content_type),
                int(result.width.into()),
                int(result.height.into()),
                int(i64::try_from(result.bytes).unwrap_or(i64::MAX)),
                int(i64::try_from(result.processing_ms).unwrap_or(i64::MAX)),
                started_at.map_or(Value::Null, int),
                json_list(&hops),
                json_list(&result.outputs),
            ],
        ),
        Change::Failed {
            worker,
            attempt,
            code,
            message,
            started_at,
            hops,
        } => (
            "state = 'failed', worker = COALESCE(?2, worker), attempts = MAX(attempts, ?3),
             started_at = COALESCE(started_at, ?7), finished_at = ?4, updated_at = ?4,
             error_code = ?5, error_message = ?6, hops = COALESCE(?8, hops)",
            vec![
                worker.map_or(Value::Null, text),
                int(attempt.into()),
                int(now),
                text(code),
                text(message),
                started_at.map_or(Value::Null, int),
                json_list(&hops),
            ],
        ),
        Change::Cancelled => (
            "state = 'cancelled', finished_at = ?2, updated_at = ?2,
             error_code = 'cancelled', error_message = 'the job was cancelled before it ran'",
            vec![int(now)],
        ),
        Change::Expired => ("state = 'expired', updated_at = ?2", vec![int(now)]),
    };
    (
        format!("UPDATE jobs SET {set} WHERE id = ?1 AND state IN ({sources}) RETURNING *"),
        values,
    )
}

#[async_trait::async_trait]
impl TaskStore for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn insert(&self, job: NewJob, admission: Admission) -> Result<Admitted, StoreError> {
        let steps = serde_json::to_string(&job.steps)?;
        let variants = json_list(&job.variants);
        let format = job.format.as_str();
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            // One connection, so the count and the insert are one step for every writer;
            // the call's own savepoint undoes the count's effects if the insert fails.
            let flight = in_flight(c, &job.tenant)?;
            if flight.open >= u64::from(admission.max_inflight) {
                return Err(StoreError::OverQuota {
                    open: flight.open,
                    max: admission.max_inflight,
                });
            }
            let released = admission.releases(flight.open - flight.held, flight.held);
            let (key, hash) = job.idempotency.unzip();
            let inserted = c
                .prepare_cached(
                    "INSERT INTO jobs (id, state, steps, format, quality, input_key, created_at,
                                       updated_at, idempotency_key, request_hash, callback_url,
                                       tenant, released_at, interactive, variants)
                     VALUES (?1, 'queued', ?2, ?3, ?4, ?5, ?6, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)",
                )?
                .execute(params![
                    job.id.to_string(),
                    steps,
                    format,
                    job.quality,
                    job.input_key,
                    now,
                    key,
                    hash,
                    job.callback_url,
                    job.tenant,
                    released.then_some(now),
                    admission.interactive,
                    variants
                ]);
            unique(inserted)?;
            Ok(if released {
                Admitted::Released
            } else {
                Admitted::Held
            })
        })
        .await
    }

    async fn release_held(&self, tenant: &str, window: u32) -> Result<Vec<Job>, StoreError> {
        let tenant = tenant.to_string();
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            let tx = c.savepoint()?;
            let mut released = Vec::new();
            // Interactive jobs first, with their extra slots; then bulk work.
            for (interactive, limit) in [
                (true, window.saturating_add(INTERACTIVE_EXTRA)),
                (false, window),
            ] {
                let flight = in_flight(&tx, &tenant)?;
                let room = u64::from(limit).saturating_sub(flight.open - flight.held);
                if room == 0 {
                    continue;
                }
                let mut statement = tx.prepare_cached(
                    "UPDATE jobs SET released_at = ?1 WHERE id IN (
                         SELECT id FROM jobs
                         WHERE tenant = ?2 AND state = 'queued' AND released_at IS NULL
                           AND interactive = ?3
                         ORDER BY created_at LIMIT ?4
                     ) RETURNING *",
                )?;
                let rows = statement.query_map(
                    params![
                        now,
                        tenant,
                        interactive,
                        i64::try_from(room).unwrap_or(i64::MAX)
                    ],
                    row_to_job,
                )?;
                for row in rows {
                    released.push(row??);
                }
            }
            tx.commit()?;
            released.sort_by_key(|job| job.created_at);
            Ok(released)
        })
        .await
    }

    async fn held_tenants(&self) -> Result<Vec<String>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare_cached(
                "SELECT DISTINCT tenant FROM jobs WHERE state = 'queued' AND released_at IS NULL",
            )?;
            let rows = statement.query_map([], |row| row.get(0))?;
            Ok(rows.collect::<rusqlite::Result<Vec<String>>>()?)
        })
        .await
    }

    async fn in_flight(&self, tenant: &str) -> Result<InFlight, StoreError> {
        let tenant = tenant.to_string();
        self.with(move |c| in_flight(c, &tenant)).await
    }

    async fn put_tenant(&self, limits: &TenantLimits) -> Result<(), StoreError> {
        let limits = limits.clone();
        self.with(move |c| {
            c.execute(
                "INSERT INTO tenants (name, max_inflight, rate, burst, updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (name) DO UPDATE SET max_inflight = excluded.max_inflight,
                     rate = excluded.rate, burst = excluded.burst, updated_at = excluded.updated_at",
                params![limits.name, limits.max_inflight, limits.rate, limits.burst, limits.updated_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn get_tenant(&self, name: &str) -> Result<Option<TenantLimits>, StoreError> {
        let name = name.to_string();
        self.with(move |c| {
            Ok(c.prepare_cached("SELECT * FROM tenants WHERE name = ?1")?
                .query_row([name], row_to_tenant)
                .optional()?)
        })
        .await
    }

    async fn list_tenants(&self) -> Result<Vec<TenantLimits>, StoreError> {
        self.with(|c| {
            let mut statement = c.prepare_cached("SELECT * FROM tenants ORDER BY name")?;
            let rows = statement.query_map([], row_to_tenant)?;
            Ok(rows.collect::<rusqlite::Result<Vec<_>>>()?)
        })
        .await
    }

    async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        self.with(move |c| {
            c.prepare_cached("DELETE FROM jobs WHERE id = ?1")?
                .execute(params![id.to_string()])?;
            Ok(())
        })
        .await
    }

    async fn get(&self, scope: &Scope, id: Uuid) -> Result<Option<Job>, StoreError> {
        let tenant = scope.only().map(str::to_string);
        self.with(move |c| get_job(c, id, tenant.as_deref())).await
    }

    async fn find_by_key(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(Job, String)>, StoreError> {
        let (tenant, key) = (tenant.to_string(), key.to_string());
        self.with(move |c| {
            let row = c
                .prepare_cached("SELECT * FROM jobs WHERE tenant = ?1 AND idempotency_key = ?2")?
                .query_row(params![tenant, key], |row| {
                    Ok((
                        row_to_job(row)?,
                        row.get::<_, Option<String>>("request_hash")?,
                    ))
                })
                .optional()?;
            row.map(|(job, hash)| Ok((job?, hash.unwrap_or_default())))
                .transpose()
        })
        .await
    }

    async fn apply(&self, id: Uuid, change: Change) -> Result<Option<Job>, StoreError> {
        let (sql, mut values) = change_sql(change, pixmill_shared::now_ms());
        values.insert(0, rusqlite::types::Value::Text(id.to_string()));
        Ok(self.returning(sql, values).await?.pop())
    }

    /// The read, the check and the change in one call on the connection's thread.
    async fn apply_checked(
        &self,
        id: Uuid,
        change: Change,
        check: CheckChange,
    ) -> Result<Option<Job>, StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            let Some(job) = get_job(c, id, None)? else {
                return Ok(None);
            };
            let (sql, mut values) = change_sql(check(&job, change), now);
            values.insert(0, rusqlite::types::Value::Text(id.to_string()));
            let mut statement = c.prepare_cached(&sql)?;
            let mut rows = statement.query_map(rusqlite::params_from_iter(values), row_to_job)?;
            rows.next().transpose()?.transpose()
        })
        .await
    }

    async fn mark_published(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = pixmill_shared::now_ms();
        // The ids as one JSON array, so the statement is the same for every batch and
        // stays prepared.
        let ids = serde_json::to_string(&ids.iter().map(Uuid::to_string).collect::<Vec<_>>())?;
        self.with(move |c| {
            c.prepare_cached(
                "UPDATE jobs SET published_at = ?1 WHERE id IN (SELECT value FROM json_each(?2))",
            )?
            .execute(params![now, ids])?;
            Ok(())
        })
        .await
    }

    async fn mark_republished(&self, id: Uuid) -> Result<(), StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            c.prepare_cached(
                "UPDATE jobs SET published_at = ?2, updated_at = ?2, republished = republished + 1
                 WHERE id = ?1",
            )?
            .execute(params![id.to_string(), now])?;
            Ok(())
        })
        .await
    }

    async fn mark_result_deleted(&self, id: Uuid) -> Result<(), StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            c.prepare_cached(
                "UPDATE jobs SET result_deleted_at = COALESCE(result_deleted_at, ?2), updated_at = ?2
                 WHERE id = ?1",
            )?
            .execute(params![id.to_string(), now])?;
            Ok(())
        })
        .await
    }

    async fn claim(
        &self,
        sweep: Sweep,
        cutoff: i64,
        limit: u32,
        lease_until: i64,
    ) -> Result<Vec<Job>, StoreError> {
        let now = pixmill_shared::now_ms();
        let sql = format!(
            "UPDATE jobs SET lease_until = {lease_until} WHERE id IN (
                 SELECT id FROM jobs WHERE {} AND COALESCE(lease_until, 0) < {now}
                 ORDER BY created_at LIMIT {limit}
             ) RETURNING *",
            sweep.condition(cutoff)
        );
        self.returning(sql, Vec::new()).await
    }

    async fn list(
        &self,
        scope: &Scope,
        state: Option<JobState>,
        before: Option<(i64, Uuid)>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        use rusqlite::types::Value;
        let mut sql = String::from("SELECT * FROM jobs WHERE 1 = 1");
        let mut bind = Vec::new();
        if let Some(tenant) = scope.only() {
            bind.push(Value::Text(tenant.into()));
            sql.push_str(&format!(" AND tenant = ?{}", bind.len()));
        }
        if let Some(state) = state {
            bind.push(Value::Text(state.as_str().into()));
            sql.push_str(&format!(" AND state = ?{}", bind.len()));
        }
        if let Some((created_at, id)) = before {
            bind.push(Value::Integer(created_at));
            bind.push(Value::Text(id.to_string()));
            sql.push_str(&format!(
                " AND (created_at, id) < (?{}, ?{})",
                bind.len() - 1,
                bind.len()
            ));
        }
        bind.push(Value::Integer(limit.into()));
        sql.push_str(&format!(
            " ORDER BY created_at DESC, id DESC LIMIT ?{}",
            bind.len()
        ));
        self.returning(sql, bind).await
    }

    async fn recently_finished(&self, since: i64, limit: u32) -> Result<Vec<Finished>, StoreError> {
        self.with(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT state, processing_ms, steps FROM jobs
                 WHERE state IN ('succeeded', 'failed') AND finished_at >= ?1
                 ORDER BY finished_at DESC LIMIT ?2",
            )?;
            let rows = statement.query_map(params![since, limit], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, Option<i64>>(1)?,
                    row.get::<_, String>(2)?,
                ))
            })?;
            rows.map(|row| {
                let (state, ms, steps) = row?;
                Finished::from_columns(parse_state(&state)?, ms, &steps)
            })
            .collect()
        })
        .await
    }

    async fn record_callback(
        &self,
        id: Uuid,
        callback: &Callback,
        next_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let (state, log) = (
            callback.state.as_str(),
            serde_json::to_string(&callback.attempts)?,
        );
        self.with(move |c| {
            c.execute(
                "UPDATE jobs SET webhook_state = ?2, webhook_log = ?3, webhook_next_at = ?4,
                        lease_until = NULL
                 WHERE id = ?1",
                params![id.to_string(), state, log, next_at],
            )?;
            Ok(())
        })
        .await
    }

    async fn release(&self, id: Uuid) -> Result<(), StoreError> {
        self.with(move |c| {
            c.prepare_cached("UPDATE jobs SET lease_until = NULL WHERE id = ?1")?
                .execute(params![id.to_string()])?;
            Ok(())
        })
        .await
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let key = key.clone();
        self.with(move |c| {
            let inserted = c.execute(
                "INSERT INTO api_keys (id, tenant, scopes, secret_hash, label, created_at,
                                       expires_at, revoked_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                params![
                    key.id,
                    key.tenant,
                    key.scopes_column(),
                    key.secret_hash,
                    key.label,
                    key.created_at,
                    key.expires_at,
                    key.revoked_at
                ],
            );
            unique(inserted)
        })
        .await
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            Ok(c.prepare_cached("SELECT * FROM api_keys WHERE id = ?1")?
                .query_row(params![id], row_to_api_key)
                .optional()?)
        })
        .await
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, StoreError> {
        let tenant = tenant.map(str::to_string);
        self.with(move |c| {
            let mut statement = c.prepare_cached(
                "SELECT * FROM api_keys WHERE ?1 IS NULL OR tenant = ?1
                 ORDER BY created_at, id",
            )?;
            let rows = statement.query_map(params![tenant], row_to_api_key)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn revoke_api_key(&self, id: &str, at: i64) -> Result<Option<ApiKey>, StoreError> {
        let id = id.to_string();
        self.with(move |c| {
            Ok(c.query_row(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?2) WHERE id = ?1
                 RETURNING *",
                params![id, at],
                row_to_api_key,
            )
            .optional()?)
        })
        .await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.with(|c| {
            c.prepare_cached("SELECT 1")?.query_row([], |_| Ok(()))?;
            Ok(())
        })
        .await
    }
}

/// Parses a stored state name.
pub(super) fn parse_state(name: &str) -> Result<JobState, StoreError> {
    JobState::parse(name).ok_or_else(|| StoreError::Corrupt(format!("unknown state {name:?}")))
}

/// An insert's outcome, with a broken uniqueness constraint read as
/// [`StoreError::DuplicateKey`].
fn unique(inserted: rusqlite::Result<usize>) -> Result<(), StoreError> {
    match inserted {
        Err(rusqlite::Error::SqliteFailure(e, _))
            if e.code == rusqlite::ErrorCode::ConstraintViolation =>
        {
            Err(StoreError::DuplicateKey)
        }
        other => other.map(|_| ()).map_err(StoreError::from),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls that arrive together share a commit; one that fails rolls back alone, and
    /// every one that succeeded is in the file once its caller hears back.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_group_commit_keeps_each_call_whole() {
        let path = std::env::temp_dir().join(format!("pixmill-group-{}.db", Uuid::new_v4()));
        let store = SqliteStore::open(&path).expect("open");
        let new_job = |id: Uuid, key: Option<&str>| NewJob {
            id,
            tenant: "t".into(),
            steps: Vec::new(),
            variants: Vec::new(),
            format: pixmill_shared::OutputFormat::Png,
            quality: 85,
            input_key: format!("inputs/{id}"),
            idempotency: key.map(|k| (k.to_string(), "h".to_string())),
            callback_url: None,
        };
        // 60 inserts at once: 40 of their own, 20 racing for one idempotency key.
        let mut calls = tokio::task::JoinSet::new();
        for n in 0..60 {
            let store = store.clone();
            let job = new_job(Uuid::new_v4(), (n % 3 == 0).then_some("same"));
            calls.spawn(async move { store.insert(job, Admission::unlimited()).await });
        }
        let (mut stored, mut duplicates) = (0, 0);
        while let Some(outcome) = calls.join_next().await {
            match outcome.expect("join") {
                Ok(_) => stored += 1,
                Err(StoreError::DuplicateKey) => duplicates += 1,
                Err(other) => panic!("unexpected {other}"),
            }
        }
        assert_eq!((stored, duplicates), (41, 19));
        drop(store);
        // Another connection reads what the answers promised.
        let conn = Connection::open(&path).expect("reopen");
        let rows: i64 = conn
            .query_row("SELECT COUNT(*) FROM jobs WHERE tenant = 't'", [], |r| {
                r.get(0)
            })
            .expect("count");
        assert_eq!(rows, 41);
    }

    fn job_of(tenant: &str) -> NewJob {
        let id = Uuid::new_v4();
        NewJob {
            id,
            tenant: tenant.into(),
            steps: Vec::new(),
            variants: Vec::new(),
            format: pixmill_shared::OutputFormat::Png,
            quality: 85,
            input_key: format!("inputs/{id}"),
            idempotency: None,
            callback_url: None,
        }
    }

    fn remove(path: &Path) {
        for suffix in ["", "-wal", "-shm", ".lock"] {
            let mut name = path.as_os_str().to_owned();
            name.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(name));
        }
    }

    /// A batch of confirmations marks exactly its jobs, whatever its size; the sweeper
    /// then finds only the others unconfirmed.
    #[tokio::test]
    async fn confirmed_jobs_are_marked_and_only_the_rest_are_swept() {
        let path = std::env::temp_dir().join(format!("pixmill-marks-{}.db", Uuid::new_v4()));
        let store = SqliteStore::open(&path).expect("open");
        let mut ids = Vec::new();
        for _ in 0..70 {
            let job = job_of("t");
            ids.push(job.id);
            store
                .insert(job, Admission::unlimited())
                .await
                .expect("insert");
        }
        store.mark_published(&ids[..1]).await.expect("one");
        store.mark_published(&ids[1..65]).await.expect("a batch");
        store.mark_published(&[]).await.expect("none");
        let later = pixmill_shared::now_ms() + 1_000;
        let mut swept: Vec<Uuid> = store
            .claim(Sweep::Unpublished, later, 100, later + 60_000)
            .await
            .expect("claim")
            .into_iter()
            .map(|job| job.id)
            .collect();
        swept.sort();
        let mut unmarked = ids[65..].to_vec();
        unmarked.sort();
        assert_eq!(swept, unmarked);
        drop(store);
        remove(&path);
    }

    /// A tenant at its limit is refused, and the refused insert leaves nothing behind;
    /// another tenant is not held back by it.
    #[tokio::test]
    async fn an_insert_over_the_limit_is_refused_and_undone() {
        let path = std::env::temp_dir().join(format!("pixmill-quota-{}.db", Uuid::new_v4()));
        let store = SqliteStore::open(&path).expect("open");
        let limit = Admission {
            max_inflight: 2,
            ..Admission::unlimited()
        };
        for _ in 0..2 {
            store.insert(job_of("a"), limit).await.expect("within");
        }
        let refused = job_of("a");
        let id = refused.id;
        match store.insert(refused, limit).await {
            Err(StoreError::OverQuota { open: 2, max: 2 }) => {}
            other => panic!("expected over_quota, got {other:?}"),
        }
        assert_eq!(store.get(&Scope::All, id).await.expect("get"), None);
        assert_eq!(store.in_flight("a").await.expect("count").open, 2);
        store
            .insert(job_of("b"), limit)
            .await
            .expect("another tenant");
        drop(store);
        remove(&path);
    }

    #[tokio::test]
    async fn jobs_from_before_tenants_belong_to_local() {
        let path = std::env::temp_dir().join(format!("pixmill-v5-{}.db", Uuid::new_v4()));
        let id = Uuid::new_v4();
        {
            // A file as a gateway without tenants left it: schema version 5, one job.
            let conn = Connection::open(&path).expect("open");
            for batch in [
                schema::SCHEMA_V1,
                schema::SCHEMA_V2,
                schema::SCHEMA_V3,
                schema::SCHEMA_V4,
                schema::SCHEMA_V5,
            ] {
                conn.execute_batch(batch).expect("old schema");
            }
            conn.pragma_update(None, "user_version", 5)
                .expect("version");
            conn.execute(
                "INSERT INTO jobs (id, state, steps, format, quality, input_key, created_at,
                                   updated_at, idempotency_key, request_hash)
                 VALUES (?1, 'queued', '[]', 'png', 85, 'inputs/x', 1, 1, 'k', 'h')",
                params![id.to_string()],
            )
            .expect("old job");
        }
        let store = SqliteStore::open(&path).expect("migrate");
        let local = Scope::tenant(crate::store::LOCAL_TENANT);
        let job = store.get(&local, id).await.expect("get").expect("kept");
        assert_eq!(job.tenant, "local");
        let (found, _) = store
            .find_by_key("local", "k")
            .await
            .expect("find")
            .expect("its key");
        assert_eq!(found.id, id);
        assert_eq!(store.find_by_key("other", "k").await.expect("find"), None);
        assert!(store.list_api_keys(None).await.expect("keys").is_empty());
        drop(store);
        remove(&path);
    }

    #[test]
    fn a_second_gateway_on_the_same_file_is_refused() {
        let path = std::env::temp_dir().join(format!("pixmill-lock-{}.db", Uuid::new_v4()));
        let first = SqliteStore::open(&path).expect("first gateway");
        let err = SqliteStore::open(&path).expect_err("second gateway");
        let message = err.to_string();
        assert!(message.contains("another pixmill-gateway"), "{message}");
        assert!(
            message.contains("PIXMILL_DATABASE_URL=postgres://"),
            "{message}"
        );
        drop(first);
        let again = SqliteStore::open(&path).expect("free again once the first has closed");
        drop(again);
        remove(&path);
    }
}

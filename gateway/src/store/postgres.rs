//! The PostgreSQL backend, for any number of gateways.
//!
//! tokio-postgres (async, pipelined, no build-time database) behind a deadpool-postgres
//! pool. Pool waits and connects are short, so a database that is down turns into a
//! quick 503 with `Retry-After`, never a hung request. Background passes claim rows with
//! `FOR UPDATE SKIP LOCKED` and a lease, so two gateways never take the same job.

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Timeouts};
use pixmill_shared::JobResult;
use tokio_postgres::{Row, error::SqlState, types::ToSql};
use uuid::Uuid;

use super::{
    Admission, Admitted, ApiKey, Callback, Change, Finished, INTERACTIVE_EXTRA, InFlight, Job,
    JobError, JobState, NewJob, Scope, StoreError, Sweep, TaskStore, TenantLimits,
};

/// Connections per gateway. Each request holds one only for its queries.
const POOL_SIZE: usize = 16;
/// Longest wait for a pooled connection, or for a new one, before answering 503.
const POOL_TIMEOUT: Duration = Duration::from_secs(2);
/// Migrations take this advisory lock, so gateways starting together migrate once.
const MIGRATION_LOCK: i64 = 0x0070_6978_6d69_6c6c; // "pixmill" in ASCII
/// The first half of a tenant's advisory lock (the second is a hash of its name): taken
/// by every admission and release of the tenant's jobs, so counts and writes of two
/// gateways never interleave.
const TENANT_LOCK: i32 = 0x7069_786d; // "pixm"

/// The migrations, in order; `pixmill_schema` records how many have run.
const MIGRATIONS: &[&str] = &[
    // 1: the jobs table.
    "CREATE TABLE jobs (
        id                  UUID PRIMARY KEY,
        state               TEXT NOT NULL,
        steps               JSONB NOT NULL,
        format              TEXT NOT NULL,
        quality             SMALLINT NOT NULL,
        input_key           TEXT NOT NULL,
        created_at          BIGINT NOT NULL,
        updated_at          BIGINT NOT NULL,
        started_at          BIGINT,
        finished_at         BIGINT,
        attempts            INTEGER NOT NULL DEFAULT 0,
        worker              TEXT,
        error_code          TEXT,
        error_message       TEXT,
        result_key          TEXT,
        result_content_type TEXT,
        result_width        INTEGER,
        result_height       INTEGER,
        result_bytes        BIGINT,
        processing_ms       BIGINT,
        idempotency_key     TEXT UNIQUE,
        request_hash        TEXT,
        published_at        BIGINT,
        republished         INTEGER NOT NULL DEFAULT 0,
        result_deleted_at   BIGINT,
        lease_until         BIGINT
    );
    CREATE INDEX jobs_state ON jobs (state, updated_at);
    CREATE INDEX jobs_finished ON jobs (state, finished_at);
    CREATE INDEX jobs_created ON jobs (state, created_at);",
    // 2: newest-first listing.
    "CREATE INDEX jobs_listing ON jobs (created_at DESC, id DESC);
    CREATE INDEX jobs_state_listing ON jobs (state, created_at DESC, id DESC);",
    // 3: webhooks.
    "ALTER TABLE jobs ADD COLUMN callback_url TEXT;
    ALTER TABLE jobs ADD COLUMN webhook_state TEXT;
    ALTER TABLE jobs ADD COLUMN webhook_next_at BIGINT;
    ALTER TABLE jobs ADD COLUMN webhook_log JSONB;
    CREATE INDEX jobs_webhooks ON jobs (webhook_next_at) WHERE callback_url IS NOT NULL;",
    // 4: tenants and API keys. Jobs made before belong to the tenant `local` (the
    // default fills them, then goes, so no insert can forget the tenant); an idempotency
    // key is unique per tenant.
    "ALTER TABLE jobs ADD COLUMN tenant TEXT NOT NULL DEFAULT 'local';
    ALTER TABLE jobs ALTER COLUMN tenant DROP DEFAULT;
    ALTER TABLE jobs DROP CONSTRAINT IF EXISTS jobs_idempotency_key_key;
    CREATE UNIQUE INDEX jobs_tenant_idempotency_key ON jobs (tenant, idempotency_key)
        WHERE idempotency_key IS NOT NULL;
    CREATE INDEX jobs_tenant_listing ON jobs (tenant, created_at DESC, id DESC);
    CREATE TABLE api_keys (
        id          TEXT PRIMARY KEY,
        tenant      TEXT NOT NULL,
        scopes      TEXT NOT NULL,
        secret_hash BYTEA NOT NULL,
        label       TEXT,
        created_at  BIGINT NOT NULL,
        expires_at  BIGINT,
        revoked_at  BIGINT
    );
    CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);",
    // 5: quotas and fair share. A job is released to the broker at once or held for its
    // turn; every job before this was released when it was made.
    "ALTER TABLE jobs ADD COLUMN released_at BIGINT;
    ALTER TABLE jobs ADD COLUMN interactive BOOLEAN NOT NULL DEFAULT FALSE;
    UPDATE jobs SET released_at = created_at;
    CREATE INDEX jobs_tenant_open ON jobs (tenant, state) WHERE state IN ('queued', 'running');
    CREATE INDEX jobs_held ON jobs (tenant, interactive, created_at)
        WHERE state = 'queued' AND released_at IS NULL;
    CREATE TABLE tenants (
        name         TEXT PRIMARY KEY,
        max_inflight INTEGER,
        rate         DOUBLE PRECISION,
        burst        INTEGER,
        updated_at   BIGINT NOT NULL
    );",
    // 6: the hops of a job's routing slip, when it made more than one.
    "ALTER TABLE jobs ADD COLUMN hops JSONB;",
    // 7: a job's variants and, once it succeeded, their outputs.
    "ALTER TABLE jobs ADD COLUMN variants JSONB;
    ALTER TABLE jobs ADD COLUMN outputs JSONB;",
];

/// Handle to the PostgreSQL task store. Cheap to clone.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: Pool,
}

impl From<tokio_postgres::Error> for StoreError {
    fn from(e: tokio_postgres::Error) -> Self {
        if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
            StoreError::DuplicateKey
        } else if let Some(db) = e.as_db_error() {
            // "db error" alone hides what the server said.
            StoreError::Unavailable(format!("postgres: {}: {}", db.code().code(), db.message()))
        } else {
            StoreError::Unavailable(format!("postgres: {}", super::pg_tls::error_chain(&e)))
        }
    }
}

impl From<deadpool_postgres::PoolError> for StoreError {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        let why = match &e {
            deadpool_postgres::PoolError::Backend(e) => super::pg_tls::error_chain(e),
            other => other.to_string(),
        };
        StoreError::Unavailable(format!("postgres: no connection: {why}"))
    }
}

impl PgStore {
    /// Connects and brings the schema up to date.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        let (mut config, tls) =
            super::pg_tls::config(url, super::pg_tls::ca_file_from_env().as_deref())
                .map_err(StoreError::Unavailable)?;
        config.connect_timeout(POOL_TIMEOUT);
        config.application_name("pixmill-gateway");
        let manager = Manager::from_config(
            config,
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .timeouts(Timeouts {
                wait: Some(POOL_TIMEOUT),
                create: Some(POOL_TIMEOUT),
                recycle: Some(POOL_TIMEOUT),
            })
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|e| StoreError::Unavailable(format!("postgres pool: {e}")))?;
        let store = Self { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
            .await?;
        tx.batch_execute("CREATE TABLE IF NOT EXISTS pixmill_schema (version INTEGER NOT NULL)")
            .await?;
        let done: i64 = tx
            .query_one("SELECT count(*) FROM pixmill_schema", &[])
            .await?
            .get(0);
        for (i, migration) in MIGRATIONS.iter().enumerate().skip(done as usize) {
            tx.batch_execute(migration).await?;
            tx.execute(
                "INSERT INTO pixmill_schema (version) VALUES ($1)",
                &[&(i as i32 + 1)],
            )
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// The jobs `sql` returns.
    async fn rows(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<Job>, StoreError> {
        self.query_as(sql, params, row_to_job).await
    }

    /// The API keys `sql` returns.
    async fn api_keys(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<ApiKey>, StoreError> {
        self.query_as(sql, params, row_to_api_key).await
    }

    /// Runs `sql` as a cached prepared statement and reads each row with `read`.
    async fn query_as<T>(
        &self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
        read: fn(&Row) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        client
            .query(&statement, params)
            .await?
            .iter()
            .map(read)
            .collect()
    }

    async fn execute(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, StoreError> {
        let client = self.pool.get().await?;
        let statement = client.prepare_cached(sql).await?;
        Ok(client.execute(&statement, params).await?)
    }
}

/// Creates an empty database `name` on the server `admin_url` points at, and returns
/// the URL of the new database. For tests and first-time set-up; `name` must be a
/// plain identifier.
pub async fn create_database(admin_url: &str, name: &str) -> Result<String, StoreError> {
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(StoreError::Unavailable(format!(
            "{name:?} is not a plain database name"
        )));
    }
    let (config, tls) =
        super::pg_tls::config(admin_url, super::pg_tls::ca_file_from_env().as_deref())
            .map_err(StoreError::Unavailable)?;
    let (client, connection) = config.connect(tls).await?;
    tokio::spawn(connection);
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await?;
    let (base, query) = admin_url.split_once('?').unwrap_or((admin_url, ""));
    let server = base.rsplit_once('/').map_or(base, |(server, _)| server);
    Ok(if query.is_empty() {
        format!("{server}/{name}")
    } else {
        format!("{server}/{name}?{query}")
    })
}

fn int(n: u32) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

fn big(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

#[async_trait::async_trait]
impl TaskStore for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn insert(&self, job: NewJob, admission: Admission) -> Result<Admitted, StoreError> {
        let steps = serde_json::to_value(&job.steps)?;
        let now = pixmill_shared::now_ms();
        let (key, hash) = job.idempotency.unzip();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let flight = lock_tenant(&tx, &job.tenant).await?;
        if flight.open >= u64::from(admission.max_inflight) {
            return Err(StoreError::OverQuota {
                open: flight.open,
                max: admission.max_inflight,
            });
        }
        let released = admission.releases(flight.open - flight.held, flight.held);
        let statement = tx
            .prepare_cached(
                "INSERT INTO jobs (id, state, steps, format, quality, input_key, created_at, updated_at,
                                   idempotency_key, request_hash, callback_url, tenant,
                                   released_at, interactive, variants)
                 VALUES ($1, 'queued', $2, $3, $4, $5, $6, $6, $7, $8, $9, $10, $11, $12, $13)",
            )
            .await?;
        tx.execute(
            &statement,
            &[
                &job.id,
                &steps,
                &job.format.as_str(),
                &i16::from(job.quality),
                &job.input_key,
                &now,
                &key,
                &hash,
                &job.callback_url,
                &job.tenant,
                &released.then_some(now),
                &admission.interactive,
                &json_list(&job.variants),
            ],
        )
        .await?;
        tx.commit().await?;
        Ok(if released {
            Admitted::Released
        } else {
            Admitted::Held
        })
    }

    async fn release_held(&self, tenant: &str, window: u32) -> Result<Vec<Job>, StoreError> {
        let now = pixmill_shared::now_ms();
        let mut client = self.pool.get().await?;
        let tx = client.transaction().await?;
        let mut flight = lock_tenant(&tx, tenant).await?;
        let statement = tx
            .prepare_cached(
                "UPDATE jobs SET released_at = $1 WHERE id IN (
                     SELECT id FROM jobs
                     WHERE tenant = $2 AND state = 'queued' AND released_at IS NULL
                       AND interactive = $3
                     ORDER BY created_at LIMIT $4
                 ) RETURNING *",
            )
            .await?;
        let mut released = Vec::new();
        // Interactive jobs first, with their extra slots; then bulk work.
        for (interactive, limit) in [
            (true, window.saturating_add(INTERACTIVE_EXTRA)),
            (false, window),
        ] {
            let room = u64::from(limit).saturating_sub(flight.open - flight.held);
            if room == 0 || flight.held == 0 {
                continue;
            }
            let room = i64::try_from(room).unwrap_or(i64::MAX);
            for row in tx
                .query(&statement, &[&now, &tenant, &interactive, &room])
                .await?
            {
                released.push(row_to_job(&row)?);
                flight.held -= 1;
            }
        }
        tx.commit().await?;
        released.sort_by_key(|job| job.created_at);
        Ok(released)
    }

    async fn held_tenants(&self) -> Result<Vec<String>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT DISTINCT tenant FROM jobs WHERE state = 'queued' AND released_at IS NULL",
            )
            .await?;
        Ok(client
            .query(&statement, &[])
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect())
    }

    async fn in_flight(&self, tenant: &str) -> Result<InFlight, StoreError> {
        let client = self.pool.get().await?;
        in_flight(&client, tenant).await
    }

    async fn put_tenant(&self, limits: &TenantLimits) -> Result<(), StoreError> {
        let max = limits
            .max_inflight
            .map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        let burst = limits.burst.map(|n| i32::try_from(n).unwrap_or(i32::MAX));
        self.execute(
            "INSERT INTO tenants (name, max_inflight, rate, burst, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (name) DO UPDATE SET max_inflight = excluded.max_inflight,
                 rate = excluded.rate, burst = excluded.burst, updated_at = excluded.updated_at",
            &[&limits.name, &max, &limits.rate, &burst, &limits.updated_at],
        )
        .await?;
        Ok(())
    }

    async fn get_tenant(&self, name: &str) -> Result<Option<TenantLimits>, StoreError> {
        Ok(self
            .query_as(
                "SELECT * FROM tenants WHERE name = $1",
                &[&name],
                row_to_tenant,
            )
            .await?
            .pop())
    }

    async fn list_tenants(&self) -> Result<Vec<TenantLimits>, StoreError> {
        self.query_as("SELECT * FROM tenants ORDER BY name", &[], row_to_tenant)
            .await
    }

    async fn delete(&self, id: Uuid) -> Result<(), StoreError> {
        self.execute("DELETE FROM jobs WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    async fn get(&self, scope: &Scope, id: Uuid) -> Result<Option<Job>, StoreError> {
        Ok(self
            .rows(
                "SELECT * FROM jobs WHERE id = $1 AND ($2::TEXT IS NULL OR tenant = $2)",
                &[&id, &scope.only()],
            )
            .await?
            .pop())
    }

    async fn find_by_key(
        &self,
        tenant: &str,
        key: &str,
    ) -> Result<Option<(Job, String)>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached("SELECT * FROM jobs WHERE tenant = $1 AND idempotency_key = $2")
            .await?;
        match client.query_opt(&statement, &[&tenant, &key]).await? {
            None => Ok(None),
            Some(row) => {
                let hash: Option<String> = row.try_get("request_hash")?;
                Ok(Some((row_to_job(&row)?, hash.unwrap_or_default())))
            }
        }
    }

    async fn apply(&self, id: Uuid, change: Change) -> Result<Option<Job>, StoreError> {
        let now = pixmill_shared::now_ms();
        let sources = change.target().sources_sql();
        let rows = match change {
            Change::Running { worker, attempt } => {
                let sql = format!(
                    "UPDATE jobs SET state = 'running', worker = $2, attempts = GREATEST(attempts, $3),
                            started_at = COALESCE(started_at, $4), updated_at = $4
                     WHERE id = $1 AND state IN ({sources}) RETURNING *"
                );
                self.rows(&sql, &[&id, &worker, &int(attempt), &now])
                    .await?
            }
            Change::Succeeded {
                worker,
                attempt,
                result,
                started_at,
                hops,
            } => {
                let sql = format!(
                    "UPDATE jobs SET state = 'succeeded', worker = $2, attempts = GREATEST(attempts, $3),
                            started_at = COALESCE(started_at, $11, $4), finished_at = $4, updated_at = $4,
                            result_key = $5, result_content_type = $6, result_width = $7,
                            result_height = $8, result_bytes = $9, processing_ms = $10, hops = $12,
                            outputs = $13
                     WHERE id = $1 AND state IN ({sources}) RETURNING *"
                );
                let hops = json_list(&hops);
                let outputs = json_list(&result.outputs);
                let params: [&(dyn ToSql + Sync); 13] = [
                    &id,
                    &worker,
                    &int(attempt),
                    &now,
                    &result.key,
                    &result.content_type,
                    &int(result.width),
                    &int(result.height),
                    &big(result.bytes),
                    &big(result.processing_ms),
                    &started_at,
                    &hops,
                    &outputs,
                ];
                self.rows(&sql, &params).await?
            }
            Change::Failed {
                worker,
                attempt,
                code,
                message,
                started_at,
                hops,
            } => {
                let sql = format!(
                    "UPDATE jobs SET state = 'failed', worker = COALESCE($2, worker),
                            attempts = GREATEST(attempts, $3), started_at = COALESCE(started_at, $7),
                            finished_at = $4, updated_at = $4, error_code = $5, error_message = $6,
                            hops = COALESCE($8, hops)
                     WHERE id = $1 AND state IN ({sources}) RETURNING *"
                );
                let hops = json_list(&hops);
                self.rows(
                    &sql,
                    &[
                        &id,
                        &worker,
                        &int(attempt),
                        &now,
                        &code,
                        &message,
                        &started_at,
                        &hops,
                    ],
                )
                .await?
            }
            Change::Cancelled => {
                let sql = format!(
                    "UPDATE jobs SET state = 'cancelled', finished_at = $2, updated_at = $2,
                            error_code = 'cancelled',
                            error_message = 'the job was cancelled before it ran'
                     WHERE id = $1 AND state IN ({sources}) RETURNING *"
                );
                self.rows(&sql, &[&id, &now]).await?
            }
            Change::Expired => {
                let sql = format!(
                    "UPDATE jobs SET state = 'expired', updated_at = $2
                     WHERE id = $1 AND state IN ({sources}) RETURNING *"
                );
                self.rows(&sql, &[&id, &now]).await?
            }
        };
        Ok(rows.into_iter().next())
    }

    async fn mark_published(&self, ids: &[Uuid]) -> Result<(), StoreError> {
        if ids.is_empty() {
            return Ok(());
        }
        let now = pixmill_shared::now_ms();
        let ids = ids.to_vec();
        self.execute(
            "UPDATE jobs SET published_at = $2 WHERE id = ANY($1)",
            &[&ids, &now],
        )
        .await?;
        Ok(())
    }

    async fn mark_republished(&self, id: Uuid) -> Result<(), StoreError> {
        let now = pixmill_shared::now_ms();
        self.execute(
            "UPDATE jobs SET published_at = $2, updated_at = $2, republished = republished + 1
             WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        Ok(())
    }

    async fn mark_result_deleted(&self, id: Uuid) -> Result<(), StoreError> {
        let now = pixmill_shared::now_ms();
        self.execute(
            "UPDATE jobs SET result_deleted_at = COALESCE(result_deleted_at, $2), updated_at = $2
             WHERE id = $1",
            &[&id, &now],
        )
        .await?;
        Ok(())
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
            "UPDATE jobs SET lease_until = $1 WHERE id IN (
                 SELECT id FROM jobs WHERE {} AND COALESCE(lease_until, 0) < $2
                 ORDER BY created_at LIMIT $3 FOR UPDATE SKIP LOCKED
             ) RETURNING *",
            sweep.condition(cutoff)
        );
        self.rows(&sql, &[&lease_until, &now, &i64::from(limit)])
            .await
    }

    async fn list(
        &self,
        scope: &Scope,
        state: Option<JobState>,
        before: Option<(i64, Uuid)>,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        let state = state.map(|s| s.as_str().to_string());
        let (created_at, id) = before.unzip();
        self.rows(
            "SELECT * FROM jobs
             WHERE ($1::TEXT IS NULL OR state = $1)
               AND ($2::BIGINT IS NULL OR (created_at, id) < ($2, $3))
               AND ($5::TEXT IS NULL OR tenant = $5)
             ORDER BY created_at DESC, id DESC LIMIT $4",
            &[&state, &created_at, &id, &i64::from(limit), &scope.only()],
        )
        .await
    }

    async fn recently_finished(&self, since: i64, limit: u32) -> Result<Vec<Finished>, StoreError> {
        let client = self.pool.get().await?;
        let statement = client
            .prepare_cached(
                "SELECT state, processing_ms, steps::text FROM jobs
                 WHERE state IN ('succeeded', 'failed') AND finished_at >= $1
                 ORDER BY finished_at DESC LIMIT $2",
            )
            .await?;
        client
            .query(&statement, &[&since, &i64::from(limit)])
            .await?
            .iter()
            .map(|row| {
                let state: String = row.try_get(0)?;
                let ms: Option<i64> = row.try_get(1)?;
                let steps: String = row.try_get(2)?;
                let state = JobState::parse(&state)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown state {state:?}")))?;
                Finished::from_columns(state, ms, &steps)
            })
            .collect()
    }

    async fn record_callback(
        &self,
        id: Uuid,
        callback: &Callback,
        next_at: Option<i64>,
    ) -> Result<(), StoreError> {
        let log = serde_json::to_value(&callback.attempts)?;
        self.execute(
            "UPDATE jobs SET webhook_state = $2, webhook_log = $3, webhook_next_at = $4,
                    lease_until = NULL
             WHERE id = $1",
            &[&id, &callback.state.as_str(), &log, &next_at],
        )
        .await?;
        Ok(())
    }

    async fn release(&self, id: Uuid) -> Result<(), StoreError> {
        self.execute("UPDATE jobs SET lease_until = NULL WHERE id = $1", &[&id])
            .await?;
        Ok(())
    }

    async fn insert_api_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        self.execute(
            "INSERT INTO api_keys (id, tenant, scopes, secret_hash, label, created_at,
                                   expires_at, revoked_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            &[
                &key.id,
                &key.tenant,
                &key.scopes_column(),
                &key.secret_hash,
                &key.label,
                &key.created_at,
                &key.expires_at,
                &key.revoked_at,
            ],
        )
        .await?;
        Ok(())
    }

    async fn get_api_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        Ok(self
            .api_keys("SELECT * FROM api_keys WHERE id = $1", &[&id])
            .await?
            .pop())
    }

    async fn list_api_keys(&self, tenant: Option<&str>) -> Result<Vec<ApiKey>, StoreError> {
        self.api_keys(
            "SELECT * FROM api_keys WHERE $1::TEXT IS NULL OR tenant = $1
             ORDER BY created_at, id",
            &[&tenant],
        )
        .await
    }

    async fn revoke_api_key(&self, id: &str, at: i64) -> Result<Option<ApiKey>, StoreError> {
        Ok(self
            .api_keys(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $2) WHERE id = $1
                 RETURNING *",
                &[&id, &at],
            )
            .await?
            .pop())
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let client = self.pool.get().await?;
        client.simple_query("SELECT 1").await?;
        Ok(())
    }
}

fn row_to_job(row: &Row) -> Result<Job, StoreError> {
    let corrupt = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    let get_u32 = |name: &str| -> Result<u32, StoreError> {
        let v: i32 = row.try_get(name).map_err(corrupt)?;
        Ok(u32::try_from(v).unwrap_or(0))
    };
    let opt_u32 = |name: &str| -> Result<Option<u32>, StoreError> {
        let v: Option<i32> = row.try_get(name).map_err(corrupt)?;
        Ok(v.map(|v| u32::try_from(v).unwrap_or(0)))
    };
    let result_key: Option<String> = row.try_get("result_key").map_err(corrupt)?;
    let outputs: Option<serde_json::Value> = row.try_get("outputs").map_err(corrupt)?;
    let outputs = match outputs {
        Some(value) => serde_json::from_value(value)?,
        None => Vec::new(),
    };
    let result = match result_key {
        Some(key) => Some(JobResult {
            key,
            content_type: row.try_get("result_content_type").map_err(corrupt)?,
            width: opt_u32("result_width")?.unwrap_or(0),
            height: opt_u32("result_height")?.unwrap_or(0),
            bytes: row
                .try_get::<_, Option<i64>>("result_bytes")
                .map_err(corrupt)?
                .map_or(0, |v| u64::try_from(v).unwrap_or(0)),
            processing_ms: row
                .try_get::<_, Option<i64>>("processing_ms")
                .map_err(corrupt)?
                .map_or(0, |v| u64::try_from(v).unwrap_or(0)),
            outputs,
        }),
        None => None,
    };
    let state: String = row.try_get("state").map_err(corrupt)?;
    let format: String = row.try_get("format").map_err(corrupt)?;
    let steps: serde_json::Value = row.try_get("steps").map_err(corrupt)?;
    let quality: i16 = row.try_get("quality").map_err(corrupt)?;
    let error_code: Option<String> = row.try_get("error_code").map_err(corrupt)?;
    let error_message: Option<String> = row.try_get("error_message").map_err(corrupt)?;
    let callback_url: Option<String> = row.try_get("callback_url").map_err(corrupt)?;
    let webhook_state: Option<String> = row.try_get("webhook_state").map_err(corrupt)?;
    let webhook_log: Option<serde_json::Value> = row.try_get("webhook_log").map_err(corrupt)?;
    let webhook_log = webhook_log.map(|v| v.to_string());
    let hops: Option<serde_json::Value> = row.try_get("hops").map_err(corrupt)?;
    let variants: Option<serde_json::Value> = row.try_get("variants").map_err(corrupt)?;
    Ok(Job {
        id: row.try_get("id").map_err(corrupt)?,
        tenant: row.try_get("tenant").map_err(corrupt)?,
        state: JobState::parse(&state)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown state {state:?}")))?,
        steps: serde_json::from_value(steps)?,
        variants: match variants {
            Some(value) => serde_json::from_value(value)?,
            None => Vec::new(),
        },
        format: pixmill_shared::OutputFormat::parse(&format)
            .ok_or_else(|| StoreError::Corrupt(format!("unknown format {format:?}")))?,
        quality: u8::try_from(quality).unwrap_or(85),
        input_key: row.try_get("input_key").map_err(corrupt)?,
        created_at: row.try_get("created_at").map_err(corrupt)?,
        updated_at: row.try_get("updated_at").map_err(corrupt)?,
        started_at: row.try_get("started_at").map_err(corrupt)?,
        finished_at: row.try_get("finished_at").map_err(corrupt)?,
        attempts: get_u32("attempts")?,
        worker: row.try_get("worker").map_err(corrupt)?,
        error: error_code
            .zip(error_message)
            .map(|(code, message)| JobError { code, message }),
        result,
        published_at: row.try_get("published_at").map_err(corrupt)?,
        republished: get_u32("republished")?,
        result_deleted_at: row.try_get("result_deleted_at").map_err(corrupt)?,
        callback: super::callback::from_columns(
            callback_url,
            webhook_state,
            webhook_log.as_deref(),
        )?,
        hops: match hops {
            Some(value) => serde_json::from_value(value)?,
            None => Vec::new(),
        },
    })
}

/// A routing slip's hops, a job's variants or its outputs as a JSONB value, or NULL
/// for none.
fn json_list<T: serde::Serialize>(items: &[T]) -> Option<serde_json::Value> {
    (!items.is_empty())
        .then(|| serde_json::to_value(items).ok())
        .flatten()
}

/// Takes the tenant's advisory lock for the rest of the transaction, then counts its
/// jobs in flight.
async fn lock_tenant(
    tx: &deadpool_postgres::Transaction<'_>,
    tenant: &str,
) -> Result<InFlight, StoreError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
        &[&TENANT_LOCK, &tenant],
    )
    .await?;
    in_flight(tx, tenant).await
}

/// The tenant's jobs queued or running, and how many of them are held.
async fn in_flight(
    client: &impl deadpool_postgres::GenericClient,
    tenant: &str,
) -> Result<InFlight, StoreError> {
    let row = client
        .query_one(
            "SELECT COUNT(*), COUNT(released_at) FROM jobs
             WHERE tenant = $1 AND state IN ('queued', 'running')",
            &[&tenant],
        )
        .await?;
    let open = u64::try_from(row.get::<_, i64>(0)).unwrap_or(0);
    let released = u64::try_from(row.get::<_, i64>(1)).unwrap_or(0);
    Ok(InFlight {
        open,
        held: open.saturating_sub(released),
    })
}

fn row_to_tenant(row: &Row) -> Result<TenantLimits, StoreError> {
    let corrupt = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    let max: Option<i32> = row.try_get("max_inflight").map_err(corrupt)?;
    let burst: Option<i32> = row.try_get("burst").map_err(corrupt)?;
    Ok(TenantLimits {
        name: row.try_get("name").map_err(corrupt)?,
        max_inflight: max.map(|n| u32::try_from(n).unwrap_or(0)),
        rate: row.try_get("rate").map_err(corrupt)?,
        burst: burst.map(|n| u32::try_from(n).unwrap_or(0)),
        updated_at: row.try_get("updated_at").map_err(corrupt)?,
    })
}

fn row_to_api_key(row: &Row) -> Result<ApiKey, StoreError> {
    let corrupt = |e: tokio_postgres::Error| StoreError::Corrupt(e.to_string());
    let scopes: String = row.try_get("scopes").map_err(corrupt)?;
    Ok(ApiKey {
        id: row.try_get("id").map_err(corrupt)?,
        tenant: row.try_get("tenant").map_err(corrupt)?,
        scopes: ApiKey::parse_scopes(&scopes),
        secret_hash: row.try_get("secret_hash").map_err(corrupt)?,
        label: row.try_get("label").map_err(corrupt)?,
        created_at: row.try_get("created_at").map_err(corrupt)?,
        expires_at: row.try_get("expires_at").map_err(corrupt)?,
        revoked_at: row.try_get("revoked_at").map_err(corrupt)?,
    })
}

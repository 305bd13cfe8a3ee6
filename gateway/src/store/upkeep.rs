//! Queries for the sweeper and the retention janitor.

use rusqlite::params;
use uuid::Uuid;

use super::{
    Job, StoreError, TaskStore,
    schema::{Parts, row_to_parts},
};

impl TaskStore {
    /// The sweeper published the job again.
    pub async fn mark_republished(&self, id: Uuid) -> Result<(), StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            c.execute(
                "UPDATE jobs SET published_at = ?2, updated_at = ?2, republished = republished + 1
                 WHERE id = ?1",
                params![id.to_string(), now],
            )?;
            Ok(())
        })
        .await
    }

    /// Finished jobs older than `cutoff` (ms) that still hold blobs: at most `limit`.
    pub async fn due_for_expiry(&self, cutoff: i64, limit: u32) -> Result<Vec<Job>, StoreError> {
        self.select(
            "SELECT * FROM jobs WHERE state IN ('succeeded', 'failed', 'cancelled')
             AND finished_at < ?1 LIMIT ?2",
            cutoff,
            limit,
        )
        .await
    }

    /// Marks a job expired once its blobs are gone.
    pub async fn mark_expired(&self, id: Uuid) -> Result<(), StoreError> {
        let now = pixmill_shared::now_ms();
        self.with(move |c| {
            c.execute(
                "UPDATE jobs SET state = 'expired', updated_at = ?2
                 WHERE id = ?1 AND state IN ('succeeded', 'failed', 'cancelled')",
                params![id.to_string(), now],
            )?;
            Ok(())
        })
        .await
    }

    /// Jobs `queued` since before `cutoff` whose publish was never confirmed.
    pub async fn unpublished(&self, cutoff: i64, limit: u32) -> Result<Vec<Job>, StoreError> {
        self.select(
            "SELECT * FROM jobs WHERE state = 'queued' AND published_at IS NULL
             AND created_at < ?1 LIMIT ?2",
            cutoff,
            limit,
        )
        .await
    }

    /// Jobs `running` with no news since before `cutoff`.
    pub async fn stale_running(&self, cutoff: i64, limit: u32) -> Result<Vec<Job>, StoreError> {
        self.select(
            "SELECT * FROM jobs WHERE state = 'running' AND updated_at < ?1 LIMIT ?2",
            cutoff,
            limit,
        )
        .await
    }

    async fn select(
        &self,
        sql: &'static str,
        cutoff: i64,
        limit: u32,
    ) -> Result<Vec<Job>, StoreError> {
        self.with(move |c| {
            let mut statement = c.prepare_cached(sql)?;
            let rows = statement.query_map(params![cutoff, limit], row_to_parts)?;
            rows.map(|row| row.map_err(StoreError::from).and_then(Parts::into_job))
                .collect()
        })
        .await
    }
}

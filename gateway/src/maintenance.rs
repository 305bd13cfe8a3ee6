//! Background upkeep: the sweeper that makes sure no job waits forever, and the
//! retention janitor that removes old inputs and results.
//!
//! - A job still `queued` without a confirmed publish (the gateway died between storing
//!   and publishing, or the confirm never arrived) is published again, or failed with
//!   `lost` when its upload is gone.
//! - A job `running` with no news for `stale_after` is published again (its worker may
//!   have vanished with its connection still half-open), up to [`MAX_REPUBLISH`] times,
//!   then failed with `lost`. A duplicate run is harmless: the store only moves forward.
//! - A finished job older than the retention period loses its blobs and becomes
//!   `expired`.
//!
//! With several gateways on one PostgreSQL database, every gateway runs these passes.
//! Each job is *claimed* first (a lease in its row, taken with `FOR UPDATE SKIP
//! LOCKED`), so two gateways never handle the same job in the same round.

use std::time::Duration;

use pixmill_shared::{ErrorCode, keys, metrics::Event};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::{
    fair_share::request_of,
    jobs::Jobs,
    store::{Change, Job, StoreError, Sweep},
};

/// How long a claim keeps other passes off a job: far longer than handling one job
/// takes (a publish with its timeout, a few deletes).
const LEASE: Duration = Duration::from_secs(60);

/// How often a stale job is published again before it is failed as `lost`.
pub const MAX_REPUBLISH: u32 = 3;
/// Jobs handled per pass and per kind, so one pass never holds the store for long.
const BATCH: u32 = 200;

/// Timing of the upkeep passes.
#[derive(Debug, Clone, Copy)]
pub struct Upkeep {
    /// Time between passes.
    pub interval: Duration,
    /// A `queued` job unconfirmed for this long is published again.
    pub unconfirmed_after: Duration,
    /// A `running` job with no news for this long is published again.
    pub stale_after: Duration,
    /// Finished jobs keep their blobs this long.
    pub retention: Duration,
}

/// Runs upkeep passes until `shutdown`, the first one at once (a restarted gateway
/// repairs what its predecessor left).
pub async fn run(jobs: Jobs, upkeep: Upkeep, shutdown: CancellationToken) {
    loop {
        if let Err(e) = pass(&jobs, &upkeep).await {
            warn!(error = %e, "upkeep pass failed; trying again next time");
        }
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(upkeep.interval) => {}
        }
    }
}

/// One pass of every kind of upkeep.
pub async fn pass(jobs: &Jobs, upkeep: &Upkeep) -> Result<(), StoreError> {
    let now = pixmill_shared::now_ms();
    let ago = |d: Duration| now - i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    let lease_until = now + i64::try_from(LEASE.as_millis()).unwrap_or(i64::MAX);
    let claim = |sweep, cutoff| jobs.store.claim(sweep, cutoff, BATCH, lease_until);

    for job in claim(Sweep::Unpublished, ago(upkeep.unconfirmed_after)).await? {
        republish(jobs, &job, "its publish was never confirmed").await?;
    }
    for job in claim(Sweep::StaleRunning, ago(upkeep.stale_after)).await? {
        if job.republished >= MAX_REPUBLISH {
            fail_lost(
                jobs,
                &job,
                &format!(
                    "no worker finished this job after {} re-deliveries",
                    job.republished
                ),
            )
            .await?;
        } else {
            republish(jobs, &job, "no worker reported on it for too long").await?;
        }
    }
    for job in claim(Sweep::Expiry, ago(upkeep.retention)).await? {
        let mut blobs = vec![job.input_key.clone(), keys::cancel(job.id)];
        blobs.extend(job.result_keys());
        blobs.extend(
            pixmill_shared::messages::handoffs(&job.steps)
                .into_iter()
                .map(|cursor| keys::intermediate(job.id, cursor)),
        );
        let mut removed = true;
        for key in &blobs {
            if let Err(e) = jobs.blobs.delete(key).await {
                warn!(job_id = %job.id, key, error = %e, "could not remove an expired blob");
                removed = false;
            }
        }
        if removed {
            jobs.record(job.id, Change::Expired).await?;
        } else {
            jobs.store.release(job.id).await?;
        }
    }
    Ok(())
}

async fn republish(jobs: &Jobs, job: &Job, why: &str) -> Result<(), StoreError> {
    match jobs.blobs.exists(&job.input_key).await {
        Ok(true) => {}
        Ok(false) => return fail_lost(jobs, job, "its upload is no longer stored").await,
        Err(e) => {
            warn!(job_id = %job.id, error = %e, "blob store unavailable; trying the job again next pass");
            return jobs.store.release(job.id).await;
        }
    }
    match jobs.publisher.publish(&request_of(job)).await {
        Ok(()) => {
            Event::Republished {
                job_id: job.id,
                why,
            }
            .emit();
            jobs.store.mark_republished(job.id).await
        }
        // The broker is away: try again on the next pass.
        Err(e) => {
            warn!(job_id = %job.id, error = %e, "could not publish the job again yet");
            jobs.store.release(job.id).await
        }
    }
}

async fn fail_lost(jobs: &Jobs, job: &Job, why: &str) -> Result<(), StoreError> {
    Event::Lost {
        job_id: job.id,
        why,
    }
    .emit();
    let message = format!("the job cannot run: {why}; submit it again");
    jobs.record(
        job.id,
        Change::Failed {
            worker: None,
            attempt: job.attempts,
            code: ErrorCode::Lost.as_str().into(),
            message,
            started_at: None,
            hops: Vec::new(),
        },
    )
    .await?;
    Ok(())
}

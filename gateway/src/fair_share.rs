//! Fair share: tenants' jobs reach the workers in turn, not first come, first served.
//!
//! RabbitMQ 3.10's quorum queues have no priorities, and a queue per tenant does not
//! scale (each quorum queue is a Raft group). So the jobs queue stays one FIFO, and what
//! enters it is metered instead: each tenant has a **window** of jobs released to the
//! broker and not yet finished (`PIXMILL_FAIR_SHARE_WINDOW`). A job past its tenant's
//! window is stored *held* — accepted, durable, answered 202 — and released when one of
//! the tenant's jobs ends. A tenant with thousands of jobs therefore has at most a window
//! of them in the queue, and another tenant's job waits behind at most one window per
//! busy tenant, whatever the backlog.
//!
//! Admission and release take a per-tenant lock in the store (an advisory lock on
//! PostgreSQL), so windows hold across any number of gateways. Every gateway releases:
//! at once for the tenant whose job it saw end, and every [`PASS_EVERY`] for every
//! tenant with held jobs, which covers jobs that ended on another gateway or a gateway
//! that died. A released job is published like any other; if the publish fails, the
//! sweeper publishes it again, so nothing held is lost.
//!
//! Interactive jobs (`priority=interactive`, sent by the upload page) are released
//! before their tenant's held bulk jobs and have [`crate::store::INTERACTIVE_EXTRA`]
//! slots beyond the window.

use std::{
    collections::{BTreeSet, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use pixmill_shared::JobRequest;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::{
    publisher::Publisher,
    store::{Job, Store, StoreError},
};

/// `PIXMILL_FAIR_SHARE_WINDOW`'s default: enough to keep a few workers busy for one
/// tenant alone, few enough that a newcomer waits behind little.
pub const DEFAULT_WINDOW: u32 = 16;

/// How often every tenant with held jobs is looked at.
pub const PASS_EVERY: Duration = Duration::from_secs(1);

/// Fair share, as the jobs service uses it. Cheap to clone.
#[derive(Debug, Clone)]
pub struct FairShare {
    /// None: off, every job is released at once (first come, first served).
    window: Option<u32>,
    /// Tenants whose job ended here since the releaser last looked.
    ended: Arc<Mutex<BTreeSet<String>>>,
    wake: Arc<Notify>,
}

impl FairShare {
    /// Fair share with `window` jobs per tenant, or off (None).
    pub fn new(window: Option<u32>) -> Self {
        Self {
            window,
            ended: Arc::default(),
            wake: Arc::default(),
        }
    }

    /// The window, None when fair share is off.
    pub fn window(&self) -> Option<u32> {
        self.window
    }

    /// One of `tenant`'s jobs ended: its next held job may go.
    pub fn ended(&self, tenant: &str) {
        if self.window.is_some() {
            self.ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(tenant.to_string());
            self.wake.notify_one();
        }
    }

    fn take_ended(&self) -> BTreeSet<String> {
        std::mem::take(
            &mut *self
                .ended
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner),
        )
    }
}

/// Releases held jobs until `stop`: for tenants whose job ended, at once; for every
/// tenant with held jobs, every [`PASS_EVERY`]. Returns at once when fair share is off.
pub async fn run(
    fair: FairShare,
    store: Store,
    publisher: Arc<Publisher>,
    stop: CancellationToken,
) {
    let Some(window) = fair.window else {
        stop.cancelled().await;
        return;
    };
    let mut pass = tokio::time::interval(PASS_EVERY);
    pass.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let tenants: Vec<String> = tokio::select! {
            () = stop.cancelled() => return,
            () = fair.wake.notified() => fair.take_ended().into_iter().collect(),
            _ = pass.tick() => match store.held_tenants().await {
                Ok(tenants) => tenants,
                Err(e) => {
                    warn!(error = %e, "could not list tenants with held jobs");
                    continue;
                }
            },
        };
        if let Err(e) = release(&store, &publisher, &tenants, window).await {
            warn!(error = %e, "could not release held jobs; trying again shortly");
        }
    }
}

/// Releases what the window allows for each of `tenants`, and publishes it, one job of
/// each tenant in turn.
pub async fn release(
    store: &Store,
    publisher: &Publisher,
    tenants: &[String],
    window: u32,
) -> Result<usize, StoreError> {
    let mut queues: Vec<VecDeque<Job>> = Vec::with_capacity(tenants.len());
    for tenant in tenants {
        let jobs = store.release_held(tenant, window).await?;
        if !jobs.is_empty() {
            queues.push(jobs.into());
        }
    }
    let mut published = Vec::new();
    while !queues.is_empty() {
        for queue in &mut queues {
            if let Some(job) = queue.pop_front() {
                match publisher.publish(&request_of(&job)).await {
                    Ok(()) => published.push(job.id),
                    // Released but unconfirmed: the sweeper publishes it again.
                    Err(e) => warn!(job_id = %job.id, error = %e,
                        "could not publish a released job; the sweeper will"),
                }
            }
        }
        queues.retain(|q| !q.is_empty());
    }
    if !published.is_empty() {
        debug!(jobs = published.len(), "released held jobs");
        store.mark_published(&published).await?;
    }
    Ok(published.len())
}

/// The message for a stored job.
pub fn request_of(job: &Job) -> JobRequest {
    JobRequest {
        id: job.id,
        input: job.input_key.clone(),
        steps: job.steps.clone(),
        format: job.format,
        quality: job.quality,
        cursor: 0,
        hops: Vec::new(),
        variants: job.variants.clone(),
    }
}

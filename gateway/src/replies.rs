//! Applying worker replies, and dead-lettered jobs, to the task store.
//!
//! Replies sit on a durable queue, so those sent while the gateway was down are waiting
//! when it comes back. Each one is applied, then acked; the store only moves a job
//! forward, so a redelivered or duplicate reply is harmless.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{
    message::Delivery,
    options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions},
    types::FieldTable,
};
use pixmill_shared::{ErrorCode, JobRequest, Outcome, Reply, Topology, amqp};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, info_span, warn};
use uuid::Uuid;

use crate::store::{StoreError, TaskStore};

/// Tells long-polling requests that a job changed. Carries only the id; listeners re-read
/// the store, so a missed (lagged) message costs nothing but a re-read.
#[derive(Debug, Clone)]
pub struct JobEvents(broadcast::Sender<Uuid>);

impl Default for JobEvents {
    fn default() -> Self {
        Self(broadcast::channel(1024).0)
    }
}

impl JobEvents {
    /// Starts listening; subscribe *before* reading the state to wait on.
    pub fn subscribe(&self) -> broadcast::Receiver<Uuid> {
        self.0.subscribe()
    }

    pub(crate) fn notify(&self, id: Uuid) {
        let _ = self.0.send(id);
    }
}

/// Consumes the replies and dead-letter queues until `shutdown`, reconnecting as needed.
pub async fn run(
    url: String,
    topology: Topology,
    store: TaskStore,
    events: JobEvents,
    shutdown: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        match session(&url, &topology, &store, &events, &shutdown).await {
            Ok(()) => return,
            Err(e) => {
                warn!(error = %e, retry_in = ?backoff, "reply consumer lost the broker; reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn session(
    url: &str,
    topology: &Topology,
    store: &TaskStore,
    events: &JobEvents,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let conn = amqp::connect(url, "pixmill-gateway-replies").await?;
    let channel = conn.create_channel().await?;
    topology.declare(&channel).await?;
    channel.basic_qos(256, BasicQosOptions::default()).await?;
    let consume = |queue: &str| {
        channel.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
    };
    let mut replies = consume(&topology.replies).await?;
    let mut dead = consume(&topology.dead_queue).await?;
    info!(replies = %topology.replies, dead = %topology.dead_queue, "applying replies");
    let result = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            next = replies.next() => match next {
                Some(Ok(delivery)) => {
                    let outcome = apply_reply(store, events, &delivery.data).await;
                    settle(delivery, outcome).await;
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Err(anyhow::anyhow!("the replies consumer was cancelled")),
            },
            next = dead.next() => match next {
                Some(Ok(delivery)) => {
                    let outcome = apply_dead(store, events, &delivery).await;
                    settle(delivery, outcome).await;
                }
                Some(Err(e)) => break Err(e.into()),
                None => break Err(anyhow::anyhow!("the dead-letter consumer was cancelled")),
            },
        }
    };
    let _ = conn.close(200, "gateway shutting down".into()).await;
    result
}

/// Acks an applied message; a store failure hands it back to be applied later.
async fn settle(delivery: Delivery, outcome: Result<(), StoreError>) {
    match outcome {
        Ok(()) => {
            let _ = delivery.ack(BasicAckOptions::default()).await;
        }
        Err(e) => {
            warn!(error = %e, "could not apply a reply; it stays queued");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = delivery
                .nack(BasicNackOptions {
                    requeue: true,
                    ..BasicNackOptions::default()
                })
                .await;
        }
    }
}

/// Applies one reply. An unreadable reply is logged and dropped: retrying cannot help.
pub async fn apply_reply(
    store: &TaskStore,
    events: &JobEvents,
    body: &[u8],
) -> Result<(), StoreError> {
    let reply: Reply = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "dropping an unreadable reply");
            return Ok(());
        }
    };
    let span = info_span!("reply", job_id = %reply.job_id, worker = %reply.worker, attempt = reply.attempt);
    let _guard = span.enter();
    let id = reply.job_id;
    let changed = match reply.outcome {
        Outcome::Started => store.mark_running(id, reply.worker, reply.attempt).await?,
        Outcome::Succeeded(result) => {
            store
                .mark_succeeded(id, reply.worker, reply.attempt, result)
                .await?
        }
        Outcome::Failed { code, message } => {
            store
                .mark_failed(
                    id,
                    Some(reply.worker),
                    reply.attempt,
                    code.as_str().into(),
                    message,
                )
                .await?
        }
    };
    if changed {
        events.notify(id);
    } else {
        debug!("reply changed nothing (late or duplicate)");
    }
    Ok(())
}

/// A job exhausted its delivery limit: every worker that took it died before replying.
async fn apply_dead(
    store: &TaskStore,
    events: &JobEvents,
    delivery: &Delivery,
) -> Result<(), StoreError> {
    let id = serde_json::from_slice::<JobRequest>(&delivery.data)
        .map(|job| job.id)
        .ok()
        .or_else(|| {
            delivery
                .properties
                .correlation_id()
                .as_ref()
                .and_then(|c| Uuid::parse_str(c.as_str()).ok())
        });
    let Some(id) = id else {
        warn!("dropping a dead-lettered message with no job id");
        return Ok(());
    };
    warn!(job_id = %id, "job dead-lettered after repeated worker crashes");
    let message = "every worker that took this job stopped before finishing it, up to the queue's \
                   delivery limit; it was set aside so the rest of the queue keeps moving";
    if store
        .mark_failed(
            id,
            None,
            0,
            ErrorCode::WorkerCrashed.as_str().into(),
            message.into(),
        )
        .await?
    {
        events.notify(id);
    }
    Ok(())
}

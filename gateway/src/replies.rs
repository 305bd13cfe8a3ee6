//! Applying worker replies, and dead-lettered jobs, to the task store.
//!
//! Replies sit on a durable queue, so those sent while no gateway was up are waiting
//! when one comes back. Every gateway consumes the same queue (competing consumers):
//! the store only moves a job forward, so which gateway applies a reply, or whether a
//! redelivered one is applied twice, does not matter. Each is applied, then acked.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::{message::Delivery, options::BasicConsumeOptions, types::FieldTable};
use pixmill_shared::{
    ErrorCode, JobRequest, Outcome, Reply, Topology,
    amqp::{self, Settle, SettleError},
    metrics::Event,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    jobs::Jobs,
    store::{Change, StoreError},
};

/// Pause before a reply the store could not take goes back to the queue, so a store
/// outage is not a hot loop of redeliveries.
const STORE_RETRY_PAUSE: Duration = Duration::from_millis(500);

/// Consumes the replies and dead-letter queues until `shutdown`, reconnecting as needed.
pub async fn run(url: String, topology: Topology, jobs: Jobs, shutdown: CancellationToken) {
    amqp::reconnect_loop("reply consumer", &shutdown, Duration::from_secs(5), || {
        session(&url, &topology, &jobs, &shutdown)
    })
    .await;
}

async fn session(
    url: &str,
    topology: &Topology,
    jobs: &Jobs,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let conn = amqp::connect(url, "pixmill-gateway-replies").await?;
    let result = consume(&conn, topology, jobs, shutdown).await;
    amqp::close(&conn, "gateway shutting down").await;
    result
}

async fn consume(
    conn: &lapin::Connection,
    topology: &Topology,
    jobs: &Jobs,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = amqp::consuming_channel(conn, topology, 256).await?;
    let consume = |queue: &str| {
        channel.basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
    };
    let mut replies = amqp::bounded("consume the replies", consume(&topology.replies)).await?;
    let mut dead = amqp::bounded("consume the dead letters", consume(&topology.dead_queue)).await?;
    info!(replies = %topology.replies, dead = %topology.dead_queue, "applying replies");
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = amqp::lost(conn) => anyhow::bail!("the broker connection closed"),
            next = replies.next() => match next {
                Some(Ok(delivery)) => {
                    let outcome = apply_reply(jobs, &delivery.data).await;
                    settle(delivery, outcome).await?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("the replies consumer was cancelled"),
            },
            next = dead.next() => match next {
                Some(Ok(delivery)) => {
                    let outcome = apply_dead(jobs, &delivery).await;
                    settle(delivery, outcome).await?;
                }
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("the dead-letter consumer was cancelled"),
            },
        }
    }
}

/// Acks an applied message; a store failure hands it back to be applied later. An ack
/// the broker does not take within [`amqp::RPC_TIMEOUT`] ends the session: the message
/// comes back on the next one, and applying it again changes nothing.
async fn settle(delivery: Delivery, outcome: Result<(), StoreError>) -> anyhow::Result<()> {
    let how = match outcome {
        Ok(()) => Settle::Ack,
        Err(e) => {
            warn!(error = %e, "could not apply a reply; it stays queued");
            tokio::time::sleep(STORE_RETRY_PAUSE).await;
            Settle::Requeue
        }
    };
    match amqp::settle(&delivery, how, amqp::RPC_TIMEOUT).await {
        Ok(()) | Err(SettleError::Failed { .. }) => Ok(()),
        Err(e @ SettleError::Timeout { .. }) => Err(e.into()),
    }
}

/// What a reply asks the store to do.
pub fn change_for(reply: Reply) -> Change {
    let started_at = reply
        .started_ago_ms
        .map(|ago| pixmill_shared::now_ms() - i64::try_from(ago).unwrap_or(0));
    match reply.outcome {
        Outcome::Started => Change::Running {
            worker: reply.worker,
            attempt: reply.attempt,
        },
        Outcome::Succeeded(result) => Change::Succeeded {
            worker: reply.worker,
            attempt: reply.attempt,
            result,
            started_at,
        },
        Outcome::Failed { code, message } => Change::Failed {
            worker: Some(reply.worker),
            attempt: reply.attempt,
            code: code.as_str().into(),
            message,
            started_at,
        },
    }
}

/// Applies one reply. An unreadable reply is logged and dropped: retrying cannot help.
pub async fn apply_reply(jobs: &Jobs, body: &[u8]) -> Result<(), StoreError> {
    let reply: Reply = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => {
            warn!(error = %e, "dropping an unreadable reply");
            return Ok(());
        }
    };
    // The span is attached to the future, never entered across an await: a guard held
    // over an await leaks the span into whatever else the thread polls meanwhile.
    let span = info_span!("reply", job_id = %reply.job_id, worker = %reply.worker, attempt = reply.attempt);
    let id = reply.job_id;
    async move {
        if jobs.record(id, change_for(reply)).await?.is_none() {
            debug!("reply changed nothing (late or duplicate)");
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// A job exhausted its delivery limit: every worker that took it died before replying.
async fn apply_dead(jobs: &Jobs, delivery: &Delivery) -> Result<(), StoreError> {
    let id = serde_json::from_slice::<JobRequest>(&delivery.data)
        .map(|job| job.id)
        .ok()
        .or_else(|| amqp::job_id(delivery));
    let Some(id) = id else {
        warn!("dropping a dead-lettered message with no job id");
        return Ok(());
    };
    Event::DeadLettered { job_id: id }.emit();
    let message = "every worker that took this job stopped before finishing it, up to the queue's \
                   delivery limit; it was set aside so the rest of the queue keeps moving";
    jobs.record(
        id,
        Change::Failed {
            worker: None,
            attempt: 0,
            code: ErrorCode::WorkerCrashed.as_str().into(),
            message: message.into(),
            started_at: None,
        },
    )
    .await?;
    Ok(())
}

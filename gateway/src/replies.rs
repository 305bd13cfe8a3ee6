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
    ErrorCode, JobRequest, JobResult, Outcome, OutputFormat, Reply, Topology, Variant,
    amqp::{self, Settle, SettleError},
    keys,
    metrics::Event,
};
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, debug, info, info_span, warn};

use crate::{
    jobs::Jobs,
    store::{Change, Job, StoreError},
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
pub fn change_for(mut reply: Reply) -> Change {
    // One hop says nothing the record does not say already (its worker, its time).
    if reply.hops.len() < 2 {
        reply.hops.clear();
    }
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
            hops: reply.hops,
        },
        Outcome::Failed { code, message } => Change::Failed {
            worker: Some(reply.worker),
            attempt: reply.attempt,
            code: code.as_str().into(),
            message,
            started_at,
            hops: reply.hops,
        },
    }
}

/// The content types pixmill writes results in.
const RESULT_TYPES: [&str; 3] = ["image/jpeg", "image/png", "image/webp"];

/// Checks a success reply's result against the job it claims to finish: the key must be
/// the one that job's result is stored under (`keys::result` of its id and format), and
/// the content type one pixmill writes, the job's format's. A reply that fails this could
/// make `GET …/result` serve another job's blob, or the upload, under any type.
/// A job with variants must get every output it asked for, in order, each under its own
/// key ([`keys::variant`]) and type; the result itself is the first of them.
pub fn check_result(
    id: uuid::Uuid,
    format: OutputFormat,
    variants: &[Variant],
    result: &JobResult,
) -> Result<(), String> {
    if !variants.is_empty() || !result.outputs.is_empty() {
        return check_outputs(id, variants, result);
    }
    let key = keys::result(id, format);
    if result.key != key {
        return Err(format!(
            "the worker's reply names the result key {:?}, but this job's result is stored under {key:?}; the reply was refused",
            result.key
        ));
    }
    if !RESULT_TYPES.contains(&result.content_type.as_str()) {
        return Err(format!(
            "the worker's reply gives the content type {:?}, which is not one pixmill writes ({}); the reply was refused",
            result.content_type,
            RESULT_TYPES.join(", ")
        ));
    }
    if result.content_type != format.content_type() {
        return Err(format!(
            "the worker's reply gives the content type {:?}, but this job asked for {}; the reply was refused",
            result.content_type,
            format.content_type()
        ));
    }
    Ok(())
}

/// [`check_result`] for a job with variants.
fn check_outputs(id: uuid::Uuid, variants: &[Variant], result: &JobResult) -> Result<(), String> {
    if variants.is_empty() {
        return Err(format!(
            "the worker's reply lists {} outputs, but this job asked for no variants; the reply was refused",
            result.outputs.len()
        ));
    }
    if result.outputs.is_empty() {
        return Err(format!(
            "the worker's reply has no outputs, but this job asked for {} variants: the worker \
             speaks a contract older than 1.2, which added variants; upgrade the workers",
            variants.len()
        ));
    }
    let names = |names: Vec<&str>| names.join(", ");
    if result.outputs.len() != variants.len()
        || result
            .outputs
            .iter()
            .zip(variants)
            .any(|(o, v)| o.name != v.name)
    {
        return Err(format!(
            "the worker's reply lists the outputs [{}], but this job asked for [{}]; the reply was refused",
            names(result.outputs.iter().map(|o| o.name.as_str()).collect()),
            names(variants.iter().map(|v| v.name.as_str()).collect()),
        ));
    }
    for (output, variant) in result.outputs.iter().zip(variants) {
        let key = keys::variant(id, &variant.name, variant.format);
        if output.key != key {
            return Err(format!(
                "the worker's reply names the key {:?} for output {:?}, but it is stored under {key:?}; the reply was refused",
                output.key, output.name
            ));
        }
        if output.content_type != variant.format.content_type() {
            return Err(format!(
                "the worker's reply gives the content type {:?} for output {:?}, but it asked for {}; the reply was refused",
                output.content_type,
                output.name,
                variant.format.content_type()
            ));
        }
    }
    let first = &result.outputs[0];
    if result.key != first.key || result.content_type != first.content_type {
        return Err(format!(
            "the worker's reply names the result {:?} ({}), which is not its first output {:?}; the reply was refused",
            result.key, result.content_type, first.key
        ));
    }
    Ok(())
}

/// The `invalid_reply` failure for a reply body that does not parse, when it is a JSON
/// object naming its job in `job_id`.
fn unreadable_reply(body: &[u8], error: &serde_json::Error) -> Option<Reply> {
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let job_id = value.get("job_id")?.as_str()?.parse().ok()?;
    let worker = value
        .get("worker")
        .and_then(|w| w.as_str())
        .unwrap_or("unknown")
        .chars()
        .take(200)
        .collect();
    let attempt = value
        .get("attempt")
        .and_then(|a| a.as_u64())
        .and_then(|a| u32::try_from(a).ok())
        .unwrap_or(1);
    Some(Reply {
        job_id,
        worker,
        attempt,
        started_ago_ms: None,
        hops: Vec::new(),
        outcome: Outcome::Failed {
            code: ErrorCode::InvalidReply,
            message: format!(
                "the worker's reply could not be read ({error}); see docs/contract/schemas/reply.json"
            ),
        },
    })
}

/// Turns a success whose result fails [`check_result`] against `job`, the job as stored,
/// into a failure with `invalid_reply`. Other changes are left as they are. The store
/// runs it as it records the reply ([`crate::store::TaskStore::apply_checked`]).
fn refuse_forged(job: &Job, change: Change) -> Change {
    let Change::Succeeded {
        worker,
        attempt,
        result,
        started_at,
        hops,
    } = change
    else {
        return change;
    };
    match check_result(job.id, job.format, &job.variants, &result) {
        Ok(()) => Change::Succeeded {
            worker,
            attempt,
            result,
            started_at,
            hops,
        },
        Err(message) => {
            warn!(job_id = %job.id, %worker, %message, "refusing a reply");
            Change::Failed {
                worker: Some(worker),
                attempt,
                code: ErrorCode::InvalidReply.as_str().into(),
                message,
                started_at,
                hops,
            }
        }
    }
}

/// Applies one reply. A reply that cannot be read but names its job fails that job with
/// `invalid_reply` and the reason, so a worker that speaks the contract wrongly (an
/// unknown error code, a missing field) is told in the job's record instead of leaving
/// it running; one that names no job is logged and dropped: retrying cannot help.
pub async fn apply_reply(jobs: &Jobs, body: &[u8]) -> Result<(), StoreError> {
    let reply: Reply = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => match unreadable_reply(body, &e) {
            Some(refused) => {
                warn!(job_id = %refused.job_id, error = %e, "refusing an unreadable reply");
                refused
            }
            None => {
                warn!(error = %e, "dropping an unreadable reply that names no job");
                return Ok(());
            }
        },
    };
    // The span is attached to the future, never entered across an await: a guard held
    // over an await leaks the span into whatever else the thread polls meanwhile.
    let span = info_span!("reply", job_id = %reply.job_id, worker = %reply.worker, attempt = reply.attempt);
    let id = reply.job_id;
    let set_aside = matches!(
        &reply.outcome,
        Outcome::Failed {
            code: ErrorCode::WorkerCrashed,
            ..
        }
    );
    async move {
        let checked = jobs
            .record_checked(id, change_for(reply), Some(Box::new(refuse_forged)))
            .await?;
        match checked {
            None => debug!("reply changed nothing (late or duplicate)"),
            // A worker set the job aside: counted with the broker's dead letters.
            Some(_) if set_aside => Event::DeadLettered { job_id: id }.emit(),
            Some(_) => {}
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// A job exhausted the jobs queue's delivery limit: the broker handed it out that many
/// times and no worker ever answered it. Workers set a job that kills them aside long
/// before (`PIXMILL_CRASH_LIMIT`); this is the backstop for workers that keep no run
/// marks, or a blob store they could not leave them in.
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
    let message = "the broker handed this job out up to the jobs queue's delivery limit and no \
                   worker ever answered it; it was set aside so the rest of the queue keeps moving";
    jobs.record(
        id,
        Change::Failed {
            worker: None,
            attempt: 0,
            code: ErrorCode::WorkerCrashed.as_str().into(),
            message: message.into(),
            started_at: None,
            hops: Vec::new(),
        },
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(key: String, content_type: &str) -> JobResult {
        JobResult {
            key,
            content_type: content_type.into(),
            width: 1,
            height: 1,
            bytes: 1,
            processing_ms: 1,
            outputs: Vec::new(),
        }
    }

    #[test]
    fn a_job_with_variants_needs_every_output_under_its_own_key() {
        use pixmill_shared::{Variant, VariantOutput};
        let id = uuid::Uuid::new_v4();
        let variant = |name: &str, format| Variant {
            name: name.into(),
            steps: Vec::new(),
            format,
            quality: 80,
        };
        let variants = [
            variant("small", OutputFormat::Jpeg),
            variant("web", OutputFormat::Webp),
        ];
        let output = |name: &str, format: OutputFormat| VariantOutput {
            name: name.into(),
            key: keys::variant(id, name, format),
            content_type: format.content_type().into(),
            width: 1,
            height: 1,
            bytes: 1,
        };
        let good = JobResult {
            outputs: vec![
                output("small", OutputFormat::Jpeg),
                output("web", OutputFormat::Webp),
            ],
            ..result(keys::variant(id, "small", OutputFormat::Jpeg), "image/jpeg")
        };
        assert_eq!(
            check_result(id, OutputFormat::Jpeg, &variants, &good),
            Ok(())
        );
        let refusals = [
            (
                JobResult {
                    outputs: Vec::new(),
                    ..good.clone()
                },
                "older than 1.2",
            ),
            (
                JobResult {
                    outputs: vec![output("small", OutputFormat::Jpeg)],
                    ..good.clone()
                },
                "asked for [small, web]",
            ),
            (
                JobResult {
                    outputs: vec![
                        output("small", OutputFormat::Jpeg),
                        VariantOutput {
                            key: keys::input(id),
                            ..output("web", OutputFormat::Webp)
                        },
                    ],
                    ..good.clone()
                },
                "for output \"web\"",
            ),
            (
                JobResult {
                    outputs: vec![
                        output("small", OutputFormat::Jpeg),
                        VariantOutput {
                            content_type: "image/png".into(),
                            ..output("web", OutputFormat::Webp)
                        },
                    ],
                    ..good.clone()
                },
                "asked for image/webp",
            ),
            (
                JobResult {
                    key: keys::variant(id, "web", OutputFormat::Webp),
                    ..good.clone()
                },
                "not its first output",
            ),
        ];
        for (reply, expected) in refusals {
            let refused =
                check_result(id, OutputFormat::Jpeg, &variants, &reply).expect_err(expected);
            assert!(refused.contains(expected), "{refused}");
        }
        // Outputs on a job that asked for none are refused too.
        let own = keys::result(id, OutputFormat::Jpeg);
        let stray = JobResult {
            outputs: good.outputs.clone(),
            ..result(own, "image/jpeg")
        };
        let refused = check_result(id, OutputFormat::Jpeg, &[], &stray).expect_err("stray");
        assert!(refused.contains("asked for no variants"), "{refused}");
    }

    #[test]
    fn only_the_jobs_own_result_key_and_type_pass() {
        let id = uuid::Uuid::new_v4();
        let other = uuid::Uuid::new_v4();
        let own = keys::result(id, OutputFormat::Png);
        assert_eq!(
            check_result(
                id,
                OutputFormat::Png,
                &[],
                &result(own.clone(), "image/png")
            ),
            Ok(())
        );
        for (key, content_type, says) in [
            (keys::input(id), "image/png", "result key"),
            (
                keys::result(other, OutputFormat::Png),
                "image/png",
                "result key",
            ),
            (
                keys::result(id, OutputFormat::Jpeg),
                "image/jpeg",
                "result key",
            ),
            ("../../etc/passwd".to_string(), "image/png", "result key"),
            (own.clone(), "text/html", "not one pixmill writes"),
            (own.clone(), "image/svg+xml", "not one pixmill writes"),
            (own.clone(), "image/webp", "this job asked for image/png"),
        ] {
            let refused = check_result(
                id,
                OutputFormat::Png,
                &[],
                &result(key.clone(), content_type),
            )
            .expect_err(&format!("{key} {content_type}"));
            assert!(refused.contains(says), "{refused}");
        }
    }
}

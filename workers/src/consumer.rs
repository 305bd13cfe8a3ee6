//! The consume loop: competing consumers on the jobs queue, one reply per job.
//!
//! A delivery is acked only after its terminal reply was confirmed by the broker, so a
//! worker that dies at any point leaves the job unacked and the broker hands it to
//! another worker. The broker session is rebuilt after any connection failure.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use futures_util::StreamExt;
use lapin::{
    BasicProperties, Channel,
    message::Delivery,
    options::{BasicCancelOptions, BasicConsumeOptions},
    types::{AMQPValue, FieldTable},
};
use metrics::gauge;
use pixmill_shared::{
    BlobError, Blobs, ErrorCode, Hop, JobRequest, JobResult, Outcome, OutputFormat, Reply, Step,
    VariantOutput,
    amqp::{self, PublishError, Settle, SettleError, header_u32},
    contract::{self, CONTRACT_HEADER, RETRIES_HEADER},
    keys,
    metrics::{Event, builtin_op_label, names, op_label},
};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, info_span, warn};
use uuid::Uuid;

use crate::{
    JobError, Settings,
    decision::{Attempt, Decision, Facts, RetryPolicy, Settlement, decide},
    marks::Marks,
    pipeline,
    slots::{SlotError, Slots},
};

/// How long a reply publish may wait for the broker's confirm.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(10);

/// What a worker shares between its in-flight jobs.
struct Context {
    settings: Settings,
    /// Where inputs are read and results written (a folder or S3).
    blobs: Blobs,
    /// The threads that run jobs' CPU work; they outlive broker sessions.
    slots: Slots,
    /// The run marks of redelivered jobs in hand; they outlive broker sessions too.
    marks: Arc<Marks>,
    /// Confirm-mode channel on the publishing connection (kept apart from the consuming
    /// one, so a broker that blocks publishers cannot stall deliveries and acks).
    replies: Channel,
    /// Cancelled when a reply could not be published: the publishing connection is
    /// likely gone (its broker node died), so the session ends and both connections are
    /// opened again, instead of taking deliveries it cannot answer and burning their
    /// delivery limit in a loop of nacks.
    replies_broken: CancellationToken,
    /// Cancelled when an ack or nack got no answer within [`amqp::RPC_TIMEOUT`]: the
    /// consuming channel is stuck, so the session ends and its unsettled deliveries go
    /// back to the queue.
    settle_stuck: CancellationToken,
}

/// Runs a worker until `shutdown` is cancelled, reconnecting whenever the broker goes away.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let blobs = Blobs::open(&settings.common.blob_url)
        .map_err(|e| anyhow::anyhow!("blob store {}: {e}", settings.common.blob_url))?;
    // The recorder first: everything below may already set a gauge.
    pixmill_shared::metrics::install();
    pixmill_shared::metrics::register_worker(&settings.name);
    let slots = Slots::new(
        usize::from(settings.concurrency),
        &settings.name,
        settings.slot_buffers,
    )?;
    let marks = Arc::new(Marks::new(blobs.clone()));
    crate::metrics_http::serve(settings.metrics_addr, shutdown.clone())
        .await
        .map_err(|e| anyhow::anyhow!("PIXMILL_METRICS_ADDR={}: {e}", settings.metrics_addr))?;
    info!(worker = %settings.name, concurrency = settings.concurrency, blobs = %blobs.describe(), "worker starting");
    amqp::reconnect_loop("worker", &shutdown, MAX_BACKOFF, || {
        session(&settings, &blobs, &slots, &marks, &shutdown)
    })
    .await;
    info!(worker = %settings.name, "worker stopped");
    Ok(())
}

/// One connected session. Returns `Ok` only on shutdown.
async fn session(
    settings: &Settings,
    blobs: &Blobs,
    slots: &Slots,
    marks: &Arc<Marks>,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let url = &settings.common.amqp_url;
    let topology = &settings.common.topology;
    let consume_conn = amqp::connect(url, &format!("{}-consume", settings.name)).await?;
    let publish_conn = amqp::connect(url, &format!("{}-publish", settings.name)).await?;
    // One message per slot. Holding one more would overlap the next job's input read
    // with the work, but a worker that dies hands back every message it holds, and
    // each return counts a delivery: a job waiting behind a poison job would be
    // dead-lettered with it.
    let channel = amqp::consuming_channel(&consume_conn, topology, settings.concurrency).await?;
    let ctx = Arc::new(Context {
        settings: settings.clone(),
        blobs: blobs.clone(),
        slots: slots.clone(),
        marks: marks.clone(),
        replies: amqp::confirm_channel(&publish_conn).await?,
        replies_broken: CancellationToken::new(),
        settle_stuck: CancellationToken::new(),
    });
    let tag = format!("{}-{}", settings.name, Uuid::new_v4().simple());
    let mut consumer = amqp::bounded(
        "consume the jobs",
        channel.basic_consume(
            topology.jobs.as_str().into(),
            tag.as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        ),
    )
    .await?;
    info!(queue = %topology.jobs, "consuming");

    let mut jobs = JoinSet::new();
    let outcome = loop {
        tokio::select! {
            () = shutdown.cancelled() => break Ok(()),
            () = ctx.replies_broken.cancelled() => {
                break Err(anyhow::anyhow!("replies could not be published; reconnecting"))
            }
            () = ctx.settle_stuck.cancelled() => {
                break Err(anyhow::anyhow!("an ack or nack got no answer; reconnecting"))
            }
            () = amqp::lost(&consume_conn) => {
                break Err(anyhow::anyhow!("the broker connection closed"))
            }
            Some(_) = jobs.join_next(), if !jobs.is_empty() => {}
            next = consumer.next() => match next {
                Some(Ok(delivery)) => {
                    let ctx = ctx.clone();
                    let in_flight = gauge!(names::WORKER_IN_FLIGHT, "worker" => settings.name.clone());
                    in_flight.increment(1);
                    jobs.spawn(async move {
                        handle(&ctx, delivery).await;
                        in_flight.decrement(1);
                    });
                }
                Some(Err(e)) => break Err(anyhow::Error::from(e).context("consumer failed")),
                None => break Err(anyhow::anyhow!("the broker cancelled the consumer")),
            }
        }
    };

    if outcome.is_ok() {
        wind_down(&channel, &tag, jobs, settings.shutdown_grace).await;
        amqp::close(&consume_conn, "worker shutting down").await;
        amqp::close(&publish_conn, "worker shutting down").await;
    } else {
        // The jobs in hand cannot be settled on this channel any more; the broker hands
        // them out again.
        jobs.shutdown().await;
    }
    // Whatever was cut off was cut off by a worker that is alive: not a death.
    marks.remove_held().await;
    outcome
}

/// Stops taking work, then finishes the jobs in hand within `grace`. Jobs cut off are
/// never acked, so the broker redelivers them to another worker.
async fn wind_down(channel: &Channel, tag: &str, mut jobs: JoinSet<()>, grace: Duration) {
    let _ = channel
        .basic_cancel(tag.into(), BasicCancelOptions::default())
        .await;
    let in_hand = jobs.len();
    if in_hand > 0 {
        info!(in_hand, grace = ?grace, "finishing jobs in hand");
    }
    let drained =
        tokio::time::timeout(grace, async { while jobs.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        warn!(
            cut_off = jobs.len(),
            "grace period over; unfinished jobs go back to the queue"
        );
        jobs.abort_all();
    }
}

/// A reply that failed on the connection (not a refusal of this one message) ends the
/// session; see [`Context::replies_broken`].
fn reply_failed(ctx: &Context, e: &PublishError) {
    if matches!(e, PublishError::Amqp(_) | PublishError::Timeout(_))
        || !ctx.replies.status().connected()
    {
        ctx.replies_broken.cancel();
    }
}

/// Runs one delivery to its ack (or hands it back). Never panics the consume loop.
async fn handle(ctx: &Context, delivery: Delivery) {
    let attempt = Attempt {
        retries: header_u32(&delivery, RETRIES_HEADER),
        redeliveries: header_u32(&delivery, "x-delivery-count"),
    };
    if attempt.is_redelivery() {
        Event::Redelivery {
            worker: &ctx.settings.name,
            attempt: attempt.number(),
        }
        .emit();
    }
    let reply_to = delivery.properties.reply_to().as_ref().map_or_else(
        || ctx.settings.common.topology.replies.clone(),
        |r| r.to_string(),
    );
    let to = Answer {
        delivery: &delivery,
        reply_to: &reply_to,
        attempt,
    };
    // A message of a newer major version may not even parse; its reason is the version.
    if let Err(unsupported) = contract::check(amqp::header_str(&delivery, CONTRACT_HEADER)) {
        let id = amqp::job_id(&delivery);
        warn!(?id, reason = %unsupported, "refusing a job of a newer contract");
        let facts = Facts::Unsupported {
            id,
            reason: unsupported.0,
        };
        carry_out(ctx, &to, decide_on(ctx, facts, attempt), None, &[]).await;
        return;
    }
    match serde_json::from_slice::<JobRequest>(&delivery.data) {
        Ok(job) => {
            let span = info_span!("job", job_id = %job.id, attempt = attempt.number());
            process(ctx, &to, &job).instrument(span).await;
        }
        Err(e) => {
            let id = amqp::job_id(&delivery);
            warn!(error = %e, ?id, "unreadable job message");
            let facts = Facts::Unreadable {
                id,
                error: e.to_string(),
            };
            carry_out(ctx, &to, decide_on(ctx, facts, attempt), None, &[]).await;
        }
    }
}

/// Where a delivery's answer goes: the delivery to settle, the queue its replies go to,
/// and which attempt at the job it is.
struct Answer<'a> {
    delivery: &'a Delivery,
    reply_to: &'a str,
    attempt: Attempt,
}

/// [`decide`] with this worker's retry policy and a fresh jitter.
fn decide_on(ctx: &Context, facts: Facts, attempt: Attempt) -> Decision {
    let policy = RetryPolicy {
        max_retries: ctx.settings.max_retries,
        base: ctx.settings.retry_base,
    };
    decide(facts, attempt, policy, jitter())
}

/// Runs a readable job, unless it was cancelled or has killed workers too often, and
/// carries out what its result decides.
async fn process(ctx: &Context, to: &Answer<'_>, job: &JobRequest) {
    if ctx.blobs.is_cancelled(job.id).await.unwrap_or(false) {
        info!("skipping a cancelled job");
        carry_out(
            ctx,
            to,
            decide_on(ctx, Facts::Cancelled, to.attempt),
            None,
            &[],
        )
        .await;
        return;
    }
    // The routing slip: this worker runs the built-in steps from the cursor on. When
    // the step at the cursor is another worker's, the job goes on to its queue as it is.
    // Its input is the job's upload, or the image the previous hop handed on: never
    // another key a message names.
    let expected_input = if job.cursor == 0 {
        keys::input(job.id)
    } else {
        keys::intermediate(job.id, job.cursor)
    };
    let refusal =
        if job.cursor > job.steps.len() || (job.cursor > 0 && job.cursor == job.steps.len()) {
            Some(format!(
                "its cursor {} is past its {} steps",
                job.cursor,
                job.steps.len()
            ))
        } else if job.input != expected_input {
            Some(format!(
                "its input {:?} is not the job's ({expected_input:?} at cursor {})",
                job.input, job.cursor
            ))
        } else {
            None
        };
    if let Some(error) = refusal {
        let facts = Facts::Unreadable {
            id: Some(job.id),
            error,
        };
        carry_out(ctx, to, decide_on(ctx, facts, to.attempt), None, &[]).await;
        return;
    }
    let end = job.run_end(|s| s.builtin().is_some());
    if end == job.cursor && job.cursor < job.steps.len() {
        // Not this worker's step: a retry copy that came back through the jobs queue, or
        // a misrouted forward. Its retry count goes with it.
        hand_on(
            ctx,
            to,
            job.clone(),
            header_u32(to.delivery, RETRIES_HEADER),
        )
        .await;
        return;
    }
    let segment = Segment {
        steps: job.steps[job.cursor..end]
            .iter()
            .filter_map(|s| s.builtin().cloned())
            .collect(),
        end,
        last: end == job.steps.len(),
    };
    // Handed out again: count the workers that died on it, and leave a mark in case this
    // one does too. Without the blob store the job cannot run anyway; its input read
    // fails and is retried, and the broker's delivery limit stays the backstop.
    let mut dead = Vec::new();
    let mut mine = None;
    if to.attempt.is_redelivery() {
        match ctx.marks.left_behind(job.id, to.attempt).await {
            Ok(left) => dead = left,
            Err(e) => warn!(error = %e, "could not count the run marks"),
        }
        let deaths = u32::try_from(dead.len()).unwrap_or(u32::MAX);
        if deaths >= ctx.settings.crash_limit {
            warn!(deaths, "workers died running this job; setting it aside");
            let facts = Facts::Crashed { id: job.id, deaths };
            let decision = decide_on(ctx, facts, to.attempt);
            record(
                &ctx.settings.name,
                op_label(&job.steps),
                &decision,
                Duration::ZERO,
            );
            if carry_out(ctx, to, decision, None, &job.hops).await == Settlement::Ack {
                ctx.marks.remove(dead).await;
            }
            return;
        }
        match ctx.marks.leave(job.id, to.attempt).await {
            Ok(key) => mine = key,
            Err(e) => warn!(error = %e, "could not leave a run mark"),
        }
    }
    #[cfg(feature = "fault-injection")]
    crate::fault::maybe_crash(job);
    let clock = std::time::Instant::now();
    let (result, start) = run_reporting_start(ctx, to, job, &segment).await;
    let mut hops = job.hops.clone();
    hops.push(Hop {
        worker: ctx.settings.name.clone(),
        from: job.cursor,
        to: segment.end,
        ms: u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX),
    });
    let op = builtin_op_label(&segment.steps);
    if !segment.last
        && let Ok(intermediate) = &result
    {
        // Steps remain for another worker: hand the job on with the image as it stands.
        let next = JobRequest {
            input: intermediate.key.clone(),
            cursor: segment.end,
            hops,
            ..job.clone()
        };
        let decision = Decision::Forward;
        record(&ctx.settings.name, op, &decision, clock.elapsed());
        let settled = hand_on(ctx, to, next, 0).await;
        if settled != Settlement::Ack {
            dead.clear();
        }
        ctx.marks.remove(mine.into_iter().chain(dead)).await;
        return;
    }
    let decision = decide_on(ctx, Facts::Ran { id: job.id, result }, to.attempt);
    // A job about to be retried is reported as started, so its record shows every
    // attempt while it waits.
    if matches!(decision, Decision::Retry { .. })
        && !start.reported
        && let Err(e) = reply(ctx, to, job.id, Outcome::Started, None, &[]).await
    {
        warn!(error = %e, "could not report the start");
    }
    record(&ctx.settings.name, op, &decision, clock.elapsed());
    let started_ms = (!start.reported).then_some(start.at_ms);
    let settled = carry_out(ctx, to, decision, started_ms, &hops).await;
    // Alive and done with the delivery: this worker's mark goes. Once the job is
    // answered (or waits as a new message on the retry queue), the dead ones' go too.
    if settled != Settlement::Ack {
        dead.clear();
    }
    ctx.marks.remove(mine.into_iter().chain(dead)).await;
}

/// How a job's start went: whether its `started` reply went out, and when a slot began it.
struct Start {
    reported: bool,
    at_ms: i64,
}

/// Runs the job, reporting its start only if it is still running after
/// [`Attempt::report_start_after`]. The clock starts when a slot starts the job, not
/// while it waits for one.
async fn run_reporting_start(
    ctx: &Context,
    to: &Answer<'_>,
    job: &JobRequest,
    segment: &Segment,
) -> (Result<JobResult, JobError>, Start) {
    let (slot_tx, slot_rx) = tokio::sync::watch::channel(None::<i64>);
    let mut reported = false;
    let report_after = to
        .attempt
        .report_start_after(ctx.settings.start_report_after);
    let run = run_job(ctx, job, segment, slot_tx);
    tokio::pin!(run);
    let mut slot_seen = slot_rx.clone();
    let report_due = async move {
        let _ = slot_seen.wait_for(Option::is_some).await;
        tokio::time::sleep(report_after).await;
    };
    let result = tokio::select! {
        biased;
        result = &mut run => result,
        () = report_due => {
            let started = reply(ctx, to, job.id, Outcome::Started, None, &[]);
            let (started, result) = tokio::join!(started, &mut run);
            match started {
                Ok(()) => reported = true,
                Err(e) => warn!(error = %e, "could not report the start"),
            }
            result
        }
    };
    let at_ms = slot_rx.borrow().unwrap_or_else(pixmill_shared::now_ms);
    (result, Start { reported, at_ms })
}

/// The run of a job's steps this worker does: its built-in steps from the cursor to
/// `end`, the job's last step or the step before another worker's op.
struct Segment {
    steps: Vec<Step>,
    end: usize,
    /// Whether the job ends with it: the result is encoded and replied, not handed on.
    last: bool,
}

/// Hands `next` on to the queue of its step at the cursor, through the forward
/// exchange, and acks the delivery once the broker confirms it (a forward that finds
/// no queue is refused, not dropped). Otherwise the delivery goes back to the queue.
/// `retries` is the job's transient-failure retry count, kept when the same hop goes
/// on (0 for the next hop, which starts its own count).
async fn hand_on(ctx: &Context, to: &Answer<'_>, next: JobRequest, retries: u32) -> Settlement {
    let topology = &ctx.settings.common.topology;
    let queue = topology.queue_for(next.steps.get(next.cursor));
    let id = next.id.to_string();
    let mut headers = contract::stamp(FieldTable::default());
    if retries > 0 {
        headers.insert(RETRIES_HEADER.into(), AMQPValue::LongUInt(retries));
    }
    let properties = BasicProperties::default()
        .with_message_id(id.as_str().into())
        .with_correlation_id(id.as_str().into())
        .with_reply_to(to.reply_to.into())
        .with_headers(headers);
    let published = amqp::publish_json(
        &ctx.replies,
        &topology.forward_exchange,
        &queue,
        &next,
        properties,
        REPLY_TIMEOUT,
    )
    .await;
    let settlement = match published {
        Ok(()) => {
            info!(%queue, cursor = next.cursor, "handed on");
            Settlement::Ack
        }
        Err(e) => {
            warn!(error = %e, %queue, "could not hand the job on; handing it back");
            reply_failed(ctx, &e);
            Settlement::Requeue {
                pause: Duration::from_secs(1),
            }
        }
    };
    settle(ctx, to.delivery, settlement).await;
    settlement
}

/// Logs and counts how a job that ran ended.
fn record(worker: &str, op: &str, decision: &Decision, took: Duration) {
    match decision {
        Decision::Reply {
            outcome: Outcome::Succeeded(result),
            ..
        } => info!(
            width = result.width,
            height = result.height,
            bytes = result.bytes,
            ms = result.processing_ms,
            "succeeded"
        ),
        Decision::Reply {
            outcome:
                Outcome::Failed {
                    code: ErrorCode::RetriesExhausted,
                    message,
                },
            ..
        } => warn!(%message, "transient failure, and no retries left"),
        Decision::Reply {
            outcome: Outcome::Failed { code, message },
            ..
        } => info!(code = code.as_str(), %message, "failed"),
        Decision::Retry { message, delay, .. } => Event::Retry {
            worker,
            message,
            delay: *delay,
        }
        .emit(),
        Decision::Reply { .. } | Decision::Ack | Decision::Forward => {}
    }
    if let Some((outcome, code)) = decision.job_labels() {
        Event::WorkerJob {
            worker,
            op,
            outcome,
            code,
            seconds: took.as_secs_f64(),
        }
        .emit();
    }
}

/// Publishes what `decision` asks for, then settles the delivery by whether the broker
/// confirmed it. Returns how it was settled.
async fn carry_out(
    ctx: &Context,
    to: &Answer<'_>,
    decision: Decision,
    started_ms: Option<i64>,
    hops: &[Hop],
) -> Settlement {
    let confirmed = match &decision {
        Decision::Ack | Decision::Forward => true,
        Decision::Reply {
            job_id, outcome, ..
        } => match reply(ctx, to, *job_id, outcome.clone(), started_ms, hops).await {
            Ok(()) => true,
            Err(e) => {
                warn!(error = %e, "reply not confirmed; handing the job back");
                reply_failed(ctx, &e);
                false
            }
        },
        Decision::Retry { retries, delay, .. } => {
            match schedule_retry(ctx, to.delivery, *retries, *delay).await {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "could not schedule the retry; handing the job back");
                    false
                }
            }
        }
    };
    let settlement = decision.settlement(confirmed);
    settle(ctx, to.delivery, settlement).await;
    settlement
}

/// Settles a delivery. An ack or nack that fails is counted and logged, and the broker
/// redelivers the job when the channel closes (a duplicate run is harmless); one that
/// gets no answer in time ends the session (see [`Context::settle_stuck`]).
async fn settle(ctx: &Context, delivery: &Delivery, settlement: Settlement) {
    let how = match settlement {
        Settlement::Ack => Settle::Ack,
        Settlement::Requeue { pause } => {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            Settle::Requeue
        }
    };
    if let Err(SettleError::Timeout { .. }) = amqp::settle(delivery, how, amqp::RPC_TIMEOUT).await {
        ctx.settle_stuck.cancel();
    }
}

/// Reads the input, processes it on a job slot's thread (off the async executor), and
/// stores the result. The slot does only CPU work, so a slow blob store never holds
/// one; the time limit covers the whole job, I/O included.
async fn run_job(
    ctx: &Context,
    job: &JobRequest,
    segment: &Segment,
    slot_started: tokio::sync::watch::Sender<Option<i64>>,
) -> Result<JobResult, JobError> {
    let limits = ctx.settings.common.limits;
    // The last worker writes the result; one that hands the job on writes the image as
    // it stands, losslessly, for the next.
    let (format, quality, key) = if segment.last {
        (job.format, job.quality, keys::result(job.id, job.format))
    } else {
        (
            OutputFormat::Png,
            job.quality,
            keys::intermediate(job.id, segment.end),
        )
    };
    let timeout = ctx.settings.job_timeout;
    let begun = tokio::time::Instant::now();
    let deadline = begun + timeout;
    let timed_out = || {
        JobError::permanent(
            ErrorCode::Timeout,
            format!(
                "the job ran longer than the {}s time limit",
                timeout.as_secs_f64()
            ),
        )
    };
    let input = tokio::time::timeout_at(deadline, ctx.blobs.get(&job.input))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| match e {
            BlobError::NotFound(_) => JobError::permanent(
                ErrorCode::InputMissing,
                "the uploaded image is no longer in the blob store",
            ),
            other => JobError::Transient(format!("reading the input failed: {other}")),
        })?;
    // What each output is: its key, its format, and its variant's name (none for a
    // job's single result).
    let variants = if segment.last {
        job.variants.clone()
    } else {
        Vec::new()
    };
    let outputs: Vec<(String, OutputFormat, Option<String>)> = if variants.is_empty() {
        vec![(key, format, None)]
    } else {
        variants
            .iter()
            .map(|v| {
                (
                    keys::variant(job.id, &v.name, v.format),
                    v.format,
                    Some(v.name.clone()),
                )
            })
            .collect()
    };
    let work = {
        let steps = segment.steps.clone();
        move || {
            if variants.is_empty() {
                pipeline::process_steps(&steps, format, quality, input, &limits).map(|p| vec![p])
            } else {
                pipeline::process_variants(&steps, &variants, input, &limits)
            }
        }
    };
    // The limit covers reading, processing and storing, not a wait for a free slot.
    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
    let worker = ctx.settings.name.as_str();
    let started = ctx.slots.run_then(left, work, || {
        slot_started.send_replace(Some(pixmill_shared::now_ms()));
    });
    let (processed, deadline) = match started.await {
        Ok((result, at)) => (result?, at + left),
        Err(SlotError::TimedOut) => {
            Event::Timeout {
                worker,
                limit: timeout,
            }
            .emit();
            return Err(timed_out());
        }
        Err(SlotError::Panicked(message)) => {
            Event::Panic {
                worker,
                message: &message,
            }
            .emit();
            return Err(JobError::permanent(
                ErrorCode::Internal,
                "the worker failed while processing this image",
            ));
        }
        Err(SlotError::Closed) => {
            return Err(JobError::Transient("the worker is shutting down".into()));
        }
    };
    let processing_ms = processed.first().map_or(0, |p| p.elapsed_ms);
    let mut stored = Vec::with_capacity(outputs.len());
    let mut puts = Vec::with_capacity(outputs.len());
    for ((key, format, name), processed) in outputs.into_iter().zip(processed) {
        let bytes = processed.bytes.len() as u64;
        let (blobs, put_key) = (&ctx.blobs, key.clone());
        puts.push(async move { blobs.put(&put_key, Bytes::from(processed.bytes)).await });
        stored.push(VariantOutput {
            name: name.unwrap_or_default(),
            key,
            content_type: pipeline::content_type(format).into(),
            width: processed.width,
            height: processed.height,
            bytes,
        });
    }
    // The outputs are written side by side; the reply waits for all of them.
    tokio::time::timeout_at(deadline, futures_util::future::try_join_all(puts))
        .await
        .map_err(|_| timed_out())?
        .map_err(|e| JobError::Transient(format!("storing the result failed: {e}")))?;
    let Some(first) = stored.first().cloned() else {
        return Err(JobError::permanent(
            ErrorCode::Internal,
            "the job made no output",
        ));
    };
    Ok(JobResult {
        key: first.key,
        content_type: first.content_type,
        width: first.width,
        height: first.height,
        bytes: first.bytes,
        processing_ms,
        outputs: if job.variants.is_empty() || !segment.last {
            Vec::new()
        } else {
            stored
        },
    })
}

/// Publishes a reply with confirms; `Ok` means the broker has it on the durable queue.
/// It goes through the reply exchange, keyed by `reply_to`: the worker's broker user may
/// write there and not to the default exchange (see `pixmill_shared::topology`).
async fn reply(
    ctx: &Context,
    to: &Answer<'_>,
    id: Uuid,
    outcome: Outcome,
    started_ms: Option<i64>,
    hops: &[Hop],
) -> Result<(), PublishError> {
    let started_ago_ms =
        started_ms.map(|at| u64::try_from(pixmill_shared::now_ms() - at).unwrap_or(0));
    let reply = Reply {
        job_id: id,
        worker: ctx.settings.name.clone(),
        attempt: to.attempt.number(),
        started_ago_ms,
        // A job of one hop says nothing: its record has the worker already.
        hops: if hops.len() > 1 {
            hops.to_vec()
        } else {
            Vec::new()
        },
        outcome,
    };
    let id = id.to_string();
    let properties = BasicProperties::default()
        .with_correlation_id(id.as_str().into())
        .with_headers(contract::stamp(FieldTable::default()));
    amqp::publish_json(
        &ctx.replies,
        &ctx.settings.common.topology.reply_exchange,
        to.reply_to,
        &reply,
        properties,
        REPLY_TIMEOUT,
    )
    .await
}

/// A random factor from 0.5 to 1.5 for a retry's back-off (±50 % jitter), from a random
/// UUID's bits: no extra dependency for one random number.
fn jitter() -> f64 {
    let bits = Uuid::new_v4().as_u128() as u16;
    0.5 + f64::from(bits) / f64::from(u16::MAX)
}

/// Puts a copy of the job on the retry queue, to come back to the jobs queue after
/// `delay`. Confirmed before the original is acked, so the job is never lost between.
async fn schedule_retry(
    ctx: &Context,
    delivery: &Delivery,
    retries: u32,
    delay: Duration,
) -> Result<(), PublishError> {
    // The copy keeps the job's headers (its contract version among them), but not the
    // broker's own delivery and dead-letter bookkeeping: it is a new message.
    let mut headers = FieldTable::default();
    if let Some(original) = delivery.properties.headers() {
        for (name, value) in original.inner() {
            let name = name.as_str();
            if !(name == "x-delivery-count"
                || name == "x-death"
                || name.starts_with("x-first-death")
                || name.starts_with("x-last-death"))
            {
                headers.insert(name.into(), value.clone());
            }
        }
    }
    headers.insert(RETRIES_HEADER.into(), AMQPValue::LongUInt(retries));
    let mut properties = delivery
        .properties
        .clone()
        .with_headers(headers)
        .with_expiration(
            u64::try_from(delay.as_millis())
                .unwrap_or(u64::MAX)
                .max(1)
                .to_string()
                .as_str()
                .into(),
        );
    if properties.reply_to().is_none() {
        properties = properties.with_reply_to(ctx.settings.common.topology.replies.as_str().into());
    }
    let topology = &ctx.settings.common.topology;
    amqp::publish_confirmed(
        &ctx.replies,
        &topology.retry_exchange,
        &topology.retry,
        &delivery.data,
        properties,
        REPLY_TIMEOUT,
    )
    .await
}

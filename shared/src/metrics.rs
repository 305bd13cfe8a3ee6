//! Metrics: one Prometheus recorder per process, and the typed events that feed it.
//!
//! Each thing worth counting is an [`Event`]. [`Event::emit`] writes its log line *and*
//! moves its counters, so the two cannot drift apart (the pattern of Vector's
//! `internal_events`). Gauges and histograms that are not events (busy slots, queue
//! depth, request durations) are set where they are measured, by the names in
//! [`names`], which the Grafana dashboard and the alert rules use too.

use std::{sync::OnceLock, time::Duration};

use metrics::{counter, histogram};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing::{error, info, warn};
use uuid::Uuid;

/// Every metric name, with its unit in the name.
pub mod names {
    pub const JOBS_SUBMITTED: &str = "pixmill_jobs_submitted_total";
    pub const JOBS_FINISHED: &str = "pixmill_jobs_finished_total";
    pub const OP_JOBS: &str = "pixmill_op_jobs_total";
    pub const JOBS_DEAD_LETTERED: &str = "pixmill_jobs_dead_lettered_total";
    pub const JOBS_LOST: &str = "pixmill_jobs_lost_total";
    pub const JOBS_REPUBLISHED: &str = "pixmill_jobs_republished_total";
    pub const HTTP_REQUESTS: &str = "pixmill_http_requests_total";
    pub const HTTP_DURATION: &str = "pixmill_http_request_duration_seconds";
    pub const QUEUE_WAIT: &str = "pixmill_job_queue_wait_seconds";
    pub const PROCESSING: &str = "pixmill_job_processing_seconds";
    pub const END_TO_END: &str = "pixmill_job_end_to_end_seconds";
    pub const UPLOAD_BYTES: &str = "pixmill_upload_bytes_total";
    pub const SERVED_BYTES: &str = "pixmill_result_bytes_served_total";
    pub const QUEUE_READY: &str = "pixmill_queue_messages_ready";
    pub const QUEUE_UNACKED: &str = "pixmill_queue_messages_unacked";
    pub const QUEUE_CONSUMERS: &str = "pixmill_queue_consumers";
    pub const TASK_UP: &str = "pixmill_background_task_up";
    pub const TASK_RESTARTS: &str = "pixmill_background_task_restarts_total";
    pub const WORKER_IN_FLIGHT: &str = "pixmill_worker_jobs_in_flight";
    pub const WORKER_SLOTS: &str = "pixmill_worker_slots";
    pub const WORKER_SLOTS_BUSY: &str = "pixmill_worker_slots_busy";
    pub const WORKER_JOBS: &str = "pixmill_worker_jobs_total";
    pub const WORKER_JOB_SECONDS: &str = "pixmill_worker_job_seconds";
    pub const WORKER_RETRIES: &str = "pixmill_worker_retries_total";
    pub const WORKER_REDELIVERIES: &str = "pixmill_worker_redeliveries_total";
    pub const WORKER_TIMEOUTS: &str = "pixmill_worker_timeouts_total";
    pub const WORKER_PANICS: &str = "pixmill_worker_panics_total";
    pub const SETTLE_FAILURES: &str = "pixmill_amqp_settle_failures_total";
}

/// Histogram buckets for every `_seconds` metric: 5 ms to 2 min.
const SECONDS_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// Installs the process's recorder (once; later calls return the same handle, so
/// several in-process gateways and workers in a test share it) and starts its upkeep.
pub fn install() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets(SECONDS_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new())
                .build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                warn!("a metrics recorder was already installed; /metrics may be empty");
            }
            let upkeep = handle.clone();
            let _ = std::thread::Builder::new()
                .name("pixmill-metrics-upkeep".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(Duration::from_secs(5));
                        upkeep.run_upkeep();
                    }
                });
            handle
        })
        .clone()
}

/// Registers the gateway's families at zero, with their help text, so `/metrics` shows
/// every one from the start (a counter that never moved still reads 0, not absent).
pub fn register_gateway() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    use names::*;
    for (name, help) in [
        (
            JOBS_SUBMITTED,
            "Jobs accepted (the broker confirmed their message).",
        ),
        (
            JOBS_DEAD_LETTERED,
            "Jobs set aside as worker_crashed (workers died on them, or the delivery limit).",
        ),
        (
            JOBS_LOST,
            "Jobs the sweeper failed as lost (their upload or message is gone).",
        ),
        (JOBS_REPUBLISHED, "Jobs the sweeper published again."),
        (UPLOAD_BYTES, "Bytes of accepted uploads."),
        (SERVED_BYTES, "Bytes of results served through the gateway."),
        (
            SETTLE_FAILURES,
            "Acks or nacks that did not reach the broker.",
        ),
    ] {
        describe_counter!(name, help);
        counter!(name).increment(0);
    }
    describe_counter!(
        JOBS_FINISHED,
        "Jobs that reached a terminal state, by op, outcome and error code."
    );
    describe_counter!(
        OP_JOBS,
        "Jobs that reached a terminal state, by each op they used (built-in or custom) and outcome."
    );
    describe_counter!(HTTP_REQUESTS, "HTTP requests by method, route and status.");
    describe_histogram!(HTTP_DURATION, Unit::Seconds, "HTTP request durations.");
    describe_histogram!(
        QUEUE_WAIT,
        Unit::Seconds,
        "From acceptance to a worker starting the job."
    );
    describe_histogram!(
        PROCESSING,
        Unit::Seconds,
        "The worker's time on a successful job."
    );
    describe_histogram!(
        END_TO_END,
        Unit::Seconds,
        "From acceptance to the terminal state."
    );
    describe_gauge!(
        QUEUE_READY,
        "Jobs waiting in the queue, read from the broker."
    );
    describe_gauge!(
        QUEUE_UNACKED,
        "Jobs held by workers and not yet acked, from the management API."
    );
    describe_gauge!(
        QUEUE_CONSUMERS,
        "Consumers of the jobs queue: one per connected worker."
    );
    describe_gauge!(
        TASK_UP,
        "1 while a gateway background task runs, 0 while it waits to be restarted."
    );
    describe_counter!(
        TASK_RESTARTS,
        "Gateway background tasks restarted after a panic or an exit of their own."
    );
    for name in [QUEUE_WAIT, PROCESSING, END_TO_END] {
        let _ = histogram!(name);
    }
}

/// Registers a worker's families at zero under its `worker` label.
pub fn register_worker(worker: &str) {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram, gauge};
    use names::*;
    for (name, help) in [
        (
            WORKER_RETRIES,
            "Transient failures sent to the retry queue.",
        ),
        (
            WORKER_REDELIVERIES,
            "Deliveries an earlier consumer took and never acked.",
        ),
        (WORKER_TIMEOUTS, "Jobs that ran past the time limit."),
        (WORKER_PANICS, "Pipeline panics caught (the slot lives on)."),
    ] {
        describe_counter!(name, help);
        counter!(name, "worker" => worker.to_string()).increment(0);
    }
    describe_counter!(
        SETTLE_FAILURES,
        "Acks or nacks that did not reach the broker."
    );
    counter!(SETTLE_FAILURES, "action" => "ack").increment(0);
    describe_counter!(
        WORKER_JOBS,
        "Jobs a worker finished, by op, outcome and error code."
    );
    describe_histogram!(
        WORKER_JOB_SECONDS,
        Unit::Seconds,
        "A worker's time per job, I/O included."
    );
    describe_gauge!(WORKER_IN_FLIGHT, "Deliveries a worker holds.");
    describe_gauge!(WORKER_SLOTS, "Job slots (CPU threads) of a worker.");
    describe_gauge!(WORKER_SLOTS_BUSY, "Slots running a job now.");
    gauge!(WORKER_IN_FLIGHT, "worker" => worker.to_string()).set(0.0);
}

/// The `op` label of a job: its one step's op, or `pipeline` for several steps. Bounded,
/// so a label never multiplies series: a custom op's name is one the gateway's registry
/// holds (it refuses any other at submit).
pub fn op_label(steps: &[crate::JobStep]) -> &str {
    match steps {
        [one] => one.op(),
        _ => "pipeline",
    }
}

/// [`op_label`] of built-in steps.
pub fn builtin_op_label(steps: &[crate::Step]) -> &'static str {
    match steps {
        [one] => one.op(),
        _ => "pipeline",
    }
}

/// Something that happened, logged and counted in one place.
#[derive(Debug)]
pub enum Event<'a> {
    /// The gateway accepted a job (the broker confirmed it).
    JobSubmitted { job_id: Uuid, upload_bytes: u64 },
    /// A job reached a terminal state in the store (counted once, by the gateway
    /// whose change applied). `code` is empty for a success.
    JobFinished {
        job_id: Uuid,
        op: &'a str,
        /// Every op of its steps, each once (bounded by the gateway's registry).
        ops: &'a [&'a str],
        outcome: &'static str,
        code: &'a str,
        /// From acceptance to the terminal state.
        end_to_end: Option<Duration>,
        /// The worker's own time on the job.
        processing: Option<Duration>,
    },
    /// A worker started a job this long after it was accepted.
    JobStarted { job_id: Uuid, queue_wait: Duration },
    /// Every worker that took the job died before finishing it.
    DeadLettered { job_id: Uuid },
    /// The sweeper published a job again.
    Republished { job_id: Uuid, why: &'a str },
    /// The sweeper failed a job that can no longer run.
    Lost { job_id: Uuid, why: &'a str },
    /// A result was downloaded through the gateway.
    ResultServed { job_id: Uuid, bytes: u64 },
    /// A worker finished a job (with `outcome` `succeeded`, `failed` or `retried`).
    WorkerJob {
        worker: &'a str,
        op: &'a str,
        outcome: &'static str,
        code: &'a str,
        seconds: f64,
    },
    /// A transient failure: the job goes to the retry queue.
    Retry {
        worker: &'a str,
        message: &'a str,
        delay: Duration,
    },
    /// A delivery that an earlier consumer took and never acked.
    Redelivery { worker: &'a str, attempt: u32 },
    /// A job ran past the time limit.
    Timeout { worker: &'a str, limit: Duration },
    /// The pipeline panicked; the slot lives on.
    Panic { worker: &'a str, message: &'a str },
    /// An ack or nack did not reach the broker (it redelivers when the channel closes).
    SettleFailed {
        action: &'static str,
        error: &'a str,
    },
}

impl Event<'_> {
    /// Logs the event and moves its metrics.
    pub fn emit(&self) {
        use names::*;
        match self {
            Event::JobSubmitted {
                job_id,
                upload_bytes,
            } => {
                info!(%job_id, upload_bytes, "job queued");
                counter!(JOBS_SUBMITTED).increment(1);
                counter!(UPLOAD_BYTES).increment(*upload_bytes);
            }
            Event::JobFinished {
                job_id,
                op,
                ops,
                outcome,
                code,
                end_to_end,
                processing,
            } => {
                info!(%job_id, op, outcome, code, "job finished");
                counter!(JOBS_FINISHED, "op" => op.to_string(), "outcome" => *outcome, "code" => code.to_string())
                    .increment(1);
                for each in *ops {
                    counter!(OP_JOBS, "op" => each.to_string(), "outcome" => *outcome).increment(1);
                }
                if let Some(d) = end_to_end {
                    histogram!(END_TO_END).record(d.as_secs_f64());
                }
                if let Some(d) = processing {
                    histogram!(PROCESSING).record(d.as_secs_f64());
                }
            }
            Event::JobStarted { queue_wait, .. } => {
                histogram!(QUEUE_WAIT).record(queue_wait.as_secs_f64());
            }
            Event::DeadLettered { job_id } => {
                warn!(%job_id, "job set aside as worker_crashed");
                counter!(JOBS_DEAD_LETTERED).increment(1);
            }
            Event::Republished { job_id, why } => {
                info!(%job_id, why, "job published again");
                counter!(JOBS_REPUBLISHED).increment(1);
            }
            Event::Lost { job_id, why } => {
                warn!(%job_id, why, "job lost");
                counter!(JOBS_LOST).increment(1);
            }
            Event::ResultServed { bytes, .. } => {
                counter!(SERVED_BYTES).increment(*bytes);
            }
            Event::WorkerJob {
                worker,
                op,
                outcome,
                code,
                seconds,
            } => {
                counter!(WORKER_JOBS, "worker" => worker.to_string(), "op" => op.to_string(),
                         "outcome" => *outcome, "code" => code.to_string())
                .increment(1);
                histogram!(WORKER_JOB_SECONDS, "worker" => worker.to_string(), "op" => op.to_string())
                    .record(*seconds);
            }
            Event::Retry {
                worker,
                message,
                delay,
            } => {
                warn!(%message, retry_in = ?delay, "transient failure; the job will be retried");
                counter!(WORKER_RETRIES, "worker" => worker.to_string()).increment(1);
            }
            Event::Redelivery { worker, attempt } => {
                info!(
                    attempt,
                    "a redelivered job: an earlier worker did not finish it"
                );
                counter!(WORKER_REDELIVERIES, "worker" => worker.to_string()).increment(1);
            }
            Event::Timeout { worker, limit } => {
                warn!(limit = ?limit, "the job ran past its time limit");
                counter!(WORKER_TIMEOUTS, "worker" => worker.to_string()).increment(1);
            }
            Event::Panic { worker, message } => {
                error!(%message, "the pipeline panicked");
                counter!(WORKER_PANICS, "worker" => worker.to_string()).increment(1);
            }
            Event::SettleFailed { action, error } => {
                warn!(action, %error, "ack or nack failed; the broker redelivers when the channel closes");
                counter!(SETTLE_FAILURES, "action" => *action).increment(1);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_move_the_counters_they_name() {
        let handle = install();
        let id = Uuid::new_v4();
        Event::JobSubmitted {
            job_id: id,
            upload_bytes: 1234,
        }
        .emit();
        Event::WorkerJob {
            worker: "unit-test-worker",
            op: "blur",
            outcome: "failed",
            code: "timeout",
            seconds: 0.2,
        }
        .emit();
        let text = handle.render();
        assert!(text.contains(names::JOBS_SUBMITTED), "{text}");
        assert!(text.contains(names::UPLOAD_BYTES), "{text}");
        assert!(
            text.contains(r#"pixmill_worker_jobs_total{worker="unit-test-worker",op="blur",outcome="failed",code="timeout"} 1"#),
            "{text}"
        );
        // Seconds metrics are histograms, with buckets Grafana can take quantiles of.
        assert!(
            text.contains("pixmill_worker_job_seconds_bucket{"),
            "{text}"
        );
    }

    #[test]
    fn op_labels_stay_bounded() {
        use crate::Step;
        assert_eq!(op_label(&[Step::Grayscale {}.into()]), "grayscale");
        assert_eq!(
            op_label(&[Step::Grayscale {}.into(), Step::Grayscale {}.into()]),
            "pipeline"
        );
        assert_eq!(op_label(&[]), "pipeline");
        assert_eq!(builtin_op_label(&[Step::Grayscale {}]), "grayscale");
    }
}

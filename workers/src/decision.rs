//! What becomes of a delivery, decided from plain facts: the message to publish for it
//! (a reply, a retry, or nothing) and how to settle it once the broker has or has not
//! taken that message. Nothing here does I/O; [`crate::consumer`] gathers the facts and
//! carries the decision out.
//!
//! A worker never rejects a delivery. A job whose workers keep dying is answered
//! `worker_crashed` by the next worker that takes it, once the run marks the dead ones
//! left reach the crash limit ([`Facts::Crashed`]); the broker's delivery limit is only
//! a backstop behind that.

use std::time::Duration;

use pixmill_shared::{ErrorCode, JobResult, Outcome};
use uuid::Uuid;

use crate::JobError;

/// How long a job whose reply the broker would not take waits before it is handed
/// back. A replies queue without a leader (a node failing over) refuses every reply
/// for seconds; handing the job back at once would redeliver it in a hot loop that
/// burns its delivery limit in milliseconds.
pub const REFUSED_REPLY_PAUSE: Duration = Duration::from_secs(1);

/// Longest back-off before a retry.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

/// Where a delivery stands: how often the job ran before.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Transient-failure retries the job has had (its retries header).
    pub retries: u32,
    /// Times the broker handed this message out before without an ack
    /// (`x-delivery-count`): the workers that took it died or lost their channel.
    pub redeliveries: u32,
}

impl Attempt {
    /// This attempt's number, counting from 1: every retry and redelivery is one more.
    pub fn number(self) -> u32 {
        self.retries
            .saturating_add(self.redeliveries)
            .saturating_add(1)
    }

    /// True when an earlier consumer took this very message and never acked it.
    pub fn is_redelivery(self) -> bool {
        self.redeliveries > 0
    }

    /// How long the job must run before its start is reported. A quick first attempt
    /// goes from queued straight to its end, which saves a quorum-queue write, a store
    /// write and a change notice; a second or later attempt is reported at once, so the
    /// job's record shows every attempt.
    pub fn report_start_after(self, configured: Duration) -> Duration {
        if self.number() > 1 {
            Duration::ZERO
        } else {
            configured
        }
    }
}

/// The retry policy (`PIXMILL_MAX_RETRIES`, `PIXMILL_RETRY_BASE_MS`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries a transient failure gets before the job fails.
    pub max_retries: u32,
    /// The first back-off; it doubles with every retry.
    pub base: Duration,
}

/// What became of a delivery before anything was published for it.
#[derive(Debug)]
pub enum Facts {
    /// The body is not a job message. `id` is the job its properties name, if any.
    Unreadable { id: Option<Uuid>, error: String },
    /// The message speaks a newer major version of the contract (or names no version it
    /// can read): it is refused with `reason`, never run.
    Unsupported { id: Option<Uuid>, reason: String },
    /// The job was cancelled before it ran.
    Cancelled,
    /// Workers died running this job `deaths` times, which is at least the crash limit:
    /// it is set aside, not run again.
    Crashed { id: Uuid, deaths: u32 },
    /// The job ran to this result.
    Ran {
        id: Uuid,
        result: Result<JobResult, JobError>,
    },
}

/// What to publish for a delivery before it is settled.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Nothing to publish: the delivery is acked. A cancelled job, or an unreadable
    /// message that names no job to answer.
    Ack,
    /// Publish `outcome` as the job's terminal reply. Acked once the broker confirms
    /// it; otherwise handed back to the queue after `pause`.
    Reply {
        job_id: Uuid,
        outcome: Outcome,
        pause: Duration,
    },
    /// A transient failure with retries left: report the start if not yet reported,
    /// then put a copy on the retry queue, marked as retry number `retries`, to come
    /// back after `delay`. Acked once the broker confirms the copy; otherwise handed
    /// back to the queue after `delay`.
    Retry {
        retries: u32,
        delay: Duration,
        message: String,
    },
    /// The worker ran its part of a routing slip and hands the job on to the next
    /// step's owner. Acked once the broker confirms the forward.
    Forward,
}

/// How a delivery is settled once its decision has been carried out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// Done with the delivery: the job is answered, waits on the retry queue, or needs
    /// no answer. The broker forgets it.
    Ack,
    /// Handed back to the jobs queue after `pause`, to run again.
    Requeue { pause: Duration },
}

/// Decides what to publish for a delivery. `jitter` scales a retry's back-off; it is
/// drawn from 0.5 to 1.5 so that jobs failing together do not come back together.
pub fn decide(facts: Facts, attempt: Attempt, policy: RetryPolicy, jitter: f64) -> Decision {
    let reply = |job_id, outcome| Decision::Reply {
        job_id,
        outcome,
        pause: REFUSED_REPLY_PAUSE,
    };
    match facts {
        Facts::Cancelled
        | Facts::Unreadable { id: None, .. }
        | Facts::Unsupported { id: None, .. } => Decision::Ack,
        // Acked once answered, so it never comes back: running it again would only be
        // refused again.
        Facts::Unsupported {
            id: Some(job_id),
            reason,
        } => Decision::Reply {
            job_id,
            outcome: Outcome::Failed {
                code: ErrorCode::UnsupportedContract,
                message: reason,
            },
            pause: REFUSED_REPLY_PAUSE,
        },
        // Without a parseable job there is nothing to run, but its id can be answered.
        // A refused answer goes back at once: the message costs nothing to read again.
        Facts::Unreadable {
            id: Some(job_id),
            error,
        } => Decision::Reply {
            job_id,
            outcome: Outcome::Failed {
                code: ErrorCode::InvalidRequest,
                message: format!("the job message could not be read: {error}"),
            },
            pause: Duration::ZERO,
        },
        Facts::Crashed { id, deaths } => reply(
            id,
            Outcome::Failed {
                code: ErrorCode::WorkerCrashed,
                message: format!(
                    "workers died {deaths} times while running this job; it was set aside \
                     so the rest of the queue keeps moving"
                ),
            },
        ),
        Facts::Ran { id, result } => match result {
            Ok(result) => reply(id, Outcome::Succeeded(result)),
            Err(JobError::Permanent { code, message }) => {
                reply(id, Outcome::Failed { code, message })
            }
            Err(JobError::Transient(message)) if attempt.retries < policy.max_retries => {
                Decision::Retry {
                    retries: attempt.retries + 1,
                    delay: backoff(policy.base, attempt.retries, jitter),
                    message,
                }
            }
            Err(JobError::Transient(message)) => reply(
                id,
                Outcome::Failed {
                    code: ErrorCode::RetriesExhausted,
                    message: format!("still failing after {} retries: {message}", attempt.retries),
                },
            ),
        },
    }
}

impl Decision {
    /// How to settle the delivery once the decision's message was confirmed by the
    /// broker (`confirmed`), or not. With nothing to publish, there is nothing to refuse.
    pub fn settlement(&self, confirmed: bool) -> Settlement {
        match self {
            _ if confirmed => Settlement::Ack,
            Decision::Ack => Settlement::Ack,
            Decision::Forward => Settlement::Requeue {
                pause: REFUSED_REPLY_PAUSE,
            },
            Decision::Reply { pause, .. } => Settlement::Requeue { pause: *pause },
            Decision::Retry { delay, .. } => Settlement::Requeue { pause: *delay },
        }
    }

    /// The `outcome` and `code` labels of a job that ran and got this decision; `None`
    /// when it says nothing about a job's end.
    pub fn job_labels(&self) -> Option<(&'static str, &'static str)> {
        match self {
            Decision::Reply {
                outcome: Outcome::Succeeded(_),
                ..
            } => Some(("succeeded", "")),
            Decision::Reply {
                outcome: Outcome::Failed { code, .. },
                ..
            } => Some(("failed", code.as_str())),
            Decision::Retry { .. } => Some(("retried", "")),
            Decision::Forward => Some(("handed_on", "")),
            Decision::Reply {
                outcome: Outcome::Started,
                ..
            }
            | Decision::Ack => None,
        }
    }
}

/// Exponential back-off from `base`, doubling per retry up to [`MAX_RETRY_DELAY`],
/// scaled by `jitter`.
pub fn backoff(base: Duration, retries: u32, jitter: f64) -> Duration {
    base.saturating_mul(1u32 << retries.min(16))
        .min(MAX_RETRY_DELAY)
        .mul_f64(jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        max_retries: 5,
        base: Duration::from_millis(500),
    };
    const FIRST: Attempt = Attempt {
        retries: 0,
        redeliveries: 0,
    };

    fn id() -> Uuid {
        Uuid::from_u128(7)
    }

    fn result() -> JobResult {
        JobResult {
            key: "results/7.jpg".into(),
            content_type: "image/jpeg".into(),
            width: 64,
            height: 48,
            bytes: 1234,
            processing_ms: 5,
            outputs: Vec::new(),
        }
    }

    fn ran(result: Result<JobResult, JobError>, attempt: Attempt) -> Decision {
        decide(Facts::Ran { id: id(), result }, attempt, POLICY, 1.0)
    }

    #[test]
    fn attempts_count_retries_and_redeliveries() {
        assert_eq!(FIRST.number(), 1);
        assert!(!FIRST.is_redelivery());
        let again = Attempt {
            retries: 2,
            redeliveries: 1,
        };
        assert_eq!(again.number(), 4);
        assert!(again.is_redelivery());
        let huge = Attempt {
            retries: u32::MAX,
            redeliveries: 3,
        };
        assert_eq!(huge.number(), u32::MAX);
    }

    #[test]
    fn only_a_first_attempt_waits_to_report_its_start() {
        let configured = Duration::from_millis(250);
        assert_eq!(FIRST.report_start_after(configured), configured);
        let retried = Attempt {
            retries: 1,
            redeliveries: 0,
        };
        assert_eq!(retried.report_start_after(configured), Duration::ZERO);
        let redelivered = Attempt {
            retries: 0,
            redeliveries: 1,
        };
        assert_eq!(redelivered.report_start_after(configured), Duration::ZERO);
    }

    #[test]
    fn a_cancelled_job_is_acked_without_a_reply() {
        let decision = decide(Facts::Cancelled, FIRST, POLICY, 1.0);
        assert_eq!(decision, Decision::Ack);
        assert_eq!(decision.settlement(true), Settlement::Ack);
        assert_eq!(decision.settlement(false), Settlement::Ack);
        assert_eq!(decision.job_labels(), None);
    }

    #[test]
    fn a_job_of_a_newer_contract_is_answered_once_and_acked() {
        let reason = "the job message speaks contract 2.0".to_string();
        let facts = Facts::Unsupported {
            id: Some(id()),
            reason: reason.clone(),
        };
        let decision = decide(facts, FIRST, POLICY, 1.0);
        assert_eq!(
            decision,
            Decision::Reply {
                job_id: id(),
                outcome: Outcome::Failed {
                    code: ErrorCode::UnsupportedContract,
                    message: reason.clone(),
                },
                pause: REFUSED_REPLY_PAUSE,
            }
        );
        assert_eq!(decision.settlement(true), Settlement::Ack);
        // Without an id there is no one to tell: it is acked, not redelivered forever.
        let nameless = Facts::Unsupported { id: None, reason };
        assert_eq!(decide(nameless, FIRST, POLICY, 1.0), Decision::Ack);
    }

    #[test]
    fn a_job_that_killed_its_workers_is_answered_worker_crashed_and_not_run() {
        let attempt = Attempt {
            retries: 0,
            redeliveries: 4,
        };
        let decision = decide(
            Facts::Crashed {
                id: id(),
                deaths: 3,
            },
            attempt,
            POLICY,
            1.0,
        );
        let Decision::Reply {
            job_id,
            outcome: Outcome::Failed { code, message },
            pause,
        } = &decision
        else {
            panic!("{decision:?}");
        };
        assert_eq!(*job_id, id());
        assert_eq!(*code, ErrorCode::WorkerCrashed);
        assert!(message.contains("died 3 times"), "{message}");
        assert_eq!(*pause, REFUSED_REPLY_PAUSE);
        assert_eq!(decision.settlement(true), Settlement::Ack);
        assert_eq!(decision.job_labels(), Some(("failed", "worker_crashed")));
    }

    #[test]
    fn an_unreadable_message_naming_no_job_is_acked() {
        let facts = Facts::Unreadable {
            id: None,
            error: "expected value".into(),
        };
        assert_eq!(decide(facts, FIRST, POLICY, 1.0), Decision::Ack);
    }

    #[test]
    fn an_unreadable_job_is_answered_and_a_refused_answer_goes_back_at_once() {
        let facts = Facts::Unreadable {
            id: Some(id()),
            error: "expected value".into(),
        };
        let decision = decide(facts, FIRST, POLICY, 1.0);
        assert_eq!(
            decision,
            Decision::Reply {
                job_id: id(),
                outcome: Outcome::Failed {
                    code: ErrorCode::InvalidRequest,
                    message: "the job message could not be read: expected value".into(),
                },
                pause: Duration::ZERO,
            }
        );
        assert_eq!(decision.settlement(true), Settlement::Ack);
        assert_eq!(
            decision.settlement(false),
            Settlement::Requeue {
                pause: Duration::ZERO
            }
        );
    }

    #[test]
    fn a_success_is_replied_then_acked() {
        let decision = ran(Ok(result()), FIRST);
        assert_eq!(
            decision,
            Decision::Reply {
                job_id: id(),
                outcome: Outcome::Succeeded(result()),
                pause: REFUSED_REPLY_PAUSE,
            }
        );
        assert_eq!(decision.settlement(true), Settlement::Ack);
        assert_eq!(decision.job_labels(), Some(("succeeded", "")));
    }

    #[test]
    fn a_refused_reply_hands_the_job_back_after_a_pause() {
        let decision = ran(Ok(result()), FIRST);
        assert_eq!(
            decision.settlement(false),
            Settlement::Requeue {
                pause: REFUSED_REPLY_PAUSE
            }
        );
        let failed = ran(
            Err(JobError::permanent(ErrorCode::UndecodableImage, "no")),
            FIRST,
        );
        assert_eq!(
            failed.settlement(false),
            Settlement::Requeue {
                pause: REFUSED_REPLY_PAUSE
            }
        );
    }

    #[test]
    fn a_permanent_failure_is_replied_with_its_code() {
        let decision = ran(
            Err(JobError::permanent(ErrorCode::InputMissing, "gone")),
            FIRST,
        );
        assert_eq!(
            decision,
            Decision::Reply {
                job_id: id(),
                outcome: Outcome::Failed {
                    code: ErrorCode::InputMissing,
                    message: "gone".into(),
                },
                pause: REFUSED_REPLY_PAUSE,
            }
        );
        assert_eq!(decision.settlement(true), Settlement::Ack);
        assert_eq!(decision.job_labels(), Some(("failed", "input_missing")));
    }

    #[test]
    fn a_timeout_fails_the_job_and_is_never_retried() {
        let attempt = Attempt {
            retries: 0,
            redeliveries: 2,
        };
        let decision = ran(
            Err(JobError::permanent(ErrorCode::Timeout, "too slow")),
            attempt,
        );
        assert!(
            matches!(
                &decision,
                Decision::Reply {
                    outcome: Outcome::Failed {
                        code: ErrorCode::Timeout,
                        ..
                    },
                    ..
                }
            ),
            "{decision:?}"
        );
        assert_eq!(decision.settlement(true), Settlement::Ack);
        assert_eq!(decision.job_labels(), Some(("failed", "timeout")));
    }

    #[test]
    fn a_transient_failure_with_retries_left_is_retried_later() {
        let attempt = Attempt {
            retries: 2,
            redeliveries: 0,
        };
        let decision = ran(Err(JobError::Transient("store down".into())), attempt);
        assert_eq!(
            decision,
            Decision::Retry {
                retries: 3,
                delay: Duration::from_secs(2),
                message: "store down".into(),
            }
        );
        assert_eq!(decision.settlement(true), Settlement::Ack);
        assert_eq!(decision.job_labels(), Some(("retried", "")));
    }

    #[test]
    fn a_retry_that_cannot_be_scheduled_goes_back_after_its_delay() {
        let decision = ran(Err(JobError::Transient("store down".into())), FIRST);
        assert_eq!(
            decision.settlement(false),
            Settlement::Requeue {
                pause: Duration::from_millis(500)
            }
        );
    }

    #[test]
    fn a_transient_failure_without_retries_left_fails_the_job() {
        let attempt = Attempt {
            retries: 5,
            redeliveries: 0,
        };
        let decision = ran(Err(JobError::Transient("store down".into())), attempt);
        assert_eq!(
            decision,
            Decision::Reply {
                job_id: id(),
                outcome: Outcome::Failed {
                    code: ErrorCode::RetriesExhausted,
                    message: "still failing after 5 retries: store down".into(),
                },
                pause: REFUSED_REPLY_PAUSE,
            }
        );
        assert_eq!(decision.settlement(true), Settlement::Ack);
        assert_eq!(decision.job_labels(), Some(("failed", "retries_exhausted")));
    }

    #[test]
    fn redeliveries_do_not_use_up_retries() {
        let attempt = Attempt {
            retries: 0,
            redeliveries: 4,
        };
        let decision = ran(Err(JobError::Transient("store down".into())), attempt);
        assert!(
            matches!(decision, Decision::Retry { retries: 1, .. }),
            "{decision:?}"
        );
    }

    #[test]
    fn backoff_doubles_up_to_a_minute_and_scales_by_the_jitter() {
        let base = Duration::from_millis(500);
        assert_eq!(backoff(base, 0, 1.0), base);
        assert_eq!(backoff(base, 3, 1.0), Duration::from_secs(4));
        assert_eq!(backoff(base, 10, 1.0), MAX_RETRY_DELAY);
        assert_eq!(backoff(base, u32::MAX, 1.0), MAX_RETRY_DELAY);
        assert_eq!(backoff(base, 1, 0.5), base);
        assert_eq!(backoff(base, 1, 1.5), Duration::from_millis(1500));
    }
}

//! Fault injection for the fault tests, compiled only with the `fault-injection` feature
//! (release builds never carry it).
//!
//! `PIXMILL_FAULT_ABORT_ON_SIGMA=<sigma>` makes the worker process abort, as a crashing
//! decoder would, when it takes a job with a `blur` step of exactly that sigma.

use pixmill_shared::{JobRequest, Step};

/// Aborts the process if the job is the configured poison job.
pub fn maybe_crash(job: &JobRequest) {
    let Some(poison) = std::env::var("PIXMILL_FAULT_ABORT_ON_SIGMA")
        .ok()
        .and_then(|v| v.parse::<f32>().ok())
    else {
        return;
    };
    let is_poison = job
        .steps
        .iter()
        .any(|s| matches!(s.builtin(), Some(Step::Blur { sigma }) if *sigma == poison));
    if is_poison {
        tracing::error!(job_id = %job.id, "fault injection: aborting on the poison job");
        std::process::abort();
    }
}

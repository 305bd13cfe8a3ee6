//! pixmill's shared crate: the contract between the gateway and the workers.
//!
//! # Layout
//!
//! - [`messages`]: `JobRequest`, `Step`, `Reply` — the JSON that crosses the broker.
//! - [`limits`]: the limits every job is held to, and the geometry check both sides run.
//! - [`topology`]: exchange and queue names, and the idempotent declaration.
//! - [`amqp`]: connecting and publishing with confirms.
//! - [`blobs`]: the claim-check blob store (image bytes never travel through the broker).
//! - [`config`]: typed `PIXMILL_*` settings with errors that name the variable.
//! - [`telemetry`]: logging set-up.
//! - [`shutdown`]: the stop signal (Ctrl-C or SIGTERM).

pub mod amqp;
pub mod blobs;
pub mod config;
pub mod limits;
pub mod messages;
pub mod shutdown;
pub mod telemetry;
pub mod topology;

pub use blobs::BlobStore;
pub use limits::{Limits, PlanError, plan};
pub use messages::{
    ChannelOrder, ErrorCode, Fit, FlipDirection, JobRequest, JobResult, Outcome, OutputFormat,
    Reply, Step,
};
pub use topology::Topology;

/// Milliseconds since the Unix epoch, the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

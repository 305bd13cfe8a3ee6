//! pixmill's shared crate: the contract between the gateway and the workers.
//!
//! # Layout
//!
//! - [`messages`]: `JobRequest`, `Step`, `Reply` — the JSON that crosses the broker.
//! - [`contract`]: the contract version, the messages' JSON Schemas and the AsyncAPI
//!   document, generated from the types (published in `docs/contract/`).
//! - [`limits`]: the limits every job is held to, and the geometry check both sides run.
//! - [`state`]: job states and the forward-only rule every task store applies.
//! - [`events`]: the change notices gateways publish on `pixmill.events`.
//! - [`topology`]: exchange and queue names, and the idempotent declaration.
//! - [`amqp`]: connecting with fail-over and back-off, publishing with confirms,
//!   settling a delivery within a time limit, and the delivery helpers both consumers use.
//! - [`blobs`]: the claim-check blob store (image bytes never travel through the broker):
//!   one interface, a folder or an S3 backend, and the keys module.
//! - [`config`]: typed `PIXMILL_*` settings with errors that name the variable.
//! - [`redact`]: masking URL passwords in what gets printed.
//! - [`runtime`]: the async runtime both binaries run on, and the malloc tuning that
//!   keeps their resident size flat.
//! - [`telemetry`]: logging set-up.
//! - [`metrics`]: the Prometheus recorder and the events that are logged and counted.
//! - [`shutdown`]: the stop signal (Ctrl-C or SIGTERM).

pub mod amqp;
pub mod blobs;
pub mod config;
pub mod contract;
pub mod events;
pub mod limits;
pub mod messages;
pub mod metrics;
pub mod redact;
pub mod runtime;
pub mod shutdown;
pub mod state;
pub mod telemetry;
pub mod topology;

pub use blobs::{BlobError, BlobStore, BlobUrl, Blobs, keys};
pub use events::JobEvent;
pub use limits::{Limits, PlanError, plan, plan_job};
pub use messages::{
    ChannelOrder, CustomStep, ErrorCode, Fit, FlipDirection, Hop, JobRequest, JobResult, JobStep,
    Outcome, OutputFormat, Reply, Step, Variant, VariantOutput,
};
pub use state::JobState;
pub use topology::Topology;

/// Milliseconds since the Unix epoch, the unit of every stored timestamp.
pub fn now_ms() -> i64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    i64::try_from(now.as_millis()).unwrap_or(i64::MAX)
}

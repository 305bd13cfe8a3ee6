//! pixmill's worker: a competing consumer of the jobs queue that runs image pipelines.
//!
//! # Layout
//!
//! - [`config`]: `Settings` from `PIXMILL_*` variables.
//! - [`consumer`]: the consume loop — reconnects, bounded concurrency, ack after reply.
//! - [`decision`]: what a delivery's facts call for — the reply or retry to publish, and
//!   how to settle it — with no I/O.
//! - [`pipeline`]: one job's CPU work: decode → steps → encode (run on a blocking thread).
//! - [`codec`]: decoding under limits with EXIF orientation; encoding.
//! - [`ops`]: the steps, one file per family (geometry, filters, edges, color).
//! - [`error`]: `JobError`, whose kind decides ack or retry.
//! - [`marks`]: run marks, so a job is set aside for workers that died on it, never
//!   for broker failovers.
//! - [`slots`]: the threads that run jobs' CPU work, one per slot.
//! - [`buffers`]: the pool that hands a slot's image buffers from one job to the next.
//! - [`metrics_http`]: `/metrics` and `/healthz` on `PIXMILL_METRICS_ADDR`.
//!
//! A worker needs only the broker and the blob store, so operators can start one
//! anywhere those two are reachable; the task store belongs to the gateway alone.

pub mod buffers;
pub mod codec;
pub mod config;
pub mod consumer;
pub mod decision;
pub mod error;
#[cfg(feature = "fault-injection")]
pub mod fault;
pub mod marks;
pub mod metrics_http;
pub mod ops;
pub mod pipeline;

pub mod slots;

pub use config::Settings;
pub use consumer::run;
pub use error::JobError;

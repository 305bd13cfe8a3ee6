//! pixmill's gateway: accepts uploads, queues jobs, applies replies, serves results.
//!
//! # Layout
//!
//! - [`app`]: `Application::build(settings)` / `run_until_stopped(shutdown)`.
//! - [`config`]: `Settings` from `PIXMILL_*` variables.
//! - [`routes`]: the HTTP API and the upload page; one list of routes, documented.
//! - [`openapi`]: the API contract (OpenAPI 3.1 at `/openapi.json`, Swagger UI at `/docs/`).
//! - [`upload`]: reading multipart or raw uploads under the size limit; parsing steps.
//! - [`inspect`]: sniffing the format, catching truncation, reading the header size.
//! - [`jobs`]: the jobs service — the order that makes accepting a job lossless.
//! - [`publisher`]: confirmed publishes over a long-lived channel.
//! - [`queue_depth`]: the jobs queue's depth and consumers, read from the broker.
//! - [`maintenance`]: the sweeper (no job waits forever) and the retention janitor.
//! - [`replies`]: applying worker replies and dead-lettered jobs to the store.
//! - [`events`]: change notices, published for every gateway and heard from all of them.
//! - [`sse`]: `GET /v1/jobs/{id}/events`, a job's changes as server-sent events.
//! - [`stats`]: `GET /v1/stats`, the operations panel's figures.
//! - [`store`]: the task store (SQLite or PostgreSQL); its writes only move a job forward.
//! - [`tasks`]: background tasks that report when they exit.
//! - [`webhooks`]: signed, durable, guarded callbacks when a job ends.
//! - [`error`]: `ApiError`, one JSON shape for every failure.

pub mod app;
pub mod config;
pub mod error;
pub mod events;
pub mod inspect;
pub mod jobs;
pub mod maintenance;
pub mod openapi;
pub mod publisher;
pub mod queue_depth;
pub mod replies;
pub mod routes;
pub mod sse;
pub mod stats;
pub mod store;
pub mod tasks;
pub mod upload;
pub mod webhooks;

pub use app::Application;
pub use config::Settings;

//! pixmill's gateway: accepts uploads, queues jobs, applies replies, serves results.
//!
//! # Layers
//!
//! The modules stack in layers, and a module imports only modules below it (or before
//! it in its own layer), so the gateway reads bottom-up. From the bottom:
//!
//! 1. **Data, domain types and plumbing**, which call no service: [`store`] (the job as
//!    stored), [`publisher`], [`tasks`], [`error`], [`view`] (the job as the API shows
//!    it, over `store`), [`auth`] (API keys and the principal a request acts as, over
//!    `store` and `error`), the request checks [`upload`] and [`inspect`], the callback
//!    rules [`webhooks::guard`] and [`webhooks::sign`], [`links`] (signed result links,
//!    over `error`), [`jwt`] (bearer JWTs and the JWK set they are checked against) and
//!    [`tenants`] (quotas and rates, over `store` and `error`), and [`admission`] (the
//!    bounds on buffered uploads and watchers, over `error`).
//! 2. **Services**, the work: [`events`] (change notices), [`fair_share`] (releasing
//!    held jobs in turn), [`jobs`] (accepting, waiting, cancelling), then what runs
//!    beside the requests: [`replies`], [`maintenance`], [`webhooks::delivery`],
//!    [`queue_depth`] and [`stats`].
//! 3. **HTTP**: [`routes`], with the contract it serves, [`openapi`]. They name each
//!    other, the one import loop, because the router serves the document that is built
//!    from its own list of routes.
//! 4. **Wiring**: [`config`] reads the settings, [`serve`] runs HTTP connections under
//!    their bounds, and [`app`] builds the gateway from them; [`manage`] is the
//!    `pixmill-gateway keys`, `tenants` and `webhook-secret` commands.
//!
//! # Modules
//!
//! - [`app`]: `Application::build(settings)` / `run_until_stopped(shutdown)`.
//! - [`auth`]: API keys, the `Principal` a request acts as, and the check at the edge.
//! - [`config`]: `Settings` from `PIXMILL_*` variables.
//! - [`custom_ops`]: the ops registered in `PIXMILL_OPS_FILE`, served by other workers.
//! - [`manage`]: `pixmill-gateway keys create|list|revoke`, `tenants set|list` and
//!   `webhook-secret --tenant`.
//! - [`routes`]: the HTTP API and the upload page; one list of routes, documented.
//! - [`openapi`]: the API contract (OpenAPI 3.1 at `/openapi.json`, Swagger UI at `/docs/`).
//! - [`jobs`]: the jobs service — the order that makes accepting a job lossless.
//! - [`tenants`]: each tenant's in-flight quota and submit rate.
//! - [`fair_share`]: tenants' jobs reach the workers in turn (windows in the store).
//! - [`replies`]: applying worker replies and dead-lettered jobs to the store.
//! - [`maintenance`]: the sweeper (no job waits forever) and the retention janitor.
//! - [`webhooks`]: signed, durable, guarded callbacks when a job ends: the URL guard and
//!   each tenant's signing secret, and the delivery task.
//! - [`events`]: change notices, published for every gateway and heard from all of them.
//! - [`queue_depth`]: the jobs queue's depth and consumers, read from the broker.
//! - [`stats`]: the figures of `GET /v1/stats`, the operations panel.
//! - [`links`]: signed, expiring result links that need no credential.
//! - [`jwt`]: bearer JWTs from an identity provider: verified, turned into a tenant and scopes.
//! - [`view`]: `JobView`, the JSON a job is shown as (HTTP, event stream, webhooks).
//! - [`store`]: the task store (SQLite or PostgreSQL); its writes only move a job forward.
//! - [`publisher`]: confirmed publishes over a long-lived channel.
//! - [`upload`]: reading multipart or raw uploads under the size limit; parsing steps.
//! - [`inspect`]: sniffing the format, catching truncation, reading the header size.
//! - [`tasks`]: background tasks that report when they exit.
//! - [`error`]: `ApiError`, one JSON shape for every failure.
//! - [`admission`]: the upload byte budget and the cap on long-polls and event streams.
//! - [`serve`]: the accept loop: the connection cap, the header and idle timeouts.

pub mod admission;
pub mod app;
pub mod auth;
pub mod config;
pub mod custom_ops;
pub mod error;
pub mod events;
pub mod fair_share;
pub mod inspect;
pub mod jobs;
pub mod jwt;
pub mod links;
pub mod maintenance;
pub mod manage;
pub mod openapi;
pub mod publisher;
pub mod queue_depth;
pub mod replies;
pub mod routes;
pub mod serve;
pub mod stats;
pub mod store;
pub mod tasks;
pub mod tenants;
pub mod upload;
pub mod view;
pub mod webhooks;

pub use app::Application;
pub use config::Settings;

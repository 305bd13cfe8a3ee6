//! Operational routes: probes, `/metrics`, `/v1/stats`, and the middleware that counts
//! requests and gives bodiless errors (the request timeout's 408, the router's 405) the
//! JSON every error has.

use std::{collections::BTreeMap, time::Duration};

use axum::{
    Json,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use pixmill_shared::metrics::names;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiQuery, AppState};
use crate::{error::ApiError, openapi::errors::QueryErrors, queue_depth::QueueDepth, stats::Stats};

/// The methods of HTTP (RFC 9110 and PATCH), each its own `method` label.
const STANDARD_METHODS: [&str; 9] = [
    "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
];

/// The `method` label: a standard method as it is, any other one as `other`, so that
/// made-up method names cannot add series without limit.
pub(super) fn method_label(method: &axum::http::Method) -> &'static str {
    STANDARD_METHODS
        .into_iter()
        .find(|m| *m == method.as_str())
        .unwrap_or("other")
}

/// Counts every request by method, matched route and status, and times it. Every label
/// is bounded: the method is one of [`STANDARD_METHODS`] or `other`, the route the
/// matched route template or `unmatched`, never the raw path.
pub(super) async fn count_request(request: Request, next: axum::middleware::Next) -> Response {
    let method = method_label(request.method());
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::HTTP_REQUESTS, "method" => method, "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

/// The Prometheus text exposition of the gateway's metrics.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "operations",
    responses((
        status = 200,
        description = "Prometheus text format 0.0.4",
        content_type = "text/plain",
        body = String,
        example = "# TYPE pixmill_http_requests_total counter\npixmill_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1\n"
    ), crate::openapi::errors::AdminErrors)
)]
pub(super) async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct StatsQuery {
    /// Seconds of history the job figures cover: 10–86400, default 300.
    #[param(value_type = Option<u64>, minimum = 10, maximum = 86400, example = 300)]
    window: Option<String>,
}

/// The operations panel's figures over a window.
///
/// An answer is computed at most once a second per window; calls within that second get
/// the same figures.
///
/// Throughput, failure rate and processing-time percentiles come from the task store (so
/// every gateway on one database shows the same), the queue depth and workers online from
/// the broker.
#[utoipa::path(
    get,
    path = "/v1/stats",
    tag = "operations",
    params(StatsQuery),
    responses((status = 200, description = "The figures", body = StatsView), QueryErrors)
)]
pub(super) async fn stats(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<StatsQuery>,
) -> Result<Json<StatsView>, ApiError> {
    let window = match q.window.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
        None => 300,
        Some(raw) => raw
            .parse::<u64>()
            .ok()
            .filter(|w| (10..=86_400).contains(w))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "window must be between 10 and 86400 seconds (got {raw:?})"
                ))
            })?,
    };
    let stats = state
        .stats
        .get(
            &state.jobs.store,
            state.queue.get(),
            &state.queue.ops(),
            window,
        )
        .await?;
    Ok(Json(stats.into()))
}

/// The body of `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct StatsView {
    /// The window the job figures cover, in seconds.
    pub window_secs: u64,
    /// The jobs queue, as last read from the broker (null before the first read).
    #[schema(required = true)]
    pub queue: Option<QueueView>,
    /// Worker processes consuming the jobs queue (its consumer count).
    #[schema(required = true)]
    pub workers_online: Option<u64>,
    /// Jobs that succeeded or failed in the window.
    pub finished: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Finished jobs per minute over the window.
    pub jobs_per_minute: f64,
    /// Failed / finished over the window (0 when nothing finished).
    #[schema(minimum = 0, maximum = 1)]
    pub failure_rate: f64,
    /// Median processing time of the window's successful jobs, in milliseconds.
    #[schema(required = true)]
    pub processing_ms_p50: Option<u64>,
    /// 95th percentile of the same.
    #[schema(required = true)]
    pub processing_ms_p95: Option<u64>,
    /// True when the window held more jobs than one request reads; the figures then
    /// cover the newest ones.
    pub sampled: bool,
    /// The window's jobs by op (a job of several ops counts once for each), custom ops
    /// first; every registered custom op is listed, with its queue, even without jobs.
    pub ops: Vec<OpView>,
}

/// One op in `GET /v1/stats`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OpView {
    #[schema(example = "posterize")]
    pub op: String,
    /// A custom op (`PIXMILL_OPS_FILE`), served by workers on a queue of its own.
    pub custom: bool,
    /// Jobs using the op that succeeded or failed in the window.
    pub finished: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// A custom op's queue; null for built-in ops, which share the jobs queue.
    #[schema(required = true, example = "pixmill.op.posterize")]
    pub queue: Option<String>,
    /// Messages waiting on a custom op's queue, as last read (null before a reading).
    #[schema(required = true)]
    pub ready: Option<u64>,
    /// Consumers of a custom op's queue: worker processes that serve it.
    #[schema(required = true)]
    pub consumers: Option<u64>,
    /// Set when a custom op's queue has no consumer: its jobs wait until a worker
    /// that serves it starts.
    #[schema(required = true)]
    pub warning: Option<String>,
}

/// The jobs queue as last read from the broker.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct QueueView {
    /// Messages waiting for a worker.
    pub ready: u64,
    /// Messages a worker holds and has not acked yet (null when only AMQP answered).
    #[schema(required = true)]
    pub unacked: Option<u64>,
    /// Consumers: one per connected worker process.
    pub consumers: u64,
    /// Where the figures came from: `amqp+management`, `amqp` (no unacked count), or
    /// `management` (AMQP failed).
    #[schema(value_type = String, example = "amqp+management")]
    pub source: &'static str,
    /// When they were read, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

impl From<Stats> for StatsView {
    fn from(stats: Stats) -> Self {
        let Stats {
            window_secs,
            queue,
            workers_online,
            finished,
            succeeded,
            failed,
            jobs_per_minute,
            failure_rate,
            processing_ms_p50,
            processing_ms_p95,
            sampled,
            ops,
        } = stats;
        StatsView {
            window_secs,
            queue: queue.map(|q| {
                let QueueDepth {
                    ready,
                    unacked,
                    consumers,
                    source,
                    at_ms,
                } = q;
                QueueView {
                    ready,
                    unacked,
                    consumers,
                    source,
                    at_ms,
                }
            }),
            workers_online,
            finished,
            succeeded,
            failed,
            jobs_per_minute,
            failure_rate,
            processing_ms_p50,
            processing_ms_p95,
            sampled,
            ops: ops
                .into_iter()
                .map(|o| OpView {
                    op: o.op,
                    custom: o.custom,
                    finished: o.finished,
                    succeeded: o.succeeded,
                    failed: o.failed,
                    queue: o.queue,
                    ready: o.ready,
                    consumers: o.consumers,
                    warning: o.warning,
                })
                .collect(),
        }
    }
}

/// Gives a bodiless error from below the routes the JSON body every error has: the
/// timeout layer's 408, and the router's 405 for a method a path does not have (the
/// router adds its `Allow` header afterwards).
pub(super) fn json_error_body(response: Response, limit: Duration) -> Response {
    if response.headers().get(header::CONTENT_TYPE).is_some() {
        return response;
    }
    match response.status() {
        StatusCode::REQUEST_TIMEOUT => ApiError::timeout(limit.as_secs()).into_response(),
        StatusCode::METHOD_NOT_ALLOWED => ApiError::method_not_allowed().into_response(),
        _ => response,
    }
}

/// The body of `GET /healthz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Health {
    pub status: Alive,
}

/// Always `ok`: the process answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Alive {
    Ok,
}

/// Liveness: 200 while the process runs.
#[utoipa::path(
    get,
    path = "/healthz",
    tag = "operations",
    responses((status = 200, description = "The process runs", body = Health, example = json!({"status": "ok"})))
)]
pub(super) async fn healthz() -> Json<Health> {
    Json(Health { status: Alive::Ok })
}

/// The body of `GET /readyz`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Readiness {
    pub status: ReadyStatus,
    pub broker: Up,
    /// `host:port` of the broker node the gateway publishes through (of the
    /// `PIXMILL_AMQP_URL` list); null before the first connection, and for callers
    /// without the `admin` scope.
    #[schema(example = "127.0.0.1:5672")]
    pub broker_node: Option<String>,
    /// The task store.
    pub store: Up,
    /// `sqlite` or `postgres`.
    #[schema(value_type = String, example = "postgres")]
    pub store_backend: &'static str,
    /// `folder PATH` or `s3://BUCKET[/PREFIX] at ENDPOINT`, never with credentials. Named,
    /// not probed. Callers without the `admin` scope see only `folder` or `s3`.
    #[schema(example = "s3://pixmill at http://127.0.0.1:58333")]
    pub blob_store: String,
    /// Each background task (reply consumer, change-notice listener, sweeper, webhooks,
    /// queue depth) and whether it runs; one that exited makes the gateway not ready.
    pub tasks: BTreeMap<String, TaskState>,
}

/// `ready` when the broker and the task store respond and every task runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReadyStatus {
    Ready,
    NotReady,
}

/// Whether a dependency responded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Up {
    Ok,
    Unavailable,
}

/// A background task's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    Running,
    Exited,
}

/// The blob store as `/readyz` names it: in full for an admin, by kind otherwise.
fn blob_store(described: String, admin: bool) -> String {
    if admin {
        described
    } else if described.starts_with("s3") {
        "s3".into()
    } else {
        "folder".into()
    }
}

/// Readiness: 200 when the broker, the task store and every background task are up.
///
/// Otherwise 503. The body says which is at fault and names the configured backends.
#[utoipa::path(
    get,
    path = "/readyz",
    tag = "operations",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready: the body says what is at fault", body = Readiness),
        crate::openapi::errors::PresentedKeyErrors,
    )
)]
pub(super) async fn readyz(
    State(state): State<AppState>,
    principal: Option<crate::auth::Principal>,
) -> Response {
    // Internal addresses (the broker node, the blob store's location) only for admins.
    let admin = principal.is_some_and(|p| p.is_admin());
    let (broker, store) = tokio::join!(state.jobs.publisher.ready(), state.jobs.store.ping());
    let up = |up: bool| if up { Up::Ok } else { Up::Unavailable };
    let tasks = state.health.snapshot();
    let ready = broker && store.is_ok() && tasks.values().all(|up| *up);
    let body = Readiness {
        status: if ready {
            ReadyStatus::Ready
        } else {
            ReadyStatus::NotReady
        },
        broker: up(broker),
        broker_node: state.jobs.publisher.node().filter(|_| admin),
        store: up(store.is_ok()),
        store_backend: state.jobs.store.backend(),
        blob_store: blob_store(state.jobs.blobs.describe(), admin),
        tasks: tasks
            .into_iter()
            .map(|(name, up)| {
                let state = if up {
                    TaskState::Running
                } else {
                    TaskState::Exited
                };
                (name.to_string(), state)
            })
            .collect(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use axum::http::Method;

    use super::method_label;

    #[test]
    fn made_up_methods_share_one_label() {
        for standard in [
            "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "CONNECT", "TRACE",
        ] {
            let method = Method::from_bytes(standard.as_bytes()).expect("method");
            assert_eq!(method_label(&method), standard);
        }
        for made_up in ["FOO", "get", "PROPFIND", "BREW", "XYZZYPLUGH"] {
            let method = Method::from_bytes(made_up.as_bytes()).expect("method");
            assert_eq!(method_label(&method), "other", "{made_up}");
        }
    }
}

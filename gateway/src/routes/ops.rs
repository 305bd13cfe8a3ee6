//! Operational routes: probes, `/metrics`, `/v1/stats`, and the middleware that counts
//! requests and gives the request timeout its JSON body.

use std::time::Duration;

use axum::{
    Json,
    extract::{MatchedPath, Query, Request, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use pixmill_shared::metrics::names;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::error::ApiError;

/// Counts every request by method, matched route and status, and times it.
pub(super) async fn count_request(request: Request, next: axum::middleware::Next) -> Response {
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!(names::HTTP_REQUESTS, "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!(names::HTTP_DURATION, "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

pub(super) async fn metrics_text(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.metrics.render(),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct StatsQuery {
    /// Seconds of history the job figures cover (default 300, at most 86400).
    window: Option<u64>,
}

pub(super) async fn stats(
    State(state): State<AppState>,
    Query(q): Query<StatsQuery>,
) -> Result<Json<crate::stats::Stats>, ApiError> {
    let window = q.window.unwrap_or(300);
    if !(10..=86_400).contains(&window) {
        return Err(ApiError::invalid(format!(
            "window must be between 10 and 86400 seconds (got {window})"
        )));
    }
    let stats = crate::stats::compute(&state.jobs.store, state.queue.get(), window).await?;
    Ok(Json(stats))
}

/// The timeout layer answers 408 with no body; give it the JSON every error has.
pub(super) fn timeout_body(response: Response, limit: Duration) -> Response {
    if response.status() == StatusCode::REQUEST_TIMEOUT
        && response.headers().get(header::CONTENT_TYPE).is_none()
    {
        return ApiError::Timeout {
            limit_secs: limit.as_secs(),
        }
        .into_response();
    }
    response
}

pub(super) async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let (broker, store) = tokio::join!(state.jobs.publisher.ready(), state.jobs.store.ping());
    let ok = |up: bool| if up { "ok" } else { "unavailable" };
    let tasks = state.health.snapshot();
    let ready = broker && store.is_ok() && tasks.values().all(|up| *up);
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "broker": ok(broker),
        "store": ok(store.is_ok()),
        "store_backend": state.jobs.store.backend(),
        "blob_store": state.jobs.blobs.describe(),
        "tasks": tasks.iter().map(|(name, up)| (name.to_string(), json!(if *up { "running" } else { "exited" }))).collect::<serde_json::Map<_, _>>(),
    });
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

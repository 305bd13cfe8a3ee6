//! HTTP routes. Handlers are thin: parsing and shaping only; the work is in [`Jobs`].

use std::time::Duration;

use axum::{
    Json, Router,
    body::Body,
    extract::{DefaultBodyLimit, MatchedPath, Path, Query, Request, State},
    http::{HeaderValue, StatusCode, header},
    response::{Html, IntoResponse, Response},
    routing::get,
};
use serde::Deserialize;
use serde_json::{Value, json};
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};

use pixmill_shared::metrics::Event;

use crate::{
    config::MAX_WAIT_SECS,
    error::ApiError,
    jobs::{Jobs, Submitted},
    store::{Job, State as JobState},
    upload,
};

mod listing;
mod ops;

pub use listing::MAX_PAGE;

/// The upload page: one static file, no build step.
const PAGE: &str = include_str!("../../static/index.html");

/// Route state: the jobs service plus the upload limit the body reader enforces.
#[derive(Debug, Clone)]
pub struct AppState {
    pub jobs: Jobs,
    pub max_upload_bytes: u64,
    /// Answer result downloads with a presigned redirect valid this long (S3 only).
    pub result_redirect: Option<Duration>,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The jobs queue's depth, as last read from the broker.
    pub queue: crate::queue_depth::Latest,
    /// Which background tasks are running.
    pub health: crate::tasks::TaskHealth,
}

/// Builds the router. Tests can drive it with `oneshot`, without a socket.
pub fn app(state: AppState, request_timeout: Duration) -> Router {
    // The body reader counts the image bytes itself; this outer cap only bounds the
    // multipart framing and small fields around it.
    let body_cap = usize::try_from(state.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    Router::new()
        .route("/", get(page))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics_text))
        .route("/v1/stats", get(ops::stats))
        .route(
            "/v1/jobs",
            axum::routing::post(submit)
                .layer(DefaultBodyLimit::max(body_cap))
                .get(listing::list),
        )
        .route("/v1/jobs/{id}", get(status).delete(cancel))
        .route("/v1/jobs/{id}/result", get(result))
        .route("/v1/jobs/{id}/events", get(crate::sse::job_events))
        .fallback(not_found)
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(axum::middleware::map_response(
            move |response: Response| async move { ops::timeout_body(response, request_timeout) },
        ))
        .layer(axum::middleware::from_fn(ops::count_request))
        .layer(
            TraceLayer::new_for_http().make_span_with(|request: &Request| {
                let path = request
                    .extensions()
                    .get::<MatchedPath>()
                    .map_or(request.uri().path(), MatchedPath::as_str);
                tracing::info_span!("http", method = %request.method(), path)
            }),
        )
        .with_state(state)
}

async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::NotFound(request.uri().path().to_string())
}

async fn submit(State(state): State<AppState>, request: Request) -> Result<Response, ApiError> {
    let key = idempotency_key(request.headers())?;
    let submission = upload::read(request, state.max_upload_bytes).await?;
    let (job, replayed) = match state.jobs.submit(submission, key).await? {
        Submitted::Created(job) => (job, false),
        Submitted::Replayed(job) => (job, true),
    };
    let location = format!("/v1/jobs/{}", job.id);
    let mut response = (StatusCode::ACCEPTED, Json(view(&job))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The optional `Idempotency-Key` header: 1–255 visible ASCII characters.
fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .map(str::trim)
        .filter(|k| (1..=255).contains(&k.len()) && k.bytes().all(|b| b.is_ascii_graphic()))
        .map(|k| Some(k.to_string()))
        .ok_or_else(|| {
            ApiError::bad_request(
                "invalid_idempotency_key",
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })
}

async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let job = state.jobs.cancel(&id).await?;
    Ok(Json(view(&job)))
}

#[derive(Debug, Deserialize)]
struct WaitQuery {
    /// Seconds to long-poll for a terminal state (capped at 30).
    wait: Option<String>,
}

async fn status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(q): Query<WaitQuery>,
) -> Result<Json<Value>, ApiError> {
    let wait = match q.wait.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
        None => 0.0,
        Some(w) => w
            .parse::<f64>()
            .ok()
            .filter(|w| w.is_finite() && *w >= 0.0)
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "wait must be a number of seconds from 0 to {MAX_WAIT_SECS} (got {w:?})"
                ))
            })?,
    };
    let wait = Duration::from_secs_f64(wait.min(MAX_WAIT_SECS as f64));
    let job = state.jobs.wait(&id, wait).await?;
    if job.state == JobState::Expired {
        // 410 with the job's record, so a client sees what it was and that it is gone.
        let mut body = view(&job);
        body["error"] =
            json!({"code": "expired", "message": crate::jobs::expired(job.id).to_string()});
        return Err(ApiError::GoneWith(body));
    }
    Ok(Json(view(&job)))
}

async fn result(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let job = state.jobs.get(&id).await?;
    if job.result_deleted_at.is_some() {
        return Err(ApiError::Gone {
            code: "result_deleted",
            message: format!("the result of job {} was deleted on request", job.id),
        });
    }
    let meta = match (&job.state, &job.result) {
        (JobState::Expired, _) => return Err(crate::jobs::expired(job.id)),
        (JobState::Succeeded, Some(meta)) => meta,
        (JobState::Cancelled, _) => {
            return Err(ApiError::Conflict {
                code: "job_cancelled",
                message: format!(
                    "job {} was cancelled before it ran; there is no result",
                    job.id
                ),
            });
        }
        (JobState::Failed, _) => {
            let (code, message) = job.error.clone().unwrap_or_default();
            return Err(ApiError::Conflict {
                code: "job_failed",
                message: format!("the job failed ({code}): {message}; there is no result"),
            });
        }
        (state, _) => {
            return Err(ApiError::Conflict {
                code: "not_ready",
                message: format!(
                    "the job is {}; poll /v1/jobs/{} until it has succeeded",
                    state.as_str(),
                    job.id
                ),
            });
        }
    };
    let missing = |e: pixmill_shared::BlobError| {
        if e.is_not_found() {
            ApiError::Conflict {
                code: "result_missing",
                message: "the result is no longer stored".into(),
            }
        } else {
            ApiError::Unavailable {
                code: "blob_store_unavailable",
                message: format!("the result could not be read: {e}; retry shortly"),
                retry_after_secs: 2,
            }
        }
    };
    if let Some(ttl) = state.result_redirect
        && let Some(url) = state
            .jobs
            .blobs
            .presign_get(&meta.key, ttl)
            .await
            .map_err(missing)?
    {
        let headers = [
            (header::LOCATION, url),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ];
        return Ok((StatusCode::TEMPORARY_REDIRECT, headers).into_response());
    }
    let blob = state.jobs.blobs.stream(&meta.key).await.map_err(missing)?;
    Event::ResultServed {
        job_id: job.id,
        bytes: blob.len,
    }
    .emit();
    let ext = job.format.extension();
    let headers = [
        (header::CONTENT_TYPE, meta.content_type.clone()),
        (header::CONTENT_LENGTH, blob.len.to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"pixmill-{}.{ext}\"", job.id),
        ),
        (
            header::CACHE_CONTROL,
            "private, max-age=86400, immutable".into(),
        ),
    ];
    Ok((headers, Body::from_stream(blob.body)).into_response())
}

/// The JSON shape of a job, as documented in the README.
pub fn view(job: &Job) -> Value {
    json!({
        "id": job.id,
        "state": job.state,
        "steps": job.steps,
        "format": job.format,
        "quality": job.quality,
        "created_at": rfc3339(Some(job.created_at)),
        "updated_at": rfc3339(Some(job.updated_at)),
        "started_at": rfc3339(job.started_at),
        "finished_at": rfc3339(job.finished_at),
        "attempts": job.attempts,
        "worker": job.worker,
        "error": job.error.as_ref().map(|(code, message)| json!({"code": code, "message": message})),
        "result_deleted": job.result_deleted_at.is_some(),
        "result": job.result.as_ref().filter(|_| job.result_deleted_at.is_none() && job.state == JobState::Succeeded).map(|r| json!({
            "content_type": r.content_type,
            "width": r.width,
            "height": r.height,
            "bytes": r.bytes,
            "processing_ms": r.processing_ms,
        })),
        "callback": job.callback,
        "links": {
            "self": format!("/v1/jobs/{}", job.id),
            "result": format!("/v1/jobs/{}/result", job.id),
        },
    })
}

fn rfc3339(ms: Option<i64>) -> Value {
    ms.and_then(|ms| {
        time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()
    })
    .and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    })
    .map_or(Value::Null, Value::String)
}

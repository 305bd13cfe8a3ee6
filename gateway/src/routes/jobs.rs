//! The job routes: submit, status (with long-poll), cancel or delete, result.

use std::time::Duration;

use axum::{
    Json,
    body::Body,
    extract::{Request, State},
    http::{HeaderMap, HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
};
use serde::Deserialize;
use utoipa::IntoParams;

use pixmill_shared::{JobResult, metrics::Event};

use super::{ApiQuery, AppState, Segment, Segments};
use crate::{
    auth::Principal,
    error::{ApiCode, ApiError, insert_rate_limit},
    jobs::{MAX_WAIT_SECS, Submitted},
    links::{DEFAULT_TTL_SECS, now_secs, result_cache_control},
    openapi::{
        errors::{CancelErrors, ResultErrors, StatusErrors, SubmitErrors},
        schemas::{ImageBytes, JobParams, SubmitForm},
    },
    store::{Job, JobError, JobState, Scope},
    upload,
    view::{JobErrorView, JobView, view},
};

/// Submits a job.
///
/// The answer comes once the broker has confirmed the job: it is on a durable queue and
/// will run.
///
/// Send multipart form data with an `image` file and either `op` with that op's
/// parameters as plain fields, or `steps` as a JSON array; or send the raw image as the
/// body with the same parameters in the query string. The format is read from the bytes,
/// not from the file name or `Content-Type`, and EXIF orientation is applied.
#[utoipa::path(
    post,
    path = "/v1/jobs",
    tag = "jobs",
    params(
        (
            "Idempotency-Key" = Option<String>, Header, nullable = false,
            description = "1–255 visible ASCII characters. A retry with the same key and \
                the same request (image and parameters) gets the same job back, with \
                `Idempotent-Replayed: true`; the same key with another request gets 422 \
                `idempotency_key_reused`.",
            min_length = 1, max_length = 255, pattern = "^[!-~]+$", example = "order-1234-thumb"
        ),
        JobParams,
    ),
    request_body(
        description = "The image, as the `image` field of a form (with the parameters as \
            fields) or as the whole body (with the parameters in the query string).",
        content(
            (SubmitForm = "multipart/form-data"),
            (ImageBytes = "application/octet-stream"),
            (ImageBytes = "image/jpeg"),
            (ImageBytes = "image/png"),
            (ImageBytes = "image/webp"),
            (ImageBytes = "image/gif"),
        )
    ),
    responses(
        (
            status = 202, description = "Accepted: the broker has the job", body = JobView,
            headers(
                ("Location" = String, description = "The job, `/v1/jobs/{id}`"),
                ("Idempotent-Replayed" = String, description = "`true` when an `Idempotency-Key` retry returned the job it created before"),
            )
        ),
        SubmitErrors,
    )
)]
pub(super) async fn submit(
    State(state): State<AppState>,
    principal: Principal,
    request: Request,
) -> Result<Response, ApiError> {
    let key = idempotency_key(request.headers())?;
    let limits = state.jobs.tenants.limits(&principal.tenant).await;
    // The upload's share of PIXMILL_UPLOAD_BUDGET_BYTES, held until its blob is stored
    // (or it is refused).
    let mut held = state.admission.uploads.reservation();
    let submission = upload::read(request, state.max_upload_bytes, &mut held).await?;
    // The rate after the body is read: an HTTP/1.1 client still sending its upload
    // may not see an answer sent before then (the connection closes under it).
    let rate = state.jobs.tenants.check_rate(&principal.tenant, &limits)?;
    let (job, replayed) = match state
        .jobs
        .submit(&principal.tenant, &limits, submission, held, key)
        .await?
    {
        Submitted::Created(job) => (job, false),
        Submitted::Replayed(job) => (job, true),
    };
    let location = format!("/v1/jobs/{}", job.id);
    let mut response = (StatusCode::ACCEPTED, Json(view(&job, &principal.tenant))).into_response();
    if let Ok(value) = HeaderValue::from_str(&location) {
        response.headers_mut().insert(header::LOCATION, value);
    }
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some((policy, now)) = &rate.0 {
        insert_rate_limit(response.headers_mut(), policy, now);
    }
    Ok(response)
}

/// The optional `Idempotency-Key` header: 1–255 visible ASCII characters.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
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
            ApiError::new(
                ApiCode::InvalidIdempotencyKey,
                "Idempotency-Key must be 1 to 255 visible ASCII characters",
            )
        })
}

/// Cancels a queued job, or deletes a finished job's result and upload.
///
/// The answer is the job's record.
///
/// A `queued` job becomes `cancelled` and never runs: the cancellation is stored next to
/// the job's files, so a worker that receives it later skips it. A `running` job cannot
/// be cancelled. For a finished job the result and upload are removed, and `/result`
/// answers 410 `result_deleted` from then on.
#[utoipa::path(
    delete,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job id")),
    responses(
        (status = 200, description = "The job, cancelled or with its result deleted", body = JobView),
        CancelErrors,
    )
)]
pub(super) async fn cancel(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
) -> Result<Json<JobView>, ApiError> {
    let job = state.jobs.cancel(&principal.scope(), &id).await?;
    Ok(Json(view(&job, &principal.tenant)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct WaitQuery {
    /// Long-poll: answer as soon as the job is terminal, or after this many seconds (at
    /// most 30; fractions allowed) with its current state.
    #[param(value_type = Option<f64>, minimum = 0, maximum = 30, example = 30)]
    wait: Option<String>,
}

/// A job's record. With `?wait=N`, a long-poll.
///
/// Any gateway may answer: a long-poll wakes when whichever gateway applied the change
/// says so on `pixmill.events`, and re-reads the job after 2 s, 6 s, 14 s and 30 s in any
/// case. An id that
/// does not exist, or is not a UUID, gets 404.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}",
    tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job id"), WaitQuery),
    responses(
        (status = 200, description = "The job", body = JobView),
        (
            status = 410,
            description = "Gone: the job finished longer ago than the retention period; \
                its record, with `error.code` `expired`",
            body = JobView
        ),
        StatusErrors,
    )
)]
pub(super) async fn status(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
    ApiQuery(q): ApiQuery<WaitQuery>,
) -> Result<Response, ApiError> {
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
    // A long-poll holds one of PIXMILL_MAX_WATCHERS slots while it waits.
    let _slot = (!wait.is_zero())
        .then(|| state.admission.watchers.admit())
        .transpose()?;
    let job = state.jobs.wait(&principal.scope(), &id, wait).await?;
    if job.state == JobState::Expired {
        // 410 with the job's record, so a client sees what it was and that it is gone.
        let mut body = view(&job, &principal.tenant);
        body.error = Some(JobErrorView {
            code: ApiCode::Expired.as_str().into(),
            message: crate::jobs::expired(job.id).to_string(),
        });
        return Ok((StatusCode::GONE, Json(body)).into_response());
    }
    let mut body = view(&job, &principal.tenant);
    if body.result.is_some() {
        body.links.signed_result = state
            .links
            .sign(job.id, now_secs().saturating_add(DEFAULT_TTL_SECS))
            .map(|link| link.url);
    }
    Ok(Json(body).into_response())
}

/// The result image.
///
/// Streamed from the blob store with `Content-Type` and `Content-Length` set.
///
/// With `PIXMILL_RESULT_REDIRECT_SECS` above 0 (S3 only) the answer is a 307 to a
/// presigned URL valid that many seconds instead; clients must follow it (`curl -L`).
///
/// A signed link (`exp`, `kid` and `sig`, from `POST /v1/jobs/{id}/links`) needs no
/// credential. A request with `sig` is refused with 403 unless its link is good; its
/// answer is not cached past the link's expiry.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/result",
    tag = "jobs",
    params(
        ("id" = uuid::Uuid, Path, description = "The job id"),
        ("exp" = Option<u64>, Query, description = "A signed link's expiry, in Unix seconds"),
        ("kid" = Option<String>, Query, description = "The id of the key that signed the link"),
        ("sig" = Option<String>, Query, description = "The link's signature: unpadded base64url HMAC-SHA256"),
    ),
    responses(
        (
            status = 200, description = "The image",
            content(
                (ImageBytes = "image/jpeg"),
                (ImageBytes = "image/png"),
                (ImageBytes = "image/webp"),
            ),
            headers(
                ("Content-Length" = u64, description = "The image's size in bytes"),
                ("Content-Disposition" = String, description = "`inline; filename=\"pixmill-{id}.{ext}\"`"),
                ("Cache-Control" = String, description = "`private, max-age=86400, immutable`; through a signed link, `max-age` is at most the seconds the link has left"),
            )
        ),
        (
            status = 307, description = "Temporary Redirect to a presigned URL (S3 with `PIXMILL_RESULT_REDIRECT_SECS`)",
            headers(
                ("Location" = String, description = "The presigned URL"),
                ("Cache-Control" = String, description = "`no-store`"),
            )
        ),
        ResultErrors,
    )
)]
pub(super) async fn result(
    State(state): State<AppState>,
    principal: Option<Principal>,
    Segment(id): Segment,
    uri: Uri,
) -> Result<Response, ApiError> {
    serve_result(&state, principal, &id, None, &uri).await
}

/// One output of a job with variants.
///
/// Served like the result (streamed, or a 307 to a presigned URL), and opened by the
/// same signed links. `GET /v1/jobs/{id}/result` serves the first output.
#[utoipa::path(
    get,
    path = "/v1/jobs/{id}/result/{name}",
    tag = "jobs",
    params(
        ("id" = uuid::Uuid, Path, description = "The job id"),
        ("name" = String, Path, description = "The variant's name, as the job asked for it"),
        ("exp" = Option<u64>, Query, description = "A signed link's expiry, in Unix seconds"),
        ("kid" = Option<String>, Query, description = "The id of the key that signed the link"),
        ("sig" = Option<String>, Query, description = "The link's signature: unpadded base64url HMAC-SHA256"),
    ),
    responses(
        (
            status = 200, description = "The image",
            content(
                (ImageBytes = "image/jpeg"),
                (ImageBytes = "image/png"),
                (ImageBytes = "image/webp"),
            ),
            headers(
                ("Content-Length" = u64, description = "The image's size in bytes"),
                ("Content-Disposition" = String, description = "`inline; filename=\"pixmill-{id}-{name}.{ext}\"`"),
                ("Cache-Control" = String, description = "`private, max-age=86400, immutable`; through a signed link, `max-age` is at most the seconds the link has left"),
            )
        ),
        (
            status = 307, description = "Temporary Redirect to a presigned URL (S3 with `PIXMILL_RESULT_REDIRECT_SECS`)",
            headers(
                ("Location" = String, description = "The presigned URL"),
                ("Cache-Control" = String, description = "`no-store`"),
            )
        ),
        ResultErrors,
    )
)]
pub(super) async fn output(
    State(state): State<AppState>,
    principal: Option<Principal>,
    Segments(id, name): Segments,
    uri: Uri,
) -> Result<Response, ApiError> {
    serve_result(&state, principal, &id, Some(&name), &uri).await
}

/// Serves the result of job `id`, or its output `name`.
async fn serve_result(
    state: &AppState,
    principal: Option<Principal>,
    id: &str,
    name: Option<&str>,
    uri: &Uri,
) -> Result<Response, ApiError> {
    // A link that verifies names its job and opens that job's results to whoever holds
    // it; the edge lets a request with `sig` and `exp` through without a key for this.
    let (scope, link_exp) = match (super::links::checked(state, id, uri)?, principal) {
        (Some(exp), _) => (Scope::All, Some(exp)),
        (None, Some(principal)) => (principal.scope(), None),
        (None, None) => return Err(crate::auth::layer::credential_missing()),
    };
    let job = state.jobs.get(&scope, id).await?;
    let meta = stored_result(&job)?;
    let (key, content_type, filename) = match name {
        None => (
            meta.key.as_str(),
            meta.content_type.as_str(),
            format!("pixmill-{}.{}", job.id, job.format.extension()),
        ),
        Some(name) => {
            let Some((output, variant)) = meta
                .outputs
                .iter()
                .zip(&job.variants)
                .find(|(o, _)| o.name == name)
            else {
                let known: Vec<&str> = job.variants.iter().map(|v| v.name.as_str()).collect();
                return Err(ApiError::new(
                    ApiCode::NotFound,
                    if known.is_empty() {
                        format!(
                            "job {} has no variants; its result is at /v1/jobs/{}/result",
                            job.id, job.id
                        )
                    } else {
                        format!(
                            "job {} has no output named {name:?}; it has {}",
                            job.id,
                            known.join(", ")
                        )
                    },
                ));
            };
            (
                output.key.as_str(),
                output.content_type.as_str(),
                format!("pixmill-{}-{name}.{}", job.id, variant.format.extension()),
            )
        }
    };
    let missing = |e: pixmill_shared::BlobError| {
        if e.is_not_found() {
            ApiError::new(ApiCode::ResultMissing, "the result is no longer stored")
        } else {
            crate::jobs::blob_unavailable("the result could not be read", &e)
        }
    };
    // A presigned URL outlives no link it was reached through.
    let redirect = state.result_redirect.map(|ttl| match link_exp {
        Some(exp) => ttl.min(Duration::from_secs(exp.saturating_sub(now_secs()).max(1))),
        None => ttl,
    });
    if let Some(ttl) = redirect
        && let Some(url) = state
            .jobs
            .blobs
            .presign_get(key, ttl)
            .await
            .map_err(missing)?
    {
        let headers = [
            (header::LOCATION, url),
            (header::CACHE_CONTROL, "no-store".to_string()),
        ];
        return Ok((StatusCode::TEMPORARY_REDIRECT, headers).into_response());
    }
    let blob = state.jobs.blobs.stream(key).await.map_err(missing)?;
    Event::ResultServed {
        job_id: job.id,
        bytes: blob.len,
    }
    .emit();
    let headers = [
        (header::CONTENT_TYPE, content_type.to_string()),
        (header::CONTENT_LENGTH, blob.len.to_string()),
        (
            header::CONTENT_DISPOSITION,
            format!("inline; filename=\"{filename}\""),
        ),
        (
            header::CACHE_CONTROL,
            result_cache_control(link_exp, now_secs()),
        ),
    ];
    Ok((headers, Body::from_stream(blob.body)).into_response())
}

/// The stored result of the job, or the answer that says why there is none.
pub(super) fn stored_result(job: &Job) -> Result<&JobResult, ApiError> {
    if job.result_deleted_at.is_some() {
        return Err(ApiError::new(
            ApiCode::ResultDeleted,
            format!("the result of job {} was deleted on request", job.id),
        ));
    }
    let meta = match (&job.state, &job.result) {
        (JobState::Expired, _) => return Err(crate::jobs::expired(job.id)),
        (JobState::Succeeded, Some(meta)) => meta,
        (JobState::Cancelled, _) => {
            return Err(ApiError::new(
                ApiCode::JobCancelled,
                format!(
                    "job {} was cancelled before it ran; there is no result",
                    job.id
                ),
            ));
        }
        (JobState::Failed, _) => {
            let JobError { code, message } = job.error.clone().unwrap_or_default();
            return Err(ApiError::new(
                ApiCode::JobFailed,
                format!("the job failed ({code}): {message}; there is no result"),
            ));
        }
        (state, _) => {
            return Err(ApiError::new(
                ApiCode::NotReady,
                format!(
                    "the job is {}; poll /v1/jobs/{} until it has succeeded",
                    state.as_str(),
                    job.id
                ),
            ));
        }
    };
    Ok(meta)
}

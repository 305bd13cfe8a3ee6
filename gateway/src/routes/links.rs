//! Signed result links: minting one, and checking the one a result request carries.

use axum::{
    Json,
    body::Body,
    extract::{Query, State},
    http::Uri,
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiQuery, AppState, Segment, jobs::stored_result};
use crate::{
    auth::Principal,
    error::{ApiCode, ApiError},
    links::{DEFAULT_TTL_SECS, LinkParts, MAX_TTL_SECS, now_secs, rfc3339},
    openapi::errors::LinkErrors,
};

/// The largest body a mint request may have: `{"ttl": 604800}` with room to spare.
const MAX_BODY_BYTES: usize = 1024;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct TtlQuery {
    /// How long the link is valid, in seconds: 1 to 604800 (7 days). It wins over the
    /// body's `ttl`; 3600 when neither names one.
    #[param(value_type = Option<u64>, minimum = 1, maximum = 604800, example = 600)]
    ttl: Option<String>,
}

/// The optional body of `POST /v1/jobs/{id}/links`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// How long the link is valid, in seconds: 1 to 604800 (7 days); 3600 when not given.
    #[schema(minimum = 1, maximum = 604800, example = 600)]
    ttl: Option<u64>,
}

/// A signed link to a job's result.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SignedLinkView {
    /// The result's path with `exp`, `kid` and `sig`, relative to the gateway. It needs
    /// no credential.
    #[schema(
        example = "/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27/result?exp=1764583800&kid=k1&sig=c2lnbmF0dXJl"
    )]
    pub url: String,
    /// When the link stops working (RFC 3339, UTC).
    #[schema(example = "2025-12-01T10:10:00Z")]
    pub expires_at: String,
}

/// Mints a signed link to the job's result.
///
/// The link fetches the result without a credential until it expires, so it can go in
/// an `<img src>` or be shared. It is signed with the first key of `PIXMILL_LINK_KEYS`;
/// with none set, links are off (409 `links_disabled`). A job that is still queued or
/// running gets a link too: it answers 409 `not_ready` until the job has succeeded.
/// Minting stores nothing: a link cannot be revoked, only its key retired.
#[utoipa::path(
    post,
    path = "/v1/jobs/{id}/links",
    tag = "jobs",
    params(("id" = uuid::Uuid, Path, description = "The job id"), TtlQuery),
    request_body(
        content = Option<LinkRequest>,
        description = "Optional: the link's life, instead of the `ttl` query parameter.",
        content_type = "application/json"
    ),
    responses(
        (status = 200, description = "The link", body = SignedLinkView),
        LinkErrors,
    )
)]
pub(super) async fn mint(
    State(state): State<AppState>,
    principal: Principal,
    Segment(id): Segment,
    ApiQuery(q): ApiQuery<TtlQuery>,
    body: Body,
) -> Result<Json<SignedLinkView>, ApiError> {
    if !state.links.is_on() {
        return Err(ApiError::new(
            ApiCode::LinksDisabled,
            "signed links are off on this gateway: set PIXMILL_LINK_KEYS to make them",
        ));
    }
    let ttl = ttl(q.ttl.as_deref(), body).await?;
    let job = state.jobs.get(&principal.scope(), &id).await?;
    // A job that will never have a result gets no link; one still running does.
    if let Err(e) = stored_result(&job)
        && e.code() != ApiCode::NotReady
    {
        return Err(e);
    }
    let link = state
        .links
        .sign(job.id, now_secs().saturating_add(ttl))
        .ok_or_else(|| ApiError::internal("link keys vanished"))?;
    Ok(Json(SignedLinkView {
        url: link.url,
        expires_at: rfc3339(link.exp),
    }))
}

/// The link's life: from the query, else the JSON body, else an hour; 1 s to 7 days.
async fn ttl(query: Option<&str>, body: Body) -> Result<u64, ApiError> {
    let shape = "the body must be empty or a JSON object like {\"ttl\": 600}";
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| ApiError::invalid(shape))?;
    let from_body = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        serde_json::from_slice::<Option<LinkRequest>>(&bytes)
            .map_err(|e| ApiError::invalid(format!("{shape}: {e}")))?
            .and_then(|r| r.ttl)
    };
    let from_query = match query.map(str::trim).filter(|t| !t.is_empty()) {
        None => None,
        Some(t) => Some(t.parse::<u64>().map_err(|_| {
            ApiError::invalid(format!(
                "ttl must be a whole number of seconds from 1 to {MAX_TTL_SECS} (got {t:?})"
            ))
        })?),
    };
    let ttl = from_query.or(from_body).unwrap_or(DEFAULT_TTL_SECS);
    if !(1..=MAX_TTL_SECS).contains(&ttl) {
        return Err(ApiError::invalid(format!(
            "ttl must be from 1 to {MAX_TTL_SECS} seconds (7 days); got {ttl}"
        )));
    }
    Ok(ttl)
}

/// The link a result request carries, checked: its expiry, or `None` when the request
/// has no `sig` (it is not a link). A request with `sig` is refused unless the link is
/// good, whatever else would let it through.
pub(super) fn checked(state: &AppState, id: &str, uri: &Uri) -> Result<Option<u64>, ApiError> {
    let query = Query::<Vec<(String, String)>>::try_from_uri(uri).map_err(|_| {
        ApiError::new(
            ApiCode::LinkInvalid,
            "the query string could not be read as a link",
        )
    })?;
    match LinkParts::from_query(&query)? {
        None => Ok(None),
        Some(parts) => state.links.verify(id, &parts, now_secs()).map(Some),
    }
}

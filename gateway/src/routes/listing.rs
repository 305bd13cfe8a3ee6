//! `GET /v1/jobs`: the listing, newest first, a bounded page at a time.

use axum::{Json, extract::State};
use serde::Deserialize;
use utoipa::IntoParams;

use super::{ApiQuery, AppState};
use crate::{
    auth::Principal,
    error::ApiError,
    openapi::errors::QueryErrors,
    store::{JobState, Scope},
    view::{JobList, schemas::JobStateSchema, view},
};

/// Largest page `GET /v1/jobs` returns.
pub const MAX_PAGE: u32 = 200;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListQuery {
    /// Only jobs in this state.
    #[param(value_type = Option<JobStateSchema>, inline)]
    state: Option<String>,
    /// Jobs per page: 1–200, default 50.
    #[param(value_type = Option<u32>, minimum = 1, maximum = 200, example = 50)]
    limit: Option<String>,
    /// The `next_cursor` of the previous page: `<created_at ms>-<job id>` (empty: the
    /// first page).
    #[param(
        example = "1764583200123-4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27",
        pattern = "^([0-9]{1,18}-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"
    )]
    cursor: Option<String>,
    /// Only this tenant's jobs. For `admin` keys, which see every tenant's jobs; any
    /// other key sees only its own tenant's, and may name only that one.
    #[param(example = "acme")]
    tenant: Option<String>,
}

/// Jobs newest first, optionally in one state, a bounded page at a time.
///
/// The cursor is opaque to clients: pass the previous page's `next_cursor` to get the
/// next page; the last page has `next_cursor` null.
#[utoipa::path(
    get,
    path = "/v1/jobs",
    tag = "jobs",
    params(ListQuery),
    responses((status = 200, description = "One page of jobs", body = JobList), QueryErrors)
)]
pub(super) async fn list(
    State(state): State<AppState>,
    principal: Principal,
    ApiQuery(q): ApiQuery<ListQuery>,
) -> Result<Json<JobList>, ApiError> {
    let filter = match q.state.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => None,
        Some(name) => Some(JobState::parse(name).ok_or_else(|| {
            ApiError::invalid(format!(
                "state must be one of queued, running, succeeded, failed, cancelled, expired (got {name:?})"
            ))
        })?),
    };
    let limit = match q.limit.as_deref().map(str::trim).filter(|s| !s.is_empty()) {
        None => 50,
        Some(raw) => raw
            .parse::<u32>()
            .ok()
            .filter(|n| (1..=MAX_PAGE).contains(n))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "limit must be between 1 and {MAX_PAGE} (got {raw:?})"
                ))
            })?,
    };
    let before = match q.cursor.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(cursor) => Some(parse_cursor(cursor).ok_or_else(|| {
            ApiError::invalid(format!("cursor {cursor:?} is not one this API returned"))
        })?),
    };
    let scope = match q.tenant.as_deref().map(str::trim).filter(|t| !t.is_empty()) {
        None => principal.scope(),
        Some(tenant) if principal.sees(tenant) => Scope::tenant(tenant),
        Some(_) => {
            return Err(crate::auth::layer::scope_needed(
                crate::auth::ApiScope::Admin,
                "listing another tenant's jobs needs the admin scope",
            ));
        }
    };
    let jobs = state.jobs.store.list(&scope, filter, before, limit).await?;
    let next_cursor = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| format!("{}-{}", j.created_at, j.id)))
        .flatten();
    Ok(Json(JobList {
        jobs: jobs
            .iter()
            .map(|job| view(job, &principal.tenant))
            .collect(),
        next_cursor,
    }))
}

fn parse_cursor(cursor: &str) -> Option<(i64, uuid::Uuid)> {
    let (created_at, id) = cursor.split_once('-')?;
    Some((created_at.parse().ok()?, uuid::Uuid::parse_str(id).ok()?))
}

//! `GET /v1/jobs`: the listing, newest first, a bounded page at a time.

use axum::{
    Json,
    extract::{Query, State},
};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{AppState, view};
use crate::{error::ApiError, store::State as JobState};

/// Largest page `GET /v1/jobs` returns.
pub const MAX_PAGE: u32 = 200;

#[derive(Debug, Deserialize)]
pub(super) struct ListQuery {
    state: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

/// `GET /v1/jobs`: jobs newest first, optionally in one state, a bounded page at a time.
/// The cursor is opaque to clients: `<created_at ms>-<job id>` of the page's last job.
pub(super) async fn list(
    State(state): State<AppState>,
    Query(q): Query<ListQuery>,
) -> Result<Json<Value>, ApiError> {
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
    let jobs = state.jobs.store.list(filter, before, limit).await?;
    let next = (jobs.len() == limit as usize)
        .then(|| jobs.last().map(|j| format!("{}-{}", j.created_at, j.id)))
        .flatten();
    Ok(Json(json!({
        "jobs": jobs.iter().map(view).collect::<Vec<_>>(),
        "next_cursor": next,
    })))
}

fn parse_cursor(cursor: &str) -> Option<(i64, uuid::Uuid)> {
    let (created_at, id) = cursor.split_once('-')?;
    Some((created_at.parse().ok()?, uuid::Uuid::parse_str(id).ok()?))
}

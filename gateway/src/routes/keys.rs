//! `/v1/keys`: API keys, for `admin` keys (the edge check requires the scope). The
//! same as `pixmill-gateway keys`, over HTTP.

use std::time::Duration;

use axum::{
    Json,
    body::Bytes,
    extract::State,
    http::StatusCode,
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use super::{ApiQuery, AppState, Segment};
use crate::{
    auth::{self, ApiScope, IssueError, KeyRequest},
    error::{ApiCode, ApiError},
    openapi::errors::{CreateKeyErrors, KeyErrors, ListKeysErrors},
    store::ApiKey,
    view::rfc3339,
};

/// A key as listed: never its secret.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct KeyView {
    /// The public id, the part of the key after `pmk_`.
    #[schema(example = "4f40a8905c1e4d7b")]
    pub id: String,
    /// The tenant whose jobs it acts on.
    #[schema(example = "acme")]
    pub tenant: String,
    /// `jobs:write`, `jobs:read`, `admin`.
    #[schema(example = json!(["jobs:write", "jobs:read"]))]
    pub scopes: Vec<String>,
    #[schema(required = true, example = "ci uploads")]
    pub label: Option<String>,
    /// RFC 3339.
    #[schema(format = DateTime, example = "2025-12-01T10:00:00.123Z")]
    pub created_at: String,
    /// RFC 3339; null: it does not expire.
    #[schema(required = true, format = DateTime)]
    pub expires_at: Option<String>,
    /// RFC 3339; null: it is not revoked.
    #[schema(required = true, format = DateTime)]
    pub revoked_at: Option<String>,
}

impl From<&ApiKey> for KeyView {
    fn from(key: &ApiKey) -> Self {
        KeyView {
            id: key.id.clone(),
            tenant: key.tenant.clone(),
            scopes: key.scopes.clone(),
            label: key.label.clone(),
            created_at: rfc3339(key.created_at),
            expires_at: key.expires_at.map(rfc3339),
            revoked_at: key.revoked_at.map(rfc3339),
        }
    }
}

/// A new key: its record, and the key itself, shown this once.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct NewKeyView {
    /// `pmk_<id>_<secret>`: give it to the client. Only its hash is kept, so it cannot
    /// be shown again.
    #[schema(example = "pmk_4f40a8905c1e4d7b_…")]
    pub key: String,
    #[serde(flatten)]
    pub record: KeyView,
}

/// The body of `POST /v1/keys`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateKey {
    /// 1–64 letters, digits, `-`, `_` and `.`.
    #[schema(example = "acme")]
    pub tenant: String,
    /// Default `["jobs:write", "jobs:read"]`.
    #[schema(example = json!(["jobs:write", "jobs:read"]))]
    #[serde(default)]
    pub scopes: Option<Vec<String>>,
    /// Seconds until it expires; absent: until revoked.
    #[schema(minimum = 1, example = 2_592_000)]
    #[serde(default)]
    pub ttl_secs: Option<u64>,
    /// A note for people, at most 200 bytes.
    #[schema(example = "ci uploads")]
    #[serde(default)]
    pub label: Option<String>,
}

/// Creates an API key. The answer holds the key itself, once.
#[utoipa::path(
    post,
    path = "/v1/keys",
    tag = "keys",
    request_body(content = CreateKey, content_type = "application/json"),
    responses(
        (status = 201, description = "The new key, shown once", body = NewKeyView),
        CreateKeyErrors,
    )
)]
pub(super) async fn create(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Response, ApiError> {
    let request: CreateKey = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the body must be a JSON object: {e}")))?;
    let scopes = match request.scopes {
        None => [ApiScope::JobsWrite, ApiScope::JobsRead].into(),
        Some(names) => ApiScope::parse_list(&names.join(",")).map_err(ApiError::invalid)?,
    };
    let key_request = KeyRequest {
        tenant: request.tenant,
        scopes,
        ttl: request.ttl_secs.map(Duration::from_secs),
        label: request.label,
    };
    let (key, record) = auth::issue(&state.jobs.store, key_request, pixmill_shared::now_ms())
        .await
        .map_err(|e| match e {
            IssueError::Invalid(why) => ApiError::invalid(why),
            IssueError::Store(e) => e.into(),
            IssueError::Random(e) => ApiError::internal(e.to_string()),
        })?;
    tracing::info!(key_id = %record.id, tenant = %record.tenant, "API key created");
    let view = NewKeyView {
        key,
        record: KeyView::from(&record),
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub(super) struct ListKeysQuery {
    /// Only this tenant's keys.
    #[param(example = "acme")]
    tenant: Option<String>,
}

/// The list of keys.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<KeyView>,
}

/// Lists API keys, oldest first, never with their secrets.
#[utoipa::path(
    get,
    path = "/v1/keys",
    tag = "keys",
    params(ListKeysQuery),
    responses((status = 200, description = "The keys", body = KeyList), ListKeysErrors)
)]
pub(super) async fn list(
    State(state): State<AppState>,
    ApiQuery(q): ApiQuery<ListKeysQuery>,
) -> Result<Json<KeyList>, ApiError> {
    let tenant = q.tenant.as_deref().map(str::trim).filter(|t| !t.is_empty());
    let keys = state.jobs.store.list_api_keys(tenant).await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(KeyView::from).collect(),
    }))
}

/// Revokes an API key: every gateway refuses it within 2 seconds. Revoking it again
/// changes nothing.
#[utoipa::path(
    delete,
    path = "/v1/keys/{id}",
    tag = "keys",
    params(("id" = String, Path, description = "The key's public id")),
    responses((status = 200, description = "The key, revoked", body = KeyView), KeyErrors)
)]
pub(super) async fn revoke(
    State(state): State<AppState>,
    Segment(id): Segment,
) -> Result<Json<KeyView>, ApiError> {
    let unknown = || ApiError::new(ApiCode::NotFound, format!("no API key with id {id:?}"));
    if !auth::key::is_id(&id) {
        return Err(unknown());
    }
    let key = state
        .jobs
        .store
        .revoke_api_key(&id, pixmill_shared::now_ms())
        .await?
        .ok_or_else(unknown)?;
    state.auth.authenticator.forget(&id);
    tracing::info!(key_id = %key.id, tenant = %key.tenant, "API key revoked");
    Ok(Json(KeyView::from(&key)))
}

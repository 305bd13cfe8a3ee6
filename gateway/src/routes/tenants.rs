//! `/v1/tenants`: tenants' limits, for `admin` keys. The same as `pixmill-gateway
//! tenants`, over HTTP.

use axum::{Json, body::Bytes, extract::State};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::{AppState, Segment};
use crate::{
    auth, error::ApiError, openapi::errors::TenantErrors, store::TenantLimits,
    tenants::LIMITS_CACHE, view::rfc3339,
};

/// A tenant's limits: its own settings, what applies, and its jobs in flight.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TenantView {
    #[schema(example = "acme")]
    pub name: String,
    /// The limits that apply now: its own where set, else the gateway's defaults.
    pub limits: LimitsView,
    /// Its own settings; null where the default applies.
    pub own: OwnLimits,
    /// Jobs `queued` or `running` now.
    #[schema(example = 12)]
    pub in_flight: u64,
    /// Of those, jobs waiting for their fair share (not yet on the broker's queue).
    #[schema(example = 0)]
    pub held: u64,
    /// When its own settings last changed, RFC 3339; null: never set.
    #[schema(required = true, format = DateTime)]
    pub updated_at: Option<String>,
}

/// Limits in force.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct LimitsView {
    /// Most jobs queued or running at once.
    #[schema(example = 10_000)]
    pub max_inflight: u32,
    /// Submits per second, per gateway; null: no rate limit.
    #[schema(required = true, example = 20.0)]
    pub rate: Option<f64>,
    /// Submits at once above the rate; null with no rate limit.
    #[schema(required = true, example = 40)]
    pub burst: Option<u32>,
}

/// A tenant's own settings, as stored, and the body of `PUT /v1/tenants/{name}`: a
/// field left out keeps its value, null returns it to the default.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct OwnLimits {
    /// 1–10000000.
    #[schema(required = true, minimum = 1, example = 50)]
    #[serde(default, deserialize_with = "present")]
    pub max_inflight: Option<Option<u32>>,
    /// 0 (no rate limit) to 1000000 per second.
    #[schema(required = true, minimum = 0, example = 20.0)]
    #[serde(default, deserialize_with = "present")]
    pub rate: Option<Option<f64>>,
    /// At least 1.
    #[schema(required = true, minimum = 1, example = 40)]
    #[serde(default, deserialize_with = "present")]
    pub burst: Option<Option<u32>>,
}

/// A field that is present (Some), possibly null (Some(None)); absent stays None.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

/// The list of tenants with settings of their own.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TenantList {
    pub tenants: Vec<TenantView>,
}

async fn view_of(
    state: &AppState,
    name: &str,
    own: Option<TenantLimits>,
) -> Result<TenantView, ApiError> {
    let limits = state.jobs.tenants.defaults().apply(own.as_ref());
    let flight = state.jobs.store.in_flight(name).await?;
    Ok(TenantView {
        name: name.to_string(),
        limits: LimitsView {
            max_inflight: limits.max_inflight,
            rate: limits.rate.map(|r| r.per_sec),
            burst: limits.rate.map(|r| r.burst),
        },
        own: OwnLimits {
            max_inflight: own.as_ref().map(|o| o.max_inflight),
            rate: own.as_ref().map(|o| o.rate),
            burst: own.as_ref().map(|o| o.burst),
        },
        in_flight: flight.open,
        held: flight.held,
        updated_at: own.map(|o| rfc3339(o.updated_at)),
    })
}

/// Lists the tenants that have limits of their own.
#[utoipa::path(
    get,
    path = "/v1/tenants",
    tag = "tenants",
    responses((status = 200, description = "The tenants", body = TenantList), TenantErrors)
)]
pub(super) async fn list(State(state): State<AppState>) -> Result<Json<TenantList>, ApiError> {
    let mut tenants = Vec::new();
    for own in state.jobs.store.list_tenants().await? {
        let name = own.name.clone();
        tenants.push(view_of(&state, &name, Some(own)).await?);
    }
    Ok(Json(TenantList { tenants }))
}

/// A tenant's limits and jobs in flight (any tenant name: one without settings of its
/// own has the defaults).
#[utoipa::path(
    get,
    path = "/v1/tenants/{name}",
    tag = "tenants",
    params(("name" = String, Path, description = "The tenant")),
    responses((status = 200, description = "The tenant", body = TenantView), TenantErrors)
)]
pub(super) async fn show(
    State(state): State<AppState>,
    Segment(name): Segment,
) -> Result<Json<TenantView>, ApiError> {
    auth::check_tenant(&name).map_err(ApiError::invalid)?;
    let own = state.jobs.store.get_tenant(&name).await?;
    Ok(Json(view_of(&state, &name, own).await?))
}

/// Sets a tenant's own limits: a field left out keeps its value, null returns it to
/// the default. Every gateway applies the change within 2 seconds.
#[utoipa::path(
    put,
    path = "/v1/tenants/{name}",
    tag = "tenants",
    params(("name" = String, Path, description = "The tenant")),
    request_body(content = OwnLimits, content_type = "application/json"),
    responses((status = 200, description = "The tenant, changed", body = TenantView), TenantErrors)
)]
pub(super) async fn set(
    State(state): State<AppState>,
    Segment(name): Segment,
    body: Bytes,
) -> Result<Json<TenantView>, ApiError> {
    auth::check_tenant(&name).map_err(ApiError::invalid)?;
    let change: OwnLimits = serde_json::from_slice(&body)
        .map_err(|e| ApiError::invalid(format!("the body must be a JSON object: {e}")))?;
    if let Some(Some(max)) = change.max_inflight
        && !(1..=10_000_000).contains(&max)
    {
        return Err(ApiError::invalid(format!(
            "max_inflight must be between 1 and 10000000 (got {max})"
        )));
    }
    if let Some(Some(rate)) = change.rate
        && !(rate.is_finite() && (0.0..=1_000_000.0).contains(&rate))
    {
        return Err(ApiError::invalid(format!(
            "rate must be between 0 (no limit) and 1000000 per second (got {rate})"
        )));
    }
    if let Some(Some(0)) = change.burst {
        return Err(ApiError::invalid("burst must be at least 1 (got 0)"));
    }
    let current = state.jobs.store.get_tenant(&name).await?;
    let limits = TenantLimits::updated(
        &name,
        current,
        change.max_inflight,
        change.rate,
        change.burst,
    );
    state.jobs.store.put_tenant(&limits).await?;
    state.jobs.tenants.forget(&name);
    tracing::info!(tenant = %name, ?limits, "tenant limits set; every gateway applies them within {} s", LIMITS_CACHE.as_secs());
    Ok(Json(view_of(&state, &name, Some(limits)).await?))
}

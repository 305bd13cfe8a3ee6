//! `GET /v1/webhooks/secret`: the caller's tenant's webhook signing secret.

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use crate::{
    auth::Principal,
    error::{ApiCode, ApiError},
    openapi::errors::WebhookSecretErrors,
    webhooks::sign::{SIGNATURE_HEADER, tenant_secret},
};

/// A tenant's webhook secret, and how deliveries carry their signature.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct WebhookSecretView {
    /// The tenant whose deliveries it signs: the caller's.
    #[schema(example = "acme")]
    pub tenant: String,
    /// The HMAC-SHA256 key of the tenant's deliveries: these 64 characters, as text.
    #[schema(
        min_length = 64,
        max_length = 64,
        pattern = "^[0-9a-f]{64}$",
        example = "657570e2705032d94701c4dafa3351e2d790e3b39daee305013391b3e57c88c9"
    )]
    pub secret: String,
    /// The header each delivery's `t=<unix seconds>,v1=<hex HMAC-SHA256>` comes in.
    #[schema(value_type = String, example = "Pixmill-Signature")]
    pub signature_header: &'static str,
}

/// The webhook secret of the caller's tenant.
///
/// Every delivery of the tenant's jobs is signed with this secret and no other, so a
/// receiver checks `Pixmill-Signature` with it, and the secret of one tenant verifies
/// no delivery of another's. It is derived from the gateway's `PIXMILL_WEBHOOK_SECRET`:
/// the same on every gateway, and a new one whenever that changes. Without
/// `PIXMILL_WEBHOOK_SECRET` webhooks are off (409 `webhooks_disabled`).
#[utoipa::path(
    get,
    path = "/v1/webhooks/secret",
    tag = "webhooks",
    responses(
        (
            status = 200, description = "The tenant's secret", body = WebhookSecretView,
            headers(("Cache-Control" = String, description = "`no-store`: the answer holds a secret"))
        ),
        WebhookSecretErrors,
    )
)]
pub(super) async fn secret(
    State(state): State<AppState>,
    principal: Principal,
) -> Result<Response, ApiError> {
    let Some(master) = state.jobs.webhooks.secret.as_deref() else {
        return Err(ApiError::new(
            ApiCode::WebhooksDisabled,
            "webhooks are off on this gateway: set PIXMILL_WEBHOOK_SECRET to sign them",
        ));
    };
    let body = WebhookSecretView {
        secret: tenant_secret(master, &principal.tenant),
        tenant: principal.tenant,
        signature_header: SIGNATURE_HEADER,
    };
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

//! HTTP routes. Handlers are thin: parsing and shaping only; the work is in
//! [`Jobs`](crate::jobs::Jobs), and every job is answered as a [`crate::view::JobView`].
//!
//! [`api`] lists every route once, each handler with its `#[utoipa::path]`. The router
//! ([`app`]) and the OpenAPI document ([`crate::openapi`]) are both built from that list,
//! so no route is served undocumented and none is documented but not served. That makes
//! the one import loop left in the gateway: routes and [`crate::openapi`] name each other,
//! because the router serves the document that is built from its own list of routes.

use std::time::Duration;

use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRequestParts, MatchedPath, Path, Query, Request},
    http::{StatusCode, request::Parts},
    response::{Html, Response},
};
use serde::de::DeserializeOwned;
use tower_http::{timeout::TimeoutLayer, trace::TraceLayer};
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ApiError, jobs::Jobs};

mod browser;
mod docs;
mod events;
mod jobs;
mod keys;
mod links;
mod listing;
mod ops;
mod tenants;
mod webhooks;

pub use keys::{KeyList, KeyView, NewKeyView};
pub use listing::MAX_PAGE;
pub use ops::{Alive, Health, OpView, QueueView, Readiness, ReadyStatus, StatsView, TaskState, Up};
pub use tenants::{LimitsView, OwnLimits, TenantList, TenantView};
pub use webhooks::WebhookSecretView;

/// The upload page: one static file, no build step.
const PAGE: &str = include_str!("../../static/index.html");

/// Route state: the jobs service plus the upload limit the body reader enforces.
#[derive(Debug, Clone)]
pub struct AppState {
    pub jobs: Jobs,
    pub max_upload_bytes: u64,
    /// The upload byte budget and the cap on watchers, shared by every request.
    pub admission: crate::admission::Admission,
    /// Answer result downloads with a presigned redirect valid this long (S3 only).
    pub result_redirect: Option<Duration>,
    /// Renders `/metrics`.
    pub metrics: metrics_exporter_prometheus::PrometheusHandle,
    /// The jobs queue's depth, as last read from the broker.
    pub queue: crate::queue_depth::Latest,
    /// Which background tasks are running.
    pub health: crate::tasks::TaskHealth,
    /// The keys of signed result links (none: links are off).
    pub links: crate::links::LinkKeys,
    /// Who may call: `PIXMILL_AUTH` and the key verifier, for the edge check.
    pub auth: crate::auth::AuthState,
    /// `GET /v1/stats` answers of the last second.
    pub stats: crate::stats::Cache,
}

/// Every route with its documentation. Handlers on one path share one `routes!`.
pub fn api() -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(jobs::submit, listing::list))
        .routes(routes!(jobs::status, jobs::cancel))
        .routes(routes!(jobs::result))
        .routes(routes!(jobs::output))
        .routes(routes!(links::mint))
        .routes(routes!(events::events))
        .routes(routes!(keys::create, keys::list))
        .routes(routes!(keys::revoke))
        .routes(routes!(tenants::list))
        .routes(routes!(tenants::show, tenants::set))
        .routes(routes!(webhooks::secret))
        .routes(routes!(ops::stats))
        .routes(routes!(ops::healthz))
        .routes(routes!(ops::readyz))
        .routes(routes!(ops::metrics_text))
        .routes(routes!(page))
        .routes(routes!(docs::openapi_json))
        .routes(routes!(docs::asyncapi_json))
        .routes(routes!(docs::redirect))
        .routes(routes!(docs::index))
        .routes(routes!(docs::file))
}

/// Builds the router. Tests can drive it with `oneshot`, without a socket.
pub fn app(state: AppState, request_timeout: Duration) -> Router {
    // The body reader counts the image bytes itself; this outer cap only bounds the
    // multipart framing and small fields around it.
    let body_cap = usize::try_from(state.max_upload_bytes)
        .unwrap_or(usize::MAX)
        .saturating_add(1 << 20);
    let (router, _) = api().split_for_parts();
    let auth = state.auth.clone();
    router
        .fallback(not_found)
        // Identity is decided here, once, for every route and the fallback.
        .layer(axum::middleware::from_fn_with_state(
            auth,
            crate::auth::authenticate,
        ))
        // Before identity: a browser tricked by another site's page is refused whatever
        // credential it carries.
        .layer(axum::middleware::from_fn(browser::refuse_cross_site))
        .layer(DefaultBodyLimit::max(body_cap))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            request_timeout,
        ))
        .layer(axum::middleware::map_response(
            move |response: Response| async move {
                ops::json_error_body(response, request_timeout)
            },
        ))
        .layer(axum::middleware::from_fn(ops::count_request))
        .layer(axum::middleware::from_fn(browser::security_headers))
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

/// The upload page: submit images, watch the jobs, see the operations panel.
#[utoipa::path(
    get,
    path = "/",
    tag = "docs",
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
async fn page() -> Html<&'static str> {
    Html(PAGE)
}

async fn not_found(request: Request) -> ApiError {
    ApiError::no_route(request.uri().path())
}

/// A query string, deserialized; a malformed one is the API's 422 (not axum's plain-text
/// 400), naming what could not be read.
pub(crate) struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(q)| ApiQuery(q))
            .map_err(|e| ApiError::invalid(format!("the query string: {}", e.body_text())))
    }
}

/// The one path parameter of a route, as text. A segment that does not decode to UTF-8
/// names nothing here, so it is a 404 like any unknown id.
pub(crate) struct Segment(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segment {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<String>::from_request_parts(parts, state).await {
            Ok(Path(segment)) => Ok(Segment(segment)),
            Err(_) => Err(ApiError::no_route(parts.uri.path())),
        }
    }
}

/// Two path segments, as [`Segment`] reads one: a path that does not parse is a route
/// that does not exist.
pub(crate) struct Segments(pub String, pub String);

impl<S: Send + Sync> FromRequestParts<S> for Segments {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Path::<(String, String)>::from_request_parts(parts, state).await {
            Ok(Path((first, second))) => Ok(Segments(first, second)),
            Err(_) => Err(ApiError::no_route(parts.uri.path())),
        }
    }
}

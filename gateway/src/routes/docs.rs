//! The contracts and their viewer: `GET /openapi.json`, the broker's `GET /asyncapi.json`,
//! and Swagger UI at `/docs/`, served from files compiled into the binary (no network at
//! build or run time).

use std::sync::{Arc, LazyLock};

use axum::{
    extract::State,
    http::header,
    response::{IntoResponse, Redirect, Response},
};
use utoipa_swagger_ui::Config;

use super::{AppState, Segment};
use crate::{error::ApiError, openapi::errors::FileErrors};

/// Swagger UI's settings: one document, this gateway's.
static CONFIG: LazyLock<Arc<Config<'static>>> =
    LazyLock::new(|| Arc::new(Config::from("/openapi.json").try_it_out_enabled(true)));

/// This API's OpenAPI 3.1 document.
#[utoipa::path(
    get,
    path = "/openapi.json",
    tag = "docs",
    responses((status = 200, description = "The document", body = serde_json::Value))
)]
pub(super) async fn openapi_json(State(state): State<AppState>) -> Response {
    let body = if state.jobs.ops.is_empty() {
        crate::openapi::spec_json().to_string()
    } else {
        crate::openapi::spec_json_with(&state.jobs.ops)
    };
    ([(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The broker contract: an AsyncAPI 3.0 document naming every exchange, queue, routing
/// key, header and message this deployment uses, with the JSON Schema of each message
/// body. For writing a worker or a listener in another language (docs/contract.md).
#[utoipa::path(
    get,
    path = "/asyncapi.json",
    tag = "docs",
    responses((status = 200, description = "The AsyncAPI 3.0 document", body = serde_json::Value))
)]
pub(super) async fn asyncapi_json(State(state): State<AppState>) -> Response {
    let document = pixmill_shared::contract::asyncapi_for(
        state.jobs.publisher.topology(),
        &state.jobs.ops.names(),
    );
    (
        [(header::CONTENT_TYPE, "application/json")],
        document.to_string(),
    )
        .into_response()
}

/// Swagger UI lives at `/docs/`, where its relative links resolve.
#[utoipa::path(
    get,
    path = "/docs",
    tag = "docs",
    responses((status = 303, description = "See Other: `/docs/`", headers(("Location" = String))))
)]
pub(super) async fn redirect() -> Redirect {
    Redirect::to("/docs/")
}

/// Swagger UI, rendering `/openapi.json`.
#[utoipa::path(
    get,
    path = "/docs/",
    tag = "docs",
    responses((status = 200, description = "The page", content_type = "text/html", body = String))
)]
pub(super) async fn index() -> Response {
    serve("")
}

/// One of Swagger UI's files (scripts, styles, icons).
#[utoipa::path(
    get,
    path = "/docs/{file}",
    tag = "docs",
    params(("file" = String, Path, description = "A file name", example = "swagger-ui.css")),
    responses(
        (
            status = 200, description = "The file",
            content(
                (String = "text/css"),
                (String = "text/javascript"),
                (String = "application/javascript"),
                (String = "text/html"),
                (String = "image/png"),
                (String = "application/json"),
            )
        ),
        FileErrors,
    )
)]
pub(super) async fn file(Segment(file): Segment) -> Response {
    serve(&file)
}

fn serve(file: &str) -> Response {
    match utoipa_swagger_ui::serve(file, CONFIG.clone()) {
        Ok(Some(found)) => (
            [(header::CONTENT_TYPE, found.content_type)],
            found.bytes.into_owned(),
        )
            .into_response(),
        Ok(None) => ApiError::no_route(&format!("/docs/{file}")).into_response(),
        Err(e) => ApiError::internal(format!("Swagger UI file {file}: {e}")).into_response(),
    }
}

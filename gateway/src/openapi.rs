//! The API contract: an OpenAPI 3.1 document, served at `GET /openapi.json` and rendered
//! by Swagger UI at `/docs/`.
//!
//! Most of it is derived: each handler's `#[utoipa::path]` gives its path, parameters,
//! bodies and answers, and the view types derive their schemas from the structs that are
//! serialized. The router and the document are built from one list of routes
//! ([`crate::routes::api`]), so they cannot disagree. That is why this module and
//! [`crate::routes`] name each other, the gateway's one import loop: the document is
//! built from the router's list of routes, and the router serves the document. This
//! module adds what annotations cannot say well:
//!
//! - [`schemas`]: schemas for the submit parameters (the shared wire types a job shows
//!   are described in [`crate::view::schemas`]);
//! - [`errors`]: each operation's error answers, one example per [`ApiCode`];
//! - [`examples`]: the docs' curl commands (as `x-codeSamples`) and example bodies.

use std::sync::OnceLock;

use utoipa::{OpenApi, openapi::OpenApi as Document};

use axum::http::Method;

use crate::{
    auth::layer::{Need, required_scope},
    error::{ApiCode, ErrorBody, ErrorDetail},
    view::schemas::{JobErrorCode, Op, Step},
};

pub mod errors;
pub mod examples;
pub mod schemas;

/// The parts of the document that belong to no one route.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "pixmill",
        description = "Image jobs over HTTP: upload an image and the steps to apply, get a \
            job id at once, then poll (or long-poll, or stream events) and download the \
            result.\n\nEvery error is JSON, `{\"error\": {\"code\": \"...\", \"message\": \
            \"...\"}}`; the `ApiCode` schema lists every code with its status.",
        license(name = "MIT OR Apache-2.0")
    ),
    tags(
        (name = "jobs", description = "Submit, watch, fetch and delete jobs"),
        (name = "keys", description = "API keys: create, list and revoke them (admin)"),
        (name = "tenants", description = "Tenants' quotas and rates (admin)"),
        (name = "webhooks", description = "The secret that signs a tenant's webhook deliveries"),
        (name = "operations", description = "Probes, metrics and the operations panel's figures"),
        (name = "docs", description = "Pages for people: the upload page, this document and Swagger UI"),
    ),
    components(schemas(
        ErrorBody,
        ErrorDetail,
        ApiCode,
        JobErrorCode,
        Step,
        Op,
    ))
)]
pub struct ApiDoc;

/// Builds the document from the routes, and returns it with the list of additions that
/// found no place (an example for an operation that does not exist, say); a test keeps
/// that list empty.
pub fn build() -> (Document, Vec<String>) {
    let (_, mut document) = crate::routes::api().split_for_parts();
    let problems = examples::apply(&mut document);
    secure(&mut document);
    (document, problems)
}

/// The security scheme (`Authorization: Bearer pmk_…`) and, per operation, the scope it
/// needs: from [`required_scope`], the table the edge check itself uses.
fn secure(document: &mut Document) {
    use utoipa::openapi::security::{
        HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme,
    };
    document
        .components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("pmk_<id>_<secret>")
                    .description(Some(
                        "An API key from `pixmill-gateway keys create` or `POST /v1/keys`. \
                         Needed on every API route with PIXMILL_AUTH=required; with \
                         PIXMILL_AUTH=open a request without one acts as the tenant `local` \
                         with every scope. Each operation names the scope it needs \
                         (`admin` holds them all).",
                    ))
                    .build(),
            ),
        );
    for (path, item) in document.paths.paths.iter_mut() {
        let operations = [
            (Method::GET, &mut item.get),
            (Method::POST, &mut item.post),
            (Method::PUT, &mut item.put),
            (Method::DELETE, &mut item.delete),
        ];
        for (method, operation) in operations {
            let Some(operation) = operation else { continue };
            let bearer = |scopes: Vec<&str>| SecurityRequirement::new("bearer", scopes);
            // A route that a signed link opens (`exp` and `sig` in the query) takes the
            // link instead of a key: no bearer is required there.
            let by_link = required_scope(&method, path, Some("exp=0&sig=")) == Need::Optional;
            operation.security = match required_scope(&method, path, None) {
                Need::Nothing => None,
                Need::Optional => Some(vec![SecurityRequirement::default(), bearer(vec![])]),
                Need::Identified => Some(vec![bearer(vec![])]),
                Need::Scope(scope) if by_link => Some(vec![
                    bearer(vec![scope.as_str()]),
                    SecurityRequirement::default(),
                ]),
                Need::Scope(scope) => Some(vec![bearer(vec![scope.as_str()])]),
            };
        }
    }
}

/// The document, built once.
pub fn spec() -> &'static Document {
    static SPEC: OnceLock<Document> = OnceLock::new();
    SPEC.get_or_init(|| build().0)
}

/// The document with the custom ops `ops` (`PIXMILL_OPS_FILE`) in it: each op's step
/// is a `Step` like the built-in ones (its parameters' JSON Schema with the `op` field),
/// and `x-pixmill-custom-ops` lists the ops with their descriptions (the upload page
/// builds its forms from it).
pub fn spec_json_with(ops: &crate::custom_ops::CustomOps) -> String {
    use serde_json::{Value, json};
    let mut doc: Value = serde_json::from_str(spec_json()).unwrap_or_default();
    let mut listed = Vec::new();
    for op in ops.iter() {
        let mut schema = op.params.clone();
        schema["title"] = json!(op.name);
        schema["description"] = json!(if op.description.is_empty() {
            format!("The custom op `{}`.", op.name)
        } else {
            format!("{} (custom op)", op.description)
        });
        if !schema["properties"].is_object() {
            schema["properties"] = json!({});
        }
        schema["properties"]["op"] = json!({"type": "string", "enum": [op.name]});
        let mut required = schema["required"].as_array().cloned().unwrap_or_default();
        required.insert(0, json!("op"));
        schema["required"] = Value::Array(required);
        let name = format!("CustomStep_{}", op.name);
        doc["components"]["schemas"][&name] = schema;
        if let Some(variants) = doc["components"]["schemas"]["Step"]["oneOf"].as_array_mut() {
            variants.push(json!({"$ref": format!("#/components/schemas/{name}")}));
        }
        listed.push(json!({
            "name": op.name,
            "description": op.description,
            "params": op.params,
        }));
    }
    doc["x-pixmill-custom-ops"] = Value::Array(listed);
    serde_json::to_string_pretty(&doc).unwrap_or_else(|_| spec_json().to_string())
}

/// The document as JSON, serialized once.
pub fn spec_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| spec().to_pretty_json().unwrap_or_else(|_| "{}".into()))
}

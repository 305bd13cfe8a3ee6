//! The contract, held to the router, the code and the docs.
//!
//! - every (method, path) in `/openapi.json` is routed (no fallback 404, no 405), and
//!   that set is the route table of docs/api.md;
//! - each route's answer to a plain request is documented for its status, with its
//!   content type, and its JSON body matches the documented schema;
//! - the error codes of docs/api.md's table, of `ApiCode` and of the document agree, every
//!   code is answered with its status, and every code has an example;
//! - every curl command and JSON example in the API sections of the README and docs/api.md
//!   (and in any section titled by a route) is in the document.
//!
//! The app is built without a broker: nothing here publishes (the broker URL points at a
//! closed port, so `/readyz` answers 503, which is documented too).

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

use axum::{
    body::Body,
    http::{Method, Request, StatusCode, header},
    response::IntoResponse,
};
use pixmill_gateway::{
    error::{ApiCode, ApiError},
    events::{JobEvents, Notifier},
    jobs::Jobs,
    openapi,
    publisher::Publisher,
    routes::{AppState, app},
    store::{self, DatabaseUrl},
};
use pixmill_shared::{BlobUrl, Blobs, Limits, Topology};
use serde_json::Value;
use tower::ServiceExt;

const README: &str = include_str!("../../README.md");
/// The API reference: the route table, the error table and every example.
const API: &str = include_str!("../../docs/api.md");
/// Operations, where `GET /v1/stats` is described under Metrics.
const OPERATIONS: &str = include_str!("../../docs/operations.md");

fn spec() -> Value {
    serde_json::from_str(openapi::spec_json()).expect("the document is JSON")
}

/// A scratch folder for one app's stores, removed when dropped.
struct Scratch(std::path::PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The app on a SQLite store and a blob folder in a scratch folder, which lives as long
/// as the returned guard.
async fn router() -> (axum::Router, Scratch) {
    let dir = std::env::temp_dir().join(format!("pixmill-openapi-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let store = store::open(&DatabaseUrl::Sqlite(dir.join("pixmill.db")))
        .await
        .expect("sqlite");
    let blobs = Blobs::open(&BlobUrl::Folder(dir.join("blobs"))).expect("blobs");
    let publisher = Arc::new(
        Publisher::new(
            "amqp://guest:guest@127.0.0.1:9/%2f",
            Topology::with_prefix("openapi-test"),
            Duration::from_millis(200),
        )
        .expect("publisher"),
    );
    let jobs = Jobs {
        published: pixmill_gateway::jobs::PublishedMarks::start(store.clone()),
        tenants: pixmill_gateway::tenants::Tenants::new(store.clone(), Default::default()),
        fair_share: pixmill_gateway::fair_share::FairShare::new(None),
        store,
        blobs,
        notifier: Notifier::new(JobEvents::default(), publisher.clone(), "test".into()),
        publisher,
        limits: Limits::default(),
        ops: Default::default(),
        webhooks: Default::default(),
    };
    let auth = pixmill_gateway::auth::AuthState::new(
        pixmill_gateway::auth::AuthMode::Open,
        jobs.store.clone(),
    );
    let state = AppState {
        auth,
        jobs,
        max_upload_bytes: 1 << 20,
        admission: Default::default(),
        result_redirect: None,
        metrics: pixmill_shared::metrics::install(),
        queue: Default::default(),
        health: Default::default(),
        links: Default::default(),
        stats: Default::default(),
    };
    (app(state, Duration::from_secs(10)), Scratch(dir))
}

/// `(METHOD, path)` for every operation in the document.
fn operations(spec: &Value) -> BTreeSet<(String, String)> {
    let mut out = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for method in item.as_object().expect("path item").keys() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
    }
    out
}

/// Resolves a local `$ref`.
fn resolve<'a>(spec: &'a Value, schema: &'a Value) -> &'a Value {
    match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => {
            let name = reference
                .strip_prefix("#/components/schemas/")
                .expect("local ref");
            let target = &spec["components"]["schemas"][name];
            assert!(!target.is_null(), "dangling {reference}");
            resolve(spec, target)
        }
        None => schema,
    }
}

/// A small JSON Schema check (the subset the document uses): type, enum, properties,
/// required, items, oneOf, additionalProperties, minimum and maximum. Returns what does
/// not match.
fn check(spec: &Value, schema: &Value, value: &Value, at: &str, problems: &mut Vec<String>) {
    let schema = resolve(spec, schema);
    if let Some(options) = schema.get("oneOf").and_then(Value::as_array) {
        let fits = options.iter().filter(|o| {
            let mut p = Vec::new();
            check(spec, o, value, at, &mut p);
            p.is_empty()
        });
        if fits.count() != 1 {
            problems.push(format!(
                "{at}: {value} matches not exactly one of {options:?}"
            ));
        }
        return;
    }
    if let Some(types) = schema.get("type") {
        let types: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(ts) => ts.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        };
        let actual = match value {
            Value::Null => "null",
            Value::Bool(_) => "boolean",
            Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
            Value::Number(_) => "number",
            Value::String(_) => "string",
            Value::Array(_) => "array",
            Value::Object(_) => "object",
        };
        let ok = types.contains(&actual) || (actual == "integer" && types.contains(&"number"));
        if !ok {
            problems.push(format!("{at}: {value} is {actual}, not {types:?}"));
            return;
        }
    }
    if let Some(values) = schema.get("enum").and_then(Value::as_array)
        && !values.contains(value)
    {
        problems.push(format!("{at}: {value} is not one of {values:?}"));
    }
    if let Some(n) = value.as_f64() {
        if let Some(min) = schema.get("minimum").and_then(Value::as_f64)
            && n < min
        {
            problems.push(format!("{at}: {n} < minimum {min}"));
        }
        if let Some(max) = schema.get("maximum").and_then(Value::as_f64)
            && n > max
        {
            problems.push(format!("{at}: {n} > maximum {max}"));
        }
    }
    if let Value::Array(items) = value
        && let Some(item_schema) = schema.get("items")
    {
        for (i, item) in items.iter().enumerate() {
            check(spec, item_schema, item, &format!("{at}[{i}]"), problems);
        }
    }
    if let Value::Object(object) = value {
        let properties = schema.get("properties").and_then(Value::as_object);
        for required in schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
        {
            if !object.contains_key(required) {
                problems.push(format!("{at}: `{required}` is required but missing"));
            }
        }
        for (key, field) in object {
            match (
                properties.and_then(|p| p.get(key)),
                schema.get("additionalProperties"),
            ) {
                (Some(field_schema), _) => {
                    check(spec, field_schema, field, &format!("{at}.{key}"), problems)
                }
                (None, Some(extra)) if extra.is_object() => {
                    check(spec, extra, field, &format!("{at}.{key}"), problems)
                }
                (None, _) if properties.is_some() => {
                    problems.push(format!("{at}: `{key}` is not in the schema"))
                }
                _ => {}
            }
        }
    }
}

/// A request for the operation, with its path parameters filled in.
fn request(method: &str, path: &str) -> Request<Body> {
    let uri = path
        .replace("{id}", "00000000-0000-4000-8000-000000000000")
        .replace("{file}", "swagger-ui.css");
    Request::builder()
        .method(Method::from_bytes(method.as_bytes()).expect("method"))
        .uri(uri)
        .body(Body::empty())
        .expect("request")
}

/// Every operation is served, and its answer to a plain request is documented: status,
/// content type, and (for JSON) the body's schema.
#[tokio::test]
async fn every_documented_route_is_served_as_documented() {
    let spec = spec();
    let (app, _scratch) = router().await;
    let operations = operations(&spec);
    assert!(operations.len() >= 15, "{operations:?}");
    for (method, path) in &operations {
        let response = app
            .clone()
            .oneshot(request(method, path))
            .await
            .expect("answer");
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .expect("body");
        let text = String::from_utf8_lossy(&body);
        assert_ne!(
            status,
            StatusCode::METHOD_NOT_ALLOWED,
            "{method} {path} is not routed"
        );
        assert!(
            !text.contains("no such path"),
            "{method} {path} fell through to the fallback: {text}"
        );
        let operation = &spec["paths"][path][method.to_lowercase()];
        let documented = &operation["responses"][status.as_str()];
        assert!(
            documented.is_object(),
            "{method} {path} answered {status}, which is not documented: {text}"
        );
        let media = content_type.split(';').next().unwrap_or_default().trim();
        if let Some(content) = documented.get("content").and_then(Value::as_object) {
            assert!(
                content.contains_key(media),
                "{method} {path} {status}: {media} is not among {:?}",
                content.keys().collect::<Vec<_>>()
            );
            if media == "application/json" {
                let value: Value = serde_json::from_slice(&body).expect("JSON body");
                let mut problems = Vec::new();
                check(
                    &spec,
                    &content[media]["schema"],
                    &value,
                    &format!("{method} {path} {status}"),
                    &mut problems,
                );
                assert!(problems.is_empty(), "{problems:#?}");
            }
        }
        println!("openapi: {method} {path} -> {status} {media}");
    }
}

/// The spec's routes are exactly the route table of docs/api.md.
#[test]
fn the_documented_routes_are_the_api_reference_table() {
    let section = section(API, "### The contract");
    let listed: BTreeSet<(String, String)> = section
        .lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let method = cells.get(1)?.strip_prefix('`')?.strip_suffix('`')?;
            let path = cells.get(2)?.strip_prefix('`')?.strip_suffix('`')?;
            method
                .chars()
                .all(|c| c.is_ascii_uppercase())
                .then(|| (method.to_string(), path.to_string()))
        })
        .collect();
    assert!(!listed.is_empty(), "no route table in docs/api.md");
    assert_eq!(
        operations(&spec()),
        listed,
        "document (left) vs docs/api.md (right)"
    );
}

/// A method a path does not have gets the JSON 405, with `Allow`.
#[tokio::test]
async fn a_wrong_method_is_a_json_405() {
    let (app, _scratch) = router().await;
    let response = app
        .oneshot(request("PUT", "/v1/jobs"))
        .await
        .expect("answer");
    assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
    let allow = response.headers()[header::ALLOW]
        .to_str()
        .expect("allow")
        .to_string();
    assert!(allow.contains("POST") && allow.contains("GET"), "{allow}");
    let body = axum::body::to_bytes(response.into_body(), 1 << 16)
        .await
        .expect("body");
    let value: Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(value["error"]["code"], "method_not_allowed", "{value}");
}

/// A path segment that is not UTF-8 is a JSON 404, not axum's plain-text 400; a query
/// string that does not parse is the API's 422.
#[tokio::test]
async fn malformed_paths_and_queries_get_json() {
    let (app, _scratch) = router().await;
    for (uri, status, code) in [
        ("/v1/jobs/%FF", 404, "not_found"),
        ("/v1/jobs/%C3%28/result", 404, "not_found"),
        ("/docs/%FF", 404, "not_found"),
        ("/v1/stats?window=abc", 422, "invalid_parameter"),
        ("/v1/stats?window=5", 422, "invalid_parameter"),
        ("/v1/jobs?limit=1&limit=2", 422, "invalid_parameter"),
    ] {
        let response = app
            .clone()
            .oneshot(Request::get(uri).body(Body::empty()).expect("request"))
            .await
            .expect("answer");
        assert_eq!(response.status().as_u16(), status, "{uri}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let value: Value = serde_json::from_slice(&body)
            .unwrap_or_else(|_| panic!("{uri}: not JSON: {}", String::from_utf8_lossy(&body)));
        assert_eq!(value["error"]["code"], code, "{uri}: {value}");
    }
}

/// Swagger UI comes out of the binary, pointed at `/openapi.json`.
#[tokio::test]
async fn swagger_ui_is_served_from_the_binary() {
    let (app, _scratch) = router().await;
    let get = |uri: &str| Request::get(uri).body(Body::empty()).expect("request");
    let redirect = app.clone().oneshot(get("/docs")).await.expect("answer");
    assert_eq!(redirect.status(), StatusCode::SEE_OTHER);
    assert_eq!(redirect.headers()[header::LOCATION], "/docs/");
    for (file, needle) in [
        ("/docs/", "swagger-ui"),
        ("/docs/swagger-initializer.js", "/openapi.json"),
        ("/docs/swagger-ui-bundle.js", "SwaggerUIBundle"),
        ("/docs/swagger-ui.css", ".swagger-ui"),
    ] {
        let response = app.clone().oneshot(get(file)).await.expect("answer");
        assert_eq!(response.status(), StatusCode::OK, "{file}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 24)
            .await
            .expect("body");
        assert!(
            String::from_utf8_lossy(&body).contains(needle),
            "{file} lacks {needle}"
        );
    }
}

/// The additions of `openapi::examples` all found their place.
#[test]
fn every_example_found_its_operation() {
    let (_, problems) = openapi::build();
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The document's `ApiCode` enum is `ApiCode::ALL`, every code has an example, and each
/// example response matches its schema.
#[test]
fn every_code_has_an_example_and_examples_match_their_schemas() {
    let spec = spec();
    let listed: BTreeSet<String> = spec["components"]["schemas"]["ApiCode"]["enum"]
        .as_array()
        .expect("ApiCode enum")
        .iter()
        .map(|v| v.as_str().expect("name").to_string())
        .collect();
    let all: BTreeSet<String> = ApiCode::ALL
        .iter()
        .map(|c| c.as_str().to_string())
        .collect();
    assert_eq!(
        listed, all,
        "the derived enum (left) vs ApiCode::ALL (right)"
    );

    let mut problems = Vec::new();
    let mut exemplified = BTreeSet::new();
    for (path, item) in spec["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("item") {
            let Some(responses) = operation.get("responses").and_then(Value::as_object) else {
                continue;
            };
            for (status, response) in responses {
                for (media, content) in response
                    .get("content")
                    .and_then(Value::as_object)
                    .into_iter()
                    .flatten()
                {
                    for (name, example) in content
                        .get("examples")
                        .and_then(Value::as_object)
                        .into_iter()
                        .flatten()
                    {
                        let value = &example["value"];
                        let is_error =
                            content["schema"]["$ref"] == "#/components/schemas/ErrorBody";
                        if let Some(code) = value["error"]["code"].as_str().filter(|_| is_error) {
                            exemplified.insert(code.to_string());
                            let code = ApiCode::parse(code).expect("a listed code");
                            assert_eq!(
                                code.status().as_str(),
                                status,
                                "{method} {path}: {name} under the wrong status"
                            );
                        }
                        if media == "application/json" {
                            let at = format!("{method} {path} {status} example {name}");
                            check(&spec, &content["schema"], value, &at, &mut problems);
                        }
                    }
                }
            }
        }
    }
    let error_body = &spec["components"]["schemas"]["ErrorBody"];
    let schema_examples: BTreeSet<String> = error_body["examples"]
        .as_array()
        .expect("ErrorBody examples")
        .iter()
        .map(|e| {
            check(&spec, error_body, e, "ErrorBody example", &mut problems);
            e["error"]["code"].as_str().expect("code").to_string()
        })
        .collect();
    assert_eq!(schema_examples, all, "ErrorBody has an example per code");
    assert!(problems.is_empty(), "{problems:#?}");
    // Every code an operation can answer has an example there, except the two no
    // operation answers on its own (a wrong method; a bug).
    let unanswered: BTreeSet<String> = all.difference(&exemplified).cloned().collect();
    assert_eq!(
        unanswered,
        BTreeSet::from(["internal".to_string(), "method_not_allowed".to_string()]),
    );
}

/// The error table of docs/api.md lists exactly `ApiCode::ALL`, each under its status.
#[test]
fn the_api_reference_error_table_is_the_code_list() {
    let table = section(API, "### Errors");
    let mut documented = BTreeMap::new();
    for line in table.lines().filter(|l| l.starts_with("| ")) {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        let Ok(status) = cells[1].parse::<u16>() else {
            continue;
        };
        for code in cells[2].split(',').map(|c| c.trim().trim_matches('`')) {
            assert!(
                documented.insert(code.to_string(), status).is_none(),
                "{code} is listed twice"
            );
        }
    }
    let code: BTreeMap<String, u16> = ApiCode::ALL
        .iter()
        .map(|c| (c.as_str().to_string(), c.status().as_u16()))
        .collect();
    assert_eq!(documented, code, "docs/api.md (left) vs ApiCode (right)");
}

/// Every code in `ApiCode::ALL` is answered with its status and its wire name. An
/// `ApiError` is built from an `ApiCode`, never from a string, so no module can answer a
/// code the list does not hold, nor with another status.
#[tokio::test]
async fn every_code_is_answered_with_its_status() {
    for code in ApiCode::ALL {
        let response = ApiError::new(code, "m").into_response();
        assert_eq!(response.status(), code.status(), "{code:?}");
        let body = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .expect("body");
        let body: Value = serde_json::from_slice(&body).expect("JSON");
        assert_eq!(body["error"]["code"], code.as_str(), "{code:?}");
    }
}

/// Every curl command and JSON example in the API sections of README.md and docs/api.md
/// (and in any section titled by a route) is in the document: commands verbatim among
/// the `x-codeSamples`, JSON bodies as (part of) an example.
#[test]
fn every_documented_example_is_in_the_document() {
    let spec = spec();
    // The API sections, and any other section titled by a route (`### \`GET /v1/stats\``).
    let mut text = String::new();
    for doc in [README, API] {
        text.push_str(section(doc, "## The API"));
    }
    for doc in [README, API, OPERATIONS] {
        for line in doc.lines().filter(|l| l.starts_with("### `")) {
            let title = line.trim_start_matches("### `");
            if ["GET /", "POST /", "DELETE /"]
                .iter()
                .any(|m| title.starts_with(m))
                && !text.contains(line)
            {
                text.push_str(section(doc, line));
            }
        }
    }
    let mut samples = BTreeSet::new();
    let mut examples = Vec::new();
    collect_examples(&spec, &mut samples, &mut examples);
    let (mut commands, mut bodies) = (0, 0);
    for (lang, block) in code_blocks(&text) {
        match lang.as_str() {
            "sh" => {
                for command in commands_in(&block) {
                    assert!(
                        samples.contains(&command),
                        "this README command is in no operation's x-codeSamples:\n{command}"
                    );
                    commands += 1;
                }
            }
            "json" => {
                let readme = parse_abbreviated(&block);
                assert!(
                    examples.iter().any(|e| matches(&readme, e)),
                    "this README body is in no example of the document:\n{block}"
                );
                bodies += 1;
            }
            _ => {}
        }
    }
    assert!(
        commands >= 12 && bodies >= 2,
        "{commands} commands, {bodies} bodies"
    );
}

fn collect_examples(spec: &Value, samples: &mut BTreeSet<String>, examples: &mut Vec<Value>) {
    match spec {
        Value::Object(map) => {
            if let Some(list) = map.get("x-codeSamples").and_then(Value::as_array) {
                samples.extend(
                    list.iter()
                        .filter_map(|s| s["source"].as_str())
                        .map(str::to_string),
                );
            }
            if let Some(value) = map.get("value")
                && map.contains_key("summary")
            {
                examples.push(value.clone());
            }
            for value in map.values() {
                collect_examples(value, samples, examples);
            }
        }
        Value::Array(items) => {
            for value in items {
                collect_examples(value, samples, examples);
            }
        }
        _ => {}
    }
}

/// From `heading` to the next heading of the same or a higher level.
fn section<'a>(text: &'a str, heading: &str) -> &'a str {
    let start = text
        .find(&format!("\n{heading}"))
        .unwrap_or_else(|| panic!("the docs have no {heading}"))
        + 1;
    let level = heading.chars().take_while(|&c| c == '#').count();
    let rest = &text[start + heading.len()..];
    let end = rest
        .match_indices("\n#")
        .find(|(i, _)| {
            let hashes = rest[i + 1..].chars().take_while(|&c| c == '#').count();
            hashes <= level && rest[i + 1 + hashes..].starts_with(' ')
        })
        .map_or(rest.len(), |(i, _)| i);
    &text[start..start + heading.len() + end]
}

/// `(language, body)` of each fenced block.
fn code_blocks(text: &str) -> Vec<(String, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(String, Vec<&str>)> = None;
    for line in text.lines() {
        match (&mut current, line.strip_prefix("```")) {
            (None, Some(lang)) => current = Some((lang.trim().to_string(), Vec::new())),
            (Some(_), Some(_)) => {
                let (lang, lines) = current.take().expect("open block");
                blocks.push((lang, lines.join("\n")));
            }
            (Some((_, lines)), None) => lines.push(line),
            (None, None) => {}
        }
    }
    blocks
}

/// The commands in a shell block; a line ending in `\` continues on the next.
fn commands_in(block: &str) -> Vec<String> {
    let mut commands = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in block.lines().filter(|l| !l.trim().is_empty()) {
        current.push(line);
        if !line.ends_with('\\') {
            commands.push(current.join("\n"));
            current.clear();
        }
    }
    commands
}

/// README JSON may elide: `, …}` drops the rest of an object, and `"abc…"` stands for
/// any string starting with `abc`.
fn parse_abbreviated(block: &str) -> Value {
    let text = block.replace(", …}", "}").replace(", …]", "]");
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("README JSON does not parse ({e}):\n{block}"))
}

/// True when `full` has everything `readme` shows.
fn matches(readme: &Value, full: &Value) -> bool {
    match (readme, full) {
        (Value::Object(want), Value::Object(have)) => want
            .iter()
            .all(|(k, v)| have.get(k).is_some_and(|h| matches(v, h))),
        (Value::Array(want), Value::Array(have)) => {
            want.len() == have.len() && want.iter().zip(have).all(|(w, h)| matches(w, h))
        }
        (Value::String(want), Value::String(have)) => match want.split_once('…') {
            Some((head, tail)) => have.starts_with(head) && have.ends_with(tail),
            None => want == have,
        },
        (want, have) => want == have,
    }
}

//! Examples in the document: the curl commands of the docs as each operation's
//! `x-codeSamples`, request examples for a submit, and example answers.
//!
//! Example jobs are real [`view`]s of real [`Job`]s, so they have exactly the shape the
//! gateway sends.

use pixmill_shared::{Fit, JobResult, OutputFormat, Step};
use serde_json::{Value, json};
use utoipa::openapi::{
    OpenApi as Document, RefOr, Schema,
    example::{Example, ExampleBuilder},
    extensions::ExtensionsBuilder,
    path::Operation,
};
use uuid::Uuid;

use super::errors::{example_body, example_message};
use crate::{
    error::ApiCode,
    routes::{
        OpView, QueueView, Readiness, ReadyStatus, StatsView, TaskState, Up, WebhookSecretView,
    },
    store::{Attempt, Callback, CallbackState, Job, JobError, JobState},
    view::{JobErrorView, JobList, view},
};

/// The job id the docs' examples abbreviate as `4f40a890-…`.
pub const EXAMPLE_ID: &str = "4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27";

/// The docs' curl commands, verbatim, by operation. A test checks that every command
/// in the API sections of README.md and docs/api.md is here.
pub const CODE_SAMPLES: &[(&str, &str, &[&str])] = &[
    (
        "post",
        "/v1/jobs",
        &[
            "curl -F image=@photo.jpg -F op=resize -F width=640 -F height=400 http://127.0.0.1:8080/v1/jobs",
            "curl -F image=@photo.jpg -F op=blur -F sigma=3 http://127.0.0.1:8080/v1/jobs",
            "curl -F image=@photo.jpg -F op=edges -F format=png http://127.0.0.1:8080/v1/jobs",
            "curl -F image=@photo.jpg -F op=swap http://127.0.0.1:8080/v1/jobs",
            "curl -F image=@photo.jpg \\\n     -F 'steps=[{\"op\":\"crop\",\"x\":0,\"y\":0,\"width\":800,\"height\":600},{\"op\":\"resize\",\"width\":400},{\"op\":\"grayscale\"}]' \\\n     http://127.0.0.1:8080/v1/jobs",
            // With the custom ops of examples/ops.json registered (PIXMILL_OPS_FILE).
            "curl -F image=@photo.jpg \\\n     -F 'steps=[{\"op\":\"resize\",\"width\":640},{\"op\":\"posterize\",\"bits\":3},{\"op\":\"grayscale\"}]' \\\n     http://127.0.0.1:8080/v1/jobs",
            "curl --data-binary @photo.jpg 'http://127.0.0.1:8080/v1/jobs?op=rotate&degrees=90&format=webp'",
            "curl -H 'Idempotency-Key: order-1234-thumb' -F image=@photo.jpg -F op=resize -F width=200 http://127.0.0.1:8080/v1/jobs",
            "curl -F image=@photo.jpg -F op=grayscale -F callback_url=https://hooks.example.com/pixmill http://127.0.0.1:8080/v1/jobs",
            "curl -F image=@photo.jpg -F format=jpeg -F quality=80 \\\n     -F 'variants=[{\"name\":\"w320\",\"steps\":[{\"op\":\"resize\",\"width\":320}]},{\"name\":\"w640\",\"steps\":[{\"op\":\"resize\",\"width\":640}]},{\"name\":\"w1280\",\"steps\":[{\"op\":\"resize\",\"width\":1280}]},{\"name\":\"w640-webp\",\"steps\":[{\"op\":\"resize\",\"width\":640}],\"format\":\"webp\"}]' \\\n     http://127.0.0.1:8080/v1/jobs",
        ],
    ),
    (
        "get",
        "/v1/jobs",
        &["curl 'http://127.0.0.1:8080/v1/jobs?state=succeeded&limit=20'"],
    ),
    (
        "get",
        "/v1/jobs/{id}",
        &["curl 'http://127.0.0.1:8080/v1/jobs/4f40a890-…?wait=30'"],
    ),
    (
        "get",
        "/v1/jobs/{id}/result",
        &[
            "curl -L -o result.jpg http://127.0.0.1:8080/v1/jobs/4f40a890-…/result",
            "curl -o result.jpg 'http://127.0.0.1:8080/v1/jobs/4f40a890-…/result?exp=1764583800&kid=k1&sig=…'",
        ],
    ),
    (
        "get",
        "/v1/jobs/{id}/result/{name}",
        &["curl -L -o photo-640.webp http://127.0.0.1:8080/v1/jobs/4f40a890-…/result/w640-webp"],
    ),
    (
        "post",
        "/v1/jobs/{id}/links",
        &["curl -X POST 'http://127.0.0.1:8080/v1/jobs/4f40a890-…/links?ttl=600'"],
    ),
    (
        "delete",
        "/v1/jobs/{id}",
        &["curl -X DELETE http://127.0.0.1:8080/v1/jobs/4f40a890-…"],
    ),
    (
        "get",
        "/v1/jobs/{id}/events",
        &["curl -N http://127.0.0.1:8080/v1/jobs/4f40a890-…/events"],
    ),
    (
        "get",
        "/v1/stats",
        &["curl 'http://127.0.0.1:8080/v1/stats?window=600'"],
    ),
    (
        "post",
        "/v1/keys",
        &[
            "curl -H 'Authorization: Bearer pmk_…' -H 'Content-Type: application/json' \\\n     -d '{\"tenant\": \"acme\", \"scopes\": [\"jobs:write\", \"jobs:read\"], \"label\": \"ci uploads\"}' \\\n     http://127.0.0.1:8080/v1/keys",
        ],
    ),
    (
        "get",
        "/v1/keys",
        &["curl -H 'Authorization: Bearer pmk_…' 'http://127.0.0.1:8080/v1/keys?tenant=acme'"],
    ),
    (
        "delete",
        "/v1/keys/{id}",
        &[
            "curl -X DELETE -H 'Authorization: Bearer pmk_…' http://127.0.0.1:8080/v1/keys/4f40a8905c1e4d7b",
        ],
    ),
    (
        "put",
        "/v1/tenants/{name}",
        &[
            "curl -X PUT -H 'Authorization: Bearer pmk_…' -H 'Content-Type: application/json' \\\n     -d '{\"max_inflight\": 50, \"rate\": 20}' http://127.0.0.1:8080/v1/tenants/acme",
        ],
    ),
    (
        "get",
        "/v1/tenants/{name}",
        &["curl -H 'Authorization: Bearer pmk_…' http://127.0.0.1:8080/v1/tenants/acme"],
    ),
    (
        "get",
        "/v1/webhooks/secret",
        &["curl -H 'Authorization: Bearer pmk_…' http://127.0.0.1:8080/v1/webhooks/secret"],
    ),
    ("get", "/readyz", &["curl -i http://127.0.0.1:8080/readyz"]),
    (
        "get",
        "/openapi.json",
        &["curl -o openapi.json http://127.0.0.1:8080/openapi.json"],
    ),
    (
        "get",
        "/asyncapi.json",
        &["curl -o asyncapi.json http://127.0.0.1:8080/asyncapi.json"],
    ),
];

/// A job as it would be stored, in `state`.
pub fn sample_job(state: JobState) -> Job {
    let created_at = 1_764_583_200_123;
    let started = !matches!(state, JobState::Queued | JobState::Cancelled);
    let finished = !matches!(state, JobState::Queued | JobState::Running);
    let error = |code: &str, message: &str| {
        Some(JobError {
            code: code.into(),
            message: message.into(),
        })
    };
    let error = match state {
        JobState::Failed => error("undecodable_image", "the image could not be decoded"),
        JobState::Cancelled => error("cancelled", "the job was cancelled before it ran"),
        _ => None,
    };
    Job {
        id: Uuid::parse_str(EXAMPLE_ID).unwrap_or_default(),
        tenant: crate::store::LOCAL_TENANT.into(),
        state,
        steps: vec![
            Step::Resize {
                width: Some(640),
                height: Some(400),
                fit: Fit::Cover,
            }
            .into(),
        ],
        variants: Vec::new(),
        format: OutputFormat::Jpeg,
        quality: 85,
        input_key: String::new(),
        created_at,
        updated_at: created_at + if finished { 31 } else { 0 },
        started_at: started.then_some(created_at + 20),
        finished_at: finished.then_some(created_at + 31),
        attempts: u32::from(started),
        worker: started.then(|| "worker-1".to_string()),
        error,
        result: (state == JobState::Succeeded || state == JobState::Expired).then(|| JobResult {
            key: String::new(),
            content_type: "image/jpeg".into(),
            width: 640,
            height: 400,
            bytes: 51234,
            processing_ms: 7,
            outputs: Vec::new(),
        }),
        published_at: Some(created_at + 2),
        republished: 0,
        result_deleted_at: None,
        callback: None,
        hops: Vec::new(),
    }
}

/// A job as its own tenant sees it.
fn owners_view(job: &Job) -> crate::view::JobView {
    view(job, &job.tenant)
}

fn job_json(job: &Job) -> Value {
    json(&owners_view(job))
}

fn example(summary: &str, value: Value) -> RefOr<Example> {
    RefOr::T(
        ExampleBuilder::new()
            .summary(summary)
            .value(Some(value))
            .build(),
    )
}

/// Named example bodies: (name, summary, body).
type Named = Vec<(&'static str, &'static str, Value)>;

/// Example answers: (method, path, status, examples).
fn answers() -> Vec<(&'static str, &'static str, &'static str, Named)> {
    let queued = sample_job(JobState::Queued);
    let succeeded = sample_job(JobState::Succeeded);
    let mut with_callback = sample_job(JobState::Succeeded);
    with_callback.callback = Some(Callback {
        url: "https://hooks.example.com/pixmill".into(),
        state: CallbackState::Delivered,
        attempts: vec![Attempt {
            at_ms: 1_764_583_200_160,
            status: Some(204),
            error: None,
        }],
    });
    let mut deleted = sample_job(JobState::Succeeded);
    deleted.result_deleted_at = Some(1_764_583_300_000);
    let mut expired = owners_view(&sample_job(JobState::Expired));
    expired.error = Some(JobErrorView {
        code: ApiCode::Expired.as_str().into(),
        message: example_message(ApiCode::Expired).into(),
    });
    let page = JobList {
        jobs: vec![owners_view(&succeeded)],
        next_cursor: Some(format!("1764583200123-{EXAMPLE_ID}")),
    };
    let mut tasks = std::collections::BTreeMap::new();
    for name in [
        "event_listener",
        "queue_depth",
        "reply_consumer",
        "sweeper",
        "webhooks",
    ] {
        tasks.insert(name.to_string(), TaskState::Running);
    }
    let ready = Readiness {
        status: ReadyStatus::Ready,
        broker: Up::Ok,
        broker_node: Some("127.0.0.1:5681".into()),
        store: Up::Ok,
        store_backend: "postgres",
        blob_store: "s3://pixmill at http://127.0.0.1:58333".into(),
        tasks: tasks.clone(),
    };
    let mut not_ready = ready.clone();
    not_ready.status = ReadyStatus::NotReady;
    not_ready.broker = Up::Unavailable;
    // The example under Metrics in docs/operations.md.
    let stats = StatsView {
        window_secs: 300,
        queue: Some(QueueView {
            ready: 12,
            unacked: Some(4),
            consumers: 2,
            source: "amqp+management",
            at_ms: 1_764_583_200_123,
        }),
        workers_online: Some(2),
        finished: 250,
        succeeded: 245,
        failed: 5,
        jobs_per_minute: 50.0,
        failure_rate: 0.02,
        processing_ms_p50: Some(19),
        processing_ms_p95: Some(41),
        sampled: false,
        ops: vec![
            OpView {
                op: "posterize".into(),
                custom: true,
                finished: 40,
                succeeded: 40,
                failed: 0,
                queue: Some("pixmill.op.posterize".into()),
                ready: Some(3),
                consumers: Some(2),
                warning: None,
            },
            OpView {
                op: "resize".into(),
                custom: false,
                finished: 230,
                succeeded: 226,
                failed: 4,
                queue: None,
                ready: None,
                consumers: None,
                warning: None,
            },
        ],
    };
    // Real links, made with an example key.
    let sign = |exp: u64| {
        crate::links::LinkKeys::parse("k1:an-example-secret-of-at-least-32-bytes")
            .ok()
            .and_then(|keys| keys.sign(Uuid::parse_str(EXAMPLE_ID).unwrap_or_default(), exp))
    };
    let link = sign(1_764_583_800)
        .map(|link| json!({"url": link.url, "expires_at": crate::links::rfc3339(link.exp)}))
        .unwrap_or_default();
    let mut signed = owners_view(&succeeded);
    signed.links.signed_result = sign(1_764_586_800).map(|link| link.url);
    let webhook_secret = WebhookSecretView {
        tenant: "acme".into(),
        secret: crate::webhooks::sign::tenant_secret("an-example-master-secret", "acme"),
        signature_header: crate::webhooks::sign::SIGNATURE_HEADER,
    };
    vec![
        (
            "get",
            "/v1/webhooks/secret",
            "200",
            vec![(
                "secret",
                "The caller's tenant's secret",
                json(&webhook_secret),
            )],
        ),
        (
            "post",
            "/v1/jobs/{id}/links",
            "200",
            vec![("link", "A link valid for 10 minutes", link)],
        ),
        (
            "post",
            "/v1/jobs",
            "202",
            vec![("queued", "Accepted and queued", job_json(&queued))],
        ),
        (
            "get",
            "/v1/jobs",
            "200",
            vec![("page", "A page of one job", json(&page))],
        ),
        (
            "get",
            "/v1/jobs/{id}",
            "200",
            vec![
                ("queued", "Waiting for a worker", job_json(&queued)),
                ("succeeded", "Done, with its result", job_json(&succeeded)),
                (
                    "signed",
                    "Done, with a signed link (PIXMILL_LINK_KEYS set)",
                    json(&signed),
                ),
                ("failed", "Failed", job_json(&sample_job(JobState::Failed))),
                (
                    "callback",
                    "Done, its webhook delivered",
                    job_json(&with_callback),
                ),
            ],
        ),
        (
            "get",
            "/v1/jobs/{id}",
            "410",
            vec![("expired", "Past the retention period", json(&expired))],
        ),
        (
            "delete",
            "/v1/jobs/{id}",
            "200",
            vec![
                (
                    "cancelled",
                    "A queued job, cancelled",
                    job_json(&sample_job(JobState::Cancelled)),
                ),
                (
                    "deleted",
                    "A finished job, its result deleted",
                    job_json(&deleted),
                ),
            ],
        ),
        (
            "get",
            "/readyz",
            "200",
            vec![("ready", "Ready", json(&ready))],
        ),
        (
            "get",
            "/readyz",
            "503",
            vec![(
                "broker_down",
                "The broker does not answer",
                json(&not_ready),
            )],
        ),
        (
            "get",
            "/v1/stats",
            "200",
            vec![("busy", "Five minutes of work", json(&stats))],
        ),
    ]
}

fn json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_default()
}

/// Request examples of a multipart submit, matching the curl commands of docs/api.md.
fn submit_examples() -> Named {
    let image = "(the bytes of photo.jpg)";
    vec![
        (
            "resize",
            "Resize to 640×400",
            json!({"image": image, "op": "resize", "width": 640, "height": 400}),
        ),
        (
            "blur",
            "Blur, σ=3",
            json!({"image": image, "op": "blur", "sigma": 3}),
        ),
        (
            "edges",
            "Edges, as PNG",
            json!({"image": image, "op": "edges", "format": "png"}),
        ),
        (
            "swap",
            "Swap red and blue",
            json!({"image": image, "op": "swap"}),
        ),
        (
            "variants",
            "Three JPEG widths and a WebP copy, from one decode",
            json!({"image": image, "format": "jpeg", "quality": 80, "variants": r#"[{"name":"w320","steps":[{"op":"resize","width":320}]},{"name":"w640","steps":[{"op":"resize","width":640}]},{"name":"w1280","steps":[{"op":"resize","width":1280}]},{"name":"w640-webp","steps":[{"op":"resize","width":640}],"format":"webp"}]"#}),
        ),
        (
            "pipeline",
            "Crop, resize, grayscale",
            json!({"image": image, "steps": r#"[{"op":"crop","x":0,"y":0,"width":800,"height":600},{"op":"resize","width":400},{"op":"grayscale"}]"#}),
        ),
    ]
}

fn operation<'a>(
    document: &'a mut Document,
    method: &str,
    path: &str,
) -> Option<&'a mut Operation> {
    let item = document.paths.paths.get_mut(path)?;
    match method {
        "get" => item.get.as_mut(),
        "post" => item.post.as_mut(),
        "delete" => item.delete.as_mut(),
        "put" => item.put.as_mut(),
        _ => None,
    }
}

/// Adds the examples and code samples; returns what found no place.
pub fn apply(document: &mut Document) -> Vec<String> {
    let mut problems = Vec::new();
    for (method, path, samples) in CODE_SAMPLES {
        let Some(op) = operation(document, method, path) else {
            problems.push(format!(
                "code samples for {method} {path}: no such operation"
            ));
            continue;
        };
        let samples: Vec<Value> = samples
            .iter()
            .map(|source| json!({"lang": "Shell", "label": "curl", "source": source}))
            .collect();
        let extensions = ExtensionsBuilder::new()
            .add("x-codeSamples", Value::Array(samples))
            .build();
        match &mut op.extensions {
            Some(existing) => existing.merge(extensions),
            None => op.extensions = Some(extensions),
        }
    }
    for (method, path, status, examples) in answers() {
        let content = operation(document, method, path)
            .and_then(|op| op.responses.responses.get_mut(status))
            .and_then(|r| match r {
                RefOr::T(response) => response.content.get_mut("application/json"),
                RefOr::Ref(_) => None,
            });
        let Some(content) = content else {
            problems.push(format!(
                "examples for {method} {path} {status}: no JSON answer"
            ));
            continue;
        };
        for (name, summary, value) in examples {
            content
                .examples
                .insert(name.into(), example(summary, value));
        }
    }
    let form = operation(document, "post", "/v1/jobs")
        .and_then(|op| op.request_body.as_mut())
        .and_then(|body| body.content.get_mut("multipart/form-data"));
    match form {
        Some(form) => {
            for (name, summary, value) in submit_examples() {
                form.examples.insert(name.into(), example(summary, value));
            }
        }
        None => problems.push("the submit has no multipart body".into()),
    }
    let schemas = document.components.as_mut().map(|c| &mut c.schemas);
    let error_body = schemas
        .and_then(|s| s.get_mut("ErrorBody"))
        .and_then(|s| match s {
            RefOr::T(Schema::Object(object)) => Some(object),
            _ => None,
        });
    match error_body {
        Some(object) => object.examples = ApiCode::ALL.into_iter().map(example_body).collect(),
        None => problems.push("no ErrorBody schema".into()),
    }
    let codes = document
        .components
        .as_mut()
        .and_then(|c| c.schemas.get_mut("ApiCode"))
        .and_then(|s| match s {
            RefOr::T(Schema::Object(object)) => Some(object),
            _ => None,
        });
    match codes {
        Some(object) => object.description = Some(code_table()),
        None => problems.push("no ApiCode schema".into()),
    }
    problems
}

/// The `ApiCode` schema's description: every code with its status.
fn code_table() -> String {
    let mut table = String::from(
        "Every `error.code` the API answers with, and the status it comes with. Codes \
         are stable: clients may branch on them.\n\n| status | code | example message |\n|---|---|---|\n",
    );
    for code in ApiCode::ALL {
        table.push_str(&format!(
            "| {} | `{}` | {} |\n",
            code.status().as_u16(),
            code.as_str(),
            example_message(code).replace('|', "\\|")
        ));
    }
    table
}

//! The broker contract, published: its version, the JSON Schemas of every message
//! body, and the AsyncAPI 3.0 document that names every exchange, queue, routing key,
//! header and property.
//!
//! Both documents are derived from the Rust types and the [`Topology`], never written
//! by hand: `docs/contract/` holds the generated copies, and the tests below fail when
//! a message type changes without them being regenerated
//! (`PIXMILL_BLESS=1 cargo test --workspace --lib contract`). `docs/contract.md` is the
//! guide for writing a worker or a listener in another language.
//!
//! # Versions
//!
//! Every job message carries [`CONTRACT_HEADER`] = [`VERSION`] (`major.minor`). A
//! reader refuses a message of a newer *major* version ([`check`]); a worker answers it
//! `unsupported_contract` and acks it, so it is never redelivered. A *minor* version
//! only adds: an optional envelope field (which readers ignore when they do not know
//! it), a header, an error code. Renaming or removing anything, changing a field's type
//! or meaning, or making a field required is a new major version.

use lapin::types::{AMQPValue, FieldTable};
use schemars::{JsonSchema, SchemaGenerator, generate::SchemaSettings};
use serde_json::{Map, Value, json};

use crate::{
    JobEvent, JobRequest, JobState, JobStep, Reply,
    topology::{Topology, quorum},
};

/// The AMQP header naming the contract version a message speaks.
pub const CONTRACT_HEADER: &str = "x-pixmill-contract";
/// The major version this build speaks; messages of a newer one are refused.
pub const MAJOR: u32 = 1;
/// The contract version this build publishes.
pub const VERSION: &str = "1.2";
/// The header counting a job's transient-failure retries (set on the retry copy).
pub const RETRIES_HEADER: &str = "x-pixmill-retries";

/// A message this build cannot read, and why, in words for the job's error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unsupported(pub String);

/// Checks a message's [`CONTRACT_HEADER`]. No header means 1.0 (messages published
/// before the header existed); a newer major version, or a value that is no version, is
/// refused.
pub fn check(version: Option<&str>) -> Result<(), Unsupported> {
    let Some(version) = version else {
        return Ok(());
    };
    let major = version
        .split('.')
        .next()
        .and_then(|m| m.trim().parse::<u32>().ok());
    match major {
        Some(major) if major <= MAJOR => Ok(()),
        Some(_) => Err(Unsupported(format!(
            "the job message speaks contract {version} ({CONTRACT_HEADER}), but this worker \
             speaks {MAJOR}.x; upgrade the workers to a release that speaks it"
        ))),
        None => Err(Unsupported(format!(
            "the job message's {CONTRACT_HEADER} header `{version}` is not a version \
             (major.minor)"
        ))),
    }
}

/// `headers` with [`CONTRACT_HEADER`] set to this build's [`VERSION`].
pub fn stamp(mut headers: FieldTable) -> FieldTable {
    headers.insert(
        CONTRACT_HEADER.into(),
        AMQPValue::LongString(VERSION.into()),
    );
    headers
}

/// The JSON Schema (draft 2020-12) of every message body, by file name:
/// `job-request`, `step`, `reply` and `job-event`. Each is self-contained.
pub fn schemas() -> Vec<(&'static str, Value)> {
    fn one<T: JsonSchema>() -> Value {
        SchemaGenerator::new(SchemaSettings::draft2020_12())
            .into_root_schema_for::<T>()
            .to_value()
    }
    vec![
        ("job-request", one::<JobRequest>()),
        ("step", one::<JobStep>()),
        ("reply", one::<Reply>()),
        ("job-event", one::<JobEvent>()),
    ]
}

/// The body schemas as AsyncAPI components: one generator, its definitions under
/// `#/components/schemas/`, in the JSON Schema draft 7 dialect AsyncAPI's default
/// schema format is built on.
fn component_schemas() -> Map<String, Value> {
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "/components/schemas/".into();
    let mut generator = SchemaGenerator::new(settings);
    for schema in [
        generator.subschema_for::<JobRequest>(),
        generator.subschema_for::<Reply>(),
        generator.subschema_for::<JobEvent>(),
    ] {
        debug_assert!(schema.get("$ref").is_some(), "named types are referenced");
    }
    generator.take_definitions(true)
}

/// Queue arguments as JSON: the very tables the declaration uses, so the document
/// cannot disagree with what is declared.
fn arguments(table: &FieldTable) -> Value {
    fn value(v: &AMQPValue) -> Value {
        match v {
            AMQPValue::LongString(s) => json!(String::from_utf8_lossy(s.as_bytes())),
            AMQPValue::ShortString(s) => json!(s.as_str()),
            AMQPValue::LongUInt(n) => json!(n),
            AMQPValue::LongInt(n) => json!(n),
            AMQPValue::LongLongInt(n) => json!(n),
            AMQPValue::ShortUInt(n) => json!(n),
            AMQPValue::Boolean(b) => json!(b),
            other => json!(format!("{other:?}")),
        }
    }
    Value::Object(
        table
            .inner()
            .iter()
            .map(|(k, v)| (k.to_string(), value(v)))
            .collect(),
    )
}

/// The AsyncAPI 3.0 document of `topology`, as published in `docs/contract/`.
pub fn asyncapi(topology: &Topology) -> Value {
    asyncapi_for(topology, &[])
}

/// The AsyncAPI 3.0 document of `topology` with the custom ops `ops` registered: what
/// the gateway serves at `/asyncapi.json`, with the deployment's own names.
pub fn asyncapi_for(topology: &Topology, ops: &[String]) -> Value {
    let vhost = "/";
    let exchange = |name: &str, kind: &str, description: &str| {
        json!({
            "address": name,
            "description": description,
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": name, "type": kind, "durable": true, "autoDelete": false, "vhost": vhost},
                "bindingVersion": "0.3.0"
            }}
        })
    };
    let queue = |name: &str, description: &str, arguments: Value| {
        json!({
            "address": name,
            "description": description,
            "bindings": {"amqp": {
                "is": "queue",
                "queue": {"name": name, "durable": true, "exclusive": false, "autoDelete": false, "vhost": vhost},
                "bindingVersion": "0.3.0"
            }},
            "x-arguments": arguments
        })
    };
    let with_messages = |mut channel: Value, messages: &[&str]| {
        let refs: Map<String, Value> = messages
            .iter()
            .map(|m| {
                (
                    m.to_string(),
                    json!({"$ref": format!("#/components/messages/{m}")}),
                )
            })
            .collect();
        channel["messages"] = Value::Object(refs);
        channel
    };
    let t = topology;
    let jobs_exchange = with_messages(
        exchange(
            &t.jobs,
            "direct",
            "The gateway publishes every job here with routing key = the name of the queue \
             of its first step's owner: the jobs queue for a built-in op, the op's own queue \
             for a custom op. Retries come back through it when their back-off expires.",
        ),
        &["job"],
    );
    let mut op_parameter = json!({"description": "The custom op's name."});
    if !ops.is_empty() {
        op_parameter["enum"] = json!(ops);
    }
    let channels = json!({
        "jobsExchange": jobs_exchange,
        "jobsQueue": with_messages(queue(&t.jobs,
            "Every worker consumes this one queue (competing consumers, manual acks, a \
             prefetch of its own choosing). A job is acked only after its reply or its retry \
             copy is confirmed by the broker.",
            arguments(&t.jobs_arguments())), &["job"]),
        "opQueue": {
            "address": format!("{}.op.{{op}}", t.prefix),
            "description": "One queue per custom op registered on the gateway \
                (PIXMILL_OPS_FILE), declared by the gateway with the jobs queue's arguments and \
                bound to the jobs and forward exchanges under its own name. The workers that \
                serve the op consume it as the jobs queue is consumed; a job arrives here when \
                the step at its `cursor` is the op. A worker that knows none of the custom ops \
                never sees these jobs.",
            "parameters": {"op": op_parameter},
            "messages": {"job": {"$ref": "#/components/messages/job"}},
            "bindings": {"amqp": {
                "is": "queue",
                "queue": {"name": format!("{}.op.{{op}}", t.prefix), "durable": true, "exclusive": false, "autoDelete": false, "vhost": vhost},
                "bindingVersion": "0.3.0"
            }},
            "x-arguments": arguments(&t.jobs_arguments())
        },
        "forwardExchange": {
            "address": "{queue}",
            "description": "The routing slip: a worker that ran the steps it knows, up to \
                another worker's op, writes the image as it stands at \
                `work/<id>-<cursor>.png`, and publishes the job here with `input` = that key, \
                `cursor` = the next step and its hop added to `hops`; routing key = the next \
                owner's queue. It acks its delivery once the broker confirms the forward.",
            "parameters": {"queue": {"description": "The queue of the next step's owner: the \
                jobs queue for a built-in op, `<prefix>.op.<op>` for a custom op."}},
            "messages": {"job": {"$ref": "#/components/messages/job"}},
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": t.forward_exchange, "type": "direct", "durable": true, "autoDelete": false, "vhost": vhost},
                "bindingVersion": "0.3.0"
            }}
        },
        "replyExchange": {
            "address": "{replyTo}",
            "description": "Workers publish replies here, with routing key = the job's `reply_to` property.",
            "parameters": {"replyTo": {"description": "The job message's `reply_to` property."}},
            "messages": {"reply": {"$ref": "#/components/messages/reply"}},
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": t.reply_exchange, "type": "direct", "durable": true, "autoDelete": false, "vhost": vhost},
                "bindingVersion": "0.3.0"
            }}
        },
        "repliesQueue": with_messages(queue(&t.replies,
            "The gateways' replies queue, bound to the reply exchange under its own name; \
             every job names it in `reply_to`.",
            arguments(&quorum())), &["reply"]),
        "retryExchange": with_messages(exchange(&t.retry_exchange, "direct",
            "A worker puts a copy of a job that failed transiently here, routing key = the \
             retry queue's name, with `expiration` = the back-off in ms and the retries \
             header counted up; then it acks the original."), &["job"]),
        "retryQueue": with_messages(queue(&t.retry,
            "Retries wait out their back-off here; nobody consumes it. An expired message \
             is dead-lettered back to the jobs exchange.",
            arguments(&t.retry_arguments())), &["job"]),
        "deadQueue": with_messages(queue(&t.dead_queue,
            &format!("Jobs over the jobs queue's delivery limit, dead-lettered through the \
             `{}` exchange (fanout). The gateway drains it and fails those jobs \
             `worker_crashed`.", t.dead_exchange),
            arguments(&quorum())), &["job"]),
        "events": {
            "address": "job.{state}",
            "description": "Change notices: every state change a gateway applies, published \
                after the store has it. Transient and not mandatory. Any service may bind a \
                queue of its own (`job.#` for all of them).",
            "parameters": {"state": {
                "enum": JobState::ALL.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
                "description": "The job's new state."
            }},
            "messages": {"jobEvent": {"$ref": "#/components/messages/jobEvent"}},
            "bindings": {"amqp": {
                "is": "routingKey",
                "exchange": {"name": t.events, "type": "topic", "durable": true, "autoDelete": false, "vhost": vhost},
                "bindingVersion": "0.3.0"
            }}
        }
    });
    let persistent =
        json!({"amqp": {"deliveryMode": 2, "mandatory": true, "bindingVersion": "0.3.0"}});
    let acked = json!({"amqp": {"ack": true, "bindingVersion": "0.3.0"}});
    let operation =
        |action: &str, channel: &str, message: &str, summary: &str, bindings: &Value| {
            json!({
                "action": action,
                "channel": {"$ref": format!("#/channels/{channel}")},
                "messages": [{"$ref": format!("#/channels/{channel}/messages/{message}")}],
                "summary": summary,
                "bindings": bindings
            })
        };
    let operations = json!({
        "publishJob": operation("send", "jobsExchange", "job",
            "The gateway publishes a job: persistent, mandatory, with publisher confirms.", &persistent),
        "consumeJob": operation("receive", "jobsQueue", "job",
            "A worker takes a job; it acks only once its reply or retry copy is confirmed.", &acked),
        "sendReply": operation("send", "replyExchange", "reply",
            "A worker reports `started`, then `succeeded` or `failed`.", &persistent),
        "receiveReply": operation("receive", "repliesQueue", "reply",
            "The gateway applies a reply to the job's record.", &acked),
        "consumeOpJob": operation("receive", "opQueue", "job",
            "A worker that serves a custom op takes a job whose step at the cursor is the op.", &acked),
        "forwardJob": operation("send", "forwardExchange", "job",
            "A worker hands a job on to the owner of its next step.", &persistent),
        "scheduleRetry": operation("send", "retryExchange", "job",
            "A worker hands a transiently failed job to the retry queue.", &persistent),
        "drainDeadLetters": operation("receive", "deadQueue", "job",
            "The gateway fails the jobs the broker set aside.", &acked),
        "publishEvent": operation("send", "events", "jobEvent",
            "A gateway announces a state change.", &json!({"amqp": {"deliveryMode": 1, "mandatory": false, "bindingVersion": "0.3.0"}})),
        "receiveEvent": operation("receive", "events", "jobEvent",
            "A listener (another gateway, an audit log) learns of a state change.", &json!({}))
    });
    let contract_header = json!({
        "type": "string",
        "pattern": "^[0-9]+\\.[0-9]+$",
        "description": "The contract version, major.minor. A reader refuses a newer major version.",
        "examples": [VERSION]
    });
    let origin_header = crate::amqp::ORIGIN_HEADER;
    let messages = json!({
        "job": {
            "name": "job",
            "title": "Job",
            "summary": "One job: the blob-store key of its input, its steps and its output format.",
            "contentType": "application/json",
            "correlationId": {
                "description": "The job id: also the AMQP `message_id` and `correlation_id` properties.",
                "location": "$message.payload#/id"
            },
            "headers": {
                "type": "object",
                "properties": {
                    CONTRACT_HEADER: contract_header,
                    RETRIES_HEADER: {"type": "integer", "minimum": 0, "description": "Transient-failure retries so far; absent on the first run."},
                    "x-delivery-count": {"type": "integer", "minimum": 0, "description": "Set by the quorum queue: earlier deliveries of this message that were not acked."}
                }
            },
            "payload": {"$ref": "#/components/schemas/JobRequest"},
            "x-properties": {
                "message_id": "the job id",
                "correlation_id": "the job id",
                "reply_to": "the queue replies go to, through the reply exchange",
                "delivery_mode": 2,
                "content_type": "application/json",
                "expiration": "on the retry copy only: the back-off in ms"
            }
        },
        "reply": {
            "name": "reply",
            "title": "Reply",
            "summary": "What a worker reports about a job: `started`, `succeeded` or `failed`.",
            "contentType": "application/json",
            "correlationId": {
                "description": "The job id, also the AMQP `correlation_id` property.",
                "location": "$message.payload#/job_id"
            },
            "headers": {"type": "object", "properties": {CONTRACT_HEADER: contract_header}},
            "payload": {"$ref": "#/components/schemas/Reply"},
            "x-properties": {"correlation_id": "the job id", "delivery_mode": 2, "content_type": "application/json"}
        },
        "jobEvent": {
            "name": "jobEvent",
            "title": "Change notice",
            "summary": "A job's new state, published by the gateway that applied it.",
            "contentType": "application/json",
            "headers": {"type": "object", "properties": {
                origin_header: {"type": "string", "description": "The gateway that published it."}
            }},
            "payload": {"$ref": "#/components/schemas/JobEvent"}
        }
    });
    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "pixmill broker contract",
            "version": format!("{VERSION}.0"),
            "description": "How pixmill's gateways and workers talk through RabbitMQ. A worker \
                in any language joins by consuming the jobs queue and publishing replies as \
                described here; docs/contract.md is the guide.",
            "license": {"name": "MIT OR Apache-2.0"}
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": component_schemas()}
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn docs() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../docs/contract")
    }

    /// Compares `value` with the checked-in file, or rewrites the file under
    /// `PIXMILL_BLESS=1`.
    fn same_as_file(value: &Value, file: PathBuf) -> Result<(), String> {
        let text = serde_json::to_string_pretty(value).expect("serialize") + "\n";
        if std::env::var_os("PIXMILL_BLESS").is_some() {
            std::fs::create_dir_all(file.parent().expect("a parent")).expect("mkdir");
            std::fs::write(&file, text).expect("write");
            return Ok(());
        }
        let on_disk = std::fs::read_to_string(&file).unwrap_or_default();
        if on_disk == text {
            Ok(())
        } else {
            Err(format!(
                "{} differs from what the Rust types generate",
                file.display()
            ))
        }
    }

    #[test]
    fn the_published_schemas_and_asyncapi_match_the_code() {
        let mut stale = Vec::new();
        for (name, schema) in schemas() {
            let file = docs().join("schemas").join(format!("{name}.json"));
            stale.extend(same_as_file(&schema, file).err());
        }
        let file = docs().join("asyncapi.json");
        stale.extend(same_as_file(&asyncapi(&Topology::default()), file).err());
        assert!(
            stale.is_empty(),
            "{}; regenerate with `PIXMILL_BLESS=1 cargo test --workspace --lib contract` \
             and review the diff (docs/contract.md says what a breaking change is)",
            stale.join("; ")
        );
    }

    fn validator(name: &str) -> jsonschema::Validator {
        let schema = schemas()
            .into_iter()
            .find(|(n, _)| *n == name)
            .map(|(_, s)| s)
            .expect("a schema of that name");
        // Formats (`uuid`, …) are only annotations in draft 2020-12 unless asked for.
        jsonschema::options()
            .should_validate_formats(true)
            .build(&schema)
            .expect("a valid schema")
    }

    fn errors(validator: &jsonschema::Validator, message: &Value) -> Vec<String> {
        validator
            .iter_errors(message)
            .map(|e| format!("{} at {}", e, e.instance_path()))
            .collect()
    }

    /// The messages the golden tests in `messages.rs` and `events.rs` pin, and what the
    /// code writes, pass their published schema; broken ones do not.
    #[test]
    fn golden_messages_pass_their_schemas() {
        let job = validator("job-request");
        let golden_job = json!({
            "id": "7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11",
            "input": "inputs/7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11",
            "steps": [
                {"op": "resize", "width": 640, "fit": "contain"},
                {"op": "crop", "x": 1, "y": 2, "width": 3, "height": 4},
                {"op": "blur", "sigma": 2.5},
                {"op": "edges", "low": 100.0, "high": 200.0},
                {"op": "swap", "order": "bgr"},
                {"op": "grayscale"},
                {"op": "rotate", "degrees": 270},
                {"op": "flip", "direction": "vertical"}
            ],
            "format": "webp",
            "quality": 85
        });
        assert_eq!(errors(&job, &golden_job), Vec::<String>::new());
        // What serde writes for it passes too.
        let parsed: JobRequest = serde_json::from_value(golden_job.clone()).expect("parse");
        let written = serde_json::to_value(&parsed).expect("serialize");
        assert_eq!(errors(&job, &written), Vec::<String>::new());
        // A step parameter the op does not take, a missing field, a quality out of range
        // and an unknown op are each refused.
        for (broken, what) in [
            (json!({"op": "grayscale", "sigma": 3}), "steps/0"),
            (json!({"op": "blur"}), "steps/0"),
            (json!({"op": "Sharpen!"}), "steps/0"),
        ] {
            let mut message = golden_job.clone();
            message["steps"] = json!([broken]);
            let found = errors(&job, &message);
            assert!(
                found.iter().any(|e| e.contains(what)),
                "{message} must fail at {what}: {found:?}"
            );
        }
        // A job handed on along its routing slip, with a custom op's step, passes.
        let mut forwarded = golden_job.clone();
        forwarded["steps"] = json!([{"op": "grayscale"}, {"op": "posterize", "bits": 3}]);
        forwarded["cursor"] = json!(1);
        forwarded["hops"] = json!([{"worker": "w1", "from": 0, "to": 1, "ms": 12}]);
        assert_eq!(errors(&job, &forwarded), Vec::<String>::new());
        let mut no_input = golden_job.clone();
        no_input.as_object_mut().expect("object").remove("input");
        assert!(!errors(&job, &no_input).is_empty(), "input is required");
        let mut zero_quality = golden_job.clone();
        zero_quality["quality"] = json!(0);
        assert!(!errors(&job, &zero_quality).is_empty(), "quality is 1–100");
        // A field added in a later minor version is allowed by the envelope.
        let mut newer = golden_job;
        newer["priority_hint"] = json!("low");
        assert_eq!(errors(&job, &newer), Vec::<String>::new());

        let reply = validator("reply");
        let id = "7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11";
        for golden in [
            json!({"job_id": id, "worker": "w1", "attempt": 1, "event": "started"}),
            json!({"job_id": id, "worker": "w1", "attempt": 2, "event": "succeeded",
                   "key": "results/x.jpg", "content_type": "image/jpeg", "width": 640,
                   "height": 400, "bytes": 12345, "processing_ms": 17, "started_ago_ms": 21}),
            json!({"job_id": id, "worker": "w1", "attempt": 1, "event": "failed",
                   "code": "unsupported_contract", "message": "newer"}),
        ] {
            assert_eq!(errors(&reply, &golden), Vec::<String>::new(), "{golden}");
        }
        for broken in [
            json!({"job_id": id, "worker": "w1", "attempt": 1, "event": "finished"}),
            json!({"job_id": id, "worker": "w1", "attempt": 1, "event": "failed",
                   "code": "no_such_code", "message": "x"}),
            json!({"job_id": id, "worker": "w1", "attempt": 1, "event": "succeeded",
                   "key": "results/x.jpg"}),
            json!({"job_id": "not-a-uuid", "worker": "w1", "attempt": 1, "event": "started"}),
        ] {
            assert!(!errors(&reply, &broken).is_empty(), "{broken} must fail");
        }

        let event = validator("job-event");
        let golden = json!({
            "job_id": id, "state": "succeeded", "at_ms": 1_764_583_200_123_i64,
            "attempts": 1, "worker": "worker-1", "tenant": "acme",
            "result": {"content_type": "image/png", "width": 10, "height": 20,
                       "bytes": 300, "processing_ms": 4}
        });
        assert_eq!(errors(&event, &golden), Vec::<String>::new());
        let mut broken = golden;
        broken["state"] = json!("exploded");
        assert!(!errors(&event, &broken).is_empty());
    }

    #[test]
    fn a_newer_major_version_is_refused_with_its_reason() {
        assert_eq!(check(None), Ok(()));
        assert_eq!(check(Some(VERSION)), Ok(()));
        assert_eq!(check(Some("1.9")), Ok(()), "a newer minor only adds");
        let newer = check(Some("2.0")).expect_err("a newer major");
        assert!(
            newer.0.contains("2.0") && newer.0.contains("1.x"),
            "{newer}"
        );
        let junk = check(Some("banana")).expect_err("not a version");
        assert!(junk.0.contains("banana"), "{junk}");
    }

    #[test]
    fn the_asyncapi_document_names_every_exchange_and_queue_of_a_topology() {
        let topology = Topology::with_prefix("acme");
        let text = asyncapi(&topology).to_string();
        for name in [
            &topology.jobs,
            &topology.replies,
            &topology.retry,
            &topology.retry_exchange,
            &topology.reply_exchange,
            &topology.dead_queue,
            &topology.dead_exchange,
            &topology.events,
        ] {
            assert!(text.contains(&format!("\"{name}\"")), "{name} is missing");
        }
        assert!(
            !text.contains("\"pixmill."),
            "only the topology's own names"
        );
    }
}

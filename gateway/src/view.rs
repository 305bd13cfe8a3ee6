//! The JSON a job is shown as: typed, so the OpenAPI schema is derived from the very
//! structs that are serialized, and pinned by golden JSON like the wire messages. The
//! HTTP answers, the event stream and the webhook bodies all send this one shape.
//!
//! Each conversion destructures its source completely, so a field added to a job, a
//! result or a callback does not compile until the view decides what to show of it.

use pixmill_shared::{JobStep, OutputFormat};
use serde::Serialize;
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{
        RefOr, Schema,
        extensions::Extensions,
        schema::{ObjectBuilder, Ref, Type},
    },
};
use uuid::Uuid;

use crate::store::{Attempt, Callback, CallbackState, Job, JobError, JobState};

pub mod schemas;

use schemas::JobStateSchema;

/// A job, as every route that answers with one shows it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobView {
    pub id: Uuid,
    #[schema(value_type = JobStateSchema)]
    pub state: JobState,
    /// The pipeline, in order.
    #[schema(value_type = Vec<schemas::Step>)]
    pub steps: Vec<JobStep>,
    /// The output encoding.
    #[schema(value_type = schemas::OutputFormat)]
    pub format: OutputFormat,
    /// JPEG quality, 1–100.
    #[schema(minimum = 1, maximum = 100, example = 85)]
    pub quality: u8,
    /// The named outputs asked for, each made from the one decode of the upload after
    /// `steps`. Absent for a job with one result.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<VariantView>,
    /// RFC 3339.
    #[schema(format = DateTime, example = "2025-12-01T10:00:00.123Z")]
    pub created_at: String,
    /// RFC 3339: the last change of any kind.
    #[schema(format = DateTime, example = "2025-12-01T10:00:00.154Z")]
    pub updated_at: String,
    /// RFC 3339: when a worker last started the job.
    #[schema(required = true, format = DateTime)]
    pub started_at: Option<String>,
    /// RFC 3339: when it reached a terminal state.
    #[schema(required = true, format = DateTime)]
    pub finished_at: Option<String>,
    /// How often a worker started the job (redeliveries and retries add one).
    pub attempts: u32,
    /// The worker that last reported on the job.
    #[schema(required = true, example = "worker-1")]
    pub worker: Option<String>,
    /// Why the job failed, was cancelled, or expired; null otherwise.
    #[schema(required = true)]
    pub error: Option<JobErrorView>,
    /// True once `DELETE` removed the result and the upload.
    pub result_deleted: bool,
    /// The result of a `succeeded` job whose result is still there; null otherwise.
    #[schema(required = true)]
    pub result: Option<ResultView>,
    /// The webhook, for a job submitted with `callback_url`; null otherwise.
    #[schema(required = true)]
    pub callback: Option<CallbackView>,
    /// For a job whose steps several workers ran (custom ops, docs/contract.md): each
    /// hop of its routing slip, in order. Absent for a job one worker ran whole.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<HopView>,
    pub links: JobLinks,
}

/// One hop of a job's routing slip: a worker ran `steps[from..to]`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct HopView {
    /// The worker's name.
    #[schema(example = "py-host-4242")]
    pub worker: String,
    /// The ops it ran, in order.
    #[schema(example = json!(["posterize"]))]
    pub ops: Vec<String>,
    /// Index of the first step it ran.
    pub from: usize,
    /// Index after the last step it ran.
    pub to: usize,
    /// Its time for the hop: reading, processing and writing (ms).
    pub ms: u64,
}

/// One variant of a job: a named output with its own steps, format and quality.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct VariantView {
    #[schema(example = "w640", pattern = "^[a-z0-9][a-z0-9_-]{0,39}$")]
    pub name: String,
    /// Built-in steps, run after the job's own.
    #[schema(value_type = Vec<schemas::Step>)]
    pub steps: Vec<pixmill_shared::Step>,
    #[schema(value_type = schemas::OutputFormat)]
    pub format: OutputFormat,
    #[schema(minimum = 1, maximum = 100, example = 80)]
    pub quality: u8,
}

/// One output of a succeeded job with variants.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct OutputView {
    /// The variant's name.
    #[schema(example = "w640")]
    pub name: String,
    #[schema(example = "image/jpeg")]
    pub content_type: String,
    #[schema(example = 640)]
    pub width: u32,
    #[schema(example = 400)]
    pub height: u32,
    /// Size of the encoded output.
    #[schema(example = 41234)]
    pub bytes: u64,
    /// Where to download it.
    #[schema(example = "/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27/result/w640")]
    pub url: String,
}

/// A job's `error`.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobErrorView {
    #[schema(value_type = schemas::JobErrorCode)]
    pub code: String,
    pub message: String,
}

/// A succeeded job's result. The blob key stays private.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ResultView {
    #[schema(example = "image/jpeg")]
    pub content_type: String,
    #[schema(example = 640)]
    pub width: u32,
    #[schema(example = 400)]
    pub height: u32,
    /// Size of the encoded result.
    #[schema(example = 51234)]
    pub bytes: u64,
    /// Time the worker spent decoding, processing and encoding.
    #[schema(example = 7)]
    pub processing_ms: u64,
    /// A job with variants: every output, in the order asked for. The fields above
    /// repeat the first, which `GET /v1/jobs/{id}/result` also serves. Absent for a job
    /// with one result.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<OutputView>,
}

/// Where a job's webhook stands.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CallbackView {
    /// Where the job record is POSTed: shown to the job's own tenant only, absent for
    /// anyone else (an `admin` of another tenant).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false, format = "uri")]
    pub url: Option<String>,
    /// `pending` (until delivered or given up), `delivered` or `failed`.
    #[schema(value_type = String, example = "pending")]
    pub state: CallbackState,
    /// Every delivery attempt so far, oldest first.
    pub attempts: Vec<AttemptView>,
}

/// One webhook delivery attempt.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct AttemptView {
    /// When it was made, in milliseconds since the Unix epoch.
    pub at_ms: i64,
    /// The receiver's HTTP status, if it answered.
    #[schema(required = true)]
    pub status: Option<u16>,
    /// Why it failed, if it did. The reason can name the callback's address, so callers
    /// other than the job's tenant read [`WITHHELD_ERROR`] instead.
    #[schema(required = true)]
    pub error: Option<String>,
}

/// A failed attempt's `error` as shown to callers other than the job's tenant.
pub const WITHHELD_ERROR: &str = "withheld: only the job's tenant sees why a delivery failed";

/// Where the job and its result are.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobLinks {
    #[serde(rename = "self")]
    #[schema(example = "/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27")]
    pub self_: String,
    #[schema(example = "/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27/result")]
    pub result: String,
    /// The result as a signed link that needs no credential, valid an hour: shown by
    /// `GET /v1/jobs/{id}` once the job has succeeded, when the gateway has link keys
    /// (`PIXMILL_LINK_KEYS`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(
        nullable = false,
        example = "/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27/result?exp=1764586800&kid=k1&sig=c2lnbmF0dXJl"
    )]
    pub signed_result: Option<String>,
}

/// One page of `GET /v1/jobs`, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; null on the last one.
    #[schema(
        required = true,
        example = "1764583200123-4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27",
        pattern = "^[0-9]{1,18}-[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
    )]
    pub next_cursor: Option<String>,
}

/// One server-sent event of `GET /v1/jobs/{id}/events`: named after the job's state, with
/// the job's `updated_at` (ms) as its id and the job record (a `JobView`, as JSON) as its
/// data. Described the OpenAPI 3.2 way, which Schemathesis follows for 3.1 documents too:
/// the schema is one event, and `contentSchema` describes its data.
pub struct JobStreamEvent;

impl utoipa::PartialSchema for JobStreamEvent {
    fn schema() -> RefOr<Schema> {
        let data = ObjectBuilder::new()
            .schema_type(Type::String)
            .content_media_type("application/json")
            .description(Some("The job record, a `JobView`, as JSON"))
            .extensions(Some(Extensions::from_iter([(
                "contentSchema",
                serde_json::json!({"$ref": "#/components/schemas/JobView"}),
            )])));
        ObjectBuilder::new()
            .property("event", Ref::from_schema_name("JobState"))
            .property(
                "id",
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]+$"))
                    .description(Some(
                        "The job's `updated_at`, in milliseconds since the Unix epoch",
                    )),
            )
            .property("data", data)
            .required("event")
            .required("id")
            .required("data")
            .description(Some(
                "One event: named after the job's state, the job's `updated_at` as its id, \
                 the job record as its data",
            ))
            .into()
    }
}

impl ToSchema for JobStreamEvent {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((JobStateSchema::name().into(), JobStateSchema::schema()));
        schemas.push((JobView::name().into(), JobView::schema()));
        JobView::schemas(schemas);
    }
}

/// The JSON shape of a job, as documented in docs/api.md, shown to a caller of
/// `caller_tenant`. Where the job's webhook goes (its URL, and the delivery errors that
/// may name it) is shown only to the job's own tenant: an `admin` of another tenant sees
/// the job and its webhook's progress, never the address.
pub fn view(job: &Job, caller_tenant: &str) -> JobView {
    let Job {
        id,
        tenant,
        state,
        steps,
        variants,
        format,
        quality,
        input_key: _,
        created_at,
        updated_at,
        started_at,
        finished_at,
        attempts,
        worker,
        error,
        result,
        published_at: _,
        republished: _,
        result_deleted_at,
        callback,
        hops,
    } = job;
    let shown = result_deleted_at.is_none() && *state == JobState::Succeeded;
    let owner = tenant == caller_tenant;
    JobView {
        id: *id,
        state: *state,
        steps: steps.clone(),
        format: *format,
        quality: *quality,
        variants: variants
            .iter()
            .map(|v| VariantView {
                name: v.name.clone(),
                steps: v.steps.clone(),
                format: v.format,
                quality: v.quality,
            })
            .collect(),
        created_at: rfc3339(*created_at),
        updated_at: rfc3339(*updated_at),
        started_at: started_at.map(rfc3339),
        finished_at: finished_at.map(rfc3339),
        attempts: *attempts,
        worker: worker.clone(),
        error: error
            .as_ref()
            .map(|JobError { code, message }| JobErrorView {
                code: code.clone(),
                message: message.clone(),
            }),
        result_deleted: result_deleted_at.is_some(),
        result: result
            .as_ref()
            .filter(|_| shown)
            .map(|r| result_view(*id, r)),
        callback: callback.as_ref().map(|c| callback_view(c, owner)),
        hops: hops
            .iter()
            .map(|hop| HopView {
                worker: hop.worker.clone(),
                ops: steps
                    .get(hop.from..hop.to)
                    .unwrap_or_default()
                    .iter()
                    .map(|s| s.op().to_string())
                    .collect(),
                from: hop.from,
                to: hop.to,
                ms: hop.ms,
            })
            .collect(),
        links: JobLinks {
            self_: format!("/v1/jobs/{id}"),
            result: format!("/v1/jobs/{id}/result"),
            signed_result: None,
        },
    }
}

fn result_view(id: Uuid, result: &pixmill_shared::JobResult) -> ResultView {
    let pixmill_shared::JobResult {
        key: _,
        content_type,
        width,
        height,
        bytes,
        processing_ms,
        outputs,
    } = result;
    ResultView {
        content_type: content_type.clone(),
        width: *width,
        height: *height,
        bytes: *bytes,
        processing_ms: *processing_ms,
        outputs: outputs
            .iter()
            .map(|o| OutputView {
                name: o.name.clone(),
                content_type: o.content_type.clone(),
                width: o.width,
                height: o.height,
                bytes: o.bytes,
                url: format!("/v1/jobs/{id}/result/{}", o.name),
            })
            .collect(),
    }
}

/// A webhook's progress; its URL and failure reasons only for the job's `owner`.
fn callback_view(callback: &Callback, owner: bool) -> CallbackView {
    let Callback {
        url,
        state,
        attempts,
    } = callback;
    CallbackView {
        url: owner.then(|| url.clone()),
        state: *state,
        attempts: attempts
            .iter()
            .map(|attempt| {
                let Attempt {
                    at_ms,
                    status,
                    error,
                } = attempt;
                AttemptView {
                    at_ms: *at_ms,
                    status: *status,
                    error: error.as_ref().map(|e| {
                        if owner {
                            e.clone()
                        } else {
                            WITHHELD_ERROR.into()
                        }
                    }),
                }
            })
            .collect(),
    }
}

/// Milliseconds since the epoch as RFC 3339 (UTC). Every stored time is in range; one
/// that is not shows as the epoch rather than failing the whole answer.
pub fn rfc3339(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixmill_shared::{Fit, JobResult, Step};

    fn job() -> Job {
        Job {
            id: Uuid::parse_str("4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27").expect("uuid"),
            tenant: "local".into(),
            state: JobState::Succeeded,
            steps: vec![
                Step::Resize {
                    width: Some(640),
                    height: None,
                    fit: Fit::Cover,
                }
                .into(),
                Step::Grayscale {}.into(),
            ],
            variants: Vec::new(),
            format: OutputFormat::Jpeg,
            quality: 85,
            input_key: "inputs/secret".into(),
            created_at: 1_764_583_200_123,
            updated_at: 1_764_583_200_456,
            started_at: Some(1_764_583_200_200),
            finished_at: Some(1_764_583_200_456),
            attempts: 1,
            worker: Some("worker-1".into()),
            error: None,
            result: Some(JobResult {
                key: "results/secret.jpg".into(),
                content_type: "image/jpeg".into(),
                width: 640,
                height: 400,
                bytes: 51234,
                processing_ms: 7,
                outputs: Vec::new(),
            }),
            published_at: Some(1_764_583_200_124),
            republished: 0,
            result_deleted_at: None,
            callback: Some(Callback {
                url: "https://hooks.example.com/pixmill".into(),
                state: CallbackState::Delivered,
                attempts: vec![
                    Attempt {
                        at_ms: 1_764_583_200_500,
                        status: Some(500),
                        error: Some("the receiver answered 500".into()),
                    },
                    Attempt {
                        at_ms: 1_764_583_201_500,
                        status: Some(204),
                        error: None,
                    },
                ],
            }),
            hops: Vec::new(),
        }
    }

    /// Pins the job record on the wire: every field name, null where empty, the blob
    /// keys never shown.
    #[test]
    fn job_view_golden_json() {
        let got = serde_json::to_string(&view(&job(), "local")).expect("serialize");
        let want = concat!(
            r#"{"id":"4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27","state":"succeeded","#,
            r#""steps":[{"op":"resize","width":640,"fit":"cover"},{"op":"grayscale"}],"#,
            r#""format":"jpeg","quality":85,"#,
            r#""created_at":"2025-12-01T10:00:00.123Z","updated_at":"2025-12-01T10:00:00.456Z","#,
            r#""started_at":"2025-12-01T10:00:00.2Z","finished_at":"2025-12-01T10:00:00.456Z","#,
            r#""attempts":1,"worker":"worker-1","error":null,"result_deleted":false,"#,
            r#""result":{"content_type":"image/jpeg","width":640,"height":400,"bytes":51234,"processing_ms":7},"#,
            r#""callback":{"url":"https://hooks.example.com/pixmill","state":"delivered","attempts":["#,
            r#"{"at_ms":1764583200500,"status":500,"error":"the receiver answered 500"},"#,
            r#"{"at_ms":1764583201500,"status":204,"error":null}]},"#,
            r#""links":{"self":"/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27","result":"/v1/jobs/4f40a890-5c1e-4d7b-9a3e-2b8f6c0d1e27/result"}}"#,
        );
        assert_eq!(got, want);
    }

    #[test]
    fn a_queued_job_shows_nulls_and_a_deleted_result_is_hidden() {
        let mut queued = job();
        queued.state = JobState::Queued;
        queued.started_at = None;
        queued.finished_at = None;
        queued.worker = None;
        queued.callback = None;
        let value = serde_json::to_value(view(&queued, "local")).expect("serialize");
        for key in [
            "started_at",
            "finished_at",
            "worker",
            "error",
            "result",
            "callback",
        ] {
            assert_eq!(value[key], serde_json::Value::Null, "{key}");
        }
        let mut deleted = job();
        deleted.result_deleted_at = Some(1);
        let value = serde_json::to_value(view(&deleted, "local")).expect("serialize");
        assert_eq!(value["result"], serde_json::Value::Null);
        assert_eq!(value["result_deleted"], true);
    }

    /// Another tenant's caller (an admin) sees the webhook's progress, but neither its
    /// URL nor the failure reasons that may name it.
    #[test]
    fn only_the_jobs_tenant_sees_where_its_webhook_goes() {
        let mut job = job();
        if let Some(callback) = job.callback.as_mut() {
            callback.attempts[0].error =
                Some("could not deliver: https://hooks.example.com/pixmill refused".into());
        }
        let owner = serde_json::to_value(view(&job, "local")).expect("serialize");
        assert_eq!(
            owner["callback"]["url"],
            "https://hooks.example.com/pixmill"
        );
        let other = view(&job, "ops");
        let text = serde_json::to_string(&other).expect("serialize");
        assert!(!text.contains("hooks.example.com"), "{text}");
        let callback = serde_json::to_value(&other.callback).expect("serialize");
        assert_eq!(
            callback,
            serde_json::json!({
                "state": "delivered",
                "attempts": [
                    {"at_ms": 1_764_583_200_500_i64, "status": 500, "error": WITHHELD_ERROR},
                    {"at_ms": 1_764_583_201_500_i64, "status": 204, "error": null},
                ],
            })
        );
        // Everything else is the same.
        let mut without = serde_json::to_value(&other).expect("serialize");
        let mut owners = owner.clone();
        without["callback"] = serde_json::Value::Null;
        owners["callback"] = serde_json::Value::Null;
        assert_eq!(without, owners);
    }
}

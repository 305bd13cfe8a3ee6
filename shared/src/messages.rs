//! The messages that cross the broker.
//!
//! A wire name, once shipped, is never renamed: the golden-JSON tests at the bottom of
//! this file pin every one of them.

use std::borrow::Cow;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};
use serde_json::{Map, Value};
use uuid::Uuid;

/// One job, as the gateway publishes it on the jobs exchange.
///
/// The image itself never travels here (claim check): `input` is a blob-store key.
///
/// Readers ignore fields they do not know, so a field added to the envelope in a minor
/// version of the contract never breaks an older worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct JobRequest {
    /// The job id. Also the AMQP `message_id` and `correlation_id`.
    pub id: Uuid,
    /// Blob-store key of the uploaded image.
    pub input: String,
    /// The steps, applied in order: built-in ops and the custom ops a gateway registers.
    pub steps: Vec<JobStep>,
    /// Encoding of the result. The gateway resolves "same as input" before publishing,
    /// so a worker never has to guess.
    pub format: OutputFormat,
    /// Encoder quality, 1–100 (JPEG; ignored by lossless encoders).
    #[schemars(range(min = 1, max = 100))]
    pub quality: u8,
    /// The routing slip's position: the index of the first step not yet run. `input` is
    /// the image as it stands before that step. Absent (0) on a job as the gateway
    /// publishes it; a worker that runs some steps and hands the rest to another
    /// worker's queue sets it on the message it forwards. Since contract 1.1.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub cursor: usize,
    /// The hops the job has made so far, oldest first: which worker ran which steps,
    /// and for how long. Since contract 1.1.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<Hop>,
    /// Named outputs made from one decode of the input: each runs its own steps after
    /// the job's `steps` and is encoded in its own format. With variants, `format` and
    /// `quality` repeat the first variant's, and the reply lists every output in
    /// [`JobResult::outputs`]. Every step of such a job is built in. Since contract 1.2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub variants: Vec<Variant>,
}

/// One named output of a job with variants. Since contract 1.2.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Variant {
    /// Unique in the job: 1 to 40 of `a-z`, `0-9`, `_` and `-`, starting with a letter
    /// or digit. It names the output's blob key ([`crate::keys::variant`]) and its URL.
    #[schemars(regex(pattern = r"^[a-z0-9][a-z0-9_-]{0,39}$"))]
    pub name: String,
    /// Built-in steps, run after the job's own `steps`.
    #[serde(default)]
    pub steps: Vec<Step>,
    /// Encoding of this output.
    pub format: OutputFormat,
    /// Encoder quality, 1–100.
    #[schemars(range(min = 1, max = 100))]
    pub quality: u8,
}

/// A variant's name: 1 to 40 of `a-z`, `0-9`, `_` and `-`, starting with a letter or a
/// digit. It becomes part of a blob key and a URL path, so it is kept plain.
pub fn valid_variant_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && name.len() <= 40
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

impl JobRequest {
    /// The steps from the cursor on that one worker runs in a row: up to the next step
    /// whose op `runs_here` refuses. Returns the end index (exclusive); equal to the
    /// cursor when the step at the cursor is not this worker's.
    /// A cursor past the steps runs nothing: the cursor itself.
    pub fn run_end(&self, mut runs_here: impl FnMut(&JobStep) -> bool) -> usize {
        let Some(rest) = self.steps.get(self.cursor..) else {
            return self.cursor;
        };
        self.cursor + rest.iter().take_while(|s| runs_here(s)).count()
    }
}

/// One hop of a job's routing slip: a worker ran `steps[from..to]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Hop {
    /// The worker's name.
    pub worker: String,
    /// Index of the first step it ran.
    pub from: usize,
    /// Index after the last step it ran.
    pub to: usize,
    /// Its wall time for the hop: reading, processing and writing (ms).
    pub ms: u64,
}

/// A step of a job: a built-in op, or a custom op a gateway registered
/// (`PIXMILL_OPS_FILE`) and another worker serves. Both look alike on the wire:
/// `{"op": "<name>", …parameters}`. A name that is not a built-in op is a custom op.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStep {
    Builtin(Step),
    Custom(CustomStep),
}

/// A step of a custom op: its name and its parameters, as given. The gateway checked
/// them against the op's JSON Schema; the worker that serves the op reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomStep {
    pub op: String,
    pub params: Map<String, Value>,
}

impl JobStep {
    /// The op's wire name.
    pub fn op(&self) -> &str {
        match self {
            JobStep::Builtin(step) => step.op(),
            JobStep::Custom(custom) => &custom.op,
        }
    }

    /// The built-in step, when it is one.
    pub fn builtin(&self) -> Option<&Step> {
        match self {
            JobStep::Builtin(step) => Some(step),
            JobStep::Custom(_) => None,
        }
    }
}

impl From<Step> for JobStep {
    fn from(step: Step) -> Self {
        JobStep::Builtin(step)
    }
}

impl Serialize for JobStep {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            JobStep::Builtin(step) => step.serialize(serializer),
            JobStep::Custom(custom) => {
                let mut object = Map::with_capacity(custom.params.len() + 1);
                object.insert("op".into(), Value::String(custom.op.clone()));
                for (k, v) in &custom.params {
                    object.insert(k.clone(), v.clone());
                }
                object.serialize(serializer)
            }
        }
    }
}

impl<'de> Deserialize<'de> for JobStep {
    /// A built-in op is read by [`Step`]'s own rules (and its exact error messages); any
    /// other op name is a custom op with the rest of the object as its parameters.
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut object = Map::<String, Value>::deserialize(deserializer)?;
        let op = match object.get("op") {
            Some(Value::String(op)) => op.clone(),
            Some(_) => return Err(D::Error::custom("`op` must be a string")),
            None => return Err(D::Error::missing_field("op")),
        };
        if Step::OPS.contains(&op.as_str()) {
            return Step::deserialize(Value::Object(object))
                .map(JobStep::Builtin)
                .map_err(D::Error::custom);
        }
        if !valid_op_name(&op) {
            return Err(D::Error::custom(format!(
                "op {op:?} is not an op name: 1 to 40 lower-case letters, digits and `_`, \
                 starting with a letter"
            )));
        }
        object.remove("op");
        Ok(JobStep::Custom(CustomStep { op, params: object }))
    }
}

/// Where a job's routing slip changes hands: each index whose step another worker owns
/// than the step before it (a built-in op after a custom one, or another custom op).
/// A worker that hands the job on there writes the image at
/// [`crate::keys::intermediate`]`(id, index)`.
pub fn handoffs(steps: &[JobStep]) -> Vec<usize> {
    fn owner(step: &JobStep) -> Option<&str> {
        match step {
            JobStep::Builtin(_) => None,
            JobStep::Custom(custom) => Some(custom.op.as_str()),
        }
    }
    (1..steps.len())
        .filter(|&i| owner(&steps[i]) != owner(&steps[i - 1]))
        .collect()
}

/// A custom op's name: 1 to 40 of `a-z`, `0-9` and `_`, starting with a letter. It
/// becomes part of a queue name and a metric label, so it is kept plain.
pub fn valid_op_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= 40
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl JsonSchema for JobStep {
    fn schema_name() -> Cow<'static, str> {
        "JobStep".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let builtin = generator.subschema_for::<Step>();
        json_schema!({
            "description": "A step: a built-in op, or a custom op registered on the gateway \
                (PIXMILL_OPS_FILE), whose parameters sit beside `op` as for a built-in one.",
            "anyOf": [
                builtin,
                {
                    "title": "CustomStep",
                    "description": "A custom op's step. Its parameters follow the op's own \
                        JSON Schema, which the gateway checks; GET /openapi.json lists it.",
                    "type": "object",
                    "properties": {
                        "op": {
                            "type": "string",
                            "pattern": "^[a-z][a-z0-9_]{0,39}$",
                            "not": {"enum": Step::OPS}
                        }
                    },
                    "required": ["op"],
                    "additionalProperties": true
                }
            ]
        })
    }
}

/// One image operation. Tagged by `op` on the wire, e.g. `{"op":"blur","sigma":3}`.
// Adding a variant does not compile until the worker's pipeline and the validation
// below handle it: every match over `Step` is exhaustive on purpose.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Scale the image. With one side missing, the other keeps the aspect ratio.
    Resize {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
        /// How to reconcile both sides with the image's aspect ratio.
        #[serde(default)]
        fit: Fit,
    },
    /// Cut out a rectangle; it must lie inside the image.
    Crop {
        x: u32,
        y: u32,
        width: u32,
        height: u32,
    },
    /// A true Gaussian blur of standard deviation `sigma` pixels.
    Blur { sigma: f32 },
    /// Canny edge detection; the result is a one-channel binary edge map.
    Edges {
        #[serde(default = "default_low")]
        low: f32,
        #[serde(default = "default_high")]
        high: f32,
    },
    /// Reorder the colour channels; the default `bgr` swaps red and blue.
    Swap {
        #[serde(default)]
        order: ChannelOrder,
    },
    /// Convert to one luminance channel (alpha is kept).
    // An empty struct rather than a unit variant: serde's `deny_unknown_fields` ignores
    // unit variants of a tagged enum, so `{"op":"grayscale","sigma":3}` would pass
    // silently.
    Grayscale {},
    /// Rotate clockwise by 90, 180 or 270 degrees.
    Rotate { degrees: u16 },
    /// Mirror the image.
    Flip { direction: FlipDirection },
}

fn default_low() -> f32 {
    100.0
}

fn default_high() -> f32 {
    200.0
}

impl Step {
    /// Every op name, in the order the docs list them.
    pub const OPS: &'static [&'static str] = &[
        "resize",
        "crop",
        "blur",
        "edges",
        "swap",
        "grayscale",
        "rotate",
        "flip",
    ];

    /// The wire name of this step's op.
    pub fn op(&self) -> &'static str {
        match self {
            Step::Resize { .. } => "resize",
            Step::Crop { .. } => "crop",
            Step::Blur { .. } => "blur",
            Step::Edges { .. } => "edges",
            Step::Swap { .. } => "swap",
            Step::Grayscale {} => "grayscale",
            Step::Rotate { .. } => "rotate",
            Step::Flip { .. } => "flip",
        }
    }
}

/// How `resize` treats a box whose aspect ratio differs from the image's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Scale to fit inside the box; the result may be smaller on one side.
    Contain,
    /// Scale to cover the box, then crop the overflow around the centre: exactly the box.
    #[default]
    Cover,
    /// Stretch to exactly the box, ignoring the aspect ratio.
    Fill,
}

/// The order in which `swap` emits the input's red, green and blue channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    Rgb,
    Rbg,
    Grb,
    Gbr,
    Brg,
    #[default]
    Bgr,
}

/// Mirror axis for `flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlipDirection {
    /// Left becomes right.
    Horizontal,
    /// Top becomes bottom.
    Vertical,
}

/// Result encodings a job can ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
}

impl OutputFormat {
    /// Every accepted name, for error messages.
    pub const NAMES: &'static str = "jpeg, png, webp";

    /// The MIME type served with the result.
    pub fn content_type(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "image/jpeg",
            OutputFormat::Png => "image/png",
            OutputFormat::Webp => "image/webp",
        }
    }

    /// The wire name (`jpeg`, `png`, `webp`), as stored.
    pub fn as_str(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpeg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }

    /// File extension used in blob keys and download names.
    pub fn extension(self) -> &'static str {
        match self {
            OutputFormat::Jpeg => "jpg",
            OutputFormat::Png => "png",
            OutputFormat::Webp => "webp",
        }
    }

    /// Parses the user-facing name (`jpg` is accepted for `jpeg`).
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "jpeg" | "jpg" => Some(OutputFormat::Jpeg),
            "png" => Some(OutputFormat::Png),
            "webp" => Some(OutputFormat::Webp),
            _ => None,
        }
    }
}

/// What a worker reports on the job's `reply_to` queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Reply {
    /// The job this reply is about (also the AMQP `correlation_id`).
    pub job_id: Uuid,
    /// Which worker sent it, so operators can see the load spread.
    pub worker: String,
    /// 1 for the first delivery of the job, more for redeliveries.
    pub attempt: u32,
    /// How long before this reply the worker started the job (ms), on a final reply
    /// whose start was not reported: quick jobs skip the `started` reply. A duration,
    /// not a time, so the worker's clock need not agree with the gateway's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_ago_ms: Option<u64>,
    /// On a final reply, every hop of the job's routing slip, this worker's last: the
    /// job's `hops` plus its own. Since contract 1.1; absent, the job made one hop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hops: Vec<Hop>,
    /// What happened.
    #[serde(flatten)]
    pub outcome: Outcome,
}

/// The event a reply carries. `started` is informational; the other two are terminal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Outcome {
    /// A worker took the job and began decoding it.
    Started,
    /// The result is in the blob store.
    Succeeded(JobResult),
    /// The job cannot succeed; retrying the same request would fail again.
    Failed { code: ErrorCode, message: String },
}

/// Metadata of a finished result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct JobResult {
    /// Blob-store key of the encoded result.
    pub key: String,
    /// MIME type of the result.
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// Size of the encoded result.
    pub bytes: u64,
    /// Time the worker spent decoding, processing and encoding.
    pub processing_ms: u64,
    /// A job with variants: every output, in the job's order. The fields above repeat
    /// the first one. Since contract 1.2.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<VariantOutput>,
}

/// One output of a job with variants. Since contract 1.2.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VariantOutput {
    /// The variant's name.
    pub name: String,
    /// Blob-store key of the encoded output ([`crate::keys::variant`]).
    pub key: String,
    /// MIME type of the output.
    pub content_type: String,
    pub width: u32,
    pub height: u32,
    /// Size of the encoded output.
    pub bytes: u64,
}

/// Stable machine-readable failure codes. Clients branch on these, so they never change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The bytes are not a decodable image of a supported format.
    UndecodableImage,
    /// The image is larger than the configured pixel limit.
    TooManyPixels,
    /// A JPEG has more scans than the configured limit.
    TooManyScans,
    /// A step cannot apply to this image (e.g. a crop outside it).
    InvalidStep,
    /// The job message itself could not be understood.
    InvalidRequest,
    /// The input blob no longer exists.
    InputMissing,
    /// The result could not be encoded in the requested format.
    EncodeFailed,
    /// The job ran past the per-job time limit.
    Timeout,
    /// The job's message kept killing workers until the delivery limit was reached.
    WorkerCrashed,
    /// A transient failure (blob store unreachable, …) outlasted every retry.
    RetriesExhausted,
    /// The job's message or upload can no longer exist (found by the gateway's sweeper).
    Lost,
    /// The gateway refused the worker's reply: its result key is not the job's, its
    /// content type is not one pixmill writes, or it could not be read at all. Set by
    /// the gateway, never by a worker.
    InvalidReply,
    /// The job message speaks a newer major version of the contract than the worker
    /// that took it (its `x-pixmill-contract` header); upgrade the workers.
    UnsupportedContract,
    /// A bug: the worker panicked or met an impossible state.
    Internal,
}

impl ErrorCode {
    /// The wire name, for storing and for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::UndecodableImage => "undecodable_image",
            ErrorCode::TooManyPixels => "too_many_pixels",
            ErrorCode::TooManyScans => "too_many_scans",
            ErrorCode::InvalidStep => "invalid_step",
            ErrorCode::InvalidRequest => "invalid_request",
            ErrorCode::InputMissing => "input_missing",
            ErrorCode::EncodeFailed => "encode_failed",
            ErrorCode::Timeout => "timeout",
            ErrorCode::WorkerCrashed => "worker_crashed",
            ErrorCode::RetriesExhausted => "retries_exhausted",
            ErrorCode::Lost => "lost",
            ErrorCode::InvalidReply => "invalid_reply",
            ErrorCode::UnsupportedContract => "unsupported_contract",
            ErrorCode::Internal => "internal",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id() -> Uuid {
        Uuid::parse_str("7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11").expect("valid uuid")
    }

    /// Pins the JobRequest wire format, including every op's field names and defaults.
    #[test]
    fn job_request_golden_json() {
        let job = JobRequest {
            id: id(),
            input: "inputs/7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11".into(),
            steps: Vec::from(
                [
                    Step::Resize {
                        width: Some(640),
                        height: None,
                        fit: Fit::Contain,
                    },
                    Step::Crop {
                        x: 1,
                        y: 2,
                        width: 3,
                        height: 4,
                    },
                    Step::Blur { sigma: 2.5 },
                    Step::Edges {
                        low: 100.0,
                        high: 200.0,
                    },
                    Step::Swap {
                        order: ChannelOrder::Bgr,
                    },
                    Step::Grayscale {},
                    Step::Rotate { degrees: 270 },
                    Step::Flip {
                        direction: FlipDirection::Vertical,
                    },
                ]
                .map(JobStep::from),
            ),
            format: OutputFormat::Webp,
            quality: 85,
            cursor: 0,
            hops: Vec::new(),
            variants: Vec::new(),
        };
        let golden = json!({
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
        assert_eq!(serde_json::to_value(&job).expect("serialize"), golden);
        let back: JobRequest = serde_json::from_value(golden).expect("deserialize");
        assert_eq!(back, job);
    }

    /// Pins a routing slip's fields: a custom op's step, the cursor and the hops.
    #[test]
    fn a_forwarded_job_golden_json() {
        let mut params = Map::new();
        params.insert("bits".into(), json!(3));
        let job = JobRequest {
            id: id(),
            input: "work/7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11-1.png".into(),
            steps: vec![
                Step::Grayscale {}.into(),
                JobStep::Custom(CustomStep {
                    op: "posterize".into(),
                    params,
                }),
            ],
            format: OutputFormat::Png,
            quality: 85,
            cursor: 1,
            hops: vec![Hop {
                worker: "w1".into(),
                from: 0,
                to: 1,
                ms: 12,
            }],
            variants: Vec::new(),
        };
        let golden = json!({
            "id": "7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11",
            "input": "work/7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11-1.png",
            "steps": [{"op": "grayscale"}, {"op": "posterize", "bits": 3}],
            "format": "png",
            "quality": 85,
            "cursor": 1,
            "hops": [{"worker": "w1", "from": 0, "to": 1, "ms": 12}]
        });
        assert_eq!(serde_json::to_value(&job).expect("serialize"), golden);
        let back: JobRequest = serde_json::from_value(golden).expect("deserialize");
        assert_eq!(back, job);
        assert_eq!(
            back.run_end(|s| s.builtin().is_some()),
            1,
            "posterize is not built in"
        );
        assert_eq!(back.run_end(|s| s.op() == "posterize"), 2);
        assert_eq!(handoffs(&back.steps), [1]);
        let past = JobRequest { cursor: 5, ..back };
        assert_eq!(
            past.run_end(|_| true),
            5,
            "a cursor past the steps runs nothing"
        );
    }

    /// Pins a job with variants and the success reply that lists its outputs.
    #[test]
    fn variants_golden_json() {
        let job = JobRequest {
            id: id(),
            input: "inputs/7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11".into(),
            steps: Vec::new(),
            format: OutputFormat::Jpeg,
            quality: 80,
            cursor: 0,
            hops: Vec::new(),
            variants: vec![
                Variant {
                    name: "w320".into(),
                    steps: vec![Step::Resize {
                        width: Some(320),
                        height: None,
                        fit: Fit::Cover,
                    }],
                    format: OutputFormat::Jpeg,
                    quality: 80,
                },
                Variant {
                    name: "w640-webp".into(),
                    steps: vec![Step::Resize {
                        width: Some(640),
                        height: None,
                        fit: Fit::Cover,
                    }],
                    format: OutputFormat::Webp,
                    quality: 80,
                },
            ],
        };
        let golden = json!({
            "id": "7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11",
            "input": "inputs/7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11",
            "steps": [],
            "format": "jpeg",
            "quality": 80,
            "variants": [
                {"name": "w320", "steps": [{"op": "resize", "width": 320, "fit": "cover"}],
                 "format": "jpeg", "quality": 80},
                {"name": "w640-webp", "steps": [{"op": "resize", "width": 640, "fit": "cover"}],
                 "format": "webp", "quality": 80}
            ]
        });
        assert_eq!(serde_json::to_value(&job).expect("serialize"), golden);
        let back: JobRequest = serde_json::from_value(golden).expect("deserialize");
        assert_eq!(back, job);
        // A variant with a field it does not know is refused, not run without it.
        let typo = json!({"name": "a", "format": "png", "quality": 80, "widht": 3});
        assert!(serde_json::from_value::<Variant>(typo).is_err());
        assert!(valid_variant_name("w640-webp") && valid_variant_name("2x"));
        assert!(!valid_variant_name("") && !valid_variant_name("-a") && !valid_variant_name("A"));
        assert!(!valid_variant_name("a/b") && !valid_variant_name(&"a".repeat(41)));

        let output = |name: &str, key: &str, content_type: &str, width| VariantOutput {
            name: name.into(),
            key: key.into(),
            content_type: content_type.into(),
            width,
            height: width * 5 / 8,
            bytes: 100,
        };
        let reply = Reply {
            job_id: id(),
            worker: "w1".into(),
            attempt: 1,
            started_ago_ms: None,
            hops: Vec::new(),
            outcome: Outcome::Succeeded(JobResult {
                key: "results/x-w320.jpg".into(),
                content_type: "image/jpeg".into(),
                width: 320,
                height: 200,
                bytes: 100,
                processing_ms: 9,
                outputs: vec![
                    output("w320", "results/x-w320.jpg", "image/jpeg", 320),
                    output("w640-webp", "results/x-w640-webp.webp", "image/webp", 640),
                ],
            }),
        };
        let golden = json!({
            "job_id": "7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11", "worker": "w1", "attempt": 1,
            "event": "succeeded", "key": "results/x-w320.jpg", "content_type": "image/jpeg",
            "width": 320, "height": 200, "bytes": 100, "processing_ms": 9,
            "outputs": [
                {"name": "w320", "key": "results/x-w320.jpg", "content_type": "image/jpeg",
                 "width": 320, "height": 200, "bytes": 100},
                {"name": "w640-webp", "key": "results/x-w640-webp.webp",
                 "content_type": "image/webp", "width": 640, "height": 400, "bytes": 100}
            ]
        });
        assert_eq!(serde_json::to_value(&reply).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_value::<Reply>(golden).expect("deserialize"),
            reply
        );
    }

    #[test]
    fn a_job_step_reads_built_in_ops_strictly() {
        let typo = serde_json::from_value::<JobStep>(json!({"op": "blur", "sigmaa": 1}));
        let message = typo.expect_err("blur has no sigmaa").to_string();
        assert!(message.contains("unknown field `sigmaa`"), "{message}");
        for bad in [
            json!({"sigma": 1}),
            json!({"op": 3}),
            json!({"op": "Posterize"}),
        ] {
            assert!(
                serde_json::from_value::<JobStep>(bad.clone()).is_err(),
                "{bad} is not a step"
            );
        }
        assert!(valid_op_name("watermark_v2"));
        assert!(!valid_op_name("2x") && !valid_op_name("") && !valid_op_name("a.b"));
    }

    #[test]
    fn step_defaults_fill_in() {
        let steps: Vec<Step> = serde_json::from_value(json!([
            {"op": "edges"},
            {"op": "swap"},
            {"op": "resize", "width": 10, "height": 20}
        ]))
        .expect("deserialize");
        assert_eq!(
            steps,
            vec![
                Step::Edges {
                    low: 100.0,
                    high: 200.0
                },
                Step::Swap {
                    order: ChannelOrder::Bgr
                },
                Step::Resize {
                    width: Some(10),
                    height: Some(20),
                    fit: Fit::Cover
                },
            ]
        );
    }

    #[test]
    fn unknown_ops_and_fields_are_rejected() {
        let unknown_op = serde_json::from_value::<Step>(json!({"op": "sharpen"}));
        assert!(unknown_op.is_err());
        let unknown_field = serde_json::from_value::<Step>(json!({"op": "blur", "sigmaa": 1}));
        let message = unknown_field.expect_err("must fail").to_string();
        assert!(message.contains("sigmaa"), "{message}");
        let no_params = serde_json::from_value::<Step>(json!({"op": "grayscale", "sigma": 3}));
        let message = no_params
            .expect_err("grayscale takes no parameters")
            .to_string();
        assert!(message.contains("sigma"), "{message}");
        let wire = serde_json::to_value(Step::Grayscale {}).expect("serialize");
        assert_eq!(wire, json!({"op": "grayscale"}));
    }

    #[test]
    fn op_names_match_the_wire() {
        let steps: Vec<Step> = serde_json::from_value(json!([
            {"op": "resize", "width": 1}, {"op": "crop", "x": 0, "y": 0, "width": 1, "height": 1},
            {"op": "blur", "sigma": 1}, {"op": "edges"}, {"op": "swap"}, {"op": "grayscale"},
            {"op": "rotate", "degrees": 90}, {"op": "flip", "direction": "horizontal"}
        ]))
        .expect("deserialize");
        let names: Vec<&str> = steps.iter().map(Step::op).collect();
        assert_eq!(names, Step::OPS);
    }

    /// Pins the three reply shapes.
    #[test]
    fn reply_golden_json() {
        let started = Reply {
            job_id: id(),
            worker: "w1".into(),
            attempt: 1,
            started_ago_ms: None,
            hops: Vec::new(),
            outcome: Outcome::Started,
        };
        assert_eq!(
            serde_json::to_value(&started).expect("serialize"),
            json!({"job_id": "7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11", "worker": "w1", "attempt": 1, "event": "started"})
        );
        let succeeded = Reply {
            job_id: id(),
            worker: "w1".into(),
            attempt: 2,
            started_ago_ms: None,
            hops: Vec::new(),
            outcome: Outcome::Succeeded(JobResult {
                key: "results/x.jpg".into(),
                content_type: "image/jpeg".into(),
                width: 640,
                height: 400,
                bytes: 12345,
                processing_ms: 17,
                outputs: Vec::new(),
            }),
        };
        let golden = json!({
            "job_id": "7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11", "worker": "w1", "attempt": 2,
            "event": "succeeded", "key": "results/x.jpg", "content_type": "image/jpeg",
            "width": 640, "height": 400, "bytes": 12345, "processing_ms": 17
        });
        assert_eq!(serde_json::to_value(&succeeded).expect("serialize"), golden);
        assert_eq!(
            serde_json::from_value::<Reply>(golden.clone()).expect("deserialize"),
            succeeded
        );
        // A quick job's final reply says when it started, since no `started` was sent.
        let mut quick = golden;
        quick["started_ago_ms"] = json!(21);
        assert_eq!(
            serde_json::from_value::<Reply>(quick.clone()).expect("deserialize"),
            Reply {
                started_ago_ms: Some(21),
                hops: Vec::new(),
                ..succeeded.clone()
            }
        );
        assert_eq!(
            serde_json::to_value(Reply {
                started_ago_ms: Some(21),
                hops: Vec::new(),
                ..succeeded
            })
            .expect("serialize"),
            quick
        );
        let failed = Reply {
            job_id: id(),
            worker: "w1".into(),
            attempt: 1,
            started_ago_ms: None,
            hops: Vec::new(),
            outcome: Outcome::Failed {
                code: ErrorCode::UndecodableImage,
                message: "bad".into(),
            },
        };
        assert_eq!(
            serde_json::to_value(&failed).expect("serialize"),
            json!({"job_id": "7b0c4a8e-1f5d-4c1e-9a55-0d7e3c7a9b11", "worker": "w1", "attempt": 1,
                   "event": "failed", "code": "undecodable_image", "message": "bad"})
        );
    }

    #[test]
    fn error_code_names_match_serde() {
        for code in [
            ErrorCode::UndecodableImage,
            ErrorCode::TooManyPixels,
            ErrorCode::TooManyScans,
            ErrorCode::InvalidStep,
            ErrorCode::InvalidRequest,
            ErrorCode::InputMissing,
            ErrorCode::EncodeFailed,
            ErrorCode::Timeout,
            ErrorCode::WorkerCrashed,
            ErrorCode::RetriesExhausted,
            ErrorCode::Lost,
            ErrorCode::InvalidReply,
            ErrorCode::UnsupportedContract,
            ErrorCode::Internal,
        ] {
            assert_eq!(
                serde_json::to_value(code).expect("serialize"),
                json!(code.as_str())
            );
        }
    }
}

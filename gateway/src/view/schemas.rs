//! Schemas for the wire types a job shows but `pixmill-shared` owns (states, steps,
//! formats, failure codes). `pixmill-shared` knows nothing of OpenAPI, so the gateway
//! describes them here.
//!
//! The job state's schema is built from [`shared::JobState::ALL`] itself. The others are
//! mirrors: each converts from its shared type with an exhaustive match that names every
//! field, so a new variant or field does not compile until its schema says how it looks;
//! the tests check that both serialize to the same JSON.

use std::borrow::Cow;

use serde::Serialize;
use utoipa::{
    PartialSchema, ToSchema,
    openapi::{RefOr, Schema, schema::ObjectBuilder, schema::Type},
};

use pixmill_shared as shared;

/// The schema of [`shared::JobState`], named `JobState`: its wire names, in order.
pub struct JobStateSchema;

impl PartialSchema for JobStateSchema {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "Where a job is in its life. `queued` and `running` are the only \
                 non-terminal states.",
            ))
            .enum_values(Some(shared::JobState::ALL.map(shared::JobState::as_str)))
            .into()
    }
}

impl ToSchema for JobStateSchema {
    fn name() -> Cow<'static, str> {
        Cow::Borrowed("JobState")
    }
}

/// The result's encoding. The default is the input's format (PNG for GIF input).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OutputFormat {
    Jpeg,
    Png,
    Webp,
}

impl From<shared::OutputFormat> for OutputFormat {
    fn from(format: shared::OutputFormat) -> Self {
        match format {
            shared::OutputFormat::Jpeg => OutputFormat::Jpeg,
            shared::OutputFormat::Png => OutputFormat::Png,
            shared::OutputFormat::Webp => OutputFormat::Webp,
        }
    }
}

/// How `resize` reconciles both sides with the image's aspect ratio.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Fit {
    /// Fit inside the box; the result may be smaller on one side.
    Contain,
    /// Exactly the box, cropping the overflow around the centre.
    #[default]
    Cover,
    /// Stretch to the box, ignoring the aspect ratio.
    Fill,
}

impl From<shared::Fit> for Fit {
    fn from(fit: shared::Fit) -> Self {
        match fit {
            shared::Fit::Contain => Fit::Contain,
            shared::Fit::Cover => Fit::Cover,
            shared::Fit::Fill => Fit::Fill,
        }
    }
}

/// The order `swap` emits the input's red, green and blue channels in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ChannelOrder {
    Rgb,
    Rbg,
    Grb,
    Gbr,
    Brg,
    /// Swaps red and blue.
    #[default]
    Bgr,
}

impl From<shared::ChannelOrder> for ChannelOrder {
    fn from(order: shared::ChannelOrder) -> Self {
        match order {
            shared::ChannelOrder::Rgb => ChannelOrder::Rgb,
            shared::ChannelOrder::Rbg => ChannelOrder::Rbg,
            shared::ChannelOrder::Grb => ChannelOrder::Grb,
            shared::ChannelOrder::Gbr => ChannelOrder::Gbr,
            shared::ChannelOrder::Brg => ChannelOrder::Brg,
            shared::ChannelOrder::Bgr => ChannelOrder::Bgr,
        }
    }
}

/// The mirror axis of `flip`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum FlipDirection {
    /// Left becomes right.
    Horizontal,
    /// Top becomes bottom.
    Vertical,
}

impl From<shared::FlipDirection> for FlipDirection {
    fn from(direction: shared::FlipDirection) -> Self {
        match direction {
            shared::FlipDirection::Horizontal => FlipDirection::Horizontal,
            shared::FlipDirection::Vertical => FlipDirection::Vertical,
        }
    }
}

/// One step of a pipeline, tagged by `op`, e.g. `{"op":"blur","sigma":3}`. Unknown
/// fields are refused.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Step {
    /// Lanczos3 resize. With one side given, the other keeps the aspect ratio.
    Resize {
        /// 1–10000 (`PIXMILL_MAX_SIDE`).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(minimum = 1, maximum = 10000)]
        width: Option<u32>,
        /// 1–10000 (`PIXMILL_MAX_SIDE`).
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schema(minimum = 1, maximum = 10000)]
        height: Option<u32>,
        #[serde(default)]
        fit: Fit,
    },
    /// A rectangle that must lie inside the image at that step.
    Crop {
        x: u32,
        y: u32,
        #[schema(minimum = 1)]
        width: u32,
        #[schema(minimum = 1)]
        height: u32,
    },
    /// A true Gaussian blur of standard deviation `sigma` pixels.
    Blur {
        #[schema(minimum = 0.1, maximum = 50)]
        sigma: f32,
    },
    /// Canny edge detection on the luma; one channel, each pixel 0 or 255.
    Edges {
        /// Lower threshold on the Sobel gradient magnitude, at most `high`.
        #[serde(default)]
        #[schema(minimum = 0, maximum = 1500, default = 100)]
        low: f32,
        #[serde(default)]
        #[schema(minimum = 0, maximum = 1500, default = 200)]
        high: f32,
    },
    /// Reorder the colour channels.
    Swap {
        #[serde(default)]
        order: ChannelOrder,
    },
    /// One luminance channel (alpha is kept). Takes no parameters.
    Grayscale {},
    /// Clockwise, by 90, 180 or 270 degrees.
    Rotate {
        #[schema(minimum = 90, maximum = 270, multiple_of = 90)]
        degrees: u16,
    },
    /// Mirror the image.
    Flip { direction: FlipDirection },
}

impl From<&shared::Step> for Step {
    fn from(step: &shared::Step) -> Self {
        match *step {
            shared::Step::Resize { width, height, fit } => Step::Resize {
                width,
                height,
                fit: fit.into(),
            },
            shared::Step::Crop {
                x,
                y,
                width,
                height,
            } => Step::Crop {
                x,
                y,
                width,
                height,
            },
            shared::Step::Blur { sigma } => Step::Blur { sigma },
            shared::Step::Edges { low, high } => Step::Edges { low, high },
            shared::Step::Swap { order } => Step::Swap {
                order: order.into(),
            },
            shared::Step::Grayscale {} => Step::Grayscale {},
            shared::Step::Rotate { degrees } => Step::Rotate { degrees },
            shared::Step::Flip { direction } => Step::Flip {
                direction: direction.into(),
            },
        }
    }
}

/// The op names `op` takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    Resize,
    Crop,
    Blur,
    Edges,
    Swap,
    Grayscale,
    Rotate,
    Flip,
}

/// A job's `error.code`: a worker's failure code, `cancelled`, or `expired`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobErrorCode {
    UndecodableImage,
    TooManyPixels,
    TooManyScans,
    InvalidStep,
    InvalidRequest,
    InputMissing,
    EncodeFailed,
    /// The job ran past `PIXMILL_JOB_TIMEOUT_SECS`.
    Timeout,
    /// Every worker that took the job died, up to the queue's delivery limit.
    WorkerCrashed,
    /// A transient failure outlasted `PIXMILL_MAX_RETRIES` retries.
    RetriesExhausted,
    /// The sweeper found a job that could not run any more.
    Lost,
    /// The gateway refused the worker's reply (a result key not the job's, a content
    /// type pixmill does not write, or a reply it could not read).
    InvalidReply,
    /// The job message speaks a newer major version of the broker contract than the
    /// worker that took it.
    UnsupportedContract,
    Internal,
    /// Cancelled while queued.
    Cancelled,
    /// Its files were removed after the retention period.
    Expired,
}

impl From<shared::ErrorCode> for JobErrorCode {
    fn from(code: shared::ErrorCode) -> Self {
        use shared::ErrorCode as E;
        match code {
            E::UndecodableImage => JobErrorCode::UndecodableImage,
            E::TooManyPixels => JobErrorCode::TooManyPixels,
            E::TooManyScans => JobErrorCode::TooManyScans,
            E::InvalidStep => JobErrorCode::InvalidStep,
            E::InvalidRequest => JobErrorCode::InvalidRequest,
            E::InputMissing => JobErrorCode::InputMissing,
            E::EncodeFailed => JobErrorCode::EncodeFailed,
            E::Timeout => JobErrorCode::Timeout,
            E::WorkerCrashed => JobErrorCode::WorkerCrashed,
            E::RetriesExhausted => JobErrorCode::RetriesExhausted,
            E::Lost => JobErrorCode::Lost,
            E::InvalidReply => JobErrorCode::InvalidReply,
            E::UnsupportedContract => JobErrorCode::UnsupportedContract,
            E::Internal => JobErrorCode::Internal,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, to_value};

    fn same<A: Serialize, B: Serialize>(a: A, b: B) {
        assert_eq!(
            to_value(&a).expect("serialize"),
            to_value(&b).expect("serialize")
        );
    }

    /// The mirrors serialize exactly like the wire types, so their schemas describe
    /// what is sent.
    #[test]
    fn mirrors_serialize_like_the_wire_types() {
        for state in shared::JobState::ALL {
            same(state, state.as_str());
        }
        let names: Vec<Value> = shared::JobState::ALL
            .iter()
            .map(|s| Value::from(s.as_str()))
            .collect();
        let schema = to_value(JobStateSchema::schema()).expect("serialize");
        assert_eq!(schema["enum"], Value::from(names), "every state, in order");
        for format in [
            shared::OutputFormat::Jpeg,
            shared::OutputFormat::Png,
            shared::OutputFormat::Webp,
        ] {
            same(format, OutputFormat::from(format));
        }
        let steps = [
            shared::Step::Resize {
                width: Some(640),
                height: None,
                fit: shared::Fit::Contain,
            },
            shared::Step::Resize {
                width: None,
                height: Some(400),
                fit: shared::Fit::Fill,
            },
            shared::Step::Crop {
                x: 1,
                y: 2,
                width: 3,
                height: 4,
            },
            shared::Step::Blur { sigma: 2.5 },
            shared::Step::Edges {
                low: 100.0,
                high: 200.0,
            },
            shared::Step::Swap {
                order: shared::ChannelOrder::Gbr,
            },
            shared::Step::Grayscale {},
            shared::Step::Rotate { degrees: 270 },
            shared::Step::Flip {
                direction: shared::FlipDirection::Vertical,
            },
        ];
        for step in &steps {
            same(step, Step::from(step));
        }
        let sampled: std::collections::BTreeSet<&str> = steps.iter().map(|s| s.op()).collect();
        assert_eq!(sampled.len(), shared::Step::OPS.len(), "a sample per op");
        let named: Vec<Value> = [
            Op::Resize,
            Op::Crop,
            Op::Blur,
            Op::Edges,
            Op::Swap,
            Op::Grayscale,
            Op::Rotate,
            Op::Flip,
        ]
        .iter()
        .map(|op| to_value(op).expect("serialize"))
        .collect();
        let ops: Vec<Value> = shared::Step::OPS.iter().map(|&o| Value::from(o)).collect();
        assert_eq!(named, ops, "Op lists Step::OPS in order");
        for code in [
            shared::ErrorCode::UndecodableImage,
            shared::ErrorCode::TooManyPixels,
            shared::ErrorCode::TooManyScans,
            shared::ErrorCode::InvalidStep,
            shared::ErrorCode::InvalidRequest,
            shared::ErrorCode::InputMissing,
            shared::ErrorCode::EncodeFailed,
            shared::ErrorCode::Timeout,
            shared::ErrorCode::WorkerCrashed,
            shared::ErrorCode::RetriesExhausted,
            shared::ErrorCode::Lost,
            shared::ErrorCode::InvalidReply,
            shared::ErrorCode::UnsupportedContract,
            shared::ErrorCode::Internal,
        ] {
            same(code.as_str(), JobErrorCode::from(code));
        }
    }
}

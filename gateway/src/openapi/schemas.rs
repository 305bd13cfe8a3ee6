//! Schemas for what arrives as text: the submit parameters (as query parameters or
//! multipart fields) and raw image bodies. The shared wire types they name are described
//! in [`crate::view::schemas`].

use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        RefOr, Schema,
        schema::{KnownFormat, ObjectBuilder, SchemaFormat, Type},
    },
};

use crate::view::schemas::{ChannelOrder, Fit, FlipDirection, Op, OutputFormat};

/// Image bytes, as a request or response body; never empty.
pub struct ImageBytes;

impl PartialSchema for ImageBytes {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .min_length(Some(1))
            .description(Some("Image bytes; never empty"))
            .into()
    }
}

impl ToSchema for ImageBytes {}

/// Declares the submit parameters once, as query parameters (for a raw image body) and
/// as the fields of a multipart form (beside `image`).
macro_rules! job_params {
    ($( $(#[doc = $doc:literal])* $name:ident : $ty:ty $([$($opt:tt)*])? ),* $(,)?) => {
        /// The parameters of `POST /v1/jobs` in the query string, for a raw image body.
        /// A multipart upload sends them as form fields instead.
        #[derive(Debug, Default, IntoParams)]
        #[into_params(parameter_in = Query)]
        pub struct JobParams {
            $( $(#[doc = $doc])* $(#[param($($opt)*)])? pub $name: Option<$ty>, )*
        }

        /// A multipart submit: the `image` file and the job's parameters as plain fields.
        /// Any other field is refused, naming it.
        #[derive(Debug, Default, ToSchema)]
        #[serde(deny_unknown_fields)]
        pub struct SubmitForm {
            /// The image file. JPEG, PNG, WebP or GIF (first frame); the bytes decide, not
            /// the file name or its `Content-Type`.
            #[schema(value_type = String, format = Binary, min_length = 1)]
            pub image: Vec<u8>,
            $( $(#[doc = $doc])* #[schema(nullable = false)] $(#[schema($($opt)*)])? pub $name: Option<$ty>, )*
        }
    };
}

job_params! {
    /// The single op to run, with its parameters as further fields. Give `op` or
    /// `steps`, not both.
    op: Op [inline],
    /// A pipeline instead of `op`: a JSON array of step objects (see the `Step` schema),
    /// e.g. `[{"op":"crop","x":0,"y":0,"width":800,"height":600},{"op":"grayscale"}]`.
    steps: String [example = r#"[{"op":"resize","width":400},{"op":"grayscale"}]"#],
    /// `resize`: 1–10000; `crop`: the rectangle's width.
    width: u32 [minimum = 1, maximum = 10000, example = 640],
    /// `resize`: 1–10000; `crop`: the rectangle's height.
    height: u32 [minimum = 1, maximum = 10000, example = 400],
    /// `resize`: `cover` (default), `contain` or `fill`.
    fit: Fit [inline],
    /// `crop`: the rectangle's left edge.
    x: u32,
    /// `crop`: the rectangle's top edge.
    y: u32,
    /// `blur`: the Gaussian's standard deviation in pixels, 0.1–50.
    sigma: f32 [minimum = 0.1, maximum = 50, example = 3],
    /// `edges`: lower Canny threshold, 0–1500, default 100, at most `high`.
    low: f32 [minimum = 0, maximum = 1500],
    /// `edges`: upper Canny threshold, 0–1500, default 200.
    high: f32 [minimum = 0, maximum = 1500],
    /// `swap`: the output channel order, default `bgr`.
    order: ChannelOrder [inline],
    /// `rotate`: 90, 180 or 270, clockwise.
    degrees: u16 [minimum = 90, maximum = 270, multiple_of = 90],
    /// `flip`: `horizontal` or `vertical`.
    direction: FlipDirection [inline],
    /// The result's encoding; the default is the input's format (PNG for GIF input).
    format: OutputFormat [inline],
    /// JPEG quality 1–100, default 85. PNG and WebP are lossless.
    quality: u8 [minimum = 1, maximum = 100, example = 85],
    /// An http(s) URL to POST the job record to when it ends, signed in
    /// `Pixmill-Signature` with the tenant's secret (`GET /v1/webhooks/secret`). Needs
    /// `PIXMILL_WEBHOOK_SECRET` on the gateway; private and loopback addresses are
    /// refused unless listed in `PIXMILL_WEBHOOK_ALLOW`. Only the job's tenant sees it in
    /// the job's record.
    callback_url: String [format = "uri", max_length = 2048],
    /// `interactive` when someone waits at a screen (the upload page sends it): the job
    /// goes ahead of its tenant's bulk jobs waiting for their fair share. Default `bulk`.
    priority: Priority [inline],
}

/// Whether someone waits for the job at a screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Waits for its fair share behind the tenant's earlier jobs.
    #[default]
    Bulk,
    /// Released before the tenant's held bulk jobs, with a few slots of its own.
    Interactive,
}

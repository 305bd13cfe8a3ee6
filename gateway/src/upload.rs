//! Reading a submission: multipart form data (browser form, `curl -F`) or a raw image
//! body with parameters in the query string. The size limit is enforced while the body
//! streams in, so an oversized upload is refused without being buffered.
//!
//! Every byte of buffer an upload holds is first reserved from the gateway's upload
//! budget (`PIXMILL_UPLOAD_BUDGET_BYTES`, [`crate::admission::UploadBudget`]): all of a
//! declared `Content-Length` up front, then more as the buffer grows, and the plain form
//! fields as they are read. A budget with no room answers 503 `server_busy` before the
//! bytes are buffered.

use std::collections::BTreeMap;

use axum::{
    body::Body,
    extract::{FromRequest, Multipart, Request},
    http::header,
};
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use pixmill_shared::{
    OutputFormat, Step,
    messages::{CustomStep, JobStep, valid_variant_name},
};

use crate::custom_ops::{CustomOps, Refused};
use serde_json::{Map, Value};

use crate::{
    admission::Reservation,
    error::{ApiCode, ApiError},
};

/// Largest value of a plain (non-file) form field, e.g. a `steps` JSON array.
const MAX_FIELD_BYTES: usize = 256 * 1024;

/// A parsed submission, not yet validated against the image.
#[derive(Debug)]
pub struct Submission {
    /// The uploaded bytes.
    pub image: Bytes,
    /// Every other field or query parameter, by name.
    pub params: BTreeMap<String, String>,
}

/// What the job should do, parsed from the parameters.
#[derive(Debug, PartialEq)]
pub struct JobSpec {
    pub steps: Vec<JobStep>,
    /// `None`: same as the input.
    pub format: Option<OutputFormat>,
    pub quality: u8,
    /// `priority=interactive`: someone waits at a screen (the upload page sends it); the
    /// job goes ahead of its tenant's held bulk work. Default `bulk`.
    pub interactive: bool,
    /// Named outputs made from one decode (`variants`, a JSON array); empty for a job
    /// with one result.
    pub variants: Vec<VariantSpec>,
}

/// One requested variant, before the input's format is known.
#[derive(Debug, PartialEq)]
pub struct VariantSpec {
    pub name: String,
    pub steps: Vec<Step>,
    /// `None`: the job's `format`, or the input's.
    pub format: Option<OutputFormat>,
    pub quality: u8,
}

/// Most variants one job may carry: each is a full encode on one worker's slot, within
/// the job's time limit.
pub const MAX_VARIANTS: usize = 8;

/// Reads the request body (multipart or raw) with the upload limit, holding its buffer
/// in `held`: the caller drops that once it is done with the upload.
pub async fn read(
    request: Request,
    max_bytes: u64,
    held: &mut Reservation,
) -> Result<Submission, ApiError> {
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    // Multipart framing adds a little; the image field itself is counted exactly below.
    if declared.is_some_and(|n| n > max_bytes + MAX_FIELD_BYTES as u64 * 4) {
        return Err(ApiError::too_large(max_bytes));
    }
    let is_multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if is_multipart {
        read_multipart(request, max_bytes, held).await
    } else {
        read_raw(request, max_bytes, held).await
    }
}

/// An empty buffer with room for `expected` bytes, reserved first.
fn buffer(expected: usize, held: &mut Reservation) -> Result<BytesMut, ApiError> {
    held.add(expected)?;
    Ok(BytesMut::with_capacity(expected))
}

/// Appends `chunk` to `buf`, refusing past `max_bytes`, and reserving any room the
/// buffer grows by before it grows (doubling, as `Vec` would, but counted).
fn push(
    buf: &mut BytesMut,
    chunk: &[u8],
    max_bytes: u64,
    held: &mut Reservation,
) -> Result<(), ApiError> {
    let needed = buf.len() + chunk.len();
    if needed as u64 > max_bytes {
        return Err(ApiError::too_large(max_bytes));
    }
    if needed > buf.capacity() {
        let cap = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let target = needed.max(buf.capacity().saturating_mul(2)).min(cap);
        held.add(target - buf.capacity())?;
        buf.reserve(target - buf.len());
    }
    buf.extend_from_slice(chunk);
    Ok(())
}

/// Room for the whole body, as `Content-Length` announces it (capped at the upload
/// limit), so the buffer is allocated once instead of doubling and copying as it fills.
/// Untouched capacity costs address space, not memory.
fn expected_len(request: &Request, max_bytes: u64) -> usize {
    request
        .headers()
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
        .map_or(0, |n| usize::try_from(n.min(max_bytes)).unwrap_or(0))
}

async fn read_multipart(
    request: Request,
    max_bytes: u64,
    held: &mut Reservation,
) -> Result<Submission, ApiError> {
    let expected = expected_len(&request, max_bytes);
    let mut multipart = Multipart::from_request(request, &()).await.map_err(|e| {
        ApiError::new(
            ApiCode::MalformedMultipart,
            format!("the multipart body could not be read: {e}"),
        )
    })?;
    let mut image = None;
    let mut params = BTreeMap::new();
    let broken = |e: axum::extract::multipart::MultipartError| {
        if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(max_bytes)
        } else {
            ApiError::new(
                ApiCode::MalformedMultipart,
                format!("the multipart body could not be read: {}", e.body_text()),
            )
        }
    };
    while let Some(mut field) = multipart.next_field().await.map_err(broken)? {
        let name = field.name().unwrap_or_default().to_string();
        if name == "image" {
            if image.is_some() {
                return Err(ApiError::new(
                    ApiCode::DuplicateField,
                    "send exactly one `image` field",
                ));
            }
            let mut buf = buffer(expected, held)?;
            while let Some(chunk) = field.chunk().await.map_err(broken)? {
                push(&mut buf, &chunk, max_bytes, held)?;
            }
            image = Some(buf.freeze());
        } else {
            let mut buf = BytesMut::new();
            while let Some(chunk) = field.chunk().await.map_err(broken)? {
                if buf.len() + chunk.len() > MAX_FIELD_BYTES {
                    return Err(ApiError::invalid(format!(
                        "the field `{name}` is longer than {MAX_FIELD_BYTES} bytes"
                    )));
                }
                held.add(chunk.len())?;
                buf.extend_from_slice(&chunk);
            }
            let value = String::from_utf8(buf.to_vec())
                .map_err(|_| ApiError::invalid(format!("the field `{name}` is not UTF-8 text")))?;
            params.insert(name, value);
        }
    }
    let image = image.ok_or_else(|| {
        ApiError::new(
            ApiCode::MissingImage,
            "no `image` field: attach the file as form field `image`",
        )
    })?;
    if image.is_empty() {
        return Err(ApiError::new(
            ApiCode::EmptyImage,
            "the `image` field is empty",
        ));
    }
    Ok(Submission { image, params })
}

async fn read_raw(
    request: Request,
    max_bytes: u64,
    held: &mut Reservation,
) -> Result<Submission, ApiError> {
    let params = request
        .uri()
        .query()
        .map(|q| {
            url_decode_pairs(q)
                .into_iter()
                .collect::<BTreeMap<String, String>>()
        })
        .unwrap_or_default();
    let mut buf = buffer(expected_len(&request, max_bytes), held)?;
    let mut stream = Body::into_data_stream(request.into_body());
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| {
            ApiError::new(
                ApiCode::BodyReadFailed,
                format!("reading the body failed: {e}"),
            )
        })?;
        push(&mut buf, &chunk, max_bytes, held)?;
    }
    if buf.is_empty() {
        return Err(ApiError::new(
            ApiCode::MissingImage,
            "the body is empty: send the image as multipart field `image`, or as the raw body",
        ));
    }
    Ok(Submission {
        image: buf.freeze(),
        params,
    })
}

/// Splits `a=1&b=x%20y` into decoded pairs.
fn url_decode_pairs(query: &str) -> Vec<(String, String)> {
    fn hex(b: u8) -> Option<u8> {
        char::from(b)
            .to_digit(16)
            .and_then(|d| u8::try_from(d).ok())
    }
    fn decode(s: &str) -> String {
        let bytes = s.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            match bytes[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                    (Some(hi), Some(lo)) => {
                        out.push(hi << 4 | lo);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                },
                b => out.push(b),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (decode(k), decode(v))
        })
        .collect()
}

/// Turns the parameters into steps, output format and quality. A step may name a
/// built-in op or one of `ops`.
pub fn job_spec(params: &BTreeMap<String, String>, ops: &CustomOps) -> Result<JobSpec, ApiError> {
    let format = match params
        .get("format")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some(name) => Some(OutputFormat::parse(name).ok_or_else(|| {
            ApiError::invalid(format!(
                "format must be one of {} (got {name:?})",
                OutputFormat::NAMES
            ))
        })?),
    };
    let quality = match params
        .get("quality")
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
    {
        None => 85,
        Some(q) => q
            .parse::<u8>()
            .ok()
            .filter(|q| (1..=100).contains(q))
            .ok_or_else(|| {
                ApiError::invalid(format!(
                    "quality must be an integer between 1 and 100 (got {q:?})"
                ))
            })?,
    };
    let variants = match params.get("variants").map(|s| s.trim()) {
        None | Some("") => Vec::new(),
        Some(json) => parse_variants(json, format, quality)?,
    };
    let steps = match (params.get("steps"), params.get("op")) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "give either `op` with its parameters or `steps`, not both",
            ));
        }
        (Some(json), None) => parse_steps(json, ops)?,
        (None, Some(op)) => vec![single_step(op, params, ops)?],
        // With variants, the steps every variant shares are optional.
        (None, None) if !variants.is_empty() => Vec::new(),
        (None, None) => {
            return Err(ApiError::invalid(format!(
                "missing `op`: give op (one of {}) with its parameters, or `steps` as a JSON array",
                ops.all_names()
            )));
        }
    };
    let interactive = match params.get("priority").map(|s| s.trim()) {
        None | Some("" | "bulk") => false,
        Some("interactive") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "priority must be interactive or bulk (got {other:?})"
            )));
        }
    };
    if !variants.is_empty()
        && let Some((i, step)) = steps
            .iter()
            .enumerate()
            .find(|(_, s)| s.builtin().is_none())
    {
        return Err(ApiError::invalid(format!(
            "steps[{i}] ({}): a job with variants runs built-in ops only",
            step.op()
        )));
    }
    Ok(JobSpec {
        steps,
        format,
        quality,
        interactive,
        variants,
    })
}

/// Reads `variants`: a JSON array of `{"name", "steps", "format", "quality"}`, whose
/// `format` and `quality` default to the job's.
fn parse_variants(
    json: &str,
    format: Option<OutputFormat>,
    quality: u8,
) -> Result<Vec<VariantSpec>, ApiError> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| ApiError::invalid(format!("variants is not valid JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(
            "variants must be a JSON array of {\"name\", \"steps\", \"format\", \"quality\"} objects",
        ));
    };
    if items.len() > MAX_VARIANTS {
        return Err(ApiError::invalid(format!(
            "variants: at most {MAX_VARIANTS} per job (got {})",
            items.len()
        )));
    }
    let mut variants: Vec<VariantSpec> = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(mut fields) = item else {
            return Err(ApiError::invalid(format!("variants[{i}] is not an object")));
        };
        let name = match fields.remove("name") {
            Some(Value::String(name)) if valid_variant_name(&name) => name,
            Some(Value::String(name)) => {
                return Err(ApiError::invalid(format!(
                    "variants[{i}].name {name:?} is not a variant name: 1 to 40 lower-case \
                     letters, digits, `_` and `-`, starting with a letter or digit"
                )));
            }
            _ => return Err(ApiError::invalid(format!("variants[{i}] has no \"name\""))),
        };
        if variants.iter().any(|v| v.name == name) {
            return Err(ApiError::invalid(format!(
                "variants[{i}].name {name:?} is used twice; each variant needs its own name"
            )));
        }
        let steps = match fields.remove("steps") {
            None => Vec::new(),
            Some(Value::Array(steps)) => steps
                .into_iter()
                .enumerate()
                .map(|(j, step)| {
                    let op = step.get("op").and_then(Value::as_str).unwrap_or_default();
                    if !Step::OPS.contains(&op) {
                        return Err(ApiError::invalid(format!(
                            "variants[{i}].steps[{j}]: op {op:?} is not a built-in op ({}); \
                             a variant runs built-in ops only",
                            Step::OPS.join(", ")
                        )));
                    }
                    let op = op.to_string();
                    serde_json::from_value(step).map_err(|e| {
                        ApiError::invalid(format!("variants[{i}].steps[{j}] ({op}): {e}"))
                    })
                })
                .collect::<Result<Vec<Step>, _>>()?,
            Some(_) => {
                return Err(ApiError::invalid(format!(
                    "variants[{i}].steps must be a JSON array of step objects"
                )));
            }
        };
        let format = match fields.remove("format") {
            None | Some(Value::Null) => format,
            Some(Value::String(f)) => Some(OutputFormat::parse(&f).ok_or_else(|| {
                ApiError::invalid(format!(
                    "variants[{i}].format must be one of {} (got {f:?})",
                    OutputFormat::NAMES
                ))
            })?),
            Some(other) => {
                return Err(ApiError::invalid(format!(
                    "variants[{i}].format must be one of {} (got {other})",
                    OutputFormat::NAMES
                )));
            }
        };
        let quality = match fields.remove("quality") {
            None | Some(Value::Null) => quality,
            Some(q) => q
                .as_u64()
                .filter(|q| (1..=100).contains(q))
                .and_then(|q| u8::try_from(q).ok())
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "variants[{i}].quality must be an integer between 1 and 100 (got {q})"
                    ))
                })?,
        };
        if let Some(field) = fields.keys().next() {
            return Err(ApiError::invalid(format!(
                "variants[{i}] has an unknown field {field:?}; a variant has name, steps, format \
                 and quality"
            )));
        }
        variants.push(VariantSpec {
            name,
            steps,
            format,
            quality,
        });
    }
    Ok(variants)
}

fn parse_steps(json: &str, ops: &CustomOps) -> Result<Vec<JobStep>, ApiError> {
    let value: Value = serde_json::from_str(json)
        .map_err(|e| ApiError::invalid(format!("steps is not valid JSON: {e}")))?;
    let Value::Array(items) = value else {
        return Err(ApiError::invalid(
            "steps must be a JSON array of step objects",
        ));
    };
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let op = item.get("op").and_then(Value::as_str).map(str::to_string);
            match op {
                None => Err(ApiError::invalid(format!("steps[{i}] has no \"op\""))),
                Some(op) if Step::OPS.contains(&op.as_str()) => serde_json::from_value(item)
                    .map(JobStep::Builtin)
                    .map_err(|e| ApiError::invalid(format!("steps[{i}] ({op}): {e}"))),
                Some(op) => {
                    let Value::Object(mut params) = item else {
                        unreachable!("an item with an op is an object")
                    };
                    params.remove("op");
                    custom_step(op.clone(), params, ops).map_err(|refused| match refused {
                        Refused::UnknownOp(message) => ApiError::new(ApiCode::UnknownOp, message),
                        Refused::Invalid(message) => {
                            ApiError::invalid(format!("steps[{i}] ({op}): {message}"))
                        }
                    })
                }
            }
        })
        .collect()
}

/// A custom step, checked against its op's schema.
fn custom_step(
    op: String,
    params: Map<String, Value>,
    ops: &CustomOps,
) -> Result<JobStep, Refused> {
    let step = CustomStep { op, params };
    ops.check(&step)?;
    Ok(JobStep::Custom(step))
}

fn single_step(
    op: &str,
    params: &BTreeMap<String, String>,
    ops: &CustomOps,
) -> Result<JobStep, ApiError> {
    let op = op.trim();
    let builtin = Step::OPS.contains(&op);
    if !builtin && ops.get(op).is_none() {
        return Err(unknown_op(op, ops));
    }
    let mut object = Map::new();
    if builtin {
        object.insert("op".into(), Value::String(op.into()));
    }
    for (name, value) in params {
        if matches!(
            name.as_str(),
            "op" | "format" | "quality" | "callback_url" | "priority" | "variants"
        ) || value.trim().is_empty()
        {
            continue;
        }
        object.insert(name.clone(), scalar(value.trim()));
    }
    if !builtin {
        return custom_step(op.into(), object, ops).map_err(|refused| match refused {
            Refused::UnknownOp(message) => ApiError::new(ApiCode::UnknownOp, message),
            Refused::Invalid(message) => ApiError::invalid(format!("{op}: {message}")),
        });
    }
    serde_json::from_value(Value::Object(object))
        .map(JobStep::Builtin)
        .map_err(|e| ApiError::invalid(format!("{op}: {e}")))
}

/// Form fields are text; numbers become JSON numbers so serde sees the right types.
fn scalar(value: &str) -> Value {
    if let Ok(n) = value.parse::<i64>() {
        return Value::from(n);
    }
    if let Ok(f) = value.parse::<f64>()
        && f.is_finite()
    {
        return Value::from(f);
    }
    Value::String(value.into())
}

fn unknown_op(op: &str, ops: &CustomOps) -> ApiError {
    ApiError::new(
        ApiCode::UnknownOp,
        format!("unknown op {op:?}; expected one of {}", ops.all_names()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use pixmill_shared::Fit;

    fn params(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn plain_fields_make_one_step() {
        let spec = job_spec(
            &params(&[
                ("op", "resize"),
                ("width", "640"),
                ("height", "400"),
                ("format", "png"),
            ]),
            &CustomOps::default(),
        )
        .expect("valid");
        assert_eq!(
            spec,
            JobSpec {
                steps: vec![
                    Step::Resize {
                        width: Some(640),
                        height: Some(400),
                        fit: Fit::Cover
                    }
                    .into()
                ],
                format: Some(OutputFormat::Png),
                quality: 85,
                interactive: false,
                variants: Vec::new(),
            }
        );
    }

    #[test]
    fn steps_json_makes_a_pipeline() {
        let spec = job_spec(
            &params(&[(
                "steps",
                r#"[{"op":"blur","sigma":2},{"op":"swap"},{"op":"rotate","degrees":90}]"#,
            )]),
            &CustomOps::default(),
        )
        .expect("valid");
        assert_eq!(spec.steps.len(), 3);
    }

    #[test]
    fn custom_ops_are_checked_against_their_schema() {
        let ops = CustomOps::parse(
            r#"{"ops": [{"name": "posterize", "params": {"type": "object",
                "properties": {"bits": {"type": "integer", "minimum": 1, "maximum": 8}},
                "required": ["bits"], "additionalProperties": false}}]}"#,
        )
        .expect("registry");
        let spec = job_spec(
            &params(&[(
                "steps",
                r#"[{"op":"grayscale"},{"op":"posterize","bits":3}]"#,
            )]),
            &ops,
        )
        .expect("valid");
        assert_eq!(spec.steps[1].op(), "posterize");
        let spec = job_spec(&params(&[("op", "posterize"), ("bits", "2")]), &ops).expect("form");
        assert_eq!(
            serde_json::to_value(&spec.steps).expect("json"),
            serde_json::json!([{"op": "posterize", "bits": 2}])
        );
        let bad = job_spec(
            &params(&[("steps", r#"[{"op":"posterize","bits":9}]"#)]),
            &ops,
        )
        .expect_err("bits 9");
        assert!(
            bad.message()
                .contains("steps[0] (posterize): parameter `bits`"),
            "{}",
            bad.message()
        );
        let unknown = job_spec(&params(&[("steps", r#"[{"op":"watermark"}]"#)]), &ops)
            .expect_err("not registered");
        assert_eq!(unknown.code(), ApiCode::UnknownOp);
        assert!(
            unknown.message().contains("flip, posterize"),
            "{}",
            unknown.message()
        );
        let no_ops = job_spec(
            &params(&[("op", "posterize"), ("bits", "2")]),
            &CustomOps::default(),
        )
        .expect_err("none registered");
        assert_eq!(no_ops.code(), ApiCode::UnknownOp);
    }

    #[test]
    fn variants_take_the_jobs_format_and_quality_unless_they_name_their_own() {
        let ops = CustomOps::default();
        let spec = job_spec(
            &params(&[
                ("format", "jpeg"),
                ("quality", "70"),
                (
                    "variants",
                    r#"[{"name":"w320","steps":[{"op":"resize","width":320}]},
                        {"name":"w640-webp","steps":[{"op":"resize","width":640}],"format":"webp","quality":90}]"#,
                ),
            ]),
            &ops,
        )
        .expect("valid");
        assert!(spec.steps.is_empty(), "with variants, steps are optional");
        assert_eq!(spec.variants.len(), 2);
        assert_eq!(
            (
                &spec.variants[0].name[..],
                spec.variants[0].format,
                spec.variants[0].quality
            ),
            ("w320", Some(OutputFormat::Jpeg), 70)
        );
        assert_eq!(
            (spec.variants[1].format, spec.variants[1].quality),
            (Some(OutputFormat::Webp), 90)
        );
        // Shared steps ride along.
        let spec = job_spec(
            &params(&[("op", "grayscale"), ("variants", r#"[{"name":"a"}]"#)]),
            &ops,
        )
        .expect("valid");
        assert_eq!(spec.steps.len(), 1);
        assert_eq!(spec.variants[0].format, None, "the input's format, later");
    }

    #[test]
    fn variant_mistakes_are_named() {
        let ops = CustomOps::default();
        let nine: Vec<String> = (0..9).map(|i| format!(r#"{{"name":"v{i}"}}"#)).collect();
        let nine = format!("[{}]", nine.join(","));
        for (variants, expected) in [
            ("{", "variants is not valid JSON"),
            (r#"{"name":"a"}"#, "JSON array"),
            (nine.as_str(), "at most 8 per job (got 9)"),
            (r#"[{"steps":[]}]"#, "variants[0] has no \"name\""),
            (
                r#"[{"name":"Big"}]"#,
                "variants[0].name \"Big\" is not a variant name",
            ),
            (
                r#"[{"name":"a"},{"name":"a"}]"#,
                "variants[1].name \"a\" is used twice",
            ),
            (
                r#"[{"name":"a","steps":[{"op":"posterize"}]}]"#,
                "variants[0].steps[0]: op \"posterize\" is not a built-in op",
            ),
            (
                r#"[{"name":"a","steps":[{"op":"blur","sigmaa":1}]}]"#,
                "variants[0].steps[0] (blur): unknown field `sigmaa`",
            ),
            (
                r#"[{"name":"a","format":"gif"}]"#,
                "variants[0].format must be one of",
            ),
            (
                r#"[{"name":"a","quality":0}]"#,
                "variants[0].quality must be an integer",
            ),
            (r#"[{"name":"a","widht":3}]"#, "unknown field \"widht\""),
        ] {
            let err = job_spec(&params(&[("variants", variants)]), &ops)
                .expect_err(variants)
                .to_string();
            assert!(err.contains(expected), "{variants}: {err}");
        }
    }

    #[test]
    fn mistakes_are_named() {
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("op", "sharpen")], "unknown op \"sharpen\""),
            (&[("op", "blur"), ("sigmaa", "1")], "sigmaa"),
            (
                &[("op", "grayscale"), ("width", "10")],
                "unknown field `width`",
            ),
            (&[("op", "blur"), ("sigma", "abc")], "blur"),
            (&[("steps", "[{\"op\":")], "steps is not valid JSON"),
            (&[("steps", "{\"op\":\"blur\"}")], "JSON array"),
            (&[("op", "grayscale"), ("quality", "0")], "quality"),
            (
                &[("op", "grayscale"), ("format", "bmp")],
                "format must be one of",
            ),
            (&[], "missing `op`"),
        ];
        for (pairs, want) in cases {
            let err = job_spec(&params(pairs), &CustomOps::default()).expect_err("invalid");
            assert!(err.to_string().contains(want), "{pairs:?}: {err}");
        }
    }

    fn raw(body: Body, declared: Option<usize>) -> Request {
        let mut request = Request::builder().uri("/v1/jobs?op=grayscale");
        if let Some(n) = declared {
            request = request.header(header::CONTENT_LENGTH, n);
        }
        request.body(body).expect("request")
    }

    #[tokio::test]
    async fn uploads_take_their_bytes_from_the_budget() {
        let budget = crate::admission::UploadBudget::new(1000);
        // A declared length the budget cannot hold is refused before any byte is read.
        let mut held = budget.reservation();
        let busy = read(
            raw(Body::from(vec![1u8; 2000]), Some(2000)),
            4096,
            &mut held,
        )
        .await
        .expect_err("over the budget");
        assert_eq!(busy.code(), ApiCode::ServerBusy);
        drop(held);
        // Without a length, the buffer's growth is reserved as it happens.
        let chunks = (0..8).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![2u8; 200])));
        let mut held = budget.reservation();
        let busy = read(
            raw(Body::from_stream(futures_util::stream::iter(chunks)), None),
            4096,
            &mut held,
        )
        .await
        .expect_err("over the budget while streaming");
        assert_eq!(busy.code(), ApiCode::ServerBusy);
        drop(held);
        // One that fits is held until the reservation is dropped.
        let mut held = budget.reservation();
        let submission = read(raw(Body::from(vec![3u8; 600]), Some(600)), 4096, &mut held)
            .await
            .expect("fits");
        assert_eq!(submission.image.len(), 600);
        assert_eq!(budget.available(), 400);
        drop(held);
        assert_eq!(budget.available(), 1000);
    }

    #[test]
    fn query_strings_decode() {
        assert_eq!(
            url_decode_pairs("op=resize&width=640&fit=co%76er&x=a+b&flag"),
            vec![
                ("op".into(), "resize".into()),
                ("width".into(), "640".into()),
                ("fit".into(), "cover".into()),
                ("x".into(), "a b".into()),
                ("flag".into(), String::new()),
            ]
        );
    }
}

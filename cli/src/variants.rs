//! Variants: several named outputs of one upload, each with its own steps, format and
//! quality, sent to the gateway as its `variants` form field (a JSON array).
//!
//! ```sh
//! pixmill submit photo.jpg --variant w320:320 --variant w640-webp:640:webp:80 -o out/
//! pixmill submit photo.jpg --grayscale --variant thumb='[{"op":"resize","width":160}]'
//! pixmill submit photo.jpg --variants '[{"name":"w320","steps":[{"op":"resize","width":320}]}]'
//! ```
//!
//! `--variant` takes `NAME:SIZE[:FORMAT[:QUALITY]]` (a resize in the `--resize` syntax:
//! `W`, `WxH` or `xH`) or `NAME=STEPS_JSON` (the variant's steps as a JSON array).
//! `--variants` passes a whole array through. The step flags (or `--steps`) stay the
//! steps every variant shares, run first; with variants they may be left out.

use clap::ValueEnum;
use serde_json::{Map, Value, json};

use crate::steps::{self, Format, Size, Step};

/// Most variants one job may carry (the gateway's limit).
pub const MAX_VARIANTS: usize = 8;

/// What a variant's name may be: 1 to 40 of `a-z`, `0-9`, `_` and `-`, starting with a
/// letter or a digit. It becomes part of the output's URL and file name.
pub fn valid_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z' | b'0'..=b'9'))
        && name.len() <= 40
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

fn check_name(name: &str) -> Result<(), String> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{name:?} is not a variant name: 1 to 40 lower-case letters, digits, '_' and '-', \
             starting with a letter or digit"
        ))
    }
}

/// A variant's own steps.
#[derive(Debug, Clone, PartialEq)]
pub enum VariantSteps {
    /// The short form's resize; `--fit` applies to it as to every `--resize`.
    Resize(Size),
    /// `NAME=STEPS_JSON`, checked only for shape, like `--steps`.
    Json(Vec<Value>),
}

/// One `--variant`.
#[derive(Debug, Clone, PartialEq)]
pub struct VariantSpec {
    pub name: String,
    pub steps: VariantSteps,
    /// None: the job's `--format`, or the input's.
    pub format: Option<Format>,
    /// None: the job's `--quality`.
    pub quality: Option<u8>,
}

impl VariantSpec {
    /// The variant as the gateway's `variants` array wants it.
    pub fn to_value(&self, fit: Option<&str>) -> Value {
        let steps = match &self.steps {
            VariantSteps::Resize(size) => vec![
                serde_json::to_value(Step::Resize {
                    width: size.width,
                    height: size.height,
                    fit: fit.map(str::to_string),
                })
                .unwrap_or(Value::Null),
            ],
            VariantSteps::Json(steps) => steps.clone(),
        };
        let mut object = Map::new();
        object.insert("name".into(), Value::String(self.name.clone()));
        object.insert("steps".into(), Value::Array(steps));
        if let Some(format) = self.format {
            object.insert("format".into(), json!(format.as_str()));
        }
        if let Some(quality) = self.quality {
            object.insert("quality".into(), json!(quality));
        }
        Value::Object(object)
    }
}

/// Parses one `--variant`: `NAME:SIZE[:FORMAT[:QUALITY]]` or `NAME=STEPS_JSON`.
pub fn parse_variant(text: &str) -> Result<VariantSpec, String> {
    let usage = "give NAME:WIDTH[:FORMAT[:QUALITY]] (e.g. w640:640:webp:80) or \
                 NAME=STEPS_JSON (e.g. thumb='[{\"op\":\"resize\",\"width\":160}]')";
    let at = text
        .find([':', '='])
        .ok_or_else(|| format!("{text:?} is not a variant: {usage}"))?;
    let name = text[..at].trim();
    check_name(name)?;
    let rest = &text[at + 1..];
    if text[at..].starts_with('=') {
        let value: Value = serde_json::from_str(rest)
            .map_err(|e| format!("the steps of variant {name:?} are not valid JSON: {e}"))?;
        let Value::Array(items) = value else {
            return Err(format!(
                "the steps of variant {name:?} must be a JSON array, e.g. \
                 {name}='[{{\"op\":\"resize\",\"width\":640}}]'"
            ));
        };
        for (i, item) in items.iter().enumerate() {
            if !item.get("op").is_some_and(Value::is_string) {
                return Err(format!(
                    "step {i} of variant {name:?} must be an object with an \"op\" (got {item})"
                ));
            }
        }
        return Ok(VariantSpec {
            name: name.into(),
            steps: VariantSteps::Json(items),
            format: None,
            quality: None,
        });
    }
    let parts: Vec<&str> = rest.split(':').collect();
    if parts.len() > 3 {
        return Err(format!("{text:?} is not a variant: {usage}"));
    }
    let size = steps::parse_size(parts[0]).map_err(|e| format!("variant {name:?}: {e}"))?;
    let format = match parts.get(1).map(|f| f.trim()) {
        None | Some("") => None,
        Some(f) => Some(Format::from_str(f, true).map_err(|_| {
            format!("variant {name:?}: format {f:?} is not one of jpeg, png, webp")
        })?),
    };
    let quality = match parts.get(2).map(|q| q.trim()) {
        None | Some("") => None,
        Some(q) => Some(
            q.parse::<u8>()
                .ok()
                .filter(|q| (1..=100).contains(q))
                .ok_or_else(|| {
                    format!("variant {name:?}: quality {q:?} is not a whole number from 1 to 100")
                })?,
        ),
    };
    Ok(VariantSpec {
        name: name.into(),
        steps: VariantSteps::Resize(size),
        format,
        quality,
    })
}

/// A `--variants` array, checked only for shape: an array of at most [`MAX_VARIANTS`]
/// objects, each with a valid name of its own. Steps, formats and qualities are the
/// gateway's to judge.
#[derive(Debug, Clone, PartialEq)]
pub struct RawVariants(pub Vec<Value>);

/// Parses `--variants`.
pub fn parse_raw_variants(text: &str) -> Result<RawVariants, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("--variants is not valid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err(r#"--variants must be a JSON array, e.g. [{"name":"w640","steps":[{"op":"resize","width":640}]}]"#.into());
    };
    let mut names: Vec<&str> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let Some(name) = item.get("name").and_then(Value::as_str) else {
            return Err(format!(
                "--variants[{i}] must be an object with a \"name\" (got {item})"
            ));
        };
        check_name(name).map_err(|e| format!("--variants[{i}]: {e}"))?;
        names.push(name);
    }
    check_names(&names)?;
    Ok(RawVariants(items))
}

/// Names used twice, or too many variants.
pub fn check_names(names: &[&str]) -> Result<(), String> {
    if names.len() > MAX_VARIANTS {
        return Err(format!(
            "{} variants asked for; a job has at most {MAX_VARIANTS}",
            names.len()
        ));
    }
    for (i, name) in names.iter().enumerate() {
        if names[..i].contains(name) {
            return Err(format!(
                "the variant name {name:?} is used twice; each variant needs its own"
            ));
        }
    }
    Ok(())
}

/// The variants a submit asks for.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum Variants {
    /// One result, as without variants.
    #[default]
    None,
    /// `--variant`, in the order given.
    Specs(Vec<VariantSpec>),
    /// `--variants`, as written.
    Json(RawVariants),
}

impl Variants {
    pub fn is_empty(&self) -> bool {
        match self {
            Variants::None => true,
            Variants::Specs(specs) => specs.is_empty(),
            Variants::Json(raw) => raw.0.is_empty(),
        }
    }

    /// The variants' names, in order.
    pub fn names(&self) -> Vec<String> {
        match self {
            Variants::None => Vec::new(),
            Variants::Specs(specs) => specs.iter().map(|s| s.name.clone()).collect(),
            Variants::Json(raw) => raw
                .0
                .iter()
                .filter_map(|v| v.get("name").and_then(Value::as_str).map(str::to_string))
                .collect(),
        }
    }

    /// The `variants` form field, or None without variants. `fit` is `--fit`, for the
    /// short form's resizes.
    pub fn to_field(&self, fit: Option<&str>) -> Option<String> {
        let items: Vec<Value> = match self {
            Variants::None => return None,
            Variants::Specs(specs) => specs.iter().map(|s| s.to_value(fit)).collect(),
            Variants::Json(raw) => raw.0.clone(),
        };
        if items.is_empty() {
            return None;
        }
        serde_json::to_string(&items).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(spec: &str) -> Value {
        parse_variant(spec)
            .unwrap_or_else(|e| panic!("{spec:?} is refused: {e}"))
            .to_value(None)
    }

    #[test]
    fn the_short_form_is_a_resize_with_an_optional_format_and_quality() {
        assert_eq!(
            value("w320:320"),
            json!({"name": "w320", "steps": [{"op": "resize", "width": 320}]})
        );
        assert_eq!(
            value("w640-webp:640:webp:80"),
            json!({"name": "w640-webp", "steps": [{"op": "resize", "width": 640}],
                   "format": "webp", "quality": 80})
        );
        assert_eq!(
            value("box:300x200:PNG"),
            json!({"name": "box", "steps": [{"op": "resize", "width": 300, "height": 200}],
                   "format": "png"})
        );
        // An empty format keeps the job's, and the quality still applies.
        assert_eq!(
            value("tall_1:x400::60"),
            json!({"name": "tall_1", "steps": [{"op": "resize", "height": 400}], "quality": 60})
        );
        let fitted = parse_variant("sq:100x100").expect("parses");
        assert_eq!(
            fitted.to_value(Some("contain"))["steps"],
            json!([{"op": "resize", "width": 100, "height": 100, "fit": "contain"}])
        );
    }

    #[test]
    fn the_json_form_carries_the_variants_own_steps() {
        assert_eq!(
            value(r#"gray=[{"op":"grayscale"},{"op":"resize","width":160}]"#),
            json!({"name": "gray", "steps": [{"op": "grayscale"}, {"op": "resize", "width": 160}]})
        );
        // No steps of its own: the shared steps only, encoded its own way.
        assert_eq!(value("same=[]"), json!({"name": "same", "steps": []}));
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        for (bad, why) in [
            ("w320", "is not a variant"),
            ("", "is not a variant"),
            (":320", "is not a variant name"),
            ("W320:320", "is not a variant name"),
            ("-a:320", "is not a variant name"),
            ("a/b:320", "is not a variant name"),
            (&format!("{}:320", "a".repeat(41)), "is not a variant name"),
            ("w:0", "at least 1"),
            ("w:wide", "not a whole number"),
            ("w:x", "not a size"),
            ("w:320:gif", "not one of jpeg, png, webp"),
            ("w:320:jpeg:0", "from 1 to 100"),
            ("w:320:jpeg:101", "from 1 to 100"),
            ("w:320:jpeg:80:extra", "is not a variant"),
            ("w=[{", "not valid JSON"),
            (r#"w={"op":"blur"}"#, "must be a JSON array"),
            (r#"w=[{"sigma":2}]"#, "with an \"op\""),
        ] {
            let err = parse_variant(bad).expect_err(bad);
            assert!(err.contains(why), "{bad:?}: {err}");
        }
    }

    #[test]
    fn names_follow_the_gateways_rule() {
        for good in [
            "w320",
            "2x",
            "a",
            "w640-webp",
            "thumb_small",
            &"a".repeat(40),
        ] {
            assert!(valid_name(good), "{good:?}");
        }
        for bad in ["", "-a", "_a", "A", "w 1", "a.b", "é", &"a".repeat(41)] {
            assert!(!valid_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn raw_variants_are_checked_only_for_shape() {
        let ok = parse_raw_variants(
            r#"[{"name":"w320","steps":[{"op":"resize","width":320}],"future":1},{"name":"b"}]"#,
        )
        .expect("parses");
        assert_eq!(
            Variants::Json(ok.clone()).names(),
            ["w320".to_string(), "b".to_string()]
        );
        // Passed through as written: `--fit` is for the short form only.
        let field = Variants::Json(ok).to_field(Some("fill")).expect("a field");
        assert_eq!(
            serde_json::from_str::<Value>(&field).expect("JSON"),
            json!([{"name": "w320", "steps": [{"op": "resize", "width": 320}], "future": 1},
                   {"name": "b"}])
        );
        let nine: Vec<Value> = (0..9).map(|i| json!({"name": format!("v{i}")})).collect();
        for bad in [
            "[{".to_string(),
            r#"{"name":"a"}"#.into(),
            r#"[{"steps":[]}]"#.into(),
            r#"[{"name":"Big"}]"#.into(),
            r#"[{"name":"a"},{"name":"a"}]"#.into(),
            "[1]".into(),
            Value::Array(nine).to_string(),
        ] {
            assert!(parse_raw_variants(&bad).is_err(), "{bad} should be refused");
        }
    }

    #[test]
    fn names_are_unique_and_few() {
        assert!(check_names(&["a", "b"]).is_ok());
        assert!(
            check_names(&["a", "b", "a"])
                .expect_err("twice")
                .contains("twice")
        );
        let many: Vec<String> = (0..=MAX_VARIANTS).map(|i| format!("v{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        assert!(
            check_names(&many)
                .expect_err("too many")
                .contains("at most 8")
        );
        assert!(check_names(&many[..MAX_VARIANTS]).is_ok());
    }

    #[test]
    fn no_variants_send_no_field() {
        assert_eq!(Variants::None.to_field(None), None);
        assert_eq!(Variants::Specs(Vec::new()).to_field(None), None);
        assert!(Variants::None.is_empty() && Variants::None.names().is_empty());
    }
}

//! The steps of a job: parsed from step flags (`--resize 640x400 --blur 2`) or from a
//! `--steps` JSON array, and sent to the gateway as its `steps` form field.
//!
//! The gateway takes either one `op` with its parameters as plain fields, or a `steps`
//! JSON array for a pipeline. The client always sends `steps`, so one step and twenty go
//! the same way. The JSON shapes here are the gateway's wire names (tagged by `op`); the
//! golden tests below pin them.

use clap::ArgMatches;
use serde::Serialize;
use serde_json::Value;

/// One step, serialized exactly as the gateway's `steps` array wants it.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Step {
    Resize {
        #[serde(skip_serializing_if = "Option::is_none")]
        width: Option<u32>,
        #[serde(skip_serializing_if = "Option::is_none")]
        height: Option<u32>,
        /// None: the gateway's default (`cover`).
        #[serde(skip_serializing_if = "Option::is_none")]
        fit: Option<String>,
    },
    Crop {
        x: u32,
        y: u32,
        width: u32,
        height: u32,
    },
    Blur {
        sigma: f32,
    },
    /// Canny with the gateway's default thresholds.
    Edges,
    /// Red and blue exchanged: the gateway's default `order` (`bgr`).
    Swap,
    Grayscale,
    Rotate {
        degrees: u16,
    },
    Flip {
        direction: String,
    },
}

/// The value of `--resize`: `WxH`, `W` or `xH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Size {
    pub width: Option<u32>,
    pub height: Option<u32>,
}

/// The value of `--crop`: `X,Y,W,H`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rect {
    pub x: u32,
    pub y: u32,
    pub width: u32,
    pub height: u32,
}

/// A `--steps` array, checked only as far as the client can: an array of objects that
/// each name an `op`. Everything else (names, ranges) is the gateway's to judge, so a
/// parameter the gateway learns later needs no new client.
#[derive(Debug, Clone, PartialEq)]
pub struct RawSteps(pub Vec<Value>);

/// The steps a submit sends.
#[derive(Debug, Clone, PartialEq)]
pub enum Pipeline {
    Flags(Vec<Step>),
    Json(RawSteps),
}

impl Pipeline {
    /// The `steps` form field.
    pub fn to_field(&self) -> String {
        match self {
            Pipeline::Flags(steps) => serde_json::to_string(steps),
            Pipeline::Json(raw) => serde_json::to_string(&raw.0),
        }
        .unwrap_or_else(|_| "[]".into())
    }

    pub fn is_empty(&self) -> bool {
        match self {
            Pipeline::Flags(steps) => steps.is_empty(),
            Pipeline::Json(raw) => raw.0.is_empty(),
        }
    }
}

fn positive(text: &str, what: &str) -> Result<u32, String> {
    match text.trim().parse::<u32>() {
        Ok(0) => Err(format!("{what} must be at least 1")),
        Ok(n) => Ok(n),
        Err(_) => Err(format!("{what} {text:?} is not a whole number")),
    }
}

/// Parses `640x400`, `640` (height follows the aspect ratio) or `x400`.
pub fn parse_size(text: &str) -> Result<Size, String> {
    let lower = text.trim().to_ascii_lowercase().replace('×', "x");
    let (w, h) = match lower.split_once('x') {
        Some((w, h)) => (w, h),
        None => (lower.as_str(), ""),
    };
    let width = (!w.is_empty()).then(|| positive(w, "width")).transpose()?;
    let height = (!h.is_empty()).then(|| positive(h, "height")).transpose()?;
    if width.is_none() && height.is_none() {
        return Err(format!(
            "{text:?} is not a size: give WxH (640x400), W (640) or xH (x400)"
        ));
    }
    Ok(Size { width, height })
}

/// Parses `X,Y,W,H`.
pub fn parse_rect(text: &str) -> Result<Rect, String> {
    let parts: Vec<&str> = text.split(',').collect();
    let [x, y, w, h] = parts.as_slice() else {
        return Err(format!(
            "{text:?} is not a rectangle: give X,Y,W,H (e.g. 0,0,800,600)"
        ));
    };
    let number = |s: &str, what: &str| {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("{what} {s:?} is not a whole number"))
    };
    Ok(Rect {
        x: number(x, "x")?,
        y: number(y, "y")?,
        width: positive(w, "width")?,
        height: positive(h, "height")?,
    })
}

/// Parses a blur sigma: a finite number above 0 (the gateway checks its range).
pub fn parse_sigma(text: &str) -> Result<f32, String> {
    text.trim()
        .parse::<f32>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0)
        .ok_or_else(|| format!("sigma {text:?} is not a number above 0"))
}

/// Parses `--steps`: a JSON array of objects, each with a string `op`.
pub fn parse_raw_steps(text: &str) -> Result<RawSteps, String> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| format!("--steps is not valid JSON: {e}"))?;
    let Value::Array(items) = value else {
        return Err(r#"--steps must be a JSON array, e.g. [{"op":"resize","width":640}]"#.into());
    };
    for (i, item) in items.iter().enumerate() {
        if !item.get("op").is_some_and(Value::is_string) {
            return Err(format!(
                "--steps[{i}] must be an object with an \"op\" (got {item})"
            ));
        }
    }
    Ok(RawSteps(items))
}

/// Ids of the step flags, as the derive names them (the field names in `args.rs`).
pub const STEP_FLAGS: &[&str] = &[
    "resize",
    "crop",
    "blur",
    "edges",
    "swap",
    "grayscale",
    "rotate",
    "flip",
];

/// The step flags of a `submit` in the order they stand on the command line.
///
/// The derive gives one `Vec` per flag, which loses how flags of different kinds
/// interleave; `indices_of` gives each occurrence's position, and sorting by it restores
/// the order the user wrote. `fit` applies to every resize.
pub fn ordered(matches: &ArgMatches, fit: Option<&str>) -> Vec<Step> {
    let mut steps: Vec<(usize, Step)> = Vec::new();
    for (i, s) in positioned::<Size>(matches, "resize") {
        let fit = fit.map(str::to_string);
        steps.push((
            i,
            Step::Resize {
                width: s.width,
                height: s.height,
                fit,
            },
        ));
    }
    for (i, r) in positioned::<Rect>(matches, "crop") {
        steps.push((
            i,
            Step::Crop {
                x: r.x,
                y: r.y,
                width: r.width,
                height: r.height,
            },
        ));
    }
    for (i, sigma) in positioned::<f32>(matches, "blur") {
        steps.push((i, Step::Blur { sigma }));
    }
    for (i, degrees) in positioned::<u16>(matches, "rotate") {
        steps.push((i, Step::Rotate { degrees }));
    }
    for (i, direction) in positioned::<String>(matches, "flip") {
        steps.push((i, Step::Flip { direction }));
    }
    for (id, step) in [
        ("edges", Step::Edges),
        ("swap", Step::Swap),
        ("grayscale", Step::Grayscale {}),
    ] {
        for (i, _) in positioned::<bool>(matches, id) {
            steps.push((i, step.clone()));
        }
    }
    steps.sort_by_key(|(index, _)| *index);
    steps.into_iter().map(|(_, step)| step).collect()
}

/// Each value of a flag with its command-line position.
fn positioned<T: Clone + Send + Sync + 'static>(matches: &ArgMatches, id: &str) -> Vec<(usize, T)> {
    match (matches.indices_of(id), matches.get_many::<T>(id)) {
        (Some(indices), Some(values)) => indices.zip(values.cloned()).collect(),
        _ => Vec::new(),
    }
}

/// A short description in the flags' own syntax, e.g. `resize 320x200, rotate 90`.
/// An op or parameter this client does not know is shown as `name=value`.
pub fn describe(steps: &Value) -> String {
    let Some(items) = steps.as_array() else {
        return String::new();
    };
    items
        .iter()
        .map(describe_one)
        .collect::<Vec<_>>()
        .join(", ")
}

fn describe_one(step: &Value) -> String {
    let op = step["op"].as_str().unwrap_or("?");
    let num = |k: &str| match &step[k] {
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        _ => String::new(),
    };
    let known: &[&str] = match op {
        "resize" => &["width", "height", "fit"],
        "crop" => &["x", "y", "width", "height"],
        "blur" => &["sigma"],
        "rotate" => &["degrees"],
        "flip" => &["direction"],
        "swap" => &["order"],
        _ => &[],
    };
    let mut text = match op {
        "resize" => {
            let fit = step["fit"]
                .as_str()
                .map_or_else(String::new, |f| format!(" {f}"));
            let size = match (num("width"), num("height")) {
                (w, h) if h.is_empty() => w,
                (w, h) => format!("{w}x{h}"),
            };
            format!("resize {size}{fit}")
        }
        "crop" => format!(
            "crop {},{},{},{}",
            num("x"),
            num("y"),
            num("width"),
            num("height")
        ),
        "blur" => format!("blur {}", num("sigma")),
        "rotate" => format!("rotate {}", num("degrees")),
        "flip" => format!("flip {}", num("direction")),
        "swap" if step["order"].is_string() => format!("swap {}", num("order")),
        other => other.to_string(),
    };
    for (k, v) in step.as_object().into_iter().flatten() {
        if k != "op" && !known.contains(&k.as_str()) {
            text.push_str(&format!(" {k}={v}"));
        }
    }
    text
}

/// An output format, as the gateway names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Jpeg,
    Png,
    Webp,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Jpeg => "jpeg",
            Format::Png => "png",
            Format::Webp => "webp",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_three_forms() {
        let size = |w, h| Size {
            width: w,
            height: h,
        };
        assert_eq!(parse_size("640x400"), Ok(size(Some(640), Some(400))));
        assert_eq!(parse_size("640X400"), Ok(size(Some(640), Some(400))));
        assert_eq!(parse_size("640"), Ok(size(Some(640), None)));
        assert_eq!(parse_size("x400"), Ok(size(None, Some(400))));
        assert_eq!(parse_size("640x"), Ok(size(Some(640), None)));
        for bad in ["", "x", "0x10", "axb", "-5", "10x10x10", "1.5x2"] {
            assert!(parse_size(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn rectangles_need_four_numbers() {
        assert_eq!(
            parse_rect("1,2,30,40"),
            Ok(Rect {
                x: 1,
                y: 2,
                width: 30,
                height: 40
            })
        );
        for bad in ["1,2,3", "1,2,3,4,5", "a,2,3,4", "0,0,0,10", ""] {
            assert!(parse_rect(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn raw_steps_are_checked_only_for_shape() {
        assert!(parse_raw_steps(r#"[{"op":"resize","width":640,"future":1}]"#).is_ok());
        assert!(parse_raw_steps("[]").is_ok());
        for bad in ["[{\"op\":", r#"{"op":"blur"}"#, r#"[{"sigma":2}]"#, "[1]"] {
            assert!(parse_raw_steps(bad).is_err(), "{bad:?} should be refused");
        }
    }

    /// The gateway's wire names: a rename here would be refused as `invalid_parameter`.
    #[test]
    fn steps_serialize_as_the_gateway_expects() {
        let pipeline = Pipeline::Flags(vec![
            Step::Resize {
                width: Some(320),
                height: None,
                fit: Some("contain".into()),
            },
            Step::Crop {
                x: 1,
                y: 2,
                width: 3,
                height: 4,
            },
            Step::Blur { sigma: 2.5 },
            Step::Edges,
            Step::Swap,
            Step::Grayscale {},
            Step::Rotate { degrees: 90 },
            Step::Flip {
                direction: "vertical".into(),
            },
        ]);
        assert_eq!(
            pipeline.to_field(),
            concat!(
                r#"[{"op":"resize","width":320,"fit":"contain"},"#,
                r#"{"op":"crop","x":1,"y":2,"width":3,"height":4},"#,
                r#"{"op":"blur","sigma":2.5},{"op":"edges"},{"op":"swap"},"#,
                r#"{"op":"grayscale"},{"op":"rotate","degrees":90},"#,
                r#"{"op":"flip","direction":"vertical"}]"#
            )
        );
    }

    #[test]
    fn descriptions_read_like_flags() {
        let steps = serde_json::json!([
            {"op": "resize", "width": 320, "height": 200, "fit": "cover"},
            {"op": "resize", "width": 640},
            {"op": "crop", "x": 0, "y": 5, "width": 300, "height": 100},
            {"op": "blur", "sigma": 2.5}, {"op": "rotate", "degrees": 90},
            {"op": "edges", "low": 50.0, "high": 150.0}, {"op": "swap"},
            {"op": "sharpen", "amount": 1}
        ]);
        assert_eq!(
            describe(&steps),
            "resize 320x200 cover, resize 640, crop 0,5,300,100, blur 2.5, rotate 90, \
             edges high=150.0 low=50.0, swap, sharpen amount=1"
        );
    }
}

//! Limits on what a job may ask for, and the geometry check both sides run.
//!
//! The gateway calls [`plan`] with the size read from the image header before it stores
//! or queues anything; the worker calls it again before it allocates, so a message that
//! skipped the gateway is held to the same rules.

use crate::messages::{Fit, JobStep, Step};

/// Largest accepted `sigma` for `blur`. Beyond this a blur is indistinguishable from
/// a flat fill of the mean colour and only burns CPU.
pub const MAX_SIGMA: f32 = 50.0;
/// Smallest accepted `sigma`; below it the kernel is a single tap.
pub const MIN_SIGMA: f32 = 0.1;
/// Canny thresholds apply to the Sobel gradient magnitude, which never exceeds ~1443.
pub const MAX_EDGE_THRESHOLD: f32 = 1500.0;

/// Limits every job is held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest width × height of the input, and of any intermediate or final image.
    pub max_pixels: u64,
    /// Largest width or height a step may produce.
    pub max_side: u32,
    /// Most steps in one pipeline.
    pub max_steps: usize,
    /// Most scans in one JPEG. Each scan of a progressive JPEG is another pass over
    /// every coefficient of the image, so a small file of thousands of tiny scans costs
    /// the decoder as much as thousands of images. Encoders write about 10.
    pub max_scans: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_pixels: 50_000_000,
            max_side: 10_000,
            max_steps: 20,
            max_scans: 100,
        }
    }
}

/// True when a JPEG ends with its end-of-image marker, possibly followed by the padding
/// some encoders add. Decoders fill a cut-off JPEG with gray instead of failing, so
/// both the gateway (before queueing) and the worker (before decoding) refuse one with
/// this check.
pub fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let tail = &bytes[bytes.len().saturating_sub(4096)..];
    tail.windows(2).any(|w| w == [0xFF, 0xD9])
}

/// A JPEG's scans: its start-of-scan segments, counted by walking the marker segments
/// and skipping over the entropy-coded data between them. Linear in the file's size and
/// allocation-free, so both sides can afford it before any decoding. A broken marker
/// structure ends the count early; the decoder then reports the damage.
pub fn jpeg_scans(bytes: &[u8]) -> u32 {
    let mut scans = 0u32;
    walk_scans(bytes, |_| scans = scans.saturating_add(1));
    scans
}

/// Where each start-of-scan marker of a JPEG begins (see [`jpeg_scans`]).
pub fn jpeg_scan_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    walk_scans(bytes, |at| starts.push(at));
    starts
}

/// Calls `on_scan` with the offset of each start-of-scan marker. Where the structure is
/// broken (junk between segments, a stuffed byte where a marker belongs, a length too
/// short to be one) it skips ahead to the next 0xFF, as libjpeg does, rather than stop:
/// a decoder that resynchronises would still run every scan after the junk.
fn walk_scans(bytes: &[u8], mut on_scan: impl FnMut(usize)) {
    let mut i = 2; // after SOI
    while i + 1 < bytes.len() {
        if bytes[i] != 0xFF {
            match bytes.get(i..).and_then(|rest| memchr::memchr(0xFF, rest)) {
                Some(at) => {
                    i += at;
                    continue;
                }
                None => return,
            }
        }
        let marker = bytes[i + 1];
        match marker {
            // Fill bytes before a marker.
            0xFF => {
                i += 1;
                continue;
            }
            // Stand-alone markers (TEM, RSTn, SOI), and a stuffed zero out of place.
            0x00 | 0x01 | 0xD0..=0xD8 => {
                i += 2;
                continue;
            }
            0xD9 => return,
            _ => {}
        }
        let Some(len) = bytes
            .get(i + 2..i + 4)
            .map(|b| usize::from(u16::from_be_bytes([b[0], b[1]])))
        else {
            return;
        };
        if len < 2 {
            i += 2;
            continue;
        }
        if marker == 0xDA {
            on_scan(i);
        }
        i += 2 + len;
        if marker == 0xDA {
            // Entropy-coded data runs to the next marker that is neither a stuffed
            // 0xFF00 nor a restart marker.
            while let Some(at) = bytes.get(i..).and_then(|rest| memchr::memchr(0xFF, rest)) {
                i += at;
                match bytes.get(i + 1) {
                    Some(0x00 | 0xD0..=0xD7) => i += 2,
                    Some(_) => break,
                    None => return,
                }
            }
        }
    }
}

/// The size of a GIF's first frame, from its image descriptor. A frame may be larger
/// than the logical screen the header gives, and decoding costs the frame's pixels, so
/// both sides hold the frame to the pixel limit too. `None` when the file has no frame
/// or its blocks are broken (the decoder then reports it).
pub fn gif_first_frame(bytes: &[u8]) -> Option<(u32, u32)> {
    let u16_at = |i: usize| {
        bytes
            .get(i..i + 2)
            .map(|b| u32::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let at = gif_first_descriptor(bytes)?;
    Some((u16_at(at + 5)?, u16_at(at + 7)?))
}

/// Where a GIF's first image descriptor starts (see [`gif_first_frame`]).
pub fn gif_first_descriptor(bytes: &[u8]) -> Option<usize> {
    let packed = *bytes.get(10)?;
    let mut i = 13;
    if packed & 0x80 != 0 {
        i += 3 << ((packed & 7) + 1); // the global colour table
    }
    loop {
        match *bytes.get(i)? {
            // An image descriptor: left, top, width, height.
            0x2C if i + 9 <= bytes.len() => return Some(i),
            // An extension: its label, then sub-blocks up to an empty one.
            0x21 => {
                i += 2;
                loop {
                    let len = usize::from(*bytes.get(i)?);
                    i += 1 + len;
                    if len == 0 {
                        break;
                    }
                }
            }
            _ => return None,
        }
    }
}

/// Refuses a JPEG with more scans than `limits.max_scans`, naming the limit; returns
/// the count (more than one: a progressive file).
pub fn check_scans(bytes: &[u8], limits: &Limits) -> Result<u32, String> {
    let scans = jpeg_scans(bytes);
    if scans > limits.max_scans {
        return Err(format!(
            "the JPEG has {scans} scans; the limit is {} scans (PIXMILL_MAX_SCANS): each \
             scan is another pass over the whole image, and encoders write about 10",
            limits.max_scans
        ));
    }
    Ok(scans)
}

/// Why a pipeline was refused. The message names the step, the field and the limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("the image is {width}×{height} = {pixels} pixels; the limit is {limit} pixels")]
    TooManyPixels {
        width: u32,
        height: u32,
        pixels: u64,
        limit: u64,
    },
    #[error("{count} steps given; the limit is {limit} steps per job")]
    TooManySteps { count: usize, limit: usize },
    #[error("step {index} ({op}): {message}")]
    InvalidStep {
        index: usize,
        op: &'static str,
        /// The offending field, when one is to blame.
        field: Option<&'static str>,
        message: String,
    },
}

/// Checks `steps` against `limits` for an input of `width`×`height` and returns the
/// size of the final image.
pub fn plan(
    steps: &[Step],
    width: u32,
    height: u32,
    limits: &Limits,
) -> Result<(u32, u32), PlanError> {
    check_pixels(width, height, limits)?;
    if steps.len() > limits.max_steps {
        return Err(PlanError::TooManySteps {
            count: steps.len(),
            limit: limits.max_steps,
        });
    }
    let mut size = (width, height);
    for (i, step) in steps.iter().enumerate() {
        size = step_size(step, size, limits).map_err(|refusal| PlanError::InvalidStep {
            index: i + 1,
            op: step.op(),
            field: refusal.field,
            message: refusal.message,
        })?;
        check_pixels(size.0, size.1, limits)?;
    }
    Ok(size)
}

/// [`plan`] for a job that may name custom ops: the step count is held to the limit, and
/// the steps up to the first custom op are planned (what a custom op makes of the size
/// is its worker's business, and the next built-in worker plans the rest on the image it
/// gets). Returns the final size when every step is built in.
pub fn plan_job(
    steps: &[JobStep],
    width: u32,
    height: u32,
    limits: &Limits,
) -> Result<Option<(u32, u32)>, PlanError> {
    if steps.len() > limits.max_steps {
        return Err(PlanError::TooManySteps {
            count: steps.len(),
            limit: limits.max_steps,
        });
    }
    let builtin: Vec<Step> = steps.iter().map_while(|s| s.builtin().cloned()).collect();
    let size = plan(&builtin, width, height, limits)?;
    Ok((builtin.len() == steps.len()).then_some(size))
}

/// Why one step cannot apply: the field to blame, when one is, and what is wrong.
struct Refusal {
    field: Option<&'static str>,
    message: String,
}

fn refuse<T>(field: Option<&'static str>, message: String) -> Result<T, Refusal> {
    Err(Refusal { field, message })
}

/// The size `step` turns a `w`×`h` image into, or why it cannot apply to it.
fn step_size(step: &Step, (w, h): (u32, u32), limits: &Limits) -> Result<(u32, u32), Refusal> {
    match *step {
        Step::Resize { width, height, fit } => resize_size((w, h), (width, height), fit, limits),
        Step::Crop {
            x,
            y,
            width,
            height,
        } => crop_size((w, h), (x, y), (width, height)),
        Step::Blur { sigma } => check_sigma(sigma).map(|()| (w, h)),
        Step::Edges { low, high } => check_thresholds(low, high).map(|()| (w, h)),
        Step::Swap { .. } | Step::Grayscale {} | Step::Flip { .. } => Ok((w, h)),
        Step::Rotate { degrees } => match degrees {
            90 | 270 => Ok((h, w)),
            180 => Ok((w, h)),
            other => refuse(
                Some("degrees"),
                format!("degrees must be 90, 180 or 270 (got {other})"),
            ),
        },
    }
}

/// A resize of a `size` image to `target` (either side may be left to the aspect
/// ratio): each given side, and the result, within the per-side limit.
fn resize_size(
    size: (u32, u32),
    (tw, th): (Option<u32>, Option<u32>),
    fit: Fit,
    limits: &Limits,
) -> Result<(u32, u32), Refusal> {
    for (name, value) in [("width", tw), ("height", th)] {
        if let Some(v) = value
            && (v == 0 || v > limits.max_side)
        {
            return refuse(
                Some(name),
                format!("{name} must be between 1 and {} (got {v})", limits.max_side),
            );
        }
    }
    let Some((w, h)) = resize_target(size.0, size.1, tw, th, fit) else {
        return refuse(Some("width"), "give width, height or both".into());
    };
    if w > limits.max_side || h > limits.max_side {
        return refuse(
            None,
            format!(
                "the result would be {w}×{h}; the limit is {} pixels per side",
                limits.max_side
            ),
        );
    }
    Ok((w, h))
}

/// A crop of the `cw`×`ch` rectangle at `x`,`y`: not empty, and inside the image.
fn crop_size(
    (w, h): (u32, u32),
    (x, y): (u32, u32),
    (cw, ch): (u32, u32),
) -> Result<(u32, u32), Refusal> {
    if cw == 0 || ch == 0 {
        return refuse(
            Some(if cw == 0 { "width" } else { "height" }),
            "width and height must be at least 1".into(),
        );
    }
    let (right, bottom) = (u64::from(x) + u64::from(cw), u64::from(y) + u64::from(ch));
    if right > u64::from(w) || bottom > u64::from(h) {
        return refuse(
            None,
            format!(
                "the rectangle x={x} y={y} width={cw} height={ch} reaches ({right}, {bottom}), \
                 outside the {w}×{h} image at this step"
            ),
        );
    }
    Ok((cw, ch))
}

/// A blur's sigma within [`MIN_SIGMA`] and [`MAX_SIGMA`] (NaN is not).
fn check_sigma(sigma: f32) -> Result<(), Refusal> {
    if !(MIN_SIGMA..=MAX_SIGMA).contains(&sigma) {
        return refuse(
            Some("sigma"),
            format!("sigma must be between {MIN_SIGMA} and {MAX_SIGMA} (got {sigma})"),
        );
    }
    Ok(())
}

/// Canny thresholds within 0 and [`MAX_EDGE_THRESHOLD`], the low one not above the high.
fn check_thresholds(low: f32, high: f32) -> Result<(), Refusal> {
    for (name, value) in [("low", low), ("high", high)] {
        if !(0.0..=MAX_EDGE_THRESHOLD).contains(&value) {
            return refuse(
                Some(name),
                format!("{name} must be between 0 and {MAX_EDGE_THRESHOLD} (got {value})"),
            );
        }
    }
    if low > high {
        return refuse(
            Some("low"),
            format!("low ({low}) must not exceed high ({high})"),
        );
    }
    Ok(())
}

/// Fails when `width`×`height` is over the pixel limit.
pub fn check_pixels(width: u32, height: u32, limits: &Limits) -> Result<(), PlanError> {
    let pixels = u64::from(width) * u64::from(height);
    if pixels > limits.max_pixels || width == 0 || height == 0 {
        return Err(PlanError::TooManyPixels {
            width,
            height,
            pixels,
            limit: limits.max_pixels,
        });
    }
    Ok(())
}

/// The size a resize produces, before any cover crop (`None` when neither side is given).
///
/// For `cover` this is the final box; [`cover_scale`] gives the intermediate size.
pub fn resize_target(
    w: u32,
    h: u32,
    tw: Option<u32>,
    th: Option<u32>,
    fit: Fit,
) -> Option<(u32, u32)> {
    let scaled = |num: u32, a: u32, b: u32| -> u32 {
        // round(num * a / b), never 0
        let v = (u64::from(num) * u64::from(a) + u64::from(b) / 2) / u64::from(b);
        u32::try_from(v.max(1)).unwrap_or(u32::MAX)
    };
    match (tw, th) {
        (None, None) => None,
        (Some(tw), None) => Some((tw, scaled(h, tw, w))),
        (None, Some(th)) => Some((scaled(w, th, h), th)),
        (Some(tw), Some(th)) => Some(match fit {
            Fit::Fill | Fit::Cover => (tw, th),
            Fit::Contain => {
                // Fit inside: the side that limits is the one with the smaller ratio.
                if u64::from(tw) * u64::from(h) <= u64::from(th) * u64::from(w) {
                    (tw, scaled(h, tw, w).min(th))
                } else {
                    (scaled(w, th, h).min(tw), th)
                }
            }
        }),
    }
}

/// For `cover`: the size to scale to before cropping the centre `tw`×`th` out of it.
pub fn cover_scale(w: u32, h: u32, tw: u32, th: u32) -> (u32, u32) {
    let scaled = |num: u32, a: u32, b: u32| -> u32 {
        let v = (u64::from(num) * u64::from(a)).div_ceil(u64::from(b));
        u32::try_from(v.max(1)).unwrap_or(u32::MAX)
    };
    if u64::from(tw) * u64::from(h) >= u64::from(th) * u64::from(w) {
        // The box is relatively wider: match widths, overflow vertically.
        (tw, scaled(h, tw, w).max(th))
    } else {
        (scaled(w, th, h).max(tw), th)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::messages::{ChannelOrder, FlipDirection};

    fn limits() -> Limits {
        Limits::default()
    }

    /// A JPEG-shaped byte string: SOI, an APP0, `scans` scans of entropy data that
    /// holds stuffed bytes and restart markers, EOI.
    fn jpeg_with_scans(scans: usize) -> Vec<u8> {
        let mut out = vec![0xFF, 0xD8, 0xFF, 0xE0, 0x00, 0x04, b'J', b'F'];
        for _ in 0..scans {
            out.extend_from_slice(&[0xFF, 0xDA, 0x00, 0x03, 0x01]);
            out.extend_from_slice(&[0x12, 0xFF, 0x00, 0x34, 0xFF, 0xD0, 0x56]);
        }
        out.extend_from_slice(&[0xFF, 0xD9]);
        out
    }

    #[test]
    fn a_gif_first_frame_is_found_past_extensions() {
        let mut gif = b"GIF89a".to_vec();
        gif.extend_from_slice(&[16, 0, 16, 0, 0x80, 0, 0]); // 16×16, 2-colour table
        gif.extend_from_slice(&[0; 6]);
        gif.extend_from_slice(&[0x21, 0xF9, 4, 0, 0, 0, 0, 0]); // graphic control
        gif.extend_from_slice(&[0x21, 0xFE, 3, b'h', b'i', b'!', 0]); // comment
        gif.extend_from_slice(&[0x2C, 0, 0, 0, 0, 0x60, 0xEA, 0x60, 0xEA, 0]);
        assert_eq!(gif_first_frame(&gif), Some((60_000, 60_000)));
        assert_eq!(gif_first_frame(&gif[..20]), None);
    }

    #[test]
    fn scans_are_counted_past_stuffing_and_restarts() {
        assert_eq!(jpeg_scans(&jpeg_with_scans(1)), 1);
        assert_eq!(jpeg_scans(&jpeg_with_scans(250)), 250);
        assert!(check_scans(&jpeg_with_scans(100), &limits()).is_ok());
        let err = check_scans(&jpeg_with_scans(101), &limits()).expect_err("over");
        assert!(
            err.contains("101 scans") && err.contains("PIXMILL_MAX_SCANS"),
            "{err}"
        );
        // Garbage ends the count instead of looping or panicking.
        assert_eq!(jpeg_scans(&[0xFF, 0xD8, 0x00, 0xFF]), 0);
        assert_eq!(jpeg_scans(&[0xFF, 0xD8, 0xFF, 0xDA]), 0);
        // Junk between segments, a stuffed byte where a marker belongs and a bogus
        // length do not hide the scans after them: decoders skip such bytes and go on.
        let scans = jpeg_with_scans(250);
        for junk in [&[0x00][..], &[0xFF, 0x00], &[0xFF, 0xE1, 0x00, 0x01]] {
            let mut hidden = scans[..8].to_vec();
            hidden.extend_from_slice(junk);
            hidden.extend_from_slice(&scans[8..]);
            assert_eq!(jpeg_scans(&hidden), 250, "junk {junk:x?}");
        }
    }

    #[test]
    fn resize_keeps_aspect_with_one_side() {
        let steps = [Step::Resize {
            width: Some(800),
            height: None,
            fit: Fit::Cover,
        }];
        assert_eq!(plan(&steps, 1600, 1000, &limits()), Ok((800, 500)));
    }

    #[test]
    fn resize_fits() {
        let r = |fit| resize_target(1600, 1000, Some(640), Some(640), fit);
        assert_eq!(r(Fit::Contain), Some((640, 400)));
        assert_eq!(r(Fit::Cover), Some((640, 640)));
        assert_eq!(r(Fit::Fill), Some((640, 640)));
        assert_eq!(cover_scale(1600, 1000, 640, 640), (1024, 640));
        assert_eq!(cover_scale(1000, 1600, 640, 400), (640, 1024));
    }

    #[test]
    fn pipeline_geometry_follows_each_step() {
        let steps = [
            Step::Crop {
                x: 10,
                y: 10,
                width: 300,
                height: 200,
            },
            Step::Rotate { degrees: 90 },
            Step::Swap {
                order: ChannelOrder::Bgr,
            },
            Step::Flip {
                direction: FlipDirection::Horizontal,
            },
        ];
        assert_eq!(plan(&steps, 400, 400, &limits()), Ok((200, 300)));
    }

    #[test]
    fn out_of_range_parameters_name_the_field() {
        let cases = [
            (
                Step::Resize {
                    width: Some(0),
                    height: None,
                    fit: Fit::Cover,
                },
                "width",
            ),
            (
                Step::Resize {
                    width: Some(100_000),
                    height: None,
                    fit: Fit::Cover,
                },
                "width",
            ),
            (Step::Blur { sigma: -1.0 }, "sigma"),
            (Step::Blur { sigma: f32::NAN }, "sigma"),
            (
                Step::Edges {
                    low: 300.0,
                    high: 200.0,
                },
                "low",
            ),
            (Step::Rotate { degrees: 45 }, "degrees"),
        ];
        for (step, want) in cases {
            match plan(std::slice::from_ref(&step), 100, 100, &limits()) {
                Err(PlanError::InvalidStep { field, message, .. }) => {
                    assert_eq!(field, Some(want), "{step:?}: {message}");
                    assert!(message.contains(want), "{message}");
                }
                other => panic!("{step:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn crop_outside_the_image_is_refused() {
        let steps = [Step::Crop {
            x: 90,
            y: 0,
            width: 20,
            height: 10,
        }];
        let err = plan(&steps, 100, 100, &limits()).expect_err("outside");
        assert!(
            err.to_string().contains("outside the 100×100 image"),
            "{err}"
        );
    }

    #[test]
    fn pixel_and_step_limits() {
        let err = plan(&[], 100_000, 100_000, &limits()).expect_err("too big");
        assert!(err.to_string().contains("50000000 pixels"), "{err}");
        let many = vec![Step::Grayscale {}; 21];
        let err = plan(&many, 10, 10, &limits()).expect_err("too many");
        assert_eq!(
            err,
            PlanError::TooManySteps {
                count: 21,
                limit: 20
            }
        );
    }
}

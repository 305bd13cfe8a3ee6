//! One job's CPU work: decode, check, run the steps, encode. Synchronous on purpose:
//! callers run it on a blocking thread, never on the async executor.

use std::time::Instant;

use image::DynamicImage;

use pixmill_shared::{
    ChannelOrder, ErrorCode, JobRequest, Limits, OutputFormat, Step, Variant, plan,
};

use crate::{JobError, buffers, codec, ops};

/// An encoded result, ready for the blob store.
#[derive(Debug)]
pub struct Processed {
    /// The encoded image.
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    /// Wall time of decode + steps + encode.
    pub elapsed_ms: u64,
}

/// Runs the whole of `job`, whose steps must all be built-in, on the image in `input`.
pub fn process(job: &JobRequest, input: &[u8], limits: &Limits) -> Result<Processed, JobError> {
    let steps = job
        .steps
        .iter()
        .map(|s| {
            s.builtin().cloned().ok_or_else(|| {
                JobError::permanent(
                    ErrorCode::InvalidStep,
                    format!("op {:?} is not built in", s.op()),
                )
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    process_steps(&steps, job.format, job.quality, input, limits)
}

/// Runs built-in `steps` on the image in `input` and encodes the result in `format`.
/// An owned `input` is freed once decoded (see [`render`]).
pub fn process_steps(
    steps: &[Step],
    format: OutputFormat,
    quality: u8,
    input: impl AsRef<[u8]>,
    limits: &Limits,
) -> Result<Processed, JobError> {
    let started = Instant::now();
    if format == OutputFormat::Jpeg
        && let Some((bytes, width, height)) = lossless(steps, input.as_ref(), limits)?
    {
        return Ok(Processed {
            bytes,
            width,
            height,
            elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        });
    }
    let image = render(steps, input, limits)?;
    let bytes = codec::encode(&image, format, quality)?;
    let (width, height) = (image.width(), image.height());
    buffers::recycle(image);
    Ok(Processed {
        bytes,
        width,
        height,
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Runs a job with variants: the job's `shared` steps, then each variant's own steps,
/// each output encoded in its variant's format. The input is decoded once, at the
/// largest DCT scale every variant can use: shrunk on load when every variant starts
/// with a resize (as large as the largest of them needs), at full size otherwise. A
/// JPEG variant of lossless steps alone is transformed on the coefficients, as a job
/// of its own would be. Outputs come back in the variants' order. An owned `input` is
/// freed once decoded.
pub fn process_variants(
    shared: &[Step],
    variants: &[Variant],
    input: impl AsRef<[u8]>,
    limits: &Limits,
) -> Result<Vec<Processed>, JobError> {
    let started = Instant::now();
    let mut done: Vec<Option<Processed>> = Vec::with_capacity(variants.len());
    for variant in variants {
        let alone = if shared.is_empty() && variant.format == OutputFormat::Jpeg {
            lossless(&variant.steps, input.as_ref(), limits)?
        } else {
            None
        };
        done.push(alone.map(|(bytes, width, height)| Processed {
            bytes,
            width,
            height,
            elapsed_ms: 0,
        }));
    }
    let rest: Vec<usize> = (0..variants.len()).filter(|&i| done[i].is_none()).collect();
    if !rest.is_empty() {
        let images = render_variants(shared, rest.iter().map(|&i| &variants[i]), input, limits)?;
        for (&i, image) in rest.iter().zip(images) {
            let variant = &variants[i];
            let bytes = codec::encode(&image, variant.format, variant.quality)?;
            done[i] = Some(Processed {
                bytes,
                width: image.width(),
                height: image.height(),
                elapsed_ms: 0,
            });
            buffers::recycle(image);
        }
    }
    let elapsed_ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    Ok(done
        .into_iter()
        .flatten()
        .map(|p| Processed { elapsed_ms, ..p })
        .collect())
}

/// Decodes `input` once and renders every variant from it (see [`process_variants`]).
fn render_variants<'a>(
    shared: &[Step],
    variants: impl ExactSizeIterator<Item = &'a Variant> + Clone,
    input: impl AsRef<[u8]>,
    limits: &Limits,
) -> Result<Vec<DynamicImage>, JobError> {
    let mut images = Vec::with_capacity(variants.len());
    if !shared.is_empty() {
        // The shared steps lead: they choose the decode, and run once.
        let base = render(shared, input, limits)?;
        let (w, h) = (base.width(), base.height());
        for variant in variants {
            plan(&variant.steps, w, h, limits).map_err(plan_error)?;
            images.push(apply_all(base.clone(), &variant.steps));
        }
        buffers::recycle(base);
        return Ok(images);
    }
    let first_resizes: Option<Vec<codec::FirstResize>> = variants
        .clone()
        .map(|v| match v.steps.first() {
            Some(&Step::Resize { width, height, fit }) => {
                Some(codec::FirstResize { width, height, fit })
            }
            _ => None,
        })
        .collect();
    let hint = codec::Hint {
        first_resizes: first_resizes.unwrap_or_default(),
        ..codec::Hint::default()
    };
    let decoded = codec::decode_with(input.as_ref(), limits, hint)?;
    drop(input);
    let (full_w, full_h) = decoded.full_size;
    for variant in variants.clone() {
        // Re-check here: the worker must not trust that the message passed the gateway.
        plan(&variant.steps, full_w, full_h, limits).map_err(plan_error)?;
    }
    for variant in variants {
        let mut steps = variant.steps.iter();
        // A leading resize reads the decoded image in place, planned on the full size
        // and mapped onto the pixels decoded (fewer when shrunk on load, which happens
        // only when every variant starts with one). Any other first step gets a copy.
        let mut image = match variant.steps.first() {
            Some(&Step::Resize { width, height, fit }) => {
                steps.next();
                match ops::plan_resize(full_w, full_h, width, height, fit) {
                    Some(resize) => ops::resize(&decoded.image, &resize, decoded.scale),
                    None => decoded.image.clone(),
                }
            }
            _ => decoded.image.clone(),
        };
        for step in steps {
            image = ops::apply(image, step);
        }
        images.push(image);
    }
    buffers::recycle(decoded.image);
    Ok(images)
}

fn apply_all(mut image: DynamicImage, steps: &[Step]) -> DynamicImage {
    for step in steps {
        image = ops::apply(image, step);
    }
    image
}

/// A JPEG job of rotations, flips, grayscale and a block-aligned crop, done on the DCT
/// coefficients: no decode, no re-encode, no generation loss.
fn lossless(
    steps: &[Step],
    input: &[u8],
    limits: &Limits,
) -> Result<Option<(Vec<u8>, u32, u32)>, JobError> {
    let lossless_ops = steps.iter().all(|s| {
        matches!(
            s,
            Step::Rotate { .. } | Step::Flip { .. } | Step::Grayscale {} | Step::Crop { .. }
        )
    });
    if steps.is_empty() || !lossless_ops {
        return Ok(None);
    }
    codec::transform_losslessly(input, steps, limits, |w, h| {
        // The same geometry check as the normal path, on the upright size.
        plan(steps, w, h, limits).map(|_| ()).map_err(plan_error)
    })
}

fn plan_error(e: pixmill_shared::PlanError) -> JobError {
    match e {
        pixmill_shared::PlanError::TooManyPixels { .. } => {
            JobError::permanent(ErrorCode::TooManyPixels, e.to_string())
        }
        _ => JobError::permanent(ErrorCode::InvalidStep, e.to_string()),
    }
}

/// Decodes `input` and runs `steps` on it: everything but the encoding. An owned
/// `input` (the worker's) is freed as soon as it is decoded, before the steps make
/// their buffers; the decode itself still needs it.
pub fn render(
    steps: &[Step],
    input: impl AsRef<[u8]>,
    limits: &Limits,
) -> Result<DynamicImage, JobError> {
    let decoded = codec::decode_with(input.as_ref(), limits, hint(steps))?;
    drop(input);
    let (full_w, full_h) = decoded.full_size;
    // Re-check here: the worker must not trust that the message passed the gateway.
    plan(steps, full_w, full_h, limits).map_err(plan_error)?;
    let mut image = decoded.image;
    let mut steps = steps.iter();
    if decoded.swapped_red_blue {
        // The decoder already wrote the pixels in BGR order: that was the first step.
        steps.next();
    }
    if decoded.scale < 1.0 {
        // The decoder shrank the image for the first step, a resize: run it with the
        // geometry planned on the full size, mapped onto the smaller pixels.
        if let Some(&Step::Resize { width, height, fit }) = steps.next()
            && let Some(resize) = ops::plan_resize(full_w, full_h, width, height, fit)
        {
            let resized = ops::resize(&image, &resize, decoded.scale);
            buffers::recycle(std::mem::replace(&mut image, resized));
        }
    }
    for step in steps {
        image = ops::apply(image, step);
    }
    Ok(image)
}

/// What the first step lets the decoder skip. A resize that shrinks may decode at a
/// fraction of the size; edges read only luminance; a red–blue swap is a choice of
/// output layout.
pub fn hint(steps: &[Step]) -> codec::Hint {
    match steps.first() {
        Some(&Step::Resize { width, height, fit }) => codec::Hint {
            first_resizes: vec![codec::FirstResize { width, height, fit }],
            ..codec::Hint::default()
        },
        Some(Step::Edges { .. }) => codec::Hint {
            gray: true,
            ..codec::Hint::default()
        },
        Some(Step::Swap {
            order: ChannelOrder::Bgr,
        }) => codec::Hint {
            swap_red_blue: true,
            ..codec::Hint::default()
        },
        _ => codec::Hint::default(),
    }
}

/// Content type of a result in `format`.
pub fn content_type(format: OutputFormat) -> &'static str {
    format.content_type()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, Rgb, RgbImage};
    use pixmill_shared::Fit;
    use uuid::Uuid;

    fn job(steps: Vec<Step>, format: OutputFormat) -> JobRequest {
        JobRequest {
            id: Uuid::new_v4(),
            input: "inputs/x".into(),
            steps: steps.into_iter().map(Into::into).collect(),
            format,
            quality: 85,
            cursor: 0,
            hops: Vec::new(),
            variants: Vec::new(),
        }
    }

    fn photo_like() -> Vec<u8> {
        let img = RgbImage::from_fn(320, 200, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, ((x + y) % 256) as u8])
        });
        codec::encode(&DynamicImage::ImageRgb8(img), OutputFormat::Png, 85).expect("encode")
    }

    #[test]
    fn a_pipeline_runs_in_order() {
        let steps = vec![
            Step::Crop {
                x: 0,
                y: 0,
                width: 200,
                height: 100,
            },
            Step::Resize {
                width: Some(100),
                height: None,
                fit: Fit::Cover,
            },
            Step::Grayscale {},
        ];
        let out = process(
            &job(steps, OutputFormat::Png),
            &photo_like(),
            &Limits::default(),
        )
        .expect("process");
        assert_eq!((out.width, out.height), (100, 50));
        let (decoded, _) = codec::decode(&out.bytes, &Limits::default()).expect("decode");
        assert_eq!(decoded.color(), image::ColorType::L8);
    }

    #[test]
    fn an_impossible_step_is_a_permanent_error() {
        let steps = vec![Step::Crop {
            x: 300,
            y: 0,
            width: 100,
            height: 10,
        }];
        let err = process(
            &job(steps, OutputFormat::Jpeg),
            &photo_like(),
            &Limits::default(),
        )
        .expect_err("crop outside");
        assert_eq!(err.code(), Some(ErrorCode::InvalidStep));
    }

    fn jpeg_of(color: [u8; 3]) -> Vec<u8> {
        let img = RgbImage::from_pixel(64, 48, Rgb(color));
        codec::encode(&DynamicImage::ImageRgb8(img), OutputFormat::Jpeg, 95).expect("encode")
    }

    fn near(a: [u8; 3], b: [u8; 3]) -> bool {
        a.iter().zip(b).all(|(x, y)| x.abs_diff(y) <= 6)
    }

    #[test]
    fn a_swap_fused_into_the_jpeg_decoder_still_turns_red_blue() {
        let steps = vec![Step::Swap {
            order: ChannelOrder::Bgr,
        }];
        assert!(hint(&steps).swap_red_blue);
        let out = render(&steps, jpeg_of([250, 10, 10]), &Limits::default()).expect("render");
        let px = out.to_rgb8().get_pixel(10, 10).0;
        assert!(near(px, [10, 10, 250]), "{px:?}");
        // Followed by more steps, the rest still run, once.
        let steps = vec![
            Step::Swap {
                order: ChannelOrder::Bgr,
            },
            Step::Swap {
                order: ChannelOrder::Rbg,
            },
        ];
        let out = render(&steps, jpeg_of([250, 10, 120]), &Limits::default()).expect("render");
        let px = out.to_rgb8().get_pixel(10, 10).0;
        assert!(near(px, [120, 250, 10]), "{px:?}");
    }

    #[test]
    fn a_shrink_on_load_resize_gives_the_planned_size() {
        let big = RgbImage::from_fn(1601, 1001, |x, y| {
            Rgb([(x % 256) as u8, (y % 256) as u8, 7])
        });
        let bytes =
            codec::encode(&DynamicImage::ImageRgb8(big), OutputFormat::Jpeg, 90).expect("encode");
        for (w, h, fit, want) in [
            (Some(200), None, Fit::Cover, (200, 125)),
            (Some(300), Some(300), Fit::Cover, (300, 300)),
            (Some(300), Some(300), Fit::Contain, (300, 188)),
            (None, Some(101), Fit::Fill, (162, 101)),
        ] {
            let steps = vec![Step::Resize {
                width: w,
                height: h,
                fit,
            }];
            let out = render(&steps, &bytes, &Limits::default()).expect("render");
            assert_eq!((out.width(), out.height()), want, "{w:?} {h:?} {fit:?}");
        }
    }

    /// Peak signal-to-noise ratio of two same-sized images, over RGB.
    fn psnr(a: &DynamicImage, b: &DynamicImage) -> f64 {
        let (a, b) = (a.to_rgb8(), b.to_rgb8());
        assert_eq!(a.dimensions(), b.dimensions());
        let squared: f64 = a
            .as_raw()
            .iter()
            .zip(b.as_raw())
            .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
            .sum();
        let mse = squared / a.as_raw().len() as f64;
        if mse == 0.0 {
            f64::INFINITY
        } else {
            10.0 * (255.0f64 * 255.0 / mse).log10()
        }
    }

    fn width(w: u32) -> Step {
        Step::Resize {
            width: Some(w),
            height: None,
            fit: Fit::Cover,
        }
    }

    fn variant(name: &str, steps: Vec<Step>, format: OutputFormat) -> Variant {
        Variant {
            name: name.into(),
            steps,
            format,
            quality: 80,
        }
    }

    /// A smooth, photo-like 1600×1000 JPEG: gradients and soft waves, no hard noise.
    fn smooth_jpeg() -> Vec<u8> {
        let img = RgbImage::from_fn(1600, 1000, |x, y| {
            let (fx, fy) = (f64::from(x), f64::from(y));
            Rgb([
                (128.0 + 100.0 * (fx / 97.0).sin() * (fy / 131.0).cos()) as u8,
                (fx * 255.0 / 1600.0) as u8,
                (128.0 + 90.0 * ((fx + fy) / 173.0).sin()) as u8,
            ])
        });
        codec::encode(&DynamicImage::ImageRgb8(img), OutputFormat::Jpeg, 92).expect("encode")
    }

    #[test]
    fn variants_match_their_own_jobs() {
        let input = smooth_jpeg();
        let limits = Limits::default();
        let variants = vec![
            variant("w320", vec![width(320)], OutputFormat::Jpeg),
            variant("w640", vec![width(640)], OutputFormat::Jpeg),
            variant("w1280", vec![width(1280)], OutputFormat::Jpeg),
            variant("w640-webp", vec![width(640)], OutputFormat::Webp),
        ];
        let outputs = process_variants(&[], &variants, &input, &limits).expect("variants");
        assert_eq!(outputs.len(), 4);
        for (variant, output) in variants.iter().zip(&outputs) {
            let alone = process_steps(
                &variant.steps,
                variant.format,
                variant.quality,
                &input,
                &limits,
            )
            .expect("alone");
            assert_eq!(
                (output.width, output.height),
                (alone.width, alone.height),
                "{}",
                variant.name
            );
            let (ours, _) = codec::decode(&output.bytes, &limits).expect("decode ours");
            let (theirs, _) = codec::decode(&alone.bytes, &limits).expect("decode alone");
            let db = psnr(&ours, &theirs);
            // The one decode is at the scale the largest variant (1280) needs: full size
            // here. A job of its own decodes smaller for the small sizes, so those differ
            // by the resampling only.
            assert!(db >= 35.0, "{}: PSNR {db:.1} dB", variant.name);
        }
        // The 1280 variant needs the full decode, as its own job does: the same bytes.
        let alone =
            process_steps(&[width(1280)], OutputFormat::Jpeg, 80, &input, &limits).expect("alone");
        assert_eq!(
            outputs[2].bytes, alone.bytes,
            "w1280 is byte for byte its own job"
        );
    }

    #[test]
    fn variants_of_the_same_scale_are_byte_identical_and_shared_steps_run_first() {
        let input = smooth_jpeg();
        let limits = Limits::default();
        // Both shrink on load by 4 (1600 → 400 ≥ 320 and ≥ 300): one decode serves both.
        let variants = vec![
            variant("a", vec![width(320), Step::Grayscale {}], OutputFormat::Png),
            variant("b", vec![width(300)], OutputFormat::Jpeg),
        ];
        let outputs = process_variants(&[], &variants, &input, &limits).expect("variants");
        for (variant, output) in variants.iter().zip(&outputs) {
            let alone =
                process_steps(&variant.steps, variant.format, 80, &input, &limits).expect("alone");
            assert_eq!(output.bytes, alone.bytes, "{}", variant.name);
        }
        // Shared steps run once, then each variant's own.
        let shared = [Step::Crop {
            x: 0,
            y: 0,
            width: 800,
            height: 500,
        }];
        let variants = vec![
            variant("half", vec![width(400)], OutputFormat::Png),
            variant("whole", Vec::new(), OutputFormat::Png),
        ];
        let outputs = process_variants(&shared, &variants, &input, &limits).expect("shared");
        let sizes: Vec<(u32, u32)> = outputs.iter().map(|o| (o.width, o.height)).collect();
        assert_eq!(sizes, [(400, 250), (800, 500)]);
        for (variant, output) in variants.iter().zip(&outputs) {
            let steps: Vec<Step> = shared.iter().chain(&variant.steps).cloned().collect();
            let alone =
                process_steps(&steps, OutputFormat::Png, 80, &input, &limits).expect("alone");
            assert_eq!(output.bytes, alone.bytes, "{}", variant.name);
        }
    }

    #[test]
    fn a_variant_that_cannot_apply_fails_the_job() {
        let err = process_variants(
            &[],
            &[
                variant("ok", vec![width(100)], OutputFormat::Png),
                variant(
                    "bad",
                    vec![Step::Crop {
                        x: 5000,
                        y: 0,
                        width: 10,
                        height: 10,
                    }],
                    OutputFormat::Png,
                ),
            ],
            photo_like(),
            &Limits::default(),
        )
        .expect_err("a crop outside the image");
        assert_eq!(err.code(), Some(ErrorCode::InvalidStep));
    }
}

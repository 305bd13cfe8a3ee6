//! One job's CPU work: decode, check, run the steps, encode. Synchronous on purpose:
//! callers run it on a blocking thread, never on the async executor.

use std::time::Instant;

use image::DynamicImage;

use pixmill_shared::{ChannelOrder, ErrorCode, JobRequest, Limits, OutputFormat, Step, plan};

use crate::{JobError, codec, ops};

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
pub fn process_steps(
    steps: &[Step],
    format: OutputFormat,
    quality: u8,
    input: &[u8],
    limits: &Limits,
) -> Result<Processed, JobError> {
    let started = Instant::now();
    if format == OutputFormat::Jpeg
        && let Some((bytes, width, height)) = lossless(steps, input, limits)?
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
    Ok(Processed {
        bytes,
        width: image.width(),
        height: image.height(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
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

/// Decodes `input` and runs `steps` on it: everything but the encoding.
pub fn render(steps: &[Step], input: &[u8], limits: &Limits) -> Result<DynamicImage, JobError> {
    let decoded = codec::decode_with(input, limits, hint(steps))?;
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
            image = ops::resize(&image, &resize, decoded.scale);
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
            first_resize: Some(codec::FirstResize { width, height, fit }),
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
        let out = render(&steps, &jpeg_of([250, 10, 10]), &Limits::default()).expect("render");
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
        let out = render(&steps, &jpeg_of([250, 10, 120]), &Limits::default()).expect("render");
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
}

//! One job's CPU work: decode, check, run the steps, encode. Synchronous on purpose:
//! callers run it on a blocking thread, never on the async executor.

use std::time::Instant;

use pixmill_shared::{ErrorCode, JobRequest, Limits, OutputFormat, plan};

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

/// Runs `job` on the image in `input`.
pub fn process(job: &JobRequest, input: &[u8], limits: &Limits) -> Result<Processed, JobError> {
    let started = Instant::now();
    let (mut image, _) = codec::decode(input, limits)?;
    // Re-check here: the worker must not trust that the message passed the gateway.
    plan(&job.steps, image.width(), image.height(), limits).map_err(|e| match e {
        pixmill_shared::PlanError::TooManyPixels { .. } => {
            JobError::permanent(ErrorCode::TooManyPixels, e.to_string())
        }
        _ => JobError::permanent(ErrorCode::InvalidStep, e.to_string()),
    })?;
    for step in &job.steps {
        image = ops::apply(image, step);
    }
    let bytes = codec::encode(&image, job.format, job.quality)?;
    Ok(Processed {
        bytes,
        width: image.width(),
        height: image.height(),
        elapsed_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}

/// Content type of a result in `format`.
pub fn content_type(format: OutputFormat) -> &'static str {
    format.content_type()
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, Rgb, RgbImage};
    use pixmill_shared::{Fit, Step};
    use uuid::Uuid;

    fn job(steps: Vec<Step>, format: OutputFormat) -> JobRequest {
        JobRequest {
            id: Uuid::new_v4(),
            input: "inputs/x".into(),
            steps,
            format,
            quality: 85,
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
            Step::Grayscale,
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
}

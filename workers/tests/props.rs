//! Property tests of the decoder entry point: whatever bytes reach a worker, it answers
//! with a result or a permanent error; it never panics or loops.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, RgbImage};
use pixmill_shared::{JobRequest, Limits, OutputFormat, Step};
use pixmill_workers::{JobError, pipeline::process};
use proptest::prelude::*;
use uuid::Uuid;

fn job() -> JobRequest {
    job_with(Step::Grayscale {})
}

/// A first step that changes how a JPEG is decoded (scaled, gray or BGR), or not.
fn first_step() -> impl Strategy<Value = Step> {
    prop_oneof![
        Just(Step::Grayscale {}),
        Just(Step::Resize {
            width: Some(5),
            height: Some(4),
            fit: pixmill_shared::Fit::Cover,
        }),
        Just(Step::Edges {
            low: 100.0,
            high: 200.0,
        }),
        Just(Step::Swap {
            order: pixmill_shared::ChannelOrder::Bgr,
        }),
    ]
}

fn job_with(step: Step) -> JobRequest {
    JobRequest {
        id: Uuid::new_v4(),
        input: "inputs/x".into(),
        steps: vec![step.into()],
        format: OutputFormat::Png,
        quality: 85,
        cursor: 0,
        hops: Vec::new(),
        variants: Vec::new(),
    }
}

fn encoded(format: ImageFormat) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(RgbImage::from_fn(24, 16, |x, y| {
        image::Rgb([x as u8 * 9, y as u8 * 13, 77])
    }))
    .write_to(&mut out, format)
    .expect("encode");
    out.into_inner()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_fail_permanently(bytes in proptest::collection::vec(any::<u8>(), 0..4096)) {
        match process(&job(), &bytes, &Limits::default()) {
            Ok(_) | Err(JobError::Permanent { .. }) => {}
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }

    #[test]
    fn damaged_images_fail_permanently_or_decode(
        format in prop_oneof![Just(ImageFormat::Jpeg), Just(ImageFormat::Png), Just(ImageFormat::WebP), Just(ImageFormat::Gif)],
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..8),
        step in first_step(),
    ) {
        let mut bytes = encoded(format);
        for (at, value) in flips {
            let i = ((bytes.len() - 1) as f64 * at) as usize;
            bytes[i] = value;
        }
        bytes.truncate(((bytes.len() as f64) * cut) as usize + 1);
        match process(&job_with(step), &bytes, &Limits::default()) {
            Ok(out) => prop_assert!(out.width >= 1 && out.height >= 1),
            Err(JobError::Permanent { .. }) => {}
            Err(e) => prop_assert!(false, "{e:?}"),
        }
    }
}

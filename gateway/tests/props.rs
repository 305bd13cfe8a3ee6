//! Property tests of request parsing and validation: whatever a client sends, the
//! gateway answers with a client error or accepts it; it never panics.

use std::{collections::BTreeMap, io::Cursor};

use axum::http::StatusCode;
use image::{DynamicImage, ImageFormat, RgbImage};
use pixmill_gateway::{error::ApiError, inspect::inspect, upload::job_spec};
use pixmill_shared::{Limits, plan_job};
use proptest::prelude::*;

fn field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("op".to_string()),
        Just("steps".to_string()),
        Just("width".to_string()),
        Just("height".to_string()),
        Just("sigma".to_string()),
        Just("fit".to_string()),
        Just("format".to_string()),
        Just("quality".to_string()),
        Just("degrees".to_string()),
        "[a-z_]{1,8}",
    ]
}

fn field_value() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("resize".to_string()),
        Just("blur".to_string()),
        Just("crop".to_string()),
        Just("rotate".to_string()),
        "-?[0-9]{1,12}(\\.[0-9]{1,4})?",
        "\\PC{0,20}",
        "\\[\\{\"op\":\"(blur|resize|crop|edges|swap)\"(,\"[a-z]{1,6}\":-?[0-9]{1,6})*\\}\\]",
    ]
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

fn is_client_error(e: &ApiError) -> bool {
    matches!(
        e.status(),
        StatusCode::BAD_REQUEST
            | StatusCode::UNPROCESSABLE_ENTITY
            | StatusCode::UNSUPPORTED_MEDIA_TYPE
            | StatusCode::PAYLOAD_TOO_LARGE
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any set of form fields parses to a spec or a 4xx, and any parsed spec then
    /// plans (or is refused) without panicking.
    #[test]
    fn any_fields_give_a_spec_or_a_client_error(fields in proptest::collection::btree_map(field_name(), field_value(), 0..6)) {
        let fields: BTreeMap<String, String> = fields;
        match job_spec(&fields, &Default::default()) {
            Ok(spec) => {
                let _ = plan_job(&spec.steps, 1600, 1000, &Limits::default());
            }
            Err(e) => prop_assert!(is_client_error(&e), "{e:?}"),
        }
    }

    /// Arbitrary bytes are never mistaken for a valid image, nor do they panic.
    #[test]
    fn arbitrary_bytes_are_refused_cleanly(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Err(e) = inspect(&bytes, &Limits::default()) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
    }

    /// Real encodings, cut or corrupted anywhere, are answered without a panic.
    #[test]
    fn damaged_images_are_answered(
        format in prop_oneof![Just(ImageFormat::Jpeg), Just(ImageFormat::Png), Just(ImageFormat::WebP), Just(ImageFormat::Gif)],
        cut in 0.0f64..1.0,
        flips in proptest::collection::vec((0.0f64..1.0, any::<u8>()), 0..8),
    ) {
        let mut bytes = encoded(format);
        for (at, value) in flips {
            let i = ((bytes.len() - 1) as f64 * at) as usize;
            bytes[i] = value;
        }
        bytes.truncate(((bytes.len() as f64) * cut) as usize + 1);
        if let Err(e) = inspect(&bytes, &Limits::default()) {
            prop_assert!(is_client_error(&e), "{e:?}");
        }
    }
}

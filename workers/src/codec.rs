//! Decoding uploads under explicit limits, and encoding results.

use std::io::Cursor;

use image::{
    DynamicImage, ImageDecoder, ImageFormat, ImageReader,
    codecs::{jpeg::JpegEncoder, png::PngEncoder, webp::WebPEncoder},
};
use pixmill_shared::{ErrorCode, Limits, OutputFormat, limits::check_pixels};

use crate::JobError;

/// Input formats a job may carry. GIF decodes its first frame.
pub const INPUT_FORMATS: &[ImageFormat] = &[
    ImageFormat::Jpeg,
    ImageFormat::Png,
    ImageFormat::WebP,
    ImageFormat::Gif,
];

/// Headroom over the raw pixel buffer that a decoder may allocate (row buffers, palettes).
const ALLOC_HEADROOM: u64 = 64 << 20;

/// Decodes `bytes`, refusing images over the pixel limit before any pixel buffer is
/// allocated, and applies the EXIF orientation so the result is upright.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(DynamicImage, ImageFormat), JobError> {
    let undecodable = |e: image::ImageError| {
        JobError::permanent(
            ErrorCode::UndecodableImage,
            format!("the image could not be decoded: {e}"),
        )
    };
    let format = image::guess_format(bytes)
        .ok()
        .filter(|f| INPUT_FORMATS.contains(f))
        .ok_or_else(|| {
            JobError::permanent(
                ErrorCode::UndecodableImage,
                "the input is not a JPEG, PNG, WebP or GIF image",
            )
        })?;
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decoder_limits = image::Limits::default();
    decoder_limits.max_image_width = Some(limits.max_side.max(65_535));
    decoder_limits.max_image_height = Some(limits.max_side.max(65_535));
    // 4 channels × 2 bytes is the widest pixel we decode (16-bit RGBA PNG).
    decoder_limits.max_alloc = Some(
        limits
            .max_pixels
            .saturating_mul(8)
            .saturating_add(ALLOC_HEADROOM),
    );
    reader.limits(decoder_limits);
    let mut decoder = reader.into_decoder().map_err(undecodable)?;
    let (width, height) = decoder.dimensions();
    check_pixels(width, height, limits)
        .map_err(|e| JobError::permanent(ErrorCode::TooManyPixels, e.to_string()))?;
    let orientation = decoder.orientation().map_err(undecodable)?;
    let mut image = DynamicImage::from_decoder(decoder).map_err(undecodable)?;
    image.apply_orientation(orientation);
    Ok((image, format))
}

/// Encodes `image` as `format`. JPEG drops alpha; 16-bit and float images become 8-bit.
pub fn encode(
    image: &DynamicImage,
    format: OutputFormat,
    quality: u8,
) -> Result<Vec<u8>, JobError> {
    let failed = |e: image::ImageError| {
        JobError::permanent(
            ErrorCode::EncodeFailed,
            format!("encoding as {format:?} failed: {e}"),
        )
    };
    let mut out = Vec::with_capacity(64 * 1024);
    let has_alpha = image.color().has_alpha();
    let gray = !image.color().has_color();
    match format {
        OutputFormat::Jpeg => {
            let encoder = JpegEncoder::new_with_quality(&mut out, quality.clamp(1, 100));
            if gray {
                as_luma8(image)
                    .write_with_encoder(encoder)
                    .map_err(failed)?;
            } else {
                as_rgb8(image).write_with_encoder(encoder).map_err(failed)?;
            }
        }
        OutputFormat::Png | OutputFormat::Webp => {
            let eight_bit = match (gray, has_alpha) {
                (true, false) => as_luma8(image),
                (false, false) => as_rgb8(image),
                (_, true) => match image {
                    DynamicImage::ImageLumaA8(_) | DynamicImage::ImageRgba8(_)
                        if format == OutputFormat::Png =>
                    {
                        std::borrow::Cow::Borrowed(image)
                    }
                    _ => std::borrow::Cow::Owned(DynamicImage::ImageRgba8(image.to_rgba8())),
                },
            };
            if format == OutputFormat::Png {
                eight_bit
                    .write_with_encoder(PngEncoder::new(&mut out))
                    .map_err(failed)?;
            } else {
                eight_bit
                    .write_with_encoder(WebPEncoder::new_lossless(&mut out))
                    .map_err(failed)?;
            }
        }
    }
    Ok(out)
}

fn as_rgb8(image: &DynamicImage) -> std::borrow::Cow<'_, DynamicImage> {
    match image {
        DynamicImage::ImageRgb8(_) => std::borrow::Cow::Borrowed(image),
        other => std::borrow::Cow::Owned(DynamicImage::ImageRgb8(other.to_rgb8())),
    }
}

fn as_luma8(image: &DynamicImage) -> std::borrow::Cow<'_, DynamicImage> {
    match image {
        DynamicImage::ImageLuma8(_) => std::borrow::Cow::Borrowed(image),
        other => std::borrow::Cow::Owned(DynamicImage::ImageLuma8(other.to_luma8())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{Rgb, RgbImage};

    fn sample() -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(64, 48, |x, y| {
            Rgb([x as u8 * 4, y as u8 * 5, 128])
        }))
    }

    #[test]
    fn every_output_format_decodes_back() {
        for format in [OutputFormat::Jpeg, OutputFormat::Png, OutputFormat::Webp] {
            let bytes = encode(&sample(), format, 85).expect("encode");
            let (back, _) = decode(&bytes, &Limits::default()).expect("decode");
            assert_eq!((back.width(), back.height()), (64, 48), "{format:?}");
        }
    }

    #[test]
    fn pixel_limit_is_checked_from_the_header() {
        let bytes = encode(&sample(), OutputFormat::Png, 85).expect("encode");
        let limits = Limits {
            max_pixels: 1000,
            ..Limits::default()
        };
        let err = decode(&bytes, &limits).expect_err("over the limit");
        assert_eq!(err.code(), Some(ErrorCode::TooManyPixels));
    }

    #[test]
    fn garbage_and_truncation_are_permanent_errors() {
        let err = decode(b"hello, not an image", &Limits::default()).expect_err("text");
        assert_eq!(err.code(), Some(ErrorCode::UndecodableImage));
        let bytes = encode(&sample(), OutputFormat::Jpeg, 85).expect("encode");
        let err = decode(&bytes[..bytes.len() / 3], &Limits::default()).expect_err("truncated");
        assert_eq!(err.code(), Some(ErrorCode::UndecodableImage));
    }
}

//! Looking at an upload without decoding it: its real format (sniffed from the bytes,
//! never trusted from headers), whether it is complete, and its size from the header.

use std::io::Cursor;

use image::{ImageFormat, ImageReader};
use pixmill_shared::{Limits, OutputFormat, limits::check_pixels};

use crate::error::{ApiCode, ApiError};

/// What the gateway learned about an upload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Inspected {
    pub format: ImageFormat,
    pub width: u32,
    pub height: u32,
}

impl Inspected {
    /// The output format when a job asks for none: the input's, and PNG for GIF input
    /// (the result is a single still frame).
    pub fn default_output(&self) -> OutputFormat {
        match self.format {
            ImageFormat::Jpeg => OutputFormat::Jpeg,
            ImageFormat::WebP => OutputFormat::Webp,
            _ => OutputFormat::Png,
        }
    }
}

/// Sniffs, checks completeness, reads the header size and applies the pixel limit.
pub fn inspect(bytes: &[u8], limits: &Limits) -> Result<Inspected, ApiError> {
    let format = match image::guess_format(bytes) {
        Ok(f @ (ImageFormat::Jpeg | ImageFormat::Png | ImageFormat::WebP | ImageFormat::Gif)) => f,
        Ok(other) => {
            return Err(ApiError::new(
                ApiCode::UnsupportedMediaType,
                format!(
                    "{} images are not supported; send JPEG, PNG, WebP or GIF",
                    other
                        .extensions_str()
                        .first()
                        .copied()
                        .unwrap_or("these")
                        .to_uppercase()
                ),
            ));
        }
        Err(_) => {
            return Err(ApiError::new(
                ApiCode::UnsupportedMediaType,
                "the upload is not an image: expected JPEG, PNG, WebP or GIF bytes",
            ));
        }
    };
    check_complete(format, bytes)?;
    if format == ImageFormat::Jpeg {
        // Counted before anything decodes: a progressive JPEG's cost is its pixels
        // times its scans, and a small file can hold thousands of scans.
        pixmill_shared::limits::check_scans(bytes, limits)
            .map_err(|message| ApiError::new(ApiCode::TooManyScans, message))?;
    }
    // Only the header is read here; the decoder's own allocation limit would refuse a
    // huge header with a vaguer message than the pixel limit below gives. A PNG's size
    // is read from its IHDR directly: the PNG decoder reads every chunk before the
    // image data, and would inflate a compressed ICC profile (a 1 MB upload can hold
    // 1 GB of zeros) just to find the size.
    let header = match (format, png_size(bytes)) {
        (ImageFormat::Png, Some(size)) => Ok(size),
        _ => {
            let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
            reader.no_limits();
            reader.into_dimensions()
        }
    };
    let (width, height) = header.map_err(|e| {
        ApiError::new(
            ApiCode::InvalidImage,
            format!("the {} header could not be read: {e}", name(format)),
        )
    })?;
    check_pixels(width, height, limits)
        .map_err(|e| ApiError::new(ApiCode::TooManyPixels, format!("{e} (PIXMILL_MAX_PIXELS)")))?;
    if format == ImageFormat::Gif
        && let Some((w, h)) = pixmill_shared::limits::gif_first_frame(bytes)
    {
        // Decoding costs the first frame's pixels, which may exceed the screen's.
        check_pixels(w, h, limits).map_err(|e| {
            ApiError::new(
                ApiCode::TooManyPixels,
                format!("the first frame: {e} (PIXMILL_MAX_PIXELS)"),
            )
        })?;
    }
    Ok(Inspected {
        format,
        width,
        height,
    })
}

/// Width and height from a PNG's IHDR, the chunk that must come first.
fn png_size(bytes: &[u8]) -> Option<(u32, u32)> {
    if bytes.get(12..16)? != b"IHDR" {
        return None;
    }
    let be = |at: usize| Some(u32::from_be_bytes(bytes.get(at..at + 4)?.try_into().ok()?));
    Some((be(16)?, be(20)?))
}

fn name(format: ImageFormat) -> &'static str {
    match format {
        ImageFormat::Jpeg => "JPEG",
        ImageFormat::Png => "PNG",
        ImageFormat::WebP => "WebP",
        ImageFormat::Gif => "GIF",
        _ => "image",
    }
}

/// Catches truncated uploads cheaply, from each format's framing, so a half-sent file is
/// answered at once instead of failing later on a worker.
fn check_complete(format: ImageFormat, bytes: &[u8]) -> Result<(), ApiError> {
    let truncated = |what: &str| {
        ApiError::new(
            ApiCode::TruncatedImage,
            format!(
                "the {} data ends early ({what}); the file looks truncated",
                name(format)
            ),
        )
    };
    match format {
        ImageFormat::Jpeg if !pixmill_shared::limits::jpeg_is_complete(bytes) => {
            return Err(truncated("no end-of-image marker"));
        }
        ImageFormat::Png => {
            let tail = &bytes[bytes.len().saturating_sub(64)..];
            if !tail.windows(4).any(|w| w == b"IEND") {
                return Err(truncated("no IEND chunk"));
            }
        }
        ImageFormat::WebP => {
            let declared = bytes
                .get(4..8)
                .and_then(|b| b.try_into().ok())
                .map(u32::from_le_bytes)
                .map_or(u64::MAX, |n| u64::from(n) + 8);
            if (bytes.len() as u64) < declared {
                return Err(truncated("shorter than its RIFF header says"));
            }
        }
        ImageFormat::Gif if !bytes[bytes.len().saturating_sub(16)..].contains(&0x3B) => {
            return Err(truncated("no trailer byte"));
        }
        _ => {}
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{DynamicImage, RgbImage};

    fn encoded(format: ImageFormat) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        DynamicImage::ImageRgb8(RgbImage::new(30, 20))
            .write_to(&mut out, format)
            .expect("encode");
        out.into_inner()
    }

    #[test]
    fn formats_are_sniffed_from_bytes() {
        for format in [
            ImageFormat::Jpeg,
            ImageFormat::Png,
            ImageFormat::WebP,
            ImageFormat::Gif,
        ] {
            let got = inspect(&encoded(format), &Limits::default()).expect("inspect");
            assert_eq!((got.format, got.width, got.height), (format, 30, 20));
        }
        let err = inspect(b"just some text", &Limits::default()).expect_err("text");
        assert_eq!(err.code(), ApiCode::UnsupportedMediaType, "{err:?}");
    }

    #[test]
    fn truncated_files_are_caught() {
        for format in [ImageFormat::Jpeg, ImageFormat::Png, ImageFormat::WebP] {
            let bytes = encoded(format);
            let err =
                inspect(&bytes[..bytes.len() * 2 / 3], &Limits::default()).expect_err("truncated");
            assert_eq!(err.code(), ApiCode::TruncatedImage, "{format:?}: {err:?}");
        }
    }

    #[test]
    fn a_header_claiming_too_many_pixels_is_refused() {
        // A valid PNG signature and IHDR claiming 100000×100000, then IEND.
        let bytes = crate::inspect::tests::png_claiming(100_000, 100_000);
        let err = inspect(&bytes, &Limits::default()).expect_err("too big");
        assert_eq!(err.code(), ApiCode::TooManyPixels, "{err:?}");
    }

    /// A tiny PNG whose IHDR claims `w`×`h` (no pixel data behind it).
    pub(crate) fn png_claiming(w: u32, h: u32) -> Vec<u8> {
        fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
            out.extend_from_slice(&u32::try_from(data.len()).unwrap_or(0).to_be_bytes());
            let start = out.len();
            out.extend_from_slice(kind);
            out.extend_from_slice(data);
            let crc = crc32(&out[start..]);
            out.extend_from_slice(&crc.to_be_bytes());
        }
        let mut ihdr = Vec::new();
        ihdr.extend_from_slice(&w.to_be_bytes());
        ihdr.extend_from_slice(&h.to_be_bytes());
        ihdr.extend_from_slice(&[8, 2, 0, 0, 0]);
        let mut out = b"\x89PNG\r\n\x1a\n".to_vec();
        chunk(&mut out, b"IHDR", &ihdr);
        // A tiny deflate stream: a bomb need not carry its pixels.
        chunk(
            &mut out,
            b"IDAT",
            &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01],
        );
        chunk(&mut out, b"IEND", &[]);
        out
    }

    fn crc32(data: &[u8]) -> u32 {
        let mut crc = 0xFFFF_FFFFu32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 == 1 {
                    (crc >> 1) ^ 0xEDB8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
}

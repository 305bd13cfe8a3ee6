//! Decoding uploads under explicit limits, and encoding results.
//!
//! JPEG, the common case, goes through libjpeg-turbo ([`jpeg`]); PNG, WebP and GIF
//! through `image`, with its decoder limits set.

use std::io::Cursor;

mod jpeg;
mod lossless;

use image::{
    DynamicImage, ImageDecoder, ImageFormat, ImageReader,
    codecs::{png::PngEncoder, webp::WebPEncoder},
    metadata::Orientation,
};
use pixmill_shared::{ErrorCode, Fit, Limits, OutputFormat, limits::check_pixels};

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

/// How the pipeline will use the decoded image, so the decoder can do less.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hint {
    /// The first step is a resize: this one, or for a job with variants, one of these
    /// for every variant. A JPEG may then be decoded at 1/2, 1/4 or 1/8 scale in the
    /// DCT domain, as long as at least as many pixels as the largest resize writes are
    /// left: several times faster than decoding everything and throwing most of it
    /// away in the resize. Empty: no resize comes first.
    pub first_resizes: Vec<FirstResize>,
    /// The first step only looks at luminance, so a JPEG may be decoded to its luma
    /// plane alone.
    pub gray: bool,
    /// The first step exchanges red and blue, which a JPEG's colour conversion can do
    /// as it writes the pixels.
    pub swap_red_blue: bool,
}

/// A resize's parameters, to be planned once the decoder knows the full size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstResize {
    pub width: Option<u32>,
    pub height: Option<u32>,
    pub fit: Fit,
}

/// A decoded image, upright, with what the pipeline needs to know about it.
#[derive(Debug)]
pub struct Decoded {
    pub image: DynamicImage,
    pub format: ImageFormat,
    /// The upright size of the full image. Equal to the image's size unless DCT scaling
    /// decoded it smaller.
    pub full_size: (u32, u32),
    /// How many decoded pixels per full-size pixel: 1, or 1/2, 1/4 or 1/8 when DCT
    /// scaling decoded the image smaller for a first resize.
    pub scale: f64,
    /// Red and blue were exchanged while decoding, as the hint asked.
    pub swapped_red_blue: bool,
}

/// Runs `steps` on a JPEG without decoding it, when they allow that (see [`lossless`]):
/// the encoded result and its size, or `None` when the job needs the normal path.
pub fn transform_losslessly(
    bytes: &[u8],
    steps: &[pixmill_shared::Step],
    limits: &Limits,
    check: impl FnOnce(u32, u32) -> Result<(), JobError>,
) -> Result<Option<(Vec<u8>, u32, u32)>, JobError> {
    if image::guess_format(bytes).ok() != Some(ImageFormat::Jpeg)
        || !pixmill_shared::limits::jpeg_is_complete(bytes)
    {
        return Ok(None);
    }
    pixmill_shared::limits::check_scans(bytes, limits)
        .map_err(|message| JobError::permanent(ErrorCode::TooManyScans, message))?;
    let Some(plan) = lossless::plan(bytes, steps) else {
        return Ok(None);
    };
    check(plan.upright.0, plan.upright.1)?;
    Ok(lossless::run(&plan, bytes).map(|out| (out, plan.size.0, plan.size.1)))
}

/// Decodes `bytes`, refusing images over the pixel limit before any pixel buffer is
/// allocated, and applies the EXIF orientation so the result is upright.
pub fn decode(bytes: &[u8], limits: &Limits) -> Result<(DynamicImage, ImageFormat), JobError> {
    decode_with(bytes, limits, Hint::default()).map(|d| (d.image, d.format))
}

/// Like [`decode`], taking a [`Hint`] that lets a JPEG decode smaller or to gray.
pub fn decode_with(bytes: &[u8], limits: &Limits, hint: Hint) -> Result<Decoded, JobError> {
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
    if format == ImageFormat::Jpeg {
        if !pixmill_shared::limits::jpeg_is_complete(bytes) {
            return Err(JobError::permanent(
                ErrorCode::UndecodableImage,
                "the JPEG data ends early (no end-of-image marker); the file looks truncated",
            ));
        }
        // Checked again here: the message may not have come through a gateway.
        let scans = pixmill_shared::limits::check_scans(bytes, limits)
            .map_err(|message| JobError::permanent(ErrorCode::TooManyScans, message))?;
        if let Some(decoded) = decode_turbo(bytes, limits, hint, scans > 1)? {
            return Ok(decoded);
        }
    }
    if format == ImageFormat::Gif
        && let Some((w, h)) = pixmill_shared::limits::gif_first_frame(bytes)
    {
        check_pixels(w, h, limits).map_err(|e| {
            JobError::permanent(ErrorCode::TooManyPixels, format!("the first frame: {e}"))
        })?;
    }
    // PNG metadata pixmill does not use may be compressed, and inflates without bound
    // (a 1 MB iCCP profile can hold 1 GB of zeros): those chunks are dropped unread.
    let stripped = (format == ImageFormat::Png)
        .then(|| png_without_compressed_metadata(bytes))
        .flatten();
    let bytes = stripped.as_deref().unwrap_or(bytes);
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
    let full_size = (image.width(), image.height());
    Ok(Decoded {
        image,
        format,
        full_size,
        scale: 1.0,
        swapped_red_blue: false,
    })
}

/// PNG chunks holding zlib-compressed metadata: an ICC profile and compressed text.
/// pixmill's results carry no metadata, so they are never needed.
const COMPRESSED_METADATA: [&[u8; 4]; 3] = [b"iCCP", b"zTXt", b"iTXt"];

/// `png` without its [`COMPRESSED_METADATA`] chunks, or `None` when it has none (or its
/// chunks cannot be walked, which the decoder will report).
fn png_without_compressed_metadata(png: &[u8]) -> Option<Vec<u8>> {
    let mut chunks = Vec::new();
    let mut at = 8; // after the signature
    let mut found = false;
    while at + 12 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().ok()?);
        let end = usize::try_from(len)
            .ok()
            .and_then(|len| at.checked_add(12)?.checked_add(len))
            .filter(|&end| end <= png.len());
        // A chunk that runs past the end: the rest goes to the decoder as it is, to
        // report; what came before it is still filtered.
        let Some(end) = end else {
            break;
        };
        let kind = &png[at + 4..at + 8];
        let drop = COMPRESSED_METADATA.iter().any(|k| k.as_slice() == kind);
        found |= drop;
        chunks.push((at, end, drop));
        at = end;
        if kind == b"IEND" {
            break;
        }
    }
    if !found {
        return None;
    }
    let mut out = Vec::with_capacity(png.len());
    out.extend_from_slice(&png[..8]);
    for (start, end, drop) in chunks {
        if !drop {
            out.extend_from_slice(&png[start..end]);
        }
    }
    out.extend_from_slice(&png[at..]);
    Some(out)
}

/// The libjpeg-turbo path. `None` sends the file to the general decoder: CMYK and
/// lossless JPEGs, and files libjpeg-turbo reports problems with (the general decoder
/// is more forgiving of some damaged files, and has the last word).
fn decode_turbo(
    bytes: &[u8],
    limits: &Limits,
    hint: Hint,
    progressive: bool,
) -> Result<Option<Decoded>, JobError> {
    let Ok(header) = jpeg::header(bytes) else {
        return Ok(None);
    };
    check_pixels(header.width, header.height, limits)
        .map_err(|e| JobError::permanent(ErrorCode::TooManyPixels, e.to_string()))?;
    if !header.supported {
        return Ok(None);
    }
    let orientation = exif_orientation(bytes);
    let swaps_axes = matches!(
        orientation,
        Orientation::Rotate90
            | Orientation::Rotate270
            | Orientation::Rotate90FlipH
            | Orientation::Rotate270FlipH
    );
    let full_size = if swaps_axes {
        (header.height, header.width)
    } else {
        (header.width, header.height)
    };
    // Every resize must find enough pixels: the largest need wins. A resize that plans
    // to nothing (no side given) needs the full size.
    let need = hint.first_resizes.iter().try_fold(None, |need, m| {
        let (w, h) =
            crate::ops::plan_resize(full_size.0, full_size.1, m.width, m.height, m.fit)?.min_source;
        Some(Some(need.map_or((w, h), |(nw, nh): (u32, u32)| {
            (nw.max(w), nh.max(h))
        })))
    });
    let need = need.flatten();
    let shrink = need.map_or(1, |(w, h)| {
        let (w, h) = if swaps_axes { (h, w) } else { (w, h) };
        jpeg::shrink_factor(header.width, header.height, w, h)
    });
    let layout = if hint.gray {
        jpeg::Layout::Gray
    } else if hint.swap_red_blue {
        jpeg::Layout::Bgr
    } else {
        jpeg::Layout::Rgb
    };
    let Ok(mut image) = jpeg::decode(bytes, shrink, layout, progressive) else {
        return Ok(None);
    };
    image.apply_orientation(orientation);
    Ok(Some(Decoded {
        image,
        format: ImageFormat::Jpeg,
        full_size,
        scale: 1.0 / f64::from(shrink),
        swapped_red_blue: layout == jpeg::Layout::Bgr,
    }))
}

/// The EXIF orientation of a JPEG: walks the marker segments before the image data to
/// the APP1 "Exif" one and reads it in place (no copy of the file, no second parse of
/// the frame headers). Anything unreadable counts as upright.
fn exif_orientation(bytes: &[u8]) -> Orientation {
    const APP1: u8 = 0xE1;
    const START_OF_SCAN: u8 = 0xDA;
    let mut at = 2; // after SOI
    while at + 4 <= bytes.len() && bytes[at] == 0xFF {
        let marker = bytes[at + 1];
        if marker == 0xFF {
            at += 1; // fill byte
            continue;
        }
        if marker == START_OF_SCAN || marker == 0xD9 {
            break;
        }
        if marker == 0x01 || (0xD0..=0xD7).contains(&marker) {
            at += 2; // no length
            continue;
        }
        let len = usize::from(u16::from_be_bytes([bytes[at + 2], bytes[at + 3]]));
        let Some(segment) = bytes.get(at + 4..at + 2 + len) else {
            break;
        };
        if marker == APP1
            && let Some(tiff) = segment.strip_prefix(b"Exif\0\0")
        {
            return Orientation::from_exif_chunk(tiff).unwrap_or(Orientation::NoTransforms);
        }
        at += 2 + len;
    }
    Orientation::NoTransforms
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
    let has_alpha = image.color().has_alpha();
    let gray = !image.color().has_color();
    match format {
        OutputFormat::Jpeg => {
            let pixels = if gray {
                as_luma8(image)
            } else {
                as_rgb8(image)
            };
            jpeg::encode(&pixels, quality).map_err(|e| {
                JobError::permanent(
                    ErrorCode::EncodeFailed,
                    format!("encoding as JPEG failed: {e}"),
                )
            })
        }
        OutputFormat::Png | OutputFormat::Webp => {
            let mut out = Vec::with_capacity(64 * 1024);
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
            Ok(out)
        }
    }
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
    use image::{GenericImageView, Rgb, RgbImage};

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

    /// `jpeg` with an EXIF APP1 segment saying `orientation` inserted after SOI.
    fn with_orientation(jpeg: &[u8], orientation: u16) -> Vec<u8> {
        let mut tiff = b"MM\0\x2a\0\0\0\x08".to_vec();
        tiff.extend_from_slice(&1u16.to_be_bytes()); // one IFD entry
        tiff.extend_from_slice(&0x0112u16.to_be_bytes()); // Orientation
        tiff.extend_from_slice(&3u16.to_be_bytes()); // SHORT
        tiff.extend_from_slice(&1u32.to_be_bytes()); // count
        tiff.extend_from_slice(&orientation.to_be_bytes());
        tiff.extend_from_slice(&[0, 0, 0, 0, 0, 0]); // padding, next IFD = 0
        let mut app1 = b"Exif\0\0".to_vec();
        app1.extend_from_slice(&tiff);
        let mut out = jpeg[..2].to_vec();
        out.extend_from_slice(&[0xFF, 0xE1]);
        out.extend_from_slice(&u16::try_from(app1.len() + 2).expect("short").to_be_bytes());
        out.extend_from_slice(&app1);
        out.extend_from_slice(&jpeg[2..]);
        out
    }

    /// Four flat quadrants, so corners survive JPEG: red, green / blue, white.
    fn quadrants(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            match (x < w / 2, y < h / 2) {
                (true, true) => Rgb([255, 0, 0]),
                (false, true) => Rgb([0, 255, 0]),
                (true, false) => Rgb([0, 0, 255]),
                (false, false) => Rgb([255, 255, 255]),
            }
        }))
    }

    fn corner_colours(image: &DynamicImage) -> Vec<[u8; 3]> {
        let rgb = image.to_rgb8();
        let (w, h) = (rgb.width() - 3, rgb.height() - 3);
        [(2, 2), (w, 2), (2, h), (w, h)]
            .iter()
            .map(|&(x, y)| rgb.get_pixel(x, y).0.map(|c| if c > 127 { 255 } else { 0 }))
            .collect()
    }

    #[test]
    fn all_eight_exif_orientations_come_out_upright() {
        let original = quadrants(96, 64);
        let plain = encode(&original, OutputFormat::Jpeg, 95).expect("encode");
        for value in 1..=8u8 {
            let bytes = with_orientation(&plain, u16::from(value));
            let (decoded, _) = decode(&bytes, &Limits::default()).expect("decode");
            let mut want = original.clone();
            want.apply_orientation(Orientation::from_exif(value).expect("valid"));
            assert_eq!(
                decoded.dimensions(),
                want.dimensions(),
                "orientation {value}"
            );
            assert_eq!(
                corner_colours(&decoded),
                corner_colours(&want),
                "orientation {value}"
            );
        }
    }

    #[test]
    fn shrink_on_load_plans_on_the_upright_size() {
        // 1600×1000 stored, orientation 6 (rotate 90°): upright it is 1000×1600.
        let stored = encode(&quadrants(1600, 1000), OutputFormat::Jpeg, 90).expect("encode");
        let bytes = with_orientation(&stored, 6);
        let hint = Hint {
            first_resizes: vec![FirstResize {
                width: Some(200),
                height: None,
                fit: Fit::Cover,
            }],
            ..Hint::default()
        };
        let decoded = decode_with(&bytes, &Limits::default(), hint).expect("decode");
        assert_eq!(decoded.full_size, (1000, 1600));
        // 1/4 scale keeps 250×400 ≥ the 200×320 the resize writes; 1/8 would not.
        assert_eq!(decoded.image.dimensions(), (250, 400));
    }

    #[test]
    fn cmyk_jpegs_fall_back_to_the_general_decoder() {
        // Full cyan ink and nothing else, stored inverted as Adobe (Photoshop) CMYK
        // JPEGs store it: 0 = full ink. Cyan absorbs red: the pixel is (0, 255, 255).
        let (w, h) = (32usize, 16usize);
        let cmyk: Vec<u8> = [0u8, 255, 255, 255].repeat(w * h);
        let jpeg = turbojpeg::compress(
            turbojpeg::Image {
                pixels: cmyk.as_slice(),
                width: w,
                pitch: w * 4,
                height: h,
                format: turbojpeg::PixelFormat::CMYK,
            },
            95,
            turbojpeg::Subsamp::None,
        )
        .expect("compress");
        assert!(!jpeg::header(&jpeg).expect("header").supported);
        let (decoded, format) = decode(&jpeg, &Limits::default()).expect("decode");
        assert_eq!(format, ImageFormat::Jpeg);
        assert_eq!(decoded.dimensions(), (32, 16));
        let px = decoded.to_rgb8().get_pixel(8, 8).0;
        assert!(px[0] < 8 && px[1] > 247 && px[2] > 247, "{px:?}");
    }
}

//! JPEG through libjpeg-turbo: SIMD decoding and encoding, and decoding straight to a
//! smaller size (DCT scaling) when the pipeline starts by shrinking the image.
//!
//! The TurboJPEG handles are kept per thread: creating one allocates libjpeg's state,
//! and a worker's blocking threads run job after job.

use std::cell::RefCell;

use image::{DynamicImage, GrayImage, RgbImage};
use turbojpeg::{Colorspace, Compressor, Decompressor, Image, PixelFormat, ScalingFactor, Subsamp};

thread_local! {
    static DECOMPRESSOR: RefCell<Option<Decompressor>> = const { RefCell::new(None) };
    static COMPRESSOR: RefCell<Option<Compressor>> = const { RefCell::new(None) };
}

/// The DCT scaling factors libjpeg-turbo decodes at fastest, largest reduction first.
const SHRINKS: [(ScalingFactor, u32); 3] = [
    (ScalingFactor::ONE_EIGHTH, 8),
    (ScalingFactor::ONE_QUARTER, 4),
    (ScalingFactor::ONE_HALF, 2),
];

/// What a JPEG's header says, before any pixel is decoded.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    pub width: u32,
    pub height: u32,
    /// Baseline 8-bit YCbCr, RGB or gray: the kinds this module decodes. CMYK, YCCK and
    /// lossless files go to the general decoder instead.
    pub supported: bool,
}

/// Reads the frame header.
pub fn header(bytes: &[u8]) -> Result<Header, String> {
    with_decompressor(|d| {
        let h = d.read_header(bytes).map_err(|e| e.to_string())?;
        let supported = !h.is_lossless
            && matches!(
                h.colorspace,
                Colorspace::YCbCr | Colorspace::RGB | Colorspace::Gray
            );
        Ok(Header {
            width: u32::try_from(h.width).map_err(|e| e.to_string())?,
            height: u32::try_from(h.height).map_err(|e| e.to_string())?,
            supported,
        })
    })
}

/// The largest DCT reduction (2, 4 or 8) that still leaves at least `min_w`×`min_h`
/// pixels of a `width`×`height` image, or 1 when none does.
pub fn shrink_factor(width: u32, height: u32, min_w: u32, min_h: u32) -> u32 {
    SHRINKS
        .iter()
        .map(|&(f, d)| (d, f))
        .find(|(_, f)| {
            f.scale(width as usize) >= min_w as usize && f.scale(height as usize) >= min_h as usize
        })
        .map_or(1, |(d, _)| d)
}

/// The pixel layout to decode to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Rgb,
    /// Red and blue exchanged: a channel swap done by the colour conversion for free.
    Bgr,
    /// Luma only: libjpeg-turbo skips the chroma planes entirely.
    Gray,
}

/// Decodes at 1/`shrink` of the full size (1, 2, 4 or 8) to `layout`. A gray JPEG
/// always decodes to one channel. `progressive`: the file has more than one scan
/// (`pixmill_shared::limits::check_scans` counted them).
pub fn decode(
    bytes: &[u8],
    shrink: u32,
    layout: Layout,
    progressive: bool,
) -> Result<DynamicImage, String> {
    let factor = match shrink {
        8 => ScalingFactor::ONE_EIGHTH,
        4 => ScalingFactor::ONE_QUARTER,
        2 => ScalingFactor::ONE_HALF,
        _ => ScalingFactor::ONE,
    };
    with_decompressor(|d| {
        let header = d.read_header(bytes).map_err(|e| e.to_string())?;
        d.set_scaling_factor(factor).map_err(|e| e.to_string())?;
        let scaled = header.scaled(factor);
        let (w, h) = (scaled.width, scaled.height);
        let gray = layout == Layout::Gray || header.colorspace == Colorspace::Gray;
        let format = match layout {
            _ if gray => PixelFormat::GRAY,
            Layout::Bgr => PixelFormat::BGR,
            _ => PixelFormat::RGB,
        };
        let pitch = w * format.size();
        let mut pixels = crate::buffers::zeroed(pitch * h);
        if progressive {
            // A progressive file: libjpeg is about to allocate its own buffer of the
            // whole image's coefficients. Free the slot's other kept buffers first, so
            // the two are never resident together.
            crate::buffers::release();
        }
        let result = d.decompress(
            bytes,
            Image {
                pixels: pixels.as_mut_slice(),
                width: w,
                pitch,
                height: h,
                format,
            },
        );
        // Leave the handle at full scale for the next job on this thread.
        let _ = d.set_scaling_factor(ScalingFactor::ONE);
        result.map_err(|e| e.to_string())?;
        let (w, h) = (
            u32::try_from(w).map_err(|e| e.to_string())?,
            u32::try_from(h).map_err(|e| e.to_string())?,
        );
        let image = if gray {
            GrayImage::from_raw(w, h, pixels).map(DynamicImage::ImageLuma8)
        } else {
            RgbImage::from_raw(w, h, pixels).map(DynamicImage::ImageRgb8)
        };
        image.ok_or_else(|| "decoded buffer has the wrong size".to_string())
    })
}

/// Encodes 8-bit RGB or gray pixels. Colour uses 4:2:0 chroma subsampling, the usual
/// choice for photographs (and what Pillow and libvips default to).
pub fn encode(image: &DynamicImage, quality: u8) -> Result<Vec<u8>, String> {
    let (pixels, format, subsamp) = match image {
        DynamicImage::ImageLuma8(img) => {
            (img.as_raw().as_slice(), PixelFormat::GRAY, Subsamp::Gray)
        }
        DynamicImage::ImageRgb8(img) => {
            (img.as_raw().as_slice(), PixelFormat::RGB, Subsamp::Sub2x2)
        }
        _ => return Err("only 8-bit RGB or gray pixels can be encoded as JPEG".into()),
    };
    let width = image.width() as usize;
    let height = image.height() as usize;
    with_compressor(|c| {
        c.set_quality(i32::from(quality.clamp(1, 100)))
            .map_err(|e| e.to_string())?;
        c.set_subsamp(subsamp).map_err(|e| e.to_string())?;
        c.compress_to_vec(Image {
            pixels,
            width,
            pitch: width * format.size(),
            height,
            format,
        })
        .map_err(|e| e.to_string())
    })
}

pub(super) fn with_decompressor<T>(
    f: impl FnOnce(&mut Decompressor) -> Result<T, String>,
) -> Result<T, String> {
    with_handle(&DECOMPRESSOR, Decompressor::new, f)
}

fn with_compressor<T>(f: impl FnOnce(&mut Compressor) -> Result<T, String>) -> Result<T, String> {
    with_handle(&COMPRESSOR, Compressor::new, f)
}

/// Runs `f` with this thread's handle in `slot`, creating it on first use.
pub(super) fn with_handle<H, T>(
    slot: &'static std::thread::LocalKey<RefCell<Option<H>>>,
    create: fn() -> turbojpeg::Result<H>,
    f: impl FnOnce(&mut H) -> Result<T, String>,
) -> Result<T, String> {
    slot.with(|cell| {
        let mut handle = cell.borrow_mut();
        if handle.is_none() {
            *handle = Some(create().map_err(|e| e.to_string())?);
        }
        match handle.as_mut() {
            Some(h) => f(h),
            None => Err("no TurboJPEG handle".into()),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Rgb;

    fn gradient(w: u32, h: u32) -> DynamicImage {
        DynamicImage::ImageRgb8(RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 90])
        }))
    }

    #[test]
    fn round_trip_keeps_size_and_colour() {
        let bytes = encode(&gradient(320, 200), 90).expect("encode");
        let h = header(&bytes).expect("header");
        assert_eq!((h.width, h.height, h.supported), (320, 200, true));
        let back = decode(&bytes, 1, Layout::Rgb, false)
            .expect("decode")
            .to_rgb8();
        let px = back.get_pixel(160, 100).0;
        assert!(
            px[0].abs_diff(127) <= 4 && px[1].abs_diff(127) <= 4 && px[2].abs_diff(90) <= 4,
            "{px:?}"
        );
    }

    #[test]
    fn dct_scaling_decodes_smaller_and_gray() {
        let bytes = encode(&gradient(321, 200), 90).expect("encode");
        let half = decode(&bytes, 2, Layout::Rgb, false).expect("decode");
        assert_eq!((half.width(), half.height()), (161, 100));
        let swapped = decode(&bytes, 2, Layout::Bgr, false)
            .expect("decode")
            .to_rgb8();
        let (a, b) = (half.to_rgb8(), swapped);
        assert_eq!(
            a.get_pixel(7, 9).0,
            [
                b.get_pixel(7, 9).0[2],
                b.get_pixel(7, 9).0[1],
                b.get_pixel(7, 9).0[0]
            ]
        );
        let eighth = decode(&bytes, 8, Layout::Gray, false).expect("decode");
        assert_eq!((eighth.width(), eighth.height()), (41, 25));
        assert_eq!(eighth.color(), image::ColorType::L8);
    }

    #[test]
    fn decoding_takes_a_kept_buffer_and_a_progressive_file_frees_the_others() {
        use crate::buffers;
        const MIB: usize = 1024 * 1024;
        let image = gradient(512, 512);
        let baseline = encode(&image, 90).expect("encode");
        let mut compressor = Compressor::new().expect("compressor");
        compressor.set_progressive(true).expect("progressive");
        compressor.set_quality(90).expect("quality");
        compressor
            .set_subsamp(Subsamp::Sub2x2)
            .expect("subsampling");
        let rgb = image.to_rgb8();
        let progressive = compressor
            .compress_to_vec(Image {
                pixels: rgb.as_raw().as_slice(),
                width: 512,
                pitch: 512 * 3,
                height: 512,
                format: PixelFormat::RGB,
            })
            .expect("encode progressive");
        assert!(pixmill_shared::limits::jpeg_scans(&progressive) > 1);

        // This test's thread stands for a slot.
        buffers::enable(64 * MIB);
        buffers::give(vec![0; 2 * MIB]);
        buffers::give(vec![0; 2 * MIB]);
        let decoded = decode(&baseline, 1, Layout::Rgb, false).expect("decode");
        // One buffer became the decoded pixels; the other stays for the next step.
        assert_eq!(buffers::held(), 2 * MIB);
        let expected = decoded.to_rgb8();
        buffers::recycle(decoded);
        assert_eq!(buffers::held(), 4 * MIB);
        // libjpeg keeps a progressive file's coefficients in a buffer of its own as
        // large as the image: the slot frees what it kept before that is allocated.
        let decoded = decode(&progressive, 1, Layout::Rgb, true).expect("decode");
        assert_eq!(buffers::held(), 0);
        let worst = decoded
            .to_rgb8()
            .as_raw()
            .iter()
            .zip(expected.as_raw())
            .map(|(a, b)| a.abs_diff(*b))
            .max();
        assert!(worst.is_some_and(|d| d <= 2), "{worst:?}");
        buffers::enable(0);
    }

    #[test]
    fn shrink_keeps_at_least_the_asked_size() {
        assert_eq!(shrink_factor(1600, 1000, 640, 400), 2);
        assert_eq!(shrink_factor(6000, 4000, 640, 400), 8);
        assert_eq!(shrink_factor(3000, 2000, 640, 400), 4);
        assert_eq!(shrink_factor(1000, 700, 640, 400), 1);
    }
}

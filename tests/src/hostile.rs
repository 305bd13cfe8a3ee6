//! Small files whose decoding costs far more than their size suggests.

use image::{DynamicImage, RgbImage};

/// A progressive JPEG of a flat `side`×`side` image whose last scan is repeated until
/// it has `scans` scans. A flat image has no AC coefficients, so each of its AC scans
/// is a few bytes of end-of-band runs, yet the decoder makes another pass over all the
/// image's blocks for every one: the "many scans" attack on progressive decoders,
/// where the work grows with the count while the file stays small.
pub fn progressive_jpeg_with_scans(side: u32, scans: usize) -> Vec<u8> {
    let image = RgbImage::from_pixel(side, side, image::Rgb([90, 140, 200]));
    let mut compressor = turbojpeg::Compressor::new().expect("compressor");
    compressor.set_quality(90).expect("quality");
    compressor.set_progressive(true).expect("progressive");
    let jpeg = compressor
        .compress_to_vec(turbojpeg::Image {
            pixels: DynamicImage::ImageRgb8(image).as_bytes(),
            width: side as usize,
            pitch: side as usize * 3,
            height: side as usize,
            format: turbojpeg::PixelFormat::RGB,
        })
        .expect("compress");
    let starts = pixmill_shared::limits::jpeg_scan_starts(&jpeg);
    let have = starts.len();
    assert!(have >= 2 && scans >= have, "{have} scans to start from");
    let last = *starts.last().expect("a scan");
    let eoi = jpeg.len() - 2;
    let mut out = jpeg[..eoi].to_vec();
    for _ in have..scans {
        out.extend_from_slice(&jpeg[last..eoi]);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}

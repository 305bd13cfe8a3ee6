//! Small files whose decoding costs far more than their size suggests.

use std::io::{Cursor, Write};

use image::{DynamicImage, GrayImage, ImageFormat, RgbImage};

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

/// A small PNG carrying an ICC profile chunk (iCCP) that inflates to `mib` MiB of
/// zeros: about 1 KB of upload per MiB.
pub fn png_with_inflating_icc(mib: usize) -> Vec<u8> {
    let mut png = Cursor::new(Vec::new());
    DynamicImage::ImageLuma8(GrayImage::from_fn(64, 64, |x, y| {
        image::Luma([((x + y) * 2) as u8])
    }))
    .write_to(&mut png, ImageFormat::Png)
    .expect("png");
    let png = png.into_inner();
    let mut zlib = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..mib {
        zlib.write_all(&zeros).expect("deflate");
    }
    let mut data = b"bomb\0\0".to_vec(); // profile name, compression method 0
    data.extend_from_slice(&zlib.finish().expect("deflate"));
    let mut chunk = u32::try_from(data.len())
        .expect("size")
        .to_be_bytes()
        .to_vec();
    let mut body = b"iCCP".to_vec();
    body.extend_from_slice(&data);
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    chunk.extend_from_slice(&body);
    chunk.extend_from_slice(&crc.sum().to_be_bytes());
    // After the signature and IHDR (8 + 25 bytes), before the image data.
    let mut out = png[..33].to_vec();
    out.extend_from_slice(&chunk);
    out.extend_from_slice(&png[33..]);
    out
}

/// A 16×16 GIF whose first frame's descriptor claims `side`×`side` px: decoding costs
/// the frame's size, not the screen's.
pub fn gif_with_oversized_frame(side: u16) -> Vec<u8> {
    let mut gif = Cursor::new(Vec::new());
    DynamicImage::ImageRgb8(RgbImage::from_pixel(16, 16, image::Rgb([200, 30, 30])))
        .write_to(&mut gif, ImageFormat::Gif)
        .expect("gif");
    let mut gif = gif.into_inner();
    let at = pixmill_shared::limits::gif_first_descriptor(&gif).expect("a frame");
    gif[at + 5..at + 7].copy_from_slice(&side.to_le_bytes());
    gif[at + 7..at + 9].copy_from_slice(&side.to_le_bytes());
    gif
}

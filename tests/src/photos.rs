//! Real photographs for the tests (fetched by `deploy/fixtures/fetch-photos.sh`), and
//! the measurements the tests make on images.

use std::{io::Cursor, path::PathBuf};

use image::{DynamicImage, GrayImage, ImageFormat};

/// The folder holding the photographs: `PIXMILL_PHOTOS_DIR`, or `var/photos`.
pub fn dir() -> PathBuf {
    std::env::var_os("PIXMILL_PHOTOS_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../var/photos"),
        PathBuf::from,
    )
}

/// The bytes of one photograph, e.g. `photo("FreshFlower.jpg")`.
pub fn photo(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}. Fetch the test photographs with deploy/fixtures/fetch-photos.sh (make test does this)",
            path.display()
        )
    })
}

/// Decodes any supported image.
pub fn decode(bytes: &[u8]) -> DynamicImage {
    image::load_from_memory(bytes).unwrap_or_else(|e| panic!("result does not decode: {e}"))
}

/// Encodes as PNG (lossless, so pixel checks are exact).
pub fn png(image: &DynamicImage) -> Vec<u8> {
    let mut out = Cursor::new(Vec::new());
    image
        .write_to(&mut out, ImageFormat::Png)
        .unwrap_or_else(|e| panic!("encoding PNG: {e}"));
    out.into_inner()
}

/// Variance of the 4-neighbour Laplacian: a standard sharpness measure that any blur
/// lowers.
pub fn laplacian_variance(image: &GrayImage) -> f64 {
    let (w, h) = image.dimensions();
    let px = |x: u32, y: u32| f64::from(image.get_pixel(x, y).0[0]);
    let mut values = Vec::with_capacity((w as usize) * (h as usize));
    for y in 1..h.saturating_sub(1) {
        for x in 1..w.saturating_sub(1) {
            values.push(px(x - 1, y) + px(x + 1, y) + px(x, y - 1) + px(x, y + 1) - 4.0 * px(x, y));
        }
    }
    let n = values.len().max(1) as f64;
    let mean = values.iter().sum::<f64>() / n;
    values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n
}

/// Peak signal-to-noise ratio of two same-sized images over RGB, in dB (infinite when
/// they are equal).
pub fn psnr(a: &DynamicImage, b: &DynamicImage) -> f64 {
    let (a, b) = (a.to_rgb8(), b.to_rgb8());
    assert_eq!(a.dimensions(), b.dimensions(), "sizes differ");
    let squared: f64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum();
    let mse = squared / a.as_raw().len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0f64 * 255.0 / mse).log10()
    }
}

//! Gaussian blur and Canny edges.

use image::DynamicImage;
use imageproc::{edges::canny, filter::gaussian_blur_f32};

/// A true (f32, separable) Gaussian blur on every channel.
pub fn blur(image: &DynamicImage, sigma: f32) -> DynamicImage {
    match image {
        DynamicImage::ImageLuma8(img) => DynamicImage::ImageLuma8(gaussian_blur_f32(img, sigma)),
        DynamicImage::ImageLumaA8(img) => DynamicImage::ImageLumaA8(gaussian_blur_f32(img, sigma)),
        DynamicImage::ImageRgba8(img) => DynamicImage::ImageRgba8(gaussian_blur_f32(img, sigma)),
        other => DynamicImage::ImageRgb8(gaussian_blur_f32(&other.to_rgb8(), sigma)),
    }
}

/// Canny on the luminance; the result has one channel holding 0 or 255.
pub fn edges(image: &DynamicImage, low: f32, high: f32) -> DynamicImage {
    DynamicImage::ImageLuma8(canny(&image.to_luma8(), low, high))
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GrayImage, Luma};

    fn step_edge() -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(64, 64, |x, _| {
            Luma([if x < 32 { 0 } else { 255 }])
        }))
    }

    #[test]
    fn edges_are_binary_and_on_the_step() {
        let out = edges(&step_edge(), 100.0, 200.0).to_luma8();
        assert!(out.pixels().all(|p| p.0[0] == 0 || p.0[0] == 255));
        let on_edge = (0..64)
            .filter(|&y| (30..34).any(|x| out.get_pixel(x, y).0[0] == 255))
            .count();
        assert!(on_edge >= 60, "edge found on {on_edge} of 64 rows");
        assert_eq!(out.get_pixel(5, 5).0[0], 0);
    }

    #[test]
    fn blur_softens_the_step_but_keeps_the_mean() {
        let out = blur(&step_edge(), 3.0).to_luma8();
        let at_edge = out.get_pixel(32, 32).0[0];
        assert!((90..170).contains(&at_edge), "{at_edge}");
        let mean: f64 = out.pixels().map(|p| f64::from(p.0[0])).sum::<f64>() / 4096.0;
        assert!((mean - 127.5).abs() < 3.0, "{mean}");
    }
}

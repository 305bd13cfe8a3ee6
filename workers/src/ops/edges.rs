//! Canny edges of an image's luminance.

use std::borrow::Cow;

use image::{DynamicImage, GrayImage};

use super::canny::canny;

/// Canny on the luminance; the result has one channel holding 0 or 255.
pub fn edges(image: &DynamicImage, low: f32, high: f32) -> DynamicImage {
    let luma = luma601(image);
    let edges = canny(&luma, low, high);
    if let Cow::Owned(luma) = luma {
        crate::buffers::give(luma.into_raw());
    }
    DynamicImage::ImageLuma8(edges)
}

/// Luma with the BT.601 weights, the Y' that JPEG stores, so a JPEG decoded straight
/// to its luma plane and any other image give the same edges.
fn luma601(image: &DynamicImage) -> Cow<'_, GrayImage> {
    match image {
        DynamicImage::ImageLuma8(img) => Cow::Borrowed(img),
        DynamicImage::ImageRgb8(img) => {
            Cow::Owned(weigh(img.as_raw(), 3, img.width(), img.height()))
        }
        DynamicImage::ImageRgba8(img) => {
            Cow::Owned(weigh(img.as_raw(), 4, img.width(), img.height()))
        }
        other if !other.color().has_color() => Cow::Owned(other.to_luma8()),
        other => {
            let rgb = other.to_rgb8();
            Cow::Owned(weigh(rgb.as_raw(), 3, rgb.width(), rgb.height()))
        }
    }
}

fn weigh(raw: &[u8], step: usize, w: u32, h: u32) -> GrayImage {
    let mut luma = crate::buffers::zeroed(raw.len() / step);
    for (y, p) in luma.iter_mut().zip(raw.chunks_exact(step)) {
        let v = 19_595 * u32::from(p[0]) + 38_470 * u32::from(p[1]) + 7_471 * u32::from(p[2]);
        *y = ((v + 32_768) >> 16) as u8;
    }
    GrayImage::from_raw(w, h, luma).expect("one luma byte per pixel")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ops::test_images::step_edge;

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
    fn swapped_channels_give_the_same_luma_weights_as_jpeg() {
        let rgb =
            DynamicImage::ImageRgb8(image::RgbImage::from_pixel(1, 1, image::Rgb([255, 0, 0])));
        assert_eq!(luma601(&rgb).get_pixel(0, 0).0[0], 76);
    }
}

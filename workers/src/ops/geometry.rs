//! Resize, rotate and flip.

use image::{DynamicImage, imageops::FilterType};
use pixmill_shared::{
    Fit, FlipDirection,
    limits::{cover_scale, resize_target},
};

/// Lanczos3 resize. `cover` scales to cover the box and crops the centre.
pub fn resize(
    image: &DynamicImage,
    width: Option<u32>,
    height: Option<u32>,
    fit: Fit,
) -> DynamicImage {
    let (w, h) = (image.width(), image.height());
    let Some((tw, th)) = resize_target(w, h, width, height, fit) else {
        return image.clone();
    };
    let cover = fit == Fit::Cover && width.is_some() && height.is_some();
    if !cover {
        return image.resize_exact(tw, th, FilterType::Lanczos3);
    }
    let (sw, sh) = cover_scale(w, h, tw, th);
    let scaled = image.resize_exact(sw, sh, FilterType::Lanczos3);
    scaled.crop_imm((sw - tw) / 2, (sh - th) / 2, tw, th)
}

/// Clockwise rotation by a validated multiple of 90 degrees.
pub fn rotate(image: &DynamicImage, degrees: u16) -> DynamicImage {
    match degrees {
        90 => image.rotate90(),
        180 => image.rotate180(),
        270 => image.rotate270(),
        _ => image.clone(),
    }
}

/// In-place mirror.
pub fn flip(mut image: DynamicImage, direction: FlipDirection) -> DynamicImage {
    match direction {
        FlipDirection::Horizontal => {
            image.apply_orientation(image::metadata::Orientation::FlipHorizontal)
        }
        FlipDirection::Vertical => {
            image.apply_orientation(image::metadata::Orientation::FlipVertical)
        }
    }
    image
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GenericImageView, Rgb, RgbImage};

    fn corners() -> DynamicImage {
        let mut img = RgbImage::new(4, 3);
        img.put_pixel(0, 0, Rgb([255, 0, 0]));
        img.put_pixel(3, 0, Rgb([0, 255, 0]));
        img.put_pixel(0, 2, Rgb([0, 0, 255]));
        img.put_pixel(3, 2, Rgb([255, 255, 255]));
        DynamicImage::ImageRgb8(img)
    }

    #[test]
    fn rotate_90_moves_bottom_left_to_top_left() {
        let out = rotate(&corners(), 90);
        assert_eq!(out.dimensions(), (3, 4));
        assert_eq!(out.get_pixel(0, 0).0, [0, 0, 255, 255]);
        assert_eq!(out.get_pixel(2, 0).0, [255, 0, 0, 255]);
    }

    #[test]
    fn flips_mirror_the_corners() {
        let h = flip(corners(), FlipDirection::Horizontal);
        assert_eq!(h.get_pixel(0, 0).0, [0, 255, 0, 255]);
        let v = flip(corners(), FlipDirection::Vertical);
        assert_eq!(v.get_pixel(0, 0).0, [0, 0, 255, 255]);
    }

    #[test]
    fn resize_fits_give_the_planned_size() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(160, 100));
        assert_eq!(
            resize(&img, Some(64), Some(64), Fit::Cover).dimensions(),
            (64, 64)
        );
        assert_eq!(
            resize(&img, Some(64), Some(64), Fit::Contain).dimensions(),
            (64, 40)
        );
        assert_eq!(
            resize(&img, Some(64), Some(64), Fit::Fill).dimensions(),
            (64, 64)
        );
        assert_eq!(
            resize(&img, None, Some(50), Fit::Cover).dimensions(),
            (80, 50)
        );
    }
}

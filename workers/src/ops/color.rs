//! Channel swap and grayscale.

use image::DynamicImage;
use pixmill_shared::ChannelOrder;

/// Reorders the colour channels in place (alpha stays last). A gray image has nothing to
/// swap and is returned as is.
pub fn swap(image: DynamicImage, order: ChannelOrder) -> DynamicImage {
    // One fixed permutation per order, so each loop body is a few constant moves
    // instead of a lookup per byte.
    let permute = |px: &mut [u8]| match order {
        ChannelOrder::Rgb => {}
        ChannelOrder::Rbg => px.swap(1, 2),
        ChannelOrder::Grb => px.swap(0, 1),
        ChannelOrder::Bgr => px.swap(0, 2),
        ChannelOrder::Gbr => px[..3].rotate_left(1),
        ChannelOrder::Brg => px[..3].rotate_right(1),
    };
    match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageLumaA8(_) => image,
        DynamicImage::ImageRgba8(mut img) => {
            img.chunks_exact_mut(4).for_each(permute);
            DynamicImage::ImageRgba8(img)
        }
        DynamicImage::ImageRgb8(mut img) => {
            img.chunks_exact_mut(3).for_each(permute);
            DynamicImage::ImageRgb8(img)
        }
        other if other.color().has_alpha() => {
            swap(DynamicImage::ImageRgba8(other.to_rgba8()), order)
        }
        other => swap(DynamicImage::ImageRgb8(other.to_rgb8()), order),
    }
}

/// Luma with the BT.601 weights that JPEG's YCbCr uses (and Pillow's `convert("L")`),
/// keeping alpha. A JPEG's own luma plane is therefore exactly what this computes, so
/// the lossless path (which keeps that plane) and this one agree.
pub fn grayscale(image: &DynamicImage) -> DynamicImage {
    // libjpeg's fixed-point weights: 0.299, 0.587, 0.114 in 16 bits, rounded.
    fn luma(p: &[u8]) -> u8 {
        let y = 19_595 * u32::from(p[0]) + 38_470 * u32::from(p[1]) + 7_471 * u32::from(p[2]);
        ((y + 32_768) >> 16) as u8
    }
    match image {
        DynamicImage::ImageLuma8(_) | DynamicImage::ImageLumaA8(_) => image.clone(),
        _ if image.color().has_alpha() => {
            let rgba = image.to_rgba8();
            let (w, h) = rgba.dimensions();
            let mut out = Vec::with_capacity(rgba.as_raw().len() / 2);
            for p in rgba.as_raw().chunks_exact(4) {
                out.extend_from_slice(&[luma(p), p[3]]);
            }
            image::GrayAlphaImage::from_raw(w, h, out)
                .map_or_else(|| image.grayscale(), DynamicImage::ImageLumaA8)
        }
        _ => {
            let rgb = match image {
                DynamicImage::ImageRgb8(img) => std::borrow::Cow::Borrowed(img),
                other => std::borrow::Cow::Owned(other.to_rgb8()),
            };
            let (w, h) = rgb.dimensions();
            let out: Vec<u8> = rgb.as_raw().chunks_exact(3).map(luma).collect();
            image::GrayImage::from_raw(w, h, out)
                .map_or_else(|| image.grayscale(), DynamicImage::ImageLuma8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::{GenericImageView, Rgb, RgbImage};

    #[test]
    fn bgr_turns_pure_red_into_pure_blue() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(2, 2, Rgb([255, 0, 0])));
        let out = swap(img, ChannelOrder::Bgr);
        assert_eq!(out.get_pixel(1, 1).0, [0, 0, 255, 255]);
    }

    #[test]
    fn every_order_is_a_permutation() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([10, 20, 30])));
        for (order, want) in [
            (ChannelOrder::Rgb, [10, 20, 30]),
            (ChannelOrder::Rbg, [10, 30, 20]),
            (ChannelOrder::Grb, [20, 10, 30]),
            (ChannelOrder::Gbr, [20, 30, 10]),
            (ChannelOrder::Brg, [30, 10, 20]),
            (ChannelOrder::Bgr, [30, 20, 10]),
        ] {
            let out = swap(img.clone(), order).to_rgb8();
            assert_eq!(out.get_pixel(0, 0).0, want, "{order:?}");
        }
    }

    #[test]
    fn grayscale_has_one_channel() {
        let img = DynamicImage::ImageRgb8(RgbImage::from_pixel(1, 1, Rgb([255, 255, 255])));
        let out = grayscale(&img);
        assert_eq!(out.color(), image::ColorType::L8);
        assert_eq!(out.get_pixel(0, 0).0[0], 255);
        // BT.601: pure green is 150, pure blue 29.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(2, 1, |x, _| {
            if x == 0 {
                Rgb([0, 255, 0])
            } else {
                Rgb([0, 0, 255])
            }
        }));
        let out = grayscale(&img);
        assert_eq!(
            (out.get_pixel(0, 0).0[0], out.get_pixel(1, 0).0[0]),
            (150, 29)
        );
    }
}

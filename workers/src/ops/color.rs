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

/// Luminance (Rec. 709 weights, as `image` computes it), keeping alpha.
pub fn grayscale(image: &DynamicImage) -> DynamicImage {
    if image.color().has_alpha() {
        DynamicImage::ImageLumaA8(image.to_luma_alpha8())
    } else {
        DynamicImage::ImageLuma8(image.to_luma8())
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
    }
}

//! Resize, rotate and flip.

use std::cell::RefCell;

use fast_image_resize::{FilterType, ResizeAlg, ResizeOptions, Resizer};
use image::DynamicImage;
use pixmill_shared::{
    Fit, FlipDirection,
    limits::{cover_scale, resize_target},
};

thread_local! {
    /// The resizer keeps its scratch buffers between jobs on the same thread.
    static RESIZER: RefCell<Resizer> = RefCell::new(Resizer::new());
}

/// What a resize step reads and writes, worked out from the size the step's
/// parameters refer to.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ResizePlan {
    /// The output size.
    pub target: (u32, u32),
    /// The source rectangle (left, top, width, height) in the referred-to size: the
    /// whole image, or for `cover` the centre that is kept.
    pub source: (f64, f64, f64, f64),
    /// The least source size that still has at least one pixel per output pixel, so a
    /// decoder scaling down on load knows how far it may go.
    pub min_source: (u32, u32),
}

/// Plans a resize of a `w`×`h` image; `None` when no side is given.
pub fn plan_resize(
    w: u32,
    h: u32,
    width: Option<u32>,
    height: Option<u32>,
    fit: Fit,
) -> Option<ResizePlan> {
    let (tw, th) = resize_target(w, h, width, height, fit)?;
    let whole = (0.0, 0.0, f64::from(w), f64::from(h));
    if fit != Fit::Cover || width.is_none() || height.is_none() {
        return Some(ResizePlan {
            target: (tw, th),
            source: whole,
            min_source: (tw, th),
        });
    }
    // Scale to cover the box, then keep its centre: the kept rectangle, mapped back to
    // the source, is the box divided by the scale.
    let (sw, sh) = cover_scale(w, h, tw, th);
    let (fx, fy) = (f64::from(w) / f64::from(sw), f64::from(h) / f64::from(sh));
    let left = f64::from((sw - tw) / 2) * fx;
    let top = f64::from((sh - th) / 2) * fy;
    Some(ResizePlan {
        target: (tw, th),
        source: (left, top, f64::from(tw) * fx, f64::from(th) * fy),
        min_source: (sw, sh),
    })
}

/// Lanczos3 resize (SIMD, through `fast_image_resize`). `scale` maps the planned
/// coordinates onto `image`: 1 normally, 1/2, 1/4 or 1/8 when the decoder already
/// shrank the image.
pub fn resize(image: &DynamicImage, plan: &ResizePlan, scale: f64) -> DynamicImage {
    let (left, top, w, h) = plan.source;
    let (tw, th) = plan.target;
    let source = match image {
        DynamicImage::ImageLuma8(_)
        | DynamicImage::ImageLumaA8(_)
        | DynamicImage::ImageRgb8(_)
        | DynamicImage::ImageRgba8(_)
        | DynamicImage::ImageLuma16(_)
        | DynamicImage::ImageLumaA16(_)
        | DynamicImage::ImageRgb16(_)
        | DynamicImage::ImageRgba16(_) => std::borrow::Cow::Borrowed(image),
        other if other.color().has_alpha() => {
            std::borrow::Cow::Owned(DynamicImage::ImageRgba8(other.to_rgba8()))
        }
        other => std::borrow::Cow::Owned(DynamicImage::ImageRgb8(other.to_rgb8())),
    };
    // Clamp the rectangle to the decoded pixels (DCT scaling rounds sizes up).
    let (iw, ih) = (f64::from(source.width()), f64::from(source.height()));
    let (left, top) = ((left * scale).min(iw - 1.0), (top * scale).min(ih - 1.0));
    let (w, h) = ((w * scale).min(iw - left), (h * scale).min(ih - top));
    let mut out = crate::buffers::image(tw, th, source.color());
    let options = ResizeOptions::new()
        .resize_alg(ResizeAlg::Convolution(FilterType::Lanczos3))
        .crop(left, top, w, h);
    let resized = RESIZER.with(|r| r.borrow_mut().resize(source.as_ref(), &mut out, &options));
    match resized {
        Ok(()) => out,
        // Every pixel type above is supported and the sizes are non-zero, so this does
        // not happen; a plain resize keeps the job correct if it ever does.
        Err(_) => image.resize_exact(tw, th, image::imageops::FilterType::Lanczos3),
    }
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

    fn resized(img: &DynamicImage, w: Option<u32>, h: Option<u32>, fit: Fit) -> DynamicImage {
        let plan = plan_resize(img.width(), img.height(), w, h, fit).expect("a side");
        resize(img, &plan, 1.0)
    }

    #[test]
    fn resize_fits_give_the_planned_size() {
        let img = DynamicImage::ImageRgb8(RgbImage::new(160, 100));
        assert_eq!(
            resized(&img, Some(64), Some(64), Fit::Cover).dimensions(),
            (64, 64)
        );
        assert_eq!(
            resized(&img, Some(64), Some(64), Fit::Contain).dimensions(),
            (64, 40)
        );
        assert_eq!(
            resized(&img, Some(64), Some(64), Fit::Fill).dimensions(),
            (64, 64)
        );
        assert_eq!(
            resized(&img, None, Some(50), Fit::Cover).dimensions(),
            (80, 50)
        );
    }

    #[test]
    fn cover_keeps_the_centre() {
        // Left third red, middle green, right third blue: a square cover keeps green.
        let img = DynamicImage::ImageRgb8(RgbImage::from_fn(300, 100, |x, _| match x / 100 {
            0 => Rgb([255, 0, 0]),
            1 => Rgb([0, 255, 0]),
            _ => Rgb([0, 0, 255]),
        }));
        let out = resized(&img, Some(50), Some(50), Fit::Cover).to_rgb8();
        for x in [2, 25, 47] {
            let px = out.get_pixel(x, 25).0;
            assert!(px[1] > 240 && px[0] < 15 && px[2] < 15, "x={x}: {px:?}");
        }
    }

    #[test]
    fn a_shrunk_source_maps_onto_the_same_rectangle() {
        let full = DynamicImage::ImageRgb8(RgbImage::from_fn(400, 200, |x, y| {
            Rgb([(x * 255 / 400) as u8, (y * 255 / 200) as u8, 60])
        }));
        let half = full.resize_exact(200, 100, image::imageops::FilterType::Triangle);
        let plan = plan_resize(400, 200, Some(100), Some(100), Fit::Cover).expect("plan");
        assert_eq!(plan.min_source, (200, 100));
        let a = resize(&full, &plan, 1.0).to_rgb8();
        let b = resize(&half, &plan, 0.5).to_rgb8();
        for (x, y) in [(0, 0), (50, 50), (99, 99)] {
            let (pa, pb) = (a.get_pixel(x, y).0, b.get_pixel(x, y).0);
            assert!(
                pa[0].abs_diff(pb[0]) <= 4 && pa[1].abs_diff(pb[1]) <= 4,
                "{pa:?} {pb:?}"
            );
        }
    }
}

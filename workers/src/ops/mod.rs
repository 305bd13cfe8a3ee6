//! The image steps, one file per family. [`apply`] is the only entry point and matches
//! every [`Step`] exhaustively, so a new op does not compile until it is implemented here.

mod canny;
mod color;
mod edges;
mod filters;
mod geometry;

pub use canny::canny;
pub use filters::blur;
pub use geometry::{ResizePlan, plan_resize, resize};

use image::DynamicImage;
use pixmill_shared::Step;

/// Applies one step. The step was checked by `pixmill_shared::plan` against this image's
/// size, so the geometry here is known to be valid. A step that makes a new image hands
/// the old one's buffer back to the slot ([`crate::buffers`]).
pub fn apply(image: DynamicImage, step: &Step) -> DynamicImage {
    let made = match *step {
        Step::Resize { width, height, fit } => {
            match plan_resize(image.width(), image.height(), width, height, fit) {
                Some(plan) => resize(&image, &plan, 1.0),
                None => return image,
            }
        }
        Step::Crop {
            x,
            y,
            width,
            height,
        } => image.crop_imm(x, y, width, height),
        Step::Blur { sigma } => filters::blur(&image, sigma),
        Step::Edges { low, high } => edges::edges(&image, low, high),
        // These two work in place.
        Step::Swap { order } => return color::swap(image, order),
        Step::Flip { direction } => return geometry::flip(image, direction),
        Step::Grayscale {} => color::grayscale(&image),
        Step::Rotate { degrees } => geometry::rotate(&image, degrees),
    };
    crate::buffers::recycle(image);
    made
}

/// Images the ops' unit tests share.
#[cfg(test)]
mod test_images {
    use image::{DynamicImage, GrayImage, Luma};

    /// 64×64 gray, black on the left half and white on the right: one vertical edge.
    pub fn step_edge() -> DynamicImage {
        DynamicImage::ImageLuma8(GrayImage::from_fn(64, 64, |x, _| {
            Luma([if x < 32 { 0 } else { 255 }])
        }))
    }
}

//! Lossless JPEG transforms: rotate, flip, grayscale and crop done on the DCT
//! coefficients with libjpeg-turbo's transformer (what `jpegtran` does). Nothing is
//! decoded or re-encoded, so there is no generation loss, and it costs a fraction of a
//! decode + encode.
//!
//! A job qualifies when its input is a JPEG the fast decoder reads, its output is JPEG,
//! and its steps are only `rotate`, `flip`, `grayscale` and at most one `crop`. The
//! rotations and flips (and the EXIF orientation, which the normal path applies first)
//! compose into one of the eight transforms of the square. The transform must be
//! *perfect*: an edge that moves to the top or left must be a whole number of MCUs
//! (the 8 or 16 px blocks of the file's chroma subsampling), and a crop's origin, in
//! output coordinates, must sit on an MCU boundary. Anything else takes the normal
//! path, which gives the same geometry with a re-encode.
//!
//! The output keeps the source's quantization tables and subsampling: `quality` does
//! not apply, because nothing is re-encoded. Like the normal path, it carries no
//! metadata (`-copy none`), so the EXIF orientation is baked into the coefficients.

use std::cell::RefCell;

use image::metadata::Orientation;
use pixmill_shared::{FlipDirection, Step};
use turbojpeg::{Transform, TransformCrop, TransformOp, Transformer};

use super::jpeg::{with_decompressor, with_handle};

thread_local! {
    static TRANSFORMER: RefCell<Option<Transformer>> = const { RefCell::new(None) };
}

/// One of the eight symmetries of the square, as the matrix that maps a point's
/// offset from the centre of the source to its offset from the centre of the output
/// (x to the right, y down).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Dihedral([[i8; 2]; 2]);

impl Dihedral {
    const IDENTITY: Dihedral = Dihedral([[1, 0], [0, 1]]);
    const HFLIP: Dihedral = Dihedral([[-1, 0], [0, 1]]);
    const VFLIP: Dihedral = Dihedral([[1, 0], [0, -1]]);
    const TRANSPOSE: Dihedral = Dihedral([[0, 1], [1, 0]]);
    const TRANSVERSE: Dihedral = Dihedral([[0, -1], [-1, 0]]);
    /// Clockwise on screen: the right edge goes to the bottom.
    const ROT90: Dihedral = Dihedral([[0, -1], [1, 0]]);
    const ROT180: Dihedral = Dihedral([[-1, 0], [0, -1]]);
    const ROT270: Dihedral = Dihedral([[0, 1], [-1, 0]]);

    /// `self` first, then `next`.
    fn then(self, next: Dihedral) -> Dihedral {
        let (a, b) = (next.0, self.0);
        let mut m = [[0i8; 2]; 2];
        for (r, row) in m.iter_mut().enumerate() {
            for (c, cell) in row.iter_mut().enumerate() {
                *cell = a[r][0] * b[0][c] + a[r][1] * b[1][c];
            }
        }
        Dihedral(m)
    }

    /// True when width and height trade places.
    fn swaps_axes(self) -> bool {
        self.0[0][0] == 0
    }

    /// The output size of a `w`×`h` source.
    fn size(self, w: u32, h: u32) -> (u32, u32) {
        if self.swaps_axes() { (h, w) } else { (w, h) }
    }

    /// Maps the rectangle `x, y, w, h` of a `fw`×`fh` frame into the output frame.
    fn rect(self, (fw, fh): (u32, u32), (x, y, w, h): (u32, u32, u32, u32)) -> [u32; 4] {
        let (ow, oh) = self.size(fw, fh);
        // Doubled coordinates relative to the centre keep every value whole.
        let map = |px: u32, py: u32| {
            let (dx, dy) = (
                2 * i64::from(px) - i64::from(fw),
                2 * i64::from(py) - i64::from(fh),
            );
            let m = self.0;
            let qx = i64::from(m[0][0]) * dx + i64::from(m[0][1]) * dy + i64::from(ow);
            let qy = i64::from(m[1][0]) * dx + i64::from(m[1][1]) * dy + i64::from(oh);
            (qx / 2, qy / 2)
        };
        let (ax, ay) = map(x, y);
        let (bx, by) = map(x + w, y + h);
        let clamp = |v: i64| u32::try_from(v).unwrap_or(0);
        [
            clamp(ax.min(bx)),
            clamp(ay.min(by)),
            clamp((ax - bx).abs()),
            clamp((ay - by).abs()),
        ]
    }

    fn op(self) -> TransformOp {
        match self {
            Dihedral::HFLIP => TransformOp::Hflip,
            Dihedral::VFLIP => TransformOp::Vflip,
            Dihedral::TRANSPOSE => TransformOp::Transpose,
            Dihedral::TRANSVERSE => TransformOp::Transverse,
            Dihedral::ROT90 => TransformOp::Rot90,
            Dihedral::ROT180 => TransformOp::Rot180,
            Dihedral::ROT270 => TransformOp::Rot270,
            _ => TransformOp::None,
        }
    }

    fn from_orientation(o: Orientation) -> Dihedral {
        match o {
            Orientation::NoTransforms => Dihedral::IDENTITY,
            Orientation::Rotate90 => Dihedral::ROT90,
            Orientation::Rotate180 => Dihedral::ROT180,
            Orientation::Rotate270 => Dihedral::ROT270,
            Orientation::FlipHorizontal => Dihedral::HFLIP,
            Orientation::FlipVertical => Dihedral::VFLIP,
            Orientation::Rotate90FlipH => Dihedral::ROT90.then(Dihedral::HFLIP),
            Orientation::Rotate270FlipH => Dihedral::ROT270.then(Dihedral::HFLIP),
        }
    }
}

/// The job's crop: the transform of the steps before it, the frame it was given in
/// (the full image under that transform), and its rect in that frame.
#[derive(Debug, Clone, Copy)]
struct Crop {
    at: Dihedral,
    frame: (u32, u32),
    rect: (u32, u32, u32, u32),
}

/// A whole job as one transformer call.
#[derive(Debug, Clone)]
pub struct Plan {
    transform: Transform,
    /// The output's size, which the transformer's result is checked against.
    pub size: (u32, u32),
    /// The input's size after its EXIF orientation, as the pipeline sees it.
    pub upright: (u32, u32),
}

/// The lossless plan for `steps` on `bytes`, or `None` when they need the normal path.
pub fn plan(bytes: &[u8], steps: &[Step]) -> Option<Plan> {
    if steps.is_empty() {
        return None;
    }
    let (width, height, mut mcu) = header(bytes)?;
    let oriented = Dihedral::from_orientation(super::exif_orientation(bytes));
    let upright = oriented.size(width, height);
    let Composed { d, gray, crop } = compose(steps, oriented, upright)?;
    if gray {
        // Only the luma plane is kept, so the blocks are 8×8 whatever the chroma was.
        mcu = (8, 8);
    }
    if !perfect(d, (width, height), mcu) {
        return None;
    }
    let region = match crop {
        None => None,
        Some(crop) => Some(crop_region(crop, d, mcu)?),
    };
    let size = match region {
        Some((_, _, w, h)) => (w, h),
        None => d.size(width, height),
    };
    let mut transform = Transform::op(d.op());
    transform.perfect = true;
    transform.gray = gray;
    transform.copy_none = true;
    transform.crop = region.map(|(x, y, w, h)| TransformCrop {
        x: x as usize,
        y: y as usize,
        width: Some(w as usize),
        height: Some(h as usize),
    });
    Some(Plan {
        transform,
        size,
        upright,
    })
}

/// What a job's steps amount to on the coefficients: one transform of the square,
/// whether only the luma plane is kept, and the crop, if any.
struct Composed {
    d: Dihedral,
    gray: bool,
    crop: Option<Crop>,
}

/// Composes `steps` after the transform `d`, starting from a `frame`-sized image.
/// `None` when a step has no lossless form: any but rotate, flip, grayscale and one
/// crop, or a crop that does not fit (the normal path reports it).
fn compose(steps: &[Step], mut d: Dihedral, mut frame: (u32, u32)) -> Option<Composed> {
    let mut gray = false;
    let mut crop: Option<Crop> = None;
    for step in steps {
        let next = match *step {
            Step::Rotate { degrees: 90 } => Dihedral::ROT90,
            Step::Rotate { degrees: 180 } => Dihedral::ROT180,
            Step::Rotate { degrees: 270 } => Dihedral::ROT270,
            Step::Flip {
                direction: FlipDirection::Horizontal,
            } => Dihedral::HFLIP,
            Step::Flip {
                direction: FlipDirection::Vertical,
            } => Dihedral::VFLIP,
            Step::Grayscale {} => {
                gray = true;
                continue;
            }
            Step::Crop {
                x,
                y,
                width,
                height,
            } if crop.is_none() => {
                let fits = x.checked_add(width).is_some_and(|r| r <= frame.0)
                    && y.checked_add(height).is_some_and(|b| b <= frame.1)
                    && width > 0
                    && height > 0;
                if !fits {
                    return None;
                }
                crop = Some(Crop {
                    at: d,
                    frame,
                    rect: (x, y, width, height),
                });
                frame = (width, height);
                continue;
            }
            _ => return None,
        };
        d = d.then(next);
        frame = next.size(frame.0, frame.1);
    }
    Some(Composed { d, gray, crop })
}

/// The transformer crops in output coordinates: the crop carried through the steps
/// that came after it (`d` is the whole job's transform). Its rect lives in the frame it
/// was given in, the full image under `at`, and its origin must land on a block
/// boundary of the output, else `None`.
fn crop_region(
    Crop { at, frame, rect }: Crop,
    d: Dihedral,
    mcu: (u32, u32),
) -> Option<(u32, u32, u32, u32)> {
    let [x, y, w, h] = inverse(at).then(d).rect(frame, rect);
    let (mw, mh) = d.size(mcu.0, mcu.1);
    if x % mw != 0 || y % mh != 0 {
        return None;
    }
    Some((x, y, w, h))
}

fn inverse(d: Dihedral) -> Dihedral {
    // Orthogonal matrices: the inverse is the transpose.
    let m = d.0;
    Dihedral([[m[0][0], m[1][0]], [m[0][1], m[1][1]]])
}

/// Whether `d` on a `w`×`h` image with `mcu`-sized blocks moves no partial block to
/// the top or left edge.
fn perfect(d: Dihedral, (w, h): (u32, u32), (mw, mh): (u32, u32)) -> bool {
    let m = d.0;
    // A source axis that ends up reversed must be a whole number of blocks.
    let x_reversed = m[0][0] == -1 || m[1][0] == -1;
    let y_reversed = m[0][1] == -1 || m[1][1] == -1;
    (!x_reversed || w % mw == 0) && (!y_reversed || h % mh == 0)
}

/// Width, height and MCU size of a JPEG the transformer handles: 8-bit YCbCr or gray,
/// not lossless or CMYK.
fn header(bytes: &[u8]) -> Option<(u32, u32, (u32, u32))> {
    let h = with_decompressor(|d| d.read_header(bytes).map_err(|e| e.to_string())).ok()?;
    // Arithmetic coding would be kept, and browsers cannot decode it; the normal
    // path writes Huffman.
    let supported = !h.is_lossless
        && !h.is_arithmetic
        && matches!(
            h.colorspace,
            turbojpeg::Colorspace::YCbCr | turbojpeg::Colorspace::Gray
        );
    if !supported {
        return None;
    }
    let mcu = (
        u32::try_from(h.subsamp.mcu_width()).ok()?,
        u32::try_from(h.subsamp.mcu_height()).ok()?,
    );
    Some((
        u32::try_from(h.width).ok()?,
        u32::try_from(h.height).ok()?,
        mcu,
    ))
}

/// Runs `plan` on `bytes`. `None` (the normal path takes over) when libjpeg-turbo
/// refuses it or its output is not the planned size.
pub fn run(plan: &Plan, bytes: &[u8]) -> Option<Vec<u8>> {
    let out = with_handle(&TRANSFORMER, Transformer::new, |t| {
        t.transform_to_vec(&plan.transform, bytes)
            .map_err(|e| e.to_string())
    })
    .ok()?;
    let h = with_decompressor(|d| d.read_header(&out).map_err(|e| e.to_string())).ok()?;
    let size = (u32::try_from(h.width).ok()?, u32::try_from(h.height).ok()?);
    (size == plan.size).then_some(out)
}

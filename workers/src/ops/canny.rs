//! Canny edge detection on one 8-bit channel.
//!
//! The classic four stages, as imageproc and OpenCV run them: a Gaussian blur
//! (σ = 1.4), Sobel gradients, non-maximum suppression along the gradient direction,
//! and hysteresis between the two thresholds (8-connected). Written for speed:
//! integer gradients in row-wise loops the compiler vectorises, squared magnitudes
//! instead of square roots, the direction from two integer comparisons instead of
//! `atan2`, and suppression only where the gradient could be an edge at all.

use image::GrayImage;

use super::filters::gaussian;

/// The smoothing before the gradients, as in imageproc's `canny`.
const SIGMA: f32 = 1.4;
/// tan(22.5°) in 1/32768ths: the border between "horizontal" and "diagonal" gradients.
const TAN_22_5: i32 = 13_573;

/// Pixel classes after suppression.
const NONE: u8 = 0;
const WEAK: u8 = 1;
const STRONG: u8 = 2;

/// Edge map of `gray`: 255 on edges, 0 elsewhere. Thresholds apply to the Sobel
/// gradient magnitude of the blurred image (0 to about 1443).
pub fn canny(gray: &GrayImage, low: f32, high: f32) -> GrayImage {
    let (w, h) = gray.dimensions();
    let (wu, hu) = (w as usize, h as usize);
    if w < 3 || h < 3 {
        return GrayImage::new(w, h);
    }
    let blurred = gaussian(gray, SIGMA);
    let square = |t: f32| -> i32 {
        let t = f64::from(t.max(0.0));
        // Smallest squared magnitude that reaches t.
        (t * t).ceil().min(f64::from(i32::MAX)) as i32
    };
    let classes = suppress(blurred.as_raw(), wu, hu, square(low), square(high));
    crate::buffers::give(blurred.into_raw());
    GrayImage::from_raw(w, h, hysteresis(classes, wu, hu))
        .expect("the edge map has one byte per pixel")
}

/// Gradient directions, folded to four: the neighbours suppression compares with.
const HORIZONTAL: u8 = 0;
const DIAGONAL: u8 = 1;
const VERTICAL: u8 = 2;
const ANTI_DIAGONAL: u8 = 3;

/// Sobel gradient of row `y` (border repeated): squared magnitude and direction.
fn gradient_row(px: &[u8], w: usize, h: usize, y: usize, mag: &mut [i32], dir: &mut [u8]) {
    let row = |y: usize| &px[y * w..][..w];
    let (above, here, below) = (row(y.saturating_sub(1)), row(y), row((y + 1).min(h - 1)));
    let put = |x: usize, dx: i32, dy: i32, mag: &mut [i32], dir: &mut [u8]| {
        mag[x] = dx * dx + dy * dy;
        // atan2 folded to [0°, 180°) and binned by 45°, from two comparisons against
        // tan(22.5°) and the signs.
        let (ax, ay) = (dx.abs(), dy.abs());
        let diagonal = if (dx ^ dy) >= 0 {
            DIAGONAL
        } else {
            ANTI_DIAGONAL
        };
        let steep = if (ax << 15) < TAN_22_5 * ay {
            VERTICAL
        } else {
            diagonal
        };
        dir[x] = if (ay << 15) < TAN_22_5 * ax {
            HORIZONTAL
        } else {
            steep
        };
    };
    // Inner columns: every slice has length w − 2, so the loop has no bounds checks and
    // vectorises. |dx|, |dy| ≤ 4 · 255 fit in 16 bits: twice the lanes of i32.
    let n = w - 2;
    let (a0, a1, a2) = (&above[..n], &above[1..=n], &above[2..]);
    let (b0, b2) = (&here[..n], &here[2..]);
    let (c0, c1, c2) = (&below[..n], &below[1..=n], &below[2..]);
    let (m, d) = (&mut mag[1..=n], &mut dir[1..=n]);
    for x in 0..n {
        let v = |s: &[u8]| i16::from(s[x]);
        let dx = (v(a2) + 2 * v(b2) + v(c2)) - (v(a0) + 2 * v(b0) + v(c0));
        let dy = (v(c0) + 2 * v(c1) + v(c2)) - (v(a0) + 2 * v(a1) + v(a2));
        put(x, i32::from(dx), i32::from(dy), m, d);
    }
    // The two border columns, with the outer pixel repeated.
    for x in [0, w - 1] {
        let (l, r) = (x.saturating_sub(1), (x + 1).min(w - 1));
        let v = |s: &[u8], i: usize| i32::from(s[i]);
        let dx = (v(above, r) + 2 * v(here, r) + v(below, r))
            - (v(above, l) + 2 * v(here, l) + v(below, l));
        let dy = (v(below, l) + 2 * v(below, x) + v(below, r))
            - (v(above, l) + 2 * v(above, x) + v(above, r));
        put(x, dx, dy, mag, dir);
    }
}

/// Keeps a pixel only where its magnitude is a maximum along the gradient direction,
/// and classes what is kept as weak (≥ low) or strong (≥ high). The outermost pixels
/// are never edges. Gradients are computed a row ahead into a ring of three rows, so
/// no full-size gradient image is ever allocated.
fn suppress(px: &[u8], w: usize, h: usize, low2: i32, high2: i32) -> Vec<u8> {
    const _: () = assert!(NONE == 0, "a zeroed buffer is all NONE");
    let mut classes = crate::buffers::zeroed(w * h);
    let mut mag = [vec![0i32; w], vec![0i32; w], vec![0i32; w]];
    let mut dir = [vec![0u8; w], vec![0u8; w], vec![0u8; w]];
    for r in 0..h {
        let slot = r % 3;
        gradient_row(px, w, h, r, &mut mag[slot], &mut dir[slot]);
        if r < 2 {
            continue;
        }
        let y = r - 1;
        let (up, mid, down) = (&mag[(r + 1) % 3], &mag[y % 3], &mag[slot]);
        let d = &dir[y % 3];
        let out = &mut classes[y * w..][..w];
        for x in 1..w - 1 {
            let m = mid[x];
            if m < low2 {
                continue;
            }
            let (a, b) = match d[x] {
                HORIZONTAL => (mid[x - 1], mid[x + 1]),
                VERTICAL => (up[x], down[x]),
                DIAGONAL => (up[x - 1], down[x + 1]),
                _ => (up[x + 1], down[x - 1]),
            };
            if m >= a && m >= b {
                out[x] = if m >= high2 { STRONG } else { WEAK };
            }
        }
    }
    classes
}

/// Marks every strong pixel, and every weak pixel connected to one through weak
/// pixels, as an edge (255).
fn hysteresis(mut classes: Vec<u8>, w: usize, h: usize) -> Vec<u8> {
    const EDGE: u8 = 255;
    let mut stack = Vec::new();
    for start in 0..classes.len() {
        if classes[start] != STRONG {
            continue;
        }
        classes[start] = EDGE;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % w, i / w);
            // Suppression left the border at NONE, so neighbours of a marked pixel are
            // always inside the image.
            for n in [
                i - w - 1,
                i - w,
                i - w + 1,
                i - 1,
                i + 1,
                i + w - 1,
                i + w,
                i + w + 1,
            ] {
                if classes[n] == WEAK || classes[n] == STRONG {
                    classes[n] = EDGE;
                    stack.push(n);
                }
            }
            debug_assert!(x > 0 && y > 0 && x < w - 1 && y < h - 1);
        }
    }
    for c in &mut classes {
        // Branch-free, so this loop vectorises.
        *c = u8::from(*c == EDGE) * EDGE;
    }
    classes
}

#[cfg(test)]
mod tests {
    use super::*;
    use image::Luma;

    #[test]
    fn a_square_gives_a_closed_one_pixel_outline() {
        let img = GrayImage::from_fn(40, 40, |x, y| {
            Luma([if (10..30).contains(&x) && (10..30).contains(&y) {
                220
            } else {
                20
            }])
        });
        let out = canny(&img, 50.0, 100.0);
        // Every row crossing the square has an edge near each side, and only there.
        for y in 13..27 {
            let on: Vec<u32> = (0..40)
                .filter(|&x| out.get_pixel(x, y).0[0] == 255)
                .collect();
            assert!(on.iter().any(|x| (8..12).contains(x)), "row {y}: {on:?}");
            assert!(on.iter().any(|x| (28..32).contains(x)), "row {y}: {on:?}");
            assert!(on.len() <= 4, "row {y} not thin: {on:?}");
        }
        assert_eq!(out.get_pixel(20, 20).0[0], 0);
        assert_eq!(out.get_pixel(2, 2).0[0], 0);
    }

    #[test]
    fn thresholds_decide_what_survives() {
        // A faint step (contrast 15: gradient about 35 after smoothing) and a strong one
        // (contrast 125: about 285). A high threshold between them keeps the strong one.
        let img = GrayImage::from_fn(60, 20, |x, _| {
            Luma([match x {
                0..20 => 100,
                20..40 => 115,
                _ => 240,
            }])
        });
        let strong_only = canny(&img, 150.0, 250.0);
        let column = |img: &GrayImage, range: std::ops::Range<u32>| {
            range.into_iter().any(|x| img.get_pixel(x, 10).0[0] == 255)
        };
        assert!(!column(&strong_only, 17..23));
        assert!(column(&strong_only, 37..43));
        let both = canny(&img, 10.0, 20.0);
        assert!(column(&both, 17..23));
    }

    #[test]
    fn weak_edges_survive_only_when_connected_to_strong_ones() {
        // A step whose contrast fades along its length: hysteresis follows it from the
        // strong end into the faint end, which alone would not pass `high`.
        let img = GrayImage::from_fn(20, 60, |x, y| {
            let contrast = 200 - (y as i32 * 3).min(170);
            Luma([if x < 10 { 20 } else { (20 + contrast) as u8 }])
        });
        let out = canny(&img, 60.0, 300.0);
        let rows_with_edge = (1..59)
            .filter(|&y| (8..12).any(|x| out.get_pixel(x, y).0[0] == 255))
            .count();
        assert!(rows_with_edge > 40, "{rows_with_edge}");
        let alone = canny(
            &GrayImage::from_fn(20, 60, |x, _| Luma([if x < 10 { 20 } else { 60 }])),
            60.0,
            300.0,
        );
        assert!(alone.pixels().all(|p| p.0[0] == 0));
    }

    #[test]
    fn tiny_images_have_no_edges() {
        let out = canny(&GrayImage::from_pixel(2, 2, Luma([9])), 1.0, 2.0);
        assert_eq!(out.dimensions(), (2, 2));
    }
}

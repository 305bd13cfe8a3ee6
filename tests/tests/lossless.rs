//! Lossless JPEG transforms: a JPEG job of rotations, flips, grayscale and an aligned
//! crop must come out byte for byte as Debian's `jpegtran` (libjpeg-turbo-progs) makes
//! it for the same transform, and must show the same picture as the normal path.
//! Jobs that cannot be done losslessly must give exactly the normal path's output.
//!
//! `deploy/deps.sh` (run by `make test`) installs jpegtran.

use std::{
    io::Write,
    process::{Command, Stdio},
};

use pixmill_shared::{FlipDirection, JobRequest, Limits, OutputFormat, Step};
use pixmill_tests::photos;
use pixmill_workers::{codec, pipeline};
use uuid::Uuid;

fn jpegtran(input: &[u8], args: &[&str]) -> Vec<u8> {
    let mut child = Command::new("jpegtran")
        .arg("-copy")
        .arg("none")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("jpegtran is missing: run deploy/deps.sh (package libjpeg-turbo-progs)");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input)
        .expect("write to jpegtran");
    let out = child.wait_with_output().expect("jpegtran");
    assert!(out.status.success(), "jpegtran {args:?} failed");
    out.stdout
}

fn process(input: &[u8], steps: &[Step]) -> Vec<u8> {
    let job = JobRequest {
        id: Uuid::new_v4(),
        input: "inputs/x".into(),
        steps: steps.iter().cloned().map(Into::into).collect(),
        format: OutputFormat::Jpeg,
        quality: 85,
        cursor: 0,
        hops: Vec::new(),
        variants: Vec::new(),
    };
    pipeline::process(&job, input, &Limits::default())
        .expect("process")
        .bytes
}

/// What the normal path (decode, steps, encode at quality 85) makes of `steps`.
fn normal_path(input: &[u8], steps: &[Step]) -> Vec<u8> {
    let image = pipeline::render(steps, input, &Limits::default()).expect("render");
    codec::encode(&image, OutputFormat::Jpeg, 85).expect("encode")
}

/// Mean absolute difference per channel between two encoded images of one size.
fn mean_difference(a: &[u8], b: &[u8]) -> f64 {
    let (a, b) = (photos::decode(a).to_rgb8(), photos::decode(b).to_rgb8());
    assert_eq!(a.dimensions(), b.dimensions(), "sizes differ");
    let sum: u64 = a
        .as_raw()
        .iter()
        .zip(b.as_raw())
        .map(|(x, y)| u64::from(x.abs_diff(*y)))
        .sum();
    sum as f64 / a.as_raw().len() as f64
}

fn rotate(degrees: u16) -> Step {
    Step::Rotate { degrees }
}

fn flip(direction: FlipDirection) -> Step {
    Step::Flip { direction }
}

fn crop(x: u32, y: u32, width: u32, height: u32) -> Step {
    Step::Crop {
        x,
        y,
        width,
        height,
    }
}

/// (steps, the same transform as jpegtran arguments) for a `w`×`h` input whose sides
/// are whole 16 px blocks.
fn cases(w: u32, h: u32) -> Vec<(Vec<Step>, Vec<String>)> {
    let args = |s: &str| s.split(' ').map(String::from).collect::<Vec<_>>();
    vec![
        (vec![rotate(90)], args("-rotate 90")),
        (vec![rotate(180)], args("-rotate 180")),
        (vec![rotate(270)], args("-rotate 270")),
        (
            vec![flip(FlipDirection::Horizontal)],
            args("-flip horizontal"),
        ),
        (vec![flip(FlipDirection::Vertical)], args("-flip vertical")),
        (vec![Step::Grayscale {}], args("-grayscale")),
        (vec![crop(64, 32, 400, 300)], args("-crop 400x300+64+32")),
        // Rotate 90 then mirror left–right is the transpose.
        (
            vec![rotate(90), flip(FlipDirection::Horizontal)],
            args("-transpose"),
        ),
        // A crop, then a quarter turn: jpegtran crops in output coordinates, so the
        // source's top-left 800×608 is the turned frame's 608×800 at (1200 − 608, 0).
        (
            vec![crop(0, 0, w / 2, 608), rotate(90)],
            args(&format!("-rotate 90 -crop 608x{}+{}+0", w / 2, h - 608)),
        ),
        (
            vec![Step::Grayscale {}, rotate(270), crop(16, 32, 320, 240)],
            args("-grayscale -rotate 270 -crop 320x240+16+32"),
        ),
    ]
}

#[test]
fn lossless_transforms_match_jpegtran_byte_for_byte() {
    // A progressive 4:2:0 photo and a baseline 4:2:2 one, each cut losslessly to whole
    // 16 px blocks so that every transform is perfect.
    for (name, w, h) in [("FreshFlower.jpg", 1600, 1200), ("Storm.jpg", 1920, 1280)] {
        let input = jpegtran(&photos::photo(name), &["-crop", &format!("{w}x{h}+0+0")]);
        for (steps, args) in cases(w, h) {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let ours = process(&input, &steps);
            let theirs = jpegtran(&input, &args);
            // The same picture as decoding, transforming and re-encoding it.
            let diff = mean_difference(&ours, &normal_path(&input, &steps));
            assert!(
                ours == theirs,
                "{name} {steps:?}: {} bytes ({diff:.2} from the normal path), jpegtran {args:?} made {} bytes",
                ours.len(),
                theirs.len(),
            );
            assert!(diff < 3.0, "{name} {steps:?}: mean difference {diff:.2}");
            eprintln!(
                "{name} {steps:?}: identical to jpegtran {args:?}; {diff:.2} from the normal path"
            );
        }
    }
}

/// `jpeg` with an EXIF segment saying "rotate 90° clockwise to show" (orientation 6).
fn with_orientation_6(jpeg: &[u8]) -> Vec<u8> {
    let mut tiff = b"MM\0*\0\0\0\x08".to_vec();
    tiff.extend_from_slice(&[0, 1]); // one entry
    tiff.extend_from_slice(&[0x01, 0x12, 0, 3, 0, 0, 0, 1, 0, 6, 0, 0]); // Orientation = 6
    tiff.extend_from_slice(&[0, 0, 0, 0]); // no next IFD
    let mut segment = b"Exif\0\0".to_vec();
    segment.extend_from_slice(&tiff);
    let len = u16::try_from(segment.len() + 2).expect("short");
    let mut out = jpeg[..2].to_vec();
    out.extend_from_slice(&[0xFF, 0xE1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&segment);
    out.extend_from_slice(&jpeg[2..]);
    out
}

#[test]
fn the_exif_orientation_is_part_of_the_transform() {
    let upright = jpegtran(
        &photos::photo("FreshFlower.jpg"),
        &["-crop", "1600x1200+0+0"],
    );
    let input = with_orientation_6(&upright);
    // Shown upright it is already turned 90°; turning it 90° more is a half turn.
    let steps = [rotate(90)];
    let ours = process(&input, &steps);
    assert!(ours == jpegtran(&upright, &["-rotate", "180"]));
    let diff = mean_difference(&ours, &normal_path(&input, &steps));
    assert!(diff < 3.0, "mean difference {diff:.2}");
}

#[test]
fn jobs_that_cannot_be_lossless_take_the_normal_path() {
    // 1600×1203: rotating by 90 would move the partial bottom row of blocks to the left
    // edge; a crop at x = 3 is not on a block boundary; a blur is not a transform.
    let input = photos::photo("FreshFlower.jpg");
    for steps in [
        vec![rotate(90)],
        vec![crop(3, 0, 200, 100)],
        vec![rotate(180), Step::Blur { sigma: 2.0 }],
    ] {
        assert_eq!(
            process(&input, &steps),
            normal_path(&input, &steps),
            "{steps:?}"
        );
    }
    // The geometry checks still hold on the lossless path.
    let job = JobRequest {
        id: Uuid::new_v4(),
        input: "inputs/x".into(),
        steps: vec![crop(0, 0, 5000, 16).into()],
        format: OutputFormat::Jpeg,
        quality: 85,
        cursor: 0,
        hops: Vec::new(),
        variants: Vec::new(),
    };
    let err = pipeline::process(&job, &input, &Limits::default()).expect_err("outside");
    assert!(err.to_string().contains("crop"), "{err}");
}

//! In-process: what one job costs on one thread (decode + step + encode), per op and
//! photo size, and the quality guards that keep the fast paths honest.

use std::time::Instant;

use image::{DynamicImage, GrayImage, RgbImage};
use pixmill_shared::{ChannelOrder, Fit, JobRequest, Limits, OutputFormat, Step};
use pixmill_tests::photos;
use pixmill_workers::{codec, ops, pipeline};
use uuid::Uuid;

/// Photos of about 1600 px on the long side (1280–1920): the mixed workload's inputs.
pub const MEDIUM: &[&str] = &[
    "FreshFlower.jpg",
    "Dune.jpg",
    "GreenMeadow.jpg",
    "Picture_1A_by_freespace.jpg",
    "Storm.jpg",
    "RainDrops.jpg",
    "Blinds.jpg",
];
/// Photos of 10 MP and more.
pub const LARGE: &[&str] = &[
    "Kleiber_by_Lukas_Baubkus.jpg",
    "seeding_by_Clements_Engelhardt.jpg",
    "Dragonfly_by_Bolly.jpg",
    "sunset_by_Aitzol_Berasategi.jpg",
    "Bridge_by_Sander_Klootwijk.jpg",
];

/// The tolerances the fast paths are held to. A miss fails the benchmark.
pub const MIN_RESIZE_PSNR_DB: f64 = 35.0;
pub const MIN_BLUR_PSNR_DB: f64 = 40.0;
pub const MIN_EDGE_AGREEMENT: f64 = 0.95;

/// The mixed workload: (name, query string for the REST API, steps).
pub fn mixed() -> Vec<(&'static str, &'static str, Vec<Step>)> {
    vec![
        (
            "resize 640×400",
            "op=resize&width=640&height=400",
            vec![Step::Resize {
                width: Some(640),
                height: Some(400),
                fit: Fit::Cover,
            }],
        ),
        (
            "blur σ=3",
            "op=blur&sigma=3",
            vec![Step::Blur { sigma: 3.0 }],
        ),
        (
            "edges",
            "op=edges",
            vec![Step::Edges {
                low: 100.0,
                high: 200.0,
            }],
        ),
        (
            "swap",
            "op=swap",
            vec![Step::Swap {
                order: ChannelOrder::Bgr,
            }],
        ),
    ]
}

/// Per-op timings: mean over the photos of each photo's median, in ms.
pub struct OpTiming {
    pub op: &'static str,
    pub medium_ms: f64,
    pub large_ms: f64,
}

/// One quality guard's outcome.
pub struct Guard {
    pub what: String,
    /// The worst value over the photos.
    pub worst: f64,
    pub limit: f64,
    pub unit: &'static str,
}

impl Guard {
    pub fn passed(&self) -> bool {
        self.worst >= self.limit
    }
}

pub struct Engine {
    pub ops: Vec<OpTiming>,
    /// Mean over the mixed workload on the medium photos, ms per job.
    pub mixed_ms: f64,
    /// The same workload with every core running it at once: ms per job per thread
    /// ([`parallel_mixed_ms`]).
    pub parallel_ms: f64,
    /// Blur cost by sigma on one medium photo (ms for the blur alone).
    pub blur_by_sigma: Vec<(f32, f64)>,
    /// Canny alone on one medium photo's luma: pixmill's and imageproc's, ms.
    pub canny_ms: (f64, f64),
    /// Lossless JPEG transforms against decode + transform + encode at q85, on the
    /// medium photos cut to whole 16 px blocks, as they are and re-encoded at q80:
    /// (inputs, what, lossless ms, normal path ms).
    pub lossless: Vec<(&'static str, &'static str, f64, f64)>,
    /// A 2048×2048 progressive JPEG of 2000 scans: bytes, ms to refuse it by its scan
    /// count, ms to decode it with the limit lifted (first run only, else NaN).
    pub many_scans: (usize, f64, f64),
    pub guards: Vec<Guard>,
}

/// Times every op; runs the quality guards too when `guards` is set (they are
/// deterministic, so once per benchmark is enough).
pub fn run(iterations: usize, guards: bool) -> anyhow::Result<Engine> {
    let medium: Vec<Vec<u8>> = MEDIUM.iter().map(|n| photos::photo(n)).collect();
    let large: Vec<Vec<u8>> = LARGE.iter().map(|n| photos::photo(n)).collect();
    let limits = Limits::default();

    let mut timings = Vec::new();
    for (name, _, steps) in mixed() {
        let medium_ms = mean_of_medians(&steps, &medium, iterations, &limits)?;
        let large_ms = mean_of_medians(&steps, &large, iterations.div_ceil(3), &limits)?;
        eprintln!("bench: {name:<16} {medium_ms:7.2} ms (~1600 px)  {large_ms:8.2} ms (≥ 10 MP)");
        timings.push(OpTiming {
            op: name,
            medium_ms,
            large_ms,
        });
    }
    let mixed_ms = timings.iter().map(|t| t.medium_ms).sum::<f64>() / timings.len() as f64;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let parallel_ms = parallel_mixed_ms(cores, iterations.div_ceil(3))?;
    eprintln!("bench: mixed, {cores} threads at once {parallel_ms:7.2} ms per job per thread");

    let (sample, _) = codec::decode(&medium[0], &limits)?;
    let blur_by_sigma = [1.0f32, 3.0, 10.0, 25.0, 50.0]
        .into_iter()
        .map(|sigma| {
            let started = Instant::now();
            let _ = ops::blur(&sample, sigma);
            (sigma, ms(started))
        })
        .collect();

    let luma = sample.to_luma8();
    let started = Instant::now();
    std::hint::black_box(ops::canny(&luma, 100.0, 200.0));
    let ours = ms(started);
    let started = Instant::now();
    std::hint::black_box(imageproc::edges::canny(&luma, 100.0, 200.0));
    let canny_ms = (ours, ms(started));

    let lossless = lossless(&medium, iterations, &limits)?;
    let many_scans = many_scans(guards)?;

    let guards = if guards {
        eprintln!("bench: quality guards");
        vec![
            resize_guard(&medium, &large, &limits)?,
            blur_guard(&medium, &limits)?,
            edge_guard(&medium, &limits)?,
        ]
    } else {
        Vec::new()
    };
    Ok(Engine {
        ops: timings,
        mixed_ms,
        parallel_ms,
        blur_by_sigma,
        canny_ms,
        lossless,
        many_scans,
        guards,
    })
}

/// Each lossless transform, and the same steps the normal way (decode, steps, encode
/// at q85), mean over the photos of each photo's median.
fn lossless(
    medium: &[Vec<u8>],
    iterations: usize,
    limits: &Limits,
) -> anyhow::Result<Vec<(&'static str, &'static str, f64, f64)>> {
    use pixmill_shared::FlipDirection;
    // Cut every photo to whole 16 px blocks (itself a lossless crop), so every
    // transform is perfect; and the same again re-encoded at q80 4:2:0, as photos on
    // the web mostly are.
    let mut as_shot = Vec::new();
    let mut web = Vec::new();
    for input in medium {
        let (image, _) = codec::decode(input, limits)?;
        let (w, h) = (image.width() / 16 * 16, image.height() / 16 * 16);
        let crop = Step::Crop {
            x: 0,
            y: 0,
            width: w,
            height: h,
        };
        as_shot.push(pipeline::process(&jpeg_job(vec![crop]), input, limits)?.bytes);
        web.push(codec::encode(
            &image.crop_imm(0, 0, w, h),
            OutputFormat::Jpeg,
            80,
        )?);
    }
    let cases: Vec<(&'static str, Vec<Step>)> = vec![
        ("rotate 90", vec![Step::Rotate { degrees: 90 }]),
        (
            "flip horizontal",
            vec![Step::Flip {
                direction: FlipDirection::Horizontal,
            }],
        ),
        ("grayscale", vec![Step::Grayscale {}]),
        (
            "crop 800×480 at (64, 48)",
            vec![Step::Crop {
                x: 64,
                y: 48,
                width: 800,
                height: 480,
            }],
        ),
    ];
    let mut out = Vec::new();
    for (set, inputs) in [("as shot", &as_shot), ("re-encoded at q80", &web)] {
        for (name, steps) in &cases {
            let (fast, normal) = lossless_case(steps, inputs, iterations, limits)?;
            eprintln!(
                "bench: lossless {name:<24} ({set}) {fast:6.2} ms, normal path {normal:6.2} ms"
            );
            out.push((set, *name, fast, normal));
        }
    }
    Ok(out)
}

/// One transform over `inputs`: (lossless ms, normal path ms), each the mean over the
/// photos of each photo's median.
fn lossless_case(
    steps: &[Step],
    inputs: &[Vec<u8>],
    iterations: usize,
    limits: &Limits,
) -> anyhow::Result<(f64, f64)> {
    let fast = mean_of_medians(steps, inputs, iterations, limits)?;
    let mut sum = 0.0;
    {
        for input in inputs {
            let mut times = Vec::with_capacity(iterations);
            for _ in 0..=iterations {
                let started = Instant::now();
                let image = pipeline::render(steps, input, limits)?;
                std::hint::black_box(codec::encode(&image, OutputFormat::Jpeg, 85)?);
                times.push(ms(started));
            }
            times.remove(0); // the warm-up
            sum += median(&mut times);
        }
    }
    Ok((fast, sum / inputs.len() as f64))
}

/// The many-scans attack: how fast the scan count refuses it, and (once) what decoding
/// it would cost without the limit.
fn many_scans(unbounded: bool) -> anyhow::Result<(usize, f64, f64)> {
    let bytes = pixmill_tests::hostile::progressive_jpeg_with_scans(2048, 2000);
    let job = jpeg_job(vec![Step::Grayscale {}]);
    let started = Instant::now();
    let refused = pipeline::process(&job, &bytes, &Limits::default());
    let refuse_ms = ms(started);
    anyhow::ensure!(refused.is_err(), "2000 scans were not refused");
    let decode_ms = if unbounded {
        let lifted = Limits {
            max_scans: 100_000,
            ..Limits::default()
        };
        let started = Instant::now();
        let _ = std::hint::black_box(codec::decode(&bytes, &lifted));
        ms(started)
    } else {
        f64::NAN
    };
    eprintln!("bench: 2000 scans refused in {refuse_ms:.3} ms; unbounded decode {decode_ms:.0} ms");
    Ok((bytes.len(), refuse_ms, decode_ms))
}

fn jpeg_job(steps: Vec<Step>) -> JobRequest {
    JobRequest {
        id: Uuid::new_v4(),
        input: "inputs/bench".into(),
        steps: steps.into_iter().map(Into::into).collect(),
        format: OutputFormat::Jpeg,
        quality: 85,
        cursor: 0,
        hops: Vec::new(),
        variants: Vec::new(),
    }
}

/// The mixed workload with every core busy: `threads` threads at once, each running
/// every (medium photo, op) pair `rounds` times. Returns ms per job on one thread: the
/// in-process mean measures one thread on an idle machine, and cores that share caches,
/// memory bandwidth and a hypervisor's time run slower when all are busy. Its inverse ×
/// `threads` is what the machine can finish doing nothing but the work.
pub fn parallel_mixed_ms(threads: usize, rounds: usize) -> anyhow::Result<f64> {
    let medium: Vec<Vec<u8>> = MEDIUM.iter().map(|n| photos::photo(n)).collect();
    let limits = Limits::default();
    let jobs: Vec<JobRequest> = mixed()
        .into_iter()
        .map(|(_, _, steps)| jpeg_job(steps))
        .collect();
    let run = |rounds: usize| -> anyhow::Result<()> {
        for _ in 0..rounds {
            for input in &medium {
                for job in &jobs {
                    std::hint::black_box(pipeline::process(job, input, &limits)?);
                }
            }
        }
        Ok(())
    };
    // Warm every thread's codec handles first, then time all of them together.
    let barrier = std::sync::Barrier::new(threads);
    let started = std::sync::Mutex::new(None::<Instant>);
    std::thread::scope(|scope| -> anyhow::Result<()> {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| -> anyhow::Result<()> {
                    run(1)?;
                    if barrier.wait().is_leader() {
                        *started.lock().expect("lock") = Some(Instant::now());
                    }
                    barrier.wait();
                    run(rounds)
                })
            })
            .collect();
        for handle in handles {
            handle
                .join()
                .map_err(|_| anyhow::anyhow!("a bench thread panicked"))??;
        }
        Ok(())
    })?;
    let begun = started
        .into_inner()
        .expect("lock")
        .expect("the threads started");
    let per_thread_jobs = (rounds * medium.len() * jobs.len()) as f64;
    Ok(ms(begun) / per_thread_jobs)
}

fn mean_of_medians(
    steps: &[Step],
    inputs: &[Vec<u8>],
    iterations: usize,
    limits: &Limits,
) -> anyhow::Result<f64> {
    let job = JobRequest {
        id: Uuid::new_v4(),
        input: "inputs/bench".into(),
        steps: steps.iter().cloned().map(Into::into).collect(),
        format: OutputFormat::Jpeg,
        quality: 85,
        cursor: 0,
        hops: Vec::new(),
        variants: Vec::new(),
    };
    let mut sum = 0.0;
    for input in inputs {
        // One untimed run warms the caches and the per-thread codec handles.
        pipeline::process(&job, input, limits)?;
        let mut times = Vec::with_capacity(iterations);
        for _ in 0..iterations {
            let started = Instant::now();
            let out = pipeline::process(&job, input, limits)?;
            times.push(ms(started));
            std::hint::black_box(out);
        }
        sum += median(&mut times);
    }
    Ok(sum / inputs.len() as f64)
}

/// The resize with shrink-on-load against a plain Lanczos3 resize of the fully decoded
/// image (`image`'s own decoder and resizer), on every photo.
fn resize_guard(medium: &[Vec<u8>], large: &[Vec<u8>], limits: &Limits) -> anyhow::Result<Guard> {
    let (w, h) = (640, 400);
    let steps = [Step::Resize {
        width: Some(w),
        height: Some(h),
        fit: Fit::Cover,
    }];
    let mut worst = f64::INFINITY;
    for input in medium.iter().chain(large) {
        let fast = pipeline::render(&steps, input, limits)?.to_rgb8();
        let full = image::load_from_memory(input)?;
        let (sw, sh) = pixmill_shared::limits::cover_scale(full.width(), full.height(), w, h);
        let reference = full
            .resize_exact(sw, sh, image::imageops::FilterType::Lanczos3)
            .crop_imm((sw - w) / 2, (sh - h) / 2, w, h)
            .to_rgb8();
        worst = worst.min(psnr(fast.as_raw(), reference.as_raw()));
    }
    Ok(Guard {
        what: "resize (DCT shrink-on-load + SIMD Lanczos3) vs plain Lanczos3 of the full decode"
            .into(),
        worst,
        limit: MIN_RESIZE_PSNR_DB,
        unit: "dB PSNR",
    })
}

/// The SIMD blur against an exact Gaussian computed in f64 with a kernel reaching 4σ.
fn blur_guard(medium: &[Vec<u8>], limits: &Limits) -> anyhow::Result<Guard> {
    let mut worst = f64::INFINITY;
    for input in medium {
        let (image, _) = codec::decode(input, limits)?;
        let image = image.to_rgb8();
        let fast = ops::blur(&DynamicImage::ImageRgb8(image.clone()), 3.0).to_rgb8();
        let exact = exact_gaussian(&image, 3.0);
        worst = worst.min(psnr(fast.as_raw(), exact.as_raw()));
    }
    Ok(Guard {
        what: "blur σ=3 vs exact f64 Gaussian".into(),
        worst,
        limit: MIN_BLUR_PSNR_DB,
        unit: "dB PSNR",
    })
}

/// The fast Canny (luma decoded straight from the JPEG) against imageproc's `canny`
/// on the luma of the full RGB decode.
fn edge_guard(medium: &[Vec<u8>], limits: &Limits) -> anyhow::Result<Guard> {
    let steps = [Step::Edges {
        low: 100.0,
        high: 200.0,
    }];
    let mut worst = f64::INFINITY;
    for input in medium {
        let fast = pipeline::render(&steps, input, limits)?.to_luma8();
        let (full, _) = codec::decode(input, limits)?;
        let reference = imageproc::edges::canny(&luma601(&full.to_rgb8()), 100.0, 200.0);
        let same = fast
            .as_raw()
            .iter()
            .zip(reference.as_raw())
            .filter(|(a, b)| a == b)
            .count();
        worst = worst.min(same as f64 / fast.as_raw().len() as f64);
    }
    Ok(Guard {
        what: "edges vs imageproc canny (pixels that agree)".into(),
        worst: worst * 100.0,
        limit: MIN_EDGE_AGREEMENT * 100.0,
        unit: "%",
    })
}

fn luma601(rgb: &RgbImage) -> GrayImage {
    GrayImage::from_fn(rgb.width(), rgb.height(), |x, y| {
        let p = rgb.get_pixel(x, y).0;
        let v = 0.299 * f64::from(p[0]) + 0.587 * f64::from(p[1]) + 0.114 * f64::from(p[2]);
        image::Luma([v.round().clamp(0.0, 255.0) as u8])
    })
}

/// A separable Gaussian in f64, kernel radius ⌈4σ⌉, border pixels repeated.
fn exact_gaussian(image: &RgbImage, sigma: f64) -> RgbImage {
    let radius = (4.0 * sigma).ceil() as i64;
    let mut kernel: Vec<f64> = (-radius..=radius)
        .map(|i| (-((i * i) as f64) / (2.0 * sigma * sigma)).exp())
        .collect();
    let sum: f64 = kernel.iter().sum();
    kernel.iter_mut().for_each(|k| *k /= sum);
    let (w, h) = (image.width() as i64, image.height() as i64);
    let src: Vec<f64> = image.as_raw().iter().map(|&v| f64::from(v)).collect();
    let at = |x: i64, y: i64, c: usize| (y * w * 3 + x * 3) as usize + c;
    let mut tmp = vec![0.0; src.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                tmp[at(x, y, c)] = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, wgt)| wgt * src[at((x + k as i64 - radius).clamp(0, w - 1), y, c)])
                    .sum();
            }
        }
    }
    let mut out = vec![0u8; src.len()];
    for y in 0..h {
        for x in 0..w {
            for c in 0..3 {
                let v: f64 = kernel
                    .iter()
                    .enumerate()
                    .map(|(k, wgt)| wgt * tmp[at(x, (y + k as i64 - radius).clamp(0, h - 1), c)])
                    .sum();
                out[at(x, y, c)] = v.round().clamp(0.0, 255.0) as u8;
            }
        }
    }
    RgbImage::from_raw(image.width(), image.height(), out).unwrap_or_default()
}

/// Peak signal-to-noise ratio of two 8-bit buffers of the same length.
pub fn psnr(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len(), "images of different sizes");
    let mse = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (f64::from(x) - f64::from(y)).powi(2))
        .sum::<f64>()
        / a.len() as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (255.0 * 255.0 / mse).log10()
    }
}

pub fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

//! The Python baseline, and the report: medians over the runs, with every target
//! checked and every miss sized.

use std::{fmt::Write as _, path::PathBuf, process::Command};

use pixmill_tests::photos;

use crate::{
    e2e::E2e,
    engine::{self, Engine, median},
};

/// The same in-process workload in Pillow + OpenCV.
pub struct Baseline {
    pub ops: Vec<(String, f64)>,
    pub mixed_ms: f64,
    pub versions: String,
}

pub struct Run {
    pub engine: Engine,
    pub baseline: Option<Baseline>,
    pub e2e: E2e,
}

/// Runs `bench/baseline/pillow_opencv.py` with `BENCH_PYTHON`, or the virtualenv that
/// `make bench` sets up; `None` when neither is there.
pub fn baseline(iterations: usize) -> anyhow::Result<Option<Baseline>> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let python = std::env::var_os("BENCH_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("var/bench-venv/bin/python"));
    if !python.exists() {
        eprintln!(
            "bench: no Python baseline ({} is missing)",
            python.display()
        );
        return Ok(None);
    }
    let output = Command::new(&python)
        .arg(root.join("bench/baseline/pillow_opencv.py"))
        .arg(format!("--iterations={iterations}"))
        .args(engine::MEDIUM.iter().map(|n| photos::dir().join(n)))
        .output()?;
    anyhow::ensure!(
        output.status.success(),
        "the Python baseline failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let ops = engine::mixed()
        .iter()
        .map(|(name, _, _)| {
            (
                name.to_string(),
                json["ops"][name].as_f64().unwrap_or(f64::NAN),
            )
        })
        .collect();
    let v = &json["versions"];
    Ok(Some(Baseline {
        ops,
        mixed_ms: json["mixed_ms"].as_f64().unwrap_or(f64::NAN),
        versions: format!(
            "Pillow {}, OpenCV {}, NumPy {}",
            v["pillow"].as_str().unwrap_or("?"),
            v["opencv"].as_str().unwrap_or("?"),
            v["numpy"].as_str().unwrap_or("?")
        ),
    }))
}

/// Median over the runs of one number.
fn med(runs: &[Run], f: impl Fn(&Run) -> f64) -> f64 {
    median(&mut runs.iter().map(f).collect::<Vec<_>>())
}

fn verdict(ok: bool, miss: String) -> String {
    if ok {
        "met".into()
    } else {
        format!("missed: {miss}")
    }
}

pub fn render(runs: &[Run], cores: usize) -> String {
    let mut o = String::new();
    let n = runs.len();
    let first = &runs[0];
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let _ = writeln!(o, "# pixmill benchmark\n");
    let _ = writeln!(
        o,
        "{cpu}, {cores} cores. Every figure is the median of {n} run(s) made one after another \
         in this process; ratios compare figures from the same runs.\n"
    );

    // In-process.
    let _ = writeln!(
        o,
        "## In-process, one thread: decode + step + JPEG q85 encode\n"
    );
    let has_base = runs.iter().all(|r| r.baseline.is_some());
    let _ = writeln!(
        o,
        "| op | pixmill, ~1600 px | Pillow/OpenCV, ~1600 px | speed-up | pixmill, ≥ 10 MP |"
    );
    let _ = writeln!(o, "|---|---:|---:|---:|---:|");
    for (i, t) in first.engine.ops.iter().enumerate() {
        let ours = med(runs, |r| r.engine.ops[i].medium_ms);
        let large = med(runs, |r| r.engine.ops[i].large_ms);
        let (base, ratio) = if has_base {
            let b = med(runs, |r| {
                r.baseline.as_ref().map_or(f64::NAN, |b| b.ops[i].1)
            });
            let ratio = med(runs, |r| {
                r.baseline.as_ref().map_or(f64::NAN, |b| b.ops[i].1) / r.engine.ops[i].medium_ms
            });
            (format!("{b:.2} ms"), format!("{ratio:.2}×"))
        } else {
            ("not run".into(), "–".into())
        };
        let _ = writeln!(
            o,
            "| {} | {ours:.2} ms | {base} | {ratio} | {large:.1} ms |",
            t.op
        );
    }
    let mixed = med(runs, |r| r.engine.mixed_ms);
    let mixed_ratio = med(runs, |r| {
        r.baseline.as_ref().map_or(f64::NAN, |b| b.mixed_ms) / r.engine.mixed_ms
    });
    if has_base {
        let b = med(runs, |r| {
            r.baseline.as_ref().map_or(f64::NAN, |b| b.mixed_ms)
        });
        let _ = writeln!(
            o,
            "| **mixed mean** | **{mixed:.2} ms** | **{b:.2} ms** | **{mixed_ratio:.2}×** | |"
        );
    } else {
        let _ = writeln!(o, "| **mixed mean** | **{mixed:.2} ms** | not run | – | |");
    }
    let photo_list = engine::MEDIUM.join(", ");
    let _ = writeln!(
        o,
        "\n~1600 px photos: {photo_list}. ≥ 10 MP: {}. Each cell is the mean over the photos \
         of each photo's median time.",
        engine::LARGE.join(", ")
    );
    if let Some(b) = &first.baseline {
        let _ = writeln!(
            o,
            "Baseline: {} (bench/baseline/pillow_opencv.py), one thread.",
            b.versions
        );
    }

    let _ = writeln!(
        o,
        "\n### Blur cost by sigma (one ~1600 px photo, blur alone)\n"
    );
    let _ = writeln!(o, "| σ | ms |\n|---:|---:|");
    for (i, (sigma, _)) in first.engine.blur_by_sigma.iter().enumerate() {
        let t = med(runs, |r| r.engine.blur_by_sigma[i].1);
        let _ = writeln!(o, "| {sigma} | {t:.1} |");
    }

    let (ours, theirs) = (
        med(runs, |r| r.engine.canny_ms.0),
        med(runs, |r| r.engine.canny_ms.1),
    );
    let _ = writeln!(
        o,
        "\nCanny alone on the same photo's luma: pixmill {ours:.1} ms, imageproc {theirs:.1} ms \
         ({:.1}× faster).",
        theirs / ours
    );

    let _ = writeln!(o, "\n### Quality guards (the run fails if one is missed)\n");
    let _ = writeln!(
        o,
        "| check | worst over the photos | limit | |\n|---|---:|---:|---|"
    );
    for g in &first.engine.guards {
        let _ = writeln!(
            o,
            "| {} | {:.2} {} | ≥ {} {} | {} |",
            g.what,
            g.worst,
            g.unit,
            g.limit,
            g.unit,
            if g.passed() { "pass" } else { "FAIL" }
        );
    }

    // End to end.
    let e = &first.e2e;
    let jobs_per_sec = med(runs, |r| r.e2e.jobs_per_sec);
    let ceiling = cores as f64 * 1000.0 / mixed;
    let ratio = med(runs, |r| {
        r.e2e.jobs_per_sec / (cores as f64 * 1000.0 / r.engine.mixed_ms)
    });
    let _ = writeln!(o, "\n## End to end\n");
    let _ = writeln!(
        o,
        "RabbitMQ, one gateway process, {} worker process(es) × {} slot(s); {} closed-loop clients, \
         each doing upload (raw body) → long-poll → download → decode; {} jobs of the mixed \
         workload over the ~1600 px photos, after a warm-up.\n",
        e.workers, e.slots, e.clients, e.jobs
    );
    let p = |f: fn(&E2e) -> f64| med(runs, |r| f(&r.e2e));
    let _ = writeln!(o, "| measure | value |\n|---|---:|");
    let _ = writeln!(o, "| throughput | {jobs_per_sec:.1} jobs/s |");
    let _ = writeln!(
        o,
        "| in-process ceiling ({cores} cores ÷ {mixed:.2} ms) | {ceiling:.1} jobs/s |"
    );
    let _ = writeln!(o, "| throughput ÷ ceiling | {:.0} % |", ratio * 100.0);
    // The ceiling assumes the workers get every core. They share them with the gateway,
    // the broker and the load generator, so this is the fairer view of the workers' own
    // efficiency: throughput against the ceiling scaled by the CPU they actually got.
    let efficiency = med(runs, |r| {
        let share = r
            .e2e
            .cpu
            .iter()
            .find(|(w, _)| *w == "workers")
            .map_or(f64::NAN, |(_, s)| *s);
        r.e2e.jobs_per_sec / (share * cores as f64 * 1000.0 / r.engine.mixed_ms)
    });
    let _ = writeln!(
        o,
        "| throughput ÷ (ceiling × workers' share of the CPU) | {:.0} % |",
        efficiency * 100.0
    );
    let _ = writeln!(
        o,
        "| latency under load p50 / p95 / p99 | {:.0} / {:.0} / {:.0} ms |",
        p(|e| e.latency.0),
        p(|e| e.latency.1),
        p(|e| e.latency.2)
    );
    let (s_done, s_work, s_added) = (p(|e| e.single.0), p(|e| e.single.1), p(|e| e.single.2));
    let _ = writeln!(
        o,
        "| one client: upload → done, p50 | {s_done:.1} ms (worker's own time {s_work:.1} ms; added {s_added:.1} ms) |"
    );
    let gw = p(|e| e.gateway_peak_kib as f64) / 1024.0;
    let workers_total = p(|e| e.worker_peak_kib.iter().sum::<u64>() as f64) / 1024.0;
    let _ = writeln!(o, "| gateway peak RSS | {gw:.1} MiB |");
    let each: Vec<String> = e
        .worker_peak_kib
        .iter()
        .map(|k| format!("{:.1}", *k as f64 / 1024.0))
        .collect();
    let _ = writeln!(
        o,
        "| workers' peak RSS, together (first run: {} MiB each) | {workers_total:.1} MiB |",
        each.join(" + ")
    );
    let _ = writeln!(
        o,
        "\nWhere the CPU went during the loaded phase (first run; 100 % = all {cores} cores):\n"
    );
    let _ = writeln!(o, "| who | share |\n|---|---:|");
    for (who, share) in &e.cpu {
        let _ = writeln!(o, "| {who} | {:.0} % |", share * 100.0);
    }
    let per: Vec<String> = e
        .per_worker
        .iter()
        .map(|(w, c)| format!("{w}: {c}"))
        .collect();
    let _ = writeln!(
        o,
        "\nJobs per worker (first run, from the job records): {}.",
        per.join(", ")
    );

    // Targets.
    let _ = writeln!(o, "\n## Targets\n");
    let _ = writeln!(o, "| target | measured | verdict |\n|---|---:|---|");
    let row = |o: &mut String, what: &str, measured: String, ok: bool, miss: String| {
        let _ = writeln!(o, "| {what} | {measured} | {} |", verdict(ok, miss));
    };
    row(
        &mut o,
        "in-process mixed mean ≤ 13 ms",
        format!("{mixed:.2} ms"),
        mixed <= 13.0,
        format!(
            "by {:.2} ms ({:.0} %)",
            mixed - 13.0,
            (mixed / 13.0 - 1.0) * 100.0
        ),
    );
    if has_base {
        row(
            &mut o,
            "≈ 2× faster than Pillow/OpenCV in-process",
            format!("{mixed_ratio:.2}×"),
            mixed_ratio >= 2.0,
            format!("{mixed_ratio:.2}× instead of 2×"),
        );
    }
    row(
        &mut o,
        "end to end ≥ 90 % of the in-process ceiling",
        format!("{:.0} %", ratio * 100.0),
        ratio >= 0.9,
        format!("by {:.0} points", (0.9 - ratio) * 100.0),
    );
    row(
        &mut o,
        "≥ 100 jobs/s",
        format!("{jobs_per_sec:.1} jobs/s"),
        jobs_per_sec >= 100.0,
        format!("by {:.1} jobs/s", 100.0 - jobs_per_sec),
    );
    row(
        &mut o,
        "one client, long-poll: p50 ≤ in-process time + 5 ms",
        format!("+{s_added:.1} ms"),
        s_added <= 5.0,
        format!("by {:.1} ms", s_added - 5.0),
    );
    row(
        &mut o,
        "gateway RSS ≤ 40 MB",
        format!("{gw:.1} MiB"),
        gw * 1.048_576 <= 40.0,
        format!("by {:.1} MB", gw * 1.048_576 - 40.0),
    );
    row(
        &mut o,
        "all workers ≤ 120 MB",
        format!("{workers_total:.1} MiB"),
        workers_total * 1.048_576 <= 120.0,
        format!("by {:.1} MB", workers_total * 1.048_576 - 120.0),
    );
    o
}

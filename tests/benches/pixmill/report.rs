//! The Python baseline, and the report: medians over the runs, with every target
//! checked and every miss sized.

use std::{fmt::Write as _, path::PathBuf, process::Command};

use pixmill_tests::photos;

use crate::{
    e2e::System,
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
    pub pixmill: System,
    pub peer: Option<System>,
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

    // Lossless transforms and the many-scans attack.
    let _ = writeln!(
        o,
        "\n### Lossless JPEG transforms (DCT domain, byte-identical to jpegtran)\n"
    );
    let _ = writeln!(
        o,
        "| photos | steps | lossless | decode + steps + q85 encode | speed-up |\n|---|---|---:|---:|---:|"
    );
    let mut lossless_worst = f64::INFINITY;
    let mut lossless_worst_web = f64::INFINITY;
    for (i, (set, what, _, _)) in first.engine.lossless.iter().enumerate() {
        let fast = med(runs, |r| r.engine.lossless[i].2);
        let normal = med(runs, |r| r.engine.lossless[i].3);
        let ratio = med(runs, |r| r.engine.lossless[i].3 / r.engine.lossless[i].2);
        lossless_worst = lossless_worst.min(ratio);
        if *set != "as shot" {
            lossless_worst_web = lossless_worst_web.min(ratio);
        }
        let _ = writeln!(
            o,
            "| {set} | {what} | {fast:.2} ms | {normal:.2} ms | {ratio:.1}× |"
        );
    }
    let _ = writeln!(
        o,
        "\nThe same ~1600 px photos, each first cut (losslessly) to whole 16 px blocks so every \
         transform is perfect; then the same pixels re-encoded at q80 4:2:0. A transform \
         still reads and writes every coefficient's Huffman code, so its cost follows the \
         file's bits per pixel; decode + encode also pays the IDCT, colour conversion and \
         FDCT, whatever the bit rate."
    );
    let (scan_bytes, refuse_ms, unbounded_ms) = first.engine.many_scans;
    let unbounded = if unbounded_ms.is_nan() {
        "decoding it with the limit lifted is measured only with BENCH_GUARDS=1".to_string()
    } else {
        format!("decoding it with the limit lifted takes {unbounded_ms:.0} ms")
    };
    let _ = writeln!(
        o,
        "\nMany-scans attack: a {} KB progressive JPEG (2048×2048, 2000 scans) is refused by \
         its scan count in {refuse_ms:.2} ms (PIXMILL_MAX_SCANS = 100); {unbounded}.",
        scan_bytes / 1024
    );

    // End to end.
    let ours = &first.pixmill;
    let _ = writeln!(o, "\n## End to end\n");
    let _ = writeln!(
        o,
        "One load generator (Rust, reqwest), closed loop: each client uploads a raw body, \
         long-polls `GET /v1/jobs/{{id}}?wait=10`, downloads the result and checks its size. \
         The loaded phases run {} jobs of the mixed workload over the ~1600 px photos; the \
         lone-client phase runs {} resize 640×400 jobs. Both systems run the same phases in \
         each run, after a warm-up.\n",
        ours.phases.first().map_or(0, |p| p.jobs),
        ours.lone_jobs
    );
    let systems: Vec<&System> = std::iter::once(&first.pixmill)
        .chain(first.peer.as_ref())
        .collect();
    for s in &systems {
        let _ = writeln!(o, "- **{}**: {}.", s.name, s.layout);
    }
    let has_peer = runs.iter().all(|r| r.peer.is_some());
    fn sys(r: &Run, peer: bool) -> Option<&System> {
        if peer {
            r.peer.as_ref()
        } else {
            Some(&r.pixmill)
        }
    }
    let m =
        |peer: bool, f: &dyn Fn(&System) -> f64| med(runs, |r| sys(r, peer).map_or(f64::NAN, f));
    let phase_count = ours.phases.len();
    let _ = writeln!(
        o,
        "\n| measure | pixmill | peer | pixmill ÷ peer |\n|---|---:|---:|---:|"
    );
    let cell = |v: f64, unit: &str, digits: usize| {
        if v.is_nan() {
            "not run".to_string()
        } else {
            format!("{v:.digits$}{unit}")
        }
    };
    let mut ratios = Vec::new();
    for i in 0..phase_count {
        let clients = ours.phases[i].clients;
        let a = m(false, &|s| s.phases[i].jobs_per_sec);
        let b = m(true, &|s| s.phases[i].jobs_per_sec);
        let ratio = med(runs, |r| {
            r.peer.as_ref().map_or(f64::NAN, |p| {
                r.pixmill.phases[i].jobs_per_sec / p.phases[i].jobs_per_sec
            })
        });
        ratios.push((clients, ratio));
        let _ = writeln!(
            o,
            "| **jobs/s, {clients} clients** | **{}** | **{}** | **{}** |",
            cell(a, "", 1),
            cell(b, "", 1),
            cell(ratio, "×", 2)
        );
        for (label, pick) in [("p50", 0usize), ("p95", 1), ("p99", 2)] {
            let get = move |s: &System| {
                let l = s.phases[i].latency;
                [l.0, l.1, l.2][pick]
            };
            let a = m(false, &get);
            let b = m(true, &get);
            let _ = writeln!(
                o,
                "| latency {label}, {clients} clients | {} | {} | |",
                cell(a, " ms", 0),
                cell(b, " ms", 0)
            );
        }
    }
    let lone = |pick: usize| {
        move |s: &System| {
            let l = s.lone;
            [
                l.total.0, l.total.1, l.total.2, l.work, l.added.0, l.added.1, l.added.2,
                l.parts.0, l.parts.1, l.parts.2,
            ][pick]
        }
    };
    for (label, pick) in [
        ("upload → download p50", 0),
        ("upload → download p99", 1),
        ("upload → download worst", 2),
        ("the worker's own time, p50", 3),
        ("added around the work, p50", 4),
        ("added around the work, p99", 5),
        ("added around the work, worst", 6),
        ("of that, the upload until its 202, p50", 7),
        ("of that, 202 → done less the work, p50", 8),
        ("of that, the result's download, p50", 9),
    ] {
        let _ = writeln!(
            o,
            "| one client, resize: {label} | {} | {} | |",
            cell(m(false, &lone(pick)), " ms", 1),
            cell(m(true, &lone(pick)), " ms", 1)
        );
    }
    let stalls = |peer: bool| {
        runs.iter()
            .filter_map(|r| sys(r, peer))
            .map(|s| s.lone.stalls)
            .max()
            .map_or(f64::NAN, |v| v as f64)
    };
    let _ = writeln!(
        o,
        "| one client: stalls (≥ 40 ms added to a job), worst run | {} of {} | {} | |",
        cell(stalls(false), "", 0),
        ours.lone_jobs,
        cell(stalls(true), "", 0)
    );
    let retried = |peer: bool| {
        if runs.iter().any(|r| sys(r, peer).is_none()) {
            return f64::NAN;
        }
        runs.iter()
            .filter_map(|r| sys(r, peer))
            .map(|s| s.retried_gets)
            .sum::<usize>() as f64
    };
    let _ = writeln!(
        o,
        "| GETs sent again after a failed connection, all runs | {} | {} | |",
        cell(retried(false), "", 0),
        cell(retried(true), "", 0)
    );
    let peak = |peer: bool, group: &'static str| {
        m(peer, &move |s: &System| {
            s.peak_kib
                .iter()
                .filter(|(g, _)| group.is_empty() || *g == group)
                .map(|(_, k)| *k as f64)
                .sum::<f64>()
                / 1024.0
        })
    };
    for group in ["gateway", "workers", "broker"] {
        let _ = writeln!(
            o,
            "| peak RSS, {group} | {} | {} | |",
            cell(peak(false, group), " MiB", 1),
            cell(peak(true, group), " MiB", 1)
        );
    }
    let ours_mem = peak(false, "gateway") + peak(false, "workers");
    let theirs_mem = peak(true, "gateway") + peak(true, "workers");
    let _ = writeln!(
        o,
        "| **peak RSS, gateway + workers** | **{}** | **{}** | |",
        cell(ours_mem, " MiB", 1),
        cell(theirs_mem, " MiB", 1)
    );
    let mapped = |peer: bool| {
        m(peer, &|s: &System| {
            s.file_kib
                .iter()
                .filter(|(g, _)| matches!(*g, "gateway" | "workers"))
                .map(|(_, k)| *k as f64)
                .sum::<f64>()
                / 1024.0
        })
    };
    let _ = writeln!(
        o,
        "| of which code and data mapped from the programs' files, gateway + workers | {} | {} | |",
        cell(mapped(false), " MiB", 1),
        cell(mapped(true), " MiB", 1)
    );
    let _ = writeln!(
        o,
        "\nPeak RSS is each process's VmHWM, summed over the group's processes (for the \
         peer, gunicorn's and Celery's forked children count each, as `ps` shows them). The \
         broker row is RabbitMQ's (shared by both, so it covers both systems' runs) and, \
         for the peer, Redis. The mapped row is the part of RSS that is file pages (RssFile, \
         read after the loaded phases): each executable's and library's code and read-only \
         data the process has touched. Those pages are the page cache's, shared by every \
         process that maps the same file (the two workers map one binary, counted twice \
         here) and dropped and read again under memory pressure; the rest is each \
         process's own memory."
    );

    // CPU, per phase.
    for i in 0..phase_count {
        let clients = ours.phases[i].clients;
        let _ = writeln!(
            o,
            "\n### Where the CPU went, {clients} clients (median of the runs)\n"
        );
        let _ = writeln!(
            o,
            "| who | pixmill, ms per job | pixmill, share | peer, ms per job | peer, share |\n|---|---:|---:|---:|---:|"
        );
        let names: Vec<&'static str> = ours.phases[i].cpu.iter().map(|(w, _)| *w).collect();
        for who in names {
            let per = |peer: bool| {
                m(peer, &move |s: &System| {
                    s.phases[i]
                        .cpu_ms_per_job
                        .iter()
                        .find(|(w, _)| *w == who)
                        .map_or(f64::NAN, |(_, v)| *v)
                })
            };
            let share = |peer: bool| {
                m(peer, &move |s: &System| {
                    s.phases[i]
                        .cpu
                        .iter()
                        .find(|(w, _)| *w == who)
                        .map_or(f64::NAN, |(_, v)| *v * 100.0)
                })
            };
            let _ = writeln!(
                o,
                "| {who} | {} | {} | {} | {} |",
                cell(per(false), "", 2),
                cell(share(false), " %", 0),
                cell(per(true), "", 2),
                cell(share(true), " %", 0)
            );
        }
    }
    let _ = writeln!(
        o,
        "\n100 % = all {cores} cores for the whole phase. \"other\" is the kernel's and other \
         processes' busy time; \"idle\" is time no process used."
    );

    // Efficiency: each system against the ceiling of its own engine.
    let ceiling = |r: &Run, peer: bool| {
        let ms = if peer {
            r.baseline.as_ref().map_or(f64::NAN, |b| b.mixed_ms)
        } else {
            r.engine.mixed_ms
        };
        cores as f64 * 1000.0 / ms
    };
    let efficiency = |peer: bool, i: usize| {
        med(runs, |r| {
            sys(r, peer).map_or(f64::NAN, |s| s.phases[i].jobs_per_sec / ceiling(r, peer))
        })
    };
    let cpu_of = |s: &System, i: usize, who: &str| {
        s.phases[i]
            .cpu_ms_per_job
            .iter()
            .find(|(w, _)| *w == who)
            .map_or(f64::NAN, |(_, v)| *v)
    };
    let worker_tax = |peer: bool, i: usize| {
        med(runs, |r| {
            let engine_ms = if peer {
                r.baseline.as_ref().map_or(f64::NAN, |b| b.mixed_ms)
            } else {
                r.engine.mixed_ms
            };
            sys(r, peer).map_or(f64::NAN, |s| cpu_of(s, i, "workers") / engine_ms)
        })
    };
    let _ = writeln!(o, "\n### The system against its own engine\n");
    let _ = writeln!(
        o,
        "The engine's ceiling is what the cores could finish if they did nothing but the \
         in-process work: {cores} ÷ the in-process mixed mean (pixmill's engine for pixmill, \
         Pillow/OpenCV for the peer), on the same photos and op mix the loaded phases run. \
         Efficiency is end-to-end jobs/s ÷ that ceiling. The same work with every core \
         running it at once (no broker, no HTTP, nothing else) shows how much of the gap \
         is the machine itself: cores that share caches, memory bandwidth and a \
         hypervisor's time do not each run as fast as one alone.\n"
    );
    let _ = writeln!(o, "| measure | pixmill | peer |\n|---|---:|---:|");
    let _ = writeln!(
        o,
        "| engine ceiling, jobs/s | {} | {} |",
        cell(med(runs, |r| ceiling(r, false)), "", 1),
        cell(med(runs, |r| ceiling(r, true)), "", 1)
    );
    let busy_ceiling = |r: &Run| cores as f64 * 1000.0 / r.engine.parallel_ms;
    let _ = writeln!(
        o,
        "| in-process ms per job, one thread on an idle machine / with all {cores} cores \
         running it | {} / {} | {} / — |",
        cell(mixed, "", 2),
        cell(med(runs, |r| r.engine.parallel_ms), "", 2),
        cell(
            med(runs, |r| r
                .baseline
                .as_ref()
                .map_or(f64::NAN, |b| b.mixed_ms)),
            "",
            2
        )
    );
    let _ = writeln!(
        o,
        "| ceiling with every core busy, jobs/s | {} | — |",
        cell(med(runs, busy_ceiling), "", 1)
    );
    for i in 0..phase_count {
        let clients = ours.phases[i].clients;
        let _ = writeln!(
            o,
            "| efficiency against the all-cores-busy ceiling, {clients} clients | {} | — |",
            cell(
                med(runs, |r| r.pixmill.phases[i].jobs_per_sec / busy_ceiling(r)),
                "",
                2
            )
        );
        let _ = writeln!(
            o,
            "| **efficiency, {clients} clients** | **{}** | **{}** |",
            cell(efficiency(false, i), "", 2),
            cell(efficiency(true, i), "", 2)
        );
        let _ = writeln!(
            o,
            "| worker CPU per job ÷ in-process, {clients} clients | {} | {} |",
            cell(worker_tax(false, i), "×", 2),
            cell(worker_tax(true, i), "×", 2)
        );
    }

    // Targets.
    let lone_p50 = m(false, &lone(0));
    let lone_p99 = m(false, &lone(1));
    let lone_work = m(false, &lone(3));
    let added_p50 = m(false, &lone(4));
    let (submit_p50, between_p50, download_p50) =
        (m(false, &lone(7)), m(false, &lone(8)), m(false, &lone(9)));
    let overhead = |peer: bool, i: usize| {
        m(peer, &move |s: &System| {
            s.phases[i]
                .cpu_ms_per_job
                .iter()
                .filter(|(w, _)| *w == "gateway" || *w == "broker")
                .map(|(_, v)| *v)
                .sum()
        })
    };
    let idle = |i: usize| {
        m(false, &move |s: &System| {
            s.phases[i]
                .cpu
                .iter()
                .find(|(w, _)| *w == "idle")
                .map_or(f64::NAN, |(_, v)| *v)
        })
    };
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
        format!("by {:.2} ms", mixed - 13.0),
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
        "one client, resize: p50 ≤ 15 ms, p99 ≤ 25 ms",
        format!("{lone_p50:.1} / {lone_p99:.1} ms"),
        lone_p50 <= 15.0 && lone_p99 <= 25.0,
        format!(
            "p50 {lone_p50:.1} ms, p99 {lone_p99:.1} ms; the work alone is {lone_work:.1} ms \
             (p50) on these photos, and the system adds {added_p50:.1} ms (the upload until \
             its 202 {submit_p50:.1}, the way to the worker and back {between_p50:.1}, the \
             download {download_p50:.1})"
        ),
    );
    let stall_count = stalls(false);
    row(
        &mut o,
        "one client: no stall of ≥ 40 ms",
        format!("{stall_count:.0} of {}", ours.lone_jobs),
        stall_count == 0.0,
        format!("{stall_count:.0} jobs had ≥ 40 ms added"),
    );
    if let Some(i) = ours.phases.iter().position(|p| p.clients == 8) {
        let eff = efficiency(false, i);
        row(
            &mut o,
            "efficiency ≥ 0.75 of the engine's ceiling (8 clients)",
            format!("{eff:.2}"),
            eff >= 0.75,
            format!("{eff:.2} instead of 0.75"),
        );
        let tax = worker_tax(false, i);
        row(
            &mut o,
            "worker CPU per job ≤ 1.15× in-process (8 clients)",
            format!("{tax:.2}×"),
            tax <= 1.15,
            format!("{tax:.2}× instead of 1.15×"),
        );
        let over = overhead(false, i);
        row(
            &mut o,
            "gateway + broker CPU ≤ 3 ms per job (8 clients)",
            format!("{over:.2} ms"),
            over <= 3.0,
            format!("by {:.2} ms", over - 3.0),
        );
        let idle_pct = idle(i) * 100.0;
        row(
            &mut o,
            "idle ≤ 5 % at 8 clients",
            format!("{idle_pct:.1} %"),
            idle_pct <= 5.0,
            format!("by {:.1} points", idle_pct - 5.0),
        );
    }
    if has_peer {
        for (clients, ratio) in &ratios {
            row(
                &mut o,
                &format!("≥ 2.5× the peer's jobs/s at {clients} clients"),
                format!("{ratio:.2}×"),
                *ratio >= 2.5,
                format!("{ratio:.2}× instead of 2.5×"),
            );
        }
    }
    row(
        &mut o,
        "peak RSS, gateway + workers ≤ 100 MB",
        format!("{:.1} MB", ours_mem * 1.048_576),
        ours_mem * 1.048_576 <= 100.0,
        format!("by {:.1} MB", ours_mem * 1.048_576 - 100.0),
    );
    row(
        &mut o,
        "lossless transforms ≥ 5× faster than decode + encode",
        format!("{lossless_worst:.1}× as shot, {lossless_worst_web:.1}× at q80 (the slowest op)"),
        lossless_worst >= 5.0,
        format!("{lossless_worst:.1}× as shot, {lossless_worst_web:.1}× at q80"),
    );
    row(
        &mut o,
        "a many-scans JPEG costs no more than its scan count to refuse",
        if unbounded_ms.is_nan() {
            format!(
                "{refuse_ms:.2} ms (decoding it unbounded is measured only with BENCH_GUARDS=1)"
            )
        } else {
            format!("{refuse_ms:.2} ms instead of {unbounded_ms:.0} ms")
        },
        refuse_ms < 50.0,
        format!("{refuse_ms:.2} ms"),
    );
    o
}

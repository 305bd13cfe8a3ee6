//! `make bench`: pixmill's speed, measured.
//!
//! 1. In-process ([`engine`]): ms per job on one thread, per op, on real photographs of
//!    about 1600 px and of 10 MP and more, with the quality guards that fail the run if
//!    a fast path changes the result beyond its tolerance. The same workload runs in
//!    the usual Python stack (Pillow + OpenCV, `bench/baseline/`) in the same run, when
//!    it is installed, so the two compare as a ratio.
//! 2. End to end ([`e2e`]): the real stack under a closed-loop HTTP load, and the peer
//!    (`bench/peer/`: Flask + gunicorn + Celery + Pillow/OpenCV) under the same load,
//!    from the same client, in the same run.
//!
//! 3. Fair share ([`fair`]): a lone tenant's latency behind another tenant's backlog,
//!    with fair share on and off, once per `make bench` (`make bench-fair` runs only
//!    this, and writes `bench/results/fair.md`).
//!
//! 4. Durability ([`durability`]): the whole stack with SQLite syncing at every commit
//!    (as shipped) and at checkpoints only, and the folder store's directory sync, so
//!    the price of surviving a power cut is on record (`BENCH_ONLY=durability`).
//!
//! 5. The allocator ([`malloc`]): the whole stack with the shipped malloc setting and
//!    the other candidates, alternating, so the choice is on record
//!    (`BENCH_ONLY=malloc`, `BENCH_MALLOC` rounds, default 1; 0 skips).
//!
//! 6. Variants ([`variants`]): the srcset case (three JPEG widths and a WebP copy) as
//!    one job with four variants against four jobs of their own, CPU and wall time per
//!    upload, alternating (`BENCH_ONLY=variants`, `BENCH_VARIANTS` rounds, default 3;
//!    0 skips).
//!
//! Everything but fair share, durability, the allocator and variants runs `BENCH_RUNS` times (default 3) and the report gives
//! medians. It goes to stdout and to `bench/results/latest.md`.
//!
//! Knobs (environment): `BENCH_RUNS`, `BENCH_ITERATIONS` (timed repetitions per photo
//! and op, default 7), `BENCH_CLIENTS` (the loaded phases, default `8,16`),
//! `BENCH_JOBS` (jobs per loaded phase; default 616, 22 rounds of every photo with
//! every op, so the mix weighs each pair as the in-process mean does), `BENCH_LATENCY_JOBS` (200),
//! `BENCH_GUARDS` (0 skips the quality guards), `BENCH_WORKERS` (2 processes, as
//! `make run` starts), `BENCH_SLOTS` (job slots per worker; default the cores divided
//! among the workers, as `make run` gives them), `BENCH_PEER` (0 skips the peer), `BENCH_PYTHON`
//! (the interpreter with Pillow and OpenCV), `BENCH_ONLY=fair` (only fair share),
//! `BENCH_FAIR` (0 skips fair share), `BENCH_FAIR_BACKLOG` (tenant A's jobs, 1500),
//! `BENCH_ONLY=durability`, `BENCH_DURABILITY` (rounds of each SQLite mode, 2; 0 skips).

mod durability;
mod e2e;
mod engine;
mod fair;
mod malloc;
mod procfs;
mod report;
mod variants;

use std::{path::PathBuf, process::ExitCode};

use anyhow::Context;
use pixmill_tests::photos;

fn main() -> ExitCode {
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("bench: a quality guard failed (see the report)");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn env_or(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

fn run() -> anyhow::Result<bool> {
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let runs = env_or("BENCH_RUNS", 3)?.max(1);
    let iterations = env_or("BENCH_ITERATIONS", 7)?.max(1);
    let guards = env_or("BENCH_GUARDS", 1)? != 0;
    let clients: Vec<usize> = std::env::var("BENCH_CLIENTS")
        .unwrap_or_else(|_| "8,16".into())
        .split(',')
        .map(|c| {
            c.trim()
                .parse::<usize>()
                .map(|c| c.max(1))
                .with_context(|| format!("BENCH_CLIENTS: {c:?} is not a whole number"))
        })
        .collect::<anyhow::Result<_>>()?;
    let workers = env_or("BENCH_WORKERS", 2)?.max(1);
    let load = e2e::Load {
        clients,
        // 22 rounds of every (photo, op) pair: 616 jobs with the 7 photos and 4 ops.
        jobs: env_or(
            "BENCH_JOBS",
            22 * engine::MEDIUM.len() * engine::mixed().len(),
        )?
        .max(1),
        latency_jobs: env_or("BENCH_LATENCY_JOBS", 200)?.max(1),
        workers,
        slots: u16::try_from(env_or("BENCH_SLOTS", (cores / workers).max(1))?.max(1))?,
    };
    let peer = env_or("BENCH_PEER", 1)? != 0;
    if peer && !e2e::peer_available() {
        eprintln!("bench: the peer is not installed (bench/baseline/setup.sh); it is skipped");
    }
    let peer = peer && e2e::peer_available();
    let medium: Vec<(String, Vec<u8>)> = engine::MEDIUM
        .iter()
        .map(|n| (n.to_string(), photos::photo(n)))
        .collect();
    let ops: Vec<&'static str> = engine::mixed()
        .into_iter()
        .map(|(_, query, _)| query)
        .collect();
    let resize = ops[0];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/results");
    std::fs::create_dir_all(&out)?;
    let shape = fair::Shape {
        backlog: env_or("BENCH_FAIR_BACKLOG", 1500)?.max(1),
        lone: 10,
        every: std::time::Duration::from_secs(2),
        workers: 2,
        slots: load.slots,
    };
    // Tenant A's jobs: a medium photo, blurred; long enough that the backlog outlasts
    // B's 20 s when served first come, first served.
    let fair_query = "op=blur&sigma=4";
    let fair_photo = &medium[0].1;
    let durability_rounds = env_or("BENCH_DURABILITY", 2)?;
    if std::env::var("BENCH_ONLY").as_deref() == Ok("durability") {
        let outcome = runtime.block_on(durability::run(
            &load,
            &medium,
            &ops,
            resize,
            durability_rounds.max(1),
        ))?;
        let text = durability::render(&outcome);
        println!("{text}");
        std::fs::write(out.join("durability.md"), &text)?;
        eprintln!("bench: report written to bench/results/durability.md");
        return Ok(true);
    }
    let malloc_rounds = env_or("BENCH_MALLOC", 1)?;
    if std::env::var("BENCH_ONLY").as_deref() == Ok("malloc") {
        eprintln!("bench: in-process, for the allocator comparison");
        let engine = engine::run(iterations, false)?;
        let candidates = runtime.block_on(malloc::run(
            &load,
            &medium,
            &ops,
            resize,
            malloc_rounds.max(1),
        ))?;
        let text = malloc::render(&candidates, engine.mixed_ms);
        println!("{text}");
        std::fs::write(out.join("malloc.md"), &text)?;
        eprintln!("bench: report written to bench/results/malloc.md");
        return Ok(true);
    }
    let variant_rounds = env_or("BENCH_VARIANTS", 3)?;
    let variant_clients = load.clients.first().copied().unwrap_or(8);
    if std::env::var("BENCH_ONLY").as_deref() == Ok("variants") {
        let (separate, together) =
            runtime.block_on(variants::run(&load, &medium, variant_rounds.max(1)))?;
        let text = variants::render(&separate, &together, variant_clients);
        println!("{text}");
        std::fs::write(out.join("variants.md"), &text)?;
        eprintln!("bench: report written to bench/results/variants.md");
        return Ok(true);
    }
    let only_fair = std::env::var("BENCH_ONLY").as_deref() == Ok("fair");
    if only_fair {
        let outcomes = runtime.block_on(fair::run(&shape, fair_photo, fair_query))?;
        let text = fair::render(&shape, fair_query, &outcomes);
        println!("{text}");
        std::fs::write(out.join("fair.md"), &text)?;
        eprintln!("bench: report written to bench/results/fair.md");
        return Ok(true);
    }

    let mut results = Vec::new();
    for run in 1..=runs {
        eprintln!("bench: run {run} of {runs}: in-process");
        let engine = engine::run(iterations, run == 1 && guards)?;
        let baseline = report::baseline(iterations)?;
        eprintln!("bench: run {run} of {runs}: end to end");
        let pixmill = runtime.block_on(e2e::run("pixmill", &load, &medium, &ops, resize))?;
        let peer = if peer {
            Some(runtime.block_on(e2e::run("peer", &load, &medium, &ops, resize))?)
        } else {
            None
        };
        results.push(report::Run {
            engine,
            baseline,
            pixmill,
            peer,
        });
    }
    let mut text = report::render(&results, cores);
    if variant_rounds > 0 {
        let (separate, together) =
            runtime.block_on(variants::run(&load, &medium, variant_rounds))?;
        text.push('\n');
        text.push_str(&variants::render(&separate, &together, variant_clients));
    }
    if malloc_rounds > 0 {
        let candidates =
            runtime.block_on(malloc::run(&load, &medium, &ops, resize, malloc_rounds))?;
        let engine_ms = engine::median(
            &mut results
                .iter()
                .map(|r| r.engine.mixed_ms)
                .collect::<Vec<_>>(),
        );
        text.push('\n');
        text.push_str(&malloc::render(&candidates, engine_ms));
    }
    if durability_rounds > 0 {
        let outcome = runtime.block_on(durability::run(
            &load,
            &medium,
            &ops,
            resize,
            durability_rounds,
        ))?;
        text.push('\n');
        text.push_str(&durability::render(&outcome));
    }
    if env_or("BENCH_FAIR", 1)? != 0 {
        let outcomes = runtime.block_on(fair::run(&shape, fair_photo, fair_query))?;
        text.push('\n');
        text.push_str(&fair::render(&shape, fair_query, &outcomes));
    }
    println!("{text}");
    std::fs::write(out.join("latest.md"), &text)?;
    eprintln!("bench: report written to bench/results/latest.md");
    Ok(results[0].engine.guards.iter().all(engine::Guard::passed))
}

//! What the allocator setting costs the workers, and what it saves in memory.
//!
//! The binaries start glibc's malloc memory-first ([`MALLOC_TUNABLES`]): two arenas, and
//! every buffer of 512 KiB or more in a mapping of its own, unmapped when freed, so a
//! worker's resident size follows the job in hand. Each such buffer is then page-faulted
//! in afresh for every job. The candidates here run the same stack, alternating, each
//! with its own `GLIBC_TUNABLES` for the gateway and the workers (an operator's own
//! setting is left alone by the binaries, so this is also how one would choose another):
//!
//! - as shipped;
//! - reuse within a bound: buffers up to 32 MiB come from the arenas and stay there
//!   while the free memory at an arena's top is under 24 MiB, so a photo's decode,
//!   intermediate and encode buffers are reused job after job without page faults,
//!   while anything larger (a 10 MP+ image) is mapped on its own and returned when
//!   freed, and an arena holding more than 24 MiB free gives the excess back;
//! - CPU-first: one arena and glibc's adaptive mmap threshold, so buffers are reused
//!   from the heap.
//!
//! (Transparent huge pages for malloc, `glibc.malloc.hugetlb=1`, were measured here
//! before and saved nothing on this kernel's `madvise` setting.)

use pixmill_shared::runtime::MALLOC_TUNABLES;

use crate::e2e::{self, Load, System, percentile};

/// One candidate's systems, round by round.
pub struct Candidate {
    pub name: String,
    pub tunables: String,
    pub systems: Vec<System>,
}

pub fn candidates() -> Vec<(String, String)> {
    vec![
        ("as shipped".into(), MALLOC_TUNABLES.into()),
        (
            "reuse within a bound".into(),
            "glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=33554432:\
             glibc.malloc.trim_threshold=25165824"
                .into(),
        ),
        (
            "CPU-first: one arena, adaptive threshold".into(),
            "glibc.malloc.arena_max=1".into(),
        ),
    ]
}

pub async fn run(
    load: &Load,
    photos: &[(String, Vec<u8>)],
    ops: &[&'static str],
    resize: &'static str,
    rounds: usize,
) -> anyhow::Result<Vec<Candidate>> {
    let load = load.with_clients(8);
    let mut out: Vec<Candidate> = candidates()
        .into_iter()
        .map(|(name, tunables)| Candidate {
            name,
            tunables,
            systems: Vec::new(),
        })
        .collect();
    for round in 1..=rounds {
        for candidate in &mut out {
            eprintln!(
                "bench: malloc round {round} of {rounds}: GLIBC_TUNABLES={}",
                candidate.tunables
            );
            let env = [("GLIBC_TUNABLES", candidate.tunables.as_str())];
            candidate
                .systems
                .push(e2e::run_pixmill_with("pixmill", &env, &load, photos, ops, resize).await?);
        }
    }
    Ok(out)
}

/// The report's section; `engine_ms` is the in-process mixed mean of the same run.
pub fn render(candidates: &[Candidate], engine_ms: f64) -> String {
    let median = |systems: &[System], f: &dyn Fn(&System) -> f64| {
        let mut values: Vec<f64> = systems.iter().map(f).collect();
        percentile(&mut values, 0.5)
    };
    let rate = |s: &System| s.phases.first().map_or(f64::NAN, |p| p.jobs_per_sec);
    let worker_cpu = |s: &System| {
        s.phases
            .first()
            .and_then(|p| p.cpu_ms_per_job.iter().find(|(g, _)| *g == "workers"))
            .map_or(f64::NAN, |(_, ms)| *ms)
    };
    let memory = |s: &System| {
        s.peak_kib
            .iter()
            .filter(|(g, _)| *g == "gateway" || *g == "workers")
            .map(|(_, k)| *k as f64)
            .sum::<f64>()
            / 1024.0
            * 1.048_576
    };
    let rounds = candidates.first().map_or(0, |c| c.systems.len());
    let mut text = String::from("## What the allocator setting costs\n\n");
    text.push_str(&format!(
        "The whole stack at 8 clients with each `GLIBC_TUNABLES` for the gateway and the \
         workers, alternating, {rounds} round(s) each; medians. In-process mixed mean of this \
         run: {engine_ms:.2} ms. Transparent huge pages here: {}.\n\n",
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
    ));
    text.push_str(
        "| setting | GLIBC_TUNABLES | jobs/s | worker CPU ms per job | ÷ in-process | peak RSS, gateway + workers |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for c in candidates {
        let cpu = median(&c.systems, &worker_cpu);
        text.push_str(&format!(
            "| {} | `{}` | {:.1} | {cpu:.2} | {:.2}× | {:.1} MB |\n",
            c.name,
            c.tunables,
            median(&c.systems, &rate),
            cpu / engine_ms,
            median(&c.systems, &memory),
        ));
    }
    text
}

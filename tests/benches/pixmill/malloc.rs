//! What the memory settings cost the workers, and what they save in memory.
//!
//! The binaries start glibc's malloc memory-first ([`MALLOC_TUNABLES`]): two arenas, and
//! every buffer of 512 KiB or more in a mapping of its own, unmapped when freed, so a
//! worker's resident size follows the job in hand. Left at that, every image buffer
//! would be page-faulted in afresh for every job; the workers' slots therefore hand
//! their image buffers on from one job to the next, within `PIXMILL_SLOT_BUFFERS_MB`
//! each (`pixmill_workers::buffers`). The candidates here run the same stack,
//! alternating, each with its own environment for the gateway and the workers (an
//! operator's own `GLIBC_TUNABLES` is left alone by the binaries, so this is also how
//! one would choose another):
//!
//! - as shipped;
//! - the same malloc setting without the slots' buffers (`PIXMILL_SLOT_BUFFERS_MB=0`):
//!   every buffer mapped and faulted in afresh;
//! - CPU-first: one arena and glibc's adaptive mmap threshold, so malloc itself reuses
//!   the buffers from its heap, keeping whatever it grew to.
//!
//! (Transparent huge pages for malloc, `glibc.malloc.hugetlb=1`, and a 32 MiB mmap
//! threshold with a 24 MiB trim threshold were measured here before: the first saved
//! nothing on this kernel's `madvise` setting, the second kept 15–25 MB more resident.)

use pixmill_shared::runtime::MALLOC_TUNABLES;

use crate::e2e::{self, Load, System, percentile};

/// One candidate's systems, round by round.
pub struct Candidate {
    pub name: String,
    pub env: Vec<(&'static str, String)>,
    pub systems: Vec<System>,
}

pub fn candidates() -> Vec<(String, Vec<(&'static str, String)>)> {
    vec![
        (
            "as shipped".into(),
            vec![("GLIBC_TUNABLES", MALLOC_TUNABLES.into())],
        ),
        (
            "no slot buffers".into(),
            vec![
                ("GLIBC_TUNABLES", MALLOC_TUNABLES.into()),
                ("PIXMILL_SLOT_BUFFERS_MB", "0".into()),
            ],
        ),
        (
            "CPU-first: one arena, adaptive threshold".into(),
            vec![
                ("GLIBC_TUNABLES", "glibc.malloc.arena_max=1".into()),
                ("PIXMILL_SLOT_BUFFERS_MB", "0".into()),
            ],
        ),
    ]
}

fn shown(env: &[(&str, String)]) -> String {
    env.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
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
        .map(|(name, env)| Candidate {
            name,
            env,
            systems: Vec::new(),
        })
        .collect();
    for round in 1..=rounds {
        for candidate in &mut out {
            eprintln!(
                "bench: malloc round {round} of {rounds}: {}",
                shown(&candidate.env)
            );
            let env: Vec<(&str, &str)> = candidate
                .env
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect();
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
    let mut text = String::from("## What the memory settings cost\n\n");
    text.push_str(&format!(
        "The whole stack at 8 clients with each environment for the gateway and the \
         workers, alternating, {rounds} round(s) each; medians. In-process mixed mean of this \
         run: {engine_ms:.2} ms. Transparent huge pages here: {}.\n\n",
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .map_or_else(|_| "unknown".into(), |s| s.trim().to_string())
    ));
    text.push_str(
        "| setting | environment | jobs/s | worker CPU ms per job | ÷ in-process | peak RSS, gateway + workers |\n\
         |---|---|---:|---:|---:|---:|\n",
    );
    for c in candidates {
        let cpu = median(&c.systems, &worker_cpu);
        text.push_str(&format!(
            "| {} | `{}` | {:.1} | {cpu:.2} | {:.2}× | {:.1} MB |\n",
            c.name,
            shown(&c.env),
            median(&c.systems, &rate),
            cpu / engine_ms,
            median(&c.systems, &memory),
        ));
    }
    text
}

//! What "nothing answered is lost, even in a power cut" costs.
//!
//! - SQLite with `synchronous=FULL` (the default, `PIXMILL_SQLITE_SYNC=full`: the log is
//!   synced at every commit) against `NORMAL` (synced at checkpoints: safe from process
//!   crashes, not from power cuts). The whole stack runs the lone-client and the
//!   8-client phases in each mode, alternating, `rounds` times, so noise spreads over
//!   both.
//! - The folder store's directory sync after each rename: a blob `put` as shipped
//!   against the same write, data sync and rename without the directory sync.

use std::{io::Write, time::Instant};

use bytes::Bytes;
use pixmill_shared::blobs::{BlobStore, folder::FolderStore};
use pixmill_tests::temp_dir;
use uuid::Uuid;

use crate::e2e::{self, Load, System, percentile};

/// Both modes' systems, round by round.
pub struct Outcome {
    pub full: Vec<System>,
    pub normal: Vec<System>,
    /// ms per folder `put` of the same blob: (as shipped, without the directory sync).
    pub put_ms: (f64, f64),
    pub put_bytes: usize,
}

pub async fn run(
    load: &Load,
    photos: &[(String, Vec<u8>)],
    ops: &[&'static str],
    resize: &'static str,
    rounds: usize,
) -> anyhow::Result<Outcome> {
    let load = load.with_clients(8);
    let (mut full, mut normal) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        for (mode, into) in [("full", &mut full), ("normal", &mut normal)] {
            eprintln!("bench: durability round {round} of {rounds}: PIXMILL_SQLITE_SYNC={mode}");
            let name = if mode == "full" {
                "pixmill, SQLite synchronous=FULL"
            } else {
                "pixmill, SQLite synchronous=NORMAL"
            };
            let env = [("PIXMILL_SQLITE_SYNC", mode)];
            into.push(e2e::run_pixmill_with(name, &env, &load, photos, ops, resize).await?);
        }
    }
    let blob = photos.first().map(|(_, b)| b.clone()).unwrap_or_default();
    let put_bytes = blob.len();
    let put_ms = tokio::task::spawn_blocking(move || folder_puts(&blob, 200)).await??;
    Ok(Outcome {
        full,
        normal,
        put_ms,
        put_bytes,
    })
}

/// Median ms of `n` folder puts of `blob`: as shipped, and without the directory sync.
fn folder_puts(blob: &[u8], n: usize) -> anyhow::Result<(f64, f64)> {
    let dir = temp_dir();
    let store = FolderStore::open(dir.clone())?;
    let runtime = tokio::runtime::Builder::new_current_thread().build()?;
    let bytes = Bytes::copy_from_slice(blob);
    let (mut shipped, mut bare) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for _ in 0..n {
        let key = format!("inputs/{}", Uuid::new_v4());
        let started = Instant::now();
        runtime.block_on(store.put(&key, bytes.clone()))?;
        shipped.push(crate::engine::ms(started));

        let (tmp, path) = (
            dir.join("tmp").join(Uuid::new_v4().to_string()),
            dir.join("inputs").join(Uuid::new_v4().to_string()),
        );
        let started = Instant::now();
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(blob)?;
        file.sync_data()?;
        drop(file);
        std::fs::rename(&tmp, &path)?;
        bare.push(crate::engine::ms(started));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok((percentile(&mut shipped, 0.5), percentile(&mut bare, 0.5)))
}

/// The report's section.
pub fn render(outcome: &Outcome) -> String {
    let median = |systems: &[System], f: &dyn Fn(&System) -> f64| {
        let mut values: Vec<f64> = systems.iter().map(f).collect();
        percentile(&mut values, 0.5)
    };
    let rate = |s: &System| s.phases.first().map_or(f64::NAN, |p| p.jobs_per_sec);
    let lone = |s: &System| s.lone.total.0;
    let gateway_cpu = |s: &System| {
        s.phases
            .first()
            .and_then(|p| p.cpu_ms_per_job.iter().find(|(g, _)| *g == "gateway"))
            .map_or(f64::NAN, |(_, ms)| *ms)
    };
    let (full, normal) = (&outcome.full, &outcome.normal);
    let mut text = String::from("## What durability costs\n\n");
    text.push_str(&format!(
        "The whole stack, SQLite `synchronous=FULL` (shipped) against `NORMAL`, alternating, \
         {} round(s) each; medians.\n\n",
        full.len()
    ));
    text.push_str("| | FULL (shipped) | NORMAL | FULL ÷ NORMAL |\n|---|---:|---:|---:|\n");
    for (what, f) in [
        ("jobs/s at 8 clients", &rate as &dyn Fn(&System) -> f64),
        ("lone job p50, ms", &lone),
        ("gateway CPU ms per job at 8 clients", &gateway_cpu),
    ] {
        let (a, b) = (median(full, f), median(normal, f));
        text.push_str(&format!("| {what} | {a:.1} | {b:.1} | {:.2} |\n", a / b));
    }
    let (shipped, bare) = outcome.put_ms;
    text.push_str(&format!(
        "\nFolder store, one `put` of a {} KiB photo, median of 200: {shipped:.2} ms as shipped \
         (data sync, rename, directory sync) against {bare:.2} ms without the directory sync \
         ({:.2}×).\n",
        outcome.put_bytes / 1024,
        shipped / bare
    ));
    text
}

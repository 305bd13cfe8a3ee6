//! End to end: the real stack (broker, a gateway process, worker processes) under a
//! closed-loop load of HTTP clients, each doing upload → long-poll → download →
//! decode the result.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::{Context, bail, ensure};
use pixmill_shared::Limits;
use pixmill_tests::{Client, GatewayProcess, Stack, common, free_port, temp_dir};
use uuid::Uuid;

use crate::{
    engine::{median, ms},
    procfs,
};

/// How the load is shaped.
pub struct Load {
    /// Concurrent clients in the throughput phase.
    pub clients: usize,
    /// Jobs in the throughput phase.
    pub jobs: usize,
    /// Jobs in the one-client latency phase.
    pub latency_jobs: usize,
    /// Worker processes, and job slots in each.
    pub workers: usize,
    pub slots: u16,
}

/// One job's timings, in ms.
#[derive(Clone, Copy)]
struct Timed {
    /// Upload started → long-poll answered with the terminal state.
    to_done: f64,
    /// Upload started → result downloaded and decoded.
    total: f64,
    /// The worker's own decode + steps + encode time, from the job record.
    processing: f64,
}

pub struct E2e {
    pub jobs: usize,
    pub clients: usize,
    pub workers: usize,
    pub slots: u16,
    pub jobs_per_sec: f64,
    /// Latency percentiles (p50, p95, p99) of the whole round trip under load, ms.
    pub latency: (f64, f64, f64),
    /// At one client: p50 of upload → terminal, of the worker's time, and of the
    /// difference (what the system adds around the work), ms.
    pub single: (f64, f64, f64),
    /// Peak resident memory (VmHWM), KiB.
    pub gateway_peak_kib: u64,
    pub worker_peak_kib: Vec<u64>,
    /// Share of the machine's CPU time in the throughput phase, by who used it.
    pub cpu: Vec<(&'static str, f64)>,
    /// Which workers ran how many jobs.
    pub per_worker: Vec<(String, usize)>,
}

/// The photos (name, bytes) and the mixed workload's query strings.
pub async fn run(
    load: &Load,
    photos: &[(String, Vec<u8>)],
    ops: &[(&'static str, &'static str)],
) -> anyhow::Result<E2e> {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir)?;
    let common = common(&format!("bench-{}", Uuid::new_v4().simple()), &dir);
    let port = free_port()?;
    let gateway = GatewayProcess::start_with(&common, port, &[("RUST_LOG", "warn")]).await?;
    let mut stack = Stack::workers_only(common.clone())?;
    for i in 0..load.workers {
        stack.spawn_worker_process_with(
            &format!("bench-w{i}"),
            load.slots,
            &[("RUST_LOG", "warn")],
        )?;
    }
    let client = Arc::new(gateway.client.clone());

    // Warm-up: every worker connected and every photo seen once.
    eprintln!("bench: warming up");
    let work: Arc<Vec<(Vec<u8>, &'static str)>> = Arc::new(
        photos
            .iter()
            .enumerate()
            .map(|(i, (_, bytes))| (bytes.clone(), ops[i % ops.len()].1))
            .chain(
                photos
                    .iter()
                    .flat_map(|(_, b)| ops.iter().map(move |(_, q)| (b.clone(), *q))),
            )
            .collect(),
    );
    closed_loop(&client, &work, load.clients, work.len()).await?;

    eprintln!("bench: one client, {} jobs", load.latency_jobs);
    let single = closed_loop(&client, &work, 1, load.latency_jobs).await?;
    let mut to_done: Vec<f64> = single.0.iter().map(|t| t.to_done).collect();
    let mut processing: Vec<f64> = single.0.iter().map(|t| t.processing).collect();
    let mut added: Vec<f64> = single.0.iter().map(|t| t.to_done - t.processing).collect();

    eprintln!("bench: {} clients, {} jobs", load.clients, load.jobs);
    let pids: Vec<(&'static str, Vec<u32>)> = vec![
        ("gateway", gateway.pid().into_iter().collect()),
        ("workers", stack.worker_pids()),
        ("broker", procfs::pids_named("beam.smp")),
        ("load generator", vec![std::process::id()]),
    ];
    let before = procfs::cpu_snapshot(&pids);
    let started = Instant::now();
    let (timed, ids) = closed_loop(&client, &work, load.clients, load.jobs).await?;
    let wall = started.elapsed().as_secs_f64();
    let after = procfs::cpu_snapshot(&pids);
    let mut totals: Vec<f64> = timed.iter().map(|t| t.total).collect();

    let per_worker = count_workers(&client, &ids).await?;
    let result = E2e {
        jobs: load.jobs,
        clients: load.clients,
        workers: load.workers,
        slots: load.slots,
        jobs_per_sec: load.jobs as f64 / wall,
        latency: (
            percentile(&mut totals, 0.50),
            percentile(&mut totals, 0.95),
            percentile(&mut totals, 0.99),
        ),
        single: (
            median(&mut to_done),
            median(&mut processing),
            median(&mut added),
        ),
        gateway_peak_kib: gateway.pid().map_or(0, procfs::peak_rss_kib),
        worker_peak_kib: stack
            .worker_pids()
            .into_iter()
            .map(procfs::peak_rss_kib)
            .collect(),
        cpu: procfs::shares(&before, &after),
        per_worker,
    };
    stack.stop().await?;
    gateway.kill().await?;
    Ok(result)
}

/// `clients` tasks share `jobs` jobs, each running its jobs one after another.
async fn closed_loop(
    client: &Arc<Client>,
    work: &Arc<Vec<(Vec<u8>, &'static str)>>,
    clients: usize,
    jobs: usize,
) -> anyhow::Result<(Vec<Timed>, Vec<String>)> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, work, next) = (client.clone(), work.clone(), next.clone());
        tasks.spawn(async move {
            let mut done = Vec::new();
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= jobs {
                    return anyhow::Ok(done);
                }
                let (body, query) = &work[n % work.len()];
                done.push(one_job(&client, body, query).await?);
            }
        });
    }
    let mut timed = Vec::with_capacity(jobs);
    let mut ids = Vec::with_capacity(jobs);
    while let Some(result) = tasks.join_next().await {
        for (t, id) in result?? {
            timed.push(t);
            ids.push(id);
        }
    }
    ensure!(
        timed.len() == jobs,
        "{} of {jobs} jobs finished",
        timed.len()
    );
    Ok((timed, ids))
}

async fn one_job(client: &Client, body: &[u8], query: &str) -> anyhow::Result<(Timed, String)> {
    let started = Instant::now();
    let reply = client.submit_raw(body.to_vec(), query).await?;
    if reply.status != 202 {
        bail!(
            "submit answered {}: {}",
            reply.status,
            String::from_utf8_lossy(&reply.body)
        );
    }
    let id = reply.json()["id"]
        .as_str()
        .context("202 without an id")?
        .to_string();
    let job = client.wait_terminal(&id).await?;
    let to_done = ms(started);
    ensure!(job["state"] == "succeeded", "job {id} ended {job}");
    let result = client.get(&format!("/v1/jobs/{id}/result")).await?;
    ensure!(result.status == 200, "result of {id}: {}", result.status);
    let (w, h) = (
        job["result"]["width"].as_u64(),
        job["result"]["height"].as_u64(),
    );
    let body = result.body;
    let decoded = tokio::task::spawn_blocking(move || {
        pixmill_workers::codec::decode(&body, &Limits::default())
            .map(|(img, _)| (u64::from(img.width()), u64::from(img.height())))
    })
    .await??;
    ensure!(
        (Some(decoded.0), Some(decoded.1)) == (w, h),
        "job {id}: result is {decoded:?}"
    );
    let timed = Timed {
        to_done,
        total: ms(started),
        processing: job["result"]["processing_ms"].as_f64().unwrap_or(f64::NAN),
    };
    Ok((timed, id))
}

/// How many of `ids` each worker ran, from the job records.
async fn count_workers(client: &Client, ids: &[String]) -> anyhow::Result<Vec<(String, usize)>> {
    let mut counts = std::collections::BTreeMap::new();
    for id in ids {
        let job = client.get(&format!("/v1/jobs/{id}")).await?.json();
        let worker = job["worker"].as_str().unwrap_or("?").to_string();
        *counts.entry(worker).or_insert(0) += 1;
    }
    Ok(counts.into_iter().collect())
}

fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[rank]
}

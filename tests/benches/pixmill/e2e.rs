//! End to end: a whole system under closed-loop HTTP load, each client doing upload →
//! long-poll → download, then checking the result. Two systems go through the same
//! phases with the same client in the same run: pixmill (broker, a gateway process,
//! worker processes) and the peer, the usual Python stack (`bench/peer/`: Flask on
//! gunicorn, Celery, Pillow/OpenCV, RabbitMQ and Redis).

use std::{
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail, ensure};
use pixmill_tests::{Client, GatewayProcess, Stack, common, free_port, temp_dir};
use uuid::Uuid;

use crate::{engine::ms, procfs};

/// GETs sent again after the connection failed under them (see [`get_once_more`]).
static RETRIED_GETS: AtomicUsize = AtomicUsize::new(0);

/// How the load is shaped.
pub struct Load {
    /// Concurrent clients in each throughput phase.
    pub clients: Vec<usize>,
    /// Jobs in each throughput phase.
    pub jobs: usize,
    /// Jobs in the one-client latency phase.
    pub latency_jobs: usize,
    /// pixmill's worker processes, and job slots in each.
    pub workers: usize,
    pub slots: u16,
}

impl Load {
    /// The same load, with one loaded phase of `clients` clients.
    pub fn with_clients(&self, clients: usize) -> Load {
        Load {
            clients: vec![clients],
            jobs: self.jobs,
            latency_jobs: self.latency_jobs,
            workers: self.workers,
            slots: self.slots,
        }
    }
}

/// One job's timings, in ms.
#[derive(Clone, Copy)]
struct Timed {
    /// Upload started → result downloaded (the client's check of it is not counted).
    total: f64,
    /// The worker's own decode + steps + encode time, from the job record.
    processing: f64,
    /// Upload started → the submit's answer (202).
    submit: f64,
    /// The result's download.
    download: f64,
}

/// A loaded phase.
pub struct Phase {
    pub clients: usize,
    pub jobs: usize,
    pub jobs_per_sec: f64,
    /// p50, p95, p99 of upload → download, ms.
    pub latency: (f64, f64, f64),
    /// Each group's share of the machine's CPU (1.0 = every core, the whole phase),
    /// then "other" and "idle".
    pub cpu: Vec<(&'static str, f64)>,
    /// CPU ms per job of each group.
    pub cpu_ms_per_job: Vec<(&'static str, f64)>,
}

/// The lone-client phase, ms.
#[derive(Debug, Clone, Copy)]
pub struct Lone {
    /// Upload → result downloaded: p50, p99, worst.
    pub total: (f64, f64, f64),
    /// The worker's own time (decode, steps, encode), p50.
    pub work: f64,
    /// What the system adds around the work (total − work): p50, p99, worst.
    pub added: (f64, f64, f64),
    /// Of what is added, p50 of each part: the upload until its 202; from the 202 until
    /// the long poll answers done, less the work (queue, the worker's read and write of
    /// the images, the reply, its record); the result's download.
    pub parts: (f64, f64, f64),
    /// Jobs whose added time was 40 ms or more: a stall, not work.
    pub stalls: usize,
}

/// One system's figures.
pub struct System {
    pub name: &'static str,
    pub layout: String,
    /// One client, resize jobs only.
    pub lone: Lone,
    pub lone_jobs: usize,
    pub phases: Vec<Phase>,
    /// Peak resident memory (VmHWM) summed over each group's processes, KiB.
    pub peak_kib: Vec<(&'static str, u64)>,
    /// Of that, file pages mapped from executables and libraries (RssFile, read at the
    /// end), summed the same way, KiB.
    pub file_kib: Vec<(&'static str, u64)>,
    /// GETs the client had to send twice because a pooled connection failed.
    pub retried_gets: usize,
}

/// A running system: its client, and who its processes are.
pub(crate) enum Running {
    Pixmill {
        gateway: GatewayProcess,
        stack: Box<Stack>,
    },
    Peer {
        client: Client,
        dir: PathBuf,
    },
}

impl Running {
    pub(crate) fn client(&self) -> Client {
        match self {
            Running::Pixmill { gateway, .. } => gateway.client.clone(),
            Running::Peer { client, .. } => client.clone(),
        }
    }

    /// (group, pids) for the CPU and memory figures. The broker group is RabbitMQ for
    /// both, and the peer's Redis.
    pub(crate) fn groups(&self) -> Vec<(&'static str, Vec<u32>)> {
        let broker = procfs::pids_named("beam.smp");
        match self {
            Running::Pixmill { gateway, stack } => vec![
                ("gateway", gateway.pid().into_iter().collect()),
                ("workers", stack.worker_pids()),
                ("broker", broker),
                ("load generator", vec![std::process::id()]),
            ],
            Running::Peer { dir, .. } => {
                let tree = |file: &str| {
                    pid_file(dir, file).map_or_else(Vec::new, procfs::with_descendants)
                };
                let mut brokers = broker;
                brokers.extend(tree("redis.pid"));
                vec![
                    ("gateway", tree("gunicorn.pid")),
                    ("workers", tree("celery.pid")),
                    ("broker", brokers),
                    ("load generator", vec![std::process::id()]),
                ]
            }
        }
    }

    /// Prints the end of each process's log, to explain a failed run.
    pub(crate) fn show_logs(&self) {
        let dir = match self {
            Running::Pixmill { stack, .. } => stack.data_dir(),
            Running::Peer { dir, .. } => dir.clone(),
        };
        let Ok(entries) = std::fs::read_dir(&dir) else {
            return;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.extension().is_some_and(|e| e == "log") {
                let text = std::fs::read_to_string(&path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                eprintln!("bench: --- {} (last lines)", path.display());
                for line in &lines[lines.len().saturating_sub(15)..] {
                    eprintln!("{line}");
                }
            }
        }
    }

    pub(crate) async fn stop(self) -> anyhow::Result<()> {
        match self {
            Running::Pixmill { gateway, stack } => {
                // The gateway goes first: one left running declares again the queues
                // the stack deletes, and they would stay on the broker.
                let killed = gateway.kill().await;
                stack.stop().await?;
                killed
            }
            Running::Peer { dir, .. } => {
                let status = tokio::process::Command::new(peer_script())
                    .arg("stop")
                    .env("PEER_DATA_DIR", &dir)
                    .status()
                    .await?;
                ensure!(status.success(), "bench/peer/run.sh stop failed");
                let _ = std::fs::remove_dir_all(&dir);
                Ok(())
            }
        }
    }
}

fn pid_file(dir: &Path, name: &str) -> Option<u32> {
    std::fs::read_to_string(dir.join(name))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn peer_script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../bench/peer/run.sh")
}

/// Whether the peer can run here: `make bench` installs it into var/bench-venv.
pub fn peer_available() -> bool {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../var/bench-venv/bin/celery")
        .exists()
}

pub(crate) async fn start_pixmill(
    load: &Load,
    env: &[(&str, &str)],
) -> anyhow::Result<(Running, String)> {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir)?;
    let common = common(&format!("bench-{}", Uuid::new_v4().simple()), &dir);
    let port = free_port()?;
    // Logging as shipped: a line per job at info, to a file.
    let gateway = GatewayProcess::start_with(&common, port, env).await?;
    let mut stack = Stack::workers_only(common.clone())?;
    for i in 0..load.workers {
        stack.spawn_worker_process_with(&format!("bench-w{i}"), load.slots, env)?;
    }
    let layout = format!(
        "RabbitMQ (quorum queues), one gateway process (SQLite, blob folder), {} worker \
         process(es) × {} slot(s)",
        load.workers, load.slots
    );
    Ok((
        Running::Pixmill {
            gateway,
            stack: Box::new(stack),
        },
        layout,
    ))
}

async fn start_peer() -> anyhow::Result<(Running, String)> {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir)?;
    let port = free_port()?;
    let redis = free_port()?;
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let status = tokio::process::Command::new(peer_script())
        .arg("start")
        .env("PEER_PORT", port.to_string())
        .env("PEER_DATA_DIR", &dir)
        .env("PEER_AMQP_URL", pixmill_tests::amqp_url())
        .env(
            "PEER_QUEUE",
            format!("bench-peer-{}", Uuid::new_v4().simple()),
        )
        .env("PEER_REDIS_PORT", redis.to_string())
        .env("PEER_CONCURRENCY", cores.to_string())
        .status()
        .await?;
    ensure!(
        status.success(),
        "bench/peer/run.sh start failed (logs in {})",
        dir.display()
    );
    let layout = format!(
        "RabbitMQ (a durable classic queue, persistent messages, publisher confirms, late \
         acks), Redis as the result backend, gunicorn gthread ({cores} processes × 16 \
         threads) running Flask, Celery prefork × {cores}"
    );
    let client = Client::new(&format!("http://127.0.0.1:{port}"));
    Ok((Running::Peer { client, dir }, layout))
}

/// Puts `name` through the phases. `photos` are (name, bytes); `ops` the mixed
/// workload's query strings; `resize` the lone-job phase's.
pub async fn run(
    name: &'static str,
    load: &Load,
    photos: &[(String, Vec<u8>)],
    ops: &[&'static str],
    resize: &'static str,
) -> anyhow::Result<System> {
    let (system, layout) = match name {
        "pixmill" => start_pixmill(load, &[]).await?,
        _ => start_peer().await?,
    };
    let result = phases(name, layout, &system, load, photos, ops, resize).await;
    if result.is_err() {
        system.show_logs();
    }
    system.stop().await?;
    result
}

/// [`run`] for pixmill with extra environment for its gateway and worker processes.
pub async fn run_pixmill_with(
    name: &'static str,
    env: &[(&str, &str)],
    load: &Load,
    photos: &[(String, Vec<u8>)],
    ops: &[&'static str],
    resize: &'static str,
) -> anyhow::Result<System> {
    let (system, layout) = start_pixmill(load, env).await?;
    let result = phases(name, layout, &system, load, photos, ops, resize).await;
    if result.is_err() {
        system.show_logs();
    }
    system.stop().await?;
    result
}

async fn phases(
    name: &'static str,
    layout: String,
    system: &Running,
    load: &Load,
    photos: &[(String, Vec<u8>)],
    ops: &[&'static str],
    resize: &'static str,
) -> anyhow::Result<System> {
    let client = Arc::new(system.client());
    let retried_before = RETRIED_GETS.load(Ordering::Relaxed);
    // Every (photo, op) pair once, in turn: the in-process mix's weights, so the engine's
    // ceiling and the end-to-end figures describe the same work when the job count is a
    // multiple of the pairs (`BENCH_JOBS`' default is).
    let mixed: Arc<Vec<(Vec<u8>, &'static str)>> = Arc::new(
        photos
            .iter()
            .flat_map(|(_, b)| ops.iter().map(move |q| (b.clone(), *q)))
            .collect(),
    );
    let resizes: Arc<Vec<(Vec<u8>, &'static str)>> =
        Arc::new(photos.iter().map(|(_, b)| (b.clone(), resize)).collect());

    // Warm-up: every worker connected, every photo and op seen once.
    eprintln!("bench: {name}: warming up");
    closed_loop(&client, &mixed, 8, mixed.len()).await?;
    closed_loop(&client, &resizes, 1, resizes.len()).await?;

    eprintln!(
        "bench: {name}: one client, {} resize jobs",
        load.latency_jobs
    );
    let lone = closed_loop(&client, &resizes, 1, load.latency_jobs).await?;
    let mut totals: Vec<f64> = lone.iter().map(|t| t.total).collect();
    let mut work: Vec<f64> = lone.iter().map(|t| t.processing).collect();
    let mut added: Vec<f64> = lone.iter().map(|t| t.total - t.processing).collect();
    let mut submits: Vec<f64> = lone.iter().map(|t| t.submit).collect();
    let mut between: Vec<f64> = lone
        .iter()
        .map(|t| t.total - t.submit - t.download - t.processing)
        .collect();
    let mut downloads: Vec<f64> = lone.iter().map(|t| t.download).collect();
    let lone = Lone {
        total: (
            percentile(&mut totals, 0.50),
            percentile(&mut totals, 0.99),
            percentile(&mut totals, 1.0),
        ),
        work: percentile(&mut work, 0.50),
        stalls: added.iter().filter(|&&a| a >= 40.0).count(),
        added: (
            percentile(&mut added, 0.50),
            percentile(&mut added, 0.99),
            percentile(&mut added, 1.0),
        ),
        parts: (
            percentile(&mut submits, 0.50),
            percentile(&mut between, 0.50),
            percentile(&mut downloads, 0.50),
        ),
    };

    let mut phases = Vec::new();
    for &clients in &load.clients {
        eprintln!("bench: {name}: {clients} clients, {} jobs", load.jobs);
        let groups = system.groups();
        let before = procfs::cpu_snapshot(&groups);
        let started = Instant::now();
        let timed = closed_loop(&client, &mixed, clients, load.jobs).await?;
        let wall = started.elapsed().as_secs_f64();
        let after = procfs::cpu_snapshot(&groups);
        let mut totals: Vec<f64> = timed.iter().map(|t| t.total).collect();
        phases.push(Phase {
            clients,
            jobs: load.jobs,
            jobs_per_sec: load.jobs as f64 / wall,
            latency: (
                percentile(&mut totals, 0.50),
                percentile(&mut totals, 0.95),
                percentile(&mut totals, 0.99),
            ),
            cpu: procfs::shares(&before, &after),
            cpu_ms_per_job: procfs::ms_per(&before, &after, load.jobs),
        });
    }
    let measured: Vec<_> = system
        .groups()
        .into_iter()
        .filter(|(g, _)| *g != "load generator")
        .collect();
    let sum = |read: fn(u32) -> u64| -> Vec<(&'static str, u64)> {
        measured
            .iter()
            .map(|(g, pids)| (*g, pids.iter().map(|&p| read(p)).sum()))
            .collect()
    };
    let (peak_kib, file_kib) = (sum(procfs::peak_rss_kib), sum(procfs::file_rss_kib));
    Ok(System {
        name,
        layout,
        lone,
        lone_jobs: load.latency_jobs,
        phases,
        peak_kib,
        file_kib,
        retried_gets: RETRIED_GETS.load(Ordering::Relaxed) - retried_before,
    })
}

/// `clients` tasks share `jobs` jobs, each running its jobs one after another.
async fn closed_loop(
    client: &Arc<Client>,
    work: &Arc<Vec<(Vec<u8>, &'static str)>>,
    clients: usize,
    jobs: usize,
) -> anyhow::Result<Vec<Timed>> {
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
    while let Some(result) = tasks.join_next().await {
        timed.extend(result??);
    }
    ensure!(
        timed.len() == jobs,
        "{} of {jobs} jobs finished",
        timed.len()
    );
    Ok(timed)
}

async fn one_job(client: &Client, body: &[u8], query: &str) -> anyhow::Result<Timed> {
    let started = Instant::now();
    let id = submit(client, body, query).await?;
    let submit = ms(started);
    let job = wait_done(client, &id).await?;
    let done = Instant::now();
    let result = get_once_more(client, &format!("/v1/jobs/{id}/result")).await?;
    let (total, download) = (ms(started), ms(done));
    ensure!(result.status == 200, "result of {id}: {}", result.status);
    let (w, h) = (
        job["result"]["width"].as_u64(),
        job["result"]["height"].as_u64(),
    );
    // The header's size, not a full decode: the load generator shares the machine, and
    // its CPU is not the system's.
    let decoded = image::ImageReader::new(std::io::Cursor::new(&result.body))
        .with_guessed_format()?
        .into_dimensions()
        .map(|(w, h)| (u64::from(w), u64::from(h)))
        .with_context(|| format!("result of {id} is not an image"))?;
    ensure!(
        (Some(decoded.0), Some(decoded.1)) == (w, h),
        "job {id}: result is {decoded:?}, the record says {w:?}×{h:?}"
    );
    Ok(Timed {
        total,
        processing: job["result"]["processing_ms"].as_f64().unwrap_or(f64::NAN),
        submit,
        download,
    })
}

/// Submits one raw upload and long-polls it until it succeeds: its id and record. A job
/// that fails, or is not done within two minutes, is an error.
pub(crate) async fn submit_and_wait(
    client: &Client,
    body: &[u8],
    query: &str,
) -> anyhow::Result<(String, serde_json::Value)> {
    let id = submit(client, body, query).await?;
    let job = wait_done(client, &id).await?;
    Ok((id, job))
}

/// Submits one raw upload: the new job's id.
async fn submit(client: &Client, body: &[u8], query: &str) -> anyhow::Result<String> {
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
    Ok(id)
}

/// Long-polls job `id` until it succeeds: its record. A job that fails, or is not done
/// within two minutes, is an error.
async fn wait_done(client: &Client, id: &str) -> anyhow::Result<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(120);
    let job = loop {
        let job = get_once_more(client, &format!("/v1/jobs/{id}?wait=10"))
            .await?
            .json();
        let state = job["state"].as_str().unwrap_or_default();
        if matches!(state, "succeeded" | "failed" | "cancelled") {
            break job;
        }
        ensure!(Instant::now() < deadline, "job {id} still {state}");
    };
    ensure!(job["state"] == "succeeded", "job {id} ended {job}");
    Ok(job)
}

/// A GET, sent once more if the connection fails under it, as HTTP clients do for
/// idempotent requests on a reused connection; each retry is counted and reported.
pub(crate) async fn get_once_more(
    client: &Client,
    path: &str,
) -> anyhow::Result<pixmill_tests::Reply> {
    match client.get(path).await {
        Ok(reply) => Ok(reply),
        Err(e) => {
            RETRIED_GETS.fetch_add(1, Ordering::Relaxed);
            eprintln!("bench: GET {path} failed ({e:#}); sending it again");
            client.get(path).await
        }
    }
}

/// The `p` quantile (0–1) by nearest rank.
pub fn percentile(values: &mut [f64], p: f64) -> f64 {
    values.sort_by(f64::total_cmp);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((values.len() as f64 - 1.0) * p).round() as usize;
    values[rank]
}

//! One upload, many outputs: the srcset case (JPEG q80 at widths 320, 640 and 1280, and
//! a WebP copy at 640) as one job with four variants, against the same four outputs as
//! four jobs of their own. Both go through the same running pixmill under the same
//! closed-loop clients, in alternating rounds; each upload's outputs are all
//! downloaded. The figure is CPU per upload (gateway, workers and broker) and wall time,
//! variants ÷ separate jobs. Target: at most 0.5×.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Instant,
};

use anyhow::ensure;
use pixmill_tests::Client;

use crate::{
    e2e::{self, Load},
    procfs,
};

/// The four outputs, as (name, width, format).
const OUTPUTS: [(&str, u32, &str); 4] = [
    ("w320", 320, "jpeg"),
    ("w640", 640, "jpeg"),
    ("w1280", 1280, "jpeg"),
    ("w640-webp", 640, "webp"),
];

/// One way of making the outputs, measured over its rounds.
pub struct Mode {
    pub name: &'static str,
    /// Jobs submitted per upload's worth of outputs (4 or 1).
    pub jobs_per_upload: usize,
    pub uploads: usize,
    pub wall_s: f64,
    /// CPU ms per upload's four outputs, by group (load generator excluded).
    pub cpu_ms: Vec<(&'static str, f64)>,
}

impl Mode {
    /// Gateway + workers + broker CPU ms per upload.
    pub fn system_ms(&self) -> f64 {
        self.cpu_ms
            .iter()
            .filter(|(g, _)| matches!(*g, "gateway" | "workers" | "broker"))
            .map(|(_, ms)| ms)
            .sum()
    }

    pub fn wall_ms_per_upload(&self) -> f64 {
        self.wall_s * 1000.0 / self.uploads as f64
    }
}

/// The query of a job with the four variants.
fn variants_query() -> String {
    let variants: Vec<String> = OUTPUTS
        .iter()
        .map(|(name, width, format)| {
            format!(
                r#"{{"name":"{name}","steps":[{{"op":"resize","width":{width}}}],"format":"{format}","quality":80}}"#
            )
        })
        .collect();
    let json = format!("[{}]", variants.join(","));
    let encoded: String = json
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("variants={encoded}")
}

/// Runs `rounds` alternating rounds of each mode over `photos`, `clients` at a time.
pub async fn run(
    load: &Load,
    photos: &[(String, Vec<u8>)],
    rounds: usize,
) -> anyhow::Result<(Mode, Mode)> {
    let (system, _) = e2e::start_pixmill(load, &[]).await?;
    let result = measure(&system, load, photos, rounds).await;
    if result.is_err() {
        system.show_logs();
    }
    system.stop().await?;
    result
}

async fn measure(
    system: &e2e::Running,
    load: &Load,
    photos: &[(String, Vec<u8>)],
    rounds: usize,
) -> anyhow::Result<(Mode, Mode)> {
    let client = Arc::new(system.client());
    let clients = load.clients.first().copied().unwrap_or(8);
    let separate: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
        photos
            .iter()
            .flat_map(|(_, bytes)| {
                OUTPUTS.iter().map(move |(_, width, format)| {
                    (
                        bytes.clone(),
                        format!("op=resize&width={width}&format={format}&quality=80"),
                    )
                })
            })
            .collect(),
    );
    let query = variants_query();
    let together: Arc<Vec<(Vec<u8>, String)>> = Arc::new(
        photos
            .iter()
            .map(|(_, bytes)| (bytes.clone(), query.clone()))
            .collect(),
    );
    eprintln!("bench: variants: warming up");
    closed_loop(&client, &separate, clients, separate.len()).await?;
    closed_loop(&client, &together, clients, together.len()).await?;
    let mut modes = [
        ("four jobs", OUTPUTS.len(), separate, 0.0, Vec::new()),
        ("one job, four variants", 1, together, 0.0, Vec::new()),
    ];
    for round in 1..=rounds {
        for (name, _, work, wall, cpu) in &mut modes {
            eprintln!("bench: variants: round {round} of {rounds}: {name}");
            let groups = system.groups();
            let before = procfs::cpu_snapshot(&groups);
            let started = Instant::now();
            closed_loop(&client, work, clients, work.len()).await?;
            *wall += started.elapsed().as_secs_f64();
            let after = procfs::cpu_snapshot(&groups);
            cpu.push((before, after));
        }
    }
    let uploads = photos.len() * rounds;
    let [separate, together] = modes.map(|(name, jobs_per_upload, _, wall_s, cpu)| {
        let mut sums: Vec<(&'static str, f64)> = Vec::new();
        for (before, after) in &cpu {
            for (group, ms) in procfs::ms_per(before, after, photos.len()) {
                match sums.iter_mut().find(|(g, _)| *g == group) {
                    Some((_, total)) => *total += ms / rounds as f64,
                    None => sums.push((group, ms / rounds as f64)),
                }
            }
        }
        Mode {
            name,
            jobs_per_upload,
            uploads,
            wall_s,
            cpu_ms: sums,
        }
    });
    Ok((separate, together))
}

/// `clients` tasks share the work items, each submitting, waiting and downloading
/// every output of its item before taking the next.
async fn closed_loop(
    client: &Arc<Client>,
    work: &Arc<Vec<(Vec<u8>, String)>>,
    clients: usize,
    jobs: usize,
) -> anyhow::Result<()> {
    let next = Arc::new(AtomicUsize::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (client, work, next) = (client.clone(), work.clone(), next.clone());
        tasks.spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                if n >= jobs {
                    return anyhow::Ok(());
                }
                let (body, query) = &work[n % work.len()];
                one_upload(&client, body, query).await?;
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    Ok(())
}

/// Submits one job, waits for it, and downloads its result or every output.
async fn one_upload(client: &Client, body: &[u8], query: &str) -> anyhow::Result<()> {
    let (id, job) = e2e::submit_and_wait(client, body, query).await?;
    let urls: Vec<String> = match job["result"]["outputs"].as_array() {
        Some(outputs) => outputs
            .iter()
            .filter_map(|o| o["url"].as_str().map(str::to_string))
            .collect(),
        None => vec![format!("/v1/jobs/{id}/result")],
    };
    for url in urls {
        let result = e2e::get_once_more(client, &url).await?;
        ensure!(result.status == 200, "{url}: {}", result.status);
    }
    Ok(())
}

/// The report's section.
pub fn render(separate: &Mode, together: &Mode, clients: usize) -> String {
    let mut out = String::new();
    out.push_str("## One upload, many outputs (variants)\n\n");
    out.push_str(&format!(
        "Widths 320, 640 and 1280 in JPEG q80 and a WebP copy at 640, of each medium \
         photo: {} uploads' worth each way, {clients} closed-loop clients, alternating \
         rounds on one running pixmill. Every output is downloaded.\n\n",
        separate.uploads
    ));
    out.push_str("| | jobs per upload | wall ms per upload | CPU ms per upload: gateway + workers + broker | of which workers |\n|---|---|---|---|---|\n");
    let workers = |m: &Mode| {
        m.cpu_ms
            .iter()
            .find(|(g, _)| *g == "workers")
            .map_or(f64::NAN, |(_, ms)| *ms)
    };
    for mode in [separate, together] {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} | {:.1} |\n",
            mode.name,
            mode.jobs_per_upload,
            mode.wall_ms_per_upload(),
            mode.system_ms(),
            workers(mode)
        ));
    }
    let cpu_ratio = together.system_ms() / separate.system_ms();
    let wall_ratio = together.wall_ms_per_upload() / separate.wall_ms_per_upload();
    let met = |ratio: f64| if ratio <= 0.5 { "met" } else { "missed" };
    out.push_str(&format!(
        "\nVariants ÷ four jobs: CPU **{cpu_ratio:.2}×**, wall time **{wall_ratio:.2}×** \
         (target ≤ 0.5×: CPU {}, wall {}).\n",
        met(cpu_ratio),
        met(wall_ratio)
    ));
    out
}

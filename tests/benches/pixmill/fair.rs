//! Fair share, measured: tenant A submits a backlog at once (1,500 jobs by default), then
//! tenant B submits one job every 2 s, 10 times. B's latency from submit to `succeeded`
//! is measured with fair share on and with it off (first come, first served), on the
//! same stack shape in the same run: a gateway process and 2 worker processes.

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use pixmill_gateway::{
    auth::{self, ApiScope, KeyRequest},
    store::{self, DatabaseUrl},
};
use pixmill_tests::{Client, GatewayProcess, Stack, common, free_port, temp_dir};
use tokio::task::JoinSet;
use uuid::Uuid;

use crate::{e2e::percentile, engine::ms};

/// How the scenario is shaped.
pub struct Shape {
    /// A's jobs, submitted at once.
    pub backlog: usize,
    /// B's jobs, one every `every`.
    pub lone: usize,
    pub every: Duration,
    pub workers: usize,
    pub slots: u16,
}

/// One mode's figures.
pub struct Outcome {
    /// `on (window 16)` or `off`.
    pub mode: String,
    /// B's jobs, submit to `succeeded`, ms, in submit order.
    pub lone_ms: Vec<f64>,
    /// From A's first submit until its last job ended, s.
    pub backlog_s: f64,
    /// How long A's submits took, s.
    pub submit_s: f64,
}

impl Outcome {
    pub fn p(&self, q: f64) -> f64 {
        percentile(&mut self.lone_ms.clone(), q)
    }
}

/// Runs the scenario with fair share on, then off.
pub async fn run(shape: &Shape, photo: &[u8], query: &str) -> anyhow::Result<Vec<Outcome>> {
    let mut out = Vec::new();
    for fair in [true, false] {
        eprintln!(
            "bench: fair share {}: {} jobs of tenant A, then {} of tenant B",
            if fair { "on" } else { "off" },
            shape.backlog,
            shape.lone
        );
        out.push(one(shape, fair, photo, query).await?);
    }
    Ok(out)
}

async fn one(shape: &Shape, fair: bool, photo: &[u8], query: &str) -> anyhow::Result<Outcome> {
    let dir = temp_dir();
    std::fs::create_dir_all(&dir)?;
    let common = common(&format!("bench-fair-{}", Uuid::new_v4().simple()), &dir);
    // The keys first, in the file the gateway opens.
    let db = DatabaseUrl::Sqlite(dir.join("pixmill.db"));
    let keys = store::open_for_keys(&db).await?;
    let key = async |tenant: &str| -> anyhow::Result<String> {
        let request = KeyRequest {
            tenant: tenant.into(),
            scopes: ApiScope::parse_list("jobs:write,jobs:read").map_err(anyhow::Error::msg)?,
            ttl: None,
            label: Some("bench".into()),
        };
        Ok(auth::issue(&keys, request, pixmill_shared::now_ms())
            .await?
            .0)
    };
    let (a_key, b_key) = (key("tenant-a").await?, key("tenant-b").await?);
    drop(keys);
    let port = free_port()?;
    let window = pixmill_gateway::fair_share::DEFAULT_WINDOW.to_string();
    let gateway = GatewayProcess::start_with(
        &common,
        port,
        &[
            ("PIXMILL_AUTH", "required"),
            ("PIXMILL_FAIR_SHARE", if fair { "on" } else { "off" }),
            ("PIXMILL_TENANT_MAX_INFLIGHT", "100000"),
        ],
    )
    .await?;
    let mut stack = Stack::workers_only(common.clone())?;
    for i in 0..shape.workers {
        stack.spawn_worker_process_with(&format!("bench-fair-w{i}"), shape.slots, &[])?;
    }
    let a = gateway.client.with_key(&a_key);
    let b = gateway.client.with_key(&b_key);

    // A's backlog, at once: 32 connections submitting until all are in.
    let started = Instant::now();
    let mut submits = JoinSet::new();
    let per = shape.backlog.div_ceil(32);
    for c in 0..32 {
        let n = per.min(shape.backlog.saturating_sub(c * per));
        let (a, photo, query) = (a.clone(), photo.to_vec(), query.to_string());
        submits.spawn(async move {
            let mut ids = Vec::with_capacity(n);
            for _ in 0..n {
                ids.push(submit(&a, &photo, &query).await?);
            }
            anyhow::Ok(ids)
        });
    }
    let mut backlog = Vec::with_capacity(shape.backlog);
    while let Some(ids) = submits.join_next().await {
        backlog.extend(ids??);
    }
    let submit_s = started.elapsed().as_secs_f64();

    // B: one job every `every`, each timed from its submit to `succeeded`.
    let mut lone = JoinSet::new();
    for i in 0..shape.lone {
        let (b, photo, query) = (b.clone(), photo.to_vec(), query.to_string());
        lone.spawn(async move {
            let t = Instant::now();
            let id = submit(&b, &photo, &query).await?;
            wait(&b, &id).await?;
            anyhow::Ok((i, ms(t)))
        });
        tokio::time::sleep(shape.every).await;
    }
    let mut lone_ms = vec![0.0; shape.lone];
    while let Some(timed) = lone.join_next().await {
        let (i, t) = timed??;
        lone_ms[i] = t;
    }
    for id in &backlog {
        wait(&a, id).await?;
    }
    let backlog_s = started.elapsed().as_secs_f64();
    // The gateway first, so it does not declare the queues the stack deletes again.
    gateway.kill().await?;
    stack.stop().await?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Outcome {
        mode: if fair {
            format!("on (window {window})")
        } else {
            "off".into()
        },
        lone_ms,
        backlog_s,
        submit_s,
    })
}

async fn submit(client: &Client, photo: &[u8], query: &str) -> anyhow::Result<String> {
    let reply = client.submit_raw(photo.to_vec(), query).await?;
    ensure!(
        reply.status == 202,
        "submit answered {}: {}",
        reply.status,
        String::from_utf8_lossy(&reply.body)
    );
    Ok(reply.json()["id"]
        .as_str()
        .context("202 without an id")?
        .to_string())
}

/// Long-polls until the job succeeded (a failure is an error).
async fn wait(client: &Client, id: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let job = client.get(&format!("/v1/jobs/{id}?wait=30")).await?.json();
        match job["state"].as_str().unwrap_or_default() {
            "succeeded" => return Ok(()),
            "failed" | "cancelled" | "expired" => anyhow::bail!("job {id} ended {job}"),
            state => ensure!(Instant::now() < deadline, "job {id} still {state}"),
        }
    }
}

/// The report's section: B's latencies side by side, and what fair share costs A.
pub fn render(shape: &Shape, query: &str, outcomes: &[Outcome]) -> String {
    use std::fmt::Write;
    let mut o = String::new();
    let _ = writeln!(o, "## Fair share: a lone tenant behind a backlog\n");
    let _ = writeln!(
        o,
        "Tenant A submits {} jobs at once (`{query}`, 32 connections); then tenant B submits \
         one job every {} s, {} times. {} worker process(es) × {} slot(s), one gateway \
         (SQLite, blob folder). B's latency is submit to `succeeded`. Both modes ran in this \
         process, one after the other. The target is B's p95 ≤ 2 s with fair share on.\n",
        shape.backlog,
        shape.every.as_secs_f64(),
        shape.lone,
        shape.workers,
        shape.slots
    );
    let _ = write!(o, "| B's job |");
    for out in outcomes {
        let _ = write!(o, " fair share {}, ms |", out.mode);
    }
    let _ = writeln!(o);
    let _ = writeln!(o, "|---:|{}", "---:|".repeat(outcomes.len()));
    for i in 0..shape.lone {
        let _ = write!(o, "| {} |", i + 1);
        for out in outcomes {
            let _ = write!(
                o,
                " {:.0} |",
                out.lone_ms.get(i).copied().unwrap_or(f64::NAN)
            );
        }
        let _ = writeln!(o);
    }
    for (name, q) in [("p50", 0.5), ("p95", 0.95)] {
        let _ = write!(o, "| **{name}** |");
        for out in outcomes {
            let _ = write!(o, " **{:.0}** |", out.p(q));
        }
        let _ = writeln!(o);
    }
    let _ = write!(o, "| A's {} submits took, s |", shape.backlog);
    for out in outcomes {
        let _ = write!(o, " {:.1} |", out.submit_s);
    }
    let _ = writeln!(o);
    let _ = write!(o, "| A's backlog done after, s |");
    for out in outcomes {
        let _ = write!(o, " {:.1} |", out.backlog_s);
    }
    let _ = writeln!(o);
    if let [on, off, ..] = outcomes {
        let p95 = on.p(0.95);
        let _ = writeln!(
            o,
            "\nB's p95 with fair share on: {p95:.0} ms, target ≤ 2000 ms: **{}**. Off, the \
             same jobs' p95 is {:.0} ms, {:.0}× as long. A's backlog took {:.2}× as long \
             with fair share on as off.",
            if p95 <= 2000.0 { "met" } else { "missed" },
            off.p(0.95),
            off.p(0.95) / p95,
            on.backlog_s / off.backlog_s
        );
    }
    o
}

//! `make run` as operators use it: deploy/run-local.sh supervising real gateway and
//! worker processes. A worker killed with `kill -9` mid-load comes back by itself and
//! nothing is lost; `make scale` (deploy/scale.sh) adds and removes a worker mid-load,
//! and the metrics show the second worker taking jobs.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use pixmill_tests::{Client, TIMEOUT, binary, free_port, photos::photo, temp_dir};
use tokio::process::{Child, Command};
use uuid::Uuid;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `make run` in its own folders, on its own port and queue prefix.
struct LocalRun {
    child: Child,
    client: Client,
    base: String,
    run_dir: PathBuf,
    data_dir: PathBuf,
    log: PathBuf,
    /// Its queue prefix, which names its broker users (`PREFIX-gateway`, `PREFIX-worker`).
    prefix: String,
}

impl LocalRun {
    async fn start(workers: u16, metrics_base: u16) -> Self {
        let data_dir = temp_dir();
        let run_dir = data_dir.join("run");
        std::fs::create_dir_all(&data_dir).expect("data dir");
        let log = data_dir.join("run-local.log");
        let port = free_port().expect("port");
        let prefix = format!("runlocal-{}", Uuid::new_v4().simple());
        let bins = binary("pixmill-gateway").expect("binaries");
        let child = Command::new("bash")
            .arg(root().join("deploy/run-local.sh"))
            .current_dir(root())
            .env("WORKERS", workers.to_string())
            .env("PIXMILL_BIN_DIR", bins.parent().expect("bin dir"))
            .env("PIXMILL_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("PIXMILL_DATA_DIR", &data_dir)
            .env("PIXMILL_RUN_DIR", &run_dir)
            .env("PIXMILL_METRICS_PORT_BASE", metrics_base.to_string())
            .env("PIXMILL_QUEUE_PREFIX", &prefix)
            .env("PIXMILL_QUEUE_DEPTH_SECS", "0.5")
            .env("RUST_LOG", "info,lapin=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .kill_on_drop(true)
            .spawn()
            .expect("run-local.sh");
        let base = format!("http://127.0.0.1:{port}");
        let client = Client::new(&base);
        let run = Self {
            child,
            client,
            base,
            run_dir,
            data_dir,
            log,
            prefix,
        };
        run.wait_for("the gateway", |r| async move {
            r.client.get("/healthz").await.map(|r| r.status).ok() == Some(200)
        })
        .await;
        run.wait_for("the workers", move |r| async move {
            r.workers().len() == workers as usize
        })
        .await;
        run
    }

    /// The supervisor's `workers` file: name, pid, state per slot.
    fn workers(&self) -> Vec<(String, String, String)> {
        std::fs::read_to_string(self.run_dir.join("workers"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| {
                let mut parts = l.split_whitespace().map(str::to_string);
                Some((parts.next()?, parts.next()?, parts.next()?))
            })
            .collect()
    }

    async fn wait_for<'a, F, Fut>(&'a self, what: &str, check: F)
    where
        F: Fn(&'a Self) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while !check(self).await {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}; log:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn gateway_metric(&self, family: &str) -> Option<f64> {
        let text = reqwest::get(format!("{}/metrics", self.base))
            .await
            .ok()?
            .text()
            .await
            .ok()?;
        metric(&text, family, "")
    }

    /// `make scale WORKERS=n`, through the script behind it.
    async fn scale(&self, n: u16) {
        let status = Command::new("bash")
            .arg(root().join("deploy/scale.sh"))
            .arg(n.to_string())
            .env("PIXMILL_RUN_DIR", &self.run_dir)
            .status()
            .await
            .expect("scale.sh");
        assert!(status.success(), "scale.sh {n} failed");
    }

    /// Ctrl-C: SIGTERM to run-local.sh, which stops everything it started.
    async fn stop(mut self) -> String {
        if let Some(pid) = self.child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        let exit = tokio::time::timeout(TIMEOUT, self.child.wait()).await;
        assert!(
            matches!(exit, Ok(Ok(status)) if status.success()),
            "run-local.sh did not stop cleanly: {exit:?}"
        );
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&self.data_dir);
        // The broker users ensure-broker.sh made for this prefix, and its stamp.
        let _ = Command::new("bash")
            .arg(root().join("deploy/rabbitmq/users.sh"))
            .arg("remove")
            .env("PIXMILL_QUEUE_PREFIX", &self.prefix)
            .status()
            .await;
        let _ = std::fs::remove_file(
            root().join(format!("var/rabbitmq-5672/users-{}.sha256", self.prefix)),
        );
        log
    }
}

fn metric(text: &str, family: &str, labels: &str) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find(|l| {
            l.starts_with(family) && l[family.len()..].starts_with(['{', ' ']) && l.contains(labels)
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Submits `jobs` jobs from `clients` clients, each waiting for its job before the
/// next; returns every job record, or the first request that failed. Counts finished
/// jobs in `done` as it goes.
async fn load(
    client: &Client,
    jobs: usize,
    clients: usize,
    done: Arc<AtomicUsize>,
) -> Result<Vec<serde_json::Value>, String> {
    let image = photo("china.jpg");
    let tasks = (0..clients).map(|c| {
        let (client, image, done) = (client.clone(), image.clone(), done.clone());
        tokio::spawn(async move {
            let mut records = Vec::new();
            for _ in (c..jobs).step_by(clients) {
                let id = client
                    .submit_ok(
                        &image,
                        &[("op", "resize"), ("width", "160"), ("height", "100")],
                    )
                    .await
                    .map_err(|e| format!("a submit was not answered 202: {e:#}"))?;
                let record = client
                    .wait_terminal(&id)
                    .await
                    .map_err(|e| format!("job {id} did not end: {e:#}"))?;
                records.push(record);
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, String>(records)
        })
    });
    let mut all = Vec::new();
    for task in futures_util::future::join_all(tasks).await {
        all.extend(task.map_err(|e| format!("client task: {e}"))??);
    }
    Ok(all)
}

impl LocalRun {
    /// What the supervisor and its processes have logged so far.
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The load's records; a failed load fails the test with the processes' log.
    async fn finish(
        &self,
        load: tokio::task::JoinHandle<Result<Vec<serde_json::Value>, String>>,
        limit: Duration,
    ) -> Vec<serde_json::Value> {
        match tokio::time::timeout(limit, load).await {
            Ok(Ok(Ok(records))) => records,
            Ok(Ok(Err(e))) => panic!("the load failed: {e}\nlog:\n{}", self.log_text()),
            Ok(Err(e)) => panic!("the load task: {e}"),
            Err(_) => panic!(
                "the load did not finish in {limit:?}; log:\n{}",
                self.log_text()
            ),
        }
    }
}

async fn wait_until(run: &LocalRun, what: &str, done: &AtomicUsize, at_least: usize) {
    let deadline = tokio::time::Instant::now() + TIMEOUT * 3;
    while done.load(Ordering::Relaxed) < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the load stalled before {what}; log:\n{}",
            run.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_load_comes_back_and_nothing_is_lost() {
    const JOBS: usize = 1500;
    let run = LocalRun::start(2, 0).await;
    let done = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (client, done) = (run.client.clone(), done.clone());
        async move { load(&client, JOBS, 8, done).await }
    });
    wait_until(&run, "the kill", &done, JOBS / 3).await;
    let (name, pid, _) = run.workers().into_iter().nth(1).expect("worker-2");
    let killed = Command::new("kill")
        .arg("-9")
        .arg(&pid)
        .status()
        .await
        .expect("kill");
    assert!(killed.success());
    println!(
        "run-local: killed {name} (pid {pid}) after {} jobs",
        done.load(Ordering::Relaxed)
    );
    run.wait_for("the worker to come back", |r| {
        let pid = pid.clone();
        let name = name.clone();
        async move {
            r.workers()
                .iter()
                .any(|(n, p, s)| *n == name && *p != pid && s == "running")
        }
    })
    .await;
    let records = run.finish(load, TIMEOUT * 10).await;
    let succeeded = records.iter().filter(|r| r["state"] == "succeeded").count();
    let log = run.stop().await;
    println!("run-local: {succeeded} of {JOBS} jobs succeeded after a kill -9");
    assert_eq!(succeeded, JOBS, "every job succeeds");
    assert!(
        log.contains(&format!("{name} (pid {pid}) died (killed by signal 9)")),
        "the supervisor logs the death: {log}"
    );
    assert!(log.contains(&format!("{name} restarted")), "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn make_scale_adds_and_removes_a_worker_mid_load() {
    const JOBS: usize = 400;
    // Three consecutive free ports for the workers' metrics: base + 1 and base + 2.
    let base = loop {
        let p = free_port().expect("port");
        if p < 65_000 && (1..=2).all(|i| std::net::TcpListener::bind(("127.0.0.1", p + i)).is_ok())
        {
            break p;
        }
    };
    let run = LocalRun::start(1, base).await;
    run.wait_for("one consumer", |r| async move {
        r.gateway_metric("pixmill_queue_consumers").await == Some(1.0)
    })
    .await;
    let done = Arc::new(AtomicUsize::new(0));
    let load = tokio::spawn({
        let (client, done) = (run.client.clone(), done.clone());
        async move { load(&client, JOBS, 6, done).await }
    });

    wait_until(&run, "scaling up", &done, 50).await;
    run.scale(2).await;
    run.wait_for("two consumers", |r| async move {
        r.gateway_metric("pixmill_queue_consumers").await == Some(2.0)
    })
    .await;
    println!(
        "run-local: scaled to 2 after {} jobs; consumers = 2",
        done.load(Ordering::Relaxed)
    );
    // The second worker takes jobs: its own counter moves.
    let worker2 = format!("http://127.0.0.1:{}/metrics", base + 2);
    let mut taken = 0.0;
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    while taken < 5.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "worker-2 took no jobs"
        );
        if let Ok(r) = reqwest::get(&worker2).await
            && let Ok(text) = r.text().await
        {
            taken =
                metric(&text, "pixmill_worker_jobs_total", r#"worker="worker-2""#).unwrap_or(0.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("run-local: worker-2's metrics show {taken} jobs");

    let at = done.load(Ordering::Relaxed);
    wait_until(&run, "scaling down", &done, (at + 60).min(JOBS - 40)).await;
    run.scale(1).await;
    run.wait_for("one consumer again", |r| async move {
        r.gateway_metric("pixmill_queue_consumers").await == Some(1.0)
    })
    .await;
    println!(
        "run-local: scaled back to 1 after {} jobs; consumers = 1",
        done.load(Ordering::Relaxed)
    );

    let records = run.finish(load, TIMEOUT * 5).await;
    let succeeded = records.iter().filter(|r| r["state"] == "succeeded").count();
    let by_worker2 = records.iter().filter(|r| r["worker"] == "worker-2").count();
    let log = run.stop().await;
    println!("run-local: {succeeded} of {JOBS} succeeded; worker-2 ran {by_worker2}");
    assert_eq!(succeeded, JOBS, "nothing lost while scaling");
    assert!(by_worker2 > 0, "the job records show worker-2 too");
    assert!(log.contains("scaling 1 → 2 workers"), "{log}");
}

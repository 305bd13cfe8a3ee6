//! Test harness: starts the real pixmill stack against a real RabbitMQ.
//!
//! Every stack gets its own queue prefix and data folder, so tests run in parallel on
//! one broker without seeing each other's messages. The broker comes from
//! `PIXMILL_TEST_AMQP_URL` (default: the local node `make test` ensures).
//!
//! # Layout
//!
//! - [`Stack`]: gateway (in-process, port 0) plus workers (in-process or real processes).
//! - [`Client`]: typed helpers over the REST API (in `client.rs`).
//! - [`photos`]: the real photographs the tests use, and image measurements.
//! - [`broker`]: RabbitMQ nodes a test owns (for tests that restart the broker).
//! - [`backends`]: PostgreSQL and S3 for the scale-out tests.
//! - [`hostile`]: small files that are expensive to decode.

pub mod backends;
pub mod broker;
mod client;
pub mod hostile;
pub mod photos;

pub use client::{Client, Reply};

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};
use pixmill_gateway::store::DatabaseUrl;
use pixmill_gateway::{Application, Settings};
use pixmill_shared::{BlobUrl, Limits, Topology, config::Common};
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// Longest any single wait in a test may take before it fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The broker tests use.
pub fn amqp_url() -> String {
    std::env::var("PIXMILL_TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10".into())
}

/// Settings shared by every part of one stack.
pub fn common(prefix: &str, data_dir: &Path) -> Common {
    Common {
        amqp_url: amqp_url(),
        amqp_ca_file: None,
        data_dir: data_dir.to_path_buf(),
        blob_url: BlobUrl::Folder(data_dir.join("blobs")),
        topology: Topology::with_prefix(prefix),
        limits: Limits::default(),
    }
}

/// A running stack. Call [`Stack::stop`] at the end of a test to clean up its queues.
pub struct Stack {
    /// Base URL of the gateway, e.g. `http://127.0.0.1:41234`.
    pub base: String,
    /// Typed REST helpers.
    pub client: Client,
    /// Shared by the gateway and workers of this stack.
    pub common: Common,
    /// The in-process gateway's jobs service (stores, publisher), when there is one.
    pub jobs: Option<pixmill_gateway::jobs::Jobs>,
    gateway_stop: CancellationToken,
    /// None for a stack whose gateway runs as a separate process.
    gateway: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// The settings the first gateway was built with, for [`Stack::add_gateway`].
    settings: Option<Settings>,
    /// Further in-process gateways on the same stores and broker.
    more_gateways: Vec<tokio::task::JoinHandle<anyhow::Result<()>>>,
    in_process: Vec<(
        CancellationToken,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
    processes: Vec<Child>,
}

impl Stack {
    /// Starts a gateway with no workers.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(common(
            &format!("test-{}", Uuid::new_v4().simple()),
            &temp_dir(),
        ))
        .await
    }

    /// Starts a gateway with the given settings and no workers.
    pub async fn start_with(common: Common) -> anyhow::Result<Self> {
        Self::start_configured(common, |_| {}).await
    }

    /// Starts a gateway whose settings `tweak` adjusts, and no workers.
    pub async fn start_configured(
        common: Common,
        tweak: impl FnOnce(&mut Settings),
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&common.data_dir)?;
        let mut settings = Settings {
            common: common.clone(),
            http_addr: "127.0.0.1:0".parse()?,
            auth: pixmill_gateway::auth::AuthMode::Open,
            database_url: DatabaseUrl::Sqlite(common.data_dir.join("pixmill.db")),
            result_redirect: None,
            management_url: pixmill_gateway::queue_depth::management_url_for(&common.amqp_url),
            queue_depth_every: Duration::from_millis(500),
            webhooks: pixmill_gateway::webhooks::WebhookSettings {
                secret: Some("test-webhook-secret".into()),
                // Tests that run a receiver list it with its port (`127.0.0.1:<port>`).
                allow: Vec::new(),
                timeout: Duration::from_secs(2),
                max_attempts: 8,
                ca_certs: Vec::new(),
            },
            link_keys: Default::default(),
            jwt: None,
            tenants: Default::default(),
            fair_share_window: Some(pixmill_gateway::fair_share::DEFAULT_WINDOW),
            max_upload_bytes: 25 * 1024 * 1024,
            publish_timeout: Duration::from_millis(1500),
            request_timeout: Duration::from_secs(60),
            upkeep: pixmill_gateway::maintenance::Upkeep {
                interval: Duration::from_secs(1),
                unconfirmed_after: Duration::from_secs(10),
                stale_after: Duration::from_secs(120),
                retention: Duration::from_secs(86_400),
            },
            bounds: Default::default(),
            ops: Default::default(),
        };
        tweak(&mut settings);
        let app = Application::build(settings.clone()).await?;
        let jobs = Some(app.jobs());
        let base = format!("http://127.0.0.1:{}", app.port());
        let gateway_stop = CancellationToken::new();
        let gateway = Some(tokio::spawn(
            app.run_until_stopped(gateway_stop.clone().cancelled_owned()),
        ));
        Ok(Self {
            client: Client::new(&base),
            base,
            common,
            jobs,
            gateway_stop,
            gateway,
            settings: Some(settings),
            more_gateways: Vec::new(),
            in_process: Vec::new(),
            processes: Vec::new(),
        })
    }

    /// A stack with no in-process gateway: workers only (see [`GatewayProcess`]).
    pub fn workers_only(common: Common) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&common.data_dir)?;
        Ok(Self {
            base: String::new(),
            client: Client::new("http://127.0.0.1:9"),
            common,
            jobs: None,
            gateway_stop: CancellationToken::new(),
            gateway: None,
            settings: None,
            more_gateways: Vec::new(),
            in_process: Vec::new(),
            processes: Vec::new(),
        })
    }

    /// Starts another gateway with the first one's settings (its own port) and returns
    /// a client for it. Needs a store that several gateways can share (PostgreSQL).
    pub async fn add_gateway(&mut self) -> anyhow::Result<Client> {
        let settings = self
            .settings
            .clone()
            .context("this stack has no gateway settings")?;
        let app = Application::build(settings).await?;
        let client = Client::new(&format!("http://127.0.0.1:{}", app.port()));
        self.more_gateways.push(tokio::spawn(
            app.run_until_stopped(self.gateway_stop.clone().cancelled_owned()),
        ));
        Ok(client)
    }

    /// The stack's data folder (its processes' logs are there).
    pub fn data_dir(&self) -> PathBuf {
        self.common.data_dir.clone()
    }

    /// The blob folder of a stack on the default (folder) blob store.
    pub fn blob_dir(&self) -> PathBuf {
        match &self.common.blob_url {
            BlobUrl::Folder(path) => path.clone(),
            BlobUrl::S3 { .. } => panic!("this stack keeps its blobs in S3, not a folder"),
        }
    }

    /// The in-process gateway's jobs service.
    pub fn jobs(&self) -> &pixmill_gateway::jobs::Jobs {
        self.jobs
            .as_ref()
            .expect("this stack has no in-process gateway")
    }

    /// Adds an in-process worker (its own broker connections, like a separate process).
    pub fn add_worker(&mut self, name: &str, concurrency: u16) {
        self.add_worker_with(name, concurrency, |_| {});
    }

    /// Adds an in-process worker whose settings `tweak` adjusts.
    pub fn add_worker_with(
        &mut self,
        name: &str,
        concurrency: u16,
        tweak: impl FnOnce(&mut pixmill_workers::Settings),
    ) {
        let mut settings = pixmill_workers::Settings {
            common: self.common.clone(),
            name: name.into(),
            concurrency,
            job_timeout: Duration::from_secs(30),
            max_retries: 5,
            retry_base: Duration::from_millis(100),
            start_report_after: Duration::from_millis(50),
            shutdown_grace: Duration::from_secs(10),
            crash_limit: pixmill_workers::config::DEFAULT_CRASH_LIMIT,
            metrics_addr: "127.0.0.1:0".parse().expect("address"),
            slot_buffers: pixmill_workers::config::DEFAULT_SLOT_BUFFERS_MB * 1024 * 1024,
        };
        tweak(&mut settings);
        let stop = CancellationToken::new();
        let handle = tokio::spawn(pixmill_workers::run(settings, stop.clone()));
        self.in_process.push((stop, handle));
    }

    /// Starts a real `pixmill-worker` process (built by `cargo build --bins`).
    pub fn spawn_worker_process(&mut self, name: &str, concurrency: u16) -> anyhow::Result<()> {
        self.spawn_worker_process_with(name, concurrency, &[])
    }

    /// Like [`Stack::spawn_worker_process`], with extra environment variables.
    pub fn spawn_worker_process_with(
        &mut self,
        name: &str,
        concurrency: u16,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let child = self.worker_command(name, concurrency, env)?.spawn()?;
        self.processes.push(child);
        Ok(())
    }

    /// Starts a worker process that has no data folder at all: its working directory
    /// is `dir` (a fresh, empty folder) and it is given only the broker and blob store
    /// settings, as on a machine of its own.
    pub fn spawn_remote_worker(&mut self, name: &str, dir: &Path) -> anyhow::Result<()> {
        let t = &self.common.topology;
        let log = std::fs::File::create(self.common.data_dir.join(format!("{name}.log")))?;
        let child = Command::new(worker_binary()?)
            .current_dir(dir)
            .env_remove("PIXMILL_DATA_DIR")
            .env("PIXMILL_AMQP_URL", &self.common.amqp_url)
            .env("PIXMILL_BLOB_URL", self.common.blob_url.to_string())
            .env("PIXMILL_QUEUE_PREFIX", t.jobs.trim_end_matches(".jobs"))
            .env("PIXMILL_DELIVERY_LIMIT", t.delivery_limit.to_string())
            .env("PIXMILL_MAX_QUEUED", t.max_queued.to_string())
            .env("PIXMILL_WORKER_NAME", name)
            .env("PIXMILL_WORKER_CONCURRENCY", "1")
            .env("RUST_LOG", "info,lapin=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        self.processes.push(child);
        Ok(())
    }

    /// Process ids of the worker processes that are running.
    pub fn worker_pids(&self) -> Vec<u32> {
        self.processes.iter().filter_map(Child::id).collect()
    }

    /// Number of worker processes started so far (running or not).
    pub fn worker_processes(&self) -> usize {
        self.processes.len()
    }

    /// `kill -9` the worker process at `index`.
    pub async fn kill_worker(&mut self, index: usize) -> anyhow::Result<()> {
        let child = self.processes.get_mut(index).context("no such worker")?;
        child.start_kill()?;
        child.wait().await?;
        Ok(())
    }

    /// Replaces the worker process at `index` with a new one (same name and settings).
    pub fn respawn_worker(
        &mut self,
        index: usize,
        name: &str,
        concurrency: u16,
        env: &[(&str, &str)],
    ) -> anyhow::Result<()> {
        let child = self.worker_command(name, concurrency, env)?.spawn()?;
        if let Some(slot) = self.processes.get_mut(index) {
            *slot = child;
        }
        Ok(())
    }

    /// True when the worker process at `index` has exited.
    pub fn worker_exited(&mut self, index: usize) -> bool {
        self.processes
            .get_mut(index)
            .is_some_and(|c| matches!(c.try_wait(), Ok(Some(_))))
    }

    fn worker_command(
        &self,
        name: &str,
        concurrency: u16,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Command> {
        let bin = worker_binary()?;
        let t = &self.common.topology;
        // Appended to, so a respawned worker's log follows its predecessor's.
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(self.common.data_dir.join(format!("{name}.log")))?;
        let mut command = Command::new(&bin);
        command
            .env("PIXMILL_AMQP_URL", &self.common.amqp_url)
            .env("PIXMILL_DATA_DIR", &self.common.data_dir)
            .env("PIXMILL_BLOB_URL", self.common.blob_url.to_string())
            .env("PIXMILL_QUEUE_PREFIX", t.jobs.trim_end_matches(".jobs"))
            .env("PIXMILL_WORKER_NAME", name)
            .env("PIXMILL_WORKER_CONCURRENCY", concurrency.to_string())
            .env("PIXMILL_DELIVERY_LIMIT", t.delivery_limit.to_string())
            .env("PIXMILL_MAX_QUEUED", t.max_queued.to_string())
            .env("PIXMILL_RETRY_BASE_MS", "100")
            .env("RUST_LOG", "info,lapin=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true);
        Ok(command)
    }

    /// Stops every part and deletes this stack's queues, exchanges and data folder.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for (stop, _) in &self.in_process {
            stop.cancel();
        }
        for (_, handle) in self.in_process.drain(..) {
            tokio::time::timeout(TIMEOUT, handle).await???;
        }
        for child in &mut self.processes {
            let _ = child.start_kill();
            let _ = child.wait().await;
        }
        self.gateway_stop.cancel();
        if let Some(gateway) = self.gateway.take() {
            tokio::time::timeout(TIMEOUT, gateway).await???;
        }
        for gateway in self.more_gateways.drain(..) {
            tokio::time::timeout(TIMEOUT, gateway).await???;
        }
        let ops = self
            .settings
            .as_ref()
            .map(|s| s.ops.names())
            .unwrap_or_default();
        delete_topology(&self.common.amqp_url, &self.common.topology, &ops).await?;
        let _ = std::fs::remove_dir_all(&self.common.data_dir);
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // A test that failed before `stop` still must not leave workers running.
        for (stop, _) in &self.in_process {
            stop.cancel();
        }
        self.gateway_stop.cancel();
    }
}

/// A gateway running as its own process, so a test can `kill -9` it.
pub struct GatewayProcess {
    child: Child,
    /// Typed REST helpers for this gateway.
    pub client: Client,
}

impl GatewayProcess {
    /// Starts `pixmill-gateway` for `common` on `port` and waits until it answers.
    pub async fn start(common: &Common, port: u16) -> anyhow::Result<Self> {
        Self::start_with(common, port, &[("PIXMILL_SWEEP_INTERVAL_SECS", "1")]).await
    }

    /// Like [`GatewayProcess::start`], with extra environment variables.
    pub async fn start_with(
        common: &Common,
        port: u16,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let t = &common.topology;
        let log = std::fs::File::options()
            .create(true)
            .append(true)
            .open(common.data_dir.join("gateway.log"))?;
        let child = Command::new(binary("pixmill-gateway")?)
            .env("PIXMILL_AMQP_URL", &common.amqp_url)
            .env("PIXMILL_DATA_DIR", &common.data_dir)
            .env("PIXMILL_BLOB_URL", common.blob_url.to_string())
            .env("PIXMILL_QUEUE_PREFIX", t.jobs.trim_end_matches(".jobs"))
            .env("PIXMILL_DELIVERY_LIMIT", t.delivery_limit.to_string())
            .env("PIXMILL_MAX_QUEUED", t.max_queued.to_string())
            .env("PIXMILL_HTTP_ADDR", format!("127.0.0.1:{port}"))
            .env("RUST_LOG", "info,lapin=warn")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        let client = Client::new(&format!("http://127.0.0.1:{port}"));
        let deadline = tokio::time::Instant::now() + TIMEOUT;
        while client.get("/healthz").await.map(|r| r.status).ok() != Some(200) {
            if tokio::time::Instant::now() > deadline {
                bail!("the gateway did not come up on port {port}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Self { child, client })
    }

    /// The process id, for reading its resource use.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// `kill -9` the gateway.
    pub async fn kill(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// A port that was free a moment ago.
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Runs one of the examples' set-up scripts (`examples/setup.sh`: the Python examples'
/// virtualenv; `examples/setup-node.sh`: the Node worker's packages) and returns the
/// last line of its output: what it made (an interpreter, a folder).
pub fn examples_setup(script: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(script);
    let out = std::process::Command::new(&path)
        .output()
        .unwrap_or_else(|e| panic!("run examples/{script}: {e}"));
    assert!(
        out.status.success(),
        "examples/{script} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .last()
        .unwrap_or_else(|| panic!("examples/{script} printed nothing"))
        .to_string()
}

/// A fresh, unique data folder.
pub fn temp_dir() -> PathBuf {
    std::env::temp_dir().join(format!("pixmill-test-{}", Uuid::new_v4().simple()))
}

fn worker_binary() -> anyhow::Result<PathBuf> {
    binary("pixmill-worker")
}

/// A binary of this workspace, built by `cargo build --bins` next to the test binaries.
pub fn binary(name: &str) -> anyhow::Result<PathBuf> {
    // Integration tests run from target/<profile>/deps; the binaries sit one level up.
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test binary has no parent folder")?;
    let bin = dir.join(name);
    if !bin.exists() {
        bail!(
            "{} is missing: run `cargo build --bins` first (`make test` does)",
            bin.display()
        );
    }
    Ok(bin)
}

async fn delete_topology(url: &str, t: &Topology, ops: &[String]) -> anyhow::Result<()> {
    use lapin::options::{ExchangeDeleteOptions, QueueDeleteOptions};
    let conn = pixmill_shared::amqp::connect(url, "pixmill-test-cleanup").await?;
    let channel = conn.create_channel().await?;
    let op_queues: Vec<String> = ops.iter().map(|op| t.op_queue(op)).collect();
    for queue in [&t.jobs, &t.dead_queue, &t.replies, &t.retry]
        .into_iter()
        .chain(&op_queues)
    {
        channel
            .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
            .await?;
    }
    for exchange in [
        &t.jobs,
        &t.dead_exchange,
        &t.reply_exchange,
        &t.retry_exchange,
        &t.forward_exchange,
    ] {
        channel
            .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
            .await?;
    }
    conn.close(200, "done".into()).await?;
    Ok(())
}

//! RabbitMQ nodes owned by a test: each on its own port and data folder, started and
//! stopped through the project's own `deploy/rabbitmq/ensure-broker.sh`. A test that
//! restarts its broker never touches the machine's shared one.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context, bail};

/// A broker node this test started; stopped and deleted on drop.
#[derive(Debug)]
pub struct TestBroker {
    /// AMQP port.
    pub port: u16,
    /// URL for the gateway and workers, with 2 s heartbeats so a dead peer is noticed fast.
    pub url: String,
    /// Node data and logs.
    dir: PathBuf,
    /// The folder of the TLS listener's certificate and key, if it has one.
    tls_dir: Option<PathBuf>,
}

impl TestBroker {
    /// Starts a fresh node on `port` (stopping any leftover node there first).
    pub fn start(port: u16) -> anyhow::Result<Self> {
        let dir = crate::temp_dir().join("rabbitmq");
        let broker = Self {
            port,
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f?heartbeat=2"),
            dir,
            tls_dir: None,
        };
        broker.script("stop")?;
        broker.script("start")?;
        Ok(broker)
    }

    /// Like [`TestBroker::start`], with an amqps listener on 127.0.0.1 at `port - 1`
    /// using the certificate and key in `tls_dir` (deploy/tls/make-test-ca.sh's files).
    pub fn start_tls(port: u16, tls_dir: &Path) -> anyhow::Result<Self> {
        let broker = Self {
            port,
            url: format!("amqp://guest:guest@127.0.0.1:{port}/%2f?heartbeat=2"),
            dir: crate::temp_dir().join("rabbitmq"),
            tls_dir: Some(tls_dir.to_path_buf()),
        };
        broker.script("stop")?;
        broker.script("start")?;
        Ok(broker)
    }

    /// The `amqps://` URL of the TLS listener, reached as `host`.
    pub fn tls_url(&self, host: &str) -> String {
        format!(
            "amqps://guest:guest@{host}:{}/%2f?heartbeat=2",
            self.port - 1
        )
    }

    /// Stops the node (a clean shutdown: clients see their connections closed).
    pub fn stop(&self) -> anyhow::Result<()> {
        self.script("stop")
    }

    /// Starts the node again with the same data: durable queues and messages survive.
    pub fn start_again(&self) -> anyhow::Result<()> {
        self.script("start")
    }

    /// Runs `rabbitmqctl` against this node, e.g. `ctl(&["set_vm_memory_high_watermark", "0"])`.
    pub fn ctl(&self, args: &[&str]) -> anyhow::Result<()> {
        let ctl = ["/usr/lib/rabbitmq/bin/rabbitmqctl", "/usr/sbin/rabbitmqctl"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .context("rabbitmqctl is not installed")?;
        let status = Command::new(ctl)
            .arg("-n")
            .arg(format!("pixmill-{}@localhost", self.port))
            .arg("-q")
            .args(args)
            .status()?;
        if !status.success() {
            bail!("rabbitmqctl {args:?} failed");
        }
        Ok(())
    }

    fn script(&self, verb: &str) -> anyhow::Result<()> {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/rabbitmq/ensure-broker.sh");
        let mut command = Command::new("bash");
        if let Some(tls_dir) = &self.tls_dir {
            command.env("PIXMILL_BROKER_TLS_DIR", tls_dir);
        }
        let status = command
            .arg(&script)
            .arg(verb)
            .env("PIXMILL_AMQP_URL", &self.url)
            // These brokers come and go within one test, which connects as guest.
            .env("PIXMILL_BROKER_USERS", "skip")
            .env("PIXMILL_BROKER_DIR", &self.dir)
            .env("PIXMILL_BROKER_PLUGINS", "none")
            .status()
            .with_context(|| format!("running {}", script.display()))?;
        if !status.success() {
            bail!("ensure-broker.sh {verb} failed for port {}", self.port);
        }
        Ok(())
    }
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        let _ = self.script("stop");
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

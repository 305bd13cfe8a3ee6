//! Worker settings, from `PIXMILL_*` environment variables.

use std::time::Duration;

use pixmill_shared::config::{Common, ConfigError, env_checked, env_or};

/// `PIXMILL_CRASH_LIMIT`'s default. The first run of a job leaves no mark (that would
/// cost a blob write per job), so a poisonous job takes down at most this many workers
/// plus one.
pub const DEFAULT_CRASH_LIMIT: u32 = 3;

/// Everything a worker needs. Defaults work on one machine next to `make run`'s broker.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker, data folder, topology and limits, shared with the gateway.
    pub common: Common,
    /// `PIXMILL_WORKER_NAME`: shown in replies and logs, so operators see who ran what.
    pub name: String,
    /// `PIXMILL_WORKER_CONCURRENCY`: jobs in flight at once, and the consumer's prefetch.
    /// Each job uses one core, so the default is the number of CPUs.
    pub concurrency: u16,
    /// `PIXMILL_JOB_TIMEOUT_SECS` (fractions allowed): a job running longer fails with
    /// code `timeout`.
    pub job_timeout: Duration,
    /// `PIXMILL_MAX_RETRIES`: transient failures retried before `retries_exhausted`.
    pub max_retries: u32,
    /// `PIXMILL_RETRY_BASE_MS`: first back-off; each retry doubles it (capped at 60 s),
    /// with ±50 % jitter so retries from many jobs do not arrive together.
    pub retry_base: Duration,
    /// `PIXMILL_START_REPORT_MS`: a job still running after this long is reported as
    /// `running`; one that ends sooner goes from `queued` straight to its end state.
    /// 0 reports every start.
    pub start_report_after: Duration,
    /// `PIXMILL_SHUTDOWN_GRACE_SECS`: how long SIGTERM waits for jobs in hand.
    pub shutdown_grace: Duration,
    /// `PIXMILL_CRASH_LIMIT`: a job that workers died running this many times (counted by
    /// the run marks they left, never by broker redeliveries) fails `worker_crashed`
    /// instead of being run again.
    pub crash_limit: u32,
    /// `PIXMILL_METRICS_ADDR`: where `/metrics` and `/healthz` listen (default
    /// `127.0.0.1:0`: a free port, logged at start-up).
    pub metrics_addr: std::net::SocketAddr,
    /// `PIXMILL_SLOT_BUFFERS_MB`: MiB of freed image buffers each slot keeps for its
    /// next job (see [`crate::buffers`]); 0 frees every buffer at once.
    pub slot_buffers: usize,
}

/// `PIXMILL_SLOT_BUFFERS_MB`'s default: a 1600 px photo's decode, intermediate and
/// output buffers, with room to spare; a 12 MP photo's do not fit and are freed.
pub const DEFAULT_SLOT_BUFFERS_MB: usize = 32;

impl Settings {
    /// Reads and validates the settings.
    pub fn from_env() -> Result<Self, ConfigError> {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        let default_name = format!("{}-{}", hostname(), std::process::id());
        Ok(Self {
            common: Common::from_env()?,
            name: env_or("PIXMILL_WORKER_NAME", default_name)?,
            concurrency: env_checked(
                "PIXMILL_WORKER_CONCURRENCY",
                u16::try_from(cpus).unwrap_or(u16::MAX),
                |v| {
                    if (1..=256).contains(v) {
                        Ok(())
                    } else {
                        Err("must be between 1 and 256".into())
                    }
                },
            )?,
            job_timeout: Duration::from_secs_f64(env_checked(
                "PIXMILL_JOB_TIMEOUT_SECS",
                30f64,
                |v| {
                    if (0.001..=86_400.0).contains(v) {
                        Ok(())
                    } else {
                        Err("must be between 0.001 and 86400 seconds".into())
                    }
                },
            )?),
            max_retries: env_checked("PIXMILL_MAX_RETRIES", 5u32, |v| {
                if *v <= 100 {
                    Ok(())
                } else {
                    Err("must be at most 100".into())
                }
            })?,
            retry_base: Duration::from_millis(env_checked("PIXMILL_RETRY_BASE_MS", 500u64, |v| {
                if (1..=60_000).contains(v) {
                    Ok(())
                } else {
                    Err("must be between 1 and 60000".into())
                }
            })?),
            start_report_after: Duration::from_millis(env_checked(
                "PIXMILL_START_REPORT_MS",
                50u64,
                |v| {
                    if *v <= 3_600_000 {
                        Ok(())
                    } else {
                        Err("must be at most 3600000 ms".into())
                    }
                },
            )?),
            shutdown_grace: Duration::from_secs(env_or("PIXMILL_SHUTDOWN_GRACE_SECS", 30u64)?),
            crash_limit: env_checked("PIXMILL_CRASH_LIMIT", DEFAULT_CRASH_LIMIT, |v| {
                if (1..=100).contains(v) {
                    Ok(())
                } else {
                    Err("must be between 1 and 100".into())
                }
            })?,
            metrics_addr: env_or(
                "PIXMILL_METRICS_ADDR",
                std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
            )?,
            slot_buffers: env_checked("PIXMILL_SLOT_BUFFERS_MB", DEFAULT_SLOT_BUFFERS_MB, |v| {
                if *v <= 4096 {
                    Ok(())
                } else {
                    Err("must be at most 4096 MiB".into())
                }
            })? * 1024
                * 1024,
        })
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "worker".into())
}

//! How deep the jobs queue is, read from the broker every few seconds.
//!
//! A passive declare over AMQP gives ready messages and the consumer count as they are
//! now; the management HTTP API (`PIXMILL_MANAGEMENT_URL`) adds unacked messages (from
//! statistics the broker refreshes every `collect_statistics_interval`, 1 s in the
//! project's broker configuration). Without the
//! management API, unacked is reported as unknown.
//! `PIXMILL_QUEUE_DEPTH_SECS` sets how often (default 5 s).
//! The figures feed the `pixmill_queue_*` gauges and `GET /v1/stats`.

use std::{
    sync::{Arc, RwLock},
    time::Duration,
};

use metrics::gauge;
use pixmill_shared::metrics::names;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::publisher::Publisher;

/// The jobs queue as last seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct QueueDepth {
    /// Messages waiting for a worker.
    pub ready: u64,
    /// Messages a worker holds and has not acked yet (None when only AMQP answered).
    pub unacked: Option<u64>,
    /// Consumers: one per connected worker process.
    pub consumers: u64,
    /// Where the figures came from: `amqp+management`, `amqp` (no unacked count), or
    /// `management` (AMQP failed).
    pub source: &'static str,
    /// When they were read (ms since the epoch).
    pub at_ms: i64,
}

/// The broker's figures for one custom op's queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpQueue {
    pub op: String,
    pub queue: String,
    /// None until the first reading.
    pub ready: Option<u64>,
    pub consumers: Option<u64>,
}

/// The latest reading, shared with the stats route: the jobs queue, and the queue of
/// each custom op.
#[derive(Debug, Clone, Default)]
pub struct Latest(Arc<RwLock<Option<QueueDepth>>>, Arc<RwLock<Vec<OpQueue>>>);

impl Latest {
    /// The custom ops' queues as last read (each op listed, unread ones without figures).
    pub fn ops(&self) -> Vec<OpQueue> {
        self.1
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set_ops(&self, ops: Vec<OpQueue>) {
        *self
            .1
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = ops;
    }

    /// The last reading, if any.
    pub fn get(&self) -> Option<QueueDepth> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    fn set(&self, depth: QueueDepth) {
        *self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(depth);
    }
}

/// The part of the management API's queue object we read.
#[derive(Debug, Deserialize)]
struct ManagementQueue {
    #[serde(default)]
    messages_ready: u64,
    #[serde(default)]
    messages_unacknowledged: u64,
    #[serde(default)]
    consumers: u64,
}

/// The management API's base URL for an AMQP URL: same host and credentials, port
/// 15672 for the default 5672, otherwise AMQP port + 10000 (the convention of this
/// project's broker scripts; 15671 for amqps' 5671). An `amqps://` broker's API is read
/// over https, never plain http.
pub fn management_url_for(amqp_url: &str) -> Option<String> {
    // Of a cluster's list, the first node (set PIXMILL_MANAGEMENT_URL to choose).
    let first = pixmill_shared::amqp::urls(amqp_url).first().copied()?;
    let (scheme, rest) = first.split_once("://")?;
    let (http, default_port) = if scheme == "amqps" {
        ("https", 5671)
    } else {
        ("http", 5672)
    };
    let (creds, hostpart) = match rest.split_once('@') {
        Some((creds, host)) => (Some(creds), host),
        None => (None, rest),
    };
    let hostport = hostpart.split(['/', '?']).next()?;
    let (host, port) = match hostport.rsplit_once(':') {
        Some((host, port)) => (host, port.parse::<u32>().ok()?),
        None => (hostport, default_port),
    };
    let mgmt = if port == 5672 { 15672 } else { port + 10_000 };
    if mgmt > 65_535 {
        return None;
    }
    Some(match creds {
        Some(creds) => format!("{http}://{creds}@{host}:{mgmt}/api"),
        None => format!("{http}://guest:guest@{host}:{mgmt}/api"),
    })
}

/// The vhost of an AMQP URL as the management API's path wants it (percent-encoded;
/// the default `/` is `%2F`).
pub fn vhost_of(amqp_url: &str) -> String {
    let first = pixmill_shared::amqp::urls(amqp_url)
        .first()
        .copied()
        .unwrap_or_default();
    let rest = first.split_once("://").map_or(first, |(_, r)| r);
    let path = rest.split_once('/').map_or("", |(_, p)| p);
    let vhost = path.split('?').next().unwrap_or_default();
    if vhost.is_empty() || vhost.eq_ignore_ascii_case("%2f") {
        "%2F".into()
    } else {
        vhost.into()
    }
}

/// Reads the queue depth every few seconds until `shutdown`: the jobs queue's, and the
/// ready and consumer counts of each custom op's queue (`op_queues`: op, queue).
#[allow(clippy::too_many_arguments)]
pub async fn run(
    every: Duration,
    management: Option<String>,
    vhost: String,
    publisher: Arc<Publisher>,
    queue: String,
    op_queues: Vec<(String, String)>,
    latest: Latest,
    shutdown: CancellationToken,
) {
    // The broker's own CA (PIXMILL_AMQP_CA_FILE) is trusted for its https API too.
    let mut builder = reqwest::Client::builder().timeout(Duration::from_secs(3));
    if let Some(pem) = pixmill_shared::amqp::tls_config().cert_chain {
        match reqwest::Certificate::from_pem_bundle(pem.as_bytes()) {
            Ok(certs) => {
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            Err(e) => tracing::warn!(error = %e, "the broker CA file does not parse for https"),
        }
    }
    let http = builder.build().unwrap_or_default();
    let mut last_source = "";
    loop {
        // Ready and consumers over AMQP are current to the moment; the management API
        // adds unacked, from statistics the broker refreshes every few seconds.
        let (amqp, management) = tokio::join!(
            publisher.queue_counts(&queue),
            read_management(&http, management.as_deref(), &vhost, &queue)
        );
        let depth = match (amqp, management) {
            (Ok((ready, consumers)), management) => Some(QueueDepth {
                ready,
                unacked: management.as_ref().and_then(|m| m.unacked),
                consumers,
                source: if management.is_some() {
                    "amqp+management"
                } else {
                    "amqp"
                },
                at_ms: pixmill_shared::now_ms(),
            }),
            (Err(_), Some(management)) => Some(management),
            (Err(e), None) => {
                debug!(error = %e, "queue depth unavailable");
                None
            }
        };
        if let Some(depth) = depth {
            if depth.source != last_source {
                info!(source = depth.source, "reading the jobs queue depth");
                last_source = depth.source;
            }
            gauge!(names::QUEUE_READY, "queue" => queue.clone()).set(depth.ready as f64);
            gauge!(names::QUEUE_CONSUMERS, "queue" => queue.clone()).set(depth.consumers as f64);
            if let Some(unacked) = depth.unacked {
                gauge!(names::QUEUE_UNACKED, "queue" => queue.clone()).set(unacked as f64);
            }
            latest.set(depth);
        }
        let mut ops = Vec::with_capacity(op_queues.len());
        for (op, op_queue) in &op_queues {
            let counts = publisher.queue_counts(op_queue).await.ok();
            if let Some((ready, consumers)) = counts {
                gauge!(names::QUEUE_READY, "queue" => op_queue.clone()).set(ready as f64);
                gauge!(names::QUEUE_CONSUMERS, "queue" => op_queue.clone()).set(consumers as f64);
            }
            ops.push(OpQueue {
                op: op.clone(),
                queue: op_queue.clone(),
                ready: counts.map(|c| c.0),
                consumers: counts.map(|c| c.1),
            });
        }
        latest.set_ops(ops);
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(every) => {}
        }
    }
}

async fn read_management(
    http: &reqwest::Client,
    base: Option<&str>,
    vhost: &str,
    queue: &str,
) -> Option<QueueDepth> {
    let base = base?;
    let url = format!("{}/queues/{vhost}/{queue}", base.trim_end_matches('/'));
    let response = http.get(&url).send().await.ok()?;
    if !response.status().is_success() {
        return None;
    }
    let q: ManagementQueue = response.json().await.ok()?;
    Some(QueueDepth {
        ready: q.messages_ready,
        unacked: Some(q.messages_unacknowledged),
        consumers: q.consumers,
        source: "management",
        at_ms: pixmill_shared::now_ms(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_management_url_follows_the_amqp_url() {
        assert_eq!(
            management_url_for("amqp://guest:guest@127.0.0.1:5672/%2f?heartbeat=10").as_deref(),
            Some("http://guest:guest@127.0.0.1:15672/api")
        );
        assert_eq!(
            management_url_for("amqp://u:p@rabbit:5701/%2f").as_deref(),
            Some("http://u:p@rabbit:15701/api")
        );
        assert_eq!(
            management_url_for("amqp://rabbit").as_deref(),
            Some("http://guest:guest@rabbit:15672/api")
        );
        assert_eq!(management_url_for("amqp://h:60000/"), None);
        assert_eq!(
            management_url_for("amqps://u:p@broker.example/%2f").as_deref(),
            Some("https://u:p@broker.example:15671/api")
        );
        assert_eq!(
            management_url_for("amqps://u:p@h:5671/%2f,amqp://u:p@g:5672").as_deref(),
            Some("https://u:p@h:15671/api")
        );
        assert_eq!(vhost_of("amqp://u:p@h:5672/%2f?heartbeat=10"), "%2F");
        assert_eq!(vhost_of("amqp://h:5672"), "%2F");
        assert_eq!(vhost_of("amqp://h:5672/images?x=1"), "images");
    }
}

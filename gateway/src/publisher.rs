//! Publishing jobs with confirms, over a long-lived channel.
//!
//! Connections come from deadpool pools, one per broker node of `PIXMILL_AMQP_URL`,
//! whose recycle check drops a dead connection and dials a new one (with the TLS
//! settings of [`amqp::connect_url`] for `amqps://`); on top of them the publisher keeps one confirm-mode channel and replaces it
//! whenever it breaks, trying the node it last used first and then the others in
//! order. No channel is opened per request.

use std::time::Duration;

use deadpool::Runtime;
use deadpool::managed::{self, Metrics, PoolConfig, RecycleError, RecycleResult, Timeouts};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties, types::FieldTable};
use pixmill_shared::{JobEvent, JobRequest, Topology, amqp, amqp::PublishError};
use tokio::sync::Mutex;
use tracing::warn;

/// Dials and recycles the publish connections of one broker node.
#[derive(Debug)]
struct Manager {
    url: String,
}

impl managed::Manager for Manager {
    type Type = Connection;
    type Error = lapin::Error;

    async fn create(&self) -> Result<Connection, lapin::Error> {
        let props =
            ConnectionProperties::default().with_connection_name("pixmill-gateway-publish".into());
        amqp::connect_url(&self.url, props).await
    }

    async fn recycle(&self, conn: &mut Connection, _: &Metrics) -> RecycleResult<lapin::Error> {
        if conn.status().connected() {
            Ok(())
        } else {
            Err(RecycleError::message(format!(
                "the connection is no longer up: {:?}",
                conn.status()
            )))
        }
    }
}

type Pool = managed::Pool<Manager>;

/// Publishes jobs to the jobs exchange.
pub struct Publisher {
    /// One connection pool per broker node, in the order configured.
    pools: Vec<(String, Pool)>,
    /// The current confirm-mode channel and the index of its node, if one is open.
    channel: Mutex<Option<(Channel, usize)>>,
    /// The node the last channel was opened on (for `/readyz`).
    node: std::sync::Mutex<Option<String>>,
    /// Index of the node to try first.
    preferred: std::sync::atomic::AtomicUsize,
    topology: Topology,
    /// The custom ops, whose queues are declared with the topology.
    ops: Vec<String>,
    /// Budget for one whole publish: getting a channel, sending, and the broker's confirm.
    timeout: Duration,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topology", &self.topology)
            .finish_non_exhaustive()
    }
}

impl Publisher {
    /// Creates a publisher; nothing connects until the first publish or readiness check.
    pub fn new(list: &str, topology: Topology, timeout: Duration) -> anyhow::Result<Self> {
        let mut pools = Vec::new();
        for url in amqp::urls(list) {
            let manager = Manager {
                url: amqp::tuned(url),
            };
            let pool = Pool::builder(manager)
                .config(PoolConfig {
                    max_size: 2,
                    timeouts: Timeouts {
                        wait: Some(timeout),
                        create: Some(timeout),
                        recycle: Some(timeout),
                    },
                    ..PoolConfig::default()
                })
                .runtime(Runtime::Tokio1)
                .build()?;
            pools.push((amqp::node_of(url), pool));
        }
        anyhow::ensure!(!pools.is_empty(), "no broker URL given");
        Ok(Self {
            pools,
            channel: Mutex::new(None),
            node: std::sync::Mutex::new(None),
            preferred: std::sync::atomic::AtomicUsize::new(0),
            topology,
            ops: Vec::new(),
            timeout,
        })
    }

    /// Opens the publishing channel now, which declares the topology and the custom
    /// ops' queues.
    pub async fn declare(&self) -> Result<(), PublishError> {
        self.channel().await.map(|_| ())
    }

    /// Declares the queues of these custom ops along with the topology, so a job whose
    /// first step is one of them has a queue to go to.
    #[must_use]
    pub fn with_ops(mut self, ops: Vec<String>) -> Self {
        self.ops = ops;
        self
    }

    /// The names this publisher publishes to.
    pub fn topology(&self) -> &Topology {
        &self.topology
    }

    /// Publishes `job` (persistent, mandatory, `reply_to` and `correlation_id` set) and
    /// returns once the broker has confirmed it, or fails within the timeout.
    pub async fn publish(&self, job: &JobRequest) -> Result<(), PublishError> {
        let id = job.id.to_string();
        let properties = BasicProperties::default()
            .with_message_id(id.as_str().into())
            .with_correlation_id(id.as_str().into())
            .with_reply_to(self.topology.replies.as_str().into())
            .with_headers(pixmill_shared::contract::stamp(FieldTable::default()))
            .with_timestamp(u64::try_from(pixmill_shared::now_ms() / 1000).unwrap_or(0));
        // The queue of the step at the cursor's owner: the jobs queue for a built-in op,
        // the op's own queue for a custom one.
        let queue = self.topology.queue_for(job.steps.get(job.cursor));
        let started = tokio::time::Instant::now();
        let mut pause = Duration::from_millis(50);
        loop {
            let channel = tokio::time::timeout(self.timeout, self.channel())
                .await
                .map_err(|_| PublishError::Timeout(self.timeout))??;
            let left = self
                .timeout
                .saturating_sub(started.elapsed())
                .max(Duration::from_millis(50));
            let result = amqp::publish_json(
                &channel,
                &self.topology.jobs,
                &queue,
                job,
                properties.clone(),
                left,
            )
            .await;
            match result {
                Err(PublishError::Amqp(_) | PublishError::Timeout(_)) => {
                    // The channel may be dead or blocked; the next publish starts afresh.
                    self.discard(&channel).await;
                    return result;
                }
                // A quorum queue also refuses while it has no leader (just declared, or
                // a node failing over), not only when full: try again while the budget
                // lasts. A duplicate of a message that did land is harmless.
                Err(PublishError::Nacked) if started.elapsed() + pause < self.timeout => {
                    tokio::time::sleep(pause).await;
                    pause *= 2;
                }
                // Still refused: full (429), or still without a leader (503)?
                Err(PublishError::Nacked) => return Err(self.why_refused().await),
                other => return other,
            }
        }
    }

    /// Tells a full queue from one that refuses for want of a leader: only a queue
    /// holding `max_queued` jobs is full; anything else (including no answer) is the
    /// broker failing over, which a client should retry shortly.
    async fn why_refused(&self) -> PublishError {
        match self.queue_counts(&self.topology.jobs).await {
            Ok((ready, _)) if ready >= u64::from(self.topology.max_queued) => PublishError::Nacked,
            _ => PublishError::NoLeader,
        }
    }

    /// Publishes a change notice on the events exchange (see [`crate::events`]).
    pub async fn publish_notice(
        &self,
        event: &JobEvent,
        origin: &str,
        timeout: Duration,
    ) -> Result<(), PublishError> {
        let channel = tokio::time::timeout(timeout, self.channel())
            .await
            .map_err(|_| PublishError::Timeout(timeout))??;
        let result = amqp::publish_notice(
            &channel,
            &self.topology.events,
            &event.routing_key(),
            event,
            origin,
            timeout,
        )
        .await;
        if matches!(result, Err(PublishError::Amqp(_))) {
            self.discard(&channel).await;
        }
        result
    }

    /// Ready messages and consumers of `queue`, by a passive declare on a short-lived
    /// channel (a missing queue closes that channel, never the publishing one).
    pub async fn queue_counts(&self, queue: &str) -> Result<(u64, u64), PublishError> {
        let work = async {
            let index = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
            let (_, pool) = &self.pools[index % self.pools.len()];
            let connection = pool.get().await.map_err(|e| {
                PublishError::Amqp(lapin::Error::from(std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    format!("no connection to the broker: {e}"),
                )))
            })?;
            let channel = connection.create_channel().await?;
            let declared = channel
                .queue_declare(
                    queue.into(),
                    lapin::options::QueueDeclareOptions {
                        passive: true,
                        ..lapin::options::QueueDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            let _ = channel.close(200, "done".into()).await;
            Ok((
                u64::from(declared.message_count()),
                u64::from(declared.consumer_count()),
            ))
        };
        tokio::time::timeout(self.timeout, work)
            .await
            .map_err(|_| PublishError::Timeout(self.timeout))?
    }

    /// True when a channel to the broker can be had within the timeout.
    pub async fn ready(&self) -> bool {
        matches!(
            tokio::time::timeout(self.timeout, self.channel()).await,
            Ok(Ok(_))
        )
    }

    async fn channel(&self) -> Result<Channel, PublishError> {
        let mut current = self.channel.lock().await;
        if let Some((channel, _)) = current.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        let start = self.preferred.load(std::sync::atomic::Ordering::Relaxed);
        *current = None;
        let mut last_error = None;
        for offset in 0..self.pools.len() {
            let index = (start + offset) % self.pools.len();
            let (node, pool) = &self.pools[index];
            match self.open_on(pool).await {
                Ok(channel) => {
                    if offset > 0 {
                        warn!(%node, "publisher failed over to another broker node");
                    }
                    *self
                        .node
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(node.clone());
                    *current = Some((channel.clone(), index));
                    self.preferred
                        .store(index, std::sync::atomic::Ordering::Relaxed);
                    return Ok(channel);
                }
                Err(e) => {
                    warn!(%node, error = %e, "publisher cannot reach this broker node");
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or(PublishError::Timeout(self.timeout)))
    }

    /// A confirm-mode channel on a pooled connection, with the topology declared.
    async fn open_on(&self, pool: &Pool) -> Result<Channel, PublishError> {
        let connection = pool.get().await.map_err(|e| {
            PublishError::Amqp(lapin::Error::from(std::io::Error::new(
                std::io::ErrorKind::NotConnected,
                format!("no connection to the broker: {e}"),
            )))
        })?;
        let channel = amqp::confirm_channel(&connection).await?;
        self.topology.declare(&channel).await?;
        self.topology.declare_ops(&channel, &self.ops).await?;
        Ok(channel)
    }

    /// `host:port` of the broker node the publisher last opened a channel on.
    pub fn node(&self) -> Option<String> {
        self.node
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    async fn discard(&self, broken: &Channel) {
        let mut current = self.channel.lock().await;
        if let Some((channel, index)) = current.as_ref()
            && channel.id() == broken.id()
        {
            // The next channel tries this node first, then the others.
            self.preferred
                .store(*index, std::sync::atomic::Ordering::Relaxed);
            *current = None;
        }
    }
}

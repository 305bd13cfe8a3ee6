//! The AMQP plumbing every process shares, written once: connecting, the reconnect
//! loop with back-off, publishing with confirms (JSON or raw), settling a delivery, and
//! reading a delivery's job id and headers.

use std::{future::Future, time::Duration};

use anyhow::Context as _;

use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties,
    message::Delivery,
    options::{BasicAckOptions, BasicNackOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use serde::Serialize;
use tokio_util::sync::CancellationToken;
use tracing::warn;
use uuid::Uuid;

/// How long a connection attempt may take before it counts as failed.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a publish did not get the broker's acknowledgement.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    #[error("the broker did not confirm the publish within {0:?}")]
    Timeout(Duration),
    #[error("the broker refused the message (nack); the queue may be full")]
    Nacked,
    #[error(
        "the broker refused the message while the queue has no leader (a node is failing over)"
    )]
    NoLeader,
    #[error("the message could not be routed to any queue (reply {code}: {text})")]
    Unroutable { code: u16, text: String },
    #[error("broker error: {0}")]
    Amqp(#[from] lapin::Error),
    #[error("the message could not be serialised: {0}")]
    Encode(#[from] serde_json::Error),
}

/// How long a session's setup (channel, declarations, qos, consume) or one ack may
/// take. A node that is stopping can leave an RPC unanswered; past this the session
/// counts as lost and starts over, instead of waiting forever.
pub const RPC_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a consuming session checks that its connection is still up.
const WATCH_EVERY: Duration = Duration::from_secs(1);

/// `rpc`, or an error naming `what` once [`RPC_TIMEOUT`] has passed.
pub async fn bounded<T, E>(what: &str, rpc: impl Future<Output = Result<T, E>>) -> anyhow::Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    match tokio::time::timeout(RPC_TIMEOUT, rpc).await {
        Ok(result) => Ok(result?),
        Err(_) => anyhow::bail!("{what}: no answer from the broker within {RPC_TIMEOUT:?}"),
    }
}

/// A channel on `conn` with `topology` ensured ([`crate::Topology::ensure`]: declared,
/// or checked when this user may not declare) and at most `prefetch` unacked
/// deliveries, each step bounded by [`RPC_TIMEOUT`]: the start of every consuming
/// session.
pub async fn consuming_channel(
    conn: &Connection,
    topology: &crate::Topology,
    prefetch: u16,
) -> anyhow::Result<Channel> {
    match tokio::time::timeout(RPC_TIMEOUT, topology.ensure(conn)).await {
        Ok(result) => result.context("declare the topology")?,
        Err(_) => {
            anyhow::bail!("declare the topology: no answer from the broker within {RPC_TIMEOUT:?}")
        }
    }
    let channel = bounded("open a channel", conn.create_channel()).await?;
    bounded(
        "set the prefetch",
        channel.basic_qos(prefetch, lapin::options::BasicQosOptions::default()),
    )
    .await?;
    Ok(channel)
}

/// Resolves once `conn` is no longer connected. A consuming session selects on it
/// beside its consumers, so a connection that dies without ending the consumer
/// streams still ends the session.
pub async fn lost(conn: &Connection) {
    while conn.status().connected() {
        tokio::time::sleep(WATCH_EVERY).await;
    }
}

/// Closes `conn` if it is still open, waiting at most a few seconds: a connection whose
/// socket is gone never answers the close.
pub async fn close(conn: &Connection, text: &str) {
    if conn.status().connected() {
        let _ = tokio::time::timeout(CONNECT_TIMEOUT, conn.close(200, text.into())).await;
    }
}

/// First pause after a lost session; it doubles up to the loop's maximum.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
/// A session that lasted this long was healthy: the next failure starts the back-off
/// from the beginning again.
const HEALTHY_SESSION: Duration = Duration::from_secs(10);

/// Runs `session` until it returns `Ok` (it does so on shutdown) or `shutdown` fires,
/// starting it again after every failure with exponential back-off up to `max_backoff`.
/// `what` names the task in the log line each failure writes.
pub async fn reconnect_loop<F, Fut>(
    what: &str,
    shutdown: &CancellationToken,
    max_backoff: Duration,
    mut session: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<()>>,
{
    let mut backoff = FIRST_BACKOFF;
    loop {
        let started = tokio::time::Instant::now();
        match session().await {
            Ok(()) => return,
            Err(e) => {
                if started.elapsed() >= HEALTHY_SESSION {
                    backoff = FIRST_BACKOFF;
                }
                warn!(task = what, error = format!("{e:#}"), retry_in = ?backoff, "broker session ended; reconnecting");
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(max_backoff);
            }
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}

/// The job a delivery is about: its `correlation_id` (set on jobs and replies alike),
/// else its `message_id`.
pub fn job_id(delivery: &Delivery) -> Option<Uuid> {
    let properties = &delivery.properties;
    [properties.correlation_id(), properties.message_id()]
        .into_iter()
        .flatten()
        .find_map(|c| Uuid::parse_str(c.as_str()).ok())
}

/// A numeric header such as `x-delivery-count`; missing or non-numeric means 0.
pub fn header_u32(delivery: &Delivery, name: &str) -> u32 {
    let Some(headers) = delivery.properties.headers() else {
        return 0;
    };
    let value = headers
        .inner()
        .iter()
        .find(|(k, _)| k.as_str() == name)
        .map(|(_, v)| v);
    match value {
        Some(AMQPValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::LongUInt(n)) => *n,
        Some(AMQPValue::ShortInt(n)) => u32::try_from(*n).unwrap_or(0),
        Some(AMQPValue::ShortUInt(n)) => u32::from(*n),
        Some(AMQPValue::ShortShortUInt(n)) => u32::from(*n),
        _ => 0,
    }
}

/// Nack options that hand a delivery back to its queue for another consumer.
pub fn requeue() -> BasicNackOptions {
    BasicNackOptions {
        requeue: true,
        ..BasicNackOptions::default()
    }
}

/// How a consumer settles a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    /// Done with it: the broker forgets the delivery.
    Ack,
    /// Handed back to its queue for another consumer (a nack with requeue).
    Requeue,
}

impl Settle {
    /// The `action` label of the settle-failure metric: `ack` or `nack`.
    pub fn action(self) -> &'static str {
        match self {
            Settle::Ack => "ack",
            Settle::Requeue => "nack",
        }
    }
}

/// Why a delivery was not settled. Either way the broker hands the delivery out again
/// once its channel closes.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The channel refused it (it is closing, or already closed).
    #[error("an {action} failed: {error}")]
    Failed {
        action: &'static str,
        error: lapin::Error,
    },
    /// No answer in time: the channel is stuck, and its session should start over.
    #[error("an {action} got no answer from the broker within {timeout:?}")]
    Timeout {
        action: &'static str,
        timeout: Duration,
    },
}

/// Settles a delivery (`&delivery` will do), waiting at most `timeout`. A failure is
/// logged and counted ([`crate::metrics::Event::SettleFailed`]) before it is returned.
pub async fn settle(acker: &Acker, how: Settle, timeout: Duration) -> Result<(), SettleError> {
    let action = how.action();
    let rpc = async {
        match how {
            Settle::Ack => acker.ack(BasicAckOptions::default()).await,
            Settle::Requeue => acker.nack(requeue()).await,
        }
    };
    let failed = |error: &str| {
        crate::metrics::Event::SettleFailed { action, error }.emit();
    };
    match tokio::time::timeout(timeout, rpc).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => {
            failed(&error.to_string());
            Err(SettleError::Failed { action, error })
        }
        Err(_) => {
            failed("no answer from the broker");
            Err(SettleError::Timeout { action, timeout })
        }
    }
}

/// Serialises `message` as JSON and publishes it like [`publish_confirmed`], with
/// `content_type` set.
pub async fn publish_json<T: Serialize>(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    message: &T,
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let body = serde_json::to_vec(message)?;
    publish_confirmed(
        channel,
        exchange,
        routing_key,
        &body,
        properties.with_content_type("application/json".into()),
        timeout,
    )
    .await
}

/// The header naming who published a change notice.
pub const ORIGIN_HEADER: &str = "pixmill-origin";

/// Who published a notice ([`ORIGIN_HEADER`]), if it says.
pub fn notice_origin(delivery: &Delivery) -> Option<&str> {
    header_str(delivery, ORIGIN_HEADER)
}

/// A text header, if the delivery has it as a string.
pub fn header_str<'d>(delivery: &'d Delivery, name: &str) -> Option<&'d str> {
    match delivery.properties.headers().as_ref()?.inner().get(name)? {
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        AMQPValue::ShortString(s) => Some(s.as_str()),
        _ => None,
    }
}

/// Publishes a notice: JSON, transient and not mandatory (no listener is not an error),
/// naming `origin` in [`ORIGIN_HEADER`], waiting at most `timeout` for the broker's
/// confirm.
pub async fn publish_notice<T: Serialize>(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    message: &T,
    origin: &str,
    timeout: Duration,
) -> Result<(), PublishError> {
    let body = serde_json::to_vec(message)?;
    let publish = async {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_headers(FieldTable::from(std::collections::BTreeMap::from([(
                        ORIGIN_HEADER.into(),
                        AMQPValue::LongString(origin.into()),
                    )]))),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Nack(_) => Err(PublishError::Nacked),
            _ => Ok(()),
        }
    };
    tokio::time::timeout(timeout, publish)
        .await
        .map_err(|_| PublishError::Timeout(timeout))?
}

/// The AMQP frame size pixmill asks for, unless the URL sets `frame_max` itself.
/// lapin keeps send and receive buffers of 32 frames per connection, so RabbitMQ's
/// default of 128 KiB costs 8 MiB per connection; pixmill's messages are a few hundred
/// bytes of JSON, and a larger one is simply split into more frames.
pub const FRAME_MAX: u32 = 16 * 1024;

/// `url` with `frame_max` set to [`FRAME_MAX`] when it names none.
pub fn tuned(url: &str) -> String {
    if url.contains("frame_max=") {
        return url.to_string();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}frame_max={FRAME_MAX}")
}

/// The broker URLs of a `PIXMILL_AMQP_URL`: one URL, or several separated by commas
/// (the nodes of a cluster), in the order given.
pub fn urls(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

/// `host:port` of a broker URL, for logs and `/readyz` (never the credentials).
pub fn node_of(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, r)| r);
    rest.split(['/', '?']).next().unwrap_or(rest).to_string()
}

/// `PIXMILL_AMQP_CA_FILE`: a PEM file of CA certificates trusted for `amqps://` brokers
/// in addition to the system's store.
pub const CA_FILE_VAR: &str = "PIXMILL_AMQP_CA_FILE";

/// The PEM text of the CA file `path`, checked to hold at least one certificate.
pub fn read_ca_file(path: &std::path::Path) -> Result<String, String> {
    let pem = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !pem.contains("-----BEGIN CERTIFICATE-----") {
        return Err(format!(
            "{} holds no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(pem)
}

/// The TLS settings every `amqps://` connection uses: the system's CA store (lapin is
/// built with rustls and its native roots) plus the certificates of
/// `PIXMILL_AMQP_CA_FILE`, read once. The configuration check at start-up reports an
/// unreadable file; here it only leaves the extra CA out (and every TLS connection to a
/// broker it was meant for then fails verification, never falling back to plain).
pub fn tls_config() -> lapin::tcp::OwnedTLSConfig {
    static TLS: std::sync::OnceLock<lapin::tcp::OwnedTLSConfig> = std::sync::OnceLock::new();
    TLS.get_or_init(|| {
        let cert_chain = std::env::var_os(CA_FILE_VAR)
            .filter(|p| !p.is_empty())
            .and_then(|p| match read_ca_file(std::path::Path::new(&p)) {
                Ok(pem) => Some(pem),
                Err(e) => {
                    warn!(error = %e, "{CA_FILE_VAR} is unusable; trusting the system's CAs only");
                    None
                }
            });
        lapin::tcp::OwnedTLSConfig {
            identity: None,
            cert_chain,
        }
    })
    .clone()
}

/// Connects to one broker URL with [`tls_config`]. For an `amqps://` URL the
/// connection is TLS or nothing: a failed handshake or an unverified certificate is an
/// error that says so, and there is no retry in plain text.
pub async fn connect_url(url: &str, props: ConnectionProperties) -> lapin::Result<Connection> {
    connect_url_with(url, props, tls_config()).await
}

/// [`connect_url`] with the TLS settings given.
pub async fn connect_url_with(
    url: &str,
    props: ConnectionProperties,
    tls: lapin::tcp::OwnedTLSConfig,
) -> lapin::Result<Connection> {
    let result =
        Connection::connect_with_config(url, props, tls, async_rs::Runtime::tokio_current()).await;
    match result {
        Err(e) if url.starts_with("amqps://") => {
            // A plain AMQP listener answers a TLS hello with its protocol header.
            let hint = if e.to_string().contains("InvalidContentType") {
                " (the server did not answer in TLS: is that port a TLS listener?)"
            } else {
                ""
            };
            Err(lapin::Error::from(std::io::Error::other(format!(
                "TLS connection to the broker at {} failed (amqps:// never falls back to plain AMQP): {e}{hint}",
                node_of(url)
            ))))
        }
        other => other,
    }
}

/// The URL index the last successful connection of this process used: the next
/// connection starts there, so a process that failed over stays on the live node.
static LAST_GOOD: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Opens a named connection (the name shows up in `rabbitmqctl list_connections`) to
/// the first broker of `list` that answers, starting with the one that answered last
/// and moving on to the next when one does not. Logs the node it reached.
pub async fn connect(list: &str, name: &str) -> lapin::Result<Connection> {
    connect_with_node(list, name).await.map(|(conn, _)| conn)
}

/// Like [`connect`], and also returns the `host:port` of the node reached.
pub async fn connect_with_node(list: &str, name: &str) -> lapin::Result<(Connection, String)> {
    use std::sync::atomic::Ordering;
    let all = urls(list);
    if all.is_empty() {
        return Err(lapin::Error::from(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "no broker URL given",
        )));
    }
    let start = LAST_GOOD.load(Ordering::Relaxed) % all.len();
    let mut last_error = None;
    for offset in 0..all.len() {
        let index = (start + offset) % all.len();
        let props = ConnectionProperties::default().with_connection_name(name.into());
        let url = tuned(all[index]);
        let attempt = tokio::time::timeout(CONNECT_TIMEOUT, connect_url(&url, props));
        match attempt.await {
            Ok(Ok(conn)) => {
                let node = node_of(all[index]);
                if index != start || offset > 0 {
                    warn!(connection = name, %node, "failed over to another broker node");
                } else {
                    tracing::info!(connection = name, %node, "connected to the broker");
                }
                LAST_GOOD.store(index, Ordering::Relaxed);
                return Ok((conn, node));
            }
            Ok(Err(e)) => {
                warn!(connection = name, node = %node_of(all[index]), error = %e, "broker node unreachable");
                last_error = Some(e);
            }
            Err(_) => {
                warn!(connection = name, node = %node_of(all[index]), "broker node did not answer in time");
                last_error = Some(lapin::Error::from(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    format!("no connection to the broker within {CONNECT_TIMEOUT:?}"),
                )));
            }
        }
    }
    Err(last_error
        .unwrap_or_else(|| lapin::Error::from(std::io::Error::other("no broker node answered"))))
}

/// The index [`connect`] will try first.
pub fn preferred() -> usize {
    LAST_GOOD.load(std::sync::atomic::Ordering::Relaxed)
}

/// Opens a channel in publisher-confirm mode.
pub async fn confirm_channel(connection: &Connection) -> lapin::Result<Channel> {
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    Ok(channel)
}

/// Publishes a persistent, mandatory message and waits for the broker's ack, at most
/// `timeout` in all: a broker under a resource alarm blocks publishers instead of
/// failing them, and a caller must never hang on that.
pub async fn publish_confirmed(
    channel: &Channel,
    exchange: &str,
    routing_key: &str,
    body: &[u8],
    properties: BasicProperties,
    timeout: Duration,
) -> Result<(), PublishError> {
    let publish = async {
        let confirm = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory: true,
                    ..BasicPublishOptions::default()
                },
                body,
                properties.with_delivery_mode(2),
            )
            .await?
            .await?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned)) => {
                Err(PublishError::Unroutable {
                    code: returned.reply_code,
                    text: returned.reply_text.to_string(),
                })
            }
            Confirmation::Nack(None) => Err(PublishError::Nacked),
        }
    };
    tokio::time::timeout(timeout, publish)
        .await
        .map_err(|_| PublishError::Timeout(timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_ask_for_small_frames_unless_told_otherwise() {
        assert_eq!(
            tuned("amqp://a:5672/%2f"),
            "amqp://a:5672/%2f?frame_max=16384"
        );
        assert_eq!(
            tuned("amqp://a:5672/%2f?heartbeat=10"),
            "amqp://a:5672/%2f?heartbeat=10&frame_max=16384"
        );
        assert_eq!(
            tuned("amqp://a:5672/%2f?frame_max=131072"),
            "amqp://a:5672/%2f?frame_max=131072"
        );
        let uri: lapin::uri::AMQPUri = tuned("amqp://a:5672/%2f").parse().expect("uri");
        assert_eq!(uri.query.frame_max, Some(16_384));
    }

    #[test]
    fn url_lists_split_and_name_their_nodes() {
        let list = "amqp://u:p@a:5681/%2f?heartbeat=10, amqp://b:5682/%2f,";
        assert_eq!(
            urls(list),
            vec!["amqp://u:p@a:5681/%2f?heartbeat=10", "amqp://b:5682/%2f"]
        );
        assert_eq!(node_of(urls(list)[0]), "a:5681");
        assert_eq!(node_of("amqp://b:5682"), "b:5682");
    }
}

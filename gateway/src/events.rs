//! Hearing about changes, from this gateway and from every other one.
//!
//! Whoever applies a change (a reply, a cancel, the sweeper) tells [`JobEvents`] here at
//! once, with the job as it now is, and publishes a [`JobEvent`] on the events exchange.
//! [`listen`] consumes this gateway's private queue on that exchange and tells
//! [`JobEvents`] too, so a long-poll here wakes when another gateway applied the reply.
//! Notices from other gateways only say *which* job changed, and the waiter re-reads the
//! store, so a duplicate or missed notice costs a re-read. Each notice names the gateway
//! that sent it, and a gateway skips its own: its waiters heard about it already.

use std::{sync::Arc, time::Duration};

use futures_util::StreamExt;
use lapin::{options::BasicConsumeOptions, types::FieldTable};
use pixmill_shared::{JobEvent, Topology, amqp};
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};
use uuid::Uuid;

use crate::{publisher::Publisher, store::Job};

/// "Job `id` changed", and the job as it now is when this gateway applied the change.
#[derive(Debug, Clone)]
pub struct Changed {
    pub id: Uuid,
    pub job: Option<Arc<Job>>,
}

/// In-process fan-out of [`Changed`] to waiting requests.
#[derive(Debug, Clone)]
pub struct JobEvents(broadcast::Sender<Changed>);

impl Default for JobEvents {
    fn default() -> Self {
        Self(broadcast::channel(4096).0)
    }
}

impl JobEvents {
    /// Starts listening; subscribe *before* reading the state to wait on.
    pub fn subscribe(&self) -> broadcast::Receiver<Changed> {
        self.0.subscribe()
    }

    /// Wakes this gateway's waiters on `id`, who will re-read it.
    pub fn notify(&self, id: Uuid) {
        let _ = self.0.send(Changed { id, job: None });
    }

    /// Wakes this gateway's waiters on `job`, handing them the job as it now is.
    pub fn notify_with(&self, job: &Job) {
        let _ = self.0.send(Changed {
            id: job.id,
            job: Some(Arc::new(job.clone())),
        });
    }
}

/// What a [`Watch`] saw.
#[derive(Debug)]
pub enum Seen {
    /// The job as this gateway just recorded it: no need to read it.
    Job(Arc<Job>),
    /// The job may have changed: read it again.
    Reread,
    /// No notice can come any more.
    Closed,
}

/// How soon a waiter re-reads its job without a notice: first after this, then twice as
/// long each time nothing came, up to [`REREAD_AT_MOST`]. A notice about the job starts
/// the interval over.
///
/// The re-read is only a safety net: every change applied anywhere reaches the waiter as
/// a notice, a listener that reconnected wakes every waiter (the nil notice), and a
/// waiter that fell behind the broadcast re-reads at once (a lag). What is left is a
/// notice lost on its way through the broker, which delays its waiter by the interval.
///
/// Cost: each re-read is one store read (one row by primary key). At a fixed 2 s, 1,000
/// open event streams cost 500 reads a second whether or not anything happened; backed
/// off to 30 s they cost about 33, and a 30 s long-poll reads 4 times (at 2, 6, 14 and
/// 30 s) rather than 15.
pub const REREAD_EVERY: Duration = Duration::from_secs(2);
/// The longest a waiter goes without re-reading its job.
pub const REREAD_AT_MOST: Duration = Duration::from_secs(30);

/// One waiter's view of the notices about one job (a long-poll, an event stream).
#[derive(Debug)]
pub struct Watch {
    changes: broadcast::Receiver<Changed>,
    id: Uuid,
    /// The wait before the next re-read without news.
    every: Duration,
}

impl Watch {
    /// Follows `id` on `changes`, a receiver taken *before* the job was first read, so a
    /// change in between is not missed.
    pub fn new(changes: broadcast::Receiver<Changed>, id: Uuid) -> Self {
        Self {
            changes,
            id,
            every: REREAD_EVERY,
        }
    }

    /// Returns when the job may have changed: with the job itself when this gateway
    /// applied the change, or asking for a re-read after a notice from elsewhere, a nil
    /// notice (the listener reconnected and may have missed some), a lag, or the
    /// backed-off interval (see [`REREAD_EVERY`]) without news.
    pub async fn next(&mut self) -> Seen {
        let tick = tokio::time::sleep(self.every);
        tokio::pin!(tick);
        loop {
            tokio::select! {
                () = &mut tick => {
                    self.every = (self.every * 2).min(REREAD_AT_MOST);
                    return Seen::Reread;
                }
                changed = self.changes.recv() => match changed {
                    Ok(Changed { id, job: Some(job) }) if id == self.id => {
                        self.every = REREAD_EVERY;
                        return Seen::Job(job);
                    }
                    Ok(Changed { id, .. }) if id == self.id || id.is_nil() => {
                        self.every = REREAD_EVERY;
                        return Seen::Reread;
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(_)) => return Seen::Reread,
                    Err(broadcast::error::RecvError::Closed) => return Seen::Closed,
                },
            }
        }
    }
}

/// Tells everyone that a job changed: this gateway's waiters now, every other gateway
/// (and any other listener) through the events exchange.
#[derive(Debug, Clone)]
pub struct Notifier {
    pub events: JobEvents,
    publisher: Arc<Publisher>,
    /// This gateway's name on its notices, so its listener can skip them.
    origin: Arc<str>,
}

/// How long a notice may wait for the broker's confirm.
const NOTICE_TIMEOUT: Duration = Duration::from_secs(5);

impl Notifier {
    pub fn new(events: JobEvents, publisher: Arc<Publisher>, origin: Arc<str>) -> Self {
        Self {
            events,
            publisher,
            origin,
        }
    }

    /// Announces `job`'s current state. Publishing runs in the background: the caller
    /// (often the reply consumer) never waits on it, and a lost notice only delays a
    /// waiter on another gateway until its next periodic re-read ([`REREAD_EVERY`]).
    pub fn changed(&self, job: &Job) {
        self.events.notify_with(job);
        let (publisher, event, origin) = (self.publisher.clone(), job.event(), self.origin.clone());
        tokio::spawn(async move {
            if let Err(e) = publisher
                .publish_notice(&event, &origin, NOTICE_TIMEOUT)
                .await
            {
                debug!(job_id = %event.job_id, error = %e, "change notice not published");
            }
        });
    }
}

/// Consumes this gateway's private notice queue until `shutdown`, reconnecting as
/// needed, and wakes local waiters for every notice.
pub async fn listen(
    url: String,
    topology: Topology,
    events: JobEvents,
    origin: Arc<str>,
    shutdown: CancellationToken,
) {
    amqp::reconnect_loop("event listener", &shutdown, Duration::from_secs(5), || {
        session(&url, &topology, &events, &origin, &shutdown)
    })
    .await;
}

async fn session(
    url: &str,
    topology: &Topology,
    events: &JobEvents,
    origin: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let conn = amqp::connect(url, "pixmill-gateway-events").await?;
    let result = consume(&conn, topology, events, origin, shutdown).await;
    amqp::close(&conn, "gateway shutting down").await;
    result
}

async fn consume(
    conn: &lapin::Connection,
    topology: &Topology,
    events: &JobEvents,
    origin: &str,
    shutdown: &CancellationToken,
) -> anyhow::Result<()> {
    let channel = amqp::consuming_channel(conn, topology, 512).await?;
    let queue = amqp::bounded(
        "declare the notice queue",
        topology.declare_event_listener(&channel),
    )
    .await?;
    let mut notices = amqp::bounded(
        "consume the notices",
        channel.basic_consume(
            queue.as_str().into(),
            "".into(),
            BasicConsumeOptions {
                no_ack: true,
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        ),
    )
    .await?;
    info!(exchange = %topology.events, %queue, "listening for change notices");
    // Notices published while this listener was away are gone with its old queue: wake
    // every waiter once so each re-reads the store.
    events.notify(Uuid::nil());
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = amqp::lost(conn) => anyhow::bail!("the broker connection closed"),
            next = notices.next() => match next {
                Some(Ok(delivery)) if amqp::notice_origin(&delivery) == Some(origin) => {}
                Some(Ok(delivery)) => match serde_json::from_slice::<JobEvent>(&delivery.data) {
                    Ok(event) => events.notify(event.job_id),
                    Err(e) => warn!(error = %e, "ignoring an unreadable change notice"),
                },
                Some(Err(e)) => return Err(e.into()),
                None => anyhow::bail!("the notice consumer was cancelled"),
            },
        }
    }
}

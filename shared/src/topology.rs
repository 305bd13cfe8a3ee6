//! Exchange and queue names, and the one idempotent declaration both binaries run.
//!
//! ```text
//! gateway ──► exchange pixmill.jobs (direct, durable)
//!                 └─► queue pixmill.jobs (quorum: delivery limit, length limit)
//!                        │ consumed by every worker (competing consumers)
//!                        └─ dead-lettered (delivery limit hit) ─► exchange pixmill.dead
//!                                                                  └─► queue pixmill.jobs.dead
//! worker ──► default exchange, routing key = reply_to ─► queue pixmill.replies (quorum)
//! worker ──► queue pixmill.jobs.retry (per-message TTL = back-off)
//!                 └─ expired ─► exchange pixmill.jobs ─► queue pixmill.jobs
//! gateway ──► exchange pixmill.events (topic, durable), routing key job.<state>
//!                 └─► one exclusive, auto-delete queue per gateway (and any other listener)
//! ```
//!
//! Declaring with the same arguments is a no-op, so every process declares at start-up
//! and after each reconnect; nobody has to run a setup step first.

use lapin::{
    Channel,
    options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions},
    types::{AMQPValue, FieldTable, LongString, ShortString},
};

/// Prefix of every name in the default topology.
pub const DEFAULT_PREFIX: &str = "pixmill";
/// Exchange and queue that carry jobs.
pub const JOBS: &str = "pixmill.jobs";
/// Exchange jobs are dead-lettered to when they exhaust their delivery limit.
pub const DEAD_EXCHANGE: &str = "pixmill.dead";
/// Queue holding dead-lettered jobs; the gateway drains it and fails those jobs.
pub const DEAD_QUEUE: &str = "pixmill.jobs.dead";
/// Durable queue of worker replies, named in every job's `reply_to`.
pub const REPLIES: &str = "pixmill.replies";
/// Where a job waits out its back-off after a transient failure. Messages expire from
/// here (per-message TTL) and are dead-lettered back to the jobs exchange, so a waiting
/// retry holds no worker slot.
pub const RETRY: &str = "pixmill.jobs.retry";
/// Topic exchange of change notices ([`crate::events::JobEvent`], key `job.<state>`).
pub const EVENTS: &str = "pixmill.events";

/// A job delivered this many times without being acked (each time its worker died or
/// its channel closed) is dead-lettered instead of killing yet another worker.
pub const DEFAULT_DELIVERY_LIMIT: u32 = 5;
/// Jobs waiting beyond this are refused at publish (`reject-publish`), never dropped.
pub const DEFAULT_MAX_QUEUED: u32 = 100_000;

/// The names and queue arguments of one deployment. Tests use a unique prefix so they
/// never see each other's messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Exchange jobs are published to; also the routing key and the jobs queue's name.
    pub jobs: String,
    /// Dead-letter exchange for jobs over their delivery limit.
    pub dead_exchange: String,
    /// Queue behind `dead_exchange`.
    pub dead_queue: String,
    /// Replies queue named in `reply_to`.
    pub replies: String,
    /// Delay queue for retries after transient failures.
    pub retry: String,
    /// Topic exchange every gateway publishes state changes to.
    pub events: String,
    /// `x-delivery-limit` of the jobs queue. RabbitMQ 3.10 has no default, so it is set.
    pub delivery_limit: u32,
    /// `x-max-length` of the jobs queue, with `reject-publish` overflow.
    pub max_queued: u32,
}

impl Default for Topology {
    fn default() -> Self {
        Self {
            jobs: JOBS.into(),
            dead_exchange: DEAD_EXCHANGE.into(),
            dead_queue: DEAD_QUEUE.into(),
            replies: REPLIES.into(),
            retry: RETRY.into(),
            events: EVENTS.into(),
            delivery_limit: DEFAULT_DELIVERY_LIMIT,
            max_queued: DEFAULT_MAX_QUEUED,
        }
    }
}

impl Topology {
    /// The default topology with every name under `prefix` instead of `pixmill`.
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            jobs: format!("{prefix}.jobs"),
            dead_exchange: format!("{prefix}.dead"),
            dead_queue: format!("{prefix}.jobs.dead"),
            replies: format!("{prefix}.replies"),
            retry: format!("{prefix}.jobs.retry"),
            events: format!("{prefix}.events"),
            ..Self::default()
        }
    }

    /// Declares every exchange, queue and binding. Idempotent.
    ///
    /// Fails with `PRECONDITION_FAILED` (closing the channel) when a queue already exists
    /// with other arguments, e.g. after changing the delivery limit: delete the queue or
    /// use a new prefix.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        let durable_exchange = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        let durable_queue = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .exchange_declare(
                self.jobs.as_str().into(),
                lapin::ExchangeKind::Direct,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.dead_exchange.as_str().into(),
                lapin::ExchangeKind::Fanout,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;
        channel
            .exchange_declare(
                self.events.as_str().into(),
                lapin::ExchangeKind::Topic,
                durable_exchange,
                FieldTable::default(),
            )
            .await?;

        let mut jobs_args = quorum();
        insert(
            &mut jobs_args,
            "x-delivery-limit",
            AMQPValue::LongUInt(self.delivery_limit),
        );
        insert(
            &mut jobs_args,
            "x-max-length",
            AMQPValue::LongUInt(self.max_queued),
        );
        insert(&mut jobs_args, "x-overflow", string("reject-publish"));
        insert(
            &mut jobs_args,
            "x-dead-letter-exchange",
            string(&self.dead_exchange),
        );
        // At-least-once dead-lettering: a dead-lettered job is not lost if the dead
        // queue is briefly unavailable. It requires reject-publish overflow (set above).
        insert(
            &mut jobs_args,
            "x-dead-letter-strategy",
            string("at-least-once"),
        );
        channel
            .queue_declare(self.jobs.as_str().into(), durable_queue, jobs_args)
            .await?;
        channel
            .queue_bind(
                self.jobs.as_str().into(),
                self.jobs.as_str().into(),
                self.jobs.as_str().into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        channel
            .queue_declare(self.dead_queue.as_str().into(), durable_queue, quorum())
            .await?;
        channel
            .queue_bind(
                self.dead_queue.as_str().into(),
                self.dead_exchange.as_str().into(),
                ShortString::from(""),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;

        channel
            .queue_declare(self.replies.as_str().into(), durable_queue, quorum())
            .await?;

        let mut retry_args = quorum();
        insert(
            &mut retry_args,
            "x-dead-letter-exchange",
            string(&self.jobs),
        );
        insert(
            &mut retry_args,
            "x-dead-letter-routing-key",
            string(&self.jobs),
        );
        insert(&mut retry_args, "x-overflow", string("reject-publish"));
        insert(
            &mut retry_args,
            "x-dead-letter-strategy",
            string("at-least-once"),
        );
        channel
            .queue_declare(self.retry.as_str().into(), durable_queue, retry_args)
            .await?;
        Ok(())
    }

    /// Declares a private queue for this process's change notices: server-named,
    /// exclusive and auto-delete, so it vanishes with the connection, bound to every
    /// `job.*` key of the events exchange. Returns its name.
    pub async fn declare_event_listener(&self, channel: &Channel) -> lapin::Result<String> {
        let queue = channel
            .queue_declare(
                ShortString::from(""),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
        let name = queue.name().to_string();
        channel
            .queue_bind(
                name.as_str().into(),
                self.events.as_str().into(),
                "job.*".into(),
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok(name)
    }
}

fn quorum() -> FieldTable {
    let mut args = FieldTable::default();
    insert(&mut args, "x-queue-type", string("quorum"));
    args
}

fn insert(table: &mut FieldTable, key: &str, value: AMQPValue) {
    table.insert(key.into(), value);
}

fn string(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_names_never_collide_with_the_default() {
        let t = Topology::with_prefix("test-1234");
        assert_eq!(t.jobs, "test-1234.jobs");
        assert_eq!(t.replies, "test-1234.replies");
        assert_eq!(t.dead_queue, "test-1234.jobs.dead");
        assert_eq!(t.retry, "test-1234.jobs.retry");
        assert_eq!(t.events, "test-1234.events");
        assert_eq!(Topology::with_prefix(DEFAULT_PREFIX), Topology::default());
    }
}

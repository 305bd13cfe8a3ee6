//! Exchange and queue names, and the one idempotent declaration both binaries run.
//!
//! ```text
//! gateway ──► exchange pixmill.jobs (direct, durable)
//!                 └─► queue pixmill.jobs (quorum: delivery limit, length limit)
//!                        │ consumed by every worker (competing consumers)
//!                        └─ dead-lettered (delivery limit hit) ─► exchange pixmill.dead
//!                                                                  └─► queue pixmill.jobs.dead
//! worker ──► exchange pixmill.reply (direct), routing key = reply_to
//!                 └─► queue pixmill.replies (quorum; bound under its own name)
//! worker ──► exchange pixmill.retry (direct), routing key pixmill.jobs.retry
//!                 └─► queue pixmill.jobs.retry (per-message TTL = back-off)
//!                        └─ expired ─► exchange pixmill.jobs ─► queue pixmill.jobs
//! gateway ──► exchange pixmill.jobs, routing key pixmill.op.<name> (a custom op first)
//!                 └─► queue pixmill.op.<name> (one per registered op; same arguments)
//!                        │ consumed by the workers that serve <name>, in any language
//! worker ──► exchange pixmill.forward (direct), routing key = the next step's queue
//!                 ├─► queue pixmill.jobs          (key pixmill.jobs)
//!                 └─► queue pixmill.op.<name>     (key pixmill.op.<name>)
//! gateway ──► exchange pixmill.events (topic, durable), routing key job.<state>
//!                 └─► one exclusive, auto-delete queue per gateway (and any other listener)
//! ```
//!
//! Declaring with the same arguments is a no-op, so every process declares at start-up
//! and after each reconnect; nobody has to run a setup step first.
//!
//! Workers publish through the two exchanges of their own (`reply`, `retry`), never
//! through the default exchange: a broker user allowed to write to `amq.default` may
//! put a message into *any* queue by name, the jobs queue included. With these exchanges
//! the worker's broker user needs write permission on them alone (see
//! `deploy/rabbitmq/users.sh`). A `reply_to` still names a queue: the queue receives
//! replies once it is bound to the reply exchange under its own name, which the
//! declaration below does for the replies queue. Workers of earlier releases publish
//! to the default exchange with the same routing key and still reach the same queues.
//!
//! RabbitMQ 3.10 checks `configure` permission on every non-passive declare, even of an
//! entity that exists with the same arguments (ACCESS_REFUSED, channel closed; checked
//! against the broker by `tests/tests/broker_permissions.rs`), and `configure` would also
//! let a user delete the queue. So the worker's user has none: [`Topology::ensure`]
//! declares when allowed and otherwise checks passively (a passive declare needs no
//! permission) that the names a worker uses exist, which means a gateway has declared
//! them.

use lapin::{
    Channel, ExchangeKind,
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
/// Direct exchange workers publish replies to, routing key = the job's `reply_to`.
pub const REPLY_EXCHANGE: &str = "pixmill.reply";
/// Direct exchange workers publish retries to, routing key = the retry queue's name.
pub const RETRY_EXCHANGE: &str = "pixmill.retry";
/// Direct exchange a worker hands a job on through, to the queue of the next step's
/// owner; routing key = that queue's name.
pub const FORWARD_EXCHANGE: &str = "pixmill.forward";

/// A job delivered this many times without being acked is dead-lettered. This is the
/// broker's backstop, not the crash count: every failover of a node hands the
/// deliveries in flight back and the quorum queue counts each return, so the limit is
/// high enough that failovers never reach it. Workers set a job aside after
/// `PIXMILL_CRASH_LIMIT` real deaths, counted by the run marks dead workers leave
/// (see `pixmill_shared::keys::run_mark`).
pub const DEFAULT_DELIVERY_LIMIT: u32 = 20;
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
    /// Exchange of replies; a `reply_to` queue is bound to it under its own name.
    pub reply_exchange: String,
    /// Exchange of retries, bound to the retry queue under the queue's name.
    pub retry_exchange: String,
    /// Exchange of forwards (routing slips), bound to the jobs queue and every op queue
    /// under the queue's name.
    pub forward_exchange: String,
    /// The prefix of every name, for the op queues' names.
    pub prefix: String,
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
            reply_exchange: REPLY_EXCHANGE.into(),
            retry_exchange: RETRY_EXCHANGE.into(),
            forward_exchange: FORWARD_EXCHANGE.into(),
            prefix: DEFAULT_PREFIX.into(),
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
            reply_exchange: format!("{prefix}.reply"),
            retry_exchange: format!("{prefix}.retry"),
            forward_exchange: format!("{prefix}.forward"),
            prefix: prefix.into(),
            ..Self::default()
        }
    }

    /// Declares every exchange, queue and binding. Idempotent.
    ///
    /// Fails with `PRECONDITION_FAILED` (closing the channel) when a queue already exists
    /// with other arguments, e.g. after changing the delivery limit: delete the queue or
    /// use a new prefix.
    pub async fn declare(&self, channel: &Channel) -> lapin::Result<()> {
        self.declare_exchanges(channel).await?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(self.jobs.as_str().into(), durable, self.jobs_arguments())
            .await?;
        bind(channel, &self.jobs, &self.jobs, &self.jobs).await?;
        channel
            .queue_declare(self.dead_queue.as_str().into(), durable, quorum())
            .await?;
        bind(channel, &self.dead_queue, &self.dead_exchange, "").await?;
        channel
            .queue_declare(self.replies.as_str().into(), durable, quorum())
            .await?;
        bind(channel, &self.replies, &self.reply_exchange, &self.replies).await?;
        channel
            .queue_declare(self.retry.as_str().into(), durable, self.retry_arguments())
            .await?;
        bind(channel, &self.retry, &self.retry_exchange, &self.retry).await?;
        bind(channel, &self.jobs, &self.forward_exchange, &self.jobs).await?;
        Ok(())
    }

    /// The queue of custom op `op`: `<prefix>.op.<op>`.
    pub fn op_queue(&self, op: &str) -> String {
        format!("{}.op.{op}", self.prefix)
    }

    /// The queue a job whose next step is `step` goes to: the jobs queue for a built-in
    /// op, the op's own queue for a custom one. Also the routing key on the jobs and
    /// forward exchanges.
    pub fn queue_for(&self, step: Option<&crate::messages::JobStep>) -> String {
        match step {
            Some(crate::messages::JobStep::Custom(custom)) => self.op_queue(&custom.op),
            _ => self.jobs.clone(),
        }
    }

    /// Declares the queue of each custom op in `ops`, with the jobs queue's arguments
    /// (delivery limit, dead letters, length limit), bound to the jobs and forward
    /// exchanges under its own name. Idempotent.
    pub async fn declare_ops(&self, channel: &Channel, ops: &[String]) -> lapin::Result<()> {
        for op in ops {
            let queue = self.op_queue(op);
            channel
                .queue_declare(
                    queue.as_str().into(),
                    QueueDeclareOptions {
                        durable: true,
                        ..QueueDeclareOptions::default()
                    },
                    self.jobs_arguments(),
                )
                .await?;
            bind(channel, &queue, &self.jobs, &queue).await?;
            bind(channel, &queue, &self.forward_exchange, &queue).await?;
        }
        Ok(())
    }

    /// Declares the topology on a channel of its own, or, when the broker refuses
    /// (ACCESS_REFUSED: a worker's user has no `configure` permission), checks passively
    /// on a new channel that what a worker uses exists: the jobs queue it consumes and
    /// the two exchanges it publishes to. A missing name means no gateway has declared
    /// the topology yet; the caller's reconnect loop tries again.
    pub async fn ensure(&self, conn: &lapin::Connection) -> anyhow::Result<()> {
        let channel = conn.create_channel().await?;
        match self.declare(&channel).await {
            Ok(()) => {
                let _ = channel.close(200, "declared".into()).await;
                return Ok(());
            }
            Err(e) if !is_access_refused(&e) => return Err(e.into()),
            Err(_) => {}
        }
        let channel = conn.create_channel().await?;
        let queue = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let exchange = ExchangeDeclareOptions {
            passive: true,
            ..ExchangeDeclareOptions::default()
        };
        let missing = |what: &str, e: lapin::Error| {
            anyhow::anyhow!(
                "{what} does not exist ({e}), and this broker user may not declare it: \
                 start a gateway first, which declares the topology"
            )
        };
        channel
            .queue_declare(self.jobs.as_str().into(), queue, FieldTable::default())
            .await
            .map_err(|e| missing(&format!("queue {}", self.jobs), e))?;
        for name in [&self.reply_exchange, &self.retry_exchange] {
            channel
                .exchange_declare(
                    name.as_str().into(),
                    ExchangeKind::Direct,
                    exchange,
                    FieldTable::default(),
                )
                .await
                .map_err(|e| missing(&format!("exchange {name}"), e))?;
        }
        // The forward exchange came with contract 1.1. A worker that starts before the
        // gateways are upgraded runs whole jobs as before; a forward would be refused
        // and handed back until a gateway declares it.
        if let Err(e) = channel
            .exchange_declare(
                self.forward_exchange.as_str().into(),
                ExchangeKind::Direct,
                exchange,
                FieldTable::default(),
            )
            .await
        {
            tracing::warn!(
                exchange = %self.forward_exchange,
                error = %e,
                "the forward exchange does not exist yet: jobs of custom ops cannot be handed on until a gateway of this release declares it"
            );
            return Ok(());
        }
        let _ = channel.close(200, "checked".into()).await;
        Ok(())
    }

    /// The durable exchanges: jobs (direct), dead letters (fanout), events (topic),
    /// replies and retries (direct).
    async fn declare_exchanges(&self, channel: &Channel) -> lapin::Result<()> {
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (&self.jobs, ExchangeKind::Direct),
            (&self.dead_exchange, ExchangeKind::Fanout),
            (&self.events, ExchangeKind::Topic),
            (&self.reply_exchange, ExchangeKind::Direct),
            (&self.retry_exchange, ExchangeKind::Direct),
            (&self.forward_exchange, ExchangeKind::Direct),
        ] {
            channel
                .exchange_declare(name.as_str().into(), kind, durable, FieldTable::default())
                .await?;
        }
        Ok(())
    }

    /// The jobs queue's arguments: a quorum queue with a delivery limit past which a job
    /// is dead-lettered, and a length limit past which publishes are refused.
    pub fn jobs_arguments(&self) -> FieldTable {
        let mut args = quorum();
        insert(
            &mut args,
            "x-delivery-limit",
            AMQPValue::LongUInt(self.delivery_limit),
        );
        insert(
            &mut args,
            "x-max-length",
            AMQPValue::LongUInt(self.max_queued),
        );
        insert(&mut args, "x-overflow", string("reject-publish"));
        insert(
            &mut args,
            "x-dead-letter-exchange",
            string(&self.dead_exchange),
        );
        // At-least-once dead-lettering: a dead-lettered job is not lost if the dead
        // queue is briefly unavailable. It requires reject-publish overflow (set above).
        insert(&mut args, "x-dead-letter-strategy", string("at-least-once"));
        args
    }

    /// The retry queue's arguments: expired messages are dead-lettered back to the jobs
    /// exchange, at least once.
    pub fn retry_arguments(&self) -> FieldTable {
        let mut args = quorum();
        insert(&mut args, "x-dead-letter-exchange", string(&self.jobs));
        insert(&mut args, "x-dead-letter-routing-key", string(&self.jobs));
        insert(&mut args, "x-overflow", string("reject-publish"));
        insert(&mut args, "x-dead-letter-strategy", string("at-least-once"));
        args
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

/// True when the broker refused an operation for want of permission (403).
pub fn is_access_refused(error: &lapin::Error) -> bool {
    matches!(error.kind(), lapin::ErrorKind::ProtocolError(e) if e.get_id() == 403)
}

/// Binds `queue` to `exchange` with `key`.
async fn bind(channel: &Channel, queue: &str, exchange: &str, key: &str) -> lapin::Result<()> {
    channel
        .queue_bind(
            queue.into(),
            exchange.into(),
            key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
}

/// The arguments of a plain quorum queue (the replies and dead-letter queues).
pub fn quorum() -> FieldTable {
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
        assert_eq!(t.reply_exchange, "test-1234.reply");
        assert_eq!(t.retry_exchange, "test-1234.retry");
        assert_eq!(t.forward_exchange, "test-1234.forward");
        assert_eq!(t.op_queue("posterize"), "test-1234.op.posterize");
        assert_eq!(Topology::with_prefix(DEFAULT_PREFIX), Topology::default());
    }

    /// A broker permission regex matches exchange and queue names alike: the worker's
    /// write on the two exchanges it publishes to must not cover any queue, or it could
    /// bind that queue to an exchange it may read.
    #[test]
    fn the_worker_exchanges_share_no_name_with_a_queue() {
        let t = Topology::default();
        for exchange in [&t.reply_exchange, &t.retry_exchange, &t.forward_exchange] {
            for queue in [
                &t.jobs,
                &t.dead_queue,
                &t.replies,
                &t.retry,
                &t.op_queue("x"),
            ] {
                assert_ne!(exchange, queue);
            }
        }
    }

    fn get<'a>(args: &'a FieldTable, key: &str) -> Option<&'a AMQPValue> {
        args.inner().get(key)
    }

    #[test]
    fn the_jobs_queue_dead_letters_and_refuses_past_its_limits() {
        let t = Topology::with_prefix("test-1234");
        let args = t.jobs_arguments();
        assert_eq!(get(&args, "x-queue-type"), Some(&string("quorum")));
        assert_eq!(
            get(&args, "x-delivery-limit"),
            Some(&AMQPValue::LongUInt(DEFAULT_DELIVERY_LIMIT))
        );
        assert_eq!(
            get(&args, "x-max-length"),
            Some(&AMQPValue::LongUInt(DEFAULT_MAX_QUEUED))
        );
        assert_eq!(get(&args, "x-overflow"), Some(&string("reject-publish")));
        assert_eq!(
            get(&args, "x-dead-letter-exchange"),
            Some(&string("test-1234.dead"))
        );
        assert_eq!(
            get(&args, "x-dead-letter-strategy"),
            Some(&string("at-least-once"))
        );
        assert_eq!(args.inner().len(), 6);
    }

    #[test]
    fn the_retry_queue_expires_back_to_the_jobs_exchange() {
        let t = Topology::with_prefix("test-1234");
        let args = t.retry_arguments();
        assert_eq!(get(&args, "x-queue-type"), Some(&string("quorum")));
        assert_eq!(
            get(&args, "x-dead-letter-exchange"),
            Some(&string("test-1234.jobs"))
        );
        assert_eq!(
            get(&args, "x-dead-letter-routing-key"),
            Some(&string("test-1234.jobs"))
        );
        assert_eq!(get(&args, "x-overflow"), Some(&string("reject-publish")));
        assert_eq!(
            get(&args, "x-dead-letter-strategy"),
            Some(&string("at-least-once"))
        );
        assert_eq!(args.inner().len(), 5);
    }
}

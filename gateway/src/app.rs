//! `Application`: builds every part of the gateway and runs it until told to stop.

use std::{future::Future, net::SocketAddr, sync::Arc, time::Duration};

use pixmill_shared::Blobs;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{
    config::Settings,
    events::{self, JobEvents, Notifier},
    fair_share::{self, FairShare},
    jobs::{Jobs, PublishedMarks},
    maintenance,
    publisher::Publisher,
    queue_depth, replies,
    routes::{AppState, app},
    store,
    tasks::TaskHealth,
    tenants::Tenants,
    webhooks,
};

/// A built gateway: the socket is bound and the background tasks are running.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    bounds: crate::admission::Bounds,
    /// Stops the background tasks once HTTP has drained.
    stop_tasks: CancellationToken,
    /// The background tasks: the reply consumer, the change-notice listener, the
    /// fair-share releaser, the sweeper with the retention janitor, the webhook
    /// deliveries and the queue-depth reader.
    tasks: Vec<tokio::task::JoinHandle<()>>,
    jobs: Jobs,
}

impl Application {
    /// Opens the stores, starts the background tasks and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        // The recorder first: everything below may already count or set a gauge.
        let metrics = pixmill_shared::metrics::install();
        pixmill_shared::metrics::register_gateway();
        let events = JobEvents::default();
        // Names this process on its change notices, so its own listener skips them.
        let origin: Arc<str> = format!("gateway-{}", uuid::Uuid::new_v4().simple()).into();
        let jobs = jobs_service(&settings, events.clone(), origin.clone()).await?;
        if !settings.ops.is_empty() {
            // The custom ops' queues exist from the start, so their workers can start
            // consuming before the first job. A broker that is down now gets them with
            // the first publish.
            let declared =
                tokio::time::timeout(Duration::from_secs(5), jobs.publisher.declare()).await;
            match declared {
                Ok(Ok(())) => info!(ops = ?settings.ops.names(), "custom ops' queues declared"),
                Ok(Err(e)) => {
                    warn!(error = %e, "custom ops' queues not declared yet; the first publish will")
                }
                Err(_) => warn!(
                    "custom ops' queues not declared yet (the broker is slow); the first publish will"
                ),
            }
        }
        let stop_tasks = CancellationToken::new();
        let health = TaskHealth::default();
        let queue = queue_depth::Latest::default();
        let tasks = spawn_tasks(
            &settings,
            &jobs,
            &health,
            &queue,
            events,
            origin,
            &stop_tasks,
        );
        let jwt = settings
            .jwt
            .as_ref()
            .map(crate::jwt::JwtVerifier::new)
            .transpose()
            .map_err(|e| {
                anyhow::anyhow!("PIXMILL_JWT_*: the JWT verifier could not be set up: {e}")
            })?;
        let state = AppState {
            jobs: jobs.clone(),
            max_upload_bytes: settings.max_upload_bytes,
            admission: crate::admission::Admission::new(&settings.bounds),
            result_redirect: settings.result_redirect,
            metrics,
            queue,
            health,
            links: settings.link_keys.clone(),
            auth: crate::auth::AuthState::new(settings.auth, jobs.store.clone()).with_jwt(jwt),
            stats: Default::default(),
        };
        info!(mode = %settings.auth, "PIXMILL_AUTH");
        let listener = TcpListener::bind(settings.http_addr).await?;
        Ok(Self {
            listener,
            router: app(state, settings.request_timeout),
            bounds: settings.bounds,
            stop_tasks,
            tasks,
            jobs,
        })
    }

    /// The bound address (tests bind port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The jobs service (its stores and publisher), for tests that set up state the
    /// way a crashed gateway would leave it.
    pub fn jobs(&self) -> Jobs {
        self.jobs.clone()
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests
    /// finish, and stops the background tasks.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        info!(
            addr = %self.local_addr(),
            max_connections = self.bounds.max_connections,
            header_timeout_secs = self.bounds.header_timeout.as_secs(),
            "gateway listening"
        );
        crate::serve::serve(self.listener, self.router, self.bounds, shutdown).await;
        self.stop_tasks.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
        info!("gateway stopped");
        Ok(())
    }
}

/// Opens the task store, the blob store and the publisher: the jobs service.
async fn jobs_service(
    settings: &Settings,
    events: JobEvents,
    origin: Arc<str>,
) -> anyhow::Result<Jobs> {
    let store = store::open(&settings.database_url)
        .await
        .map_err(|e| anyhow::anyhow!("task store {}: {e}", settings.database_url))?;
    let blobs = Blobs::open(&settings.common.blob_url)
        .map_err(|e| anyhow::anyhow!("blob store {}: {e}", settings.common.blob_url))?;
    info!(store = %settings.database_url, blobs = %blobs.describe(), "stores open");
    let publisher = Arc::new(
        Publisher::new(
            &settings.common.amqp_url,
            settings.common.topology.clone(),
            settings.publish_timeout,
        )?
        .with_ops(settings.ops.names()),
    );
    Ok(Jobs {
        published: PublishedMarks::start(store.clone()),
        tenants: Tenants::new(store.clone(), settings.tenants),
        fair_share: FairShare::new(settings.fair_share_window),
        store,
        blobs,
        notifier: Notifier::new(events, publisher.clone(), origin),
        publisher,
        limits: settings.common.limits,
        ops: settings.ops.clone(),
        webhooks: settings.webhooks.clone(),
    })
}

/// Starts the background tasks under `health`, each until `stop` is cancelled. `events`
/// and `origin` are the change listener's: whom it wakes, and which notices it skips.
fn spawn_tasks(
    settings: &Settings,
    jobs: &Jobs,
    health: &TaskHealth,
    queue: &queue_depth::Latest,
    events: JobEvents,
    origin: Arc<str>,
    stop: &CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let topology = settings.common.topology.clone();
    let url = settings.common.amqp_url.clone();
    let mut tasks = vec![
        health.spawn("reply_consumer", stop.clone(), {
            let (url, topology, jobs, stop) =
                (url.clone(), topology.clone(), jobs.clone(), stop.clone());
            move || replies::run(url.clone(), topology.clone(), jobs.clone(), stop.clone())
        }),
        health.spawn("fair_share", stop.clone(), {
            let (jobs, stop) = (jobs.clone(), stop.clone());
            move || {
                fair_share::run(
                    jobs.fair_share.clone(),
                    jobs.store.clone(),
                    jobs.publisher.clone(),
                    stop.clone(),
                )
            }
        }),
        health.spawn("sweeper", stop.clone(), {
            let (jobs, upkeep, stop) = (jobs.clone(), settings.upkeep, stop.clone());
            move || maintenance::run(jobs.clone(), upkeep, stop.clone())
        }),
        health.spawn("webhooks", stop.clone(), {
            let (store, hooks, stop) =
                (jobs.store.clone(), settings.webhooks.clone(), stop.clone());
            move || webhooks::delivery::run(store.clone(), hooks.clone(), stop.clone())
        }),
        health.spawn("queue_depth", stop.clone(), {
            let every = settings.queue_depth_every;
            let management = settings.management_url.clone();
            let vhost = queue_depth::vhost_of(&settings.common.amqp_url);
            let (publisher, queue_name, latest, stop) = (
                jobs.publisher.clone(),
                topology.jobs.clone(),
                queue.clone(),
                stop.clone(),
            );
            let op_queues: Vec<(String, String)> = settings
                .ops
                .names()
                .into_iter()
                .map(|op| {
                    let queue = topology.op_queue(&op);
                    (op, queue)
                })
                .collect();
            move || {
                queue_depth::run(
                    every,
                    management.clone(),
                    vhost.clone(),
                    publisher.clone(),
                    queue_name.clone(),
                    op_queues.clone(),
                    latest.clone(),
                    stop.clone(),
                )
            }
        }),
    ];
    // Only a shared store has other gateways whose changes this one must hear of. SQLite
    // serves one gateway per file, whose waiters hear of every change in process, so it
    // keeps no notice queue: the broker then routes its notices only to other listeners
    // (an audit log, say), and none come back to it.
    if matches!(settings.database_url, store::DatabaseUrl::Postgres(_)) {
        tasks.push(health.spawn("event_listener", stop.clone(), {
            let (topology, stop) = (topology, stop.clone());
            move || {
                events::listen(
                    url.clone(),
                    topology.clone(),
                    events.clone(),
                    origin.clone(),
                    stop.clone(),
                )
            }
        }));
    }
    tasks
}

//! `Application`: builds every part of the gateway and runs it until told to stop.

use std::{future::Future, net::SocketAddr, sync::Arc};

use pixmill_shared::BlobStore;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{
    config::Settings,
    jobs::Jobs,
    publisher::Publisher,
    replies::{self, JobEvents},
    routes::{AppState, app},
    store::TaskStore,
};

/// A built gateway: the socket is bound and the reply consumer is running.
pub struct Application {
    listener: TcpListener,
    router: axum::Router,
    /// Stops the reply consumer and upkeep once HTTP has drained.
    stop_consumer: CancellationToken,
    consumer: tokio::task::JoinHandle<()>,
    /// The sweeper and retention janitor.
    upkeep: tokio::task::JoinHandle<()>,
}

impl Application {
    /// Opens the stores, binds the listener and starts applying replies.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let store = TaskStore::open(&settings.db_path)?;
        let blobs = BlobStore::open(settings.common.blob_dir())?;
        let topology = settings.common.topology.clone();
        let publisher = Arc::new(Publisher::new(
            &settings.common.amqp_url,
            topology.clone(),
            settings.publish_timeout,
        )?);
        let events = JobEvents::default();
        let stop_consumer = CancellationToken::new();
        let consumer = tokio::spawn(replies::run(
            settings.common.amqp_url.clone(),
            topology,
            store.clone(),
            events.clone(),
            stop_consumer.clone(),
        ));
        let jobs = Jobs {
            store,
            blobs,
            publisher,
            events,
            limits: settings.common.limits,
        };
        let upkeep = tokio::spawn(crate::maintenance::run(
            jobs.clone(),
            settings.upkeep,
            stop_consumer.clone(),
        ));
        let state = AppState {
            jobs,
            max_upload_bytes: settings.max_upload_bytes,
        };
        let listener = TcpListener::bind(settings.http_addr).await?;
        Ok(Self {
            listener,
            router: app(state, settings.request_timeout),
            stop_consumer,
            consumer,
            upkeep,
        })
    }

    /// The bound address (tests bind port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// The bound port.
    pub fn port(&self) -> u16 {
        self.local_addr().port()
    }

    /// Serves until `shutdown` resolves, then stops accepting, lets in-flight requests
    /// finish, and stops the reply consumer.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        info!(addr = %self.local_addr(), "gateway listening");
        axum::serve(self.listener, self.router)
            .with_graceful_shutdown(shutdown)
            .await?;
        self.stop_consumer.cancel();
        let _ = self.consumer.await;
        let _ = self.upkeep.await;
        info!("gateway stopped");
        Ok(())
    }
}

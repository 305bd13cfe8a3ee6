//! The worker's small HTTP listener: `GET /metrics` (Prometheus text) and
//! `GET /healthz`, on `PIXMILL_METRICS_ADDR`. Port 0 picks a free port and logs it, so
//! several workers on one machine never collide.

use std::net::SocketAddr;

use axum::{Router, http::header, response::IntoResponse, routing::get};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Binds `addr` and serves until `shutdown`; returns the bound address.
pub async fn serve(addr: SocketAddr, shutdown: CancellationToken) -> std::io::Result<SocketAddr> {
    let handle = pixmill_shared::metrics::install();
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let handle = handle.clone();
                async move {
                    (
                        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                        handle.render(),
                    )
                        .into_response()
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    info!(metrics = %format!("http://{bound}/metrics"), "metrics listening");
    tokio::spawn(async move {
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await;
        if let Err(e) = served {
            warn!(error = %e, "the metrics listener stopped");
        }
    });
    Ok(bound)
}

//! The accept loop: HTTP/1.1 connections under the gateway's connection bounds.
//!
//! `axum::serve` (axum 0.8) sets no timer on its connections, so a client that opens
//! connections and sends its headers a byte at a time, or never, holds each one (a
//! socket, a task, buffers) for as long as it likes. This loop serves the same router
//! with hyper's HTTP/1 server and a Tokio timer:
//!
//! - a request's headers must arrive within `PIXMILL_HEADER_TIMEOUT_SECS` of the server
//!   starting to read them; hyper starts that clock whenever the connection waits for a
//!   request, so the same limit closes a keep-alive connection idle between requests,
//!   and one that never sends anything. A response in flight (an event stream) is not
//!   affected: no request head is awaited then.
//! - at most `PIXMILL_MAX_CONNECTIONS` connections are open. At the cap the loop stops
//!   accepting, so further connections wait in the kernel's listen backlog (and are
//!   served as soon as one closes) rather than being refused; with the header timeout,
//!   a connection that sends nothing gives its slot back within that time.
//!
//! TCP_NODELAY is set on each connection, and graceful shutdown stops accepting, lets
//! every connection finish its request in flight, then returns.

use std::{sync::Arc, time::Duration};

use axum::Router;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::admission::Bounds;

/// Largest read buffer a connection grows to. hyper's default is about 400 KiB, which
/// a 1 MB upload reaches, and a connection keeps the buffer it grew while it stays
/// open: that much on every keep-alive connection. 64 KiB still reads a body in few
/// system calls.
const READ_BUFFER_MAX: usize = 64 * 1024;

/// After a failed `accept` (most often: out of file descriptors), wait this long.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves `router` on `listener` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    bounds: Bounds,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let max = u32::try_from(bounds.max_connections).unwrap_or(u32::MAX);
    let slots = Arc::new(Semaphore::new(max as usize));
    let stop = CancellationToken::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(bounds.header_timeout)
        .keep_alive(true)
        .max_buf_size(READ_BUFFER_MAX);
    loop {
        let slot = tokio::select! {
            () = &mut shutdown => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let tcp = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((tcp, _)) => tcp,
                Err(e) => {
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Responses go out as headers, then body. Without TCP_NODELAY the body's
        // segment waits for the client's delayed ACK of the headers: about 40 ms.
        if let Err(e) = tcp.set_nodelay(true) {
            debug!(error = %e, "could not set TCP_NODELAY");
        }
        let service = TowerToHyperService::new(router.clone());
        let connection = http.serve_connection(TokioIo::new(tcp), service);
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut connection = std::pin::pin!(connection);
            tokio::select! {
                result = connection.as_mut() => finished(result),
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    finished(connection.await);
                }
            }
            drop(slot);
        });
    }
    drop(listener);
    stop.cancel();
    // Every connection holds a slot until it ends: all of them back means all ended.
    let _ = slots.acquire_many(max).await;
}

fn finished(result: Result<(), hyper::Error>) {
    if let Err(e) = result {
        debug!(error = %e, "connection ended");
    }
}

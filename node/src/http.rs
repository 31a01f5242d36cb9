//! Serving the local API: HTTP/1.1 over hyper, with the two limits `axum::serve` cannot set.
//!
//! - **A header-read timeout** (`api.header_read_timeout`): a client must send a request's
//!   whole header within that long of starting it, or of its connection going idle after a
//!   response. A slow-loris client, trickling a header a byte at a time, is cut off; so is an
//!   idle keep-alive connection.
//! - **A connection cap** (`api.max_connections`): the accept loop takes a connection only
//!   when a slot is free; beyond the cap new connections wait in the kernel's listen queue and
//!   are served, in order, as slots free up. Since a slot held without a request is freed by
//!   the timeout, a flood of idle connections delays others by at most that long instead of
//!   exhausting file descriptors and memory.
//!
//! Stopping: the loop stops accepting, each open connection finishes the request it is serving
//! and closes, as `axum::serve`'s graceful shutdown did.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;

/// The limits of the API server.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: u32,
}

impl Limits {
    pub fn of(config: &kp_config::Api) -> Limits {
        Limits { header_read_timeout: config.header_read_timeout, max_connections: config.max_connections }
    }
}

/// Serves `app` on `listener` until `cancel`; then lets open connections finish their request.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1) as usize));
    let connections = TaskTracker::new();
    let mut last_warning: Option<Instant> = None;
    loop {
        if slots.available_permits() == 0 {
            metrics.api_connection_cap_reached.inc();
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    limit = limits.max_connections,
                    "the API serves api.max_connections connections; new ones wait until one ends \
                     (idle ones are closed after api.header_read_timeout)"
                );
            }
        }
        let permit = tokio::select! {
            _ = cancel.cancelled() => break,
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            _ = cancel.cancelled() => break,
            a = listener.accept() => a,
        };
        let (tcp, addr) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: wait a little rather than spin.
                tracing::warn!(error = %e, "API accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let (metrics, cancel) = (metrics.clone(), cancel.clone());
        connections.spawn(async move {
            let _permit = permit;
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_read_timeout);
            let conn = builder.serve_connection(TokioIo::new(tcp), service);
            tokio::pin!(conn);
            let result = tokio::select! {
                r = conn.as_mut() => r,
                _ = cancel.cancelled() => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            match result {
                Ok(()) => {}
                Err(e) if e.is_timeout() => {
                    metrics.api_header_timeouts.inc();
                    tracing::debug!(%addr, timeout = ?limits.header_read_timeout, "closed an API connection: no complete request header in time (api.header_read_timeout)");
                }
                Err(e) => tracing::debug!(%addr, error = %e, "API connection ended with an error"),
            }
        });
    }
    connections.close();
    connections.wait().await;
}

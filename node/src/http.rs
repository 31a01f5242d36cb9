//! Serving the local API: HTTP/1.1 over hyper, with the two limits `axum::serve` cannot set.
//!
//! - **A header-read timeout** (`api.header_read_timeout`): a client must send a request's
//!   whole header within that long of starting it, or of its connection going idle after a
//!   response. A slow-loris client, trickling a header a byte at a time, is cut off; so is an
//!   idle keep-alive connection.
//! - **A connection cap** (`api.max_connections`): beyond the cap a new connection is answered
//!   `503 Service Unavailable` at once and closed, never left waiting unanswered in the
//!   kernel's listen queue behind connections that hold the slots (a local user trickling
//!   headers must not be able to leave `/healthz` hanging). At most `REFUSING` refusals are
//!   in progress at once (each bounded in time); beyond that a connection is closed unanswered.
//!   Since a slot held without a request is freed by the timeout, a flood of idle connections
//!   keeps the API busy for at most that long instead of exhausting file descriptors and memory.
//!
//! Stopping: the loop stops accepting, each open connection finishes the request it is serving
//! and closes, as `axum::serve`'s graceful shutdown did.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
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

/// Connections being refused (answered 503) at once, at most.
const REFUSING: usize = 64;

/// How long refusing a connection may take: writing the answer and reading what the client sent.
const REFUSAL_TIME: Duration = Duration::from_secs(1);

/// The answer to a connection beyond the cap.
const BUSY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nConnection: close\r\n\
Retry-After: 1\r\nContent-Length: 109\r\n\r\n\
{\"error\":\"busy\",\"message\":\"the API is serving api.max_connections connections at once; retry when one ends\"}\n";

/// Answers `tcp` 503 and closes it, reading (and dropping) what the client sent meanwhile so
/// that closing does not reset the connection before the client reads the answer.
async fn refuse(mut tcp: TcpStream) {
    let _ = tokio::time::timeout(REFUSAL_TIME, async {
        tcp.write_all(BUSY).await?;
        tcp.shutdown().await?;
        let mut sink = [0u8; 1024];
        while tcp.read(&mut sink).await? > 0 {}
        Ok::<(), std::io::Error>(())
    })
    .await;
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
    let refusing = Arc::new(Semaphore::new(REFUSING));
    let mut last_warning: Option<Instant> = None;
    loop {
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
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            metrics.api_connection_cap_reached.inc();
            if last_warning.is_none_or(|t| t.elapsed() >= Duration::from_secs(10)) {
                last_warning = Some(Instant::now());
                tracing::warn!(
                    limit = limits.max_connections,
                    "the API serves api.max_connections connections; new ones are answered 503 until one ends \
                     (idle ones are closed after api.header_read_timeout)"
                );
            }
            // Refusals are bounded too: beyond that, the connection is closed unanswered.
            if let Ok(p) = refusing.clone().try_acquire_owned() {
                connections.spawn(async move {
                    let _p = p;
                    refuse(tcp).await;
                });
            }
            continue;
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

#[cfg(test)]
mod tests {
    #[test]
    fn the_busy_answer_is_well_formed() {
        let text = std::str::from_utf8(super::BUSY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains(&format!("Content-Length: {}", body.len())), "{head}");
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}

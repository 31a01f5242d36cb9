//! Serving the local API: HTTP/1.1 over hyper, with the two limits `axum::serve` cannot set.
//!
//! - **A header-read timeout** (`api.header_read_timeout`): a client must send a request's
//!   whole header within that long of starting it, or of its connection going idle after a
//!   response. A slow-loris client, trickling a header a byte at a time, is cut off; so is an
//!   idle keep-alive connection.
//! - **A body-read timeout** (`api.body_read_timeout`): hyper's header timeout stops at the
//!   end of the header, so a client could send one in time and then trickle its body. Every
//!   request's body must arrive within that long of its header; a body still unfinished is
//!   answered `408` naming the setting, and the connection is closed.
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

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::Router;
use hyper::body::{Frame, SizeHint};
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
    pub body_read_timeout: Duration,
    pub max_connections: u32,
}

impl Limits {
    pub fn of(config: &kp_config::Api) -> Limits {
        Limits {
            header_read_timeout: config.header_read_timeout,
            body_read_timeout: config.body_read_timeout,
            max_connections: config.max_connections,
        }
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
    let body_metrics = metrics.clone();
    let app = app.layer(axum::middleware::from_fn(move |req: Request, next: Next| {
        body_deadline(limits.body_read_timeout, body_metrics.clone(), req, next)
    }));
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
        // The peer's address, for the console's sign-in throttle.
        let service = TowerToHyperService::new(tower::ServiceExt::map_request(
            app.clone(),
            move |mut r: Request<hyper::body::Incoming>| {
                r.extensions_mut().insert(axum::extract::ConnectInfo(addr));
                r
            },
        ));
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

/// Gives the request's body `timeout` from now (its header is in) to arrive; a handler still
/// reading it then gets an error, and the client a `408` naming `api.body_read_timeout`, with
/// the connection closed (what is left of the body is never read).
async fn body_deadline(timeout: Duration, metrics: Arc<Metrics>, req: Request, next: Next) -> Response {
    let timed_out = Arc::new(AtomicBool::new(false));
    let flag = timed_out.clone();
    let req = req.map(|inner| {
        Body::new(DeadlineBody {
            inner,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            timed_out: flag,
            timeout,
        })
    });
    let response = next.run(req).await;
    if !timed_out.load(Ordering::Relaxed) {
        return response;
    }
    metrics.api_body_timeouts.inc();
    tracing::debug!(
        ?timeout,
        "answered 408: the request body did not arrive in time (api.body_read_timeout)"
    );
    let message = format!(
        "the request body did not arrive within api.body_read_timeout ({timeout:?}) of its header; send \
         it at once, or raise api.body_read_timeout in node.toml"
    );
    (
        StatusCode::REQUEST_TIMEOUT,
        [(header::CONNECTION, "close")],
        axum::Json(serde_json::json!({ "error": "request_timeout", "message": message })),
    )
        .into_response()
}

/// A request body that fails once its deadline passes before it has been read to its end.
struct DeadlineBody {
    inner: Body,
    deadline: Pin<Box<tokio::time::Sleep>>,
    timed_out: Arc<AtomicBool>,
    timeout: Duration,
}

/// The error a [`DeadlineBody`] ends with.
#[derive(Debug, thiserror::Error)]
#[error("the request body did not arrive within api.body_read_timeout ({0:?})")]
struct BodyTimeout(Duration);

impl hyper::body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            return Poll::Ready(frame);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.timed_out.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(axum::Error::new(BodyTimeout(this.timeout)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
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

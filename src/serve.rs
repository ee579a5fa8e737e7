//! The HTTP server every source shares: its accept loop, its drain at shutdown ([`Drain`]), and the health,
//! readiness and metrics routes.
//!
//! The loop is hyper's, not `axum::serve`, for the two limits axum's leaves out: hyper's header read
//! timeout (it needs a timer, which `axum::serve` does not give it), so a client that sends half a
//! header is cut off; and a cap on connections, beyond which a connection is answered 503 and closed.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

use crate::error_chain::Chain;
use crate::metrics::{Counter, Metrics};
use crate::shutdown::{Drain, Shutdown};
use crate::spool::Spool;

/// What the status routes read.
pub struct Status {
    pub spool: Spool,
    pub metrics: Arc<Metrics>,
    pub bot_name: String,
    pub drain: Arc<Drain>,
}

/// `GET /healthz`, `/readyz`, `/metrics`.
pub(crate) fn status_routes(status: Arc<Status>) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(status)
}

fn unavailable(why: impl std::fmt::Display) -> Response {
    let mut response = (
        StatusCode::SERVICE_UNAVAILABLE,
        axum::Json(json!({ "error": why.to_string() })),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from_static("5"));
    response
}

async fn readyz(State(status): State<Arc<Status>>) -> Response {
    if status.drain.is_draining() {
        return unavailable("shutting down");
    }
    let spool = status.spool.clone();
    match tokio::task::spawn_blocking(move || spool.readiness()).await {
        Ok(Ok(())) => (StatusCode::OK, axum::Json(json!({ "ready": true }))).into_response(),
        Ok(Err(why)) => unavailable(why),
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            axum::Json(json!({ "error": crate::error_chain::chain(&e) })),
        )
            .into_response(),
    }
}

async fn metrics(State(status): State<Arc<Status>>) -> Response {
    let text = status.metrics.render_prometheus(&status.bot_name);
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

/// Limits on connections.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// A request's headers must arrive within this.
    pub header_timeout: Duration,
    pub max_connections: usize,
}

/// Longest a request's headers may take (less when `WICKRIO_INGEST_IDLE_SECS` is shorter).
pub(crate) const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// Bytes hyper buffers per connection (its default is about 400 KiB): with the connection cap, this
/// bounds what connections hold outside the body budget (512 × 64 KiB = 32 MiB).
pub(crate) const READ_BUFFER: usize = 64 << 10;

/// What a connection over the cap is told before it is closed.
const TOO_MANY: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\nConnection: close\r\nContent-Length: 73\r\n\r\n{\"error\":\"too many connections (WICKRIO_INGEST_MAX_CONNECTIONS); retry\"}\n";

/// Serves `app` on `listener` until `shutdown` fires, then lets open connections finish the request
/// in hand (the caller bounds how long).
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, metrics: Arc<Metrics>, mut shutdown: Shutdown) {
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(READ_BUFFER);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, most likely: wait a moment rather than spin.
                    tracing::warn!(error = %Chain(&e), "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.recv() => break,
        };
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            metrics.incr(Counter::RequestsRefused);
            turn_away(stream, peer);
            continue;
        };
        let service = TowerToHyperService::new(app.clone());
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %Chain(&e), %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    graceful.shutdown().await;
}

/// Tells a connection over the cap why (giving it a second to take the answer) and closes it.
fn turn_away(mut stream: TcpStream, peer: SocketAddr) {
    use tokio::io::AsyncWriteExt;
    tracing::debug!(%peer, "connection refused: too many open");
    tokio::spawn(async move {
        let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(TOO_MANY)).await;
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_says_its_own_length() {
        let text = std::str::from_utf8(TOO_MANY).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(
            head.contains(&format!("Content-Length: {}", body.len())),
            "{}",
            body.len()
        );
        serde_json::from_str::<serde_json::Value>(body).unwrap();
    }
}

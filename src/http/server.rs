//! The HTTP listeners: binding with an error that names the flag, a connection limit
//! (`--http-max-connections`: more are answered 503 and closed), an idle timeout
//! (`--http-idle-timeout`: a connection that has not sent a complete request head is closed),
//! graceful shutdown, and the JSON error body every answer of leaderd's uses.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, info, warn};

/// The connection counters of one listener, for whoever exports them (the metrics).
#[derive(Clone, Debug)]
pub struct ListenerStats {
    /// Connections open now.
    pub open: prometheus::IntGauge,
    /// Connections refused because the limit was reached.
    pub refused: prometheus::IntCounter,
}

/// Decrements the open-connections gauge when the connection ends.
struct OpenConnection(prometheus::IntGauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ListenerStats {
    fn opened(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }
}

/// A JSON error body `{"error": message, "status": code}`.
pub fn error(code: StatusCode, message: &str) -> Response {
    (
        code,
        Json(json!({"error": message, "status": code.as_u16()})),
    )
        .into_response()
}

/// Bind `addr`, with an error that names the flag when it fails.
pub async fn bind(addr: SocketAddr, flag: &str) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("cannot listen on {flag} {addr}: {e}; choose a free address with {flag}"),
        )
    })
}

/// What one listener serves at most. Local clients are trusted to ask, not to be frugal: a
/// client that opens connections without end would otherwise take the file descriptors the
/// election needs for its apiserver connections.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once (`--http-max-connections`); more are answered 503 and closed.
    pub max_connections: usize,
    /// A connection that has not sent a complete request head for this long is closed
    /// (`--http-idle-timeout`): an idle keep-alive connection, or a slow client. A stream or a
    /// long poll in progress is not idle.
    pub idle_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 1024,
            idle_timeout: Duration::from_secs(30),
        }
    }
}

/// Refusals in progress at once; beyond that a connection over the limit is closed unanswered.
const MAX_REFUSALS: usize = 64;

/// Serve `router` on `listener` until `shutdown`, within `limits`; then stop accepting, let the
/// requests in flight finish and close the connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    what: &'static str,
    shutdown: CancellationToken,
    limits: Limits,
    stats: Option<ListenerStats>,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, max_connections = limits.max_connections,
        idle_timeout = %humantime::format_duration(limits.idle_timeout), "{what} listening");
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let refusals = Arc::new(Semaphore::new(MAX_REFUSALS));
    let conns = TaskTracker::new();
    let mut last_full_warning: Option<tokio::time::Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(error = %e, "{what}: cannot accept a connection");
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(Duration::from_millis(100)) => continue,
                    }
                }
            },
        };
        let Ok(permit) = permits.clone().try_acquire_owned() else {
            if let Some(s) = &stats {
                s.refused.inc();
            }
            let now = tokio::time::Instant::now();
            if last_full_warning.is_none_or(|t| now - t >= Duration::from_secs(10)) {
                last_full_warning = Some(now);
                warn!(%peer, max_connections = limits.max_connections,
                    "{what}: connection limit reached; answering 503 (raise --http-max-connections if the app needs more)");
            }
            if let Ok(r) = refusals.clone().try_acquire_owned() {
                conns.spawn(async move {
                    refuse(stream, limits.max_connections).await;
                    drop(r);
                });
            }
            continue;
        };
        let service = router.clone().map_request(
            move |mut req: axum::extract::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ConnectInfo(peer));
                req
            },
        );
        let stop = shutdown.clone();
        let open = stats.as_ref().map(ListenerStats::opened);
        conns.spawn(async move {
            let _counted = (permit, open);
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.idle_timeout)
                .keep_alive(true);
            let conn =
                builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        debug!(%peer, error = %e, "connection ended");
                    }
                    return;
                }
                _ = stop.cancelled() => {}
            }
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
    Ok(())
}

/// Answer a connection over the limit with 503 and close it. What the client sent is read
/// first (briefly), so that the close does not reset the connection before the answer is read.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = json!({
        "error": format!("too many connections: this leaderd serves at most {max} at once; close idle connections or raise --http-max-connections"),
        "status": 503,
    })
    .to_string();
    let head = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let mut buf = [0u8; 4096];
    let _ = tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(head.as_bytes()).await?;
        stream.write_all(body.as_bytes()).await?;
        stream.shutdown().await
    })
    .await;
}

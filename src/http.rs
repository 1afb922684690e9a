//! The app-facing HTTP API, served from memory (the published [`StatusRx`]), never from an
//! API call. Listens on 127.0.0.1 by default.
//!
//! | endpoint        | answer                                                          |
//! |-----------------|-----------------------------------------------------------------|
//! | `GET /leader`   | 200, the [`LeaderView`](crate::status::LeaderView) JSON          |
//! | `GET /leader?wait=30s[&epoch=N]` | long poll: answers once the state differs from when it was asked (or from epoch N), or after the wait |
//! | `GET /leader/ready` | 200 if this candidate leads, 503 otherwise; body: the `/leader` JSON |
//! | `GET /leader/stream` | Server-Sent Events: a `leader` event now and on every change, keep-alive comments every 15 s |
//! | `POST /leader/release` | step down and release the lease (loopback clients only); 200 once the release is written, 409 if not leading, 503 if it could not be written |
//! | `GET /healthz`  | 200 while the process works (also on the metrics listener)       |
//! | `GET /readyz`   | 200 once the Lease was observed (led or not), 503 before (also on the metrics listener) |
//! | anything else   | 404 (unknown path) or 405 (wrong method), with a JSON error body  |
//!
//! Each listener ([`serve`]) serves at most `--http-max-connections` connections at once (more
//! are answered 503 and closed) and closes a connection that has not sent a complete request
//! head for `--http-idle-timeout` (idle keep-alive, slow clients).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
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

use crate::election::{Control, ReleaseOutcome};
use crate::metrics::ListenerMetrics;
use crate::status::{LeaderView, StatusRx};

/// The longest long-poll wait accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// The router of the app-facing API; `control` serves `POST /leader/release` (503 without it).
pub fn router(status: StatusRx, control: Option<Control>) -> Router {
    Router::new()
        .route("/leader", get(leader))
        .route("/leader/ready", get(leader_ready))
        .route("/leader/stream", get(leader_stream))
        .with_state(status.clone())
        .route("/leader/release", post(release).with_state(control))
        .merge(probes(status))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
}

/// `/healthz` and `/readyz`, also served on the metrics listener so that kubelet probes (sent to
/// the pod IP) work while the app API stays on 127.0.0.1.
pub fn probes(status: StatusRx) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(status)
}

/// Query of `GET /leader`: a long poll when `wait` is given.
#[derive(Debug, serde::Deserialize)]
struct LeaderQuery {
    /// How long to wait for a change (humantime, e.g. `30s`), at most [`MAX_WAIT`].
    wait: Option<String>,
    /// The epoch the caller last saw: answer at once if the current one differs.
    epoch: Option<i64>,
}

/// What a change is, for long polls and the stream: holder, leadership, epoch.
fn key(v: &LeaderView) -> (Option<String>, bool, Option<i64>) {
    (v.leader.clone(), v.is_leader, v.epoch)
}

async fn leader(
    State(mut status): State<StatusRx>,
    query: Result<Query<LeaderQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(
            StatusCode::BAD_REQUEST,
            "bad query: use ?wait=30s and optionally &epoch=N",
        );
    };
    let now = status.view();
    let Some(wait) = q.wait else {
        return Json(now).into_response();
    };
    let wait = match humantime::parse_duration(&wait) {
        Ok(d) if d <= MAX_WAIT => d,
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "bad wait: use a duration up to 5m, e.g. ?wait=30s",
            )
        }
    };
    if q.epoch.is_some_and(|e| now.epoch != Some(e)) {
        return Json(now).into_response();
    }
    let seen = key(&now);
    let deadline = tokio::time::Instant::now() + wait;
    // A leader's claim ends by the clock, without a publication: wake at its end too.
    let lead_end = |s: &StatusRx| s.state().lead.map(|l| l.valid_until);
    loop {
        let until = lead_end(&status).map_or(deadline, |t| t.min(deadline));
        let changed = tokio::time::timeout_at(until, status.changed()).await;
        let v = status.view();
        if key(&v) != seen
            || tokio::time::Instant::now() >= deadline
            || matches!(changed, Ok(Err(_)))
        {
            return Json(v).into_response();
        }
    }
}

async fn leader_ready(State(status): State<StatusRx>) -> Response {
    let v = status.view();
    let code = if v.is_leader {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(v)).into_response()
}

async fn leader_stream(
    State(status): State<StatusRx>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let events = futures::stream::unfold((status, None), |(mut status, last)| async move {
        loop {
            let v = status.view();
            if last.as_ref() != Some(&key(&v)) {
                let ev = Event::default()
                    .event("leader")
                    .json_data(&v)
                    .unwrap_or_default();
                return Some((Ok(ev), (status, Some(key(&v)))));
            }
            let until = status.state().lead.map(|l| l.valid_until);
            let wait = async {
                match until {
                    Some(t) => tokio::time::timeout_at(t, status.changed())
                        .await
                        .unwrap_or(Ok(())),
                    None => status.changed().await,
                }
            };
            if wait.await.is_err() {
                return None; // the elector is gone
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
}

async fn release(State(control): State<Option<Control>>, req: axum::extract::Request) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>();
    if peer.is_some_and(|ConnectInfo(a)| !a.ip().is_loopback()) {
        return error(
            StatusCode::FORBIDDEN,
            "POST /leader/release is answered to loopback clients only",
        );
    }
    let Some(control) = control else {
        return error(StatusCode::SERVICE_UNAVAILABLE, "no elector to release");
    };
    match control.release().await {
        ReleaseOutcome::Released { epoch } => {
            Json(json!({"released": true, "epoch": epoch})).into_response()
        }
        ReleaseOutcome::NotWritten { epoch, error } => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "released": false,
                "epoch": epoch,
                "status": 503,
                "error": format!("stepped down, but the release could not be written ({error}); followers take over once the lease expires"),
            })),
        )
            .into_response(),
        ReleaseOutcome::NotLeader => error(
            StatusCode::CONFLICT,
            "not the leader: nothing to release",
        ),
        ReleaseOutcome::Unavailable => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the elector is shutting down",
        ),
    }
}

async fn healthz() -> Response {
    Json(json!({"status": "ok"})).into_response()
}

async fn readyz(State(status): State<StatusRx>) -> Response {
    if status.state().ready {
        Json(json!({"status": "ready"})).into_response()
    } else {
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the lease has not been observed yet",
        )
    }
}

async fn not_found() -> Response {
    error(
        StatusCode::NOT_FOUND,
        "no such endpoint: try GET /leader, /leader/ready, /leader/stream, /healthz or /readyz, or POST /leader/release",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: POST /leader/release; GET everything else",
    )
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
    metrics: Option<ListenerMetrics>,
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
            if let Some(m) = &metrics {
                m.refused();
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
        let open = metrics.as_ref().map(ListenerMetrics::opened);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{channel, Identity, Lead, LeaderState};
    use axum::body::Body;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn id() -> Identity {
        Identity {
            lease: "l".into(),
            namespace: "ns".into(),
            identity: "me".into(),
        }
    }

    fn router_t(rx: StatusRx) -> Router {
        router(rx, None)
    }

    async fn call(router: Router, method: &str, path: &str) -> (StatusCode, serde_json::Value) {
        let req = axum::http::Request::builder()
            .method(method)
            .uri(path)
            .body(Body::empty())
            .unwrap();
        let res = router.oneshot(req).await.unwrap();
        let code = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (code, serde_json::from_slice(&body).unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn leader_claim_ends_by_the_clock_even_if_nobody_publishes() {
        let (tx, rx) = channel(id());
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        tx.publish(LeaderState {
            ready: true,
            leader: Some("me".into()),
            epoch: Some(4),
            lead: Some(Lead {
                epoch: 4,
                valid_until: until,
            }),
            ..Default::default()
        });
        let (code, v) = call(router_t(rx.clone()), "GET", "/leader").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["is_leader"], true);
        assert_eq!(v["epoch"], 4);
        assert_eq!(v["valid_for_ms"], 3000);
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        let (_, v) = call(router_t(rx), "GET", "/leader").await;
        assert_eq!(v["is_leader"], false);
        assert_eq!(v["valid_for_ms"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn readyz_waits_for_the_first_observation() {
        let (tx, rx) = channel(id());
        assert_eq!(
            call(router_t(rx.clone()), "GET", "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        tx.publish(LeaderState {
            ready: true,
            ..Default::default()
        });
        assert_eq!(
            call(router_t(rx.clone()), "GET", "/readyz").await.0,
            StatusCode::OK
        );
        assert_eq!(
            call(router_t(rx), "GET", "/healthz").await.0,
            StatusCode::OK
        );
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_get_json_errors() {
        let (_tx, rx) = channel(id());
        let (code, v) = call(router_t(rx.clone()), "GET", "/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(v["status"], 404);
        let (code, v) = call(router_t(rx), "POST", "/leader").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["status"], 405);
    }

    fn leading(epoch: i64, for_secs: u64) -> LeaderState {
        LeaderState {
            ready: true,
            leader: Some("me".into()),
            epoch: Some(epoch),
            lead: Some(Lead {
                epoch,
                valid_until: tokio::time::Instant::now() + std::time::Duration::from_secs(for_secs),
            }),
            ..Default::default()
        }
    }

    fn following(holder: &str, epoch: i64) -> LeaderState {
        LeaderState {
            ready: true,
            leader: Some(holder.into()),
            epoch: Some(epoch),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn leader_ready_is_200_only_while_leading() {
        let (tx, rx) = channel(id());
        tx.publish(following("other", 3));
        let (code, v) = call(router_t(rx.clone()), "GET", "/leader/ready").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["leader"], "other");
        tx.publish(leading(4, 2));
        assert_eq!(
            call(router_t(rx.clone()), "GET", "/leader/ready").await.0,
            StatusCode::OK
        );
        tokio::time::advance(std::time::Duration::from_secs(2)).await;
        assert_eq!(
            call(router_t(rx), "GET", "/leader/ready").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_answers_on_change_on_stale_epoch_and_on_timeout() {
        let (tx, rx) = channel(id());
        tx.publish(following("a", 1));
        let start = tokio::time::Instant::now();
        let publisher = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            tx.publish(following("b", 2));
            tx
        });
        let (code, v) = call(router_t(rx.clone()), "GET", "/leader?wait=30s").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["leader"], "b");
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(1));
        let _tx = publisher.await.unwrap();
        // The caller saw epoch 1; it is 2 now: at once.
        let t = tokio::time::Instant::now();
        let (_, v) = call(router_t(rx.clone()), "GET", "/leader?wait=30s&epoch=1").await;
        assert_eq!(v["epoch"], 2);
        assert_eq!(t.elapsed(), std::time::Duration::ZERO);
        // Nothing changes: after the wait, the same state.
        let (_, v) = call(router_t(rx.clone()), "GET", "/leader?wait=30s&epoch=2").await;
        assert_eq!(v["epoch"], 2);
        assert_eq!(t.elapsed(), std::time::Duration::from_secs(30));
        let (code, _) = call(router_t(rx.clone()), "GET", "/leader?wait=forever").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
        let (code, _) = call(router_t(rx), "GET", "/leader?wait=1h").await;
        assert_eq!(code, StatusCode::BAD_REQUEST);
    }

    #[tokio::test(start_paused = true)]
    async fn long_poll_wakes_when_the_claim_runs_out() {
        let (tx, rx) = channel(id());
        tx.publish(leading(7, 3));
        let t = tokio::time::Instant::now();
        let (_, v) = call(router_t(rx), "GET", "/leader?wait=60s").await;
        assert_eq!(v["is_leader"], false);
        assert!(
            t.elapsed() >= std::time::Duration::from_secs(3)
                && t.elapsed() < std::time::Duration::from_secs(4)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn stream_sends_the_state_now_and_each_change_in_order() {
        let (tx, rx) = channel(id());
        tx.publish(following("a", 1));
        let req = axum::http::Request::builder()
            .uri("/leader/stream")
            .body(Body::empty())
            .unwrap();
        let res = router_t(rx).oneshot(req).await.unwrap();
        assert_eq!(res.headers()["content-type"], "text/event-stream");
        let mut body = res.into_body();
        let mut next_event = async || -> serde_json::Value {
            loop {
                let frame = body.frame().await.expect("stream open").unwrap();
                let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
                if let Some(data) = text.strip_prefix("event: leader\ndata: ") {
                    return serde_json::from_str(data.trim_end()).unwrap();
                }
            }
        };
        assert_eq!(next_event().await["leader"], "a");
        tx.publish(following("b", 2));
        tx.publish(leading(3, 5));
        let v = next_event().await;
        // Changes that land together may coalesce, but never go backwards.
        assert!(v["leader"] == "b" || v["is_leader"] == true, "{v}");
        if v["leader"] == "b" {
            assert_eq!(next_event().await["epoch"], 3);
        }
        // The claim runs out by the clock: a not-leader event follows without a publication.
        let v = next_event().await;
        assert_eq!(v["is_leader"], false);
    }
}

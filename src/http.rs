//! The app-facing HTTP API, served from memory (the published [`StatusRx`]), never from an
//! API call. Listens on 127.0.0.1 by default.
//!
//! | endpoint        | answer                                                          |
//! |-----------------|-----------------------------------------------------------------|
//! | `GET /leader`   | 200, the [`LeaderView`](crate::status::LeaderView) JSON          |
//! | `GET /healthz`  | 200 while the process works (also on the metrics listener)       |
//! | `GET /readyz`   | 200 once the Lease was observed (led or not), 503 before (also on the metrics listener) |
//! | anything else   | 404 (unknown path) or 405 (wrong method), with a JSON error body  |

use std::net::SocketAddr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::status::StatusRx;

/// The router of the app-facing API.
pub fn router(status: StatusRx) -> Router {
    Router::new()
        .route("/leader", get(leader))
        .with_state(status.clone())
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

async fn leader(State(status): State<StatusRx>) -> Response {
    Json(status.view()).into_response()
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
        "no such endpoint: try GET /leader, /healthz or /readyz",
    )
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: these endpoints answer GET only",
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

/// Serve `router` on `listener` until `shutdown`, then finish in-flight requests.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    what: &'static str,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let addr = listener.local_addr()?;
    info!(%addr, "{what} listening");
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
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
        let (code, v) = call(router(rx.clone()), "GET", "/leader").await;
        assert_eq!(code, StatusCode::OK);
        assert_eq!(v["is_leader"], true);
        assert_eq!(v["epoch"], 4);
        assert_eq!(v["valid_for_ms"], 3000);
        tokio::time::advance(std::time::Duration::from_secs(3)).await;
        let (_, v) = call(router(rx), "GET", "/leader").await;
        assert_eq!(v["is_leader"], false);
        assert_eq!(v["valid_for_ms"], serde_json::Value::Null);
    }

    #[tokio::test]
    async fn readyz_waits_for_the_first_observation() {
        let (tx, rx) = channel(id());
        assert_eq!(
            call(router(rx.clone()), "GET", "/readyz").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        tx.publish(LeaderState {
            ready: true,
            ..Default::default()
        });
        assert_eq!(
            call(router(rx.clone()), "GET", "/readyz").await.0,
            StatusCode::OK
        );
        assert_eq!(call(router(rx), "GET", "/healthz").await.0, StatusCode::OK);
    }

    #[tokio::test]
    async fn unknown_paths_and_methods_get_json_errors() {
        let (_tx, rx) = channel(id());
        let (code, v) = call(router(rx.clone()), "GET", "/nope").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        assert_eq!(v["status"], 404);
        let (code, v) = call(router(rx), "POST", "/leader").await;
        assert_eq!(code, StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(v["status"], 405);
    }
}

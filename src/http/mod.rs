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
//! | `/shards…`      | with `--shards`: the shard group ([`shards`]); `/leader` then tells who coordinates the group |
//! | anything else   | 404 (unknown path) or 405 (wrong method), with a JSON error body  |
//!
//! Every lease is also served under `/leases/NAME` (`/leases/NAME/leader`, ...) and every shard
//! group under `/groups/NAME` (`/groups/NAME/shards`, ..., and `/groups/NAME/leader` for its
//! coordinator). With one lease or group those paths and the short ones above are the same;
//! with several (`--config`), only the long ones exist, and `/readyz` waits for all of them.
//!
//! The listeners themselves (connection limit, idle timeout, error bodies) are [`server`].

pub mod server;
pub mod shards;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

pub use self::server::{bind, error, serve, Limits, ListenerStats};
use crate::election::{Control, ReleaseOutcome};
use crate::shards::ShardsRx;
use crate::status::{LeaderView, StatusRx};

/// The longest long-poll wait accepted.
pub const MAX_WAIT: Duration = Duration::from_secs(300);

/// One lease or shard group, as the app-facing API serves it.
#[derive(Clone)]
pub struct Served {
    /// Its name (the Lease's, or the group's).
    pub name: String,
    /// Its published state (for a group: who coordinates it).
    pub status: StatusRx,
    /// Serves `POST /leader/release` (503 without it).
    pub control: Option<Control>,
    /// A shard group's published view, which adds the `/shards` routes ([`shards`]).
    pub shards: Option<ShardsRx>,
}

impl Served {
    /// Where its routes live with several entries: `/leases/NAME` or `/groups/NAME`.
    pub fn prefix(&self) -> String {
        match self.shards {
            Some(_) => format!("/groups/{}", self.name),
            None => format!("/leases/{}", self.name),
        }
    }

    /// Its routes, relative to where they are served.
    fn routes(&self) -> Router {
        let leader_routes = Router::new()
            .route("/leader", get(leader))
            .route("/leader/ready", get(leader_ready))
            .route("/leader/stream", get(leader_stream))
            .with_state(self.status.clone())
            .route(
                "/leader/release",
                post(release).with_state(self.control.clone()),
            );
        match &self.shards {
            Some(s) => leader_routes.merge(shards::routes(s.clone())),
            None => leader_routes,
        }
    }
}

/// The router of the app-facing API for `entries` (at least one): each under its
/// [`Served::prefix`], the only one also at the root; the probes at the root.
pub fn router(entries: Vec<Served>) -> Router {
    let mut router = Router::new();
    for e in &entries {
        router = router.nest(&e.prefix(), e.routes());
    }
    let hint = match &entries[..] {
        [one] => {
            let shards = match one.shards {
                Some(_) => ", GET /shards, /shards/{id}, /shards/stream, POST /shards/release",
                None => "",
            };
            router = router.merge(one.routes());
            format!("no such endpoint: try GET /leader, /leader/ready, /leader/stream, /healthz or /readyz, or POST /leader/release{shards}")
        }
        several => {
            let paths: Vec<String> = several
                .iter()
                .map(|e| match e.shards {
                    Some(_) => format!("{}/shards", e.prefix()),
                    None => format!("{}/leader", e.prefix()),
                })
                .collect();
            format!(
                "no such endpoint: this leaderd serves several leases and groups, each under its own path: try GET {} (and .../ready, .../stream, .../release as for /leader and /shards), /healthz or /readyz",
                paths.join(", ")
            )
        }
    };
    router
        .merge(probes(entries.iter().map(|e| e.status.clone()).collect()))
        .fallback(move || async move { error(StatusCode::NOT_FOUND, &hint) })
        .method_not_allowed_fallback(method_not_allowed)
}

/// `/healthz` and `/readyz` (ready once every lease in `statuses` was observed), also served
/// on the metrics listener so that kubelet probes (sent to the pod IP) work while the app API
/// stays on 127.0.0.1.
pub fn probes(statuses: Vec<StatusRx>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(std::sync::Arc::new(statuses))
}

/// Query of `GET /leader`: a long poll when `wait` is given.
#[derive(Debug, serde::Deserialize)]
struct LeaderQuery {
    /// How long to wait for a change (humantime, e.g. `30s`), at most [`MAX_WAIT`].
    wait: Option<String>,
    /// The epoch the caller last saw: answer at once if the current one differs.
    epoch: Option<i64>,
}

/// What a change is, for long polls and the stream: holder, leadership, epoch, app health.
fn key(v: &LeaderView) -> (Option<String>, bool, Option<i64>, Option<bool>) {
    (v.leader.clone(), v.is_leader, v.epoch, v.app_healthy)
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
    Json(next_change(&mut status, &seen, wait).await).into_response()
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
    event_stream(status, "leader")
}

/// What the long polls and the event streams follow: a published document, which changes with
/// every publication and, when a claim ends by the clock, without one.
pub trait Followed: Send + 'static {
    /// The JSON document answered.
    type Doc: serde::Serialize + Send;
    /// What a change is.
    type Key: PartialEq + Send;
    /// The document as seen now.
    fn doc(&self) -> Self::Doc;
    /// Its key.
    fn key(doc: &Self::Doc) -> Self::Key;
    /// When a claim in it ends by the clock (a timer instant), if one runs.
    fn claim_end(&self) -> Option<tokio::time::Instant>;
    /// The next publication; `Err` once the publisher is gone.
    fn changed(
        &mut self,
    ) -> impl std::future::Future<Output = Result<(), tokio::sync::watch::error::RecvError>> + Send;
}

impl Followed for StatusRx {
    type Doc = LeaderView;
    type Key = (Option<String>, bool, Option<i64>, Option<bool>);
    fn doc(&self) -> LeaderView {
        self.view()
    }
    fn key(v: &LeaderView) -> Self::Key {
        key(v)
    }
    fn claim_end(&self) -> Option<tokio::time::Instant> {
        (self.state().view.tenure).map(|t| crate::election::clock::timer_for(t.valid_until))
    }
    async fn changed(&mut self) -> Result<(), tokio::sync::watch::error::RecvError> {
        StatusRx::changed(self).await
    }
}

/// The long poll: the document once its key differs from `seen` (a publication, or a claim
/// ending by the clock), once the publisher is gone, or after `wait`.
pub async fn next_change<F: Followed>(f: &mut F, seen: &F::Key, wait: Duration) -> F::Doc {
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        let until = f.claim_end().map_or(deadline, |t| t.min(deadline));
        let changed = tokio::time::timeout_at(until, f.changed()).await;
        let d = f.doc();
        if F::key(&d) != *seen
            || tokio::time::Instant::now() >= deadline
            || matches!(changed, Ok(Err(_)))
        {
            return d;
        }
    }
}

/// Server-Sent Events: an event `name` with the document now and on every change, keep-alive
/// comments every 15 s; the stream ends when the publisher is gone.
pub fn event_stream<F: Followed>(
    f: F,
    name: &'static str,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    let events = futures::stream::unfold((f, None), move |(mut f, last)| async move {
        loop {
            let d = f.doc();
            let k = F::key(&d);
            if last.as_ref() != Some(&k) {
                let ev = Event::default()
                    .event(name)
                    .json_data(&d)
                    .unwrap_or_default();
                return Some((Ok(ev), (f, Some(k))));
            }
            let r = match f.claim_end() {
                Some(t) => tokio::time::timeout_at(t, f.changed())
                    .await
                    .unwrap_or(Ok(())),
                None => f.changed().await,
            };
            if r.is_err() {
                return None; // the publisher is gone
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

async fn readyz(State(statuses): State<std::sync::Arc<Vec<StatusRx>>>) -> Response {
    let waiting: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.state().view.ready)
        .map(|s| s.id.lease.as_str())
        .collect();
    match &waiting[..] {
        [] => Json(json!({"status": "ready"})).into_response(),
        [_] if statuses.len() == 1 => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "the lease has not been observed yet",
        ),
        _ => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("not observed yet: {}", waiting.join(", ")),
        ),
    }
}

async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed: POST /leader/release; GET everything else",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::{Tenure, View};
    use crate::status::{channel, Identity, LeaderState};
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
        router(vec![Served {
            name: "l".into(),
            status: rx,
            control: None,
            shards: None,
        }])
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

    #[tokio::test]
    async fn several_leases_are_served_under_their_names_and_only_there() {
        let lease = |name: &str| {
            let (tx, rx) = channel(Identity {
                lease: name.into(),
                ..id()
            });
            let served = Served {
                name: name.into(),
                status: rx,
                control: None,
                shards: None,
            };
            (tx, served)
        };
        let ((tx_a, a), (_tx_b, b)) = (lease("a"), lease("b.example"));
        tx_a.publish(LeaderState {
            view: View {
                ready: true,
                ..Default::default()
            },
            ..Default::default()
        });
        let r = router(vec![a.clone(), b]);
        let (code, v) = call(r.clone(), "GET", "/leases/b.example/leader").await;
        assert_eq!(
            (code, v["lease"].as_str()),
            (StatusCode::OK, Some("b.example"))
        );
        let (code, v) = call(r.clone(), "GET", "/leases/a/leader").await;
        assert_eq!((code, v["lease"].as_str()), (StatusCode::OK, Some("a")));
        let (code, v) = call(r.clone(), "GET", "/leader").await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let msg = v["error"].as_str().unwrap();
        assert!(
            msg.contains("/leases/a/leader") && msg.contains("/leases/b.example/leader"),
            "{msg}"
        );
        // Ready once every lease was observed: b not yet.
        let (code, v) = call(r.clone(), "GET", "/readyz").await;
        assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(v["error"], "not observed yet: b.example");
        assert_eq!(
            call(r, "POST", "/leases/a/leader/release").await.0,
            StatusCode::SERVICE_UNAVAILABLE
        );
        // One lease: the short and the long paths both.
        let one = router(vec![a]);
        assert_eq!(call(one.clone(), "GET", "/leader").await.0, StatusCode::OK);
        assert_eq!(
            call(one.clone(), "GET", "/leases/a/leader").await.0,
            StatusCode::OK
        );
        assert_eq!(call(one, "GET", "/readyz").await.0, StatusCode::OK);
    }

    #[tokio::test(start_paused = true)]
    async fn leader_claim_ends_by_the_clock_even_if_nobody_publishes() {
        let (tx, rx) = channel(id());
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        tx.publish(LeaderState {
            view: View {
                ready: true,
                holder: Some("me".into()),
                epoch: Some(4),
                tenure: Some(Tenure {
                    epoch: 4,
                    valid_until: until,
                }),
                ..Default::default()
            },
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
            view: View {
                ready: true,
                ..Default::default()
            },
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
            view: View {
                ready: true,
                holder: Some("me".into()),
                epoch: Some(epoch),
                tenure: Some(Tenure {
                    epoch,
                    valid_until: tokio::time::Instant::now()
                        + std::time::Duration::from_secs(for_secs),
                }),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn following(holder: &str, epoch: i64) -> LeaderState {
        LeaderState {
            view: View {
                ready: true,
                holder: Some(holder.into()),
                epoch: Some(epoch),
                ..Default::default()
            },
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

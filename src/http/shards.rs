//! The shard group's part of the app-facing API (with `--shards`), served from the published
//! [`ShardsRx`]; ownership is judged at the moment of the answer, like `is_leader`.
//!
//! | endpoint | answer |
//! |---|---|
//! | `GET /shards` | 200, the [`ShardsDoc`](crate::shards::ShardsDoc) JSON: group, identity, members, one entry per shard |
//! | `GET /shards?wait=30s` | long poll: answers once the document differs from when it was asked (owners, epochs, ownership), or after the wait |
//! | `GET /shards/stream` | Server-Sent Events: a `shards` event now and on every change |
//! | `GET /shards/{id}` | the `/leader` JSON for that shard: `leader` = its owner, `is_leader` = this replica owns it, `epoch` = the shard's epoch |
//! | `POST /shards/release` | hand every owned shard over (loopback clients only): 200 once the leaving record is written, 503 if not; the replica takes shards again after one lease duration |

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;

use super::{error, event_stream, next_change, MAX_WAIT};
use crate::election::clock;
use crate::shards::{ShardsDoc, ShardsRx};
use crate::status::LeaderView;

/// The routes of a shard group.
pub fn routes(shards: ShardsRx) -> Router {
    Router::new()
        .route("/shards", get(list))
        .route("/shards/stream", get(stream))
        .route("/shards/release", post(release))
        .route("/shards/{id}", get(one))
        .with_state(shards)
}

#[derive(Debug, serde::Deserialize)]
struct WaitQuery {
    wait: Option<String>,
}

/// Per shard: its owner, epoch and whether this replica owns it.
type ShardKey = (Option<String>, Option<i64>, bool);

/// What a change is: every shard's [`ShardKey`], and the members.
fn key(d: &ShardsDoc) -> (Vec<ShardKey>, Vec<String>) {
    (
        d.shards
            .iter()
            .map(|s| (s.owner.clone(), s.epoch, s.is_owner))
            .collect(),
        d.members.clone(),
    )
}

impl super::Followed for ShardsRx {
    type Doc = ShardsDoc;
    type Key = (Vec<ShardKey>, Vec<String>);
    fn doc(&self) -> ShardsDoc {
        ShardsRx::doc(self)
    }
    fn key(d: &ShardsDoc) -> Self::Key {
        key(d)
    }
    /// When the claims end by the clock (a change without a publication).
    fn claim_end(&self) -> Option<tokio::time::Instant> {
        let s = self.state();
        s.valid_until
            .filter(|_| !s.owned.is_empty())
            .map(clock::timer_for)
    }
    async fn changed(&mut self) -> Result<(), tokio::sync::watch::error::RecvError> {
        ShardsRx::changed(self).await
    }
}

async fn list(
    State(mut shards): State<ShardsRx>,
    query: Result<Query<WaitQuery>, axum::extract::rejection::QueryRejection>,
) -> Response {
    let Ok(Query(q)) = query else {
        return error(StatusCode::BAD_REQUEST, "bad query: use ?wait=30s");
    };
    let now = shards.doc();
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
    let seen = key(&now);
    Json(next_change(&mut shards, &seen, wait).await).into_response()
}

async fn stream(
    State(shards): State<ShardsRx>,
) -> Sse<impl futures::Stream<Item = Result<Event, Infallible>>> {
    event_stream(shards, "shards")
}

async fn one(State(shards): State<ShardsRx>, Path(id): Path<String>) -> Response {
    let n = shards.id.shards;
    let Some(id) = id.parse::<u32>().ok().filter(|i| *i < n) else {
        return error(
            StatusCode::NOT_FOUND,
            &format!("no such shard: use an id from 0 to {}", n - 1),
        );
    };
    let d = shards.doc();
    let s = &d.shards[id as usize];
    Json(LeaderView {
        lease: d.group,
        namespace: d.namespace,
        identity: d.identity,
        leader: s.owner.clone(),
        is_leader: s.is_owner,
        epoch: s.epoch,
        lease_uid: None,
        valid_for_ms: s.valid_for_ms,
        observed_at: None,
        app_healthy: None,
    })
    .into_response()
}

async fn release(State(shards): State<ShardsRx>, req: axum::extract::Request) -> Response {
    let peer = req.extensions().get::<ConnectInfo<SocketAddr>>();
    if peer.is_some_and(|ConnectInfo(a)| !a.ip().is_loopback()) {
        return error(
            StatusCode::FORBIDDEN,
            "POST /shards/release is answered to loopback clients only",
        );
    }
    // The leaving record is written within a few calls; a store that does not answer is
    // reported rather than waited on.
    let limit = Duration::from_secs(10);
    match tokio::time::timeout(limit, shards.release()).await.ok().flatten() {
        Some(true) => Json(json!({"released": true})).into_response(),
        Some(false) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stepped down from every shard, but the leaving record could not be written yet (it is retried); the others take the shards over once it is, or once this replica's record expires",
        ),
        None => error(
            StatusCode::SERVICE_UNAVAILABLE,
            "stepped down from every shard (if the group is running), but no leaving record was written within 10 s; the others take the shards over once it is, or once this replica's record expires",
        ),
    }
}

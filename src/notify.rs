//! `--notify-url`: POST the `/leader` JSON to the app on every change (holder, leadership,
//! epoch), retried with backoff until it is answered 2xx; a newer state replaces one not yet
//! delivered. Reads only the published state, so a slow app never delays the election.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::metrics::Metrics;
use crate::status::{LeaderView, StatusRx, Transitions};

/// Time limit of one POST.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

fn key(v: &LeaderView) -> (Option<String>, bool, Option<i64>) {
    (v.leader.clone(), v.is_leader, v.epoch)
}

/// POST one state; `Ok` on a 2xx answer.
async fn post(
    client: &Client<HttpConnector, Full<Bytes>>,
    url: &http::Uri,
    v: &LeaderView,
) -> Result<(), String> {
    let body = serde_json::to_vec(v).map_err(|e| e.to_string())?;
    let req = http::Request::post(url.clone())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    match timeout(CALL_TIMEOUT, client.request(req)).await {
        Ok(Ok(res)) if res.status().is_success() => Ok(()),
        Ok(Ok(res)) => Err(format!("answered {}", res.status())),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("no answer within 5s".to_owned()),
    }
}

/// Notify `url` of the state once the Lease was first observed and after every transition,
/// until the stream ends (the elector is gone) or `stop` (which also cuts a POST short).
pub async fn run(
    url: http::Uri,
    mut status: StatusRx,
    mut transitions: Transitions,
    metrics: Option<Arc<Metrics>>,
    stop: CancellationToken,
) {
    if !status.wait_ready(&stop).await {
        return;
    }
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut delivered = None;
    let mut backoff = Duration::from_millis(200);
    let mut retry_at: Option<Instant> = None;
    let mut failures = 0u32;
    loop {
        let v = status.view();
        if v.observed_at.is_some()
            && delivered.as_ref() != Some(&key(&v))
            && retry_at.is_none_or(|t| Instant::now() >= t)
        {
            let res = tokio::select! {
                _ = stop.cancelled() => break,
                r = post(&client, &url, &v) => r,
            };
            if let Some(m) = &metrics {
                m.side_effect("notify", if res.is_ok() { "ok" } else { "error" });
            }
            match res {
                Ok(()) => {
                    debug!(url = %url, "notified the app");
                    delivered = Some(key(&v));
                    retry_at = None;
                    backoff = Duration::from_millis(200);
                    failures = 0;
                }
                Err(e) => {
                    failures += 1;
                    if failures == 1 || failures.is_power_of_two() {
                        warn!(url = %url, error = %e, failures, "could not notify the app (the election is unaffected); will retry");
                    }
                    retry_at = Some(Instant::now() + crate::election::jitter(backoff));
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            continue;
        }
        if !transitions.wait(retry_at).await {
            break;
        }
    }
}

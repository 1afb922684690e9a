//! `--label-pod`: keep this pod's label `<key>=leader|follower` in step with the published
//! leader state, so that a Service can select the leader pod.
//!
//! The labeler only reads the [`StatusRx`]; it never touches the election. A failed patch is
//! logged, counted (`leaderd_side_effects_total{kind="pod_label"}`) and retried with backoff;
//! the newest state always wins. Leadership that runs out by the clock turns the label to
//! `follower` without waiting for a publication. On shutdown the label is set to `follower`
//! (bounded).
//!
//! The label is advisory and lags the truth by one API call: a Service routing on it can
//! briefly reach a deposed leader. Side effects must still be fenced with the epoch.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::time::{timeout, Instant};
use tracing::{debug, info, warn};

use crate::metrics::Metrics;
use crate::status::{StatusRx, Transitions};

/// Time limit of one patch.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait between retries.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// The label value for the state in `status` now.
fn role(status: &StatusRx) -> &'static str {
    if status.view().is_leader {
        "leader"
    } else {
        "follower"
    }
}

/// Label `pod` in `namespace` after every transition until the stream ends (the elector is
/// gone), then set `follower` once more (within 5 s).
pub async fn run(
    client: kube::Client,
    namespace: String,
    pod: String,
    key: String,
    status: StatusRx,
    mut transitions: Transitions,
    metrics: Option<Arc<Metrics>>,
) {
    let api: Api<Pod> = Api::namespaced(client, &namespace);
    let patch = |value: &'static str| {
        let (api, pod, key, metrics) = (api.clone(), pod.clone(), key.clone(), metrics.clone());
        async move {
            let body = json!({"metadata": {"labels": {key.as_str(): value}}});
            let res = timeout(
                CALL_TIMEOUT,
                api.patch(&pod, &PatchParams::default(), &Patch::Merge(&body)),
            )
            .await;
            let (ok, result) = match &res {
                Ok(Ok(_)) => (true, "ok"),
                Ok(Err(_)) => (false, "error"),
                Err(_) => (false, "timeout"),
            };
            if let Some(m) = &metrics {
                m.side_effect("pod_label", result);
            }
            match res {
                Ok(Ok(_)) => {
                    info!(pod = %pod, label = %format!("{key}={value}"), "labeled the pod")
                }
                Ok(Err(e)) => {
                    warn!(pod = %pod, error = %e, "could not label the pod (the election is unaffected); will retry")
                }
                Err(_) => {
                    warn!(pod = %pod, "labeling the pod timed out (the election is unaffected); will retry")
                }
            }
            ok
        }
    };
    let mut applied: Option<&'static str> = None;
    let mut backoff = Duration::from_millis(500);
    let mut retry_at: Option<Instant> = None;
    loop {
        let want = role(&status);
        if applied != Some(want) && retry_at.is_none_or(|t| Instant::now() >= t) {
            if patch(want).await {
                applied = Some(want);
                retry_at = None;
                backoff = Duration::from_millis(500);
            } else {
                retry_at = Some(Instant::now() + crate::election::jitter(backoff));
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            continue;
        }
        if !transitions.wait(retry_at).await {
            break;
        }
    }
    if applied != Some("follower") {
        debug!("setting the pod label to follower before exiting");
        let _ = patch("follower").await;
    }
}

//! Kubernetes Events on leadership transitions (`BecameLeader`, `StoppedLeading`), posted on
//! the Lease through kube-rs's event recorder, from a task of their own: a failure to post is
//! logged and never touches the election.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{debug, warn};

use crate::election::Transition;
use crate::status::Transitions;

/// Post an Event for each transition received on `rx`, until the stream ends; each post is
/// bounded by `call_timeout` (a cut-off apiserver must not hold up the shutdown).
pub async fn publish(
    client: kube::Client,
    namespace: String,
    lease: String,
    identity: String,
    mut rx: Transitions,
    call_timeout: std::time::Duration,
) {
    let recorder = Recorder::new(
        client,
        Reporter {
            controller: "leaderd".into(),
            instance: Some(identity.clone()),
        },
    );
    let reference = ObjectReference {
        api_version: Some("coordination.k8s.io/v1".into()),
        kind: Some("Lease".into()),
        name: Some(lease),
        namespace: Some(namespace),
        ..Default::default()
    };
    let mut failures = 0u64;
    while let Some(t) = rx.recv().await {
        let Some(event) = event_for(&identity, &t) else {
            continue;
        };
        let posted = tokio::time::timeout(call_timeout, recorder.publish(&event, &reference))
            .await
            .unwrap_or_else(|_| {
                Err(kube::Error::Service(
                    format!(
                        "no answer within {}",
                        humantime::format_duration(call_timeout)
                    )
                    .into(),
                ))
            });
        match posted {
            Ok(()) => debug!(reason = %event.reason, "posted event"),
            Err(e) => {
                failures += 1;
                // Once loudly, then quietly: a missing RBAC rule would otherwise flood the log.
                if failures == 1 {
                    warn!(error = %e, "could not post a Kubernetes Event (the election is unaffected); grant create and patch on events.k8s.io events, or pass --emit-events false");
                } else {
                    debug!(error = %e, "could not post a Kubernetes Event");
                }
            }
        }
    }
}

/// The Event describing a transition of this candidate's own tenure (none for others').
pub fn event_for(identity: &str, t: &Transition) -> Option<Event> {
    Some(match t {
        Transition::Acquired { epoch } => Event {
            type_: EventType::Normal,
            reason: "BecameLeader".into(),
            note: Some(format!("{identity} became leader with epoch {epoch}")),
            action: "Acquire".into(),
            secondary: None,
        },
        Transition::Lost { reason, .. } => Event {
            type_: if reason.is_deliberate() {
                EventType::Normal
            } else {
                EventType::Warning
            },
            reason: "StoppedLeading".into(),
            note: Some(format!("{identity} stopped leading: {}", reason.as_str())),
            action: "StepDown".into(),
            secondary: None,
        },
        Transition::NewLeader { .. } | Transition::ReleaseFinished(_) => return None,
    })
}

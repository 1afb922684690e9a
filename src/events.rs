//! Kubernetes Events on leadership transitions (`BecameLeader`, `StoppedLeading`), and for shard
//! groups on moves (`ShardsMoved`, at most one per [`SHARD_EVENT_INTERVAL`], the moves in
//! between summed) and shard count mismatches (`ShardCountMismatch`), posted on the Lease
//! through kube-rs's event recorder, from a task of their own: a failure to post is logged and
//! never touches the election.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use tracing::{debug, warn};

use std::collections::BTreeMap;

use crate::election::Transition;
use crate::shards::ShardTransition;
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
    let mut poster = Poster::new(client, namespace, lease, identity.clone(), call_timeout);
    while let Some(t) = rx.recv().await {
        if let Some(event) = event_for(&identity, &t) {
            poster.post(event).await;
        }
    }
}

/// Posts Events on one Lease, each bounded by the call timeout; failures logged once loudly.
struct Poster {
    recorder: Recorder,
    reference: ObjectReference,
    call_timeout: std::time::Duration,
    failures: u64,
}

impl Poster {
    fn new(
        client: kube::Client,
        namespace: String,
        lease: String,
        identity: String,
        call_timeout: std::time::Duration,
    ) -> Poster {
        Poster {
            recorder: Recorder::new(
                client,
                Reporter {
                    controller: "leaderd".into(),
                    instance: Some(identity),
                },
            ),
            reference: ObjectReference {
                api_version: Some("coordination.k8s.io/v1".into()),
                kind: Some("Lease".into()),
                name: Some(lease),
                namespace: Some(namespace),
                ..Default::default()
            },
            call_timeout,
            failures: 0,
        }
    }

    async fn post(&mut self, event: Event) {
        let call_timeout = self.call_timeout;
        let posted =
            tokio::time::timeout(call_timeout, self.recorder.publish(&event, &self.reference))
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
                self.failures += 1;
                // Once loudly, then quietly: a missing RBAC rule would otherwise flood the log.
                if self.failures == 1 {
                    warn!(error = %e, "could not post a Kubernetes Event (the election is unaffected); grant create and patch on events.k8s.io events, or pass --emit-events false");
                } else {
                    debug!(error = %e, "could not post a Kubernetes Event");
                }
            }
        }
    }
}

/// At most one `ShardsMoved` Event per this interval (moves in between are summed).
pub const SHARD_EVENT_INTERVAL: std::time::Duration = std::time::Duration::from_secs(10);

/// Post `ShardsMoved` (rate-limited) and `ShardCountMismatch` Events for the shard group's
/// transitions received on `rx` (the group's Lease is the Events' object), until it ends.
pub async fn publish_shards(
    client: kube::Client,
    namespace: String,
    group: String,
    identity: String,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<ShardTransition>,
    call_timeout: std::time::Duration,
) {
    let mut poster = Poster::new(client, namespace, group, identity.clone(), call_timeout);
    let mut pending: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut gen = 0;
    let mut next_post = tokio::time::Instant::now();
    loop {
        let t = if pending.is_empty() {
            rx.recv().await
        } else {
            match tokio::time::timeout_at(next_post, rx.recv()).await {
                Ok(t) => t,
                Err(_) => {
                    poster.post(moves_event(&identity, &pending, gen)).await;
                    pending.clear();
                    next_post = tokio::time::Instant::now() + SHARD_EVENT_INTERVAL;
                    continue;
                }
            }
        };
        let Some(t) = t else {
            if !pending.is_empty() {
                poster.post(moves_event(&identity, &pending, gen)).await;
            }
            return;
        };
        match t {
            ShardTransition::Moved { moves, gen: g } => {
                for (reason, n) in moves {
                    *pending.entry(reason.as_str()).or_default() += n;
                }
                gen = g;
            }
            ShardTransition::Mismatch {
                group_shards: Some(n),
            } => {
                poster
                    .post(Event {
                        type_: EventType::Warning,
                        reason: "ShardCountMismatch".into(),
                        note: Some(format!(
                            "{identity} was started with another --shards than its group ({n}): it owns no shard and does not coordinate; start every replica with the same --shards"
                        )),
                        action: "Mismatch".into(),
                        secondary: None,
                    })
                    .await
            }
            _ => {}
        }
    }
}

fn moves_event(identity: &str, moves: &BTreeMap<&'static str, usize>, gen: u64) -> Event {
    let total: usize = moves.values().sum();
    let by: Vec<String> = moves.iter().map(|(k, v)| format!("{k} {v}")).collect();
    Event {
        type_: if moves.contains_key("member_lost") {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: "ShardsMoved".into(),
        note: Some(format!(
            "{identity} (coordinator) gave {total} shards a new owner or epoch ({}), assignment generation {gen}",
            by.join(", ")
        )),
        action: "Assign".into(),
        secondary: None,
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

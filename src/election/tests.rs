//! Unit tests of the election (state machine + campaign loop) on tokio's paused clock, with
//! candidates sharing an in-memory store.

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use super::memory::{Fault, MemoryStore};
use super::*;
use crate::status::{channel, Identity, LeaderView, StatusRx};

const D: Duration = Duration::from_secs(15);
const R: Duration = Duration::from_secs(10);
const P: Duration = Duration::from_secs(2);

fn params(id: &str) -> Params {
    Params {
        identity: id.into(),
        lease_duration: D,
        renew_deadline: R,
        retry_period: P,
    }
}

struct Candidate {
    status: StatusRx,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    transitions: mpsc::UnboundedReceiver<Transition>,
}

fn spawn(store: &MemoryStore, id: &str) -> Candidate {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (tx, rx) = channel(Identity {
        lease: "l".into(),
        namespace: "ns".into(),
        identity: id.into(),
    });
    let (ttx, trx) = mpsc::unbounded_channel();
    let stop = CancellationToken::new();
    let elector =
        Elector::new(store.client(id), ElectorConfig::new(params(id)), tx).with_transitions(ttx);
    let done = tokio::spawn(elector.run(stop.clone()));
    Candidate {
        status: rx,
        stop,
        done,
        transitions: trx,
    }
}

/// Wait (on status changes, not sleeps) until `pred` holds, at most `within` of (paused) time.
async fn until(
    c: &mut Candidate,
    within: Duration,
    pred: impl Fn(&LeaderView) -> bool,
) -> LeaderView {
    let end = Instant::now() + within;
    loop {
        let v = c.status.view();
        if pred(&v) {
            return v;
        }
        let left = end.saturating_duration_since(Instant::now());
        match timeout(left, c.status.changed()).await {
            Ok(Ok(())) => {}
            _ => panic!("condition not met within {within:?}; last view {v:?}"),
        }
    }
}

/// The next transitions reported, in order.
async fn expect_transitions(c: &mut Candidate, expected: &[Transition]) {
    for want in expected {
        assert_eq!(c.transitions.recv().await.as_ref(), Some(want));
    }
}

fn held_by(holder: &str, transitions: i64) -> serde_json::Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "l", "namespace": "ns"},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": "2001-01-01T00:00:00.000000Z", "leaseTransitions": transitions}
    })
}

#[tokio::test(start_paused = true)]
async fn absent_lease_is_created_after_one_lease_duration_with_epoch_one() {
    let store = MemoryStore::new();
    let start = Instant::now();
    let mut a = spawn(&store, "a");
    let v = until(&mut a, D * 2, |v| v.is_leader).await;
    assert!(
        start.elapsed() >= D,
        "created before the absence was waited out"
    );
    assert_eq!(v.epoch, Some(1));
    assert_eq!(v.leader.as_deref(), Some("a"));
    assert_eq!(v.valid_for_ms, Some(R.as_millis() as u64));
    assert_eq!(
        a.transitions.recv().await,
        Some(Transition::Acquired { epoch: 1 })
    );
    let rec = store.object().unwrap().record;
    assert_eq!(rec.holder.as_deref(), Some("a"));
    assert_eq!(rec.lease_duration_seconds, Some(15));
    assert_eq!(rec.transitions, Some(1));
}

#[tokio::test(start_paused = true)]
async fn renewals_keep_the_epoch_and_followers_keep_out() {
    let store = MemoryStore::new();
    let mut a = spawn(&store, "a");
    until(&mut a, D * 2, |v| v.is_leader).await;
    let mut b = spawn(&store, "b");
    until(&mut b, P, |v| v.leader.as_deref() == Some("a")).await;
    let writes_before = store.requests("a");
    tokio::time::sleep(D * 4).await; // long past any expiry, were "a" not renewing
    assert!(a.status.view().is_leader);
    assert!(!b.status.view().is_leader);
    assert_eq!(a.status.view().epoch, Some(1));
    let renewals = store.requests("a") - writes_before;
    assert!(
        (25..=32).contains(&renewals),
        "{renewals} renewals in 60 s at a 2 s period"
    );
    // The follower did not poll: it relies on the watch.
    assert!(
        store.requests("b") <= 3,
        "follower made {} requests",
        store.requests("b")
    );
}

#[tokio::test(start_paused = true)]
async fn partitioned_leader_steps_down_at_the_renew_deadline_before_anyone_takes_over() {
    let store = MemoryStore::new();
    let mut a = spawn(&store, "a");
    until(&mut a, D * 2, |v| v.is_leader).await;
    let mut b = spawn(&store, "b");
    until(&mut b, P, |v| v.leader.as_deref() == Some("a")).await;
    // Let one renewal happen, then cut "a" off: its requests hang.
    let rv = store.object().unwrap().resource_version;
    until(&mut b, P * 2, |_| {
        store.object().unwrap().resource_version != rv
    })
    .await;
    let cut = Instant::now();
    store.set_fault(
        "a",
        Fault {
            hang: true,
            fail: None,
        },
    );
    // What the app sees is computed from the clock: no claim at cut + R, whatever was published.
    let claim_end = a.status.state().lead.unwrap().valid_until;
    assert!(
        claim_end <= cut + R,
        "claims until {:?} after the cut",
        claim_end - cut
    );
    tokio::time::sleep_until(claim_end).await;
    assert!(!a.status.view().is_leader);
    until(&mut a, Duration::from_millis(5), |v| !v.is_leader).await;
    let stepped_down = claim_end;
    assert!(
        !b.status.view().is_leader,
        "b took over while a still claimed"
    );
    let v = until(&mut b, D + P, |v| v.is_leader).await;
    let took_over = Instant::now();
    assert!(
        took_over - stepped_down >= D - R - P,
        "margin {:?}",
        took_over - stepped_down
    );
    assert_eq!(v.epoch, Some(2));
    assert!(!a.status.view().is_leader);
    expect_transitions(
        &mut a,
        &[
            Transition::Acquired { epoch: 1 },
            Transition::Lost {
                reason: LossReason::RenewDeadline,
            },
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn follower_judges_expiry_from_its_own_observation_not_renew_time() {
    let store = MemoryStore::new();
    // A holder whose renewTime is 25 years old, written just now.
    store.foreign_put(held_by("ghost", 7));
    let start = Instant::now();
    let mut b = spawn(&store, "b");
    let v = until(&mut b, D * 2, |v| v.is_leader).await;
    assert!(
        start.elapsed() >= D,
        "took over after {:?}",
        start.elapsed()
    );
    assert_eq!(v.epoch, Some(8));
}

#[tokio::test(start_paused = true)]
async fn every_renewal_seen_restarts_the_followers_wait() {
    let store = MemoryStore::new();
    store.foreign_put(held_by("ghost", 1));
    let mut b = spawn(&store, "b");
    until(&mut b, P, |v| v.leader.as_deref() == Some("ghost")).await;
    for _ in 0..5 {
        tokio::time::sleep(D - P).await;
        store.foreign_put(held_by("ghost", 1)); // a renewal: new resourceVersion
    }
    assert!(!b.status.view().is_leader);
    let v = until(&mut b, D + P, |v| v.is_leader).await;
    assert_eq!(v.epoch, Some(2));
}

#[tokio::test(start_paused = true)]
async fn foreign_takeover_ends_the_tenure_without_waiting_for_the_deadline() {
    let store = MemoryStore::new();
    let mut a = spawn(&store, "a");
    until(&mut a, D * 2, |v| v.is_leader).await;
    let taken = Instant::now();
    store.foreign_put(held_by("intruder", 5));
    let v = until(&mut a, P * 2, |v| !v.is_leader).await;
    assert!(taken.elapsed() < P * 2);
    assert_eq!(v.leader.as_deref(), Some("intruder"));
    expect_transitions(
        &mut a,
        &[
            Transition::Acquired { epoch: 1 },
            Transition::Lost {
                reason: LossReason::Taken,
            },
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn annotation_edits_by_others_do_not_end_the_tenure() {
    let store = MemoryStore::new();
    let mut a = spawn(&store, "a");
    until(&mut a, D * 2, |v| v.is_leader).await;
    let mut obj = store.object().unwrap().raw;
    obj["metadata"]["annotations"] = json!({"team": "payments"});
    store.foreign_put(obj);
    tokio::time::sleep(D * 2).await;
    let v = a.status.view();
    assert!(v.is_leader);
    assert_eq!(v.epoch, Some(1));
    assert_eq!(
        store.object().unwrap().raw["metadata"]["annotations"]["team"],
        "payments"
    );
}

#[tokio::test(start_paused = true)]
async fn release_on_shutdown_hands_over_at_once_with_a_higher_epoch() {
    let store = MemoryStore::new();
    let mut a = spawn(&store, "a");
    until(&mut a, D * 2, |v| v.is_leader).await;
    let mut b = spawn(&store, "b");
    until(&mut b, P, |v| v.leader.as_deref() == Some("a")).await;
    let t = Instant::now();
    a.stop.cancel();
    a.done.await.unwrap();
    assert!(!a.status.view().is_leader);
    let v = until(&mut b, Duration::from_millis(100), |v| v.is_leader).await;
    assert!(t.elapsed() < Duration::from_millis(100));
    assert_eq!(v.epoch, Some(2));
}

#[tokio::test(start_paused = true)]
async fn empty_holder_without_release_marker_is_waited_out() {
    let store = MemoryStore::new();
    let mut obj = held_by("", 3);
    obj["spec"]
        .as_object_mut()
        .unwrap()
        .remove("holderIdentity");
    store.foreign_put(obj);
    let start = Instant::now();
    let mut b = spawn(&store, "b");
    until(&mut b, D * 2, |v| v.is_leader).await;
    assert!(start.elapsed() >= D);
}

#[tokio::test(start_paused = true)]
async fn conflicting_candidates_elect_exactly_one() {
    let store = MemoryStore::new();
    store.foreign_put(held_by("ghost", 1));
    let mut cs: Vec<Candidate> = ["a", "b", "c"].iter().map(|id| spawn(&store, id)).collect();
    let leader = {
        let first = &mut cs[0];
        until(first, D * 2, |v| {
            v.leader.as_deref().is_some_and(|l| l != "ghost")
        })
        .await
    };
    let leader = leader.leader.unwrap();
    tokio::time::sleep(P).await;
    let leaders: Vec<_> = cs
        .iter()
        .filter(|c| c.status.view().is_leader)
        .map(|c| c.status.id.identity.clone())
        .collect();
    assert_eq!(leaders, vec![leader]);
    assert_eq!(store.object().unwrap().record.transitions, Some(2));
}

#[tokio::test(start_paused = true)]
async fn same_identity_reacquiring_after_a_lapse_gets_a_new_epoch() {
    let store = MemoryStore::new();
    let mut a = spawn(&store, "a");
    until(&mut a, D * 2, |v| v.is_leader).await;
    store.set_fault(
        "a",
        Fault {
            hang: true,
            fail: None,
        },
    );
    until(&mut a, R + P, |v| !v.is_leader).await;
    store.set_fault("a", Fault::default());
    let v = until(&mut a, R, |v| v.is_leader).await;
    assert_eq!(
        v.epoch,
        Some(2),
        "a new tenure must not reuse the old epoch"
    );
}

#[tokio::test(start_paused = true)]
async fn deleted_lease_is_recreated_above_the_highest_epoch_seen() {
    let store = MemoryStore::new();
    store.foreign_put(held_by("ghost", 41));
    let mut b = spawn(&store, "b");
    until(&mut b, P, |v| v.epoch == Some(41)).await;
    let deleted = Instant::now();
    store.foreign_delete();
    let v = until(&mut b, D * 2, |v| v.is_leader).await;
    assert!(
        deleted.elapsed() >= D,
        "recreated {:?} after the deletion",
        deleted.elapsed()
    );
    assert_eq!(v.epoch, Some(42));
    let old_uid = store.object().unwrap().uid;
    assert!(v.lease_uid.is_some() && v.lease_uid == old_uid);
}

#[tokio::test(start_paused = true)]
async fn retryable_errors_are_retried_and_rejections_never_make_a_leader() {
    let store = MemoryStore::new();
    let forbidden = StoreError::Rejected {
        code: 403,
        reason: "Forbidden".into(),
        message: "no".into(),
        hint: String::new(),
    };
    store.set_fault(
        "a",
        Fault {
            hang: false,
            fail: Some(forbidden),
        },
    );
    let mut a = spawn(&store, "a");
    tokio::time::sleep(D * 3).await;
    assert!(!a.status.view().is_leader);
    assert!(!a.status.state().ready);
    store.set_fault(
        "a",
        Fault {
            hang: false,
            fail: Some(StoreError::Unavailable {
                code: Some(503),
                message: "busy".into(),
                retry_after: None,
            }),
        },
    );
    tokio::time::sleep(D).await;
    assert!(!a.status.view().is_leader);
    store.set_fault("a", Fault::default());
    until(&mut a, D * 3, |v| v.is_leader).await;
}

#[tokio::test(start_paused = true)]
async fn epoch_at_int32_max_is_never_taken_over() {
    let store = MemoryStore::new();
    store.foreign_put(held_by("ghost", i32::MAX as i64));
    let mut b = spawn(&store, "b");
    until(&mut b, P, |v| v.leader.as_deref() == Some("ghost")).await;
    tokio::time::sleep(D * 4).await;
    assert!(!b.status.view().is_leader);
    assert_eq!(
        store.object().unwrap().record.holder.as_deref(),
        Some("ghost")
    );
}

#[test]
fn decide_renews_on_the_retry_period_and_acquires_released_records_at_once() {
    let p = params("me");
    let t0 = Instant::now();
    let mut s = ElectionState::new();
    assert_eq!(decide(&s, &p, t0, std::time::SystemTime::now()), Step::Read);
    let released = record::StoredLease::from_json(json!({
        "metadata": {"resourceVersion": "5", "annotations": {record::RELEASED_BY_ANNOTATION: "x"}},
        "spec": {"leaseTransitions": 4}
    }))
    .unwrap();
    s.observe(released, t0, &p, state::Source::Direct);
    match decide(&s, &p, t0, std::time::SystemTime::now()) {
        Step::Write {
            record,
            renew: false,
            ..
        } => {
            assert_eq!(record.transitions, Some(5));
            assert_eq!(record.holder.as_deref(), Some("me"));
        }
        other => panic!("expected an acquire, got {other:?}"),
    }
    let _ = Arc::new(()); // keep Arc import used in all cfgs
}

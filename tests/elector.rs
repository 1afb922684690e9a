//! Tests of the elector (the state machine as executed: requests under their timeout, the watch,
//! publication, release requests) on tokio's paused clock, with candidates sharing the
//! testkit's in-memory store.

use std::time::Duration;

use serde_json::json;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;

use leaderd::election::*;
use leaderd::status::{channel, Identity, LeaderView, StatusRx, Transitions};
use leaderd_testkit::memory::{Fault, MemoryStore};

const D: Duration = Duration::from_secs(15);
const R: Duration = Duration::from_secs(10);
const P: Duration = Duration::from_secs(2);

fn params(id: &str) -> Params {
    Params {
        identity: id.into(),
        lease_duration: D,
        renew_deadline: R,
        retry_period: P,
        priority: 0,
    }
}

struct Candidate {
    status: StatusRx,
    stop: CancellationToken,
    done: tokio::task::JoinHandle<()>,
    transitions: Transitions,
    control: Control,
}

fn spawn(store: &MemoryStore, id: &str) -> Candidate {
    spawn_with(store, id, 0)
}

fn spawn_with(store: &MemoryStore, id: &str, priority: i64) -> Candidate {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let (tx, rx) = channel(Identity {
        lease: "l".into(),
        namespace: "ns".into(),
        identity: id.into(),
    });
    let trx = rx.transitions();
    let stop = CancellationToken::new();
    let p = Params {
        priority,
        ..params(id)
    };
    let mut elector = Elector::new(store.client(id), ElectorConfig::new(p), tx);
    let control = elector.control();
    let done = tokio::spawn(elector.run(stop.clone()));
    Candidate {
        status: rx,
        stop,
        done,
        transitions: trx,
        control,
    }
}

/// Watch `statuses` every millisecond of (paused) time for `within`; panic if two ever claim
/// leadership at once. Returns the leaders seen, in order of their tenures.
async fn never_two_leaders(statuses: Vec<StatusRx>, within: Duration) -> Vec<(String, i64)> {
    let end = Instant::now() + within;
    let mut tenures: Vec<(String, i64)> = Vec::new();
    while Instant::now() < end {
        let leading: Vec<LeaderView> = statuses
            .iter()
            .map(|s| s.view())
            .filter(|v| v.is_leader)
            .collect();
        assert!(leading.len() <= 1, "two leaders at once: {leading:?}");
        if let Some(v) = leading.first() {
            let t = (v.identity.clone(), v.epoch.unwrap_or(-1));
            if tenures.last() != Some(&t) {
                if let Some(last) = tenures.last() {
                    assert!(t.1 > last.1, "epoch did not rise: {tenures:?} then {t:?}");
                }
                tenures.push(t);
            }
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    tenures
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
        // Changes of the observed holder are reported too; these tests look at tenures.
        let got = loop {
            match c.transitions.recv().await {
                Some(Transition::NewLeader { .. }) => continue,
                other => break other,
            }
        };
        assert_eq!(got.as_ref(), Some(want));
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
async fn absent_lease_is_created_without_a_holder_and_taken_a_lease_duration_later_with_epoch_one()
{
    let store = MemoryStore::new();
    let start = Instant::now();
    let mut a = spawn(&store, "a");
    // Rule 4: created a retry period after the absence was seen, naming nobody.
    let created = until(&mut a, P * 2, |v| v.lease_uid.is_some()).await;
    assert!(
        !created.is_leader && created.leader.is_none(),
        "{created:?}"
    );
    let at = start.elapsed();
    assert!(at >= P, "created {at:?} after the absence was seen");
    let rec = store.object().unwrap().record;
    assert_eq!(rec.holder, None);
    assert_eq!(rec.transitions, Some(0));
    let v = until(&mut a, D * 2, |v| v.is_leader).await;
    assert!(
        start.elapsed() >= at + D,
        "the created record was taken before it was waited out"
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
    // Rule 14: one renewal per 3R/5 = 6 s, not one per retry period.
    assert!(
        (9..=12).contains(&renewals),
        "{renewals} renewals in 60 s at a 6 s renew interval"
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
    // Let one renewal happen (they come every 3R/5, rule 14), then cut "a" off: its requests
    // hang.
    let rv = store.object().unwrap().resource_version;
    until(&mut b, R, |_| {
        store.object().unwrap().resource_version != rv
    })
    .await;
    let cut = Instant::now();
    store.set_fault(
        "a",
        Fault {
            hang: true,
            ..Fault::default()
        },
    );
    // What the app sees is computed from the clock: no claim at cut + R, whatever was published.
    let claim_end = a.status.state().view.tenure.unwrap().valid_until;
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
                epoch: Some(1),
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
    for i in 0..5 {
        tokio::time::sleep(D - P).await;
        // A renewal: a new renewTime (hence a new resourceVersion).
        let mut renewed = held_by("ghost", 1);
        renewed["spec"]["renewTime"] = json!(format!("2001-01-01T00:00:0{}.000000Z", i + 1));
        store.foreign_put(renewed);
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
    // Slow reads, so that the state published before the confirming read is visible.
    store.set_fault(
        "a",
        Fault {
            latency: Duration::from_millis(50),
            ..Fault::default()
        },
    );
    let taken = Instant::now();
    store.foreign_put(held_by("intruder", 5));
    // Every state published on the way says one thing: either a leads (and names itself), or
    // it does not. Never "leader: intruder" together with "is_leader: true".
    let v = until(&mut a, P * 2, |v| {
        assert!(
            !v.is_leader || v.leader.as_deref() == Some("a"),
            "contradictory state published: {v:?}"
        );
        !v.is_leader
    })
    .await;
    assert!(taken.elapsed() < P * 2);
    assert_eq!(v.leader.as_deref(), Some("intruder"));
    expect_transitions(
        &mut a,
        &[
            Transition::Acquired { epoch: 1 },
            Transition::Lost {
                reason: LossReason::Taken,
                epoch: Some(1),
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
            ..Fault::default()
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
        "acquired {:?} after the deletion",
        deleted.elapsed()
    );
    assert_eq!(v.epoch, Some(42));
    let old_uid = store.object().unwrap().uid;
    assert!(v.lease_uid.is_some() && v.lease_uid == old_uid);
}

/// Rule 4 for a leader: when its Lease is deleted, no write of it can bring the record back
/// (its PUTs carry the uid: 409, as the real apiserver answers), so it steps down as soon as a
/// read confirms the deletion, without a storm of retries; the Lease is then recreated without
/// a holder at the epoch reached and taken a lease duration later, above it.
#[tokio::test(start_paused = true)]
async fn a_leader_whose_lease_is_deleted_steps_down_and_it_is_taken_again_above_its_epoch() {
    let store = MemoryStore::new();
    let mut a = spawn(&store, "a");
    let v = until(&mut a, D * 3, |v| v.is_leader).await;
    let mut b = spawn(&store, "b");
    until(&mut b, P, |v| v.leader.as_deref() == Some("a")).await;
    let epoch = v.epoch.expect("an epoch");
    let monitor = tokio::spawn(never_two_leaders(
        vec![a.status.clone(), b.status.clone()],
        D * 3,
    ));
    let requests = store.requests("a");
    let deleted = Instant::now();
    store.foreign_delete();
    until(&mut a, P, |v| !v.is_leader).await;
    assert!(
        deleted.elapsed() < P,
        "stepped down {:?} after",
        deleted.elapsed()
    );
    // b sees whoever leads next (a or b) under the next epoch.
    let v = until(&mut b, D * 3, |v| {
        v.leader.is_some() && v.epoch > Some(epoch)
    })
    .await;
    assert_eq!(v.epoch, Some(epoch + 1), "{v:?}");
    assert!(
        deleted.elapsed() >= D,
        "taken {:?} after",
        deleted.elapsed()
    );
    let tenures = monitor.await.unwrap();
    assert_eq!(tenures.len(), 2, "{tenures:?}");
    // A handful of requests until then (reads, a create, an acquisition, renewals), not a
    // retry per round trip.
    let spent = store.requests("a") - requests;
    assert!(spent < 40, "{spent} requests of a after the deletion");
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
            fail: Some(forbidden),
            ..Fault::default()
        },
    );
    let mut a = spawn(&store, "a");
    tokio::time::sleep(D * 3).await;
    assert!(!a.status.view().is_leader);
    assert!(!a.status.state().view.ready);
    store.set_fault(
        "a",
        Fault {
            fail: Some(StoreError::Unavailable {
                code: Some(503),
                message: "busy".into(),
                retry_after: None,
            }),
            ..Fault::default()
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

#[tokio::test(start_paused = true)]
async fn release_on_request_hands_over_at_once_and_the_releaser_keeps_out() {
    let store = MemoryStore::new();
    let mut a = spawn(&store, "a");
    until(&mut a, D * 2, |v| v.is_leader).await;
    let mut b = spawn(&store, "b");
    until(&mut b, P, |v| v.leader.as_deref() == Some("a")).await;
    let watch = tokio::spawn(never_two_leaders(
        vec![a.status.clone(), b.status.clone()],
        D * 2,
    ));
    let asked = Instant::now();
    assert_eq!(
        a.control.release().await,
        ReleaseOutcome::Released { epoch: 1 }
    );
    // Answered once written: by then a claims nothing.
    assert!(!a.status.view().is_leader);
    let v = until(&mut b, P, |v| v.is_leader).await;
    assert_eq!(v.epoch, Some(2));
    assert!(asked.elapsed() < Duration::from_millis(100));
    assert_eq!(a.control.release().await, ReleaseOutcome::NotLeader);
    let tenures = watch.await.unwrap();
    assert_eq!(tenures, vec![("a".to_owned(), 1), ("b".to_owned(), 2)]);
    expect_transitions(
        &mut a,
        &[
            Transition::Acquired { epoch: 1 },
            Transition::Lost {
                reason: LossReason::Released,
                epoch: Some(1),
            },
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_lone_releaser_takes_the_lease_back_after_a_lease_duration() {
    let store = MemoryStore::new();
    let mut a = spawn(&store, "a");
    until(&mut a, D * 2, |v| v.is_leader).await;
    let released = Instant::now();
    assert_eq!(
        a.control.release().await,
        ReleaseOutcome::Released { epoch: 1 }
    );
    let v = until(&mut a, D * 2, |v| v.is_leader).await;
    assert!(released.elapsed() >= D, "{:?}", released.elapsed());
    assert_eq!(v.epoch, Some(2));
}

#[tokio::test(start_paused = true)]
async fn higher_priority_candidate_is_handed_the_lease_without_overlap() {
    let store = MemoryStore::new();
    let mut a = spawn_with(&store, "a", 0);
    until(&mut a, D * 2, |v| v.is_leader).await;
    let b = spawn_with(&store, "b", 1);
    let mut c = spawn_with(&store, "c", 5);
    let watch = tokio::spawn(never_two_leaders(
        vec![a.status.clone(), b.status.clone(), c.status.clone()],
        D * 3,
    ));
    let joined = Instant::now();
    let v = until(&mut c, D, |v| v.is_leader).await;
    // A graceful handover: well within one retry period, not a lease expiry.
    assert!(joined.elapsed() < P, "took {:?}", joined.elapsed());
    assert!(v.epoch >= Some(2));
    let tenures = watch.await.unwrap();
    // c, the highest, ends up leading for good; nobody took it back.
    assert_eq!(tenures.last().unwrap().0, "c", "{tenures:?}");
    assert!(c.status.view().is_leader);
    assert!(!b.status.view().is_leader);
    let lease = store.object().unwrap();
    assert_eq!(lease.record.holder_priority, Some(5));
    assert_eq!(lease.record.candidate, None);
    expect_transitions(
        &mut a,
        &[
            Transition::Acquired { epoch: 1 },
            Transition::Lost {
                reason: LossReason::HandedOver,
                epoch: Some(1),
            },
        ],
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn equal_priorities_never_hand_over() {
    let store = MemoryStore::new();
    let mut a = spawn_with(&store, "a", 3);
    until(&mut a, D * 2, |v| v.is_leader).await;
    let mut b = spawn_with(&store, "b", 3);
    until(&mut b, P, |v| v.leader.as_deref() == Some("a")).await;
    let writes_before = store.requests("b");
    let tenures = never_two_leaders(vec![a.status.clone(), b.status.clone()], D * 3).await;
    assert_eq!(tenures, vec![("a".to_owned(), 1)]);
    // b neither announced itself nor wrote anything else: only its initial reads and watch.
    assert!(store.requests("b") - writes_before <= 2);
    assert_eq!(store.object().unwrap().record.candidate, None);
    let mut lower = spawn_with(&store, "lower", 1);
    until(&mut lower, P, |v| v.leader.as_deref() == Some("a")).await;
    let tenures = never_two_leaders(vec![a.status.clone(), lower.status.clone()], D * 2).await;
    assert_eq!(tenures, vec![("a".to_owned(), 1)]);
}

#[tokio::test(start_paused = true)]
async fn annotation_only_edits_do_not_restart_the_followers_wait() {
    let store = MemoryStore::new();
    store.foreign_put(held_by("ghost", 1));
    let start = Instant::now();
    let mut b = spawn(&store, "b");
    until(&mut b, P, |v| v.leader.as_deref() == Some("ghost")).await;
    for i in 0..5 {
        tokio::time::sleep(D / 5).await;
        let mut obj = held_by("ghost", 1);
        obj["metadata"]["annotations"] = json!({"edited": i.to_string()});
        store.foreign_put(obj);
    }
    let v = until(&mut b, D, |v| v.is_leader).await;
    assert!(start.elapsed() < D + P * 2, "{:?}", start.elapsed());
    assert_eq!(v.epoch, Some(2));
}

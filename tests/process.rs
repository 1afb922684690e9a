//! The real leaderd binary as processes against the Lease API test server: elections,
//! crashes, graceful handover, partitions and foreign writers, with every `/leader` sampled
//! throughout and checked for two leaders at once.

mod common;

use std::time::Duration;

use common::{D, LEASE, NS, P, R};
use serde_json::json;
use tokio::time::Instant;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_candidates_elect_exactly_one_leader_and_keep_it() {
    let mut c = common::cluster(3).await;
    let (leader, epoch) = c.leader(D * 3, &[]).await;
    assert_eq!(epoch, 1);
    // Several renewals later, still the same single leader and epoch.
    tokio::time::sleep(D).await;
    let again = c.leader(P, &[]).await;
    assert_eq!(again, (leader.clone(), 1));
    let lease = c.server.lease(NS, LEASE).expect("lease exists");
    assert_eq!(lease["spec"]["holderIdentity"], leader);
    assert_eq!(lease["spec"]["leaseTransitions"], 1);
    assert_eq!(lease["spec"]["leaseDurationSeconds"], 3);
    let followers_view = c.sampler.latest();
    for (who, v) in &followers_view {
        assert_eq!(
            v.leader.as_deref(),
            Some(leader.as_str()),
            "{who} sees another leader"
        );
        assert_eq!(v.lease_uid.as_deref(), lease["metadata"]["uid"].as_str());
    }
    c.assert_alive();
    c.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_fails_over_within_lease_duration_plus_retry_period() {
    let mut c = common::cluster(3).await;
    let (leader, epoch) = c.leader(D * 3, &[]).await;
    tokio::time::sleep(P * 4).await;
    c.sampler.remove(&leader);
    let killed = Instant::now();
    c.get(&leader).kill9();
    let (next, epoch2) = c.leader(D + P * 4, &[&leader]).await;
    let took = c
        .sampler
        .first_leading(&next, killed)
        .expect("sampled")
        .recv
        - killed;
    assert!(
        took <= D + P + Duration::from_millis(200),
        "failover took {took:?}"
    );
    // The crash may come just before the renewal due 3R/5 after the last (rule 14), which the
    // followers saw up to that long before the kill.
    assert!(
        took >= D - common::I - P,
        "took over after {took:?}, before the lease could expire"
    );
    assert!(epoch2 > epoch);
    c.cands.retain(|x| x.name != leader);
    c.assert_alive();
    c.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_of_the_leader_hands_over_within_a_second_and_exits_0() {
    let mut c = common::cluster(3).await;
    let (leader, epoch) = c.leader(D * 3, &[]).await;
    let termed = Instant::now();
    c.get(&leader).signal(libc::SIGTERM);
    let (next, epoch2) = c.leader(Duration::from_secs(1), &[&leader]).await;
    let took = c
        .sampler
        .first_leading(&next, termed)
        .expect("sampled")
        .recv
        - termed;
    assert!(took < Duration::from_secs(1), "handover took {took:?}");
    assert_eq!(epoch2, epoch + 1);
    let status = c
        .get(&leader)
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits");
    assert_eq!(status.code(), Some(0));
    let lease = c.server.lease(NS, LEASE).unwrap();
    assert_eq!(lease["spec"]["holderIdentity"], next);
    c.sampler.remove(&leader);
    c.cands.retain(|x| x.name != leader);
    c.assert_alive();
    c.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_leader_stops_claiming_before_anyone_else_claims() {
    let mut c = common::cluster(3).await;
    let (leader, epoch) = c.leader(D * 3, &[]).await;
    let cut = Instant::now();
    c.server.partition(&leader); // its requests hang, its watch goes silent
    let (next, epoch2) = c.leader(D + R, &[&leader]).await;
    let new_from = c.sampler.first_leading(&next, cut).expect("sampled").sent;
    // The old leader's last "true" answer came before the new leader's first one was asked.
    let samples = c.sampler.samples();
    let last_old = samples
        .iter()
        .filter(|s| s.who == leader && s.view.is_leader)
        .map(|s| s.recv)
        .max()
        .expect("old leader sampled");
    assert!(
        last_old < new_from,
        "old leader still claimed {:?} after the new one started",
        last_old - new_from
    );
    assert!(
        last_old - cut <= R + Duration::from_millis(50),
        "claimed {:?} after the cut",
        last_old - cut
    );
    assert!(epoch2 > epoch);
    // It keeps answering (not leader) and rejoins as a follower when healed.
    c.server.heal(&leader);
    let rejoined = c
        .sampler
        .wait_for(D, |m| {
            m.get(&leader)
                .filter(|v| v.leader.as_deref() == Some(next.as_str()))
                .map(|_| ())
        })
        .await;
    assert!(
        rejoined.is_some(),
        "old leader did not see the new one after healing"
    );
    tokio::time::sleep(P * 4).await;
    c.assert_alive();
    c.assert_safe();
}

fn foreign(holder: Option<&str>, duration: i64, transitions: i64) -> serde_json::Value {
    let mut spec = json!({"leaseDurationSeconds": duration, "leaseTransitions": transitions,
                          "renewTime": "bad time", "acquireTime": 12});
    if let Some(h) = holder {
        spec["holderIdentity"] = json!(h);
    }
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {}, "spec": spec})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_garbage_never_yields_two_leaders_nor_a_panic() {
    let mut c = common::cluster(3).await;
    let (leader, _) = c.leader(D * 3, &[]).await;
    // A holder that never renews, with a negative duration and unparsable times.
    c.server.put_raw(NS, LEASE, foreign(Some("ghost"), -5, 7));
    let v = c
        .sampler
        .wait_for(P * 4, |m| {
            m.get(&leader).filter(|v| !v.is_leader).map(|_| ())
        })
        .await;
    assert!(v.is_some(), "the leader did not notice the lease was taken");
    let (_, epoch) = c.leader_above(D * 2 + P * 4, 7).await;
    // Missing holder, no release marker, transitions lowered: waited out, epoch still rises.
    c.server.put_raw(NS, LEASE, foreign(None, 1, 0));
    let (_, epoch2) = c.leader_above(D * 2 + P * 4, epoch).await;
    // Unparsable content in every field.
    c.server.put_raw(
        NS,
        LEASE,
        json!({"metadata": {"annotations": 5}, "spec": "garbage"}),
    );
    let (_, epoch3) = c.leader_above(D * 2 + P * 4, epoch2).await;
    // Deleted under a live leader: no write of it can recreate the record (its PUTs carry the
    // uid: 409), so it steps down once a read confirms the deletion, without a storm of
    // retries; the Lease is recreated without a holder, new uid, and led again above epoch3.
    let (holder, _) = c.leader(P, &[]).await;
    let old_uid = c.server.lease(NS, LEASE).unwrap()["metadata"]["uid"].clone();
    let from = Instant::now().into_std();
    c.server.delete_lease(NS, LEASE);
    c.sampler
        .wait_for(P * 2, |m| {
            m.get(&holder).filter(|v| !v.is_leader).map(|_| ())
        })
        .await
        .unwrap_or_else(|| c.fail("the leader did not step down after its Lease was deleted"));
    let (leader4, epoch4) = c.leader_above(D * 3, epoch3).await;
    assert_eq!(epoch4, epoch3 + 1);
    let back = c.server.lease(NS, LEASE).expect("recreated");
    assert_ne!(back["metadata"]["uid"], old_uid);
    let spent = c
        .server
        .requests()
        .iter()
        .filter(|r| r.client == holder && r.at >= from)
        .count();
    assert!(
        spent < 60,
        "{spent} requests of the old leader since the deletion"
    );
    let (holder, epoch3) = (leader4, epoch4);
    // Deleted with no live leader: recreated a lease duration later, above every epoch seen.
    c.sampler.remove(&holder);
    c.get(&holder).kill9();
    c.get(&holder).wait_exit(Duration::from_secs(5)).await;
    c.cands.retain(|x| x.name != holder);
    c.server.delete_lease(NS, LEASE);
    let deleted = Instant::now();
    c.leader_above(D * 3, epoch3).await;
    assert!(
        deleted.elapsed() >= D - P,
        "recreated after {:?}",
        deleted.elapsed()
    );
    c.assert_alive();
    c.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flaky_apiserver_with_5xx_and_429_still_elects_one_leader_safely() {
    let mut c = common::cluster(3).await;
    c.server.set_error_rate(None, 0.3, 503);
    let (leader, _) = c.leader(D * 4, &[]).await;
    c.server.set_error_rate(None, 0.3, 429);
    tokio::time::sleep(D).await;
    c.server.set_error_rate(None, 0.0, 503);
    c.leader(D * 3, &[]).await;
    let _ = leader;
    c.assert_alive();
    c.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_answered_with_garbage_steps_down_and_nobody_panics() {
    let mut c = common::cluster(3).await;
    let (leader, _) = c.leader(D * 3, &[]).await;
    c.server.set_garbage(&leader, true);
    let (next, _) = c.leader(D + R + P * 4, &[&leader]).await;
    assert_ne!(next, leader);
    c.server.set_garbage(&leader, false);
    tokio::time::sleep(P * 4).await;
    c.assert_alive();
    c.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forbidden_update_is_logged_with_the_fix_and_never_leads() {
    let mut c = common::cluster(0).await;
    c.server.deny("c1", "update");
    c.server.deny("c1", "create");
    c.spawn("c1", &[]).await;
    tokio::time::sleep(D * 2).await;
    assert!(c.sampler.samples().iter().all(|s| !s.view.is_leader));
    let logs = c.get("c1").logs().join("\n");
    assert!(
        logs.contains("Forbidden") && logs.contains("fix: grant verb"),
        "{logs}"
    );
    c.assert_alive();
}

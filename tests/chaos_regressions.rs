//! Regression tests for what the chaos runner (`bench/chaos.rs`) found, on the real binary
//! against the Lease API test server. See docs/reliability.md.

mod common;

use std::collections::HashMap;

use common::{Cluster, D, LEASE, NS, P, R};

/// Every "became leader" epoch in the logs, by candidate.
fn became(c: &Cluster) -> Vec<(String, i64)> {
    let mut v = Vec::new();
    for cand in &c.cands {
        for l in cand.logs() {
            if let Some(i) = l.find("became leader").and(l.find("epoch=")) {
                let e = l[i + 6..]
                    .split(|ch: char| !ch.is_ascii_digit())
                    .next()
                    .and_then(|d| d.parse().ok());
                if let Some(e) = e {
                    v.push((cand.name.clone(), e));
                }
            }
        }
    }
    v
}

/// Found by `cargo bench --bench chaos -- --seed 42 --duration 10m` (c1#1 at +593 s): a
/// partitioned leader lost its lease to another candidate; the Lease was then deleted by a
/// foreign writer; on the heal, the old leader's held PUT (an acquisition of its own lapsed
/// record, with its old resourceVersion) met no object, and the apiserver created the Lease
/// from it without checking the resourceVersion (create-on-update answers 201). The old leader
/// took that for a successful acquisition: it led under the epoch the new leader already held
/// (its highest seen + 1), next to the new leader until the latter's next renewal conflicted.
///
/// A PUT answered 201 without a claim still running must start none: the record it created is
/// waited out like anyone's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_put_that_recreated_a_deleted_lease_starts_no_tenure() {
    let mut c = Cluster::start(3).await;
    let (mut old, mut epoch) = c.leader(D * 3, &[]).await;
    // The held PUT must be less than a call timeout (R/2) old when it meets the empty store;
    // one round in eight misses that: try up to three.
    let mut hit = false;
    for _ in 0..3 {
        c.server.partition(&old);
        let (new, epoch2) = c.leader_above(D + R + P * 8, epoch).await;
        assert_ne!(new, old);
        // The old leader now retries the acquisition of its own record, each try held.
        tokio::time::sleep(D).await;
        // Delete and heal at once: the held PUT meets no object.
        c.server.delete_lease(NS, LEASE);
        c.server.heal(&old);
        tokio::time::sleep(D * 3).await;
        c.assert_safe();
        let mut by_epoch: HashMap<i64, Vec<String>> = HashMap::new();
        for (who, e) in became(&c) {
            by_epoch.entry(e).or_default().push(who);
        }
        for (e, who) in &by_epoch {
            if who.len() > 1 {
                c.fail(&format!(
                    "epoch {e} led by {who:?} (the new leader had {epoch2})"
                ));
            }
        }
        hit = c
            .get(&old)
            .logs()
            .iter()
            .any(|l| l.contains("recreated it unchecked"));
        if hit {
            break;
        }
        (old, epoch) = c.leader(D * 3, &[]).await;
    }
    assert!(hit, "the held PUT never met the deleted Lease");
    c.assert_alive();
}

/// Known bug (found by the model in `src/election/proptests.rs`, reproduced here): c3 saw the
/// Lease absent, was cut off before the others created it, and the Lease was deleted by a
/// foreign writer while c3 was away. On the heal, c3's held create (POST: its only precondition
/// is "absent") met an empty store and succeeded: c3 led under epoch 1 next to the leader it
/// never saw, until that leader's next renewal conflicted. The absence c3 had waited out was not
/// the one its create replaced. Proposed fix in docs/reliability.md (a created record is waited
/// out before it is claimed).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "known bug: a create after a missed create and a foreign delete (docs/reliability.md)"]
async fn a_create_after_a_missed_create_and_a_deletion_is_not_a_second_leader() {
    let mut c = Cluster::start(2).await;
    c.spawn("c3", &[]).await;
    // c3 has seen the absence (it reads at start); cut it off before anyone creates the Lease.
    tokio::time::sleep(P * 2).await;
    c.server.partition("c3");
    let (leader, _) = c.leader(D * 3, &["c3"]).await;
    // c3's create, due a lease duration after it saw the absence, is held meanwhile.
    tokio::time::sleep(P * 2).await;
    c.server.delete_lease(NS, LEASE);
    c.server.heal("c3");
    tokio::time::sleep(D * 2).await;
    let mut by_epoch: HashMap<i64, Vec<String>> = HashMap::new();
    for (who, e) in became(&c) {
        by_epoch.entry(e).or_default().push(who);
    }
    for (e, who) in &by_epoch {
        if who.len() > 1 {
            c.fail(&format!(
                "epoch {e} led by {who:?} (the leader c3 never saw: {leader})"
            ));
        }
    }
    c.assert_alive();
    c.assert_safe();
}

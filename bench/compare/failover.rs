//! Failover after kill -9 and handover after SIGTERM: time to the next leader and the Lease
//! writes in between.

use std::time::{Duration, Instant as StdInstant};

use anyhow::bail;
use leaderd_testkit::harness::EtcdCluster;
use leaderd_testkit::testserver::{RequestRecord, TestServer};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::etcd::proposals;

pub fn is_lease_write(r: &RequestRecord) -> bool {
    r.resource == "leases" && matches!(r.verb.as_str(), "create" | "update" | "patch")
}

/// Lease writes from `from` to `to`: (attempts, 2xx, 409).
pub fn writes(server: &TestServer, from: StdInstant, to: StdInstant) -> (usize, usize, usize) {
    let rs: Vec<RequestRecord> = server
        .requests()
        .into_iter()
        .filter(|r| r.at >= from && r.at <= to && is_lease_write(r))
        .collect();
    let ok = rs.iter().filter(|r| (200..300).contains(&r.status)).count();
    let conflict = rs.iter().filter(|r| r.status == 409).count();
    (rs.len(), ok, conflict)
}

/// One failover: what happened and how long it took.
#[derive(Debug)]
pub struct Failover {
    pub from: String,
    pub to: String,
    pub ms: f64,
    pub writes: (usize, usize, usize),
    pub exit: Option<String>,
    /// The etcd columns: raft proposals etcd committed from the kill to just after the takeover
    /// (a lease expiry or revoke is one; keep-alives are none).
    pub proposals: Option<f64>,
}

pub fn failover_json(f: &Failover) -> Value {
    json!({"from": f.from, "to": f.to, "ms": f.ms, "lease_writes": f.writes.0,
           "lease_writes_ok": f.writes.1, "lease_writes_409": f.writes.2, "exit": f.exit,
           "etcd_raft_proposals": f.proposals})
}

/// Kill -9 (or SIGTERM) the leader, wait for the next one, measure, and replace the candidate.
pub async fn failover(
    c: &mut Cluster,
    graceful: bool,
    settle_within: Duration,
    replace: bool,
    etcd: Option<&EtcdCluster>,
) -> anyhow::Result<Failover> {
    let (d, _, p) = c.launcher.timing;
    let leader = c.settle(settle_within).await?;
    // Let every follower see several renewals first, then strike at a random phase of the
    // leader's renew cycle (a fixed delay would lock onto one phase and bias the figures).
    tokio::time::sleep((p * 3).max(Duration::from_millis(500))).await;
    let cycle = c.launcher.renew_interval();
    tokio::time::sleep(cycle.mul_f64(fastrand::f64())).await;
    let leader = c.settle(settle_within).await.unwrap_or(leader);
    let old = c.take(&leader);
    let proposals0 = match etcd {
        Some(e) => proposals(e).await,
        None => None,
    };
    if !graceful {
        c.sampler.remove(&leader);
    }
    let t0 = Instant::now();
    let t0_std = StdInstant::now();
    if graceful {
        old.signal(libc::SIGTERM);
    } else {
        old.kill9();
    }
    let next = c
        .sampler
        .wait_for_leader(d * 3 + Duration::from_secs(10), &[leader.as_str()])
        .await;
    let exit = if graceful {
        let st = old.wait_exit(Duration::from_secs(10)).await;
        if st.is_none() {
            old.kill9();
        }
        Some(st.map_or("did not exit within 10 s".into(), |s| s.to_string()))
    } else {
        old.wait_exit(Duration::from_secs(5)).await;
        None
    };
    c.sampler.remove(&leader);
    drop(old);
    let Some((next, _)) = next else {
        bail!(
            "{}: no new leader within {:?} after {} of {leader}",
            c.elector.name(),
            d * 3 + Duration::from_secs(10),
            if graceful { "SIGTERM" } else { "kill -9" }
        );
    };
    let seen = c
        .sampler
        .first_leading(&next, t0)
        .map(|s| s.recv)
        .unwrap_or_else(Instant::now);
    let took = seen - t0;
    // The winner's first renew comes a retry period (3R/5 for leaderd) after it took the lease:
    // stop before.
    let end = t0_std + took + (p / 2).min(Duration::from_millis(500));
    let now = StdInstant::now();
    if end > now {
        tokio::time::sleep(end - now).await;
    }
    let w = writes(&c.server, t0_std, end);
    let props = match (etcd, proposals0) {
        (Some(e), Some(a)) => proposals(e).await.map(|b| b - a),
        _ => None,
    };
    if replace {
        c.spawn().await?;
    }
    Ok(Failover {
        from: leader,
        to: next,
        ms: took.as_secs_f64() * 1000.0,
        writes: w,
        exit,
        proposals: props,
    })
}

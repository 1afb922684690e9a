//! The steady state: API requests per candidate (counted at the test server by bearer token),
//! CPU time and RSS of each process, over a window with the sampler paused. For the etcd
//! columns the requests are leaderd's own counts (`leaderd_lease_requests_total`, from each
//! candidate's metrics endpoint) and etcd's counters are read too (`etcd.rs`).

use std::time::{Duration, Instant as StdInstant};

use std::collections::BTreeMap;

use leaderd_testkit::harness::EtcdCluster;
use leaderd_testkit::testserver::RequestRecord;

use crate::cluster::{proc_usage, Cluster};
use crate::etcd::{delta, etcd_counters, leaderd_requests, member_rss, EtcdSteady, ETCD_WRITES};
use crate::failover::is_lease_write;

/// API requests and resource use of every candidate over a quiet window (sampler paused).
pub struct Steady {
    pub leader: String,
    pub secs: f64,
    /// name -> (requests, lease writes, cpu seconds, rss bytes)
    pub per: Vec<(String, usize, usize, f64, u64)>,
    pub leader_after: Option<String>,
    /// The etcd columns: requests by verb, etcd's counters, the members' RSS.
    pub etcd: Option<EtcdSteady>,
}

async fn all_requests(c: &Cluster) -> Vec<Option<BTreeMap<String, f64>>> {
    let mut v = Vec::new();
    for x in &c.cands {
        v.push(leaderd_requests(x).await);
    }
    v
}

pub async fn steady(
    c: &Cluster,
    window: Duration,
    settle_within: Duration,
    etcd: Option<&EtcdCluster>,
) -> anyhow::Result<Steady> {
    let leader = c.settle(settle_within).await?;
    let p = c.launcher.timing.2;
    tokio::time::sleep((p * 3).max(Duration::from_millis(500))).await;
    c.pause();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The metrics scrapes stay outside the CPU window.
    let (verbs0, server0) = match etcd {
        Some(e) => (all_requests(c).await, etcd_counters(e).await),
        None => (vec![], BTreeMap::new()),
    };
    let before: Vec<Option<(f64, u64)>> = c
        .cands
        .iter()
        .map(|x| x.pid().and_then(proc_usage))
        .collect();
    let t0 = StdInstant::now();
    tokio::time::sleep(window).await;
    let t1 = StdInstant::now();
    let after: Vec<Option<(f64, u64)>> = c
        .cands
        .iter()
        .map(|x| x.pid().and_then(proc_usage))
        .collect();
    let etcd_steady = match etcd {
        Some(e) => {
            let verbs1 = all_requests(c).await;
            let server1 = etcd_counters(e).await;
            Some(EtcdSteady {
                verbs: c
                    .cands
                    .iter()
                    .enumerate()
                    .map(|(i, x)| {
                        let d = match (&verbs0[i], &verbs1[i]) {
                            (Some(a), Some(b)) => delta(a, b),
                            _ => BTreeMap::new(),
                        };
                        (x.name.clone(), d)
                    })
                    .collect(),
                server: delta(&server0, &server1),
                member_rss: member_rss(e),
            })
        }
        None => None,
    };
    let reqs: Vec<RequestRecord> = c
        .server
        .requests()
        .into_iter()
        .filter(|r| r.at >= t0 && r.at <= t1)
        .collect();
    let per = c
        .cands
        .iter()
        .enumerate()
        .map(|(i, x)| {
            let mine: Vec<&RequestRecord> = reqs.iter().filter(|r| r.client == x.name).collect();
            let (n, w) = match &etcd_steady {
                Some(e) => {
                    let v = &e.verbs[i].1;
                    let all: f64 = v.values().sum();
                    let w: f64 = ETCD_WRITES.iter().filter_map(|k| v.get(*k)).sum();
                    (all as usize, w as usize)
                }
                None => (
                    mine.len(),
                    mine.iter().filter(|r| is_lease_write(r)).count(),
                ),
            };
            let (cpu, rss) = match (before[i], after[i]) {
                (Some(a), Some(b)) => (b.0 - a.0, b.1),
                _ => (f64::NAN, 0),
            };
            (x.name.clone(), n, w, cpu, rss)
        })
        .collect();
    c.resume();
    let leader_after = c.settle(settle_within).await.ok();
    Ok(Steady {
        leader,
        secs: (t1 - t0).as_secs_f64(),
        per,
        leader_after,
        etcd: etcd_steady,
    })
}

//! The steady state: API requests per candidate (counted at the test server by bearer token),
//! CPU time and RSS of each process, over a window with the sampler paused.

use std::time::{Duration, Instant as StdInstant};

use leaderd_testkit::testserver::RequestRecord;

use crate::cluster::Cluster;
use crate::failover::is_lease_write;

/// CPU seconds (utime + stime) and RSS bytes of a process.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let u = leaderd_testkit::harness::proc_usage(pid).ok()?;
    Some((u.cpu.as_secs_f64(), u.rss_kib * 1024))
}

/// API requests and resource use of every candidate over a quiet window (sampler paused).
pub struct Steady {
    pub leader: String,
    pub secs: f64,
    /// name -> (requests, lease writes, cpu seconds, rss bytes)
    pub per: Vec<(String, usize, usize, f64, u64)>,
    pub leader_after: Option<String>,
}

pub async fn steady(
    c: &Cluster,
    window: Duration,
    settle_within: Duration,
) -> anyhow::Result<Steady> {
    let leader = c.settle(settle_within).await?;
    let p = c.launcher.timing.2;
    tokio::time::sleep((p * 3).max(Duration::from_millis(500))).await;
    c.pause();
    tokio::time::sleep(Duration::from_millis(100)).await;
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
            let w = mine.iter().filter(|r| is_lease_write(r)).count();
            let (cpu, rss) = match (before[i], after[i]) {
                (Some(a), Some(b)) => (b.0 - a.0, b.1),
                _ => (f64::NAN, 0),
            };
            (x.name.clone(), mine.len(), w, cpu, rss)
        })
        .collect();
    c.resume();
    let leader_after = c.settle(settle_within).await.ok();
    Ok(Steady {
        leader,
        secs: (t1 - t0).as_secs_f64(),
        per,
        leader_after,
    })
}

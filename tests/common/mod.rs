//! Shared support for the process tests: a [`Cluster`] (the testkit's: a Lease API test server,
//! leaderd processes that reach it through kubeconfigs, and a sampler that polls every
//! `/leader` throughout the test) with this crate's leaderd binary and the tests' timing.
#![allow(dead_code)]

use std::time::Duration;

pub use leaderd_testkit::harness::Cluster;
use leaderd_testkit::harness::ClusterOptions;

/// Short timings so that failovers take seconds: lease 3 s, deadline 2 s, retry 250 ms.
pub const D: Duration = Duration::from_secs(3);
pub const R: Duration = Duration::from_secs(2);
pub const P: Duration = Duration::from_millis(250);
/// The leader's renew interval at these settings: 3R/5 (rule 14).
pub const I: Duration = Duration::from_millis(1_200);
pub const NS: &str = "default";
pub const LEASE: &str = "payouts";

/// The cluster's settings: this crate's leaderd, lease `payouts` in `default`, D/R/P above,
/// sampled every 10 ms.
pub fn options() -> ClusterOptions {
    let mut o = ClusterOptions::new(env!("CARGO_BIN_EXE_leaderd"), LEASE);
    o.namespace = NS.into();
    o.timing = (D, R, P);
    o.sample_period = Duration::from_millis(10);
    o
}

/// A server and `n` candidates named c1..cn.
pub async fn cluster(n: usize) -> Cluster {
    cluster_with(n, &[]).await
}

/// A server and `n` candidates named c1..cn, each with `extra` flags.
pub async fn cluster_with(n: usize, extra: &[&str]) -> Cluster {
    let mut c = Cluster::start(options(), 0)
        .await
        .expect("test server starts");
    for i in 1..=n {
        c.spawn(&format!("c{i}"), extra).await;
    }
    c
}

/// Sleep for `period`, then count the successful Lease updates (renewals) `who` made meanwhile,
/// as the test server saw them.
pub async fn renewals_during(c: &Cluster, who: &str, period: Duration) -> usize {
    let from = tokio::time::Instant::now().into_std();
    tokio::time::sleep(period).await;
    c.server
        .requests()
        .iter()
        .filter(|r| r.client == who && r.verb == "update" && r.status == 200 && r.at >= from)
        .count()
}

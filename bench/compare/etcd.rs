//! The etcd columns' counting: leaderd's own `leaderd_lease_requests_total{verb,code}` (per
//! candidate, from its metrics endpoint) and etcd's server-side counters (from each member's
//! `/metrics` on its client URL), and the etcd members' RSS.

use std::collections::BTreeMap;
use std::time::Duration;

use leaderd_testkit::harness::{get, http_client, Candidate, EtcdCluster};
use serde_json::{json, Value};

use crate::cluster::proc_usage;

/// Every sample of metric `name` in Prometheus text: its labels and value.
fn samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(l) = rest.strip_prefix('{') {
            let Some((l, v)) = l.split_once('}') else {
                continue;
            };
            (l, v)
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another metric with this prefix
        };
        let Ok(v) = value.trim().parse::<f64>() else {
            continue;
        };
        let labels = labels
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.trim().to_string(), v.trim().trim_matches('"').to_string()))
            })
            .collect();
        out.push((labels, v));
    }
    out
}

async fn scrape(addr: std::net::SocketAddr) -> Option<String> {
    let client = http_client();
    let body = tokio::time::timeout(Duration::from_secs(2), get(&client, addr, "/metrics"))
        .await
        .ok()?
        .ok()?;
    Some(String::from_utf8_lossy(&body).into_owned())
}

/// A candidate's store requests so far, by verb (every result code summed).
pub async fn leaderd_requests(c: &Candidate) -> Option<BTreeMap<String, f64>> {
    let text = scrape(c.metrics_addr).await?;
    let mut by: BTreeMap<String, f64> = BTreeMap::new();
    for (l, v) in samples(&text, "leaderd_lease_requests_total") {
        *by.entry(l.get("verb").cloned().unwrap_or_default())
            .or_default() += v;
    }
    Some(by)
}

/// `after - before`, verb by verb.
pub fn delta(
    before: &BTreeMap<String, f64>,
    after: &BTreeMap<String, f64>,
) -> BTreeMap<String, f64> {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// The verbs that change or renew a lease in etcd (the counterpart of a Lease write).
pub const ETCD_WRITES: [&str; 4] = ["grant", "put", "keepalive", "revoke"];

/// etcd's own counters, over every member: gRPC messages received by method (summed over the
/// members: a client talks to one), and the lease, put and raft counters (the largest member's:
/// grants, revokes, puts and proposals are applied on every member, renewals on the raft
/// leader only).
pub async fn etcd_counters(etcd: &EtcdCluster) -> BTreeMap<String, f64> {
    let mut out: BTreeMap<String, f64> = BTreeMap::new();
    for i in 0..etcd.len() {
        let Some(text) = scrape(etcd.client_addr(i)).await else {
            continue;
        };
        for (l, v) in samples(&text, "grpc_server_msg_received_total") {
            let m = l.get("grpc_method").cloned().unwrap_or_default();
            *out.entry(format!("grpc {m}")).or_default() += v;
        }
        for (name, key) in [
            ("etcd_debugging_lease_granted_total", "lease granted"),
            ("etcd_debugging_lease_renewed_total", "lease renewed"),
            ("etcd_debugging_lease_revoked_total", "lease revoked"),
            ("etcd_debugging_server_lease_expired_total", "lease expired"),
            ("etcd_mvcc_put_total", "mvcc put"),
            (
                "etcd_server_proposals_committed_total",
                "raft proposals committed",
            ),
        ] {
            let v: f64 = samples(&text, name).iter().map(|s| s.1).sum();
            let e = out.entry(key.to_string()).or_default();
            *e = e.max(v);
        }
    }
    out
}

/// The raft proposals committed so far (the largest member's count).
pub async fn proposals(etcd: &EtcdCluster) -> Option<f64> {
    etcd_counters(etcd)
        .await
        .get("raft proposals committed")
        .copied()
}

/// Every running member's RSS in bytes.
pub fn member_rss(etcd: &EtcdCluster) -> Vec<u64> {
    (0..etcd.len())
        .filter_map(|i| etcd.pid(i).and_then(proc_usage).map(|u| u.1))
        .collect()
}

/// The etcd side of a steady window.
#[derive(Debug, Default)]
pub struct EtcdSteady {
    /// Per candidate (in the cluster's order): its requests by verb over the window.
    pub verbs: Vec<(String, BTreeMap<String, f64>)>,
    /// etcd's counters over the window (see [`etcd_counters`]).
    pub server: BTreeMap<String, f64>,
    /// Every member's RSS at the end, bytes.
    pub member_rss: Vec<u64>,
}

impl EtcdSteady {
    pub fn json(&self, secs: f64) -> Value {
        json!({
            "verbs": self.verbs.iter().map(|(n, v)| json!({"name": n, "requests": v})).collect::<Vec<_>>(),
            "etcd_counters": self.server,
            "etcd_counters_per_s": self.server.iter().map(|(k, v)| (k.clone(), v / secs)).collect::<BTreeMap<_, _>>(),
            "etcd_member_rss_bytes": self.member_rss,
        })
    }
}

/// `etcd --version`'s first line (or why not).
pub fn etcd_version() -> String {
    let Ok(bin) = leaderd_testkit::harness::etcd_bin() else {
        return "etcd not found".into();
    };
    std::process::Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .map(str::to_string)
        })
        .unwrap_or_default()
}

//! Metrics, alert rules, dashboard, Events and logs, checked against running leaderd
//! processes and with the real promtool (Debian package `prometheus`, installed by .ci/run).

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{D, LEASE, NS, P};
use leaderd_testkit::harness::{get, http_client};

async fn scrape(addr: SocketAddr) -> String {
    let body = get(&http_client(), addr, "/metrics").await.expect("scrape");
    String::from_utf8(body.to_vec()).expect("utf-8")
}

/// The value of the first sample of `series` (name plus label matchers as written), if any.
fn value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter(|l| l.split(['{', ' ']).next() == Some(name))
        .find(|l| {
            labels
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

/// promtool, or `None` with a loud note when it is missing outside CI (CI must have it).
fn promtool() -> Option<&'static str> {
    let ok = Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        return Some("promtool");
    }
    if std::env::var_os("CI").is_some() {
        panic!("promtool is missing in CI: .ci/run must `apt-get install -y prometheus`");
    }
    eprintln!(
        "SKIPPED: promtool not installed (apt-get install -y prometheus); .ci/run installs it"
    );
    None
}

fn run_promtool(args: &[&str], stdin: Option<&str>, dir: &Path) -> String {
    let mut child = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool runs");
    if let Some(input) = stdin {
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
    }
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_follow_a_failover_and_events_are_posted() {
    let mut c = common::cluster(3).await;
    let (leader, epoch) = c.leader(D * 3, &[]).await;
    let labels = [("lease", LEASE), ("namespace", NS)];
    for cand in &c.cands {
        let m = scrape(cand.metrics_addr).await;
        let leading = if cand.name == leader { 1.0 } else { 0.0 };
        assert_eq!(
            value(&m, "leaderd_is_leader", &labels),
            Some(leading),
            "{}",
            cand.name
        );
        assert_eq!(
            value(&m, "leader_election_master_status", &[("name", LEASE)]),
            Some(leading)
        );
        assert_eq!(value(&m, "leaderd_epoch", &labels), Some(epoch as f64));
        let valid = value(&m, "leaderd_leadership_valid_seconds", &labels).unwrap();
        assert_eq!(
            valid > 0.0,
            cand.name == leader,
            "{} valid {valid}",
            cand.name
        );
        assert!(
            value(
                &m,
                "leaderd_lease_requests_total",
                &[("verb", "watch"), ("code", "200")]
            )
            .unwrap()
                >= 1.0
        );
        assert!(
            value(
                &m,
                "leaderd_build_info",
                &[("version", env!("CARGO_PKG_VERSION"))]
            ) == Some(1.0)
        );
        assert!(value(&m, "process_resident_memory_bytes", &[]).unwrap() > 0.0);
        // Kubelet probes reach the metrics listener (the app API stays on 127.0.0.1).
        for path in ["/healthz", "/readyz"] {
            assert!(
                get(&http_client(), cand.metrics_addr, path).await.is_ok(),
                "{path} on the metrics port"
            );
        }
    }
    let follower = c
        .cands
        .iter()
        .find(|x| x.name != leader)
        .unwrap()
        .metrics_addr;
    let before = value(
        &scrape(follower).await,
        "leaderd_leader_changes_total",
        &labels,
    )
    .unwrap();

    c.get(&leader).signal(libc::SIGTERM);
    let (next, epoch2) = c.leader(Duration::from_secs(2), &[&leader]).await;
    c.sampler.remove(&leader);
    c.get(&leader)
        .wait_exit(Duration::from_secs(5))
        .await
        .expect("exits");
    let addr = c
        .cands
        .iter()
        .find(|x| x.name == next)
        .unwrap()
        .metrics_addr;
    let m = scrape(addr).await;
    assert_eq!(value(&m, "leaderd_is_leader", &labels), Some(1.0));
    assert_eq!(value(&m, "leaderd_epoch", &labels), Some(epoch2 as f64));
    assert_eq!(value(&m, "leaderd_acquisitions_total", &labels), Some(1.0));
    assert!(
        value(
            &m,
            "leaderd_lease_requests_total",
            &[("verb", "update"), ("code", "200")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        value(
            &m,
            "leaderd_lease_request_duration_seconds_count",
            &[("verb", "update")]
        )
        .unwrap()
            >= 1.0
    );
    assert!(
        value(
            &m,
            "leaderd_last_observed_change_timestamp_seconds",
            &labels
        )
        .unwrap()
            > 1.7e9
    );
    let after = value(
        &scrape(follower).await,
        "leaderd_leader_changes_total",
        &labels,
    )
    .unwrap();
    assert!(after > before, "leader changes {before} -> {after}");

    // Events: the first leader became leader, then stopped on shutdown; the next took over.
    let events = c.server.events();
    let notes: Vec<String> = events
        .iter()
        .map(|e| e["note"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(
        notes.contains(&format!("{leader} became leader with epoch {epoch}")),
        "{notes:?}"
    );
    assert!(
        notes.contains(&format!("{leader} stopped leading: shutdown")),
        "{notes:?}"
    );
    assert!(
        notes.contains(&format!("{next} became leader with epoch {epoch2}")),
        "{notes:?}"
    );
    for e in &events {
        assert_eq!(e["regarding"]["kind"], "Lease");
        assert_eq!(e["regarding"]["name"], LEASE);
        assert_eq!(e["reportingController"], "leaderd");
    }
    c.assert_safe();

    if promtool().is_some() {
        run_promtool(&["check", "metrics"], Some(&m), Path::new("."));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_409_is_counted_and_the_leader_carries_on() {
    let mut c = common::cluster(0).await;
    // Without its watch, the leader renews from its own last write and meets the foreign edit.
    c.server.deny("c1", "watch");
    c.spawn("c1", &[]).await;
    let (_, epoch) = c.leader(D * 3, &[]).await;
    let mut lease = c.server.lease(NS, LEASE).unwrap();
    lease["metadata"]["annotations"] = serde_json::json!({"edited-by": "someone"});
    c.server.put_raw(NS, LEASE, lease);
    let addr = c.cands[0].metrics_addr;
    // Poll the metrics until the next renewal has met the conflict.
    let deadline = tokio::time::Instant::now() + P * 8;
    let m = loop {
        let m = scrape(addr).await;
        let conflicts = value(
            &m,
            "leaderd_lease_requests_total",
            &[("verb", "update"), ("code", "409")],
        );
        if conflicts.unwrap_or(0.0) >= 1.0 {
            break m;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 409 counted:\n{m}"
        );
        tokio::time::sleep(P / 5).await;
    };
    assert!(
        value(
            &m,
            "leaderd_lease_requests_total",
            &[("verb", "watch"), ("code", "403")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    let (_, still) = c.leader(P, &[]).await;
    assert_eq!(still, epoch, "an annotation edit must not end the tenure");
    assert_eq!(
        c.server.lease(NS, LEASE).unwrap()["metadata"]["annotations"]["edited-by"],
        "someone"
    );
    c.assert_safe();
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    if promtool().is_none() {
        return;
    }
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/prometheus");
    let out = run_promtool(&["check", "rules", "alerts.yaml"], None, &dir);
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_promtool(&["test", "rules", "alerts.test.yaml"], None, &dir);
    assert!(out.contains("SUCCESS"), "{out}");
}

/// Metric names used in a PromQL expression (identifiers that name leaderd/client-go/process series).
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut cur = String::new();
    for ch in expr.chars().chain(std::iter::once(' ')) {
        if ch.is_ascii_alphanumeric() || ch == '_' || ch == ':' {
            cur.push(ch);
        } else {
            if ["leaderd_", "leader_election_", "process_"]
                .iter()
                .any(|p| cur.starts_with(p))
            {
                names.insert(cur.clone());
            }
            cur.clear();
        }
    }
    names
}

fn exprs_in_json(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                match x {
                    serde_json::Value::String(s) if k == "expr" || k == "query" => {
                        out.push(s.clone())
                    }
                    _ => exprs_in_json(x, out),
                }
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| exprs_in_json(x, out)),
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_and_rules_use_only_metrics_that_exist() {
    let mut c = common::cluster(1).await;
    c.leader(D * 3, &[]).await;
    // leaderd_app_* are exported only with --app-check (LeaderdNoHealthyApp relies on a lease
    // without the check having no series): a second candidate checks an app that is not there
    // (it stays unhealthy and never leads), so the rules and panels about the app count too.
    c.spawn("checked", &["--app-check", "tcp://127.0.0.1:9"])
        .await;
    // Names of the metric families a scrape declares (# TYPE lines).
    let families = |m: &str| -> BTreeSet<String> {
        m.lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split(' ').next())
            .map(str::to_owned)
            .collect()
    };
    // leaderd_shard* are exported only with --shards: a third candidate is a member of a group
    // (the rules and panels of shard groups count too).
    c.spawn("sharded", &["--shards", "4"]).await;
    let plain = families(&scrape(c.cands[0].metrics_addr).await);
    let checked = families(&scrape(c.cands[1].metrics_addr).await);
    let sharded = families(&scrape(c.cands[2].metrics_addr).await);
    assert_eq!(
        sharded.difference(&plain).collect::<Vec<_>>(),
        [
            "leaderd_shard_group_members",
            "leaderd_shard_group_mismatch",
            "leaderd_shard_moves_total",
            "leaderd_shard_writes_total",
            "leaderd_shards",
            "leaderd_shards_owned",
        ],
        "the metrics exported only with --shards"
    );
    assert_eq!(
        checked.difference(&plain).collect::<Vec<_>>(),
        ["leaderd_app_checks_total", "leaderd_app_healthy"],
        "the metrics exported only with --app-check"
    );
    let exposed: BTreeSet<String> = checked
        .union(&plain)
        .chain(sharded.iter())
        .flat_map(|n| {
            [
                n.to_owned(),
                format!("{n}_bucket"),
                format!("{n}_sum"),
                format!("{n}_count"),
            ]
        })
        .collect();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("deploy/grafana/leaderd.json")).unwrap(),
    )
    .unwrap();
    let mut exprs = Vec::new();
    exprs_in_json(&dashboard, &mut exprs);
    let rules: serde_json::Value = serde_yaml::from_str(
        &std::fs::read_to_string(root.join("deploy/prometheus/alerts.yaml")).unwrap(),
    )
    .unwrap();
    let n_dashboard = exprs.len();
    exprs_in_json(&rules, &mut exprs);
    assert!(
        n_dashboard >= 6 && exprs.len() > n_dashboard + 5,
        "too few queries found"
    );
    for e in &exprs {
        for name in metric_names(e) {
            assert!(
                exposed.contains(&name),
                "{name} (in `{e}`) is not exposed by leaderd"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_carry_lease_identity_and_epoch_on_transitions() {
    let mut c = common::cluster(0).await;
    c.spawn("c1", &["--log-format", "json"]).await;
    c.leader(D * 3, &[]).await;
    let found = c
        .sampler
        .wait_for(P * 4, |_| {
            c.cands[0]
                .logs()
                .into_iter()
                .find(|l| l.contains("became leader"))
        })
        .await
        .expect("transition logged");
    let v: serde_json::Value = serde_json::from_str(&found).expect("a JSON log line");
    assert_eq!(v["level"], "INFO");
    assert_eq!(v["epoch"], 1);
    assert_eq!(v["span"]["lease"], LEASE);
    assert_eq!(v["span"]["identity"], "c1");
    let transitions = c.cands[0]
        .logs()
        .iter()
        .filter(|l| l.contains("became leader"))
        .count();
    assert_eq!(transitions, 1, "logged more than once");
}

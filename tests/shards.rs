//! Shard groups as processes: the real leaderd binary (`--shards 12`) against the Lease API
//! test server. Every replica's `/shards` is sampled throughout (no shard owned twice at once,
//! epochs rising) and the server's commit log is checked (no two live member records ever
//! list one shard).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{D, NS, P, R};
use leaderd_testkit::harness::shards::{CommitChecker, ShardSampler};
use leaderd_testkit::harness::{Cluster, ClusterOptions};
use tokio::time::Instant;

const GROUP: &str = "work";

async fn group(n: usize, shards: &str) -> (Cluster, ShardSampler, CommitChecker) {
    let mut o: ClusterOptions = common::options();
    o.lease = GROUP.into();
    let mut c = Cluster::start(o, 0).await.expect("test server starts");
    let checker = CommitChecker::start(&c.server, NS, GROUP);
    let sampler = ShardSampler::start(Duration::from_millis(10));
    for i in 1..=n {
        let name = format!("c{i}");
        let cand = c.spawn(&name, &["--shards", shards]).await;
        sampler.add(&name, cand.addr);
    }
    (c, sampler, checker)
}

fn owners(s: &ShardSampler) -> BTreeMap<u32, (String, Option<i64>)> {
    let mut out = BTreeMap::new();
    for (who, d) in s.latest() {
        for e in d.shards.iter().filter(|e| e.is_owner) {
            out.insert(e.id, (who.clone(), e.epoch));
        }
    }
    out
}

fn each_owns(
    want: &'static [(&'static str, usize)],
) -> impl Fn(&std::collections::HashMap<String, leaderd::shards::ShardsDoc>) -> bool {
    move |latest| {
        want.iter().all(|(who, n)| {
            latest
                .get(*who)
                .is_some_and(|d| d.shards.iter().filter(|s| s.is_owner).count() == *n)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shards_balance_move_by_release_on_join_and_leave_and_recover_from_a_crash() {
    let (mut c, s, log) = group(3, "12").await;
    let cold = s
        .wait_for(D * 3, each_owns(&[("c1", 4), ("c2", 4), ("c3", 4)]))
        .await
        .unwrap_or_else(|o| panic!("no 4/4/4: {o:?}"));
    eprintln!("balanced from cold in {cold:?}");
    let before = owners(&s);

    // A join: 3/3/3/3 within about a second, moving only the 3 shards balance needs.
    let cand = c.spawn("c4", &["--shards", "12"]).await;
    s.add("c4", cand.addr);
    let joined = Instant::now();
    s.wait_for(D, each_owns(&[("c1", 3), ("c2", 3), ("c3", 3), ("c4", 3)]))
        .await
        .unwrap_or_else(|o| panic!("no 3/3/3/3: {o:?}"));
    let took = joined.elapsed();
    assert!(took <= Duration::from_millis(1500), "join took {took:?}");
    let after = owners(&s);
    let moved: Vec<u32> = after
        .iter()
        .filter(|(id, (who, _))| before.get(id).map(|b| &b.0) != Some(who))
        .map(|(id, _)| *id)
        .collect();
    assert_eq!(moved.len(), 3, "moved {moved:?}");
    for id in &moved {
        assert!(after[id].1 > before[id].1, "shard {id}: the epoch rose");
        assert_eq!(after[id].0, "c4");
    }

    // Steady state: members renew every 3R/5, the coordinator its Lease; nothing else.
    let from = Instant::now().into_std();
    tokio::time::sleep(D).await;
    let writes = c
        .server
        .requests()
        .iter()
        .filter(|r| r.verb == "update" && r.at >= from)
        .count();
    let per_interval = writes as f64 / (D.as_secs_f64() / (R.as_secs_f64() * 3.0 / 5.0));
    assert!(
        per_interval <= 5.5,
        "{writes} writes in {D:?}: {per_interval} per renew interval for 4 members"
    );

    // A graceful leave (SIGTERM): its shards are owned again within about a second.
    let before = owners(&s);
    let left = Instant::now();
    c.get("c2").signal(libc_sigterm());
    s.wait_for(D, each_owns(&[("c1", 4), ("c3", 4), ("c4", 4)]))
        .await
        .unwrap_or_else(|o| panic!("no 4/4/4 after the leave: {o:?}"));
    let took = left.elapsed();
    assert!(took <= Duration::from_millis(1500), "leave took {took:?}");
    let exit = c.get("c2").wait_exit(D).await.expect("c2 exits");
    assert_eq!(exit.code(), Some(0));
    s.remove("c2");
    let after = owners(&s);
    for (id, (who, _)) in &before {
        if who == "c2" {
            assert!(after[id].1 > before[id].1, "shard {id}: the epoch rose");
        }
    }

    // kill -9: owned again within lease duration + retry period.
    let crashed = Instant::now();
    c.get("c3").kill9();
    s.remove("c3");
    s.wait_for(D + P * 8, each_owns(&[("c1", 6), ("c4", 6)]))
        .await
        .unwrap_or_else(|o| panic!("no 6/6 after the crash: {o:?}"));
    let took = crashed.elapsed();
    assert!(
        took <= D + P + Duration::from_millis(300),
        "crash recovery took {took:?}"
    );
    assert!(
        took >= R,
        "owned again before the crashed replica's claims ended: {took:?}"
    );

    let tenures = s.check().unwrap_or_else(|e| panic!("{e}"));
    let commits = log.result().unwrap_or_else(|e| panic!("{e:?}"));
    eprintln!("{tenures} sampled shard tenures, {commits} member commits checked");
    c.assert_safe();
    // Moves are reported as Events on the group's Lease, rate-limited (one per 10 s at most per
    // coordinator, the moves in between summed).
    let moved: Vec<serde_json::Value> = c
        .server
        .events()
        .into_iter()
        .filter(|e| e["reason"] == "ShardsMoved")
        .collect();
    assert!(!moved.is_empty(), "no ShardsMoved event");
    assert!(moved.len() <= 6, "not rate-limited: {moved:?}");
    assert_eq!(moved[0]["regarding"]["name"], GROUP);
}

fn libc_sigterm() -> i32 {
    15
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_started_with_another_shard_count_is_reported_and_harmless() {
    let (mut c, s, log) = group(2, "12").await;
    s.wait_for(D * 3, each_owns(&[("c1", 6), ("c2", 6)]))
        .await
        .unwrap_or_else(|o| panic!("no 6/6: {o:?}"));
    let odd = c.spawn("c3", &["--shards", "5"]).await;
    s.add("c3", odd.addr);
    let metrics = odd.metrics_addr;
    // Reported: a log line with the fix, and the metric.
    let deadline = Instant::now() + D;
    loop {
        let logs = c.get("c3").logs().join("\n");
        if logs.contains("another --shards than its group") {
            break;
        }
        assert!(Instant::now() < deadline, "no mismatch report: {logs}");
        tokio::time::sleep(P).await;
    }
    let text = leaderd_testkit::harness::http::get(
        &leaderd_testkit::harness::http::http_client(),
        metrics,
        "/metrics",
    )
    .await
    .expect("metrics");
    let text = String::from_utf8_lossy(&text);
    assert!(
        text.contains("leaderd_shard_group_mismatch{lease=\"work\",namespace=\"default\"} 1"),
        "{text}"
    );
    // Harmless: the others keep 6/6 and the odd one owns nothing, also after the coordinator
    // dies (the odd one never coordinates).
    let coordinator = c.leader(D, &[]).await.0;
    assert_ne!(coordinator, "c3");
    tokio::time::sleep(D).await;
    assert_eq!(s.owned()["c3"], 0);
    let other = if coordinator == "c1" { "c2" } else { "c1" };
    c.get(&coordinator).kill9();
    s.remove(&coordinator);
    let want: &'static [(&'static str, usize)] = if other == "c1" {
        &[("c1", 12)]
    } else {
        &[("c2", 12)]
    };
    s.wait_for(D * 3, each_owns(want))
        .await
        .unwrap_or_else(|o| panic!("the survivor does not own all 12: {o:?}"));
    assert_eq!(s.owned()["c3"], 0);
    assert_eq!(c.leader(D, &[&coordinator]).await.0, other);
    s.check().unwrap_or_else(|e| panic!("{e}"));
    log.result().unwrap_or_else(|e| panic!("{e:?}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_configured_by_file_joins_the_group_of_one_configured_by_flags() {
    let (mut c, s, log) = group(1, "12").await;
    s.wait_for(D * 3, each_owns(&[("c1", 12)]))
        .await
        .unwrap_or_else(|o| panic!("c1 does not own all 12: {o:?}"));
    let file = c.dir.path().join("leaderd.yaml");
    std::fs::write(
        &file,
        format!(
            "# the same group and timing as the flags of c1\ngroups:\n  - name: {GROUP}\n    shards: 12\n    leaseDuration: 3s\n    renewDeadline: 2s\n    retryPeriod: 250ms\n"
        ),
    )
    .unwrap();
    let mut spec = c.spec("c2", &[]).unwrap();
    spec.config = Some(file);
    let cand = leaderd_testkit::harness::process::Candidate::spawn(&spec)
        .await
        .expect("c2 starts");
    s.add("c2", cand.addr);
    c.add(cand);
    s.wait_for(D, each_owns(&[("c1", 6), ("c2", 6)]))
        .await
        .unwrap_or_else(|o| panic!("no 6/6: {o:?}"));
    s.check().unwrap_or_else(|e| panic!("{e}"));
    log.result().unwrap_or_else(|e| panic!("{e:?}"));
}

/// Per shard: its owner, epoch and whether the replica owns it.
type ShardKey = (Option<String>, Option<i64>, bool);

/// What a change of `/shards` is: members, and every shard's [`ShardKey`].
fn key(d: &leaderd::shards::ShardsDoc) -> (Vec<String>, Vec<ShardKey>) {
    (
        d.members.clone(),
        d.shards
            .iter()
            .map(|e| (e.owner.clone(), e.epoch, e.is_owner))
            .collect(),
    )
}

/// The next `shards` event of a `/shards/stream`, decoded.
async fn next_shards(
    s: &mut leaderd_testkit::harness::sse::EventStream,
) -> leaderd::shards::ShardsDoc {
    use leaderd_testkit::harness::sse::Frame;
    loop {
        match s.next_frame().await.expect("stream reads") {
            Some((Frame::Event { name, data }, _)) if name == "shards" => {
                return serde_json::from_str(&data).expect("a ShardsDoc")
            }
            Some(_) => continue,
            None => panic!("the stream ended"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shards_api_answers_waits_streams_and_releases() {
    use leaderd_testkit::harness::http::request;
    let (c, s, log) = group(2, "4").await;
    s.wait_for(D * 3, each_owns(&[("c1", 2), ("c2", 2)]))
        .await
        .unwrap_or_else(|o| panic!("no 2/2: {o:?}"));
    let (a1, a2) = (c.cands[0].addr, c.cands[1].addr);
    // One shard as /leader JSON; a bad id is 404 with the range.
    let mine = s.latest()["c1"]
        .shards
        .iter()
        .find(|e| e.is_owner)
        .map(|e| e.id)
        .expect("c1 owns one");
    let (code, body) = request(a1, "GET", &format!("/shards/{mine}")).await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["is_leader"], true);
    assert_eq!(v["leader"], "c1");
    assert_eq!(v["lease"], GROUP);
    assert!(v["epoch"].as_i64().unwrap() >= 1);
    assert!(v["valid_for_ms"].as_u64().unwrap() > 0);
    let (code, body) = request(a1, "GET", "/shards/4").await;
    assert_eq!(code, 404);
    assert!(body.contains("0 to 3"), "{body}");
    let (code, _) = request(a1, "GET", "/shards?wait=forever").await;
    assert_eq!(code, 400);

    // A long poll on c2 and a stream on c2 see c1's release.
    let mut stream = leaderd_testkit::harness::sse::EventStream::open_path(a2, "/shards/stream")
        .await
        .unwrap();
    let first = next_shards(&mut stream).await;
    assert_eq!(first.shards.iter().filter(|e| e.is_owner).count(), 2);
    let poll = tokio::spawn(async move { request(a2, "GET", "/shards?wait=20s").await });
    tokio::time::sleep(P).await;
    let released = Instant::now();
    let (code, body) = request(a1, "POST", "/shards/release").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("\"released\":true"), "{body}");
    // c1 owns nothing at once; c2 owns all 4 within about a second.
    assert_eq!(s.latest().get("c1").map_or(0, |_| 0), 0);
    let (_, body) = request(a1, "GET", "/shards").await;
    let d: leaderd::shards::ShardsDoc = serde_json::from_str(&body).unwrap();
    assert!(
        d.shards.iter().all(|e| !e.is_owner),
        "still owns after the release: {body}"
    );
    s.wait_for(D, each_owns(&[("c1", 0), ("c2", 4)]))
        .await
        .unwrap_or_else(|o| panic!("no 0/4: {o:?}"));
    assert!(released.elapsed() <= Duration::from_millis(1500));
    let (code, body) = poll.await.unwrap();
    assert_eq!(code, 200);
    let polled: leaderd::shards::ShardsDoc = serde_json::from_str(&body).unwrap();
    assert_ne!(
        key(&polled),
        key(&first),
        "the long poll answered without a change: {body}"
    );
    let changed = next_shards(&mut stream).await;
    assert_ne!(key(&changed), key(&first));
    // After one lease duration the released replica rejoins and balance gives it shards again.
    s.wait_for(D * 3, each_owns(&[("c1", 2), ("c2", 2)]))
        .await
        .unwrap_or_else(|o| panic!("no 2/2 after the rejoin: {o:?}"));
    assert!(released.elapsed() >= D, "rejoined before a lease duration");
    s.check().unwrap_or_else(|e| panic!("{e}"));
    log.result().unwrap_or_else(|e| panic!("{e:?}"));
}

/// One sidecar, several entries (`--config`): a lease and two groups, each with its timing,
/// each served under its name; then a kill -9, after which the survivor holds everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_sidecar_serves_a_lease_and_two_groups_each_under_its_name() {
    use leaderd_testkit::harness::http::{get, http_client, request};
    let mut o: ClusterOptions = common::options();
    o.lease = "cron".into();
    o.leader_path = "/leases/cron/leader".into();
    let mut c = Cluster::start(o, 0).await.expect("test server starts");
    let file = c.dir.path().join("several.yaml");
    std::fs::write(
        &file,
        "identity: ignored-because-the-flag-wins\n\
         leases:\n  - name: cron\n    leaseDuration: 3s\n    renewDeadline: 2s\n    retryPeriod: 250ms\n\
         groups:\n  - name: work\n    shards: 4\n    leaseDuration: 3s\n    renewDeadline: 2s\n    retryPeriod: 250ms\n  \
         - {name: jobs, shards: 6, leaseDuration: 4s, renewDeadline: 3s, retryPeriod: 300ms}\n",
    )
    .unwrap();
    let work_log = CommitChecker::start(&c.server, NS, "work");
    let jobs_log = CommitChecker::start(&c.server, NS, "jobs");
    let work = ShardSampler::start_at(Duration::from_millis(10), "/groups/work/shards");
    let jobs = ShardSampler::start_at(Duration::from_millis(10), "/groups/jobs/shards");
    for name in ["c1", "c2"] {
        let mut spec = c.spec(name, &[]).unwrap();
        spec.config = Some(file.clone());
        let cand = leaderd_testkit::harness::process::Candidate::spawn(&spec)
            .await
            .unwrap_or_else(|e| panic!("{name} starts: {e}"));
        work.add(name, cand.addr);
        jobs.add(name, cand.addr);
        c.add(cand);
    }
    work.wait_for(D * 3, each_owns(&[("c1", 2), ("c2", 2)]))
        .await
        .unwrap_or_else(|o| panic!("work: no 2/2: {o:?}"));
    jobs.wait_for(D * 3, each_owns(&[("c1", 3), ("c2", 3)]))
        .await
        .unwrap_or_else(|o| panic!("jobs: no 3/3: {o:?}"));
    let (cron_leader, _) = c.leader(D * 3, &[]).await;
    assert!(["c1", "c2"].contains(&cron_leader.as_str()));

    // Each entry has its own timing, written in its Lease.
    let seconds =
        |name: &str| c.server.lease(NS, name).expect(name)["spec"]["leaseDurationSeconds"].as_i64();
    assert_eq!(seconds("cron"), Some(3));
    assert_eq!(seconds("jobs"), Some(4));

    // The paths take the names; the short ones point at them.
    let (a, m) = (c.cands[0].addr, c.cands[0].metrics_addr);
    let (code, body) = request(a, "GET", "/leader").await;
    assert_eq!(code, 404, "{body}");
    for path in [
        "/leases/cron/leader",
        "/groups/work/shards",
        "/groups/jobs/shards",
    ] {
        assert!(body.contains(path), "{path} not in {body}");
    }
    assert_eq!(request(a, "GET", "/shards").await.0, 404);
    let (code, body) = request(a, "GET", "/groups/jobs/leader").await;
    assert_eq!(code, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        v["lease"], "jobs",
        "the group's coordinator election: {body}"
    );
    let (code, body) = request(a, "GET", "/groups/work/shards/3").await;
    assert_eq!(code, 200, "{body}");
    let (code, body) = request(a, "GET", "/groups/work/shards/4").await;
    assert_eq!(code, 404);
    assert!(body.contains("0 to 3"), "{body}");
    assert_eq!(request(a, "GET", "/leases/work/leader").await.0, 404);
    assert_eq!(request(a, "GET", "/readyz").await.0, 200);

    // One /metrics: every entry's series, labelled with its name; process-wide series once.
    let text = get(&http_client(), m, "/metrics").await.expect("metrics");
    let text = String::from_utf8_lossy(&text);
    for line in [
        "leaderd_shards{lease=\"work\",namespace=\"default\"} 4",
        "leaderd_shards{lease=\"jobs\",namespace=\"default\"} 6",
        "leaderd_shards_owned{lease=\"jobs\",namespace=\"default\"} 3",
        "leaderd_is_leader{lease=\"cron\",namespace=\"default\"}",
        "leaderd_is_leader{lease=\"work\",namespace=\"default\"}",
    ] {
        assert!(text.contains(line), "{line} missing from\n{text}");
    }
    assert_eq!(
        text.lines()
            .filter(|l| l.starts_with("leaderd_build_info{"))
            .count(),
        1,
        "{text}"
    );

    // kill -9: the survivor owns every shard of both groups, and leads the lease.
    c.get("c1").kill9();
    c.sampler.remove("c1");
    work.remove("c1");
    jobs.remove("c1");
    work.wait_for(D * 3, each_owns(&[("c2", 4)]))
        .await
        .unwrap_or_else(|o| panic!("work: c2 does not own all 4: {o:?}"));
    jobs.wait_for(D * 3, each_owns(&[("c2", 6)]))
        .await
        .unwrap_or_else(|o| panic!("jobs: c2 does not own all 6: {o:?}"));
    assert_eq!(c.leader(D * 3, &["c1"]).await.0, "c2");

    for (s, log) in [(&work, &work_log), (&jobs, &jobs_log)] {
        s.check().unwrap_or_else(|e| panic!("{e}"));
        log.result().unwrap_or_else(|e| panic!("{e:?}"));
    }
    c.assert_safe();
}

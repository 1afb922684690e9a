//! The process scenarios against a real kube-apiserver (run by `scripts/e2e-real.sh`, which
//! starts one and sets the variables below). Without `LEADERD_REAL_KUBECONFIG` each test says it
//! skipped.
//!
//! - `LEADERD_REAL_KUBECONFIG`: an admin kubeconfig.
//! - `LEADERD_REAL_SA_KUBECONFIG`: a ServiceAccount token bound to the chart's Role (lease
//!   `leaderd-example`): the candidates run with exactly a pod's rights.
//! - `LEADERD_REAL_NOUPDATE_KUBECONFIG`: the same Role without `update` (lease `leaderd-noupdate`).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leaderd_testkit::harness::{check, Candidate, CandidateSpec, Sampler};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::time::Instant;

const D: Duration = Duration::from_secs(3);
const R: Duration = Duration::from_secs(2);
const P: Duration = Duration::from_millis(250);

fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name).map(PathBuf::from)
}

fn spec(kubeconfig: &Path, lease: &str, identity: &str) -> CandidateSpec {
    CandidateSpec::new(
        env!("CARGO_BIN_EXE_leaderd"),
        kubeconfig.to_path_buf(),
        lease,
        "default",
        identity,
        (D, R, P),
    )
}

fn dump(cands: &[Candidate]) {
    for c in cands {
        eprintln!("--- {} ---\n{}", c.name, c.logs().join("\n"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_crash_and_handover_against_a_real_apiserver() {
    let Some(admin) = env_path("LEADERD_REAL_KUBECONFIG") else {
        eprintln!("SKIPPED: LEADERD_REAL_KUBECONFIG is not set");
        return;
    };
    // With the chart's ServiceAccount when given (its Role names the lease), else as admin.
    let (kubeconfig, lease) = match env_path("LEADERD_REAL_SA_KUBECONFIG") {
        Some(sa) => (sa, "leaderd-example".to_owned()),
        None => (admin, format!("real-{}", std::process::id())),
    };
    let sampler = Sampler::start(Duration::from_millis(10));
    let mut cands = Vec::new();
    for i in 1..=3 {
        let c = Candidate::spawn(&spec(&kubeconfig, &lease, &format!("r{i}")))
            .await
            .expect("starts");
        sampler.add(&c);
        cands.push(c);
    }
    let Some((first, e1)) = sampler.wait_for_leader(D * 3, &[]).await else {
        dump(&cands);
        panic!("no leader");
    };
    tokio::time::sleep(P * 4).await;
    let i = cands.iter().position(|c| c.name == first).unwrap();
    let dead = cands.remove(i);
    sampler.remove(&first);
    let killed = Instant::now();
    dead.kill9();
    let Some((second, e2)) = sampler.wait_for_leader(D + P * 4, &[&first]).await else {
        dump(&cands);
        panic!("no leader after kill -9");
    };
    let crash = sampler.first_leading(&second, killed).unwrap().recv - killed;
    assert!(e2 > e1);
    let i = cands.iter().position(|c| c.name == second).unwrap();
    let termed = Instant::now();
    cands[i].signal(libc::SIGTERM);
    let Some((third, e3)) = sampler
        .wait_for_leader(Duration::from_secs(1), &[&second])
        .await
    else {
        dump(&cands);
        panic!("no leader after SIGTERM");
    };
    let handover = sampler.first_leading(&third, termed).unwrap().recv - termed;
    assert_eq!(
        cands[i]
            .wait_exit(Duration::from_secs(5))
            .await
            .and_then(|s| s.code()),
        Some(0)
    );
    sampler.remove(&second);
    cands.remove(i);
    assert_eq!(e3, e2 + 1);
    eprintln!("real apiserver ({lease}): crash failover {crash:?}, graceful handover {handover:?}, epochs {e1} {e2} {e3}");

    // A peer written by others joins: the Python client's LeaseLock elector.
    let peer = Peer::start(&kubeconfig, &lease).await;
    for name in ["r4", "r5"] {
        let c = Candidate::spawn(&spec(&kubeconfig, &lease, name))
            .await
            .expect("starts");
        sampler.add(&c);
        cands.push(c);
    }
    let i = cands.iter().position(|c| c.name == third).unwrap();
    cands[i].signal(libc::SIGTERM); // released: leaderd followers and the peer race for it
    let _ = cands[i].wait_exit(Duration::from_secs(5)).await;
    sampler.remove(&third);
    cands.remove(i);
    // Whoever won the release, take every leaderd away: the peer must take over alone.
    let winner = sampler
        .wait_for(D * 2, |m| {
            let l: Vec<_> = m
                .iter()
                .filter(|(_, v)| v.is_leader)
                .map(|(n, _)| n.clone())
                .collect();
            if peer.leading() {
                Some("peer".to_owned())
            } else {
                l.first().cloned()
            }
        })
        .await
        .expect("someone leads after the release");
    eprintln!("after the release, {winner} leads");
    for c in cands.iter_mut() {
        sampler.remove(&c.name);
        c.kill9();
    }
    cands.clear();
    let peer_led = sampler
        .wait_for(D * 3, |_| peer.leading().then_some(()))
        .await;
    assert!(
        peer_led.is_some(),
        "the Python peer did not take over an expired leaderd lease"
    );
    // New leaderd candidates follow the peer's record and keep out while it renews.
    for name in ["r6", "r7"] {
        let c = Candidate::spawn(&spec(&kubeconfig, &lease, name))
            .await
            .expect("starts");
        sampler.add(&c);
        cands.push(c);
    }
    let follows = sampler
        .wait_for(D, |m| {
            (m.len() == 2
                && m.values()
                    .all(|v| v.leader.as_deref() == Some("python-peer")))
            .then_some(())
        })
        .await;
    assert!(
        follows.is_some(),
        "leaderd does not see the peer as leader: {:?}",
        sampler.latest()
    );
    tokio::time::sleep(D * 2).await;
    assert!(peer.leading() && sampler.latest().values().all(|v| !v.is_leader));
    // The peer dies: leaderd takes over its record, with an epoch above what the peer kept.
    let epoch_before = sampler
        .latest()
        .values()
        .filter_map(|v| v.epoch)
        .max()
        .unwrap_or(0);
    peer.kill();
    let after = sampler.wait_for_leader(D + P * 8, &[]).await;
    let Some((_, e_after)) = after else {
        dump(&cands);
        panic!("no leaderd took over from the peer");
    };
    assert!(
        e_after > epoch_before,
        "epoch {e_after} not above the peer's {epoch_before}"
    );
    tokio::time::sleep(P * 4).await;
    let samples = sampler.samples();
    let v = check(&samples);
    assert!(v.is_empty(), "{v:?}");
    // Mutual exclusion with the peer: no leaderd answered "leader" while the peer led.
    for (from, to) in peer.intervals() {
        let to = to.unwrap_or_else(Instant::now);
        for s in samples.iter().filter(|s| s.view.is_leader) {
            assert!(
                !(s.sent > from && s.recv + Duration::from_millis(50) < to),
                "{} led (epoch {:?}) while the Python peer led",
                s.who,
                s.view.epoch
            );
        }
    }
    eprintln!("python peer tenures: {}", peer.intervals().len());
    peer.kill();
    for c in &cands {
        assert!(!c.logs().iter().any(|l| l.contains("panicked")));
    }
}

/// The Python LeaseLock elector as a process, with the instants its leadership lines arrived.
struct Peer {
    child: Mutex<tokio::process::Child>,
    events: Arc<Mutex<Vec<(Instant, bool)>>>,
}

impl Peer {
    async fn start(kubeconfig: &Path, lease: &str) -> Peer {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/peers/leaselock_peer.py");
        let mut child = tokio::process::Command::new("python3")
            .arg(script)
            .arg(kubeconfig)
            .args(["default", lease, "python-peer", "3", "2", "1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("python3 runs");
        let out = child.stdout.take().unwrap();
        let events = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = tokio::sync::oneshot::channel();
        let sink = events.clone();
        tokio::spawn(async move {
            let mut tx = Some(tx);
            let mut lines = BufReader::new(out).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                match line.as_str() {
                    "campaigning" => {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    "started leading" => sink.lock().unwrap().push((Instant::now(), true)),
                    "stopped leading" => sink.lock().unwrap().push((Instant::now(), false)),
                    _ => {}
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("peer starts")
            .unwrap();
        Peer {
            child: Mutex::new(child),
            events,
        }
    }

    fn leading(&self) -> bool {
        self.events
            .lock()
            .unwrap()
            .last()
            .is_some_and(|(_, on)| *on)
    }

    fn intervals(&self) -> Vec<(Instant, Option<Instant>)> {
        let mut out = Vec::new();
        for (at, on) in self.events.lock().unwrap().iter() {
            if *on {
                out.push((*at, None));
            } else if let Some(last) = out.last_mut() {
                last.1 = Some(*at);
            }
        }
        out
    }

    /// kill -9: the peer cannot report an end, so its last tenure is closed now.
    fn kill(&self) {
        let _ = self.child.lock().unwrap().start_kill();
        if self.leading() {
            self.events.lock().unwrap().push((Instant::now(), false));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_without_update_gives_a_clear_forbidden_and_never_a_leader() {
    let Some(kubeconfig) = env_path("LEADERD_REAL_NOUPDATE_KUBECONFIG") else {
        eprintln!("SKIPPED: LEADERD_REAL_NOUPDATE_KUBECONFIG is not set");
        return;
    };
    let sampler = Sampler::start(Duration::from_millis(10));
    let c = Candidate::spawn(&spec(&kubeconfig, "leaderd-noupdate", "n1"))
        .await
        .expect("starts");
    sampler.add(&c);
    // The stale holder is waited out (D), then the takeover's update is refused.
    let found = sampler
        .wait_for(D * 3, |_| {
            c.logs().into_iter().find(|l| l.contains("Forbidden"))
        })
        .await;
    let Some(line) = found else {
        dump(std::slice::from_ref(&c));
        panic!("no Forbidden logged");
    };
    assert!(line.contains("cannot update resource \"leases\""), "{line}");
    assert!(line.contains("fix: grant verb \"update\""), "{line}");
    tokio::time::sleep(P * 4).await;
    let samples = sampler.samples();
    assert!(!samples.is_empty() && samples.iter().all(|s| !s.view.is_leader));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shard_group_balances_and_recovers_against_a_real_apiserver() {
    use leaderd_testkit::harness::shards::ShardSampler;
    let Some(kubeconfig) = env_path("LEADERD_REAL_SHARDS_KUBECONFIG") else {
        eprintln!("SKIPPED: LEADERD_REAL_SHARDS_KUBECONFIG is not set");
        return;
    };
    // The shard group's ServiceAccount (manifests/shards-example.yaml): list and watch by label
    // selector, member Leases created and updated by name, no delete.
    let group = format!("shards-{}", std::process::id());
    let sampler = ShardSampler::start(Duration::from_millis(10));
    let mut cands = Vec::new();
    for i in 1..=3 {
        let mut s = spec(&kubeconfig, &group, &format!("s{i}"));
        s.extra_args = vec!["--shards".into(), "6".into()];
        let c = Candidate::spawn(&s).await.expect("starts");
        sampler.add(&c.name, c.addr);
        cands.push(c);
    }
    let even = |want: usize, who: &'static [&'static str]| {
        move |l: &std::collections::HashMap<String, leaderd::shards::ShardsDoc>| {
            who.iter().all(|w| {
                l.get(*w)
                    .is_some_and(|d| d.shards.iter().filter(|s| s.is_owner).count() == want)
            })
        }
    };
    if let Err(o) = sampler.wait_for(D * 4, even(2, &["s1", "s2", "s3"])).await {
        dump(&cands);
        panic!("no 2/2/2: {o:?}");
    }
    let dead = cands.remove(2);
    sampler.remove("s3");
    let killed = Instant::now();
    dead.kill9();
    if let Err(o) = sampler.wait_for(D + P * 8, even(3, &["s1", "s2"])).await {
        dump(&cands);
        panic!("no 3/3 after kill -9: {o:?}");
    }
    eprintln!(
        "real apiserver: shards owned again {:?} after kill -9",
        killed.elapsed()
    );
    let tenures = sampler.check().unwrap_or_else(|e| panic!("{e}"));
    eprintln!("real apiserver: {tenures} sampled shard tenures, no overlap");
    for c in &cands {
        c.signal(15);
    }
    for c in &cands {
        assert_eq!(c.wait_exit(D).await.and_then(|e| e.code()), Some(0));
    }
}

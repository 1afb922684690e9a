//! The real leaderd binary with the etcd backend (`--backend etcd`, issue 17) against a real etcd
//! (3.4, Debian's `etcd-server`/`etcd-client`; the testkit's [`EtcdCluster`] starts it on
//! 127.0.0.1): elections, kill -9 and SIGTERM, a leader cut off from etcd, a cluster that loses
//! its quorum, and etcd's own `etcdctl elect` as a peer in the same election; every `/leader`
//! sampled throughout and checked for two leaders at once and falling epochs.
//!
//! Without `etcd` and `etcdctl` these tests fail, saying so (CI installs them): they never skip.
//! Each test has its own etcd (own ports, own data directory), so they run in parallel.

use std::io;
use std::process::{Command, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leaderd_testkit::harness::{
    check, request, Candidate, EtcdCandidateSpec, EtcdCluster, HoldProxy, Sampler,
};
use tokio::io::{AsyncBufReadExt as _, BufReader};
use tokio::sync::watch;
use tokio::time::{sleep, timeout, Instant};

/// Short timings so that failovers take seconds: lease TTL 3 s (etcd's floor is 1.5 s at its
/// default election timeout), deadline 2 s, keep-alive every 250 ms.
const D: Duration = Duration::from_secs(3);
const R: Duration = Duration::from_secs(2);
const P: Duration = Duration::from_millis(250);
/// etcd checks for expired leases every 500 ms: a lease outlives its TTL by up to that much.
const EXPIRY_TICK: Duration = Duration::from_millis(500);
/// etcd's default election timeout: how long a raft leader that lost its quorum may still
/// believe it leads (CheckQuorum: up to twice this) and answer keep-alives.
const ELECTION_TIMEOUT: Duration = Duration::from_secs(1);
/// The tests of this file take turns: each starts etcd members and leaderd processes whose
/// timing they assert, and on CI's two cores several at once would measure the machine.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The election: keys `/leaderd-test/payouts/<lease id in hex>`.
const PREFIX: &str = "/leaderd-test/";
const NAME: &str = "payouts";

fn election() -> String {
    format!("{PREFIX}{NAME}")
}

/// One key of the election as etcd holds it.
#[derive(Clone, Debug)]
struct Key {
    key: String,
    value: String,
    create_revision: i64,
    lease: i64,
}

/// Standard base64 (what `etcdctl -w json` writes keys and values in).
fn base64(s: &str) -> String {
    let (mut out, mut acc, mut bits) = (Vec::new(), 0u32, 0);
    for c in s.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// An etcd, leaderd candidates with the etcd backend, and a sampler of every `/leader`.
struct Bed {
    etcd: EtcdCluster,
    sampler: Sampler,
    cands: Vec<Candidate>,
}

impl Bed {
    async fn start(members: usize) -> Bed {
        let etcd = EtcdCluster::start(members).await.unwrap_or_else(|e| {
            panic!(
                "ETCD DID NOT START: these tests need a real etcd 3.4+ and etcdctl \
                 (Debian: apt-get install etcd-server etcd-client): {e}"
            )
        });
        Bed {
            etcd,
            sampler: Sampler::start(Duration::from_millis(10)),
            cands: Vec::new(),
        }
    }

    /// Start leaderd `id` reaching etcd at `endpoints`, sampled.
    async fn spawn_at(&mut self, id: &str, endpoints: &str) {
        let mut spec = EtcdCandidateSpec::new(
            env!("CARGO_BIN_EXE_leaderd"),
            endpoints,
            NAME,
            id,
            (D, R, P),
        );
        spec.prefix = Some(PREFIX.into());
        match Candidate::spawn_etcd(&spec).await {
            Ok(c) => {
                self.sampler.add(&c);
                self.cands.push(c);
            }
            Err(e) => self.fail(&format!("leaderd {id} did not start: {e}")),
        }
    }

    /// Start leaderd `id` reaching every member, sampled.
    async fn spawn(&mut self, id: &str) {
        let endpoints = self.etcd.endpoints();
        self.spawn_at(id, &endpoints).await;
    }

    fn get(&self, id: &str) -> &Candidate {
        self.cands
            .iter()
            .find(|c| c.name == id)
            .expect("known candidate")
    }

    /// Stop sampling `id` and forget it (after it was killed or stopped on purpose).
    fn forget(&mut self, id: &str) -> Candidate {
        self.sampler.remove(id);
        let i = self
            .cands
            .iter()
            .position(|c| c.name == id)
            .expect("known candidate");
        self.cands.remove(i)
    }

    /// Wait for exactly one leader (among those not excluded), or fail with every log.
    async fn leader(&self, within: Duration, except: &[&str]) -> (String, i64) {
        match self.sampler.wait_for_leader(within, except).await {
            Some(l) => l,
            None => self.fail(&format!(
                "no single leader within {within:?}; latest: {:#?}",
                self.sampler.latest()
            )),
        }
    }

    /// Wait until every candidate sampled reports `leader` as leader under `epoch`.
    async fn all_see(&self, within: Duration, leader: &str, epoch: i64) {
        let n = self.cands.len();
        let seen = self
            .sampler
            .wait_for(within, |m| {
                (m.len() == n
                    && m.values()
                        .all(|v| v.leader.as_deref() == Some(leader) && v.epoch == Some(epoch)))
                .then_some(())
            })
            .await;
        if seen.is_none() {
            self.fail(&format!(
                "not every candidate saw {leader} under epoch {epoch} within {within:?}: {:#?}",
                self.sampler.latest()
            ));
        }
    }

    /// Every key of the election, lowest create revision first, and the cluster ID.
    async fn line(&self) -> (Vec<Key>, u64) {
        let prefix = format!("{}/", election());
        let out = self
            .etcd
            .etcdctl(&["get", "--prefix", &prefix, "-w", "json"])
            .await
            .expect("etcdctl runs");
        if !out.status.success() {
            self.fail(&format!("etcdctl get: {}", text(&out)));
        }
        let v: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| self.fail(&format!("etcdctl get -w json: {e}: {}", text(&out))));
        let cluster_id = v["header"]["cluster_id"].as_u64().expect("a cluster id");
        let mut keys: Vec<Key> = v["kvs"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|kv| Key {
                key: base64(kv["key"].as_str().unwrap_or_default()),
                value: base64(kv["value"].as_str().unwrap_or_default()),
                create_revision: kv["create_revision"].as_i64().unwrap_or(-1),
                lease: kv["lease"].as_i64().unwrap_or(0),
            })
            .collect();
        keys.sort_by_key(|k| k.create_revision);
        (keys, cluster_id)
    }

    /// Wait (polling etcd every 100 ms) until the election's keys satisfy `pred`; fails with
    /// the last ones read.
    async fn wait_line(&self, within: Duration, pred: impl Fn(&[Key]) -> bool) -> Vec<Key> {
        let end = Instant::now() + within;
        loop {
            let (line, _) = self.line().await;
            if pred(&line) {
                return line;
            }
            if Instant::now() >= end {
                self.fail(&format!("the election's keys within {within:?}: {line:#?}"));
            }
            sleep(Duration::from_millis(100)).await;
        }
    }

    /// Print every candidate's log and the tail of every etcd member's, and panic.
    fn fail(&self, why: &str) -> ! {
        for c in &self.cands {
            eprintln!("----- log of {} -----", c.name);
            for l in c.logs() {
                eprintln!("{l}");
            }
        }
        eprintln!("{}", self.etcd.log_tails(30));
        panic!("{why}");
    }

    /// No two leaders at once, epochs only rising, in everything sampled so far.
    fn assert_safe(&self) {
        let samples = self.sampler.samples();
        assert!(samples.len() > 10, "the sampler saw almost nothing");
        let v = check(&samples);
        if !v.is_empty() {
            self.fail(&format!("safety violations: {v:#?}"));
        }
    }

    /// No candidate still kept exited or logged a panic.
    fn assert_alive(&self) {
        for c in &self.cands {
            if let Ok(Some(status)) = c.try_wait() {
                self.fail(&format!("{} exited with {status}", c.name));
            }
            if c.logs().iter().any(|l| l.contains("panicked")) {
                self.fail(&format!("{} panicked", c.name));
            }
        }
    }

    /// The last `/leader` answer of `id` that said it leads (by request time).
    fn last_leading(&self, id: &str) -> Option<leaderd_testkit::harness::Sample> {
        self.sampler
            .samples()
            .into_iter()
            .filter(|s| s.who == id && s.view.is_leader)
            .max_by_key(|s| s.sent)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_member_elects_one_leader_then_fails_over_on_kill_9_and_hands_over_on_sigterm() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut b = Bed::start(1).await;
    for id in ["c1", "c2", "c3"] {
        b.spawn(id).await;
    }
    let (first, e1) = b.leader(D * 3, &[]).await;
    b.all_see(D, &first, e1).await;
    // etcd holds concurrency.Election's layout: one key per candidate, the leader's first.
    let (line, cluster_id) = b.line().await;
    assert_eq!(line.len(), 3, "{line:#?}");
    assert_eq!(line[0].value, first, "{line:#?}");
    assert_eq!(line[0].create_revision, e1, "{line:#?}");
    for k in &line {
        assert_eq!(
            k.key,
            format!("{}/{:x}", election(), k.lease),
            "key named after its lease in lowercase hex: {line:#?}"
        );
    }
    let uid = format!("etcd-{cluster_id:x}");
    for (who, v) in b.sampler.latest() {
        assert_eq!(v.lease_uid.as_deref(), Some(uid.as_str()), "{who}: {v:?}");
        assert_eq!(v.is_leader, who == first, "{who}: {v:?}");
    }

    // kill -9: its lease runs out on etcd (TTL after its last keep-alive, up to one expiry tick
    // later), and the next in line leads.
    sleep(P * 4).await;
    b.forget(&first).kill9();
    let killed = Instant::now();
    let (second, e2) = b
        .leader(D + EXPIRY_TICK + Duration::from_secs(2), &[])
        .await;
    let took = b
        .sampler
        .first_leading(&second, killed)
        .expect("sampled")
        .recv
        - killed;
    eprintln!("kill -9 failover: {took:?} (epochs {e1} -> {e2})");
    assert!(
        took <= D + EXPIRY_TICK + P + Duration::from_millis(500),
        "failover took {took:?}"
    );
    assert!(
        took >= D - P * 2,
        "took over after {took:?}, before the dead leader's lease could expire"
    );
    assert!(e2 > e1, "epoch {e1} -> {e2}");
    assert_eq!(b.line().await.0[0].create_revision, e2);

    // SIGTERM: it revokes its lease, so its key goes at once and the last one leads.
    let termed = Instant::now();
    b.get(&second).signal(libc::SIGTERM);
    let (third, e3) = b.leader(Duration::from_secs(1), &[&second]).await;
    let took = b
        .sampler
        .first_leading(&third, termed)
        .expect("sampled")
        .recv
        - termed;
    eprintln!("SIGTERM handover: {took:?} (epochs {e2} -> {e3})");
    assert!(took < Duration::from_secs(1), "handover took {took:?}");
    assert!(e3 > e2, "epoch {e2} -> {e3}");
    let status = b.get(&second).wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    b.forget(&second);
    let (line, _) = b.line().await;
    assert_eq!(
        line.len(),
        1,
        "only the last candidate's key is left: {line:#?}"
    );
    assert_eq!(
        (line[0].value.as_str(), line[0].create_revision),
        (third.as_str(), e3)
    );
    b.assert_alive();
    b.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_cut_off_from_etcd_stops_claiming_before_another_leads() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut b = Bed::start(1).await;
    let proxy = HoldProxy::in_front_of(&b.etcd.endpoint(0))
        .await
        .expect("proxy starts");
    // c1 reaches etcd only through the proxy, and leads; c2 reaches it directly.
    b.spawn_at("c1", &proxy.url()).await;
    let (_, e1) = b.leader(D * 3, &[]).await;
    b.spawn("c2").await;
    b.all_see(D, "c1", e1).await;
    sleep(P * 4).await;

    let cut = Instant::now();
    proxy.hold();
    let stopped = b
        .sampler
        .wait_for(R + Duration::from_secs(1), |m| {
            m.get("c1").filter(|v| !v.is_leader).map(|_| ())
        })
        .await;
    if stopped.is_none() {
        b.fail("the cut-off leader still claims");
    }
    // Its claim ends R after the send of its last successful keep-alive, sent before the cut.
    let last = b.last_leading("c1").expect("c1 led").sent;
    eprintln!("cut-off leader claimed {:?} after the cut", last - cut);
    assert!(
        last <= cut + R + Duration::from_millis(50),
        "claimed {:?} after the cut",
        last - cut
    );
    // Its lease expires on etcd about a TTL after the last keep-alive etcd got: c2 leads.
    let (next, e2) = b
        .leader(D + EXPIRY_TICK + Duration::from_secs(2), &["c1"])
        .await;
    assert_eq!(next, "c2");
    assert!(e2 > e1, "epoch {e1} -> {e2}");
    let from = b.sampler.first_leading("c2", cut).expect("sampled");
    eprintln!("c2 led {:?} after the cut", from.recv - cut);
    assert!(
        last < from.sent,
        "c1 claimed {:?} after c2 began",
        last - from.sent
    );

    // Healed: c1 learns it lost (its lease is gone) and joins the line behind c2.
    proxy.release();
    let healed = Instant::now();
    let rejoined = b
        .sampler
        .wait_for(Duration::from_secs(10), |m| {
            m.get("c1")
                .filter(|v| !v.is_leader && v.leader.as_deref() == Some("c2"))
                .map(|_| ())
        })
        .await;
    if rejoined.is_none() {
        b.fail("c1 did not see c2 lead after the heal");
    }
    let line = b
        .wait_line(Duration::from_secs(5), |l| {
            l.iter().map(|k| k.value.as_str()).eq(["c2", "c1"])
        })
        .await;
    assert!(line[1].create_revision > e2, "{line:#?}");
    eprintln!("c1 rejoined {:?} after the heal", healed.elapsed());
    sleep(P * 4).await;
    assert_eq!(b.leader(P, &[]).await, ("c2".to_owned(), e2));
    assert!(b.last_leading("c1").expect("c1 led").sent <= last);

    b.assert_alive();
    b.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_whose_lease_expired_while_cut_off_joins_the_line_again() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut b = Bed::start(1).await;
    let proxy = HoldProxy::in_front_of(&b.etcd.endpoint(0))
        .await
        .expect("proxy starts");
    // c1 reaches etcd directly and leads; c2 only through the proxy, and follows.
    b.spawn("c1").await;
    let (_, e1) = b.leader(D * 3, &[]).await;
    b.spawn_at("c2", &proxy.url()).await;
    b.all_see(D, "c1", e1).await;
    b.wait_line(Duration::from_secs(2), |l| {
        l.iter().map(|k| k.value.as_str()).eq(["c1", "c2"])
    })
    .await;

    // Cut off until etcd expires its lease (its key goes); c1 leads on undisturbed.
    proxy.hold();
    b.wait_line(D + EXPIRY_TICK + Duration::from_secs(2), |l| {
        l.iter().map(|k| k.value.as_str()).eq(["c1"])
    })
    .await;
    assert_eq!(b.leader(P, &[]).await, ("c1".to_owned(), e1));
    // Healed, it finds its lease gone and joins the line again with a new one.
    proxy.release();
    let healed = Instant::now();
    let line = b
        .wait_line(Duration::from_secs(5), |l| {
            l.iter().map(|k| k.value.as_str()).eq(["c1", "c2"])
        })
        .await;
    eprintln!("c2 back in line {:?} after the heal", healed.elapsed());
    assert!(line[1].create_revision > e1, "{line:#?}");
    b.all_see(D, "c1", e1).await;
    // And it is live in line: c1's release hands over to it at once.
    let termed = Instant::now();
    b.get("c1").signal(libc::SIGTERM);
    let (next, e2) = b.leader(Duration::from_secs(1), &["c1"]).await;
    eprintln!("SIGTERM handover to c2: {:?}", termed.elapsed());
    assert_eq!(next, "c2");
    assert!(e2 > e1, "epoch {e1} -> {e2}");
    let status = b.get("c1").wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0), "{status:?}");
    b.forget("c1");
    b.assert_alive();
    b.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_leads_while_the_cluster_has_no_quorum_and_a_new_tenure_follows() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut b = Bed::start(3).await;
    for id in ["c1", "c2", "c3"] {
        b.spawn(id).await;
    }
    let (first, e1) = b.leader(D * 3, &[]).await;
    b.all_see(D, &first, e1).await;
    sleep(P * 4).await;

    // Two of three members gone: one stopped (its port refuses), then one paused (its
    // connections hang), which takes the quorum away at once. (Stopped last, a member would
    // first try to hand its raft leadership over, and serve meanwhile, for seconds.)
    b.etcd.stop(1).await;
    let cut = Instant::now();
    b.etcd.pause(2);
    // A raft leader keeps answering keep-alives until it notices (CheckQuorum: within two
    // election timeouts); the claim ends R after the last one answered.
    let within = R + ELECTION_TIMEOUT * 2 + Duration::from_millis(500);
    let stopped = b
        .sampler
        .wait_for(within, |m| {
            m.get(&first).filter(|v| !v.is_leader).map(|_| ())
        })
        .await;
    if stopped.is_none() {
        b.fail(&format!(
            "{first} still claims {within:?} after the quorum was lost"
        ));
    }
    let last = b.last_leading(&first).expect("led").sent;
    eprintln!("without a quorum, {first} claimed {:?} more", last - cut);
    assert!(
        last <= cut + within,
        "claimed {:?} after the cut",
        last - cut
    );
    // Nobody leads while the quorum is gone.
    let quiet = Instant::now();
    let someone = b
        .sampler
        .wait_for(D * 2, |m| {
            m.iter()
                .find(|(_, v)| v.is_leader)
                .map(|(n, v)| (n.clone(), v.clone()))
        })
        .await;
    if let Some((who, v)) = someone {
        b.fail(&format!(
            "{who} leads without a quorum, {:?} after the claim ended: {v:?}",
            quiet - cut
        ));
    }

    // Quorum back: a new tenure (never the old one resumed), above the old epoch.
    let back = Instant::now();
    b.etcd.resume(2);
    if let Err(e) = b.etcd.restart(1).await {
        b.fail(&format!("etcd member 2 did not come back: {e}"));
    }
    if let Err(e) = b.etcd.wait_healthy(2, Duration::from_secs(20)).await {
        b.fail(&format!("etcd member 3 did not come back: {e}"));
    }
    let found = b
        .sampler
        .wait_for(D * 3 + Duration::from_secs(2), |m| {
            m.iter()
                .find(|(_, v)| v.is_leader)
                .map(|(n, v)| (n.clone(), v.epoch.unwrap_or(-1)))
        })
        .await;
    let Some((next, e2)) = found else {
        b.fail("nobody leads after the quorum came back");
    };
    eprintln!(
        "{next} leads under epoch {e2} (was {first} under {e1}) {:?} after the members came back",
        back.elapsed()
    );
    assert!(e2 > e1, "epoch {e1} -> {e2}: a tenure was resumed");
    b.all_see(D, &next, e2).await;
    b.assert_alive();
    b.assert_safe();
}

/// `etcdctl elect` as a child: its stdout lines (the key and the proposal, once elected).
struct Elect {
    child: tokio::process::Child,
    lines: watch::Receiver<Vec<String>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

impl Elect {
    fn start(etcd: &EtcdCluster, proposal: &str) -> Elect {
        let mut cmd = etcd.etcdctl_command();
        cmd.args(["elect", &election(), proposal])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("etcdctl elect runs");
        let (tx, lines) = watch::channel(Vec::new());
        let mut out = BufReader::new(child.stdout.take().expect("piped")).lines();
        tokio::spawn(async move {
            while let Ok(Some(l)) = out.next_line().await {
                tx.send_modify(|v| v.push(l));
            }
        });
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let sink = stderr.clone();
        let mut err = BufReader::new(child.stderr.take().expect("piped")).lines();
        tokio::spawn(async move {
            while let Ok(Some(l)) = err.next_line().await {
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(l);
            }
        });
        Elect {
            child,
            lines,
            stderr,
        }
    }

    /// Wait until it printed it was elected: its key and its proposal.
    async fn elected(&self, within: Duration) -> Option<Vec<String>> {
        let mut rx = self.lines.clone();
        let lines = timeout(within, rx.wait_for(|v| v.len() >= 2)).await.ok()?;
        lines.ok().map(|v| v.clone())
    }

    fn printed(&self) -> Vec<String> {
        self.lines.borrow().clone()
    }

    /// SIGINT (it resigns: deletes its key; its session's lease stays) and wait for the exit.
    async fn interrupt(&mut self) -> io::Result<()> {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child, not yet reaped (we reap it just below).
            unsafe {
                libc::kill(pid as i32, libc::SIGINT);
            }
        }
        match timeout(Duration::from_secs(5), self.child.wait()).await {
            Ok(st) => st.map(|_| ()),
            Err(_) => Err(io::Error::other(format!(
                "etcdctl elect did not exit on SIGINT; stderr: {:?}",
                self.stderr.lock().unwrap_or_else(|e| e.into_inner())
            ))),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etcdctl_elect_and_leaderd_share_one_election() {
    let _turn = ONE_AT_A_TIME.lock().await;
    let mut b = Bed::start(1).await;
    // etcd's own elector comes first and leads.
    let mut x = Elect::start(&b.etcd, "proposal-x");
    let Some(printed) = x.elected(Duration::from_secs(10)).await else {
        b.fail(&format!(
            "etcdctl elect was not elected alone: stdout {:?}, stderr {:?}",
            x.printed(),
            x.stderr.lock().unwrap()
        ));
    };
    assert!(
        printed[0].starts_with(&format!("{}/", election())),
        "{printed:?}"
    );
    assert_eq!(printed[1], "proposal-x");
    let (line, _) = b.line().await;
    assert_eq!(line.len(), 1, "{line:#?}");
    assert_eq!(
        (line[0].key.as_str(), line[0].value.as_str()),
        (printed[0].as_str(), "proposal-x")
    );
    let ex = line[0].create_revision;
    let x_lease = line[0].lease;

    // leaderd candidates queue behind it and all name it, none leads.
    for id in ["c1", "c2", "c3"] {
        b.spawn(id).await;
    }
    b.all_see(D * 2, "proposal-x", ex).await;
    sleep(P * 4).await;
    assert!(
        b.sampler.samples().iter().all(|s| !s.view.is_leader),
        "a leaderd led while etcdctl elect did"
    );
    let (line, _) = b.line().await;
    assert_eq!(line.len(), 4, "{line:#?}");
    assert_eq!(line[0].value, "proposal-x");

    // It resigns (its key goes) but its session's lease lives on (etcdctl elect does not
    // revoke it): leaderd waits that lease out (rule E3), so nobody leads meanwhile.
    x.interrupt()
        .await
        .unwrap_or_else(|e| b.fail(&e.to_string()));
    let (line, _) = b.line().await;
    assert!(
        line.iter().all(|k| k.value != "proposal-x"),
        "etcdctl elect did not resign: {line:#?}"
    );
    let early = b
        .sampler
        .wait_for(Duration::from_secs(1), |m| {
            m.iter().find(|(_, v)| v.is_leader).map(|(n, _)| n.clone())
        })
        .await;
    if let Some(who) = early {
        b.fail(&format!(
            "{who} led while the resigned peer's lease {x_lease:x} was still alive"
        ));
    }
    // The lease revoked (as a peer that closes its session does): a leaderd leads at once.
    let revoked = Instant::now();
    let out = b
        .etcd
        .etcdctl(&["lease", "revoke", &format!("{x_lease:x}")])
        .await
        .expect("etcdctl runs");
    assert!(out.status.success(), "{}", text(&out));
    let (first, e1) = b.leader(Duration::from_secs(2), &[]).await;
    eprintln!(
        "{first} leads under epoch {e1} {:?} after the peer's lease was revoked",
        revoked.elapsed()
    );
    assert!(e1 > ex, "epoch {ex} -> {e1}");
    b.all_see(D, &first, e1).await;

    // The other way round: another etcdctl elect queues behind the leaderds and is not
    // elected while any of them is in line...
    let mut y = Elect::start(&b.etcd, "proposal-y");
    let line = b
        .wait_line(Duration::from_secs(5), |l| {
            l.iter().any(|k| k.value == "proposal-y")
        })
        .await;
    assert_eq!(line[0].value, first, "{line:#?}");
    if let Some(p) = y.elected(Duration::from_secs(1)).await {
        b.fail(&format!(
            "etcdctl elect was elected while {first} led: {p:?}"
        ));
    }
    assert_eq!(b.leader(P, &[]).await, (first.clone(), e1));
    // ...and is, at once, once every leaderd has stopped (each revokes its lease).
    let stopping = Instant::now();
    for c in &b.cands {
        c.signal(libc::SIGTERM);
    }
    for id in ["c1", "c2", "c3"] {
        let st = b.get(id).wait_exit(Duration::from_secs(5)).await;
        assert_eq!(st.and_then(|s| s.code()), Some(0), "{id}: {st:?}");
    }
    let Some(p) = y.elected(Duration::from_secs(2)).await else {
        b.fail(&format!(
            "etcdctl elect not elected after every leaderd stopped: {:?}",
            y.printed()
        ));
    };
    eprintln!(
        "etcdctl elect elected {:?} after the SIGTERMs",
        stopping.elapsed()
    );
    assert_eq!(p[1], "proposal-y");
    let (line, _) = b.line().await;
    let values: Vec<&str> = line.iter().map(|k| k.value.as_str()).collect();
    assert_eq!(values, ["proposal-y"], "{line:#?}");
    y.interrupt()
        .await
        .unwrap_or_else(|e| b.fail(&e.to_string()));
    b.assert_safe();
}

/// Run leaderd with `args` and a clean environment; its output, or a failure if it runs on.
fn leaderd(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_leaderd"))
        .args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("runs");
    let end = std::time::Instant::now() + Duration::from_secs(10);
    while child.try_wait().expect("waits").is_none() {
        if std::time::Instant::now() > end {
            let _ = child.kill();
            let out = child.wait_with_output().expect("reaped");
            panic!(
                "leaderd {args:?} ran on instead of refusing: {}",
                text(&out)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("reaped")
}

#[test]
fn flags_the_etcd_backend_does_not_take_exit_64_naming_the_flag() {
    let base = [
        "--backend",
        "etcd",
        "--etcd-endpoints",
        "http://127.0.0.1:9",
        "--lease-name",
        "payouts",
        "--identity",
        "c1",
    ];
    // (flags after the base, the flag the message must name)
    let cases: &[(&[&str], &str)] = &[
        (&["--label-pod", "--pod-name", "p"], "--label-pod"),
        (&["--priority", "5"], "--priority"),
        (&["--namespace", "billing"], "--namespace"),
        (&["--emit-events=true"], "--emit-events"),
    ];
    for (more, name) in cases {
        let args: Vec<&str> = base.iter().chain(more.iter()).copied().collect();
        let out = leaderd(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {err}");
        assert_eq!(
            err.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {err}"
        );
        assert!(err.contains(name), "{args:?}: {err:?} does not name {name}");
    }
    // No endpoints at all.
    let out = leaderd(&["--backend", "etcd", "--lease-name", "payouts"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains("--etcd-endpoints"), "{err:?}");
}

/// The app's side is the same as with a Lease: leadership follows `--app-check`, `POST
/// /leader/release` steps down and the next in line leads at once, the hooks run, the long
/// poll answers on a change, and the metrics name the backend.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_health_release_hooks_long_poll_and_metrics_work_as_with_a_lease() {
    let _turn = ONE_AT_A_TIME.lock().await;
    use leaderd_testkit::standin::{Health, StandInApp};
    let mut bed = Bed::start(1).await;
    let hooks = tempfile::tempdir().unwrap();
    let mut apps = Vec::new();
    for id in ["c1", "c2"] {
        let app = StandInApp::start(Health::Healthy).await.unwrap();
        let mut spec = EtcdCandidateSpec::new(
            env!("CARGO_BIN_EXE_leaderd"),
            &bed.etcd.endpoints(),
            NAME,
            id,
            (D, R, P),
        );
        spec.prefix = Some(PREFIX.into());
        let started = hooks.path().join(format!("{id}-started"));
        spec.extra_args = [
            "--app-check",
            &app.url(),
            "--app-check-interval",
            "200ms",
            "--app-check-timeout",
            "100ms",
            "--app-check-failures",
            "2",
            "--on-started-leading",
            &format!("/usr/bin/touch {}", started.display()),
        ]
        .map(str::to_owned)
        .to_vec();
        let c = Candidate::spawn_etcd(&spec).await.expect("starts");
        bed.sampler.add(&c);
        bed.cands.push(c);
        apps.push(app);
    }
    let app_of = |id: &str| usize::from(id == "c2");
    let (first, e1) = bed.leader(D * 2, &[]).await;
    bed.all_see(D, &first, e1).await;
    // The hook ran for the leader only.
    let ran = |id: &str| hooks.path().join(format!("{id}-started")).exists();
    let end = Instant::now() + Duration::from_secs(3);
    while !ran(&first) && Instant::now() < end {
        sleep(Duration::from_millis(50)).await;
    }
    assert!(ran(&first), "--on-started-leading did not run for {first}");
    let other = if first == "c1" { "c2" } else { "c1" };
    assert!(
        !ran(other),
        "--on-started-leading ran for the follower {other}"
    );
    // The metrics name the backend and the leader.
    let client = leaderd_testkit::harness::http_client();
    let metrics = leaderd_testkit::harness::get(&client, bed.get(&first).metrics_addr, "/metrics")
        .await
        .expect("metrics answer");
    let metrics = String::from_utf8_lossy(&metrics);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leaderd_backend_info{backend=\"etcd\"") && l.ends_with(" 1")),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("leaderd_is_leader{") && l.ends_with(" 1")),
        "{metrics}"
    );
    // etcd calls are counted like Lease API requests, by verb and result.
    assert!(
        metrics.lines().any(
            |l| l.starts_with("leaderd_lease_requests_total{code=\"ok\"")
                && l.contains("verb=\"grant\"")
        ),
        "{metrics}"
    );

    // The leader's app fails: it steps down (and revokes), the other leads at once.
    let follower_addr = bed.get(other).addr;
    let poll =
        tokio::spawn(
            async move { request(follower_addr, "GET", "/leader?wait=20s&epoch=0").await },
        );
    apps[app_of(&first)].set(Health::Failing);
    let (second, e2) = bed.leader(D * 2, &[&first]).await;
    assert_eq!(second, other);
    assert!(e2 > e1, "epoch {e2} after {e1}");
    // The follower's long poll answered on the change.
    let (code, body) = timeout(Duration::from_secs(5), poll)
        .await
        .expect("the long poll answered")
        .expect("joined");
    assert_eq!(code, 200, "{body}");

    // POST /leader/release on the new leader: it steps down; the first leads again once its app
    // is healthy and its keep-out after the step-down has passed (one lease duration).
    apps[app_of(&first)].set(Health::Healthy);
    let (code, body) = request(bed.get(&second).addr, "POST", "/leader/release").await;
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["released"], true, "{answer}");
    assert_eq!(answer["epoch"], e2, "{answer}");
    let (third, e3) = bed.leader(D * 3, &[&second]).await;
    assert_eq!(third, first);
    assert!(e3 > e2, "epoch {e3} after {e2}");
    // A follower's release is refused, as with a Lease.
    let (code, _) = request(bed.get(&second).addr, "POST", "/leader/release").await;
    assert_eq!(code, 409);
    bed.assert_alive();
    bed.assert_safe();
}

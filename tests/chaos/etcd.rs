//! The chaos runner's etcd mode (`--backend etcd`): a real 3-member etcd cluster on 127.0.0.1
//! (the testkit's [`EtcdCluster`]: `etcd` 3.4 from PATH, or `LEADERD_ETCD`) and N leaderd
//! candidates with `--backend etcd` on all three members, with faults injected at random for a
//! given duration and seed, checked by the same checker as the Lease mode (`check.rs`, with
//! [`EtcdInput`]).
//!
//! ```sh
//! cargo test --test chaos -- --backend etcd --duration 60s --seed 1
//! cargo test --release --test chaos -- --backend etcd --seed 42 --duration 10m
//! ```
//!
//! Faults (`--faults`, comma-separated; default all): `kill` and `term` (kill -9 / SIGTERM of a
//! candidate, restarted 0.5–5 s later; c1 is never killed), `pause` (SIGSTOP of a candidate,
//! half the time the leader, for 0.3–6 s, then SIGCONT), `member-kill` (kill -9 of one etcd
//! member, half the time etcd's raft leader, restarted from its data directory 1–6 s later),
//! `member-pause` (SIGSTOP of one member, half the time the raft leader, for 0.5–6 s), `quorum`
//! (two of the three members killed or stopped for 2–6 s: no quorum). Member faults start only
//! while every member answers `/health`. Clocks are real (no libfaketime in this mode).
//!
//! Chaos phases (8–25 s) alternate with calm phases: every candidate and member is resumed,
//! dead members are restarted and every member must answer `/health` within 30 s (else the run
//! stops with an error); then dead candidates are restarted, and a leader must appear within
//! 2·D + 3 s = 9 s of that moment. Why that much: a candidate killed while first in line keeps
//! its place until its lease expires, D after its last keep-alive; after an etcd leader change
//! etcd restarts every lease's countdown, extended by an election timeout (1 s), so such a key
//! can live up to D + 1 s after the new raft leader took over, which itself takes up to ~2 s
//! after the quorum is back (election timeout and randomisation); etcd checks expiries every
//! 500 ms; and the next in line needs a read and a `LeaseTimeToLive` per key ahead of it
//! (milliseconds). D + 1 s + 0.5 s + D-since-the-last-renewal is below 2·D + 3 s with the
//! quorum back at the window's start; the slack covers candidates that are backing off.
//!
//! Safety (see `check.rs`): tenures sampled from `/leader` never overlap; every tenure's epoch
//! is the create revision of a key of its own candidate (etcd's history of the election's keys,
//! read at the end by a watch from revision 1; the cluster never compacts); no two candidates
//! lead under one epoch; epochs rise; a candidate stopped while leading and resumed more than R
//! later never answers `is_leader` under its old epoch. The JSON summary goes to
//! `<target>/bench/chaos-etcd.json`, the candidates' and members' logs to
//! `<target>/bench/chaos-etcd-logs`.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use etcd_client::{EventType, WatchOptions};
use fastrand::Rng;
use leaderd_testkit::harness::{get, http_client, EtcdCandidateSpec, EtcdCluster};
use serde_json::json;

use super::check::{self, Calm, EtcdInput, EtcdKey, Input};
use super::procs::{self, lock, Ask, Proc, Record, Watch};
use super::{target_dir, Args, Drift, Summary, Verdict, D, LEASE, P, R};

const KINDS: [&str; 6] = [
    "kill",
    "term",
    "pause",
    "member-kill",
    "member-pause",
    "quorum",
];
const WEIGHTS: [f64; 6] = [1.0, 1.0, 1.2, 0.8, 0.8, 0.4];
/// etcd members in the cluster.
const MEMBERS: usize = 3;

/// A leader must appear within this much of a calm window's start (see the module's doc).
fn liveness_bound() -> Duration {
    2 * D + Duration::from_secs(3)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Up,
    Killed,
    Paused,
}

#[derive(Clone, Debug)]
enum Undo {
    /// Restart the slot's candidate.
    Restart(usize),
    /// Kill -9 the process if it has not exited 10 s after SIGTERM.
    TermDeadline(usize),
    /// SIGCONT the process.
    Resume(usize),
    /// Restart or resume these members.
    MembersBack(Vec<usize>),
}

struct Runner {
    etcd: EtcdCluster,
    members: Vec<Member>,
    bin: PathBuf,
    endpoints: String,
    logs: PathBuf,
    sample_period: Duration,
    mean_interval: Duration,
    t0: Instant,
    rng: Rng,
    slots: Vec<Vec<usize>>,
    procs: Vec<Proc>,
    counts: BTreeMap<String, u64>,
    undo: Vec<(Instant, Undo)>,
    term_timeouts: Vec<String>,
    quiet: bool,
    /// Calm windows whose members took longest to be healthy (s).
    slowest_health: f64,
}

impl Runner {
    fn name(slot: usize) -> String {
        format!("c{}", slot + 1)
    }

    fn count(&mut self, what: impl Into<String>) {
        *self.counts.entry(what.into()).or_default() += 1;
    }

    fn note(&self, what: &str) {
        if !self.quiet {
            println!("  +{:7.3}s {what}", self.t0.elapsed().as_secs_f64());
        }
    }

    fn current(&self, slot: usize) -> Option<&Proc> {
        self.slots[slot].last().map(|&i| &self.procs[i])
    }

    fn alive(&self, slot: usize) -> bool {
        self.current(slot).is_some_and(Proc::alive)
    }

    /// Alive, not asked to end and not stopped: may be picked for a fault.
    fn targetable(&self, slot: usize) -> bool {
        self.current(slot)
            .is_some_and(|p| p.alive() && !p.asked && !lock(&p.record).paused())
    }

    /// The slot whose process leads by its latest answer (and is not stopped).
    fn leader_slot(&self) -> Option<usize> {
        (0..self.slots.len()).find(|&s| {
            self.current(s).is_some_and(|p| {
                let g = lock(&p.record);
                p.alive() && g.leading_now() && !g.paused()
            })
        })
    }

    async fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        let name = Self::name(slot);
        let gen = self.slots[slot].len() + 1;
        let label = format!("{name}#{gen}");
        let spec = EtcdCandidateSpec::new(&self.bin, &self.endpoints, LEASE, &name, (D, R, P));
        let watch = Watch {
            t0: self.t0,
            sample_period: self.sample_period,
            log_path: self.logs.join(format!("{name}-{gen}.log")),
        };
        let p = procs::spawn_etcd(label.clone(), spec, watch).await?;
        self.note(&format!("start {label}"));
        self.slots[slot].push(self.procs.len());
        self.procs.push(p);
        Ok(())
    }

    fn choose_target(&mut self, allow_witness: bool) -> Option<usize> {
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&s| self.targetable(s) && (allow_witness || s != 0))
            .collect();
        if live.is_empty() {
            return None;
        }
        if self.rng.bool() {
            if let Some(l) = self.leader_slot().filter(|l| live.contains(l)) {
                return Some(l);
            }
        }
        Some(live[self.rng.usize(..live.len())])
    }

    /// etcd's raft leader, by each running member's `etcd_server_is_leader` metric.
    async fn etcd_leader(&self) -> Option<usize> {
        let client = http_client();
        for i in 0..MEMBERS {
            if self.members[i] != Member::Up {
                continue;
            }
            let got = tokio::time::timeout(
                Duration::from_millis(500),
                get(&client, self.etcd.client_addr(i), "/metrics"),
            )
            .await;
            if let Ok(Ok(body)) = got {
                let text = String::from_utf8_lossy(&body);
                if text.lines().any(|l| l.trim() == "etcd_server_is_leader 1") {
                    return Some(i);
                }
            }
        }
        None
    }

    /// Whether every member runs and answers `/health`.
    async fn all_members_healthy(&self) -> bool {
        for i in 0..MEMBERS {
            if self.members[i] != Member::Up || !self.etcd.healthy(i).await {
                return false;
            }
        }
        true
    }

    /// A member for a fault: half the time etcd's raft leader (if known), else any.
    async fn choose_member(&mut self) -> (usize, bool) {
        let leader = self.etcd_leader().await;
        match leader {
            Some(l) if self.rng.bool() => (l, true),
            _ => {
                let i = self.rng.usize(..MEMBERS);
                (i, leader == Some(i))
            }
        }
    }

    fn member_name(i: usize) -> String {
        format!("m{}", i + 1)
    }

    fn member_down(&mut self, i: usize, kill: bool) {
        if kill {
            self.etcd.kill9(i);
            self.members[i] = Member::Killed;
        } else {
            self.etcd.pause(i);
            self.members[i] = Member::Paused;
        }
    }

    async fn inject(&mut self, kind: &str) -> anyhow::Result<()> {
        let now = Instant::now();
        match kind {
            "kill" | "term" => {
                let Some(slot) = self.choose_target(false) else {
                    return Ok(());
                };
                let idx = *self.slots[slot].last().expect("alive");
                let leading = lock(&self.procs[idx].record).leading_now();
                let label = lock(&self.procs[idx].record).label.clone();
                let role = if leading { "leader" } else { "follower" };
                if kind == "kill" {
                    self.procs[idx].ask(Ask::Kill9);
                    self.count(format!("kill -9 candidate ({role})"));
                    self.note(&format!("kill -9 {label} ({role})"));
                } else {
                    self.procs[idx].ask(Ask::Term);
                    self.count(format!("SIGTERM candidate ({role})"));
                    self.note(&format!("SIGTERM {label} ({role})"));
                    self.undo
                        .push((now + Duration::from_secs(10), Undo::TermDeadline(idx)));
                }
                let after = Duration::from_millis(self.rng.u64(500..5000));
                self.undo.push((now + after, Undo::Restart(slot)));
            }
            "pause" => {
                let Some(slot) = self.choose_target(true) else {
                    return Ok(());
                };
                let idx = *self.slots[slot].last().expect("alive");
                let leading = lock(&self.procs[idx].record).leading_now();
                let label = lock(&self.procs[idx].record).label.clone();
                let role = if leading { "leader" } else { "follower" };
                let d = Duration::from_millis(self.rng.u64(300..6000));
                self.procs[idx].pause();
                self.count(format!("SIGSTOP candidate ({role})"));
                self.note(&format!("SIGSTOP {label} ({role}) for {d:?}"));
                self.undo.push((now + d, Undo::Resume(idx)));
            }
            "member-kill" | "member-pause" => {
                if !self.all_members_healthy().await {
                    return Ok(());
                }
                let (i, is_leader) = self.choose_member().await;
                let kill = kind == "member-kill";
                let role = if is_leader {
                    "raft leader"
                } else {
                    "raft follower"
                };
                let d = Duration::from_millis(if kill {
                    self.rng.u64(1000..6000)
                } else {
                    self.rng.u64(500..6000)
                });
                self.member_down(i, kill);
                let what = if kill { "kill -9" } else { "SIGSTOP" };
                self.count(format!("{what} etcd member ({role})"));
                self.note(&format!(
                    "{what} etcd {} ({role}) for {d:?}",
                    Self::member_name(i)
                ));
                self.undo
                    .push((Instant::now() + d, Undo::MembersBack(vec![i])));
            }
            "quorum" => {
                if !self.all_members_healthy().await {
                    return Ok(());
                }
                let (a, _) = self.choose_member().await;
                let b = (a + 1 + self.rng.usize(..MEMBERS - 1)) % MEMBERS;
                let kill = self.rng.bool();
                let d = Duration::from_millis(self.rng.u64(2000..6000));
                self.member_down(a, kill);
                self.member_down(b, kill);
                let what = if kill { "kill -9" } else { "SIGSTOP" };
                self.count(format!("quorum loss ({what} 2 of 3 members)"));
                self.note(&format!(
                    "quorum loss: {what} etcd {} and {} for {d:?}",
                    Self::member_name(a),
                    Self::member_name(b)
                ));
                self.undo
                    .push((Instant::now() + d, Undo::MembersBack(vec![a, b])));
            }
            _ => unreachable!("unknown kind {kind}"),
        }
        Ok(())
    }

    fn members_back(&mut self, which: &[usize]) -> anyhow::Result<()> {
        for &i in which {
            match self.members[i] {
                Member::Up => {}
                Member::Killed => {
                    self.etcd.restart_nowait(i)?;
                    self.note(&format!("restart etcd {}", Self::member_name(i)));
                }
                Member::Paused => {
                    self.etcd.resume(i);
                    self.note(&format!("SIGCONT etcd {}", Self::member_name(i)));
                }
            }
            self.members[i] = Member::Up;
        }
        Ok(())
    }

    async fn do_undo(&mut self, u: Undo) -> anyhow::Result<()> {
        match u {
            Undo::Restart(slot) => {
                if self.alive(slot) {
                    self.undo.push((
                        Instant::now() + Duration::from_millis(500),
                        Undo::Restart(slot),
                    ));
                } else {
                    self.restart_dead(slot).await?;
                }
            }
            Undo::TermDeadline(idx) => {
                if self.procs[idx].alive() {
                    let label = lock(&self.procs[idx].record).label.clone();
                    self.term_timeouts
                        .push(format!("{label} did not exit within 10 s of SIGTERM"));
                    self.procs[idx].ask(Ask::Kill9);
                }
            }
            Undo::Resume(idx) => {
                if self.procs[idx].alive() && lock(&self.procs[idx].record).paused() {
                    self.procs[idx].resume();
                    let label = lock(&self.procs[idx].record).label.clone();
                    self.note(&format!("SIGCONT {label}"));
                }
            }
            Undo::MembersBack(v) => self.members_back(&v)?,
        }
        Ok(())
    }

    async fn restart_dead(&mut self, slot: usize) -> anyhow::Result<()> {
        if self.alive(slot) {
            return Ok(());
        }
        if let Some(p) = self.current(slot) {
            p.stop_watchers();
        }
        self.spawn(slot).await
    }

    fn resume_all(&mut self) {
        for i in 0..self.procs.len() {
            if self.procs[i].alive() && lock(&self.procs[i].record).paused() {
                self.procs[i].resume();
            }
        }
    }

    /// Clear every fault: resume, restart; wait until every member is healthy; then a leader
    /// must appear within the liveness bound. Returns the window.
    async fn calm(&mut self, extra: Duration) -> anyhow::Result<Calm> {
        let cleared = Instant::now();
        self.resume_all();
        self.members_back(&(0..MEMBERS).collect::<Vec<_>>())?;
        for i in 0..MEMBERS {
            self.etcd
                .wait_healthy(i, Duration::from_secs(30))
                .await
                .context("calm phase: an etcd member did not come back")?;
        }
        self.slowest_health = self.slowest_health.max(cleared.elapsed().as_secs_f64());
        let start = Instant::now();
        self.note(&format!(
            "calm: faults cleared, members healthy after {:.2}s",
            cleared.elapsed().as_secs_f64()
        ));
        let pending: Vec<(Instant, Undo)> = std::mem::take(&mut self.undo);
        let bound = liveness_bound();
        for (_, u) in pending {
            if let Undo::TermDeadline(idx) = u {
                if !self.procs[idx].wait_exit(Duration::from_secs(10)).await {
                    self.do_undo(Undo::TermDeadline(idx)).await?;
                    self.procs[idx].wait_exit(Duration::from_secs(5)).await;
                }
            }
        }
        for slot in 0..self.slots.len() {
            if self.current(slot).is_some_and(|p| !p.alive()) {
                self.restart_dead(slot).await?;
            }
        }
        let deadline = start + bound + Duration::from_secs(1);
        while Instant::now() < deadline && self.leader_slot().is_none() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        match self.leader_slot() {
            Some(s) => self.note(&format!(
                "calm: {} leads after {:.2}s (bound {:.2}s)",
                Self::name(s),
                start.elapsed().as_secs_f64(),
                bound.as_secs_f64()
            )),
            None => self.note("calm: no leader yet"),
        }
        tokio::time::sleep(extra).await;
        Ok(Calm {
            start,
            bound,
            end: Instant::now(),
        })
    }
}

/// Every key ever created under `prefix`, from etcd's history (a watch from revision 1: the
/// test cluster never compacts).
async fn key_history(endpoints: &str, prefix: &str) -> anyhow::Result<Vec<EtcdKey>> {
    let eps: Vec<&str> = endpoints.split(',').collect();
    let mut client = etcd_client::Client::connect(&eps, None)
        .await
        .context("connecting to etcd for the key history")?;
    let head = client
        .get(
            prefix,
            Some(
                etcd_client::GetOptions::new()
                    .with_prefix()
                    .with_count_only(),
            ),
        )
        .await?
        .header()
        .map_or(0, |h| h.revision());
    let mut stream = client
        .watch(
            prefix,
            Some(WatchOptions::new().with_prefix().with_start_revision(1)),
        )
        .await?;
    let mut keys: Vec<EtcdKey> = Vec::new();
    let mut last = 0;
    while last < head {
        let msg = tokio::time::timeout(Duration::from_secs(5), stream.message()).await;
        let Ok(Ok(Some(resp))) = msg else {
            // Every event of the prefix came (the last ones of the cluster may be elsewhere).
            break;
        };
        if resp.canceled() {
            bail!("the history watch was cancelled: {}", resp.cancel_reason());
        }
        for ev in resp.events() {
            let Some(kv) = ev.kv() else { continue };
            last = last.max(kv.mod_revision());
            let key = String::from_utf8_lossy(kv.key()).into_owned();
            match ev.event_type() {
                EventType::Put if kv.version() == 1 => keys.push(EtcdKey {
                    key,
                    identity: String::from_utf8_lossy(kv.value()).into_owned(),
                    create_revision: kv.create_revision(),
                    deleted_revision: None,
                }),
                EventType::Put => {}
                EventType::Delete => {
                    if let Some(k) = keys
                        .iter_mut()
                        .rev()
                        .find(|k| k.key == key && k.deleted_revision.is_none())
                    {
                        k.deleted_revision = Some(kv.mod_revision());
                    }
                }
            }
        }
    }
    Ok(keys)
}

pub async fn run(a: Args) -> anyhow::Result<Verdict> {
    let duration = a.duration;
    let n = a.candidates;
    if n < 2 {
        bail!("--candidates must be at least 2");
    }
    if a.drift.is_some_and(|d| d != Drift::None) {
        bail!("--backend etcd runs with real clocks: --drift is not supported there");
    }
    if a.sample_period > Duration::from_millis(20) {
        bail!("--sample-period must be at most 20ms (the checker samples at >= 50 Hz)");
    }
    let seed = a.seed;
    if let Some(bad) = a.faults.iter().find(|f| !KINDS.contains(&f.as_str())) {
        bail!(
            "unknown fault kind {bad:?} for --backend etcd; known: {}",
            KINDS.join(",")
        );
    }
    let kinds: Vec<(&'static str, f64)> = KINDS
        .iter()
        .zip(WEIGHTS)
        .filter(|(k, _)| a.faults.is_empty() || a.faults.iter().any(|f| f == *k))
        .map(|(k, w)| (*k, w))
        .collect();
    let _ = leaderd_testkit::harness::raise_nofile(8192);
    let logs = a
        .logs
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("chaos-etcd-logs"));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let etcd = EtcdCluster::start(MEMBERS)
        .await
        .context("starting a 3-member etcd cluster")?;
    let endpoints = etcd.endpoints();
    let t0 = Instant::now();
    let mut r = Runner {
        etcd,
        members: vec![Member::Up; MEMBERS],
        bin: a
            .leaderd
            .clone()
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_leaderd").into()),
        endpoints: endpoints.clone(),
        logs: logs.clone(),
        sample_period: a.sample_period,
        mean_interval: a.mean_interval,
        t0,
        rng: Rng::with_seed(seed),
        slots: vec![Vec::new(); n],
        procs: Vec::new(),
        counts: BTreeMap::new(),
        undo: Vec::new(),
        term_timeouts: Vec::new(),
        quiet: a.quiet,
        slowest_health: 0.0,
    };
    let cmd = format!(
        "cargo test --test chaos -- --backend etcd --seed {seed} --duration {} --candidates {n}{}",
        humantime::format_duration(duration),
        if a.faults.is_empty() {
            String::new()
        } else {
            format!(" --faults {}", a.faults.join(","))
        }
    );
    println!("chaos: {cmd}");
    println!(
        "  etcd {} ({MEMBERS} members: {endpoints}), D/R/P {}/{}/{}, real clocks, sampling every {:?}, logs in {}",
        etcd_version(),
        humantime::format_duration(D),
        humantime::format_duration(R),
        humantime::format_duration(P),
        a.sample_period,
        logs.display()
    );
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let result = drive(&mut r, n, duration, &kinds).await;
    // Whatever happened: every process resumed and asked to end, the members' logs kept.
    let shutdown = shutdown(&mut r).await;
    for i in 0..MEMBERS {
        let _ = std::fs::copy(
            r.etcd.log_path(i),
            logs.join(format!("etcd-{}.log", Runner::member_name(i))),
        );
    }
    let (calms, chaos_time) = result?;
    shutdown?;
    let keys = key_history(&endpoints, &format!("{LEASE}/")).await?;
    // The members, by pid (SIGKILL and reap).
    for i in 0..MEMBERS {
        r.etcd.kill9(i);
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let records: Vec<Record> = r.procs.iter().map(|p| lock(&p.record).clone()).collect();
    let rep = check::check(&Input {
        t0,
        records: &records,
        versions: &[],
        calms: &calms,
        renew_deadline: R,
        within_bound: true,
        lagged_changes: 0,
        term_timeouts: &r.term_timeouts,
        etcd: Some(EtcdInput { keys: &keys }),
    });
    let summary = Summary {
        backend: super::Backend::Etcd,
        cmd: &cmd,
        seed,
        n,
        drift: Drift::None,
        duration: chaos_time,
        counts: &r.counts,
        records: &records,
        versions: keys.len(),
        rep: &rep,
        calms: calms.len(),
        load: (load_before, load_after),
        preflight: None,
    };
    summary.print();
    let deleted = keys.iter().filter(|k| k.deleted_revision.is_some()).count();
    println!(
        "etcd:         {} election keys created ({deleted} deleted), revisions {:?} → {:?}; members healthy again within {:.2} s of a calm phase's start (slowest)",
        keys.len(),
        keys.first().map(|k| k.create_revision),
        keys.last().map(|k| k.create_revision),
        r.slowest_health
    );
    println!(
        "              {} SIGSTOPs of a leading candidate, {} of them longer than R (no resumed tenure allowed); {} pairs of tenures not proven ordered by the sampled bounds (not violations: no commit times)",
        rep.paused_leaders.0,
        rep.paused_leaders.1,
        rep.unproven.len()
    );
    println!(
        "              liveness bound 2·D + 3 s = {:.0} s from the moment every member is healthy",
        liveness_bound().as_secs_f64()
    );
    let json_path = a
        .json
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("chaos-etcd.json"));
    if let Some(d) = json_path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut j = summary.json();
    j["backend"] = json!("etcd");
    j["lease_versions"] = serde_json::Value::Null;
    j["etcd"] = json!({
        "members": MEMBERS,
        "version": etcd_version(),
        "keys_created": keys.len(),
        "keys_deleted": deleted,
        "revisions": [keys.first().map(|k| k.create_revision), keys.last().map(|k| k.create_revision)],
        "slowest_members_healthy_s": r.slowest_health,
        "paused_leaders": rep.paused_leaders.0,
        "paused_leaders_beyond_r": rep.paused_leaders.1,
        "unproven_pairs": rep.unproven.len(),
        "unproven_examples": rep.unproven.iter().take(10).collect::<Vec<_>>(),
        "liveness_bound_s": liveness_bound().as_secs_f64(),
    });
    std::fs::write(&json_path, serde_json::to_vec_pretty(&j)?)?;
    println!("JSON summary: {}", json_path.display());
    Ok(Verdict {
        violations: rep.violations.len(),
        line: format!(
            "backend etcd, {} tenures, {} faults, seed {seed}, {} of chaos, {n} candidates, 3 etcd members",
            rep.tenures,
            r.counts.values().sum::<u64>(),
            humantime::format_duration(Duration::from_secs(chaos_time.as_secs())),
        ),
    })
}

/// `etcd --version`'s first line's version, for the summary.
fn etcd_version() -> String {
    leaderd_testkit::harness::etcd_bin()
        .ok()
        .and_then(|b| std::process::Command::new(b).arg("--version").output().ok())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().last().map(str::to_string))
        })
        .unwrap_or_else(|| "?".into())
}

/// Start the candidates, then chaos and calm phases until `duration` has passed.
async fn drive(
    r: &mut Runner,
    n: usize,
    duration: Duration,
    kinds: &[(&'static str, f64)],
) -> anyhow::Result<(Vec<Calm>, Duration)> {
    for slot in 0..n {
        r.spawn(slot).await?;
    }
    let mut calms = Vec::new();
    calms.push(r.calm(Duration::from_secs(1)).await?);
    let started = Instant::now();
    let end = started + duration;
    while Instant::now() < end {
        let len = Duration::from_millis(r.rng.u64(8000..25000));
        let until = (Instant::now() + len).min(end);
        super::chaos_phase(r, until, kinds).await?;
        let extra = Duration::from_millis(r.rng.u64(1000..4000));
        calms.push(r.calm(extra).await?);
    }
    Ok((calms, started.elapsed()))
}

/// SIGCONT everything stopped, SIGTERM every live candidate (each must exit 0 within 10 s),
/// stop the watchers.
async fn shutdown(r: &mut Runner) -> anyhow::Result<()> {
    r.resume_all();
    let all: Vec<usize> = (0..MEMBERS).collect();
    let back = r.members_back(&all);
    for slot in 0..r.slots.len() {
        if let Some(&i) = r.slots[slot].last() {
            let p = &mut r.procs[i];
            if p.alive() && !p.asked {
                p.ask(Ask::Term);
            }
        }
    }
    for i in 0..r.procs.len() {
        if r.procs[i].alive() && !r.procs[i].wait_exit(Duration::from_secs(10)).await {
            r.do_undo(Undo::TermDeadline(i)).await?;
            r.procs[i].wait_exit(Duration::from_secs(5)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for p in &r.procs {
        p.stop_watchers();
    }
    back?;
    for i in 0..MEMBERS {
        r.etcd.wait_healthy(i, Duration::from_secs(30)).await?;
    }
    Ok(())
}

impl super::Faults for Runner {
    type Undo = Undo;
    fn schedule(&mut self) -> (&mut Vec<(Instant, Undo)>, &mut Rng, Duration) {
        (&mut self.undo, &mut self.rng, self.mean_interval)
    }
    async fn inject_fault(&mut self, kind: &str) -> anyhow::Result<()> {
        self.inject(kind).await
    }
    async fn undo_fault(&mut self, u: Undo) -> anyhow::Result<()> {
        self.do_undo(u).await
    }
}

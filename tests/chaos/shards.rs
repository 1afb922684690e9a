//! The chaos runner's shard-group mode (`--shards N`): the Lease API test server (in this
//! process) and `--candidates` replicas `leaderd --lease-name chaos --shards N` (c1..c5 by
//! default) plus a joiner (c6) that joins and leaves, with faults injected at random for a given
//! duration and seed, and a checker that fails the run on any safety or liveness violation of
//! any shard.
//!
//! ```sh
//! cargo test --test chaos -- --shards 12                                    # 60 s, seed 1
//! cargo test --release --test chaos -- --shards 12 --seed 42 --duration 10m
//! ```
//!
//! Faults (`--faults`, comma-separated; default all): `kill` and `term` (kill -9 / SIGTERM of a
//! replica, half the time the coordinator; restarted with the same identity, half the time
//! quickly, 0–0.3 s after the signal or as soon as it has ended, while its member record still
//! lists its shards, else 1–8 s later; c1 is never killed, so that one process lives through the
//! whole run for the memory check), `partition` (a silent partition of one replica from the API server for 0.5–6 s),
//! `slow` (100 ms – 2 s per API call of one replica for 2–10 s), `errors` (20–90 % of the
//! requests of one replica or of all answered 500, 503 or 429 with Retry-After, for 2–8 s),
//! `join-leave` (the joiner c6 started, or stopped with SIGTERM), `release` (`POST
//! /shards/release` of a replica: it hands its shards over and rejoins a lease duration later),
//! `member-garbage` and `assignment-garbage` (a foreign writer puts garbage into the
//! `leaderd.io/member` annotation of a member Lease or the `leaderd.io/assignment` annotation of
//! the assignment Lease, the rest of the object kept: not JSON, wrong types, an unknown field,
//! epoch 0, a shard out of range, empty, inconsistent vectors; a member record of another shard
//! count that lists nothing and acknowledges nothing), `member-delete` and `assignment-delete`
//! (a foreign writer deletes a member Lease or the assignment Lease). No foreign write lists a
//! shard (the runner checks that with leaderd's own decoders before writing), so the commit-log
//! invariant stays strict. Clocks as in the Lease mode: libfaketime, offsets ±1 h, rates ×0.95,
//! ×1.00, ×1.05 (`--drift within`, the default where libfaketime is installed) or real clocks
//! (`--drift none`); `--drift beyond` is refused here.
//!
//! The checker:
//!
//! - safety, per shard, from every replica's `GET /shards` sampled every `--sample-period`
//!   (the testkit's [`ShardSampler`], one sampled tenure per process: a restart is another
//!   process): no two processes' sampled tenures of one shard overlap, and epochs rise from
//!   tenure to tenure ([`check_samples`], what `ShardSampler::check` runs); also no two processes
//!   ever own one shard under one epoch (S6);
//! - safety in the store: the test server's commit log never shows two live member records
//!   listing one shard ([`CommitChecker`]);
//! - the coordinator (the group's ordinary Lease) and the processes, by the Lease mode's checker
//!   (`check.rs`): no two coordinators, rising epochs, a coordinator in every calm window, no
//!   panic, no unexpected exit, exit 0 after SIGTERM within 10 s, no memory or fd growth;
//! - liveness: chaos phases (8–25 s) alternate with calm phases (faults cleared, dead replicas
//!   restarted, the joiner too if it had joined). From the moment the restarted replicas listen,
//!   every shard must be owned and balanced (the owned counts sum to N, every shard owned, each
//!   of the M replicas owning ⌊N/M⌋ or ⌈N/M⌉) within `2·D/k + P/k + L + 1 s` (k: the slowest
//!   clock rate; L: the longest latency injected in the phase before; 7.6 s + L within the
//!   drift bound). Why two lease durations: the slowest waits of the rules are each one lease
//!   duration (a new coordinator after the old one's last renewal; the eviction of a dead or
//!   garbled member record, S5; a restarted replica's own ghosts, S7, or its garbled record;
//!   a deleted member Lease, or a roster member without a Lease, waited out by everyone who
//!   sees it, S2; a released replica's rejoin), and one can start only after another ended (a
//!   replica that first learns of a vanished roster member from the assignment a new
//!   coordinator writes). The retry period covers the poll and back-off after the last wait, L
//!   a reply held by the server before the faults were cleared, 1 s the Retry-After of a 429 and
//!   the acknowledge-and-claim round trips. A window that takes longer is waited out up to 15 s
//!   more, so the report says how long it took.
//!
//! The seed fixes the sequence of faults and their parameters; the timing (and so what each
//! fault hits) still depends on the machine. Logs (one file per process, and `faults.txt`, the
//! run's fault sequence) go to `<target>/bench/chaos-shards-logs`, the JSON summary to
//! `<target>/bench/chaos-shards.json`.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use fastrand::Rng;
use leaderd::election::StoredLease;
use leaderd::shards::record::{
    assignment_lease_name, decode_assignment, decode_member, member_lease_name,
    ASSIGNMENT_ANNOTATION, MAX_SHARDS, MEMBER_ANNOTATION,
};
use leaderd::shards::ShardsDoc;
use leaderd_testkit::harness::shards::{
    check_samples, shard_tenures, CommitChecker, ShardSample, ShardSampler, ShardTenure,
};
use leaderd_testkit::harness::{Cluster, ClusterOptions};
use serde_json::{json, Value};

use super::check::{self, Calm, Input, Version};
use super::procs::{self, lock, Ask, Clock, Proc, Record, Watch};
use super::{target_dir, Args, Backend, Drift, Summary, Verdict, D, NS, P, R};

/// The group: its coordinator's Lease, and the prefix of its member and assignment Leases.
const GROUP: &str = "chaos";

const KINDS: [&str; 11] = [
    "kill",
    "term",
    "partition",
    "slow",
    "errors",
    "join-leave",
    "release",
    "member-garbage",
    "assignment-garbage",
    "member-delete",
    "assignment-delete",
];
const WEIGHTS: [f64; 11] = [1.0, 1.0, 1.5, 1.0, 1.0, 0.8, 0.8, 0.6, 0.5, 0.5, 0.4];

/// How long a calm window that missed its bound is still watched, to say how long it took.
const GRACE: Duration = Duration::from_secs(15);

/// Every shard owned and balanced within this much of a calm window's start (module doc).
fn shard_bound(k_min: f64, latency: Duration) -> Duration {
    (2 * D + P).div_f64(k_min) + latency + Duration::from_secs(1)
}

/// A coordinator within this much of a calm window's start: the Lease mode's bound.
fn coordinator_bound(k_min: f64, latency: Duration) -> Duration {
    D.div_f64(k_min)
        + P.mul_f64(1.2 / k_min)
        + latency
        + Duration::from_secs(1)
        + Duration::from_millis(500)
}

#[derive(Clone, Debug)]
enum Undo {
    Heal(String),
    Unslow(String),
    ErrorsOff(Option<String>),
    /// Start the slot's replica again once its process has ended (if the slot is still wanted).
    Restart(usize),
    /// Kill -9 the process if it has not exited 10 s after SIGTERM.
    TermDeadline(usize),
}

/// One calm window's recovery.
#[derive(Clone, Debug)]
struct Recovery {
    /// Its start (s since t0).
    at: f64,
    /// Replicas expected.
    replicas: usize,
    /// Every shard owned after (s).
    owned: Option<f64>,
    /// Every shard owned and balanced after (s).
    balanced: Option<f64>,
    bound: f64,
}

struct Runner {
    cluster: Cluster,
    sampler: ShardSampler,
    shards: u32,
    logs: PathBuf,
    libfaketime: Option<PathBuf>,
    drift: Drift,
    sample_period: Duration,
    mean_interval: Duration,
    t0: Instant,
    rng: Rng,
    /// The slot of the joiner (c6 with 5 replicas); the slots before it are always wanted.
    joiner: usize,
    /// Per slot: its processes so far (indices into `procs`).
    slots: Vec<Vec<usize>>,
    /// Per slot: whether it should run (the joiner only after a join).
    wanted: Vec<bool>,
    procs: Vec<Proc>,
    counts: BTreeMap<String, u64>,
    undo: Vec<(Instant, Undo)>,
    term_timeouts: Vec<String>,
    /// Longest latency injected in the current chaos phase.
    phase_latency: Duration,
    quiet: bool,
    /// Every fault and start, stamped: written to `faults.txt`.
    events: Vec<String>,
    /// `POST /shards/release` outcomes.
    releases: Arc<Mutex<BTreeMap<String, u64>>>,
    recoveries: Vec<Recovery>,
    liveness_violations: Vec<String>,
}

impl Runner {
    fn name(slot: usize) -> String {
        format!("c{}", slot + 1)
    }

    fn count(&mut self, what: impl Into<String>) {
        *self.counts.entry(what.into()).or_default() += 1;
    }

    fn note(&mut self, what: &str) {
        let line = format!("+{:7.3}s {what}", self.t0.elapsed().as_secs_f64());
        if !self.quiet {
            println!("  {line}");
        }
        self.events.push(line);
    }

    fn current(&self, slot: usize) -> Option<&Proc> {
        self.slots[slot].last().map(|&i| &self.procs[i])
    }

    fn alive(&self, slot: usize) -> bool {
        self.current(slot).is_some_and(Proc::alive)
    }

    fn label(&self, idx: usize) -> String {
        lock(&self.procs[idx].record).label.clone()
    }

    /// Alive and not asked to end: may be picked for a fault.
    fn targetable(&self, slot: usize) -> bool {
        self.current(slot).is_some_and(|p| p.alive() && !p.asked)
    }

    /// The slot whose process coordinates (leads the group's Lease) by its latest answer.
    fn coordinator_slot(&self) -> Option<usize> {
        (0..self.slots.len()).find(|&s| {
            self.current(s)
                .is_some_and(|p| p.alive() && lock(&p.record).leading_now())
        })
    }

    fn role(&self, slot: usize) -> &'static str {
        if self.coordinator_slot() == Some(slot) {
            "coordinator"
        } else {
            "member"
        }
    }

    /// Shards the slot's process owns by its latest `/shards` answer.
    fn owned(&self, slot: usize) -> usize {
        let Some(&i) = self.slots[slot].last() else {
            return 0;
        };
        let label = self.label(i);
        self.sampler
            .latest()
            .get(&label)
            .map_or(0, |d| d.shards.iter().filter(|s| s.is_owner).count())
    }

    fn pick_clock(&mut self, slot: usize) -> Clock {
        if self.drift == Drift::None {
            return Clock::REAL;
        }
        let rates = self.drift.rates();
        // The witness (c1) keeps one clock for the whole run; the others draw one per start.
        let rate = if slot == 0 {
            rates[0]
        } else {
            rates[self.rng.usize(..rates.len())]
        };
        let offset_h = [-1, 0, 1][self.rng.usize(..3)];
        Clock { rate, offset_h }
    }

    fn k_min(&self) -> f64 {
        self.drift
            .rates()
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    }

    async fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        let name = Self::name(slot);
        let gen = self.slots[slot].len() + 1;
        let label = format!("{name}#{gen}");
        let clock = self.pick_clock(slot);
        let n = self.shards.to_string();
        let spec = self.cluster.spec(&name, &["--shards", &n])?;
        let watch = Watch {
            t0: self.t0,
            sample_period: self.sample_period,
            log_path: self.logs.join(format!("{name}-{gen}.log")),
        };
        let p = procs::spawn(
            label.clone(),
            spec,
            clock.clone(),
            self.libfaketime.as_deref(),
            watch,
        )
        .await?;
        self.sampler.add(&label, p.addr);
        self.note(&format!("start {label} ({})", clock.label()));
        self.slots[slot].push(self.procs.len());
        self.procs.push(p);
        Ok(())
    }

    /// Start the slot's replica again if it is wanted and its process has ended.
    async fn restart_dead(&mut self, slot: usize) -> anyhow::Result<()> {
        if self.alive(slot) || !self.wanted[slot] {
            return Ok(());
        }
        self.forget_dead(slot);
        self.spawn(slot).await
    }

    /// Stop watching and sampling the slot's ended process.
    fn forget_dead(&mut self, slot: usize) {
        if let Some(&i) = self.slots[slot].last() {
            if !self.procs[i].alive() {
                self.procs[i].stop_watchers();
                let label = self.label(i);
                self.sampler.remove(&label);
            }
        }
    }

    fn choose_target(&mut self, allow_witness: bool) -> Option<usize> {
        let live: Vec<usize> = (0..self.slots.len())
            .filter(|&s| self.targetable(s) && (allow_witness || s != 0))
            .collect();
        if live.is_empty() {
            return None;
        }
        // Half of the time, the coordinator (if it qualifies).
        if self.rng.bool() {
            if let Some(c) = self.coordinator_slot().filter(|c| live.contains(c)) {
                return Some(c);
            }
        }
        Some(live[self.rng.usize(..live.len())])
    }

    /// The member Leases that exist now: (slot, name).
    fn member_leases(&self) -> Vec<(usize, String)> {
        (0..self.slots.len())
            .map(|s| (s, member_lease_name(GROUP, &Self::name(s))))
            .filter(|(_, name)| self.cluster.server.lease(NS, name).is_some())
            .collect()
    }

    async fn inject(&mut self, kind: &str) -> anyhow::Result<()> {
        let now = Instant::now();
        match kind {
            "kill" | "term" => {
                let Some(slot) = self.choose_target(false) else {
                    return Ok(());
                };
                let idx = *self.slots[slot].last().expect("alive");
                let label = self.label(idx);
                let role = self.role(slot);
                let owned = self.owned(slot);
                let quick = self.rng.bool();
                let after = Duration::from_millis(if quick {
                    self.rng.u64(0..300)
                } else {
                    self.rng.u64(1000..8000)
                });
                let restart = if quick { "quick" } else { "later" };
                let what = if kind == "kill" { "kill -9" } else { "SIGTERM" };
                if kind == "kill" {
                    self.procs[idx].ask(Ask::Kill9);
                } else {
                    self.procs[idx].ask(Ask::Term);
                    self.undo
                        .push((now + Duration::from_secs(10), Undo::TermDeadline(idx)));
                }
                self.count(format!("{what} ({role}), {restart} restart"));
                self.note(&format!(
                    "{what} {label} ({role}, {owned} shards), restart in {after:?} (once it has ended)"
                ));
                self.undo.push((now + after, Undo::Restart(slot)));
            }
            "partition" => {
                let Some(slot) = self.choose_target(true) else {
                    return Ok(());
                };
                let name = Self::name(slot);
                let role = self.role(slot);
                let d = Duration::from_millis(self.rng.u64(500..6000));
                self.cluster.server.partition(&name);
                self.count(format!("partition ({role})"));
                self.note(&format!("partition {name} ({role}) for {d:?}"));
                self.undo.push((now + d, Undo::Heal(name)));
            }
            "slow" => {
                let Some(slot) = self.choose_target(true) else {
                    return Ok(());
                };
                let name = Self::name(slot);
                let lat = Duration::from_millis(self.rng.u64(100..=2000));
                let d = Duration::from_millis(self.rng.u64(2000..10000));
                self.cluster.server.set_latency(&name, lat);
                self.phase_latency = self.phase_latency.max(lat);
                self.count("slow API");
                self.note(&format!("slow {name}: +{lat:?} per call for {d:?}"));
                self.undo.push((now + d, Undo::Unslow(name)));
            }
            "errors" => {
                let status = [500u16, 503, 429][self.rng.usize(..3)];
                let rate = 0.2 + self.rng.f64() * 0.7;
                let who = if self.rng.f64() < 0.3 {
                    None
                } else {
                    self.choose_target(true).map(Self::name)
                };
                let d = Duration::from_millis(self.rng.u64(2000..8000));
                self.cluster
                    .server
                    .set_error_rate(who.as_deref(), rate, status);
                self.count(format!("API errors {status}"));
                self.note(&format!(
                    "{:.0}% of {} answered {status} for {d:?}",
                    rate * 100.0,
                    who.as_deref().unwrap_or("all")
                ));
                self.undo.push((now + d, Undo::ErrorsOff(who)));
            }
            "join-leave" => {
                let j = self.joiner;
                let name = Self::name(j);
                if self.wanted[j] {
                    if !self.targetable(j) {
                        return Ok(());
                    }
                    let idx = *self.slots[j].last().expect("alive");
                    let label = self.label(idx);
                    let owned = self.owned(j);
                    self.wanted[j] = false;
                    self.procs[idx].ask(Ask::Term);
                    self.undo
                        .push((now + Duration::from_secs(10), Undo::TermDeadline(idx)));
                    self.count("leave (SIGTERM of the joiner)");
                    self.note(&format!("leave: SIGTERM {label} ({owned} shards)"));
                } else {
                    self.wanted[j] = true;
                    self.count("join (the joiner started)");
                    self.note(&format!("join: {name}"));
                    if self.alive(j) {
                        // Still leaving: start it once that process has ended.
                        self.undo.push((now, Undo::Restart(j)));
                    } else {
                        self.restart_dead(j).await?;
                    }
                }
            }
            "release" => {
                let Some(slot) = self.choose_target(true) else {
                    return Ok(());
                };
                let idx = *self.slots[slot].last().expect("alive");
                let label = self.label(idx);
                let role = self.role(slot);
                let owned = self.owned(slot);
                let addr = self.procs[idx].addr;
                let outcomes = self.releases.clone();
                tokio::spawn(async move {
                    let r = tokio::time::timeout(
                        Duration::from_secs(20),
                        post(addr, "/shards/release"),
                    )
                    .await;
                    let k = match r {
                        Ok(Ok(code)) => format!("HTTP {code}"),
                        Ok(Err(_)) => "no answer (connection)".to_string(),
                        Err(_) => "no answer within 20 s".to_string(),
                    };
                    *outcomes
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(k)
                        .or_default() += 1;
                });
                self.count(format!("POST /shards/release ({role})"));
                self.note(&format!(
                    "POST /shards/release to {label} ({role}, {owned} shards)"
                ));
            }
            "member-garbage" => {
                let leases = self.member_leases();
                if leases.is_empty() {
                    return Ok(());
                }
                let (slot, name) = leases[self.rng.usize(..leases.len())].clone();
                let Some(mut l) = self.cluster.server.lease(NS, &name) else {
                    return Ok(());
                };
                let current = l["metadata"]["annotations"][MEMBER_ANNOTATION]
                    .as_str()
                    .map(str::to_owned);
                let (what, text) = member_garbage(
                    &mut self.rng,
                    current.as_deref(),
                    &Self::name(slot),
                    self.shards,
                );
                set_annotation(&mut l, MEMBER_ANNOTATION, &text);
                ensure_lists_nothing(&l, false)?;
                self.cluster.server.put_raw(NS, &name, l);
                let state = if self.alive(slot) { "live" } else { "ended" };
                self.count(format!("foreign: member garbage ({what})"));
                self.note(&format!(
                    "foreign write: garbage ({what}) into the member record of {} ({state})",
                    Self::name(slot)
                ));
            }
            "assignment-garbage" => {
                let name = assignment_lease_name(GROUP);
                let Some(mut l) = self.cluster.server.lease(NS, &name) else {
                    return Ok(());
                };
                let current = l["metadata"]["annotations"][ASSIGNMENT_ANNOTATION]
                    .as_str()
                    .map(str::to_owned);
                let (what, text) = assignment_garbage(&mut self.rng, current.as_deref());
                set_annotation(&mut l, ASSIGNMENT_ANNOTATION, &text);
                ensure_lists_nothing(&l, true)?;
                self.cluster.server.put_raw(NS, &name, l);
                self.count(format!("foreign: assignment garbage ({what})"));
                self.note(&format!(
                    "foreign write: garbage ({what}) into the assignment"
                ));
            }
            "member-delete" => {
                let leases = self.member_leases();
                if leases.is_empty() {
                    return Ok(());
                }
                let (slot, name) = leases[self.rng.usize(..leases.len())].clone();
                if self.cluster.server.delete_lease(NS, &name) {
                    let state = if self.alive(slot) { "live" } else { "ended" };
                    self.count(format!("foreign: delete a member Lease ({state})"));
                    self.note(&format!(
                        "foreign write: delete the member Lease of {} ({state})",
                        Self::name(slot)
                    ));
                }
            }
            "assignment-delete" => {
                if self
                    .cluster
                    .server
                    .delete_lease(NS, &assignment_lease_name(GROUP))
                {
                    self.count("foreign: delete the assignment Lease");
                    self.note("foreign write: delete the assignment Lease");
                }
            }
            _ => unreachable!("unknown kind {kind}"),
        }
        Ok(())
    }

    async fn do_undo(&mut self, u: Undo) -> anyhow::Result<()> {
        match u {
            Undo::Heal(n) => {
                self.cluster.server.heal(&n);
                self.note(&format!("heal {n}"));
            }
            Undo::Unslow(n) => self.cluster.server.set_latency(&n, Duration::ZERO),
            Undo::ErrorsOff(n) => self.cluster.server.set_error_rate(n.as_deref(), 0.0, 500),
            Undo::Restart(slot) => {
                if self.alive(slot) {
                    // Still shutting down: try again shortly (a quick restart stays quick).
                    self.undo.push((
                        Instant::now() + Duration::from_millis(50),
                        Undo::Restart(slot),
                    ));
                } else {
                    self.restart_dead(slot).await?;
                }
            }
            Undo::TermDeadline(idx) => {
                if self.procs[idx].alive() {
                    let label = self.label(idx);
                    self.term_timeouts
                        .push(format!("{label} did not exit within 10 s of SIGTERM"));
                    self.procs[idx].ask(Ask::Kill9);
                }
            }
        }
        Ok(())
    }

    /// Clear every fault, restart the dead, and wait until every shard is owned and balanced.
    /// Returns the window (for the coordinator's liveness, checked by `check.rs`).
    async fn calm(&mut self, extra: Duration) -> anyhow::Result<Calm> {
        self.cluster.server.clear_faults();
        self.note("calm: faults cleared");
        let latency = std::mem::take(&mut self.phase_latency);
        let pending: Vec<(Instant, Undo)> = std::mem::take(&mut self.undo);
        for (_, u) in pending {
            if let Undo::TermDeadline(idx) = u {
                if !self.procs[idx].wait_exit(Duration::from_secs(10)).await {
                    self.do_undo(Undo::TermDeadline(idx)).await?;
                    self.procs[idx].wait_exit(Duration::from_secs(5)).await;
                }
            }
        }
        for slot in 0..self.slots.len() {
            self.forget_dead(slot);
            self.restart_dead(slot).await?;
        }
        let start = Instant::now();
        let k = self.k_min();
        let bound = shard_bound(k, latency);
        let expected: Vec<String> = (0..self.slots.len())
            .filter(|&s| self.wanted[s])
            .filter_map(|s| self.slots[s].last().copied())
            .map(|i| self.label(i))
            .collect();
        let n = self.shards as usize;
        let owned_at: Cell<Option<Instant>> = Cell::new(None);
        let waited = self
            .sampler
            .wait_for(bound + GRACE, |latest| {
                let (owned, balanced) = judge(latest, &expected, n);
                if owned && owned_at.get().is_none() {
                    owned_at.set(Some(Instant::now()));
                }
                balanced
            })
            .await;
        let took = waited.as_ref().ok().map(|_| start.elapsed());
        let owned = owned_at.get().map(|t| t.duration_since(start));
        self.recoveries.push(Recovery {
            at: start.duration_since(self.t0).as_secs_f64(),
            replicas: expected.len(),
            owned: owned.map(|d| d.as_secs_f64()),
            balanced: took.map(|d| d.as_secs_f64()),
            bound: bound.as_secs_f64(),
        });
        let at = start.duration_since(self.t0).as_secs_f64();
        match (took, &waited) {
            (Some(t), _) if t <= bound => self.note(&format!(
                "calm: every shard owned after {:.2}s, balanced over {} replicas after {:.2}s (bound {:.2}s)",
                owned.unwrap_or(t).as_secs_f64(),
                expected.len(),
                t.as_secs_f64(),
                bound.as_secs_f64()
            )),
            (Some(t), _) => {
                let v = format!(
                    "liveness: the calm window at +{at:.3}s took {:.2}s to own and balance every shard over {} replicas (every shard owned after {}), more than its bound {:.2}s",
                    t.as_secs_f64(),
                    expected.len(),
                    owned.map_or("never".into(), |o| format!("{:.2}s", o.as_secs_f64())),
                    bound.as_secs_f64()
                );
                self.note(&v);
                self.liveness_violations.push(v);
            }
            (None, e) => {
                let v = format!(
                    "liveness: the calm window at +{at:.3}s did not own and balance every shard over {} replicas within {:.2}s (bound {:.2}s; every shard owned after {}); latest owned counts {:?}",
                    expected.len(),
                    (bound + GRACE).as_secs_f64(),
                    bound.as_secs_f64(),
                    owned.map_or("never".into(), |o| format!("{:.2}s", o.as_secs_f64())),
                    e.as_ref().err()
                );
                self.note(&v);
                self.liveness_violations.push(v);
            }
        }
        tokio::time::sleep(extra).await;
        Ok(Calm {
            start,
            bound: coordinator_bound(k, latency),
            end: Instant::now(),
        })
    }
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

/// (every shard owned once, and also balanced) by the latest answers of the `expected`
/// processes, each of which must have answered.
fn judge(latest: &HashMap<String, ShardsDoc>, expected: &[String], n: usize) -> (bool, bool) {
    let mut ids = BTreeSet::new();
    let mut counts = Vec::new();
    for who in expected {
        let Some(d) = latest.get(who) else {
            return (false, false);
        };
        let mine: Vec<u32> = d
            .shards
            .iter()
            .filter(|s| s.is_owner)
            .map(|s| s.id)
            .collect();
        counts.push(mine.len());
        ids.extend(mine);
    }
    let m = expected.len();
    let all = m > 0 && counts.iter().sum::<usize>() == n && ids.len() == n;
    let (lo, hi) = (n / m.max(1), n.div_ceil(m.max(1)));
    (all, all && counts.iter().all(|c| (lo..=hi).contains(c)))
}

/// `POST` on a fresh connection; the status code.
async fn post(addr: SocketAddr, path: &str) -> std::io::Result<u16> {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    String::from_utf8_lossy(&raw)
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other("no status line"))
}

fn set_annotation(l: &mut Value, key: &str, text: &str) {
    if !l["metadata"]["annotations"].is_object() {
        l["metadata"]["annotations"] = json!({});
    }
    l["metadata"]["annotations"][key] = json!(text);
}

/// The runner's own guard: a foreign write must not list a shard, nor acknowledge, leave or
/// evict (a forged hand-over), as leaderd decodes it; an assignment must not decode at all.
fn ensure_lists_nothing(l: &Value, assignment: bool) -> anyhow::Result<()> {
    let stored = StoredLease::from_json(l.clone())
        .map_err(|e| anyhow::anyhow!("a foreign write the runner made is not a Lease: {e:?}"))?;
    if assignment {
        if let Some(a) = decode_assignment(&stored) {
            bail!("runner bug: assignment garbage that decodes: {a:?}");
        }
    } else if let Some(r) = decode_member(&stored) {
        if !r.claims.is_empty()
            || !r.ghosts.is_empty()
            || r.ack.is_some()
            || r.leaving
            || r.evicted_by.is_some()
        {
            bail!("runner bug: member garbage that lists or hands over: {r:?}");
        }
    }
    Ok(())
}

/// Garbage for a member record's annotation: what it is, and the text.
fn member_garbage(
    rng: &mut Rng,
    current: Option<&str>,
    identity: &str,
    n: u32,
) -> (&'static str, String) {
    match rng.usize(..7) {
        0 => ("not JSON", "{\"inc\": \"chaos".into()),
        1 => (
            "wrong types",
            json!({"identity": 7, "inc": ["chaos"], "n": "12", "claims": "all"}).to_string(),
        ),
        2 => {
            let mut v = current
                .and_then(|c| serde_json::from_str::<Value>(c).ok())
                .filter(Value::is_object)
                .unwrap_or_else(|| json!({"identity": identity, "inc": "chaos", "n": n}));
            v["chaos.example.com/extra"] = json!(true);
            ("the record with an unknown field", v.to_string())
        }
        3 => (
            "a claim at epoch 0",
            json!({"identity": identity, "inc": "chaos", "n": n, "claims": {"0": 0}}).to_string(),
        ),
        4 => (
            "a claim of a shard out of range",
            json!({"identity": identity, "inc": "chaos", "n": n,
                   "claims": {(n + 3).to_string(): 1}})
            .to_string(),
        ),
        5 => ("empty", String::new()),
        _ => (
            "another shard count, nothing listed",
            json!({"identity": identity, "inc": "chaos", "n": n + 1}).to_string(),
        ),
    }
}

/// Garbage for the assignment's annotation: what it is, and the text.
fn assignment_garbage(rng: &mut Rng, current: Option<&str>) -> (&'static str, String) {
    let cur = current
        .and_then(|c| serde_json::from_str::<Value>(c).ok())
        .filter(|v| v["owner"].is_array() && v["since"].is_array());
    let Some(mut a) = cur else {
        return match rng.usize(..3) {
            0 => ("not JSON", "[[[".into()),
            1 => (
                "wrong types",
                json!({"n": "12", "gen": -1, "members": {"a": 1}, "owner": "all",
                       "epoch": null, "since": 3})
                .to_string(),
            ),
            _ => ("empty", String::new()),
        };
    };
    let what = match rng.usize(..6) {
        0 => return ("not JSON", "[[[".into()),
        1 => return ("empty", String::new()),
        2 => {
            a["owner"][0] = json!(99);
            "an owner index out of range"
        }
        3 => {
            if let Some(o) = a["owner"].as_array_mut() {
                o.pop();
            }
            "an owner vector too short"
        }
        4 => {
            let gen = a["gen"].as_u64().unwrap_or(0);
            a["since"][0] = json!(gen + 5);
            "a shard given at a generation beyond the assignment's"
        }
        _ => {
            a["chaos.example.com/extra"] = json!(1);
            "the assignment with an unknown field"
        }
    };
    (what, a.to_string())
}

/// Start the replicas, then chaos and calm phases until `duration` has passed.
async fn drive(
    r: &mut Runner,
    duration: Duration,
    kinds: &[(&'static str, f64)],
) -> anyhow::Result<(Vec<Calm>, Duration)> {
    for slot in 0..r.joiner {
        r.spawn(slot).await?;
    }
    let mut calms = Vec::new();
    // From cold: a coordinator after a lease duration (rule 4), then the first assignment.
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

/// Clear the faults, SIGTERM every live replica (each must exit 0 within 10 s), stop watching.
async fn shutdown(r: &mut Runner) -> anyhow::Result<()> {
    r.cluster.server.clear_faults();
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
    for i in 0..r.procs.len() {
        r.procs[i].stop_watchers();
        let label = r.label(i);
        r.sampler.remove(&label);
    }
    Ok(())
}

/// S6 from outside: no two processes ever own one shard under one epoch.
fn one_epoch_one_process(tenures: &[ShardTenure]) -> Vec<String> {
    let mut by: BTreeMap<(u32, Option<i64>), BTreeSet<&str>> = BTreeMap::new();
    for t in tenures {
        by.entry((t.shard, t.epoch)).or_default().insert(&t.who);
    }
    by.into_iter()
        .filter(|(_, who)| who.len() > 1)
        .map(|((s, e), who)| {
            format!(
                "shard {s}: {} all owned it under epoch {e:?}",
                who.into_iter().collect::<Vec<_>>().join(", ")
            )
        })
        .collect()
}

/// Figures of the shard tenures: (handovers between processes, min and median gap in ms
/// between one tenure's last leading request and the next one's first answer, highest epoch).
fn handovers(tenures: &[ShardTenure]) -> (usize, f64, f64, Option<i64>) {
    let mut by: BTreeMap<u32, Vec<&ShardTenure>> = BTreeMap::new();
    for t in tenures {
        by.entry(t.shard).or_default().push(t);
    }
    let mut gaps = Vec::new();
    for ts in by.values_mut() {
        ts.sort_by_key(|t| t.from);
        for w in ts.windows(2) {
            if w[0].who != w[1].who {
                gaps.push(w[1].from.duration_since(w[0].to).as_secs_f64() * 1e3);
            }
        }
    }
    gaps.sort_by(f64::total_cmp);
    let max_epoch = tenures.iter().filter_map(|t| t.epoch).max();
    (
        gaps.len(),
        gaps.first().copied().unwrap_or(f64::NAN),
        gaps.get(gaps.len() / 2).copied().unwrap_or(f64::NAN),
        max_epoch,
    )
}

/// Per process: (min, mean) answered samples per second, and the longest gap between two.
fn sampling(samples: &[ShardSample]) -> (f64, f64, Duration) {
    let mut by: BTreeMap<&str, Vec<tokio::time::Instant>> = BTreeMap::new();
    for s in samples {
        by.entry(&s.who).or_default().push(s.sent);
    }
    let mut rates = Vec::new();
    let mut gap = Duration::ZERO;
    for v in by.values_mut() {
        v.sort();
        for w in v.windows(2) {
            gap = gap.max(w[1] - w[0]);
        }
        if let (Some(a), Some(b)) = (v.first(), v.last()) {
            let span = (*b - *a).as_secs_f64();
            if span >= 5.0 {
                rates.push(v.len() as f64 / span);
            }
        }
    }
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    (if rates.is_empty() { 0.0 } else { min }, mean, gap)
}

/// What the replicas logged about shards: transitions by kind (and loss reason).
fn shard_log_counts(logs: &Path) -> BTreeMap<String, u64> {
    let mut m = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(logs) else {
        return m;
    };
    for e in dir.flatten() {
        let p = e.path();
        if p.extension().is_none_or(|x| x != "log") || p.ends_with("preflight.log") {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(&p) else {
            continue;
        };
        for line in text.lines() {
            let Some(json) = line.split_once(' ').map(|x| x.1) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<Value>(json) else {
                continue;
            };
            let k = match v["message"].as_str().unwrap_or("") {
                "owns shard" => "owns shard".to_string(),
                "stopped owning shard" => format!(
                    "stopped owning shard: {}",
                    v["reason"].as_str().unwrap_or("?")
                ),
                "wrote a new shard assignment" => "wrote a new shard assignment".to_string(),
                _ => continue,
            };
            *m.entry(k).or_default() += 1;
        }
    }
    m
}

pub async fn run(a: Args) -> anyhow::Result<Verdict> {
    let n_shards = a.shards.context("--shards")?;
    if a.backend != Backend::Kubernetes {
        bail!("--shards needs the Kubernetes backend (leaderd has no shard groups on etcd)");
    }
    if !(1..=MAX_SHARDS).contains(&n_shards) {
        bail!("--shards must be 1 to {MAX_SHARDS}");
    }
    let duration = a.duration;
    let n = a.candidates;
    if n < 2 {
        bail!("--candidates must be at least 2");
    }
    if a.sample_period > Duration::from_millis(20) {
        bail!("--sample-period must be at most 20ms (the checker samples at >= 50 Hz)");
    }
    let seed = a.seed;
    if let Some(bad) = a.faults.iter().find(|f| !KINDS.contains(&f.as_str())) {
        bail!(
            "unknown fault kind {bad:?} for --shards; known: {}",
            KINDS.join(",")
        );
    }
    let kinds: Vec<(&'static str, f64)> = KINDS
        .iter()
        .zip(WEIGHTS)
        .filter(|(k, _)| a.faults.is_empty() || a.faults.iter().any(|f| f == *k))
        .map(|(k, w)| (*k, w))
        .collect();
    let libfaketime = procs::find_libfaketime();
    let drift = match (a.drift, &libfaketime) {
        (Some(Drift::Beyond), _) => {
            bail!("--shards checks safety strictly: --drift beyond is not supported here")
        }
        (Some(d), None) if d != Drift::None => {
            bail!("--drift {d:?} needs libfaketime: apt-get install faketime (or --drift none)")
        }
        (Some(d), _) => d,
        (None, Some(_)) => Drift::Within,
        (None, None) => {
            eprintln!("chaos: warning: libfaketime not found (apt-get install faketime), running with real clocks");
            Drift::None
        }
    };
    let _ = leaderd_testkit::harness::raise_nofile(8192);
    let logs = a
        .logs
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("chaos-shards-logs"));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let mut options = ClusterOptions::new(
        a.leaderd
            .clone()
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_leaderd").into()),
        GROUP,
    );
    options.namespace = NS.into();
    options.timing = (D, R, P);
    let cluster = Cluster::start(options, 0).await?;
    // The coordinator's Lease for check.rs; every change of the group counted, to know that the
    // collectors (and the commit checker beside them) kept up.
    let mut changes = cluster.server.lease_changes();
    let versions: Arc<Mutex<Vec<Version>>> = Arc::default();
    let lagged = Arc::new(AtomicU64::new(0));
    let group_changes = Arc::new(AtomicU64::new(0));
    let collector = {
        let (versions, lagged, group_changes) =
            (versions.clone(), lagged.clone(), group_changes.clone());
        tokio::spawn(async move {
            while let Some(c) = changes.next().await {
                lagged.store(changes.lagged, Ordering::Relaxed);
                if c.namespace != NS {
                    continue;
                }
                if c.name == GROUP {
                    versions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Version::from_change(&c));
                } else if c.name.starts_with(&format!("{GROUP}-")) {
                    group_changes.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    let commits = CommitChecker::start(&cluster.server, NS, GROUP);
    let sampler = ShardSampler::start(a.sample_period);

    let t0 = Instant::now();
    let mut r = Runner {
        cluster,
        sampler,
        shards: n_shards,
        logs: logs.clone(),
        libfaketime,
        drift,
        sample_period: a.sample_period,
        mean_interval: a.mean_interval,
        t0,
        rng: Rng::with_seed(seed),
        joiner: n,
        slots: vec![Vec::new(); n + 1],
        wanted: (0..=n).map(|s| s < n).collect(),
        procs: Vec::new(),
        counts: BTreeMap::new(),
        undo: Vec::new(),
        term_timeouts: Vec::new(),
        phase_latency: Duration::ZERO,
        quiet: a.quiet,
        events: Vec::new(),
        releases: Arc::default(),
        recoveries: Vec::new(),
        liveness_violations: Vec::new(),
    };
    let drift_name = format!("{drift:?}").to_lowercase();
    let cmd = format!(
        "cargo test --test chaos -- --shards {n_shards} --seed {seed} --duration {} --candidates {n} --drift {drift_name}{}",
        humantime::format_duration(duration),
        if a.faults.is_empty() {
            String::new()
        } else {
            format!(" --faults {}", a.faults.join(","))
        }
    );
    println!("chaos: {cmd}");
    let k = r.k_min();
    println!(
        "  shard group {GROUP:?} of {n_shards} shards, {n} replicas + a joiner (c{}), D/R/P {}/{}/{}, clock rates {:?}, offsets -1h/0/+1h, sampling every {:?}, logs in {}",
        n + 1,
        humantime::format_duration(D),
        humantime::format_duration(R),
        humantime::format_duration(P),
        drift.rates(),
        a.sample_period,
        logs.display()
    );
    println!(
        "  calm windows: every shard owned and balanced within 2·D/k + P/k + L + 1 s = {:.2} s + L (k = {k}), a coordinator within D/k + 1.2·P/k + L + 1.5 s = {:.2} s + L",
        shard_bound(k, Duration::ZERO).as_secs_f64(),
        coordinator_bound(k, Duration::ZERO).as_secs_f64()
    );
    let preflight_msg = if drift != Drift::None {
        let m = super::preflight(&r.cluster, r.t0, r.libfaketime.as_deref(), &r.logs).await?;
        println!("  {m}");
        Some(m)
    } else {
        None
    };
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let result = drive(&mut r, duration, &kinds).await;
    // Whatever happened: every process asked to end, the fault sequence kept.
    let shut = shutdown(&mut r).await;
    std::fs::write(logs.join("faults.txt"), r.events.join("\n") + "\n")?;
    let (calms, chaos_time) = result?;
    shut?;
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    let records: Vec<Record> = r.procs.iter().map(|p| lock(&p.record).clone()).collect();
    // Let the checkers drain the last changes.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let versions = versions.lock().unwrap_or_else(|e| e.into_inner()).clone();
    collector.abort();
    let lagged = lagged.load(Ordering::Relaxed);
    let mut rep = check::check(&Input {
        t0,
        records: &records,
        versions: &versions,
        calms: &calms,
        renew_deadline: R,
        within_bound: drift.within_bound(),
        lagged_changes: lagged,
        term_timeouts: &r.term_timeouts,
        etcd: None,
    });

    // The shards.
    let mut shard_violations: Vec<String> = Vec::new();
    let samples = r.sampler.samples();
    let tenures = shard_tenures(&samples);
    if let Err(e) = check_samples(&samples) {
        shard_violations.push(format!("shards (sampled): {e}"));
    }
    shard_violations.extend(
        one_epoch_one_process(&tenures)
            .into_iter()
            .map(|v| format!("shards (sampled): {v}")),
    );
    let member_commits = match commits.result() {
        Ok(c) => c,
        Err(v) => {
            shard_violations.extend(v.into_iter().map(|v| format!("shards (commit log): {v}")));
            0
        }
    };
    shard_violations.extend(r.liveness_violations.iter().cloned());
    let (handover_n, gap_min, gap_p50, max_epoch) = handovers(&tenures);
    let (hz_min, hz_mean, max_gap) = sampling(&samples);
    let n_samples = samples.len();
    drop(samples);
    let log_counts = shard_log_counts(&logs);
    let releases = r.releases.lock().unwrap_or_else(|e| e.into_inner()).clone();
    if hz_min > 0.0 && hz_min < 50.0 {
        rep.warnings.push(format!(
            "/shards sampling fell below 50 Hz for some process (min {hz_min:.0} Hz): the machine is loaded; overlaps shorter than two sampling periods may go unseen"
        ));
    }
    let coordinator_violations = rep.violations.len();
    rep.violations.extend(shard_violations.iter().cloned());

    let summary = Summary {
        backend: Backend::Kubernetes,
        cmd: &cmd,
        seed,
        n,
        drift,
        duration: chaos_time,
        counts: &r.counts,
        records: &records,
        versions: versions.len(),
        rep: &rep,
        calms: calms.len(),
        load: (load_before, load_after),
        preflight: preflight_msg,
    };
    summary.print();
    let worst = r
        .recoveries
        .iter()
        .filter_map(|x| x.balanced.map(|b| (b, x)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let worst_owned = r
        .recoveries
        .iter()
        .filter_map(|x| x.owned)
        .fold(0.0, f64::max);
    println!("shards:       (above: the coordinator's election, the group's ordinary Lease {GROUP:?}, and the processes)");
    println!(
        "              {} shard tenures sampled ({n_samples} /shards answers, min {hz_min:.0} Hz, mean {hz_mean:.0} Hz per process, longest gap {max_gap:?}); highest epoch {max_epoch:?}",
        tenures.len()
    );
    println!(
        "              {handover_n} handovers between processes: gap min {gap_min:.0} ms, p50 {gap_p50:.0} ms (last owning request → next owner's first answer)"
    );
    println!(
        "              {member_commits} member commits checked ({} changes of the group's Leases, {lagged} missed)",
        group_changes.load(Ordering::Relaxed)
    );
    for (k, v) in &log_counts {
        println!("  {v:5}  {k}");
    }
    if !releases.is_empty() {
        println!("              POST /shards/release answers: {releases:?}");
    }
    match worst {
        Some((b, x)) => println!(
            "recovery:     {} calm windows; slowest to own and balance every shard {b:.2} s (at +{:.1}s, {} replicas, bound {:.2} s); slowest to own every shard {worst_owned:.2} s",
            r.recoveries.len(),
            x.at,
            x.replicas,
            x.bound
        ),
        None => println!("recovery:     {} calm windows, none balanced", r.recoveries.len()),
    }
    for x in &r.recoveries {
        println!(
            "              +{:6.1}s  {} replicas  owned {}  balanced {}  (bound {:.2} s)",
            x.at,
            x.replicas,
            x.owned.map_or("never".into(), |o| format!("{o:.2} s")),
            x.balanced.map_or("never".into(), |o| format!("{o:.2} s")),
            x.bound
        );
    }
    println!(
        "violations:   {} ({} shards, {coordinator_violations} coordinator and processes); fault sequence in {}",
        rep.violations.len(),
        shard_violations.len(),
        logs.join("faults.txt").display()
    );
    let json_path = a
        .json
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("chaos-shards.json"));
    if let Some(d) = json_path.parent() {
        std::fs::create_dir_all(d)?;
    }
    let mut j = summary.json();
    j["mode"] = json!("shards");
    j["shards"] = json!({
        "group": GROUP,
        "shards": n_shards,
        "replicas": n,
        "joiner": Runner::name(n),
        "sampled_tenures": tenures.len(),
        "samples": n_samples,
        "sampling_hz": {"min": hz_min, "mean": hz_mean, "longest_gap_ms": max_gap.as_millis() as u64},
        "highest_epoch": max_epoch,
        "handovers": {"n": handover_n, "gap_min_ms": gap_min, "gap_p50_ms": gap_p50},
        "member_commits_checked": member_commits,
        "group_changes": group_changes.load(Ordering::Relaxed),
        "missed_changes": lagged,
        "logged": log_counts,
        "release_answers": releases,
        "recoveries": r.recoveries.iter().map(|x| json!({
            "at_s": x.at, "replicas": x.replicas, "owned_s": x.owned, "balanced_s": x.balanced, "bound_s": x.bound,
        })).collect::<Vec<_>>(),
        "slowest_balanced_s": worst.map(|w| w.0),
        "slowest_owned_s": worst_owned,
        "violations": shard_violations,
    });
    std::fs::write(&json_path, serde_json::to_vec_pretty(&j)?)?;
    println!("JSON summary: {}", json_path.display());
    Ok(Verdict {
        violations: rep.violations.len(),
        line: format!(
            "shard group of {n_shards} shards, {} shard tenures, {} coordinator tenures, {} faults, seed {seed}, {} of chaos, {n} replicas + a joiner, drift {drift_name}, slowest recovery {}",
            tenures.len(),
            rep.tenures,
            r.counts.values().sum::<u64>(),
            humantime::format_duration(Duration::from_secs(chaos_time.as_secs())),
            worst.map_or("none".into(), |w| format!("{:.2} s", w.0)),
        ),
    })
}

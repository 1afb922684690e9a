//! Chaos runner: the Lease API test server (in this process) and N real leaderd processes,
//! with faults injected at random for a given duration and seed, and a checker that fails the
//! run on any safety or liveness violation.
//!
//! ```sh
//! cargo test --test chaos                                                  # the CI run (below)
//! cargo test --release --test chaos -- --seed 42 --duration 10m --candidates 5   # the full run
//! cargo test --test chaos -- --drift beyond --duration 2m                  # drift past the bound
//! cargo test --test chaos -- --backend etcd --duration 60s --seed 1        # on a real etcd
//! cargo test --test chaos -- --shards 12 --duration 60s --seed 1           # a shard group
//! ```
//!
//! `--shards N` runs a shard group instead (`leaderd --shards N` replicas on the Lease API test
//! server, with the shard group's faults: joins and leaves, releases, foreign writes into the
//! member and assignment Leases) and checks every shard: see `shards.rs`.
//!
//! `--backend etcd` runs the candidates with `--backend etcd` against a real 3-member etcd
//! cluster instead, with its own faults (candidates killed, terminated and stopped; members
//! killed and stopped; quorum loss) and the same checker: see `etcd.rs`. The default is the
//! Lease API test server, described below.
//!
//! Faults (see `docs/reliability.md`): kill -9 and SIGTERM of candidates (restarted after a
//! while); a silent partition of one candidate from the API server (requests held unanswered,
//! watch silent) and its heal; slow API calls (100 ms – 2 s) for one candidate; a share of
//! requests (of one candidate or of all) answered 500, 503 or 429 with Retry-After; a foreign
//! writer that deletes the Lease, rewrites it with a fake holder, with garbage (negative
//! duration, bad times, huge transitions, wrong types), or edits only its annotations (including
//! leaderd's own: a fake candidate announcement, a fake release marker, a fake holder
//! priority). Candidates run under libfaketime with start-time offsets of ±1 h and clock rates
//! (wall and monotonic) per `--drift`. Chaos phases (8–25 s) alternate with calm phases (all
//! faults cleared, dead candidates restarted) in which a leader must appear within
//! D/rate_min + 1.2·P/rate_min + the longest latency injected + 1 s (Retry-After) + 0.5 s.
//! Candidate c1 is never killed, so that one process lives through the whole run for the
//! memory check.
//!
//! The seed fixes the sequence of faults and their parameters; the timing (and so what each
//! fault hits) still depends on the machine.
//!
//! It is a test target without libtest's harness (`harness = false`), so `cargo test --workspace`
//! runs it. Its defaults are the CI run: seed `CHAOS_SEED` (or 1), 60 s, 5 candidates, clock
//! drift within the bound (real clocks, with a warning, where libfaketime is missing and no
//! `--drift` was asked for). Run with no arguments at all (as `cargo test` does) or with
//! `CHAOS_QUIET` set it prints only the summary, not a line per fault. The last line says
//! `chaos: PASS` or `chaos: FAIL`; a violation exits 1, an error of the runner 2.

mod check;
mod etcd;
mod procs;
mod shards;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context as _};
use clap::{Parser, ValueEnum};
use fastrand::Rng;
use leaderd::election::record::micro_time;
use leaderd_testkit::harness::{runtime, Cluster, ClusterOptions};
use leaderd_testkit::standin::{Health, StandInApp};
use serde_json::{json, Value};

use check::{Calm, Input, Report, Version};
use procs::{lock, Ask, Clock, Proc, Record, Watch};

const NS: &str = "default";
const LEASE: &str = "chaos";
/// The process tests' timing: lease duration, renew deadline, retry period.
const D: Duration = Duration::from_secs(3);
const R: Duration = Duration::from_secs(2);
const P: Duration = Duration::from_millis(250);

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Drift {
    /// Real clocks (no libfaketime).
    None,
    /// Rates ×0.95, ×1.00, ×1.05 (ρ = 5 %, inside the bound of 20 % for D = 3 s, R = 2 s).
    Within,
    /// Rates ×0.8 and ×1.2: ρ = 20 %, exactly at the bound (R/0.8 = D/1.2 = 2.5 s).
    Bound,
    /// Rates ×0.6 and ×1.2: a slow leader's claim (R/0.6 = 3.33 s) outlasts a fast follower's
    /// wait (D/1.2 = 2.5 s). Overlaps are expected, not failures.
    Beyond,
}

impl Drift {
    fn rates(self) -> &'static [f64] {
        match self {
            Drift::None => &[1.0],
            Drift::Within => &[0.95, 1.0, 1.05],
            Drift::Bound => &[0.8, 1.2],
            Drift::Beyond => &[0.6, 1.2],
        }
    }

    /// Whether the design promises safety at these rates: R/k_min < D/k_max, or equal (the
    /// latency of every observation and write then still orders the claims).
    fn within_bound(self) -> bool {
        let r = self.rates();
        let (lo, hi) = (
            r.iter().copied().fold(f64::INFINITY, f64::min),
            r.iter().copied().fold(0.0, f64::max),
        );
        R.as_secs_f64() / lo <= D.as_secs_f64() / hi + 1e-9
    }
}

/// The coordination store the candidates campaign on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// A Lease on the in-process Lease API test server.
    Kubernetes,
    /// A real 3-member etcd cluster on 127.0.0.1 (`etcd` 3.4 on PATH; see `etcd.rs`).
    Etcd,
}

/// `cargo test --test chaos -- [options]`
#[derive(Parser, Debug)]
#[command(
    name = "chaos",
    about = "leaderd chaos run: random faults, every /leader sampled, violations fail the run"
)]
struct Args {
    /// Seed of the fault sequence.
    #[arg(long, env = "CHAOS_SEED", default_value_t = 1)]
    seed: u64,
    /// The coordination store: the Lease API test server, or a real 3-member etcd cluster.
    #[arg(long, value_enum, default_value = "kubernetes")]
    backend: Backend,
    /// How long to inject faults (the final calm phase and shutdown come on top).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    duration: Duration,
    /// Number of leaderd candidates.
    #[arg(long, default_value_t = 5)]
    candidates: usize,
    /// Run a shard group of this many shards instead of a single Lease (see `shards.rs`): the
    /// candidates are its replicas, plus a 6th that joins and leaves.
    #[arg(long)]
    shards: Option<u32>,
    /// Clock rates of the candidates (libfaketime); offsets are always ±1 h or 0 [default:
    /// within, or none where libfaketime is missing].
    #[arg(long, value_enum)]
    drift: Option<Drift>,
    /// How often each candidate's /leader is asked.
    #[arg(long, default_value = "10ms", value_parser = humantime::parse_duration)]
    sample_period: Duration,
    /// Mean time between two faults in a chaos phase.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    mean_interval: Duration,
    /// Fault kinds to inject (comma-separated; default all): kill,term,partition,slow,errors,
    /// delete,foreign,garbage,annotations,forged (leaderd's release marker on a record whose
    /// holder a foreign writer emptied),app (a candidate's app fails its --app-check for a while).
    #[arg(long, value_delimiter = ',')]
    faults: Vec<String>,
    /// The leaderd binary (default: the one cargo built for this bench). A copy keeps a long
    /// run safe from rebuilds of target/ while it runs.
    #[arg(long)]
    leaderd: Option<PathBuf>,
    /// Where to write the JSON summary (default `<target>/bench/chaos.json`, in the cargo
    /// target directory leaderd was built in).
    #[arg(long)]
    json: Option<PathBuf>,
    /// Where to write the candidates' logs (default `<target>/bench/chaos-logs`).
    #[arg(long)]
    logs: Option<PathBuf>,
    /// Only the summary, no line per fault (also when `CHAOS_QUIET` is set, or with no
    /// arguments at all). `cargo test -q` passes it.
    #[arg(short, long)]
    quiet: bool,
    /// A test-name filter (as `cargo test FILTER` passes it to every test target): runs only if
    /// it matches "chaos".
    #[arg(hide = true)]
    filter: Option<String>,
    /// libtest's flags, which `cargo test -- ...` passes to every test target: accepted and
    /// ignored, but for `--list` (it lists itself) and `--ignored` (it is not an ignored test,
    /// so it does not run).
    #[command(flatten)]
    libtest: LibtestFlags,
}

/// libtest flags this target accepts so that `cargo test --workspace -- --nocapture` (and the
/// like) still run it.
#[derive(clap::Args, Debug)]
struct LibtestFlags {
    #[arg(long, hide = true)]
    nocapture: bool,
    #[arg(long, hide = true)]
    show_output: bool,
    #[arg(long, hide = true)]
    test_threads: Option<String>,
    #[arg(long, hide = true)]
    color: Option<String>,
    #[arg(long, hide = true)]
    exact: bool,
    #[arg(long, hide = true)]
    include_ignored: bool,
    #[arg(long, hide = true)]
    ignored: bool,
    #[arg(long, hide = true)]
    format: Option<String>,
    /// List the one test (`chaos: test`, libtest's terse format) and exit.
    #[arg(long, hide = true)]
    list: bool,
}

const KINDS: [&str; 11] = [
    "kill",
    "term",
    "partition",
    "slow",
    "errors",
    "delete",
    "foreign",
    "garbage",
    "annotations",
    "forged",
    "app",
];
const WEIGHTS: [f64; 11] = [1.0, 1.0, 1.5, 1.0, 1.0, 0.5, 0.7, 0.7, 0.8, 0.5, 0.8];

fn main() -> ExitCode {
    let no_arguments = std::env::args_os().len() == 1;
    let mut args = Args::parse();
    if runtime::filtered_out("chaos", args.filter.as_deref()) || args.libtest.ignored {
        return ExitCode::SUCCESS;
    }
    if args.libtest.list {
        println!("chaos: test");
        return ExitCode::SUCCESS;
    }
    args.quiet |= no_arguments || std::env::var_os("CHAOS_QUIET").is_some();
    let verdict = match (args.backend, args.shards) {
        (_, Some(_)) => runtime::block_on(2, shards::run(args)),
        (Backend::Kubernetes, None) => runtime::block_on(2, run(args)),
        (Backend::Etcd, None) => runtime::block_on(2, etcd::run(args)),
    };
    let verdict = match verdict {
        Ok(v) => v,
        Err(e) => {
            eprintln!("chaos: cannot start the tokio runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match verdict {
        Ok(Verdict {
            violations: 0,
            line,
        }) => {
            println!("chaos: PASS: {line}");
            ExitCode::SUCCESS
        }
        Ok(Verdict { violations, line }) => {
            println!("chaos: FAIL: {violations} violations; {line}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("chaos: {e:#}");
            println!("chaos: FAIL: the runner stopped: {e}");
            ExitCode::from(2)
        }
    }
}

/// How the run ended: the number of violations and a line saying what ran.
struct Verdict {
    violations: usize,
    line: String,
}

/// The cargo target directory this test was built in (`<target>/debug/leaderd`).
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_leaderd"));
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

/// The runner's state.
struct Runner {
    /// The test server and the kubeconfigs; its candidates are kept in `procs`, not sampled
    /// by its sampler (each process has its own poller, see `procs.rs`).
    cluster: Cluster,
    logs: PathBuf,
    libfaketime: Option<PathBuf>,
    drift: Drift,
    sample_period: Duration,
    mean_interval: Duration,
    t0: Instant,
    rng: Rng,
    /// Per slot (c1..cN): its processes so far (indices into `procs`).
    slots: Vec<Vec<usize>>,
    procs: Vec<Proc>,
    counts: BTreeMap<String, u64>,
    undo: Vec<(Instant, Undo)>,
    term_timeouts: Vec<String>,
    /// Longest latency injected in the current chaos phase.
    phase_latency: Duration,
    ghosts: u64,
    max_epoch: i64,
    quiet: bool,
    /// Per slot: the stand-in app its leaderd checks (`--app-check`), kept across restarts.
    apps: Vec<StandInApp>,
}

#[derive(Clone, Debug)]
enum Undo {
    Heal(String),
    Unslow(String),
    ErrorsOff(Option<String>),
    AppHealthy(usize),
    Restart(usize),
    TermDeadline(usize),
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

    /// Alive and not asked to end: may be picked for a fault.
    fn targetable(&self, slot: usize) -> bool {
        self.current(slot).is_some_and(|p| p.alive() && !p.asked)
    }

    /// The slot whose process leads by its latest answer.
    fn leader_slot(&self) -> Option<usize> {
        (0..self.slots.len()).find(|&s| {
            self.current(s)
                .is_some_and(|p| p.alive() && lock(&p.record).leading_now())
        })
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

    async fn spawn(&mut self, slot: usize) -> anyhow::Result<()> {
        let name = Self::name(slot);
        let gen = self.slots[slot].len() + 1;
        let label = format!("{name}#{gen}");
        let clock = self.pick_clock(slot);
        // Leadership follows the app (rule 13): checked every 200 ms, unhealthy after 2 failures.
        let app = self.apps[slot].url();
        let spec = self.cluster.spec(
            &name,
            &[
                "--app-check",
                &app,
                "--app-check-interval",
                "200ms",
                "--app-check-timeout",
                "100ms",
                "--app-check-failures",
                "2",
            ],
        )?;
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
        self.note(&format!("start {label} ({})", clock.label()));
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
        // Half of the time, the leader (if it qualifies): that is where faults matter most.
        if self.rng.bool() {
            if let Some(l) = self.leader_slot().filter(|l| live.contains(l)) {
                return Some(l);
            }
        }
        Some(live[self.rng.usize(..live.len())])
    }

    fn current_lease(&mut self) -> Option<Value> {
        let l = self.cluster.server.lease(NS, LEASE)?;
        if let Some(t) = l
            .get("spec")
            .and_then(|s| s.get("leaseTransitions"))
            .and_then(Value::as_i64)
        {
            self.max_epoch = self.max_epoch.max(t);
        }
        Some(l)
    }

    fn ghost(&mut self) -> String {
        self.ghosts += 1;
        format!("ghost-{}", self.ghosts)
    }

    async fn inject(&mut self, kind: &str) -> anyhow::Result<()> {
        let now = Instant::now();
        match kind {
            "kill" | "term" => {
                let Some(slot) = self.choose_target(false) else {
                    return Ok(());
                };
                let idx = *self.slots[slot].last().expect("alive");
                let label = lock(&self.procs[idx].record).label.clone();
                if kind == "kill" {
                    self.procs[idx].ask(Ask::Kill9);
                    self.count("kill -9");
                    self.note(&format!("kill -9 {label}"));
                } else {
                    self.procs[idx].ask(Ask::Term);
                    self.count("SIGTERM");
                    self.note(&format!("SIGTERM {label}"));
                    self.undo
                        .push((now + Duration::from_secs(10), Undo::TermDeadline(idx)));
                }
                let after = Duration::from_millis(self.rng.u64(500..5000));
                self.undo.push((now + after, Undo::Restart(slot)));
            }
            "partition" => {
                let Some(slot) = self.choose_target(true) else {
                    return Ok(());
                };
                let name = Self::name(slot);
                let d = Duration::from_millis(self.rng.u64(500..6000));
                self.cluster.server.partition(&name);
                self.count("partition");
                self.note(&format!("partition {name} for {d:?}"));
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
            "delete" => {
                self.current_lease();
                if self.cluster.server.delete_lease(NS, LEASE) {
                    self.count("foreign: delete Lease");
                    self.note("delete the Lease");
                }
            }
            "foreign" => {
                let Some(mut l) = self.current_lease() else {
                    return Ok(());
                };
                let ghost = self.ghost();
                let now = micro_time(SystemTime::now());
                l["spec"] = json!({
                    "holderIdentity": ghost,
                    "leaseDurationSeconds": self.rng.i64(1..=3),
                    "acquireTime": now, "renewTime": now,
                    "leaseTransitions": self.max_epoch + 1,
                });
                self.cluster.server.put_raw(NS, LEASE, l);
                self.count("foreign: other holder");
                self.note(&format!("foreign write: holder {ghost}"));
            }
            "garbage" => {
                let Some(mut l) = self.current_lease() else {
                    return Ok(());
                };
                let ghost = self.ghost();
                let now = micro_time(SystemTime::now());
                let t = self.max_epoch + 1;
                let (what, spec) = match self.rng.usize(..5) {
                    0 => (
                        "negative duration",
                        json!({"holderIdentity": ghost, "leaseDurationSeconds": -5,
                               "acquireTime": now, "renewTime": now, "leaseTransitions": t}),
                    ),
                    1 => (
                        "bad times",
                        json!({"holderIdentity": ghost, "leaseDurationSeconds": 2,
                               "acquireTime": 12, "renewTime": "2026-13-45T99:99:99Z",
                               "leaseTransitions": t}),
                    ),
                    2 => (
                        "huge transitions",
                        json!({"holderIdentity": ghost, "leaseDurationSeconds": 3,
                               "acquireTime": now, "renewTime": "bad time",
                               "leaseTransitions": self.max_epoch + 1_000_000}),
                    ),
                    3 => {
                        l["metadata"]["annotations"] = json!(5);
                        (
                            "wrong types",
                            json!({"holderIdentity": 42, "leaseDurationSeconds": "3",
                                   "acquireTime": [], "renewTime": {}, "leaseTransitions": t,
                                   "unknownField": true}),
                        )
                    }
                    _ => {
                        // Without leaderd's marker, also when an earlier edit left one behind.
                        if let Some(a) = l["metadata"]["annotations"].as_object_mut() {
                            a.remove("leaderd.io/released-by");
                            a.remove("leaderd.io/release-to");
                        }
                        (
                            "empty holder without release marker",
                            json!({"holderIdentity": "", "leaseDurationSeconds": 1,
                                   "renewTime": now, "leaseTransitions": t}),
                        )
                    }
                };
                l["spec"] = spec;
                self.cluster.server.put_raw(NS, LEASE, l);
                self.count(format!("foreign: garbage ({what})"));
                self.note(&format!("foreign write: garbage ({what})"));
            }
            "annotations" => {
                let Some(mut l) = self.current_lease() else {
                    return Ok(());
                };
                if !l["metadata"]["annotations"].is_object() {
                    l["metadata"]["annotations"] = json!({});
                }
                let n = self.rng.u32(..);
                let held = l["spec"]["holderIdentity"]
                    .as_str()
                    .is_some_and(|h| !h.is_empty());
                let a = &mut l["metadata"]["annotations"];
                let what = match self.rng.usize(..4) {
                    0 => {
                        a["chaos.example.com/note"] = json!(n.to_string());
                        l["metadata"]["labels"] = json!({"chaos": n.to_string()});
                        "foreign annotation and label"
                    }
                    1 => {
                        a["leaderd.io/candidate"] = json!("ghost-candidate");
                        a["leaderd.io/candidate-priority"] = json!("100");
                        "fake candidate announcement"
                    }
                    2 => {
                        a["leaderd.io/released-by"] = json!("ghost");
                        if held {
                            "fake release marker on a held record"
                        } else {
                            "fake release marker on a record without holder"
                        }
                    }
                    _ => {
                        a["leaderd.io/holder-priority"] = json!("-5");
                        "fake holder priority"
                    }
                };
                self.cluster.server.put_raw(NS, LEASE, l);
                self.count(format!("foreign: annotations ({what})"));
                self.note(&format!("foreign write: annotations only ({what})"));
            }
            "app" => {
                // The app flaps: it fails for a while, then recovers. Its leaderd steps down and
                // releases (a follower with a healthy app takes over), or does not take the lease.
                let Some(slot) = self.choose_target(true) else {
                    return Ok(());
                };
                let d = Duration::from_millis(self.rng.u64(300..4000));
                self.apps[slot].set(Health::Failing);
                self.count("app fails");
                self.note(&format!("the app of {} fails for {d:?}", Self::name(slot)));
                self.undo.push((now + d, Undo::AppHealthy(slot)));
            }
            "forged" => {
                // leaderd's release marker on a record whose holder this foreign writer
                // emptied: not a release (rule 5), followers wait it out.
                let Some(mut l) = self.current_lease() else {
                    return Ok(());
                };
                if !l["metadata"]["annotations"].is_object() {
                    l["metadata"]["annotations"] = json!({});
                }
                l["metadata"]["annotations"]["leaderd.io/released-by"] = json!("ghost");
                l["spec"]["holderIdentity"] = json!("");
                self.cluster.server.put_raw(NS, LEASE, l);
                self.count("foreign: forged release");
                self.note("foreign write: forged release marker on an empty holder");
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
            Undo::AppHealthy(slot) => {
                self.apps[slot].set(Health::Healthy);
                self.note(&format!("the app of {} recovers", Self::name(slot)));
            }
            Undo::Restart(slot) => {
                if self.alive(slot) {
                    // Still shutting down: try again shortly.
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

    /// Clear every fault, restart the dead, and wait for a leader. Returns the window.
    async fn calm(&mut self, extra: Duration) -> anyhow::Result<Calm> {
        self.cluster.server.clear_faults();
        for app in &self.apps {
            app.set(Health::Healthy);
        }
        let start = Instant::now();
        self.note("calm: faults cleared");
        let pending: Vec<(Instant, Undo)> = std::mem::take(&mut self.undo);
        let rates = self.drift.rates();
        let k_min = rates.iter().copied().fold(f64::INFINITY, f64::min);
        let bound = D.div_f64(k_min)
            + P.mul_f64(1.2 / k_min)
            + self.phase_latency
            + Duration::from_secs(1)
            + Duration::from_millis(500);
        self.phase_latency = Duration::ZERO;
        for (_, u) in pending {
            if let Undo::TermDeadline(idx) = u {
                if !self.procs[idx].wait_exit(Duration::from_secs(10)).await {
                    self.do_undo(Undo::TermDeadline(idx)).await?;
                    self.procs[idx].wait_exit(Duration::from_secs(5)).await;
                }
            }
        }
        for slot in 0..self.slots.len() {
            if let Some(p) = self.current(slot) {
                if !p.alive() {
                    self.restart_dead(slot).await?;
                }
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

/// What a fault loop needs of a runner: the Lease API runner here, the etcd one in `etcd.rs`.
trait Faults {
    /// How a fault is undone.
    type Undo;
    /// The undo queue, the generator and the mean time between faults.
    fn schedule(&mut self) -> (&mut Vec<(Instant, Self::Undo)>, &mut Rng, Duration);
    /// Inject one fault of `kind`.
    async fn inject_fault(&mut self, kind: &str) -> anyhow::Result<()>;
    /// Undo one fault.
    async fn undo_fault(&mut self, u: Self::Undo) -> anyhow::Result<()>;
}

/// One chaos phase until `until`: faults drawn by weight from `kinds` at exponentially
/// distributed intervals, each undone when its time comes.
async fn chaos_phase<F: Faults>(
    f: &mut F,
    until: Instant,
    kinds: &[(&'static str, f64)],
) -> anyhow::Result<()> {
    let total: f64 = kinds.iter().map(|k| k.1).sum();
    let mut next = {
        let (_, rng, mean) = f.schedule();
        Instant::now() + exp(rng, mean)
    };
    loop {
        let due = {
            let (undo, _, _) = f.schedule();
            undo.sort_by_key(|u| u.0);
            undo.first().map(|u| u.0)
        };
        let wake = due.map_or(next, |d| d.min(next)).min(until);
        tokio::time::sleep_until(wake.into()).await;
        let now = Instant::now();
        loop {
            let (undo, _, _) = f.schedule();
            if undo.first().is_none_or(|u| u.0 > now) {
                break;
            }
            let (_, u) = undo.remove(0);
            f.undo_fault(u).await?;
        }
        if now >= until {
            return Ok(());
        }
        if now >= next && total > 0.0 {
            let kind = {
                let (_, rng, _) = f.schedule();
                let mut x = rng.f64() * total;
                let mut kind = kinds[0].0;
                for (k, w) in kinds {
                    if x < *w {
                        kind = k;
                        break;
                    }
                    x -= w;
                }
                kind
            };
            f.inject_fault(kind).await?;
            let (_, rng, mean) = f.schedule();
            next = Instant::now() + exp(rng, mean);
        }
    }
}

impl Faults for Runner {
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

fn exp(rng: &mut Rng, mean: Duration) -> Duration {
    let x = -(1.0 - rng.f64()).ln();
    mean.mul_f64(x).max(Duration::from_millis(50))
}

/// Check that libfaketime changes leaderd's clocks as configured: a leaderd at `-1h x2` must
/// renew twice per renew interval (3R/5) of real time and report observed_at an hour behind.
/// On `cluster`'s server (Lease `chaos-preflight`), its log in `logs`.
async fn preflight(
    cluster: &Cluster,
    t0: Instant,
    libfaketime: Option<&Path>,
    logs: &Path,
) -> anyhow::Result<String> {
    let name = "preflight";
    let lease = "chaos-preflight";
    cluster.server.put_raw(
        NS,
        lease,
        json!({"metadata": {"annotations": {"leaderd.io/released-by": "chaos"}},
               "spec": {"leaseDurationSeconds": 1, "leaseTransitions": 0}}),
    );
    let clock = Clock {
        rate: 2.0,
        offset_h: -1,
    };
    let mut spec = cluster.spec(name, &[])?;
    spec.lease = lease.into();
    let watch = Watch {
        t0,
        sample_period: Duration::from_millis(50),
        log_path: logs.join("preflight.log"),
    };
    let mut p = procs::spawn(name.into(), spec, clock, libfaketime, watch).await?;
    let t = Instant::now();
    while !lock(&p.record).leading_now() && t.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !lock(&p.record).leading_now() {
        p.ask(Ask::Kill9);
        bail!("preflight: the faked leaderd did not lead within 10 s");
    }
    let from = Instant::now();
    let window = Duration::from_secs(6);
    tokio::time::sleep(window).await;
    let renewals = cluster
        .server
        .requests()
        .iter()
        .filter(|q| q.client == name && q.verb == "update" && q.status == 200 && q.at >= from)
        .count();
    let observed =
        leaderd_testkit::harness::get(&leaderd_testkit::harness::http_client(), p.addr, "/leader")
            .await
            .ok()
            .and_then(|b| serde_json::from_slice::<Value>(&b).ok())
            .and_then(|v| v["observed_at"].as_str().map(str::to_string));
    p.ask(Ask::Term);
    p.wait_exit(Duration::from_secs(10)).await;
    p.stop_watchers();
    let expected = window.as_secs_f64() / (R * 3 / 5).as_secs_f64();
    let skew = observed
        .as_deref()
        .and_then(|o| humantime::parse_rfc3339_weak(o).ok())
        .and_then(|o| SystemTime::now().duration_since(o).ok())
        .map(|d| d.as_secs_f64());
    let msg = format!(
        "libfaketime preflight (-1h x2): {renewals} renewals in {window:?} (real clock: {expected:.0}, x2: {:.0}), observed_at {} s behind",
        expected * 2.0,
        skew.map_or("?".into(), |s| format!("{s:.0}"))
    );
    if (renewals as f64) < expected * 1.6 || !skew.is_some_and(|s| (s - 3600.0).abs() < 120.0) {
        bail!("{msg}: libfaketime does not drive leaderd's clocks here");
    }
    Ok(msg)
}

async fn run(a: Args) -> anyhow::Result<Verdict> {
    let duration = a.duration;
    let n = a.candidates;
    if n < 2 {
        bail!("--candidates must be at least 2");
    }
    let seed = a.seed;
    let kinds: Vec<(&'static str, f64)> = KINDS
        .iter()
        .zip(WEIGHTS)
        .filter(|(k, _)| a.faults.is_empty() || a.faults.iter().any(|f| f == *k))
        .map(|(k, w)| (*k, w))
        .collect();
    if let Some(bad) = a.faults.iter().find(|f| !KINDS.contains(&f.as_str())) {
        bail!("unknown fault kind {bad:?}; known: {}", KINDS.join(","));
    }
    let libfaketime = procs::find_libfaketime();
    let drift = match (a.drift, &libfaketime) {
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
    if a.sample_period > Duration::from_millis(20) {
        bail!("--sample-period must be at most 20ms (the checker samples at >= 50 Hz)");
    }
    // Pollers, SSE streams and the server's connections.
    let _ = leaderd_testkit::harness::raise_nofile(8192);
    let logs = a
        .logs
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("chaos-logs"));
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;

    let mut options = ClusterOptions::new(
        a.leaderd
            .clone()
            .unwrap_or_else(|| env!("CARGO_BIN_EXE_leaderd").into()),
        LEASE,
    );
    options.namespace = NS.into();
    options.timing = (D, R, P);
    let cluster = Cluster::start(options, 0).await?;
    let mut changes = cluster.server.lease_changes();
    let versions: Arc<Mutex<Vec<Version>>> = Arc::default();
    let lagged = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let collector = {
        let (versions, lagged) = (versions.clone(), lagged.clone());
        tokio::spawn(async move {
            while let Some(c) = changes.next().await {
                lagged.store(changes.lagged, std::sync::atomic::Ordering::Relaxed);
                if c.namespace == NS && c.name == LEASE {
                    versions
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(Version::from_change(&c));
                }
            }
        })
    };

    let mut apps = Vec::new();
    for _ in 0..n {
        apps.push(StandInApp::start(Health::Healthy).await?);
    }
    let t0 = Instant::now();
    let mut r = Runner {
        cluster,
        logs: logs.clone(),
        libfaketime,
        drift,
        sample_period: a.sample_period,
        mean_interval: a.mean_interval,
        t0,
        rng: Rng::with_seed(seed),
        slots: vec![Vec::new(); n],
        procs: Vec::new(),
        counts: BTreeMap::new(),
        undo: Vec::new(),
        term_timeouts: Vec::new(),
        phase_latency: Duration::ZERO,
        ghosts: 0,
        max_epoch: 0,
        quiet: a.quiet,
        apps,
    };
    let cmd = format!(
        "cargo test --test chaos -- --seed {seed} --duration {} --candidates {n} --drift {}{}",
        humantime::format_duration(duration),
        format!("{drift:?}").to_lowercase(),
        if a.faults.is_empty() {
            String::new()
        } else {
            format!(" --faults {}", a.faults.join(","))
        }
    );
    println!("chaos: {cmd}");
    println!(
        "  D/R/P {}/{}/{}, clock rates {:?}, offsets -1h/0/+1h, sampling every {:?}, logs in {}",
        humantime::format_duration(D),
        humantime::format_duration(R),
        humantime::format_duration(P),
        drift.rates(),
        a.sample_period,
        logs.display()
    );
    let preflight_msg = if drift != Drift::None {
        let m = preflight(&r.cluster, r.t0, r.libfaketime.as_deref(), &r.logs).await?;
        println!("  {m}");
        Some(m)
    } else {
        None
    };
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();

    for slot in 0..n {
        r.spawn(slot).await?;
    }
    let mut calms = Vec::new();
    // The first election waits a lease duration (rule 4): count it as a calm window too.
    calms.push(r.calm(Duration::from_secs(1)).await?);
    let started = Instant::now();
    let end = started + duration;
    while Instant::now() < end {
        let len = Duration::from_millis(r.rng.u64(8000..25000));
        let until = (Instant::now() + len).min(end);
        chaos_phase(&mut r, until, &kinds).await?;
        let extra = Duration::from_millis(r.rng.u64(1000..4000));
        calms.push(r.calm(extra).await?);
    }
    let chaos_time = started.elapsed();

    // Shutdown: SIGTERM everyone; each must exit 0.
    for slot in 0..n {
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
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let records: Vec<Record> = r.procs.iter().map(|p| lock(&p.record).clone()).collect();
    let versions = versions.lock().unwrap_or_else(|e| e.into_inner()).clone();
    collector.abort();
    let within = drift.within_bound();
    let rep = check::check(&Input {
        t0,
        records: &records,
        versions: &versions,
        calms: &calms,
        renew_deadline: R,
        within_bound: within,
        lagged_changes: lagged.load(std::sync::atomic::Ordering::Relaxed),
        term_timeouts: &r.term_timeouts,
        etcd: None,
    });
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
    let json_path = a
        .json
        .clone()
        .unwrap_or_else(|| target_dir().join("bench").join("chaos.json"));
    if let Some(d) = json_path.parent() {
        std::fs::create_dir_all(d)?;
    }
    std::fs::write(&json_path, serde_json::to_vec_pretty(&summary.json())?)?;
    println!("JSON summary: {}", json_path.display());
    Ok(Verdict {
        violations: rep.violations.len(),
        line: format!(
            "{} tenures, {} faults, seed {seed}, {} of chaos, {n} candidates, drift {}",
            rep.tenures,
            r.counts.values().sum::<u64>(),
            humantime::format_duration(Duration::from_secs(chaos_time.as_secs())),
            format!("{drift:?}").to_lowercase()
        ),
    })
}

struct Summary<'a> {
    /// Which store (labels of the printed summary).
    backend: Backend,
    cmd: &'a str,
    seed: u64,
    n: usize,
    drift: Drift,
    duration: Duration,
    counts: &'a BTreeMap<String, u64>,
    records: &'a [Record],
    versions: usize,
    rep: &'a Report,
    calms: usize,
    load: (String, String),
    preflight: Option<String>,
}

impl Summary<'_> {
    fn stops(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for r in self.records {
            for (_, e) in &r.logs {
                let k = match e {
                    procs::LogEvent::Became { .. } => "became leader".to_string(),
                    procs::LogEvent::Stopped { reason, .. } => format!("stopped leading: {reason}"),
                };
                *m.entry(k).or_default() += 1;
            }
        }
        m
    }

    fn exits(&self) -> (usize, usize, usize) {
        let mut k = (0, 0, 0);
        for r in self.records {
            match r.exit.as_ref().and_then(|e| e.asked) {
                Some(Ask::Kill9) => k.0 += 1,
                Some(Ask::Term) => k.1 += 1,
                None => k.2 += 1,
            }
        }
        k
    }

    fn print(&self) {
        let rep = self.rep;
        let total: u64 = self.counts.values().sum();
        println!("\n== chaos summary");
        println!("command:      {}", self.cmd);
        println!(
            "run:          {:.0} s of chaos phases and calm windows ({} calm windows), {} candidates, drift {:?} (rates {:?}; safety promised: {})",
            self.duration.as_secs_f64(),
            self.calms,
            self.n,
            self.drift,
            self.drift.rates(),
            self.drift.within_bound()
        );
        println!(
            "load average: before {}  after {}",
            self.load.0.trim(),
            self.load.1.trim()
        );
        if let Some(p) = &self.preflight {
            println!("faketime:     {p}");
        }
        println!("faults injected: {total}");
        for (k, v) in self.counts {
            println!("  {v:5}  {k}");
        }
        let (killed, termed, other) = self.exits();
        println!(
            "processes:    {} started; {killed} killed (-9), {termed} terminated (SIGTERM, incl. the final shutdown), {other} other exits",
            self.records.len()
        );
        println!("transitions (logs):");
        for (k, v) in self.stops() {
            println!("  {v:5}  {k}");
        }
        println!(
            "              {} SSE events ({} is_leader changes), {} sampled tenures, {} {}",
            rep.sse_events,
            rep.sse_transitions,
            rep.sampled_tenures,
            self.versions,
            match self.backend {
                Backend::Kubernetes => "Lease versions committed",
                Backend::Etcd => "election keys created",
            }
        );
        println!(
            "epochs:       {} tenures, epochs {:?} → {:?}, {} resets excused (fresh process after a deletion)",
            rep.tenures,
            rep.first_epoch,
            rep.last_epoch,
            rep.epoch_resets_excused.len()
        );
        for e in &rep.epoch_resets_excused {
            println!("    excused: {e}");
        }
        println!(
            "ordering:     {} handovers between processes; {} pairs of tenures proven ordered",
            rep.handovers, rep.proven_pairs
        );
        if self.backend == Backend::Etcd {
            // No commit times: a handover is not known to follow a release or an expiry.
            let (n, min, p50) = margins(rep, false);
            println!("              {n} handovers: margin min {min:.0} ms, p50 {p50:.0} ms (sampled bounds only)");
        } else {
            for (release, what) in [(true, "after a release"), (false, "after an expiry")] {
                let (n, min, p50) = margins(rep, release);
                println!("              {n} {what}: margin min {min:.0} ms, p50 {p50:.0} ms");
            }
        }
        if let Some(w) = &rep.min_margin_at {
            println!("              closest: {w}");
        }
        if let Some((d, b)) = rep.worst_liveness {
            println!(
                "liveness:     {} windows after faults stopped; slowest leader {:.2} s (its bound {:.2} s)",
                rep.liveness.len(),
                d,
                b
            );
        }
        if let Some((g, at, calm)) = rep.longest_gap {
            println!(
                "leaderless:   longest gap {:.2} s at +{:.1}s ({}); longest in calm windows {:.2} s",
                g.as_secs_f64(),
                at,
                if calm { "calm" } else { "chaos" },
                rep.longest_calm_gap.map_or(0.0, |g| g.as_secs_f64())
            );
        }
        println!(
            "sampling:     min {:.0} Hz, mean {:.0} Hz per candidate, longest gap between samples {:?}",
            rep.sampling.0, rep.sampling.1, rep.sampling.2
        );
        println!("memory:");
        for l in &rep.memory {
            println!("  {l}");
        }
        for w in &rep.warnings {
            println!("warning:      {w}");
        }
        if !rep.expected.is_empty() {
            println!(
                "expected (drift beyond the bound): {} findings",
                rep.expected.len()
            );
            for e in rep.expected.iter().take(20) {
                println!("  {e}");
            }
        }
        println!("violations:   {}", rep.violations.len());
        for v in &rep.violations {
            println!("  {v}");
        }
    }

    fn json(&self) -> Value {
        let rep = self.rep;
        let (killed, termed, other) = self.exits();
        json!({
            "command": self.cmd,
            "seed": self.seed,
            "candidates": self.n,
            "drift": format!("{:?}", self.drift).to_lowercase(),
            "rates": self.drift.rates(),
            "safety_promised": self.drift.within_bound(),
            "seconds": self.duration.as_secs_f64(),
            "timing": {"lease_duration_ms": D.as_millis() as u64, "renew_deadline_ms": R.as_millis() as u64, "retry_period_ms": P.as_millis() as u64},
            "faults": self.counts,
            "processes": {"started": self.records.len(), "killed": killed, "terminated": termed, "other_exits": other},
            "transitions": self.stops(),
            "sse_events": rep.sse_events,
            "sampled_tenures": rep.sampled_tenures,
            "lease_versions": self.versions,
            "tenures": rep.tenures,
            "epochs": [rep.first_epoch, rep.last_epoch],
            "epoch_resets_excused": rep.epoch_resets_excused,
            "handovers": rep.handovers,
            "proven_pairs": rep.proven_pairs,
            "margins_ms": {
                "after_release": {"n": margins(rep, true).0, "min": margins(rep, true).1, "p50": margins(rep, true).2},
                "after_expiry": {"n": margins(rep, false).0, "min": margins(rep, false).1, "p50": margins(rep, false).2},
            },
            "closest": rep.min_margin_at,
            "liveness": rep.liveness.iter().map(|l| json!({"at_s": l.0, "leader_after_s": l.1, "bound_s": l.2})).collect::<Vec<_>>(),
            "longest_leaderless_gap_s": rep.longest_gap.map(|g| g.0.as_secs_f64()),
            "longest_calm_gap_s": rep.longest_calm_gap.map(|g| g.as_secs_f64()),
            "sampling_hz": {"min": rep.sampling.0, "mean": rep.sampling.1, "longest_gap_ms": rep.sampling.2.as_millis() as u64},
            "memory": rep.memory,
            "load": [self.load.0.trim(), self.load.1.trim()],
            "warnings": rep.warnings,
            "expected": rep.expected,
            "violations": rep.violations,
        })
    }
}

/// (count, min, median) of the handover margins after a release (or after an expiry), in ms.
fn margins(rep: &Report, release: bool) -> (usize, f64, f64) {
    let mut m: Vec<f64> = rep
        .margins_ms
        .iter()
        .filter(|x| x.1 == release)
        .map(|x| x.0)
        .collect();
    m.sort_by(f64::total_cmp);
    let p50 = m.get(m.len() / 2).copied().unwrap_or(f64::NAN);
    (m.len(), m.first().copied().unwrap_or(f64::NAN), p50)
}

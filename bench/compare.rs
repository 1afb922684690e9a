//! leaderd beside other leader electors, on the project's Lease API test server (in this
//! process, on 127.0.0.1): failover after kill -9, handover after SIGTERM, API requests in
//! steady state, `/leader` under wrk, idle footprint, and 100 candidates on one lease.
//!
//! ```sh
//! cargo bench --bench compare                                   # everything, 15 s leases, 5 trials
//! cargo bench --bench compare -- --lease-duration 5s --trials 5 --json /tmp/compare.json
//! cargo bench --bench compare -- --smoke                        # seconds: what CI runs
//! cargo bench --bench compare -- --electors leaderd,python     # a subset
//! ```
//!
//! Electors (`--electors`, default all):
//! - `leaderd`: the release binary cargo builds for benches;
//! - `python`: the Python `kubernetes` client's `leaderelection` with a `LeaseLock`
//!   (`bench/peers/python_peer.py`; needs `pip install kubernetes`);
//! - `kube-leader-election`, `kube-lease-manager`: the crates.io crates, each behind a tiny
//!   runner (`bench/peers/<crate>/`, separate Cargo projects that this bench builds with
//!   `cargo build --locked` into `<target>/peers`, or `--peers-target-dir`).
//!
//! Every runner serves leaderd's `/leader` JSON shape, so one [`Sampler`] (every 10 ms) measures
//! all. Every elector gets the same lease duration D; the renew deadline is 2D/3 and the retry
//! period 2D/15 (leaderd's and client-go's 15 s / 10 s / 2 s at D = 15 s), as each library
//! allows: Python needs a retry period of at least 1 s; kube-lease-manager has no retry period
//! but a grace period (renew this long before expiry), set to D/3 (its default 5 s at 15 s).
//!
//! Per elector: a fresh test server and 3 candidates. After the first election settles, a
//! steady window (`--steady`) with the sampler paused: API requests per candidate (counted at
//! the test server, by bearer token), and each process's CPU time and RSS (`/proc`). Then, for
//! leaderd, wrk against the leader's `/leader`. Then `--trials` crash failovers (kill -9 the
//! leader; time until another candidate first answers `is_leader: true`, and the Lease writes
//! in between) and `--trials` graceful handovers (SIGTERM), each followed by a fresh candidate
//! so there are always 3. Last, `--scale` leaderd candidates on one lease: failover after
//! kill -9 and the Lease writes per transition. Every `/leader` answer is checked for two
//! leaders at once and falling epochs ([`check`]).
//!
//! It prints a table and writes JSON to `<target>/bench/compare.json` (`--json` to choose).
//! Without `--bench` (as `cargo test --benches` runs it) it is the smoke run.

use std::collections::HashMap;
use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant as StdInstant, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use leaderd::status::LeaderView;
use leaderd_testkit::harness::{check, write_kubeconfig, Candidate, CandidateSpec, Sampler};
use leaderd_testkit::testserver::{RequestRecord, TestServer};
use serde_json::{json, Value};
use tokio::process::Command;
use tokio::time::Instant;

const NS: &str = "default";
const LEASE: &str = "bench";

/// `cargo bench --bench compare -- [options]`
#[derive(Parser, Debug)]
#[command(
    name = "compare",
    about = "leaderd and other Lease electors: failover, handover, API load, /leader, footprint, scale"
)]
struct Args {
    /// Lease duration for every elector, whole seconds [bench: 15s, smoke: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    lease_duration: Option<Duration>,
    /// Trials of each failover kind [bench: 5, smoke: 1].
    #[arg(long)]
    trials: Option<usize>,
    /// A short run (seconds) that asserts nothing but that the table is produced.
    #[arg(long)]
    smoke: bool,
    /// Comma-separated: leaderd, python, kube-leader-election, kube-lease-manager [all].
    #[arg(long, value_delimiter = ',')]
    electors: Option<Vec<String>>,
    /// Steady-state window for API request rates and the idle footprint [bench: 60s, smoke: 2s].
    #[arg(long, value_parser = humantime::parse_duration)]
    steady: Option<Duration>,
    /// wrk duration against leaderd's /leader [bench: 20s, smoke: 2s]; 0s skips.
    #[arg(long, value_parser = humantime::parse_duration)]
    wrk_duration: Option<Duration>,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    wrk_threads: usize,
    /// wrk connections.
    #[arg(long, default_value_t = 64)]
    wrk_connections: usize,
    /// leaderd candidates on one lease for the scale figures [bench: 100, smoke: 25]; 0 skips.
    #[arg(long)]
    scale: Option<usize>,
    /// Crash trials at scale [same as --trials].
    #[arg(long)]
    scale_trials: Option<usize>,
    /// Profile the Rust peer runners are built with: release or debug [bench: release,
    /// smoke: debug].
    #[arg(long)]
    peers_profile: Option<String>,
    /// Target directory for the peer runners [<target>/peers].
    #[arg(long)]
    peers_target_dir: Option<PathBuf>,
    /// Where to write the JSON results [<target>/bench/compare.json].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Passed by `cargo bench`; without it this is the smoke run.
    #[arg(long, hide = true)]
    bench: bool,
    /// A benchmark-name filter (as `cargo bench FILTER` passes it): runs only if it matches.
    #[arg(hide = true)]
    filter: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args
        .filter
        .as_deref()
        .is_some_and(|f| !"compare".contains(f))
    {
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("compare: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("compare: {e:#}");
            ExitCode::FAILURE
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Elector {
    Leaderd,
    Python,
    Kle,
    Klm,
}

const ALL: [Elector; 4] = [
    Elector::Leaderd,
    Elector::Python,
    Elector::Kle,
    Elector::Klm,
];

impl Elector {
    fn name(self) -> &'static str {
        match self {
            Elector::Leaderd => "leaderd",
            Elector::Python => "python",
            Elector::Kle => "kube-leader-election",
            Elector::Klm => "kube-lease-manager",
        }
    }

    fn parse(s: &str) -> anyhow::Result<Elector> {
        ALL.into_iter()
            .find(|e| e.name() == s.trim())
            .ok_or_else(|| anyhow!("unknown elector {s:?} (leaderd, python, kube-leader-election, kube-lease-manager)"))
    }

    /// The runner's Cargo project under bench/peers and its binary.
    fn cargo_project(self) -> Option<(&'static str, &'static str)> {
        match self {
            Elector::Kle => Some(("kube-leader-election", "kle-runner")),
            Elector::Klm => Some(("kube-lease-manager", "klm-runner")),
            _ => None,
        }
    }

    /// Whether its `/leader` names the holder to followers.
    fn names_holder(self) -> bool {
        self != Elector::Klm
    }
}

/// The settings after defaults.
struct Config {
    smoke: bool,
    d: Duration,
    trials: usize,
    electors: Vec<Elector>,
    steady: Duration,
    wrk: Duration,
    wrk_threads: usize,
    wrk_connections: usize,
    scale: usize,
    scale_trials: usize,
    peers_release: bool,
    peers_target: PathBuf,
    json: PathBuf,
}

impl Config {
    fn from(a: Args) -> anyhow::Result<Config> {
        let smoke = a.smoke || !a.bench;
        let pick = |v: Option<Duration>, bench: u64, smoke_v: u64| {
            v.unwrap_or(Duration::from_secs(if smoke { smoke_v } else { bench }))
        };
        let d = pick(a.lease_duration, 15, 2);
        if d.subsec_nanos() != 0 || d < Duration::from_secs(2) {
            bail!("--lease-duration must be whole seconds, at least 2s (the Lease records whole seconds; Python needs 2s)");
        }
        let trials = a.trials.unwrap_or(if smoke { 1 } else { 5 }).max(1);
        let electors = match a.electors {
            None => ALL.to_vec(),
            Some(list) => list
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| Elector::parse(s))
                .collect::<anyhow::Result<_>>()?,
        };
        let target = target_dir();
        let peers_release = match a.peers_profile.as_deref() {
            None => !smoke,
            Some("release") => true,
            Some("debug") => false,
            Some(p) => bail!("--peers-profile must be release or debug, not {p:?}"),
        };
        Ok(Config {
            smoke,
            d,
            trials,
            electors,
            steady: pick(a.steady, 60, 2),
            wrk: pick(a.wrk_duration, 20, 2),
            wrk_threads: a.wrk_threads.max(1),
            wrk_connections: a.wrk_connections.max(1),
            scale: a.scale.unwrap_or(if smoke { 25 } else { 100 }),
            scale_trials: a.scale_trials.unwrap_or(trials).max(1),
            peers_release,
            peers_target: a.peers_target_dir.unwrap_or_else(|| target.join("peers")),
            json: a
                .json
                .unwrap_or_else(|| target.join("bench").join("compare.json")),
        })
    }

    /// Renew deadline and retry period for lease duration `d`: leaderd's 15/10/2 ratios.
    fn timing(&self) -> (Duration, Duration, Duration) {
        (self.d, self.d * 2 / 3, self.d * 2 / 15)
    }
}

/// The cargo target directory this bench was built in (`<target>/release/leaderd`).
fn target_dir() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_leaderd"));
    bin.parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("target"))
}

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Build a peer runner (cargo's own up-to-date check makes this cheap when nothing changed).
fn build_peer(cfg: &Config, project: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = manifest_dir()
        .join("bench/peers")
        .join(project)
        .join("Cargo.toml");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--locked", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&cfg.peers_target)
        // The bench's own build settings must not leak into the peers' build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if cfg.peers_release {
        cmd.arg("--release");
    }
    eprintln!(
        "compare: building {bin} ({}) in {}",
        if cfg.peers_release {
            "release"
        } else {
            "debug"
        },
        cfg.peers_target.display()
    );
    let started = StdInstant::now();
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of bench/peers/{project} failed ({status})");
    }
    eprintln!(
        "compare: built {bin} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(cfg
        .peers_target
        .join(if cfg.peers_release {
            "release"
        } else {
            "debug"
        })
        .join(bin))
}

fn python_ok() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import kubernetes.leaderelection.resourcelock.leaselock, kubernetes; print(kubernetes.__version__)",
        ])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err("the Python kubernetes package is missing (pip install kubernetes)".into())
    }
}

fn python_version() -> Option<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, kubernetes; print(sys.version.split()[0], kubernetes.__version__)",
        ])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// How to start candidates of one elector.
struct Launcher {
    elector: Elector,
    bin: PathBuf,
    timing: (Duration, Duration, Duration),
}

fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Launcher {
    async fn spawn(&self, server: &TestServer, dir: &Path, name: &str) -> io::Result<Candidate> {
        let kubeconfig = write_kubeconfig(dir, &server.kubeconfig_yaml(name, NS), name)?;
        let (d, r, p) = self.timing;
        if self.elector == Elector::Leaderd {
            return Candidate::spawn(&CandidateSpec {
                bin: self.bin.clone(),
                kubeconfig,
                lease: LEASE.into(),
                namespace: NS.into(),
                identity: name.into(),
                timing: self.timing,
                extra_args: vec![],
            })
            .await;
        }
        let mut cmd = if self.elector == Elector::Python {
            let mut c = Command::new("python3");
            c.arg("-u")
                .arg(&self.bin)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--lease-duration", &d.as_secs().to_string()])
                .args(["--renew-deadline", &format!("{:.3}", r.as_secs_f64())])
                .args([
                    "--retry-period",
                    &format!("{:.3}", p.max(Duration::from_secs(1)).as_secs_f64()),
                ]);
            c
        } else {
            let mut c = Command::new(&self.bin);
            c.args(["--lease-duration", &ms(d), "--retry-period", &ms(p)])
                .args(["--grace", &format!("{}s", (d.as_secs() / 3).max(1))]);
            c
        };
        cmd.args(["--namespace", NS, "--lease", LEASE, "--identity", name])
            .args(["--http-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn");
        Candidate::spawn_command(name, cmd).await
    }

    /// How often the leader writes the Lease: the phase of a kill within this is random.
    fn renew_interval(&self) -> Duration {
        let (d, _, p) = self.timing;
        match self.elector {
            Elector::Leaderd | Elector::Kle => p,
            Elector::Python => p.max(Duration::from_secs(1)),
            Elector::Klm => d - Duration::from_secs((d.as_secs() / 3).max(1)),
        }
    }

    /// What the library is given, for the report.
    fn settings(&self) -> String {
        let (d, r, p) = self.timing;
        let s = ms;
        match self.elector {
            Elector::Leaderd => format!(
                "--lease-duration {} --renew-deadline {} --retry-period {}",
                s(d),
                s(r),
                s(p)
            ),
            Elector::Python => format!(
                "lease_duration {} renew_deadline {:.3} retry_period {:.3}",
                d.as_secs(),
                r.as_secs_f64(),
                p.max(Duration::from_secs(1)).as_secs_f64()
            ),
            Elector::Kle => format!("lease_ttl {}, try_acquire_or_renew every {}", s(d), s(p)),
            Elector::Klm => format!(
                "duration {} s, grace {} s (watch() mode)",
                d.as_secs(),
                (d.as_secs() / 3).max(1)
            ),
        }
    }
}

/// A test server with candidates of one elector, sampled.
struct Cluster {
    elector: Elector,
    launcher: Launcher,
    server: TestServer,
    dir: tempfile::TempDir,
    sampler: Sampler,
    cands: Vec<Candidate>,
    next: usize,
}

impl Cluster {
    async fn start(launcher: Launcher, n: usize, period: Duration) -> anyhow::Result<Cluster> {
        let mut c = Cluster {
            elector: launcher.elector,
            launcher,
            server: TestServer::start().await?,
            dir: tempfile::tempdir()?,
            sampler: Sampler::start(period),
            cands: Vec::new(),
            next: 1,
        };
        for _ in 0..n {
            c.spawn().await?;
        }
        Ok(c)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let name = format!("c{}", self.next);
        self.next += 1;
        let c = self
            .launcher
            .spawn(&self.server, self.dir.path(), &name)
            .await
            .with_context(|| format!("starting {} candidate {name}", self.elector.name()))?;
        self.sampler.add(&c);
        self.cands.push(c);
        Ok(())
    }

    fn pause(&self) {
        for c in &self.cands {
            self.sampler.remove(&c.name);
        }
    }

    fn resume(&self) {
        for c in &self.cands {
            self.sampler.add(c);
        }
    }

    /// Wait until every candidate answers, exactly one leads, and (for electors that tell)
    /// every candidate names it; returns the leader.
    async fn settle(&self, within: Duration) -> anyhow::Result<String> {
        let names: Vec<String> = self.cands.iter().map(|c| c.name.clone()).collect();
        let names_holder = self.elector.names_holder();
        let found = self
            .sampler
            .wait_for(within, |m: &HashMap<String, LeaderView>| {
                if !names.iter().all(|n| m.contains_key(n)) {
                    return None;
                }
                let leaders: Vec<&String> = names
                    .iter()
                    .filter(|n| m.get(*n).is_some_and(|v| v.is_leader))
                    .collect();
                let [leader] = leaders.as_slice() else {
                    return None;
                };
                let agreed = !names_holder
                    || names
                        .iter()
                        .all(|n| m.get(n).and_then(|v| v.leader.as_deref()) == Some(leader));
                agreed.then(|| (*leader).clone())
            })
            .await;
        found.ok_or_else(|| {
            anyhow!(
                "{}: no settled single leader within {within:?}; latest: {:?}",
                self.elector.name(),
                self.sampler
                    .latest()
                    .iter()
                    .map(|(n, v)| (n.clone(), v.is_leader, v.leader.clone()))
                    .collect::<Vec<_>>()
            )
        })
    }

    fn take(&mut self, name: &str) -> Candidate {
        let i = self
            .cands
            .iter()
            .position(|c| c.name == name)
            .expect("a known candidate");
        self.cands.remove(i)
    }

    async fn stop(mut self) -> Vec<String> {
        for c in &self.cands {
            c.signal(libc::SIGTERM);
        }
        for c in &mut self.cands {
            if c.wait_exit(Duration::from_secs(5)).await.is_none() {
                c.kill9();
            }
        }
        let v = check(&self.sampler.samples());
        self.server.shutdown().await;
        v
    }
}

/// CPU seconds (utime + stime) and RSS bytes of a process.
fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let u = leaderd_testkit::harness::proc_usage(pid).ok()?;
    Some((u.cpu.as_secs_f64(), u.rss_kib * 1024))
}

fn is_lease_write(r: &RequestRecord) -> bool {
    r.resource == "leases" && matches!(r.verb.as_str(), "create" | "update" | "patch")
}

/// Lease writes from `from` to `to`: (attempts, 2xx, 409).
fn writes(server: &TestServer, from: StdInstant, to: StdInstant) -> (usize, usize, usize) {
    let rs: Vec<RequestRecord> = server
        .requests()
        .into_iter()
        .filter(|r| r.at >= from && r.at <= to && is_lease_write(r))
        .collect();
    let ok = rs.iter().filter(|r| (200..300).contains(&r.status)).count();
    let conflict = rs.iter().filter(|r| r.status == 409).count();
    (rs.len(), ok, conflict)
}

fn median(v: &[f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    let n = s.len();
    Some(if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    })
}

fn max(v: &[f64]) -> Option<f64> {
    v.iter().copied().reduce(f64::max)
}

/// One failover: what happened and how long it took.
#[derive(Debug)]
struct Failover {
    from: String,
    to: String,
    ms: f64,
    writes: (usize, usize, usize),
    exit: Option<String>,
}

fn failover_json(f: &Failover) -> Value {
    json!({"from": f.from, "to": f.to, "ms": f.ms, "lease_writes": f.writes.0,
           "lease_writes_ok": f.writes.1, "lease_writes_409": f.writes.2, "exit": f.exit})
}

/// Kill -9 (or SIGTERM) the leader, wait for the next one, measure, and replace the candidate.
async fn failover(
    c: &mut Cluster,
    graceful: bool,
    settle_within: Duration,
    replace: bool,
) -> anyhow::Result<Failover> {
    let (d, _, p) = c.launcher.timing;
    let leader = c.settle(settle_within).await?;
    // Let every follower see several renewals first, then strike at a random phase of the
    // leader's renew cycle (a fixed delay would lock onto one phase and bias the figures).
    tokio::time::sleep((p * 3).max(Duration::from_millis(500))).await;
    let cycle = c.launcher.renew_interval();
    tokio::time::sleep(cycle.mul_f64(fastrand::f64())).await;
    let leader = c.settle(settle_within).await.unwrap_or(leader);
    let mut old = c.take(&leader);
    if !graceful {
        c.sampler.remove(&leader);
    }
    let t0 = Instant::now();
    let t0_std = StdInstant::now();
    if graceful {
        old.signal(libc::SIGTERM);
    } else {
        old.kill9();
    }
    let next = c
        .sampler
        .wait_for_leader(d * 3 + Duration::from_secs(10), &[leader.as_str()])
        .await;
    let exit = if graceful {
        let st = old.wait_exit(Duration::from_secs(10)).await;
        if st.is_none() {
            old.kill9();
        }
        Some(st.map_or("did not exit within 10 s".into(), |s| s.to_string()))
    } else {
        old.wait_exit(Duration::from_secs(5)).await;
        None
    };
    c.sampler.remove(&leader);
    drop(old);
    let Some((next, _)) = next else {
        bail!(
            "{}: no new leader within {:?} after {} of {leader}",
            c.elector.name(),
            d * 3 + Duration::from_secs(10),
            if graceful { "SIGTERM" } else { "kill -9" }
        );
    };
    let seen = c
        .sampler
        .first_leading(&next, t0)
        .map(|s| s.recv)
        .unwrap_or_else(Instant::now);
    let took = seen - t0;
    // The winner's first renew comes a retry period after it took the lease: stop before.
    let end = t0_std + took + (p / 2).min(Duration::from_millis(500));
    let now = StdInstant::now();
    if end > now {
        tokio::time::sleep(end - now).await;
    }
    let w = writes(&c.server, t0_std, end);
    if replace {
        c.spawn().await?;
    }
    Ok(Failover {
        from: leader,
        to: next,
        ms: took.as_secs_f64() * 1000.0,
        writes: w,
        exit,
    })
}

/// API requests and resource use of every candidate over a quiet window (sampler paused).
struct Steady {
    leader: String,
    secs: f64,
    /// name -> (requests, lease writes, cpu seconds, rss bytes)
    per: Vec<(String, usize, usize, f64, u64)>,
    leader_after: Option<String>,
}

async fn steady(c: &Cluster, window: Duration, settle_within: Duration) -> anyhow::Result<Steady> {
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

/// wrk's figures: requests/s, p50, p99 (ms), errors line if any.
#[derive(Debug, Default)]
struct Wrk {
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    non2xx: u64,
    socket_errors: String,
    raw: String,
}

fn wrk_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, mult) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60_000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * mult)
}

fn parse_wrk(out: &str) -> Wrk {
    let mut w = Wrk {
        raw: out.to_string(),
        ..Wrk::default()
    };
    for line in out.lines() {
        let t = line.trim();
        let words: Vec<&str> = t.split_whitespace().collect();
        match words.as_slice() {
            ["Requests/sec:", v] => w.rps = v.parse().unwrap_or(0.0),
            ["50%", v] => w.p50_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["99%", v] => w.p99_ms = wrk_ms(v).unwrap_or(f64::NAN),
            ["Latency", _avg, _stdev, mx, ..] => w.max_ms = wrk_ms(mx).unwrap_or(f64::NAN),
            ["Non-2xx", "or", "3xx", "responses:", n] => w.non2xx = n.parse().unwrap_or(0),
            _ if t.starts_with("Socket errors:") => w.socket_errors = t.to_string(),
            _ => {}
        }
    }
    w
}

async fn run_wrk(cfg: &Config, addr: std::net::SocketAddr) -> Result<Wrk, String> {
    let out = Command::new("wrk")
        .arg(format!("-t{}", cfg.wrk_threads))
        .arg(format!("-c{}", cfg.wrk_connections))
        .arg(format!("-d{}s", cfg.wrk.as_secs().max(1)))
        .arg("--latency")
        .arg(format!("http://{addr}/leader"))
        .output()
        .await
        .map_err(|e| format!("wrk not run ({e}; apt-get install -y wrk)"))?;
    if !out.status.success() {
        return Err(format!(
            "wrk failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(parse_wrk(&String::from_utf8_lossy(&out.stdout)))
}

/// Everything measured for one elector.
#[derive(Default)]
struct ElectorResult {
    settings: String,
    error: Option<String>,
    first_election_ms: Option<f64>,
    crash: Vec<Failover>,
    graceful: Vec<Failover>,
    steady: Option<Steady>,
    wrk: Option<Result<Wrk, String>>,
    binary: Option<(String, u64)>,
    violations: Vec<String>,
}

async fn bench_elector(cfg: &Config, launcher: Launcher, r: &mut ElectorResult) {
    r.settings = launcher.settings();
    let (d, _, _) = launcher.timing;
    let within = d * 3 + Duration::from_secs(15);
    let elector = launcher.elector;
    let started = Instant::now();
    let mut c = match Cluster::start(launcher, 3, Duration::from_millis(10)).await {
        Ok(c) => c,
        Err(e) => {
            r.error = Some(format!("{e:#}"));
            return;
        }
    };
    let result: anyhow::Result<()> = async {
        c.settle(within).await?;
        r.first_election_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
        eprintln!(
            "compare: {}: steady window {:?}",
            elector.name(),
            cfg.steady
        );
        let s = steady(&c, cfg.steady, within).await?;
        if elector == Elector::Leaderd && !cfg.wrk.is_zero() {
            let leader = c.settle(within).await?;
            let addr = c.cands.iter().find(|x| x.name == leader).map(|x| x.addr);
            if let Some(addr) = addr {
                eprintln!("compare: wrk on {leader}'s /leader for {:?}", cfg.wrk);
                c.pause();
                r.wrk = Some(run_wrk(cfg, addr).await);
                c.resume();
            }
        }
        r.steady = Some(s);
        for i in 0..cfg.trials {
            eprintln!("compare: {}: kill -9 trial {}", elector.name(), i + 1);
            let f = failover(&mut c, false, within, true).await?;
            eprintln!("compare:   {} -> {} in {:.0} ms", f.from, f.to, f.ms);
            r.crash.push(f);
        }
        for i in 0..cfg.trials {
            eprintln!("compare: {}: SIGTERM trial {}", elector.name(), i + 1);
            let f = failover(&mut c, true, within, true).await?;
            eprintln!("compare:   {} -> {} in {:.0} ms", f.from, f.to, f.ms);
            r.graceful.push(f);
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        eprintln!("compare: {}: {e:#}", elector.name());
        for x in &c.cands {
            eprintln!("----- log of {} (last 20 lines) -----", x.name);
            let logs = x.logs();
            for l in logs.iter().skip(logs.len().saturating_sub(20)) {
                eprintln!("{l}");
            }
        }
        r.error = Some(format!("{e:#}"));
    }
    r.violations = c.stop().await;
}

/// Scale: many leaderd candidates on one lease.
struct Scale {
    n: usize,
    election_ms: f64,
    crash: Vec<Failover>,
    steady_rps: f64,
    steady_secs: f64,
    violations: Vec<String>,
    error: Option<String>,
}

async fn bench_scale(cfg: &Config, launcher: Launcher) -> Scale {
    let n = cfg.scale;
    let (d, _, p) = launcher.timing;
    let mut out = Scale {
        n,
        election_ms: f64::NAN,
        crash: vec![],
        steady_rps: f64::NAN,
        steady_secs: 0.0,
        violations: vec![],
        error: None,
    };
    eprintln!("compare: scale: starting {n} leaderd candidates");
    let started = Instant::now();
    let mut c = match Cluster::start(launcher, n, Duration::from_millis(50)).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    let within = d * 3 + Duration::from_secs(30);
    let result: anyhow::Result<()> = async {
        c.settle(within).await?;
        out.election_ms = started.elapsed().as_secs_f64() * 1000.0;
        tokio::time::sleep(p * 3).await;
        c.pause();
        let window = cfg.steady.min(Duration::from_secs(20));
        let t0 = StdInstant::now();
        tokio::time::sleep(window).await;
        let t1 = StdInstant::now();
        c.resume();
        let count = c
            .server
            .requests()
            .iter()
            .filter(|r| r.at >= t0 && r.at <= t1)
            .count();
        out.steady_secs = (t1 - t0).as_secs_f64();
        out.steady_rps = count as f64 / out.steady_secs;
        for i in 0..cfg.scale_trials {
            eprintln!("compare: scale: kill -9 trial {}", i + 1);
            let f = failover(&mut c, false, within, false).await?;
            eprintln!(
                "compare:   {} -> {} in {:.0} ms, {} lease writes",
                f.from, f.to, f.ms, f.writes.0
            );
            out.crash.push(f);
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        out.error = Some(format!("{e:#}"));
    }
    out.violations = c.stop().await;
    out
}

fn file_size(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

fn python_package_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import kubernetes, os; print(os.path.dirname(kubernetes.__file__))",
        ])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

fn machine() -> Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .map(|l| l.split_whitespace().nth(1).unwrap_or("").to_string())
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    json!({"cpu": cpu, "cores": cores, "mem_gib": mem, "kernel": kernel})
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn f0(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("-".into(), |x| format!("{x:.0}"))
}

fn f2(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("-".into(), |x| format!("{x:.2}"))
}

fn f3(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("-".into(), |x| format!("{x:.3}"))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1024.0 * 1024.0)
}

/// The table: one row per figure, a goal column, one column per elector.
struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn print(&self) -> String {
        let cols = self.header.len();
        let mut w = vec![0usize; cols];
        for row in std::iter::once(&self.header).chain(&self.rows) {
            for (i, c) in row.iter().enumerate() {
                w[i] = w[i].max(c.chars().count());
            }
        }
        let line = |row: &Vec<String>| {
            row.iter()
                .enumerate()
                .map(|(i, c)| format!("{c:<width$}", width = w[i]))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        let mut s = line(&self.header);
        s.push('\n');
        s.push_str(
            &w.iter()
                .map(|n| "-".repeat(*n))
                .collect::<Vec<_>>()
                .join("-|-"),
        );
        for r in &self.rows {
            s.push('\n');
            s.push_str(&line(r));
        }
        s
    }
}

fn build_table(cfg: &Config, results: &[(Elector, ElectorResult)], scale: Option<&Scale>) -> Table {
    let d_ms = cfg.d.as_secs_f64() * 1000.0;
    let mut header = vec!["figure".to_string(), "goal (leaderd)".to_string()];
    header.extend(results.iter().map(|(e, _)| e.name().to_string()));
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut row = |name: &str, goal: &str, f: &dyn Fn(Elector, &ElectorResult) -> String| {
        let mut r = vec![name.to_string(), goal.to_string()];
        r.extend(results.iter().map(|(e, x)| {
            if x.settings.is_empty() {
                x.error
                    .clone()
                    .map_or("-".into(), |e| format!("not run: {e}"))
            } else {
                f(*e, x)
            }
        }));
        rows.push(r);
    };
    let ms_of = |v: &[Failover]| v.iter().map(|f| f.ms).collect::<Vec<_>>();
    row(
        "1. crash failover, kill -9 (ms) median / max",
        "",
        &|_, x| {
            let v = ms_of(&x.crash);
            format!("{} / {}", f0(median(&v)), f0(max(&v)))
        },
    );
    row(
        "1. crash failover / lease duration, median / max",
        "",
        &|_, x| {
            let v: Vec<f64> = ms_of(&x.crash).iter().map(|m| m / d_ms).collect();
            format!("{} / {}", f2(median(&v)), f2(max(&v)))
        },
    );
    row(
        "2. graceful handover, SIGTERM (ms) median / max",
        "<= 50 median",
        &|e, x| {
            let v = ms_of(&x.graceful);
            let s = format!("{} / {}", f0(median(&v)), f0(max(&v)));
            match e {
                Elector::Python => format!("{s} (no release: lease runs out)"),
                Elector::Kle => format!("{s} (step_down: 1 s lease)"),
                Elector::Klm => format!("{s} (release; followers sleep to expiry)"),
                Elector::Leaderd => s,
            }
        },
    );
    row("   exit status after SIGTERM", "", &|_, x| {
        let mut v: Vec<String> = x.graceful.iter().filter_map(|f| f.exit.clone()).collect();
        v.dedup();
        if v.is_empty() {
            "-".into()
        } else {
            v.join(", ")
        }
    });
    row(
        "   lease writes per crash transition, median",
        "",
        &|_, x| {
            let v: Vec<f64> = x.crash.iter().map(|f| f.writes.0 as f64).collect();
            f0(median(&v))
        },
    );
    let rate = |x: &ElectorResult, leader: bool, writes: bool| -> Vec<f64> {
        x.steady.as_ref().map_or(vec![], |s| {
            s.per
                .iter()
                .filter(|p| (p.0 == s.leader) == leader)
                .map(|p| (if writes { p.2 } else { p.1 }) as f64 / s.secs)
                .collect()
        })
    };
    row("3. API requests/s, leader", "", &|_, x| {
        f3(max(&rate(x, true, false)))
    });
    row(
        "3. API requests/s per follower (max)",
        "<= 0.05",
        &|_, x| f3(max(&rate(x, false, false))),
    );
    row(
        "   of which Lease writes/s, leader / follower",
        "",
        &|_, x| {
            format!(
                "{} / {}",
                f3(max(&rate(x, true, true))),
                f3(max(&rate(x, false, true)))
            )
        },
    );
    row(
        "4. /leader wrk requests/s",
        ">= 50000",
        &|e, x| match (&x.wrk, e) {
            (Some(Ok(w)), _) => format!("{:.0}", w.rps),
            (Some(Err(m)), _) => m.clone(),
            (None, Elector::Leaderd) => "not run".into(),
            (None, _) => "n/a (no /leader of its own)".into(),
        },
    );
    row(
        "4. /leader wrk latency p50 / p99 / max (ms)",
        "p99 < 1",
        &|_, x| match &x.wrk {
            Some(Ok(w)) => format!(
                "{} / {} / {}",
                f3(Some(w.p50_ms)),
                f3(Some(w.p99_ms)),
                f2(Some(w.max_ms))
            ),
            _ => "-".into(),
        },
    );
    let usage = |x: &ElectorResult, leader: bool| -> Option<(f64, u64)> {
        let s = x.steady.as_ref()?;
        s.per
            .iter()
            .filter(|p| (p.0 == s.leader) == leader)
            .map(|p| (p.3 / s.secs * 1000.0, p.4))
            .reduce(|a, b| (a.0.max(b.0), a.1.max(b.1)))
    };
    row("5. idle RSS (MiB), leader / follower", "<= 10", &|_, x| {
        let l = usage(x, true).map(|u| mib(u.1));
        let f = usage(x, false).map(|u| mib(u.1));
        format!("{} / {}", f2(l), f2(f))
    });
    row(
        "5. idle CPU (ms per s), leader / follower",
        "< 1",
        &|_, x| {
            let l = usage(x, true).map(|u| u.0);
            let f = usage(x, false).map(|u| u.0);
            format!("{} / {}", f3(l), f3(f))
        },
    );
    row("5. binary size (MiB)", "", &|_, x| match &x.binary {
        Some((what, b)) => format!("{:.2} ({what})", mib(*b)),
        None => "-".into(),
    });
    let sc = |f: &dyn Fn(&Scale) -> String| -> Vec<String> {
        results
            .iter()
            .map(|(e, _)| match (e, scale) {
                (Elector::Leaderd, Some(s)) => match &s.error {
                    Some(err) if s.crash.is_empty() => format!("error: {err}"),
                    _ => f(s),
                },
                (Elector::Leaderd, None) => "not run".into(),
                _ => "not run (leaderd only)".into(),
            })
            .collect()
    };
    let n = scale.map_or(cfg.scale, |s| s.n);
    let mut push = |name: String, goal: &str, cells: Vec<String>| {
        let mut r = vec![name, goal.to_string()];
        r.extend(cells);
        rows.push(r);
    };
    push(
        format!("6. scale {n}: crash failover (ms) median / max"),
        "",
        sc(&|s| {
            let v = ms_of(&s.crash);
            format!("{} / {}", f0(median(&v)), f0(max(&v)))
        }),
    );
    push(
        format!("6. scale {n}: lease writes per transition (all / ok / 409)"),
        "",
        sc(&|s| {
            let m = |f: &dyn Fn(&Failover) -> usize| {
                f0(median(
                    &s.crash.iter().map(|x| f(x) as f64).collect::<Vec<_>>(),
                ))
            };
            format!(
                "{} / {} / {}",
                m(&|x| x.writes.0),
                m(&|x| x.writes.1),
                m(&|x| x.writes.2)
            )
        }),
    );
    push(
        format!("6. scale {n}: API requests/s, all candidates"),
        "",
        sc(&|s| f2(Some(s.steady_rps))),
    );
    let mut r = vec![
        "safety violations seen (two leaders, epochs)".to_string(),
        "0".to_string(),
    ];
    r.extend(results.iter().map(|(e, x)| {
        let mut v = x.violations.len();
        if *e == Elector::Leaderd {
            v += scale.map_or(0, |s| s.violations.len());
        }
        match &x.error {
            Some(err) if !x.settings.is_empty() => format!("{v}; error: {err}"),
            _ => v.to_string(),
        }
    }));
    rows.push(r);
    Table { header, rows }
}

fn result_json(e: Elector, x: &ElectorResult) -> Value {
    json!({
        "elector": e.name(),
        "settings": x.settings,
        "error": x.error,
        "first_election_ms": x.first_election_ms,
        "crash": x.crash.iter().map(failover_json).collect::<Vec<_>>(),
        "graceful": x.graceful.iter().map(failover_json).collect::<Vec<_>>(),
        "steady": x.steady.as_ref().map(|s| json!({
            "leader": s.leader, "leader_after": s.leader_after, "secs": s.secs,
            "candidates": s.per.iter().map(|p| json!({"name": p.0, "leader": p.0 == s.leader,
                "requests": p.1, "lease_writes": p.2, "requests_per_s": p.1 as f64 / s.secs,
                "cpu_s": p.3, "cpu_ms_per_s": p.3 / s.secs * 1000.0, "rss_bytes": p.4})).collect::<Vec<_>>(),
        })),
        "wrk": x.wrk.as_ref().map(|w| match w {
            Ok(w) => json!({"requests_per_s": w.rps, "p50_ms": w.p50_ms, "p99_ms": w.p99_ms,
                            "max_ms": w.max_ms, "non_2xx": w.non2xx, "socket_errors": w.socket_errors, "output": w.raw}),
            Err(m) => json!({"error": m}),
        }),
        "binary": x.binary.as_ref().map(|(w, b)| json!({"what": w, "bytes": b})),
        "violations": x.violations,
    })
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = Config::from(args)?;
    let started_wall = SystemTime::now();
    let load_before = loadavg();
    let (d, r, p) = cfg.timing();
    println!(
        "compare: {} run; lease duration {} (renew deadline {}, retry period {}), {} trial(s), 3 candidates, steady window {}, scale {}",
        if cfg.smoke { "smoke" } else { "full" },
        ms(d),
        ms(r),
        ms(p),
        cfg.trials,
        humantime::format_duration(cfg.steady),
        cfg.scale
    );
    let leaderd_bin = PathBuf::from(env!("CARGO_BIN_EXE_leaderd"));
    let mut results: Vec<(Elector, ElectorResult)> = Vec::new();
    for &e in &cfg.electors {
        let mut r = ElectorResult::default();
        let bin = match e {
            Elector::Leaderd => {
                let profile = if leaderd_bin.parent().is_some_and(|d| d.ends_with("release")) {
                    "release, stripped"
                } else {
                    "debug build"
                };
                r.binary = file_size(&leaderd_bin).map(|b| (profile.to_string(), b));
                Ok(leaderd_bin.clone())
            }
            Elector::Python => python_ok().map(|()| {
                r.binary = python_package_dir().map(|d| {
                    (
                        "python, the kubernetes package on disk".to_string(),
                        dir_size(&d),
                    )
                });
                manifest_dir().join("bench/peers/python_peer.py")
            }),
            Elector::Kle | Elector::Klm => {
                let (project, bin) = e.cargo_project().expect("a cargo peer");
                build_peer(&cfg, project, bin)
                    .inspect(|b| {
                        r.binary = file_size(b).map(|s| {
                            let prof = if cfg.peers_release {
                                "runner, release, stripped"
                            } else {
                                "runner, debug"
                            };
                            (prof.to_string(), s)
                        });
                    })
                    .map_err(|e| format!("{e:#}"))
            }
        };
        match bin {
            Ok(bin) => {
                eprintln!("compare: === {} ===", e.name());
                let launcher = Launcher {
                    elector: e,
                    bin,
                    timing: cfg.timing(),
                };
                bench_elector(&cfg, launcher, &mut r).await;
            }
            Err(m) => {
                eprintln!("compare: {}: not run: {m}", e.name());
                r.error = Some(m);
            }
        }
        results.push((e, r));
    }
    let scale = if cfg.scale > 1 && cfg.electors.contains(&Elector::Leaderd) {
        Some(
            bench_scale(
                &cfg,
                Launcher {
                    elector: Elector::Leaderd,
                    bin: leaderd_bin.clone(),
                    timing: cfg.timing(),
                },
            )
            .await,
        )
    } else {
        None
    };
    let table = build_table(&cfg, &results, scale.as_ref());
    let text = table.print();
    println!("\n{text}\n");
    let load_after = loadavg();
    println!(
        "machine: {}; load average before {load_before}, after {load_after}",
        machine()
    );
    for (e, x) in &results {
        for v in x.violations.iter().take(5) {
            println!("VIOLATION ({}): {v}", e.name());
        }
    }
    if let Some(s) = &scale {
        for v in s.violations.iter().take(5) {
            println!("VIOLATION (leaderd x{}): {v}", s.n);
        }
    }
    let doc = json!({
        "date": humantime::format_rfc3339_seconds(started_wall).to_string(),
        "command": std::env::args().collect::<Vec<_>>(),
        "smoke": cfg.smoke,
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_after,
        "python": python_version(),
        "lease_duration_s": d.as_secs(),
        "renew_deadline_ms": r.as_millis() as u64,
        "retry_period_ms": p.as_millis() as u64,
        "trials": cfg.trials,
        "steady_s": cfg.steady.as_secs_f64(),
        "wrk": {"threads": cfg.wrk_threads, "connections": cfg.wrk_connections, "seconds": cfg.wrk.as_secs()},
        "electors": results.iter().map(|(e, x)| result_json(*e, x)).collect::<Vec<_>>(),
        "scale": scale.as_ref().map(|s| json!({
            "candidates": s.n, "election_ms": s.election_ms, "steady_requests_per_s": s.steady_rps,
            "steady_s": s.steady_secs, "crash": s.crash.iter().map(failover_json).collect::<Vec<_>>(),
            "violations": s.violations, "error": s.error,
        })),
        "table": {"header": table.header, "rows": table.rows},
        "table_text": text,
    });
    if let Some(dir) = cfg.json.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(&cfg.json, serde_json::to_string_pretty(&doc)?)
        .with_context(|| format!("writing {}", cfg.json.display()))?;
    println!("JSON: {}", cfg.json.display());
    Ok(())
}

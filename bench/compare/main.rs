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
//! Modules: `electors` (what runs and how it is started), `cluster` (a server and sampled
//! candidates), `steady` (API requests and footprint), `failover` (kill -9 and SIGTERM),
//! `wrk` (`/leader` throughput), `scale` (many candidates on one lease), `report` (table, JSON).
//!
//! With `--with-etcd` (or `--electors etcd,etcd3`) it also runs leaderd with `--backend etcd`
//! against a real etcd that it starts on 127.0.0.1 (`etcd` from PATH, free ports, a temporary
//! data directory; one member, or three for `etcd3`), with the same timing and measurements;
//! its requests are counted by leaderd itself (`leaderd_lease_requests_total`) and at etcd
//! (`etcd.rs`).
//!
//! It prints a table and writes JSON to `<target>/bench/compare.json` (`--json` to choose).
//! Without `--bench` (as `cargo test --benches` runs it) it is the smoke run.

mod cluster;
mod electors;
mod etcd;
mod failover;
mod report;
mod scale;
mod steady;
mod wrk;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{bail, Context as _};
use clap::Parser;
use leaderd_testkit::harness::{runtime, EtcdCluster};
use serde_json::json;
use tokio::time::Instant;

use cluster::Cluster;
use electors::{
    build_peer, dir_size, file_size, ms, python_ok, python_package_dir, python_version, Elector,
    Launcher, ALL,
};
use failover::{failover, failover_json, Failover};
use leaderd_testkit::harness::{loadavg, machine};
use report::{build_table, result_json};
use scale::bench_scale;
use steady::{steady, Steady};
use wrk::{run_wrk, Wrk};

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
    /// Retry period for every elector that has one [2D/15]; Python's is at least 1 s anyway.
    #[arg(long, value_parser = humantime::parse_duration)]
    retry_period: Option<Duration>,
    /// Trials of each failover kind [bench: 5, smoke: 1].
    #[arg(long)]
    trials: Option<usize>,
    /// A short run (seconds) that asserts nothing but that the table is produced.
    #[arg(long)]
    smoke: bool,
    /// Comma-separated: leaderd, python, kube-leader-election, kube-lease-manager [all].
    #[arg(long, value_delimiter = ',')]
    electors: Option<Vec<String>>,
    /// Also the etcd columns: leaderd `--backend etcd` on a real etcd started here (`etcd`
    /// from PATH), one member (`etcd`) and three (`etcd3`); appended to --electors or to the
    /// default four. `--electors etcd,etcd3` runs only these.
    #[arg(long)]
    with_etcd: bool,
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
    /// Run this leaderd binary instead of the one cargo built (e.g. a copy, safe from rebuilds
    /// of a shared target dir during a long run).
    #[arg(long)]
    leaderd: Option<PathBuf>,
    /// Where to write the JSON results [<target>/bench/compare.json].
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    cargo: runtime::BenchArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.cargo.filtered_out("compare") {
        return ExitCode::SUCCESS;
    }
    runtime::main("compare", 2, run(args))
}

/// The settings after defaults.
struct Config {
    smoke: bool,
    d: Duration,
    p: Option<Duration>,
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
    leaderd: Option<PathBuf>,
}

impl Config {
    fn from(a: Args) -> anyhow::Result<Config> {
        let smoke = a.smoke || !a.cargo.bench;
        let pick = |v: Option<Duration>, bench: u64, smoke_v: u64| {
            v.unwrap_or(Duration::from_secs(if smoke { smoke_v } else { bench }))
        };
        let d = pick(a.lease_duration, 15, 2);
        if d.subsec_nanos() != 0 || d < Duration::from_secs(2) {
            bail!("--lease-duration must be whole seconds, at least 2s (the Lease records whole seconds; Python needs 2s)");
        }
        if a.retry_period
            .is_some_and(|p| p.is_zero() || p >= d * 2 / 3)
        {
            bail!("--retry-period must be above 0 and below the renew deadline 2D/3");
        }
        let trials = a.trials.unwrap_or(if smoke { 1 } else { 5 }).max(1);
        let mut electors: Vec<Elector> = match a.electors {
            None => ALL.to_vec(),
            Some(list) => list
                .iter()
                .filter(|s| !s.trim().is_empty())
                .map(|s| Elector::parse(s))
                .collect::<anyhow::Result<_>>()?,
        };
        if a.with_etcd {
            for e in [Elector::Etcd, Elector::Etcd3] {
                if !electors.contains(&e) {
                    electors.push(e);
                }
            }
        }
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
            p: a.retry_period,
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
            leaderd: a.leaderd,
        })
    }

    /// Renew deadline and retry period for lease duration `d`: leaderd's 15/10/2 ratios, unless
    /// `--retry-period` says otherwise.
    fn timing(&self) -> (Duration, Duration, Duration) {
        (self.d, self.d * 2 / 3, self.p.unwrap_or(self.d * 2 / 15))
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

async fn bench_elector(
    cfg: &Config,
    launcher: Launcher,
    r: &mut ElectorResult,
    etcd: Option<&EtcdCluster>,
) {
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
        let s = steady(&c, cfg.steady, within, etcd).await?;
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
            let f = failover(&mut c, false, within, true, etcd).await?;
            eprintln!("compare:   {} -> {} in {:.0} ms", f.from, f.to, f.ms);
            r.crash.push(f);
        }
        for i in 0..cfg.trials {
            eprintln!("compare: {}: SIGTERM trial {}", elector.name(), i + 1);
            let f = failover(&mut c, true, within, true, etcd).await?;
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
        if let Some(x) = etcd {
            eprintln!("{}", x.log_tails(20));
        }
        r.error = Some(format!("{e:#}"));
    }
    r.violations = c.stop().await;
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
    let leaderd_bin = cfg
        .leaderd
        .clone()
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_leaderd")));
    if cfg.leaderd.is_some() {
        println!("compare: leaderd binary {}", leaderd_bin.display());
    }
    let leaderd_profile = if cfg.leaderd.is_some() {
        "given by --leaderd"
    } else if leaderd_bin.parent().is_some_and(|d| d.ends_with("release")) {
        "release, stripped"
    } else {
        "debug build"
    };
    let mut results: Vec<(Elector, ElectorResult)> = Vec::new();
    for &e in &cfg.electors {
        let mut r = ElectorResult::default();
        let mut etcd: Option<EtcdCluster> = None;
        let bin = match e {
            Elector::Etcd | Elector::Etcd3 => {
                let n = e.etcd_members();
                eprintln!("compare: starting etcd ({n} member(s))");
                match EtcdCluster::start(n).await {
                    Ok(x) => {
                        eprintln!("compare: etcd at {}", x.endpoints());
                        etcd = Some(x);
                        r.binary = file_size(&leaderd_bin)
                            .map(|b| (format!("leaderd {leaderd_profile}"), b));
                        Ok(leaderd_bin.clone())
                    }
                    Err(err) => Err(format!("starting etcd: {err}")),
                }
            }
            Elector::Leaderd => {
                r.binary = file_size(&leaderd_bin).map(|b| (leaderd_profile.to_string(), b));
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
                    etcd_endpoints: etcd.as_ref().map(EtcdCluster::endpoints),
                };
                bench_elector(&cfg, launcher, &mut r, etcd.as_ref()).await;
            }
            Err(m) => {
                eprintln!("compare: {}: not run: {m}", e.name());
                r.error = Some(m);
            }
        }
        if let Some(mut x) = etcd {
            // SIGTERM each member by its pid (SIGKILL after 10 s); the data dir goes with `x`.
            for i in 0..x.len() {
                x.stop(i).await;
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
                    etcd_endpoints: None,
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
        "leaderd": leaderd_bin.display().to_string(),
        "smoke": cfg.smoke,
        "machine": machine(),
        "load_before": load_before,
        "load_after": load_after,
        "python": python_version(),
        "etcd": cfg.electors.iter().any(|e| e.etcd_members() > 0).then(etcd::etcd_version),
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

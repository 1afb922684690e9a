//! Shard groups at scale: `leaderd --lease-name GROUP --shards N` on M replicas, beside the
//! lease-per-shard layout (knative style: every replica runs one election per bucket Lease),
//! on the project's Lease API test server (in this process) in one run.
//!
//! ```sh
//! cargo bench --bench shards                                  # 1,024 shards x 16 replicas, 15s/10s/2s
//! cargo bench --bench shards -- --shards 256 --replicas 8 --timing 3s/2s/500ms
//! cargo bench --bench shards -- --quick                       # 64 x 4, 3s/2s/250ms: the CI smoke
//! cargo test --bench shards                                   # the same smoke on the debug build
//! ```
//!
//! 1. **Shard group** (`group.rs`): M release leaderd processes (the binary cargo builds for
//!    benches, or `--leaderd`) with `--shards N`, all started at once. Measured: time until
//!    balanced (every replica owns ⌊N/M⌋ or ⌈N/M⌉, every shard owned once); a steady window
//!    (`--steady`, samplers paused): Lease writes (`create` + `update`) and all API requests at
//!    the server, CPU and RSS of every replica; a join (replica M+1): time to balance and shards
//!    moved; a graceful leave (SIGTERM a non-coordinator) and a crash (kill -9 another one): time
//!    until its shards are owned again, until balanced, shards moved. Every `/shards` is sampled
//!    (`--sample-period`) and checked (`ShardSampler::check`), the member commits are checked
//!    (`CommitChecker`), and the coordinators' `/leader` answers too (`harness::check`).
//! 2. **Lease per shard** (`buckets.rs`, `peer.rs`): M processes of this binary
//!    (`knative-peer`), each running one `leaderd::election::Elector` over a `KubeLeaseStore` per
//!    bucket Lease (B = `--buckets`, default N), on a fresh test server. Measured the same way:
//!    time until every bucket is led and the distribution (there is no balancing), the steady
//!    window, a join (what the newcomer leads after two renew intervals), SIGTERM and kill -9
//!    (time until every bucket of the victim is led again). If an attempt cannot keep up on this
//!    machine (not every bucket led within 4D + 30 s of the start, fewer than 80 % of the
//!    expected renewals or any leader change in the steady window, a failover beyond D + P +
//!    3 s), it is reported and the next one runs with fewer buckets (3/4, then 2/3 of that:
//!    1024, 768, 512, 384, ...), down to `--min-buckets`; the table says what was attempted and
//!    what was measured.
//!
//! Output: a table on stdout and JSON in `<target>/bench/shards.json` (`--json`); with `--logs`
//! (or after a failure) every process's log in `<target>/bench/shards-logs/`. Exit status 1 on
//! any safety violation (the run stops there), a shard-group step that did not complete, or a
//! lease-per-shard layout that kept up at no size (in the quick run: that never had every bucket
//! led). Without `--bench` (as `cargo test --bench shards` runs it) it is the quick run.

mod buckets;
mod common;
mod group;
mod peer;

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use leaderd_testkit::harness::{runtime, Candidate};
use serde_json::json;
use tokio::time::Instant;

use buckets::BucketsResult;
use common::{min_mean_max, timing_str};
use group::GroupResult;
use leaderd_testkit::harness::{loadavg, machine};

pub const NS: &str = "default";

/// `cargo bench --bench shards -- [options]`
#[derive(Parser, Debug)]
#[command(
    name = "shards",
    about = "A leaderd shard group (--shards N) beside one Lease per shard, at N shards x M replicas"
)]
struct Args {
    /// Shards of the group (N) [bench: 1024, quick: 64].
    #[arg(long)]
    shards: Option<u32>,
    /// Replicas started at once (M; one more joins later) [bench: 16, quick: 4].
    #[arg(long)]
    replicas: Option<usize>,
    /// Lease duration / renew deadline / retry period [bench: 15s/10s/2s, quick: 3s/2s/250ms].
    #[arg(long)]
    timing: Option<String>,
    /// The steady window [bench: 60s (every watch is re-opened once a minute), quick: 5s].
    #[arg(long, value_parser = humantime::parse_duration)]
    steady: Option<Duration>,
    /// How often every replica's /shards is polled [bench: 100ms, quick: 50ms].
    #[arg(long, value_parser = humantime::parse_duration)]
    sample_period: Option<Duration>,
    /// Buckets of the lease-per-shard layout [default: --shards].
    #[arg(long)]
    buckets: Option<u32>,
    /// Fewest buckets to fall back to when an attempt cannot keep up.
    #[arg(long, default_value_t = 64)]
    min_buckets: u32,
    /// Which layouts to run: group, buckets.
    #[arg(long, value_delimiter = ',', default_value = "group,buckets")]
    layouts: Vec<String>,
    /// The quick run (the CI smoke): 64 shards x 4 replicas at 3s/2s/250ms, 5 s steady window.
    #[arg(long)]
    quick: bool,
    /// Seed of the choice of the replicas that leave and crash [default: random, printed].
    #[arg(long)]
    seed: Option<u64>,
    /// Run this leaderd binary instead of the one cargo built (a copy is safe from rebuilds).
    #[arg(long)]
    leaderd: Option<PathBuf>,
    /// Where to write the JSON [bench: <target>/bench/shards.json, quick: nowhere].
    #[arg(long)]
    json: Option<PathBuf>,
    /// Write every process's log to <target>/bench/shards-logs/ (always done after a failure).
    #[arg(long)]
    logs: bool,
    #[command(flatten)]
    cargo: runtime::BenchArgs,
}

/// The settings after defaults.
pub struct Config {
    pub shards: u32,
    pub replicas: usize,
    pub timing: (Duration, Duration, Duration),
    pub steady: Duration,
    pub sample_period: Duration,
    pub leader_sample_period: Duration,
    pub buckets: u32,
    pub min_buckets: u32,
    pub group: bool,
    pub knative: bool,
    pub quick: bool,
    pub seed: u64,
    pub leaderd: PathBuf,
    pub json: Option<PathBuf>,
    pub logs: Option<PathBuf>,
}

fn parse_timing(s: &str) -> anyhow::Result<(Duration, Duration, Duration)> {
    let parts: Vec<Duration> = s
        .split('/')
        .map(|x| humantime::parse_duration(x.trim()))
        .collect::<Result<_, _>>()
        .with_context(|| format!("--timing {s:?}: want D/R/P, e.g. 15s/10s/2s"))?;
    match parts[..] {
        [d, r, p] if d > r && r > p && !p.is_zero() => Ok((d, r, p)),
        _ => bail!("--timing {s:?}: want D/R/P with D > R > P > 0, e.g. 15s/10s/2s"),
    }
}

/// `$CARGO_TARGET_DIR/bench`, else `target/bench` in the package.
fn bench_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
        .join("bench")
}

impl Config {
    fn from(a: Args) -> anyhow::Result<Config> {
        let quick = a.quick || !a.cargo.bench;
        let shards = a.shards.unwrap_or(if quick { 64 } else { 1024 });
        let replicas = a.replicas.unwrap_or(if quick { 4 } else { 16 });
        let timing = parse_timing(a.timing.as_deref().unwrap_or(if quick {
            "3s/2s/250ms"
        } else {
            "15s/10s/2s"
        }))?;
        if replicas < 3 {
            bail!(
                "--replicas must be at least 3 (one leaves and one crashes; the coordinator stays)"
            );
        }
        if shards == 0 || shards > leaderd::shards::record::MAX_SHARDS {
            bail!(
                "--shards must be 1 to {}",
                leaderd::shards::record::MAX_SHARDS
            );
        }
        let mut group = false;
        let mut knative = false;
        for l in &a.layouts {
            match l.trim() {
                "group" => group = true,
                "buckets" => knative = true,
                other => bail!("unknown layout {other:?} (group, buckets)"),
            }
        }
        let ms = |x: u64| Duration::from_millis(x);
        let sample_period = a
            .sample_period
            .unwrap_or(if quick { ms(50) } else { ms(100) });
        Ok(Config {
            shards,
            replicas,
            timing,
            steady: a.steady.unwrap_or(if quick {
                Duration::from_secs(5)
            } else {
                Duration::from_secs(60)
            }),
            sample_period,
            leader_sample_period: sample_period.max(ms(50)),
            buckets: a.buckets.unwrap_or(shards),
            min_buckets: a.min_buckets.max(1),
            group,
            knative,
            quick,
            seed: a.seed.unwrap_or_else(|| fastrand::u64(..)),
            leaderd: a
                .leaderd
                .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_leaderd"))),
            json: a
                .json
                .or_else(|| (!quick).then(|| bench_dir().join("shards.json"))),
            logs: a.logs.then(|| bench_dir().join("shards-logs")),
        })
    }
}

/// One of `from`, chosen by `rng`.
pub fn pick(rng: &mut fastrand::Rng, from: &[String]) -> Option<String> {
    (!from.is_empty()).then(|| from[rng.usize(..from.len())].clone())
}

/// Write every process's log to `<target>/bench/shards-logs/<part>/NAME.log`; the directory.
pub fn dump_logs(cfg: &Config, part: &str, cands: &[Candidate]) -> Option<String> {
    let dir = cfg
        .logs
        .clone()
        .unwrap_or_else(|| bench_dir().join("shards-logs"))
        .join(part);
    let write = || -> std::io::Result<()> {
        std::fs::create_dir_all(&dir)?;
        for c in cands {
            let mut f = std::fs::File::create(dir.join(format!("{}.log", c.name)))?;
            for l in c.logs() {
                writeln!(f, "{l}")?;
            }
        }
        Ok(())
    };
    match write() {
        Ok(()) => Some(dir.display().to_string()),
        Err(e) => {
            eprintln!("shards: cannot write the logs to {}: {e}", dir.display());
            None
        }
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    if argv.get(1).map(String::as_str) == Some(peer::PEER_ARG) {
        return peer::main(argv[1..].to_vec());
    }
    let args = Args::parse();
    if args.cargo.filtered_out("shards") {
        return ExitCode::SUCCESS;
    }
    runtime::main("shards bench", 2, run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = Config::from(args)?;
    let started = Instant::now();
    let wall = SystemTime::now();
    let load_before = loadavg();
    // The bucket layout holds one watch per bucket and peer open on the test server (in this
    // process), and every peer one per bucket: raise the open-files limit for both.
    let need = (cfg.buckets as u64) * (cfg.replicas as u64 + 1) + 1024;
    let nofile = leaderd_testkit::harness::raise_nofile(need).context("raising RLIMIT_NOFILE")?;
    println!(
        "shards: {} shards x {} replicas, timing {}, steady {:?}, /shards sampled every {:?}, seed {}, leaderd {}{}",
        cfg.shards,
        cfg.replicas,
        timing_str(cfg.timing),
        cfg.steady,
        cfg.sample_period,
        cfg.seed,
        cfg.leaderd.display(),
        if cfg.quick { " (quick)" } else { "" }
    );
    if nofile < need {
        println!(
            "shards: RLIMIT_NOFILE is {nofile} (hard limit), {need} wanted: the bucket layout may run out of files"
        );
    }

    let mut group_res: Option<GroupResult> = None;
    if cfg.group {
        let r = group::run(&cfg).await?;
        if let Some(v) = r.violation() {
            let logs = dump_logs_note(&r.logs);
            bail!(
                "SAFETY VIOLATION in the shard group (seed {}): {v}{logs}",
                cfg.seed
            );
        }
        group_res = Some(r);
    }

    let mut attempts: Vec<BucketsResult> = Vec::new();
    if cfg.knative {
        let mut b = cfg.buckets;
        loop {
            let r = buckets::run(&cfg, b).await?;
            if let Some(v) = r.violation() {
                let logs = dump_logs_note(&r.logs);
                bail!(
                    "SAFETY VIOLATION in the lease-per-shard layout at {b} buckets (seed {}): {v}{logs}",
                    cfg.seed
                );
            }
            let ok = r.overwhelmed.is_none();
            attempts.push(r);
            // Fewer buckets: 3/4, then 2/3 of that (1024, 768, 512, 384, 256, ...).
            let next = if attempts.len() % 2 == 1 {
                b * 3 / 4
            } else {
                b * 2 / 3
            };
            if ok || next < cfg.min_buckets || next == b {
                break;
            }
            b = next;
            println!("shards: buckets: trying {b} buckets");
        }
    }

    let table = report_table(&cfg, group_res.as_ref(), &attempts);
    println!("\n{table}");
    let load_after = loadavg();
    println!(
        "shards: {:.0} s in all; load average {load_before} -> {load_after}",
        started.elapsed().as_secs_f64()
    );
    if let Some(path) = &cfg.json {
        let doc = json!({
            "when": humantime::format_rfc3339_seconds(wall).to_string(),
            "machine": machine(),
            "load_before": load_before,
            "load_after": load_after,
            "seconds": started.elapsed().as_secs_f64(),
            "settings": {
                "shards": cfg.shards,
                "replicas": cfg.replicas,
                "timing": timing_str(cfg.timing),
                "steady_s": cfg.steady.as_secs_f64(),
                "sample_period_ms": cfg.sample_period.as_millis() as u64,
                "buckets_attempted": cfg.buckets,
                "seed": cfg.seed,
                "leaderd": cfg.leaderd.display().to_string(),
                "quick": cfg.quick,
            },
            "group": group_res.as_ref().map(GroupResult::json),
            "buckets": attempts.iter().map(BucketsResult::json).collect::<Vec<_>>(),
            "table": table,
        });
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
            .with_context(|| format!("writing {}", path.display()))?;
        println!("shards: JSON in {}", path.display());
    }
    if let Some(e) = group_res.as_ref().and_then(|g| g.error.as_ref()) {
        return Err(anyhow!("the shard group did not complete: {e}"));
    }
    // The quick run (CI) asserts no timings: there the lease-per-shard layout only has to get
    // every bucket led once; a steady window or failover that misses its bound on a loaded
    // machine is reported, not fatal.
    let usable = |a: &BucketsResult| a.overwhelmed.is_none() || (cfg.quick && a.cold_ms.is_some());
    if cfg.knative && !attempts.iter().any(usable) {
        return Err(anyhow!(
            "the lease-per-shard layout did not keep up at any size down to {} buckets",
            cfg.min_buckets
        ));
    }
    Ok(())
}

fn dump_logs_note(logs: &Option<String>) -> String {
    logs.as_ref()
        .map_or(String::new(), |d| format!("\nlogs in {d}"))
}

fn secs(v: Option<f64>) -> String {
    v.filter(|x| x.is_finite())
        .map_or("-".into(), |x| format!("{:.2} s", x / 1000.0))
}

fn mib(kib: f64) -> String {
    format!("{:.1}", kib / 1024.0)
}

/// The per-replica footprint rows of a steady window: VmRSS, RssAnon (MiB), CPU (ms/s), as
/// mean / max.
fn footprint(st: &common::Steady) -> (String, String, String) {
    let rss: Vec<f64> = st.procs.iter().map(|p| p.rss_kib as f64).collect();
    let anon: Vec<f64> = st.procs.iter().map(|p| p.anon_kib as f64).collect();
    let cpu: Vec<f64> = st.procs.iter().map(|p| p.cpu_ms_per_s).collect();
    let mm = |v: &[f64], f: &dyn Fn(f64) -> String| {
        min_mean_max(v).map_or("-".into(), |(_, mean, max)| {
            format!("{} / {}", f(mean), f(max))
        })
    };
    (
        mm(&rss, &mib),
        mm(&anon, &mib),
        mm(&cpu, &|x| format!("{x:.2}")),
    )
}

fn report_table(cfg: &Config, g: Option<&GroupResult>, attempts: &[BucketsResult]) -> String {
    let (_, r, p) = cfg.timing;
    let ri = r * 3 / 5;
    let k = attempts
        .iter()
        .find(|a| a.overwhelmed.is_none())
        .or(attempts.last());
    let mut rows: Vec<(String, String, String)> = Vec::new();
    let mut row = |a: &str, b: String, c: String| rows.push((a.to_owned(), b, c));

    let gsize = g.map_or("not run".into(), |g| {
        format!("{} x {} shards", g.replicas, g.shards)
    });
    let failed: Vec<String> = attempts
        .iter()
        .filter(|a| a.overwhelmed.is_some())
        .map(|a| a.buckets.to_string())
        .collect();
    let ksize = k.map_or("not run".into(), |k| {
        let measured = format!("{} x {} buckets", k.replicas, k.buckets);
        if k.overwhelmed.is_some() {
            format!("none: did not keep up at {} buckets", failed.join(", "))
        } else if failed.is_empty() {
            measured
        } else {
            format!(
                "{measured} (attempted {} x {}; did not keep up at {} buckets)",
                cfg.replicas,
                cfg.buckets,
                failed.join(", ")
            )
        }
    });
    row("size (replicas x shards)", gsize, ksize);
    row(
        "timing D / R / P",
        timing_str(cfg.timing),
        timing_str(cfg.timing),
    );
    row(
        "1. cold start: balanced / every bucket led",
        g.map_or("-".into(), |g| {
            format!(
                "{} ({}; coordinator after {})",
                secs(g.cold_ms),
                each(g.shards, g.replicas),
                secs(g.coordinator_ms)
            )
        }),
        k.map_or("-".into(), |k| {
            let d = &k.distribution;
            let (min, max) = (d.iter().min(), d.iter().max());
            match (min, max) {
                (Some(min), Some(max)) => format!(
                    "{} (no balancing: {min} to {max} buckets per replica, ideal {})",
                    secs(k.cold_ms),
                    each(k.buckets, k.replicas)
                ),
                _ => secs(k.cold_ms),
            }
        }),
    );
    let mv = |m: &Option<group::Move>| -> Option<group::Move> { m.clone() };
    row(
        "2. join (replica M+1): balanced, shards moved",
        g.and_then(|g| mv(&g.join)).map_or("-".into(), |m| {
            format!(
                "{}, {} moved (fewest possible {}; it owns {})",
                secs(m.balanced_ms),
                m.moved,
                m.min_moves,
                m.its_shards
            )
        }),
        k.and_then(|k| mv(&k.join).map(|m| (m, k.join_wait_ms)))
            .map_or("-".into(), |(m, w)| {
                format!(
                    "leads {} after {} ({} moved): no rebalancing",
                    m.its_shards,
                    secs(Some(w)),
                    m.moved
                )
            }),
    );
    let leave = |m: Option<group::Move>, balanced: bool| {
        m.map_or("-".into(), |m| {
            let b = if balanced {
                format!(", balanced {}", secs(m.balanced_ms))
            } else {
                String::new()
            };
            format!(
                "{}{b}; {} moved (it owned {})",
                secs(m.owned_again_ms),
                m.moved,
                m.its_shards
            )
        })
    };
    row(
        "3. graceful leave (SIGTERM): its shards owned again",
        leave(g.and_then(|g| mv(&g.leave)), true),
        leave(k.and_then(|k| mv(&k.leave)), false),
    );
    row(
        "4. crash (kill -9): its shards owned again",
        leave(g.and_then(|g| mv(&g.crash)), true),
        leave(k.and_then(|k| mv(&k.crash)), false),
    );
    let gs = g.and_then(|g| g.steady.as_ref().map(|s| (s, g.replicas)));
    let ks = k.and_then(|k| k.steady.as_ref().map(|s| (s, k.buckets)));
    row(
        &format!(
            "5. Lease writes/s, steady ({:.0} s)",
            cfg.steady.as_secs_f64()
        ),
        gs.map_or("-".into(), |(s, m)| {
            format!(
                "{:.2} (expected (M+1)/(3R/5) = {:.2})",
                s.writes_per_s(),
                (m + 1) as f64 / ri.as_secs_f64()
            )
        }),
        ks.map_or("-".into(), |(s, b)| {
            format!(
                "{:.1} (expected B/(3R/5) = {:.1})",
                s.writes_per_s(),
                b as f64 / ri.as_secs_f64()
            )
        }),
    );
    row(
        "5. Lease writes per retry period",
        gs.map_or("-".into(), |(s, m)| {
            format!(
                "{:.2} (budget M+1 = {})",
                s.writes_per_s() * p.as_secs_f64(),
                m + 1
            )
        }),
        ks.map_or("-".into(), |(s, b)| {
            format!(
                "{:.0} (client-go, renewing every P: {b})",
                s.writes_per_s() * p.as_secs_f64()
            )
        }),
    );
    let reqs = |s: &common::Steady| {
        let verbs: Vec<String> = s
            .by_verb
            .iter()
            .map(|(v, n)| format!("{v} {:.2}", *n as f64 / s.secs))
            .collect();
        format!("{:.2} ({})", s.requests as f64 / s.secs, verbs.join(", "))
    };
    row(
        "5. API requests/s, all verbs",
        gs.map_or("-".into(), |(s, _)| reqs(s)),
        ks.map_or("-".into(), |(s, _)| reqs(s)),
    );
    let fp_g = gs.map(|(s, _)| footprint(s));
    let fp_k = ks.map(|(s, _)| footprint(s));
    let pick_fp = |f: &Option<(String, String, String)>, i: usize| {
        f.as_ref().map_or("-".into(), |f| match i {
            0 => f.0.clone(),
            1 => f.1.clone(),
            _ => f.2.clone(),
        })
    };
    row(
        "5. Leases; connections open at the test server",
        gs.map_or("-".into(), |(s, _)| {
            format!("{}; {}", s.leases, s.server_conns)
        }),
        ks.map_or("-".into(), |(s, _)| {
            format!("{}; {}", s.leases, s.server_conns)
        }),
    );
    row(
        "6. VmRSS per replica, MiB, mean / max",
        pick_fp(&fp_g, 0),
        pick_fp(&fp_k, 0),
    );
    row(
        "6. RssAnon per replica, MiB, mean / max",
        pick_fp(&fp_g, 1),
        pick_fp(&fp_k, 1),
    );
    row(
        "6. CPU per replica, ms/s, mean / max",
        pick_fp(&fp_g, 2),
        pick_fp(&fp_k, 2),
    );
    row(
        "6. bench process (test server) CPU, ms/s",
        gs.map_or("-".into(), |(s, _)| format!("{:.1}", s.server_cpu_ms_per_s)),
        ks.map_or("-".into(), |(s, _)| format!("{:.1}", s.server_cpu_ms_per_s)),
    );
    row(
        "7. safety: /shards sampled tenures, violations",
        g.map_or("-".into(), |g| match &g.tenures {
            Some(Ok(n)) => format!("{n} tenures, 0 violations"),
            Some(Err(e)) => format!("VIOLATION: {e}"),
            None => "-".into(),
        }),
        k.map_or("-".into(), |k| match &k.tenures {
            Some(Ok(n)) => format!("{n} tenures, 0 violations"),
            Some(Err(e)) => format!("VIOLATION: {e}"),
            None => "-".into(),
        }),
    );
    row(
        "7. safety: commit log (member records), coordinators",
        g.map_or("-".into(), |g| {
            let commits = match &g.commits {
                Some(Ok(n)) => format!("{n} member commits, 0 violations"),
                Some(Err(e)) => format!("{} VIOLATIONS", e.len()),
                None => "-".into(),
            };
            format!(
                "{commits}; coordinator: {} violations in {} /leader samples",
                g.coordinator_violations.len(),
                g.leader_samples
            )
        }),
        "n/a (no shared record)".into(),
    );
    if let Some(e) = g.and_then(|g| g.error.as_ref()) {
        row("shard group FAILED", e.clone(), String::new());
    }
    for a in attempts.iter().filter(|a| a.overwhelmed.is_some()) {
        row(
            &format!("lease per shard at {} buckets", a.buckets),
            String::new(),
            format!(
                "did not keep up: {}",
                a.overwhelmed
                    .as_deref()
                    .unwrap_or("")
                    .split("; per replica")
                    .next()
                    .unwrap_or("")
            ),
        );
    }

    let heads = (
        "figure".to_owned(),
        "shard group (leaderd --shards)".to_owned(),
        "lease per shard (knative style)".to_owned(),
    );
    let w0 = rows.iter().map(|r| r.0.len()).max().unwrap_or(0).max(6);
    for r in &mut rows {
        r.1 = one_line(&r.1);
    }
    let w1 = rows
        .iter()
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0)
        .max(heads.1.len());
    let mut out = format!("{:w0$} | {:w1$} | {}\n", heads.0, heads.1, heads.2);
    out.push_str(&format!(
        "{}-|-{}-|-{}\n",
        "-".repeat(w0),
        "-".repeat(w1),
        "-".repeat(heads.2.len())
    ));
    for (a, b, c) in rows {
        out.push_str(&format!("{a:w0$} | {b:w1$} | {}\n", one_line(&c)));
    }
    out
}

/// A cell on one line, at most 300 characters (the JSON has everything).
fn one_line(s: &str) -> String {
    let flat = s
        .split('\n')
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ");
    if flat.chars().count() > 300 {
        format!("{}...", flat.chars().take(300).collect::<String>())
    } else {
        flat
    }
}

/// "64 each" or "60 or 61 each".
fn each(n: u32, m: usize) -> String {
    let m = m as u32;
    if m == 0 {
        return "-".into();
    }
    let (lo, hi) = (n / m, n.div_ceil(m));
    if lo == hi {
        format!("{lo} each")
    } else {
        format!("{lo} or {hi} each")
    }
}

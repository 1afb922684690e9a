//! What N open `GET /leader/stream` (Server-Sent Events) connections cost one leaderd sidecar,
//! and how fast one leadership change reaches all of them.
//!
//! ```sh
//! cargo bench --bench sse                                   # 1000 streams, 20 s idle windows
//! cargo bench --bench sse -- --streams 5000 --idle 60s --json /tmp/sse.json
//! ```
//!
//! The run, against the project's Lease API test server (in this process) and ONE real leaderd
//! process (the release binary cargo builds for benches):
//!
//! 1. The Lease is created released (empty holder with leaderd's release marker), so the sidecar
//!    takes it at once and then renews it every 3R/5 (the defaults 15 s / 10 s / 2 s: every 6 s),
//!    as a real leader does. Renewals are part of "idle": each one republishes the leader state.
//! 2. Baseline window (`--baseline`, default = `--idle`): the sidecar's own idle CPU, no streams.
//! 3. N connections (`--streams`, default 1000) open `/leader/stream` (the testkit's SSE client,
//!    `harness::sse`: raw TCP, a minimal HTTP/1.1 request, an incremental chunked + SSE
//!    parser), at most `--connect-concurrency` at a time; we wait until every one has received its first `leader` event.
//! 4. Idle window (`--idle`, default 20 s): nothing changes. Sidecar RSS (`VmRSS` of
//!    `/proc/PID/status`) and CPU (utime + stime of `/proc/PID/stat`) are read before and after
//!    each step; per stream: RSS delta / N, and (CPU in the idle window - CPU in the baseline
//!    window, both per second) / N.
//! 5. One change: a foreign write (`TestServer::put_raw`) names a new holder, `bench-intruder`,
//!    with epoch + 1 and a one-hour `leaseDurationSeconds` (so the sidecar does not take the
//!    lease back during the run). A foreign write is used rather than a second candidate because
//!    it is one write at a known instant, with no second process's renewals on the machine. The
//!    sidecar sees it on its watch and ends in one new state (the intruder leads, it does not,
//!    epoch + 1); each stream is followed until it shows that state, and every event on the way
//!    is counted: leaderd confirms a watch event that deposes it with a GET before stepping
//!    down, and publishes the watched record meanwhile, so streams may first get an interim
//!    state (the intruder named as leader while `is_leader` is still true); it is reported.
//! 6. Fan-out latency per stream of the event showing the new state, measured two ways: from its
//!    `observed_at` (the sidecar's wall clock when its elector took the observation that led to
//!    this state; RFC 3339 truncated to the millisecond, so these figures are high by < 1 ms) to
//!    the wall-clock receipt in this process, and from the instant of the foreign write
//!    (monotonic clock) to receipt, which adds the watch delivery and the confirming GET; and of
//!    the first event after the write, whatever it showed, from the write. Receipt is stamped
//!    when the read returns, before any parsing; all readers run on one thread here (leaving
//!    the sidecar the other cores), so the tail includes this process working through N ready
//!    sockets: an upper bound on the sidecar's own fan-out.
//!
//! It prints a table and writes JSON to `target/bench/sse.json` (`$CARGO_TARGET_DIR/bench/sse.json`
//! when that is set; `--json PATH` to choose). RLIMIT_NOFILE is raised to N + 1024 (within the
//! hard limit) before the sidecar starts; the sidecar inherits it.
//!
//! Run without `--bench` (as `cargo test --benches` does) it is a smoke test: 20 streams, 1 s
//! idle, no baseline, no JSON unless `--json` is given.

use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use anyhow::{anyhow, bail, Context as _};
use clap::Parser;
use leaderd::status::LeaderView;
use leaderd_testkit::harness::runtime;
use leaderd_testkit::harness::sse::{EventStream, Frame};
use leaderd_testkit::harness::{
    get, get_leader, http_client, write_kubeconfig, Candidate, CandidateSpec,
};
use leaderd_testkit::testserver::TestServer;
use serde_json::{json, Value};
use tokio::sync::{mpsc, Semaphore};
use tokio::time::{timeout_at, Instant};

const NS: &str = "default";
const LEASE: &str = "sse-bench";
const SIDECAR: &str = "sidecar";
const INTRUDER: &str = "bench-intruder";
/// leaderd's default timing: lease duration, renew deadline, retry period.
const TIMING: (Duration, Duration, Duration) = (
    Duration::from_secs(15),
    Duration::from_secs(10),
    Duration::from_secs(2),
);

/// `cargo bench --bench sse -- [options]`
#[derive(Parser, Debug)]
#[command(
    name = "sse",
    about = "Cost of N /leader/stream SSE connections to one leaderd"
)]
struct Args {
    /// Concurrent SSE connections [bench: 1000, smoke: 20].
    #[arg(long)]
    streams: Option<usize>,
    /// Idle window with the streams open [bench: 20s, smoke: 1s].
    #[arg(long, value_parser = humantime::parse_duration)]
    idle: Option<Duration>,
    /// Idle window before the streams open, to subtract the sidecar's own idle CPU
    /// [bench: same as --idle, smoke: 0s]; 0s skips it.
    #[arg(long, value_parser = humantime::parse_duration)]
    baseline: Option<Duration>,
    /// Connections being opened at a time.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Longest wait for the leadership, for all first events, and for the change's fan-out.
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    timeout: Duration,
    /// Where to write the JSON results [bench: target/bench/sse.json, smoke: nowhere].
    #[arg(long)]
    json: Option<PathBuf>,
    #[command(flatten)]
    cargo: runtime::BenchArgs,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.cargo.filtered_out("sse") {
        return ExitCode::SUCCESS;
    }
    runtime::main("sse bench", 0, run(args))
}

/// The settings after defaults.
struct Config {
    streams: usize,
    idle: Duration,
    baseline: Duration,
    connect_concurrency: usize,
    timeout: Duration,
    json: Option<PathBuf>,
    smoke: bool,
}

impl Config {
    fn from(a: Args) -> anyhow::Result<Config> {
        let smoke = !a.cargo.bench;
        let streams = a.streams.unwrap_or(if smoke { 20 } else { 1000 });
        let idle = a.idle.unwrap_or(if smoke {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(20)
        });
        let baseline = a
            .baseline
            .unwrap_or(if smoke { Duration::ZERO } else { idle });
        if streams == 0 || a.connect_concurrency == 0 {
            bail!("--streams and --connect-concurrency must be at least 1");
        }
        if idle.is_zero() {
            bail!("--idle must be above 0s (it is the window idle CPU is measured over)");
        }
        let json = a.json.or_else(|| (!smoke).then(default_json_path));
        Ok(Config {
            streams,
            idle,
            baseline,
            connect_concurrency: a.connect_concurrency,
            timeout: a.timeout,
            json,
            smoke,
        })
    }
}

/// `$CARGO_TARGET_DIR/bench/sse.json`, else `target/bench/sse.json` in the package.
fn default_json_path() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"));
    target.join("bench").join("sse.json")
}

/// Raise the soft RLIMIT_NOFILE to at least `need` (children started later inherit it).
fn raise_nofile(need: u64) -> anyhow::Result<u64> {
    let limit = leaderd_testkit::harness::raise_nofile(need).context("raising RLIMIT_NOFILE")?;
    if limit < need {
        bail!(
            "need {need} open files but the hard limit (ulimit -Hn) is {limit}: raise it or ask for fewer --streams"
        );
    }
    Ok(limit)
}

/// Resident memory, CPU time and open files of a process, from /proc.
#[derive(Clone, Copy, Debug)]
struct Usage {
    rss_kib: u64,
    cpu: Duration,
    fds: usize,
    at: Instant,
}

fn usage(pid: u32) -> anyhow::Result<Usage> {
    let at = Instant::now();
    let u = leaderd_testkit::harness::proc_usage(pid)
        .with_context(|| format!("reading /proc/{pid} (did leaderd exit?)"))?;
    Ok(Usage {
        rss_kib: u.rss_kib,
        cpu: u.cpu,
        fds: u.fds,
        at,
    })
}

/// What the stream readers report.
enum Msg {
    /// A complete `leader` event: its stream, its number on that stream (0 = the first),
    /// when the read that completed it returned, and its data.
    Event {
        stream: usize,
        seq: u32,
        at: Instant,
        wall: SystemTime,
        data: String,
    },
    /// The stream failed or ended.
    Failed { stream: usize, error: String },
}

/// One SSE client: connects (holding a `gate` permit until its first event), then reports every
/// `leader` event until the stream ends or the task is aborted.
async fn reader(
    stream: usize,
    addr: SocketAddr,
    gate: Arc<Semaphore>,
    tx: mpsc::UnboundedSender<Msg>,
    keepalives: Arc<AtomicU64>,
) {
    let fail = |error: String| {
        let _ = tx.send(Msg::Failed { stream, error });
    };
    let mut permit = match gate.acquire_owned().await {
        Ok(p) => Some(p),
        Err(_) => return,
    };
    let mut events = match EventStream::open(addr).await {
        Ok(s) => s,
        Err(e) => return fail(format!("connect: {e}")),
    };
    let mut seq = 0u32;
    loop {
        let (frame, arrival) = match events.next_frame().await {
            Ok(Some(f)) => f,
            Ok(None) => return fail("the sidecar closed or ended the stream".into()),
            Err(e) => return fail(format!("read: {e}")),
        };
        match frame {
            Frame::Event { name, data } if name == "leader" => {
                let _ = tx.send(Msg::Event {
                    stream,
                    seq,
                    at: Instant::from_std(arrival.at),
                    wall: arrival.wall,
                    data,
                });
                seq += 1;
                drop(permit.take()); // opened: let the next connection in
            }
            Frame::Event { .. } => {}
            Frame::Comment => {
                keepalives.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// What one stream received after the change: events until (and including) the one showing the
/// new state, the first of them if it was not already the new state, and how many came after.
#[derive(Default)]
struct StreamChange {
    events: u32,
    first: Option<(Instant, SystemTime, String)>,
    last: Option<(Instant, SystemTime, String)>,
    after: usize,
}

/// Nearest-rank percentile of sorted values.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

/// Wait until the sidecar reports leading, with long polls on `/leader` (no sleeping).
async fn wait_leading(addr: SocketAddr, within: Duration) -> anyhow::Result<LeaderView> {
    let client = http_client();
    let end = Instant::now() + within;
    let mut v = get_leader(&client, addr).await.context("GET /leader")?;
    while !v.is_leader {
        let left = end.saturating_duration_since(Instant::now());
        if left.is_zero() {
            bail!("the sidecar did not lead within {within:?}; it reports {v:?}");
        }
        let wait = left.min(Duration::from_secs(30));
        let path = format!("/leader?wait={}ms", wait.as_millis().max(1));
        let body = get(&client, addr, &path)
            .await
            .context("long poll /leader")?;
        v = serde_json::from_slice(&body).context("decoding /leader")?;
    }
    Ok(v)
}

/// Renewals (PUTs) the sidecar sent in `[from, to)`.
fn renewals(server: &TestServer, from: Instant, to: Instant) -> usize {
    let (from, to) = (from.into_std(), to.into_std());
    server
        .requests()
        .iter()
        .filter(|r| r.client == SIDECAR && r.verb == "update" && r.at >= from && r.at < to)
        .count()
}

async fn run(args: Args) -> anyhow::Result<()> {
    let cfg = Config::from(args)?;
    let n = cfg.streams;
    let nofile = raise_nofile(n as u64 + 1024)?;

    let server = TestServer::start()
        .await
        .context("starting the Lease API test server")?;
    // No Lease: the sidecar creates it and takes it a lease duration later (15 s). A seeded
    // release would not be quicker: a fresh process takes at once only the release of a holder
    // it saw (design rule 5).
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let yaml = server.kubeconfig_yaml(SIDECAR, NS);
    let mut spec = CandidateSpec::new(
        env!("CARGO_BIN_EXE_leaderd"),
        write_kubeconfig(dir.path(), &yaml, SIDECAR).context("writing kubeconfig")?,
        LEASE,
        NS,
        SIDECAR,
        TIMING,
    );
    // Room for every stream, the probes and the long polls.
    spec.extra_args = vec![format!("--http-max-connections={}", n + 64)];
    let sidecar = Candidate::spawn(&spec).await.context("starting leaderd")?;
    let pid = sidecar
        .pid()
        .ok_or_else(|| anyhow!("leaderd exited at once"))?;
    let result = measure(&cfg, &server, &sidecar, pid, nofile).await;
    sidecar.signal(libc::SIGTERM);
    let exited = sidecar.wait_exit(Duration::from_secs(10)).await;
    let panicked = sidecar.logs().iter().any(|l| l.contains("panicked"));
    server.shutdown().await;
    let report = match result {
        Ok(r) => r,
        Err(e) => {
            let logs = sidecar.logs();
            let tail = &logs[logs.len().saturating_sub(20)..];
            return Err(e.context(format!("leaderd's last log lines:\n{}", tail.join("\n"))));
        }
    };
    if panicked || exited.is_none_or(|s| !s.success()) {
        eprintln!(
            "warning: leaderd exited with {exited:?} after SIGTERM{}",
            if panicked { " and logged a panic" } else { "" }
        );
    }
    if let Some(path) = &cfg.json {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        let text = serde_json::to_string_pretty(&report).context("encoding the JSON")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
        println!("JSON written to {}", path.display());
    }
    Ok(())
}

/// Everything after the sidecar started; prints the table, returns the JSON.
async fn measure(
    cfg: &Config,
    server: &TestServer,
    sidecar: &Candidate,
    pid: u32,
    nofile: u64,
) -> anyhow::Result<Value> {
    let n = cfg.streams;
    let lead = wait_leading(sidecar.addr, cfg.timeout).await?;
    let epoch = lead.epoch.unwrap_or(0);

    // Before: the sidecar leads and renews; no stream yet (the long-poll client is dropped, so
    // its connection is closed).
    let before = usage(pid)?;
    if !cfg.baseline.is_zero() {
        tokio::time::sleep(cfg.baseline).await; // the measurement window itself
    }
    let after_baseline = usage(pid)?;

    // Open the streams.
    let (tx, mut rx) = mpsc::unbounded_channel();
    let gate = Arc::new(Semaphore::new(cfg.connect_concurrency));
    let keepalives = Arc::new(AtomicU64::new(0));
    let opening = Instant::now();
    let readers: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(reader(
                i,
                sidecar.addr,
                gate.clone(),
                tx.clone(),
                keepalives.clone(),
            ))
        })
        .collect();
    drop(tx);
    let mut first_ok = 0usize;
    let mut failures: Vec<(usize, String)> = Vec::new();
    let mut not_leading = 0usize;
    let end = opening + cfg.timeout;
    while first_ok + failures.len() < n {
        match timeout_at(end, rx.recv()).await {
            Ok(Some(Msg::Event { seq: 0, data, .. })) => {
                first_ok += 1;
                let v: LeaderView =
                    serde_json::from_str(&data).context("decoding a first event")?;
                not_leading += usize::from(!v.is_leader);
            }
            Ok(Some(Msg::Event { stream, .. })) => {
                bail!("stream {stream} got a second event before all streams opened")
            }
            Ok(Some(Msg::Failed { stream, error })) => failures.push((stream, error)),
            Ok(None) => break,
            Err(_) => bail!(
                "only {first_ok} of {n} streams got their first event within {:?} ({} failed{})",
                cfg.timeout,
                failures.len(),
                failures
                    .first()
                    .map(|(s, e)| format!(", e.g. stream {s}: {e}"))
                    .unwrap_or_default()
            ),
        }
    }
    let opened_in = opening.elapsed();
    if !failures.is_empty() {
        bail!(
            "{} of {n} streams failed to open, e.g. stream {}: {}",
            failures.len(),
            failures[0].0,
            failures[0].1
        );
    }
    if not_leading > 0 {
        bail!("{not_leading} first events did not show the sidecar leading");
    }
    let after_open = usage(pid)?;

    // Idle: nothing changes (but renewals); no event may arrive.
    let idle_end = Instant::now() + cfg.idle;
    let mut idle_events = 0usize;
    loop {
        match timeout_at(idle_end, rx.recv()).await {
            Ok(Some(Msg::Event { .. })) => idle_events += 1,
            Ok(Some(Msg::Failed { stream, error })) => {
                bail!("stream {stream} failed while idle: {error}")
            }
            Ok(None) => bail!("every stream ended while idle"),
            Err(_) => break, // the window is over
        }
    }
    let after_idle = usage(pid)?;
    let idle_keepalives = keepalives.load(Ordering::Relaxed);

    // One change: a foreign holder with epoch + 1 (see the header).
    let now = humantime::format_rfc3339_micros(SystemTime::now()).to_string();
    let change = json!({"metadata": {}, "spec": {
        "holderIdentity": INTRUDER, "leaseDurationSeconds": 3600, "leaseTransitions": epoch + 1,
        "acquireTime": now, "renewTime": now}});
    let wrote_wall = SystemTime::now();
    let wrote = Instant::now();
    server.put_raw(NS, LEASE, change);
    // Per stream, every event until the one showing the new state: the intruder leads and this
    // sidecar does not (a cheap textual test here, checked by decoding below).
    let is_final = |d: &str| d.contains(INTRUDER) && d.contains("\"is_leader\":false");
    let mut per: Vec<StreamChange> = (0..n).map(|_| StreamChange::default()).collect();
    let (mut done, mut lost) = (0usize, Vec::new());
    let end = Instant::now() + cfg.timeout;
    while done + lost.len() < n {
        match timeout_at(end, rx.recv()).await {
            Ok(Some(Msg::Event {
                stream,
                at,
                wall,
                data,
                ..
            })) => {
                let s = &mut per[stream];
                if s.last.is_some() {
                    s.after += 1; // after the new state: reported, not waited for
                    continue;
                }
                s.events += 1;
                if is_final(&data) {
                    s.last = Some((at, wall, data));
                    done += 1;
                } else if s.first.is_none() {
                    s.first = Some((at, wall, data));
                }
            }
            Ok(Some(Msg::Failed { stream, error })) => {
                if per[stream].last.is_none() {
                    lost.push((stream, error));
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let after_change = usage(pid)?;
    for r in &readers {
        r.abort();
    }
    for r in readers {
        let _ = r.await;
    }
    let idle_renewals = renewals(server, after_open.at, after_idle.at);
    let baseline_renewals = renewals(server, before.at, after_baseline.at);

    // Latencies: of the event showing the new state, from its observed_at and from the write;
    // of the first event after the write (whatever it showed), from the write.
    let observed = |data: &str| -> anyhow::Result<(LeaderView, SystemTime)> {
        let v: LeaderView = serde_json::from_str(data).context("decoding a change event")?;
        let t = v
            .observed_at
            .as_deref()
            .and_then(|t| humantime::parse_rfc3339(t).ok())
            .ok_or_else(|| anyhow!("change event without a usable observed_at: {data}"))?;
        Ok((v, t))
    };
    let (mut from_obs, mut from_write, mut first_from_write) = (Vec::new(), Vec::new(), Vec::new());
    let (mut observed_at, mut first_observed_at, mut interim_example) = (None, None, None);
    let (mut interim_streams, mut extra_events) = (0usize, 0usize);
    for s in &per {
        extra_events += s.after;
        let Some((at, wall, data)) = &s.last else {
            continue;
        };
        let (v, obs) = observed(data)?;
        if v.is_leader || v.leader.as_deref() != Some(INTRUDER) {
            bail!("an event passed as the new state but is not: {data}");
        }
        observed_at.get_or_insert(obs);
        from_obs.push(wall.duration_since(obs).unwrap_or_default());
        from_write.push(at.duration_since(wrote));
        match &s.first {
            Some((first_at, _, first)) => {
                interim_streams += 1;
                first_observed_at.get_or_insert(observed(first)?.1);
                interim_example.get_or_insert_with(|| first.clone());
                first_from_write.push(first_at.duration_since(wrote));
            }
            None => first_from_write.push(at.duration_since(wrote)),
        }
    }
    for v in [&mut from_obs, &mut from_write, &mut first_from_write] {
        v.sort();
    }
    let delivered = from_obs.len();
    let events_per_stream = per.iter().map(|s| s.events as f64).sum::<f64>() / n as f64;
    // When the sidecar first took the watch event (the interim event's observed_at, if any),
    // and when it published the new state (the new state's observed_at).
    let watch_delay = first_observed_at
        .or(observed_at)
        .map(|o| o.duration_since(wrote_wall).unwrap_or_default());
    let confirm_delay = observed_at
        .zip(first_observed_at)
        .map(|(l, f)| l.duration_since(f).unwrap_or_default());

    // Per stream.
    let nf = n as f64;
    let rss_open_per = (after_open.rss_kib as f64 - after_baseline.rss_kib as f64) / nf;
    let rss_idle_per = (after_idle.rss_kib as f64 - after_baseline.rss_kib as f64) / nf;
    let idle_secs = (after_idle.at - after_open.at).as_secs_f64();
    let idle_cpu_rate = (after_idle.cpu - after_open.cpu).as_secs_f64() / idle_secs;
    let base_secs = (after_baseline.at - before.at).as_secs_f64();
    let base_cpu_rate = if cfg.baseline.is_zero() {
        None
    } else {
        Some((after_baseline.cpu - before.cpu).as_secs_f64() / base_secs)
    };
    let cpu_per_stream_s = (idle_cpu_rate - base_cpu_rate.unwrap_or(0.0)) / nf;
    let open_cpu = after_open.cpu.saturating_sub(after_baseline.cpu);
    let change_cpu = after_change.cpu.saturating_sub(after_idle.cpu);

    // The table.
    let mut out = String::new();
    use std::fmt::Write as _;
    let _ = writeln!(
        out,
        "\nleaderd /leader/stream: {n} SSE streams{}, one leaderd (pid {pid}, {} build), RLIMIT_NOFILE {nofile}",
        if cfg.smoke { " (SMOKE RUN: not under cargo bench)" } else { "" },
        if cfg!(debug_assertions) { "debug" } else { "release" },
    );
    let _ = writeln!(
        out,
        "timing 15s/10s/2s (renews every 6 s); idle window {}, baseline window {}\n",
        humantime::format_duration(cfg.idle),
        humantime::format_duration(cfg.baseline)
    );
    let _ = writeln!(
        out,
        "{:<34} {:>10} {:>10} {:>7}",
        "sidecar", "RSS", "CPU total", "fds"
    );
    let row = |out: &mut String, label: &str, u: &Usage| {
        let _ = writeln!(
            out,
            "{label:<34} {:>10} {:>8.2} s {:>7}",
            mib(u.rss_kib),
            u.cpu.as_secs_f64(),
            u.fds
        );
    };
    row(&mut out, "leading, no streams", &before);
    if !cfg.baseline.is_zero() {
        row(
            &mut out,
            &format!(
                "after baseline idle ({})",
                humantime::format_duration(cfg.baseline)
            ),
            &after_baseline,
        );
    }
    row(&mut out, &format!("after opening {n} streams"), &after_open);
    row(
        &mut out,
        &format!("after idle ({})", humantime::format_duration(cfg.idle)),
        &after_idle,
    );
    row(&mut out, "after the change's fan-out", &after_change);
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "open {n} streams (first event on all): {:.0} ms, sidecar CPU {:.0} ms ({:.1} µs/stream)",
        ms(opened_in),
        ms(open_cpu),
        open_cpu.as_secs_f64() * 1e6 / nf
    );
    let _ = writeln!(
        out,
        "RSS per stream: {rss_open_per:.1} KiB after opening, {rss_idle_per:.1} KiB after idle"
    );
    let _ = writeln!(
        out,
        "idle CPU: {:.3} % of a core with streams ({idle_renewals} renewals, {idle_keepalives} keep-alives received), {}",
        idle_cpu_rate * 100.0,
        base_cpu_rate
            .map(|r| format!("{:.3} % without ({baseline_renewals} renewals)", r * 100.0))
            .unwrap_or_else(|| "no baseline window".into()),
    );
    let _ = writeln!(
        out,
        "idle CPU per stream: {:.2} µs per second{}",
        cpu_per_stream_s * 1e6,
        if base_cpu_rate.is_some() {
            " (baseline subtracted)"
        } else {
            " (no baseline subtracted)"
        }
    );
    if idle_events > 0 {
        let _ = writeln!(
            out,
            "UNEXPECTED: {idle_events} leader events while nothing changed"
        );
    }
    let _ = writeln!(
        out,
        "\none change (foreign write: holder {INTRUDER}, epoch {} -> {}): {delivered}/{n} streams got the new state{}{}",
        epoch,
        epoch + 1,
        if lost.is_empty() { String::new() } else { format!(", {} streams failed", lost.len()) },
        if extra_events > 0 { format!(", {extra_events} events after it") } else { String::new() },
    );
    let _ = writeln!(
        out,
        "  events per stream up to the new state: {events_per_stream:.2} (1 expected){}",
        if interim_streams > 0 {
            format!("; {interim_streams} streams first got an interim state")
        } else {
            String::new()
        }
    );
    if let Some(w) = &interim_example {
        let _ = writeln!(out, "  interim state: {w}");
    }
    let _ = writeln!(
        out,
        "  write -> sidecar took the watch event: {}; -> published the new state: {} (observed_at has 1 ms resolution)",
        watch_delay
            .map(|d| format!("{:.1} ms", ms(d)))
            .unwrap_or_else(|| "n/a".into()),
        observed_at
            .map(|o| format!(
                "{:.1} ms",
                ms(o.duration_since(wrote_wall).unwrap_or_default())
            ))
            .unwrap_or_else(|| "n/a".into())
    );
    let _ = writeln!(
        out,
        "  {:<36} {:>8} {:>8} {:>8} {:>8}",
        "fan-out latency (ms)", "p50", "p99", "max", "min"
    );
    for (label, v) in [
        ("new state, from its observed_at", &from_obs),
        ("new state, from the write", &from_write),
        ("first event, from the write", &first_from_write),
    ] {
        let _ = writeln!(
            out,
            "  {label:<36} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            ms(pct(v, 50.0)),
            ms(pct(v, 99.0)),
            ms(v.last().copied().unwrap_or_default()),
            ms(v.first().copied().unwrap_or_default()),
        );
    }
    let _ = writeln!(
        out,
        "  sidecar CPU for the change: {:.0} ms ({:.1} µs/stream)",
        ms(change_cpu),
        change_cpu.as_secs_f64() * 1e6 / nf
    );
    print!("{out}");
    let _ = io::stdout().flush();

    let u = |u: &Usage| json!({"rss_kib": u.rss_kib, "cpu_s": u.cpu.as_secs_f64(), "fds": u.fds});
    let lat = |v: &[Duration]| {
        json!({"p50_ms": ms(pct(v, 50.0)), "p99_ms": ms(pct(v, 99.0)),
               "max_ms": ms(v.last().copied().unwrap_or_default()),
               "min_ms": ms(v.first().copied().unwrap_or_default())})
    };
    Ok(json!({
        "bench": "sse",
        "smoke": cfg.smoke,
        "streams": n,
        "idle_s": cfg.idle.as_secs_f64(),
        "baseline_s": cfg.baseline.as_secs_f64(),
        "timing": {"lease_duration_s": 15, "renew_deadline_s": 10, "retry_period_s": 2},
        "rlimit_nofile": nofile,
        "sidecar": {
            "leading_no_streams": u(&before),
            "after_baseline": u(&after_baseline),
            "after_open": u(&after_open),
            "after_idle": u(&after_idle),
            "after_change": u(&after_change),
        },
        "open": {"ms": ms(opened_in), "cpu_ms": ms(open_cpu)},
        "per_stream": {
            "rss_kib_after_open": rss_open_per,
            "rss_kib_after_idle": rss_idle_per,
            "idle_cpu_us_per_s": cpu_per_stream_s * 1e6,
            "baseline_subtracted": base_cpu_rate.is_some(),
            "open_cpu_us": open_cpu.as_secs_f64() * 1e6 / nf,
            "change_cpu_us": change_cpu.as_secs_f64() * 1e6 / nf,
        },
        "idle": {
            "cpu_share_with_streams": idle_cpu_rate,
            "cpu_share_baseline": base_cpu_rate,
            "renewals": idle_renewals,
            "baseline_renewals": baseline_renewals,
            "keepalives_received": idle_keepalives,
            "unexpected_events": idle_events,
        },
        "change": {
            "how": "foreign write (TestServer::put_raw) of a new holder with epoch + 1",
            "epoch_before": epoch,
            "delivered": delivered,
            "failed_streams": lost.len(),
            "events_per_stream": events_per_stream,
            "streams_with_interim_state": interim_streams,
            "interim_state_example": interim_example,
            "events_after_new_state": extra_events,
            "write_to_watch_event_ms": watch_delay.map(ms),
            "watch_event_to_new_state_ms": confirm_delay.map(ms),
            "new_state_from_observed_at": lat(&from_obs),
            "new_state_from_write": lat(&from_write),
            "first_event_from_write": lat(&first_from_write),
        },
    }))
}

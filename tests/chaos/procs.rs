//! leaderd processes for the chaos runner, on the testkit's process runner
//! ([`leaderd_testkit::harness::Candidate`], started from the cluster's spec, optionally under
//! libfaketime, or with `--backend etcd` from an [`EtcdCandidateSpec`]): killed, terminated,
//! stopped (SIGSTOP, recorded in [`Record::pauses`]), resumed and restarted; each one watched by
//! tasks that record what it says:
//!
//! - a poller that asks `GET /leader` every sample period and folds the answers into sampled
//!   tenures ([`SampledTenure`]), keeping no per-sample history (a 10-minute run takes ~300 000
//!   samples);
//! - an SSE reader on `GET /leader/stream` (the testkit's client) that records every `leader`
//!   event with its arrival;
//! - a hook on its log (which the runner also writes to a file) that records "became leader",
//!   "stopped leading" and panics with their arrival;
//! - an exit monitor that reports how and when it ended, and what the runner had asked.
//!
//! Every time is the checker's monotonic clock ([`std::time::Instant`]), taken on the side that
//! keeps each bound sound (see `check.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::anyhow;
use leaderd_testkit::harness::sse::EventStream;
use leaderd_testkit::harness::{
    get_leader, http_client, Candidate, CandidateSpec, EtcdCandidateSpec, LogFile, LogHook,
};
use serde_json::Value;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How a process should run its clocks (libfaketime's `FAKETIME`).
#[derive(Clone, Debug, PartialEq)]
pub struct Clock {
    /// Clock rate: local seconds per real second (`x` in `FAKETIME`).
    pub rate: f64,
    /// Start-time offset in whole hours (`+1h`, `-1h`, `+0`).
    pub offset_h: i32,
}

impl Clock {
    /// The real clock.
    pub const REAL: Clock = Clock {
        rate: 1.0,
        offset_h: 0,
    };

    /// `FAKETIME` for this clock, or None for the real one.
    pub fn faketime(&self) -> Option<String> {
        (*self != Clock::REAL).then(|| format!("{:+}h x{}", self.offset_h, self.rate))
    }

    /// For the summary.
    pub fn label(&self) -> String {
        self.faketime().unwrap_or_else(|| "real".into())
    }
}

/// Where libfaketime's multi-threaded library is (Debian's package `libfaketime`), if anywhere.
pub fn find_libfaketime() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LIBFAKETIME") {
        return Some(PathBuf::from(p));
    }
    [
        "/usr/lib/x86_64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/aarch64-linux-gnu/faketime/libfaketimeMT.so.1",
        "/usr/lib/faketime/libfaketimeMT.so.1",
        "/usr/local/lib/faketime/libfaketimeMT.so.1",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// How the runner watches a process.
#[derive(Clone, Debug)]
pub struct Watch {
    /// The run's clock zero (log lines are stamped from it).
    pub t0: Instant,
    /// How often `/leader` is asked.
    pub sample_period: Duration,
    /// Where its log goes.
    pub log_path: PathBuf,
}

/// How a process ended.
#[derive(Clone, Debug)]
pub struct Exit {
    /// When the checker saw it end.
    pub at: Instant,
    /// Exit code, if it exited.
    pub code: Option<i32>,
    /// Signal, if it was killed by one.
    pub signal: Option<i32>,
    /// What the runner had asked for (None: nothing; it ended by itself).
    pub asked: Option<Ask>,
}

/// What the runner asks of a process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ask {
    Kill9,
    Term,
}

/// A sampled tenure: a run of consecutive `/leader` answers with `is_leader: true` under one
/// epoch, with the bounds the answers around it give (the harness's
/// `leaderd_testkit::harness::SampledTenure` is the same idea, kept per sample; this one is
/// folded as the answers come).
#[derive(Clone, Debug)]
pub struct SampledTenure {
    pub epoch: Option<i64>,
    /// The request time of the last answer before the run (not leading, or leading under
    /// another epoch): the claim began after it.
    pub before: Option<Instant>,
    /// Answer time of the first leading answer: the claim had begun by then.
    pub first_recv: Instant,
    /// Request time of the last leading answer: the claim lasted at least until then.
    pub last_sent: Instant,
    /// Answer time of the first answer after the run: the claim had ended by then.
    pub after: Option<Instant>,
    pub samples: u64,
    /// Answer time of the last leading answer plus the `valid_for_ms` it reported: no later
    /// than the deadline of the claim it reported (the claim may have been extended after it
    /// by a later renewal, which a later answer then shows).
    pub valid_until: Option<Instant>,
}

/// A `leader` event of the SSE stream.
#[derive(Clone, Debug)]
pub struct SseEvent {
    pub at: Instant,
    pub is_leader: bool,
    pub epoch: Option<i64>,
}

/// A transition the process logged.
#[derive(Clone, Debug)]
pub enum LogEvent {
    Became { epoch: i64 },
    Stopped { epoch: Option<i64>, reason: String },
}

/// Everything recorded about one process.
#[derive(Clone, Debug)]
pub struct Record {
    /// Identity (shared by every generation of a candidate).
    pub name: String,
    /// `name#generation`.
    pub label: String,
    pub clock: Clock,
    pub started: Instant,
    pub exit: Option<Exit>,
    /// What the runner asked of it last (recorded in `exit` when it ends).
    asked_for: Option<Ask>,
    pub sampled: Vec<SampledTenure>,
    current: Option<SampledTenure>,
    last_not_leading_sent: Option<Instant>,
    pub latest: Option<(bool, Option<i64>, Option<String>)>,
    pub samples: u64,
    pub failed_samples: u64,
    last_sample_sent: Option<Instant>,
    /// Longest time between two consecutive answered samples.
    pub max_gap: Duration,
    pub first_sample: Option<Instant>,
    pub last_sample: Option<Instant>,
    pub sse: Vec<SseEvent>,
    pub sse_reconnects: u64,
    pub logs: Vec<(Instant, LogEvent)>,
    pub panics: Vec<String>,
    pub log_lines: u64,
    /// (when, VmRSS KiB, open fds)
    pub usage: Vec<(Instant, u64, usize)>,
    /// SIGSTOP/SIGCONT by the runner: (stopped by, resumed from); the first is taken after the
    /// SIGSTOP was sent, the second before the SIGCONT, so the process ran during neither gap.
    pub pauses: Vec<(Instant, Option<Instant>)>,
}

impl Record {
    fn sample(
        &mut self,
        sent: Instant,
        recv: Instant,
        answer: Option<(bool, Option<i64>, Option<u64>)>,
    ) {
        let Some((leading, epoch, valid_for_ms)) = answer else {
            self.failed_samples += 1;
            // No answer: the claim (if any) cannot be bounded by this request.
            return;
        };
        self.samples += 1;
        if let Some(prev) = self.last_sample_sent {
            // A SIGSTOP in between is the runner's gap, not the sampler's.
            if self.pauses.last().is_none_or(|p| p.0 < prev) {
                self.max_gap = self.max_gap.max(sent.saturating_duration_since(prev));
            }
        }
        self.last_sample_sent = Some(sent);
        self.first_sample.get_or_insert(sent);
        self.last_sample = Some(recv);
        let valid_until = valid_for_ms.map(|ms| recv + Duration::from_millis(ms));
        let same = self.current.as_ref().is_some_and(|r| r.epoch == epoch);
        if leading && same {
            let r = self.current.as_mut().expect("same");
            r.last_sent = sent;
            r.samples += 1;
            r.valid_until = valid_until;
            return;
        }
        let mut before = self.last_not_leading_sent;
        if let Some(mut r) = self.current.take() {
            r.after = Some(recv);
            before = Some(r.last_sent);
            self.sampled.push(r);
        }
        if leading {
            self.current = Some(SampledTenure {
                epoch,
                before,
                first_recv: recv,
                last_sent: sent,
                after: None,
                samples: 1,
                valid_until,
            });
        } else {
            self.last_not_leading_sent = Some(sent);
        }
    }

    /// Every sampled tenure, the open one included.
    pub fn sampled_tenures(&self) -> Vec<SampledTenure> {
        let mut v = self.sampled.clone();
        v.extend(self.current.clone());
        v
    }

    /// Whether it leads according to its latest answer.
    pub fn leading_now(&self) -> bool {
        self.exit.is_none() && self.current.is_some()
    }

    /// Whether the runner has it stopped (SIGSTOP without SIGCONT yet).
    pub fn paused(&self) -> bool {
        self.pauses.last().is_some_and(|p| p.1.is_none())
    }
}

pub type Shared = Arc<Mutex<Record>>;

pub fn lock(r: &Shared) -> MutexGuard<'_, Record> {
    r.lock().unwrap_or_else(|e| e.into_inner())
}

/// A running (or ended) process and the handles of its watchers.
pub struct Proc {
    pub record: Shared,
    pub addr: SocketAddr,
    cand: Candidate,
    /// The runner asked it to end (it is not picked for another fault).
    pub asked: bool,
    exited: watch::Receiver<bool>,
    stop: CancellationToken,
}

impl Proc {
    /// Not ended (as recorded: the exit is in the record once this is false).
    pub fn alive(&self) -> bool {
        !*self.exited.borrow()
    }

    pub fn ask(&mut self, a: Ask) {
        self.asked = true;
        lock(&self.record).asked_for = Some(a);
        match a {
            Ask::Kill9 => self.cand.kill9(),
            Ask::Term => self.cand.signal(libc::SIGTERM),
        }
    }

    /// SIGSTOP: it keeps its connections and answers nothing until [`resume`](Self::resume).
    pub fn pause(&mut self) {
        self.cand.signal(libc::SIGSTOP);
        lock(&self.record).pauses.push((Instant::now(), None));
    }

    /// SIGCONT after [`pause`](Self::pause) (nothing if it is not paused).
    pub fn resume(&mut self) {
        let mut g = lock(&self.record);
        if let Some(p) = g.pauses.last_mut().filter(|p| p.1.is_none()) {
            p.1 = Some(Instant::now());
            drop(g);
            self.cand.signal(libc::SIGCONT);
        }
    }

    /// Wait until it has ended, at most `within`; true if it did.
    pub async fn wait_exit(&self, within: Duration) -> bool {
        let mut rx = self.exited.clone();
        let done = tokio::time::timeout(within, rx.wait_for(|e| *e)).await;
        done.is_ok()
    }

    /// Stop the watchers (after the process ended).
    pub fn stop_watchers(&self) {
        self.stop.cancel();
    }
}

/// How to start a candidate: on the Lease API (a kubeconfig) or on etcd.
enum Spec {
    Lease(CandidateSpec),
    Etcd(EtcdCandidateSpec),
}

/// The parts of a spec that [`spawn_any`] sets, whichever the backend.
struct SpecParts<'a> {
    extra_args: &'a mut Vec<String>,
    env: &'a mut Vec<(String, Option<String>)>,
    log_file: &'a mut Option<LogFile>,
    on_log: &'a mut Option<LogHook>,
}

impl Spec {
    fn identity(&self) -> String {
        match self {
            Spec::Lease(s) => s.identity.clone(),
            Spec::Etcd(s) => s.identity.clone(),
        }
    }

    fn parts(&mut self) -> SpecParts<'_> {
        match self {
            Spec::Lease(s) => SpecParts {
                extra_args: &mut s.extra_args,
                env: &mut s.env,
                log_file: &mut s.log_file,
                on_log: &mut s.on_log,
            },
            Spec::Etcd(s) => SpecParts {
                extra_args: &mut s.extra_args,
                env: &mut s.env,
                log_file: &mut s.log_file,
                on_log: &mut s.on_log,
            },
        }
    }
}

/// Start leaderd from `spec` (with JSON logs, under `clock`) and its watchers; returns once its
/// API listens (at most 20 s).
pub async fn spawn(
    label: String,
    spec: CandidateSpec,
    clock: Clock,
    libfaketime: Option<&Path>,
    w: Watch,
) -> anyhow::Result<Proc> {
    spawn_any(label, Spec::Lease(spec), clock, libfaketime, w).await
}

/// Start leaderd with the etcd backend from `spec` (JSON logs, real clocks) and its watchers;
/// returns once its API listens (at most 20 s).
pub async fn spawn_etcd(label: String, spec: EtcdCandidateSpec, w: Watch) -> anyhow::Result<Proc> {
    spawn_any(label, Spec::Etcd(spec), Clock::REAL, None, w).await
}

async fn spawn_any(
    label: String,
    mut spec: Spec,
    clock: Clock,
    libfaketime: Option<&Path>,
    w: Watch,
) -> anyhow::Result<Proc> {
    let identity = spec.identity();
    let parts = spec.parts();
    parts
        .extra_args
        .extend(["--log-format".to_string(), "json".to_string()]);
    match clock.faketime() {
        Some(ft) => {
            let lib = libfaketime.ok_or_else(|| {
                anyhow!("clock {ft} needs libfaketime (apt-get install faketime)")
            })?;
            // Directly, not through the `faketime` wrapper: the wrapper forks, so a kill -9 of
            // its pid would not reach leaderd. The rate applies to CLOCK_REALTIME and
            // CLOCK_MONOTONIC (tokio's Instant) alike, and libfaketime scales epoll_wait
            // timeouts to match.
            parts
                .env
                .push(("LD_PRELOAD".into(), Some(lib.display().to_string())));
            parts.env.push(("FAKETIME".into(), Some(ft)));
        }
        None => {
            parts.env.push(("LD_PRELOAD".into(), None));
            parts.env.push(("FAKETIME".into(), None));
        }
    }
    *parts.log_file = Some(LogFile {
        path: w.log_path.clone(),
        t0: w.t0,
        title: format!("{label}, clock {}", clock.label()),
    });
    let started = Instant::now();
    let record = Arc::new(Mutex::new(Record {
        name: identity,
        label: label.clone(),
        clock,
        started,
        exit: None,
        asked_for: None,
        sampled: Vec::new(),
        current: None,
        last_not_leading_sent: None,
        latest: None,
        samples: 0,
        failed_samples: 0,
        last_sample_sent: None,
        max_gap: Duration::ZERO,
        first_sample: None,
        last_sample: None,
        sse: Vec::new(),
        sse_reconnects: 0,
        logs: Vec::new(),
        panics: Vec::new(),
        log_lines: 0,
        usage: Vec::new(),
        pauses: Vec::new(),
    }));
    let rec = record.clone();
    *parts.on_log = Some(LogHook::new(move |at, line| read_log(&rec, at, line)));
    let cand = match &spec {
        Spec::Lease(s) => Candidate::spawn(s).await,
        Spec::Etcd(s) => Candidate::spawn_etcd(s).await,
    }
    .map_err(|e| anyhow!("{label}: {e}"))?;
    let pid = cand.pid().unwrap_or(0);
    let addr = cand.addr;
    let stop = CancellationToken::new();

    // Exit monitor: records how it ended and what had been asked, then says so.
    let (exited_tx, exited) = watch::channel(false);
    let mut exit = cand.exit_watch();
    let rec = record.clone();
    tokio::spawn(async move {
        let e = exit.wait_for(Option::is_some).await.ok().and_then(|e| *e);
        use std::os::unix::process::ExitStatusExt;
        let status = e.and_then(|e| e.status);
        let mut g = lock(&rec);
        g.exit = Some(Exit {
            at: e.map_or_else(Instant::now, |e| e.at),
            code: status.and_then(|s| s.code()),
            signal: status.and_then(|s| s.signal()),
            asked: g.asked_for,
        });
        drop(g);
        let _ = exited_tx.send(true);
    });

    tokio::spawn(poll(
        record.clone(),
        addr,
        w.sample_period,
        stop.clone(),
        exited.clone(),
    ));
    tokio::spawn(sse(record.clone(), addr, stop.clone(), exited.clone()));
    tokio::spawn(usage(record.clone(), pid, stop.clone()));
    Ok(Proc {
        record,
        addr,
        cand,
        asked: false,
        exited,
        stop,
    })
}

/// One log line of the process: counted, panics kept, transitions recorded with `at`.
fn read_log(rec: &Shared, at: Instant, line: &str) {
    let mut g = lock(rec);
    g.log_lines += 1;
    if line.contains("panicked") {
        g.panics.push(line.to_string());
    }
    let Ok(v) = serde_json::from_str::<Value>(line) else {
        return;
    };
    match v.get("message").and_then(Value::as_str).unwrap_or("") {
        "became leader" => {
            if let Some(epoch) = v.get("epoch").and_then(Value::as_i64) {
                g.logs.push((at, LogEvent::Became { epoch }));
            }
        }
        "stopped leading" => {
            let epoch = parse_debug_option(v.get("epoch"));
            let reason = v
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string();
            g.logs.push((at, LogEvent::Stopped { epoch, reason }));
        }
        _ => {}
    }
}

/// `Some(3)` (tracing's Debug of an Option) or a number → the number.
fn parse_debug_option(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Number(n) => n.as_i64(),
        Value::String(s) => s
            .strip_prefix("Some(")
            .and_then(|s| s.strip_suffix(')'))
            .and_then(|s| s.parse().ok()),
        _ => None,
    }
}

/// Ask `/leader` every `period` (one request in flight; a slow answer delays the next).
async fn poll(
    rec: Shared,
    addr: SocketAddr,
    period: Duration,
    stop: CancellationToken,
    exited: watch::Receiver<bool>,
) {
    let client = http_client();
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if *exited.borrow() {
            return;
        }
        let sent = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(1), get_leader(&client, addr))
            .await
            .ok()
            .and_then(Result::ok);
        let recv = Instant::now();
        let mut g = lock(&rec);
        if let Some(v) = &answer {
            g.latest = Some((v.is_leader, v.epoch, v.leader.clone()));
        }
        g.sample(
            sent,
            recv,
            answer.map(|v| (v.is_leader, v.epoch, v.valid_for_ms)),
        );
    }
}

/// Follow `/leader/stream`, reconnecting until the process ends.
async fn sse(
    rec: Shared,
    addr: SocketAddr,
    stop: CancellationToken,
    exited: watch::Receiver<bool>,
) {
    let mut first = true;
    while !stop.is_cancelled() && !*exited.borrow() {
        if !first {
            lock(&rec).sse_reconnects += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first = false;
        let opened = tokio::select! {
            _ = stop.cancelled() => return,
            s = EventStream::open(addr) => s,
        };
        let Ok(mut events) = opened else { continue };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                n = events.next_leader() => n,
            };
            let Ok(Some((view, arrival))) = next else {
                break;
            };
            lock(&rec).sse.push(SseEvent {
                at: arrival.at,
                is_leader: view.is_leader,
                epoch: view.epoch,
            });
        }
    }
}

/// VmRSS (KiB) and the number of open fds of `pid`.
pub fn read_usage(pid: u32) -> Option<(u64, usize)> {
    let u = leaderd_testkit::harness::proc_usage(pid).ok()?;
    Some((u.rss_kib, u.fds))
}

/// Memory and fds every 2 s.
async fn usage(rec: Shared, pid: u32, stop: CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if lock(&rec).exit.is_some() {
            return;
        }
        if let Some((rss, fds)) = read_usage(pid) {
            lock(&rec).usage.push((Instant::now(), rss, fds));
        }
    }
}

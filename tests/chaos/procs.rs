//! leaderd processes for the chaos runner: spawned (optionally under libfaketime), killed,
//! terminated and restarted; each one watched by four tasks that record what it says:
//!
//! - a poller that asks `GET /leader` every sample period and folds the answers into runs of
//!   leadership ([`Run`]), keeping no per-sample history (a 10-minute run takes ~300 000 samples);
//! - an SSE reader on `GET /leader/stream` that records every `leader` event with its arrival;
//! - a log reader that writes the process's stderr to a file and records "became leader",
//!   "stopped leading" and panics with their arrival;
//! - an exit monitor that owns the child and reports how and when it ended.
//!
//! Every time is the checker's monotonic clock ([`std::time::Instant`]), taken on the side that
//! keeps each bound sound (see `check.rs`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;
use std::io::Write as _;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, watch};
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

/// What a process was started with.
#[derive(Clone, Debug)]
pub struct Launch {
    pub bin: PathBuf,
    pub kubeconfig: PathBuf,
    pub lease: String,
    pub namespace: String,
    pub identity: String,
    pub timing: (Duration, Duration, Duration),
    pub clock: Clock,
    pub libfaketime: Option<PathBuf>,
    pub log_path: PathBuf,
    pub sample_period: Duration,
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

/// A run of consecutive `/leader` answers with `is_leader: true` under one epoch.
#[derive(Clone, Debug)]
pub struct Run {
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
    pub runs: Vec<Run>,
    current: Option<Run>,
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
}

impl Record {
    fn sample(&mut self, sent: Instant, recv: Instant, answer: Option<(bool, Option<i64>)>) {
        let Some((leading, epoch)) = answer else {
            self.failed_samples += 1;
            // No answer: the claim (if any) cannot be bounded by this request.
            return;
        };
        self.samples += 1;
        if let Some(prev) = self.last_sample_sent {
            self.max_gap = self.max_gap.max(sent.saturating_duration_since(prev));
        }
        self.last_sample_sent = Some(sent);
        self.first_sample.get_or_insert(sent);
        self.last_sample = Some(recv);
        let same = self.current.as_ref().is_some_and(|r| r.epoch == epoch);
        if leading && same {
            let r = self.current.as_mut().expect("same");
            r.last_sent = sent;
            r.samples += 1;
            return;
        }
        let mut before = self.last_not_leading_sent;
        if let Some(mut r) = self.current.take() {
            r.after = Some(recv);
            before = Some(r.last_sent);
            self.runs.push(r);
        }
        if leading {
            self.current = Some(Run {
                epoch,
                before,
                first_recv: recv,
                last_sent: sent,
                after: None,
                samples: 1,
            });
        } else {
            self.last_not_leading_sent = Some(sent);
        }
    }

    /// Every run, the open one included.
    pub fn all_runs(&self) -> Vec<Run> {
        let mut v = self.runs.clone();
        v.extend(self.current.clone());
        v
    }

    /// Whether it leads according to its latest answer.
    pub fn leading_now(&self) -> bool {
        self.exit.is_none() && self.current.is_some()
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
    asks: mpsc::UnboundedSender<Ask>,
    /// The runner asked it to end (it is not picked for another fault).
    pub asked: bool,
    exited: watch::Receiver<bool>,
    stop: CancellationToken,
}

impl Proc {
    pub fn alive(&self) -> bool {
        !*self.exited.borrow()
    }

    pub fn ask(&mut self, a: Ask) {
        self.asked = true;
        let _ = self.asks.send(a);
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

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// Start a process and its watchers; returns once its API listens (at most 20 s).
pub async fn spawn(label: String, l: &Launch, t0: Instant) -> anyhow::Result<Proc> {
    let (d, r, p) = l.timing;
    let mut cmd = Command::new(&l.bin);
    cmd.args(["--lease-name", &l.lease, "--namespace", &l.namespace])
        .args(["--identity", &l.identity])
        .args([
            "--lease-duration",
            &millis(d),
            "--renew-deadline",
            &millis(r),
        ])
        .args(["--retry-period", &millis(p)])
        .args([
            "--http-addr",
            "127.0.0.1:0",
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .args(["--log-format", "json"])
        .env("KUBECONFIG", &l.kubeconfig)
        .env_remove("POD_NAME")
        .env_remove("POD_NAMESPACE")
        .env_remove("RUST_LOG")
        .env_remove("LD_PRELOAD")
        .env_remove("FAKETIME")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(ft) = l.clock.faketime() {
        let lib = l
            .libfaketime
            .as_ref()
            .ok_or_else(|| anyhow!("clock {ft} needs libfaketime (apt-get install faketime)"))?;
        // Directly, not through the `faketime` wrapper: the wrapper forks, so a kill -9 of its
        // pid would not reach leaderd. The rate applies to CLOCK_REALTIME and CLOCK_MONOTONIC
        // (tokio's Instant) alike, and libfaketime scales epoll_wait timeouts to match.
        cmd.env("LD_PRELOAD", lib).env("FAKETIME", ft);
    }
    let started = Instant::now();
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", l.bin.display()))?;
    let pid = child.id().unwrap_or(0);
    let stderr = child.stderr.take().expect("piped");
    let record = Arc::new(Mutex::new(Record {
        name: l.identity.clone(),
        label: label.clone(),
        clock: l.clock.clone(),
        started,
        exit: None,
        runs: Vec::new(),
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
    }));
    let stop = CancellationToken::new();

    // Log reader: to a file, and the transitions into the record.
    let (addr_tx, mut addr_rx) = watch::channel(None::<SocketAddr>);
    let mut file = std::fs::File::create(&l.log_path)
        .with_context(|| format!("creating {}", l.log_path.display()))?;
    let rec = record.clone();
    let header = format!(
        "# {label}: pid {pid}, clock {}, started at +{:.3}s of the run\n",
        l.clock.label(),
        started.duration_since(t0).as_secs_f64()
    );
    tokio::spawn(async move {
        let _ = file.write_all(header.as_bytes());
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let at = Instant::now();
            let _ = file.write_all(
                format!("+{:.3} {line}\n", at.duration_since(t0).as_secs_f64()).as_bytes(),
            );
            let mut g = lock(&rec);
            g.log_lines += 1;
            if line.contains("panicked") {
                g.panics.push(line.clone());
            }
            let Ok(v) = serde_json::from_str::<Value>(&line) else {
                continue;
            };
            let msg = v.get("message").and_then(Value::as_str).unwrap_or("");
            match msg {
                "http api listening" => {
                    let a = v
                        .get("addr")
                        .and_then(Value::as_str)
                        .and_then(|a| a.parse().ok());
                    let _ = addr_tx.send(a);
                }
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
    });

    // Exit monitor: owns the child.
    let (asks, mut ask_rx) = mpsc::unbounded_channel::<Ask>();
    let (exited_tx, exited) = watch::channel(false);
    let rec = record.clone();
    tokio::spawn(async move {
        let mut asked = None;
        let status = loop {
            tokio::select! {
                st = child.wait() => break st,
                Some(a) = ask_rx.recv() => {
                    asked = Some(a);
                    match a {
                        Ask::Kill9 => { let _ = child.start_kill(); }
                        // SAFETY: kill(2) on our own child's pid.
                        Ask::Term => unsafe { libc::kill(pid as i32, libc::SIGTERM); },
                    }
                }
            }
        };
        let at = Instant::now();
        use std::os::unix::process::ExitStatusExt;
        let (code, signal) = match status {
            Ok(s) => (s.code(), s.signal()),
            Err(_) => (None, None),
        };
        lock(&rec).exit = Some(Exit {
            at,
            code,
            signal,
            asked,
        });
        let _ = exited_tx.send(true);
    });

    let addr = match tokio::time::timeout(
        Duration::from_secs(20),
        addr_rx.wait_for(Option::is_some),
    )
    .await
    {
        Ok(Ok(a)) => a.expect("checked"),
        _ => {
            let _ = asks.send(Ask::Kill9);
            return Err(anyhow!(
                "{label} did not log its listening address within 20 s; see {}",
                l.log_path.display()
            ));
        }
    };

    tokio::spawn(poll(
        record.clone(),
        addr,
        l.sample_period,
        stop.clone(),
        exited.clone(),
    ));
    tokio::spawn(sse(record.clone(), addr, stop.clone(), exited.clone()));
    tokio::spawn(usage(record.clone(), pid, stop.clone()));
    Ok(Proc {
        record,
        addr,
        asks,
        asked: false,
        exited,
        stop,
    })
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

type HttpClient = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>;

async fn get_json(client: &HttpClient, uri: &http::Uri) -> Option<Value> {
    let res = client.get(uri.clone()).await.ok()?;
    if !res.status().is_success() {
        return None;
    }
    let body = res.into_body().collect().await.ok()?.to_bytes();
    serde_json::from_slice(&body).ok()
}

/// Ask `/leader` every `period` (one request in flight; a slow answer delays the next).
async fn poll(
    rec: Shared,
    addr: SocketAddr,
    period: Duration,
    stop: CancellationToken,
    exited: watch::Receiver<bool>,
) {
    let client: HttpClient = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1)
        .build_http();
    let uri: http::Uri = format!("http://{addr}/leader").parse().expect("uri");
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
        let answer = tokio::time::timeout(Duration::from_secs(1), get_json(&client, &uri))
            .await
            .ok()
            .flatten();
        let recv = Instant::now();
        let parsed = answer.as_ref().map(|v| {
            (
                v.get("is_leader").and_then(Value::as_bool).unwrap_or(false),
                v.get("epoch").and_then(Value::as_i64),
            )
        });
        let mut g = lock(&rec);
        if let (Some(v), Some((l, e))) = (&answer, parsed) {
            let leader = v.get("leader").and_then(Value::as_str).map(str::to_string);
            g.latest = Some((l, e, leader));
        }
        g.sample(sent, recv, parsed);
    }
}

/// Follow `/leader/stream`, reconnecting until the process ends.
async fn sse(
    rec: Shared,
    addr: SocketAddr,
    stop: CancellationToken,
    exited: watch::Receiver<bool>,
) {
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();
    let uri: http::Uri = format!("http://{addr}/leader/stream").parse().expect("uri");
    let mut first = true;
    while !stop.is_cancelled() && !*exited.borrow() {
        if !first {
            lock(&rec).sse_reconnects += 1;
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        first = false;
        let res = tokio::select! {
            _ = stop.cancelled() => return,
            r = client.get(uri.clone()) => r,
        };
        let Ok(res) = res else { continue };
        let mut body = res.into_body();
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let frame = tokio::select! {
                _ = stop.cancelled() => return,
                f = body.frame() => f,
            };
            let Some(Ok(frame)) = frame else { break };
            let at = Instant::now();
            let Ok(data) = frame.into_data() else {
                continue;
            };
            buf.extend_from_slice(&data);
            while let Some(end) = find(&buf, b"\n\n") {
                let block: Vec<u8> = buf.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&block);
                if !text.lines().any(|l| l == "event: leader") {
                    continue;
                }
                let data: String = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect();
                if let Ok(v) = serde_json::from_str::<Value>(&data) {
                    lock(&rec).sse.push(SseEvent {
                        at,
                        is_leader: v.get("is_leader").and_then(Value::as_bool).unwrap_or(false),
                        epoch: v.get("epoch").and_then(Value::as_i64),
                    });
                }
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
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

/// Write a kubeconfig for `token` into `dir`.
pub fn kubeconfig(dir: &Path, yaml: &str, token: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("kubeconfig-{token}.yaml"));
    std::fs::write(&path, yaml).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

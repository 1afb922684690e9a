//! Runs leaderd processes against a Lease API server and watches what they report.
//!
//! Used by the process tests, the demo and the benchmarks: [`Candidate`] is one leaderd
//! process (its `/leader` address is read from its log), [`Sampler`] polls every candidate's
//! `/leader` continuously, and [`check`] finds overlapping leaderships and falling epochs in
//! what was sampled. Candidates reach the server through a kubeconfig, so the same scenarios
//! can point at the project's test server or at a real kube-apiserver.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use leaderd::status::LeaderView;

/// How to start one candidate.
#[derive(Clone, Debug)]
pub struct CandidateSpec {
    /// The leaderd binary.
    pub bin: PathBuf,
    /// A kubeconfig reaching the server.
    pub kubeconfig: PathBuf,
    /// Lease name.
    pub lease: String,
    /// Lease namespace.
    pub namespace: String,
    /// The candidate's identity.
    pub identity: String,
    /// `--lease-duration`, `--renew-deadline`, `--retry-period`.
    pub timing: (Duration, Duration, Duration),
    /// More flags.
    pub extra_args: Vec<String>,
}

/// One running leaderd process.
pub struct Candidate {
    /// Its identity.
    pub name: String,
    /// Its `/leader` address.
    pub addr: SocketAddr,
    /// Its `/metrics` address.
    pub metrics_addr: SocketAddr,
    child: Child,
    logs: Arc<Mutex<Vec<String>>>,
}

fn human(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

/// A plain HTTP/1 client for `/leader`.
pub fn http_client() -> Client<HttpConnector, Empty<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// `GET http://addr/leader`.
pub async fn get_leader(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
) -> io::Result<LeaderView> {
    let body = get(client, addr, "/leader").await?;
    serde_json::from_slice(&body).map_err(io::Error::other)
}

/// `GET http://addr{path}`: the body of a 2xx answer.
pub async fn get(
    client: &Client<HttpConnector, Empty<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> io::Result<Bytes> {
    let uri: http::Uri = format!("http://{addr}{path}")
        .parse()
        .map_err(io::Error::other)?;
    let res = client.get(uri).await.map_err(io::Error::other)?;
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .map_err(io::Error::other)?
        .to_bytes();
    if !status.is_success() {
        return Err(io::Error::other(format!("GET {path}: HTTP {status}")));
    }
    Ok(body)
}

/// The listening address in a log line (text `addr=A` or JSON `"addr":"A"`).
fn logged_addr(line: &str) -> Option<SocketAddr> {
    if let Some(i) = line.find("\"addr\":\"") {
        return line[i + 8..].split('"').next()?.parse().ok();
    }
    line.split_whitespace()
        .find_map(|w| w.strip_prefix("addr="))?
        .parse()
        .ok()
}

impl Candidate {
    /// Start a candidate and wait until its API listens (at most 20 s).
    pub async fn spawn(spec: &CandidateSpec) -> io::Result<Candidate> {
        let (d, r, p) = spec.timing;
        let mut cmd = Command::new(&spec.bin);
        cmd.args(["--lease-name", &spec.lease, "--namespace", &spec.namespace])
            .args(["--identity", &spec.identity])
            .args(["--lease-duration", &human(d), "--renew-deadline", &human(r)])
            .args(["--retry-period", &human(p)])
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(&spec.extra_args)
            .env("KUBECONFIG", &spec.kubeconfig)
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env(
                "RUST_LOG",
                std::env::var("LEADERD_CHILD_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Self::start(&spec.identity, cmd, true).await
    }

    /// Start any process that serves leaderd's `/leader` JSON and logs, on stderr, a line
    /// containing `http api listening` and `addr=A` (or `"addr":"A"`), such as a runner around
    /// another leader-election library; wait until it listens (at most 20 s). Its stdin and
    /// stdout are null, its stderr is read as its log, and it is killed on drop. Its
    /// `metrics_addr` is its `/leader` address (such processes need not serve metrics).
    pub async fn spawn_command(name: &str, mut cmd: Command) -> io::Result<Candidate> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        Self::start(name, cmd, false).await
    }

    /// Spawn `cmd` (stderr piped) and wait for its listen addresses in its log.
    async fn start(name: &str, mut cmd: Command, metrics: bool) -> io::Result<Candidate> {
        let mut child = cmd.spawn()?;
        let stderr = child.stderr.take().expect("piped");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, mut addr_rx) = watch::channel((None::<SocketAddr>, None::<SocketAddr>));
        let (tag, sink) = (name.to_string(), logs.clone());
        let echo = std::env::var_os("LEADERD_TEST_ECHO").is_some();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("[{tag}] {line}");
                }
                if line.contains("http api listening") {
                    addr_tx.send_modify(|a| a.0 = logged_addr(&line));
                } else if line.contains("metrics listening") {
                    addr_tx.send_modify(|a| a.1 = logged_addr(&line));
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let found = timeout(
            Duration::from_secs(20),
            addr_rx.wait_for(|a| a.0.is_some() && (a.1.is_some() || !metrics)),
        )
        .await;
        let (addr, metrics_addr) = match found {
            Ok(Ok(a)) => {
                let addr = a.0.expect("checked");
                (addr, a.1.unwrap_or(addr))
            }
            _ => {
                let _ = child.start_kill();
                let logs = logs.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
                return Err(io::Error::other(format!(
                    "{name} did not start listening; its log:\n{logs}"
                )));
            }
        };
        Ok(Candidate {
            name: name.to_string(),
            addr,
            metrics_addr,
            child,
            logs,
        })
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// SIGKILL.
    pub fn kill9(&mut self) {
        let _ = self.child.start_kill();
    }

    /// Send a signal (e.g. `libc::SIGTERM`).
    pub fn signal(&self, sig: i32) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own child's pid has no memory-safety preconditions.
            unsafe {
                libc::kill(pid as i32, sig);
            }
        }
    }

    /// Wait for the process to exit, at most `within`.
    pub async fn wait_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        timeout(within, self.child.wait())
            .await
            .ok()
            .and_then(Result::ok)
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&mut self) -> io::Result<Option<ExitStatus>> {
        self.child.try_wait()
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// One `/leader` answer and when it was asked and answered.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Candidate name.
    pub who: String,
    /// When the request was sent.
    pub sent: Instant,
    /// When the answer arrived.
    pub recv: Instant,
    /// The answer.
    pub view: LeaderView,
}

#[derive(Default)]
struct SamplerInner {
    targets: Vec<(String, SocketAddr)>,
    samples: Vec<Sample>,
    latest: HashMap<String, LeaderView>,
}

/// Polls every target's `/leader` every `period`, concurrently, and keeps every answer.
pub struct Sampler {
    inner: Arc<Mutex<SamplerInner>>,
    tick: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Start sampling (targets are added with [`Sampler::add`]).
    pub fn start(period: Duration) -> Sampler {
        let inner = Arc::new(Mutex::new(SamplerInner::default()));
        let (tick_tx, tick) = watch::channel(0u64);
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            let client = http_client();
            let mut n = 0u64;
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let targets = shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .targets
                    .clone();
                let polls = targets.into_iter().map(|(who, addr)| {
                    let client = client.clone();
                    async move {
                        let sent = Instant::now();
                        let r = timeout(period * 10, get_leader(&client, addr)).await;
                        (who, sent, Instant::now(), r)
                    }
                });
                let results = futures::future::join_all(polls).await;
                let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
                for (who, sent, recv, r) in results {
                    // A target removed while this round was in flight keeps its samples (they
                    // are history) but must not reappear among the latest answers.
                    let current = g.targets.iter().any(|(n, _)| *n == who);
                    if let Ok(Ok(view)) = r {
                        if current {
                            g.latest.insert(who.clone(), view.clone());
                        }
                        g.samples.push(Sample {
                            who,
                            sent,
                            recv,
                            view,
                        });
                    } else {
                        g.latest.remove(&who);
                    }
                }
                drop(g);
                n += 1;
                let _ = tick_tx.send(n);
            }
        });
        Sampler { inner, tick, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SamplerInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start sampling a candidate.
    pub fn add(&self, c: &Candidate) {
        self.lock().targets.push((c.name.clone(), c.addr));
    }

    /// Stop sampling a candidate (e.g. before it is killed on purpose, to keep its last answers).
    pub fn remove(&self, name: &str) {
        let mut g = self.lock();
        g.targets.retain(|(n, _)| n != name);
        g.latest.remove(name);
    }

    /// The latest answer of each reachable target.
    pub fn latest(&self) -> HashMap<String, LeaderView> {
        self.lock().latest.clone()
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().samples.clone()
    }

    /// Wait (on sampling rounds) until `pred` holds for the latest answers; `None` on timeout.
    pub async fn wait_for<T>(
        &self,
        within: Duration,
        mut pred: impl FnMut(&HashMap<String, LeaderView>) -> Option<T>,
    ) -> Option<T> {
        let mut tick = self.tick.clone();
        let end = Instant::now() + within;
        loop {
            if let Some(t) = pred(&self.latest()) {
                return Some(t);
            }
            match timeout(
                end.saturating_duration_since(Instant::now()),
                tick.changed(),
            )
            .await
            {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Wait until exactly one candidate reports `is_leader`; returns its name and epoch.
    pub async fn wait_for_leader(
        &self,
        within: Duration,
        except: &[&str],
    ) -> Option<(String, i64)> {
        self.wait_for(within, |m| {
            let leaders: Vec<_> = m
                .iter()
                .filter(|(n, v)| v.is_leader && !except.contains(&n.as_str()))
                .collect();
            match leaders.as_slice() {
                [(n, v)] => Some(((*n).clone(), v.epoch.unwrap_or(-1))),
                _ => None,
            }
        })
        .await
    }

    /// The first instant (request sent) at which `who` was seen leading after `after`.
    pub fn first_leading(&self, who: &str, after: Instant) -> Option<Sample> {
        self.lock()
            .samples
            .iter()
            .find(|s| s.who == who && s.view.is_leader && s.sent >= after)
            .cloned()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A run of consecutive leading samples of one candidate under one epoch.
#[derive(Clone, Debug)]
pub struct Tenure {
    /// Candidate.
    pub who: String,
    /// Epoch reported.
    pub epoch: Option<i64>,
    /// Answer time of the first leading sample: it certainly led from here...
    pub from: Instant,
    /// ...to the request time of the last leading sample.
    pub to: Instant,
    /// Samples in the run.
    pub samples: usize,
}

/// Group samples into tenures.
pub fn tenures(samples: &[Sample]) -> Vec<Tenure> {
    let mut by_who: HashMap<&str, Vec<&Sample>> = HashMap::new();
    for s in samples {
        by_who.entry(&s.who).or_default().push(s);
    }
    let mut out = Vec::new();
    for (who, mut ss) in by_who {
        ss.sort_by_key(|s| s.sent);
        let mut cur: Option<Tenure> = None;
        for s in ss {
            let same = cur.as_ref().is_some_and(|t| t.epoch == s.view.epoch);
            if s.view.is_leader && same {
                let t = cur.as_mut().expect("same");
                t.to = s.sent;
                t.samples += 1;
            } else {
                out.extend(cur.take());
                if s.view.is_leader {
                    cur = Some(Tenure {
                        who: who.to_owned(),
                        epoch: s.view.epoch,
                        from: s.recv,
                        to: s.sent,
                        samples: 1,
                    });
                }
            }
        }
        out.extend(cur);
    }
    out.sort_by_key(|t| t.from);
    out
}

/// Safety violations found in samples: two candidates certainly leading at the same time,
/// an epoch shared by two tenures, or a later tenure with a lower epoch.
pub fn check(samples: &[Sample]) -> Vec<String> {
    let ts = tenures(samples);
    let mut v = Vec::new();
    for (i, a) in ts.iter().enumerate() {
        for b in &ts[i + 1..] {
            if a.who != b.who && a.from.max(b.from) < a.to.min(b.to) {
                v.push(format!(
                    "{} (epoch {:?}) and {} (epoch {:?}) both led for {:?}",
                    a.who,
                    a.epoch,
                    b.who,
                    b.epoch,
                    a.to.min(b.to) - a.from.max(b.from)
                ));
            }
            if a.epoch.is_some() && a.epoch == b.epoch && a.who != b.who {
                v.push(format!(
                    "{} and {} both led under epoch {:?}",
                    a.who, b.who, a.epoch
                ));
            }
        }
    }
    for w in ts.windows(2) {
        if let (Some(x), Some(y)) = (w[0].epoch, w[1].epoch) {
            if y < x || (y == x && w[0].who != w[1].who) {
                v.push(format!(
                    "epoch went from {x} ({}) to {y} ({})",
                    w[0].who, w[1].who
                ));
            }
        }
    }
    v
}

/// Write a kubeconfig for `token` into `dir` and return its path.
pub fn write_kubeconfig(dir: &Path, yaml: &str, token: &str) -> io::Result<PathBuf> {
    let path = dir.join(format!("kubeconfig-{token}.yaml"));
    std::fs::write(&path, yaml)?;
    Ok(path)
}

/// Resident memory, CPU time and open files of a process, as Linux's /proc tells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcUsage {
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// User + system CPU time.
    pub cpu: Duration,
    /// Open file descriptors.
    pub fds: usize,
}

/// Read `pid`'s [`ProcUsage`] from /proc; an error when the process is gone or /proc says
/// something unexpected.
pub fn proc_usage(pid: u32) -> io::Result<ProcUsage> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what} of {pid}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no VmRSS in /proc/PID/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces and parentheses) start with
    // field 3, `state`; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let ticks = tick(11)
        .zip(tick(12))
        .map(|(u, s)| u + s)
        .ok_or_else(|| bad("unexpected /proc/PID/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return Err(io::Error::last_os_error());
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(ProcUsage {
        rss_kib,
        cpu: Duration::from_secs_f64(ticks as f64 / hz as f64),
        fds,
    })
}

/// Raise this process's soft RLIMIT_NOFILE to `need`, or to the hard limit if that is lower;
/// processes started afterwards (the leaderd candidates) inherit it. Returns the soft limit now
/// in force, which the caller compares with what it needs.
pub fn raise_nofile(need: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < need {
        lim.rlim_cur = need.min(lim.rlim_max);
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(
        who: &str,
        sent_ms: u64,
        recv_ms: u64,
        leader: bool,
        epoch: i64,
        base: Instant,
    ) -> Sample {
        Sample {
            who: who.into(),
            sent: base + Duration::from_millis(sent_ms),
            recv: base + Duration::from_millis(recv_ms),
            view: LeaderView {
                lease: "l".into(),
                namespace: "n".into(),
                identity: who.into(),
                leader: Some(who.into()),
                is_leader: leader,
                epoch: Some(epoch),
                lease_uid: None,
                valid_for_ms: None,
                observed_at: None,
                app_healthy: None,
            },
        }
    }

    #[test]
    fn check_flags_overlap_and_falling_epochs_but_not_handovers() {
        let t = Instant::now();
        let ok = vec![
            sample("a", 0, 1, true, 1, t),
            sample("a", 10, 11, true, 1, t),
            sample("b", 12, 13, true, 2, t),
            sample("b", 20, 21, true, 2, t),
        ];
        assert!(check(&ok).is_empty(), "{:?}", check(&ok));
        let overlap = vec![
            sample("a", 0, 1, true, 1, t),
            sample("a", 30, 31, true, 1, t),
            sample("b", 10, 11, true, 2, t),
            sample("b", 20, 21, true, 2, t),
        ];
        assert_eq!(check(&overlap).len(), 1);
        let falling = vec![
            sample("a", 0, 1, true, 5, t),
            sample("b", 10, 11, true, 4, t),
        ];
        assert_eq!(check(&falling).len(), 1);
    }

    #[test]
    fn proc_usage_reads_this_process_and_a_child() {
        let before = proc_usage(std::process::id()).expect("readable");
        assert!(before.rss_kib > 0 && before.fds >= 3, "{before:?}");
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let after = proc_usage(std::process::id()).expect("readable");
        assert!(after.cpu > before.cpu, "{before:?} -> {after:?}");
        // A child: at least stdin, stdout and stderr (more while it is between fork and exec).
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sleep starts");
        let u = proc_usage(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let u = u.expect("readable");
        assert!(u.fds >= 3, "{u:?}");
        assert!(u.rss_kib > 0, "{u:?}");
        assert!(proc_usage(child.id()).is_err(), "gone after wait");
    }

    #[test]
    fn raise_nofile_never_lowers_the_limit() {
        let now = raise_nofile(0).expect("getrlimit");
        assert_eq!(raise_nofile(now).expect("again"), now);
        assert!(raise_nofile(now + 1).expect("raise") >= now);
    }
}

//! The process runner: one leaderd (or any program that serves leaderd's `/leader` JSON) as a
//! child of the test, its log captured, signalled and reaped by one task that owns it.
//!
//! Every user of leaderd processes starts them here: the process tests, the demo, the
//! benchmarks (also for the peer electors, through [`Candidate::spawn_command`]) and the chaos
//! runner (with its environment for libfaketime, a log file and a hook that reads every line).

use std::fmt;
use std::io::{self, Write as _};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{mpsc, watch};
use tokio::time::timeout;

/// How to start one leaderd candidate.
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
    /// `--config FILE` instead of `--lease-name` and the timing flags (the file names both).
    pub config: Option<PathBuf>,
    /// Environment: `Some` sets a variable, `None` removes it (e.g. libfaketime's `LD_PRELOAD`
    /// and `FAKETIME`). `KUBECONFIG` and `RUST_LOG` are set, `POD_NAME` and `POD_NAMESPACE`
    /// removed, before these apply.
    pub env: Vec<(String, Option<String>)>,
    /// Also write the log to a file.
    pub log_file: Option<LogFile>,
    /// Called with every log line and its arrival.
    pub on_log: Option<LogHook>,
}

impl CandidateSpec {
    /// A candidate with no more flags, environment, log file or hook.
    pub fn new(
        bin: impl Into<PathBuf>,
        kubeconfig: PathBuf,
        lease: &str,
        namespace: &str,
        identity: &str,
        timing: (Duration, Duration, Duration),
    ) -> CandidateSpec {
        CandidateSpec {
            bin: bin.into(),
            kubeconfig,
            lease: lease.into(),
            namespace: namespace.into(),
            identity: identity.into(),
            timing,
            extra_args: Vec::new(),
            config: None,
            env: Vec::new(),
            log_file: None,
            on_log: None,
        }
    }
}

/// How to start one leaderd candidate with the etcd backend (`--backend etcd`): no kubeconfig,
/// no namespace (the backend refuses `--namespace`).
#[derive(Clone, Debug)]
pub struct EtcdCandidateSpec {
    /// The leaderd binary.
    pub bin: PathBuf,
    /// `--etcd-endpoints`: comma-separated `http://host:port` URLs.
    pub endpoints: String,
    /// `--etcd-prefix`, when set (else leaderd's default).
    pub prefix: Option<String>,
    /// `--lease-name`: the election's name.
    pub name: String,
    /// The candidate's identity (the value of its election key).
    pub identity: String,
    /// `--lease-duration` (the etcd lease TTL, whole seconds), `--renew-deadline`,
    /// `--retry-period` (the keep-alive interval).
    pub timing: (Duration, Duration, Duration),
    /// More flags.
    pub extra_args: Vec<String>,
    /// Environment, as in [`CandidateSpec::env`] (`KUBECONFIG`, `POD_NAME` and
    /// `POD_NAMESPACE` removed and `RUST_LOG` set before these apply).
    pub env: Vec<(String, Option<String>)>,
    /// Also write the log to a file.
    pub log_file: Option<LogFile>,
    /// Called with every log line and its arrival.
    pub on_log: Option<LogHook>,
}

impl EtcdCandidateSpec {
    /// A candidate with leaderd's default prefix and no more flags, environment, log file or
    /// hook.
    pub fn new(
        bin: impl Into<PathBuf>,
        endpoints: &str,
        name: &str,
        identity: &str,
        timing: (Duration, Duration, Duration),
    ) -> EtcdCandidateSpec {
        EtcdCandidateSpec {
            bin: bin.into(),
            endpoints: endpoints.into(),
            prefix: None,
            name: name.into(),
            identity: identity.into(),
            timing,
            extra_args: Vec::new(),
            env: Vec::new(),
            log_file: None,
            on_log: None,
        }
    }
}

/// Where a process's log is written: a header line, then every line prefixed with the seconds
/// since `t0` at which it arrived.
#[derive(Clone, Debug)]
pub struct LogFile {
    /// The file (created or truncated).
    pub path: PathBuf,
    /// The clock's zero (e.g. the start of a chaos run).
    pub t0: Instant,
    /// What the header calls the process (e.g. `c2#3 (clock +1h x0.95)`).
    pub title: String,
}

/// What a [`LogHook`] calls.
type LogFn = dyn Fn(Instant, &str) + Send + Sync;

/// A function called with every log line of a process and the instant it arrived.
#[derive(Clone)]
pub struct LogHook(Arc<LogFn>);

impl LogHook {
    /// Wrap a function.
    pub fn new(f: impl Fn(Instant, &str) + Send + Sync + 'static) -> LogHook {
        LogHook(Arc::new(f))
    }
}

impl fmt::Debug for LogHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("LogHook")
    }
}

/// How and when a process ended.
#[derive(Clone, Copy, Debug)]
pub struct Exit {
    /// When the runner reaped it.
    pub at: Instant,
    /// Its status (None if waiting for it failed).
    pub status: Option<ExitStatus>,
}

/// What the task that owns the child is asked to do.
enum Control {
    Kill,
    Signal(i32),
}

/// One running (or ended) process. Dropping it kills the process.
pub struct Candidate {
    /// Its identity.
    pub name: String,
    /// Its `/leader` address.
    pub addr: SocketAddr,
    /// Its `/metrics` address.
    pub metrics_addr: SocketAddr,
    pid: Option<u32>,
    control: mpsc::UnboundedSender<Control>,
    exit: watch::Receiver<Option<Exit>>,
    logs: Arc<Mutex<Vec<String>>>,
}

fn human(d: Duration) -> String {
    format!("{}ms", d.as_millis())
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
    /// Start a candidate and wait until its API and metrics listen (at most 20 s).
    pub async fn spawn(spec: &CandidateSpec) -> io::Result<Candidate> {
        let (d, r, p) = spec.timing;
        let mut cmd = Command::new(&spec.bin);
        match &spec.config {
            None => cmd
                .args(["--lease-name", &spec.lease])
                .args(["--lease-duration", &human(d), "--renew-deadline", &human(r)])
                .args(["--retry-period", &human(p)]),
            Some(file) => cmd.arg("--config").arg(file),
        };
        cmd.args(["--namespace", &spec.namespace])
            .args(["--identity", &spec.identity])
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
            );
        for (k, v) in &spec.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        Self::start(
            &spec.identity,
            cmd,
            true,
            spec.log_file.clone(),
            spec.on_log.clone(),
        )
        .await
    }

    /// Start a candidate with the etcd backend and wait until its API and metrics listen (at
    /// most 20 s): `leaderd --backend etcd --etcd-endpoints URLS [--etcd-prefix P]
    /// --lease-name NAME --identity ID` and the timing, on 127.0.0.1 ports of its choosing.
    pub async fn spawn_etcd(spec: &EtcdCandidateSpec) -> io::Result<Candidate> {
        let (d, r, p) = spec.timing;
        let mut cmd = Command::new(&spec.bin);
        cmd.args(["--backend", "etcd", "--etcd-endpoints", &spec.endpoints]);
        if let Some(prefix) = &spec.prefix {
            cmd.args(["--etcd-prefix", prefix]);
        }
        // The lease TTL is whole seconds: say so when it is.
        let duration = if d.subsec_nanos() == 0 {
            format!("{}s", d.as_secs())
        } else {
            human(d)
        };
        cmd.args(["--lease-name", &spec.name, "--identity", &spec.identity])
            .args(["--lease-duration", &duration, "--renew-deadline", &human(r)])
            .args(["--retry-period", &human(p)])
            .args([
                "--http-addr",
                "127.0.0.1:0",
                "--metrics-addr",
                "127.0.0.1:0",
            ])
            .args(&spec.extra_args)
            .env_remove("KUBECONFIG")
            .env_remove("POD_NAME")
            .env_remove("POD_NAMESPACE")
            .env(
                "RUST_LOG",
                std::env::var("LEADERD_CHILD_LOG").unwrap_or_else(|_| "info".into()),
            );
        for (k, v) in &spec.env {
            match v {
                Some(v) => cmd.env(k, v),
                None => cmd.env_remove(k),
            };
        }
        Self::start(
            &spec.identity,
            cmd,
            true,
            spec.log_file.clone(),
            spec.on_log.clone(),
        )
        .await
    }

    /// Start any process that serves leaderd's `/leader` JSON and logs, on stderr, a line
    /// containing `http api listening` and `addr=A` (or `"addr":"A"`), such as a runner around
    /// another leader-election library; wait until it listens (at most 20 s). Its stdin and
    /// stdout are null, its stderr is read as its log. Its `metrics_addr` is its `/leader`
    /// address (such processes need not serve metrics).
    pub async fn spawn_command(name: &str, cmd: Command) -> io::Result<Candidate> {
        Self::start(name, cmd, false, None, None).await
    }

    /// Spawn `cmd` (stderr piped), hand the child to its owner task, and wait for its listen
    /// addresses in its log.
    async fn start(
        name: &str,
        mut cmd: Command,
        metrics: bool,
        log_file: Option<LogFile>,
        on_log: Option<LogHook>,
    ) -> io::Result<Candidate> {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let started = Instant::now();
        let mut child = cmd.spawn()?;
        let pid = child.id();
        let stderr = child.stderr.take().expect("piped");
        let mut file = match &log_file {
            Some(l) => {
                let mut f = std::fs::File::create(&l.path).map_err(|e| {
                    io::Error::new(e.kind(), format!("creating {}: {e}", l.path.display()))
                })?;
                writeln!(
                    f,
                    "# {}: pid {}, started at +{:.3}s of the run",
                    l.title,
                    pid.unwrap_or(0),
                    started.duration_since(l.t0).as_secs_f64()
                )?;
                Some((f, l.t0))
            }
            None => None,
        };
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, mut addr_rx) = watch::channel((None::<SocketAddr>, None::<SocketAddr>));
        let (tag, sink) = (name.to_string(), logs.clone());
        let echo = std::env::var_os("LEADERD_TEST_ECHO").is_some();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                let at = Instant::now();
                if echo {
                    eprintln!("[{tag}] {line}");
                }
                if let Some((f, t0)) = &mut file {
                    let _ = writeln!(f, "+{:.3} {line}", at.duration_since(*t0).as_secs_f64());
                }
                if let Some(hook) = &on_log {
                    (hook.0)(at, &line);
                }
                if line.contains("http api listening") {
                    addr_tx.send_modify(|a| a.0 = logged_addr(&line));
                } else if line.contains("metrics listening") {
                    addr_tx.send_modify(|a| a.1 = logged_addr(&line));
                }
                sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
            }
        });
        let (control, control_rx) = mpsc::unbounded_channel();
        let (exit_tx, exit) = watch::channel(None);
        tokio::spawn(own(child, pid, control_rx, exit_tx));
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
            found => {
                let _ = control.send(Control::Kill);
                let logs = logs.lock().unwrap_or_else(|e| e.into_inner()).join("\n");
                let file = log_file.map_or(String::new(), |l| {
                    format!(" (also in {})", l.path.display())
                });
                let what = match found {
                    Ok(_) => "closed its log (it ended) before it listened",
                    Err(_) => "did not start listening within 20 s",
                };
                return Err(io::Error::other(format!(
                    "{name} {what}; its log{file}:\n{logs}"
                )));
            }
        };
        Ok(Candidate {
            name: name.to_string(),
            addr,
            metrics_addr,
            pid,
            control,
            exit,
            logs,
        })
    }

    /// The process id, while it has not been reaped.
    pub fn pid(&self) -> Option<u32> {
        self.pid.filter(|_| self.exit.borrow().is_none())
    }

    /// SIGKILL.
    pub fn kill9(&self) {
        let _ = self.control.send(Control::Kill);
    }

    /// Send a signal (e.g. `libc::SIGTERM`, `libc::SIGSTOP`), unless it has been reaped.
    pub fn signal(&self, sig: i32) {
        let _ = self.control.send(Control::Signal(sig));
    }

    /// Wait for the process to exit, at most `within`.
    pub async fn wait_exit(&self, within: Duration) -> Option<ExitStatus> {
        let mut rx = self.exit.clone();
        let exit = timeout(within, rx.wait_for(Option::is_some))
            .await
            .ok()?
            .ok()?;
        exit.and_then(|e| e.status)
    }

    /// The exit status, if it has exited.
    pub fn try_wait(&self) -> io::Result<Option<ExitStatus>> {
        Ok(self.exit.borrow().and_then(|e| e.status))
    }

    /// How and when it ended, if it has.
    pub fn exit(&self) -> Option<Exit> {
        *self.exit.borrow()
    }

    /// A receiver that changes once, when the process has ended.
    pub fn exit_watch(&self) -> watch::Receiver<Option<Exit>> {
        self.exit.clone()
    }

    /// Everything it logged so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Own the child: signal it when asked (only while it is not reaped, so the pid is still
/// ours), reap it, and report the exit. When the [`Candidate`] is dropped, kill it.
async fn own(
    mut child: Child,
    pid: Option<u32>,
    mut control: mpsc::UnboundedReceiver<Control>,
    exit: watch::Sender<Option<Exit>>,
) {
    let status = loop {
        tokio::select! {
            st = child.wait() => break st,
            c = control.recv() => match c {
                Some(Control::Kill) => {
                    let _ = child.start_kill();
                }
                Some(Control::Signal(sig)) => {
                    if let Some(pid) = pid {
                        // SAFETY: kill(2) on our own child's pid, which is not reaped yet (this
                        // task reaps it), so it cannot name another process; no memory is touched.
                        unsafe {
                            libc::kill(pid as i32, sig);
                        }
                    }
                }
                None => {
                    let _ = child.start_kill();
                    break child.wait().await;
                }
            },
        }
    };
    let _ = exit.send(Some(Exit {
        at: Instant::now(),
        status: status.ok(),
    }));
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::ExitStatusExt as _;

    use super::*;

    /// A stand-in for leaderd: logs its listen lines and `$GREETING`, then waits.
    fn fake_leaderd(dir: &std::path::Path) -> PathBuf {
        let bin = dir.join("fake-leaderd");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho 'http api listening addr=127.0.0.1:9' >&2\n\
             echo 'metrics listening addr=127.0.0.1:10' >&2\n\
             echo \"greeting=${GREETING:-none} pod=${POD_NAME:-none}\" >&2\nexec sleep 30\n",
        )
        .expect("write script");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        bin
    }

    #[tokio::test]
    async fn runs_with_its_env_and_log_and_reports_signals_and_kills() {
        let dir = tempfile::tempdir().expect("temp dir");
        let t0 = Instant::now();
        let (lines_tx, mut lines) = mpsc::unbounded_channel();
        let mut spec = CandidateSpec::new(
            fake_leaderd(dir.path()),
            dir.path().join("kubeconfig"),
            "l",
            "ns",
            "c1",
            (
                Duration::from_secs(3),
                Duration::from_secs(2),
                Duration::from_millis(250),
            ),
        );
        spec.env = vec![
            ("GREETING".into(), Some("hello".into())),
            ("POD_NAME".into(), None),
        ];
        spec.log_file = Some(LogFile {
            path: dir.path().join("c1.log"),
            t0,
            title: "c1#1".into(),
        });
        spec.on_log = Some(LogHook::new(move |_, line| {
            let _ = lines_tx.send(line.to_string());
        }));
        let c = Candidate::spawn(&spec).await.expect("starts");
        let greeting = "greeting=hello pod=none".to_string();
        // The hook sees every line, the greeting after the listen lines.
        let mut hooked = Vec::new();
        while !hooked.contains(&greeting) {
            let line = timeout(Duration::from_secs(5), lines.recv()).await;
            hooked.push(line.expect("a line").expect("open"));
        }
        assert!(c.logs().contains(&greeting), "{:?}", c.logs());
        assert_eq!(c.addr, "127.0.0.1:9".parse().unwrap());
        assert_eq!(c.metrics_addr, "127.0.0.1:10".parse().unwrap());
        assert!(c.pid().is_some() && c.exit().is_none());
        c.signal(libc::SIGTERM);
        let status = c.wait_exit(Duration::from_secs(5)).await.expect("exits");
        assert_eq!(status.signal(), Some(libc::SIGTERM));
        let exit = c.exit().expect("recorded");
        assert!(exit.at > t0);
        assert!(c.pid().is_none(), "no pid once reaped");
        c.signal(libc::SIGKILL); // after the exit: nothing to signal, no harm
        let file = std::fs::read_to_string(dir.path().join("c1.log")).expect("log file");
        assert!(file.starts_with("# c1#1: pid "), "{file}");
        assert!(file.contains(&format!(" {greeting}\n")), "{file}");

        let c = Candidate::spawn(&spec).await.expect("starts again");
        c.kill9();
        let status = c.wait_exit(Duration::from_secs(5)).await.expect("exits");
        assert_eq!(status.signal(), Some(libc::SIGKILL));
    }

    #[tokio::test]
    async fn spawn_etcd_passes_the_etcd_flags_and_no_kubeconfig_or_pod() {
        let dir = tempfile::tempdir().expect("temp dir");
        let bin = dir.path().join("fake-leaderd-etcd");
        std::fs::write(
            &bin,
            "#!/bin/sh\necho 'http api listening addr=127.0.0.1:9' >&2\n\
             echo 'metrics listening addr=127.0.0.1:10' >&2\n\
             echo \"args=$*\" >&2\n\
             echo \"env=${KUBECONFIG:-none},${POD_NAME:-none},${POD_NAMESPACE:-none}\" >&2\n\
             exec sleep 30\n",
        )
        .expect("write script");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let mut spec = EtcdCandidateSpec::new(
            &bin,
            "http://127.0.0.1:1,http://127.0.0.1:2",
            "payouts",
            "e1",
            (
                Duration::from_secs(3),
                Duration::from_secs(2),
                Duration::from_millis(250),
            ),
        );
        spec.prefix = Some("/p/".into());
        spec.extra_args = vec!["--x".into()];
        // Whatever the test process has, KUBECONFIG and POD_* do not reach the child.
        spec.env = vec![("GREETING".into(), Some("hi".into()))];
        let c = Candidate::spawn_etcd(&spec).await.expect("starts");
        let want = "args=--backend etcd --etcd-endpoints http://127.0.0.1:1,http://127.0.0.1:2 \
                    --etcd-prefix /p/ --lease-name payouts --identity e1 --lease-duration 3s \
                    --renew-deadline 2000ms --retry-period 250ms --http-addr 127.0.0.1:0 \
                    --metrics-addr 127.0.0.1:0 --x";
        let mut logs = Vec::new();
        for _ in 0..100 {
            logs = c.logs();
            if logs.iter().any(|l| l.starts_with("env=")) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(logs.iter().any(|l| l == want), "{logs:?}");
        assert!(logs.iter().any(|l| l == "env=none,none,none"), "{logs:?}");
        assert_eq!(c.name, "e1");
        assert_eq!(c.metrics_addr, "127.0.0.1:10".parse().unwrap());
    }

    #[tokio::test]
    async fn a_process_that_ends_before_it_listens_is_an_error_at_once_with_its_log() {
        let mut cmd = Command::new("sh");
        cmd.args(["-c", "echo 'no listening here' >&2; exit 3"]);
        let started = std::time::Instant::now();
        let err = match Candidate::spawn_command("quiet", cmd).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("it never listened"),
        };
        assert!(err.contains("no listening here"), "{err}");
        // Its log ends with it: no need to wait out the 20 s.
        assert!(started.elapsed() < Duration::from_secs(10), "{err}");
    }
}

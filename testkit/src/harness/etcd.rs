//! A real etcd for tests: [`EtcdCluster`], one or three `etcd` processes on 127.0.0.1 (free
//! ports, data and logs in a temporary directory) that a test stops, kills, pauses and
//! restarts; and [`HoldProxy`], a TCP proxy in front of one member that can hold every byte in
//! both directions while keeping the connections open (a silent network cut).
//!
//! The binaries are `etcd` and `etcdctl` from `PATH` (Debian's `etcd-server` and `etcd-client`;
//! 3.4 is what CI installs), or the files named by `LEADERD_ETCD` and `LEADERD_ETCDCTL`. A
//! missing binary is an error that says so: tests fail, they never skip.

use std::fs::{File, OpenOptions};
use std::io::{self, Read as _, Seek as _, SeekFrom};
use std::net::{SocketAddr, TcpListener as StdListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::{sleep, timeout, Instant};

use super::http::{get, http_client};

/// How long [`EtcdCluster::start`] and [`EtcdCluster::restart`] wait for health.
const HEALTHY_WITHIN: Duration = Duration::from_secs(20);

/// A binary named by the environment variable `var`, else found on `PATH`.
fn find_bin(var: &str, name: &str, package: &str) -> io::Result<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!("{var}={} is not a file", p.display()),
            ))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into());
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "`{name}` is not on PATH: the etcd tests need a real etcd (Debian: apt-get \
                     install {package}; or set {var} to the binary)"
                ),
            )
        })
}

/// The `etcd` binary the harness runs.
pub fn etcd_bin() -> io::Result<PathBuf> {
    find_bin("LEADERD_ETCD", "etcd", "etcd-server")
}

/// The `etcdctl` binary the harness runs.
pub fn etcdctl_bin() -> io::Result<PathBuf> {
    find_bin("LEADERD_ETCDCTL", "etcdctl", "etcd-client")
}

/// `n` distinct free ports on 127.0.0.1 (all held while choosing, then let go).
fn free_ports(n: usize) -> io::Result<Vec<u16>> {
    let held: Vec<StdListener> = (0..n)
        .map(|_| StdListener::bind("127.0.0.1:0"))
        .collect::<io::Result<_>>()?;
    held.iter()
        .map(|l| l.local_addr().map(|a| a.port()))
        .collect()
}

/// The last `n` lines of a file (or why it could not be read).
fn tail(path: &Path, n: usize) -> String {
    let mut f = match File::open(path) {
        Ok(f) => f,
        Err(e) => return format!("({}: {e})", path.display()),
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(64 * 1024)));
    let mut s = String::new();
    let _ = f.read_to_string(&mut s);
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// One etcd member.
struct Member {
    name: String,
    client_port: u16,
    peer_port: u16,
    data_dir: PathBuf,
    log: PathBuf,
    child: Option<Child>,
}

impl Member {
    fn client_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    fn peer_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.peer_port)
    }

    fn pid(&self) -> Option<i32> {
        self.child.as_ref().map(|c| c.id() as i32)
    }

    fn signal(&self, sig: i32) {
        if let Some(pid) = self.pid() {
            // SAFETY: kill(2) on our own child, which is not reaped yet (only this struct reaps
            // it, and it drops the Child when it does), so the pid names no other process.
            unsafe {
                libc::kill(pid, sig);
            }
        }
    }

    /// SIGKILL and reap.
    fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Distinguishes the clusters of one test process (with the pid, the cluster token).
static CLUSTERS: AtomicU64 = AtomicU64::new(0);

/// One or more etcd members on 127.0.0.1, each with its own client and peer port, data
/// directory and log file in a temporary directory. Dropping it kills every member (SIGKILL)
/// and reaps it.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    bin: PathBuf,
    ctl: PathBuf,
    token: String,
    members: Vec<Member>,
}

impl EtcdCluster {
    /// Start `members` members (m1..mN, a new cluster with its own token) and wait until every
    /// one answers `/health` with `{"health":"true"}` (at most 20 s). Ports are chosen free;
    /// if one was taken meanwhile by someone else the whole start is tried again (3 times).
    pub async fn start(members: usize) -> io::Result<EtcdCluster> {
        assert!(members >= 1, "an etcd cluster needs a member");
        let bin = etcd_bin()?;
        let ctl = etcdctl_bin()?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut c = Self::launch(&bin, &ctl, members)?;
            match c.wait_all_healthy().await {
                Ok(()) => return Ok(c),
                Err(e) => {
                    let port_taken = (0..members)
                        .any(|i| tail(&c.members[i].log, 200).contains("address already in use"));
                    if port_taken && attempt < 3 {
                        continue; // dropping c kills its members
                    }
                    return Err(e);
                }
            }
        }
    }

    fn launch(bin: &Path, ctl: &Path, n: usize) -> io::Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("leaderd-etcd-").tempdir()?;
        let ports = free_ports(2 * n)?;
        let token = format!(
            "leaderd-test-{}-{}-{}",
            std::process::id(),
            CLUSTERS.fetch_add(1, Ordering::Relaxed),
            fastrand::u64(..)
        );
        let members = (0..n)
            .map(|i| {
                let name = format!("m{}", i + 1);
                Member {
                    client_port: ports[2 * i],
                    peer_port: ports[2 * i + 1],
                    data_dir: dir.path().join(format!("{name}.data")),
                    log: dir.path().join(format!("{name}.log")),
                    name,
                    child: None,
                }
            })
            .collect();
        let mut c = EtcdCluster {
            dir,
            bin: bin.to_path_buf(),
            ctl: ctl.to_path_buf(),
            token,
            members,
        };
        for i in 0..n {
            c.spawn_member(i, "new")?;
        }
        Ok(c)
    }

    fn initial_cluster(&self) -> String {
        self.members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url()))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Start member `i`'s process (its log appended to its file).
    fn spawn_member(&mut self, i: usize, state: &str) -> io::Result<()> {
        let initial = self.initial_cluster();
        let m = &self.members[i];
        let log = OpenOptions::new().create(true).append(true).open(&m.log)?;
        let mut cmd = Command::new(&self.bin);
        cmd.args(["--name", &m.name])
            .arg("--data-dir")
            .arg(&m.data_dir)
            .args(["--listen-client-urls", &m.client_url()])
            .args(["--advertise-client-urls", &m.client_url()])
            .args(["--listen-peer-urls", &m.peer_url()])
            .args(["--initial-advertise-peer-urls", &m.peer_url()])
            .args(["--initial-cluster", &initial])
            .args(["--initial-cluster-token", &self.token])
            .args(["--initial-cluster-state", state])
            .args(["--logger", "zap", "--log-outputs", "stderr"])
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCD") {
                cmd.env_remove(k);
            }
        }
        let child = cmd.spawn().map_err(|e| {
            io::Error::new(e.kind(), format!("starting {}: {e}", self.bin.display()))
        })?;
        self.members[i].child = Some(child);
        Ok(())
    }

    /// Whether member `i` answers `/health` with `{"health":"true"}` now (1 s at most).
    pub async fn healthy(&self, i: usize) -> bool {
        let addr: SocketAddr = ([127, 0, 0, 1], self.members[i].client_port).into();
        let client = http_client();
        matches!(
            timeout(Duration::from_secs(1), get(&client, addr, "/health")).await,
            Ok(Ok(body)) if String::from_utf8_lossy(&body).contains("\"health\":\"true\"")
        )
    }

    /// Wait until member `i` is healthy; an error with its log's tail if it is not within
    /// `within` or if its process ended.
    pub async fn wait_healthy(&mut self, i: usize, within: Duration) -> io::Result<()> {
        let end = Instant::now() + within;
        loop {
            if self.healthy(i).await {
                return Ok(());
            }
            let m = &mut self.members[i];
            let ended = match m.child.as_mut().map(|c| c.try_wait()) {
                Some(Ok(Some(st))) => Some(format!("exited with {st}")),
                None => Some("is not running".to_owned()),
                _ => None,
            };
            if ended.is_some() || Instant::now() >= end {
                let why = ended.unwrap_or_else(|| format!("was not healthy within {within:?}"));
                return Err(io::Error::other(format!(
                    "etcd member {} ({}) {why}; the tail of {}:\n{}",
                    m.name,
                    m.client_url(),
                    m.log.display(),
                    tail(&m.log, 30)
                )));
            }
            sleep(Duration::from_millis(50)).await;
        }
    }

    async fn wait_all_healthy(&mut self) -> io::Result<()> {
        for i in 0..self.members.len() {
            self.wait_healthy(i, HEALTHY_WITHIN).await?;
        }
        Ok(())
    }

    /// How many members it has (running or not).
    pub fn len(&self) -> usize {
        self.members.len()
    }

    /// Whether it has no member (never: [`EtcdCluster::start`] needs one).
    pub fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    /// Every member's client URL, comma-separated (`--etcd-endpoints`, `etcdctl --endpoints`).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(Member::client_url)
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Member `i`'s client URL (`http://127.0.0.1:PORT`).
    pub fn endpoint(&self, i: usize) -> String {
        self.members[i].client_url()
    }

    /// Member `i`'s client address.
    pub fn client_addr(&self, i: usize) -> SocketAddr {
        ([127, 0, 0, 1], self.members[i].client_port).into()
    }

    /// Member `i`'s process id, while it runs (or is paused).
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.members[i].child.as_ref().map(Child::id)
    }

    /// The temporary directory with every member's data directory and log.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Member `i`'s log file.
    pub fn log_path(&self, i: usize) -> &Path {
        &self.members[i].log
    }

    /// The last `n` lines of every member's log, under a header naming the file.
    pub fn log_tails(&self, n: usize) -> String {
        self.members
            .iter()
            .map(|m| {
                format!(
                    "----- etcd {} ({}) -----\n{}",
                    m.name,
                    m.log.display(),
                    tail(&m.log, n)
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// SIGKILL member `i` and reap it.
    pub fn kill9(&mut self, i: usize) {
        self.members[i].kill9();
    }

    /// SIGTERM member `i` (and SIGCONT, in case it is paused) and wait for it to exit (SIGKILL
    /// after 10 s). A member that is the raft leader first hands leadership over, serving
    /// meanwhile: with a peer down or paused that can take seconds.
    pub async fn stop(&mut self, i: usize) {
        let m = &mut self.members[i];
        m.signal(libc::SIGTERM);
        m.signal(libc::SIGCONT);
        let end = Instant::now() + Duration::from_secs(10);
        while let Some(c) = m.child.as_mut() {
            match c.try_wait() {
                Ok(Some(_)) | Err(_) => {
                    m.child = None;
                }
                Ok(None) if Instant::now() >= end => m.kill9(),
                Ok(None) => sleep(Duration::from_millis(20)).await,
            }
        }
    }

    /// SIGSTOP member `i`: it keeps its connections but answers nothing.
    pub fn pause(&self, i: usize) {
        self.members[i].signal(libc::SIGSTOP);
    }

    /// SIGCONT member `i`.
    pub fn resume(&self, i: usize) {
        self.members[i].signal(libc::SIGCONT);
    }

    /// Start member `i` again (after [`stop`](Self::stop) or [`kill9`](Self::kill9)) from its
    /// data directory, same ports, `--initial-cluster-state existing`, and wait until it is
    /// healthy (which needs a quorum of the members up).
    pub async fn restart(&mut self, i: usize) -> io::Result<()> {
        self.restart_nowait(i)?;
        self.wait_healthy(i, HEALTHY_WITHIN).await
    }

    /// Start member `i` again without waiting for it (e.g. to bring back two members of three
    /// before either can be healthy).
    pub fn restart_nowait(&mut self, i: usize) -> io::Result<()> {
        if self.members[i].child.is_some() {
            return Err(io::Error::other(format!(
                "etcd member {} is still running",
                self.members[i].name
            )));
        }
        self.spawn_member(i, "existing")
    }

    /// An `etcdctl` command (API v3) with `--endpoints` set to every member, to add arguments
    /// to and run.
    pub fn etcdctl_command(&self) -> tokio::process::Command {
        self.etcdctl_command_at(&self.endpoints())
    }

    /// An `etcdctl` command (API v3) with `--endpoints` set to `endpoints` (comma-separated
    /// URLs: one member, a proxy). Only one `--endpoints` may be given: etcdctl adds up repeated
    /// ones.
    pub fn etcdctl_command_at(&self, endpoints: &str) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(&self.ctl);
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("ETCDCTL") {
                cmd.env_remove(k);
            }
        }
        cmd.env("ETCDCTL_API", "3")
            .args(["--endpoints", endpoints])
            .stdin(Stdio::null())
            .kill_on_drop(true);
        cmd
    }

    /// Run `etcdctl --endpoints ALL ARGS` (API v3) and return its output (within 30 s).
    pub async fn etcdctl(&self, args: &[&str]) -> io::Result<Output> {
        let mut cmd = self.etcdctl_command();
        cmd.args(args);
        timeout(Duration::from_secs(30), cmd.output())
            .await
            .map_err(|_| io::Error::other(format!("etcdctl {args:?} ran over 30 s")))?
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in &mut self.members {
            m.kill9();
        }
    }
}

/// A TCP proxy on 127.0.0.1 in front of one address. [`hold`](Self::hold) stops it forwarding
/// any byte, either way, on every connection, while keeping them all open (and accepting new
/// ones without connecting them onwards): to the client it is a network cut, its calls hang.
/// [`release`](Self::release) forwards again, what was held included. Dropping it closes every
/// connection.
pub struct HoldProxy {
    addr: SocketAddr,
    held: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HoldProxy {
    /// Listen on 127.0.0.1 (a free port) and forward every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> io::Result<HoldProxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (held, held_rx) = watch::channel(false);
        let task = tokio::spawn(async move {
            // Owned by this task: aborting it drops the set, which aborts every connection.
            let mut conns = JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((down, _)) = accepted else { continue };
                        conns.spawn(connection(down, upstream, held_rx.clone()));
                    }
                    Some(_) = conns.join_next(), if !conns.is_empty() => {}
                }
            }
        });
        Ok(HoldProxy { addr, held, task })
    }

    /// Start a proxy in front of an `http://host:port` URL (e.g. [`EtcdCluster::endpoint`]).
    pub async fn in_front_of(url: &str) -> io::Result<HoldProxy> {
        let hostport = url
            .strip_prefix("http://")
            .ok_or_else(|| io::Error::other(format!("not an http:// URL: {url}")))?;
        let upstream: SocketAddr = hostport
            .trim_end_matches('/')
            .parse()
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{hostport}: {e}")))?;
        Self::start(upstream).await
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://` and where it listens.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stop forwarding (the connections stay open).
    pub fn hold(&self) {
        self.held.send_replace(true);
    }

    /// Forward again.
    pub fn release(&self) {
        self.held.send_replace(false);
    }

    /// Whether it holds.
    pub fn is_held(&self) -> bool {
        *self.held.borrow()
    }
}

impl Drop for HoldProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One proxied connection: connect onwards once not held, then copy both ways. A connection
/// accepted while held whose client gave up (closed it) before the release is dropped, not
/// forwarded: through a real cut its bytes would never have arrived.
async fn connection(mut down: TcpStream, upstream: SocketAddr, mut held: watch::Receiver<bool>) {
    let mut early = Vec::new();
    if *held.borrow() {
        if held.wait_for(|h| !*h).await.is_err() {
            return;
        }
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            match timeout(Duration::from_millis(20), down.read(&mut buf)).await {
                Err(_) => break, // nothing more for now: the client still waits
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => early.extend_from_slice(&buf[..n]),
            }
        }
    }
    let Ok(mut up) = TcpStream::connect(upstream).await else {
        return;
    };
    if up.write_all(&early).await.is_err() {
        return;
    }
    let _ = down.set_nodelay(true);
    let _ = up.set_nodelay(true);
    let (down_r, down_w) = down.into_split();
    let (up_r, up_w) = up.into_split();
    tokio::join!(pipe(down_r, up_w, held.clone()), pipe(up_r, down_w, held));
}

/// Copy `from` to `to`, each chunk only once not held; at EOF shut `to`'s write side.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut held: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => {
                let _ = to.shutdown().await;
                return;
            }
            Ok(n) => n,
        };
        if held.wait_for(|h| !*h).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(out: &Output) -> String {
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }

    /// `etcdctl --endpoints URL ARGS` against one endpoint (or a proxy), 1 s command timeout.
    async fn ctl_at(c: &EtcdCluster, url: &str, args: &[&str]) -> Output {
        let mut cmd = c.etcdctl_command_at(url);
        cmd.args(["--command-timeout", "1s"]).args(args);
        cmd.output().await.expect("etcdctl runs")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_members_keep_answering_with_one_killed_and_one_restarted() {
        let mut c = EtcdCluster::start(3).await.expect("etcd starts");
        assert_eq!(c.len(), 3);
        assert_eq!(c.endpoints().split(',').count(), 3);
        for i in 0..3 {
            assert!(c.healthy(i).await, "{}", c.log_tails(20));
            assert!(c.endpoint(i).starts_with("http://127.0.0.1:"));
        }
        let out = c.etcdctl(&["put", "k", "v1"]).await.expect("runs");
        assert!(out.status.success(), "{}", text(&out));
        c.kill9(0);
        assert!(c.pid(0).is_none());
        assert!(!c.healthy(0).await);
        // The other two are a quorum: each one writes and reads (once they have elected a raft
        // leader, if the one killed led: seconds on a loaded machine).
        for (i, v) in [(1, "v2"), (2, "v3")] {
            let end = tokio::time::Instant::now() + Duration::from_secs(15);
            let out = loop {
                let out = ctl_at(&c, &c.endpoint(i), &["put", "k", v]).await;
                if out.status.success() || tokio::time::Instant::now() >= end {
                    break out;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            };
            assert!(out.status.success(), "{}\n{}", text(&out), c.log_tails(20));
            let out = ctl_at(&c, &c.endpoint(i), &["get", "k", "--print-value-only"]).await;
            assert_eq!(
                String::from_utf8_lossy(&out.stdout).trim(),
                v,
                "{}",
                text(&out)
            );
        }
        // Stopping a second member loses the quorum: nothing is healthy, writes fail.
        c.stop(1).await;
        assert!(!c.healthy(2).await);
        let out = ctl_at(&c, &c.endpoint(2), &["put", "k", "v4"]).await;
        assert!(
            !out.status.success(),
            "wrote without a quorum: {}",
            text(&out)
        );
        // Back from its data directory: quorum again, and it has every write (the one that
        // timed out may still have been committed once the quorum was back).
        c.restart(1).await.expect("restarts");
        c.restart(0).await.expect("restarts");
        let out = ctl_at(&c, &c.endpoint(0), &["get", "k", "--print-value-only"]).await;
        let v = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        assert!(v == "v3" || v == "v4", "{}", text(&out));
        // Paused, it stays up but answers nothing; resumed, it answers.
        c.pause(2);
        assert!(!c.healthy(2).await);
        c.resume(2);
        c.wait_healthy(2, Duration::from_secs(10))
            .await
            .expect("healthy after SIGCONT");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_held_proxy_hangs_calls_and_a_released_one_forwards_again() {
        let c = EtcdCluster::start(1).await.expect("etcd starts");
        let proxy = HoldProxy::in_front_of(&c.endpoint(0)).await.expect("proxy");
        let out = ctl_at(&c, &proxy.url(), &["put", "k", "v1"]).await;
        assert!(out.status.success(), "{}", text(&out));
        // A long-lived connection opened before the cut, and new calls during it, both hang.
        let mut watch = c.etcdctl_command_at(&proxy.url());
        watch.args(["watch", "k"]).stdout(Stdio::piped());
        let mut watch = watch.spawn().expect("etcdctl watch runs");
        sleep(Duration::from_millis(500)).await;
        proxy.hold();
        assert!(proxy.is_held());
        let out = ctl_at(&c, &proxy.url(), &["put", "k", "v2"]).await;
        assert!(
            !out.status.success(),
            "put through a held proxy: {}",
            text(&out)
        );
        let out = ctl_at(&c, &c.endpoint(0), &["put", "k", "v3"]).await;
        assert!(out.status.success(), "{}", text(&out));
        let mut stdout = watch.stdout.take().expect("piped");
        let mut seen = vec![0u8; 4096];
        let early = timeout(Duration::from_millis(700), stdout.read(&mut seen)).await;
        assert!(
            early.is_err(),
            "the watch saw an event through a held proxy"
        );
        proxy.release();
        let n = timeout(Duration::from_secs(5), stdout.read(&mut seen))
            .await
            .expect("the watch event arrives after the release")
            .expect("reads");
        assert!(
            String::from_utf8_lossy(&seen[..n]).contains("v3"),
            "{}",
            String::from_utf8_lossy(&seen[..n])
        );
        let out = ctl_at(&c, &proxy.url(), &["get", "k", "--print-value-only"]).await;
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "v3",
            "{}",
            text(&out)
        );
        let _ = watch.kill().await;
    }
}

//! What both Rust runners share: their flags, the published leader state, and a tiny HTTP/1.1
//! server for `GET /leader` in leaderd's JSON shape, so that bench/compare/ samples every
//! elector the same way. Included by each runner with `#[path]` (they are separate Cargo
//! projects because they need different kube major versions).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The runner's flags (all required but `--http-addr` and `--grace`). Each runner reads the
/// ones its library takes.
#[allow(dead_code)]
pub struct Args {
    pub namespace: String,
    pub lease: String,
    pub identity: String,
    pub lease_duration: Duration,
    pub retry_period: Duration,
    pub grace: Duration,
    pub http_addr: SocketAddr,
}

impl Args {
    /// `--namespace NS --lease NAME --identity ID --lease-duration D --retry-period P
    /// [--grace G] [--http-addr A]`; the cluster comes from `KUBECONFIG`.
    pub fn parse() -> anyhow::Result<Args> {
        let mut it = std::env::args().skip(1);
        let (mut ns, mut lease, mut id) = (None, None, None);
        let (mut d, mut p, mut g) = (None, None, None);
        let mut addr: SocketAddr = "127.0.0.1:0".parse()?;
        while let Some(flag) = it.next() {
            let mut val = || {
                it.next()
                    .ok_or_else(|| anyhow::anyhow!("{flag} needs a value"))
            };
            match flag.as_str() {
                "--namespace" => ns = Some(val()?),
                "--lease" => lease = Some(val()?),
                "--identity" => id = Some(val()?),
                "--lease-duration" => d = Some(humantime::parse_duration(&val()?)?),
                "--retry-period" => p = Some(humantime::parse_duration(&val()?)?),
                "--grace" => g = Some(humantime::parse_duration(&val()?)?),
                "--http-addr" => addr = val()?.parse()?,
                other => anyhow::bail!("unknown flag {other}"),
            }
        }
        let need = |v: Option<String>, f: &str| v.ok_or_else(|| anyhow::anyhow!("{f} is required"));
        let lease_duration = d.ok_or_else(|| anyhow::anyhow!("--lease-duration is required"))?;
        Ok(Args {
            namespace: need(ns, "--namespace")?,
            lease: need(lease, "--lease")?,
            identity: need(id, "--identity")?,
            lease_duration,
            retry_period: p.unwrap_or(lease_duration / 7),
            grace: g.unwrap_or(lease_duration / 3),
            http_addr: addr,
        })
    }
}

/// What `/leader` reports.
#[derive(Default)]
pub struct State {
    pub lease: String,
    pub namespace: String,
    pub identity: String,
    /// The holder, when the library tells us.
    pub leader: Option<String>,
    /// This candidate leads until then (None: not leading).
    pub leading_until: Option<Instant>,
    /// A fencing epoch, if the library has one (neither does).
    pub epoch: Option<i64>,
    pub lease_uid: Option<String>,
    pub observed_at: Option<SystemTime>,
}

pub type Shared = Arc<Mutex<State>>;

pub fn shared(a: &Args) -> Shared {
    Arc::new(Mutex::new(State {
        lease: a.lease.clone(),
        namespace: a.namespace.clone(),
        identity: a.identity.clone(),
        ..State::default()
    }))
}

pub fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn view(s: &State) -> String {
    let now = Instant::now();
    let lead = s.leading_until.filter(|u| *u > now);
    serde_json::json!({
        "lease": s.lease,
        "namespace": s.namespace,
        "identity": s.identity,
        "leader": s.leader,
        "is_leader": lead.is_some(),
        "epoch": s.epoch,
        "lease_uid": s.lease_uid,
        "valid_for_ms": lead.and_then(|u| {
            let left = u - now;
            // "Far future" (the library has no expiry of its own): unknown.
            (left < Duration::from_secs(86_400)).then_some(left.as_millis() as u64)
        }),
        "observed_at": s.observed_at.map(|t| humantime::format_rfc3339_millis(t).to_string()),
    })
    .to_string()
}

/// Bind, log `http api listening addr=A` (the line bench/compare/ waits for) and serve.
pub async fn serve(addr: SocketAddr, state: Shared) -> anyhow::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    eprintln!("INFO http api listening addr={}", listener.local_addr()?);
    tokio::spawn(async move {
        loop {
            if let Ok((conn, _)) = listener.accept().await {
                let _ = conn.set_nodelay(true);
                tokio::spawn(connection(conn, state.clone()));
            }
        }
    });
    Ok(())
}

/// HTTP/1.1 with keep-alive; GET only, no request bodies.
async fn connection(mut conn: TcpStream, state: Shared) {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            if buf.len() > 64 * 1024 {
                return;
            }
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
        buf.drain(..end);
        let mut words = head.split_whitespace();
        let (method, path) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        let close = head.contains("\r\nconnection: close");
        let (status, body) = match (method, path.split('?').next().unwrap_or("")) {
            ("get", "/leader") => ("200 OK", view(&lock(&state))),
            ("get", "/healthz") => ("200 OK", "{\"status\":\"ok\"}".to_string()),
            ("get", _) => (
                "404 Not Found",
                "{\"error\":\"not found\",\"status\":404}".into(),
            ),
            _ => (
                "405 Method Not Allowed",
                "{\"error\":\"method not allowed\",\"status\":405}".into(),
            ),
        };
        let res = format!(
            "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n{}\r\n{body}",
            body.len(),
            if close { "connection: close\r\n" } else { "" }
        );
        if conn.write_all(res.as_bytes()).await.is_err() || close {
            return;
        }
    }
}

//! `/leader` under wrk: running it and reading its figures.

use tokio::process::Command;

use crate::Config;

/// wrk's figures: requests/s, p50, p99 (ms), errors line if any.
#[derive(Debug, Default)]
pub struct Wrk {
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub non2xx: u64,
    pub socket_errors: String,
    pub raw: String,
}

pub fn wrk_ms(s: &str) -> Option<f64> {
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

pub fn parse_wrk(out: &str) -> Wrk {
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

pub async fn run_wrk(cfg: &Config, addr: std::net::SocketAddr) -> Result<Wrk, String> {
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

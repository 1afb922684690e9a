//! `--app-check`: leaderd's own check of the app in its pod, like a kubelet probe, so that
//! leadership follows the app: a crash-looping app behind a healthy sidecar must not keep the
//! lease. It runs on its own task, every check bounded by its timeout, and only *reports*
//! (healthy after `successes` passes in a row, unhealthy after `failures` in a row; unhealthy
//! from the start until the first passes). The election state machine decides what that means
//! (`Outcome::AppHealth`): never take or keep the lease while the app is unhealthy. A check can
//! never delay a renewal, nor be a reason to claim.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::metrics::Metrics;

/// What is checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// `http://HOST:PORT/PATH`: healthy on a 2xx answer.
    Http(http::Uri),
    /// `tcp://HOST:PORT`: healthy when the connection opens.
    Tcp(String),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Http(u) => write!(f, "{u}"),
            Target::Tcp(a) => write!(f, "tcp://{a}"),
        }
    }
}

impl Target {
    /// Parse `--app-check`; the error names the flag and the fix.
    pub fn parse(s: &str) -> Result<Target, String> {
        let bad = |why: &str| {
            format!("--app-check {s:?} {why}: use http://HOST:PORT/PATH (healthy on a 2xx answer) or tcp://HOST:PORT (healthy when the connection opens), e.g. http://127.0.0.1:8080/healthz")
        };
        if let Some(rest) = s.strip_prefix("tcp://") {
            let (host, port) = rest.rsplit_once(':').ok_or_else(|| bad("has no port"))?;
            if host.is_empty() || rest.contains('/') {
                return Err(bad("is not HOST:PORT"));
            }
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("has a bad port"))?;
            return Ok(Target::Tcp(rest.to_owned()));
        }
        let uri: http::Uri = s.parse().map_err(|_| bad("is not a URL"))?;
        match uri.scheme_str() {
            Some("http") if uri.host().is_some_and(|h| !h.is_empty()) => Ok(Target::Http(uri)),
            Some("http") => Err(bad("has no host")),
            Some("https") => Err(bad(
                "uses https, which the in-pod check does not speak (the app is on localhost)",
            )),
            _ => Err(bad("has an unsupported scheme")),
        }
    }
}

/// A validated `--app-check` configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppCheck {
    /// What to check.
    pub target: Target,
    /// Time between the starts of two checks (`--app-check-interval`).
    pub interval: Duration,
    /// Time limit of one check (`--app-check-timeout`).
    pub timeout: Duration,
    /// Consecutive failures that make a healthy app unhealthy (`--app-check-failures`).
    pub failures: u32,
    /// Consecutive passes that make an unhealthy app healthy (`--app-check-successes`).
    pub successes: u32,
}

/// The result of one check, also its metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CheckResult {
    /// Passed.
    Ok,
    /// Answered, but not healthy (a non-2xx answer, a refused connection).
    Failed,
    /// No answer within the timeout.
    Timeout,
}

impl CheckResult {
    /// Label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckResult::Ok => "ok",
            CheckResult::Failed => "failed",
            CheckResult::Timeout => "timeout",
        }
    }
}

/// Consecutive results turned into health, with hysteresis.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Health {
    healthy: bool,
    streak: u32,
}

impl Health {
    /// Unhealthy until the first passes.
    pub fn new() -> Self {
        Health {
            healthy: false,
            streak: 0,
        }
    }

    /// Whether the app counts as healthy now.
    pub fn healthy(&self) -> bool {
        self.healthy
    }

    /// Count one result; returns the health after it.
    pub fn record(&mut self, passed: bool, cfg: &AppCheck) -> bool {
        if passed == self.healthy {
            self.streak = 0;
            return self.healthy;
        }
        self.streak += 1;
        let needed = if self.healthy {
            cfg.failures
        } else {
            cfg.successes
        };
        if self.streak >= needed {
            self.healthy = passed;
            self.streak = 0;
        }
        self.healthy
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

/// Check once.
async fn check_once(
    client: &Client<HttpConnector, Empty<Bytes>>,
    target: &Target,
    limit: Duration,
) -> CheckResult {
    let attempt = async {
        match target {
            Target::Http(uri) => match client.get(uri.clone()).await {
                Ok(res) if res.status().is_success() => CheckResult::Ok,
                _ => CheckResult::Failed,
            },
            Target::Tcp(addr) => match TcpStream::connect(addr.as_str()).await {
                Ok(_) => CheckResult::Ok,
                Err(_) => CheckResult::Failed,
            },
        }
    };
    timeout(limit, attempt)
        .await
        .unwrap_or(CheckResult::Timeout)
}

/// Check the app every interval until `stop`, publishing its health on `tx` (whose value starts
/// unhealthy) whenever it changes.
pub async fn run(
    cfg: AppCheck,
    tx: watch::Sender<bool>,
    metrics: Option<Arc<Metrics>>,
    stop: CancellationToken,
) {
    let client: Client<HttpConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut health = Health::new();
    let mut next = Instant::now();
    info!(target = %cfg.target, "checking the app; it counts as unhealthy until it passes");
    let mut last_failure: Option<CheckResult> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep_until(next) => {}
        }
        next += cfg.interval;
        let result = tokio::select! {
            _ = stop.cancelled() => return,
            r = check_once(&client, &cfg.target, cfg.timeout) => r,
        };
        if let Some(m) = &metrics {
            m.app_check(result.as_str());
        }
        // A failure of another kind than the last one is worth a line, even while the app is
        // not yet unhealthy (or never was healthy): it says why, once per kind.
        if result != CheckResult::Ok && last_failure.replace(result) != Some(result) {
            warn!(target = %cfg.target, result = result.as_str(), "app check failed");
        }
        let was = health.healthy();
        let now = health.record(result == CheckResult::Ok, &cfg);
        if now != was {
            if now {
                info!(target = %cfg.target, "the app is healthy");
            } else {
                warn!(target = %cfg.target, result = result.as_str(), "the app is unhealthy; a leader steps down, a follower does not take the lease");
            }
            let _ = tx.send(now);
        }
        // A check that outlasted the interval does not make the next ones pile up.
        next = next.max(Instant::now());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(failures: u32, successes: u32) -> AppCheck {
        AppCheck {
            target: Target::Tcp("127.0.0.1:1".into()),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            failures,
            successes,
        }
    }

    #[test]
    fn targets_parse_and_bad_ones_name_the_flag() {
        assert!(matches!(
            Target::parse("http://127.0.0.1:8080/healthz"),
            Ok(Target::Http(_))
        ));
        assert_eq!(
            Target::parse("tcp://127.0.0.1:5432"),
            Ok(Target::Tcp("127.0.0.1:5432".into()))
        );
        for bad in [
            "ftp://x",
            "https://127.0.0.1/h",
            "tcp://127.0.0.1",
            "tcp://:80",
            "tcp://h:0",
            "http://",
            "localhost:80",
            "",
        ] {
            let e = Target::parse(bad).unwrap_err();
            assert!(e.starts_with("--app-check "), "{e}");
            assert!(e.contains("http://HOST:PORT/PATH"), "{e}");
        }
    }

    #[test]
    fn health_needs_successes_to_rise_and_failures_to_fall() {
        let c = cfg(3, 2);
        let mut h = Health::new();
        assert!(!h.healthy());
        assert!(!h.record(true, &c));
        assert!(h.record(true, &c), "two passes make it healthy");
        assert!(h.record(false, &c));
        assert!(h.record(false, &c));
        assert!(h.record(true, &c), "a pass resets the failure streak");
        assert!(h.record(false, &c));
        assert!(h.record(false, &c));
        assert!(
            !h.record(false, &c),
            "three failures in a row make it unhealthy"
        );
        assert!(!h.record(true, &c));
        assert!(!h.record(false, &c), "a failure resets the pass streak");
        assert!(!h.record(true, &c));
        assert!(h.record(true, &c));
    }

    #[tokio::test]
    async fn a_tcp_check_passes_on_an_open_port_and_fails_on_a_closed_one() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let open = Target::Tcp(listener.local_addr().unwrap().to_string());
        let client = Client::builder(TokioExecutor::new()).build_http();
        let limit = Duration::from_secs(2);
        assert_eq!(check_once(&client, &open, limit).await, CheckResult::Ok);
        drop(listener);
        assert_eq!(check_once(&client, &open, limit).await, CheckResult::Failed);
    }
}

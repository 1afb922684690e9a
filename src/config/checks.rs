//! What the flags, the config file and `leaderd timings` share, importing nothing else of the
//! configuration: the timing flags and their rules, the name checks, the error that names the
//! flag and the fix, and the exit code for it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::Args;

/// Exit code for bad flags or environment (`EX_USAGE` from sysexits.h).
pub const EXIT_USAGE: u8 = 64;

/// The timing flags, shared by the sidecar and `leaderd timings`.
#[derive(Clone, Copy, Debug, Args)]
pub struct TimingArgs {
    /// How long followers wait on an unchanged lease before taking over (whole seconds, >= 1s).
    #[arg(long, env = "LEADERD_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// How long the leader keeps claiming leadership after its last successful renew was sent;
    /// it renews 3/5 of this after that send, and API calls time out after 1/5 of it.
    #[arg(long, env = "LEADERD_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,
    /// Back-off after a failed call (half of it, stretched ×1–1.2); polling interval while the
    /// watch is down. The leader renews 3/5 of --renew-deadline after its last renew was sent.
    #[arg(long, env = "LEADERD_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
}

impl TimingArgs {
    /// Check D > R > P > 0 and D >= 1s; the error names the flag and the fix.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let (d, r, p) = (self.lease_duration, self.renew_deadline, self.retry_period);
        if d < Duration::from_secs(1) {
            return Err(ConfigError::Timing(format!(
                "--lease-duration {} is below 1s: the Lease stores whole seconds; use at least 1s (default 15s)",
                human(d)
            )));
        }
        if r >= d {
            return Err(ConfigError::Timing(format!(
                "--renew-deadline {} must be shorter than --lease-duration {}: lower the deadline or raise the duration (defaults 10s < 15s)",
                human(r),
                human(d)
            )));
        }
        if p >= r {
            return Err(ConfigError::Timing(format!(
                "--retry-period {} must be shorter than --renew-deadline {}: lower the retry period (default 2s)",
                human(p),
                human(r)
            )));
        }
        if p.is_zero() {
            return Err(ConfigError::Timing(
                "--retry-period must be greater than 0: use e.g. 2s".to_owned(),
            ));
        }
        Ok(())
    }
}

/// A configuration error: the message names the flag and the fix.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// `--lease-name` missing.
    #[error("--lease-name is required: pass --lease-name NAME or set LEADERD_LEASE_NAME")]
    MissingLeaseName,
    /// A name that the apiserver would reject.
    #[error("--{flag} {value:?} is not a valid {what}: use lowercase letters, digits, '-'{dots}, starting and ending with a letter or digit, at most {max} characters")]
    BadName {
        /// The flag.
        flag: &'static str,
        /// The value given.
        value: String,
        /// "DNS-1123 subdomain" or "DNS-1123 label".
        what: &'static str,
        /// ", '.'" for subdomains.
        dots: &'static str,
        /// Maximum length.
        max: usize,
    },
    /// Empty identity.
    #[error("--identity is empty: pass --identity ID, or set POD_NAME (the chart sets it from the downward API)")]
    EmptyIdentity,
    /// Timing rules.
    #[error("{0}")]
    Timing(String),
    /// Same address for both listeners.
    #[error("--http-addr and --metrics-addr are both {0}: give them different ports")]
    SameAddr(SocketAddr),
    /// Any other flag with a bad value; the message names the flag and the fix.
    #[error("{0}")]
    Bad(String),
}

/// Whether `s` is a DNS-1123 label of at most `max` characters.
pub fn is_dns_label(s: &str, max: usize) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= max
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// Whether `s` is a DNS-1123 subdomain (what Kubernetes requires of a Lease name).
pub fn is_dns_subdomain(s: &str) -> bool {
    s.len() <= 253 && s.split('.').all(|l| is_dns_label(l, 63))
}

/// A duration as humantime writes it (`1m 30s`), for messages.
pub fn human(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

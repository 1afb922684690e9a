//! Flags and environment: parsed with clap, then validated into [`Settings`] before the
//! runtime starts. Every problem is one line naming the flag and the fix (exit code 64).
//! [`checks`] holds what the config file and `leaderd timings` share with it.

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

pub use self::checks::{
    human, is_dns_label, is_dns_subdomain, ConfigError, TimingArgs, EXIT_USAGE,
};

use crate::appcheck::{AppCheck, Target};
use crate::election::Params;

pub mod checks;

/// Exit code with `--on-lost=exit` when leadership was lost without a release
/// (`EX_TEMPFAIL` from sysexits.h: the kubelet restarts the container).
pub const EXIT_LOST: u8 = 75;

/// The default key of the pod label set by `--label-pod`.
pub const DEFAULT_POD_LABEL_KEY: &str = "leaderd.io/role";

/// leaderd: campaign for a Kubernetes Lease and tell the app, on localhost, whether it leads.
#[derive(Debug, Parser)]
#[command(
    name = "leaderd",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    /// What to run instead of the sidecar.
    #[command(subcommand)]
    pub command: Option<Command>,
    /// The sidecar's flags.
    #[command(flatten)]
    pub run: RunArgs,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print what the timing flags buy (failover, handover, outage survived, clock tolerance)
    /// and cost (API requests/s), with warnings; needs no cluster.
    Timings(crate::timings::TimingsArgs),
}

/// Log output format.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// What to do when leadership is lost without a release.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnLost {
    /// Keep running as a follower (and campaign again).
    None,
    /// Exit with code 75 so that the kubelet restarts the container (see docs/operations.md
    /// for stopping the app with it).
    Exit,
}

/// The coordination store.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Backend {
    /// A `coordination.k8s.io/v1` Lease.
    Kubernetes,
    /// etcd v3 (`concurrency.Election` keys, native leases).
    Etcd,
}

/// The sidecar's flags; each also reads `LEADERD_<FLAG>`.
#[derive(Debug, Args)]
pub struct RunArgs {
    /// Name of the Lease to campaign for (a DNS-1123 subdomain). Required.
    #[arg(long, env = "LEADERD_LEASE_NAME")]
    pub lease_name: Option<String>,
    /// A YAML file naming the leases and shard groups to run, each with its own timing, instead
    /// of --lease-name, --shards and the timing flags; with several, each is served under its
    /// name, /leases/NAME/leader or /groups/NAME/shards (README, "Config file").
    #[arg(long, env = "LEADERD_CONFIG", conflicts_with_all = ["lease_name", "shards", "lease_duration", "renew_deadline", "retry_period"])]
    pub config: Option<std::path::PathBuf>,
    /// Turn --lease-name into a shard group with shards 0..N-1 (1 to 4096), owned evenly by
    /// the replicas and served at /shards; every replica of the group must use the same N.
    #[arg(long, env = "LEADERD_SHARDS")]
    pub shards: Option<u32>,
    /// The coordination store: a Kubernetes Lease, or etcd v3 (see README, "Outside
    /// Kubernetes: etcd").
    #[arg(long, env = "LEADERD_BACKEND", value_enum, default_value_t = Backend::Kubernetes)]
    pub backend: Backend,
    /// etcd endpoints, comma-separated (http://HOST:PORT or https://HOST:PORT); required with
    /// --backend etcd.
    #[arg(long, env = "LEADERD_ETCD_ENDPOINTS")]
    pub etcd_endpoints: Option<String>,
    /// Key prefix of the election in etcd: keys are `<prefix><lease-name>/<lease id in hex>`.
    #[arg(long, env = "LEADERD_ETCD_PREFIX", default_value = "")]
    pub etcd_prefix: String,
    /// PEM file of the CA that signed etcd's serving certificates (TLS; use https:// endpoints).
    #[arg(long, env = "LEADERD_ETCD_CA_FILE")]
    pub etcd_ca_file: Option<std::path::PathBuf>,
    /// PEM file of leaderd's client certificate for etcd (with --etcd-key-file).
    #[arg(long, env = "LEADERD_ETCD_CERT_FILE")]
    pub etcd_cert_file: Option<std::path::PathBuf>,
    /// PEM file of the client certificate's private key (with --etcd-cert-file).
    #[arg(long, env = "LEADERD_ETCD_KEY_FILE")]
    pub etcd_key_file: Option<std::path::PathBuf>,
    /// Namespace of the Lease [default: $POD_NAMESPACE, else the kubeconfig's or in-cluster namespace].
    #[arg(long, env = "LEADERD_NAMESPACE")]
    pub namespace: Option<String>,
    /// This candidate's identity [default: $POD_NAME, else the hostname].
    #[arg(long, env = "LEADERD_IDENTITY")]
    pub identity: Option<String>,
    /// Timing: lease duration, renew deadline, retry period.
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Address of the app-facing API (/leader, /healthz, /readyz).
    #[arg(long, env = "LEADERD_HTTP_ADDR", default_value = "127.0.0.1:4040")]
    pub http_addr: SocketAddr,
    /// Address of the Prometheus /metrics endpoint.
    #[arg(long, env = "LEADERD_METRICS_ADDR", default_value = "0.0.0.0:9464")]
    pub metrics_addr: SocketAddr,
    /// Connections each HTTP listener serves at once; more are answered 503 and closed.
    #[arg(long, env = "LEADERD_HTTP_MAX_CONNECTIONS", default_value_t = 1024)]
    pub http_max_connections: usize,
    /// Close an HTTP connection that has not sent a complete request head for this long (idle
    /// keep-alive connections, slow clients; streams and long polls in progress are not idle).
    #[arg(long, env = "LEADERD_HTTP_IDLE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub http_idle_timeout: Duration,
    /// Release the lease (clear the holder) on SIGTERM/SIGINT, so a follower takes over at once.
    #[arg(long, env = "LEADERD_RELEASE_ON_SHUTDOWN", default_value_t = true, action = clap::ArgAction::Set)]
    pub release_on_shutdown: bool,
    /// Post Kubernetes Events (BecameLeader, StoppedLeading) on the Lease; needs RBAC create and
    /// patch on events.k8s.io events. Failures never affect the election. [default: true with
    /// the kubernetes backend; not available with etcd]
    #[arg(long, env = "LEADERD_EMIT_EVENTS", action = clap::ArgAction::Set)]
    pub emit_events: Option<bool>,
    /// Log format.
    #[arg(long, env = "LEADERD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Log filter (tracing's EnvFilter syntax); RUST_LOG is used when this is not given.
    #[arg(long, env = "LEADERD_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Priority for handover: a candidate whose priority is higher than the leader's is handed
    /// the lease (gracefully). Equal priorities never hand over.
    #[arg(
        long,
        env = "LEADERD_PRIORITY",
        default_value_t = 0,
        allow_negative_numbers = true
    )]
    pub priority: i32,
    /// Label this pod (POD_NAME, in POD_NAMESPACE) `<key>=leader|follower` on every transition;
    /// needs RBAC get and patch on pods. Failures never affect the election.
    #[arg(long, env = "LEADERD_LABEL_POD", default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub label_pod: bool,
    /// The pod to label with --label-pod (the chart sets POD_NAME from the downward API).
    #[arg(long, env = "POD_NAME")]
    pub pod_name: Option<String>,
    /// The label key set by --label-pod.
    #[arg(long, env = "LEADERD_POD_LABEL_KEY", default_value = DEFAULT_POD_LABEL_KEY)]
    pub pod_label_key: String,
    /// Command run (no shell; quote like sh) when this candidate starts leading.
    #[arg(long, env = "LEADERD_ON_STARTED_LEADING")]
    pub on_started_leading: Option<String>,
    /// Command run when this candidate stops leading.
    #[arg(long, env = "LEADERD_ON_STOPPED_LEADING")]
    pub on_stopped_leading: Option<String>,
    /// Command run when the holder named by the Lease changes.
    #[arg(long, env = "LEADERD_ON_NEW_LEADER")]
    pub on_new_leader: Option<String>,
    /// Time limit of each hook run; a hook still running then is killed.
    #[arg(long, env = "LEADERD_HOOK_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub hook_timeout: Duration,
    /// POST the /leader JSON to this http:// URL (the app, on localhost) on every change,
    /// retried with backoff.
    #[arg(long, env = "LEADERD_NOTIFY_URL")]
    pub notify_url: Option<String>,
    /// What to do when leadership is lost without a release: none, or exit (code 75).
    #[arg(long, env = "LEADERD_ON_LOST", value_enum, default_value_t = OnLost::None)]
    pub on_lost: OnLost,
    /// Check the app: http://HOST:PORT/PATH (healthy on a 2xx answer) or tcp://HOST:PORT
    /// (healthy when the connection opens). While the app is unhealthy this candidate never
    /// takes the lease, and a leader steps down and releases it.
    #[arg(long, env = "LEADERD_APP_CHECK")]
    pub app_check: Option<String>,
    /// Time between two app checks.
    #[arg(long, env = "LEADERD_APP_CHECK_INTERVAL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub app_check_interval: Duration,
    /// Time limit of one app check.
    #[arg(long, env = "LEADERD_APP_CHECK_TIMEOUT", default_value = "1s", value_parser = humantime::parse_duration)]
    pub app_check_timeout: Duration,
    /// Consecutive failed app checks that make the app unhealthy.
    #[arg(long, env = "LEADERD_APP_CHECK_FAILURES", default_value_t = 3)]
    pub app_check_failures: u32,
    /// Consecutive passed app checks that make the app healthy again.
    #[arg(long, env = "LEADERD_APP_CHECK_SUCCESSES", default_value_t = 1)]
    pub app_check_successes: u32,
}

/// `--label-pod`: which pod, and the label key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PodLabel {
    /// The pod's name (POD_NAME).
    pub pod: String,
    /// The pod's namespace (POD_NAMESPACE), else the Lease's.
    pub namespace: Option<String>,
    /// The label key.
    pub key: String,
}

/// The hooks: commands as argv, and their time limit.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Hooks {
    /// `--on-started-leading`.
    pub started_leading: Option<Vec<String>>,
    /// `--on-stopped-leading`.
    pub stopped_leading: Option<Vec<String>>,
    /// `--on-new-leader`.
    pub new_leader: Option<Vec<String>>,
    /// `--hook-timeout`.
    pub timeout: Duration,
}

/// PEM files for TLS to etcd, read at start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdTls {
    /// The CA that signed etcd's serving certificates (`--etcd-ca-file`).
    pub ca: Option<Vec<u8>>,
    /// Our client certificate and key (`--etcd-cert-file`, `--etcd-key-file`).
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// `--backend etcd`: where and how to reach etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EtcdSettings {
    /// The endpoints.
    pub endpoints: Vec<String>,
    /// `--etcd-prefix`.
    pub prefix: String,
    /// TLS material read from the files, when any TLS flag is given.
    pub tls: Option<EtcdTls>,
}

impl EtcdSettings {
    /// The election's key prefix: `<prefix><name>/`, as etcd's `concurrency.Election` makes it.
    pub fn key_prefix(&self, name: &str) -> String {
        format!("{}{name}/", self.prefix)
    }
}

/// One lease (or shard group) this sidecar campaigns for: from the flags (`--lease-name`,
/// `--shards`, the timing flags), or one entry of `--config`.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Lease name (the election's name with etcd; the group's name with `shards`).
    pub name: String,
    /// `--shards N`: the lease names a shard group of N shards.
    pub shards: Option<u32>,
    /// Election identity and timing.
    pub params: Params,
}

/// A validated configuration of the sidecar.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The leases and groups, never empty, names unique: one from the flags, or the entries
    /// of `--config` in the file's order.
    pub entries: Vec<LeaseSettings>,
    /// `--backend etcd`; None: the Kubernetes Lease.
    pub etcd: Option<EtcdSettings>,
    /// Namespace, when known before connecting (else the kubeconfig's).
    pub namespace: Option<String>,
    /// App-facing API address.
    pub http_addr: SocketAddr,
    /// Metrics address.
    pub metrics_addr: SocketAddr,
    /// Connection limits of both listeners.
    pub http_limits: crate::http::Limits,
    /// Release on shutdown.
    pub release_on_shutdown: bool,
    /// Post Kubernetes Events.
    pub emit_events: bool,
    /// Log format.
    pub log_format: LogFormat,
    /// Log filter.
    pub log_level: Option<String>,
    /// `--label-pod`, when on.
    pub pod_label: Option<PodLabel>,
    /// Hooks.
    pub hooks: Hooks,
    /// `--notify-url`.
    pub notify_url: Option<http::Uri>,
    /// `--on-lost`.
    pub on_lost: OnLost,
    /// `--app-check`, when given.
    pub app_check: Option<AppCheck>,
}

impl Settings {
    /// The first entry: the only one when configured by flags.
    pub fn first(&self) -> &LeaseSettings {
        &self.entries[0]
    }
}

/// Whether `key` is a valid Kubernetes label key (`[prefix/]name`).
pub fn is_label_key(key: &str) -> bool {
    let (prefix, name) = match key.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let name_ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.'))
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name.as_bytes()[name.len() - 1].is_ascii_alphanumeric();
    name_ok && prefix.is_none_or(is_dns_subdomain)
}

/// The first flag of `flags` that was given.
fn first_given<'a>(flags: &[(&'a str, bool)]) -> Option<&'a str> {
    flags
        .iter()
        .find(|(_, given)| *given)
        .map(|(flag, _)| *flag)
}

fn hook(flag: &str, cmd: Option<String>) -> Result<Option<Vec<String>>, ConfigError> {
    let Some(cmd) = cmd else { return Ok(None) };
    match shlex::split(&cmd) {
        Some(argv) if !argv.is_empty() => Ok(Some(argv)),
        Some(_) => Err(ConfigError::Bad(format!(
            "--{flag} is empty: give a command, e.g. --{flag} '/bin/notify started'"
        ))),
        None => Err(ConfigError::Bad(format!(
            "--{flag} {cmd:?} has unbalanced quotes: quote it like a POSIX shell would"
        ))),
    }
}

impl RunArgs {
    /// Validate into [`Settings`]. `env` looks up environment variables (injected for tests),
    /// `hostname` is the fallback identity.
    pub fn validate(
        mut self,
        env: impl Fn(&str) -> Option<String>,
        hostname: impl FnOnce() -> Option<String>,
    ) -> Result<Settings, ConfigError> {
        // --config names the leases and groups, each with its timing, instead of the flags.
        let mut file_identity = None;
        let mut from_file = None;
        let entries: Vec<(String, Option<u32>, TimingArgs)> = match &self.config {
            None => vec![(
                self.lease_name
                    .clone()
                    .ok_or(ConfigError::MissingLeaseName)?,
                self.shards,
                self.timing,
            )],
            Some(path) => {
                let file =
                    crate::configfile::load(path).map_err(|e| ConfigError::Bad(e.to_string()))?;
                file_identity = file.identity.clone();
                from_file = Some((path.display().to_string(), file.entries.len()));
                file.entries
                    .into_iter()
                    .map(|e| (e.name, e.shards, e.timing))
                    .collect()
            }
        };
        if self.identity.is_none() {
            self.identity = file_identity;
        }
        // Several entries: the side effects that act for one lease have no lease to follow.
        if let Some((file, n)) = from_file.as_ref().filter(|(_, n)| *n > 1) {
            if self.backend == Backend::Etcd {
                return Err(ConfigError::Bad(format!(
                    "--backend etcd runs one election per leaderd, but --config {file} names {n} leases and groups: use the Kubernetes backend, or one leaderd per election (--lease-name)"
                )));
            }
            if let Some(flag) = first_given(&[
                ("label-pod", self.label_pod),
                ("on-started-leading", self.on_started_leading.is_some()),
                ("on-stopped-leading", self.on_stopped_leading.is_some()),
                ("on-new-leader", self.on_new_leader.is_some()),
                ("notify-url", self.notify_url.is_some()),
            ]) {
                return Err(ConfigError::Bad(format!(
                    "--{flag} acts for one lease, but --config {file} names {n} leases and groups: remove --{flag}, or give that lease its own leaderd (a config file with one entry, or --lease-name)"
                )));
            }
        }
        let etcd = match self.backend {
            Backend::Kubernetes => {
                if let Some(flag) = first_given(&[
                    ("etcd-endpoints", self.etcd_endpoints.is_some()),
                    ("etcd-prefix", !self.etcd_prefix.is_empty()),
                    ("etcd-ca-file", self.etcd_ca_file.is_some()),
                    ("etcd-cert-file", self.etcd_cert_file.is_some()),
                    ("etcd-key-file", self.etcd_key_file.is_some()),
                ]) {
                    return Err(ConfigError::Bad(format!(
                        "--{flag} is for the etcd backend: add --backend etcd, or remove --{flag}"
                    )));
                }
                None
            }
            Backend::Etcd => Some(self.etcd_settings(&entries[0].0)?),
        };
        // The flags' lease: its name and shard count (a file's entries were checked by
        // configfile, with their lines).
        if from_file.is_none() {
            let (lease_name, shards, _) = &entries[0];
            if let Some(n) = *shards {
                if etcd.is_some() {
                    return Err(ConfigError::Bad(
                        "--shards needs the Kubernetes backend (the etcd backend has no shard groups yet): remove --shards or --backend etcd".to_owned(),
                    ));
                }
                if !(1..=crate::shards::record::MAX_SHARDS).contains(&n) {
                    return Err(ConfigError::Bad(format!(
                        "--shards {n} is out of range: use 1 to {} (every replica of the group the same)",
                        crate::shards::record::MAX_SHARDS
                    )));
                }
                if !is_dns_label(lease_name, 63) {
                    return Err(ConfigError::BadName {
                        flag: "lease-name",
                        value: lease_name.clone(),
                        what: "DNS-1123 label (with --shards it is also a label value)",
                        dots: "",
                        max: 63,
                    });
                }
            }
            if etcd.is_none() && !is_dns_subdomain(lease_name) {
                return Err(ConfigError::BadName {
                    flag: "lease-name",
                    value: lease_name.clone(),
                    what: "DNS-1123 subdomain",
                    dots: ", '.'",
                    max: 253,
                });
            }
            self.timing.validate()?;
        } else if let (Some(_), Some((file, _))) = (&etcd, &from_file) {
            if entries[0].1.is_some() {
                return Err(ConfigError::Bad(format!(
                    "--config {file} names a shard group, which needs the Kubernetes backend (the etcd backend has no shard groups yet): remove --backend etcd, or name a lease (leases:) instead"
                )));
            }
        }
        let namespace = match &etcd {
            Some(e) => Some(e.prefix.clone()),
            None => self
                .namespace
                .or_else(|| env("POD_NAMESPACE").filter(|s| !s.is_empty())),
        };
        if let Some(ns) = namespace.as_ref().filter(|_| etcd.is_none()) {
            if !is_dns_label(ns, 63) {
                return Err(ConfigError::BadName {
                    flag: "namespace",
                    value: ns.clone(),
                    what: "DNS-1123 label",
                    dots: "",
                    max: 63,
                });
            }
        }
        let identity = match self.identity {
            Some(id) => id,
            None => env("POD_NAME")
                .filter(|s| !s.is_empty())
                .or_else(hostname)
                .unwrap_or_default(),
        };
        if identity.trim().is_empty() {
            return Err(ConfigError::EmptyIdentity);
        }
        if self.http_addr == self.metrics_addr && self.http_addr.port() != 0 {
            return Err(ConfigError::SameAddr(self.http_addr));
        }
        if self.http_max_connections == 0 {
            return Err(ConfigError::Bad(
                "--http-max-connections must be at least 1: use e.g. 1024 (the default)".to_owned(),
            ));
        }
        if self.http_idle_timeout.is_zero() {
            return Err(ConfigError::Bad(
                "--http-idle-timeout must be greater than 0: use e.g. 30s (the default)".to_owned(),
            ));
        }
        let pod_label = if self.label_pod {
            if !is_label_key(&self.pod_label_key) {
                return Err(ConfigError::Bad(format!(
                    "--pod-label-key {:?} is not a valid label key: use [prefix/]name, e.g. {DEFAULT_POD_LABEL_KEY}",
                    self.pod_label_key
                )));
            }
            let pod = self.pod_name.clone().or_else(|| env("POD_NAME")).filter(|s| !s.is_empty()).ok_or_else(|| {
                ConfigError::Bad("--label-pod needs the pod's name: set POD_NAME from the downward API (fieldRef: metadata.name) or pass --pod-name".to_owned())
            })?;
            Some(PodLabel {
                pod,
                namespace: env("POD_NAMESPACE").filter(|s| !s.is_empty()),
                key: self.pod_label_key,
            })
        } else {
            None
        };
        let hooks = Hooks {
            started_leading: hook("on-started-leading", self.on_started_leading)?,
            stopped_leading: hook("on-stopped-leading", self.on_stopped_leading)?,
            new_leader: hook("on-new-leader", self.on_new_leader)?,
            timeout: self.hook_timeout,
        };
        if hooks.timeout.is_zero() {
            return Err(ConfigError::Bad(
                "--hook-timeout must be greater than 0: use e.g. 30s".to_owned(),
            ));
        }
        let notify_url = match self.notify_url {
            None => None,
            Some(u) => {
                let bad = || {
                    ConfigError::Bad(format!(
                        "--notify-url {u:?} is not an http:// URL: use e.g. http://127.0.0.1:8080/leader"
                    ))
                };
                let uri: http::Uri = u.parse().map_err(|_| bad())?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    return Err(bad());
                }
                Some(uri)
            }
        };
        let app_check = match self.app_check {
            None => None,
            Some(target) => {
                let target = Target::parse(&target).map_err(ConfigError::Bad)?;
                if self.app_check_interval.is_zero() {
                    return Err(ConfigError::Bad(
                        "--app-check-interval must be greater than 0: use e.g. 2s".to_owned(),
                    ));
                }
                if self.app_check_timeout.is_zero()
                    || self.app_check_timeout > self.app_check_interval
                {
                    return Err(ConfigError::Bad(format!(
                        "--app-check-timeout {} must be greater than 0 and at most --app-check-interval ({}): use e.g. --app-check-timeout 1s",
                        human(self.app_check_timeout),
                        human(self.app_check_interval)
                    )));
                }
                for (flag, n) in [
                    ("app-check-failures", self.app_check_failures),
                    ("app-check-successes", self.app_check_successes),
                ] {
                    if n == 0 {
                        return Err(ConfigError::Bad(format!(
                            "--{flag} must be at least 1: use e.g. --{flag} 3"
                        )));
                    }
                }
                Some(AppCheck {
                    target,
                    interval: self.app_check_interval,
                    timeout: self.app_check_timeout,
                    failures: self.app_check_failures,
                    successes: self.app_check_successes,
                })
            }
        };
        let emit_events = self.emit_events.unwrap_or(etcd.is_none());
        let priority = i64::from(self.priority);
        let entries = entries
            .into_iter()
            .map(|(name, shards, t)| LeaseSettings {
                name,
                shards,
                params: Params {
                    identity: identity.clone(),
                    lease_duration: t.lease_duration,
                    renew_deadline: t.renew_deadline,
                    retry_period: t.retry_period,
                    priority,
                },
            })
            .collect();
        Ok(Settings {
            entries,
            etcd,
            namespace,
            http_addr: self.http_addr,
            metrics_addr: self.metrics_addr,
            http_limits: crate::http::Limits {
                max_connections: self.http_max_connections,
                idle_timeout: self.http_idle_timeout,
            },
            release_on_shutdown: self.release_on_shutdown,
            emit_events,
            log_format: self.log_format,
            log_level: self.log_level,
            pod_label,
            hooks,
            notify_url,
            on_lost: self.on_lost,
            app_check,
        })
    }
}

impl RunArgs {
    /// `--backend etcd`: the endpoints, prefix and TLS files, and no Kubernetes-only flag.
    fn etcd_settings(&self, name: &str) -> Result<EtcdSettings, ConfigError> {
        let bad = |m: String| Err(ConfigError::Bad(m));
        if cfg!(not(feature = "etcd")) {
            return bad("--backend etcd: this leaderd was built without the etcd backend (cargo feature `etcd`): use a build with the default features, e.g. the release image".to_owned());
        }
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return bad(format!(
                "--lease-name {name:?} is not a usable etcd election name: use a name without spaces or control characters, e.g. payouts"
            ));
        }
        // Kubernetes-only features are rejected, never silently ignored.
        for (flag, given, why) in [
            ("namespace", self.namespace.is_some(), "the election lives under --etcd-prefix"),
            ("label-pod", self.label_pod, "it patches a Kubernetes pod"),
            ("priority", self.priority != 0, "etcd's line is ordered by create revision; handover by priority needs the Lease's annotations"),
            ("emit-events", self.emit_events == Some(true), "Events are Kubernetes objects"),
        ] {
            if given {
                return bad(format!(
                    "--{flag} is not available with --backend etcd ({why}): remove --{flag} or use --backend kubernetes"
                ));
            }
        }
        let Some(list) = self.etcd_endpoints.as_deref() else {
            return bad("--backend etcd needs --etcd-endpoints: pass e.g. --etcd-endpoints http://127.0.0.1:2379 or set LEADERD_ETCD_ENDPOINTS".to_owned());
        };
        let tls_given = self.etcd_ca_file.is_some() || self.etcd_cert_file.is_some();
        let mut endpoints = Vec::new();
        for e in list.split(',').map(str::trim) {
            let uri: Option<http::Uri> = e.parse().ok();
            let ok = uri.as_ref().is_some_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https"))
                    && u.host().is_some_and(|h| !h.is_empty())
                    && u.port_u16().is_some()
                    && u.path() == "/"
            });
            if !ok {
                return bad(format!(
                    "--etcd-endpoints: {e:?} is not an etcd endpoint: use http://HOST:PORT or https://HOST:PORT, comma-separated (e.g. http://127.0.0.1:2379)"
                ));
            }
            if tls_given && uri.as_ref().and_then(|u| u.scheme_str()) == Some("http") {
                return bad(format!(
                    "--etcd-endpoints: {e:?} is plain http but TLS files are given: use https://"
                ));
            }
            endpoints.push(e.to_owned());
        }
        let read = |flag: &str,
                    path: &Option<std::path::PathBuf>|
         -> Result<Option<Vec<u8>>, ConfigError> {
            match path {
                None => Ok(None),
                Some(p) => std::fs::read(p).map(Some).map_err(|e| {
                    ConfigError::Bad(format!(
                        "--{flag} {}: cannot read it ({e}): give a readable PEM file",
                        p.display()
                    ))
                }),
            }
        };
        let ca = read("etcd-ca-file", &self.etcd_ca_file)?;
        let cert = read("etcd-cert-file", &self.etcd_cert_file)?;
        let key = read("etcd-key-file", &self.etcd_key_file)?;
        let identity =
            match (cert, key) {
                (Some(c), Some(k)) => Some((c, k)),
                (None, None) => None,
                (Some(_), None) => return bad(
                    "--etcd-cert-file needs --etcd-key-file: pass the client certificate's key too"
                        .to_owned(),
                ),
                (None, Some(_)) => {
                    return bad(
                        "--etcd-key-file needs --etcd-cert-file: pass the client certificate too"
                            .to_owned(),
                    )
                }
            };
        let tls = (ca.is_some() || identity.is_some()).then_some(EtcdTls { ca, identity });
        Ok(EtcdSettings {
            endpoints,
            prefix: self.etcd_prefix.clone(),
            tls,
        })
    }
}

/// The machine's hostname, for the default identity.
pub fn hostname() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut all = vec!["leaderd"];
        all.extend_from_slice(args);
        let cli = Cli::try_parse_from(all).expect("clap accepts these");
        cli.run.validate(|_| None, || Some("host-1".into()))
    }

    #[test]
    fn etcd_needs_endpoints_and_rejects_kubernetes_only_flags() {
        let etcd = ["--lease-name", "payouts", "--backend", "etcd"];
        let with = |more: &[&str]| {
            let mut a = etcd.to_vec();
            a.extend_from_slice(more);
            parse(&a)
        };
        let e = with(&[]).unwrap_err().to_string();
        assert!(e.contains("--etcd-endpoints"), "{e}");
        let ok = with(&[
            "--etcd-endpoints",
            "http://127.0.0.1:2379,http://10.0.0.2:2379",
        ])
        .unwrap();
        let settings = ok.etcd.expect("etcd settings");
        assert_eq!(settings.endpoints.len(), 2);
        assert_eq!(settings.key_prefix("payouts"), "payouts/");
        assert!(!ok.emit_events, "Events are off with etcd by default");
        assert!(ok.pod_label.is_none());
        let ep = ["--etcd-endpoints", "http://127.0.0.1:2379"];
        for (flags, names) in [
            (&["--namespace", "default"][..], "--namespace"),
            (&["--label-pod"][..], "--label-pod"),
            (&["--priority", "5"][..], "--priority"),
            (&["--emit-events", "true"][..], "--emit-events"),
        ] {
            let mut f = ep.to_vec();
            f.extend_from_slice(flags);
            let e = with(&f).unwrap_err().to_string();
            assert!(e.starts_with(names) && e.contains("--backend etcd"), "{e}");
        }
        // Explicitly off is fine.
        let mut f = ep.to_vec();
        f.extend_from_slice(&["--emit-events", "false"]);
        assert!(with(&f).is_ok());
        for bad in [
            "127.0.0.1:2379",
            "grpc://x:1",
            "http://x",
            "http://x:2379/v3",
        ] {
            let e = with(&["--etcd-endpoints", bad]).unwrap_err().to_string();
            assert!(
                e.starts_with("--etcd-endpoints") && e.contains("http://HOST:PORT"),
                "{e}"
            );
        }
        let e = with(&[
            "--etcd-endpoints",
            "http://x:2379",
            "--etcd-ca-file",
            "/etc/hostname",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("use https://"), "{e}");
        let e = with(&[
            "--etcd-endpoints",
            "https://x:2379",
            "--etcd-ca-file",
            "/nonexistent/ca.pem",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--etcd-ca-file") && e.contains("cannot read"),
            "{e}"
        );
        let e = with(&[
            "--etcd-endpoints",
            "https://x:2379",
            "--etcd-cert-file",
            "/etc/hostname",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--etcd-key-file"), "{e}");
        let e = parse(&[
            "--backend",
            "etcd",
            "--etcd-endpoints",
            "http://x:2379",
            "--lease-name",
            "a b",
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("--lease-name"), "{e}");
        let prefixed = with(&[
            "--etcd-endpoints",
            "http://x:2379",
            "--etcd-prefix",
            "/elections/",
        ])
        .unwrap();
        assert_eq!(
            prefixed.etcd.unwrap().key_prefix("payouts"),
            "/elections/payouts/"
        );
    }

    #[test]
    fn etcd_flags_need_the_etcd_backend() {
        let e = parse(&[
            "--lease-name",
            "x",
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--etcd-endpoints") && e.contains("--backend etcd"),
            "{e}"
        );
        assert!(parse(&["--lease-name", "x"]).unwrap().emit_events);
    }

    #[test]
    fn defaults_are_client_go_defaults() {
        let s = parse(&["--lease-name", "payouts"]).unwrap();
        assert_eq!(s.first().params.lease_duration, Duration::from_secs(15));
        assert_eq!(s.first().params.renew_deadline, Duration::from_secs(10));
        assert_eq!(s.first().params.retry_period, Duration::from_secs(2));
        assert_eq!(s.first().params.identity, "host-1");
        assert_eq!(s.http_addr.to_string(), "127.0.0.1:4040");
        assert!(s.release_on_shutdown);
    }

    #[test]
    fn each_timing_rule_names_its_flags() {
        let e = parse(&["--lease-name", "x", "--lease-duration", "500ms"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--lease-duration 500ms is below 1s"),
            "{e}"
        );
        let e = parse(&["--lease-name", "x", "--renew-deadline", "15s"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("--renew-deadline 15s must be shorter than --lease-duration 15s"),
            "{e}"
        );
        let e = parse(&["--lease-name", "x", "--retry-period", "10s"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("--retry-period 10s must be shorter than --renew-deadline"),
            "{e}"
        );
        let e = parse(&["--lease-name", "x", "--retry-period", "0s"]).unwrap_err();
        assert!(
            e.to_string()
                .contains("--retry-period must be greater than 0"),
            "{e}"
        );
    }

    #[test]
    fn names_are_checked_like_the_apiserver_does() {
        assert!(is_dns_subdomain("a.b-c.d"));
        assert!(!is_dns_subdomain("Payouts"));
        assert!(!is_dns_subdomain("-x"));
        assert!(!is_dns_subdomain(""));
        let e = parse(&["--lease-name", "Bad_Name"]).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("--lease-name \"Bad_Name\" is not a valid DNS-1123 subdomain"));
        let e = parse(&["--lease-name", "x", "--namespace", "a.b"]).unwrap_err();
        assert!(e
            .to_string()
            .starts_with("--namespace \"a.b\" is not a valid DNS-1123 label"));
    }

    #[test]
    fn identity_comes_from_pod_name_then_hostname() {
        let cli = Cli::try_parse_from(["leaderd", "--lease-name", "x"]).unwrap();
        let s = cli
            .run
            .validate(
                |k| (k == "POD_NAME").then(|| "pod-7".into()),
                || Some("h".into()),
            )
            .unwrap();
        assert_eq!(s.first().params.identity, "pod-7");
        let cli = Cli::try_parse_from(["leaderd", "--lease-name", "x", "--identity", " "]).unwrap();
        assert_eq!(
            cli.run.validate(|_| None, || None).unwrap_err(),
            ConfigError::EmptyIdentity
        );
        let cli = Cli::try_parse_from(["leaderd", "--lease-name", "x"]).unwrap();
        assert_eq!(
            cli.run.validate(|_| None, || None).unwrap_err(),
            ConfigError::EmptyIdentity
        );
    }

    #[test]
    fn missing_lease_name_says_how_to_set_it() {
        assert_eq!(parse(&[]).unwrap_err(), ConfigError::MissingLeaseName);
    }

    #[test]
    fn feature_flags_are_validated_with_the_fix() {
        let e = parse(&["--lease-name", "x", "--label-pod"]).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("--label-pod needs the pod's name"),
            "{e}"
        );
        let cli = Cli::try_parse_from(["leaderd", "--lease-name", "x", "--label-pod"]).unwrap();
        let s = cli
            .run
            .validate(|k| (k == "POD_NAME").then(|| "p-1".into()), || None)
            .unwrap();
        assert_eq!(s.pod_label.unwrap().key, DEFAULT_POD_LABEL_KEY);
        let e = parse(&[
            "--lease-name",
            "x",
            "--label-pod=true",
            "--pod-label-key",
            "bad key",
        ])
        .unwrap_err();
        assert!(e.to_string().starts_with("--pod-label-key"), "{e}");
        let e = parse(&["--lease-name", "x", "--on-started-leading", "echo 'x"]).unwrap_err();
        assert!(e.to_string().contains("unbalanced quotes"), "{e}");
        let e = parse(&["--lease-name", "x", "--notify-url", "https://a/b"]).unwrap_err();
        assert!(e.to_string().starts_with("--notify-url"), "{e}");
        let s = parse(&[
            "--lease-name",
            "x",
            "--on-new-leader",
            "/bin/sh -c 'echo \"$LEADERD_LEADER\"'",
            "--notify-url",
            "http://127.0.0.1:8080/leader",
            "--priority",
            "-3",
            "--on-lost",
            "exit",
        ])
        .unwrap();
        assert_eq!(
            s.hooks.new_leader.clone().unwrap(),
            ["/bin/sh", "-c", "echo \"$LEADERD_LEADER\""]
        );
        assert_eq!(s.first().params.priority, -3);
        assert_eq!(s.on_lost, OnLost::Exit);
        assert!(is_label_key("leaderd.io/role"));
        assert!(is_label_key("role"));
        assert!(!is_label_key("-role"));
        assert!(!is_label_key("Bad_Prefix/role"));
    }

    #[test]
    fn a_config_file_of_several_entries_gives_one_lease_settings_each() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.yaml");
        std::fs::write(
            &file,
            "identity: from-file\nleases:\n  - name: cron\ngroups:\n  - {name: work, shards: 8, leaseDuration: 30s, renewDeadline: 20s, retryPeriod: 4s}\n",
        )
        .unwrap();
        let f = file.to_str().unwrap();
        let s = parse(&["--config", f, "--priority", "2", "--on-lost", "exit"]).unwrap();
        let names: Vec<(&str, Option<u32>)> = s
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.shards))
            .collect();
        assert_eq!(names, [("cron", None), ("work", Some(8))]);
        assert_eq!(s.entries[0].params.lease_duration, Duration::from_secs(15));
        assert_eq!(s.entries[1].params.lease_duration, Duration::from_secs(30));
        assert_eq!(s.entries[1].params.retry_period, Duration::from_secs(4));
        for e in &s.entries {
            assert_eq!(e.params.identity, "from-file");
            assert_eq!(e.params.priority, 2);
        }
        // The flag wins over the file's identity.
        let s = parse(&["--config", f, "--identity", "flag"]).unwrap();
        assert!(s.entries.iter().all(|e| e.params.identity == "flag"));
        // A group needs the Kubernetes backend; several entries too.
        let group = dir.path().join("g.yaml");
        std::fs::write(&group, "groups:\n  - {name: work, shards: 8}\n").unwrap();
        let etcd = [
            "--backend",
            "etcd",
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
        ];
        for (file, says) in [
            (group.to_str().unwrap(), "names a shard group"),
            (f, "names 2 leases and groups"),
        ] {
            let mut args = vec!["--config", file];
            args.extend_from_slice(&etcd);
            let e = parse(&args).unwrap_err().to_string();
            assert!(e.contains(says) && e.contains("--backend etcd"), "{e}");
        }
        // What acts for one lease is refused, naming the flag and the file.
        for (flags, named) in [
            (&["--label-pod", "--pod-name", "p"][..], "--label-pod"),
            (&["--on-new-leader", "/bin/true"][..], "--on-new-leader"),
            (&["--notify-url", "http://127.0.0.1:1/"][..], "--notify-url"),
        ] {
            let mut args = vec!["--config", f];
            args.extend_from_slice(flags);
            let e = parse(&args).unwrap_err().to_string();
            assert!(
                e.starts_with(named) && e.contains("names 2 leases and groups"),
                "{e}"
            );
        }
    }

    #[test]
    fn same_listener_address_is_refused() {
        let e = parse(&[
            "--lease-name",
            "x",
            "--http-addr",
            "127.0.0.1:9",
            "--metrics-addr",
            "127.0.0.1:9",
        ])
        .unwrap_err();
        assert_eq!(e, ConfigError::SameAddr("127.0.0.1:9".parse().unwrap()));
    }
}

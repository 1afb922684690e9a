//! The sidecar as a whole: flags to exit code. [`main`] validates the flags before anything
//! starts, then [`App::build`] connects and binds, and [`App::run`] wires the parts (store →
//! election → published state → readers and side effects) and carries out the one shutdown
//! plan: on SIGTERM (or `--on-lost=exit`), the elector steps down and releases, every side effect
//! finishes what the last transitions asked, and the listeners drain, all within one
//! [`DRAIN_BUDGET`].

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, Instrument};

use crate::config::{self, Cli, LeaseSettings, LogFormat, OnLost, Settings, EXIT_LOST, EXIT_USAGE};
use crate::election::{Elector, ElectorConfig, Transition};
#[cfg(feature = "etcd")]
use crate::etcd::{EtcdConfig, EtcdElector, EtcdError};
use crate::kube_store::KubeGroupStore;
use crate::kube_store::KubeLeaseStore;
use crate::metrics::{MeasuredStore, Metrics};
use crate::shards::{Group, GroupParams, Member, ShardsIdentity, ShardsRx};
use crate::status::{self, Identity, StatusRx, StatusTx};
use crate::{appcheck, events, hooks, http, notify, podlabel, shutdown};

/// How long shutting down may take in all, from the signal: the release, the last Events,
/// hooks, pod label and notification, and the listeners' drain. Well within Kubernetes' default
/// 30 s grace period; what is not done by then is abandoned (the lease is safe either way: the
/// elector stops claiming before it releases, and an unwritten release is waited out).
pub const DRAIN_BUDGET: Duration = Duration::from_secs(10);

/// What can stop leaderd from starting.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// No kubeconfig and no in-cluster service account: a usage error (exit 64), not retryable.
    #[error("no cluster connection: {0}; run in a pod with a service account, or set KUBECONFIG")]
    NoCluster(#[source] kube::config::InferConfigError),
    /// The Kubernetes client could not be built from the configuration found; not retryable.
    #[error("building the Kubernetes client: {0}")]
    Client(#[source] kube::Error),
    /// A listener could not be bound (the message names the flag); retryable once the address
    /// is free.
    #[error(transparent)]
    Bind(std::io::Error),
    #[cfg(feature = "etcd")]
    /// The etcd client could not be set up: the TLS files are not a usable certificate, key
    /// or CA (a usage error, exit 64); not retryable.
    #[error("--etcd-ca-file/--etcd-cert-file/--etcd-key-file: the etcd client cannot use them ({0}): give PEM files of an X.509 v3 CA and client certificate (openssl x509 -req ... -extfile with extendedKeyUsage=clientAuth) and its private key")]
    Etcd(#[source] EtcdError),
    /// The metrics could not be registered (a bug); not retryable.
    #[error("registering metrics: {0}")]
    Metrics(#[source] prometheus::Error),
    /// The signal handlers could not be installed; not retryable.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
}

impl AppError {
    /// The exit code for this error.
    pub fn exit_code(&self) -> ExitCode {
        match self {
            AppError::NoCluster(_) => ExitCode::from(EXIT_USAGE),
            #[cfg(feature = "etcd")]
            AppError::Etcd(_) => ExitCode::from(EXIT_USAGE),
            _ => ExitCode::FAILURE,
        }
    }
}

/// leaderd's whole program: flags and environment from the process, exit code back.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print(); // --help, --version
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            let first = first.strip_prefix("error: ").unwrap_or(first);
            eprintln!("leaderd: {first}; see leaderd --help");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if let Some(config::Command::Timings(args)) = &cli.command {
        return crate::timings::run(args);
    }
    let settings = match cli
        .run
        .validate(|k| std::env::var(k).ok(), config::hostname)
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leaderd: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    init_logging(settings.log_format, settings.log_level.as_deref());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime");
    runtime.block_on(async {
        let shutdown = CancellationToken::new();
        let started = shutdown::cancel_on_signals(shutdown.clone()).map_err(AppError::Signals);
        let app = match started {
            Ok(()) => App::build(settings).await,
            Err(e) => Err(e),
        };
        match app {
            Ok(app) => app.run(shutdown).await,
            Err(e) => report(&e),
        }
    })
}

fn report(e: &AppError) -> ExitCode {
    match e {
        AppError::NoCluster(_) => eprintln!("leaderd: {e}"),
        #[cfg(feature = "etcd")]
        AppError::Etcd(_) => eprintln!("leaderd: {e}"),
        _ => error!("{e}"),
    }
    e.exit_code()
}

fn init_logging(format: LogFormat, level: Option<&str>) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = match level {
        Some(l) => EnvFilter::new(l),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}

/// The elector's campaign, not yet started (it starts after every follower subscribed).
type CampaignRun = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// The coordination store, connected.
enum Store {
    /// The Lease API.
    Kubernetes(kube::Client),
    /// etcd (one lease: `config` refuses several entries with etcd).
    #[cfg(feature = "etcd")]
    Etcd(Box<etcd_client::Client>, EtcdConfig),
}

/// One lease or shard group of the sidecar, its published state and metrics, not yet running.
struct Entry {
    cfg: LeaseSettings,
    elector: ElectorConfig,
    status_tx: StatusTx,
    status: StatusRx,
    metrics: Arc<Metrics>,
}

/// One entry, running: what the listeners serve and what its followers follow.
struct Running {
    served: http::Served,
    campaign: CampaignRun,
}

/// The sidecar, connected and bound, not yet running.
pub struct App {
    settings: Settings,
    store: Store,
    namespace: String,
    entries: Vec<Entry>,
    api_listener: TcpListener,
    metrics_listener: TcpListener,
}

impl App {
    /// Find the cluster, bind both listeners and register the metrics.
    pub async fn build(settings: Settings) -> Result<App, AppError> {
        // The shortest of the entries' call timeouts bounds connecting (each call has its own).
        let call_timeout = (settings.entries.iter())
            .map(|e| e.params.call_timeout())
            .min()
            .expect("entries are never empty");
        let (store, namespace) = match &settings.etcd {
            None => {
                let mut kube_cfg = kube::Config::infer().await.map_err(AppError::NoCluster)?;
                kube_cfg.connect_timeout = Some(call_timeout);
                kube_cfg.read_timeout = None; // every call has its own timeout; watches are long
                let namespace = settings
                    .namespace
                    .clone()
                    .unwrap_or_else(|| kube_cfg.default_namespace.clone());
                let client = kube::Client::try_from(kube_cfg).map_err(AppError::Client)?;
                (Store::Kubernetes(client), namespace)
            }
            #[cfg(not(feature = "etcd"))]
            Some(_) => unreachable!(
                "config::RunArgs::validate refuses --backend etcd without the etcd feature"
            ),
            #[cfg(feature = "etcd")]
            Some(e) => {
                let first = settings.first();
                let cfg = EtcdConfig {
                    endpoints: e.endpoints.clone(),
                    key_prefix: e.key_prefix(&first.name),
                    tls: e.tls.clone(),
                    release_on_shutdown: settings.release_on_shutdown,
                    call_timeout: first.params.call_timeout(),
                };
                let client = crate::etcd::elector::connect(&cfg)
                    .await
                    .map_err(AppError::Etcd)?;
                (Store::Etcd(Box::new(client), cfg), e.prefix.clone())
            }
        };
        let bind = |addr: SocketAddr, flag: &'static str| async move {
            http::bind(addr, flag).await.map_err(AppError::Bind)
        };
        let api_listener = bind(settings.http_addr, "--http-addr").await?;
        let metrics_listener = bind(settings.metrics_addr, "--metrics-addr").await?;
        let backend = match store {
            Store::Kubernetes(_) => "kubernetes",
            #[cfg(feature = "etcd")]
            Store::Etcd(..) => "etcd",
        };
        let registry = prometheus::Registry::new();
        let mut entries = Vec::new();
        for (i, cfg) in settings.entries.iter().enumerate() {
            let (status_tx, status) = status::channel(Identity {
                lease: cfg.name.clone(),
                namespace: namespace.clone(),
                identity: cfg.params.identity.clone(),
            });
            let metrics = Metrics::new(
                &registry,
                i == 0,
                status.clone(),
                settings.app_check.is_some(),
                backend,
                cfg.shards,
            )
            .map_err(AppError::Metrics)?;
            entries.push(Entry {
                elector: ElectorConfig {
                    release_on_shutdown: settings.release_on_shutdown,
                    ..ElectorConfig::new(cfg.params.clone())
                },
                cfg: cfg.clone(),
                status_tx,
                status,
                metrics: Arc::new(metrics),
            });
        }
        Ok(App {
            settings,
            store,
            namespace,
            entries,
            api_listener,
            metrics_listener,
        })
    }

    /// Campaign until `shutdown` (or, with `--on-lost=exit`, until leadership is lost without a
    /// release), then shut down within [`DRAIN_BUDGET`]. The exit code: 0, or 75 for
    /// `--on-lost=exit`.
    pub async fn run(self, shutdown: CancellationToken) -> ExitCode {
        let App {
            settings: s,
            store,
            namespace,
            entries,
            api_listener,
            metrics_listener,
        } = self;
        for e in &entries {
            let p = &e.cfg.params;
            info!(
                lease = %e.cfg.name, %namespace, identity = %p.identity, shards = ?e.cfg.shards,
                lease_duration = %humantime::format_duration(p.lease_duration),
                renew_deadline = %humantime::format_duration(p.renew_deadline),
                retry_period = %humantime::format_duration(p.retry_period),
                "leaderd starting"
            );
        }
        let first = &entries[0];
        let span = info_span!("election", lease = %first.cfg.name, %namespace, identity = %first.cfg.params.identity);
        // An input of every election like the store: the app's health (rule 13).
        let checks_stop = CancellationToken::new();
        let health = s.app_check.as_ref().map(|check| {
            let (tx, rx) = tokio::sync::watch::channel(false);
            info!(target = %check.target, "leadership follows the app's health");
            tokio::spawn(
                appcheck::run(
                    check.clone(),
                    tx,
                    Some(first.metrics.clone()),
                    checks_stop.clone(),
                )
                .instrument(span.clone()),
            );
            rx
        });
        let client = match &store {
            Store::Kubernetes(client) => Some(client.clone()),
            #[cfg(feature = "etcd")]
            Store::Etcd(..) => None,
        };
        let metrics: Vec<Arc<Metrics>> = entries.iter().map(|e| e.metrics.clone()).collect();
        let statuses: Vec<StatusRx> = entries.iter().map(|e| e.status.clone()).collect();
        let call_timeouts: Vec<Duration> = entries.iter().map(|e| e.elector.call_timeout).collect();
        let running: Vec<Running> = match store {
            Store::Kubernetes(client) => entries
                .into_iter()
                .map(|e| start_kubernetes(e, &s, &client, &namespace, health.clone(), &shutdown))
                .collect(),
            #[cfg(feature = "etcd")]
            Store::Etcd(client, cfg) => {
                let e = entries.into_iter().next().expect("entries are never empty");
                let m = e.metrics.clone();
                let mut elector = EtcdElector::new(*client, cfg, e.cfg.params.clone(), e.status_tx)
                    .with_observer(Arc::new(move |verb, code, took| {
                        m.request(verb, code, took)
                    }));
                let control = elector.control();
                if let Some(rx) = health {
                    elector = elector.with_app_health(rx);
                }
                let span = info_span!("election", lease = %e.cfg.name, %namespace, identity = %e.cfg.params.identity);
                let run = elector.run(shutdown.clone()).instrument(span);
                vec![Running {
                    served: http::Served {
                        name: e.cfg.name.clone(),
                        status: e.status,
                        control: Some(control),
                        shards: None,
                    },
                    campaign: Box::pin(run),
                }]
            }
        };
        let (served, campaigns): (Vec<http::Served>, Vec<CampaignRun>) =
            running.into_iter().map(|r| (r.served, r.campaign)).unzip();
        let campaign = futures::future::join_all(campaigns);

        // Readers of the published state: the listeners.
        let servers = CancellationToken::new();
        let listeners = [
            tokio::spawn(http::serve(
                api_listener,
                http::router(served),
                "http api",
                servers.clone(),
                s.http_limits,
                Some(metrics[0].listener("api")),
            )),
            tokio::spawn(http::serve(
                metrics_listener,
                crate::metrics::router(metrics.clone()),
                "metrics",
                servers.clone(),
                s.http_limits,
                Some(metrics[0].listener("metrics")),
            )),
        ];

        // Followers of the transition streams, subscribed before the electors start. Each ends
        // when its stream ends (the elector is gone), after finishing what it was asked.
        let cut_short = CancellationToken::new(); // the drain budget ran out
        let mut followers: Vec<JoinHandle<()>> = Vec::new();
        let mut follow = |task: JoinHandle<()>| followers.push(task);
        for ((m, status), call_timeout) in metrics.iter().zip(&statuses).zip(call_timeouts) {
            follow(tokio::spawn(m.clone().follow(status.transitions())));
            if let (true, Some(client)) = (s.emit_events, &client) {
                follow(tokio::spawn(
                    events::publish(
                        client.clone(),
                        namespace.clone(),
                        status.id.lease.clone(),
                        status.id.identity.clone(),
                        status.transitions(),
                        call_timeout,
                    )
                    .instrument(info_span!("election", lease = %status.id.lease)),
                ));
            }
        }
        // The side effects for one lease (config refuses them with several entries).
        let (status, metrics) = (&statuses[0], &metrics[0]);
        if s.hooks.started_leading.is_some()
            || s.hooks.stopped_leading.is_some()
            || s.hooks.new_leader.is_some()
        {
            follow(tokio::spawn(
                hooks::run(
                    s.hooks.clone(),
                    status.clone(),
                    status.transitions(),
                    Some(metrics.clone()),
                )
                .instrument(span.clone()),
            ));
        }
        if let (Some(pl), Some(client)) = (&s.pod_label, &client) {
            follow(tokio::spawn(
                podlabel::run(
                    client.clone(),
                    pl.namespace.clone().unwrap_or_else(|| namespace.clone()),
                    pl.pod.clone(),
                    pl.key.clone(),
                    status.clone(),
                    status.transitions(),
                    Some(metrics.clone()),
                )
                .instrument(span.clone()),
            ));
        }
        if let Some(url) = &s.notify_url {
            follow(tokio::spawn(
                notify::run(
                    url.clone(),
                    status.clone(),
                    status.transitions(),
                    Some(metrics.clone()),
                    cut_short.clone(),
                )
                .instrument(span.clone()),
            ));
        }
        // --on-lost=exit: leadership of any entry lost without a release ends the process (after
        // the claim has already ended), so that the kubelet restarts the container.
        let lost = Arc::new(AtomicBool::new(false));
        if s.on_lost == OnLost::Exit {
            for status in &statuses {
                let (lost, stop, mut transitions) =
                    (lost.clone(), shutdown.clone(), status.transitions());
                let lease = status.id.lease.clone();
                follow(tokio::spawn(
                    async move {
                        while let Some(t) = transitions.recv().await {
                            if let Transition::Lost { reason, epoch } = t {
                                if !reason.is_deliberate() && !lost.swap(true, Ordering::SeqCst) {
                                    error!(%lease, reason = reason.as_str(), ?epoch, "leadership lost without a release and --on-lost=exit: exiting with code {EXIT_LOST}");
                                    stop.cancel();
                                }
                            }
                        }
                    }
                    .instrument(span.clone()),
                ));
            }
        }

        // Campaign until shutdown; then one budget for everything that follows.
        let mut campaign = tokio::spawn(campaign);
        let finished_early = tokio::select! {
            _ = shutdown.cancelled() => false,
            _ = &mut campaign => true,
        };
        checks_stop.cancel();
        let deadline = Instant::now() + DRAIN_BUDGET;
        if !finished_early
            && tokio::time::timeout_at(deadline, &mut campaign)
                .await
                .is_err()
        {
            info!("the release did not finish within the drain budget; followers will wait the lease out");
            campaign.abort();
        }
        let all_followed = futures::future::join_all(followers.iter_mut());
        if tokio::time::timeout_at(deadline, all_followed)
            .await
            .is_err()
        {
            info!("side effects (Events, hooks, pod label, notification) still running at the end of the drain budget were stopped");
            cut_short.cancel();
            for f in &followers {
                f.abort();
            }
        }
        // The API keeps answering (not leader) until here; then in-flight requests finish.
        servers.cancel();
        let drained = futures::future::join_all(listeners);
        let grace = deadline.max(Instant::now() + Duration::from_millis(500));
        if tokio::time::timeout_at(grace, drained).await.is_err() {
            info!("drain timed out; exiting");
        }
        if lost.load(Ordering::SeqCst) {
            info!("leaderd stopped: leadership lost (--on-lost=exit)");
            return ExitCode::from(EXIT_LOST);
        }
        info!("leaderd stopped");
        ExitCode::SUCCESS
    }
}

/// Start one entry on the Lease API: its elector and, for a shard group, its member (the
/// group's coordinator is elected on the group's own Lease among the replicas whose shard
/// count agrees, and whose app is healthy, with `--app-check`).
fn start_kubernetes(
    e: Entry,
    s: &Settings,
    client: &kube::Client,
    namespace: &str,
    health: Option<tokio::sync::watch::Receiver<bool>>,
    shutdown: &CancellationToken,
) -> Running {
    let Entry {
        cfg,
        elector: elector_cfg,
        status_tx,
        status,
        metrics,
    } = e;
    let span =
        info_span!("election", lease = %cfg.name, %namespace, identity = %cfg.params.identity);
    let store = MeasuredStore::new(
        KubeLeaseStore::new(client.clone(), namespace, &cfg.name),
        metrics.clone(),
    );
    let mut elector = Elector::new(store, elector_cfg, status_tx);
    let control = elector.control();
    let (health, member) = match cfg.shards {
        None => (health, None),
        Some(n) => {
            let (member, shards_rx) =
                shard_member(s, &cfg, n, client, namespace, &status, &metrics);
            (
                Some(coordinator_health(health, shards_rx.clone())),
                Some((member, shards_rx)),
            )
        }
    };
    if let Some(rx) = health {
        elector = elector.with_app_health(rx);
    }
    let elector = elector.run(shutdown.clone()).instrument(span);
    let (campaign, shards): (CampaignRun, _) = match member {
        None => (Box::pin(elector), None),
        Some((member, rx)) => {
            let member = member.run(shutdown.clone()).instrument(
                info_span!("shards", group = %cfg.name, identity = %cfg.params.identity),
            );
            let both = async move {
                tokio::join!(elector, member);
            };
            (Box::pin(both), Some(rx))
        }
    };
    Running {
        served: http::Served {
            name: cfg.name,
            status,
            control: Some(control),
            shards,
        },
        campaign,
    }
}

/// The shard group's executor (`--shards n`), fed by the coordinator's tenure of the group's
/// ordinary Lease, and the reading side of what it publishes (also attached to the metrics).
fn shard_member(
    s: &Settings,
    cfg: &LeaseSettings,
    n: u32,
    client: &kube::Client,
    namespace: &str,
    status: &StatusRx,
    metrics: &Arc<Metrics>,
) -> (Member<KubeGroupStore>, ShardsRx) {
    let group = Group::new(
        GroupParams {
            group: cfg.name.clone(),
            shards: n,
            params: cfg.params.clone(),
            release_on_shutdown: s.release_on_shutdown,
        },
        fastrand::u64(..),
    );
    let (tenure_tx, tenure_rx) = tokio::sync::watch::channel(None);
    let mut st = status.clone();
    tokio::spawn(async move {
        loop {
            let t = st.state().view.tenure;
            tenure_tx.send_if_modified(|old| {
                let changed = *old != t;
                *old = t;
                changed
            });
            if st.changed().await.is_err() {
                return;
            }
        }
    });
    let store = KubeGroupStore::new(client.clone(), namespace, &cfg.name);
    let id = ShardsIdentity {
        group: cfg.name.clone(),
        namespace: namespace.to_owned(),
        identity: cfg.params.identity.clone(),
        shards: n,
    };
    let (member, rx) = Member::new(store, group, id, tenure_rx);
    let mut observers: Vec<Arc<dyn crate::shards::ShardObserver>> = vec![metrics.clone()];
    if s.emit_events {
        // ShardsMoved (rate-limited) and ShardCountMismatch; the task ends with the executor.
        let (tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        observers.push(Arc::new(tx));
        tokio::spawn(events::publish_shards(
            client.clone(),
            namespace.to_owned(),
            cfg.name.clone(),
            cfg.params.identity.clone(),
            events_rx,
            cfg.params.call_timeout(),
        ));
    }
    metrics.attach_shards(rx.clone());
    (member.with_observer(Arc::new(observers)), rx)
}

/// The coordinator's "health": the app's (with `--app-check`) and this replica's shard count
/// agreeing with the group's.
fn coordinator_health(
    app: Option<tokio::sync::watch::Receiver<bool>>,
    mut shards: ShardsRx,
) -> tokio::sync::watch::Receiver<bool> {
    let agrees = |s: &ShardsRx| s.state().mismatch.is_none();
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut app = app;
    tokio::spawn(async move {
        loop {
            let ok = app.as_ref().is_none_or(|a| *a.borrow()) && agrees(&shards);
            tx.send_if_modified(|old| std::mem::replace(old, ok) != ok);
            let app_changed = async {
                match app.as_mut() {
                    Some(a) => a.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = shards.changed() => if r.is_err() { return },
                ok = app_changed => if !ok { return },
            }
        }
    });
    rx
}

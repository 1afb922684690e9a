//! The sidecar as a whole: parse and validate flags, start the runtime, wire the parts.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, Instrument};

use crate::config::{self, Cli, LogFormat, OnLost, Settings, EXIT_LOST, EXIT_USAGE};
use crate::election::{Elector, ElectorConfig, Transition};
use crate::kube_store::KubeLeaseStore;
use crate::status::{self, Identity};
use crate::{events, hooks, http, metrics, notify, podlabel, shutdown};

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
    match runtime().block_on(run(settings)) {
        Ok(code) => code,
        Err(e) => {
            error!("{e:#}");
            ExitCode::FAILURE
        }
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("cannot start the tokio runtime")
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

async fn run(s: Settings) -> anyhow::Result<ExitCode> {
    let token = CancellationToken::new();
    shutdown::cancel_on_signals(token.clone()).context("installing signal handlers")?;

    let elector_cfg = ElectorConfig {
        release_on_shutdown: s.release_on_shutdown,
        ..ElectorConfig::new(s.params.clone())
    };
    let mut kube_cfg = match kube::Config::infer().await {
        Ok(c) => c,
        Err(e) => {
            eprintln!("leaderd: no cluster connection: {e}; run in a pod with a service account, or set KUBECONFIG");
            return Ok(ExitCode::from(EXIT_USAGE));
        }
    };
    kube_cfg.connect_timeout = Some(elector_cfg.call_timeout);
    kube_cfg.read_timeout = None; // every call has its own timeout; watches are long
    let namespace = s
        .namespace
        .clone()
        .unwrap_or_else(|| kube_cfg.default_namespace.clone());
    let client = kube::Client::try_from(kube_cfg).context("building the Kubernetes client")?;

    let id = Identity {
        lease: s.lease_name.clone(),
        namespace: namespace.clone(),
        identity: s.params.identity.clone(),
    };
    let (status_tx, status_rx) = status::channel(id);
    let http_listener = http::bind(s.http_addr, "--http-addr").await?;
    let metrics_listener = http::bind(s.metrics_addr, "--metrics-addr").await?;
    let metrics =
        Arc::new(metrics::Metrics::new(status_rx.clone()).context("registering metrics")?);

    info!(
        lease = %s.lease_name, %namespace, identity = %s.params.identity,
        lease_duration = %humantime::format_duration(s.params.lease_duration),
        renew_deadline = %humantime::format_duration(s.params.renew_deadline),
        retry_period = %humantime::format_duration(s.params.retry_period),
        "leaderd starting"
    );
    let store = KubeLeaseStore::new(client.clone(), &namespace, &s.lease_name);
    let mut elector = Elector::new(store, elector_cfg, status_tx).with_metrics(metrics.clone());
    let control = elector.control();

    let servers = CancellationToken::new();
    let api = tokio::spawn(http::serve(
        http_listener,
        http::router(status_rx.clone(), Some(control)),
        "http api",
        servers.clone(),
        s.http_limits,
        Some(metrics.listener("api")),
    ));
    let prom = tokio::spawn(http::serve(
        metrics_listener,
        metrics::router(metrics.clone()),
        "metrics",
        servers.clone(),
        s.http_limits,
        Some(metrics.listener("metrics")),
    ));

    let span =
        info_span!("election", lease = %s.lease_name, %namespace, identity = %s.params.identity);
    let mut publisher_task = None;
    if s.emit_events {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        elector = elector.with_transitions(tx);
        let publisher = events::publish(
            client.clone(),
            namespace.clone(),
            s.lease_name.clone(),
            s.params.identity.clone(),
            rx,
        );
        publisher_task = Some(tokio::spawn(publisher.instrument(span.clone())));
    }

    // --on-lost=exit: leadership lost without a release ends the process (after the claim has
    // already ended), so that the kubelet restarts the container.
    let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if s.on_lost == OnLost::Exit {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        elector = elector.with_transitions(tx);
        let (lost, token) = (lost.clone(), token.clone());
        tokio::spawn(
            async move {
                while let Some(t) = rx.recv().await {
                    if let Transition::Lost { reason, epoch } = t {
                        if !reason.is_deliberate() {
                            error!(reason = reason.as_str(), ?epoch, "leadership lost without a release and --on-lost=exit: exiting with code {EXIT_LOST}");
                            lost.store(true, std::sync::atomic::Ordering::SeqCst);
                            token.cancel();
                            return;
                        }
                    }
                }
            }
            .instrument(span.clone()),
        );
    }

    // Side effects that follow the election and never feed back into it.
    let side_stop = CancellationToken::new();
    let mut side_tasks = Vec::new();
    let hooks_task = if s.hooks.started_leading.is_some()
        || s.hooks.stopped_leading.is_some()
        || s.hooks.new_leader.is_some()
    {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        elector = elector.with_transitions(tx);
        let st = status_rx.clone();
        Some(tokio::spawn(
            hooks::run(
                s.hooks.clone(),
                status_rx.id.clone(),
                rx,
                move || st.state().leader,
                Some(metrics.clone()),
            )
            .instrument(span.clone()),
        ))
    } else {
        None
    };
    if let Some(pl) = &s.pod_label {
        side_tasks.push(tokio::spawn(
            podlabel::run(
                client.clone(),
                pl.namespace.clone().unwrap_or_else(|| namespace.clone()),
                pl.pod.clone(),
                pl.key.clone(),
                status_rx.clone(),
                Some(metrics.clone()),
                side_stop.clone(),
            )
            .instrument(span.clone()),
        ));
    }
    if let Some(url) = &s.notify_url {
        side_tasks.push(tokio::spawn(
            notify::run(
                url.clone(),
                status_rx.clone(),
                Some(metrics.clone()),
                side_stop.clone(),
            )
            .instrument(span.clone()),
        ));
    }

    elector.run(token).instrument(span).await;
    side_stop.cancel();
    let finish_side = async {
        for t in side_tasks {
            let _ = t.await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(6), finish_side)
        .await
        .is_err()
    {
        info!("labeling the pod or notifying the app timed out at exit");
    }
    if let Some(task) = hooks_task {
        let limit = s.hooks.timeout.min(Duration::from_secs(10));
        if tokio::time::timeout(limit, task).await.is_err() {
            info!("hooks still running at exit were killed");
        }
    }
    // The elector is gone, so the event channel is closed: let the last Events (the
    // StoppedLeading of this shutdown) be posted, within a bound.
    if let Some(task) = publisher_task {
        if tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .is_err()
        {
            info!("posting the last Kubernetes Events timed out");
        }
    }

    // Bounded drain: the API keeps answering (not leader) while in-flight requests finish.
    servers.cancel();
    let drain = async {
        let _ = api.await;
        let _ = prom.await;
    };
    if tokio::time::timeout(Duration::from_secs(2), drain)
        .await
        .is_err()
    {
        info!("drain timed out; exiting");
    }
    if lost.load(std::sync::atomic::Ordering::SeqCst) {
        info!("leaderd stopped: leadership lost (--on-lost=exit)");
        return Ok(ExitCode::from(EXIT_LOST));
    }
    info!("leaderd stopped");
    Ok(ExitCode::SUCCESS)
}

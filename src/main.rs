//! leaderd's entry point: parse and validate flags, start the runtime, wire the parts.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, info_span, Instrument};

use leaderd::config::{self, Cli, Command, LogFormat, Settings, EXIT_USAGE};
use leaderd::election::{Elector, ElectorConfig};
use leaderd::kube_store::KubeLeaseStore;
use leaderd::status::{self, Identity};
use leaderd::{demo, events, http, metrics, shutdown};

fn main() -> ExitCode {
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
    if let Some(Command::Demo(args)) = cli.command {
        init_logging(LogFormat::Text, Some("warn"));
        return runtime().block_on(demo::run(args));
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
    let servers = CancellationToken::new();
    let api = tokio::spawn(http::serve(
        http_listener,
        http::router(status_rx),
        "http api",
        servers.clone(),
    ));
    let prom = tokio::spawn(http::serve(
        metrics_listener,
        metrics::router(metrics.clone()),
        "metrics",
        servers.clone(),
    ));

    let store = KubeLeaseStore::new(client.clone(), &namespace, &s.lease_name);
    let mut elector = Elector::new(store, elector_cfg, status_tx).with_metrics(metrics);
    let span =
        info_span!("election", lease = %s.lease_name, %namespace, identity = %s.params.identity);
    let mut publisher_task = None;
    if s.emit_events {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        elector = elector.with_transitions(tx);
        let publisher = events::publish(
            client,
            namespace.clone(),
            s.lease_name.clone(),
            s.params.identity.clone(),
            rx,
        );
        publisher_task = Some(tokio::spawn(publisher.instrument(span.clone())));
    }
    elector.run(token).instrument(span).await;
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
    info!("leaderd stopped");
    Ok(ExitCode::SUCCESS)
}

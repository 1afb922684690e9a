//! The lease-per-shard peer (knative style): one process of this same bench binary, started as
//! `shards knative-peer ...`, that runs one ordinary leaderd election per bucket — a
//! [`leaderd::election::Elector`] over a [`leaderd::kube_store::KubeLeaseStore`] for each of the
//! Leases `<prefix>-0000` .. `<prefix>-<B-1>` — on one kube client (the `KUBECONFIG` the bench
//! writes), and serves what it leads as a `GET /shards` document of leaderd's shape, so the same
//! [`leaderd_testkit::harness::shards::ShardSampler`] polls and checks both layouts.
//!
//! Per bucket: `owner` is the holder its elector last saw, `is_owner` whether its claim (rule 2:
//! renew deadline after its last renew was sent) still runs at the moment of the answer, `epoch`
//! the Lease's `leaseTransitions` of that tenure. SIGTERM stops every elector, each releasing its
//! bucket if it leads (leaderd's default), then exits 0.
//!
//! Runs on tokio with 2 worker threads, as leaderd does. Logs (stderr) at `RUST_LOG` (the bench
//! passes `LEADERD_CHILD_LOG`, default `error`: 1,024 electors at `info` would log every renewal
//! trouble of every bucket); one line `http api listening addr=A` tells the bench where it listens.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use axum::routing::get;
use axum::{Json, Router};
use clap::Parser;
use leaderd::election::{
    clock, Elector, ElectorConfig, Params, Publisher, Tenure, Transition, View,
};
use leaderd::kube_store::KubeLeaseStore;
use leaderd::shards::{ShardEntry, ShardsDoc};
use tokio_util::sync::CancellationToken;

/// The first argument that turns this binary into a peer.
pub const PEER_ARG: &str = "knative-peer";

/// `shards knative-peer [options]` (started by the bench, not by hand).
#[derive(Parser, Debug)]
#[command(name = "shards knative-peer")]
pub struct PeerArgs {
    /// This replica's identity (every bucket's holderIdentity when it leads).
    #[arg(long)]
    pub identity: String,
    /// The Leases' namespace.
    #[arg(long)]
    pub namespace: String,
    /// Lease names are `<prefix>-NNNN`.
    #[arg(long)]
    pub prefix: String,
    /// Buckets (one Lease and one elector each).
    #[arg(long)]
    pub buckets: u32,
    /// Lease duration, renew deadline, retry period (milliseconds).
    #[arg(long, value_delimiter = ',')]
    pub timing_ms: Vec<u64>,
}

/// One bucket as its elector last published it.
#[derive(Clone, Debug, Default)]
struct Bucket {
    holder: Option<String>,
    epoch: Option<i64>,
    tenure: Option<Tenure>,
}

struct BucketPublisher {
    slot: Arc<Mutex<Bucket>>,
}

impl Publisher for BucketPublisher {
    fn publish(&mut self, view: View, _observed_at: Option<SystemTime>) {
        let mut b = self.slot.lock().unwrap_or_else(|e| e.into_inner());
        b.holder = view.holder;
        b.epoch = view.epoch;
        b.tenure = view.tenure;
    }

    fn transition(&mut self, _transition: Transition) {}
}

struct Shared {
    identity: String,
    namespace: String,
    prefix: String,
    buckets: Vec<Arc<Mutex<Bucket>>>,
}

impl Shared {
    fn doc(&self) -> ShardsDoc {
        let now = clock::now();
        let shards = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, slot)| {
                let b = slot.lock().unwrap_or_else(|e| e.into_inner()).clone();
                let mine = b.tenure.filter(|t| t.is_valid_at(now));
                ShardEntry {
                    id: i as u32,
                    owner: b.holder,
                    is_owner: mine.is_some(),
                    epoch: mine.map(|t| t.epoch).or(b.epoch),
                    valid_for_ms: mine
                        .map(|t| t.valid_until.saturating_duration_since(now).as_millis() as u64),
                }
            })
            .collect();
        ShardsDoc {
            group: self.prefix.clone(),
            namespace: self.namespace.clone(),
            identity: self.identity.clone(),
            members: Vec::new(),
            shards,
        }
    }
}

/// The Lease of bucket `i`.
pub fn bucket_lease(prefix: &str, i: u32) -> String {
    format!("{prefix}-{i:04}")
}

/// The peer's `main` (argv after the program name, starting with [`PEER_ARG`]).
pub fn main(args: Vec<String>) -> ExitCode {
    let a = match PeerArgs::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(64);
        }
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("error"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .init();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("knative-peer: cannot start the tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(a)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("knative-peer: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(a: PeerArgs) -> anyhow::Result<()> {
    let [d, r, p] = a.timing_ms[..] else {
        anyhow::bail!("--timing-ms needs three values");
    };
    let params = Params {
        identity: a.identity.clone(),
        lease_duration: Duration::from_millis(d),
        renew_deadline: Duration::from_millis(r),
        retry_period: Duration::from_millis(p),
        priority: 0,
    };
    let cfg = ElectorConfig::new(params);
    // As leaderd builds its client (src/app.rs): connect within the call timeout, no read
    // timeout (every call has its own; watches are long).
    let mut kube_cfg = kube::Config::infer().await?;
    kube_cfg.connect_timeout = Some(cfg.call_timeout);
    kube_cfg.read_timeout = None;
    let client = kube::Client::try_from(kube_cfg)?;

    let shared = Arc::new(Shared {
        identity: a.identity.clone(),
        namespace: a.namespace.clone(),
        prefix: a.prefix.clone(),
        buckets: (0..a.buckets)
            .map(|_| Arc::new(Mutex::new(Bucket::default())))
            .collect(),
    });

    // Listen first, so the bench sees the peer at once; the electors start right after.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let doc = shared.clone();
    let app = Router::new().route(
        "/shards",
        get(move || {
            let doc = doc.clone();
            async move { Json(doc.doc()) }
        }),
    );
    let stop_http = CancellationToken::new();
    let http_stop = stop_http.clone();
    let http = tokio::spawn(async move {
        let _ = axum::serve(listener, app)
            .with_graceful_shutdown(http_stop.cancelled_owned())
            .await;
    });
    eprintln!("http api listening addr={addr}");

    let shutdown = CancellationToken::new();
    let mut electors = Vec::with_capacity(a.buckets as usize);
    for (i, slot) in shared.buckets.iter().enumerate() {
        let store = KubeLeaseStore::new(
            client.clone(),
            &a.namespace,
            &bucket_lease(&a.prefix, i as u32),
        );
        let publisher = BucketPublisher { slot: slot.clone() };
        let elector = Elector::new(store, cfg.clone(), publisher);
        electors.push(tokio::spawn(elector.run(shutdown.clone())));
    }

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    // Every elector steps down and releases what it leads, as leaderd does on SIGTERM.
    shutdown.cancel();
    let released = tokio::time::timeout(
        Duration::from_millis(r),
        futures::future::join_all(electors),
    )
    .await;
    if released.is_err() {
        eprintln!("knative-peer: not every elector stopped within the renew deadline");
    }
    stop_http.cancel();
    let _ = http.await;
    Ok(())
}

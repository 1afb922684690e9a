//! The Prometheus `/metrics` endpoint on `--metrics-addr` (which also answers the kubelet
//! probes `/healthz` and `/readyz`) and what feeds it, all from outside the election: the
//! leadership gauges are computed from the published state at scrape time (so they can never
//! claim a lapsed leadership), the transition counters follow the transition stream
//! ([`Metrics::follow`]), and the request counters come from [`MeasuredStore`], a
//! [`LeaseStore`] that measures the one it wraps.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{
    Encoder, Gauge, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use futures::stream::BoxStream;
use serde_json::Value;
use tokio::time::Instant;

use crate::election::{LeaseStore, LossReason, StoreError, StoredLease, Transition, WatchEvent};
use crate::http::ListenerStats;
use crate::shards::{MoveReason, ShardObserver, ShardTransition, ShardsRx, WriteKind};
use crate::status::{StatusRx, Transitions};

/// The metrics of one lease or shard group (one entry of `--config`), in a registry that the
/// entries of one leaderd share: every series carries its `lease` and `namespace` labels, and
/// the process-wide ones (build, HTTP listeners, app checks, `process_*`) are registered by the
/// first entry only, so that `/metrics` shows each once.
pub struct Metrics {
    registry: Registry,
    status: StatusRx,
    is_leader: IntGauge,
    master_status: IntGauge,
    epoch: IntGauge,
    valid_seconds: Gauge,
    leader_changes: IntCounter,
    acquisitions: IntCounter,
    losses: IntCounterVec,
    requests: IntCounterVec,
    request_duration: HistogramVec,
    last_change: Gauge,
    watch_restarts: IntCounter,
    side_effects: IntCounterVec,
    http_open: IntGaugeVec,
    http_refused: IntCounterVec,
    app_healthy: IntGauge,
    app_checks: IntCounterVec,
    shards: Option<ShardMetrics>,
}

/// The metrics of a shard group (`--shards`).
struct ShardMetrics {
    rx: std::sync::Mutex<Option<ShardsRx>>,
    configured: IntGauge,
    owned: IntGauge,
    members: IntGauge,
    mismatch: IntGauge,
    moves: IntCounterVec,
    writes: IntCounterVec,
}

/// The HTTP listeners whose connections are counted.
pub const LISTENERS: [&str; 2] = ["api", "metrics"];

impl Metrics {
    /// Register the metrics for the lease in `status`.
    /// `app_check`: whether `--app-check` is configured (only then are its series exported).
    /// `backend`: the coordination store ("kubernetes" or "etcd"), exported as
    /// `leaderd_backend_info`.
    /// `shards`: the shard count with `--shards` (only then are the shard series exported; the
    /// group's view is attached with [`Metrics::attach_shards`]).
    /// `registry`: where to register, shared by the entries of one leaderd; `process_wide`:
    /// whether this entry also registers the process-wide series (the first entry does).
    pub fn new(
        registry: &Registry,
        process_wide: bool,
        status: StatusRx,
        app_check: bool,
        backend: &str,
        shards: Option<u32>,
    ) -> prometheus::Result<Self> {
        let registry = registry.clone();
        let id = status.id.clone();
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("lease", id.lease.as_str())
                .const_label("namespace", id.namespace.as_str())
        };
        macro_rules! reg {
            ($e:expr) => {{
                let c = $e;
                registry.register(Box::new(c.clone()))?;
                c
            }};
        }
        let is_leader = reg!(IntGauge::with_opts(opts(
            "leaderd_is_leader",
            "1 while this candidate may act as leader, else 0."
        ))?);
        let master_status = reg!(IntGauge::with_opts(
            Opts::new(
                "leader_election_master_status",
                "client-go compatible: 1 while this candidate leads, else 0."
            )
            .const_label("name", id.lease.as_str())
        )?);
        let epoch = reg!(IntGauge::with_opts(opts(
            "leaderd_epoch",
            "Fencing epoch of the current tenure as this candidate sees it (0 when none)."
        ))?);
        let valid_seconds = reg!(Gauge::with_opts(opts(
            "leaderd_leadership_valid_seconds",
            "How much longer this candidate may act as leader without renewing (0 for followers)."
        ))?);
        let leader_changes = reg!(IntCounter::with_opts(opts(
            "leaderd_leader_changes_total",
            "Changes of the lease holder observed by this candidate."
        ))?);
        let acquisitions = reg!(IntCounter::with_opts(opts(
            "leaderd_acquisitions_total",
            "Tenures this candidate started."
        ))?);
        let losses = reg!(IntCounterVec::new(
            opts(
                "leaderd_losses_total",
                "Tenures this candidate ended, by reason."
            ),
            &["reason"]
        )?);
        let requests = reg!(IntCounterVec::new(
            opts(
                "leaderd_lease_requests_total",
                "Store requests by verb and result: Lease API HTTP status (or error/timeout); etcd ok, timeout or gRPC status."
            ),
            &["verb", "code"]
        )?);
        let request_duration = reg!(HistogramVec::new(
            HistogramOpts::from(opts(
                "leaderd_lease_request_duration_seconds",
                "Lease API request latency by verb (watch: until the stream opened)."
            ))
            .buckets(vec![
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0
            ]),
            &["verb"]
        )?);
        let last_change = reg!(Gauge::with_opts(opts(
            "leaderd_last_observed_change_timestamp_seconds",
            "Unix time at which this candidate last saw the lease change (0 before)."
        ))?);
        let watch_restarts = reg!(IntCounter::with_opts(opts(
            "leaderd_watch_restarts_total",
            "Times the lease watch was re-established."
        ))?);
        let side_effects = reg!(IntCounterVec::new(
            opts(
                "leaderd_side_effects_total",
                "Pod label patches, hook runs and notifications, by kind and result (ok, error, timeout). Never affect the election."
            ),
            &["kind", "result"]
        )?);
        let http_open = IntGaugeVec::new(
            opts(
                "leaderd_http_connections",
                "Open connections by HTTP listener (api: --http-addr, metrics: --metrics-addr).",
            ),
            &["listener"],
        )?;
        let http_refused = IntCounterVec::new(
            opts(
                "leaderd_http_connections_refused_total",
                "Connections answered 503 and closed because the listener already served --http-max-connections."
            ),
            &["listener"],
        )?;
        if process_wide {
            registry.register(Box::new(http_open.clone()))?;
            registry.register(Box::new(http_refused.clone()))?;
        }
        let app_healthy = IntGauge::with_opts(opts(
            "leaderd_app_healthy",
            "1 while the app passes --app-check (as leaderd counts it), else 0; only with --app-check.",
        ))?;
        let app_checks = IntCounterVec::new(
            opts(
                "leaderd_app_checks_total",
                "App checks (--app-check) by result (ok, failed, timeout).",
            ),
            &["result"],
        )?;
        if app_check {
            registry.register(Box::new(app_healthy.clone()))?;
        }
        if app_check && process_wide {
            registry.register(Box::new(app_checks.clone()))?;
            for result in ["ok", "failed", "timeout"] {
                app_checks.with_label_values(&[result]);
            }
        }
        for listener in LISTENERS {
            http_open.with_label_values(&[listener]);
            http_refused.with_label_values(&[listener]);
        }
        for reason in LossReason::ALL {
            losses.with_label_values(&[reason.as_str()]);
        }
        if process_wide {
            let build = reg!(IntGaugeVec::new(
                Opts::new("leaderd_build_info", "Build information; always 1."),
                &["version"]
            )?);
            build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        }
        let backend_info = reg!(IntGaugeVec::new(
            opts(
                "leaderd_backend_info",
                "The coordination store this candidate campaigns in (kubernetes or etcd); always 1."
            ),
            &["backend"]
        )?);
        backend_info.with_label_values(&[backend]).set(1);
        #[cfg(target_os = "linux")]
        if process_wide {
            registry.register(Box::new(
                prometheus::process_collector::ProcessCollector::for_self(),
            ))?;
        }
        let shards = match shards {
            None => None,
            Some(n) => {
                let configured = reg!(IntGauge::with_opts(opts(
                    "leaderd_shards",
                    "The shard count N this replica was started with (--shards)."
                ))?);
                configured.set(i64::from(n));
                let m = ShardMetrics {
                    rx: std::sync::Mutex::new(None),
                    configured,
                    owned: reg!(IntGauge::with_opts(opts(
                        "leaderd_shards_owned",
                        "Shards this replica may act on now."
                    ))?),
                    members: reg!(IntGauge::with_opts(opts(
                        "leaderd_shard_group_members",
                        "Live members of the shard group as this replica sees them."
                    ))?),
                    mismatch: reg!(IntGauge::with_opts(opts(
                        "leaderd_shard_group_mismatch",
                        "1 while the group's shard count differs from this replica's --shards, else 0."
                    ))?),
                    moves: reg!(IntCounterVec::new(
                        opts(
                            "leaderd_shard_moves_total",
                            "Shards given to a new owner or epoch by this replica as coordinator, by reason."
                        ),
                        &["reason"]
                    )?),
                    writes: reg!(IntCounterVec::new(
                        opts(
                            "leaderd_shard_writes_total",
                            "Successful writes of this replica to the group's Leases, by kind."
                        ),
                        &["kind"]
                    )?),
                };
                for r in [
                    MoveReason::Rebalance,
                    MoveReason::MemberLost,
                    MoveReason::Restart,
                    MoveReason::Lapsed,
                ] {
                    m.moves.with_label_values(&[r.as_str()]);
                }
                for k in [
                    WriteKind::Renew,
                    WriteKind::Ack,
                    WriteKind::Claim,
                    WriteKind::Release,
                    WriteKind::Assignment,
                    WriteKind::Evict,
                ] {
                    m.writes.with_label_values(&[k.as_str()]);
                }
                Some(m)
            }
        };
        Ok(Metrics {
            shards,
            registry,
            status,
            is_leader,
            master_status,
            epoch,
            valid_seconds,
            leader_changes,
            acquisitions,
            losses,
            requests,
            request_duration,
            last_change,
            watch_restarts,
            side_effects,
            http_open,
            http_refused,
            app_healthy,
            app_checks,
        })
    }

    /// The connection metrics of the listener `name` (one of [`LISTENERS`]).
    pub fn listener(&self, name: &str) -> ListenerStats {
        ListenerStats {
            open: self.http_open.with_label_values(&[name]),
            refused: self.http_refused.with_label_values(&[name]),
        }
    }

    /// One store request finished with `code` after `took`: for the Lease API the HTTP status
    /// ("200", "409"), "error" or "timeout"; for etcd "ok", "timeout" or the gRPC status name.
    pub fn request(&self, verb: &str, code: &str, took: Duration) {
        self.requests.with_label_values(&[verb, code]).inc();
        self.request_duration
            .with_label_values(&[verb])
            .observe(took.as_secs_f64());
    }

    /// A tenure started.
    fn acquired(&self) {
        self.acquisitions.inc();
    }

    /// A tenure ended.
    fn lost(&self, reason: LossReason) {
        self.losses.with_label_values(&[reason.as_str()]).inc();
    }

    /// The holder changed.
    fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    /// The lease changed (a new resourceVersion, or it disappeared) at `at`.
    /// The watch was re-established.
    fn watch_restarted(&self) {
        self.watch_restarts.inc();
    }

    /// A side effect (`pod_label`, `hook_started_leading`, ..., `notify`) finished with
    /// `result` (`ok`, `error`, `timeout`).
    pub fn side_effect(&self, kind: &str, result: &str) {
        self.side_effects.with_label_values(&[kind, result]).inc();
    }

    /// One app check ended with `result` (`ok`, `failed`, `timeout`).
    pub fn app_check(&self, result: &str) {
        self.app_checks.with_label_values(&[result]).inc();
    }

    /// Count the transitions (tenures started and ended, holder changes) until the stream
    /// ends (the elector is gone).
    pub async fn follow(self: Arc<Self>, mut transitions: Transitions) {
        while let Some(t) = transitions.recv().await {
            match t {
                Transition::Acquired { .. } => self.acquired(),
                Transition::Lost { reason, .. } => self.lost(reason),
                Transition::NewLeader { .. } => self.leader_changed(),
                Transition::ReleaseFinished(_) => {}
            }
        }
    }

    /// Read the shard group's published view at every scrape.
    pub fn attach_shards(&self, rx: ShardsRx) {
        if let Some(m) = &self.shards {
            *m.rx.lock().unwrap_or_else(|e| e.into_inner()) = Some(rx);
        }
    }

    /// Set the gauges read from the published state (leadership, epoch, validity, the shard
    /// group's view) to what they are now; done at every scrape, before the registry is read.
    fn refresh(&self) {
        if let Some(m) = &self.shards {
            let rx = m.rx.lock().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(rx) = rx {
                let v = rx.state();
                let now = crate::election::clock::now();
                m.owned.set(v.owned_at(now).count() as i64);
                m.members.set(v.members.len() as i64);
                m.mismatch.set(i64::from(v.mismatch.is_some()));
                let _ = &m.configured;
            }
        }
        let state = self.status.state();
        let changed = state
            .changed_at
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok());
        self.last_change
            .set(changed.unwrap_or_default().as_secs_f64());
        self.app_healthy
            .set(i64::from(state.view.app_healthy == Some(true)));
        let view = self.status.view();
        let leading = i64::from(view.is_leader);
        self.is_leader.set(leading);
        self.master_status.set(leading);
        self.epoch.set(view.epoch.unwrap_or(0));
        self.valid_seconds
            .set(view.valid_for_ms.unwrap_or(0) as f64 / 1000.0);
    }
}

/// The text exposition of the shared registry of `entries` now (each entry's gauges refreshed).
pub fn render(entries: &[Arc<Metrics>]) -> String {
    for m in entries {
        m.refresh();
    }
    let Some(first) = entries.first() else {
        return String::new();
    };
    let mut out = Vec::new();
    let _ = TextEncoder::new().encode(&first.registry.gather(), &mut out);
    String::from_utf8(out).unwrap_or_default()
}

impl ShardObserver for Metrics {
    fn request(&self, verb: &str, code: &str, took: Duration) {
        Metrics::request(self, verb, code, took);
    }

    fn write(&self, kind: WriteKind) {
        if let Some(m) = &self.shards {
            m.writes.with_label_values(&[kind.as_str()]).inc();
        }
    }

    fn transition(&self, t: &ShardTransition) {
        if let (Some(m), ShardTransition::Moved { moves, .. }) = (&self.shards, t) {
            for (reason, n) in moves {
                m.moves
                    .with_label_values(&[reason.as_str()])
                    .inc_by(*n as u64);
            }
        }
    }
}

/// The router of the metrics listener: `GET /metrics` (every entry's series), and the probes
/// `/healthz`, `/readyz` (ready once every entry's lease was observed).
pub fn router(entries: Vec<Arc<Metrics>>) -> Router {
    let statuses = entries.iter().map(|m| m.status.clone()).collect();
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(Arc::new(entries))
        .merge(crate::http::probes(statuses))
        .fallback(|| async {
            crate::http::error(
                StatusCode::NOT_FOUND,
                "no such endpoint: try GET /metrics, /healthz or /readyz",
            )
        })
}

async fn scrape(State(entries): State<Arc<Vec<Arc<Metrics>>>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        render(&entries),
    )
        .into_response()
}

/// A [`LeaseStore`] that counts every request of the one it wraps, by verb and HTTP status,
/// with its latency. A request dropped before its answer (the elector's call timeout, or
/// shutdown) is counted as `timeout`; a watch opened again counts as a watch restart.
#[derive(Clone)]
pub struct MeasuredStore<S> {
    inner: S,
    metrics: Arc<Metrics>,
    watches_opened: Arc<AtomicU64>,
}

impl<S> MeasuredStore<S> {
    /// Measure `inner` into `metrics`.
    pub fn new(inner: S, metrics: Arc<Metrics>) -> Self {
        MeasuredStore {
            inner,
            metrics,
            watches_opened: Arc::new(AtomicU64::new(0)),
        }
    }
}

/// Counts a request as `timeout` unless it was answered.
struct Unanswered {
    metrics: Arc<Metrics>,
    verb: &'static str,
    started: Instant,
    answered: bool,
}

impl Drop for Unanswered {
    fn drop(&mut self) {
        if !self.answered {
            self.metrics
                .request(self.verb, "timeout", self.started.elapsed());
        }
    }
}

async fn measure<T>(
    metrics: Arc<Metrics>,
    verb: &'static str,
    fut: impl Future<Output = Result<T, StoreError>> + Send,
) -> Result<T, StoreError> {
    let mut pending = Unanswered {
        metrics,
        verb,
        started: Instant::now(),
        answered: false,
    };
    let r = fut.await;
    pending.answered = true;
    let code = match &r {
        Ok(_) if verb == "create" => "201".to_owned(),
        Ok(_) => "200".to_owned(),
        Err(e) => e.code_label(),
    };
    pending
        .metrics
        .request(verb, &code, pending.started.elapsed());
    r
}

impl<S: LeaseStore> LeaseStore for MeasuredStore<S> {
    fn get(&self) -> impl Future<Output = Result<StoredLease, StoreError>> + Send {
        measure(self.metrics.clone(), "get", self.inner.get())
    }

    fn create(
        &self,
        object: Value,
    ) -> impl Future<Output = Result<StoredLease, StoreError>> + Send {
        measure(self.metrics.clone(), "create", self.inner.create(object))
    }

    fn replace(
        &self,
        object: Value,
    ) -> impl Future<Output = Result<(StoredLease, bool), StoreError>> + Send {
        measure(self.metrics.clone(), "update", self.inner.replace(object))
    }

    fn watch(
        &self,
        resource_version: Option<String>,
    ) -> impl Future<Output = Result<BoxStream<'static, Result<WatchEvent, StoreError>>, StoreError>>
           + Send {
        let (metrics, opened) = (self.metrics.clone(), self.watches_opened.clone());
        let fut = measure(metrics.clone(), "watch", self.inner.watch(resource_version));
        async move {
            let r = fut.await;
            if r.is_ok() && opened.fetch_add(1, Ordering::Relaxed) > 0 {
                metrics.watch_restarted();
            }
            r
        }
    }
}

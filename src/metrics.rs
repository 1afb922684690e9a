//! The Prometheus `/metrics` endpoint on `--metrics-addr`. Gauges are computed from the
//! published leader state at scrape time, so they can never claim a lapsed leadership.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus::{Encoder, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

use crate::status::StatusRx;

/// The metrics of one leaderd.
pub struct Metrics {
    registry: Registry,
    is_leader: IntGauge,
    master_status: IntGauge,
    epoch: IntGauge,
    status: StatusRx,
}

impl Metrics {
    /// Register the metrics for the lease in `status`.
    pub fn new(status: StatusRx) -> prometheus::Result<Self> {
        let registry = Registry::new();
        let id = status.id.clone();
        let labels = [
            ("lease", id.lease.as_str()),
            ("namespace", id.namespace.as_str()),
        ];
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let mut opts = Opts::new(name, help);
            for (k, v) in labels {
                opts = opts.const_label(k, v);
            }
            let g = IntGauge::with_opts(opts)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let is_leader = gauge(
            "leaderd_is_leader",
            "1 while this candidate may act as leader, else 0.",
        )?;
        let epoch = gauge(
            "leaderd_epoch",
            "Fencing epoch of the current tenure as this candidate sees it.",
        )?;
        let master_status = IntGauge::with_opts(
            Opts::new(
                "leader_election_master_status",
                "client-go compatible: 1 while this candidate leads.",
            )
            .const_label("name", id.lease.as_str()),
        )?;
        registry.register(Box::new(master_status.clone()))?;
        let build = IntGaugeVec::new(
            Opts::new("leaderd_build_info", "Build information; always 1."),
            &["version"],
        )?;
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        registry.register(Box::new(build))?;
        #[cfg(target_os = "linux")]
        registry.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Metrics {
            registry,
            is_leader,
            master_status,
            epoch,
            status,
        })
    }

    /// The text exposition of all metrics now.
    pub fn render(&self) -> String {
        let view = self.status.view();
        let leading = i64::from(view.is_leader);
        self.is_leader.set(leading);
        self.master_status.set(leading);
        self.epoch.set(view.epoch.unwrap_or(0));
        let mut out = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut out);
        String::from_utf8(out).unwrap_or_default()
    }
}

/// The router serving `GET /metrics`.
pub fn router(metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .fallback(|| async {
            crate::http::error(StatusCode::NOT_FOUND, "no such endpoint: try GET /metrics")
        })
        .with_state(metrics)
}

async fn scrape(State(m): State<Arc<Metrics>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        m.render(),
    )
        .into_response()
}

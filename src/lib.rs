//! leaderd: a leader-election sidecar for Kubernetes.
//!
//! The map of the crate, from the inside out:
//!
//! - [`election`]: the algorithm. [`election::record`] decodes the Lease leniently,
//!   [`election::store`] is the get/create/replace/watch lock interface,
//!   [`election::state`] the pure step function ([`election::decide`]), and
//!   [`election::elector`] the campaign loop that carries it out.
//! - [`kube_store`]: the lock interface over the Kubernetes API, with kube-rs.
//! - [`status`]: the published leader state (a `tokio::sync::watch`), read by HTTP and metrics.
//! - [`http`]: the app-facing API (`/leader`, its long poll, stream and readiness, `POST
//!   /leader/release`, `/healthz`, `/readyz`).
//! - [`metrics`]: the Prometheus `/metrics` listener and the collectors the elector feeds.
//! - [`events`]: Kubernetes Events on leadership transitions.
//! - [`hooks`], [`podlabel`], [`notify`]: side effects that follow the published state or the
//!   transitions (commands, the leader pod label, a POST to the app) and never feed back.
//! - [`config`]: flags and environment, validated before anything starts.
//! - [`shutdown`]: SIGTERM/SIGINT as one cancellation token.
//! - [`app`]: the whole program (flags to exit code); `main.rs` only calls it.
//!
//! The Lease API test server, the process harness, the in-memory store and the demo live in
//! the `leaderd-testkit` crate (`testkit/`), outside the product.

#![forbid(unsafe_code)]

pub mod app;
pub mod config;
pub mod election;
pub mod events;
pub mod hooks;
pub mod http;
pub mod kube_store;
pub mod metrics;
pub mod notify;
pub mod podlabel;
pub mod shutdown;
pub mod status;

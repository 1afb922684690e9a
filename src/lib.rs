//! leaderd: a leader-election sidecar for Kubernetes.
//!
//! The map of the crate, in the direction data flows (store → state machine → published state →
//! readers and side effects):
//!
//! - [`election`]: the algorithm, importing nothing else of leaderd. [`election::record`]
//!   decodes the Lease leniently, [`election::store`] is the get/create/replace/watch lock
//!   interface, [`election::state`] the closed state machine ([`election::Machine`]: `decide`
//!   what to do, `apply` what came back, every rule of `docs/design.md`), and
//!   [`election::elector`] the executor that runs it and hands its view and transitions to a
//!   [`election::Publisher`].
//! - [`kube_store`]: the lock interface over the Kubernetes API, with kube-rs.
//! - [`etcd`]: the second store, etcd v3 (`--backend etcd`): its own closed state machine
//!   ([`etcd::Campaign`], etcd's `concurrency.Election` line with native leases) and executor
//!   ([`etcd::EtcdElector`]), publishing the same view and transitions through the same
//!   [`election::Publisher`].
//! - [`status`]: the published state: the leader state (a `tokio::sync::watch`) and the
//!   transition stream that every side effect follows.
//! - [`http`]: the app-facing API (`/leader`, its long poll, stream and readiness, `POST
//!   /leader/release`, `/healthz`, `/readyz`) and [`http::server`], the listeners.
//! - [`metrics`]: the Prometheus `/metrics` listener, fed by the state, the transitions and
//!   [`metrics::MeasuredStore`].
//! - [`events`], [`hooks`], [`podlabel`], [`notify`]: side effects that follow the transitions
//!   (Kubernetes Events, commands, the leader pod label, a POST to the app) and never feed back.
//! - [`appcheck`]: `--app-check`, leaderd's own check of the app, an input to the election
//!   like the store (leadership follows the app's health).
//! - [`config`]: flags and environment, validated before anything starts.
//! - [`configfile`]: `--config FILE`, a YAML file of leases and shard groups, each with its timing.
//! - [`timings`]: `leaderd timings`, what the timing flags buy and cost (no cluster needed).
//! - [`shutdown`]: SIGTERM/SIGINT as one cancellation token.
//! - [`app`]: the whole program (flags to exit code) and its one shutdown plan; `main.rs` only
//!   calls it.
//!
//! The Lease API test server, the process harness, the in-memory store and the demo live in
//! the `leaderd-testkit` crate (`testkit/`), outside the product.

#![forbid(unsafe_code)]

pub mod app;
pub mod appcheck;
pub mod config;
pub mod configfile;
pub mod election;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod events;
pub mod hooks;
pub mod http;
pub mod kube_store;
pub mod metrics;
pub mod notify;
pub mod podlabel;
pub mod shards;
pub mod shutdown;
pub mod status;
pub mod timings;

//! Leader election on etcd v3 (`--backend etcd`): etcd's own `concurrency.Election` layout
//! (`<prefix><name>/<lease id in hex>`, the lowest create revision leads) with native leases and
//! the leader's key's create revision as the fencing epoch.
//!
//! Shared with the Kubernetes backend: the published [`crate::election::View`] and
//! [`crate::election::Transition`]s (so the HTTP API, metrics, hooks, `--on-lost` and the
//! notifier work unchanged), [`crate::election::Params`], the election clock, the release
//! [`crate::election::Control`] and the app-health input. Not shared: the algorithm. etcd judges
//! expiry on its own (server-side TTLs) and orders candidates by revision, so
//! [`campaign::Campaign`] is a state machine of its own, with its rules (E1–E7 in
//! `docs/design.md`), and [`elector::EtcdElector`] the executor that runs it with etcd-client.

pub mod campaign;
pub mod elector;
pub mod error;

pub use campaign::{Campaign, Candidate, Outcome, Request, Snapshot, Step};
pub use elector::{EtcdConfig, EtcdElector, EtcdTls};
pub use error::EtcdError;

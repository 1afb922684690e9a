//! Shard groups (`--shards N`): fenced ownership of shards `0..N`, spread evenly over the
//! replicas, on `coordination.k8s.io/v1` Leases with a write budget that does not grow with N.
//!
//! - [`record`]: the member and assignment records, decoded leniently.
//! - [`plan`]: the coordinator's balance (fewest moves, deterministic).
//! - [`state`]: the closed state machine ([`Group`]: `decide` / `apply`), every rule S1–S8 of
//!   `docs/design.md`.
//! - [`store`]: the group's lock interface (list and watch by label; get, create, replace).
//! - [`member`]: the executor that runs a [`Group`] and publishes its view ([`ShardsRx`]).

pub mod member;
pub mod plan;
pub mod record;
pub mod state;
pub mod store;

pub use member::{Member, ShardEntry, ShardObserver, ShardsDoc, ShardsIdentity, ShardsRx};
pub use state::{
    Group, GroupParams, GroupView, Input, MoveReason, Op, Request, ShardLoss, ShardSeen,
    ShardTransition, Step, WriteKind,
};
pub use store::{GroupEvent, GroupStore};

//! Leader election on one Lease: the record, the lock interface, the pure step function and
//! the campaign loop that drives them.

pub mod elector;
#[cfg(test)]
mod proptests;
pub mod record;
pub mod state;
pub mod store;

pub use elector::{jitter, Control, Elector, ElectorConfig, ReleaseOutcome, Transition};
pub use record::{LeaseRecord, StoredLease};
pub use state::{decide, ElectionState, LossReason, Params, Step};
pub use store::{LeaseStore, StoreError, WatchEvent};

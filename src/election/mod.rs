//! Leader election on one Lease: the record, the lock interface, the closed state machine
//! (`decide` / `apply`) and the executor that runs it. Imports nothing of leaderd outside this
//! folder: what it tells the world leaves through [`elector::Publisher`].

pub mod clock;
pub mod elector;
pub mod record;
pub mod state;
pub mod store;

pub use elector::{
    forward_health, jitter, recv_command, timer_for, Command, Control, Elector, ElectorConfig,
    Publisher,
};
pub use record::{LeaseRecord, StoredLease};
pub use state::{
    LossReason, Machine, Outcome, Params, Purpose, ReleaseOutcome, Request, Step, Tenure,
    Transition, View,
};
pub use store::{LeaseStore, StoreError, WatchEvent};

//! The leader state that the elector publishes and everyone else only reads.
//!
//! A `tokio::sync::watch` channel carries [`LeaderState`]; the HTTP API and the metrics read
//! it and never call the apiserver. Leadership is stored as a deadline, not a flag: readers
//! compute `is_leader` from the monotonic clock at the moment they answer, so a stuck elector
//! can never make a reader claim leadership past the renew deadline.

use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

/// Which lease and candidate this is; fixed for the process's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// Lease name.
    pub lease: String,
    /// Lease namespace.
    pub namespace: String,
    /// This candidate's identity.
    pub identity: String,
}

/// This candidate's tenure as published: its epoch and the end of its claim.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lead {
    /// Fencing epoch of the tenure.
    pub epoch: i64,
    /// Leadership may be claimed strictly before this instant.
    pub valid_until: Instant,
}

/// What the elector knows, as published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderState {
    /// At least one observation of the Lease (present or absent) was made.
    pub ready: bool,
    /// The holder named by the Lease, if any.
    pub leader: Option<String>,
    /// The epoch (leaseTransitions) of the holder's tenure, if there is a holder.
    pub epoch: Option<i64>,
    /// The Lease's `metadata.uid`.
    pub lease_uid: Option<String>,
    /// This candidate's tenure, if it leads.
    pub lead: Option<Lead>,
    /// Wall-clock time of the last observation of the Lease.
    pub observed_at: Option<SystemTime>,
}

impl LeaderState {
    /// This candidate's tenure if its claim has not run out at `now`.
    pub fn active_lead(&self, now: Instant) -> Option<Lead> {
        self.lead.filter(|l| now < l.valid_until)
    }
}

/// The `/leader` JSON document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct LeaderView {
    /// Lease name.
    pub lease: String,
    /// Lease namespace.
    pub namespace: String,
    /// This candidate.
    pub identity: String,
    /// The holder named by the Lease.
    pub leader: Option<String>,
    /// Whether this candidate may act as leader now.
    pub is_leader: bool,
    /// The fencing epoch: this candidate's when it leads, else the holder's.
    pub epoch: Option<i64>,
    /// The Lease's uid (changes when the Lease is recreated).
    pub lease_uid: Option<String>,
    /// How much longer this candidate may act as leader; null when it is not the leader.
    pub valid_for_ms: Option<u64>,
    /// When this candidate last observed the Lease (RFC 3339).
    pub observed_at: Option<String>,
}

impl LeaderView {
    /// Render `state` as seen at `now`.
    pub fn new(id: &Identity, state: &LeaderState, now: Instant) -> Self {
        let lead = state.active_lead(now);
        LeaderView {
            lease: id.lease.clone(),
            namespace: id.namespace.clone(),
            identity: id.identity.clone(),
            leader: state.leader.clone(),
            is_leader: lead.is_some(),
            epoch: lead.map(|l| l.epoch).or(state.epoch),
            lease_uid: state.lease_uid.clone(),
            valid_for_ms: lead.map(|l| (l.valid_until - now).as_millis() as u64),
            observed_at: state
                .observed_at
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
        }
    }
}

/// The publishing side, owned by the elector.
#[derive(Debug)]
pub struct StatusTx {
    tx: watch::Sender<LeaderState>,
}

/// The reading side, cloned by the HTTP API and the metrics.
#[derive(Clone, Debug)]
pub struct StatusRx {
    /// Which lease and candidate.
    pub id: Arc<Identity>,
    rx: watch::Receiver<LeaderState>,
    /// The elector is gone: `changed` would return at once forever.
    gone: bool,
}

/// A new channel, in the not-ready state.
pub fn channel(id: Identity) -> (StatusTx, StatusRx) {
    let (tx, rx) = watch::channel(LeaderState::default());
    (
        StatusTx { tx },
        StatusRx {
            id: Arc::new(id),
            rx,
            gone: false,
        },
    )
}

impl StatusTx {
    /// Publish `state`; readers are woken only when it differs.
    pub fn publish(&self, state: LeaderState) {
        self.tx.send_if_modified(|cur| {
            if *cur == state {
                false
            } else {
                *cur = state;
                true
            }
        });
    }
}

impl StatusRx {
    /// The state now.
    pub fn state(&self) -> LeaderState {
        self.rx.borrow().clone()
    }

    /// The `/leader` document now.
    pub fn view(&self) -> LeaderView {
        LeaderView::new(&self.id, &self.rx.borrow(), Instant::now())
    }

    /// Wait for the next change; `Err` when the elector is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }

    /// For followers of the state (pod label, notifications): wait until it changes, this
    /// candidate's claim runs out, `also_at` passes (a retry), or `stop`. `false` on stop. Once
    /// the elector is gone, only the time and `stop` wake it.
    pub async fn wait_for_change(
        &mut self,
        also_at: Option<Instant>,
        stop: &tokio_util::sync::CancellationToken,
    ) -> bool {
        let lead_end = self.state().lead.map(|l| l.valid_until);
        let wake = [lead_end, also_at].into_iter().flatten().min();
        let gone = self.gone;
        tokio::select! {
            _ = stop.cancelled() => return false,
            r = self.rx.changed(), if !gone => {
                if r.is_err() {
                    self.gone = true;
                }
            }
            // One millisecond late, as tokio's timer may wake a hair early.
            _ = tokio::time::sleep_until(wake.unwrap_or_else(Instant::now) + std::time::Duration::from_millis(1)), if wake.is_some() => {}
        }
        true
    }
}

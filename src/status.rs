//! The published state: what the election tells everyone else, who only read it.
//!
//! Two things flow out of the elector, one way: the [`LeaderState`] on a `tokio::sync::watch`
//! (read by the HTTP API and the metrics, never an apiserver call), and every [`Transition`],
//! fanned out to each subscriber (metrics, Events, hooks, `--on-lost`, the pod label, the
//! notifier). Leadership is stored as a deadline, not a flag: readers compute `is_leader` from
//! the monotonic clock at the moment they answer, so a stuck elector can never make a reader
//! claim leadership past the renew deadline.

use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use serde::Serialize;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::election::{clock, Publisher, Tenure, Transition, View};

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

/// What the elector knows, as published.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaderState {
    /// What the election state machine tells the world.
    pub view: View,
    /// Wall-clock time of the last observation of the Lease.
    pub observed_at: Option<SystemTime>,
    /// Wall-clock time at which this candidate last saw the Lease change (a new
    /// resourceVersion after the first observation).
    pub changed_at: Option<SystemTime>,
}

impl LeaderState {
    /// This candidate's tenure if its claim has not run out at `now`.
    pub fn valid_tenure(&self, now: Instant) -> Option<Tenure> {
        self.view.tenure.filter(|t| t.is_valid_at(now))
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
    /// Whether the app passes `--app-check`; null when no check is configured.
    #[serde(default)]
    pub app_healthy: Option<bool>,
}

impl LeaderView {
    /// Render `state` as seen at `now`.
    pub fn new(id: &Identity, state: &LeaderState, now: Instant) -> Self {
        let tenure = state.valid_tenure(now);
        LeaderView {
            lease: id.lease.clone(),
            namespace: id.namespace.clone(),
            identity: id.identity.clone(),
            leader: state.view.holder.clone(),
            is_leader: tenure.is_some(),
            epoch: tenure.map(|t| t.epoch).or(state.view.epoch),
            lease_uid: state.view.lease_uid.clone(),
            valid_for_ms: tenure.map(|t| (t.valid_until - now).as_millis() as u64),
            observed_at: state
                .observed_at
                .map(|t| humantime::format_rfc3339_millis(t).to_string()),
            app_healthy: state.view.app_healthy,
        }
    }
}

/// The subscribers of the transition stream; closed once the elector is gone.
#[derive(Debug, Default)]
struct Subscribers {
    senders: Vec<mpsc::UnboundedSender<Transition>>,
    closed: bool,
}

/// The publishing side, owned by the elector.
#[derive(Debug)]
pub struct StatusTx {
    tx: watch::Sender<LeaderState>,
    subscribers: Arc<Mutex<Subscribers>>,
}

/// The reading side, cloned by everyone who follows the election.
#[derive(Clone, Debug)]
pub struct StatusRx {
    /// Which lease and candidate.
    pub id: Arc<Identity>,
    rx: watch::Receiver<LeaderState>,
    subscribers: Arc<Mutex<Subscribers>>,
}

/// One subscription to the transition stream.
#[derive(Debug)]
pub struct Transitions {
    rx: mpsc::UnboundedReceiver<Transition>,
    ended: bool,
}

impl Transitions {
    /// The next transition; `None` once the elector is gone.
    pub async fn recv(&mut self) -> Option<Transition> {
        let t = self.rx.recv().await;
        self.ended |= t.is_none();
        t
    }

    /// For followers that act on the state after each transition (pod label, notifications):
    /// wait until the next transition, `also_at` (a retry), or the end of the stream.
    /// `false` once the stream has ended (the elector is gone).
    pub async fn wait(&mut self, also_at: Option<Instant>) -> bool {
        if self.ended {
            return false;
        }
        tokio::select! {
            t = self.rx.recv() => {
                self.ended |= t.is_none();
                !self.ended
            }
            // One millisecond late, as tokio's timer may wake a hair early.
            _ = tokio::time::sleep_until(also_at.unwrap_or_else(Instant::now) + std::time::Duration::from_millis(1)), if also_at.is_some() => true,
        }
    }
}

/// A new channel, in the not-ready state.
pub fn channel(id: Identity) -> (StatusTx, StatusRx) {
    let (tx, rx) = watch::channel(LeaderState::default());
    let subscribers = Arc::new(Mutex::new(Subscribers::default()));
    (
        StatusTx {
            tx,
            subscribers: subscribers.clone(),
        },
        StatusRx {
            id: Arc::new(id),
            rx,
            subscribers,
        },
    )
}

fn lock(m: &Mutex<Subscribers>) -> std::sync::MutexGuard<'_, Subscribers> {
    m.lock().unwrap_or_else(|e| e.into_inner())
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

impl Publisher for StatusTx {
    fn publish(&mut self, view: View, observed_at: Option<SystemTime>) {
        let cur = self.tx.borrow().clone();
        let changed_at = if cur.view.ready && cur.view.version != view.version {
            observed_at
        } else {
            cur.changed_at
        };
        StatusTx::publish(
            self,
            LeaderState {
                view,
                observed_at,
                changed_at,
            },
        );
    }

    fn transition(&mut self, transition: Transition) {
        lock(&self.subscribers)
            .senders
            .retain(|tx| tx.send(transition.clone()).is_ok());
    }
}

impl Drop for StatusTx {
    fn drop(&mut self) {
        let mut s = lock(&self.subscribers);
        s.closed = true;
        s.senders.clear();
    }
}

impl StatusRx {
    /// The state now.
    pub fn state(&self) -> LeaderState {
        self.rx.borrow().clone()
    }

    /// The `/leader` document now.
    pub fn view(&self) -> LeaderView {
        LeaderView::new(&self.id, &self.rx.borrow(), clock::now())
    }

    /// Every transition from now on, in order, none lost; the stream ends when the elector is
    /// gone. Subscribe before the elector starts to see them all.
    pub fn transitions(&self) -> Transitions {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut s = lock(&self.subscribers);
        if !s.closed {
            s.senders.push(tx);
        }
        Transitions { rx, ended: false }
    }

    /// Wait until the Lease was observed once (present or absent); `false` if `stop` came first
    /// or the elector is gone before.
    pub async fn wait_ready(&mut self, stop: &tokio_util::sync::CancellationToken) -> bool {
        loop {
            if self.state().view.ready {
                return true;
            }
            tokio::select! {
                _ = stop.cancelled() => return false,
                r = self.rx.changed() => if r.is_err() { return false },
            }
        }
    }

    /// Wait for the next change; `Err` when the elector is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }
}

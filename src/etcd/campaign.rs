//! The etcd election's pure core: one closed state machine per candidate, [`Campaign`].
//!
//! Like [`crate::election::Machine`], but for etcd's model: [`Campaign::decide`] says what to do
//! next, [`Campaign::apply`] takes every answer back (a lease granted, a key put, the line of
//! candidates read, a keep-alive answered, a predecessor's lease checked, a revoke, a watch
//! event, the app's health, a release asked, shutdown) and returns the [`Transition`]s. No I/O,
//! no clock reads: `now` is passed in, on the election clock.
//!
//! The rules (as in `docs/design.md`, "The etcd backend"):
//! - E1. The line: every candidate puts `<prefix><name>/<lease id in hex>` (value: its identity)
//!   attached to its own etcd lease of TTL `--lease-duration`; the key with the lowest create
//!   revision leads (etcd's `concurrency.Election`). A key lives only while its lease does.
//! - E2. The claim: a leader claims only until `sent + min(R, ttl)`, where `sent` is the send
//!   instant of its last successful keep-alive (or of the grant). etcd expires a lease no
//!   earlier than its TTL after it *received* the last keep-alive, so the claim ends first.
//! - E3. Taking the lead: only on a linearizable read that shows our key first, while our own
//!   claim (E2) would run, and only once the lease of every key this candidate saw ahead of
//!   its own is found gone (a key deleted by hand while its lease lives may still be claimed
//!   by its owner: that lease is waited out). The epoch is our key's create revision.
//! - E4. A tenure is never resumed: it ends at its deadline, on a keep-alive answered "no such
//!   lease", or on a read without our key; then the lease is abandoned (revoked, best effort)
//!   and the candidate joins the line again with a new lease and key, so a later tenure has a
//!   higher epoch.
//! - E5. Stepping down comes first: a release (shutdown, the app's request, the app turning
//!   unhealthy) ends the tenure before the revoke is sent; the revoke deletes the key and the
//!   next in line leads at once. After a deliberate release other than shutdown the candidate
//!   keeps out of the line for one lease duration (rule 11).
//! - E6. Every candidate keeps its lease alive every retry period (its place in line); a failed
//!   keep-alive is retried after the back-off (`P/2` × [1, 1.2)), a timed-out one at once. A
//!   keep-alive answered "no such lease" means its key is gone: new lease, new key (back of the
//!   line).
//! - E7. Leadership follows the app (rule 13): while the app is unhealthy the candidate holds
//!   no key (it revokes its lease), so it can never come first.

use std::collections::BTreeSet;
use std::time::Duration;

use tokio::time::Instant;

use super::error::EtcdError;
use crate::election::state::JITTER;
use crate::election::{LossReason, Params, ReleaseOutcome, Tenure, Transition, View};

/// One key in the line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    /// The full key.
    pub key: String,
    /// Its value: the candidate's identity (or whatever a foreign peer proposed).
    pub value: String,
    /// The key's create revision: its place in line, and the epoch if it leads.
    pub create_revision: i64,
    /// The key's last modification.
    pub mod_revision: i64,
    /// The etcd lease the key is attached to (0: none).
    pub lease: i64,
}

/// A read of the line: every key under the election's prefix, lowest create revision first.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    /// The store's revision at the read.
    pub revision: i64,
    /// The etcd cluster's ID (from the response header).
    pub cluster_id: u64,
    /// The keys, lowest create revision first.
    pub candidates: Vec<Candidate>,
}

/// One request to etcd.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    /// Grant a lease of `ttl` seconds.
    Grant {
        /// Seconds.
        ttl: i64,
    },
    /// Put `key` = `value` with `lease`, unless the key exists (then read its create revision).
    Put {
        /// Our key.
        key: String,
        /// Our identity.
        value: String,
        /// Our lease.
        lease: i64,
    },
    /// Read the line (a linearizable range read of the prefix).
    Read,
    /// Keep `lease` alive.
    KeepAlive {
        /// Our lease.
        lease: i64,
    },
    /// Ask how long another candidate's lease has left (rule E3).
    CheckLease {
        /// Its lease.
        lease: i64,
    },
    /// Revoke `lease` (deletes our key).
    Revoke {
        /// Our (abandoned) lease.
        lease: i64,
    },
}

impl Request {
    /// The metrics verb.
    pub fn verb(&self) -> &'static str {
        match self {
            Request::Grant { .. } => "grant",
            Request::Put { .. } => "put",
            Request::Read => "range",
            Request::KeepAlive { .. } => "keepalive",
            Request::CheckLease { .. } => "timetolive",
            Request::Revoke { .. } => "revoke",
        }
    }
}

/// What to do next.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing before this instant (unless an input arrives).
    Wait(Instant),
    /// Send this request.
    Send(Request),
    /// Done: stopped, and the release (if any) carried out.
    Stopped,
}

/// Everything that can happen to a candidate.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Time passed.
    Tick,
    /// The answer to [`Request::Grant`] sent at `sent`: the lease ID and TTL.
    Granted {
        /// When the request was sent.
        sent: Instant,
        /// Lease ID and TTL in seconds.
        result: Result<(i64, i64), EtcdError>,
    },
    /// The answer to [`Request::Put`]: our key's create revision.
    Put(Result<i64, EtcdError>),
    /// The answer to [`Request::Read`].
    Read(Result<Snapshot, EtcdError>),
    /// The answer to [`Request::KeepAlive`] sent at `sent`: the TTL (≤ 0: no such lease).
    KeptAlive {
        /// When the request was sent.
        sent: Instant,
        /// The lease kept alive.
        lease: i64,
        /// TTL in seconds.
        result: Result<i64, EtcdError>,
    },
    /// The answer to [`Request::CheckLease`]: the TTL left (≤ 0: gone).
    LeaseChecked {
        /// The lease asked about.
        lease: i64,
        /// Seconds left.
        result: Result<i64, EtcdError>,
    },
    /// The answer to [`Request::Revoke`].
    Revoked {
        /// The lease.
        lease: i64,
        /// Ok also when the lease was already gone.
        result: Result<(), EtcdError>,
    },
    /// The watch saw a change under the prefix at `revision`: the line must be read again,
    /// and a read answered at an older revision (sent before the change) does not count.
    Changed {
        /// The store revision of the change (the watch response's header).
        revision: i64,
    },
    /// The watch is up (events may have been missed before: read again).
    WatchUp,
    /// The watch is down: poll every retry period.
    WatchDown,
    /// The app asked to release (`POST /leader/release`).
    ReleaseAsked,
    /// The app's health changed (`--app-check`).
    AppHealth(bool),
    /// Shut down, revoking our lease when `release`.
    Stop {
        /// Revoke on the way out.
        release: bool,
    },
}

/// Our lease.
#[derive(Clone, Copy, Debug)]
struct Held {
    id: i64,
    /// Send instant of the last successful keep-alive (or the grant).
    last_ok_send: Instant,
    /// The TTL etcd granted.
    ttl: Duration,
}

/// A lease we no longer want, to revoke.
#[derive(Clone, Copy, Debug)]
struct Abandoned {
    id: i64,
    /// After this, stop trying: the lease has expired on its own by then.
    give_up: Instant,
    /// Attempts made.
    tries: u32,
}

/// The etcd election state machine of one candidate.
#[derive(Clone, Debug)]
pub struct Campaign {
    params: Params,
    prefix: String,
    lease: Option<Held>,
    abandoned: Option<Abandoned>,
    /// Our key and its create revision, once put.
    key: Option<(String, i64)>,
    snapshot: Option<Snapshot>,
    /// A read is owed (start, a watch event, our put, the watch coming back).
    stale: bool,
    /// The highest revision a watch event reported: a read answered below it is stale too.
    changed_at: i64,
    leading: Option<Tenure>,
    /// Leases of keys seen ahead of ours (rule E3).
    ahead: BTreeSet<i64>,
    /// Of those, the ones found gone.
    gone: BTreeSet<i64>,
    not_before: Option<Instant>,
    watch_up: bool,
    poll_at: Option<Instant>,
    keep_out_until: Option<Instant>,
    app_healthy: Option<bool>,
    /// A release asked by the app, waiting for its revoke: the tenure's epoch.
    release_reply: Option<i64>,
    stopping: bool,
    /// Stopping without a revoke (`--release-on-shutdown=false`).
    stop_without_release: bool,
    announced: (Option<String>, Option<i64>),
    rng: fastrand::Rng,
}

impl Campaign {
    /// A candidate for the election whose keys live under `prefix` (`<etcd-prefix><name>/`).
    pub fn new(params: Params, prefix: String, seed: u64) -> Self {
        Campaign {
            params,
            prefix,
            lease: None,
            abandoned: None,
            key: None,
            snapshot: None,
            stale: true,
            changed_at: 0,
            leading: None,
            ahead: BTreeSet::new(),
            gone: BTreeSet::new(),
            not_before: None,
            watch_up: false,
            poll_at: None,
            keep_out_until: None,
            app_healthy: None,
            release_reply: None,
            stopping: false,
            stop_without_release: false,
            announced: (None, None),
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    /// Leadership follows the app's health (rule E7): unhealthy until told otherwise.
    pub fn with_app_check(mut self) -> Self {
        self.app_healthy = Some(false);
        self
    }

    /// Our tenure, if we have one.
    pub fn tenure(&self) -> Option<Tenure> {
        self.leading
    }

    /// When the executor must apply [`Outcome::Tick`] even while a request is in flight.
    pub fn deadline(&self) -> Option<Instant> {
        self.leading.map(|t| t.valid_until)
    }

    /// Our lease, if we hold one.
    pub fn lease_id(&self) -> Option<i64> {
        self.lease.map(|l| l.id)
    }

    /// What the world may know: the first in line (us while we lead) and its epoch.
    pub fn view(&self) -> View {
        let first = self.snapshot.as_ref().and_then(|s| s.candidates.first());
        let (holder, epoch) = match (self.leading, first) {
            (Some(t), _) => (Some(self.params.identity.clone()), Some(t.epoch)),
            (None, Some(c)) => (Some(c.value.clone()), Some(c.create_revision)),
            (None, None) => (None, None),
        };
        View {
            ready: self.snapshot.is_some(),
            holder,
            epoch,
            lease_uid: self
                .snapshot
                .as_ref()
                .map(|s| format!("etcd-{:x}", s.cluster_id)),
            // Changes only when the line changes (not with every write elsewhere in etcd).
            version: self.snapshot.as_ref().map(|s| {
                let m = s.candidates.iter().map(|c| c.mod_revision).max();
                format!("{}/{}", s.candidates.len(), m.unwrap_or(0))
            }),
            tenure: self.leading,
            app_healthy: self.app_healthy,
        }
    }

    fn jitter(&mut self, d: Duration) -> Duration {
        d.mul_f64(1.0 + self.rng.f64() * JITTER)
    }

    fn wants_to_campaign(&self, now: Instant) -> bool {
        self.app_healthy != Some(false)
            && !self.stopping
            && self.keep_out_until.is_none_or(|k| now >= k)
    }

    /// The step function. Pure.
    pub fn decide(&self, now: Instant) -> Step {
        let p = &self.params;
        if self.stopping && self.abandoned.is_none() {
            return Step::Stopped;
        }
        if let Some(t) = self.not_before.filter(|t| now < *t) {
            return Step::Wait(t);
        }
        // E4, E5: a lease we gave up goes first (a release waits on it).
        if let Some(a) = &self.abandoned {
            return Step::Send(Request::Revoke { lease: a.id });
        }
        let poll = |mut until: Instant| -> Step {
            if let Some(t) = self.leading {
                until = until.min(t.valid_until);
            }
            match self.poll_at {
                _ if self.stale => Step::Send(Request::Read),
                Some(at) if !self.watch_up && at <= now => Step::Send(Request::Read),
                Some(at) if !self.watch_up => Step::Wait(at.min(until)),
                _ => Step::Wait(until),
            }
        };
        if self.snapshot.is_none() && self.stale {
            return Step::Send(Request::Read); // the view first
        }
        if !self.wants_to_campaign(now) {
            let until = self.keep_out_until.filter(|k| now < *k);
            return poll(until.unwrap_or(now + p.retry_period));
        }
        let Some(held) = self.lease else {
            return Step::Send(Request::Grant {
                ttl: p.lease_duration_seconds(),
            });
        };
        // E6: keep our place in line.
        let keep_alive_at = held.last_ok_send + p.retry_period;
        if now >= keep_alive_at {
            return Step::Send(Request::KeepAlive { lease: held.id });
        }
        if self.key.is_none() {
            return Step::Send(Request::Put {
                key: format!("{}{:x}", self.prefix, held.id),
                value: p.identity.clone(),
                lease: held.id,
            });
        }
        if self.stale {
            return Step::Send(Request::Read);
        }
        // E3: first in line, but a key seen ahead of ours may have been deleted by hand while
        // its lease (and its owner's claim) lives on: check those leases first.
        if self.leading.is_none() && self.is_first() {
            if let Some(lease) = self.unchecked_ahead() {
                return Step::Send(Request::CheckLease { lease });
            }
        }
        poll(keep_alive_at)
    }

    fn is_first(&self) -> bool {
        let (Some((key, _)), Some(s)) = (&self.key, &self.snapshot) else {
            return false;
        };
        s.candidates.first().is_some_and(|c| &c.key == key)
    }

    fn unchecked_ahead(&self) -> Option<i64> {
        self.ahead.difference(&self.gone).next().copied()
    }

    /// Take one outcome at `now`; returns what it changed, in order.
    pub fn apply(&mut self, outcome: Outcome, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        // E2: a claim ends by the clock, whatever else happens.
        if self.leading.is_some_and(|t| !t.is_valid_at(now)) {
            self.lose(LossReason::RenewDeadline, now, &mut out);
        }
        if self.abandoned.is_some_and(|a| now >= a.give_up) {
            self.abandoned = None;
            self.finish_release(None, &mut out);
        }
        match outcome {
            Outcome::Tick => {}
            Outcome::Granted { sent, result } => match result {
                Ok((id, ttl)) if ttl > 0 => {
                    self.lease = Some(Held {
                        id,
                        last_ok_send: sent,
                        ttl: Duration::from_secs(ttl as u64),
                    });
                    self.key = None;
                    // A candidate that may not campaign any more gives the lease up at once (at
                    // a shutdown without release it just forgets it: it carries no key).
                    if self.stopping && self.stop_without_release {
                        self.lease = None;
                    } else if !self.wants_to_campaign(now) {
                        self.abandon(now);
                    }
                }
                Ok(_) => self.back_off(now),
                Err(_) => self.back_off(now),
            },
            Outcome::Put(result) => match result {
                Ok(rev) => {
                    if let Some(held) = self.lease {
                        self.key = Some((format!("{}{:x}", self.prefix, held.id), rev));
                        self.ahead.clear();
                        self.gone.clear();
                        self.stale = true;
                    }
                }
                Err(EtcdError::LeaseNotFound) => self.lease_gone(&mut out),
                Err(_) => self.back_off(now),
            },
            Outcome::Read(result) => match result {
                Ok(snapshot) => {
                    // A change reported after this read was answered makes it stale already.
                    self.stale = snapshot.revision < self.changed_at;
                    let d = self.jitter(self.params.retry_period);
                    self.poll_at = Some(now + d);
                    self.read(snapshot, now, &mut out);
                }
                Err(_) => self.back_off(now),
            },
            Outcome::KeptAlive {
                sent,
                lease,
                result,
            } => {
                if self.lease.is_some_and(|h| h.id == lease) {
                    match result {
                        Ok(ttl) if ttl > 0 => {
                            let held = self.lease.as_mut().expect("checked");
                            held.last_ok_send = held.last_ok_send.max(sent);
                            held.ttl = Duration::from_secs(ttl as u64);
                            let until =
                                held.last_ok_send + self.params.renew_deadline.min(held.ttl);
                            if let Some(t) = self.leading.as_mut() {
                                t.valid_until = t.valid_until.max(until);
                            }
                            self.not_before = None;
                            self.maybe_lead(now, &mut out);
                        }
                        Ok(_) | Err(EtcdError::LeaseNotFound) => self.lease_gone(&mut out),
                        // E6: a timed-out keep-alive has waited long enough; retry at once.
                        Err(EtcdError::TimedOut { .. }) => {}
                        Err(_) => self.back_off(now),
                    }
                }
            }
            Outcome::LeaseChecked { lease, result } => match result {
                // etcd answers -1 for a lease that does not exist. TTL 0 is not gone: etcd
                // rounds the time left down, so up to a second may remain.
                Ok(ttl) if ttl < 0 => {
                    self.gone.insert(lease);
                    self.maybe_lead(now, &mut out);
                }
                Err(EtcdError::LeaseNotFound) => {
                    self.gone.insert(lease);
                    self.maybe_lead(now, &mut out);
                }
                Ok(_) => {
                    // Still alive: ask again a retry period on.
                    self.not_before = Some(now + self.params.retry_period);
                }
                Err(_) => self.back_off(now),
            },
            Outcome::Revoked { lease, result } => {
                if self.abandoned.is_some_and(|a| a.id == lease) {
                    match result {
                        Ok(()) | Err(EtcdError::LeaseNotFound) => {
                            self.abandoned = None;
                            self.finish_release(None, &mut out);
                            self.stale = true;
                        }
                        Err(e) => {
                            let a = self.abandoned.as_mut().expect("checked");
                            a.tries += 1;
                            // At shutdown, three tries; the lease expires on its own anyway.
                            if self.stopping && a.tries >= 3 {
                                self.abandoned = None;
                            }
                            self.finish_release(Some(&e), &mut out);
                            self.back_off(now);
                        }
                    }
                }
            }
            Outcome::Changed { revision } => {
                self.stale = true;
                self.changed_at = self.changed_at.max(revision);
            }
            Outcome::WatchUp => {
                self.watch_up = true;
                self.stale = true;
            }
            Outcome::WatchDown => {
                self.watch_up = false;
                if self.poll_at.is_none() {
                    self.poll_at = Some(now);
                }
            }
            Outcome::ReleaseAsked => match self.leading {
                Some(_) => {
                    self.step_down(LossReason::Released, now, &mut out);
                    self.keep_out_until = Some(now + self.params.lease_duration);
                }
                None => out.push(Transition::ReleaseFinished(ReleaseOutcome::NotLeader)),
            },
            Outcome::AppHealth(healthy) => {
                self.app_healthy = Some(healthy);
                if !healthy {
                    if self.leading.is_some() {
                        self.step_down(LossReason::AppUnhealthy, now, &mut out);
                        self.keep_out_until = Some(now + self.params.lease_duration);
                    } else if self.lease.is_some() {
                        self.abandon(now); // E7: out of the line
                    }
                }
            }
            Outcome::Stop { release } => {
                self.stopping = true;
                self.stop_without_release = !release;
                if release {
                    self.lose(LossReason::Shutdown, now, &mut out);
                } else {
                    // Step down and leave the lease to expire: the next in line leads then.
                    if let Some(t) = self.leading.take() {
                        out.push(Transition::Lost {
                            reason: LossReason::Shutdown,
                            epoch: Some(t.epoch),
                        });
                    }
                    self.lease = None;
                    self.key = None;
                }
            }
        }
        self.announce(&mut out);
        out
    }

    fn read(&mut self, snapshot: Snapshot, now: Instant, out: &mut Vec<Transition>) {
        if let Some((key, rev)) = self.key.clone() {
            match snapshot.candidates.iter().position(|c| c.key == key) {
                Some(i) => {
                    for c in &snapshot.candidates[..i] {
                        self.ahead.insert(c.lease);
                    }
                    // A lease seen ahead whose key is now *behind* ours: its owner put that key
                    // again (a put is sent only by a candidate without a key, so without a
                    // tenure), and it cannot lead before us. Nothing to wait out.
                    for c in &snapshot.candidates[i + 1..] {
                        if self.ahead.contains(&c.lease) {
                            self.gone.insert(c.lease);
                        }
                    }
                }
                // Our key is gone (deleted by hand, or its lease expired): E4.
                None if snapshot.revision >= rev => {
                    self.snapshot = Some(snapshot);
                    if self.leading.is_some() {
                        self.lose(LossReason::Deleted, now, out);
                    } else {
                        self.abandon(now);
                    }
                    return;
                }
                None => {}
            }
        }
        self.snapshot = Some(snapshot);
        self.maybe_lead(now, out);
    }

    /// E3: start a tenure when first in line, our claim would run, and every lease seen ahead
    /// of ours is gone.
    fn maybe_lead(&mut self, now: Instant, out: &mut Vec<Transition>) {
        if self.leading.is_some()
            || self.stale // a change since our last read: read it first
            || !self.wants_to_campaign(now)
            || !self.is_first()
            || self.unchecked_ahead().is_some()
        {
            return;
        }
        let (Some(held), Some((_, rev))) = (self.lease, &self.key) else {
            return;
        };
        let valid_until = held.last_ok_send + self.params.renew_deadline.min(held.ttl);
        if now >= valid_until {
            return; // a keep-alive first
        }
        self.leading = Some(Tenure {
            epoch: *rev,
            valid_until,
        });
        out.push(Transition::Acquired { epoch: *rev });
    }

    /// End the tenure; the lease is abandoned (E4).
    fn lose(&mut self, reason: LossReason, now: Instant, out: &mut Vec<Transition>) {
        if let Some(t) = self.leading.take() {
            out.push(Transition::Lost {
                reason,
                epoch: Some(t.epoch),
            });
        }
        self.abandon(now);
    }

    /// E5: step down first, then revoke; the app's release is answered by the revoke.
    fn step_down(&mut self, reason: LossReason, now: Instant, out: &mut Vec<Transition>) {
        let epoch = self.leading.map(|t| t.epoch);
        self.lose(reason, now, out);
        if reason == LossReason::Released {
            self.release_reply = epoch;
            if self.abandoned.is_none() {
                self.finish_release(None, out);
            }
        }
    }

    fn finish_release(&mut self, error: Option<&EtcdError>, out: &mut Vec<Transition>) {
        if let Some(epoch) = self.release_reply.take() {
            out.push(Transition::ReleaseFinished(match error {
                None => ReleaseOutcome::Released { epoch },
                Some(e) => ReleaseOutcome::NotWritten {
                    epoch,
                    error: e.to_string(),
                },
            }));
        }
    }

    /// Give our lease up: no more keep-alives, revoke it (its key goes with it).
    fn abandon(&mut self, now: Instant) {
        if let Some(held) = self.lease.take() {
            self.abandoned = Some(Abandoned {
                id: held.id,
                give_up: now.max(held.last_ok_send + held.ttl) + self.params.lease_duration,
                tries: 0,
            });
        }
        self.key = None;
        self.ahead.clear();
        self.gone.clear();
    }

    /// Our lease does not exist any more: so neither does our key (E6).
    fn lease_gone(&mut self, out: &mut Vec<Transition>) {
        if let Some(t) = self.leading.take() {
            out.push(Transition::Lost {
                reason: LossReason::Deleted,
                epoch: Some(t.epoch),
            });
        }
        self.lease = None;
        self.key = None;
        self.ahead.clear();
        self.gone.clear();
        self.stale = true;
    }

    fn back_off(&mut self, now: Instant) {
        let d = self.jitter(self.params.retry_period / 2);
        self.not_before = Some(now + d);
    }

    fn announce(&mut self, out: &mut Vec<Transition>) {
        let v = self.view();
        if !v.ready {
            return;
        }
        let now = (v.holder, v.epoch);
        if now != self.announced {
            self.announced = now.clone();
            out.push(Transition::NewLeader {
                leader: now.0,
                epoch: now.1,
            });
        }
    }
}

#[cfg(test)]
mod tests;

//! The election's pure core: one closed state machine per Lease, [`Machine`].
//!
//! Like client-go's `tryAcquireOrRenew`, but closed: [`Machine::decide`] says what to do next
//! and [`Machine::apply`] takes *every* answer the executor brings back (a read, a create, a
//! write with its send instant, a conflict, a 404, a failure or timeout, a watch event, the
//! watch going up or down, a release asked for, shutdown) and returns what that changed for
//! the world ([`Transition`]s). Both the meaning of every answer and the next decision live
//! here; the executor ([`super::elector`]) only runs requests, applies their outcome, publishes
//! [`Machine::view`] and forwards the transitions. Nothing here does I/O, reads a clock, or
//! touches metrics: `now` (tokio's monotonic [`Instant`], pausable in tests) and the wall-clock
//! time to write into records are passed in, and the little randomness (back-off jitter, the
//! takeover spread) comes from a generator seeded at construction.
//!
//! The rules (numbered as in `docs/design.md`, and cited where they are implemented):
//! 1. A holder's record expires `max(lease_duration, record.leaseDurationSeconds)` after this
//!    candidate *first saw that exact resourceVersion* (observed time), on the monotonic clock.
//!    `renewTime` is never compared with the local wall clock.
//! 2. A leader claims leadership only until `sent + renew_deadline`, where `sent` is when the
//!    request of its last successful write left this process.
//! 3. Every write carries the resourceVersion and the uid of the object it was based on; a
//!    conflict means re-read. (With the uid, the apiserver refuses a PUT to a deleted Lease,
//!    409, instead of creating it: no write of leaderd brings back a deleted record.)
//! 4. Creating is not claiming. A missing Lease is created *without a holder* (one retry period
//!    after the absence was seen), and the record so made is acquired like any other: after
//!    rule 1's wait, by a checked write. A leader that reads its Lease gone ends its tenure. A
//!    write answered by a creation (POST, or a PUT answered 201) never starts or keeps a tenure.
//! 5. An empty holder is free at once only as a leaderd release: the marker names the holder of
//!    the last held record this candidate saw, under that record's epoch, which is the highest
//!    it has seen. Anything else (no marker, a forged one) is waited out by rule 1.
//! 6. Every new tenure gets epoch `max(record.leaseTransitions, highest epoch ever seen) + 1`;
//!    a record without holder that carries a lower epoch than seen is first raised to it.
//! 7. Loss detection: a watch event only marks the state stale; a read confirms.
//! 8. A process does not inherit a tenure it did not write.
//! 9. A change of annotations or labels alone (same spec) does not restart the wait of rule 1.
//! 10. Priority handover: a follower whose `--priority` is higher than the holder's announces
//!     itself in an annotation (once the announcement is there, nobody of equal or lower priority
//!     announces); the leader, seeing it, steps down and releases *to* that candidate. The target
//!     may take the released lease at once, others after one retry period.
//! 11. A deliberate release keeps the releaser out for one lease duration, written or not.
//! 12. Stepping down comes first: a release (shutdown, the app's request, a handover) ends the
//!     tenure here, and so in the published state, before the release request is sent. A
//!     release that meets a conflict is retried from a fresh read while the record still names
//!     this candidate under the tenure's epoch (three writes at most).
//! 13. Leadership follows the app (`--app-check`): while the app is unhealthy this candidate
//!     neither acquires nor announces; a leader whose app becomes unhealthy steps down and
//!     releases (rules 11, 12), so a candidate with a healthy app takes over at once.
//! 14. Renewal cadence: the leader renews `3R/5` after its last successful renew was sent;
//!     a failed renew is retried after the back-off (`P/2` stretched by up to 1.2, or the
//!     server's `Retry-After`), a timed-out one at once. Every call times out after `R/5`, so
//!     two renewals, each with its whole timeout, fit in every deadline, and the leader writes
//!     once per `3R/5` instead of once per `P`.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::record::{micro_time, LeaseRecord, StoredLease};
use super::store::{StoreError, WatchEvent};

#[cfg(test)]
mod model;
#[cfg(test)]
mod tests;

/// Election timing and identity, validated by [`crate::config`].
#[derive(Clone, Debug)]
pub struct Params {
    /// This candidate's identity (`spec.holderIdentity` when it leads).
    pub identity: String,
    /// How long followers wait on an unchanged record before taking over.
    pub lease_duration: Duration,
    /// How long a leader claims leadership after its last successful renew was sent.
    pub renew_deadline: Duration,
    /// The back-off after a failure, and the polling interval when the watch is down.
    pub retry_period: Duration,
    /// Priority for handover (rule 10): a follower with a higher priority than the holder's
    /// is handed the lease. Equal priorities never hand over.
    pub priority: i64,
}

impl Params {
    /// `lease_duration` as written into the record: whole seconds, rounded up, so that a
    /// client-go peer that trusts the record waits at least as long as we do.
    pub fn lease_duration_seconds(&self) -> i64 {
        let d = self.lease_duration;
        (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1) as i64
    }

    /// Rule 14: how long after its last successful renew was sent the leader renews: `3R/5`.
    pub fn renew_interval(&self) -> Duration {
        self.renew_deadline * 3 / 5
    }

    /// Rule 14: the timeout of every API call, `R/5`: two renewals that hang until their
    /// timeout, the first sent at `3R/5`, both end within the deadline.
    pub fn call_timeout(&self) -> Duration {
        self.renew_deadline / 5
    }

    /// Upper bound of the random offset added to every expiry this candidate waits out, so that
    /// many followers of one record do not all write at the same instant: min(P/4, 50 ms).
    pub fn takeover_spread(&self) -> Duration {
        (self.retry_period / 4).min(Duration::from_millis(50))
    }
}

/// Back-offs and polls are stretched by a random factor in `[1, 1 + JITTER)`, so candidates do
/// not act in lockstep ([`Machine`]'s back-off and polling, the elector's watch retries).
pub const JITTER: f64 = 0.2;

/// The highest epoch a Lease can carry (`leaseTransitions` is an int32).
pub const MAX_EPOCH: i64 = i32::MAX as i64;

/// This candidate's tenure as the world may rely on it: its fencing epoch and the end of its
/// claim. Leadership is a deadline, not a flag: whoever reads it compares `valid_until` with
/// the clock when it answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tenure {
    /// The fencing epoch of this tenure.
    pub epoch: i64,
    /// Leadership may be claimed strictly before this instant (rule 2).
    pub valid_until: Instant,
}

impl Tenure {
    /// Whether the claim still runs at `now`.
    pub fn is_valid_at(&self, now: Instant) -> bool {
        now < self.valid_until
    }
}

/// What the machine tells the world about the Lease and this candidate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// At least one observation of the Lease (present or absent) was made.
    pub ready: bool,
    /// The holder named by the Lease (this candidate while it has a tenure).
    pub holder: Option<String>,
    /// The epoch of the holder's tenure, if there is a holder.
    pub epoch: Option<i64>,
    /// The Lease's `metadata.uid`.
    pub lease_uid: Option<String>,
    /// The resourceVersion of the Lease as known (None while absent or unknown).
    pub version: Option<String>,
    /// This candidate's tenure, if it has one.
    pub tenure: Option<Tenure>,
    /// The app's health (`--app-check`); None when no check is configured.
    pub app_healthy: Option<bool>,
}

/// Why a tenure ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LossReason {
    /// No successful renew within the renew deadline.
    RenewDeadline,
    /// The record now names another holder.
    Taken,
    /// The record was changed by someone else (holder cleared, epoch rewritten).
    Conflict,
    /// The Lease was gone when we renewed.
    Deleted,
    /// We stepped down because leaderd is shutting down (and released the lease if configured).
    Shutdown,
    /// We released the lease because the app asked (`POST /leader/release`).
    Released,
    /// We released the lease to a candidate of higher priority.
    HandedOver,
    /// We released the lease because the app became unhealthy (`--app-check`).
    AppUnhealthy,
}

impl LossReason {
    /// Label value for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            LossReason::RenewDeadline => "renew_deadline",
            LossReason::Taken => "taken",
            LossReason::Conflict => "conflict",
            LossReason::Deleted => "deleted",
            LossReason::Shutdown => "shutdown",
            LossReason::Released => "released",
            LossReason::HandedOver => "handed_over",
            LossReason::AppUnhealthy => "app_unhealthy",
        }
    }

    /// Whether this loss was a deliberate step-down (with a release when possible), as opposed
    /// to leadership lost without a release (deadline passed, lease taken or changed).
    pub fn is_deliberate(self) -> bool {
        matches!(
            self,
            LossReason::Shutdown
                | LossReason::Released
                | LossReason::HandedOver
                | LossReason::AppUnhealthy
        )
    }

    /// Every reason, for pre-creating metric series.
    pub const ALL: [LossReason; 8] = [
        LossReason::RenewDeadline,
        LossReason::Taken,
        LossReason::Conflict,
        LossReason::Deleted,
        LossReason::Shutdown,
        LossReason::Released,
        LossReason::HandedOver,
        LossReason::AppUnhealthy,
    ];
}

/// How a release ended (the answer to `POST /leader/release`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// This candidate stepped down and the release was written.
    Released {
        /// The epoch of the tenure that ended.
        epoch: i64,
    },
    /// This candidate stepped down, but the release could not be written; followers take over
    /// once the lease expires.
    NotWritten {
        /// The epoch of the tenure that ended.
        epoch: i64,
        /// Why the write failed.
        error: String,
    },
    /// This candidate was not leading; nothing was done.
    NotLeader,
    /// The elector is shutting down or gone.
    Unavailable,
}

/// What an outcome changed, for everyone who follows the election (metrics, Events, hooks,
/// `--on-lost`, the pod label, the notifier, the app's release request).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// This candidate started a tenure.
    Acquired {
        /// Its epoch.
        epoch: i64,
    },
    /// This candidate's tenure ended.
    Lost {
        /// Why.
        reason: LossReason,
        /// The epoch of the tenure that ended.
        epoch: Option<i64>,
    },
    /// The holder named by the Lease changed (to this candidate, another, or none), or a new
    /// tenure of the same holder began (its epoch changed).
    NewLeader {
        /// The new holder.
        leader: Option<String>,
        /// Its epoch.
        epoch: Option<i64>,
    },
    /// A release ended (written or not), or was asked of a candidate that does not lead.
    ReleaseFinished(ReleaseOutcome),
}

/// What a replace (PUT) is for; the answer means something different for each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// Start a tenure (rule 6: with the next epoch).
    Acquire,
    /// Renew our tenure, based on our last write (rule 3).
    Renew,
    /// Announce this follower as a candidate of higher priority (rule 10; same spec).
    Announce,
    /// Raise a holder-less record to the highest epoch seen (rule 6). Starts nothing.
    RaiseEpoch,
    /// Release our (already ended) tenure: no holder, the release marker (rules 5, 12).
    Release,
}

impl Purpose {
    /// What the request does, for logs.
    pub fn describe(self) -> &'static str {
        match self {
            Purpose::Acquire => "acquiring the lease",
            Purpose::Renew => "renewing the lease",
            Purpose::Announce => "announcing the candidacy",
            Purpose::RaiseEpoch => "raising the epoch of the lease",
            Purpose::Release => "releasing the lease",
        }
    }
}

/// One request to the store.
#[allow(clippy::large_enum_variant)] // short-lived, never stored in bulk
#[derive(Clone, Debug, PartialEq)]
pub enum Request {
    /// Read the Lease.
    Read,
    /// Create the missing Lease with `record`, which names no holder (POST; rule 4).
    Create {
        /// The record, without holder.
        record: LeaseRecord,
    },
    /// Replace `base` with `record` (PUT with base's resourceVersion; rule 3).
    Replace {
        /// The object the write is based on.
        base: StoredLease,
        /// The new record.
        record: LeaseRecord,
        /// What it is for.
        purpose: Purpose,
    },
}

/// What the executor should do next.
#[allow(clippy::large_enum_variant)] // short-lived, never stored in bulk
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing to do until this instant (or until an outcome arrives).
    Wait(Instant),
    /// Send this request, and bring back its answer as an [`Outcome`].
    Send(Request),
    /// Taking over is impossible (the epoch would overflow int32); wait and say why.
    Stuck {
        /// Retry at.
        until: Instant,
        /// For the log.
        why: &'static str,
    },
    /// Shut down: the machine was stopped and owes no release any more.
    Stopped,
}

/// Everything the executor brings back to the machine.
#[allow(clippy::large_enum_variant)] // short-lived, never stored in bulk
#[derive(Debug)]
pub enum Outcome {
    /// Time passed: a wait ended, or a claim's deadline came while a request was in flight.
    Tick,
    /// The answer to [`Request::Read`] (`Err(NotFound)`: the Lease does not exist).
    Read(Result<StoredLease, StoreError>),
    /// The answer to [`Request::Create`].
    Created(Result<StoredLease, StoreError>),
    /// The answer to [`Request::Replace`]: the object written and whether the server created it
    /// (create-on-update), or why not. `sent` is when the request left this process.
    Replaced {
        /// What the write was for.
        purpose: Purpose,
        /// When the request was sent.
        sent: Instant,
        /// The answer.
        result: Result<(StoredLease, bool), StoreError>,
    },
    /// An event of the Lease's watch stream.
    Watch(WatchEvent),
    /// The watch stream is up: followers need not poll.
    WatchUp,
    /// The watch stream is down: followers poll every retry period.
    WatchDown,
    /// The app asks this candidate to step down and release the lease.
    ReleaseAsked,
    /// The app's health changed (`--app-check`; rule 13).
    AppHealth(bool),
    /// leaderd is shutting down: step down, and release the lease if `release`.
    Stop {
        /// Whether to release (`--release-on-shutdown`).
        release: bool,
    },
}

impl Outcome {
    /// Whether this outcome is an observation of the Lease (its object, or its absence), as
    /// opposed to a failure, a conflict or news about the watch.
    pub fn observes_the_lease(&self) -> bool {
        match self {
            Outcome::Read(r) | Outcome::Created(r) => {
                matches!(r, Ok(_) | Err(StoreError::NotFound))
            }
            Outcome::Replaced { result, .. } => matches!(result, Ok(_) | Err(StoreError::NotFound)),
            Outcome::Watch(e) => matches!(e, WatchEvent::Put(_) | WatchEvent::Deleted),
            _ => false,
        }
    }
}

/// What this candidate knows of the Lease object.
#[allow(clippy::large_enum_variant)] // one per machine
#[derive(Clone, Debug, PartialEq)]
enum Known {
    /// Nothing read yet.
    Unknown,
    /// Observed not to exist since `since`; created without a holder after `since + P`.
    Absent {
        /// When the absence was first observed.
        since: Instant,
    },
    /// The Lease as last observed, and when this resourceVersion was first observed
    /// (client-go's `observedTime`).
    Present {
        lease: StoredLease,
        observed_at: Instant,
    },
}

/// Our tenure and what renewing it needs.
#[derive(Clone, Debug, PartialEq)]
struct Leading {
    tenure: Tenure,
    /// When the last successful write (acquire or renew) was sent.
    last_sent: Instant,
    /// The object to base the next renew on (our last write, or a foreign edit we adopted).
    base: StoredLease,
}

/// A release owed after stepping down (rule 12).
#[derive(Clone, Debug, PartialEq)]
struct Releasing {
    /// The epoch of the tenure that ended.
    epoch: i64,
    /// The object to base the release on.
    base: StoredLease,
    /// The candidate it is meant for (rule 10).
    to: Option<String>,
    /// Writes sent so far.
    attempts: u8,
    /// The last write met a conflict: read before the next.
    stale: bool,
}

/// Where an observation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// A read or the answer to our write: linearizable, as new as anything we saw before it.
    Direct,
    /// A watch event: in order within its stream, but possibly older than a read we did.
    Watch,
}

/// The election state machine of one candidate for one Lease. A value: hold many, drive them
/// with [`Machine::decide`] and [`Machine::apply`], test them without I/O.
#[derive(Clone, Debug)]
pub struct Machine {
    params: Params,
    known: Known,
    leading: Option<Leading>,
    releasing: Option<Releasing>,
    stopped: bool,
    /// resourceVersion of our last successful write in this process (rule 8).
    my_last_write: Option<String>,
    /// Highest epoch (leaseTransitions) ever observed or written (rule 6).
    max_epoch_seen: Option<i64>,
    /// Holder and epoch of the last record with a holder that this candidate saw: the only
    /// holder whose release it takes at once (rule 5).
    last_held: Option<(String, Option<i64>)>,
    /// No request before this instant (back-off after a failure).
    not_before: Option<Instant>,
    /// The known record is known to be stale (a conflict, or a watch event to confirm; rules 3
    /// and 7): read before anything else.
    stale: bool,
    /// Whether the watch stream is up; when it is not, followers poll.
    watch_up: bool,
    /// Next fallback poll while the watch is down.
    poll_at: Option<Instant>,
    /// After a deliberate release, do not take the lease again before this instant (rule 11).
    keep_out_until: Option<Instant>,
    /// Added to every expiry this candidate waits out (fixed per machine, below
    /// [`Params::takeover_spread`]). Waiting longer never weakens safety; releases are not
    /// delayed.
    takeover_delay: Duration,
    /// resourceVersions observed lately, so that a late watch event for a version already
    /// seen through a read or our own write does not roll the known record back.
    recent: VecDeque<String>,
    /// The app's health when leadership follows it (rule 13); None: no check.
    app_healthy: Option<bool>,
    /// The holder and epoch last announced in a [`Transition::NewLeader`].
    announced: (Option<String>, Option<i64>),
    rng: fastrand::Rng,
}

impl Machine {
    /// A candidate that knows nothing yet. `seed` drives the back-off jitter and the takeover
    /// spread (give each process its own; tests give a fixed one).
    pub fn new(params: Params, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let takeover_delay = params.takeover_spread().mul_f64(rng.f64());
        Machine {
            params,
            known: Known::Unknown,
            leading: None,
            releasing: None,
            stopped: false,
            my_last_write: None,
            max_epoch_seen: None,
            last_held: None,
            not_before: None,
            stale: false,
            watch_up: false,
            poll_at: None,
            keep_out_until: None,
            takeover_delay,
            recent: VecDeque::new(),
            announced: (None, None),
            app_healthy: None,
            rng,
        }
    }

    /// Leadership follows the app's health (rule 13): unhealthy until told otherwise by
    /// [`Outcome::AppHealth`].
    pub fn with_app_check(mut self) -> Self {
        self.app_healthy = Some(false);
        self
    }

    /// The machine's parameters.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// The current object, if known to exist.
    pub fn lease(&self) -> Option<&StoredLease> {
        match &self.known {
            Known::Present { lease, .. } => Some(lease),
            _ => None,
        }
    }

    /// Our tenure, if we have one (its claim may have run out since the last outcome).
    pub fn tenure(&self) -> Option<Tenure> {
        self.leading.as_ref().map(|l| l.tenure)
    }

    /// What the world may know: the holder (this candidate while it has a tenure, even if a
    /// watch event already shows another holder that a read has yet to confirm: "leader: other"
    /// with "is_leader: true" would contradict itself), the epoch, and our tenure.
    pub fn view(&self) -> View {
        let lease = self.lease();
        let tenure = self.tenure();
        let holder = match tenure {
            Some(_) => Some(self.params.identity.clone()),
            None => lease.and_then(|l| l.record.holder.clone()),
        };
        let epoch = tenure.map(|t| t.epoch).or_else(|| {
            holder
                .as_ref()
                .and(lease.and_then(|l| l.record.transitions))
        });
        View {
            ready: !matches!(self.known, Known::Unknown),
            holder,
            epoch,
            lease_uid: lease.and_then(|l| l.uid.clone()),
            version: lease.map(|l| l.resource_version.clone()),
            tenure,
            app_healthy: self.app_healthy,
        }
    }

    /// When the executor must apply [`Outcome::Tick`] even while a request is in flight: the
    /// end of our claim.
    pub fn deadline(&self) -> Option<Instant> {
        self.tenure().map(|t| t.valid_until)
    }

    // -----------------------------------------------------------------------------------------
    // decide

    /// The step function: given what we know at `now`, what to do next. Pure; `wall` is only
    /// written into records.
    pub fn decide(&self, now: Instant, wall: SystemTime) -> Step {
        let p = &self.params;
        // Rule 12: a release owed goes first, back-off or not.
        if let Some(r) = &self.releasing {
            if r.stale {
                return Step::Send(Request::Read);
            }
            return Step::Send(Request::Replace {
                base: r.base.clone(),
                record: release_record(p, r, wall),
                purpose: Purpose::Release,
            });
        }
        if self.stopped {
            return Step::Stopped;
        }
        if let Some(t) = self.not_before.filter(|t| now < *t) {
            return Step::Wait(t);
        }
        if self.stale {
            return Step::Send(Request::Read); // rules 3, 7
        }
        // Leading: renew 3R/5 after the last successful renew was sent (rule 14), based on our
        // last write (rule 3).
        if let Some(l) = &self.leading {
            let at = l.last_sent + p.renew_interval();
            if now < at {
                return Step::Wait(at.min(l.tenure.valid_until));
            }
            let record = holder_record(
                p,
                l.tenure.epoch,
                l.base.record.acquire_time.clone(),
                Some(&l.base.record),
                wall,
            );
            return Step::Send(Request::Replace {
                base: l.base.clone(),
                record,
                purpose: Purpose::Renew,
            });
        }
        let poll = |until: Instant| -> Step {
            match self.poll_at {
                Some(at) if !self.watch_up && at <= now => Step::Send(Request::Read),
                Some(at) if !self.watch_up => Step::Wait(at.min(until)),
                _ => Step::Wait(until),
            }
        };
        match &self.known {
            Known::Unknown => Step::Send(Request::Read),
            // Rule 4: create it without a holder once the absence has been seen for a retry
            // period. It is taken like any record, a lease duration later.
            Known::Absent { since } => {
                let at = *since + p.retry_period + self.takeover_delay;
                if now < at {
                    return poll(at);
                }
                Step::Send(Request::Create {
                    record: created_record(p, self.max_epoch_seen.unwrap_or(0), wall),
                })
            }
            Known::Present { lease, observed_at } => {
                let r = &lease.record;
                // Rule 6 across deletions: a record without holder whose epoch is below the
                // highest this candidate has seen (the Lease was recreated by someone who never
                // saw the old epochs, or a foreign writer lowered it) is first raised to that
                // epoch, so that the next tenure's epoch exceeds every tenure's before.
                if r.holder.is_none() && r.transitions < self.max_epoch_seen {
                    if let Some(epoch) = self.max_epoch_seen {
                        return Step::Send(Request::Replace {
                            base: lease.clone(),
                            record: created_record(p, epoch, wall),
                            purpose: Purpose::RaiseEpoch,
                        });
                    }
                }
                // Rule 8: only a record this process wrote is ours to take back at once.
                let ours = r.holder.as_deref() == Some(p.identity.as_str())
                    && self.my_last_write.as_deref() == Some(lease.resource_version.as_str());
                // Rule 1: expiry from our own observation, never from renewTime.
                let record_wait = r
                    .lease_duration_seconds
                    .map(|d| Duration::from_secs(d.min(MAX_EPOCH) as u64))
                    .unwrap_or_default();
                let expires =
                    *observed_at + p.lease_duration.max(record_wait) + self.takeover_delay;
                // Rules 5 and 10: a release is free at once, but one meant for another
                // candidate only after a retry period (its target goes first).
                let free_at = match &r.release_to {
                    _ if !self.is_genuine_release(r) => None,
                    Some(to) if *to != p.identity => Some(*observed_at + p.retry_period),
                    _ => Some(*observed_at),
                };
                let free = ours || now >= expires || free_at.is_some_and(|t| now >= t);
                // Rule 13: an unhealthy app neither takes nor asks for the lease; the news
                // that it is healthy again comes as an outcome.
                let app_ok = self.app_healthy != Some(false);
                if free && !app_ok {
                    return poll(now + p.retry_period);
                }
                if !free {
                    // Rule 10: announce ourselves to a live leaderd holder of lower priority,
                    // unless a candidate of at least our priority is already announced.
                    let outranks_holder = r.holder.is_some()
                        && r.holder.as_deref() != Some(p.identity.as_str())
                        && r.holder_priority.is_some_and(|hp| hp < p.priority);
                    let announced = r
                        .candidate
                        .as_ref()
                        .is_some_and(|(cp, _)| *cp >= p.priority);
                    if outranks_holder && !announced && app_ok {
                        let mut record = r.clone();
                        record.candidate = Some((p.priority, p.identity.clone()));
                        return Step::Send(Request::Replace {
                            base: lease.clone(),
                            record,
                            purpose: Purpose::Announce,
                        });
                    }
                    return poll(free_at.map_or(expires, |t| t.min(expires)));
                }
                // Rule 11.
                if let Some(k) = self.keep_out_until.filter(|k| now < *k) {
                    return poll(k);
                }
                match self.next_epoch(Some(r)) {
                    Some(epoch) => Step::Send(Request::Replace {
                        base: lease.clone(),
                        record: holder_record(p, epoch, None, Some(r), wall),
                        purpose: Purpose::Acquire,
                    }),
                    None => Step::Stuck {
                        until: now + p.retry_period,
                        why: "the epoch would overflow int32 (leaseTransitions is at its maximum); reset the lease",
                    },
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------------
    // apply

    /// Take one outcome at `now`; returns what it changed, in order.
    pub fn apply(&mut self, outcome: Outcome, now: Instant) -> Vec<Transition> {
        let mut out = Vec::new();
        // Rule 2: a claim ends by the clock, whatever else happens.
        if self
            .leading
            .as_ref()
            .is_some_and(|l| !l.tenure.is_valid_at(now))
        {
            self.end_tenure(LossReason::RenewDeadline, &mut out);
        }
        match outcome {
            Outcome::Tick => {}
            Outcome::Read(result) => self.read_answered(result, now, &mut out),
            Outcome::Created(result) => match result {
                // Rule 4: the record we made, without a holder, is known from now on like
                // anyone's. It starts nothing; a later checked write acquires it.
                Ok(lease) => {
                    self.not_before = None;
                    self.observe(lease, now, Source::Direct, &mut out);
                }
                Err(StoreError::Conflict | StoreError::AlreadyExists) => self.stale = true,
                Err(e) => self.back_off(&e, now),
            },
            Outcome::Replaced {
                purpose,
                sent,
                result,
            } => match purpose {
                Purpose::Acquire | Purpose::Renew => {
                    self.claim_answered(purpose, result, sent, now, &mut out)
                }
                Purpose::Announce | Purpose::RaiseEpoch => match result {
                    Ok((lease, _)) => self.observe(lease, now, Source::Direct, &mut out),
                    Err(e) => self.write_failed(e, now, &mut out),
                },
                Purpose::Release => self.release_answered(result, now, &mut out),
            },
            Outcome::Watch(WatchEvent::Put(lease)) => {
                self.observe(lease, now, Source::Watch, &mut out)
            }
            // Rule 7: a leader confirms by a read (which ends the tenure if the Lease is gone).
            Outcome::Watch(WatchEvent::Deleted) if self.leading.is_some() => self.stale = true,
            Outcome::Watch(WatchEvent::Deleted) => self.observe_absent(now),
            Outcome::Watch(WatchEvent::Expired | WatchEvent::Bookmark(_)) => {}
            Outcome::WatchUp => {
                self.watch_up = true;
                self.poll_at = None;
            }
            Outcome::WatchDown => {
                if self.watch_up || self.poll_at.is_none() {
                    self.poll_at = Some(now);
                }
                self.watch_up = false;
            }
            Outcome::ReleaseAsked => {
                if !self.step_down(LossReason::Released, None, now, &mut out) {
                    out.push(Transition::ReleaseFinished(ReleaseOutcome::NotLeader));
                }
            }
            Outcome::AppHealth(healthy) => {
                if self.app_healthy.is_some() {
                    self.app_healthy = Some(healthy);
                }
            }
            Outcome::Stop { release } => {
                self.stopped = true;
                if release {
                    self.step_down(LossReason::Shutdown, None, now, &mut out);
                } else if self.leading.is_some() {
                    self.end_tenure(LossReason::Shutdown, &mut out);
                }
            }
        }
        // Rule 13: a leader whose app is unhealthy (also one whose acquisition was answered
        // after the app failed) steps down and releases.
        if self.leading.is_some() && self.app_healthy == Some(false) {
            self.step_down(LossReason::AppUnhealthy, None, now, &mut out);
        }
        // Rule 10: the leader that sees a candidate of higher priority hands over.
        if let Some(to) = self.leading.as_ref().and_then(|l| self.handover_target(l)) {
            self.step_down(LossReason::HandedOver, Some(to), now, &mut out);
        }
        let view = self.view();
        let now_leading = (view.holder, view.epoch);
        if now_leading != self.announced {
            self.announced = now_leading.clone();
            let (leader, epoch) = now_leading;
            out.push(Transition::NewLeader { leader, epoch });
        }
        out
    }

    fn read_answered(
        &mut self,
        result: Result<StoredLease, StoreError>,
        now: Instant,
        out: &mut Vec<Transition>,
    ) {
        match result {
            Ok(lease) => {
                // Rule 12: a release that met a conflict goes on from this read while the
                // record still names us under the tenure's epoch (our in-flight renew landed).
                let me = Some(self.params.identity.as_str());
                if let Some(r) = self.releasing.as_mut().filter(|r| r.stale) {
                    if lease.record.holder.as_deref() == me
                        && lease.record.transitions == Some(r.epoch)
                    {
                        r.base = lease.clone();
                        r.stale = false;
                    } else {
                        let epoch = r.epoch;
                        self.finish_release(
                            ReleaseOutcome::NotWritten {
                                epoch,
                                error: "the lease is no longer ours; nothing to release".into(),
                            },
                            out,
                        );
                    }
                }
                self.observe(lease, now, Source::Direct, out);
            }
            Err(StoreError::NotFound) => {
                self.give_up_release(&StoreError::NotFound, out);
                self.observe_absent(now);
                // Rule 4: our record is gone, and no write of ours can bring it back.
                self.end_tenure(LossReason::Deleted, out);
            }
            Err(e) => {
                if !self.give_up_release(&e, out) {
                    self.back_off(&e, now);
                }
            }
        }
        if !self.watch_up {
            let wait = self.jitter(self.params.retry_period);
            self.poll_at = Some(now + wait);
        }
    }

    /// The answer to an acquire or a renew.
    fn claim_answered(
        &mut self,
        purpose: Purpose,
        result: Result<(StoredLease, bool), StoreError>,
        sent: Instant,
        now: Instant,
        out: &mut Vec<Transition>,
    ) {
        match result {
            // Create-on-update: the Lease had been deleted and a store created it from this PUT
            // without checking its resourceVersion. The real apiserver never does that to
            // leaderd's PUTs (they carry the uid they were based on: 409, rule 3); should a
            // store do it, the write says nothing about who else leads: it starts no tenure,
            // ends ours, and the record it made is waited out like anyone's (rules 4, 8).
            Ok((lease, true)) => {
                self.end_tenure(LossReason::Deleted, out);
                self.observe(lease, now, Source::Direct, out)
            }
            Ok((lease, _)) => {
                let before = self.tenure().map(|t| t.epoch);
                let renew = purpose == Purpose::Renew;
                match (before, self.wrote(lease, sent, now, renew)) {
                    (None, Some(epoch)) => out.push(Transition::Acquired { epoch }),
                    // Answered too late to renew anything (rule 2).
                    (Some(epoch), None) => self.lost_epoch(LossReason::RenewDeadline, epoch, out),
                    _ => {}
                }
            }
            Err(e) => self.write_failed(e, now, out),
        }
    }

    /// A write that failed: re-read on a conflict (rule 3), note a deletion, else back off.
    fn write_failed(&mut self, e: StoreError, now: Instant, out: &mut Vec<Transition>) {
        match e {
            StoreError::Conflict | StoreError::AlreadyExists => self.stale = true,
            StoreError::NotFound => {
                self.observe_absent(now);
                if self.leading.is_some() {
                    self.end_tenure(LossReason::Deleted, out);
                }
            }
            e => self.back_off(&e, now),
        }
    }

    fn release_answered(
        &mut self,
        result: Result<(StoredLease, bool), StoreError>,
        now: Instant,
        out: &mut Vec<Transition>,
    ) {
        let Some(r) = self.releasing.as_mut() else {
            return; // an answer for a release already given up
        };
        r.attempts += 1;
        let (epoch, attempts) = (r.epoch, r.attempts);
        match result {
            Ok((lease, _)) => {
                self.finish_release(ReleaseOutcome::Released { epoch }, out);
                self.observe(lease, now, Source::Direct, out);
            }
            Err(StoreError::Conflict) if attempts < 3 => r.stale = true,
            Err(e) => {
                self.finish_release(
                    ReleaseOutcome::NotWritten {
                        epoch,
                        error: e.to_string(),
                    },
                    out,
                );
            }
        }
    }

    /// A release waiting for its re-read gives up on `e`. Whether one did.
    fn give_up_release(&mut self, e: &StoreError, out: &mut Vec<Transition>) -> bool {
        let Some(epoch) = self.releasing.as_ref().filter(|r| r.stale).map(|r| r.epoch) else {
            return false;
        };
        self.finish_release(
            ReleaseOutcome::NotWritten {
                epoch,
                error: e.to_string(),
            },
            out,
        );
        true
    }

    fn finish_release(&mut self, outcome: ReleaseOutcome, out: &mut Vec<Transition>) {
        self.releasing = None;
        out.push(Transition::ReleaseFinished(outcome));
    }

    /// Rules 11 and 12: end our tenure now and owe its release (to `to`, if given); keep out
    /// for a lease duration. Whether there was a tenure to end.
    fn step_down(
        &mut self,
        reason: LossReason,
        to: Option<String>,
        now: Instant,
        out: &mut Vec<Transition>,
    ) -> bool {
        let Some(l) = self.leading.take() else {
            return false;
        };
        self.keep_out_until = Some(now + self.params.lease_duration);
        self.lost_epoch(reason, l.tenure.epoch, out);
        self.releasing = Some(Releasing {
            epoch: l.tenure.epoch,
            base: l.base,
            to,
            attempts: 0,
            stale: false,
        });
        true
    }

    fn end_tenure(&mut self, reason: LossReason, out: &mut Vec<Transition>) {
        if let Some(l) = self.leading.take() {
            self.lost_epoch(reason, l.tenure.epoch, out);
        }
    }

    fn lost_epoch(&mut self, reason: LossReason, epoch: i64, out: &mut Vec<Transition>) {
        out.push(Transition::Lost {
            reason,
            epoch: Some(epoch),
        });
    }

    fn back_off(&mut self, e: &StoreError, now: Instant) {
        // Rule 14: a leader's renew that timed out has waited its R/5 already; the next of the
        // two attempts in its deadline goes at once.
        if self.leading.is_some() && matches!(e, StoreError::TimedOut { .. }) {
            self.not_before = None;
            return;
        }
        let wait = e
            .retry_after()
            .map(|d| d.min(Duration::from_secs(60)))
            .unwrap_or_else(|| self.jitter(self.params.retry_period / 2));
        self.not_before = Some(now + wait);
    }

    /// `d` stretched by a random factor in [1, 1 + JITTER), so candidates do not act in lockstep.
    fn jitter(&mut self, d: Duration) -> Duration {
        d.mul_f64(1.0 + self.rng.f64() * JITTER)
    }

    // -----------------------------------------------------------------------------------------
    // knowledge

    fn see_holder(&mut self, r: &LeaseRecord) {
        if let Some(h) = &r.holder {
            self.last_held = Some((h.clone(), r.transitions));
        }
    }

    fn see_epoch(&mut self, epoch: Option<i64>) {
        if let Some(e) = epoch {
            self.max_epoch_seen = Some(self.max_epoch_seen.map_or(e, |m| m.max(e)));
        }
    }

    /// Rule 5: whether `r` is a release this candidate may take at once — leaderd's marker
    /// naming the holder of the last held record seen, under its epoch, the highest seen. A
    /// marker on any other record (a foreign writer emptied the holder, or this candidate
    /// missed the tenures in between) is not trusted.
    fn is_genuine_release(&self, r: &LeaseRecord) -> bool {
        r.is_released()
            && r.transitions.is_some()
            && r.transitions == self.max_epoch_seen
            && self
                .last_held
                .as_ref()
                .is_some_and(|(h, e)| r.released_by.as_ref() == Some(h) && *e == r.transitions)
    }

    fn remember(&mut self, rv: &str) {
        if !self.recent.iter().any(|r| r == rv) {
            if self.recent.len() == 8 {
                self.recent.pop_front();
            }
            self.recent.push_back(rv.to_owned());
        }
    }

    /// Record an observation of the Lease object (a read, a watch event, or the answer to a
    /// write that starts nothing), ending our tenure if it shows someone else's.
    ///
    /// Rule 7: a watch event that would end our tenure only marks the knowledge stale, so that a
    /// direct read confirms it first: watch events can arrive after a newer read. Safety never
    /// depends on noticing a loss early; the claim ends by the clock (rule 2).
    fn observe(
        &mut self,
        lease: StoredLease,
        now: Instant,
        source: Source,
        out: &mut Vec<Transition>,
    ) {
        self.see_epoch(lease.record.transitions);
        let rv = lease.resource_version.clone();
        let current = self.lease().is_some_and(|l| l.resource_version == rv);
        if source == Source::Watch && !current && self.recent.iter().any(|r| *r == rv) {
            return; // a late event for a version we already saw and moved past
        }
        if source == Source::Direct {
            self.stale = false;
        }
        self.remember(&rv);
        if !current {
            // Rule 9: an edit of annotations or labels alone keeps the observed time.
            let observed_at = match &self.known {
                Known::Present {
                    lease: known,
                    observed_at,
                } if known.record.same_claim(&lease.record) => *observed_at,
                _ => now,
            };
            self.see_holder(&lease.record);
            self.known = Known::Present {
                lease: lease.clone(),
                observed_at,
            };
        }
        let me = Some(self.params.identity.as_str());
        let Some(l) = self.leading.as_mut() else {
            return;
        };
        if self.my_last_write.as_deref() == Some(rv.as_str()) || l.base.resource_version == rv {
            return;
        }
        let r = &lease.record;
        if r.holder.as_deref() == me && r.transitions == Some(l.tenure.epoch) {
            // Someone edited the object (labels, annotations) but it still names us under the
            // same epoch: nobody else started a tenure, so ours goes on from the new version.
            l.base = lease;
            return;
        }
        if source == Source::Watch {
            self.stale = true;
            return;
        }
        let reason = if r.holder.is_some() && r.holder.as_deref() != me {
            LossReason::Taken
        } else {
            LossReason::Conflict
        };
        self.end_tenure(reason, out);
    }

    /// Record that the Lease was observed not to exist (the callers end a tenure: a read's
    /// answer at once, a watch event after a read confirms it, rules 4 and 7).
    fn observe_absent(&mut self, now: Instant) {
        self.stale = false;
        if matches!(self.known, Known::Absent { .. }) {
            return;
        }
        self.last_held = None;
        self.known = Known::Absent { since: now };
    }

    /// Record our own successful acquire or renew (`renew`), sent at `sent`, that answered
    /// `lease`. Returns the epoch of the tenure it holds, if any.
    fn wrote(
        &mut self,
        lease: StoredLease,
        sent: Instant,
        now: Instant,
        renew: bool,
    ) -> Option<i64> {
        let epoch = lease.record.transitions;
        self.see_epoch(epoch);
        self.see_holder(&lease.record);
        self.remember(&lease.resource_version);
        self.my_last_write = Some(lease.resource_version.clone());
        self.known = Known::Present {
            lease: lease.clone(),
            observed_at: now,
        };
        self.stale = false;
        self.not_before = None;
        if lease.record.holder.as_deref() != Some(self.params.identity.as_str()) {
            self.leading = None;
            return None;
        }
        let epoch = epoch?;
        // Rule 6, one epoch per claim: a renewal answered after our claim ran out does not
        // resume it under the old epoch; the next step re-acquires our record with a new one.
        // (An acquisition's epoch is new by construction, even if the watch showed our record
        // before the answer came.)
        let lapsed = self
            .leading
            .as_ref()
            .is_none_or(|l| !l.tenure.is_valid_at(now));
        if renew && lapsed {
            self.leading = None;
            return None;
        }
        // Rule 2: the claim runs from the send time of this write.
        let valid_until = sent + self.params.renew_deadline;
        if valid_until <= now {
            // The answer came too late to claim anything; the next step renews at once.
            self.leading = None;
            return None;
        }
        self.leading = Some(Leading {
            tenure: Tenure { epoch, valid_until },
            last_sent: sent,
            base: lease,
        });
        Some(epoch)
    }

    fn next_epoch(&self, record: Option<&LeaseRecord>) -> Option<i64> {
        let seen = record.and_then(|r| r.transitions).max(self.max_epoch_seen);
        let next = seen.map_or(1, |e| e + 1);
        (next <= MAX_EPOCH).then_some(next)
    }

    /// Rule 10: the candidate our tenure should be handed to, if any.
    fn handover_target(&self, l: &Leading) -> Option<String> {
        let p = &self.params;
        l.base
            .record
            .candidate
            .as_ref()
            .filter(|(cp, id)| *cp > p.priority && *id != p.identity)
            .map(|(_, id)| id.clone())
    }
}

/// The record a holder writes (acquire or renew) over `base`. A candidate's announcement
/// that still outranks us is kept; one that does not (or names us) is dropped.
fn holder_record(
    params: &Params,
    epoch: i64,
    acquire_time: Option<String>,
    base: Option<&LeaseRecord>,
    wall: SystemTime,
) -> LeaseRecord {
    let now = micro_time(wall);
    LeaseRecord {
        holder: Some(params.identity.clone()),
        lease_duration_seconds: Some(params.lease_duration_seconds()),
        acquire_time: Some(acquire_time.unwrap_or_else(|| now.clone())),
        renew_time: Some(now),
        transitions: Some(epoch),
        released_by: None,
        release_to: None,
        holder_priority: Some(params.priority),
        candidate: base
            .and_then(|r| r.candidate.clone())
            .filter(|(p, id)| *p > params.priority && *id != params.identity),
    }
}

/// The record a candidate creates a missing Lease with (rule 4): no holder, so that nobody is
/// told of a tenure that has not started, and the highest epoch seen, so that epochs keep
/// rising across a deletion (rule 6).
fn created_record(params: &Params, epoch: i64, wall: SystemTime) -> LeaseRecord {
    LeaseRecord {
        lease_duration_seconds: Some(params.lease_duration_seconds()),
        renew_time: Some(micro_time(wall)),
        transitions: Some(epoch),
        ..LeaseRecord::default()
    }
}

/// The record a leader writes to release the lease (rules 5, 10, 12): no holder, the release
/// marker (and the candidate it is meant for, if any), the epoch kept.
fn release_record(params: &Params, r: &Releasing, wall: SystemTime) -> LeaseRecord {
    LeaseRecord {
        holder: None,
        lease_duration_seconds: Some(params.lease_duration_seconds()),
        acquire_time: r.base.record.acquire_time.clone(),
        renew_time: Some(micro_time(wall)),
        transitions: Some(r.epoch),
        released_by: Some(params.identity.clone()),
        release_to: r.to.clone(),
        holder_priority: None,
        candidate: None,
    }
}

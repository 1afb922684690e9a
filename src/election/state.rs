//! The election's pure core: what this candidate knows, and [`decide`], the step function.
//!
//! Like client-go's `tryAcquireOrRenew`, but split so that nothing here does I/O or reads a
//! clock: the caller passes `now` (tokio's monotonic [`Instant`], pausable in tests) and the
//! wall-clock time to write into the record, and carries out the [`Step`] that comes back.
//!
//! The rules (numbered as in `docs/design.md`):
//! 1. A holder's record expires `max(lease_duration, record.leaseDurationSeconds)` after this
//!    candidate *first saw that exact resourceVersion* (observed time), on the monotonic clock.
//!    `renewTime` is never compared with the local wall clock.
//! 2. A leader claims leadership only until `sent + renew_deadline`, where `sent` is when the
//!    request of its last successful write left this process.
//! 3. Every write carries the resourceVersion it was based on; a conflict means re-read.
//! 4. Creating is not claiming. A missing Lease is created *without a holder* (one retry period
//!    after the absence was seen, so that a live leader's renewal recreates it first), and the
//!    record so made is acquired like any other: after rule 1's wait, by a checked write. A write
//!    answered by a creation (POST, or a PUT answered 201) never starts a tenure by itself.
//! 5. An empty holder is free at once only as a leaderd release: the marker names the holder of
//!    the last held record this candidate saw, under that record's epoch, which is the highest
//!    it has seen. Anything else (no marker, a forged one) is waited out by rule 1.
//! 6. Every new tenure gets epoch `max(record.leaseTransitions, highest epoch ever seen) + 1`;
//!    a record without holder that carries a lower epoch than seen is first raised to it.
//! 7. Loss detection (a watch event only marks the state stale; a read confirms).
//! 8. A process does not inherit a tenure it did not write.
//! 9. A change of annotations or labels alone (same spec) does not restart the wait of rule 1.
//! 10. Priority handover: a follower whose `--priority` is higher than the holder's announces
//!     itself in an annotation (once the announcement is there, nobody of equal or lower priority
//!     announces); the leader, seeing it, steps down and releases *to* that candidate. The target
//!     may take the released lease at once, others after one retry period, the releaser (like
//!     after any deliberate release) only after a lease duration.

use std::collections::VecDeque;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::record::{micro_time, LeaseRecord, StoredLease};

/// Election timing and identity, validated by [`crate::config`].
#[derive(Clone, Debug)]
pub struct Params {
    /// This candidate's identity (`spec.holderIdentity` when it leads).
    pub identity: String,
    /// How long followers wait on an unchanged record before taking over.
    pub lease_duration: Duration,
    /// How long a leader claims leadership after its last successful renew was sent.
    pub renew_deadline: Duration,
    /// Interval between renewals, and the polling interval when the watch is down.
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
}

/// The highest epoch a Lease can carry (`leaseTransitions` is an int32).
pub const MAX_EPOCH: i64 = i32::MAX as i64;

/// What this candidate knows of the Lease object.
#[allow(clippy::large_enum_variant)] // one per elector
#[derive(Clone, Debug, PartialEq)]
pub enum Known {
    /// Nothing read yet.
    Unknown,
    /// Observed not to exist since `since`; created without a holder after `since + P`.
    Absent {
        /// When the absence was first observed.
        since: Instant,
    },
    /// The Lease as last observed.
    Present(Observed),
}

/// A Lease object and when this candidate first saw this resourceVersion.
#[derive(Clone, Debug, PartialEq)]
pub struct Observed {
    /// The object.
    pub lease: StoredLease,
    /// When this resourceVersion was first observed (client-go's `observedTime`).
    pub observed_at: Instant,
}

/// This candidate's own tenure, while it has one.
#[derive(Clone, Debug, PartialEq)]
pub struct Tenure {
    /// The fencing epoch of this tenure.
    pub epoch: i64,
    /// When the last successful write (acquire or renew) was sent.
    pub last_sent: Instant,
    /// `last_sent + renew_deadline`: the end of the claim unless renewed.
    pub valid_until: Instant,
    /// The object to base the next renew on (our last write, or a foreign edit we adopted).
    pub base: StoredLease,
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
        }
    }

    /// Whether this loss was a deliberate step-down (with a release when possible), as opposed
    /// to leadership lost without a release (deadline passed, lease taken or changed).
    pub fn is_deliberate(self) -> bool {
        matches!(
            self,
            LossReason::Shutdown | LossReason::Released | LossReason::HandedOver
        )
    }

    /// Every reason, for pre-creating metric series.
    pub const ALL: [LossReason; 7] = [
        LossReason::RenewDeadline,
        LossReason::Taken,
        LossReason::Conflict,
        LossReason::Deleted,
        LossReason::Shutdown,
        LossReason::Released,
        LossReason::HandedOver,
    ];
}

/// Everything the elector knows; changed only through the methods below.
#[derive(Clone, Debug)]
pub struct ElectionState {
    /// The Lease as known.
    pub known: Known,
    /// Our tenure, if we lead.
    pub tenure: Option<Tenure>,
    /// resourceVersion of our last successful write in this process.
    pub my_last_write: Option<String>,
    /// Highest epoch (leaseTransitions) ever observed or written.
    pub max_epoch_seen: Option<i64>,
    /// Holder and epoch of the last record with a holder that this candidate saw: the only
    /// holder whose release it takes at once (rule 5).
    pub last_held: Option<(String, Option<i64>)>,
    /// No request before this instant (backoff after a failure).
    pub not_before: Option<Instant>,
    /// The known record is known to be stale (a conflict): read before anything else.
    pub stale: bool,
    /// Whether the watch stream is up; when it is not, followers poll.
    pub watch_up: bool,
    /// Next fallback poll while the watch is down.
    pub poll_at: Option<Instant>,
    /// After a deliberate release, do not take the lease again before this instant.
    pub keep_out_until: Option<Instant>,
    /// Added to every expiry this candidate waits out (a small random offset, fixed per
    /// process), so that many followers of one record do not all write at the same instant.
    /// Waiting longer never weakens safety; releases are not delayed.
    pub takeover_delay: Duration,
    /// resourceVersions observed lately, so that a late watch event for a version already
    /// seen through a read or our own write does not roll the known record back.
    recent: VecDeque<String>,
}

/// Where an observation came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// A read or the answer to our write: linearizable, as new as anything we saw before it.
    Direct,
    /// A watch event: in order within its stream, but possibly older than a read we did.
    Watch,
}

/// What the elector should do next.
#[allow(clippy::large_enum_variant)] // short-lived, never stored in bulk
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing to do until this instant (or until an observation arrives).
    Wait(Instant),
    /// Read the Lease.
    Read,
    /// Create the missing Lease with `record`, which names no holder (POST; rule 4).
    Create(LeaseRecord),
    /// Replace `base` with `record` (PUT with base's resourceVersion).
    Write {
        /// The object the write is based on.
        base: StoredLease,
        /// The new record.
        record: LeaseRecord,
        /// Whether this starts a new tenure or renews the current one.
        renew: bool,
    },
    /// Step down and release the lease to `to`, a candidate of higher priority (rule 10).
    HandOver {
        /// The candidate.
        to: String,
    },
    /// Announce this follower as a candidate of higher priority than the holder's: replace
    /// `base` with `record` (same spec, one more annotation).
    Announce {
        /// The object the write is based on.
        base: StoredLease,
        /// `base`'s record with this candidate's announcement.
        record: LeaseRecord,
    },
    /// Raise the epoch of a record without holder to the highest this candidate has seen
    /// (rule 6): replace `base` with `record` (still no holder). Starts nothing.
    RaiseEpoch {
        /// The object the write is based on.
        base: StoredLease,
        /// A record without holder carrying the highest epoch seen.
        record: LeaseRecord,
    },
    /// Taking over is impossible (the epoch would overflow int32); wait and say why.
    Stuck {
        /// Retry at.
        until: Instant,
        /// For the log.
        why: &'static str,
    },
}

impl Default for ElectionState {
    fn default() -> Self {
        Self::new()
    }
}

impl ElectionState {
    /// A candidate that knows nothing yet.
    pub fn new() -> Self {
        ElectionState {
            known: Known::Unknown,
            tenure: None,
            my_last_write: None,
            max_epoch_seen: None,
            last_held: None,
            not_before: None,
            stale: false,
            watch_up: false,
            poll_at: None,
            keep_out_until: None,
            takeover_delay: Duration::ZERO,
            recent: VecDeque::new(),
        }
    }

    /// The current object, if known to exist.
    pub fn lease(&self) -> Option<&StoredLease> {
        match &self.known {
            Known::Present(o) => Some(&o.lease),
            _ => None,
        }
    }

    fn see_holder(&mut self, r: &LeaseRecord) {
        if let Some(h) = &r.holder {
            self.last_held = Some((h.clone(), r.transitions));
        }
    }

    /// Rule 5: whether `r` is a release this candidate may take at once — leaderd's marker
    /// naming the holder of the last held record seen, under its epoch, the highest seen. A
    /// marker on any other record (a foreign writer emptied the holder, or this candidate
    /// missed the tenures in between) is not trusted.
    pub fn is_genuine_release(&self, r: &LeaseRecord) -> bool {
        r.is_released()
            && r.transitions.is_some()
            && r.transitions == self.max_epoch_seen
            && self
                .last_held
                .as_ref()
                .is_some_and(|(h, e)| r.released_by.as_ref() == Some(h) && *e == r.transitions)
    }

    fn see_epoch(&mut self, epoch: Option<i64>) {
        if let Some(e) = epoch {
            self.max_epoch_seen = Some(self.max_epoch_seen.map_or(e, |m| m.max(e)));
        }
    }

    /// End the tenure if its claim ran out at `now`.
    pub fn expire(&mut self, now: Instant) -> Option<LossReason> {
        if self.tenure.as_ref().is_some_and(|t| now >= t.valid_until) {
            self.tenure = None;
            return Some(LossReason::RenewDeadline);
        }
        None
    }

    fn remember(&mut self, rv: &str) {
        if !self.recent.iter().any(|r| r == rv) {
            if self.recent.len() == 8 {
                self.recent.pop_front();
            }
            self.recent.push_back(rv.to_owned());
        }
    }

    /// Record an observation of the Lease object (a read or a watch event).
    /// Returns why our tenure ended, if this observation ended it.
    ///
    /// A watch event that would end our tenure only marks the knowledge stale, so that a
    /// direct read confirms it first: watch events can arrive after a newer read. Safety never
    /// depends on noticing a loss early; the claim ends by the clock (rule 2).
    pub fn observe(
        &mut self,
        lease: StoredLease,
        now: Instant,
        params: &Params,
        source: Source,
    ) -> Option<LossReason> {
        self.see_epoch(lease.record.transitions);
        let rv = lease.resource_version.clone();
        let current = matches!(&self.known, Known::Present(o) if o.lease.resource_version == rv);
        if source == Source::Watch && !current && self.recent.iter().any(|r| *r == rv) {
            return None; // a late event for a version we already saw and moved past
        }
        if source == Source::Direct {
            self.stale = false;
        }
        self.remember(&rv);
        if !current {
            // Rule 9: an edit of annotations or labels alone keeps the observed time.
            let observed_at = match &self.known {
                Known::Present(o) if o.lease.record.same_claim(&lease.record) => o.observed_at,
                _ => now,
            };
            self.see_holder(&lease.record);
            self.known = Known::Present(Observed {
                lease: lease.clone(),
                observed_at,
            });
        }
        let tenure = self.tenure.as_mut()?;
        if self.my_last_write.as_deref() == Some(rv.as_str()) || tenure.base.resource_version == rv
        {
            return None;
        }
        let r = &lease.record;
        let me = Some(params.identity.as_str());
        if r.holder.as_deref() == me && r.transitions == Some(tenure.epoch) {
            // Someone edited the object (labels, annotations) but it still names us under the
            // same epoch: nobody else started a tenure, so ours goes on from the new version.
            tenure.base = lease;
            return None;
        }
        if source == Source::Watch {
            self.stale = true;
            return None;
        }
        self.tenure = None;
        Some(if r.holder.is_some() && r.holder.as_deref() != me {
            LossReason::Taken
        } else {
            LossReason::Conflict
        })
    }

    /// Record that the Lease was observed not to exist. A tenure is kept (its claim still ends
    /// by the clock); the leader renews at once, which recreates the object or fails.
    pub fn observe_absent(&mut self, now: Instant) {
        self.stale = false;
        if matches!(self.known, Known::Absent { .. }) {
            return;
        }
        self.last_held = None;
        self.known = Known::Absent { since: now };
    }

    /// Record the answer to our create (rule 4): the record we made, without a holder, is known
    /// from now on like anyone's. It starts nothing; a later checked write acquires it.
    pub fn created(&mut self, lease: StoredLease, now: Instant, params: &Params) {
        self.not_before = None;
        self.observe(lease, now, params, Source::Direct);
    }

    /// Record our own successful write, sent at `sent`, that answered `lease`.
    pub fn wrote(
        &mut self,
        lease: StoredLease,
        sent: Instant,
        now: Instant,
        params: &Params,
    ) -> Option<i64> {
        let epoch = lease.record.transitions;
        let seen_before = self.max_epoch_seen;
        self.see_epoch(epoch);
        self.see_holder(&lease.record);
        self.remember(&lease.resource_version);
        self.my_last_write = Some(lease.resource_version.clone());
        self.known = Known::Present(Observed {
            lease: lease.clone(),
            observed_at: now,
        });
        self.stale = false;
        self.not_before = None;
        if lease.record.holder.as_deref() != Some(params.identity.as_str()) {
            // A release (or any write not naming us) ends the tenure.
            self.tenure = None;
            return None;
        }
        let epoch = epoch?;
        // Rule 6, one epoch per claim: a renewal answered after our claim ran out does not
        // resume it under the old epoch; the next step re-acquires our record with a new one.
        let lapsed = self.tenure.as_ref().is_none_or(|t| now >= t.valid_until);
        if lapsed && seen_before.is_some_and(|m| epoch <= m) {
            self.tenure = None;
            return None;
        }
        let valid_until = sent + params.renew_deadline;
        if valid_until <= now {
            // The answer came too late to claim anything; the next step renews at once.
            self.tenure = None;
            return None;
        }
        self.tenure = Some(Tenure {
            epoch,
            last_sent: sent,
            valid_until,
            base: lease,
        });
        Some(epoch)
    }

    /// Give up our tenure now (before a release is sent).
    pub fn step_down(&mut self) -> bool {
        self.tenure.take().is_some()
    }

    /// Give up our tenure on purpose and keep out of the lease for a lease duration, so that
    /// another candidate takes it. Returns the tenure given up.
    pub fn release(&mut self, now: Instant, params: &Params) -> Option<Tenure> {
        let t = self.tenure.take()?;
        self.keep_out_until = Some(now + params.lease_duration);
        Some(t)
    }

    fn next_epoch(&self, record: Option<&LeaseRecord>) -> Option<i64> {
        let seen = record.and_then(|r| r.transitions).max(self.max_epoch_seen);
        let next = seen.map_or(1, |e| e + 1);
        (next <= MAX_EPOCH).then_some(next)
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
/// rising across a deletion.
pub fn created_record(params: &Params, epoch: i64, wall: SystemTime) -> LeaseRecord {
    LeaseRecord {
        lease_duration_seconds: Some(params.lease_duration_seconds()),
        renew_time: Some(micro_time(wall)),
        transitions: Some(epoch),
        ..LeaseRecord::default()
    }
}

/// The record a leader writes to release the lease: no holder, the release marker (and the
/// candidate it is meant for, if any), the epoch kept.
pub fn release_record(
    params: &Params,
    tenure: &Tenure,
    to: Option<String>,
    wall: SystemTime,
) -> LeaseRecord {
    LeaseRecord {
        holder: None,
        lease_duration_seconds: Some(params.lease_duration_seconds()),
        acquire_time: tenure.base.record.acquire_time.clone(),
        renew_time: Some(micro_time(wall)),
        transitions: Some(tenure.epoch),
        released_by: Some(params.identity.clone()),
        release_to: to,
        holder_priority: None,
        candidate: None,
    }
}

/// The candidate `tenure`'s leader should hand over to (rule 10), if any.
pub fn handover_target(params: &Params, tenure: &Tenure) -> Option<String> {
    tenure
        .base
        .record
        .candidate
        .as_ref()
        .filter(|(p, id)| *p > params.priority && *id != params.identity)
        .map(|(_, id)| id.clone())
}

/// The step function: given what we know at `now`, what to do next. Pure.
pub fn decide(s: &ElectionState, p: &Params, now: Instant, wall: SystemTime) -> Step {
    if let Some(t) = s.not_before.filter(|t| now < *t) {
        return Step::Wait(t);
    }
    if s.stale {
        return Step::Read;
    }
    // 1. Leading: hand over to a candidate of higher priority (rule 10), else renew every
    //    retry period, based on our last write.
    if let Some(t) = &s.tenure {
        if let Some(to) = handover_target(p, t) {
            return Step::HandOver { to };
        }
        // A deleted Lease is recreated by the renewal at once (create-on-update), before the
        // followers create it without a holder.
        let at = match s.known {
            Known::Absent { .. } => now,
            _ => t.last_sent + p.retry_period,
        };
        if now < at {
            return Step::Wait(at.min(t.valid_until));
        }
        let record = holder_record(
            p,
            t.epoch,
            t.base.record.acquire_time.clone(),
            Some(&t.base.record),
            wall,
        );
        return Step::Write {
            base: t.base.clone(),
            record,
            renew: true,
        };
    }
    let poll = |until: Instant| -> Step {
        match s.poll_at {
            Some(at) if !s.watch_up && at <= now => Step::Read,
            Some(at) if !s.watch_up => Step::Wait(at.min(until)),
            _ => Step::Wait(until),
        }
    };
    match &s.known {
        // 2. Nothing known yet: read.
        Known::Unknown => Step::Read,
        // 3. Absent: create it without a holder once the absence has been seen for a retry
        //    period (a live leader recreates it first by its renewal). It is taken like any
        //    record, by step 4, a lease duration later.
        Known::Absent { since } => {
            let at = *since + p.retry_period + s.takeover_delay;
            if now < at {
                return poll(at);
            }
            Step::Create(created_record(p, s.max_epoch_seen.unwrap_or(0), wall))
        }
        // 4. Present: free, our own lapsed record, or expired by observed time → acquire.
        Known::Present(o) => {
            let r = &o.lease.record;
            // Rule 6 across deletions: a record without holder whose epoch is below the highest
            // this candidate has seen (the Lease was recreated by someone who never saw the old
            // epochs, or a foreign writer lowered it) is first raised to that epoch, so that
            // the next tenure's epoch exceeds every tenure's before the deletion.
            if r.holder.is_none() && r.transitions < s.max_epoch_seen {
                if let Some(epoch) = s.max_epoch_seen {
                    return Step::RaiseEpoch {
                        base: o.lease.clone(),
                        record: created_record(p, epoch, wall),
                    };
                }
            }
            let ours = r.holder.as_deref() == Some(p.identity.as_str())
                && s.my_last_write.as_deref() == Some(o.lease.resource_version.as_str());
            let record_wait = r
                .lease_duration_seconds
                .map(|d| Duration::from_secs(d.min(MAX_EPOCH) as u64))
                .unwrap_or_default();
            let expires = o.observed_at + p.lease_duration.max(record_wait) + s.takeover_delay;
            // Rules 5 and 10: a release is free at once, but one meant for another candidate
            // only after a retry period (its target goes first).
            let free_at = match &r.release_to {
                _ if !s.is_genuine_release(r) => None,
                Some(to) if *to != p.identity => Some(o.observed_at + p.retry_period),
                _ => Some(o.observed_at),
            };
            let free = ours || now >= expires || free_at.is_some_and(|t| now >= t);
            if !free {
                // Rule 10: announce ourselves to a live leaderd holder of lower priority, unless
                // a candidate of at least our priority is already announced.
                let outranks_holder = r.holder.is_some()
                    && r.holder.as_deref() != Some(p.identity.as_str())
                    && r.holder_priority.is_some_and(|hp| hp < p.priority);
                let announced = r
                    .candidate
                    .as_ref()
                    .is_some_and(|(cp, _)| *cp >= p.priority);
                if outranks_holder && !announced {
                    let mut record = r.clone();
                    record.candidate = Some((p.priority, p.identity.clone()));
                    return Step::Announce {
                        base: o.lease.clone(),
                        record,
                    };
                }
                return poll(free_at.map_or(expires, |t| t.min(expires)));
            }
            if let Some(k) = s.keep_out_until.filter(|k| now < *k) {
                return poll(k);
            }
            match s.next_epoch(Some(r)) {
                Some(epoch) => Step::Write {
                    base: o.lease.clone(),
                    record: holder_record(p, epoch, None, Some(r), wall),
                    renew: false,
                },
                None => Step::Stuck {
                    until: now + p.retry_period,
                    why: "the epoch would overflow int32 (leaseTransitions is at its maximum); reset the lease",
                },
            }
        }
    }
}

//! The shard group's pure core: one closed state machine per replica and group, [`Group`].
//!
//! Like [`crate::election::Machine`], [`Group::decide`] says what to do next and [`Group::apply`]
//! takes every answer and every piece of news (the group's list and watch, a write's result
//! with its send instant, the coordinator's tenure from the group's ordinary Lease, a release,
//! shutdown) and returns what changed for the world ([`ShardTransition`]s). No I/O, no clock:
//! `now` on the election clock and the wall-clock time to write are passed in.
//!
//! The store layout (all `coordination.k8s.io/v1` Leases labelled `leaderd.io/group=<group>`):
//! one member Lease per replica, written only by that replica (and once by the coordinator when
//! it evicts a dead one); one assignment Lease, written only by the coordinator, who is the
//! holder of the group's ordinary Lease `<group>`. The rules (numbered as in `docs/design.md`):
//!
//! - S1. A claim is listed before it is valid: a replica owns shard `s` at epoch `e` only while
//!   `s: e` is in the member record of its last successful write, and only until that write's
//!   send instant + renew deadline (rule 2 of the single lease, per shard).
//! - S2. A replica lists `s` anew only when the assignment gives `s` to its (identity,
//!   incarnation) at an epoch above every epoch of `s` it has seen in a member record, and every
//!   other member Lease of the group is *settled for `s`*: it decodes, and either is out
//!   (evicted, or leaving with nothing listed) or has acknowledged this assignment's uid at a
//!   generation at least `since[s]` and lists no claim of `s`. Every roster member of the
//!   assignment must have a member Lease, and no member Lease may have vanished within a lease
//!   duration.
//! - S3. Stepping down comes first: a replica stops owning a shard the assignment no longer
//!   gives it (or when it leaves) at once, in the published state, and only then writes its
//!   record without the shard and with the new acknowledgement.
//! - S4. Only an assignment that decodes, has this replica's shard count, and is not behind an
//!   acknowledgement seen for its uid is acted on; anything else changes nothing (claims held
//!   stay, as nobody can get a shard through it).
//! - S5. Eviction: the coordinator ends a member record that stayed unchanged for
//!   `max(lease duration, its leaseDurationSeconds)` since *it* first saw that version, by a
//!   write conditioned on that version; the member's claims ended before (S1).
//! - S6. Epochs: the coordinator gives a shard to a new owner (or to a restarted or lapsed
//!   one) at `max(its epoch in the assignment, every epoch of it seen) + 1`; generations of a
//!   recreated assignment start above every acknowledgement seen.
//! - S7. A restarted process does not inherit claims: the claims and ghosts of its identity's
//!   previous process stay listed as ghosts until a lease duration after it first saw them.
//! - S8. A claim that ran out (S1's deadline passed) is not resumed: it is listed as lapsed and
//!   the coordinator gives the shard again, at a new epoch.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, SystemTime};

use serde_json::Value;
use tokio::time::Instant;

use super::plan;
use super::record::{
    assignment_lease_name, decode_assignment, decode_member, member_lease_name, Ack, Assignment,
    GroupWrite, MemberRecord, ASSIGNMENT_ANNOTATION, MEMBER_ANNOTATION,
};
use crate::election::{Params, StoreError, StoredLease, Tenure};

/// A shard group's configuration, validated by [`crate::config`].
#[derive(Clone, Debug)]
pub struct GroupParams {
    /// The group's name (`--lease-name`): the coordinator's Lease and the label value.
    pub group: String,
    /// The shard count `N`.
    pub shards: u32,
    /// Identity and timing (shared with the coordinator's election).
    pub params: Params,
    /// Leave (write a leaving record) on shutdown.
    pub release_on_shutdown: bool,
}

/// Why this replica stopped owning a shard.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ShardLoss {
    /// The assignment gave it to another replica (or anew to this one).
    Moved,
    /// The renew deadline passed without a successful write (S1, S8).
    RenewDeadline,
    /// The coordinator evicted this replica's record, or another process wrote it.
    Evicted,
    /// `POST /shards/release`.
    Released,
    /// Shutdown.
    Shutdown,
}

impl ShardLoss {
    /// The label value for metrics and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ShardLoss::Moved => "moved",
            ShardLoss::RenewDeadline => "renew_deadline",
            ShardLoss::Evicted => "evicted",
            ShardLoss::Released => "released",
            ShardLoss::Shutdown => "shutdown",
        }
    }
}

/// Why the coordinator gave a shard to a new owner or epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum MoveReason {
    /// Balance: a join, a graceful leave, a first assignment.
    Rebalance,
    /// Its owner's record was evicted, vanished or expired.
    MemberLost,
    /// Its owner restarted (same identity, new incarnation).
    Restart,
    /// Its owner's claim ran out (S8).
    Lapsed,
}

impl MoveReason {
    /// The label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            MoveReason::Rebalance => "rebalance",
            MoveReason::MemberLost => "member_lost",
            MoveReason::Restart => "restart",
            MoveReason::Lapsed => "lapsed",
        }
    }
}

/// What changed for the world.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShardTransition {
    /// This replica owns `shard` from now on (its listing was written).
    Acquired {
        /// The shard.
        shard: u32,
        /// Its fencing epoch.
        epoch: i64,
    },
    /// This replica stopped owning `shard`.
    Lost {
        /// The shard.
        shard: u32,
        /// The epoch it owned it at.
        epoch: i64,
        /// Why.
        why: ShardLoss,
    },
    /// As coordinator, this replica wrote an assignment that moved shards.
    Moved {
        /// Shards given to a new owner or epoch, by reason.
        moves: BTreeMap<MoveReason, usize>,
        /// The generation written.
        gen: u64,
    },
    /// The group's shard count (the assignment's) differs from this replica's, or agrees again.
    Mismatch {
        /// The group's count, or `None` once it agrees again.
        group_shards: Option<u32>,
    },
    /// A `POST /shards/release` finished: `true` once the leaving record was written.
    ReleaseFinished(bool),
}

/// What a write is for (metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriteKind {
    /// The periodic renewal of this replica's record.
    Renew,
    /// A new assignment acknowledged (nothing claimed or dropped).
    Ack,
    /// New claims listed (and anything else).
    Claim,
    /// Claims dropped, or leaving.
    Release,
    /// The coordinator's assignment.
    Assignment,
    /// The coordinator ending a dead member's record.
    Evict,
}

impl WriteKind {
    /// The label value for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            WriteKind::Renew => "renew",
            WriteKind::Ack => "ack",
            WriteKind::Claim => "claim",
            WriteKind::Release => "release",
            WriteKind::Assignment => "assignment",
            WriteKind::Evict => "evict",
        }
    }
}

/// One request for the executor.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// The Lease to write (or read).
    pub name: String,
    /// What to do.
    pub op: Op,
    /// What it is for.
    pub kind: WriteKind,
}

/// The operation of a [`Request`].
#[derive(Clone, Debug, PartialEq)]
pub enum Op {
    /// POST this object.
    Create(Value),
    /// PUT this object (its resourceVersion is the precondition).
    Replace(Value),
    /// GET the Lease (this replica's own, after a conflict).
    Read,
}

/// What to do next.
#[derive(Clone, Debug, PartialEq)]
pub enum Step {
    /// Nothing until this instant (or until news arrives).
    Wait(Instant),
    /// Send this request and apply its answer.
    Send(Request),
    /// Stopped: the leaving record is written (or shutdown gave up on it).
    Stopped,
}

/// Everything the executor brings back.
#[derive(Clone, Debug)]
pub enum Input {
    /// Time passed.
    Tick,
    /// A fresh list of the group's Leases (at start and after the watch broke).
    Synced(Vec<StoredLease>),
    /// The watch saw a Lease created or modified.
    Put(StoredLease),
    /// The watch saw the Lease of this name deleted.
    Deleted(String),
    /// The answer to a request sent at `sent` (a read answers with its Lease too).
    Answer {
        /// The request.
        request: Request,
        /// When it left this process.
        sent: Instant,
        /// The Lease as written or read.
        result: Result<StoredLease, StoreError>,
    },
    /// The coordinator's tenure (this replica's tenure of the group's ordinary Lease).
    Coordinator(Option<Tenure>),
    /// `POST /shards/release`: hand every owned shard over.
    Release,
    /// Shutdown: leave (if configured) and stop.
    Stop,
}

/// One shard as this replica sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShardSeen {
    /// The owner named by the assignment (this replica while it owns the shard).
    pub owner: Option<String>,
    /// The epoch of that owner's tenure.
    pub epoch: Option<i64>,
}

/// What the machine tells the world.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupView {
    /// The group's Leases were listed at least once.
    pub ready: bool,
    /// Live members seen (identities, sorted).
    pub members: Vec<String>,
    /// Every shard, `0..N`.
    pub shards: Vec<ShardSeen>,
    /// The shards this replica owns, with their epochs (valid until `valid_until`).
    pub owned: BTreeMap<u32, i64>,
    /// The end of every claim in `owned` (S1).
    pub valid_until: Option<Instant>,
    /// The group's shard count when it differs from this replica's.
    pub mismatch: Option<u32>,
    /// This replica coordinates the group.
    pub coordinator: bool,
}

impl GroupView {
    /// The shards owned at `now`, with their epochs.
    pub fn owned_at(&self, now: Instant) -> impl Iterator<Item = (u32, i64)> + '_ {
        let valid = self.valid_until.is_some_and(|u| now < u);
        self.owned
            .iter()
            .filter(move |_| valid)
            .map(|(s, e)| (*s, *e))
    }
}

/// A group Lease as last seen.
#[derive(Clone, Debug)]
struct Seen {
    lease: StoredLease,
    /// The member record in it (decoded once), if it is a member Lease and decodes.
    rec: Option<MemberRecord>,
    /// The assignment in it (decoded once), if it is the assignment Lease and decodes.
    assigned: Option<Assignment>,
    /// When this replica first saw this resourceVersion (rule 1: observed time).
    since: Instant,
}

/// The machine. See the module's rules.
#[derive(Debug)]
pub struct Group {
    p: GroupParams,
    my_name: String,
    assignment_name: String,
    inc: String,
    rng: fastrand::Rng,
    spread: Duration,
    synced: bool,
    /// Every member Lease of the group by name (this replica's too).
    members: BTreeMap<String, Seen>,
    /// Member Leases seen deleted, with the instant, waited out for a lease duration.
    vanished: BTreeMap<String, (Option<(String, String)>, Instant)>,
    assignment: Option<Seen>,
    /// Recently seen resourceVersions per Lease name, so a late event does not roll back.
    recent: BTreeMap<String, VecDeque<String>>,
    /// Highest epoch of each shard seen in any member record (S2, S6).
    claimed_hi: Vec<i64>,
    /// Highest epoch of each shard seen in any assignment (S6).
    assigned_hi: Vec<i64>,
    /// Highest epoch of any shard seen anywhere (also in member records' `hi`), S6.
    floor_hi: i64,
    /// Highest generation seen acknowledged or assigned, per assignment uid (S4, S6).
    gen_hi: BTreeMap<String, u64>,
    /// This replica's record as last written successfully (None: not joined).
    written: Option<MemberRecord>,
    /// The send instant of that write.
    sent: Option<Instant>,
    /// Owned shards (listed in `written`, not dropped since).
    held: BTreeMap<u32, i64>,
    /// Shards dropped while a write was in flight.
    dropped_in_flight: BTreeSet<u32>,
    /// The claims of the write in flight.
    in_flight: Option<BTreeMap<u32, i64>>,
    ghosts: BTreeMap<u32, i64>,
    ghosts_until: Option<Instant>,
    /// Do not join before this instant (own Lease held garbage).
    join_after: Option<Instant>,
    lapsed: BTreeMap<u32, i64>,
    ack: Option<Ack>,
    /// Leaving after `POST /shards/release`, until this instant.
    released_until: Option<Instant>,
    release_pending: bool,
    stopping: bool,
    stopped: bool,
    coordinator: Option<Tenure>,
    member_backoff: Option<Instant>,
    coord_backoff: Option<Instant>,
    read_own: bool,
    mismatch: Option<u32>,
    pending_moves: Option<(BTreeMap<MoveReason, usize>, u64)>,
    /// Roster member Leases whose absence was already waited out.
    absent_done: BTreeSet<String>,
}

impl Group {
    /// A replica that knows nothing yet. `seed` drives the incarnation, the back-off jitter
    /// and the takeover spread.
    pub fn new(p: GroupParams, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let spread = p.params.takeover_spread().mul_f64(rng.f64());
        let n = p.shards as usize;
        Group {
            my_name: member_lease_name(&p.group, &p.params.identity),
            assignment_name: assignment_lease_name(&p.group),
            inc: format!("{:016x}", rng.u64(..)),
            rng,
            spread,
            synced: false,
            members: BTreeMap::new(),
            vanished: BTreeMap::new(),
            assignment: None,
            recent: BTreeMap::new(),
            claimed_hi: vec![0; n],
            assigned_hi: vec![0; n],
            floor_hi: 0,
            gen_hi: BTreeMap::new(),
            written: None,
            sent: None,
            held: BTreeMap::new(),
            dropped_in_flight: BTreeSet::new(),
            in_flight: None,
            ghosts: BTreeMap::new(),
            ghosts_until: None,
            join_after: None,
            lapsed: BTreeMap::new(),
            ack: None,
            released_until: None,
            release_pending: false,
            stopping: false,
            stopped: false,
            coordinator: None,
            member_backoff: None,
            coord_backoff: None,
            read_own: false,
            mismatch: None,
            pending_moves: None,
            absent_done: BTreeSet::new(),
            p,
        }
    }

    /// The name of this replica's member Lease.
    pub fn member_name(&self) -> &str {
        &self.my_name
    }

    /// The name of the group's assignment Lease.
    pub fn assignment_name(&self) -> &str {
        &self.assignment_name
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> &str {
        &self.inc
    }

    /// The parameters.
    pub fn params(&self) -> &GroupParams {
        &self.p
    }

    /// When the executor must apply [`Input::Tick`] even while a request is in flight: the end
    /// of the claims.
    pub fn deadline(&self) -> Option<Instant> {
        (!self.held.is_empty())
            .then(|| self.claim_deadline())
            .flatten()
    }

    fn claim_deadline(&self) -> Option<Instant> {
        self.sent.map(|s| s + self.p.params.renew_deadline)
    }

    fn d(&self) -> Duration {
        self.p.params.lease_duration
    }

    /// What the world may know.
    pub fn view(&self) -> GroupView {
        let n = self.p.shards as usize;
        let mut shards = vec![ShardSeen::default(); n];
        if let Some(a) = self.valid_assignment() {
            for (s, seen) in shards.iter_mut().enumerate() {
                if let Some((id, _)) = a.owner_of(s as u32) {
                    seen.owner = Some(id.clone());
                    seen.epoch = Some(a.epoch[s]);
                }
            }
        }
        for (s, e) in &self.held {
            shards[*s as usize] = ShardSeen {
                owner: Some(self.p.params.identity.clone()),
                epoch: Some(*e),
            };
        }
        let mut members: Vec<String> = self
            .members
            .values()
            .filter_map(|m| m.rec.clone())
            .filter(|r| !r.is_out() && !r.leaving)
            .map(|r| r.identity)
            .collect();
        members.sort();
        members.dedup();
        GroupView {
            ready: self.synced,
            members,
            shards,
            owned: self.held.clone(),
            valid_until: self.claim_deadline().filter(|_| !self.held.is_empty()),
            mismatch: self.mismatch,
            coordinator: self.coordinator.is_some(),
        }
    }

    // ----- apply -----

    /// Take one input; returns what changed for the world.
    pub fn apply(&mut self, input: Input, now: Instant) -> Vec<ShardTransition> {
        let mut out = Vec::new();
        match input {
            Input::Tick => {}
            Input::Synced(items) => {
                let names: BTreeSet<String> = items.iter().filter_map(lease_name).collect();
                let gone: Vec<String> = self
                    .members
                    .keys()
                    .filter(|k| !names.contains(*k))
                    .cloned()
                    .collect();
                for name in gone {
                    self.forget(&name, now);
                }
                if self.assignment.is_some() && !names.contains(&self.assignment_name) {
                    self.assignment = None;
                }
                for lease in items {
                    self.observe(lease, now);
                }
                self.synced = true;
            }
            Input::Put(lease) => self.observe(lease, now),
            Input::Deleted(name) => self.forget(&name, now),
            Input::Answer {
                request,
                sent,
                result,
            } => self.answer(request, sent, result, now, &mut out),
            Input::Coordinator(t) => self.coordinator = t,
            Input::Release => {
                if self.held.is_empty() && self.written.as_ref().is_some_and(|w| w.leaving) {
                    out.push(ShardTransition::ReleaseFinished(true));
                } else {
                    self.released_until = Some(now + self.d());
                    self.release_pending = true;
                }
            }
            Input::Stop => self.stopping = true,
        }
        self.reconcile(now, &mut out);
        out
    }

    fn remember(&mut self, name: &str, rv: &str) -> bool {
        let recent = self.recent.entry(name.to_owned()).or_default();
        if recent.iter().any(|r| r == rv) {
            return false;
        }
        recent.push_back(rv.to_owned());
        if recent.len() > 16 {
            recent.pop_front();
        }
        true
    }

    fn observe(&mut self, lease: StoredLease, now: Instant) {
        let Some(name) = lease_name(&lease) else {
            return;
        };
        if !self.remember(&name, &lease.resource_version) {
            return;
        }
        let is_assignment = name == self.assignment_name;
        let seen = Seen {
            rec: (!is_assignment).then(|| decode_member(&lease)).flatten(),
            assigned: is_assignment.then(|| decode_assignment(&lease)).flatten(),
            lease,
            since: now,
        };
        if is_assignment {
            if let Some(a) = &seen.assigned {
                for (s, e) in a.epoch.iter().enumerate() {
                    self.floor_hi = self.floor_hi.max(*e);
                    if let Some(hi) = self.assigned_hi.get_mut(s) {
                        *hi = (*hi).max(*e);
                    }
                }
                if let Some(uid) = &seen.lease.uid {
                    let g = self.gen_hi.entry(uid.clone()).or_default();
                    *g = (*g).max(a.gen);
                }
            }
            self.assignment = Some(seen);
            return;
        }
        if let Some(r) = &seen.rec {
            self.floor_hi = self.floor_hi.max(r.hi);
            for (s, e) in r.epochs() {
                self.floor_hi = self.floor_hi.max(e);
                if let Some(hi) = self.claimed_hi.get_mut(s as usize) {
                    *hi = (*hi).max(e);
                }
            }
            if let Some(ack) = &r.ack {
                let g = self.gen_hi.entry(ack.uid.clone()).or_default();
                *g = (*g).max(ack.gen);
            }
        }
        self.vanished.remove(&name);
        self.members.insert(name, seen);
    }

    fn forget(&mut self, name: &str, now: Instant) {
        if name == self.assignment_name {
            self.assignment = None;
            return;
        }
        if let Some(m) = self.members.remove(name) {
            let who = m.rec.map(|r| (r.identity, r.inc));
            self.vanished.insert(name.to_owned(), (who, now));
        }
        self.recent.remove(name);
    }

    fn answer(
        &mut self,
        request: Request,
        sent: Instant,
        result: Result<StoredLease, StoreError>,
        now: Instant,
        out: &mut Vec<ShardTransition>,
    ) {
        let mine = request.name == self.my_name;
        if mine {
            let claims = self.in_flight.take();
            let dropped = std::mem::take(&mut self.dropped_in_flight);
            match (&request.op, result) {
                (Op::Read, Ok(lease)) => {
                    self.read_own = false;
                    self.observe(lease, now);
                }
                (Op::Read, Err(StoreError::NotFound)) => {
                    self.read_own = false;
                    self.forget(&self.my_name.clone(), now);
                }
                (Op::Read, Err(_)) => self.member_backoff = Some(now + self.backoff()),
                (_, Ok(lease)) => {
                    let record = decode_member(&lease);
                    self.observe(lease, now);
                    let Some(record) = record else {
                        return;
                    };
                    let claims = claims.unwrap_or_default();
                    // S1: what the write listed is owned until sent + R; nothing dropped or
                    // lapsed since is taken back.
                    self.held.retain(|s, _| claims.contains_key(s));
                    for (s, e) in &claims {
                        if self.held.contains_key(s)
                            || dropped.contains(s)
                            || self.lapsed.contains_key(s)
                        {
                            continue;
                        }
                        self.held.insert(*s, *e);
                        out.push(ShardTransition::Acquired {
                            shard: *s,
                            epoch: *e,
                        });
                    }
                    if record.leaving && self.release_pending {
                        self.release_pending = false;
                        out.push(ShardTransition::ReleaseFinished(true));
                    }
                    self.written = Some(record);
                    self.sent = Some(sent);
                    self.member_backoff = None;
                }
                (_, Err(StoreError::Conflict | StoreError::AlreadyExists)) => {
                    self.read_own = true;
                }
                (_, Err(e)) => {
                    let wait = e.retry_after().unwrap_or_else(|| self.backoff());
                    self.member_backoff = match e {
                        StoreError::TimedOut { .. } => None,
                        _ => Some(now + wait),
                    };
                    // The app asked for a release: it has stepped down already (S3); say the
                    // leaving record is not written (the next attempt still writes it).
                    if std::mem::take(&mut self.release_pending) {
                        out.push(ShardTransition::ReleaseFinished(false));
                    }
                }
            }
            return;
        }
        match result {
            Ok(lease) => {
                self.observe(lease, now);
                self.coord_backoff = None;
                if request.kind == WriteKind::Assignment {
                    if let Some((moves, gen)) = self.pending_moves.take() {
                        if !moves.is_empty() {
                            out.push(ShardTransition::Moved { moves, gen });
                        }
                    }
                }
            }
            Err(e) => {
                let wait = e.retry_after().unwrap_or_else(|| self.backoff());
                self.coord_backoff = Some(now + wait);
            }
        }
    }

    fn backoff(&mut self) -> Duration {
        (self.p.params.retry_period / 2)
            .mul_f64(1.0 + self.rng.f64() * crate::election::state::JITTER)
    }

    fn drop_shards(
        &mut self,
        keep: impl Fn(u32, i64) -> bool,
        why: ShardLoss,
        out: &mut Vec<ShardTransition>,
    ) {
        let gone: Vec<(u32, i64)> = self
            .held
            .iter()
            .filter(|(s, e)| !keep(**s, **e))
            .map(|(s, e)| (*s, *e))
            .collect();
        for (s, e) in gone {
            self.held.remove(&s);
            if self.in_flight.is_some() {
                self.dropped_in_flight.insert(s);
            }
            out.push(ShardTransition::Lost {
                shard: s,
                epoch: e,
                why,
            });
            if why == ShardLoss::RenewDeadline {
                self.lapsed.insert(s, e);
            }
        }
    }

    /// Bring the owned shards in line with the rules after any input (S1, S3, S7, S8).
    fn reconcile(&mut self, now: Instant, out: &mut Vec<ShardTransition>) {
        // S8: a claim past its deadline lapses.
        if self.claim_deadline().is_some_and(|d| now >= d) {
            self.drop_shards(|_, _| false, ShardLoss::RenewDeadline, out);
        }
        // This replica's own record, as the store has it.
        let own = self.members.get(&self.my_name).map(|m| m.rec.clone());
        if let Some(w) = &self.written {
            let taken = match &own {
                Some(Some(r)) => r.inc != w.inc || r.evicted_by.is_some(),
                Some(None) => true,
                None => false,
            };
            if taken {
                self.drop_shards(|_, _| false, ShardLoss::Evicted, out);
                self.written = None;
                self.sent = None;
                self.lapsed.clear();
                self.inc = format!("{:016x}", self.rng.u64(..));
                // The eviction proves every claim the record listed ended, ghosts too.
                self.ghosts.clear();
                self.ghosts_until = None;
            }
        }
        if self.written.is_none() && self.synced {
            // S7: what the latest record of this identity's previous process lists (its claims,
            // and the ghosts it still waits out) is waited out until a lease duration after
            // this replica first saw that version. What a newer version no longer lists, its
            // writer stepped down from or waited out; an eviction (or a leaving record with
            // nothing listed) proves everything ended.
            let (mut ghosts, mut until, mut join_after) = (BTreeMap::new(), None, None);
            if let Some(m) = self.members.get(&self.my_name) {
                let wait = m.since + self.d().max(lease_duration(&m.lease)) + self.spread;
                match &m.rec {
                    Some(r) if r.is_out() || r.inc == self.inc => {}
                    Some(r) => {
                        if now < wait && (!r.claims.is_empty() || !r.ghosts.is_empty()) {
                            ghosts.extend(r.claims.iter().chain(&r.ghosts));
                            until = Some(wait);
                        }
                    }
                    None => join_after = Some(wait).filter(|w| now < *w),
                }
            }
            self.ghosts = ghosts;
            self.ghosts_until = until;
            self.join_after = join_after;
        }
        if self.ghosts_until.is_some_and(|u| now >= u) {
            self.ghosts.clear();
            self.ghosts_until = None;
        }
        if self.join_after.is_some_and(|u| now >= u) {
            self.join_after = None;
        }
        // Releases and shutdown: step down first (S3).
        if self.released_until.is_some_and(|u| now >= u) && !self.stopping {
            self.released_until = None;
            if self.held.is_empty() {
                self.inc = format!("{:016x}", self.rng.u64(..));
                self.lapsed.clear();
            }
        }
        if self.stopping {
            self.drop_shards(|_, _| false, ShardLoss::Shutdown, out);
        } else if self.released_until.is_some() {
            self.drop_shards(|_, _| false, ShardLoss::Released, out);
        }
        let d = self.d();
        let done: Vec<String> = self
            .vanished
            .iter()
            .filter(|(_, (_, t))| now >= *t + d)
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            self.vanished.remove(&k);
            self.absent_done.insert(k);
        }
        self.absent_done.retain(|k| !self.members.contains_key(k));
        // Roster members with no Lease that this replica never saw deleted: waited out from
        // now, like a vanished one (a new coordinator, a restarted replica).
        if self.synced {
            if let Some(a) = self.valid_assignment() {
                for w in &a.members {
                    let name = member_lease_name(&self.p.group, &w.0);
                    if w.0 != self.p.params.identity
                        && !self.members.contains_key(&name)
                        && !self.vanished.contains_key(&name)
                        && !self.absent_done.contains(&name)
                    {
                        self.vanished.insert(name, (Some(w.clone()), now));
                    }
                }
            }
        }
        // S3: shards the assignment no longer gives this replica at that epoch.
        let mismatch = self.group_shards().filter(|n| *n != self.p.shards);
        if mismatch != self.mismatch {
            self.mismatch = mismatch;
            out.push(ShardTransition::Mismatch {
                group_shards: mismatch,
            });
        }
        // The acknowledgement covers an assignment of another shard count too: this replica
        // reads it and claims nothing under it, which others must be able to tell (S2).
        if let Some((a, uid)) = self.readable_assignment() {
            self.ack = Some(Ack { uid, gen: a.gen });
        }
        if let Some(a) = self.valid_assignment() {
            let me = (self.p.params.identity.clone(), self.inc.clone());
            let keep =
                |s: u32, e: i64| a.owner_of(s) == Some(&me) && a.epoch.get(s as usize) == Some(&e);
            self.drop_shards(keep, ShardLoss::Moved, out);
            self.lapsed.retain(|s, e| keep(*s, *e));
        } else if self.mismatch.is_some() {
            self.drop_shards(|_, _| false, ShardLoss::Moved, out);
        }
    }

    fn assignment_uid(&self) -> Option<String> {
        self.assignment.as_ref().and_then(|a| a.lease.uid.clone())
    }

    /// The shard count of the group's assignment, when it decodes.
    fn group_shards(&self) -> Option<u32> {
        self.assignment
            .as_ref()
            .and_then(|a| a.assigned.as_ref())
            .map(|a| a.n)
    }

    /// S4: the assignment and its uid if it decodes and is not behind an acknowledgement seen
    /// (whatever its shard count).
    fn readable_assignment(&self) -> Option<(&Assignment, String)> {
        let seen = self.assignment.as_ref()?;
        let uid = seen.lease.uid.as_ref()?;
        let a = seen.assigned.as_ref()?;
        if self.gen_hi.get(uid).is_some_and(|g| *g > a.gen) {
            return None;
        }
        Some((a, uid.clone()))
    }

    /// S4: the assignment, if it may be acted on (readable, and of this replica's count).
    fn valid_assignment(&self) -> Option<Assignment> {
        self.readable_assignment()
            .filter(|(a, _)| a.n == self.p.shards)
            .map(|(a, _)| a.clone())
    }

    // ----- decide -----

    /// What to do next.
    pub fn decide(&mut self, now: Instant, wall: SystemTime) -> Step {
        if self.stopped {
            return Step::Stopped;
        }
        if !self.synced {
            return Step::Wait(now + self.p.params.retry_period);
        }
        if let Some(req) = self.own_write(now, wall) {
            return Step::Send(req);
        }
        if self.stopping {
            let left =
                self.written.as_ref().is_none_or(|w| w.leaving) || !self.p.release_on_shutdown;
            if left || self.member_backoff.is_some() {
                // Leaving was written (or not wanted); a failed leaving write is not retried:
                // the record runs out on its own (S5).
                self.stopped = true;
                return Step::Stopped;
            }
        }
        if let Some(req) = self.coordinate(now, wall) {
            return Step::Send(req);
        }
        Step::Wait(self.next_due(now))
    }

    fn next_due(&self, now: Instant) -> Instant {
        let p = &self.p.params;
        let mut due = vec![now + p.retry_period * 5];
        if let Some(s) = self.sent {
            due.push(s + p.renew_interval());
        }
        due.extend(self.deadline());
        due.extend(self.ghosts_until);
        due.extend(self.join_after);
        due.extend(self.released_until);
        due.extend(self.member_backoff);
        due.extend(self.coord_backoff);
        let d = self.d();
        due.extend(self.vanished.values().map(|(_, t)| *t + d));
        if self.is_coordinator(now) {
            due.extend(
                self.members
                    .iter()
                    .filter(|(k, _)| **k != self.my_name)
                    .map(|(_, m)| m.since + d.max(lease_duration(&m.lease)) + self.spread),
            );
            if let Some(t) = self.coordinator {
                due.push(t.valid_until);
            }
        }
        due.into_iter()
            .filter(|t| *t > now)
            .min()
            .unwrap_or(now + p.retry_period)
    }

    fn is_coordinator(&self, now: Instant) -> bool {
        self.coordinator.is_some_and(|t| t.is_valid_at(now))
    }

    /// S2: whether shard `s` may be listed anew under `a`.
    fn claimable(&self, s: u32, a: &Assignment, uid: &str) -> bool {
        let i = s as usize;
        let me = (self.p.params.identity.clone(), self.inc.clone());
        if a.owner_of(s) != Some(&me)
            || a.epoch[i] <= self.claimed_hi[i]
            || self.ghosts.contains_key(&s)
            || self.lapsed.contains_key(&s)
            || !self.vanished.is_empty()
        {
            return false;
        }
        let roster_present = a.members.iter().all(|(id, _)| {
            *id == self.p.params.identity
                || self
                    .members
                    .contains_key(&member_lease_name(&self.p.group, id))
        });
        roster_present
            && self
                .members
                .iter()
                .filter(|(k, _)| **k != self.my_name)
                .all(|(_, m)| match &m.rec {
                    None => false,
                    Some(r) if r.is_out() => true,
                    Some(r) => {
                        !r.lists(s)
                            && r.ack
                                .as_ref()
                                .is_some_and(|k| k.uid == uid && k.gen >= a.since[i])
                    }
                })
    }

    fn own_write(&mut self, now: Instant, wall: SystemTime) -> Option<Request> {
        if self.member_backoff.is_some_and(|b| now < b) || self.join_after.is_some() {
            return None;
        }
        if self.read_own {
            return Some(Request {
                name: self.my_name.clone(),
                op: Op::Read,
                kind: WriteKind::Renew,
            });
        }
        let leaving = self.stopping || self.released_until.is_some();
        if self.stopping && (!self.p.release_on_shutdown || self.written.is_none()) {
            return None;
        }
        let mut claims = self.held.clone();
        if !leaving && self.written.is_some() {
            if let (Some(a), Some(uid)) = (self.valid_assignment(), self.assignment_uid()) {
                for s in 0..self.p.shards {
                    if !claims.contains_key(&s) && self.claimable(s, &a, &uid) {
                        claims.insert(s, a.epoch[s as usize]);
                    }
                }
            }
        }
        let record = MemberRecord {
            identity: self.p.params.identity.clone(),
            inc: self.inc.clone(),
            n: self.p.shards,
            ack: self.ack.clone(),
            claims: claims.clone(),
            ghosts: self.ghosts.clone(),
            lapsed: self.lapsed.clone(),
            leaving,
            evicted_by: None,
            hi: self.floor_hi,
        };
        let kind = match &self.written {
            None => WriteKind::Claim,
            Some(w) if *w == record => {
                let due = self
                    .sent
                    .is_none_or(|s| now >= s + self.p.params.renew_interval());
                if !due {
                    return None;
                }
                WriteKind::Renew
            }
            Some(w) if claims.keys().any(|s| !w.claims.contains_key(s)) => WriteKind::Claim,
            Some(w) if w.claims.len() > claims.len() || leaving => WriteKind::Release,
            Some(_) => WriteKind::Ack,
        };
        let base = self.members.get(&self.my_name).map(|m| &m.lease);
        let holder = self.p.params.identity.as_str();
        let annotation = (MEMBER_ANNOTATION, json_of(&record));
        let request = self.write(
            &self.my_name,
            base,
            holder,
            "member",
            annotation,
            kind,
            wall,
        );
        self.in_flight = Some(claims);
        self.dropped_in_flight.clear();
        Some(request)
    }

    /// A write of the group Lease `name`: a PUT conditioned on `base`, or a POST without one.
    #[allow(clippy::too_many_arguments)]
    fn write(
        &self,
        name: &str,
        base: Option<&StoredLease>,
        holder: &str,
        role: &str,
        annotation: (&str, String),
        kind: WriteKind,
        wall: SystemTime,
    ) -> Request {
        let object = GroupWrite {
            holder,
            lease_duration_seconds: self.p.params.lease_duration_seconds(),
            now: wall,
            group: &self.p.group,
            role,
            annotation,
        }
        .object(base);
        Request {
            name: name.to_owned(),
            op: match base {
                Some(_) => Op::Replace(object),
                None => Op::Create(object),
            },
            kind,
        }
    }

    /// The coordinator's duties: evict (S5), then assign (S6).
    fn coordinate(&mut self, now: Instant, wall: SystemTime) -> Option<Request> {
        if !self.is_coordinator(now)
            || self.coord_backoff.is_some_and(|b| now < b)
            || self.written.is_none()
            || self.mismatch.is_some()
        {
            return None;
        }
        let d = self.d();
        let expired = |m: &Seen| now >= m.since + d.max(lease_duration(&m.lease)) + self.spread;
        let evict = self
            .members
            .iter()
            .filter(|(k, _)| **k != self.my_name)
            .find(|(_, m)| expired(m) && m.rec.as_ref().is_none_or(|r| r.evicted_by.is_none()));
        if let Some((name, m)) = evict {
            let old = m.rec.clone();
            let record = MemberRecord {
                identity: old.as_ref().map(|r| r.identity.clone()).unwrap_or_default(),
                inc: old
                    .as_ref()
                    .map(|r| r.inc.clone())
                    .unwrap_or_else(|| "evicted".into()),
                n: old.as_ref().map(|r| r.n).unwrap_or(self.p.shards),
                ack: old.as_ref().and_then(|r| r.ack.clone()),
                evicted_by: Some(self.p.params.identity.clone()),
                hi: old.as_ref().map_or(0, |r| r.hi).max(self.floor_hi),
                ..Default::default()
            };
            let holder = m.lease.record.holder.clone().unwrap_or_default();
            let annotation = (MEMBER_ANNOTATION, json_of(&record));
            let base = Some(&m.lease);
            return Some(self.write(
                name,
                base,
                &holder,
                "member",
                annotation,
                WriteKind::Evict,
                wall,
            ));
        }
        let (next, moves) = self.plan(now)?;
        self.pending_moves = Some((moves, next.gen));
        let base = self.assignment.as_ref().map(|a| &a.lease);
        let holder = self.p.params.identity.as_str();
        let annotation = (ASSIGNMENT_ANNOTATION, json_of(&next));
        let name = self.assignment_name.as_str();
        Some(self.write(
            name,
            base,
            holder,
            "assignment",
            annotation,
            WriteKind::Assignment,
            wall,
        ))
    }

    /// S6: the next assignment, if it differs from the current one, and its moves by reason.
    fn plan(&self, now: Instant) -> Option<(Assignment, BTreeMap<MoveReason, usize>)> {
        let n = self.p.shards as usize;
        let d = self.d();
        let cur = self.valid_assignment();
        if self.assignment.is_some() && cur.is_none() {
            // A garbage or stale assignment is replaced; one of another shard count is not.
            if self.group_shards().is_some_and(|g| g != self.p.shards) {
                return None;
            }
        }
        // Live members: decoded, same N, not out or leaving, not expired; by identity.
        let mut live: BTreeMap<String, MemberRecord> = BTreeMap::new();
        let mut leaving: BTreeSet<String> = BTreeSet::new();
        for (name, m) in &self.members {
            let Some(r) = m.rec.clone() else {
                continue;
            };
            let mine = *name == self.my_name;
            let fresh = mine || now < m.since + d.max(lease_duration(&m.lease));
            if r.leaving {
                leaving.insert(r.identity.clone());
            }
            if r.n != self.p.shards || r.is_out() || r.leaving || !fresh {
                continue;
            }
            if mine && self.written.as_ref().is_none_or(|w| w.inc != r.inc) {
                continue;
            }
            if *name != member_lease_name(&self.p.group, &r.identity) {
                continue; // a foreign record under another replica's name
            }
            live.insert(r.identity.clone(), r);
        }
        let ids: Vec<String> = live.keys().cloned().collect();
        let index: BTreeMap<&str, usize> = ids
            .iter()
            .enumerate()
            .map(|(i, s)| (s.as_str(), i))
            .collect();
        let mut current: Vec<Option<usize>> = vec![None; n];
        let mut reissue: Vec<Option<MoveReason>> = vec![None; n];
        let mut lost: Vec<bool> = vec![false; n];
        match &cur {
            Some(a) => {
                for s in 0..n {
                    let Some((id, inc)) = a.owner_of(s as u32) else {
                        continue;
                    };
                    match index.get(id.as_str()) {
                        Some(i) => {
                            current[s] = Some(*i);
                            let r = &live[id];
                            if r.inc != *inc {
                                reissue[s] = Some(MoveReason::Restart);
                            } else if r.lapsed.get(&(s as u32)) == Some(&a.epoch[s]) {
                                reissue[s] = Some(MoveReason::Lapsed);
                            }
                        }
                        None => lost[s] = !leaving.contains(id),
                    }
                }
            }
            None => {
                for (id, r) in &live {
                    for s in r.claims.keys() {
                        current[*s as usize] = Some(index[id.as_str()]);
                    }
                }
            }
        }
        let owners = plan::balance(&current, ids.len());
        // The roster: live members, and vanished ones not yet waited out.
        let mut roster: Vec<(String, String)> = ids
            .iter()
            .map(|id| (id.clone(), live[id].inc.clone()))
            .collect();
        for (who, _) in self.vanished.values() {
            if let Some(w) = who {
                if !index.contains_key(w.0.as_str()) && !roster.contains(w) {
                    roster.push(w.clone());
                }
            }
        }
        let gen_floor = self
            .assignment_uid()
            .and_then(|u| self.gen_hi.get(&u).copied())
            .unwrap_or(0)
            .max(self.gen_hi.values().copied().max().unwrap_or(0));
        let gen = cur.as_ref().map_or(0, |a| a.gen).max(gen_floor) + 1;
        let mut next = Assignment {
            n: self.p.shards,
            gen,
            members: roster,
            owner: vec![-1; n],
            epoch: vec![0; n],
            since: vec![0; n],
        };
        let mut moves: BTreeMap<MoveReason, usize> = BTreeMap::new();
        for s in 0..n {
            let prev_epoch = cur.as_ref().map_or(0, |a| a.epoch[s]);
            let Some(o) = owners[s] else {
                next.epoch[s] = prev_epoch;
                continue;
            };
            next.owner[s] = o as i32;
            let unchanged = cur.is_some() && current[s] == Some(o) && reissue[s].is_none();
            if unchanged {
                let a = cur.as_ref().expect("checked");
                next.epoch[s] = a.epoch[s];
                next.since[s] = a.since[s];
            } else {
                // A rebuilt assignment (the last one lost) starts every new tenure above the
                // highest epoch of any shard seen anywhere (S6).
                let floor = if cur.is_none() { self.floor_hi } else { 0 };
                let hi = prev_epoch
                    .max(self.claimed_hi[s])
                    .max(self.assigned_hi[s])
                    .max(floor);
                next.epoch[s] = hi + 1;
                next.since[s] = gen;
                let why = reissue[s].unwrap_or(if lost[s] {
                    MoveReason::MemberLost
                } else {
                    MoveReason::Rebalance
                });
                *moves.entry(why).or_default() += 1;
            }
        }
        if let Some(a) = &cur {
            let same = a.members == next.members
                && a.owner == next.owner
                && a.epoch == next.epoch
                && a.since == next.since;
            if same {
                return None;
            }
        }
        if next
            .epoch
            .iter()
            .any(|e| *e > crate::election::state::MAX_EPOCH)
        {
            return None;
        }
        Some((next, moves))
    }
}

/// A record as the JSON of its annotation.
fn json_of(record: &impl serde::Serialize) -> String {
    serde_json::to_string(record).unwrap_or_default()
}

fn lease_name(lease: &StoredLease) -> Option<String> {
    lease
        .raw
        .get("metadata")?
        .get("name")?
        .as_str()
        .map(str::to_owned)
}

fn lease_duration(lease: &StoredLease) -> Duration {
    Duration::from_secs(lease.record.lease_duration_seconds.unwrap_or(0).max(0) as u64)
}

#[cfg(test)]
mod model;

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn group() -> Group {
        Group::new(
            GroupParams {
                group: "g".into(),
                shards: 4,
                params: Params {
                    identity: "a".into(),
                    lease_duration: Duration::from_secs(3),
                    renew_deadline: Duration::from_secs(2),
                    retry_period: Duration::from_millis(250),
                    priority: 0,
                },
                release_on_shutdown: true,
            },
            1,
        )
    }

    /// The store's answer to a write: the object with a name, a resourceVersion and a uid.
    fn stored(req: &Request, rv: u64) -> StoredLease {
        let (Op::Create(v) | Op::Replace(v)) = &req.op else {
            panic!("not a write: {req:?}");
        };
        let mut v = v.clone();
        v["metadata"]["name"] = json!(req.name);
        v["metadata"]["resourceVersion"] = json!(rv.to_string());
        v["metadata"]["uid"] = json!("u");
        StoredLease::from_json(v).unwrap()
    }

    fn send(g: &mut Group, now: Instant) -> Request {
        match g.decide(now, SystemTime::now()) {
            Step::Send(r) => r,
            other => panic!("expected a request, got {other:?}"),
        }
    }

    #[test]
    fn a_release_whose_leaving_record_fails_is_answered_not_left_hanging() {
        let mut g = group();
        let now = Instant::now();
        g.apply(Input::Synced(Vec::new()), now);
        let join = send(&mut g, now);
        assert!(
            matches!(join.op, Op::Create(_)),
            "joins by creating its record"
        );
        g.apply(
            Input::Answer {
                result: Ok(stored(&join, 1)),
                request: join,
                sent: now,
            },
            now,
        );
        assert!(g.apply(Input::Release, now).is_empty());
        let leave = send(&mut g, now);
        assert_eq!(leave.kind, WriteKind::Release);
        let out = g.apply(
            Input::Answer {
                request: leave,
                sent: now,
                result: Err(StoreError::unavailable("503")),
            },
            now,
        );
        assert_eq!(out, vec![ShardTransition::ReleaseFinished(false)]);
        // Retried after the back-off, and answered once written.
        let later = now + Duration::from_millis(200);
        let retry = send(&mut g, later);
        let out = g.apply(
            Input::Answer {
                result: Ok(stored(&retry, 2)),
                request: retry,
                sent: later,
            },
            later,
        );
        assert!(out.is_empty(), "{out:?}: nobody is waiting any more");
        assert!(g.written.as_ref().unwrap().leaving);
    }
}

//! Property tests of what comes from outside: the Lease JSON that leaderd decodes (anything a
//! writer with RBAC on the Lease can put there), and the real state machine ([`Machine`]'s
//! `decide` and `apply`, nothing copied) driven by arbitrary interleavings of requests,
//! answers, lost answers, late watch events, foreign writes, deletions, releases, shutdowns,
//! restarts and time.
//!
//! The model of the second part: an in-memory, linearizable Lease store (with the real
//! apiserver's preconditions: resourceVersion, and on a PUT the uid the body carries, so a PUT
//! to a deleted Lease is refused unless its body has no uid); candidates whose
//! requests leave at one instant (`sent`), are applied by the store at a later one (its commit,
//! with the resourceVersion precondition), and are answered — or not (a lost answer: the write
//! may have been applied; the machine is told it timed out) — later still; one clock for all
//! (drift is the chaos runner's part). The model only plays the store and the network: every
//! answer goes to `Machine::apply` exactly as the elector would bring it. After every
//! operation: at most one candidate claims leadership (`now < valid_until`), every step
//! `decide` returns is allowed by the rules, and (when no foreign writer deleted the Lease or
//! lowered its epoch) every new tenure's epoch exceeds every earlier one.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use serde_json::{json, Map, Value};
use tokio::time::Instant;

use super::super::record::{
    new_lease_object, LeaseRecord, StoredLease, CANDIDATE_ANNOTATION,
    CANDIDATE_PRIORITY_ANNOTATION, HOLDER_PRIORITY_ANNOTATION, RELEASED_BY_ANNOTATION,
    RELEASE_TO_ANNOTATION,
};
use super::{Known, Machine, Outcome, Params, Purpose, Request, Step, Transition, MAX_EPOCH};
use crate::election::store::{StoreError, WatchEvent};

// ---------------------------------------------------------------------------------------------
// Record decoding

/// Keys that mean something to leaderd, mixed with others, so that generated objects hit the
/// decoder's paths.
const KEYS: &[&str] = &[
    "metadata",
    "spec",
    "resourceVersion",
    "uid",
    "annotations",
    "labels",
    "holderIdentity",
    "leaseDurationSeconds",
    "acquireTime",
    "renewTime",
    "leaseTransitions",
    RELEASED_BY_ANNOTATION,
    RELEASE_TO_ANNOTATION,
    HOLDER_PRIORITY_ANNOTATION,
    CANDIDATE_ANNOTATION,
    CANDIDATE_PRIORITY_ANNOTATION,
    "managedFields",
    "",
    "x",
];

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        prop_oneof![
            Just(i64::from(i32::MAX)),
            Just(i64::from(i32::MAX) + 1),
            Just(-1i64),
            Just(0i64),
            0i64..10
        ]
        .prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::from),
        prop_oneof![
            Just("2026-11-23T09:00:00.000000Z"),
            Just("bad time"),
            Just(" 7 "),
            Just("-3"),
            Just("9223372036854775808"),
        ]
        .prop_map(Value::from),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((prop::sample::select(KEYS), inner), 0..6).prop_map(|kv| {
                Value::Object(
                    kv.into_iter()
                        .map(|(k, v)| (k.to_string(), v))
                        .collect::<Map<_, _>>(),
                )
            }),
        ]
    })
}

/// A Lease-shaped object with arbitrary content where leaderd looks.
fn lease_like() -> impl Strategy<Value = Value> {
    (
        json_value(),
        json_value(),
        json_value(),
        prop::option::of(prop_oneof![".{0,6}".prop_map(Value::from), scalar()]),
    )
        .prop_map(|(spec, annotations, extra, rv)| {
            let mut meta = Map::new();
            if let Some(rv) = rv {
                meta.insert("resourceVersion".into(), rv);
            }
            meta.insert("annotations".into(), annotations);
            meta.insert("uid".into(), extra.clone());
            json!({"metadata": meta, "spec": spec, "status": extra})
        })
}

fn text() -> impl Strategy<Value = String> {
    "[a-z0-9-]{1,12}"
}

/// A record with values leaderd itself could write.
fn record() -> impl Strategy<Value = LeaseRecord> {
    (
        prop::option::of(text()),
        prop::option::of(1i64..100_000),
        prop::option::of(text()),
        prop::option::of(text()),
        prop::option::of(0i64..=MAX_EPOCH),
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(any::<i64>()),
            prop::option::of((any::<i64>(), text())),
        ),
    )
        .prop_map(
            |(holder, d, a, r, t, (released_by, release_to, holder_priority, candidate))| {
                LeaseRecord {
                    holder,
                    lease_duration_seconds: d,
                    acquire_time: a,
                    renew_time: r,
                    transitions: t,
                    released_by,
                    release_to,
                    holder_priority,
                    candidate,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// Any JSON decodes without a panic: an object with a non-empty string resourceVersion is
    /// usable, and then every decoded field is within its range; anything else is `Malformed`.
    #[test]
    fn any_json_decodes_leniently(v in prop_oneof![json_value(), lease_like()]) {
        let usable = v.get("metadata")
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .is_some_and(|s| !s.is_empty());
        match StoredLease::from_json(v.clone()) {
            Ok(l) => {
                prop_assert!(usable);
                let r = &l.record;
                prop_assert!(r.holder.as_ref().is_none_or(|h| !h.is_empty()));
                prop_assert!(r.lease_duration_seconds.is_none_or(|d| d > 0));
                prop_assert!(r.transitions.is_none_or(|t| t >= 0));
                prop_assert!(r.candidate.as_ref().is_none_or(|c| !c.1.is_empty()));
                // Writing back over it never panics and keeps the precondition.
                let out = l.replaced_with(&LeaseRecord::default());
                prop_assert_eq!(&out["metadata"]["resourceVersion"], &v["metadata"]["resourceVersion"]);
                prop_assert!(out["metadata"].get("managedFields").is_none());
                // And the decision on it never panics either.
                let mut m = Machine::new(params(0, 0), 0);
                let now = Instant::now();
                m.apply(Outcome::Read(Ok(l)), now);
                let _ = m.decide(now + Duration::from_secs(5), SystemTime::now());
            }
            Err(_) => prop_assert!(!usable),
        }
    }

    /// Any spec and annotations decode without a panic (and `from_spec` agrees with itself).
    #[test]
    fn any_spec_decodes(spec in json_value(), ann in json_value()) {
        let a = LeaseRecord::from_spec(Some(&spec), Some(&ann));
        prop_assert_eq!(&a, &LeaseRecord::from_spec(Some(&spec), Some(&ann)));
        // Only a held record with a renewTime is recognised as the same claim (rule 9).
        prop_assert_eq!(a.same_claim(&a), a.holder.is_some() && a.renew_time.is_some());
    }

    /// What leaderd writes, it reads back: over any existing object (keeping its foreign
    /// metadata), and as a new object.
    #[test]
    fn written_records_decode_to_themselves(r in record(), base in lease_like()) {
        let mut base = base;
        base["metadata"]["resourceVersion"] = json!("17");
        let Ok(stored) = StoredLease::from_json(base) else {
            return Err(TestCaseError::fail("base must decode"));
        };
        let mut out = stored.replaced_with(&r);
        prop_assert_eq!(&out["metadata"]["resourceVersion"], "17");
        out["metadata"]["resourceVersion"] = json!("18");
        let back = StoredLease::from_json(out).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&back.record, &r);
        let mut fresh = new_lease_object(&r);
        fresh["metadata"]["resourceVersion"] = json!("1");
        let back = StoredLease::from_json(fresh).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(back.record, r);
    }
}

// ---------------------------------------------------------------------------------------------
// The state machine under arbitrary interleavings

const D: Duration = Duration::from_secs(3);
const R: Duration = Duration::from_secs(2);
const P: Duration = Duration::from_millis(250);
const CANDIDATES: usize = 3;

fn params(i: usize, priority: i64) -> Params {
    Params {
        identity: format!("c{i}"),
        lease_duration: D,
        renew_deadline: R,
        retry_period: P,
        priority,
    }
}

#[derive(Clone, Debug)]
enum Foreign {
    /// Another holder, with the epoch moved by `delta` and this duration.
    Ghost {
        delta: i64,
        duration: i64,
    },
    /// No holder and no release marker.
    EmptyNoMarker,
    /// The current object with only its annotations changed (which: 0..4).
    Annotations(u8),
    /// Garbage in every field.
    Garbage,
    /// The holder emptied and leaderd's release marker added, naming someone else.
    Forged,
    Delete,
}

#[derive(Clone, Debug)]
enum Op {
    /// Candidate decides and sends its request (if the step is one).
    Begin(usize),
    /// The store applies candidate's pending request now.
    Commit(usize),
    /// The candidate receives the answer (`false`: it is lost; the request times out).
    Answer(usize, bool),
    /// Begin, Commit and Answer at once (the common case).
    Drive(usize),
    /// Time passes.
    Advance(u16),
    /// A watch event with the current object (or its deletion).
    Watch(usize),
    /// A late watch event with an older version.
    WatchOld(usize, u8),
    /// The watch goes down (followers poll) or comes back.
    WatchUp(usize, bool),
    Foreign(Foreign),
    /// The app asks the candidate to release (`POST /leader/release`).
    Release(usize),
    /// The candidate is shut down (SIGTERM), releasing or not; it stays stopped until restarted.
    Stop(usize, bool),
    /// The app's health, as `--app-check` reports it (only machines that follow it care).
    App(usize, bool),
    /// The process is killed and started again (its in-flight request may still commit).
    Restart(usize),
}

/// Operations; `deletes`: whether the foreign writer may delete the Lease.
fn op(deletes: bool) -> impl Strategy<Value = Op> {
    let c = 0..CANDIDATES;
    let others = prop_oneof![
        (-3i64..3, -5i64..5).prop_map(|(delta, duration)| Foreign::Ghost { delta, duration }),
        Just(Foreign::EmptyNoMarker),
        (0u8..4).prop_map(Foreign::Annotations),
        Just(Foreign::Garbage),
        Just(Foreign::Forged),
    ];
    let foreign = if deletes {
        prop_oneof![4 => others, 1 => Just(Foreign::Delete)].boxed()
    } else {
        others.boxed()
    };
    prop_oneof![
        3 => c.clone().prop_map(Op::Begin),
        3 => c.clone().prop_map(Op::Commit),
        3 => (c.clone(), prop::bool::weighted(0.8)).prop_map(|(i, ok)| Op::Answer(i, ok)),
        8 => c.clone().prop_map(Op::Drive),
        6 => prop_oneof![1u16..300, 300u16..4000].prop_map(Op::Advance),
        3 => c.clone().prop_map(Op::Watch),
        1 => (c.clone(), any::<u8>()).prop_map(|(i, k)| Op::WatchOld(i, k)),
        1 => (c.clone(), any::<bool>()).prop_map(|(i, up)| Op::WatchUp(i, up)),
        1 => foreign.prop_map(Op::Foreign),
        1 => c.clone().prop_map(Op::Release),
        1 => (c.clone(), any::<bool>()).prop_map(|(i, r)| Op::Stop(i, r)),
        2 => (c.clone(), prop::bool::weighted(0.7)).prop_map(|(i, h)| Op::App(i, h)),
        1 => c.prop_map(Op::Restart),
    ]
}

/// What the store committed for a pending request.
#[derive(Clone, Debug)]
enum Committed {
    Read(Option<StoredLease>),
    /// The object written, and whether a PUT created it (create-on-update: unchecked).
    Written(StoredLease, bool),
    Conflict,
}

/// A request in flight: sent at `sent` by the process of `generation`.
struct Pending {
    generation: u32,
    sent: Instant,
    request: Request,
    committed: Option<Committed>,
}

struct Cand {
    m: Machine,
    generation: u32,
    pending: Option<Pending>,
}

struct World {
    now: Instant,
    cur: Option<StoredLease>,
    history: Vec<StoredLease>,
    rv: u64,
    cands: Vec<Cand>,
    priorities: [i64; CANDIDATES],
    /// Epochs of tenures started, in order.
    acquired: Vec<(usize, i64)>,
    /// A foreign writer deleted the Lease or lowered / erased its epoch.
    epoch_reset_possible: bool,
    ghosts: u64,
    seeds: u64,
    /// Whether leadership follows the apps' health (`--app-check`; rule 13).
    gated: bool,
    /// Whether machines spread their takeovers (a random delay below 50 ms, as in leaderd);
    /// the scripted scenarios below turn it off so that their instants are exact.
    spread: bool,
}

impl World {
    fn new(priorities: [i64; CANDIDATES]) -> World {
        let mut w = World {
            now: Instant::now(),
            cur: None,
            history: Vec::new(),
            rv: 100,
            cands: Vec::new(),
            priorities,
            acquired: Vec::new(),
            epoch_reset_possible: false,
            ghosts: 0,
            seeds: 0,
            spread: true,
            gated: false,
        };
        for i in 0..CANDIDATES {
            let m = w.machine(i);
            w.cands.push(Cand {
                m,
                generation: 0,
                pending: None,
            });
        }
        w
    }

    /// Machines that follow their apps' health, which starts unknown (unhealthy).
    fn gated(priorities: [i64; CANDIDATES]) -> World {
        let mut w = World::new(priorities);
        w.gated = true;
        for c in &mut w.cands {
            c.m = c.m.clone().with_app_check();
        }
        w
    }

    /// The same with exact instants (no takeover spread), for scripted scenarios.
    fn scripted(priorities: [i64; CANDIDATES]) -> World {
        let mut w = World::new(priorities);
        w.spread = false;
        for c in &mut w.cands {
            c.m.takeover_delay = Duration::ZERO;
        }
        w
    }

    fn machine(&mut self, i: usize) -> Machine {
        self.seeds += 1;
        let mut m = Machine::new(params(i, self.priorities[i]), self.seeds);
        if !self.spread {
            m.takeover_delay = Duration::ZERO;
        }
        if self.gated {
            m = m.with_app_check();
        }
        m
    }

    fn store(&mut self, mut obj: Value) -> StoredLease {
        self.rv += 1;
        if !obj["metadata"].is_object() {
            obj["metadata"] = json!({});
        }
        obj["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        // The uid is the object's: kept by every update, new with every creation.
        let uid = match &self.cur {
            Some(c) => c.uid.clone().unwrap_or_default(),
            None => format!("uid-{}", self.rv),
        };
        obj["metadata"]["uid"] = json!(uid);
        let l = StoredLease::from_json(obj).expect("stored objects decode");
        self.cur = Some(l.clone());
        self.history.push(l.clone());
        l
    }

    /// Give candidate `i` an outcome, as its elector would, and note the tenures it starts.
    fn apply_to(&mut self, i: usize, outcome: Outcome) {
        let now = self.now;
        for t in self.cands[i].m.apply(outcome, now) {
            if let Transition::Acquired { epoch } = t {
                self.acquired.push((i, epoch));
            }
        }
    }

    /// Check a step against the rules before carrying it out.
    fn allowed(&self, i: usize, step: &Step) -> Result<(), TestCaseError> {
        let m = &self.cands[i].m;
        let (p, now) = (&m.params, self.now);
        let Step::Send(request) = step else {
            match step {
                Step::Wait(t) => prop_assert!(*t > now || m.not_before == Some(*t)),
                Step::Stopped => prop_assert!(m.stopped && m.releasing.is_none()),
                _ => {}
            }
            return Ok(());
        };
        if m.releasing.is_none() {
            prop_assert!(!m.stopped, "a stopped machine sent {:?}", request);
        }
        match request {
            Request::Replace {
                base,
                record,
                purpose: Purpose::Renew,
            } => {
                let l = m
                    .leading
                    .as_ref()
                    .ok_or_else(|| fail("renew without a tenure"))?;
                prop_assert_eq!(&l.base, base);
                prop_assert_eq!(record.transitions, Some(l.tenure.epoch));
                prop_assert_eq!(record.holder.as_deref(), Some(p.identity.as_str()));
            }
            Request::Replace {
                base,
                record,
                purpose: Purpose::Acquire,
            } => {
                prop_assert!(m.leading.is_none());
                let Known::Present { lease, observed_at } = &m.known else {
                    return Err(fail("acquire without a known record"));
                };
                prop_assert_eq!(lease, base);
                let r = &lease.record;
                let ours = r.holder.as_deref() == Some(p.identity.as_str())
                    && m.my_last_write.as_deref() == Some(lease.resource_version.as_str());
                let wait = D.max(Duration::from_secs(
                    r.lease_duration_seconds.unwrap_or(0).min(MAX_EPOCH) as u64,
                ));
                let released = r.is_released()
                    && match &r.release_to {
                        Some(to) if *to != p.identity => now >= *observed_at + P,
                        _ => true,
                    };
                prop_assert!(
                    ours || released || now >= *observed_at + wait,
                    "acquired a record that is not free: {:?} observed {:?} ago",
                    r,
                    now - *observed_at
                );
                prop_assert!(m.keep_out_until.is_none_or(|k| now >= k));
                prop_assert!(
                    m.app_healthy != Some(false),
                    "acquired with an unhealthy app"
                );
                let expected = r.transitions.max(m.max_epoch_seen).map_or(1, |e| e + 1);
                prop_assert_eq!(record.transitions, Some(expected));
                prop_assert_eq!(record.holder.as_deref(), Some(p.identity.as_str()));
            }
            Request::Create { record } => {
                let Known::Absent { since } = &m.known else {
                    return Err(fail("create without having seen the absence"));
                };
                prop_assert!(m.leading.is_none());
                prop_assert!(now >= *since + P);
                prop_assert!(
                    record.holder.is_none(),
                    "a create names a holder: {:?}",
                    record
                );
                prop_assert_eq!(record.transitions, Some(m.max_epoch_seen.unwrap_or(0)));
            }
            Request::Replace {
                base,
                record,
                purpose: Purpose::RaiseEpoch,
            } => {
                prop_assert!(m.leading.is_none());
                prop_assert!(base.record.holder.is_none() && record.holder.is_none());
                prop_assert!(base.record.transitions < record.transitions);
                prop_assert_eq!(record.transitions, m.max_epoch_seen);
            }
            Request::Replace {
                base,
                record,
                purpose: Purpose::Announce,
            } => {
                prop_assert!(m.leading.is_none());
                prop_assert!(record.same_claim(&base.record));
                prop_assert!(
                    m.app_healthy != Some(false),
                    "announced with an unhealthy app"
                );
            }
            Request::Replace {
                record,
                purpose: Purpose::Release,
                ..
            } => {
                // Rule 12: stepped down before the release is sent.
                prop_assert!(m.leading.is_none(), "released while claiming");
                prop_assert!(record.holder.is_none() && record.is_released());
            }
            Request::Read => {}
        }
        Ok(())
    }

    fn begin(&mut self, i: usize) -> Result<(), TestCaseError> {
        if self.cands[i].pending.is_some() {
            return Ok(());
        }
        self.apply_to(i, Outcome::Tick);
        let step = self.cands[i].m.decide(self.now, SystemTime::now());
        self.allowed(i, &step)?;
        let Step::Send(request) = step else {
            return Ok(());
        };
        let c = &mut self.cands[i];
        c.pending = Some(Pending {
            generation: c.generation,
            sent: self.now,
            request,
            committed: None,
        });
        Ok(())
    }

    fn commit(&mut self, i: usize) {
        let Some(req) = self.cands[i]
            .pending
            .as_ref()
            .filter(|p| p.committed.is_none())
            .map(|p| p.request.clone())
        else {
            return;
        };
        let committed = match req {
            Request::Read => Committed::Read(self.cur.clone()),
            Request::Create { record } => match self.cur {
                None => Committed::Written(self.store(new_lease_object(&record)), false),
                Some(_) => Committed::Conflict,
            },
            Request::Replace { base, record, .. } => match &self.cur {
                // Create on update: the apiserver creates a missing Lease on PUT, unless the
                // body carries a uid (a precondition no missing object meets: 409).
                None if base.uid.as_deref().is_some_and(|u| !u.is_empty()) => Committed::Conflict,
                None => Committed::Written(self.store(base.replaced_with(&record)), true),
                Some(c) if c.resource_version == base.resource_version => {
                    Committed::Written(self.store(base.replaced_with(&record)), false)
                }
                Some(_) => Committed::Conflict,
            },
        };
        if let Some(p) = self.cands[i].pending.as_mut() {
            p.committed = Some(committed);
        }
    }

    fn answer(&mut self, i: usize, delivered: bool) -> Result<(), TestCaseError> {
        let c = &mut self.cands[i];
        let Some(p) = c.pending.take() else {
            return Ok(());
        };
        if p.generation != c.generation {
            return Ok(()); // the process that sent it is gone
        }
        // A lost answer: the request timed out (it may or may not have been applied).
        let lost = || StoreError::TimedOut { after: R / 5 };
        let committed = p.committed.filter(|_| delivered);
        let outcome = match (p.request, committed) {
            (Request::Read, None) => Outcome::Read(Err(lost())),
            (Request::Read, Some(Committed::Read(Some(l)))) => Outcome::Read(Ok(l)),
            (Request::Read, Some(_)) => Outcome::Read(Err(StoreError::NotFound)),
            (Request::Create { .. }, None) => Outcome::Created(Err(lost())),
            (Request::Create { .. }, Some(Committed::Written(l, _))) => Outcome::Created(Ok(l)),
            (Request::Create { .. }, Some(_)) => Outcome::Created(Err(StoreError::AlreadyExists)),
            (Request::Replace { purpose, .. }, committed) => Outcome::Replaced {
                purpose,
                sent: p.sent,
                result: match committed {
                    None => Err(lost()),
                    Some(Committed::Written(l, created)) => Ok((l, created)),
                    Some(_) => Err(StoreError::Conflict),
                },
            },
        };
        // Liveness of the claim path: an acquisition answered in time by a checked write (not a
        // creation) starts a tenure, whatever the watch showed meanwhile — unless the machine
        // stepped down at once for its app or a handover, or was stopped.
        let must_acquire = matches!(
            &outcome,
            Outcome::Replaced { purpose: Purpose::Acquire, result: Ok((_, false)), sent } if self.now < *sent + R
        ) && !self.cands[i].m.stopped
            && self.cands[i].m.app_healthy != Some(false);
        let before = self.acquired.len();
        self.apply_to(i, outcome);
        if must_acquire {
            prop_assert!(
                self.acquired.len() > before,
                "c{} acquired in time but started no tenure",
                i
            );
        }
        Ok(())
    }

    fn foreign(&mut self, f: Foreign) {
        self.ghosts += 1;
        let ghost = format!("ghost-{}", self.ghosts);
        let cur_t = self.cur.as_ref().and_then(|l| l.record.transitions);
        let max_t = self
            .history
            .iter()
            .filter_map(|l| l.record.transitions)
            .max()
            .unwrap_or(0);
        let base = self.cur.as_ref().map(|l| l.raw.clone());
        match f {
            Foreign::Ghost { delta, duration } => {
                let t = max_t + delta;
                if delta <= 0 {
                    self.epoch_reset_possible = true;
                }
                let mut obj = base.unwrap_or_else(|| json!({"metadata": {}}));
                obj["spec"] = json!({"holderIdentity": ghost, "leaseDurationSeconds": duration,
                                     "leaseTransitions": t, "renewTime": "x"});
                self.store(obj);
            }
            Foreign::EmptyNoMarker => {
                let mut obj = base.unwrap_or_else(|| json!({"metadata": {}}));
                obj["spec"] = json!({"leaseDurationSeconds": 1, "leaseTransitions": max_t});
                if let Some(a) = obj["metadata"]["annotations"].as_object_mut() {
                    a.remove(RELEASED_BY_ANNOTATION);
                }
                if cur_t.is_none_or(|t| t < max_t) {
                    self.epoch_reset_possible = true;
                }
                self.store(obj);
            }
            Foreign::Annotations(k) => {
                let Some(mut obj) = base else { return };
                if !obj["metadata"]["annotations"].is_object() {
                    obj["metadata"]["annotations"] = json!({});
                }
                let a = &mut obj["metadata"]["annotations"];
                match k {
                    0 => a["example.com/note"] = json!(ghost),
                    1 => {
                        a[CANDIDATE_ANNOTATION] = json!(ghost);
                        a[CANDIDATE_PRIORITY_ANNOTATION] = json!("100");
                    }
                    2 => a[RELEASED_BY_ANNOTATION] = json!(ghost),
                    _ => a[HOLDER_PRIORITY_ANNOTATION] = json!("-5"),
                }
                self.store(obj);
            }
            Foreign::Forged => {
                let Some(mut obj) = base else { return };
                if !obj["spec"].is_object() {
                    obj["spec"] = json!({});
                }
                obj["spec"]["holderIdentity"] = json!("");
                if !obj["metadata"]["annotations"].is_object() {
                    obj["metadata"]["annotations"] = json!({});
                }
                obj["metadata"]["annotations"][RELEASED_BY_ANNOTATION] = json!(ghost);
                self.store(obj);
            }
            Foreign::Garbage => {
                self.epoch_reset_possible = true;
                self.store(json!({"metadata": {"annotations": 5}, "spec": "garbage"}));
            }
            Foreign::Delete => {
                if self.cur.take().is_some() {
                    self.epoch_reset_possible = true;
                }
            }
        }
    }

    fn apply(&mut self, op: Op) -> Result<(), TestCaseError> {
        match op {
            Op::Begin(i) => self.begin(i)?,
            Op::Commit(i) => self.commit(i),
            Op::Answer(i, ok) => self.answer(i, ok)?,
            Op::Drive(i) => {
                self.begin(i)?;
                self.commit(i);
                self.answer(i, true)?;
            }
            Op::Advance(ms) => self.now += Duration::from_millis(u64::from(ms)),
            Op::Watch(i) => {
                let event = match self.cur.clone() {
                    Some(l) => WatchEvent::Put(l),
                    None => WatchEvent::Deleted,
                };
                self.apply_to(i, Outcome::Watch(event));
            }
            Op::WatchOld(i, k) => {
                if !self.history.is_empty() {
                    let l = self.history[usize::from(k) % self.history.len()].clone();
                    self.apply_to(i, Outcome::Watch(WatchEvent::Put(l)));
                }
            }
            Op::WatchUp(i, up) => {
                let outcome = if up {
                    Outcome::WatchUp
                } else {
                    Outcome::WatchDown
                };
                self.apply_to(i, outcome);
            }
            Op::Foreign(f) => self.foreign(f),
            Op::Release(i) => self.apply_to(i, Outcome::ReleaseAsked),
            Op::Stop(i, release) => self.apply_to(i, Outcome::Stop { release }),
            Op::App(i, healthy) => self.apply_to(i, Outcome::AppHealth(healthy)),
            Op::Restart(i) => {
                let m = self.machine(i);
                let c = &mut self.cands[i];
                c.m = m;
                c.generation += 1;
                // Its in-flight request, if any, may still be applied; the answer goes nowhere.
                if let Some(p) = c.pending.as_mut() {
                    p.generation = u32::MAX;
                }
            }
        }
        self.check()
    }

    fn check(&self) -> Result<(), TestCaseError> {
        let leaders: Vec<usize> = (0..CANDIDATES)
            .filter(|&i| {
                self.cands[i]
                    .m
                    .view()
                    .tenure
                    .is_some_and(|t| t.is_valid_at(self.now))
            })
            .collect();
        prop_assert!(leaders.len() <= 1, "two leaders at once: {:?}", leaders);
        for &i in &leaders {
            prop_assert!(
                self.cands[i].m.app_healthy != Some(false),
                "c{} leads with an unhealthy app",
                i
            );
        }
        if !self.epoch_reset_possible {
            for w in self.acquired.windows(2) {
                prop_assert!(w[1].1 > w[0].1, "epochs did not rise: {:?}", self.acquired);
            }
        }
        Ok(())
    }
}

fn fail(s: &str) -> TestCaseError {
    TestCaseError::fail(s.to_string())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// Never two leaders, every step allowed by the rules, epochs rising, under any
    /// interleaving of requests, answers, watch events, foreign writes, releases, shutdowns,
    /// restarts and time.
    #[test]
    fn the_machine_is_safe_under_any_interleaving(
        priorities in prop::array::uniform3(0i64..3),
        gated in any::<bool>(),
        ops in prop::collection::vec(op(false), 1..400),
    ) {
        let mut w = if gated { World::gated(priorities) } else { World::new(priorities) };
        for op in ops {
            w.apply(op)?;
        }
    }
}

/// The model is not vacuous: driven plainly, candidates elect a leader, renew, fail over after
/// a lost leader, and the epochs rise.
#[test]
fn the_model_elects_and_fails_over() {
    let mut w = World::new([0, 0, 0]);
    let drive_all = |w: &mut World| {
        for i in 0..CANDIDATES {
            w.apply(Op::Drive(i)).expect("safe");
        }
    };
    for _ in 0..40 {
        drive_all(&mut w);
        w.apply(Op::Advance(200)).expect("safe");
    }
    assert_eq!(w.acquired.len(), 1, "one election: {:?}", w.acquired);
    let (leader, _) = w.acquired[0];
    // The leader dies; the others watch its last record expire and take over.
    w.apply(Op::Restart(leader)).expect("safe");
    for _ in 0..40 {
        for i in (0..CANDIDATES).filter(|i| *i != leader) {
            w.apply(Op::Drive(i)).expect("safe");
        }
        w.apply(Op::Advance(200)).expect("safe");
    }
    assert_eq!(w.acquired.len(), 2, "{:?}", w.acquired);
    assert!(w.acquired[1].1 > w.acquired[0].1);
}

/// Not vacuous either for the moves by release: a released lease and a handover are taken at
/// once (not after a lease duration), with the next epoch.
#[test]
fn the_model_hands_over_by_release_and_by_priority() {
    let mut w = World::new([0, 0, 1]);
    let drive = |w: &mut World, who: &[usize], rounds: usize| {
        for _ in 0..rounds {
            for &i in who {
                w.apply(Op::Drive(i)).expect("safe");
            }
            for &i in who {
                w.apply(Op::Watch(i)).expect("safe");
            }
            w.apply(Op::Advance(50)).expect("safe");
        }
    };
    // c2 (priority 1) is kept away until c0 or c1 leads.
    drive(&mut w, &[0, 1], 200);
    assert_eq!(w.acquired.len(), 1, "{:?}", w.acquired);
    let (first, e1) = w.acquired[0];
    let other = 1 - first;
    // The app releases: the other takes over within a few rounds, not a lease duration.
    w.apply(Op::Release(first)).expect("safe");
    drive(&mut w, &[first, other], 4);
    assert_eq!(w.acquired[1], (other, e1 + 1), "{:?}", w.acquired);
    // c2 joins with a higher priority: announced, handed over, taken at once.
    drive(&mut w, &[0, 1, 2], 8);
    assert_eq!(w.acquired[2], (2, e1 + 2), "{:?}", w.acquired);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    /// The same with foreign deletions, and forged releases (leaderd's release marker written
    /// by a foreign writer, also onto a record whose holder it emptied).
    #[test]
    fn the_machine_is_safe_with_deletions_and_forged_releases(
        priorities in prop::array::uniform3(0i64..3),
        gated in any::<bool>(),
        ops in prop::collection::vec(op(true), 1..400),
    ) {
        let mut w = if gated { World::gated(priorities) } else { World::new(priorities) };
        for op in ops {
            w.apply(op)?;
        }
    }
}

fn run(w: &mut World, ops: Vec<Op>) -> Result<(), TestCaseError> {
    for op in ops {
        w.apply(op)?;
    }
    Ok(())
}

/// Found by the model: two foreign writes whose specs decode alike (here both unparsable), a
/// tenure in between that c2 did not see. c2 took the second for the first, kept the observed
/// time of the first (rule 9) and took over at once while c0 led. Rule 9 now recognises only a
/// held record with a renewTime.
#[test]
fn a_replayed_spec_without_holder_restarts_the_wait() {
    use Op::*;
    let mut w = World::scripted([0, 0, 0]);
    let ops = vec![
        Foreign(self::Foreign::Garbage),
        Watch(2),
        Watch(0),
        Advance(3000),
        Drive(0),
        Foreign(self::Foreign::Garbage),
        Drive(2),
        Drive(2),
        Drive(2),
    ];
    run(&mut w, ops).expect("one leader at a time");
    assert_eq!(w.acquired.len(), 1, "{:?}", w.acquired);
}

/// Found by the model (bug D in docs/reliability.md): c2 saw the Lease absent, missed c1's
/// create and tenure (its watch was down and it did not poll in between), the Lease was deleted
/// by a foreign writer, and c2's create — whose only precondition is "absent" — succeeded while
/// c1 still claimed. It used to start a tenure (epoch 1 again). Now a create names no holder
/// and starts nothing (rule 4): c2 would have to wait the record out and acquire it by a
/// checked write, which c1's renewal beats or which comes after c1's claim ended.
#[test]
fn a_create_after_a_missed_create_and_a_deletion_is_not_a_second_leader() {
    use Op::*;
    let mut w = World::scripted([0, 0, 0]);
    let ops = vec![
        Drive(2),
        Drive(1),
        Advance(3000),
        // c1 creates the Lease (no holder), waits it out and acquires it.
        Drive(1),
        Advance(3000),
        Drive(1),
        Foreign(self::Foreign::Delete),
        // c2 still knows only the absence it saw at the start.
        Drive(2),
    ];
    run(&mut w, ops).expect("one leader at a time");
    assert_eq!(w.acquired, vec![(1, 1)]);
    assert!(
        w.cands[2].m.tenure().is_none(),
        "the create started a tenure"
    );
    assert!(
        w.cur.as_ref().is_some_and(|l| l.record.holder.is_none()),
        "c2 created the Lease without a holder"
    );
    // c1's next renewal conflicts with c2's record; c1 steps down on the read that follows, and
    // the record is taken (by someone) with a higher epoch once waited out.
    for _ in 0..30 {
        for i in 0..CANDIDATES {
            w.apply(Drive(i)).expect("one leader at a time");
        }
        w.apply(Advance(250)).expect("one leader at a time");
    }
    // (Its epoch may repeat 1: the deletion erased the epoch, and whoever takes the Lease may
    // never have seen it.)
    assert_eq!(w.acquired.len(), 2, "{:?}", w.acquired);
}

/// c0 creates the Lease, waits it out and leads with epoch 1; c1 has seen its record.
fn c0_leads_and_c1_saw_it() -> World {
    use Op::*;
    let mut w = World::scripted([0, 0, 0]);
    let ops = vec![
        Drive(1),
        Drive(0),
        Advance(3000),
        Drive(0),
        Advance(3000),
        Drive(0),
        Watch(1),
    ];
    run(&mut w, ops).expect("one leader at a time");
    assert_eq!(w.acquired, vec![(0, 1)]);
    w
}

/// Found by the model (bug E in docs/reliability.md): a foreign writer put leaderd's release
/// marker onto a record without holder (here over unparsable garbage that replaced c0's
/// record); c1 took it as a release and took over at once, while c0 still claimed until its next
/// renewal conflicted. Now a release is free at once only if it names the holder of the last held
/// record c1 saw, under that record's epoch (rule 5).
#[test]
fn a_forged_release_marker_is_not_a_release() {
    use Op::*;
    for forgery in [
        vec![
            Foreign(self::Foreign::Garbage),
            Foreign(self::Foreign::Annotations(2)),
        ],
        vec![Foreign(self::Foreign::Forged)],
    ] {
        let mut w = c0_leads_and_c1_saw_it();
        let mut ops = forgery;
        ops.extend([Watch(1), Drive(1)]);
        run(&mut w, ops).expect("one leader at a time");
        assert_eq!(w.acquired, vec![(0, 1)]);
        assert!(w.cands[1].m.tenure().is_none());
    }
}

/// The release check is not too strict: a follower that saw the holder's record takes its
/// release at once, with the next epoch.
#[test]
fn a_release_by_the_holder_last_seen_is_taken_at_once() {
    use Op::*;
    let mut w = c0_leads_and_c1_saw_it();
    // c0 releases (as on POST /leader/release); c1 sees it and takes it at once.
    run(&mut w, vec![Release(0), Drive(0), Watch(1), Drive(1)]).expect("one leader at a time");
    assert_eq!(w.acquired, vec![(0, 1), (1, 2)]);
}

/// Found when the elector began applying watch events while a request is in flight: the watch
/// event of c0's own acquisition arrived before the answer, raised the highest epoch seen to the
/// acquired one, and the answer was then taken for a late renewal (rule 6's "one epoch per
/// claim"): no tenure, and a second acquisition with epoch + 1. An acquisition answered in time
/// starts its tenure whatever the watch showed meanwhile.
#[test]
fn the_watch_event_of_an_acquisition_before_its_answer_does_not_cost_a_tenure() {
    use Op::*;
    let mut w = World::scripted([0, 0, 0]);
    let ops = vec![
        Drive(0),
        Advance(3000),
        Drive(0),
        Advance(3000),
        Begin(0),
        Commit(0),
        Watch(0),
        Answer(0, true),
    ];
    run(&mut w, ops).expect("one leader at a time");
    assert_eq!(w.acquired, vec![(0, 1)]);
}

/// Not vacuous for rule 13: with every app unhealthy nobody leads; the one that recovers takes
/// the lease; when its app fails it releases, and a candidate with a healthy app takes over at
/// once with the next epoch.
#[test]
fn the_model_follows_the_apps_health() {
    let mut w = World::gated([0, 0, 0]);
    let drive = |w: &mut World, rounds: usize| {
        for _ in 0..rounds {
            for i in 0..CANDIDATES {
                w.apply(Op::Drive(i)).expect("safe");
                w.apply(Op::Watch(i)).expect("safe");
            }
            w.apply(Op::Advance(50)).expect("safe");
        }
    };
    drive(&mut w, 200);
    assert!(
        w.acquired.is_empty(),
        "led with no healthy app: {:?}",
        w.acquired
    );
    w.apply(Op::App(1, true)).expect("safe");
    drive(&mut w, 200);
    assert_eq!(w.acquired, vec![(1, 1)]);
    w.apply(Op::App(2, true)).expect("safe");
    w.apply(Op::App(1, false)).expect("safe");
    drive(&mut w, 4);
    assert_eq!(
        w.acquired,
        vec![(1, 1), (2, 2)],
        "taken at once by the healthy one"
    );
}

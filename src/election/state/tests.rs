//! Unit tests of the state machine: single outcomes and what they mean. The property model
//! (`model.rs`) drives it through arbitrary interleavings.

use std::time::{Duration, SystemTime};

use serde_json::json;
use tokio::time::Instant;

use super::*;
use crate::election::record::RELEASED_BY_ANNOTATION;

const D: Duration = Duration::from_secs(15);
const R: Duration = Duration::from_secs(10);
const P: Duration = Duration::from_secs(2);

fn params(id: &str) -> Params {
    Params {
        identity: id.into(),
        lease_duration: D,
        renew_deadline: R,
        retry_period: P,
        priority: 0,
    }
}

fn stored(v: serde_json::Value) -> StoredLease {
    StoredLease::from_json(v).expect("decodes")
}

fn held_by(holder: &str, epoch: i64, rv: &str) -> StoredLease {
    stored(json!({
        "metadata": {"resourceVersion": rv},
        "spec": {"holderIdentity": holder, "leaseTransitions": epoch, "renewTime": rv}
    }))
}

fn released_by(holder: &str, epoch: i64, rv: &str) -> StoredLease {
    stored(json!({
        "metadata": {"resourceVersion": rv, "annotations": {RELEASED_BY_ANNOTATION: holder}},
        "spec": {"leaseTransitions": epoch}
    }))
}

fn send(step: Step) -> Request {
    match step {
        Step::Send(r) => r,
        other => panic!("expected a request, got {other:?}"),
    }
}

/// A machine for `me` that read `lease` at `t0`, acquired it, and leads with its next epoch.
fn leading(t0: Instant) -> (Machine, StoredLease) {
    let mut m = Machine::new(params("me"), 1);
    m.apply(Outcome::Read(Ok(held_by("x", 4, "2"))), t0);
    m.apply(Outcome::Read(Ok(released_by("x", 4, "3"))), t0);
    let Request::Replace {
        record, purpose, ..
    } = send(m.decide(t0, SystemTime::now()))
    else {
        panic!("expected a write")
    };
    assert_eq!(purpose, Purpose::Acquire);
    let mine = stored(json!({
        "metadata": {"resourceVersion": "4"},
        "spec": record.to_spec(),
    }));
    let out = m.apply(
        Outcome::Replaced {
            purpose,
            sent: t0,
            result: Ok((mine.clone(), false)),
        },
        t0,
    );
    assert!(out.contains(&Transition::Acquired { epoch: 5 }), "{out:?}");
    (m, mine)
}

#[test]
fn decide_reads_first_and_acquires_a_release_by_the_holder_last_seen_at_once() {
    let t0 = Instant::now();
    let mut m = Machine::new(params("me"), 1);
    assert_eq!(m.decide(t0, SystemTime::now()), Step::Send(Request::Read));
    m.apply(Outcome::Read(Ok(held_by("x", 4, "4"))), t0);
    m.apply(Outcome::Read(Ok(released_by("x", 4, "5"))), t0);
    match send(m.decide(t0, SystemTime::now())) {
        Request::Replace {
            record,
            purpose: Purpose::Acquire,
            ..
        } => {
            assert_eq!(record.transitions, Some(5));
            assert_eq!(record.holder.as_deref(), Some("me"));
        }
        other => panic!("expected an acquire, got {other:?}"),
    }
}

#[test]
fn a_leader_renews_three_fifths_of_a_deadline_after_its_last_send_and_its_claim_runs_from_the_send_time(
) {
    let t0 = Instant::now();
    let (mut m, mine) = leading(t0);
    let every = R * 3 / 5;
    assert_eq!(m.params.renew_interval(), every);
    assert_eq!(m.tenure().map(|t| t.valid_until), Some(t0 + R));
    assert_eq!(m.decide(t0, SystemTime::now()), Step::Wait(t0 + every));
    assert_eq!(
        m.decide(t0 + every - Duration::from_millis(1), SystemTime::now()),
        Step::Wait(t0 + every)
    );
    let Request::Replace { purpose, .. } = send(m.decide(t0 + every, SystemTime::now())) else {
        panic!("expected a renew")
    };
    assert_eq!(purpose, Purpose::Renew);
    // Sent at 3R/5, answered a second later: the claim runs from the send.
    let renewed = stored(json!({"metadata": {"resourceVersion": "5"}, "spec": mine.raw["spec"]}));
    m.apply(
        Outcome::Replaced {
            purpose,
            sent: t0 + every,
            result: Ok((renewed, false)),
        },
        t0 + every + Duration::from_secs(1),
    );
    assert_eq!(m.tenure().map(|t| t.valid_until), Some(t0 + every + R));
    assert_eq!(
        m.decide(t0 + every + Duration::from_secs(1), SystemTime::now()),
        Step::Wait(t0 + every * 2)
    );
}

/// Rule 14: a renew that timed out is retried at once, so two renewals that hang for their
/// whole timeout (R/5) both end inside the deadline; one answered with an error backs off.
#[test]
fn two_hanging_renewals_fit_in_a_deadline_and_an_error_backs_off() {
    let t0 = Instant::now();
    let (mut m, _) = leading(t0);
    let (every, timeout) = (R * 3 / 5, m.params.call_timeout());
    assert_eq!(timeout, R / 5);
    // First attempt at 3R/5 hangs until 4R/5.
    let first = send(m.decide(t0 + every, SystemTime::now()));
    let Request::Replace { purpose, .. } = first else {
        panic!("expected a renew")
    };
    let out = m.apply(
        Outcome::Replaced {
            purpose,
            sent: t0 + every,
            result: Err(StoreError::TimedOut { after: timeout }),
        },
        t0 + every + timeout,
    );
    assert!(out.is_empty(), "{out:?}");
    // The second goes at once and may hang until the deadline itself.
    let second_at = t0 + every + timeout;
    assert!(second_at + timeout <= t0 + R);
    let Request::Replace { purpose, .. } = send(m.decide(second_at, SystemTime::now())) else {
        panic!("expected the second renew at once")
    };
    assert_eq!(purpose, Purpose::Renew);
    // A 503 instead: back off P/2 (stretched by up to 1.2), still inside the deadline.
    m.apply(
        Outcome::Replaced {
            purpose,
            sent: second_at,
            result: Err(StoreError::Unavailable {
                code: Some(503),
                message: "unavailable".into(),
                retry_after: None,
            }),
        },
        second_at,
    );
    match m.decide(second_at, SystemTime::now()) {
        Step::Wait(t) => {
            let waited = t - second_at;
            assert!(waited >= P / 2 && waited < P / 2 * 6 / 5, "{waited:?}");
        }
        other => panic!("expected a back-off, got {other:?}"),
    }
}

#[test]
fn the_claim_ends_by_the_clock_with_a_transition() {
    let t0 = Instant::now();
    let (mut m, _) = leading(t0);
    assert!(m
        .apply(Outcome::Tick, t0 + R - Duration::from_millis(1))
        .is_empty());
    let out = m.apply(Outcome::Tick, t0 + R);
    assert_eq!(
        out[0],
        Transition::Lost {
            reason: LossReason::RenewDeadline,
            epoch: Some(5)
        }
    );
    assert!(m.tenure().is_none());
}

#[test]
fn a_release_steps_down_before_it_is_sent_and_answers_when_written() {
    let t0 = Instant::now();
    let (mut m, mine) = leading(t0);
    let out = m.apply(Outcome::ReleaseAsked, t0);
    assert_eq!(
        out,
        vec![Transition::Lost {
            reason: LossReason::Released,
            epoch: Some(5)
        }]
    );
    assert!(
        m.view().tenure.is_none(),
        "stepped down before the release is sent"
    );
    let Request::Replace {
        base,
        record,
        purpose,
    } = send(m.decide(t0, SystemTime::now()))
    else {
        panic!("expected the release")
    };
    assert_eq!(purpose, Purpose::Release);
    assert_eq!(base, mine);
    assert!(record.holder.is_none() && record.is_released());
    assert_eq!(record.transitions, Some(5));
    // A conflict (our in-flight renew landed): re-read, and release from there.
    m.apply(
        Outcome::Replaced {
            purpose,
            sent: t0,
            result: Err(StoreError::Conflict),
        },
        t0,
    );
    assert_eq!(m.decide(t0, SystemTime::now()), Step::Send(Request::Read));
    let renewed = stored(json!({"metadata": {"resourceVersion": "9"}, "spec": mine.raw["spec"]}));
    m.apply(Outcome::Read(Ok(renewed.clone())), t0);
    let Request::Replace { base, .. } = send(m.decide(t0, SystemTime::now())) else {
        panic!("expected the release again")
    };
    assert_eq!(base, renewed);
    let out = m.apply(
        Outcome::Replaced {
            purpose: Purpose::Release,
            sent: t0,
            result: Ok((released_by("me", 5, "10"), false)),
        },
        t0,
    );
    assert!(
        out.contains(&Transition::ReleaseFinished(ReleaseOutcome::Released {
            epoch: 5
        }))
    );
    // Rule 11: the releaser keeps out for a lease duration.
    assert!(matches!(m.decide(t0, SystemTime::now()), Step::Wait(_)));
}

#[test]
fn a_release_asked_of_a_follower_is_answered_at_once() {
    let t0 = Instant::now();
    let mut m = Machine::new(params("me"), 1);
    m.apply(Outcome::Read(Ok(held_by("x", 4, "4"))), t0);
    assert_eq!(
        m.apply(Outcome::ReleaseAsked, t0),
        vec![Transition::ReleaseFinished(ReleaseOutcome::NotLeader)]
    );
}

#[test]
fn stop_releases_then_stops() {
    let t0 = Instant::now();
    let (mut m, _) = leading(t0);
    m.apply(Outcome::Stop { release: true }, t0);
    let Request::Replace { purpose, .. } = send(m.decide(t0, SystemTime::now())) else {
        panic!("expected the release")
    };
    assert_eq!(purpose, Purpose::Release);
    let out = m.apply(
        Outcome::Replaced {
            purpose,
            sent: t0,
            result: Err(StoreError::unavailable("down")),
        },
        t0,
    );
    assert!(matches!(
        out[0],
        Transition::ReleaseFinished(ReleaseOutcome::NotWritten { epoch: 5, .. })
    ));
    assert_eq!(m.decide(t0, SystemTime::now()), Step::Stopped);
}

#[test]
fn failures_back_off_honouring_retry_after() {
    let t0 = Instant::now();
    let mut m = Machine::new(params("me"), 1);
    m.apply(
        Outcome::Read(Err(StoreError::Unavailable {
            code: Some(429),
            message: "slow down".into(),
            retry_after: Some(Duration::from_secs(7)),
        })),
        t0,
    );
    assert_eq!(
        m.decide(t0, SystemTime::now()),
        Step::Wait(t0 + Duration::from_secs(7))
    );
    m.apply(
        Outcome::Read(Err(StoreError::TimedOut { after: R / 5 })),
        t0 + Duration::from_secs(7),
    );
    match m.decide(t0 + Duration::from_secs(7), SystemTime::now()) {
        Step::Wait(t) => {
            let waited = t - (t0 + Duration::from_secs(7));
            assert!(waited >= P / 2 && waited < P / 2 * 6 / 5, "{waited:?}");
        }
        other => panic!("expected a back-off, got {other:?}"),
    }
}

#[test]
fn a_candidate_of_higher_priority_is_handed_the_lease_at_once() {
    let t0 = Instant::now();
    let (mut m, mine) = leading(t0);
    let mut announced = mine.raw.clone();
    announced["metadata"]["resourceVersion"] = json!("6");
    announced["metadata"]["annotations"] = json!({
        crate::election::record::CANDIDATE_ANNOTATION: "high",
        crate::election::record::CANDIDATE_PRIORITY_ANNOTATION: "5",
    });
    let out = m.apply(Outcome::Watch(WatchEvent::Put(stored(announced))), t0);
    assert_eq!(
        out[0],
        Transition::Lost {
            reason: LossReason::HandedOver,
            epoch: Some(5)
        }
    );
    let Request::Replace { record, .. } = send(m.decide(t0, SystemTime::now())) else {
        panic!("expected the release")
    };
    assert_eq!(record.release_to.as_deref(), Some("high"));
}

/// Found by the chaos runner (seed 42, c1#1 at +39.8 s): a renewal sent before the deadline
/// but answered after it (the leader was partitioned; its held request went through on the
/// heal) made the process lead again under the epoch of the claim that had just ended — the app
/// saw "stopped leading" and then "became leader" with the same epoch. Now the late answer
/// starts nothing, and the next step re-acquires the record with a new epoch (rule 6).
#[test]
fn a_renewal_answered_after_the_claim_ran_out_does_not_resume_it_under_the_same_epoch() {
    let t0 = Instant::now();
    for notice_deadline_first in [true, false] {
        let (mut m, mine) = leading(t0);
        // The renewal leaves 1.5 s before the deadline and is answered after it.
        let sent = t0 + R - Duration::from_millis(1500);
        let answered = t0 + R + Duration::from_millis(500);
        if notice_deadline_first {
            assert!(!m.apply(Outcome::Tick, answered).is_empty());
        }
        let renewed =
            stored(json!({"metadata": {"resourceVersion": "5"}, "spec": mine.raw["spec"]}));
        let out = m.apply(
            Outcome::Replaced {
                purpose: Purpose::Renew,
                sent,
                result: Ok((renewed, false)),
            },
            answered,
        );
        assert!(
            !out.iter().any(|t| matches!(t, Transition::Acquired { .. })),
            "{out:?}"
        );
        assert!(m.tenure().is_none());
        match send(m.decide(answered, SystemTime::now())) {
            Request::Replace {
                record,
                purpose: Purpose::Acquire,
                ..
            } => assert_eq!(record.transitions, Some(6)),
            other => panic!("expected a re-acquisition, got {other:?}"),
        }
    }
}

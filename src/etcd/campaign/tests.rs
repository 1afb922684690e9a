//! Tests of the etcd campaign: the rules (E1–E7) one by one on a single [`Campaign`], then a model
//! that drives several real `Campaign`s (nothing copied) against a simulated etcd: a revision
//! counter, leases that the server expires TTL after it *received* the grant or the last
//! keep-alive, keys attached to leases (deleted with them), linearizable reads, `TimeToLive`
//! answering the remaining TTL truncated to whole seconds as etcd does
//! (`int64(l.Remaining().Seconds())`), and executors that keep one request in flight per
//! candidate, time calls out after `R/5`, and apply watch events, the app's health, releases
//! and shutdowns at any moment, also while a request is in flight (as `elector.rs` does).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::*;
use crate::election::{LossReason, Params, ReleaseOutcome, Tenure, Transition};

const D: Duration = Duration::from_secs(3);
const R: Duration = Duration::from_secs(2);
const P: Duration = Duration::from_millis(250);
const PREFIX: &str = "/leaderd/demo/";
const CLUSTER: u64 = 0xc1a5;

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn params(id: &str) -> Params {
    Params {
        identity: id.into(),
        lease_duration: D,
        renew_deadline: R,
        retry_period: P,
        priority: 0,
    }
}

fn campaign(id: &str) -> Campaign {
    Campaign::new(params(id), PREFIX.to_owned(), 1)
}

fn key(lease: i64) -> String {
    format!("{PREFIX}{lease:x}")
}

fn cand(value: &str, rev: i64, lease: i64) -> Candidate {
    Candidate {
        key: key(lease),
        value: value.into(),
        create_revision: rev,
        mod_revision: rev,
        lease,
    }
}

fn snap(revision: i64, candidates: Vec<Candidate>) -> Snapshot {
    Snapshot {
        revision,
        cluster_id: CLUSTER,
        candidates,
    }
}

fn unavailable() -> EtcdError {
    EtcdError::Unavailable {
        code: "Unavailable".into(),
        message: "no leader".into(),
    }
}

/// `c` joins the line at `t0`: reads it (`ahead` in it), is granted `lease` (sent at `t0`),
/// puts its key (create revision `rev`) and reads the line again, all at `t0`. Returns the
/// transitions of that last read.
fn join(
    c: &mut Campaign,
    t0: Instant,
    lease: i64,
    rev: i64,
    ahead: Vec<Candidate>,
) -> Vec<Transition> {
    let me = c.params.identity.clone();
    if c.decide(t0) == Step::Send(Request::Read) {
        c.apply(Outcome::Read(Ok(snap(rev - 1, ahead.clone()))), t0);
    }
    assert_eq!(c.decide(t0), Step::Send(Request::Grant { ttl: 3 }));
    c.apply(
        Outcome::Granted {
            sent: t0,
            result: Ok((lease, 3)),
        },
        t0,
    );
    assert_eq!(
        c.decide(t0),
        Step::Send(Request::Put {
            key: key(lease),
            value: me.clone(),
            lease
        })
    );
    c.apply(Outcome::Put(Ok(rev)), t0);
    assert_eq!(c.decide(t0), Step::Send(Request::Read));
    let mut line = ahead;
    line.push(cand(&me, rev, lease));
    c.apply(Outcome::Read(Ok(snap(rev, line))), t0)
}

/// "me" leads from `t0` with lease 0x1a, key revision 11 (the grant sent at `t0`).
fn leading(t0: Instant) -> Campaign {
    let mut c = campaign("me");
    let out = join(&mut c, t0, 0x1a, 11, vec![]);
    assert!(out.contains(&Transition::Acquired { epoch: 11 }), "{out:?}");
    c
}

// ---------------------------------------------------------------------------------------------
// The rules one by one

#[test]
fn grant_put_and_a_read_with_our_key_first_start_a_tenure_with_our_create_revision() {
    let t0 = Instant::now();
    let mut c = campaign("me");
    // The view first.
    assert_eq!(c.decide(t0), Step::Send(Request::Read));
    assert!(c.apply(Outcome::Read(Ok(snap(10, vec![]))), t0).is_empty());
    assert_eq!(c.decide(t0), Step::Send(Request::Grant { ttl: 3 }));
    // Answered 20 ms after it was sent: the claim runs from the send.
    let t1 = t0 + ms(20);
    c.apply(
        Outcome::Granted {
            sent: t0,
            result: Ok((0x1a, 3)),
        },
        t1,
    );
    assert_eq!(c.lease_id(), Some(0x1a));
    assert_eq!(
        c.decide(t1),
        Step::Send(Request::Put {
            key: format!("{PREFIX}1a"),
            value: "me".into(),
            lease: 0x1a
        })
    );
    assert!(c.apply(Outcome::Put(Ok(11)), t1 + ms(5)).is_empty());
    assert!(c.tenure().is_none(), "no tenure before the read");
    assert_eq!(c.decide(t1 + ms(5)), Step::Send(Request::Read));
    let out = c.apply(
        Outcome::Read(Ok(snap(11, vec![cand("me", 11, 0x1a)]))),
        t1 + ms(10),
    );
    assert_eq!(
        out,
        vec![
            Transition::Acquired { epoch: 11 },
            Transition::NewLeader {
                leader: Some("me".into()),
                epoch: Some(11)
            }
        ]
    );
    assert_eq!(
        c.tenure(),
        Some(Tenure {
            epoch: 11,
            valid_until: t0 + R
        })
    );
    assert_eq!(c.deadline(), Some(t0 + R));
}

#[test]
fn a_keep_alive_extends_the_claim_from_its_send_and_without_one_the_tenure_ends_and_a_new_key_joins(
) {
    let t0 = Instant::now();
    let mut c = leading(t0);
    // The keep-alive is due P after the grant was sent.
    assert_eq!(c.decide(t0 + ms(30)), Step::Wait(t0 + P));
    let s = t0 + P;
    assert_eq!(c.decide(s), Step::Send(Request::KeepAlive { lease: 0x1a }));
    c.apply(
        Outcome::KeptAlive {
            sent: s,
            lease: 0x1a,
            result: Ok(3),
        },
        s + ms(40),
    );
    assert_eq!(c.tenure().map(|t| t.valid_until), Some(s + R));
    // A late answer of an older keep-alive does not move the claim back.
    c.apply(
        Outcome::KeptAlive {
            sent: t0,
            lease: 0x1a,
            result: Ok(3),
        },
        s + ms(50),
    );
    assert_eq!(c.tenure().map(|t| t.valid_until), Some(s + R));
    // No keep-alive answered since: the claim runs until s + R, not an instant longer.
    assert!(c.apply(Outcome::Tick, s + R - ms(1)).is_empty());
    assert!(c.tenure().is_some());
    let out = c.apply(Outcome::Tick, s + R);
    assert_eq!(
        out.first(),
        Some(&Transition::Lost {
            reason: LossReason::RenewDeadline,
            epoch: Some(11)
        }),
        "{out:?}"
    );
    assert!(c.tenure().is_none());
    // E4: the lease is abandoned (revoked), then a new lease and a new key.
    assert_eq!(c.decide(s + R), Step::Send(Request::Revoke { lease: 0x1a }));
    let t2 = s + R + ms(10);
    c.apply(
        Outcome::Revoked {
            lease: 0x1a,
            result: Ok(()),
        },
        t2,
    );
    assert_eq!(c.lease_id(), None);
    assert_eq!(c.decide(t2), Step::Send(Request::Grant { ttl: 3 }));
    c.apply(
        Outcome::Granted {
            sent: t2,
            result: Ok((0x2b, 3)),
        },
        t2,
    );
    assert_eq!(
        c.decide(t2),
        Step::Send(Request::Put {
            key: key(0x2b),
            value: "me".into(),
            lease: 0x2b
        })
    );
    c.apply(Outcome::Put(Ok(15)), t2);
    assert_eq!(c.decide(t2), Step::Send(Request::Read));
    let out = c.apply(Outcome::Read(Ok(snap(15, vec![cand("me", 15, 0x2b)]))), t2);
    assert!(out.contains(&Transition::Acquired { epoch: 15 }), "{out:?}");
    assert!(c.tenure().is_some_and(|t| t.epoch > 11));
}

#[test]
fn a_follower_takes_over_a_deleted_predecessor_only_once_its_lease_is_gone() {
    // etcd answers -1 for a lease that does not exist (TTL 0 is not gone: see below).
    let gone_ttl = -1;
    let t0 = Instant::now();
    let mut c = campaign("me");
    let other = cand("other", 11, 0x1);
    let out = join(&mut c, t0, 0x2, 12, vec![other.clone()]);
    assert!(!out.iter().any(|t| matches!(t, Transition::Acquired { .. })));
    assert!(c.tenure().is_none());
    assert!(matches!(c.decide(t0), Step::Wait(_)), "a follower waits");
    // The predecessor's key is deleted by hand; its lease (and its owner's claim) lives on.
    c.apply(Outcome::Changed { revision: 13 }, t0 + ms(50));
    assert_eq!(c.decide(t0 + ms(50)), Step::Send(Request::Read));
    let out = c.apply(
        Outcome::Read(Ok(snap(13, vec![cand("me", 12, 0x2)]))),
        t0 + ms(55),
    );
    assert!(
        !out.iter().any(|t| matches!(t, Transition::Acquired { .. })),
        "{out:?}"
    );
    assert_eq!(
        c.decide(t0 + ms(55)),
        Step::Send(Request::CheckLease { lease: 0x1 })
    );
    let t1 = t0 + ms(60);
    let out = c.apply(
        Outcome::LeaseChecked {
            lease: 0x1,
            result: Ok(2),
        },
        t1,
    );
    assert!(out.is_empty(), "{out:?}");
    assert!(c.tenure().is_none());
    // Asked again later (at most a retry period); the keep-alive due meanwhile goes first.
    assert_eq!(c.decide(t1), Step::Wait(t1 + P));
    assert_eq!(
        c.decide(t1 + P),
        Step::Send(Request::KeepAlive { lease: 0x2 })
    );
    c.apply(
        Outcome::KeptAlive {
            sent: t1 + P,
            lease: 0x2,
            result: Ok(3),
        },
        t1 + P + ms(5),
    );
    assert!(c.tenure().is_none(), "a keep-alive does not skip the check");
    let t2 = t1 + P + ms(5);
    assert_eq!(c.decide(t2), Step::Send(Request::CheckLease { lease: 0x1 }));
    let out = c.apply(
        Outcome::LeaseChecked {
            lease: 0x1,
            result: Ok(gone_ttl),
        },
        t2,
    );
    assert!(out.contains(&Transition::Acquired { epoch: 12 }), "{out:?}");
    assert_eq!(
        c.tenure(),
        Some(Tenure {
            epoch: 12,
            valid_until: t1 + P + R
        })
    );
}

#[test]
fn a_keep_alive_answered_no_such_lease_ends_the_tenure_and_starts_over() {
    let t0 = Instant::now();
    let mut c = leading(t0);
    let s = t0 + P;
    assert_eq!(c.decide(s), Step::Send(Request::KeepAlive { lease: 0x1a }));
    let out = c.apply(
        Outcome::KeptAlive {
            sent: s,
            lease: 0x1a,
            result: Ok(0),
        },
        s + ms(5),
    );
    assert_eq!(
        out.first(),
        Some(&Transition::Lost {
            reason: LossReason::Deleted,
            epoch: Some(11)
        }),
        "{out:?}"
    );
    assert!(c.tenure().is_none());
    // The lease is gone already: nothing to revoke; a new lease.
    assert_eq!(c.decide(s + ms(5)), Step::Send(Request::Grant { ttl: 3 }));
}

#[test]
fn a_read_without_our_key_while_leading_ends_the_tenure_and_revokes() {
    let t0 = Instant::now();
    let mut c = leading(t0);
    c.apply(Outcome::Changed { revision: 12 }, t0 + ms(10));
    assert_eq!(c.decide(t0 + ms(10)), Step::Send(Request::Read));
    let out = c.apply(Outcome::Read(Ok(snap(12, vec![]))), t0 + ms(15));
    assert_eq!(
        out.first(),
        Some(&Transition::Lost {
            reason: LossReason::Deleted,
            epoch: Some(11)
        }),
        "{out:?}"
    );
    assert!(c.tenure().is_none());
    assert_eq!(
        c.decide(t0 + ms(15)),
        Step::Send(Request::Revoke { lease: 0x1a })
    );
}

#[test]
fn a_release_steps_down_first_revokes_and_keeps_out_for_a_lease_duration() {
    let t0 = Instant::now();
    let mut c = leading(t0);
    let t1 = t0 + ms(100);
    let out = c.apply(Outcome::ReleaseAsked, t1);
    assert_eq!(
        out.first(),
        Some(&Transition::Lost {
            reason: LossReason::Released,
            epoch: Some(11)
        }),
        "{out:?}"
    );
    assert!(
        !out.iter()
            .any(|t| matches!(t, Transition::ReleaseFinished(_))),
        "answered before the revoke: {out:?}"
    );
    assert!(c.tenure().is_none());
    assert_eq!(c.decide(t1), Step::Send(Request::Revoke { lease: 0x1a }));
    let out = c.apply(
        Outcome::Revoked {
            lease: 0x1a,
            result: Ok(()),
        },
        t1 + ms(5),
    );
    assert!(
        out.contains(&Transition::ReleaseFinished(ReleaseOutcome::Released {
            epoch: 11
        })),
        "{out:?}"
    );
    // Kept out of the line for D after the release.
    let mut t = t1 + ms(5);
    while t < t1 + D {
        match c.decide(t) {
            Step::Send(Request::Read) => {
                c.apply(Outcome::Read(Ok(snap(20, vec![cand("x", 19, 0x7)]))), t);
                continue;
            }
            Step::Wait(w) => assert!(w > t),
            other => panic!(
                "{other:?} during the keep-out, {:?} after the release",
                t - t1
            ),
        }
        t += ms(20);
    }
    assert_eq!(c.decide(t1 + D), Step::Send(Request::Grant { ttl: 3 }));
    // A follower asked to release answers at once.
    let mut f = campaign("f");
    f.apply(Outcome::Read(Ok(snap(3, vec![]))), t0);
    assert_eq!(
        f.apply(Outcome::ReleaseAsked, t0),
        vec![Transition::ReleaseFinished(ReleaseOutcome::NotLeader)]
    );
}

#[test]
fn a_failed_revoke_answers_the_release_not_written_and_is_retried() {
    let t0 = Instant::now();
    let mut c = leading(t0);
    c.apply(Outcome::ReleaseAsked, t0);
    assert_eq!(c.decide(t0), Step::Send(Request::Revoke { lease: 0x1a }));
    let out = c.apply(
        Outcome::Revoked {
            lease: 0x1a,
            result: Err(unavailable()),
        },
        t0 + ms(1),
    );
    assert!(
        out.iter().any(|t| matches!(
            t,
            Transition::ReleaseFinished(ReleaseOutcome::NotWritten { epoch: 11, .. })
        )),
        "{out:?}"
    );
    let Step::Wait(w) = c.decide(t0 + ms(1)) else {
        panic!("a back-off")
    };
    assert_eq!(c.decide(w), Step::Send(Request::Revoke { lease: 0x1a }));
}

#[test]
fn stop_with_release_steps_down_revokes_then_stops() {
    let t0 = Instant::now();
    let mut c = leading(t0);
    let out = c.apply(Outcome::Stop { release: true }, t0 + ms(1));
    assert_eq!(
        out.first(),
        Some(&Transition::Lost {
            reason: LossReason::Shutdown,
            epoch: Some(11)
        }),
        "{out:?}"
    );
    assert_eq!(
        c.decide(t0 + ms(1)),
        Step::Send(Request::Revoke { lease: 0x1a })
    );
    c.apply(
        Outcome::Revoked {
            lease: 0x1a,
            result: Ok(()),
        },
        t0 + ms(2),
    );
    assert_eq!(c.decide(t0 + ms(2)), Step::Stopped);
}

#[test]
fn stop_without_release_stops_at_once_without_a_revoke_when_following() {
    let t0 = Instant::now();
    let mut c = campaign("me");
    join(&mut c, t0, 0x2, 12, vec![cand("other", 11, 0x1)]);
    assert!(c.tenure().is_none());
    let out = c.apply(Outcome::Stop { release: false }, t0 + ms(1));
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(c.decide(t0 + ms(1)), Step::Stopped);
}

/// Fails today (see the report): `Stop { release: false }` while leading goes through `lose`,
/// which abandons the lease, so a Revoke is sent although `--release-on-shutdown` is off.
#[test]
fn stop_without_release_stops_at_once_without_a_revoke_when_leading() {
    let t0 = Instant::now();
    let mut c = leading(t0);
    let out = c.apply(Outcome::Stop { release: false }, t0 + ms(1));
    assert_eq!(
        out.first(),
        Some(&Transition::Lost {
            reason: LossReason::Shutdown,
            epoch: Some(11)
        }),
        "{out:?}"
    );
    assert_eq!(c.decide(t0 + ms(1)), Step::Stopped);
}

#[test]
fn a_revoke_failing_three_times_at_shutdown_stops_anyway() {
    let t0 = Instant::now();
    let mut c = leading(t0);
    c.apply(Outcome::Stop { release: true }, t0);
    let mut t = t0;
    for _ in 0..3 {
        let step = loop {
            match c.decide(t) {
                Step::Wait(w) => {
                    assert!(w > t);
                    t = w;
                }
                s => break s,
            }
        };
        assert_eq!(step, Step::Send(Request::Revoke { lease: 0x1a }));
        t += ms(1);
        c.apply(
            Outcome::Revoked {
                lease: 0x1a,
                result: Err(unavailable()),
            },
            t,
        );
    }
    // (After a last back-off.)
    let step = match c.decide(t) {
        Step::Wait(w) => {
            assert!(w <= t + P);
            c.decide(w)
        }
        s => s,
    };
    assert_eq!(step, Step::Stopped);
}

#[test]
fn leadership_follows_the_apps_health() {
    let t0 = Instant::now();
    let mut c = campaign("me").with_app_check();
    let mut t = t0;
    // Unhealthy (unknown): reads, never a grant.
    while t < t0 + D {
        match c.decide(t) {
            Step::Send(Request::Read) => {
                c.apply(Outcome::Read(Ok(snap(5, vec![]))), t);
                continue;
            }
            Step::Wait(w) => assert!(w > t),
            other => panic!("{other:?} while the app is unhealthy"),
        }
        t += ms(50);
    }
    c.apply(Outcome::AppHealth(true), t);
    assert_eq!(c.decide(t), Step::Send(Request::Grant { ttl: 3 }));
    // Leading, the app turns unhealthy: step down, then revoke.
    let mut c = campaign("me").with_app_check();
    c.apply(Outcome::AppHealth(true), t0);
    join(&mut c, t0, 0x1a, 11, vec![]);
    assert!(c.tenure().is_some());
    let out = c.apply(Outcome::AppHealth(false), t0 + ms(1));
    assert_eq!(
        out.first(),
        Some(&Transition::Lost {
            reason: LossReason::AppUnhealthy,
            epoch: Some(11)
        }),
        "{out:?}"
    );
    assert_eq!(
        c.decide(t0 + ms(1)),
        Step::Send(Request::Revoke { lease: 0x1a })
    );
    c.apply(
        Outcome::Revoked {
            lease: 0x1a,
            result: Ok(()),
        },
        t0 + ms(2),
    );
    assert_ne!(c.decide(t0 + ms(2)), Step::Send(Request::Grant { ttl: 3 }));
    // Following with a lease: out of the line.
    let mut c = campaign("me").with_app_check();
    c.apply(Outcome::AppHealth(true), t0);
    join(&mut c, t0, 0x2, 12, vec![cand("other", 11, 0x1)]);
    assert!(c.tenure().is_none());
    let out = c.apply(Outcome::AppHealth(false), t0 + ms(1));
    assert!(
        !out.iter().any(|t| matches!(t, Transition::Lost { .. })),
        "{out:?}"
    );
    assert_eq!(
        c.decide(t0 + ms(1)),
        Step::Send(Request::Revoke { lease: 0x2 })
    );
    // A grant answered while unhealthy is given up at once.
    let mut c = campaign("me").with_app_check();
    c.apply(Outcome::Read(Ok(snap(5, vec![]))), t0);
    c.apply(Outcome::AppHealth(true), t0);
    assert_eq!(c.decide(t0), Step::Send(Request::Grant { ttl: 3 }));
    c.apply(Outcome::AppHealth(false), t0);
    c.apply(
        Outcome::Granted {
            sent: t0,
            result: Ok((0x9, 3)),
        },
        t0 + ms(1),
    );
    assert_eq!(
        c.decide(t0 + ms(1)),
        Step::Send(Request::Revoke { lease: 0x9 })
    );
}

#[test]
fn a_timed_out_keep_alive_is_retried_at_once_a_failed_one_after_a_back_off() {
    let t0 = Instant::now();
    let mut c = leading(t0);
    let s = t0 + P;
    assert_eq!(c.decide(s), Step::Send(Request::KeepAlive { lease: 0x1a }));
    let t = s + R / 5;
    c.apply(
        Outcome::KeptAlive {
            sent: s,
            lease: 0x1a,
            result: Err(EtcdError::TimedOut { after: R / 5 }),
        },
        t,
    );
    assert_eq!(c.decide(t), Step::Send(Request::KeepAlive { lease: 0x1a }));
    let t = t + ms(1);
    c.apply(
        Outcome::KeptAlive {
            sent: t - ms(1),
            lease: 0x1a,
            result: Err(unavailable()),
        },
        t,
    );
    let Step::Wait(w) = c.decide(t) else {
        panic!("a back-off")
    };
    assert!(w >= t + P / 2 && w < t + P * 6 / 10, "{:?}", w - t);
    assert_eq!(c.decide(w), Step::Send(Request::KeepAlive { lease: 0x1a }));
    assert!(c.tenure().is_some(), "still within the claim");
}

#[test]
fn the_view_names_the_first_in_line_and_the_cluster() {
    let t0 = Instant::now();
    let mut c = campaign("me");
    assert!(!c.view().ready);
    let out = join(&mut c, t0, 0x2, 12, vec![cand("other", 11, 0x1)]);
    assert!(
        out.contains(&Transition::NewLeader {
            leader: Some("other".into()),
            epoch: Some(11)
        }) || c.view().holder.is_some(),
        "{out:?}"
    );
    let v = c.view();
    assert!(v.ready);
    assert_eq!(v.holder.as_deref(), Some("other"));
    assert_eq!(v.epoch, Some(11));
    assert_eq!(v.lease_uid.as_deref(), Some("etcd-c1a5"));
    assert_eq!(v.tenure, None);
    let l = leading(t0);
    let v = l.view();
    assert_eq!(v.holder.as_deref(), Some("me"));
    assert_eq!(v.epoch, Some(11));
    assert_eq!(v.tenure.map(|t| t.epoch), Some(11));
    assert_eq!(v.lease_uid.as_deref(), Some("etcd-c1a5"));
}

/// Fails today (see the report): a watch event applied while a Read is in flight is lost when
/// the Read's answer (taken before the change) arrives: `stale` is cleared, and with the watch up
/// nothing reads again until the next change. A follower next in line then never learns that
/// the leader's key went away (a crashed leader's expiry, a revoke): nobody leads.
#[test]
fn a_watch_event_while_a_read_is_in_flight_is_not_lost() {
    let t0 = Instant::now();
    let mut c = campaign("me");
    c.apply(Outcome::WatchUp, t0);
    join(&mut c, t0, 0x2, 12, vec![cand("other", 11, 0x1)]);
    // Something changes: the campaign reads; the server answers with the line as it is...
    c.apply(Outcome::Changed { revision: 12 }, t0 + ms(10));
    assert_eq!(c.decide(t0 + ms(10)), Step::Send(Request::Read));
    // ...then the leader's lease expires (its key goes, revision 13) and the watch tells us
    // before the read's answer, taken at revision 12, comes back.
    c.apply(Outcome::Changed { revision: 13 }, t0 + ms(12));
    c.apply(
        Outcome::Read(Ok(snap(
            12,
            vec![cand("other", 11, 0x1), cand("me", 12, 0x2)],
        ))),
        t0 + ms(14),
    );
    // The answer predates the change: the line must be read again.
    assert_eq!(c.decide(t0 + ms(14)), Step::Send(Request::Read));
}

/// Fails today (see the report): etcd's `LeaseTimeToLive` answers `int64(remaining seconds)`,
/// truncated: TTL 0 while up to a second remains. E3 takes TTL <= 0 as "gone". With a valid
/// configuration whose R > D - 1 s (here D = 3 s, R = 2.5 s; the flags only require R < D), the
/// owner of a key deleted by hand still claims when its successor, which *saw* that key, takes
/// over.
#[test]
fn a_lease_with_under_a_second_left_is_not_gone() {
    let long = |id: &str| Params {
        renew_deadline: Duration::from_millis(2500),
        ..params(id)
    };
    let t0 = Instant::now();
    // a leads: key rev 11 on lease 0x1, granted at t0 (etcd expires it at t0 + 3 s at the earliest).
    let mut a = Campaign::new(long("a"), PREFIX.into(), 1);
    join(&mut a, t0, 0x1, 11, vec![]);
    assert!(a.tenure().is_some_and(|t| t.valid_until == t0 + ms(2500)));
    // b queues behind it and sees a's key.
    let mut b = Campaign::new(long("b"), PREFIX.into(), 2);
    join(&mut b, t0, 0x2, 12, vec![cand("a", 11, 0x1)]);
    // a's key is deleted by hand at t0 + 2.1 s; b reads, checks a's lease: 0.9 s remain -> TTL 0.
    // (b's own keep-alive at t0 + 2.1 s keeps its claim window open.)
    let t = t0 + ms(2100);
    b.apply(
        Outcome::KeptAlive {
            sent: t,
            lease: 0x2,
            result: Ok(3),
        },
        t,
    );
    b.apply(Outcome::Read(Ok(snap(13, vec![cand("b", 12, 0x2)]))), t);
    assert_eq!(b.decide(t), Step::Send(Request::CheckLease { lease: 0x1 }));
    let remaining = (t0 + D) - t;
    let ttl = remaining.as_secs_f64() as i64; // etcd: int64(l.Remaining().Seconds())
    assert_eq!(ttl, 0);
    b.apply(
        Outcome::LeaseChecked {
            lease: 0x1,
            result: Ok(ttl),
        },
        t,
    );
    let both = a.tenure().is_some_and(|x| x.is_valid_at(t))
        && b.tenure().is_some_and(|x| x.is_valid_at(t));
    assert!(
        !both,
        "a claims until t0 + 2.5 s and b leads from t0 + 2.1 s"
    );
}

// ---------------------------------------------------------------------------------------------
// The model: several campaigns against a simulated etcd

//
// The simulated etcd works on true time (one clock, the model's `now`). Every candidate runs on
// its own clock: `local = t0 + off + (now - t0) * rate` (rate 1 and no offset on one clock; with
// drift, rates within ±((D−R)/D)/2 of etcd's). Its executor keeps at most one request in flight;
// the request is processed by the server at some instant after it was sent (its answer carries
// the server's state at that instant), or lost; the answer is delivered, or lost; a call not
// answered within R/5 (on the candidate's clock) ends in `EtcdError::TimedOut`, and a request
// that timed out may still be applied later. Watch events (`Changed`) follow every write under
// the prefix within 100 ms, and are applied whenever they arrive, also while a request is in
// flight (as the executor does). Crashed candidates leave their leases to expire; partitioned
// ones lose every request and their watch; foreign deletes remove keys (not leases).
//
// Invariants after every event:
// (a) at every instant at most one live candidate claims (`local now < valid_until`). Excused:
//     an overlap of X and Y where X's tenure key was deleted by hand and Y never saw that key
//     ahead of its own. Such a hand deletion puts Y first although X's lease (and claim) lives
//     on, and X only learns of it on its next read; E3 only waits out the leases of keys Y saw.
//     An overlap where Y *had* seen X's deleted key is not excused.
// (b) epochs of tenures, ordered by start, strictly increase (excused only when the acquirer's
//     own key had been deleted by hand: it may acquire on a read that predates the deletion);
// (c) at acquisition the server's first key is the acquirer's, with create revision = epoch
//     (same excuse);
// (d) once faults stop (partitions healed, the dead restarted, apps healthy, watches up,
//     nothing lost), some candidate leads within D + 6P.
// Also: no step while unhealthy other than Read/Revoke (E7), a Revoke only without a tenure
// (E5), a stopping candidate sends only Revokes, `decide` never returns `Wait` in the past.

/// Clock-rate spread allowed with drift: ±((D − R)/D)/2.
const DRIFT: f64 = (3.0 - 2.0) / 3.0 / 2.0;
/// Watch events arrive at most this long after their write.
const WATCH_LAG: Duration = Duration::from_millis(100);
/// Liveness bound after the faults stop.
const LIVE_WITHIN: Duration = Duration::from_millis(3000 + 6 * 250);

#[derive(Clone, Debug)]
struct SimLease {
    ttl: i64,
    /// Receive time of the grant or of the last keep-alive + TTL (true time).
    expiry: Instant,
    keys: BTreeSet<String>,
}

#[derive(Clone, Debug)]
struct SimKv {
    value: String,
    create: i64,
    modr: i64,
    lease: i64,
}

struct Etcd {
    rev: i64,
    next_lease: i64,
    leases: BTreeMap<i64, SimLease>,
    kvs: BTreeMap<String, SimKv>,
}

impl Etcd {
    fn new() -> Etcd {
        Etcd {
            rev: 100,
            next_lease: 0x7000,
            leases: BTreeMap::new(),
            kvs: BTreeMap::new(),
        }
    }

    /// Expire every lease whose time has come; whether a key went.
    fn expire(&mut self, now: Instant) -> bool {
        let due: Vec<i64> = self
            .leases
            .iter()
            .filter(|(_, l)| l.expiry <= now)
            .map(|(id, _)| *id)
            .collect();
        let mut changed = false;
        for id in due {
            changed |= self.drop_lease(id);
        }
        changed
    }

    fn drop_lease(&mut self, id: i64) -> bool {
        let Some(l) = self.leases.remove(&id) else {
            return false;
        };
        let mut any = false;
        for k in &l.keys {
            any |= self.kvs.remove(k).is_some();
        }
        if any {
            self.rev += 1;
        }
        any
    }

    fn delete_key(&mut self, k: &str) -> bool {
        let Some(kv) = self.kvs.remove(k) else {
            return false;
        };
        if let Some(l) = self.leases.get_mut(&kv.lease) {
            l.keys.remove(k);
        }
        self.rev += 1;
        true
    }

    fn next_expiry(&self) -> Option<Instant> {
        self.leases.values().map(|l| l.expiry).min()
    }

    fn first(&self) -> Option<(String, i64)> {
        self.kvs
            .iter()
            .min_by_key(|(_, kv)| kv.create)
            .map(|(k, kv)| (k.clone(), kv.create))
    }

    fn snapshot(&self) -> Snapshot {
        let mut candidates: Vec<Candidate> = self
            .kvs
            .iter()
            .map(|(k, kv)| Candidate {
                key: k.clone(),
                value: kv.value.clone(),
                create_revision: kv.create,
                mod_revision: kv.modr,
                lease: kv.lease,
            })
            .collect();
        candidates.sort_by_key(|c| c.create_revision);
        snap(self.rev, candidates)
    }

    /// Process `req` (sent at `sent` on its sender's clock) at `now`: the answer, and whether
    /// the line changed.
    fn handle(&mut self, req: &Request, sent: Instant, now: Instant) -> (Outcome, bool) {
        let mut changed = self.expire(now);
        let out = match req {
            Request::Grant { ttl } => {
                self.next_lease += 1 + self.next_lease % 7;
                let id = self.next_lease;
                self.leases.insert(
                    id,
                    SimLease {
                        ttl: *ttl,
                        expiry: now + Duration::from_secs(*ttl as u64),
                        keys: BTreeSet::new(),
                    },
                );
                Outcome::Granted {
                    sent,
                    result: Ok((id, *ttl)),
                }
            }
            Request::Put { key, value, lease } => {
                if let Some(kv) = self.kvs.get(key) {
                    Outcome::Put(Ok(kv.create))
                } else if let Some(l) = self.leases.get_mut(lease) {
                    self.rev += 1;
                    l.keys.insert(key.clone());
                    self.kvs.insert(
                        key.clone(),
                        SimKv {
                            value: value.clone(),
                            create: self.rev,
                            modr: self.rev,
                            lease: *lease,
                        },
                    );
                    changed = true;
                    Outcome::Put(Ok(self.rev))
                } else {
                    Outcome::Put(Err(EtcdError::LeaseNotFound))
                }
            }
            Request::Read => Outcome::Read(Ok(self.snapshot())),
            Request::KeepAlive { lease } => {
                let result = match self.leases.get_mut(lease) {
                    Some(l) => {
                        l.expiry = now + Duration::from_secs(l.ttl as u64);
                        Ok(l.ttl)
                    }
                    None => Ok(0),
                };
                Outcome::KeptAlive {
                    sent,
                    lease: *lease,
                    result,
                }
            }
            Request::CheckLease { lease } => {
                // etcd: TTL = int64(l.Remaining().Seconds()) (truncated); -1 when not found.
                let result = match self.leases.get(lease) {
                    Some(l) => Ok((l.expiry - now).as_secs_f64() as i64),
                    None => Ok(-1),
                };
                Outcome::LeaseChecked {
                    lease: *lease,
                    result,
                }
            }
            Request::Revoke { lease } => {
                let result = if self.leases.contains_key(lease) {
                    changed |= self.drop_lease(*lease);
                    Ok(())
                } else {
                    Err(EtcdError::LeaseNotFound)
                };
                Outcome::Revoked {
                    lease: *lease,
                    result,
                }
            }
        };
        (out, changed)
    }
}

fn timed_out(req: &Request, sent: Instant) -> Outcome {
    let e = EtcdError::TimedOut { after: R / 5 };
    match req {
        Request::Grant { .. } => Outcome::Granted {
            sent,
            result: Err(e),
        },
        Request::Put { .. } => Outcome::Put(Err(e)),
        Request::Read => Outcome::Read(Err(e)),
        Request::KeepAlive { lease } => Outcome::KeptAlive {
            sent,
            lease: *lease,
            result: Err(e),
        },
        Request::CheckLease { lease } => Outcome::LeaseChecked {
            lease: *lease,
            result: Err(e),
        },
        Request::Revoke { lease } => Outcome::Revoked {
            lease: *lease,
            result: Err(e),
        },
    }
}

enum Flight {
    Pending,
    Lost,
    Answered(Outcome),
    AnswerLost,
}

struct Pending {
    req: Request,
    /// On the sender's clock.
    sent: Instant,
    /// True time of the call timeout.
    timeout_at: Instant,
    flight: Flight,
}

struct Node {
    uid: usize,
    c: Campaign,
    alive: bool,
    stopping: bool,
    rate: f64,
    off: Duration,
    pending: Option<Pending>,
    /// True time of the executor's timer.
    wake: Option<Instant>,
    watch_up: bool,
    /// True times of writes whose watch event is on its way.
    changes: Vec<(Instant, i64)>,
    cut_until: Option<Instant>,
    gated: bool,
    healthy: bool,
    /// Keys seen ahead of each of our keys, in reads answered to us.
    seen: BTreeMap<String, BTreeSet<String>>,
    tenure_key: Option<String>,
}

struct Orphan {
    at: Instant,
    req: Request,
    sent: Instant,
}

#[derive(Default, Debug, Clone)]
struct Stats {
    runs: u64,
    steps: u64,
    tenures: u64,
    excused_overlap_checks: u64,
    acquired_with_deleted_key: u64,
    excused_epochs: u64,
    hand_deletes: u64,
    crashes: u64,
    partitions: u64,
    timeouts: u64,
    releases: u64,
    stops: u64,
    max_time_to_lead: Duration,
}

struct World {
    rng: fastrand::Rng,
    t0: Instant,
    now: Instant,
    etcd: Etcd,
    nodes: Vec<Node>,
    next_uid: usize,
    drift: bool,
    gated: bool,
    orphans: Vec<Orphan>,
    hand_deleted: BTreeSet<String>,
    /// (uid, epoch, start) of every tenure, in order of start.
    tenures: Vec<(usize, i64, Instant)>,
    max_epoch: i64,
    stats: Stats,
    trace: std::collections::VecDeque<String>,
}

type Check = Result<(), String>;

impl World {
    fn new(seed: u64, n: usize, drift: bool, gated: bool) -> World {
        let t0 = Instant::now();
        let mut w = World {
            rng: fastrand::Rng::with_seed(seed),
            t0,
            now: t0,
            etcd: Etcd::new(),
            nodes: Vec::new(),
            next_uid: 0,
            drift,
            gated,
            orphans: Vec::new(),
            hand_deleted: BTreeSet::new(),
            tenures: Vec::new(),
            max_epoch: 0,
            stats: Stats::default(),
            trace: Default::default(),
        };
        for i in 0..n {
            w.spawn(i, format!("c{i}"), true).expect("start");
        }
        w
    }

    fn log(&mut self, s: String) {
        if self.trace.len() as u64 >= env_u64("LEADERD_MODEL_TRACE", 80) {
            self.trace.pop_front();
        }
        let t = (self.now - self.t0).as_secs_f64();
        self.trace.push_back(format!("{t:9.4} {s}"));
    }

    fn local(&self, i: usize) -> Instant {
        let n = &self.nodes[i];
        self.t0 + n.off + (self.now - self.t0).mul_f64(n.rate)
    }

    fn true_of(&self, i: usize, l: Instant) -> Instant {
        let n = &self.nodes[i];
        let base = self.t0 + n.off;
        if l <= base {
            self.t0
        } else {
            self.t0 + (l - base).div_f64(n.rate)
        }
    }

    fn spawn(&mut self, slot: usize, identity: String, first: bool) -> Check {
        let uid = self.next_uid;
        self.next_uid += 1;
        let mut c = Campaign::new(params(&identity), PREFIX.to_owned(), self.rng.u64(..));
        if self.gated {
            c = c.with_app_check();
        }
        let (rate, off) = if self.drift {
            (
                1.0 + (self.rng.f64() * 2.0 - 1.0) * DRIFT,
                ms(self.rng.u64(0..10_000)),
            )
        } else {
            (1.0, Duration::ZERO)
        };
        let node = Node {
            uid,
            c,
            alive: true,
            stopping: false,
            rate,
            off,
            pending: None,
            wake: None,
            watch_up: false,
            changes: Vec::new(),
            cut_until: None,
            gated: self.gated,
            healthy: !self.gated,
            seen: BTreeMap::new(),
            tenure_key: None,
        };
        if first {
            self.nodes.push(node);
        } else {
            self.nodes[slot] = node;
        }
        self.log(format!(
            "c{uid} ({identity}) starts in slot {slot}, rate {rate:.3}"
        ));
        if self.gated {
            let h = self.rng.f64() < 0.7;
            self.nodes[slot].healthy = h;
            self.apply(slot, Outcome::AppHealth(h))?;
        }
        if self.rng.f64() < 0.85 {
            self.nodes[slot].watch_up = true;
            self.apply(slot, Outcome::WatchUp)?;
        }
        self.run(slot)
    }

    /// Apply an outcome to candidate `i` at its local now, as its executor would.
    fn apply(&mut self, i: usize, o: Outcome) -> Check {
        let l = self.local(i);
        if let Outcome::Read(Ok(s)) = &o {
            if let Some(lease) = self.nodes[i].c.lease_id() {
                let mine = key(lease);
                if let Some(pos) = s.candidates.iter().position(|c| c.key == mine) {
                    let seen = self.nodes[i].seen.entry(mine).or_default();
                    for c in &s.candidates[..pos] {
                        seen.insert(c.key.clone());
                    }
                }
            }
        }
        let uid = self.nodes[i].uid;
        let what = format!("{o:?}");
        let out = self.nodes[i].c.apply(o, l);
        self.log(format!("c{uid} <- {what:.160} => {out:?}"));
        for t in out {
            match t {
                Transition::Acquired { epoch } => self.acquired(i, epoch)?,
                Transition::Lost { .. } => self.nodes[i].tenure_key = None,
                _ => {}
            }
        }
        Ok(())
    }

    fn acquired(&mut self, i: usize, epoch: i64) -> Check {
        let uid = self.nodes[i].uid;
        let lease = self.nodes[i]
            .c
            .lease_id()
            .ok_or_else(|| format!("c{uid} acquired without a lease"))?;
        let mine = key(lease);
        self.stats.tenures += 1;
        let deleted = self.hand_deleted.contains(&mine);
        if deleted {
            self.stats.acquired_with_deleted_key += 1;
        }
        match self.etcd.first() {
            Some((k, create)) if k == mine && create == epoch => {}
            _ if deleted => {}
            other => {
                return Err(format!(
                "(c) c{uid} acquired epoch {epoch} with key {mine}; the server's first: {other:?}"
            ))
            }
        }
        if epoch <= self.max_epoch {
            if deleted {
                self.stats.excused_epochs += 1;
            } else {
                return Err(format!(
                    "(b) c{uid} acquired epoch {epoch} after {:?}",
                    self.tenures
                ));
            }
        }
        self.max_epoch = self.max_epoch.max(epoch);
        self.tenures.push((uid, epoch, self.now));
        self.nodes[i].tenure_key = Some(mine);
        Ok(())
    }

    /// Apply an input and let an idle executor act on it.
    fn input(&mut self, i: usize, o: Outcome) -> Check {
        self.apply(i, o)?;
        self.run(i)
    }

    /// The executor's loop while no request is in flight: Tick, decide, send or sleep.
    fn run(&mut self, i: usize) -> Check {
        if !self.nodes[i].alive || self.nodes[i].pending.is_some() {
            return Ok(());
        }
        self.apply(i, Outcome::Tick)?;
        let l = self.local(i);
        let n = &self.nodes[i];
        let uid = n.uid;
        let step = n.c.decide(l);
        match step {
            Step::Stopped => {
                self.log(format!("c{uid} stopped"));
                let n = &mut self.nodes[i];
                if !n.stopping {
                    return Err(format!("c{uid} stopped without being asked"));
                }
                n.alive = false;
                n.wake = None;
                n.changes.clear();
            }
            Step::Wait(t) => {
                if t <= l {
                    return Err(format!("c{uid}: decide returned Wait in the past"));
                }
                let at = self.true_of(i, t + ms(1));
                self.nodes[i].wake = Some(at);
            }
            Step::Send(req) => {
                if n.c.view().app_healthy == Some(false)
                    && !matches!(req, Request::Read | Request::Revoke { .. })
                {
                    return Err(format!("(E7) c{uid} sent {req:?} with an unhealthy app"));
                }
                if matches!(req, Request::Revoke { .. }) && n.c.tenure().is_some() {
                    return Err(format!("(E5) c{uid} revokes while claiming"));
                }
                if n.stopping && !matches!(req, Request::Revoke { .. }) {
                    return Err(format!("c{uid} sent {req:?} while stopping"));
                }
                if let Request::KeepAlive { lease } | Request::Put { lease, .. } = &req {
                    if n.c.lease_id() != Some(*lease) {
                        return Err(format!("c{uid} sent {req:?} for a lease not its own"));
                    }
                }
                let flight = if n.cut_until.is_some() {
                    Flight::Lost
                } else {
                    Flight::Pending
                };
                let timeout_at = self.now + (R / 5).div_f64(n.rate);
                self.log(format!("c{uid} -> {req:?}"));
                let n = &mut self.nodes[i];
                n.wake = None;
                n.pending = Some(Pending {
                    req,
                    sent: l,
                    timeout_at,
                    flight,
                });
            }
        }
        Ok(())
    }

    fn notify(&mut self) {
        let (now, rev) = (self.now, self.etcd.rev);
        for n in &mut self.nodes {
            if n.alive && n.watch_up && n.cut_until.is_none() {
                n.changes.push((now, rev));
            }
        }
    }

    fn process(&mut self, i: usize) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let Some(p) = n.pending.as_mut() else { return };
        if !matches!(p.flight, Flight::Pending) || n.cut_until.is_some() {
            return;
        }
        let (o, changed) = self.etcd.handle(&p.req, p.sent, now);
        p.flight = Flight::Answered(o);
        let uid = n.uid;
        self.log(format!(
            "etcd processes c{uid}'s request (changed: {changed})"
        ));
        if changed {
            self.notify();
        }
    }

    fn answer(&mut self, i: usize) -> Check {
        let n = &mut self.nodes[i];
        if !matches!(
            n.pending.as_ref().map(|p| &p.flight),
            Some(Flight::Answered(_))
        ) {
            return Ok(());
        }
        let Some(Pending {
            flight: Flight::Answered(o),
            ..
        }) = n.pending.take()
        else {
            unreachable!()
        };
        self.input(i, o)
    }

    fn time_out(&mut self, i: usize) -> Check {
        let Some(p) = self.nodes[i].pending.take() else {
            return Ok(());
        };
        self.stats.timeouts += 1;
        if matches!(p.flight, Flight::Pending) && self.rng.bool() {
            let at = self.now + ms(self.rng.u64(0..500));
            self.orphans.push(Orphan {
                at,
                req: p.req.clone(),
                sent: p.sent,
            });
        }
        self.input(i, timed_out(&p.req, p.sent))
    }

    fn deadline(&self, i: usize) -> Option<Instant> {
        self.nodes[i]
            .c
            .deadline()
            .map(|t| self.true_of(i, t + ms(1)))
    }

    fn next_event(&self) -> Option<Instant> {
        let mut next = self.etcd.next_expiry();
        let mut consider = |t: Option<Instant>| {
            if let Some(t) = t {
                next = Some(next.map_or(t, |n| n.min(t)));
            }
        };
        for o in &self.orphans {
            consider(Some(o.at));
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if !n.alive {
                continue;
            }
            consider(n.pending.as_ref().map(|p| p.timeout_at));
            consider(n.wake);
            consider(self.deadline(i));
            consider(n.changes.first().map(|(t, _)| *t + WATCH_LAG));
            consider(n.cut_until);
        }
        next
    }

    /// Everything due at `now`.
    fn fire(&mut self) -> Check {
        let now = self.now;
        if self.etcd.expire(now) {
            self.log("etcd expires a lease with a key".into());
            self.notify();
        }
        let mut k = 0;
        while k < self.orphans.len() {
            if self.orphans[k].at <= now {
                let o = self.orphans.swap_remove(k);
                let (_, changed) = self.etcd.handle(&o.req, o.sent, now);
                self.log(format!(
                    "etcd processes a late {:?} (changed: {changed})",
                    o.req
                ));
                if changed {
                    self.notify();
                }
            } else {
                k += 1;
            }
        }
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                continue;
            }
            if self.nodes[i].cut_until.is_some_and(|t| t <= now) {
                self.heal(i)?;
            }
            if self.nodes[i]
                .pending
                .as_ref()
                .is_some_and(|p| p.timeout_at <= now)
            {
                self.time_out(i)?;
            }
            if self.nodes[i].wake.is_some_and(|t| t <= now) {
                self.nodes[i].wake = None;
                self.run(i)?;
            }
            if self.deadline(i).is_some_and(|t| t <= now) {
                self.input(i, Outcome::Tick)?;
            }
            while self.nodes[i].alive
                && self.nodes[i]
                    .changes
                    .first()
                    .is_some_and(|(t, _)| *t + WATCH_LAG <= now)
            {
                let (_, revision) = self.nodes[i].changes.remove(0);
                self.input(i, Outcome::Changed { revision })?;
            }
        }
        Ok(())
    }

    fn advance(&mut self, dt: Duration) -> Check {
        let target = self.now + dt;
        let mut guard = 0;
        while let Some(t) = self.next_event().filter(|t| *t <= target) {
            self.now = self.now.max(t);
            self.fire()?;
            self.check()?;
            guard += 1;
            if guard > 100_000 {
                return Err("the model's clock does not move (an event that never clears)".into());
            }
        }
        self.now = target;
        self.check()
    }

    fn heal(&mut self, i: usize) -> Check {
        let n = &mut self.nodes[i];
        n.cut_until = None;
        n.watch_up = true;
        let uid = n.uid;
        self.log(format!("c{uid} reconnected"));
        self.input(i, Outcome::WatchUp)
    }

    fn check(&mut self) -> Check {
        let claimers: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| {
                self.nodes[i].alive
                    && self.nodes[i]
                        .c
                        .tenure()
                        .is_some_and(|t| t.is_valid_at(self.local(i)))
            })
            .collect();
        for &i in &claimers {
            if self.nodes[i].c.view().app_healthy == Some(false) {
                return Err(format!(
                    "c{} leads with an unhealthy app",
                    self.nodes[i].uid
                ));
            }
        }
        for (a, &x) in claimers.iter().enumerate() {
            for &y in &claimers[a + 1..] {
                let excused = |x: usize, y: usize| {
                    let (nx, ny) = (&self.nodes[x], &self.nodes[y]);
                    let Some(kx) = &nx.tenure_key else {
                        return false;
                    };
                    self.hand_deleted.contains(kx)
                        && !ny
                            .tenure_key
                            .as_ref()
                            .and_then(|ky| ny.seen.get(ky))
                            .is_some_and(|s| s.contains(kx))
                };
                if excused(x, y) || excused(y, x) {
                    self.stats.excused_overlap_checks += 1;
                } else {
                    return Err(format!(
                        "(a) two leaders: c{} {:?} (key {:?}) and c{} {:?} (key {:?}); hand-deleted: {:?}",
                        self.nodes[x].uid,
                        self.nodes[x].c.tenure(),
                        self.nodes[x].tenure_key,
                        self.nodes[y].uid,
                        self.nodes[y].c.tenure(),
                        self.nodes[y].tenure_key,
                        self.hand_deleted
                    ));
                }
            }
        }
        Ok(())
    }

    fn pick(&mut self, f: impl Fn(&Node) -> bool) -> Option<usize> {
        let v: Vec<usize> = (0..self.nodes.len())
            .filter(|&i| f(&self.nodes[i]))
            .collect();
        (!v.is_empty()).then(|| v[self.rng.usize(0..v.len())])
    }

    fn crash(&mut self, i: usize) {
        self.stats.crashes += 1;
        let at = self.now + ms(self.rng.u64(0..300));
        let late = self.rng.bool();
        let n = &mut self.nodes[i];
        n.alive = false;
        n.wake = None;
        n.changes.clear();
        if let Some(p) = n.pending.take() {
            if matches!(p.flight, Flight::Pending) && late {
                self.orphans.push(Orphan {
                    at,
                    req: p.req,
                    sent: p.sent,
                });
            }
        }
        let uid = self.nodes[i].uid;
        self.log(format!("c{uid} crashes"));
    }

    fn restart(&mut self, i: usize) -> Check {
        let identity = if self.rng.bool() {
            self.nodes[i].c.params.identity.clone()
        } else {
            format!("c{i}.{}", self.next_uid)
        };
        self.spawn(i, identity, false)
    }

    /// One chaotic event.
    fn chaos(&mut self) -> Check {
        self.stats.steps += 1;
        let r = self.rng.u32(0..1000);
        match r {
            0..=249 => {
                if let Some(i) = self.pick(|n| {
                    n.alive
                        && n.cut_until.is_none()
                        && matches!(n.pending.as_ref().map(|p| &p.flight), Some(Flight::Pending))
                }) {
                    self.process(i);
                }
            }
            250..=499 => {
                if let Some(i) = self.pick(|n| {
                    n.alive
                        && matches!(
                            n.pending.as_ref().map(|p| &p.flight),
                            Some(Flight::Answered(_))
                        )
                }) {
                    self.answer(i)?;
                }
            }
            500..=514 => {
                if let Some(i) = self.pick(|n| {
                    n.alive
                        && matches!(n.pending.as_ref().map(|p| &p.flight), Some(Flight::Pending))
                }) {
                    self.nodes[i].pending.as_mut().expect("picked").flight = Flight::Lost;
                    let uid = self.nodes[i].uid;
                    self.log(format!("c{uid}'s request is lost"));
                }
            }
            515..=529 => {
                if let Some(i) = self.pick(|n| {
                    n.alive
                        && matches!(
                            n.pending.as_ref().map(|p| &p.flight),
                            Some(Flight::Answered(_))
                        )
                }) {
                    self.nodes[i].pending.as_mut().expect("picked").flight = Flight::AnswerLost;
                    let uid = self.nodes[i].uid;
                    self.log(format!("c{uid}'s answer is lost"));
                }
            }
            530..=619 => {
                if let Some(i) = self.pick(|n| n.alive && !n.changes.is_empty()) {
                    let (_, revision) = self.nodes[i].changes.remove(0);
                    self.input(i, Outcome::Changed { revision })?;
                }
            }
            620..=899 => {
                let dt = match self.rng.u32(0..100) {
                    0..=69 => ms(self.rng.u64(1..60)),
                    70..=94 => ms(self.rng.u64(60..600)),
                    _ => ms(self.rng.u64(600..3000)),
                };
                self.advance(dt)?;
            }
            900..=907 => {
                if let Some(i) = self.pick(|n| n.alive) {
                    self.crash(i);
                }
            }
            908..=929 => {
                if let Some(i) = self.pick(|n| !n.alive) {
                    self.restart(i)?;
                }
            }
            930..=939 => {
                if let Some(i) = self.pick(|n| n.alive && n.cut_until.is_none()) {
                    self.stats.partitions += 1;
                    let until = self.now + ms(self.rng.u64(100..4000));
                    let n = &mut self.nodes[i];
                    n.cut_until = Some(until);
                    n.watch_up = false;
                    n.changes.clear();
                    if let Some(p) = n.pending.as_mut() {
                        p.flight = match std::mem::replace(&mut p.flight, Flight::Lost) {
                            Flight::Answered(_) | Flight::AnswerLost => Flight::AnswerLost,
                            _ => Flight::Lost,
                        };
                    }
                    let uid = n.uid;
                    self.log(format!("c{uid} is cut off"));
                    self.input(i, Outcome::WatchDown)?;
                }
            }
            940..=949 => {
                let keys: Vec<String> = self.etcd.kvs.keys().cloned().collect();
                if !keys.is_empty() {
                    // Half of the time the first in line (the leader's, if any).
                    let k = if self.rng.bool() {
                        self.etcd.first().map(|f| f.0).expect("keys")
                    } else {
                        keys[self.rng.usize(0..keys.len())].clone()
                    };
                    self.stats.hand_deletes += 1;
                    self.etcd.delete_key(&k);
                    self.hand_deleted.insert(k.clone());
                    self.log(format!("etcdctl del {k}"));
                    self.notify();
                }
            }
            950..=969 => {
                if let Some(i) = self.pick(|n| n.alive && n.gated) {
                    let h = self.rng.f64() < 0.6;
                    self.nodes[i].healthy = h;
                    self.input(i, Outcome::AppHealth(h))?;
                }
            }
            970..=979 => {
                if let Some(i) = self.pick(|n| n.alive) {
                    self.stats.releases += 1;
                    self.input(i, Outcome::ReleaseAsked)?;
                }
            }
            980..=984 => {
                if let Some(i) = self.pick(|n| n.alive && !n.stopping) {
                    self.stats.stops += 1;
                    let release = self.rng.bool();
                    let at = self.now + ms(self.rng.u64(0..300));
                    let late = self.rng.bool();
                    let n = &mut self.nodes[i];
                    n.stopping = true;
                    // The executor drops the call in flight.
                    if let Some(p) = n.pending.take() {
                        if matches!(p.flight, Flight::Pending) && late {
                            self.orphans.push(Orphan {
                                at,
                                req: p.req,
                                sent: p.sent,
                            });
                        }
                    }
                    self.input(i, Outcome::Stop { release })?;
                }
            }
            _ => {
                if let Some(i) = self.pick(|n| n.alive && n.cut_until.is_none()) {
                    let n = &mut self.nodes[i];
                    if n.watch_up {
                        n.watch_up = false;
                        n.changes.clear();
                        self.input(i, Outcome::WatchDown)?;
                    } else {
                        n.watch_up = true;
                        self.input(i, Outcome::WatchUp)?;
                    }
                }
            }
        }
        self.check()
    }

    fn claims(&self) -> bool {
        (0..self.nodes.len()).any(|i| {
            self.nodes[i].alive
                && self.nodes[i]
                    .c
                    .tenure()
                    .is_some_and(|t| t.is_valid_at(self.local(i)))
        })
    }

    /// (d): the faults stop; somebody leads within `LIVE_WITHIN`, and still at the end.
    fn calm(&mut self) -> Check {
        let start = self.now;
        self.log("---- faults stop ----".into());
        for i in 0..self.nodes.len() {
            if !self.nodes[i].alive {
                let identity = self.nodes[i].c.params.identity.clone();
                self.spawn(i, identity, false)?;
            }
            if self.nodes[i].cut_until.is_some() {
                self.heal(i)?;
            }
            if !self.nodes[i].watch_up {
                self.nodes[i].watch_up = true;
                self.input(i, Outcome::WatchUp)?;
            }
            if self.nodes[i].gated && !self.nodes[i].healthy {
                self.nodes[i].healthy = true;
                self.input(i, Outcome::AppHealth(true))?;
            }
        }
        let mut led_at = None;
        while self.now < start + LIVE_WITHIN + Duration::from_secs(3) {
            match self.rng.u32(0..100) {
                0..=29 => {
                    if let Some(i) = self.pick(|n| {
                        n.alive
                            && matches!(
                                n.pending.as_ref().map(|p| &p.flight),
                                Some(Flight::Pending)
                            )
                    }) {
                        self.process(i);
                    }
                }
                30..=59 => {
                    if let Some(i) = self.pick(|n| {
                        n.alive
                            && matches!(
                                n.pending.as_ref().map(|p| &p.flight),
                                Some(Flight::Answered(_))
                            )
                    }) {
                        self.answer(i)?;
                    }
                }
                60..=79 => {
                    if let Some(i) = self.pick(|n| n.alive && !n.changes.is_empty()) {
                        let (_, revision) = self.nodes[i].changes.remove(0);
                        self.input(i, Outcome::Changed { revision })?;
                    }
                }
                _ => {
                    let dt = ms(self.rng.u64(1..20));
                    self.advance(dt)?;
                }
            }
            self.check()?;
            if led_at.is_none() && self.claims() {
                led_at = Some(self.now);
            }
            // A candidate that was stopping when the faults stopped is started again.
            if let Some(i) = self.pick(|n| !n.alive) {
                let identity = self.nodes[i].c.params.identity.clone();
                self.spawn(i, identity, false)?;
                if self.nodes[i].gated && !self.nodes[i].healthy {
                    self.nodes[i].healthy = true;
                    self.input(i, Outcome::AppHealth(true))?;
                }
                if !self.nodes[i].watch_up {
                    self.nodes[i].watch_up = true;
                    self.input(i, Outcome::WatchUp)?;
                }
            }
        }
        let Some(led) = led_at else {
            return Err(format!(
                "(d) nobody led within {:?} after the faults stopped; the line: {:?}",
                self.now - start,
                self.etcd.snapshot().candidates
            ));
        };
        let took = led - start;
        if took > LIVE_WITHIN {
            return Err(format!(
                "(d) the first tenure after the faults came after {took:?}"
            ));
        }
        self.stats.max_time_to_lead = self.stats.max_time_to_lead.max(took);
        if !self.claims() {
            return Err("(d) nobody leads at the end of the calm".into());
        }
        Ok(())
    }
}

/// Run `seeds` worlds of `steps` chaotic events each, then the calm; failures by seed.
fn explore(seeds: std::ops::Range<u64>, steps: u64, drift: bool) -> (Stats, Vec<(u64, String)>) {
    let mut total = Stats::default();
    let mut failures = Vec::new();
    for seed in seeds {
        let n = 3 + (seed % 3) as usize;
        let gated = seed % 4 == 3;
        let mut w = World::new(seed, n, drift, gated);
        let mut result = Ok(());
        for _ in 0..steps {
            result = w.chaos();
            if result.is_err() {
                break;
            }
        }
        if result.is_ok() {
            result = w.calm();
        }
        if let Err(e) = result {
            let trace: Vec<String> = w.trace.iter().cloned().collect();
            failures.push((seed, format!("{e}\n    {}", trace.join("\n    "))));
        }
        let s = w.stats;
        total.runs += 1;
        total.steps += s.steps;
        total.tenures += s.tenures;
        total.excused_overlap_checks += s.excused_overlap_checks;
        total.acquired_with_deleted_key += s.acquired_with_deleted_key;
        total.excused_epochs += s.excused_epochs;
        total.hand_deletes += s.hand_deletes;
        total.crashes += s.crashes;
        total.partitions += s.partitions;
        total.timeouts += s.timeouts;
        total.releases += s.releases;
        total.stops += s.stops;
        total.max_time_to_lead = total.max_time_to_lead.max(s.max_time_to_lead);
    }
    (total, failures)
}

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn report(name: &str, stats: &Stats, failures: &[(u64, String)]) {
    eprintln!("{name}: {stats:?}");
    eprintln!("{name}: {} failing seeds", failures.len());
    let mut kinds: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for (seed, e) in failures {
        let kind = e.split(':').next().unwrap_or("").chars().take(40).collect();
        kinds.entry(kind).or_default().push(*seed);
    }
    for (k, seeds) in &kinds {
        eprintln!("  {k}: seeds {seeds:?}");
    }
    if let Some((seed, e)) = failures.first() {
        eprintln!("first failure, seed {seed}: {e}");
    }
}

/// Safety and liveness on one clock: 300 seeds × 3000 events (LEADERD_MODEL_SEEDS,
/// LEADERD_MODEL_STEPS, LEADERD_MODEL_FIRST_SEED to change; LEADERD_MODEL_TRACE for a longer
/// trace of a failure). Seeds 0..300 pass; of seeds 300..1000, 326, 340, 349, 729 and 793 fail
/// liveness (d) through the bugs named at the drift test below (safety held on all 1000).
#[test]
fn the_campaigns_are_safe_and_live_against_a_simulated_etcd() {
    let first = env_u64("LEADERD_MODEL_FIRST_SEED", 0);
    let seeds = env_u64("LEADERD_MODEL_SEEDS", 300);
    let steps = env_u64("LEADERD_MODEL_STEPS", 3000);
    let (stats, failures) = explore(first..first + seeds, steps, false);
    report("one clock", &stats, &failures);
    assert!(stats.tenures > seeds, "the model is vacuous: {stats:?}");
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds fail",
        failures.len()
    );
}

/// The same with every candidate's clock running at its own rate within ±((D−R)/D)/2 of
/// etcd's, checked in true time. Seeds 68 and 77 of the default 300 found two liveness bugs,
/// now fixed: seed 77, a `Changed` applied while a Read was in flight was forgotten when the
/// older answer arrived (see `a_watch_event_while_a_read_is_in_flight_is_not_lost`); seed 68,
/// a lease seen ahead whose key was deleted by hand and put again *behind* us by its owner (a
/// retried Put with the same lease) was waited on for as long as it was kept alive.
#[test]
fn the_campaigns_are_safe_and_live_with_drifting_clocks() {
    let first = env_u64("LEADERD_MODEL_FIRST_SEED", 0);
    let seeds = env_u64("LEADERD_MODEL_SEEDS", 300);
    let steps = env_u64("LEADERD_MODEL_STEPS", 3000);
    let (stats, failures) = explore(first..first + seeds, steps, true);
    report("drift", &stats, &failures);
    assert!(stats.tenures > seeds, "the model is vacuous: {stats:?}");
    assert!(
        failures.is_empty(),
        "{} of {seeds} seeds fail",
        failures.len()
    );
}

//! Sampled tenures: runs of consecutive leading `/leader` answers of one candidate under one
//! epoch, and the safety check over them (never two leaders at once, epochs only rising).

use std::collections::HashMap;

use tokio::time::Instant;

use super::sampler::Sample;

/// A tenure as the sampler saw it: a run of consecutive leading samples of one candidate under
/// one epoch. It bounds the real tenure from inside (the candidate certainly led from `from` to
/// `to`); the real one may have begun earlier and ended later.
#[derive(Clone, Debug)]
pub struct SampledTenure {
    /// Candidate.
    pub who: String,
    /// Epoch reported.
    pub epoch: Option<i64>,
    /// Answer time of the first leading sample: it certainly led from here...
    pub from: Instant,
    /// ...to the request time of the last leading sample.
    pub to: Instant,
    /// Samples in the run.
    pub samples: usize,
}

/// Group samples into sampled tenures, ordered by their start.
pub fn sampled_tenures(samples: &[Sample]) -> Vec<SampledTenure> {
    let mut by_who: HashMap<&str, Vec<&Sample>> = HashMap::new();
    for s in samples {
        by_who.entry(&s.who).or_default().push(s);
    }
    let mut out = Vec::new();
    for (who, mut ss) in by_who {
        ss.sort_by_key(|s| s.sent);
        let mut cur: Option<SampledTenure> = None;
        for s in ss {
            let same = cur.as_ref().is_some_and(|t| t.epoch == s.view.epoch);
            if s.view.is_leader && same {
                let t = cur.as_mut().expect("same");
                t.to = s.sent;
                t.samples += 1;
            } else {
                out.extend(cur.take());
                if s.view.is_leader {
                    cur = Some(SampledTenure {
                        who: who.to_owned(),
                        epoch: s.view.epoch,
                        from: s.recv,
                        to: s.sent,
                        samples: 1,
                    });
                }
            }
        }
        out.extend(cur);
    }
    out.sort_by_key(|t| t.from);
    out
}

/// Safety violations found in samples: two candidates certainly leading at the same time,
/// an epoch shared by two sampled tenures, or a later sampled tenure with a lower epoch.
pub fn check(samples: &[Sample]) -> Vec<String> {
    let ts = sampled_tenures(samples);
    let mut v = Vec::new();
    for (i, a) in ts.iter().enumerate() {
        for b in &ts[i + 1..] {
            if a.who != b.who && a.from.max(b.from) < a.to.min(b.to) {
                v.push(format!(
                    "{} (epoch {:?}) and {} (epoch {:?}) both led for {:?}",
                    a.who,
                    a.epoch,
                    b.who,
                    b.epoch,
                    a.to.min(b.to) - a.from.max(b.from)
                ));
            }
            if a.epoch.is_some() && a.epoch == b.epoch && a.who != b.who {
                v.push(format!(
                    "{} and {} both led under epoch {:?}",
                    a.who, b.who, a.epoch
                ));
            }
        }
    }
    for w in ts.windows(2) {
        if let (Some(x), Some(y)) = (w[0].epoch, w[1].epoch) {
            if y < x || (y == x && w[0].who != w[1].who) {
                v.push(format!(
                    "epoch went from {x} ({}) to {y} ({})",
                    w[0].who, w[1].who
                ));
            }
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use leaderd::status::LeaderView;

    use super::*;

    fn sample(
        who: &str,
        sent_ms: u64,
        recv_ms: u64,
        leader: bool,
        epoch: i64,
        base: Instant,
    ) -> Sample {
        Sample {
            who: who.into(),
            sent: base + Duration::from_millis(sent_ms),
            recv: base + Duration::from_millis(recv_ms),
            view: LeaderView {
                lease: "l".into(),
                namespace: "n".into(),
                identity: who.into(),
                leader: Some(who.into()),
                is_leader: leader,
                epoch: Some(epoch),
                lease_uid: None,
                valid_for_ms: None,
                observed_at: None,
                app_healthy: None,
            },
        }
    }

    #[test]
    fn check_flags_overlap_and_falling_epochs_but_not_handovers() {
        let t = Instant::now();
        let ok = vec![
            sample("a", 0, 1, true, 1, t),
            sample("a", 10, 11, true, 1, t),
            sample("b", 12, 13, true, 2, t),
            sample("b", 20, 21, true, 2, t),
        ];
        assert!(check(&ok).is_empty(), "{:?}", check(&ok));
        let overlap = vec![
            sample("a", 0, 1, true, 1, t),
            sample("a", 30, 31, true, 1, t),
            sample("b", 10, 11, true, 2, t),
            sample("b", 20, 21, true, 2, t),
        ];
        assert_eq!(check(&overlap).len(), 1);
        let falling = vec![
            sample("a", 0, 1, true, 5, t),
            sample("b", 10, 11, true, 4, t),
        ];
        assert_eq!(check(&falling).len(), 1);
    }
}

//! The chaos checker: from what was recorded about every process (sampled tenures, SSE events,
//! log transitions, exits, memory) and every committed Lease change (with its commit time, from
//! the test server), find violations.
//!
//! Bounds, all on the checker's monotonic clock, each taken on its sound side:
//!
//! - A tenure (one process's leadership under one epoch, from its "became leader" to its end;
//!   reconstructed as a [`ReconstructedTenure`]) *starts* no earlier than the commit of the write
//!   that acquired it (the process claims only on the answer), and after the request time of the
//!   last `/leader` answer that did not show it.
//! - A tenure *ends* no later than: the commit of the last renewal it wrote + R / rate (the
//!   process claims until `sent + R` on its own clock, `sent` ≤ commit, and its clock runs at
//!   `rate` local seconds per real second); the commit of its release (it steps down before
//!   sending one); its exit; the arrival of its "stopped leading" log line or of an SSE event
//!   saying otherwise; the answer time of the first `/leader` answer that did not show it.
//! - A sampled tenure ([`SampledTenure`]) certainly claimed from its first leading answer's
//!   arrival to its last leading answer's request time.
//!
//! Two tenures of different processes *certainly overlap* when their sampled tenures do (this
//! needs the overlap to span two sampling periods). Every pair of tenures is also *proven ordered* when
//! the later one's start bound exceeds the earlier one's end bound: that catches overlaps of any
//! length, including the ones the sampler is too slow to see, but a failed proof is only a
//! possible overlap. Within the drift bound the design promises a proof margin of at least
//! D / rate_follower − R / rate_leader (> 0), so the runner counts both as violations there.
//!
//! With `--backend etcd` ([`EtcdInput`]) the checker sees no commit times: etcd's writes happen
//! inside etcd, and keep-alives write nothing. A tenure then starts after the request time of
//! its process's last `/leader` answer that did not show it (or the process start), and ends by
//! the same exit, log, SSE and answer bounds as above, or, for a process the runner stopped with
//! SIGSTOP after its last leading answer, by max(that answer's `valid_for_ms` deadline, SIGSTOP +
//! R) (rule E2: it claims until its last keep-alive's send time + R, and it sends nothing while
//! stopped). Certain overlaps (from the samples) are violations; a pair of tenures the bounds do
//! not prove ordered is only counted (a handover by revoke takes milliseconds, less than the
//! sampling can resolve without commit times). Also checked there: every tenure's epoch is the
//! create revision of a key of that candidate (from etcd's history of the election's keys), no
//! two candidates lead under one epoch, epochs rise in the order the tenures began, and a
//! process resumed (SIGCONT) more than R after its SIGSTOP never answers `is_leader` under the
//! epoch it led with before the stop (rule E4: no resumed tenure).

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use leaderd::election::StoredLease;
use leaderd_testkit::testserver::LeaseChange;

use super::procs::{Ask, LogEvent, Record, SampledTenure};

/// One committed version, decoded as leaderd decodes it.
#[derive(Clone, Debug)]
pub struct Version {
    pub at: Instant,
    pub deleted: bool,
    pub holder: Option<String>,
    pub transitions: Option<i64>,
    pub renew_time: Option<String>,
    pub released_by: Option<String>,
}

impl Version {
    pub fn from_change(c: &LeaseChange) -> Version {
        let rec = StoredLease::from_json(c.object.clone())
            .map(|l| l.record)
            .unwrap_or_default();
        Version {
            at: c.at,
            deleted: c.kind == "DELETED",
            holder: rec.holder,
            transitions: rec.transitions,
            renew_time: rec.renew_time,
            released_by: rec.released_by,
        }
    }
}

/// One key of the etcd election, from etcd's history (`--backend etcd`).
#[derive(Clone, Debug)]
pub struct EtcdKey {
    pub key: String,
    /// Its value: the candidate's identity.
    pub identity: String,
    pub create_revision: i64,
    /// The revision that deleted it (revoke, expiry), if any.
    pub deleted_revision: Option<i64>,
}

/// What the checker needs of an etcd run instead of the Lease versions.
pub struct EtcdInput<'a> {
    /// Every key ever created under the election's prefix.
    pub keys: &'a [EtcdKey],
}

/// A window with no faults, in which a leader must appear within `bound`.
#[derive(Clone, Debug)]
pub struct Calm {
    pub start: Instant,
    pub bound: Duration,
    pub end: Instant,
}

/// What the checker was told about the run.
pub struct Input<'a> {
    pub t0: Instant,
    pub records: &'a [Record],
    pub versions: &'a [Version],
    pub calms: &'a [Calm],
    pub renew_deadline: Duration,
    /// Whether every clock rate was within the drift bound (so safety is promised).
    pub within_bound: bool,
    pub lagged_changes: u64,
    pub term_timeouts: &'a [String],
    /// `--backend etcd`: tenures are bounded without commit times (see the module's doc).
    pub etcd: Option<EtcdInput<'a>>,
}

/// A tenure as the checker reconstructs it from the logs, the samples, the SSE events and the
/// committed Lease versions: a lower bound on its start and an upper bound on its end.
#[derive(Clone, Debug)]
pub struct ReconstructedTenure {
    pub rec: usize,
    pub label: String,
    pub epoch: i64,
    pub start_lb: Instant,
    pub end_ub: Instant,
    pub end_ub_source: &'static str,
    pub acquired: Instant,
    /// Acquired from a release (empty holder with leaderd's marker), not after an expiry.
    pub after_release: bool,
}

#[derive(Debug, Default)]
pub struct Report {
    pub violations: Vec<String>,
    /// Overlaps and failed proofs with drift beyond the bound (expected, not failures).
    pub expected: Vec<String>,
    pub warnings: Vec<String>,
    pub tenures: usize,
    pub proven_pairs: u64,
    pub handovers: usize,
    pub min_margin: Option<Duration>,
    pub min_margin_at: Option<String>,
    /// Margin of each handover to the closest earlier tenure: (ms, acquired from a release).
    pub margins_ms: Vec<(f64, bool)>,
    pub sampled_tenures: usize,
    pub sse_events: usize,
    pub sse_transitions: usize,
    pub epoch_resets_excused: Vec<String>,
    pub liveness: Vec<(f64, Option<f64>, f64)>, // (start s, delay s, bound s)
    pub worst_liveness: Option<(f64, f64)>,
    pub longest_gap: Option<(Duration, f64, bool)>, // (gap, at s, within a calm window)
    pub longest_calm_gap: Option<Duration>,
    pub first_epoch: Option<i64>,
    pub last_epoch: Option<i64>,
    pub memory: Vec<String>,
    pub sampling: (f64, f64, Duration), // min Hz, mean Hz, max gap
    /// etcd: pairs of tenures the bounds did not prove ordered (not violations, see above).
    pub unproven: Vec<String>,
    /// etcd: SIGSTOPs of a process leading by its last answer before the stop, and how many of
    /// them lasted beyond R (after which it must not answer is_leader under that epoch).
    pub paused_leaders: (usize, usize),
}

fn secs(t: Instant, t0: Instant) -> f64 {
    t.saturating_duration_since(t0).as_secs_f64()
}

/// Run every check.
pub fn check(inp: &Input) -> Report {
    let mut rep = Report::default();
    let t0 = inp.t0;
    let recs = inp.records;
    let at = |t: Instant| format!("+{:.3}s", secs(t, t0));
    let unsafe_finding = |rep: &mut Report, s: String| {
        if inp.within_bound {
            rep.violations.push(s);
        } else {
            rep.expected.push(s);
        }
    };

    if inp.lagged_changes > 0 {
        rep.violations.push(format!(
            "checker: missed {} Lease changes (proofs incomplete)",
            inp.lagged_changes
        ));
    }
    rep.violations.extend(inp.term_timeouts.iter().cloned());

    // Processes: exits, panics.
    for r in recs {
        for p in &r.panics {
            rep.violations.push(format!("{} panicked: {p}", r.label));
        }
        match &r.exit {
            None => rep
                .violations
                .push(format!("{} still running when the run ended", r.label)),
            Some(e) => match e.asked {
                None => rep.violations.push(format!(
                    "{} exited unexpectedly at {} (code {:?}, signal {:?})",
                    r.label,
                    at(e.at),
                    e.code,
                    e.signal
                )),
                Some(Ask::Term) if e.code != Some(0) => rep.violations.push(format!(
                    "{} exited with code {:?} (signal {:?}) after SIGTERM, not 0",
                    r.label, e.code, e.signal
                )),
                _ => {}
            },
        }
    }

    // Sampled tenures: certain overlaps.
    let sampled: Vec<(usize, SampledTenure)> = recs
        .iter()
        .enumerate()
        .flat_map(|(i, r)| r.sampled_tenures().into_iter().map(move |x| (i, x)))
        .collect();
    rep.sampled_tenures = sampled.len();
    for (x, (ia, a)) in sampled.iter().enumerate() {
        for (ib, b) in &sampled[x + 1..] {
            if ia == ib {
                continue;
            }
            let from = a.first_recv.max(b.first_recv);
            let to = a.last_sent.min(b.last_sent);
            if from < to {
                unsafe_finding(
                    &mut rep,
                    format!(
                        "overlap: {} (epoch {:?}) and {} (epoch {:?}) both answered is_leader for {:?} from {}",
                        recs[*ia].label, a.epoch, recs[*ib].label, b.epoch, to - from, at(from)
                    ),
                );
            }
        }
    }

    // Tenures from the logs.
    struct Open {
        epoch: i64,
        became: Instant,
    }
    let mut tenures_raw: Vec<(usize, i64, Instant, Option<Instant>)> = Vec::new();
    for (i, r) in recs.iter().enumerate() {
        let mut open: Option<Open> = None;
        for (t, ev) in &r.logs {
            match ev {
                LogEvent::Became { epoch } => {
                    if let Some(o) = open.take() {
                        rep.violations.push(format!(
                            "{}: became leader (epoch {epoch}) at {} while its epoch {} tenure had not stopped",
                            r.label, at(*t), o.epoch
                        ));
                        tenures_raw.push((i, o.epoch, o.became, Some(*t)));
                    }
                    open = Some(Open {
                        epoch: *epoch,
                        became: *t,
                    });
                }
                LogEvent::Stopped { epoch, reason } => match open.take() {
                    Some(o) => {
                        if *epoch != Some(o.epoch) {
                            rep.violations.push(format!(
                                "{}: stopped leading with epoch {epoch:?} ({reason}) at {}, but led under epoch {}",
                                r.label, at(*t), o.epoch
                            ));
                        }
                        tenures_raw.push((i, o.epoch, o.became, Some(*t)));
                    }
                    None => rep.violations.push(format!(
                        "{}: logged 'stopped leading' ({reason}) at {} without leading",
                        r.label,
                        at(*t)
                    )),
                },
            }
        }
        if let Some(o) = open {
            tenures_raw.push((i, o.epoch, o.became, None));
        }
    }

    // Versions by (holder, epoch).
    let vs = inp.versions;
    let mut tenures: Vec<ReconstructedTenure> = Vec::new();
    if let Some(e) = &inp.etcd {
        tenures = etcd_tenures(inp, e, &tenures_raw, &sampled, &mut rep);
    }
    for &(i, epoch, _became, stopped) in tenures_raw.iter().filter(|_| inp.etcd.is_none()) {
        let r = &recs[i];
        let name = r.name.as_str();
        let mine = |v: &&Version| {
            !v.deleted && v.holder.as_deref() == Some(name) && v.transitions == Some(epoch)
        };
        let Some(acq_i) = vs.iter().position(|v| v.at >= r.started && mine(&v)) else {
            rep.violations.push(format!(
                "{}: became leader under epoch {epoch}, but no committed version named it with that epoch",
                r.label
            ));
            continue;
        };
        let acq = &vs[acq_i];
        let after_release = acq_i
            .checked_sub(1)
            .map(|p| &vs[p])
            .is_some_and(|p| !p.deleted && p.holder.is_none() && p.released_by.is_some());
        let mut seen: HashSet<&str> = HashSet::new();
        let mut last_renew = acq.at;
        for v in vs.iter().filter(|v| v.at >= acq.at).filter(mine) {
            if seen.insert(v.renew_time.as_deref().unwrap_or("")) {
                last_renew = v.at;
            }
        }
        let rate = r.clock.rate;
        let mut end = (
            last_renew + inp.renew_deadline.div_f64(rate),
            "last renewal + R/rate",
        );
        let mut tighten = |t: Option<Instant>, what: &'static str| {
            if let Some(t) = t.filter(|t| *t < end.0) {
                end = (t, what);
            }
        };
        tighten(
            vs.iter()
                .filter(|v| v.at > acq.at)
                .find(|v| {
                    !v.deleted
                        && v.holder.is_none()
                        && v.released_by.as_deref() == Some(name)
                        && v.transitions == Some(epoch)
                })
                .map(|v| v.at),
            "release",
        );
        tighten(r.exit.as_ref().map(|e| e.at), "exit");
        tighten(stopped, "log 'stopped leading'");
        // SSE: the first event after one showing this tenure that shows something else.
        let mut shown = false;
        let mut sse_end = None;
        for e in &r.sse {
            let this = e.is_leader && e.epoch == Some(epoch);
            if this {
                shown = true;
            } else if shown {
                sse_end = Some(e.at);
                break;
            }
        }
        tighten(sse_end, "SSE event");
        let run = sampled
            .iter()
            .filter(|(ri, x)| *ri == i && x.epoch == Some(epoch))
            .map(|(_, x)| x)
            .next();
        tighten(run.and_then(|x| x.after), "sampled answer");
        let start_lb = acq.at.max(run.and_then(|x| x.before).unwrap_or(acq.at));
        tenures.push(ReconstructedTenure {
            rec: i,
            label: r.label.clone(),
            epoch,
            start_lb,
            end_ub: end.0,
            end_ub_source: end.1,
            acquired: acq.at,
            after_release,
        });
    }
    tenures.sort_by_key(|c| c.acquired);
    rep.tenures = tenures.len();
    rep.first_epoch = tenures.first().map(|c| c.epoch);
    rep.last_epoch = tenures.last().map(|c| c.epoch);

    // Proven order of every pair of tenures of different processes.
    let mut min_margin: Option<(i128, String)> = None;
    for j in 0..tenures.len() {
        let b = &tenures[j];
        let mut prev_margin: Option<i128> = None;
        for a in tenures[..j].iter().rev() {
            if a.rec == b.rec {
                continue;
            }
            let m = b.start_lb.duration_since(t0).as_nanos() as i128
                - a.end_ub.duration_since(t0).as_nanos() as i128;
            if prev_margin.is_none() {
                prev_margin = Some(m);
            }
            if m <= 0 && inp.etcd.is_some() {
                rep.unproven.push(format!(
                    "{} (epoch {}) may have claimed until {} ({}), {} ms after {} (epoch {}) began by {}",
                    a.label, a.epoch, at(a.end_ub), a.end_ub_source, -m / 1_000_000,
                    b.label, b.epoch, at(b.start_lb)
                ));
            } else if m <= 0 {
                unsafe_finding(
                    &mut rep,
                    format!(
                        "unproven order: {} (epoch {}) may have claimed until {} ({}), {} ms after {} (epoch {}) began by {}",
                        a.label, a.epoch, at(a.end_ub), a.end_ub_source, -m / 1_000_000,
                        b.label, b.epoch, at(b.start_lb)
                    ),
                );
            } else {
                rep.proven_pairs += 1;
            }
            if min_margin.as_ref().is_none_or(|(x, _)| m < *x) {
                min_margin = Some((
                    m,
                    format!(
                        "{} (epoch {}, end by {}) → {} (epoch {}) at {}",
                        a.label,
                        a.epoch,
                        a.end_ub_source,
                        b.label,
                        b.epoch,
                        at(b.start_lb)
                    ),
                ));
            }
        }
        if let Some(m) = prev_margin {
            rep.handovers += 1;
            rep.margins_ms.push((m as f64 / 1e6, b.after_release));
        }
    }
    if let Some((m, w)) = min_margin {
        rep.min_margin = (m > 0).then(|| Duration::from_nanos(m as u64));
        rep.min_margin_at = Some(format!("{:.1} ms: {w}", m as f64 / 1e6));
    }

    // Epochs rise across tenures, in commit order of their acquisitions.
    let mut max_before: Option<i64> = None;
    let mut led: HashSet<(usize, i64)> = HashSet::new();
    for c in &tenures {
        if !led.insert((c.rec, c.epoch)) {
            rep.violations.push(format!(
                "one tenure, one epoch: {} led a second time under epoch {} (became leader again at {})",
                c.label,
                c.epoch,
                at(tenures_raw
                    .iter()
                    .filter(|x| x.0 == c.rec && x.1 == c.epoch)
                    .map(|x| x.2)
                    .max()
                    .unwrap_or(c.acquired))
            ));
            continue;
        }
        if let Some(m) = max_before.filter(|m| c.epoch <= *m) {
            let r = &recs[c.rec];
            // Excused only if this process could not have known any epoch >= its own: no version
            // with such an epoch existed at any time from its start to its acquisition.
            let current_at_start = vs.iter().rev().find(|v| v.at <= r.started);
            let during = vs.iter().filter(|v| v.at > r.started && v.at < c.acquired);
            let knew = current_at_start
                .into_iter()
                .chain(during)
                .any(|v| !v.deleted && v.transitions.is_some_and(|t| t >= c.epoch));
            let msg = format!(
                "{} led under epoch {} at {} after epoch {m} had been used",
                c.label,
                c.epoch,
                at(c.acquired)
            );
            if knew || inp.etcd.is_some() {
                // etcd's revisions are never reused: no excuse there.
                rep.violations.push(format!("epoch did not rise: {msg}"));
            } else {
                rep.epoch_resets_excused.push(format!(
                    "{msg} (it started after the Lease, and with it the epoch, was deleted)"
                ));
            }
        }
        max_before = Some(max_before.map_or(c.epoch, |m| m.max(c.epoch)));
    }

    // One tenure, one epoch: every sampled tenure and every leading SSE event belongs to a logged
    // tenure of that process with that epoch, and no process shows one epoch in two sampled
    // tenures.
    let tenure_keys: HashSet<(usize, i64)> = tenures_raw.iter().map(|c| (c.0, c.1)).collect();
    let mut run_keys: HashMap<(usize, Option<i64>), usize> = HashMap::new();
    for (i, x) in &sampled {
        *run_keys.entry((*i, x.epoch)).or_default() += 1;
        if !x.epoch.is_some_and(|e| tenure_keys.contains(&(*i, e))) {
            rep.violations.push(format!(
                "{} answered is_leader under epoch {:?} at {} without logging 'became leader' for it",
                recs[*i].label,
                x.epoch,
                at(x.first_recv)
            ));
        }
    }
    for ((i, e), n) in run_keys {
        if n > 1 {
            rep.violations.push(format!(
                "{} led under epoch {e:?} in {n} separate sampled tenures (one tenure, one epoch)",
                recs[i].label
            ));
        }
    }
    for (i, r) in recs.iter().enumerate() {
        rep.sse_events += r.sse.len();
        let mut prev = false;
        for e in &r.sse {
            if e.is_leader != prev {
                rep.sse_transitions += 1;
            }
            prev = e.is_leader;
            if e.is_leader && !e.epoch.is_some_and(|x| tenure_keys.contains(&(i, x))) {
                rep.violations.push(format!(
                    "{}: SSE said is_leader under epoch {:?} at {} without a logged tenure",
                    r.label,
                    e.epoch,
                    at(e.at)
                ));
            }
        }
    }

    // Liveness and leaderless gaps.
    let mut spans: Vec<(Instant, Instant)> = sampled
        .iter()
        .map(|(_, x)| (x.first_recv, x.last_sent.max(x.first_recv)))
        .collect();
    spans.sort();
    for c in inp.calms {
        let covering = spans.iter().any(|s| s.0 <= c.start && s.1 >= c.start);
        let delay = if covering {
            Some(Duration::ZERO)
        } else {
            spans
                .iter()
                .filter(|s| s.0 > c.start && s.0 <= c.end)
                .map(|s| s.0 - c.start)
                .min()
        };
        rep.liveness.push((
            secs(c.start, t0),
            delay.map(|d| d.as_secs_f64()),
            c.bound.as_secs_f64(),
        ));
        match delay {
            Some(d) if d <= c.bound => {}
            _ => rep.violations.push(format!(
                "liveness: no leader within {:?} after the faults stopped at {} (took {})",
                c.bound,
                at(c.start),
                delay.map_or("longer than the window".into(), |d| format!("{d:?}"))
            )),
        }
    }
    rep.worst_liveness = rep
        .liveness
        .iter()
        .filter_map(|l| l.1.map(|d| (d, l.2)))
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let mut merged: Vec<(Instant, Instant)> = Vec::new();
    for s in spans {
        match merged.last_mut() {
            Some(m) if s.0 <= m.1 => m.1 = m.1.max(s.1),
            _ => merged.push(s),
        }
    }
    for w in merged.windows(2) {
        let gap = w[1].0.saturating_duration_since(w[0].1);
        let in_calm = inp
            .calms
            .iter()
            .any(|c| w[0].1 >= c.start && w[0].1 <= c.end);
        if rep.longest_gap.is_none_or(|g| gap > g.0) {
            rep.longest_gap = Some((gap, secs(w[0].1, t0), in_calm));
        }
        if in_calm && rep.longest_calm_gap.is_none_or(|g| gap > g) {
            rep.longest_calm_gap = Some(gap);
        }
    }

    // Memory and fds of processes that lived long enough to tell.
    for r in recs {
        let Some(last) = r.usage.last() else { continue };
        let life = last.0.saturating_duration_since(r.started);
        if life < Duration::from_secs(120) {
            continue;
        }
        let q = |a: f64, b: f64| {
            let from = r.started + life.mul_f64(a);
            let to = r.started + life.mul_f64(b);
            r.usage
                .iter()
                .filter(|u| u.0 >= from && u.0 <= to)
                .fold((0u64, 0usize), |m, u| (m.0.max(u.1), m.1.max(u.2)))
        };
        let (early, late) = (q(0.25, 0.5), q(0.75, 1.0));
        let line = format!(
            "{}: {:.0} s, RSS {:.1} → {:.1} MiB (max of 2nd vs last quarter), fds {} → {}",
            r.label,
            life.as_secs_f64(),
            early.0 as f64 / 1024.0,
            late.0 as f64 / 1024.0,
            early.1,
            late.1
        );
        if late.0 as f64 > early.0 as f64 * 1.25 && late.0 > early.0 + 4096 {
            rep.violations.push(format!("memory grew: {line}"));
        }
        if late.1 > early.1 + 16 {
            rep.violations.push(format!("open fds grew: {line}"));
        }
        rep.memory.push(line);
    }

    // Sampling rate.
    let mut rates = Vec::new();
    let mut max_gap = Duration::ZERO;
    for r in recs {
        if let (Some(a), Some(b)) = (r.first_sample, r.last_sample) {
            // Time stopped by the runner (SIGSTOP) is not sampling time.
            let paused: f64 = r
                .pauses
                .iter()
                .map(|&(p, c)| {
                    c.unwrap_or(b)
                        .min(b)
                        .saturating_duration_since(p.max(a))
                        .as_secs_f64()
                })
                .sum();
            let span = b.saturating_duration_since(a).as_secs_f64() - paused;
            if span >= 5.0 {
                rates.push(r.samples as f64 / span);
            }
        }
        max_gap = max_gap.max(r.max_gap);
    }
    let min = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let mean = rates.iter().sum::<f64>() / rates.len().max(1) as f64;
    rep.sampling = (if rates.is_empty() { 0.0 } else { min }, mean, max_gap);
    if !rates.is_empty() && min < 50.0 {
        rep.warnings.push(format!(
            "sampling fell below 50 Hz for some process (min {min:.0} Hz): the machine is loaded; the proofs do not depend on it"
        ));
    }
    rep
}

/// The etcd tenures: epochs checked against etcd's keys, start and end bounded without commit
/// times (see the module's doc), resumed tenures after a SIGSTOP found.
fn etcd_tenures(
    inp: &Input,
    e: &EtcdInput,
    tenures_raw: &[(usize, i64, Instant, Option<Instant>)],
    sampled: &[(usize, SampledTenure)],
    rep: &mut Report,
) -> Vec<ReconstructedTenure> {
    let t0 = inp.t0;
    let recs = inp.records;
    let at = |t: Instant| format!("+{:.3}s", secs(t, t0));
    let mut out = Vec::new();
    let mut holders: HashMap<i64, HashSet<&str>> = HashMap::new();
    for &(i, epoch, became, stopped) in tenures_raw {
        let r = &recs[i];
        let name = r.name.as_str();
        holders.entry(epoch).or_default().insert(name);
        match e.keys.iter().find(|k| k.create_revision == epoch) {
            Some(k) if k.identity == name => {}
            Some(k) => rep.violations.push(format!(
                "{}: became leader under epoch {epoch}, but the key created at that revision ({}) is {:?}'s",
                r.label, k.key, k.identity
            )),
            None => rep.violations.push(format!(
                "{}: became leader under epoch {epoch}, but no key of the election was created at that revision",
                r.label
            )),
        }
        let run = sampled
            .iter()
            .filter(|(ri, x)| *ri == i && x.epoch == Some(epoch))
            .map(|(_, x)| x)
            .next();
        // Nothing bounds a tenure of a process that never ended: the run's end does.
        let mut end = (Instant::now(), "end of the run");
        let mut tighten = |t: Option<Instant>, what: &'static str| {
            if let Some(t) = t.filter(|t| *t < end.0) {
                end = (t, what);
            }
        };
        tighten(r.exit.as_ref().map(|e| e.at), "exit");
        tighten(stopped, "log 'stopped leading'");
        let mut shown = false;
        let mut sse_end = None;
        for ev in &r.sse {
            if ev.is_leader && ev.epoch == Some(epoch) {
                shown = true;
            } else if shown {
                sse_end = Some(ev.at);
                break;
            }
        }
        tighten(sse_end, "SSE event");
        tighten(run.and_then(|x| x.after), "sampled answer");
        if let Some(x) = run {
            // Stopped after its last leading answer: it claims at most until the deadline that
            // answer reported, or until the last keep-alive it sent before the stop + R.
            if let Some(&(p, _)) = r.pauses.iter().find(|p| p.0 >= x.last_sent) {
                let by_stop = p + inp.renew_deadline;
                let t = x.valid_until.map_or(by_stop, |v| v.max(by_stop));
                tighten(Some(t), "SIGSTOP: valid_until / stop + R");
            }
        }
        let start_lb = run
            .and_then(|x| x.before)
            .unwrap_or(r.started)
            .max(r.started);
        out.push(ReconstructedTenure {
            rec: i,
            label: r.label.clone(),
            epoch,
            start_lb,
            end_ub: end.0,
            end_ub_source: end.1,
            acquired: became,
            after_release: false,
        });
    }
    for (epoch, names) in holders {
        if names.len() > 1 {
            let mut n: Vec<&str> = names.into_iter().collect();
            n.sort();
            rep.violations.push(format!(
                "one tenure, one holder: {} all led under epoch {epoch}",
                n.join(", ")
            ));
        }
    }
    // Rule E4 after a SIGSTOP: stopped while leading, resumed more than R later, it must not
    // answer is_leader under the same epoch again (its claim ran out while it was stopped).
    for (i, r) in recs.iter().enumerate() {
        for &(p, c) in &r.pauses {
            let Some(run) = sampled
                .iter()
                .filter(|(ri, _)| *ri == i)
                .map(|(_, x)| x)
                .find(|x| x.first_recv <= p && x.after.is_none_or(|a| a >= p))
            else {
                continue;
            };
            rep.paused_leaders.0 += 1;
            let Some(c) = c.filter(|c| c.saturating_duration_since(p) > inp.renew_deadline) else {
                continue;
            };
            rep.paused_leaders.1 += 1;
            if run.last_sent > c {
                rep.violations.push(format!(
                    "{}: stopped at {} while leading (epoch {:?}), resumed {:.2} s later (> R), and answered is_leader under the same epoch at {} (a resumed tenure)",
                    r.label,
                    at(p),
                    run.epoch,
                    c.duration_since(p).as_secs_f64(),
                    at(run.last_sent)
                ));
            }
        }
    }
    out
}

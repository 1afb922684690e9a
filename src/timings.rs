//! `leaderd timings`: what the lease duration D, renew deadline R and retry period P buy
//! (failover, handover, outage survived, clock tolerance) and cost (API requests/s), derived from
//! the rules of `election::state` as leaderd behaves today; formulas in `docs/design.md`
//! ("Timing: what D, R and P buy and cost"). Pure functions; [`run`] only prints.

use std::process::ExitCode;
use std::time::Duration;

use clap::Args;
use serde::Serialize;

use crate::config::checks::{TimingArgs, EXIT_USAGE};
use crate::election::state::JITTER;
use crate::election::Params;

/// The store asks the apiserver to end each watch after this long (`kube_store`), so every
/// candidate re-opens its watch about once a period.
pub const WATCH_REOPEN_S: f64 = 60.0;

/// A back-off after a failed request waits `P/2` stretched by up to this factor
/// (`Machine::back_off` and `jitter`); also the polling jitter while the watch is down.
pub const JITTER_MAX: f64 = 1.0 + JITTER;

/// Flags of `leaderd timings`.
#[derive(Debug, Args)]
pub struct TimingsArgs {
    /// The sidecar's timing flags, with the same defaults and checks.
    #[command(flatten)]
    pub timing: TimingArgs,
    /// Number of Leases (one election, hence one group of candidates, per Lease).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub leases: u32,
    /// Candidates per Lease (leader included).
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..))]
    pub candidates: u32,
    /// Print one JSON object instead of the table.
    #[arg(long)]
    pub json: bool,
}

/// Every figure, in seconds or per second.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Timings {
    /// D.
    pub lease_duration_s: f64,
    /// R.
    pub renew_deadline_s: f64,
    /// P.
    pub retry_period_s: f64,
    /// `--leases`.
    pub leases: u32,
    /// `--candidates`.
    pub candidates: u32,
    /// Timeout of every API call: R/5 (rule 14).
    pub call_timeout_s: f64,
    /// The leader renews this long after its last successful renew was sent: 3R/5 (rule 14).
    pub renew_interval_s: f64,
    /// How long followers wait on an unchanged record: max(D, the record's
    /// leaseDurationSeconds) = D rounded up to whole seconds (rule 1).
    pub takeover_wait_s: f64,
    /// Upper bound of the takeover spread: min(P/4, 50 ms).
    pub takeover_spread_s: f64,
    /// kill -9 of the leader, worst: W + spread, W = ⌈D⌉ (the crash came right after a renewal).
    pub crash_failover_worst_s: f64,
    /// kill -9, typical (mean): W − I/2 + spread/2, I the renew interval.
    pub crash_failover_typical_s: f64,
    /// kill -9, best: W − I (the crash came just before the next renewal).
    pub crash_failover_best_s: f64,
    /// kill -9 while the followers' watch is down (they poll every P × 1–1.2): W + 1.2 P + spread.
    pub crash_failover_worst_polling_s: f64,
    /// SIGTERM / release: API round trips on the path (release PUT, then the acquiring PUT),
    /// plus one watch event; milliseconds on a healthy apiserver.
    pub graceful_handover_round_trips: u32,
    /// SIGTERM / release, worst while both calls are answered: 2 × R/5.
    pub graceful_handover_worst_answered_s: f64,
    /// SIGTERM / release while the followers' watch is down: 1.2 P + one call.
    pub graceful_handover_worst_polling_s: f64,
    /// Longest apiserver outage always survived when failing calls are answered at once
    /// (5xx, refused): it starts just before a renewal, which is retried every 0.6 P at worst
    /// until the deadline: R − I − 0.6 P = 2R/5 − 0.6 P.
    pub outage_survived_s: f64,
    /// Longest apiserver outage always survived when calls hang until their R/5 timeout: the
    /// renewal at I hangs, the retry at once after it must find the apiserver back: R/5.
    pub outage_survived_hanging_s: f64,
    /// Clock-rate difference tolerated: (D − R)/(D + R).
    pub clock_rate_tolerance: f64,
    /// Renewal attempts sent within one R after a successful one, when every call hangs until
    /// its timeout: the first at I, then one every R/5 (a timed-out renew is retried at once).
    pub attempts_per_deadline: u32,
    /// The same when failing calls are answered at once: the first at I, then every 0.6 P.
    pub attempts_per_deadline_fast_errors: u32,
    /// Lease writes of the leader: 1/I.
    pub leader_writes_per_s: f64,
    /// API requests of the leader: 1/I + 1/60 (renewals and watch re-opens).
    pub leader_requests_per_s: f64,
    /// API requests of each follower: 1/60 (watch re-opens).
    pub follower_requests_per_s: f64,
    /// All candidates of one Lease: 1/I + candidates/60.
    pub lease_requests_per_s: f64,
    /// All candidates of all Leases: leases × (1/I + candidates/60).
    pub total_requests_per_s: f64,
    /// Lease writes of all leaders: leases/I.
    pub total_writes_per_s: f64,
    /// Settings that are unsafe or wasteful, each naming the flag and the fix.
    pub warnings: Vec<String>,
}

/// Renewals sent in `(0, R)` after a successful one sent at 0: the first at `i`, then one
/// every `gap` (the worst case); `ceil((R − i)/gap)`, rounding off float noise.
fn attempts(r: f64, i: f64, gap: f64) -> u32 {
    if i >= r {
        return 0;
    }
    ((r - i) / gap - 1e-9).ceil() as u32
}

fn secs(x: f64) -> String {
    humantime::format_duration(Duration::from_millis((x * 1000.0).round().max(0.0) as u64))
        .to_string()
}

/// Compute every figure for validated settings (D > R > P > 0).
pub fn compute(d: Duration, r: Duration, p: Duration, leases: u32, candidates: u32) -> Timings {
    // The state machine's own formulas (rules 1, 14 and the takeover spread), not copies.
    let params = Params {
        identity: String::new(),
        lease_duration: d,
        renew_deadline: r,
        retry_period: p,
        priority: 0,
    };
    let (d, r, p) = (d.as_secs_f64(), r.as_secs_f64(), p.as_secs_f64());
    // The record carries D rounded up to whole seconds, and followers wait the longer of the two.
    let wait = params.lease_duration_seconds() as f64;
    let spread = params.takeover_spread().as_secs_f64();
    let call_timeout = params.call_timeout().as_secs_f64();
    let interval = params.renew_interval().as_secs_f64();
    let back_off = p / 2.0 * JITTER_MAX;
    let watch = 1.0 / WATCH_REOPEN_S;
    let lease_requests = 1.0 / interval + f64::from(candidates) * watch;
    let mut t = Timings {
        lease_duration_s: d,
        renew_deadline_s: r,
        retry_period_s: p,
        leases,
        candidates,
        call_timeout_s: call_timeout,
        renew_interval_s: interval,
        takeover_wait_s: wait,
        takeover_spread_s: spread,
        crash_failover_worst_s: wait + spread,
        crash_failover_typical_s: wait - interval / 2.0 + spread / 2.0,
        crash_failover_best_s: wait - interval,
        crash_failover_worst_polling_s: wait + p * JITTER_MAX + spread,
        graceful_handover_round_trips: 2,
        graceful_handover_worst_answered_s: 2.0 * call_timeout,
        graceful_handover_worst_polling_s: p * JITTER_MAX + call_timeout,
        outage_survived_s: (r - interval - back_off).max(0.0),
        outage_survived_hanging_s: call_timeout,
        clock_rate_tolerance: (d - r) / (d + r),
        attempts_per_deadline: attempts(r, interval, call_timeout),
        attempts_per_deadline_fast_errors: attempts(r, interval, back_off),
        leader_writes_per_s: 1.0 / interval,
        leader_requests_per_s: 1.0 / interval + watch,
        follower_requests_per_s: watch,
        lease_requests_per_s: lease_requests,
        total_requests_per_s: f64::from(leases) * lease_requests,
        total_writes_per_s: f64::from(leases) / interval,
        warnings: Vec::new(),
    };
    t.warnings = warnings(&t);
    t
}

/// Warnings for unsafe or wasteful settings; each names the flag and the fix.
pub fn warnings(t: &Timings) -> Vec<String> {
    let (d, r, p) = (t.lease_duration_s, t.renew_deadline_s, t.retry_period_s);
    let mut w = Vec::new();
    if t.takeover_wait_s > d {
        w.push(format!(
            "--lease-duration {} is not whole seconds: the Lease stores {}, so followers wait that long; use --lease-duration {}",
            secs(d),
            secs(t.takeover_wait_s),
            secs(t.takeover_wait_s)
        ));
    }
    if t.clock_rate_tolerance < 0.1 {
        w.push(format!(
            "--renew-deadline {} is close to --lease-duration {}: only {:.1}% clock-rate difference is tolerated; lower --renew-deadline to at most {} (10%) or raise --lease-duration",
            secs(r),
            secs(d),
            t.clock_rate_tolerance * 100.0,
            secs(d * 9.0 / 11.0)
        ));
    }
    if t.attempts_per_deadline_fast_errors < 2 {
        w.push(format!(
            "--retry-period {} is close to --renew-deadline {}: after a failed renewal the leader backs off up to {}, so only {} renewal attempt fits in a deadline and one failed call loses leadership; lower --retry-period to at most {}",
            secs(p),
            secs(r),
            secs(p / 2.0 * JITTER_MAX),
            t.attempts_per_deadline_fast_errors,
            secs(r / 4.0)
        ));
    }
    if t.call_timeout_s < 1.0 {
        w.push(format!(
            "--renew-deadline {} makes every API call time out after {} (R/5), below what a loaded apiserver may take (its SLO allows 1s at p99 for writes); raise --renew-deadline to at least 5s if the apiserver can be slow",
            secs(r),
            secs(t.call_timeout_s)
        ));
    }
    if t.total_writes_per_s > 10.0 {
        w.push(format!(
            "--renew-deadline {} makes the leaders write {:.1} times per second to etcd ({} lease(s), one renewal per 3R/5); raise --renew-deadline to at least {} (and --lease-duration with it) unless failover must be that fast",
            secs(r),
            t.total_writes_per_s,
            t.leases,
            secs((f64::from(t.leases) / 6.0).max(1.0).ceil())
        ));
    }
    if p < 0.1 {
        w.push(format!(
            "--retry-period {} makes followers poll {:.0} times per second while their watch is down; raise --retry-period to at least 100ms",
            secs(p),
            1.0 / p
        ));
    }
    if d > 3.0 * r {
        w.push(format!(
            "--lease-duration {} is more than 3× --renew-deadline {}: a crash costs up to {} but safety needs only D > R (clocks differ by ppm); lower --lease-duration to about {} (20% clock tolerance) for faster failover",
            secs(d),
            secs(r),
            secs(t.crash_failover_worst_s),
            secs((1.5 * r).ceil().max(1.0))
        ));
    }
    if t.total_requests_per_s > 50.0 {
        w.push(format!(
            "{} lease(s) × {} candidate(s) make {:.1} API requests per second; raise --renew-deadline or run fewer candidates",
            t.leases, t.candidates, t.total_requests_per_s
        ));
    }
    w
}

/// The table printed by `leaderd timings`.
pub fn table(t: &Timings) -> String {
    let rows: Vec<(&str, String, &str)> = vec![
        (
            "settings",
            format!(
                "D {} / R {} / P {}, {} lease(s) × {} candidate(s)",
                secs(t.lease_duration_s),
                secs(t.renew_deadline_s),
                secs(t.retry_period_s),
                t.leases,
                t.candidates
            ),
            "",
        ),
        (
            "crash failover (kill -9), worst",
            secs(t.crash_failover_worst_s),
            "W + spread (+ one request); W = D in whole seconds",
        ),
        (
            "crash failover, typical",
            secs(t.crash_failover_typical_s),
            "W − I/2 + spread/2; best W − I",
        ),
        (
            "crash failover, watch down",
            secs(t.crash_failover_worst_polling_s),
            "W + 1.2 P + spread (followers poll)",
        ),
        (
            "graceful handover (SIGTERM, release)",
            format!("{} round trips", t.graceful_handover_round_trips),
            "release PUT, watch event, acquire PUT: ms on a healthy apiserver",
        ),
        (
            "graceful handover, worst answered",
            secs(t.graceful_handover_worst_answered_s),
            "2 × R/5; watch down: +1.2 P; release lost: crash failover",
        ),
        (
            "apiserver outage survived",
            secs(t.outage_survived_s),
            "2R/5 − 0.6 P (errors answered at once)",
        ),
        (
            "apiserver outage survived, calls hang",
            secs(t.outage_survived_hanging_s),
            "R/5 (calls time out after R/5, retried at once)",
        ),
        (
            "clock rate tolerance",
            format!("{:.1}%", t.clock_rate_tolerance * 100.0),
            "(D − R)/(D + R)",
        ),
        (
            "attempts per deadline",
            format!(
                "{} ({} if errors come at once)",
                t.attempts_per_deadline, t.attempts_per_deadline_fast_errors
            ),
            "renewals sent within R after a success: at I, then every R/5 (hanging) or 0.6 P",
        ),
        ("call timeout", secs(t.call_timeout_s), "R/5"),
        (
            "renew interval (I)",
            secs(t.renew_interval_s),
            "3R/5 after the last successful renew was sent",
        ),
        (
            "leader writes/s",
            format!("{:.3}", t.leader_writes_per_s),
            "1/I",
        ),
        (
            "leader requests/s",
            format!("{:.3}", t.leader_requests_per_s),
            "1/I + 1/60 (watch re-opens)",
        ),
        (
            "follower requests/s",
            format!("{:.3}", t.follower_requests_per_s),
            "1/60 (watch re-opens)",
        ),
        (
            "requests/s per lease, all candidates",
            format!("{:.3}", t.lease_requests_per_s),
            "1/I + candidates/60",
        ),
        (
            "requests/s, all leases",
            format!("{:.3}", t.total_requests_per_s),
            "leases × (1/I + candidates/60)",
        ),
        (
            "writes/s, all leases",
            format!("{:.3}", t.total_writes_per_s),
            "leases/I",
        ),
    ];
    let width = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let vwidth = rows
        .iter()
        .skip(1)
        .map(|r| r.1.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for (name, value, formula) in rows {
        let pad = width - name.chars().count();
        let line = format!("{name}{}  {value:<vwidth$}  {formula}", " ".repeat(pad));
        out.push_str(line.trim_end());
        out.push('\n');
    }
    if t.warnings.is_empty() {
        out.push_str("no warnings\n");
    }
    for w in &t.warnings {
        out.push_str("warning: ");
        out.push_str(w);
        out.push('\n');
    }
    out
}

/// `leaderd timings`: validate like the sidecar (exit 64 naming the flag), then print.
pub fn run(args: &TimingsArgs) -> ExitCode {
    if let Err(e) = args.timing.validate() {
        eprintln!("leaderd: {e}");
        return ExitCode::from(EXIT_USAGE);
    }
    let t = compute(
        args.timing.lease_duration,
        args.timing.renew_deadline,
        args.timing.retry_period,
        args.leases,
        args.candidates,
    );
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&t).expect("figures serialize")
        );
    } else {
        print!("{}", table(&t));
    }
    ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(d: u64, r: u64, p: u64, candidates: u32) -> Timings {
        compute(
            Duration::from_millis(d),
            Duration::from_millis(r),
            Duration::from_millis(p),
            1,
            candidates,
        )
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn defaults_15_10_2() {
        let x = t(15_000, 10_000, 2_000, 3);
        assert!(close(x.call_timeout_s, 2.0));
        assert!(close(x.renew_interval_s, 6.0));
        assert!(close(x.takeover_spread_s, 0.05));
        assert!(close(x.crash_failover_worst_s, 15.05));
        assert!(close(x.crash_failover_typical_s, 12.025));
        assert!(close(x.crash_failover_best_s, 9.0));
        assert!(close(x.clock_rate_tolerance, 0.2));
        assert!(close(x.outage_survived_s, 2.8));
        assert!(close(x.outage_survived_hanging_s, 2.0));
        assert_eq!(x.attempts_per_deadline, 2);
        assert_eq!(x.attempts_per_deadline_fast_errors, 4);
        // The goal: the leader at most 0.2 writes/s at the defaults (was 1/P = 0.5).
        assert!(close(x.leader_writes_per_s, 1.0 / 6.0));
        assert!(x.leader_writes_per_s <= 0.2);
        assert!(close(x.leader_requests_per_s, 1.0 / 6.0 + 1.0 / 60.0));
        assert!(close(x.follower_requests_per_s, 1.0 / 60.0));
        assert!(close(x.lease_requests_per_s, 1.0 / 6.0 + 0.05));
        assert!(x.warnings.is_empty(), "{:?}", x.warnings);
    }

    #[test]
    fn fast_3_2_half() {
        let x = t(3_000, 2_000, 500, 3);
        assert!(close(x.renew_interval_s, 1.2));
        assert!(close(x.crash_failover_worst_s, 3.05));
        assert!(close(x.crash_failover_typical_s, 2.425));
        assert!(close(x.clock_rate_tolerance, 0.2));
        assert!(close(x.outage_survived_s, 0.5));
        assert!(close(x.outage_survived_hanging_s, 0.4));
        assert_eq!(x.attempts_per_deadline, 2);
        assert_eq!(x.attempts_per_deadline_fast_errors, 3);
        // The goal for this group: at most 1 API request per second (was 2.05).
        assert!(close(x.lease_requests_per_s, 1.0 / 1.2 + 0.05));
        assert!(x.lease_requests_per_s <= 1.0);
        assert!(close(x.leader_writes_per_s, 1.0 / 1.2));
        // The price: calls time out after 400 ms.
        assert_eq!(x.warnings.len(), 1, "{:?}", x.warnings);
        assert!(x.warnings[0]
            .starts_with("--renew-deadline 2s makes every API call time out after 400ms"));
    }

    /// bench/RESULTS.md, "Fewer writes": at the defaults, 3 candidates, kill -9 took 9096–14484
    /// ms (median 11692), SIGTERM 3–11 ms, the leader made 0.183 requests/s and 0.167 writes/s,
    /// a follower 0.017 requests/s; at 3 s / 2 s / 500 ms kill -9 took 1854–2856 ms and the
    /// leader wrote 0.833 times/s.
    #[test]
    fn matches_the_measured_figures() {
        let x = t(15_000, 10_000, 2_000, 3);
        for measured in [12.439, 14.484, 9.096, 11.692, 11.680] {
            assert!(measured >= x.crash_failover_best_s && measured <= x.crash_failover_worst_s);
        }
        assert!((11.692 - x.crash_failover_typical_s).abs() <= x.renew_interval_s / 2.0);
        assert!((x.leader_requests_per_s - 0.183).abs() < 0.001);
        assert!((x.leader_writes_per_s - 0.167).abs() < 0.001);
        assert!((x.follower_requests_per_s - 0.017).abs() < 0.001);
        let y = t(3_000, 2_000, 500, 3);
        for measured in [2.856, 1.854, 2.547, 2.091, 1.888] {
            assert!(measured >= y.crash_failover_best_s && measured <= y.crash_failover_worst_s);
        }
        assert!((y.leader_writes_per_s - 0.833).abs() < 0.001);
        assert!((y.lease_requests_per_s - 0.883).abs() < 0.001);
    }

    /// Rule 14 keeps two attempts in every deadline whatever the settings, and the renewal
    /// cadence below the deadline, so followers (who wait D > R) always see it in time.
    #[test]
    fn two_attempts_fit_in_every_deadline() {
        for r in [1_000u64, 1_500, 2_000, 7_000, 10_000, 33_333, 60_000] {
            let x = t(r * 2, r, r / 10, 3);
            assert_eq!(x.attempts_per_deadline, 2, "R {r} ms");
            assert!(x.attempts_per_deadline_fast_errors >= 2, "R {r} ms");
            assert!(x.renew_interval_s + 2.0 * x.call_timeout_s <= x.renew_deadline_s + 1e-9);
        }
    }

    #[test]
    fn warnings_name_the_flag_and_the_fix() {
        let has = |x: &Timings, flag: &str| x.warnings.iter().any(|w| w.starts_with(flag));
        // R close to D.
        let x = t(10_000, 9_500, 2_000, 3);
        assert!(has(
            &x,
            "--renew-deadline 9s 500ms is close to --lease-duration"
        ));
        // P close to R: after a failed renewal, one attempt per deadline.
        let x = t(15_000, 10_000, 7_000, 3);
        assert_eq!(x.attempts_per_deadline_fast_errors, 1);
        assert!(has(&x, "--retry-period 7s is close to --renew-deadline"));
        // Tiny R: calls time out below apiserver latency; tiny P: polling load.
        let x = t(1_000, 600, 50, 3);
        assert!(has(
            &x,
            "--renew-deadline 600ms makes every API call time out after 120ms"
        ));
        assert!(has(&x, "--retry-period 50ms makes followers poll 20 times"));
        // D far above R.
        let x = t(60_000, 10_000, 2_000, 3);
        assert!(has(&x, "--lease-duration 1m is more than 3×"));
        // D not whole seconds: followers wait the record's whole seconds.
        let x = t(2_500, 2_000, 500, 3);
        assert!(close(x.crash_failover_worst_s, 3.05));
        assert!(has(&x, "--lease-duration 2s 500ms is not whole seconds"));
        // Many leases: write load and request load.
        let x = compute(
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2),
            200,
            3,
        );
        assert!(has(
            &x,
            "--renew-deadline 10s makes the leaders write 33.3 times per second"
        ));
        assert!(x
            .warnings
            .iter()
            .any(|w| w.contains("raise --renew-deadline to at least 34s")));
        for w in &x.warnings {
            assert!(w.contains("--"), "{w}");
        }
    }

    #[test]
    fn leases_multiply_the_load() {
        let x = compute(
            Duration::from_secs(15),
            Duration::from_secs(10),
            Duration::from_secs(2),
            10,
            3,
        );
        assert!(close(x.total_requests_per_s, 10.0 * (1.0 / 6.0 + 0.05)));
        assert!(close(x.total_writes_per_s, 10.0 / 6.0));
    }

    #[test]
    fn table_names_every_figure() {
        let s = table(&t(15_000, 10_000, 2_000, 3));
        for name in [
            "crash failover (kill -9), worst",
            "graceful handover",
            "apiserver outage survived",
            "clock rate tolerance",
            "attempts per deadline",
            "renew interval (I)",
            "leader writes/s",
            "follower requests/s",
            "requests/s, all leases",
            "no warnings",
        ] {
            assert!(s.contains(name), "{name} missing from\n{s}");
        }
        assert!(s.contains("20.0%"), "{s}");
    }
}

//! The clock the election runs on: tokio's monotonic clock (pausable in tests) plus the time
//! this machine has spent suspended since the process started (Linux's `CLOCK_BOOTTIME` minus
//! `CLOCK_MONOTONIC`). A VM that is suspended or live-migrated stops the monotonic clock; a leader
//! that wakes up must not believe it still has the rest of its claim, so claims are judged on
//! this clock, which keeps running through a suspend. For followers it only counts real time
//! too (rule 1 needs no less), so one clock serves the whole state machine.
//!
//! tokio's timers run on the monotonic clock: [`timer_for`] converts a due instant of this clock
//! to the timer instant that is due now as far as we know (a later suspend makes the timer late,
//! never early; the elector wakes every retry period while it leads to notice).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use rustix::time::{clock_gettime, ClockId, Timespec};
use tokio::time::Instant;

/// `CLOCK_BOOTTIME - CLOCK_MONOTONIC` when first asked.
static BASE: OnceLock<Duration> = OnceLock::new();
/// Suspended time injected by tests, in nanoseconds.
static INJECTED: AtomicU64 = AtomicU64::new(0);

fn as_duration(t: Timespec) -> Duration {
    Duration::new(
        t.tv_sec.max(0) as u64,
        t.tv_nsec.clamp(0, 999_999_999) as u32,
    )
}

fn boot_minus_mono() -> Duration {
    let boot = as_duration(clock_gettime(ClockId::Boottime));
    let mono = as_duration(clock_gettime(ClockId::Monotonic));
    boot.saturating_sub(mono)
}

/// Time this machine spent suspended since the process first asked (plus any injected).
pub fn suspended() -> Duration {
    let base = *BASE.get_or_init(boot_minus_mono);
    boot_minus_mono().saturating_sub(base) + Duration::from_nanos(INJECTED.load(Ordering::SeqCst))
}

/// Now, on the election's clock.
pub fn now() -> Instant {
    Instant::now() + suspended()
}

/// The tokio timer instant at which `t` (on the election's clock) is due, as far as known now.
pub fn timer_for(t: Instant) -> Instant {
    let s = suspended();
    t.checked_sub(s).unwrap_or(t)
}

/// For tests: pretend the machine was just suspended for `d` (the monotonic clock stood still
/// while real time went on). Global to the process: use it in a test binary of its own.
pub fn inject_suspend(d: Duration) {
    let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    INJECTED.fetch_add(nanos, Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_a_suspend_the_clock_is_the_monotonic_one() {
        let s = suspended();
        assert!(s < Duration::from_millis(50), "{s:?}");
        let t = Instant::now() + Duration::from_secs(1);
        let back = timer_for(t);
        assert!(t - back < Duration::from_millis(50));
    }
}

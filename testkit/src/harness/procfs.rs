//! What Linux's /proc says about a process (memory, CPU time, open files), the open-files
//! limit that candidates inherit, and the machine the benchmarks ran on.

use std::io;
use std::time::Duration;

/// Resident memory, CPU time and open files of a process, as Linux's /proc tells them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcUsage {
    /// `VmRSS` in KiB.
    pub rss_kib: u64,
    /// User + system CPU time.
    pub cpu: Duration,
    /// Open file descriptors.
    pub fds: usize,
}

/// Read `pid`'s [`ProcUsage`] from /proc; an error when the process is gone or /proc says
/// something unexpected.
pub fn proc_usage(pid: u32) -> io::Result<ProcUsage> {
    let bad = |what: &str| io::Error::new(io::ErrorKind::InvalidData, format!("{what} of {pid}"));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| bad("no VmRSS in /proc/PID/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // The fields after the command name (which may hold spaces and parentheses) start with
    // field 3, `state`; utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    let tick = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok());
    let ticks = tick(11)
        .zip(tick(12))
        .map(|(u, s)| u + s)
        .ok_or_else(|| bad("unexpected /proc/PID/stat"))?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz <= 0 {
        return Err(io::Error::last_os_error());
    }
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))?.count();
    Ok(ProcUsage {
        rss_kib,
        cpu: Duration::from_secs_f64(ticks as f64 / hz as f64),
        fds,
    })
}

/// Raise this process's soft RLIMIT_NOFILE to `need`, or to the hard limit if that is lower;
/// processes started afterwards (the leaderd candidates) inherit it. Returns the soft limit now
/// in force, which the caller compares with what it needs.
pub fn raise_nofile(need: u64) -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit only read and write the struct we pass.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if lim.rlim_cur < need {
        lim.rlim_cur = need.min(lim.rlim_max);
        // SAFETY: as above.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) } != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(lim.rlim_cur)
}

/// The machine (CPU model, cores, memory, kernel), for a benchmark's JSON.
pub fn machine() -> serde_json::Value {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_gib = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1).map(str::to_owned))
        })
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024 / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_string();
    serde_json::json!({"cpu": cpu, "cores": cores, "mem_gib": mem_gib, "kernel": kernel})
}

/// `/proc/loadavg`'s three averages.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use std::process::Stdio;

    use super::*;

    #[test]
    fn proc_usage_reads_this_process_and_a_child() {
        let before = proc_usage(std::process::id()).expect("readable");
        assert!(before.rss_kib > 0 && before.fds >= 3, "{before:?}");
        let spin = std::time::Instant::now();
        while spin.elapsed() < Duration::from_millis(50) {
            std::hint::black_box(spin.elapsed());
        }
        let after = proc_usage(std::process::id()).expect("readable");
        assert!(after.cpu > before.cpu, "{before:?} -> {after:?}");
        // A child: at least stdin, stdout and stderr (more while it is between fork and exec).
        let mut child = std::process::Command::new("sleep")
            .arg("10")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("sleep starts");
        let u = proc_usage(child.id());
        let _ = child.kill();
        let _ = child.wait();
        let u = u.expect("readable");
        assert!(u.fds >= 3, "{u:?}");
        assert!(u.rss_kib > 0, "{u:?}");
        assert!(proc_usage(child.id()).is_err(), "gone after wait");
    }

    #[test]
    fn raise_nofile_never_lowers_the_limit() {
        let now = raise_nofile(0).expect("getrlimit");
        assert_eq!(raise_nofile(now).expect("again"), now);
        assert!(raise_nofile(now + 1).expect("raise") >= now);
    }
}

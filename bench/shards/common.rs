//! What both layouts share: who owns what in the sampler's latest answers, the balance and
//! coverage predicates, the Lease changes the test server committed, and the steady window
//! (Lease writes and API requests at the server; CPU and RSS of every replica from /proc).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant as StdInstant};

use leaderd::shards::ShardsDoc;
use leaderd_testkit::harness::proc_usage;
use leaderd_testkit::testserver::TestServer;
use serde_json::{json, Value};

/// Owned shard ids per replica, in the latest answers of `live` (missing answers: none).
pub fn owned(latest: &HashMap<String, ShardsDoc>, live: &[String]) -> BTreeMap<String, Vec<u32>> {
    live.iter()
        .map(|who| {
            let ids = latest
                .get(who)
                .map(|d| {
                    d.shards
                        .iter()
                        .filter(|s| s.is_owner)
                        .map(|s| s.id)
                        .collect()
                })
                .unwrap_or_default();
            (who.clone(), ids)
        })
        .collect()
}

/// The owner of every owned shard among `live` (the first one, if two answered `is_owner`).
pub fn owners(latest: &HashMap<String, ShardsDoc>, live: &[String]) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for (who, ids) in owned(latest, live) {
        for id in ids {
            out.entry(id).or_insert_with(|| who.clone());
        }
    }
    out
}

/// Every shard `0..n` owned by exactly one of `live` (each answered).
pub fn covered(latest: &HashMap<String, ShardsDoc>, live: &[String], n: u32) -> bool {
    if live.iter().any(|w| !latest.contains_key(w)) {
        return false;
    }
    let mut seen = vec![false; n as usize];
    let mut count = 0;
    for ids in owned(latest, live).into_values() {
        for id in ids {
            match seen.get_mut(id as usize) {
                Some(s) if !*s => {
                    *s = true;
                    count += 1;
                }
                _ => return false,
            }
        }
    }
    count == n as usize
}

/// [`covered`], and every one of `live` owning ⌊n/m⌋ or ⌈n/m⌉.
pub fn balanced(latest: &HashMap<String, ShardsDoc>, live: &[String], n: u32) -> bool {
    let m = live.len() as u32;
    if m == 0 || !covered(latest, live, n) {
        return false;
    }
    let (lo, hi) = (n / m, n.div_ceil(m));
    owned(latest, live)
        .values()
        .all(|ids| (lo..=hi).contains(&(ids.len() as u32)))
}

/// Shards whose owner differs between two owner maps (a shard unowned on one side counts).
pub fn moved(before: &BTreeMap<u32, String>, after: &BTreeMap<u32, String>) -> usize {
    let ids: std::collections::BTreeSet<u32> = before.keys().chain(after.keys()).copied().collect();
    ids.into_iter()
        .filter(|id| before.get(id) != after.get(id))
        .count()
}

/// Owned counts per replica, as `name:count` (for messages).
pub fn counts(latest: &HashMap<String, ShardsDoc>, live: &[String]) -> String {
    owned(latest, live)
        .into_iter()
        .map(|(w, ids)| format!("{w}:{}", ids.len()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One Lease change as committed by the test server.
#[derive(Clone, Debug)]
pub struct Change {
    pub at: StdInstant,
    pub name: String,
    /// The holder differs from the one of the previous change of this Lease (seen here).
    pub holder_changed: bool,
}

/// Every Lease change the test server commits from now on (name, time, whether the holder
/// changed).
pub struct ChangeLog {
    inner: Arc<Mutex<(Vec<Change>, u64)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ChangeLog {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ChangeLog {
    pub fn start(server: &TestServer) -> ChangeLog {
        let mut changes = server.lease_changes();
        let inner = Arc::new(Mutex::new((Vec::new(), 0u64)));
        let shared = inner.clone();
        let task = tokio::spawn(async move {
            let mut holders: HashMap<String, Option<String>> = HashMap::new();
            while let Some(c) = changes.next().await {
                let holder = c.object["spec"]["holderIdentity"]
                    .as_str()
                    .filter(|h| !h.is_empty())
                    .map(str::to_owned);
                let prev = holders.insert(c.name.clone(), holder.clone());
                let holder_changed = prev.is_some_and(|p| p != holder);
                let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
                g.0.push(Change {
                    at: c.at,
                    name: c.name,
                    holder_changed,
                });
                g.1 = changes.lagged;
            }
        });
        ChangeLog { inner, task }
    }

    /// The changes committed in `[from, to)`.
    pub fn between(&self, from: StdInstant, to: StdInstant) -> Vec<Change> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter()
            .filter(|c| c.at >= from && c.at < to)
            .cloned()
            .collect()
    }

    /// Distinct Leases changed so far.
    pub fn leases(&self) -> usize {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.0.iter()
            .map(|c| c.name.as_str())
            .collect::<std::collections::BTreeSet<_>>()
            .len()
    }

    /// Changes this log fell too far behind to see (0 unless the bench process starved).
    pub fn lagged(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).1
    }
}

/// `VmRSS` and `RssAnon` of a process in KiB, from /proc/PID/status.
pub fn rss(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
    };
    Some((field("VmRSS:")?, field("RssAnon:")?))
}

/// One process's figures over the steady window.
#[derive(Clone, Debug)]
pub struct ProcFig {
    pub name: String,
    /// CPU time (utime + stime) per second of the window, in ms.
    pub cpu_ms_per_s: f64,
    /// `VmRSS` at the end, KiB.
    pub rss_kib: u64,
    /// `RssAnon` at the end, KiB.
    pub anon_kib: u64,
    /// Its API requests (by bearer token) in the window.
    pub requests: usize,
    /// Of which Lease writes (create + update).
    pub writes: usize,
}

/// The steady window's figures.
#[derive(Clone, Debug, Default)]
pub struct Steady {
    pub secs: f64,
    /// Lease `create` + `update` requests (any status), the whole group.
    pub writes: usize,
    /// Of which answered 2xx.
    pub writes_ok: usize,
    /// Every API request (all verbs, all resources; a watch counts when it starts).
    pub requests: usize,
    pub by_verb: BTreeMap<String, usize>,
    /// Lease changes committed, and how many of them changed a holder.
    pub commits: usize,
    pub holder_changes: usize,
    /// Commits by kind of Lease (the group's: coordinator / member / assignment; buckets).
    pub commits_by_kind: BTreeMap<String, usize>,
    pub procs: Vec<ProcFig>,
    /// The bench process (the test server, the change log and the checkers; samplers paused).
    pub server_cpu_ms_per_s: f64,
    /// Open files of the bench process at the end of the window, minus `baseline_fds` (before
    /// the first replica started): the connections the replicas hold open to the test server.
    pub server_conns: usize,
    /// Leases in the namespace (every Lease written so far).
    pub leases: usize,
}

impl Steady {
    pub fn writes_per_s(&self) -> f64 {
        self.writes as f64 / self.secs
    }

    pub fn json(&self) -> Value {
        json!({
            "secs": self.secs,
            "lease_writes": self.writes,
            "lease_writes_ok": self.writes_ok,
            "lease_writes_per_s": self.writes_per_s(),
            "requests": self.requests,
            "requests_per_s": self.requests as f64 / self.secs,
            "requests_by_verb": self.by_verb,
            "commits": self.commits,
            "commits_by_kind": self.commits_by_kind,
            "holder_changes": self.holder_changes,
            "bench_process_cpu_ms_per_s": self.server_cpu_ms_per_s,
            "connections_at_the_test_server": self.server_conns,
            "leases": self.leases,
            "replicas": self.procs.iter().map(|p| json!({
                "name": p.name,
                "cpu_ms_per_s": p.cpu_ms_per_s,
                "vmrss_kib": p.rss_kib,
                "rssanon_kib": p.anon_kib,
                "requests": p.requests,
                "lease_writes": p.writes,
            })).collect::<Vec<_>>(),
        })
    }
}

/// Whether a request is a Lease write.
pub fn is_lease_write(r: &leaderd_testkit::testserver::RequestRecord) -> bool {
    r.resource == "leases" && (r.verb == "create" || r.verb == "update")
}

/// Measure a quiet window of length `window` (the caller pauses its samplers): API requests
/// and Lease commits at the server, CPU and RSS of every `(name, pid)`.
pub async fn steady_window(
    server: &TestServer,
    changes: &ChangeLog,
    procs: &[(String, u32)],
    window: Duration,
    baseline_fds: usize,
    kind: impl Fn(&str) -> &'static str,
) -> Steady {
    let me = std::process::id();
    let before: Vec<Option<Duration>> = procs
        .iter()
        .map(|(_, pid)| proc_usage(*pid).ok().map(|u| u.cpu))
        .collect();
    let me0 = proc_usage(me).ok().map(|u| u.cpu);
    let t0 = StdInstant::now();
    tokio::time::sleep(window).await;
    let t1 = StdInstant::now();
    let me1 = proc_usage(me).ok();
    let server_conns = me1.map_or(0, |u| u.fds.saturating_sub(baseline_fds));
    let me1 = me1.map(|u| u.cpu);
    let secs = (t1 - t0).as_secs_f64();
    let per_s = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
        (Some(a), Some(b)) => b.saturating_sub(a).as_secs_f64() * 1000.0 / secs,
        _ => f64::NAN,
    };
    let requests: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.at >= t0 && r.at < t1)
        .collect();
    let mut s = Steady {
        secs,
        server_cpu_ms_per_s: per_s(me0, me1),
        server_conns,
        leases: changes.leases(),
        ..Steady::default()
    };
    for r in &requests {
        s.requests += 1;
        *s.by_verb.entry(r.verb.clone()).or_default() += 1;
        if is_lease_write(r) {
            s.writes += 1;
            if (200..300).contains(&r.status) {
                s.writes_ok += 1;
            }
        }
    }
    for c in changes.between(t0, t1) {
        s.commits += 1;
        s.holder_changes += usize::from(c.holder_changed);
        *s.commits_by_kind
            .entry(kind(&c.name).to_owned())
            .or_default() += 1;
    }
    for ((name, pid), cpu0) in procs.iter().zip(before) {
        let cpu1 = proc_usage(*pid).ok().map(|u| u.cpu);
        let (rss_kib, anon_kib) = rss(*pid).unwrap_or((0, 0));
        let mine = requests.iter().filter(|r| r.client == *name);
        let (mut n, mut w) = (0, 0);
        for r in mine {
            n += 1;
            w += usize::from(is_lease_write(r));
        }
        s.procs.push(ProcFig {
            name: name.clone(),
            cpu_ms_per_s: per_s(cpu0, cpu1),
            rss_kib,
            anon_kib,
            requests: n,
            writes: w,
        });
    }
    s
}

/// Milliseconds of a duration, as f64.
pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `15s/10s/2s`-style rendering of a timing.
pub fn timing_str(t: (Duration, Duration, Duration)) -> String {
    let h = |d: Duration| humantime::format_duration(d).to_string().replace(' ', "");
    format!("{}/{}/{}", h(t.0), h(t.1), h(t.2))
}

/// min, mean, max of a list.
pub fn min_mean_max(v: &[f64]) -> Option<(f64, f64, f64)> {
    let v: Vec<f64> = v.iter().copied().filter(|x| x.is_finite()).collect();
    if v.is_empty() {
        return None;
    }
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((min, v.iter().sum::<f64>() / v.len() as f64, max))
}

/// Open files of this process now.
pub fn my_fds() -> usize {
    proc_usage(std::process::id()).map_or(0, |u| u.fds)
}

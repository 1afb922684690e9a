//! The shard group: M leaderd replicas with `--lease-name GROUP --shards N`, on the Lease API
//! test server, every `/shards` sampled (`ShardSampler`), the member commits checked
//! (`CommitChecker`), every `/leader` (the coordinator's election) sampled too.
//!
//! Cold start (all M at once) → balanced; a steady window (samplers paused); a join (replica
//! M+1) → balanced; a graceful leave (SIGTERM a non-coordinator) → its shards owned again, then
//! balanced; a crash (kill -9 another non-coordinator) → the same. Then every replica is stopped
//! with SIGTERM and the safety checks run over everything sampled and committed.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use anyhow::{anyhow, bail};
use leaderd::shards::record::assignment_lease_name;
use leaderd::shards::ShardsDoc;
use leaderd_testkit::harness::shards::{CommitChecker, ShardSampler};
use leaderd_testkit::harness::{check, Candidate, Cluster, ClusterOptions};
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::{
    balanced, counts, covered, moved, ms, my_fds, owned, owners, steady_window, ChangeLog, Steady,
};
use crate::{dump_logs, pick, Config, NS};

pub const GROUP: &str = "bench-group";

/// One membership change (join, leave, crash) and what it cost.
#[derive(Clone, Debug, Default)]
pub struct Move {
    /// The replica that joined, left or crashed.
    pub who: String,
    /// Shards it owned before (leave, crash) or after (join).
    pub its_shards: usize,
    /// From the change until every shard was owned by one live replica (leave, crash).
    pub owned_again_ms: Option<f64>,
    /// From the change until every live replica owned ⌊N/M⌋ or ⌈N/M⌉.
    pub balanced_ms: Option<f64>,
    /// Shards with another owner afterwards than before.
    pub moved: usize,
    /// The fewest moves that balance needs.
    pub min_moves: usize,
    /// Owned per replica afterwards.
    pub counts: String,
    /// The exit status after SIGTERM.
    pub exit: Option<String>,
    /// How long after the previous step's end the signal was sent (a random fraction of the
    /// renew interval 3R/5).
    pub delay_ms: Option<f64>,
}

impl Move {
    pub fn json(&self) -> Value {
        json!({
            "who": self.who,
            "its_shards": self.its_shards,
            "owned_again_ms": self.owned_again_ms,
            "balanced_ms": self.balanced_ms,
            "moved": self.moved,
            "min_moves": self.min_moves,
            "counts": self.counts,
            "exit": self.exit,
            "delay_ms": self.delay_ms,
        })
    }
}

#[derive(Debug, Default)]
pub struct GroupResult {
    pub replicas: usize,
    pub shards: u32,
    pub coordinator: Option<String>,
    /// From the start until the first `/leader` answer with `is_leader` (the coordinator).
    pub coordinator_ms: Option<f64>,
    /// From the start until balanced.
    pub cold_ms: Option<f64>,
    pub cold_counts: String,
    pub steady: Option<Steady>,
    pub join: Option<Move>,
    pub leave: Option<Move>,
    pub crash: Option<Move>,
    /// Sampled shard tenures checked, or the violation.
    pub tenures: Option<Result<usize, String>>,
    /// Member commits checked, or the violations.
    pub commits: Option<Result<usize, Vec<String>>>,
    /// Coordinator (`/leader`) violations: two coordinators at once, falling epochs.
    pub coordinator_violations: Vec<String>,
    pub leader_samples: usize,
    pub shard_samples: usize,
    pub changes_lagged: u64,
    /// A step that did not complete (the rest of the steps were skipped).
    pub error: Option<String>,
    pub logs: Option<String>,
}

impl GroupResult {
    /// A safety violation, if any was seen.
    pub fn violation(&self) -> Option<String> {
        let mut v = Vec::new();
        if let Some(Err(e)) = &self.tenures {
            v.push(format!("/shards samples: {e}"));
        }
        if let Some(Err(e)) = &self.commits {
            v.push(format!("commit log: {}", e.join("; ")));
        }
        if !self.coordinator_violations.is_empty() {
            v.push(format!(
                "coordinator /leader samples: {}",
                self.coordinator_violations.join("; ")
            ));
        }
        (!v.is_empty()).then(|| v.join("\n"))
    }

    pub fn json(&self) -> Value {
        json!({
            "replicas": self.replicas,
            "shards": self.shards,
            "coordinator": self.coordinator,
            "coordinator_elected_ms": self.coordinator_ms,
            "cold_balanced_ms": self.cold_ms,
            "cold_counts": self.cold_counts,
            "steady": self.steady.as_ref().map(Steady::json),
            "join": self.join.as_ref().map(Move::json),
            "leave": self.leave.as_ref().map(Move::json),
            "crash": self.crash.as_ref().map(Move::json),
            "shard_tenures_checked": self.tenures.as_ref().and_then(|r| r.as_ref().ok()),
            "member_commits_checked": self.commits.as_ref().and_then(|r| r.as_ref().ok()),
            "violation": self.violation(),
            "leader_samples": self.leader_samples,
            "shard_samples": self.shard_samples,
            "changes_lagged": self.changes_lagged,
            "error": self.error,
            "logs": self.logs,
        })
    }
}

/// What kind of the group's Leases a name is.
pub fn kind(name: &str) -> &'static str {
    if name == GROUP {
        "coordinator"
    } else if name == assignment_lease_name(GROUP) {
        "assignment"
    } else if name.starts_with(&format!("{GROUP}-m-")) {
        "member"
    } else {
        "other"
    }
}

struct Run<'a> {
    cfg: &'a Config,
    c: Cluster,
    s: ShardSampler,
    changes: ChangeLog,
    live: Vec<String>,
    rng: fastrand::Rng,
    n_arg: String,
    baseline_fds: usize,
}

impl Run<'_> {
    fn latest(&self) -> HashMap<String, ShardsDoc> {
        self.s.latest()
    }

    /// The coordinator: the one replica answering `is_leader` on `/leader`.
    async fn coordinator(&self) -> Option<String> {
        self.c
            .sampler
            .wait_for_leader(self.cfg.timing.0, &[])
            .await
            .map(|(who, _)| who)
            .filter(|who| self.live.contains(who))
    }

    /// Wait until `f` holds on the latest answers; the time since `t0`.
    async fn until(
        &self,
        what: &str,
        t0: Instant,
        within: Duration,
        live: &[String],
        f: impl Fn(&HashMap<String, ShardsDoc>) -> bool,
    ) -> anyhow::Result<f64> {
        let left = within.saturating_sub(t0.elapsed());
        match self.s.wait_for(left, f).await {
            Ok(_) => Ok(ms(t0.elapsed())),
            Err(_) => Err(anyhow!(
                "{what}: not within {within:?}; owned now: {}",
                counts(&self.latest(), live)
            )),
        }
    }

    /// Wait until every live replica has answered at least once more.
    async fn fresh(&self) -> anyhow::Result<()> {
        let live = self.live.clone();
        self.s
            .wait_for(Duration::from_secs(10), move |l| {
                live.iter().all(|w| l.contains_key(w))
            })
            .await
            .map(|_| ())
            .map_err(|o| anyhow!("not every replica answers /shards: {o:?}"))
    }

    async fn non_coordinator(&mut self) -> anyhow::Result<String> {
        let coord = self.coordinator().await;
        let others: Vec<String> = self
            .live
            .iter()
            .filter(|w| Some(*w) != coord.as_ref())
            .cloned()
            .collect();
        if coord.is_none() {
            bail!("no single coordinator in the /leader samples");
        }
        pick(&mut self.rng, &others).ok_or_else(|| anyhow!("no replica to stop"))
    }

    async fn cold(&mut self, res: &mut GroupResult) -> anyhow::Result<()> {
        let cfg = self.cfg;
        let names: Vec<String> = (1..=cfg.replicas).map(|i| format!("r{i:02}")).collect();
        let specs = names
            .iter()
            .map(|n| self.c.spec(n, &["--shards", &self.n_arg]))
            .collect::<io::Result<Vec<_>>>()?;
        let t0 = Instant::now();
        let spawned = futures::future::join_all(specs.iter().map(Candidate::spawn)).await;
        for (name, r) in names.iter().zip(spawned) {
            let cand = r?;
            self.s.add(name, cand.addr);
            self.c.add(cand);
            self.live.push(name.clone());
        }
        println!(
            "shards: group: {} replicas started in {:.0} ms",
            cfg.replicas,
            ms(t0.elapsed())
        );
        let live = self.live.clone();
        let n = cfg.shards;
        let within = cfg.timing.0 * 4 + Duration::from_secs(30);
        res.cold_ms = Some(
            self.until("cold start: balanced", t0, within, &live, |l| {
                balanced(l, &live, n)
            })
            .await?,
        );
        res.cold_counts = counts(&self.latest(), &live);
        // The /leader sampler may not have seen the coordinator yet when the balance is seen.
        res.coordinator = self
            .c
            .sampler
            .wait_for_leader(cfg.timing.0, &[])
            .await
            .map(|(who, _)| who);
        res.coordinator_ms = self
            .c
            .sampler
            .samples()
            .iter()
            .filter(|x| x.view.is_leader && x.recv >= t0)
            .map(|x| ms(x.recv - t0))
            .reduce(f64::min);
        println!(
            "shards: group: balanced from cold in {:.0} ms (coordinator {:?} after {:.0} ms): {}",
            res.cold_ms.unwrap_or(f64::NAN),
            res.coordinator,
            res.coordinator_ms.unwrap_or(f64::NAN),
            res.cold_counts
        );
        Ok(())
    }

    async fn steady(&mut self, res: &mut GroupResult) -> anyhow::Result<()> {
        let cfg = self.cfg;
        let (_, r, p) = cfg.timing;
        // Let the acknowledgements and first renewals after the balance pass.
        tokio::time::sleep(r * 3 / 5 + p).await;
        self.c.pause();
        for w in &self.live {
            self.s.remove(w);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let procs: Vec<(String, u32)> = self
            .c
            .cands
            .iter()
            .filter_map(|x| x.pid().map(|pid| (x.name.clone(), pid)))
            .collect();
        let st = steady_window(
            &self.c.server,
            &self.changes,
            &procs,
            cfg.steady,
            self.baseline_fds,
            kind,
        )
        .await;
        self.c.resume();
        for x in &self.c.cands {
            self.s.add(&x.name, x.addr);
        }
        self.fresh().await?;
        println!(
            "shards: group: steady {:.0} s: {} Lease writes ({:.2}/s, {:.2} per retry period; budget M+1 = {}), {} requests, commits {:?}",
            st.secs,
            st.writes,
            st.writes_per_s(),
            st.writes_per_s() * p.as_secs_f64(),
            self.live.len() + 1,
            st.requests,
            st.commits_by_kind
        );
        res.steady = Some(st);
        Ok(())
    }

    async fn join(&mut self) -> anyhow::Result<Move> {
        let cfg = self.cfg;
        let name = format!("r{:02}", cfg.replicas + 1);
        let before = owners(&self.latest(), &self.live);
        let t0 = Instant::now();
        let cand = self.c.try_spawn(&name, &["--shards", &self.n_arg]).await?;
        let addr = cand.addr;
        self.s.add(&name, addr);
        self.live.push(name.clone());
        let live = self.live.clone();
        let n = cfg.shards;
        let balanced_ms = self
            .until("join: balanced", t0, cfg.timing.0 * 2, &live, |l| {
                balanced(l, &live, n)
            })
            .await?;
        let latest = self.latest();
        let after = owners(&latest, &live);
        let m = Move {
            its_shards: owned(&latest, std::slice::from_ref(&name))
                .get(&name)
                .map_or(0, Vec::len),
            who: name,
            owned_again_ms: None,
            balanced_ms: Some(balanced_ms),
            moved: moved(&before, &after),
            min_moves: (n / live.len() as u32) as usize,
            counts: counts(&latest, &live),
            exit: None,
            delay_ms: None,
        };
        println!(
            "shards: group: join of {}: balanced in {balanced_ms:.0} ms, {} shards moved (fewest possible {}): {}",
            m.who, m.moved, m.min_moves, m.counts
        );
        Ok(m)
    }

    /// SIGTERM (`crash` false) or kill -9 a non-coordinator.
    async fn remove(&mut self, crash: bool) -> anyhow::Result<Move> {
        let cfg = self.cfg;
        let (d, _, p) = cfg.timing;
        // A random fraction of the renew interval first, so that the signal does not fall on
        // one phase of the renewals (right after the last step's writes, every time).
        let delay = (cfg.timing.1 * 3 / 5).mul_f64(self.rng.f64());
        tokio::time::sleep(delay).await;
        self.fresh().await?;
        let victim = self.non_coordinator().await?;
        let latest = self.latest();
        let before = owners(&latest, &self.live);
        let its = owned(&latest, std::slice::from_ref(&victim))
            .get(&victim)
            .map_or(0, Vec::len);
        let others: Vec<String> = self
            .live
            .iter()
            .filter(|w| **w != victim)
            .cloned()
            .collect();
        let n = cfg.shards;
        let t0 = Instant::now();
        if crash {
            self.c.get(&victim).kill9();
            self.s.remove(&victim);
            self.c.sampler.remove(&victim);
        } else {
            self.c.get(&victim).signal(libc::SIGTERM);
        }
        let what = if crash { "crash" } else { "leave" };
        let within = if crash { d * 3 } else { d * 2 };
        let owned_again = self
            .until(&format!("{what}: owned again"), t0, within, &others, |l| {
                covered(l, &others, n)
            })
            .await?;
        let balanced_ms = self
            .until(&format!("{what}: balanced"), t0, within + p, &others, |l| {
                balanced(l, &others, n)
            })
            .await?;
        let exit = if crash {
            None
        } else {
            let st = self.c.get(&victim).wait_exit(d).await;
            self.s.remove(&victim);
            self.c.sampler.remove(&victim);
            Some(st.map_or("did not exit".to_owned(), |s| s.to_string()))
        };
        self.live = others;
        let latest = self.latest();
        let after = owners(&latest, &self.live);
        let m = Move {
            who: victim,
            its_shards: its,
            owned_again_ms: Some(owned_again),
            delay_ms: Some(ms(delay)),
            balanced_ms: Some(balanced_ms),
            moved: moved(&before, &after),
            min_moves: its,
            counts: counts(&latest, &self.live),
            exit,
        };
        println!(
            "shards: group: {what} of {} ({:.0} ms after the previous step; {} shards): owned again in {owned_again:.0} ms, balanced in {balanced_ms:.0} ms, {} moved{}: {}",
            m.who,
            m.delay_ms.unwrap_or(f64::NAN),
            m.its_shards,
            m.moved,
            m.exit.as_ref().map_or(String::new(), |e| format!(", {e}")),
            m.counts
        );
        Ok(m)
    }
}

/// Run the shard group; never fails (a step that fails is recorded, and the checks still run).
pub async fn run(cfg: &Config) -> anyhow::Result<GroupResult> {
    let mut res = GroupResult {
        replicas: cfg.replicas,
        shards: cfg.shards,
        ..GroupResult::default()
    };
    let mut o = ClusterOptions::new(&cfg.leaderd, GROUP);
    o.namespace = NS.into();
    o.timing = cfg.timing;
    o.sample_period = cfg.leader_sample_period;
    let c = Cluster::start(o, 0).await?;
    let checker = CommitChecker::start(&c.server, NS, GROUP);
    let changes = ChangeLog::start(&c.server);
    let s = ShardSampler::start(cfg.sample_period);
    let mut run = Run {
        cfg,
        c,
        s,
        changes,
        live: Vec::new(),
        rng: fastrand::Rng::with_seed(cfg.seed),
        n_arg: cfg.shards.to_string(),
        baseline_fds: my_fds(),
    };
    let steps = async {
        run.cold(&mut res).await?;
        run.steady(&mut res).await?;
        res.join = Some(run.join().await?);
        res.leave = Some(run.remove(false).await?);
        res.crash = Some(run.remove(true).await?);
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        println!("shards: group: FAILED: {e:#}");
        res.error = Some(format!("{e:#}"));
    }
    // Stop every replica gracefully (still sampled), then check everything.
    let grace = cfg.timing.1;
    for x in &run.c.cands {
        x.signal(libc::SIGTERM);
    }
    for x in &run.c.cands {
        if x.wait_exit(grace).await.is_none() {
            x.kill9();
        }
    }
    let leader_samples = run.c.sampler.samples();
    res.leader_samples = leader_samples.len();
    res.coordinator_violations = check(&leader_samples);
    drop(leader_samples);
    res.shard_samples = run.s.samples().len();
    res.tenures = Some(run.s.check());
    res.commits = Some(checker.result());
    res.changes_lagged = run.changes.lagged();
    if res.error.is_some() || res.violation().is_some() || cfg.logs.is_some() {
        res.logs = dump_logs(cfg, "group", &run.c.cands);
    }
    drop(run.s);
    run.c.server.shutdown().await;
    Ok(res)
}

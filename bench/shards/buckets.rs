//! The lease-per-shard layout (knative style): M peer processes (`peer.rs`), each running one
//! leaderd election per bucket for all B bucket Leases, on a fresh Lease API test server, every
//! peer's `/shards` sampled by the same `ShardSampler` (per bucket: no two leaders at once,
//! epochs rising).
//!
//! Cold start (all M at once) → every bucket led (no balancing: the distribution is reported);
//! a steady window (sampler paused); a join (peer M+1: how many buckets it leads after two renew
//! intervals); a graceful leave (SIGTERM: every elector releases) → its buckets led again; a
//! crash (kill -9) → the same. The victim each time is the peer leading the most buckets. An
//! attempt that cannot keep up (no leader for every bucket in time, renewals missing in the
//! steady window, a failover beyond its bound) is reported as overwhelmed, and the caller tries
//! fewer buckets.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant as StdInstant};

use anyhow::{anyhow, bail, Context as _};
use leaderd::shards::ShardsDoc;
use leaderd_testkit::harness::shards::ShardSampler;
use leaderd_testkit::harness::{proc_usage, write_kubeconfig, Candidate};
use leaderd_testkit::testserver::TestServer;
use serde_json::{json, Value};
use tokio::time::Instant;

use crate::common::{
    counts, covered, moved, ms, my_fds, owned, owners, steady_window, ChangeLog, Steady,
};
use crate::group::Move;
use crate::peer::PEER_ARG;
use crate::{dump_logs, pick, Config, NS};

pub const PREFIX: &str = "bucket";

#[derive(Debug, Default)]
pub struct BucketsResult {
    pub replicas: usize,
    pub buckets: u32,
    /// From the start until every bucket had one leader.
    pub cold_ms: Option<f64>,
    /// Buckets led per replica after the cold start.
    pub distribution: Vec<usize>,
    pub cold_counts: String,
    /// CPU (this process, the peers) and requests during the cold start, and TCP sockets after.
    pub cold_load: Value,
    pub steady: Option<Steady>,
    /// The joiner: buckets it led after `join_wait_ms`.
    pub join: Option<Move>,
    pub join_wait_ms: f64,
    pub leave: Option<Move>,
    pub crash: Option<Move>,
    pub tenures: Option<Result<usize, String>>,
    pub shard_samples: usize,
    pub changes_lagged: u64,
    /// Why this size did not work (the rest of the steps were skipped).
    pub overwhelmed: Option<String>,
    pub logs: Option<String>,
}

impl BucketsResult {
    pub fn violation(&self) -> Option<String> {
        match &self.tenures {
            Some(Err(e)) => Some(format!("/shards samples of the bucket peers: {e}")),
            _ => None,
        }
    }

    pub fn expected_writes_per_s(&self, cfg: &Config) -> f64 {
        let (_, r, _) = cfg.timing;
        self.buckets as f64 / (r * 3 / 5).as_secs_f64()
    }

    pub fn json(&self) -> Value {
        json!({
            "replicas": self.replicas,
            "buckets": self.buckets,
            "cold_all_led_ms": self.cold_ms,
            "distribution": self.distribution,
            "cold_counts": self.cold_counts,
            "cold_load": self.cold_load,
            "steady": self.steady.as_ref().map(Steady::json),
            "join": self.join.as_ref().map(Move::json),
            "join_wait_ms": self.join_wait_ms,
            "leave": self.leave.as_ref().map(Move::json),
            "crash": self.crash.as_ref().map(Move::json),
            "bucket_tenures_checked": self.tenures.as_ref().and_then(|r| r.as_ref().ok()),
            "violation": self.violation(),
            "shard_samples": self.shard_samples,
            "changes_lagged": self.changes_lagged,
            "overwhelmed": self.overwhelmed,
            "logs": self.logs,
        })
    }
}

struct Run<'a> {
    cfg: &'a Config,
    buckets: u32,
    server: TestServer,
    dir: tempfile::TempDir,
    s: ShardSampler,
    changes: ChangeLog,
    cands: Vec<Candidate>,
    live: Vec<String>,
    rng: fastrand::Rng,
    baseline_fds: usize,
}

/// Start one peer: this binary, `knative-peer`, with its own kubeconfig (bearer token = name).
async fn spawn_peer(
    cfg: &Config,
    server: &TestServer,
    dir: &Path,
    name: &str,
    buckets: u32,
) -> anyhow::Result<Candidate> {
    let kubeconfig = write_kubeconfig(dir, &server.kubeconfig_yaml(name, NS), name)?;
    let exe = std::env::current_exe().context("finding this bench's binary")?;
    let (d, r, p) = cfg.timing;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg(PEER_ARG)
        .args(["--identity", name, "--namespace", NS, "--prefix", PREFIX])
        .args(["--buckets", &buckets.to_string()])
        .arg("--timing-ms")
        .arg(format!(
            "{},{},{}",
            d.as_millis(),
            r.as_millis(),
            p.as_millis()
        ))
        .env("KUBECONFIG", kubeconfig)
        .env(
            "RUST_LOG",
            std::env::var("LEADERD_CHILD_LOG").unwrap_or_else(|_| "error".into()),
        );
    Ok(Candidate::spawn_command(name, cmd).await?)
}

impl Run<'_> {
    fn latest(&self) -> HashMap<String, ShardsDoc> {
        self.s.latest()
    }

    fn cand(&self, name: &str) -> &Candidate {
        self.cands
            .iter()
            .find(|c| c.name == name)
            .expect("known peer")
    }

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
            Err(_) => {
                let latest = self.latest();
                let led: usize = owned(&latest, live).values().map(Vec::len).sum();
                Err(anyhow!(
                    "{what}: not within {within:?}: {led} of {} buckets led; per replica: {}",
                    self.buckets,
                    counts(&latest, live)
                ))
            }
        }
    }

    async fn fresh(&self) -> anyhow::Result<()> {
        let live = self.live.clone();
        self.s
            .wait_for(Duration::from_secs(10), move |l| {
                live.iter().all(|w| l.contains_key(w))
            })
            .await
            .map(|_| ())
            .map_err(|o| anyhow!("not every peer answers /shards: {o:?}"))
    }

    async fn cold(&mut self, res: &mut BucketsResult) -> anyhow::Result<()> {
        let cfg = self.cfg;
        let names: Vec<String> = (1..=cfg.replicas).map(|i| format!("k{i:02}")).collect();
        let t0 = Instant::now();
        let spawned = futures::future::join_all(
            names
                .iter()
                .map(|n| spawn_peer(cfg, &self.server, self.dir.path(), n, self.buckets)),
        )
        .await;
        for (name, r) in names.iter().zip(spawned) {
            let cand = r?;
            self.s.add(name, cand.addr);
            self.cands.push(cand);
            self.live.push(name.clone());
        }
        println!(
            "shards: buckets: {} peers started in {:.0} ms",
            cfg.replicas,
            ms(t0.elapsed())
        );
        let live = self.live.clone();
        let b = self.buckets;
        let within = cfg.timing.0 * 4 + Duration::from_secs(30);
        let pids: Vec<u32> = self.cands.iter().filter_map(Candidate::pid).collect();
        let cpu = |pids: &[u32]| -> Duration {
            pids.iter()
                .filter_map(|p| proc_usage(*p).ok())
                .map(|u| u.cpu)
                .sum()
        };
        let me = [std::process::id()];
        let (me0, peers0, w0) = (cpu(&me), cpu(&pids), StdInstant::now());
        let led = self
            .until("cold start: every bucket led", t0, within, &live, |l| {
                covered(l, &live, b)
            })
            .await;
        // What the cold start cost, also (above all) when it did not finish.
        let secs = w0.elapsed().as_secs_f64();
        let mut by = std::collections::BTreeMap::<String, usize>::new();
        for r in self.server.requests().iter().filter(|r| r.at >= w0) {
            let status = if r.status == 0 {
                "unanswered".to_owned()
            } else {
                r.status.to_string()
            };
            *by.entry(format!("{} {status}", r.verb)).or_default() += 1;
        }
        res.cold_load = json!({
            "secs": secs,
            "bench_process_cpu_ms_per_s": ms(cpu(&me).saturating_sub(me0)) / secs,
            "peers_cpu_ms_per_s": ms(cpu(&pids).saturating_sub(peers0)) / secs,
            "requests_by_verb_and_status": by,
            "sockstat": std::fs::read_to_string("/proc/net/sockstat").unwrap_or_default(),
        });
        let sockstat = res.cold_load["sockstat"]
            .as_str()
            .and_then(|s| s.lines().find(|l| l.starts_with("TCP:")))
            .unwrap_or("")
            .to_owned();
        println!(
            "shards: buckets: cold start load over {secs:.0} s: this process {:.0} ms/s, the peers {:.0} ms/s of CPU; requests {}; {sockstat}",
            res.cold_load["bench_process_cpu_ms_per_s"].as_f64().unwrap_or(f64::NAN),
            res.cold_load["peers_cpu_ms_per_s"].as_f64().unwrap_or(f64::NAN),
            res.cold_load["requests_by_verb_and_status"],
        );
        res.cold_ms = Some(led?);
        let latest = self.latest();
        res.distribution = owned(&latest, &live).values().map(Vec::len).collect();
        res.cold_counts = counts(&latest, &live);
        println!(
            "shards: buckets: every bucket led from cold in {:.0} ms: {}",
            res.cold_ms.unwrap_or(f64::NAN),
            res.cold_counts
        );
        Ok(())
    }

    async fn steady(&mut self, res: &mut BucketsResult) -> anyhow::Result<()> {
        let cfg = self.cfg;
        let (_, r, p) = cfg.timing;
        tokio::time::sleep(r * 3 / 5 + p).await;
        for w in &self.live {
            self.s.remove(w);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        let procs: Vec<(String, u32)> = self
            .cands
            .iter()
            .filter_map(|x| x.pid().map(|pid| (x.name.clone(), pid)))
            .collect();
        let st = steady_window(
            &self.server,
            &self.changes,
            &procs,
            cfg.steady,
            self.baseline_fds,
            |_| "bucket",
        )
        .await;
        for x in &self.cands {
            self.s.add(&x.name, x.addr);
        }
        let expected = res.expected_writes_per_s(cfg);
        println!(
            "shards: buckets: steady {:.0} s: {} Lease writes ({:.1}/s, {:.0} per retry period; expected {expected:.1}/s), {} requests, {} holder changes",
            st.secs,
            st.writes,
            st.writes_per_s(),
            st.writes_per_s() * p.as_secs_f64(),
            st.requests,
            st.holder_changes
        );
        let slow = st.writes_per_s() < expected * 0.8;
        let flapped = st.holder_changes > 0;
        res.steady = Some(st);
        if slow || flapped {
            bail!(
                "steady window: {}{}",
                if slow {
                    "fewer than 80 % of the expected renewals; "
                } else {
                    ""
                },
                if flapped {
                    "buckets changed leader with nothing happening"
                } else {
                    ""
                }
            );
        }
        self.fresh().await
    }

    async fn join(&mut self, res: &mut BucketsResult) -> anyhow::Result<Move> {
        let cfg = self.cfg;
        let name = format!("k{:02}", cfg.replicas + 1);
        let before = owners(&self.latest(), &self.live);
        let cand = spawn_peer(cfg, &self.server, self.dir.path(), &name, self.buckets).await?;
        self.s.add(&name, cand.addr);
        self.cands.push(cand);
        self.live.push(name.clone());
        // Nothing moves buckets to a newcomer; wait two renew intervals to show it.
        let wait = cfg.timing.1 * 6 / 5;
        res.join_wait_ms = ms(wait);
        tokio::time::sleep(wait).await;
        self.fresh().await?;
        let latest = self.latest();
        let after = owners(&latest, &self.live);
        let m = Move {
            its_shards: owned(&latest, std::slice::from_ref(&name))
                .get(&name)
                .map_or(0, Vec::len),
            who: name,
            moved: moved(&before, &after),
            counts: counts(&latest, &self.live),
            ..Move::default()
        };
        println!(
            "shards: buckets: join of {}: leads {} buckets after {:.0} ms ({} moved)",
            m.who, m.its_shards, res.join_wait_ms, m.moved
        );
        Ok(m)
    }

    async fn remove(&mut self, crash: bool) -> anyhow::Result<Move> {
        let cfg = self.cfg;
        let (d, _, p) = cfg.timing;
        // A random fraction of the renew interval first, so that the signal does not fall on
        // one phase of the renewals.
        let delay = (cfg.timing.1 * 3 / 5).mul_f64(self.rng.f64());
        tokio::time::sleep(delay).await;
        self.fresh().await?;
        // The peer leading the most buckets (ties broken by the seed): the most to take over.
        let latest = self.latest();
        let led = owned(&latest, &self.live);
        let most = led.values().map(Vec::len).max().unwrap_or(0);
        let top: Vec<String> = led
            .iter()
            .filter(|(_, ids)| ids.len() == most)
            .map(|(w, _)| w.clone())
            .collect();
        let victim = pick(&mut self.rng, &top).ok_or_else(|| anyhow!("no peer left"))?;
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
        let b = self.buckets;
        let t0 = Instant::now();
        if crash {
            self.cand(&victim).kill9();
            self.s.remove(&victim);
        } else {
            self.cand(&victim).signal(libc::SIGTERM);
        }
        let what = if crash { "crash" } else { "leave" };
        // A crash: the dead leader's renewal may be up to 3R/5 old, and followers wait D from
        // the last one they saw; bound D + P + 3 s of slack.
        let within = if crash {
            d + p + Duration::from_secs(3)
        } else {
            d
        };
        let owned_again = self
            .until(&format!("{what}: led again"), t0, within, &others, |l| {
                covered(l, &others, b)
            })
            .await?;
        let exit = if crash {
            None
        } else {
            let st = self.cand(&victim).wait_exit(d).await;
            self.s.remove(&victim);
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
            balanced_ms: None,
            moved: moved(&before, &after),
            min_moves: its,
            counts: counts(&latest, &self.live),
            exit,
        };
        println!(
            "shards: buckets: {what} of {} ({:.0} ms after the previous step; {} buckets): every bucket led again in {owned_again:.0} ms, {} moved{}",
            m.who,
            m.delay_ms.unwrap_or(f64::NAN),
            m.its_shards,
            m.moved,
            m.exit.as_ref().map_or(String::new(), |e| format!(", {e}")),
        );
        Ok(m)
    }
}

/// One attempt at `buckets` buckets.
pub async fn run(cfg: &Config, buckets: u32) -> anyhow::Result<BucketsResult> {
    let mut res = BucketsResult {
        replicas: cfg.replicas,
        buckets,
        ..BucketsResult::default()
    };
    let server = TestServer::start().await?;
    let changes = ChangeLog::start(&server);
    let mut run = Run {
        cfg,
        buckets,
        server,
        dir: tempfile::tempdir()?,
        s: ShardSampler::start(cfg.sample_period),
        changes,
        cands: Vec::new(),
        live: Vec::new(),
        rng: fastrand::Rng::with_seed(cfg.seed ^ 0x5bd1_e995),
        baseline_fds: my_fds(),
    };
    let steps = async {
        run.cold(&mut res).await?;
        run.steady(&mut res).await?;
        res.join = Some(run.join(&mut res).await?);
        res.leave = Some(run.remove(false).await?);
        res.crash = Some(run.remove(true).await?);
        anyhow::Ok(())
    };
    if let Err(e) = steps.await {
        println!("shards: buckets: {buckets} buckets: did not keep up: {e:#}");
        res.overwhelmed = Some(format!("{e:#}"));
    }
    res.shard_samples = run.s.samples().len();
    res.tenures = Some(run.s.check());
    res.changes_lagged = run.changes.lagged();
    if res.overwhelmed.is_some() || res.violation().is_some() || cfg.logs.is_some() {
        res.logs = dump_logs(cfg, &format!("buckets-{buckets}"), &run.cands);
    }
    // kill -9 the rest: releasing thousands of Leases at once would only load the machine.
    for x in &run.cands {
        x.kill9();
    }
    for x in &run.cands {
        let _ = x.wait_exit(Duration::from_secs(10)).await;
    }
    drop(run.s);
    run.server.shutdown().await;
    Ok(res)
}

//! Shard groups seen from outside: every replica's `GET /shards` polled continuously (sampled
//! per-shard tenures, checked for two owners at once and for falling epochs), and the test
//! server's commit log checked for two live member records listing one shard.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use leaderd::election::StoredLease;
use leaderd::shards::record::{decode_member, GROUP_LABEL, ROLE_LABEL};
use leaderd::shards::ShardsDoc;
use tokio::sync::watch;
use tokio::time::{timeout, Instant};

use super::http::{get, http_client};
use crate::testserver::TestServer;

/// One answer of one replica.
#[derive(Clone, Debug)]
pub struct ShardSample {
    /// Replica.
    pub who: String,
    /// When the request left.
    pub sent: Instant,
    /// When the answer came.
    pub recv: Instant,
    /// The answer.
    pub doc: ShardsDoc,
}

#[derive(Default)]
struct Inner {
    targets: Vec<(String, SocketAddr)>,
    latest: HashMap<String, ShardsDoc>,
    samples: Vec<ShardSample>,
}

/// Polls `/shards` of every replica added.
pub struct ShardSampler {
    inner: Arc<Mutex<Inner>>,
    tick: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for ShardSampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ShardSampler {
    /// Start polling `/shards` every `period`.
    pub fn start(period: Duration) -> ShardSampler {
        ShardSampler::start_at(period, "/shards")
    }

    /// Start polling `path` (`/groups/NAME/shards` of a leaderd with several groups, say).
    pub fn start_at(period: Duration, path: &str) -> ShardSampler {
        let path: Arc<str> = path.into();
        let inner = Arc::new(Mutex::new(Inner::default()));
        let shared = inner.clone();
        let (tick_tx, tick) = watch::channel(0u64);
        let task = tokio::spawn(async move {
            let client = http_client();
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut n = 0;
            loop {
                interval.tick().await;
                let targets = shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .targets
                    .clone();
                let polls = targets.into_iter().map(|(who, addr)| {
                    let (client, path) = (client.clone(), path.clone());
                    async move {
                        let sent = Instant::now();
                        let r = timeout(period * 20, get(&client, addr, &path))
                            .await
                            .ok()
                            .and_then(Result::ok)
                            .and_then(|b| serde_json::from_slice::<ShardsDoc>(&b).ok());
                        (who, sent, Instant::now(), r)
                    }
                });
                let results = futures::future::join_all(polls).await;
                let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
                for (who, sent, recv, r) in results {
                    let current = g.targets.iter().any(|(n, _)| *n == who);
                    match r {
                        Some(doc) => {
                            if current {
                                g.latest.insert(who.clone(), doc.clone());
                            }
                            g.samples.push(ShardSample {
                                who,
                                sent,
                                recv,
                                doc,
                            });
                        }
                        None => {
                            g.latest.remove(&who);
                        }
                    }
                }
                drop(g);
                n += 1;
                let _ = tick_tx.send(n);
            }
        });
        ShardSampler { inner, tick, task }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start polling a replica.
    pub fn add(&self, who: &str, addr: SocketAddr) {
        self.lock().targets.push((who.to_owned(), addr));
    }

    /// Stop polling a replica (its samples stay).
    pub fn remove(&self, who: &str) {
        let mut g = self.lock();
        g.targets.retain(|(n, _)| n != who);
        g.latest.remove(who);
    }

    /// The latest answer of every replica polled.
    pub fn latest(&self) -> HashMap<String, ShardsDoc> {
        self.lock().latest.clone()
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<ShardSample> {
        self.lock().samples.clone()
    }

    /// Shards owned per replica, in the latest answers.
    pub fn owned(&self) -> BTreeMap<String, usize> {
        self.latest()
            .into_iter()
            .map(|(who, d)| (who, d.shards.iter().filter(|s| s.is_owner).count()))
            .collect()
    }

    /// Wait until `f` holds on the latest answers; `Err` with the last answers after `within`.
    pub async fn wait_for(
        &self,
        within: Duration,
        f: impl Fn(&HashMap<String, ShardsDoc>) -> bool,
    ) -> Result<Duration, BTreeMap<String, usize>> {
        let start = Instant::now();
        let mut tick = self.tick.clone();
        loop {
            if f(&self.latest()) {
                return Ok(start.elapsed());
            }
            if start.elapsed() >= within {
                return Err(self.owned());
            }
            let _ = timeout(within, tick.changed()).await;
        }
    }

    /// The safety check over every sample: per shard, no two replicas certainly owning it at
    /// one instant, and every later tenure with a higher epoch. The number of sampled tenures.
    pub fn check(&self) -> Result<usize, String> {
        check_samples(&self.samples())
    }
}

/// A sampled tenure of one shard: one replica answered `is_owner` under one epoch in a row; it
/// certainly owned the shard from `from` (an answer) to `to` (a later request).
#[derive(Clone, Debug)]
pub struct ShardTenure {
    /// The shard.
    pub shard: u32,
    /// The replica.
    pub who: String,
    /// The epoch.
    pub epoch: Option<i64>,
    /// From the first answer...
    pub from: Instant,
    /// ...to the last request.
    pub to: Instant,
}

/// Group samples into sampled tenures per shard.
pub fn shard_tenures(samples: &[ShardSample]) -> Vec<ShardTenure> {
    let mut by_who: BTreeMap<&str, Vec<&ShardSample>> = BTreeMap::new();
    for s in samples {
        by_who.entry(&s.who).or_default().push(s);
    }
    let mut out = Vec::new();
    for (who, mut ss) in by_who {
        ss.sort_by_key(|s| s.sent);
        let mut cur: BTreeMap<u32, ShardTenure> = BTreeMap::new();
        for s in ss {
            for e in &s.doc.shards {
                let same = cur.get(&e.id).is_some_and(|t| t.epoch == e.epoch);
                if e.is_owner && same {
                    cur.get_mut(&e.id).expect("same").to = s.sent;
                } else {
                    out.extend(cur.remove(&e.id));
                    if e.is_owner {
                        cur.insert(
                            e.id,
                            ShardTenure {
                                shard: e.id,
                                who: who.to_owned(),
                                epoch: e.epoch,
                                from: s.recv,
                                to: s.sent,
                            },
                        );
                    }
                }
            }
        }
        out.extend(cur.into_values());
    }
    out.sort_by_key(|t| (t.shard, t.from));
    out
}

/// No overlap of two replicas' tenures of one shard; epochs rising from tenure to tenure.
pub fn check_samples(samples: &[ShardSample]) -> Result<usize, String> {
    let tenures = shard_tenures(samples);
    let mut by_shard: BTreeMap<u32, Vec<&ShardTenure>> = BTreeMap::new();
    for t in &tenures {
        by_shard.entry(t.shard).or_default().push(t);
    }
    for (shard, ts) in by_shard {
        for (i, a) in ts.iter().enumerate() {
            for b in &ts[i + 1..] {
                if a.who != b.who && a.from <= b.to && b.from <= a.to {
                    return Err(format!(
                        "shard {shard}: {} (epoch {:?}) and {} (epoch {:?}) owned it at once",
                        a.who, a.epoch, b.who, b.epoch
                    ));
                }
            }
        }
        let mut sorted = ts.clone();
        sorted.sort_by_key(|t| t.from);
        for w in sorted.windows(2) {
            if w[0].epoch != w[1].epoch && w[1].epoch <= w[0].epoch {
                return Err(format!(
                    "shard {shard}: epoch {:?} of {} after epoch {:?} of {}",
                    w[1].epoch, w[1].who, w[0].epoch, w[0].who
                ));
            }
        }
    }
    Ok(tenures.len())
}

/// Follows the test server's commit log of one group: at no commit may two live member records
/// (not evicted) list one shard. Violations are kept for [`CommitChecker::result`].
pub struct CommitChecker {
    state: Arc<Mutex<(usize, Vec<String>)>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for CommitChecker {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl CommitChecker {
    /// Start following the changes of group `group` in `namespace` from now.
    pub fn start(server: &TestServer, namespace: &str, group: &str) -> CommitChecker {
        let mut changes = server.lease_changes();
        let (ns, group) = (namespace.to_owned(), group.to_owned());
        let state = Arc::new(Mutex::new((0usize, Vec::new())));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut members: BTreeMap<String, Vec<u32>> = BTreeMap::new();
            while let Some(c) = changes.next().await {
                if c.namespace != ns
                    || c.object["metadata"]["labels"][GROUP_LABEL].as_str() != Some(group.as_str())
                    || c.object["metadata"]["labels"][ROLE_LABEL].as_str() != Some("member")
                {
                    continue;
                }
                let listed: Vec<u32> = if c.kind == "DELETED" {
                    Vec::new()
                } else {
                    let mut o = c.object.clone();
                    if o["metadata"]["resourceVersion"].as_str().is_none() {
                        o["metadata"]["resourceVersion"] =
                            serde_json::json!(c.resource_version.to_string());
                    }
                    StoredLease::from_json(o)
                        .ok()
                        .and_then(|l| decode_member(&l))
                        .filter(|r| r.evicted_by.is_none())
                        .map(|r| r.claims.keys().chain(r.ghosts.keys()).copied().collect())
                        .unwrap_or_default()
                };
                members.insert(c.name.clone(), listed);
                let mut seen: BTreeMap<u32, &str> = BTreeMap::new();
                let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
                g.0 += 1;
                for (name, shards) in &members {
                    for s in shards {
                        if let Some(other) = seen.insert(*s, name) {
                            g.1.push(format!(
                                "at resourceVersion {}: shard {s} listed by {other} and {name}",
                                c.resource_version
                            ));
                        }
                    }
                }
            }
        });
        CommitChecker { state, task }
    }

    /// The member commits checked, or the violations.
    pub fn result(&self) -> Result<usize, Vec<String>> {
        let g = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if g.1.is_empty() {
            Ok(g.0)
        } else {
            Err(g.1.clone())
        }
    }
}

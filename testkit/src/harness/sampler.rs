//! Polls every candidate's `/leader` continuously and keeps every answer; tests wait on its
//! rounds for a condition on the latest answers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{watch, Notify};
use tokio::time::{timeout, Instant};

use leaderd::status::LeaderView;

use super::http::{get_leader_at, http_client};
use super::process::Candidate;

/// One `/leader` answer and when it was asked and answered.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Candidate name.
    pub who: String,
    /// When the request was sent.
    pub sent: Instant,
    /// When the answer arrived.
    pub recv: Instant,
    /// The answer.
    pub view: LeaderView,
}

#[derive(Default)]
struct SamplerInner {
    targets: Vec<(String, SocketAddr)>,
    samples: Vec<Sample>,
    latest: HashMap<String, LeaderView>,
}

/// Polls every target's `/leader` every `period`, concurrently, and keeps every answer. With no
/// targets it asks nothing and only counts a round every 100 ms (or when a target is added).
pub struct Sampler {
    inner: Arc<Mutex<SamplerInner>>,
    added: Arc<Notify>,
    tick: watch::Receiver<u64>,
    task: tokio::task::JoinHandle<()>,
}

impl Sampler {
    /// Start sampling `/leader` (targets are added with [`Sampler::add`]).
    pub fn start(period: Duration) -> Sampler {
        Sampler::start_at(period, "/leader")
    }

    /// Start sampling `path`, which answers the `/leader` JSON.
    pub fn start_at(period: Duration, path: &str) -> Sampler {
        let path: Arc<str> = path.into();
        let inner = Arc::new(Mutex::new(SamplerInner::default()));
        let (tick_tx, tick) = watch::channel(0u64);
        let shared = inner.clone();
        let added = Arc::new(Notify::new());
        let woken = added.clone();
        let task = tokio::spawn(async move {
            let client = http_client();
            let mut n = 0u64;
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                interval.tick().await;
                let targets = shared
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .targets
                    .clone();
                if targets.is_empty() {
                    // Nothing to ask; still a round every 100 ms (or when a target comes), so
                    // that waiters re-check conditions that do not depend on the answers (a
                    // peer elector's state, say).
                    n += 1;
                    let _ = tick_tx.send(n);
                    tokio::select! {
                        _ = woken.notified() => {}
                        _ = tokio::time::sleep(Duration::from_millis(100)) => {}
                    }
                    continue;
                }
                let polls = targets.into_iter().map(|(who, addr)| {
                    let (client, path) = (client.clone(), path.clone());
                    async move {
                        let sent = Instant::now();
                        let r = timeout(period * 10, get_leader_at(&client, addr, &path)).await;
                        (who, sent, Instant::now(), r)
                    }
                });
                let results = futures::future::join_all(polls).await;
                let mut g = shared.lock().unwrap_or_else(|e| e.into_inner());
                for (who, sent, recv, r) in results {
                    // A target removed while this round was in flight keeps its samples (they
                    // are history) but must not reappear among the latest answers.
                    let current = g.targets.iter().any(|(n, _)| *n == who);
                    if let Ok(Ok(view)) = r {
                        if current {
                            g.latest.insert(who.clone(), view.clone());
                        }
                        g.samples.push(Sample {
                            who,
                            sent,
                            recv,
                            view,
                        });
                    } else {
                        g.latest.remove(&who);
                    }
                }
                drop(g);
                n += 1;
                let _ = tick_tx.send(n);
            }
        });
        Sampler {
            inner,
            added,
            tick,
            task,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SamplerInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Start sampling a candidate.
    pub fn add(&self, c: &Candidate) {
        self.lock().targets.push((c.name.clone(), c.addr));
        self.added.notify_one();
    }

    /// Stop sampling a candidate (e.g. before it is killed on purpose, to keep its last answers).
    pub fn remove(&self, name: &str) {
        let mut g = self.lock();
        g.targets.retain(|(n, _)| n != name);
        g.latest.remove(name);
    }

    /// The latest answer of each reachable target.
    pub fn latest(&self) -> HashMap<String, LeaderView> {
        self.lock().latest.clone()
    }

    /// Every sample so far.
    pub fn samples(&self) -> Vec<Sample> {
        self.lock().samples.clone()
    }

    /// Wait (on sampling rounds) until `pred` holds for the latest answers; `None` on timeout.
    pub async fn wait_for<T>(
        &self,
        within: Duration,
        mut pred: impl FnMut(&HashMap<String, LeaderView>) -> Option<T>,
    ) -> Option<T> {
        let mut tick = self.tick.clone();
        let end = Instant::now() + within;
        loop {
            if let Some(t) = pred(&self.latest()) {
                return Some(t);
            }
            match timeout(
                end.saturating_duration_since(Instant::now()),
                tick.changed(),
            )
            .await
            {
                Ok(Ok(())) => {}
                _ => return None,
            }
        }
    }

    /// Wait until exactly one candidate reports `is_leader`; returns its name and epoch.
    pub async fn wait_for_leader(
        &self,
        within: Duration,
        except: &[&str],
    ) -> Option<(String, i64)> {
        self.wait_for(within, |m| {
            let leaders: Vec<_> = m
                .iter()
                .filter(|(n, v)| v.is_leader && !except.contains(&n.as_str()))
                .collect();
            match leaders.as_slice() {
                [(n, v)] => Some(((*n).clone(), v.epoch.unwrap_or(-1))),
                _ => None,
            }
        })
        .await
    }

    /// The first instant (request sent) at which `who` was seen leading after `after`.
    pub fn first_leading(&self, who: &str, after: Instant) -> Option<Sample> {
        self.lock()
            .samples
            .iter()
            .find(|s| s.who == who && s.view.is_leader && s.sent >= after)
            .cloned()
    }
}

impl Drop for Sampler {
    fn drop(&mut self) {
        self.task.abort();
    }
}

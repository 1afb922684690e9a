//! The testkit's [`harness::Cluster`] (a test server, kubeconfigs, candidates, a sampler) with
//! candidates of one elector, started by its [`Launcher`] on the testkit's process runner.

use std::collections::HashMap;
use std::ops::{Deref, DerefMut};
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use leaderd::status::LeaderView;
use leaderd_testkit::harness;

use crate::electors::{Elector, Launcher};

/// A harness cluster whose candidates are one elector's, named c1, c2, … in start order.
pub struct Cluster {
    pub elector: Elector,
    pub launcher: Launcher,
    cluster: harness::Cluster,
    next: usize,
}

impl Deref for Cluster {
    type Target = harness::Cluster;

    fn deref(&self) -> &harness::Cluster {
        &self.cluster
    }
}

impl DerefMut for Cluster {
    fn deref_mut(&mut self) -> &mut harness::Cluster {
        &mut self.cluster
    }
}

impl Cluster {
    /// A server and `n` candidates, every `/leader` asked every `period`.
    pub async fn start(launcher: Launcher, n: usize, period: Duration) -> anyhow::Result<Cluster> {
        let mut options = launcher.options();
        options.sample_period = period;
        let mut c = Cluster {
            elector: launcher.elector,
            launcher,
            cluster: harness::Cluster::start(options, 0).await?,
            next: 1,
        };
        for _ in 0..n {
            c.spawn().await?;
        }
        Ok(c)
    }

    /// Start the next candidate.
    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        let name = format!("c{}", self.next);
        self.next += 1;
        let c = self
            .launcher
            .spawn(&self.cluster, &name)
            .await
            .with_context(|| format!("starting {} candidate {name}", self.elector.name()))?;
        self.cluster.add(c);
        Ok(())
    }

    /// Wait until every candidate answers, exactly one leads, and (for electors that tell)
    /// every candidate names it; returns the leader.
    pub async fn settle(&self, within: Duration) -> anyhow::Result<String> {
        let names: Vec<String> = self.cands.iter().map(|c| c.name.clone()).collect();
        let names_holder = self.elector.names_holder();
        let found = self
            .sampler
            .wait_for(within, |m: &HashMap<String, LeaderView>| {
                if !names.iter().all(|n| m.contains_key(n)) {
                    return None;
                }
                let leaders: Vec<&String> = names
                    .iter()
                    .filter(|n| m.get(*n).is_some_and(|v| v.is_leader))
                    .collect();
                let [leader] = leaders.as_slice() else {
                    return None;
                };
                let agreed = !names_holder
                    || names
                        .iter()
                        .all(|n| m.get(n).and_then(|v| v.leader.as_deref()) == Some(leader));
                agreed.then(|| (*leader).clone())
            })
            .await;
        found.ok_or_else(|| {
            anyhow!(
                "{}: no settled single leader within {within:?}; latest: {:?}",
                self.elector.name(),
                self.sampler
                    .latest()
                    .iter()
                    .map(|(n, v)| (n.clone(), v.is_leader, v.leader.clone()))
                    .collect::<Vec<_>>()
            )
        })
    }

    /// SIGTERM every candidate (kill -9 after 5 s) and return the safety violations sampled.
    pub async fn stop(self) -> Vec<String> {
        self.cluster.stop(Duration::from_secs(5)).await
    }
}

/// CPU seconds (utime + stime) and RSS bytes of a process.
pub fn proc_usage(pid: u32) -> Option<(f64, u64)> {
    let u = harness::proc_usage(pid).ok()?;
    Some((u.cpu.as_secs_f64(), u.rss_kib * 1024))
}

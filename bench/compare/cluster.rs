//! A test server with three (or `--scale`) candidates of one elector, every `/leader` sampled.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{anyhow, Context as _};
use leaderd::status::LeaderView;
use leaderd_testkit::harness::{check, Candidate, Sampler};
use leaderd_testkit::testserver::TestServer;

use crate::electors::{Elector, Launcher};

/// A test server with candidates of one elector, sampled.
pub struct Cluster {
    pub elector: Elector,
    pub launcher: Launcher,
    pub server: TestServer,
    pub dir: tempfile::TempDir,
    pub sampler: Sampler,
    pub cands: Vec<Candidate>,
    pub next: usize,
}

impl Cluster {
    pub async fn start(launcher: Launcher, n: usize, period: Duration) -> anyhow::Result<Cluster> {
        let mut c = Cluster {
            elector: launcher.elector,
            launcher,
            server: TestServer::start().await?,
            dir: tempfile::tempdir()?,
            sampler: Sampler::start(period),
            cands: Vec::new(),
            next: 1,
        };
        for _ in 0..n {
            c.spawn().await?;
        }
        Ok(c)
    }

    pub async fn spawn(&mut self) -> anyhow::Result<()> {
        let name = format!("c{}", self.next);
        self.next += 1;
        let c = self
            .launcher
            .spawn(&self.server, self.dir.path(), &name)
            .await
            .with_context(|| format!("starting {} candidate {name}", self.elector.name()))?;
        self.sampler.add(&c);
        self.cands.push(c);
        Ok(())
    }

    pub fn pause(&self) {
        for c in &self.cands {
            self.sampler.remove(&c.name);
        }
    }

    pub fn resume(&self) {
        for c in &self.cands {
            self.sampler.add(c);
        }
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

    pub fn take(&mut self, name: &str) -> Candidate {
        let i = self
            .cands
            .iter()
            .position(|c| c.name == name)
            .expect("a known candidate");
        self.cands.remove(i)
    }

    pub async fn stop(mut self) -> Vec<String> {
        for c in &self.cands {
            c.signal(libc::SIGTERM);
        }
        for c in &mut self.cands {
            if c.wait_exit(Duration::from_secs(5)).await.is_none() {
                c.kill9();
            }
        }
        let v = check(&self.sampler.samples());
        self.server.shutdown().await;
        v
    }
}

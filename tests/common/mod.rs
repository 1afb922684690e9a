//! Shared support for the process tests: a Lease API test server, leaderd processes that reach
//! it through kubeconfigs, and a sampler that polls every `/leader` throughout the test and
//! fails it on two leaders at once.
#![allow(dead_code)]

use std::time::Duration;

use leaderd_testkit::harness::{check, write_kubeconfig, Candidate, CandidateSpec, Sampler};
use leaderd_testkit::testserver::TestServer;

/// Short timings so that failovers take seconds: lease 3 s, deadline 2 s, retry 250 ms.
pub const D: Duration = Duration::from_secs(3);
pub const R: Duration = Duration::from_secs(2);
pub const P: Duration = Duration::from_millis(250);
pub const NS: &str = "default";
pub const LEASE: &str = "payouts";

pub struct Cluster {
    pub server: TestServer,
    pub dir: tempfile::TempDir,
    pub sampler: Sampler,
    pub cands: Vec<Candidate>,
}

impl Cluster {
    /// A server and `n` candidates named c1..cn, sampled every 10 ms.
    pub async fn start(n: usize) -> Cluster {
        Self::start_with(n, &[]).await
    }

    pub async fn start_with(n: usize, extra: &[&str]) -> Cluster {
        let server = TestServer::start().await.expect("test server starts");
        let mut c = Cluster {
            server,
            dir: tempfile::tempdir().expect("temp dir"),
            sampler: Sampler::start(Duration::from_millis(10)),
            cands: Vec::new(),
        };
        for i in 1..=n {
            c.spawn(&format!("c{i}"), extra).await;
        }
        c
    }

    pub fn spec(&self, name: &str, extra: &[&str]) -> CandidateSpec {
        let yaml = self.server.kubeconfig_yaml(name, NS);
        CandidateSpec {
            bin: env!("CARGO_BIN_EXE_leaderd").into(),
            kubeconfig: write_kubeconfig(self.dir.path(), &yaml, name).expect("kubeconfig"),
            lease: LEASE.into(),
            namespace: NS.into(),
            identity: name.into(),
            timing: (D, R, P),
            extra_args: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    pub async fn spawn(&mut self, name: &str, extra: &[&str]) {
        let c = Candidate::spawn(&self.spec(name, extra))
            .await
            .expect("leaderd starts");
        self.sampler.add(&c);
        self.cands.push(c);
    }

    pub fn get(&mut self, name: &str) -> &mut Candidate {
        self.cands
            .iter_mut()
            .find(|c| c.name == name)
            .expect("known candidate")
    }

    /// Wait for exactly one leader (among those not excluded).
    pub async fn leader(&self, within: Duration, except: &[&str]) -> (String, i64) {
        match self.sampler.wait_for_leader(within, except).await {
            Some(l) => l,
            None => self.fail(&format!(
                "no single leader within {within:?}; latest: {:?}",
                self.sampler.latest()
            )),
        }
    }

    /// Wait for a leader reporting an epoch above `epoch`.
    pub async fn leader_above(&self, within: Duration, epoch: i64) -> (String, i64) {
        let found = self
            .sampler
            .wait_for(within, |m| {
                m.iter()
                    .find(|(_, v)| v.is_leader && v.epoch > Some(epoch))
                    .map(|(n, v)| (n.clone(), v.epoch.unwrap_or(-1)))
            })
            .await;
        found.unwrap_or_else(|| {
            self.fail(&format!("no leader above epoch {epoch} within {within:?}"))
        })
    }

    /// Print every candidate's log and panic.
    pub fn fail(&self, why: &str) -> ! {
        for c in &self.cands {
            eprintln!("----- log of {} -----", c.name);
            for l in c.logs() {
                eprintln!("{l}");
            }
        }
        panic!("{why}");
    }

    /// No two leaders at once, epochs only rising, in everything sampled so far.
    pub fn assert_safe(&self) {
        let samples = self.sampler.samples();
        assert!(samples.len() > 10, "the sampler saw almost nothing");
        let v = check(&samples);
        if !v.is_empty() {
            self.fail(&format!("safety violations: {v:#?}"));
        }
    }

    /// No candidate exited or logged a panic.
    pub fn assert_alive(&mut self) {
        for c in &mut self.cands {
            if let Ok(Some(status)) = c.try_wait() {
                let logs = c.logs().join("\n");
                panic!("{} exited with {status}:\n{logs}", c.name);
            }
            assert!(
                !c.logs().iter().any(|l| l.contains("panicked")),
                "{} panicked",
                c.name
            );
        }
    }
}

//! A cluster for a test: the Lease API test server, a directory of kubeconfigs (one bearer
//! token per candidate), the candidates, and a [`Sampler`] that polls every one of them.
//!
//! Leaderd candidates are started from [`ClusterOptions`] by name ([`Cluster::spawn`]), or from
//! a [`CandidateSpec`] made by [`Cluster::spec`] and adjusted (environment, log file, hook) by
//! the caller; any other process serving `/leader` joins with [`Cluster::add`].

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use crate::testserver::TestServer;

use super::kubeconfig::write_kubeconfig;
use super::process::{Candidate, CandidateSpec};
use super::sampler::Sampler;
use super::tenures::check;

/// What the candidates of a cluster share.
#[derive(Clone, Debug)]
pub struct ClusterOptions {
    /// The leaderd binary.
    pub bin: PathBuf,
    /// Lease name.
    pub lease: String,
    /// Lease namespace.
    pub namespace: String,
    /// `--lease-duration`, `--renew-deadline`, `--retry-period`.
    pub timing: (Duration, Duration, Duration),
    /// Flags of every candidate (before each one's own).
    pub extra_args: Vec<String>,
    /// How often the sampler asks each candidate's `/leader`.
    pub sample_period: Duration,
    /// The path the sampler asks: `/leader`, or `/leases/NAME/leader` when the candidates
    /// serve several leases.
    pub leader_path: String,
}

impl ClusterOptions {
    /// Lease `lease` in namespace `default`, the process tests' timing (lease 3 s, deadline
    /// 2 s, retry 250 ms, so that failovers take seconds), sampled every 10 ms.
    pub fn new(bin: impl Into<PathBuf>, lease: &str) -> ClusterOptions {
        ClusterOptions {
            bin: bin.into(),
            lease: lease.into(),
            namespace: "default".into(),
            timing: (
                Duration::from_secs(3),
                Duration::from_secs(2),
                Duration::from_millis(250),
            ),
            extra_args: Vec::new(),
            sample_period: Duration::from_millis(10),
            leader_path: "/leader".into(),
        }
    }
}

/// A test server, kubeconfigs, candidates and a sampler.
pub struct Cluster {
    /// The Lease API test server (on 127.0.0.1).
    pub server: TestServer,
    /// Where the kubeconfigs are.
    pub dir: tempfile::TempDir,
    /// Polls every candidate added (until it is removed from it).
    pub sampler: Sampler,
    /// The candidates, in the order they were started.
    pub cands: Vec<Candidate>,
    /// What they share.
    pub options: ClusterOptions,
}

impl Cluster {
    /// A server and `n` candidates named c1..cn.
    pub async fn start(options: ClusterOptions, n: usize) -> io::Result<Cluster> {
        let mut c = Cluster {
            server: TestServer::start().await?,
            dir: tempfile::tempdir()?,
            sampler: Sampler::start_at(options.sample_period, &options.leader_path),
            cands: Vec::new(),
            options,
        };
        for i in 1..=n {
            c.try_spawn(&format!("c{i}"), &[]).await?;
        }
        Ok(c)
    }

    /// A kubeconfig for `name` (its bearer token, as the server counts requests by).
    pub fn kubeconfig(&self, name: &str) -> io::Result<PathBuf> {
        let yaml = self.server.kubeconfig_yaml(name, &self.options.namespace);
        write_kubeconfig(self.dir.path(), &yaml, name)
    }

    /// How to start leaderd candidate `name` with `extra` flags.
    pub fn spec(&self, name: &str, extra: &[&str]) -> io::Result<CandidateSpec> {
        let o = &self.options;
        let mut spec = CandidateSpec::new(
            &o.bin,
            self.kubeconfig(name)?,
            &o.lease,
            &o.namespace,
            name,
            o.timing,
        );
        spec.extra_args = o.extra_args.clone();
        spec.extra_args.extend(extra.iter().map(|s| s.to_string()));
        Ok(spec)
    }

    /// Start leaderd candidate `name`, sampled; panics with its log if it does not start.
    pub async fn spawn(&mut self, name: &str, extra: &[&str]) -> &mut Candidate {
        match self.try_spawn(name, extra).await {
            Ok(c) => c,
            Err(e) => panic!("leaderd {name} did not start: {e}"),
        }
    }

    /// Start leaderd candidate `name`, sampled.
    pub async fn try_spawn(&mut self, name: &str, extra: &[&str]) -> io::Result<&mut Candidate> {
        let spec = self.spec(name, extra)?;
        let c = Candidate::spawn(&spec).await?;
        Ok(self.add(c))
    }

    /// Keep and sample a candidate started elsewhere (e.g. a peer elector).
    pub fn add(&mut self, c: Candidate) -> &mut Candidate {
        self.sampler.add(&c);
        self.cands.push(c);
        self.cands.last_mut().expect("just pushed")
    }

    /// The candidate called `name`.
    pub fn get(&mut self, name: &str) -> &mut Candidate {
        self.cands
            .iter_mut()
            .find(|c| c.name == name)
            .expect("known candidate")
    }

    /// Take candidate `name` out of the cluster (it stays sampled until removed from the
    /// sampler).
    pub fn take(&mut self, name: &str) -> Candidate {
        let i = self
            .cands
            .iter()
            .position(|c| c.name == name)
            .expect("known candidate");
        self.cands.remove(i)
    }

    /// Stop sampling every candidate (e.g. to count API requests or CPU without the sampler).
    pub fn pause(&self) {
        for c in &self.cands {
            self.sampler.remove(&c.name);
        }
    }

    /// Sample every candidate again.
    pub fn resume(&self) {
        for c in &self.cands {
            self.sampler.add(c);
        }
    }

    /// Wait for exactly one leader (among those not excluded); fails the test without one.
    pub async fn leader(&self, within: Duration, except: &[&str]) -> (String, i64) {
        match self.sampler.wait_for_leader(within, except).await {
            Some(l) => l,
            None => self.fail(&format!(
                "no single leader within {within:?}; latest: {:?}",
                self.sampler.latest()
            )),
        }
    }

    /// Wait for a leader reporting an epoch above `epoch`; fails the test without one.
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

    /// SIGTERM every candidate (SIGKILL after `grace`), shut the server down, and return the
    /// safety violations in everything sampled.
    pub async fn stop(self, grace: Duration) -> Vec<String> {
        for c in &self.cands {
            c.signal(libc::SIGTERM);
        }
        for c in &self.cands {
            if c.wait_exit(grace).await.is_none() {
                c.kill9();
            }
        }
        let v = check(&self.sampler.samples());
        self.server.shutdown().await;
        v
    }
}

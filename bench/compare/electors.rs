//! The electors under comparison and how each one's candidates are started: leaderd, the
//! Python `kubernetes` LeaseLock peer, and the runners around kube-leader-election and
//! kube-lease-manager (built here from `bench/peers/`); and leaderd with `--backend etcd` against
//! a real etcd (one member, or three), started by the bench.

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as StdInstant};

use anyhow::{anyhow, bail, Context as _};
use leaderd_testkit::harness::{self, Candidate, ClusterOptions, EtcdCandidateSpec};
use tokio::process::Command;

use crate::{manifest_dir, Config, LEASE, NS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elector {
    Leaderd,
    Python,
    Kle,
    Klm,
    /// leaderd `--backend etcd`, one etcd member.
    Etcd,
    /// leaderd `--backend etcd`, three etcd members (every candidate given all three).
    Etcd3,
}

/// The default electors: everything on the Lease API (the etcd columns are asked for with
/// `--with-etcd` or `--electors etcd,etcd3`).
pub const ALL: [Elector; 4] = [
    Elector::Leaderd,
    Elector::Python,
    Elector::Kle,
    Elector::Klm,
];

/// Every elector `--electors` knows.
pub const KNOWN: [Elector; 6] = [
    Elector::Leaderd,
    Elector::Python,
    Elector::Kle,
    Elector::Klm,
    Elector::Etcd,
    Elector::Etcd3,
];

impl Elector {
    pub fn name(self) -> &'static str {
        match self {
            Elector::Leaderd => "leaderd",
            Elector::Python => "python",
            Elector::Kle => "kube-leader-election",
            Elector::Klm => "kube-lease-manager",
            Elector::Etcd => "etcd",
            Elector::Etcd3 => "etcd3",
        }
    }

    /// The table's column header.
    pub fn column(self) -> &'static str {
        match self {
            Elector::Etcd => "leaderd, etcd x1",
            Elector::Etcd3 => "leaderd, etcd x3",
            e => e.name(),
        }
    }

    /// etcd members for the etcd backend's columns (0: not an etcd column).
    pub fn etcd_members(self) -> usize {
        match self {
            Elector::Etcd => 1,
            Elector::Etcd3 => 3,
            _ => 0,
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Elector> {
        KNOWN.into_iter()
            .find(|e| e.name() == s.trim())
            .ok_or_else(|| anyhow!("unknown elector {s:?} (leaderd, python, kube-leader-election, kube-lease-manager, etcd, etcd3)"))
    }

    /// The runner's Cargo project under bench/peers and its binary.
    pub fn cargo_project(self) -> Option<(&'static str, &'static str)> {
        match self {
            Elector::Kle => Some(("kube-leader-election", "kle-runner")),
            Elector::Klm => Some(("kube-lease-manager", "klm-runner")),
            _ => None,
        }
    }

    /// Whether its `/leader` names the holder to followers.
    pub fn names_holder(self) -> bool {
        self != Elector::Klm
    }
}

/// Build a peer runner (cargo's own up-to-date check makes this cheap when nothing changed).
pub fn build_peer(cfg: &Config, project: &str, bin: &str) -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = manifest_dir()
        .join("bench/peers")
        .join(project)
        .join("Cargo.toml");
    let mut cmd = std::process::Command::new(cargo);
    cmd.args(["build", "--locked", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&cfg.peers_target)
        // The bench's own build settings must not leak into the peers' build.
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if cfg.peers_release {
        cmd.arg("--release");
    }
    eprintln!(
        "compare: building {bin} ({}) in {}",
        if cfg.peers_release {
            "release"
        } else {
            "debug"
        },
        cfg.peers_target.display()
    );
    let started = StdInstant::now();
    let status = cmd.status().context("running cargo build")?;
    if !status.success() {
        bail!("cargo build of bench/peers/{project} failed ({status})");
    }
    eprintln!(
        "compare: built {bin} in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(cfg
        .peers_target
        .join(if cfg.peers_release {
            "release"
        } else {
            "debug"
        })
        .join(bin))
}

pub fn python_ok() -> Result<(), String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import kubernetes.leaderelection.resourcelock.leaselock, kubernetes; print(kubernetes.__version__)",
        ])
        .output()
        .map_err(|e| format!("python3: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err("the Python kubernetes package is missing (pip install kubernetes)".into())
    }
}

pub fn python_version() -> Option<String> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import sys, kubernetes; print(sys.version.split()[0], kubernetes.__version__)",
        ])
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// How to start candidates of one elector.
pub struct Launcher {
    pub elector: Elector,
    pub bin: PathBuf,
    pub timing: (Duration, Duration, Duration),
    /// `--etcd-endpoints` of the etcd columns (every member's client URL).
    pub etcd_endpoints: Option<String>,
}

pub fn ms(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

impl Launcher {
    /// The cluster options for this elector's candidates (leaderd is started from them).
    pub fn options(&self) -> ClusterOptions {
        let mut o = ClusterOptions::new(&self.bin, LEASE);
        o.namespace = NS.into();
        o.timing = self.timing;
        o
    }

    /// Start candidate `name` of this elector in `cluster` (not added to it).
    pub async fn spawn(&self, cluster: &harness::Cluster, name: &str) -> io::Result<Candidate> {
        if self.elector == Elector::Leaderd {
            return Candidate::spawn(&cluster.spec(name, &[])?).await;
        }
        if let Some(endpoints) = &self.etcd_endpoints {
            // `leaderd --backend etcd --etcd-endpoints URLS --lease-name bench --identity NAME`
            // with the timing, no namespace, no kubeconfig (the testkit's etcd candidate).
            let spec = EtcdCandidateSpec::new(&self.bin, endpoints, LEASE, name, self.timing);
            return Candidate::spawn_etcd(&spec).await;
        }
        let kubeconfig = cluster.kubeconfig(name)?;
        let (d, r, p) = self.timing;
        let mut cmd = if self.elector == Elector::Python {
            let mut c = Command::new("python3");
            c.arg("-u")
                .arg(&self.bin)
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--lease-duration", &d.as_secs().to_string()])
                .args(["--renew-deadline", &format!("{:.3}", r.as_secs_f64())])
                .args([
                    "--retry-period",
                    &format!("{:.3}", p.max(Duration::from_secs(1)).as_secs_f64()),
                ]);
            c
        } else {
            let mut c = Command::new(&self.bin);
            c.args(["--lease-duration", &ms(d), "--retry-period", &ms(p)])
                .args(["--grace", &format!("{}s", (d.as_secs() / 3).max(1))]);
            c
        };
        cmd.args(["--namespace", NS, "--lease", LEASE, "--identity", name])
            .args(["--http-addr", "127.0.0.1:0"])
            .env("KUBECONFIG", &kubeconfig)
            .env("RUST_LOG", "warn");
        Candidate::spawn_command(name, cmd).await
    }

    /// How often the leader writes the Lease: the phase of a kill within this is random.
    pub fn renew_interval(&self) -> Duration {
        let (d, r, p) = self.timing;
        match self.elector {
            // Rule 14: 3R/5 after the last successful renew was sent.
            Elector::Leaderd => r * 3 / 5,
            // Rule E6: every candidate keeps its etcd lease alive every P.
            Elector::Etcd | Elector::Etcd3 => p,
            Elector::Kle => p,
            Elector::Python => p.max(Duration::from_secs(1)),
            Elector::Klm => d - Duration::from_secs((d.as_secs() / 3).max(1)),
        }
    }

    /// What the library is given, for the report.
    pub fn settings(&self) -> String {
        let (d, r, p) = self.timing;
        let s = ms;
        match self.elector {
            Elector::Leaderd => format!(
                "--lease-duration {} --renew-deadline {} --retry-period {}",
                s(d),
                s(r),
                s(p)
            ),
            Elector::Python => format!(
                "lease_duration {} renew_deadline {:.3} retry_period {:.3}",
                d.as_secs(),
                r.as_secs_f64(),
                p.max(Duration::from_secs(1)).as_secs_f64()
            ),
            Elector::Etcd | Elector::Etcd3 => format!(
                "--backend etcd --lease-duration {} --renew-deadline {} --retry-period {}, {} member(s)",
                s(d),
                s(r),
                s(p),
                self.elector.etcd_members()
            ),
            Elector::Kle => format!("lease_ttl {}, try_acquire_or_renew every {}", s(d), s(p)),
            Elector::Klm => format!(
                "duration {} s, grace {} s (watch() mode)",
                d.as_secs(),
                (d.as_secs() / 3).max(1)
            ),
        }
    }
}

pub fn file_size(p: &Path) -> Option<u64> {
    std::fs::metadata(p).ok().map(|m| m.len())
}

pub fn dir_size(p: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(p) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            Ok(_) => e.metadata().map(|m| m.len()).unwrap_or(0),
            Err(_) => 0,
        })
        .sum()
}

pub fn python_package_dir() -> Option<PathBuf> {
    let out = std::process::Command::new("python3")
        .args([
            "-c",
            "import kubernetes, os; print(os.path.dirname(kubernetes.__file__))",
        ])
        .output()
        .ok()?;
    let s = String::from_utf8_lossy(&out.stdout).trim().to_string();
    (!s.is_empty()).then(|| PathBuf::from(s))
}

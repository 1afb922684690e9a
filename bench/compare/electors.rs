//! The electors under comparison and how each one's candidates are started: leaderd, the
//! Python `kubernetes` LeaseLock peer, and the runners around kube-leader-election and
//! kube-lease-manager (built here from `bench/peers/`).

use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant as StdInstant};

use anyhow::{anyhow, bail, Context as _};
use leaderd_testkit::harness::{self, Candidate, ClusterOptions};
use tokio::process::Command;

use crate::{manifest_dir, Config, LEASE, NS};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Elector {
    Leaderd,
    Python,
    Kle,
    Klm,
}

pub const ALL: [Elector; 4] = [
    Elector::Leaderd,
    Elector::Python,
    Elector::Kle,
    Elector::Klm,
];

impl Elector {
    pub fn name(self) -> &'static str {
        match self {
            Elector::Leaderd => "leaderd",
            Elector::Python => "python",
            Elector::Kle => "kube-leader-election",
            Elector::Klm => "kube-lease-manager",
        }
    }

    pub fn parse(s: &str) -> anyhow::Result<Elector> {
        ALL.into_iter()
            .find(|e| e.name() == s.trim())
            .ok_or_else(|| anyhow!("unknown elector {s:?} (leaderd, python, kube-leader-election, kube-lease-manager)"))
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

//! The scale run: many leaderd candidates on one lease, failover after kill -9 and the Lease
//! writes per transition.

use std::time::{Duration, Instant as StdInstant};

use tokio::time::Instant;

use crate::cluster::Cluster;
use crate::electors::Launcher;
use crate::failover::{failover, Failover};
use crate::Config;

/// Scale: many leaderd candidates on one lease.
pub struct Scale {
    pub n: usize,
    pub election_ms: f64,
    pub crash: Vec<Failover>,
    pub steady_rps: f64,
    pub steady_secs: f64,
    pub violations: Vec<String>,
    pub error: Option<String>,
}

pub async fn bench_scale(cfg: &Config, launcher: Launcher) -> Scale {
    let n = cfg.scale;
    let (d, _, p) = launcher.timing;
    let mut out = Scale {
        n,
        election_ms: f64::NAN,
        crash: vec![],
        steady_rps: f64::NAN,
        steady_secs: 0.0,
        violations: vec![],
        error: None,
    };
    eprintln!("compare: scale: starting {n} leaderd candidates");
    let started = Instant::now();
    let mut c = match Cluster::start(launcher, n, Duration::from_millis(50)).await {
        Ok(c) => c,
        Err(e) => {
            out.error = Some(format!("{e:#}"));
            return out;
        }
    };
    let within = d * 3 + Duration::from_secs(30);
    let result: anyhow::Result<()> = async {
        c.settle(within).await?;
        out.election_ms = started.elapsed().as_secs_f64() * 1000.0;
        tokio::time::sleep(p * 3).await;
        c.pause();
        let window = cfg.steady.min(Duration::from_secs(20));
        let t0 = StdInstant::now();
        tokio::time::sleep(window).await;
        let t1 = StdInstant::now();
        c.resume();
        let count = c
            .server
            .requests()
            .iter()
            .filter(|r| r.at >= t0 && r.at <= t1)
            .count();
        out.steady_secs = (t1 - t0).as_secs_f64();
        out.steady_rps = count as f64 / out.steady_secs;
        for i in 0..cfg.scale_trials {
            eprintln!("compare: scale: kill -9 trial {}", i + 1);
            let f = failover(&mut c, false, within, false, None).await?;
            eprintln!(
                "compare:   {} -> {} in {:.0} ms, {} lease writes",
                f.from, f.to, f.ms, f.writes.0
            );
            out.crash.push(f);
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        out.error = Some(format!("{e:#}"));
    }
    out.violations = c.stop().await;
    out
}

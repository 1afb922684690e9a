//! kube-leader-election (crates.io) as a candidate for bench/compare/.
//!
//! The crate offers one call, `try_acquire_or_renew`, for the application to repeat; this runner
//! calls it every `--retry-period` (the bench gives every elector the same retry period) and
//! reports `is_leader` while the last call returned `Acquired` and the lease duration has not
//! run out since that call was sent (the crate itself keeps no clock). On SIGTERM it stops
//! claiming and calls the crate's `step_down` (holder "", duration 1 s), then exits 0.
//! The crate has no fencing epoch: `epoch` is null. The cluster comes from `KUBECONFIG`.

#[path = "../../common/runner.rs"]
mod runner;

use std::time::{Instant, SystemTime};

use kube_leader_election::{LeaseLock, LeaseLockParams, LeaseLockResult};
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = runner::Args::parse()?;
    let state = runner::shared(&args);
    let client = kube::Client::try_default().await?;
    let lock = LeaseLock::new(
        client,
        &args.namespace,
        LeaseLockParams {
            lease_name: args.lease.clone(),
            holder_id: args.identity.clone(),
            lease_ttl: args.lease_duration,
        },
    );
    let mut term = signal(SignalKind::terminate())?;
    runner::serve(args.http_addr, state.clone()).await?;
    loop {
        let sent = Instant::now();
        let result = lock.try_acquire_or_renew().await;
        {
            let mut s = runner::lock(&state);
            match &result {
                Ok(r) => {
                    let lease = r.lease();
                    let spec = lease.and_then(|l| l.spec.as_ref());
                    s.leader = spec
                        .and_then(|s| s.holder_identity.clone())
                        .filter(|h| !h.is_empty());
                    s.lease_uid = lease.and_then(|l| l.metadata.uid.clone());
                    s.observed_at = Some(SystemTime::now());
                    s.leading_until = match r {
                        LeaseLockResult::Acquired(_) => Some(sent + args.lease_duration),
                        LeaseLockResult::NotAcquired(_) => None,
                    };
                }
                // Keep the claim until its clock runs out.
                Err(e) => eprintln!("WARN try_acquire_or_renew: {e}"),
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(args.retry_period) => {}
            _ = term.recv() => {
                let was = runner::lock(&state).leading_until.take().is_some_and(|u| u > Instant::now());
                if was {
                    if let Err(e) = lock.step_down().await {
                        eprintln!("WARN step_down: {e}");
                    }
                }
                eprintln!("INFO SIGTERM: stepped down ({was}), exiting");
                return Ok(());
            }
        }
    }
}

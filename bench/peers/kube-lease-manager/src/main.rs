//! kube-lease-manager (crates.io) as a candidate for bench/compare/.
//!
//! Runs the crate's fully automated mode, `LeaseManager::watch()`, and reports `is_leader` as
//! the `bool` on its channel (the crate keeps no clock of its own for the app). The crate does
//! not tell who else holds the lease, so `leader` is this identity while leading and null
//! otherwise; it has no fencing epoch (`epoch` null). `--grace` is the crate's grace period
//! (renew this long before expiry; whole seconds). On SIGTERM it stops claiming and drops the
//! channel, which makes the crate release the lease, then exits 0. The cluster comes from
//! `KUBECONFIG`.

#[path = "../../common/runner.rs"]
mod runner;

use std::time::{Duration, Instant, SystemTime};

use kube_lease_manager::LeaseManagerBuilder;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = runner::Args::parse()?;
    let state = runner::shared(&args);
    let client = kube::Client::try_default().await?;
    let mut term = signal(SignalKind::terminate())?;
    let manager = LeaseManagerBuilder::new(client, args.lease.clone())
        .with_namespace(args.namespace.clone())
        .with_identity(args.identity.clone())
        .with_duration(args.lease_duration.as_secs().max(1))
        .with_grace(args.grace.as_secs().max(1))
        .build()
        .await?;
    runner::serve(args.http_addr, state.clone()).await?;
    let (mut rx, task) = manager.watch().await;
    loop {
        tokio::select! {
            changed = rx.changed() => {
                if changed.is_err() {
                    let r = task.await;
                    anyhow::bail!("the lease manager stopped: {r:?}");
                }
                let leading = *rx.borrow_and_update();
                let mut s = runner::lock(&state);
                s.observed_at = Some(SystemTime::now());
                s.leader = leading.then(|| args.identity.clone());
                // No expiry to report: leading until the channel says otherwise.
                s.leading_until = leading.then(|| Instant::now() + Duration::from_secs(100 * 365 * 86_400));
            }
            _ = term.recv() => {
                runner::lock(&state).leading_until = None;
                drop(rx);
                let released = task.await;
                eprintln!("INFO SIGTERM: released ({}), exiting", matches!(released, Ok(Ok(_))));
                return Ok(());
            }
        }
    }
}

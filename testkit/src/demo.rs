//! The demo: the project's Lease API test server on 127.0.0.1, three real leaderd processes
//! campaigning against it over HTTP, a kill -9 of the leader, then a SIGTERM of the next one,
//! with a readable timeline and a check that no two ever led at once.
//!
//! The `leaderd-demo` binary is also leaderd itself: started under the name `leaderd` (a
//! symlink the demo makes), it runs [`leaderd::app::main`], the product's whole program. So one
//! `cargo run -p leaderd-testkit` runs the demo without building or finding another binary.

use std::process::ExitCode;
use std::time::Duration;

use tokio::time::Instant;

use crate::harness::{Cluster, ClusterOptions};
use clap::Args;

/// Flags of the demo.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Lease duration the demo candidates use.
    #[arg(long, default_value = "4s", value_parser = humantime::parse_duration)]
    pub lease_duration: Duration,
    /// Renew deadline the demo candidates use.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    pub renew_deadline: Duration,
    /// Retry period the demo candidates use.
    #[arg(long, default_value = "500ms", value_parser = humantime::parse_duration)]
    pub retry_period: Duration,
}

struct Timeline {
    start: Instant,
}

impl Timeline {
    fn say(&self, what: impl AsRef<str>) {
        let t = self.start.elapsed();
        println!(
            "[{:>3}.{:03}s] {}",
            t.as_secs(),
            t.subsec_millis(),
            what.as_ref()
        );
    }
}

/// Run the demo; exit code 0 when it showed a safe failover.
pub async fn run(args: DemoArgs) -> ExitCode {
    match demo(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("leaderd demo: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn demo(args: DemoArgs) -> std::io::Result<bool> {
    let (d, r, p) = (args.lease_duration, args.renew_deadline, args.retry_period);
    let tl = Timeline {
        start: Instant::now(),
    };
    // The candidates are this very binary under the name `leaderd` (see the module doc), linked
    // into the cluster's directory once it exists.
    let mut options = ClusterOptions::new(std::env::current_exe()?, "demo");
    options.timing = (d, r, p);
    let mut cluster = Cluster::start(options, 0).await?;
    let bin = cluster.dir.path().join("leaderd");
    std::os::unix::fs::symlink(std::env::current_exe()?, &bin)?;
    cluster.options.bin = bin;
    println!("leaderd demo: 3 candidates, lease \"demo\", lease-duration {}, renew-deadline {}, retry-period {}",
        humantime::format_duration(d), humantime::format_duration(r), humantime::format_duration(p));
    tl.say(format!(
        "Lease API test server listening on {}",
        cluster.server.url()
    ));
    for i in 1..=3 {
        let name = format!("candidate-{i}");
        let c = cluster.try_spawn(&name, &[]).await?;
        tl.say(format!(
            "started {name} (pid {}), /leader on http://{}/leader",
            c.pid().unwrap_or(0),
            c.addr
        ));
    }
    let sampler = &cluster.sampler;
    tl.say(format!(
        "no Lease exists yet: a candidate creates it without a holder after one retry period ({}); whoever takes it waits one lease duration ({}) first, since a creation says nothing about a holder the creator never saw",
        humantime::format_duration(p),
        humantime::format_duration(d)
    ));
    let Some((first, epoch)) = sampler.wait_for_leader(d * 3, &[]).await else {
        tl.say("no leader was elected");
        return Ok(false);
    };
    tl.say(format!(
        "{first} leads with fencing epoch {epoch}; the others follow"
    ));
    // Rule 14: the leader renews 3/5 of a renew deadline after its last renew was sent.
    let every = r * 3 / 5;
    tokio::time::sleep(every * 2 + every / 2).await;
    let renewed = sampler.latest().get(&first).map(|v| v.epoch) == Some(Some(epoch));
    tl.say(format!(
        "{first} renewed every {} (3/5 of the renew deadline); epoch unchanged: {renewed}",
        humantime::format_duration(every)
    ));

    // Crash: kill -9 the leader.
    let dead = cluster.take(&first);
    let sampler = &cluster.sampler;
    sampler.remove(&first);
    let killed = Instant::now();
    dead.kill9();
    let _ = dead.wait_exit(Duration::from_secs(5)).await;
    tl.say(format!(
        "kill -9 {first} (it cannot release the lease; followers must wait until it expires)"
    ));
    let Some((second, epoch2)) = sampler.wait_for_leader(d + p * 3, &[first.as_str()]).await else {
        tl.say("no new leader after the crash");
        return Ok(false);
    };
    let seen = sampler
        .first_leading(&second, killed)
        .map(|s| s.recv)
        .unwrap_or_else(Instant::now);
    let crash_failover = seen - killed;
    tl.say(format!(
        "{second} took over with epoch {epoch2} after {} ({:.2} x lease duration)",
        fmt_ms(crash_failover),
        crash_failover.as_secs_f64() / d.as_secs_f64()
    ));

    // Graceful: SIGTERM the new leader; it releases the lease.
    tokio::time::sleep(p * 2).await;
    let leaving = cluster.take(&second);
    let sampler = &cluster.sampler;
    let termed = Instant::now();
    leaving.signal(libc::SIGTERM);
    tl.say(format!(
        "SIGTERM {second}: it stops claiming, then releases the lease"
    ));
    let Some((third, epoch3)) = sampler.wait_for_leader(d + p * 3, &[second.as_str()]).await else {
        tl.say("no new leader after the release");
        return Ok(false);
    };
    let seen = sampler
        .first_leading(&third, termed)
        .map(|s| s.recv)
        .unwrap_or_else(Instant::now);
    let status = leaving.wait_exit(Duration::from_secs(5)).await;
    sampler.remove(&second);
    tl.say(format!(
        "{third} took over with epoch {epoch3} after {} ({second} exited with {})",
        fmt_ms(seen - termed),
        status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "no exit yet".into())
    ));

    for c in &cluster.cands {
        c.signal(libc::SIGTERM);
    }
    for c in &cluster.cands {
        let _ = c.wait_exit(Duration::from_secs(5)).await;
    }
    let samples = cluster.sampler.samples();
    let requests = cluster.server.requests().len();
    let violations = cluster.stop(Duration::from_secs(5)).await;
    if violations.is_empty() {
        tl.say(format!(
            "checked {} /leader answers: never two leaders at once; epochs rose {epoch} -> {epoch2} -> {epoch3}; {requests} API requests in all",
            samples.len()
        ));
        Ok(true)
    } else {
        for v in &violations {
            tl.say(format!("VIOLATION: {v}"));
        }
        Ok(false)
    }
}

fn fmt_ms(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}

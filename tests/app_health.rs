//! `--app-check` on the binary: leadership follows the app's health. Each candidate checks its
//! own stand-in app on 127.0.0.1, whose health the test switches (healthy, failing, hanging).

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

use common::{Cluster, D, P};
use leaderd_testkit::harness::sampled_tenures;

const HEALTHY: u8 = 0;
const FAILING: u8 = 1;
const HANGING: u8 = 2;

/// An app whose `/healthz` answers 200, 500, or never, as the test says.
struct StandIn {
    addr: SocketAddr,
    mode: Arc<AtomicU8>,
    task: tokio::task::JoinHandle<()>,
}

impl StandIn {
    async fn start(mode: u8) -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mode = Arc::new(AtomicU8::new(mode));
        let m = mode.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let m = m.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 1024];
                    let _ = s.read(&mut buf).await;
                    let reply = match m.load(Ordering::SeqCst) {
                        HEALTHY => "HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                        FAILING => "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                        _ => {
                            tokio::time::sleep(Duration::from_secs(60)).await;
                            return;
                        }
                    };
                    let _ = s.write_all(reply.as_bytes()).await;
                });
            }
        });
        StandIn { addr, mode, task }
    }

    fn set(&self, mode: u8) {
        self.mode.store(mode, Ordering::SeqCst);
    }

    /// The `--app-check` flags for this app: checks every 200 ms with a 100 ms timeout; 3
    /// failures make it unhealthy, 1 pass healthy.
    fn flags(&self) -> Vec<String> {
        [
            "--app-check",
            &format!("http://{}/healthz", self.addr),
            "--app-check-interval",
            "200ms",
            "--app-check-timeout",
            "100ms",
            "--app-check-failures",
            "3",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Start candidates c1..=n, each checking its own stand-in app started in `modes[i]`.
async fn cluster(modes: &[u8], extra: &[&str]) -> (Cluster, Vec<StandIn>) {
    let mut c = common::cluster(0).await;
    let mut apps = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        let app = StandIn::start(*mode).await;
        let mut flags = app.flags();
        flags.extend(extra.iter().map(|s| s.to_string()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        c.spawn(&format!("c{}", i + 1), &flags).await;
        apps.push(app);
    }
    (c, apps)
}

fn app_of(name: &str) -> usize {
    name.trim_start_matches('c').parse::<usize>().unwrap() - 1
}

/// Whether nobody leads for the whole of `period` (sampled).
async fn nobody_leads_for(c: &Cluster, period: Duration) -> bool {
    let from = Instant::now();
    tokio::time::sleep(period).await;
    !c.sampler
        .samples()
        .iter()
        .any(|s| s.sent >= from && s.view.is_leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_whose_app_fails_steps_down_and_a_healthy_follower_takes_over_with_the_next_epoch()
{
    let (mut c, apps) = cluster(&[HEALTHY, HEALTHY, HEALTHY], &[]).await;
    let (leader, epoch) = c.leader(D * 3, &[]).await;
    let v = c.sampler.latest()[&leader].clone();
    assert_eq!(v.app_healthy, Some(true));
    let failed = Instant::now();
    apps[app_of(&leader)].set(FAILING);
    // 3 failures × 200 ms + 100 ms timeout, plus slack for a loaded machine.
    let stepped_down = c
        .sampler
        .wait_for(Duration::from_millis(700 + 1300), |latest| {
            (!latest[&leader].is_leader).then_some(())
        })
        .await;
    assert!(
        stepped_down.is_some(),
        "{leader} still leads after its app failed"
    );
    let (next, epoch2) = c.leader_above(Duration::from_secs(1), epoch).await;
    assert_ne!(next, leader);
    assert_eq!(
        epoch2,
        epoch + 1,
        "taken from the release, not after an expiry"
    );
    assert!(
        failed.elapsed() < Duration::from_secs(3),
        "{:?}",
        failed.elapsed()
    );
    let old = &c.sampler.latest()[&leader];
    assert_eq!(old.app_healthy, Some(false));
    assert!(c
        .get(&leader)
        .logs()
        .iter()
        .any(|l| l.contains("stopped leading") && l.contains("app_unhealthy")));
    // Recovered, it keeps out: the new leader keeps the lease.
    apps[app_of(&leader)].set(HEALTHY);
    tokio::time::sleep(D).await;
    assert_eq!(c.leader(P, &[]).await, (next, epoch2));
    c.assert_safe();
    c.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_app_unhealthy_nobody_leads_and_the_first_to_recover_leads_within_a_second() {
    let (mut c, apps) = cluster(&[FAILING, FAILING, FAILING], &[]).await;
    assert!(
        nobody_leads_for(&c, D * 3).await,
        "someone led with an unhealthy app"
    );
    let v = c.sampler.latest()["c2"].clone();
    assert_eq!(v.app_healthy, Some(false));
    let recovered = Instant::now();
    apps[1].set(HEALTHY);
    let (leader, _) = c.leader(Duration::from_secs(2), &[]).await;
    assert_eq!(leader, "c2");
    let took = c
        .sampler
        .first_leading("c2", recovered)
        .expect("sampled")
        .recv
        - recovered;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    // Its app fails too: it releases, and nobody leads again...
    apps[1].set(FAILING);
    assert!(
        c.sampler
            .wait_for(Duration::from_secs(2), |l| (!l["c2"].is_leader)
                .then_some(()))
            .await
            .is_some(),
        "c2 still leads"
    );
    assert!(
        nobody_leads_for(&c, D * 2).await,
        "someone led with an unhealthy app"
    );
    // ...until another recovers: it takes the released lease at once, no lease-duration wait.
    let recovered = Instant::now();
    apps[2].set(HEALTHY);
    let (leader, _) = c.leader(Duration::from_secs(2), &[]).await;
    assert_eq!(leader, "c3");
    let took = c
        .sampler
        .first_leading("c3", recovered)
        .expect("sampled")
        .recv
        - recovered;
    assert!(took < Duration::from_secs(1), "took {took:?}");
    c.assert_safe();
    c.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_that_hangs_delays_no_renewal() {
    // The check may hang up to its 1 s timeout every second, and it takes 1000 failures to
    // count: the app stays "healthy" while every check hangs.
    let mut c = common::cluster(0).await;
    let app = StandIn::start(HEALTHY).await;
    let target = format!("http://{}/healthz", app.addr);
    c.spawn(
        "c1",
        &[
            "--app-check",
            &target,
            "--app-check-interval",
            "1s",
            "--app-check-timeout",
            "1s",
            "--app-check-failures",
            "1000",
        ],
    )
    .await;
    c.leader(D * 3, &[]).await;
    app.set(HANGING);
    let from = Instant::now();
    tokio::time::sleep(P * 8).await;
    let renewals = c
        .server
        .requests()
        .iter()
        .filter(|r| {
            r.client == "c1" && r.verb == "update" && r.status == 200 && r.at >= from.into_std()
        })
        .count();
    assert!(renewals >= 6, "only {renewals} renewals in 8 retry periods");
    assert_eq!(c.leader(P, &[]).await.0, "c1");
    c.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_flaps_moves_leadership_at_most_once() {
    let (mut c, apps) = cluster(&[HEALTHY, HEALTHY, HEALTHY], &[]).await;
    let (leader, _) = c.leader(D * 3, &[]).await;
    let from = Instant::now();
    // 1 s failing, 1 s healthy, for 8 s.
    for _ in 0..4 {
        apps[app_of(&leader)].set(FAILING);
        tokio::time::sleep(Duration::from_secs(1)).await;
        apps[app_of(&leader)].set(HEALTHY);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let runs: Vec<_> = sampled_tenures(&c.sampler.samples())
        .into_iter()
        .filter(|t| t.to >= from)
        .collect();
    assert!(
        runs.len() <= 2,
        "leadership moved more than once while the app flapped: {:?}",
        runs.iter().map(|t| (&t.who, t.epoch)).collect::<Vec<_>>()
    );
    c.assert_safe();
    c.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_health_is_in_metrics_and_without_a_check_the_field_is_null() {
    let (mut c, apps) = cluster(&[HEALTHY], &[]).await;
    assert_eq!(c.leader(D * 3, &[]).await.0, "c1");
    c.spawn("plain", &[]).await;
    let plain = c
        .sampler
        .wait_for(Duration::from_secs(2), |l| l.get("plain").cloned())
        .await
        .expect("plain answers");
    assert_eq!(plain.app_healthy, None);
    apps[0].set(FAILING);
    c.leader_above(D * 2, 1).await;
    let metrics = leaderd_testkit::harness::get(
        &leaderd_testkit::harness::http_client(),
        c.get("c1").metrics_addr,
        "/metrics",
    )
    .await
    .expect("scrape");
    let metrics = String::from_utf8_lossy(&metrics).into_owned();
    for line in [
        "leaderd_app_healthy{lease=\"payouts\",namespace=\"default\"} 0",
        "reason=\"app_unhealthy\"} 1",
    ] {
        assert!(
            metrics.lines().any(|l| l.contains(line)),
            "{line} missing in:\n{metrics}"
        );
    }
    assert!(metrics
        .lines()
        .any(|l| l.starts_with("leaderd_app_checks_total") && l.contains("result=\"failed\"")));
    let plain_metrics = leaderd_testkit::harness::get(
        &leaderd_testkit::harness::http_client(),
        c.get("plain").metrics_addr,
        "/metrics",
    )
    .await
    .expect("scrape");
    let plain_metrics = String::from_utf8_lossy(&plain_metrics).into_owned();
    assert!(!plain_metrics.contains("leaderd_app_healthy"));
    c.assert_safe();
}

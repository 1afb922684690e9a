//! `--app-check` on the binary: leadership follows the app's health. Each candidate checks its
//! own stand-in app on 127.0.0.1, whose health the test switches (healthy, failing, hanging).

mod common;

use std::time::Duration;

use tokio::time::Instant;

use common::{Cluster, D, P};
use leaderd_testkit::harness::sampled_tenures;
use leaderd_testkit::standin::{Health, StandInApp};

/// The `--app-check` flags for `app`: checks every 200 ms with a 100 ms timeout; 3 failures make
/// it unhealthy, 1 pass healthy.
fn flags(app: &StandInApp) -> Vec<String> {
    [
        "--app-check",
        &app.url(),
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

/// Start candidates c1..=n, each checking its own stand-in app started in `modes[i]`.
async fn cluster(modes: &[Health], extra: &[&str]) -> (Cluster, Vec<StandInApp>) {
    let mut c = common::cluster(0).await;
    let mut apps = Vec::new();
    for (i, mode) in modes.iter().enumerate() {
        let app = StandInApp::start(*mode).await.unwrap();
        let mut flags = flags(&app);
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
    let (mut c, apps) = cluster(&[Health::Healthy, Health::Healthy, Health::Healthy], &[]).await;
    let (leader, epoch) = c.leader(D * 3, &[]).await;
    let v = c.sampler.latest()[&leader].clone();
    assert_eq!(v.app_healthy, Some(true));
    let failed = Instant::now();
    apps[app_of(&leader)].set(Health::Failing);
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
    apps[app_of(&leader)].set(Health::Healthy);
    tokio::time::sleep(D).await;
    assert_eq!(c.leader(P, &[]).await, (next, epoch2));
    c.assert_safe();
    c.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_every_app_unhealthy_nobody_leads_and_the_first_to_recover_leads_within_a_second() {
    let (mut c, apps) = cluster(&[Health::Failing, Health::Failing, Health::Failing], &[]).await;
    assert!(
        nobody_leads_for(&c, D * 3).await,
        "someone led with an unhealthy app"
    );
    let v = c.sampler.latest()["c2"].clone();
    assert_eq!(v.app_healthy, Some(false));
    let recovered = Instant::now();
    apps[1].set(Health::Healthy);
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
    apps[1].set(Health::Failing);
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
    apps[2].set(Health::Healthy);
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
    let app = StandInApp::start(Health::Healthy).await.unwrap();
    let target = app.url();
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
    app.set(Health::Hanging);
    let renewals = common::renewals_during(&c, "c1", common::I * 4).await;
    assert!(
        renewals >= 3,
        "only {renewals} renewals in 4 renew intervals"
    );
    assert_eq!(c.leader(P, &[]).await.0, "c1");
    c.assert_alive();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_that_flaps_moves_leadership_at_most_once() {
    let (mut c, apps) = cluster(&[Health::Healthy, Health::Healthy, Health::Healthy], &[]).await;
    let (leader, _) = c.leader(D * 3, &[]).await;
    let from = Instant::now();
    // 1 s failing, 1 s healthy, for 8 s.
    for _ in 0..4 {
        apps[app_of(&leader)].set(Health::Failing);
        tokio::time::sleep(Duration::from_secs(1)).await;
        apps[app_of(&leader)].set(Health::Healthy);
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
    let (mut c, apps) = cluster(&[Health::Healthy], &[]).await;
    assert_eq!(c.leader(D * 3, &[]).await.0, "c1");
    c.spawn("plain", &[]).await;
    let plain = c
        .sampler
        .wait_for(Duration::from_secs(2), |l| l.get("plain").cloned())
        .await
        .expect("plain answers");
    assert_eq!(plain.app_healthy, None);
    apps[0].set(Health::Failing);
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

//! The app-facing features beyond polling, tested on the real binary against the Lease API test
//! server: the SSE stream, long poll, leader-only readiness, `POST /leader/release`, the leader
//! pod label, hooks, `--on-lost=exit` and priority handover.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, SystemTime};

use common::{Cluster, D, LEASE, NS, P, R};
use leaderd::status::LeaderView;
use leaderd_testkit::harness::request;
use leaderd_testkit::harness::sse::EventStream;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

fn view(body: &str) -> LeaderView {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not a /leader document ({e}): {body}"))
}

/// An SSE event as received: the document and the wall-clock time it arrived.
#[derive(Debug)]
struct Received {
    view: LeaderView,
    at: SystemTime,
}

/// Open `/leader/stream` on `addr`; events arrive on the returned channel.
async fn stream(addr: SocketAddr) -> mpsc::UnboundedReceiver<Received> {
    let mut events = EventStream::open(addr).await.expect("connect");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok(Some((view, arrival))) = events.next_leader().await {
            if tx
                .send(Received {
                    view,
                    at: arrival.wall,
                })
                .is_err()
            {
                return;
            }
        }
    });
    rx
}

async fn next_event(rx: &mut mpsc::UnboundedReceiver<Received>, within: Duration) -> Received {
    timeout(within, rx.recv())
        .await
        .unwrap_or_else(|_| panic!("no SSE event within {within:?}"))
        .expect("stream open")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_delivers_each_change_in_order_within_100ms_of_the_sidecar_seeing_it() {
    let mut c = common::cluster(3).await;
    let (leader, _) = c.leader(D * 3, &[]).await;
    let followers: Vec<(String, SocketAddr)> = c
        .cands
        .iter()
        .filter(|x| x.name != leader)
        .map(|x| (x.name.clone(), x.addr))
        .collect();
    let mut streams = Vec::new();
    for (name, addr) in &followers {
        let mut rx = stream(*addr).await;
        let first = next_event(&mut rx, Duration::from_secs(2)).await;
        assert_eq!(first.view.leader.as_deref(), Some(leader.as_str()));
        assert!(!first.view.is_leader);
        streams.push((name.clone(), rx));
    }
    c.sampler.remove(&leader);
    c.get(&leader).kill9();
    let (next, epoch) = c.leader(D + P * 4, &[&leader]).await;
    // Then a graceful handover from `next` to the last one.
    c.get(&next).signal(libc::SIGTERM);
    let (last, epoch3) = c.leader(Duration::from_secs(2), &[&leader, &next]).await;
    assert!(epoch3 > epoch);
    for (name, rx) in &mut streams {
        let mut seen: Vec<LeaderView> = Vec::new();
        // Every change this candidate went through, until it shows the last leader's tenure
        // (or, for `next`, until its stream ends with its process).
        loop {
            let Ok(Some(ev)) = timeout(Duration::from_secs(5), rx.recv()).await else {
                break;
            };
            // A new holder is always something the sidecar observed (a read, a watch event or
            // the answer to its own write), at `observed_at`: the event must follow promptly.
            // (A step-down by the clock or by a release is published before any observation.)
            if seen.last().is_some_and(|p| p.leader != ev.view.leader) {
                let observed = humantime::parse_rfc3339(ev.view.observed_at.as_deref().unwrap())
                    .expect("observed_at is RFC 3339");
                let lag = ev.at.duration_since(observed).unwrap_or_default();
                assert!(
                    lag <= Duration::from_millis(100),
                    "{name}: event {:?} arrived {lag:?} after the sidecar observed it",
                    ev.view
                );
            }
            if let Some(prev) = seen.last() {
                let highest = seen.iter().filter_map(|v| v.epoch).max();
                assert!(
                    ev.view.epoch.is_none() || ev.view.epoch >= highest,
                    "{name}: epochs went back: {seen:?} then {:?}",
                    ev.view
                );
                assert_ne!(
                    (&prev.leader, prev.is_leader, prev.epoch),
                    (&ev.view.leader, ev.view.is_leader, ev.view.epoch),
                    "{name}: an event without a change"
                );
            }
            let done = ev.view.leader.as_deref() == Some(last.as_str());
            seen.push(ev.view);
            if done {
                break;
            }
        }
        let leaders: Vec<_> = seen.iter().map(|v| (v.leader.clone(), v.epoch)).collect();
        assert!(
            leaders.contains(&(Some(next.clone()), Some(epoch))),
            "{name} never streamed {next}'s tenure: {leaders:?}"
        );
        if *name == next {
            assert!(
                seen.iter().any(|v| v.is_leader),
                "{name} never streamed its own leadership"
            );
        } else {
            assert_eq!(
                seen.last().unwrap().leader.as_deref(),
                Some(last.as_str()),
                "{name}: {leaders:?}"
            );
        }
    }
    c.cands.retain(|x| x.name != leader && x.name != next);
    c.assert_alive();
    c.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_poll_returns_on_change_and_on_timeout_and_readiness_follows_the_leader() {
    let mut c = common::cluster(2).await;
    let (leader, epoch) = c.leader(D * 3, &[]).await;
    let follower = c.cands.iter().find(|x| x.name != leader).unwrap().addr;
    let leader_addr = c.get(&leader).addr;
    assert_eq!(request(leader_addr, "GET", "/leader/ready").await.0, 200);
    let (code, body) = request(follower, "GET", "/leader/ready").await;
    assert_eq!(code, 503);
    assert_eq!(view(&body).leader.as_deref(), Some(leader.as_str()));

    // Nothing changes: the poll answers after the wait, with the same state.
    let t = Instant::now();
    let (code, body) = request(follower, "GET", &format!("/leader?wait=1s&epoch={epoch}")).await;
    assert_eq!(code, 200);
    assert!(t.elapsed() >= Duration::from_secs(1), "{:?}", t.elapsed());
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
    assert_eq!(view(&body).epoch, Some(epoch));

    // A handover while the follower waits: it answers at once with the new state.
    let poll = tokio::spawn(async move {
        let t = Instant::now();
        let r = request(follower, "GET", &format!("/leader?wait=60s&epoch={epoch}")).await;
        (r, t)
    });
    tokio::time::sleep(P).await; // let the poll arrive first (if not, it answers at once anyway)
    let termed = Instant::now();
    c.get(&leader).signal(libc::SIGTERM);
    let ((code, body), _) = poll.await.unwrap();
    assert_eq!(code, 200);
    assert!(
        termed.elapsed() < Duration::from_secs(2),
        "{:?}",
        termed.elapsed()
    );
    let v = view(&body);
    assert!(
        v.epoch > Some(epoch) || v.leader.as_deref() != Some(leader.as_str()),
        "{v:?}"
    );
    // The follower becomes the leader: readiness flips.
    c.sampler.remove(&leader);
    c.leader(Duration::from_secs(2), &[&leader]).await;
    assert_eq!(request(follower, "GET", "/leader/ready").await.0, 200);
    assert_eq!(
        c.get(&leader)
            .wait_exit(Duration::from_secs(5))
            .await
            .map(|s| s.code()),
        Some(Some(0))
    );
    c.cands.retain(|x| x.name != leader);
    c.assert_alive();
    c.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_release_steps_down_and_another_takes_over_at_once() {
    let mut c = common::cluster(3).await;
    let (leader, epoch) = c.leader(D * 3, &[]).await;
    let addr = c.get(&leader).addr;
    let follower = c.cands.iter().find(|x| x.name != leader).unwrap().addr;
    let (code, body) = request(follower, "POST", "/leader/release").await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(request(addr, "GET", "/leader/release").await.0, 405);
    let asked = Instant::now();
    let (code, body) = request(addr, "POST", "/leader/release").await;
    assert_eq!(code, 200, "{body}");
    let answer: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["released"], true);
    assert_eq!(answer["epoch"], epoch);
    // Once answered, the releaser claims nothing.
    assert!(!view(&request(addr, "GET", "/leader").await.1).is_leader);
    let (next, epoch2) = c.leader(Duration::from_secs(1), &[&leader]).await;
    assert_ne!(next, leader);
    assert_eq!(epoch2, epoch + 1);
    assert!(asked.elapsed() < Duration::from_secs(1));
    // The releaser keeps out: the new leader keeps the lease.
    tokio::time::sleep(D).await;
    assert_eq!(c.leader(P, &[]).await, (next, epoch2));
    c.assert_alive();
    c.assert_safe();
}

/// Wait until `pod` carries `key=value` at the test server.
async fn label_becomes(c: &Cluster, pod: &str, value: &str, within: Duration) {
    let ok = c
        .server
        .wait_pod_label(NS, pod, "leaderd.io/role", value, within)
        .await;
    if !ok {
        c.fail(&format!(
            "pod {pod} not labeled {value} within {within:?}: {:?}",
            c.server
                .pod(NS, pod)
                .map(|p| p["metadata"]["labels"].clone())
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pod_label_follows_the_leader() {
    let mut c = common::cluster(0).await;
    for name in ["c1", "c2", "c3"] {
        c.server.put_pod(NS, name, &[("app", "payouts")]);
        c.spawn(name, &["--label-pod", "--pod-name", name]).await;
    }
    let (leader, _) = c.leader(D * 3, &[]).await;
    label_becomes(&c, &leader, "leader", Duration::from_secs(2)).await;
    for name in ["c1", "c2", "c3"].into_iter().filter(|n| *n != leader) {
        label_becomes(&c, name, "follower", Duration::from_secs(2)).await;
    }
    // Graceful: the leader relabels itself follower on the way out, the next one leader.
    c.sampler.remove(&leader);
    c.get(&leader).signal(libc::SIGTERM);
    let (next, _) = c.leader(Duration::from_secs(2), &[&leader]).await;
    label_becomes(&c, &next, "leader", Duration::from_secs(2)).await;
    label_becomes(&c, &leader, "follower", Duration::from_secs(5)).await;
    // Partitioned from the apiserver, the leader cannot relabel itself; once healed it does.
    c.server.partition(&next);
    let (third, _) = c.leader(D + R + P * 4, &[&leader, &next]).await;
    label_becomes(&c, &third, "leader", Duration::from_secs(2)).await;
    c.server.heal(&next);
    label_becomes(&c, &next, "follower", Duration::from_secs(40)).await;
    let patches = c
        .server
        .requests()
        .iter()
        .filter(|r| r.resource == "pods" && r.verb == "patch")
        .count();
    assert!(patches >= 5, "{patches} pod patches");
    c.cands.retain(|x| x.name != leader);
    c.assert_alive();
    c.assert_safe();
}

/// The lines a hook appended to `file` so far.
fn hook_lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Wait until `file` holds a line equal to `line`.
async fn hook_wrote(file: &Path, line: &str, within: Duration) {
    let end = Instant::now() + within;
    while Instant::now() < end {
        if hook_lines(file).iter().any(|l| l == line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "{} never got {line:?}: {:?}",
        file.display(),
        hook_lines(file)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hooks_run_once_per_transition_with_their_env_and_a_slow_hook_never_delays_renewals() {
    let mut c = common::cluster(0).await;
    let dir = c.dir.path().to_owned();
    for name in ["c1", "c2"] {
        let file = dir.join(format!("{name}.hooks"));
        let f = file.display();
        let started = format!(
            "/bin/sh -c 'echo started $LEADERD_IDENTITY $LEADERD_LEADER $LEADERD_EPOCH $LEADERD_LEASE >> {f}; sleep 60'"
        );
        let stopped = format!(
            "/bin/sh -c 'echo stopped $LEADERD_IDENTITY $LEADERD_EPOCH $LEADERD_REASON >> {f}'"
        );
        let new = format!("/bin/sh -c 'echo new $LEADERD_LEADER $LEADERD_EPOCH >> {f}'");
        c.spawn(
            name,
            &[
                "--on-started-leading",
                &started,
                "--on-stopped-leading",
                &stopped,
                "--on-new-leader",
                &new,
                "--hook-timeout",
                "30s",
            ],
        )
        .await;
        if name == "c1" {
            c.leader(D * 3, &[]).await;
        }
    }
    let (leader, epoch) = c.leader(P, &[]).await;
    assert_eq!((leader.as_str(), epoch), ("c1", 1));
    let (f1, f2) = (dir.join("c1.hooks"), dir.join("c2.hooks"));
    hook_wrote(
        &f1,
        &format!("started c1 c1 1 {LEASE}"),
        Duration::from_secs(2),
    )
    .await;
    hook_wrote(&f2, "new c1 1", Duration::from_secs(2)).await;
    // The started hook sleeps for a minute; renewals go on every renew interval meanwhile.
    let renewals = common::renewals_during(&c, "c1", common::I * 4).await;
    assert!(
        renewals >= 3,
        "only {renewals} renewals in 4 renew intervals"
    );
    // Cut c1 off: it stops leading at its deadline (stopped hook, reason renew_deadline), c2
    // takes over (started hook) and both see the new leader (new-leader hooks).
    c.server.partition("c1");
    hook_wrote(
        &f1,
        "stopped c1 1 renew_deadline",
        R + Duration::from_secs(2),
    )
    .await;
    c.sampler.remove("c1");
    let (next, epoch2) = c.leader(D + R + P * 4, &["c1"]).await;
    assert_eq!((next.as_str(), epoch2), ("c2", 2));
    hook_wrote(
        &f2,
        &format!("started c2 c2 2 {LEASE}"),
        Duration::from_secs(2),
    )
    .await;
    hook_wrote(&f2, "new c2 2", Duration::from_secs(2)).await;
    c.server.heal("c1");
    hook_wrote(&f1, "new c2 2", Duration::from_secs(10)).await;
    // Once per transition, no more. (Different hooks run side by side, so their order may vary;
    // runs of one hook are in order.)
    let mut l2 = hook_lines(&f2);
    let news: Vec<_> = l2
        .iter()
        .filter(|l| l.starts_with("new"))
        .cloned()
        .collect();
    assert_eq!(news, ["new c1 1", "new c2 2"], "c2's new-leader hook");
    l2.sort();
    assert_eq!(
        l2,
        vec![
            "new c1 1".to_owned(),
            "new c2 2".to_owned(),
            format!("started c2 c2 2 {LEASE}")
        ],
        "c2's hooks"
    );
    let l1 = hook_lines(&f1);
    assert_eq!(
        l1.iter().filter(|l| l.starts_with("started")).count(),
        1,
        "{l1:?}"
    );
    assert_eq!(
        l1.iter().filter(|l| l.starts_with("stopped")).count(),
        1,
        "{l1:?}"
    );
    for cand in &mut c.cands {
        cand.kill9();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_lost_exit_ends_a_partitioned_leader_with_code_75_and_not_a_released_one() {
    let mut c = common::cluster(0).await;
    c.spawn("c1", &["--on-lost", "exit"]).await;
    c.leader(D * 3, &[]).await;
    c.spawn("c2", &["--on-lost", "exit"]).await;
    c.server.partition("c1");
    let cut = Instant::now();
    let status = c.get("c1").wait_exit(R + Duration::from_secs(5)).await;
    assert_eq!(
        status.and_then(|s| s.code()),
        Some(75),
        "c1 did not exit 75"
    );
    // Its claim ran until its last successful renew was sent + R, and that send came at most
    // a renew interval (3R/5) before the cut.
    assert!(
        cut.elapsed() >= R - common::I,
        "exited after {:?}",
        cut.elapsed()
    );
    assert!(
        c.get("c1")
            .logs()
            .iter()
            .any(|l| l.contains("--on-lost=exit")),
        "the exit is logged"
    );
    c.sampler.remove("c1");
    let (next, epoch) = c.leader(D + R + P * 4, &["c1"]).await;
    assert_eq!((next.as_str(), epoch), ("c2", 2));
    // A deliberate release (SIGTERM) is not a loss: exit 0.
    c.get("c2").signal(libc::SIGTERM);
    let status = c.get("c2").wait_exit(Duration::from_secs(5)).await;
    assert_eq!(status.and_then(|s| s.code()), Some(0));
    c.cands.clear();
    c.assert_safe();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_handover_moves_leadership_up_once_and_equal_priorities_do_not_ping_pong() {
    let mut c = common::cluster(0).await;
    c.spawn("low", &["--priority", "0"]).await;
    c.leader(D * 3, &[]).await;
    let joined = Instant::now();
    c.spawn("high", &["--priority", "5"]).await;
    let (leader, epoch) = c.leader_above(Duration::from_secs(3), 1).await;
    assert_eq!((leader.as_str(), epoch), ("high", 2));
    let took = c
        .sampler
        .first_leading("high", joined)
        .expect("sampled")
        .recv
        - joined;
    assert!(took < Duration::from_secs(3), "handover took {took:?}");
    // Another candidate of the same priority joins: nothing moves.
    c.spawn("peer", &["--priority", "5"]).await;
    tokio::time::sleep(D * 2).await;
    assert_eq!(c.leader(P, &[]).await, ("high".to_owned(), 2));
    let lease = c.server.lease(NS, LEASE).unwrap();
    let ann = &lease["metadata"]["annotations"];
    assert_eq!(ann["leaderd.io/holder-priority"], "5");
    assert!(ann.get("leaderd.io/candidate").is_none(), "{ann}");
    assert!(
        c.get("low")
            .logs()
            .iter()
            .any(|l| l.contains("handing over")),
        "the handover is logged"
    );
    c.assert_alive();
    c.assert_safe();
}

/// A local HTTP server standing in for the app: answers the first `fail_first` POSTs with 500,
/// then 204, and forwards every body it got (with the status it answered).
async fn app_receiver(
    fail_first: usize,
) -> (SocketAddr, mpsc::UnboundedReceiver<(u16, LeaderView)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut seen = 0usize;
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let mut r = BufReader::new(s);
            // One connection may carry several requests (keep-alive).
            loop {
                let mut len = 0usize;
                let mut line = String::new();
                match r.read_line(&mut line).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).await.unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some(v) = h.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                if r.read_exact(&mut body).await.is_err() {
                    break;
                }
                seen += 1;
                let code = if seen <= fail_first { 500 } else { 204 };
                if let Ok(v) = serde_json::from_slice::<LeaderView>(&body) {
                    let _ = tx.send((code, v));
                }
                let reply = format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n");
                if r.get_mut().write_all(reply.as_bytes()).await.is_err() {
                    break;
                }
            }
        }
    });
    (addr, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notify_url_gets_every_change_and_retries_a_failing_app() {
    let mut c = common::cluster(0).await;
    let (app, mut posts) = app_receiver(2).await;
    let url = format!("http://{app}/leader-changed");
    c.spawn("c1", &["--notify-url", &url]).await;
    let (leader, epoch) = c.leader(D * 3, &[]).await;
    assert_eq!((leader.as_str(), epoch), ("c1", 1));
    // The app fails twice; the sidecar retries until the newest state is accepted.
    let mut got = Vec::new();
    let accepted = loop {
        let (code, v) = timeout(Duration::from_secs(10), posts.recv())
            .await
            .expect("a POST within 10 s")
            .expect("receiver running");
        got.push(code);
        if code == 204 && v.is_leader {
            break v;
        }
    };
    assert!(got.iter().filter(|c| **c == 500).count() == 2, "{got:?}");
    assert_eq!(accepted.epoch, Some(1));
    assert_eq!(accepted.identity, "c1");
    // A change (a release) is posted too.
    let (code, _) = request(c.get("c1").addr, "POST", "/leader/release").await;
    assert_eq!(code, 200);
    let (_, v) = timeout(Duration::from_secs(5), posts.recv())
        .await
        .expect("the release is posted")
        .unwrap();
    assert!(!v.is_leader);
    c.assert_alive();
}

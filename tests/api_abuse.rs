//! The local HTTP API under abuse, against the real binary: bad methods and paths, malformed
//! requests, huge query strings and headers, slow clients (slowloris) and 10 000 concurrent
//! connections. Every answer must be a clear HTTP error (or, for what is not HTTP at all, a
//! closed connection), nothing may panic, and the election must not notice: the leader keeps
//! renewing every renew interval (3R/5), nobody's leadership changes, and `/leader` keeps answering.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{Cluster, I, R};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{timeout, Instant};

/// Send raw bytes on a fresh connection and read until the server closes it (or 5 s pass).
/// Returns the status code (None if no HTTP answer came) and the body.
async fn raw(addr: SocketAddr, req: &[u8]) -> (Option<u16>, String) {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let _ = s.write_all(req).await;
    let mut buf = Vec::new();
    let _ = timeout(Duration::from_secs(5), s.read_to_end(&mut buf)).await;
    let text = String::from_utf8_lossy(&buf).to_string();
    let status = text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|t| t.get(..3))
        .and_then(|c| c.parse().ok());
    let body = text
        .split_once("\r\n\r\n")
        .map(|b| b.1.to_string())
        .unwrap_or_default();
    (status, body)
}

fn request(method: &str, target: &str) -> Vec<u8> {
    format!("{method} {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The JSON error body leaderd answers with.
fn assert_json_error(body: &str, code: u16) {
    let v: serde_json::Value = serde_json::from_str(body.trim())
        .unwrap_or_else(|e| panic!("not a JSON error body ({e}): {body:?}"));
    assert_eq!(v["status"], code, "{body}");
    assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()), "{body}");
}

/// Successful renewals of `who` seen by the server since `from`.
fn renewals(c: &Cluster, who: &str, from: std::time::Instant) -> Vec<std::time::Instant> {
    c.server
        .requests()
        .iter()
        .filter(|r| r.client == who && r.verb == "update" && r.status == 200 && r.at >= from)
        .map(|r| r.at)
        .collect()
}

/// The election did not notice: every renewal of the leader since `from` came at most a call
/// timeout (`R/5`) after its renew interval (`3R/5`), i.e. at its first attempt; its
/// tenure (name and epoch) is unchanged, nobody logged a transition, `/leader` answers.
async fn assert_election_unaffected(
    c: &mut Cluster,
    leader: &str,
    epoch: i64,
    from: std::time::Instant,
) {
    let r = renewals(c, leader, from);
    let elapsed = from.elapsed();
    assert!(
        r.len() as f64 >= elapsed.as_secs_f64() / I.as_secs_f64() * 0.6,
        "{} renewals in {elapsed:?}",
        r.len()
    );
    let mut prev = from;
    for t in &r {
        assert!(*t - prev < I + R / 5, "renewals {:?} apart", *t - prev);
        prev = *t;
    }
    assert!(
        std::time::Instant::now() - prev < I + R / 5,
        "no renewal for {:?}",
        prev.elapsed()
    );
    let now = c.leader(Duration::from_secs(1), &[]).await;
    assert_eq!(now, (leader.to_string(), epoch), "leadership changed");
    for cand in &c.cands {
        let logs = cand.logs();
        let transitions = logs
            .iter()
            .filter(|l| l.contains("became leader") || l.contains("stopped leading"))
            .count();
        let expected = usize::from(cand.name == leader);
        assert_eq!(transitions, expected, "{}: {logs:#?}", cand.name);
    }
    c.assert_alive();
    c.assert_safe();
}

async fn elected() -> (Cluster, String, i64, SocketAddr, SocketAddr) {
    elected_with(&[]).await
}

async fn elected_with(extra: &[&str]) -> (Cluster, String, i64, SocketAddr, SocketAddr) {
    let c = common::cluster_with(2, extra).await;
    let (leader, epoch) = c.leader(Duration::from_secs(10), &[]).await;
    let addr = |n: &str| c.cands.iter().find(|x| x.name == n).expect("known").addr;
    let follower = if leader == "c1" { "c2" } else { "c1" };
    let (la, fa) = (addr(&leader), addr(follower));
    (c, leader, epoch, la, fa)
}

/// Ask the leader at `la` for `/leader` on fresh clients every 50 ms for `during`; each answer
/// must say it leads. Returns the slowest answer's time.
async fn slowest_fresh_leader_answer(la: SocketAddr, during: Duration) -> Duration {
    let client = leaderd_testkit::harness::http_client();
    let end = Instant::now() + during;
    let mut worst = Duration::ZERO;
    while Instant::now() < end {
        let t = Instant::now();
        let v = leaderd_testkit::harness::get_leader(&client, la)
            .await
            .expect("answers");
        worst = worst.max(t.elapsed());
        assert!(v.is_leader);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    worst
}

/// Wait (at most `within`) until `pid` holds no more than 10 fds above `base`; fail if not.
async fn fds_back_to(pid: u32, base: usize, within: Duration) {
    let t = Instant::now();
    while fds(pid) > base + 10 && t.elapsed() < within {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(fds(pid) <= base + 10, "{} fds left (from {base})", fds(pid));
}

/// Open file descriptors of a process.
fn fds(pid: u32) -> usize {
    leaderd_testkit::harness::proc_usage(pid).map_or(0, |u| u.fds)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_methods_paths_and_requests_get_clear_errors() {
    let (mut c, leader, epoch, la, fa) = elected().await;
    let from = std::time::Instant::now();
    // Over and over for 2 × R, so that the election has to go on meanwhile.
    let mut rounds = 0;
    while rounds == 0 || from.elapsed() < R * 2 {
        rounds += 1;
        abuse_with_bad_requests(la, fa).await;
    }
    assert_election_unaffected(&mut c, &leader, epoch, from).await;
}

async fn abuse_with_bad_requests(la: SocketAddr, fa: SocketAddr) {
    for addr in [la, fa] {
        for method in ["PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "FOO", "POST"] {
            for path in [
                "/leader",
                "/leader/ready",
                "/leader/stream",
                "/healthz",
                "/readyz",
            ] {
                let (code, body) = raw(addr, &request(method, path)).await;
                assert_eq!(code, Some(405), "{method} {path}: {body}");
                assert_json_error(&body, 405);
            }
        }
        let (code, body) = raw(addr, &request("GET", "/leader/release")).await;
        assert_eq!(code, Some(405), "{body}");
        for path in [
            "/",
            "/nope",
            "/leader/",
            "/leader/x/y",
            "/%ff%fe",
            "/leader%00",
        ] {
            let (code, body) = raw(addr, &request("GET", path)).await;
            assert_eq!(code, Some(404), "GET {path}: {body}");
            assert_json_error(&body, 404);
        }
        for q in [
            "wait=%ZZ",
            "wait=-1s",
            "wait=forever",
            "wait=10m",
            "wait=99999999999999999999999s",
            "wait=1s&epoch=abc",
            "epoch=1&epoch=2&wait=1s",
        ] {
            let (code, body) = raw(addr, &request("GET", &format!("/leader?{q}"))).await;
            assert_eq!(code, Some(400), "?{q}: {body}");
            assert_json_error(&body, 400);
        }
        // Not HTTP at all, or broken HTTP: a 400 or a closed connection, never a hang.
        for junk in [
            &b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"[..],
            b"GET\r\n\r\n",
            b"GET /leader HTTP/9.9\r\n\r\n",
            b"GET /leader HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n",
            b"\0\0\0\0\0\0\0\0\r\n\r\n",
        ] {
            let t = Instant::now();
            let (code, _) = raw(addr, junk).await;
            assert!(code.is_none_or(|c| c == 400), "{junk:?}: {code:?}");
            assert!(t.elapsed() < Duration::from_secs(5), "{junk:?} hung");
        }
        // A GET with a broken chunked body: the body is never read, so it is answered (200);
        // the connection is then closed, not left hanging.
        let t = Instant::now();
        let (code, _) = raw(
            addr,
            b"GET /leader HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
        )
        .await;
        assert!(code.is_none_or(|c| c == 200 || c == 400), "{code:?}");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "broken chunked body hung"
        );
    }
    // The follower refuses to release what it does not hold, clearly.
    let (code, body) = raw(fa, &request("POST", "/leader/release")).await;
    assert_eq!(code, Some(409), "{body}");
    assert_json_error(&body, 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_query_strings_and_headers_get_clear_answers() {
    let (mut c, leader, epoch, la, _) = elected().await;
    let from = std::time::Instant::now();
    let mut rounds = 0;
    while rounds == 0 || from.elapsed() < R * 2 {
        rounds += 1;
        abuse_with_huge_requests(la).await;
    }
    assert_election_unaffected(&mut c, &leader, epoch, from).await;
}

async fn abuse_with_huge_requests(la: SocketAddr) {
    // A 100 KB query string: the URI is longer than the `http` crate takes (64 KB), so hyper
    // answers 414 URI Too Long before leaderd sees it.
    let big = "a".repeat(100 * 1024);
    for q in [format!("x={big}"), format!("wait={big}")] {
        let (code, _) = raw(la, &request("GET", &format!("/leader?{q}"))).await;
        assert_eq!(code, Some(414));
    }
    // 60 KB: unknown parameters are ignored (the usual answer); a 60 KB wait is a bad wait.
    let long = "a".repeat(60 * 1024);
    let (code, body) = raw(la, &request("GET", &format!("/leader?x={long}"))).await;
    assert_eq!(code, Some(200), "{}", &body[..body.len().min(200)]);
    assert!(body.contains("\"is_leader\":true"), "{body}");
    let (code, body) = raw(la, &request("GET", &format!("/leader?wait={long}"))).await;
    assert_eq!(code, Some(400));
    assert_json_error(&body, 400);
    // A 100 KB header.
    let req =
        format!("GET /leader HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\nConnection: close\r\n\r\n");
    let (code, _) = raw(la, req.as_bytes()).await;
    assert_eq!(code, Some(200));
    // Past hyper's buffer limit (~400 KB of request head): 431, or the connection is closed.
    let huge = "a".repeat(1024 * 1024);
    for req in [
        request("GET", &format!("/leader?x={huge}")),
        format!("GET /leader HTTP/1.1\r\nHost: x\r\nX-Big: {huge}\r\n\r\n").into_bytes(),
    ] {
        let (code, _) = raw(la, &req).await;
        assert!(
            code.is_none_or(|c| c == 431 || c == 414 || c == 400),
            "{code:?}"
        );
    }
    // A thousand small headers.
    let many: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (code, _) = raw(
        la,
        format!("GET /leader HTTP/1.1\r\nHost: x\r\n{many}Connection: close\r\n\r\n").as_bytes(),
    )
    .await;
    assert!(code.is_none_or(|c| c == 431 || c == 400), "{code:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_clients_do_not_hold_up_the_api_or_the_election() {
    let (mut c, leader, epoch, la, _) = elected().await;
    let pid = c
        .cands
        .iter()
        .find(|x| x.name == leader)
        .expect("leader")
        .pid()
        .expect("pid");
    let base_fds = fds(pid);
    let from = std::time::Instant::now();
    // 300 slowloris clients: a request head sent one byte every 200 ms, never finished; 100
    // that connect and say nothing; 100 SSE streams that are never read.
    let mut held = Vec::new();
    for i in 0..500 {
        let mut s = TcpStream::connect(la).await.expect("connect");
        if i >= 400 {
            s.write_all(b"GET /leader/stream HTTP/1.1\r\nHost: x\r\n\r\n")
                .await
                .expect("write");
        }
        held.push(s);
    }
    let trickle = tokio::spawn(async move {
        let head = b"GET /leader HTTP/1.1\r\nHost: x\r\nX-Slow: ";
        for round in 0.. {
            for s in held.iter_mut().take(300) {
                let b = head.get(round).copied().unwrap_or(b'a');
                if s.write_all(&[b]).await.is_err() {
                    continue;
                }
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        held
    });
    // Meanwhile /leader answers fresh clients at once, for 2 × R.
    let worst = slowest_fresh_leader_answer(la, R * 2).await;
    assert!(
        worst < Duration::from_millis(250),
        "a /leader answer took {worst:?}"
    );
    assert!(fds(pid) >= base_fds + 500, "the slow connections are open");
    trickle.abort();
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Closed by the client: the sidecar lets go of them.
    fds_back_to(pid, base_fds, Duration::from_secs(5)).await;
    assert_election_unaffected(&mut c, &leader, epoch, from).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_connections_do_not_disturb_the_election() {
    const N: usize = 10_000;
    // The leaderd it starts inherits the limit.
    let limit = leaderd_testkit::harness::raise_nofile(N as u64 * 2 + 1000).expect("RLIMIT_NOFILE");
    if limit < N as u64 + 1000 {
        eprintln!(
            "skipped: RLIMIT_NOFILE hard limit {limit} is below {}",
            N + 1000
        );
        return;
    }
    // Beyond the default connection limit (1024), which the next test checks.
    let (mut c, leader, epoch, la, _) = elected_with(&["--http-max-connections=20000"]).await;
    let pid = c
        .cands
        .iter()
        .find(|x| x.name == leader)
        .expect("leader")
        .pid()
        .expect("pid");
    let base_fds = fds(pid);
    let from = std::time::Instant::now();
    // 10 000 keep-alive connections, each asking GET /leader once and staying open; one in ten
    // opens an SSE stream instead.
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(500));
    for i in 0..N {
        let sem = sem.clone();
        tasks.spawn(async move {
            let permit = sem.acquire_owned().await.expect("semaphore");
            let mut s = TcpStream::connect(la).await.ok()?;
            let path = if i % 10 == 0 {
                "/leader/stream"
            } else {
                "/leader"
            };
            s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
                .await
                .ok()?;
            let mut buf = vec![0u8; 4096];
            let n = timeout(Duration::from_secs(30), s.read(&mut buf))
                .await
                .ok()?
                .ok()?;
            drop(permit);
            let ok = buf[..n].starts_with(b"HTTP/1.1 200");
            Some((s, ok))
        });
    }
    let mut open = Vec::with_capacity(N);
    let mut answered = 0;
    while let Some(r) = tasks.join_next().await {
        if let Ok(Some((s, ok))) = r {
            answered += usize::from(ok);
            open.push(s);
        }
    }
    let opened_in = started.elapsed();
    assert_eq!(answered, N, "answered {answered} of {N} in {opened_in:?}");
    let peak_fds = fds(pid);
    assert!(peak_fds >= base_fds + N, "{peak_fds} fds (base {base_fds})");
    // Held open for 2 × R: /leader still answers a fresh client promptly.
    let worst = slowest_fresh_leader_answer(la, R * 2).await;
    eprintln!(
        "10k connections: opened and answered in {opened_in:?}, leader fds {base_fds} → {peak_fds}, slowest fresh /leader {worst:?}"
    );
    assert!(
        worst < Duration::from_millis(500),
        "a /leader answer took {worst:?}"
    );
    drop(open);
    fds_back_to(pid, base_fds, Duration::from_secs(10)).await;
    assert_election_unaffected(&mut c, &leader, epoch, from).await;
}

/// The connection limit and the idle timeout: connections beyond `--http-max-connections` get a
/// clear 503 at once; idle keep-alive connections and a half-sent request head are closed after
/// `--http-idle-timeout`, a stream in progress is not; the election does not notice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_limit_get_503_and_idle_ones_are_closed() {
    const MAX: usize = 40;
    const IDLE: Duration = Duration::from_secs(1);
    let (mut c, leader, epoch, la, _) =
        elected_with(&["--http-max-connections=40", "--http-idle-timeout=1s"]).await;
    let metrics_addr = c.get(&leader).metrics_addr;
    let metric = |text: &str, name: &str| -> f64 {
        let line = text
            .lines()
            .find(|l| l.starts_with(name) && l.contains("listener=\"api\""))
            .unwrap_or_else(|| panic!("no {name} for the api listener in:\n{text}"));
        line.rsplit(' ')
            .next()
            .and_then(|v| v.parse().ok())
            .expect("a value")
    };
    let scrape = || async move {
        let body = leaderd_testkit::harness::get(
            &leaderd_testkit::harness::http_client(),
            metrics_addr,
            "/metrics",
        )
        .await
        .expect("metrics answer");
        String::from_utf8_lossy(&body).to_string()
    };
    let from = std::time::Instant::now();
    // The cluster's sampler holds one keep-alive connection (it asks every 10 ms). Add one SSE
    // stream, MAX - 3 keep-alive connections that asked once and stay idle, and one that sends
    // half a request head: MAX in all.
    let mut stream = TcpStream::connect(la).await.expect("connect");
    stream
        .write_all(b"GET /leader/stream HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .expect("write");
    let mut buf = vec![0u8; 4096];
    let n = stream.read(&mut buf).await.expect("stream answers");
    assert!(
        buf[..n].starts_with(b"HTTP/1.1 200"),
        "{:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    let mut idle = Vec::new();
    let mut asked_at = Instant::now();
    for _ in 0..MAX - 3 {
        let mut s = TcpStream::connect(la).await.expect("connect");
        s.write_all(b"GET /leader HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .expect("write");
        let n = s.read(&mut buf).await.expect("answer");
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        asked_at = Instant::now();
        idle.push(s);
    }
    let mut slow = TcpStream::connect(la).await.expect("connect");
    slow.write_all(b"GET /leader HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .expect("write");
    let slow_since = Instant::now();
    // Full: the next connections are refused at once, with the flag to raise in the error.
    for _ in 0..5 {
        let t = Instant::now();
        let (code, body) = raw(la, &request("GET", "/leader")).await;
        assert_eq!(code, Some(503), "{body}");
        assert_json_error(&body, 503);
        assert!(body.contains("--http-max-connections"), "{body}");
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "refused after {:?}",
            t.elapsed()
        );
    }
    let m = scrape().await;
    assert_eq!(metric(&m, "leaderd_http_connections_refused_total"), 5.0);
    assert_eq!(metric(&m, "leaderd_http_connections{"), MAX as f64);
    // The idle ones and the slow one are closed after the idle timeout, not before.
    for mut s in idle.into_iter().chain([slow]) {
        let n = timeout(IDLE * 4, s.read(&mut buf))
            .await
            .expect("closed within 4 x the idle timeout")
            .unwrap_or(0);
        assert_eq!(n, 0, "{:?}", String::from_utf8_lossy(&buf[..n]));
    }
    let closed = Instant::now();
    assert!(
        closed - asked_at >= IDLE - Duration::from_millis(50),
        "closed after {:?}",
        closed - asked_at
    );
    assert!(closed - slow_since >= IDLE - Duration::from_millis(50));
    // The stream is not idle: still open (a read finds no EOF) after another idle timeout.
    let r = timeout(IDLE * 2, stream.read(&mut buf)).await;
    assert!(
        r.is_err() || r.as_ref().is_ok_and(|n| n.as_ref().is_ok_and(|n| *n > 0)),
        "the stream was closed: {r:?}"
    );
    let m = scrape().await;
    assert!(metric(&m, "leaderd_http_connections{") <= 3.0, "{m}");
    // Room again: a fresh client is served.
    let client = leaderd_testkit::harness::http_client();
    let v = leaderd_testkit::harness::get_leader(&client, la)
        .await
        .expect("answers");
    assert!(v.is_leader);
    drop(stream);
    assert_election_unaffected(&mut c, &leader, epoch, from).await;
}

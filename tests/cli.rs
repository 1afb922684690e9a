//! Bad flags and environment: one line naming the flag and the fix, exit code 64, before
//! anything starts; a port in use is a clear error, never a panic.

mod common;

use std::process::{Command, Output};

fn leaderd(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leaderd"));
    cmd.args(args)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("KUBECONFIG", "/nonexistent/kubeconfig");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("runs")
}

fn assert_usage_error(out: &Output, must_name: &str) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(64),
        "exit code for {must_name}: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "not one line: {err}");
    assert!(err.contains(must_name), "{err:?} does not name {must_name}");
    assert!(out.stdout.is_empty());
}

#[test]
fn each_invalid_flag_or_env_gets_exit_64_and_names_the_flag() {
    // (flags, environment, the flag the message must name)
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str);
    let cases: &[Case] = &[
        (&[], &[], "--lease-name"),
        (&["--lease-name", "Bad_Name"], &[], "--lease-name"),
        (&["--lease-name", "x", "--shards", "0"], &[], "--shards"),
        (&["--lease-name", "x", "--shards", "5000"], &[], "--shards"),
        (&["--lease-name", "x", "--shards", "many"], &[], "--shards"),
        (
            &["--lease-name", "x"],
            &[("LEADERD_SHARDS", "-1")],
            "--shards",
        ),
        (
            &["--lease-name", "a.b", "--shards", "4"],
            &[],
            "--lease-name",
        ),
        (
            &[
                "--lease-name",
                "x",
                "--shards",
                "4",
                "--backend",
                "etcd",
                "--etcd-endpoints",
                "http://127.0.0.1:2379",
            ],
            &[],
            "--shards",
        ),
        (
            &["--lease-name", "x", "--namespace", "UPPER"],
            &[],
            "--namespace",
        ),
        (
            &["--lease-name", "x", "--lease-duration", "500ms"],
            &[],
            "--lease-duration",
        ),
        (
            &["--lease-name", "x", "--lease-duration", "abc"],
            &[],
            "--lease-duration",
        ),
        (
            &["--lease-name", "x", "--renew-deadline", "20s"],
            &[],
            "--renew-deadline",
        ),
        (
            &["--lease-name", "x", "--retry-period", "10s"],
            &[],
            "--retry-period",
        ),
        (
            &["--lease-name", "x", "--retry-period", "0s"],
            &[],
            "--retry-period",
        ),
        (
            &["--lease-name", "x", "--http-addr", "localhost"],
            &[],
            "--http-addr",
        ),
        (
            &["--lease-name", "x", "--metrics-addr", "127.0.0.1:99999"],
            &[],
            "--metrics-addr",
        ),
        (
            &["--lease-name", "x", "--http-max-connections", "0"],
            &[],
            "--http-max-connections",
        ),
        (
            &["--lease-name", "x", "--http-max-connections", "many"],
            &[],
            "--http-max-connections",
        ),
        (
            &["--lease-name", "x", "--http-idle-timeout", "0s"],
            &[],
            "--http-idle-timeout",
        ),
        (&["--lease-name", "x", "--identity", ""], &[], "--identity"),
        (
            &["--lease-name", "x", "--release-on-shutdown", "maybe"],
            &[],
            "--release-on-shutdown",
        ),
        (
            &[
                "--lease-name",
                "x",
                "--http-addr",
                "127.0.0.1:7",
                "--metrics-addr",
                "127.0.0.1:7",
            ],
            &[],
            "--metrics-addr",
        ),
        (&["--lease-name", "x", "--bogus"], &[], "--bogus"),
        (
            &[],
            &[
                ("LEADERD_LEASE_NAME", "x"),
                ("LEADERD_RENEW_DEADLINE", "20s"),
            ],
            "--renew-deadline",
        ),
        (
            &[],
            &[
                ("LEADERD_LEASE_NAME", "x"),
                ("LEADERD_LEASE_DURATION", "soon"),
            ],
            "--lease-duration",
        ),
        (
            &[],
            &[("LEADERD_LEASE_NAME", "no_underscores")],
            "--lease-name",
        ),
        (
            &["--lease-name", "x", "--app-check", "ftp://x"],
            &[],
            "--app-check",
        ),
        (
            &["--lease-name", "x", "--app-check", "tcp://127.0.0.1"],
            &[],
            "--app-check",
        ),
        (
            &[],
            &[
                ("LEADERD_LEASE_NAME", "x"),
                ("LEADERD_APP_CHECK", "https://127.0.0.1/healthz"),
            ],
            "--app-check",
        ),
        (
            &[
                "--lease-name",
                "x",
                "--app-check",
                "http://127.0.0.1:8080/healthz",
                "--app-check-timeout",
                "5s",
            ],
            &[],
            "--app-check-timeout",
        ),
        (
            &[
                "--lease-name",
                "x",
                "--app-check",
                "tcp://127.0.0.1:5432",
                "--app-check-failures",
                "0",
            ],
            &[],
            "--app-check-failures",
        ),
        (
            &["--lease-name", "x", "--app-check-interval", "often"],
            &[],
            "--app-check-interval",
        ),
    ];
    for (args, env, flag) in cases {
        assert_usage_error(&leaderd(args, env), flag);
    }
}

#[test]
fn no_cluster_connection_is_a_usage_error_not_a_panic() {
    let out = leaderd(&["--lease-name", "x", "--identity", "a"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{err}");
    assert!(
        err.contains("no cluster connection") && err.contains("KUBECONFIG"),
        "{err}"
    );
    assert!(!err.contains("panicked"));
}

#[test]
fn help_and_version_exit_0() {
    let out = leaderd(&["--help"], &[]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--lease-name",
        "--namespace",
        "--identity",
        "--lease-duration",
        "--renew-deadline",
        "--retry-period",
        "--http-addr",
        "--metrics-addr",
        "--release-on-shutdown",
        "LEADERD_LEASE_NAME",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}");
    }
    let out = leaderd(&["--version"], &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("leaderd "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn port_in_use_is_a_clear_error_naming_the_flag() {
    let server = leaderd_testkit::testserver::TestServer::start()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kc = dir.path().join("kc.yaml");
    std::fs::write(&kc, server.kubeconfig_yaml("a", "default")).unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_leaderd"))
        .args([
            "--lease-name",
            "x",
            "--identity",
            "a",
            "--http-addr",
            &addr,
            "--metrics-addr",
            "127.0.0.1:0",
        ])
        .env("KUBECONFIG", &kc)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("cannot listen on --http-addr {addr}")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(
        server.requests().is_empty(),
        "it talked to the apiserver before failing"
    );
}

#[test]
fn timings_prints_every_figure_as_text_and_json_and_checks_its_flags() {
    let out = leaderd(&["timings"], &[]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for figure in [
        "crash failover (kill -9), worst",
        "crash failover, typical",
        "graceful handover",
        "apiserver outage survived",
        "clock rate tolerance",
        "attempts per deadline",
        "call timeout",
        "renew interval (I)",
        "leader writes/s",
        "leader requests/s",
        "follower requests/s",
        "requests/s, all leases",
    ] {
        assert!(text.contains(figure), "{figure} missing from\n{text}");
    }
    assert!(text.contains("15s 50ms"), "{text}");

    let out = leaderd(
        &[
            "timings",
            "--lease-duration",
            "3s",
            "--renew-deadline",
            "2s",
            "--retry-period",
            "500ms",
            "--leases",
            "4",
            "--json",
        ],
        &[],
    );
    assert!(out.status.success(), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    for key in [
        "clock_rate_tolerance",
        "leader_writes_per_s",
        "crash_failover_worst_s",
        "crash_failover_typical_s",
        "graceful_handover_worst_answered_s",
        "outage_survived_s",
        "attempts_per_deadline",
        "leader_requests_per_s",
        "follower_requests_per_s",
        "lease_requests_per_s",
        "total_requests_per_s",
        "warnings",
    ] {
        assert!(v.get(key).is_some(), "{key} missing from {v}");
    }
    assert_eq!(v["clock_rate_tolerance"], 0.2);
    // Rule 14: one renewal per 3R/5 = 1.2 s.
    assert!((v["leader_writes_per_s"].as_f64().unwrap() - 1.0 / 1.2).abs() < 1e-9);
    assert_eq!(v["renew_interval_s"], 1.2);
    assert!((v["total_requests_per_s"].as_f64().unwrap() - 4.0 * (1.0 / 1.2 + 0.05)).abs() < 1e-9);

    // The sidecar's validation, exit 64 naming the flag; no cluster needed.
    assert_usage_error(
        &leaderd(&["timings", "--retry-period", "10s"], &[]),
        "--retry-period",
    );
    assert_usage_error(
        &leaderd(&["timings", "--lease-duration", "500ms"], &[]),
        "--lease-duration",
    );
    assert_usage_error(&leaderd(&["timings", "--leases", "0"], &[]), "--leases");
    assert_usage_error(
        &leaderd(&["timings", "--candidates", "x"], &[]),
        "--candidates",
    );
    // Sidecar flags and the subcommand do not mix.
    let out = leaderd(&["--lease-name", "x", "timings"], &[]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
}

#[test]
fn a_bad_config_file_gets_exit_64_with_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "typo.yaml",
            "groups:\n  - name: work\n    shard: 12\n",
            "typo.yaml:3:",
        ),
        (
            "timing.yaml",
            "leases:\n  - name: cron\n    leaseDuration: 5s\n    renewDeadline: 9s\n",
            "timing.yaml:2:",
        ),
        (
            "dup.yaml",
            "leases:\n  - name: x\ngroups:\n  - name: x\n    shards: 3\n",
            "dup.yaml:4:",
        ),
        ("empty.yaml", "# nothing\n", "names no lease and no group"),
    ];
    for (name, text, must) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let out = leaderd(&["--config", path.to_str().unwrap()], &[]);
        assert_usage_error(&out, must);
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("fix:"),
            "{name}"
        );
    }
    let out = leaderd(&["--config", "/nonexistent/leaderd.yaml"], &[]);
    assert_usage_error(&out, "/nonexistent/leaderd.yaml");
    let path = dir.path().join("typo.yaml");
    let out = leaderd(
        &["--config", path.to_str().unwrap(), "--lease-name", "x"],
        &[],
    );
    assert_usage_error(&out, "--lease-name");

    // Several entries: the side effects that act for one lease are refused, naming the flag.
    let two = dir.path().join("two.yaml");
    std::fs::write(
        &two,
        "leases:\n  - name: cron\ngroups:\n  - name: work\n    shards: 3\n",
    )
    .unwrap();
    for flags in [
        &["--label-pod", "--pod-name", "p"][..],
        &["--on-started-leading", "/bin/true"][..],
        &["--notify-url", "http://127.0.0.1:1/"][..],
        &[
            "--backend",
            "etcd",
            "--etcd-endpoints",
            "http://127.0.0.1:2379",
        ][..],
    ] {
        let mut args = vec!["--config", two.to_str().unwrap()];
        args.extend_from_slice(flags);
        let out = leaderd(&args, &[]);
        assert_usage_error(&out, flags[0]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("names 2 leases and groups"), "{err}");
    }
}

//! The etcd backend over TLS with client-certificate auth and a role limited to the election's
//! prefix, on a real etcd: certificates made with `openssl`, etcd started on 127.0.0.1 with
//! `--client-cert-auth` and auth enabled, the README's role commands run with `etcdctl`. A
//! leaderd whose certificate names the `leaderd` user campaigns under its prefix and leads; one
//! asked to campaign outside the prefix is refused, says what to fix, and never leads.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use leaderd_testkit::harness::etcd::{etcd_bin, etcdctl_bin};
use leaderd_testkit::harness::{get_leader, http_client, Candidate, EtcdCandidateSpec};

const D: Duration = Duration::from_secs(3);
const R: Duration = Duration::from_secs(2);
const P: Duration = Duration::from_millis(250);

fn run(dir: &Path, args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (the TLS test needs openssl)", args[0]));
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA, a serving certificate for 127.0.0.1 and a client certificate with CN `user`.
fn certificates(dir: &Path, user: &str) {
    let subj = format!("/CN={user}");
    run(
        dir,
        &[
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "1",
            "-subj",
            "/CN=leaderd-test-ca",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").unwrap();
    for (name, cn, ext) in [
        ("server", "/CN=etcd", "server.ext"),
        ("client", subj.as_str(), "client.ext"),
    ] {
        let (key, csr, crt) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.crt"),
        );
        run(
            dir,
            &[
                "openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-out", &csr,
                "-subj", cn,
            ],
        );
        run(
            dir,
            &[
                "openssl",
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.crt",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-out",
                &crt,
                "-days",
                "1",
                "-extfile",
                ext,
            ],
        );
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// etcd, killed by PID when dropped.
struct Etcd(Child);

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn etcdctl(dir: &Path, endpoint: &str, args: &[&str]) -> std::process::Output {
    Command::new(etcdctl_bin().expect("etcdctl"))
        .env("ETCDCTL_API", "3")
        .args([
            "--endpoints",
            endpoint,
            "--cacert",
            "ca.crt",
            "--cert",
            "client.crt",
        ])
        .args(["--key", "client.key", "--command-timeout", "5s"])
        .args(args)
        .current_dir(dir)
        .output()
        .expect("etcdctl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_with_client_certificates_and_a_role_limited_to_the_prefix() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    // The client certificate's CN is the etcd user (`--client-cert-auth`). Setting auth up needs
    // root: a second client certificate for root.
    certificates(dir, "leaderd");
    for f in ["client.crt", "client.key"] {
        std::fs::rename(dir.join(f), dir.join(format!("leaderd-{f}"))).unwrap();
    }
    let subj = "/CN=root";
    run(
        dir,
        &[
            "openssl",
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "client.key",
            "-out",
            "root.csr",
            "-subj",
            subj,
        ],
    );
    run(
        dir,
        &[
            "openssl",
            "x509",
            "-req",
            "-in",
            "root.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            "client.crt",
            "-days",
            "1",
            "-extfile",
            "client.ext",
        ],
    );

    let (client, peer) = (free_port(), free_port());
    let endpoint = format!("https://127.0.0.1:{client}");
    let log = std::fs::File::create(dir.join("etcd.log")).unwrap();
    let child = Command::new(etcd_bin().expect("etcd"))
        .args(["--name", "tls", "--data-dir", "data"])
        .args([
            "--listen-client-urls",
            &endpoint,
            "--advertise-client-urls",
            &endpoint,
        ])
        .args(["--listen-peer-urls", &format!("http://127.0.0.1:{peer}")])
        .args([
            "--initial-advertise-peer-urls",
            &format!("http://127.0.0.1:{peer}"),
        ])
        .args(["--initial-cluster", &format!("tls=http://127.0.0.1:{peer}")])
        .args(["--cert-file", "server.crt", "--key-file", "server.key"])
        .args(["--client-cert-auth", "--trusted-ca-file", "ca.crt"])
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("etcd starts");
    let _etcd = Etcd(child);
    let mut up = false;
    for _ in 0..100 {
        if etcdctl(dir, &endpoint, &["endpoint", "health"])
            .status
            .success()
        {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let etcd_log = || std::fs::read_to_string(dir.join("etcd.log")).unwrap_or_default();
    assert!(up, "etcd with TLS did not become healthy:\n{}", etcd_log());

    // The README's commands: a role limited to the prefix, a user without password (its
    // certificate authenticates it), then auth on.
    for args in [
        &["user", "add", "root", "--new-user-password", "root-pw"][..],
        &["user", "grant-role", "root", "root"],
        &["role", "add", "leaderd"],
        &[
            "role",
            "grant-permission",
            "leaderd",
            "readwrite",
            "--prefix=true",
            "/elections/",
        ],
        &["user", "add", "leaderd", "--no-password"],
        &["user", "grant-role", "leaderd", "leaderd"],
        &["auth", "enable"],
    ] {
        let out = etcdctl(dir, &endpoint, args);
        assert!(
            out.status.success(),
            "etcdctl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let spec = |identity: &str, prefix: &str| {
        let mut s = EtcdCandidateSpec::new(
            env!("CARGO_BIN_EXE_leaderd"),
            &endpoint,
            "payouts",
            identity,
            (D, R, P),
        );
        s.prefix = Some(prefix.to_owned());
        let file = |f: &str| -> String { dir.join(f).display().to_string() };
        s.extra_args = vec![
            "--etcd-ca-file".into(),
            file("ca.crt"),
            "--etcd-cert-file".into(),
            file("leaderd-client.crt"),
            "--etcd-key-file".into(),
            file("leaderd-client.key"),
        ];
        s
    };
    let inside = Candidate::spawn_etcd(&spec("inside", "/elections/"))
        .await
        .expect("starts");
    let outside = Candidate::spawn_etcd(&spec("outside", "/elsewhere/"))
        .await
        .expect("starts");
    let client = http_client();
    let mut led = None;
    for _ in 0..100 {
        if let Ok(v) = get_leader(&client, inside.addr).await {
            if v.is_leader {
                led = Some(v);
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let Some(v) = led else {
        panic!(
            "the leaderd with a client certificate did not lead under its prefix:\n{}\netcd:\n{}",
            inside.logs().join("\n"),
            etcd_log()
        );
    };
    assert!(v.epoch.is_some_and(|e| e > 0), "{v:?}");
    assert!(
        v.lease_uid
            .as_deref()
            .is_some_and(|u| u.starts_with("etcd-")),
        "{v:?}"
    );
    // Outside its role's prefix: refused with the fix, and never a leader.
    let mut refused = false;
    for _ in 0..50 {
        if outside
            .logs()
            .iter()
            .any(|l| l.contains("PermissionDenied") && l.contains("fix:"))
        {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        refused,
        "no clear permission error outside the prefix:\n{}",
        outside.logs().join("\n")
    );
    let v = get_leader(&client, outside.addr).await.expect("answers");
    assert!(!v.is_leader, "{v:?}");
    // The keys as etcd holds them: only the one under the granted prefix.
    let out = etcdctl(dir, &endpoint, &["get", "--prefix", "/", "--keys-only"]);
    let keys = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(keys.contains("/elections/payouts/"), "{keys}");
    assert!(!keys.contains("/elsewhere/"), "{keys}");
    inside.signal(libc::SIGTERM);
    outside.signal(libc::SIGTERM);
    for c in [&inside, &outside] {
        let code = c
            .wait_exit(Duration::from_secs(5))
            .await
            .and_then(|s| s.code());
        assert_eq!(code, Some(0), "{}", c.logs().join("\n"));
    }
}

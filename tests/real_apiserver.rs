//! The process scenarios against a real kube-apiserver, when `LEADERD_REAL_KUBECONFIG` names a
//! kubeconfig for one (`scripts/kube-apiserver.sh start DIR` writes DIR/kubeconfig). Without it
//! the test says it skipped.

use std::time::Duration;

use leaderd::harness::{check, Candidate, CandidateSpec, Sampler};
use tokio::time::Instant;

const D: Duration = Duration::from_secs(3);
const R: Duration = Duration::from_secs(2);
const P: Duration = Duration::from_millis(250);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elect_crash_and_handover_against_a_real_apiserver() {
    let Some(kubeconfig) = std::env::var_os("LEADERD_REAL_KUBECONFIG") else {
        eprintln!("SKIPPED: LEADERD_REAL_KUBECONFIG is not set");
        return;
    };
    let lease = format!("real-{}", std::process::id());
    let sampler = Sampler::start(Duration::from_millis(10));
    let mut cands = Vec::new();
    for i in 1..=3 {
        let spec = CandidateSpec {
            bin: env!("CARGO_BIN_EXE_leaderd").into(),
            kubeconfig: kubeconfig.clone().into(),
            lease: lease.clone(),
            namespace: "default".into(),
            identity: format!("r{i}"),
            timing: (D, R, P),
            extra_args: vec![],
        };
        let c = Candidate::spawn(&spec).await.expect("starts");
        sampler.add(&c);
        cands.push(c);
    }
    let dump = |cands: &Vec<Candidate>| {
        for c in cands {
            eprintln!("--- {} ---\n{}", c.name, c.logs().join("\n"));
        }
    };
    let Some((first, e1)) = sampler.wait_for_leader(D * 3, &[]).await else {
        dump(&cands);
        panic!("no leader");
    };
    tokio::time::sleep(P * 4).await;
    let i = cands.iter().position(|c| c.name == first).unwrap();
    let mut dead = cands.remove(i);
    sampler.remove(&first);
    let killed = Instant::now();
    dead.kill9();
    let Some((second, e2)) = sampler.wait_for_leader(D + P * 4, &[]).await else {
        dump(&cands);
        panic!("no leader after kill -9");
    };
    let crash = sampler.first_leading(&second, killed).unwrap().recv - killed;
    assert!(e2 > e1);
    let i = cands.iter().position(|c| c.name == second).unwrap();
    let termed = Instant::now();
    cands[i].signal(libc::SIGTERM);
    let Some((third, e3)) = sampler
        .wait_for_leader(Duration::from_secs(1), &[&second])
        .await
    else {
        dump(&cands);
        panic!("no leader after SIGTERM");
    };
    let handover = sampler.first_leading(&third, termed).unwrap().recv - termed;
    assert_eq!(
        cands[i]
            .wait_exit(Duration::from_secs(5))
            .await
            .and_then(|s| s.code()),
        Some(0)
    );
    assert_eq!(e3, e2 + 1);
    let v = check(&sampler.samples());
    assert!(v.is_empty(), "{v:?}");
    eprintln!("real apiserver: crash failover {crash:?}, graceful handover {handover:?}, epochs {e1} {e2} {e3}");
    for c in &cands {
        assert!(!c.logs().iter().any(|l| l.contains("panicked")));
    }
}

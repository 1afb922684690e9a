//! Suspend-safe claims: a leader whose machine was suspended (the monotonic clock stood still
//! while real time went on) never claims past its deadline after it wakes. The suspend is
//! injected into the election's clock, which is global to the process: this test binary holds
//! this one test only. tokio's clock is paused, so no real time passes unless the test says so.

use std::time::Duration;

use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use leaderd::election::{clock, Elector, ElectorConfig, LossReason, Params, Transition};
use leaderd::status::{channel, Identity};
use leaderd_testkit::memory::MemoryStore;

const D: Duration = Duration::from_secs(15);
const R: Duration = Duration::from_secs(10);
const P: Duration = Duration::from_secs(2);

#[tokio::test(start_paused = true)]
async fn a_leader_woken_from_a_suspend_longer_than_its_claim_claims_nothing() {
    let store = MemoryStore::new();
    let (tx, mut status) = channel(Identity {
        lease: "l".into(),
        namespace: "ns".into(),
        identity: "a".into(),
    });
    let mut transitions = status.transitions();
    let params = Params {
        identity: "a".into(),
        lease_duration: D,
        renew_deadline: R,
        retry_period: P,
        priority: 0,
    };
    let stop = CancellationToken::new();
    let elector = Elector::new(store.client("a"), ElectorConfig::new(params), tx);
    let done = tokio::spawn(elector.run(stop.clone()));
    // It creates the Lease, waits it out and leads.
    timeout(D * 3, async {
        while !status.view().is_leader {
            status.changed().await.unwrap();
        }
    })
    .await
    .expect("leads");
    let led = status.view();
    assert!(led.valid_for_ms.unwrap() > 0);

    // The VM is suspended for a minute: real time goes on, the monotonic clock does not.
    clock::inject_suspend(Duration::from_secs(60));
    // Readers judge the claim on the suspend-aware clock: no leadership, at once, before the
    // elector has even run again.
    let v = status.view();
    assert!(
        !v.is_leader,
        "claims after a suspend longer than its claim: {v:?}"
    );
    assert_eq!(v.valid_for_ms, None);

    // The elector notices within a retry period: the tenure ends by its deadline.
    let lost = timeout(P + Duration::from_millis(10), async {
        loop {
            match transitions.recv().await {
                Some(Transition::Lost { reason, epoch }) => break (reason, epoch),
                Some(_) => continue,
                None => panic!("elector gone"),
            }
        }
    })
    .await
    .expect("the loss is noticed within a retry period");
    assert_eq!(lost, (LossReason::RenewDeadline, led.epoch));
    // It takes its own record back (rule 8: it wrote it) with a new epoch.
    timeout(D, async {
        while !status.view().is_leader {
            status.changed().await.unwrap();
        }
    })
    .await
    .expect("leads again");
    assert_eq!(status.view().epoch, led.epoch.map(|e| e + 1));
    stop.cancel();
    done.await.unwrap();
}

//! Transition hooks: `--on-started-leading`, `--on-stopped-leading`, `--on-new-leader`.
//!
//! Each hook is a command (argv, no shell) run once per transition with the environment
//! `LEADERD_EVENT, LEADERD_LEASE, LEADERD_NAMESPACE, LEADERD_IDENTITY, LEADERD_LEADER,
//! LEADERD_EPOCH` (and `LEADERD_REASON` when leadership stopped). Runs of one hook never
//! overlap: they queue, in order. Each run is limited by `--hook-timeout` and killed after it;
//! its output goes to the log. Hooks run in tasks of their own, fed by an unbounded channel,
//! so a slow or failing hook never delays the election.

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{info, warn};

use crate::config::Hooks;
use crate::election::Transition;
use crate::metrics::Metrics;
use crate::status::{Identity, StatusRx, Transitions};

/// One run of a hook: the event and its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HookRun {
    /// `started_leading`, `stopped_leading` or `new_leader`.
    pub event: &'static str,
    /// Environment added to the command's.
    pub env: Vec<(&'static str, String)>,
}

/// The run `t` calls for, if any (before knowing which hooks are configured). `leader` is the
/// holder as this candidate knows it after the transition.
pub fn runs_for(id: &Identity, t: &Transition, leader: Option<&str>) -> Option<HookRun> {
    let base = |event: &'static str, leader: Option<&str>, epoch: Option<i64>| {
        let env = vec![
            ("LEADERD_EVENT", event.to_owned()),
            ("LEADERD_LEASE", id.lease.clone()),
            ("LEADERD_NAMESPACE", id.namespace.clone()),
            ("LEADERD_IDENTITY", id.identity.clone()),
            ("LEADERD_LEADER", leader.unwrap_or_default().to_owned()),
            (
                "LEADERD_EPOCH",
                epoch.map(|e| e.to_string()).unwrap_or_default(),
            ),
        ];
        HookRun { event, env }
    };
    Some(match t {
        Transition::Acquired { epoch } => base("started_leading", Some(&id.identity), Some(*epoch)),
        Transition::Lost { reason, epoch } => {
            let mut run = base("stopped_leading", leader, *epoch);
            run.env.push(("LEADERD_REASON", reason.as_str().to_owned()));
            run
        }
        Transition::NewLeader { leader, epoch } => base("new_leader", leader.as_deref(), *epoch),
        Transition::ReleaseFinished(_) => return None,
    })
}

/// Run hooks for the transitions received on `rx` (subscribed from `status`) until it closes;
/// then finish the queued runs. `status` tells the holder as currently known (for
/// `LEADERD_LEADER` of stopped-leading).
pub async fn run(
    hooks: Hooks,
    status: StatusRx,
    mut rx: Transitions,
    metrics: Option<Arc<Metrics>>,
) {
    let mut queues: Vec<(&'static str, mpsc::UnboundedSender<HookRun>)> = Vec::new();
    let mut runners = JoinSet::new();
    for (event, argv) in [
        ("started_leading", hooks.started_leading),
        ("stopped_leading", hooks.stopped_leading),
        ("new_leader", hooks.new_leader),
    ] {
        let Some(argv) = argv else { continue };
        let (tx, mut q) = mpsc::unbounded_channel::<HookRun>();
        queues.push((event, tx));
        let (limit, metrics) = (hooks.timeout, metrics.clone());
        runners.spawn(async move {
            while let Some(run) = q.recv().await {
                let result = run_once(&argv, &run, limit).await;
                if let Some(m) = &metrics {
                    m.side_effect(&format!("hook_{event}"), result);
                }
            }
        });
    }
    while let Some(t) = rx.recv().await {
        let Some(run) = runs_for(&status.id, &t, status.state().view.holder.as_deref()) else {
            continue;
        };
        if let Some((_, q)) = queues.iter().find(|(e, _)| *e == run.event) {
            let _ = q.send(run);
        }
    }
    drop(queues);
    while runners.join_next().await.is_some() {}
}

/// Run `argv` once for `run`, within `limit`. Returns `ok`, `error` or `timeout`.
pub async fn run_once(argv: &[String], run: &HookRun, limit: Duration) -> &'static str {
    let event = run.event;
    let mut cmd = Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .envs(run.env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            warn!(hook = event, command = %argv[0], error = %e, "hook could not be started");
            return "error";
        }
    };
    let mut logs = JoinSet::new();
    if let Some(out) = child.stdout.take() {
        logs.spawn(log_lines(event, "stdout", out));
    }
    if let Some(err) = child.stderr.take() {
        logs.spawn(log_lines(event, "stderr", err));
    }
    let result = match tokio::time::timeout(limit, child.wait()).await {
        Ok(Ok(status)) if status.success() => {
            info!(hook = event, "hook finished");
            "ok"
        }
        Ok(Ok(status)) => {
            warn!(hook = event, %status, "hook failed");
            "error"
        }
        Ok(Err(e)) => {
            warn!(hook = event, error = %e, "hook could not be waited for");
            "error"
        }
        Err(_) => {
            warn!(
                hook = event,
                "hook still running after {}; killed it",
                humantime::format_duration(limit)
            );
            let _ = child.kill().await;
            "timeout"
        }
    };
    // The output pipes close when the process (and whatever inherited them) is gone; do not
    // wait on a grandchild that kept them open.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while logs.join_next().await.is_some() {}
    })
    .await;
    result
}

async fn log_lines(event: &'static str, stream: &'static str, r: impl AsyncRead + Unpin) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        info!(hook = event, stream, "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::election::LossReason;

    fn id() -> Identity {
        Identity {
            lease: "payouts".into(),
            namespace: "prod".into(),
            identity: "pod-a".into(),
        }
    }

    fn env(run: &HookRun, k: &str) -> String {
        run.env.iter().find(|(n, _)| *n == k).unwrap().1.clone()
    }

    #[test]
    fn each_transition_gets_its_event_and_environment() {
        let r = runs_for(&id(), &Transition::Acquired { epoch: 7 }, None).unwrap();
        assert_eq!(r.event, "started_leading");
        assert_eq!(env(&r, "LEADERD_LEADER"), "pod-a");
        assert_eq!(env(&r, "LEADERD_EPOCH"), "7");
        assert_eq!(env(&r, "LEADERD_LEASE"), "payouts");
        let r = runs_for(
            &id(),
            &Transition::Lost {
                reason: LossReason::Taken,
                epoch: Some(7),
            },
            Some("pod-b"),
        )
        .unwrap();
        assert_eq!(r.event, "stopped_leading");
        assert_eq!(env(&r, "LEADERD_LEADER"), "pod-b");
        assert_eq!(env(&r, "LEADERD_REASON"), "taken");
        let r = runs_for(
            &id(),
            &Transition::NewLeader {
                leader: None,
                epoch: Some(8),
            },
            Some("ignored"),
        )
        .unwrap();
        assert_eq!(r.event, "new_leader");
        assert_eq!(env(&r, "LEADERD_LEADER"), "");
        assert_eq!(env(&r, "LEADERD_IDENTITY"), "pod-a");
        let released = Transition::ReleaseFinished(crate::election::ReleaseOutcome::NotLeader);
        assert!(runs_for(&id(), &released, None).is_none());
    }

    #[tokio::test]
    async fn a_hook_gets_its_environment_and_a_slow_one_is_killed() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let argv: Vec<String> = vec![
            "/bin/sh".into(),
            "-c".into(),
            format!("echo \"$LEADERD_EVENT $LEADERD_EPOCH\" > {}", out.display()),
        ];
        let run = runs_for(&id(), &Transition::Acquired { epoch: 3 }, None).unwrap();
        assert_eq!(run_once(&argv, &run, Duration::from_secs(10)).await, "ok");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "started_leading 3\n"
        );
        let slow: Vec<String> = vec!["/bin/sleep".into(), "30".into()];
        let t = std::time::Instant::now();
        assert_eq!(
            run_once(&slow, &run, Duration::from_millis(200)).await,
            "timeout"
        );
        assert!(t.elapsed() < Duration::from_secs(5));
        let missing: Vec<String> = vec!["/nonexistent/hook".into()];
        assert_eq!(
            run_once(&missing, &run, Duration::from_secs(1)).await,
            "error"
        );
        let failing: Vec<String> = vec!["/bin/false".into()];
        assert_eq!(
            run_once(&failing, &run, Duration::from_secs(5)).await,
            "error"
        );
    }
}

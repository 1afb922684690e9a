//! The executor of a shard group: runs the [`Group`]'s steps against a [`GroupStore`] under the
//! call timeout, follows the group's list and watch, forwards the coordinator's tenure (the
//! group's ordinary Lease, elected by [`crate::election::Elector`]) and releases, and publishes
//! the view ([`ShardsRx`]) for the HTTP API and the metrics. It makes no decision of its own.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::state::{Group, GroupView, Input, Op, Request, ShardTransition, Step, WriteKind};
use super::store::{GroupEvent, GroupStore};
use crate::election::{clock, jitter, timer_for, StoreError, Tenure};

/// Which group and replica; fixed for the process's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardsIdentity {
    /// The group's name.
    pub group: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica.
    pub identity: String,
    /// The shard count this replica was started with.
    pub shards: u32,
}

/// Told about requests, writes and transitions (the metrics).
pub trait ShardObserver: Send + Sync {
    /// One store request: its verb, its code (HTTP status, `timeout`, `error`) and duration.
    fn request(&self, verb: &str, code: &str, took: Duration);
    /// One successful write, by what it was for.
    fn write(&self, kind: WriteKind);
    /// One transition.
    fn transition(&self, t: &ShardTransition);
}

/// Several observers, each told everything.
impl ShardObserver for Vec<Arc<dyn ShardObserver>> {
    fn request(&self, verb: &str, code: &str, took: Duration) {
        self.iter().for_each(|o| o.request(verb, code, took));
    }
    fn write(&self, kind: WriteKind) {
        self.iter().for_each(|o| o.write(kind));
    }
    fn transition(&self, t: &ShardTransition) {
        self.iter().for_each(|o| o.transition(t));
    }
}

/// A channel that is handed every transition (for a follower such as the Events publisher).
impl ShardObserver for mpsc::UnboundedSender<ShardTransition> {
    fn request(&self, _: &str, _: &str, _: Duration) {}
    fn write(&self, _: WriteKind) {}
    fn transition(&self, t: &ShardTransition) {
        let _ = self.send(t.clone());
    }
}

/// The reading side of the published view.
#[derive(Clone, Debug)]
pub struct ShardsRx {
    /// Which group and replica.
    pub id: Arc<ShardsIdentity>,
    rx: watch::Receiver<GroupView>,
    release: mpsc::Sender<oneshot::Sender<bool>>,
}

/// One shard in `GET /shards`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ShardEntry {
    /// The shard.
    pub id: u32,
    /// Its owner as this replica sees it.
    pub owner: Option<String>,
    /// Whether this replica may act on it now.
    pub is_owner: bool,
    /// The fencing epoch of its owner's tenure.
    pub epoch: Option<i64>,
    /// How much longer this replica may act on it; null when it is not the owner.
    pub valid_for_ms: Option<u64>,
}

/// The `GET /shards` JSON document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ShardsDoc {
    /// The group.
    pub group: String,
    /// Its namespace.
    pub namespace: String,
    /// This replica.
    pub identity: String,
    /// Live members seen.
    pub members: Vec<String>,
    /// Every shard.
    pub shards: Vec<ShardEntry>,
}

impl ShardsRx {
    /// The view as published.
    pub fn state(&self) -> GroupView {
        self.rx.borrow().clone()
    }

    /// Wait for the next publication; `Err` once the executor is gone.
    pub async fn changed(&mut self) -> Result<(), watch::error::RecvError> {
        self.rx.changed().await
    }

    /// The document as seen at `now`: ownership judged at the moment of the answer.
    pub fn doc_at(&self, now: Instant) -> ShardsDoc {
        let v = self.state();
        let owned: BTreeMap<u32, i64> = v.owned_at(now).collect();
        let left = v
            .valid_until
            .map(|u| u.saturating_duration_since(now).as_millis() as u64);
        let shards = v
            .shards
            .iter()
            .enumerate()
            .map(|(i, s)| {
                let i = i as u32;
                let mine = owned.get(&i);
                ShardEntry {
                    id: i,
                    owner: s.owner.clone(),
                    is_owner: mine.is_some(),
                    epoch: mine.copied().or(s.epoch),
                    valid_for_ms: mine.and(left),
                }
            })
            .collect();
        ShardsDoc {
            group: self.id.group.clone(),
            namespace: self.id.namespace.clone(),
            identity: self.id.identity.clone(),
            members: v.members,
            shards,
        }
    }

    /// The document now.
    pub fn doc(&self) -> ShardsDoc {
        self.doc_at(clock::now())
    }

    /// Hand every owned shard over (`POST /shards/release`): `Some(true)` once the leaving
    /// record is written, `Some(false)` if it could not be, `None` if the executor is gone.
    pub async fn release(&self) -> Option<bool> {
        let (tx, rx) = oneshot::channel();
        self.release.send(tx).await.ok()?;
        rx.await.ok()
    }
}

/// The executor of one replica of one group.
pub struct Member<S: GroupStore> {
    store: S,
    group: Group,
    tx: watch::Sender<GroupView>,
    releases: mpsc::Receiver<oneshot::Sender<bool>>,
    replies: Vec<oneshot::Sender<bool>>,
    coordinator: watch::Receiver<Option<Tenure>>,
    observer: Option<Arc<dyn ShardObserver>>,
    call_timeout: Duration,
    watch_silence: Duration,
}

impl<S: GroupStore> Member<S> {
    /// An executor and the reading side of what it publishes. `coordinator` carries this
    /// replica's tenure of the group's ordinary Lease.
    pub fn new(
        store: S,
        group: Group,
        id: ShardsIdentity,
        coordinator: watch::Receiver<Option<Tenure>>,
    ) -> (Self, ShardsRx) {
        let (tx, rx) = watch::channel(group.view());
        let (release, releases) = mpsc::channel(8);
        let call_timeout = group.params().params.call_timeout();
        (
            Member {
                store,
                group,
                tx,
                releases,
                replies: Vec::new(),
                coordinator,
                observer: None,
                call_timeout,
                watch_silence: Duration::from_secs(75),
            },
            ShardsRx {
                id: Arc::new(id),
                rx,
                release,
            },
        )
    }

    /// Report requests, writes and transitions to `observer`.
    pub fn with_observer(mut self, observer: Arc<dyn ShardObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Run until `shutdown`, then leave (write a leaving record, if configured) and return.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (tx, mut inputs) = mpsc::channel(1024);
        let stop_feeds = CancellationToken::new();
        let feeds = [
            tokio::spawn(list_and_watch(
                self.store.clone(),
                tx.clone(),
                self.group.params().params.retry_period,
                self.call_timeout,
                self.watch_silence,
                self.observer.clone(),
                stop_feeds.clone(),
            )),
            tokio::spawn(forward_coordinator(
                self.coordinator.clone(),
                tx,
                stop_feeds.clone(),
            )),
        ];
        let mut stopping = false;
        loop {
            self.apply(Input::Tick);
            let step = self.group.decide(clock::now(), SystemTime::now());
            let until = match step {
                Step::Stopped => break,
                Step::Send(request) => {
                    self.send(request, &mut inputs).await;
                    continue;
                }
                Step::Wait(until) => until,
            };
            let leading = self.group.deadline().is_some();
            let wake = timer_for(until, leading, self.group.params().params.retry_period);
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !stopping => {
                    stopping = true;
                    self.apply(Input::Stop);
                }
                Some(input) = inputs.recv() => self.apply(input),
                Some(reply) = self.releases.recv() => {
                    self.replies.push(reply);
                    self.apply(Input::Release);
                }
                _ = sleep_until(wake) => {}
            }
        }
        stop_feeds.cancel();
        for f in feeds {
            f.abort();
        }
        for reply in self.replies.drain(..) {
            let _ = reply.send(false);
        }
    }

    /// One request under the call timeout, applying news (and the claims' deadline) while it
    /// hangs.
    async fn send(&mut self, request: Request, inputs: &mut mpsc::Receiver<Input>) {
        let store = self.store.clone();
        let name = request.name.clone();
        let (verb, fut): (&str, futures::future::BoxFuture<'_, Result<_, StoreError>>) =
            match &request.op {
                Op::Read => ("get", Box::pin(store.get(&name))),
                Op::Create(obj) => ("create", Box::pin(store.create(&name, obj.clone()))),
                Op::Replace(obj) => ("update", Box::pin(store.replace(&name, obj.clone()))),
            };
        let sent = clock::now();
        let started = Instant::now();
        let limit = self.call_timeout;
        let fut = timeout(limit, fut);
        tokio::pin!(fut);
        let result = loop {
            let deadline = self.group.deadline();
            let wake = timer_for(
                deadline.unwrap_or_else(clock::now),
                true,
                self.group.params().params.retry_period,
            );
            tokio::select! {
                biased;
                r = &mut fut => break r.unwrap_or(Err(StoreError::TimedOut { after: limit })),
                Some(input) = inputs.recv() => self.apply(input),
                _ = sleep_until(wake), if deadline.is_some() => self.apply(Input::Tick),
            }
        };
        if let Some(o) = &self.observer {
            let code = match &result {
                Ok(_) => "200".to_owned(),
                Err(e) => e.code_label(),
            };
            o.request(verb, &code, started.elapsed());
            if result.is_ok() && request.op != Op::Read {
                o.write(request.kind);
            }
        }
        match &result {
            Err(StoreError::Rejected { .. }) => {
                error!(lease = %name, error = %result.as_ref().err().unwrap(), "{verb} rejected; this is a configuration problem")
            }
            Err(StoreError::Conflict | StoreError::AlreadyExists | StoreError::NotFound) => {
                debug!(lease = %name, "{verb}: someone else wrote first")
            }
            Err(e) => warn!(lease = %name, error = %e, "{verb} failed; will retry"),
            Ok(_) => {}
        }
        self.apply(Input::Answer {
            request,
            sent,
            result,
        });
    }

    fn apply(&mut self, input: Input) {
        let out = self.group.apply(input, clock::now());
        self.tx.send_replace(self.group.view());
        for t in out {
            match &t {
                ShardTransition::Acquired { shard, epoch } => {
                    info!(shard, epoch, "owns shard")
                }
                ShardTransition::Lost { shard, epoch, why } => {
                    info!(shard, epoch, reason = why.as_str(), "stopped owning shard")
                }
                ShardTransition::Moved { moves, gen } => {
                    let moves: BTreeMap<&str, usize> =
                        moves.iter().map(|(k, v)| (k.as_str(), *v)).collect();
                    info!(gen, ?moves, "wrote a new shard assignment")
                }
                ShardTransition::Mismatch {
                    group_shards: Some(n),
                } => error!(
                    group_shards = n,
                    mine = self.group.params().shards,
                    "this replica was started with another --shards than its group: it owns no shard and does not coordinate; fix: start every replica of the group with the same --shards"
                ),
                ShardTransition::Mismatch { group_shards: None } => {
                    info!("the group's shard count agrees with --shards again")
                }
                ShardTransition::ReleaseFinished(ok) => {
                    for reply in self.replies.drain(..) {
                        let _ = reply.send(*ok);
                    }
                }
            }
            if let Some(o) = &self.observer {
                o.transition(&t);
            }
        }
    }
}

/// The coordinator's tenure, forwarded as inputs: now, and on every change.
async fn forward_coordinator(
    mut rx: watch::Receiver<Option<Tenure>>,
    tx: mpsc::Sender<Input>,
    stop: CancellationToken,
) {
    loop {
        let t = *rx.borrow_and_update();
        if tx.send(Input::Coordinator(t)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = rx.changed() => if r.is_err() { return },
        }
    }
}

/// List the group, then follow its watch from the list's resourceVersion; list again whenever
/// the watch breaks, expires or stays silent.
async fn list_and_watch<S: GroupStore>(
    store: S,
    tx: mpsc::Sender<Input>,
    retry_period: Duration,
    call_timeout: Duration,
    silence: Duration,
    observer: Option<Arc<dyn ShardObserver>>,
    stop: CancellationToken,
) {
    let observe = |verb: &str, r: &Result<(), StoreError>, took: Duration| {
        if let Some(o) = &observer {
            let code = match r {
                Ok(()) => "200".to_owned(),
                Err(e) => e.code_label(),
            };
            o.request(verb, &code, took);
        }
    };
    loop {
        if stop.is_cancelled() {
            return;
        }
        let t = Instant::now();
        let listed =
            timeout(call_timeout, store.list())
                .await
                .unwrap_or(Err(StoreError::TimedOut {
                    after: call_timeout,
                }));
        observe(
            "list",
            &listed.as_ref().map(|_| ()).map_err(Clone::clone),
            t.elapsed(),
        );
        let rv = match listed {
            Ok((items, rv)) => {
                if tx.send(Input::Synced(items)).await.is_err() {
                    return;
                }
                rv
            }
            Err(e) => {
                warn!(error = %e, "listing the group's leases failed; will retry");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(jitter(retry_period / 2)) => continue,
                }
            }
        };
        let t = Instant::now();
        let stream =
            timeout(call_timeout, store.watch(rv))
                .await
                .unwrap_or(Err(StoreError::TimedOut {
                    after: call_timeout,
                }));
        observe(
            "watch",
            &stream.as_ref().map(|_| ()).map_err(Clone::clone),
            t.elapsed(),
        );
        let mut stream = match stream {
            Ok(s) => s,
            Err(e) => {
                warn!(error = %e, "watching the group's leases failed; will list again");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(jitter(retry_period / 2)) => continue,
                }
            }
        };
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => return,
                n = timeout(silence, stream.next()) => n,
            };
            let input = match next {
                Ok(Some(Ok(GroupEvent::Put(lease)))) => Input::Put(lease),
                Ok(Some(Ok(GroupEvent::Deleted(name)))) => Input::Deleted(name),
                Ok(Some(Ok(GroupEvent::Bookmark(_)))) => continue,
                Ok(Some(Ok(GroupEvent::Expired))) => break,
                Ok(Some(Err(e))) => {
                    debug!(error = %e, "the group's watch broke; listing again");
                    break;
                }
                Ok(None) | Err(_) => break,
            };
            if tx.send(input).await.is_err() {
                return;
            }
        }
    }
}

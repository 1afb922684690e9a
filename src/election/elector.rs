//! The campaign loop: carries out [`decide`]'s steps against a [`LeaseStore`], follows the
//! Lease's watch stream, publishes the leader state, and releases the lease on shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::record::StoredLease;
use super::state::{
    decide, release_record, ElectionState, Known, LossReason, Params, Source, Step,
};
use super::store::{LeaseStore, StoreError, WatchEvent};
use crate::metrics::Metrics;
use crate::status::{Lead, LeaderState, StatusTx};

/// Everything the elector needs besides the store.
#[derive(Clone, Debug)]
pub struct ElectorConfig {
    /// Identity and timing.
    pub params: Params,
    /// Release the lease on shutdown.
    pub release_on_shutdown: bool,
    /// Timeout of every request (at most renew-deadline / 2).
    pub call_timeout: Duration,
    /// How long a watch may stay silent before it is re-established.
    pub watch_silence: Duration,
    /// Upper bound of the random offset added to every expiry this candidate waits out, so that
    /// many followers do not all write at once when a record expires.
    pub takeover_spread: Duration,
}

impl ElectorConfig {
    /// Defaults derived from `params`: calls time out after renew-deadline / 2, followers spread
    /// their takeovers over min(retry-period / 4, 50 ms), a watch silent for 75 s is
    /// re-established (the store asks the server to end watches after 60 s).
    pub fn new(params: Params) -> Self {
        ElectorConfig {
            call_timeout: params.renew_deadline / 2,
            release_on_shutdown: true,
            watch_silence: Duration::from_secs(75),
            takeover_spread: (params.retry_period / 4).min(Duration::from_millis(50)),
            params,
        }
    }
}

/// Something that happens to the elector that observers (metrics, events, hooks) may care about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    /// This candidate started a tenure.
    Acquired {
        /// Its epoch.
        epoch: i64,
    },
    /// This candidate's tenure ended.
    Lost {
        /// Why.
        reason: LossReason,
        /// The epoch of the tenure that ended.
        epoch: Option<i64>,
    },
    /// The holder named by the Lease changed (to this candidate, another, or none).
    NewLeader {
        /// The new holder.
        leader: Option<String>,
        /// Its epoch.
        epoch: Option<i64>,
    },
}

/// The answer to a release asked through [`Control::release`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReleaseOutcome {
    /// This candidate stepped down and the release was written.
    Released {
        /// The epoch of the tenure that ended.
        epoch: i64,
    },
    /// This candidate stepped down, but the release could not be written; followers take over
    /// once the lease expires.
    NotWritten {
        /// The epoch of the tenure that ended.
        epoch: i64,
        /// Why the write failed.
        error: String,
    },
    /// This candidate was not leading; nothing was done.
    NotLeader,
    /// The elector is shutting down or gone.
    Unavailable,
}

/// Requests to a running elector.
#[derive(Debug)]
enum Command {
    Release(oneshot::Sender<ReleaseOutcome>),
}

/// A handle to ask a running elector for things (the `POST /leader/release` of the API).
#[derive(Clone, Debug)]
pub struct Control {
    tx: mpsc::Sender<Command>,
}

impl Control {
    /// Step down and release the lease; answers once the release is written (or failed).
    pub async fn release(&self) -> ReleaseOutcome {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Release(reply)).await.is_err() {
            return ReleaseOutcome::Unavailable;
        }
        rx.await.unwrap_or(ReleaseOutcome::Unavailable)
    }
}

/// Messages from the watch task.
#[allow(clippy::large_enum_variant)] // a handful in flight at most
#[derive(Debug)]
enum WatchMsg {
    Up,
    Down,
    Event(WatchEvent),
}

/// The elector for one Lease.
pub struct Elector<S: LeaseStore> {
    cfg: ElectorConfig,
    store: S,
    status: StatusTx,
    state: ElectionState,
    observed_wall: Option<SystemTime>,
    last_holder: Option<String>,
    transitions: Vec<mpsc::UnboundedSender<Transition>>,
    commands: Option<mpsc::Receiver<Command>>,
    metrics: Option<Arc<Metrics>>,
    stuck_logged: bool,
    last_rv: Option<Option<String>>,
    last_epoch: Option<i64>,
}

/// Run one request under `limit`, counting it in `metrics`; a timeout becomes `Unavailable`.
async fn timed<T>(
    metrics: Option<Arc<Metrics>>,
    verb: &str,
    limit: Duration,
    fut: impl Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    let started = Instant::now();
    let r = timeout(limit, fut).await;
    if let Some(m) = metrics {
        let code = match &r {
            Ok(Ok(_)) if verb == "create" => "201".to_owned(),
            Ok(Ok(_)) => "200".to_owned(),
            Ok(Err(e)) => e.code_label(),
            Err(_) => "timeout".to_owned(),
        };
        m.request(verb, &code, started.elapsed());
    }
    r.unwrap_or_else(|_| {
        Err(StoreError::unavailable(format!(
            "no answer within {}",
            humantime::format_duration(limit)
        )))
    })
}

/// A step, shortly, for trace logs.
struct StepName<'a>(&'a Step);

impl std::fmt::Debug for StepName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            Step::Wait(t) => write!(f, "Wait({t:?})"),
            Step::Read => write!(f, "Read"),
            Step::Create(_) => write!(f, "Create"),
            Step::Write { renew, base, .. } => {
                write!(f, "Write(renew={renew}, base={})", base.resource_version)
            }
            Step::Stuck { why, .. } => write!(f, "Stuck({why})"),
            Step::HandOver { to } => write!(f, "HandOver({to})"),
            Step::Announce { base, .. } => write!(f, "Announce(base={})", base.resource_version),
            Step::RaiseEpoch { base, .. } => {
                write!(f, "RaiseEpoch(base={})", base.resource_version)
            }
        }
    }
}

/// When to wake for something due at `t`: one millisecond later, because tokio's timer has
/// millisecond ticks and may otherwise wake a hair before `t`, when nothing is due yet (on a
/// paused test clock that would spin forever).
fn wake_at(t: Instant) -> Instant {
    t + Duration::from_millis(1)
}

/// `d` stretched by a random factor in [1, 1.2), so candidates do not act in lockstep.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(1.0 + fastrand::f64() * 0.2)
}

impl<S: LeaseStore> Elector<S> {
    /// An elector that publishes to `status`.
    pub fn new(store: S, cfg: ElectorConfig, status: StatusTx) -> Self {
        let mut state = ElectionState::new();
        state.takeover_delay = cfg.takeover_spread.mul_f64(fastrand::f64());
        Elector {
            cfg,
            store,
            status,
            state,
            observed_wall: None,
            last_holder: None,
            transitions: Vec::new(),
            commands: None,
            metrics: None,
            stuck_logged: false,
            last_rv: None,
            last_epoch: None,
        }
    }

    /// Also count requests, transitions and changes in `metrics`.
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Also report every [`Transition`] on `tx` (may be called more than once).
    pub fn with_transitions(mut self, tx: mpsc::UnboundedSender<Transition>) -> Self {
        self.transitions.push(tx);
        self
    }

    /// A handle through which the elector can be asked to release the lease.
    pub fn control(&mut self) -> Control {
        let (tx, rx) = mpsc::channel(8);
        self.commands = Some(rx);
        Control { tx }
    }

    fn params(&self) -> &Params {
        &self.cfg.params
    }

    fn publish(&mut self) {
        let lease = self.state.lease();
        // While we hold a tenure we are the leader, even if a watch event already shows another
        // holder that a read has yet to confirm: publishing both "leader: other" and
        // "is_leader: true" would contradict itself.
        let tenure_epoch = self.state.tenure.as_ref().map(|t| t.epoch);
        let holder = match tenure_epoch {
            Some(_) => Some(self.cfg.params.identity.clone()),
            None => lease.and_then(|l| l.record.holder.clone()),
        };
        let epoch = tenure_epoch.or_else(|| {
            holder
                .as_ref()
                .and(lease.and_then(|l| l.record.transitions))
        });
        let ready = !matches!(self.state.known, Known::Unknown);
        if ready {
            let rv = lease.map(|l| l.resource_version.clone());
            if self.last_rv.as_ref() != Some(&rv) {
                if self.last_rv.is_some() {
                    if let Some(m) = &self.metrics {
                        m.observed_change(SystemTime::now());
                    }
                }
                self.last_rv = Some(rv);
            }
        }
        if holder != self.last_holder {
            if let Some(h) = &holder {
                info!(leader = %h, ?epoch, "observed new leader");
            }
            if let Some(m) = &self.metrics {
                m.leader_changed();
            }
            self.last_holder = holder.clone();
            self.emit(Transition::NewLeader {
                leader: holder.clone(),
                epoch,
            });
        }
        let state = LeaderState {
            ready,
            epoch,
            leader: holder,
            lease_uid: lease.and_then(|l| l.uid.clone()),
            lead: self.state.tenure.as_ref().map(|t| Lead {
                epoch: t.epoch,
                valid_until: t.valid_until,
            }),
            observed_at: self.observed_wall,
        };
        self.status.publish(state);
    }

    fn emit(&self, t: Transition) {
        if let Some(m) = &self.metrics {
            match t {
                Transition::Acquired { .. } => m.acquired(),
                Transition::Lost { reason, .. } => m.lost(reason),
                Transition::NewLeader { .. } => {}
            }
        }
        for tx in &self.transitions {
            let _ = tx.send(t.clone());
        }
    }

    fn lost(&mut self, reason: LossReason) {
        info!(epoch = ?self.last_epoch, reason = reason.as_str(), "stopped leading");
        self.emit(Transition::Lost {
            reason,
            epoch: self.last_epoch,
        });
    }

    fn failed(&mut self, what: &str, e: &StoreError) {
        match e {
            StoreError::Rejected { .. } => {
                error!(error = %e, "{what} rejected; this is a configuration problem")
            }
            _ => warn!(error = %e, "{what} failed; will retry"),
        }
        let wait = e
            .retry_after()
            .map(|d| d.min(Duration::from_secs(60)))
            .unwrap_or_else(|| jitter(self.params().retry_period / 2));
        self.state.not_before = Some(Instant::now() + wait);
    }

    fn observed(&mut self) {
        self.observed_wall = Some(SystemTime::now());
    }

    fn on_watch(&mut self, msg: WatchMsg) {
        let now = Instant::now();
        match msg {
            WatchMsg::Up => {
                self.state.watch_up = true;
                self.state.poll_at = None;
            }
            WatchMsg::Down => {
                if self.state.watch_up || self.state.poll_at.is_none() {
                    self.state.poll_at = Some(now);
                }
                self.state.watch_up = false;
            }
            WatchMsg::Event(WatchEvent::Put(lease)) => {
                self.observed();
                let params = self.cfg.params.clone();
                if let Some(r) = self.state.observe(lease, now, &params, Source::Watch) {
                    self.lost(r);
                }
            }
            WatchMsg::Event(WatchEvent::Deleted) => {
                self.observed();
                self.state.observe_absent(now);
            }
            WatchMsg::Event(_) => {}
        }
    }

    /// Run one request under the call timeout, ending our claim on time even while it hangs.
    /// `None` when shutdown came first.
    async fn call<T>(
        &mut self,
        verb: &str,
        fut: impl Future<Output = Result<T, StoreError>>,
        shutdown: &CancellationToken,
    ) -> Option<Result<T, StoreError>> {
        let limit = self.cfg.call_timeout;
        let fut = timed(self.metrics.clone(), verb, limit, fut);
        tokio::pin!(fut);
        loop {
            let deadline = self.state.tenure.as_ref().map(|t| t.valid_until);
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return None,
                r = &mut fut => {
                    return Some(r);
                }
                _ = sleep_until(wake_at(deadline.unwrap_or_else(Instant::now))), if deadline.is_some() => {
                    if let Some(r) = self.state.expire(Instant::now()) {
                        self.lost(r);
                        self.publish();
                    }
                }
            }
        }
    }

    fn after_read(&mut self) {
        if !self.state.watch_up {
            self.state.poll_at = Some(Instant::now() + jitter(self.params().retry_period));
        }
    }

    fn after_write(
        &mut self,
        res: Result<StoredLease, StoreError>,
        sent: Instant,
        renew: bool,
        what: &str,
    ) {
        let params = self.cfg.params.clone();
        let was_leading = self.state.tenure.is_some();
        match res {
            Ok(lease) => {
                self.observed();
                let epoch = self.state.wrote(lease, sent, Instant::now(), &params);
                match (was_leading, epoch) {
                    (false, Some(epoch)) => {
                        self.last_epoch = Some(epoch);
                        info!(epoch, "became leader");
                        self.emit(Transition::Acquired { epoch });
                    }
                    (true, None) => self.lost(LossReason::RenewDeadline),
                    _ => {}
                }
            }
            Err(StoreError::Conflict) | Err(StoreError::AlreadyExists) => {
                debug!(renew, "{what}: someone else wrote first; re-reading");
                self.state.stale = true;
            }
            Err(StoreError::NotFound) => {
                self.observed();
                self.state.observe_absent(Instant::now());
                if self.state.step_down() {
                    self.lost(LossReason::Deleted);
                }
            }
            Err(e) => self.failed(what, &e),
        }
    }

    /// The answer to a write that starts nothing (an announcement, an epoch raise): the object
    /// it made is observed like anyone's. Returns it when the write succeeded.
    fn after_plain_write(
        &mut self,
        res: Result<(StoredLease, bool), StoreError>,
        what: &str,
    ) -> Option<StoredLease> {
        let now = Instant::now();
        match res {
            Ok((lease, _)) => {
                self.observed();
                let params = self.cfg.params.clone();
                self.state
                    .observe(lease.clone(), now, &params, Source::Direct);
                Some(lease)
            }
            Err(StoreError::Conflict) => {
                self.state.stale = true;
                None
            }
            Err(StoreError::NotFound) => {
                self.observed();
                self.state.observe_absent(now);
                None
            }
            Err(e) => {
                self.failed(what, &e);
                None
            }
        }
    }

    /// Campaign until `shutdown` is cancelled, then release (if configured and leading).
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (tx, mut rx) = mpsc::channel(256);
        let watch_stop = shutdown.child_token();
        let watch = tokio::spawn(watch_loop(
            self.store.clone(),
            tx,
            self.cfg.params.retry_period,
            self.cfg.call_timeout,
            self.cfg.watch_silence,
            self.metrics.clone(),
            watch_stop.clone(),
        ));
        let mut watch_gone = false;
        loop {
            let now = Instant::now();
            if let Some(r) = self.state.expire(now) {
                self.lost(r);
            }
            self.publish();
            let step = decide(&self.state, &self.cfg.params, now, SystemTime::now());
            tracing::trace!(id = %self.cfg.params.identity, ?now, step = ?StepName(&step), "step");
            let until = match step {
                Step::Wait(until) => Some(until),
                Step::Stuck { until, why } => {
                    if !self.stuck_logged {
                        error!("cannot take over the lease: {why}");
                        self.stuck_logged = true;
                    }
                    Some(until)
                }
                _ => None,
            };
            if let Some(until) = until {
                tokio::select! {
                    biased;
                    _ = shutdown.cancelled() => break,
                    // The watch task ends only on shutdown (its token is a child of ours).
                    msg = rx.recv(), if !watch_gone => match msg {
                        Some(m) => self.on_watch(m),
                        None => watch_gone = true,
                    },
                    Some(cmd) = recv_command(&mut self.commands) => match cmd {
                        Command::Release(reply) => {
                            let outcome = match self.release(LossReason::Released, None).await {
                                None => ReleaseOutcome::NotLeader,
                                Some((epoch, Ok(()))) => ReleaseOutcome::Released { epoch },
                                Some((epoch, Err(e))) => ReleaseOutcome::NotWritten {
                                    epoch,
                                    error: e.to_string(),
                                },
                            };
                            let _ = reply.send(outcome);
                        }
                    },
                    _ = sleep_until(wake_at(until)) => {}
                }
                continue;
            }
            self.stuck_logged = false;
            let store = self.store.clone();
            match step {
                Step::Read => {
                    let Some(res) = self.call("get", store.get(), &shutdown).await else {
                        break;
                    };
                    let params = self.cfg.params.clone();
                    match res {
                        Ok(lease) => {
                            self.observed();
                            if let Some(r) =
                                self.state
                                    .observe(lease, Instant::now(), &params, Source::Direct)
                            {
                                self.lost(r);
                            }
                        }
                        Err(StoreError::NotFound) => {
                            self.observed();
                            self.state.observe_absent(Instant::now());
                        }
                        Err(e) => self.failed("reading the lease", &e),
                    }
                    self.after_read();
                }
                Step::Create(record) => {
                    let obj = super::record::new_lease_object(&record);
                    debug!(epoch = ?record.transitions, "the lease is missing; creating it without a holder");
                    let Some(res) = self.call("create", store.create(obj), &shutdown).await else {
                        break;
                    };
                    match res {
                        // Rule 4: creating is not claiming. Its only precondition is "absent",
                        // which says nothing about a holder whose record was deleted meanwhile.
                        Ok(lease) => {
                            info!(
                                epoch = ?lease.record.transitions,
                                "created the missing lease without a holder; it is taken like any record after one lease duration"
                            );
                            self.observed();
                            let params = self.cfg.params.clone();
                            self.state.created(lease, Instant::now(), &params);
                        }
                        res => self.after_write(res, Instant::now(), false, "creating the lease"),
                    }
                }
                Step::Write {
                    base,
                    record,
                    renew,
                } => {
                    let obj = base.replaced_with(&record);
                    let sent = Instant::now();
                    let Some(res) = self.call("update", store.replace(obj), &shutdown).await else {
                        break;
                    };
                    let what = if renew {
                        "renewing the lease"
                    } else {
                        "acquiring the lease"
                    };
                    let now = Instant::now();
                    let claiming = self
                        .state
                        .tenure
                        .as_ref()
                        .is_some_and(|t| now < t.valid_until);
                    match res {
                        // Create-on-update: the Lease had been deleted, so the apiserver created
                        // it from this PUT without checking its resourceVersion (rule 3). Unless
                        // our claim still runs (then nobody else can have started one), the
                        // write says nothing about who else leads: it starts no tenure, and the
                        // record it made is waited out like anyone's (rule 8).
                        Ok((lease, true)) if !claiming => {
                            warn!("{what}: the lease had been deleted and this write recreated it unchecked; waiting it out");
                            if let Some(r) = self.state.expire(now) {
                                self.lost(r);
                            }
                            self.observed();
                            let params = self.cfg.params.clone();
                            self.state.observe(lease, now, &params, Source::Direct);
                        }
                        res => self.after_write(res.map(|(l, _)| l), sent, renew, what),
                    }
                }
                Step::HandOver { to } => {
                    info!(to = %to, "a candidate of higher priority is announced; handing over");
                    self.release(LossReason::HandedOver, Some(to)).await;
                }
                Step::Announce { base, record } => {
                    debug!(
                        priority = params_priority(&record),
                        "announcing as a candidate of higher priority"
                    );
                    let obj = base.replaced_with(&record);
                    let Some(res) = self.call("update", store.replace(obj), &shutdown).await else {
                        break;
                    };
                    if let Some(lease) = self.after_plain_write(res, "announcing the candidacy") {
                        info!(holder = ?lease.record.holder, "announced as a candidate of higher priority");
                    }
                }
                Step::RaiseEpoch { base, record } => {
                    let obj = base.replaced_with(&record);
                    let Some(res) = self.call("update", store.replace(obj), &shutdown).await else {
                        break;
                    };
                    if let Some(lease) =
                        self.after_plain_write(res, "raising the epoch of the lease")
                    {
                        info!(
                            from = ?base.record.transitions,
                            to = ?lease.record.transitions,
                            "raised the epoch of the lease (it had no holder and a lower epoch than seen before, e.g. after a deletion)"
                        );
                    }
                }
                Step::Wait(_) | Step::Stuck { .. } => unreachable!("handled above"),
            }
        }
        tracing::trace!(id = %self.cfg.params.identity, "campaign loop ended");
        watch_stop.cancel();
        watch.abort();
        if self.cfg.release_on_shutdown {
            self.release(LossReason::Shutdown, None).await;
        } else if self.state.step_down() {
            self.lost(LossReason::Shutdown);
        }
        self.publish();
    }

    /// Stop claiming, then clear the holder (naming `to`, if given, as the one to take over)
    /// so that a follower takes over at once; keep out for a lease duration. `None` when not
    /// leading; else the tenure's epoch and whether the release was written.
    async fn release(
        &mut self,
        reason: LossReason,
        to: Option<String>,
    ) -> Option<(i64, Result<(), StoreError>)> {
        let params = self.cfg.params.clone();
        // Stop claiming *before* the release can reach anyone.
        let mut tenure = self.state.release(Instant::now(), &params)?;
        let epoch = tenure.epoch;
        self.publish();
        self.lost(reason);
        for _ in 0..3 {
            let record = release_record(&params, &tenure, to.clone(), SystemTime::now());
            let obj = tenure.base.replaced_with(&record);
            let (m, limit) = (self.metrics.clone(), self.cfg.call_timeout);
            match timed(m.clone(), "update", limit, self.store.replace(obj)).await {
                Ok((lease, _)) => {
                    info!(identity = %params.identity, epoch, to = ?to, reason = reason.as_str(), "released the lease");
                    self.observed();
                    self.state
                        .observe(lease, Instant::now(), &params, Source::Direct);
                    self.publish();
                    return Some((epoch, Ok(())));
                }
                Err(StoreError::Conflict) => {
                    // Our in-flight renew may have landed; release from the newest version if
                    // it still names us under our epoch.
                    match timed(m, "get", limit, self.store.get()).await {
                        Ok(lease)
                            if lease.record.holder.as_deref() == Some(params.identity.as_str())
                                && lease.record.transitions == Some(tenure.epoch) =>
                        {
                            tenure.base = lease;
                        }
                        Ok(lease) => {
                            info!("lease no longer ours; nothing to release");
                            self.observed();
                            self.state
                                .observe(lease, Instant::now(), &params, Source::Direct);
                            return Some((epoch, Err(StoreError::Conflict)));
                        }
                        Err(e) => return Some((epoch, Err(e))),
                    }
                }
                Err(e) => {
                    warn!(error = %e, "could not release the lease; followers will take over after it expires");
                    return Some((epoch, Err(e)));
                }
            }
        }
        Some((epoch, Err(StoreError::Conflict)))
    }
}

/// The next command, or never when there is no command channel (or it is closed).
async fn recv_command(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => match rx.recv().await {
            Some(c) => Some(c),
            None => {
                *commands = None;
                std::future::pending().await
            }
        },
        None => std::future::pending().await,
    }
}

fn params_priority(record: &super::record::LeaseRecord) -> Option<i64> {
    record.candidate.as_ref().map(|c| c.0)
}

/// Follow the Lease's watch stream and forward what it says to the elector. Re-watches from
/// the last resourceVersion when the stream ends or stays silent, lists again (watch from
/// scratch) on 410, and reports Down while it cannot watch so that followers poll instead.
async fn watch_loop<S: LeaseStore>(
    store: S,
    tx: mpsc::Sender<WatchMsg>,
    retry_period: Duration,
    call_timeout: Duration,
    silence: Duration,
    metrics: Option<Arc<Metrics>>,
    stop: CancellationToken,
) {
    let mut rv: Option<String> = None;
    let mut failures: u32 = 0;
    let mut started_once = false;
    let run = async {
        loop {
            let started = Instant::now();
            let res = timeout(call_timeout, store.watch(rv.clone())).await;
            if let Some(m) = &metrics {
                let code = match &res {
                    Ok(Ok(_)) => "200".to_owned(),
                    Ok(Err(e)) => e.code_label(),
                    Err(_) => "timeout".to_owned(),
                };
                m.request("watch", &code, started.elapsed());
                if res.as_ref().is_ok_and(|r| r.is_ok()) && started_once {
                    m.watch_restarted();
                }
            }
            let stream = match res {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    failures += 1;
                    if failures == 1 {
                        warn!(error = %e, "cannot watch the lease; polling every retry period instead");
                    }
                    if tx.send(WatchMsg::Down).await.is_err() {
                        return;
                    }
                    let backoff = retry_period * failures.min(15);
                    sleep(jitter(backoff)).await;
                    continue;
                }
                Err(_) => {
                    failures += 1;
                    if tx.send(WatchMsg::Down).await.is_err() {
                        return;
                    }
                    sleep(jitter(retry_period)).await;
                    continue;
                }
            };
            if failures > 0 {
                info!("watching the lease again");
            }
            started_once = true;
            failures = 0;
            if tx.send(WatchMsg::Up).await.is_err() {
                return;
            }
            let mut stream = stream;
            loop {
                match timeout(silence, stream.next()).await {
                    Err(_) => {
                        debug!(
                            "watch silent for {}; re-watching",
                            humantime::format_duration(silence)
                        );
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        debug!(error = %e, "watch stream failed; re-watching");
                        break;
                    }
                    Ok(Some(Ok(ev))) => {
                        match &ev {
                            WatchEvent::Put(l) => rv = Some(l.resource_version.clone()),
                            WatchEvent::Bookmark(r) => {
                                rv = Some(r.clone());
                                continue;
                            }
                            WatchEvent::Expired => {
                                debug!("watch resourceVersion expired; watching from scratch");
                                rv = None;
                                break;
                            }
                            WatchEvent::Deleted => {}
                        }
                        if tx.send(WatchMsg::Event(ev)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = run => {}
    }
}

//! The executor: runs the [`Machine`]'s steps against a [`LeaseStore`] under the call timeout,
//! follows the Lease's watch stream, applies every outcome, and hands the machine's view and
//! transitions to a [`Publisher`]. It makes no election decision of its own.

use std::future::Future;
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::clock;
use super::record::new_lease_object;
use super::state::{
    LossReason, Machine, Outcome, Params, ReleaseOutcome, Request, Step, Transition, View,
};
use super::store::{LeaseStore, StoreError, WatchEvent};

/// Everything the elector needs besides the store.
#[derive(Clone, Debug)]
pub struct ElectorConfig {
    /// Identity and timing.
    pub params: Params,
    /// Release the lease on shutdown.
    pub release_on_shutdown: bool,
    /// Timeout of every request: renew-deadline / 5 (rule 14).
    pub call_timeout: Duration,
    /// How long a watch may stay silent before it is re-established.
    pub watch_silence: Duration,
}

impl ElectorConfig {
    /// Defaults derived from `params`: calls time out after renew-deadline / 5, a watch silent
    /// for 75 s is re-established (the store asks the server to end watches after 60 s).
    pub fn new(params: Params) -> Self {
        ElectorConfig {
            call_timeout: params.call_timeout(),
            release_on_shutdown: true,
            watch_silence: Duration::from_secs(75),
            params,
        }
    }
}

/// Where the elector hands what the machine tells the world ([`crate::status`] in leaderd).
pub trait Publisher: Send + 'static {
    /// The machine's view after an outcome, and when the Lease was last observed (wall clock).
    fn publish(&mut self, view: View, observed_at: Option<SystemTime>);
    /// A transition, after the view it led to was published.
    fn transition(&mut self, transition: Transition);
}

/// Requests to a running elector (of either backend).
#[derive(Debug)]
pub enum Command {
    /// Step down and release; answer when the release is written (or failed).
    Release(oneshot::Sender<ReleaseOutcome>),
}

/// A handle to ask a running elector for things (the `POST /leader/release` of the API).
#[derive(Clone, Debug)]
pub struct Control {
    tx: mpsc::Sender<Command>,
}

impl Control {
    /// A handle and the receiving end an elector reads its commands from.
    pub fn channel() -> (Control, mpsc::Receiver<Command>) {
        let (tx, rx) = mpsc::channel(8);
        (Control { tx }, rx)
    }

    /// Step down and release the lease; answers once the release is written (or failed).
    pub async fn release(&self) -> ReleaseOutcome {
        let (reply, rx) = oneshot::channel();
        if self.tx.send(Command::Release(reply)).await.is_err() {
            return ReleaseOutcome::Unavailable;
        }
        rx.await.unwrap_or(ReleaseOutcome::Unavailable)
    }
}

/// The elector for one Lease.
pub struct Elector<S: LeaseStore, P: Publisher> {
    cfg: ElectorConfig,
    store: S,
    machine: Machine,
    publisher: P,
    commands: Option<mpsc::Receiver<Command>>,
    /// The app's health (`--app-check`), when leadership follows it.
    app_health: Option<watch::Receiver<bool>>,
    /// The app's release request being carried out.
    reply: Option<oneshot::Sender<ReleaseOutcome>>,
    observed_wall: Option<SystemTime>,
    stuck_logged: bool,
}

/// The tokio timer instant at which to wake for something due at `t` on the election clock
/// (shared by both stores' electors). One millisecond later, because tokio's timer has
/// millisecond ticks and may otherwise wake a hair before `t`, when nothing is due yet (on a
/// paused test clock that would spin forever). While `leading`, at most `retry_period` away, so
/// that a leader notices at once, after a suspend, that its claim ran out (readers already
/// know: they judge the deadline on the same clock).
pub fn timer_for(t: Instant, leading: bool, retry_period: Duration) -> Instant {
    let due = clock::timer_for(t + Duration::from_millis(1));
    if leading {
        due.min(Instant::now() + retry_period)
    } else {
        due
    }
}

/// `d` stretched by a random factor in [1, 1 + JITTER), so candidates do not act in lockstep.
pub fn jitter(d: Duration) -> Duration {
    d.mul_f64(1.0 + fastrand::f64() * super::state::JITTER)
}

impl<S: LeaseStore, P: Publisher> Elector<S, P> {
    /// An elector that hands its view and transitions to `publisher`.
    pub fn new(store: S, cfg: ElectorConfig, publisher: P) -> Self {
        Elector {
            machine: Machine::new(cfg.params.clone(), fastrand::u64(..)),
            cfg,
            store,
            publisher,
            commands: None,
            app_health: None,
            reply: None,
            observed_wall: None,
            stuck_logged: false,
        }
    }

    /// Leadership follows the app's health on `health` (rule 13): never take the lease while it
    /// is false, step down and release when it turns false.
    pub fn with_app_health(mut self, health: watch::Receiver<bool>) -> Self {
        self.machine = self.machine.with_app_check();
        self.app_health = Some(health);
        self
    }

    /// A handle through which the elector can be asked to release the lease.
    pub fn control(&mut self) -> Control {
        let (control, rx) = Control::channel();
        self.commands = Some(rx);
        control
    }

    /// Campaign until `shutdown` is cancelled, then step down (and release, if configured and
    /// leading) and return.
    pub async fn run(mut self, shutdown: CancellationToken) {
        // News from outside the request/answer cycle (the watch, the app's health) arrives on
        // one channel, as outcomes, and is applied as soon as it comes, even mid-request.
        let (tx, mut inputs) = mpsc::channel(256);
        let inputs_stop = CancellationToken::new();
        let mut feeds = vec![tokio::spawn(watch_loop(
            self.store.clone(),
            tx.clone(),
            self.cfg.params.retry_period,
            self.cfg.call_timeout,
            self.cfg.watch_silence,
            inputs_stop.clone(),
        ))];
        if let Some(health) = self.app_health.take() {
            feeds.push(tokio::spawn(forward_health(
                health,
                tx,
                Outcome::AppHealth,
                inputs_stop.clone(),
            )));
        }
        let mut stopping = false;
        loop {
            let now = clock::now();
            self.apply(Outcome::Tick, now);
            let step = self.machine.decide(now, SystemTime::now());
            let until = match step {
                Step::Stopped => break,
                Step::Send(request) => {
                    match self.send(request, &mut inputs, &shutdown, stopping).await {
                        Some(outcome) => self.apply(outcome, clock::now()),
                        None => self.stop(&mut stopping),
                    }
                    continue;
                }
                Step::Wait(until) => until,
                Step::Stuck { until, why } => {
                    if !std::mem::replace(&mut self.stuck_logged, true) {
                        error!("cannot take over the lease: {why}");
                    }
                    until
                }
            };
            let wake = self.timer_for(until);
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !stopping => self.stop(&mut stopping),
                // The feeding tasks end only when stopped.
                Some(outcome) = inputs.recv() => self.apply(outcome, clock::now()),
                Some(cmd) = recv_command(&mut self.commands) => self.command(cmd),
                _ = sleep_until(wake) => {}
            }
        }
        tracing::trace!(id = %self.cfg.params.identity, "campaign loop ended");
        inputs_stop.cancel();
        for feed in feeds {
            feed.abort();
        }
    }

    fn timer_for(&self, t: Instant) -> Instant {
        timer_for(
            t,
            self.machine.tenure().is_some(),
            self.cfg.params.retry_period,
        )
    }

    fn stop(&mut self, stopping: &mut bool) {
        *stopping = true;
        let release = self.cfg.release_on_shutdown;
        self.apply(Outcome::Stop { release }, clock::now());
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Release(reply) => {
                if self.reply.is_some() {
                    // One release at a time; this candidate has already stepped down.
                    let _ = reply.send(ReleaseOutcome::NotLeader);
                    return;
                }
                self.reply = Some(reply);
                self.apply(Outcome::ReleaseAsked, clock::now());
            }
        }
    }

    /// Run one request under the call timeout, applying the clock (rule 2) while it hangs.
    /// `None` when shutdown came first (only while not stopping: a release at shutdown runs to
    /// its answer or its timeout).
    async fn send(
        &mut self,
        request: Request,
        inputs: &mut mpsc::Receiver<Outcome>,
        shutdown: &CancellationToken,
        stopping: bool,
    ) -> Option<Outcome> {
        let store = self.store.clone();
        Some(match request {
            Request::Read => {
                Outcome::Read(self.call(store.get(), inputs, shutdown, stopping).await?)
            }
            Request::Create { record } => {
                let fut = store.create(new_lease_object(&record));
                Outcome::Created(self.call(fut, inputs, shutdown, stopping).await?)
            }
            Request::Replace {
                base,
                record,
                purpose,
            } => {
                let sent = clock::now();
                let fut = store.replace(base.replaced_with(&record));
                let result = self.call(fut, inputs, shutdown, stopping).await?;
                Outcome::Replaced {
                    purpose,
                    sent,
                    result,
                }
            }
        })
    }

    async fn call<T>(
        &mut self,
        fut: impl Future<Output = Result<T, StoreError>>,
        inputs: &mut mpsc::Receiver<Outcome>,
        shutdown: &CancellationToken,
        stopping: bool,
    ) -> Option<Result<T, StoreError>> {
        let limit = self.cfg.call_timeout;
        let fut = timeout(limit, fut);
        tokio::pin!(fut);
        loop {
            let deadline = self.machine.deadline();
            let wake = self.timer_for(deadline.unwrap_or_else(clock::now));
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !stopping => return None,
                r = &mut fut => return Some(r.unwrap_or(Err(StoreError::TimedOut { after: limit }))),
                Some(outcome) = inputs.recv() => self.apply(outcome, clock::now()),
                _ = sleep_until(wake), if deadline.is_some() => {
                    self.apply(Outcome::Tick, clock::now());
                }
            }
        }
    }

    /// Apply one outcome, log what it meant, publish the view, then forward the transitions.
    fn apply(&mut self, outcome: Outcome, now: Instant) {
        if outcome.observes_the_lease() {
            self.observed_wall = Some(SystemTime::now());
        }
        log_outcome(&outcome);
        let transitions = self.machine.apply(outcome, now);
        self.publisher
            .publish(self.machine.view(), self.observed_wall);
        for t in transitions {
            log_transition(&self.cfg.params.identity, &t);
            if let Transition::ReleaseFinished(outcome) = &t {
                if let Some(reply) = self.reply.take() {
                    let _ = reply.send(outcome.clone());
                }
            }
            self.publisher.transition(t);
        }
    }
}

fn log_outcome(outcome: &Outcome) {
    let (what, result) = match outcome {
        Outcome::Read(Err(e)) => ("reading the lease", e),
        Outcome::Created(Err(e)) => ("creating the lease", e),
        Outcome::Created(Ok(lease)) => {
            info!(epoch = ?lease.record.transitions, "created the missing lease without a holder; it is taken like any record after one lease duration");
            return;
        }
        Outcome::Replaced {
            purpose,
            result: Err(e),
            ..
        } => (purpose.describe(), e),
        Outcome::Replaced {
            purpose,
            result: Ok((_, true)),
            ..
        } => {
            warn!(
                "{}: the lease had been deleted and the store created it from this write (create-on-update, which the apiserver refuses to a write that carries the uid); it starts no tenure, ends any, and is waited out",
                purpose.describe()
            );
            return;
        }
        _ => return,
    };
    match result {
        StoreError::NotFound => debug!("{what}: the lease does not exist"),
        StoreError::Conflict | StoreError::AlreadyExists => {
            debug!("{what}: someone else wrote first; re-reading")
        }
        StoreError::Rejected { .. } => {
            error!(error = %result, "{what} rejected; this is a configuration problem")
        }
        _ => warn!(error = %result, "{what} failed; will retry"),
    }
}

fn log_transition(identity: &str, t: &Transition) {
    match t {
        Transition::Acquired { epoch } => info!(epoch, "became leader"),
        Transition::Lost { reason, epoch } => {
            if *reason == LossReason::HandedOver {
                info!("a candidate of higher priority is announced; handing over");
            }
            info!(?epoch, reason = reason.as_str(), "stopped leading")
        }
        Transition::NewLeader {
            leader: Some(leader),
            epoch,
        } => info!(%leader, ?epoch, "observed new leader"),
        Transition::NewLeader { .. } => {}
        Transition::ReleaseFinished(ReleaseOutcome::Released { epoch }) => {
            info!(%identity, epoch, "released the lease")
        }
        Transition::ReleaseFinished(ReleaseOutcome::NotWritten { epoch, error }) => {
            warn!(epoch, %error, "could not release the lease; followers will take over after it expires")
        }
        Transition::ReleaseFinished(_) => {}
    }
}

/// The next command, or never when there is no command channel (or it is closed).
pub async fn recv_command(commands: &mut Option<mpsc::Receiver<Command>>) -> Option<Command> {
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

/// Forward the app's health to an elector as its outcomes (`wrap(healthy)`): its value now,
/// then every change. Shared by both stores' electors.
pub async fn forward_health<O: Send + 'static>(
    mut health: watch::Receiver<bool>,
    tx: mpsc::Sender<O>,
    wrap: fn(bool) -> O,
    stop: CancellationToken,
) {
    loop {
        let now = *health.borrow_and_update();
        if tx.send(wrap(now)).await.is_err() {
            return;
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            r = health.changed() => if r.is_err() { return },
        }
    }
}

/// Follow the Lease's watch stream and forward what it says to the elector as outcomes.
/// Re-watches from the last resourceVersion when the stream ends or stays silent, lists again
/// (watch from scratch) on 410, and reports [`Outcome::WatchDown`] while it cannot watch so that
/// followers poll instead.
async fn watch_loop<S: LeaseStore>(
    store: S,
    tx: mpsc::Sender<Outcome>,
    retry_period: Duration,
    call_timeout: Duration,
    silence: Duration,
    stop: CancellationToken,
) {
    let mut rv: Option<String> = None;
    let mut failures: u32 = 0;
    let run = async {
        loop {
            let stream = match timeout(call_timeout, store.watch(rv.clone())).await {
                Ok(Ok(s)) => s,
                res => {
                    failures += 1;
                    if let (1, Ok(Err(e))) = (failures, &res) {
                        warn!(error = %e, "cannot watch the lease; polling every retry period instead");
                    }
                    if tx.send(Outcome::WatchDown).await.is_err() {
                        return;
                    }
                    let backoff = match res {
                        Ok(Err(_)) => retry_period * failures.min(15),
                        _ => retry_period,
                    };
                    sleep(jitter(backoff)).await;
                    continue;
                }
            };
            if failures > 0 {
                info!("watching the lease again");
            }
            failures = 0;
            if tx.send(Outcome::WatchUp).await.is_err() {
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
                        if tx.send(Outcome::Watch(ev)).await.is_err() {
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

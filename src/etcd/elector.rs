//! The etcd executor: runs the [`Campaign`]'s steps with etcd-client under the call timeout,
//! follows the prefix's watch, applies every outcome, and hands the view and transitions to the
//! same [`Publisher`] as the Kubernetes elector. It makes no election decision of its own.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, GetOptions, PutOptions, SortOrder, SortTarget,
    TxnOp, TxnOpResponse, WatchOptions,
};
use tokio::sync::{mpsc, watch};
use tokio::time::{sleep, sleep_until, timeout, Instant};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, info, warn};

use super::campaign::{Campaign, Candidate, Outcome, Request, Snapshot, Step};
use super::error::EtcdError;
pub use crate::config::EtcdTls;
use crate::election::{
    clock, forward_health, jitter, recv_command, Command, Control, LossReason, Params, Publisher,
    ReleaseOutcome, Transition,
};

/// Everything the etcd elector needs besides the params.
#[derive(Clone, Debug)]
pub struct EtcdConfig {
    /// `--etcd-endpoints`.
    pub endpoints: Vec<String>,
    /// `<--etcd-prefix><--lease-name>/`.
    pub key_prefix: String,
    /// TLS material, when any TLS flag is given.
    pub tls: Option<EtcdTls>,
    /// Revoke the lease on shutdown.
    pub release_on_shutdown: bool,
    /// Timeout of every call: renew-deadline / 5.
    pub call_timeout: Duration,
}

/// Called with every etcd call's verb, result code and duration (leaderd feeds its metrics).
pub type CallObserver = Arc<dyn Fn(&'static str, &str, Duration) + Send + Sync>;

/// The elector for one etcd election.
pub struct EtcdElector<P: Publisher> {
    cfg: EtcdConfig,
    client: Client,
    campaign: Campaign,
    publisher: P,
    commands: Option<mpsc::Receiver<Command>>,
    app_health: Option<watch::Receiver<bool>>,
    reply: Option<tokio::sync::oneshot::Sender<ReleaseOutcome>>,
    observed_wall: Option<SystemTime>,
    observer: Option<CallObserver>,
    params: Params,
    /// The lease last granted and its TTL (what a keep-alive restores).
    granted: Option<(i64, i64)>,
}

/// How often the HTTP/2 connection to etcd is pinged (above etcd's 5 s minimum).
const PING_INTERVAL: Duration = Duration::from_secs(10);

/// Connect lazily (nothing is sent before the first call): the endpoints, TLS and HTTP/2 pings.
pub async fn connect(cfg: &EtcdConfig) -> Result<Client, EtcdError> {
    let mut options = ConnectOptions::new()
        .with_connect_timeout(cfg.call_timeout)
        // HTTP/2 pings notice a dead connection under the watch (every call has its own
        // timeout). Not more often than every 10 s: etcd's server closes the connection of a
        // client that pings more often than --grpc-keepalive-min-time (5 s by default), and
        // pings without a stream in progress count as too often.
        .with_keep_alive(PING_INTERVAL, cfg.call_timeout.max(Duration::from_secs(1)))
        .with_keep_alive_while_idle(false)
        // A member cut off from the etcd leader answers (and ends watches) with an error
        // instead of serving a stale view.
        .with_require_leader(true);
    if let Some(tls) = &cfg.tls {
        let mut t = etcd_client::TlsOptions::new();
        if let Some(ca) = &tls.ca {
            t = t.ca_certificate(etcd_client::Certificate::from_pem(ca));
        }
        if let Some((cert, key)) = &tls.identity {
            t = t.identity(etcd_client::Identity::from_pem(cert, key));
        }
        options = options.with_tls(t);
    }
    Client::connect(&cfg.endpoints, Some(options))
        .await
        .map_err(EtcdError::from_client)
}

impl<P: Publisher> EtcdElector<P> {
    /// An elector on `client` that hands its view and transitions to `publisher`.
    pub fn new(client: Client, cfg: EtcdConfig, params: Params, publisher: P) -> Self {
        EtcdElector {
            campaign: Campaign::new(params.clone(), cfg.key_prefix.clone(), fastrand::u64(..)),
            cfg,
            client,
            publisher,
            commands: None,
            app_health: None,
            reply: None,
            observed_wall: None,
            observer: None,
            params,
            granted: None,
        }
    }

    /// Leadership follows the app's health on `health` (rule E7).
    pub fn with_app_health(mut self, health: watch::Receiver<bool>) -> Self {
        self.campaign = self.campaign.with_app_check();
        self.app_health = Some(health);
        self
    }

    /// Report every call to `observer` (metrics).
    pub fn with_observer(mut self, observer: CallObserver) -> Self {
        self.observer = Some(observer);
        self
    }

    /// A handle through which the elector can be asked to release.
    pub fn control(&mut self) -> Control {
        let (control, rx) = Control::channel();
        self.commands = Some(rx);
        control
    }

    /// Campaign until `shutdown` is cancelled, then step down (and revoke, if configured) and
    /// return.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let (tx, mut inputs) = mpsc::channel(256);
        let inputs_stop = CancellationToken::new();
        let mut feeds = vec![tokio::spawn(watch_loop(
            self.client.clone(),
            self.cfg.key_prefix.clone(),
            tx.clone(),
            self.params.retry_period,
            self.cfg.call_timeout,
            self.observer.clone(),
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
            self.apply(Outcome::Tick);
            let until = match self.campaign.decide(clock::now()) {
                Step::Stopped => break,
                Step::Send(request) => {
                    match self.send(request, &mut inputs, &shutdown, stopping).await {
                        Some(outcome) => self.apply(outcome),
                        None => self.stop(&mut stopping),
                    }
                    continue;
                }
                Step::Wait(until) => until,
            };
            let wake = self.timer_for(until);
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !stopping => self.stop(&mut stopping),
                Some(outcome) = inputs.recv() => self.apply(outcome),
                Some(cmd) = recv_command(&mut self.commands) => self.command(cmd),
                _ = sleep_until(wake) => {}
            }
        }
        inputs_stop.cancel();
        for feed in feeds {
            feed.abort();
        }
    }

    fn timer_for(&self, t: Instant) -> Instant {
        crate::election::elector::timer_for(
            t,
            self.campaign.tenure().is_some(),
            self.params.retry_period,
        )
    }

    fn stop(&mut self, stopping: &mut bool) {
        *stopping = true;
        let release = self.cfg.release_on_shutdown;
        self.apply(Outcome::Stop { release });
    }

    fn command(&mut self, cmd: Command) {
        match cmd {
            Command::Release(reply) => {
                if self.reply.is_some() {
                    let _ = reply.send(ReleaseOutcome::NotLeader);
                    return;
                }
                self.reply = Some(reply);
                self.apply(Outcome::ReleaseAsked);
            }
        }
    }

    /// Run one request under the call timeout, applying the clock and inputs while it hangs.
    async fn send(
        &mut self,
        request: Request,
        inputs: &mut mpsc::Receiver<Outcome>,
        shutdown: &CancellationToken,
        stopping: bool,
    ) -> Option<Outcome> {
        let verb = request.verb();
        let mut client = self.client.clone();
        let sent = clock::now();
        Some(match request {
            Request::Grant { ttl } => {
                let fut = async move {
                    let r = client.lease_grant(ttl, None).await?;
                    Ok((r.id(), r.ttl()))
                };
                let result = self.call(verb, fut, inputs, shutdown, stopping).await?;
                if let Ok(granted) = &result {
                    self.granted = Some(*granted);
                }
                Outcome::Granted { sent, result }
            }
            Request::Put { key, value, lease } => {
                let fut = async move {
                    let txn = etcd_client::Txn::new()
                        .when([Compare::create_revision(key.clone(), CompareOp::Equal, 0)])
                        .and_then([TxnOp::put(
                            key.clone(),
                            value,
                            Some(PutOptions::new().with_lease(lease)),
                        )])
                        .or_else([TxnOp::get(key, None)]);
                    let r = client.txn(txn).await?;
                    if r.succeeded() {
                        return Ok(r.header().map(|h| h.revision()).unwrap_or(0));
                    }
                    // The key exists: our own earlier put (its answer was lost).
                    let rev = r.op_responses().into_iter().find_map(|op| match op {
                        TxnOpResponse::Get(g) => g.kvs().first().map(|kv| kv.create_revision()),
                        _ => None,
                    });
                    Ok(rev.unwrap_or(0))
                };
                Outcome::Put(self.call(verb, fut, inputs, shutdown, stopping).await?)
            }
            Request::Read => {
                let prefix = self.cfg.key_prefix.clone();
                let fut = async move {
                    let opts = GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Create, SortOrder::Ascend);
                    let r = client.get(prefix, Some(opts)).await?;
                    let (revision, cluster_id) = r
                        .header()
                        .map(|h| (h.revision(), h.cluster_id()))
                        .unwrap_or_default();
                    let candidates = r
                        .kvs()
                        .iter()
                        .map(|kv| Candidate {
                            key: String::from_utf8_lossy(kv.key()).into_owned(),
                            value: String::from_utf8_lossy(kv.value()).into_owned(),
                            create_revision: kv.create_revision(),
                            mod_revision: kv.mod_revision(),
                            lease: kv.lease(),
                        })
                        .collect();
                    Ok(Snapshot {
                        revision,
                        cluster_id,
                        candidates,
                    })
                };
                let result = self.call(verb, fut, inputs, shutdown, stopping).await?;
                if result.is_ok() {
                    self.observed_wall = Some(SystemTime::now());
                }
                Outcome::Read(result)
            }
            Request::KeepAlive { lease } => {
                // A fresh stream per keep-alive: etcd-client's `lease_keep_alive` sends one
                // request on it and waits for its answer (an error "lease not found" when the
                // TTL is gone), so an Ok proves a renewal received after `sent` (rule E2). A
                // keep-alive restores the TTL the lease was granted with.
                let ttl = match self.granted {
                    Some((id, ttl)) if id == lease => ttl,
                    _ => 1, // not granted by this executor: claim at most a second on it
                };
                let fut = async move {
                    client.lease_keep_alive(lease).await?;
                    Ok(ttl)
                };
                let result = self.call(verb, fut, inputs, shutdown, stopping).await?;
                Outcome::KeptAlive {
                    sent,
                    lease,
                    result,
                }
            }
            Request::CheckLease { lease } => {
                let fut = async move { Ok(client.lease_time_to_live(lease, None).await?.ttl()) };
                let result = self.call(verb, fut, inputs, shutdown, stopping).await?;
                Outcome::LeaseChecked { lease, result }
            }
            Request::Revoke { lease } => {
                let fut = async move {
                    client.lease_revoke(lease).await?;
                    Ok(())
                };
                let result = self.call(verb, fut, inputs, shutdown, stopping).await?;
                Outcome::Revoked { lease, result }
            }
        })
    }

    async fn call<T>(
        &mut self,
        verb: &'static str,
        fut: impl Future<Output = Result<T, etcd_client::Error>>,
        inputs: &mut mpsc::Receiver<Outcome>,
        shutdown: &CancellationToken,
        stopping: bool,
    ) -> Option<Result<T, EtcdError>> {
        let limit = self.cfg.call_timeout;
        let started = Instant::now();
        let fut = timeout(limit, fut);
        tokio::pin!(fut);
        let result = loop {
            let deadline = self.campaign.deadline();
            let wake = self.timer_for(deadline.unwrap_or_else(clock::now));
            tokio::select! {
                biased;
                _ = shutdown.cancelled(), if !stopping => return None,
                r = &mut fut => break match r {
                    Ok(r) => r.map_err(EtcdError::from_client),
                    Err(_) => Err(EtcdError::TimedOut { after: limit }),
                },
                Some(outcome) = inputs.recv() => self.apply(outcome),
                _ = sleep_until(wake), if deadline.is_some() => self.apply(Outcome::Tick),
            }
        };
        if let Some(observe) = &self.observer {
            let code = match &result {
                Ok(_) => "ok",
                Err(e) => e.code_label(),
            };
            observe(verb, code, started.elapsed());
        }
        if let Err(e) = &result {
            log_error(verb, e);
        }
        Some(result)
    }

    /// Apply one outcome, publish the view, then forward the transitions.
    fn apply(&mut self, outcome: Outcome) {
        let transitions = self.campaign.apply(outcome, clock::now());
        self.publisher
            .publish(self.campaign.view(), self.observed_wall);
        for t in transitions {
            log_transition(&t);
            if let Transition::ReleaseFinished(outcome) = &t {
                if let Some(reply) = self.reply.take() {
                    let _ = reply.send(outcome.clone());
                }
            }
            self.publisher.transition(t);
        }
    }
}

fn log_error(verb: &str, e: &EtcdError) {
    match e {
        EtcdError::LeaseNotFound => debug!(verb, "the etcd lease is gone"),
        EtcdError::Rejected { .. } => {
            error!(verb, error = %e, "etcd rejected the request; this is a configuration problem")
        }
        _ => warn!(verb, error = %e, "etcd call failed; will retry"),
    }
}

fn log_transition(t: &Transition) {
    match t {
        Transition::Acquired { epoch } => info!(epoch, "became leader"),
        Transition::Lost { reason, epoch } => {
            info!(?epoch, reason = reason.as_str(), "stopped leading");
            if *reason == LossReason::RenewDeadline {
                warn!("no successful keep-alive within the renew deadline; the etcd lease is given up and a new one joins the line");
            }
        }
        Transition::NewLeader {
            leader: Some(leader),
            epoch,
        } => info!(%leader, ?epoch, "observed new leader"),
        Transition::NewLeader { .. } => {}
        Transition::ReleaseFinished(ReleaseOutcome::Released { epoch }) => {
            info!(epoch, "released: the etcd lease is revoked")
        }
        Transition::ReleaseFinished(ReleaseOutcome::NotWritten { epoch, error }) => {
            warn!(epoch, %error, "could not revoke the etcd lease; the next in line leads once it expires")
        }
        Transition::ReleaseFinished(_) => {}
    }
}

/// Follow the prefix's watch and forward every change as [`Outcome::Changed`]; while it cannot
/// watch, report [`Outcome::WatchDown`] (the campaign polls) and retry every retry period.
async fn watch_loop(
    client: Client,
    prefix: String,
    tx: mpsc::Sender<Outcome>,
    retry_period: Duration,
    call_timeout: Duration,
    observer: Option<CallObserver>,
    stop: CancellationToken,
) {
    let run = async {
        let mut failures: u32 = 0;
        loop {
            let mut c = client.clone();
            let started = Instant::now();
            let opened = timeout(
                call_timeout,
                c.watch(prefix.clone(), Some(WatchOptions::new().with_prefix())),
            )
            .await;
            let opened = match opened {
                Ok(r) => r.map_err(EtcdError::from_client),
                Err(_) => Err(EtcdError::TimedOut {
                    after: call_timeout,
                }),
            };
            if let Some(o) = &observer {
                let code = opened.as_ref().err().map_or("ok", |e| e.code_label());
                o("watch", code, started.elapsed());
            }
            let mut stream = match opened {
                Ok(s) => s,
                Err(e) => {
                    failures += 1;
                    if failures == 1 {
                        warn!(error = %e, "cannot watch the election's keys; polling every retry period instead");
                    }
                    if tx.send(Outcome::WatchDown).await.is_err() {
                        return;
                    }
                    sleep(jitter(retry_period)).await;
                    continue;
                }
            };
            if failures > 0 {
                info!("watching the election's keys again");
            }
            failures = 0;
            if tx.send(Outcome::WatchUp).await.is_err() {
                return;
            }
            loop {
                match stream.message().await {
                    Ok(Some(r)) if r.canceled() => {
                        debug!(reason = r.cancel_reason(), "watch canceled; re-watching");
                        break;
                    }
                    Ok(Some(r)) => {
                        let revision = r.header().map_or(0, |h| h.revision());
                        if !r.events().is_empty()
                            && tx.send(Outcome::Changed { revision }).await.is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(error = %e, "watch stream failed; re-watching");
                        break;
                    }
                }
            }
            if tx.send(Outcome::WatchDown).await.is_err() {
                return;
            }
            sleep(jitter(retry_period)).await;
        }
    };
    tokio::select! {
        _ = stop.cancelled() => {}
        _ = run => {}
    }
}

//! Lease API test server: an in-process HTTP server on 127.0.0.1 that imitates kube-apiserver's
//! `coordination.k8s.io/v1` Lease API (v1.20 semantics, Status bodies, watches with 410) with
//! fault injection, so tests can run the real kube-rs client against it over real HTTP. It also
//! keeps core/v1 Pods (GET and PATCH of one pod, for a client that labels its own pod; see
//! `pods.rs`) and stores posted `events.k8s.io/v1` Events.

mod handlers;
mod patch;
mod pods;
mod request;
mod status;
mod store;
mod validate;
mod watch;

#[cfg(test)]
mod tests;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::Response;
use axum::Router;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use self::status::ApiError;
use self::store::Store;
use self::validate::{meta_str, set_meta};

/// One request the server has seen.
#[derive(Clone, Debug)]
pub struct RequestRecord {
    /// The bearer token the request carried ("" if none).
    pub client: String,
    /// get, list, watch, create, update, patch, delete (the lowercase HTTP method elsewhere).
    pub verb: String,
    /// The resource addressed: "leases", "pods" or "events"; "" for other paths (`/version`,
    /// unknown paths).
    pub resource: String,
    /// The HTTP status answered; 0 while not answered yet.
    pub status: u16,
    /// When the request arrived.
    pub at: Instant,
}

/// One committed change of a Lease, as [`TestServer::lease_changes`] reports it.
#[derive(Clone, Debug)]
pub struct LeaseChange {
    /// The resourceVersion the change got.
    pub resource_version: u64,
    /// ADDED, MODIFIED or DELETED.
    pub kind: &'static str,
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name.
    pub name: String,
    /// The object after the change (for DELETED: its last state).
    pub object: Value,
    /// When the change was committed: after the write's request arrived, before anyone (the
    /// writer included) could see the result.
    pub at: Instant,
}

/// Every Lease change after [`TestServer::lease_changes`] was called, in commit order (for
/// checkers that need the order and time of writes; watches are for clients).
pub struct LeaseChanges {
    rx: tokio::sync::broadcast::Receiver<Arc<store::Event>>,
    /// Changes this receiver fell too far behind to see (0 unless it was not polled for
    /// thousands of changes).
    pub lagged: u64,
}

impl LeaseChanges {
    /// The next change; `None` once the server is gone.
    pub async fn next(&mut self) -> Option<LeaseChange> {
        loop {
            match self.rx.recv().await {
                Ok(ev) => {
                    return Some(LeaseChange {
                        resource_version: ev.rv,
                        kind: ev.kind,
                        namespace: ev.ns.clone(),
                        name: ev.name.clone(),
                        object: ev.object.clone(),
                        at: ev.at,
                    })
                }
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => self.lagged += n,
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    }
}

/// Faults currently injected.
#[derive(Default)]
struct Faults {
    latency: HashMap<String, Duration>,
    error_rate_all: Option<(f64, u16)>,
    error_rate: HashMap<String, (f64, u16)>,
    partitioned: HashSet<String>,
    /// (client, verb, resource); resource "" denies the verb on leases and pods alike.
    denied: HashSet<(String, String, String)>,
    garbage: HashSet<String>,
}

/// State shared by the handlers and the [`TestServer`] handle.
struct Shared {
    store: Mutex<Store>,
    faults: Mutex<Faults>,
    /// Bumped on every fault change, so held requests and watch streams re-check.
    fault_gen: tokio::sync::watch::Sender<u64>,
    requests: Mutex<Vec<RequestRecord>>,
    /// `events.k8s.io/v1` Events posted (kept only so tests can read them).
    events: Mutex<Vec<Value>>,
    shutdown: CancellationToken,
}

/// Lock, ignoring poisoning (a panicking test thread must not wedge the server).
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Shared {
    fn is_partitioned(&self, client: &str) -> bool {
        lock(&self.faults).partitioned.contains(client)
    }

    fn faults_changed(&self) {
        self.fault_gen.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// Wait while `client` is partitioned; false if the server shut down meanwhile.
    async fn hold_while_partitioned(&self, client: &str) -> bool {
        loop {
            let mut rx = self.fault_gen.subscribe();
            if !self.is_partitioned(client) {
                return true;
            }
            tokio::select! {
                r = rx.changed() => if r.is_err() { return false; },
                _ = self.shutdown.cancelled() => return false,
            }
        }
    }
}

/// A fresh uuid-like uid.
fn new_uid() -> String {
    let hex = |n: usize| -> String {
        (0..n)
            .map(|_| char::from_digit(fastrand::u32(0..16), 16).unwrap_or('0'))
            .collect()
    };
    format!(
        "{}-{}-4{}-{}{}-{}",
        hex(8),
        hex(4),
        hex(3),
        ['8', '9', 'a', 'b'][fastrand::usize(0..4)],
        hex(3),
        hex(12)
    )
}

/// Now as RFC 3339 with whole seconds (metav1.Time).
fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// The test server. Serves until dropped or [`TestServer::shutdown`].
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for TestServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestServer")
            .field("addr", &self.addr)
            .finish()
    }
}

impl TestServer {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime until dropped/shutdown.
    pub async fn start() -> std::io::Result<TestServer> {
        Self::start_on(SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0))).await
    }

    /// Binds `addr` and serves on the current tokio runtime until dropped/shutdown.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<TestServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (fault_gen, _) = tokio::sync::watch::channel(0u64);
        let shared = Arc::new(Shared {
            store: Mutex::new(Store::new()),
            faults: Mutex::new(Faults::default()),
            fault_gen,
            requests: Mutex::new(Vec::new()),
            events: Mutex::new(Vec::new()),
            shutdown: CancellationToken::new(),
        });
        let app = Router::new()
            .fallback(serve_request)
            .with_state(shared.clone());
        let token = shared.shutdown.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(async move { token.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "lease test server stopped");
            }
        });
        Ok(TestServer {
            addr,
            shared,
            task: Some(task),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kubeconfig (YAML) pointing at this server with the bearer `token` and `namespace`.
    pub fn kubeconfig_yaml(&self, token: &str, namespace: &str) -> String {
        let cfg = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "leaderd-testserver", "cluster": {"server": self.url()}}],
            "users": [{"name": "leaderd-testserver", "user": {"token": token}}],
            "contexts": [{"name": "leaderd-testserver", "context": {
                "cluster": "leaderd-testserver", "user": "leaderd-testserver", "namespace": namespace}}],
            "current-context": "leaderd-testserver",
            "preferences": {},
        });
        serde_yaml::to_string(&cfg).unwrap_or_default()
    }

    fn with_faults(&self, f: impl FnOnce(&mut Faults)) {
        f(&mut lock(&self.shared.faults));
        self.shared.faults_changed();
    }

    /// Add `latency` before answering each request of `client` (zero removes it).
    pub fn set_latency(&self, client: &str, latency: Duration) {
        self.with_faults(|f| {
            if latency.is_zero() {
                f.latency.remove(client);
            } else {
                f.latency.insert(client.into(), latency);
            }
        });
    }

    /// Answer a share `rate` (0.0..=1.0) of requests (of all clients if `client` is None) with
    /// `status` (429, 500, 503 or 504) and a Status body; 429 carries `Retry-After: 1`.
    pub fn set_error_rate(&self, client: Option<&str>, rate: f64, status: u16) {
        let rate = if rate.is_nan() {
            0.0
        } else {
            rate.clamp(0.0, 1.0)
        };
        self.with_faults(|f| {
            let v = (rate > 0.0).then_some((rate, status));
            match client {
                None => f.error_rate_all = v,
                Some(c) => match v {
                    Some(v) => {
                        f.error_rate.insert(c.into(), v);
                    }
                    None => {
                        f.error_rate.remove(c);
                    }
                },
            }
        });
    }

    /// Silent partition: hold `client`'s requests unanswered until [`heal`](Self::heal); its open
    /// watch streams go silent and are closed on heal.
    pub fn partition(&self, client: &str) {
        self.with_faults(|f| {
            f.partitioned.insert(client.into());
        });
    }

    pub fn heal(&self, client: &str) {
        self.with_faults(|f| {
            f.partitioned.remove(client);
        });
    }

    /// Answer `client`'s requests with this `verb` (on leases and on pods) with 403 Forbidden.
    pub fn deny(&self, client: &str, verb: &str) {
        self.with_faults(|f| {
            f.denied
                .insert((client.into(), verb.to_ascii_lowercase(), String::new()));
        });
    }

    /// Answer `client`'s requests with this `verb` on this `resource` only ("leases" or "pods")
    /// with 403 Forbidden, as a Role without that rule would.
    pub fn deny_resource(&self, client: &str, resource: &str, verb: &str) {
        self.with_faults(|f| {
            f.denied.insert((
                client.into(),
                verb.to_ascii_lowercase(),
                resource.to_ascii_lowercase(),
            ));
        });
    }

    /// Answer `client`'s requests with 200 and a body that is not JSON while on.
    pub fn set_garbage(&self, client: &str, on: bool) {
        self.with_faults(|f| {
            if on {
                f.garbage.insert(client.into());
            } else {
                f.garbage.remove(client);
            }
        });
    }

    /// Remove every fault (heals partitions too).
    pub fn clear_faults(&self) {
        self.with_faults(|f| *f = Faults::default());
    }

    /// Store `lease` directly (no validation), as a foreign writer would. Returns the new
    /// resourceVersion.
    pub fn put_raw(&self, ns: &str, name: &str, lease: Value) -> String {
        let mut obj = if lease.is_object() { lease } else { json!({}) };
        if let Some(o) = obj.as_object_mut() {
            o.entry("kind").or_insert_with(|| json!(validate::KIND));
            o.entry("apiVersion")
                .or_insert_with(|| json!(validate::API_VERSION));
        }
        set_meta(&mut obj, "name", name);
        set_meta(&mut obj, "namespace", ns);
        let mut st = lock(&self.shared.store);
        match st.get(ns, name) {
            Some(old) => {
                let uid = meta_str(old, "uid").to_string();
                let created = meta_str(old, "creationTimestamp").to_string();
                set_meta(&mut obj, "uid", &uid);
                if meta_str(&obj, "creationTimestamp").is_empty() {
                    set_meta(&mut obj, "creationTimestamp", &created);
                }
            }
            None => {
                set_meta(&mut obj, "uid", &new_uid());
                if meta_str(&obj, "creationTimestamp").is_empty() {
                    set_meta(&mut obj, "creationTimestamp", &now_rfc3339());
                }
            }
        }
        let stored = st.put(ns, name, obj);
        meta_str(&stored, "resourceVersion").to_string()
    }

    /// Delete directly; emits DELETED. Returns whether it existed.
    pub fn delete_lease(&self, ns: &str, name: &str) -> bool {
        lock(&self.shared.store).remove(ns, name).is_some()
    }

    /// The stored object, as GET would return it.
    pub fn lease(&self, ns: &str, name: &str) -> Option<Value> {
        lock(&self.shared.store).get(ns, name).cloned()
    }

    /// Create or overwrite the core/v1 Pod ns/name as a v1.20 apiserver would store a pod with one
    /// container that no node runs (defaulted spec, `status.phase: Pending`) and these labels.
    /// An overwrite keeps the uid and creationTimestamp. The resourceVersion comes from the
    /// counter leases use. Returns the stored pod, as GET returns it.
    pub fn put_pod(&self, ns: &str, name: &str, labels: &[(&str, &str)]) -> Value {
        let mut st = lock(&self.shared.store);
        let (uid, created) = match st.get_pod(ns, name) {
            Some(old) => (
                meta_str(old, "uid").to_string(),
                meta_str(old, "creationTimestamp").to_string(),
            ),
            None => (new_uid(), now_rfc3339()),
        };
        let pod = pods::minimal_pod(ns, name, &uid, &created, labels);
        st.put_pod(ns, name, pod)
    }

    /// The stored pod, as GET returns it.
    pub fn pod(&self, ns: &str, name: &str) -> Option<Value> {
        lock(&self.shared.store).get_pod(ns, name).cloned()
    }

    /// Delete a pod directly (as if its node went away). Returns whether it existed.
    pub fn delete_pod(&self, ns: &str, name: &str) -> bool {
        lock(&self.shared.store).remove_pod(ns, name).is_some()
    }

    /// The value of one label of a stored pod (None when the pod or the label is missing).
    pub fn pod_label(&self, ns: &str, name: &str, key: &str) -> Option<String> {
        let st = lock(&self.shared.store);
        st.get_pod(ns, name)?
            .get("metadata")?
            .get("labels")?
            .get(key)?
            .as_str()
            .map(str::to_string)
    }

    /// Wait until `pred` holds for pod ns/name (None: no such pod), woken by every pod write, not
    /// by polling. True if it held within `timeout`.
    pub async fn wait_pod(
        &self,
        ns: &str,
        name: &str,
        timeout: Duration,
        pred: impl Fn(Option<&Value>) -> bool,
    ) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        // Subscribe before looking: a write between the look and the wait still wakes us.
        let mut changes = lock(&self.shared.store).pod_changes();
        loop {
            if pred(self.pod(ns, name).as_ref()) {
                return true;
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return pred(self.pod(ns, name).as_ref()); },
                _ = tokio::time::sleep_until(deadline) => return pred(self.pod(ns, name).as_ref()),
            }
        }
    }

    /// Wait until pod ns/name carries label `key` = `value`.
    pub async fn wait_pod_label(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        value: &str,
        timeout: Duration,
    ) -> bool {
        self.wait_pod(ns, name, timeout, |p| label_of(p, key) == Some(value))
            .await
    }

    /// Wait until pod ns/name exists without label `key`.
    pub async fn wait_pod_label_absent(
        &self,
        ns: &str,
        name: &str,
        key: &str,
        timeout: Duration,
    ) -> bool {
        self.wait_pod(ns, name, timeout, |p| {
            p.is_some() && label_of(p, key).is_none()
        })
        .await
    }

    /// Forget all watch history: watches from any older resourceVersion get 410.
    pub fn compact(&self) {
        lock(&self.shared.store).compact();
    }

    /// Every `events.k8s.io/v1` Event posted so far (patched ones in their latest state).
    pub fn events(&self) -> Vec<Value> {
        lock(&self.shared.events).clone()
    }

    /// Every Lease change from now on, with its commit time.
    pub fn lease_changes(&self) -> LeaseChanges {
        LeaseChanges {
            rx: lock(&self.shared.store).subscribe(),
            lagged: 0,
        }
    }

    /// Every request seen so far, in order of arrival.
    pub fn requests(&self) -> Vec<RequestRecord> {
        lock(&self.shared.requests).clone()
    }

    /// Stop serving: closes the listener, ends watches and held requests, waits (briefly) for
    /// open connections to finish.
    pub async fn shutdown(mut self) {
        self.shared.shutdown.cancel();
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// A label of an object, if it has it.
fn label_of<'a>(obj: Option<&'a Value>, key: &str) -> Option<&'a str> {
    obj?.get("metadata")?.get("labels")?.get(key)?.as_str()
}

/// The bearer token of a request ("" if none).
fn bearer(req: &Request) -> String {
    req.headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (scheme, token) = v.trim().split_once(' ')?;
            scheme
                .eq_ignore_ascii_case("bearer")
                .then(|| token.trim().to_string())
        })
        .unwrap_or_default()
}

/// A JSON response.
fn json_response(code: u16, body: &Value) -> Response {
    let mut resp = Response::new(Body::from(serde_json::to_vec(body).unwrap_or_default()));
    *resp.status_mut() =
        http::StatusCode::from_u16(code).unwrap_or(http::StatusCode::INTERNAL_SERVER_ERROR);
    resp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error_response(e: ApiError) -> Response {
    let mut resp = json_response(e.code, &e.body);
    if let Some(secs) = e.retry_after {
        resp.headers_mut()
            .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
    }
    resp
}

/// Entry point for every request: record it, apply faults in order, then handle it.
async fn serve_request(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let client = bearer(&req);
    let route = handlers::Route::parse(req.uri().path());
    let verb = route.verb(req.method(), req.uri());
    let index = {
        let mut reqs = lock(&shared.requests);
        reqs.push(RequestRecord {
            client: client.clone(),
            verb: verb.clone(),
            resource: route.resource().to_string(),
            status: 0,
            at: Instant::now(),
        });
        reqs.len() - 1
    };
    let resp = with_faults(&shared, &client, &route, &verb, req).await;
    if let Some(r) = lock(&shared.requests).get_mut(index) {
        r.status = resp.status().as_u16();
    }
    resp
}

async fn with_faults(
    shared: &Arc<Shared>,
    client: &str,
    route: &handlers::Route,
    verb: &str,
    req: Request,
) -> Response {
    if !shared.hold_while_partitioned(client).await {
        return error_response(status::shutting_down());
    }
    let latency = lock(&shared.faults).latency.get(client).copied();
    if let Some(latency) = latency {
        tokio::select! {
            _ = tokio::time::sleep(latency) => {}
            _ = shared.shutdown.cancelled() => return error_response(status::shutting_down()),
        }
    }
    let scope = route.rbac_scope();
    let (denied, garbage, error_rate) = {
        let f = lock(&shared.faults);
        let denied = scope.is_some_and(|(res, _, _)| {
            [String::new(), res.plural.to_string()]
                .into_iter()
                .any(|r| {
                    f.denied
                        .contains(&(client.to_string(), verb.to_string(), r))
                })
        });
        (
            denied,
            f.garbage.contains(client),
            f.error_rate.get(client).copied().or(f.error_rate_all),
        )
    };
    if let (true, Some((res, ns, name))) = (denied, scope) {
        return error_response(status::forbidden(&res, client, verb, ns, name));
    }
    if garbage {
        let mut resp = Response::new(Body::from(
            "<html>garbage from the leaderd test server: this is not JSON {[",
        ));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        return resp;
    }
    if let Some((rate, code)) = error_rate {
        if fastrand::f64() < rate {
            return error_response(status::injected(code));
        }
    }
    handlers::handle(shared.clone(), client.to_string(), route, req).await
}

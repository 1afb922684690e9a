//! An in-memory [`LeaseStore`] with the apiserver's write semantics, for the election's unit tests.
//!
//! Several candidates share one Lease through [`MemoryStore::client`] handles; faults (a hang,
//! an error) are set per client. It keeps the rules that matter to the election: opaque
//! resourceVersions bumped on every write, 409 on a stale one, create-on-update, watch events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures::stream::{self, BoxStream, StreamExt};
use serde_json::{json, Value};
use tokio::sync::broadcast;

use leaderd::election::record::StoredLease;
use leaderd::election::store::{LeaseStore, StoreError, WatchEvent};

/// A fault injected into one client's requests.
#[derive(Clone, Debug, Default)]
pub struct Fault {
    /// Requests never answer (a silent partition); the watch goes silent too.
    pub hang: bool,
    /// Requests fail with this error.
    pub fail: Option<StoreError>,
    /// Requests (not the watch) are answered this much later.
    pub latency: std::time::Duration,
}

#[derive(Default)]
struct Inner {
    object: Option<Value>,
    rv: u64,
    uids: u64,
    faults: HashMap<String, Fault>,
    requests: HashMap<String, usize>,
}

struct Shared {
    inner: Mutex<Inner>,
    events: broadcast::Sender<WatchEvent>,
}

/// A shared in-memory Lease; each clone made by [`MemoryStore::client`] is one candidate's view.
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
    client: Arc<str>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store (no Lease yet), seen as client "".
    pub fn new() -> Self {
        let (events, _) = broadcast::channel(1024);
        MemoryStore {
            shared: Arc::new(Shared {
                inner: Mutex::new(Inner::default()),
                events,
            }),
            client: Arc::from(""),
        }
    }

    /// A handle on the same Lease for the named client (faults and counts are per client).
    pub fn client(&self, name: &str) -> Self {
        MemoryStore {
            shared: self.shared.clone(),
            client: Arc::from(name),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.shared.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Set (or clear, with `Fault::default()`) the fault of a client.
    pub fn set_fault(&self, client: &str, fault: Fault) {
        self.inner().faults.insert(client.to_owned(), fault);
    }

    /// The Lease as stored now.
    pub fn object(&self) -> Option<StoredLease> {
        let obj = self.inner().object.clone()?;
        StoredLease::from_json(obj).ok()
    }

    /// Requests made so far by a client.
    pub fn requests(&self, client: &str) -> usize {
        self.inner().requests.get(client).copied().unwrap_or(0)
    }

    /// Write `object` as someone outside the election would (no precondition, no validation).
    pub fn foreign_put(&self, mut object: Value) -> String {
        let mut inner = self.inner();
        inner.rv += 1;
        let rv = inner.rv.to_string();
        let uid = inner
            .object
            .as_ref()
            .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_owned));
        let uid = uid.unwrap_or_else(|| {
            inner.uids += 1;
            format!("uid-{}", inner.uids)
        });
        if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.insert("resourceVersion".into(), json!(rv));
            meta.insert("uid".into(), json!(uid));
        } else if let Some(map) = object.as_object_mut() {
            map.insert(
                "metadata".into(),
                json!({"resourceVersion": rv, "uid": uid}),
            );
        }
        inner.object = Some(object.clone());
        if let Ok(l) = StoredLease::from_json(object) {
            let _ = self.shared.events.send(WatchEvent::Put(l));
        }
        rv
    }

    /// Delete the Lease as someone outside the election would.
    pub fn foreign_delete(&self) {
        let mut inner = self.inner();
        if inner.object.take().is_some() {
            inner.rv += 1;
            let _ = self.shared.events.send(WatchEvent::Deleted);
        }
    }

    /// Count the request and apply this client's fault.
    async fn enter(&self) -> Result<(), StoreError> {
        let fault = {
            let mut inner = self.inner();
            *inner.requests.entry(self.client.to_string()).or_default() += 1;
            inner.faults.get(&*self.client).cloned().unwrap_or_default()
        };
        if fault.hang {
            std::future::pending::<()>().await;
        }
        if !fault.latency.is_zero() {
            tokio::time::sleep(fault.latency).await;
        }
        match fault.fail {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    fn store(&self, inner: &mut Inner, mut object: Value, keep_uid: Option<String>) -> StoredLease {
        inner.rv += 1;
        let uid = keep_uid.unwrap_or_else(|| {
            inner.uids += 1;
            format!("uid-{}", inner.uids)
        });
        object["metadata"]["resourceVersion"] = json!(inner.rv.to_string());
        object["metadata"]["uid"] = json!(uid);
        inner.object = Some(object.clone());
        let lease = StoredLease::from_json(object).expect("just stored a valid object");
        let _ = self.shared.events.send(WatchEvent::Put(lease.clone()));
        lease
    }
}

impl LeaseStore for MemoryStore {
    async fn get(&self) -> Result<StoredLease, StoreError> {
        self.enter().await?;
        let obj = self.inner().object.clone().ok_or(StoreError::NotFound)?;
        StoredLease::from_json(obj).map_err(|e| StoreError::unavailable(e.to_string()))
    }

    async fn create(&self, object: Value) -> Result<StoredLease, StoreError> {
        self.enter().await?;
        let mut inner = self.inner();
        if inner.object.is_some() {
            return Err(StoreError::AlreadyExists);
        }
        Ok(self.store(&mut inner, object, None))
    }

    async fn replace(&self, object: Value) -> Result<(StoredLease, bool), StoreError> {
        self.enter().await?;
        let mut inner = self.inner();
        let Some(current) = inner.object.clone() else {
            // Create-on-update, unless the body carries a uid (the apiserver's 409).
            if object["metadata"]["uid"]
                .as_str()
                .is_some_and(|u| !u.is_empty())
            {
                return Err(StoreError::Conflict);
            }
            return Ok((self.store(&mut inner, object, None), true));
        };
        if object["metadata"]["resourceVersion"] != current["metadata"]["resourceVersion"] {
            return Err(StoreError::Conflict);
        }
        let uid = current["metadata"]["uid"].as_str().map(str::to_owned);
        Ok((self.store(&mut inner, object, uid), false))
    }

    async fn watch(
        &self,
        resource_version: Option<String>,
    ) -> Result<BoxStream<'static, Result<WatchEvent, StoreError>>, StoreError> {
        self.enter().await?;
        let rx = self.shared.events.subscribe();
        let first = match resource_version {
            None => self
                .inner()
                .object
                .clone()
                .and_then(|o| StoredLease::from_json(o).ok())
                .map(|l| Ok(WatchEvent::Put(l))),
            Some(_) => None,
        };
        let me = self.clone();
        let live = stream::unfold(rx, move |mut rx| {
            let me = me.clone();
            async move {
                // A lagging or closed receiver ends the stream; the elector re-watches.
                let ev = rx.recv().await.ok()?;
                let hang = me.inner().faults.get(&*me.client).is_some_and(|f| f.hang);
                if hang {
                    std::future::pending::<()>().await;
                }
                Some((Ok(ev), rx))
            }
        });
        Ok(stream::iter(first).chain(live).boxed())
    }
}

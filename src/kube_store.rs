//! The [`LeaseStore`] over the Kubernetes API: kube-rs's client over real HTTP(S).
//!
//! Requests are built with kube's URL builder and sent with [`kube::Client::send`], so that
//! status codes, `Retry-After` and Status bodies are read here exactly as the apiserver sent
//! them, and a Lease whose content is garbage still decodes (leniently) instead of failing
//! the whole object.

use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures::stream::{self, BoxStream, StreamExt};
use http::{HeaderMap, StatusCode};
use http_body_util::BodyExt;
use k8s_openapi::api::coordination::v1::Lease;
use kube::core::params::{GetParams, PostParams, WatchParams};
use kube::core::Request;
use kube::Resource;
use serde_json::Value;

use crate::election::record::StoredLease;
use crate::election::store::{LeaseStore, StoreError, WatchEvent};

/// One Lease through a kube-rs [`kube::Client`].
#[derive(Clone)]
pub struct KubeLeaseStore {
    client: kube::Client,
    request: Arc<Request>,
    name: Arc<str>,
    namespace: Arc<str>,
    watch_timeout_secs: u32,
}

impl KubeLeaseStore {
    /// A store for Lease `name` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, name: &str) -> Self {
        KubeLeaseStore {
            client,
            request: Arc::new(Request::new(Lease::url_path(&(), Some(namespace)))),
            name: Arc::from(name),
            namespace: Arc::from(namespace),
            watch_timeout_secs: 60,
        }
    }

    /// Send one request; the answer's head, and its body still to be read.
    async fn send_raw(
        &self,
        verb: &'static str,
        req: http::Request<Vec<u8>>,
    ) -> Result<http::Response<kube::client::Body>, StoreError> {
        self.client
            .send(req.map(kube::client::Body::from))
            .await
            .map_err(|e| StoreError::unavailable(format!("{verb} lease: {e}")))
    }

    /// Send one request and read the whole answer; non-2xx answers become [`StoreError`]s.
    async fn send(
        &self,
        verb: &'static str,
        req: http::Request<Vec<u8>>,
    ) -> Result<(StatusCode, Bytes), StoreError> {
        let (parts, body) = self.send_raw(verb, req).await?.into_parts();
        let body = body
            .collect()
            .await
            .map_err(|e| StoreError::unavailable(format!("{verb} lease: reading the answer: {e}")))?
            .to_bytes();
        if parts.status.is_success() {
            return Ok((parts.status, body));
        }
        Err(self.error(verb, parts.status, &parts.headers, &body))
    }

    fn error(
        &self,
        verb: &str,
        status: StatusCode,
        headers: &HeaderMap,
        body: &[u8],
    ) -> StoreError {
        let parsed: Option<Value> = serde_json::from_slice(body).ok();
        let field = |k: &str| {
            parsed
                .as_ref()
                .and_then(|v| v.get(k))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        let (reason, message) = (field("reason"), field("message"));
        let message = if message.is_empty() {
            format!("{verb} lease: HTTP {status}")
        } else {
            message
        };
        match status.as_u16() {
            404 => StoreError::NotFound,
            409 if reason == "AlreadyExists" => StoreError::AlreadyExists,
            409 => StoreError::Conflict,
            429 | 500..=599 => StoreError::Unavailable {
                code: Some(status.as_u16()),
                retry_after: headers
                    .get(http::header::RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .map(Duration::from_secs),
                message: format!("{message} (HTTP {})", status.as_u16()),
            },
            code => StoreError::Rejected {
                code,
                reason,
                message,
                hint: self.hint(verb, code),
            },
        }
    }

    fn hint(&self, verb: &str, code: u16) -> String {
        let ns = &self.namespace;
        match code {
            401 => "; fix: the apiserver does not accept these credentials: check the service account token or the kubeconfig user".to_owned(),
            403 => format!(
                "; fix: grant verb \"{verb}\" on resource \"leases\" in API group \"coordination.k8s.io\" in namespace \"{ns}\" to this identity (the leaderd chart's Role does)"
            ),
            422 => format!(
                "; fix: the apiserver rejected the Lease \"{}\" as invalid: check --lease-name and the object written by other candidates",
                self.name
            ),
            _ => String::new(),
        }
    }

    fn decode(verb: &str, body: &[u8]) -> Result<StoredLease, StoreError> {
        let value: Value = serde_json::from_slice(body).map_err(|e| {
            StoreError::unavailable(format!("{verb} lease: the answer is not JSON: {e}"))
        })?;
        StoredLease::from_json(value)
            .map_err(|e| StoreError::unavailable(format!("{verb} lease: {e}")))
    }

    fn with_names(&self, mut object: Value) -> Value {
        if let Some(map) = object.as_object_mut() {
            let meta = map
                .entry("metadata")
                .or_insert_with(|| Value::Object(Default::default()));
            if let Some(meta) = meta.as_object_mut() {
                meta.insert("name".into(), Value::from(&*self.name));
                meta.insert("namespace".into(), Value::from(&*self.namespace));
            }
        }
        object
    }
}

fn build(
    r: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
) -> Result<http::Request<Vec<u8>>, StoreError> {
    r.map_err(|e| StoreError::Rejected {
        code: 0,
        reason: "BadRequest".into(),
        message: format!("cannot build the request: {e}"),
        hint: String::new(),
    })
}

/// Split a watch body into lines and decode each into a [`WatchEvent`].
fn watch_events(body: kube::client::Body) -> BoxStream<'static, Result<WatchEvent, StoreError>> {
    watch_lines(body, decode_watch_line, |e| {
        matches!(e, WatchEvent::Expired)
    })
}

/// Split a watch body into lines and decode each with `decode`; the stream ends after an error
/// or an event for which `last` holds.
fn watch_lines<T: Send + 'static>(
    body: kube::client::Body,
    decode: fn(&[u8]) -> Result<T, StoreError>,
    last: fn(&T) -> bool,
) -> BoxStream<'static, Result<T, StoreError>> {
    let frames = body.into_data_stream();
    stream::unfold(
        (frames, BytesMut::new(), false),
        move |(mut frames, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                if let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                    let line = buf.split_to(pos + 1);
                    let line = &line[..pos];
                    if line.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    let ev = decode(line);
                    let end = ev.as_ref().map_or(true, last);
                    return Some((ev, (frames, buf, end)));
                }
                match frames.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => {
                        let e = StoreError::unavailable(format!("watch stream broke: {e}"));
                        return Some((Err(e), (frames, buf, true)));
                    }
                    None if buf.iter().all(u8::is_ascii_whitespace) => return None,
                    None => {
                        let ev = decode(&buf.split());
                        return Some((ev, (frames, buf, true)));
                    }
                }
            }
        },
    )
    .boxed()
}

fn decode_watch_line(line: &[u8]) -> Result<WatchEvent, StoreError> {
    let v: Value = serde_json::from_slice(line).map_err(|e| {
        StoreError::unavailable(format!("watch sent something that is not JSON: {e}"))
    })?;
    let object = v.get("object").cloned().unwrap_or(Value::Null);
    match v.get("type").and_then(Value::as_str) {
        Some("ADDED") | Some("MODIFIED") => StoredLease::from_json(object)
            .map(WatchEvent::Put)
            .map_err(|e| StoreError::unavailable(format!("watch event: {e}"))),
        Some("DELETED") => Ok(WatchEvent::Deleted),
        Some("BOOKMARK") => Ok(WatchEvent::Bookmark(
            object["metadata"]["resourceVersion"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
        )),
        Some("ERROR") if object.get("code").and_then(Value::as_u64) == Some(410) => {
            Ok(WatchEvent::Expired)
        }
        Some("ERROR") => Err(StoreError::unavailable(format!(
            "watch error: {}",
            object
                .get("message")
                .and_then(Value::as_str)
                .unwrap_or("(no message)")
        ))),
        other => Err(StoreError::unavailable(format!(
            "watch event of unknown type {other:?}"
        ))),
    }
}

impl LeaseStore for KubeLeaseStore {
    async fn get(&self) -> Result<StoredLease, StoreError> {
        let req = build(self.request.get(&self.name, &GetParams::default()))?;
        let (_, body) = self.send("get", req).await?;
        Self::decode("get", &body)
    }

    async fn create(&self, object: Value) -> Result<StoredLease, StoreError> {
        let data = serde_json::to_vec(&self.with_names(object)).unwrap_or_default();
        let req = build(self.request.create(&PostParams::default(), data))?;
        let (_, body) = self.send("create", req).await?;
        Self::decode("create", &body)
    }

    async fn replace(&self, object: Value) -> Result<(StoredLease, bool), StoreError> {
        let data = serde_json::to_vec(&self.with_names(object)).unwrap_or_default();
        let req = build(
            self.request
                .replace(&self.name, &PostParams::default(), data),
        )?;
        let (status, body) = self.send("update", req).await?;
        let created = status == StatusCode::CREATED;
        Self::decode("update", &body).map(|l| (l, created))
    }

    async fn watch(
        &self,
        resource_version: Option<String>,
    ) -> Result<BoxStream<'static, Result<WatchEvent, StoreError>>, StoreError> {
        let params = WatchParams::default()
            .fields(&format!("metadata.name={}", self.name))
            .timeout(self.watch_timeout_secs);
        let rv = resource_version.unwrap_or_else(|| "0".to_owned());
        let req = build(self.request.watch(&params, &rv))?;
        let (parts, body) = self.send_raw("watch", req).await?.into_parts();
        if !parts.status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(self.error("watch", parts.status, &parts.headers, &bytes));
        }
        Ok(watch_events(body))
    }
}

/// The Leases of one shard group through a kube-rs [`kube::Client`]: listed and watched with the
/// label selector `leaderd.io/group=<group>`, each read and written by name.
#[derive(Clone)]
pub struct KubeGroupStore {
    client: kube::Client,
    namespace: Arc<str>,
    selector: Arc<str>,
    /// Used for list, watch and error decoding (its name is the group's).
    lister: KubeLeaseStore,
}

impl KubeGroupStore {
    /// The store of group `group` in `namespace`.
    pub fn new(client: kube::Client, namespace: &str, group: &str) -> Self {
        KubeGroupStore {
            lister: KubeLeaseStore::new(client.clone(), namespace, group),
            client,
            namespace: Arc::from(namespace),
            selector: Arc::from(format!("{}={group}", crate::shards::record::GROUP_LABEL)),
        }
    }

    fn one(&self, name: &str) -> KubeLeaseStore {
        KubeLeaseStore::new(self.client.clone(), &self.namespace, name)
    }
}

impl crate::shards::GroupStore for KubeGroupStore {
    async fn list(&self) -> Result<(Vec<StoredLease>, String), StoreError> {
        let params = kube::core::params::ListParams::default().labels(&self.selector);
        let req = build(self.lister.request.list(&params))?;
        let (_, body) = self.lister.send("list", req).await?;
        let v: Value = serde_json::from_slice(&body).map_err(|e| {
            StoreError::unavailable(format!("list leases: the answer is not JSON: {e}"))
        })?;
        let rv = v["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let items = v["items"]
            .as_array()
            .map(|items| {
                items
                    .iter()
                    .filter_map(|i| StoredLease::from_json(i.clone()).ok())
                    .collect()
            })
            .unwrap_or_default();
        Ok((items, rv))
    }

    async fn watch(
        &self,
        resource_version: String,
    ) -> Result<BoxStream<'static, Result<crate::shards::GroupEvent, StoreError>>, StoreError> {
        let params = WatchParams::default()
            .labels(&self.selector)
            .timeout(self.lister.watch_timeout_secs);
        let req = build(self.lister.request.watch(&params, &resource_version))?;
        let (parts, body) = self.lister.send_raw("watch", req).await?.into_parts();
        if !parts.status.is_success() {
            let bytes = body
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            return Err(self
                .lister
                .error("watch", parts.status, &parts.headers, &bytes));
        }
        Ok(group_events(body))
    }

    async fn get(&self, name: &str) -> Result<StoredLease, StoreError> {
        self.one(name).get().await
    }

    async fn create(&self, name: &str, object: Value) -> Result<StoredLease, StoreError> {
        self.one(name).create(object).await
    }

    async fn replace(&self, name: &str, object: Value) -> Result<StoredLease, StoreError> {
        self.one(name).replace(object).await.map(|(l, _)| l)
    }
}

/// A group watch body as [`crate::shards::GroupEvent`]s (the DELETED events keep their name).
fn group_events(
    body: kube::client::Body,
) -> BoxStream<'static, Result<crate::shards::GroupEvent, StoreError>> {
    watch_lines(body, decode_group_line, |e| {
        matches!(e, crate::shards::GroupEvent::Expired)
    })
}

fn decode_group_line(line: &[u8]) -> Result<crate::shards::GroupEvent, StoreError> {
    use crate::shards::GroupEvent;
    let v: Value = serde_json::from_slice(line).map_err(|e| {
        StoreError::unavailable(format!("watch sent something that is not JSON: {e}"))
    })?;
    if v.get("type").and_then(Value::as_str) == Some("DELETED") {
        let name = v["object"]["metadata"]["name"].as_str().unwrap_or("");
        return Ok(GroupEvent::Deleted(name.to_owned()));
    }
    Ok(match decode_watch_line(line)? {
        WatchEvent::Put(l) => GroupEvent::Put(l),
        WatchEvent::Deleted => GroupEvent::Deleted(String::new()),
        WatchEvent::Expired => GroupEvent::Expired,
        WatchEvent::Bookmark(rv) => GroupEvent::Bookmark(rv),
    })
}

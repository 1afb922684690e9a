//! The store: Lease objects, the global resourceVersion counter (shared with Pods, like etcd's
//! revision), Lease watch history with compaction, live event broadcast, list/watch selectors,
//! and the Pods (no watch history; a generation counter tells waiters that some pod changed).

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use serde_json::Value;
use tokio::sync::broadcast;

use super::validate::set_meta;

/// History kept for watches; older events are compacted away.
const MAX_HISTORY: usize = 1000;
/// The counter starts here so that resourceVersions look like real ones and "0" stays special.
const INITIAL_RV: u64 = 1000;

/// One change, as a watch sees it.
#[derive(Debug)]
pub(super) struct Event {
    pub rv: u64,
    /// ADDED, MODIFIED or DELETED.
    pub kind: &'static str,
    pub ns: String,
    pub name: String,
    /// The object after the change (for DELETED: its last state with the deletion's rv).
    pub object: Value,
    /// When the change was committed (taken under the store lock, before anyone can read it).
    pub at: std::time::Instant,
}

impl Event {
    /// The watch line for this event.
    pub fn line(&self) -> Vec<u8> {
        watch_line(self.kind, &self.object)
    }
}

/// `{"type":TYPE,"object":OBJECT}\n`.
pub(super) fn watch_line(kind: &str, object: &Value) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({"type": kind, "object": object}))
        .unwrap_or_default();
    line.push(b'\n');
    line
}

pub(super) struct Store {
    rv: u64,
    objects: BTreeMap<(String, String), Value>,
    history: VecDeque<Arc<Event>>,
    /// Every event with rv > compacted is in `history`.
    compacted: u64,
    events: broadcast::Sender<Arc<Event>>,
    /// core/v1 Pods by (namespace, name); their writes take resourceVersions from `rv` too.
    pods: BTreeMap<(String, String), Value>,
    /// Bumped on every pod write, so tests can wait for a pod change without sleeping.
    pod_gen: tokio::sync::watch::Sender<u64>,
}

/// Where a watch starts.
pub(super) enum WatchStart {
    /// Current objects as ADDED, then everything after `rv`.
    Snapshot { added: Vec<Value>, rv: u64 },
    /// Kept history after the requested version, then everything after `rv`.
    History { events: Vec<Arc<Event>>, rv: u64 },
    /// The requested version is compacted: (requested, oldest kept).
    Expired(u64, u64),
}

impl Store {
    pub fn new() -> Store {
        let (events, _) = broadcast::channel(4096);
        Store {
            rv: INITIAL_RV,
            objects: BTreeMap::new(),
            history: VecDeque::new(),
            compacted: INITIAL_RV,
            events,
            pods: BTreeMap::new(),
            pod_gen: tokio::sync::watch::channel(0).0,
        }
    }

    pub fn current_rv(&self) -> u64 {
        self.rv
    }

    pub fn get(&self, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(ns.to_string(), name.to_string()))
    }

    fn emit(&mut self, ev: Event) {
        let ev = Arc::new(ev);
        self.history.push_back(ev.clone());
        while self.history.len() > MAX_HISTORY {
            if let Some(old) = self.history.pop_front() {
                self.compacted = old.rv;
            }
        }
        // No receivers is fine.
        let _ = self.events.send(ev);
    }

    /// Store `obj` under ns/name with a fresh resourceVersion; emits ADDED or MODIFIED.
    /// Returns the stored object.
    pub fn put(&mut self, ns: &str, name: &str, mut obj: Value) -> Value {
        self.rv += 1;
        let rv = self.rv;
        set_meta(&mut obj, "resourceVersion", &rv.to_string());
        let key = (ns.to_string(), name.to_string());
        let kind = if self.objects.contains_key(&key) {
            "MODIFIED"
        } else {
            "ADDED"
        };
        self.objects.insert(key, obj.clone());
        self.emit(Event {
            rv,
            kind,
            ns: ns.into(),
            name: name.into(),
            object: obj.clone(),
            at: std::time::Instant::now(),
        });
        obj
    }

    /// Remove ns/name; emits DELETED carrying the last state with a new resourceVersion.
    pub fn remove(&mut self, ns: &str, name: &str) -> Option<Value> {
        let mut obj = self.objects.remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        let rv = self.rv;
        set_meta(&mut obj, "resourceVersion", &rv.to_string());
        self.emit(Event {
            rv,
            kind: "DELETED",
            ns: ns.into(),
            name: name.into(),
            object: obj.clone(),
            at: std::time::Instant::now(),
        });
        Some(obj)
    }

    /// Forget all history: watches from any older version get 410.
    pub fn compact(&mut self) {
        self.history.clear();
        self.compacted = self.rv;
    }

    /// Objects in `ns` (all namespaces if None) matching `sel`, ordered by namespace/name.
    pub fn list(&self, ns: Option<&str>, sel: &Selector) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((ons, _), _)| ns.is_none_or(|n| n == ons))
            .filter(|((ons, oname), obj)| sel.matches(ons, oname, obj))
            .map(|(_, obj)| obj.clone())
            .collect()
    }

    pub fn get_pod(&self, ns: &str, name: &str) -> Option<&Value> {
        self.pods.get(&(ns.to_string(), name.to_string()))
    }

    /// Store a pod under ns/name with a fresh resourceVersion from the shared counter; wakes pod
    /// waiters. Returns the stored object.
    pub fn put_pod(&mut self, ns: &str, name: &str, mut obj: Value) -> Value {
        self.rv += 1;
        set_meta(&mut obj, "resourceVersion", &self.rv.to_string());
        self.pods
            .insert((ns.to_string(), name.to_string()), obj.clone());
        self.pod_gen.send_modify(|g| *g = g.wrapping_add(1));
        obj
    }

    /// Remove a pod (a delete is a revision too); wakes pod waiters.
    pub fn remove_pod(&mut self, ns: &str, name: &str) -> Option<Value> {
        let obj = self.pods.remove(&(ns.to_string(), name.to_string()))?;
        self.rv += 1;
        self.pod_gen.send_modify(|g| *g = g.wrapping_add(1));
        Some(obj)
    }

    /// A receiver that sees every later pod write (subscribe before checking, then wait).
    pub fn pod_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.pod_gen.subscribe()
    }

    /// Subscribe to live events; together with `watch_start` under the same lock this gives a
    /// gapless stream.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Event>> {
        self.events.subscribe()
    }

    pub fn watch_start(&self, from: Option<u64>, ns: Option<&str>, sel: &Selector) -> WatchStart {
        match from {
            None | Some(0) => WatchStart::Snapshot {
                added: self.list(ns, sel),
                rv: self.rv,
            },
            Some(n) if n < self.compacted => WatchStart::Expired(n, self.compacted),
            Some(n) => WatchStart::History {
                events: self
                    .history
                    .iter()
                    .filter(|e| e.rv > n && ns.is_none_or(|x| x == e.ns))
                    .filter(|e| sel.matches(&e.ns, &e.name, &e.object))
                    .cloned()
                    .collect(),
                rv: self.rv.max(n),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Selectors

#[derive(Clone, Debug, PartialEq)]
enum FieldReq {
    Eq(&'static str, String),
    Ne(&'static str, String),
}

#[derive(Clone, Debug, PartialEq)]
enum LabelReq {
    Eq(String, String),
    Ne(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

/// A parsed `fieldSelector` plus `labelSelector`.
#[derive(Clone, Debug, Default)]
pub(super) struct Selector {
    fields: Vec<FieldReq>,
    labels: Vec<LabelReq>,
}

/// Split on commas outside parentheses.
fn split_terms(s: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0i32;
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

impl Selector {
    /// Parse the query's selectors; the error is the BadRequest message.
    pub fn parse(field: Option<&str>, label: Option<&str>) -> Result<Selector, String> {
        let mut sel = Selector::default();
        if let Some(f) = field.filter(|f| !f.trim().is_empty()) {
            for term in f.split(',') {
                let term = term.trim();
                let (key, val, eq) = if let Some((k, v)) = term.split_once("!=") {
                    (k, v, false)
                } else if let Some((k, v)) = term.split_once("==") {
                    (k, v, true)
                } else if let Some((k, v)) = term.split_once('=') {
                    (k, v, true)
                } else {
                    return Err(format!(
                        "invalid selector: '{f}'; can't understand '{term}'"
                    ));
                };
                let key: &'static str = match key.trim() {
                    "metadata.name" => "metadata.name",
                    "metadata.namespace" => "metadata.namespace",
                    other => {
                        return Err(format!(
                            "\"{other}\" is not a known field selector: only \"metadata.name\", \"metadata.namespace\""
                        ))
                    }
                };
                let val = val.trim().to_string();
                sel.fields.push(if eq {
                    FieldReq::Eq(key, val)
                } else {
                    FieldReq::Ne(key, val)
                });
            }
        }
        if let Some(l) = label.filter(|l| !l.trim().is_empty()) {
            let bad = |term: &str| {
                format!("unable to parse requirement: found '{term}', expected: identifier")
            };
            for term in split_terms(l) {
                let term = term.trim();
                let req = if let Some((k, v)) = term.split_once("!=") {
                    LabelReq::Ne(k.trim().into(), v.trim().into())
                } else if let Some((k, v)) = term.split_once("==") {
                    LabelReq::Eq(k.trim().into(), v.trim().into())
                } else if let Some((k, v)) = term.split_once('=') {
                    LabelReq::Eq(k.trim().into(), v.trim().into())
                } else if let Some(k) = term.strip_prefix('!') {
                    LabelReq::NotExists(k.trim().into())
                } else if let Some(open) = term.find('(') {
                    let head: Vec<&str> = term[..open].split_whitespace().collect();
                    let body = term[open + 1..]
                        .strip_suffix(')')
                        .ok_or_else(|| bad(term))?;
                    let vals: Vec<String> = body.split(',').map(|v| v.trim().to_string()).collect();
                    match head.as_slice() {
                        [k, "in"] => LabelReq::In(k.to_string(), vals),
                        [k, "notin"] => LabelReq::NotIn(k.to_string(), vals),
                        _ => return Err(bad(term)),
                    }
                } else {
                    LabelReq::Exists(term.into())
                };
                let key = match &req {
                    LabelReq::Eq(k, _)
                    | LabelReq::Ne(k, _)
                    | LabelReq::In(k, _)
                    | LabelReq::NotIn(k, _)
                    | LabelReq::Exists(k)
                    | LabelReq::NotExists(k) => k,
                };
                if key.is_empty() || key.contains(char::is_whitespace) {
                    return Err(bad(term));
                }
                sel.labels.push(req);
            }
        }
        Ok(sel)
    }

    pub fn matches(&self, ns: &str, name: &str, obj: &Value) -> bool {
        let field_ok = self.fields.iter().all(|f| {
            let get = |k: &str| if k == "metadata.name" { name } else { ns };
            match f {
                FieldReq::Eq(k, v) => get(k) == v,
                FieldReq::Ne(k, v) => get(k) != v,
            }
        });
        if !field_ok {
            return false;
        }
        let labels = obj.get("metadata").and_then(|m| m.get("labels"));
        let label = |k: &str| labels.and_then(|l| l.get(k)).and_then(Value::as_str);
        self.labels.iter().all(|r| match r {
            LabelReq::Eq(k, v) => label(k) == Some(v.as_str()),
            LabelReq::Ne(k, v) => label(k) != Some(v.as_str()),
            LabelReq::In(k, vs) => label(k).is_some_and(|l| vs.iter().any(|v| v == l)),
            LabelReq::NotIn(k, vs) => label(k).is_none_or(|l| vs.iter().all(|v| v != l)),
            LabelReq::Exists(k) => label(k).is_some(),
            LabelReq::NotExists(k) => label(k).is_none(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_parse_and_match_fields_and_labels() {
        let obj = json!({"metadata": {"labels": {"app": "x", "tier": "db"}}});
        let s = Selector::parse(Some("metadata.name==a,metadata.namespace=ns"), None).unwrap();
        assert!(s.matches("ns", "a", &obj));
        assert!(!s.matches("ns", "b", &obj));
        let s = Selector::parse(None, Some("app=x,tier in (db, web),!gone,app")).unwrap();
        assert!(s.matches("ns", "a", &obj));
        let s = Selector::parse(None, Some("tier notin (db)")).unwrap();
        assert!(!s.matches("ns", "a", &obj));
        assert!(Selector::parse(Some("spec.holderIdentity=x"), None).is_err());
        assert!(Selector::parse(Some("garbage"), None).is_err());
    }

    #[test]
    fn pods_share_the_resource_version_counter_but_not_the_lease_history() {
        let mut st = Store::new();
        let sel = Selector::default();
        let lease = st.put("ns", "a", json!({"metadata": {}}));
        let pod = st.put_pod("ns", "p", json!({"metadata": {}}));
        let lease_rv: u64 = lease["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let pod_rv: u64 = pod["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(pod_rv, lease_rv + 1);
        assert_eq!(st.current_rv(), pod_rv);
        // A lease watch from before the pod write sees no pod event.
        assert!(matches!(
            st.watch_start(Some(lease_rv), None, &sel),
            WatchStart::History { ref events, .. } if events.is_empty()
        ));
        assert!(st
            .list(None, &sel)
            .iter()
            .all(|o| o["metadata"]["resourceVersion"] != pod["metadata"]["resourceVersion"]));
        let rx = st.pod_changes();
        assert!(!rx.has_changed().unwrap());
        st.remove_pod("ns", "p");
        assert!(rx.has_changed().unwrap());
        assert_eq!(st.current_rv(), pod_rv + 1);
        assert!(st.get_pod("ns", "p").is_none());
    }

    #[test]
    fn history_is_capped_and_compaction_expires_old_versions() {
        let mut st = Store::new();
        let sel = Selector::default();
        let first = st.put("ns", "a", json!({"metadata": {}}));
        let first_rv: u64 = first["metadata"]["resourceVersion"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        for _ in 0..(MAX_HISTORY + 5) {
            st.put("ns", "a", json!({"metadata": {}}));
        }
        assert!(matches!(
            st.watch_start(Some(first_rv), None, &sel),
            WatchStart::Expired(..)
        ));
        let now = st.current_rv();
        assert!(matches!(
            st.watch_start(Some(now - 3), None, &sel),
            WatchStart::History { ref events, .. } if events.len() == 3
        ));
        st.compact();
        assert!(matches!(
            st.watch_start(Some(now - 1), None, &sel),
            WatchStart::Expired(..)
        ));
        assert!(matches!(
            st.watch_start(Some(now), None, &sel),
            WatchStart::History { ref events, .. } if events.is_empty()
        ));
    }
}

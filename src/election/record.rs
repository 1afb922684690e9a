//! The leader-election record as stored in a Lease, decoded leniently from whatever is there.
//!
//! Anyone with RBAC on the Lease can write anything into it, so nothing here trusts the
//! content: every field that is missing, malformed or out of range decodes to `None`
//! instead of failing, and the election logic treats `None` conservatively.

use std::time::SystemTime;

use serde_json::{json, Map, Value};

/// Annotation that a leaderd leader writes together with an empty holder when it releases the
/// lease on purpose. A follower may take a lease over at once only when the holder is empty *and*
/// this marker is present; an empty holder without it (a foreign writer, a client-go release) is
/// treated like any other record and waited out for a full lease duration.
pub const RELEASED_BY_ANNOTATION: &str = "leaderd.io/released-by";

/// Annotation naming the candidate a release was meant for (a priority handover). That candidate
/// may take the lease at once; others keep out for one retry period, the releaser for a lease
/// duration.
pub const RELEASE_TO_ANNOTATION: &str = "leaderd.io/release-to";

/// Annotation in which a leaderd holder states its `--priority`. Only a holder that states one
/// takes part in priority handover.
pub const HOLDER_PRIORITY_ANNOTATION: &str = "leaderd.io/holder-priority";

/// Annotation in which a follower with a higher priority than the holder announces itself.
pub const CANDIDATE_ANNOTATION: &str = "leaderd.io/candidate";

/// The priority of the candidate named in [`CANDIDATE_ANNOTATION`].
pub const CANDIDATE_PRIORITY_ANNOTATION: &str = "leaderd.io/candidate-priority";

/// The spec fields of a Lease that carry the election, decoded leniently.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LeaseRecord {
    /// `spec.holderIdentity`; `None` when missing or empty.
    pub holder: Option<String>,
    /// `spec.leaseDurationSeconds`; `None` when missing, not an integer, or not > 0.
    pub lease_duration_seconds: Option<i64>,
    /// `spec.acquireTime`, kept verbatim.
    pub acquire_time: Option<String>,
    /// `spec.renewTime`, kept verbatim (informational only: never compared with a local clock).
    pub renew_time: Option<String>,
    /// `spec.leaseTransitions`: the fencing epoch. `None` when missing, negative or not an integer.
    pub transitions: Option<i64>,
    /// The identity in the release marker annotation, if any.
    pub released_by: Option<String>,
    /// The candidate a release was meant for ([`RELEASE_TO_ANNOTATION`]).
    pub release_to: Option<String>,
    /// The holder's stated priority ([`HOLDER_PRIORITY_ANNOTATION`]); `None` when absent or not
    /// an integer.
    pub holder_priority: Option<i64>,
    /// A follower's announcement: its priority and identity ([`CANDIDATE_ANNOTATION`]).
    pub candidate: Option<(i64, String)>,
}

/// A Lease object as read from the API: the decoded record plus what is needed to write it back.
#[derive(Clone, Debug, PartialEq)]
pub struct StoredLease {
    /// `metadata.resourceVersion`: opaque, compared for equality only.
    pub resource_version: String,
    /// `metadata.uid`.
    pub uid: Option<String>,
    /// The decoded election record.
    pub record: LeaseRecord,
    /// The whole object as received, so a write preserves fields leaderd does not own
    /// (labels, foreign annotations, owner references).
    pub raw: Value,
}

/// Why a Lease object could not be used at all.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    /// The JSON is not an object or lacks `metadata.resourceVersion`. Not retryable by itself;
    /// the next read may bring a usable object.
    #[error("lease object is malformed: {0}")]
    Malformed(&'static str),
}

impl LeaseRecord {
    /// Decode the election fields from a Lease's `spec` (any JSON; garbage yields `None`s).
    pub fn from_spec(spec: Option<&Value>, annotations: Option<&Value>) -> Self {
        let field = |k: &str| spec.and_then(|s| s.get(k));
        let string = |k: &str| {
            field(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let annotation = |k: &str| {
            annotations
                .and_then(|a| a.get(k))
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        let number = |k: &str| annotation(k).and_then(|v| v.trim().parse::<i64>().ok());
        LeaseRecord {
            holder: string("holderIdentity"),
            lease_duration_seconds: field("leaseDurationSeconds")
                .and_then(Value::as_i64)
                .filter(|d| *d > 0),
            acquire_time: string("acquireTime"),
            renew_time: string("renewTime"),
            transitions: field("leaseTransitions")
                .and_then(Value::as_i64)
                .filter(|t| *t >= 0),
            released_by: annotation(RELEASED_BY_ANNOTATION),
            release_to: annotation(RELEASE_TO_ANNOTATION),
            holder_priority: number(HOLDER_PRIORITY_ANNOTATION),
            candidate: number(CANDIDATE_PRIORITY_ANNOTATION).zip(annotation(CANDIDATE_ANNOTATION)),
        }
    }

    /// Whether `other` carries the same claim (the spec fields): a change of annotations or
    /// labels alone is not a sign of life of the holder, so it does not restart the wait.
    ///
    /// Only a record with a holder and a renewTime can be recognised this way: a holder writes a
    /// new renewTime with every renewal, so an equal one is the same renewal. Records without
    /// them (garbage, a template, a release without marker) all look alike, and a candidate
    /// that missed the versions in between must not take a later one for the one it saw.
    pub fn same_claim(&self, other: &LeaseRecord) -> bool {
        self.holder.is_some()
            && self.renew_time.is_some()
            && self.holder == other.holder
            && self.lease_duration_seconds == other.lease_duration_seconds
            && self.acquire_time == other.acquire_time
            && self.renew_time == other.renew_time
            && self.transitions == other.transitions
    }

    /// Whether the record was released on purpose by a leaderd leader (empty holder + marker).
    pub fn is_released(&self) -> bool {
        self.holder.is_none() && self.released_by.is_some()
    }

    /// The record as a Lease `spec` JSON object.
    pub fn to_spec(&self) -> Value {
        let mut spec = Map::new();
        if let Some(h) = &self.holder {
            spec.insert("holderIdentity".into(), json!(h));
        }
        if let Some(d) = self.lease_duration_seconds {
            spec.insert("leaseDurationSeconds".into(), json!(d));
        }
        if let Some(t) = &self.acquire_time {
            spec.insert("acquireTime".into(), json!(t));
        }
        if let Some(t) = &self.renew_time {
            spec.insert("renewTime".into(), json!(t));
        }
        if let Some(t) = self.transitions {
            spec.insert("leaseTransitions".into(), json!(t));
        }
        Value::Object(spec)
    }
}

impl StoredLease {
    /// Decode a Lease object received from the API.
    pub fn from_json(raw: Value) -> Result<Self, RecordError> {
        if !raw.is_object() {
            return Err(RecordError::Malformed("not a JSON object"));
        }
        let meta = raw.get("metadata");
        let resource_version = meta
            .and_then(|m| m.get("resourceVersion"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or(RecordError::Malformed(
                "metadata.resourceVersion is missing",
            ))?
            .to_owned();
        let uid = meta
            .and_then(|m| m.get("uid"))
            .and_then(Value::as_str)
            .map(str::to_owned);
        let record =
            LeaseRecord::from_spec(raw.get("spec"), meta.and_then(|m| m.get("annotations")));
        Ok(StoredLease {
            resource_version,
            uid,
            record,
            raw,
        })
    }

    /// The object to send in a PUT that replaces this one with `record`, carrying this
    /// object's resourceVersion as the optimistic-concurrency precondition.
    pub fn replaced_with(&self, record: &LeaseRecord) -> Value {
        let mut obj = self.raw.clone();
        set_spec_and_marker(&mut obj, record);
        obj
    }
}

/// A fresh Lease object (for POST) holding `record`; the store fills in name and namespace.
pub fn new_lease_object(record: &LeaseRecord) -> Value {
    let mut obj = json!({
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {},
    });
    set_spec_and_marker(&mut obj, record);
    obj
}

fn set_spec_and_marker(obj: &mut Value, record: &LeaseRecord) {
    let Some(map) = obj.as_object_mut() else {
        return;
    };
    map.insert("spec".into(), record.to_spec());
    let meta = map
        .entry("metadata")
        .or_insert_with(|| Value::Object(Map::new()));
    if !meta.is_object() {
        *meta = Value::Object(Map::new());
    }
    let meta = meta.as_object_mut().expect("just made an object");
    // Server-managed fields that must not be echoed back.
    meta.remove("managedFields");
    let annotations = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Map::new()));
    if !annotations.is_object() {
        *annotations = Value::Object(Map::new());
    }
    let annotations = annotations.as_object_mut().expect("just made an object");
    let mut set = |key: &str, value: Option<String>| match value {
        Some(v) => {
            annotations.insert(key.into(), json!(v));
        }
        None => {
            annotations.remove(key);
        }
    };
    set(RELEASED_BY_ANNOTATION, record.released_by.clone());
    set(RELEASE_TO_ANNOTATION, record.release_to.clone());
    set(
        HOLDER_PRIORITY_ANNOTATION,
        record.holder_priority.map(|p| p.to_string()),
    );
    set(
        CANDIDATE_ANNOTATION,
        record.candidate.as_ref().map(|c| c.1.clone()),
    );
    set(
        CANDIDATE_PRIORITY_ANNOTATION,
        record.candidate.as_ref().map(|c| c.0.to_string()),
    );
    if annotations.is_empty() {
        meta.remove("annotations");
    }
}

/// Format a wall-clock time as a Kubernetes MicroTime: RFC 3339, UTC, exactly six fractional
/// digits (the apiserver rejects any other precision with 400).
pub fn micro_time(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_spec_decodes_to_nones_not_errors() {
        let spec = json!({
            "holderIdentity": "",
            "leaseDurationSeconds": -5,
            "acquireTime": 17,
            "renewTime": null,
            "leaseTransitions": "many",
        });
        let r = LeaseRecord::from_spec(Some(&spec), None);
        assert_eq!(r, LeaseRecord::default());
        let r = LeaseRecord::from_spec(Some(&json!("not an object")), Some(&json!(3)));
        assert_eq!(r, LeaseRecord::default());
    }

    #[test]
    fn huge_transitions_are_kept_and_negative_dropped() {
        let r = LeaseRecord::from_spec(Some(&json!({"leaseTransitions": 2147483647})), None);
        assert_eq!(r.transitions, Some(i32::MAX as i64));
        let r = LeaseRecord::from_spec(Some(&json!({"leaseTransitions": -1})), None);
        assert_eq!(r.transitions, None);
    }

    #[test]
    fn object_without_resource_version_is_malformed() {
        assert!(StoredLease::from_json(json!({"metadata": {}})).is_err());
        assert!(StoredLease::from_json(json!([1, 2])).is_err());
        let ok = StoredLease::from_json(json!({"metadata": {"resourceVersion": "7", "uid": "u"}}))
            .unwrap();
        assert_eq!(ok.resource_version, "7");
        assert_eq!(ok.uid.as_deref(), Some("u"));
    }

    #[test]
    fn replace_keeps_foreign_metadata_and_sets_release_marker() {
        let stored = StoredLease::from_json(json!({
            "metadata": {"name": "l", "resourceVersion": "9", "labels": {"a": "b"},
                         "annotations": {"other": "x"}, "managedFields": []},
            "spec": {"holderIdentity": "a", "leaseTransitions": 3}
        }))
        .unwrap();
        let released = LeaseRecord {
            transitions: Some(3),
            released_by: Some("a".into()),
            ..Default::default()
        };
        let out = stored.replaced_with(&released);
        assert_eq!(out["metadata"]["resourceVersion"], "9");
        assert_eq!(out["metadata"]["labels"]["a"], "b");
        assert_eq!(out["metadata"]["annotations"]["other"], "x");
        assert_eq!(out["metadata"]["annotations"][RELEASED_BY_ANNOTATION], "a");
        assert!(out["metadata"].get("managedFields").is_none());
        assert!(out["spec"].get("holderIdentity").is_none());
        let back = StoredLease::from_json(json!({"metadata": {"resourceVersion": "10",
            "annotations": out["metadata"]["annotations"].clone()}, "spec": out["spec"].clone()}))
        .unwrap();
        assert!(back.record.is_released());
        // Acquiring clears the marker again.
        let held = LeaseRecord {
            holder: Some("b".into()),
            ..Default::default()
        };
        let out = back.replaced_with(&held);
        assert!(out["metadata"]["annotations"]
            .get(RELEASED_BY_ANNOTATION)
            .is_none());
        assert_eq!(out["metadata"]["annotations"]["other"], "x");
    }

    #[test]
    fn micro_time_has_exactly_six_fraction_digits() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(micro_time(t), "2023-11-14T22:13:20.123000Z");
    }
}

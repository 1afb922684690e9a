//! The two kinds of record a shard group keeps in Leases, decoded leniently: a member's record
//! (one Lease per replica) and the coordinator's assignment (one Lease per group).
//!
//! Both ride in an annotation as JSON beside ordinary Lease spec fields (holder, duration,
//! renew time), so `kubectl get leases` still reads well. Anyone with RBAC can write anything
//! there: a record that does not decode is `None`, and the state machine treats `None` as
//! "unknown", which is never "settled".

use std::collections::BTreeMap;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::election::record::micro_time;
use crate::election::StoredLease;

/// Label carried by every Lease of a group: the group's name. Replicas list and watch the group
/// with this label selector.
pub const GROUP_LABEL: &str = "leaderd.io/group";
/// Label saying which kind of record a group Lease holds: `member` or `assignment`.
pub const ROLE_LABEL: &str = "leaderd.io/role";
/// Annotation holding a [`MemberRecord`] as JSON.
pub const MEMBER_ANNOTATION: &str = "leaderd.io/member";
/// Annotation holding an [`Assignment`] as JSON.
pub const ASSIGNMENT_ANNOTATION: &str = "leaderd.io/assignment";
/// The most shards a group may have (the assignment must fit in one annotation).
pub const MAX_SHARDS: u32 = 4096;

/// The Lease holding the member record of `identity` in `group`: `<group>-m-<hash>`, where the
/// hash (FNV-1a, 32 bits) keeps the name a valid DNS subdomain whatever the identity is.
pub fn member_lease_name(group: &str, identity: &str) -> String {
    let mut h: u32 = 0x811c_9dc5;
    for b in identity.as_bytes() {
        h ^= u32::from(*b);
        h = h.wrapping_mul(0x0100_0193);
    }
    format!("{group}-m-{h:08x}")
}

/// The Lease holding the group's assignment: `<group>-shards`.
pub fn assignment_lease_name(group: &str) -> String {
    format!("{group}-shards")
}

/// The longest group name that leaves room for the member and assignment suffixes.
pub const MAX_GROUP_NAME: usize = 253 - "-m-00000000".len();

/// Which assignment a member has read and acts on.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    /// `metadata.uid` of the assignment Lease (a recreated Lease is another assignment).
    pub uid: String,
    /// Its generation.
    pub gen: u64,
}

/// What one replica states about itself, in its member Lease.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberRecord {
    /// The replica's identity (also `spec.holderIdentity`).
    #[serde(default)]
    pub identity: String,
    /// Random per process start (and per rejoin): tells a restart from a renewal.
    pub inc: String,
    /// The shard count this replica was started with.
    pub n: u32,
    /// The newest assignment this replica has read and acts on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack: Option<Ack>,
    /// Shards this replica claims, with their epochs. A claim is listed *before* it is valid.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub claims: BTreeMap<u32, i64>,
    /// Claims of this identity's previous process, kept listed until they have surely ended.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub ghosts: BTreeMap<u32, i64>,
    /// Claims that ran out without being moved (the replica asks for a new epoch).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub lapsed: BTreeMap<u32, i64>,
    /// The replica is leaving (shutdown, `POST /shards/release`) and claims nothing.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub leaving: bool,
    /// The coordinator ended this record after it went unrenewed for a lease duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub evicted_by: Option<String>,
    /// The highest epoch of any shard this replica has seen: the floor of a rebuilt
    /// assignment's epochs when the assignment was lost (deleted, garbage).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hi: i64,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

impl MemberRecord {
    /// Whether the record may claim `shard` (listed as a claim or a ghost).
    pub fn lists(&self, shard: u32) -> bool {
        self.claims.contains_key(&shard) || self.ghosts.contains_key(&shard)
    }

    /// Whether the record can hold no claim now or later without a newer assignment: evicted,
    /// or leaving with nothing listed.
    pub fn is_out(&self) -> bool {
        self.evicted_by.is_some()
            || (self.leaving && self.claims.is_empty() && self.ghosts.is_empty())
    }

    /// Every (shard, epoch) the record names, for the highest epochs seen.
    pub fn epochs(&self) -> impl Iterator<Item = (u32, i64)> + '_ {
        self.claims
            .iter()
            .chain(&self.ghosts)
            .chain(&self.lapsed)
            .map(|(s, e)| (*s, *e))
    }
}

/// The coordinator's assignment of every shard of the group.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Assignment {
    /// The shard count.
    pub n: u32,
    /// Generation: +1 with every change.
    pub gen: u64,
    /// The roster: every (identity, incarnation) whose member Lease must be settled before a
    /// shard is claimed anew (live members, and vanished ones not yet waited out).
    pub members: Vec<(String, String)>,
    /// Per shard: the index into `members` of its owner, or -1.
    pub owner: Vec<i32>,
    /// Per shard: the fencing epoch of its current owner's tenure.
    pub epoch: Vec<i64>,
    /// Per shard: the generation that gave the shard to its current owner. Every member must
    /// have acknowledged it (or be out) before the owner may claim the shard.
    pub since: Vec<u64>,
}

impl Assignment {
    /// Whether the vectors agree with `n` and every owner index is in range.
    pub fn is_consistent(&self) -> bool {
        let n = self.n as usize;
        self.n >= 1
            && self.n <= MAX_SHARDS
            && self.owner.len() == n
            && self.epoch.len() == n
            && self.since.len() == n
            && self
                .owner
                .iter()
                .all(|o| *o >= -1 && (*o as i64) < self.members.len() as i64)
            && self.since.iter().all(|s| *s <= self.gen)
            && self.epoch.iter().all(|e| *e >= 0)
    }

    /// The owner of `shard`: (identity, incarnation).
    pub fn owner_of(&self, shard: u32) -> Option<&(String, String)> {
        let i = *self.owner.get(shard as usize)?;
        if i < 0 {
            return None;
        }
        self.members.get(i as usize)
    }
}

/// A member Lease as decoded: `None` when the annotation is missing or garbage.
pub fn decode_member(lease: &StoredLease) -> Option<MemberRecord> {
    let text = annotation(&lease.raw, MEMBER_ANNOTATION)?;
    let mut r: MemberRecord = serde_json::from_str(text).ok()?;
    if r.inc.is_empty() || r.n == 0 || r.n > MAX_SHARDS {
        return None;
    }
    if r.identity.is_empty() {
        r.identity = lease.record.holder.clone()?;
    }
    let n = r.n;
    if r.epochs().any(|(s, e)| s >= n || e < 1) || r.hi < 0 {
        return None;
    }
    Some(r)
}

/// The assignment Lease as decoded: `None` when missing, garbage or inconsistent.
pub fn decode_assignment(lease: &StoredLease) -> Option<Assignment> {
    let text = annotation(&lease.raw, ASSIGNMENT_ANNOTATION)?;
    let a: Assignment = serde_json::from_str(text).ok()?;
    a.is_consistent().then_some(a)
}

fn annotation<'a>(raw: &'a Value, key: &str) -> Option<&'a str> {
    raw.get("metadata")?.get("annotations")?.get(key)?.as_str()
}

/// What to write into a group Lease: the holder shown by `kubectl`, its duration, and the JSON
/// annotation.
pub struct GroupWrite<'a> {
    /// `spec.holderIdentity`.
    pub holder: &'a str,
    /// `spec.leaseDurationSeconds`.
    pub lease_duration_seconds: i64,
    /// `spec.renewTime`.
    pub now: SystemTime,
    /// The group (label).
    pub group: &'a str,
    /// `member` or `assignment` (label).
    pub role: &'a str,
    /// The annotation key and its JSON.
    pub annotation: (&'a str, String),
}

impl GroupWrite<'_> {
    /// `base` (the stored object, whose resourceVersion is the precondition; `None` for a
    /// create) with this write applied; foreign labels and annotations are kept.
    pub fn object(&self, base: Option<&StoredLease>) -> Value {
        let mut obj = match base {
            Some(b) => b.raw.clone(),
            None => {
                json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {}})
            }
        };
        let Some(map) = obj.as_object_mut() else {
            return obj;
        };
        let mut spec = Map::new();
        spec.insert("holderIdentity".into(), json!(self.holder));
        spec.insert(
            "leaseDurationSeconds".into(),
            json!(self.lease_duration_seconds),
        );
        spec.insert("renewTime".into(), json!(micro_time(self.now)));
        map.insert("spec".into(), Value::Object(spec));
        let meta = map.entry("metadata").or_insert_with(|| json!({}));
        if !meta.is_object() {
            *meta = json!({});
        }
        let meta = meta.as_object_mut().expect("an object");
        meta.remove("managedFields");
        for (key, entries) in [
            (
                "labels",
                vec![
                    (GROUP_LABEL, self.group.to_owned()),
                    (ROLE_LABEL, self.role.to_owned()),
                ],
            ),
            (
                "annotations",
                vec![(self.annotation.0, self.annotation.1.clone())],
            ),
        ] {
            let m = meta.entry(key).or_insert_with(|| json!({}));
            if !m.is_object() {
                *m = json!({});
            }
            let m = m.as_object_mut().expect("an object");
            for (k, v) in entries {
                m.insert(k.into(), json!(v));
            }
        }
        obj
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(annotations: Value, holder: &str) -> StoredLease {
        StoredLease::from_json(json!({
            "metadata": {"name": "x", "resourceVersion": "7", "uid": "u", "annotations": annotations},
            "spec": {"holderIdentity": holder},
        }))
        .unwrap()
    }

    #[test]
    fn names_are_dns_subdomains_whatever_the_identity() {
        let n = member_lease_name("payments", "Pod_With Spaces/ünïcode");
        assert!(crate::config::is_dns_subdomain(&n), "{n}");
        assert_eq!(n, member_lease_name("payments", "Pod_With Spaces/ünïcode"));
        assert_ne!(n, member_lease_name("payments", "other"));
        assert_eq!(assignment_lease_name("g"), "g-shards");
    }

    #[test]
    fn a_member_record_round_trips_and_garbage_is_none() {
        let r = MemberRecord {
            identity: "a".into(),
            inc: "1f".into(),
            n: 12,
            ack: Some(Ack {
                uid: "u".into(),
                gen: 3,
            }),
            claims: [(1, 4), (5, 2)].into(),
            ..Default::default()
        };
        let w = GroupWrite {
            holder: "a",
            lease_duration_seconds: 15,
            now: SystemTime::UNIX_EPOCH,
            group: "g",
            role: "member",
            annotation: (MEMBER_ANNOTATION, serde_json::to_string(&r).unwrap()),
        };
        let mut obj = w.object(None);
        obj["metadata"]["resourceVersion"] = json!("1");
        let back = decode_member(&StoredLease::from_json(obj).unwrap()).unwrap();
        assert_eq!(back, r);
        for garbage in [
            json!({MEMBER_ANNOTATION: "not json"}),
            json!({MEMBER_ANNOTATION: "{\"inc\":\"\",\"n\":3}"}),
            json!({MEMBER_ANNOTATION: "{\"inc\":\"a\",\"n\":3,\"claims\":{\"3\":1}}"}),
            json!({MEMBER_ANNOTATION: "{\"inc\":\"a\",\"n\":3,\"claims\":{\"1\":0}}"}),
            json!({MEMBER_ANNOTATION: "{\"inc\":\"a\",\"n\":3,\"surprise\":1}"}),
            json!({MEMBER_ANNOTATION: 5}),
            json!({}),
        ] {
            assert_eq!(
                decode_member(&stored(garbage.clone(), "a")),
                None,
                "{garbage}"
            );
        }
    }

    #[test]
    fn an_inconsistent_assignment_is_none() {
        let good = Assignment {
            n: 2,
            gen: 4,
            members: vec![("a".into(), "1".into())],
            owner: vec![0, -1],
            epoch: vec![3, 0],
            since: vec![4, 0],
        };
        let ok = stored(
            json!({ASSIGNMENT_ANNOTATION: serde_json::to_string(&good).unwrap()}),
            "a",
        );
        assert_eq!(decode_assignment(&ok), Some(good.clone()));
        for bad in [
            Assignment {
                owner: vec![1, -1],
                ..good.clone()
            },
            Assignment {
                since: vec![5, 0],
                ..good.clone()
            },
            Assignment {
                epoch: vec![1],
                ..good.clone()
            },
            Assignment { n: 0, ..good },
        ] {
            let l = stored(
                json!({ASSIGNMENT_ANNOTATION: serde_json::to_string(&bad).unwrap()}),
                "a",
            );
            assert_eq!(decode_assignment(&l), None, "{bad:?}");
        }
    }
}

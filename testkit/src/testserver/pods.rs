//! core/v1 Pods, minimal but faithful where a client that labels its own pod looks: GET, and
//! PATCH (merge, strategic merge with the pod's list merge keys, JSON patch, apply on an existing
//! pod as a merge patch) with kube-apiserver's
//! decode check, name check, resourceVersion precondition, `PrepareForUpdate` (status kept) and
//! the metadata part of `ValidatePodUpdate` (labels, annotations, spec immutability).
//! Pods are created by the test itself ([`super::TestServer::put_pod`]); the server lists,
//! creates, replaces and deletes none (405).

use axum::extract::Request;
use axum::response::Response;
use serde_json::{json, Map, Value};

use super::request::{
    apply_patch, check_name, dry_run, keep_system_fields, parse_rv, patch_decode_error, read_patch,
    PatchRequest,
};
use super::status::{self, go_quote, ApiError, FieldError, PODS};
use super::validate::{
    found, json_type, meta_str, read_string, read_string_map, set_meta, validate_annotations,
    validate_labels, DecodeError,
};
use super::{json_response, lock, Shared};

const API_VERSION: &str = "v1";
const KIND: &str = "Pod";
/// The image of the pods [`minimal_pod`] makes (never pulled: nothing runs them).
pub(super) const IMAGE: &str = "leaderd-test/app:1";

/// `ValidatePodUpdate`'s words when the spec changed beyond what may change. (The real message
/// goes on with a Go object diff after a newline; this server leaves the diff out.)
const SPEC_FORBIDDEN: &str = "pod updates may not change fields other than `spec.containers[*].image`, `spec.initContainers[*].image`, `spec.activeDeadlineSeconds` or `spec.tolerations` (only additions to existing tolerations)";

/// A pod as a v1.20 apiserver stores one created with a single container and no node: the
/// defaulted spec and the Pending status.
pub(super) fn minimal_pod(
    ns: &str,
    name: &str,
    uid: &str,
    created: &str,
    labels: &[(&str, &str)],
) -> Value {
    let mut meta = Map::new();
    meta.insert("name".into(), json!(name));
    meta.insert("namespace".into(), json!(ns));
    meta.insert("uid".into(), json!(uid));
    meta.insert("creationTimestamp".into(), json!(created));
    if !labels.is_empty() {
        let labels: Map<String, Value> = labels
            .iter()
            .map(|(k, v)| ((*k).to_string(), json!(v)))
            .collect();
        meta.insert("labels".into(), Value::Object(labels));
    }
    json!({
        "kind": KIND,
        "apiVersion": API_VERSION,
        "metadata": meta,
        "spec": {
            "containers": [{
                "name": "app",
                "image": IMAGE,
                "resources": {},
                "terminationMessagePath": "/dev/termination-log",
                "terminationMessagePolicy": "File",
                "imagePullPolicy": "IfNotPresent"
            }],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "default",
            "serviceAccount": "default",
            "securityContext": {},
            "schedulerName": "default-scheduler",
            "enableServiceLinks": true,
            "priority": 0,
            "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {"phase": "Pending", "qosClass": "BestEffort"}
    })
}

/// Check that a patched pod decodes the way json-iterator would decode it into a `v1.Pod` (the
/// fields a metadata patch can break: kind, apiVersion, the metadata strings and string maps,
/// spec and status being objects), and normalise it: kind/apiVersion set, null label and
/// annotation values read as "", empty maps dropped. Other fields are kept as they are.
fn decode_pod(doc: &Value) -> Result<Value, String> {
    let Value::Object(top) = doc else {
        return Err(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            json_type(doc)
        ));
    };
    match top.get("apiVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() || s == API_VERSION => {}
        Some(Value::String(s)) => {
            return Err(format!(
                "the API version in the data ({s}) does not match the expected API version ({API_VERSION})"
            ))
        }
        Some(_) => {
            return Err("couldn't get version/kind; json parse error: json: cannot unmarshal into Go struct field .apiVersion of type string".into())
        }
    }
    match top.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() || s == KIND => {}
        Some(Value::String(s)) => {
            return Err(format!(
                "no kind {} is registered for version {}",
                go_quote(s),
                go_quote(API_VERSION)
            ))
        }
        Some(_) => {
            return Err("couldn't get version/kind; json parse error: json: cannot unmarshal into Go struct field .kind of type string".into())
        }
    }
    let field = |e: DecodeError| match e {
        DecodeError::Plain(m) | DecodeError::Field(m) => m,
    };
    let mut out = top.clone();
    out.insert("kind".into(), json!(KIND));
    out.insert("apiVersion".into(), json!(API_VERSION));
    match top.get("metadata") {
        None | Some(Value::Null) => {
            out.insert("metadata".into(), json!({}));
        }
        Some(Value::Object(meta)) => {
            const P: &str = "v1.Pod.ObjectMeta: v1.ObjectMeta";
            let mut meta_out = meta.clone();
            for (key, go) in [
                ("name", "Name"),
                ("generateName", "GenerateName"),
                ("namespace", "Namespace"),
                ("uid", "UID"),
                ("resourceVersion", "ResourceVersion"),
            ] {
                if let Some(v) = meta.get(key) {
                    match read_string(v, &format!("{P}.{go}")).map_err(field)? {
                        Some(s) if !s.is_empty() => {}
                        _ => {
                            meta_out.remove(key);
                        }
                    }
                }
            }
            for (key, go) in [("labels", "Labels"), ("annotations", "Annotations")] {
                if let Some(v) = meta.get(key) {
                    match read_string_map(v, &format!("{P}.{go}")).map_err(field)? {
                        Some(m) if !m.is_empty() => {
                            let m: Map<String, Value> = m
                                .into_iter()
                                .map(|(k, v)| (k, if v.is_null() { json!("") } else { v }))
                                .collect();
                            meta_out.insert(key.into(), Value::Object(m));
                        }
                        _ => {
                            meta_out.remove(key);
                        }
                    }
                }
            }
            out.insert("metadata".into(), Value::Object(meta_out));
        }
        Some(other) => {
            return Err(format!(
                "v1.Pod.ObjectMeta: readObjectStart: expect {{ or n, but found {}",
                found(other)
            ))
        }
    }
    for (key, go) in [("spec", "Spec"), ("status", "Status")] {
        match top.get(key) {
            None | Some(Value::Null) | Some(Value::Object(_)) => {}
            Some(other) => {
                return Err(format!(
                    "v1.Pod.{go}: readObjectStart: expect {{ or n, but found {}",
                    found(other)
                ))
            }
        }
    }
    Ok(Value::Object(out))
}

/// The `patchMergeKey`s of core/v1 Pod lists, for strategic merge patches ("" merges a list of
/// primitives as a set). Lists not named here are replaced.
fn pod_merge_keys(path: &str) -> Option<&'static str> {
    let container_list = |p: &str| {
        [
            "spec.containers.",
            "spec.initContainers.",
            "spec.ephemeralContainers.",
        ]
        .iter()
        .find_map(|c| p.strip_prefix(c))
        .map(str::to_string)
    };
    match path {
        "metadata.ownerReferences" => Some("uid"),
        "metadata.finalizers" => Some(""),
        "spec.containers"
        | "spec.initContainers"
        | "spec.ephemeralContainers"
        | "spec.volumes"
        | "spec.imagePullSecrets" => Some("name"),
        "spec.hostAliases" => Some("ip"),
        "spec.topologySpreadConstraints" => Some("topologyKey"),
        "status.conditions" => Some("type"),
        p => match container_list(p).as_deref() {
            Some("env") => Some("name"),
            Some("ports") => Some("containerPort"),
            Some("volumeMounts") => Some("mountPath"),
            Some("volumeDevices") => Some("devicePath"),
            _ => None,
        },
    }
}

/// The spec with what `ValidatePodUpdate` lets change put back to the old values: container and
/// init container images, activeDeadlineSeconds, and tolerations when only added to.
fn munged_spec(new: &Value, old: &Value) -> Value {
    let mut m = new.clone();
    for list in ["containers", "initContainers"] {
        let old_list = old.get(list).and_then(Value::as_array);
        if let (Some(items), Some(old_items)) =
            (m.get_mut(list).and_then(Value::as_array_mut), old_list)
        {
            for (c, o) in items.iter_mut().zip(old_items) {
                if let (Some(c), Some(image)) = (c.as_object_mut(), o.get("image")) {
                    c.insert("image".into(), image.clone());
                }
            }
        }
    }
    if let Some(m) = m.as_object_mut() {
        match old.get("activeDeadlineSeconds") {
            Some(v) => m.insert("activeDeadlineSeconds".into(), v.clone()),
            None => m.remove("activeDeadlineSeconds"),
        };
        let old_tol = old
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        let new_tol = m
            .get("tolerations")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        if old_tol.iter().all(|t| new_tol.contains(t)) {
            match old.get("tolerations") {
                Some(v) => m.insert("tolerations".into(), v.clone()),
                None => m.remove("tolerations"),
            };
        }
    }
    m
}

/// `ValidatePodUpdate` as far as this server models it. Metadata is validated twice, as the real
/// one does (`ValidateObjectMetaUpdate`, then `ValidateObjectMeta` within the pod's own
/// validation), so a bad label is two identical causes under one message.
fn validate_pod_update(new: &Value, old: &Value) -> Vec<FieldError> {
    let meta = new.get("metadata");
    let labels = meta
        .and_then(|m| m.get("labels"))
        .and_then(Value::as_object);
    let annotations = meta
        .and_then(|m| m.get("annotations"))
        .and_then(Value::as_object);
    let mut meta_errs = validate_labels(labels, "metadata.labels");
    meta_errs.extend(validate_annotations(annotations, "metadata.annotations"));
    let mut errs = meta_errs.clone();
    errs.extend(meta_errs);
    let null = Value::Null;
    let new_spec = new.get("spec").unwrap_or(&null);
    let old_spec = old.get("spec").unwrap_or(&null);
    if munged_spec(new_spec, old_spec) != *old_spec {
        errs.push(FieldError::forbidden("spec", SPEC_FORBIDDEN));
    }
    errs
}

fn invalid_pod(name: &str, errs: &[FieldError]) -> ApiError {
    status::invalid("", KIND, name, errs)
}

/// GET: 200 with the pod, or 404 `pods "NAME" not found`.
pub(super) fn get(shared: &Shared, ns: &str, name: &str) -> Result<Response, ApiError> {
    let st = lock(&shared.store);
    let pod = st
        .get_pod(ns, name)
        .ok_or_else(|| status::not_found_of(&PODS, name))?;
    Ok(json_response(200, pod))
}

/// PATCH: 200 with the whole pod. A patch that changes nothing writes nothing (etcd3's
/// `GuaranteedUpdate` skips identical bytes), so the resourceVersion stays.
pub(super) async fn patch(
    shared: &Shared,
    ns: &str,
    name: &str,
    req: Request,
) -> Result<Response, ApiError> {
    let PatchRequest {
        kind,
        doc: patch_doc,
        query,
    } = read_patch(req).await?;
    let dry = dry_run(&query);
    let mut st = lock(&shared.store);
    // (Server-side apply would create a missing pod; this server creates pods only through
    // `put_pod`, so apply to a missing pod is 404 like the other patch types.)
    let Some(old) = st.get_pod(ns, name).cloned() else {
        return Err(status::not_found_of(&PODS, name));
    };
    let mut doc = old.clone();
    apply_patch(kind, &mut doc, &patch_doc, Some(pod_merge_keys))?;
    let mut obj = decode_pod(&doc).map_err(|detail| patch_decode_error(&doc, &detail))?;
    check_name(&mut obj, ns, name)?;
    let old_rv = meta_str(&old, "resourceVersion").to_string();
    let rv = meta_str(&obj, "resourceVersion");
    if !rv.is_empty() && rv != old_rv {
        parse_rv(rv)?;
        return Err(status::conflict_of(&PODS, name));
    }
    let uid = meta_str(&obj, "uid");
    if !uid.is_empty() && uid != meta_str(&old, "uid") {
        return Err(invalid_pod(
            name,
            &[FieldError::invalid(
                "metadata.uid",
                &go_quote(uid),
                "field is immutable",
            )],
        ));
    }
    // Pods allow unconditional updates: a patch that drops the resourceVersion updates the latest.
    set_meta(&mut obj, "resourceVersion", &old_rv);
    keep_system_fields(&mut obj, &old);
    // PrepareForUpdate: the status is written through pods/status only.
    if let Some(o) = obj.as_object_mut() {
        match old.get("status") {
            Some(s) => o.insert("status".into(), s.clone()),
            None => o.remove("status"),
        };
    }
    let errs = validate_pod_update(&obj, &old);
    if !errs.is_empty() {
        return Err(invalid_pod(name, &errs));
    }
    if obj == old || dry {
        return Ok(json_response(200, &obj));
    }
    let stored = st.put_pod(ns, name, obj);
    Ok(json_response(200, &stored))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        minimal_pod("ns", "p", "u-1", "2026-11-22T07:30:00Z", &[("app", "x")])
    }

    #[test]
    fn minimal_pod_decodes_as_a_k8s_openapi_pod() {
        let p: k8s_openapi::api::core::v1::Pod = serde_json::from_value(pod()).unwrap();
        assert_eq!(p.metadata.labels.unwrap()["app"], "x");
        assert_eq!(p.spec.unwrap().containers[0].image.as_deref(), Some(IMAGE));
        assert_eq!(p.status.unwrap().phase.as_deref(), Some("Pending"));
        let bare = minimal_pod("ns", "p", "u", "t", &[]);
        assert!(bare["metadata"].get("labels").is_none());
    }

    #[test]
    fn decode_pod_rejects_non_string_labels_and_drops_empty_maps() {
        let mut p = pod();
        p["metadata"]["labels"] = json!({"a": 1});
        assert_eq!(
            decode_pod(&p).unwrap_err(),
            "v1.Pod.ObjectMeta: v1.ObjectMeta.Labels: ReadString: expects \" or n, but found 1"
        );
        p["metadata"]["labels"] = json!({});
        assert!(decode_pod(&p).unwrap()["metadata"].get("labels").is_none());
        p["metadata"]["labels"] = json!({"a": null});
        assert_eq!(decode_pod(&p).unwrap()["metadata"]["labels"]["a"], "");
        p["spec"] = json!([]);
        assert!(decode_pod(&p).is_err());
        assert!(decode_pod(&json!([])).is_err());
        assert!(decode_pod(&json!({"kind": "Lease"})).is_err());
    }

    #[test]
    fn only_images_deadline_and_added_tolerations_may_change_in_the_spec() {
        let old = pod();
        let mut new = old.clone();
        new["spec"]["containers"][0]["image"] = json!("other:2");
        new["spec"]["activeDeadlineSeconds"] = json!(30);
        new["spec"]["tolerations"] = json!([{"key": "k", "operator": "Exists"}]);
        assert!(validate_pod_update(&new, &old).is_empty());
        new["spec"]["restartPolicy"] = json!("Never");
        let errs = validate_pod_update(&new, &old);
        assert_eq!(errs.len(), 1);
        assert_eq!(errs[0].field, "spec");
        assert_eq!(errs[0].reason, "FieldValueForbidden");
    }

    #[test]
    fn a_bad_label_is_two_identical_causes_like_the_real_validation() {
        let old = pod();
        let mut new = old.clone();
        new["metadata"]["labels"]["k"] = json!("bad value!");
        let errs = validate_pod_update(&new, &old);
        assert_eq!(errs.len(), 2);
        assert_eq!(errs[0].body, errs[1].body);
        let e = invalid_pod("p", &errs);
        assert_eq!(e.code, 422);
        assert_eq!(e.body["details"]["causes"].as_array().unwrap().len(), 2);
        assert!(e.body["message"].as_str().unwrap().starts_with(
            "Pod \"p\" is invalid: metadata.labels: Invalid value: \"bad value!\": a valid label"
        ));
        // One message (Go's aggregate drops duplicates), not a "[a, b]" list.
        assert!(!e.body["message"]
            .as_str()
            .unwrap()
            .contains("is invalid: ["));
    }
}

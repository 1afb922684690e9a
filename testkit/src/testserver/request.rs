//! What the handlers of every resource share: the query (dry run), bodies (size limit, media
//! types), resourceVersion parsing, the name check, the system fields kept on update, and
//! PATCH requests read, decoded and applied, all with kube-apiserver's answers.

use std::collections::HashMap;

use axum::extract::{Query, Request};
use http::Uri;
use serde_json::Value;

use super::patch::{json_patch, merge_patch, strategic_merge_patch, JsonPatchError, MergeKeys};
use super::status::{self, go_quote, ApiError, FieldError};
use super::validate::{meta_str, set_meta};

/// The kube-apiserver request body limit.
pub(super) const MAX_BODY: usize = 3 * 1024 * 1024;

pub(super) fn query(uri: &Uri) -> Result<HashMap<String, String>, ApiError> {
    Query::<HashMap<String, String>>::try_from_uri(uri)
        .map(|q| q.0)
        .map_err(|e| status::bad_request(format!("invalid query: {e}")))
}

pub(super) fn dry_run(q: &HashMap<String, String>) -> bool {
    q.get("dryRun").is_some_and(|v| v == "All")
}

/// Read the whole body (413 beyond the apiserver's limit).
pub(super) async fn body_bytes(req: Request) -> Result<bytes::Bytes, ApiError> {
    axum::body::to_bytes(req.into_body(), MAX_BODY)
        .await
        .map_err(|_| status::too_large(MAX_BODY))
}

/// The media type of a request (lowercase, without parameters).
pub(super) fn media_type(req: &Request) -> String {
    req.headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// Read a create/update body: JSON (also when no type is given) or YAML; else 415.
pub(super) async fn read_object_body(req: Request) -> Result<Value, ApiError> {
    let media = media_type(&req);
    let bytes = body_bytes(req).await?;
    match media.as_str() {
        "" | "application/json" | "*/*" => parse_json(&bytes),
        "application/yaml" => serde_yaml::from_slice(&bytes).map_err(|e| {
            status::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        }),
        _ => Err(status::unsupported_media_type(&[
            "application/json",
            "application/yaml",
            "application/vnd.kubernetes.protobuf",
        ])),
    }
}

pub(super) fn parse_json(bytes: &[u8]) -> Result<Value, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        status::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
    })
}

/// Go's `ParseResourceVersion` error as the storage layer returns it (422).
fn bad_rv(rv: &str) -> ApiError {
    status::invalid(
        "",
        "",
        "",
        &[FieldError::invalid(
            "resourceVersion",
            &go_quote(rv),
            &format!(
                "strconv.ParseUint: parsing {}: invalid syntax",
                go_quote(rv)
            ),
        )],
    )
}

pub(super) fn parse_rv(rv: &str) -> Result<u64, ApiError> {
    rv.parse::<u64>().map_err(|_| bad_rv(rv))
}

/// `checkName`: the object's name/namespace must match the URL.
pub(super) fn check_name(obj: &mut Value, ns: &str, name: &str) -> Result<(), ApiError> {
    let obj_name = meta_str(obj, "name");
    if obj_name != name {
        return Err(status::bad_request(format!(
            "the name of the object ({obj_name}) does not match the name on the URL ({name})"
        )));
    }
    let obj_ns = meta_str(obj, "namespace");
    if !obj_ns.is_empty() && obj_ns != ns {
        return Err(status::bad_request(format!(
            "the namespace of the object ({obj_ns}) does not match the namespace on the URL ({ns})"
        )));
    }
    set_meta(obj, "namespace", ns);
    Ok(())
}

/// Carry the system fields of `old` over to `new` (uid if unset, creationTimestamp).
pub(super) fn keep_system_fields(new: &mut Value, old: &Value) {
    if meta_str(new, "uid").is_empty() {
        set_meta(new, "uid", meta_str(old, "uid"));
    }
    set_meta(new, "creationTimestamp", meta_str(old, "creationTimestamp"));
}

#[derive(Clone, Copy, PartialEq, Debug)]
pub(super) enum PatchKind {
    Merge,
    Strategic,
    Json,
    Apply,
}

/// A PATCH request read and decoded: its type, the patch document and the query.
pub(super) struct PatchRequest {
    pub kind: PatchKind,
    pub doc: Value,
    pub query: HashMap<String, String>,
}

/// Read a PATCH: 415 for an unknown content type, 400 for server-side apply without a
/// fieldManager and for a body that does not parse.
pub(super) async fn read_patch(req: Request) -> Result<PatchRequest, ApiError> {
    let q = query(req.uri())?;
    let ct = req
        .headers()
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    let kind = match media.as_str() {
        "application/merge-patch+json" => PatchKind::Merge,
        "application/strategic-merge-patch+json" => PatchKind::Strategic,
        "application/json-patch+json" => PatchKind::Json,
        "application/apply-patch+yaml" => PatchKind::Apply,
        _ => {
            return Err(status::unsupported_media_type(&[
                "application/json-patch+json",
                "application/merge-patch+json",
                "application/strategic-merge-patch+json",
                "application/apply-patch+yaml",
            ]))
        }
    };
    if kind == PatchKind::Apply && q.get("fieldManager").is_none_or(|m| m.is_empty()) {
        return Err(status::bad_request(
            "PATCH request must have fieldManager query parameter for server-side apply",
        ));
    }
    let bytes = body_bytes(req).await?;
    let doc: Value = if kind == PatchKind::Apply {
        serde_yaml::from_slice(&bytes)
            .map_err(|e| status::bad_request(format!("error decoding YAML: {e}")))?
    } else {
        serde_json::from_slice(&bytes).map_err(|_| match kind {
            PatchKind::Json => status::bad_request(
                "json: cannot unmarshal into Go value of type jsonpatch.Patch (invalid JSON)",
            ),
            _ => status::bad_request("Invalid JSON Patch"),
        })?
    };
    Ok(PatchRequest {
        kind,
        doc,
        query: q,
    })
}

/// Apply a patch to the current object's JSON. A strategic merge patch merges the lists that
/// `strategic` names by their keys (without it, it acts as a merge patch, as apply does).
pub(super) fn apply_patch(
    kind: PatchKind,
    doc: &mut Value,
    patch: &Value,
    strategic: Option<MergeKeys>,
) -> Result<(), ApiError> {
    match (kind, strategic) {
        (PatchKind::Strategic, Some(keys)) => {
            strategic_merge_patch(doc, patch, keys);
            Ok(())
        }
        (PatchKind::Merge | PatchKind::Strategic | PatchKind::Apply, _) => {
            merge_patch(doc, patch);
            Ok(())
        }
        (PatchKind::Json, _) => json_patch(doc, patch).map_err(|e| match e {
            JsonPatchError::Decode(m) => status::bad_request(m),
            JsonPatchError::Apply(m) => status::unprocessable_patch(&m),
        }),
    }
}

/// The patched JSON does not decode into the type: 422 on the field "patch", showing the JSON.
pub(super) fn patch_decode_error(doc: &Value, detail: &str) -> ApiError {
    let shown = go_quote(&serde_json::to_string(doc).unwrap_or_default());
    status::invalid("", "", "", &[FieldError::invalid("patch", &shown, detail)])
}

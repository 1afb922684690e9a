//! Request routing and the Lease verbs (get, list, create, update, patch, delete) with
//! kube-apiserver's ordering of decode, name checks, preconditions and validation. The Pod verbs
//! are in `pods.rs`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::Request;
use axum::response::Response;
use http::{Method, Uri};
use serde_json::{json, Map, Value};

use super::patch::merge_patch;
use super::request::{
    apply_patch, body_bytes, check_name, dry_run, keep_system_fields, parse_rv, patch_decode_error,
    query, read_object_body, read_patch, PatchKind, PatchRequest,
};
use super::status::{
    self, go_quote, ApiError, FieldError, Resource, GROUP, LEASES, PODS, RESOURCE,
};
use super::store::{Selector, Store};
use super::validate::{decode_lease, meta_str, set_meta, validate_lease, DecodeError, API_VERSION};
use super::{error_response, json_response, lock, new_uid, now_rfc3339, pods, watch, Shared};

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq)]
pub(super) enum Route {
    /// `/apis/coordination.k8s.io/v1[/namespaces/{ns}]/leases`; `ns` None = all namespaces.
    Collection {
        ns: Option<String>,
    },
    /// `/apis/coordination.k8s.io/v1/namespaces/{ns}/leases/{name}`.
    Object {
        ns: String,
        name: String,
    },
    /// `/api/v1[/namespaces/{ns}]/pods`: not served (405).
    Pods {
        ns: Option<String>,
    },
    /// `/api/v1/namespaces/{ns}/pods/{name}`: get and patch.
    Pod {
        ns: String,
        name: String,
    },
    /// `/apis/events.k8s.io/v1/namespaces/{ns}/events[/{name}]`: stored for tests, not validated.
    Events {
        ns: String,
        name: Option<String>,
    },
    /// `/version`.
    Version,
    Unknown,
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

impl Route {
    pub fn parse(path: &str) -> Route {
        let Some(segs) = path
            .split('/')
            .skip(1)
            .map(percent_decode)
            .collect::<Option<Vec<String>>>()
        else {
            return Route::Unknown;
        };
        let segs: Vec<&str> = segs.iter().map(String::as_str).collect();
        match segs.as_slice() {
            ["version"] | ["version", ""] => Route::Version,
            ["apis", "coordination.k8s.io", "v1", "leases"] => Route::Collection { ns: None },
            ["api", "v1", "pods"] => Route::Pods { ns: None },
            ["api", "v1", "namespaces", ns, "pods"] if !ns.is_empty() => Route::Pods {
                ns: Some(ns.to_string()),
            },
            ["api", "v1", "namespaces", ns, "pods", name] if !ns.is_empty() && !name.is_empty() => {
                Route::Pod {
                    ns: ns.to_string(),
                    name: name.to_string(),
                }
            }
            ["apis", "events.k8s.io", "v1", "namespaces", ns, "events"] if !ns.is_empty() => {
                Route::Events {
                    ns: ns.to_string(),
                    name: None,
                }
            }
            ["apis", "events.k8s.io", "v1", "namespaces", ns, "events", name]
                if !ns.is_empty() && !name.is_empty() =>
            {
                Route::Events {
                    ns: ns.to_string(),
                    name: Some(name.to_string()),
                }
            }
            ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases"] if !ns.is_empty() => {
                Route::Collection {
                    ns: Some(ns.to_string()),
                }
            }
            ["apis", "coordination.k8s.io", "v1", "namespaces", ns, "leases", name]
                if !ns.is_empty() && !name.is_empty() =>
            {
                Route::Object {
                    ns: ns.to_string(),
                    name: name.to_string(),
                }
            }
            _ => Route::Unknown,
        }
    }

    /// The RBAC verb of a request on this route.
    pub fn verb(&self, method: &Method, uri: &Uri) -> String {
        let verb = match (self, method.as_str()) {
            (Route::Collection { .. } | Route::Pods { .. }, "GET") => {
                if is_watch(&query(uri).unwrap_or_default()) {
                    "watch"
                } else {
                    "list"
                }
            }
            (Route::Collection { .. } | Route::Pods { .. }, "POST") => "create",
            (Route::Collection { .. } | Route::Pods { .. }, "DELETE") => "deletecollection",
            (Route::Object { .. } | Route::Pod { .. }, "GET") => "get",
            (Route::Object { .. } | Route::Pod { .. }, "PUT") => "update",
            (Route::Object { .. } | Route::Pod { .. }, "PATCH") => "patch",
            (Route::Object { .. } | Route::Pod { .. }, "DELETE") => "delete",
            (Route::Events { name: None, .. }, "POST") => "create",
            (Route::Events { name: Some(_), .. }, "PATCH") => "patch",
            (_, m) => return m.to_ascii_lowercase(),
        };
        verb.to_string()
    }

    /// (resource, namespace, name) for RBAC denials, on lease and pod routes.
    pub fn rbac_scope(&self) -> Option<(Resource, &str, &str)> {
        match self {
            Route::Collection { ns } => Some((LEASES, ns.as_deref().unwrap_or(""), "")),
            Route::Object { ns, name } => Some((LEASES, ns, name)),
            Route::Pods { ns } => Some((PODS, ns.as_deref().unwrap_or(""), "")),
            Route::Pod { ns, name } => Some((PODS, ns, name)),
            _ => None,
        }
    }

    /// The resource a request addresses: "leases", "pods", "events"; "" for other paths.
    pub fn resource(&self) -> &'static str {
        match self {
            Route::Collection { .. } | Route::Object { .. } => LEASES.plural,
            Route::Pods { .. } | Route::Pod { .. } => PODS.plural,
            Route::Events { .. } => "events",
            Route::Version | Route::Unknown => "",
        }
    }
}

fn is_watch(q: &HashMap<String, String>) -> bool {
    matches!(
        q.get("watch").map(String::as_str),
        Some("1" | "true" | "True")
    )
}

/// Dispatch a request that passed the fault injection.
pub(super) async fn handle(
    shared: Arc<Shared>,
    client: String,
    route: &Route,
    req: Request,
) -> Response {
    let result = match route {
        Route::Unknown => Err(status::unknown_path()),
        Route::Version => {
            if req.method() == Method::GET {
                Ok(json_response(
                    200,
                    &json!({
                        "major": "1", "minor": "20", "gitVersion": "v1.20.2-leaderd-testserver",
                        "gitCommit": "0000000000000000000000000000000000000000",
                        "gitTreeState": "clean", "buildDate": "2021-01-13T13:20:00Z",
                        "goVersion": "go1.15.5", "compiler": "gc", "platform": "linux/amd64"
                    }),
                ))
            } else {
                Err(status::method_not_allowed(req.method().as_str()))
            }
        }
        Route::Collection { ns } => match *req.method() {
            Method::GET => list_or_watch(&shared, client, ns.as_deref(), req.uri()),
            Method::POST if ns.is_some() => create(&shared, ns.as_deref().unwrap_or(""), req).await,
            _ => Err(status::method_not_allowed(req.method().as_str())),
        },
        Route::Events { ns, name } => events(&shared, ns, name.as_deref(), req).await,
        // The test server keeps pods for tests that label their own pod; it lists and creates none.
        Route::Pods { .. } => Err(status::method_not_allowed(req.method().as_str())),
        Route::Pod { ns, name } => match *req.method() {
            Method::GET => pods::get(&shared, ns, name),
            Method::PATCH => pods::patch(&shared, ns, name, req).await,
            _ => Err(status::method_not_allowed(req.method().as_str())),
        },
        Route::Object { ns, name } => match *req.method() {
            Method::GET => get(&shared, ns, name),
            Method::PUT => update(&shared, ns, name, req).await,
            Method::PATCH => patch(&shared, ns, name, req).await,
            Method::DELETE => delete(&shared, ns, name, req).await,
            _ => Err(status::method_not_allowed(req.method().as_str())),
        },
    };
    result.unwrap_or_else(error_response)
}

/// Events: POST stores (201, 409 on a taken name), PATCH merges (200, 404), GET lists.
async fn events(
    shared: &Shared,
    ns: &str,
    name: Option<&str>,
    req: Request,
) -> Result<Response, ApiError> {
    let method = req.method().clone();
    let body = |b: &[u8]| -> Result<Value, ApiError> {
        serde_json::from_slice::<Value>(b)
            .ok()
            .filter(Value::is_object)
            .ok_or_else(|| status::bad_request("the event is not a JSON object".to_owned()))
    };
    match (method, name) {
        (Method::GET, None) => {
            let items: Vec<Value> = lock(&shared.events)
                .iter()
                .filter(|e| meta_str(e, "namespace") == ns)
                .cloned()
                .collect();
            Ok(json_response(
                200,
                &json!({"kind": "EventList", "apiVersion": "events.k8s.io/v1", "metadata": {}, "items": items}),
            ))
        }
        (Method::POST, None) => {
            let mut ev = body(&body_bytes(req).await?)?;
            let evname = meta_str(&ev, "name").to_owned();
            let mut all = lock(&shared.events);
            if all.iter().any(|e| meta_str(e, "name") == evname.as_str()) {
                return Err(status::already_exists(&evname));
            }
            ev["metadata"]["namespace"] = json!(ns);
            ev["metadata"]["uid"] = json!(new_uid());
            ev["metadata"]["resourceVersion"] = json!("1");
            all.push(ev.clone());
            Ok(json_response(201, &ev))
        }
        (Method::PATCH, Some(n)) => {
            let patch = body(&body_bytes(req).await?)?;
            let mut all = lock(&shared.events);
            let ev = all
                .iter_mut()
                .find(|e| meta_str(e, "name") == n)
                .ok_or_else(|| status::not_found(n))?;
            merge_patch(ev, &patch);
            Ok(json_response(200, ev))
        }
        (m, _) => Err(status::method_not_allowed(m.as_str())),
    }
}

fn get(shared: &Shared, ns: &str, name: &str) -> Result<Response, ApiError> {
    let st = lock(&shared.store);
    let obj = st.get(ns, name).ok_or_else(|| status::not_found(name))?;
    Ok(json_response(200, obj))
}

fn list_or_watch(
    shared: &Arc<Shared>,
    client: String,
    ns: Option<&str>,
    uri: &Uri,
) -> Result<Response, ApiError> {
    let q = query(uri)?;
    let sel = Selector::parse(
        q.get("fieldSelector").map(String::as_str),
        q.get("labelSelector").map(String::as_str),
    )
    .map_err(status::bad_request)?;
    if is_watch(&q) {
        let from = match q.get("resourceVersion").map(String::as_str) {
            None | Some("") => None,
            Some(rv) => Some(parse_rv(rv)?),
        };
        let timeout = match q.get("timeoutSeconds").map(String::as_str) {
            None | Some("") | Some("0") => None,
            Some(t) => Some(t.parse::<u64>().map_err(|_| {
                status::bad_request(format!("invalid timeoutSeconds: {}", go_quote(t)))
            })?),
        }
        .map(Duration::from_secs)
        // Like the real default: a random 30 to 60 minutes.
        .unwrap_or_else(|| Duration::from_secs(1800 + fastrand::u64(0..1800)));
        return Ok(watch::watch_response(
            shared.clone(),
            client,
            ns.map(str::to_string),
            sel,
            from,
            timeout,
        ));
    }
    let limit = match q.get("limit").map(String::as_str) {
        None | Some("") | Some("0") => None,
        Some(l) => Some(
            l.parse::<usize>()
                .map_err(|_| status::bad_request(format!("invalid limit: {}", go_quote(l))))?,
        ),
    };
    let cont = q.get("continue").cloned().unwrap_or_default();
    let st = lock(&shared.store);
    let mut items: Vec<Value> = st
        .list(ns, &sel)
        .into_iter()
        .filter(|o| {
            cont.is_empty() || {
                let key = format!("{}/{}", meta_str(o, "namespace"), meta_str(o, "name"));
                key.as_str() > cont.as_str()
            }
        })
        .collect();
    let mut meta = Map::new();
    meta.insert(
        "resourceVersion".into(),
        Value::String(st.current_rv().to_string()),
    );
    if let Some(limit) = limit {
        if items.len() > limit {
            let remaining = items.len() - limit;
            items.truncate(limit);
            if let Some(last) = items.last() {
                let key = format!("{}/{}", meta_str(last, "namespace"), meta_str(last, "name"));
                meta.insert("continue".into(), Value::String(key));
                meta.insert("remainingItemCount".into(), json!(remaining));
            }
        }
    }
    for item in &mut items {
        if let Some(o) = item.as_object_mut() {
            o.remove("kind");
            o.remove("apiVersion");
        }
    }
    Ok(json_response(
        200,
        &json!({"kind": "LeaseList", "apiVersion": API_VERSION, "metadata": meta, "items": items}),
    ))
}

/// Fill the server-set fields of a new object and store it (unless dry-run).
fn store_new(st: &mut Store, ns: &str, name: &str, mut obj: Value, dry: bool) -> Value {
    set_meta(&mut obj, "resourceVersion", "");
    set_meta(&mut obj, "uid", &new_uid());
    set_meta(&mut obj, "creationTimestamp", &now_rfc3339());
    if dry {
        return obj;
    }
    st.put(ns, name, obj)
}

/// `generateName` + 5 random characters, like the apiserver's name generator.
fn generate_name(prefix: &str) -> String {
    const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut cut = prefix.len().min(253 - 5);
    while !prefix.is_char_boundary(cut) {
        cut -= 1;
    }
    let prefix = &prefix[..cut];
    let suffix: String = (0..5)
        .map(|_| char::from(ALPHANUMS[fastrand::usize(0..ALPHANUMS.len())]))
        .collect();
    format!("{prefix}{suffix}")
}

fn invalid_lease(name: &str, errs: &[FieldError]) -> ApiError {
    status::invalid(GROUP, "Lease", name, errs)
}

async fn create(shared: &Shared, ns: &str, req: Request) -> Result<Response, ApiError> {
    let q = query(req.uri())?;
    let body = read_object_body(req).await?;
    let mut obj = decode_lease(&body).map_err(|e| status::bad_request(e.message()))?;
    let body_ns = meta_str(&obj, "namespace");
    if !body_ns.is_empty() && body_ns != ns {
        return Err(status::bad_request(
            "the namespace of the provided object does not match the namespace sent on the request",
        ));
    }
    set_meta(&mut obj, "namespace", ns);
    if meta_str(&obj, "name").is_empty() && !meta_str(&obj, "generateName").is_empty() {
        let name = generate_name(meta_str(&obj, "generateName"));
        set_meta(&mut obj, "name", &name);
    }
    let name = meta_str(&obj, "name").to_string();
    let errs = validate_lease(&obj);
    if !errs.is_empty() {
        return Err(invalid_lease(&name, &errs));
    }
    // etcd3's Create refuses a parseable non-zero resourceVersion (a plain error: 500 Unknown);
    // anything else is cleared.
    if meta_str(&obj, "resourceVersion")
        .parse::<u64>()
        .is_ok_and(|rv| rv != 0)
    {
        return Err(status::unknown_error(
            500,
            "resourceVersion should not be set on objects to be created",
        ));
    }
    let mut st = lock(&shared.store);
    if st.get(ns, &name).is_some() {
        return Err(status::already_exists(&name));
    }
    let created = store_new(&mut st, ns, &name, obj, dry_run(&q));
    Ok(json_response(201, &created))
}

async fn update(shared: &Shared, ns: &str, name: &str, req: Request) -> Result<Response, ApiError> {
    let q = query(req.uri())?;
    let body = read_object_body(req).await?;
    let mut obj = decode_lease(&body).map_err(|e| status::bad_request(e.message()))?;
    check_name(&mut obj, ns, name)?;
    let dry = dry_run(&q);
    let mut st = lock(&shared.store);
    let Some(old) = st.get(ns, name).cloned() else {
        // A uid in the body is a precondition that no missing object meets (seen on a real
        // v1.20 server: 409 from the storage layer, before any validation).
        let uid = meta_str(&obj, "uid");
        if !uid.is_empty() {
            return Err(status::conflict_with(
                name,
                &format!(
                    "StorageError: invalid object, Code: 4, Key: /registry/leases/{ns}/{name}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {uid}, UID in object meta: "
                ),
            ));
        }
        // Leases allow create-on-update, whatever resourceVersion the body carries.
        set_meta(&mut obj, "resourceVersion", "");
        let errs = validate_lease(&obj);
        if !errs.is_empty() {
            return Err(invalid_lease(name, &errs));
        }
        let created = store_new(&mut st, ns, name, obj, dry);
        return Ok(json_response(201, &created));
    };
    let uid = meta_str(&obj, "uid");
    let old_uid = meta_str(&old, "uid");
    if !uid.is_empty() && uid != old_uid {
        return Err(status::conflict_with(
            name,
            &format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {old_uid}"
            ),
        ));
    }
    let rv = meta_str(&obj, "resourceVersion");
    if rv.is_empty() || parse_rv(rv)? == 0 {
        return Err(status::invalid(
            GROUP,
            RESOURCE,
            name,
            &[FieldError::invalid(
                "metadata.resourceVersion",
                "0x0",
                "must be specified for an update",
            )],
        ));
    }
    if rv != meta_str(&old, "resourceVersion") {
        return Err(status::conflict(name));
    }
    keep_system_fields(&mut obj, &old);
    let errs = validate_lease(&obj);
    if !errs.is_empty() {
        return Err(invalid_lease(name, &errs));
    }
    let stored = if dry { obj } else { st.put(ns, name, obj) };
    Ok(json_response(200, &stored))
}

async fn patch(shared: &Shared, ns: &str, name: &str, req: Request) -> Result<Response, ApiError> {
    let PatchRequest {
        kind,
        doc: patch_doc,
        query: q,
    } = read_patch(req).await?;
    let dry = dry_run(&q);
    let mut st = lock(&shared.store);
    let Some(old) = st.get(ns, name).cloned() else {
        if kind != PatchKind::Apply {
            return Err(status::not_found(name));
        }
        // Server-side apply creates.
        let mut obj = decode_lease(&patch_doc).map_err(|e| status::bad_request(e.message()))?;
        check_name(&mut obj, ns, name)?;
        let errs = validate_lease(&obj);
        if !errs.is_empty() {
            return Err(invalid_lease(name, &errs));
        }
        let created = store_new(&mut st, ns, name, obj, dry);
        return Ok(json_response(201, &created));
    };
    let mut doc = old.clone();
    apply_patch(kind, &mut doc, &patch_doc, None)?;
    let mut obj = decode_lease(&doc).map_err(|e| {
        let detail = match e {
            DecodeError::Plain(m) | DecodeError::Field(m) => m,
        };
        patch_decode_error(&doc, &detail)
    })?;
    check_name(&mut obj, ns, name)?;
    let old_rv = meta_str(&old, "resourceVersion");
    let rv = meta_str(&obj, "resourceVersion");
    if !rv.is_empty() && rv != old_rv {
        parse_rv(rv)?;
        return Err(status::conflict(name));
    }
    let uid = meta_str(&obj, "uid");
    if !uid.is_empty() && uid != meta_str(&old, "uid") {
        return Err(invalid_lease(
            name,
            &[FieldError::invalid(
                "metadata.uid",
                &go_quote(uid),
                "field is immutable",
            )],
        ));
    }
    keep_system_fields(&mut obj, &old);
    let errs = validate_lease(&obj);
    if !errs.is_empty() {
        return Err(invalid_lease(name, &errs));
    }
    let stored = if dry { obj } else { st.put(ns, name, obj) };
    Ok(json_response(200, &stored))
}

async fn delete(shared: &Shared, ns: &str, name: &str, req: Request) -> Result<Response, ApiError> {
    let q = query(req.uri())?;
    let bytes = body_bytes(req).await?;
    let opts = if bytes.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice::<Value>(&bytes).map_err(|e| {
            status::bad_request(format!("couldn't get version/kind; json parse error: {e}"))
        })?
    };
    let pre = opts.get("preconditions");
    let want_uid = pre.and_then(|p| p.get("uid")).and_then(Value::as_str);
    let want_rv = pre
        .and_then(|p| p.get("resourceVersion"))
        .and_then(Value::as_str);
    let mut st = lock(&shared.store);
    let old = st.get(ns, name).ok_or_else(|| status::not_found(name))?;
    let uid = meta_str(old, "uid").to_string();
    if let Some(w) = want_uid.filter(|w| *w != uid) {
        return Err(status::conflict_with(
            name,
            &format!("Precondition failed: UID in precondition: {w}, UID in object meta: {uid}"),
        ));
    }
    let rv = meta_str(old, "resourceVersion");
    if let Some(w) = want_rv.filter(|w| *w != rv) {
        return Err(status::conflict_with(
            name,
            &format!("Precondition failed: ResourceVersion in precondition: {w}, ResourceVersion in object meta: {rv}"),
        ));
    }
    if !dry_run(&q) {
        st.remove(ns, name);
    }
    Ok(json_response(
        200,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
                "details": {"name": name, "group": GROUP, "kind": RESOURCE, "uid": uid}}),
    ))
}

#[cfg(test)]
mod route_tests {
    use super::*;

    #[test]
    fn routes_parse_lease_paths_and_reject_the_rest() {
        assert_eq!(
            Route::parse("/apis/coordination.k8s.io/v1/namespaces/ns/leases"),
            Route::Collection {
                ns: Some("ns".into())
            }
        );
        assert_eq!(
            Route::parse("/apis/coordination.k8s.io/v1/namespaces/ns/leases/a%2Eb"),
            Route::Object {
                ns: "ns".into(),
                name: "a.b".into()
            }
        );
        assert_eq!(
            Route::parse("/apis/coordination.k8s.io/v1/leases"),
            Route::Collection { ns: None }
        );
        assert_eq!(Route::parse("/version"), Route::Version);
        assert_eq!(
            Route::parse("/api/v1/namespaces/ns/pods/p-1"),
            Route::Pod {
                ns: "ns".into(),
                name: "p-1".into()
            }
        );
        assert_eq!(
            Route::parse("/api/v1/namespaces/ns/pods"),
            Route::Pods {
                ns: Some("ns".into())
            }
        );
        assert_eq!(Route::parse("/api/v1/pods"), Route::Pods { ns: None });
        assert_eq!(Route::parse("/api/v1/pods").resource(), "pods");
        assert_eq!(Route::parse("/version").resource(), "");
        for p in [
            "/",
            "",
            "/apis/coordination.k8s.io/v1/namespaces//leases",
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases/",
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases/a/status",
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases/%zz",
            "/apis/coordination.k8s.io/v1/namespaces/ns/leases/%ff",
            "/api/v1/namespaces/ns/pods/p/status",
            "/api/v1/namespaces//pods/p",
            "/api/v1/namespaces/ns/pods/",
        ] {
            assert_eq!(Route::parse(p), Route::Unknown, "{p}");
        }
    }
}

//! The Lease API answers that leaderd depends on, asked of a server through kube-rs over HTTP:
//! always of the project's test server, and also of a real kube-apiserver when
//! `LEADERD_REAL_KUBECONFIG` names a kubeconfig for one (see `scripts/kube-apiserver.sh`).
//! The same expectations for both are what keeps the test server honest. Pods too: GET, merge /
//! strategic / JSON patches of labels and the 422 for a bad label (the pod itself is made with
//! `put_pod` on the test server, which creates no pods, and with a POST on a real one).

use std::time::Duration;

use futures::StreamExt;
use http_body_util::BodyExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use leaderd_testkit::testserver::TestServer;
use serde_json::{json, Value};

const BASE: &str = "/apis/coordination.k8s.io/v1/namespaces/default/leases";
const PODS: &str = "/api/v1/namespaces/default/pods";
const MERGE: &str = "application/merge-patch+json";

struct Api {
    client: kube::Client,
}

struct Answer {
    code: u16,
    body: Value,
}

impl Api {
    async fn from_kubeconfig_yaml(yaml: &str) -> Api {
        let kc = Kubeconfig::from_yaml(yaml).expect("kubeconfig parses");
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .expect("config");
        Api {
            client: kube::Client::try_from(cfg).expect("client"),
        }
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: Option<Value>,
    ) -> Answer {
        let bytes = body
            .map(|b| serde_json::to_vec(&b).unwrap())
            .unwrap_or_default();
        let req = http::Request::builder()
            .method(method)
            .uri(path)
            .header("content-type", content_type)
            .body(kube::client::Body::from(bytes))
            .unwrap();
        let res = self.client.send(req).await.expect("an answer");
        let code = res.status().as_u16();
        let raw = res.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&raw)
            .unwrap_or(Value::String(String::from_utf8_lossy(&raw).into()));
        Answer { code, body }
    }

    async fn get(&self, name: &str) -> Answer {
        self.call("GET", &format!("{BASE}/{name}"), "application/json", None)
            .await
    }
    async fn create(&self, obj: Value) -> Answer {
        self.call("POST", BASE, "application/json", Some(obj)).await
    }
    async fn put(&self, name: &str, obj: Value) -> Answer {
        self.call(
            "PUT",
            &format!("{BASE}/{name}"),
            "application/json",
            Some(obj),
        )
        .await
    }
}

fn lease(name: &str, spec: Value) -> Value {
    json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": {"name": name}, "spec": spec})
}

fn rv(a: &Answer) -> String {
    a.body["metadata"]["resourceVersion"]
        .as_str()
        .expect("resourceVersion")
        .to_owned()
}

#[track_caller]
fn status(a: &Answer, code: u16, reason: &str) {
    assert_eq!(a.code, code, "{}", a.body);
    assert_eq!(a.body["kind"], "Status", "{}", a.body);
    assert_eq!(a.body["status"], "Failure");
    assert_eq!(a.body["code"], code);
    assert_eq!(a.body["reason"], reason, "{}", a.body);
}

async fn conformance(api: &Api, prefix: &str) {
    let n = |s: &str| format!("{prefix}-{s}");
    let spec = json!({"holderIdentity": "a", "leaseDurationSeconds": 15,
                      "renewTime": "2026-11-22T07:30:00.123456Z", "leaseTransitions": 1});

    // GET missing: 404 NotFound with the exact message and details.
    let a = api.get(&n("x")).await;
    status(&a, 404, "NotFound");
    assert_eq!(
        a.body["message"],
        format!("leases.coordination.k8s.io \"{}\" not found", n("x"))
    );
    assert_eq!(a.body["details"]["kind"], "leases");
    assert_eq!(a.body["details"]["group"], "coordination.k8s.io");

    // POST: 201 with server fields; unknown spec fields dropped; again: 409 AlreadyExists.
    let mut obj = lease(&n("a"), spec.clone());
    obj["spec"]["noSuchField"] = json!(1);
    let created = api.create(obj.clone()).await;
    assert_eq!(created.code, 201, "{}", created.body);
    assert!(created.body["metadata"]["uid"].is_string());
    assert!(created.body["metadata"]["creationTimestamp"].is_string());
    assert!(created.body["spec"].get("noSuchField").is_none());
    assert_eq!(
        created.body["spec"]["renewTime"],
        "2026-11-22T07:30:00.123456Z"
    );
    status(&api.create(obj).await, 409, "AlreadyExists");

    // PUT with the current resourceVersion: 200 and a new one; with the old one: 409 Conflict.
    let v1 = rv(&created);
    let mut upd = created.body.clone();
    upd["spec"]["holderIdentity"] = json!("b");
    let a = api.put(&n("a"), upd.clone()).await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_ne!(rv(&a), v1);
    let a = api.put(&n("a"), upd.clone()).await;
    status(&a, 409, "Conflict");
    assert_eq!(
        a.body["message"],
        format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{}\": the object has been modified; please apply your changes to the latest version and try again", n("a"))
    );
    // PUT without resourceVersion: 422.
    let mut no_rv = upd.clone();
    no_rv["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let a = api.put(&n("a"), no_rv).await;
    status(&a, 422, "Invalid");
    assert!(
        a.body["message"]
            .as_str()
            .unwrap()
            .contains("must be specified for an update"),
        "{}",
        a.body
    );
    // PUT of a missing object, even with a resourceVersion: 201 (create-on-update).
    let mut other = lease(&n("c"), spec.clone());
    other["metadata"]["resourceVersion"] = json!(v1);
    let a = api.put(&n("c"), other).await;
    assert_eq!(a.code, 201, "{}", a.body);
    // ... but not when the body carries a uid (as every write of leaderd does: the object it
    // read): that precondition no missing object meets, 409, so a stale write never brings a
    // deleted Lease back.
    let mut gone = a.body.clone();
    let uid = gone["metadata"]["uid"].as_str().expect("a uid").to_owned();
    let path = format!("{BASE}/{}", n("c"));
    let deleted = api.call("DELETE", &path, "application/json", None).await;
    assert_eq!(deleted.code, 200, "{}", deleted.body);
    gone["spec"]["holderIdentity"] = json!("late-writer");
    let a = api.put(&n("c"), gone).await;
    status(&a, 409, "Conflict");
    assert_eq!(
        a.body["message"],
        format!("Operation cannot be fulfilled on leases.coordination.k8s.io \"{}\": StorageError: invalid object, Code: 4, Key: /registry/leases/default/{}, ResourceVersion: 0, AdditionalErrorMsg: Precondition failed: UID in precondition: {uid}, UID in object meta: ", n("c"), n("c"))
    );
    assert_eq!(api.get(&n("c")).await.code, 404);
    // Name in the body differs from the URL: 400.
    status(
        &api.put(&n("a"), lease("other-name", spec.clone())).await,
        400,
        "BadRequest",
    );

    // MicroTime must have six fractional digits: 400, not 422.
    for bad in ["2026-11-22T07:30:00Z", "2026-11-22T07:30:00.123Z"] {
        let a = api.create(lease(&n("t"), json!({"renewTime": bad}))).await;
        status(&a, 400, "BadRequest");
        assert!(
            a.body["message"]
                .as_str()
                .unwrap()
                .contains("2006-01-02T15:04:05.000000Z07:00"),
            "{}",
            a.body
        );
    }
    // leaseDurationSeconds 0: 422 with a cause on the field; int32 overflow: 400.
    let a = api
        .create(lease(&n("d"), json!({"leaseDurationSeconds": 0})))
        .await;
    status(&a, 422, "Invalid");
    assert_eq!(
        a.body["details"]["causes"][0]["field"],
        "spec.leaseDurationSeconds"
    );
    let a = api
        .create(lease(&n("o"), json!({"leaseTransitions": 2147483648u64})))
        .await;
    status(&a, 400, "BadRequest");

    // PATCH: a stale resourceVersion in a merge patch is a precondition; other types 415.
    let path = format!("{BASE}/{}", n("a"));
    let a = api
        .call(
            "PATCH",
            &path,
            "application/merge-patch+json",
            Some(json!({"metadata": {"resourceVersion": v1}, "spec": {"holderIdentity": "z"}})),
        )
        .await;
    status(&a, 409, "Conflict");
    let a = api
        .call(
            "PATCH",
            &path,
            "application/merge-patch+json",
            Some(json!({"spec": {"holderIdentity": "m"}})),
        )
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["spec"]["holderIdentity"], "m");
    let a = api
        .call(
            "PATCH",
            &path,
            "application/json-patch+json",
            Some(json!([{"op": "test", "path": "/spec/holderIdentity", "value": "nope"}])),
        )
        .await;
    status(&a, 422, "Invalid");
    let a = api
        .call("PATCH", &path, "text/plain", Some(json!({})))
        .await;
    assert_eq!(a.code, 415, "{}", a.body);

    // Watch with a field selector, from "0": the current object as ADDED, then changes.
    let current = api.get(&n("a")).await;
    let watch_path = format!(
        "{BASE}?watch=1&fieldSelector=metadata.name%3D{}&resourceVersion=0&timeoutSeconds=10",
        n("a")
    );
    let req = http::Request::get(&watch_path)
        .body(kube::client::Body::from(Vec::new()))
        .unwrap();
    let res = api.client.send(req).await.unwrap();
    assert_eq!(res.status(), 200);
    let mut lines = LineStream::new(res.into_body());
    let first = lines.next_json().await;
    assert_eq!(first["type"], "ADDED");
    assert_eq!(
        first["object"]["metadata"]["resourceVersion"],
        current.body["metadata"]["resourceVersion"]
    );
    let mut upd = current.body.clone();
    upd["spec"]["holderIdentity"] = json!("w");
    assert_eq!(api.put(&n("a"), upd).await.code, 200);
    let ev = lines.next_json().await;
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["spec"]["holderIdentity"], "w");

    // DELETE: 200 Status Success, then 404; the watch sees DELETED.
    let a = api.call("DELETE", &path, "application/json", None).await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["status"], "Success");
    let ev = lines.next_json().await;
    assert_eq!(ev["type"], "DELETED");
    status(
        &api.call("DELETE", &path, "application/json", None).await,
        404,
        "NotFound",
    );
    for s in ["c"] {
        api.call(
            "DELETE",
            &format!("{BASE}/{}", n(s)),
            "application/json",
            None,
        )
        .await;
    }
}

/// Create pod NAME with label app=conf on a real apiserver. No controller-manager runs there, so
/// no ServiceAccount "default" and no token secrets exist: the pod names a ServiceAccount of its
/// own (created here) and does not mount a token, which the ServiceAccount admission accepts.
async fn create_real_pod(api: &Api, name: &str, sa: &str) -> Value {
    let a = api
        .call(
            "POST",
            "/api/v1/namespaces/default/serviceaccounts",
            "application/json",
            Some(json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": sa}})),
        )
        .await;
    assert!(a.code == 201 || a.code == 409, "{}", a.body);
    let a = api
        .call(
            "POST",
            PODS,
            "application/json",
            Some(json!({
                "apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": name, "labels": {"app": "conf"}},
                "spec": {"serviceAccountName": sa, "automountServiceAccountToken": false,
                         "containers": [{"name": "app", "image": "leaderd-test/app:1"}]}
            })),
        )
        .await;
    assert_eq!(a.code, 201, "{}", a.body);
    a.body
}

/// The Pod answers a leaderd that labels its own pod depends on. `test_server`: make the pod with
/// `put_pod` there; None: POST it (a real apiserver).
async fn pod_conformance(api: &Api, prefix: &str, test_server: Option<&TestServer>) {
    let name = format!("{prefix}-pod");
    let path = format!("{PODS}/{name}");
    let sa = format!("{prefix}-sa");

    // GET and PATCH of a missing pod: 404 with the core group's Status body (no "group").
    let missing = format!("{prefix}-nopod");
    for (method, ct, body) in [
        ("GET", "application/json", None),
        (
            "PATCH",
            MERGE,
            Some(json!({"metadata": {"labels": {"a": "b"}}})),
        ),
    ] {
        let a = api
            .call(method, &format!("{PODS}/{missing}"), ct, body)
            .await;
        status(&a, 404, "NotFound");
        assert_eq!(a.body["message"], format!("pods \"{missing}\" not found"));
        assert_eq!(a.body["details"], json!({"name": missing, "kind": "pods"}));
    }

    let created = match test_server {
        Some(ts) => ts.put_pod("default", &name, &[("app", "conf")]),
        None => create_real_pod(api, &name, &sa).await,
    };
    let v1 = rv(&Answer {
        code: 200,
        body: created.clone(),
    });
    let got = api.call("GET", &path, "application/json", None).await;
    assert_eq!(got.code, 200, "{}", got.body);
    assert_eq!(got.body["kind"], "Pod");
    assert_eq!(got.body["apiVersion"], "v1");
    assert_eq!(got.body["metadata"]["labels"], json!({"app": "conf"}));
    assert_eq!(got.body["status"]["phase"], "Pending");
    assert_eq!(rv(&got), v1);

    // Merge patch: adds and removes labels, 200 with the whole pod and a new resourceVersion.
    let a = api
        .call(
            "PATCH",
            &path,
            MERGE,
            Some(json!({"metadata": {"labels": {"leaderd.io/leader": "true", "app": null}}})),
        )
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["kind"], "Pod");
    assert_eq!(
        a.body["metadata"]["labels"],
        json!({"leaderd.io/leader": "true"})
    );
    assert_eq!(a.body["spec"], got.body["spec"]);
    assert_eq!(a.body["metadata"]["uid"], got.body["metadata"]["uid"]);
    let v2 = rv(&a);
    assert_ne!(v2, v1);
    // A patch that changes nothing writes nothing: same resourceVersion.
    let a = api
        .call(
            "PATCH",
            &path,
            MERGE,
            Some(json!({"metadata": {"labels": {"leaderd.io/leader": "true"}}})),
        )
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(rv(&a), v2);
    // Strategic merge patch: null deletes a label too; JSON patch adds one.
    let a = api
        .call(
            "PATCH",
            &path,
            "application/strategic-merge-patch+json",
            Some(json!({"metadata": {"labels": {"leaderd.io/leader": null, "x": "1"}}})),
        )
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(a.body["metadata"]["labels"], json!({"x": "1"}));
    let a = api
        .call(
            "PATCH",
            &path,
            "application/json-patch+json",
            Some(json!([{"op": "add", "path": "/metadata/labels/leaderd.io~1leader", "value": "false"}])),
        )
        .await;
    assert_eq!(a.code, 200, "{}", a.body);
    assert_eq!(
        a.body["metadata"]["labels"],
        json!({"x": "1", "leaderd.io/leader": "false"})
    );

    // The exact call leaderd makes, through kube-rs's typed Api<Pod>.
    let pods: kube::Api<Pod> = kube::Api::namespaced(api.client.clone(), "default");
    let patched = pods
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"leaderd.io/leader": "true"}}})),
        )
        .await
        .expect("kube-rs merge patch");
    assert_eq!(
        patched.metadata.labels.unwrap()["leaderd.io/leader"],
        "true"
    );
    assert_eq!(
        pods.get(&name).await.expect("kube-rs get").metadata.uid,
        got.body["metadata"]["uid"].as_str().map(str::to_string)
    );

    // A bad label value: 422 Invalid on the kind "Pod", every cause on metadata.labels.
    let bad = "bad value!";
    let a = api
        .call(
            "PATCH",
            &path,
            MERGE,
            Some(json!({"metadata": {"labels": {"leaderd.io/leader": bad}}})),
        )
        .await;
    status(&a, 422, "Invalid");
    let cause = format!("Invalid value: \"{bad}\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')");
    assert_eq!(
        a.body["message"],
        format!("Pod \"{name}\" is invalid: metadata.labels: {cause}")
    );
    assert_eq!(a.body["details"]["name"], name.as_str());
    assert_eq!(a.body["details"]["kind"], "Pod");
    assert!(a.body["details"].get("group").is_none(), "{}", a.body);
    let causes = a.body["details"]["causes"].as_array().expect("causes");
    assert!(!causes.is_empty());
    for c in causes {
        assert_eq!(
            c,
            &json!({"reason": "FieldValueInvalid", "message": cause, "field": "metadata.labels"})
        );
    }
    // A bad key, too.
    let a = api
        .call(
            "PATCH",
            &path,
            MERGE,
            Some(json!({"metadata": {"labels": {"-k": "v"}}})),
        )
        .await;
    status(&a, 422, "Invalid");
    assert_eq!(a.body["details"]["causes"][0]["field"], "metadata.labels");
    // A stale resourceVersion in a merge patch: 409 Conflict on pods.
    let a = api
        .call(
            "PATCH",
            &path,
            MERGE,
            Some(json!({"metadata": {"resourceVersion": v1, "labels": {"y": "1"}}})),
        )
        .await;
    status(&a, 409, "Conflict");
    assert_eq!(
        a.body["message"],
        format!("Operation cannot be fulfilled on pods \"{name}\": the object has been modified; please apply your changes to the latest version and try again")
    );
    // Another content type: 415.
    let a = api
        .call("PATCH", &path, "text/plain", Some(json!({})))
        .await;
    assert_eq!(a.code, 415, "{}", a.body);
    // Nothing of the failed patches was stored.
    let a = api.call("GET", &path, "application/json", None).await;
    assert_eq!(
        a.body["metadata"]["labels"],
        json!({"x": "1", "leaderd.io/leader": "true"})
    );

    if test_server.is_none() {
        api.call(
            "DELETE",
            &path,
            "application/json",
            Some(json!({"gracePeriodSeconds": 0})),
        )
        .await;
        api.call(
            "DELETE",
            &format!("/api/v1/namespaces/default/serviceaccounts/{sa}"),
            "application/json",
            None,
        )
        .await;
    }
}

/// Lines of a watch body, decoded as JSON.
struct LineStream {
    frames: futures::stream::BoxStream<'static, Result<bytes::Bytes, String>>,
    buf: Vec<u8>,
}

impl LineStream {
    fn new(body: kube::client::Body) -> Self {
        LineStream {
            frames: body
                .into_data_stream()
                .map(|r| r.map_err(|e| e.to_string()))
                .boxed(),
            buf: Vec::new(),
        }
    }

    async fn next_json(&mut self) -> Value {
        loop {
            if let Some(i) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                return serde_json::from_slice(&line).expect("a JSON watch line");
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.frames.next())
                .await
                .expect("a watch event within 10 s")
                .expect("the stream goes on")
                .expect("no stream error");
            self.buf.extend_from_slice(&chunk);
        }
    }
}

#[tokio::test]
async fn the_test_server_answers_like_the_reference() {
    let server = TestServer::start().await.unwrap();
    let api = Api::from_kubeconfig_yaml(&server.kubeconfig_yaml("conformance", "default")).await;
    conformance(&api, "conf").await;
    pod_conformance(&api, "conf", Some(&server)).await;
}

#[tokio::test]
async fn a_real_apiserver_answers_the_same_when_one_is_configured() {
    let Some(path) = std::env::var_os("LEADERD_REAL_KUBECONFIG") else {
        eprintln!("SKIPPED: LEADERD_REAL_KUBECONFIG is not set (scripts/kube-apiserver.sh starts a real apiserver)");
        return;
    };
    let yaml = std::fs::read_to_string(path).expect("kubeconfig readable");
    let api = Api::from_kubeconfig_yaml(&yaml).await;
    let prefix = format!("conf-{}", std::process::id());
    conformance(&api, &prefix).await;
    pod_conformance(&api, &prefix, None).await;
}

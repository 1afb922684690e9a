//! HTTP-level tests of the Lease API test server: every row of the reference table, watches,
//! fault injection, and the real kube-rs client against it.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};

use super::TestServer;

const COLL: &str = "/apis/coordination.k8s.io/v1/namespaces/ns/leases";
/// Bound for anything that should happen promptly (never slept; only a failure guard).
const PROMPT: Duration = Duration::from_secs(10);

fn obj_path(name: &str) -> String {
    format!("{COLL}/{name}")
}

fn lease(name: &str, holder: &str) -> Value {
    json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": name},
        "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                 "renewTime": "2026-11-22T07:30:00.123456Z", "leaseTransitions": 0}
    })
}

struct Resp {
    status: u16,
    headers: http::HeaderMap,
    body: String,
}

impl Resp {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.body))
    }
    fn message(&self) -> String {
        self.json()["message"].as_str().unwrap_or("").to_string()
    }
    fn rv(&self) -> String {
        self.json()["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// A plain HTTP client (hyper-util legacy) speaking to the test server.
struct Http {
    client: Client<HttpConnector, Full<Bytes>>,
    base: String,
    token: String,
}

impl Http {
    fn new(ts: &TestServer, token: &str) -> Http {
        Http {
            client: Client::builder(TokioExecutor::new()).build_http(),
            base: ts.url(),
            token: token.into(),
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        ct: Option<&str>,
        body: &str,
    ) -> http::Request<Full<Bytes>> {
        let mut b = http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.base));
        if !self.token.is_empty() {
            b = b.header("authorization", format!("Bearer {}", self.token));
        }
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        b.body(Full::new(Bytes::from(body.to_string()))).unwrap()
    }

    async fn send(&self, method: &str, path: &str, ct: Option<&str>, body: &str) -> Resp {
        let req = self.request(method, path, ct, body);
        let resp = tokio::time::timeout(PROMPT, self.client.request(req))
            .await
            .expect("answered in time")
            .expect("HTTP request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.into_body().collect().await.expect("body").to_bytes();
        Resp {
            status,
            headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    async fn get(&self, path: &str) -> Resp {
        self.send("GET", path, None, "").await
    }
    async fn post(&self, body: &Value) -> Resp {
        self.send("POST", COLL, Some("application/json"), &body.to_string())
            .await
    }
    async fn put(&self, name: &str, body: &Value) -> Resp {
        self.send(
            "PUT",
            &obj_path(name),
            Some("application/json"),
            &body.to_string(),
        )
        .await
    }
    async fn patch(&self, name: &str, ct: &str, body: &Value) -> Resp {
        self.send("PATCH", &obj_path(name), Some(ct), &body.to_string())
            .await
    }
    async fn delete(&self, name: &str) -> Resp {
        self.send("DELETE", &obj_path(name), None, "").await
    }

    async fn watch(&self, query: &str) -> Watch {
        let req = self.request("GET", &format!("{COLL}?watch=true&{query}"), None, "");
        let resp = tokio::time::timeout(PROMPT, self.client.request(req))
            .await
            .expect("watch answered in time")
            .expect("watch request");
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        Watch {
            body: resp.into_body(),
            buf: Vec::new(),
        }
    }
}

/// Reads a watch stream line by line.
struct Watch {
    body: hyper::body::Incoming,
    buf: Vec<u8>,
}

impl Watch {
    /// The next event, or None when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=pos).collect();
                return Some(serde_json::from_slice(&line).expect("watch line is JSON"));
            }
            match self.body.frame().await {
                None => {
                    assert!(self.buf.is_empty(), "stream ended mid-line");
                    return None;
                }
                Some(frame) => {
                    if let Ok(data) = frame.expect("watch frame").into_data() {
                        self.buf.extend_from_slice(&data);
                    }
                }
            }
        }
    }

    /// The next event, failing the test if none arrives promptly.
    async fn expect(&mut self) -> Value {
        tokio::time::timeout(PROMPT, self.next())
            .await
            .expect("watch event in time")
            .expect("watch stream still open")
    }

    async fn expect_end(&mut self) {
        let ev = tokio::time::timeout(PROMPT, self.next())
            .await
            .expect("watch ended in time");
        assert!(ev.is_none(), "unexpected event {ev:?}");
    }
}

async fn setup() -> (TestServer, Http) {
    let ts = TestServer::start().await.expect("start");
    let http = Http::new(&ts, "tok");
    (ts, http)
}

fn assert_status(r: &Resp, code: u16, reason: &str) {
    assert_eq!(r.status, code, "{}", r.body);
    let v = r.json();
    assert_eq!(v["kind"], "Status");
    assert_eq!(v["apiVersion"], "v1");
    assert_eq!(v["metadata"], json!({}));
    assert_eq!(v["status"], "Failure");
    assert_eq!(v["reason"], reason);
    assert_eq!(v["code"], code);
}

#[tokio::test]
async fn create_returns_201_with_server_set_fields_and_a_duplicate_is_already_exists() {
    let (ts, http) = setup().await;
    let r = http.post(&lease("a", "me")).await;
    assert_eq!(r.status, 201, "{}", r.body);
    let v = r.json();
    assert_eq!(v["kind"], "Lease");
    assert_eq!(v["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(v["metadata"]["name"], "a");
    assert_eq!(v["metadata"]["namespace"], "ns");
    assert_eq!(v["metadata"]["uid"].as_str().unwrap().len(), 36);
    assert!(v["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .ends_with('Z'));
    assert!(r.rv().parse::<u64>().is_ok());
    assert_eq!(v["spec"]["holderIdentity"], "me");
    assert_eq!(ts.lease("ns", "a").unwrap(), v);

    let r = http.post(&lease("a", "other")).await;
    assert_status(&r, 409, "AlreadyExists");
    assert_eq!(
        r.message(),
        r#"leases.coordination.k8s.io "a" already exists"#
    );
    assert_eq!(
        r.json()["details"],
        json!({"name": "a", "group": "coordination.k8s.io", "kind": "leases"})
    );
}

#[tokio::test]
async fn create_without_a_name_is_422_and_generate_name_fills_it() {
    let (_ts, http) = setup().await;
    let r = http.post(&json!({"spec": {}})).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.message(),
        r#"Lease.coordination.k8s.io "" is invalid: metadata.name: Required value: name or generateName is required"#
    );
    let r = http
        .post(&json!({"metadata": {"generateName": "gen-"}}))
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert!(r.json()["metadata"]["name"]
        .as_str()
        .unwrap()
        .starts_with("gen-"));
    let r = http.post(&lease("Not_Valid", "x")).await;
    assert_status(&r, 422, "Invalid");
    assert!(
        r.message().contains("a lowercase RFC 1123 subdomain"),
        "{}",
        r.body
    );
    let r = http
        .post(&json!({"metadata": {"name": "a", "namespace": "other"}}))
        .await;
    assert_status(&r, 400, "BadRequest");
}

#[tokio::test]
async fn get_of_a_missing_lease_is_404_not_found() {
    let (_ts, http) = setup().await;
    let r = http.get(&obj_path("nope")).await;
    assert_status(&r, 404, "NotFound");
    assert_eq!(
        r.message(),
        r#"leases.coordination.k8s.io "nope" not found"#
    );
    assert_eq!(
        r.json()["details"],
        json!({"name": "nope", "group": "coordination.k8s.io", "kind": "leases"})
    );
}

#[tokio::test]
async fn put_with_the_current_rv_is_200_and_with_a_stale_rv_is_409_conflict() {
    let (_ts, http) = setup().await;
    let created = http.post(&lease("a", "me")).await.json();
    let mut body = created.clone();
    body["spec"]["holderIdentity"] = json!("you");
    let r = http.put("a", &body).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_ne!(
        r.rv(),
        created["metadata"]["resourceVersion"].as_str().unwrap()
    );
    assert_eq!(r.json()["metadata"]["uid"], created["metadata"]["uid"]);
    assert_eq!(
        r.json()["metadata"]["creationTimestamp"],
        created["metadata"]["creationTimestamp"]
    );
    // `body` still carries the old resourceVersion.
    let r = http.put("a", &body).await;
    assert_status(&r, 409, "Conflict");
    assert_eq!(
        r.message(),
        r#"Operation cannot be fulfilled on leases.coordination.k8s.io "a": the object has been modified; please apply your changes to the latest version and try again"#
    );
}

#[tokio::test]
async fn put_without_rv_on_an_existing_lease_is_422() {
    let (_ts, http) = setup().await;
    http.post(&lease("a", "me")).await;
    let r = http.put("a", &lease("a", "you")).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.message(),
        r#"leases.coordination.k8s.io "a" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"#
    );
    assert_eq!(
        r.json()["details"]["causes"][0],
        json!({"reason": "FieldValueInvalid", "message": "Invalid value: 0x0: must be specified for an update", "field": "metadata.resourceVersion"})
    );
}

#[tokio::test]
async fn put_of_a_missing_lease_creates_it_with_201_even_with_an_rv() {
    let (ts, http) = setup().await;
    let mut body = lease("a", "me");
    body["metadata"]["resourceVersion"] = json!("12345");
    let r = http.put("a", &body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_ne!(r.rv(), "12345");
    assert!(ts.lease("ns", "a").is_some());
}

#[tokio::test]
async fn microtime_without_six_fractional_digits_is_400() {
    let (_ts, http) = setup().await;
    for (t, elem) in [
        ("2026-11-22T07:30:00Z", "Z"),
        ("2026-11-22T07:30:00.123Z", ".123Z"),
    ] {
        let mut body = lease("a", "me");
        body["spec"]["renewTime"] = json!(t);
        let r = http.post(&body).await;
        assert_status(&r, 400, "BadRequest");
        assert_eq!(
            r.message(),
            format!(
                r#"Lease in version "v1" cannot be handled as a Lease: v1.Lease.Spec: v1.LeaseSpec.RenewTime: unmarshalerDecoder: parsing time "{t}" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "{elem}" as ".000000""#
            )
        );
    }
    // An offset is fine and comes back in UTC.
    let mut body = lease("a", "me");
    body["spec"]["acquireTime"] = json!("2026-11-22T09:30:00.000001+02:00");
    let r = http.post(&body).await;
    assert_eq!(r.status, 201, "{}", r.body);
    assert_eq!(
        r.json()["spec"]["acquireTime"],
        "2026-11-22T07:30:00.000001Z"
    );
}

#[tokio::test]
async fn lease_duration_zero_is_422_invalid_with_causes() {
    let (_ts, http) = setup().await;
    let mut body = lease("a", "me");
    body["spec"]["leaseDurationSeconds"] = json!(0);
    let r = http.post(&body).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.message(),
        r#"Lease.coordination.k8s.io "a" is invalid: spec.leaseDurationSeconds: Invalid value: 0: must be greater than 0"#
    );
    assert_eq!(
        r.json()["details"],
        json!({"name": "a", "group": "coordination.k8s.io", "kind": "Lease", "causes": [
            {"reason": "FieldValueInvalid", "message": "Invalid value: 0: must be greater than 0",
             "field": "spec.leaseDurationSeconds"}]})
    );
    body["spec"]["leaseTransitions"] = json!(-1);
    let r = http.post(&body).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(r.json()["details"]["causes"].as_array().unwrap().len(), 2);
    assert!(
        r.message().contains(": [spec.leaseDurationSeconds"),
        "{}",
        r.body
    );
}

#[tokio::test]
async fn int32_overflow_and_wrong_types_are_400() {
    let (_ts, http) = setup().await;
    let mut body = lease("a", "me");
    body["spec"]["leaseTransitions"] = json!(4294967296u64);
    let r = http.post(&body).await;
    assert_status(&r, 400, "BadRequest");
    assert!(r.message().contains("ReadInt32: overflow"), "{}", r.body);
    for bad in [
        json!({"metadata": {"name": "a"}, "spec": {"holderIdentity": 5}}),
        json!({"metadata": {"name": "a"}, "spec": {"leaseDurationSeconds": "15"}}),
        json!({"metadata": {"name": 7}}),
        json!([1, 2]),
    ] {
        let r = http.post(&bad).await;
        assert_status(&r, 400, "BadRequest");
    }
    for raw in [
        "",
        "{",
        "nul",
        "{\"spec\":{\"leaseDurationSeconds\":1e999}}",
        "{\"spec\":{\"leaseDurationSeconds\":123456789012345678901234567890}}",
        "\u{0}\u{1}",
    ] {
        let r = http.send("POST", COLL, Some("application/json"), raw).await;
        assert_status(&r, 400, "BadRequest");
    }
    let deep = "[".repeat(10_000);
    let r = http
        .send("POST", COLL, Some("application/json"), &deep)
        .await;
    assert_status(&r, 400, "BadRequest");
}

#[tokio::test]
async fn name_or_namespace_mismatch_with_the_url_is_400() {
    let (_ts, http) = setup().await;
    let r = http.put("b", &lease("a", "me")).await;
    assert_status(&r, 400, "BadRequest");
    assert_eq!(
        r.message(),
        "the name of the object (a) does not match the name on the URL (b)"
    );
    let mut body = lease("a", "me");
    body["metadata"]["namespace"] = json!("elsewhere");
    let r = http.put("a", &body).await;
    assert_status(&r, 400, "BadRequest");
    assert_eq!(
        r.message(),
        "the namespace of the object (elsewhere) does not match the namespace on the URL (ns)"
    );
}

#[tokio::test]
async fn merge_patch_applies_and_a_stale_rv_in_it_is_409() {
    let (_ts, http) = setup().await;
    let created = http.post(&lease("a", "me")).await.json();
    let old_rv = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();
    for ct in [
        "application/merge-patch+json",
        "application/strategic-merge-patch+json; charset=utf-8",
    ] {
        let r = http
            .patch(
                "a",
                ct,
                &json!({"spec": {"holderIdentity": "you", "leaseTransitions": null}}),
            )
            .await;
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(r.json()["spec"]["holderIdentity"], "you");
        assert!(r.json()["spec"].get("leaseTransitions").is_none());
    }
    let r = http
        .patch(
            "a",
            "application/merge-patch+json",
            &json!({"metadata": {"resourceVersion": old_rv}, "spec": {"holderIdentity": "x"}}),
        )
        .await;
    assert_status(&r, 409, "Conflict");
    assert!(r.message().contains("the object has been modified"));
    let r = http
        .patch(
            "missing",
            "application/merge-patch+json",
            &json!({"spec": {}}),
        )
        .await;
    assert_status(&r, 404, "NotFound");
    // A patch producing an invalid MicroTime is rejected (422, field "patch").
    let r = http
        .patch(
            "a",
            "application/merge-patch+json",
            &json!({"spec": {"renewTime": "now"}}),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(r.json()["details"]["causes"][0]["field"], "patch");
}

#[tokio::test]
async fn json_patch_applies_and_a_failing_test_op_is_422() {
    let (_ts, http) = setup().await;
    http.post(&lease("a", "me")).await;
    let ok = json!([
        {"op": "test", "path": "/spec/holderIdentity", "value": "me"},
        {"op": "replace", "path": "/spec/holderIdentity", "value": "you"}
    ]);
    let r = http.patch("a", "application/json-patch+json", &ok).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["spec"]["holderIdentity"], "you");
    let r = http.patch("a", "application/json-patch+json", &ok).await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.message(),
        "the server rejected our request due to an error in our request"
    );
    assert_eq!(
        r.json()["details"]["causes"][0]["message"],
        "testing value /spec/holderIdentity failed: test operation failed"
    );
}

#[tokio::test]
async fn other_patch_content_types_are_415() {
    let (_ts, http) = setup().await;
    http.post(&lease("a", "me")).await;
    for ct in ["application/json", "text/plain"] {
        let r = http.patch("a", ct, &json!({"spec": {}})).await;
        assert_status(&r, 415, "UnsupportedMediaType");
    }
    let r = http.send("PATCH", &obj_path("a"), None, "{}").await;
    assert_status(&r, 415, "UnsupportedMediaType");
    assert_eq!(
        r.message(),
        "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/strategic-merge-patch+json, application/apply-patch+yaml"
    );
    let r = http.send("POST", COLL, Some("text/plain"), "{}").await;
    assert_status(&r, 415, "UnsupportedMediaType");
    let r = http
        .send(
            "POST",
            COLL,
            Some("application/yaml"),
            "metadata:\n  name: y\n",
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
}

#[tokio::test]
async fn server_side_apply_creates_and_then_merges() {
    let (_ts, http) = setup().await;
    let path = format!("{}?fieldManager=test", obj_path("a"));
    let yaml = "apiVersion: coordination.k8s.io/v1\nkind: Lease\nmetadata:\n  name: a\nspec:\n  holderIdentity: me\n";
    let r = http
        .send("PATCH", &path, Some("application/apply-patch+yaml"), yaml)
        .await;
    assert_eq!(r.status, 201, "{}", r.body);
    let yaml2 = yaml.replace("holderIdentity: me", "leaseDurationSeconds: 10");
    let r = http
        .send("PATCH", &path, Some("application/apply-patch+yaml"), &yaml2)
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["spec"]["leaseDurationSeconds"], 10);
}

#[tokio::test]
async fn delete_is_200_status_success_then_404() {
    let (ts, http) = setup().await;
    let uid = http.post(&lease("a", "me")).await.json()["metadata"]["uid"].clone();
    let r = http.delete("a").await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        r.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success",
               "details": {"name": "a", "group": "coordination.k8s.io", "kind": "leases", "uid": uid}})
    );
    assert!(ts.lease("ns", "a").is_none());
    assert_status(&http.delete("a").await, 404, "NotFound");
}

#[tokio::test]
async fn list_returns_a_lease_list_and_honours_field_selectors() {
    let (ts, http) = setup().await;
    http.post(&lease("a", "me")).await;
    http.post(&lease("b", "me")).await;
    ts.put_raw("other", "c", json!({"spec": {}}));
    let r = http.get(COLL).await;
    assert_eq!(r.status, 200);
    let v = r.json();
    assert_eq!(v["kind"], "LeaseList");
    assert_eq!(v["apiVersion"], "coordination.k8s.io/v1");
    assert_eq!(
        v["metadata"]["resourceVersion"],
        ts.lease("other", "c").unwrap()["metadata"]["resourceVersion"]
    );
    assert_eq!(v["items"].as_array().unwrap().len(), 2);
    assert!(v["items"][0].get("kind").is_none());
    let r = http
        .get(&format!("{COLL}?fieldSelector=metadata.name%3Db"))
        .await;
    let items = r.json()["items"].as_array().unwrap().clone();
    assert_eq!(items.len(), 1);
    assert_eq!(items[0]["metadata"]["name"], "b");
    let r = http
        .get(&format!("{COLL}?fieldSelector=metadata.name%3D%3Da"))
        .await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 1);
    let r = http.get("/apis/coordination.k8s.io/v1/leases").await;
    assert_eq!(r.json()["items"].as_array().unwrap().len(), 3);
    let r = http
        .get(&format!("{COLL}?fieldSelector=spec.holderIdentity%3Dme"))
        .await;
    assert_status(&r, 400, "BadRequest");
}

#[tokio::test]
async fn unknown_paths_are_404_wrong_methods_405_and_version_answers() {
    let (_ts, http) = setup().await;
    let r = http.get("/api/v1/namespaces/ns/configmaps").await;
    assert_status(&r, 404, "NotFound");
    assert_eq!(
        r.message(),
        "the server could not find the requested resource"
    );
    let r = http
        .send("POST", &obj_path("a"), Some("application/json"), "{}")
        .await;
    assert_status(&r, 405, "MethodNotAllowed");
    let r = http.send("PUT", COLL, Some("application/json"), "{}").await;
    assert_status(&r, 405, "MethodNotAllowed");
    let r = http.get("/version").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["gitVersion"], "v1.20.2-leaderd-testserver");
}

#[tokio::test]
async fn watch_from_zero_replays_added_then_streams_modified_and_deleted() {
    let (ts, http) = setup().await;
    http.post(&lease("a", "me")).await;
    http.post(&lease("other", "me")).await;
    let mut w = http
        .watch("resourceVersion=0&fieldSelector=metadata.name%3Da&allowWatchBookmarks=true")
        .await;
    let ev = w.expect().await;
    assert_eq!(ev["type"], "ADDED");
    assert_eq!(ev["object"]["kind"], "Lease");
    assert_eq!(ev["object"]["metadata"]["name"], "a");

    let mut changed = ts.lease("ns", "a").unwrap();
    changed["spec"]["holderIdentity"] = json!("foreign");
    let rv = ts.put_raw("ns", "a", changed);
    ts.put_raw("ns", "other", json!({})); // filtered out by the selector
    let ev = w.expect().await;
    assert_eq!(ev["type"], "MODIFIED");
    assert_eq!(ev["object"]["metadata"]["resourceVersion"], rv);
    assert_eq!(ev["object"]["spec"]["holderIdentity"], "foreign");

    assert!(ts.delete_lease("ns", "a"));
    let ev = w.expect().await;
    assert_eq!(ev["type"], "DELETED");
    let del_rv: u64 = ev["object"]["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(del_rv > rv.parse::<u64>().unwrap());
    assert!(!ts.delete_lease("ns", "a"));
}

#[tokio::test]
async fn watch_from_a_resource_version_replays_later_changes() {
    let (ts, http) = setup().await;
    let rv0 = http.post(&lease("a", "me")).await.rv();
    let rv1 = ts.put_raw("ns", "a", lease("a", "x"));
    let rv2 = ts.put_raw("ns", "a", lease("a", "y"));
    let mut w = http.watch(&format!("resourceVersion={rv0}")).await;
    let e1 = w.expect().await;
    assert_eq!(
        (
            e1["type"].as_str(),
            e1["object"]["metadata"]["resourceVersion"].as_str()
        ),
        (Some("MODIFIED"), Some(rv1.as_str()))
    );
    let e2 = w.expect().await;
    assert_eq!(e2["object"]["metadata"]["resourceVersion"], rv2);
    assert_eq!(e2["object"]["spec"]["holderIdentity"], "y");
}

#[tokio::test]
async fn watch_from_an_old_rv_after_compact_gets_a_410_error_event_and_ends() {
    let (ts, http) = setup().await;
    let rv0 = http.post(&lease("a", "me")).await.rv();
    let rv1 = ts.put_raw("ns", "a", lease("a", "x"));
    ts.compact();
    let mut w = http.watch(&format!("resourceVersion={rv0}")).await;
    let ev = w.expect().await;
    assert_eq!(ev["type"], "ERROR");
    assert_eq!(
        ev["object"],
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": format!("too old resource version: {rv0} ({rv1})"),
               "reason": "Expired", "code": 410})
    );
    w.expect_end().await;
    // From the current version it works.
    let mut w = http.watch(&format!("resourceVersion={rv1}")).await;
    ts.put_raw("ns", "a", lease("a", "z"));
    assert_eq!(w.expect().await["type"], "MODIFIED");
}

#[tokio::test]
async fn watch_timeout_seconds_ends_the_stream() {
    let (_ts, http) = setup().await;
    let started = std::time::Instant::now();
    let mut w = http.watch("timeoutSeconds=1").await;
    w.expect_end().await;
    assert!(started.elapsed() >= Duration::from_millis(900));
}

#[tokio::test]
async fn partition_holds_a_request_until_heal() {
    let (ts, _) = setup().await;
    let ts = std::sync::Arc::new(ts);
    let http = std::sync::Arc::new(Http::new(&ts, "cut"));
    ts.partition("cut");
    let h = http.clone();
    let mut pending = tokio::spawn(async move { h.get(&obj_path("a")).await.status });
    // Not answered while partitioned...
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut pending)
            .await
            .is_err()
    );
    // ...while another client is served.
    let other = Http::new(&ts, "fine");
    assert_eq!(other.get(&obj_path("a")).await.status, 404);
    let recs = ts.requests();
    assert_eq!(recs[0].client, "cut");
    assert_eq!(recs[0].status, 0);
    ts.heal("cut");
    assert_eq!(pending.await.unwrap(), 404);
    assert_eq!(ts.requests()[0].status, 404);
}

#[tokio::test]
async fn partitioned_watch_goes_silent_and_closes_on_heal() {
    let (ts, http) = setup().await;
    http.post(&lease("a", "me")).await;
    let mut w = http.watch("").await;
    assert_eq!(w.expect().await["type"], "ADDED");
    ts.partition("tok");
    ts.put_raw("ns", "a", lease("a", "x"));
    assert!(tokio::time::timeout(Duration::from_millis(300), w.next())
        .await
        .is_err());
    ts.heal("tok");
    w.expect_end().await;
}

#[tokio::test]
async fn error_rate_one_gives_429_with_retry_after() {
    let (ts, http) = setup().await;
    ts.set_error_rate(Some("tok"), 1.0, 429);
    let r = http.get(&obj_path("a")).await;
    assert_status(&r, 429, "TooManyRequests");
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.json()["details"]["retryAfterSeconds"], 1);
    // Other clients unaffected; a global rate hits everyone.
    assert_eq!(Http::new(&ts, "x").get(&obj_path("a")).await.status, 404);
    ts.set_error_rate(None, 1.0, 503);
    assert_status(
        &Http::new(&ts, "x").get(&obj_path("a")).await,
        503,
        "ServiceUnavailable",
    );
    ts.set_error_rate(None, 1.0, 500);
    assert_status(
        &Http::new(&ts, "x").get(&obj_path("a")).await,
        500,
        "InternalError",
    );
    ts.set_error_rate(None, 1.0, 504);
    assert_status(
        &Http::new(&ts, "x").get(&obj_path("a")).await,
        504,
        "Timeout",
    );
    ts.clear_faults();
    assert_eq!(http.get(&obj_path("a")).await.status, 404);
}

#[tokio::test]
async fn deny_gives_403_with_the_rbac_message() {
    let (ts, http) = setup().await;
    ts.deny("tok", "update");
    ts.deny("tok", "create");
    let r = http.put("a", &lease("a", "me")).await;
    assert_status(&r, 403, "Forbidden");
    assert_eq!(
        r.message(),
        r#"leases.coordination.k8s.io "a" is forbidden: User "tok" cannot update resource "leases" in API group "coordination.k8s.io" in the namespace "ns""#
    );
    let r = http.post(&lease("a", "me")).await;
    assert_status(&r, 403, "Forbidden");
    assert_eq!(
        r.message(),
        r#"leases.coordination.k8s.io is forbidden: User "tok" cannot create resource "leases" in API group "coordination.k8s.io" in the namespace "ns""#
    );
    assert_eq!(http.get(&obj_path("a")).await.status, 404);
}

#[tokio::test]
async fn garbage_gives_a_200_that_is_not_json() {
    let (ts, http) = setup().await;
    ts.set_garbage("tok", true);
    let r = http.get(&obj_path("a")).await;
    assert_eq!(r.status, 200);
    assert!(serde_json::from_str::<Value>(&r.body).is_err());
    ts.set_garbage("tok", false);
    assert_eq!(http.get(&obj_path("a")).await.status, 404);
}

#[tokio::test]
async fn latency_delays_answers_of_that_client() {
    let (ts, http) = setup().await;
    ts.set_latency("tok", Duration::from_millis(200));
    let t = std::time::Instant::now();
    http.get(&obj_path("a")).await;
    assert!(t.elapsed() >= Duration::from_millis(200));
}

#[tokio::test]
async fn requests_are_recorded_with_client_verb_and_status() {
    let (ts, http) = setup().await;
    http.post(&lease("a", "me")).await;
    http.get(&obj_path("a")).await;
    http.get(COLL).await;
    Http::new(&ts, "").delete("a").await;
    let recs: Vec<(String, String, u16)> = ts
        .requests()
        .into_iter()
        .map(|r| (r.client, r.verb, r.status))
        .collect();
    assert_eq!(
        recs,
        vec![
            ("tok".into(), "create".into(), 201),
            ("tok".into(), "get".into(), 200),
            ("tok".into(), "list".into(), 200),
            ("".into(), "delete".into(), 200),
        ]
    );
}

#[tokio::test]
async fn kubeconfig_works_with_the_real_kube_client() {
    use futures::{StreamExt, TryStreamExt};
    use k8s_openapi::api::coordination::v1::Lease;
    use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, WatchEvent, WatchParams};

    let ts = TestServer::start().await.unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&ts.kubeconfig_yaml("kube-tok", "kns")).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    assert_eq!(cfg.default_namespace, "kns");
    let client = kube::Client::try_from(cfg).unwrap();
    let api: Api<Lease> = Api::default_namespaced(client);

    let mut l: Lease = serde_json::from_value(lease("k", "me")).unwrap();
    let created = api.create(&PostParams::default(), &l).await.unwrap();
    assert!(created.metadata.resource_version.is_some());
    let err = api.create(&PostParams::default(), &l).await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{err:?}"
    );

    l.metadata = created.metadata.clone();
    l.spec.as_mut().unwrap().holder_identity = Some("you".into());
    let replaced = api.replace("k", &PostParams::default(), &l).await.unwrap();
    let err = api
        .replace("k", &PostParams::default(), &l)
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 409 && s.reason == "Conflict"),
        "{err:?}"
    );

    let mut stream = api
        .watch(
            &WatchParams::default().fields("metadata.name=k").timeout(5),
            &replaced.metadata.resource_version.clone().unwrap(),
        )
        .await
        .unwrap()
        .boxed();
    api.patch(
        "k",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"leaseTransitions": 3}})),
    )
    .await
    .unwrap();
    let ev = tokio::time::timeout(PROMPT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match ev {
        WatchEvent::Modified(m) => assert_eq!(m.spec.unwrap().lease_transitions, Some(3)),
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(
        api.get("k")
            .await
            .unwrap()
            .spec
            .unwrap()
            .holder_identity
            .as_deref(),
        Some("you")
    );
    assert!(api.get_opt("missing").await.unwrap().is_none());
    let deleted = api.delete("k", &DeleteParams::default()).await.unwrap();
    assert!(deleted.is_right(), "a Status answer");
    assert!(api.get_opt("k").await.unwrap().is_none());
    assert!(ts.requests().iter().all(|r| r.client == "kube-tok"));

    // (Config::infer reads the same file through KUBECONFIG and goes through the same
    // from_custom_kubeconfig path; not exercised here because setting the process environment
    // would race with other tests.)
    ts.shutdown().await;
}

#[tokio::test]
async fn malformed_inputs_get_clear_client_errors_and_never_break_the_server() {
    let (_ts, http) = setup().await;
    http.post(&lease("a", "me")).await;
    let mut bodies: Vec<String> = vec![
        "{\"metadata\":{\"generateName\":\"".to_string() + &"é".repeat(200) + "\"}}",
        "{\"spec\":{\"acquireTime\":\"2026-11-22T07:30:00.123456+0ä:00\"}}".into(),
        "{\"spec\":{\"renewTime\":\"9999-99-99T99:99:99.999999Z\"}}".into(),
        "{\"metadata\":{\"name\":\"a\",\"resourceVersion\":\"abc\"}}".into(),
        "[{\"op\":\"add\",\"path\":\"/spec/x/-/y\",\"value\":1}]".into(),
        "[{\"op\":\"move\",\"from\":\"/spec\",\"path\":\"/spec/inner\"}]".into(),
        "{\"metadata\":null,\"spec\":null}".into(),
    ];
    let mut rng = fastrand::Rng::with_seed(7);
    let alphabet = br#"{}[]":,0123456789.eE+-truefalsnul \/metadataspecnamerenewTimeZT"#;
    for _ in 0..40 {
        let len = rng.usize(0..60);
        bodies.push(
            (0..len)
                .map(|_| char::from(alphabet[rng.usize(0..alphabet.len())]))
                .collect(),
        );
    }
    let targets = [
        ("POST", COLL.to_string(), "application/json"),
        ("PUT", obj_path("a"), "application/json"),
        ("PATCH", obj_path("a"), "application/merge-patch+json"),
        ("PATCH", obj_path("a"), "application/json-patch+json"),
        (
            "PATCH",
            format!("{}?fieldManager=f", obj_path("a")),
            "application/apply-patch+yaml",
        ),
        ("DELETE", obj_path("zzz"), "application/json"),
    ];
    for body in &bodies {
        for (method, path, ct) in &targets {
            let r = http.send(method, path, Some(ct), body).await;
            assert!(
                (200..500).contains(&r.status),
                "{method} {path} {body:?} -> {} {}",
                r.status,
                r.body
            );
            if r.status >= 400 {
                assert_eq!(r.json()["kind"], "Status", "{body:?}");
            }
        }
    }
    for q in [
        "resourceVersion=abc",
        "timeoutSeconds=-1",
        "fieldSelector=%ff",
        "labelSelector=a%20in%20(b",
    ] {
        let r = http.get(&format!("{COLL}?watch=1&{q}")).await;
        assert!(
            (400..500).contains(&r.status),
            "{q}: {} {}",
            r.status,
            r.body
        );
    }
    assert_eq!(http.get(&obj_path("nope")).await.status, 404);
}

#[test]
fn test_server_is_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<TestServer>();
    check::<super::RequestRecord>();
}

#[tokio::test]
async fn shutdown_ends_watches_and_stops_listening() {
    let (ts, http) = setup().await;
    let mut w = http.watch("").await;
    let addr = ts.addr();
    ts.shutdown().await;
    w.expect_end().await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

// ---------------------------------------------------------------------------------------------
// core/v1 Pods

const PODS: &str = "/api/v1/namespaces/ns/pods";
const MERGE: &str = "application/merge-patch+json";

fn pod_path(name: &str) -> String {
    format!("{PODS}/{name}")
}

impl Http {
    async fn patch_pod(&self, name: &str, ct: &str, body: &Value) -> Resp {
        self.send("PATCH", &pod_path(name), Some(ct), &body.to_string())
            .await
    }
}

fn labels_of(v: &Value) -> Value {
    v["metadata"]["labels"].clone()
}

#[tokio::test]
async fn pod_get_of_a_missing_pod_is_404_with_the_core_group_status_body() {
    let (_ts, http) = setup().await;
    let r = http.get(&pod_path("x")).await;
    assert_eq!(r.headers["content-type"], "application/json");
    assert_eq!(
        r.json(),
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": "pods \"x\" not found", "reason": "NotFound",
               "details": {"name": "x", "kind": "pods"}, "code": 404})
    );
    // PATCH of a missing pod: the same 404, whatever the patch type.
    for ct in [MERGE, "application/strategic-merge-patch+json"] {
        let r = http.patch_pod("x", ct, &json!({})).await;
        assert_eq!(r.json()["message"], "pods \"x\" not found", "{ct}");
        assert_eq!(r.status, 404);
    }
    let r = http
        .patch_pod("x", "application/json-patch+json", &json!([]))
        .await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn put_pod_stores_a_minimal_valid_pod_that_get_returns() {
    let (ts, http) = setup().await;
    let stored = ts.put_pod("ns", "p", &[("app", "x")]);
    assert_eq!(ts.pod("ns", "p").as_ref(), Some(&stored));
    let r = http.get(&pod_path("p")).await;
    assert_eq!(r.status, 200);
    let got = r.json();
    assert_eq!(got, stored);
    assert_eq!(got["kind"], "Pod");
    assert_eq!(got["apiVersion"], "v1");
    assert_eq!(got["metadata"]["namespace"], "ns");
    assert!(got["metadata"]["uid"].is_string());
    assert!(got["metadata"]["creationTimestamp"].is_string());
    assert_eq!(labels_of(&got), json!({"app": "x"}));
    assert_eq!(got["spec"]["containers"][0]["name"], "app");
    assert_eq!(got["status"]["phase"], "Pending");
    // Overwriting keeps the identity, takes a new resourceVersion and replaces the labels.
    let again = ts.put_pod("ns", "p", &[]);
    assert_eq!(again["metadata"]["uid"], got["metadata"]["uid"]);
    assert_ne!(
        again["metadata"]["resourceVersion"],
        got["metadata"]["resourceVersion"]
    );
    assert!(again["metadata"].get("labels").is_none());
    assert_eq!(ts.pod_label("ns", "p", "app"), None);
    assert!(ts.pod("ns", "other").is_none());
    assert!(ts.delete_pod("ns", "p"));
    assert_eq!(http.get(&pod_path("p")).await.status, 404);
}

#[tokio::test]
async fn pod_merge_patch_adds_and_removes_labels_and_bumps_the_shared_resource_version() {
    let (ts, http) = setup().await;
    let created = ts.put_pod("ns", "p", &[("app", "x"), ("old", "1")]);
    let rv0: u64 = created["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let r = http
        .patch_pod(
            "p",
            MERGE,
            &json!({"metadata": {"labels": {"leaderd.io/leader": "true", "old": null}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    let patched = r.json();
    assert_eq!(
        labels_of(&patched),
        json!({"app": "x", "leaderd.io/leader": "true"})
    );
    // The whole pod comes back, with its spec, status and identity.
    assert_eq!(patched["spec"], created["spec"]);
    assert_eq!(patched["status"], created["status"]);
    assert_eq!(patched["metadata"]["uid"], created["metadata"]["uid"]);
    let rv1: u64 = r.rv().parse().unwrap();
    assert_eq!(rv1, rv0 + 1);
    assert_eq!(ts.pod("ns", "p").unwrap(), patched);
    assert_eq!(
        ts.pod_label("ns", "p", "leaderd.io/leader").as_deref(),
        Some("true")
    );
    // Leases and pods share one counter, like etcd's revision.
    let lease_rv: u64 = http.post(&lease("a", "me")).await.rv().parse().unwrap();
    assert_eq!(lease_rv, rv1 + 1);
    // A patch that changes nothing writes nothing: the resourceVersion stays.
    let r = http
        .patch_pod("p", MERGE, &json!({"metadata": {"labels": {"app": "x"}}}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.rv(), rv1.to_string());
    // Removing the last labels drops the map, as Go's omitempty does.
    let r = http
        .patch_pod(
            "p",
            MERGE,
            &json!({"metadata": {"labels": {"app": null, "leaderd.io/leader": null}}}),
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.json()["metadata"].get("labels").is_none(), "{}", r.body);
    // dryRun answers without storing.
    let r = http
        .send(
            "PATCH",
            &format!("{}?dryRun=All", pod_path("p")),
            Some(MERGE),
            &json!({"metadata": {"labels": {"dry": "run"}}}).to_string(),
        )
        .await;
    assert_eq!(labels_of(&r.json()), json!({"dry": "run"}));
    assert_eq!(ts.pod_label("ns", "p", "dry"), None);
}

#[tokio::test]
async fn pod_strategic_merge_and_json_patches_edit_labels_too() {
    let (ts, http) = setup().await;
    ts.put_pod("ns", "p", &[("a", "1"), ("b", "2")]);
    let r = http
        .patch_pod(
            "p",
            "application/strategic-merge-patch+json",
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(labels_of(&r.json()), json!({"b": "2", "c": "3"}));
    let r = http
        .patch_pod(
            "p",
            "application/json-patch+json",
            &json!([{"op": "add", "path": "/metadata/labels/leaderd.io~1leader", "value": "true"},
                    {"op": "remove", "path": "/metadata/labels/b"}]),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(
        labels_of(&r.json()),
        json!({"c": "3", "leaderd.io/leader": "true"})
    );
    // A failing test op: 422 like on leases.
    let r = http
        .patch_pod(
            "p",
            "application/json-patch+json",
            &json!([{"op": "test", "path": "/metadata/labels/c", "value": "nope"}]),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    // Apply patches need a field manager; other content types are 415.
    let r = http
        .patch_pod("p", "application/apply-patch+yaml", &json!({}))
        .await;
    assert_status(&r, 400, "BadRequest");
    let r = http.patch_pod("p", "text/plain", &json!({})).await;
    assert_status(&r, 415, "UnsupportedMediaType");
}

#[tokio::test]
async fn pod_invalid_label_value_or_key_is_422_invalid_with_causes() {
    let (ts, http) = setup().await;
    let before = ts.put_pod("ns", "p", &[("app", "x")]);
    let r = http
        .patch_pod(
            "p",
            MERGE,
            &json!({"metadata": {"labels": {"leaderd.io/leader": "bad value!"}}}),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    let msg = r#"Invalid value: "bad value!": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"#;
    assert_eq!(
        r.message(),
        format!("Pod \"p\" is invalid: metadata.labels: {msg}")
    );
    let cause = json!({"reason": "FieldValueInvalid", "message": msg, "field": "metadata.labels"});
    assert_eq!(
        r.json()["details"],
        json!({"name": "p", "kind": "Pod", "causes": [cause.clone(), cause]})
    );
    // Too long, and a bad key.
    let r = http
        .patch_pod(
            "p",
            MERGE,
            &json!({"metadata": {"labels": {"k": "v".repeat(64)}}}),
        )
        .await;
    assert_status(&r, 422, "Invalid");
    assert!(r.message().contains("must be no more than 63 characters"));
    let r = http
        .patch_pod("p", MERGE, &json!({"metadata": {"labels": {"-bad": "v"}}}))
        .await;
    assert_status(&r, 422, "Invalid");
    assert!(
        r.message().starts_with(
            "Pod \"p\" is invalid: metadata.labels: Invalid value: \"-bad\": name part must consist of"
        ),
        "{}",
        r.message()
    );
    // A non-string label value does not decode: 422 on the field "patch".
    let r = http
        .patch_pod("p", MERGE, &json!({"metadata": {"labels": {"k": 1}}}))
        .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(r.json()["details"]["causes"][0]["field"], "patch");
    // Nothing was stored.
    assert_eq!(ts.pod("ns", "p").unwrap(), before);
}

#[tokio::test]
async fn pod_patch_guards_resource_version_uid_spec_and_status() {
    let (ts, http) = setup().await;
    let created = ts.put_pod("ns", "p", &[]);
    let rv0 = created["metadata"]["resourceVersion"].as_str().unwrap();
    http.patch_pod("p", MERGE, &json!({"metadata": {"labels": {"a": "1"}}}))
        .await;
    // A stale resourceVersion in a merge patch is a precondition.
    let r = http
        .patch_pod(
            "p",
            MERGE,
            &json!({"metadata": {"resourceVersion": rv0, "labels": {"a": "2"}}}),
        )
        .await;
    assert_status(&r, 409, "Conflict");
    assert_eq!(
        r.message(),
        "Operation cannot be fulfilled on pods \"p\": the object has been modified; please apply your changes to the latest version and try again"
    );
    assert_eq!(r.json()["details"], json!({"name": "p", "kind": "pods"}));
    // Another uid: immutable.
    let r = http
        .patch_pod("p", MERGE, &json!({"metadata": {"uid": "other"}}))
        .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(r.json()["details"]["causes"][0]["field"], "metadata.uid");
    // Spec fields other than images may not change.
    let r = http
        .patch_pod("p", MERGE, &json!({"spec": {"restartPolicy": "Never"}}))
        .await;
    assert_status(&r, 422, "Invalid");
    assert_eq!(
        r.json()["details"]["causes"][0]["reason"],
        "FieldValueForbidden"
    );
    assert!(r.message().starts_with(
        "Pod \"p\" is invalid: spec: Forbidden: pod updates may not change fields other than"
    ));
    let r = http
        .patch_pod(
            "p",
            "application/strategic-merge-patch+json",
            &json!({"spec": {"containers": [{"name": "app", "image": "new:2"}]}}),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(r.json()["spec"]["containers"][0]["image"], "new:2");
    // The status is not written through the pod itself.
    let r = http
        .patch_pod("p", MERGE, &json!({"status": {"phase": "Running"}}))
        .await;
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["status"]["phase"], "Pending");
    // A name in the patch that differs from the URL: 400.
    let r = http
        .patch_pod("p", MERGE, &json!({"metadata": {"name": "q"}}))
        .await;
    assert_status(&r, 400, "BadRequest");
}

#[tokio::test]
async fn pod_collection_and_other_verbs_are_405_and_subresources_404() {
    let (ts, http) = setup().await;
    ts.put_pod("ns", "p", &[]);
    for (method, path) in [
        ("GET", PODS.to_string()),
        ("POST", PODS.to_string()),
        ("GET", "/api/v1/pods".to_string()),
        ("PUT", pod_path("p")),
        ("DELETE", pod_path("p")),
    ] {
        let r = http
            .send(method, &path, Some("application/json"), "{}")
            .await;
        assert_status(&r, 405, "MethodNotAllowed");
    }
    let r = http.get(&format!("{}/status", pod_path("p"))).await;
    assert_status(&r, 404, "NotFound");
    assert!(ts.pod("ns", "p").is_some());
}

#[tokio::test]
async fn partition_holds_pod_requests_until_heal() {
    let (ts, _) = setup().await;
    ts.put_pod("ns", "p", &[]);
    let ts = std::sync::Arc::new(ts);
    let http = std::sync::Arc::new(Http::new(&ts, "cut"));
    ts.partition("cut");
    let h = http.clone();
    let mut pending = tokio::spawn(async move {
        h.patch_pod("p", MERGE, &json!({"metadata": {"labels": {"l": "1"}}}))
            .await
            .status
    });
    assert!(
        tokio::time::timeout(Duration::from_millis(300), &mut pending)
            .await
            .is_err()
    );
    // Held, not applied; others are served meanwhile.
    assert_eq!(ts.pod_label("ns", "p", "l"), None);
    assert_eq!(Http::new(&ts, "fine").get(&pod_path("p")).await.status, 200);
    let rec = &ts.requests()[0];
    assert_eq!(
        (
            rec.client.as_str(),
            rec.verb.as_str(),
            rec.resource.as_str(),
            rec.status
        ),
        ("cut", "patch", "pods", 0)
    );
    ts.heal("cut");
    assert_eq!(pending.await.unwrap(), 200);
    assert_eq!(ts.pod_label("ns", "p", "l").as_deref(), Some("1"));
}

#[tokio::test]
async fn pod_requests_go_through_error_rate_garbage_latency_and_deny() {
    let (ts, http) = setup().await;
    ts.put_pod("ns", "p", &[]);
    ts.set_error_rate(Some("tok"), 1.0, 503);
    assert_status(&http.get(&pod_path("p")).await, 503, "ServiceUnavailable");
    ts.clear_faults();
    ts.set_garbage("tok", true);
    let r = http.get(&pod_path("p")).await;
    assert!(r.status == 200 && serde_json::from_str::<Value>(&r.body).is_err());
    ts.clear_faults();
    ts.set_latency("tok", Duration::from_millis(200));
    let t = std::time::Instant::now();
    assert_eq!(http.get(&pod_path("p")).await.status, 200);
    assert!(t.elapsed() >= Duration::from_millis(200));
    ts.clear_faults();

    // deny_resource: only pod patches, with the core group's RBAC message.
    ts.deny_resource("tok", "pods", "patch");
    let r = http
        .patch_pod("p", MERGE, &json!({"metadata": {"labels": {"l": "1"}}}))
        .await;
    assert_status(&r, 403, "Forbidden");
    assert_eq!(
        r.message(),
        r#"pods "p" is forbidden: User "tok" cannot patch resource "pods" in API group "" in the namespace "ns""#
    );
    assert_eq!(r.json()["details"], json!({"name": "p", "kind": "pods"}));
    assert_eq!(http.get(&pod_path("p")).await.status, 200);
    http.post(&lease("a", "me")).await;
    let r = http
        .patch("a", MERGE, &json!({"spec": {"holderIdentity": "x"}}))
        .await;
    assert_eq!(r.status, 200, "a lease patch is not denied");
    // deny: the verb on leases and pods alike.
    ts.clear_faults();
    ts.deny("tok", "get");
    assert_status(&http.get(&pod_path("p")).await, 403, "Forbidden");
    assert_status(&http.get(&obj_path("a")).await, 403, "Forbidden");
}

#[tokio::test]
async fn requests_record_the_resource_they_address() {
    let (ts, http) = setup().await;
    ts.put_pod("ns", "p", &[]);
    http.get(&obj_path("a")).await;
    http.patch_pod("p", MERGE, &json!({"metadata": {"labels": {"l": "1"}}}))
        .await;
    http.get(&pod_path("p")).await;
    http.send(
        "POST",
        "/apis/events.k8s.io/v1/namespaces/ns/events",
        Some("application/json"),
        &json!({"metadata": {"name": "e"}}).to_string(),
    )
    .await;
    http.get("/version").await;
    let recs: Vec<(String, String, u16)> = ts
        .requests()
        .into_iter()
        .map(|r| (r.resource, r.verb, r.status))
        .collect();
    assert_eq!(
        recs,
        vec![
            ("leases".into(), "get".into(), 404),
            ("pods".into(), "patch".into(), 200),
            ("pods".into(), "get".into(), 200),
            ("events".into(), "create".into(), 201),
            ("".into(), "get".into(), 200),
        ]
    );
    let pod_patches = ts
        .requests()
        .iter()
        .filter(|r| r.resource == "pods" && r.verb == "patch")
        .count();
    assert_eq!(pod_patches, 1);
}

#[tokio::test]
async fn wait_pod_label_wakes_on_the_patch_and_times_out_otherwise() {
    let (ts, http) = setup().await;
    ts.put_pod("ns", "p", &[]);
    let ts = std::sync::Arc::new(ts);
    // Already true: at once.
    assert!(
        ts.wait_pod_label_absent("ns", "p", "l", Duration::ZERO)
            .await
    );
    // Not true and nothing changes: false after the timeout.
    assert!(
        !ts.wait_pod_label("ns", "p", "l", "1", Duration::from_millis(100))
            .await
    );
    assert!(
        !ts.wait_pod_label_absent("ns", "missing", "l", Duration::from_millis(50))
            .await
    );
    let waiter = {
        let ts = ts.clone();
        tokio::spawn(async move { ts.wait_pod_label("ns", "p", "l", "1", PROMPT).await })
    };
    // An unrelated write wakes it without satisfying it.
    ts.put_pod("ns", "other", &[]);
    let started = std::time::Instant::now();
    http.patch_pod("p", MERGE, &json!({"metadata": {"labels": {"l": "1"}}}))
        .await;
    assert!(waiter.await.unwrap());
    assert!(started.elapsed() < PROMPT);
    let waiter = {
        let ts = ts.clone();
        tokio::spawn(async move { ts.wait_pod_label_absent("ns", "p", "l", PROMPT).await })
    };
    http.patch_pod("p", MERGE, &json!({"metadata": {"labels": {"l": null}}}))
        .await;
    assert!(waiter.await.unwrap());
}

#[tokio::test]
async fn kube_client_pod_round_trip_get_and_patch_labels() {
    use k8s_openapi::api::core::v1::Pod;
    use kube::api::{Api, Patch, PatchParams};

    let ts = TestServer::start().await.unwrap();
    let kc = kube::config::Kubeconfig::from_yaml(&ts.kubeconfig_yaml("pod-tok", "kns")).unwrap();
    let cfg = kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(cfg).unwrap();
    let pods: Api<Pod> = Api::default_namespaced(client);

    let err = pods.get("me").await.unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 404 && s.reason == "NotFound"),
        "{err:?}"
    );
    assert!(pods.get_opt("me").await.unwrap().is_none());
    ts.put_pod("kns", "me", &[("app", "demo")]);
    let got = pods.get("me").await.unwrap();
    assert_eq!(got.metadata.labels.as_ref().unwrap()["app"], "demo");
    let rv = got.metadata.resource_version.clone().unwrap();

    // Exactly leaderd's call.
    let patched = pods
        .patch(
            "me",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"leaderd.io/leader": "true"}}})),
        )
        .await
        .unwrap();
    let labels = patched.metadata.labels.clone().unwrap();
    assert_eq!(labels["leaderd.io/leader"], "true");
    assert_eq!(labels["app"], "demo");
    assert_ne!(
        patched.metadata.resource_version.as_deref(),
        Some(rv.as_str())
    );
    assert_eq!(
        patched.spec.as_ref().unwrap().containers[0].name,
        "app".to_string()
    );
    let again = pods.get("me").await.unwrap();
    assert_eq!(again.metadata, patched.metadata);

    let cleared = pods
        .patch(
            "me",
            &PatchParams::default(),
            &Patch::Strategic(json!({"metadata": {"labels": {"leaderd.io/leader": null}}})),
        )
        .await
        .unwrap();
    assert!(!cleared
        .metadata
        .labels
        .unwrap()
        .contains_key("leaderd.io/leader"));

    let err = pods
        .patch(
            "me",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"leaderd.io/leader": "no way"}}})),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(err, kube::Error::Api(ref s) if s.code == 422 && s.reason == "Invalid"),
        "{err:?}"
    );
    assert!(ts.requests().iter().all(|r| r.client == "pod-tok"));
    assert_eq!(
        ts.requests()
            .iter()
            .filter(|r| r.resource == "pods" && r.verb == "patch")
            .count(),
        3
    );
    ts.shutdown().await;
}

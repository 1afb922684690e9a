//! `metav1.Status` error bodies shaped exactly like kube-apiserver's (k8s.io/apimachinery `errors` helpers).

use serde_json::{json, Map, Value};

pub(super) const GROUP: &str = "coordination.k8s.io";
pub(super) const RESOURCE: &str = "leases";

/// The resource an error is about: its plural, API group ("" for the core group) and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Resource {
    pub plural: &'static str,
    pub group: &'static str,
    pub kind: &'static str,
}

pub(super) const LEASES: Resource = Resource {
    plural: RESOURCE,
    group: GROUP,
    kind: "Lease",
};

/// core/v1 Pods: the core group is "", which Status bodies omit (`omitempty`).
pub(super) const PODS: Resource = Resource {
    plural: "pods",
    group: "",
    kind: "Pod",
};

/// An API error: HTTP status plus the Status body to send.
#[derive(Clone, Debug)]
pub(super) struct ApiError {
    pub code: u16,
    pub body: Value,
    /// `Retry-After` header value in seconds, if any.
    pub retry_after: Option<u32>,
}

impl ApiError {
    fn new(code: u16, reason: &str, message: String, details: Option<Value>) -> ApiError {
        let mut body = Map::new();
        body.insert("kind".into(), json!("Status"));
        body.insert("apiVersion".into(), json!("v1"));
        body.insert("metadata".into(), json!({}));
        body.insert("status".into(), json!("Failure"));
        body.insert("message".into(), Value::String(message));
        if !reason.is_empty() {
            body.insert("reason".into(), json!(reason));
        }
        if let Some(d) = details {
            body.insert("details".into(), d);
        }
        body.insert("code".into(), json!(code));
        ApiError {
            code,
            body: Value::Object(body),
            retry_after: None,
        }
    }
}

/// `{name, group, kind}` details; `name` and `group` omitted when empty (like Go's omitempty).
fn details(res: &Resource, name: &str) -> Value {
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !res.group.is_empty() {
        d.insert("group".into(), json!(res.group));
    }
    d.insert("kind".into(), json!(res.plural));
    Value::Object(d)
}

/// `leases.coordination.k8s.io "NAME"`, `pods "NAME"` (without the name when it is empty).
fn qualified(res: &Resource, name: &str) -> String {
    let gr = if res.group.is_empty() {
        res.plural.to_string()
    } else {
        format!("{}.{}", res.plural, res.group)
    };
    if name.is_empty() {
        gr
    } else {
        format!("{gr} {}", go_quote(name))
    }
}

/// Go's `%q` for the strings we meet (JSON string escaping is the same for printable text).
pub(super) fn go_quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| format!("\"{s}\""))
}

/// A lease is not found.
pub(super) fn not_found(name: &str) -> ApiError {
    not_found_of(&LEASES, name)
}

/// `pods "NAME" not found` and the like.
pub(super) fn not_found_of(res: &Resource, name: &str) -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        format!("{} not found", qualified(res, name)),
        Some(details(res, name)),
    )
}

pub(super) fn already_exists(name: &str) -> ApiError {
    ApiError::new(
        409,
        "AlreadyExists",
        format!("{} already exists", qualified(&LEASES, name)),
        Some(details(&LEASES, name)),
    )
}

/// `Operation cannot be fulfilled on leases.coordination.k8s.io "NAME": DETAIL`.
pub(super) fn conflict_with(name: &str, detail: &str) -> ApiError {
    conflict_with_of(&LEASES, name, detail)
}

/// `Operation cannot be fulfilled on RESOURCE "NAME": DETAIL`.
pub(super) fn conflict_with_of(res: &Resource, name: &str, detail: &str) -> ApiError {
    ApiError::new(
        409,
        "Conflict",
        format!(
            "Operation cannot be fulfilled on {}: {detail}",
            qualified(res, name)
        ),
        Some(details(res, name)),
    )
}

pub(super) fn conflict(name: &str) -> ApiError {
    conflict_of(&LEASES, name)
}

/// The stale-resourceVersion conflict.
pub(super) fn conflict_of(res: &Resource, name: &str) -> ApiError {
    conflict_with_of(
        res,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// One `field.Error` of an Invalid answer.
#[derive(Clone, Debug)]
pub(super) struct FieldError {
    /// `FieldValueInvalid`, `FieldValueRequired`, ...
    pub reason: &'static str,
    pub field: String,
    /// `ErrorBody()`: e.g. `Invalid value: 0: must be greater than 0`.
    pub body: String,
}

impl FieldError {
    /// `field.Invalid(path, value, detail)`; `shown` is the value as Go prints it.
    pub fn invalid(field: &str, shown: &str, detail: &str) -> FieldError {
        FieldError {
            reason: "FieldValueInvalid",
            field: field.into(),
            body: format!("Invalid value: {shown}: {detail}"),
        }
    }
    pub fn required(field: &str, detail: &str) -> FieldError {
        FieldError {
            reason: "FieldValueRequired",
            field: field.into(),
            body: format!("Required value: {detail}"),
        }
    }
    /// `field.Forbidden(path, detail)`.
    pub fn forbidden(field: &str, detail: &str) -> FieldError {
        FieldError {
            reason: "FieldValueForbidden",
            field: field.into(),
            body: format!("Forbidden: {detail}"),
        }
    }
    /// `field.TooLong(path, "", max)` as v1.20 words it.
    pub fn too_long(field: &str, max: usize) -> FieldError {
        FieldError {
            reason: "FieldValueTooLong",
            field: field.into(),
            body: format!("Too long: must have at most {max} bytes"),
        }
    }
    fn text(&self) -> String {
        format!("{}: {}", self.field, self.body)
    }
}

/// `NewInvalid(qualifiedKind, name, errs)`; `kind` is e.g. `Lease` (or `leases` for the
/// resourceVersion error raised by the generic store, or "" with `group` "" for patch decode errors).
pub(super) fn invalid(group: &str, kind: &str, name: &str, errs: &[FieldError]) -> ApiError {
    let gk = if group.is_empty() {
        kind.to_string()
    } else {
        format!("{kind}.{group}")
    };
    let mut texts: Vec<String> = Vec::new();
    for e in errs {
        let t = e.text();
        if !texts.contains(&t) {
            texts.push(t);
        }
    }
    let agg = if texts.len() == 1 {
        texts[0].clone()
    } else {
        format!("[{}]", texts.join(", "))
    };
    let causes: Vec<Value> = errs
        .iter()
        .map(|e| json!({"reason": e.reason, "message": e.body, "field": e.field}))
        .collect();
    let mut d = Map::new();
    if !name.is_empty() {
        d.insert("name".into(), json!(name));
    }
    if !group.is_empty() {
        d.insert("group".into(), json!(group));
    }
    if !kind.is_empty() {
        d.insert("kind".into(), json!(kind));
    }
    d.insert("causes".into(), Value::Array(causes));
    ApiError::new(
        422,
        "Invalid",
        format!("{gk} {} is invalid: {agg}", go_quote(name)),
        Some(Value::Object(d)),
    )
}

/// `NewGenericServerResponse(422, ...)` as used for JSON patches that do not apply.
pub(super) fn unprocessable_patch(cause: &str) -> ApiError {
    ApiError::new(
        422,
        "Invalid",
        "the server rejected our request due to an error in our request".into(),
        Some(json!({"causes": [{"reason": "UnexpectedServerResponse", "message": cause}]})),
    )
}

/// `NewBadRequest(msg)`: no details, like the real one.
pub(super) fn bad_request(message: impl Into<String>) -> ApiError {
    ApiError::new(400, "BadRequest", message.into(), None)
}

/// RBAC's answer: `RESOURCE "NAME" is forbidden: User "CLIENT" cannot VERB resource "PLURAL" in
/// API group "GROUP" in the namespace "NS"`.
pub(super) fn forbidden(
    res: &Resource,
    client: &str,
    verb: &str,
    ns: &str,
    name: &str,
) -> ApiError {
    let ns_part = if ns.is_empty() {
        "at the cluster scope".to_string()
    } else {
        format!("in the namespace {}", go_quote(ns))
    };
    ApiError::new(
        403,
        "Forbidden",
        format!(
            "{} is forbidden: User {} cannot {verb} resource {} in API group {} {ns_part}",
            qualified(res, name),
            go_quote(client),
            go_quote(res.plural),
            go_quote(res.group),
        ),
        Some(details(res, name)),
    )
}

pub(super) fn unknown_path() -> ApiError {
    ApiError::new(
        404,
        "NotFound",
        "the server could not find the requested resource".into(),
        Some(json!({})),
    )
}

pub(super) fn method_not_allowed(method: &str) -> ApiError {
    ApiError::new(
        405,
        "MethodNotAllowed",
        format!("the server does not allow this method on the requested resource ({method})"),
        Some(json!({})),
    )
}

/// `negotiation.NewUnsupportedMediaTypeError(accepts)`.
pub(super) fn unsupported_media_type(accepts: &[&str]) -> ApiError {
    ApiError::new(
        415,
        "UnsupportedMediaType",
        format!(
            "the body of the request was in an unknown format - accepted media types include: {}",
            accepts.join(", ")
        ),
        None,
    )
}

pub(super) fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        413,
        "RequestEntityTooLarge",
        format!("Request entity too large: limit is {limit}"),
        None,
    )
}

/// A plain Go error that reached the handler: reason Unknown.
pub(super) fn unknown_error(code: u16, message: &str) -> ApiError {
    ApiError::new(code, "Unknown", message.into(), None)
}

pub(super) fn internal(err: &str) -> ApiError {
    ApiError::new(
        500,
        "InternalError",
        format!("Internal error occurred: {err}"),
        Some(json!({"causes": [{"message": err}]})),
    )
}

/// The 410 Expired Status sent as a watch ERROR event.
pub(super) fn expired(requested: u64, oldest: u64) -> Value {
    ApiError::new(
        410,
        "Expired",
        format!("too old resource version: {requested} ({oldest})"),
        None,
    )
    .body
}

/// An injected failure with the status code `code`.
pub(super) fn injected(code: u16) -> ApiError {
    match code {
        429 => {
            let mut e = ApiError::new(
                429,
                "TooManyRequests",
                "Too many requests, please try again later.".into(),
                Some(json!({"retryAfterSeconds": 1})),
            );
            e.retry_after = Some(1);
            e
        }
        500 => internal("injected fault (leaderd test server)"),
        503 => ApiError::new(
            503,
            "ServiceUnavailable",
            "the server is currently unable to handle the request".into(),
            None,
        ),
        504 => ApiError::new(
            504,
            "Timeout",
            "Timeout: request did not complete within requested timeout - context deadline exceeded"
                .into(),
            Some(json!({})),
        ),
        other => ApiError::new(
            other,
            "",
            format!("the server responded with the status code {other} but did not return more information"),
            None,
        ),
    }
}

pub(super) fn shutting_down() -> ApiError {
    ApiError::new(
        503,
        "ServiceUnavailable",
        "apiserver is shutting down".into(),
        None,
    )
}

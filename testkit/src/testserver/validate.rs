//! Decoding and validation of Lease bodies as kube-apiserver v1.20 does it: decode errors
//! (400, json-iterator/Go `time.Parse` wording), then `ValidateLease` (422).

use serde_json::{Map, Value};

use super::status::{go_quote, FieldError};

pub(super) const API_VERSION: &str = "coordination.k8s.io/v1";
pub(super) const KIND: &str = "Lease";
const RFC3339_MICRO: &str = "2006-01-02T15:04:05.000000Z07:00";

/// Why a body could not be decoded into a Lease.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum DecodeError {
    /// Reported as is (version/kind sniffing failed).
    Plain(String),
    /// A json-iterator error inside the object; create/update prefix it with
    /// `Lease in version "v1" cannot be handled as a Lease: `.
    Field(String),
}

impl DecodeError {
    pub fn message(&self) -> String {
        match self {
            DecodeError::Plain(m) => m.clone(),
            DecodeError::Field(m) => {
                format!("Lease in version \"v1\" cannot be handled as a Lease: {m}")
            }
        }
    }
}

/// The first character json-iterator would complain about.
pub(super) fn found(v: &Value) -> char {
    match v {
        Value::Null => 'n',
        Value::Bool(true) => 't',
        Value::Bool(false) => 'f',
        Value::Number(_) => v.to_string().chars().next().unwrap_or('0'),
        Value::String(_) => '"',
        Value::Array(_) => '[',
        Value::Object(_) => '{',
    }
}

pub(super) fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

pub(super) fn field_err(path: &str, detail: String) -> DecodeError {
    DecodeError::Field(format!("{path}: {detail}"))
}

pub(super) fn read_string(v: &Value, path: &str) -> Result<Option<String>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => Ok(Some(s.clone())),
        other => Err(field_err(
            path,
            format!("ReadString: expects \" or n, but found {}", found(other)),
        )),
    }
}

fn read_int32(v: &Value, path: &str) -> Result<Option<i64>, DecodeError> {
    let Value::Number(n) = v else {
        if v.is_null() {
            return Ok(None);
        }
        return Err(field_err(
            path,
            format!("readUint32: unexpected character: {}", found(v)),
        ));
    };
    if let Some(i) = n.as_i64() {
        if i > i64::from(i32::MAX) || i < i64::from(i32::MIN) {
            return Err(field_err(path, format!("ReadInt32: overflow: {i}")));
        }
        return Ok(Some(i));
    }
    if n.as_u64().is_some() {
        return Err(field_err(path, format!("ReadInt32: overflow: {n}")));
    }
    let f = n.as_f64().unwrap_or(f64::NAN);
    if f.is_finite() && f.fract() == 0.0 && f.abs() > f64::from(i32::MAX) {
        return Err(field_err(path, format!("ReadInt32: overflow: {n}")));
    }
    Err(field_err(
        path,
        "assertInteger: can not decode float as int".into(),
    ))
}

pub(super) fn read_string_map(
    v: &Value,
    path: &str,
) -> Result<Option<Map<String, Value>>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::Object(m) => {
            for val in m.values() {
                read_string(val, path)?;
            }
            Ok(Some(m.clone()))
        }
        other => Err(field_err(
            path,
            format!("ReadMapCB: expect {{ or n, but found {}", found(other)),
        )),
    }
}

fn read_array(v: &Value, path: &str) -> Result<Option<Vec<Value>>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::Array(a) => Ok(Some(a.clone())),
        other => Err(field_err(
            path,
            format!("ReadArrayCB: expect [ or n, but found {}", found(other)),
        )),
    }
}

fn read_micro_time(v: &Value, path: &str) -> Result<Option<String>, DecodeError> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => match parse_micro_time(s) {
            Ok(micros) => Ok(Some(format_micro_time(micros))),
            Err(e) => Err(field_err(path, format!("unmarshalerDecoder: {e}"))),
        },
        other => Err(field_err(
            path,
            format!(
                "unmarshalerDecoder: json: cannot unmarshal {} into Go value of type string",
                json_type(other)
            ),
        )),
    }
}

/// Decode a request body (already parsed as JSON) into the stored Lease shape: `kind`,
/// `apiVersion`, the kept metadata fields and the v1.20 spec fields (MicroTimes normalised to UTC).
pub(super) fn decode_lease(body: &Value) -> Result<Value, DecodeError> {
    let Value::Object(top) = body else {
        return Err(DecodeError::Plain(format!(
            "couldn't get version/kind; json parse error: json: cannot unmarshal {} into Go value of type struct {{ APIVersion string \"json:\\\"apiVersion,omitempty\\\"\"; Kind string \"json:\\\"kind,omitempty\\\"\" }}",
            json_type(body)
        )));
    };
    match top.get("apiVersion") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() || s == API_VERSION => {}
        Some(Value::String(s)) => {
            return Err(DecodeError::Plain(format!(
                "the API version in the data ({s}) does not match the expected API version ({API_VERSION})"
            )))
        }
        Some(_) => {
            return Err(DecodeError::Plain(
                "couldn't get version/kind; json parse error: json: cannot unmarshal into Go struct field .apiVersion of type string".into(),
            ))
        }
    }
    match top.get("kind") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.is_empty() || s == KIND => {}
        Some(Value::String(s)) => {
            return Err(DecodeError::Field(format!(
                "no kind {} is registered for version {}",
                go_quote(s),
                go_quote(API_VERSION)
            )))
        }
        Some(_) => {
            return Err(DecodeError::Plain(
                "couldn't get version/kind; json parse error: json: cannot unmarshal into Go struct field .kind of type string".into(),
            ))
        }
    }

    let mut meta_out = Map::new();
    match top.get("metadata") {
        None | Some(Value::Null) => {}
        Some(Value::Object(meta)) => {
            const P: &str = "v1.Lease.ObjectMeta: v1.ObjectMeta";
            for (key, go) in [
                ("name", "Name"),
                ("generateName", "GenerateName"),
                ("namespace", "Namespace"),
                ("uid", "UID"),
                ("resourceVersion", "ResourceVersion"),
            ] {
                if let Some(v) = meta.get(key) {
                    if let Some(s) = read_string(v, &format!("{P}.{go}"))? {
                        if !s.is_empty() {
                            meta_out.insert(key.into(), Value::String(s));
                        }
                    }
                }
            }
            for (key, go) in [("labels", "Labels"), ("annotations", "Annotations")] {
                if let Some(v) = meta.get(key) {
                    if let Some(m) = read_string_map(v, &format!("{P}.{go}"))? {
                        if !m.is_empty() {
                            meta_out.insert(key.into(), Value::Object(m));
                        }
                    }
                }
            }
            if let Some(v) = meta.get("ownerReferences") {
                let path = format!("{P}.OwnerReferences");
                if let Some(a) = read_array(v, &path)? {
                    for r in &a {
                        if !r.is_object() {
                            return Err(field_err(
                                &path,
                                format!("readObjectStart: expect {{ or n, but found {}", found(r)),
                            ));
                        }
                    }
                    if !a.is_empty() {
                        meta_out.insert("ownerReferences".into(), Value::Array(a));
                    }
                }
            }
            if let Some(v) = meta.get("finalizers") {
                let path = format!("{P}.Finalizers");
                if let Some(a) = read_array(v, &path)? {
                    for f in &a {
                        read_string(f, &path)?;
                    }
                    if !a.is_empty() {
                        meta_out.insert("finalizers".into(), Value::Array(a));
                    }
                }
            }
        }
        Some(other) => {
            return Err(field_err(
                "v1.Lease.ObjectMeta",
                format!(
                    "readObjectStart: expect {{ or n, but found {}",
                    found(other)
                ),
            ))
        }
    }

    let mut spec_out = Map::new();
    match top.get("spec") {
        None | Some(Value::Null) => {}
        Some(Value::Object(spec)) => {
            const P: &str = "v1.Lease.Spec: v1.LeaseSpec";
            if let Some(v) = spec.get("holderIdentity") {
                if let Some(s) = read_string(v, &format!("{P}.HolderIdentity"))? {
                    spec_out.insert("holderIdentity".into(), Value::String(s));
                }
            }
            for (key, go) in [
                ("leaseDurationSeconds", "LeaseDurationSeconds"),
                ("leaseTransitions", "LeaseTransitions"),
            ] {
                if let Some(v) = spec.get(key) {
                    if let Some(i) = read_int32(v, &format!("{P}.{go}"))? {
                        spec_out.insert(key.into(), Value::from(i));
                    }
                }
            }
            for (key, go) in [("acquireTime", "AcquireTime"), ("renewTime", "RenewTime")] {
                if let Some(v) = spec.get(key) {
                    if let Some(t) = read_micro_time(v, &format!("{P}.{go}"))? {
                        spec_out.insert(key.into(), Value::String(t));
                    }
                }
            }
        }
        Some(other) => {
            return Err(field_err(
                "v1.Lease.Spec",
                format!(
                    "readObjectStart: expect {{ or n, but found {}",
                    found(other)
                ),
            ))
        }
    }

    let mut out = Map::new();
    out.insert("kind".into(), Value::String(KIND.into()));
    out.insert("apiVersion".into(), Value::String(API_VERSION.into()));
    out.insert("metadata".into(), Value::Object(meta_out));
    out.insert("spec".into(), Value::Object(spec_out));
    Ok(Value::Object(out))
}

/// A string field of `metadata` ("" when absent).
pub(super) fn meta_str<'a>(lease: &'a Value, key: &str) -> &'a str {
    lease
        .get("metadata")
        .and_then(|m| m.get(key))
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Set (or with "" remove) a string field of `metadata`.
pub(super) fn set_meta(lease: &mut Value, key: &str, value: &str) {
    if let Some(obj) = lease.as_object_mut() {
        let meta = obj
            .entry("metadata")
            .or_insert_with(|| Value::Object(Map::new()));
        if !meta.is_object() {
            *meta = Value::Object(Map::new());
        }
        if let Some(m) = meta.as_object_mut() {
            if value.is_empty() {
                m.remove(key);
            } else {
                m.insert(key.into(), Value::String(value.into()));
            }
        }
    }
}

const DNS1123_SUBDOMAIN_MSG: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_MSG: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";

fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// `IsDNS1123Subdomain` messages (empty when valid).
pub(super) fn dns1123_subdomain_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 253 {
        errs.push("must be no more than 253 characters".to_string());
    }
    if !s.split('.').all(is_dns1123_label) {
        errs.push(DNS1123_SUBDOMAIN_MSG.to_string());
    }
    errs
}

fn dns1123_label_errors(s: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if s.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !is_dns1123_label(s) {
        errs.push(DNS1123_LABEL_MSG.to_string());
    }
    errs
}

const QUALIFIED_NAME_FMT: &str = "([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]";
const QUALIFIED_NAME_ERR: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
const LABEL_VALUE_FMT: &str = "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?";
const LABEL_VALUE_ERR: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character";
/// `TotalAnnotationSizeLimitB`.
const ANNOTATIONS_MAX_BYTES: usize = 256 * 1024;

/// Go's `RegexError(msg, fmt, examples...)`, double spaces before "or" included.
fn regex_error(msg: &str, fmt: &str, examples: &[&str]) -> String {
    if examples.is_empty() {
        return format!("{msg} (regex used for validation is '{fmt}')");
    }
    let mut out = format!("{msg} (e.g. ");
    for (i, e) in examples.iter().enumerate() {
        if i > 0 {
            out.push_str(" or ");
        }
        out.push_str(&format!("'{e}', "));
    }
    out.push_str(&format!("regex used for validation is '{fmt}')"));
    out
}

/// `^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$`.
fn is_qualified_name_part(s: &str) -> bool {
    let b = s.as_bytes();
    let ext = |c: u8| c.is_ascii_alphanumeric() || matches!(c, b'-' | b'_' | b'.');
    !b.is_empty()
        && b[0].is_ascii_alphanumeric()
        && b[b.len() - 1].is_ascii_alphanumeric()
        && b.iter().all(|&c| ext(c))
}

/// `IsQualifiedName`: a label or annotation key, `[prefix/]name` (messages empty when valid).
pub(super) fn qualified_name_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    let parts: Vec<&str> = value.split('/').collect();
    let name = match parts.as_slice() {
        [name] => *name,
        [prefix, name] => {
            if prefix.is_empty() {
                errs.push("prefix part must be non-empty".to_string());
            } else {
                for msg in dns1123_subdomain_errors(prefix) {
                    errs.push(format!("prefix part {msg}"));
                }
            }
            *name
        }
        _ => {
            return vec![format!(
                "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
                regex_error(QUALIFIED_NAME_ERR, QUALIFIED_NAME_FMT, &["MyName", "my.name", "123-abc"])
            )]
        }
    };
    if name.is_empty() {
        errs.push("name part must be non-empty".to_string());
    } else if name.len() > 63 {
        errs.push("name part must be no more than 63 characters".to_string());
    }
    if !is_qualified_name_part(name) {
        errs.push(format!(
            "name part {}",
            regex_error(
                QUALIFIED_NAME_ERR,
                QUALIFIED_NAME_FMT,
                &["MyName", "my.name", "123-abc"]
            )
        ));
    }
    errs
}

/// `IsValidLabelValue` (messages empty when valid).
pub(super) fn label_value_errors(value: &str) -> Vec<String> {
    let mut errs = Vec::new();
    if value.len() > 63 {
        errs.push("must be no more than 63 characters".to_string());
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        errs.push(regex_error(
            LABEL_VALUE_ERR,
            LABEL_VALUE_FMT,
            &["MyValue", "my_value", "12345"],
        ));
    }
    errs
}

/// `ValidateLabels(labels, field)`: every error is on the map's path (not on the key), the key's
/// errors before the value's. Go walks the map in random order; this walks it by key.
pub(super) fn validate_labels(labels: Option<&Map<String, Value>>, field: &str) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(labels) = labels else {
        return errs;
    };
    let mut keys: Vec<&String> = labels.keys().collect();
    keys.sort();
    for k in keys {
        for msg in qualified_name_errors(k) {
            errs.push(FieldError::invalid(field, &go_quote(k), &msg));
        }
        let v = labels.get(k).and_then(Value::as_str).unwrap_or("");
        for msg in label_value_errors(v) {
            errs.push(FieldError::invalid(field, &go_quote(v), &msg));
        }
    }
    errs
}

/// `ValidateAnnotations(annotations, field)`: keys are qualified names (checked lowercased), and
/// keys plus values stay within 256 KiB.
pub(super) fn validate_annotations(
    annotations: Option<&Map<String, Value>>,
    field: &str,
) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let Some(annotations) = annotations else {
        return errs;
    };
    let mut keys: Vec<&String> = annotations.keys().collect();
    keys.sort();
    let mut total = 0usize;
    for k in keys {
        for msg in qualified_name_errors(&k.to_lowercase()) {
            errs.push(FieldError::invalid(field, &go_quote(k), &msg));
        }
        total += k.len()
            + annotations
                .get(k)
                .and_then(Value::as_str)
                .map_or(0, str::len);
    }
    if total > ANNOTATIONS_MAX_BYTES {
        errs.push(FieldError::too_long(field, ANNOTATIONS_MAX_BYTES));
    }
    errs
}

/// `ValidateLease`: object meta (name, namespace) and spec.
pub(super) fn validate_lease(lease: &Value) -> Vec<FieldError> {
    let mut errs = Vec::new();
    let name = meta_str(lease, "name");
    if name.is_empty() {
        errs.push(FieldError::required(
            "metadata.name",
            "name or generateName is required",
        ));
    } else {
        for msg in dns1123_subdomain_errors(name) {
            errs.push(FieldError::invalid("metadata.name", &go_quote(name), &msg));
        }
    }
    let ns = meta_str(lease, "namespace");
    if ns.is_empty() {
        errs.push(FieldError::required("metadata.namespace", ""));
    } else {
        for msg in dns1123_label_errors(ns) {
            errs.push(FieldError::invalid(
                "metadata.namespace",
                &go_quote(ns),
                &msg,
            ));
        }
    }
    let spec = lease.get("spec");
    if let Some(d) = spec
        .and_then(|s| s.get("leaseDurationSeconds"))
        .and_then(Value::as_i64)
    {
        if d <= 0 {
            errs.push(FieldError::invalid(
                "spec.leaseDurationSeconds",
                &d.to_string(),
                "must be greater than 0",
            ));
        }
    }
    if let Some(t) = spec
        .and_then(|s| s.get("leaseTransitions"))
        .and_then(Value::as_i64)
    {
        if t < 0 {
            errs.push(FieldError::invalid(
                "spec.leaseTransitions",
                &t.to_string(),
                "must be greater than or equal to 0",
            ));
        }
    }
    errs
}

// ---------------------------------------------------------------------------------------------
// MicroTime: Go's time.Parse with layout "2006-01-02T15:04:05.000000Z07:00", error texts included.

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719468;
    let era = if z >= 0 { z } else { z - 146096 } / 146097;
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

fn days_in_month(y: i64, m: i64) -> i64 {
    match m {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        _ if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        _ => 28,
    }
}

fn parse_err(value: &str, value_elem: &str, layout_elem: &str) -> String {
    format!(
        "parsing time {} as {}: cannot parse {} as {}",
        go_quote(value),
        go_quote(RFC3339_MICRO),
        go_quote(value_elem),
        go_quote(layout_elem)
    )
}

fn range_err(value: &str, what: &str) -> String {
    format!("parsing time {}: {what} out of range", go_quote(value))
}

fn digits(s: &str, n: usize) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < n || !b[..n].iter().all(u8::is_ascii_digit) {
        return None;
    }
    s[..n].parse().ok()
}

/// Go's `getnum(s, fixed)`: one or two digits (exactly two when fixed).
fn getnum(s: &str, fixed: bool) -> Option<(i64, &str)> {
    let b = s.as_bytes();
    if b.is_empty() || !b[0].is_ascii_digit() {
        return None;
    }
    if b.len() < 2 || !b[1].is_ascii_digit() {
        if fixed {
            return None;
        }
        return Some((i64::from(b[0] - b'0'), &s[1..]));
    }
    Some((
        i64::from(b[0] - b'0') * 10 + i64::from(b[1] - b'0'),
        &s[2..],
    ))
}

/// Parse a MicroTime; returns microseconds since the Unix epoch (UTC) or Go's error text.
pub(super) fn parse_micro_time(value: &str) -> Result<i64, String> {
    let whole = value;
    let mut rest = value;
    // 2006
    let Some(year) = digits(rest, 4) else {
        return Err(parse_err(whole, rest, "2006"));
    };
    rest = &rest[4..];
    let lit = |rest: &str, c: char| -> Result<usize, String> {
        if rest.starts_with(c) {
            Ok(c.len_utf8())
        } else {
            Err(parse_err(whole, rest, &c.to_string()))
        }
    };
    rest = &rest[lit(rest, '-')?..];
    let Some((month, r)) = getnum(rest, true) else {
        return Err(parse_err(whole, rest, "01"));
    };
    if !(1..=12).contains(&month) {
        return Err(range_err(whole, "month"));
    }
    rest = r;
    rest = &rest[lit(rest, '-')?..];
    let Some((day, r)) = getnum(rest, true) else {
        return Err(parse_err(whole, rest, "02"));
    };
    rest = r;
    rest = &rest[lit(rest, 'T')?..];
    let Some((hour, r)) = getnum(rest, false) else {
        return Err(parse_err(whole, rest, "15"));
    };
    if hour >= 24 {
        return Err(range_err(whole, "hour"));
    }
    rest = r;
    rest = &rest[lit(rest, ':')?..];
    let Some((minute, r)) = getnum(rest, true) else {
        return Err(parse_err(whole, rest, "04"));
    };
    if minute >= 60 {
        return Err(range_err(whole, "minute"));
    }
    rest = r;
    rest = &rest[lit(rest, ':')?..];
    let Some((second, r)) = getnum(rest, true) else {
        return Err(parse_err(whole, rest, "05"));
    };
    if second >= 60 {
        return Err(range_err(whole, "second"));
    }
    rest = r;
    // .000000: exactly six digits
    let frac_ok = rest.len() >= 7 && rest.starts_with('.');
    let Some(micros) = (if frac_ok { digits(&rest[1..], 6) } else { None }) else {
        return Err(parse_err(whole, rest, ".000000"));
    };
    rest = &rest[7..];
    // Z07:00
    let offset_secs: i64;
    if let Some(r) = rest.strip_prefix('Z') {
        offset_secs = 0;
        rest = r;
    } else {
        let b = rest.as_bytes();
        let ok = b.len() >= 6 && (b[0] == b'+' || b[0] == b'-') && b[3] == b':';
        let hh = if ok { digits(&rest[1..], 2) } else { None };
        let mm = if ok { digits(&rest[4..], 2) } else { None };
        let (Some(hh), Some(mm)) = (hh, mm) else {
            return Err(parse_err(whole, rest, "Z07:00"));
        };
        if hh > 24 {
            return Err(range_err(whole, "time zone offset hour"));
        }
        if mm > 60 {
            return Err(range_err(whole, "time zone offset minute"));
        }
        let s = (hh * 60 + mm) * 60;
        offset_secs = if b[0] == b'-' { -s } else { s };
        rest = &rest[6..];
    }
    if !rest.is_empty() {
        return Err(format!(
            "parsing time {}: extra text: {}",
            go_quote(whole),
            go_quote(rest)
        ));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(format!(
            "parsing time {}: day out of range",
            go_quote(whole)
        ));
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86400 + hour * 3600 + minute * 60 + second - offset_secs;
    Ok(secs * 1_000_000 + micros)
}

/// Format as Go's MicroTime marshals it: UTC, six fractional digits.
pub(super) fn format_micro_time(micros: i64) -> String {
    let secs = micros.div_euclid(1_000_000);
    let frac = micros.rem_euclid(1_000_000);
    let days = secs.div_euclid(86400);
    let sod = secs.rem_euclid(86400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{frac:06}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn micro_time_accepts_six_digits_and_normalises_offsets_to_utc() {
        let t = parse_micro_time("2026-11-22T07:30:00.123456Z").unwrap();
        assert_eq!(format_micro_time(t), "2026-11-22T07:30:00.123456Z");
        let t = parse_micro_time("2026-01-01T01:30:00.000001+02:00").unwrap();
        assert_eq!(format_micro_time(t), "2025-12-31T23:30:00.000001Z");
        let t = parse_micro_time("1970-01-01T00:00:00.000000Z").unwrap();
        assert_eq!(t, 0);
    }

    #[test]
    fn micro_time_errors_use_go_time_parse_wording() {
        assert_eq!(
            parse_micro_time("2026-11-22T07:30:00Z").unwrap_err(),
            r#"parsing time "2026-11-22T07:30:00Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse "Z" as ".000000""#
        );
        assert_eq!(
            parse_micro_time("2026-11-22T07:30:00.123Z").unwrap_err(),
            r#"parsing time "2026-11-22T07:30:00.123Z" as "2006-01-02T15:04:05.000000Z07:00": cannot parse ".123Z" as ".000000""#
        );
        assert_eq!(
            parse_micro_time("2026-13-22T07:30:00.123456Z").unwrap_err(),
            r#"parsing time "2026-13-22T07:30:00.123456Z": month out of range"#
        );
        assert_eq!(
            parse_micro_time("2026-02-30T07:30:00.123456Z").unwrap_err(),
            r#"parsing time "2026-02-30T07:30:00.123456Z": day out of range"#
        );
        assert!(parse_micro_time("2026-11-22T07:30:00.1234567Z").is_err());
        assert!(parse_micro_time("").is_err());
        assert!(parse_micro_time("ünïcode-😀").is_err());
    }

    #[test]
    fn decode_keeps_known_fields_and_drops_the_rest() {
        let v = decode_lease(&json!({
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
            "metadata": {"name": "a", "managedFields": [], "labels": {"x": "y"}, "selfLink": "/x"},
            "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15, "strategy": "x", "bogus": 1},
            "status": {}
        }))
        .unwrap();
        assert_eq!(
            v,
            json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
                   "metadata": {"name": "a", "labels": {"x": "y"}},
                   "spec": {"holderIdentity": "me", "leaseDurationSeconds": 15}})
        );
    }

    #[test]
    fn decode_rejects_wrong_types_and_overflow() {
        for body in [
            json!([]),
            json!("x"),
            json!({"spec": 1}),
            json!({"spec": {"holderIdentity": 1}}),
            json!({"spec": {"leaseDurationSeconds": "15"}}),
            json!({"spec": {"leaseDurationSeconds": 1.5}}),
            json!({"spec": {"leaseTransitions": 2147483648u64}}),
            json!({"spec": {"leaseTransitions": -2147483649i64}}),
            json!({"spec": {"leaseTransitions": 1e300}}),
            json!({"spec": {"renewTime": 5}}),
            json!({"metadata": {"labels": {"a": 1}}}),
            json!({"metadata": []}),
            json!({"apiVersion": "v1"}),
            json!({"kind": "Pod"}),
        ] {
            assert!(decode_lease(&body).is_err(), "{body}");
        }
        let e =
            decode_lease(&json!({"spec": {"leaseDurationSeconds": 99999999999i64}})).unwrap_err();
        assert_eq!(
            e.message(),
            "Lease in version \"v1\" cannot be handled as a Lease: v1.Lease.Spec: v1.LeaseSpec.LeaseDurationSeconds: ReadInt32: overflow: 99999999999"
        );
    }

    #[test]
    fn label_keys_and_values_follow_is_qualified_name_and_is_valid_label_value() {
        for ok in [
            "a",
            "app.kubernetes.io/name",
            "leaderd.io/leader",
            "A_b-c.D",
            "x/y",
        ] {
            assert!(qualified_name_errors(ok).is_empty(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "a/b/c",
            "/a",
            "a/",
            "Bad.Prefix/a",
            &"a".repeat(64),
        ] {
            assert!(!qualified_name_errors(bad).is_empty(), "{bad}");
        }
        assert_eq!(
            qualified_name_errors("/a"),
            vec!["prefix part must be non-empty".to_string()]
        );
        for ok in ["", "true", "My_value.1", &"v".repeat(63)] {
            assert!(label_value_errors(ok).is_empty(), "{ok}");
        }
        assert_eq!(
            label_value_errors("bad value!"),
            vec!["a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')".to_string()]
        );
        assert_eq!(label_value_errors(&"v".repeat(64)).len(), 1);
        assert_eq!(label_value_errors(&"-".repeat(64)).len(), 2);
        assert_eq!(label_value_errors("ünï").len(), 1);
    }

    #[test]
    fn validate_labels_puts_every_error_on_the_map_path() {
        let labels = json!({"ok": "fine", "-k": "v", "k": "-v"});
        let errs = validate_labels(labels.as_object(), "metadata.labels");
        assert_eq!(errs.len(), 2);
        assert!(errs.iter().all(|e| e.field == "metadata.labels"));
        assert!(errs[0].body.starts_with("Invalid value: \"-k\": name part"));
        assert!(errs[1]
            .body
            .starts_with("Invalid value: \"-v\": a valid label"));
        let big = json!({"k": "x".repeat(300 * 1024)});
        assert_eq!(
            validate_annotations(big.as_object(), "metadata.annotations")[0].body,
            "Too long: must have at most 262144 bytes"
        );
        let ann = json!({"Example.COM/Key": "anything goes: !"});
        assert!(validate_annotations(ann.as_object(), "metadata.annotations").is_empty());
    }

    #[test]
    fn names_must_be_dns1123_subdomains() {
        assert!(dns1123_subdomain_errors("my-lease.example").is_empty());
        assert!(!dns1123_subdomain_errors("My-Lease").is_empty());
        assert!(!dns1123_subdomain_errors("-a").is_empty());
        assert!(!dns1123_subdomain_errors("a..b").is_empty());
        assert_eq!(dns1123_subdomain_errors(&"a".repeat(254)).len(), 1);
    }
}

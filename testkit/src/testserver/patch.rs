//! Patch mechanics: RFC 7386 merge patch and RFC 6902 JSON patch (error texts after evanphx/json-patch).

use serde_json::{Map, Value};

/// Apply an RFC 7386 JSON merge patch to `target` in place.
pub(super) fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(t) = target {
        for (k, v) in p {
            if v.is_null() {
                t.remove(k);
            } else {
                merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
    }
}

/// The merge key of the list at a dotted field path ("spec.containers", "spec.containers.env";
/// list indexes are not part of the path): `Some("name")` merges elements by that key,
/// `Some("")` merges a list of primitives as a set, `None` replaces the list.
pub(super) type MergeKeys = fn(&str) -> Option<&'static str>;

/// Apply a strategic merge patch (apimachinery `strategicpatch`) to `target` in place: objects
/// merge as in RFC 7386 (null deletes a key), lists with a merge key merge element by element
/// (`{"$patch": "delete"}` elements remove), other lists are replaced, `{"$patch": "replace"}`
/// replaces an object. `$setElementOrder/…` and `$retainKeys` are dropped, not applied.
pub(super) fn strategic_merge_patch(target: &mut Value, patch: &Value, keys: MergeKeys) {
    smp(target, patch, "", keys);
}

fn is_directive(key: &str) -> bool {
    key == "$patch" || key == "$retainKeys" || key.starts_with("$setElementOrder/")
}

fn smp(target: &mut Value, patch: &Value, path: &str, keys: MergeKeys) {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return;
    };
    if p.get("$patch").and_then(Value::as_str) == Some("replace") {
        let mut fresh = Value::Object(Map::new());
        let without: Map<String, Value> = p
            .iter()
            .filter(|(k, _)| k.as_str() != "$patch")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        smp(&mut fresh, &Value::Object(without), path, keys);
        *target = fresh;
        return;
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let Value::Object(t) = target else {
        return;
    };
    for (k, v) in p {
        if is_directive(k) {
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let child = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        match (keys(&child), v) {
            (Some(key), Value::Array(items)) => {
                let cur = t.entry(k.clone()).or_insert(Value::Array(Vec::new()));
                if !cur.is_array() {
                    *cur = Value::Array(Vec::new());
                }
                if let Value::Array(cur) = cur {
                    merge_list(cur, items, key, &child, keys);
                }
            }
            _ => smp(t.entry(k.clone()).or_insert(Value::Null), v, &child, keys),
        }
    }
}

fn merge_list(cur: &mut Vec<Value>, items: &[Value], key: &str, path: &str, keys: MergeKeys) {
    for item in items {
        if key.is_empty() || !item.is_object() {
            if !cur.contains(item) {
                cur.push(item.clone());
            }
            continue;
        }
        let id = item.get(key);
        let pos = id.and_then(|id| cur.iter().position(|c| c.get(key) == Some(id)));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                cur.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => smp(&mut cur[i], item, path, keys),
            (None, false) => {
                let mut fresh = Value::Null;
                smp(&mut fresh, item, path, keys);
                cur.push(fresh);
            }
        }
    }
}

/// Why a JSON patch failed.
#[derive(Debug, PartialEq)]
pub(super) enum JsonPatchError {
    /// The patch document itself is malformed (400).
    Decode(String),
    /// An operation does not apply (422).
    Apply(String),
}

fn unescape(token: &str) -> String {
    token.replace("~1", "/").replace("~0", "~")
}

/// Split a JSON pointer into unescaped tokens; `None` when it does not start with `/`.
fn tokens(path: &str) -> Option<Vec<String>> {
    if path.is_empty() {
        return Some(Vec::new());
    }
    let rest = path.strip_prefix('/')?;
    Some(rest.split('/').map(unescape).collect())
}

fn index(token: &str, len: usize, allow_end: bool) -> Option<usize> {
    if allow_end && token == "-" {
        return Some(len);
    }
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    if token.len() > 1 && token.starts_with('0') {
        return None;
    }
    let i: usize = token.parse().ok()?;
    let max = if allow_end {
        len
    } else {
        len.saturating_sub(1)
    };
    if (allow_end && i <= max) || (!allow_end && i < len) {
        Some(i)
    } else {
        None
    }
}

fn get<'a>(doc: &'a Value, toks: &[String]) -> Option<&'a Value> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get(t)?,
            Value::Array(a) => a.get(index(t, a.len(), false)?)?,
            _ => return None,
        };
    }
    Some(cur)
}

fn parent_mut<'a>(doc: &'a mut Value, toks: &[String]) -> Option<&'a mut Value> {
    let mut cur = doc;
    for t in toks {
        cur = match cur {
            Value::Object(m) => m.get_mut(t)?,
            Value::Array(a) => {
                let i = index(t, a.len(), false)?;
                a.get_mut(i)?
            }
            _ => return None,
        };
    }
    Some(cur)
}

fn add(doc: &mut Value, path: &str, toks: &[String], value: Value) -> Result<(), String> {
    let Some((last, parents)) = toks.split_last() else {
        *doc = value;
        return Ok(());
    };
    let missing =
        || format!("add operation does not apply: doc is missing path: {path:?}: missing value");
    match parent_mut(doc, parents).ok_or_else(missing)? {
        Value::Object(m) => {
            m.insert(last.clone(), value);
            Ok(())
        }
        Value::Array(a) => {
            let i = index(last, a.len(), true).ok_or_else(|| {
                format!("Unable to access invalid index: {last}: invalid index referenced")
            })?;
            a.insert(i, value);
            Ok(())
        }
        _ => Err(missing()),
    }
}

fn remove(doc: &mut Value, path: &str, toks: &[String], op: &str) -> Result<Value, String> {
    let Some((last, parents)) = toks.split_last() else {
        return Ok(std::mem::take(doc));
    };
    let missing =
        || format!("{op} operation does not apply: doc is missing path: {path:?}: missing value");
    match parent_mut(doc, parents).ok_or_else(missing)? {
        Value::Object(m) => m
            .remove(last)
            .ok_or_else(|| format!("Unable to remove nonexistent key: {last}: missing value")),
        Value::Array(a) => {
            let i = index(last, a.len(), false).ok_or_else(|| {
                format!("Unable to access invalid index: {last}: invalid index referenced")
            })?;
            Ok(a.remove(i))
        }
        _ => Err(missing()),
    }
}

/// Apply an RFC 6902 JSON patch document (`add`, `remove`, `replace`, `move`, `copy`, `test`).
pub(super) fn json_patch(doc: &mut Value, patch: &Value) -> Result<(), JsonPatchError> {
    let Value::Array(ops) = patch else {
        return Err(JsonPatchError::Decode(
            "json: cannot unmarshal object into Go value of type jsonpatch.Patch".into(),
        ));
    };
    for op in ops {
        let Value::Object(o) = op else {
            return Err(JsonPatchError::Decode(
                "json: cannot unmarshal into Go value of type jsonpatch.Operation".into(),
            ));
        };
        let kind = o.get("op").and_then(Value::as_str).unwrap_or("");
        let path = o.get("path").and_then(Value::as_str);
        let toks = |p: Option<&str>, what: &str| -> Result<(String, Vec<String>), JsonPatchError> {
            let Some(p) = p else {
                return Err(JsonPatchError::Apply(format!(
                    "{kind} operation failed to decode {what}: missing value"
                )));
            };
            let t = tokens(p).ok_or_else(|| {
                JsonPatchError::Apply(format!(
                    "{kind} operation does not apply: doc is missing path: {p:?}: missing value"
                ))
            })?;
            Ok((p.to_string(), t))
        };
        let value = || {
            o.get("value").cloned().ok_or_else(|| {
                JsonPatchError::Apply(format!(
                    "{kind} operation failed to decode value: missing value"
                ))
            })
        };
        match kind {
            "add" => {
                let (p, t) = toks(path, "path")?;
                add(doc, &p, &t, value()?).map_err(JsonPatchError::Apply)?;
            }
            "remove" => {
                let (p, t) = toks(path, "path")?;
                remove(doc, &p, &t, "remove").map_err(JsonPatchError::Apply)?;
            }
            "replace" => {
                let (p, t) = toks(path, "path")?;
                let v = value()?;
                if get(doc, &t).is_none() {
                    return Err(JsonPatchError::Apply(format!(
                        "replace operation does not apply: doc is missing key: {p}: missing value"
                    )));
                }
                remove(doc, &p, &t, "replace").map_err(JsonPatchError::Apply)?;
                add(doc, &p, &t, v).map_err(JsonPatchError::Apply)?;
            }
            "move" | "copy" => {
                let (fp, ft) = toks(o.get("from").and_then(Value::as_str), "from")?;
                let (p, t) = toks(path, "path")?;
                let v = if kind == "move" {
                    remove(doc, &fp, &ft, "move").map_err(JsonPatchError::Apply)?
                } else {
                    get(doc, &ft).cloned().ok_or_else(|| {
                        JsonPatchError::Apply(format!(
                            "copy operation does not apply: doc is missing from path: {fp}: missing value"
                        ))
                    })?
                };
                add(doc, &p, &t, v).map_err(JsonPatchError::Apply)?;
            }
            "test" => {
                let (p, t) = toks(path, "path")?;
                let want = o.get("value").cloned().unwrap_or(Value::Null);
                let ok = match get(doc, &t) {
                    None => want.is_null(),
                    Some(have) => *have == want,
                };
                if !ok {
                    return Err(JsonPatchError::Apply(format!(
                        "testing value {p} failed: test operation failed"
                    )));
                }
            }
            other => {
                return Err(JsonPatchError::Decode(format!("Unexpected kind: {other}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
        merge_patch(&mut doc, &json!({"c": [1]}));
        assert_eq!(doc, json!({"a": "z", "c": [1]}));
    }

    #[test]
    fn strategic_merge_patch_merges_keyed_lists_and_replaces_the_rest() {
        fn keys(path: &str) -> Option<&'static str> {
            match path {
                "spec.containers" => Some("name"),
                "spec.containers.env" => Some("name"),
                "metadata.finalizers" => Some(""),
                _ => None,
            }
        }
        let mut doc = json!({
            "metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"containers": [
                {"name": "app", "image": "a:1", "env": [{"name": "E", "value": "1"}]},
                {"name": "side", "image": "s:1"}],
                "tolerations": [{"key": "t"}]}
        });
        strategic_merge_patch(
            &mut doc,
            &json!({
                "metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y", "x"]},
                "$setElementOrder/spec": [],
                "spec": {"containers": [
                    {"name": "app", "image": "a:2", "env": [{"name": "F", "value": "2"}]},
                    {"name": "side", "$patch": "delete"},
                    {"name": "new", "image": "n:1", "gone": null}],
                    "tolerations": [{"key": "u"}]}
            }),
            keys,
        );
        assert_eq!(
            doc,
            json!({
                "metadata": {"labels": {"b": "2", "c": "3"}, "finalizers": ["x", "y"]},
                "spec": {"containers": [
                    {"name": "app", "image": "a:2",
                     "env": [{"name": "E", "value": "1"}, {"name": "F", "value": "2"}]},
                    {"name": "new", "image": "n:1"}],
                    "tolerations": [{"key": "u"}]}
            })
        );
        strategic_merge_patch(
            &mut doc,
            &json!({"metadata": {"labels": {"$patch": "replace", "z": "9"}}}),
            keys,
        );
        assert_eq!(doc["metadata"]["labels"], json!({"z": "9"}));
    }

    #[test]
    fn json_patch_ops_apply_in_order_and_test_failures_are_reported() {
        let mut doc = json!({"spec": {"holderIdentity": "a", "list": [1, 2]}});
        json_patch(
            &mut doc,
            &json!([
                {"op": "test", "path": "/spec/holderIdentity", "value": "a"},
                {"op": "replace", "path": "/spec/holderIdentity", "value": "b"},
                {"op": "add", "path": "/spec/list/-", "value": 3},
                {"op": "remove", "path": "/spec/list/0"},
                {"op": "add", "path": "/spec/a~1b", "value": true},
            ]),
        )
        .unwrap();
        assert_eq!(
            doc,
            json!({"spec": {"holderIdentity": "b", "list": [2, 3], "a/b": true}})
        );
        assert_eq!(
            json_patch(
                &mut doc,
                &json!([{"op": "test", "path": "/spec/holderIdentity", "value": "a"}])
            ),
            Err(JsonPatchError::Apply(
                "testing value /spec/holderIdentity failed: test operation failed".into()
            ))
        );
        assert!(matches!(
            json_patch(&mut doc, &json!([{"op": "remove", "path": "/nope/x"}])),
            Err(JsonPatchError::Apply(_))
        ));
        assert!(matches!(
            json_patch(&mut doc, &json!([{"op": "frob", "path": "/x"}])),
            Err(JsonPatchError::Decode(_))
        ));
        assert!(matches!(
            json_patch(&mut doc, &json!({"op": "add"})),
            Err(JsonPatchError::Decode(_))
        ));
    }
}

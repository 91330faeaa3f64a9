//! Aggregate write semantics, compatible with pydoover's
//! `apply_diff(old, diff, do_delete)`.
//!
//! - objects merge recursively; a key missing from the old value starts as `{}`;
//! - `null` in the diff deletes the key (with `do_delete = false`, Doover
//!   stores the `null` instead; Paddock's PATCH always deletes);
//! - arrays and scalars replace;
//! - if the old value or the diff is not an object, the diff replaces it
//!   whole, verbatim (nested `null`s included).
//!
//! `../shared/conformance/doover/diffs.json` (616 cases) pins this down; the
//! conformance test in `tests/` runs every case with its own `do_delete`.

use serde_json::{Map, Value};

/// How an aggregate write combines with the current aggregate.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case", tag = "mode", content = "paths")]
pub enum WriteMode {
    /// PATCH: merge with [`apply_diff`].
    Merge,
    /// PUT: replace the whole aggregate.
    Replace,
    /// PATCH with `replace_paths`: merge, except that each dotted path's
    /// subtree is replaced by the diff's subtree at that path.
    ReplacePaths(Vec<String>),
}

/// Apply `diff` to `old`, `null` deleting keys: Paddock's PATCH.
pub fn apply_diff(old: &Value, diff: &Value) -> Value {
    apply_diff_with(old, diff, true)
}

/// Apply `diff` to `old`; `delete_nulls` is pydoover's `do_delete`.
pub fn apply_diff_with(old: &Value, diff: &Value, delete_nulls: bool) -> Value {
    match (old, diff) {
        (Value::Object(old), Value::Object(diff)) => Value::Object(merge_maps(old, diff, delete_nulls)),
        _ => diff.clone(),
    }
}

fn merge_maps(old: &Map<String, Value>, diff: &Map<String, Value>, delete_nulls: bool) -> Map<String, Value> {
    let mut out = old.clone();
    for (key, change) in diff {
        if change.is_null() && delete_nulls {
            out.remove(key);
            continue;
        }
        let merged = match (out.get(key), change) {
            (Some(current), _) => apply_diff_with(current, change, delete_nulls),
            // A missing key starts as `{}`, so nested nulls are applied too.
            (None, Value::Object(_)) => apply_diff_with(&Value::Object(Map::new()), change, delete_nulls),
            (None, _) => change.clone(),
        };
        out.insert(key.clone(), merged);
    }
    out
}

/// [`apply_diff`] applied to `target` in place (no copy of untouched
/// subtrees): the same result, used where an aggregate is updated often.
pub fn apply_diff_in_place(target: &mut Value, diff: &Value) {
    match (target, diff) {
        (Value::Object(target), Value::Object(diff)) => {
            for (key, change) in diff {
                if change.is_null() {
                    target.remove(key);
                } else if let Some(current) = target.get_mut(key) {
                    apply_diff_in_place(current, change);
                } else {
                    target.insert(key.clone(), applied_to_nothing(change));
                }
            }
        }
        (target, diff) => *target = diff.clone(),
    }
}

/// `diff` applied where there is no value yet (which starts as `{}`): a
/// copy of it without the `null`s of its objects, as [`apply_diff`] of an
/// empty object would build, in one pass.
fn applied_to_nothing(diff: &Value) -> Value {
    match diff {
        Value::Object(map) => Value::Object(
            map.iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k.clone(), applied_to_nothing(v))).collect(),
        ),
        other => other.clone(),
    }
}

/// [`apply_write`] in place.
pub fn apply_write_in_place(target: &mut Value, data: &Value, mode: &WriteMode) {
    match mode {
        WriteMode::Merge => apply_diff_in_place(target, data),
        WriteMode::Replace | WriteMode::ReplacePaths(_) => *target = apply_write(target, data, mode),
    }
}

/// Apply a write of `data` in `mode` to the current aggregate `old`.
pub fn apply_write(old: &Value, data: &Value, mode: &WriteMode) -> Value {
    match mode {
        WriteMode::Merge => apply_diff(old, data),
        WriteMode::Replace => data.clone(),
        WriteMode::ReplacePaths(paths) => {
            let mut merged = apply_diff(old, data);
            for path in paths {
                replace_path(&mut merged, data, path);
            }
            merged
        }
    }
}

/// Set `target`'s subtree at dotted `path` to `source`'s subtree there
/// (removing it when `source` has none there or has `null`).
fn replace_path(target: &mut Value, source: &Value, path: &str) {
    let keys: Vec<&str> = path.split('.').filter(|k| !k.is_empty()).collect();
    let Some((last, parents)) = keys.split_last() else {
        return;
    };
    let replacement = keys.iter().try_fold(source, |v, k| v.get(k)).filter(|v| !v.is_null()).cloned();
    let mut node = target;
    for key in parents {
        let Value::Object(map) = node else { return };
        node = map.entry(key.to_string()).or_insert_with(|| Value::Object(Map::new()));
    }
    if let Value::Object(map) = node {
        match replacement {
            Some(v) => {
                map.insert(last.to_string(), v);
            }
            None => {
                map.remove(*last);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_recurses_deletes_and_replaces() {
        let old = json!({"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 1});
        let diff = json!({"a": {"y": null, "z": 3}, "b": [3], "c": null, "d": {"e": null, "f": 1}});
        assert_eq!(apply_diff(&old, &diff), json!({"a": {"x": 1, "z": 3}, "b": [3], "d": {"f": 1}}));
    }

    #[test]
    fn replace_paths_replaces_only_those_subtrees() {
        let old = json!({"a": {"b": {"keep": 1, "old": 2}}, "other": {"x": 1}});
        let data = json!({"a": {"b": {"new": 3}}, "other": {"y": 2}});
        let out = apply_write(&old, &data, &WriteMode::ReplacePaths(vec!["a.b".into()]));
        assert_eq!(out, json!({"a": {"b": {"new": 3}}, "other": {"x": 1, "y": 2}}));
    }

    #[test]
    fn in_place_merge_equals_apply_diff() {
        let old = json!({"a": {"x": 1, "y": 2}, "b": [1, 2], "c": 1, "s": 5});
        let diff = json!({"a": {"y": null, "z": 3}, "b": [3], "c": null, "d": {"e": null, "f": 1}, "s": {"n": null}});
        let mut target = old.clone();
        apply_diff_in_place(&mut target, &diff);
        assert_eq!(target, apply_diff(&old, &diff));
    }

    #[test]
    fn replace_replaces_everything() {
        let out = apply_write(&json!({"a": 1}), &json!({"b": 2}), &WriteMode::Replace);
        assert_eq!(out, json!({"b": 2}));
    }
}

//! Payload rules: a message's or aggregate's `data` is a JSON object whose keys
//! at every depth match `^[a-zA-Z0-9_-]+$` (dots are reserved as path
//! separators for `replace_paths`).

use serde_json::Value;

/// Deepest nesting accepted. serde_json already refuses more than 128 levels
/// when parsing; 64 keeps recursive merge and validation well inside the
/// host's stack while leaving real documents untouched.
pub const MAX_DEPTH: usize = 64;

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    /// The text was not JSON.
    #[error("payload is not valid JSON: {0}")]
    NotJson(String),
    /// The document was valid JSON but not an object.
    #[error("payload must be a JSON object, got {0}")]
    NotObject(&'static str),
    /// A key broke the key rule.
    #[error("invalid key {key:?} at {path}: keys must match ^[a-zA-Z0-9_-]+$")]
    BadKey {
        /// Dotted path of the object holding the key (`$` for the root).
        path: String,
        /// The offending key.
        key: String,
    },
    /// Nested deeper than [`MAX_DEPTH`].
    #[error("payload nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    /// Larger, serialized, than the limit of where it goes.
    #[error("payload is {bytes} bytes serialized; the limit is {limit}")]
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
}

/// Parse `text` as a payload object and check every key.
pub fn parse_object(text: &str) -> Result<Value, PayloadError> {
    let value: Value = serde_json::from_str(text).map_err(|e| PayloadError::NotJson(e.to_string()))?;
    check_object(&value)?;
    Ok(value)
}

/// Check that `value` is an object whose keys follow the key rule at every depth.
pub fn check_object(value: &Value) -> Result<(), PayloadError> {
    if !value.is_object() {
        return Err(PayloadError::NotObject(kind_of(value)));
    }
    check_value(value)
}

/// Check that the keys of every object in `value` (of any type, e.g. a
/// tag's value) follow the key rule, at every depth.
pub fn check_value(value: &Value) -> Result<(), PayloadError> {
    check_keys(value, 0).map_err(|bad| match bad {
        BadAt::Key { mut path, key } => {
            path.push("$".into());
            path.reverse();
            PayloadError::BadKey { path: path.concat(), key }
        }
        BadAt::TooDeep => PayloadError::TooDeep,
    })
}

/// [`check_object`], and at most `limit` bytes serialized.
pub fn check_payload(value: &Value, limit: usize) -> Result<(), PayloadError> {
    check_object(value)?;
    let bytes = serialized_len(value);
    if bytes > limit {
        return Err(PayloadError::TooLarge { bytes, limit });
    }
    Ok(())
}

/// The length of `value` serialized as compact JSON, without building it.
pub fn serialized_len(value: &Value) -> usize {
    struct Counter(usize);
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 += buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter(0);
    // Writing to a counter cannot fail.
    let _ = serde_json::to_writer(&mut counter, value);
    counter.0
}

/// Whether `key` follows the key rule.
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// A failed check; the path (innermost segment first) is built only on the
/// way out of a failure, so valid payloads allocate nothing.
enum BadAt {
    Key { path: Vec<String>, key: String },
    TooDeep,
}

fn check_keys(value: &Value, depth: usize) -> Result<(), BadAt> {
    if depth > MAX_DEPTH {
        return Err(BadAt::TooDeep);
    }
    // The segment is named only on the way out of a failure.
    let within = |segment: &dyn Fn() -> String, r: Result<(), BadAt>| match r {
        Err(BadAt::Key { mut path, key }) => {
            path.push(segment());
            Err(BadAt::Key { path, key })
        }
        other => other,
    };
    match value {
        Value::Object(map) => {
            for (key, child) in map {
                if !is_valid_key(key) {
                    return Err(BadAt::Key { path: Vec::new(), key: key.clone() });
                }
                within(&|| format!(".{key}"), check_keys(child, depth + 1))?;
            }
            Ok(())
        }
        Value::Array(items) => {
            for (i, child) in items.iter().enumerate() {
                within(&|| format!("[{i}]"), check_keys(child, depth + 1))?;
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

/// A short name for a JSON value's type, for error messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_objects_with_valid_keys_at_every_depth() {
        assert!(check_object(&json!({"a_b-1": {"C": [{"d": 1}]}})).is_ok());
    }

    #[test]
    fn rejects_bad_keys_naming_where() {
        let err = check_object(&json!({"ok": {"bad.key": 1}})).unwrap_err();
        assert_eq!(err, PayloadError::BadKey { path: "$.ok".into(), key: "bad.key".into() });
        let err = check_object(&json!({"list": [{"sp ace": 1}]})).unwrap_err();
        assert!(matches!(err, PayloadError::BadKey { ref path, .. } if path == "$.list[0]"));
        assert!(matches!(check_object(&json!({"": 1})), Err(PayloadError::BadKey { .. })));
    }

    #[test]
    fn rejects_non_objects_and_non_json() {
        assert_eq!(check_object(&json!([1])), Err(PayloadError::NotObject("an array")));
        assert!(matches!(parse_object("{nope"), Err(PayloadError::NotJson(_))));
    }

    #[test]
    fn rejects_deep_nesting() {
        let mut v = json!(1);
        for _ in 0..(MAX_DEPTH + 2) {
            v = json!({ "a": v });
        }
        assert_eq!(check_object(&v), Err(PayloadError::TooDeep));
    }
}

//! Strict JSON for what clients send: exactly one document with nothing
//! after it, no key twice in one object, and integers that fit 64 bits.
//!
//! serde_json alone keeps the last of duplicate keys (so two readers of
//! the same text can disagree on it) and turns an integer too large for
//! `i64`/`u64` into a float (so an id or a counter silently changes).

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

/// Why a text is not strict JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StrictJsonError {
    /// Not JSON, or text after the document; `at` is the dotted path where
    /// it failed (`.` for the top), the reason names line and column.
    #[error("{reason}{}", at_path(.at))]
    Invalid {
        /// Where (dotted path).
        at: String,
        /// What serde_json (or the duplicate check) said.
        reason: String,
    },
    /// An integer literal outside `i64` and `u64`.
    #[error("integer {literal} does not fit in 64 bits (send it as a string, or as a float with a decimal point)")]
    IntegerRange {
        /// The literal as sent (possibly cut short).
        literal: String,
    },
}

fn at_path(at: &str) -> String {
    if at == "." { String::new() } else { format!(" at {at}") }
}

/// Parse `bytes` as one strict JSON document.
pub fn parse_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize::<_, Strict>(&mut de)
        .map_err(|e| StrictJsonError::Invalid { at: e.path().to_string(), reason: e.into_inner().to_string() })?;
    de.end().map_err(|e| StrictJsonError::Invalid { at: ".".into(), reason: e.to_string() })?;
    check_integers(bytes)?;
    Ok(value.0)
}

/// A [`Value`] whose objects were checked for duplicate keys.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Strict;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
        Ok(Strict(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
        Ok(Strict(Value::Number(v.into())))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
        Ok(Strict(Number::from_f64(v).map_or(Value::Null, Value::Number)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
        Ok(Strict(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Strict, E> {
        Ok(Strict(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<Strict, E> {
        Ok(Strict(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Strict(Value::Array(items)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(Strict(Value::Object(object)))
    }
}

/// Every integer literal of a valid JSON text fits `i64` or `u64`.
fn check_integers(bytes: &[u8]) -> Result<(), StrictJsonError> {
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                // Skip the string, escapes included.
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < bytes.len() && matches!(bytes[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9') {
                    i += 1;
                }
                let literal = &bytes[start..i];
                let integer = !literal.iter().any(|b| matches!(b, b'.' | b'e' | b'E'));
                let text = std::str::from_utf8(literal).unwrap_or_default();
                if integer && text.parse::<i64>().is_err() && text.parse::<u64>().is_err() {
                    return Err(StrictJsonError::IntegerRange { literal: text.chars().take(40).collect() });
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        parse_strict(text.as_bytes()).unwrap_err().to_string()
    }

    #[test]
    fn strict_documents_parse_like_serde_json() {
        for text in
            [r#"{"a":[1,-2,3.5,1e3,"x\"1e999",null,true]}"#, "18446744073709551615", "-9223372036854775808", "[]"]
        {
            assert_eq!(parse_strict(text.as_bytes()).unwrap(), serde_json::from_str::<Value>(text).unwrap(), "{text}");
        }
        let big = parse_strict(b"1e400");
        assert!(big.is_err(), "serde_json refuses an infinite float: {big:?}");
    }

    #[test]
    fn trailing_text_duplicates_and_oversized_integers_are_refused_with_where() {
        assert!(err(r#"{"name":"x"} junk"#).contains("trailing characters"), "{}", err(r#"{"name":"x"} junk"#));
        assert!(err(r#"{"a":1}{"a":2}"#).contains("trailing characters"));
        assert_eq!(err(r#"{"a":{"b":1,"b":2}}"#), "duplicate key \"b\" at line 1 column 15 at a");
        assert!(err(r#"{"a":1,"a":1}"#).starts_with("duplicate key \"a\""));
        assert!(err(r#"{"n":18446744073709551616}"#).starts_with("integer 18446744073709551616 does not fit"));
        assert!(err("[-9223372036854775809]").starts_with("integer -9223372036854775809"));
        assert!(parse_strict(br#"{"s":"18446744073709551616"}"#).is_ok(), "digits inside a string are text");
        assert!(parse_strict(br#"{"f":18446744073709551616.0}"#).is_ok(), "a float literal is a float");
    }
}

//! A batch as the client receives it: `{"Document":{"Msg":…}}` (an object
//! for one event, an array for more) or its XML form, zlib-compressed when
//! the monitor asks.

use std::io::Write as _;

use serde_json::{Map, Value, json};

use crate::store::{FeedEntry, FeedOp};

/// The batch's body in `format` (`json` or `xml`); `replay` marks events
/// the client missed while away.
pub fn render(entries: &[FeedEntry], format: &str, replay: bool) -> Vec<u8> {
    if format == "xml" {
        return xml(entries, replay).into_bytes();
    }
    let msgs: Vec<Value> = entries.iter().map(|e| json_msg(e, replay)).collect();
    let msg = match <[Value; 1]>::try_from(msgs) {
        Ok([one]) => one,
        Err(many) => Value::Array(many),
    };
    serde_json::to_vec(&json!({ "Document": { "Msg": msg } })).unwrap_or_default()
}

/// zlib (RFC 1950) framing, what Device Cloud calls `zlib` or `gzip`.
pub fn compress(body: &[u8]) -> Vec<u8> {
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let _ = z.write_all(body);
    z.finish().unwrap_or_default()
}

/// `{org}/{Type}/{agent}/[{channel}/]{id}`.
pub fn topic(e: &FeedEntry) -> String {
    match &e.channel {
        Some(channel) if matches!(e.kind, crate::store::FeedKind::Message | crate::store::FeedKind::Aggregate) => {
            format!("{}/{}/{}/{}/{}", e.org, e.kind.name(), e.agent, channel, e.id)
        }
        _ => format!("{}/{}/{}/{}", e.org, e.kind.name(), e.agent, e.id),
    }
}

/// ISO-8601 with milliseconds and `Z`, as Device Cloud sends.
pub fn timestamp(ms: u64) -> String {
    let at = i64::try_from(ms).ok().and_then(chrono::DateTime::from_timestamp_millis).unwrap_or_default();
    at.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn json_msg(e: &FeedEntry, replay: bool) -> Value {
    let operation = match e.op {
        FeedOp::Create => "INSERTION",
        FeedOp::Update => "UPDATE",
        FeedOp::Delete => "DELETION",
    };
    let mut msg = Map::new();
    msg.insert("timestamp".into(), timestamp(e.at_ms).into());
    msg.insert("topic".into(), topic(e).into());
    msg.insert("operation".into(), operation.into());
    msg.insert("group".into(), e.group.clone().unwrap_or_else(|| "*".into()).into());
    if replay {
        msg.insert("replay".into(), true.into());
    }
    msg.insert(e.kind.name().into(), e.body.clone());
    Value::Object(msg)
}

fn xml(entries: &[FeedEntry], replay: bool) -> String {
    let mut out = String::from(r#"<?xml version="1.0" encoding="UTF-8"?><Document>"#);
    for e in entries {
        let operation = match e.op {
            FeedOp::Create => "create",
            FeedOp::Update => "update",
            FeedOp::Delete => "delete",
        };
        out.push_str(&format!(
            r#"<Msg topic="{}" operation="{operation}" timestamp="{}" group="{}"{}>"#,
            escape(&topic(e)),
            timestamp(e.at_ms),
            escape(e.group.as_deref().unwrap_or("*")),
            if replay { r#" replay="true""# } else { "" },
        ));
        element(&mut out, e.kind.name(), &e.body);
        out.push_str("</Msg>");
    }
    out.push_str("</Document>");
    out
}

/// A JSON value as XML: object keys become elements (a key that is not an
/// XML name becomes `<field name="…">`), array items repeat the element,
/// scalars are escaped text.
fn element(out: &mut String, name: &str, value: &Value) {
    if let Value::Array(items) = value {
        for item in items {
            element(out, name, item);
        }
        return;
    }
    let (open, close) = if is_xml_name(name) {
        (format!("<{name}>"), format!("</{name}>"))
    } else {
        (format!(r#"<field name="{}">"#, escape(name)), "</field>".to_owned())
    };
    out.push_str(&open);
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                element(out, k, v);
            }
        }
        Value::String(s) => out.push_str(&escape(s)),
        Value::Null => {}
        other => out.push_str(&other.to_string()),
    }
    out.push_str(&close);
}

fn is_xml_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !s.to_ascii_lowercase().starts_with("xml")
}

/// Text and attribute escaping.
pub use crate::model::escape_markup as escape;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AgentId, OrgId};
    use crate::store::FeedKind;

    fn entry(seq: u64, body: Value) -> FeedEntry {
        FeedEntry {
            seq,
            org: OrgId::from(5),
            kind: FeedKind::Message,
            op: FeedOp::Create,
            agent: AgentId::from(7),
            channel: Some("tank".into()),
            group: None,
            at_ms: 1_764_400_000_123,
            id: "99".into(),
            body,
        }
    }

    #[test]
    fn one_event_is_an_object_and_more_are_an_array() {
        let one: Value = serde_json::from_slice(&render(&[entry(1, json!({"a": 1}))], "json", false)).unwrap();
        let msg = &one["Document"]["Msg"];
        assert!(msg.is_object());
        assert_eq!(msg["topic"], "5/Message/7/tank/99");
        assert_eq!(msg["operation"], "INSERTION");
        assert_eq!(msg["group"], "*");
        assert_eq!(msg["timestamp"], "2025-11-29T07:06:40.123Z");
        assert_eq!(msg["Message"], json!({"a": 1}));
        assert!(msg.get("replay").is_none());
        let two: Value =
            serde_json::from_slice(&render(&[entry(1, json!(1)), entry(2, json!(2))], "json", true)).unwrap();
        assert_eq!(two["Document"]["Msg"].as_array().unwrap().len(), 2);
        assert_eq!(two["Document"]["Msg"][1]["replay"], true);
    }

    #[test]
    fn xml_escapes_what_apps_wrote_and_names_odd_keys_as_fields() {
        let body = json!({"note": "<script>&", "2bad key": [1, 2]});
        let xml = String::from_utf8(render(&[entry(1, body)], "xml", true)).unwrap();
        assert!(xml.starts_with(
            r#"<?xml version="1.0" encoding="UTF-8"?><Document><Msg topic="5/Message/7/tank/99" operation="create""#
        ));
        assert!(xml.contains(r#"replay="true""#));
        assert!(xml.contains("<note>&lt;script&gt;&amp;</note>"));
        assert!(xml.contains(r#"<field name="2bad key">1</field><field name="2bad key">2</field>"#));
        assert!(xml.ends_with("</Message></Msg></Document>"));
    }

    #[test]
    fn compression_is_zlib_framed() {
        let body = render(&[entry(1, json!({}))], "json", false);
        let z = compress(&body);
        assert_eq!(&z[..2], &[0x78, 0x9c]);
        let mut back = Vec::new();
        std::io::Read::read_to_end(&mut flate2::read::ZlibDecoder::new(&z[..]), &mut back).unwrap();
        assert_eq!(back, body);
    }
}

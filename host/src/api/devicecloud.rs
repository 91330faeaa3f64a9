//! Device Cloud's Monitor API (`/ws/Monitor`, `/ws/DeviceCore`), exactly as
//! the `devicecloud` Python client (0.5.10) speaks it
//! (`../shared/MONITORS.md` §1–§2): XML create bodies sent without a
//! content type and with unescaped values, a `<result><location>` answer,
//! JSON list envelopes whose values are all strings, `condition=` queries,
//! and `mon*` field names. It reads and writes the same monitor records as
//! the native API.

use std::collections::BTreeMap;

use base64::Engine as _;
use hyper::StatusCode;
use serde_json::{Map, Value, json};

use super::{Api, ApiError, Reply, Request};
use crate::model::OrgId;
use crate::monitors::document::{escape, timestamp};
use crate::monitors::{MonitorError, MonitorSpec, Monitors};
use crate::store::{HttpTarget, MonitorRecord, MonitorState, Transport};
use crate::tenants::hash_secret;

/// The organisation a `/ws/*` request acts in: HTTP Basic with the
/// organisation id as username and an API token of it (or the operator
/// token) as password, or a Bearer organisation token.
pub fn authenticate(api: &Api, req: &Request) -> Result<OrgId, ApiError> {
    let store = api.engine.store();
    let header = req.header("authorization").ok_or_else(|| ApiError::unauthorized("missing credentials"))?;
    let (scheme, value) = header.split_once(' ').ok_or_else(|| ApiError::unauthorized("malformed credentials"))?;
    if scheme.eq_ignore_ascii_case("bearer") {
        let rec = store
            .token(&hash_secret(value.trim()))?
            .ok_or_else(|| ApiError::unauthorized("invalid or revoked token"))?;
        return rec.organisation_id.ok_or_else(|| {
            ApiError::forbidden("the operator token needs Basic credentials naming the organisation as the username")
        });
    }
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(ApiError::unauthorized("Basic or Bearer credentials are needed"));
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(value.trim())
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
    let (user, password) =
        decoded.split_once(':').ok_or_else(|| ApiError::unauthorized("malformed Basic credentials"))?;
    let org: OrgId = user.parse().map_err(|_| ApiError::unauthorized("the username must be the organisation id"))?;
    let rec = store.token(&hash_secret(password))?.ok_or_else(|| ApiError::unauthorized("invalid or revoked token"))?;
    if rec.organisation_id.is_some_and(|o| o != org) {
        return Err(ApiError::unauthorized("the token is not the named organisation's"));
    }
    if store.org(org)?.is_none() {
        return Err(ApiError::unauthorized("no such organisation"));
    }
    Ok(org)
}

/// `POST /ws/Monitor`: create from the XML body.
pub async fn create(api: &Api, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let fields = match parse_monitor_xml(&req.body) {
        Ok(f) => f,
        Err(reason) => return Ok(xml_error(StatusCode::BAD_REQUEST, "POST", &reason)),
    };
    let spec = match spec_from(&fields, None) {
        Ok(s) => s,
        Err(reason) => return Ok(xml_error(StatusCode::BAD_REQUEST, "POST", &reason)),
    };
    match monitors(api).create(org, spec).await {
        Ok((rec, _)) => {
            let location = format!("Monitor/{}", rec.id);
            let body = format!(
                "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<result>\n   <location>{location}</location>\n</result>\n"
            );
            Ok(Reply::raw(StatusCode::CREATED, "text/xml; charset=ISO-8859-1", body).with_location(location))
        }
        Err(e) => refusal(e, "POST"),
    }
}

/// `PUT /ws/Monitor/{id}`: replace (and reset); `PUT /ws/Monitor` with a
/// `<monId>`: reset.
pub async fn update(api: &Api, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let fields = match parse_monitor_xml(&req.body) {
        Ok(f) => f,
        Err(reason) => return Ok(xml_error(StatusCode::BAD_REQUEST, "PUT", &reason)),
    };
    let id = match req.params.get("monitor") {
        Some(raw) => raw.parse::<u32>().ok(),
        None => fields.get("monId").and_then(|v| v.trim().parse::<u32>().ok()),
    };
    let Some(id) = id else { return Ok(xml_error(StatusCode::BAD_REQUEST, "PUT", "a monId is needed")) };
    let only_id = fields.keys().all(|k| k == "monId");
    let result = if only_id {
        monitors(api).reset(org, id).await.map(|_| ())
    } else {
        let old = match monitors(api).get(org, id) {
            Ok((rec, _)) => rec,
            Err(e) => return refusal(e, "PUT"),
        };
        match spec_from(&fields, Some(&old)) {
            Ok(spec) => monitors(api).update(org, id, spec).await.map(|_| ()),
            Err(reason) => return Ok(xml_error(StatusCode::BAD_REQUEST, "PUT", &reason)),
        }
    };
    match result {
        Ok(()) => Ok(xml_message(&format!("1 items updated (Monitor/{id})"))),
        Err(e) => refusal(e, "PUT"),
    }
}

/// `GET /ws/Monitor[/{id}]`: the JSON list envelope, paged and filtered.
pub fn list(api: &Api, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let all = monitors(api).list(org).map_err(monitor_error)?;
    let mut items: Vec<Map<String, Value>> = all.iter().map(|(rec, state)| item(rec, state)).collect();
    // `/ws/Monitor/.json` is the list; `/ws/Monitor/{id}.json` one monitor.
    if let Some(id) = req.params.get("monitor").map(|raw| raw.trim_end_matches(".json")).filter(|id| !id.is_empty()) {
        items.retain(|i| i.get("monId").and_then(Value::as_str) == Some(id));
        if items.is_empty() {
            let error = format!("GET Monitor error. Error reading Monitor entity id='{id}'");
            return Ok(Reply::raw(StatusCode::NOT_FOUND, "application/json", json!({ "error": [error] }).to_string()));
        }
    }
    if let Some(cond) = req.query.get("condition") {
        let condition = match Condition::parse(cond) {
            Ok(c) => c,
            Err(reason) => {
                let error = format!("GET Monitor error. Invalid condition: {reason}");
                return Ok(Reply::raw(
                    StatusCode::BAD_REQUEST,
                    "application/json",
                    json!({ "error": [error] }).to_string(),
                ));
            }
        };
        items.retain(|i| condition.holds(i));
    }
    let start = req.query::<usize>("start")?.unwrap_or(0);
    let size = req.query::<usize>("size")?.unwrap_or(1000).clamp(1, 1000);
    let total = items.len();
    let page: Vec<Value> = items.into_iter().skip(start).take(size).map(Value::Object).collect();
    let remaining = total.saturating_sub(start).saturating_sub(page.len());
    let body = json!({
        "resultTotalRows": total.to_string(),
        "requestedStartRow": start.to_string(),
        "resultSize": page.len().to_string(),
        "requestedSize": size.to_string(),
        "remainingSize": remaining.to_string(),
        "items": page,
    });
    Ok(Reply::raw(StatusCode::OK, "application/json; charset=utf-8", body.to_string()))
}

/// `DELETE /ws/Monitor/{id}`.
pub async fn delete(api: &Api, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let Some(id) = req.params.get("monitor").and_then(|r| r.parse::<u32>().ok()) else {
        return Ok(xml_error(StatusCode::NOT_FOUND, "DELETE", "no such monitor"));
    };
    match monitors(api).delete(org, id).await {
        Ok(()) => Ok(xml_message("1 items deleted")),
        Err(e) => refusal(e, "DELETE"),
    }
}

/// `GET /ws/DeviceCore`: the organisation's agents as DeviceCore items
/// (the client's credential check reads only the status).
pub fn device_core(api: &Api, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let start = req.query::<usize>("start")?.unwrap_or(0);
    let size = req.query::<usize>("size")?.unwrap_or(1000).clamp(1, 1000);
    let agents = api.engine.store().list_agents(org, start.saturating_add(size).saturating_add(1))?;
    let page: Vec<Value> = agents
        .iter()
        .skip(start)
        .take(size)
        .map(|a| json!({ "id": { "devId": a.id.to_string() }, "cstId": org.to_string(), "dpDeviceName": a.name }))
        .collect();
    let remaining = agents.len().saturating_sub(start).saturating_sub(page.len());
    let body = json!({
        "resultSize": page.len().to_string(),
        "requestedStartRow": start.to_string(),
        "requestedSize": size.to_string(),
        "remainingSize": remaining.to_string(),
        "items": page,
    });
    Ok(Reply::raw(StatusCode::OK, "application/json; charset=utf-8", body.to_string()))
}

fn monitors(api: &Api) -> &std::sync::Arc<Monitors> {
    api.monitors()
}

/// A monitor as a Device Cloud list item: every value a string, the token
/// never shown.
fn item(rec: &MonitorRecord, state: &MonitorState) -> Map<String, Value> {
    let mut m = Map::new();
    let mut put = |k: &str, v: String| {
        m.insert(k.to_owned(), Value::String(v));
    };
    put("monId", rec.id.to_string());
    put("cstId", rec.org.to_string());
    put("monTopic", rec.spec.topic.clone());
    put("monTransportType", rec.spec.transport.name().to_owned());
    put("monFormatType", rec.spec.format.clone());
    put("monBatchSize", rec.spec.batch_size.to_string());
    put("monBatchDuration", rec.spec.batch_duration_s.to_string());
    put("monCompression", rec.spec.compression.clone());
    put("monAckOption", if rec.spec.ack_explicit { "explicit" } else { "off" }.to_owned());
    put("monAutoReplayOnConnect", rec.spec.persistent.to_string());
    put("monStatus", state.status.name().to_owned());
    if let Some(d) = &rec.spec.description {
        put("monDescription", d.clone());
    }
    if let Transport::Http(h) = &rec.spec.transport {
        put("monTransportUrl", h.url.clone());
        put("monTransportMethod", h.method.clone());
        put("monConnectTimeout", h.connect_timeout_ms.to_string());
        put("monResponseTimeout", h.response_timeout_ms.to_string());
        let names: Vec<&str> = h.headers.iter().filter_map(|l| l.split_once(':').map(|(n, _)| n.trim())).collect();
        if !names.is_empty() {
            put("monTransportHeaders", names.join(","));
        }
    }
    if let Some(at) = state.last_connect_ms {
        put("monLastConnect", timestamp(at));
    }
    if let Some(at) = state.last_sent_ms {
        put("monLastSent", timestamp(at));
        put("monLastSentUuid", state.cursor.to_string());
    }
    m
}

/// A create or update body's fields into a spec; `old` fills what an
/// update leaves out.
fn spec_from(f: &BTreeMap<String, String>, old: Option<&MonitorRecord>) -> Result<MonitorSpec, String> {
    const KNOWN: &[&str] = &[
        "monId",
        "monTopic",
        "monTransportType",
        "monFormatType",
        "monBatchSize",
        "monBatchDuration",
        "monCompression",
        "monAckOption",
        "monAutoReplayOnConnect",
        "monDescription",
        "monTransportUrl",
        "monTransportToken",
        "monTransportMethod",
        "monConnectTimeout",
        "monResponseTimeout",
        "monTransportHeaders",
    ];
    if let Some(unknown) = f.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(format!("Invalid request. Unknown field {unknown}"));
    }
    let get = |k: &str| f.get(k).map(|v| v.trim().to_owned());
    let topic = f.get("monTopic").cloned().or_else(|| old.map(|o| o.spec.topic.clone()));
    let topic = topic.filter(|t| !t.is_empty()).ok_or("Invalid request. monTopic is required")?;
    let number = |k: &str, default: u32| -> Result<u32, String> {
        get(k).map_or(Ok(default), |v| v.parse().map_err(|_| format!("Invalid request. {k} {v:?} is not a number")))
    };
    let kind = get("monTransportType").unwrap_or_else(|| old.map_or("tcp", |o| o.spec.transport.name()).to_owned());
    let old_http = old.and_then(|o| match &o.spec.transport {
        Transport::Http(h) => Some(h.clone()),
        _ => None,
    });
    let transport = match kind.to_ascii_lowercase().as_str() {
        "tcp" => Transport::Tcp,
        "http" => {
            let url = get("monTransportUrl").or(old_http.as_ref().map(|h| h.url.clone()));
            let url = url.ok_or("Invalid request. monTransportUrl is required for http")?;
            // `None`, empty, or without a colon: no credentials.
            let token =
                f.get("monTransportToken").map(|t| t.trim().to_owned()).filter(|t| t != "None" && t.contains(':'));
            let headers = get("monTransportHeaders")
                .map(|h| h.split(['\n', ',']).map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect())
                .unwrap_or_default();
            let timeout = |k: &str| number(k, 0).map(|ms| if ms == 0 { 5000 } else { ms });
            Transport::Http(HttpTarget {
                url,
                method: get("monTransportMethod").unwrap_or_else(|| "PUT".into()).to_ascii_uppercase(),
                token: token.or(old_http.and_then(|h| h.token)),
                headers,
                connect_timeout_ms: timeout("monConnectTimeout")?,
                response_timeout_ms: timeout("monResponseTimeout")?,
                signing_secret: None,
            })
        }
        other => return Err(format!("Invalid request. monTransportType {other:?} (tcp or http)")),
    };
    let base = match old {
        Some(o) => MonitorSpec {
            format: o.spec.format.clone(),
            compression: o.spec.compression.clone(),
            batch_size: o.spec.batch_size,
            batch_duration_s: o.spec.batch_duration_s,
            ack_explicit: o.spec.ack_explicit,
            persistent: o.spec.persistent,
            description: o.spec.description.clone(),
            ..MonitorSpec::new(topic.clone(), transport.clone())
        },
        None => MonitorSpec::new(topic.clone(), transport.clone()),
    };
    let ack = get("monAckOption").map(|a| a.to_ascii_lowercase());
    let replay = get("monAutoReplayOnConnect").map(|r| r.to_ascii_lowercase());
    Ok(MonitorSpec {
        topic,
        transport,
        format: get("monFormatType").map_or(base.format, |v| v.to_ascii_lowercase()),
        compression: get("monCompression").map_or(base.compression, |v| v.to_ascii_lowercase()),
        batch_size: number("monBatchSize", base.batch_size)?,
        batch_duration_s: number("monBatchDuration", base.batch_duration_s)?,
        ack_explicit: match ack.as_deref() {
            None => base.ack_explicit,
            Some("off") => false,
            Some("explicit") => true,
            Some(other) => return Err(format!("Invalid request. monAckOption {other:?} (off or explicit)")),
        },
        persistent: match replay.as_deref() {
            None => base.persistent,
            Some("true") => true,
            Some("false") => false,
            Some(other) => return Err(format!("Invalid request. monAutoReplayOnConnect {other:?}")),
        },
        description: get("monDescription").or(base.description),
    })
}

fn refusal(e: MonitorError, verb: &str) -> Result<Reply, ApiError> {
    match e {
        MonitorError::NotFound(id) => {
            Ok(xml_error(StatusCode::NOT_FOUND, verb, &format!("Error reading Monitor entity id='{id}'")))
        }
        MonitorError::Topic(t) => {
            Ok(xml_error(StatusCode::BAD_REQUEST, verb, &format!("Invalid request. Invalid monTopic specified: {t}")))
        }
        MonitorError::Invalid(m) => Ok(xml_error(StatusCode::BAD_REQUEST, verb, &format!("Invalid request. {m}"))),
        e @ MonitorError::TooMany(_) => Ok(xml_error(StatusCode::BAD_REQUEST, verb, &e.to_string())),
        MonitorError::Store(s) => Err(s.into()),
    }
}

fn monitor_error(e: MonitorError) -> ApiError {
    match e {
        MonitorError::Store(s) => s.into(),
        other => ApiError::bad_request("invalid_monitor", other.to_string()),
    }
}

fn xml_error(status: StatusCode, verb: &str, reason: &str) -> Reply {
    let body = format!("<result><error>{verb} Monitor error. {}</error></result>", escape(reason));
    Reply::raw(status, "text/xml; charset=ISO-8859-1", body)
}

fn xml_message(message: &str) -> Reply {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<result>\n   <message>{}</message>\n</result>\n",
        escape(message)
    );
    Reply::raw(StatusCode::OK, "text/xml; charset=ISO-8859-1", body)
}

/// Most fields a `<Monitor>` body may have.
const MAX_FIELDS: usize = 32;

/// The child elements of a flat `<Monitor>…</Monitor>` document. Values
/// are taken as sent: the standard entities and character references are
/// decoded, and a bare `&` (the client does not escape a URL's query
/// string) stays a literal `&`.
pub fn parse_monitor_xml(body: &[u8]) -> Result<BTreeMap<String, String>, String> {
    let text = std::str::from_utf8(body).map_err(|_| "the body is not UTF-8".to_owned())?;
    let mut rest = text.trim();
    if let Some(decl) = rest.strip_prefix("<?xml") {
        rest = decl.split_once("?>").ok_or("an unterminated XML declaration")?.1.trim_start();
    }
    let inner = rest
        .strip_prefix("<Monitor>")
        .and_then(|r| r.strip_suffix("</Monitor>"))
        .ok_or("the body must be one <Monitor> element")?;
    let mut fields = BTreeMap::new();
    let mut rest = inner.trim_start();
    while !rest.is_empty() {
        let open = rest.strip_prefix('<').ok_or("text outside an element")?;
        let end = open.find('>').ok_or("an unclosed tag")?;
        let tag = &open[..end];
        if let Some(name) = tag.strip_suffix('/') {
            fields.insert(name.trim().to_owned(), String::new());
            rest = open[end + 1..].trim_start();
        } else {
            if tag.is_empty() || !tag.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(format!("an unexpected tag <{tag}>"));
            }
            let after = &open[end + 1..];
            let close = format!("</{tag}>");
            let stop = after.find(&close).ok_or_else(|| format!("<{tag}> is not closed"))?;
            let raw = &after[..stop];
            if raw.contains('<') {
                return Err(format!("<{tag}> has nested elements"));
            }
            if fields.insert(tag.to_owned(), unescape(raw)).is_some() {
                return Err(format!("<{tag}> appears twice"));
            }
            rest = after[stop + close.len()..].trim_start();
        }
        if fields.len() > MAX_FIELDS {
            return Err("too many fields".into());
        }
    }
    Ok(fields)
}

fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        let tail = &rest[at..];
        let entity = tail.find(';').filter(|&semi| semi <= 10).map(|semi| (&tail[1..semi], semi));
        let decoded = entity.and_then(|(name, semi)| {
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                n => n
                    .strip_prefix("#x")
                    .and_then(|h| u32::from_str_radix(h, 16).ok())
                    .or_else(|| n.strip_prefix('#').and_then(|d| d.parse().ok()))
                    .and_then(char::from_u32),
            };
            c.map(|c| (c, semi))
        });
        match decoded {
            Some((c, semi)) => {
                out.push(c);
                rest = &tail[semi + 1..];
            }
            None => {
                out.push('&');
                rest = &tail[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

/// A `condition=` query: `attr op 'value'` joined by ` and ` / ` or `
/// (and binds tighter), ops `=`, `<`, `>`, ` like ` (SQL `%` and `_`).
#[derive(Debug)]
struct Condition(Vec<Vec<(String, String, String)>>);

/// Attributes a condition may name (python-devicecloud's constants).
const ATTRIBUTES: &[&str] = &[
    "monId",
    "cstId",
    "monTopic",
    "monFormatType",
    "monTransportType",
    "monTransportUrl",
    "monTransportToken",
    "monTransportMethod",
    "monConnectTimeout",
    "monResponseTimeout",
    "monAckOption",
    "monBatchSize",
    "monBatchDuration",
    "monCompression",
    "monAutoReplayOnConnect",
    "monDescription",
    "monLastConnect",
    "monLastSent",
    "monStatus",
];

impl Condition {
    fn parse(s: &str) -> Result<Condition, String> {
        let mut ors = vec![Vec::new()];
        let mut rest = s.trim();
        loop {
            let (cmp, after) = Self::comparison(rest)?;
            ors.last_mut().ok_or("empty")?.push(cmp);
            let after = after.trim_start();
            if after.is_empty() {
                return Ok(Condition(ors));
            }
            if let Some(r) = after.strip_prefix("and ") {
                rest = r.trim_start();
            } else if let Some(r) = after.strip_prefix("or ") {
                ors.push(Vec::new());
                rest = r.trim_start();
            } else {
                return Err(format!("expected and/or at {after:?}"));
            }
        }
    }

    fn comparison(s: &str) -> Result<((String, String, String), &str), String> {
        let attr_end = s.find(|c: char| !c.is_ascii_alphanumeric()).ok_or_else(|| format!("no comparison in {s:?}"))?;
        let attr = &s[..attr_end];
        if !ATTRIBUTES.contains(&attr) {
            return Err(format!("unknown attribute {attr:?}"));
        }
        let rest = &s[attr_end..];
        let (op, rest) = if let Some(r) = rest.strip_prefix(" like ") {
            ("like", r)
        } else if let Some(r) = rest.strip_prefix(['=', '<', '>']) {
            (&rest[..1], r)
        } else {
            return Err(format!("expected =, <, > or like after {attr}"));
        };
        let quoted =
            rest.trim_start().strip_prefix('\'').ok_or_else(|| format!("the value of {attr} must be quoted"))?;
        let close = quoted.find('\'').ok_or_else(|| format!("the value of {attr} is not closed"))?;
        Ok(((attr.to_owned(), op.to_owned(), quoted[..close].to_owned()), &quoted[close + 1..]))
    }

    fn holds(&self, item: &Map<String, Value>) -> bool {
        self.0.iter().any(|all| {
            all.iter().all(|(attr, op, value)| {
                let Some(have) = item.get(attr).and_then(Value::as_str) else { return false };
                match op.as_str() {
                    "=" => have == value,
                    "<" | ">" => {
                        let order = match (have.parse::<f64>(), value.parse::<f64>()) {
                            (Ok(a), Ok(b)) => a.partial_cmp(&b),
                            _ => Some(have.cmp(value.as_str())),
                        };
                        order == Some(if op == "<" { std::cmp::Ordering::Less } else { std::cmp::Ordering::Greater })
                    }
                    _ => like(value, have),
                }
            })
        })
    }
}

/// SQL `LIKE`: `%` any run, `_` one character.
fn like(pattern: &str, s: &str) -> bool {
    let (p, s): (Vec<char>, Vec<char>) = (pattern.chars().collect(), s.chars().collect());
    fn go(p: &[char], s: &[char]) -> bool {
        match p.first() {
            None => s.is_empty(),
            Some('%') => (0..=s.len()).any(|i| go(&p[1..], &s[i..])),
            Some('_') => !s.is_empty() && go(&p[1..], &s[1..]),
            Some(c) => s.first() == Some(c) && go(&p[1..], &s[1..]),
        }
    }
    go(&p, &s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_clients_create_body_parses_with_its_bare_ampersand_and_literal_none() {
        let body = "<Monitor>\n    <monTopic>DataPoint,1/channels/x[C,U]</monTopic>\n    <monBatchSize>1</monBatchSize>\n    \
                    <monTransportType>http</monTransportType>\n    <monTransportUrl>http://h/hook?a=1&b=2&amp;c=3</monTransportUrl>\n    \
                    <monTransportToken>None</monTransportToken>\n</Monitor>\n";
        let f = parse_monitor_xml(body.as_bytes()).unwrap();
        assert_eq!(f["monTopic"], "DataPoint,1/channels/x[C,U]");
        assert_eq!(f["monTransportUrl"], "http://h/hook?a=1&b=2&c=3");
        let spec = spec_from(&f, None).unwrap();
        let Transport::Http(h) = spec.transport else { panic!("http") };
        assert_eq!(h.token, None);
        assert_eq!((h.method.as_str(), h.connect_timeout_ms), ("PUT", 5000));
        assert_eq!(spec.batch_size, 1);
    }

    #[test]
    fn malformed_bodies_are_refused_with_the_reason() {
        for (body, says) in [
            ("<Mon></Mon>", "one <Monitor>"),
            ("<Monitor><monTopic>x</Monitor>", "not closed"),
            ("<Monitor><monTopic><a/></monTopic></Monitor>", "nested"),
            ("<Monitor><monTopic>a</monTopic><monTopic>b</monTopic></Monitor>", "twice"),
            ("<Monitor>junk</Monitor>", "outside an element"),
        ] {
            assert!(parse_monitor_xml(body.as_bytes()).unwrap_err().contains(says), "{body}");
        }
        let f = parse_monitor_xml(b"<Monitor><monColour>red</monColour></Monitor>").unwrap();
        assert!(spec_from(&f, None).unwrap_err().contains("Unknown field monColour"));
    }

    #[test]
    fn conditions_follow_the_clients_grammar() {
        let mut item = Map::new();
        item.insert("monTopic".into(), json!("DataPoint,1/channels/x[C,U]"));
        item.insert("monTransportType".into(), json!("http"));
        item.insert("monBatchSize".into(), json!("10"));
        let c = |s: &str| Condition::parse(s).unwrap().holds(&item);
        assert!(c("monTopic='DataPoint,1/channels/x[C,U]'"));
        assert!(!c("monTopic='1/channels/x[C,U],DataPoint'"), "order matters: exact string match");
        assert!(c("monTopic='x' or monTransportType='http'"));
        assert!(!c("monTopic='x' and monTransportType='http'"));
        assert!(c("monBatchSize>'9' and monBatchSize<'11'"));
        assert!(c("monTopic like 'Data%[C,_]'"));
        assert!(Condition::parse("monColour='red'").unwrap_err().contains("unknown attribute"));
        assert!(Condition::parse("monTopic=x").unwrap_err().contains("quoted"));
    }
}

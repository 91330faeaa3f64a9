//! The native monitor API (`/v1/orgs/{org}/monitors`): Paddock's JSON
//! conventions over the same records as Device Cloud's `/ws/Monitor`.

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, Reply, Request};
use crate::model::OrgId;
use crate::monitors::document::{timestamp, topic};
use crate::monitors::{MonitorError, MonitorSpec, Monitors, Topics};
use crate::store::{HttpTarget, MonitorRecord, MonitorState, Transport};

/// Most feed entries one history request looks at.
const HISTORY_SCAN: usize = 10_000;

/// A create or update body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    /// The topics, as a list (joined with commas) ...
    #[serde(default)]
    topics: Option<Vec<String>>,
    /// ... or as Device Cloud's single string.
    #[serde(default)]
    topic: Option<String>,
    #[serde(rename = "type", default)]
    kind: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    compression: Option<String>,
    #[serde(default)]
    batch_size: Option<u32>,
    #[serde(default)]
    batch_duration: Option<u32>,
    #[serde(default)]
    ack: Option<String>,
    #[serde(default)]
    persistent: Option<bool>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    auth_token: Option<String>,
    #[serde(default)]
    headers: Option<Vec<String>>,
    #[serde(default)]
    connect_timeout_ms: Option<u32>,
    #[serde(default)]
    response_timeout_ms: Option<u32>,
    /// Sign each batch with a new Standard Webhooks secret (shown once).
    #[serde(default)]
    sign: bool,
}

impl Body {
    fn spec(self) -> Result<MonitorSpec, ApiError> {
        let bad = |m: String| ApiError::bad_request("invalid_monitor", m);
        let topic = match (self.topics, self.topic) {
            (Some(list), None) => list.join(","),
            (None, Some(t)) => t,
            _ => return Err(bad("give either topics (a list) or topic (a string)".into())),
        };
        let transport = match self.kind.as_deref().unwrap_or("websocket") {
            "tcp" => Transport::Tcp,
            "websocket" => Transport::Websocket,
            "http" => Transport::Http(HttpTarget {
                url: self.url.ok_or_else(|| bad("url is required for an http monitor".into()))?,
                method: self.method.unwrap_or_else(|| "PUT".into()).to_ascii_uppercase(),
                token: self.auth_token.filter(|t| !t.is_empty()),
                headers: self.headers.unwrap_or_default(),
                connect_timeout_ms: self.connect_timeout_ms.filter(|t| *t > 0).unwrap_or(5000),
                response_timeout_ms: self.response_timeout_ms.filter(|t| *t > 0).unwrap_or(5000),
                signing_secret: if self.sign {
                    Some(crate::tenants::new_webhook_secret().map_err(|e| ApiError::internal(&e))?)
                } else {
                    None
                },
            }),
            other => return Err(bad(format!("type {other:?}: tcp, http or websocket"))),
        };
        let base = MonitorSpec::new(topic, transport);
        Ok(MonitorSpec {
            format: self.format.unwrap_or(base.format),
            compression: self.compression.unwrap_or(base.compression),
            batch_size: self.batch_size.unwrap_or(base.batch_size),
            batch_duration_s: self.batch_duration.unwrap_or(base.batch_duration_s),
            ack_explicit: match self.ack.as_deref() {
                None | Some("off") => false,
                Some("explicit") => true,
                Some(other) => return Err(bad(format!("ack {other:?}: off or explicit"))),
            },
            persistent: self.persistent.unwrap_or(false),
            description: self.description,
            ..base
        })
    }
}

/// A monitor as the native API shows it (the auth token never).
pub fn view(rec: &MonitorRecord, state: &MonitorState) -> Value {
    let mut v = json!({
        "id": rec.id,
        "org_id": rec.org,
        "topic": rec.spec.topic,
        "type": rec.spec.transport.name(),
        "format": rec.spec.format,
        "compression": rec.spec.compression,
        "batch_size": rec.spec.batch_size,
        "batch_duration": rec.spec.batch_duration_s,
        "ack": if rec.spec.ack_explicit { "explicit" } else { "off" },
        "persistent": rec.spec.persistent,
        "description": rec.spec.description,
        "status": state.status.name().to_ascii_lowercase(),
        "last_connect": state.last_connect_ms.map(timestamp),
        "last_sent": state.last_sent_ms.map(timestamp),
        "cursor": state.cursor.to_string(),
        "delivered_batches": state.delivered,
        "failed_batches": state.failed,
        "created": timestamp(rec.created_ms),
    });
    if let Transport::Http(h) = &rec.spec.transport {
        v["url"] = json!(h.url);
        v["method"] = json!(h.method);
        v["headers"] =
            json!(h.headers.iter().filter_map(|l| l.split_once(':').map(|(n, _)| n.trim())).collect::<Vec<_>>());
        v["connect_timeout_ms"] = json!(h.connect_timeout_ms);
        v["response_timeout_ms"] = json!(h.response_timeout_ms);
        v["failing_since"] = json!(state.failing_since_ms.map(timestamp));
        v["signed"] = json!(h.signing_secret.is_some());
    }
    v
}

/// A new signing secret is shown once, in the answer that made it.
fn with_secret(mut v: Value, rec: &MonitorRecord) -> Value {
    if let Transport::Http(HttpTarget { signing_secret: Some(secret), .. }) = &rec.spec.transport {
        v["signing_secret"] = json!(secret);
    }
    v
}

/// `POST /v1/orgs/{org}/monitors`.
pub async fn create(monitors: &std::sync::Arc<Monitors>, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let spec = req.json::<Body>()?.spec()?;
    let (rec, state) = monitors.create(org, spec).await.map_err(error)?;
    Ok(Reply::json(StatusCode::CREATED, with_secret(view(&rec, &state), &rec)))
}

/// `GET /v1/orgs/{org}/monitors`.
pub fn list(monitors: &Monitors, org: OrgId) -> Result<Reply, ApiError> {
    let all = monitors.list(org).map_err(error)?;
    Ok(Reply::ok(json!({ "monitors": all.iter().map(|(r, s)| view(r, s)).collect::<Vec<_>>() })))
}

/// `GET /v1/orgs/{org}/monitors/{monitor}`.
pub fn get(monitors: &Monitors, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let (rec, state) = monitors.get(org, id(req)?).map_err(error)?;
    Ok(Reply::ok(view(&rec, &state)))
}

/// `PUT /v1/orgs/{org}/monitors/{monitor}`: replace (and reset).
pub async fn update(monitors: &std::sync::Arc<Monitors>, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let spec = req.json::<Body>()?.spec()?;
    let rec = monitors.update(org, id(req)?, spec).await.map_err(error)?;
    let (rec, state) = monitors.get(org, rec.id).map_err(error)?;
    Ok(Reply::ok(with_secret(view(&rec, &state), &rec)))
}

/// `POST /v1/orgs/{org}/monitors/{monitor}/reset`.
pub async fn reset(monitors: &std::sync::Arc<Monitors>, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let (rec, state) = monitors.reset(org, id(req)?).await.map_err(error)?;
    Ok(Reply::ok(view(&rec, &state)))
}

/// `DELETE /v1/orgs/{org}/monitors/{monitor}`.
pub async fn delete(monitors: &Monitors, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    monitors.delete(org, id(req)?).await.map_err(error)?;
    Ok(Reply::no_content())
}

/// `GET /v1/orgs/{org}/monitors/{monitor}/history`: what the monitor's
/// topics matched in the feed (kept for the retention window), oldest
/// first, from `cursor` (exclusive), committed within `start_time` ..
/// `end_time` (Unix ms, or relative like `-5m`, `-2h`, `-1d`).
pub fn history(monitors: &Monitors, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let (rec, _) = monitors.get(org, id(req)?).map_err(error)?;
    let topics = Topics::parse(&rec.spec.topic).map_err(|e| ApiError::bad_request("invalid_monitor", e.to_string()))?;
    let now = crate::model::now_ms();
    let start = time(req, "start_time", now)?.unwrap_or(0);
    let end = time(req, "end_time", now)?.unwrap_or(u64::MAX);
    let size = req.query::<usize>("size")?.unwrap_or(100).clamp(1, 1000);
    let after = req.query::<u64>("cursor")?.unwrap_or(0);
    let head = monitors.head();
    let scanned = monitors.store().feed(org, after, head.saturating_sub(1), HISTORY_SCAN)?;
    let more = scanned.len() == HISTORY_SCAN;
    let mut last = scanned.last().map_or(after, |e| e.seq);
    let mut list = Vec::new();
    for e in scanned {
        if list.len() == size {
            break;
        }
        last = e.seq;
        if (start..=end).contains(&e.at_ms) && topics.matches(&e) {
            list.push(json!({
                "timestamp": timestamp(e.at_ms), "topic": topic(&e), "cursor": e.seq.to_string(), e.kind.name(): e.body,
            }));
        }
    }
    let next = (more || list.len() == size).then(|| last.to_string());
    Ok(Reply::ok(json!({ "count": list.len(), "size": size, "cursor": next, "list": list })))
}

/// A time query: Unix ms, or `-<n><s|m|h|d>` before now.
fn time(req: &Request, name: &str, now: u64) -> Result<Option<u64>, ApiError> {
    let Some(raw) = req.query.get(name) else { return Ok(None) };
    let bad = || ApiError::bad_request("invalid_query", format!("{name} {raw:?}: Unix ms or -<n>s/m/h/d"));
    if let Some(rel) = raw.strip_prefix('-') {
        let (n, unit) = rel.split_at(rel.len().saturating_sub(1));
        let n: u64 = n.parse().map_err(|_| bad())?;
        let ms = match unit {
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        return Ok(Some(now.saturating_sub(n.saturating_mul(ms))));
    }
    raw.parse().map(Some).map_err(|_| bad())
}

fn id(req: &Request) -> Result<u32, ApiError> {
    req.param("monitor")
}

fn error(e: MonitorError) -> ApiError {
    match e {
        e @ MonitorError::NotFound(_) => ApiError::not_found(e.to_string()),
        e @ MonitorError::Topic(_) => ApiError::bad_request("invalid_topic", e.to_string()),
        e @ MonitorError::Invalid(_) => ApiError::bad_request("invalid_monitor", e.to_string()),
        e @ MonitorError::TooMany(_) => ApiError::new(StatusCode::CONFLICT, "too_many_monitors", e.to_string()),
        MonitorError::Store(s) => s.into(),
    }
}

/// `GET /v1/orgs/{org}/monitors/{monitor}/stream`: switch to WebSocket
/// (RFC 6455) and stream a websocket monitor (see [`crate::monitors::ws`]).
/// A second stream of the same monitor replaces the first.
pub fn stream(monitors: &std::sync::Arc<Monitors>, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let (rec, _) = monitors.get(org, id(req)?).map_err(error)?;
    if rec.spec.transport != Transport::Websocket {
        return Err(ApiError::bad_request(
            "not_a_websocket_monitor",
            format!("monitor {} is a {} monitor", rec.id, rec.spec.transport.name()),
        ));
    }
    let upgrade_asked = req.header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
    let key =
        req.header("sec-websocket-key").filter(|_| upgrade_asked && req.header("sec-websocket-version") == Some("13"));
    let Some(key) = key else {
        return Err(ApiError::new(
            StatusCode::UPGRADE_REQUIRED,
            "upgrade_required",
            "a WebSocket (version 13) upgrade is needed",
        ));
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let upgrade = req.upgrade.lock().unwrap_or_else(|p| p.into_inner()).take();
    let upgrade = upgrade.ok_or_else(|| ApiError::internal(&"an upgrade request without its upgrade"))?;
    let Some((generation, stop)) = monitors.open_session(rec.id) else {
        return Err(ApiError {
            retry_after: Some(5),
            ..ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "too_many_sessions",
                "the server has its maximum of monitor sessions",
            )
        });
    };
    let monitors = std::sync::Arc::clone(monitors);
    // Live from before the 101 goes out (see `ws::serve`).
    let connected_at = monitors.head();
    tokio::spawn(async move {
        match upgrade.await {
            Ok(upgraded) => crate::monitors::ws::serve(monitors, rec, generation, stop, upgraded, connected_at).await,
            Err(e) => {
                tracing::info!(monitor = rec.id, error = %e, "a monitor stream upgrade failed");
                if let Ok(Some(state)) = monitors.store().monitor_state(rec.id) {
                    let _ = monitors.end_session(&rec, generation, &state).await;
                }
            }
        }
    });
    Ok(Reply::raw(StatusCode::SWITCHING_PROTOCOLS, "application/octet-stream", bytes::Bytes::new())
        .with_header(hyper::header::UPGRADE, "websocket".into())
        .with_header(hyper::header::CONNECTION, "Upgrade".into())
        .with_header(hyper::header::SEC_WEBSOCKET_ACCEPT, accept))
}

//! The HTTP API (`/v1`, hyper 1.x): tenant resources, ingestion endpoints,
//! the OAuth callback, health and Prometheus metrics.
//!
//! Every route is declared once in [`routes::ROUTES`]; the router matches
//! requests against that table and `/v1/openapi.json` is generated from
//! it, so the document cannot drift from what is served.
//!
//! Errors are `{"error":{"code","message"}}` with the matching status;
//! internal errors are logged and answered with a generic message.

mod auth;
mod devicecloud;
mod handlers;
mod ingest;
mod listener;
mod monitors;
mod oauth;
pub mod routes;

pub use auth::Principal;
pub use ingest::{HMAC_HEADER, Throttle, WEBHOOK_TOLERANCE_S};
pub use listener::{ConnectionLimits, serve};

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::StatusCode;
use hyper::body::Incoming;
use hyper::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use ipnet::IpNet;
use serde::Serialize;
use serde_json::{Value, json};

use crate::engine::{Engine, EngineError};
use crate::model::StateSigner;
use crate::monitors::Monitors;
use crate::store::StoreError;

/// Largest request body of the management API (uploads of components are
/// larger: see [`ApiConfig::max_upload_bytes`]).
pub const MAX_API_BODY: usize = 1024 * 1024;

/// Default [`ApiConfig::body_timeout`]: a 32 MiB upload at ~1 MiB/s still
/// fits; a client that trickles a body slower is holding a connection.
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);

/// API settings.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// Proxies whose `X-Forwarded-For` is believed (empty: none is).
    pub trusted_proxies: Vec<IpNet>,
    /// Largest app upload (component + manifest), bytes.
    pub max_upload_bytes: usize,
    /// The base URL clients reach this server on (for ingestion URLs and
    /// the OAuth redirect URI), e.g. `http://127.0.0.1:8080`.
    pub public_url: String,
    /// Where uploaded apps are written (the plugins directory), if uploads
    /// are enabled.
    pub plugins_dir: Option<std::path::PathBuf>,
    /// Highest rate (requests/s) an ingestion endpoint may have.
    pub max_ingest_rate: u32,
    /// Longest time a request body may take to arrive once its head has.
    pub body_timeout: Duration,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            trusted_proxies: Vec::new(),
            max_upload_bytes: 32 * 1024 * 1024,
            public_url: "http://127.0.0.1:8080".into(),
            plugins_dir: None,
            max_ingest_rate: crate::tenants::MAX_RATE,
            body_timeout: DEFAULT_BODY_TIMEOUT,
        }
    }
}

/// The API service: shared by every connection.
pub struct Api {
    engine: Arc<Engine>,
    config: ApiConfig,
    throttle: Throttle,
    signer: Arc<StateSigner>,
    monitors: Arc<Monitors>,
}

impl Api {
    /// The API over `engine`. `signer` checks OAuth `state` tokens (the
    /// engine signs them with the same signer, see [`crate::engine::EngineConfig::oauth`]);
    /// `monitors` are the monitors its monitor routes manage (shared with
    /// the push listener).
    pub fn new(engine: Arc<Engine>, config: ApiConfig, signer: Arc<StateSigner>, monitors: Arc<Monitors>) -> Self {
        Self { engine, config, throttle: Throttle::default(), signer, monitors }
    }

    /// The monitors.
    pub fn monitors(&self) -> &Arc<Monitors> {
        &self.monitors
    }

    /// The OAuth redirect URI for a server reached at `public_url`.
    pub fn oauth_redirect_uri(public_url: &str) -> String {
        format!("{public_url}/v1/oauth/callback")
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// Answer one request (never fails: errors become error responses).
    pub async fn handle(&self, mut req: hyper::Request<Incoming>, peer: SocketAddr) -> hyper::Response<Full<Bytes>> {
        if crate::console::owns(req.uri().path()) {
            return self.console(req).await;
        }
        // Kept for the one route that switches protocols (a monitor stream).
        let upgrade = req.headers().contains_key(hyper::header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let query = parse_query(parts.uri.query().unwrap_or(""));
        let started = std::time::Instant::now();
        let response = match routes::find(&parts.method, &path) {
            Err(e) => e.response(),
            Ok((route, params)) => {
                let req = Request {
                    route,
                    params,
                    query,
                    headers: parts.headers,
                    body: Bytes::new(),
                    peer,
                    path: path.clone(),
                    upgrade: std::sync::Mutex::new(upgrade),
                };
                match self.answer(req, body).await {
                    Ok(reply) => reply.into_response(),
                    Err(e) => e.response(),
                }
            }
        };
        tracing::debug!(method = %parts.method, %path, status = response.status().as_u16(),
            ms = started.elapsed().as_secs_f64() * 1000.0, "request");
        response
    }
}

impl Api {
    /// A console request: the session from its cookie first; a POST's form
    /// is read only once signed in (or to sign in), with its own limit and
    /// the body timeout.
    async fn console(&self, mut req: hyper::Request<Incoming>) -> hyper::Response<Full<Bytes>> {
        let upgrade = req.headers().contains_key(hyper::header::UPGRADE).then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();
        let path = parts.uri.path().to_owned();
        let query = parse_query(parts.uri.query().unwrap_or(""));
        let key = self.signer.key();
        let cookies = parts.headers.get(hyper::header::COOKIE).and_then(|v| v.to_str().ok());
        let session = crate::console::session::from_cookies(key, self.engine.store(), cookies);
        let mut form = BTreeMap::new();
        if parts.method == hyper::Method::POST {
            if session.is_none() && path != "/console/login" {
                return crate::console::Page::redirect("/console/login").into_response();
            }
            let read = read_body(&parts.headers, body, crate::console::MAX_FORM);
            match tokio::time::timeout(self.config.body_timeout, read).await {
                Ok(Ok(bytes)) => form = parse_query(&String::from_utf8_lossy(&bytes)),
                _ => return crate::console::Page::with_status(StatusCode::BAD_REQUEST, String::new()).into_response(),
            }
        }
        let console = crate::console::pages::Console {
            engine: &self.engine,
            monitors: &self.monitors,
            public_url: &self.config.public_url,
            max_ingest_rate: self.config.max_ingest_rate,
            key,
            secure: self.config.public_url.starts_with("https://"),
        };
        if let (Some(upgrade), Some(session)) = (upgrade, &session) {
            return self.console_live(&console, session, &parts, upgrade).into_response();
        }
        let req = crate::console::Request { method: &parts.method, path: &path, query: &query, session, form };
        crate::console::handle(&console, req).await.into_response()
    }

    /// A console page's live updates: a WebSocket carrying what happens on
    /// the device (or an installation's invocations), through the
    /// monitors' delivery loop as an ephemeral view (never stored; from
    /// where the page was rendered, its `since`).
    fn console_live(
        &self,
        console: &crate::console::pages::Console<'_>,
        session: &crate::console::Session,
        parts: &hyper::http::request::Parts,
        upgrade: hyper::upgrade::OnUpgrade,
    ) -> crate::console::Page {
        use crate::console::Page;
        let segments: Vec<&str> = parts.uri.path().split('/').collect();
        // A device page sees everything on the device; an installation's
        // page its invocations.
        let target = match segments.as_slice() {
            ["", "console", "orgs", org, "devices", agent, "live"] => {
                crate::console::pages::device_of(console, session, org, agent).map(|(o, _, a)| (o, a.to_string()))
            }
            ["", "console", "orgs", org, "installations", install, "live"] => {
                crate::console::pages::live_installation(console, session, org, install)
                    .map(|(o, a)| (o, format!("{a}/invocations")))
            }
            _ => return Page::with_status(StatusCode::NOT_FOUND, String::new()),
        };
        let (org, topic) = match target {
            Ok(target) => target,
            Err(page) => return page,
        };
        let key = parts.headers.get("sec-websocket-key").and_then(|k| k.to_str().ok());
        let version_ok = parts.headers.get("sec-websocket-version").is_some_and(|v| v == "13");
        let Some(key) = key.filter(|_| version_ok) else {
            return Page::with_status(StatusCode::UPGRADE_REQUIRED, String::new());
        };
        let Some(view) = self.monitors.open_view(org) else {
            return Page::with_status(StatusCode::SERVICE_UNAVAILABLE, String::new());
        };
        let spec = crate::store::MonitorSpec {
            batch_size: 100,
            batch_duration_s: 0,
            ..crate::store::MonitorSpec::new(topic, crate::store::Transport::Websocket)
        };
        let rec = crate::store::MonitorRecord { id: crate::monitors::EPHEMERAL, org, created_ms: 0, spec };
        // From where the page was rendered (`since`), so nothing between
        // the page and its socket is missed.
        let since = parse_query(parts.uri.query().unwrap_or("")).get("since").and_then(|s| s.parse::<u64>().ok());
        let start = since.unwrap_or_else(|| self.monitors.head().saturating_sub(1));
        let monitors = Arc::clone(&self.monitors);
        tokio::spawn(async move {
            let (_stop, stopped) = tokio::sync::watch::channel(false);
            if let Ok(upgraded) = upgrade.await {
                // An ephemeral view starts at `start`, not at the connection.
                crate::monitors::ws::serve(monitors, rec, start, stopped, upgraded, start).await;
            }
            drop(view);
        });
        let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
        Page::switching(accept)
    }

    /// Who is calling and whether they may, from the head alone; only then
    /// the body, with the limit the route (or the ingestion endpoint)
    /// allows. So nobody without credentials makes the server buffer a body.
    async fn answer(&self, mut req: Request, body: Incoming) -> Result<Reply, ApiError> {
        let admitted = handlers::admit(self, &req)?;
        if admitted.body_limit > 0 {
            let read = read_body(&req.headers, body, admitted.body_limit);
            req.body = tokio::time::timeout(self.config.body_timeout, read).await.map_err(|_| {
                ApiError::new(StatusCode::REQUEST_TIMEOUT, "body_timeout", "the request body did not arrive in time")
            })??;
        }
        handlers::dispatch(self, &req, admitted).await
    }
}

/// A parsed request, as handlers see it.
pub struct Request {
    /// The matched route.
    pub route: &'static routes::Route,
    /// Path parameters by name.
    pub params: BTreeMap<&'static str, String>,
    /// Query parameters (last one wins).
    pub query: BTreeMap<String, String>,
    /// Headers.
    pub headers: HeaderMap,
    /// The whole body (already size-checked; empty until the caller is
    /// admitted).
    pub body: Bytes,
    /// The socket peer.
    pub peer: SocketAddr,
    /// The request path.
    pub path: String,
    /// The connection's upgrade, if the client asked to switch protocols
    /// (taken by the handler that does).
    pub upgrade: std::sync::Mutex<Option<hyper::upgrade::OnUpgrade>>,
}

impl Request {
    /// A path parameter parsed as `T`, or 404 (an unparsable id names nothing).
    pub fn param<T: std::str::FromStr>(&self, name: &str) -> Result<T, ApiError> {
        let raw = self.params.get(name).map(String::as_str).unwrap_or_default();
        raw.parse().map_err(|_| ApiError::not_found(format!("no {name} {raw:?}")))
    }

    /// The body as strict JSON (one document, no duplicate keys, integers
    /// that fit 64 bits) of type `T`: 400 naming where it failed.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, ApiError> {
        let value = crate::model::parse_strict(&self.body)
            .map_err(|e| ApiError::bad_request("invalid_json", format!("request body: {e}")))?;
        serde_path_to_error::deserialize(value).map_err(|e| {
            let path = e.path().to_string();
            let at = if path == "." { String::new() } else { format!(" at {path}") };
            ApiError::bad_request("invalid_json", format!("request body{at}: {}", e.inner()))
        })
    }

    /// A query parameter parsed as `T`, if present (400 if unparsable).
    pub fn query<T: std::str::FromStr>(&self, name: &str) -> Result<Option<T>, ApiError> {
        self.query
            .get(name)
            .map(|v| v.parse().map_err(|_| ApiError::bad_request("invalid_query", format!("bad {name}: {v:?}"))))
            .transpose()
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The client's address: the socket peer, or — only when the peer is
    /// a trusted proxy — the nearest untrusted hop of `X-Forwarded-For`.
    pub fn client_ip(&self, trusted: &[IpNet]) -> IpAddr {
        let peer = self.peer.ip();
        if !trusted.iter().any(|n| n.contains(&peer)) {
            return peer;
        }
        let hops = self.header("x-forwarded-for").unwrap_or_default();
        hops.rsplit(',')
            .filter_map(|h| h.trim().parse::<IpAddr>().ok())
            .find(|ip| !trusted.iter().any(|n| n.contains(ip)))
            .unwrap_or(peer)
    }
}

/// A successful answer (or, for Device Cloud's routes, an error in its
/// own format).
pub struct Reply {
    status: StatusCode,
    body: Bytes,
    content_type: &'static str,
    headers: Vec<(hyper::header::HeaderName, String)>,
}

impl Reply {
    /// 200 with a JSON body.
    pub fn ok(value: impl Serialize) -> Self {
        Self::json(StatusCode::OK, value)
    }

    /// `status` with a JSON body.
    pub fn json(status: StatusCode, value: impl Serialize) -> Self {
        let body = serde_json::to_vec(&value).unwrap_or_default();
        Self::raw(status, "application/json", body)
    }

    /// 200 with a text body of `content_type`.
    pub fn text(content_type: &'static str, body: String) -> Self {
        Self::raw(StatusCode::OK, content_type, body)
    }

    /// `status` with `body` of `content_type`.
    pub fn raw(status: StatusCode, content_type: &'static str, body: impl Into<Bytes>) -> Self {
        Self { status, body: body.into(), content_type, headers: Vec::new() }
    }

    /// With a `Location` header.
    pub fn with_location(self, location: String) -> Self {
        self.with_header(hyper::header::LOCATION, location)
    }

    /// With one more header.
    pub fn with_header(mut self, name: hyper::header::HeaderName, value: String) -> Self {
        self.headers.push((name, value));
        self
    }

    /// 204.
    pub fn no_content() -> Self {
        Self::raw(StatusCode::NO_CONTENT, "application/json", Bytes::new())
    }

    fn into_response(self) -> hyper::Response<Full<Bytes>> {
        let mut r = hyper::Response::new(Full::new(self.body));
        *r.status_mut() = self.status;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                r.headers_mut().insert(name, value);
            }
        }
        r
    }
}

/// An error answer: `{"error":{"code","message"}}` with `status`.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable machine-readable code.
    pub code: &'static str,
    /// Human explanation (never internal details).
    pub message: String,
    /// Extra detail, e.g. every config violation.
    pub details: Option<Box<Value>>,
    /// `Retry-After` seconds, for 429 and 503.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with `status` and `code`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None, retry_after: None }
    }
    /// 400.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
    /// 401.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }
    /// 403.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// 500, logging the cause and showing none of it.
    pub fn internal(cause: &dyn std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error answering a request");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; see the server log")
    }

    fn response(self) -> hyper::Response<Full<Bytes>> {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(d) = self.details {
            error["details"] = *d;
        }
        let body = serde_json::to_vec(&json!({ "error": error })).unwrap_or_default();
        let mut r = hyper::Response::new(Full::new(body.into()));
        *r.status_mut() = self.status;
        r.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Some(s) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&s.to_string())
        {
            r.headers_mut().insert(RETRY_AFTER, v);
        }
        r
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            StoreError::UnknownAgent(a) => ApiError::not_found(format!("agent {a} does not exist")),
            e @ StoreError::AggregateTooLarge { .. } => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "aggregate_too_large", e.to_string())
            }
            e @ StoreError::Duplicate { .. } => ApiError::new(StatusCode::CONFLICT, "duplicate", e.to_string()),
            // Nothing of the request was kept; say why, and when to retry.
            e if e.is_storage_full() => ApiError {
                retry_after: Some(5),
                ..ApiError::new(StatusCode::INSUFFICIENT_STORAGE, "insufficient_storage", e.to_string())
            },
            e if e.is_unwritable() => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "store_unavailable", e.to_string())
            },
            other => ApiError::internal(&other),
        }
    }
}

impl From<crate::tenants::AdminError> for ApiError {
    fn from(e: crate::tenants::AdminError) -> Self {
        use crate::tenants::AdminError;
        match e {
            AdminError::EmptyName => ApiError::bad_request("invalid_name", e.to_string()),
            AdminError::SerialTaken(_) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
            AdminError::Ingestion(i) => ApiError::bad_request(i.code(), i.to_string()),
            AdminError::Store(s) => s.into(),
            AdminError::Random(_) => ApiError::internal(&e),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::Store(s) => s.into(),
            e @ EngineError::Read(_) => ApiError::internal(&e),
            EngineError::Payload(p @ crate::model::PayloadError::TooLarge { .. }) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", p.to_string())
            }
            EngineError::Payload(p) => ApiError::bad_request("invalid_payload", p.to_string()),
            e @ EngineError::HostOwned(_) => ApiError::new(StatusCode::FORBIDDEN, "host_owned_channel", e.to_string()),
            e @ EngineError::UnknownInstallation(_) => ApiError::not_found(e.to_string()),
            e @ EngineError::UnknownAgent(_) => ApiError::not_found(e.to_string()),
            e @ EngineError::UnknownApp(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unknown_app", e.to_string())
            }
            EngineError::InvalidConfig(v) => ApiError {
                details: Some(Box::new(json!(v))),
                ..ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_config",
                    format!("config breaks the app's schema ({} violation(s))", v.len()),
                )
            },
            e @ EngineError::Busy { .. } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string())
            },
            e @ EngineError::TenantBusy { .. } => ApiError {
                retry_after: Some(1),
                ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "tenant_busy", e.to_string())
            },
        }
    }
}

/// Read a body of at most `limit` bytes: 413 before reading when the
/// declared length is over, and while reading when the stream is.
async fn read_body(headers: &HeaderMap, body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    let too_large =
        || ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", format!("body exceeds {limit} bytes"));
    let declared = headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(e) => Err(ApiError::bad_request("bad_body", format!("could not read the body: {e}"))),
    }
}

fn parse_query(q: &str) -> BTreeMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

/// Decode `%XX` escapes and `+` (form encoding) in a query component.
pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_form_encoding() {
        let q = parse_query("start=0&size=1000&condition=monTopic%3D%27a%2Cb%27+and+x%3D%27y%27&flag");
        assert_eq!(q["condition"], "monTopic='a,b' and x='y'");
        assert_eq!((q["start"].as_str(), q["flag"].as_str()), ("0", ""));
        assert_eq!(percent_decode("%zz%4"), "%zz%4", "a broken escape stays as sent");
    }

    #[test]
    fn fuzz_query_strings() {
        let tokens = crate::fuzz::text(&["&", "=", "%", "%2", "%41", "+", "%C3%A9", "%FF", "limit", "before"]);
        crate::fuzz::fuzz("query strings", tokens, |t| {
            let q = parse_query(&t);
            proptest::prop_assert!(q.len() <= t.split('&').count());
            Ok(())
        });
    }
}

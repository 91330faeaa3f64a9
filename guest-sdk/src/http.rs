//! Outbound HTTP: call an external API from a hook.
//!
//! Only hosts listed in the manifest's `allowed_hosts` are reachable, and
//! Paddock refuses private, loopback and link-local addresses unless the
//! operator allowed them. Requests are blocking; the host applies connect,
//! first-byte and between-bytes timeouts (a request may ask for shorter
//! ones), caps the response body (1 MiB by default) and the number of
//! requests per invocation (16 by default).
//!
//! Outbound requests are not part of the invocation's transaction: an event
//! that is retried sends its requests again, so make them idempotent (or
//! keep a tag recording what was sent).
//!
//! ```no_run
//! use paddock_sdk::http;
//! # fn f() -> Result<(), paddock_sdk::AppError> {
//! let weather = http::get("https://api.example.com/v1/weather?site=7")?;
//! let forecast: paddock_sdk::Value = weather.error_for_status()?.json()?;
//!
//! let resp = http::Request::post("https://hooks.example.com/alerts")
//!     .header("authorization", "Bearer s3cret")
//!     .json(&paddock_sdk::json!({"level": 12}))?
//!     .timeout(std::time::Duration::from_secs(2))
//!     .send()?;
//! paddock_sdk::info!("alert sent: {}", resp.status);
//! # Ok(()) }
//! ```

use std::fmt;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;
use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, Method as WitMethod, OutgoingBody, OutgoingRequest, RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::AppError;

/// Largest chunk one blocking write may carry (wasi:io's documented floor).
const WRITE_CHUNK: usize = 4096;
/// Bytes asked for per read of the response body.
const READ_CHUNK: u64 = 64 * 1024;

/// Why a request did not produce a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL is not `http(s)://host[:port]/path?query`.
    InvalidUrl(String),
    /// A header name or value was refused (malformed or forbidden).
    InvalidHeader(String),
    /// Paddock refused the request: the host is not in `allowed_hosts`, it
    /// resolves to a private address, or the invocation sent too many
    /// requests. The invocation's logs say which.
    Denied(String),
    /// The host or network did not answer in time.
    Timeout(String),
    /// The response body is larger than the host's cap.
    TooLarge(Option<u64>),
    /// Anything else on the way (DNS, connection, TLS, protocol).
    Failed(String),
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl(m) => write!(f, "invalid URL: {m}"),
            HttpError::InvalidHeader(m) => write!(f, "invalid header: {m}"),
            HttpError::Denied(m) => write!(f, "denied: {m}"),
            HttpError::Timeout(m) => write!(f, "timeout: {m}"),
            HttpError::TooLarge(Some(cap)) => write!(f, "response body over {cap} bytes"),
            HttpError::TooLarge(None) => write!(f, "response body too large"),
            HttpError::Failed(m) => write!(f, "failed: {m}"),
        }
    }
}

impl std::error::Error for HttpError {}

/// Refusals and bad requests fail the event (a retry would be refused
/// again); network trouble retries it.
impl From<HttpError> for AppError {
    fn from(e: HttpError) -> Self {
        match e {
            HttpError::InvalidUrl(_) | HttpError::InvalidHeader(_) | HttpError::Denied(_) | HttpError::TooLarge(_) => {
                AppError::Fail(format!("http: {e}"))
            }
            HttpError::Timeout(_) | HttpError::Failed(_) => AppError::Retry(format!("http: {e}")),
        }
    }
}

impl From<ErrorCode> for HttpError {
    fn from(code: ErrorCode) -> Self {
        match code {
            ErrorCode::HttpRequestDenied => HttpError::Denied("host not allowed, or too many requests".into()),
            ErrorCode::DestinationIpProhibited => HttpError::Denied("the host resolves to a private address".into()),
            ErrorCode::HttpResponseBodySize(cap) => HttpError::TooLarge(cap),
            ErrorCode::DnsTimeout
            | ErrorCode::ConnectionTimeout
            | ErrorCode::ConnectionReadTimeout
            | ErrorCode::ConnectionWriteTimeout
            | ErrorCode::HttpResponseTimeout => HttpError::Timeout(format!("{code:?}")),
            ErrorCode::HttpRequestUriInvalid => HttpError::InvalidUrl("refused by the host".into()),
            other => HttpError::Failed(format!("{other:?}")),
        }
    }
}

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// GET
    Get,
    /// HEAD
    Head,
    /// POST
    Post,
    /// PUT
    Put,
    /// PATCH
    Patch,
    /// DELETE
    Delete,
}

/// A request being built; [`Request::send`] sends it.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with `method` to `url`.
    pub fn new(method: Method, url: impl Into<String>) -> Self {
        Self { method, url: url.into(), headers: Vec::new(), body: Vec::new(), timeout: None }
    }

    /// A GET request.
    pub fn get(url: impl Into<String>) -> Self {
        Self::new(Method::Get, url)
    }

    /// A POST request.
    pub fn post(url: impl Into<String>) -> Self {
        Self::new(Method::Post, url)
    }

    /// A PUT request.
    pub fn put(url: impl Into<String>) -> Self {
        Self::new(Method::Put, url)
    }

    /// Add a header.
    pub fn header(mut self, name: impl Into<String>, value: impl AsRef<[u8]>) -> Self {
        self.headers.push((name.into(), value.as_ref().to_vec()));
        self
    }

    /// Set the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// Set a JSON body and `content-type: application/json`.
    pub fn json<T: Serialize + ?Sized>(self, value: &T) -> Result<Self, crate::Error> {
        let body = serde_json::to_vec(value)?;
        Ok(self.header("content-type", "application/json").body(body))
    }

    /// Ask for shorter timeouts than the host's (connect, first byte and
    /// between bytes each get at most this).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// Send the request and read the whole response.
    pub fn send(self) -> Result<Response, HttpError> {
        let url = Url::parse(&self.url)?;
        let mut fields: Vec<(String, Vec<u8>)> = self.headers;
        // A known length: some servers refuse chunked request bodies.
        let has_body = !self.body.is_empty() || matches!(self.method, Method::Post | Method::Put | Method::Patch);
        if has_body && !fields.iter().any(|(n, _)| n.eq_ignore_ascii_case("content-length")) {
            fields.push(("content-length".into(), self.body.len().to_string().into_bytes()));
        }
        let headers = Fields::from_list(&fields).map_err(|e| HttpError::InvalidHeader(format!("{e:?}")))?;
        let request = OutgoingRequest::new(headers);
        let invalid = |what: &str| HttpError::InvalidUrl(format!("{}: bad {what}", self.url));
        request.set_method(&self.method.to_wit()).map_err(|()| invalid("method"))?;
        request.set_scheme(Some(&url.scheme)).map_err(|()| invalid("scheme"))?;
        request.set_authority(Some(url.authority)).map_err(|()| invalid("host"))?;
        request.set_path_with_query(Some(&url.path)).map_err(|()| invalid("path"))?;
        let options = self.timeout.map(|t| {
            let ns = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
            let o = RequestOptions::new();
            // A host that does not support one of them keeps its own.
            let _ = o.set_connect_timeout(Some(ns));
            let _ = o.set_first_byte_timeout(Some(ns));
            let _ = o.set_between_bytes_timeout(Some(ns));
            o
        });
        let body = request.body().map_err(|()| HttpError::Failed("request body taken twice".into()))?;
        let pending = outgoing_handler::handle(request, options)?;
        write_body(body, &self.body)?;
        let response = loop {
            match pending.get() {
                Some(Ok(result)) => break result?,
                Some(Err(())) => return Err(HttpError::Failed("response taken twice".into())),
                None => pending.subscribe().block(),
            }
        };
        let status = response.status();
        let headers = response
            .headers()
            .entries()
            .into_iter()
            .map(|(name, value)| (name, String::from_utf8_lossy(&value).into_owned()))
            .collect();
        let incoming = response.consume().map_err(|()| HttpError::Failed("response body taken twice".into()))?;
        let body = read_body(&incoming)?;
        drop(IncomingBody::finish(incoming));
        Ok(Response { status, headers, body })
    }
}

/// GET `url`.
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

fn write_body(body: OutgoingBody, bytes: &[u8]) -> Result<(), HttpError> {
    {
        let stream = body.write().map_err(|()| HttpError::Failed("request body stream taken twice".into()))?;
        for chunk in bytes.chunks(WRITE_CHUNK) {
            stream.blocking_write_and_flush(chunk).map_err(stream_error)?;
        }
    }
    OutgoingBody::finish(body, None)?;
    Ok(())
}

fn read_body(incoming: &IncomingBody) -> Result<Vec<u8>, HttpError> {
    let stream = incoming.stream().map_err(|()| HttpError::Failed("response body stream taken twice".into()))?;
    let mut body = Vec::new();
    loop {
        match stream.blocking_read(READ_CHUNK) {
            Ok(chunk) => body.extend_from_slice(&chunk),
            Err(StreamError::Closed) => return Ok(body),
            Err(e) => return Err(stream_error(e)),
        }
    }
}

fn stream_error(e: StreamError) -> HttpError {
    match e {
        StreamError::Closed => HttpError::Failed("connection closed".into()),
        StreamError::LastOperationFailed(err) => match wasip2::http::types::http_error_code(&err) {
            Some(code) => code.into(),
            None => from_text(err.to_debug_string()),
        },
    }
}

/// Errors inside a response body reach the guest as text only (wasmtime 48
/// does not attach the error code): recognise the ones an app acts on.
fn from_text(text: String) -> HttpError {
    if let Some(rest) = text.strip_prefix("HTTP response body size exceeds limit") {
        let cap = rest.trim_start_matches(": ").trim_end_matches(" bytes").parse().ok();
        return HttpError::TooLarge(cap);
    }
    if text.contains("timeout") || text.contains("timed out") {
        return HttpError::Timeout(text);
    }
    HttpError::Failed(text)
}

/// A response, read completely.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lower case, values decoded lossily as UTF-8.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json<T: DeserializeOwned>(&self) -> Result<T, crate::Error> {
        Ok(serde_json::from_slice(&self.body)?)
    }

    /// `Ok(self)` for a 2xx status; otherwise an error naming the status:
    /// 5xx and 429 retry the event, other statuses fail it.
    pub fn error_for_status(self) -> Result<Self, AppError> {
        match self.status {
            200..=299 => Ok(self),
            429 | 500..=599 => Err(AppError::Retry(format!("http status {}", self.status))),
            s => Err(AppError::Fail(format!("http status {s}"))),
        }
    }
}

impl Method {
    fn to_wit(self) -> WitMethod {
        match self {
            Method::Get => WitMethod::Get,
            Method::Head => WitMethod::Head,
            Method::Post => WitMethod::Post,
            Method::Put => WitMethod::Put,
            Method::Patch => WitMethod::Patch,
            Method::Delete => WitMethod::Delete,
        }
    }
}

/// `scheme://authority/path?query`, split for wasi:http.
struct Url<'a> {
    scheme: Scheme,
    authority: &'a str,
    path: String,
}

impl<'a> Url<'a> {
    fn parse(url: &'a str) -> Result<Self, HttpError> {
        let bad = |why: &str| HttpError::InvalidUrl(format!("{url}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("no scheme"))?;
        let scheme = match scheme.to_ascii_lowercase().as_str() {
            "https" => Scheme::Https,
            "http" => Scheme::Http,
            _ => return Err(bad("only http and https")),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let cut = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(cut);
        if authority.is_empty() || authority.contains('@') {
            return Err(bad("no host, or user info in the URL"));
        }
        let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
        Ok(Url { scheme, authority, path })
    }
}

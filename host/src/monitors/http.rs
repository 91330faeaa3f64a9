//! HTTP delivery: each batch is PUT (or POSTed) to the monitor's URL, as
//! Device Cloud's HTTP transport does (`../shared/MONITORS.md` §6.1).
//!
//! Every HTTP monitor has one runner task. A batch counts as delivered on
//! a 2xx answer; anything else, a timeout or a refused connection is a
//! failure: the monitor shows CONNECTING and the *same* batch is tried
//! again after a capped backoff (1 s doubling to 60 s), so nothing is
//! skipped or reordered. A monitor failing for `disable_after` (24 h) is
//! DISABLED, a notification is raised in its organisation, and nothing is
//! tried until it is reset.
//!
//! Requests go through the outbound address guard apps use: a target that
//! resolves to a private or loopback address is refused unless the
//! operator's `[outbound] allow_private` lists it.

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use sha2::Sha256;

use super::Monitors;
use super::deliver::{self, End, Sink, SinkError};
use crate::model::now_ms;
use crate::store::{HttpTarget, MonitorRecord, MonitorStatus, Transport};

/// First wait after a failure; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Most of a receiver's answer read (the status is what counts).
const MAX_ANSWER: usize = 64 * 1024;

/// Where a starting runner's delivery begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The stored cursor: set when the monitor was created, updated or
    /// reset, so nothing committed after that is missed, however late the
    /// runner's task gets to run.
    Stored,
    /// Now, for a non-persistent monitor (live only, as after a restart);
    /// a persistent one replays from its stored cursor either way.
    Now,
}

/// Start delivering `rec` if it is an HTTP monitor that is not disabled
/// (replacing any runner it had), starting where `from` says.
pub fn start(monitors: &Arc<Monitors>, rec: MonitorRecord, from: Start) {
    if !matches!(rec.spec.transport, Transport::Http(_)) {
        return;
    }
    let disabled =
        monitors.store.monitor_state(rec.id).ok().flatten().is_some_and(|s| s.status == MonitorStatus::Disabled);
    if disabled {
        return;
    }
    let Some((generation, stop)) = monitors.open_session(rec.id) else {
        tracing::warn!(monitor = rec.id, "HTTP monitor not started: too many sessions");
        return;
    };
    tokio::spawn(run(Arc::clone(monitors), rec, generation, stop, from));
}

async fn run(
    monitors: Arc<Monitors>,
    rec: MonitorRecord,
    generation: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
    from: Start,
) {
    let Transport::Http(target) = &rec.spec.transport else { return };
    let mut sink = HttpSink::new(&monitors, &rec, target);
    let mut live_from = (from == Start::Now).then(|| monitors.head());
    let (mut status, mut backoff) = (MonitorStatus::Active, FIRST_BACKOFF);
    loop {
        let before = monitors.store.monitor_state(rec.id).ok().flatten().map_or(0, |s| s.delivered);
        let (end, mut state) =
            deliver::run(&monitors, &rec, generation, stop.clone(), &mut sink, (status, live_from)).await;
        live_from = None;
        let reason = match end {
            End::Stopped => return,
            End::Sink(e) => e.to_string(),
            End::Gone(reason) => reason,
            End::Store(e) => format!("store: {e}"),
        };
        if state.delivered > before {
            backoff = FIRST_BACKOFF;
        }
        let now = now_ms();
        let since = *state.failing_since_ms.get_or_insert(now);
        let limit = u64::try_from(monitors.config.disable_after.as_millis()).unwrap_or(u64::MAX);
        status = if now.saturating_sub(since) >= limit { MonitorStatus::Disabled } else { MonitorStatus::Connecting };
        state.status = status;
        tracing::info!(monitor = rec.id, organisation = %rec.org, %reason, ?backoff, ?status, "HTTP monitor delivery failed");
        match monitors.save_if_current(&rec, generation, &state).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(monitor = rec.id, error = %e, "saving a monitor's state failed"),
        }
        if status == MonitorStatus::Disabled {
            let _ = monitors.end_session(&rec, generation, &state).await;
            let message = format!(
                "Monitor {} ({}) failed for too long and is disabled: {reason}. Reset it to resume.",
                rec.id, target.url
            );
            monitors.notify(rec.org, "Monitor disabled", message).await;
            return;
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            _ = stop.changed() => return,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
}

/// Sends batches to one URL.
struct HttpSink {
    target: HttpTarget,
    uri: hyper::Uri,
    json: bool,
    compressed: bool,
    monitor: u32,
    block: u64,
    allow_private: Vec<ipnet::IpNet>,
    key: Option<Vec<u8>>,
}

impl HttpSink {
    fn new(monitors: &Monitors, rec: &MonitorRecord, target: &HttpTarget) -> HttpSink {
        HttpSink {
            target: target.clone(),
            uri: target.url.parse().unwrap_or_default(),
            json: rec.spec.format == "json",
            compressed: rec.spec.compressed(),
            monitor: rec.id,
            block: 0,
            allow_private: monitors.config.allow_private.clone(),
            key: target.signing_secret.as_deref().and_then(crate::tenants::standard_webhook_key),
        }
    }

    fn request(&self, body: Vec<u8>, count: usize, first: u64) -> Result<hyper::Request<Full<Bytes>>, SinkError> {
        let path = self.uri.path_and_query().map_or("/", |p| p.as_str());
        let host = self.uri.authority().map(|a| a.as_str().to_owned()).unwrap_or_default();
        let mut req = hyper::Request::builder()
            .method(self.target.method.as_str())
            .uri(path)
            .header(hyper::header::HOST, host)
            .header(
                hyper::header::CONTENT_TYPE,
                if self.json { "application/json;charset=UTF-8" } else { "text/xml;charset=UTF-8" },
            )
            .header("Monitor-Protocol-Version", "1.0")
            .header("Monitor-DataBlockId", self.block.to_string())
            .header("Monitor-Aggregate-Count", count.to_string());
        if self.compressed {
            req = req.header(hyper::header::CONTENT_ENCODING, "deflate");
        }
        if let Some(token) = &self.target.token {
            let basic = base64::engine::general_purpose::STANDARD.encode(token);
            req = req.header(hyper::header::AUTHORIZATION, format!("Basic {basic}"));
        }
        if let Some(key) = &self.key {
            // Standard Webhooks: the same id for every attempt of a batch
            // (its first event's place in the feed), and never another's.
            let id = format!("mon{}_{first}", self.monitor);
            let ts = (now_ms() / 1000).to_string();
            let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
                return Err(SinkError::Refused("the signing key is unusable".into()));
            };
            mac.update(format!("{id}.{ts}.").as_bytes());
            mac.update(&body);
            let signature = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
            req = req
                .header("webhook-id", id)
                .header("webhook-timestamp", ts)
                .header("webhook-signature", format!("v1,{signature}"));
        }
        for line in &self.target.headers {
            let Some((name, value)) = line.split_once(':') else { continue };
            let name = name.trim();
            // Custom headers never override the standard ones.
            let standard = ["host", "content-type", "content-encoding", "content-length", "authorization"];
            if standard.contains(&name.to_ascii_lowercase().as_str())
                || name.to_ascii_lowercase().starts_with("monitor-")
            {
                continue;
            }
            req = req.header(name, value.trim());
        }
        req.body(Full::new(Bytes::from(body))).map_err(|e| SinkError::Refused(format!("cannot build the request: {e}")))
    }

    async fn post(&self, request: hyper::Request<Full<Bytes>>) -> Result<hyper::StatusCode, SinkError> {
        let fail = |m: String| SinkError::Gone(m);
        let host = self.uri.host().ok_or_else(|| fail("the URL has no host".into()))?.to_owned();
        let tls = self.uri.scheme_str() == Some("https");
        let port = self.uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let connect_timeout = Duration::from_millis(u64::from(self.target.connect_timeout_ms.max(1)));
        let response_timeout = Duration::from_millis(u64::from(self.target.response_timeout_ms.max(1)));
        let connect = async {
            let stream = crate::runtime::connect_guarded(&self.allow_private, &host, port)
                .await
                .map_err(|r| fail(format!("{host}:{port}: {r}")))?;
            if tls {
                let name =
                    crate::runtime::server_name_of(&host).ok_or_else(|| fail(format!("{host:?} is not a TLS name")))?;
                let connector = crate::runtime::tls_connector().map_err(|e| fail(e.to_string()))?;
                let stream = connector.connect(name, stream).await.map_err(|e| fail(format!("TLS: {e}")))?;
                handshake(TokioIo::new(stream)).await
            } else {
                handshake(TokioIo::new(stream)).await
            }
        };
        let mut sender = tokio::time::timeout(connect_timeout, connect)
            .await
            .map_err(|_| fail(format!("no connection within {connect_timeout:?}")))??;
        let answer = async {
            let response = sender.send_request(request).await.map_err(|e| fail(e.to_string()))?;
            let status = response.status();
            // Read (a bounded part of) the answer so the exchange ends cleanly.
            let _ = http_body_util::Limited::new(response.into_body(), MAX_ANSWER).collect().await;
            Ok(status)
        };
        tokio::time::timeout(response_timeout, answer)
            .await
            .map_err(|_| fail(format!("no answer within {response_timeout:?}")))?
    }
}

type Sender = hyper::client::conn::http1::SendRequest<Full<Bytes>>;

/// An HTTP/1 connection whose driver runs on its own task.
async fn handshake<T>(io: TokioIo<T>) -> Result<Sender, SinkError>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) =
        hyper::client::conn::http1::handshake(io).await.map_err(|e| SinkError::Gone(format!("HTTP handshake: {e}")))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

impl Sink for HttpSink {
    async fn send(&mut self, body: Vec<u8>, count: usize, first: u64) -> Result<(), SinkError> {
        self.block += 1;
        let sent = match self.post(self.request(body, count, first)?).await {
            Ok(status) if status.is_success() => Ok(()),
            Ok(status) => Err(SinkError::Refused(format!("the receiver answered {status}"))),
            Err(e) => Err(e),
        };
        if sent.is_err() {
            // The same batch goes again, with the same block id.
            self.block -= 1;
        }
        sent
    }

    async fn gone(&mut self) -> String {
        std::future::pending().await
    }
}

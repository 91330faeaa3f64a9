//! Outbound HTTP for apps (`wasi:http/outgoing-handler`), behind a policy.
//!
//! A request leaves the sandbox only if
//! 1. the invocation has sent fewer than [`OutboundConfig::max_requests`];
//! 2. its scheme is `http` or `https` and its `host:port` fits one of the
//!    app's `allowed_hosts` ([`HostPattern`]); an app with none sends nothing;
//! 3. after DNS, one of the host's addresses is public, or inside the
//!    operator's [`OutboundConfig::allow_private`] ranges. The connection goes
//!    to that checked address: there is no second lookup, so a DNS answer
//!    that changes between check and connect (rebinding) cannot redirect it.
//!
//! Every request has a connect, first-byte and between-bytes timeout (the
//! guest may ask for shorter ones, never longer) and the response body is
//! capped at [`OutboundConfig::max_response_bytes`]. The invocation's own
//! deadline bounds all of it. Outbound HTTP is outside the invocation's
//! transaction: a retried event sends its requests again.

use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::uri::Scheme;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper_util::rt::TokioIo;
use ipnet::IpNet;
use tokio::net::TcpStream;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::model::HostPattern;

/// Operator settings for outbound HTTP.
#[derive(Debug, Clone)]
pub struct OutboundConfig {
    /// Private, loopback or link-local ranges apps may nevertheless reach
    /// (e.g. `10.0.0.0/8` for a site-local API, `127.0.0.0/8` in tests).
    /// Empty by default: only public addresses.
    pub allow_private: Vec<IpNet>,
    /// Longest wait for DNS plus the TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Longest wait for the response head once the request is sent.
    pub first_byte_timeout: Duration,
    /// Longest pause between two chunks of the response body.
    pub between_bytes_timeout: Duration,
    /// Largest response body an app may receive.
    pub max_response_bytes: u64,
    /// Most requests one invocation may send.
    pub max_requests: u32,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        Self {
            allow_private: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            first_byte_timeout: Duration::from_secs(10),
            between_bytes_timeout: Duration::from_secs(10),
            max_response_bytes: 1 << 20,
            max_requests: 16,
        }
    }
}

/// What every invocation shares: the settings and the TLS client config.
pub(crate) struct Outbound {
    config: OutboundConfig,
    tls: tokio_rustls::TlsConnector,
}

impl Outbound {
    pub(crate) fn new(config: OutboundConfig) -> Result<Self, rustls::Error> {
        Ok(Self { config, tls: tls_connector()? })
    }

    /// The shorter of the operator's limit and the guest's request.
    fn timeouts(&self, options: Option<RequestOptions>) -> (Duration, Duration, Duration) {
        let c = &self.config;
        let pick = |limit: Duration, asked: Option<Duration>| asked.map_or(limit, |a| a.min(limit));
        let o = options.unwrap_or_default();
        (
            pick(c.connect_timeout, o.connect_timeout),
            pick(c.first_byte_timeout, o.first_byte_timeout),
            pick(c.between_bytes_timeout, o.between_bytes_timeout),
        )
    }
}

/// The per-invocation hooks wasi:http calls: the policy, the app's allowed
/// hosts and the request count.
pub(crate) struct OutboundHooks {
    shared: Arc<Outbound>,
    hosts: Arc<[HostPattern]>,
    sent: u32,
    /// Refusals, for the invocation's logs (the guest only sees an error
    /// code; the author needs the reason). Shared with requests in flight.
    refusals: Arc<Mutex<Vec<String>>>,
}

impl OutboundHooks {
    pub(crate) fn new(shared: Arc<Outbound>, hosts: Arc<[HostPattern]>) -> Self {
        Self { shared, hosts, sent: 0, refusals: Arc::default() }
    }

    /// The refusals so far, oldest first.
    pub(crate) fn take_refusals(&self) -> Vec<String> {
        self.refusals.lock().map(|mut r| std::mem::take(&mut *r)).unwrap_or_default()
    }

    /// The checks that need no network: request count, scheme, host.
    fn admit(&mut self, uri: &http::Uri) -> Result<(), String> {
        if self.sent >= self.shared.config.max_requests {
            return Err(format!("more than {} requests in one invocation", self.shared.config.max_requests));
        }
        self.sent += 1;
        let (host, port) = host_port(uri).ok_or_else(|| format!("{uri}: no host, or a scheme other than http(s)"))?;
        if !self.hosts.iter().any(|p| p.matches(host, port)) {
            return Err(format!("{host}:{port} is not in the app's allowed_hosts"));
        }
        Ok(())
    }
}

type SendResult = Result<(http::Response<WasiBody>, Box<dyn Future<Output = Result<(), Error>> + Send>), Error>;

impl WasiHttpHooks for OutboundHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        let method = request.method().clone();
        let uri = request.uri().clone();
        if let Err(reason) = self.admit(&uri) {
            tracing::debug!(%method, %uri, %reason, "outbound request refused");
            note(&self.refusals, format!("http {method} {uri} refused: {reason}"));
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        let shared = self.shared.clone();
        let refusals = self.refusals.clone();
        Box::new(async move {
            let result = send(&shared, request, options).await;
            if let Err(Error::DestinationIpProhibited) = &result {
                let reason = "the host resolves to no public address (and none in the operator's allow_private)";
                note(&refusals, format!("http {method} {uri} refused: {reason}"));
            }
            match &result {
                Ok((response, _)) => tracing::debug!(%method, %uri, status = %response.status(), "outbound request"),
                Err(e) => tracing::debug!(%method, %uri, error = %e, "outbound request failed"),
            }
            result
        })
    }
}

fn note(refusals: &Mutex<Vec<String>>, line: String) {
    if let Ok(mut r) = refusals.lock() {
        r.push(line);
    }
}

/// The request's host (IPv6 bracketed) and port, for `http(s)` URIs.
fn host_port(uri: &http::Uri) -> Option<(&str, u16)> {
    let default = match uri.scheme() {
        Some(s) if *s == Scheme::HTTPS => 443,
        Some(s) if *s == Scheme::HTTP => 80,
        _ => return None,
    };
    let host = uri.host().filter(|h| !h.is_empty())?;
    Some((host, uri.port_u16().unwrap_or(default)))
}

/// Resolve, check, connect, (TLS), send, and cap the response.
async fn send(shared: &Outbound, mut request: http::Request<WasiBody>, options: Option<RequestOptions>) -> SendResult {
    let (connect_timeout, first_byte_timeout, between_bytes_timeout) = shared.timeouts(options);
    let (host, port) = host_port(request.uri()).ok_or(Error::HttpRequestUriInvalid)?;
    let host = host.to_owned();
    let tls = request.uri().scheme() == Some(&Scheme::HTTPS);

    let io = tokio::time::timeout(connect_timeout, async {
        let stream = connect(shared, &host, port).await?;
        let io: Box<dyn Stream> = if tls {
            let name = server_name(&host)?;
            Box::new(shared.tls.connect(name, stream).await.map_err(Error::Tls)?)
        } else {
            Box::new(stream)
        };
        hyper::client::conn::http1::handshake(TokioIo::new(io)).await.map_err(Error::from)
    })
    .await;
    let (mut sender, conn) = io.map_err(|_elapsed| Error::ConnectionTimeout)??;

    // The origin server wants the path only (the absolute form is for proxies).
    let path = request.uri().path_and_query().map_or("/", |p| p.as_str());
    *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;

    // `None` once the connection future has finished (it must not be
    // polled again).
    let mut conn = Some(Box::pin(conn));
    let mut response = Box::pin(tokio::time::timeout(first_byte_timeout, sender.send_request(request)));
    // Drive the connection while waiting for the head.
    let head = std::future::poll_fn(|cx| {
        if let Poll::Ready(r) = response.as_mut().poll(cx) {
            return Poll::Ready(r);
        }
        let Some(driver) = conn.as_mut() else { return Poll::Pending };
        match driver.as_mut().poll(cx) {
            Poll::Ready(Err(e)) => Poll::Ready(Ok(Err(e))),
            // The connection ended cleanly: the response (or the error for
            // its absence) is ready now or wakes us.
            Poll::Ready(Ok(())) => {
                conn = None;
                response.as_mut().poll(cx)
            }
            Poll::Pending => Poll::Pending,
        }
    })
    .await
    .map_err(|_elapsed| Error::ConnectionReadTimeout)?
    .map_err(Error::from)?;

    let cap = shared.config.max_response_bytes;
    if let Some(length) = content_length(&head).filter(|n| *n > cap) {
        tracing::debug!(length, cap, "outbound response over the size cap");
        return Err(Error::HttpResponseBodySize(Some(cap)));
    }
    let response = head.map(|incoming| CappedBody::new(incoming, cap, between_bytes_timeout).boxed_unsync());
    let io = async move {
        match conn {
            Some(driver) => driver.await.map_err(Error::from),
            None => Ok(()),
        }
    };
    Ok((response, Box::new(io)))
}

trait Stream: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// Resolve `host` and connect to the first permitted address that answers.
async fn connect(shared: &Outbound, host: &str, port: u16) -> Result<TcpStream, Error> {
    connect_guarded(&shared.config.allow_private, host, port).await.map_err(|refused| match refused {
        Refused::Dns(e) => Error::DnsError { rcode: Some(e), info_code: None },
        Refused::NotFound => Error::DestinationNotFound,
        Refused::Prohibited(addrs) => {
            tracing::debug!(host, ?addrs, "outbound request to a private address refused");
            Error::DestinationIpProhibited
        }
        Refused::Unavailable => Error::DestinationUnavailable,
        Refused::Io(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Error::ConnectionRefused,
        Refused::Io(e) => Error::Connect(e),
    })
}

/// Why [`connect_guarded`] made no connection.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The name did not resolve.
    Dns(String),
    /// It resolved to nothing.
    NotFound,
    /// Every address it resolved to is private and not allowed.
    Prohibited(Vec<SocketAddr>),
    /// No address to try.
    Unavailable,
    /// Every permitted address failed; the last error.
    Io(std::io::Error),
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refused::Dns(e) => write!(f, "DNS lookup failed: {e}"),
            Refused::NotFound => write!(f, "the name resolves to no address"),
            Refused::Prohibited(addrs) => write!(
                f,
                "resolves to no public address ({}) and none is in [outbound] allow_private",
                addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            ),
            Refused::Unavailable => write!(f, "no address to connect to"),
            Refused::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The outbound address guard, for apps and monitors alike: resolve
/// `host`, keep only public addresses and those inside `allow_private`,
/// and connect to the first that answers (the address checked is the
/// address connected to, so DNS rebinding cannot redirect it).
pub(crate) async fn connect_guarded(allow_private: &[IpNet], host: &str, port: u16) -> Result<TcpStream, Refused> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match literal.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((host, port)).await.map_err(|e| Refused::Dns(e.to_string()))?.collect(),
    };
    let permitted: Vec<SocketAddr> = addrs.iter().copied().filter(|a| permits(allow_private, a.ip())).collect();
    if permitted.is_empty() {
        return Err(if addrs.is_empty() { Refused::NotFound } else { Refused::Prohibited(addrs) });
    }
    let mut last = None;
    for addr in permitted {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Requests are small and latency-bound.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.map_or(Refused::Unavailable, Refused::Io))
}

/// Whether a connection to `ip` is allowed: public, or inside one of the
/// operator's `allow_private` ranges.
fn permits(allow_private: &[IpNet], ip: IpAddr) -> bool {
    is_public(ip) || allow_private.iter().any(|net| net.contains(&ip))
}

/// A TLS connector trusting Mozilla's roots (ring, no system store).
pub(crate) fn tls_connector() -> Result<tokio_rustls::TlsConnector, rustls::Error> {
    let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

pub(crate) fn server_name_of(host: &str) -> Option<rustls::pki_types::ServerName<'static>> {
    server_name(host).ok()
}

fn server_name(host: &str) -> Result<rustls::pki_types::ServerName<'static>, Error> {
    let literal = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = literal.parse::<IpAddr>() {
        return Ok(rustls::pki_types::ServerName::from(ip));
    }
    rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|_| Error::HttpRequestUriInvalid)
}

fn content_length<B>(response: &http::Response<B>) -> Option<u64> {
    response.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Whether `ip` is a public unicast address: not private, loopback,
/// link-local, shared (CGNAT), documentation, benchmarking, multicast,
/// reserved or unspecified. IPv4-mapped, NAT64 and 6to4 IPv6 addresses are
/// judged by the IPv4 address they carry.
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, c, _] = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || v4.is_multicast()
                || a == 0
                || (a == 100 && (b & 0xc0) == 64)
                || (a == 192 && b == 0 && c == 0)
                || (a == 198 && (b & 0xfe) == 18)
                || a >= 240)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let s = v6.segments();
            let embedded =
                |hi: u16, lo: u16| IpAddr::V4(std::net::Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo)));
            match s {
                // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address.
                [0x64, 0xff9b, 0, 0, 0, 0, hi, lo] => is_public(embedded(hi, lo)),
                [0x2002, hi, lo, ..] => is_public(embedded(hi, lo)),
                _ => {
                    !(v6.is_unspecified()
                        || v6.is_loopback()
                        || v6.is_multicast()
                        || v6.is_unique_local()
                        || v6.is_unicast_link_local()
                        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated)
                        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
                        || (s[0] == 0x2001 && s[1] == 0) // Teredo
                        || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard
                        || (s[0] == 0x64 && s[1] == 0xff9b) // local-use NAT64
                        || s[..6] == [0; 6]) // IPv4-compatible (deprecated)
                }
            }
        }
    }
}

/// A response body that stops at `cap` bytes and at a pause longer than
/// `pause` between chunks.
struct CappedBody {
    inner: hyper::body::Incoming,
    cap: u64,
    seen: u64,
    pause: Duration,
    timer: Pin<Box<tokio::time::Sleep>>,
}

impl CappedBody {
    fn new(inner: hyper::body::Incoming, cap: u64, pause: Duration) -> Self {
        Self { inner, cap, seen: 0, pause, timer: Box::pin(tokio::time::sleep(pause)) }
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen = this.seen.saturating_add(data.len() as u64);
                    if this.seen > this.cap {
                        return Poll::Ready(Some(Err(Error::HttpResponseBodySize(Some(this.cap)))));
                    }
                }
                let deadline = tokio::time::Instant::now() + this.pause;
                this.timer.as_mut().reset(deadline);
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(Error::from(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.timer.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Error::ConnectionReadTimeout))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn public(s: &str) -> bool {
        is_public(s.parse().unwrap())
    }

    #[test]
    fn private_and_special_addresses_are_not_public() {
        for ip in [
            "10.1.2.3",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.1.1",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "0.0.0.0",
            "0.1.2.3",
            "100.64.0.1",
            "100.127.255.254",
            "192.0.0.8",
            "192.0.2.1",
            "198.18.0.1",
            "198.19.255.1",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "240.0.0.1",
            "255.255.255.255",
            "::",
            "::1",
            "::ffff:127.0.0.1",
            "::ffff:10.0.0.1",
            "::127.0.0.1",
            "fc00::1",
            "fd12:3456::1",
            "fe80::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "2001:0:4136:e378::1",
            "100::1",
            "64:ff9b::a00:1",
            "64:ff9b:1::1",
            "2002:a00:1::1",
            "2002:7f00:1::1",
        ] {
            assert!(!public(ip), "{ip} must not count as public");
        }
    }

    #[test]
    fn ordinary_addresses_are_public() {
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "172.15.255.255",
            "172.32.0.1",
            "100.63.255.255",
            "100.128.0.1",
            "192.169.0.1",
            "198.17.255.255",
            "198.20.0.1",
            "223.255.255.254",
            "2606:4700:4700::1111",
            "2a00:1450:4001::200e",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
        ] {
            assert!(public(ip), "{ip} is public");
        }
    }

    #[test]
    fn the_operator_can_allow_private_ranges() {
        let allowed: Vec<IpNet> = vec!["127.0.0.0/8".parse().unwrap()];
        assert!(permits(&allowed, "127.0.0.1".parse().unwrap()));
        assert!(!permits(&allowed, "10.0.0.1".parse().unwrap()));
        assert!(permits(&allowed, "1.1.1.1".parse().unwrap()));
        assert!(!permits(&[], "127.0.0.1".parse().unwrap()));
    }

    #[test]
    fn guests_may_shorten_timeouts_but_not_lengthen_them() {
        let out = Outbound::new(OutboundConfig::default()).unwrap();
        let asked = RequestOptions {
            connect_timeout: Some(Duration::from_millis(100)),
            first_byte_timeout: Some(Duration::from_secs(3600)),
            between_bytes_timeout: None,
        };
        let (c, f, b) = out.timeouts(Some(asked));
        assert_eq!(c, Duration::from_millis(100));
        assert_eq!(f, Duration::from_secs(10));
        assert_eq!(b, Duration::from_secs(10));
    }

    #[test]
    fn requests_are_admitted_by_count_scheme_and_host() {
        let out = Arc::new(Outbound::new(OutboundConfig { max_requests: 2, ..Default::default() }).unwrap());
        let hosts: Arc<[HostPattern]> = Arc::from(vec![HostPattern::parse("api.example.com").unwrap()]);
        let mut hooks = OutboundHooks::new(out, hosts);
        let uri = |s: &str| s.parse::<http::Uri>().unwrap();
        assert!(hooks.admit(&uri("https://api.example.com/x")).is_ok());
        let err = hooks.admit(&uri("https://evil.example.com/x")).unwrap_err();
        assert!(err.contains("evil.example.com:443 is not in the app's allowed_hosts"), "{err}");
        let err = hooks.admit(&uri("https://api.example.com/y")).unwrap_err();
        assert!(err.contains("more than 2 requests"), "{err}");
    }
}

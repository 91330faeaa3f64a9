//! The TCP push listener: Device Cloud's TCP transport
//! (`../shared/MONITORS.md` §3).
//!
//! A client connects, sends a ConnectionRequest (organisation id and an
//! organisation API token, and the monitor id) within the handshake
//! timeout, gets a 10-byte ConnectionResponse, then PublishMessage frames,
//! one write each. A healthy session is never closed by us: no idle
//! timeout and no frames but publishes (python-devicecloud cannot
//! reconnect cleanly). Dead peers are found by TCP keepalive and by the
//! write timeout. A second session for the same monitor replaces the first
//! (newest wins).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

use super::Monitors;
use super::deliver::{self, Sink, SinkError};
use super::wire::{self, Ack, STATUS_BAD_REQUEST, STATUS_FORBIDDEN, STATUS_OK};
use crate::store::Transport;
use crate::tenants::hash_secret;

/// Acknowledgements buffered from one client before it is read no more
/// (a client acking faster than we publish is misbehaving).
const ACKS_BUFFERED: usize = 64;

/// Serve the push listener until `stop` resolves; with `tls`, every
/// connection is a TLS session first (Device Cloud's secure port, 3201).
pub async fn serve(
    monitors: Arc<Monitors>,
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    loop {
        let accepted = tokio::select! {
            () = &mut stop => return,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                let monitors = Arc::clone(&monitors);
                let tls = tls.clone();
                tokio::spawn(async move {
                    tune(&stream, peer);
                    let Some(tls) = tls else { return session(monitors, stream, peer).await };
                    let timeout = monitors.config().handshake_timeout;
                    match tokio::time::timeout(timeout, tls.accept(stream)).await {
                        Ok(Ok(stream)) => session(monitors, stream, peer).await,
                        Ok(Err(e)) => tracing::info!(%peer, error = %e, "push session refused: TLS handshake failed"),
                        Err(_) => tracing::info!(%peer, "push session closed: no TLS handshake in time"),
                    }
                });
            }
            Err(e) => {
                // Out of descriptors and the like: back off, never spin.
                tracing::warn!(error = %e, "push listener: accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

/// No Nagle delay (one frame per write), and TCP keepalive to find dead
/// peers without ever closing a healthy idle session.
fn tune(stream: &TcpStream, peer: SocketAddr) {
    let _ = stream.set_nodelay(true);
    let keepalive = socket2::TcpKeepalive::new()
        .with_time(Duration::from_secs(60))
        .with_interval(Duration::from_secs(10))
        .with_retries(6);
    if let Err(e) = socket2::SockRef::from(stream).set_tcp_keepalive(&keepalive) {
        tracing::debug!(%peer, error = %e, "push session: cannot enable TCP keepalive");
    }
}

/// A connection's stream: plain TCP or TLS over it.
trait Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send + 'static> Stream for T {}

async fn session<S: Stream>(monitors: Arc<Monitors>, mut stream: S, peer: SocketAddr) {
    let config = monitors.config().clone();
    let request = match tokio::time::timeout(config.handshake_timeout, wire::read_connection_request(&mut stream)).await
    {
        Ok(Ok(request)) => request,
        Ok(Err(e)) => {
            tracing::info!(%peer, error = %e, "push session refused: bad ConnectionRequest");
            let _ = respond(&mut stream, STATUS_BAD_REQUEST, config.write_timeout).await;
            return;
        }
        Err(_) => {
            tracing::info!(%peer, "push session closed: no ConnectionRequest in time");
            return;
        }
    };
    let rec = match authorize(&monitors, &request) {
        Ok(rec) => rec,
        Err(reason) => {
            tracing::info!(%peer, monitor = request.monitor_id, reason, "push session refused");
            let _ = respond(&mut stream, STATUS_FORBIDDEN, config.write_timeout).await;
            return;
        }
    };
    let Some((generation, stop)) = monitors.open_session(rec.id) else {
        tracing::warn!(%peer, monitor = rec.id, "push session refused: too many sessions");
        let _ = respond(&mut stream, STATUS_BAD_REQUEST, config.write_timeout).await;
        return;
    };
    // Live from here: read before the client is told it is connected, so
    // nothing it causes after the response is missed.
    let connected_at = monitors.head();
    // The response goes out alone, before any publish (a TLS client
    // would otherwise not see the publish until the next record).
    if respond(&mut stream, STATUS_OK, config.write_timeout).await.is_err() {
        if let Ok(Some(state)) = monitors.store.monitor_state(rec.id) {
            let _ = monitors.end_session(&rec, generation, &state).await;
        }
        return;
    }
    tracing::info!(%peer, monitor = rec.id, organisation = %rec.org, "push session open");
    let (reader, writer) = tokio::io::split(stream);
    let (acks, gone) = read_acks(reader);
    let mut sink = TcpSink {
        writer,
        acks,
        gone,
        block: 0,
        explicit: rec.spec.ack_explicit,
        json: rec.spec.format == "json",
        compressed: rec.spec.compressed(),
        timeout: config.write_timeout,
    };
    let end = deliver::connected(&monitors, &rec, generation, stop, &mut sink, connected_at).await;
    tracing::info!(%peer, monitor = rec.id, ?end, "push session closed");
}

/// The monitor a ConnectionRequest may stream: a TCP monitor of the
/// organisation named by the username, with that organisation's token (or
/// the operator's) as the password.
fn authorize(monitors: &Monitors, req: &wire::ConnectionRequest) -> Result<crate::store::MonitorRecord, &'static str> {
    let rec = monitors.store.monitor(req.monitor_id).ok().flatten().ok_or("no such monitor")?;
    if rec.org.to_string() != req.username {
        return Err("the username is not the monitor's organisation");
    }
    if rec.spec.transport != Transport::Tcp {
        return Err("not a TCP monitor");
    }
    let token = monitors.store.token(&hash_secret(&req.password)).ok().flatten().ok_or("invalid or revoked token")?;
    match token.organisation_id {
        Some(org) if org != rec.org => Err("the token is another organisation's"),
        _ => Ok(rec),
    }
}

async fn respond(stream: &mut (impl AsyncWrite + Unpin), status: u16, timeout: Duration) -> std::io::Result<()> {
    let write = async {
        stream.write_all(&wire::connection_response(status)).await?;
        stream.flush().await
    };
    tokio::time::timeout(timeout, write).await.map_err(|_| std::io::ErrorKind::TimedOut)?
}

/// Read the client's acks on their own task: they arrive on the returned
/// channel; the watch turns true (with the reason) when the peer is gone.
fn read_acks<S: Stream>(mut reader: ReadHalf<S>) -> (mpsc::Receiver<Ack>, watch::Receiver<Option<String>>) {
    let (tx, rx) = mpsc::channel(ACKS_BUFFERED);
    let (gone_tx, gone) = watch::channel(None);
    tokio::spawn(async move {
        let reason = loop {
            match wire::read_ack(&mut reader).await {
                Ok(ack) => {
                    // Full: the client acks what we never sent; drop it.
                    let _ = tx.try_send(ack);
                }
                Err(wire::WireError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    break "closed by the client".to_owned();
                }
                Err(e) => break e.to_string(),
            }
        };
        let _ = gone_tx.send(Some(reason));
    });
    (rx, gone)
}

struct TcpSink<S> {
    writer: WriteHalf<S>,
    acks: mpsc::Receiver<Ack>,
    gone: watch::Receiver<Option<String>>,
    block: u16,
    explicit: bool,
    json: bool,
    compressed: bool,
    timeout: Duration,
}

impl<S: Stream> Sink for TcpSink<S> {
    async fn send(&mut self, body: Vec<u8>, count: usize, _first: u64) -> Result<(), SinkError> {
        if let Some(reason) = self.gone.borrow().clone() {
            return Err(SinkError::Gone(reason));
        }
        // Block ids start at 1 and wrap within u16.
        self.block = self.block.checked_add(1).unwrap_or(1);
        let count = u16::try_from(count).unwrap_or(u16::MAX);
        let frame = wire::publish(self.block, count, self.compressed, self.json, &body);
        let write = async {
            self.writer.write_all(&frame).await?;
            self.writer.flush().await
        };
        match tokio::time::timeout(self.timeout, write).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(SinkError::Gone(e.to_string())),
            Err(_) => return Err(SinkError::Gone(format!("a write took longer than {:?}", self.timeout))),
        }
        if !self.explicit {
            return Ok(());
        }
        // Explicit acks: delivered once this block is acknowledged with 200.
        let block = self.block;
        deliver::acknowledged(&mut self.acks, self.timeout, |ack: &Ack| match ack.block == block {
            false => None,
            true if ack.status == STATUS_OK => Some(Ok(())),
            true => Some(Err(SinkError::Refused(format!("block {block} acknowledged with status {}", ack.status)))),
        })
        .await
    }

    async fn gone(&mut self) -> String {
        loop {
            if let Some(reason) = self.gone.borrow_and_update().clone() {
                return reason;
            }
            if self.gone.changed().await.is_err() {
                return "the reader stopped".into();
            }
        }
    }
}

//! The listener: accepts connections and bounds what a client can hold.
//!
//! - **Heads in time.** hyper's header read timeout (with a timer, without
//!   which it never fires) closes a connection whose request head has not
//!   arrived in time; hyper starts it whenever it waits for a head, so it
//!   is also the idle limit of a kept-alive connection. Bodies have their
//!   own timeout ([`super::ApiConfig::body_timeout`]).
//! - **A cap on connections.** At the cap, the connection that has waited
//!   longest without a request in progress (a slow or idle client) is
//!   closed to make room, as nginx reuses keep-alive connections; only
//!   when every connection is busy is the newcomer refused, with a 503.
//!   The cap stays below the descriptor limit, so `accept` does not run
//!   out of descriptors first; if it does anyway, the server sheds and
//!   backs off instead of spinning.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::io::ErrorKind;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use super::Api;

/// Connection limits of the listener.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// Longest wait for a complete request head, including the wait for
    /// the next request on a kept-alive connection.
    pub header_timeout: Duration,
    /// Connections open at once at most.
    pub max_connections: usize,
}

impl Default for ConnectionLimits {
    fn default() -> Self {
        // 10 s is generous for a head (a few hundred bytes) on any link
        // and short enough that idle clients do not pile up.
        Self { header_timeout: Duration::from_secs(10), max_connections: 1024 }
    }
}

/// What the listener knows of one open connection.
#[derive(Default)]
struct Conn {
    /// Requests being answered on it now.
    busy: AtomicUsize,
    /// Chosen to be closed to make room.
    shed: AtomicBool,
    close: tokio::sync::Notify,
}

/// Every open connection, oldest first.
struct Conns {
    max: usize,
    next: AtomicU64,
    open: Mutex<BTreeMap<u64, Arc<Conn>>>,
}

impl Conns {
    /// Register a new connection, making room if at the cap: `None` if
    /// every connection is busy.
    fn admit(&self) -> Option<(u64, Arc<Conn>)> {
        let mut open = self.open.lock().unwrap_or_else(|p| p.into_inner());
        let shedding = open.values().filter(|c| c.shed.load(Ordering::Relaxed)).count();
        if open.len() - shedding >= self.max && !shed_oldest_idle(&open) {
            return None;
        }
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let conn = Arc::new(Conn::default());
        open.insert(id, Arc::clone(&conn));
        Some((id, conn))
    }

    /// Close the oldest idle connection (descriptors ran out).
    fn shed(&self) -> bool {
        shed_oldest_idle(&self.open.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn closed(&self, id: u64) {
        self.open.lock().unwrap_or_else(|p| p.into_inner()).remove(&id);
    }
}

fn shed_oldest_idle(open: &BTreeMap<u64, Arc<Conn>>) -> bool {
    let idle = open.values().find(|c| c.busy.load(Ordering::Acquire) == 0 && !c.shed.load(Ordering::Relaxed));
    match idle {
        Some(c) => {
            c.shed.store(true, Ordering::Relaxed);
            c.close.notify_one();
            true
        }
        None => false,
    }
}

/// Counts a request in progress on its connection while alive.
struct Busy(Arc<Conn>);

impl Busy {
    fn new(conn: &Arc<Conn>) -> Self {
        conn.busy.fetch_add(1, Ordering::AcqRel);
        Self(Arc::clone(conn))
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.busy.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accept connections on `listener` until `shutdown` resolves, then stop
/// accepting and give open connections `grace` to finish.
pub async fn serve(
    listener: TcpListener,
    api: Arc<Api>,
    limits: ConnectionLimits,
    shutdown: impl std::future::Future<Output = ()>,
    grace: Duration,
) {
    // Graceful shutdown by hand: hyper-util's watcher cannot hold the
    // upgradeable connections a monitor stream needs.
    let (stopping, stop_rx) = tokio::sync::watch::channel(false);
    let conns = Arc::new(Conns { max: limits.max_connections.max(1), next: AtomicU64::new(0), open: Mutex::default() });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(limits.header_timeout);
    let mut last_warning: Option<Instant> = None;
    let refusing = Arc::new(tokio::sync::Semaphore::new(MAX_REFUSING));
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => accepted,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors: free one (the oldest idle client)
                // and back off; never spin on a failing accept.
                let exhausted = matches!(e.raw_os_error(), Some(23 | 24)) || e.kind() == ErrorKind::OutOfMemory;
                if exhausted {
                    conns.shed();
                }
                if last_warning.is_none_or(|t| t.elapsed() > Duration::from_secs(1)) {
                    tracing::warn!(error = %e, exhausted, "accept failed; backing off");
                    last_warning = Some(Instant::now());
                }
                tokio::time::sleep(Duration::from_millis(if exhausted { 10 } else { 50 })).await;
                continue;
            }
        };
        let Some((id, conn)) = conns.admit() else {
            // A bounded number of refusals at once; past that, a newcomer
            // is simply closed.
            if let Ok(permit) = Arc::clone(&refusing).try_acquire_owned() {
                let max = conns.max;
                tokio::spawn(async move {
                    refuse(stream, max).await;
                    drop(permit);
                });
            }
            continue;
        };
        let service = {
            let (api, conn) = (Arc::clone(&api), Arc::clone(&conn));
            hyper::service::service_fn(move |req| {
                let (api, busy) = (Arc::clone(&api), Busy::new(&conn));
                async move {
                    let response = api.handle(req, peer).await;
                    drop(busy);
                    Ok::<_, Infallible>(response)
                }
            })
        };
        let http = builder.serve_connection(hyper_util::rt::TokioIo::new(stream), service).with_upgrades();
        let (conns, mut stop) = (Arc::clone(&conns), stop_rx.clone());
        tokio::spawn(async move {
            tokio::pin!(http);
            let mut draining = false;
            loop {
                tokio::select! {
                    ended = http.as_mut() => {
                        if let Err(e) = ended {
                            tracing::debug!(error = %e, "connection ended with an error");
                        }
                        break;
                    }
                    () = conn.close.notified() => {
                        tracing::debug!(%peer, "idle connection closed to make room");
                        break;
                    }
                    _ = stop.changed(), if !draining => {
                        // Finish the request in progress, take no other.
                        draining = true;
                        http.as_mut().graceful_shutdown();
                    }
                }
            }
            conns.closed(id);
        });
    }
    let _ = stopping.send(true);
    let deadline = Instant::now() + grace;
    while !conns.open.lock().unwrap_or_else(|p| p.into_inner()).is_empty() {
        if Instant::now() >= deadline {
            tracing::warn!("connections still open after the grace period");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Refusals answered at once, at most: each holds its descriptor for at
/// most [`REFUSAL_TIME`].
const MAX_REFUSING: usize = 64;
/// Longest a refusal takes: write the 503, then read what the client sent
/// until it closes, so that closing is not a reset that loses the answer.
const REFUSAL_TIME: Duration = Duration::from_millis(500);

/// Answer a connection over the cap with a 503 and close it.
async fn refuse(mut stream: TcpStream, max: usize) {
    let body = format!(
        r#"{{"error":{{"code":"too_many_connections","message":"the server has its maximum of {max} connections open and all are busy; retry later"}}}}"#
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    let answered = async {
        stream.write_all(response.as_bytes()).await?;
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REFUSAL_TIME, answered).await;
}

//! WebSocket streaming: the native API's live transport for browsers and
//! scripts (`GET /v1/orgs/{org}/monitors/{id}/stream`).
//!
//! Server → client, one text frame per batch:
//! `{"block": n, "count": k, "first": "<seq>", "replay": bool, "document": {"Document": {"Msg": …}}}`
//! (XML monitors carry the document as a string). Client → server:
//! `{"ack": n}`; with `ack: explicit` only an acknowledged batch moves the
//! cursor, and an unacknowledged one is sent again on the next connection.
//! The cursor, replay and batching are the same as every transport's
//! ([`super::deliver`]). A ping goes out every 30 s while idle; a peer
//! that stops reading is closed by the write timeout.

use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use hyper_util::rt::TokioIo;
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use super::Monitors;
use super::deliver::{self, Sink, SinkError};
use crate::store::MonitorRecord;

/// Idle pings, so intermediaries keep the connection and a dead peer is
/// found by the write timeout.
const PING_EVERY: Duration = Duration::from_secs(30);
/// Largest frame a client may send (acks are tiny).
const MAX_CLIENT_FRAME: usize = 4096;
/// Acks buffered from one client.
const ACKS_BUFFERED: usize = 64;

type Ws = WebSocketStream<TokioIo<hyper::upgrade::Upgraded>>;

/// Run a stream session of `rec` on an upgraded connection, live from
/// the feed head `connected_at` (read before the upgrade was answered).
pub async fn serve(
    monitors: std::sync::Arc<Monitors>,
    rec: MonitorRecord,
    generation: u64,
    stop: watch::Receiver<bool>,
    upgraded: hyper::upgrade::Upgraded,
    connected_at: u64,
) {
    let config =
        WebSocketConfig::default().max_message_size(Some(MAX_CLIENT_FRAME)).max_frame_size(Some(MAX_CLIENT_FRAME));
    let ws = WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, Some(config)).await;
    let (writer, mut reader) = ws.split();
    let (acks, ack_rx) = mpsc::channel(ACKS_BUFFERED);
    let (gone_tx, gone) = watch::channel(None::<String>);
    tokio::spawn(async move {
        let reason = loop {
            match reader.next().await {
                Some(Ok(Message::Text(text))) => {
                    let ack = serde_json::from_str::<Value>(&text).ok().and_then(|v| v["ack"].as_u64());
                    match ack {
                        Some(block) => {
                            let _ = acks.try_send(block);
                        }
                        None => break format!("not an acknowledgement: {}", text.chars().take(80).collect::<String>()),
                    }
                }
                Some(Ok(Message::Close(_))) | None => break "closed by the client".to_owned(),
                Some(Ok(_)) => {}
                Some(Err(e)) => break e.to_string(),
            }
        };
        let _ = gone_tx.send(Some(reason));
    });
    let timeout = monitors.config.write_timeout;
    let mut sink = WsSink {
        writer,
        acks: ack_rx,
        gone,
        block: 0,
        explicit: rec.spec.ack_explicit,
        json: rec.spec.format == "json",
        timeout,
    };
    let end = deliver::connected(&monitors, &rec, generation, stop, &mut sink, connected_at).await;
    tracing::info!(monitor = rec.id, ?end, "stream session closed");
    let _ = tokio::time::timeout(Duration::from_secs(1), sink.writer.close()).await;
}

struct WsSink {
    writer: futures_util::stream::SplitSink<Ws, Message>,
    acks: mpsc::Receiver<u64>,
    gone: watch::Receiver<Option<String>>,
    block: u64,
    explicit: bool,
    json: bool,
    timeout: Duration,
}

impl WsSink {
    async fn write(&mut self, message: Message) -> Result<(), SinkError> {
        match tokio::time::timeout(self.timeout, self.writer.send(message)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(SinkError::Gone(e.to_string())),
            Err(_) => Err(SinkError::Gone(format!("a write took longer than {:?}", self.timeout))),
        }
    }
}

impl Sink for WsSink {
    async fn send(&mut self, body: Vec<u8>, count: usize, first: u64) -> Result<(), SinkError> {
        if let Some(reason) = self.gone.borrow().clone() {
            return Err(SinkError::Gone(reason));
        }
        self.block += 1;
        let document = if self.json {
            serde_json::from_slice::<Value>(&body).unwrap_or(Value::Null)
        } else {
            Value::String(String::from_utf8_lossy(&body).into_owned())
        };
        let replay =
            document["Document"]["Msg"].as_array().map_or(&document["Document"]["Msg"], |a| &a[0])["replay"] == true;
        let frame = json!({ "block": self.block, "count": count, "first": first.to_string(), "replay": replay, "document": document });
        self.write(Message::text(frame.to_string())).await?;
        if !self.explicit {
            return Ok(());
        }
        let block = self.block;
        deliver::acknowledged(&mut self.acks, self.timeout, |acked: &u64| (*acked == block).then_some(Ok(()))).await
    }

    async fn gone(&mut self) -> String {
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        loop {
            if let Some(reason) = self.gone.borrow_and_update().clone() {
                return reason;
            }
            tokio::select! {
                changed = self.gone.changed() => if changed.is_err() { return "the reader stopped".into() },
                _ = ping.tick() => if let Err(e) = self.write(Message::Ping(Vec::new().into())).await {
                    return e.to_string();
                },
            }
        }
    }
}

//! Monitors: what a client subscribed to and how it is pushed (the record,
//! changed only by the API), and how far delivery got (the state, moved by
//! the pushing side). Kept apart so that a delivery moving the cursor never
//! races an update of the configuration.

use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::queue::tx_error;
use super::{Store, StoreError, decode, encode};
use crate::model::OrgId;

/// How a monitor's batches travel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Transport {
    /// The client connects to the push listener (Device Cloud's TCP push).
    Tcp,
    /// Paddock PUTs or POSTs each batch to a URL.
    Http(HttpTarget),
    /// The client connects to the native API's WebSocket stream.
    Websocket,
}

impl Transport {
    /// Its Device Cloud name (`monTransportType`).
    pub fn name(&self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Http(_) => "http",
            Transport::Websocket => "websocket",
        }
    }
}

/// Where and how an HTTP monitor delivers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpTarget {
    /// The receiver's URL.
    pub url: String,
    /// `PUT` (Device Cloud's default) or `POST`.
    pub method: String,
    /// Basic credentials `user:password` (never shown back).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// Extra headers, `name: value`.
    #[serde(default)]
    pub headers: Vec<String>,
    /// Connect timeout, ms.
    pub connect_timeout_ms: u32,
    /// Response timeout, ms.
    pub response_timeout_ms: u32,
    /// A Standard Webhooks secret (`whsec_…`): batches are signed with it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_secret: Option<String>,
}

/// What a monitor subscribes to and how it is pushed: what a client sets
/// (both APIs build this).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorSpec {
    /// The topics, byte for byte as given (Device Cloud clients find a
    /// monitor by an exact match on this string).
    pub topic: String,
    /// How batches travel.
    pub transport: Transport,
    /// `json` or `xml`.
    pub format: String,
    /// `none`, `zlib` or `gzip` (an alias of `zlib`, as Device Cloud's).
    pub compression: String,
    /// Most events per batch, 1..=1000.
    pub batch_size: u32,
    /// Longest a batch waits for more events once it has one, seconds
    /// (0..=600).
    pub batch_duration_s: u32,
    /// Whether only an acknowledgement moves the cursor (`explicit`)
    /// rather than the write (`off`).
    pub ack_explicit: bool,
    /// Auto-replay: what happened while disconnected is pushed on connect.
    pub persistent: bool,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl MonitorSpec {
    /// Device Cloud's defaults: JSON, uncompressed, batches of 100 or
    /// 10 s, no acks, no replay.
    pub fn new(topic: String, transport: Transport) -> MonitorSpec {
        MonitorSpec {
            topic,
            transport,
            format: "json".into(),
            compression: "none".into(),
            batch_size: 100,
            batch_duration_s: 10,
            ack_explicit: false,
            persistent: false,
            description: None,
        }
    }

    /// Whether batches are zlib-compressed.
    pub fn compressed(&self) -> bool {
        self.compression != "none"
    }
}

/// A monitor as stored: its spec, and what is ours.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorRecord {
    /// Global u32 id (the TCP ConnectionRequest packs it in four bytes),
    /// never reused.
    pub id: u32,
    /// Whose events it sees (and nobody else's).
    pub org: OrgId,
    /// Created, Unix ms.
    pub created_ms: u64,
    /// What the client asked for.
    #[serde(flatten)]
    pub spec: MonitorSpec,
}

/// Device Cloud's monitor statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MonitorStatus {
    /// HTTP: trying to deliver.
    Connecting,
    /// Connected and pushing.
    Active,
    /// Not connected; nothing recorded for it.
    Inactive,
    /// Persistent, not connected: what happens is kept for replay.
    Suspended,
    /// HTTP: failed for too long; nothing attempted until reset.
    Disabled,
}

impl MonitorStatus {
    /// As Device Cloud spells it (`monStatus`).
    pub fn name(self) -> &'static str {
        match self {
            MonitorStatus::Connecting => "CONNECTING",
            MonitorStatus::Active => "ACTIVE",
            MonitorStatus::Inactive => "INACTIVE",
            MonitorStatus::Suspended => "SUSPENDED",
            MonitorStatus::Disabled => "DISABLED",
        }
    }
}

/// How far a monitor's delivery got.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MonitorState {
    /// Its status.
    pub status: MonitorStatus,
    /// The last feed sequence number delivered (the replay cursor).
    pub cursor: u64,
    /// Last successful connection, Unix ms.
    #[serde(default)]
    pub last_connect_ms: Option<u64>,
    /// Last batch delivered, Unix ms.
    #[serde(default)]
    pub last_sent_ms: Option<u64>,
    /// Since when delivery has failed without a success (HTTP), Unix ms.
    #[serde(default)]
    pub failing_since_ms: Option<u64>,
    /// Batches delivered.
    #[serde(default)]
    pub delivered: u64,
    /// Batches that failed.
    #[serde(default)]
    pub failed: u64,
}

impl MonitorState {
    /// A new monitor's state: not connected, its cursor at `cursor`.
    pub fn new(cursor: u64) -> MonitorState {
        MonitorState {
            status: MonitorStatus::Inactive,
            cursor,
            last_connect_ms: None,
            last_sent_ms: None,
            failing_since_ms: None,
            delivered: 0,
            failed: 0,
        }
    }
}

const NEXT_ID: &[u8] = b"next";

impl Store {
    /// Store a new monitor with the next id and a fresh state whose cursor
    /// is `cursor`, in one transaction; returns the id.
    pub fn create_monitor(&self, rec: MonitorRecord, cursor: u64) -> Result<u32, StoreError> {
        let t = self.t()?;
        self.gated(|| {
            (&t.monitor_ids, &t.monitors, &t.monitor_state)
                .transaction(|(ids, monitors, states)| {
                    let last = ids.get(NEXT_ID)?.and_then(|v| v.as_ref().try_into().ok()).map_or(0, u32::from_be_bytes);
                    let Some(id) = last.checked_add(1) else {
                        return Err(sled::transaction::ConflictableTransactionError::Abort(StoreError::Conflict(
                            "monitor ids are exhausted".into(),
                        )));
                    };
                    ids.insert(NEXT_ID, &id.to_be_bytes())?;
                    monitors.insert(&id.to_be_bytes(), encode(&MonitorRecord { id, ..rec.clone() }))?;
                    states.insert(&id.to_be_bytes(), encode(&MonitorState::new(cursor)))?;
                    Ok(id)
                })
                .map_err(tx_error)
        })
    }

    /// One monitor.
    pub fn monitor(&self, id: u32) -> Result<Option<MonitorRecord>, StoreError> {
        let t = self.t()?;
        t.monitors.get(id.to_be_bytes())?.map(|v| decode("monitor", &v)).transpose()
    }

    /// Every monitor (of `org` if given), by id.
    pub fn monitors(&self, org: Option<OrgId>) -> Result<Vec<MonitorRecord>, StoreError> {
        let t = self.t()?;
        let all = t.monitors.iter().map(|e| decode::<MonitorRecord>("monitor", &e?.1));
        all.filter(|m| m.as_ref().map_or(true, |m| org.is_none_or(|o| m.org == o))).collect()
    }

    /// Replace a monitor's configuration and reset its state (Device
    /// Cloud: any update resets the monitor) to `state`; false (and
    /// nothing written) if the monitor is gone.
    pub fn update_monitor(&self, rec: &MonitorRecord, state: &MonitorState) -> Result<bool, StoreError> {
        let t = self.t()?;
        let key = rec.id.to_be_bytes();
        self.gated(|| {
            (&t.monitors, &t.monitor_state)
                .transaction(|(monitors, states)| {
                    if monitors.get(key)?.is_none() {
                        return Ok(false);
                    }
                    monitors.insert(&key, encode(rec))?;
                    states.insert(&key, encode(state))?;
                    Ok(true)
                })
                .map_err(tx_error)
        })
    }

    /// Delete a monitor and its state; false if there was none.
    pub fn delete_monitor(&self, id: u32) -> Result<bool, StoreError> {
        let t = self.t()?;
        let key = id.to_be_bytes();
        self.gated(|| {
            (&t.monitors, &t.monitor_state)
                .transaction(|(monitors, states)| {
                    states.remove(&key)?;
                    Ok(monitors.remove(&key)?.is_some())
                })
                .map_err(tx_error)
        })
    }

    /// A monitor's delivery state.
    pub fn monitor_state(&self, id: u32) -> Result<Option<MonitorState>, StoreError> {
        let t = self.t()?;
        t.monitor_state.get(id.to_be_bytes())?.map(|v| decode("monitor state", &v)).transpose()
    }

    /// Record a monitor's delivery state, if the monitor still exists
    /// (made durable by the next flush: a cursor lost in a crash only
    /// means a batch is pushed again). Returns false if it is gone.
    pub fn put_monitor_state(&self, id: u32, state: &MonitorState) -> Result<bool, StoreError> {
        let t = self.t()?;
        let key = id.to_be_bytes();
        self.gated(|| {
            (&t.monitors, &t.monitor_state)
                .transaction(|(monitors, states)| {
                    if monitors.get(key)?.is_none() {
                        return Ok(false);
                    }
                    states.insert(&key, encode(state))?;
                    Ok(true)
                })
                .map_err(tx_error)
        })
    }
}

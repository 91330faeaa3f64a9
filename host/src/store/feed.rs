//! The monitor feed: what each commit made happen, per organisation, in
//! commit order.
//!
//! A commit of an organisation that has monitors writes one [`FeedEntry`]
//! per message, aggregate update and invocation summary **in the same
//! transaction** as the commit itself, so the feed holds exactly what is
//! stored: nothing a crash takes back, nothing stored but missing. Entries
//! are keyed by a store-wide increasing sequence number drawn by the one
//! writer, so key order is commit order. Monitors read the feed from their
//! cursor up to the durable head (see `monitors`); live delivery and replay
//! are the same read.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{Store, StoreError, decode, keys};
use crate::model::{AgentId, Aggregate, ChannelRef, Message, OrgId, well_known};

/// What kind of thing happened (the type key of a monitor message).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedKind {
    /// A channel message.
    Message,
    /// An aggregate update.
    Aggregate,
    /// A notification raised (a message on `notifications`).
    Notification,
    /// A connection change (a message on `doover_connection`).
    Connection,
    /// An invocation summary (a message on `dv-proc-inv-<install>`).
    Invocation,
    /// An agent created, updated or deleted.
    Agent,
}

impl FeedKind {
    /// Its name, as in topics and payloads.
    pub fn name(self) -> &'static str {
        match self {
            FeedKind::Message => "Message",
            FeedKind::Aggregate => "Aggregate",
            FeedKind::Notification => "Notification",
            FeedKind::Connection => "Connection",
            FeedKind::Invocation => "Invocation",
            FeedKind::Agent => "Agent",
        }
    }
}

/// The operation: Device Cloud's C, U and D.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FeedOp {
    /// Created (a message, a notification, an agent).
    Create,
    /// Updated (an aggregate, a connection, an agent).
    Update,
    /// Deleted (an agent).
    Delete,
}

/// One thing that happened, as stored in the feed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FeedEntry {
    /// Commit order (store-wide, increasing).
    pub seq: u64,
    /// Whose.
    pub org: OrgId,
    /// What kind.
    pub kind: FeedKind,
    /// Which operation.
    pub op: FeedOp,
    /// The agent it happened on.
    pub agent: AgentId,
    /// The channel, for messages and aggregates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<String>,
    /// The agent's group, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Commit time, Unix ms.
    pub at_ms: u64,
    /// The id that ends its topic (message id, event id, agent id).
    pub id: String,
    /// The object, under its type key in a monitor message.
    pub body: Value,
}

impl FeedEntry {
    /// The entry for a stored message: its kind follows its channel.
    pub(super) fn message(org: OrgId, group: Option<String>, m: &Message, seq: u64, at_ms: u64) -> FeedEntry {
        let name = m.channel.name.as_str();
        let (kind, op) = if name == well_known::NOTIFICATIONS {
            (FeedKind::Notification, FeedOp::Create)
        } else if name == well_known::CONNECTION {
            (FeedKind::Connection, FeedOp::Update)
        } else if name.starts_with(well_known::INVOCATION_PREFIX) {
            (FeedKind::Invocation, FeedOp::Create)
        } else {
            (FeedKind::Message, FeedOp::Create)
        };
        let body = match kind {
            FeedKind::Connection => json!({"agent_id": m.channel.agent_id, "connection": m.data, "at": at_ms}),
            FeedKind::Invocation | FeedKind::Notification => m.data.clone(),
            _ => serde_json::to_value(m).unwrap_or(Value::Null),
        };
        FeedEntry {
            seq,
            org,
            kind,
            op,
            agent: m.channel.agent_id,
            channel: Some(name.to_owned()),
            group,
            at_ms,
            id: m.id.to_string(),
            body,
        }
    }

    /// The entry for an aggregate update: the stored aggregate and the
    /// write that made it.
    pub(super) fn aggregate(
        org: OrgId,
        group: Option<String>,
        channel: &ChannelRef,
        stored: &Aggregate,
        request: &Value,
        seq: u64,
    ) -> FeedEntry {
        FeedEntry {
            seq,
            org,
            kind: FeedKind::Aggregate,
            op: FeedOp::Update,
            agent: channel.agent_id,
            channel: Some(channel.name.as_str().to_owned()),
            group,
            at_ms: stored.last_updated.unwrap_or_default(),
            id: seq.to_string(),
            body: json!({"channel": channel, "aggregate": stored, "request_data": request}),
        }
    }
}

impl FeedEntry {
    /// The entry for an agent created (or, if it `existed`, updated).
    pub(super) fn agent(org: OrgId, agent: &crate::model::Agent, existed: bool, seq: u64) -> FeedEntry {
        FeedEntry {
            seq,
            org,
            kind: FeedKind::Agent,
            op: if existed { FeedOp::Update } else { FeedOp::Create },
            agent: agent.id,
            channel: None,
            group: agent.group.clone(),
            at_ms: crate::model::now_ms(),
            id: agent.id.to_string(),
            body: serde_json::to_value(agent).unwrap_or(Value::Null),
        }
    }
}

impl FeedEntry {
    /// The entry for an invocation summary committed without a summary
    /// message: a failed attempt (retried or dead-lettered).
    pub(super) fn invocation(
        org: OrgId,
        agent: AgentId,
        s: &super::invocations::InvocationSummary,
        seq: u64,
    ) -> FeedEntry {
        let mut body = serde_json::to_value(s).unwrap_or(Value::Null);
        if let Some(map) = body.as_object_mut() {
            map.remove("logs");
        }
        FeedEntry {
            seq,
            org,
            kind: FeedKind::Invocation,
            op: FeedOp::Create,
            agent,
            channel: None,
            group: None,
            at_ms: s.at_ms,
            id: s.event_id.to_string(),
            body,
        }
    }
}

impl Store {
    /// Up to `limit` feed entries of `org` with `after < seq <= upto`, in
    /// commit order.
    pub fn feed(&self, org: OrgId, after: u64, upto: u64, limit: usize) -> Result<Vec<FeedEntry>, StoreError> {
        let t = self.t()?;
        let Some(from) = after.checked_add(1) else { return Ok(Vec::new()) };
        if from > upto {
            return Ok(Vec::new());
        }
        let range = keys::feed(org, from)..=keys::feed(org, upto);
        t.feed.range(range).take(limit).map(|e| decode("feed entry", &e?.1)).collect()
    }

    /// The newest sequence number of `org`'s feed, if it has entries.
    pub fn feed_last(&self, org: OrgId) -> Result<Option<u64>, StoreError> {
        let t = self.t()?;
        let last = t.feed.scan_prefix(org.get().to_be_bytes()).next_back().transpose()?;
        Ok(last.and_then(|(k, _)| k.get(8..16).and_then(|s| s.try_into().ok()).map(u64::from_be_bytes)))
    }

    /// A number greater than every feed sequence number drawn so far: what
    /// is durable after a flush is the feed up to below it.
    pub fn feed_mark(&self) -> Result<u64, StoreError> {
        next_seq(&self.t()?.db)
    }
}

/// The next feed sequence number: sled's increasing id plus one, so that
/// none is 0 (a cursor of 0 means nothing was delivered yet).
pub(super) fn next_seq(db: &sled::Db) -> Result<u64, StoreError> {
    Ok(db.generate_id()?.saturating_add(1))
}

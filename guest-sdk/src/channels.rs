//! Channel messages and aggregates.
//!
//! Writes go to the installation's own agent unless an agent is named (an
//! integration may write to any agent of its organisation). Writing to the
//! channel that raised the event is refused unless the manifest sets
//! `allow_invoking_channel`, which stops an app from triggering itself.
//!
//! ```no_run
//! # fn demo(tank: u64) -> Result<(), paddock_sdk::Error> {
//! use paddock_sdk::{channels, json};
//! channels::publish("level", &json!({"percent": 42.5}))?;
//! channels::publish_to(tank, "sensor_data", &json!({"distance_mm": 812}))?;
//! channels::patch_aggregate("summary", &json!({"today": {"max": 80}}))?;
//! let recent = channels::list_messages("sensor_data", 10)?;
//! let state = channels::fetch_aggregate("summary")?;
//! # Ok(()) }
//! ```

use serde::Serialize;

use crate::bindings::paddock::app::channels as wit;
use crate::event::{aggregate, message};
use crate::{Aggregate, Error, Message};

/// How an aggregate write combines with the current aggregate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteMode {
    /// Merge recursively; `null` deletes a key; arrays and scalars replace.
    Merge,
    /// Replace the whole aggregate.
    Replace,
    /// Replace these dotted subtrees (`a.b.c`), merge the rest.
    ReplacePaths(Vec<String>),
}

/// A message with every option.
#[derive(Debug, Clone, Default)]
pub struct NewMessage {
    /// Channel name.
    pub channel: String,
    /// Target agent; `None` for the installation's own agent.
    pub agent_id: Option<u64>,
    /// Payload: must serialize to a JSON object.
    pub data: serde_json::Value,
    /// Explicit timestamp, Unix ms.
    pub timestamp: Option<u64>,
    /// A client-chosen id, to make the write idempotent across retries.
    pub message_id: Option<u64>,
}

/// Publish `data` on the own agent's `channel`; returns the message id.
pub fn publish<T: Serialize + ?Sized>(channel: &str, data: &T) -> Result<u64, Error> {
    create_message(NewMessage { channel: channel.into(), data: serde_json::to_value(data)?, ..Default::default() })
}

/// Publish `data` on another agent's `channel`.
pub fn publish_to<T: Serialize + ?Sized>(agent_id: u64, channel: &str, data: &T) -> Result<u64, Error> {
    create_message(NewMessage {
        channel: channel.into(),
        agent_id: Some(agent_id),
        data: serde_json::to_value(data)?,
        ..Default::default()
    })
}

/// Create a message with every option.
pub fn create_message(msg: NewMessage) -> Result<u64, Error> {
    let msg = wit::NewMessage {
        channel: msg.channel,
        agent_id: msg.agent_id,
        data: msg.data.to_string(),
        timestamp: msg.timestamp,
        message_id: msg.message_id,
    };
    Ok(wit::create_message(&msg)?)
}

/// Merge `data` into the own agent's `channel` aggregate.
pub fn patch_aggregate<T: Serialize + ?Sized>(channel: &str, data: &T) -> Result<(), Error> {
    write_aggregate(None, channel, data, WriteMode::Merge)
}

/// Replace the own agent's `channel` aggregate with `data`.
pub fn put_aggregate<T: Serialize + ?Sized>(channel: &str, data: &T) -> Result<(), Error> {
    write_aggregate(None, channel, data, WriteMode::Replace)
}

/// Write an aggregate with every option.
pub fn write_aggregate<T: Serialize + ?Sized>(
    agent_id: Option<u64>,
    channel: &str,
    data: &T,
    mode: WriteMode,
) -> Result<(), Error> {
    let mode = match mode {
        WriteMode::Merge => wit::WriteMode::Merge,
        WriteMode::Replace => wit::WriteMode::Replace,
        WriteMode::ReplacePaths(p) => wit::WriteMode::ReplacePaths(p),
    };
    Ok(wit::update_aggregate(channel, agent_id, &serde_json::to_string(data)?, &mode)?)
}

/// The own agent's `channel` aggregate (including this invocation's writes).
pub fn fetch_aggregate(channel: &str) -> Result<Option<Aggregate>, Error> {
    fetch_aggregate_of(None, channel)
}

/// Any reachable agent's `channel` aggregate.
pub fn fetch_aggregate_of(agent_id: Option<u64>, channel: &str) -> Result<Option<Aggregate>, Error> {
    Ok(wit::fetch_aggregate(channel, agent_id)?.map(aggregate))
}

/// The newest `limit` messages on the own agent's `channel` (at most 100).
pub fn list_messages(channel: &str, limit: u32) -> Result<Vec<Message>, Error> {
    list_messages_of(None, channel, None, limit)
}

/// Messages on any reachable agent's channel, newest first, older than `before`.
pub fn list_messages_of(
    agent_id: Option<u64>,
    channel: &str,
    before: Option<u64>,
    limit: u32,
) -> Result<Vec<Message>, Error> {
    Ok(wit::list_messages(channel, agent_id, before, limit)?.into_iter().map(message).collect())
}

/// One message by id.
pub fn fetch_message(agent_id: Option<u64>, channel: &str, id: u64) -> Result<Option<Message>, Error> {
    Ok(wit::fetch_message(channel, agent_id, id)?.map(message))
}

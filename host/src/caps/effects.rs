//! The effect buffer: everything an invocation wants to write, in order.

use serde::Serialize;
use serde_json::Value;

use crate::model::{ChannelRef, Message, MessageId, WriteMode};

/// One aggregate write.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AggregateWrite {
    /// The channel written.
    pub channel: ChannelRef,
    /// The data (a patch for `merge`).
    pub data: Value,
    /// How it combines with the current aggregate.
    pub mode: WriteMode,
}

/// Everything an invocation wrote, in call order per kind. Tags, UI,
/// connection pings and notifications are expressed as messages and
/// aggregate writes on their well-known channels, so the engine commits just
/// two kinds of record.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Effects {
    /// Messages to create.
    pub messages: Vec<Message>,
    /// Aggregate writes to apply, in order.
    pub aggregates: Vec<AggregateWrite>,
    /// Payload bytes written so far (for the per-invocation cap).
    #[serde(skip)]
    pub bytes: usize,
}

impl Effects {
    /// Whether nothing was written.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty() && self.aggregates.is_empty()
    }

    /// Buffered messages on `channel`, newest first.
    pub fn messages_on<'a>(&'a self, channel: &'a ChannelRef) -> impl Iterator<Item = &'a Message> + 'a {
        self.messages.iter().rev().filter(move |m| &m.channel == channel)
    }

    /// Whether a message with `id` is already buffered.
    pub fn has_message(&self, id: MessageId) -> bool {
        self.messages.iter().any(|m| m.id == id)
    }
}

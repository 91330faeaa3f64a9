//! `channels`: messages and aggregates, with the invoking-channel guard,
//! reach checks, payload rules and per-invocation caps.

use serde_json::Value;

use super::{
    AggregateWrite, CapError, MAX_AGGREGATE_WRITES, MAX_EFFECT_BYTES, MAX_LIST_MESSAGES, MAX_MESSAGES,
    MAX_PAYLOAD_BYTES, Overlay, ReadError, Session,
};
use crate::model::{
    Aggregate, ChannelRef, Message, MessageId, WriteMode, apply_write_in_place, check_object, parse_object, well_known,
};

/// A message as the guest asks for it.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Channel name.
    pub channel: String,
    /// Target agent; none = own.
    pub agent_id: Option<u64>,
    /// JSON text of the payload object.
    pub data: String,
    /// Explicit timestamp, Unix ms.
    pub timestamp: Option<u64>,
    /// Client-chosen id.
    pub message_id: Option<u64>,
}

impl Session {
    /// `channels.create-message`.
    pub fn create_message(&mut self, msg: NewMessage) -> Result<MessageId, CapError> {
        check_size(msg.data.len())?;
        let channel = self.channel(&msg.channel, msg.agent_id)?;
        self.guard_reserved(&channel)?;
        self.guard_invoking(&channel)?;
        let data = parse_object(&msg.data)?;
        let id = match msg.message_id {
            Some(0) => return Err(CapError::Invalid("message-id 0 is not a valid id".into())),
            Some(id) if self.effects.has_message(MessageId::from(id)) => {
                return Err(CapError::Invalid(format!("message-id {id} was already created in this invocation")));
            }
            Some(id) => MessageId::from(id),
            None => MessageId::at(msg.timestamp.unwrap_or_else(|| self.now())),
        };
        self.push_message(channel, data, msg.timestamp, Some(id))
    }

    /// `channels.update-aggregate`.
    pub fn update_aggregate(
        &mut self,
        channel: &str,
        agent: Option<u64>,
        data: &str,
        mode: WriteMode,
    ) -> Result<(), CapError> {
        check_size(data.len())?;
        let channel = self.channel(channel, agent)?;
        self.guard_reserved(&channel)?;
        self.guard_invoking(&channel)?;
        if let WriteMode::ReplacePaths(paths) = &mode {
            check_paths(paths)?;
        }
        let data = parse_object(data)?;
        self.push_aggregate(channel, data, mode)
    }

    /// `channels.fetch-aggregate` (sees this invocation's writes).
    pub fn fetch_aggregate(&self, channel: &str, agent: Option<u64>) -> Result<Option<Aggregate>, CapError> {
        let channel = self.channel(channel, agent)?;
        Ok(self.aggregate_of(&channel)?)
    }

    /// `channels.list-messages`: newest first, this invocation's first.
    pub fn list_messages(
        &self,
        channel: &str,
        agent: Option<u64>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<Message>, CapError> {
        let channel = self.channel(channel, agent)?;
        let limit = (limit as usize).min(MAX_LIST_MESSAGES);
        let before = before.map(MessageId::from);
        let mut out: Vec<Message> =
            self.effects.messages_on(&channel).filter(|m| before.is_none_or(|b| m.id < b)).cloned().collect();
        out.extend(self.view.messages(&channel, before, limit)?);
        out.sort_by_key(|m| std::cmp::Reverse(m.id));
        out.truncate(limit);
        Ok(out)
    }

    /// `channels.fetch-message`.
    pub fn fetch_message(&self, channel: &str, agent: Option<u64>, id: u64) -> Result<Option<Message>, CapError> {
        let channel = self.channel(channel, agent)?;
        let id = MessageId::from(id);
        let buffered = self.effects.messages_on(&channel).find(|m| m.id == id).cloned();
        match buffered {
            Some(m) => Ok(Some(m)),
            None => Ok(self.view.message(&channel, id)?),
        }
    }

    /// The aggregate with this invocation's writes applied.
    pub(crate) fn aggregate_of(&self, channel: &ChannelRef) -> Result<Option<Aggregate>, ReadError> {
        self.with_aggregate(channel, |a| a.cloned())
    }

    /// Borrow the aggregate with this invocation's writes applied: read
    /// from the view the first time, then brought up to date with the
    /// writes buffered since the last read of it.
    pub(crate) fn with_aggregate<R>(
        &self,
        channel: &ChannelRef,
        f: impl FnOnce(Option<&Aggregate>) -> R,
    ) -> Result<R, ReadError> {
        let mut overlays = self.overlays.borrow_mut();
        let i = match overlays.iter().position(|o| &o.channel == channel) {
            Some(i) => i,
            None => {
                let aggregate = self.view.aggregate(channel)?;
                overlays.push(Overlay { channel: channel.clone(), aggregate, applied: 0 });
                overlays.len() - 1
            }
        };
        let overlay = &mut overlays[i];
        let writes = &self.effects.aggregates;
        if overlay.applied < writes.len() {
            let now = self.now();
            for w in writes[overlay.applied..].iter().filter(|w| w.channel == overlay.channel) {
                let agg = overlay
                    .aggregate
                    .get_or_insert_with(|| Aggregate { data: Value::Object(Default::default()), last_updated: None });
                apply_write_in_place(&mut agg.data, &w.data, &w.mode);
                agg.last_updated = Some(now);
            }
            overlay.applied = writes.len();
        }
        Ok(f(overlay.aggregate.as_ref()))
    }

    /// Buffer a message after the caller's policy checks; enforces the caps.
    pub(crate) fn push_message(
        &mut self,
        channel: ChannelRef,
        data: Value,
        timestamp: Option<u64>,
        id: Option<MessageId>,
    ) -> Result<MessageId, CapError> {
        if self.effects.messages.len() >= MAX_MESSAGES {
            return Err(CapError::Limit(format!("at most {MAX_MESSAGES} messages per invocation")));
        }
        self.charge(&data)?;
        let id = id.unwrap_or_else(|| MessageId::at(timestamp.unwrap_or_else(|| self.now())));
        let author_id = self.grant.agent_id;
        self.effects.messages.push(Message { id, author_id, channel, data, timestamp, attachments: None });
        Ok(id)
    }

    /// Buffer an aggregate write after the caller's policy checks. `data`
    /// is an object whose keys the caller has checked (the guest's through
    /// [`parse_object`] or [`check_value`](crate::model::check_value), the host's by construction).
    pub(crate) fn push_aggregate(&mut self, channel: ChannelRef, data: Value, mode: WriteMode) -> Result<(), CapError> {
        if self.effects.aggregates.len() >= MAX_AGGREGATE_WRITES {
            return Err(CapError::Limit(format!("at most {MAX_AGGREGATE_WRITES} aggregate writes per invocation")));
        }
        debug_assert!(check_object(&data).is_ok(), "unchecked aggregate write {data}");
        self.charge(&data)?;
        // Laid over the aggregate when it is next read (`with_aggregate`):
        // a write nobody reads back costs no read and no merge.
        self.effects.aggregates.push(AggregateWrite { channel, data, mode });
        Ok(())
    }

    fn charge(&mut self, data: &Value) -> Result<(), CapError> {
        self.charge_len(crate::model::serialized_len(data))
    }

    /// Count `size` bytes of writes against the per-invocation caps.
    pub(super) fn charge_len(&mut self, size: usize) -> Result<(), CapError> {
        check_size(size)?;
        if self.effects.bytes + size > MAX_EFFECT_BYTES {
            return Err(CapError::Limit(format!("at most {MAX_EFFECT_BYTES} bytes of writes per invocation")));
        }
        self.effects.bytes += size;
        Ok(())
    }

    /// Host-owned channels are written through their own capability only.
    fn guard_reserved(&self, channel: &ChannelRef) -> Result<(), CapError> {
        let name = channel.name.as_str();
        match name {
            _ if !channel.name.is_host_owned() => Ok(()),
            well_known::TAG_VALUES => {
                Err(CapError::Denied("write tags through the tags interface, not the tag_values channel".into()))
            }
            _ => Err(CapError::Denied(format!("{name} is written by the host only"))),
        }
    }
}

fn check_size(len: usize) -> Result<(), CapError> {
    if len > MAX_PAYLOAD_BYTES {
        return Err(CapError::Limit(format!("payload of {len} bytes exceeds {MAX_PAYLOAD_BYTES}")));
    }
    Ok(())
}

fn check_paths(paths: &[String]) -> Result<(), CapError> {
    for path in paths {
        if path.split('.').any(|k| !crate::model::is_valid_key(k)) {
            return Err(CapError::Invalid(format!("replace path {path:?} must be dot-separated valid keys")));
        }
    }
    Ok(())
}

//! Channels, messages, aggregates and agents.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::ids::{AgentId, MessageId};

/// Longest channel name accepted. Doover's own names (`dv-proc-inv-<id>`)
/// are far shorter; the cap keeps store keys small.
pub const MAX_CHANNEL_NAME: usize = 128;

/// Channel names Paddock itself reads or writes, with Doover's meanings.
pub mod well_known {
    /// Per-installation tags: `{app_key: {tag: value}}`.
    pub const TAG_VALUES: &str = "tag_values";
    /// UI schemas: `{state: {children: {app_key: schema}}}`.
    pub const UI_STATE: &str = "ui_state";
    /// UI commands from users: `{cmds: {...}}`.
    pub const UI_CMDS: &str = "ui_cmds";
    /// Connection pings and status.
    pub const CONNECTION: &str = "doover_connection";
    /// User notifications.
    pub const NOTIFICATIONS: &str = "notifications";
    /// Prefix of the channel that receives an installation's invocation summaries.
    pub const INVOCATION_PREFIX: &str = "dv-proc-inv-";
}

/// A channel name: 1 to [`MAX_CHANNEL_NAME`] characters from `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct ChannelName(String);

/// The text was not a valid channel name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid channel name {0:?}: use 1-128 characters from [A-Za-z0-9_-]")]
pub struct BadChannelName(pub String);

impl ChannelName {
    /// Validate `name`.
    pub fn new(name: impl Into<String>) -> Result<Self, BadChannelName> {
        let name = name.into();
        let ok = !name.is_empty()
            && name.len() <= MAX_CHANNEL_NAME
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok { Ok(Self(name)) } else { Err(BadChannelName(name)) }
    }

    /// A host-defined name from [`well_known`]. Not for guest or user input:
    /// a unit test checks that every `well_known` name is valid.
    pub fn from_static(name: &'static str) -> Self {
        Self(name.to_owned())
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether only the host writes this channel: `tag_values` (each app's
    /// tags, written through the tags capability) and `dv-proc-inv-*`
    /// (invocation summaries).
    pub fn is_host_owned(&self) -> bool {
        self.0 == well_known::TAG_VALUES || self.0.starts_with(well_known::INVOCATION_PREFIX)
    }
}

impl fmt::Display for ChannelName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ChannelName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::new(s).map_err(serde::de::Error::custom)
    }
}

/// A channel: a name on one agent.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ChannelRef {
    /// The owning agent.
    pub agent_id: AgentId,
    /// The channel's name.
    pub name: ChannelName,
}

/// A message on a channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Message {
    /// Time-ordered id.
    pub id: MessageId,
    /// The writer.
    pub author_id: AgentId,
    /// Where it was written.
    pub channel: ChannelRef,
    /// The payload, a JSON object.
    pub data: Value,
    /// Unix ms; the id's time unless given explicitly.
    #[serde(default)]
    pub timestamp: Option<u64>,
    /// Doover attachment descriptors, passed through untouched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attachments: Option<Value>,
}

impl Message {
    /// When the message was written, Unix ms.
    pub fn unix_ms(&self) -> u64 {
        self.timestamp.unwrap_or_else(|| self.id.0.unix_ms())
    }
}

/// A channel's current merged state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Aggregate {
    /// The state, a JSON object.
    pub data: Value,
    /// Unix ms of the last change.
    #[serde(default)]
    pub last_updated: Option<u64>,
}

/// A device, or an organisation's own agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Agent {
    /// Snowflake id.
    pub id: AgentId,
    /// Human name.
    pub name: String,
    /// Serial number, if any.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Group path, if any.
    #[serde(default)]
    pub group: Option<String>,
    /// Free-form metadata.
    #[serde(default = "empty_object")]
    pub metadata: Value,
}

fn empty_object() -> Value {
    Value::Object(Default::default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_are_checked() {
        assert!(ChannelName::new("dv-proc-inv-123").is_ok());
        assert!(ChannelName::new("").is_err());
        assert!(ChannelName::new("a.b").is_err());
        assert!(ChannelName::new("x".repeat(MAX_CHANNEL_NAME + 1)).is_err());
        assert!(serde_json::from_str::<ChannelName>("\"bad name\"").is_err());
        for name in [
            well_known::TAG_VALUES,
            well_known::UI_STATE,
            well_known::UI_CMDS,
            well_known::CONNECTION,
            well_known::NOTIFICATIONS,
            "dv-proc-inv-1",
        ] {
            assert!(ChannelName::new(name).is_ok(), "{name}");
        }
    }
}

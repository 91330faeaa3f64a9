//! The read view: the state an invocation reads through. The engine's store
//! implements it over sled; [`MemoryState`] implements it in memory for
//! `paddock invoke` and tests.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use crate::model::{Agent, AgentId, Aggregate, ChannelName, ChannelRef, Message, MessageId, OrgId, well_known};

/// A state read failed (storage or decoding). Never taken for "absent":
/// an invocation that meets one stops as a host error and is retried, so
/// nothing computed from a failed read is ever committed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("state read failed: {0}")]
pub struct ReadError(pub String);

/// The result of a state read.
pub type Read<T> = Result<T, ReadError>;

/// Read access to agents, aggregates and messages.
pub trait StateView: Send + Sync {
    /// The organisation an agent belongs to, if the agent exists.
    fn agent_org(&self, id: AgentId) -> Read<Option<OrgId>>;
    /// One agent.
    fn agent(&self, id: AgentId) -> Read<Option<Agent>>;
    /// An organisation's agents, at most `limit`.
    fn agents(&self, org: OrgId, limit: usize) -> Read<Vec<Agent>>;
    /// An organisation's agent with this serial number.
    fn agent_by_serial(&self, org: OrgId, serial: &str) -> Read<Option<Agent>>;
    /// A channel's aggregate.
    fn aggregate(&self, channel: &ChannelRef) -> Read<Option<Aggregate>>;
    /// Up to `limit` messages on a channel, newest first, older than `before`.
    fn messages(&self, channel: &ChannelRef, before: Option<MessageId>, limit: usize) -> Read<Vec<Message>>;
    /// One message.
    fn message(&self, channel: &ChannelRef, id: MessageId) -> Read<Option<Message>>;
}

/// In-memory state, loadable from a JSON state file.
#[derive(Debug, Clone, Default)]
pub struct MemoryState {
    agents: BTreeMap<AgentId, (OrgId, Agent)>,
    aggregates: BTreeMap<ChannelRef, Aggregate>,
    messages: BTreeMap<ChannelRef, BTreeMap<MessageId, Message>>,
}

/// The state file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Not JSON of the expected shape.
    #[error("state file is not valid: {0}")]
    Shape(String),
    /// A channel refers to an agent the file does not define.
    #[error("state file: channel {channel} is on agent {agent}, which is not in \"agents\"")]
    UnknownAgent {
        /// The agent id.
        agent: AgentId,
        /// The channel.
        channel: String,
    },
}

/// The state file format (see `docs/app-guide.md`).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StateFile {
    organisation_id: OrgId,
    #[serde(default)]
    agents: Vec<Agent>,
    /// agent id -> channel name -> channel contents.
    #[serde(default)]
    channels: BTreeMap<AgentId, BTreeMap<ChannelName, ChannelFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelFile {
    #[serde(default)]
    aggregate: Option<Value>,
    #[serde(default)]
    messages: Vec<MessageFile>,
}

#[derive(Deserialize)]
struct MessageFile {
    id: Option<MessageId>,
    #[serde(default)]
    author_id: Option<AgentId>,
    data: Value,
    #[serde(default)]
    timestamp: Option<u64>,
}

impl MemoryState {
    /// Parse a state file.
    pub fn from_json(text: &str) -> Result<Self, StateError> {
        let file: StateFile = serde_json::from_str(text).map_err(|e| StateError::Shape(e.to_string()))?;
        let mut state = MemoryState::default();
        for agent in file.agents {
            state.add_agent(file.organisation_id, agent);
        }
        for (agent_id, channels) in file.channels {
            for (name, ch) in channels {
                if !state.agents.contains_key(&agent_id) {
                    return Err(StateError::UnknownAgent { agent: agent_id, channel: name.to_string() });
                }
                let channel = ChannelRef { agent_id, name };
                if let Some(data) = ch.aggregate {
                    state.aggregates.insert(channel.clone(), Aggregate { data, last_updated: None });
                }
                for m in ch.messages {
                    let id = m.id.unwrap_or_else(|| MessageId::at(m.timestamp.unwrap_or_else(crate::model::now_ms)));
                    let msg = Message {
                        id,
                        author_id: m.author_id.unwrap_or(agent_id),
                        channel: channel.clone(),
                        data: m.data,
                        timestamp: m.timestamp,
                        attachments: None,
                    };
                    state.messages.entry(channel.clone()).or_default().insert(id, msg);
                }
            }
        }
        Ok(state)
    }

    /// Add an agent to an organisation.
    pub fn add_agent(&mut self, org: OrgId, agent: Agent) {
        self.agents.insert(agent.id, (org, agent));
    }

    /// Set a channel's aggregate.
    pub fn set_aggregate(&mut self, channel: ChannelRef, data: Value) {
        self.aggregates.insert(channel, Aggregate { data, last_updated: None });
    }

    /// Add a message.
    pub fn add_message(&mut self, message: Message) {
        self.messages.entry(message.channel.clone()).or_default().insert(message.id, message);
    }

    /// Set one installation's tags on an agent (in `tag_values`).
    pub fn set_tags(&mut self, agent: AgentId, app_key: &str, tags: Value) {
        let Ok(name) = ChannelName::new(well_known::TAG_VALUES) else {
            return;
        };
        let channel = ChannelRef { agent_id: agent, name };
        let mut data = self.aggregates.remove(&channel).map(|a| a.data).unwrap_or_else(|| serde_json::json!({}));
        if let Value::Object(map) = &mut data {
            map.insert(app_key.to_owned(), tags);
        }
        self.set_aggregate(channel, data);
    }

    /// The first organisation in the state (the one a state file declares).
    pub fn organisation(&self) -> Option<OrgId> {
        self.agents.values().next().map(|(org, _)| *org)
    }
}

impl StateView for MemoryState {
    fn agent_org(&self, id: AgentId) -> Read<Option<OrgId>> {
        Ok(self.agents.get(&id).map(|(org, _)| *org))
    }

    fn agent(&self, id: AgentId) -> Read<Option<Agent>> {
        Ok(self.agents.get(&id).map(|(_, a)| a.clone()))
    }

    fn agents(&self, org: OrgId, limit: usize) -> Read<Vec<Agent>> {
        Ok(self.agents.values().filter(|(o, _)| *o == org).map(|(_, a)| a.clone()).take(limit).collect())
    }

    fn agent_by_serial(&self, org: OrgId, serial: &str) -> Read<Option<Agent>> {
        Ok(self
            .agents
            .values()
            .find(|(o, a)| *o == org && a.serial_number.as_deref() == Some(serial))
            .map(|(_, a)| a.clone()))
    }

    fn aggregate(&self, channel: &ChannelRef) -> Read<Option<Aggregate>> {
        Ok(self.aggregates.get(channel).cloned())
    }

    fn messages(&self, channel: &ChannelRef, before: Option<MessageId>, limit: usize) -> Read<Vec<Message>> {
        let Some(msgs) = self.messages.get(channel) else {
            return Ok(Vec::new());
        };
        Ok(msgs.values().rev().filter(|m| before.is_none_or(|b| m.id < b)).take(limit).cloned().collect())
    }

    fn message(&self, channel: &ChannelRef, id: MessageId) -> Read<Option<Message>> {
        Ok(self.messages.get(channel).and_then(|m| m.get(&id)).cloned())
    }
}

/// A [`MemoryState`] that counts its aggregate and organisation reads and,
/// when `broken`, fails every aggregate read (tests of what reads what).
#[cfg(test)]
#[derive(Default)]
pub(crate) struct Probed {
    pub state: MemoryState,
    pub broken: bool,
    pub reads: std::sync::atomic::AtomicUsize,
}

#[cfg(test)]
impl Probed {
    fn count(&self) {
        self.reads.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Aggregate and organisation reads so far.
    pub fn reads(&self) -> usize {
        self.reads.load(std::sync::atomic::Ordering::Relaxed)
    }
}

#[cfg(test)]
impl StateView for Probed {
    fn agent_org(&self, id: AgentId) -> Read<Option<OrgId>> {
        self.count();
        self.state.agent_org(id)
    }
    fn agent(&self, id: AgentId) -> Read<Option<Agent>> {
        self.state.agent(id)
    }
    fn agents(&self, org: OrgId, limit: usize) -> Read<Vec<Agent>> {
        self.state.agents(org, limit)
    }
    fn agent_by_serial(&self, org: OrgId, serial: &str) -> Read<Option<Agent>> {
        self.state.agent_by_serial(org, serial)
    }
    fn aggregate(&self, channel: &ChannelRef) -> Read<Option<Aggregate>> {
        self.count();
        if self.broken {
            return Err(ReadError("the store cannot be read".into()));
        }
        self.state.aggregate(channel)
    }
    fn messages(&self, channel: &ChannelRef, before: Option<MessageId>, limit: usize) -> Read<Vec<Message>> {
        self.state.messages(channel, before, limit)
    }
    fn message(&self, channel: &ChannelRef, id: MessageId) -> Read<Option<Message>> {
        self.state.message(channel, id)
    }
}

//! Agents, aggregates and messages, and the [`StateView`] the runtime reads.

use serde::{Deserialize, Serialize};

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::queue::tx_error;
use super::{Store, StoreError, decode, encode, keys};
use crate::caps::{Read, StateView};
use crate::model::{Agent, AgentId, Aggregate, ChannelRef, Message, MessageId, OrgId};

/// An agent with its organisation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct AgentRecord {
    pub(super) organisation_id: OrgId,
    pub(super) agent: Agent,
}

impl Store {
    /// Create or replace an agent and its serial-number index entry, in one
    /// transaction (a crash must not leave the index pointing elsewhere).
    pub fn put_agent(&self, org: OrgId, agent: Agent) -> Result<(), StoreError> {
        self.put_agent_fed(org, agent, None)
    }

    /// [`Store::put_agent`], also writing the monitor feed entry numbered
    /// `feed_seq` (created or updated) in the same transaction.
    pub fn put_agent_fed(&self, org: OrgId, agent: Agent, feed_seq: Option<u64>) -> Result<(), StoreError> {
        let t = self.t()?;
        let record = AgentRecord { organisation_id: org, agent };
        let key = keys::agent(record.agent.id);
        self.gated(|| {
            (&t.agents, &t.serials, &t.feed)
                .transaction(|(agents, serials, feed)| {
                    let existed = agents.get(key)?;
                    if let Some(seq) = feed_seq {
                        let entry = super::feed::FeedEntry::agent(org, &record.agent, existed.is_some(), seq);
                        feed.insert(&keys::feed(org, seq), encode(&entry))?;
                    }
                    if let Some(bytes) = existed {
                        let old: AgentRecord = decode("agent", &bytes).map_err(ConflictableTransactionError::Abort)?;
                        if let Some(serial) = &old.agent.serial_number {
                            serials.remove(keys::serial(old.organisation_id, serial))?;
                        }
                    }
                    if let Some(serial) = &record.agent.serial_number {
                        serials.insert(keys::serial(org, serial), &key)?;
                    }
                    agents.insert(&key, encode(&record))?;
                    Ok(())
                })
                .map_err(tx_error)
        })
    }

    fn agent_record(&self, id: AgentId) -> Result<Option<AgentRecord>, StoreError> {
        let t = self.t()?;
        t.agents.get(keys::agent(id))?.map(|v| decode("agent", &v)).transpose()
    }

    /// A channel's aggregate.
    pub fn get_aggregate(&self, ch: &ChannelRef) -> Result<Option<Aggregate>, StoreError> {
        let t = self.t()?;
        t.aggregates.get(keys::aggregate(ch))?.map(|v| decode("aggregate", &v)).transpose()
    }

    /// Up to `limit` messages on a channel, newest first, older than `before`.
    pub fn list_messages(
        &self,
        ch: &ChannelRef,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<Message>, StoreError> {
        let t = self.t()?;
        let prefix = keys::channel_messages(ch);
        let end = match before {
            Some(id) => keys::message(ch, id),
            None => keys::message(ch, MessageId::from(u64::MAX)),
        };
        let mut out = Vec::new();
        for entry in t.messages.range(prefix..end).rev().take(limit) {
            let (_, v) = entry?;
            out.push(decode("message", &v)?);
        }
        // The exclusive upper bound skips an id of u64::MAX; no snowflake
        // reaches it before the year 2.2e6.
        Ok(out)
    }

    /// One message.
    pub fn get_message(&self, ch: &ChannelRef, id: MessageId) -> Result<Option<Message>, StoreError> {
        let t = self.t()?;
        t.messages.get(keys::message(ch, id))?.map(|v| decode("message", &v)).transpose()
    }

    /// The names of an agent's channels (those with an aggregate or a
    /// message), sorted.
    pub fn list_channels(&self, agent: AgentId) -> Result<Vec<String>, StoreError> {
        let t = self.t()?;
        let prefix = keys::agent(agent);
        let mut names = std::collections::BTreeSet::new();
        for entry in t.aggregates.scan_prefix(prefix) {
            let (k, _) = entry?;
            names.insert(String::from_utf8_lossy(&k[8..]).into_owned());
        }
        // Messages: jump from one channel's prefix to the next instead of
        // reading every message.
        let mut from = prefix.to_vec();
        while let Some(entry) = t.messages.range(from.clone()..).next() {
            let (k, _) = entry?;
            if !k.starts_with(&prefix) || k.len() < 9 {
                break;
            }
            let len = usize::from(k[8]);
            let Some(name) = k.get(9..9 + len) else { break };
            names.insert(String::from_utf8_lossy(name).into_owned());
            from = k[..9 + len].to_vec();
            from.extend_from_slice(&[0xFF; 9]);
        }
        Ok(names.into_iter().collect())
    }

    /// The agents of an organisation, at most `limit`.
    pub fn list_agents(&self, org: OrgId, limit: usize) -> Result<Vec<Agent>, StoreError> {
        let t = self.t()?;
        let mut out = Vec::new();
        // A full scan: organisations are few per host and the serial index
        // does not cover agents without serial numbers. An `org · agent`
        // index is the next step when this shows in profiles.
        for entry in t.agents.iter() {
            let (_, v) = entry?;
            let r: AgentRecord = decode("agent", &v)?;
            if r.organisation_id == org {
                out.push(r.agent);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }
}

/// A store error as the capability layer sees it: a failed read, never
/// "absent" (the invocation stops as a host error and is retried).
impl From<StoreError> for crate::caps::ReadError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store read failed during an invocation");
        crate::caps::ReadError(e.to_string())
    }
}

impl Store {
    /// The organisation an agent belongs to, if it exists.
    pub fn agent_org(&self, id: AgentId) -> Result<Option<OrgId>, StoreError> {
        Ok(self.agent_record(id)?.map(|r| r.organisation_id))
    }

    /// One agent.
    pub fn agent(&self, id: AgentId) -> Result<Option<Agent>, StoreError> {
        Ok(self.agent_record(id)?.map(|r| r.agent))
    }

    /// An organisation's agent with this serial number.
    pub fn agent_by_serial(&self, org: OrgId, serial: &str) -> Result<Option<Agent>, StoreError> {
        let t = self.t()?;
        let Some(id) = t.serials.get(keys::serial(org, serial))? else {
            return Ok(None);
        };
        let id: [u8; 8] = id
            .as_ref()
            .try_into()
            .map_err(|_| StoreError::Corrupt { what: "serial index", reason: "not an agent id".into() })?;
        self.agent(AgentId::from(u64::from_be_bytes(id)))
    }
}

impl StateView for Store {
    fn agent_org(&self, id: AgentId) -> Read<Option<OrgId>> {
        Ok(Store::agent_org(self, id)?)
    }

    fn agent(&self, id: AgentId) -> Read<Option<Agent>> {
        Ok(Store::agent(self, id)?)
    }

    fn agents(&self, org: OrgId, limit: usize) -> Read<Vec<Agent>> {
        Ok(self.list_agents(org, limit)?)
    }

    fn agent_by_serial(&self, org: OrgId, serial: &str) -> Read<Option<Agent>> {
        Ok(Store::agent_by_serial(self, org, serial)?)
    }

    fn aggregate(&self, channel: &ChannelRef) -> Read<Option<Aggregate>> {
        Ok(self.get_aggregate(channel)?)
    }

    fn messages(&self, channel: &ChannelRef, before: Option<MessageId>, limit: usize) -> Read<Vec<Message>> {
        Ok(self.list_messages(channel, before, limit)?)
    }

    fn message(&self, channel: &ChannelRef, id: MessageId) -> Read<Option<Message>> {
        Ok(self.get_message(channel, id)?)
    }
}

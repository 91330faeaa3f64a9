//! The state as it will be once earlier invocations' effects commit: what
//! a line's next event reads while the events before it in the same run
//! wait to commit with it.
//!
//! The engine runs a line's queued events back to back (a *run*) and
//! commits them together, each with its own acknowledgement. The second
//! event must see what the first wrote, exactly as if the first had
//! committed before it ran: [`Pending`] reads through the store and lays
//! the earlier effects over what it reads, the way the commit will apply
//! them (aggregate writes in order onto the stored aggregate; messages
//! added unless their id is taken).
//!
//! An aggregate the run wrote is read from the store once, when the run
//! first writes it, and kept with the run's writes applied; every other
//! read goes to the store. Whatever was accepted before an event of the
//! run was queued is therefore visible to it: the run reads nothing before
//! it starts, and it starts after its events were queued.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::effects::Effects;
use super::view::{Read, StateView};
use crate::model::{Agent, AgentId, Aggregate, ChannelRef, Message, MessageId, OrgId, apply_write_in_place};

/// `base` with a run's earlier effects laid over it.
pub struct Pending {
    base: Arc<dyn StateView>,
    laid: Mutex<Laid>,
}

/// What the run's earlier events wrote, as it will stand.
#[derive(Default)]
struct Laid {
    /// Aggregates the run wrote, with its writes applied.
    aggregates: HashMap<ChannelRef, Aggregate>,
    /// Messages the run created, oldest first.
    messages: Vec<Message>,
}

impl Pending {
    /// `base` as it is: nothing laid over it yet.
    pub fn new(base: Arc<dyn StateView>) -> Self {
        Self { base, laid: Mutex::default() }
    }

    /// Lay `effects`, committing at `at_ms`, over the view (after every
    /// effect laid before). Fails if the store cannot be read.
    pub fn lay(&self, effects: &Effects, at_ms: u64) -> Read<()> {
        let mut laid = self.laid();
        for w in &effects.aggregates {
            let aggregate = match laid.aggregates.remove(&w.channel) {
                Some(a) => a,
                None => self.base.aggregate(&w.channel)?.unwrap_or_else(|| Aggregate {
                    data: serde_json::Value::Object(Default::default()),
                    last_updated: None,
                }),
            };
            let mut aggregate = aggregate;
            apply_write_in_place(&mut aggregate.data, &w.data, &w.mode);
            aggregate.last_updated = Some(at_ms);
            laid.aggregates.insert(w.channel.clone(), aggregate);
        }
        laid.messages.extend(effects.messages.iter().cloned());
        Ok(())
    }

    fn laid(&self) -> MutexGuard<'_, Laid> {
        self.laid.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateView for Pending {
    fn agent_org(&self, id: AgentId) -> Read<Option<OrgId>> {
        self.base.agent_org(id)
    }

    fn agent(&self, id: AgentId) -> Read<Option<Agent>> {
        self.base.agent(id)
    }

    fn agents(&self, org: OrgId, limit: usize) -> Read<Vec<Agent>> {
        self.base.agents(org, limit)
    }

    fn agent_by_serial(&self, org: OrgId, serial: &str) -> Read<Option<Agent>> {
        self.base.agent_by_serial(org, serial)
    }

    fn aggregate(&self, channel: &ChannelRef) -> Read<Option<Aggregate>> {
        match self.laid().aggregates.get(channel) {
            Some(laid) => Ok(Some(laid.clone())),
            None => self.base.aggregate(channel),
        }
    }

    fn messages(&self, channel: &ChannelRef, before: Option<MessageId>, limit: usize) -> Read<Vec<Message>> {
        let mut out = self.base.messages(channel, before, limit)?;
        let laid = self.laid();
        let fresh = laid.messages.iter().filter(|m| &m.channel == channel && before.is_none_or(|b| m.id < b));
        // A stored message keeps its id; so does the first of the run's.
        let stored: std::collections::HashSet<MessageId> = out.iter().map(|m| m.id).collect();
        out.extend(fresh.filter(|m| !stored.contains(&m.id)).cloned());
        out.sort_by_key(|m| std::cmp::Reverse(m.id));
        out.dedup_by_key(|m| m.id);
        out.truncate(limit);
        Ok(out)
    }

    fn message(&self, channel: &ChannelRef, id: MessageId) -> Read<Option<Message>> {
        match self.base.message(channel, id)? {
            Some(stored) => Ok(Some(stored)),
            None => Ok(self.laid().messages.iter().find(|m| &m.channel == channel && m.id == id).cloned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::caps::{AggregateWrite, MemoryState};
    use crate::model::{ChannelName, WriteMode};

    fn ch(name: &str) -> ChannelRef {
        ChannelRef { agent_id: 1.into(), name: ChannelName::new(name).unwrap_or_else(|e| panic!("{e}")) }
    }

    fn message(name: &str, id: u64, n: i64) -> Message {
        let channel = ch(name);
        Message {
            id: id.into(),
            author_id: 1.into(),
            channel,
            data: json!({ "n": n }),
            timestamp: None,
            attachments: None,
        }
    }

    fn ns(messages: Read<Vec<Message>>) -> Vec<i64> {
        messages.unwrap_or_default().iter().filter_map(|m| m.data["n"].as_i64()).collect()
    }

    #[test]
    fn reads_see_laid_effects_as_the_commit_would_apply_them() {
        let mut state = MemoryState::default();
        state.set_aggregate(ch("levels"), json!({ "a": 1, "b": 2 }));
        state.set_aggregate(ch("other"), json!({ "x": 1 }));
        state.add_message(message("log", 10, 10));
        let view = Pending::new(Arc::new(state));
        let write = |data, mode| AggregateWrite { channel: ch("levels"), data, mode };
        let first = Effects {
            aggregates: vec![write(json!({ "b": null, "c": 3 }), WriteMode::Merge)],
            messages: vec![message("log", 20, 20), message("log", 10, 99)],
            bytes: 0,
        };
        let second = Effects {
            aggregates: vec![write(json!({ "d": 4 }), WriteMode::Merge)],
            messages: vec![message("log", 30, 30)],
            bytes: 0,
        };
        view.lay(&first, 5).unwrap_or_else(|e| panic!("{e}"));
        view.lay(&second, 6).unwrap_or_else(|e| panic!("{e}"));
        let levels = view.aggregate(&ch("levels")).unwrap_or_default().unwrap_or_else(|| panic!("laid"));
        assert_eq!(levels.data, json!({ "a": 1, "c": 3, "d": 4 }), "merged in order onto the stored aggregate");
        assert_eq!(levels.last_updated, Some(6));
        let other = view.aggregate(&ch("other")).unwrap_or_default().map(|a| a.data);
        assert_eq!(other, Some(json!({ "x": 1 })), "untouched channels read through");
        // Newest first; a stored id keeps its stored message.
        assert_eq!(ns(view.messages(&ch("log"), None, 10)), [30, 20, 10]);
        assert_eq!(ns(view.messages(&ch("log"), Some(30.into()), 1)), [20]);
        let ten = view.message(&ch("log"), 10.into()).unwrap_or_default().map(|m| m.data);
        assert_eq!(ten, Some(json!({ "n": 10 })));
        assert!(view.messages(&ch("levels"), None, 10).unwrap_or_default().is_empty());
    }
}

//! The state as it will be once earlier invocations' effects commit: what
//! a line's next event reads while the events before it in the same run
//! wait to commit with it.
//!
//! The engine runs a line's queued events back to back (a *run*) and
//! commits them as it goes, each with its own acknowledgement. The second
//! event must see what the first wrote, exactly as if the first had
//! committed before it ran: [`Pending`] lays the earlier effects over what
//! it reads, the way the commit will apply them (aggregate writes in order
//! onto the stored aggregate; messages added unless their id is taken).
//!
//! An aggregate or an agent's organisation is read from the store once per
//! run and kept (with the run's writes applied): the events of a run read
//! memory, not sled, whose reads wait while the writer commits. This
//! keeps causality: whatever was accepted before an event of the run was
//! queued is visible to it, because the run started after its events were
//! queued and read nothing before it started. A write accepted while the
//! run goes is seen by the next run (as if it had been accepted a moment
//! later); the commit applies the run's aggregate writes onto the
//! aggregate as stored then, so neither write is lost.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use super::effects::Effects;
use super::view::{Read, StateView};
use crate::model::{Agent, AgentId, Aggregate, ChannelRef, Message, MessageId, OrgId, apply_write_in_place};

/// `base` with a run's earlier effects laid over it, and what the run
/// read from it.
pub struct Pending {
    base: Arc<dyn StateView>,
    run: Mutex<Run>,
}

/// What the run read, with what its earlier events wrote applied.
#[derive(Default)]
struct Run {
    /// Aggregates read or written (`None`: there is none).
    aggregates: HashMap<ChannelRef, Option<Aggregate>>,
    /// Agents' organisations read (`None`: no such agent).
    orgs: HashMap<AgentId, Option<OrgId>>,
    /// Messages the run created, oldest first.
    messages: Vec<Message>,
}

impl Pending {
    /// `base` as it is: nothing read or laid over it yet.
    pub fn new(base: Arc<dyn StateView>) -> Self {
        Self { base, run: Mutex::default() }
    }

    /// Lay `effects`, committing at `at_ms`, over the view (after every
    /// effect laid before). Fails if the store cannot be read.
    pub fn lay(&self, effects: &Effects, at_ms: u64) -> Read<()> {
        let mut run = self.run();
        for w in &effects.aggregates {
            let stored = match run.aggregates.remove(&w.channel) {
                Some(seen) => seen,
                None => self.base.aggregate(&w.channel)?,
            };
            let mut aggregate = stored.unwrap_or_else(|| Aggregate {
                data: serde_json::Value::Object(Default::default()),
                last_updated: None,
            });
            apply_write_in_place(&mut aggregate.data, &w.data, &w.mode);
            aggregate.last_updated = Some(at_ms);
            run.aggregates.insert(w.channel.clone(), Some(aggregate));
        }
        run.messages.extend(effects.messages.iter().cloned());
        Ok(())
    }

    fn run(&self) -> MutexGuard<'_, Run> {
        self.run.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl StateView for Pending {
    fn agent_org(&self, id: AgentId) -> Read<Option<OrgId>> {
        if let Some(org) = self.run().orgs.get(&id) {
            return Ok(*org);
        }
        let org = self.base.agent_org(id)?;
        self.run().orgs.insert(id, org);
        Ok(org)
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
        if let Some(seen) = self.run().aggregates.get(channel) {
            return Ok(seen.clone());
        }
        let stored = self.base.aggregate(channel)?;
        self.run().aggregates.insert(channel.clone(), stored.clone());
        Ok(stored)
    }

    fn messages(&self, channel: &ChannelRef, before: Option<MessageId>, limit: usize) -> Read<Vec<Message>> {
        let mut out = self.base.messages(channel, before, limit)?;
        let run = self.run();
        let fresh = run.messages.iter().filter(|m| &m.channel == channel && before.is_none_or(|b| m.id < b));
        out.extend(fresh.cloned());
        // A stored message keeps its id, and so does the first of the
        // run's: the sort is stable and stored messages come first.
        out.sort_by_key(|m| std::cmp::Reverse(m.id));
        out.dedup_by_key(|m| m.id);
        out.truncate(limit);
        Ok(out)
    }

    fn message(&self, channel: &ChannelRef, id: MessageId) -> Read<Option<Message>> {
        match self.base.message(channel, id)? {
            Some(stored) => Ok(Some(stored)),
            None => Ok(self.run().messages.iter().find(|m| &m.channel == channel && m.id == id).cloned()),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::caps::view::Probed;
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

    #[test]
    fn a_run_reads_each_aggregate_and_organisation_from_the_store_once() {
        let mut state = MemoryState::default();
        state.set_aggregate(ch("levels"), json!({ "a": 1 }));
        let base = Arc::new(Probed { state, ..Probed::default() });
        let view = Pending::new(Arc::clone(&base) as Arc<dyn StateView>);
        for _ in 0..3 {
            assert!(view.aggregate(&ch("levels")).unwrap_or_default().is_some());
            assert!(view.aggregate(&ch("none")).unwrap_or_default().is_none());
            assert_eq!(view.agent_org(9.into()).unwrap_or_default(), None);
        }
        let write = AggregateWrite { channel: ch("levels"), data: json!({ "b": 2 }), mode: WriteMode::Merge };
        view.lay(&Effects { aggregates: vec![write], ..Effects::default() }, 7).unwrap_or_else(|e| panic!("{e}"));
        let levels = view.aggregate(&ch("levels")).unwrap_or_default().map(|a| a.data);
        assert_eq!(levels, Some(json!({ "a": 1, "b": 2 })), "the write applies to what the run read");
        assert_eq!(base.reads(), 3, "three reads from the store, each once");
    }
}

//! The commit: an invocation's effects, the events they trigger and the
//! acknowledgement of the event that ran, in one sled transaction.

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::invocations::InvocationSummary;
use super::queue::{QueuedEvent, insert_queued, remove_queued, tx_error};
use super::{Store, StoreError, decode, encode, keys};
use crate::caps::Effects;
use crate::model::{Aggregate, apply_write};

/// What one successful invocation (or one ingress request) commits.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// The event that ran: removed from the queue (its acknowledgement).
    /// `None` for ingress, which writes and enqueues without running anything.
    pub ack: Option<&'a QueuedEvent>,
    /// What the invocation wrote.
    pub effects: &'a Effects,
    /// Events the effects trigger, enqueued in the same transaction.
    pub downstream: &'a [QueuedEvent],
    /// The commit time, Unix ms (aggregates' `last_updated`).
    pub now_ms: u64,
    /// The invocation's summary, recorded in the same transaction.
    pub summary: Option<&'a InvocationSummary>,
}

impl Store {
    /// Apply a commit atomically: either all of it or none of it.
    ///
    /// - If the acknowledged event is no longer queued (acknowledged by an
    ///   earlier commit, or dead-lettered), nothing is applied and
    ///   [`StoreError::NotQueued`] is returned: effects land exactly once.
    /// - A message whose id already exists is skipped, so a client-chosen
    ///   message id makes a write idempotent.
    /// - Aggregate writes apply to the aggregate as stored at commit time.
    pub fn commit(&self, c: Commit<'_>) -> Result<(), StoreError> {
        // Sequence numbers are drawn before the transaction so that the
        // closure, which sled may run more than once on conflicts, writes
        // the same keys every time.
        let downstream: Vec<QueuedEvent> = c
            .downstream
            .iter()
            .map(|e| Ok(QueuedEvent { seq: self.db.generate_id()?, ..e.clone() }))
            .collect::<Result<_, StoreError>>()?;
        self.gated(|| {
            (&self.queue, &self.keyq, &self.aggregates, &self.messages, &self.agents, &self.invocations)
                .transaction(|(queue, keyq, aggregates, messages, agents, invocations)| {
                    let abort = ConflictableTransactionError::Abort;
                    if let Some(ack) = c.ack {
                        remove_queued(queue, keyq, ack)?;
                    }
                    for m in &c.effects.messages {
                        if agents.get(keys::agent(m.channel.agent_id))?.is_none() {
                            return Err(abort(StoreError::UnknownAgent(m.channel.agent_id)));
                        }
                        let key = keys::message(&m.channel, m.id);
                        if messages.get(&key)?.is_none() {
                            messages.insert(key, encode(m))?;
                        }
                    }
                    for w in &c.effects.aggregates {
                        if agents.get(keys::agent(w.channel.agent_id))?.is_none() {
                            return Err(abort(StoreError::UnknownAgent(w.channel.agent_id)));
                        }
                        let key = keys::aggregate(&w.channel);
                        let old = match aggregates.get(&key)? {
                            Some(bytes) => decode::<Aggregate>("aggregate", &bytes).map_err(abort)?.data,
                            None => serde_json::Value::Object(Default::default()),
                        };
                        let new = Aggregate { data: apply_write(&old, &w.data, &w.mode), last_updated: Some(c.now_ms) };
                        aggregates.insert(key, encode(&new))?;
                    }
                    for e in &downstream {
                        insert_queued(queue, keyq, e)?;
                    }
                    if let Some(s) = c.summary {
                        invocations.insert(&keys::invocation(s.install_id, s.event_id, s.attempt), encode(s))?;
                    }
                    Ok(())
                })
                .map_err(tx_error)
        })
    }
}

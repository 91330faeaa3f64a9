//! The commit: an invocation's effects, the events they trigger and the
//! acknowledgement of the event that ran, in one sled transaction.

use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::invocations::InvocationSummary;
use super::queue::{QueuedEvent, insert_queued, remove_queued, tx_error};
use super::{MAX_AGGREGATE_BYTES, Store, StoreError, decode, encode, keys};
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
    /// An idempotency key the write claims (e.g. a Standard Webhooks
    /// `webhook-id`): recorded in the same transaction, so a key counts as
    /// seen exactly when what it guards is stored. If the key is already
    /// held, nothing is applied and [`StoreError::Duplicate`] is returned.
    pub claim: Option<&'a Claim>,
}

/// An idempotency key claimed by a commit, held until `expires_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claim {
    /// A short name of ours for the key space (e.g. `wh<endpoint>`).
    pub scope: String,
    /// The client's key.
    pub key: String,
    /// When the claim lapses, Unix ms.
    pub expires_ms: u64,
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
    /// - An aggregate that would grow past [`MAX_AGGREGATE_BYTES`] makes
    ///   the whole commit a [`StoreError::AggregateTooLarge`].
    /// - A claimed idempotency key still held (unexpired at `now_ms`) makes
    ///   the whole commit a [`StoreError::Duplicate`].
    pub fn commit(&self, c: Commit<'_>) -> Result<(), StoreError> {
        let t = self.t()?;
        // Sequence numbers are drawn before the transaction so that the
        // closure, which sled may run more than once on conflicts, writes
        // the same keys every time.
        let downstream: Vec<QueuedEvent> = c
            .downstream
            .iter()
            .map(|e| Ok(QueuedEvent { seq: t.db.generate_id()?, ..e.clone() }))
            .collect::<Result<_, StoreError>>()?;
        self.gated(|| {
            (&t.queue, &t.keyq, &t.aggregates, &t.messages, &t.agents, &t.invocations, &t.seen)
                .transaction(|(queue, keyq, aggregates, messages, agents, invocations, seen)| {
                    let abort = ConflictableTransactionError::Abort;
                    if let Some(claim) = c.claim {
                        let key = keys::seen(&claim.scope, &claim.key);
                        if let Some(held) = seen.get(&key)?
                            && decode::<u64>("idempotency key", &held).map_err(abort)? > c.now_ms
                        {
                            return Err(abort(StoreError::Duplicate { key: claim.key.clone() }));
                        }
                        seen.insert(key, encode(&claim.expires_ms))?;
                    }
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
                        let bytes = encode(&new);
                        if bytes.len() > MAX_AGGREGATE_BYTES {
                            let channel = format!("{}/{}", w.channel.agent_id, w.channel.name);
                            let limit = MAX_AGGREGATE_BYTES;
                            return Err(abort(StoreError::AggregateTooLarge { channel, bytes: bytes.len(), limit }));
                        }
                        aggregates.insert(key, bytes)?;
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

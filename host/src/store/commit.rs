//! The commit: an invocation's effects, the events they trigger and the
//! acknowledgement of the event that ran, in one sled transaction.

use std::borrow::Cow;

use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionalTree};

use super::feed::FeedEntry;
use super::invocations::InvocationSummary;
use super::queue::{QueuedEvent, insert_queued, remove_queued, tx_error};
use super::state::AgentRecord;
use super::{MAX_AGGREGATE_BYTES, Store, StoreError, decode, encode, keys};
use crate::caps::Effects;
use crate::model::{Aggregate, apply_write_in_place};

/// What one successful invocation (or one ingress request) commits.
#[derive(Debug, Clone, Copy)]
pub struct Commit<'a> {
    /// The event that ran: removed from the queue (its acknowledgement).
    /// `None` for ingress, which writes and enqueues without running anything.
    pub ack: Option<&'a QueuedEvent>,
    /// What the invocation wrote.
    pub effects: &'a Effects,
    /// Events the effects trigger, enqueued in the same transaction, each
    /// at the end of its line.
    pub downstream: &'a [QueuedEvent],
    /// Whether `downstream` already holds its places in their lines
    /// ([`Store::place`]); else the commit draws them, on copies.
    pub placed: bool,
    /// The commit time, Unix ms (aggregates' `last_updated`).
    pub now_ms: u64,
    /// The invocation's summary, recorded in the same transaction.
    pub summary: Option<&'a InvocationSummary>,
    /// An idempotency key the write claims (e.g. a Standard Webhooks
    /// `webhook-id`): recorded in the same transaction, so a key counts as
    /// seen exactly when what it guards is stored. If the key is already
    /// held, nothing is applied and [`StoreError::Duplicate`] is returned.
    pub claim: Option<&'a Claim>,
    /// Whether to write the commit's messages and aggregate updates to the
    /// monitor feed (its organisation has monitors), in the same
    /// transaction.
    pub feed: bool,
    /// Apply only if the commit before it in the batch was applied (else
    /// [`StoreError::RunBroken`]): the commits of one line's run, each of
    /// which ran on the state its predecessors' effects left.
    pub chained: bool,
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

impl<'a> Commit<'a> {
    /// A commit of `effects` alone at `now_ms`, as ingress writes them: no
    /// acknowledgement, nothing downstream, no summary or claim, not on the
    /// feed, not chained. Set the rest with struct update syntax.
    pub fn of(effects: &'a Effects, now_ms: u64) -> Commit<'a> {
        Commit {
            ack: None,
            effects,
            downstream: &[],
            placed: false,
            now_ms,
            summary: None,
            claim: None,
            feed: false,
            chained: false,
        }
    }
}

impl Store {
    /// Give each event its place at the end of its line (its sequence
    /// number), for a [`Commit`] whose downstream is `placed`.
    pub fn place(&self, events: &mut [QueuedEvent]) -> Result<(), StoreError> {
        let t = self.t()?;
        for e in events {
            e.seq = t.db.generate_id()?;
        }
        Ok(())
    }

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
        self.commit_batch(&[c])?.pop().unwrap_or(Ok(()))
    }

    /// Apply many commits as **one** atomic write (one sled transaction),
    /// each with [`Store::commit`]'s rules and its own verdict: a commit
    /// that is refused (not queued, duplicate, unknown agent, too large)
    /// writes nothing and does not stop the others. Each sees the commits
    /// before it in the batch, as if they had been applied one by one.
    ///
    /// The outer error is the storage failing: then nothing was applied.
    pub fn commit_batch(&self, commits: &[Commit<'_>]) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let t = self.t()?;
        // Places are drawn before the transaction so that the closure,
        // which sled may run more than once on conflicts, writes the same
        // keys every time.
        let downstream: Vec<Cow<'_, [QueuedEvent]>> = commits
            .iter()
            .map(|c| {
                if c.placed {
                    return Ok(Cow::Borrowed(c.downstream));
                }
                let mut copies = c.downstream.to_vec();
                self.place(&mut copies)?;
                Ok(Cow::Owned(copies))
            })
            .collect::<Result<_, StoreError>>()?;
        // Feed sequence numbers likewise, in commit order.
        let feed_seqs: Vec<Vec<u64>> = commits
            .iter()
            .map(|c| {
                let n = if c.feed { c.effects.messages.len() + c.effects.aggregates.len() } else { 0 };
                (0..n).map(|_| super::feed::next_seq(&t.db)).collect()
            })
            .collect::<Result<_, StoreError>>()?;
        let verdicts = self.gated(|| {
            (&t.queue, &t.keyq, &t.aggregates, &t.messages, &t.agents, &t.invocations, &t.seen, &t.feed)
                .transaction(|(queue, keyq, aggregates, messages, agents, invocations, seen, feed)| {
                    let trees = Tx { queue, keyq, aggregates, messages, agents, invocations, seen, feed };
                    let mut verdicts = Vec::with_capacity(commits.len());
                    for ((c, downstream), seqs) in commits.iter().zip(&downstream).zip(&feed_seqs) {
                        if c.chained && verdicts.last().is_some_and(Result::is_err) {
                            verdicts.push(Err(StoreError::RunBroken));
                            continue;
                        }
                        let verdict = match trees.check(c)? {
                            Ok(aggregates) => trees.apply(c, aggregates, downstream, seqs).map(Ok)?,
                            Err(refused) => Err(refused),
                        };
                        verdicts.push(verdict);
                    }
                    Ok(verdicts)
                })
                .map_err(tx_error)
        })?;
        // The lines' heads, as the applied commits left them.
        let mut heads = t.heads();
        for ((c, downstream), verdict) in commits.iter().zip(&downstream).zip(&verdicts) {
            if verdict.is_err() {
                continue;
            }
            if let Some(ack) = c.ack {
                heads.removed(ack, &t.keyq);
            }
            downstream.iter().for_each(|e| heads.queued(e));
        }
        Ok(verdicts)
    }
}

/// The trees of one commit transaction.
struct Tx<'a> {
    queue: &'a TransactionalTree,
    keyq: &'a TransactionalTree,
    aggregates: &'a TransactionalTree,
    messages: &'a TransactionalTree,
    agents: &'a TransactionalTree,
    invocations: &'a TransactionalTree,
    seen: &'a TransactionalTree,
    feed: &'a TransactionalTree,
}

/// A step of the transaction: a storage error aborts it all.
type Step<T> = Result<T, ConflictableTransactionError<StoreError>>;

/// The aggregates a commit would store: key, encoded value and the value
/// itself (for the feed), in order.
type Stored = Vec<(Vec<u8>, Vec<u8>, Aggregate)>;

impl Tx<'_> {
    /// Every rule of the commit, before any of its writes: the refusal, or
    /// the aggregates it would store. A stored record this build cannot
    /// read (an aggregate, a claim, an agent) refuses this commit alone as
    /// [`StoreError::Corrupt`]: it must not abort the transaction, which
    /// holds other commits (other tenants' among them).
    fn check(&self, c: &Commit<'_>) -> Step<Result<Stored, StoreError>> {
        if let Some(claim) = c.claim
            && let Some(held) = self.seen.get(keys::seen(&claim.scope, &claim.key))?
        {
            match decode::<u64>("idempotency key", &held) {
                Ok(expires) if expires > c.now_ms => {
                    return Ok(Err(StoreError::Duplicate { key: claim.key.clone() }));
                }
                Ok(_) => {}
                Err(unreadable) => return Ok(Err(unreadable)),
            }
        }
        if let Some(ack) = c.ack
            && self.queue.get(keys::queued(ack.organisation_id, ack.due_ms, ack.id))?.is_none()
        {
            return Ok(Err(StoreError::NotQueued(ack.id)));
        }
        let agents = c.effects.messages.iter().map(|m| m.channel.agent_id);
        for agent in agents.chain(c.effects.aggregates.iter().map(|w| w.channel.agent_id)) {
            let Some(bytes) = self.agents.get(keys::agent(agent))? else {
                return Ok(Err(StoreError::UnknownAgent(agent)));
            };
            // The feed names each agent's organisation and group.
            if c.feed
                && let Err(unreadable) = decode::<AgentRecord>("agent", &bytes)
            {
                return Ok(Err(unreadable));
            }
        }
        // Writes to one aggregate apply in order, each on the one before.
        let mut merged: Vec<(Vec<u8>, Aggregate)> = Vec::new();
        for w in &c.effects.aggregates {
            let key = keys::aggregate(&w.channel);
            let mut data = match merged.iter().rposition(|(k, _)| *k == key) {
                Some(i) => merged[i].1.data.clone(),
                None => match self.aggregates.get(&key)? {
                    Some(bytes) => match decode::<Aggregate>("aggregate", &bytes) {
                        Ok(stored) => stored.data,
                        Err(unreadable) => return Ok(Err(unreadable)),
                    },
                    None => serde_json::Value::Object(Default::default()),
                },
            };
            // Merged in place: the value is this write's own copy.
            apply_write_in_place(&mut data, &w.data, &w.mode);
            merged.push((key, Aggregate { data, last_updated: Some(c.now_ms) }));
        }
        let mut encoded = Vec::with_capacity(merged.len());
        for ((key, agg), w) in merged.into_iter().zip(&c.effects.aggregates) {
            let bytes = encode(&agg);
            if bytes.len() > MAX_AGGREGATE_BYTES {
                let channel = format!("{}/{}", w.channel.agent_id, w.channel.name);
                return Ok(Err(StoreError::AggregateTooLarge {
                    channel,
                    bytes: bytes.len(),
                    limit: MAX_AGGREGATE_BYTES,
                }));
            }
            encoded.push((key, bytes, agg));
        }
        Ok(Ok(encoded))
    }

    /// The commit's writes, once [`Tx::check`] passed.
    fn apply(&self, c: &Commit<'_>, aggregates: Stored, downstream: &[QueuedEvent], feed: &[u64]) -> Step<()> {
        if !feed.is_empty() {
            self.feed_entries(c, &aggregates, feed)?;
        }
        if let Some(claim) = c.claim {
            self.seen.insert(keys::seen(&claim.scope, &claim.key), encode(&claim.expires_ms))?;
        }
        if let Some(ack) = c.ack {
            remove_queued(self.queue, self.keyq, ack)?;
        }
        for m in &c.effects.messages {
            let key = keys::message(&m.channel, m.id);
            if self.messages.get(&key)?.is_none() {
                self.messages.insert(key, encode(m))?;
            }
        }
        for (key, bytes, _) in aggregates {
            self.aggregates.insert(key, bytes)?;
        }
        for e in downstream {
            insert_queued(self.queue, self.keyq, e)?;
        }
        if let Some(s) = c.summary {
            self.invocations.insert(&keys::invocation(s.install_id, s.event_id, s.attempt), encode(s))?;
        }
        Ok(())
    }

    /// The commit's feed entries, numbered `seqs` in order: its messages,
    /// then its aggregate updates (as stored).
    fn feed_entries(&self, c: &Commit<'_>, aggregates: &Stored, seqs: &[u64]) -> Step<()> {
        let abort = ConflictableTransactionError::Abort;
        let mut seqs = seqs.iter().copied();
        let owner = |agent: crate::model::AgentId| -> Step<(crate::model::OrgId, Option<String>)> {
            let bytes = self.agents.get(keys::agent(agent))?.ok_or(abort(StoreError::UnknownAgent(agent)))?;
            let rec: AgentRecord = decode("agent", &bytes).map_err(abort)?;
            Ok((rec.organisation_id, rec.agent.group))
        };
        for m in &c.effects.messages {
            let (Some(seq), (org, group)) = (seqs.next(), owner(m.channel.agent_id)?) else { break };
            let entry = FeedEntry::message(org, group, m, seq, c.now_ms);
            self.feed.insert(&keys::feed(org, seq), encode(&entry))?;
        }
        for ((_, _, stored), w) in aggregates.iter().zip(&c.effects.aggregates) {
            let (Some(seq), (org, group)) = (seqs.next(), owner(w.channel.agent_id)?) else { break };
            let entry = FeedEntry::aggregate(org, group, &w.channel, stored, &w.data, seq);
            self.feed.insert(&keys::feed(org, seq), encode(&entry))?;
        }
        Ok(())
    }
}

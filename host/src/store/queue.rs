//! The durable event queue and the dead letters.

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::{ConflictableTransactionError, TransactionError, TransactionalTree};

use super::unreadable::UnreadableHead;
use super::{Store, StoreError, decode, encode, keys};
use crate::model::{AgentId, EventEnvelope, EventId, InstallId, OrgId};

/// An event bound for one installation, as it waits in the queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueuedEvent {
    /// Stable across retries.
    pub id: EventId,
    /// The tenant (the queue is partitioned by it).
    #[serde(default)]
    pub organisation_id: OrgId,
    /// The installation to run.
    pub install_id: InstallId,
    /// With `install_id`, the ordering key: events for one (installation,
    /// agent) run one at a time, in order.
    pub agent_id: AgentId,
    /// The event, `{op, d}`.
    pub event: EventEnvelope,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// Causal chain depth: 0 for external events, parent + 1 for events
    /// raised by an invocation's effects.
    pub depth: u32,
    /// When it was first accepted, Unix ms (for the maximum event age).
    pub enqueued_ms: u64,
    /// The same in Unix µs (for latency; 0 in events queued by older
    /// versions).
    #[serde(default)]
    pub enqueued_us: u64,
    /// When it may run next, Unix ms.
    pub due_ms: u64,
    /// Place in its (installation, agent) line, assigned by the store when
    /// the event is queued; only the lowest of a line may run.
    #[serde(default)]
    pub seq: u64,
}

/// An event that will not be retried, with why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event as it last waited.
    pub event: QueuedEvent,
    /// Why it was given up (the last outcome, `loop`, `max age`, ...).
    pub reason: String,
    /// When, Unix ms.
    pub dead_ms: u64,
}

/// What a pick found due in one organisation's queue.
#[derive(Debug, Default)]
pub struct Runnable {
    /// Line heads that may run, earliest due first.
    pub events: Vec<QueuedEvent>,
    /// Line heads this build could not decode, to be set aside.
    pub unreadable: Vec<UnreadableHead>,
}

pub(super) fn tx_error(e: TransactionError<StoreError>) -> StoreError {
    match e {
        TransactionError::Abort(e) => e,
        TransactionError::Storage(e) => StoreError::from(e),
    }
}

impl Store {
    /// Persist an event at the end of its line (durable after the next
    /// [`Store::flush`]); returns it with its sequence number.
    pub fn enqueue(&self, event: &QueuedEvent) -> Result<QueuedEvent, StoreError> {
        let t = self.t()?;
        let queued = QueuedEvent { seq: t.db.generate_id()?, ..event.clone() };
        self.gated(|| {
            (&t.queue, &t.keyq)
                .transaction(|(q, k)| {
                    insert_queued(q, k, &queued)?;
                    Ok(())
                })
                .map_err(tx_error)
        })?;
        t.heads().queued(&queued);
        Ok(queued)
    }

    /// Whether `event` is first in its (installation, agent) line, i.e. no
    /// earlier event of the same line is still queued.
    pub fn is_head(&self, event: &QueuedEvent) -> Result<bool, StoreError> {
        let t = self.t()?;
        let first = t.keyq.scan_prefix(keys::line(event.install_id, event.agent_id)).next().transpose()?;
        Ok(first.is_some_and(|(k, _)| k.as_ref() == keys::place(event.install_id, event.agent_id, event.seq)))
    }

    /// The first event of an (installation, agent) line, whatever its due time.
    pub fn line_head(&self, install: InstallId, agent: AgentId) -> Result<Option<QueuedEvent>, StoreError> {
        let t = self.t()?;
        let Some(head) = super::heads::first(&t.keyq, (install, agent))? else { return Ok(None) };
        t.queue.get(head.queue_key())?.map(|v| decode("queued event", &v)).transpose()
    }

    /// Up to `max` events queued right behind `head` in its (installation,
    /// agent) line, in line order, as long as each is due at `now_ms` (a
    /// line's run stops at its first event that is not due, and before one
    /// it cannot read: that one is set aside once it heads its line).
    pub fn line_after(&self, head: &QueuedEvent, now_ms: u64, max: usize) -> Result<Vec<QueuedEvent>, StoreError> {
        let t = self.t()?;
        let line = keys::line(head.install_id, head.agent_id);
        let from = keys::place(head.install_id, head.agent_id, head.seq.saturating_add(1));
        let mut run = Vec::new();
        for entry in t.keyq.range(from..) {
            let (place, queue_key) = entry?;
            if run.len() >= max || !place.starts_with(&line) {
                break;
            }
            let Some(value) = t.queue.get(&queue_key)? else { break };
            let Ok(event) = decode::<QueuedEvent>("queued event", &value) else { break };
            if event.due_ms > now_ms {
                break;
            }
            run.push(event);
        }
        Ok(run)
    }

    /// Up to `want` events of `org` that may run at `now_ms`: the heads of
    /// their (installation, agent) lines, due, and on lines `busy` does not
    /// claim, earliest due first. Read from the heads index (see `heads`):
    /// the backlog behind each head is not looked at. Each head offered is
    /// checked against `keyq` first; one that disagrees (a race between two
    /// writers' index updates) is repaired and left for the next pick. At
    /// most `scan` heads are looked at. A head this build cannot decode is
    /// not an error for the others: it comes back in `unreadable`, for the
    /// writer to set aside ([`Store::set_aside`]).
    pub fn runnable_heads(
        &self,
        org: OrgId,
        now_ms: u64,
        want: usize,
        scan: usize,
        busy: impl Fn(InstallId, AgentId) -> bool,
    ) -> Result<Runnable, StoreError> {
        let t = self.t()?;
        let mut heads = t.heads();
        let mut out = Runnable::default();
        for ((install, agent), head) in heads.due(org, now_ms, scan.max(want), |(i, a)| busy(i, a)) {
            if out.events.len() >= want {
                break;
            }
            let agrees = super::heads::first(&t.keyq, (install, agent))? == Some(head);
            let value = if agrees { t.queue.get(head.queue_key())? } else { None };
            let Some(value) = value else {
                heads.reread((install, agent), &t.keyq)?;
                continue;
            };
            match decode("queued event", &value) {
                Ok(event) => out.events.push(event),
                Err(e) => out.unreadable.push(UnreadableHead {
                    organisation_id: head.org,
                    install_id: install,
                    agent_id: agent,
                    event_id: head.id,
                    due_ms: head.due_ms,
                    seq: head.seq,
                    reason: e.to_string(),
                }),
            }
        }
        Ok(out)
    }

    /// How many events each organisation has queued, from the queue's keys
    /// alone (nothing is decoded: an unreadable event is counted until it
    /// is set aside).
    pub fn queued_counts(&self) -> Result<std::collections::HashMap<OrgId, usize>, StoreError> {
        let t = self.t()?;
        let mut counts = std::collections::HashMap::new();
        for key in t.queue.iter().keys() {
            let key = key?;
            let org = key
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt { what: "queue key", reason: format!("{} bytes", key.len()) })?;
            *counts.entry(OrgId::from(org)).or_default() += 1;
        }
        Ok(counts)
    }

    /// Up to `limit` of one organisation's events due at `now_ms`, earliest first.
    pub fn due_for(&self, org: OrgId, now_ms: u64, limit: usize) -> Result<Vec<QueuedEvent>, StoreError> {
        let t = self.t()?;
        let start = keys::queued(org, 0, EventId::from(0));
        let end = keys::queued(org, now_ms.saturating_add(1), EventId::from(0));
        t.queue.range(start..end).take(limit).map(|e| decode("queued event", &e?.1)).collect()
    }

    /// Every organisation with queued events (from the heads index).
    pub fn queued_orgs(&self) -> Result<Vec<OrgId>, StoreError> {
        Ok(self.t()?.heads().orgs())
    }

    /// Events due at `now_ms` across organisations, earliest first, at most
    /// `limit` (a scan of every organisation's partition: tests and admin).
    pub fn due(&self, now_ms: u64, limit: usize) -> Result<Vec<QueuedEvent>, StoreError> {
        let mut all = Vec::new();
        for org in self.queued_orgs()? {
            all.extend(self.due_for(org, now_ms, limit)?);
        }
        all.sort_by_key(|e| (e.due_ms, e.id));
        all.truncate(limit);
        Ok(all)
    }

    /// Every queued event, by organisation then due time (tests, admin).
    pub fn queued(&self) -> Result<Vec<QueuedEvent>, StoreError> {
        let t = self.t()?;
        t.queue.iter().map(|e| decode("queued event", &e?.1)).collect()
    }

    /// Move a failed event to its next attempt at `due_ms`; returns it.
    pub fn reschedule(&self, event: &QueuedEvent, due_ms: u64) -> Result<QueuedEvent, StoreError> {
        let t = self.t()?;
        let next = QueuedEvent { attempt: event.attempt + 1, due_ms, ..event.clone() };
        self.gated(|| {
            (&t.queue, &t.keyq)
                .transaction(|(q, k)| {
                    // Same place in its line (same seq); the line's entry
                    // now points at the new queue key.
                    remove_queued(q, k, event)?;
                    insert_queued(q, k, &next)?;
                    Ok(())
                })
                .map_err(tx_error)
        })?;
        let mut heads = t.heads();
        heads.removed(event, &t.keyq);
        heads.queued(&next);
        Ok(next)
    }

    /// Give an event up: out of the queue, into the dead letters.
    pub fn dead_letter(&self, event: &QueuedEvent, reason: &str, now_ms: u64) -> Result<(), StoreError> {
        let t = self.t()?;
        let letter = DeadLetter { event: event.clone(), reason: reason.to_owned(), dead_ms: now_ms };
        self.gated(|| {
            (&t.queue, &t.keyq, &t.dead)
                .transaction(|(q, k, d)| {
                    remove_queued(q, k, event)?;
                    d.insert(&keys::dead(event.organisation_id, event.id), encode(&letter))?;
                    Ok(())
                })
                .map_err(tx_error)
        })?;
        t.heads().removed(event, &t.keyq);
        Ok(())
    }

    /// Dead letters of every organisation, by organisation then oldest
    /// event first, at most `limit` (tests, admin).
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        let t = self.t()?;
        t.dead.iter().take(limit).map(|e| decode("dead letter", &e?.1)).collect()
    }

    /// `org`'s dead letters, oldest event first, at most `limit`: read from
    /// its own prefix (one this build cannot read is skipped and logged).
    pub fn dead_letters_of(&self, org: OrgId, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        super::readable_of("dead letter", self.t()?.dead.scan_prefix(org.get().to_be_bytes()), limit)
    }

    /// How many dead letters there are (counts keys, decodes nothing; 0
    /// while the store is being reopened).
    pub fn dead_letter_count(&self) -> usize {
        self.t().map_or(0, |t| t.dead.len())
    }

    /// One of `org`'s dead letters.
    pub fn dead_letter_of(&self, org: OrgId, id: EventId) -> Result<Option<DeadLetter>, StoreError> {
        let t = self.t()?;
        t.dead.get(keys::dead(org, id))?.map(|v| decode("dead letter", &v)).transpose()
    }

    /// Discard one of `org`'s dead letters; false if there was none.
    pub fn delete_dead_letter(&self, org: OrgId, id: EventId) -> Result<bool, StoreError> {
        let t = self.t()?;
        Ok(t.dead.remove(keys::dead(org, id))?.is_some())
    }

    /// Put one of `org`'s dead letters back in the queue, at the end of its
    /// line, as a fresh first attempt due at `now_ms`. Returns false if
    /// there is no such dead letter.
    pub fn redrive(&self, org: OrgId, id: EventId, now_ms: u64) -> Result<bool, StoreError> {
        let t = self.t()?;
        let seq = t.db.generate_id()?;
        let queued = self.gated(|| {
            (&t.dead, &t.queue, &t.keyq)
                .transaction(|(d, q, k)| {
                    let Some(bytes) = d.remove(&keys::dead(org, id))? else { return Ok(None) };
                    let letter: DeadLetter =
                        decode("dead letter", &bytes).map_err(ConflictableTransactionError::Abort)?;
                    let event = QueuedEvent { attempt: 1, due_ms: now_ms, seq, ..letter.event };
                    insert_queued(q, k, &event)?;
                    Ok(Some(event))
                })
                .map_err(tx_error)
        })?;
        if let Some(event) = &queued {
            t.heads().queued(event);
        }
        Ok(queued.is_some())
    }
}

type TxResult = Result<(), ConflictableTransactionError<StoreError>>;

/// Insert a queued event and its place in its line.
pub(super) fn insert_queued(queue: &TransactionalTree, keyq: &TransactionalTree, e: &QueuedEvent) -> TxResult {
    queue.insert(&keys::queued(e.organisation_id, e.due_ms, e.id), encode(e))?;
    keyq.insert(&keys::place(e.install_id, e.agent_id, e.seq), &keys::queued(e.organisation_id, e.due_ms, e.id))?;
    Ok(())
}

/// Remove a queued event and its place; aborts with `NotQueued` if absent.
pub(super) fn remove_queued(queue: &TransactionalTree, keyq: &TransactionalTree, e: &QueuedEvent) -> TxResult {
    if queue.remove(&keys::queued(e.organisation_id, e.due_ms, e.id))?.is_none() {
        return Err(ConflictableTransactionError::Abort(StoreError::NotQueued(e.id)));
    }
    keyq.remove(&keys::place(e.install_id, e.agent_id, e.seq))?;
    Ok(())
}

/// Set in the database's default tree once its dead letters are keyed by
/// organisation: later opens skip the scan.
pub(super) const DEAD_REKEYED: &[u8] = b"paddock-dead-letters-keyed-by-organisation";

/// Move dead letters stored under the key of earlier versions (the event
/// id alone) to their organisation's prefix, in one atomic batch: run when
/// the database opens, before anything else reads or writes it, once per
/// database. A letter this build cannot read goes to organisation 0's
/// prefix, kept as it is.
pub(super) fn rekey_dead_letters(db: &sled::Db, dead: &sled::Tree) -> Result<usize, StoreError> {
    if db.get(DEAD_REKEYED)?.is_some() {
        return Ok(0);
    }
    let mut batch = sled::Batch::default();
    let mut moved = 0;
    for entry in dead.iter() {
        let (key, value) = entry?;
        let Ok(id) = <[u8; 8]>::try_from(key.as_ref()) else { continue };
        let id = EventId::from(u64::from_be_bytes(id));
        let org = decode::<DeadLetter>("dead letter", &value).map_or(OrgId::from(0), |d| d.event.organisation_id);
        batch.remove(key);
        batch.insert(&keys::dead(org, id), value);
        moved += 1;
    }
    if moved > 0 {
        dead.apply_batch(batch)?;
    }
    // After the batch: a crash before the mark only means scanning again.
    db.insert(DEAD_REKEYED, &[1u8][..])?;
    Ok(moved)
}

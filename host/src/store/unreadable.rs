//! Queued events this build cannot read, set aside so their lines go on.
//!
//! A queued event is stored as JSON. One this build cannot decode (written
//! by a newer version before a rollback, or damaged) must neither stop the
//! dispatcher for every tenant nor keep the server from starting, and it
//! must not be lost: the pick reports it as an [`UnreadableHead`] instead
//! of failing, the writer moves its exact bytes to the `unreadable` tree
//! ([`Store::set_aside`]), and its line goes on with the event behind it.
//! The organisation's dead-letters listing shows what was set aside; once a
//! build that reads it opens the store, it is queued again, at the end of
//! its line (`requeue_readable`).

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use sled::Transactional;

use super::queue::{QueuedEvent, tx_error};
use super::{Store, StoreError, decode, encode, keys};
use crate::model::{AgentId, EventId, InstallId, OrgId};

/// A line's first event, which this build could not decode: where it is
/// in the queue (from its keys, which are readable), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableHead {
    /// Whose queue it is in.
    pub organisation_id: OrgId,
    /// Its line: the installation.
    pub install_id: InstallId,
    /// Its line: the agent.
    pub agent_id: AgentId,
    /// The event.
    pub event_id: EventId,
    /// When it was due, Unix ms.
    pub due_ms: u64,
    /// Its place in its line.
    pub seq: u64,
    /// Why it could not be decoded.
    pub reason: String,
}

/// A queued event set aside because it could not be read, with its stored
/// bytes unchanged (base64), so nothing of it is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UnreadableEvent {
    /// The event.
    pub event_id: EventId,
    /// Whose queue it was in.
    pub organisation_id: OrgId,
    /// The installation it was for.
    pub install_id: InstallId,
    /// The agent of its line.
    pub agent_id: AgentId,
    /// Why it could not be decoded.
    pub reason: String,
    /// The stored record, base64 of its bytes.
    pub stored: String,
    /// When it was set aside, Unix ms.
    pub set_aside_ms: u64,
}

/// Put back in the queue every set-aside event this build can read (the
/// build that wrote it is running again): each at the end of its line,
/// with the attempt it had, in one transaction each. Run when the database
/// opens, before the heads index is built from `keyq`. Returns how many.
pub(super) fn requeue_readable(
    db: &sled::Db,
    unreadable: &sled::Tree,
    queue: &sled::Tree,
    keyq: &sled::Tree,
) -> Result<usize, StoreError> {
    let mut requeued = 0;
    for entry in unreadable.iter() {
        let (key, value) = entry?;
        let Ok(record) = decode::<UnreadableEvent>("unreadable event", &value) else { continue };
        let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(&record.stored) else { continue };
        let Ok(event) = decode::<QueuedEvent>("queued event", &bytes) else { continue };
        let event = QueuedEvent { seq: db.generate_id()?, ..event };
        (unreadable, queue, keyq)
            .transaction(|(u, q, k)| {
                u.remove(&key)?;
                super::queue::insert_queued(q, k, &event)?;
                Ok(())
            })
            .map_err(tx_error)?;
        requeued += 1;
    }
    Ok(requeued)
}

impl Store {
    /// Move the unreadable event `head` names out of the queue into the
    /// `unreadable` tree (one transaction), so its line goes on. Returns
    /// false, changing nothing, if it is no longer queued or reads well now.
    /// A writer operation: no other write may run beside it.
    pub fn set_aside(&self, head: &UnreadableHead, now_ms: u64) -> Result<bool, StoreError> {
        let t = self.t()?;
        let key = keys::queued(head.organisation_id, head.due_ms, head.event_id);
        let place = keys::place(head.install_id, head.agent_id, head.seq);
        let Some(stored) = t.queue.get(key)? else { return Ok(false) };
        if decode::<QueuedEvent>("queued event", &stored).is_ok() {
            return Ok(false);
        }
        let record = UnreadableEvent {
            event_id: head.event_id,
            organisation_id: head.organisation_id,
            install_id: head.install_id,
            agent_id: head.agent_id,
            reason: head.reason.clone(),
            stored: base64::engine::general_purpose::STANDARD.encode(&stored),
            set_aside_ms: now_ms,
        };
        self.gated(|| {
            (&t.queue, &t.keyq, &t.unreadable)
                .transaction(|(q, k, u)| {
                    q.remove(&key)?;
                    if k.get(place)?.is_some_and(|named| named.as_ref() == key) {
                        k.remove(&place)?;
                    }
                    u.insert(&key, encode(&record))?;
                    Ok(())
                })
                .map_err(tx_error)
        })?;
        if let Err(error) = t.heads().reread((head.install_id, head.agent_id), &t.keyq) {
            tracing::warn!(%error, "reading a line's next head failed; the next pick reads it again");
        }
        Ok(true)
    }

    /// The events of `org` set aside as unreadable, oldest due first, at
    /// most `limit`.
    pub fn unreadable_events(&self, org: OrgId, limit: usize) -> Result<Vec<UnreadableEvent>, StoreError> {
        let t = self.t()?;
        t.unreadable
            .scan_prefix(org.get().to_be_bytes())
            .take(limit)
            .map(|e| decode("unreadable event", &e?.1))
            .collect()
    }

    /// How many events were set aside as unreadable (0 while the store is
    /// being reopened).
    pub fn unreadable_count(&self) -> usize {
        self.t().map_or(0, |t| t.unreadable.len())
    }
}

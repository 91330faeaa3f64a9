//! Invocation summaries (Doover's shape), one per attempt, queryable by
//! installation.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Store, StoreError, decode, encode, keys};
use sled::Transactional as _;

use crate::model::{AgentId, EventId, InstallId, OrgId};

/// What one attempt of one event did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationSummary {
    /// The event.
    pub event_id: EventId,
    /// The installation.
    pub install_id: InstallId,
    /// The event's op, e.g. `on_message_create`.
    pub op: String,
    /// `success`, `skipped` or `error`.
    pub status: String,
    /// Why it was skipped, if it was.
    pub skip_reason: Option<String>,
    /// The classified outcome, in full.
    pub outcome: Value,
    /// Wall-clock time, ms.
    pub duration_ms: f64,
    /// Fuel consumed.
    pub fuel: u64,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The error, for `error`.
    pub error: Option<String>,
    /// Captured logs (`{lines, truncated}`).
    pub logs: Value,
    /// When the event was first accepted, Unix ms (`at_ms - queued_ms` is
    /// its end-to-end latency).
    #[serde(default)]
    pub queued_ms: u64,
    /// When it finished, Unix ms.
    pub at_ms: u64,
    /// Acceptance to end of this attempt, µs.
    #[serde(default)]
    pub latency_us: u64,
}

impl Store {
    /// Record a summary (outside a commit: retries and dead letters).
    pub fn put_invocation(&self, summary: &InvocationSummary) -> Result<(), StoreError> {
        let t = self.t()?;
        t.invocations
            .insert(keys::invocation(summary.install_id, summary.event_id, summary.attempt), encode(summary))?;
        Ok(())
    }

    /// [`Store::put_invocation`] with the summary's monitor feed entry
    /// (numbered `seq`, on `agent` of `org`) in the same transaction.
    pub fn put_invocation_fed(
        &self,
        summary: &InvocationSummary,
        org: OrgId,
        agent: AgentId,
        seq: u64,
    ) -> Result<(), StoreError> {
        let t = self.t()?;
        let entry = super::feed::FeedEntry::invocation(org, agent, summary, seq);
        self.gated(|| {
            (&t.invocations, &t.feed)
                .transaction(|(invocations, feed)| {
                    invocations.insert(
                        &keys::invocation(summary.install_id, summary.event_id, summary.attempt),
                        encode(summary),
                    )?;
                    feed.insert(&keys::feed(org, seq), encode(&entry))?;
                    Ok(())
                })
                .map_err(super::queue::tx_error)
        })
    }

    /// One event's summaries (every attempt) for an installation.
    pub fn event_invocations(&self, install: InstallId, event: EventId) -> Result<Vec<InvocationSummary>, StoreError> {
        let t = self.t()?;
        let mut prefix = install.get().to_be_bytes().to_vec();
        prefix.extend_from_slice(&event.get().to_be_bytes());
        t.invocations.scan_prefix(prefix).map(|e| decode("invocation", &e?.1)).collect()
    }

    /// An installation's summaries, newest event first, at most `limit`.
    pub fn invocations(&self, install: InstallId, limit: usize) -> Result<Vec<InvocationSummary>, StoreError> {
        let t = self.t()?;
        let prefix = install.get().to_be_bytes();
        t.invocations.scan_prefix(prefix).rev().take(limit).map(|e| decode("invocation", &e?.1)).collect()
    }
}

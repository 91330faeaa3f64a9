//! Retention: records past their bounds are removed by the writer, a
//! bounded part per cycle, like every other write (see
//! [`crate::store::Stale`]).

use super::Engine;
use crate::model::{ChannelName, ChannelRef, OrgId, now_ms};
use crate::store::{Stale, StoreError};

/// Most records one writer operation removes: a sweep of many stale
/// records cannot make one cycle (and every write waiting for its flush)
/// long.
const REMOVED_PER_OPERATION: usize = 256;

/// Most stale records read at once: what a sweep holds in memory, however
/// far past its bounds a channel (say) is.
const FOUND_AT_ONCE: usize = 4096;

/// What retention keeps: the newest of each kind, per owner.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Messages per channel.
    pub messages_per_channel: usize,
    /// Invocation summaries per installation.
    pub summaries_per_installation: usize,
    /// Dead letters per organisation.
    pub dead_letters_per_organisation: usize,
}

impl Engine {
    /// Retention: keep the newest of each kind as `keep` says; drop a
    /// deleted installation's summaries and expired idempotency keys. Each
    /// organisation's stale records are read, then removed through the
    /// writer in its turn. Returns how many records were removed.
    pub async fn prune(&self, keep: Retention) -> Result<usize, StoreError> {
        let (messages, invocations, letters) =
            (keep.messages_per_channel, keep.summaries_per_installation, keep.dead_letters_per_organisation);
        let installs = self.store.installs()?;
        let mut removed = 0;
        for org in self.store.orgs()? {
            for agent in self.store.list_agents(org.id, usize::MAX)? {
                for name in self.store.list_channels(agent.id)? {
                    let Ok(name) = ChannelName::new(name) else { continue };
                    let ch = ChannelRef { agent_id: agent.id, name };
                    removed += self.sweep(org.id, |most| self.store.stale_messages(&ch, messages, most)).await?;
                }
                // The reads above block this task's thread: a little at a time.
                tokio::task::yield_now().await;
            }
            for rec in installs.iter().filter(|rec| rec.organisation_id == org.id) {
                removed += self.sweep(org.id, |most| self.store.stale_summaries(rec.id, invocations, most)).await?;
            }
            removed += self.sweep(org.id, |most| self.store.stale_dead_letters(org.id, letters, most)).await?;
        }
        // A deleted installation's summaries (no organisation sweeps them).
        let live = installs.iter().map(|rec| rec.id).collect();
        removed += self.sweep(OrgId::from(0), |most| self.store.orphaned_summaries(&live, most)).await?;
        let now = now_ms();
        removed += self.sweep(OrgId::from(0), |most| self.store.expired_claims(now, most)).await?;
        Ok(removed)
    }

    /// Remove what `find` finds, at most 4,096 records at a time,
    /// until it finds fewer (or none of them could be removed). Returns
    /// how many were removed.
    pub(crate) async fn sweep(
        &self,
        org: OrgId,
        find: impl Fn(usize) -> Result<Stale, StoreError>,
    ) -> Result<usize, StoreError> {
        let mut removed = 0;
        loop {
            let stale = find(FOUND_AT_ONCE)?;
            let found = stale.len();
            let now = self.remove_stale(org, stale).await?;
            removed += now;
            if found < FOUND_AT_ONCE || now == 0 {
                return Ok(removed);
            }
        }
    }

    /// Remove `stale` records of `org` through the writer, at most 256
    /// per operation (so one cannot make a cycle long). Returns how many were
    /// removed.
    async fn remove_stale(&self, org: OrgId, stale: Stale) -> Result<usize, StoreError> {
        let mut removed = 0;
        for part in stale.split(REMOVED_PER_OPERATION) {
            removed += self.writer.apply(org, false, move |store| store.remove_stale(&part)).await?;
        }
        Ok(removed)
    }
}

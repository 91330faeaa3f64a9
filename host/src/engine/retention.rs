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

impl Engine {
    /// Retention: keep the newest `messages` per channel and `invocations`
    /// summaries per installation; drop expired idempotency keys. Each
    /// organisation's stale records are read, then removed through the
    /// writer in its turn. Returns how many records were removed.
    pub async fn prune(&self, messages: usize, invocations: usize) -> Result<usize, StoreError> {
        let installs = self.store.installs()?;
        let mut removed = 0;
        for org in self.store.orgs()? {
            for agent in self.store.list_agents(org.id, usize::MAX)? {
                for name in self.store.list_channels(agent.id)? {
                    let Ok(name) = ChannelName::new(name) else { continue };
                    let stale = self.store.stale_messages(&ChannelRef { agent_id: agent.id, name }, messages)?;
                    removed += self.remove_stale(org.id, stale).await?;
                }
                // The reads above block this task's thread: a little at a time.
                tokio::task::yield_now().await;
            }
            for rec in installs.iter().filter(|rec| rec.organisation_id == org.id) {
                removed += self.remove_stale(org.id, self.store.stale_summaries(rec.id, invocations)?).await?;
            }
        }
        let expired = self.store.expired_claims(now_ms())?;
        removed += self.remove_stale(OrgId::from(0), expired).await?;
        Ok(removed)
    }

    /// Remove `stale` records of `org` through the writer, at most
    /// [`REMOVED_PER_OPERATION`] per operation. Returns how many were
    /// removed.
    pub async fn remove_stale(&self, org: OrgId, stale: Stale) -> Result<usize, StoreError> {
        let mut removed = 0;
        if stale.is_empty() {
            return Ok(0);
        }
        for part in stale.split(REMOVED_PER_OPERATION) {
            removed += self.writer.apply(org, false, move |store| store.remove_stale(&part)).await?;
        }
        Ok(removed)
    }
}

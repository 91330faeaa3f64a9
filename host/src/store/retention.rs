//! Retention: records past their bounds are found by a read beside the
//! writer and removed by the writer, a bounded part per cycle, like every
//! other write.
//!
//! A removal may come cycles after the read that found it. Messages,
//! summaries and feed entries are only ever added after the newest, so
//! what was past the bound stays past it. An idempotency key can be
//! claimed again once it expired, so the writer removes one only if it is
//! still expired when the removal runs: a claim made meanwhile keeps
//! guarding what it was made with.

use super::{Store, StoreError, decode, keys};
use crate::model::{ChannelRef, InstallId, OrgId};

/// Records found past retention, to be removed by [`Store::remove_stale`].
#[derive(Debug)]
pub struct Stale {
    kind: Kind,
    keys: Vec<sled::IVec>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Messages,
    Summaries,
    /// Summaries of installations that were deleted.
    Orphaned,
    DeadLetters,
    Feed,
    /// Idempotency keys that had expired at `now_ms`.
    Claims {
        now_ms: u64,
    },
}

impl Stale {
    /// How many records it holds.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Split into parts of at most `most` records each (at least one each).
    pub fn split(self, most: usize) -> Vec<Stale> {
        let Stale { kind, keys } = self;
        keys.chunks(most.max(1)).map(|part| Stale { kind, keys: part.to_vec() }).collect()
    }
}

impl Store {
    /// A channel's messages past its newest `keep`, at most `most` (the
    /// newest of them).
    pub fn stale_messages(&self, ch: &ChannelRef, keep: usize, most: usize) -> Result<Stale, StoreError> {
        let t = self.t()?;
        let found = t.messages.scan_prefix(keys::channel_messages(ch)).keys().rev().skip(keep).take(most);
        Ok(Stale { kind: Kind::Messages, keys: found.collect::<Result<_, _>>()? })
    }

    /// An installation's invocation summaries past its newest `keep`, at
    /// most `most`.
    pub fn stale_summaries(&self, install: InstallId, keep: usize, most: usize) -> Result<Stale, StoreError> {
        let t = self.t()?;
        let found = t.invocations.scan_prefix(install.get().to_be_bytes()).keys().rev().skip(keep).take(most);
        Ok(Stale { kind: Kind::Summaries, keys: found.collect::<Result<_, _>>()? })
    }

    /// `org`'s dead letters past its newest `keep` (by event id), at most
    /// `most`.
    pub fn stale_dead_letters(&self, org: OrgId, keep: usize, most: usize) -> Result<Stale, StoreError> {
        let t = self.t()?;
        let found = t.dead.scan_prefix(org.get().to_be_bytes()).keys().rev().skip(keep).take(most);
        Ok(Stale { kind: Kind::DeadLetters, keys: found.collect::<Result<_, _>>()? })
    }

    /// Summaries of installations that no longer exist (not in `live`),
    /// at most `most`: one seek per installation with summaries.
    pub fn orphaned_summaries(
        &self,
        live: &std::collections::HashSet<InstallId>,
        most: usize,
    ) -> Result<Stale, StoreError> {
        let t = self.t()?;
        let mut found = Vec::new();
        let mut from = [0u8; 8];
        while found.len() < most {
            let Some(key) = t.invocations.range(from..).keys().next().transpose()? else { break };
            let Some(install) = key.get(..8).and_then(|b| <[u8; 8]>::try_from(b).ok()) else { break };
            let id = u64::from_be_bytes(install);
            if !live.contains(&InstallId::from(id)) {
                let keys = t.invocations.scan_prefix(install).keys().take(most - found.len());
                found.extend(keys.collect::<Result<Vec<_>, _>>()?);
            }
            let Some(next) = id.checked_add(1) else { break };
            from = next.to_be_bytes();
        }
        Ok(Stale { kind: Kind::Orphaned, keys: found })
    }

    /// `org`'s monitor feed entries past its newest `keep`, and those
    /// committed before `older_than_ms`, at most `most`.
    pub fn stale_feed(&self, org: OrgId, keep: usize, older_than_ms: u64, most: usize) -> Result<Stale, StoreError> {
        let t = self.t()?;
        let mut found = Vec::new();
        for (i, entry) in t.feed.scan_prefix(org.get().to_be_bytes()).rev().enumerate() {
            let (key, value) = entry?;
            let old = || decode::<super::FeedEntry>("feed entry", &value).is_ok_and(|e| e.at_ms < older_than_ms);
            if i >= keep || old() {
                found.push(key);
                if found.len() >= most {
                    break;
                }
            }
        }
        Ok(Stale { kind: Kind::Feed, keys: found })
    }

    /// Idempotency keys expired at `now_ms`, at most `most`.
    pub fn expired_claims(&self, now_ms: u64, most: usize) -> Result<Stale, StoreError> {
        let t = self.t()?;
        let mut found = Vec::new();
        for entry in t.seen.iter() {
            let (key, held) = entry?;
            // One this build cannot read is left alone (not every other).
            if decode::<u64>("idempotency key", &held).is_ok_and(|expires| expires <= now_ms) {
                found.push(key);
                if found.len() >= most {
                    break;
                }
            }
        }
        Ok(Stale { kind: Kind::Claims { now_ms }, keys: found })
    }

    /// Remove `stale` (the writer's operation): an idempotency key only if
    /// it is still expired, an orphaned summary only if its installation
    /// still does not exist. Returns how many records were removed.
    pub fn remove_stale(&self, stale: &Stale) -> Result<usize, StoreError> {
        let t = self.t()?;
        let tree = match stale.kind {
            Kind::Messages => &t.messages,
            Kind::Summaries | Kind::Orphaned => &t.invocations,
            Kind::Feed => &t.feed,
            Kind::Claims { .. } => &t.seen,
            Kind::DeadLetters => &t.dead,
        };
        let mut removed = 0;
        for key in &stale.keys {
            if let Kind::Claims { now_ms } = stale.kind {
                let Some(held) = tree.get(key)? else { continue };
                if decode::<u64>("idempotency key", &held).is_ok_and(|expires| expires > now_ms) {
                    continue; // claimed again since it was found
                }
            }
            // An installation made since (ids are not reused, but the
            // check costs one read) keeps its summaries.
            if stale.kind == Kind::Orphaned && t.installs.get(key.get(..8).unwrap_or_default())?.is_some() {
                continue;
            }
            removed += usize::from(tree.remove(key)?.is_some());
        }
        Ok(removed)
    }
}

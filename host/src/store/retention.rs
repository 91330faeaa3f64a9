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
            if decode::<u64>("idempotency key", &held)? <= now_ms {
                found.push(key);
                if found.len() >= most {
                    break;
                }
            }
        }
        Ok(Stale { kind: Kind::Claims { now_ms }, keys: found })
    }

    /// Remove `stale` (the writer's operation): an idempotency key only if
    /// it is still expired. Returns how many records were removed.
    pub fn remove_stale(&self, stale: &Stale) -> Result<usize, StoreError> {
        let t = self.t()?;
        let tree = match stale.kind {
            Kind::Messages => &t.messages,
            Kind::Summaries => &t.invocations,
            Kind::Feed => &t.feed,
            Kind::Claims { .. } => &t.seen,
        };
        let mut removed = 0;
        for key in &stale.keys {
            if let Kind::Claims { now_ms } = stale.kind {
                let Some(held) = tree.get(key)? else { continue };
                if decode::<u64>("idempotency key", &held)? > now_ms {
                    continue; // claimed again since it was found
                }
            }
            removed += usize::from(tree.remove(key)?.is_some());
        }
        Ok(removed)
    }
}

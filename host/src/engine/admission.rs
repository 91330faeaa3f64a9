//! Admission: the queue's bounds and its counts, overall and per
//! organisation. Ingress asks before it writes; the dispatcher settles as
//! events leave. The counts are advisory (kept in step with the store,
//! whose `len` would be a scan): they only decide whether ingress is
//! refused as busy.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::EngineError;
use crate::model::OrgId;

/// The bounds and the counts.
pub(super) struct Admission {
    max_queue: usize,
    max_queue_per_org: usize,
    /// Events queued.
    queued: AtomicUsize,
    /// Events queued per organisation.
    per_org: Mutex<HashMap<OrgId, usize>>,
}

impl Admission {
    /// Empty counts under these bounds.
    pub fn new(max_queue: usize, max_queue_per_org: usize) -> Admission {
        Admission { max_queue, max_queue_per_org, queued: AtomicUsize::new(0), per_org: Mutex::default() }
    }

    /// Count again from what the store holds, per organisation.
    pub fn recount(&self, per_org: HashMap<OrgId, usize>) {
        self.queued.store(per_org.values().sum(), Ordering::Relaxed);
        *self.per_org.lock().unwrap_or_else(|p| p.into_inner()) = per_org;
    }

    /// Refuse `adding` events for `org` when the queue, or the
    /// organisation's share of it, is at its bound.
    pub fn admit(&self, org: OrgId, adding: usize) -> Result<(), EngineError> {
        let queued = self.queued.load(Ordering::Relaxed);
        if queued.saturating_add(adding) > self.max_queue {
            return Err(EngineError::Busy { queued, limit: self.max_queue });
        }
        let mine = self.per_org.lock().unwrap_or_else(|p| p.into_inner()).get(&org).copied().unwrap_or(0);
        if adding > 0 && mine.saturating_add(adding) > self.max_queue_per_org {
            return Err(EngineError::TenantBusy { organisation: org, queued: mine, limit: self.max_queue_per_org });
        }
        Ok(())
    }

    /// Keep the counts (overall and `org`'s) in step: `done` left, `added`
    /// arrived. Saturating: an advisory count must never wrap to a huge
    /// value that would refuse everything.
    pub fn settled(&self, org: OrgId, done: usize, added: usize) {
        let step = |n: usize| Some(n.saturating_add(added).saturating_sub(done));
        let _ = self.queued.fetch_update(Ordering::Relaxed, Ordering::Relaxed, step);
        let mut per_org = self.per_org.lock().unwrap_or_else(|p| p.into_inner());
        let n = per_org.entry(org).or_default();
        *n = n.saturating_add(added).saturating_sub(done);
        if *n == 0 {
            per_org.remove(&org);
        }
    }

    /// Events queued now.
    pub fn depth(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// Events queued now, per organisation.
    pub fn depth_by_org(&self) -> HashMap<OrgId, usize> {
        self.per_org.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queue_bound_and_each_organisations_share_refuse_and_settling_frees_them() {
        let a = Admission::new(3, 2);
        let (one, two) = (OrgId::from(1), OrgId::from(2));
        a.settled(one, 0, 2);
        assert!(matches!(a.admit(one, 1), Err(EngineError::TenantBusy { queued: 2, limit: 2, .. })));
        a.admit(two, 1).unwrap();
        a.settled(two, 0, 1);
        assert!(matches!(a.admit(two, 1), Err(EngineError::Busy { queued: 3, limit: 3 })));
        a.settled(one, 1, 0);
        a.admit(two, 1).unwrap();
        assert_eq!((a.depth(), a.depth_by_org().get(&one).copied()), (2, Some(1)));
        // Settling more than was counted never wraps.
        a.settled(one, 5, 0);
        assert_eq!((a.depth(), a.depth_by_org().get(&one).copied()), (0, None));
        a.admit(one, 2).unwrap();
    }
}

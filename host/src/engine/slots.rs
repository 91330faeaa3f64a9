//! Dispatch slots: which lines are in flight, and each organisation's share.
//!
//! At most one event per (installation, agent) line runs at a time. Beyond
//! that, the `concurrency` slots are shared among the *active*
//! organisations: those with work ready now, work in flight, or work seen
//! within [`ACTIVE_WINDOW`]. Each may hold at most
//! `ceil(concurrency / active)` slots. A tenant alone uses every slot; once
//! another tenant shows up, the first one's new starts are held back until
//! it is under its share, so the newcomer's next event finds a free slot
//! instead of queueing behind the flood. The window keeps a share reserved
//! for a steady tenant between its events (at 100 events/s it is never
//! idle for long), at the price of leaving those slots unused by others for
//! up to a second after it goes quiet.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::{AgentId, InstallId, OrgId};

/// How long an organisation keeps its share after its last ready event.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(1);

/// The in-flight lines and the activity that decides shares.
#[derive(Debug, Default)]
pub(super) struct Slots {
    lines: HashMap<(InstallId, AgentId), OrgId>,
    held: HashMap<OrgId, usize>,
    last_ready: HashMap<OrgId, Instant>,
}

impl Slots {
    /// Whether the line has an event in flight.
    pub fn busy(&self, install: InstallId, agent: AgentId) -> bool {
        self.lines.contains_key(&(install, agent))
    }

    /// The line starts an event of `org`.
    pub fn take(&mut self, org: OrgId, install: InstallId, agent: AgentId) {
        if self.lines.insert((install, agent), org).is_none() {
            *self.held.entry(org).or_default() += 1;
        }
    }

    /// The line's event ended.
    pub fn free(&mut self, install: InstallId, agent: AgentId) {
        let Some(org) = self.lines.remove(&(install, agent)) else { return };
        if let Some(n) = self.held.get_mut(&org) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.held.remove(&org);
            }
        }
    }

    /// At most how many more events `org` could be allowed now: its share
    /// if it and the organisations known to be active were all that is
    /// active. Lets the pick skip reading a tenant that is at its share.
    pub fn at_most(&self, concurrency: usize, org: OrgId, now: Instant) -> usize {
        self.share(concurrency, Some(org), now).saturating_sub(self.held_by(org))
    }

    /// How many more events each of `ready` (organisations with runnable
    /// work now) may start, out of `concurrency` slots.
    pub fn allowance(&mut self, concurrency: usize, ready: &[OrgId], now: Instant) -> HashMap<OrgId, usize> {
        for org in ready {
            self.last_ready.insert(*org, now);
        }
        self.last_ready.retain(|_, seen| now.duration_since(*seen) < ACTIVE_WINDOW);
        let share = self.share(concurrency, None, now);
        ready.iter().map(|org| (*org, share.saturating_sub(self.held_by(*org)))).collect()
    }

    /// `ceil(concurrency / active)`, where active means ready within the
    /// window, holding slots, or `also`.
    fn share(&self, concurrency: usize, also: Option<OrgId>, now: Instant) -> usize {
        let mut active: Vec<OrgId> = self
            .last_ready
            .iter()
            .filter(|(_, seen)| now.duration_since(**seen) < ACTIVE_WINDOW)
            .map(|(o, _)| *o)
            .chain(self.held.keys().copied())
            .chain(also)
            .collect();
        active.sort_unstable();
        active.dedup();
        concurrency.div_ceil(active.len().max(1)).max(1)
    }

    fn held_by(&self, org: OrgId) -> usize {
        self.held.get(&org).copied().unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org(n: u64) -> OrgId {
        OrgId::from(n)
    }

    #[test]
    fn a_tenant_alone_gets_every_slot_and_shares_them_once_another_shows_up() {
        let mut s = Slots::default();
        let t0 = Instant::now();
        assert_eq!(s.allowance(8, &[org(1)], t0)[&org(1)], 8);
        for agent in 0..8 {
            s.take(org(1), InstallId::from(1), AgentId::from(agent));
        }
        // Tenant 2 arrives: half each; tenant 1 holds 8, so it starts nothing.
        let a = s.allowance(8, &[org(1), org(2)], t0);
        assert_eq!((a[&org(1)], a[&org(2)]), (0, 4));
        // Tenant 2 has nothing ready now but was active recently: tenant 1
        // stays at its share as its events end.
        for agent in 0..5 {
            s.free(InstallId::from(1), AgentId::from(agent));
        }
        assert_eq!(s.allowance(8, &[org(1)], t0 + Duration::from_millis(500))[&org(1)], 1);
        // After the window, tenant 1 has every slot again.
        assert_eq!(s.at_most(8, org(1), t0 + Duration::from_millis(500)), 1);
        assert_eq!(s.allowance(8, &[org(1)], t0 + ACTIVE_WINDOW + Duration::from_millis(1))[&org(1)], 5);
    }

    #[test]
    fn a_line_counts_once_and_freeing_an_unknown_line_is_harmless() {
        let mut s = Slots::default();
        s.take(org(1), InstallId::from(1), AgentId::from(1));
        s.take(org(1), InstallId::from(1), AgentId::from(1));
        assert!(s.busy(InstallId::from(1), AgentId::from(1)));
        s.free(InstallId::from(9), AgentId::from(9));
        s.free(InstallId::from(1), AgentId::from(1));
        assert!(!s.busy(InstallId::from(1), AgentId::from(1)));
        assert_eq!(s.allowance(2, &[org(1)], Instant::now())[&org(1)], 2);
    }
}

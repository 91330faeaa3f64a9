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

//!
//! A line whose run failed in the engine itself (a store error, a panic:
//! not an app's outcome, which has its own retries) cools down before it
//! is offered again, for [`COOL_DOWN`] doubled with each failure in a row
//! up to [`MAX_COOL_DOWN`]: a failure that repeats costs a few attempts a
//! second at most, instead of every pick.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::model::{AgentId, InstallId, OrgId};

/// How long an organisation keeps its share after its last ready event.
pub const ACTIVE_WINDOW: Duration = Duration::from_secs(1);

/// How long a line waits after its run failed in the engine, the first time.
pub const COOL_DOWN: Duration = Duration::from_millis(100);

/// The longest a line waits after failures in a row.
pub const MAX_COOL_DOWN: Duration = Duration::from_secs(10);

/// An (installation, agent) line.
type Line = (InstallId, AgentId);

/// The in-flight lines and the activity that decides shares.
#[derive(Debug, Default)]
pub(super) struct Slots {
    lines: HashMap<Line, OrgId>,
    held: HashMap<OrgId, usize>,
    last_ready: HashMap<OrgId, Instant>,
    /// Lines whose last run failed in the engine: until when they wait,
    /// and how many of their runs failed in a row.
    cooling: HashMap<Line, (Instant, u32)>,
}

impl Slots {
    /// Whether the line may not start now: it has an event in flight, or
    /// it is cooling down after a failed run.
    pub fn busy(&self, install: InstallId, agent: AgentId, now: Instant) -> bool {
        let line = (install, agent);
        self.lines.contains_key(&line) || self.cooling.get(&line).is_some_and(|(until, _)| now < *until)
    }

    /// The line starts an event of `org`.
    pub fn take(&mut self, org: OrgId, install: InstallId, agent: AgentId) {
        if self.lines.insert((install, agent), org).is_none() {
            *self.held.entry(org).or_default() += 1;
        }
    }

    /// The line's run ended well (its failures in a row are forgotten).
    pub fn free(&mut self, install: InstallId, agent: AgentId) {
        self.cooling.remove(&(install, agent));
        self.release((install, agent));
    }

    /// The line's run failed in the engine (an error, a panic) at `now`:
    /// free it, and offer it again only after its cool-down.
    pub fn failed(&mut self, install: InstallId, agent: AgentId, now: Instant) {
        self.release((install, agent));
        // Lines that have not failed for a while start again from the
        // shortest wait (and are not kept for ever).
        self.cooling.retain(|_, (until, _)| now.saturating_duration_since(*until) < MAX_COOL_DOWN);
        let (until, failures) = self.cooling.entry((install, agent)).or_insert((now, 0));
        *failures = failures.saturating_add(1);
        let wait = COOL_DOWN.saturating_mul(1 << (*failures - 1).min(16)).min(MAX_COOL_DOWN);
        *until = now + wait;
    }

    /// Take the line out of flight.
    fn release(&mut self, line: Line) {
        let Some(org) = self.lines.remove(&line) else { return };
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
        let now = Instant::now();
        assert!(s.busy(InstallId::from(1), AgentId::from(1), now));
        s.free(InstallId::from(9), AgentId::from(9));
        s.free(InstallId::from(1), AgentId::from(1));
        assert!(!s.busy(InstallId::from(1), AgentId::from(1), now));
        assert_eq!(s.allowance(2, &[org(1)], Instant::now())[&org(1)], 2);
    }

    #[test]
    fn a_line_whose_run_failed_waits_longer_after_each_failure_in_a_row_and_not_after_a_success() {
        let mut s = Slots::default();
        let (install, agent, other) = (InstallId::from(1), AgentId::from(1), AgentId::from(2));
        let t0 = Instant::now();
        let ms = |n: u64| Duration::from_millis(n);
        let mut at = t0;
        // Fail, wait, fail again: 100, 200, 400 ms ... up to the bound.
        for wait in [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000] {
            s.take(org(1), install, agent);
            s.failed(install, agent, at);
            assert!(s.busy(install, agent, at + ms(wait - 1)), "cooling {wait} ms");
            assert!(!s.busy(install, agent, at + ms(wait)), "free after {wait} ms");
            assert!(!s.busy(install, other, at), "another line never waits for it");
            at += ms(wait);
        }
        assert_eq!(s.allowance(2, &[org(1)], at)[&org(1)], 2, "a cooling line holds no slot");
        // A run that ends well forgets the failures.
        s.take(org(1), install, agent);
        s.free(install, agent);
        s.take(org(1), install, agent);
        s.failed(install, agent, at);
        assert!(!s.busy(install, agent, at + ms(100)), "back to the shortest wait");
        // So does a long quiet spell after a failure.
        s.take(org(1), install, agent);
        s.failed(install, agent, at + ms(100));
        s.take(org(1), install, agent);
        s.failed(install, agent, at + ms(300) + MAX_COOL_DOWN);
        assert!(!s.busy(install, agent, at + ms(400) + MAX_COOL_DOWN), "back to the shortest wait");
    }
}

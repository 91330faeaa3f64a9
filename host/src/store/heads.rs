//! The runnable-heads index: where each (installation, agent) line's first
//! event is, per organisation in due order, kept in memory beside the open
//! database.
//!
//! Only the first event of a line may run, so picking due work needs the
//! lines' heads, not the backlog: without this index every pick walked the
//! organisation's queue in due order and decoded each event it met (with a
//! deep backlog, a third of the engine's CPU). The index holds one entry
//! per line with queued events — memory grows with lines, not events — and
//! is rebuilt from `keyq` whenever the database is (re)opened, one seek per
//! line.
//!
//! Every write that queues or removes an event updates it after its
//! transaction commits. The index is a guide, never the authority: a pick
//! checks each head it offers against `keyq` (one point read) and repairs
//! an entry that disagrees, so a race between two writers' updates can
//! delay an event by one pick but never run one out of its line's order.

use std::collections::{BTreeSet, HashMap};

use super::queue::QueuedEvent;
use super::{StoreError, keys};
use crate::model::{AgentId, EventId, InstallId, OrgId};

/// An (installation, agent) line.
type Line = (InstallId, AgentId);

/// Where a line's first event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Head {
    pub org: OrgId,
    pub due_ms: u64,
    pub id: EventId,
    pub seq: u64,
}

impl Head {
    fn of(e: &QueuedEvent) -> Head {
        Head { org: e.organisation_id, due_ms: e.due_ms, id: e.id, seq: e.seq }
    }

    /// Its key in the `queue` tree.
    pub fn queue_key(&self) -> [u8; 24] {
        keys::queued(self.org, self.due_ms, self.id)
    }
}

/// The index: each line's head, and per organisation the heads by due time.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Heads {
    lines: HashMap<Line, Head>,
    by_org: HashMap<OrgId, BTreeSet<(u64, EventId, Line)>>,
}

impl Heads {
    /// Build it from `keyq`: the first place of every line, one seek each.
    pub fn build(keyq: &sled::Tree) -> Result<Heads, StoreError> {
        let mut heads = Heads::default();
        let mut from = Vec::new();
        while let Some(entry) = keyq.range(from.as_slice()..).next() {
            let (place, queue_key) = entry?;
            let (line, head) = parse(&place, &queue_key)?;
            heads.set(line, head);
            // Past every place of this line: its 16-byte prefix, then more
            // 0xff than any 8-byte sequence number.
            from = [&place[..16], &[0xff; 9][..]].concat();
        }
        Ok(heads)
    }

    /// `e` was queued (committed): it heads its line if the line had
    /// nothing earlier.
    pub fn queued(&mut self, e: &QueuedEvent) {
        let line = (e.install_id, e.agent_id);
        if self.lines.get(&line).is_none_or(|h| e.seq <= h.seq) {
            self.set(line, Head::of(e));
        }
    }

    /// `e` left the queue (committed): if it headed its line, the line's
    /// head is read again from `keyq`. The write it follows stands either
    /// way: if that read fails, the entry is left as it was, and the next
    /// pick that offers it finds it stale and reads the line again.
    pub fn removed(&mut self, e: &QueuedEvent, keyq: &sled::Tree) {
        let line = (e.install_id, e.agent_id);
        if self.lines.get(&line).is_some_and(|h| h.id == e.id)
            && let Err(error) = self.reread(line, keyq)
        {
            tracing::warn!(%error, install = %e.install_id, agent = %e.agent_id, "reading a line's next head failed; the next pick reads it again");
        }
    }

    /// Set `line`'s head from `keyq` as it is now (or drop the line).
    pub fn reread(&mut self, line: Line, keyq: &sled::Tree) -> Result<(), StoreError> {
        match first(keyq, line)? {
            Some(head) => self.set(line, head),
            None => self.drop_line(line),
        }
        Ok(())
    }

    /// Heads of `org` due at `now_ms`, earliest first, skipping lines
    /// `skip` names: at most `most` of them.
    pub fn due(&self, org: OrgId, now_ms: u64, most: usize, skip: impl Fn(Line) -> bool) -> Vec<(Line, Head)> {
        let Some(set) = self.by_org.get(&org) else { return Vec::new() };
        set.iter()
            .take_while(|(due, ..)| *due <= now_ms)
            .filter(|(.., line)| !skip(*line))
            .take(most)
            .filter_map(|(.., line)| self.lines.get(line).map(|h| (*line, *h)))
            .collect()
    }

    /// Organisations with queued events.
    pub fn orgs(&self) -> Vec<OrgId> {
        let mut orgs: Vec<OrgId> = self.by_org.keys().copied().collect();
        orgs.sort();
        orgs
    }

    fn set(&mut self, line: Line, head: Head) {
        self.drop_line(line);
        self.lines.insert(line, head);
        self.by_org.entry(head.org).or_default().insert((head.due_ms, head.id, line));
    }

    fn drop_line(&mut self, line: Line) {
        if let Some(old) = self.lines.remove(&line)
            && let Some(set) = self.by_org.get_mut(&old.org)
        {
            set.remove(&(old.due_ms, old.id, line));
            if set.is_empty() {
                self.by_org.remove(&old.org);
            }
        }
    }
}

/// `line`'s first event as `keyq` has it now.
pub(super) fn first(keyq: &sled::Tree, line: Line) -> Result<Option<Head>, StoreError> {
    let Some((place, queue_key)) = keyq.scan_prefix(keys::line(line.0, line.1)).next().transpose()? else {
        return Ok(None);
    };
    Ok(Some(parse(&place, &queue_key)?.1))
}

/// A `keyq` entry: its line and the head it names.
fn parse(place: &[u8], queue_key: &[u8]) -> Result<(Line, Head), StoreError> {
    let corrupt =
        || StoreError::Corrupt { what: "line place", reason: format!("{} / {} bytes", place.len(), queue_key.len()) };
    let word =
        |b: &[u8], i: usize| -> Option<u64> { Some(u64::from_be_bytes(b.get(i * 8..i * 8 + 8)?.try_into().ok()?)) };
    let (Some(install), Some(agent), Some(seq)) = (word(place, 0), word(place, 1), word(place, 2)) else {
        return Err(corrupt());
    };
    let (Some(org), Some(due_ms), Some(id)) = (word(queue_key, 0), word(queue_key, 1), word(queue_key, 2)) else {
        return Err(corrupt());
    };
    let line = (InstallId::from(install), AgentId::from(agent));
    Ok((line, Head { org: OrgId::from(org), due_ms, id: EventId::from(id), seq }))
}

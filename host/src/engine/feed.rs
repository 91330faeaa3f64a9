//! The engine's side of the monitor feed: which organisations have their
//! commits written to the feed, and how far the feed is durable.
//!
//! The writer writes feed entries inside each commit of a monitored
//! organisation (see `store::feed`) and, after the flush that makes a
//! cycle durable, moves the durable head past everything that cycle wrote.
//! Monitors read up to the head and wait on it for more: nothing a crash
//! could take back is ever pushed.

use std::collections::HashSet;
use std::sync::RwLock;

use tokio::sync::watch;

use crate::model::OrgId;

/// Shared by the writer (which advances the head) and the monitors (which
/// read up to it and say which organisations they watch).
#[derive(Debug)]
pub struct Feed {
    monitored: RwLock<HashSet<OrgId>>,
    head: watch::Sender<u64>,
}

impl Feed {
    /// A feed watching nobody, durable up to `head` (the store's feed mark
    /// at start: everything stored then is durable).
    pub fn new(head: u64) -> Feed {
        Feed { monitored: RwLock::default(), head: watch::Sender::new(head) }
    }

    /// From now on, write `org`'s commits to the feed. Call before its
    /// first monitor exists, so that nothing committed after the monitor
    /// is missed.
    pub fn watch_org(&self, org: OrgId) {
        self.monitored.write().unwrap_or_else(|p| p.into_inner()).insert(org);
    }

    /// Stop writing `org`'s commits to the feed (its last monitor is gone).
    pub fn unwatch_org(&self, org: OrgId) {
        self.monitored.write().unwrap_or_else(|p| p.into_inner()).remove(&org);
    }

    /// Whether `org`'s commits go to the feed.
    pub fn is_watched(&self, org: OrgId) -> bool {
        self.monitored.read().unwrap_or_else(|p| p.into_inner()).contains(&org)
    }

    /// Every feed entry with a sequence number below this is durable.
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    /// A receiver that sees the head move.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// The writer: entries below `mark` are durable now.
    pub(super) fn advance(&self, mark: u64) {
        self.head.send_if_modified(|head| {
            let moved = mark > *head;
            if moved {
                *head = mark;
            }
            moved
        });
    }
}

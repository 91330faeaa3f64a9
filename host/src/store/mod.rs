//! The store: every byte Paddock persists goes through here, and nothing
//! else in the code sees sled (so that a second backend can replace it,
//! DESIGN.md §7).
//!
//! It holds agents, channel aggregates and messages, the durable event
//! queue and dead letters, and commits an invocation's effects together
//! with its event's acknowledgement in **one sled transaction**. Durability
//! is group commit: [`Store::flush`] covers every write before it, and no
//! caller may report "accepted" or "done" before the flush that covers it.

mod catalog;
mod commit;
mod feed;
mod heads;
mod invocations;
mod keys;
mod monitors;
mod queue;
mod recovery;
mod retention;
mod schedules;
mod state;
mod unreadable;

pub use catalog::{IngestionRecord, InstallRecord, OrgRecord, TokenRecord};
pub use commit::{Claim, Commit};
pub use feed::{FeedEntry, FeedKind, FeedOp};
pub use invocations::InvocationSummary;
pub use monitors::{HttpTarget, MonitorRecord, MonitorSpec, MonitorState, MonitorStatus, Transport};
pub use queue::{DeadLetter, QueuedEvent, Runnable};
pub use retention::Stale;
pub use schedules::ScheduleState;
pub use unreadable::{UnreadableEvent, UnreadableHead};

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

/// A store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The storage failed: an I/O error, or damage the database found.
    #[error("storage error: {reason}")]
    Storage {
        /// The I/O error's kind, if it was one.
        io: Option<std::io::ErrorKind>,
        /// What the database said.
        reason: String,
    },
    /// A stored record could not be decoded.
    #[error("corrupt {what} record: {reason}")]
    Corrupt {
        /// Which kind of record.
        what: &'static str,
        /// The decoding error.
        reason: String,
    },
    /// A commit refers to an agent that does not exist.
    #[error("agent {0} does not exist")]
    UnknownAgent(crate::model::AgentId),
    /// The event is not (or no longer) in the queue: it was acknowledged
    /// already, so its effects must not be applied again.
    #[error("event {0} is not queued (already acknowledged or dead-lettered)")]
    NotQueued(crate::model::EventId),
    /// The commit follows another in its run ([`Commit::chained`]) that
    /// was refused: nothing of it was applied, and its event stays queued
    /// (it ran on state that included the refused commit's effects).
    #[error("not applied: the commit before it in its run was refused")]
    RunBroken,
    /// A uniqueness rule would be broken (e.g. an app key taken on an agent).
    #[error("conflict: {0}")]
    Conflict(String),
    /// An aggregate would grow past [`MAX_AGGREGATE_BYTES`]: nothing of the
    /// commit was applied.
    #[error("the aggregate of channel {channel} would be {bytes} bytes; the limit is {limit}")]
    AggregateTooLarge {
        /// The channel (`agent/name`).
        channel: String,
        /// Its size after the write.
        bytes: usize,
        /// [`MAX_AGGREGATE_BYTES`].
        limit: usize,
    },
    /// The idempotency key a commit claimed is already held: what it
    /// guards was stored before, so nothing was applied this time.
    #[error("idempotency key {key:?} was already seen")]
    Duplicate {
        /// The key.
        key: String,
    },
    /// Writes could not be made durable.
    #[error("cannot make the writes durable: {0}")]
    Flush(String),
    /// The store cannot make writes durable now (a failed or stalled
    /// flush: a full disk, an I/O error); it recovers by itself once it
    /// can write again. Nothing was accepted.
    #[error("the store is not writable: {0}")]
    NotWritable(String),
    /// The store is being reopened after a write failure: try again shortly.
    #[error("the store is being reopened after a write failure; try again shortly")]
    Unavailable,
}

impl StoreError {
    /// Whether the storage itself is out of space (ENOSPC, EDQUOT).
    pub fn is_storage_full(&self) -> bool {
        match self {
            StoreError::NotWritable(reason) | StoreError::Flush(reason) => {
                ["No space left on device", "Disk quota exceeded", "StorageFull"].iter().any(|s| reason.contains(s))
            }
            StoreError::Storage { io: Some(kind), .. } => {
                matches!(kind, std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded)
            }
            _ => false,
        }
    }

    /// Whether the store could not write (full, failing or reopening),
    /// as opposed to a request it refused.
    pub fn is_unwritable(&self) -> bool {
        matches!(
            self,
            StoreError::NotWritable(_)
                | StoreError::Unavailable
                | StoreError::Flush(_)
                | StoreError::Storage { io: Some(_), .. }
        )
    }
}

/// sled's errors, as the store's own: no sled type leaves this module.
impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> StoreError {
        let io = match &e {
            sled::Error::Io(io) => Some(io.kind()),
            _ => None,
        };
        StoreError::Storage { io, reason: e.to_string() }
    }
}

/// Largest aggregate kept, serialized: an aggregate is read whole by every
/// invocation that fetches it and sent whole with every PATCH answer, so
/// it is bounded like a payload (4x the largest single payload).
pub const MAX_AGGREGATE_BYTES: usize = 1024 * 1024;

/// The embedded store.
#[derive(Clone)]
pub struct Store {
    /// The open database; `None` while it is being reopened after a write
    /// failure (see `recovery`). Every operation takes its own handle.
    trees: Arc<RwLock<Option<Arc<Trees>>>>,
    /// Where it lives (`None`: a temporary store, never reopened).
    dir: Option<PathBuf>,
    /// The page cache's bound, bytes (see [`Store::open_with`]).
    cache: u64,
    /// Whether writes can be made durable, and why not.
    health: Arc<recovery::Health>,
    /// Keeps transactions and flushes apart. sled 0.34 deadlocks when a
    /// transaction waits for its concurrency-control write lock while a
    /// flush holds the read side waiting for log stability (seen under
    /// concurrent ingress in the engine bench: flush threads, a commit and
    /// an iterator all parked). Transactions share the gate; a flush takes
    /// it alone.
    gate: Arc<RwLock<()>>,
    /// Group commit: concurrent `flush` callers share flushes (see `flush`).
    flushes: Arc<FlushTickets>,
}

/// Longest a caller waits for a flush; past it, the store refuses writes
/// (as not writable) until the flush ends: a healthy flush takes
/// milliseconds, and a disk that cannot take the write must not keep a
/// client waiting past any sensible timeout.
pub const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// The store's page cache by default, bytes: with a deep backlog the
/// cache is most of the server's memory (1,000,000 queued events: ~1.3 GiB
/// of RSS with sled's own default of 1 GiB), and a smaller one costs little
/// (`PADDOCK_BENCH_ONLY=memory`, docs/benchmarks.md).
pub const DEFAULT_CACHE: u64 = 256 * 1024 * 1024;

/// Free space the store keeps on its filesystem by default: writes are
/// refused below it, so sled itself never meets a full disk (sled 0.34 can
/// wedge a flush when it does). Room for many flushes' worth of writes.
pub const DEFAULT_RESERVE: u64 = 64 * 1024 * 1024;

/// Every tree of one open sled database.
pub(crate) struct Trees {
    db: sled::Db,
    agents: sled::Tree,
    serials: sled::Tree,
    aggregates: sled::Tree,
    messages: sled::Tree,
    queue: sled::Tree,
    keyq: sled::Tree,
    dead: sled::Tree,
    invocations: sled::Tree,
    schedules: sled::Tree,
    orgs: sled::Tree,
    installs: sled::Tree,
    app_keys: sled::Tree,
    tokens: sled::Tree,
    ingestions: sled::Tree,
    seen: sled::Tree,
    feed: sled::Tree,
    monitors: sled::Tree,
    monitor_state: sled::Tree,
    monitor_ids: sled::Tree,
    /// Queued events that could not be read, set aside (see `unreadable`).
    unreadable: sled::Tree,
    /// Each queue line's first event (see `heads`): built when the
    /// database opens, kept by every write that queues or removes.
    heads: std::sync::Mutex<heads::Heads>,
    /// Ingestion endpoints as read: every ingestion request reads its own.
    endpoints: std::sync::Mutex<Kept<crate::model::IngestionId, IngestionRecord>>,
}

/// Records kept in memory as read, by key, for reads on hot paths that
/// must not wait for the writer (every sled read waits while a transaction
/// holds sled's process-wide lock). A record changes only through the
/// store's own writes, which drop it here after writing ([`Kept::changed`]);
/// a read keeps what it read only if no change came since it looked here,
/// so a read that raced a change (a token rotated, an endpoint deleted)
/// never keeps the record from before it. Used where it was measured to
/// pay (docs/benchmarks.md): the ingestion endpoint each ingestion
/// request checks. At most [`Kept::MOST`] records (past it, the cache
/// starts again empty).
#[derive(Debug)]
pub(crate) struct Kept<K, V> {
    changes: u64,
    records: std::collections::HashMap<K, V>,
}

impl<K, V> Default for Kept<K, V> {
    fn default() -> Self {
        Kept { changes: 0, records: std::collections::HashMap::new() }
    }
}

impl<K: std::hash::Hash + Eq, V: Clone> Kept<K, V> {
    /// Most records kept.
    const MOST: usize = 1 << 20;

    /// The record kept for `key`, or how many changes there have been (to
    /// hand to [`Kept::keep`] after reading the store).
    fn get(&self, key: &K) -> Result<V, u64> {
        self.records.get(key).cloned().ok_or(self.changes)
    }

    /// `key` was written: forget it.
    fn changed(&mut self, key: &K) {
        self.changes += 1;
        self.records.remove(key);
    }

    /// Keep `value`, read from the store after [`Kept::get`] saw `changes`
    /// changes, if no change came since.
    fn keep(&mut self, changes: u64, key: K, value: V) {
        if self.changes != changes {
            return;
        }
        if self.records.len() >= Self::MOST {
            self.records.clear();
        }
        self.records.insert(key, value);
    }
}

impl Trees {
    fn open(db: sled::Db) -> Result<Trees, StoreError> {
        let keyq = db.open_tree("keyq")?;
        let (queue, unreadable) = (db.open_tree("queue")?, db.open_tree("unreadable")?);
        let requeued = unreadable::requeue_readable(&db, &unreadable, &queue, &keyq)?;
        if requeued > 0 {
            tracing::info!(requeued, "queued again: events set aside by a build that could not read them");
        }
        let dead = db.open_tree("dead")?;
        let rekeyed = queue::rekey_dead_letters(&db, &dead)?;
        if rekeyed > 0 {
            tracing::info!(rekeyed, "dead letters moved to their organisations' keys");
        }
        Ok(Trees {
            heads: std::sync::Mutex::new(heads::Heads::build(&keyq)?),
            endpoints: std::sync::Mutex::default(),
            keyq,
            agents: db.open_tree("agents")?,
            serials: db.open_tree("serials")?,
            aggregates: db.open_tree("aggregates")?,
            messages: db.open_tree("messages")?,
            queue,
            dead,
            invocations: db.open_tree("invocations")?,
            schedules: db.open_tree("schedules")?,
            orgs: db.open_tree("orgs")?,
            installs: db.open_tree("installs")?,
            app_keys: db.open_tree("app_keys")?,
            tokens: db.open_tree("tokens")?,
            ingestions: db.open_tree("ingestions")?,
            seen: db.open_tree("seen")?,
            feed: db.open_tree("feed")?,
            monitors: db.open_tree("monitors")?,
            monitor_state: db.open_tree("monitor_state")?,
            monitor_ids: db.open_tree("monitor_ids")?,
            unreadable,
            db,
        })
    }

    /// The heads index, locked.
    fn heads(&self) -> std::sync::MutexGuard<'_, heads::Heads> {
        self.heads.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The ingestion endpoints read so far, locked.
    fn endpoints(&self) -> std::sync::MutexGuard<'_, Kept<crate::model::IngestionId, IngestionRecord>> {
        self.endpoints.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store {
    /// Open (or create) the store in `dir`, keeping [`DEFAULT_RESERVE`]
    /// bytes free.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Self::open_with_reserve(dir, DEFAULT_RESERVE)
    }

    /// Open (or create) the store in `dir`; writes are refused while its
    /// filesystem has less than `reserve` bytes free (see `recovery`).
    pub fn open_with_reserve(dir: &Path, reserve: u64) -> Result<Store, StoreError> {
        Self::open_with(dir, reserve, DEFAULT_CACHE)
    }

    /// Open (or create) the store in `dir`, keeping `reserve` bytes free
    /// on its filesystem and at most about `cache` bytes of it in memory
    /// (sled's page cache: most of the store's memory, whatever the
    /// backlog; the rest is read from the OS's file cache when needed).
    pub fn open_with(dir: &Path, reserve: u64, cache: u64) -> Result<Store, StoreError> {
        let db = Self::config(dir, cache).open()?;
        let store = Self::from_db(db, Some(dir.to_path_buf()), cache)?;
        store.health.set_reserve(reserve);
        Ok(store)
    }

    /// A store in a temporary directory, removed when dropped (tests).
    pub fn temporary() -> Result<Store, StoreError> {
        Self::from_db(sled::Config::new().temporary(true).cache_capacity(DEFAULT_CACHE).open()?, None, DEFAULT_CACHE)
    }

    /// How the database in `dir` is opened (and reopened by `recovery`).
    fn config(dir: &Path, cache: u64) -> sled::Config {
        sled::Config::new().path(dir).cache_capacity(cache)
    }

    fn from_db(db: sled::Db, dir: Option<PathBuf>, cache: u64) -> Result<Store, StoreError> {
        Ok(Store {
            trees: Arc::new(RwLock::new(Some(Arc::new(Trees::open(db)?)))),
            dir,
            cache,
            health: Arc::default(),
            gate: Arc::default(),
            flushes: Arc::default(),
        })
    }

    /// The open database, or [`StoreError::Unavailable`] while it is
    /// being reopened.
    fn t(&self) -> Result<Arc<Trees>, StoreError> {
        let trees = self.trees.read().unwrap_or_else(|p| p.into_inner());
        trees.clone().ok_or(StoreError::Unavailable)
    }

    /// Make every write so far durable. Group commit: a caller takes a
    /// ticket after its writes; a flush that starts after reading the
    /// latest ticket covers every caller up to it, so concurrent callers
    /// share one flush instead of queueing one each.
    ///
    /// A flush that fails, or takes longer than [`FLUSH_TIMEOUT`], marks
    /// the store not writable (see [`Store::write_failure`]) and starts
    /// its recovery.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let ticket = self.flushes.requested.fetch_add(1, Ordering::SeqCst) + 1;
        let _one_at_a_time = self.flushes.lock.lock().await;
        if self.flushes.completed.load(Ordering::SeqCst) >= ticket {
            return Ok(());
        }
        self.check_writable()?;
        let covers = self.flushes.requested.load(Ordering::SeqCst);
        let (trees, gate, health) = (self.t()?, Arc::clone(&self.gate), Arc::clone(&self.health));
        let flushing = tokio::task::spawn_blocking(move || {
            let _alone = gate.write().unwrap_or_else(|p| p.into_inner());
            let _timed = health.flushing();
            trees.db.flush()
        });
        let failure = match tokio::time::timeout(FLUSH_TIMEOUT, flushing).await {
            Ok(Ok(Ok(_))) => {
                self.flushes.completed.store(covers, Ordering::SeqCst);
                return Ok(());
            }
            Ok(Ok(Err(sled::Error::Io(e)))) => e.to_string(),
            Ok(Ok(Err(e))) => e.to_string(),
            Ok(Err(e)) => format!("the flush task failed: {e}"),
            Err(_) => {
                // Slow is not failed: a big flush on a slow disk can take
                // this long, and it goes on. The caller is answered in
                // bounded time; while the flush runs past the bound, writes
                // are refused at once (`write_failure`), and they resume
                // when it ends.
                return Err(StoreError::NotWritable(format!(
                    "a flush has been running for more than {}s",
                    FLUSH_TIMEOUT.as_secs()
                )));
            }
        };
        self.failed(&failure);
        Err(StoreError::NotWritable(failure))
    }

    /// Make every write so far durable on this thread, which must not be
    /// an async runtime's (the writer's own thread: its flush is inline,
    /// not a hand-off to a blocking pool). A failure marks the store not
    /// writable, as [`Store::flush`] does.
    pub fn flush_blocking(&self) -> Result<(), StoreError> {
        self.check_writable()?;
        let trees = self.t()?;
        let _alone = self.gate.write().unwrap_or_else(|p| p.into_inner());
        let _timed = self.health.flushing();
        match trees.db.flush() {
            Ok(_) => Ok(()),
            Err(e) => {
                let reason = match e {
                    sled::Error::Io(e) => e.to_string(),
                    other => other.to_string(),
                };
                self.failed(&reason);
                Err(StoreError::NotWritable(reason))
            }
        }
    }

    /// Declare the store not writable (a write that stalled past its
    /// bound) and start recovering.
    pub fn mark_failed(&self, reason: &str) {
        self.failed(reason);
    }

    /// Hold every flush back until the guard is dropped (writes still
    /// apply): what a slow disk looks like to the writer.
    #[cfg(test)]
    pub(crate) fn hold_flushes(&self) -> std::sync::RwLockReadGuard<'_, ()> {
        self.gate.read().unwrap_or_else(|p| p.into_inner())
    }

    /// Run a transaction under the shared side of the gate (see `gate`),
    /// unless the store is not writable (then at once, without the gate).
    pub(crate) fn gated<R>(&self, run: impl FnOnce() -> Result<R, StoreError>) -> Result<R, StoreError> {
        self.check_writable()?;
        let _shared = self.gate.read().unwrap_or_else(|p| p.into_inner());
        run()
    }
}

/// Flush tickets: callers requested, flushes completed up to.
#[derive(Default)]
struct FlushTickets {
    requested: AtomicU64,
    completed: AtomicU64,
    lock: tokio::sync::Mutex<()>,
}

fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    // Serializing our own plain data types to JSON cannot fail (no maps
    // with non-string keys, no custom serializers that error).
    serde_json::to_vec(value).unwrap_or_default()
}

/// Every record of `tree` this build can read, in key order (see
/// [`readable_of`]).
fn readable<T: DeserializeOwned>(what: &'static str, tree: &sled::Tree) -> Result<Vec<T>, StoreError> {
    readable_of(what, tree.iter(), usize::MAX)
}

/// The first `limit` records of `entries` this build can read. One it
/// cannot (written by a newer version, or damaged) is skipped and reported
/// once per process: a scan that every tenant depends on (the schedules to
/// fire, the installations restored at start, the organisations retention
/// walks, a tenant's dead letters) must not fail for all of them because
/// of one record. A storage error still fails the scan.
fn readable_of<T: DeserializeOwned>(
    what: &'static str,
    entries: impl Iterator<Item = sled::Result<(sled::IVec, sled::IVec)>>,
    limit: usize,
) -> Result<Vec<T>, StoreError> {
    let mut out = Vec::new();
    for entry in entries {
        if out.len() >= limit {
            break;
        }
        let (key, value) = entry?;
        match decode(what, &value) {
            Ok(record) => out.push(record),
            Err(e) => report_unreadable(what, &key, &e),
        }
    }
    Ok(out)
}

/// Log a record a scan skipped, once per record and process (a scan may
/// run every 250 ms), at most for the first [`REPORTED_MAX`] records.
fn report_unreadable(what: &'static str, key: &[u8], error: &StoreError) {
    static REPORTED: std::sync::Mutex<Vec<(&'static str, Vec<u8>)>> = std::sync::Mutex::new(Vec::new());
    let mut reported = REPORTED.lock().unwrap_or_else(|p| p.into_inner());
    if reported.len() >= REPORTED_MAX || reported.iter().any(|(w, k)| *w == what && k == key) {
        return;
    }
    reported.push((what, key.to_vec()));
    tracing::error!(record = what, key = %hex::encode(key), %error, "skipping a stored record this build cannot read");
}

/// Most skipped records [`report_unreadable`] remembers (and logs).
const REPORTED_MAX: usize = 1024;

fn decode<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, StoreError> {
    serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt { what, reason: e.to_string() })
}

#[cfg(test)]
mod tests;

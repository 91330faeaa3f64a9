//! Write health: a reserve of free space, and recovery from write
//! failures (a full disk, an I/O error, a stalled flush).
//!
//! Writes are refused (507) while the data directory's filesystem has less
//! free space than the reserve, checked at most every [`SPACE_CHECK`]: so
//! sled never meets a full disk in the first place, and writes resume as
//! soon as space is freed. That matters because sled 0.34 handles a full
//! disk badly: it keeps the first I/O error for good: once a flush has failed,
//! every later write fails too, even after space is freed. So on a failed
//! (or stalled) flush the store marks itself not writable, writes are
//! refused at once instead of waiting on the disk, and a recovery thread
//! waits until the directory takes a probe write again, then reopens the
//! database. Reopening reads back the last durable state — writes that
//! were never made durable (so never acknowledged) are dropped with it —
//! and clears sled's error. Reads keep working from the old database until
//! the reopen itself.

use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How often the free space is looked at (a `statvfs`), at most.
const SPACE_CHECK: Duration = Duration::from_millis(200);

use super::{Store, StoreError, Trees};

/// Room a reopen needs before it is tried: sled writes a new log segment
/// when it opens, and a segment is 512 KiB by default.
const PROBE_BYTES: usize = 1024 * 1024;
/// First wait between recovery attempts; doubles up to [`MAX_RETRY`].
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(10);
/// Longest wait for operations in flight to release the old database.
const RELEASE_WAIT: Duration = Duration::from_secs(5);

/// Whether writes can be made durable.
#[derive(Default)]
pub(super) struct Health {
    /// Why not, while they cannot (a failed or stalled write).
    failure: Mutex<Option<String>>,
    /// Free bytes to keep (0: no reserve).
    reserve: AtomicU64,
    /// When free space was last looked at, and what was wrong then.
    space: Mutex<Option<(Instant, Option<String>)>>,
    /// A recovery thread is running.
    recovering: AtomicBool,
    /// Reopens so far.
    generation: AtomicU64,
    /// When the flush under way started, if one is.
    flushing_since: Mutex<Option<Instant>>,
}

/// Marks a flush as under way while alive.
pub(super) struct Flushing<'a>(&'a Health);

impl Drop for Flushing<'_> {
    fn drop(&mut self) {
        *self.0.flushing_since.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl Health {
    pub(super) fn set_reserve(&self, bytes: u64) {
        self.reserve.store(bytes, Ordering::Relaxed);
    }

    /// A flush starts; it ends when the guard is dropped.
    pub(super) fn flushing(&self) -> Flushing<'_> {
        *self.flushing_since.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
        Flushing(self)
    }

    /// A flush running past [`super::FLUSH_TIMEOUT`] (a slow or stalled disk).
    fn stalled(&self) -> Option<String> {
        let since = (*self.flushing_since.lock().unwrap_or_else(|p| p.into_inner()))?;
        let running = since.elapsed();
        (running > super::FLUSH_TIMEOUT)
            .then(|| format!("a flush has been running for {}s (a slow or stalled disk)", running.as_secs()))
    }
}

impl Store {
    /// Why writes cannot be made durable now, if they cannot: a failed
    /// write not yet recovered from, free space below the reserve, or a
    /// flush running past its bound.
    pub fn write_failure(&self) -> Option<String> {
        let failure = self.health.failure.lock().unwrap_or_else(|p| p.into_inner()).clone();
        failure.or_else(|| self.low_space()).or_else(|| self.health.stalled())
    }

    /// Free space below the reserve, looked at most every [`SPACE_CHECK`].
    fn low_space(&self) -> Option<String> {
        let reserve = self.health.reserve.load(Ordering::Relaxed);
        let dir = self.dir.as_ref().filter(|_| reserve > 0)?;
        let mut space = self.health.space.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((at, verdict)) = space.as_ref()
            && at.elapsed() < SPACE_CHECK
        {
            return verdict.clone();
        }
        let verdict = match rustix::fs::statvfs(dir.as_path()) {
            Ok(s) if s.f_bavail.saturating_mul(s.f_frsize) < reserve => Some(format!(
                "No space left on device: {} bytes free in the data directory, below the {reserve} kept in reserve",
                s.f_bavail.saturating_mul(s.f_frsize)
            )),
            Ok(_) => None,
            // Cannot tell: let the write itself find out.
            Err(_) => None,
        };
        *space = Some((Instant::now(), verdict.clone()));
        verdict
    }

    /// How many times the database was reopened after a failure: the
    /// state may have gone back to the last durable write since a caller
    /// last looked (the engine recounts its queue then).
    pub fn generation(&self) -> u64 {
        self.health.generation.load(Ordering::Acquire)
    }

    /// Record a write failure and start recovering (once).
    pub(super) fn failed(&self, reason: &str) {
        {
            let mut failure = self.health.failure.lock().unwrap_or_else(|p| p.into_inner());
            if failure.is_none() {
                tracing::error!(%reason, "the store cannot make writes durable; writes are refused until it recovers");
                *failure = Some(reason.to_owned());
            }
        }
        if self.dir.is_some() && !self.health.recovering.swap(true, Ordering::AcqRel) {
            let store = self.clone();
            let spawned = std::thread::Builder::new().name("store-recovery".into()).spawn(move || recover(&store));
            if let Err(e) = spawned {
                tracing::error!(error = %e, "cannot start the store's recovery thread");
                self.health.recovering.store(false, Ordering::Release);
            }
        }
    }

    /// Fail fast while the store is not writable (before taking the gate,
    /// which a stalled flush may hold).
    pub(super) fn check_writable(&self) -> Result<(), StoreError> {
        match self.write_failure() {
            Some(reason) => Err(StoreError::NotWritable(reason)),
            None => Ok(()),
        }
    }

    /// Reopen the database once the directory takes writes again.
    fn reopen(&self, dir: &Path) -> Result<(), StoreError> {
        probe(dir).map_err(|e| StoreError::NotWritable(format!("the data directory still cannot be written: {e}")))?;
        let old = self.trees.write().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(old) = old
            && let Err(old) = release(old)
        {
            // Something still reads the old database: keep serving it and
            // try again later.
            *self.trees.write().unwrap_or_else(|p| p.into_inner()) = Some(old);
            return Err(StoreError::Unavailable);
        }
        let db = Store::config(dir, self.cache).open()?;
        db.insert(b"paddock-recovery-probe", &crate::model::now_ms().to_be_bytes())?;
        db.flush()?;
        *self.trees.write().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(Trees::open(db)?));
        Ok(())
    }
}

/// The recovery thread: retry with backoff until the store is writable.
fn recover(store: &Store) {
    let Some(dir) = store.dir.clone() else { return };
    let mut wait = FIRST_RETRY;
    loop {
        std::thread::sleep(wait);
        match store.reopen(&dir) {
            Ok(()) => {
                store.health.generation.fetch_add(1, Ordering::AcqRel);
                *store.health.failure.lock().unwrap_or_else(|p| p.into_inner()) = None;
                tracing::info!("the store is writable again (reopened at its last durable state)");
                break;
            }
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?wait, "the store is still not writable");
                wait = (wait * 2).min(MAX_RETRY);
            }
        }
    }
    store.health.recovering.store(false, Ordering::Release);
}

/// Wait for every other holder of `trees` to let go, then drop it (closing
/// the database and its file lock). Gives it back if that takes too long.
fn release(mut trees: Arc<Trees>) -> Result<(), Arc<Trees>> {
    let deadline = Instant::now() + RELEASE_WAIT;
    loop {
        match Arc::try_unwrap(trees) {
            Ok(only) => {
                drop(only);
                return Ok(());
            }
            Err(shared) if Instant::now() < deadline => {
                trees = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(shared) => return Err(shared),
        }
    }
}

/// Write and sync [`PROBE_BYTES`] in `dir`, then remove them.
fn probe(dir: &Path) -> std::io::Result<()> {
    let path = dir.join(".paddock-write-probe");
    let written = std::fs::File::create(&path).and_then(|mut f| {
        f.write_all(&vec![0u8; PROBE_BYTES])?;
        f.sync_all()
    });
    let _ = std::fs::remove_file(&path);
    written
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_past_its_bound_refuses_writes_only_while_it_runs() {
        let store = Store::temporary().unwrap();
        assert_eq!(store.write_failure(), None);
        {
            let running = store.health.flushing();
            assert_eq!(store.write_failure(), None, "a flush within its bound is normal");
            let long_ago = Instant::now().checked_sub(super::super::FLUSH_TIMEOUT + Duration::from_secs(1));
            *store.health.flushing_since.lock().unwrap() = long_ago;
            let failure = store.write_failure().unwrap_or_default();
            assert!(failure.contains("a flush has been running for"), "{failure}");
            assert!(matches!(store.check_writable(), Err(StoreError::NotWritable(_))));
            drop(running);
        }
        assert_eq!(store.write_failure(), None, "writes resume when it ends, with no reopen");
        assert_eq!(store.generation(), 0);
    }
}

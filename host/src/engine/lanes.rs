//! Ingress lanes: each organisation's durable writes go through one writer.
//!
//! A request hands its write (effects plus the events they raise) to its
//! organisation's lane and awaits the result. The lane's writer — one task
//! per busy organisation, spawned on demand — commits whatever is waiting,
//! each write in its own transaction, then makes the whole batch durable
//! with one flush and answers every request. So a flooding tenant keeps at
//! most one task busy writing, however many requests it has open (the
//! others wait without running), while its requests still share flushes;
//! another tenant's writes go through their own lane at the same time.
//!
//! The writer is a spawned task, not one of the requests, so a request that
//! is dropped (a client that hangs up) never abandons a batch half written.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::caps::Effects;
use crate::model::OrgId;
use crate::store::{Claim, Commit, QueuedEvent, Store, StoreError};

/// One write waiting in a lane.
struct Pending {
    effects: Effects,
    events: Vec<QueuedEvent>,
    now_ms: u64,
    claim: Option<Claim>,
    done: oneshot::Sender<Result<(), StoreError>>,
}

#[derive(Default)]
struct Lane {
    waiting: Mutex<Vec<Pending>>,
    /// A writer task is running for this lane.
    writing: AtomicBool,
}

/// Every organisation's lane.
pub(super) struct Lanes {
    lanes: Mutex<HashMap<OrgId, Arc<Lane>>>,
    /// Most writes one batch (one flush) takes.
    max_batch: usize,
}

impl Lanes {
    /// Lanes whose batches take at most `max_batch` writes (at least 1).
    pub fn new(max_batch: usize) -> Self {
        Self { lanes: Mutex::default(), max_batch: max_batch.max(1) }
    }

    /// Write `effects` and `events` through `org`'s lane, with the
    /// idempotency key they claim if any; returns once they are durable
    /// (or failed).
    pub async fn write(
        &self,
        store: &Store,
        org: OrgId,
        effects: Effects,
        events: Vec<QueuedEvent>,
        now_ms: u64,
        claim: Option<Claim>,
    ) -> Result<(), StoreError> {
        let lane = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|p| p.into_inner());
            Arc::clone(lanes.entry(org).or_default())
        };
        let (done, result) = oneshot::channel();
        lane.waiting.lock().unwrap_or_else(|p| p.into_inner()).push(Pending { effects, events, now_ms, claim, done });
        if !lane.writing.swap(true, Ordering::AcqRel) {
            tokio::spawn(drain(store.clone(), lane, self.max_batch));
        }
        result.await.unwrap_or_else(|_| Err(StoreError::Flush("the ingress writer stopped".into())))
    }
}

/// Frees the lane if its writer unwinds, so the next write spawns a new
/// writer instead of waiting forever.
struct Unwinding<'a>(&'a Lane);

impl Drop for Unwinding<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.writing.store(false, Ordering::Release);
        }
    }
}

/// The lane's writer: batches until nothing waits.
async fn drain(store: Store, lane: Arc<Lane>, max_batch: usize) {
    let _unwinding = Unwinding(&lane);
    loop {
        let batch: Vec<Pending> = {
            let mut waiting = lane.waiting.lock().unwrap_or_else(|p| p.into_inner());
            let n = waiting.len().min(max_batch);
            waiting.drain(..n).collect()
        };
        if batch.is_empty() {
            lane.writing.store(false, Ordering::Release);
            // A write that arrived between the drain and the store above saw
            // a writer running and spawned none: take it (unless a new
            // writer already did).
            let more = !lane.waiting.lock().unwrap_or_else(|p| p.into_inner()).is_empty();
            if more && !lane.writing.swap(true, Ordering::AcqRel) {
                continue;
            }
            return;
        }
        let mut results = Vec::with_capacity(batch.len());
        for p in &batch {
            let written = {
                let _writable = store.writable().await;
                let commit = Commit {
                    ack: None,
                    effects: &p.effects,
                    downstream: &p.events,
                    now_ms: p.now_ms,
                    summary: None,
                    claim: p.claim.as_ref(),
                };
                store.commit(commit)
            };
            results.push(written);
            // One transaction per poll: a big batch does not hold a runtime
            // thread for long.
            tokio::task::yield_now().await;
        }
        let flushed = store.flush().await.map_err(|e| e.to_string());
        for (p, written) in batch.into_iter().zip(results) {
            // A duplicate is answered only once the flush has covered it
            // too: the claim it ran into may be one this batch wrote.
            let result = match written {
                Ok(()) | Err(StoreError::Duplicate { .. }) => flushed.clone().map_err(StoreError::Flush).and(written),
                Err(e) => Err(e),
            };
            // The request may have gone away; its write stands.
            let _ = p.done.send(result);
        }
    }
}

//! The write path: one writer owns the hot store writes.
//!
//! Ingress (messages, aggregate writes, invokes, ingestion events,
//! deployments) and the dispatcher's commits (acknowledgement + effects +
//! downstream events + summary) are handed to one writer thread as
//! [`Write`]s; retries, dead letters, redrive, schedule fires and
//! installation changes as operations ([`Writer::apply`]). Each cycle it takes what waits — in a fair order: one write
//! per organisation in turn, so a flooding tenant's backlog cannot fill a
//! cycle ahead of another tenant's write — applies all of it as **one**
//! atomic write ([`Store::commit_batch`], each write with its own verdict),
//! runs the operations after it, makes it durable with **one** flush on its own thread, then answers every
//! waiter at once. Nobody is told "accepted" before the flush that covers
//! its write; a commit of the dispatcher is answered as soon as it is
//! applied (an acknowledgement lost in a crash only re-runs the event, and
//! its effects were not applied either). A write alone is not kept waiting
//! for company: the writer starts a cycle as soon as anything waits, and
//! batches grow with the load by themselves.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::oneshot;

use super::feed::Feed;
use crate::caps::Effects;
use crate::model::OrgId;
use crate::store::{Claim, Commit, FLUSH_TIMEOUT, InvocationSummary, QueuedEvent, Store, StoreError};

/// Longest a caller waits for its write: past it the store is declared not
/// writable (a stalled disk), and the caller gets an error.
const WRITE_TIMEOUT: Duration = Duration::from_secs(FLUSH_TIMEOUT.as_secs() + 2);

/// Most writes of one organisation in one cycle while other organisations
/// wait: a flood cannot make the cycle (and so the flush) that another
/// tenant's write waits for long. A tenant alone is not capped.
const PER_ORG_PER_CYCLE: usize = 8;

/// One write for the writer.
pub(super) struct Write {
    /// Whose write (for the fair order).
    pub org: OrgId,
    /// The event it acknowledges (a dispatcher commit), if any.
    pub ack: Option<QueuedEvent>,
    /// Messages and aggregate writes.
    pub effects: Effects,
    /// Events raised, queued with it.
    pub downstream: Vec<QueuedEvent>,
    /// The commit time, Unix ms.
    pub now_ms: u64,
    /// The invocation's summary (a dispatcher commit).
    pub summary: Option<InvocationSummary>,
    /// An idempotency key claimed with it.
    pub claim: Option<Claim>,
    /// Answer only once durable (ingress); else once applied.
    pub durable: bool,
}

impl Write {
    /// An ingress write: no acknowledgement, durable before it is answered.
    pub fn ingress(org: OrgId, effects: Effects, downstream: Vec<QueuedEvent>, claim: Option<Claim>) -> Write {
        let now_ms = crate::model::now_ms();
        Write { org, ack: None, effects, downstream, now_ms, summary: None, claim, durable: true }
    }

    fn commit(&self, feed: bool) -> Commit<'_> {
        Commit {
            feed,
            ack: self.ack.as_ref(),
            effects: &self.effects,
            downstream: &self.downstream,
            now_ms: self.now_ms,
            summary: self.summary.as_ref(),
            claim: self.claim.as_ref(),
        }
    }
}

/// A store operation run by the writer in its cycle (rescheduling, dead
/// letters, schedule fires, catalog changes): each is its own atomic write,
/// applied after the cycle's commits and covered by the cycle's flush.
type Op = Box<dyn FnOnce(&Store) -> Result<(), StoreError> + Send>;

enum Work {
    Commit(Box<Write>),
    Op(Op),
}

/// Where a job's verdict goes.
type Answer = oneshot::Sender<Result<(), StoreError>>;

struct Job {
    org: OrgId,
    /// Answer only once durable; else once applied.
    durable: bool,
    work: Work,
    done: Answer,
}

/// What waits, per organisation, and whose turn is next.
#[derive(Default)]
struct Waiting {
    by_org: HashMap<OrgId, VecDeque<Job>>,
    /// Organisations with writes waiting, in turn order.
    turns: VecDeque<OrgId>,
    stopped: bool,
}

impl Waiting {
    fn push(&mut self, job: Job) {
        let org = job.org;
        let queue = self.by_org.entry(org).or_default();
        if queue.is_empty() {
            self.turns.push_back(org);
        }
        queue.push_back(job);
    }

    /// Up to `most` writes, one per organisation in turn, at most
    /// [`PER_ORG_PER_CYCLE`] of any one organisation while others wait: so
    /// a cycle stays short under one tenant's flood, and another tenant's
    /// write waits at most one short cycle.
    fn take(&mut self, most: usize) -> Vec<Job> {
        let mut batch = Vec::new();
        let mut taken: HashMap<OrgId, usize> = HashMap::new();
        let mut next_cycle = Vec::new();
        while batch.len() < most
            && let Some(org) = self.turns.pop_front()
        {
            let Some(queue) = self.by_org.get_mut(&org) else { continue };
            if let Some(job) = queue.pop_front() {
                batch.push(job);
            }
            let count = taken.entry(org).or_default();
            *count += 1;
            if queue.is_empty() {
                self.by_org.remove(&org);
            } else if *count >= PER_ORG_PER_CYCLE && !(self.turns.is_empty() && next_cycle.is_empty()) {
                next_cycle.push(org);
            } else {
                self.turns.push_back(org);
            }
        }
        self.turns.extend(next_cycle);
        batch
    }
}

struct Shared {
    waiting: Mutex<Waiting>,
    ready: Condvar,
    feed: Arc<Feed>,
}

/// The writer: a handle to its thread, which stops when this is dropped.
pub(super) struct Writer {
    shared: Arc<Shared>,
    store: Store,
}

impl Writer {
    /// Start the writer thread over `store`; a cycle takes at most
    /// `max_batch` writes.
    pub fn start(store: Store, max_batch: usize, feed: Arc<Feed>) -> std::io::Result<Writer> {
        let shared = Arc::new(Shared { waiting: Mutex::default(), ready: Condvar::new(), feed });
        let (thread_store, thread_shared) = (store.clone(), Arc::clone(&shared));
        std::thread::Builder::new()
            .name("paddock-writer".into())
            .spawn(move || run(&thread_store, &thread_shared, max_batch.max(1)))?;
        Ok(Writer { shared, store })
    }

    /// Hand `write` to the writer and wait for its verdict: after the flush
    /// that makes it durable when `write.durable`, else once applied.
    pub async fn write(&self, write: Write) -> Result<(), StoreError> {
        let (org, durable) = (write.org, write.durable);
        self.submit(org, durable, Work::Commit(Box::new(write))).await
    }

    /// Run `op` on the writer (between other writes, never beside them)
    /// and return what it returned: after the flush that makes it durable
    /// when `durable`, else once applied. `op` is one atomic write.
    pub async fn apply<T: Send + 'static>(
        &self,
        org: OrgId,
        durable: bool,
        op: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let slot = Arc::new(Mutex::new(None));
        let filled = Arc::clone(&slot);
        let op: Op = Box::new(move |store| {
            let value = op(store)?;
            *filled.lock().unwrap_or_else(|p| p.into_inner()) = Some(value);
            Ok(())
        });
        self.submit(org, durable, Work::Op(op)).await?;
        let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        value.ok_or_else(|| StoreError::Flush("the writer lost a result".into()))
    }

    async fn submit(&self, org: OrgId, durable: bool, work: Work) -> Result<(), StoreError> {
        if let Some(reason) = self.store.write_failure() {
            return Err(StoreError::NotWritable(reason));
        }
        let (done, verdict) = oneshot::channel();
        {
            let mut waiting = self.shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.push(Job { org, durable, work, done });
        }
        self.shared.ready.notify_one();
        match tokio::time::timeout(WRITE_TIMEOUT, verdict).await {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(_)) => Err(StoreError::Flush("the writer stopped".into())),
            Err(_) => {
                let reason = format!("a write took longer than {}s", WRITE_TIMEOUT.as_secs());
                self.store.mark_failed(&reason);
                Err(StoreError::NotWritable(reason))
            }
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        self.shared.waiting.lock().unwrap_or_else(|p| p.into_inner()).stopped = true;
        self.shared.ready.notify_one();
    }
}

/// The writer thread: cycles until stopped and drained.
fn run(store: &Store, shared: &Shared, max_batch: usize) {
    loop {
        let jobs = {
            let mut waiting = shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
            while waiting.turns.is_empty() {
                if waiting.stopped {
                    return;
                }
                waiting = shared.ready.wait(waiting).unwrap_or_else(|p| p.into_inner());
            }
            waiting.take(max_batch)
        };
        cycle(store, &shared.feed, jobs);
    }
}

/// One cycle: the commits as one atomic write, then the operations, then
/// one flush; each waiter answered once what it needs is done.
fn cycle(store: &Store, feed: &Feed, jobs: Vec<Job>) {
    let mut commits = Vec::new();
    let mut ops = Vec::new();
    for job in jobs {
        match job.work {
            Work::Commit(write) => commits.push((write, job.durable, job.done)),
            Work::Op(op) => ops.push((op, job.durable, job.done)),
        }
    }
    let watched: Vec<bool> = commits.iter().map(|(w, ..)| feed.is_watched(w.org)).collect();
    // Operations may write the feed too (an agent created).
    let fed = watched.contains(&true) || !ops.is_empty();
    let applied = {
        let batch: Vec<Commit<'_>> = commits.iter().zip(&watched).map(|((w, ..), fed)| w.commit(*fed)).collect();
        store.commit_batch(&batch)
    };
    let verdicts: Vec<Result<(), StoreError>> = match applied {
        Ok(verdicts) => verdicts,
        Err(e) => commits.iter().map(|_| Err(replicate(&e))).collect(),
    };
    let mut done: Vec<(bool, Result<(), StoreError>, Answer)> =
        commits.into_iter().zip(verdicts).map(|((_, durable, tx), verdict)| (durable, verdict, tx)).collect();
    done.extend(ops.into_iter().map(|(op, durable, tx)| (durable, op(store), tx)));

    // Applied, not durable yet: answer those that need no flush, and every
    // refusal but a duplicate (which waits for the claim it met).
    let mut after_flush = Vec::new();
    let mut wrote = false;
    for (durable, verdict, tx) in done {
        wrote |= verdict.is_ok();
        if durable && matches!(verdict, Ok(()) | Err(StoreError::Duplicate { .. })) {
            after_flush.push((verdict, tx));
        } else {
            // The caller may have gone away; its write stands.
            let _ = tx.send(verdict);
        }
    }
    if !wrote && after_flush.is_empty() {
        return;
    }
    let flushed = store.flush_blocking();
    match &flushed {
        Err(e) => tracing::error!(error = %e, "flushing the writer's cycle failed"),
        // Everything this cycle wrote to the feed is durable: below the
        // next number the store would draw.
        Ok(()) if fed => match store.feed_mark() {
            Ok(mark) => feed.advance(mark),
            Err(e) => tracing::error!(error = %e, "reading the feed mark failed"),
        },
        Ok(()) => {}
    }
    for (verdict, tx) in after_flush {
        let verdict = match &flushed {
            Ok(()) => verdict,
            Err(e) => Err(replicate(e)),
        };
        let _ = tx.send(verdict);
    }
}

/// The same failure, for every write of a failed cycle.
fn replicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotWritable(reason) => StoreError::NotWritable(reason.clone()),
        StoreError::Unavailable => StoreError::Unavailable,
        other => StoreError::Flush(other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(org: u64) -> Job {
        let (done, _) = oneshot::channel();
        let op: Op = Box::new(|_| Ok(()));
        Job { org: OrgId::from(org), durable: false, work: Work::Op(op), done }
    }

    fn orgs(jobs: &[Job]) -> Vec<u64> {
        jobs.iter().map(|j| j.org.get()).collect()
    }

    #[test]
    fn organisations_take_turns_and_a_flood_is_capped_only_while_others_wait() {
        let mut waiting = Waiting::default();
        for _ in 0..20 {
            waiting.push(job(1));
        }
        for _ in 0..10 {
            waiting.push(job(2));
        }
        // Turns alternate; each is capped at 8 while the other waits.
        assert_eq!(orgs(&waiting.take(256)), [1, 2].repeat(8));
        // Once 2 has nothing left, 1 is alone and not capped.
        let mut second = [1, 2].repeat(2);
        second.extend([1; 10]);
        assert_eq!(orgs(&waiting.take(256)), second);
        assert!(waiting.take(256).is_empty());
    }

    #[test]
    fn a_cycle_takes_at_most_its_bound_and_the_rest_waits_its_turn() {
        let mut waiting = Waiting::default();
        for org in [1, 1, 1, 2, 3] {
            waiting.push(job(org));
        }
        assert_eq!(orgs(&waiting.take(2)), [1, 2]);
        assert_eq!(orgs(&waiting.take(2)), [3, 1]);
        assert_eq!(orgs(&waiting.take(2)), [1]);
    }
}

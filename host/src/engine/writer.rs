//! The write path: one writer owns the hot store writes.
//!
//! Ingress (messages, aggregate writes, invokes, ingestion events,
//! deployments) and the dispatcher's commits (acknowledgement + effects +
//! downstream events + summary) are handed to one writer thread as
//! [`Write`]s — a line's run as one job of several ([`Writer::write_run`]),
//! each applied only if the one before it was; retries, dead letters,
//! redrive, schedule fires and installation changes as operations
//! ([`Writer::apply`]). Each cycle it takes what waits — in a fair order:
//! one job per organisation in turn, at most [`PER_ORG_PER_CYCLE`] writes
//! of one organisation while others wait, so a flooding tenant's backlog
//! cannot fill a cycle ahead of another tenant's write — applies all of it
//! as **one** atomic write ([`Store::commit_batch`], each write with its
//! own verdict), runs the operations after it, makes it durable with
//! **one** flush on its own thread, then answers every waiter at once.
//! Nobody is told "accepted" before the flush that covers its write; a
//! commit of the dispatcher is answered as soon as it is applied (an
//! acknowledgement lost in a crash only re-runs the event, and its effects
//! were not applied either). The dispatcher is woken as soon as what a
//! cycle queued is applied, not after the flush. A write alone is not
//! kept waiting for company: the writer starts a cycle as soon as anything
//! waits, and batches grow with the load by themselves.

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

    fn commit(&self, feed: bool, chained: bool) -> Commit<'_> {
        Commit {
            feed,
            chained,
            ack: self.ack.as_ref(),
            effects: &self.effects,
            downstream: &self.downstream,
            placed: true,
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

/// Where an operation's verdict goes.
type Answer = oneshot::Sender<Result<(), StoreError>>;

/// Where a run's verdicts go, one per write, with the writes themselves:
/// they are freed by the caller's task, not on the writer's thread, which
/// every other write waits for.
type Answers = oneshot::Sender<(Vec<Result<(), StoreError>>, Vec<Write>)>;

enum Work {
    /// Writes applied in order, each only if the one before it was (one
    /// write, or one line's run of commits).
    Run(Vec<Write>, Answers),
    Op(Op, Answer),
}

struct Job {
    org: OrgId,
    /// Answer only once durable; else once applied.
    durable: bool,
    work: Work,
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

    /// Up to `most` writes, one job per organisation in turn, at most
    /// [`PER_ORG_PER_CYCLE`] writes of any one organisation while others
    /// wait: so a cycle stays short under one tenant's flood, and another
    /// tenant's write waits at most one short cycle. A run's writes go in
    /// one cycle together: its job is taken whole (the bounds may be
    /// passed by one run), and a cycle always takes at least one job.
    fn take(&mut self, most: usize) -> Vec<Job> {
        let mut batch = Vec::new();
        let mut writes = 0;
        let mut taken: HashMap<OrgId, usize> = HashMap::new();
        let mut next_cycle = Vec::new();
        while (batch.is_empty() || writes < most)
            && let Some(org) = self.turns.pop_front()
        {
            let Some(queue) = self.by_org.get_mut(&org) else { continue };
            let count = taken.entry(org).or_default();
            if let Some(job) = queue.pop_front() {
                *count += job.writes();
                writes += job.writes();
                batch.push(job);
            }
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

impl Job {
    /// How many writes it holds (a run's commits; an operation counts one).
    fn writes(&self) -> usize {
        match &self.work {
            Work::Run(writes, _) => writes.len().max(1),
            Work::Op(..) => 1,
        }
    }
}

struct Shared {
    waiting: Mutex<Waiting>,
    ready: Condvar,
    feed: Arc<Feed>,
    /// The dispatcher's wake-up: signalled once a cycle's writes that
    /// queue events are applied.
    queued: Arc<tokio::sync::Notify>,
}

/// The writer: a handle to its thread, which stops when this is dropped.
pub(super) struct Writer {
    shared: Arc<Shared>,
    store: Store,
}

impl Writer {
    /// Start the writer thread over `store`; a cycle takes at most
    /// `max_batch` writes, and signals `queued` as soon as it applied
    /// writes that queue events.
    pub fn start(
        store: Store,
        max_batch: usize,
        feed: Arc<Feed>,
        queued: Arc<tokio::sync::Notify>,
    ) -> std::io::Result<Writer> {
        let shared = Arc::new(Shared { waiting: Mutex::default(), ready: Condvar::new(), feed, queued });
        let (thread_store, thread_shared) = (store.clone(), Arc::clone(&shared));
        std::thread::Builder::new()
            .name("paddock-writer".into())
            .spawn(move || run(&thread_store, &thread_shared, max_batch.max(1)))?;
        Ok(Writer { shared, store })
    }

    /// Hand `write` to the writer and wait for its verdict: after the flush
    /// that makes it durable when `write.durable`, else once applied.
    pub async fn write(&self, write: Write) -> Result<(), StoreError> {
        let verdicts = self.write_run(vec![write]).await?;
        verdicts.into_iter().next().unwrap_or(Ok(()))
    }

    /// Hand one line's run of commits to the writer, all in one cycle and
    /// in order, each applied only if the one before it was (else
    /// [`StoreError::RunBroken`]): each ran on the state its predecessors'
    /// effects left. Returns each write's verdict, in order; the outer
    /// error is the store failing (then nothing was applied). All of the
    /// run's writes are of one organisation and equally durable.
    pub async fn write_run(&self, run: Vec<Write>) -> Result<Vec<Result<(), StoreError>>, StoreError> {
        let Some(first) = run.first() else { return Ok(Vec::new()) };
        let (org, durable) = (first.org, first.durable);
        let (done, verdicts) = oneshot::channel();
        let (verdicts, _writes) = self.submit(Job { org, durable, work: Work::Run(run, done) }, verdicts).await?;
        Ok(verdicts)
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
        let (done, verdict) = oneshot::channel();
        self.submit(Job { org, durable, work: Work::Op(op, done) }, verdict).await??;
        let value = slot.lock().unwrap_or_else(|p| p.into_inner()).take();
        value.ok_or_else(|| StoreError::Flush("the writer lost a result".into()))
    }

    /// Queue `job` for the writer and wait for what it answers on `verdict`.
    async fn submit<T>(&self, job: Job, verdict: oneshot::Receiver<T>) -> Result<T, StoreError> {
        if let Some(reason) = self.store.write_failure() {
            return Err(StoreError::NotWritable(reason));
        }
        {
            let mut waiting = self.shared.waiting.lock().unwrap_or_else(|p| p.into_inner());
            waiting.push(job);
        }
        self.shared.ready.notify_one();
        match tokio::time::timeout(WRITE_TIMEOUT, verdict).await {
            Ok(Ok(verdict)) => Ok(verdict),
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
        // A bug in one of the cycle's writes (a panic) must not stop every
        // later write: its waiters hear "the writer stopped" (their answers
        // are dropped: whether it was applied is unknown, as after any
        // failure that is not a refusal), and the writer goes on.
        let cycled = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| cycle(store, shared, jobs)));
        if cycled.is_err() {
            tracing::error!("a writer cycle panicked; its writes were answered with an error");
        }
    }
}

/// One cycle: the commits as one atomic write, then the operations, then
/// one flush; each waiter answered once what it needs is done. The
/// dispatcher is woken as soon as what the cycle queued is applied, not
/// after the flush: an event may run while the write that queued it is
/// being made durable, since its own commit comes in a later cycle, which
/// no flush makes durable before this one (a crash loses both).
fn cycle(store: &Store, shared: &Shared, jobs: Vec<Job>) {
    let feed = &shared.feed;
    let mut runs = Vec::new();
    let mut ops = Vec::new();
    for job in jobs {
        match job.work {
            Work::Run(writes, done) => runs.push((writes, job.durable, done)),
            Work::Op(op, done) => ops.push((op, job.durable, done)),
        }
    }
    let mut fed = !ops.is_empty(); // operations may write the feed too (an agent created)
    // The events each write queues get their places in their lines here,
    // in the writes the writer owns (else the commit would copy them).
    let placed =
        runs.iter_mut().flat_map(|(writes, ..)| writes.iter_mut()).try_for_each(|w| store.place(&mut w.downstream));
    let applied = placed.and_then(|()| {
        let mut batch: Vec<Commit<'_>> = Vec::new();
        for (writes, ..) in &runs {
            for (i, w) in writes.iter().enumerate() {
                let watched = feed.is_watched(w.org);
                fed |= watched;
                batch.push(w.commit(watched, i > 0));
            }
        }
        store.commit_batch(&batch)
    });
    let mut verdicts = match applied {
        Ok(verdicts) => verdicts,
        Err(e) => runs.iter().flat_map(|(writes, ..)| writes.iter().map(|_| Err(replicate(&e)))).collect(),
    }
    .into_iter();

    // Applied, not durable yet: answer those that need no flush, and every
    // refusal but a duplicate (which waits for the claim it met).
    let needs_flush = |v: &Result<(), StoreError>| matches!(v, Ok(()) | Err(StoreError::Duplicate { .. }));
    let mut wrote = false;
    let mut queued = false;
    let mut runs_after_flush = Vec::new();
    for (writes, durable, done) in runs {
        let run: Vec<Result<(), StoreError>> = verdicts.by_ref().take(writes.len()).collect();
        wrote |= run.iter().any(Result::is_ok);
        queued |= writes.iter().zip(&run).any(|(w, v)| v.is_ok() && !w.downstream.is_empty());
        if durable && run.iter().any(needs_flush) {
            runs_after_flush.push((run, writes, done));
        } else {
            // The caller may have gone away; its writes stand.
            let _ = done.send((run, writes));
        }
    }
    let mut ops_after_flush = Vec::new();
    for (op, durable, done) in ops {
        let verdict = op(store);
        // An operation may queue (redrive, a schedule's fire).
        queued |= verdict.is_ok();
        wrote |= verdict.is_ok();
        if durable && needs_flush(&verdict) {
            ops_after_flush.push((verdict, done));
        } else {
            let _ = done.send(verdict);
        }
    }
    if queued {
        shared.queued.notify_one();
    }
    if !wrote && runs_after_flush.is_empty() && ops_after_flush.is_empty() {
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
    // What the flush did not make durable failed.
    let flush_verdict = |verdict: Result<(), StoreError>| match (&flushed, verdict) {
        (Err(e), v) if needs_flush(&v) => Err(replicate(e)),
        (_, v) => v,
    };
    for (run, writes, done) in runs_after_flush {
        let _ = done.send((run.into_iter().map(flush_verdict).collect(), writes));
    }
    for (verdict, done) in ops_after_flush {
        let _ = done.send(flush_verdict(verdict));
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
        Job { org: OrgId::from(org), durable: false, work: Work::Op(op, done) }
    }

    /// A run of `writes` commits of `org`.
    fn run(org: u64, writes: usize) -> Job {
        let (done, _) = oneshot::channel();
        let write = || Write::ingress(OrgId::from(org), Effects::default(), Vec::new(), None);
        Job { org: OrgId::from(org), durable: false, work: Work::Run((0..writes).map(|_| write()).collect(), done) }
    }

    fn orgs(jobs: &[Job]) -> Vec<u64> {
        jobs.iter().map(|j| j.org.get()).collect()
    }

    /// An event queued for installation 1 on agent 1 of organisation 1.
    fn queued_event(id: u64) -> QueuedEvent {
        let now = crate::model::now_ms();
        QueuedEvent {
            id: crate::model::EventId::from(id),
            organisation_id: OrgId::from(1),
            install_id: 1.into(),
            agent_id: 1.into(),
            event: crate::model::EventEnvelope { op: "on_manual_invoke".into(), d: serde_json::json!({}) },
            attempt: 1,
            depth: 0,
            enqueued_ms: now,
            enqueued_us: now * 1000,
            due_ms: now,
            seq: 0,
        }
    }

    #[tokio::test]
    #[allow(clippy::await_holding_lock, reason = "the held flush is the point: the writer is another thread")]
    async fn the_dispatcher_is_woken_once_a_queued_event_is_applied_not_once_it_is_durable() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let queued = Arc::new(tokio::sync::Notify::new());
        let feed = Arc::new(Feed::new(store.feed_mark().unwrap()));
        let writer = Writer::start(store.clone(), 256, feed, Arc::clone(&queued)).unwrap();
        let wait = Duration::from_secs(5);

        // A write that queues nothing wakes nobody.
        writer.write(Write::ingress(OrgId::from(1), Effects::default(), Vec::new(), None)).await.unwrap();
        assert!(tokio::time::timeout(Duration::from_millis(200), queued.notified()).await.is_err());

        // The disk is slow: the write that queues an event applies, and the
        // dispatcher hears of it, while its flush (and so its answer) waits.
        let held = store.hold_flushes();
        let write = Write::ingress(OrgId::from(1), Effects::default(), vec![queued_event(7)], None);
        let answer = tokio::spawn(async move { writer.write(write).await });
        tokio::time::timeout(wait, queued.notified()).await.expect("woken before the flush");
        assert_eq!(store.queued().unwrap().len(), 1, "the event is in the queue");
        assert!(!answer.is_finished(), "not accepted before it is durable");
        drop(held);
        tokio::time::timeout(wait, answer).await.unwrap().unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_write_that_panics_fails_alone_and_the_writer_goes_on() {
        let store = Store::temporary().unwrap();
        let feed = Arc::new(Feed::new(store.feed_mark().unwrap()));
        let writer = Writer::start(store.clone(), 256, feed, Arc::new(tokio::sync::Notify::new())).unwrap();
        let bug = writer.apply(OrgId::from(1), true, |_| -> Result<(), StoreError> { panic!("a bug in an operation") });
        let failed = tokio::time::timeout(Duration::from_secs(5), bug).await.expect("answered, not left hanging");
        assert!(matches!(failed, Err(StoreError::Flush(ref m)) if m.contains("writer stopped")), "{failed:?}");
        let next = Write::ingress(OrgId::from(1), Effects::default(), vec![queued_event(8)], None);
        tokio::time::timeout(Duration::from_secs(5), writer.write(next)).await.unwrap().unwrap();
        assert_eq!(store.queued().unwrap().len(), 1, "the next write applied");
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

    #[test]
    fn a_run_is_taken_whole_and_counts_each_of_its_writes() {
        let mut waiting = Waiting::default();
        waiting.push(run(1, 20));
        waiting.push(job(1));
        waiting.push(job(2));
        waiting.push(run(3, 5));
        // Organisation 1's run passes its cap by itself: it waits for the
        // next cycle while the others go.
        assert_eq!(orgs(&waiting.take(256)), [1, 2, 3]);
        assert_eq!(orgs(&waiting.take(256)), [1]);
        // A cycle's bound counts writes, but always takes one job.
        waiting.push(run(1, 20));
        waiting.push(job(2));
        assert_eq!(orgs(&waiting.take(10)), [1]);
        assert_eq!(orgs(&waiting.take(10)), [2]);
    }
}

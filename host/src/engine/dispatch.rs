//! The dispatcher: run due events, commit or retry or bury each.

use std::collections::VecDeque;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::task::JoinSet;

use super::{Engine, EngineError, Installation, MAX_DEPTH, RetryPolicy};
use crate::caps::{Pending, StateView};
use crate::model::{ChannelName, ChannelRef, Event, Message, MessageId, OrgId, now_ms, well_known};
use crate::runtime::{Invocation, Outcome, Report};
use crate::store::{InvocationSummary, QueuedEvent, StoreError, UnreadableHead};

/// Most due events looked at per round.
const SCAN: usize = 1024;
/// How long the loop sleeps when nothing is due (ingress wakes it sooner).
const IDLE: Duration = Duration::from_millis(20);
/// Schedules are checked at most this often.
const SCHEDULE_EVERY_MS: u64 = 250;

/// The dispatcher's state: the lines with an event in flight and each
/// organisation's share of the slots, how many run at once, whose turn
/// comes first, and the retry policy.
pub(super) struct Dispatcher {
    /// Lines with an event in flight (at most one per (installation,
    /// agent)) and each organisation's share of the slots.
    slots: Mutex<super::slots::Slots>,
    /// Concurrent invocations at most.
    pub concurrency: usize,
    /// Dispatch rounds so far: rotates which organisation goes first.
    pub round: AtomicUsize,
    /// Retries and dead letters.
    pub policy: RetryPolicy,
    /// Most events of one line one dispatch runs back to back and commits
    /// together, and for how long it may take more (see
    /// [`EngineConfig::run_events`](super::EngineConfig)).
    pub run: (usize, Duration),
    /// Picks still to panic (tests of the loop's recovery only).
    #[cfg(test)]
    pub panics: AtomicUsize,
}

impl Dispatcher {
    /// A dispatcher running at most `concurrency` lines at once, each for
    /// a run of at most `run.0` events that takes no more after `run.1`.
    pub fn new(concurrency: usize, policy: RetryPolicy, run: (usize, Duration)) -> Self {
        let (concurrency, run) = (concurrency.max(1), (run.0.max(1), run.1));
        Self {
            slots: Mutex::default(),
            concurrency,
            round: AtomicUsize::new(0),
            policy,
            run,
            #[cfg(test)]
            panics: AtomicUsize::new(0),
        }
    }

    /// The slots in use.
    pub fn slots(&self) -> MutexGuard<'_, super::slots::Slots> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Engine {
    /// One round: start every due event that is first in its line (at most
    /// `concurrency`), wait for them, then flush once for all of them
    /// (group commit). Returns how many ran. Tests and tools drive the
    /// engine with this; a server uses [`Engine::run`].
    pub async fn run_once(self: &Arc<Self>) -> Result<usize, EngineError> {
        let now = now_ms();
        let fired = self.fire_schedules(now).await?;
        let picked = self.pick(now, self.dispatcher.concurrency)?;
        let ran = picked.events.len() + picked.unreadable.len();
        let mut tasks = JoinSet::new();
        self.start_all(&mut tasks, picked);
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            if let Err(e) = finished(joined) {
                first_error.get_or_insert(e);
            }
        }
        // An idle round wrote nothing: no flush.
        if fired + ran > 0 {
            self.store.flush().await?;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(ran),
        }
    }

    /// Dispatch continuously until `stop` resolves: whenever a slot frees
    /// (or ingress signals new work, or the idle timer ticks), start the
    /// next fair pick of due events. No invocation waits for another.
    ///
    /// Commits go to the writer, which answers once they are applied and
    /// makes them durable with the flush that ends its cycle. Nobody waits
    /// for that flush: an acknowledgement lost in a crash only means the
    /// event runs again, and its effects commit atomically with the
    /// acknowledgement, so they are never applied twice.
    ///
    /// On stop: start nothing new, let in-flight invocations finish and
    /// commit, then flush (graceful shutdown).
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        let mut tasks = JoinSet::new();
        let mut last_schedules = 0u64;
        let mut generation = self.store.generation();
        loop {
            let now = now_ms();
            if self.store.generation() != generation {
                // Reopened after a write failure: the queue is back at its
                // last durable state, and so must the counts be.
                generation = self.store.generation();
                if let Err(e) = self.recount() {
                    tracing::error!(error = %e, "recounting the queue failed");
                }
            }
            // While the store cannot write, nothing could be committed:
            // run nothing (and burn no CPU) until it recovers.
            let writable = self.store.write_failure().is_none();
            // A panic firing schedules or picking (a bug) must not stop
            // dispatching for good while ingress goes on accepting: it is
            // logged like an error, and the loop goes on (its in-flight
            // runs with it).
            if writable && now.saturating_sub(last_schedules) >= SCHEDULE_EVERY_MS {
                last_schedules = now;
                match futures_util::FutureExt::catch_unwind(AssertUnwindSafe(self.fire_schedules(now))).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => tracing::error!(error = %e, "firing schedules failed"),
                    Err(_) => tracing::error!("firing schedules panicked"),
                }
            }
            let free = self.dispatcher.concurrency.saturating_sub(tasks.len());
            if writable && free > 0 {
                match std::panic::catch_unwind(AssertUnwindSafe(|| self.pick(now, free))) {
                    Ok(Ok(picked)) => self.start_all(&mut tasks, picked),
                    Ok(Err(e)) => tracing::error!(error = %e, "picking due events failed"),
                    Err(_) => tracing::error!("picking due events panicked; the lines it took cool down"),
                }
            }
            tokio::select! {
                () = &mut stop => break,
                Some(joined) = tasks.join_next(), if !tasks.is_empty() => {
                    let _ = finished(joined);
                    // Take every other completion that is ready too, so
                    // one pick fills all the slots they freed.
                    while let Some(joined) = tasks.try_join_next() {
                        let _ = finished(joined);
                    }
                }
                () = self.wake.notified() => {}
                () = tokio::time::sleep(IDLE) => {}
            }
        }
        tracing::info!(in_flight = tasks.len(), "dispatcher stopping: draining in-flight invocations");
        while let Some(joined) = tasks.join_next().await {
            let _ = finished(joined);
        }
        if let Err(e) = self.store.flush().await {
            tracing::error!(error = %e, "final flush failed");
        }
    }

    /// Start what a pick found: each event's run, and the setting aside of
    /// each line head that could not be read. Each line is freed when its
    /// task ends.
    fn start_all(self: &Arc<Self>, tasks: &mut JoinSet<Result<(), EngineError>>, picked: Picked) {
        for event in picked.events {
            self.start(tasks, event);
        }
        for head in picked.unreadable {
            let engine = Arc::clone(self);
            let (install, agent) = (head.install_id, head.agent_id);
            tasks.spawn(holding_line(Arc::clone(&engine), install, agent, async move { engine.set_aside(head).await }));
        }
    }

    /// Set an unreadable line head aside (through the writer), so that its
    /// line goes on; its bytes are kept, listed with the organisation's
    /// dead letters.
    async fn set_aside(&self, head: UnreadableHead) -> Result<(), EngineError> {
        tracing::error!(
            organisation = %head.organisation_id,
            installation = %head.install_id,
            agent = %head.agent_id,
            event = %head.event_id,
            reason = %head.reason,
            "a queued event cannot be read by this build: setting it aside (listed with the organisation's dead letters)"
        );
        let org = head.organisation_id;
        let moved = self.writer.apply(org, false, move |store| store.set_aside(&head, now_ms())).await?;
        if moved {
            self.admission.settled(org, 1, 0);
        }
        Ok(())
    }

    /// Start one picked event; its line is freed when it ends.
    fn start(self: &Arc<Self>, tasks: &mut JoinSet<Result<(), EngineError>>, event: QueuedEvent) {
        let engine = Arc::clone(self);
        // Everything logged while the line's run goes and commits says
        // whose (and each event's own span, which event and attempt).
        let span = tracing::info_span!(
            "line",
            organisation = %event.organisation_id,
            installation = %event.install_id,
            agent = %event.agent_id,
        );
        let (install, agent) = (event.install_id, event.agent_id);
        let run = holding_line(Arc::clone(&engine), install, agent, async move { engine.process(event).await });
        tasks.spawn(tracing::Instrument::instrument(run, span));
    }

    /// Due events that may start now (first in their line, line not busy),
    /// shared fairly: each organisation starts at most its allowance (its
    /// share of the slots among active organisations minus what it holds,
    /// see [`slots`](super::slots)); within that, organisations take turns,
    /// one event each per turn, and the one that goes first rotates from
    /// pick to pick. Each organisation's due events are read from its own
    /// queue partition, so one tenant's backlog never hides another's.
    ///
    /// A line head this build cannot decode does not run and does not stop
    /// the pick: its line is taken, and it comes back in
    /// [`Picked::unreadable`] to be set aside.
    fn pick(&self, now: u64, slots: usize) -> Result<Picked, EngineError> {
        let mut held = Taking { slots: self.dispatcher.slots(), taken: Vec::new() };
        let mut turns: Vec<(OrgId, VecDeque<QueuedEvent>)> = Vec::new();
        let mut unreadable = Vec::new();
        let clock = std::time::Instant::now();
        for org in self.store.queued_orgs()? {
            // A tenant already at its share is not even read.
            let want = held.slots.at_most(self.dispatcher.concurrency, org, clock).min(slots);
            if want == 0 {
                continue;
            }
            let busy = |install, agent| held.slots.busy(install, agent, clock);
            let found = self.store.runnable_heads(org, now, want, SCAN, busy)?;
            for head in found.unreadable {
                held.take(org, head.install_id, head.agent_id);
                unreadable.push(head);
            }
            let runnable: VecDeque<QueuedEvent> = found.events.into();
            if !runnable.is_empty() {
                turns.push((org, runnable));
            }
        }
        let ready: Vec<OrgId> = turns.iter().map(|(org, _)| *org).collect();
        let allowance = held.slots.allowance(self.dispatcher.concurrency, &ready, clock);
        // Each organisation's turn: how many it may still start, and what.
        let mut turns: Vec<(OrgId, usize, VecDeque<QueuedEvent>)> =
            turns.into_iter().map(|(org, q)| (org, allowance.get(&org).copied().unwrap_or(0), q)).collect();
        if !turns.is_empty() {
            let first = self.dispatcher.round.fetch_add(1, Relaxed) % turns.len();
            turns.rotate_left(first);
        }
        let mut batch = Vec::new();
        while batch.len() < slots && turns.iter().any(|(_, left, q)| *left > 0 && !q.is_empty()) {
            for (org, left, turn) in &mut turns {
                if batch.len() >= slots {
                    break;
                }
                if *left == 0 {
                    continue;
                }
                if let Some(event) = turn.pop_front() {
                    held.take(*org, event.install_id, event.agent_id);
                    #[cfg(test)]
                    if self.dispatcher.panics.fetch_update(Relaxed, Relaxed, |n| n.checked_sub(1)).is_ok() {
                        panic!("a pick panics (injected)");
                    }
                    *left -= 1;
                    batch.push(event);
                }
            }
        }
        held.taken.clear(); // handed over: each line is freed by its task
        Ok(Picked { events: batch, unreadable })
    }

    /// Run a line's head, and the events queued right behind it (a run, see
    /// [`EngineConfig::run_events`](super::EngineConfig)), committing what
    /// ran as it goes: each event's acknowledgement with its effects, each
    /// applied only if the one before it was. Each event of the run reads
    /// the state its predecessors' effects leave ([`Pending`]), exactly as
    /// if each had committed before the next ran, so the run need not wait
    /// for its commits: what ran is handed to the writer whenever the
    /// writer is done with the run's previous chunk, and the run goes on
    /// meanwhile. The first event that does not end well ends the run; it
    /// is retried or dead-lettered once the events before it are committed.
    async fn process(self: &Arc<Self>, head: QueuedEvent) -> Result<(), EngineError> {
        let Some(inst) = self.installation(head.install_id) else {
            let reason = match self.store.install(head.install_id)? {
                Some(rec) => format!("app {:?} is not loaded (redrive once it is back)", rec.app),
                None => "installation no longer exists".to_owned(),
            };
            return self.bury(&head, &reason).await;
        };
        let (run_events, run_for) = self.dispatcher.run;
        let behind = self.store.line_after(&head, now_ms(), run_events - 1)?;
        let started = std::time::Instant::now();
        let view = Arc::new(Pending::new(Arc::new(self.store.clone())));
        // What ran and waits for the writer, and the chunk the writer has.
        let mut chunk: Vec<super::writer::Write> = Vec::new();
        let mut committing: Option<tokio::task::JoinHandle<Result<bool, EngineError>>> = None;
        let mut failed = None;
        for queued in std::iter::once(head).chain(behind) {
            if started.elapsed() > run_for && !(chunk.is_empty() && committing.is_none()) {
                break; // the rest waits for the next run
            }
            let span = tracing::info_span!("event", event = %queued.id, attempt = queued.attempt);
            let step = tracing::Instrument::instrument(self.step(&inst, &queued, Arc::clone(&view)), span).await;
            match step {
                Ok(Step::Ran(write)) => {
                    let laid = view.lay(&write.effects, write.now_ms);
                    chunk.push(*write);
                    if let Err(e) = laid {
                        // The next event cannot see this one's effects: it
                        // waits for the next run.
                        tracing::warn!(error = %e, "ending a run early: the store could not be read");
                        break;
                    }
                }
                other => {
                    failed = Some((queued, other));
                    break;
                }
            }
            if committing.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                if let Some(previous) = committing.take()
                    && !joined(previous.await)?
                {
                    // Something did not commit: what ran after it saw
                    // effects that are not the state. It stays queued.
                    return Ok(());
                }
                let (engine, writes) = (Arc::clone(self), std::mem::take(&mut chunk));
                committing = Some(tokio::spawn(async move { engine.commit_run(writes).await }));
            }
        }
        let stands = match committing {
            Some(last) => joined(last.await)?,
            None => true,
        };
        // Whatever ran after something that did not commit stays queued.
        if !stands || !self.commit_run(chunk).await? {
            return Ok(());
        }
        match failed {
            None => Ok(()),
            Some((_, Err(e))) => Err(e),
            Some((queued, Ok(Step::Retry { summary, due }))) => self.retry(queued, summary, due).await,
            Some((queued, Ok(Step::Bury { reason, summary }))) => self.bury_with(&queued, &reason, summary).await,
            Some((_, Ok(Step::Ran(_)))) => Ok(()),
        }
    }

    /// Run one event of a run on `view`: what became of it.
    async fn step(&self, inst: &Installation, queued: &QueuedEvent, view: Arc<Pending>) -> Result<Step, EngineError> {
        let now = now_ms();
        let bury = |reason: String| Ok(Step::Bury { reason, summary: None });
        if queued.depth > MAX_DEPTH {
            return bury(format!("loop: causal depth {} exceeds {MAX_DEPTH}", queued.depth));
        }
        let age = Duration::from_millis(now.saturating_sub(queued.enqueued_ms));
        if age > self.dispatcher.policy.max_age {
            return bury(format!("max event age exceeded ({age:?})"));
        }
        let event = match Event::from_envelope(queued.event.clone()) {
            Ok(event) => event,
            Err(e) => return bury(format!("unreadable event: {e}")),
        };
        let report = match refresh(event, view.as_ref()) {
            Ok(event) => {
                let inv = Invocation { event_id: queued.id, attempt: queued.attempt, event, grant: self.grant(inst) };
                self.runtime.invoke(&inst.app, inv, view).await
            }
            // The app never runs on an aggregate that could not be read (an
            // I/O error, a record this build cannot decode): a host error,
            // retried and then dead-lettered like any other, as a failed
            // read inside the invocation is.
            Err(e) => {
                let reason = format!("reading the event's aggregate failed: {e}");
                Report::nothing(Outcome::HostError { reason }, Duration::ZERO)
            }
        };
        let summary = summary(queued, &report);
        self.metrics.invocation(
            inst.organisation_id,
            &summary.status,
            report.duration.as_secs_f64(),
            report.fuel_consumed,
        );
        if report.outcome.is_ok() {
            let downstream = self.route(inst.organisation_id, &report.effects, Some(inst), queued.depth + 1, now_ms());
            // The summary is also a message on `dv-proc-inv-<install>`, as in
            // Doover, committed with the effects it describes.
            let mut effects = report.effects;
            if let Some(message) = summary_message(inst, &summary) {
                effects.messages.push(message);
            }
            return Ok(Step::Ran(Box::new(super::writer::Write {
                org: queued.organisation_id,
                ack: Some(queued.clone()),
                effects,
                downstream,
                now_ms: now_ms(),
                summary: Some(summary),
                claim: None,
                durable: false,
            })));
        }
        if report.outcome.is_retryable() && queued.attempt < self.dispatcher.policy.max_attempts {
            let delay = self.dispatcher.policy.delay(queued.attempt);
            let due = now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            return Ok(Step::Retry { summary, due });
        }
        Ok(Step::Bury { reason: describe(&report.outcome), summary: Some(summary) })
    }

    /// Commit a run's writes (see [`Engine::process`]). Returns whether all
    /// of them stand: applied, or acknowledged already by an earlier run.
    /// A commit the store refuses for good (an unknown agent, an aggregate
    /// too large) dead-letters its event; the events behind it stay queued.
    async fn commit_run(&self, writes: Vec<super::writer::Write>) -> Result<bool, EngineError> {
        if writes.is_empty() {
            return Ok(true);
        }
        let settles: Vec<(QueuedEvent, usize)> =
            writes.iter().filter_map(|w| Some((w.ack.clone()?, w.downstream.len()))).collect();
        let verdicts = self.writer.write_run(writes).await?;
        let mut stands = true;
        for ((queued, raised), verdict) in settles.iter().zip(verdicts) {
            match verdict {
                Ok(()) => self.admission.settled(queued.organisation_id, 1, *raised),
                // Acknowledged already (by an earlier run): nothing applied.
                Err(StoreError::NotQueued(_)) => {}
                // Behind a refused commit: not applied, still queued.
                Err(StoreError::RunBroken) => stands = false,
                // The same effects would fail the same way on a retry (a
                // stored record this build cannot read included: redrive
                // once a build that reads it runs).
                Err(
                    e @ (StoreError::UnknownAgent(_)
                    | StoreError::AggregateTooLarge { .. }
                    | StoreError::Corrupt { .. }),
                ) => {
                    stands = false;
                    self.bury(queued, &e.to_string()).await?;
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stands)
    }

    /// Record a failed attempt's summary and queue the event to run again
    /// at `due`.
    async fn retry(&self, queued: QueuedEvent, summary: InvocationSummary, due: u64) -> Result<(), EngineError> {
        let fed = self.feed_target(&queued);
        let retried = self
            .writer
            .apply(queued.organisation_id, false, move |store| {
                record_summary(store, &summary, fed)?;
                match store.reschedule(&queued, due) {
                    Ok(_) | Err(StoreError::NotQueued(_)) => Ok(()),
                    Err(e) => Err(e),
                }
            })
            .await;
        Ok(retried?)
    }

    /// Where a failed attempt's summary goes on the monitor feed, if its
    /// organisation is watched: the organisation and the installation's
    /// agent (as for successful invocations' summary messages).
    fn feed_target(&self, queued: &QueuedEvent) -> Option<(OrgId, crate::model::AgentId)> {
        let agent = self.installation(queued.install_id).map_or(queued.agent_id, |inst| inst.agent_id);
        self.feed.is_watched(queued.organisation_id).then_some((queued.organisation_id, agent))
    }

    /// Dead-letter an event with `reason`.
    async fn bury(&self, queued: &QueuedEvent, reason: &str) -> Result<(), EngineError> {
        self.bury_with(queued, reason, None).await
    }

    /// Dead-letter an event with `reason`, keeping its last invocation's
    /// summary (written first, in the same writer operation).
    async fn bury_with(
        &self,
        queued: &QueuedEvent,
        reason: &str,
        summary: Option<InvocationSummary>,
    ) -> Result<(), EngineError> {
        tracing::warn!(event = %queued.id, install = %queued.install_id, reason, "dead-lettering");
        let (letter, reason) = (queued.clone(), reason.to_owned());
        let fed = self.feed_target(queued);
        let bury = move |store: &crate::store::Store| {
            if let Some(summary) = &summary {
                record_summary(store, summary, fed)?;
            }
            store.dead_letter(&letter, &reason, now_ms())
        };
        let buried = self.writer.apply(queued.organisation_id, false, bury).await;
        match buried {
            Ok(()) => {
                self.admission.settled(queued.organisation_id, 1, 0);
                self.metrics.dead_lettered();
                Ok(())
            }
            Err(StoreError::NotQueued(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// What a run's commit task answered (a task that panicked is a failure:
/// whether its writes were applied is unknown, so the run stops).
fn joined(task: Result<Result<bool, EngineError>, tokio::task::JoinError>) -> Result<bool, EngineError> {
    task.map_err(|e| StoreError::Flush(format!("a run's commit failed: {e}")))?
}

/// An aggregate-update event carries the aggregate as it is now in `view`.
fn refresh(event: Event, view: &dyn StateView) -> Result<Event, crate::caps::ReadError> {
    Ok(match event {
        Event::AggregateUpdate { organisation_id, author_id, channel, request_data, aggregate } => {
            let aggregate = view.aggregate(&channel)?.unwrap_or(aggregate);
            Event::AggregateUpdate { organisation_id, author_id, channel, aggregate, request_data }
        }
        other => other,
    })
}

/// What one pick starts.
struct Picked {
    /// Line heads to run.
    events: Vec<QueuedEvent>,
    /// Line heads that could not be read, to set aside.
    unreadable: Vec<UnreadableHead>,
}

/// What became of one event of a run.
enum Step {
    /// It ran well; its write (acknowledgement, effects, downstream events,
    /// summary) waits to commit with the run.
    Ran(Box<super::writer::Write>),
    /// It failed and runs again at `due`, its summary recorded meanwhile.
    Retry { summary: InvocationSummary, due: u64 },
    /// It is given up: dead-lettered with `reason` and its last summary.
    Bury { reason: String, summary: Option<InvocationSummary> },
}

/// Run `work` (a line's run, or the setting aside of its head) holding the
/// line: freed when the work ends however it ends, also when its task is
/// dropped before it first ran (the slot exists before the future does).
fn holding_line(
    engine: Arc<Engine>,
    install: crate::model::InstallId,
    agent: crate::model::AgentId,
    work: impl std::future::Future<Output = Result<(), EngineError>>,
) -> impl std::future::Future<Output = Result<(), EngineError>> {
    let slot = LineSlot { engine, install, agent, ended_well: false };
    async move {
        let mut slot = slot; // the whole slot moves in, not just its flag
        let result = work.await;
        slot.ended_well = result.is_ok();
        result
    }
}

/// The slots a pick holds and the lines it has taken so far. A pick that
/// does not finish (a store error, a panic) lets those lines go again,
/// cooling down as after any failed run: no task would ever free them.
struct Taking<'a> {
    slots: MutexGuard<'a, super::slots::Slots>,
    taken: Vec<(crate::model::InstallId, crate::model::AgentId)>,
}

impl Taking<'_> {
    /// The line starts an event of `org`.
    fn take(&mut self, org: OrgId, install: crate::model::InstallId, agent: crate::model::AgentId) {
        self.slots.take(org, install, agent);
        self.taken.push((install, agent));
    }
}

impl Drop for Taking<'_> {
    fn drop(&mut self) {
        let now = std::time::Instant::now();
        for (install, agent) in self.taken.drain(..) {
            self.slots.failed(install, agent, now);
        }
    }
}

/// A line's slot, freed when its run ends however it ends: done, failed,
/// cancelled or panicked (a line whose slot stayed taken would never run
/// again). A run that did not end well (an engine error, a panic) leaves
/// its line cooling down ([`slots`](super::slots)): the event stays queued,
/// and a failure that repeats must not be retried at every pick.
struct LineSlot {
    engine: Arc<Engine>,
    install: crate::model::InstallId,
    agent: crate::model::AgentId,
    ended_well: bool,
}

impl Drop for LineSlot {
    fn drop(&mut self) {
        let mut slots = self.engine.dispatcher.slots();
        if self.ended_well {
            slots.free(self.install, self.agent);
        } else {
            slots.failed(self.install, self.agent, std::time::Instant::now());
        }
    }
}

/// Log a finished task's failure; the event stays queued and runs again
/// once its line has cooled down.
fn finished(joined: Result<Result<(), EngineError>, tokio::task::JoinError>) -> Result<(), EngineError> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            tracing::error!(error = %e, "event processing failed; it stays queued");
            Err(e)
        }
        // Cancelled: the dispatcher itself was dropped mid-flight (a
        // shutdown that did not drain, or a test or bench that aborted it).
        Err(e) if e.is_cancelled() => {
            tracing::debug!(error = %e, "event task cancelled; the event stays queued");
            Ok(())
        }
        Err(e) => {
            tracing::error!(error = %e, "event task panicked; the event stays queued, its line cooling down");
            Ok(())
        }
    }
}

/// The summary of one attempt (Doover's invocation summary shape).
fn summary(queued: &QueuedEvent, report: &Report) -> InvocationSummary {
    let skip_reason = match &report.outcome {
        Outcome::Skipped { hook } => Some(format!("no {} handler", hook.op())),
        _ => None,
    };
    let error = (report.outcome.summary_status() == "error").then(|| describe(&report.outcome));
    InvocationSummary {
        event_id: queued.id,
        install_id: queued.install_id,
        op: queued.event.op.clone(),
        status: report.outcome.summary_status().to_owned(),
        skip_reason,
        outcome: serde_json::to_value(&report.outcome).unwrap_or_default(),
        duration_ms: report.duration.as_secs_f64() * 1000.0,
        fuel: report.fuel_consumed,
        attempt: queued.attempt,
        error,
        logs: serde_json::to_value(&report.logs).unwrap_or_default(),
        queued_ms: queued.enqueued_ms,
        at_ms: now_ms(),
        latency_us: match queued.enqueued_us {
            0 => now_ms().saturating_sub(queued.enqueued_ms).saturating_mul(1000),
            us => crate::model::now_us().saturating_sub(us),
        },
    }
}

/// Record a failed attempt's summary, on the monitor feed too when its
/// organisation is watched (`fed`: organisation and agent).
fn record_summary(
    store: &crate::store::Store,
    summary: &InvocationSummary,
    fed: Option<(OrgId, crate::model::AgentId)>,
) -> Result<(), StoreError> {
    match fed {
        Some((org, agent)) => store.put_invocation_fed(summary, org, agent, store.feed_mark()?),
        None => store.put_invocation(summary),
    }
}

/// The summary as a message on the installation's `dv-proc-inv-<id>`
/// channel (without the logs, which stay in the summary record).
fn summary_message(inst: &Installation, s: &InvocationSummary) -> Option<Message> {
    let name = ChannelName::new(format!("{}{}", well_known::INVOCATION_PREFIX, inst.id)).ok()?;
    let mut data = serde_json::to_value(s).ok()?;
    if let Some(map) = data.as_object_mut() {
        map.remove("logs");
    }
    Some(Message {
        id: MessageId::at(s.at_ms),
        author_id: inst.agent_id,
        channel: ChannelRef { agent_id: inst.agent_id, name },
        data,
        timestamp: None,
        attachments: None,
    })
}

/// The last outcome, as a dead letter's reason.
fn describe(outcome: &Outcome) -> String {
    serde_json::to_string(outcome).unwrap_or_else(|_| format!("{outcome:?}"))
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use serde_json::json;

    use super::*;
    use crate::engine::EngineConfig;
    use crate::model::{EventEnvelope, EventId};
    use crate::runtime::{Runtime, RuntimeConfig};
    use crate::store::Store;

    /// An event queued for installation `install` of organisation 1.
    fn queued(id: u64, install: u64) -> QueuedEvent {
        QueuedEvent {
            id: EventId::from(id),
            organisation_id: OrgId::from(1),
            install_id: install.into(),
            agent_id: 5.into(),
            event: EventEnvelope { op: "on_manual_invoke".into(), d: json!({"organisation_id": 1, "payload": {}}) },
            attempt: 1,
            depth: 0,
            enqueued_ms: now_ms(),
            enqueued_us: now_ms() * 1000,
            due_ms: 0,
            seq: 0,
        }
    }

    #[tokio::test]
    async fn a_pick_that_panics_neither_stops_the_dispatcher_nor_keeps_the_lines_it_took() {
        let store = Store::temporary().unwrap();
        // Installation 7 does not exist: its event is buried when it runs,
        // which is what shows it ran.
        store.enqueue(&queued(1, 7)).unwrap();
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
        let engine = Arc::new(Engine::new(store.clone(), runtime, EngineConfig::default()).unwrap());
        engine.dispatcher.panics.store(1, Relaxed);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let running = tokio::spawn(Arc::clone(&engine).run(async move {
            let _ = stopped.await;
        }));
        let deadline = Instant::now() + Duration::from_secs(10);
        while store.dead_letters_of(OrgId::from(1), 10).unwrap().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(engine.dispatcher.panics.load(Relaxed), 0, "the pick did not panic");
        let buried = store.dead_letters_of(OrgId::from(1), 10).unwrap();
        assert_eq!(buried.len(), 1, "the event's line never ran again after the pick panicked");
        drop(stop);
        running.await.expect("the dispatcher itself did not panic");
    }

    #[tokio::test]
    async fn a_line_whose_task_is_dropped_before_it_first_ran_is_freed() {
        let store = Store::temporary().unwrap();
        let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
        let engine = Arc::new(Engine::new(store, runtime, EngineConfig::default()).unwrap());
        engine.dispatcher.slots().take(OrgId::from(1), 7.into(), 5.into());
        let never_polled = holding_line(Arc::clone(&engine), 7.into(), 5.into(), async { Ok(()) });
        let later = Instant::now() + super::super::slots::MAX_COOL_DOWN;
        assert!(engine.dispatcher.slots().busy(7.into(), 5.into(), later), "held while its work exists");
        drop(never_polled);
        // Freed as a failed run is: cooling down, then free.
        assert!(!engine.dispatcher.slots().busy(7.into(), 5.into(), later));
    }
}

//! The dispatcher: run due events, commit or retry or bury each.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{Engine, EngineError, Installation, MAX_DEPTH, routing};
use crate::caps::StateView;
use crate::model::{ChannelName, ChannelRef, Event, Message, MessageId, now_ms, well_known};
use crate::runtime::{Invocation, Outcome, Report};
use crate::store::{Commit, InvocationSummary, QueuedEvent, StoreError};

/// Most due events looked at per round.
const SCAN: usize = 1024;
/// How long the loop sleeps when nothing is due.
const IDLE: Duration = Duration::from_millis(20);

impl Engine {
    /// One round: start every due event that is first in its line (at most
    /// `concurrency`), wait for them, then flush once for all of them
    /// (group commit). Returns how many ran.
    pub async fn run_once(self: &Arc<Self>) -> Result<usize, EngineError> {
        let now = now_ms();
        let fired = self.fire_schedules(now)?;
        let batch = self.pick(now)?;
        let ran = batch.len();
        let mut tasks = JoinSet::new();
        for event in batch {
            let engine = Arc::clone(self);
            tasks.spawn(async move {
                let line = (event.install_id, event.agent_id);
                let result = engine.process(event).await;
                engine.in_flight.lock().unwrap_or_else(|p| p.into_inner()).remove(&line);
                result
            });
        }
        let mut first_error = None;
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    tracing::error!(error = %e, "event processing failed; it stays queued");
                    first_error.get_or_insert(e);
                }
                Err(e) => tracing::error!(error = %e, "event task panicked; the event stays queued"),
            }
        }
        // An idle round wrote nothing: no flush (the idle loop runs every 20 ms).
        if fired + ran > 0 {
            self.store.flush().await?;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(ran),
        }
    }

    /// Run rounds until `stop` resolves.
    pub async fn run(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        tokio::pin!(stop);
        loop {
            let idle = match self.run_once().await {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => {
                    tracing::error!(error = %e, "dispatch round failed");
                    true
                }
            };
            if idle {
                tokio::select! {
                    () = &mut stop => return,
                    () = tokio::time::sleep(IDLE) => {}
                }
            }
        }
    }

    /// Due events that may start now (first in their line, line not busy),
    /// shared fairly: organisations take turns, one event each per turn, and
    /// the organisation that goes first rotates from round to round. Each
    /// organisation's due events are read from its own queue partition, so
    /// one tenant's backlog never hides another's.
    fn pick(&self, now: u64) -> Result<Vec<QueuedEvent>, EngineError> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let mut turns: Vec<VecDeque<QueuedEvent>> = Vec::new();
        for org in self.store.queued_orgs()? {
            let mut runnable = VecDeque::new();
            for event in self.store.due_for(org, now, SCAN)? {
                if runnable.len() >= self.concurrency {
                    break;
                }
                let line = (event.install_id, event.agent_id);
                if !in_flight.contains(&line) && self.store.is_head(&event)? {
                    runnable.push_back(event);
                }
            }
            if !runnable.is_empty() {
                turns.push(runnable);
            }
        }
        if !turns.is_empty() {
            let first = self.round.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % turns.len();
            turns.rotate_left(first);
        }
        let mut batch = Vec::new();
        while batch.len() < self.concurrency && turns.iter().any(|t| !t.is_empty()) {
            for turn in &mut turns {
                if batch.len() >= self.concurrency {
                    break;
                }
                if let Some(event) = turn.pop_front() {
                    in_flight.insert((event.install_id, event.agent_id));
                    batch.push(event);
                }
            }
        }
        Ok(batch)
    }

    /// Run one event and commit its result.
    async fn process(&self, queued: QueuedEvent) -> Result<(), EngineError> {
        let now = now_ms();
        let Some(inst) = self.installation(queued.install_id) else {
            return self.bury(&queued, "installation no longer exists");
        };
        if queued.depth > MAX_DEPTH {
            return self.bury(&queued, &format!("loop: causal depth {} exceeds {MAX_DEPTH}", queued.depth));
        }
        let age = Duration::from_millis(now.saturating_sub(queued.enqueued_ms));
        if age > self.policy.max_age {
            return self.bury(&queued, &format!("max event age exceeded ({age:?})"));
        }
        let event = match Event::from_envelope(queued.event.clone()) {
            Ok(event) => self.refresh(event),
            Err(e) => return self.bury(&queued, &format!("unreadable event: {e}")),
        };
        let inv = Invocation { event_id: queued.id, attempt: queued.attempt, event, grant: inst.grant() };
        let report = self.runtime.invoke(&inst.app, inv, Arc::new(self.store.clone())).await;
        let summary = summary(&queued, &report);
        if report.outcome.is_ok() {
            let installs = self.installations();
            let downstream = routing::route(
                &installs,
                inst.organisation_id,
                &report.effects,
                Some(&inst),
                queued.depth + 1,
                now_ms(),
            );
            // The summary is also a message on `dv-proc-inv-<install>`, as in
            // Doover, committed with the effects it describes.
            let mut effects = report.effects.clone();
            if let Some(message) = summary_message(&inst, &summary) {
                effects.messages.push(message);
            }
            let commit = Commit {
                ack: Some(&queued),
                effects: &effects,
                downstream: &downstream,
                now_ms: now_ms(),
                summary: Some(&summary),
            };
            return match self.store.commit(commit) {
                Ok(()) => {
                    self.settled(1, downstream.len());
                    Ok(())
                }
                // Acknowledged already (by an earlier run): nothing applied.
                Err(StoreError::NotQueued(_)) => Ok(()),
                Err(e @ StoreError::UnknownAgent(_)) => self.bury(&queued, &e.to_string()),
                Err(e) => Err(e.into()),
            };
        }
        self.store.put_invocation(&summary)?;
        if report.outcome.is_retryable() && queued.attempt < self.policy.max_attempts {
            let delay = self.policy.delay(queued.attempt);
            let due = now_ms().saturating_add(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX));
            return match self.store.reschedule(&queued, due) {
                Ok(_) | Err(StoreError::NotQueued(_)) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        self.bury(&queued, &describe(&report.outcome))
    }

    /// Dead-letter an event with `reason`.
    fn bury(&self, queued: &QueuedEvent, reason: &str) -> Result<(), EngineError> {
        tracing::warn!(event = %queued.id, install = %queued.install_id, reason, "dead-lettering");
        match self.store.dead_letter(queued, reason, now_ms()) {
            Ok(()) => {
                self.settled(1, 0);
                Ok(())
            }
            Err(StoreError::NotQueued(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Keep the queued-event count in step: `done` left, `added` arrived.
    pub(super) fn settled(&self, done: usize, added: usize) {
        // Saturating: the count is advisory (it only gates ingress) and
        // must never wrap to a huge value that would refuse everything.
        let step = |n: usize| Some(n.saturating_add(added).saturating_sub(done));
        let _ =
            self.queued.fetch_update(std::sync::atomic::Ordering::Relaxed, std::sync::atomic::Ordering::Relaxed, step);
    }

    /// An aggregate-update event carries the aggregate as it is now.
    fn refresh(&self, event: Event) -> Event {
        match event {
            Event::AggregateUpdate { organisation_id, author_id, channel, request_data, aggregate } => {
                let aggregate = self.store.aggregate(&channel).unwrap_or(aggregate);
                Event::AggregateUpdate { organisation_id, author_id, channel, aggregate, request_data }
            }
            other => other,
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

//! The dispatcher: run due events, commit or retry or bury each.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;

use super::{Engine, EngineError, MAX_DEPTH, routing};
use crate::caps::StateView;
use crate::model::{Event, now_ms};
use crate::runtime::{Invocation, Outcome};
use crate::store::{Commit, QueuedEvent, StoreError};

/// Most due events looked at per round.
const SCAN: usize = 1024;
/// How long the loop sleeps when nothing is due.
const IDLE: Duration = Duration::from_millis(20);

impl Engine {
    /// One round: start every due event that is first in its line (at most
    /// `concurrency`), wait for them, then flush once for all of them
    /// (group commit). Returns how many ran.
    pub async fn run_once(self: &Arc<Self>) -> Result<usize, EngineError> {
        let batch = self.pick(now_ms())?;
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
        self.store.flush().await?;
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

    /// Due events that may start now: first in their line, line not busy.
    fn pick(&self, now: u64) -> Result<Vec<QueuedEvent>, EngineError> {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = Vec::new();
        for event in self.store.due(now, SCAN)? {
            if batch.len() >= self.concurrency {
                break;
            }
            let line = (event.install_id, event.agent_id);
            if !in_flight.contains(&line) && self.store.is_head(&event)? {
                in_flight.insert(line);
                batch.push(event);
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
            let commit =
                Commit { ack: Some(&queued), effects: &report.effects, downstream: &downstream, now_ms: now_ms() };
            return match self.store.commit(commit) {
                // Acknowledged already (by an earlier run): nothing applied.
                Ok(()) | Err(StoreError::NotQueued(_)) => Ok(()),
                Err(e @ StoreError::UnknownAgent(_)) => self.bury(&queued, &e.to_string()),
                Err(e) => Err(e.into()),
            };
        }
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
            Ok(()) | Err(StoreError::NotQueued(_)) => Ok(()),
            Err(e) => Err(e.into()),
        }
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

/// The last outcome, as a dead letter's reason.
fn describe(outcome: &Outcome) -> String {
    serde_json::to_string(outcome).unwrap_or_else(|_| format!("{outcome:?}"))
}

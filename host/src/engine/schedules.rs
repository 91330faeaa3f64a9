//! Firing schedules: every fire is an event through the same queue.

use super::{Engine, EngineError, Installation, routing};
use crate::model::{Event, Hook, ScheduleExpr, ScheduleId, now_ms};
use crate::store::ScheduleState;

impl Engine {
    /// Register `inst`'s manifest schedules. A schedule whose expression,
    /// time zone and switch are unchanged keeps its id and next fire time;
    /// a changed one is re-planned from now, through the writer.
    pub(super) async fn register_schedules(&self, inst: &Installation) -> Result<(), EngineError> {
        let now = now_ms();
        let mut changed = Vec::new();
        for spec in &inst.app.manifest.schedules {
            let existing = self.store.get_schedule(inst.id, &spec.name)?;
            let unchanged = existing.as_ref().is_some_and(|s| {
                s.expression == spec.expression && s.timezone == spec.timezone && s.disabled == spec.disabled
            });
            if unchanged {
                continue;
            }
            // The manifest validated the expression when it was loaded.
            let Ok(expr) = ScheduleExpr::parse(&spec.expression, spec.timezone.as_deref()) else { continue };
            let state = ScheduleState {
                id: existing.map_or_else(ScheduleId::generate, |s| s.id),
                install_id: inst.id,
                name: spec.name.clone(),
                expression: spec.expression.clone(),
                timezone: spec.timezone.clone(),
                disabled: spec.disabled,
                next_fire_ms: expr.next_after(now),
            };
            changed.push(state);
        }
        if !changed.is_empty() {
            let put = move |store: &crate::store::Store| changed.iter().try_for_each(|s| store.put_schedule(s));
            self.writer.apply(inst.organisation_id, true, put).await?;
        }
        Ok(())
    }

    /// Fire every schedule that is due at `now`. However many fire times
    /// were missed (downtime), a schedule fires once and its next fire time
    /// moves past `now`. The fires go to the writer as one operation (each
    /// fire its own atomic write: the event queued with the schedule's next
    /// fire time). Returns how many fired.
    pub(super) async fn fire_schedules(&self, now: u64) -> Result<usize, EngineError> {
        let mut plan = Vec::new();
        for state in self.store.schedules()? {
            let Some(due) = state.next_fire_ms.filter(|due| *due <= now && !state.disabled) else { continue };
            let Some(inst) = self.installation(state.install_id) else { continue };
            let Ok(expr) = ScheduleExpr::parse(&state.expression, state.timezone.as_deref()) else { continue };
            let next = next_after_now(&expr, due, now);
            let event = Event::Schedule { schedule_id: state.id, organisation_id: inst.organisation_id };
            // Nothing would run without the hook: just keep the plan moving.
            let queued =
                inst.app.hooks.contains(&Hook::Schedule).then(|| routing::queued(&inst, inst.agent_id, &event, 0, now));
            plan.push((inst.organisation_id, state, next, queued));
        }
        // The writer's turn goes to the first organisation with a fire.
        let Some(&(org, ..)) = plan.first() else { return Ok(0) };
        let fire = move |store: &crate::store::Store| {
            let mut fired = Vec::new();
            for (org, state, next, queued) in plan {
                if store.fire_schedule(&state, queued.as_ref(), next)? && queued.is_some() {
                    fired.push(org);
                }
            }
            Ok(fired)
        };
        let fired = self.writer.apply(org, false, fire).await?;
        for org in &fired {
            self.admission.settled(*org, 0, 1);
        }
        Ok(fired.len())
    }
}

/// The first fire time after `now`: a rate keeps its phase (steps from the
/// missed fire time), a cron takes its next match.
fn next_after_now(expr: &ScheduleExpr, due: u64, now: u64) -> Option<u64> {
    match expr {
        ScheduleExpr::Rate { every } => {
            let every = u64::try_from(every.as_millis()).ok()?.max(1);
            let missed = (now - due) / every + 1;
            due.checked_add(missed.checked_mul(every)?)
        }
        ScheduleExpr::Cron { .. } => expr.next_after(now),
    }
}

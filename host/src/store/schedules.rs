//! Durable schedule state: the next fire time of every installation's
//! schedules, so that fires survive restarts and a missed fire runs once.

use serde::{Deserialize, Serialize};
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::queue::{QueuedEvent, insert_queued, tx_error};
use super::{Store, StoreError, decode, encode, keys};
use crate::model::{InstallId, ScheduleId};

/// One schedule of one installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleState {
    /// Stable id (the `schedule_id` of its events).
    pub id: ScheduleId,
    /// The installation it fires.
    pub install_id: InstallId,
    /// Its name in the manifest.
    pub name: String,
    /// The expression, as written.
    pub expression: String,
    /// IANA time zone, if any.
    pub timezone: Option<String>,
    /// A disabled schedule keeps its state but never fires.
    pub disabled: bool,
    /// The next fire time, Unix ms; `None` once the expression can never
    /// fire again (a cron whose years have passed).
    pub next_fire_ms: Option<u64>,
}

impl Store {
    /// Create or replace a schedule's state.
    pub fn put_schedule(&self, s: &ScheduleState) -> Result<(), StoreError> {
        let t = self.t()?;
        t.schedules.insert(keys::schedule(s.install_id, &s.name), encode(s))?;
        Ok(())
    }

    /// One installation's schedule by name.
    pub fn get_schedule(&self, install: InstallId, name: &str) -> Result<Option<ScheduleState>, StoreError> {
        let t = self.t()?;
        t.schedules.get(keys::schedule(install, name))?.map(|v| decode("schedule", &v)).transpose()
    }

    /// Every schedule this build can read (one it cannot is skipped and
    /// logged: the others still fire).
    pub fn schedules(&self) -> Result<Vec<ScheduleState>, StoreError> {
        super::readable("schedule", &self.t()?.schedules)
    }

    /// Fire `s`: enqueue `event` (if any: an app without the schedule hook
    /// has none) and move its next fire time to `next`, in one transaction,
    /// only if the stored state still has the fire time the caller saw (so
    /// a schedule cannot fire twice, and a fire planned before the schedule
    /// was changed cannot undo the change). Returns whether it fired.
    pub fn fire_schedule(
        &self,
        s: &ScheduleState,
        event: Option<&QueuedEvent>,
        next: Option<u64>,
    ) -> Result<bool, StoreError> {
        let t = self.t()?;
        let key = keys::schedule(s.install_id, &s.name);
        let event = match event {
            Some(e) => Some(QueuedEvent { seq: t.db.generate_id()?, ..e.clone() }),
            None => None,
        };
        let updated = ScheduleState { next_fire_ms: next, ..s.clone() };
        let fired = self.gated(|| {
            (&t.schedules, &t.queue, &t.keyq)
                .transaction(|(schedules, queue, keyq)| {
                    let current: Option<ScheduleState> = schedules
                        .get(key.as_slice())?
                        .map(|v| decode("schedule", &v))
                        .transpose()
                        .map_err(ConflictableTransactionError::Abort)?;
                    if current.as_ref().map(|c| c.next_fire_ms) != Some(s.next_fire_ms) {
                        return Ok(false);
                    }
                    schedules.insert(key.as_slice(), encode(&updated))?;
                    if let Some(event) = &event {
                        insert_queued(queue, keyq, event)?;
                    }
                    Ok(true)
                })
                .map_err(tx_error)
        })?;
        if fired && let Some(event) = &event {
            t.heads().queued(event);
        }
        Ok(fired)
    }
}

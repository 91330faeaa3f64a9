//! `connection`: Doover's connection ping, written to `doover_connection`.

use serde::Serialize;
use serde_json::json;

use super::{CapError, ReadError, Session};
use crate::model::{WriteMode, well_known};

/// Without an explicit `offline-at` or an agent `config.offline_after`, a
/// device counts as offline an hour after it was last seen (pydoover's
/// `DEFAULT_OFFLINE_AFTER`).
pub const DEFAULT_OFFLINE_AFTER_SECS: u64 = 60 * 60;

/// How the device connects (pydoover's `ConnectionStatus` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConnectionStatus {
    /// Always connected and pinging.
    ContinuousOnline,
    /// Always connected, never pings.
    ContinuousOnlineNoPing,
    /// Connecting.
    ContinuousPending,
    /// Should be connected, is not.
    ContinuousOffline,
    /// Reports now and then.
    PeriodicUnknown,
}

/// The host's verdict on a ping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Determination {
    /// Seen within the offline window.
    Online,
    /// Not seen within it.
    Offline,
}

impl Session {
    /// `connection.ping`: decide online/offline as pydoover does (online
    /// when `now - online_at` is within the offline window) and write the
    /// status as a `doover_connection` message plus aggregate.
    pub fn connection_ping(
        &mut self,
        online_at: Option<u64>,
        status: ConnectionStatus,
        offline_at: Option<u64>,
    ) -> Result<Determination, CapError> {
        let now = self.now();
        let online_at = online_at.unwrap_or(now);
        if offline_at.is_some_and(|off| off < online_at) {
            return Err(CapError::Invalid("offline-at is before online-at".into()));
        }
        let window_ms = match offline_at {
            Some(off) => off - online_at,
            None => self.offline_after_secs()?.saturating_mul(1000),
        };
        let determination =
            if now.saturating_sub(online_at) > window_ms { Determination::Offline } else { Determination::Online };
        let data = json!({
            "status": {
                "status": status,
                "last_online": online_at,
                "last_ping": now,
                "user_agent": format!("paddock-processor,app_key={}", self.grant.app_key),
            },
            "determination": determination,
        });
        let channel = self.own(well_known::CONNECTION);
        self.push_message(channel.clone(), data.clone(), None, None)?;
        self.push_aggregate(channel, data, WriteMode::Merge)?;
        Ok(determination)
    }

    /// The agent's `config.offline_after` (seconds) from `doover_connection`.
    fn offline_after_secs(&self) -> Result<u64, ReadError> {
        let configured = |a: Option<&crate::model::Aggregate>| a?.data.pointer("/config/offline_after")?.as_u64();
        Ok(self.with_aggregate(&self.own(well_known::CONNECTION), configured)?.unwrap_or(DEFAULT_OFFLINE_AFTER_SECS))
    }
}

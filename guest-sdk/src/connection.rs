//! Device connectivity pings, Doover style.
//!
//! ```no_run
//! # fn demo() -> Result<(), paddock_sdk::Error> {
//! use paddock_sdk::connection::{self, Status};
//! let online = connection::ping(Status::PeriodicUnknown)?;
//! # Ok(()) }
//! ```

use crate::Error;
use crate::bindings::paddock::app::connection as wit;

pub use wit::ConnectionStatus as Status;
pub use wit::Determination;

/// The device was seen now.
pub fn ping(status: Status) -> Result<Determination, Error> {
    ping_at(None, status, None)
}

/// The device was seen at `online_at` (Unix ms; default now) and counts as
/// offline after `offline_at` (default: the agent's offline window, 1 h).
pub fn ping_at(online_at: Option<u64>, status: Status, offline_at: Option<u64>) -> Result<Determination, Error> {
    Ok(wit::ping(online_at, status, offline_at)?)
}

//! User notifications.
//!
//! ```no_run
//! # fn demo() -> Result<(), paddock_sdk::Error> {
//! use paddock_sdk::notifications::{self, Severity};
//! notifications::send("Tank 3 is below 20%", Severity::Info)?;
//! notifications::send_full("Tank low", Some("Level alarm"), Severity::Warning, Some("level"))?;
//! # Ok(()) }
//! ```

use crate::Error;
use crate::bindings::paddock::app::notifications as wit;

/// Syslog-style severity, 3 (error) to 7 (debug).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Severity {
    /// 3
    Error = 3,
    /// 4
    Warning = 4,
    /// 5
    Notice = 5,
    /// 6
    Info = 6,
    /// 7
    Debug = 7,
}

/// Send a notification; returns its message id.
pub fn send(message: &str, severity: Severity) -> Result<u64, Error> {
    send_full(message, None, severity, None)
}

/// Send a notification with a title and a topic.
pub fn send_full(message: &str, title: Option<&str>, severity: Severity, topic: Option<&str>) -> Result<u64, Error> {
    let n = wit::Notification {
        message: message.into(),
        title: title.map(Into::into),
        severity: severity as u8,
        topic: topic.map(Into::into),
    };
    Ok(wit::send(&n)?)
}

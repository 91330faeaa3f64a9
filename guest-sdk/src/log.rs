//! Logging, captured per invocation. `println!`/`eprintln!` are captured too.
//!
//! ```no_run
//! paddock_sdk::info!("level {}%", 42);
//! paddock_sdk::log::warn("sensor reading out of range");
//! ```

use crate::bindings::paddock::app::logging::{Level, log};

/// Log at debug level.
pub fn debug(message: &str) {
    log(Level::Debug, message)
}
/// Log at info level.
pub fn info(message: &str) {
    log(Level::Info, message)
}
/// Log at warn level.
pub fn warn(message: &str) {
    log(Level::Warn, message)
}
/// Log at error level.
pub fn error(message: &str) {
    log(Level::Error, message)
}

/// `info!("fmt", args..)`.
#[macro_export]
macro_rules! info {
    ($($t:tt)*) => { $crate::log::info(&::std::format!($($t)*)) };
}
/// `warn!("fmt", args..)`.
#[macro_export]
macro_rules! warn {
    ($($t:tt)*) => { $crate::log::warn(&::std::format!($($t)*)) };
}
/// `error!("fmt", args..)`.
#[macro_export]
macro_rules! error {
    ($($t:tt)*) => { $crate::log::error(&::std::format!($($t)*)) };
}
/// `debug!("fmt", args..)`.
#[macro_export]
macro_rules! debug {
    ($($t:tt)*) => { $crate::log::debug(&::std::format!($($t)*)) };
}

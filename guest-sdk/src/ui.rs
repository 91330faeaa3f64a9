//! The app's UI, Doover style.
//!
//! ```no_run
//! # fn demo() -> Result<(), paddock_sdk::Error> {
//! use paddock_sdk::{json, ui};
//! ui::publish_schema(&json!({
//!     "type": "uiContainer",
//!     "children": {"level": {"type": "uiVariable", "name": "level", "displayString": "Level (%)"}}
//! }))?;
//! let cmds = ui::commands()?;
//! # Ok(()) }
//! ```

use serde::Serialize;

use crate::bindings::paddock::app::ui as wit;
use crate::{Error, Value};

/// Publish (replace) this installation's UI schema; other apps' schemas on
/// the agent are left alone.
pub fn publish_schema<T: Serialize + ?Sized>(schema: &T) -> Result<(), Error> {
    Ok(wit::publish_schema(&serde_json::to_string(schema)?)?)
}

/// The agent's current UI commands (`ui_cmds`).
pub fn commands() -> Result<Value, Error> {
    Ok(serde_json::from_str(&wit::commands()?)?)
}

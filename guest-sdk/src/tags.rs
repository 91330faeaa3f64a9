//! Persistent per-installation state ("tags"), stored in the agent's
//! `tag_values` aggregate under this installation's app key.
//!
//! ```no_run
//! # fn demo() -> Result<(), paddock_sdk::Error> {
//! use paddock_sdk::tags;
//! let last: Option<f64> = tags::get("last_level")?;
//! tags::set("last_level", &42.5)?;          // committed with the event
//! tags::set_logged("alarm", &true)?;        // also recorded as a message
//! let other: Option<String> = tags::get_from("other-app", "mode")?; // read-only
//! tags::delete("stale")?;
//! # Ok(()) }
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::Error;
use crate::bindings::paddock::app::tags as wit;

/// This installation's tag, if set.
pub fn get<T: DeserializeOwned>(key: &str) -> Result<Option<T>, Error> {
    decode(wit::get(key)?)
}

/// Another installation's tag on the same agent (read-only).
pub fn get_from<T: DeserializeOwned>(app_key: &str, key: &str) -> Result<Option<T>, Error> {
    decode(wit::get_from(app_key, key)?)
}

/// Set a tag. Setting the value it already has writes nothing.
pub fn set<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    Ok(wit::set(key, &serde_json::to_string(value)?, false)?)
}

/// Set a tag and record the change as a `tag_values` message (history).
pub fn set_logged<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), Error> {
    Ok(wit::set(key, &serde_json::to_string(value)?, true)?)
}

/// Delete a tag.
pub fn delete(key: &str) -> Result<(), Error> {
    Ok(wit::delete(key)?)
}

fn decode<T: DeserializeOwned>(text: Option<String>) -> Result<Option<T>, Error> {
    text.map(|t| serde_json::from_str(&t)).transpose().map_err(Into::into)
}

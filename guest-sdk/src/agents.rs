//! The agents this installation may reach.
//!
//! ```no_run
//! # fn demo() -> Result<(), paddock_sdk::Error> {
//! use paddock_sdk::agents;
//! if let Some(tank) = agents::find_by_serial("TANK-001")? {
//!     paddock_sdk::info!("routing to {} ({})", tank.name, tank.id);
//! }
//! # Ok(()) }
//! ```

use crate::bindings::paddock::app::agents as wit;
use crate::event::json;
use crate::{Error, Value};

/// A device or organisation agent.
#[derive(Debug, Clone, PartialEq)]
pub struct Agent {
    /// Snowflake id.
    pub id: u64,
    /// Human name.
    pub name: String,
    /// Serial number, if set.
    pub serial_number: Option<String>,
    /// Group path, if set.
    pub group: Option<String>,
    /// Free-form metadata.
    pub metadata: Value,
}

fn agent(a: wit::Agent) -> Agent {
    Agent { id: a.id, name: a.name, serial_number: a.serial_number, group: a.group, metadata: json(&a.metadata) }
}

/// Every reachable agent, own agent first.
pub fn list() -> Result<Vec<Agent>, Error> {
    Ok(wit::list()?.into_iter().map(agent).collect())
}

/// One agent, if it exists and is reachable.
pub fn get(id: u64) -> Result<Option<Agent>, Error> {
    Ok(wit::get(id)?.map(agent))
}

/// The reachable agent with this serial number.
pub fn find_by_serial(serial: &str) -> Result<Option<Agent>, Error> {
    Ok(wit::find_by_serial(serial)?.map(agent))
}

//! `ui`: the app's UI schema in `ui_state` and user commands from `ui_cmds`.

use serde_json::{Value, json};

use super::{CapError, Session};
use crate::model::{ChannelName, ChannelRef, WriteMode, parse_object, well_known};

impl Session {
    /// `ui.publish-schema`: replace this installation's subtree
    /// `state.children.<app_key>` of `ui_state`, leaving other apps' alone.
    pub fn ui_publish(&mut self, schema: &str) -> Result<(), CapError> {
        let schema = parse_object(schema)?;
        super::tags::check_key("app key", &self.grant.app_key)?;
        let key = self.grant.app_key.clone();
        let data = json!({ "state": { "children": { key.clone(): schema } } });
        let path = format!("state.children.{key}");
        self.push_aggregate(self.own(well_known::UI_STATE), data, WriteMode::ReplacePaths(vec![path]))
    }

    /// `ui.commands`: the agent's pending UI commands (`ui_cmds` `cmds`).
    pub fn ui_commands(&self) -> Result<Value, CapError> {
        let agg = self.aggregate_of(&self.own(well_known::UI_CMDS))?;
        Ok(agg.and_then(|a| a.data.get("cmds").cloned()).unwrap_or_else(|| json!({})))
    }

    /// A well-known channel on the installation's own agent.
    pub(crate) fn own(&self, name: &'static str) -> ChannelRef {
        ChannelRef { agent_id: self.grant.agent_id, name: ChannelName::from_static(name) }
    }
}

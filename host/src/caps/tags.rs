//! `tags`: per-installation state in the agent's `tag_values` aggregate,
//! `{app_key: {tag: value}}`, as Doover stores it.

use serde_json::{Value, json};

use super::{CapError, MAX_KEY_BYTES, ReadError, Session};
use crate::model::{ChannelName, ChannelRef, WriteMode, check_value, is_valid_key, well_known};

impl Session {
    /// `tags.get`: this installation's tag.
    pub fn tag_get(&self, key: &str) -> Result<Option<Value>, CapError> {
        let app_key = self.grant.app_key.clone();
        self.tag_get_from(&app_key, key)
    }

    /// `tags.get-from`: another installation's tag on the same agent.
    pub fn tag_get_from(&self, app_key: &str, key: &str) -> Result<Option<Value>, CapError> {
        check_key("tag key", key)?;
        check_key("app key", app_key)?;
        Ok(self.with_aggregate(&self.tag_channel(), |a| a.and_then(|a| a.data.get(app_key)?.get(key).cloned()))?)
    }

    /// All of this installation's tags as JSON text (for the invocation
    /// context), `{}` when it has none.
    pub fn tags_snapshot(&self) -> Result<String, ReadError> {
        let own =
            |a: Option<&crate::model::Aggregate>| a.and_then(|a| a.data.get(&self.grant.app_key)).map(Value::to_string);
        Ok(self.with_aggregate(&self.tag_channel(), own)?.unwrap_or_else(|| "{}".into()))
    }

    /// `tags.set`: a no-op when the value is unchanged (as in pydoover). With
    /// `log`, the change is also written as a `tag_values` message.
    pub fn tag_set(&mut self, key: &str, value: &str, log: bool) -> Result<(), CapError> {
        check_key("tag key", key)?;
        let value: Value = serde_json::from_str(value)
            .map_err(|e| CapError::Invalid(format!("tag {key:?} value is not JSON: {e}")))?;
        check_value(&value)?;
        if value.is_null() {
            return self.tag_delete(key);
        }
        let app_key = &self.grant.app_key;
        let unchanged = self.with_aggregate(&self.tag_channel(), |a| {
            a.and_then(|a| a.data.get(app_key)?.get(key)).is_some_and(|current| current == &value)
        })?;
        if unchanged {
            return Ok(());
        }
        self.write_tag(key, value, log)
    }

    /// `tags.delete`: a no-op when absent.
    pub fn tag_delete(&mut self, key: &str) -> Result<(), CapError> {
        check_key("tag key", key)?;
        if self.tag_get(key)?.is_none() {
            return Ok(());
        }
        self.write_tag(key, Value::Null, false)
    }

    fn write_tag(&mut self, key: &str, value: Value, log: bool) -> Result<(), CapError> {
        // The installation's key is a key of the patch: checked like the tag's.
        check_key("app key", &self.grant.app_key)?;
        let patch = json!({ self.grant.app_key.clone(): { key: value } });
        let channel = self.tag_channel();
        if log {
            self.push_message(channel.clone(), patch.clone(), None, None)?;
        }
        self.push_aggregate(channel, patch, WriteMode::Merge)
    }

    fn tag_channel(&self) -> ChannelRef {
        ChannelRef { agent_id: self.grant.agent_id, name: ChannelName::from_static(well_known::TAG_VALUES) }
    }
}

pub(crate) fn check_key(what: &str, key: &str) -> Result<(), CapError> {
    if key.len() > MAX_KEY_BYTES || !is_valid_key(key) {
        return Err(CapError::Invalid(format!(
            "{what} {:?} must be 1-{MAX_KEY_BYTES} characters from [a-zA-Z0-9_-]",
            key.chars().take(64).collect::<String>()
        )));
    }
    Ok(())
}

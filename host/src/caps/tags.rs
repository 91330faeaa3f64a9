//! `tags`: per-installation state in the agent's `tag_values` aggregate,
//! `{app_key: {tag: value}}`, as Doover stores it.

use serde_json::{Value, json};

use super::{CapError, MAX_KEY_BYTES, MAX_PAYLOAD_BYTES, ReadError, Session};
use crate::model::{
    Aggregate, ChannelName, ChannelRef, WriteMode, apply_diff_in_place, check_value, is_valid_key, well_known,
};

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
        let channel = self.tag_channel();
        if log {
            let patch = json!({ self.grant.app_key.clone(): { key: value.clone() } });
            self.push_message(channel.clone(), patch, None, None)?;
        }
        let Some((value, value_bytes)) = self.fold_tag(&channel, key, value)? else { return Ok(()) };
        let bytes = tag_patch_len(&self.grant.app_key, key, value_bytes);
        let patch = json!({ self.grant.app_key.clone(): { key: value } });
        self.push_aggregate(channel, patch, WriteMode::Merge)?;
        self.tag_patch_bytes = bytes;
        Ok(())
    }

    /// Fold a tag write into the invocation's last aggregate write when
    /// that is this installation's tag patch: an invocation's tags then
    /// reach the `tag_values` aggregate as one write, as pydoover publishes
    /// them once at the end of an invocation, and the commit merges and
    /// the monitors see one update instead of one per tag. `None` when
    /// folded; else the value back with its serialized size, for a write
    /// of its own.
    ///
    /// Folding is exact: the tag's new value replaces what the patch held
    /// for it, which is what applying the two writes in turn does, except
    /// when an object follows a value already in the patch (an object
    /// merges into what it finds): that one gets a write of its own. So
    /// does a tag that would grow the patch past a payload's bound.
    fn fold_tag(&mut self, channel: &ChannelRef, key: &str, value: Value) -> Result<Option<(Value, usize)>, CapError> {
        let app_key = self.grant.app_key.as_str();
        // `,"key":value` at most (less when it replaces a value).
        let value_bytes = crate::model::serialized_len(&value);
        let grown = self.tag_patch_bytes + key.len() + value_bytes + 4;
        let foldable = grown <= MAX_PAYLOAD_BYTES
            && self.effects.aggregates.last().is_some_and(|last| {
                let tags = match &last.data {
                    Value::Object(patch) if patch.len() == 1 => patch.get(app_key).and_then(Value::as_object),
                    _ => None,
                };
                &last.channel == channel
                    && last.mode == WriteMode::Merge
                    && tags.is_some_and(|tags| !(value.is_object() && tags.contains_key(key)))
            });
        if !foldable {
            return Ok(Some((value, value_bytes)));
        }
        self.charge_len(tag_patch_len(&self.grant.app_key, key, value_bytes))?;
        self.tag_patch_bytes = grown;
        let app_key = &self.grant.app_key;
        // An aggregate read that has seen the last write sees this one too.
        let written = self.effects.aggregates.len();
        let now = self.now();
        if let Some(overlay) =
            self.overlays.get_mut().iter_mut().find(|o| &o.channel == channel && o.applied == written)
        {
            let aggregate = overlay
                .aggregate
                .get_or_insert_with(|| Aggregate { data: Value::Object(Default::default()), last_updated: None });
            if let Value::Object(data) = &mut aggregate.data {
                let own = data.entry(app_key.clone()).or_insert_with(|| Value::Object(Default::default()));
                match (own, &value) {
                    (Value::Object(own), Value::Null) => drop(own.remove(key)),
                    // A value that is not an object replaces the tag's.
                    (Value::Object(own), v) if !v.is_object() => drop(own.insert(key.to_owned(), v.clone())),
                    (own, v) => apply_diff_in_place(own, &json!({ key: v })),
                }
            }
            aggregate.last_updated = Some(now);
        }
        if let Some(Value::Object(tags)) =
            self.effects.aggregates.last_mut().and_then(|last| last.data.get_mut(app_key))
        {
            tags.insert(key.to_owned(), value);
        }
        Ok(None)
    }

    fn tag_channel(&self) -> ChannelRef {
        ChannelRef { agent_id: self.grant.agent_id, name: ChannelName::from_static(well_known::TAG_VALUES) }
    }
}

/// The size of `{app_key: {key: value}}` as compact JSON, for a value of
/// `value_bytes` (keys need no escaping: they are checked), as
/// [`serialized_len`](crate::model::serialized_len) would count it.
fn tag_patch_len(app_key: &str, key: &str, value_bytes: usize) -> usize {
    // {"app_key":{"key":value}}
    app_key.len() + key.len() + value_bytes + 10
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

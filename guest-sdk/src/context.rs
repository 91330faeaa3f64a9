//! The invocation context, with the installation's config typed.

use serde_json::Value;

use crate::event::json;

/// What Paddock tells the app about this invocation.
#[derive(Debug, Clone)]
pub struct Context<C> {
    /// The event's id, stable across retries: use it to make external
    /// side effects idempotent.
    pub event_id: u64,
    /// 1 on the first attempt.
    pub attempt: u32,
    /// Wall-clock deadline, Unix ms.
    pub deadline: u64,
    /// The tenant.
    pub organisation_id: u64,
    /// The agent the installation runs for.
    pub agent_id: u64,
    /// The app.
    pub app_id: u64,
    /// The installation.
    pub install_id: u64,
    /// The installation's key (its namespace in tags and UI).
    pub app_key: String,
    /// The installation's display name.
    pub app_display_name: String,
    /// The installation's configuration, typed.
    pub config: C,
    /// The configuration as JSON.
    pub raw_config: Value,
    /// This installation's tags when the invocation started.
    pub tags: Value,
    /// The agent's `doover_connection` aggregate, if any.
    pub connection: Option<Value>,
    /// The channel that raised this event, if any.
    pub invoking_channel: Option<String>,
}

impl<C: serde::de::DeserializeOwned> Context<C> {
    pub(crate) fn from_wit(ctx: crate::bindings::paddock::app::types::Context) -> Result<Self, crate::AppError> {
        let raw_config = json(&ctx.deployment_config);
        let config = serde_json::from_value(raw_config.clone())
            .map_err(|e| crate::AppError::fail(format!("deployment config does not match the app's Config: {e}")))?;
        Ok(Context {
            event_id: ctx.event_id,
            attempt: ctx.attempt,
            deadline: ctx.deadline,
            organisation_id: ctx.organisation_id,
            agent_id: ctx.agent_id,
            app_id: ctx.app_id,
            install_id: ctx.install_id,
            app_key: ctx.app_key,
            app_display_name: ctx.app_display_name,
            config,
            raw_config,
            tags: json(&ctx.tags),
            connection: ctx.connection.as_deref().map(json),
            invoking_channel: ctx.invoking_channel,
        })
    }
}

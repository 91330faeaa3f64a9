//! Glue used by [`export_app!`](crate::export_app). Not part of the API.

use crate::bindings::exports::paddock::app::handler::AppError as WitAppError;
use crate::bindings::paddock::app::types as wit;
use crate::{App, Context, Event};

/// The hooks an app declared.
pub fn hooks<A: App>() -> Vec<wit::Hook> {
    A::HOOKS.iter().map(|h| (*h).into()).collect()
}

/// The app's config schema as JSON text.
pub fn config_schema<A: App>() -> Option<String> {
    serde_json::to_string_pretty(&schemars::schema_for!(A::Config)).ok()
}

/// Run one event through the app's lifecycle.
pub fn handle<A: App>(ctx: wit::Context, event: wit::Event) -> Result<(), WitAppError> {
    let event = Event::from(event);
    let mut app = A::default();
    if !app.pre_hook_filter(&event) {
        crate::log::debug("pre_hook_filter rejected the event");
        return Ok(());
    }
    let ctx: Context<A::Config> = Context::from_wit(ctx)?;
    app.setup(&ctx)?;
    let result = match &event {
        Event::MessageCreate(e) => app.on_message_create(&ctx, e),
        Event::AggregateUpdate(e) => app.on_aggregate_update(&ctx, e),
        Event::Deployment(e) => app.on_deployment(&ctx, e),
        Event::Schedule(e) => app.on_schedule(&ctx, e),
        Event::Ingestion(e) => app.on_ingestion_endpoint(&ctx, e),
        Event::ManualInvoke(e) => app.on_manual_invoke(&ctx, e),
        Event::OauthCallback(e) => app.on_oauth_callback(&ctx, e),
    };
    app.close(&ctx);
    result.map_err(Into::into)
}

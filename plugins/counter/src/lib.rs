//! Engine test fixture: see README.md.

use paddock_sdk::channels::NewMessage;
use paddock_sdk::prelude::*;

/// Settings.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Config {
    /// Keep every `n` seen in the `seen` tag (the crash test checks it);
    /// off, the work per event is constant (the engine benchmark).
    #[serde(default = "yes")]
    pub track_seen: bool,
}

impl Default for Config {
    fn default() -> Self {
        Self { track_seen: true }
    }
}

fn yes() -> bool {
    true
}

#[derive(Default)]
struct Counter;

impl App for Counter {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::MessageCreate, Hook::ManualInvoke, Hook::OauthCallback];

    /// Publishes an OAuth authorize URL (for the OAuth pass-through test).
    fn on_manual_invoke(&mut self, ctx: &Context<Config>, _ev: &ManualInvoke) -> Result<(), AppError> {
        let Some(oauth) = &ctx.oauth else { return Err(AppError::fail("no OAuth state in this context")) };
        let url = oauth.authorize_url("https://provider.example/authorize", "paddock-counter", "read");
        channels::publish("oauth", &json!({ "authorize_url": url, "state": oauth.state }))?;
        Ok(())
    }

    /// Keeps the code the provider sent (a real app would exchange it).
    fn on_oauth_callback(&mut self, _ctx: &Context<Config>, ev: &OauthCallback) -> Result<(), AppError> {
        tags::set("oauth_code", &ev.code)?;
        Ok(())
    }

    fn on_message_create(&mut self, ctx: &Context<Config>, ev: &MessageCreate) -> Result<(), AppError> {
        let data = &ev.message.data;
        let n = data.get("n").and_then(Value::as_u64).unwrap_or(0);
        let count: u64 = tags::get("count")?.unwrap_or(0) + 1;
        tags::set("count", &count)?;
        if ctx.config.track_seen {
            let mut seen: Vec<u64> = tags::get("seen")?.unwrap_or_default();
            seen.push(n);
            tags::set("seen", &seen)?;
        }
        channels::create_message(NewMessage {
            channel: "counted".into(),
            data: json!({ "n": n, "count": count }),
            message_id: Some(ctx.event_id),
            ..Default::default()
        })?;
        let fail_attempts = data.get("fail_attempts").and_then(Value::as_u64).unwrap_or(0);
        if u64::from(ctx.attempt) <= fail_attempts {
            return Err(AppError::retry(format!("attempt {} asked to fail", ctx.attempt)));
        }
        if data.get("echo").and_then(Value::as_bool) == Some(true) {
            channels::publish("ticks", &json!({ "n": n + 1, "echo": true }))?;
        }
        Ok(())
    }
}

paddock_sdk::export_app!(Counter);

//! The invocation context, with the installation's config typed.

use std::cell::OnceCell;

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
    /// The channel that raised this event, if any.
    pub invoking_channel: Option<String>,
    /// OAuth2 pass-through, for apps that handle `on_oauth_callback` on a
    /// server: put [`OauthInfo::state`] and [`OauthInfo::redirect_uri`] in
    /// the provider's authorize URL; the provider's redirect then reaches
    /// this installation as [`crate::OauthCallback`]. `None` elsewhere
    /// (e.g. under `paddock invoke`).
    pub oauth: Option<OauthInfo>,
    // JSON documents parsed on first use: most hooks never look at them, and
    // parsing in wasm is a visible share of a short hook's cost.
    raw_config: String,
    tags: String,
    connection: Option<String>,
    parsed: OnceCell<Parsed>,
}

/// What goes into an OAuth2 authorize URL (see [`Context::oauth`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthInfo {
    /// The host-signed `state` naming this installation (valid for an hour).
    pub state: String,
    /// The host's callback URL, for `redirect_uri`.
    pub redirect_uri: String,
}

impl OauthInfo {
    /// An authorize URL: `base` (the provider's authorization endpoint)
    /// with `client_id`, `redirect_uri`, `state`, `response_type=code` and
    /// `scope` added, percent-encoded.
    pub fn authorize_url(&self, base: &str, client_id: &str, scope: &str) -> String {
        let sep = if base.contains('?') { '&' } else { '?' };
        format!(
            "{base}{sep}response_type=code&client_id={}&redirect_uri={}&scope={}&state={}",
            encode(client_id),
            encode(&self.redirect_uri),
            encode(scope),
            encode(&self.state)
        )
    }
}

/// Percent-encode everything but unreserved characters (RFC 3986).
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, Clone)]
struct Parsed {
    raw_config: Value,
    tags: Value,
    connection: Option<Value>,
}

impl<C: serde::de::DeserializeOwned> Context<C> {
    pub(crate) fn from_wit(ctx: crate::bindings::paddock::app::types::Context) -> Result<Self, crate::AppError> {
        let config = serde_json::from_str(&ctx.deployment_config)
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
            invoking_channel: ctx.invoking_channel,
            oauth: ctx.oauth.map(|o| OauthInfo { state: o.state, redirect_uri: o.redirect_uri }),
            raw_config: ctx.deployment_config,
            tags: ctx.tags,
            connection: ctx.connection,
            parsed: OnceCell::new(),
        })
    }
}

impl<C> Context<C> {
    fn parsed(&self) -> &Parsed {
        self.parsed.get_or_init(|| Parsed {
            raw_config: json(&self.raw_config),
            tags: json(&self.tags),
            connection: self.connection.as_deref().map(json),
        })
    }

    /// The configuration as JSON.
    pub fn raw_config(&self) -> &Value {
        &self.parsed().raw_config
    }

    /// This installation's tags as they were when the invocation started
    /// (a JSON object). Use [`tags::get`](crate::tags::get) to see writes
    /// made during the invocation.
    pub fn tags(&self) -> &Value {
        &self.parsed().tags
    }

    /// One tag from the start-of-invocation snapshot, without a host call
    /// (pydoover's `get_tag`).
    pub fn tag<T: serde::de::DeserializeOwned>(&self, key: &str) -> Option<T> {
        self.tags().get(key).and_then(|v| T::deserialize(v).ok())
    }

    /// The agent's `doover_connection` aggregate, if any.
    pub fn connection(&self) -> Option<&Value> {
        self.parsed().connection.as_ref()
    }
}

//! Typed events, with JSON payloads already parsed.

use serde_json::Value;

use crate::bindings::paddock::app::types as wit;

/// The event kinds (the hooks an app can implement).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    /// [`App::on_message_create`](crate::App::on_message_create)
    MessageCreate,
    /// [`App::on_aggregate_update`](crate::App::on_aggregate_update)
    AggregateUpdate,
    /// [`App::on_deployment`](crate::App::on_deployment)
    Deployment,
    /// [`App::on_schedule`](crate::App::on_schedule)
    Schedule,
    /// [`App::on_ingestion_endpoint`](crate::App::on_ingestion_endpoint)
    Ingestion,
    /// [`App::on_manual_invoke`](crate::App::on_manual_invoke)
    ManualInvoke,
    /// [`App::on_oauth_callback`](crate::App::on_oauth_callback)
    OauthCallback,
}

/// A channel: a name on one agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelRef {
    /// The owning agent.
    pub agent_id: u64,
    /// The channel name.
    pub name: String,
}

/// A channel message.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// Time-ordered id.
    pub id: u64,
    /// The writer.
    pub author_id: u64,
    /// Where it was written.
    pub channel: ChannelRef,
    /// The payload (a JSON object).
    pub data: Value,
    /// Unix milliseconds.
    pub timestamp: u64,
}

/// A channel's merged state.
#[derive(Debug, Clone, PartialEq)]
pub struct Aggregate {
    /// The state (a JSON object).
    pub data: Value,
    /// Unix ms of the last change.
    pub last_updated: Option<u64>,
}

/// `on_message_create`.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageCreate {
    /// The tenant.
    pub organisation_id: u64,
    /// The new message.
    pub message: Message,
}

/// `on_aggregate_update`.
#[derive(Debug, Clone, PartialEq)]
pub struct AggregateUpdate {
    /// The tenant.
    pub organisation_id: u64,
    /// Who changed it.
    pub author_id: u64,
    /// Which channel.
    pub channel: ChannelRef,
    /// The aggregate after the change.
    pub aggregate: Aggregate,
    /// The patch that was applied.
    pub request_data: Value,
}

/// `on_deployment`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Deployment {
    /// The agent it is installed on.
    pub agent_id: u64,
    /// The app.
    pub app_id: u64,
    /// The installation.
    pub app_install_id: u64,
    /// The installation's key.
    pub app_key: String,
    /// Its display name.
    pub app_display_name: String,
}

/// `on_schedule`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// The schedule.
    pub schedule_id: u64,
    /// The tenant.
    pub organisation_id: u64,
}

/// `on_ingestion_endpoint`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingestion {
    /// The endpoint.
    pub ingestion_id: u64,
    /// Its agent.
    pub agent_id: u64,
    /// The tenant.
    pub organisation_id: u64,
    /// The raw body.
    pub payload: Vec<u8>,
    /// Its content type.
    pub content_type: String,
    /// The URL posted to.
    pub invocation_url: String,
}

impl Ingestion {
    /// The body parsed as JSON.
    pub fn json<T: serde::de::DeserializeOwned>(&self) -> Result<T, crate::Error> {
        Ok(serde_json::from_slice(&self.payload)?)
    }

    /// The body as UTF-8 text (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// `on_manual_invoke`.
#[derive(Debug, Clone, PartialEq)]
pub struct ManualInvoke {
    /// The tenant.
    pub organisation_id: u64,
    /// What the user passed.
    pub payload: Value,
}

/// `on_oauth_callback`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthCallback {
    /// The authorization code to exchange.
    pub code: String,
    /// The host-signed state (names this installation).
    pub state: String,
    /// Other query parameters.
    pub params: Vec<(String, String)>,
}

/// Any event.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// See [`MessageCreate`].
    MessageCreate(MessageCreate),
    /// See [`AggregateUpdate`].
    AggregateUpdate(AggregateUpdate),
    /// See [`Deployment`].
    Deployment(Deployment),
    /// See [`Schedule`].
    Schedule(Schedule),
    /// See [`Ingestion`].
    Ingestion(Ingestion),
    /// See [`ManualInvoke`].
    ManualInvoke(ManualInvoke),
    /// See [`OauthCallback`].
    OauthCallback(OauthCallback),
}

pub(crate) fn json(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

pub(crate) fn channel(c: wit::ChannelRef) -> ChannelRef {
    ChannelRef { agent_id: c.agent_id, name: c.name }
}

pub(crate) fn message(m: wit::Message) -> Message {
    Message {
        id: m.id,
        author_id: m.author_id,
        channel: channel(m.channel),
        data: json(&m.data),
        timestamp: m.timestamp,
    }
}

pub(crate) fn aggregate(a: wit::Aggregate) -> Aggregate {
    Aggregate { data: json(&a.data), last_updated: a.last_updated }
}

impl From<wit::Event> for Event {
    fn from(e: wit::Event) -> Self {
        match e {
            wit::Event::MessageCreate(m) => {
                Event::MessageCreate(MessageCreate { organisation_id: m.organisation_id, message: message(m.message) })
            }
            wit::Event::AggregateUpdate(a) => Event::AggregateUpdate(AggregateUpdate {
                organisation_id: a.organisation_id,
                author_id: a.author_id,
                channel: channel(a.channel),
                aggregate: aggregate(a.aggregate),
                request_data: json(&a.request_data),
            }),
            wit::Event::Deployment(d) => Event::Deployment(Deployment {
                agent_id: d.agent_id,
                app_id: d.app_id,
                app_install_id: d.app_install_id,
                app_key: d.app_key,
                app_display_name: d.app_display_name,
            }),
            wit::Event::Schedule(s) => {
                Event::Schedule(Schedule { schedule_id: s.schedule_id, organisation_id: s.organisation_id })
            }
            wit::Event::Ingestion(i) => Event::Ingestion(Ingestion {
                ingestion_id: i.ingestion_id,
                agent_id: i.agent_id,
                organisation_id: i.organisation_id,
                payload: i.payload,
                content_type: i.content_type,
                invocation_url: i.invocation_url,
            }),
            wit::Event::ManualInvoke(m) => {
                Event::ManualInvoke(ManualInvoke { organisation_id: m.organisation_id, payload: json(&m.payload) })
            }
            wit::Event::OauthCallback(o) => {
                Event::OauthCallback(OauthCallback { code: o.code, state: o.state, params: o.params })
            }
        }
    }
}

impl From<Hook> for wit::Hook {
    fn from(h: Hook) -> Self {
        match h {
            Hook::MessageCreate => wit::Hook::MessageCreate,
            Hook::AggregateUpdate => wit::Hook::AggregateUpdate,
            Hook::Deployment => wit::Hook::Deployment,
            Hook::Schedule => wit::Hook::Schedule,
            Hook::Ingestion => wit::Hook::Ingestion,
            Hook::ManualInvoke => wit::Hook::ManualInvoke,
            Hook::OauthCallback => wit::Hook::OauthCallback,
        }
    }
}

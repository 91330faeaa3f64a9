//! Events: what an app reacts to, in Doover's `{op, d}` envelope.
//!
//! Parsing accepts what real Doover fixtures contain: ids as strings or
//! numbers, both the current and the legacy `on_message_create` shape, and an
//! ingestion payload as base64 (Doover's wire form) or as inline JSON.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::channel::{Aggregate, ChannelName, ChannelRef, Message};
use super::ids::{AgentId, AppId, IngestionId, InstallId, MessageId, OrgId, ScheduleId};

/// The event kinds, named as the app's hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Hook {
    /// `on_message_create`
    MessageCreate,
    /// `on_aggregate_update`
    AggregateUpdate,
    /// `on_deployment`
    Deployment,
    /// `on_schedule`
    Schedule,
    /// `on_ingestion_endpoint`
    Ingestion,
    /// `on_manual_invoke`
    ManualInvoke,
    /// `on_oauth_callback`
    OauthCallback,
}

impl Hook {
    /// Every hook, in WIT order.
    pub const ALL: [Hook; 7] = [
        Hook::MessageCreate,
        Hook::AggregateUpdate,
        Hook::Deployment,
        Hook::Schedule,
        Hook::Ingestion,
        Hook::ManualInvoke,
        Hook::OauthCallback,
    ];

    /// The Doover `op` name.
    pub fn op(self) -> &'static str {
        match self {
            Hook::MessageCreate => "on_message_create",
            Hook::AggregateUpdate => "on_aggregate_update",
            Hook::Deployment => "on_deployment",
            Hook::Schedule => "on_schedule",
            Hook::Ingestion => "on_ingestion_endpoint",
            Hook::ManualInvoke => "on_manual_invoke",
            Hook::OauthCallback => "on_oauth_callback",
        }
    }

    /// The hook for a Doover `op` name.
    pub fn from_op(op: &str) -> Option<Hook> {
        Hook::ALL.into_iter().find(|h| h.op() == op)
    }
}

/// An event, host side.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A message was created on a subscribed channel.
    MessageCreate {
        /// The tenant.
        organisation_id: OrgId,
        /// The message.
        message: Message,
    },
    /// A subscribed channel's aggregate changed.
    AggregateUpdate {
        /// The tenant.
        organisation_id: OrgId,
        /// Who changed it.
        author_id: AgentId,
        /// Which channel.
        channel: ChannelRef,
        /// The aggregate after the change.
        aggregate: Aggregate,
        /// The patch applied.
        request_data: Value,
    },
    /// The installation was created, reconfigured or upgraded.
    Deployment {
        /// The agent it is installed on.
        agent_id: AgentId,
        /// The app.
        app_id: AppId,
        /// The installation.
        app_install_id: InstallId,
        /// The installation's key.
        app_key: String,
        /// Its display name.
        app_display_name: String,
    },
    /// A schedule fired.
    Schedule {
        /// The schedule.
        schedule_id: ScheduleId,
        /// The tenant.
        organisation_id: OrgId,
    },
    /// An external system posted to an ingestion endpoint.
    Ingestion {
        /// The endpoint.
        ingestion_id: IngestionId,
        /// Its agent.
        agent_id: AgentId,
        /// The tenant.
        organisation_id: OrgId,
        /// The raw body.
        payload: Vec<u8>,
        /// Its content type.
        content_type: String,
        /// The URL posted to.
        invocation_url: String,
    },
    /// A user invoked the app by hand.
    ManualInvoke {
        /// The tenant.
        organisation_id: OrgId,
        /// What they passed.
        payload: Value,
    },
    /// An OAuth2 provider redirected back.
    OauthCallback {
        /// The authorization code.
        code: String,
        /// The host-signed state.
        state: String,
        /// The other query parameters.
        params: BTreeMap<String, String>,
    },
}

/// The event file or body could not be understood.
#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Not JSON, or not `{op, d}`.
    #[error("event is not a JSON object {{\"op\": ..., \"d\": {{...}}}}: {0}")]
    Envelope(String),
    /// `op` names no known event.
    #[error(
        "unknown op {0:?}; expected one of on_message_create, on_aggregate_update, on_deployment, on_schedule, on_ingestion_endpoint, on_manual_invoke, on_oauth_callback"
    )]
    UnknownOp(String),
    /// `d` does not have the shape `op` needs.
    #[error("bad {op} event: {reason}")]
    Shape {
        /// The op.
        op: &'static str,
        /// What is wrong, naming the field.
        reason: String,
    },
}

/// The `{op, d}` envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventEnvelope {
    /// The event kind, e.g. `on_message_create`.
    pub op: String,
    /// The kind's payload.
    pub d: Value,
}

impl Event {
    /// The hook that handles this event.
    pub fn hook(&self) -> Hook {
        match self {
            Event::MessageCreate { .. } => Hook::MessageCreate,
            Event::AggregateUpdate { .. } => Hook::AggregateUpdate,
            Event::Deployment { .. } => Hook::Deployment,
            Event::Schedule { .. } => Hook::Schedule,
            Event::Ingestion { .. } => Hook::Ingestion,
            Event::ManualInvoke { .. } => Hook::ManualInvoke,
            Event::OauthCallback { .. } => Hook::OauthCallback,
        }
    }

    /// The channel whose change raised this event, if any.
    pub fn invoking_channel(&self) -> Option<&ChannelRef> {
        match self {
            Event::MessageCreate { message, .. } => Some(&message.channel),
            Event::AggregateUpdate { channel, .. } => Some(channel),
            _ => None,
        }
    }

    /// Parse a `{op, d}` JSON document.
    pub fn from_json(text: &str) -> Result<Event, EventError> {
        let env: EventEnvelope = serde_json::from_str(text).map_err(|e| EventError::Envelope(e.to_string()))?;
        Event::from_envelope(env)
    }

    /// Interpret an envelope.
    pub fn from_envelope(env: EventEnvelope) -> Result<Event, EventError> {
        let hook = Hook::from_op(&env.op).ok_or_else(|| EventError::UnknownOp(env.op.clone()))?;
        let shape = |e: serde_json::Error| EventError::Shape { op: hook.op(), reason: e.to_string() };
        let d = env.d;
        Ok(match hook {
            Hook::MessageCreate => message_create(d).map_err(shape)?,
            Hook::AggregateUpdate => {
                let w: wire::AggregateUpdate = serde_json::from_value(d).map_err(shape)?;
                Event::AggregateUpdate {
                    organisation_id: w.organisation_id,
                    author_id: w.author_id,
                    channel: w.channel,
                    aggregate: w.aggregate,
                    request_data: w.request_data,
                }
            }
            Hook::Deployment => {
                let w: wire::Deployment = serde_json::from_value(d).map_err(shape)?;
                Event::Deployment {
                    agent_id: w.agent_id,
                    app_id: w.app_id,
                    app_install_id: w.app_install_id,
                    app_key: w.app_key,
                    app_display_name: w.app_display_name,
                }
            }
            Hook::Schedule => {
                let w: wire::Schedule = serde_json::from_value(d).map_err(shape)?;
                Event::Schedule { schedule_id: w.schedule_id, organisation_id: w.organisation_id }
            }
            Hook::Ingestion => {
                let w: wire::Ingestion = serde_json::from_value(d).map_err(shape)?;
                let payload =
                    ingestion_payload(w.payload).map_err(|reason| EventError::Shape { op: hook.op(), reason })?;
                Event::Ingestion {
                    ingestion_id: w.ingestion_id,
                    agent_id: w.agent_id,
                    organisation_id: w.organisation_id,
                    payload,
                    content_type: w.content_type,
                    invocation_url: w.invocation_url,
                }
            }
            Hook::ManualInvoke => {
                let w: wire::ManualInvoke = serde_json::from_value(d).map_err(shape)?;
                Event::ManualInvoke { organisation_id: w.organisation_id, payload: w.payload }
            }
            Hook::OauthCallback => {
                let w: wire::OauthCallback = serde_json::from_value(d).map_err(shape)?;
                Event::OauthCallback { code: w.code, state: w.state, params: w.params }
            }
        })
    }

    /// The `{op, d}` envelope for this event (ingestion payloads as base64).
    pub fn to_envelope(&self) -> EventEnvelope {
        let d = match self {
            Event::MessageCreate { organisation_id, message } => {
                serde_json::json!({"organisation_id": organisation_id, "message": message})
            }
            Event::AggregateUpdate { organisation_id, author_id, channel, aggregate, request_data } => {
                serde_json::json!({
                    "organisation_id": organisation_id, "author_id": author_id, "channel": channel,
                    "aggregate": aggregate, "request_data": request_data,
                })
            }
            Event::Deployment { agent_id, app_id, app_install_id, app_key, app_display_name } => serde_json::json!({
                "agent_id": agent_id, "app_id": app_id, "app_install_id": app_install_id,
                "app_key": app_key, "app_display_name": app_display_name,
            }),
            Event::Schedule { schedule_id, organisation_id } => {
                serde_json::json!({"schedule_id": schedule_id, "organisation_id": organisation_id})
            }
            Event::Ingestion { ingestion_id, agent_id, organisation_id, payload, content_type, invocation_url } => {
                serde_json::json!({
                    "ingestion_id": ingestion_id, "agent_id": agent_id, "organisation_id": organisation_id,
                    "payload": base64::engine::general_purpose::STANDARD.encode(payload),
                    "content_type": content_type, "invocation_url": invocation_url,
                })
            }
            Event::ManualInvoke { organisation_id, payload } => {
                serde_json::json!({"organisation_id": organisation_id, "payload": payload})
            }
            Event::OauthCallback { code, state, params } => {
                serde_json::json!({"code": code, "state": state, "params": params})
            }
        };
        EventEnvelope { op: self.hook().op().to_owned(), d }
    }
}

/// Both `on_message_create` shapes: `{organisation_id, message}` with a full
/// message, and the legacy `{owner_id, channel_name, author_id,
/// organisation_id, message}` whose message may lack channel and author.
fn message_create(d: Value) -> Result<Event, serde_json::Error> {
    let w: wire::MessageCreate = serde_json::from_value(d)?;
    let m = w.message;
    let channel = match (m.channel, w.owner_id, w.channel_name) {
        (Some(c), _, _) => c,
        (None, Some(agent_id), Some(name)) => ChannelRef { agent_id, name },
        _ => {
            return Err(serde::de::Error::custom("message.channel missing (or legacy owner_id + channel_name)"));
        }
    };
    let author_id = m.author_id.or(w.author_id).unwrap_or(channel.agent_id);
    let message =
        Message { id: m.id, author_id, channel, data: m.data, timestamp: m.timestamp, attachments: m.attachments };
    Ok(Event::MessageCreate { organisation_id: w.organisation_id, message })
}

fn ingestion_payload(payload: Value) -> Result<Vec<u8>, String> {
    match payload {
        Value::String(b64) => base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .map_err(|e| format!("payload is a string but not base64: {e}")),
        Value::Null => Ok(Vec::new()),
        other => serde_json::to_vec(&other).map_err(|e| e.to_string()),
    }
}

/// Wire shapes, kept apart from the domain enum so that the domain type never
/// carries optional legacy fields.
mod wire {
    use super::*;

    #[derive(Deserialize)]
    pub struct MessageCreate {
        pub organisation_id: OrgId,
        pub message: WireMessage,
        pub owner_id: Option<AgentId>,
        pub channel_name: Option<ChannelName>,
        pub author_id: Option<AgentId>,
    }

    #[derive(Deserialize)]
    pub struct WireMessage {
        pub id: MessageId,
        pub author_id: Option<AgentId>,
        pub channel: Option<ChannelRef>,
        #[serde(alias = "payload")]
        pub data: Value,
        pub timestamp: Option<u64>,
        pub attachments: Option<Value>,
    }

    #[derive(Deserialize)]
    pub struct AggregateUpdate {
        pub organisation_id: OrgId,
        pub author_id: AgentId,
        pub channel: ChannelRef,
        pub aggregate: Aggregate,
        #[serde(default)]
        pub request_data: Value,
    }

    #[derive(Deserialize)]
    pub struct Deployment {
        pub agent_id: AgentId,
        pub app_id: AppId,
        pub app_install_id: InstallId,
        pub app_key: String,
        #[serde(default)]
        pub app_display_name: String,
    }

    #[derive(Deserialize)]
    pub struct Schedule {
        pub schedule_id: ScheduleId,
        pub organisation_id: OrgId,
    }

    #[derive(Deserialize)]
    pub struct Ingestion {
        pub ingestion_id: IngestionId,
        pub agent_id: AgentId,
        pub organisation_id: OrgId,
        #[serde(default)]
        pub payload: Value,
        #[serde(default = "default_content_type")]
        pub content_type: String,
        #[serde(default)]
        pub invocation_url: String,
    }

    fn default_content_type() -> String {
        "application/octet-stream".into()
    }

    #[derive(Deserialize)]
    pub struct ManualInvoke {
        pub organisation_id: OrgId,
        #[serde(default)]
        pub payload: Value,
    }

    #[derive(Deserialize)]
    pub struct OauthCallback {
        pub code: String,
        pub state: String,
        #[serde(default)]
        pub params: BTreeMap<String, String>,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_message_create_shapes_with_string_or_number_ids() {
        let current = r#"{"op":"on_message_create","d":{"organisation_id":"9","message":{"id":"100","author_id":5,
            "channel":{"agent_id":"5","name":"sensor_data"},"data":{"raw":1}}}}"#;
        let legacy = r#"{"op":"on_message_create","d":{"owner_id":5,"channel_name":"sensor_data","author_id":"5",
            "organisation_id":9,"message":{"id":100,"data":{"raw":1}}}}"#;
        assert_eq!(Event::from_json(current).unwrap(), Event::from_json(legacy).unwrap());
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(matches!(Event::from_json("[]"), Err(EventError::Envelope(_))));
        assert!(matches!(Event::from_json(r#"{"op":"on_nope","d":{}}"#), Err(EventError::UnknownOp(_))));
        let err = Event::from_json(r#"{"op":"on_schedule","d":{"organisation_id":1}}"#).unwrap_err();
        assert!(err.to_string().contains("schedule_id"), "{err}");
        let err = Event::from_json(
            r#"{"op":"on_ingestion_endpoint","d":{"ingestion_id":1,"agent_id":1,"organisation_id":1,"payload":"@@"}}"#,
        )
        .unwrap_err();
        assert!(err.to_string().contains("base64"), "{err}");
    }

    #[test]
    fn envelopes_round_trip() {
        let ev = Event::Ingestion {
            ingestion_id: 1.into(),
            agent_id: 2.into(),
            organisation_id: 3.into(),
            payload: b"a,b\n1,2".to_vec(),
            content_type: "text/csv".into(),
            invocation_url: "/v1/ingest/1".into(),
        };
        assert_eq!(Event::from_envelope(ev.to_envelope()).unwrap(), ev);
    }
}

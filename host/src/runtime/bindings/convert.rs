//! Conversions between domain types and generated WIT types.

use std::collections::BTreeSet;

use super::paddock::app::{agents, channels, types};
use crate::caps::{CapError, ReadError};
use crate::model::{Agent, Aggregate, ChannelRef, Event, Hook, Message, WriteMode};
use crate::runtime::invoke::ContextInfo;

/// The guest-visible error of a capability call, or the host failure
/// that must trap instead.
pub(crate) fn cap_err(e: CapError) -> Result<types::Error, ReadError> {
    Ok(match e {
        CapError::Denied(m) => types::Error::Denied(m),
        CapError::Invalid(m) => types::Error::Invalid(m),
        CapError::NotFound(m) => types::Error::NotFound(m),
        CapError::Limit(m) => types::Error::Limit(m),
        CapError::Unavailable(read) => return Err(read),
    })
}

pub(crate) fn write_mode(mode: channels::WriteMode) -> WriteMode {
    match mode {
        channels::WriteMode::Merge => WriteMode::Merge,
        channels::WriteMode::Replace => WriteMode::Replace,
        channels::WriteMode::ReplacePaths(p) => WriteMode::ReplacePaths(p),
    }
}

fn channel_to_wit(c: &ChannelRef) -> types::ChannelRef {
    types::ChannelRef { agent_id: c.agent_id.get(), name: c.name.to_string() }
}

pub(crate) fn message_to_wit(m: &Message) -> types::Message {
    types::Message {
        id: m.id.get(),
        author_id: m.author_id.get(),
        channel: channel_to_wit(&m.channel),
        data: m.data.to_string(),
        timestamp: m.unix_ms(),
    }
}

pub(crate) fn aggregate_to_wit(a: Aggregate) -> types::Aggregate {
    types::Aggregate { data: a.data.to_string(), last_updated: a.last_updated }
}

pub(crate) fn agent_to_wit(a: &Agent) -> agents::Agent {
    agents::Agent {
        id: a.id.get(),
        name: a.name.clone(),
        serial_number: a.serial_number.clone(),
        group: a.group.clone(),
        metadata: a.metadata.to_string(),
    }
}

pub(crate) fn hook_from_wit(hooks: Vec<types::Hook>) -> BTreeSet<Hook> {
    hooks
        .into_iter()
        .map(|h| match h {
            types::Hook::MessageCreate => Hook::MessageCreate,
            types::Hook::AggregateUpdate => Hook::AggregateUpdate,
            types::Hook::Deployment => Hook::Deployment,
            types::Hook::Schedule => Hook::Schedule,
            types::Hook::Ingestion => Hook::Ingestion,
            types::Hook::ManualInvoke => Hook::ManualInvoke,
            types::Hook::OauthCallback => Hook::OauthCallback,
        })
        .collect()
}

pub(crate) fn context_to_wit(c: ContextInfo) -> types::Context {
    types::Context {
        event_id: c.event_id.get(),
        attempt: c.attempt,
        deadline: c.deadline,
        organisation_id: c.grant.organisation_id.get(),
        agent_id: c.grant.agent_id.get(),
        app_id: c.grant.app_id.get(),
        install_id: c.grant.install_id.get(),
        app_key: c.grant.app_key.clone(),
        app_display_name: c.grant.display_name.clone(),
        deployment_config: c.grant.config.to_string(),
        tags: c.tags,
        connection: c.connection,
        invoking_channel: c.grant.invoking_channel.as_ref().map(|ch| ch.name.to_string()),
        oauth: c
            .grant
            .oauth
            .as_ref()
            .map(|o| types::OauthInfo { state: o.state.clone(), redirect_uri: o.redirect_uri.clone() }),
    }
}

pub(crate) fn event_to_wit(e: &Event) -> types::Event {
    use types::Event as W;
    match e {
        Event::MessageCreate { organisation_id, message } => W::MessageCreate(types::MessageCreate {
            organisation_id: organisation_id.get(),
            message: message_to_wit(message),
        }),
        Event::AggregateUpdate { organisation_id, author_id, channel, aggregate, request_data } => {
            W::AggregateUpdate(types::AggregateUpdate {
                organisation_id: organisation_id.get(),
                author_id: author_id.get(),
                channel: channel_to_wit(channel),
                aggregate: aggregate_to_wit(aggregate.clone()),
                request_data: request_data.to_string(),
            })
        }
        Event::Deployment { agent_id, app_id, app_install_id, app_key, app_display_name } => {
            W::Deployment(types::Deployment {
                agent_id: agent_id.get(),
                app_id: app_id.get(),
                app_install_id: app_install_id.get(),
                app_key: app_key.clone(),
                app_display_name: app_display_name.clone(),
            })
        }
        Event::Schedule { schedule_id, organisation_id } => {
            W::Schedule(types::Schedule { schedule_id: schedule_id.get(), organisation_id: organisation_id.get() })
        }
        Event::Ingestion { ingestion_id, agent_id, organisation_id, payload, content_type, invocation_url } => {
            W::Ingestion(types::Ingestion {
                ingestion_id: ingestion_id.get(),
                agent_id: agent_id.get(),
                organisation_id: organisation_id.get(),
                payload: payload.clone(),
                content_type: content_type.clone(),
                invocation_url: invocation_url.clone(),
            })
        }
        Event::ManualInvoke { organisation_id, payload } => W::ManualInvoke(types::ManualInvoke {
            organisation_id: organisation_id.get(),
            payload: payload.to_string(),
        }),
        Event::OauthCallback { code, state, params } => W::OauthCallback(types::OauthCallback {
            code: code.clone(),
            state: state.clone(),
            params: params.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        }),
    }
}

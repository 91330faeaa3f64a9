//! Routing: which installations an effect concerns, as queued events.

use serde_json::Value;

use super::Installation;
use super::catalog::Installs;
use crate::caps::Effects;
use crate::model::{AgentId, Aggregate, ChannelRef, Event, EventId, Hook, OrgId, well_known};
use crate::store::QueuedEvent;

/// The events `effects` raise for the installations of `org`. `depth` is
/// the causal depth of the raised events (the source event's + 1).
///
/// Skipped: installations without a handler for the event (nothing would be
/// instantiated anyway), and an installation's own `tag_values` writes,
/// which never re-trigger it (Doover's rule: the write carries its app key).
///
/// Each effect is offered only to the installations that can hear its
/// agent ([`Installs::hearing`]), so routing costs what a write concerns,
/// not the number of installations. Within one line the events keep the
/// effects' order (messages, then aggregate writes).
pub fn route(
    installs: &Installs,
    org: OrgId,
    effects: &Effects,
    source: Option<&Installation>,
    depth: u32,
    now: u64,
) -> Vec<QueuedEvent> {
    let author = source.map_or(AgentId::from(0), |s| s.agent_id);
    let mut out = Vec::new();
    for m in &effects.messages {
        for inst in installs.hearing(org, m.channel.agent_id) {
            if concerns(inst, &m.channel, &m.data, Hook::MessageCreate) {
                let event = Event::MessageCreate { organisation_id: org, message: m.clone() };
                out.push(queued(inst, m.channel.agent_id, &event, depth, now));
            }
        }
    }
    for w in &effects.aggregates {
        for inst in installs.hearing(org, w.channel.agent_id) {
            if concerns(inst, &w.channel, &w.data, Hook::AggregateUpdate) {
                // The aggregate is read afresh when the event runs (see
                // `dispatch`), so the subscriber sees the state it acts on.
                let event = Event::AggregateUpdate {
                    organisation_id: org,
                    author_id: author,
                    channel: w.channel.clone(),
                    aggregate: Aggregate { data: Value::Object(Default::default()), last_updated: None },
                    request_data: w.data.clone(),
                };
                out.push(queued(inst, w.channel.agent_id, &event, depth, now));
            }
        }
    }
    out
}

fn concerns(inst: &Installation, channel: &ChannelRef, data: &Value, hook: Hook) -> bool {
    let own_tags = || channel.name.as_str() == well_known::TAG_VALUES && data.get(&inst.app_key).is_some();
    inst.app.hooks.contains(&hook) && inst.subscribes_to(channel) && !own_tags()
}

/// A fresh queued event for `inst`, in the line of `agent`.
pub fn queued(inst: &Installation, agent: AgentId, event: &Event, depth: u32, now: u64) -> QueuedEvent {
    QueuedEvent {
        id: EventId::generate(),
        organisation_id: inst.organisation_id,
        install_id: inst.id,
        agent_id: agent,
        event: event.to_envelope(),
        attempt: 1,
        depth,
        enqueued_ms: now,
        enqueued_us: crate::model::now_us(),
        due_ms: now,
        seq: 0,
    }
}

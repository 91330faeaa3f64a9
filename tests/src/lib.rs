//! Helpers shared by the end-to-end tests: where the built example apps
//! are, and how to run one event against seeded in-memory state.
//!
//! The example components are built by `make plugins` (which `make test`
//! runs first); a missing component fails the test with that hint.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

pub mod http;
pub mod push;
pub mod receiver;
pub mod server;
pub mod tenant;

use std::path::PathBuf;
use std::sync::Arc;

use paddock::caps::{Grant, MemoryState, Reach};
use paddock::manifest::AppKind;
use paddock::model::{Agent, AgentId, ChannelName, ChannelRef, Event, EventId, Message, MessageId, OrgId};
use paddock::runtime::{Invocation, LoadedApp, Report, Runtime, RuntimeConfig};
use serde_json::{Value, json};

/// The organisation the fixtures live in.
pub const ORG: u64 = 7001;
/// The device most apps are installed on.
pub const TANK: u64 = 7002;
/// A second device of the same organisation.
pub const TANK2: u64 = 7003;
/// A device of another organisation.
pub const FOREIGN: u64 = 8002;

/// The repository root.
pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// An example app's directory.
pub fn app_dir(name: &str) -> PathBuf {
    repo().join("plugins").join(name)
}

/// A runtime with default settings.
pub fn runtime() -> Runtime {
    runtime_with(RuntimeConfig::default())
}

/// A runtime with the given settings.
pub fn runtime_with(config: RuntimeConfig) -> Runtime {
    match Runtime::new(config) {
        Ok(rt) => rt,
        Err(e) => panic!("runtime: {e}"),
    }
}

/// Load an example app, explaining how to build it if it is missing.
pub async fn load(rt: &Runtime, name: &str) -> LoadedApp {
    match rt.load_dir(&app_dir(name)).await {
        Ok(app) => app,
        Err(e) => panic!("loading plugins/{name}: {e}\n(run `make plugins` first)"),
    }
}

/// Two tanks in [`ORG`], one foreign device in another organisation.
pub fn state() -> MemoryState {
    let mut s = MemoryState::default();
    let agent = |id: u64, name: &str, serial: &str| Agent {
        id: id.into(),
        name: name.into(),
        serial_number: Some(serial.into()),
        group: None,
        metadata: json!({}),
    };
    s.add_agent(OrgId::from(ORG), agent(TANK, "North Tank", "TANK-001"));
    s.add_agent(OrgId::from(ORG), agent(TANK2, "South Tank", "TANK-002"));
    s.add_agent(OrgId::from(8001), agent(FOREIGN, "Foreign Tank", "TANK-999"));
    s
}

/// The grant of an installation of `app` on [`TANK`] with `config`
/// (validated against the app's schema, defaults filled in).
pub fn grant(app: &LoadedApp, config: Value) -> Grant {
    let config = match app.manifest.validate_config(&config) {
        Ok(c) => c,
        Err(errors) => panic!("config rejected: {errors:?}"),
    };
    Grant {
        organisation_id: OrgId::from(ORG),
        agent_id: AgentId::from(TANK),
        app_id: 1.into(),
        install_id: 2.into(),
        app_key: app.manifest.name.replace('-', "_"),
        display_name: app.manifest.display_name.clone(),
        config: config.to_string().into(),
        reach: if app.manifest.kind == AppKind::Integration { Reach::Organisation } else { Reach::OwnAgent },
        invoking_channel: None,
        allow_invoking_channel: app.manifest.allow_invoking_channel,
        oauth: None,
    }
}

/// A message-create event on `agent`'s `channel`.
pub fn message_event(agent: u64, channel: &str, data: Value) -> Event {
    let channel = ChannelRef { agent_id: agent.into(), name: must(ChannelName::new(channel)) };
    let message = Message {
        id: MessageId::at(paddock::model::now_ms()),
        author_id: agent.into(),
        channel,
        data,
        timestamp: None,
        attachments: None,
    };
    Event::MessageCreate { organisation_id: OrgId::from(ORG), message }
}

/// A manual-invoke event with `payload`.
pub fn manual(payload: Value) -> Event {
    Event::ManualInvoke { organisation_id: OrgId::from(ORG), payload }
}

/// Run one event.
pub async fn run(rt: &Runtime, app: &LoadedApp, grant: Grant, event: Event, state: &MemoryState) -> Report {
    let inv = Invocation { event_id: EventId::generate(), attempt: 1, event, grant };
    rt.invoke(app, inv, Arc::new(state.clone())).await
}

/// Apply a successful report's effects to `state`, as the engine's commit
/// would, so that a sequence of events sees its own history.
pub fn commit(state: &mut MemoryState, report: &Report) {
    for w in &report.effects.aggregates {
        let old =
            must(paddock::caps::StateView::aggregate(state, &w.channel)).map(|a| a.data).unwrap_or_else(|| json!({}));
        state.set_aggregate(w.channel.clone(), paddock::model::apply_write(&old, &w.data, &w.mode));
    }
    for m in &report.effects.messages {
        state.add_message(m.clone());
    }
}

/// The tags installation `app_key` holds on `agent` in `state`.
pub fn tags_of(state: &MemoryState, agent: u64, app_key: &str) -> Value {
    let ch = ChannelRef { agent_id: agent.into(), name: must(ChannelName::new("tag_values")) };
    must(paddock::caps::StateView::aggregate(state, &ch)).map(|a| a.data[app_key].clone()).unwrap_or(Value::Null)
}

/// Unwrap for test setup, with the error shown.
pub fn must<T, E: std::fmt::Debug>(r: Result<T, E>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e:?}"),
    }
}

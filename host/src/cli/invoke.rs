//! `paddock invoke`: one event, in-memory state, printed effects.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context as _, bail};
use clap::Args;
use serde_json::{Value, json};

use super::{EXIT_BAD_INPUT, EXIT_OUTCOME_ERROR, render};
use crate::caps::{Grant, MemoryState, Reach};
use crate::manifest::{AppKind, Manifest};
use crate::model::{Agent, AgentId, Event, EventId, OrgId};
use crate::runtime::{Invocation, Runtime, RuntimeConfig};

/// Arguments of `paddock invoke`.
#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The app: a directory with paddock.toml (or doover_config.json), or a
    /// bare .wasm component (default limits, no config schema).
    pub app: PathBuf,
    /// The event, as Doover's `{"op": ..., "d": {...}}` JSON.
    #[arg(long, short)]
    pub event: PathBuf,
    /// The installation config (JSON object), validated against the app's
    /// schema; schema defaults fill missing top-level fields.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Seed state: organisation, agents, channels (aggregates, messages).
    #[arg(long, short)]
    pub state: Option<PathBuf>,
    /// The agent the app is installed on (default: from the event or the state).
    #[arg(long)]
    pub agent: Option<u64>,
    /// The installation's app key (default: the app's name).
    #[arg(long)]
    pub app_key: Option<String>,
    /// The attempt number to report to the app.
    #[arg(long, default_value_t = 1)]
    pub attempt: u32,
    /// Print the full report as JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

pub(super) async fn run(args: InvokeArgs, config: RuntimeConfig) -> anyhow::Result<u8> {
    let runtime = Runtime::new(config)?;
    let manifest = load_manifest(&args.app)?;
    let event = read_event(&args.event)?;
    let config = match &args.config {
        Some(path) => read_json(path, "config")?,
        None => json!({}),
    };
    let config = match manifest.validate_config(&config) {
        Ok(c) => c,
        Err(errors) => {
            eprintln!("paddock: the config does not match {}'s schema:", manifest.name);
            for e in errors {
                eprintln!("  - {e}");
            }
            return Ok(EXIT_BAD_INPUT);
        }
    };
    let mut state = match &args.state {
        Some(path) => MemoryState::from_json(
            &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
        )
        .with_context(|| format!("in {}", path.display()))?,
        None => MemoryState::default(),
    };
    let app = runtime.load_manifest(manifest).await?;
    let grant = grant(&args, &app.manifest, &event, config, &mut state);
    let inv = Invocation { event_id: EventId::generate(), attempt: args.attempt, event, grant };
    let report = runtime.invoke(&app, inv, Arc::new(state)).await;
    if args.json {
        let out = json!({"app": app.manifest.name, "digest": app.digest, "report": report});
        super::emit(&format!("{}\n", serde_json::to_string_pretty(&out)?))?;
    } else {
        super::emit(&render::report(&app.manifest.name, &app.digest, &report))?;
    }
    Ok(if report.outcome.is_ok() { 0 } else { EXIT_OUTCOME_ERROR })
}

fn load_manifest(app: &Path) -> anyhow::Result<Manifest> {
    if app.is_dir() {
        return Ok(Manifest::load_dir(app)?);
    }
    if app.extension().is_some_and(|e| e == "wasm") {
        return Ok(Manifest::for_component(app.to_path_buf()));
    }
    bail!("{}: expected an app directory or a .wasm file", app.display())
}

fn read_json(path: &Path, what: &str) -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the {what} file {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("the {what} file {} is not JSON", path.display()))
}

fn read_event(path: &Path) -> anyhow::Result<Event> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading the event file {}", path.display()))?;
    Event::from_json(&text).with_context(|| format!("in the event file {}", path.display()))
}

/// Build the installation's grant, adding its agent to the state if the
/// state does not define it.
fn grant(args: &InvokeArgs, manifest: &Manifest, event: &Event, config: Value, state: &mut MemoryState) -> Grant {
    let org = event_org(event).or_else(|| state.organisation()).unwrap_or(OrgId::from(1));
    // The event's agent, else the state's first agent (a schedule or manual
    // invoke names none), else a placeholder agent 1.
    // In-memory reads cannot fail.
    let first = || crate::caps::StateView::agents(state, org, 1).unwrap_or_default().first().map(|a| a.id);
    let agent = args.agent.map(AgentId::from).or_else(|| event_agent(event)).or_else(first).unwrap_or(AgentId::from(1));
    if crate::caps::StateView::agent(state, agent).ok().flatten().is_none() {
        let name = format!("agent {agent}");
        state.add_agent(org, Agent { id: agent, name, serial_number: None, group: None, metadata: json!({}) });
    }
    let app_key = args.app_key.clone().unwrap_or_else(|| manifest.name.replace('-', "_"));
    Grant {
        organisation_id: org,
        agent_id: agent,
        app_id: 1.into(),
        install_id: 1.into(),
        display_name: manifest.display_name.clone(),
        app_key,
        config: config.to_string().into(),
        reach: if manifest.kind == AppKind::Integration { Reach::Organisation } else { Reach::OwnAgent },
        invoking_channel: None,
        allow_invoking_channel: manifest.allow_invoking_channel,
        oauth: None,
    }
}

fn event_org(event: &Event) -> Option<OrgId> {
    match event {
        Event::MessageCreate { organisation_id, .. }
        | Event::AggregateUpdate { organisation_id, .. }
        | Event::Schedule { organisation_id, .. }
        | Event::Ingestion { organisation_id, .. }
        | Event::ManualInvoke { organisation_id, .. } => Some(*organisation_id),
        Event::Deployment { .. } | Event::OauthCallback { .. } => None,
    }
}

fn event_agent(event: &Event) -> Option<AgentId> {
    match event {
        Event::MessageCreate { message, .. } => Some(message.channel.agent_id),
        Event::AggregateUpdate { channel, .. } => Some(channel.agent_id),
        Event::Deployment { agent_id, .. } | Event::Ingestion { agent_id, .. } => Some(*agent_id),
        _ => None,
    }
}

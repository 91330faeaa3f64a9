//! The engine: ingress → durable queue → dispatcher → runtime → one commit.
//!
//! - Ingress writes a message (or a manual invoke) and the events it raises
//!   for subscribed installations in one store transaction, then flushes:
//!   nothing is reported accepted before it is durable.
//! - The dispatcher runs due events that are first in their (installation,
//!   agent) line, at most one in flight per line, bounded overall.
//! - A successful invocation's effects, the events they raise and the
//!   acknowledgement commit together; a failure commits only the next
//!   attempt (exponential backoff with jitter) or a dead letter.

mod dispatch;
mod installation;
mod retry;
mod routing;

pub use installation::Installation;
pub use retry::RetryPolicy;

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};

use serde_json::Value;

use crate::caps::Effects;
use crate::model::{AgentId, ChannelName, ChannelRef, EventId, InstallId, Message, MessageId, OrgId, now_ms};
use crate::runtime::Runtime;
use crate::store::{Commit, Store, StoreError};

/// Causal depth past which an event is dead-lettered as a loop (DESIGN.md §5).
pub const MAX_DEPTH: u32 = 16;

/// Why the engine refused a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The payload broke the payload rules.
    #[error("invalid payload: {0}")]
    Payload(#[from] crate::model::PayloadError),
    /// No such installation.
    #[error("installation {0} does not exist")]
    UnknownInstallation(InstallId),
}

/// The delivery engine over one store and one runtime.
pub struct Engine {
    store: Store,
    runtime: Arc<Runtime>,
    installs: RwLock<BTreeMap<InstallId, Arc<Installation>>>,
    policy: RetryPolicy,
    /// Lines with an event in flight: at most one per (installation, agent).
    in_flight: Mutex<HashSet<(InstallId, AgentId)>>,
    /// Concurrent invocations at most.
    concurrency: usize,
}

impl Engine {
    /// An engine with no installations.
    pub fn new(store: Store, runtime: Arc<Runtime>, policy: RetryPolicy, concurrency: usize) -> Self {
        Self {
            store,
            runtime,
            installs: RwLock::default(),
            policy,
            in_flight: Mutex::default(),
            concurrency: concurrency.max(1),
        }
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Add or replace an installation.
    pub fn install(&self, installation: Installation) {
        let mut installs = self.installs.write().unwrap_or_else(|p| p.into_inner());
        installs.insert(installation.id, Arc::new(installation));
    }

    fn installations(&self) -> Vec<Arc<Installation>> {
        self.installs.read().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }

    fn installation(&self, id: InstallId) -> Option<Arc<Installation>> {
        self.installs.read().unwrap_or_else(|p| p.into_inner()).get(&id).cloned()
    }

    /// Ingress: a device (or user) publishes a message. The message and the
    /// events it raises are written atomically and flushed before this
    /// returns, so a returned id means accepted durably.
    pub async fn publish_message(
        &self,
        channel: ChannelRef,
        author: AgentId,
        data: Value,
    ) -> Result<MessageId, EngineError> {
        crate::model::check_object(&data)?;
        let now = now_ms();
        let message =
            Message { id: MessageId::at(now), author_id: author, channel, data, timestamp: None, attachments: None };
        let org = crate::caps::StateView::agent_org(&self.store, message.channel.agent_id).unwrap_or_default();
        let effects = Effects { messages: vec![message.clone()], aggregates: Vec::new(), bytes: 0 };
        let events = routing::route(&self.installations(), org, &effects, None, 0, now);
        self.store.commit(Commit { ack: None, effects: &effects, downstream: &events, now_ms: now })?;
        self.store.flush().await?;
        Ok(message.id)
    }

    /// Ingress: invoke an installation by hand with `payload`.
    pub async fn manual_invoke(&self, install: InstallId, payload: Value) -> Result<EventId, EngineError> {
        let inst = self.installation(install).ok_or(EngineError::UnknownInstallation(install))?;
        let event = crate::model::Event::ManualInvoke { organisation_id: inst.organisation_id, payload };
        let now = now_ms();
        let queued = routing::queued(&inst, inst.agent_id, &event, 0, now);
        let id = queued.id;
        self.store.enqueue(&queued)?;
        self.store.flush().await?;
        Ok(id)
    }

    /// The organisation of an agent, for callers building channels.
    pub fn organisation_of(&self, agent: AgentId) -> Option<OrgId> {
        crate::caps::StateView::agent_org(&self.store, agent)
    }

    /// A channel reference, validated.
    pub fn channel(agent: AgentId, name: &str) -> Result<ChannelRef, crate::model::BadChannelName> {
        Ok(ChannelRef { agent_id: agent, name: ChannelName::new(name)? })
    }
}

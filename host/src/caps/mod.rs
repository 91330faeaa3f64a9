//! Capabilities: what an invocation may read and write, with every policy
//! check in one place. No wasm here: the runtime's host bindings are thin
//! adapters over [`Session`], and tests drive a `Session` directly.
//!
//! A session reads through a [`StateView`] (the state the installation may
//! see) and writes only into its [`Effects`] buffer; reads see the buffer
//! (read-your-writes). Nothing is committed here: the runtime returns the
//! buffer and the engine commits it atomically with the event's ack.

mod agents;
mod channels;
mod connection;
mod effects;
mod grant;
mod logs;
mod notifications;
mod pending;
mod tags;
mod ui;
mod view;

pub use channels::NewMessage;
pub use connection::{ConnectionStatus, DEFAULT_OFFLINE_AFTER_SECS, Determination};
pub use effects::{AggregateWrite, Effects};
pub use grant::{Grant, OauthGrant, Reach};
pub use logs::{LogBuffer, LogLevel, LogLine, MAX_LOG_BYTES, MAX_LOG_LINE_BYTES};
pub use notifications::Notification;
pub use pending::Pending;
pub use view::{MemoryState, Read, ReadError, StateError, StateView};

use std::cell::RefCell;
use std::sync::Arc;

use crate::model::{AgentId, Aggregate, ChannelName, ChannelRef, PayloadError, now_ms};

/// Most messages (including notifications, connection pings and tag logs)
/// one invocation may create. Doover processors typically write a handful;
/// 100 leaves room for fan-out integrations while bounding a flood.
pub const MAX_MESSAGES: usize = 100;
/// Most aggregate writes (including tag and UI writes) per invocation.
pub const MAX_AGGREGATE_WRITES: usize = 200;
/// Largest single message or aggregate payload: Lambda's async payload cap.
pub const MAX_PAYLOAD_BYTES: usize = 256 * 1024;
/// Total payload bytes one invocation may write.
pub const MAX_EFFECT_BYTES: usize = 4 * 1024 * 1024;
/// Most messages one `list-messages` call returns.
pub const MAX_LIST_MESSAGES: usize = 100;
/// Most agents one `agents.list` call returns.
pub const MAX_LIST_AGENTS: usize = 1000;
/// Longest tag key, UI schema key or topic accepted.
pub const MAX_KEY_BYTES: usize = 256;

/// Why a capability call was refused. Maps one-to-one onto the WIT `error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CapError {
    /// The installation may not touch this.
    #[error("denied: {0}")]
    Denied(String),
    /// The request is malformed.
    #[error("invalid: {0}")]
    Invalid(String),
    /// The target does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// A per-invocation cap would be exceeded.
    #[error("limit: {0}")]
    Limit(String),
    /// The host could not read state: not the guest's concern, so the
    /// runtime traps the invocation as a host error (retried) instead of
    /// answering the guest.
    #[error(transparent)]
    Unavailable(#[from] ReadError),
}

impl From<PayloadError> for CapError {
    fn from(e: PayloadError) -> Self {
        CapError::Invalid(e.to_string())
    }
}

/// One invocation's capabilities: the grant, the read view, the effect
/// buffer and the captured logs.
pub struct Session {
    grant: Grant,
    view: Arc<dyn StateView>,
    effects: Effects,
    logs: LogBuffer,
    /// Aggregates read in this invocation, each with the buffered writes
    /// applied up to its last read, so that a read borrows instead of
    /// replaying the effect list (tags are read and written several times
    /// per event). A `RefCell` because reads fill it lazily through
    /// `&self`; a list because an invocation touches a handful of channels.
    overlays: RefCell<Vec<Overlay>>,
    /// At most the size of the last aggregate write when it is this
    /// installation's tag patch (`tags::fold_tag` keeps it under a
    /// payload's bound).
    tag_patch_bytes: usize,
}

/// One aggregate as this invocation sees it.
struct Overlay {
    channel: ChannelRef,
    /// As read from the view, with `effects.aggregates[..applied]`'s
    /// writes on this channel laid over it (`None`: there is none).
    aggregate: Option<Aggregate>,
    applied: usize,
}

impl Session {
    /// A session for `grant` over `view`, with empty buffers.
    pub fn new(grant: Grant, view: Arc<dyn StateView>) -> Self {
        Self {
            grant,
            view,
            effects: Effects::default(),
            logs: LogBuffer::default(),
            overlays: RefCell::default(),
            tag_patch_bytes: 0,
        }
    }

    /// Who is invoking and what it may touch.
    pub fn grant(&self) -> &Grant {
        &self.grant
    }

    /// The effects so far.
    pub fn effects(&self) -> &Effects {
        &self.effects
    }

    /// The logs so far.
    pub fn logs_mut(&mut self) -> &mut LogBuffer {
        &mut self.logs
    }

    /// Hand over effects and logs at the end of the invocation.
    pub fn finish(self) -> (Effects, LogBuffer) {
        (self.effects, self.logs)
    }

    /// Resolve `agent` (none = own agent) and check the grant reaches it.
    fn reach(&self, agent: Option<u64>) -> Result<AgentId, CapError> {
        let id = agent.map(AgentId::from).unwrap_or(self.grant.agent_id);
        if self.grant.may_reach(id, self.view.as_ref())? {
            Ok(id)
        } else {
            Err(CapError::Denied(format!("agent {id} is outside this installation's reach")))
        }
    }

    fn channel(&self, name: &str, agent: Option<u64>) -> Result<ChannelRef, CapError> {
        let name = ChannelName::new(name).map_err(|e| CapError::Invalid(e.to_string()))?;
        Ok(ChannelRef { agent_id: self.reach(agent)?, name })
    }

    /// The anti-recursion guard (Doover's `_check_invoking_channel`): a write
    /// to a channel named like the invoking one is refused unless allowed.
    fn guard_invoking(&self, channel: &ChannelRef) -> Result<(), CapError> {
        match &self.grant.invoking_channel {
            Some(inv) if inv.name == channel.name && !self.grant.allow_invoking_channel => {
                Err(CapError::Denied(format!(
                    "writing to the invoking channel {:?} would re-trigger this app; set allow_invoking_channel in the manifest if that is intended",
                    channel.name.as_str()
                )))
            }
            _ => Ok(()),
        }
    }

    fn now(&self) -> u64 {
        now_ms()
    }
}

#[cfg(test)]
mod tests;

//! The grant: who an invocation runs as and which agents it may reach.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{ReadError, StateView};
use crate::model::{AgentId, AppId, ChannelRef, InstallId, OrgId};

/// Which agents an installation may reach besides its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reach {
    /// Only its own agent (a plain processor).
    OwnAgent,
    /// Its own agent plus these (extended permissions).
    Agents(BTreeSet<AgentId>),
    /// Every agent of its organisation (an integration).
    Organisation,
}

/// Who an invocation runs as; built by the host, never by the guest.
#[derive(Debug, Clone)]
pub struct Grant {
    /// The tenant. No agent of another organisation is ever reachable.
    pub organisation_id: OrgId,
    /// The installation's own agent.
    pub agent_id: AgentId,
    /// The app.
    pub app_id: AppId,
    /// The installation.
    pub install_id: InstallId,
    /// The installation's key (its namespace in tags and UI).
    pub app_key: String,
    /// The installation's display name.
    pub display_name: String,
    /// The installation's validated configuration as JSON text, the way
    /// the guest receives it: serialised once per installation and shared
    /// by its invocations.
    pub config: Arc<str>,
    /// Which other agents it may reach.
    pub reach: Reach,
    /// The channel whose change raised the event, if any.
    pub invoking_channel: Option<ChannelRef>,
    /// Whether writes to the invoking channel are allowed (manifest).
    pub allow_invoking_channel: bool,
    /// OAuth2 pass-through details, for apps that handle the callback.
    pub oauth: Option<OauthGrant>,
}

/// What an app puts in an OAuth2 authorize URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OauthGrant {
    /// The host-signed `state` naming the installation.
    pub state: String,
    /// The host's callback URL.
    pub redirect_uri: String,
}

impl Grant {
    /// Whether this grant reaches `agent`: same organisation, and either its
    /// own agent or permitted by [`Reach`].
    pub fn may_reach(&self, agent: AgentId, view: &dyn StateView) -> Result<bool, ReadError> {
        if view.agent_org(agent)? != Some(self.organisation_id) {
            return Ok(false);
        }
        Ok(match &self.reach {
            _ if agent == self.agent_id => true,
            Reach::OwnAgent => false,
            Reach::Agents(set) => set.contains(&agent),
            Reach::Organisation => true,
        })
    }
}

//! An installation as the engine routes to and runs it.

use std::sync::Arc;

use crate::caps::{Grant, Reach};
use crate::manifest::AppKind;
use crate::model::{AgentId, ChannelName, ChannelRef, InstallId, OrgId};
use crate::runtime::LoadedApp;

/// An app installed on an agent (processor) or organisation (integration).
#[derive(Debug, Clone)]
pub struct Installation {
    /// Its id.
    pub id: InstallId,
    /// The app version it runs.
    pub app: Arc<LoadedApp>,
    /// The tenant.
    pub organisation_id: OrgId,
    /// The agent it is installed on (the organisation's agent for an integration).
    pub agent_id: AgentId,
    /// Its key: namespace in tags and UI.
    pub app_key: String,
    /// Human name.
    pub display_name: String,
    /// Validated config, as JSON text (what every invocation's context carries).
    pub config: Arc<str>,
    /// Channel names it subscribes to (`dv_proc_subscriptions`).
    pub subscriptions: Vec<ChannelName>,
}

impl Installation {
    /// Whether a message or aggregate change on `channel` concerns it: a
    /// processor listens on its own agent, an integration on every agent of
    /// its organisation (the caller checks the organisation).
    pub fn subscribes_to(&self, channel: &ChannelRef) -> bool {
        let on_agent = self.app.manifest.kind == AppKind::Integration || channel.agent_id == self.agent_id;
        on_agent && self.subscriptions.contains(&channel.name)
    }

    /// The grant its invocations run under.
    pub fn grant(&self) -> Grant {
        Grant {
            organisation_id: self.organisation_id,
            agent_id: self.agent_id,
            app_id: 0.into(),
            install_id: self.id,
            app_key: self.app_key.clone(),
            display_name: self.display_name.clone(),
            config: Arc::clone(&self.config),
            reach: if self.app.manifest.kind == AppKind::Integration { Reach::Organisation } else { Reach::OwnAgent },
            invoking_channel: None,
            allow_invoking_channel: self.app.manifest.allow_invoking_channel,
            oauth: None,
        }
    }
}

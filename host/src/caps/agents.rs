//! `agents`: the agents this installation may reach.

use super::{CapError, MAX_KEY_BYTES, MAX_LIST_AGENTS, Reach, Session};
use crate::model::{Agent, AgentId};

impl Session {
    /// `agents.list`: own agent first, then the others it may reach.
    pub fn agents_list(&self) -> Result<Vec<Agent>, CapError> {
        let own = self.view.agent(self.grant.agent_id)?;
        let others: Vec<Agent> = match &self.grant.reach {
            Reach::OwnAgent => Vec::new(),
            Reach::Agents(set) => {
                let reached: Vec<Option<Agent>> =
                    set.iter().map(|id| self.agent_get(id.get())).collect::<Result<_, _>>()?;
                reached.into_iter().flatten().collect()
            }
            Reach::Organisation => self.view.agents(self.grant.organisation_id, MAX_LIST_AGENTS)?,
        };
        let mut out: Vec<Agent> = own.into_iter().collect();
        out.extend(others.into_iter().filter(|a| a.id != self.grant.agent_id));
        out.truncate(MAX_LIST_AGENTS);
        Ok(out)
    }

    /// `agents.get`: none when absent or out of reach (no existence leak).
    pub fn agent_get(&self, id: u64) -> Result<Option<Agent>, CapError> {
        let id = AgentId::from(id);
        Ok(if self.grant.may_reach(id, self.view.as_ref())? { self.view.agent(id)? } else { None })
    }

    /// `agents.find-by-serial`: within the organisation, and only if reachable.
    pub fn agent_by_serial(&self, serial: &str) -> Result<Option<Agent>, CapError> {
        if serial.is_empty() || serial.len() > MAX_KEY_BYTES {
            return Err(CapError::Invalid(format!("serial number must be 1-{MAX_KEY_BYTES} bytes")));
        }
        match self.view.agent_by_serial(self.grant.organisation_id, serial)? {
            Some(a) if self.grant.may_reach(a.id, self.view.as_ref())? => Ok(Some(a)),
            _ => Ok(None),
        }
    }
}

//! The declarative bootstrap file: organisations, agents, installations,
//! tokens and ingestion endpoints created at start, so a demo needs no API
//! calls. Applying it is idempotent: existing records (found by name,
//! serial number or app key) are kept; installations get their config
//! updated.

use std::path::Path;

use anyhow::{Context as _, bail};
use serde::Deserialize;
use serde_json::Value;

use crate::engine::{Engine, new_record};
use crate::model::{IngestionId, OrgId};
use crate::tenants::{self, IngestionOwner, IngestionSettings, NewAgent, hash_secret};

/// The file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bootstrap {
    /// Organisations to create.
    #[serde(default)]
    pub organisations: Vec<OrgSpec>,
}

/// One organisation and what it holds.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrgSpec {
    /// Its name (the identity used to find it again).
    pub name: String,
    /// API tokens with fixed secrets (demo use: never commit real ones).
    #[serde(default)]
    pub tokens: Vec<TokenSpec>,
    /// Its agents (devices).
    #[serde(default)]
    pub agents: Vec<AgentSpec>,
    /// Its installations.
    #[serde(default)]
    pub installations: Vec<InstallSpec>,
    /// Its ingestion endpoints.
    #[serde(default)]
    pub ingestions: Vec<IngestionSpec>,
}

/// A token with a known secret.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenSpec {
    /// What it is for.
    pub name: String,
    /// The secret.
    pub secret: String,
}

/// An agent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentSpec {
    /// Its name.
    pub name: String,
    /// Its serial number (the identity used to find it again).
    pub serial_number: String,
    /// Free-form metadata.
    #[serde(default)]
    pub metadata: Option<Value>,
}

/// An installation.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallSpec {
    /// The app's name.
    pub app: String,
    /// The agent's serial number; none installs on the organisation's agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// Its key (unique per agent; the identity used to find it again).
    pub app_key: String,
    /// Human name.
    #[serde(default)]
    pub display_name: Option<String>,
    /// Its config.
    #[serde(default)]
    pub config: Option<Value>,
}

/// An ingestion endpoint with a known token.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestionSpec {
    /// Its id (fixed, so its URL is known in advance).
    pub id: u64,
    /// The app key of the organisation-level installation it feeds.
    pub installation: String,
    /// Its bearer token.
    pub token: String,
    /// Its mini-token.
    #[serde(default)]
    pub mini_token: Option<String>,
    /// Allowed peers.
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
    /// HMAC-SHA256 secret.
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// Standard Webhooks secret (`whsec_<base64>`).
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Requests per second.
    #[serde(default)]
    pub rate_per_s: Option<u32>,
    /// Largest body, bytes.
    #[serde(default)]
    pub max_body_bytes: Option<usize>,
}

/// What the file's types cannot say, checked before anything is written:
/// an installation's app key is a key of its tags and UI subtree, so it
/// follows the payload key rule (as through the API).
fn check(boot: &Bootstrap) -> anyhow::Result<()> {
    for org in &boot.organisations {
        for i in &org.installations {
            if !crate::model::is_valid_key(&i.app_key) {
                bail!(
                    "organisation {:?}, installation {:?}: app_key must be characters from [a-zA-Z0-9_-]",
                    org.name,
                    i.app_key
                );
            }
        }
    }
    Ok(())
}

/// Read and apply a bootstrap file; ingestion endpoints may have rates up
/// to `max_ingest_rate`, as through the API.
pub async fn apply(engine: &Engine, file: &Path, max_ingest_rate: u32) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(file).with_context(|| format!("{}: cannot read", file.display()))?;
    let boot: Bootstrap =
        toml::from_str(&text).with_context(|| format!("{}: invalid bootstrap file", file.display()))?;
    check(&boot).with_context(|| format!("{}: invalid bootstrap file", file.display()))?;
    for org in &boot.organisations {
        apply_org(engine, org, max_ingest_rate)
            .await
            .with_context(|| format!("{}: organisation {:?}", file.display(), org.name))?;
    }
    Ok(())
}

/// Apply one organisation of the file. Every write goes through the
/// writer (`Engine::administer`), like the API's: what already exists (an
/// organisation by name, a token by secret, an agent by serial number, an
/// installation by agent and app key) is kept, so applying twice changes
/// nothing.
async fn apply_org(engine: &Engine, spec: &OrgSpec, max_ingest_rate: u32) -> anyhow::Result<()> {
    let store = engine.store();
    let org = match store.orgs()?.into_iter().find(|o| o.name == spec.name) {
        Some(o) => o,
        None => {
            let (id, name) = (OrgId::generate(), spec.name.clone());
            engine.administer(id, move |store| tenants::provision_org(store, id, &name)).await?
        }
    };
    for t in &spec.tokens {
        if store.token(&hash_secret(&t.secret))?.is_none() {
            let (id, name, secret) = (format!("boot-{}", t.name), t.name.clone(), t.secret.clone());
            engine.administer(org.id, move |store| tenants::add_token(store, Some(org.id), id, &name, &secret)).await?;
        }
    }
    for a in &spec.agents {
        if store.agent_by_serial(org.id, &a.serial_number)?.is_none() {
            let new = NewAgent {
                name: a.name.clone(),
                serial_number: Some(a.serial_number.clone()),
                group: None,
                metadata: a.metadata.clone(),
            };
            engine.add_agent(org.id, new).await?;
        }
    }
    let installs = store.installs()?;
    for i in &spec.installations {
        let agent = match &i.agent {
            Some(serial) => match store.agent_by_serial(org.id, serial)? {
                Some(a) => a.id,
                None => bail!("installation {:?}: no agent with serial number {serial:?}", i.app_key),
            },
            None => org.agent_id,
        };
        let config = i.config.clone().unwrap_or_else(|| serde_json::json!({}));
        let existing = installs.iter().find(|r| r.agent_id == agent && r.app_key == i.app_key);
        let mut rec = existing.cloned().unwrap_or_else(|| {
            new_record(&i.app, org.id, agent, &i.app_key, i.display_name.as_deref().unwrap_or(&i.app), config.clone())
        });
        if existing.is_some() && rec.config == config && rec.app == i.app {
            continue;
        }
        rec.config = config;
        rec.app = i.app.clone();
        match engine.put_installation(&rec).await {
            Ok(_) => {}
            // The app may be missing or broken now: the record waits for it.
            Err(crate::engine::EngineError::UnknownApp(app)) => {
                tracing::warn!(%app, install = %rec.app_key, "bootstrap: app not loaded; installation stored for later");
                engine.administer(org.id, move |store| Ok(store.put_install(&rec)?)).await?;
            }
            Err(e) => return Err(e).with_context(|| format!("installation {:?}", i.app_key)),
        }
    }
    let installs = if spec.ingestions.is_empty() { Vec::new() } else { store.installs()? };
    for g in &spec.ingestions {
        let install = installs
            .iter()
            .find(|r| r.organisation_id == org.id && r.app_key == g.installation)
            .with_context(|| format!("ingestion {}: no installation with app key {:?}", g.id, g.installation))?;
        let settings = IngestionSettings {
            allow_cidrs: g.allow_cidrs.clone(),
            hmac_secret: g.hmac_secret.clone(),
            webhook_secret: g.webhook_secret.clone(),
            rate_per_s: g.rate_per_s,
            max_body_bytes: g.max_body_bytes,
        };
        let owner = IngestionOwner {
            id: IngestionId::from(g.id),
            organisation_id: org.id,
            install_id: install.id,
            token: g.token.clone(),
            mini_token: g.mini_token.clone(),
        };
        let add = move |store: &crate::store::Store| tenants::add_ingestion(store, settings, owner, max_ingest_rate);
        engine.administer(org.id, add).await.with_context(|| format!("ingestion {}", g.id))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_installation_whose_app_key_breaks_the_key_rule_is_refused_before_anything_is_written() {
        let file = |key: &str| {
            format!(
                "[[organisations]]\nname = \"Boot\"\n[[organisations.installations]]\napp = \"webhook\"\napp_key = \"{key}\"\n"
            )
        };
        let parsed = |key: &str| toml::from_str::<super::Bootstrap>(&file(key)).unwrap();
        assert!(super::check(&parsed("readings_1-a")).is_ok());
        for bad in ["tank.level", "", "sp ace"] {
            let err = super::check(&parsed(bad)).unwrap_err().to_string();
            assert!(err.contains("app_key must be"), "{bad:?}: {err}");
        }
    }
}

//! The catalog: organisations, installations, API tokens, ingestion
//! endpoints and idempotency keys — what `paddock serve` must find again
//! after a restart.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sled::Transactional;
use sled::transaction::ConflictableTransactionError;

use super::queue::tx_error;
use super::{Store, StoreError, decode, encode, keys};
use crate::model::{AgentId, IngestionId, InstallId, OrgId};

/// An organisation (tenant).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrgRecord {
    /// Its id.
    pub id: OrgId,
    /// Human name.
    pub name: String,
    /// Its own agent (integrations are installed on it).
    pub agent_id: AgentId,
    /// Created, Unix ms.
    pub created_ms: u64,
}

/// A stored installation: which app (by name) runs where, with what config.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InstallRecord {
    /// Its id.
    pub id: InstallId,
    /// The app's name (its manifest `name`).
    pub app: String,
    /// The tenant.
    pub organisation_id: OrgId,
    /// The agent it is installed on.
    pub agent_id: AgentId,
    /// Its key, unique per agent.
    pub app_key: String,
    /// Human name.
    pub display_name: String,
    /// The config as given (validated against the app's schema).
    pub config: Value,
    /// Created, Unix ms.
    pub created_ms: u64,
}

/// An API token, stored by the SHA-256 of its secret (never the secret).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// Public id (used to revoke it).
    pub id: String,
    /// Its organisation; `None` for an operator token.
    pub organisation_id: Option<OrgId>,
    /// What it is for.
    pub name: String,
    /// Created, Unix ms.
    pub created_ms: u64,
}

/// An ingestion endpoint: where an external system posts events for one
/// installation (an integration), and the checks its requests pass.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IngestionRecord {
    /// Its id (the path segment of `POST /v1/ingest/{id}`).
    pub id: IngestionId,
    /// The tenant.
    pub organisation_id: OrgId,
    /// The installation that receives its events.
    pub install_id: InstallId,
    /// SHA-256 (hex) of its bearer token.
    pub token_sha256: String,
    /// SHA-256 (hex) of its mini-token, if it has one.
    #[serde(default)]
    pub mini_token_sha256: Option<String>,
    /// Peers allowed (CIDR); empty allows every peer.
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
    /// Secret of the `x-hmac-sha256` body signature, if one is required.
    #[serde(default)]
    pub hmac_secret: Option<String>,
    /// Standard Webhooks secret (`whsec_<base64>`), if that scheme is required.
    #[serde(default)]
    pub webhook_secret: Option<String>,
    /// Sustained requests per second.
    pub rate_per_s: u32,
    /// Largest body accepted, bytes.
    pub max_body_bytes: usize,
    /// Created, Unix ms.
    pub created_ms: u64,
}

impl Store {
    /// Create or replace an organisation.
    pub fn put_org(&self, org: &OrgRecord) -> Result<(), StoreError> {
        let t = self.t()?;
        t.orgs.insert(org.id.get().to_be_bytes(), encode(org))?;
        Ok(())
    }

    /// An organisation.
    pub fn org(&self, id: OrgId) -> Result<Option<OrgRecord>, StoreError> {
        let t = self.t()?;
        t.orgs.get(id.get().to_be_bytes())?.map(|v| decode("organisation", &v)).transpose()
    }

    /// Every organisation this build can read, oldest first (one it
    /// cannot is skipped and logged).
    pub fn orgs(&self) -> Result<Vec<OrgRecord>, StoreError> {
        super::readable("organisation", &self.t()?.orgs)
    }

    /// Create or replace an installation. Its `app_key` must be unique on
    /// its agent: [`StoreError::Conflict`] names the installation holding it.
    pub fn put_install(&self, rec: &InstallRecord) -> Result<(), StoreError> {
        let t = self.t()?;
        let key = keys::install(rec.id);
        let app_key = keys::app_key(rec.agent_id, &rec.app_key);
        self.gated(|| {
            (&t.installs, &t.app_keys)
                .transaction(|(installs, app_keys)| {
                    if let Some(holder) = app_keys.get(&app_key)?
                        && holder.as_ref() != key
                    {
                        let reason = format!("app_key {:?} is taken on agent {}", rec.app_key, rec.agent_id);
                        return Err(ConflictableTransactionError::Abort(StoreError::Conflict(reason)));
                    }
                    if let Some(old) = installs.get(key)? {
                        let old: InstallRecord =
                            decode("installation", &old).map_err(ConflictableTransactionError::Abort)?;
                        app_keys.remove(keys::app_key(old.agent_id, &old.app_key))?;
                    }
                    app_keys.insert(app_key.as_slice(), &key)?;
                    installs.insert(&key, encode(rec))?;
                    Ok(())
                })
                .map_err(tx_error)
        })
    }

    /// Remove an installation and its schedules; false if there was none.
    pub fn delete_install(&self, id: InstallId) -> Result<bool, StoreError> {
        let t = self.t()?;
        let key = keys::install(id);
        // Its schedules, found before the transaction (which cannot scan):
        // the writer is the only one writing them.
        let schedules: Vec<sled::IVec> =
            t.schedules.scan_prefix(id.get().to_be_bytes()).keys().collect::<Result<_, _>>()?;
        self.gated(|| {
            (&t.installs, &t.app_keys, &t.schedules)
                .transaction(|(installs, app_keys, plans)| {
                    let Some(old) = installs.remove(&key)? else { return Ok(false) };
                    let old: InstallRecord =
                        decode("installation", &old).map_err(ConflictableTransactionError::Abort)?;
                    app_keys.remove(keys::app_key(old.agent_id, &old.app_key))?;
                    for schedule in &schedules {
                        plans.remove(schedule)?;
                    }
                    Ok(true)
                })
                .map_err(tx_error)
        })
    }

    /// One installation.
    pub fn install(&self, id: InstallId) -> Result<Option<InstallRecord>, StoreError> {
        let t = self.t()?;
        t.installs.get(keys::install(id))?.map(|v| decode("installation", &v)).transpose()
    }

    /// Every installation this build can read (one it cannot is skipped
    /// and logged: the others are restored at start).
    pub fn installs(&self) -> Result<Vec<InstallRecord>, StoreError> {
        super::readable("installation", &self.t()?.installs)
    }

    /// Store a token under the hash of its secret.
    pub fn put_token(&self, sha256: &[u8; 32], rec: &TokenRecord) -> Result<(), StoreError> {
        let t = self.t()?;
        t.tokens.insert(sha256, encode(rec))?;
        Ok(())
    }

    /// The token whose secret hashes to `sha256`.
    pub fn token(&self, sha256: &[u8; 32]) -> Result<Option<TokenRecord>, StoreError> {
        let t = self.t()?;
        t.tokens.get(sha256)?.map(|v| decode("token", &v)).transpose()
    }

    /// Tokens of an organisation (`Some`) or the operator tokens (`None`).
    pub fn tokens(&self, org: Option<OrgId>) -> Result<Vec<TokenRecord>, StoreError> {
        let t = self.t()?;
        let all: Result<Vec<TokenRecord>, _> = t.tokens.iter().map(|e| decode("token", &e?.1)).collect();
        Ok(all?.into_iter().filter(|t| t.organisation_id == org).collect())
    }

    /// Revoke a token of `org` by its public id; false if there was none.
    pub fn revoke_token(&self, org: Option<OrgId>, id: &str) -> Result<bool, StoreError> {
        let t = self.t()?;
        for entry in t.tokens.iter() {
            let (key, value) = entry?;
            let rec: TokenRecord = decode("token", &value)?;
            if rec.id == id && rec.organisation_id == org {
                t.tokens.remove(key)?;
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Create or replace an ingestion endpoint.
    pub fn put_ingestion(&self, rec: &IngestionRecord) -> Result<(), StoreError> {
        let t = self.t()?;
        t.ingestions.insert(rec.id.get().to_be_bytes(), encode(rec))?;
        t.endpoints().changed(&rec.id);
        Ok(())
    }

    /// An ingestion endpoint: every ingestion request reads its own, so
    /// what was read is kept in memory until the endpoint changes.
    pub fn ingestion(&self, id: IngestionId) -> Result<Option<IngestionRecord>, StoreError> {
        let t = self.t()?;
        let changes = match t.endpoints().get(&id) {
            Ok(rec) => return Ok(Some(rec)),
            Err(changes) => changes,
        };
        let rec: Option<IngestionRecord> =
            t.ingestions.get(id.get().to_be_bytes())?.map(|v| decode("ingestion", &v)).transpose()?;
        if let Some(rec) = &rec {
            t.endpoints().keep(changes, id, rec.clone());
        }
        Ok(rec)
    }

    /// Every ingestion endpoint this build can read (one it cannot is
    /// skipped and logged).
    pub fn ingestions(&self) -> Result<Vec<IngestionRecord>, StoreError> {
        super::readable("ingestion", &self.t()?.ingestions)
    }

    /// Remove an ingestion endpoint; false if there was none.
    pub fn delete_ingestion(&self, id: IngestionId) -> Result<bool, StoreError> {
        let t = self.t()?;
        let removed = t.ingestions.remove(id.get().to_be_bytes())?.is_some();
        t.endpoints().changed(&id);
        Ok(removed)
    }

    /// Whether `key` in `scope` is held by an unexpired claim (see
    /// [`super::Claim`]): a read, for answering a replay early. The claim
    /// itself is only ever made by the commit that stores what it guards.
    pub fn is_claimed(&self, scope: &str, key: &str, now_ms: u64) -> Result<bool, StoreError> {
        let t = self.t()?;
        match t.seen.get(keys::seen(scope, key))? {
            Some(held) => Ok(decode::<u64>("idempotency key", &held)? > now_ms),
            None => Ok(false),
        }
    }
}

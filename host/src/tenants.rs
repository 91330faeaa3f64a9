//! Tenant administration: organisations, agents, tokens and ingestion
//! endpoints, created the same way whoever asks — the HTTP API, the
//! bootstrap file, `paddock serve` itself — with one typed error.
//!
//! Secrets are made here and stored only as SHA-256 hashes.

use base64::Engine as _;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::model::{Agent, AgentId, IngestionId, OrgId, now_ms};
use crate::store::{IngestionRecord, OrgRecord, Store, StoreError, TokenRecord};

/// Default sustained rate of an ingestion endpoint (Doover's).
pub const DEFAULT_RATE: u32 = 10;
/// Highest rate an endpoint may be given unless the operator raises it
/// (`max_ingest_rate` in the server config).
pub const MAX_RATE: u32 = 30;
/// Default body limit of an ingestion endpoint.
pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

/// The key of a Standard Webhooks secret (`whsec_` + base64), if it is one.
pub fn standard_webhook_key(secret: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap_or(secret)).ok()
}

/// A new Standard Webhooks secret: `whsec_` and 32 random bytes in base64.
pub fn new_webhook_secret() -> Result<String, getrandom::Error> {
    let mut key = [0u8; 32];
    getrandom::fill(&mut key)?;
    Ok(format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key)))
}

/// Why an administrative request was refused.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A name that must not be empty was.
    #[error("name must not be empty")]
    EmptyName,
    /// Another agent of the organisation has this serial number.
    #[error("serial number {0:?} is taken")]
    SerialTaken(String),
    /// Ingestion endpoint settings broke a rule.
    #[error(transparent)]
    Ingestion(#[from] InvalidIngestion),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The operating system had no random numbers for a secret.
    #[error("no random numbers for a secret: {0}")]
    Random(String),
}

/// Create an organisation with id `id` and its own agent; an existing one
/// is returned as it is.
pub fn provision_org(store: &Store, id: OrgId, name: &str) -> Result<OrgRecord, AdminError> {
    if name.trim().is_empty() {
        return Err(AdminError::EmptyName);
    }
    if let Some(existing) = store.org(id)? {
        return Ok(existing);
    }
    let own = NewAgent {
        name: format!("{name} (organisation)"),
        serial_number: None,
        group: None,
        metadata: Some(json!({ "kind": "organisation" })),
    };
    let agent = own.into_agent();
    let rec = OrgRecord { id, name: name.to_owned(), agent_id: agent.id, created_ms: now_ms() };
    store.put_agent(id, agent)?;
    store.put_org(&rec)?;
    Ok(rec)
}

/// An agent to create (also the body of `POST /v1/orgs/{org}/agents`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAgent {
    /// Its name.
    pub name: String,
    /// Its serial number, unique in its organisation.
    #[serde(default)]
    pub serial_number: Option<String>,
    /// Its group.
    #[serde(default)]
    pub group: Option<String>,
    /// Free-form metadata (default `{}`).
    #[serde(default)]
    pub metadata: Option<Value>,
}

impl NewAgent {
    pub(crate) fn into_agent(self) -> Agent {
        Agent {
            id: AgentId::generate(),
            name: self.name,
            serial_number: self.serial_number,
            group: self.group,
            metadata: self.metadata.unwrap_or_else(|| json!({})),
        }
    }
}

/// Create an agent in `org`; a serial number already taken there is
/// refused.
pub fn add_agent(store: &Store, org: OrgId, new: NewAgent) -> Result<Agent, AdminError> {
    let agent = new.into_agent();
    put_new_agent(store, org, agent.clone(), None)?;
    Ok(agent)
}

/// Store `agent`, new in `org`, with its monitor feed entry numbered
/// `feed_seq` if any; a serial number already taken there is refused. The
/// check and the write are one step of one writer (the engine runs this
/// as its operation), so two creations cannot both take a serial number.
pub fn put_new_agent(store: &Store, org: OrgId, agent: Agent, feed_seq: Option<u64>) -> Result<(), AdminError> {
    if let Some(serial) = &agent.serial_number
        && store.agent_by_serial(org, serial)?.is_some()
    {
        return Err(AdminError::SerialTaken(serial.clone()));
    }
    Ok(store.put_agent_fed(org, agent, feed_seq)?)
}

/// Store a token whose secret is `secret` (only its hash is kept), for
/// `org` or, with `None`, the operator. `id` is its public id (to revoke it).
pub fn add_token(
    store: &Store,
    org: Option<OrgId>,
    id: String,
    name: &str,
    secret: &str,
) -> Result<TokenRecord, AdminError> {
    let rec = TokenRecord { id, organisation_id: org, name: name.to_owned(), created_ms: now_ms() };
    store.put_token(&hash_secret(secret), &rec)?;
    Ok(rec)
}

/// Validate `settings` and store the ingestion endpoint.
pub fn add_ingestion(
    store: &Store,
    settings: IngestionSettings,
    owner: IngestionOwner,
    max_rate: u32,
) -> Result<IngestionRecord, AdminError> {
    let rec = settings.record(owner, max_rate)?;
    store.put_ingestion(&rec)?;
    Ok(rec)
}

/// A new random secret with `prefix` (e.g. `pdk_`): 32 bytes from the OS
/// generator, base64url.
pub fn new_secret(prefix: &str) -> Result<Secret, AdminError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| AdminError::Random(e.to_string()))?;
    Ok(Secret(format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))))
}

/// A mini-token: 10 characters from a 62-letter alphabet (~59 bits),
/// short enough for a URL typed into a constrained device.
pub fn new_mini_token() -> Result<Secret, AdminError> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).map_err(|e| AdminError::Random(e.to_string()))?;
    // 256 is not a multiple of 62: the slight bias costs < 0.1 bit per char.
    Ok(Secret(bytes.iter().map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()])).collect()))
}

/// A secret shown once to its owner and never stored.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// SHA-256 of a secret: how tokens are stored and looked up.
pub fn hash_secret(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// An ingestion endpoint's settings, as the API and the bootstrap file
/// both take them (validated once, by [`IngestionSettings::record`]).
#[derive(Debug, Clone, Default)]
pub struct IngestionSettings {
    /// Allowed client networks (CIDR); empty: any.
    pub allow_cidrs: Vec<String>,
    /// HMAC-SHA256 secret over the raw body.
    pub hmac_secret: Option<String>,
    /// Standard Webhooks secret (`whsec_<base64>`).
    pub webhook_secret: Option<String>,
    /// Sustained requests per second (default [`DEFAULT_RATE`]).
    pub rate_per_s: Option<u32>,
    /// Largest body (default [`DEFAULT_MAX_BODY`]).
    pub max_body_bytes: Option<usize>,
}

/// Why ingestion endpoint settings were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidIngestion {
    /// An allow-list entry is not a CIDR block.
    #[error("{0:?} is not a CIDR block")]
    Cidr(String),
    /// The rate is outside 1..=max.
    #[error("rate_per_s must be 1..={0}")]
    Rate(u32),
    /// The body limit is outside 1..=the payload limit.
    #[error("max_body_bytes must be 1..={0}")]
    MaxBody(usize),
    /// The Standard Webhooks secret is not `whsec_<base64>`.
    #[error("webhook_secret must be whsec_<base64>")]
    WebhookSecret,
}

impl InvalidIngestion {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            InvalidIngestion::Cidr(_) => "invalid_cidr",
            InvalidIngestion::Rate(_) => "invalid_rate",
            InvalidIngestion::MaxBody(_) => "invalid_max_body",
            InvalidIngestion::WebhookSecret => "invalid_webhook_secret",
        }
    }
}

/// Who an endpoint belongs to and the secrets it is reached with (owned:
/// it is handed to the writer whole).
pub struct IngestionOwner {
    /// Its id.
    pub id: IngestionId,
    /// The organisation.
    pub organisation_id: crate::model::OrgId,
    /// The installation it feeds.
    pub install_id: crate::model::InstallId,
    /// Its bearer token (stored hashed).
    pub token: String,
    /// Its mini-token, if any (stored hashed).
    pub mini_token: Option<String>,
}

impl IngestionSettings {
    /// Validate into the stored record; rates above `max_rate` are refused.
    pub fn record(self, owner: IngestionOwner, max_rate: u32) -> Result<IngestionRecord, InvalidIngestion> {
        if let Some(c) = self.allow_cidrs.iter().find(|c| c.parse::<ipnet::IpNet>().is_err()) {
            return Err(InvalidIngestion::Cidr(c.clone()));
        }
        let rate = self.rate_per_s.unwrap_or(DEFAULT_RATE);
        if !(1..=max_rate).contains(&rate) {
            return Err(InvalidIngestion::Rate(max_rate));
        }
        let max_body = self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY);
        if max_body == 0 || max_body > crate::caps::MAX_PAYLOAD_BYTES {
            return Err(InvalidIngestion::MaxBody(crate::caps::MAX_PAYLOAD_BYTES));
        }
        if let Some(s) = &self.webhook_secret
            && standard_webhook_key(s).is_none()
        {
            return Err(InvalidIngestion::WebhookSecret);
        }
        Ok(IngestionRecord {
            id: owner.id,
            organisation_id: owner.organisation_id,
            install_id: owner.install_id,
            token_sha256: hex::encode(hash_secret(&owner.token)),
            mini_token_sha256: owner.mini_token.map(|m| hex::encode(hash_secret(&m))),
            allow_cidrs: self.allow_cidrs,
            hmac_secret: self.hmac_secret,
            webhook_secret: self.webhook_secret,
            rate_per_s: rate,
            max_body_bytes: max_body,
            created_ms: now_ms(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_distinct_prefixed_and_hash_stably() {
        let a = new_secret("pdk_").unwrap();
        let b = new_secret("pdk_").unwrap();
        assert_ne!(a, b);
        assert!(a.0.starts_with("pdk_") && a.0.len() == 4 + 43);
        assert_eq!(hash_secret(&a.0), hash_secret(&a.0));
        assert_ne!(hash_secret(&a.0), hash_secret(&b.0));
        let m = new_mini_token().unwrap();
        assert_eq!(m.0.len(), 10);
        assert!(m.0.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(format!("{a:?}"), "Secret(..)", "secrets never reach logs");
    }

    #[test]
    fn ingestion_settings_are_validated_the_same_wherever_they_come_from() {
        let owner = || IngestionOwner {
            id: IngestionId::from(1),
            organisation_id: 2.into(),
            install_id: 3.into(),
            token: "pdi_x".into(),
            mini_token: None,
        };
        let bad = |settings: IngestionSettings| settings.record(owner(), MAX_RATE).unwrap_err();
        let cidr = bad(IngestionSettings { allow_cidrs: vec!["10.0.0.0/33".into()], ..Default::default() });
        assert_eq!(cidr.code(), "invalid_cidr");
        assert_eq!(bad(IngestionSettings { rate_per_s: Some(31), ..Default::default() }), InvalidIngestion::Rate(30));
        assert_eq!(bad(IngestionSettings { max_body_bytes: Some(0), ..Default::default() }).code(), "invalid_max_body");
        let secret = IngestionSettings { webhook_secret: Some("nope!".into()), ..Default::default() };
        assert_eq!(bad(secret), InvalidIngestion::WebhookSecret);
        let rec =
            IngestionSettings { max_body_bytes: Some(100), ..Default::default() }.record(owner(), MAX_RATE).unwrap();
        assert_eq!((rec.max_body_bytes, rec.rate_per_s), (100, DEFAULT_RATE));
        assert_ne!(rec.token_sha256, "pdi_x", "stored hashed");
    }
}

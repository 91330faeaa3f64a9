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
//!
//! Its parts, in the order data flows through them:
//!
//! | part | what it does |
//! |---|---|
//! | this file | ingress: publish, aggregate writes, invokes, ingestion, redrive |
//! | `admission` | the queue's bounds and counts, asked before ingress writes |
//! | `routing` | which installations an effect raises events for |
//! | `writer` | the one write path: fair cycles, one atomic write and one flush each |
//! | `dispatch` | the `Dispatcher` (slots, concurrency, retries): picks due line heads, runs each with the events queued behind it (a run), commits, retries or buries |
//! | `slots` | one event per line in flight, each organisation's share of the slots |
//! | `retry` | backoff between attempts |
//! | `schedules` | fires due schedules through the writer |
//! | `retention` | removes what is past its bounds through the writer |
//! | `catalog` | the `Catalog` of apps and installations: load, install, hot reload |
//! | `feed` | which organisations the monitor feed covers, and its durable head |
//! | `metrics` | counters for `/metrics` |

mod admission;
mod catalog;
mod dispatch;
mod feed;
mod installation;
mod metrics;
mod retention;
mod retry;
mod routing;
mod schedules;
mod slots;
mod writer;

pub use catalog::{AppSlot, AppStatus, new_record};
pub use feed::Feed;
pub use installation::Installation;
pub use metrics::{Gauges, Metrics};
pub use retention::Retention;
pub use retry::RetryPolicy;
pub use slots::ACTIVE_WINDOW;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;

use crate::caps::Effects;
use crate::model::{AgentId, ChannelRef, EventId, IngestionId, InstallId, Message, MessageId, now_ms};
use crate::runtime::Runtime;
use crate::store::{Store, StoreError};

/// Causal depth past which an event is dead-lettered as a loop (DESIGN.md §5).
pub const MAX_DEPTH: u32 = 16;

/// Why the engine refused a request.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A state read through an invocation's view failed.
    #[error(transparent)]
    Read(#[from] crate::caps::ReadError),
    /// The payload broke the payload rules.
    #[error("invalid payload: {0}")]
    Payload(#[from] crate::model::PayloadError),
    /// No such installation.
    #[error("installation {0} does not exist")]
    UnknownInstallation(InstallId),
    /// No version of this app is serving.
    #[error("app {0:?} is not loaded")]
    UnknownApp(String),
    /// No such agent in the organisation.
    #[error("agent {0} does not exist in this organisation")]
    UnknownAgent(AgentId),
    /// Users and devices may not write this channel: only the host does
    /// (see [`crate::model::ChannelName::is_host_owned`]).
    #[error("channel {0} is written by the host only")]
    HostOwned(crate::model::ChannelName),
    /// The installation config breaks the app's schema.
    #[error("invalid config: {}", .0.join("; "))]
    InvalidConfig(Vec<String>),
    /// The queue is full: try again later. Nothing of the request was kept.
    #[error("busy: {queued} events queued, the limit is {limit}; retry later")]
    Busy {
        /// Events queued now.
        queued: usize,
        /// The bound.
        limit: usize,
    },
    /// This organisation's share of the queue is full: it must slow down
    /// (other organisations are unaffected). Nothing of the request was kept.
    #[error("organisation {organisation} has {queued} events queued, its limit is {limit}; retry later")]
    TenantBusy {
        /// The organisation.
        organisation: crate::model::OrgId,
        /// Its events queued now.
        queued: usize,
        /// Its bound.
        limit: usize,
    },
}

/// How the engine signs OAuth `state`s for apps that handle the callback:
/// the same signer the API checks the callback's `state` with, and the
/// redirect URI the apps announce.
#[derive(Clone)]
pub struct OauthSigning {
    /// Signs `state`s (shared with the API, which verifies them).
    pub signer: Arc<crate::model::StateSigner>,
    /// The callback URL the provider redirects to.
    pub redirect_uri: String,
}

impl std::fmt::Debug for OauthSigning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The signer holds a secret: never print it.
        f.debug_struct("OauthSigning").field("redirect_uri", &self.redirect_uri).finish_non_exhaustive()
    }
}

/// Engine settings.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Retries and dead letters.
    pub retry: RetryPolicy,
    /// Concurrent invocations at most.
    pub concurrency: usize,
    /// Ingress answers `busy` once this many events are queued: a bound on
    /// the backlog (and so on the latency of what is accepted).
    pub max_queue: usize,
    /// One organisation's ingress is refused (`TenantBusy`) once it has this
    /// many events queued: a flooding tenant is slowed at the door instead
    /// of filling the queue and the machine for everyone.
    pub max_queue_per_org: usize,
    /// Most writes (all organisations together) the writer applies as
    /// one atomic write and makes durable with one flush. The writer takes
    /// one write per organisation in turn, so a flooding tenant cannot fill
    /// a cycle ahead of others; batches grow with the load, and a lone
    /// write is never kept waiting for company. 256 measured at sled's
    /// ceiling on this disk (docs/benchmarks.md).
    pub ingress_batch: usize,
    /// Most events of one (installation, agent) line one dispatch runs back
    /// to back and commits together (a *run*, each event still with its own
    /// invocation and acknowledgement): a line with a backlog then costs
    /// one writer cycle per run instead of one per event. 1 turns runs off.
    pub run_events: usize,
    /// A run takes no further event once it has run this long, so that what
    /// its first events wrote is not kept from everyone else for long.
    pub run_for: Duration,
    /// Signed OAuth `state`s for apps that handle `on_oauth_callback`;
    /// `None` (tools, tests) gives them none.
    pub oauth: Option<OauthSigning>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        // Concurrency matches the runtime's default pool (64 slots) with
        // headroom for load probes; 100k queued events is ~1 minute of
        // backlog at the measured commit rates.
        Self {
            retry: RetryPolicy::default(),
            concurrency: 32,
            max_queue: 100_000,
            max_queue_per_org: 10_000,
            ingress_batch: 256,
            run_events: 32,
            run_for: Duration::from_millis(5),
            oauth: None,
        }
    }
}

/// What a user or device may write to `channel`: not a host-owned channel,
/// and a payload within the rules and the size apps are held to.
fn user_write(channel: &ChannelRef, data: &Value) -> Result<(), EngineError> {
    if channel.name.is_host_owned() {
        return Err(EngineError::HostOwned(channel.name.clone()));
    }
    Ok(crate::model::check_payload(data, crate::caps::MAX_PAYLOAD_BYTES)?)
}

/// Queued events counted ahead of their commit: uncounted again unless
/// [`Counted::accepted`] confirms the write.
struct Counted<'a> {
    engine: &'a Engine,
    org: crate::model::OrgId,
    n: usize,
    kept: bool,
}

impl Counted<'_> {
    /// The events are durable: keep them counted (the writer woke the
    /// dispatcher when it applied them).
    fn accepted(mut self) {
        self.kept = true;
        self.engine.metrics.accepted(self.n);
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        if !self.kept {
            self.engine.admission.settled(self.org, self.n, 0);
        }
    }
}

/// The delivery engine over one store and one runtime.
pub struct Engine {
    store: Store,
    runtime: Arc<Runtime>,
    /// Apps and installations.
    catalog: catalog::Catalog,
    /// Signalled when work was queued (by the writer, as soon as it is
    /// applied), so the dispatcher starts it now.
    wake: Arc<tokio::sync::Notify>,
    /// Counters for `/metrics`.
    metrics: Metrics,
    /// Signs OAuth `state`s for apps that handle the callback, with the
    /// redirect URI to announce ([`EngineConfig::oauth`]).
    oauth: Option<OauthSigning>,
    /// The queue's bounds and counts (ingress asks it first).
    admission: admission::Admission,
    /// The one writer of ingress and commits (see [`writer`]).
    writer: writer::Writer,
    /// Lines in flight, slot shares, concurrency and retries.
    dispatcher: dispatch::Dispatcher,
    /// Which organisations' commits go to the monitor feed, and how far
    /// it is durable.
    feed: Arc<Feed>,
}

impl Engine {
    /// An engine with no installations over `store` (whose queue it resumes).
    pub fn new(store: Store, runtime: Arc<Runtime>, config: EngineConfig) -> Result<Self, EngineError> {
        let feed = Arc::new(Feed::new(store.feed_mark()?));
        let wake = Arc::new(tokio::sync::Notify::new());
        let writer = writer::Writer::start(store.clone(), config.ingress_batch, Arc::clone(&feed), Arc::clone(&wake))
            .map_err(|e| StoreError::Flush(format!("cannot start the writer thread: {e}")))?;
        let engine = Self {
            store,
            runtime,
            catalog: catalog::Catalog::default(),
            wake,
            metrics: Metrics::default(),
            oauth: config.oauth,
            admission: admission::Admission::new(config.max_queue, config.max_queue_per_org),
            writer,
            dispatcher: dispatch::Dispatcher::new(
                config.concurrency,
                config.retry,
                (config.run_events, config.run_for),
            ),
            feed,
        };
        engine.recount()?;
        Ok(engine)
    }

    /// Count the queue again from the store (at start, and after it was
    /// reopened at its last durable state): from its keys, decoding
    /// nothing, so an event this build cannot read does not keep the
    /// server from starting.
    pub(crate) fn recount(&self) -> Result<(), EngineError> {
        self.admission.recount(self.store.queued_counts()?);
        Ok(())
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Run an administrative write of `org` (an organisation, a token, an
    /// agent, an ingestion endpoint, a dead letter removed) on the writer: between
    /// its cycles' other writes, and answered only once the flush after it
    /// made it durable (a token's secret is shown once; a revoked token
    /// must stay revoked). `op` is one write; what it refuses writes
    /// nothing and is returned as it is.
    pub async fn administer<T: Send + 'static>(
        &self,
        org: crate::model::OrgId,
        op: impl FnOnce(&Store) -> Result<T, crate::tenants::AdminError> + Send + 'static,
    ) -> Result<T, crate::tenants::AdminError> {
        self.write_op(org, true, move |store| Ok(op(store))).await?
    }

    /// Run `op`, a write of `org`'s that is not the engine's own (a
    /// monitor's record or delivery cursor), on the writer in `org`'s turn:
    /// answered once applied, or (`durable`) once the flush after it made
    /// it durable.
    pub async fn write_op<T: Send + 'static>(
        &self,
        org: crate::model::OrgId,
        durable: bool,
        op: impl FnOnce(&Store) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        self.writer.apply(org, durable, op).await
    }

    /// Create an agent in `org` (its serial number must be free there),
    /// through the writer: durable when this returns, and on the monitor
    /// feed (`Agent`, `DeviceCore`) if the organisation has monitors.
    pub async fn add_agent(
        &self,
        org: crate::model::OrgId,
        new: crate::tenants::NewAgent,
    ) -> Result<crate::model::Agent, crate::tenants::AdminError> {
        let agent = new.into_agent();
        let (stored, watched) = (agent.clone(), self.feed.is_watched(org));
        let put = move |store: &Store| {
            let seq = if watched { Some(store.feed_mark()?) } else { None };
            crate::tenants::put_new_agent(store, org, stored, seq)
        };
        self.administer(org, put).await?;
        Ok(agent)
    }

    /// The monitor feed's watch list and durable head.
    pub fn feed(&self) -> &Arc<Feed> {
        &self.feed
    }

    /// The runtime.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Counters for `/metrics`.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// What an invocation of `inst` may do: its installation's grant, with
    /// a signed OAuth `state` if it handles the callback and a server
    /// signs states. The one place an engine invocation's grant is built.
    fn grant(&self, inst: &Installation) -> crate::caps::Grant {
        let mut grant = inst.grant();
        if inst.app.hooks.contains(&crate::model::Hook::OauthCallback)
            && let Some(oauth) = &self.oauth
        {
            let state = oauth.signer.sign(inst.id, now_ms() + crate::model::STATE_TTL_MS);
            grant.oauth = Some(crate::caps::OauthGrant { state, redirect_uri: oauth.redirect_uri.clone() });
        }
        grant
    }

    /// Events queued now (advisory: kept in step with the store).
    pub fn queue_depth(&self) -> usize {
        self.admission.depth()
    }

    /// Queued events per organisation (advisory, like [`Engine::queue_depth`]).
    pub fn queue_depth_by_org(&self) -> HashMap<crate::model::OrgId, usize> {
        self.admission.depth_by_org()
    }

    /// An active installation.
    pub fn active_installation(&self, id: InstallId) -> Option<Arc<Installation>> {
        self.installation(id)
    }

    /// Count `n` events as queued. Called before their commit, so that the
    /// dispatcher (which may run them before ingress returns) never
    /// settles an event that was not counted yet.
    fn counting(&self, org: crate::model::OrgId, n: usize) -> Counted<'_> {
        self.admission.settled(org, 0, n);
        Counted { engine: self, org, n, kept: false }
    }

    /// Add or replace an installation. If its app handles `on_deployment`,
    /// a deployment event is queued (durably) and its id returned.
    pub async fn install(&self, installation: Installation) -> Result<Option<EventId>, EngineError> {
        let inst = Arc::new(installation);
        self.catalog.installs_mut().insert(Arc::clone(&inst));
        self.register_schedules(&inst).await?;
        if !inst.app.hooks.contains(&crate::model::Hook::Deployment) {
            return Ok(None);
        }
        let event = crate::model::Event::Deployment {
            agent_id: inst.agent_id,
            app_id: 0.into(),
            app_install_id: inst.id,
            app_key: inst.app_key.clone(),
            app_display_name: inst.display_name.clone(),
        };
        let queued = routing::queued(&inst, inst.agent_id, &event, 0, now_ms());
        let counted = self.counting(inst.organisation_id, 1);
        let id = queued.id;
        self.writer.write(writer::Write::ingress(inst.organisation_id, Effects::default(), vec![queued], None)).await?;
        counted.accepted();
        Ok(Some(id))
    }

    /// The events `effects` of `org` raise (see [`routing::route`]), read
    /// under the installations' lock instead of from a copy of them all.
    fn route(
        &self,
        org: crate::model::OrgId,
        effects: &Effects,
        source: Option<&Installation>,
        depth: u32,
        now: u64,
    ) -> Vec<crate::store::QueuedEvent> {
        routing::route(&self.catalog.installs(), org, effects, source, depth, now)
    }

    fn installation(&self, id: InstallId) -> Option<Arc<Installation>> {
        self.catalog.installs().get(&id).cloned()
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
        user_write(&channel, &data)?;
        let now = now_ms();
        let message =
            Message { id: MessageId::at(now), author_id: author, channel, data, timestamp: None, attachments: None };
        let id = message.id;
        let effects = Effects { messages: vec![message], aggregates: Vec::new(), bytes: 0 };
        self.ingest_effects(effects, now).await?;
        Ok(id)
    }

    /// Commit user- or device-written `effects` (on one agent) with the
    /// events they raise, through the organisation's ingress lane:
    /// accepted durably when this returns.
    async fn ingest_effects(&self, effects: Effects, now: u64) -> Result<(), EngineError> {
        let agent = effects.messages.first().map(|m| m.channel.agent_id);
        let agent = agent.or_else(|| effects.aggregates.first().map(|w| w.channel.agent_id)).unwrap_or_default();
        let org = self.store.agent_org(agent)?.ok_or(EngineError::UnknownAgent(agent))?;
        let events = self.route(org, &effects, None, 0, now);
        self.admission.admit(org, events.len())?;
        let counted = self.counting(org, events.len());
        self.writer.write(writer::Write { now_ms: now, ..writer::Write::ingress(org, effects, events, None) }).await?;
        counted.accepted();
        Ok(())
    }

    /// Ingress: a user or device writes a channel's aggregate (`Merge`
    /// patches, `Replace` puts). The write and the events it raises are
    /// committed atomically and flushed before this returns; the aggregate
    /// as stored afterwards is returned.
    pub async fn write_aggregate(
        &self,
        channel: ChannelRef,
        data: Value,
        mode: crate::model::WriteMode,
    ) -> Result<crate::model::Aggregate, EngineError> {
        user_write(&channel, &data)?;
        let now = now_ms();
        let write = crate::caps::AggregateWrite { channel: channel.clone(), data, mode };
        let effects = Effects { messages: Vec::new(), aggregates: vec![write], bytes: 0 };
        self.ingest_effects(effects, now).await?;
        Ok(self
            .store
            .get_aggregate(&channel)?
            .unwrap_or(crate::model::Aggregate { data: Value::Object(Default::default()), last_updated: None }))
    }

    /// Ingress: invoke an installation by hand with `payload`.
    pub async fn manual_invoke(&self, install: InstallId, payload: Value) -> Result<EventId, EngineError> {
        crate::model::check_payload(&payload, crate::caps::MAX_PAYLOAD_BYTES)?;
        let org = self.installation(install).ok_or(EngineError::UnknownInstallation(install))?.organisation_id;
        self.deliver(install, crate::model::Event::ManualInvoke { organisation_id: org, payload }).await
    }

    /// Ingress: queue `event` for one installation (on its own agent's
    /// line). Durable when this returns.
    pub async fn deliver(&self, install: InstallId, event: crate::model::Event) -> Result<EventId, EngineError> {
        self.deliver_once(install, event, None).await
    }

    /// [`Engine::deliver`], claiming an idempotency key in the same durable
    /// write: [`StoreError::Duplicate`] (as [`EngineError::Store`]) if the key is already held, and
    /// a refused request (busy, failed write) leaves the key unclaimed, so
    /// the sender's retry is accepted.
    pub async fn deliver_once(
        &self,
        install: InstallId,
        event: crate::model::Event,
        claim: Option<crate::store::Claim>,
    ) -> Result<EventId, EngineError> {
        let inst = self.installation(install).ok_or(EngineError::UnknownInstallation(install))?;
        let queued = routing::queued(&inst, inst.agent_id, &event, 0, now_ms());
        self.admission.admit(inst.organisation_id, 1)?;
        let counted = self.counting(inst.organisation_id, 1);
        let id = queued.id;
        self.writer
            .write(writer::Write::ingress(inst.organisation_id, Effects::default(), vec![queued], claim))
            .await?;
        counted.accepted();
        Ok(id)
    }

    /// Ingress: an external system posted `payload` to an ingestion
    /// endpoint of `install`. Durable when this returns; `claim` is the
    /// sender's message id, if it gives one (see [`Engine::deliver_once`]).
    pub async fn ingest(
        &self,
        install: InstallId,
        ingestion_id: IngestionId,
        payload: Vec<u8>,
        content_type: String,
        invocation_url: String,
        claim: Option<crate::store::Claim>,
    ) -> Result<EventId, EngineError> {
        let inst = self.installation(install).ok_or(EngineError::UnknownInstallation(install))?;
        let event = crate::model::Event::Ingestion {
            ingestion_id,
            agent_id: inst.agent_id,
            organisation_id: inst.organisation_id,
            payload,
            content_type,
            invocation_url,
        };
        self.deliver_once(install, event, claim).await
    }

    /// Put one of `org`'s dead letters back in the queue as a fresh first
    /// attempt. Returns false if there is no such dead letter.
    pub async fn redrive(&self, org: crate::model::OrgId, id: EventId) -> Result<bool, EngineError> {
        // Counted now, uncounted if the writer finds no such letter.
        let counted = self.counting(org, 1);
        let redriven = self.writer.apply(org, true, move |store| store.redrive(org, id, now_ms())).await?;
        if redriven {
            counted.accepted();
        }
        Ok(redriven)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_config_prints_the_redirect_uri_but_never_the_oauth_secret() {
        let signing = OauthSigning {
            signer: Arc::new(crate::model::StateSigner::new(b"hunter2-secret".to_vec())),
            redirect_uri: "https://paddock.example/v1/oauth/callback".into(),
        };
        let printed = format!("{:?}", EngineConfig { oauth: Some(signing), ..EngineConfig::default() });
        assert!(printed.contains("https://paddock.example/v1/oauth/callback"), "{printed}");
        assert!(!printed.contains("hunter2"), "{printed}");
        // Nor as the bytes' numbers ("hun", as a derived Debug of a Vec<u8>).
        assert!(!printed.contains("104, 117, 110"), "{printed}");
    }
}

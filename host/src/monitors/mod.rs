//! Monitors: push what happens in an organisation to external clients,
//! the way Digi Device Cloud's Monitor API does (`../shared/MONITORS.md`).
//!
//! - [`topic`]: which feed entries a monitor sees.
//! - [`document`]: a batch as the client receives it (JSON or XML, zlib).
//! - [`wire`]: the TCP push frames.
//! - [`deliver`]: the one delivery loop every transport uses: read the
//!   durable feed from the monitor's cursor, batch, send, move the cursor.
//! - [`tcp`]: the push listener (Device Cloud's TCP transport).
//! - [`http`]: HTTP delivery (PUT/POST per batch, retried without skipping).
//! - [`ws`]: WebSocket streaming for browsers and scripts.
//!
//! Only what the writer has made durable is ever read (the feed's head,
//! see [`crate::engine::Feed`]), so a client never sees an event a crash
//! could take back. Replay and live delivery are the same read of the
//! feed; a persistent monitor's cursor survives restarts.

pub mod deliver;
pub mod document;
pub mod http;
pub mod tcp;
pub mod topic;
pub mod wire;
pub mod ws;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use crate::engine::{Engine, Feed};
use crate::model::{OrgId, now_ms};
pub use crate::store::MonitorSpec;
use crate::store::{MonitorRecord, MonitorState, MonitorStatus, Store, StoreError, Transport};
pub use topic::{TopicError, Topics};

/// Limits and defaults of the monitors.
#[derive(Debug, Clone)]
pub struct MonitorConfig {
    /// Most monitors one organisation may have.
    pub max_per_org: usize,
    /// Most live sessions (TCP and WebSocket) at once, all monitors.
    pub max_sessions: usize,
    /// Feed entries kept per organisation (a persistent monitor further
    /// behind loses the oldest).
    pub retention_events: usize,
    /// Feed entries kept no longer than this.
    pub retention: Duration,
    /// A write to a client that takes longer closes its session (a dead or
    /// stalled peer; Device Cloud clients must never see idle timeouts).
    pub write_timeout: Duration,
    /// Longest wait for a client's ConnectionRequest after it connects.
    pub handshake_timeout: Duration,
    /// An HTTP monitor failing this long without a success is DISABLED
    /// (Device Cloud: 24 h).
    pub disable_after: Duration,
    /// Private ranges HTTP monitors may deliver to: the operator's
    /// `[outbound] allow_private`, the same guard as apps'.
    pub allow_private: Vec<ipnet::IpNet>,
}

impl Default for MonitorConfig {
    fn default() -> Self {
        Self {
            max_per_org: 100,
            max_sessions: 1024,
            retention_events: 100_000,
            retention: Duration::from_secs(7 * 24 * 3600),
            write_timeout: Duration::from_secs(60),
            handshake_timeout: Duration::from_secs(10),
            disable_after: Duration::from_secs(24 * 3600),
            allow_private: Vec::new(),
        }
    }
}

/// Why a monitor request was refused.
#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    /// No such monitor in the caller's organisation.
    #[error("no monitor {0}")]
    NotFound(u32),
    /// A field is wrong; the message names it.
    #[error("{0}")]
    Invalid(String),
    /// The topic does not parse.
    #[error(transparent)]
    Topic(#[from] TopicError),
    /// The organisation has as many monitors as it may.
    #[error("the organisation already has {0} monitors, the most it may have")]
    TooMany(usize),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The rules of a spec (both APIs build one): the topic parses, every
/// field is in range.
fn check(spec: &MonitorSpec) -> Result<(), MonitorError> {
    Topics::parse(&spec.topic)?;
    let invalid = |m: String| Err(MonitorError::Invalid(m));
    if !matches!(spec.format.as_str(), "json" | "xml") {
        return invalid(format!("format {:?}: json or xml", spec.format));
    }
    if !matches!(spec.compression.as_str(), "none" | "zlib" | "gzip") {
        return invalid(format!("compression {:?}: none, zlib or gzip", spec.compression));
    }
    if !(1..=1000).contains(&spec.batch_size) {
        return invalid(format!("batch size {}: 1 to 1000", spec.batch_size));
    }
    if spec.batch_duration_s > 600 {
        return invalid(format!("batch duration {} s: at most 600", spec.batch_duration_s));
    }
    if spec.transport == Transport::Websocket && spec.compression != "none" {
        return invalid("compression: a websocket monitor's frames are not compressed (none)".into());
    }
    if spec.description.as_ref().is_some_and(|d| d.len() > 1024) {
        return invalid("description: at most 1024 bytes".into());
    }
    if let Transport::Http(h) = &spec.transport {
        let url = h.url.as_str();
        if !(url.starts_with("http://") || url.starts_with("https://")) || url.len() > 2048 {
            return invalid(format!("transport URL {url:?}: an http:// or https:// URL"));
        }
        if !matches!(h.method.as_str(), "PUT" | "POST") {
            return invalid(format!("transport method {:?}: PUT or POST", h.method));
        }
        if h.headers.len() > 32 || h.headers.iter().any(|l| !l.contains(':') || l.contains(['\r', '\n'])) {
            return invalid("transport headers: at most 32 lines of `name: value`".into());
        }
    }
    Ok(())
}

/// The id of an ephemeral monitor: a live view (the console's) that is
/// never stored, starts at the head, and keeps no cursor.
pub const EPHEMERAL: u32 = 0;

/// How long an organisation stays on the feed after its last ephemeral
/// view closed: a page reloading (after a form post, say) opens its next
/// view from where the last page was rendered, and must find the feed
/// written meanwhile.
pub const VIEW_GRACE: Duration = Duration::from_secs(300);

/// A live session's handle: newest wins, and a stale one's end must not
/// touch the monitor's status.
struct Live {
    generation: u64,
    stop: watch::Sender<bool>,
}

/// The live sessions by monitor. A write that changes a monitor closes
/// its session and writes under this lock, and a session saves its state
/// only if it is still live under it: both run on the writer, so a closing
/// session can never undo the change, whichever reaches the writer first.
#[derive(Clone, Default)]
struct Sessions(Arc<Mutex<HashMap<u32, Live>>>);

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Live>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Close monitor `id`'s session and run `write` before any session
    /// can save its state again.
    fn closing<R>(&self, id: u32, write: impl FnOnce() -> R) -> R {
        let mut live = self.lock();
        if let Some(old) = live.remove(&id) {
            let _ = old.stop.send(true);
        }
        write()
    }
}

/// The monitors: their records, live sessions and delivery.
pub struct Monitors {
    engine: Arc<Engine>,
    store: Store,
    feed: Arc<Feed>,
    config: MonitorConfig,
    /// Live sessions by monitor: checked and changed by the writer's
    /// operations that save a monitor (see [`Sessions`]).
    live: Sessions,
    generation: AtomicU64,
    /// Ephemeral views per organisation: how many are open, and when the
    /// last one closed (they count against `max_sessions`, and keep their
    /// organisation on the feed until [`VIEW_GRACE`] after the last closes).
    views: Mutex<HashMap<OrgId, (usize, std::time::Instant)>>,
}

impl Monitors {
    /// The monitors of `engine`: every organisation with a monitor has its
    /// commits written to the engine's feed from now on, monitors left
    /// ACTIVE by a crash are disconnected (SUSPENDED if persistent, else
    /// INACTIVE), and HTTP monitors start delivering.
    pub async fn new(engine: Arc<Engine>, config: MonitorConfig) -> Result<Arc<Monitors>, StoreError> {
        let (store, feed) = (engine.store().clone(), Arc::clone(engine.feed()));
        let mut left_live = Vec::new();
        for rec in store.monitors(None)? {
            feed.watch_org(rec.org);
            if let Some(mut state) = store.monitor_state(rec.id)?
                && matches!(state.status, MonitorStatus::Active | MonitorStatus::Connecting)
                && matches!(rec.spec.transport, Transport::Tcp | Transport::Websocket)
            {
                state.status = disconnected(&rec);
                left_live.push((rec.id, state));
            }
        }
        if !left_live.is_empty() {
            // One write through the writer, as every other (nothing else
            // writes monitors before this returns).
            let mark = move |store: &Store| {
                left_live.iter().try_for_each(|(id, state)| store.put_monitor_state(*id, state).map(drop))
            };
            engine.write_op(OrgId::default(), true, mark).await?;
        }
        let monitors = Arc::new(Monitors {
            engine,
            store,
            feed,
            config,
            live: Sessions::default(),
            generation: AtomicU64::new(0),
            views: Mutex::default(),
        });
        // Restarted: a non-persistent monitor is live only, from now.
        for rec in monitors.store.monitors(None)? {
            http::start(&monitors, rec, http::Start::Now);
        }
        Ok(monitors)
    }

    /// The limits in force.
    pub fn config(&self) -> &MonitorConfig {
        &self.config
    }

    /// Every feed entry below this is durable (see [`Feed::head`]).
    pub fn head(&self) -> u64 {
        self.feed.head()
    }

    /// The store.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Create a monitor in `org`. A persistent monitor's replay starts
    /// now: it will see everything committed from here on.
    pub async fn create(
        self: &Arc<Self>,
        org: OrgId,
        spec: MonitorSpec,
    ) -> Result<(MonitorRecord, MonitorState), MonitorError> {
        check(&spec)?;
        let count = self.store.monitors(Some(org))?.len();
        if count >= self.config.max_per_org {
            return Err(MonitorError::TooMany(count));
        }
        // Watched first: nothing committed after the cursor is missed.
        self.feed.watch_org(org);
        let cursor = self.feed.head().saturating_sub(1);
        let rec = MonitorRecord { id: 0, org, created_ms: now_ms(), spec };
        let (stored, most) = (rec.clone(), self.config.max_per_org);
        // Counted again by the writer, with the write: two creations at
        // once cannot both take the last place.
        let create = move |store: &Store| match store.monitors(Some(org))?.len() {
            count if count >= most => Ok(Err(MonitorError::TooMany(count))),
            _ => store.create_monitor(stored, cursor).map(Ok),
        };
        let id = self.engine.write_op(org, true, create).await??;
        let rec = MonitorRecord { id, ..rec };
        http::start(self, rec.clone(), http::Start::Stored);
        Ok((rec, MonitorState::new(cursor)))
    }

    /// One of `org`'s monitors with its state.
    pub fn get(&self, org: OrgId, id: u32) -> Result<(MonitorRecord, MonitorState), MonitorError> {
        let rec = self.store.monitor(id)?.filter(|m| m.org == org).ok_or(MonitorError::NotFound(id))?;
        let state = self.store.monitor_state(id)?.unwrap_or_else(|| MonitorState::new(0));
        Ok((rec, state))
    }

    /// `org`'s monitors with their states, by id.
    pub fn list(&self, org: OrgId) -> Result<Vec<(MonitorRecord, MonitorState)>, MonitorError> {
        let mut all = Vec::new();
        for rec in self.store.monitors(Some(org))? {
            let state = self.store.monitor_state(rec.id)?.unwrap_or_else(|| MonitorState::new(0));
            all.push((rec, state));
        }
        Ok(all)
    }

    /// Replace a monitor's configuration. As in Device Cloud, an update
    /// resets the monitor: its session is closed and its cursor moves to
    /// now.
    pub async fn update(
        self: &Arc<Self>,
        org: OrgId,
        id: u32,
        spec: MonitorSpec,
    ) -> Result<MonitorRecord, MonitorError> {
        check(&spec)?;
        let (old, _) = self.get(org, id)?;
        let rec = MonitorRecord { id, org, created_ms: old.created_ms, spec };
        self.rewrite(&rec, MonitorState::new(self.feed.head().saturating_sub(1))).await?;
        Ok(rec)
    }

    /// Reset a monitor (e.g. after DISABLED): session closed, status
    /// INACTIVE, failures forgotten, cursor at now.
    pub async fn reset(self: &Arc<Self>, org: OrgId, id: u32) -> Result<(MonitorRecord, MonitorState), MonitorError> {
        let (rec, _) = self.get(org, id)?;
        let state = MonitorState::new(self.feed.head().saturating_sub(1));
        self.rewrite(&rec, state.clone()).await?;
        Ok((rec, state))
    }

    /// Store `rec` with `state` (an update or a reset), closing the
    /// monitor's session, then start delivering again. A monitor deleted
    /// since it was read is not brought back.
    async fn rewrite(self: &Arc<Self>, rec: &MonitorRecord, state: MonitorState) -> Result<(), MonitorError> {
        let (live, stored, id) = (self.live.clone(), rec.clone(), rec.id);
        let update = move |store: &Store| live.closing(id, || store.update_monitor(&stored, &state));
        if !self.engine.write_op(rec.org, true, update).await? {
            return Err(MonitorError::NotFound(id));
        }
        http::start(self, rec.clone(), http::Start::Stored);
        Ok(())
    }

    /// Delete a monitor; its live session is closed.
    pub async fn delete(&self, org: OrgId, id: u32) -> Result<(), MonitorError> {
        self.get(org, id)?;
        let live = self.live.clone();
        self.engine.write_op(org, true, move |store| live.closing(id, || store.delete_monitor(id))).await?;
        let viewed = self.views.lock().unwrap_or_else(|p| p.into_inner()).contains_key(&org);
        if !viewed && self.store.monitors(Some(org))?.is_empty() {
            self.feed.unwatch_org(org);
        }
        Ok(())
    }

    /// Start a session for monitor `id`, closing any older one (newest
    /// wins). Returns its generation and the receiver that says stop.
    pub(crate) fn open_session(&self, id: u32) -> Option<(u64, watch::Receiver<bool>)> {
        let mut live = self.live.lock();
        if !live.contains_key(&id) && live.len() >= self.config.max_sessions {
            return None;
        }
        let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        let (stop, stopped) = watch::channel(false);
        if let Some(old) = live.insert(id, Live { generation, stop }) {
            let _ = old.stop.send(true);
        }
        Some((generation, stopped))
    }

    /// A session ended: save its final state and forget it, unless a
    /// newer one took over or the monitor was changed meanwhile (checked
    /// when the writer runs the save).
    pub(crate) async fn end_session(
        &self,
        rec: &MonitorRecord,
        generation: u64,
        state: &MonitorState,
    ) -> Result<(), StoreError> {
        let (live, id, state) = (self.live.clone(), rec.id, state.clone());
        let save = move |store: &Store| {
            let mut live = live.lock();
            if live.get(&id).is_some_and(|l| l.generation == generation) {
                live.remove(&id);
                store.put_monitor_state(id, &state)?;
            }
            Ok(())
        };
        self.engine.write_op(rec.org, false, save).await
    }

    /// Save a session's delivery state, if it is still the monitor's live
    /// session (and so the monitor still exists) when the writer runs the
    /// save. Returns whether it was saved.
    async fn save_if_current(
        &self,
        rec: &MonitorRecord,
        generation: u64,
        state: &MonitorState,
    ) -> Result<bool, StoreError> {
        self.engine.write_op(rec.org, false, self.save_op(rec.id, generation, state)).await
    }

    /// [`Monitors::save_if_current`] handed to the writer now, its verdict
    /// awaited later: a session delivers its next batch while the writer
    /// saves the last one's cursor (a later write of the monitor's, also
    /// the writer's, is applied after it).
    fn save_soon(
        &self,
        rec: &MonitorRecord,
        generation: u64,
        state: &MonitorState,
    ) -> tokio::task::JoinHandle<Result<bool, StoreError>> {
        let (engine, org, save) = (Arc::clone(&self.engine), rec.org, self.save_op(rec.id, generation, state));
        tokio::spawn(async move { engine.write_op(org, false, save).await })
    }

    /// The writer's operation that saves `state` if `generation` is still
    /// monitor `id`'s live session.
    fn save_op(
        &self,
        id: u32,
        generation: u64,
        state: &MonitorState,
    ) -> impl FnOnce(&Store) -> Result<bool, StoreError> + Send + 'static {
        let (live, state) = (self.live.clone(), state.clone());
        move |store: &Store| {
            let live = live.lock();
            if live.get(&id).is_none_or(|l| l.generation != generation) {
                return Ok(false);
            }
            store.put_monitor_state(id, &state)
        }
    }

    /// Raise a notification on `org`'s own agent (a monitor disabled).
    async fn notify(&self, org: OrgId, title: &str, message: String) {
        let Ok(Some(rec)) = self.store.org(org) else { return };
        let Ok(name) = crate::model::ChannelName::new(crate::model::well_known::NOTIFICATIONS) else { return };
        let channel = crate::model::ChannelRef { agent_id: rec.agent_id, name };
        let data = serde_json::json!({ "message": message, "title": title, "severity": 4, "topic": "monitors" });
        if let Err(e) = self.engine.publish_message(channel, rec.agent_id, data).await {
            tracing::warn!(organisation = %org, error = %e, "raising a monitor notification failed");
        }
    }

    /// Prometheus text for every monitor: status, delivered and failed
    /// batches, and lag (seconds since the oldest event committed but not
    /// yet delivered; 0 when caught up).
    pub fn metrics(&self) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "# HELP paddock_monitor_sessions Live monitor sessions (TCP, WebSocket, HTTP runners).");
        let _ = writeln!(out, "# TYPE paddock_monitor_sessions gauge\npaddock_monitor_sessions {}", self.sessions());
        let Ok(all) = self.store.monitors(None) else { return out };
        let head = self.feed.head();
        let now = now_ms();
        let mut status = String::from(
            "# HELP paddock_monitor_status 1 for the status each monitor is in.\n# TYPE paddock_monitor_status gauge\n",
        );
        let mut delivered = String::from(
            "# HELP paddock_monitor_delivered_batches_total Batches delivered.\n# TYPE paddock_monitor_delivered_batches_total counter\n",
        );
        let mut failed = String::from(
            "# HELP paddock_monitor_failed_batches_total Batches that failed.\n# TYPE paddock_monitor_failed_batches_total counter\n",
        );
        let mut lag = String::from(
            "# HELP paddock_monitor_lag_seconds Age of the oldest committed event not yet delivered.\n# TYPE paddock_monitor_lag_seconds gauge\n",
        );
        for rec in all {
            let Ok(Some(state)) = self.store.monitor_state(rec.id) else { continue };
            let labels = format!("organisation=\"{}\",monitor=\"{}\"", rec.org, rec.id);
            let _ = writeln!(
                status,
                "paddock_monitor_status{{{labels},status=\"{}\"}} 1",
                state.status.name().to_ascii_lowercase()
            );
            let _ = writeln!(delivered, "paddock_monitor_delivered_batches_total{{{labels}}} {}", state.delivered);
            let _ = writeln!(failed, "paddock_monitor_failed_batches_total{{{labels}}} {}", state.failed);
            let oldest = self
                .store
                .feed(rec.org, state.cursor, head.saturating_sub(1), 1)
                .ok()
                .and_then(|e| e.first().map(|e| e.at_ms));
            let seconds = oldest.map_or(0.0, |at| now.saturating_sub(at) as f64 / 1000.0);
            let _ = writeln!(lag, "paddock_monitor_lag_seconds{{{labels}}} {seconds}");
        }
        out + &status + &delivered + &failed + &lag
    }

    /// Live sessions now (ephemeral views included).
    pub fn sessions(&self) -> usize {
        let views: usize = self.views.lock().unwrap_or_else(|p| p.into_inner()).values().map(|v| v.0).sum();
        self.live.lock().len() + views
    }

    /// A page about to open a view of `org` was rendered: put the
    /// organisation on the feed now (for [`VIEW_GRACE`] at least), so the
    /// view finds everything committed after the page.
    pub fn expect_view(&self, org: OrgId) {
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        views.entry(org).or_insert((0, std::time::Instant::now())).1 = std::time::Instant::now();
        self.feed.watch_org(org);
    }

    /// Room for an ephemeral view of `org` (the console's live updates):
    /// counted against `max_sessions`, and the organisation's commits go to
    /// the feed, until the guard is dropped. `None` when full.
    pub fn open_view(self: &Arc<Self>, org: OrgId) -> Option<ViewGuard> {
        if self.sessions() >= self.config.max_sessions {
            return None;
        }
        let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
        views.entry(org).or_insert((0, std::time::Instant::now())).0 += 1;
        self.feed.watch_org(org);
        Some(ViewGuard(Arc::clone(self), org))
    }

    /// Retention sweep: every organisation's feed to its bounds (removed
    /// through the writer), and
    /// organisations whose last view closed more than [`VIEW_GRACE`] ago
    /// (and that have no monitors) off the feed. Returns how many entries
    /// were removed.
    pub async fn prune(&self) -> Result<usize, StoreError> {
        let idle: Vec<OrgId> = {
            let mut views = self.views.lock().unwrap_or_else(|p| p.into_inner());
            let idle: Vec<OrgId> =
                views.iter().filter(|(_, v)| v.0 == 0 && v.1.elapsed() > VIEW_GRACE).map(|(o, _)| *o).collect();
            for org in &idle {
                views.remove(org);
            }
            idle
        };
        for org in idle {
            if self.store.monitors(Some(org))?.is_empty() {
                self.feed.unwatch_org(org);
            }
        }
        let older = now_ms().saturating_sub(u64::try_from(self.config.retention.as_millis()).unwrap_or(u64::MAX));
        let mut orgs: Vec<OrgId> = self.store.monitors(None)?.into_iter().map(|m| m.org).collect();
        orgs.dedup();
        let mut removed = 0;
        for org in orgs {
            let (store, keep) = (&self.store, self.config.retention_events);
            removed += self.engine.sweep(org, |most| store.stale_feed(org, keep, older, most)).await?;
        }
        Ok(removed)
    }
}

/// An open ephemeral view; dropping it frees its place (and takes its
/// organisation off the feed when nothing else watches it).
pub struct ViewGuard(Arc<Monitors>, OrgId);

impl Drop for ViewGuard {
    fn drop(&mut self) {
        let Self(monitors, org) = self;
        if let Some(view) = monitors.views.lock().unwrap_or_else(|p| p.into_inner()).get_mut(org) {
            view.0 = view.0.saturating_sub(1);
            view.1 = std::time::Instant::now();
        }
    }
}

/// The status of a monitor without a session.
fn disconnected(rec: &MonitorRecord) -> MonitorStatus {
    if rec.spec.persistent { MonitorStatus::Suspended } else { MonitorStatus::Inactive }
}

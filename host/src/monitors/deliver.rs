//! The delivery loop every transport shares.
//!
//! A session reads its organisation's feed from the monitor's cursor up to
//! the durable head, keeps what its topics match, and sends batches of at
//! most `batch_size` once full, once `batch_duration_s` has passed since
//! the first event of the batch, or at once while replaying. The cursor
//! moves only when the transport says a batch is delivered (written, or
//! acknowledged with `explicit` acks), so a batch lost with a session is
//! sent again to the next. Replayed events (committed before a persistent
//! monitor connected) go first, in their own batches marked `replay`; then
//! live ones. Nothing is held in memory beyond one batch: a slow client
//! only falls behind in the feed, which is bounded by retention.

use std::future::Future;
use std::time::Instant;

use tokio::sync::watch;

use super::{Monitors, Topics, disconnected, document};
use crate::model::now_ms;
use crate::store::{FeedEntry, MonitorRecord, MonitorState, MonitorStatus, StoreError};

/// Feed entries read per look at the feed.
const SCAN: usize = 1024;

/// Why a transport could not deliver a batch.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The peer is gone (closed, reset, or its write timed out).
    #[error("the client is gone: {0}")]
    Gone(String),
    /// The peer refused the batch (a non-2xx answer, a non-200 ack).
    #[error("the batch was refused: {0}")]
    Refused(String),
}

/// Where a session's batches go.
pub trait Sink: Send {
    /// Deliver one batch: `body` is the rendered (and, if configured,
    /// compressed) document of `count` events, the first of which has feed
    /// sequence number `first` (stable across retries of the batch).
    /// Resolves once delivered as the monitor's ack mode defines.
    fn send(&mut self, body: Vec<u8>, count: usize, first: u64) -> impl Future<Output = Result<(), SinkError>> + Send;

    /// Resolves when the peer is gone while nothing is being sent.
    fn gone(&mut self) -> impl Future<Output = String> + Send;
}

/// Wait up to `timeout` for the acknowledgement that `verdict` decides
/// (`None`: an acknowledgement of another batch, skipped). Explicit acks
/// of every transport go through here.
pub(super) async fn acknowledged<A>(
    acks: &mut tokio::sync::mpsc::Receiver<A>,
    timeout: std::time::Duration,
    verdict: impl Fn(&A) -> Option<Result<(), SinkError>>,
) -> Result<(), SinkError> {
    let wait = async {
        loop {
            match acks.recv().await {
                Some(ack) => match verdict(&ack) {
                    Some(decided) => return decided,
                    None => continue,
                },
                None => return Err(SinkError::Gone("closed by the client".into())),
            }
        }
    };
    tokio::time::timeout(timeout, wait)
        .await
        .unwrap_or_else(|_| Err(SinkError::Gone(format!("no acknowledgement within {timeout:?}"))))
}

/// How a session ended.
#[derive(Debug)]
pub enum End {
    /// Told to stop (a newer session, an update, a delete, shutdown).
    Stopped,
    /// The peer went away or failed a batch.
    Sink(SinkError),
    /// The peer went away while idle.
    Gone(String),
    /// The store failed.
    Store(StoreError),
}

/// Deliver to `sink` from the monitor's saved cursor until something
/// ends it; the state is saved after every batch (while `generation` is
/// the monitor's live session). `status` is what the monitor shows until
/// its first batch is delivered (ACTIVE for a connected client,
/// CONNECTING for HTTP). A live start (`live_from`: the feed head when the
/// client connected, read before it was told so) of a monitor without
/// replay begins there (what happened before is not sent); otherwise it
/// goes on from the cursor. Returns how it ended and the state at the
/// end, for the caller to save as it sees fit.
pub async fn run(
    monitors: &Monitors,
    rec: &MonitorRecord,
    generation: u64,
    stop: watch::Receiver<bool>,
    sink: &mut impl Sink,
    (status, live_from): (MonitorStatus, Option<u64>),
) -> (End, MonitorState) {
    let mut session = match Session::start(monitors, rec, generation, status, live_from).await {
        Ok(s) => s,
        Err(e) => return (End::Store(e), MonitorState::new(0)),
    };
    let end = session.pump(stop, sink).await;
    (end, session.state)
}

/// [`run`] for a client that connected when the feed head was
/// `connected_at`: ACTIVE while it lasts, then SUSPENDED (persistent) or
/// INACTIVE, saved unless a newer session or a change took over.
pub async fn connected(
    monitors: &Monitors,
    rec: &MonitorRecord,
    generation: u64,
    stop: watch::Receiver<bool>,
    sink: &mut impl Sink,
    connected_at: u64,
) -> End {
    let live = (MonitorStatus::Active, Some(connected_at));
    let (end, mut state) = run(monitors, rec, generation, stop, sink, live).await;
    state.status = disconnected(rec);
    if let Err(e) = monitors.end_session(rec, generation, &state).await {
        tracing::warn!(monitor = rec.id, error = %e, "saving a monitor's state failed");
    }
    end
}

struct Session<'a> {
    monitors: &'a Monitors,
    rec: &'a MonitorRecord,
    topics: Topics,
    generation: u64,
    state: MonitorState,
    /// Matched, not yet delivered.
    pending: Vec<FeedEntry>,
    /// The last sequence number looked at.
    scanned: u64,
    /// Entries below this were committed before a persistent monitor
    /// connected: replay.
    replay_until: u64,
    /// When the oldest pending event was first seen.
    since: Option<Instant>,
    /// The last delivered batch's save, while the writer has it.
    saving: Option<tokio::task::JoinHandle<Result<bool, StoreError>>>,
}

impl<'a> Session<'a> {
    async fn start(
        monitors: &'a Monitors,
        rec: &'a MonitorRecord,
        generation: u64,
        status: MonitorStatus,
        live_from: Option<u64>,
    ) -> Result<Session<'a>, StoreError> {
        let topics = Topics::parse(&rec.spec.topic).map_err(|e| StoreError::Conflict(e.to_string()))?;
        let head = monitors.feed.head();
        let mut state = match rec.id {
            // An ephemeral view has no stored state: its `generation` is the
            // feed position it starts after (clamped to the head), e.g. the
            // head when the page it serves was rendered.
            super::EPHEMERAL => MonitorState::new(generation.min(head.saturating_sub(1))),
            id => monitors.store.monitor_state(id)?.unwrap_or_else(|| MonitorState::new(0)),
        };
        if let Some(connected_at) = live_from
            && !rec.spec.persistent
            && rec.id != super::EPHEMERAL
        {
            // Live only: what happened before the connection is not sent.
            // (An ephemeral view starts where its page was rendered.)
            state.cursor = connected_at.min(head).saturating_sub(1);
        }
        state.status = status;
        if status == MonitorStatus::Active {
            state.last_connect_ms = Some(now_ms());
        }
        if rec.id != super::EPHEMERAL {
            monitors.save_if_current(rec, generation, &state).await?;
        }
        let scanned = state.cursor;
        Ok(Session {
            monitors,
            rec,
            topics,
            generation,
            state,
            pending: Vec::new(),
            scanned,
            replay_until: if rec.spec.persistent { head } else { 0 },
            since: None,
            saving: None,
        })
    }

    async fn pump(&mut self, mut stop: watch::Receiver<bool>, sink: &mut impl Sink) -> End {
        let mut head = self.monitors.feed.subscribe();
        loop {
            if *stop.borrow() {
                return End::Stopped;
            }
            let more = match self.scan(*head.borrow_and_update()) {
                Ok(more) => more,
                Err(e) => return End::Store(e),
            };
            if let Some(batch) = self.ready(more) {
                if let Err(e) = self.deliver(batch, sink).await {
                    return e;
                }
                continue;
            }
            if more {
                continue;
            }
            let wait = self.deadline();
            tokio::select! {
                changed = head.changed() => if changed.is_err() { return End::Stopped },
                _ = stop.changed() => {}
                reason = sink.gone() => return End::Gone(reason),
                () = sleep_until(wait) => {}
            }
        }
    }

    /// Read matched entries up to the durable `head` (exclusive) while the
    /// pending batch has room; true if more may be there.
    fn scan(&mut self, head: u64) -> Result<bool, StoreError> {
        let size = self.rec.spec.batch_size as usize;
        if self.pending.len() >= size || head == 0 {
            return Ok(false);
        }
        let entries = self.monitors.store.feed(self.rec.org, self.scanned, head - 1, SCAN)?;
        let more = entries.len() == SCAN;
        if let Some(last) = entries.last() {
            self.scanned = last.seq;
        }
        let matched = entries.into_iter().filter(|e| self.topics.matches(e));
        self.pending.extend(matched);
        if self.pending.is_empty() {
            // Nothing here is for this monitor: past it, no resend.
            self.state.cursor = self.scanned;
        } else if self.since.is_none() {
            self.since = Some(Instant::now());
        }
        Ok(more)
    }

    /// The batch to send now, if one is due: full, replaying, or waited
    /// long enough (and nothing more to read first).
    fn ready(&mut self, more: bool) -> Option<Vec<FeedEntry>> {
        let first = self.pending.first()?;
        let replaying = first.seq < self.replay_until;
        let size = self.rec.spec.batch_size as usize;
        let waited = self.since.is_some_and(|s| s.elapsed().as_secs() >= u64::from(self.rec.spec.batch_duration_s));
        let due = self.pending.len() >= size || (!more && (replaying || waited || self.rec.spec.batch_duration_s == 0));
        if !due {
            return None;
        }
        // Replay and live never share a batch.
        let same = self.pending.iter().take(size).take_while(|e| (e.seq < self.replay_until) == replaying).count();
        let batch: Vec<FeedEntry> = self.pending.drain(..same).collect();
        self.since = (!self.pending.is_empty()).then(Instant::now);
        Some(batch)
    }

    async fn deliver(&mut self, batch: Vec<FeedEntry>, sink: &mut impl Sink) -> Result<(), End> {
        let replay = batch.first().is_some_and(|e| e.seq < self.replay_until);
        let mut body = document::render(&batch, &self.rec.spec.format, replay);
        if self.rec.spec.compressed() {
            body = document::compress(&body);
        }
        let first = batch.first().map_or(0, |e| e.seq);
        if let Err(e) = sink.send(body, batch.len(), first).await {
            self.state.failed += 1;
            return Err(End::Sink(e));
        }
        let last = batch.last().map_or(self.state.cursor, |e| e.seq);
        if self.state.status != MonitorStatus::Active {
            self.state.status = MonitorStatus::Active;
            self.state.last_connect_ms = Some(now_ms());
        }
        self.state.failing_since_ms = None;
        self.state.cursor = if self.pending.is_empty() { self.scanned.max(last) } else { last };
        self.state.last_sent_ms = Some(now_ms());
        self.state.delivered += 1;
        if self.rec.id == super::EPHEMERAL {
            return Ok(());
        }
        self.saved().await?;
        self.saving = Some(self.monitors.save_soon(self.rec, self.generation, &self.state));
        Ok(())
    }

    /// The verdict of the last batch's save: a session no longer live
    /// stops.
    async fn saved(&mut self) -> Result<(), End> {
        let Some(saving) = self.saving.take() else { return Ok(()) };
        match saving.await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(End::Stopped),
            Ok(Err(e)) => Err(End::Store(e)),
            Err(e) => Err(End::Gone(format!("saving the monitor's state was lost: {e}"))),
        }
    }

    /// When the pending batch is due by time, if it waits for time.
    fn deadline(&self) -> Option<Instant> {
        let since = self.since?;
        Some(since + std::time::Duration::from_secs(u64::from(self.rec.spec.batch_duration_s)))
    }
}

async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at.into()).await,
        None => std::future::pending().await,
    }
}

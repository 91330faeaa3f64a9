//! Key encodings. Every key is a fixed-width big-endian prefix, so sled's
//! lexicographic order is numeric order and prefix scans select exactly one
//! owner's records.
//!
//! | tree          | key                                              | value                 |
//! |---------------|--------------------------------------------------|-----------------------|
//! | `agents`      | agent id (8)                                     | `AgentRecord` JSON    |
//! | `serials`     | org id (8) · serial number (utf-8)               | agent id (8)          |
//! | `aggregates`  | agent id (8) · channel name                      | `Aggregate` JSON      |
//! | `messages`    | agent id (8) · name length (1) · name · msg id (8) | `Message` JSON      |
//! | `queue`       | org id (8) · due ms (8) · event id (8)           | `QueuedEvent` JSON    |
//! | `keyq`        | install id (8) · agent id (8) · seq (8)          | its `queue` key (24)  |
//! | `dead`        | org id (8) · event id (8)                        | `DeadLetter` JSON     |
//! | `schedules`   | install id (8) · schedule name                   | `ScheduleState` JSON  |
//! | `invocations` | install id (8) · event id (8) · attempt (4)      | `InvocationSummary` JSON |
//! | `orgs`        | org id (8)                                       | `OrgRecord` JSON      |
//! | `installs`    | install id (8)                                   | `InstallRecord` JSON  |
//! | `app_keys`    | agent id (8) · app key (utf-8)                   | install id (8)        |
//! | `tokens`      | SHA-256 of the token secret (32)                 | `TokenRecord` JSON    |
//! | `ingestions`  | ingestion id (8)                                 | `IngestionRecord` JSON |
//! | `seen`        | scope length (1) · scope · key                   | expiry ms (JSON)      |
//! | `feed`        | org id (8) · seq (8)                             | `FeedEntry` JSON      |
//! | `monitors`    | monitor id (4)                                   | `MonitorRecord` JSON  |
//! | `monitor_state` | monitor id (4)                                 | `MonitorState` JSON   |
//! | `monitor_ids` | `next`                                           | last id given (4)     |
//! | `unreadable`  | its `queue` key (24)                             | `UnreadableEvent` JSON |
//!
//! Channel names are at most 128 bytes, so one length byte suffices; the
//! length prefix keeps `a` and `ab` from sharing a message prefix. Message ids
//! are snowflakes, so a channel's messages are stored in time order.
//!
//! `keyq` orders each (installation, agent) line by a store-assigned
//! sequence number: only the first event of a line may run, so a retried
//! event (whose due time moved later) still runs before younger events of
//! its line.

use crate::model::{AgentId, ChannelRef, EventId, InstallId, MessageId, OrgId};

/// `agents` key.
pub fn agent(id: AgentId) -> [u8; 8] {
    id.get().to_be_bytes()
}

/// `serials` key.
pub fn serial(org: OrgId, serial: &str) -> Vec<u8> {
    let mut k = org.get().to_be_bytes().to_vec();
    k.extend_from_slice(serial.as_bytes());
    k
}

/// `aggregates` key.
pub fn aggregate(ch: &ChannelRef) -> Vec<u8> {
    let mut k = ch.agent_id.get().to_be_bytes().to_vec();
    k.extend_from_slice(ch.name.as_str().as_bytes());
    k
}

/// The prefix shared by every message of a channel.
pub fn channel_messages(ch: &ChannelRef) -> Vec<u8> {
    let name = ch.name.as_str().as_bytes();
    let mut k = Vec::with_capacity(9 + name.len() + 8);
    k.extend_from_slice(&ch.agent_id.get().to_be_bytes());
    // ChannelName caps names at 128 bytes, so the length fits a byte.
    k.push(u8::try_from(name.len()).unwrap_or(u8::MAX));
    k.extend_from_slice(name);
    k
}

/// `messages` key.
pub fn message(ch: &ChannelRef, id: MessageId) -> Vec<u8> {
    let mut k = channel_messages(ch);
    k.extend_from_slice(&id.get().to_be_bytes());
    k
}

/// `queue` key. Partitioned by organisation so that the dispatcher can take
/// each tenant's due events separately (fairness: one tenant's backlog never
/// hides another's due events).
pub fn queued(org: OrgId, due_ms: u64, id: EventId) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&org.get().to_be_bytes());
    k[8..16].copy_from_slice(&due_ms.to_be_bytes());
    k[16..].copy_from_slice(&id.get().to_be_bytes());
    k
}

/// The prefix of one ordering key's line in `keyq`.
pub fn line(install: InstallId, agent: AgentId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&install.get().to_be_bytes());
    k[8..].copy_from_slice(&agent.get().to_be_bytes());
    k
}

/// `keyq` key: an event's place in its (installation, agent) line.
pub fn place(install: InstallId, agent: AgentId, seq: u64) -> [u8; 24] {
    let mut k = [0u8; 24];
    k[..16].copy_from_slice(&line(install, agent));
    k[16..].copy_from_slice(&seq.to_be_bytes());
    k
}

/// `schedules` key.
pub fn schedule(install: InstallId, name: &str) -> Vec<u8> {
    let mut k = install.get().to_be_bytes().to_vec();
    k.extend_from_slice(name.as_bytes());
    k
}

/// `invocations` key.
pub fn invocation(install: InstallId, event: EventId, attempt: u32) -> [u8; 20] {
    let mut k = [0u8; 20];
    k[..8].copy_from_slice(&install.get().to_be_bytes());
    k[8..16].copy_from_slice(&event.get().to_be_bytes());
    k[16..].copy_from_slice(&attempt.to_be_bytes());
    k
}

/// `dead` key: the organisation first, so each one's letters are one
/// prefix (listed and bounded without reading anyone else's).
pub fn dead(org: OrgId, id: EventId) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&org.get().to_be_bytes());
    k[8..].copy_from_slice(&id.get().to_be_bytes());
    k
}

/// `installs` key.
pub fn install(id: InstallId) -> [u8; 8] {
    id.get().to_be_bytes()
}

/// `app_keys` key: an app key is unique per agent.
pub fn app_key(agent: AgentId, app_key: &str) -> Vec<u8> {
    let mut k = agent.get().to_be_bytes().to_vec();
    k.extend_from_slice(app_key.as_bytes());
    k
}

/// `seen` key (idempotency keys). Scopes are short names of ours.
pub fn seen(scope: &str, key: &str) -> Vec<u8> {
    let mut k = vec![u8::try_from(scope.len()).unwrap_or(u8::MAX)];
    k.extend_from_slice(scope.as_bytes());
    k.extend_from_slice(key.as_bytes());
    k
}

/// `feed` key: an organisation's entries in commit order.
pub fn feed(org: OrgId, seq: u64) -> [u8; 16] {
    let mut k = [0u8; 16];
    k[..8].copy_from_slice(&org.get().to_be_bytes());
    k[8..].copy_from_slice(&seq.to_be_bytes());
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ChannelName;

    fn ch(agent: u64, name: &str) -> ChannelRef {
        ChannelRef { agent_id: agent.into(), name: ChannelName::new(name).unwrap() }
    }

    #[test]
    fn message_keys_sort_by_id_within_a_channel_and_never_across() {
        let a = ch(1, "a");
        assert!(message(&a, 5.into()) < message(&a, 6.into()));
        assert!(message(&a, 6.into()).starts_with(&channel_messages(&a)));
        assert!(!message(&ch(1, "ab"), 1.into()).starts_with(&channel_messages(&a)));
        assert!(message(&ch(1, "zz"), 1.into()) < message(&ch(2, "a"), 1.into()), "agent first");
    }

    #[test]
    fn queue_keys_sort_by_organisation_then_due_time_then_id() {
        let (a, b) = (OrgId::from(1), OrgId::from(2));
        assert!(queued(a, 10, 99.into()) < queued(a, 11, 1.into()));
        assert!(queued(a, 10, 1.into()) < queued(a, 10, 2.into()));
        assert!(queued(a, 99, 1.into()) < queued(b, 0, 1.into()));
    }
}

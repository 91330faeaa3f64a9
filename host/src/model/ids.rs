//! Snowflake ids: 64-bit, time-ordered, emitted as decimal strings and
//! accepted as strings or numbers.
//!
//! Layout (DESIGN.md §1):
//! `(ms since 2025-01-01T00:00Z) << 22 | region << 18 | instance << 8 | type << 4 | rand4`.
//! Because the timestamp leads, big-endian ids sort by creation time, which
//! makes them good store keys.
//!
//! Uniqueness: with only 4 random bits, two ids of one kind minted in the
//! same millisecond collided with probability 1/16 (found by the engine
//! tests: a colliding event overwrote another in the queue). On a single
//! node the 10 instance bits and the 4 low bits therefore carry a
//! process-wide 14-bit counter: ids are unique for up to 16,384 per
//! millisecond per process. The scale-out plan (DESIGN.md §7) must carve the
//! instance out of these bits again, with a per-instance counter.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The per-process counter behind the low bits of every id. Starting at 0
/// is safe on one node: a restarted process cannot mint ids in the same
/// millisecond as the process it replaced.
static SEQUENCE: AtomicU64 = AtomicU64::new(0);

/// 2025-01-01T00:00:00Z in Unix milliseconds: the snowflake epoch.
pub const SNOWFLAKE_EPOCH_MS: u64 = 1_735_689_600_000;

/// What an id names; stored in bits 4..8 of every snowflake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum IdKind {
    /// A device or organisation agent.
    Agent = 1,
    /// A channel message.
    Message = 2,
    /// A channel.
    Channel = 3,
    /// An app (uploaded component).
    App = 4,
    /// A schedule.
    Schedule = 5,
    /// An API token.
    Token = 6,
    /// An installation of an app.
    Installation = 7,
    /// An event in the delivery queue.
    Event = 8,
    /// An organisation.
    Organisation = 9,
    /// An ingestion endpoint.
    Ingestion = 10,
}

/// A raw snowflake id. Typed wrappers ([`AgentId`], [`MessageId`], ...) are
/// what the rest of the code passes around.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Id(pub u64);

impl Id {
    /// A new id of `kind`, stamped with the current time.
    pub fn generate(kind: IdKind) -> Self {
        Self::at(now_ms(), kind)
    }

    /// A new id of `kind` for Unix time `unix_ms` (clamped to the epoch).
    pub fn at(unix_ms: u64, kind: IdKind) -> Self {
        let ms = unix_ms.saturating_sub(SNOWFLAKE_EPOCH_MS);
        // Region stays 0; instance and rand4 carry the counter (see the
        // module docs).
        let seq = SEQUENCE.fetch_add(1, Ordering::Relaxed) & 0x3fff;
        Self(ms << 22 | (seq >> 4) << 8 | (kind as u64) << 4 | (seq & 0xf))
    }

    /// Unix milliseconds at which this id was minted.
    pub fn unix_ms(self) -> u64 {
        (self.0 >> 22) + SNOWFLAKE_EPOCH_MS
    }
}

/// Microseconds since the Unix epoch, now.
pub fn now_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The text was not a decimal 64-bit id.
#[derive(Debug, thiserror::Error)]
#[error("not an id: {0:?} (expected a decimal 64-bit number)")]
pub struct BadId(pub String);

impl FromStr for Id {
    type Err = BadId;
    fn from_str(s: &str) -> Result<Self, BadId> {
        s.trim().parse::<u64>().map(Id).map_err(|_| BadId(s.to_owned()))
    }
}

impl Serialize for Id {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Id {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl serde::de::Visitor<'_> for V {
            type Value = Id;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an id as a decimal string or a non-negative integer")
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Id, E> {
                Ok(Id(v))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Id, E> {
                u64::try_from(v).map(Id).map_err(|_| E::custom(format!("negative id {v}")))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Id, E> {
                v.parse().map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

macro_rules! typed_id {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Id);

        impl $name {
            /// A fresh id of this kind.
            pub fn generate() -> Self {
                Self(Id::generate($kind))
            }
            /// The raw 64-bit value.
            pub fn get(self) -> u64 {
                self.0.0
            }
        }

        impl From<u64> for $name {
            fn from(v: u64) -> Self {
                Self(Id(v))
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = BadId;
            fn from_str(s: &str) -> Result<Self, BadId> {
                s.parse().map(Self)
            }
        }
    };
}

typed_id!(/// An agent (device or organisation agent).
    AgentId, IdKind::Agent);
typed_id!(/// A channel message.
    MessageId, IdKind::Message);
typed_id!(/// An organisation (tenant).
    OrgId, IdKind::Organisation);
typed_id!(/// An app.
    AppId, IdKind::App);
typed_id!(/// An installation.
    InstallId, IdKind::Installation);
typed_id!(/// An event.
    EventId, IdKind::Event);
typed_id!(/// A schedule.
    ScheduleId, IdKind::Schedule);
typed_id!(/// An ingestion endpoint.
    IngestionId, IdKind::Ingestion);

impl MessageId {
    /// A message id minted for Unix time `unix_ms`.
    pub fn at(unix_ms: u64) -> Self {
        Self(Id::at(unix_ms, IdKind::Message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_time_ordered_and_carry_their_time_and_kind() {
        let a = Id::at(SNOWFLAKE_EPOCH_MS + 1_000, IdKind::Message);
        let b = Id::at(SNOWFLAKE_EPOCH_MS + 2_000, IdKind::Message);
        assert!(a < b);
        assert_eq!(a.unix_ms(), SNOWFLAKE_EPOCH_MS + 1_000);
        assert_eq!((a.0 >> 4) & 0xf, IdKind::Message as u64);
    }

    #[test]
    fn ids_minted_in_one_millisecond_are_unique() {
        let ids: std::collections::HashSet<Id> =
            (0..10_000).map(|_| Id::at(SNOWFLAKE_EPOCH_MS + 5, IdKind::Event)).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(
            ids.iter().all(|id| (id.0 >> 4) & 0xf == IdKind::Event as u64 && id.unix_ms() == SNOWFLAKE_EPOCH_MS + 5)
        );
    }

    #[test]
    fn ids_parse_from_strings_and_numbers_and_print_as_strings() {
        let from_str: AgentId = serde_json::from_str("\"123\"").unwrap();
        let from_num: AgentId = serde_json::from_str("123").unwrap();
        assert_eq!(from_str, from_num);
        assert_eq!(serde_json::to_string(&from_num).unwrap(), "\"123\"");
        assert!(serde_json::from_str::<AgentId>("-1").is_err());
        assert!(serde_json::from_str::<AgentId>("\"12x\"").is_err());
    }
}

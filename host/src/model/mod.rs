//! The domain model: ids, channel names, payload rules, messages, aggregates,
//! agents, events and the aggregate merge. Pure data and rules; no I/O.

mod channel;
mod event;
mod host_pattern;
mod ids;
mod markup;
mod merge;
mod oauth;
mod payload;
mod schedule;
mod strict_json;

pub use channel::{Agent, Aggregate, BadChannelName, ChannelName, ChannelRef, MAX_CHANNEL_NAME, Message, well_known};
pub use event::{Event, EventEnvelope, EventError, Hook};
pub use host_pattern::{HostPattern, HostPatternError};
pub use ids::{
    AgentId, AppId, BadId, EventId, Id, IdKind, IngestionId, InstallId, MessageId, OrgId, SNOWFLAKE_EPOCH_MS,
    ScheduleId, now_ms, now_us,
};
pub use markup::escape_markup;
pub use merge::{WriteMode, apply_diff, apply_diff_in_place, apply_diff_with, apply_write, apply_write_in_place};
pub use oauth::{STATE_TTL_MS, StateSigner};
pub use payload::{
    MAX_DEPTH, PayloadError, check_object, check_payload, check_value, is_valid_key, kind_of, parse_object,
    serialized_len,
};
pub use schedule::{ScheduleError, ScheduleExpr};
pub use strict_json::{StrictJsonError, parse_strict};

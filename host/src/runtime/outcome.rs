//! What an invocation did: a classified outcome plus effects, logs, fuel and
//! duration. Never a bare string.

use std::time::Duration;

use serde::Serialize;

use crate::caps::{Effects, LogBuffer};
use crate::model::Hook;

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The handler returned `ok`; the effects are to be committed.
    Ok,
    /// The app has no handler for this event; nothing was instantiated.
    Skipped {
        /// The hook it lacks.
        hook: Hook,
    },
    /// The guest asked for a retry (transient failure).
    Retry {
        /// The guest's reason.
        reason: String,
    },
    /// The guest gave up (permanent failure).
    Fail {
        /// The guest's reason.
        reason: String,
    },
    /// The wall-clock budget ran out (epoch deadline or the host timeout).
    Timeout {
        /// The budget.
        #[serde(with = "millis")]
        limit: Duration,
    },
    /// The deterministic CPU budget ran out.
    FuelExhausted {
        /// The budget.
        fuel: u64,
    },
    /// A memory grow past the budget was refused and the guest died of it.
    MemoryLimit {
        /// Bytes the guest tried to reach, summed over its memories.
        requested: usize,
        /// The budget.
        limit: usize,
    },
    /// The guest trapped (panic, stack overflow, bad memory access, ...).
    Trap {
        /// wasmtime's trap code, snake case (`unreachable_code_reached`, ...).
        code: String,
        /// The panic message from stderr, when the trap was a Rust panic.
        message: Option<String>,
        /// Guest frames, innermost first.
        backtrace: Vec<String>,
    },
    /// The guest's output broke the contract (a lifting error, an export
    /// missing, ...).
    InvalidOutput {
        /// What was wrong.
        reason: String,
    },
    /// The host could not run the guest (instantiation failed for lack of
    /// resources). Not the guest's fault; safe to retry.
    HostError {
        /// What failed.
        reason: String,
    },
}

impl Outcome {
    /// Whether the effects are to be committed.
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok | Outcome::Skipped { .. })
    }

    /// Whether a later attempt may succeed. Guest `fail` and deterministic
    /// contract breaches are permanent; everything else is worth a retry.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Outcome::Retry { .. }
                | Outcome::Timeout { .. }
                | Outcome::FuelExhausted { .. }
                | Outcome::MemoryLimit { .. }
                | Outcome::Trap { .. }
                | Outcome::HostError { .. }
        )
    }

    /// A short status word: `success`, `skipped` or `error` (Doover's
    /// invocation summary statuses).
    pub fn summary_status(&self) -> &'static str {
        match self {
            Outcome::Ok => "success",
            Outcome::Skipped { .. } => "skipped",
            _ => "error",
        }
    }
}

/// Everything one invocation produced.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// What it wrote; empty unless the outcome is `ok`.
    pub effects: Effects,
    /// What it logged (log calls, then stdout, then stderr).
    pub logs: LogBuffer,
    /// Fuel consumed (instantiation included); the billing unit.
    pub fuel_consumed: u64,
    /// Wall-clock time from store creation to the end of the call.
    #[serde(with = "millis")]
    pub duration: Duration,
    /// Peak linear memory, bytes.
    pub memory_peak: usize,
}

mod millis {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64() * 1000.0)
    }
}

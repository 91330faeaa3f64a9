//! Errors: what a capability call can return, and what a hook returns.

use std::fmt;

use crate::bindings::exports::paddock::app::handler::AppError as WitAppError;
use crate::bindings::paddock::app::types::Error as WitError;

/// Why a capability call was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The installation may not touch this (another tenant's agent, the
    /// invoking channel, a host-owned channel).
    Denied(String),
    /// The request was malformed (bad key, bad JSON, bad severity).
    Invalid(String),
    /// The target does not exist.
    NotFound(String),
    /// A per-invocation cap (count or bytes) would be exceeded.
    Limit(String),
    /// A value could not be converted to or from JSON in the guest.
    Json(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Denied(m) => write!(f, "denied: {m}"),
            Error::Invalid(m) => write!(f, "invalid: {m}"),
            Error::NotFound(m) => write!(f, "not found: {m}"),
            Error::Limit(m) => write!(f, "limit: {m}"),
            Error::Json(m) => write!(f, "json: {m}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<WitError> for Error {
    fn from(e: WitError) -> Self {
        match e {
            WitError::Denied(m) => Error::Denied(m),
            WitError::Invalid(m) => Error::Invalid(m),
            WitError::NotFound(m) => Error::NotFound(m),
            WitError::Limit(m) => Error::Limit(m),
        }
    }
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Error::Json(e.to_string())
    }
}

/// How a hook that did not succeed should be treated. Either way, nothing
/// the invocation wrote is committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AppError {
    /// Transient: retry the event later with backoff.
    Retry(String),
    /// Permanent: dead-letter the event without retrying.
    Fail(String),
}

impl AppError {
    /// A transient failure.
    pub fn retry(reason: impl Into<String>) -> Self {
        AppError::Retry(reason.into())
    }

    /// A permanent failure.
    pub fn fail(reason: impl Into<String>) -> Self {
        AppError::Fail(reason.into())
    }
}

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AppError::Retry(m) => write!(f, "retry: {m}"),
            AppError::Fail(m) => write!(f, "fail: {m}"),
        }
    }
}

/// A refused capability call fails the event: retrying would be refused again.
impl From<Error> for AppError {
    fn from(e: Error) -> Self {
        AppError::Fail(e.to_string())
    }
}

impl From<serde_json::Error> for AppError {
    fn from(e: serde_json::Error) -> Self {
        AppError::Fail(format!("json: {e}"))
    }
}

impl From<AppError> for WitAppError {
    fn from(e: AppError) -> Self {
        match e {
            AppError::Retry(m) => WitAppError::Retry(m),
            AppError::Fail(m) => WitAppError::Fail(m),
        }
    }
}

//! Bearer tokens: an operator token and per-organisation API tokens, all
//! stored as SHA-256 hashes of their secrets.

use super::{ApiError, Request};
use crate::model::OrgId;
use crate::store::Store;
use crate::tenants::hash_secret;

/// Who is calling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Principal {
    /// The operator: every organisation.
    Operator,
    /// One organisation's token.
    Org(OrgId),
}

impl Principal {
    /// Whether it may act in `org`.
    pub fn may(self, org: OrgId) -> bool {
        match self {
            Principal::Operator => true,
            Principal::Org(o) => o == org,
        }
    }

    /// Its organisation (`None` for the operator).
    pub fn org(self) -> Option<OrgId> {
        match self {
            Principal::Operator => None,
            Principal::Org(o) => Some(o),
        }
    }
}

/// The bearer token of a request, if any.
pub fn bearer(req: &Request) -> Option<&str> {
    let h = req.header("authorization")?;
    let (scheme, token) = h.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// Who the request's bearer token belongs to: 401 without a valid one.
pub fn authenticate(store: &Store, req: &Request) -> Result<Principal, ApiError> {
    let token = bearer(req).ok_or_else(|| ApiError::unauthorized("missing bearer token"))?;
    let rec = store.token(&hash_secret(token))?.ok_or_else(|| ApiError::unauthorized("invalid or revoked token"))?;
    Ok(rec.organisation_id.map_or(Principal::Operator, Principal::Org))
}

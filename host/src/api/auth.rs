//! Bearer tokens: an operator token and per-organisation API tokens, all
//! stored as SHA-256 hashes of their secrets.

use base64::Engine as _;
use sha2::{Digest, Sha256};

use super::{ApiError, Request};
use crate::model::OrgId;
use crate::store::Store;

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

/// A new random secret with `prefix` (e.g. `pdk_`): 32 bytes from the OS
/// generator, base64url.
pub fn new_secret(prefix: &str) -> Result<Secret, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(&e))?;
    Ok(Secret(format!("{prefix}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))))
}

/// A mini-token: 10 characters from a 62-letter alphabet (~59 bits),
/// short enough for a URL typed into a constrained device.
pub fn new_mini_token() -> Result<Secret, ApiError> {
    const ALPHABET: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    let mut bytes = [0u8; 10];
    getrandom::fill(&mut bytes).map_err(|e| ApiError::internal(&e))?;
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
}

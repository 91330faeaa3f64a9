//! OAuth2 `state` tokens: host-signed, naming an installation, expiring.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::InstallId;

/// How long a `state` stays valid.
pub const STATE_TTL_MS: u64 = 60 * 60 * 1000;

/// Signs and checks `state` tokens with a host secret.
pub struct StateSigner {
    key: Vec<u8>,
}

impl StateSigner {
    /// A signer with `key` (keep it secret and stable across restarts, or
    /// outstanding authorizations fail).
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// The secret key (the console signs its session cookies with it too,
    /// in its own domain).
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    fn mac(&self, payload: &[u8]) -> Vec<u8> {
        // HMAC accepts keys of any length; an empty signature never verifies.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(&self.key) else { return Vec::new() };
        mac.update(payload);
        mac.finalize().into_bytes().to_vec()
    }

    /// A `state` for `install`, valid until `expires_ms`.
    pub fn sign(&self, install: InstallId, expires_ms: u64) -> String {
        let mut payload = install.get().to_be_bytes().to_vec();
        payload.extend_from_slice(&expires_ms.to_be_bytes());
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        format!("{}.{}", b64.encode(&payload), b64.encode(self.mac(&payload)))
    }

    /// The installation a `state` names, if its signature holds and it has
    /// not expired.
    pub fn verify(&self, state: &str, now_ms: u64) -> Result<InstallId, &'static str> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (payload, sig) = state.split_once('.').ok_or("malformed state")?;
        let payload = b64.decode(payload).map_err(|_| "malformed state")?;
        let sig = b64.decode(sig).map_err(|_| "malformed state")?;
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).map_err(|_| "bad key")?;
        mac.update(&payload);
        mac.verify_slice(&sig).map_err(|_| "state signature does not match")?;
        let (install, expires) = payload.split_at_checked(8).ok_or("malformed state")?;
        let install = u64::from_be_bytes(install.try_into().map_err(|_| "malformed state")?);
        let expires = u64::from_be_bytes(expires.try_into().map_err(|_| "malformed state")?);
        if expires < now_ms {
            return Err("state expired");
        }
        Ok(InstallId::from(install))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_verify_only_unaltered_unexpired_and_with_the_same_key() {
        let s = StateSigner::new(b"k1".to_vec());
        let state = s.sign(InstallId::from(42), 1_000);
        assert_eq!(s.verify(&state, 999), Ok(InstallId::from(42)));
        assert_eq!(s.verify(&state, 1_001), Err("state expired"));
        assert!(StateSigner::new(b"k2".to_vec()).verify(&state, 0).is_err());
        let forged = s.sign(InstallId::from(43), 1_000);
        let (payload, _) = forged.split_once('.').unwrap();
        let (_, sig) = state.split_once('.').unwrap();
        assert_eq!(s.verify(&format!("{payload}.{sig}"), 0), Err("state signature does not match"));
        assert!(s.verify("garbage", 0).is_err());
    }
}

//! Console sessions: a signed cookie naming the API token the person
//! signed in with. It is checked on every request against the store, so a
//! revoked token ends its sessions at once; nothing is kept in memory, so
//! sessions survive a restart. The CSRF token is derived from the cookie:
//! every form carries it and every POST must match it.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq as _;

use crate::model::{OrgId, now_ms};
use crate::store::Store;

/// The cookie's name.
pub const COOKIE: &str = "paddock_session";
/// How long a session lasts.
pub const LIFETIME_MS: u64 = 12 * 3600 * 1000;

/// A signed-in person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The organisation the token belongs to; `None` for the operator,
    /// who may open any organisation.
    pub org: Option<OrgId>,
    /// The token's public id.
    pub token_id: String,
    /// The token's name (shown in the header).
    pub token_name: String,
    /// The cookie value (the CSRF token derives from it).
    cookie: String,
}

impl Session {
    /// Whether this session may see `org`.
    pub fn may(&self, org: OrgId) -> bool {
        self.org.is_none_or(|o| o == org)
    }

    /// The CSRF token every form of this session carries.
    pub fn csrf(&self, key: &[u8]) -> String {
        hex::encode(&mac(key, &format!("csrf\0{}", self.cookie))[..16])
    }

    /// Whether `token` is this session's CSRF token (constant time).
    pub fn csrf_ok(&self, key: &[u8], token: &str) -> bool {
        bool::from(self.csrf(key).as_bytes().ct_eq(token.as_bytes()))
    }
}

fn mac(key: &[u8], payload: &str) -> Vec<u8> {
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else { return Vec::new() };
    mac.update(b"paddock-console\0");
    mac.update(payload.as_bytes());
    mac.finalize().into_bytes().to_vec()
}

/// The `Set-Cookie` value of a new session for the token `token_id` of
/// `org` (`None`: the operator). `secure` when the console is served over
/// TLS.
pub fn start(key: &[u8], org: Option<OrgId>, token_id: &str, secure: bool) -> String {
    let expires = now_ms() + LIFETIME_MS;
    let org = org.map_or_else(|| "op".to_owned(), |o| o.to_string());
    let payload = format!("{}.{expires}.{org}", hex::encode(token_id));
    let value = format!("{payload}.{}", hex::encode(mac(key, &payload)));
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}", LIFETIME_MS / 1000)
}

/// A `Set-Cookie` that ends the session.
pub fn end(secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}")
}

/// The session of a request's `Cookie` header, if it holds a valid,
/// unexpired one whose token still exists.
pub fn from_cookies(key: &[u8], store: &Store, header: Option<&str>) -> Option<Session> {
    let value = header?.split(';').map(str::trim).find_map(|c| c.strip_prefix(COOKIE)?.strip_prefix('='))?;
    let (payload, sig) = value.rsplit_once('.')?;
    let expected = hex::encode(mac(key, payload));
    if !bool::from(expected.as_bytes().ct_eq(sig.as_bytes())) {
        return None;
    }
    let mut parts = payload.split('.');
    let token_id = String::from_utf8(hex::decode(parts.next()?).ok()?).ok()?;
    let expires: u64 = parts.next()?.parse().ok()?;
    let org = match parts.next()? {
        "op" => None,
        id => Some(id.parse::<OrgId>().ok()?),
    };
    if expires < now_ms() {
        return None;
    }
    let token = store.tokens(org).ok()?.into_iter().find(|t| t.id == token_id && t.organisation_id == org)?;
    Some(Session { org, token_id, token_name: token.name, cookie: value.to_owned() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cookie_value(set_cookie: &str) -> String {
        set_cookie.split(';').next().unwrap().to_owned()
    }

    #[test]
    fn a_session_needs_a_valid_signature_an_existing_token_and_time_left() {
        let store = Store::temporary().unwrap();
        let org = OrgId::from(5);
        crate::tenants::add_token(&store, Some(org), "t1".into(), "alice", "pdk_secret").unwrap();
        let key = b"0123456789abcdef";
        let set = start(key, Some(org), "t1", false);
        assert!(set.contains("HttpOnly") && set.contains("SameSite=Strict") && !set.contains("Secure"));
        assert!(start(key, Some(org), "t1", true).ends_with("; Secure"));
        let header = cookie_value(&set);
        let s = from_cookies(key, &store, Some(&header)).unwrap();
        assert_eq!((s.org, s.token_id.as_str(), s.token_name.as_str()), (Some(org), "t1", "alice"));
        assert!(s.may(org) && !s.may(OrgId::from(6)));
        // Tampered, signed with another key, or another organisation named.
        assert!(from_cookies(key, &store, Some(&header.replace(".5.", ".6."))).is_none());
        assert!(from_cookies(b"another key.....", &store, Some(&header)).is_none());
        // CSRF: derived from the session, compared whole.
        let csrf = s.csrf(key);
        assert!(s.csrf_ok(key, &csrf) && !s.csrf_ok(key, "") && !s.csrf_ok(key, &csrf[..31]));
        // A revoked token ends the session.
        store.revoke_token(Some(org), "t1").unwrap();
        assert!(from_cookies(key, &store, Some(&header)).is_none());
    }
}

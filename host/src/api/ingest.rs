//! `POST /v1/ingest/{id}`: an external system posts an event for an
//! integration. Checks run in DESIGN.md §6's order, before anything is
//! stored: size (413), token (401), CIDR allow-list (403), signature (401),
//! throttle (429). Then the durable write, then 202 with the event id.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use hmac::{Hmac, Mac};
use hyper::StatusCode;
use ipnet::IpNet;
use serde_json::json;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::auth::bearer;
use super::{Api, ApiError, Reply, Request};
use crate::engine::EngineError;
use crate::model::{IngestionId, now_ms};
use crate::store::{Claim, IngestionRecord, StoreError};
use crate::tenants::{hash_secret, standard_webhook_key};

/// Standard Webhooks timestamp tolerance, seconds.
pub const WEBHOOK_TOLERANCE_S: u64 = 5 * 60;
/// Header carrying the HMAC-SHA256 of the raw body.
pub const HMAC_HEADER: &str = "x-hmac-sha256";

/// Token buckets, one per endpoint, created on first use.
#[derive(Default)]
pub struct Throttle {
    buckets: Mutex<HashMap<IngestionId, (u32, Arc<DefaultDirectRateLimiter>)>>,
}

impl Throttle {
    /// Take a token for `id` (at `rate`/s, burst `rate`), or the seconds to
    /// wait for one. The caller caps `rate`.
    pub fn check(&self, id: IngestionId, rate: u32) -> Result<(), u64> {
        let limiter = {
            let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
            let entry = buckets.entry(id).or_insert_with(|| (rate, Arc::new(limiter(rate))));
            if entry.0 != rate {
                *entry = (rate, Arc::new(limiter(rate)));
            }
            Arc::clone(&entry.1)
        };
        limiter.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            wait.as_secs() + u64::from(wait.subsec_nanos() > 0)
        })
    }
}

fn limiter(rate: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(rate.max(1)).unwrap_or(NonZeroU32::MIN);
    RateLimiter::direct(Quota::per_second(rate))
}

/// The endpoint a request posts to, checked from the head alone: it
/// exists (404), the declared body fits its limit (413), the token is its
/// own (401). Only then is the body read, with the endpoint's limit.
pub fn admit(api: &Api, req: &Request) -> Result<IngestionRecord, ApiError> {
    let id: IngestionId = req.param("ingestion")?;
    let rec =
        api.engine.store().ingestion(id)?.ok_or_else(|| ApiError::not_found(format!("no ingestion endpoint {id}")))?;
    let declared = req.header("content-length").and_then(|v| v.parse::<u64>().ok());
    if let Some(n) = declared.filter(|&n| n > rec.max_body_bytes as u64) {
        return Err(too_large(n, rec.max_body_bytes));
    }
    check_token(&rec, req)?;
    Ok(rec)
}

fn too_large(n: u64, limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("body of {n} bytes exceeds this endpoint's {limit} bytes"),
    )
}

/// Handle an ingestion request admitted by [`admit`] (its body read).
pub async fn ingest(api: &Api, req: &Request, rec: IngestionRecord) -> Result<Reply, ApiError> {
    let id = rec.id;
    let store = api.engine.store();
    check_peer(&rec, req.client_ip(&api.config.trusted_proxies))?;
    let webhook_id = check_signature(&rec, req, now_ms() / 1000)?;
    // A Standard Webhooks id counts as seen only in the durable write that
    // enqueues its event (the claim below): a request turned away here, by
    // the throttle, a busy queue or a failed write, leaves it unseen, so
    // the sender's retry is accepted. This read only answers a replay of an
    // accepted id early.
    let scope = format!("wh{id}");
    let duplicate = |wid: &str| Reply::json(StatusCode::OK, json!({ "duplicate": true, "webhook_id": wid }));
    if let Some(wid) = &webhook_id
        && store.is_claimed(&scope, wid, now_ms())?
    {
        // The claim read may not be durable yet (its flush is under way):
        // a flush covers it before the sender is told it was delivered.
        store.flush().await?;
        return Ok(duplicate(wid));
    }
    if let Err(wait) = api.throttle.check(id, rec.rate_per_s.min(api.config.max_ingest_rate)) {
        return Err(ApiError {
            retry_after: Some(wait.max(1)),
            ..ApiError::new(StatusCode::TOO_MANY_REQUESTS, "throttled", format!("over {}/s", rec.rate_per_s))
        });
    }
    let content_type = req.header("content-type").unwrap_or("application/octet-stream").to_owned();
    let url = format!("{}{}", api.config.public_url, req.path);
    // Held for twice the timestamp tolerance: an id older than that is
    // refused by the timestamp check anyway.
    let claim = webhook_id.as_ref().map(|wid| Claim {
        scope,
        key: wid.clone(),
        expires_ms: now_ms() + 2 * WEBHOOK_TOLERANCE_S * 1000,
    });
    let event = match api.engine.ingest(rec.install_id, id, req.body.to_vec(), content_type, url, claim).await {
        Err(EngineError::Store(StoreError::Duplicate { key })) => return Ok(duplicate(&key)),
        other => other?,
    };
    Ok(Reply::json(StatusCode::ACCEPTED, json!({ "event_id": event.to_string() })))
}

/// 401 unless the request carries the endpoint's token or mini-token
/// (`Authorization: Bearer`, or `?token=` for devices that cannot set
/// headers).
fn check_token(rec: &IngestionRecord, req: &Request) -> Result<(), ApiError> {
    let given = bearer(req).or_else(|| req.query.get("token").map(String::as_str));
    let Some(given) = given else { return Err(ApiError::unauthorized("missing token")) };
    let hash = hex::encode(hash_secret(given));
    let ok = bool::from(hash.as_bytes().ct_eq(rec.token_sha256.as_bytes()))
        || rec.mini_token_sha256.as_ref().is_some_and(|m| bool::from(hash.as_bytes().ct_eq(m.as_bytes())));
    if ok { Ok(()) } else { Err(ApiError::unauthorized("invalid token")) }
}

/// 403 unless the client address is in the allow-list (if there is one).
fn check_peer(rec: &IngestionRecord, ip: IpAddr) -> Result<(), ApiError> {
    if rec.allow_cidrs.is_empty() {
        return Ok(());
    }
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    let allowed = rec.allow_cidrs.iter().filter_map(|c| c.parse::<IpNet>().ok()).any(|n| n.contains(&ip));
    if allowed { Ok(()) } else { Err(ApiError::forbidden(format!("address {ip} is not allowed"))) }
}

/// 401 unless the configured signatures verify. Returns the Standard
/// Webhooks message id when that scheme is in use (for de-duplication).
fn check_signature(rec: &IngestionRecord, req: &Request, now_s: u64) -> Result<Option<String>, ApiError> {
    if let Some(secret) = &rec.hmac_secret {
        let given = req.header(HMAC_HEADER).ok_or_else(|| ApiError::unauthorized(format!("missing {HMAC_HEADER}")))?;
        let digest =
            decode_digest(given).ok_or_else(|| ApiError::unauthorized("signature is neither hex nor base64"))?;
        let mut mac = mac(secret.as_bytes())?;
        mac.update(&req.body);
        mac.verify_slice(&digest).map_err(|_| ApiError::unauthorized("signature does not match the body"))?;
    }
    let Some(secret) = &rec.webhook_secret else { return Ok(None) };
    let missing = |h: &str| ApiError::unauthorized(format!("missing {h}"));
    let id = req.header("webhook-id").ok_or_else(|| missing("webhook-id"))?;
    let ts = req.header("webhook-timestamp").ok_or_else(|| missing("webhook-timestamp"))?;
    let sigs = req.header("webhook-signature").ok_or_else(|| missing("webhook-signature"))?;
    let ts_s: u64 = ts.parse().map_err(|_| ApiError::unauthorized("webhook-timestamp is not a number"))?;
    if ts_s.abs_diff(now_s) > WEBHOOK_TOLERANCE_S {
        return Err(ApiError::unauthorized("webhook-timestamp is outside the 5-minute tolerance"));
    }
    let key = standard_webhook_key(secret).ok_or_else(|| ApiError::internal(&"stored webhook secret is not base64"))?;
    let mut mac = mac(&key)?;
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(&req.body);
    let expected = mac.finalize().into_bytes();
    let matched = sigs.split(' ').filter_map(|s| s.strip_prefix("v1,")).any(|s| {
        base64::engine::general_purpose::STANDARD.decode(s).is_ok_and(|d| bool::from(d.as_slice().ct_eq(&expected)))
    });
    if matched { Ok(Some(id.to_owned())) } else { Err(ApiError::unauthorized("no webhook-signature matches")) }
}

fn mac(key: &[u8]) -> Result<Hmac<Sha256>, ApiError> {
    Hmac::<Sha256>::new_from_slice(key).map_err(|e| ApiError::internal(&e))
}

/// A SHA-256 digest given as hex (64 chars) or base64 (standard or url-safe).
fn decode_digest(s: &str) -> Option<Vec<u8>> {
    let s = s.trim().strip_prefix("sha256=").unwrap_or(s.trim());
    if s.len() == 64
        && let Ok(d) = hex::decode(s)
    {
        return Some(d);
    }
    let b64 = [&base64::engine::general_purpose::STANDARD, &base64::engine::general_purpose::URL_SAFE];
    b64.iter()
        .find_map(|e| e.decode(s).ok())
        .or_else(|| base64::engine::general_purpose::STANDARD_NO_PAD.decode(s.trim_end_matches('=')).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_rate_then_says_how_long_to_wait() {
        let t = Throttle::default();
        let id = IngestionId::from(1);
        for _ in 0..10 {
            t.check(id, 10).unwrap();
        }
        assert_eq!(t.check(id, 10).unwrap_err(), 1);
        assert!(t.check(IngestionId::from(2), 10).is_ok(), "buckets are per endpoint");
    }

    /// Signature headers and secrets as senders write them: any text
    /// decodes to a digest or to nothing, never a panic.
    #[test]
    fn fuzz_ingestion_signature_parsing() {
        let tokens = crate::fuzz::text(&["sha256=", "v1,", " ", "=", "whsec_", "AAAA", "0123456789abcdef", "+/", "-_"]);
        crate::fuzz::fuzz("ingestion signatures", tokens, |t| {
            let hex_digest = t.trim().strip_prefix("sha256=").unwrap_or(t.trim());
            if let (Some(d), true) = (decode_digest(&t), hex_digest.len() == 64 && hex::decode(hex_digest).is_ok()) {
                proptest::prop_assert_eq!(d.len(), 32, "64 hex digits are a SHA-256");
            }
            let _ = standard_webhook_key(&t);
            Ok(())
        });
    }

    #[test]
    fn digests_decode_from_hex_and_base64() {
        let d = [7u8; 32];
        assert_eq!(decode_digest(&hex::encode(d)).unwrap(), d);
        assert_eq!(decode_digest(&base64::engine::general_purpose::STANDARD.encode(d)).unwrap(), d);
        assert_eq!(decode_digest(&format!("sha256={}", hex::encode(d))).unwrap(), d);
        assert!(decode_digest("not a digest!").is_none());
    }
}

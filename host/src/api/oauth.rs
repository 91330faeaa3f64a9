//! OAuth2 pass-through (Polyglot's flow): the app puts a host-signed
//! `state` naming its installation into its authorize URL; the provider
//! redirects the user to `GET /v1/oauth/callback?code&state`; the host
//! checks the signature and delivers the code as `on_oauth_callback`,
//! once: the same code again (the user reloading the page the provider
//! sent them to) is answered without a second delivery, since a provider's
//! code can be exchanged only once and a second exchange would fail.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Api, ApiError, Reply, Request};
use crate::engine::EngineError;
use crate::model::{Event, InstallId, STATE_TTL_MS, now_ms};
use crate::store::{Claim, StoreError};

/// `GET .../installations/{install}/oauth-state`: what the app (or its UI)
/// puts in the provider's authorize URL.
pub fn state_for(api: &Api, install: InstallId) -> Reply {
    let expires = now_ms() + STATE_TTL_MS;
    Reply::ok(json!({
        "state": api.signer.sign(install, expires),
        "redirect_uri": super::Api::oauth_redirect_uri(&api.config.public_url),
        "expires_ms": expires,
    }))
}

/// `GET /v1/oauth/callback?code&state`.
pub async fn callback(api: &Api, req: &Request) -> Result<Reply, ApiError> {
    let state = req.query.get("state").ok_or_else(|| ApiError::bad_request("missing_state", "missing state"))?;
    if let Some(error) = req.query.get("error") {
        return Err(ApiError::bad_request("oauth_error", format!("the provider answered: {error}")));
    }
    let code = req.query.get("code").ok_or_else(|| ApiError::bad_request("missing_code", "missing code"))?;
    let install = api.signer.verify(state, now_ms()).map_err(ApiError::unauthorized)?;
    let params: BTreeMap<String, String> =
        req.query.iter().filter(|(k, _)| *k != "code" && *k != "state").map(|(k, v)| (k.clone(), v.clone())).collect();
    let event = Event::OauthCallback { code: code.clone(), state: state.clone(), params };
    // The code is claimed with its event, in one durable write, for as
    // long as any state is valid (its hash: the code is a credential).
    let claim = Claim {
        scope: format!("oa{install}"),
        key: hex::encode(crate::tenants::hash_secret(code)),
        expires_ms: now_ms() + STATE_TTL_MS,
    };
    let id = match api.engine.deliver_once(install, event, Some(claim)).await {
        Err(EngineError::Store(StoreError::Duplicate { .. })) => {
            return Ok(Reply::ok(
                json!({ "duplicate": true, "message": "Already authorized. You can close this window." }),
            ));
        }
        delivered => delivered?,
    };
    Ok(Reply::ok(json!({ "event_id": id.to_string(), "message": "Authorized. You can close this window." })))
}

//! OAuth2 pass-through (Polyglot's flow): the app puts a host-signed
//! `state` naming its installation into its authorize URL; the provider
//! redirects the user to `GET /v1/oauth/callback?code&state`; the host
//! checks the signature and delivers the code as `on_oauth_callback`.

use std::collections::BTreeMap;

use serde_json::json;

use super::{Api, ApiError, Reply, Request};
use crate::model::{Event, InstallId, STATE_TTL_MS, now_ms};

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
    let id = api.engine.deliver(install, event).await?;
    Ok(Reply::ok(json!({ "event_id": id.to_string(), "message": "Authorized. You can close this window." })))
}

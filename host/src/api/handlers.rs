//! Handlers: one per [`Op`], each checking the caller's scope first.

use std::collections::BTreeMap;

use hyper::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::auth::{Principal, authenticate};
use super::routes::{Access, Op, openapi};
use super::{Api, ApiError, Reply, Request, devicecloud, ingest, monitors, oauth};
use crate::engine::{Gauges, new_record};
use crate::model::{
    Agent, AgentId, ChannelName, ChannelRef, EventId, IngestionId, InstallId, MessageId, OrgId, WriteMode,
};
use crate::store::{IngestionRecord, InstallRecord, OrgRecord};
use crate::tenants;

/// Most items a list returns.
const MAX_LIMIT: usize = 1000;
const DEFAULT_LIMIT: usize = 50;

/// What [`admit`] decided from a request's head.
pub struct Admitted {
    /// The caller, for routes that take a token.
    principal: Option<Principal>,
    /// The ingestion endpoint posted to, for `POST /v1/ingest/{id}`.
    endpoint: Option<IngestionRecord>,
    /// Largest body to read (0: read none).
    pub body_limit: usize,
}

/// Authenticate and authorise `req` for its route from its head alone
/// (the body is not read yet).
pub fn admit(api: &Api, req: &Request) -> Result<Admitted, ApiError> {
    let store = api.engine.store();
    let principal = match req.route.access {
        Access::Public | Access::Endpoint => None,
        Access::Operator => match authenticate(store, req)? {
            Principal::Operator => Some(Principal::Operator),
            Principal::Org(_) => return Err(ApiError::forbidden("this needs the operator token")),
        },
        Access::AnyToken => Some(authenticate(store, req)?),
        Access::Tenant => {
            let p = authenticate(store, req)?;
            let org: OrgId = req.param("org")?;
            if !p.may(org) {
                return Err(ApiError::forbidden("this token belongs to another organisation"));
            }
            if store.org(org)?.is_none() {
                return Err(ApiError::not_found(format!("no organisation {org}")));
            }
            Some(p)
        }
        Access::DeviceCloud => Some(Principal::Org(super::devicecloud::authenticate(api, req)?)),
    };
    let mut body_limit = req.route.body_limit(&api.config);
    let endpoint = if req.route.op == Op::Ingest {
        let rec = ingest::admit(api, req)?;
        body_limit = rec.max_body_bytes;
        Some(rec)
    } else {
        None
    };
    Ok(Admitted { principal, endpoint, body_limit })
}

/// Run the handler of an admitted request.
pub async fn dispatch(api: &Api, req: &Request, admitted: Admitted) -> Result<Reply, ApiError> {
    let store = api.engine.store();
    let principal = admitted.principal;
    let org = || req.param::<OrgId>("org");
    match req.route.op {
        Op::Health => health(api),
        Op::Metrics => metrics(api),
        Op::OpenApi => Ok(Reply::ok(openapi())),
        Op::ListOrgs => {
            let scope = principal.and_then(Principal::org);
            let orgs: Vec<OrgRecord> = store.orgs()?.into_iter().filter(|o| scope.is_none_or(|s| s == o.id)).collect();
            Ok(Reply::ok(json!({ "organisations": orgs })))
        }
        Op::CreateOrg => create_org(api, req).await,
        Op::GetOrg => Ok(Reply::ok(store.org(org()?)?)),
        Op::ListTokens => Ok(Reply::ok(json!({ "tokens": store.tokens(Some(org()?))? }))),
        Op::CreateToken => create_token(api, req, org()?).await,
        Op::RevokeToken => {
            let (org, id) = (org()?, req.params.get("token").cloned().unwrap_or_default());
            let token = id.clone();
            if !api.engine.administer(org, move |store| Ok(store.revoke_token(Some(org), &token)?)).await? {
                return Err(not_found("token", &id));
            }
            Ok(Reply::no_content())
        }
        Op::ListAgents => {
            let limit = limit(req)?;
            Ok(Reply::ok(json!({ "agents": store.list_agents(org()?, limit)? })))
        }
        Op::CreateAgent => create_agent(api, req, org()?).await,
        Op::GetAgent => Ok(Reply::ok(agent(api, req)?)),
        Op::ListChannels => {
            let a = agent(api, req)?;
            Ok(Reply::ok(json!({ "channels": store.list_channels(a.id)? })))
        }
        Op::ListMessages => {
            let ch = channel(api, req)?;
            let before = req.query::<MessageId>("before")?;
            Ok(Reply::ok(json!({ "messages": store.list_messages(&ch, before, limit(req)?)? })))
        }
        Op::CreateMessage => {
            let ch = channel(api, req)?;
            let data: Value = req.json()?;
            let author = ch.agent_id;
            let id = api.engine.publish_message(ch, author, data).await?;
            Ok(Reply::json(StatusCode::CREATED, json!({ "message_id": id.to_string() })))
        }
        Op::GetMessage => {
            let ch = channel(api, req)?;
            let id: MessageId = req.param("message")?;
            let m = store.get_message(&ch, id)?.ok_or_else(|| not_found("message", &id))?;
            Ok(Reply::ok(m))
        }
        Op::GetAggregate => {
            let ch = channel(api, req)?;
            let agg = store.get_aggregate(&ch)?.ok_or_else(|| not_found("aggregate on channel", &ch.name))?;
            Ok(Reply::ok(agg))
        }
        Op::PatchAggregate | Op::PutAggregate => {
            let ch = channel(api, req)?;
            let data: Value = req.json()?;
            let mode = match (req.route.op, req.query.get("replace_paths")) {
                (Op::PutAggregate, _) => WriteMode::Replace,
                (_, Some(paths)) => WriteMode::ReplacePaths(paths.split(',').map(str::to_owned).collect()),
                _ => WriteMode::Merge,
            };
            Ok(Reply::ok(api.engine.write_aggregate(ch, data, mode).await?))
        }
        Op::ListApps => Ok(Reply::ok(json!({ "apps": api.engine.app_statuses() }))),
        Op::UploadApp => upload_app(api, req).await,
        Op::ListInstalls => {
            let org = org()?;
            let list: Vec<InstallRecord> = store.installs()?.into_iter().filter(|r| r.organisation_id == org).collect();
            Ok(Reply::ok(json!({ "installations": list })))
        }
        Op::CreateInstall => create_install(api, req, org()?).await,
        Op::GetInstall => Ok(Reply::ok(install(api, req)?)),
        Op::UpdateInstall => update_install(api, req).await,
        Op::DeleteInstall => {
            let rec = install(api, req)?;
            api.engine.delete_installation(rec.id).await?;
            Ok(Reply::no_content())
        }
        Op::Invoke => {
            let rec = install(api, req)?;
            let payload: Value = if req.body.is_empty() { json!({}) } else { req.json()? };
            let id = api.engine.manual_invoke(rec.id, payload).await?;
            Ok(Reply::json(StatusCode::ACCEPTED, json!({ "event_id": id.to_string() })))
        }
        Op::ListInvocations => {
            let rec = install(api, req)?;
            Ok(Reply::ok(json!({ "invocations": store.invocations(rec.id, limit(req)?)? })))
        }
        Op::GetInvocation => {
            let rec = install(api, req)?;
            let event: EventId = req.param("event")?;
            let attempts = store.event_invocations(rec.id, event)?;
            if attempts.is_empty() {
                return Err(not_found("invocation", &event));
            }
            Ok(Reply::ok(json!({ "attempts": attempts })))
        }
        Op::ListDeadLetters => {
            let org = org()?;
            let limit = limit(req)?;
            let mine = store.dead_letters_of(org, limit)?;
            // Queued events this build could not read, set aside (bytes kept).
            let unreadable = store.unreadable_events(org, limit)?;
            Ok(Reply::ok(json!({ "dead_letters": mine, "unreadable": unreadable })))
        }
        Op::RedriveDeadLetter | Op::DeleteDeadLetter => {
            let id: EventId = req.param("event")?;
            let org = org()?;
            if store.dead_letter_of(org, id)?.is_none() {
                return Err(not_found("dead letter", &id));
            }
            if req.route.op == Op::DeleteDeadLetter {
                api.engine.administer(org, move |store| Ok(store.delete_dead_letter(org, id)?)).await?;
                return Ok(Reply::no_content());
            }
            api.engine.redrive(org, id).await?;
            Ok(Reply::json(StatusCode::ACCEPTED, json!({ "event_id": id.to_string() })))
        }
        Op::ListIngestions => {
            let org = org()?;
            let list: Vec<Value> = store
                .ingestions()?
                .into_iter()
                .filter(|r| r.organisation_id == org)
                .map(|r| ingestion_view(api, &r))
                .collect();
            Ok(Reply::ok(json!({ "ingestions": list })))
        }
        Op::CreateIngestion => create_ingestion(api, req, org()?).await,
        Op::DeleteIngestion => {
            let id: IngestionId = req.param("ingestion")?;
            match store.ingestion(id)? {
                Some(r) if r.organisation_id == org()? => {
                    api.engine.administer(r.organisation_id, move |store| Ok(store.delete_ingestion(id)?)).await?;
                    Ok(Reply::no_content())
                }
                _ => Err(not_found("ingestion endpoint", &id)),
            }
        }
        Op::Ingest => match admitted.endpoint {
            Some(rec) => ingest::ingest(api, req, rec).await,
            None => Err(ApiError::internal(&"an ingestion request was not admitted by its endpoint")),
        },
        Op::OauthState => {
            let rec = install(api, req)?;
            Ok(oauth::state_for(api, rec.id))
        }
        Op::OauthCallback => oauth::callback(api, req).await,
        Op::ListMonitors => monitors::list(api.monitors(), org()?),
        Op::CreateMonitor => monitors::create(api.monitors(), req, org()?).await,
        Op::GetMonitor => monitors::get(api.monitors(), req, org()?),
        Op::UpdateMonitor => monitors::update(api.monitors(), req, org()?).await,
        Op::DeleteMonitor => monitors::delete(api.monitors(), req, org()?).await,
        Op::ResetMonitor => monitors::reset(api.monitors(), req, org()?).await,
        Op::MonitorHistory => monitors::history(api.monitors(), req, org()?),
        Op::StreamMonitor => monitors::stream(api.monitors(), req, org()?),
        Op::DcCreateMonitor
        | Op::DcListMonitors
        | Op::DcResetMonitor
        | Op::DcGetMonitor
        | Op::DcUpdateMonitor
        | Op::DcDeleteMonitor
        | Op::DcDeviceCore => {
            let Some(Principal::Org(org)) = principal else {
                return Err(ApiError::internal(&"a Device Cloud request was not admitted with an organisation"));
            };
            match req.route.op {
                Op::DcCreateMonitor => devicecloud::create(api, req, org).await,
                Op::DcListMonitors | Op::DcGetMonitor => devicecloud::list(api, req, org),
                Op::DcResetMonitor | Op::DcUpdateMonitor => devicecloud::update(api, req, org).await,
                Op::DcDeleteMonitor => devicecloud::delete(api, req, org).await,
                _ => devicecloud::device_core(api, req, org),
            }
        }
    }
}

fn not_found(what: &str, id: &dyn std::fmt::Display) -> ApiError {
    ApiError::not_found(format!("no {what} {id}"))
}

fn limit(req: &Request) -> Result<usize, ApiError> {
    Ok(req.query::<usize>("limit")?.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT))
}

/// 200 while the server can accept writes; 503 while the store cannot
/// make them durable (a load balancer should send writes elsewhere).
fn health(api: &Api) -> Result<Reply, ApiError> {
    let apps = api.engine.app_statuses();
    let broken: Vec<&str> = apps.iter().filter(|a| a.status != "ok").map(|a| a.name.as_str()).collect();
    let failure = api.engine.store().write_failure();
    let body = json!({
        "status": if failure.is_none() { "ok" } else { "store_not_writable" },
        "version": env!("CARGO_PKG_VERSION"),
        "store": { "writable": failure.is_none(), "error": failure },
        "apps": apps.len(),
        "apps_not_ok": broken,
        "queue_depth": api.engine.queue_depth(),
    });
    let status = if failure.is_none() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    Ok(Reply::json(status, body))
}

fn metrics(api: &Api) -> Result<Reply, ApiError> {
    let by_org = api.engine.queue_depth_by_org();
    let gauges = Gauges {
        queue_depth: api.engine.queue_depth() as u64,
        dead_letters: api.engine.store().dead_letter_count() as u64,
        unreadable_events: api.engine.store().unreadable_count() as u64,
        queue_by_org: by_org.into_iter().map(|(k, v)| (k, v as u64)).collect(),
    };
    let text = api.engine.metrics().render(&gauges) + &api.monitors().metrics();
    Ok(Reply::text("text/plain; version=0.0.4", text))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewOrg {
    name: String,
}

/// Administrative writes (organisations, tokens, ingestion endpoints) run
/// on the writer ([`Engine::administer`](crate::engine::Engine::administer)):
/// each is answered only once durable.
async fn create_org(api: &Api, req: &Request) -> Result<Reply, ApiError> {
    let body: NewOrg = req.json()?;
    let id = OrgId::generate();
    let rec = api.engine.administer(id, move |store| tenants::provision_org(store, id, &body.name)).await?;
    Ok(Reply::json(StatusCode::CREATED, rec))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewToken {
    name: String,
}

async fn create_token(api: &Api, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let body: NewToken = req.json()?;
    let secret = tenants::new_secret("pdk_")?;
    let id = EventId::generate().to_string();
    let token = secret.0.clone();
    let rec =
        api.engine.administer(org, move |store| tenants::add_token(store, Some(org), id, &body.name, &token)).await?;
    Ok(Reply::json(StatusCode::CREATED, json!({ "id": rec.id, "name": rec.name, "token": secret.0 })))
}

async fn create_agent(api: &Api, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let new: tenants::NewAgent = req.json()?;
    Ok(Reply::json(StatusCode::CREATED, api.engine.add_agent(org, new).await?))
}

/// The agent named in the path, if it belongs to the path's organisation.
fn agent(api: &Api, req: &Request) -> Result<Agent, ApiError> {
    let org: OrgId = req.param("org")?;
    let id: AgentId = req.param("agent")?;
    let view = api.engine.store();
    match view.agent_org(id)? {
        Some(o) if o == org => view.agent(id)?.ok_or_else(|| not_found("agent", &id)),
        _ => Err(not_found("agent", &id)),
    }
}

fn channel(api: &Api, req: &Request) -> Result<ChannelRef, ApiError> {
    let a = agent(api, req)?;
    let raw = req.params.get("channel").cloned().unwrap_or_default();
    let name = ChannelName::new(raw).map_err(|e| ApiError::bad_request("invalid_channel", e.to_string()))?;
    Ok(ChannelRef { agent_id: a.id, name })
}

/// The installation named in the path, if it belongs to the path's organisation.
fn install(api: &Api, req: &Request) -> Result<InstallRecord, ApiError> {
    let org: OrgId = req.param("org")?;
    let id: InstallId = req.param("install")?;
    match api.engine.installation_record(id)? {
        Some(r) if r.organisation_id == org => Ok(r),
        _ => Err(not_found("installation", &id)),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewInstall {
    app: String,
    #[serde(default)]
    agent_id: Option<AgentId>,
    #[serde(default)]
    app_key: Option<String>,
    #[serde(default)]
    display_name: Option<String>,
    #[serde(default)]
    config: Option<Value>,
}

async fn create_install(api: &Api, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let body: NewInstall = req.json()?;
    let org_rec = api.engine.store().org(org)?.ok_or_else(|| not_found("organisation", &org))?;
    let agent = body.agent_id.unwrap_or(org_rec.agent_id);
    let app_key = body.app_key.unwrap_or_else(|| body.app.replace('-', "_"));
    if app_key.is_empty() || !crate::model::is_valid_key(&app_key) {
        return Err(ApiError::bad_request("invalid_app_key", format!("{app_key:?} is not a valid key")));
    }
    let display = body.display_name.unwrap_or_else(|| body.app.clone());
    let rec = new_record(&body.app, org, agent, &app_key, &display, body.config.unwrap_or_else(|| json!({})));
    let deployment = api.engine.put_installation(&rec).await?;
    Ok(Reply::json(
        StatusCode::CREATED,
        json!({ "installation": rec, "deployment_event_id": deployment.map(|e| e.to_string()) }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InstallUpdate {
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    display_name: Option<String>,
}

async fn update_install(api: &Api, req: &Request) -> Result<Reply, ApiError> {
    let mut rec = install(api, req)?;
    let body: InstallUpdate = req.json()?;
    if let Some(c) = body.config {
        rec.config = c;
    }
    if let Some(d) = body.display_name {
        rec.display_name = d;
    }
    let deployment = api.engine.put_installation(&rec).await?;
    Ok(Reply::ok(json!({ "installation": rec, "deployment_event_id": deployment.map(|e| e.to_string()) })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewIngestion {
    install_id: InstallId,
    #[serde(default)]
    allow_cidrs: Vec<String>,
    #[serde(default)]
    hmac_secret: Option<String>,
    #[serde(default)]
    webhook_secret: Option<String>,
    #[serde(default)]
    rate_per_s: Option<u32>,
    #[serde(default)]
    max_body_bytes: Option<usize>,
    #[serde(default)]
    mini_token: bool,
}

async fn create_ingestion(api: &Api, req: &Request, org: OrgId) -> Result<Reply, ApiError> {
    let body: NewIngestion = req.json()?;
    match api.engine.installation_record(body.install_id)? {
        Some(r) if r.organisation_id == org => {}
        _ => return Err(not_found("installation", &body.install_id)),
    }
    let token = tenants::new_secret("pdi_")?;
    let mini = if body.mini_token { Some(tenants::new_mini_token()?) } else { None };
    let settings = tenants::IngestionSettings {
        allow_cidrs: body.allow_cidrs,
        hmac_secret: body.hmac_secret,
        webhook_secret: body.webhook_secret,
        rate_per_s: body.rate_per_s,
        max_body_bytes: body.max_body_bytes,
    };
    let owner = tenants::IngestionOwner {
        id: IngestionId::generate(),
        organisation_id: org,
        install_id: body.install_id,
        token: token.0.clone(),
        mini_token: mini.as_ref().map(|m| m.0.clone()),
    };
    let max_rate = api.config.max_ingest_rate;
    let rec = api.engine.administer(org, move |store| tenants::add_ingestion(store, settings, owner, max_rate)).await?;
    let mut view = ingestion_view(api, &rec);
    view["token"] = json!(token.0);
    if let Some(m) = mini {
        view["mini_token"] = json!(m.0);
        view["mini_url"] = json!(format!("{}/v1/ingest/{}?token={}", api.config.public_url, rec.id, m.0));
    }
    Ok(Reply::json(StatusCode::CREATED, view))
}

/// An ingestion endpoint as shown (no secrets).
fn ingestion_view(api: &Api, r: &IngestionRecord) -> Value {
    json!({
        "id": r.id.to_string(),
        "install_id": r.install_id.to_string(),
        "url": format!("{}/v1/ingest/{}", api.config.public_url, r.id),
        "allow_cidrs": r.allow_cidrs,
        "hmac": r.hmac_secret.is_some(),
        "standard_webhooks": r.webhook_secret.is_some(),
        "mini_token": r.mini_token_sha256.is_some(),
        "rate_per_s": r.rate_per_s,
        "max_body_bytes": r.max_body_bytes,
        "created_ms": r.created_ms,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Upload {
    /// `paddock.toml` text.
    manifest: String,
    /// The component, base64.
    component_base64: String,
}

async fn upload_app(api: &Api, req: &Request) -> Result<Reply, ApiError> {
    let name = req.params.get("app").cloned().unwrap_or_default();
    let Some(dir) = &api.config.plugins_dir else {
        return Err(ApiError::new(StatusCode::CONFLICT, "uploads_disabled", "this server has no plugins directory"));
    };
    let body: Upload = req.json()?;
    use base64::Engine as _;
    let component = base64::engine::general_purpose::STANDARD
        .decode(body.component_base64.trim())
        .map_err(|e| ApiError::bad_request("invalid_component", format!("component_base64: {e}")))?;
    let loaded = crate::plugins::install_upload(api.engine.runtime(), dir, &name, &body.manifest, &component)
        .await
        .map_err(|e| ApiError {
            details: Some(Box::new(json!(e.to_string()))),
            ..ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_app", format!("app {name:?} was not accepted"))
        })?;
    let deployed = api.engine.put_app(loaded).await?;
    let status: BTreeMap<&str, Value> = BTreeMap::from([
        ("name", json!(name)),
        ("deployment_event_ids", json!(deployed.iter().map(ToString::to_string).collect::<Vec<_>>())),
    ]);
    Ok(Reply::ok(status))
}

//! The route table: every endpoint once, with what the OpenAPI document
//! says about it. The router matches against this table and the document
//! is generated from it.

use std::collections::BTreeMap;

use hyper::{Method, StatusCode};
use serde_json::{Map, Value, json};

use super::{ApiConfig, ApiError, MAX_API_BODY};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, the OpenAPI document).
    Public,
    /// The operator token only.
    Operator,
    /// The operator or a token of the organisation named in the path.
    Tenant,
    /// Any valid token; answers are filtered to the caller's scope.
    AnyToken,
    /// Checked by the endpoint itself (ingestion tokens, OAuth state).
    Endpoint,
    /// Device Cloud's: HTTP Basic (organisation id, API token) or a
    /// Bearer organisation token.
    DeviceCloud,
}

/// What a route does: the handler is chosen by this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(missing_docs, reason = "each variant is described by its route's summary")]
pub enum Op {
    Health,
    Metrics,
    OpenApi,
    ListOrgs,
    CreateOrg,
    GetOrg,
    ListTokens,
    CreateToken,
    RevokeToken,
    ListAgents,
    CreateAgent,
    GetAgent,
    ListChannels,
    ListMessages,
    CreateMessage,
    GetMessage,
    GetAggregate,
    PatchAggregate,
    PutAggregate,
    ListApps,
    UploadApp,
    ListInstalls,
    CreateInstall,
    GetInstall,
    UpdateInstall,
    DeleteInstall,
    Invoke,
    ListInvocations,
    GetInvocation,
    ListDeadLetters,
    RedriveDeadLetter,
    DeleteDeadLetter,
    ListIngestions,
    CreateIngestion,
    DeleteIngestion,
    Ingest,
    OauthState,
    OauthCallback,
    ListMonitors,
    CreateMonitor,
    GetMonitor,
    UpdateMonitor,
    DeleteMonitor,
    ResetMonitor,
    MonitorHistory,
    StreamMonitor,
    DcCreateMonitor,
    DcListMonitors,
    DcResetMonitor,
    DcGetMonitor,
    DcUpdateMonitor,
    DcDeleteMonitor,
    DcDeviceCore,
}

/// One endpoint.
#[derive(Debug)]
pub struct Route {
    /// HTTP method.
    pub method: Method,
    /// Path template; `{name}` segments are parameters.
    pub path: &'static str,
    /// The handler.
    pub op: Op,
    /// Who may call it.
    pub access: Access,
    /// One line for the document.
    pub summary: &'static str,
    /// The success status.
    pub status: u16,
}

impl Route {
    /// Largest body this route reads.
    pub fn body_limit(&self, config: &ApiConfig) -> usize {
        if self.method == Method::GET || self.method == Method::DELETE {
            // No route reads a body with these: none is buffered.
            return 0;
        }
        match self.op {
            Op::UploadApp => config.max_upload_bytes,
            // Ingestion endpoints check their own (smaller or equal) limit
            // first; this is the hard ceiling.
            Op::Ingest => crate::caps::MAX_PAYLOAD_BYTES,
            _ => MAX_API_BODY,
        }
    }
}

macro_rules! routes {
    ($( $method:ident $path:literal => $op:ident, $access:ident, $status:literal, $summary:literal; )*) => {
        /// Every endpoint.
        pub static ROUTES: &[Route] = &[
            $( Route { method: Method::$method, path: $path, op: Op::$op, access: Access::$access,
                       summary: $summary, status: $status }, )*
        ];
    };
}

routes! {
    GET "/v1/health" => Health, Public, 200, "Liveness and readiness: store, dispatcher, apps.";
    GET "/metrics" => Metrics, Operator, 200, "Prometheus metrics (text format).";
    GET "/v1/openapi.json" => OpenApi, Public, 200, "This document.";
    GET "/v1/orgs" => ListOrgs, AnyToken, 200, "Organisations visible to the caller.";
    POST "/v1/orgs" => CreateOrg, Operator, 201, "Create an organisation (and its own agent).";
    GET "/v1/orgs/{org}" => GetOrg, Tenant, 200, "One organisation.";
    GET "/v1/orgs/{org}/tokens" => ListTokens, Tenant, 200, "The organisation's API tokens (never their secrets).";
    POST "/v1/orgs/{org}/tokens" => CreateToken, Tenant, 201, "Create an API token; its secret is shown once.";
    DELETE "/v1/orgs/{org}/tokens/{token}" => RevokeToken, Tenant, 204, "Revoke an API token.";
    GET "/v1/orgs/{org}/agents" => ListAgents, Tenant, 200, "The organisation's agents.";
    POST "/v1/orgs/{org}/agents" => CreateAgent, Tenant, 201, "Create an agent (device).";
    GET "/v1/orgs/{org}/agents/{agent}" => GetAgent, Tenant, 200, "One agent.";
    GET "/v1/orgs/{org}/agents/{agent}/channels" => ListChannels, Tenant, 200, "The agent's channel names.";
    GET "/v1/orgs/{org}/agents/{agent}/channels/{channel}/messages" => ListMessages, Tenant, 200, "Messages, newest first (`before`, `limit`).";
    POST "/v1/orgs/{org}/agents/{agent}/channels/{channel}/messages" => CreateMessage, Tenant, 201, "Publish a message; subscribed processors run.";
    GET "/v1/orgs/{org}/agents/{agent}/channels/{channel}/messages/{message}" => GetMessage, Tenant, 200, "One message.";
    GET "/v1/orgs/{org}/agents/{agent}/channels/{channel}/aggregate" => GetAggregate, Tenant, 200, "The channel's aggregate.";
    PATCH "/v1/orgs/{org}/agents/{agent}/channels/{channel}/aggregate" => PatchAggregate, Tenant, 200, "Merge into the aggregate (`null` deletes; `replace_paths` replaces subtrees).";
    PUT "/v1/orgs/{org}/agents/{agent}/channels/{channel}/aggregate" => PutAggregate, Tenant, 200, "Replace the aggregate.";
    GET "/v1/apps" => ListApps, AnyToken, 200, "Loaded apps and their status (ok, broken, failed).";
    PUT "/v1/apps/{app}" => UploadApp, Operator, 200, "Upload an app (manifest + base64 component) into the plugins directory.";
    GET "/v1/orgs/{org}/installations" => ListInstalls, Tenant, 200, "The organisation's installations.";
    POST "/v1/orgs/{org}/installations" => CreateInstall, Tenant, 201, "Install an app; config is validated against its schema.";
    GET "/v1/orgs/{org}/installations/{install}" => GetInstall, Tenant, 200, "One installation.";
    PUT "/v1/orgs/{org}/installations/{install}" => UpdateInstall, Tenant, 200, "Change an installation's config or names (a deployment event follows).";
    DELETE "/v1/orgs/{org}/installations/{install}" => DeleteInstall, Tenant, 204, "Delete an installation.";
    POST "/v1/orgs/{org}/installations/{install}/invoke" => Invoke, Tenant, 202, "Invoke an installation by hand with a JSON payload.";
    GET "/v1/orgs/{org}/installations/{install}/invocations" => ListInvocations, Tenant, 200, "Invocation summaries, newest first.";
    GET "/v1/orgs/{org}/installations/{install}/invocations/{event}" => GetInvocation, Tenant, 200, "Every attempt of one event, with logs.";
    GET "/v1/orgs/{org}/dead-letters" => ListDeadLetters, Tenant, 200, "Events given up on, with the last outcome; and queued events this version could not read, set aside.";
    POST "/v1/orgs/{org}/dead-letters/{event}/redrive" => RedriveDeadLetter, Tenant, 202, "Queue a dead letter again as a first attempt.";
    DELETE "/v1/orgs/{org}/dead-letters/{event}" => DeleteDeadLetter, Tenant, 204, "Discard a dead letter.";
    GET "/v1/orgs/{org}/ingestions" => ListIngestions, Tenant, 200, "Ingestion endpoints.";
    POST "/v1/orgs/{org}/ingestions" => CreateIngestion, Tenant, 201, "Create an ingestion endpoint; its token and mini-token are shown once.";
    DELETE "/v1/orgs/{org}/ingestions/{ingestion}" => DeleteIngestion, Tenant, 204, "Delete an ingestion endpoint.";
    POST "/v1/ingest/{ingestion}" => Ingest, Endpoint, 202, "Post an event to an integration (token, CIDR, HMAC, throttle checks).";
    GET "/v1/orgs/{org}/installations/{install}/oauth-state" => OauthState, Tenant, 200, "A signed OAuth `state` and redirect URI for the installation.";
    GET "/v1/oauth/callback" => OauthCallback, Endpoint, 200, "OAuth2 redirect target: delivers `code` to the installation named by `state`.";
    GET "/v1/orgs/{org}/monitors" => ListMonitors, Tenant, 200, "The organisation's monitors with their status.";
    POST "/v1/orgs/{org}/monitors" => CreateMonitor, Tenant, 201, "Create a monitor (topics, transport tcp/http/websocket, batching, format, replay).";
    GET "/v1/orgs/{org}/monitors/{monitor}" => GetMonitor, Tenant, 200, "One monitor with its status, cursor and counters.";
    PUT "/v1/orgs/{org}/monitors/{monitor}" => UpdateMonitor, Tenant, 200, "Replace a monitor's configuration (resets it).";
    DELETE "/v1/orgs/{org}/monitors/{monitor}" => DeleteMonitor, Tenant, 204, "Delete a monitor (its session is closed).";
    POST "/v1/orgs/{org}/monitors/{monitor}/reset" => ResetMonitor, Tenant, 200, "Reset a monitor (e.g. after DISABLED): status inactive, cursor at now.";
    GET "/v1/orgs/{org}/monitors/{monitor}/stream" => StreamMonitor, Tenant, 101, "Stream a websocket monitor: batches as JSON frames, `{\"ack\": n}` back.";
    GET "/v1/orgs/{org}/monitors/{monitor}/history" => MonitorHistory, Tenant, 200, "What the monitor's topics matched (`start_time`, `end_time`, `size`, `cursor`).";
    POST "/ws/Monitor" => DcCreateMonitor, DeviceCloud, 201, "Device Cloud: create a monitor from an XML body.";
    GET "/ws/Monitor" => DcListMonitors, DeviceCloud, 200, "Device Cloud: list monitors (`start`, `size`, `condition`).";
    PUT "/ws/Monitor" => DcResetMonitor, DeviceCloud, 200, "Device Cloud: reset the monitor named by `<monId>`.";
    GET "/ws/Monitor/{monitor}" => DcGetMonitor, DeviceCloud, 200, "Device Cloud: one monitor, in the list envelope.";
    PUT "/ws/Monitor/{monitor}" => DcUpdateMonitor, DeviceCloud, 200, "Device Cloud: replace a monitor (resets it).";
    DELETE "/ws/Monitor/{monitor}" => DcDeleteMonitor, DeviceCloud, 200, "Device Cloud: delete a monitor.";
    GET "/ws/DeviceCore" => DcDeviceCore, DeviceCloud, 200, "Device Cloud: the organisation's devices (the client's credential check).";
}

/// The route for `method` and `path`, with its parameters; 404 for an
/// unknown path, 405 for a known path with another method.
pub fn find(method: &Method, path: &str) -> Result<(&'static Route, BTreeMap<&'static str, String>), ApiError> {
    // `//ws/Monitor` (a client base URL with a trailing slash) is `/ws/Monitor`.
    let path = format!("/{}", path.trim_start_matches('/'));
    let segments: Vec<&str> = path.trim_end_matches('/').split('/').collect();
    let mut path_known = false;
    for (route, template) in ROUTES.iter().zip(templates()) {
        if !matches(template, &segments) {
            continue;
        }
        path_known = true;
        if route.method == *method {
            return Ok((route, params(template, &segments)));
        }
    }
    if path_known {
        return Err(ApiError::new(StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed", format!("{method} {path}")));
    }
    Err(ApiError::not_found(format!("no route {path}")))
}

/// One segment of a route's path: a literal, or a `{parameter}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Segment {
    Literal(&'static str),
    Param(&'static str),
}

/// Each route's path, split into its segments once (in [`ROUTES`]' order):
/// every request is matched against them.
fn templates() -> &'static [Vec<Segment>] {
    static TEMPLATES: std::sync::LazyLock<Vec<Vec<Segment>>> = std::sync::LazyLock::new(|| {
        let segment = |t: &'static str| match t.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            Some(name) => Segment::Param(name),
            None => Segment::Literal(t),
        };
        ROUTES.iter().map(|route| route.path.split('/').map(segment).collect()).collect()
    });
    &TEMPLATES
}

/// Whether `segments` fit `template` (a parameter takes one non-empty segment).
fn matches(template: &[Segment], segments: &[&str]) -> bool {
    template.len() == segments.len()
        && template.iter().zip(segments).all(|(t, s)| match t {
            Segment::Literal(literal) => literal == s,
            Segment::Param(_) => !s.is_empty(),
        })
}

/// The parameters of `segments`, which fit `template`, percent-decoded.
fn params(template: &[Segment], segments: &[&str]) -> BTreeMap<&'static str, String> {
    let named = template.iter().zip(segments).filter_map(|(t, s)| match t {
        Segment::Param(name) => Some((*name, super::percent_decode(s))),
        Segment::Literal(_) => None,
    });
    named.collect()
}

/// The OpenAPI 3.1 document for [`ROUTES`].
pub fn openapi() -> Value {
    let mut paths = Map::new();
    for route in ROUTES {
        let entry = paths.entry(route.path).or_insert_with(|| json!({}));
        let params: Vec<Value> = route
            .path
            .split('/')
            .filter_map(|s| s.strip_prefix('{').and_then(|s| s.strip_suffix('}')))
            .map(|name| json!({ "name": name, "in": "path", "required": true, "schema": { "type": "string" } }))
            .collect();
        let security = match route.access {
            Access::Public | Access::Endpoint => json!([]),
            Access::DeviceCloud => json!([{ "basic": [] }, { "bearer": [] }]),
            _ => json!([{ "bearer": [] }]),
        };
        let access = match route.access {
            Access::Public => "public",
            Access::Operator => "operator token",
            Access::Tenant => "operator or organisation token",
            Access::AnyToken => "any token (answers filtered to its scope)",
            Access::Endpoint => "endpoint credentials",
            Access::DeviceCloud => "Basic (organisation id, API token) or a Bearer organisation token",
        };
        let op = json!({
            "operationId": format!("{:?}", route.op),
            "summary": route.summary,
            "description": format!("Access: {access}."),
            "parameters": params,
            "security": security,
            "responses": {
                route.status.to_string(): { "description": "success" },
                "default": { "description": "error", "content": { "application/json": {
                    "schema": { "$ref": "#/components/schemas/Error" } } } }
            }
        });
        if let Some(obj) = entry.as_object_mut() {
            obj.insert(route.method.as_str().to_ascii_lowercase(), op);
        }
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "Paddock API", "version": env!("CARGO_PKG_VERSION") },
        "paths": paths,
        "components": {
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer" },
                "basic": { "type": "http", "scheme": "basic" }
            },
            "schemas": { "Error": {
                "type": "object", "required": ["error"],
                "properties": { "error": { "type": "object", "required": ["code", "message"],
                    "properties": { "code": { "type": "string" }, "message": { "type": "string" },
                                    "details": {} } } }
            } }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_route_is_reachable_by_its_own_template_and_nothing_shadows_it() {
        for route in ROUTES {
            let concrete = route.path.replace('{', "x").replace('}', "");
            let (found, _) = find(&route.method, &concrete).unwrap();
            assert_eq!(found.op, route.op, "{} {} is shadowed", route.method, route.path);
        }
    }

    #[test]
    fn unknown_paths_are_404_and_wrong_methods_405() {
        assert_eq!(find(&Method::GET, "/v1/nope").unwrap_err().status, StatusCode::NOT_FOUND);
        assert_eq!(find(&Method::DELETE, "/v1/health").unwrap_err().status, StatusCode::METHOD_NOT_ALLOWED);
        let (_, params) = find(&Method::GET, "/v1/orgs/12/agents/34").unwrap();
        assert_eq!(params["org"], "12");
        assert_eq!(params["agent"], "34");
    }

    #[test]
    fn the_document_lists_every_route() {
        let doc = openapi();
        for route in ROUTES {
            let op = &doc["paths"][route.path][route.method.as_str().to_ascii_lowercase()];
            assert_eq!(op["operationId"], format!("{:?}", route.op));
        }
    }
}

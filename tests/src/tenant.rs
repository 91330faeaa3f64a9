//! An organisation made through the API of a test [`Server`], with its own
//! token, and the calls the end-to-end tests make as it.

use serde_json::{Value, json};

use crate::http::{Response, request};
use crate::server::Server;

/// An organisation made through the API, with its own token.
pub struct Tenant {
    /// Its id.
    pub org: String,
    /// An API token of its own.
    pub token: String,
    /// The organisation's own agent.
    pub org_agent: String,
}

/// Create an organisation named `name` and a token for it, as the operator.
pub fn tenant(s: &Server, name: &str) -> Tenant {
    let org = s.op("POST", "/v1/orgs", Some(&json!({ "name": name })), 201);
    let id = org["id"].as_str().unwrap().to_owned();
    let token = s.op("POST", &format!("/v1/orgs/{id}/tokens"), Some(&json!({ "name": "t" })), 201);
    Tenant {
        org: id,
        token: token["token"].as_str().unwrap().to_owned(),
        org_agent: org["agent_id"].as_str().unwrap().to_owned(),
    }
}

impl Tenant {
    /// Call `path` (where `{org}` stands for this organisation) with its
    /// token; assert the status.
    pub fn call(&self, s: &Server, method: &str, path: &str, body: Option<&Value>, status: u16) -> Value {
        let path = path.replace("{org}", &self.org);
        let r = s.call(method, &path, Some(&self.token), body);
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        r.json()
    }

    /// Create an agent; its id.
    pub fn agent(&self, s: &Server, name: &str, serial: &str) -> String {
        let a =
            self.call(s, "POST", "/v1/orgs/{org}/agents", Some(&json!({ "name": name, "serial_number": serial })), 201);
        a["id"].as_str().unwrap().to_owned()
    }

    /// Create an installation; its id.
    pub fn install(&self, s: &Server, body: Value) -> String {
        let r = self.call(s, "POST", "/v1/orgs/{org}/installations", Some(&body), 201);
        r["installation"]["id"].as_str().unwrap().to_owned()
    }

    /// Create an ingestion endpoint; its id and the whole answer (with the
    /// token, shown once).
    pub fn ingestion(&self, s: &Server, body: Value) -> (String, Value) {
        let r = self.call(s, "POST", "/v1/orgs/{org}/ingestions", Some(&body), 201);
        (r["id"].as_str().unwrap().to_owned(), r)
    }

    /// A channel's aggregate data, if it has one.
    pub fn aggregate(&self, s: &Server, agent: &str, channel: &str) -> Option<Value> {
        let path = format!("/v1/orgs/{}/agents/{agent}/channels/{channel}/aggregate", self.org);
        let r = s.call("GET", &path, Some(&self.token), None);
        (r.status == 200).then(|| r.json()["data"].clone())
    }

    /// How many invocation summaries an installation has (at most 1000).
    pub fn invocation_count(&self, s: &Server, install: &str) -> usize {
        let path = format!("/v1/orgs/{{org}}/installations/{install}/invocations?limit=1000");
        self.call(s, "GET", &path, None, 200)["invocations"].as_array().map_or(0, Vec::len)
    }
}

/// `POST /v1/ingest/{id}` with `headers` and `body`.
pub fn post_ingest(s: &Server, id: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    request(s.addr, "POST", &format!("/v1/ingest/{id}"), headers, body).unwrap()
}

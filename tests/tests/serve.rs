//! `paddock serve` end to end, on a real listener: the whole path from an
//! external webhook to a processor's tags, tenant isolation across every
//! endpoint, every ingestion rejection, errors, the OpenAPI document and
//! hot reload of the plugins directory.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use base64::Engine as _;
use hmac::{Hmac, Mac};
use paddock::api::routes::{Access, ROUTES};
use paddock_tests::server::{OPERATOR, Server, eventually, plugins_with};
use paddock_tests::tenant::{post_ingest, tenant};
use serde_json::{Value, json};
use sha2::Sha256;

#[test]
fn a_webhook_reaches_a_processor_through_the_integration_and_everything_is_visible_over_http() {
    let s = Server::start(plugins_with(&["tank-level", "webhook"]), |_| {});
    let t = tenant(&s, "Acme Water");
    let tank = t.agent(&s, "North tank", "TANK-001");
    let tank_install = t.install(
        &s,
        json!({ "app": "tank-level", "agent_id": tank, "config": { "empty_distance_mm": 2000, "full_distance_mm": 200 } }),
    );
    let hook = t.install(&s, json!({ "app": "webhook", "app_key": "readings" }));
    let rec = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/installations/{hook}"), None, 200);
    assert_eq!(rec["agent_id"].as_str(), Some(t.org_agent.as_str()), "an integration sits on the organisation's agent");
    let (ingest, created) = t.ingestion(&s, json!({ "install_id": hook, "mini_token": true }));
    let token = created["token"].as_str().unwrap().to_owned();

    let body = br#"{"readings":[{"serial":"TANK-001","distance_mm":1100}]}"#;
    let auth = format!("Bearer {token}");
    let r = post_ingest(&s, &ingest, &[("authorization", &auth), ("content-type", "application/json")], body);
    assert_eq!(r.status, 202, "{}", r.text());
    assert!(r.json()["event_id"].as_str().is_some());

    // The integration published on the tank's channel; the processor ran.
    let tags =
        eventually(10, "tank tags", || t.aggregate(&s, &tank, "tag_values").filter(|v| v.get("tank_level").is_some()));
    assert_eq!(tags["tank_level"]["last_level"], json!(50.0));
    let ui = eventually(5, "ui state", || t.aggregate(&s, &tank, "ui_state"));
    assert!(ui.as_object().is_some_and(|o| !o.is_empty()), "{ui}");
    let msgs = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/agents/{tank}/channels/sensor_data/messages"), None, 200);
    assert_eq!(msgs["messages"][0]["data"]["distance_mm"], json!(1100));

    // A low reading, sent by a device with only a mini-token in the URL,
    // raises a notification.
    let mini = created["mini_token"].as_str().unwrap();
    let low = br#"{"readings":[{"serial":"TANK-001","distance_mm":1950}]}"#;
    let path = format!("/v1/ingest/{ingest}?token={mini}");
    let r = paddock_tests::http::request(s.addr, "POST", &path, &[("content-type", "application/json")], low).unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    let notes = eventually(10, "a notification", || {
        let path = format!("/v1/orgs/{}/agents/{tank}/channels/notifications/messages", t.org);
        let r = s.call("GET", &path, Some(&t.token), None);
        let list = r.json()["messages"].as_array().cloned().unwrap_or_default();
        (!list.is_empty()).then_some(list)
    });
    assert_eq!(notes.len(), 1, "one alarm per crossing: {notes:?}");

    // Summaries, with logs, per installation; metrics count them.
    let inv = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/installations/{tank_install}/invocations"), None, 200);
    let list = inv["invocations"].as_array().unwrap();
    assert!(list.iter().any(|i| i["status"] == "success" && i["op"] == "on_message_create"), "{inv}");
    let event = list[0]["event_id"].as_str().unwrap();
    let one =
        t.call(&s, "GET", &format!("/v1/orgs/{{org}}/installations/{tank_install}/invocations/{event}"), None, 200);
    assert!(one["attempts"][0]["logs"]["lines"].as_array().is_some());
    let metrics = s.call("GET", "/metrics", Some(OPERATOR), None);
    assert_eq!(metrics.status, 200);
    let text = metrics.text();
    assert!(
        text.contains(&format!("paddock_invocations_total{{organisation=\"{}\",status=\"success\"}}", t.org)),
        "{text}"
    );
    assert!(text.contains("paddock_invocation_duration_seconds_bucket"));
    // Manual invoke is accepted and runs (tank-level skips it: no handler).
    let r = t.call(
        &s,
        "POST",
        &format!("/v1/orgs/{{org}}/installations/{tank_install}/invoke"),
        Some(&json!({"x": 1})),
        202,
    );
    assert!(r["event_id"].as_str().is_some());
}

#[test]
fn another_organisations_token_gets_403_or_404_and_no_data_on_every_endpoint() {
    let s = Server::start(plugins_with(&["counter"]), |_| {});
    let a = tenant(&s, "Alpha");
    let b = tenant(&s, "Beta");
    let agent = a.agent(&s, "A1", "A-1");
    let install = a.install(&s, json!({ "app": "counter", "agent_id": agent }));
    let (ingestion, _) = a.ingestion(&s, json!({ "install_id": install }));
    a.call(
        &s,
        "POST",
        &format!("/v1/orgs/{{org}}/agents/{agent}/channels/ticks/messages"),
        Some(&json!({"n": 1})),
        201,
    );
    let monitor = a.call(&s, "POST", "/v1/orgs/{org}/monitors", Some(&json!({"topic": "*", "type": "tcp"})), 201);
    let monitor = monitor["id"].to_string();
    let secret_marker = [a.org.as_str(), agent.as_str(), install.as_str(), ingestion.as_str()];

    let fill = |path: &str, org: &str| {
        path.replace("{org}", org)
            .replace("{agent}", &agent)
            .replace("{channel}", "ticks")
            .replace("{message}", "1")
            .replace("{install}", &install)
            .replace("{event}", "1")
            .replace("{ingestion}", &ingestion)
            .replace("{token}", "x")
            .replace("{app}", "counter")
            .replace("{monitor}", &monitor)
    };
    let body = json!({ "name": "x" });
    for route in ROUTES {
        let method = route.method.as_str();
        match route.access {
            Access::Tenant => {
                // B's token on A's organisation: forbidden.
                let r = s.call(method, &fill(route.path, &a.org), Some(&b.token), Some(&body));
                assert_eq!(r.status, 403, "{method} {} with another org's token: {}", route.path, r.text());
                // B's token on B's organisation, naming A's resources: not found.
                if route.path.contains("{agent}")
                    || route.path.contains("{install}")
                    || route.path.contains("{ingestion}")
                    || route.path.contains("{monitor}")
                {
                    let r = s.call(method, &fill(route.path, &b.org), Some(&b.token), Some(&body));
                    assert!(
                        matches!(r.status, 400 | 404),
                        "{method} {} on B naming A's ids: {} {}",
                        route.path,
                        r.status,
                        r.text()
                    );
                    for m in secret_marker.iter().skip(1) {
                        assert!(!r.text().contains(&format!("\"{m}\"")) || r.status == 404, "leak: {}", r.text());
                    }
                }
            }
            Access::Operator => {
                let r = s.call(method, &fill(route.path, &a.org), Some(&b.token), Some(&body));
                assert_eq!(r.status, 403, "{method} {} needs the operator: {}", route.path, r.text());
            }
            Access::AnyToken => {
                let r = s.call(method, &fill(route.path, &a.org), Some(&b.token), None);
                assert_eq!(r.status, 200);
                assert!(!r.text().contains(&a.org), "{} leaks organisation A: {}", route.path, r.text());
            }
            Access::DeviceCloud => {
                // B's token acts in B's organisation: A's monitor is not
                // there, and nothing of A shows.
                let r = s.call(method, &fill(route.path, &a.org), Some(&b.token), Some(&body));
                assert!(matches!(r.status, 200 | 400 | 404), "{method} {}: {} {}", route.path, r.status, r.text());
                assert!(!r.text().contains(&a.org), "{} leaks organisation A: {}", route.path, r.text());
                if route.path.contains("{monitor}") {
                    assert_ne!(r.status, 200, "{method} {} reached A's monitor with B's token", route.path);
                }
            }
            Access::Public | Access::Endpoint => {}
        }
        // No token at all: 401 for everything that needs one.
        if !matches!(route.access, Access::Public | Access::Endpoint) {
            let r = s.call(method, &fill(route.path, &a.org), None, Some(&body));
            assert_eq!(r.status, 401, "{method} {} without a token", route.path);
        }
    }
    // A's data is intact and visible to A.
    let msgs = a.call(&s, "GET", &format!("/v1/orgs/{{org}}/agents/{agent}/channels/ticks/messages"), None, 200);
    assert_eq!(msgs["messages"].as_array().unwrap().len(), 1);
    // A revoked token stops working.
    let created = a.call(&s, "POST", "/v1/orgs/{org}/tokens", Some(&json!({"name": "tmp"})), 201);
    let tmp = created["token"].as_str().unwrap();
    assert_eq!(s.call("GET", &format!("/v1/orgs/{}", a.org), Some(tmp), None).status, 200);
    a.call(&s, "DELETE", &format!("/v1/orgs/{{org}}/tokens/{}", created["id"].as_str().unwrap()), None, 204);
    assert_eq!(s.call("GET", &format!("/v1/orgs/{}", a.org), Some(tmp), None).status, 401);
}

fn hmac_hex(secret: &[u8], body: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret).unwrap();
    m.update(body);
    m.finalize().into_bytes().to_vec()
}

#[test]
fn ingestion_checks_run_in_order_and_each_rejection_is_precise() {
    let s = Server::start(plugins_with(&["webhook"]), |c| c.trusted_proxies = vec!["127.0.0.2/32".into()]);
    let t = tenant(&s, "Ingest");
    let hook = t.install(&s, json!({ "app": "webhook" }));
    let (open, o) = t.ingestion(&s, json!({ "install_id": hook, "max_body_bytes": 64, "rate_per_s": 2 }));
    let open_auth = format!("Bearer {}", o["token"].as_str().unwrap());
    let (fenced, f) = t.ingestion(&s, json!({ "install_id": hook, "allow_cidrs": ["10.0.0.0/8"] }));
    let fenced_auth = format!("Bearer {}", f["token"].as_str().unwrap());
    let (signed, g) = t.ingestion(&s, json!({ "install_id": hook, "hmac_secret": "s3cret" }));
    let signed_auth = format!("Bearer {}", g["token"].as_str().unwrap());
    let key = [9u8; 24];
    let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(key));
    let (std_wh, w) = t.ingestion(&s, json!({ "install_id": hook, "webhook_secret": whsec }));
    let std_auth = format!("Bearer {}", w["token"].as_str().unwrap());
    let body = br#"{"readings":[]}"#;

    // 413 first: even with a bad token.
    let big = vec![b'x'; 65];
    let r = post_ingest(&s, &open, &[("authorization", "Bearer wrong")], &big);
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (413, json!("payload_too_large")));
    // Over the hard ceiling: refused from Content-Length before reading.
    let r = post_ingest(&s, &open, &[], &vec![b'x'; 300 * 1024]);
    assert_eq!(r.status, 413);
    // 401: missing, then wrong token (before the CIDR check).
    assert_eq!(post_ingest(&s, &open, &[], body).status, 401);
    assert_eq!(post_ingest(&s, &fenced, &[("authorization", "Bearer nope")], body).status, 401);
    // 403: the real peer (127.0.0.1) is outside 10/8; a forged
    // X-Forwarded-For from an untrusted peer does not help.
    let r = post_ingest(&s, &fenced, &[("authorization", &fenced_auth), ("x-forwarded-for", "10.1.2.3")], body);
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (403, json!("forbidden")));
    // 403 comes before the signature check; 401 for a bad signature.
    let r = post_ingest(&s, &signed, &[("authorization", &signed_auth)], body);
    assert_eq!(r.status, 401, "missing signature: {}", r.text());
    let r = post_ingest(&s, &signed, &[("authorization", &signed_auth), ("x-hmac-sha256", &"0".repeat(64))], body);
    assert_eq!(r.status, 401, "wrong signature");
    let digest = hmac_hex(b"s3cret", body);
    let r =
        post_ingest(&s, &signed, &[("authorization", &signed_auth), ("x-hmac-sha256", &hex::encode(&digest))], body);
    assert_eq!(r.status, 202, "hex digest: {}", r.text());
    let b64 = base64::engine::general_purpose::STANDARD.encode(&digest);
    let r = post_ingest(&s, &signed, &[("authorization", &signed_auth), ("x-hmac-sha256", &b64)], body);
    assert_eq!(r.status, 202, "base64 digest");
    let r = post_ingest(&s, &signed, &[("authorization", &signed_auth), ("x-hmac-sha256", &b64)], b"{\"tampered\":1}");
    assert_eq!(r.status, 401, "signature of another body");

    // Standard Webhooks: signature over id.timestamp.body, tolerance, replay.
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
    let sign = |id: &str, ts: u64| {
        let mut content = format!("{id}.{ts}.").into_bytes();
        content.extend_from_slice(body);
        format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(hmac_hex(&key, &content)))
    };
    let std_post = |id: &str, ts: u64, sig: &str| {
        let ts = ts.to_string();
        let h = [
            ("authorization", std_auth.as_str()),
            ("webhook-id", id),
            ("webhook-timestamp", &ts),
            ("webhook-signature", sig),
        ];
        post_ingest(&s, &std_wh, &h, body)
    };
    assert_eq!(std_post("msg_1", now, &sign("msg_1", now)).status, 202);
    let replay = std_post("msg_1", now, &sign("msg_1", now));
    assert_eq!((replay.status, replay.json()["duplicate"].clone()), (200, json!(true)), "replayed id");
    assert_eq!(std_post("msg_2", now - 600, &sign("msg_2", now - 600)).status, 401, "too old");
    assert_eq!(std_post("msg_3", now, &sign("msg_x", now)).status, 401, "signature for another id");
    let rotated = format!("v1,AAAA {}", sign("msg_4", now));
    assert_eq!(std_post("msg_4", now, &rotated).status, 202, "any of several signatures");

    // 429 with Retry-After once the bucket (2/s) is empty.
    let mut statuses = Vec::new();
    let mut retry_after = None;
    for _ in 0..4 {
        let r = post_ingest(&s, &open, &[("authorization", &open_auth)], body);
        if r.status == 429 {
            retry_after = r.header("retry-after").map(str::to_owned);
        }
        statuses.push(r.status);
    }
    assert_eq!(&statuses[..2], &[202, 202], "{statuses:?}");
    assert!(statuses[2..].contains(&429), "{statuses:?}");
    assert_eq!(retry_after.as_deref(), Some("1"));

    // Unknown endpoint: 404. Nothing rejected above was stored.
    assert_eq!(post_ingest(&s, "12345", &[("authorization", &open_auth)], body).status, 404);
    let summaries = eventually(10, "the accepted events to run", || {
        let inv = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/installations/{hook}/invocations?limit=100"), None, 200);
        let n = inv["invocations"].as_array().unwrap().len();
        (n >= 6).then_some(n)
    });
    assert_eq!(summaries, 6, "2 hmac + 2 standard webhooks + 2 within the rate: nothing else was accepted");
}

#[test]
fn a_trusted_proxy_forwarded_address_is_the_one_checked() {
    // The test client connects from 127.0.0.1: make that the trusted proxy.
    let s = Server::start(plugins_with(&["webhook"]), |c| c.trusted_proxies = vec!["127.0.0.1/32".into()]);
    let t = tenant(&s, "Proxied");
    let hook = t.install(&s, json!({ "app": "webhook" }));
    let (fenced, f) = t.ingestion(&s, json!({ "install_id": hook, "allow_cidrs": ["10.0.0.0/8"] }));
    let auth = format!("Bearer {}", f["token"].as_str().unwrap());
    let body = br#"{"readings":[]}"#;
    assert_eq!(
        post_ingest(&s, &fenced, &[("authorization", &auth)], body).status,
        403,
        "the proxy itself is not allowed"
    );
    let r = post_ingest(&s, &fenced, &[("authorization", &auth), ("x-forwarded-for", "192.0.2.1, 10.1.2.3")], body);
    assert_eq!(r.status, 202, "nearest untrusted hop 10.1.2.3 is allowed: {}", r.text());
    let r = post_ingest(&s, &fenced, &[("authorization", &auth), ("x-forwarded-for", "10.1.2.3, 192.0.2.1")], body);
    assert_eq!(r.status, 403, "nearest untrusted hop 192.0.2.1 is not");
}

#[test]
fn bad_requests_get_typed_errors_and_change_nothing() {
    let s = Server::start(plugins_with(&["tank-level"]), |_| {});
    let t = tenant(&s, "Errors");
    let tank = t.agent(&s, "T", "T-1");
    let send = |method: &str, path: &str, body: &[u8]| {
        let auth = format!("Bearer {}", t.token);
        let path = path.replace("{org}", &t.org);
        paddock_tests::http::request(s.addr, method, &path, &[("authorization", &auth)], body).unwrap()
    };
    let r = send("POST", "/v1/orgs/{org}/agents", b"{not json");
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!("invalid_json")));
    let r = send("POST", "/v1/orgs/{org}/agents", br#"{"name": 5}"#);
    assert!(r.json()["error"]["message"].as_str().unwrap().contains("name"), "names the field: {}", r.text());
    let r = send("POST", &format!("/v1/orgs/{{org}}/agents/{tank}/channels/x/messages"), b"[1,2]");
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!("invalid_payload")));
    let r = send("POST", &format!("/v1/orgs/{{org}}/agents/{tank}/channels/bad%20name!/messages"), b"{}");
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (400, json!("invalid_channel")));
    assert_eq!(send("GET", "/v1/nowhere", b"").status, 404);
    assert_eq!(send("DELETE", "/v1/health", b"").status, 405);
    // Every config violation is listed.
    let bad = json!({ "app": "tank-level", "agent_id": tank,
        "config": { "empty_distance_mm": 0, "low_level_percent": 200, "unknown": true } });
    let r = send("POST", "/v1/orgs/{org}/installations", &serde_json::to_vec(&bad).unwrap());
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (422, json!("invalid_config")), "{}", r.text());
    assert!(r.json()["error"]["details"].as_array().unwrap().len() >= 3, "{}", r.text());
    let r = send("POST", "/v1/orgs/{org}/installations", br#"{"app":"no-such-app"}"#);
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (422, json!("unknown_app")));
    // Duplicate app key on one agent: 409.
    let ok = json!({ "app": "tank-level", "agent_id": tank });
    assert_eq!(send("POST", "/v1/orgs/{org}/installations", &serde_json::to_vec(&ok).unwrap()).status, 201);
    assert_eq!(send("POST", "/v1/orgs/{org}/installations", &serde_json::to_vec(&ok).unwrap()).status, 409);
    // Nothing of the failed requests was stored.
    let list = t.call(&s, "GET", "/v1/orgs/{org}/installations", None, 200);
    assert_eq!(list["installations"].as_array().unwrap().len(), 1);
    let channels = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/agents/{tank}/channels"), None, 200);
    assert!(!channels["channels"].as_array().unwrap().contains(&json!("x")), "{channels}");
    // Aggregates: patch merges (null deletes), replace_paths replaces, put replaces.
    let agg = format!("/v1/orgs/{{org}}/agents/{tank}/channels/settings/aggregate");
    t.call(&s, "PATCH", &agg, Some(&json!({ "a": { "x": 1, "y": 2 }, "b": 1 })), 200);
    let r = t.call(&s, "PATCH", &agg, Some(&json!({ "a": { "x": 5 }, "b": null })), 200);
    assert_eq!(r["data"], json!({ "a": { "x": 5, "y": 2 } }));
    let r = t.call(&s, "PATCH", &format!("{agg}?replace_paths=a"), Some(&json!({ "a": { "z": 1 } })), 200);
    assert_eq!(r["data"], json!({ "a": { "z": 1 } }));
    let r = t.call(&s, "PUT", &agg, Some(&json!({ "c": 3 })), 200);
    assert_eq!(r["data"], json!({ "c": 3 }));
}

#[test]
fn the_openapi_document_matches_what_is_served() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let r = s.call("GET", "/v1/openapi.json", None, None);
    assert_eq!(r.status, 200);
    let doc = r.json();
    assert_eq!(doc, paddock::api::routes::openapi());
    let paths = doc["paths"].as_object().unwrap();
    let mut operations = 0;
    for (path, ops) in paths {
        for (method, _) in ops.as_object().unwrap() {
            operations += 1;
            let concrete = path.replace('{', "1").replace('}', "");
            let r = s.call(&method.to_uppercase(), &concrete, Some(OPERATOR), Some(&json!({})));
            let code = r.json()["error"]["code"].clone();
            assert_ne!(code, json!("method_not_allowed"), "{method} {path}");
            assert!(
                !(r.status == 404 && r.text().contains("no route")),
                "{method} {path} is documented but not served"
            );
            assert_ne!(r.status, 500, "{method} {path}: {}", r.text());
        }
    }
    assert_eq!(operations, ROUTES.len());
    assert_eq!(s.call("GET", "/v1/health", None, None).json()["status"], "ok");
}

#[test]
fn replacing_a_component_while_events_flow_fails_nothing_and_new_events_run_the_new_version() {
    let plugins = plugins_with(&[]);
    let app = plugins.path().join("swap");
    std::fs::create_dir_all(&app).unwrap();
    std::fs::write(
        app.join("paddock.toml"),
        "name = \"swap\"\ntype = \"PRO\"\ncomponent = \"app.wasm\"\nsubscriptions = [\"sensor_data\"]\n",
    )
    .unwrap();
    let v1 = paddock_tests::app_dir("counter").join("counter.wasm");
    let v2 = paddock_tests::app_dir("tank-level").join("tank_level.wasm");
    std::fs::copy(&v1, app.join("app.wasm")).unwrap();
    let s = Server::start(plugins, |_| {});
    let t = tenant(&s, "Swapper");
    let tank = t.agent(&s, "T", "T-1");
    let install = t.install(&s, json!({ "app": "swap", "agent_id": tank }));
    let digest = |s: &Server| s.op("GET", "/v1/apps", None, 200)["apps"][0]["digest"].as_str().unwrap().to_owned();
    let old = digest(&s);

    let path = format!("/v1/orgs/{{org}}/agents/{tank}/channels/sensor_data/messages");
    let publish = |n: u64| t.call(&s, "POST", &path, Some(&json!({ "n": n, "distance_mm": 1100 })), 201);
    let mut n = 0;
    for _ in 0..20 {
        publish(n);
        n += 1;
    }
    // Overwrite the component in place (not atomically, as `cp` does) while publishing.
    std::fs::copy(&v2, s.plugins.join("swap").join("app.wasm")).unwrap();
    let mut published_after_swap = 0;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    while published_after_swap < 20 {
        assert!(std::time::Instant::now() < deadline, "the new version never started serving");
        let swapped = digest(&s) != old;
        publish(n);
        n += 1;
        if swapped {
            published_after_swap += 1;
        }
    }
    let total = n;
    let summaries = eventually(20, "every event to run", || {
        let path = format!("/v1/orgs/{{org}}/installations/{install}/invocations?limit=1000");
        let inv = t.call(&s, "GET", &path, None, 200)["invocations"].as_array().cloned().unwrap();
        let messages: Vec<Value> = inv.into_iter().filter(|i| i["op"] == "on_message_create").collect();
        (messages.len() as u64 >= total).then_some(messages)
    });
    let failed: Vec<&Value> = summaries.iter().filter(|i| i["status"] != "success").collect();
    assert!(failed.is_empty(), "no event may fail because of the swap: {failed:?}");
    assert_eq!(summaries.len() as u64, total, "each event ran once");
    let tags = t.aggregate(&s, &tank, "tag_values").unwrap();
    let on_v1 = tags["swap"]["count"].as_u64().unwrap_or(0);
    let on_v2 = tags["swap"]["readings"].as_u64().unwrap_or(0);
    assert_eq!(on_v1 + on_v2, total, "every event ran on exactly one version: {tags}");
    assert!(on_v2 >= published_after_swap, "events published after the swap ran the new version: {tags}");
    let dead = t.call(&s, "GET", "/v1/orgs/{org}/dead-letters", None, 200);
    assert_eq!(dead["dead_letters"], json!([]));
    assert_eq!(dead["unreadable"], json!([]), "nothing set aside");
    let apps = s.op("GET", "/v1/apps", None, 200);
    assert_eq!(apps["apps"][0]["status"], "ok");
}

#[test]
fn a_broken_upgrade_is_reported_and_the_previous_version_keeps_serving() {
    let s = Server::start(plugins_with(&["counter"]), |_| {});
    let t = tenant(&s, "Broken");
    let dev = t.agent(&s, "D", "D-1");
    t.install(&s, json!({ "app": "counter", "agent_id": dev }));
    std::fs::write(s.plugins.join("counter").join("counter.wasm"), b"\0asm garbage").unwrap();
    let app = eventually(10, "the failure to be reported", || {
        let apps = s.op("GET", "/v1/apps", None, 200);
        let app = apps["apps"][0].clone();
        (app["status"] == "broken").then_some(app)
    });
    assert!(app["error"].as_str().unwrap().contains("not a valid wasm component"), "{app}");
    let health = s.call("GET", "/v1/health", None, None).json();
    assert_eq!(health["apps_not_ok"], json!(["counter"]));
    // Still serving the previous version.
    let path = format!("/v1/orgs/{{org}}/agents/{dev}/channels/ticks/messages");
    t.call(&s, "POST", &path, Some(&json!({ "n": 1 })), 201);
    let tags = eventually(10, "the old version to count", || {
        t.aggregate(&s, &dev, "tag_values").filter(|v| v["counter"]["count"] == json!(1))
    });
    assert_eq!(tags["counter"]["seen"], json!([1]));
    // Uploading a good component over the API restores it.
    let manifest = std::fs::read_to_string(paddock_tests::app_dir("counter").join("paddock.toml")).unwrap();
    let wasm = std::fs::read(paddock_tests::app_dir("counter").join("counter.wasm")).unwrap();
    let upload =
        json!({ "manifest": manifest, "component_base64": base64::engine::general_purpose::STANDARD.encode(wasm) });
    s.op("PUT", "/v1/apps/counter", Some(&upload), 200);
    assert_eq!(s.op("GET", "/v1/apps", None, 200)["apps"][0]["status"], "ok");
    let bad = json!({ "manifest": manifest, "component_base64": "AGFzbQ==" });
    let r = s.call("PUT", "/v1/apps/counter", Some(OPERATOR), Some(&bad));
    assert_eq!((r.status, r.json()["error"]["code"].clone()), (422, json!("invalid_app")), "{}", r.text());
    assert_eq!(s.op("GET", "/v1/apps", None, 200)["apps"][0]["status"], "ok", "a rejected upload changes nothing");
}

#[test]
fn oauth_pass_through_delivers_the_code_to_the_installation_named_by_a_signed_state() {
    let s = Server::start(plugins_with(&["counter"]), |_| {});
    let t = tenant(&s, "OAuth");
    let dev = t.agent(&s, "D", "D-1");
    let install = t.install(&s, json!({ "app": "counter", "agent_id": dev }));
    // The app gets the state and redirect URI in its context and builds an
    // authorize URL with them.
    t.call(&s, "POST", &format!("/v1/orgs/{{org}}/installations/{install}/invoke"), None, 202);
    let path = format!("/v1/orgs/{}/agents/{dev}/channels/oauth/messages", t.org);
    let msg = eventually(10, "the authorize URL", || {
        let r = s.call("GET", &path, Some(&t.token), None);
        r.json()["messages"].as_array().and_then(|m| m.first().cloned())
    });
    let state = msg["data"]["state"].as_str().unwrap().to_owned();
    let url = msg["data"]["authorize_url"].as_str().unwrap();
    let redirect = format!("http://{}/v1/oauth/callback", s.addr);
    assert!(url.contains(&format!("state={state}")), "base64url and '.' need no escaping: {url}");
    assert!(url.contains(&format!("redirect_uri={}", redirect.replace(':', "%3A").replace('/', "%2F"))), "{url}");
    // The API hands out the same kind of state.
    let api_state = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/installations/{install}/oauth-state"), None, 200);
    assert_eq!(api_state["redirect_uri"], json!(redirect));

    // A tampered or missing state is refused and delivers nothing.
    let mut forged = state.clone();
    forged.pop();
    forged.push(if state.ends_with('A') { 'B' } else { 'A' });
    let r = s.call("GET", &format!("/v1/oauth/callback?code=evil&state={forged}"), None, None);
    assert_eq!(r.status, 401, "{}", r.text());
    assert_eq!(s.call("GET", "/v1/oauth/callback?code=x", None, None).status, 400);
    let r = s.call("GET", &format!("/v1/oauth/callback?error=access_denied&state={state}"), None, None);
    assert_eq!(r.status, 400);

    // The provider's redirect: the code reaches on_oauth_callback.
    let r = s.call("GET", &format!("/v1/oauth/callback?code=abc123&state={state}&scope=read"), None, None);
    assert_eq!(r.status, 200, "{}", r.text());
    let tags = eventually(10, "the code", || {
        t.aggregate(&s, &dev, "tag_values").filter(|v| v["counter"]["oauth_code"].is_string())
    });
    assert_eq!(tags["counter"]["oauth_code"], json!("abc123"));

    // The user reloads the page the provider sent them to: the code is
    // not delivered again (a second exchange of it would fail).
    let again = s.call("GET", &format!("/v1/oauth/callback?code=abc123&state={state}&scope=read"), None, None);
    assert_eq!((again.status, again.json()["duplicate"].clone()), (200, json!(true)), "{}", again.text());
    let summaries = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/installations/{install}/invocations"), None, 200);
    let callbacks =
        summaries["invocations"].as_array().unwrap().iter().filter(|i| i["op"] == "on_oauth_callback").count();
    assert_eq!(callbacks, 1, "{summaries}");
    // A new code (a new authorization) is delivered.
    let next = s.call("GET", &format!("/v1/oauth/callback?code=def456&state={state}"), None, None);
    assert_eq!(next.status, 200, "{}", next.text());
    assert!(next.json()["event_id"].is_string());
}

//! The web console over HTTP: sign-in and its cookie, the security headers,
//! the pages with real apps' data, escaping, tenant isolation and CSRF.
//! (The browser scenarios come with the console's live updates.)
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use paddock_tests::http::{Response, request};
use paddock_tests::server::{OPERATOR, Server, eventually, plugins_with};
use paddock_tests::tenant::{Tenant, tenant};
use serde_json::json;

fn header<'a>(r: &'a Response, name: &str) -> Option<&'a str> {
    r.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Sign in with `token`; the session cookie (`name=value`).
fn sign_in(s: &Server, token: &str) -> String {
    let body = format!("token={token}");
    let r = request(
        s.addr,
        "POST",
        "/console/login",
        &[("content-type", "application/x-www-form-urlencoded")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 303, "{}", r.text());
    header(&r, "set-cookie").unwrap().split(';').next().unwrap().to_owned()
}

fn get(s: &Server, cookie: &str, path: &str) -> Response {
    request(s.addr, "GET", path, &[("cookie", cookie)], b"").unwrap()
}

fn post(s: &Server, cookie: &str, path: &str, form: &str) -> Response {
    let headers = [("cookie", cookie), ("content-type", "application/x-www-form-urlencoded")];
    request(s.addr, "POST", path, &headers, form.as_bytes()).unwrap()
}

fn csrf_of(page: &str) -> String {
    page.split(r#"name="csrf" value=""#).nth(1).and_then(|r| r.split('"').next()).unwrap().to_owned()
}

fn tank(s: &Server, t: &Tenant) -> String {
    let agent = t.agent(s, "North tank", "TANK-001");
    let config = json!({ "empty_distance_mm": 2000, "full_distance_mm": 200, "low_level_percent": 20 });
    t.install(s, json!({ "app": "tank-level", "agent_id": agent, "app_key": "tank_level", "config": config }));
    agent
}

#[test]
fn signing_in_sets_a_strict_cookie_and_every_page_a_strict_policy() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    let home = request(s.addr, "GET", "/", &[], b"").unwrap();
    assert_eq!(home.status, 200);
    assert!(home.text().contains(r#"action="/console/login""#));
    let csp = header(&home, "content-security-policy").unwrap();
    assert!(
        csp.contains("default-src 'none'")
            && csp.contains("script-src 'self'")
            && csp.contains("frame-ancestors 'none'")
    );
    assert_eq!(header(&home, "x-content-type-options"), Some("nosniff"));
    // The assets are embedded and served with the same policy.
    let js = request(s.addr, "GET", "/console/static/console.js", &[], b"").unwrap();
    assert_eq!((js.status, header(&js, "content-type")), (200, Some("text/javascript; charset=utf-8")));

    let wrong = request(s.addr, "POST", "/console/login", &[], b"token=pdk_wrong").unwrap();
    assert_eq!(wrong.status, 401);
    assert!(wrong.text().contains("not valid"));
    let r = request(s.addr, "POST", "/console/login", &[], format!("token={}", t.token).as_bytes()).unwrap();
    assert_eq!(r.status, 303);
    assert_eq!(header(&r, "location"), Some(format!("/console/orgs/{}", t.org).as_str()));
    let cookie = header(&r, "set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict") && cookie.contains("Path=/"), "{cookie}");
    assert!(!cookie.contains("Secure"), "not over plain HTTP");
    // Without a session a page sends you to sign in; a POST reads nothing.
    let page = request(s.addr, "GET", &format!("/console/orgs/{}", t.org), &[], b"").unwrap();
    assert_eq!((page.status, header(&page, "location")), (303, Some("/console/login")));
    // Revoking the token ends the session.
    let session = cookie.split(';').next().unwrap();
    assert_eq!(get(&s, session, &format!("/console/orgs/{}", t.org)).status, 200);
    let tokens = t.call(&s, "GET", "/v1/orgs/{org}/tokens", None, 200);
    let id = tokens["tokens"][0]["id"].as_str().unwrap().to_owned();
    s.op("DELETE", &format!("/v1/orgs/{}/tokens/{id}", t.org), None, 204);
    assert_eq!(get(&s, session, &format!("/console/orgs/{}", t.org)).status, 303);
}

#[test]
fn the_device_page_shows_the_apps_ui_tags_notifications_and_messages() {
    let s = Server::start(plugins_with(&["tank-level"]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = tank(&s, &t);
    t.agent(&s, "South tank", "TANK-002");
    // 1,900 mm of 2,000 → 5.6 %, below the 20 % alarm.
    let path = format!("/v1/orgs/{{org}}/agents/{agent}/channels/sensor_data/messages");
    t.call(&s, "POST", &path, Some(&json!({ "distance_mm": 1900 })), 201);
    eventually(10, "the reading to be processed", || {
        t.aggregate(&s, &agent, "tag_values").filter(|v| v["tank_level"]["readings"] == 1)
    });
    let cookie = sign_in(&s, &t.token);

    let org = get(&s, &cookie, &format!("/console/orgs/{}", t.org)).text();
    assert!(org.contains("North tank") && org.contains("South tank") && org.contains("TANK-001"), "{org}");
    assert!(org.contains("periodic"), "the connection the app pinged: {org}");
    let found = get(&s, &cookie, &format!("/console/orgs/{}?q=tank-002", t.org)).text();
    assert!(found.contains("South tank") && !found.contains("North tank"));

    let page = get(&s, &cookie, &format!("/console/orgs/{}/devices/{agent}", t.org));
    assert_eq!(page.status, 200);
    let html = page.text();
    assert!(html.contains(r#"data-bind="tank_level/last_level" data-colour="red">5.6</span>"#), "{html}");
    assert!(html.contains(r#"<span class="ui-range">Low</span>"#));
    assert!(html.contains("Low tank level"), "the notification: {html}");
    assert!(html.contains("sensor_data") && html.contains("tank_level"));
    let channel = get(&s, &cookie, &format!("/console/orgs/{}/devices/{agent}?channel=sensor_data", t.org)).text();
    assert!(channel.contains("&quot;distance_mm&quot;: 1900"), "{channel}");
}

#[test]
fn what_users_and_apps_wrote_renders_as_text() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "<script>alert('name')</script>", "X-1");
    let path = format!("/v1/orgs/{{org}}/agents/{agent}/channels/notes/messages");
    t.call(&s, "POST", &path, Some(&json!({ "text": "<script>alert('message')</script>" })), 201);
    let ui = json!({"state": {"children": {"evil": {"type": "uiVariable", "name": "v", "displayString": "<img src=x onerror=alert(1)>"}}}});
    t.call(&s, "PUT", &format!("/v1/orgs/{{org}}/agents/{agent}/channels/ui_state/aggregate"), Some(&ui), 200);
    let cookie = sign_in(&s, &t.token);
    for path in [format!("/console/orgs/{}", t.org), format!("/console/orgs/{}/devices/{agent}?channel=notes", t.org)] {
        let html = get(&s, &cookie, &path).text();
        assert!(!html.contains("<script>alert") && !html.contains("<img src=x"), "{path}: {html}");
        assert!(html.contains("&lt;script&gt;alert("), "{path}");
    }
}

#[test]
fn another_organisations_pages_are_not_found_and_the_operator_may_switch() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let (a, b) = (tenant(&s, "Alpha"), tenant(&s, "Beta"));
    let b_agent = b.agent(&s, "Beta device", "B-1");
    let cookie = sign_in(&s, &a.token);
    for path in [
        format!("/console/orgs/{}", b.org),
        format!("/console/orgs/{}/devices/{b_agent}", b.org),
        format!("/console/orgs/{}/devices/{b_agent}", a.org),
    ] {
        let r = get(&s, &cookie, &path);
        assert_eq!(r.status, 404, "{path}");
        assert!(!r.text().contains("Beta"), "{path}");
    }
    let op = sign_in(&s, OPERATOR);
    let list = get(&s, &op, "/console/orgs").text();
    assert!(list.contains("Alpha") && list.contains("Beta"));
    assert!(get(&s, &op, &format!("/console/orgs/{}/devices/{b_agent}", b.org)).text().contains("Beta device"));
}

#[test]
fn a_ui_action_needs_its_csrf_token_and_writes_ui_cmds() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Pump", "P-1");
    let ui = json!({"state": {"children": {"pump": {"type": "uiContainer", "displayString": "Pump", "children": {
        "start": {"type": "uiButton", "name": "start", "displayString": "Start"},
        "setpoint": {"type": "uiFloatInput", "name": "setpoint", "displayString": "Setpoint"}}}}}});
    t.call(&s, "PUT", &format!("/v1/orgs/{{org}}/agents/{agent}/channels/ui_state/aggregate"), Some(&ui), 200);
    let cookie = sign_in(&s, &t.token);
    let device = format!("/console/orgs/{}/devices/{agent}", t.org);
    let csrf = csrf_of(&get(&s, &cookie, &device).text());
    let action = format!("{device}/command");
    let form = "app=pump&name=setpoint&kind=float&value=4.5";
    assert_eq!(post(&s, &cookie, &action, form).status, 403, "no CSRF token");
    assert_eq!(post(&s, &cookie, &action, &format!("{form}&csrf=nope")).status, 403, "a wrong one");
    assert_eq!(post(&s, "", &action, &format!("{form}&csrf={csrf}")).status, 303, "no session: to sign in");
    assert!(t.aggregate(&s, &agent, "ui_cmds").is_none(), "nothing was written");
    let r = post(&s, &cookie, &action, &format!("{form}&csrf={csrf}"));
    assert_eq!((r.status, header(&r, "location")), (303, Some(device.as_str())));
    assert_eq!(t.aggregate(&s, &agent, "ui_cmds").unwrap()["cmds"]["setpoint"], 4.5);
    let msgs = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/agents/{agent}/channels/ui_cmds/messages"), None, 200);
    assert_eq!(msgs["messages"][0]["data"]["app_key"], "pump");
    assert_eq!(
        post(&s, &cookie, &action, &format!("app=pump&name=setpoint&kind=float&value=x&csrf={csrf}")).status,
        400
    );
    // The page shows the command's value back in its input.
    assert!(get(&s, &cookie, &device).text().contains(r#"name="value" value="4.5""#));
}

#[test]
fn dead_letters_ingestion_endpoints_and_monitors_are_managed_from_the_console() {
    let s = Server::start(plugins_with(&["counter", "webhook"]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Pump", "P-1");
    t.install(&s, json!({ "app": "counter", "agent_id": agent }));
    let hook = t.install(&s, json!({ "app": "webhook", "app_key": "hook", "config": { "target_channel": "ticks" } }));
    let cookie = sign_in(&s, &t.token);
    let org = format!("/console/orgs/{}", t.org);

    // An echo loop ends as a dead letter ("loop"): listed, redriven, deleted.
    let path = format!("/v1/orgs/{{org}}/agents/{agent}/channels/ticks/messages");
    t.call(&s, "POST", &path, Some(&json!({ "echo": true })), 201);
    let letters =
        || t.call(&s, "GET", "/v1/orgs/{org}/dead-letters", None, 200)["dead_letters"].as_array().unwrap().clone();
    let first = eventually(15, "a dead letter", || letters().first().cloned());
    let id = first["event"]["id"].as_str().unwrap().to_owned();
    let page = get(&s, &cookie, &format!("{org}/dead-letters"));
    assert!(page.text().contains(&id) && page.text().contains("loop"), "{}", page.text());
    let csrf = csrf_of(&page.text());
    assert_eq!(post(&s, &cookie, &format!("{org}/dead-letters/{id}/delete"), "").status, 403, "no CSRF token");
    assert_eq!(post(&s, &cookie, &format!("{org}/dead-letters/{id}/redrive"), &format!("csrf={csrf}")).status, 303);
    let again = eventually(15, "the redriven loop to die again", || {
        letters().into_iter().find(|d| d["event"]["id"] == id.as_str())
    });
    assert_eq!(again["event"]["attempt"], 1);
    assert_eq!(post(&s, &cookie, &format!("{org}/dead-letters/{id}/delete"), &format!("csrf={csrf}")).status, 303);
    assert!(letters().iter().all(|d| d["event"]["id"] != id.as_str()));

    // An ingestion endpoint: its token shown once, and it works.
    let created = post(&s, &cookie, &format!("{org}/ingestions"), &format!("csrf={csrf}&install={hook}&rate=5"));
    assert_eq!(created.status, 200);
    let text = created.text();
    let token = text.split(r#"<code class="secret">"#).nth(1).and_then(|r| r.split('<').next()).unwrap().to_owned();
    assert!(token.starts_with("pdi_"));
    assert!(!get(&s, &cookie, &format!("{org}/ingestions")).text().contains(&token), "shown once");
    let list = t.call(&s, "GET", "/v1/orgs/{org}/ingestions", None, 200);
    let endpoint = list["ingestions"][0]["id"].as_str().unwrap().to_owned();
    assert_eq!(list["ingestions"][0]["rate_per_s"], 5);
    let auth = format!("Bearer {token}");
    let body = json!({ "readings": [{ "serial": "P-1", "n": 1 }] }).to_string();
    let r = request(
        s.addr,
        "POST",
        &format!("/v1/ingest/{endpoint}"),
        &[("authorization", &auth), ("content-type", "application/json")],
        body.as_bytes(),
    )
    .unwrap();
    assert_eq!(r.status, 202, "{}", r.text());
    assert_eq!(post(&s, &cookie, &format!("{org}/ingestions/{endpoint}/delete"), &format!("csrf={csrf}")).status, 303);
    assert!(t.call(&s, "GET", "/v1/orgs/{org}/ingestions", None, 200)["ingestions"].as_array().unwrap().is_empty());

    // Monitors and their status; reset and delete.
    let m = t.call(
        &s,
        "POST",
        "/v1/orgs/{org}/monitors",
        Some(&json!({"topic": "DataPoint", "type": "tcp", "description": "<b>ops</b>"})),
        201,
    );
    let mid = m["id"].as_u64().unwrap();
    let page = get(&s, &cookie, &format!("{org}/monitors")).text();
    assert!(page.contains("INACTIVE") && page.contains("DataPoint") && page.contains("&lt;b&gt;ops"), "{page}");
    assert_eq!(post(&s, &cookie, &format!("{org}/monitors/{mid}/reset"), &format!("csrf={csrf}")).status, 303);
    assert_eq!(post(&s, &cookie, &format!("{org}/monitors/{mid}/delete"), &format!("csrf={csrf}")).status, 303);
    t.call(&s, "GET", &format!("/v1/orgs/{{org}}/monitors/{mid}"), None, 404);
}

/// A live view starts where its page was rendered: what was committed
/// between the page and its socket is pushed (the browser opens the
/// socket after the page has loaded).
#[test]
fn a_live_view_sends_what_happened_since_its_page_was_rendered() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Pump", "P-1");
    let cookie = sign_in(&s, &t.token);
    let page = get(&s, &cookie, &format!("/console/orgs/{}/devices/{agent}", t.org)).text();
    let live = page.split(r#"data-live=""#).nth(1).and_then(|r| r.split('"').next()).unwrap().replace("&amp;", "&");
    // Committed after the page, before the socket.
    let path = format!("/v1/orgs/{{org}}/agents/{agent}/channels/levels/messages");
    t.call(&s, "POST", &path, Some(&json!({ "level": 7 })), 201);
    let mut req = format!("ws://{}{live}", s.addr).into_client_request().unwrap();
    req.headers_mut().insert("cookie", cookie.parse().unwrap());
    let stream = std::net::TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(std::time::Duration::from_secs(10))).unwrap();
    let (mut ws, _) = tokio_tungstenite::tungstenite::client(req, stream).unwrap();
    let frame = loop {
        match ws.read().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => {
                break serde_json::from_str::<serde_json::Value>(&t).unwrap();
            }
            _ => continue,
        }
    };
    assert_eq!(frame["document"]["Document"]["Msg"]["Message"]["data"]["level"], 7, "{frame}");
}

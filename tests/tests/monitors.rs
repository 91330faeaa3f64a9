//! Monitors end to end on a real server: the Device Cloud REST contract,
//! TCP push (frames, both ack forms, compression), replay across a
//! disconnect, tenant isolation, and a stalled client that must not delay
//! another.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use paddock_tests::http::request;
use paddock_tests::push::PushClient;
use paddock_tests::receiver::Receiver;
use paddock_tests::server::{Server, plugins_with};
use paddock_tests::tenant::{Tenant, tenant};
use serde_json::{Value, json};

fn basic(t: &Tenant) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", t.org, t.token)))
}

/// A `/ws/*` request as python-devicecloud makes it: Basic credentials,
/// and for a POST a body with no content type.
fn ws(s: &Server, t: &Tenant, method: &str, path: &str, body: &str) -> paddock_tests::http::Response {
    let auth = basic(t);
    request(s.addr, method, path, &[("authorization", &auth), ("accept", "application/json")], body.as_bytes()).unwrap()
}

/// The create body python-devicecloud sends for a TCP monitor.
fn tcp_body(topics: &str, compression: &str) -> String {
    format!(
        "<Monitor>\n    <monTopic>{topics}</monTopic>\n    <monBatchSize>1</monBatchSize>\n    <monFormatType>json</monFormatType>\n    \
         <monTransportType>tcp</monTransportType>\n    <monCompression>{compression}</monCompression>\n</Monitor>\n"
    )
}

fn create_tcp(s: &Server, t: &Tenant, topics: &str, compression: &str) -> u32 {
    let r = ws(s, t, "POST", "/ws/Monitor", &tcp_body(topics, compression));
    assert_eq!(r.status, 201, "{}", r.text());
    let text = r.text();
    let id = text.split("<location>Monitor/").nth(1).and_then(|r| r.split('<').next()).unwrap();
    let location = r.headers.iter().find(|(k, _)| k == "location").map(|(_, v)| v.clone());
    assert_eq!(location, Some(format!("Monitor/{id}")));
    id.parse().unwrap()
}

fn publish(s: &Server, t: &Tenant, agent: &str, channel: &str, data: Value) -> String {
    let path = format!("/v1/orgs/{{org}}/agents/{agent}/channels/{channel}/messages");
    t.call(s, "POST", &path, Some(&data), 201)["message_id"].as_str().unwrap().to_owned()
}

fn connect(s: &Server, t: &Tenant, id: u32) -> PushClient {
    let (status, client) = PushClient::connect(s.push.unwrap(), &t.org, &t.token, id);
    assert_eq!(status, 200);
    client.unwrap()
}

#[test]
fn the_device_cloud_rest_contract_holds() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    // The client's credential check.
    assert_eq!(ws(&s, &t, "GET", "/ws/DeviceCore?size=1", "").status, 200);
    let auth = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{}:wrong", t.org)));
    let r = request(s.addr, "GET", "/ws/DeviceCore?size=1", &[("authorization", &auth)], b"").unwrap();
    assert_eq!(r.status, 401);
    // A trailing slash on the client's base URL: `//ws/...`.
    assert_eq!(ws(&s, &t, "GET", "//ws/DeviceCore?size=1", "").status, 200);

    let a = create_tcp(&s, &t, "DataPoint,*/channels/x[C,U]", "gzip");
    // An HTTP monitor, with the client's literal `None` token and a URL
    // whose query string it does not escape.
    let http = "<Monitor>\n    <monTopic>DeviceCore</monTopic>\n    <monBatchSize>1</monBatchSize>\n    <monFormatType>json</monFormatType>\n    \
                <monTransportType>http</monTransportType>\n    <monTransportUrl>http://127.0.0.1:9/hook?a=1&b=2</monTransportUrl>\n    \
                <monTransportToken>None</monTransportToken>\n    <monTransportMethod>PUT</monTransportMethod>\n    \
                <monConnectTimeout>0</monConnectTimeout>\n    <monResponseTimeout>0</monResponseTimeout>\n    <monCompression>none</monCompression>\n</Monitor>\n";
    let r = ws(&s, &t, "POST", "/ws/Monitor", http);
    assert_eq!(r.status, 201, "{}", r.text());
    let c = create_tcp(&s, &t, "DataStream", "none");
    assert!(a < c, "ids increase");

    // Paging: remainingSize is exact, values are strings, no token shown.
    let page = ws(&s, &t, "GET", "/ws/Monitor?start=0&size=2", "").json();
    assert_eq!((page["resultSize"].as_str(), page["remainingSize"].as_str()), (Some("2"), Some("1")));
    let rest = ws(&s, &t, "GET", "/ws/Monitor?start=2&size=2", "").json();
    assert_eq!((rest["resultSize"].as_str(), rest["remainingSize"].as_str()), (Some("1"), Some("0")));
    let first = &page["items"][0];
    assert_eq!(first["monId"], a.to_string());
    assert_eq!(first["monTransportType"], "tcp");
    assert_eq!(first["monCompression"], "gzip");
    assert_eq!(first["monBatchSize"], "1");
    assert_eq!(first["monStatus"], "INACTIVE");
    assert_eq!(first["cstId"], t.org);
    let http_item = &page["items"][1];
    assert_eq!(http_item["monTransportUrl"], "http://127.0.0.1:9/hook?a=1&b=2");
    assert!(http_item.get("monTransportToken").is_none());

    // condition=: the client's exact-match find, form-encoded.
    let q = "/ws/Monitor?start=0&size=1000&condition=monTopic%3D%27DataPoint%2C%2A%2Fchannels%2Fx%5BC%2CU%5D%27";
    let found = ws(&s, &t, "GET", q, "").json();
    assert_eq!(found["items"].as_array().unwrap().len(), 1);
    assert_eq!(found["items"][0]["monId"], a.to_string());
    let reordered = "/ws/Monitor?condition=monTopic%3D%27%2A%2Fchannels%2Fx%5BC%2CU%5D%2CDataPoint%27";
    assert!(ws(&s, &t, "GET", reordered, "").json()["items"].as_array().unwrap().is_empty());
    let both = "/ws/Monitor?condition=monTopic%3D%27DeviceCore%27+and+monTransportType%3D%27http%27";
    assert_eq!(ws(&s, &t, "GET", both, "").json()["items"].as_array().unwrap().len(), 1);
    assert_eq!(ws(&s, &t, "GET", "/ws/Monitor?condition=monColour%3D%27x%27", "").status, 400);

    // The single GET is the envelope with one item; unknown ids are 404.
    let one = ws(&s, &t, "GET", &format!("/ws/Monitor/{c}"), "").json();
    assert_eq!(one["items"][0]["monTopic"], "DataStream");
    assert_eq!(ws(&s, &t, "GET", &format!("/ws/Monitor/{c}.json"), "").json()["items"][0]["monId"], c.to_string());
    assert_eq!(ws(&s, &t, "GET", "/ws/Monitor/.json", "").json()["resultTotalRows"], "3");
    let missing = ws(&s, &t, "GET", "/ws/Monitor/999999", "");
    assert_eq!(missing.status, 404);
    assert!(missing.text().contains("Error reading Monitor entity id='999999'"));

    // A bad topic is a 400 naming the fault.
    let bad = ws(&s, &t, "POST", "/ws/Monitor", &tcp_body("FileData", "none"));
    assert_eq!(bad.status, 400);
    assert!(bad.text().contains("Invalid monTopic specified") && bad.text().contains("FileData"), "{}", bad.text());

    // The native API reads the same record.
    let native = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/monitors/{a}"), None, 200);
    assert_eq!((native["topic"].as_str(), native["type"].as_str()), (Some("DataPoint,*/channels/x[C,U]"), Some("tcp")));
    assert_eq!(native["status"], "inactive");

    // Delete; then it is gone from both views.
    let r = ws(&s, &t, "DELETE", &format!("/ws/Monitor/{a}"), "");
    assert_eq!(r.status, 200);
    assert!(r.text().contains("1 items deleted"));
    assert_eq!(ws(&s, &t, "DELETE", &format!("/ws/Monitor/{a}"), "").status, 404);
    t.call(&s, "GET", &format!("/v1/orgs/{{org}}/monitors/{a}"), None, 404);
}

#[test]
fn tcp_push_delivers_committed_messages_with_both_ack_forms_and_zlib() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Tank", "T-1");
    let id = create_tcp(&s, &t, &format!("DataPoint/{agent}/levels"), "gzip");

    // Wrong password, another organisation's name, an unknown monitor: 403.
    let push = s.push.unwrap();
    assert_eq!(PushClient::connect(push, &t.org, "pdk_wrong", id).0, 403);
    assert_eq!(PushClient::connect(push, "12345", &t.token, id).0, 403);
    assert_eq!(PushClient::connect(push, &t.org, &t.token, 424_242).0, 403);

    let mut client = connect(&s, &t, id);
    assert!(client.next(Duration::from_millis(300)).is_none(), "nothing before anything happens");
    let sent = publish(&s, &t, &agent, "levels", json!({"level": 41}));
    publish(&s, &t, &agent, "other", json!({"ignored": true}));
    let p = client.next(Duration::from_secs(5)).expect("a push");
    assert!(p.compressed, "gzip means zlib framing");
    assert_eq!((p.block, p.count), (1, 1));
    let doc = p.json();
    let msg = &doc["Document"]["Msg"];
    assert!(msg.is_object(), "a batch of one is an object: {doc}");
    assert_eq!(msg["topic"], format!("{}/Message/{agent}/levels/{sent}", t.org));
    assert_eq!(msg["operation"], "INSERTION");
    assert_eq!(msg["Message"]["data"], json!({"level": 41}));
    assert!(msg.get("replay").is_none());
    client.ack(p.block, false);
    publish(&s, &t, &agent, "levels", json!({"level": 42}));
    let p = client.next(Duration::from_secs(5)).expect("a second push");
    assert_eq!(p.block, 2);
    assert_eq!(p.msgs()[0]["Message"]["data"]["level"], 42);
    client.ack(p.block, true);
    // The other channel never came.
    assert!(client.next(Duration::from_millis(300)).is_none());

    let state = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/monitors/{id}"), None, 200);
    assert_eq!(state["status"], "active");
    assert_eq!(state["delivered_batches"], 2);
    let metrics = s.call("GET", "/metrics", Some(paddock_tests::server::OPERATOR), None).text();
    let labels = format!("organisation=\"{}\",monitor=\"{id}\"", t.org);
    assert!(metrics.contains(&format!("paddock_monitor_status{{{labels},status=\"active\"}} 1")), "{metrics}");
    assert!(metrics.contains(&format!("paddock_monitor_delivered_batches_total{{{labels}}} 2")), "{metrics}");
    assert!(metrics.contains(&format!("paddock_monitor_lag_seconds{{{labels}}} 0")), "{metrics}");
    assert!(metrics.contains("paddock_monitor_sessions 1"), "{metrics}");
    drop(client);
    paddock_tests::server::eventually(5, "the monitor to go inactive", || {
        let m = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/monitors/{id}"), None, 200);
        (m["status"] == "inactive").then_some(())
    });
}

#[test]
fn a_persistent_monitor_replays_what_it_missed_in_order_then_goes_live() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Tank", "T-1");
    let body = json!({"topics": [format!("{agent}/channels/levels")], "type": "tcp", "persistent": true, "batch_size": 2, "batch_duration": 0, "ack": "explicit"});
    let id: u32 = t.call(&s, "POST", "/v1/orgs/{org}/monitors", Some(&body), 201)["id"].as_u64().unwrap() as u32;
    // Missed while never connected: 0..3.
    for n in 0..3 {
        publish(&s, &t, &agent, "levels", json!({"n": n}));
    }
    let mut client = connect(&s, &t, id);
    let first = client.next(Duration::from_secs(5)).unwrap();
    assert_eq!(first.count, 2);
    client.ack(first.block, false);
    let second = client.next(Duration::from_secs(5)).unwrap();
    // Not acknowledged: a reconnect must get it again.
    assert_eq!(second.msgs().iter().map(|m| m["Message"]["data"]["n"].clone()).collect::<Vec<_>>(), [json!(2)]);
    assert!(second.msgs().iter().all(|m| m["replay"] == true));
    drop(client);
    let m = paddock_tests::server::eventually(5, "suspended", || {
        let m = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/monitors/{id}"), None, 200);
        (m["status"] == "suspended").then_some(m)
    });
    assert_eq!(m["delivered_batches"], 1);
    // Missed while away: 3..6.
    for n in 3..6 {
        publish(&s, &t, &agent, "levels", json!({"n": n}));
    }
    let mut client = connect(&s, &t, id);
    let mut seen = Vec::new();
    while seen.len() < 4 {
        let p = client.next(Duration::from_secs(5)).expect("replay");
        for m in p.msgs() {
            assert_eq!(m["replay"], true, "{m}");
            seen.push(m["Message"]["data"]["n"].as_u64().unwrap());
        }
        client.ack(p.block, true);
    }
    assert_eq!(seen, [2, 3, 4, 5], "the unacknowledged batch first, nothing skipped, in order");
    publish(&s, &t, &agent, "levels", json!({"n": 6}));
    let live = client.next(Duration::from_secs(5)).unwrap();
    assert!(live.msgs()[0].get("replay").is_none(), "live after replay");
    assert_eq!(live.msgs()[0]["Message"]["data"]["n"], 6);
}

#[test]
fn a_wildcard_monitor_of_another_organisation_sees_nothing_of_it() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let (a, b) = (tenant(&s, "Alpha"), tenant(&s, "Beta"));
    let a_agent = a.agent(&s, "A", "A-1");
    let b_agent = b.agent(&s, "B", "B-1");
    let b_mon = create_tcp(&s, &b, "*", "none");
    // A's monitor id with B's credentials: refused.
    let a_mon = create_tcp(&s, &a, "*", "none");
    assert_eq!(PushClient::connect(s.push.unwrap(), &b.org, &b.token, a_mon).0, 403);
    assert_eq!(PushClient::connect(s.push.unwrap(), &a.org, &b.token, a_mon).0, 403);
    let mut client = connect(&s, &b, b_mon);
    for n in 0..20 {
        publish(&s, &a, &a_agent, "secrets", json!({"n": n}));
    }
    publish(&s, &b, &b_agent, "mine", json!({"marker": true}));
    let msgs = client.msgs(1, 5);
    assert_eq!(msgs[0]["Message"]["data"], json!({"marker": true}));
    assert!(client.next(Duration::from_millis(500)).is_none());
    assert!(!msgs[0].to_string().contains(&a.org));
}

#[test]
fn a_stalled_client_does_not_delay_another_monitor() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Tank", "T-1");
    let stalled_id = create_tcp(&s, &t, "DataPoint", "none");
    let live_id = create_tcp(&s, &t, "DataPoint", "none");
    // Connected, never reading: its socket buffers fill and its writes stall.
    let _stalled = connect(&s, &t, stalled_id);
    let mut live = connect(&s, &t, live_id);
    let big = "x".repeat(150_000);
    let started = Instant::now();
    let mut worst = Duration::ZERO;
    for n in 0..150 {
        let sent = Instant::now();
        publish(&s, &t, &agent, "levels", json!({"n": n, "pad": big}));
        let got = live.msgs(1, 10);
        assert_eq!(got[0]["Message"]["data"]["n"], n);
        worst = worst.max(sent.elapsed());
    }
    assert!(worst < Duration::from_secs(2), "the live monitor waited {worst:?} for one event");
    assert!(started.elapsed() < Duration::from_secs(60));
    let stalled = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/monitors/{stalled_id}"), None, 200);
    assert_eq!(stalled["status"], "active", "a stalled session is not closed before its write timeout");
    // 22 MB were meant for the stalled client: its socket buffers took
    // some, and its session waits on a write for the rest.
    let delivered = stalled["delivered_batches"].as_u64().unwrap();
    assert!(delivered < 150, "the stalled client was not stalled ({delivered} batches written)");
}

fn loopback_allowed(c: &mut paddock::serve::ServeConfig) {
    c.outbound.allow_private = vec!["127.0.0.0/8".into()];
}

fn monitor_state(s: &Server, t: &Tenant, id: u64) -> Value {
    t.call(s, "GET", &format!("/v1/orgs/{{org}}/monitors/{id}"), None, 200)
}

fn data_n(r: &paddock_tests::receiver::Received) -> u64 {
    let doc: Value = serde_json::from_slice(&r.body).unwrap();
    doc["Document"]["Msg"]["Message"]["data"]["n"].as_u64().unwrap()
}

#[test]
fn an_http_monitor_sends_each_batch_with_device_cloud_headers_and_a_verifiable_signature() {
    use hmac::Mac as _;
    let s = Server::start(plugins_with(&[]), loopback_allowed);
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Tank", "T-1");
    let rx = Receiver::start(&[]);
    let body = json!({
        "topics": ["DataPoint"], "type": "http", "url": format!("http://{}/hook?a=1&b=2", rx.addr), "method": "POST",
        "auth_token": "user:pw", "headers": ["X-Custom: yes", "Content-Type: text/evil"], "sign": true,
        "batch_size": 1, "batch_duration": 0,
    });
    let created = t.call(&s, "POST", "/v1/orgs/{org}/monitors", Some(&body), 201);
    let secret = created["signing_secret"].as_str().unwrap().to_owned();
    let id = created["id"].as_u64().unwrap();
    assert!(monitor_state(&s, &t, id).get("signing_secret").is_none(), "the secret is shown once");
    for n in 0..2 {
        publish(&s, &t, &agent, "levels", json!({"n": n}));
    }
    let got = rx.wait_for(2, 10);
    for (i, r) in got.iter().enumerate() {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hook?a=1&b=2"));
        assert_eq!(r.header("content-type"), Some("application/json;charset=UTF-8"), "custom headers never override");
        assert_eq!(r.header("monitor-protocol-version"), Some("1.0"));
        assert_eq!(r.header("monitor-datablockid"), Some((i + 1).to_string().as_str()));
        assert_eq!(r.header("monitor-aggregate-count"), Some("1"));
        assert_eq!(r.header("x-custom"), Some("yes"));
        let basic = base64::engine::general_purpose::STANDARD.encode("user:pw");
        assert_eq!(r.header("authorization"), Some(format!("Basic {basic}").as_str()));
        assert_eq!(data_n(r), i as u64, "in commit order");
        // Standard Webhooks: v1 = HMAC-SHA256(key, "{id}.{timestamp}.{body}").
        let (wid, ts) = (r.header("webhook-id").unwrap(), r.header("webhook-timestamp").unwrap());
        let key = base64::engine::general_purpose::STANDARD.decode(secret.trim_start_matches("whsec_")).unwrap();
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{wid}.{ts}.").as_bytes());
        mac.update(&r.body);
        let expected = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
        assert_eq!(r.header("webhook-signature"), Some(format!("v1,{expected}").as_str()));
    }
    assert_ne!(got[0].header("webhook-id"), got[1].header("webhook-id"));
    paddock_tests::server::eventually(5, "active", || (monitor_state(&s, &t, id)["status"] == "active").then_some(()));
}

#[test]
fn a_refused_batch_is_sent_again_until_accepted_and_nothing_is_skipped_or_reordered() {
    let s = Server::start(plugins_with(&[]), loopback_allowed);
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Tank", "T-1");
    let rx = Receiver::start(&[500, 503]);
    let body = json!({"topics": ["DataPoint"], "type": "http", "url": format!("http://{}/hook", rx.addr), "batch_size": 1, "batch_duration": 0});
    let id = t.call(&s, "POST", "/v1/orgs/{org}/monitors", Some(&body), 201)["id"].as_u64().unwrap();
    for n in 0..3 {
        publish(&s, &t, &agent, "levels", json!({"n": n}));
    }
    rx.wait_for(1, 5);
    let failing = paddock_tests::server::eventually(5, "connecting", || {
        let m = monitor_state(&s, &t, id);
        (m["status"] == "connecting").then_some(m)
    });
    assert!(failing["failed_batches"].as_u64().unwrap() >= 1);
    assert!(failing["failing_since"].is_string());
    // 1 s, then 2 s of backoff, then the rest.
    let got = rx.wait_for(5, 15);
    let order: Vec<(u64, u16)> = got.iter().map(|r| (data_n(r), r.answered)).collect();
    assert_eq!(order, [(0, 500), (0, 503), (0, 200), (1, 200), (2, 200)]);
    assert_eq!(got[0].header("monitor-datablockid"), got[2].header("monitor-datablockid"), "the same block again");
    // The cursor of what the receiver holds is saved by the writer just
    // after: the state catches up within moments.
    let m = paddock_tests::server::eventually(5, "three batches delivered", || {
        let m = monitor_state(&s, &t, id);
        (m["delivered_batches"] == 3).then_some(m)
    });
    assert_eq!(m["status"], "active");
    assert!(m["failing_since"].is_null());
}

#[test]
fn a_private_receiver_is_refused_unless_the_operator_allows_its_range() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Tank", "T-1");
    let rx = Receiver::start(&[]);
    let body = json!({"topics": ["DataPoint"], "type": "http", "url": format!("http://localhost:{}/hook", rx.addr.port()), "batch_size": 1, "batch_duration": 0});
    let id = t.call(&s, "POST", "/v1/orgs/{org}/monitors", Some(&body), 201)["id"].as_u64().unwrap();
    publish(&s, &t, &agent, "levels", json!({"n": 0}));
    let m = paddock_tests::server::eventually(5, "a failure", || {
        let m = monitor_state(&s, &t, id);
        (m["failed_batches"].as_u64() >= Some(1)).then_some(m)
    });
    assert_eq!(m["status"], "connecting");
    std::thread::sleep(Duration::from_millis(300));
    assert!(rx.received().is_empty(), "nothing reached the private address");
}

#[test]
fn a_monitor_failing_too_long_is_disabled_with_a_notification_and_a_reset_recovers_it() {
    let s = Server::start(plugins_with(&[]), |c| {
        loopback_allowed(c);
        c.monitors.disable_after_s = 1;
    });
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Tank", "T-1");
    let rx = Receiver::start(&[500, 500]);
    let body = json!({"topics": ["DataPoint"], "type": "http", "url": format!("http://{}/hook", rx.addr), "batch_size": 1, "batch_duration": 0});
    let id = t.call(&s, "POST", "/v1/orgs/{org}/monitors", Some(&body), 201)["id"].as_u64().unwrap();
    publish(&s, &t, &agent, "levels", json!({"n": 0}));
    paddock_tests::server::eventually(10, "disabled", || {
        (monitor_state(&s, &t, id)["status"] == "disabled").then_some(())
    });
    // A failure, 1 s of backoff, a second failure 1 s after the first:
    // past `disable_after_s`.
    let tries = rx.received().len();
    assert_eq!(tries, 2);
    let org_agent = &t.org_agent;
    let notes =
        t.call(&s, "GET", &format!("/v1/orgs/{{org}}/agents/{org_agent}/channels/notifications/messages"), None, 200);
    let note = notes["messages"][0]["data"]["message"].as_str().unwrap_or_default().to_owned();
    assert!(note.contains(&format!("Monitor {id}")) && note.contains("disabled"), "{notes}");
    // Disabled: nothing is tried any more.
    publish(&s, &t, &agent, "levels", json!({"n": 1}));
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(rx.received().len(), tries);
    // Reset: delivery resumes from now (a disabled monitor kept nothing).
    let reset = t.call(&s, "POST", &format!("/v1/orgs/{{org}}/monitors/{id}/reset"), None, 200);
    assert_eq!(reset["status"], "inactive");
    publish(&s, &t, &agent, "levels", json!({"n": 2}));
    let got = rx.wait_for(tries + 1, 10);
    assert_eq!((data_n(got.last().unwrap()), got.last().unwrap().answered), (2, 200));
}

type WsClient = tokio_tungstenite::tungstenite::WebSocket<std::net::TcpStream>;

fn open_stream(s: &Server, t: &Tenant, id: u64) -> Result<WsClient, u16> {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let url = format!("ws://{}/v1/orgs/{}/monitors/{id}/stream", s.addr, t.org);
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert("authorization", format!("Bearer {}", t.token).parse().unwrap());
    let stream = std::net::TcpStream::connect(s.addr).unwrap();
    stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    match tokio_tungstenite::tungstenite::client(req, stream) {
        Ok((ws, _)) => Ok(ws),
        Err(tokio_tungstenite::tungstenite::HandshakeError::Failure(tokio_tungstenite::tungstenite::Error::Http(
            r,
        ))) => Err(r.status().as_u16()),
        Err(e) => panic!("handshake: {e}"),
    }
}

/// The next batch frame (pings are answered by the client library).
fn next_batch(ws: &mut WsClient) -> Value {
    loop {
        match ws.read().unwrap() {
            tokio_tungstenite::tungstenite::Message::Text(t) => return serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    }
}

#[test]
fn a_websocket_stream_replays_then_goes_live_with_explicit_acks() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let (t, other) = (tenant(&s, "Acme"), tenant(&s, "Other"));
    let agent = t.agent(&s, "Tank", "T-1");
    let body = json!({"topics": ["DataPoint"], "type": "websocket", "persistent": true, "ack": "explicit", "batch_size": 5, "batch_duration": 0});
    let id = t.call(&s, "POST", "/v1/orgs/{org}/monitors", Some(&body), 201)["id"].as_u64().unwrap();
    // Not a WebSocket request: 426; another organisation's token: 403.
    assert_eq!(s.call("GET", &format!("/v1/orgs/{}/monitors/{id}/stream", t.org), Some(&t.token), None).status, 426);
    let foreign = Tenant { org: t.org.clone(), token: other.token.clone(), org_agent: String::new() };
    assert_eq!(open_stream(&s, &foreign, id).err(), Some(403));
    // A TCP monitor cannot be streamed.
    let tcp = create_tcp(&s, &t, "DataPoint", "none");
    assert_eq!(open_stream(&s, &t, u64::from(tcp)).err(), Some(400));

    for n in 0..3 {
        publish(&s, &t, &agent, "levels", json!({"n": n}));
    }
    let mut ws = open_stream(&s, &t, id).unwrap();
    let batch = next_batch(&mut ws);
    assert_eq!(
        (batch["block"].as_u64(), batch["count"].as_u64(), batch["replay"].as_bool()),
        (Some(1), Some(3), Some(true))
    );
    let ns: Vec<u64> = batch["document"]["Document"]["Msg"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["Message"]["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [0, 1, 2]);
    ws.send(tokio_tungstenite::tungstenite::Message::text(json!({"ack": 1}).to_string())).unwrap();
    publish(&s, &t, &agent, "levels", json!({"n": 3}));
    let live = next_batch(&mut ws);
    assert_eq!((live["block"].as_u64(), live["replay"].as_bool()), (Some(2), Some(false)));
    assert_eq!(live["document"]["Document"]["Msg"]["Message"]["data"]["n"], 3);
    // Not acknowledged, and the connection replaced by a new one: the
    // unacknowledged batch comes again, marked replay.
    let mut again = open_stream(&s, &t, id).unwrap();
    let resent = next_batch(&mut again);
    assert_eq!(resent["document"]["Document"]["Msg"]["Message"]["data"]["n"], 3);
    assert_eq!(resent["replay"], true);
    let m = monitor_state(&s, &t, id);
    assert_eq!((m["status"].as_str(), m["delivered_batches"].as_u64()), (Some("active"), Some(1)));
}

#[test]
fn a_device_core_monitor_sees_agents_created() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    let id = create_tcp(&s, &t, "DeviceCore", "none");
    let mut client = connect(&s, &t, id);
    let agent = t.agent(&s, "Pump", "P-1");
    let msgs = client.msgs(1, 5);
    assert_eq!(msgs[0]["topic"], format!("{}/Agent/{agent}/{agent}", t.org));
    assert_eq!(msgs[0]["operation"], "INSERTION");
    assert_eq!(msgs[0]["Agent"]["name"], "Pump");
    assert_eq!(msgs[0]["Agent"]["serial_number"], "P-1");
}

#[test]
fn history_lists_what_a_monitor_matched_by_time_and_cursor() {
    let s = Server::start(plugins_with(&[]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Tank", "T-1");
    let body = json!({"topics": [format!("{agent}/channels/levels")], "type": "websocket", "persistent": true});
    let id = t.call(&s, "POST", "/v1/orgs/{org}/monitors", Some(&body), 201)["id"].as_u64().unwrap();
    for n in 0..5 {
        publish(&s, &t, &agent, "levels", json!({"n": n}));
        publish(&s, &t, &agent, "other", json!({"n": n}));
    }
    let path = format!("/v1/orgs/{{org}}/monitors/{id}/history?size=3&start_time=-5m");
    let page = t.call(&s, "GET", &path, None, 200);
    let ns = |p: &Value| {
        p["list"].as_array().unwrap().iter().map(|m| m["Message"]["data"]["n"].as_u64().unwrap()).collect::<Vec<_>>()
    };
    assert_eq!(ns(&page), [0, 1, 2]);
    let cursor = page["cursor"].as_str().unwrap();
    let next = t.call(&s, "GET", &format!("/v1/orgs/{{org}}/monitors/{id}/history?size=3&cursor={cursor}"), None, 200);
    assert_eq!(ns(&next), [3, 4]);
    assert!(next["cursor"].is_null());
    let future =
        t.call(&s, "GET", &format!("/v1/orgs/{{org}}/monitors/{id}/history?start_time=99999999999999"), None, 200);
    assert_eq!(future["count"], 0);
    t.call(&s, "GET", &format!("/v1/orgs/{{org}}/monitors/{id}/history?start_time=-5x"), None, 400);
}

#[test]
fn every_attempt_of_an_invocation_is_on_the_feed() {
    let s = Server::start(plugins_with(&["counter"]), |_| {});
    let t = tenant(&s, "Acme");
    let agent = t.agent(&s, "Tank", "T-1");
    t.install(&s, json!({ "app": "counter", "agent_id": agent }));
    let id = create_tcp(&s, &t, &format!("{agent}/invocations"), "none");
    let mut client = connect(&s, &t, id);
    publish(&s, &t, &agent, "ticks", json!({"fail_attempts": 1}));
    let msgs = client.msgs(2, 15);
    let attempts: Vec<(u64, String)> = msgs
        .iter()
        .map(|m| (m["Invocation"]["attempt"].as_u64().unwrap(), m["Invocation"]["status"].as_str().unwrap().to_owned()))
        .collect();
    assert_eq!(attempts, [(1, "error".to_owned()), (2, "success".to_owned())], "{msgs:?}");
    assert!(msgs[0]["topic"].as_str().unwrap().starts_with(&format!("{}/Invocation/{agent}/", t.org)));
    assert!(msgs.iter().all(|m| m["Invocation"].get("logs").is_none()), "logs stay in the API");
}

/// An HTTP monitor's runner is a task of its own: however late it first
/// runs, it delivers what was committed after the monitor was created
/// (it used to move a live-only monitor's cursor to the head it found
/// then, skipping whatever had been committed in between).
#[test]
fn an_http_monitor_whose_runner_starts_late_misses_nothing_committed_after_its_creation() {
    use paddock::engine::{Engine, EngineConfig};
    use paddock::model::{ChannelName, ChannelRef, OrgId};
    use paddock::monitors::{MonitorConfig, Monitors};
    use paddock::store::{HttpTarget, MonitorSpec, Store, Transport};

    let rx = Receiver::start(&[]);
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let org = OrgId::from(4242);
    paddock::tenants::provision_org(&store, org, "Acme").unwrap();
    let new = paddock::tenants::NewAgent { name: "Tank".into(), serial_number: None, group: None, metadata: None };
    let agent = paddock::tenants::add_agent(&store, org, new).unwrap();
    let runtime = Arc::new(paddock_tests::runtime());
    let engine = Arc::new(Engine::new(store, runtime, EngineConfig::default()).unwrap());
    let config = MonitorConfig { allow_private: vec!["127.0.0.0/8".parse().unwrap()], ..MonitorConfig::default() };
    let target = HttpTarget {
        url: format!("http://{}/hook", rx.addr),
        method: "POST".into(),
        token: None,
        headers: Vec::new(),
        connect_timeout_ms: 2000,
        response_timeout_ms: 2000,
        signing_secret: None,
    };
    let spec = MonitorSpec {
        batch_size: 1,
        batch_duration_s: 0,
        format: "json".into(),
        ..MonitorSpec::new("DataPoint".into(), Transport::Http(target))
    };
    let channel = ChannelRef { agent_id: agent.id, name: ChannelName::new("levels").unwrap() };

    // One thread: the runner task `create` spawns cannot run before this
    // test's future yields.
    let local = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    local.block_on(async {
        let monitors = Monitors::new(Arc::clone(&engine), config).await.unwrap();
        monitors.create(org, spec).await.unwrap();
        // Committed and durable on another thread before the runner ever
        // runs (this thread does not yield meanwhile).
        std::thread::scope(|s| {
            s.spawn(|| {
                let other = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
                other.block_on(engine.publish_message(channel.clone(), agent.id, json!({"n": 7}))).unwrap();
            })
            .join()
            .unwrap();
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while rx.received().is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    });
    let got = rx.received();
    assert_eq!(got.len(), 1, "the event committed before the runner first ran was delivered");
    assert_eq!(data_n(&got[0]), 7);
}

/// Monitors created at once cannot pass the organisation's bound: the
/// writer counts them with each creation.
#[tokio::test]
async fn monitors_created_at_once_stop_at_the_organisations_bound() {
    use paddock::engine::{Engine, EngineConfig};
    use paddock::model::OrgId;
    use paddock::monitors::{MonitorConfig, MonitorError, Monitors};
    use paddock::store::{MonitorSpec, Store, Transport};

    let store = Store::temporary().unwrap();
    let org = OrgId::from(4343);
    paddock::tenants::provision_org(&store, org, "Acme").unwrap();
    let engine = Arc::new(Engine::new(store, Arc::new(paddock_tests::runtime()), EngineConfig::default()).unwrap());
    let monitors = Monitors::new(engine, MonitorConfig { max_per_org: 3, ..MonitorConfig::default() }).await.unwrap();
    let mut creating = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let monitors = Arc::clone(&monitors);
        creating.spawn(async move { monitors.create(org, MonitorSpec::new("DataPoint".into(), Transport::Tcp)).await });
    }
    let all = creating.join_all().await;
    let made = all.iter().filter(|r| r.is_ok()).count();
    let refused = all.iter().filter(|r| matches!(r, Err(MonitorError::TooMany(3)))).count();
    assert_eq!((made, refused), (3, 5), "{all:?}");
    assert_eq!(monitors.list(org).unwrap().len(), 3);
}

/// The bootstrap file's writes go through the engine's write path: an
/// agent it creates in an organisation that already has a monitor is on
/// that organisation's feed.
#[test]
fn an_agent_the_bootstrap_file_creates_is_on_a_watching_organisations_feed() {
    use paddock::model::OrgId;
    use paddock::store::{MonitorRecord, MonitorSpec, Store, Transport};

    let data = tempfile::tempdir().unwrap();
    let (org, monitor) = {
        // Where `paddock serve` keeps its store in its data directory.
        let store = Store::open(&data.path().join("store")).unwrap();
        let org = paddock::tenants::provision_org(&store, OrgId::generate(), "Acme").unwrap();
        let spec = MonitorSpec { persistent: true, ..MonitorSpec::new("DeviceCore".into(), Transport::Tcp) };
        let rec = MonitorRecord { id: 0, org: org.id, created_ms: 0, spec };
        let id = store.create_monitor(rec, 0).unwrap();
        store.flush_blocking().unwrap();
        (org.id, id)
    };
    let file = data.path().join("bootstrap.toml");
    std::fs::write(
        &file,
        "[[organisations]]\nname = \"Acme\"\ntokens = [{ name = \"t\", secret = \"pdk_acme\" }]\n\
         [[organisations.agents]]\nname = \"Pump\"\nserial_number = \"P-9\"\n",
    )
    .unwrap();
    let dir = data.path().to_path_buf();
    let s = Server::start(plugins_with(&[]), |c| {
        c.data = dir;
        c.bootstrap = Some(file);
    });
    let path = format!("/v1/orgs/{org}/monitors/{monitor}/history?start_time=-5m");
    let history = s.call("GET", &path, Some("pdk_acme"), None);
    assert_eq!(history.status, 200, "{}", history.text());
    let list = history.json()["list"].clone();
    let agents: Vec<&Value> = list.as_array().unwrap().iter().filter(|m| m.get("Agent").is_some()).collect();
    assert_eq!(agents.len(), 1, "{list}");
    assert_eq!(
        (agents[0]["Agent"]["name"].as_str(), agents[0]["Agent"]["serial_number"].as_str()),
        (Some("Pump"), Some("P-9"))
    );
    drop(s); // before the directory it writes to
    drop(data);
}

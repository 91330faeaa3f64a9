//! Hardening, end to end on a real listener: what the server turned away
//! is taken when the sender retries, and nothing accepted is dropped.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use paddock_tests::http::Response;
use paddock_tests::server::{Server, eventually, plugins_with};
use paddock_tests::tenant::{Tenant, post_ingest, tenant};
use serde_json::json;
use sha2::Sha256;

const KEY: [u8; 24] = [9; 24];
const BODY: &[u8] = br#"{"readings":[]}"#;

/// An ingestion endpoint with Standard Webhooks signatures.
struct Hook {
    id: String,
    auth: String,
}

fn standard_hook(s: &Server, t: &Tenant, install: &str, rate: u32) -> Hook {
    let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(KEY));
    let (id, created) = t.ingestion(s, json!({ "install_id": install, "webhook_secret": whsec, "rate_per_s": rate }));
    Hook { id, auth: format!("Bearer {}", created["token"].as_str().unwrap()) }
}

/// Post `BODY` as message `msg_id`, signed as the `standardwebhooks` client signs.
fn send(s: &Server, hook: &Hook, msg_id: &str) -> Response {
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs().to_string();
    let mut mac = Hmac::<Sha256>::new_from_slice(&KEY).unwrap();
    mac.update(format!("{msg_id}.{ts}.").as_bytes());
    mac.update(BODY);
    let sig = format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()));
    let headers = [
        ("authorization", hook.auth.as_str()),
        ("webhook-id", msg_id),
        ("webhook-timestamp", ts.as_str()),
        ("webhook-signature", sig.as_str()),
    ];
    post_ingest(s, &hook.id, &headers, BODY)
}

fn code(r: &Response) -> String {
    r.json()["error"]["code"].as_str().unwrap_or_default().to_owned()
}

/// Wait until `install` has `n` summaries, then check it stays at `n`.
fn delivered_exactly(s: &Server, t: &Tenant, install: &str, n: usize) {
    eventually(10, "the accepted events to run", || (t.invocation_count(s, install) >= n).then_some(()));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(t.invocation_count(s, install), n, "each accepted webhook runs once, nothing else runs");
}

#[test]
fn a_throttled_webhook_is_accepted_when_the_sender_retries_it() {
    let s = Server::start(plugins_with(&["webhook"]), |_| {});
    let t = tenant(&s, "Throttled");
    let install = t.install(&s, json!({ "app": "webhook" }));
    let hook = standard_hook(&s, &t, &install, 1);

    assert_eq!(send(&s, &hook, "msg_a").status, 202);
    let refused = send(&s, &hook, "msg_b");
    assert_eq!((refused.status, code(&refused)), (429, "throttled".into()), "{}", refused.text());
    let wait: u64 = refused.header("retry-after").unwrap().parse().unwrap();
    std::thread::sleep(Duration::from_secs(wait) + Duration::from_millis(100));
    let retried = send(&s, &hook, "msg_b");
    assert_eq!(retried.status, 202, "the retry of a throttled id is taken: {}", retried.text());
    let replay = send(&s, &hook, "msg_b");
    assert_eq!((replay.status, replay.json()["duplicate"].clone()), (200, json!(true)));
    delivered_exactly(&s, &t, &install, 2);
}

#[test]
fn a_webhook_refused_while_its_organisation_is_busy_is_accepted_once_the_queue_drains() {
    let s = Server::start(plugins_with(&["webhook", "hostile"]), |c| c.max_queue_per_org = 1);
    let t = tenant(&s, "Busy");
    let install = t.install(&s, json!({ "app": "webhook" }));
    let hostile = t.install(&s, json!({ "app": "hostile", "agent_id": t.org_agent }));
    let hook = standard_hook(&s, &t, &install, 30);

    // The organisation's one queue place is held by an event that spins
    // to its timeout and is retried with backoff (seconds) before it is
    // dead-lettered.
    t.call(
        &s,
        "POST",
        &format!("/v1/orgs/{{org}}/installations/{hostile}/invoke"),
        Some(&json!({"mode": "loop"})),
        202,
    );
    let refused = send(&s, &hook, "msg_busy");
    assert_eq!((refused.status, code(&refused)), (429, "tenant_busy".into()), "{}", refused.text());
    let accepted = eventually(30, "the queue to drain and the retry to be taken", || {
        let r = send(&s, &hook, "msg_busy");
        assert_ne!(r.status, 200, "a refused id must not count as seen: {}", r.text());
        (r.status == 202).then_some(r)
    });
    assert!(accepted.json()["event_id"].as_str().is_some());
    assert_eq!(send(&s, &hook, "msg_busy").status, 200, "now it is a true replay");
    delivered_exactly(&s, &t, &install, 1);
}

#[test]
fn a_replayed_webhook_id_is_never_enqueued_twice_even_when_sent_concurrently() {
    let s = Server::start(plugins_with(&["webhook"]), |_| {});
    let t = tenant(&s, "Replay");
    let install = t.install(&s, json!({ "app": "webhook" }));
    let hook = standard_hook(&s, &t, &install, 30);

    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let sends: Vec<_> = (0..8).map(|_| scope.spawn(|| send(&s, &hook, "msg_same").status)).collect();
        sends.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(statuses.iter().filter(|&&st| st == 202).count(), 1, "{statuses:?}");
    assert!(statuses.iter().all(|&st| st == 202 || st == 200), "{statuses:?}");
    assert_eq!(send(&s, &hook, "msg_same").status, 200);
    delivered_exactly(&s, &t, &install, 1);
}

/// Open `n` connections that send part of a request head and then nothing.
fn slow_headers(addr: std::net::SocketAddr, n: usize) -> Vec<std::net::TcpStream> {
    use std::io::Write as _;
    (0..n)
        .map(|_| {
            let mut c = std::net::TcpStream::connect(addr).unwrap();
            c.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
            c
        })
        .collect()
}

/// Whether the server closed `c` (EOF or reset after whatever it sent).
fn closed_by_server(c: &mut std::net::TcpStream) -> bool {
    use std::io::Read as _;
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut sink = Vec::new();
    match c.read_to_end(&mut sink) {
        Ok(_) => true,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn a_thousand_slow_header_connections_are_closed_after_the_header_timeout() {
    let s = Server::start(plugins_with(&[]), |c| c.http.header_timeout_ms = 1000);
    let opened = std::time::Instant::now();
    let mut slow = slow_headers(s.addr, 1000);
    // Still open before the timeout: a slow client is not cut off early
    // (the last one opened has waited 300 ms of its 1 s).
    std::thread::sleep(Duration::from_millis(300));
    let first = slow.last_mut().unwrap();
    first.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let early = std::io::Read::read(first, &mut byte);
    assert!(
        early.as_ref().is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "closed before the timeout: {early:?}"
    );
    first.set_nonblocking(false).unwrap();
    let closed = slow.iter_mut().map(closed_by_server).filter(|&c| c).count();
    assert_eq!(closed, 1000, "every slow-header connection is closed");
    assert!(opened.elapsed() < Duration::from_secs(8), "closed after {:?}", opened.elapsed());
    assert_eq!(s.call("GET", "/v1/health", None, None).status, 200);
}

/// Send only a request head that announces a `len`-byte body, and read the
/// status the server answers with (before any of the body is sent).
fn status_of_head(addr: std::net::SocketAddr, method: &str, path: &str, auth: Option<&str>, len: usize) -> u16 {
    use std::io::{Read as _, Write as _};
    let mut c = std::net::TcpStream::connect(addr).unwrap();
    let auth = auth.map(|a| format!("authorization: Bearer {a}\r\n")).unwrap_or_default();
    write!(c, "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}content-length: {len}\r\n\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut head = [0u8; 12];
    c.read_exact(&mut head).expect("no answer while the body is withheld: the server waited for it");
    std::str::from_utf8(&head[9..12]).unwrap().parse().unwrap()
}

#[test]
fn credentials_are_checked_before_a_body_is_read() {
    let s = Server::start(plugins_with(&["webhook"]), |_| {});
    let a = tenant(&s, "A");
    let b = tenant(&s, "B");
    let install = a.install(&s, json!({ "app": "webhook" }));
    let (ingestion, _) = a.ingestion(&s, json!({ "install_id": install, "max_body_bytes": 4096 }));
    let big = 32 << 20;
    assert_eq!(status_of_head(s.addr, "PUT", "/v1/apps/x", None, big), 401, "upload without a token");
    assert_eq!(status_of_head(s.addr, "PUT", "/v1/apps/x", Some(&a.token), big), 403, "upload needs the operator");
    let messages = format!("/v1/orgs/{}/agents/{}/channels/c/messages", a.org, a.org_agent);
    assert_eq!(status_of_head(s.addr, "POST", &messages, Some(&b.token), 1000), 403, "another organisation");
    assert_eq!(status_of_head(s.addr, "POST", &messages, Some("pdk_nope"), 1000), 401, "a bad token");
    let ingest = format!("/v1/ingest/{ingestion}");
    assert_eq!(status_of_head(s.addr, "POST", &ingest, Some("pdi_nope"), 1000), 401, "a bad endpoint token");
    assert_eq!(status_of_head(s.addr, "POST", &ingest, None, 5000), 413, "over the endpoint's own limit");
}

fn upload(s: &Server, name: &str, manifest: &str, wasm: &[u8]) -> Response {
    let body =
        json!({ "manifest": manifest, "component_base64": base64::engine::general_purpose::STANDARD.encode(wasm) });
    s.call("PUT", &format!("/v1/apps/{name}"), Some(paddock_tests::server::OPERATOR), Some(&body))
}

#[test]
fn an_upload_writes_nothing_outside_its_directory_and_names_no_server_path() {
    let s = Server::start(plugins_with(&["tank-level", "counter"]), |_| {});
    let victim = s.plugins.join("tank-level").join("tank_level.wasm");
    let before = std::fs::read(&victim).unwrap();
    let wasm = std::fs::read(paddock_tests::app_dir("counter").join("counter.wasm")).unwrap();
    let manifest = |extra: &str| format!("name = \"evil\"\ntype = \"PRO\"\n{extra}\n");
    let cases = [
        ("component = \"../tank-level/tank_level.wasm\"", "leaves the app's directory"),
        (&format!("component = \"{}\"", victim.display()) as &str, "is an absolute path"),
        ("component = \"sub/../../x.wasm\"", "leaves the app's directory"),
        ("config_schema_file = \"../../../../../../etc/passwd\"", "leaves the app's directory"),
        ("config_schema_file = \"/etc/passwd\"", "is an absolute path"),
    ];
    for (line, why) in cases {
        let r = upload(&s, "evil", &manifest(line), &wasm);
        assert_eq!((r.status, r.json()["error"]["code"].clone()), (422, json!("invalid_app")), "{line}: {}", r.text());
        let text = r.text();
        assert!(text.contains(why), "{line}: {text}");
        let root = s.plugins.display().to_string();
        assert!(!text.contains(&root) && !text.contains("/tmp") && !text.contains("root:"), "{line}: {text}");
    }
    assert_eq!(std::fs::read(&victim).unwrap(), before, "the other app's component is untouched");
    let leftovers: Vec<_> = std::fs::read_dir(&s.plugins).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(leftovers.len(), 2, "no staging or app directory was left behind: {leftovers:?}");

    // A good upload still works, and a broken one names paths inside the app only.
    let good = std::fs::read_to_string(paddock_tests::app_dir("counter").join("paddock.toml")).unwrap();
    assert_eq!(upload(&s, "counter", &good, &wasm).status, 200);
    let r = upload(&s, "counter", &good, b"\0asm");
    assert_eq!(r.status, 422);
    assert!(!r.text().contains(&s.plugins.display().to_string()), "{}", r.text());
}

#[test]
fn a_symlinked_component_in_the_plugins_directory_is_refused() {
    let plugins = plugins_with(&["counter"]);
    let app = plugins.path().join("counter");
    std::fs::rename(app.join("counter.wasm"), plugins.path().join("outside.wasm")).unwrap();
    std::os::unix::fs::symlink(plugins.path().join("outside.wasm"), app.join("counter.wasm")).unwrap();
    let s = Server::start(plugins, |_| {});
    let apps = s.op("GET", "/v1/apps", None, 200);
    let counter = &apps["apps"][0];
    assert_eq!(counter["status"], "failed", "{apps}");
    let error = counter["error"].as_str().unwrap_or_default();
    assert!(error.contains("symbolic link") && !error.contains("/tmp"), "{apps}");
}

#[test]
fn request_bodies_are_strict_json_and_bounded() {
    let s = Server::start(plugins_with(&["counter"]), |_| {});
    let t = tenant(&s, "Strict");
    let raw = |method: &str, path: &str, body: &[u8]| {
        let auth = format!("Bearer {}", t.token);
        let path = path.replace("{org}", &t.org);
        paddock_tests::http::request(s.addr, method, &path, &[("authorization", &auth)], body).unwrap()
    };
    let agents_before = t.call(&s, "GET", "/v1/orgs/{org}/agents", None, 200);
    let bad: [&[u8]; 4] = [
        br#"{"name":"x"} junk"#,
        br#"{"name":"x","name":"y"}"#,
        br#"{"name":"x","metadata":{"n":18446744073709551616}}"#,
        br#"{"name":"x"}{"name":"y"}"#,
    ];
    for body in bad {
        let r = raw("POST", "/v1/orgs/{org}/agents", body);
        assert_eq!(
            (r.status, code(&r)),
            (400, "invalid_json".into()),
            "{}: {}",
            String::from_utf8_lossy(body),
            r.text()
        );
    }
    assert_eq!(t.call(&s, "GET", "/v1/orgs/{org}/agents", None, 200), agents_before, "nothing was half-accepted");

    let dev = t.agent(&s, "D", "D-1");
    let install = t.install(&s, json!({ "app": "counter", "agent_id": dev }));
    let messages = format!("/v1/orgs/{{org}}/agents/{dev}/channels/data/messages");
    let r = raw("POST", &messages, br#"{"big":99999999999999999999}"#);
    assert_eq!(r.status, 400, "an integer that would become a float: {}", r.text());
    // Payload key rules apply to manual invokes as to messages.
    let invoke = format!("/v1/orgs/{{org}}/installations/{install}/invoke");
    let r = raw("POST", &invoke, br#"{"a.b":1}"#);
    assert_eq!((r.status, code(&r)), (400, "invalid_payload".into()), "{}", r.text());
    // A payload over the apps' limit is refused; an aggregate cannot grow
    // past its own bound by many PATCHes, and what was refused left it as it was.
    let chunk = "x".repeat(200 * 1024);
    let r = raw("POST", &messages, json!({ "s": "x".repeat(300 * 1024) }).to_string().as_bytes());
    assert_eq!((r.status, code(&r)), (413, "payload_too_large".into()), "{}", r.text());
    let aggregate = format!("/v1/orgs/{{org}}/agents/{dev}/channels/big/aggregate");
    let mut statuses = Vec::new();
    for i in 0..8 {
        statuses.push(raw("PATCH", &aggregate, json!({ format!("k{i}"): chunk }).to_string().as_bytes()).status);
    }
    assert_eq!(&statuses[..5], &[200; 5], "{statuses:?}");
    assert_eq!(&statuses[5..], &[413; 3], "{statuses:?}");
    let kept = t.call(&s, "GET", &aggregate, None, 200);
    assert_eq!(kept["data"].as_object().unwrap().len(), 5, "refused patches changed nothing");
}

#[test]
fn host_owned_channels_are_refused_to_every_token() {
    let s = Server::start(plugins_with(&["counter"]), |_| {});
    let t = tenant(&s, "Owned");
    let dev = t.agent(&s, "D", "D-1");
    t.install(&s, json!({ "app": "counter", "agent_id": dev }));
    for channel in ["tag_values", "dv-proc-inv-1234"] {
        let base = format!("/v1/orgs/{}/agents/{dev}/channels/{channel}", t.org);
        let forged = json!({ "counter": { "count": 1000 } });
        for token in [t.token.as_str(), paddock_tests::server::OPERATOR] {
            for (method, path) in [
                ("POST", format!("{base}/messages")),
                ("PATCH", format!("{base}/aggregate")),
                ("PUT", format!("{base}/aggregate")),
            ] {
                let r = s.call(method, &path, Some(token), Some(&forged));
                assert_eq!((r.status, code(&r)), (403, "host_owned_channel".into()), "{method} {path}: {}", r.text());
            }
        }
        // Reading them is fine.
        let r = s.call("GET", &format!("{base}/messages"), Some(&t.token), None);
        assert_eq!(r.status, 200);
    }
    assert!(t.aggregate(&s, &dev, "tag_values").is_none(), "no forged tags");
}

#[test]
fn a_bootstrap_ingestion_endpoint_takes_the_settings_the_api_takes() {
    let dir = tempfile::tempdir().unwrap();
    let whsec = format!("whsec_{}", base64::engine::general_purpose::STANDARD.encode(KEY));
    let file = dir.path().join("bootstrap.toml");
    std::fs::write(
        &file,
        format!(
            "[[organisations]]\nname = \"Boot\"\ntokens = [{{ name = \"t\", secret = \"pdk_boot\" }}]\n\
             [[organisations.installations]]\napp = \"webhook\"\napp_key = \"readings\"\n\
             [[organisations.ingestions]]\nid = 77\ninstallation = \"readings\"\ntoken = \"pdi_boot\"\n\
             webhook_secret = \"{whsec}\"\nmax_body_bytes = 64\nrate_per_s = 30\n"
        ),
    )
    .unwrap();
    let s = Server::start(plugins_with(&["webhook"]), |c| c.bootstrap = Some(file.clone()));
    let hook = Hook { id: "77".into(), auth: "Bearer pdi_boot".into() };
    let unsigned = post_ingest(&s, "77", &[("authorization", "Bearer pdi_boot")], BODY);
    assert_eq!(unsigned.status, 401, "the webhook secret applies: {}", unsigned.text());
    assert_eq!(send(&s, &hook, "msg_boot").status, 202);
    let big = post_ingest(&s, "77", &[("authorization", "Bearer pdi_boot")], &[b'x'; 65]);
    assert_eq!(big.status, 413, "the body limit applies");
}

#[test]
fn at_the_connection_cap_idle_connections_make_room_and_only_busy_ones_refuse() {
    use std::io::Write as _;
    let s = Server::start(plugins_with(&[]), |c| {
        c.http.max_connections = 2;
        c.http.body_timeout_ms = 10_000;
    });
    // Busy: admitted requests whose bodies trickle in.
    let busy = || {
        let mut c = std::net::TcpStream::connect(s.addr).unwrap();
        let auth = paddock_tests::server::OPERATOR;
        write!(c, "POST /v1/orgs HTTP/1.1\r\nHost: x\r\nauthorization: Bearer {auth}\r\ncontent-length: 100\r\n\r\n{{")
            .unwrap();
        c
    };
    let (first, _second) = (busy(), busy());
    std::thread::sleep(Duration::from_millis(300));
    let refused = paddock_tests::http::request(s.addr, "GET", "/v1/health", &[], b"").unwrap();
    assert_eq!((refused.status, code(&refused)), (503, "too_many_connections".into()), "{}", refused.text());
    assert_eq!(refused.header("retry-after"), Some("1"));

    // One busy connection ends; an idle one takes its place and is closed
    // to make room for the next client, who is served.
    drop(first);
    std::thread::sleep(Duration::from_millis(300));
    let mut idle = slow_headers(s.addr, 1).pop().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let served = paddock_tests::http::request(s.addr, "GET", "/v1/health", &[], b"").unwrap();
    assert_eq!(served.status, 200, "{}", served.text());
    assert!(closed_by_server(&mut idle), "the idle connection made room");
}

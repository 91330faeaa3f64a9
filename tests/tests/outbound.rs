//! Outbound HTTP (`wasi:http/outgoing-handler`) through the real `fetch`
//! component against a loopback origin: what reaches the origin, and every
//! refusal (host not allowed, private address, too many requests), timeout
//! and size cap, each with the error the app sees.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use paddock::caps::MemoryState;
use paddock::manifest::Manifest;
use paddock::runtime::{OutboundConfig, Outcome, Report, Runtime, RuntimeConfig};
use paddock_tests::*;
use serde_json::{Value, json};

/// How the origin answers.
#[derive(Clone, Copy)]
enum Answer {
    /// 200 with `METHOD path body` and `x-echo: <x-a header>`.
    Echo,
    /// Reads the request, never answers.
    Silent,
    /// 200 with `n` bytes and a Content-Length.
    Sized(usize),
    /// 200 with `n` bytes, chunked (no length up front).
    Chunked(usize),
    /// Announces 100 bytes, sends 10, then stalls.
    Stall,
}

/// A loopback HTTP/1.1 origin counting the requests that reach it.
struct Origin {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
}

impl Origin {
    fn start(answer: Answer) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let hits = Arc::new(AtomicUsize::new(0));
        let counter = hits.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let counter = counter.clone();
                std::thread::spawn(move || serve(stream, answer, &counter));
            }
        });
        Self { addr, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.addr.port())
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

fn serve(mut stream: TcpStream, answer: Answer, hits: &AtomicUsize) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = stream.read(&mut chunk) else { return };
        if n == 0 {
            return;
        }
        if buf.is_empty() && chunk[0] == 0x16 {
            // A TLS ClientHello on a plain-HTTP port.
            let _ = stream.write_all(b"HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n");
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let header = |name: &str| {
        head.lines()
            .find_map(|l| l.split_once(':').filter(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim()))
            .unwrap_or_default()
            .to_owned()
    };
    let length: usize = header("content-length").parse().unwrap_or(0);
    while buf.len() < head_end + length {
        let Ok(n) = stream.read(&mut chunk) else { return };
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    hits.fetch_add(1, Ordering::SeqCst);
    let request_line = head.lines().next().unwrap_or_default();
    let mut parts = request_line.split(' ');
    let (method, path) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let body = String::from_utf8_lossy(&buf[head_end..]).into_owned();
    let _ = match answer {
        Answer::Echo => {
            let text = format!("{method} {path} {body}");
            let echo = header("x-a");
            write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nX-Echo: {echo}\r\nConnection: close\r\n\r\n{text}",
                text.len()
            )
        }
        Answer::Silent => {
            std::thread::sleep(Duration::from_secs(30));
            Ok(())
        }
        Answer::Sized(n) => write!(stream, "HTTP/1.1 200 OK\r\nContent-Length: {n}\r\nConnection: close\r\n\r\n")
            .and_then(|()| stream.write_all(&vec![b'a'; n])),
        Answer::Chunked(n) => {
            let mut out = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n".to_vec();
            for piece in vec![b'a'; n].chunks(1000) {
                out.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
                out.extend_from_slice(piece);
                out.extend_from_slice(b"\r\n");
            }
            out.extend_from_slice(b"0\r\n\r\n");
            stream.write_all(&out)
        }
        Answer::Stall => {
            let sent = stream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789");
            std::thread::sleep(Duration::from_secs(30));
            sent
        }
    };
}

/// A runtime whose outbound policy lets apps reach loopback origins.
fn loopback_allowed(tweak: impl FnOnce(&mut OutboundConfig)) -> Runtime {
    let mut outbound = OutboundConfig { allow_private: vec!["127.0.0.0/8".parse().unwrap()], ..Default::default() };
    tweak(&mut outbound);
    runtime_with(RuntimeConfig { outbound, ..RuntimeConfig::default() })
}

/// Run the fixture with `payload`; the invocation must succeed. Returns
/// the per-request results it recorded and the report.
async fn fetch(rt: &Runtime, payload: Value) -> (Vec<Value>, Report) {
    let app = load(rt, "fetch").await;
    fetch_with(rt, &app, payload).await
}

/// The fixture loaded with its manifest changed by `tweak`.
async fn fetch_app_with(rt: &Runtime, tweak: impl FnOnce(&mut Manifest)) -> paddock::runtime::LoadedApp {
    let mut manifest = Manifest::load_dir(&app_dir("fetch")).unwrap();
    tweak(&mut manifest);
    rt.load_manifest(manifest).await.unwrap()
}

async fn fetch_with(rt: &Runtime, app: &paddock::runtime::LoadedApp, payload: Value) -> (Vec<Value>, Report) {
    let report = run(rt, app, grant(app, json!({})), manual(payload), &state()).await;
    assert_eq!(report.outcome, Outcome::Ok, "logs: {:?}", report.logs);
    let mut st: MemoryState = state();
    commit(&mut st, &report);
    let results = tags_of(&st, TANK, "fetch")["fetch"].as_array().cloned().unwrap_or_default();
    (results, report)
}

fn logs(report: &Report) -> String {
    report.logs.lines.iter().map(|l| l.message.as_str()).collect::<Vec<_>>().join("\n")
}

/// The request times out, the app sees `timeout`, the invocation ends well
/// within its own 5 s budget.
async fn times_out(rt: &Runtime, payload: Value) {
    let (results, report) = fetch(rt, payload).await;
    assert!(error_of(&results[0]).starts_with("timeout"), "{}", results[0]);
    assert!(report.duration < Duration::from_secs(4), "took {:?}", report.duration);
}

fn error_of(result: &Value) -> &str {
    result["error"].as_str().unwrap_or_else(|| panic!("expected an error, got {result}"))
}

#[tokio::test]
async fn an_allowed_origin_gets_the_method_path_headers_and_body() {
    let origin = Origin::start(Answer::Echo);
    let rt = loopback_allowed(|_| {});
    let payload = json!({
        "url": origin.url("/v1/items?q=1"), "method": "POST", "headers": {"x-a": "hello"}, "body": "ping",
    });
    let (results, _) = fetch(&rt, payload).await;
    assert_eq!(results, vec![json!({"status": 200, "body": "POST /v1/items?q=1 ping", "echo": "hello"})]);
    assert_eq!(origin.hits(), 1);
}

#[tokio::test]
async fn loopback_is_refused_after_dns_unless_the_operator_allows_it() {
    let origin = Origin::start(Answer::Echo);
    let rt = runtime();
    let port = origin.addr.port();
    for url in [format!("http://127.0.0.1:{port}/"), format!("http://localhost:{port}/")] {
        let (results, report) = fetch(&rt, json!({"url": url})).await;
        let err = error_of(&results[0]);
        assert!(err.contains("denied") && err.contains("private address"), "{url}: {err}");
        assert!(logs(&report).contains("resolves to no public address"), "{}", logs(&report));
    }
    assert_eq!(origin.hits(), 0, "nothing may reach a private address");
}

#[tokio::test]
async fn hosts_outside_allowed_hosts_are_refused_before_connecting() {
    let origin = Origin::start(Answer::Echo);
    let rt = loopback_allowed(|_| {});
    let url = format!("http://127.0.0.2:{}/", origin.addr.port());
    let (results, report) = fetch(&rt, json!({"url": url})).await;
    assert!(error_of(&results[0]).starts_with("denied"), "{}", results[0]);
    let logs = logs(&report);
    assert!(logs.contains(&format!("127.0.0.2:{} is not in the app's allowed_hosts", origin.addr.port())), "{logs}");
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn an_app_without_allowed_hosts_reaches_nothing() {
    let origin = Origin::start(Answer::Echo);
    let rt = loopback_allowed(|_| {});
    let app = fetch_app_with(&rt, |m| m.allowed_hosts.clear()).await;
    let (results, _) = fetch_with(&rt, &app, json!({"url": origin.url("/")})).await;
    assert!(error_of(&results[0]).starts_with("denied"), "{}", results[0]);
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn a_silent_origin_times_out_and_the_app_carries_on() {
    let origin = Origin::start(Answer::Silent);
    // The operator's first-byte timeout.
    let rt = loopback_allowed(|o| o.first_byte_timeout = Duration::from_millis(300));
    times_out(&rt, json!({"url": origin.url("/")})).await;
    // A shorter timeout the app asks for.
    let rt = loopback_allowed(|_| {});
    times_out(&rt, json!({"url": origin.url("/"), "timeout_ms": 200})).await;
}

#[tokio::test]
async fn a_stalled_body_times_out() {
    let origin = Origin::start(Answer::Stall);
    let rt = loopback_allowed(|o| o.between_bytes_timeout = Duration::from_millis(300));
    times_out(&rt, json!({"url": origin.url("/")})).await;
}

#[tokio::test]
async fn the_invocation_deadline_interrupts_a_request_in_flight() {
    let origin = Origin::start(Answer::Silent);
    let rt = loopback_allowed(|_| {});
    let app = fetch_app_with(&rt, |m| m.limits.timeout = Duration::from_millis(300)).await;
    let report = run(&rt, &app, grant(&app, json!({})), manual(json!({"url": origin.url("/")})), &state()).await;
    assert!(matches!(report.outcome, Outcome::Timeout { .. }), "{:?}", report.outcome);
    assert!(report.duration < Duration::from_secs(3), "took {:?}", report.duration);
    assert!(report.effects.is_empty());
}

#[tokio::test]
async fn response_bodies_over_the_cap_are_refused_with_or_without_a_length() {
    let rt = loopback_allowed(|o| o.max_response_bytes = 10_000);
    let small = Origin::start(Answer::Sized(5_000));
    let (results, _) = fetch(&rt, json!({"url": small.url("/")})).await;
    assert_eq!(results[0]["status"], 200);
    assert_eq!(results[0]["body"].as_str().unwrap().len(), 5_000);
    for answer in [Answer::Sized(50_000), Answer::Chunked(50_000)] {
        let big = Origin::start(answer);
        let (results, _) = fetch(&rt, json!({"url": big.url("/")})).await;
        assert_eq!(error_of(&results[0]), "response body over 10000 bytes");
    }
}

#[tokio::test]
async fn an_invocation_may_send_only_so_many_requests() {
    let origin = Origin::start(Answer::Echo);
    let rt = loopback_allowed(|o| o.max_requests = 3);
    let (results, report) = fetch(&rt, json!({"url": origin.url("/"), "repeat": 5})).await;
    let statuses: Vec<&Value> = results.iter().map(|r| &r["status"]).collect();
    assert_eq!(statuses[..3], [&json!(200), &json!(200), &json!(200)]);
    assert!(error_of(&results[3]).starts_with("denied") && error_of(&results[4]).starts_with("denied"));
    assert!(logs(&report).contains("more than 3 requests in one invocation"), "{}", logs(&report));
    assert_eq!(origin.hits(), 3);
    // The next invocation has its own budget.
    let (results, _) = fetch(&rt, json!({"url": origin.url("/")})).await;
    assert_eq!(results[0]["status"], 200);
}

#[tokio::test]
async fn https_speaks_tls() {
    // A plain-HTTP origin answers the TLS ClientHello with HTTP: the
    // handshake fails, which shows the request went out over TLS.
    let origin = Origin::start(Answer::Echo);
    let rt = loopback_allowed(|_| {});
    let url = format!("https://127.0.0.1:{}/", origin.addr.port());
    let (results, _) = fetch(&rt, json!({"url": url})).await;
    let err = error_of(&results[0]);
    assert!(err.contains("Tls"), "{err}");
    assert_eq!(origin.hits(), 0);
}

#[tokio::test]
async fn malformed_urls_fail_in_the_guest_without_a_request() {
    let rt = loopback_allowed(|_| {});
    for url in ["ftp://127.0.0.1/", "127.0.0.1/x", "http:///x", "http://user@127.0.0.1/"] {
        let (results, _) = fetch(&rt, json!({"url": url})).await;
        assert!(error_of(&results[0]).starts_with("invalid URL"), "{url}: {}", results[0]);
    }
}

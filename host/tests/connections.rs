//! Connection bounds of a real `paddock serve` process whose descriptor
//! limit is 1,024: slow clients cannot lock the others out.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

#[path = "../../tests/src/http.rs"]
#[allow(dead_code, reason = "shared with the tests crate, which uses every item")]
mod http;
#[path = "support/serve.rs"]
#[allow(dead_code, reason = "shared by the process-level tests, which use different parts")]
mod serve;

use std::io::Write as _;
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

#[test]
fn with_1100_slow_clients_against_1024_descriptors_health_still_answers_within_a_second() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("plugins")).unwrap();
    // The server's soft and hard descriptor limits are 1,024, so it cannot
    // raise them; the clients below need more than that in this process.
    let _ = rlimit::increase_nofile_limit(4096);
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("ulimit -n 1024 && exec \"$0\" serve --listen 127.0.0.1:0 --push-listen 127.0.0.1:0 --data \"$1\" --plugins \"$2\"")
        .arg(env!("CARGO_BIN_EXE_paddock"))
        .arg(root.path().join("data"))
        .arg(root.path().join("plugins"))
        .env("PADDOCK_OPERATOR_TOKEN", "pdo_connections")
        .env("PADDOCK_CACHE_DIR", std::env::temp_dir().join("paddock-test-cache"))
        .env("PADDOCK_LOG", "warn");
    let (mut child, addr) = serve::spawn(command);

    let slow: Vec<TcpStream> = (0..1100)
        .map(|_| {
            let mut c = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
            c.write_all(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    let health = http::request(addr, "GET", "/v1/health", &[], b"").unwrap();
    let took = started.elapsed();
    assert_eq!(health.status, 200, "{}", health.text());
    assert!(took < Duration::from_secs(1), "health took {took:?}");
    let again = http::request(addr, "GET", "/v1/health", &[], b"").unwrap();
    assert_eq!(again.status, 200, "the server keeps answering");
    drop(slow);
    let _ = child.kill();
    let _ = child.wait();
}

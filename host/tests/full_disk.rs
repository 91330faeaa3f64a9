//! A full disk, for real: a `paddock serve` process whose data directory
//! is a small tmpfs (mounted by the test; it needs root, as CI has). Writes
//! that cannot become durable answer 507 at once, `/v1/health` says so,
//! writes resume by themselves once space is freed, SIGTERM stops the
//! server while the disk is full, and nothing acknowledged is lost.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

#[path = "../../tests/src/http.rs"]
#[allow(dead_code, reason = "shared with the tests crate, which uses every item")]
mod http;
#[path = "support/serve.rs"]
#[allow(dead_code, reason = "shared by the process-level tests, which use different parts")]
mod serve;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "pdk_full_disk";

/// A tmpfs of `mib` MiB, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, mib: u32) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mib}m"), "tmpfs"]).arg(at).output();
        let out = out.expect("running mount");
        assert!(out.status.success(), "mounting a tmpfs needs root: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs(at.to_path_buf())
    }

    /// Fill it up with one file.
    fn fill(&self) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0u8; 64 * 1024];
        while f.write_all(&block).is_ok() {}
        let _ = f.sync_all();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

struct Node {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(data: &Path, root: &Path) -> Node {
    let bootstrap = root.join("bootstrap.toml");
    std::fs::write(
        &bootstrap,
        format!(
            "[[organisations]]\nname = \"Full\"\ntokens = [{{ name = \"t\", secret = \"{TOKEN}\" }}]\n\
             agents = [{{ name = \"D\", serial_number = \"D-1\" }}]\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(root.join("plugins")).unwrap();
    // A 2 MiB reserve on the 24 MiB disk (the default 64 MiB would refuse
    // every write there).
    let config = root.join("paddock.toml");
    std::fs::write(&config, "[store]\nreserve_mb = 2\n").unwrap();
    let mut command = serve::paddock();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--push-listen", "off"])
        .arg("--config")
        .arg(&config)
        .arg("--data")
        .arg(data)
        .arg("--plugins")
        .arg(root.join("plugins"))
        .arg("--bootstrap")
        .arg(&bootstrap)
        .env("PADDOCK_OPERATOR_TOKEN", "pdo_full_disk")
        .env("PADDOCK_LOG", "off");
    let (child, addr) = serve::spawn(command);
    Node { child, addr }
}

fn call(n: &Node, method: &str, path: &str, body: &[u8]) -> http::Response {
    let auth = format!("Bearer {TOKEN}");
    http::request(n.addr, method, path, &[("authorization", &auth)], body).unwrap()
}

/// The device's messages path.
fn messages_path(n: &Node) -> String {
    let orgs = call(n, "GET", "/v1/orgs", b"").json();
    let org = orgs["organisations"][0]["id"].as_str().unwrap().to_owned();
    let agents = call(n, "GET", &format!("/v1/orgs/{org}/agents"), b"").json();
    let agents = agents["agents"].as_array().unwrap();
    let dev = agents.iter().find(|a| a["serial_number"] == "D-1").unwrap()["id"].as_str().unwrap().to_owned();
    format!("/v1/orgs/{org}/agents/{dev}/channels/readings/messages")
}

/// Post message `i`; its status and how long the answer took.
fn post(n: &Node, path: &str, i: u64) -> (u16, Duration) {
    let started = Instant::now();
    let body = json!({ "i": i, "pad": "x".repeat(16 * 1024) }).to_string();
    (call(n, "POST", path, body.as_bytes()).status, started.elapsed())
}

/// Post until a write is refused (at most 500): the acknowledged ones and
/// the refusal's status.
fn post_until_refused(n: &Node, path: &str, next: &mut u64, acked: &mut Vec<u64>) -> u16 {
    for _ in 0..500 {
        let (status, took) = post(n, path, *next);
        assert!(took < Duration::from_secs(12), "a write took {took:?}: it must fail within bounded time");
        match status {
            201 => acked.push(*next),
            refused => return refused,
        }
        *next += 1;
    }
    panic!("500 writes were acknowledged on a full 24 MiB disk");
}

fn health(n: &Node) -> (u16, Value) {
    let r = http::request(n.addr, "GET", "/v1/health", &[], b"").unwrap();
    (r.status, r.json())
}

#[test]
fn a_full_disk_refuses_writes_quickly_recovers_by_itself_and_loses_nothing_acknowledged() {
    let root = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(&root.path().join("disk"), 24);
    let data = root.path().join("disk").join("data");
    let node = start(&data, root.path());
    let path = messages_path(&node);
    let (mut next, mut acked) = (0u64, Vec::new());
    for _ in 0..20 {
        assert_eq!(post(&node, &path, next).0, 201);
        acked.push(next);
        next += 1;
    }

    // Full: refused with 507 within bounded time; health says why.
    let filler = disk.fill();
    let refused = post_until_refused(&node, &path, &mut next, &mut acked);
    assert_eq!(refused, 507, "a write that cannot become durable");
    let (status, body) = health(&node);
    assert_eq!((status, body["store"]["writable"].clone()), (503, json!(false)), "{body}");
    assert!(body["store"]["error"].as_str().unwrap().contains("No space left"), "{body}");
    let (again, took) = post(&node, &path, next);
    assert_eq!(again, 507);
    assert!(took < Duration::from_secs(1), "refused at once while not writable: {took:?}");
    next += 1;

    // Space freed: writes resume by themselves.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = post(&node, &path, next);
        if status == 201 {
            acked.push(next);
            next += 1;
            break;
        }
        next += 1;
        assert!(Instant::now() < deadline, "writes did not resume after space was freed (last {status})");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(health(&node).0, 200);

    // Full again; SIGTERM stops the server within its grace period.
    let filler = disk.fill();
    assert_eq!(post_until_refused(&node, &path, &mut next, &mut acked), 507);
    let stopping = Instant::now();
    let pid = node.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut node = node;
    loop {
        if node.child.try_wait().unwrap().is_some() {
            break;
        }
        assert!(stopping.elapsed() < Duration::from_secs(15), "SIGTERM did not stop the server on a full disk");
        std::thread::sleep(Duration::from_millis(50));
    }

    // Every acknowledged message is there after a restart.
    std::fs::remove_file(&filler).unwrap();
    let node = start(&data, root.path());
    let listed = call(&node, "GET", &format!("{path}?limit=1000"), b"").json();
    let mut kept: Vec<u64> =
        listed["messages"].as_array().unwrap().iter().map(|m| m["data"]["i"].as_u64().unwrap()).collect();
    kept.sort_unstable();
    let missing: Vec<&u64> = acked.iter().filter(|i| !kept.contains(i)).collect();
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?} (kept {kept:?})");
    drop(node);
}

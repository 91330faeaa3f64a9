//! Crash safety: a real `paddock serve` process under load is killed with
//! SIGKILL at random moments (and once right after a 201), restarted each
//! time, and at the end every message acknowledged to the producer was
//! processed, exactly once: the counter app's tag equals the number of
//! distinct messages it saw, no message is counted twice, and no message
//! it published appears twice. Some messages ask the app to fail their
//! first attempt, so retries cross the crashes too. Another test kills the
//! server while the writer's cycles are large (32 clients at once, 16 KiB
//! messages) and checks that no commit is torn.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

#[path = "../../tests/src/http.rs"]
#[allow(dead_code, reason = "shared with the tests crate, which uses every item")]
mod http;
#[path = "support/serve.rs"]
#[allow(dead_code, reason = "shared by the process-level tests, which use different parts")]
mod serve;

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const TOKEN: &str = "pdk_crash_test_token";
/// Random kills, then one right after an acknowledgement.
const RANDOM_KILLS: usize = 4;
/// Devices (each its own ordered line).
const DEVICES: usize = 4;
/// Every this many messages, the first attempt fails (a retry ~1 s later
/// that holds up its device's line meanwhile).
const FAIL_EVERY: u64 = 101;

/// When a message was sent, and when its acknowledgement arrived.
type SendTimes = (Instant, Option<Instant>);

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

struct Node {
    child: Child,
    addr: SocketAddr,
}

fn start(data: &Path, plugins: &Path, bootstrap: &Path) -> Node {
    let mut command = serve::paddock();
    command
        .args(["serve", "--listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0"])
        .arg("--data")
        .arg(data)
        .arg("--plugins")
        .arg(plugins)
        .arg("--bootstrap")
        .arg(bootstrap)
        .env("PADDOCK_OPERATOR_TOKEN", "pdo_crash_operator")
        .env("PADDOCK_LOG", "warn");
    let (child, addr) = serve::spawn(command);
    Node { child, addr }
}

fn get(addr: SocketAddr, path: &str) -> Value {
    let r = call(addr, "GET", path, TOKEN, &Value::Null);
    assert_eq!(r.status, 200, "GET {path}: {}", r.text());
    r.json()
}

/// Copy an example app's manifest, schema and component into `plugins`.
fn copy_app(plugins: &Path, name: &str) {
    let app = plugins.join(name);
    std::fs::create_dir_all(&app).unwrap();
    for entry in std::fs::read_dir(repo().join("plugins").join(name)).unwrap() {
        let path = entry.unwrap().path();
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file == "paddock.toml" || file == "config.schema.json" || file.ends_with(".wasm") {
            std::fs::copy(&path, app.join(&file)).unwrap();
        }
    }
    assert!(app.join("paddock.toml").exists(), "plugins/{name} (run `make plugins`)");
}

/// A data directory, the counter app and a bootstrap file with one
/// organisation and `devices` devices, each with a counter installation:
/// (data, plugins, bootstrap).
fn counter_setup(root: &Path, devices: usize) -> (PathBuf, PathBuf, PathBuf) {
    let (data, plugins) = (root.join("data"), root.join("plugins"));
    let app = plugins.join("counter");
    std::fs::create_dir_all(&app).unwrap();
    for f in ["paddock.toml", "counter.wasm"] {
        let from = repo().join("plugins/counter").join(f);
        std::fs::copy(&from, app.join(f)).unwrap_or_else(|e| panic!("{}: {e} (run `make plugins`)", from.display()));
    }
    let bootstrap = root.join("bootstrap.toml");
    std::fs::write(
        &bootstrap,
        format!(
            "[[organisations]]\nname = \"Crash\"\ntokens = [{{ name = \"t\", secret = \"{TOKEN}\" }}]\n\
             {}",
            (0..devices)
                .map(|d| format!(
                    "[[organisations.agents]]\nname = \"C{d}\"\nserial_number = \"C-{d}\"\n\
                     [[organisations.installations]]\napp = \"counter\"\nagent = \"C-{d}\"\napp_key = \"counter\"\n"
                ))
                .collect::<String>()
        ),
    )
    .unwrap();
    (data, plugins, bootstrap)
}

/// The `n`s the counter on `device` saw, in order (its `seen` tag), after
/// checking that its `count` tag agrees.
fn counter_seen(addr: SocketAddr, org: &str, device: &str) -> Vec<u64> {
    let tags = get(addr, &format!("/v1/orgs/{org}/agents/{device}/channels/tag_values/aggregate"));
    let seen: Vec<u64> = tags["data"]["counter"]["seen"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_u64().unwrap()).collect())
        .unwrap_or_default();
    let count = tags["data"]["counter"]["count"].as_u64().unwrap_or(0);
    assert_eq!(count, seen.len() as u64, "device {device}: count equals the messages it saw");
    seen
}

/// The organisation's id and its `C-…` devices' ids.
fn org_and_devices(addr: SocketAddr, devices: usize) -> (String, Vec<String>) {
    let org = get(addr, "/v1/orgs")["organisations"][0]["id"].as_str().unwrap().to_owned();
    let listed = get(addr, &format!("/v1/orgs/{org}/agents"));
    let ids: Vec<String> = listed["agents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["serial_number"].as_str().is_some_and(|s| s.starts_with("C-")))
        .map(|a| a["id"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), devices);
    (org, ids)
}

#[test]
fn a_webhook_accepted_with_202_survives_a_sigkill_right_after() {
    let root = tempfile::tempdir().unwrap();
    let (data, plugins) = (root.path().join("data"), root.path().join("plugins"));
    copy_app(&plugins, "counter");
    copy_app(&plugins, "webhook");
    let bootstrap = root.path().join("bootstrap.toml");
    std::fs::write(
        &bootstrap,
        format!(
            "[[organisations]]\nname = \"Hooked\"\ntokens = [{{ name = \"t\", secret = \"{TOKEN}\" }}]\n\
             [[organisations.agents]]\nname = \"D\"\nserial_number = \"D-1\"\n\
             [[organisations.installations]]\napp = \"counter\"\nagent = \"D-1\"\napp_key = \"counter\"\n\
             [[organisations.installations]]\napp = \"webhook\"\napp_key = \"hook\"\nconfig = {{ target_channel = \"ticks\" }}\n\
             [[organisations.ingestions]]\nid = 77\ninstallation = \"hook\"\ntoken = \"pdi_crash\"\nrate_per_s = 30\n"
        ),
    )
    .unwrap();
    let mut accepted = Vec::new();
    for n in 1..=5u64 {
        let mut node = start(&data, &plugins, &bootstrap);
        let body = json!({ "readings": [{ "serial": "D-1", "n": n }] }).to_string();
        let headers = [("authorization", "Bearer pdi_crash"), ("content-type", "application/json")];
        let r = http::request(node.addr, "POST", "/v1/ingest/77", &headers, body.as_bytes()).unwrap();
        // SIGKILL the instant the 202 is in hand.
        node.child.kill().unwrap();
        node.child.wait().unwrap();
        assert_eq!(r.status, 202, "{}", r.text());
        accepted.push(n);
    }
    let mut node = start(&data, &plugins, &bootstrap);
    let org = get(node.addr, "/v1/orgs")["organisations"][0]["id"].as_str().unwrap().to_owned();
    let agents = get(node.addr, &format!("/v1/orgs/{org}/agents"));
    let dev = agents["agents"].as_array().unwrap().iter().find(|a| a["serial_number"] == "D-1").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        // No aggregate yet (404) until the first replayed event has run.
        let path = format!("/v1/orgs/{org}/agents/{dev}/channels/tag_values/aggregate");
        let r = call(node.addr, "GET", &path, TOKEN, &Value::Null);
        assert!(matches!(r.status, 200 | 404), "GET {path}: {}", r.text());
        let tags = if r.status == 200 { r.json() } else { Value::Null };
        let seen: Vec<u64> = tags["data"]["counter"]["seen"]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_u64().unwrap()).collect())
            .unwrap_or_default();
        if seen.len() >= accepted.len() {
            break seen;
        }
        assert!(Instant::now() < deadline, "accepted webhooks lost: seen {seen:?} of {accepted:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(seen, accepted, "every accepted webhook ran once, in order");
    let _ = node.child.kill();
    let _ = node.child.wait();
}

#[test]
fn sigkill_under_load_loses_no_acknowledged_event_and_applies_none_twice() {
    let root = tempfile::tempdir().unwrap();
    let (data, plugins, bootstrap) = counter_setup(root.path(), DEVICES);
    let mut node = start(&data, &plugins, &bootstrap);
    let (org, devices) = org_and_devices(node.addr, DEVICES);
    let devices = Arc::new(devices);

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    // When each message was sent and acknowledged: per-device order is
    // checked against it (two producers overlap, so n is not the order).
    let times: Arc<Mutex<HashMap<u64, SendTimes>>> = Arc::default();
    let mut sent = 0u64;
    for life in 0..=RANDOM_KILLS {
        let kill_after_ack = life == RANDOM_KILLS;
        let lifetime = Duration::from_millis(fastrand::u64(300..1500));
        let started = Instant::now();
        let dead = Arc::new(AtomicBool::new(false));
        // Producers: two concurrent clients, each message a distinct n.
        let child = Arc::new(Mutex::new(node.child));
        let next = Arc::new(Mutex::new(sent));
        let producers: Vec<_> = (0..2)
            .map(|_| {
                let times = Arc::clone(&times);
                let (acked, dead, child, next, devices) = (
                    Arc::clone(&acked),
                    Arc::clone(&dead),
                    Arc::clone(&child),
                    Arc::clone(&next),
                    Arc::clone(&devices),
                );
                let addr = node.addr;
                let org = org.clone();
                std::thread::spawn(move || {
                    let auth = format!("Bearer {TOKEN}");
                    while !dead.load(Ordering::SeqCst) {
                        let n = {
                            let mut next = next.lock().unwrap();
                            *next += 1;
                            *next
                        };
                        let device = &devices[usize::try_from(n).unwrap() % DEVICES];
                        let path = format!("/v1/orgs/{org}/agents/{device}/channels/ticks/messages");
                        let body = json!({ "n": n, "fail_attempts": u64::from(n % FAIL_EVERY == 0) }).to_string();
                        times.lock().unwrap().insert(n, (Instant::now(), None));
                        let r = http::request(addr, "POST", &path, &[("authorization", &auth)], body.as_bytes());
                        std::thread::sleep(Duration::from_millis(1));
                        match r {
                            Ok(r) if r.status == 201 => {
                                acked.lock().unwrap().insert(n);
                                if let Some(t) = times.lock().unwrap().get_mut(&n) {
                                    t.1 = Some(Instant::now());
                                }
                                if kill_after_ack && started.elapsed() > Duration::from_millis(300) {
                                    // The acceptance case: killed right after its 201.
                                    let _ = child.lock().unwrap().kill();
                                    dead.store(true, Ordering::SeqCst);
                                }
                            }
                            Ok(r) => panic!("publish answered {}: {}", r.status, r.text()),
                            Err(_) => break, // the server died mid-request: not acknowledged
                        }
                    }
                })
            })
            .collect();
        if !kill_after_ack {
            std::thread::sleep(lifetime);
            let _ = child.lock().unwrap().kill();
            dead.store(true, Ordering::SeqCst);
        }
        for p in producers {
            p.join().unwrap();
        }
        let mut child = Arc::try_unwrap(child).ok().unwrap().into_inner().unwrap();
        let _ = child.wait();
        sent = *next.lock().unwrap();
        node = start(&data, &plugins, &bootstrap);
    }

    // The last life: let everything drain.
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 20, "the load was too light to mean anything: {} acknowledged", acked.len());
    let read = |node: &Node| {
        let mut seen = Vec::new();
        let mut counts = 0;
        let mut published = Vec::new();
        for d in devices.iter() {
            let own = counter_seen(node.addr, &org, d);
            let count = own.len() as u64;
            // Order: a message acknowledged before another was sent ran first.
            let times = times.lock().unwrap();
            for (i, earlier) in own.iter().enumerate() {
                for later in &own[i + 1..] {
                    let later_acked = times.get(later).and_then(|t| t.1);
                    let earlier_sent = times.get(earlier).map(|t| t.0);
                    if let (Some(acked), Some(sent)) = (later_acked, earlier_sent) {
                        assert!(
                            acked > sent,
                            "device {d}: {later} was acknowledged before {earlier} was sent, yet ran after it"
                        );
                    }
                }
            }
            counts += count;
            seen.extend(own);
            let path = format!("/v1/orgs/{org}/agents/{d}/channels/counted/messages?limit=1000");
            let counted = get(node.addr, &path);
            published.extend(counted["messages"].as_array().unwrap().iter().map(|m| m["data"]["n"].as_u64().unwrap()));
        }
        (seen, counts, published)
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    let (seen, counts, published) = loop {
        let health = get(node.addr, "/v1/health");
        let (seen, counts, published) = read(&node);
        let distinct: BTreeSet<u64> = seen.iter().copied().collect();
        if health["queue_depth"] == 0 && acked.is_subset(&distinct) {
            break (seen, counts, published);
        }
        assert!(Instant::now() < deadline, "not drained: {health}, {} acknowledged, {} seen", acked.len(), seen.len());
        std::thread::sleep(Duration::from_millis(200));
    };
    let distinct: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), distinct.len(), "a message was counted twice");
    assert_eq!(counts, seen.len() as u64);
    let lost: Vec<&u64> = acked.difference(&distinct).collect();
    assert!(lost.is_empty(), "acknowledged but never processed: {lost:?}");
    assert!(distinct.iter().all(|n| *n <= sent), "only messages that were sent");
    // What the app published (one `counted` message per event, keyed by the
    // event id) appears once per processed message.
    let distinct_published: BTreeSet<u64> = published.iter().copied().collect();
    assert_eq!(published.len(), distinct_published.len(), "a published message appears twice");
    assert_eq!(distinct_published, distinct);
    eprintln!(
        "crash test: {} lives, {} sent, {} acknowledged, {} processed exactly once",
        RANDOM_KILLS + 2,
        sent,
        acked.len(),
        distinct.len()
    );
    let _ = node.child.kill();
    let _ = node.child.wait();
}

/// SIGKILL while the writer is busy with big cycles: 32 clients publish
/// 16 KiB messages at once (each cycle holds many of them, ~0.5 MB), and
/// the server is killed at random moments three times, so the kills land
/// while a cycle is being applied or flushed. After the restarts: every
/// acknowledged message is stored whole and was processed exactly once,
/// and nothing half-written shows (each commit is all or nothing).
#[test]
fn sigkill_while_a_large_batch_is_written_loses_no_acknowledged_event_and_tears_none() {
    const CLIENTS: usize = 32;
    const DEVICES: usize = 8;
    const PAD: usize = 16 * 1024;
    let root = tempfile::tempdir().unwrap();
    let (data, plugins, bootstrap) = counter_setup(root.path(), DEVICES);
    let mut node = start(&data, &plugins, &bootstrap);
    let (org, devices) = org_and_devices(node.addr, DEVICES);
    let devices = Arc::new(devices);
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let next = Arc::new(Mutex::new(0u64));
    for life in 0..4 {
        let last = life == 3;
        let dead = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..CLIENTS)
            .map(|_| {
                let (acked, dead, next, devices) =
                    (Arc::clone(&acked), Arc::clone(&dead), Arc::clone(&next), Arc::clone(&devices));
                let (addr, org) = (node.addr, org.clone());
                std::thread::spawn(move || {
                    let auth = format!("Bearer {TOKEN}");
                    // The last life publishes a few rounds and stops.
                    let rounds = if last { 3 } else { usize::MAX };
                    for _ in 0..rounds {
                        if dead.load(Ordering::SeqCst) {
                            break;
                        }
                        let n = {
                            let mut next = next.lock().unwrap();
                            *next += 1;
                            *next
                        };
                        let device = &devices[usize::try_from(n).unwrap() % DEVICES];
                        let path = format!("/v1/orgs/{org}/agents/{device}/channels/ticks/messages");
                        let body = json!({ "n": n, "pad": "x".repeat(PAD) }).to_string();
                        match http::request(addr, "POST", &path, &[("authorization", &auth)], body.as_bytes()) {
                            Ok(r) if r.status == 201 => {
                                acked.lock().unwrap().insert(n);
                            }
                            Ok(r) => panic!("publish answered {}: {}", r.status, r.text()),
                            Err(_) => break, // killed mid-request: not acknowledged
                        }
                    }
                })
            })
            .collect();
        if !last {
            std::thread::sleep(Duration::from_millis(fastrand::u64(400..1200)));
            let _ = node.child.kill();
            let _ = node.child.wait();
            dead.store(true, Ordering::SeqCst);
        }
        for c in clients {
            c.join().unwrap();
        }
        if !last {
            node = start(&data, &plugins, &bootstrap);
        }
    }
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() > 3 * CLIENTS, "the load was too light to mean anything: {} acknowledged", acked.len());

    let deadline = Instant::now() + Duration::from_secs(120);
    while get(node.addr, "/v1/health")["queue_depth"] != 0 {
        assert!(Instant::now() < deadline, "not drained");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut processed = BTreeSet::new();
    for d in devices.iter() {
        let seen = counter_seen(node.addr, &org, d);
        let distinct: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(distinct.len(), seen.len(), "device {d}: a message was processed twice");
        // Every stored message is whole and was processed; the app's own
        // message for each is there once.
        let stored = get(node.addr, &format!("/v1/orgs/{org}/agents/{d}/channels/ticks/messages?limit=1000"));
        let stored: BTreeSet<u64> = stored["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| {
                assert_eq!(m["data"]["pad"].as_str().map(str::len), Some(PAD), "a message stored whole");
                m["data"]["n"].as_u64().unwrap()
            })
            .collect();
        assert_eq!(stored, distinct, "device {d}: stored messages are the processed ones");
        let counted = get(node.addr, &format!("/v1/orgs/{org}/agents/{d}/channels/counted/messages?limit=1000"));
        let counted: Vec<u64> =
            counted["messages"].as_array().unwrap().iter().map(|m| m["data"]["n"].as_u64().unwrap()).collect();
        assert_eq!(counted.len(), seen.len(), "device {d}: one published message per processed one");
        assert_eq!(counted.iter().copied().collect::<BTreeSet<u64>>(), distinct);
        processed.extend(distinct);
    }
    let lost: Vec<&u64> = acked.difference(&processed).collect();
    assert!(lost.is_empty(), "acknowledged but never processed: {lost:?}");
    eprintln!(
        "large-batch crash test: 4 lives, {} sent, {} acknowledged, {} processed exactly once",
        *next.lock().unwrap(),
        acked.len(),
        processed.len()
    );
    let _ = node.child.kill();
    let _ = node.child.wait();
}

#[path = "../../tests/src/push.rs"]
#[allow(dead_code, reason = "shared with the tests crate, which uses every item")]
mod push;

/// A persistent monitor misses events while its client is away and the
/// server is killed with SIGKILL right after the last one is accepted;
/// after the restart the client gets every one of them, marked replay, in
/// commit order, nothing skipped.
#[test]
fn a_persistent_monitor_replays_across_a_sigkill_in_order_with_nothing_skipped() {
    let root = tempfile::tempdir().unwrap();
    let (data, plugins) = (root.path().join("data"), root.path().join("plugins"));
    std::fs::create_dir_all(&plugins).unwrap();
    let bootstrap = root.path().join("bootstrap.toml");
    std::fs::write(
        &bootstrap,
        format!(
            "[[organisations]]\nname = \"Watched\"\ntokens = [{{ name = \"t\", secret = \"{TOKEN}\" }}]\n\
             [[organisations.agents]]\nname = \"D\"\nserial_number = \"D-1\"\n"
        ),
    )
    .unwrap();
    let start_with_push = || {
        let mut command = serve::paddock();
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--push-listen", "127.0.0.1:0"])
            .arg("--data")
            .arg(&data)
            .arg("--plugins")
            .arg(&plugins)
            .arg("--bootstrap")
            .arg(&bootstrap)
            .env("PADDOCK_OPERATOR_TOKEN", "pdo_crash_operator")
            .env("PADDOCK_LOG", "warn");
        let (child, addr, push) = serve::spawn_with_push(command);
        (child, addr, push.expect("a push listener"))
    };
    let call = |addr: SocketAddr, method: &str, path: &str, body: Value| {
        let auth = format!("Bearer {TOKEN}");
        let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
        http::request(addr, method, path, &headers, body.to_string().as_bytes()).unwrap()
    };
    let (mut child, addr, push_at) = start_with_push();
    let org = get(addr, "/v1/orgs")["organisations"][0]["id"].as_str().unwrap().to_owned();
    let agents = get(addr, &format!("/v1/orgs/{org}/agents"));
    let dev = agents["agents"].as_array().unwrap().iter().find(|a| a["serial_number"] == "D-1").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let spec = json!({"topics": [format!("{dev}/channels/levels")], "type": "tcp", "persistent": true,
                      "batch_size": 10, "batch_duration": 0, "ack": "explicit"});
    let r = call(addr, "POST", &format!("/v1/orgs/{org}/monitors"), spec);
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["id"].as_u64().unwrap() as u32;
    let publish = |addr: SocketAddr, n: u64| {
        let r = call(addr, "POST", &format!("/v1/orgs/{org}/agents/{dev}/channels/levels/messages"), json!({"n": n}));
        assert_eq!(r.status, 201, "{}", r.text());
    };
    // Connected: 0..5 delivered and acknowledged.
    let (status, client) = push::PushClient::connect(push_at, &org, TOKEN, id);
    assert_eq!(status, 200);
    let mut client = client.unwrap();
    for n in 0..5 {
        publish(addr, n);
    }
    let mut live = Vec::new();
    while live.len() < 5 {
        let p = client.next(Duration::from_secs(10)).expect("a live batch");
        live.extend(p.msgs().iter().map(|m| m["Message"]["data"]["n"].as_u64().unwrap()));
        client.ack(p.block, false);
    }
    assert_eq!(live, [0, 1, 2, 3, 4]);
    drop(client);
    // Away: 5..30 accepted, then SIGKILL the instant the last 201 is in hand.
    for n in 5..30 {
        publish(addr, n);
    }
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, _addr, push_at) = start_with_push();
    let (status, client) = push::PushClient::connect(push_at, &org, TOKEN, id);
    assert_eq!(status, 200);
    let mut client = client.unwrap();
    let mut replayed = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while replayed.last() != Some(&29) {
        assert!(Instant::now() < deadline, "replay stopped at {replayed:?}");
        let p = client.next(Duration::from_secs(10)).expect("a replayed batch");
        for m in p.msgs() {
            assert_eq!(m["replay"], true, "{m}");
            replayed.push(m["Message"]["data"]["n"].as_u64().unwrap());
        }
        client.ack(p.block, true);
    }
    // At least once: an acknowledgement the kill took back may resend the
    // end of what was live; after it, every missed event, in order.
    let first = replayed[0];
    assert!(first <= 5, "events were skipped: {replayed:?}");
    assert_eq!(replayed, (first..30).collect::<Vec<_>>(), "in commit order, nothing skipped or repeated");
    assert!(client.next(Duration::from_millis(300)).is_none());
    child.kill().unwrap();
    child.wait().unwrap();
}

/// `request` with a bearer `token`.
fn call(addr: SocketAddr, method: &str, path: &str, token: &str, body: &Value) -> http::Response {
    let auth = format!("Bearer {token}");
    let headers = [("authorization", auth.as_str()), ("content-type", "application/json")];
    let body = if body.is_null() { Vec::new() } else { body.to_string().into_bytes() };
    http::request(addr, method, path, &headers, &body).unwrap()
}

/// Administrative writes are answered only once durable: an organisation
/// and a token created (its secret is shown once), an ingestion endpoint
/// created (its token too), and a token revoked, each SIGKILLed the
/// instant its answer is in hand, are all still so after the restart.
#[test]
fn administrative_writes_answered_survive_a_sigkill_right_after() {
    const OPERATOR: &str = "pdo_crash_operator";
    let root = tempfile::tempdir().unwrap();
    let (data, plugins) = (root.path().join("data"), root.path().join("plugins"));
    copy_app(&plugins, "webhook");
    let bootstrap = root.path().join("bootstrap.toml");
    std::fs::write(&bootstrap, "").unwrap();
    let kill = |mut node: Node| {
        node.child.kill().unwrap();
        node.child.wait().unwrap();
    };

    let node = start(&data, &plugins, &bootstrap);
    let r = call(node.addr, "POST", "/v1/orgs", OPERATOR, &json!({ "name": "Late" }));
    kill(node);
    assert_eq!(r.status, 201, "{}", r.text());
    let org = r.json()["id"].as_str().unwrap().to_owned();

    let node = start(&data, &plugins, &bootstrap);
    let r = call(node.addr, "POST", &format!("/v1/orgs/{org}/tokens"), OPERATOR, &json!({ "name": "kept" }));
    kill(node);
    assert_eq!(r.status, 201, "{}", r.text());
    let (kept_id, kept) = (r.json()["id"].as_str().unwrap().to_owned(), r.json()["token"].as_str().unwrap().to_owned());

    let node = start(&data, &plugins, &bootstrap);
    let r = call(node.addr, "GET", &format!("/v1/orgs/{org}"), &kept, &Value::Null);
    assert_eq!(r.status, 200, "the created organisation and its token survived: {}", r.text());
    let install = json!({ "app": "webhook", "app_key": "hook", "config": { "target_channel": "ticks" } });
    let r = call(node.addr, "POST", &format!("/v1/orgs/{org}/installations"), &kept, &install);
    assert_eq!(r.status, 201, "{}", r.text());
    let install_id = r.json()["installation"]["id"].clone();
    let r = call(node.addr, "POST", &format!("/v1/orgs/{org}/ingestions"), &kept, &json!({ "install_id": install_id }));
    kill(node);
    assert_eq!(r.status, 201, "{}", r.text());
    let (endpoint, endpoint_token) =
        (r.json()["id"].as_str().unwrap().to_owned(), r.json()["token"].as_str().unwrap().to_owned());

    let node = start(&data, &plugins, &bootstrap);
    let body = json!({ "readings": [] });
    let r = call(node.addr, "POST", &format!("/v1/ingest/{endpoint}"), &endpoint_token, &body);
    assert_eq!(r.status, 202, "the created ingestion endpoint survived: {}", r.text());
    let r = call(node.addr, "DELETE", &format!("/v1/orgs/{org}/tokens/{kept_id}"), OPERATOR, &Value::Null);
    kill(node);
    assert_eq!(r.status, 204, "{}", r.text());

    let node = start(&data, &plugins, &bootstrap);
    let r = call(node.addr, "GET", &format!("/v1/orgs/{org}"), &kept, &Value::Null);
    assert_eq!(r.status, 401, "the revoked token stayed revoked: {}", r.text());
    kill(node);
}

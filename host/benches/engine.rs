//! End-to-end durable delivery: publish → counter processor → tag commit.
//!
//! Flush policy: ingress flushes before it answers (an accepted message is
//! durable); the dispatcher flushes once per round (group commit). The
//! store is a real directory.
//!
//! Scenarios (events/s, and latency = end of the invocation − acceptance,
//! from the summaries' µs `latency_us`; the commit follows within µs):
//! - `lines` installations of the counter, one per agent, with `agents`
//!   agents in the store, events spread over the installations;
//! - fairness: tenant B's latency alone, then while tenant A floods
//!   (`PADDOCK_BENCH_ONLY=fairness`; `PADDOCK_BENCH_CONCURRENCY` sets the
//!   concurrency, default 8).
//!
//! Run: `cargo bench -p paddock --bench engine`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "benchmark code")]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use paddock::engine::{Engine, EngineConfig, Installation};
use paddock::model::{Agent, ChannelName, ChannelRef, InstallId, OrgId};
use paddock::runtime::{LoadedApp, Runtime, RuntimeConfig};
use paddock::store::Store;
use serde_json::json;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn ticks(agent: u64) -> ChannelRef {
    ChannelRef { agent_id: agent.into(), name: ChannelName::new("ticks").unwrap() }
}

/// Concurrent invocations (`PADDOCK_BENCH_CONCURRENCY`, default 8).
fn concurrency() -> usize {
    std::env::var("PADDOCK_BENCH_CONCURRENCY").ok().and_then(|v| v.parse().ok()).unwrap_or(8)
}

/// Ingress writes per flush per organisation (`PADDOCK_BENCH_INGRESS_BATCH`,
/// default the engine's).
fn ingress_batch() -> usize {
    let default = EngineConfig::default().ingress_batch;
    std::env::var("PADDOCK_BENCH_INGRESS_BATCH").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

struct Setup {
    engine: Arc<Engine>,
    _dir: tempfile::TempDir,
}

/// An engine over a fresh store with `agents` agents in `orgs` and a counter
/// installed on the first `lines` agents of each organisation.
async fn setup(rt: &Arc<Runtime>, app: &Arc<LoadedApp>, orgs: &[(u64, u64, u64)], per_org: usize) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    for &(org, agents, _) in orgs {
        for a in 0..agents {
            let id = org * 1_000_000 + a;
            let agent =
                Agent { id: id.into(), name: format!("a{id}"), serial_number: None, group: None, metadata: json!({}) };
            store.put_agent(OrgId::from(org), agent).unwrap();
        }
    }
    let config = EngineConfig {
        concurrency: concurrency(),
        max_queue: 1_000_000,
        max_queue_per_org: per_org,
        ingress_batch: ingress_batch(),
        ..EngineConfig::default()
    };
    let engine = Arc::new(Engine::new(store, Arc::clone(rt), config).unwrap());
    for &(org, _, lines) in orgs {
        for a in 0..lines {
            let agent = org * 1_000_000 + a;
            let inst = Installation {
                id: InstallId::from(agent),
                organisation_id: org.into(),
                agent_id: agent.into(),
                app_key: "counter".into(),
                display_name: "Counter".into(),
                config: json!({}),
                subscriptions: vec![ChannelName::new("ticks").unwrap()],
                app: Arc::clone(app),
            };
            engine.install(inst).await.unwrap();
        }
    }
    Setup { engine, _dir: dir }
}

/// Latencies (µs, acceptance to the end of the invocation) of every
/// summary of installations in `org`.
fn latencies(engine: &Engine, org: u64, lines: u64) -> Vec<u64> {
    let mut all = Vec::new();
    for a in 0..lines {
        let inst = InstallId::from(org * 1_000_000 + a);
        for s in engine.store().invocations(inst, usize::MAX).unwrap() {
            all.push(s.latency_us);
        }
    }
    all.sort_unstable();
    all
}

/// Publish `per_line` events on each of `lines` agents of `org`, from
/// `publishers` concurrent tasks, while the dispatcher runs; wait until all
/// ran. Returns (ingress seconds, total seconds).
async fn load(engine: &Arc<Engine>, org: u64, lines: u64, per_line: u64, publishers: u64) -> (f64, f64) {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let engine = Arc::clone(engine);
        tasks.push(tokio::spawn(async move {
            for i in 0..per_line * lines {
                if i % publishers != p {
                    continue;
                }
                let agent = org * 1_000_000 + i % lines;
                // A client honours `tenant busy` by backing off, as it
                // would a 429 with Retry-After.
                loop {
                    match engine.publish_message(ticks(agent), agent.into(), json!({"n": i})).await {
                        Ok(_) => break,
                        Err(paddock::engine::EngineError::TenantBusy { .. }) => {
                            tokio::time::sleep(Duration::from_millis(5)).await;
                        }
                        Err(e) => panic!("{e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let ingress = start.elapsed().as_secs_f64();
    while engine.queue_depth() > 0 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    (ingress, start.elapsed().as_secs_f64())
}

/// A flooding tenant: `publishers` tasks publish over `lines` agents of
/// `org` as fast as they can (backing off 5 ms on `tenant busy`) until
/// `stop`. Returns (events accepted, refusals).
async fn flood(engine: Arc<Engine>, org: u64, lines: u64, publishers: u64, stop: Arc<AtomicBool>) -> (u64, u64) {
    let mut tasks = Vec::new();
    for p in 0..publishers {
        let (engine, stop) = (Arc::clone(&engine), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let (mut sent, mut refused) = (0u64, 0u64);
            let mut i = p;
            while !stop.load(Ordering::Relaxed) {
                let agent = org * 1_000_000 + i % lines;
                match engine.publish_message(ticks(agent), agent.into(), json!({"n": i})).await {
                    Ok(_) => sent += 1,
                    Err(paddock::engine::EngineError::TenantBusy { .. }) => {
                        refused += 1;
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                    Err(e) => panic!("{e}"),
                }
                i += publishers;
            }
            (sent, refused)
        }));
    }
    let mut total = (0, 0);
    for t in tasks {
        let (s, r) = t.await.unwrap();
        total = (total.0 + s, total.1 + r);
    }
    total
}

/// A normal tenant: `count` events at a steady `every` interval (open loop:
/// each publish is its own task, so a slow answer does not slow the rate),
/// round-robin over `lines` agents of `org`; waits until all ran.
async fn paced(engine: &Arc<Engine>, org: u64, lines: u64, count: u64, every: Duration) {
    let mut tick = tokio::time::interval(every);
    let mut tasks = Vec::new();
    for i in 0..count {
        tick.tick().await;
        let engine = Arc::clone(engine);
        let agent = org * 1_000_000 + i % lines;
        tasks.push(tokio::spawn(async move {
            engine.publish_message(ticks(agent), agent.into(), json!({"n": i})).await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    while engine.queue_depth_by_org().contains_key(&OrgId::from(org)) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

fn main() {
    let filter = std::env::var("PADDOCK_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::new(filter)).try_init();
    let tokio = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    tokio.block_on(async {
        let rt = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
        let app = Arc::new(rt.load_dir(&repo().join("plugins/counter")).await.unwrap());
        println!(
            "flush policy: ingress flushes (group commit) before answering; the dispatcher's commits are flushed at most every {:?}",
            paddock::engine::FLUSH_EVERY
        );
        println!("{:<34} {:>10} {:>12} {:>10} {:>10}", "scenario", "events", "events/s", "p50 ms", "p99 ms");
        let only = std::env::var("PADDOCK_BENCH_ONLY").unwrap_or_default();
        let scenarios = [
            (1, 1, 400),
            (10, 10, 60),
            (100, 100, 8),
            (1000, 1000, 2),
            (100, 1000, 8),
            (100, 100_000, 8),
        ];
        for (lines, agents, per_line) in scenarios.into_iter().filter(|_| only.is_empty() || only == "scale") {
            let s = setup(&rt, &app, &[(1, agents, lines)], 1_000_000).await;
            let dispatcher = tokio::spawn(Arc::clone(&s.engine).run(std::future::pending()));
            let (ingress, total) = load(&s.engine, 1, lines, per_line, 8).await;
            dispatcher.abort();
            let lat = latencies(&s.engine, 1, lines);
            let n = lines * per_line;
            println!(
                "{:<34} {:>10} {:>12.0} {:>10.1} {:>10.1}   (ingress alone {:.0}/s)",
                format!("{lines} installations, {agents} agents"),
                n,
                n as f64 / total,
                ms(percentile(&lat, 0.5)),
                ms(percentile(&lat, 0.99)),
                n as f64 / ingress
            );
        }

        if !only.is_empty() && only != "fairness" {
            return;
        }
        // Fairness: tenant B, a normal tenant (10 devices, 500 events at a
        // steady 100 events/s), alone; then again while tenant A floods 100
        // devices from 6 publishers as fast as it can, from 200 ms before B
        // starts until B is done, so every B event meets the flood. With the
        // default per-organisation queue bound and with a tight one.
        for per_org in [paddock::engine::EngineConfig::default().max_queue_per_org, 64] {
            let s = setup(&rt, &app, &[(2, 10, 10)], per_org).await;
            let dispatcher = tokio::spawn(Arc::clone(&s.engine).run(std::future::pending()));
            paced(&s.engine, 2, 10, 500, Duration::from_millis(10)).await;
            dispatcher.abort();
            let alone = latencies(&s.engine, 2, 10);

            let s = setup(&rt, &app, &[(1, 100, 100), (2, 10, 10)], per_org).await;
            let dispatcher = tokio::spawn(Arc::clone(&s.engine).run(std::future::pending()));
            let stop = Arc::new(AtomicBool::new(false));
            let started = Instant::now();
            let flooding = tokio::spawn(flood(Arc::clone(&s.engine), 1, 100, 6, Arc::clone(&stop)));
            tokio::time::sleep(Duration::from_millis(200)).await;
            paced(&s.engine, 2, 10, 500, Duration::from_millis(10)).await;
            stop.store(true, Ordering::Relaxed);
            let (sent, refused) = flooding.await.unwrap();
            let flood_s = started.elapsed().as_secs_f64();
            dispatcher.abort();
            let loaded = latencies(&s.engine, 2, 10);
            let (a50, a99) = (ms(percentile(&alone, 0.5)), ms(percentile(&alone, 0.99)));
            let (l50, l99) = (ms(percentile(&loaded, 0.5)), ms(percentile(&loaded, 0.99)));
            println!(
                "fairness (concurrency {}, ingress batch {}, queue bound per organisation {per_org}): tenant B alone p50 {a50:.2} ms \
                 p99 {a99:.2} ms; while A floods p50 {l50:.2} ms p99 {l99:.2} ms ({:.2}x p99); \
                 A published {sent} events in {flood_s:.1} s ({:.0}/s), {refused} refusals (tenant busy)",
                concurrency(),
                ingress_batch(),
                l99 / a99.max(0.001),
                sent as f64 / flood_s,
            );
        }
    });
}

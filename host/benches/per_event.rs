//! Per-event cost: fresh store + instantiate + handle + drop.
//!
//! All measured in one process, on the same engine settings, interleaved in
//! rounds so that machine-speed drift hits every case alike:
//! - `raw-trivial`:    raw wasmtime, instantiate + call of a trivial WAT component;
//! - `raw-tank`:       raw wasmtime, instantiate the tank-level component (WASI
//!   linked, paddock imports stubbed) + call its `hooks` export;
//! - `raw-handle`:     raw wasmtime, the tank-level component's real `handle`
//!   on the same reading, with do-nothing host functions (no policy, no
//!   effects): the guest's own work, which any host pays;
//! - `raw-filter`:     raw-handle on a reading on another channel, which
//!   the app's `pre_hook_filter` drops: the guest's own fixed work;
//! - `native`:         the tank-level logic as native Rust over a JSON state;
//! - `paddock`:        `Runtime::invoke` of tank-level on a reading (fuel on);
//! - `paddock-epoch`:  the same with fuel off (epoch deadline only);
//! - `paddock-filter`: a reading on another channel, dropped by the app's
//!   `pre_hook_filter`: the host's fixed cost per event;
//! - `host-calls`:     the capability work of `paddock`'s event without wasm:
//!   a session, the context's tags and config as JSON text, the tank app's
//!   four tag writes, message, connection ping and log line, and the
//!   session's end (what `paddock` pays on top of `raw-handle` in its
//!   host calls);
//! - `fuel-rate`:      fuel burned per ms by the hostile spin loop (calibrates
//!   `FUEL_PER_MS`).
//!
//! Run: `make bench` (or `cargo bench -p paddock --bench per_event`).
//! Iterations per case: `PADDOCK_BENCH_ITERS` (default 3000).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

/// The allocator the `paddock` binary runs with.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock::caps::{ConnectionStatus, Grant, LogLevel, MemoryState, NewMessage, Reach, Session};
use paddock::model::{Agent, ChannelName, ChannelRef, Event, EventId, Message, MessageId, OrgId};
use paddock::runtime::{Invocation, LoadedApp, Outcome, Runtime, RuntimeConfig};
use serde_json::{Value, json};
use wasmtime::Store;
use wasmtime::component::{Component, InstancePre, Linker, Val};

#[path = "support/stub.rs"]
mod stub;

const WARMUP: usize = 300;
/// Rounds the iterations are split into (see the module docs).
const ROUNDS: usize = 20;

fn iters() -> usize {
    std::env::var("PADDOCK_BENCH_ITERS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn must<T, E: std::fmt::Display>(r: Result<T, E>) -> T {
    r.unwrap_or_else(|e| panic!("{e}"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Case {
    RawTrivial,
    RawTank,
    RawHandle,
    RawFilter,
    Native,
    Paddock,
    PaddockEpoch,
    PaddockFilter,
    HostCalls,
}

const CASES: [Case; 9] = [
    Case::RawTrivial,
    Case::RawTank,
    Case::RawHandle,
    Case::RawFilter,
    Case::Native,
    Case::Paddock,
    Case::PaddockEpoch,
    Case::PaddockFilter,
    Case::HostCalls,
];

impl Case {
    fn name(self) -> &'static str {
        match self {
            Case::RawTrivial => "raw-trivial",
            Case::RawTank => "raw-tank",
            Case::RawHandle => "raw-handle",
            Case::RawFilter => "raw-filter",
            Case::Native => "native",
            Case::Paddock => "paddock",
            Case::PaddockEpoch => "paddock-epoch",
            Case::PaddockFilter => "paddock-filter",
            Case::HostCalls => "host-calls",
        }
    }
}

const TRIVIAL: &str = r#"(component
    (core module $m (func (export "run")))
    (core instance $i (instantiate $m))
    (func (export "run") (canon lift (core func $i "run"))))"#;

/// Everything the cases need, prepared once.
struct Bench {
    rt: Runtime,
    epoch_rt: Runtime,
    trivial: InstancePre<stub::Stub>,
    raw_tank: InstancePre<stub::Stub>,
    raw_handle: stub::AppPre<stub::Stub>,
    stub_inputs: (stub::paddock::app::types::Context, stub::paddock::app::types::Event),
    stub_filtered: stub::paddock::app::types::Event,
    app: LoadedApp,
    epoch_app: LoadedApp,
    state: Arc<MemoryState>,
    grant: Grant,
    reading: Event,
    other: Event,
    native_tags: Value,
}

impl Bench {
    async fn new() -> Self {
        let rt = must(Runtime::new(RuntimeConfig::default()));
        let epoch_rt = must(Runtime::new(RuntimeConfig { fuel: false, ..RuntimeConfig::default() }));
        let engine = rt.engine();
        let trivial = must(
            Linker::<stub::Stub>::new(engine)
                .instantiate_pre(&must(Component::new(engine, must(wat::parse_str(TRIVIAL))))),
        );
        let tank = must(Component::from_file(engine, repo().join("plugins/tank-level/tank_level.wasm")));
        // Every import linked for real, the capabilities with no-op stubs:
        // trap stand-ins (`define_unknown_imports_as_traps`) would give the
        // guest's older `wasi:io@0.2.0` imports resource types of their own,
        // which clash with the 0.2.12 ones its other imports use.
        let stub_linker = stub::linker(engine);
        let raw_tank = must(stub_linker.instantiate_pre(&tank));
        let raw_handle = must(stub::AppPre::new(must(stub_linker.instantiate_pre(&tank))));
        let app = must(rt.load_dir(&repo().join("plugins/tank-level")).await);
        let epoch_app = must(epoch_rt.load_dir(&repo().join("plugins/tank-level")).await);
        let grant = grant(&app);
        let native_tags =
            json!({"tank_level": {"last_level": 35.0, "min_level": 30.0, "max_level": 80.0, "readings": 12}});
        Bench {
            rt,
            epoch_rt,
            trivial,
            raw_tank,
            raw_handle,
            stub_inputs: stub::inputs(),
            stub_filtered: stub::message_inputs("tank_level", "{}", "gps", r#"{"distance_mm":1100}"#).1,
            app,
            epoch_app,
            state: Arc::new(tank_state()),
            grant,
            reading: reading_on("sensor_data"),
            other: reading_on("gps"),
            native_tags,
        }
    }

    fn bare_store(&self) -> Store<stub::Stub> {
        stub::store(self.rt.engine())
    }

    async fn run(&mut self, case: Case) {
        match case {
            Case::RawTrivial => {
                let mut store = self.bare_store();
                let instance = must(self.trivial.instantiate_async(&mut store).await);
                let f = must(instance.get_typed_func::<(), ()>(&mut store, "run"));
                must(f.call_async(&mut store, ()).await);
            }
            Case::RawTank => {
                let mut store = self.bare_store();
                let instance = must(self.raw_tank.instantiate_async(&mut store).await);
                let iface = instance.get_export_index(&mut store, None, "paddock:app/handler@0.1.0");
                let idx = iface.and_then(|i| instance.get_export_index(&mut store, Some(&i), "hooks"));
                let func = idx.and_then(|i| instance.get_func(&mut store, i));
                let Some(func) = func else { panic!("hooks export missing") };
                let mut results = [Val::Bool(false)];
                must(func.call_async(&mut store, &[], &mut results).await);
            }
            Case::RawHandle | Case::RawFilter => {
                let mut store = self.bare_store();
                let app = must(self.raw_handle.instantiate_async(&mut store).await);
                let (ctx, reading) = &self.stub_inputs;
                let event = if case == Case::RawHandle { reading } else { &self.stub_filtered };
                let result = must(app.paddock_app_handler().call_handle(&mut store, ctx, event).await);
                assert!(result.is_ok());
            }
            Case::Native => {
                std::hint::black_box(native_tank(&mut self.native_tags, r#"{"distance_mm":1100}"#));
            }
            Case::Paddock => invoke(&self.rt, &self.app, &self.grant, &self.reading, &self.state).await,
            Case::PaddockEpoch => {
                invoke(&self.epoch_rt, &self.epoch_app, &self.grant, &self.reading, &self.state).await
            }
            Case::PaddockFilter => invoke(&self.rt, &self.app, &self.grant, &self.other, &self.state).await,
            Case::HostCalls => host_calls(&self.grant, &self.state),
        }
    }
}

async fn invoke(rt: &Runtime, app: &LoadedApp, grant: &Grant, event: &Event, state: &Arc<MemoryState>) {
    let inv = Invocation { event_id: EventId::generate(), attempt: 1, event: event.clone(), grant: grant.clone() };
    let r = rt.invoke(app, inv, state.clone()).await;
    assert!(r.outcome.is_ok(), "{:?}", r.outcome);
}

/// The tank app's host calls for one reading, made on a [`Session`]
/// directly, with the values the guest passes.
fn host_calls(grant: &Grant, state: &Arc<MemoryState>) {
    let mut session = Session::new(grant.clone(), state.clone());
    let context = (must(session.tags_snapshot()), session.grant().config.to_string());
    for (key, value) in [("last_level", "50.0"), ("min_level", "30.0"), ("max_level", "80.0"), ("readings", "13")] {
        must(session.tag_set(key, value, false));
    }
    let message = NewMessage {
        channel: "tank_level".into(),
        agent_id: None,
        data: r#"{"distance_mm":1100.0,"level_percent":50.0}"#.into(),
        timestamp: None,
        message_id: None,
    };
    must(session.create_message(message));
    must(session.connection_ping(None, ConnectionStatus::PeriodicUnknown, None));
    session.logs_mut().push(LogLevel::Info, "log", "distance 1100 mm -> level 50.0% (min 30.0, max 80.0)");
    std::hint::black_box((context, session.finish()));
}

fn tank_state() -> MemoryState {
    let mut s = MemoryState::default();
    let agent =
        Agent { id: 7002.into(), name: "North Tank".into(), serial_number: None, group: None, metadata: json!({}) };
    s.add_agent(OrgId::from(7001), agent);
    s.set_tags(
        7002.into(),
        "tank_level",
        json!({"last_level": 35.0, "min_level": 30.0, "max_level": 80.0, "readings": 12}),
    );
    s
}

fn reading_on(channel: &str) -> Event {
    let channel = ChannelRef { agent_id: 7002.into(), name: must(ChannelName::new(channel)) };
    let message = Message {
        id: MessageId::at(paddock::model::now_ms()),
        author_id: 7002.into(),
        channel,
        data: json!({"distance_mm": 1100}),
        timestamp: None,
        attachments: None,
    };
    Event::MessageCreate { organisation_id: OrgId::from(7001), message }
}

fn grant(app: &LoadedApp) -> Grant {
    Grant {
        organisation_id: OrgId::from(7001),
        agent_id: 7002.into(),
        app_id: 1.into(),
        install_id: 2.into(),
        app_key: "tank_level".into(),
        display_name: "North Tank".into(),
        config: app.manifest.validate_config(&json!({})).unwrap_or_else(|e| panic!("{e:?}")).to_string().into(),
        reach: Reach::OwnAgent,
        invoking_channel: None,
        allow_invoking_channel: false,
        oauth: None,
    }
}

/// The tank-level handler's work in native Rust: parse the reading, update
/// tags in a JSON document, build the published message, serialize.
fn native_tank(tags: &mut Value, data: &str) -> String {
    let data: Value = serde_json::from_str(data).unwrap_or(Value::Null);
    let distance = data.get("distance_mm").and_then(Value::as_f64).unwrap_or(0.0);
    let level = (((2000.0 - distance) / 1800.0 * 100.0_f64).clamp(0.0, 100.0) * 10.0).round() / 10.0;
    let t = &mut tags["tank_level"];
    let min = t["min_level"].as_f64().map_or(level, |m| m.min(level));
    let max = t["max_level"].as_f64().map_or(level, |m| m.max(level));
    let readings = t["readings"].as_u64().unwrap_or(0) + 1;
    *t = json!({"last_level": level, "min_level": min, "max_level": max, "readings": readings, "low_alarm": level < 20.0});
    json!({"level_percent": level, "distance_mm": distance}).to_string()
}

struct Stats {
    median: Duration,
    p99: Duration,
    mean: Duration,
}

fn stats(mut samples: Vec<Duration>) -> Stats {
    samples.sort();
    let n = samples.len().max(1);
    let mean = samples.iter().sum::<Duration>() / n as u32;
    Stats { median: samples[n / 2], p99: samples[(n * 99 / 100).min(n - 1)], mean }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

async fn fuel_rate(rt: &Runtime) -> f64 {
    let app = must(rt.load_dir(&repo().join("plugins/hostile")).await);
    let mut g = grant(&app);
    g.config = "{}".into();
    let event = Event::ManualInvoke { organisation_id: OrgId::from(7001), payload: json!({"mode": "loop"}) };
    let mut rates = Vec::new();
    for _ in 0..5 {
        let inv = Invocation { event_id: EventId::generate(), attempt: 1, event: event.clone(), grant: g.clone() };
        let r = rt.invoke(&app, inv, Arc::new(tank_state())).await;
        // Fuel normally runs out first; on a loaded machine the epoch
        // deadline may win. Either way fuel consumed over time is the rate.
        let stopped = matches!(r.outcome, Outcome::FuelExhausted { .. } | Outcome::Timeout { .. });
        assert!(stopped, "{:?}", r.outcome);
        let rate = r.fuel_consumed as f64 / (r.duration.as_secs_f64() * 1000.0);
        println!("  fuel-rate run: {:?} after {:?}, {} fuel, {rate:.0}/ms", r.outcome, r.duration, r.fuel_consumed);
        rates.push(rate);
    }
    rates.sort_by(f64::total_cmp);
    rates[rates.len() / 2]
}

fn main() {
    let tokio = must(tokio::runtime::Builder::new_current_thread().enable_all().build());
    tokio.block_on(async {
        let mut bench = Bench::new().await;
        println!(
            "allocator: {:?}, iterations per case: {}, rounds: {ROUNDS}",
            bench.rt.allocator(),
            iters()
        );
        for case in CASES {
            for _ in 0..WARMUP {
                bench.run(case).await;
            }
        }
        // PADDOCK_BENCH_ONLY=<case name> loops one case, for profiling.
        if let Ok(only) = std::env::var("PADDOCK_BENCH_ONLY") {
            let Some(case) = CASES.into_iter().find(|c| c.name() == only) else {
                panic!("no case {only}")
            };
            for _ in 0..iters() {
                bench.run(case).await;
            }
            return;
        }
        let per_round = iters().div_ceil(ROUNDS);
        let mut samples: Vec<Vec<Duration>> =
            CASES.iter().map(|_| Vec::with_capacity(iters())).collect();
        for _ in 0..ROUNDS {
            for (i, case) in CASES.into_iter().enumerate() {
                for _ in 0..per_round {
                    let t = Instant::now();
                    bench.run(case).await;
                    samples[i].push(t.elapsed());
                }
            }
        }
        let results: Vec<Stats> = samples.into_iter().map(stats).collect();
        let raw_tank = results[1].median;
        for (case, s) in CASES.iter().zip(&results) {
            println!(
                "{:<15} median {:>8.2} us  p99 {:>8.2} us  mean {:>8.2} us  {:>5.2}x raw-tank",
                case.name(),
                us(s.median),
                us(s.p99),
                us(s.mean),
                s.median.as_secs_f64() / raw_tank.as_secs_f64()
            );
        }
        let by = |c: Case| {
            results[CASES.iter().position(|x| *x == c).unwrap_or(0)]
                .median
                .as_secs_f64()
        };
        println!(
            "paddock/raw-handle {:.2}x (Paddock's own overhead for the same guest work); paddock-filter/raw-filter {:.2}x (its fixed part); paddock/raw-trivial {:.2}x; paddock/native {:.1}x; fuel on/off {:.2}x",
            by(Case::Paddock) / by(Case::RawHandle),
            by(Case::PaddockFilter) / by(Case::RawFilter),
            by(Case::Paddock) / by(Case::RawTrivial),
            by(Case::Paddock) / by(Case::Native),
            by(Case::Paddock) / by(Case::PaddockEpoch)
        );
        println!(
            "fuel-rate       {:.0} fuel/ms (FUEL_PER_MS = {})",
            fuel_rate(&bench.rt).await,
            paddock::runtime::FUEL_PER_MS
        );
    });
}

//! The engine with the real `counter` component: exactly-once effects under
//! retries, per-device ordering, dead letters and redrive, loop protection.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use std::sync::Arc;
use std::time::{Duration, Instant};

use paddock::engine::{Engine, EngineConfig, EngineError, Installation, MAX_DEPTH, RetryPolicy};
use paddock::model::{Agent, AgentId, ChannelName, ChannelRef, OrgId};
use paddock::store::Store;
use paddock_tests::*;
use serde_json::{Value, json};

const INSTALL: u64 = 31;
/// The organisation of [`FOREIGN`].
const FOREIGN_ORG: u64 = 8001;

async fn engine(policy: RetryPolicy) -> Arc<Engine> {
    engine_with(EngineConfig { retry: policy, concurrency: 4, ..EngineConfig::default() }, "counter").await
}

async fn engine_with(config: EngineConfig, app: &str) -> Arc<Engine> {
    let store = Store::temporary().unwrap();
    let agent = Agent { id: TANK.into(), name: "tank".into(), serial_number: None, group: None, metadata: json!({}) };
    store.put_agent(OrgId::from(ORG), agent).unwrap();
    engine_over(store, config, app).await
}

/// An engine over `store` with `app` installed on the tank.
async fn engine_over(store: Store, config: EngineConfig, app: &str) -> Arc<Engine> {
    let rt = Arc::new(runtime());
    let loaded = Arc::new(load(&rt, app).await);
    let engine = Engine::new(store, rt, config).unwrap();
    let config = loaded.manifest.validate_config(&json!({})).unwrap();
    engine
        .install(Installation {
            id: INSTALL.into(),
            organisation_id: ORG.into(),
            agent_id: TANK.into(),
            app_key: app.replace('-', "_"),
            display_name: app.into(),
            config: config.to_string().into(),
            subscriptions: loaded.manifest.subscriptions.clone(),
            app: loaded,
        })
        .await
        .unwrap();
    Arc::new(engine)
}

fn fast_retries() -> RetryPolicy {
    RetryPolicy { base_delay: Duration::from_millis(2), max_delay: Duration::from_millis(10), ..RetryPolicy::default() }
}

fn ch(name: &str) -> ChannelRef {
    ChannelRef { agent_id: AgentId::from(TANK), name: ChannelName::new(name).unwrap() }
}

/// Run dispatch rounds until the queue is empty.
async fn drain(engine: &Arc<Engine>) {
    let start = Instant::now();
    while !engine.store().queued().unwrap().is_empty() {
        if start.elapsed() > Duration::from_secs(20) {
            let queued = engine.store().queued().unwrap();
            let heads: Vec<(u64, u64, u32, bool)> =
                queued.iter().map(|e| (e.seq, e.due_ms, e.attempt, engine.store().is_head(e).unwrap())).collect();
            panic!("queue did not drain: (seq, due, attempt, head) {heads:?}");
        }
        if engine.run_once().await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
}

fn tags(engine: &Engine) -> Value {
    let agg = engine.store().get_aggregate(&ch("tag_values")).unwrap();
    agg.map(|a| a.data["counter"].clone()).unwrap_or(Value::Null)
}

#[tokio::test]
async fn every_attempt_leaves_a_summary_and_committed_ones_a_dv_proc_inv_message() {
    let engine = engine(fast_retries()).await;
    engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 0, "fail_attempts": 1})).await.unwrap();
    drain(&engine).await;
    let summaries = engine.store().invocations(INSTALL.into(), 10).unwrap();
    let mut by_attempt: Vec<(u32, String)> = summaries.iter().map(|s| (s.attempt, s.status.clone())).collect();
    by_attempt.sort();
    assert_eq!(by_attempt, vec![(1, "error".to_string()), (2, "success".to_string())]);
    let failed = summaries.iter().find(|s| s.attempt == 1).unwrap();
    assert!(failed.error.as_deref().unwrap_or("").contains("attempt 1 asked to fail"), "{failed:?}");
    assert_eq!(failed.op, "on_message_create");
    let ok = summaries.iter().find(|s| s.attempt == 2).unwrap();
    assert!(ok.fuel > 0 && ok.duration_ms > 0.0);
    let published = engine.store().list_messages(&ch(&format!("dv-proc-inv-{INSTALL}")), None, 10).unwrap();
    assert_eq!(published.len(), 1, "the committed attempt is published with its effects");
    assert_eq!(published[0].data["status"], json!("success"));
    assert!(published[0].data.get("logs").is_none(), "logs stay in the summary record");
}

#[tokio::test]
async fn installing_an_app_with_a_deployment_hook_runs_it() {
    let engine = engine_with(EngineConfig { retry: fast_retries(), ..EngineConfig::default() }, "tank-level").await;
    drain(&engine).await;
    let ui = engine.store().get_aggregate(&ch("ui_state")).unwrap().expect("the deployment hook published its UI");
    assert_eq!(ui.data["state"]["children"]["tank_level"]["type"], json!("uiContainer"));
}

#[tokio::test]
async fn ingress_answers_busy_past_the_queue_bound_and_keeps_nothing_of_the_refused_request() {
    let config = EngineConfig { retry: fast_retries(), max_queue: 3, ..EngineConfig::default() };
    let engine = engine_with(config, "counter").await;
    for n in 0..3 {
        engine.publish_message(ch("ticks"), TANK.into(), json!({"n": n})).await.unwrap();
    }
    let err = engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 3})).await.unwrap_err();
    assert!(matches!(err, EngineError::Busy { queued: 3, limit: 3 }), "{err}");
    assert_eq!(
        engine.store().list_messages(&ch("ticks"), None, 10).unwrap().len(),
        3,
        "the refused message was not kept"
    );
    drain(&engine).await;
    engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 3})).await.unwrap();
    drain(&engine).await;
    assert_eq!(tags(&engine)["count"], json!(4), "accepted events all ran");
}

#[tokio::test]
async fn one_organisation_past_its_share_of_the_queue_is_slowed_and_the_others_are_not() {
    let config = EngineConfig { retry: fast_retries(), max_queue_per_org: 2, ..EngineConfig::default() };
    let engine = engine_with(config, "counter").await;
    // A second organisation with its own device and counter.
    let other =
        Agent { id: FOREIGN.into(), name: "other".into(), serial_number: None, group: None, metadata: json!({}) };
    engine.store().put_agent(OrgId::from(FOREIGN_ORG), other).unwrap();
    let app = engine.active_installation(INSTALL.into()).unwrap().app.clone();
    engine
        .install(Installation {
            id: (INSTALL + 1).into(),
            organisation_id: FOREIGN_ORG.into(),
            agent_id: FOREIGN.into(),
            app_key: "counter".into(),
            display_name: "counter".into(),
            config: "{}".into(),
            subscriptions: app.manifest.subscriptions.clone(),
            app,
        })
        .await
        .unwrap();
    for n in 0..2 {
        engine.publish_message(ch("ticks"), TANK.into(), json!({"n": n})).await.unwrap();
    }
    let err = engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 2})).await.unwrap_err();
    assert!(
        matches!(err, EngineError::TenantBusy { organisation, queued: 2, limit: 2 } if organisation == OrgId::from(ORG)),
        "{err}"
    );
    assert_eq!(engine.store().list_messages(&ch("ticks"), None, 10).unwrap().len(), 2, "nothing of it was kept");
    let theirs = ChannelRef { agent_id: FOREIGN.into(), name: ChannelName::new("ticks").unwrap() };
    engine.publish_message(theirs.clone(), FOREIGN.into(), json!({"n": 0})).await.unwrap();
    assert_eq!(engine.queue_depth_by_org().get(&OrgId::from(FOREIGN_ORG)), Some(&1), "the other tenant gets in");
    drain(&engine).await;
    assert!(engine.queue_depth_by_org().is_empty());
    engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 2})).await.unwrap();
    drain(&engine).await;
    assert_eq!(tags(&engine)["count"], json!(3), "once drained, the organisation is admitted again");
}

#[tokio::test]
async fn concurrent_publishes_of_one_organisation_are_all_accepted_through_its_lane() {
    let engine = engine(fast_retries()).await;
    let publishes: Vec<_> = (0..20)
        .map(|n| {
            let engine = Arc::clone(&engine);
            tokio::spawn(async move { engine.publish_message(ch("ticks"), TANK.into(), json!({"n": n})).await })
        })
        .collect();
    for p in publishes {
        assert!(p.await.unwrap().is_ok(), "a waiting publish is not refused");
    }
    assert_eq!(engine.queue_depth(), 20);
    drain(&engine).await;
    assert_eq!(tags(&engine)["count"], json!(20));
}

#[tokio::test]
async fn retried_events_apply_exactly_once_and_in_order() {
    let engine = engine(fast_retries()).await;
    let n = 24u64;
    for i in 0..n {
        // Every third event fails its first attempt, every fifth its first two.
        let fail = if i % 5 == 0 {
            2
        } else if i % 3 == 0 {
            1
        } else {
            0
        };
        engine.publish_message(ch("ticks"), TANK.into(), json!({"n": i, "fail_attempts": fail})).await.unwrap();
    }
    drain(&engine).await;
    let tags = tags(&engine);
    assert_eq!(tags["count"], json!(n), "each event counted exactly once");
    let seen: Vec<u64> = serde_json::from_value(tags["seen"].clone()).unwrap();
    assert_eq!(seen, (0..n).collect::<Vec<_>>(), "in publish order, retries included");
    let counted = engine.store().list_messages(&ch("counted"), None, 1000).unwrap();
    assert_eq!(counted.len() as u64, n, "no published message appears twice");
    let mut counts: Vec<u64> = counted.iter().map(|m| m.data["count"].as_u64().unwrap()).collect();
    counts.sort();
    assert_eq!(counts, (1..=n).collect::<Vec<_>>());
    assert!(engine.store().dead_letters(10).unwrap().is_empty());
}

/// Publish `n` counter events on one line, then drain it; returns how many
/// dispatch rounds that took.
async fn backlog_rounds(run_events: usize, n: u64) -> (Arc<Engine>, usize) {
    // Runs bounded by count only, however slow the machine.
    let run_for = Duration::from_secs(10);
    let config = EngineConfig { retry: fast_retries(), concurrency: 4, run_events, run_for, ..EngineConfig::default() };
    let engine = engine_with(config, "counter").await;
    for i in 0..n {
        engine.publish_message(ch("ticks"), TANK.into(), json!({"n": i})).await.unwrap();
    }
    let (start, mut rounds) = (Instant::now(), 0);
    while !engine.store().queued().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "the line did not drain");
        rounds += engine.run_once().await.unwrap();
    }
    (engine, rounds)
}

#[tokio::test]
async fn a_lines_backlog_runs_back_to_back_each_event_on_the_state_the_ones_before_it_left() {
    let n = 40u64;
    let (engine, rounds) = backlog_rounds(8, n).await;
    // Each event read the count its predecessors left, though they were
    // committed together with it: message n says count n + 1.
    let counted = engine.store().list_messages(&ch("counted"), None, 1000).unwrap();
    let mut pairs: Vec<(u64, u64)> =
        counted.iter().map(|m| (m.data["n"].as_u64().unwrap(), m.data["count"].as_u64().unwrap())).collect();
    pairs.sort();
    assert_eq!(pairs, (0..n).map(|i| (i, i + 1)).collect::<Vec<_>>());
    let tags = tags(&engine);
    assert_eq!(tags["count"], json!(n));
    assert_eq!(tags["seen"], json!((0..n).collect::<Vec<_>>()), "in line order");
    let summaries = engine.store().invocations(INSTALL.into(), 1000).unwrap();
    assert_eq!(summaries.len() as u64, n, "one invocation and one summary per event");
    // Runs of 8: a round each.
    assert_eq!(rounds, (n / 8) as usize, "{rounds} rounds for {n} events");
    let (_, one_by_one) = backlog_rounds(1, 6).await;
    assert_eq!(one_by_one, 6, "with runs off, one event per round");
}

#[tokio::test]
async fn a_commit_refused_in_a_run_buries_its_event_and_the_events_behind_it_run_again_without_its_effects() {
    // A whole run however slow the debug build (each event here takes ms).
    let run_for = Duration::from_secs(10);
    let config =
        EngineConfig { retry: fast_retries(), concurrency: 4, run_events: 16, run_for, ..EngineConfig::default() };
    let engine = engine_with(config, "hostile").await;
    // Four tags of 250 KiB fit in the 1 MiB aggregate; a fifth does not.
    let events = ["k0", "k1", "k2", "k3", "k4", "small"].map(|key| {
        let kib = if key == "small" { 1 } else { 250 };
        json!({"mode": "bigcall", "key": key, "kib": kib})
    });
    for data in events {
        engine.publish_message(ch("commands"), TANK.into(), data).await.unwrap();
    }
    drain(&engine).await;
    let dead = engine.store().dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event.event.d["message"]["data"]["key"], json!("k4"));
    assert!(dead[0].reason.contains("the limit is"), "{}", dead[0].reason);
    let agg = engine.store().get_aggregate(&ch("tag_values")).unwrap().unwrap();
    let mut keys: Vec<String> = agg.data["hostile"].as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "small"], "k4's write never landed; the event behind it did");
    // The event behind the refused one ran in the run (on state that held
    // k4), was not applied, and ran again after k4 was buried: 7
    // invocations, and only the 5 that committed left a summary.
    let summaries = engine.store().invocations(INSTALL.into(), 100).unwrap();
    assert_eq!(summaries.iter().filter(|s| s.status == "success").count(), 5, "{summaries:?}");
    let metrics = engine.metrics().render(&Default::default());
    let line = format!("paddock_invocations_total{{organisation=\"{ORG}\",status=\"success\"}} 7");
    assert!(metrics.contains(&line), "{metrics}");
}

#[tokio::test]
async fn an_event_failing_every_attempt_is_dead_lettered_and_can_be_redriven() {
    let engine = engine(fast_retries()).await;
    engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 0, "fail_attempts": 3})).await.unwrap();
    engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 1})).await.unwrap();
    drain(&engine).await;
    let dead = engine.store().dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].event.attempt, 3, "1 attempt + 2 retries, like Lambda async");
    assert!(
        dead[0].reason.contains("retry") && dead[0].reason.contains("attempt 3 asked to fail"),
        "{}",
        dead[0].reason
    );
    let t = tags(&engine);
    assert_eq!(t["count"], json!(1), "the failed event left no trace");
    assert_eq!(t["seen"], json!([1]), "the next event in line ran after the first was buried");

    // Redrive: a fresh first attempt, which fails 3 more times... unless the
    // policy allows more attempts. With the default it is buried again.
    assert!(!engine.redrive(FOREIGN_ORG.into(), dead[0].event.id).await.unwrap(), "not another organisation's");
    assert!(engine.redrive(ORG.into(), dead[0].event.id).await.unwrap());
    assert_eq!(engine.store().queued().unwrap()[0].attempt, 1);
    drain(&engine).await;
    assert_eq!(engine.store().dead_letters(10).unwrap().len(), 1);
}

#[tokio::test]
async fn an_event_loop_is_stopped_at_the_depth_limit() {
    let engine = engine(fast_retries()).await;
    engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 0, "echo": true})).await.unwrap();
    drain(&engine).await;
    let dead = engine.store().dead_letters(10).unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].event.depth, MAX_DEPTH + 1);
    assert!(dead[0].reason.starts_with("loop"), "{}", dead[0].reason);
    assert_eq!(tags(&engine)["count"], json!(MAX_DEPTH + 1), "depths 0..=16 ran");
}

#[tokio::test]
async fn ingress_rejects_bad_payloads_and_accepts_nothing() {
    let engine = engine(fast_retries()).await;
    let err = engine.publish_message(ch("ticks"), TANK.into(), json!({"bad key": 1})).await.unwrap_err();
    assert!(err.to_string().contains("bad key"), "{err}");
    assert!(engine.store().queued().unwrap().is_empty());
    assert!(engine.store().list_messages(&ch("ticks"), None, 10).unwrap().is_empty());
}

#[tokio::test]
async fn a_flooding_tenant_does_not_starve_another() {
    let rt = Arc::new(runtime());
    let app = Arc::new(load(&rt, "counter").await);
    let store = Store::temporary().unwrap();
    let config = EngineConfig { retry: fast_retries(), concurrency: 2, ..EngineConfig::default() };
    // Tenant A: 12 devices with a counter each; tenant B: one device.
    let devices: Vec<(u64, u64)> = (0..12).map(|i| (ORG, 100 + i)).chain([(8001, FOREIGN)]).collect();
    for (org, agent) in &devices {
        let a = Agent {
            id: (*agent).into(),
            name: format!("d{agent}"),
            serial_number: None,
            group: None,
            metadata: json!({}),
        };
        store.put_agent(OrgId::from(*org), a).unwrap();
    }
    let engine = Arc::new(Engine::new(store, rt, config).unwrap());
    for (org, agent) in &devices {
        let inst = Installation {
            id: (1000 + agent).into(),
            organisation_id: (*org).into(),
            agent_id: (*agent).into(),
            app_key: "counter".into(),
            display_name: "Counter".into(),
            config: "{}".into(),
            subscriptions: vec![ChannelName::new("ticks").unwrap()],
            app: Arc::clone(&app),
        };
        engine.install(inst).await.unwrap();
    }
    let ticks = |agent: u64| ChannelRef { agent_id: agent.into(), name: ChannelName::new("ticks").unwrap() };
    for round in 0..5 {
        for agent in 100..112 {
            engine.publish_message(ticks(agent), agent.into(), json!({"n": round})).await.unwrap();
        }
    }
    engine.publish_message(ticks(FOREIGN), FOREIGN.into(), json!({"n": 0})).await.unwrap();

    let b_tags = ChannelRef { agent_id: FOREIGN.into(), name: ChannelName::new("tag_values").unwrap() };
    let mut rounds = 0;
    while engine.store().get_aggregate(&b_tags).unwrap().is_none() {
        assert!(engine.run_once().await.unwrap() > 0);
        rounds += 1;
    }
    // Two slots, organisations take turns: B's event runs in the first or
    // second round, not after A's 12 runnable heads (6 rounds) or backlog.
    assert!(rounds <= 2, "tenant B waited {rounds} rounds behind tenant A's flood");
    drain(&engine).await;
}

#[tokio::test]
async fn a_missed_schedule_fires_once_after_downtime_and_a_disabled_one_never() {
    let engine = engine_with(EngineConfig { retry: fast_retries(), ..EngineConfig::default() }, "daily-summary").await;
    let now = paddock::model::now_ms();
    let state = engine.store().get_schedule(INSTALL.into(), "daily").unwrap().expect("registered on install");
    assert!(state.next_fire_ms.is_some_and(|t| t > now), "planned in the future");
    assert_eq!(state.expression, "cron(0 6 * * ? *)");

    // Downtime: the plan says three days ago, so three fires were missed.
    let missed = paddock::store::ScheduleState { next_fire_ms: Some(now - 3 * 86_400_000), ..state.clone() };
    engine.store().put_schedule(&missed).unwrap();
    // Schedules fire at the start of a round; then the queue drains.
    engine.run_once().await.unwrap();
    drain(&engine).await;
    let runs = |e: &Engine| {
        e.store().invocations(INSTALL.into(), 100).unwrap().iter().filter(|s| s.op == "on_schedule").count()
    };
    assert_eq!(runs(&engine), 1, "missed fires collapse into one");
    let after = engine.store().get_schedule(INSTALL.into(), "daily").unwrap().unwrap();
    assert!(after.next_fire_ms.is_some_and(|t| t > now), "the plan moved past now");
    assert_eq!(after.id, state.id);
    engine.run_once().await.unwrap();
    assert_eq!(runs(&engine), 1, "not due again");
    let summary = engine.store().get_aggregate(&ch("daily_summary")).unwrap();
    assert!(summary.is_some(), "the scheduled run wrote its summary aggregate");

    let disabled = paddock::store::ScheduleState { disabled: true, next_fire_ms: Some(now - 1), ..after };
    engine.store().put_schedule(&disabled).unwrap();
    engine.run_once().await.unwrap();
    assert_eq!(runs(&engine), 1, "a disabled schedule never fires");
}

/// Who hears a device's message: the processors installed on its agent
/// and its organisation's integrations, never another agent's processor
/// or another organisation's integration; an installation replaced by one
/// of another kind, or deleted, hears as what it is now.
#[tokio::test]
async fn a_message_reaches_its_agents_processors_and_its_organisations_integrations_only() {
    let rt = Arc::new(runtime());
    let processor = Arc::new(load(&rt, "counter").await);
    let mut integration = load(&rt, "counter").await;
    integration.manifest.kind = paddock::manifest::AppKind::Integration;
    let integration = Arc::new(integration);
    let store = Store::temporary().unwrap();
    for (org, id) in [(ORG, TANK), (ORG, TANK2), (FOREIGN_ORG, FOREIGN)] {
        let agent =
            Agent { id: id.into(), name: format!("a{id}"), serial_number: None, group: None, metadata: json!({}) };
        store.put_agent(OrgId::from(org), agent).unwrap();
    }
    let engine = Arc::new(Engine::new(store, rt, EngineConfig { concurrency: 4, ..EngineConfig::default() }).unwrap());
    let install = |id: u64, org: u64, agent: u64, app: &Arc<paddock::runtime::LoadedApp>| Installation {
        id: id.into(),
        organisation_id: org.into(),
        agent_id: agent.into(),
        app_key: format!("counter_{id}"),
        display_name: "counter".into(),
        config: "{}".into(),
        subscriptions: app.manifest.subscriptions.clone(),
        app: Arc::clone(app),
    };
    // On TANK, on TANK2, on the organisation, on the other organisation.
    for inst in [
        install(41, ORG, TANK, &processor),
        install(42, ORG, TANK2, &processor),
        install(43, ORG, TANK2, &integration),
        install(44, FOREIGN_ORG, FOREIGN, &integration),
    ] {
        engine.install(inst).await.unwrap();
    }
    let ran = |engine: &Engine, id: u64| engine.store().invocations(id.into(), 100).unwrap().len();
    engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 1})).await.unwrap();
    drain(&engine).await;
    assert_eq!([41, 42, 43, 44].map(|id| ran(&engine, id)), [1, 0, 1, 0]);

    // 42 becomes an integration: it now hears TANK too, once.
    engine.install(install(42, ORG, TANK2, &integration)).await.unwrap();
    engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 2})).await.unwrap();
    drain(&engine).await;
    assert_eq!([41, 42, 43, 44].map(|id| ran(&engine, id)), [2, 1, 2, 0]);
    // And TANK2's message reaches it once, as the integration it is now.
    let tank2 = ChannelRef { agent_id: TANK2.into(), name: ChannelName::new("ticks").unwrap() };
    engine.publish_message(tank2, TANK2.into(), json!({"n": 3})).await.unwrap();
    drain(&engine).await;
    assert_eq!([41, 42, 43, 44].map(|id| ran(&engine, id)), [2, 2, 3, 0]);

    // 41 is deleted (it was never stored, only activated): nothing more
    // reaches it, and a second delete finds nothing.
    assert!(engine.delete_installation(41.into()).await.unwrap(), "an active installation existed");
    assert!(!engine.delete_installation(41.into()).await.unwrap(), "deleted already");
    engine.publish_message(ch("ticks"), TANK.into(), json!({"n": 4})).await.unwrap();
    drain(&engine).await;
    assert_eq!([41, 42, 43, 44].map(|id| ran(&engine, id)), [2, 3, 4, 0]);
}

/// Two messages per channel, three summaries per installation, four dead
/// letters per organisation.
const KEEP: paddock::engine::Retention = paddock::engine::Retention {
    messages_per_channel: 2,
    summaries_per_installation: 3,
    dead_letters_per_organisation: 4,
};

#[tokio::test]
async fn retention_keeps_the_newest_messages_and_summaries_through_the_writer() {
    let engine = engine(fast_retries()).await;
    let store = engine.store();
    let org = paddock::store::OrgRecord { id: ORG.into(), name: "o".into(), agent_id: TANK.into(), created_ms: 0 };
    store.put_org(&org).unwrap();
    let mut rec = paddock::engine::new_record("counter", ORG.into(), TANK.into(), "counter", "counter", json!({}));
    rec.id = INSTALL.into();
    store.put_install(&rec).unwrap();
    for n in 0..6 {
        engine.publish_message(ch("ticks"), TANK.into(), json!({"n": n})).await.unwrap();
    }
    drain(&engine).await;
    let inv = ch(&format!("dv-proc-inv-{INSTALL}"));
    assert_eq!(store.list_messages(&inv, None, 10).unwrap().len(), 6);

    let channels = store.list_channels(TANK.into()).unwrap();
    let count = |name: &str| store.list_messages(&ch(name), None, 100).unwrap().len();
    let past: usize = channels.iter().map(|name| count(name).saturating_sub(2)).sum();
    assert!(past >= 8, "ticks and dv-proc-inv have 4 past the bound each: {channels:?}");

    assert_eq!(engine.prune(KEEP).await.unwrap(), past + 3, "the messages past the bound and 3 summaries");
    assert!(channels.iter().all(|name| count(name) <= 2), "every channel keeps its newest two");
    let newest: Vec<i64> =
        store.list_messages(&ch("ticks"), None, 10).unwrap().iter().map(|m| m.data["n"].as_i64().unwrap()).collect();
    assert_eq!(newest, [5, 4], "the newest two ticks");
    assert_eq!(store.list_messages(&inv, None, 10).unwrap().len(), 2);
    assert_eq!(store.invocations(INSTALL.into(), 10).unwrap().len(), 3);
    assert_eq!(tags(&engine)["count"], json!(6), "state is not retention's business");
    assert_eq!(engine.prune(KEEP).await.unwrap(), 0, "nothing more past the bounds");

    // A channel far past its bound is swept a bounded part at a time, to
    // the end.
    let bulk = ch("bulk");
    for part in 0..10u64 {
        let messages = (0..500)
            .map(|i| paddock::model::Message {
                id: (1_000_000 + part * 500 + i).into(),
                author_id: TANK.into(),
                channel: bulk.clone(),
                data: json!({ "i": part * 500 + i }),
                timestamp: None,
                attachments: None,
            })
            .collect();
        let effects = paddock::caps::Effects { messages, ..Default::default() };
        store.commit(paddock::store::Commit::of(&effects, 1)).unwrap();
    }
    assert_eq!(engine.prune(KEEP).await.unwrap(), 4_998);
    let left: Vec<i64> =
        store.list_messages(&bulk, None, 10).unwrap().iter().map(|m| m.data["i"].as_i64().unwrap()).collect();
    assert_eq!(left, [4_999, 4_998]);

    // An organisation keeps its newest four dead letters.
    for id in 900..906u64 {
        let event = paddock::store::QueuedEvent {
            id: id.into(),
            organisation_id: ORG.into(),
            install_id: INSTALL.into(),
            agent_id: TANK.into(),
            event: paddock::model::EventEnvelope { op: "on_manual_invoke".into(), d: json!({}) },
            attempt: 3,
            depth: 0,
            enqueued_ms: 1,
            enqueued_us: 1_000,
            due_ms: 1,
            seq: 0,
        };
        let queued = store.enqueue(&event).unwrap();
        store.dead_letter(&queued, "test", 1).unwrap();
    }
    assert_eq!(engine.prune(KEEP).await.unwrap(), 2, "the two oldest dead letters");
    let kept: Vec<u64> = store.dead_letters_of(ORG.into(), 10).unwrap().iter().map(|d| d.event.id.get()).collect();
    assert_eq!(kept, [902, 903, 904, 905]);

    // A deleted installation's summaries go with the next sweep.
    assert!(engine.delete_installation(INSTALL.into()).await.unwrap());
    assert_eq!(engine.prune(KEEP).await.unwrap(), 3, "its three summaries");
    assert!(store.invocations(INSTALL.into(), 10).unwrap().is_empty());
}

#[tokio::test]
async fn agents_created_at_once_with_one_serial_number_are_one_agent_and_one_refusal() {
    let engine = engine(fast_retries()).await;
    for round in 0..20 {
        let serial = format!("SN-{round}");
        let with_serial = || paddock::tenants::NewAgent {
            name: "pump".into(),
            serial_number: Some(serial.clone()),
            group: None,
            metadata: None,
        };
        let (a, b) =
            tokio::join!(engine.add_agent(ORG.into(), with_serial()), engine.add_agent(ORG.into(), with_serial()));
        let refused = [&a, &b]
            .iter()
            .filter(|r| matches!(r, Err(paddock::tenants::AdminError::SerialTaken(s)) if *s == serial))
            .count();
        assert_eq!((a.is_ok() as usize + b.is_ok() as usize, refused), (1, 1), "round {round}: {a:?} {b:?}");
        let kept = engine.store().agent_by_serial(ORG.into(), &serial).unwrap().expect("indexed");
        assert_eq!(Some(kept.id), [a, b].into_iter().find_map(Result::ok).map(|agent| agent.id));
    }
}

#[tokio::test]
async fn a_queued_event_this_version_cannot_read_is_set_aside_and_the_rest_runs() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let agent = Agent { id: TANK.into(), name: "tank".into(), serial_number: None, group: None, metadata: json!({}) };
    store.put_agent(OrgId::from(ORG), agent).unwrap();
    let engine = engine_over(store, EngineConfig { concurrency: 4, ..EngineConfig::default() }, "counter").await;
    for n in 0..3 {
        engine.publish_message(ch("ticks"), TANK.into(), json!({ "n": n })).await.unwrap();
    }
    drop(engine);

    // The middle event, as a newer version might have written it: JSON
    // this version cannot decode as a queued event.
    let foreign = br#"{"id":1,"written_by":"a newer version"}"#;
    let db = opened(|| sled::open(dir.path()));
    let queue = db.open_tree("queue").unwrap();
    let keys: Vec<_> = queue.iter().keys().map(Result::unwrap).collect();
    assert_eq!(keys.len(), 3, "three events queued");
    queue.insert(&keys[1], &foreign[..]).unwrap();
    db.flush().unwrap();
    drop((queue, db));

    // The engine starts over it (counting the queue reads no event), the
    // two readable events run in their order, and the third is set aside
    // with its bytes, listed for its organisation.
    let store = opened(|| Store::open(dir.path()));
    let engine = engine_over(store, EngineConfig { concurrency: 4, ..EngineConfig::default() }, "counter").await;
    let start = Instant::now();
    while !engine.store().queued_counts().unwrap().is_empty() {
        assert!(start.elapsed() < Duration::from_secs(20), "the queue did not drain");
        if engine.run_once().await.unwrap() == 0 {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    assert_eq!(tags(&engine)["count"], json!(2), "both readable events ran");
    assert_eq!(tags(&engine)["seen"], json!([0, 2]), "in their order");
    let set_aside = engine.store().unreadable_events(OrgId::from(ORG), 10).unwrap();
    let [kept] = set_aside.as_slice() else { panic!("{set_aside:?}") };
    let stored = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &kept.stored).unwrap();
    assert_eq!(stored, foreign);
    assert_eq!((kept.install_id.get(), kept.agent_id.get()), (INSTALL, TANK));
    assert!(kept.reason.contains("queued event"), "{}", kept.reason);
    assert_eq!(engine.queue_depth(), 0, "the set-aside event left the queue's count");
}

/// What `open` opens, once the engine that had the directory open let go
/// of it (its writer thread drops its handle as it stops).
fn opened<T, E: std::fmt::Debug>(open: impl Fn() -> Result<T, E>) -> T {
    let start = Instant::now();
    loop {
        match open() {
            Ok(v) => return v,
            Err(e) if start.elapsed() > Duration::from_secs(10) => panic!("could not open: {e:?}"),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

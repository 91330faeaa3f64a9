//! The example apps through their real components.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use paddock::model::{Event, IngestionId, OrgId};
use paddock::runtime::Outcome;
use paddock_tests::*;
use serde_json::{Value, json};

fn notifications(r: &paddock::runtime::Report) -> usize {
    r.effects.messages.iter().filter(|m| m.channel.name.as_str() == "notifications").count()
}

#[tokio::test]
async fn tank_level_tracks_levels_and_alarms_once_per_crossing() {
    let rt = runtime();
    let app = load(&rt, "tank-level").await;
    let config = json!({"empty_distance_mm": 2000, "full_distance_mm": 200, "low_level_percent": 20});
    let mut st = state();
    // 1100 mm -> 50 %, 1700 -> 16.7 % (alarm), 1750 -> 13.9 % (still low: no
    // second alarm), 1000 -> 55.6 % (re-arms), 1800 -> 11.1 % (alarm again).
    let readings = [(1100, 50.0, 1), (1700, 16.7, 1), (1750, 13.9, 1), (1000, 55.6, 0), (1800, 11.1, 1)];
    let mut alarms = Vec::new();
    for (distance, level, _) in readings {
        let ev = message_event(TANK, "sensor_data", json!({"distance_mm": distance}));
        let r = run(&rt, &app, grant(&app, config.clone()), ev, &st).await;
        assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.logs);
        commit(&mut st, &r);
        assert_eq!(tags_of(&st, TANK, "tank_level")["last_level"], json!(level));
        let published = r.effects.messages.iter().find(|m| m.channel.name.as_str() == "tank_level");
        assert_eq!(published.map(|m| m.data["level_percent"].clone()), Some(json!(level)));
        assert!(r.effects.messages.iter().any(|m| m.channel.name.as_str() == "doover_connection"), "pings");
        alarms.push(notifications(&r));
    }
    assert_eq!(alarms, vec![0, 1, 0, 0, 1], "one notification per downward crossing");
    let tags = tags_of(&st, TANK, "tank_level");
    assert_eq!(tags["min_level"], json!(11.1));
    assert_eq!(tags["max_level"], json!(55.6));
    assert_eq!(tags["readings"], json!(5));
}

#[tokio::test]
async fn tank_level_notification_is_severity_6_and_ui_is_published_on_deployment() {
    let rt = runtime();
    let app = load(&rt, "tank-level").await;
    let low = message_event(TANK, "sensor_data", json!({"distance_mm": 1900}));
    let r = run(&rt, &app, grant(&app, json!({})), low, &state()).await;
    let n = r.effects.messages.iter().find(|m| m.channel.name.as_str() == "notifications");
    assert_eq!(n.map(|m| m.data["severity"].clone()), Some(json!(6)));

    let deploy = Event::Deployment {
        agent_id: TANK.into(),
        app_id: 1.into(),
        app_install_id: 2.into(),
        app_key: "tank_level".into(),
        app_display_name: "North Tank".into(),
    };
    let r = run(&rt, &app, grant(&app, json!({})), deploy, &state()).await;
    assert_eq!(r.outcome, Outcome::Ok);
    let ui = r.effects.aggregates.iter().find(|w| w.channel.name.as_str() == "ui_state");
    let schema = ui.map(|w| w.data["state"]["children"]["tank_level"]["type"].clone());
    assert_eq!(schema, Some(json!("uiContainer")));
}

#[tokio::test]
async fn tank_level_rejects_bad_readings_and_bad_config() {
    let rt = runtime();
    let app = load(&rt, "tank-level").await;
    let junk = message_event(TANK, "sensor_data", json!({"temperature": 3}));
    let r = run(&rt, &app, grant(&app, json!({})), junk, &state()).await;
    assert!(matches!(&r.outcome, Outcome::Fail { reason } if reason.contains("distance_mm")), "{:?}", r.outcome);
    let errors = app.manifest.validate_config(&json!({"low_level_percent": 150, "tank": 1})).unwrap_err();
    assert_eq!(errors.len(), 2, "every violation is listed: {errors:?}");
    // Messages on other channels are filtered before any work is done.
    let other = message_event(TANK, "gps", json!({"lat": 1}));
    let r = run(&rt, &app, grant(&app, json!({})), other, &state()).await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert!(r.effects.is_empty());
}

fn ingestion(content_type: &str, body: &str) -> Event {
    Event::Ingestion {
        ingestion_id: IngestionId::from(55),
        agent_id: TANK.into(),
        organisation_id: OrgId::from(ORG),
        payload: body.as_bytes().to_vec(),
        content_type: content_type.into(),
        invocation_url: "/v1/ingest/55".into(),
    }
}

#[tokio::test]
async fn webhook_routes_json_readings_by_serial_within_the_organisation() {
    let rt = runtime();
    let app = load(&rt, "webhook").await;
    let body = r#"{"readings": [
        {"serial": "TANK-001", "distance_mm": 800},
        {"serial": "TANK-002", "distance_mm": 1500},
        {"serial": "TANK-999", "distance_mm": 1},
        {"serial": "NOPE", "distance_mm": 2}
    ]}"#;
    let r = run(&rt, &app, grant(&app, json!({})), ingestion("application/json", body), &state()).await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.logs);
    let routed: Vec<(u64, Value)> = r
        .effects
        .messages
        .iter()
        .filter(|m| m.channel.name.as_str() == "sensor_data")
        .map(|m| (m.channel.agent_id.get(), m.data.clone()))
        .collect();
    assert_eq!(routed, vec![(TANK, json!({"distance_mm": 800})), (TANK2, json!({"distance_mm": 1500}))]);
    assert!(
        r.logs.lines.iter().any(|l| l.message.contains("TANK-999") && l.message.contains("NOPE")),
        "another tenant's serial is as unknown as a missing one: {:?}",
        r.logs.lines
    );
}

#[tokio::test]
async fn webhook_accepts_csv_and_rejects_garbage() {
    let rt = runtime();
    let app = load(&rt, "webhook").await;
    let csv = "serial,distance_mm,battery\nTANK-002,640,3.7\n";
    let r =
        run(&rt, &app, grant(&app, json!({"target_channel": "readings"})), ingestion("text/csv", csv), &state()).await;
    assert_eq!(r.outcome, Outcome::Ok);
    let m = r.effects.messages.iter().find(|m| m.channel.name.as_str() == "readings");
    assert_eq!(
        m.map(|m| (m.channel.agent_id.get(), m.data.clone())),
        Some((TANK2, json!({"distance_mm": 640, "battery": 3.7})))
    );

    let bad = run(&rt, &app, grant(&app, json!({})), ingestion("application/json", "{not json"), &state()).await;
    assert!(matches!(&bad.outcome, Outcome::Fail { reason } if reason.contains("not JSON")), "{:?}", bad.outcome);
    let ragged = run(&rt, &app, grant(&app, json!({})), ingestion("text/csv", "serial,a\nX\n"), &state()).await;
    assert!(matches!(&ragged.outcome, Outcome::Fail { reason } if reason.contains("row 2")), "{:?}", ragged.outcome);
}

#[tokio::test]
async fn daily_summary_summarises_the_window() {
    let rt = runtime();
    let app = load(&rt, "daily-summary").await;
    let mut st = state();
    let now = paddock::model::now_ms();
    let channel = paddock::model::ChannelRef {
        agent_id: TANK.into(),
        name: must(paddock::model::ChannelName::new("tank_level")),
    };
    // 150 recent messages (two pages) and one older than the window.
    for (i, age_h) in (0..150).map(|i| (i, 1)).chain([(999, 30)]) {
        let ts = now - age_h * 3_600_000 - i;
        st.add_message(paddock::model::Message {
            id: paddock::model::MessageId::at(ts),
            author_id: TANK.into(),
            channel: channel.clone(),
            data: json!({"level_percent": (i % 100) as f64}),
            timestamp: Some(ts),
            attachments: None,
        });
    }
    let ev = Event::Schedule { schedule_id: 9.into(), organisation_id: ORG.into() };
    let r = run(&rt, &app, grant(&app, json!({})), ev, &st).await;
    assert_eq!(r.outcome, Outcome::Ok, "{:?}", r.logs);
    let w = r.effects.aggregates.iter().find(|w| w.channel.name.as_str() == "daily_summary");
    let stats = w.map(|w| w.data["stats"].clone()).unwrap_or(Value::Null);
    assert_eq!(stats["count"], json!(150));
    assert_eq!(stats["min"], json!(0.0));
    assert_eq!(stats["max"], json!(99.0));
    assert_eq!(w.map(|w| w.mode.clone()), Some(paddock::model::WriteMode::Replace));
}

#[tokio::test]
async fn committed_config_schemas_match_what_the_components_export() {
    let rt = runtime();
    for name in ["tank-level", "webhook", "daily-summary"] {
        let app = load(&rt, name).await;
        let exported: Value = must(serde_json::from_str(app.exported_schema.as_deref().unwrap_or("null")));
        assert_eq!(
            app.manifest.config_schema.as_ref(),
            Some(&exported),
            "plugins/{name}/config.schema.json is stale: run `make schemas`"
        );
    }
}

/// The example state, with some reads failing as a broken disk's would.
struct Failing {
    inner: paddock::caps::MemoryState,
    serials: bool,
    aggregates: bool,
    /// The serial lookup panics (a bug in the host's own code).
    panics: bool,
}

impl paddock::caps::StateView for Failing {
    fn agent_org(&self, id: paddock::model::AgentId) -> paddock::caps::Read<Option<OrgId>> {
        self.inner.agent_org(id)
    }
    fn agent(&self, id: paddock::model::AgentId) -> paddock::caps::Read<Option<paddock::model::Agent>> {
        self.inner.agent(id)
    }
    fn agents(&self, org: OrgId, limit: usize) -> paddock::caps::Read<Vec<paddock::model::Agent>> {
        self.inner.agents(org, limit)
    }
    fn agent_by_serial(&self, org: OrgId, serial: &str) -> paddock::caps::Read<Option<paddock::model::Agent>> {
        if self.serials {
            return Err(paddock::caps::ReadError("serials: I/O error".into()));
        }
        assert!(!self.panics, "a bug in the serial lookup");
        self.inner.agent_by_serial(org, serial)
    }
    fn aggregate(&self, ch: &paddock::model::ChannelRef) -> paddock::caps::Read<Option<paddock::model::Aggregate>> {
        if self.aggregates {
            return Err(paddock::caps::ReadError("aggregates: I/O error".into()));
        }
        self.inner.aggregate(ch)
    }
    fn messages(
        &self,
        ch: &paddock::model::ChannelRef,
        before: Option<paddock::model::MessageId>,
        limit: usize,
    ) -> paddock::caps::Read<Vec<paddock::model::Message>> {
        self.inner.messages(ch, before, limit)
    }
    fn message(
        &self,
        ch: &paddock::model::ChannelRef,
        id: paddock::model::MessageId,
    ) -> paddock::caps::Read<Option<paddock::model::Message>> {
        self.inner.message(ch, id)
    }
}

#[tokio::test]
async fn a_failed_state_read_stops_the_invocation_as_a_retryable_host_error_never_as_absent() {
    use paddock::caps::StateView as _;
    let rt = runtime();
    let app = load(&rt, "webhook").await;
    let body = r#"{"readings": [{"serial": "TANK-001", "distance_mm": 800}]}"#;
    let invoke_with = |serials, aggregates, panics| {
        let view = std::sync::Arc::new(Failing { inner: state(), serials, aggregates, panics });
        let event = ingestion("application/json", body);
        let inv = paddock::runtime::Invocation {
            event_id: paddock::model::EventId::generate(),
            attempt: 1,
            event,
            grant: grant(&app, json!({})),
        };
        let rt = &rt;
        let app = &app;
        async move { rt.invoke(app, inv, view).await }
    };
    let invoke = |serials, aggregates| invoke_with(serials, aggregates, false);
    let healthy = invoke(false, false).await;
    assert_eq!(healthy.outcome, Outcome::Ok, "{:?}", healthy.logs);

    // Inside a host call (find-by-serial): the guest is trapped, it never
    // hears "no such device" and routes nothing.
    let r = invoke(true, false).await;
    assert!(
        matches!(&r.outcome, Outcome::HostError { reason } if reason.contains("serials: I/O error")),
        "{:?}",
        r.outcome
    );
    assert!(r.outcome.is_retryable() && r.effects.is_empty());
    // Before the guest runs (its tag snapshot): not run at all.
    let r = invoke(false, true).await;
    assert!(matches!(&r.outcome, Outcome::HostError { reason } if reason.contains("aggregates")), "{:?}", r.outcome);
    assert!(r.effects.is_empty() && r.fuel_consumed == 0);
    assert!(state().agent_by_serial(OrgId::from(ORG), "TANK-001").unwrap().is_some());

    // A bug in the host's own code (a panic inside a host call) is a
    // retryable host error of this invocation, not a dead task: the
    // dispatcher retries the event and its line goes on.
    let r = invoke_with(false, false, true).await;
    assert!(
        matches!(&r.outcome, Outcome::HostError { reason } if reason.contains("the host panicked: a bug in the serial lookup")),
        "{:?}",
        r.outcome
    );
    assert!(r.outcome.is_retryable() && r.effects.is_empty());
    // The runtime is none the worse for it.
    assert_eq!(invoke(false, false).await.outcome, Outcome::Ok);
}

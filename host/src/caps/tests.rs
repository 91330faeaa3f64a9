//! Capability policy against an in-memory view, without wasm.

use std::sync::Arc;

use serde_json::{Value, json};

use super::channels::NewMessage;
use super::*;
use crate::model::{Agent, AgentId, AppId, ChannelName, ChannelRef, InstallId, OrgId, WriteMode};

const ORG: u64 = 1;
const OTHER_ORG: u64 = 2;
const HOME: u64 = 10;
const SIBLING: u64 = 11;
const FOREIGN: u64 = 20;

fn agent(id: u64, serial: &str) -> Agent {
    Agent {
        id: id.into(),
        name: format!("agent {id}"),
        serial_number: Some(serial.into()),
        group: None,
        metadata: json!({}),
    }
}

fn state() -> MemoryState {
    let mut s = MemoryState::default();
    s.add_agent(OrgId::from(ORG), agent(HOME, "HOME-1"));
    s.add_agent(OrgId::from(ORG), agent(SIBLING, "SIB-1"));
    s.add_agent(OrgId::from(OTHER_ORG), agent(FOREIGN, "FOREIGN-1"));
    s.set_tags(AgentId::from(HOME), "app", json!({"count": 1}));
    s
}

fn grant(reach: Reach) -> Grant {
    Grant {
        organisation_id: OrgId::from(ORG),
        agent_id: AgentId::from(HOME),
        app_id: AppId::from(3),
        install_id: InstallId::from(4),
        app_key: "app".into(),
        display_name: "App".into(),
        config: "{}".into(),
        reach,
        invoking_channel: Some(ChannelRef {
            agent_id: AgentId::from(HOME),
            name: ChannelName::new("sensor_data").unwrap(),
        }),
        allow_invoking_channel: false,
        oauth: None,
    }
}

fn session(reach: Reach) -> Session {
    Session::new(grant(reach), Arc::new(state()))
}

fn msg(channel: &str, agent: Option<u64>, data: &str) -> NewMessage {
    NewMessage { channel: channel.into(), agent_id: agent, data: data.into(), timestamp: None, message_id: None }
}

#[test]
fn invoking_channel_write_is_refused_unless_allowed() {
    let mut s = session(Reach::OwnAgent);
    let err = s.create_message(msg("sensor_data", None, "{}")).unwrap_err();
    assert!(matches!(err, CapError::Denied(ref m) if m.contains("invoking channel")), "{err}");
    let err = s.update_aggregate("sensor_data", None, "{}", WriteMode::Merge).unwrap_err();
    assert!(matches!(err, CapError::Denied(_)));
    assert!(s.effects().is_empty());

    let mut g = grant(Reach::OwnAgent);
    g.allow_invoking_channel = true;
    let mut s = Session::new(g, Arc::new(state()));
    assert!(s.create_message(msg("sensor_data", None, "{}")).is_ok());
}

#[test]
fn tag_writes_are_allowed_even_when_tag_values_invoked() {
    let mut g = grant(Reach::OwnAgent);
    g.invoking_channel =
        Some(ChannelRef { agent_id: AgentId::from(HOME), name: ChannelName::new("tag_values").unwrap() });
    let mut s = Session::new(g, Arc::new(state()));
    s.tag_set("count", "2", false).unwrap();
    assert_eq!(s.tag_get("count").unwrap(), Some(json!(2)));
}

#[test]
fn reach_is_checked_and_never_crosses_organisations() {
    let mut own = session(Reach::OwnAgent);
    assert!(matches!(own.create_message(msg("out", Some(SIBLING), "{}")), Err(CapError::Denied(_))));
    assert_eq!(own.agent_get(SIBLING).unwrap(), None);
    assert_eq!(own.agent_by_serial("SIB-1").unwrap(), None);

    let mut org = session(Reach::Organisation);
    assert!(org.create_message(msg("out", Some(SIBLING), "{}")).is_ok());
    assert_eq!(org.agent_by_serial("SIB-1").unwrap().map(|a| a.id.get()), Some(SIBLING));
    // Another tenant's agent is out of reach whatever the grant says.
    assert!(matches!(org.create_message(msg("out", Some(FOREIGN), "{}")), Err(CapError::Denied(_))));
    assert_eq!(org.agent_get(FOREIGN).unwrap(), None);
    assert_eq!(org.agent_by_serial("FOREIGN-1").unwrap(), None);
    let mut listed: Vec<u64> = org.agents_list().unwrap().iter().map(|a| a.id.get()).collect();
    listed.sort();
    assert_eq!(listed, vec![HOME, SIBLING]);

    let extended = session(Reach::Agents([AgentId::from(SIBLING), AgentId::from(FOREIGN)].into()));
    assert!(extended.agent_get(SIBLING).unwrap().is_some());
    assert_eq!(extended.agent_get(FOREIGN).unwrap(), None, "a grant naming a foreign agent still cannot reach it");
}

#[test]
fn payload_rules_are_enforced() {
    let mut s = session(Reach::OwnAgent);
    assert!(matches!(s.create_message(msg("out", None, "[1]")), Err(CapError::Invalid(_))));
    assert!(matches!(s.create_message(msg("out", None, r#"{"a.b":1}"#)), Err(CapError::Invalid(_))));
    assert!(matches!(s.create_message(msg("out", None, "{oops")), Err(CapError::Invalid(_))));
    assert!(matches!(s.create_message(msg("bad name", None, "{}")), Err(CapError::Invalid(_))));
    assert!(matches!(s.create_message(msg("tag_values", None, "{}")), Err(CapError::Denied(_))));
    assert!(matches!(s.create_message(msg("dv-proc-inv-4", None, "{}")), Err(CapError::Denied(_))));
    let bad_path = WriteMode::ReplacePaths(vec!["a..b c".into()]);
    assert!(matches!(s.update_aggregate("out", None, "{}", bad_path), Err(CapError::Invalid(_))));
    assert!(s.effects().is_empty());
}

#[test]
fn caps_on_count_and_size_are_enforced_and_leave_earlier_writes() {
    let mut s = session(Reach::OwnAgent);
    for i in 0..MAX_MESSAGES {
        s.create_message(msg("out", None, &format!(r#"{{"i":{i}}}"#))).unwrap();
    }
    assert!(matches!(s.create_message(msg("out", None, "{}")), Err(CapError::Limit(_))));
    assert_eq!(s.effects().messages.len(), MAX_MESSAGES);

    let mut s = session(Reach::OwnAgent);
    let big = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_PAYLOAD_BYTES));
    assert!(matches!(s.create_message(msg("out", None, &big)), Err(CapError::Limit(_))));
    let almost = format!(r#"{{"x":"{}"}}"#, "a".repeat(MAX_PAYLOAD_BYTES - 100));
    let mut written = 0;
    while s.update_aggregate("out", None, &almost, WriteMode::Merge).is_ok() {
        written += 1;
    }
    assert_eq!(written, MAX_EFFECT_BYTES / (MAX_PAYLOAD_BYTES - 92));
}

#[test]
fn reads_see_this_invocations_writes() {
    let mut s = session(Reach::OwnAgent);
    s.update_aggregate("out", None, r#"{"a":{"x":1}}"#, WriteMode::Merge).unwrap();
    s.update_aggregate("out", None, r#"{"a":{"y":2}}"#, WriteMode::Merge).unwrap();
    assert_eq!(s.fetch_aggregate("out", None).unwrap().unwrap().data, json!({"a": {"x": 1, "y": 2}}));
    let id = s.create_message(msg("out", None, r#"{"n":1}"#)).unwrap();
    let listed = s.list_messages("out", None, None, 10).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].id, id);
    assert_eq!(s.fetch_message("out", None, id.get()).unwrap().unwrap().data, json!({"n": 1}));
}

#[test]
fn client_chosen_message_ids_are_kept_and_not_duplicated() {
    let mut s = session(Reach::OwnAgent);
    let mut m = msg("out", None, "{}");
    m.message_id = Some(777);
    assert_eq!(s.create_message(m.clone()).unwrap().get(), 777);
    assert!(matches!(s.create_message(m), Err(CapError::Invalid(_))));
}

#[test]
fn tags_follow_doover_semantics() {
    let mut s = session(Reach::OwnAgent);
    assert_eq!(s.tag_get("count").unwrap(), Some(json!(1)));
    s.tag_set("count", "1", true).unwrap();
    assert!(s.effects().is_empty(), "setting the current value writes nothing");
    s.tag_set("count", "2", true).unwrap();
    assert_eq!(s.effects().messages.len(), 1, "log=true records a tag_values message");
    assert_eq!(s.effects().aggregates[0].data, json!({"app": {"count": 2}}));
    s.tag_delete("count").unwrap();
    assert_eq!(s.tag_get("count").unwrap(), None);
    assert_eq!(s.effects().aggregates.len(), 1, "an invocation's tag writes fold into one patch");
    assert_eq!(s.effects().aggregates[0].data, json!({"app": {"count": null}}));
    s.tag_delete("count").unwrap();
    assert_eq!(
        s.effects().aggregates[0].data,
        json!({"app": {"count": null}}),
        "deleting an absent tag writes nothing"
    );
    assert!(matches!(s.tag_set("bad key", "1", false), Err(CapError::Invalid(_))));
    assert!(matches!(s.tag_set("k", "not json", false), Err(CapError::Invalid(_))));
    assert_eq!(s.tag_get_from("other", "x").unwrap(), None);
}

#[test]
fn a_tag_value_with_a_bad_key_is_refused_before_anything_is_written() {
    let mut s = session(Reach::OwnAgent);
    for value in [r#"{"a.b":1}"#, r#"[{"ok":{"sp ace":1}}]"#] {
        let err = s.tag_set("k", value, true).unwrap_err();
        assert!(matches!(err, CapError::Invalid(ref m) if m.contains("invalid key")), "{err}");
    }
    assert!(s.effects().is_empty(), "neither the tag log message nor the aggregate write is buffered");
    s.tag_set("k", r#"[{"ok":{"fine":1}}]"#, true).unwrap();
    assert_eq!(s.effects().aggregates[0].data, json!({"app": {"k": [{"ok": {"fine": 1}}]}}));
}

#[test]
fn an_app_key_that_breaks_the_key_rule_writes_no_tag_or_ui_schema() {
    let mut g = grant(Reach::OwnAgent);
    g.app_key = "tank.level".into();
    let mut s = Session::new(g, Arc::new(state()));
    assert!(matches!(s.tag_set("k", "1", true), Err(CapError::Invalid(ref m)) if m.contains("app key")));
    assert!(matches!(s.ui_publish("{}"), Err(CapError::Invalid(ref m)) if m.contains("app key")));
    assert!(s.effects().is_empty());
}

#[test]
fn ui_publish_replaces_only_this_apps_schema() {
    let mut st = state();
    let ui = ChannelRef { agent_id: AgentId::from(HOME), name: ChannelName::new("ui_state").unwrap() };
    st.set_aggregate(ui, json!({"state": {"children": {"other": {"k": 1}, "app": {"old": true}}}}));
    let mut s = Session::new(grant(Reach::OwnAgent), Arc::new(st));
    s.ui_publish(r#"{"type":"uiContainer"}"#).unwrap();
    let agg = s.fetch_aggregate("ui_state", None).unwrap().unwrap();
    assert_eq!(agg.data, json!({"state": {"children": {"other": {"k": 1}, "app": {"type": "uiContainer"}}}}));
}

#[test]
fn ping_determines_online_and_offline() {
    let mut s = session(Reach::OwnAgent);
    let now = crate::model::now_ms();
    assert_eq!(s.connection_ping(None, ConnectionStatus::PeriodicUnknown, None).unwrap(), Determination::Online);
    let two_hours_ago = now - 2 * 3600 * 1000;
    assert_eq!(
        s.connection_ping(Some(two_hours_ago), ConnectionStatus::ContinuousOnline, None).unwrap(),
        Determination::Offline
    );
    let window = Some(two_hours_ago + 3 * 3600 * 1000);
    assert_eq!(
        s.connection_ping(Some(two_hours_ago), ConnectionStatus::ContinuousOnline, window).unwrap(),
        Determination::Online
    );
    let agg = s.fetch_aggregate("doover_connection", None).unwrap().unwrap();
    assert_eq!(agg.data["determination"], json!("online"));
    assert_eq!(agg.data["status"]["status"], json!("continuous_online"));
    assert!(matches!(
        s.connection_ping(Some(now), ConnectionStatus::PeriodicUnknown, Some(now - 1)),
        Err(CapError::Invalid(_))
    ));
}

#[test]
fn notifications_check_severity() {
    let mut s = session(Reach::OwnAgent);
    let n = |severity| Notification { message: "low".into(), title: None, severity, topic: Some("level".into()) };
    assert!(matches!(s.notify(n(2)), Err(CapError::Invalid(_))));
    assert!(matches!(s.notify(n(8)), Err(CapError::Invalid(_))));
    s.notify(n(6)).unwrap();
    let m = &s.effects().messages[0];
    assert_eq!(m.channel.name.as_str(), "notifications");
    assert_eq!(m.data["severity"], Value::from(6));
}

#[test]
fn each_aggregate_read_sees_its_own_channels_writes_in_order() {
    let mut s = session(Reach::OwnAgent);
    s.update_aggregate("a", None, r#"{"x":1,"y":{"z":1}}"#, WriteMode::Merge).unwrap();
    assert_eq!(s.fetch_aggregate("a", None).unwrap().unwrap().data, json!({"x": 1, "y": {"z": 1}}));
    s.update_aggregate("b", None, r#"{"k":1}"#, WriteMode::Merge).unwrap();
    s.update_aggregate("a", None, r#"{"x":null,"y":{"w":2}}"#, WriteMode::Merge).unwrap();
    s.update_aggregate("b", None, r#"{"only":true}"#, WriteMode::Replace).unwrap();
    s.update_aggregate("a", None, r#"{"v":3}"#, WriteMode::Merge).unwrap();
    assert_eq!(s.fetch_aggregate("a", None).unwrap().unwrap().data, json!({"y": {"z": 1, "w": 2}, "v": 3}));
    assert_eq!(s.fetch_aggregate("b", None).unwrap().unwrap().data, json!({"only": true}));
    assert_eq!(s.fetch_aggregate("a", None).unwrap().unwrap().data, json!({"y": {"z": 1, "w": 2}, "v": 3}));
}

#[test]
fn an_aggregate_write_reads_nothing_until_the_aggregate_is_read() {
    let view = Arc::new(view::Probed { state: state(), broken: true, ..Default::default() });
    let mut s = Session::new(grant(Reach::OwnAgent), Arc::clone(&view) as Arc<dyn StateView>);
    s.update_aggregate("out", None, r#"{"a":1}"#, WriteMode::Merge).unwrap();
    assert_eq!(s.effects().aggregates.len(), 1, "buffered without reading the stored aggregate");
    assert!(matches!(s.fetch_aggregate("out", None), Err(CapError::Unavailable(_))), "the read itself fails");
    assert_eq!(view.reads(), 3, "the reach checks of both calls, then the read");
}

/// An invocation's tag writes reach `tag_values` as one patch, as pydoover
/// publishes an invocation's tags once; a write on another channel in
/// between, or an object following a value already in the patch (it would
/// merge into that value), starts a new one.
#[test]
fn an_invocations_tag_writes_are_one_aggregate_write() {
    let mut s = session(Reach::OwnAgent);
    for (key, value) in [("last", "35.5"), ("min", "30"), ("max", "80"), ("count", "2")] {
        s.tag_set(key, value, false).unwrap();
    }
    let writes = &s.effects().aggregates;
    assert_eq!(writes.len(), 1);
    assert_eq!(writes[0].data, json!({"app": {"last": 35.5, "min": 30, "max": 80, "count": 2}}));
    let unfolded: usize = [("last", "35.5"), ("min", "30"), ("max", "80"), ("count", "2")]
        .iter()
        .map(|(k, v)| crate::model::serialized_len(&json!({"app": {*k: serde_json::from_str::<Value>(v).unwrap()}})))
        .sum();
    assert_eq!(s.effects().bytes, unfolded, "each tag write is charged as a write of its own");

    s.tag_set("obj", r#"{"a":1}"#, false).unwrap();
    s.tag_set("obj", r#"{"b":2}"#, false).unwrap();
    assert_eq!(s.effects().aggregates.len(), 2, "an object after a value of the same tag merges into it");
    assert_eq!(s.tag_get("obj").unwrap(), Some(json!({"a": 1, "b": 2})));

    s.update_aggregate("out", None, r#"{"n":1}"#, WriteMode::Merge).unwrap();
    s.tag_set("count", "3", false).unwrap();
    assert_eq!(s.effects().aggregates.len(), 4, "a write on another channel in between");
}

/// Folding is exact: random sets and deletes of scalars, lists, objects
/// and nulls; every read, the committed aggregate and the bytes charged
/// agree with the writes applied one by one.
#[test]
fn folded_tag_writes_end_where_the_writes_one_by_one_do() {
    let values = ["1", "2", r#""s""#, "[1]", r#"{"a":1}"#, r#"{"b":{"c":2}}"#, r#"{"a":null,"d":4}"#, "null"];
    for seed in 0..300 {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut s = session(Reach::OwnAgent);
        let mut reference = json!({"app": {"count": 1}});
        let mut bytes = 0;
        for _ in 0..rng.usize(1..10) {
            let key = ["count", "x", "y"][rng.usize(0..3)];
            let value: Value = if rng.u8(0..6) == 0 {
                s.tag_delete(key).unwrap();
                Value::Null
            } else {
                let text = values[rng.usize(0..values.len())];
                s.tag_set(key, text, false).unwrap();
                serde_json::from_str(text).unwrap()
            };
            let current = reference["app"].get(key).cloned();
            let changes = if value.is_null() { current.is_some() } else { current.as_ref() != Some(&value) };
            if changes {
                let patch = json!({"app": {key: value}});
                bytes += crate::model::serialized_len(&patch);
                crate::model::apply_diff_in_place(&mut reference, &patch);
            }
            assert_eq!(s.tag_get(key).unwrap(), reference["app"].get(key).cloned(), "seed {seed}");
        }
        let mut committed = json!({"app": {"count": 1}});
        for w in &s.effects().aggregates {
            crate::model::apply_write_in_place(&mut committed, &w.data, &w.mode);
        }
        assert_eq!(committed, reference, "seed {seed}");
        assert_eq!(s.effects().bytes, bytes, "seed {seed}");
    }
}

/// A folded patch stays within a payload's bound: tags that would grow it
/// past 256 KiB start a new patch, and the result is the same.
#[test]
fn a_folded_tag_patch_stays_within_a_payloads_bound() {
    let mut s = session(Reach::OwnAgent);
    let big = format!("\"{}\"", "a".repeat(100 * 1024));
    for key in ["t1", "t2", "t3", "t4", "t5"] {
        s.tag_set(key, &big, false).unwrap();
    }
    let writes = &s.effects().aggregates;
    assert_eq!(writes.len(), 3, "two 100 KiB tags per patch");
    for w in writes {
        assert!(crate::model::serialized_len(&w.data) <= MAX_PAYLOAD_BYTES);
    }
    for key in ["t1", "t2", "t3", "t4", "t5"] {
        assert_eq!(s.tag_get(key).unwrap().unwrap().as_str().map(str::len), Some(100 * 1024));
    }
}

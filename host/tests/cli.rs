//! `paddock invoke` and `paddock schema` through the real binary, on the
//! example apps (built by `make plugins`).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use std::path::PathBuf;
use std::process::{Command, Output};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn paddock(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_paddock")).args(args).current_dir(repo()).output();
    out.unwrap_or_else(|e| panic!("running paddock: {e}"))
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn invoke_prints_the_effects_of_the_tank_example() {
    let out = paddock(&[
        "invoke",
        "plugins/tank-level",
        "--event",
        "plugins/tank-level/events/reading.json",
        "--state",
        "plugins/tank-level/events/state.json",
        "--config",
        "plugins/tank-level/events/config.json",
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", text(&out.stderr));
    assert!(stdout.contains("outcome   success"), "{stdout}");
    assert!(stdout.contains("tank_level.last_level = 16.7"), "{stdout}");
    assert!(stdout.contains("tank_level.readings = 13"), "state seeded 12 readings: {stdout}");
    assert!(stdout.contains("notification  severity 6"), "{stdout}");
}

#[test]
fn invoke_accepts_the_legacy_message_shape_and_emits_json() {
    let out = paddock(&[
        "invoke",
        "plugins/tank-level",
        "--event",
        "plugins/tank-level/events/reading-legacy.json",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(report["report"]["outcome"]["status"], "ok");
    assert!(report["report"]["fuel_consumed"].as_u64().unwrap_or(0) > 0);
    let aggs = report["report"]["effects"]["aggregates"].as_array().cloned().unwrap_or_default();
    assert!(aggs.iter().any(|w| w["data"]["tank_level"]["last_level"] == 77.8), "raw_mm 600 -> 77.8%: {aggs:?}");
}

#[test]
fn an_error_outcome_exits_1_and_bad_input_exits_2_naming_the_problem() {
    let out = paddock(&["invoke", "plugins/hostile", "--event", "plugins/hostile/events/panic.json"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("trap unreachable_code_reached: hostile panic: boom"));

    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"op":"on_message_create","d":{"organisation_id":1}}"#).unwrap_or_else(|e| panic!("{e}"));
    let out = paddock(&["invoke", "plugins/tank-level", "--event", bad.to_str().unwrap_or("")]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("bad.json") && err.contains("missing field `message`"), "{err}");

    std::fs::write(&bad, r#"{"low_level_percent": 500}"#).unwrap_or_else(|e| panic!("{e}"));
    let out = paddock(&[
        "invoke",
        "plugins/tank-level",
        "--event",
        "plugins/tank-level/events/reading.json",
        "--config",
        bad.to_str().unwrap_or(""),
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("/low_level_percent"), "{}", text(&out.stderr));

    let out = paddock(&["invoke", "plugins/nope", "--event", "plugins/tank-level/events/reading.json"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("plugins/nope"));
}

#[test]
fn schema_prints_the_exported_config_schema() {
    let out = paddock(&["schema", "plugins/webhook"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let schema: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(schema["properties"]["target_channel"]["default"], "sensor_data");
}

#[test]
fn invoke_into_a_closed_pipe_exits_quietly() {
    let mut child = Command::new(env!("CARGO_BIN_EXE_paddock"))
        .args(["invoke", "plugins/tank-level", "--json", "--event", "plugins/tank-level/events/reading.json"])
        .args(["--state", "plugins/tank-level/events/state.json", "--config", "plugins/tank-level/events/config.json"])
        .current_dir(repo())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Like `| head -0`: the reader is gone before anything is written.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = text(&out.stderr);
    assert!(!stderr.contains("panicked") && !stderr.contains("Broken pipe"), "{stderr}");
    assert_eq!(out.status.code(), Some(0), "the invocation succeeded; the closed pipe is no error: {stderr}");
}

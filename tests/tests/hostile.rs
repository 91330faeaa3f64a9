//! Every sandbox limit, obeyed and violated, through the real `hostile`
//! component; the runtime keeps working after each violation.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use paddock::runtime::{Outcome, RuntimeConfig};
use paddock_tests::*;
use serde_json::{Value, json};

async fn hostile(rt: &paddock::runtime::Runtime, payload: Value) -> paddock::runtime::Report {
    let app = load(rt, "hostile").await;
    run(rt, &app, grant(&app, json!({})), manual(payload), &state()).await
}

/// A well-behaved event still succeeds: the process carries on.
async fn still_healthy(rt: &paddock::runtime::Runtime) {
    let r = hostile(rt, json!({"mode": "alloc", "mb": 1})).await;
    assert_eq!(r.outcome, Outcome::Ok, "the runtime must keep serving after a violation");
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel_within_its_budget() {
    let rt = runtime();
    let r = hostile(&rt, json!({"mode": "loop"})).await;
    assert!(matches!(r.outcome, Outcome::FuelExhausted { .. } | Outcome::Timeout { .. }), "{:?}", r.outcome);
    // The budget is 200 ms (+250 ms grace for the tokio timeout); the bound
    // is loose so that a loaded machine cannot flake it, yet proves it ends.
    assert!(r.duration.as_millis() < 2_000, "ended after {:?}", r.duration);
    assert!(r.effects.is_empty());
    still_healthy(&rt).await;
}

#[tokio::test]
async fn infinite_loop_without_fuel_is_stopped_by_the_epoch_deadline() {
    let rt = runtime_with(RuntimeConfig { fuel: false, ..RuntimeConfig::default() });
    let r = hostile(&rt, json!({"mode": "loop"})).await;
    assert!(matches!(r.outcome, Outcome::Timeout { .. }), "{:?}", r.outcome);
    assert!(r.duration.as_millis() >= 200, "stopped early: {:?}", r.duration);
    still_healthy(&rt).await;
}

#[tokio::test]
async fn a_loop_stopped_by_the_epoch_deadline_is_still_metered() {
    // 100x the calibrated fuel, so that the 200 ms epoch deadline always
    // wins; the fuel burned until then must still be reported (wasmtime does
    // not save the fuel counter on an epoch trap; the runtime's periodic
    // fuel yields do).
    let per_ms = paddock::runtime::FUEL_PER_MS * 100;
    let rt = runtime_with(RuntimeConfig { fuel_per_ms: per_ms, ..RuntimeConfig::default() });
    let r = hostile(&rt, json!({"mode": "loop"})).await;
    assert!(matches!(r.outcome, Outcome::Timeout { .. }), "{:?}", r.outcome);
    // Even a heavily loaded machine spins far more than this in 200 ms;
    // without the fix the report said ~4k.
    assert!(r.fuel_consumed > 5_000_000, "only {} fuel reported for a 200 ms spin", r.fuel_consumed);
    still_healthy(&rt).await;
}

#[tokio::test]
async fn busy_work_inside_the_time_budget_succeeds() {
    let rt = runtime();
    let r = hostile(&rt, json!({"mode": "busy", "ms": 20})).await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert!(r.fuel_consumed > 0, "fuel is metered per invocation");
}

#[tokio::test]
async fn memory_under_the_budget_succeeds_and_over_it_is_a_memory_limit() {
    let rt = runtime();
    let ok = hostile(&rt, json!({"mode": "alloc", "mb": 4})).await;
    assert_eq!(ok.outcome, Outcome::Ok);
    assert!(ok.memory_peak >= 4 << 20);
    let bomb = hostile(&rt, json!({"mode": "memory"})).await;
    match bomb.outcome {
        Outcome::MemoryLimit { requested, limit } => {
            assert_eq!(limit, 16 << 20, "the manifest's memory_mb");
            assert!(requested > limit);
        }
        other => panic!("expected a memory limit, got {other:?}"),
    }
    still_healthy(&rt).await;
}

#[tokio::test]
async fn bounded_recursion_succeeds_and_unbounded_overflows_the_stack() {
    let rt = runtime();
    assert_eq!(hostile(&rt, json!({"mode": "stack", "depth": 1000})).await.outcome, Outcome::Ok);
    match hostile(&rt, json!({"mode": "stack"})).await.outcome {
        Outcome::Trap { code, backtrace, .. } => {
            assert_eq!(code, "stack_overflow");
            assert!(backtrace.iter().any(|f| f.contains("hostile::recurse")), "{backtrace:?}");
        }
        other => panic!("expected a stack overflow, got {other:?}"),
    }
    match hostile(&rt, json!({"mode": "shadow-stack"})).await.outcome {
        Outcome::Trap { code, .. } => assert_eq!(code, "memory_out_of_bounds"),
        other => panic!("expected an out-of-bounds trap, got {other:?}"),
    }
    still_healthy(&rt).await;
}

#[tokio::test]
async fn a_panic_is_a_trap_carrying_its_message() {
    let rt = runtime();
    let r = hostile(&rt, json!({"mode": "panic", "message": "sensor on fire"})).await;
    match &r.outcome {
        Outcome::Trap { code, message, backtrace } => {
            assert_eq!(code, "unreachable_code_reached");
            assert_eq!(message.as_deref(), Some("hostile panic: sensor on fire"));
            assert!(!backtrace.is_empty());
        }
        other => panic!("expected a trap, got {other:?}"),
    }
    assert!(r.logs.lines.iter().any(|l| l.source == "stderr" && l.message.contains("sensor on fire")));
    still_healthy(&rt).await;
}

#[tokio::test]
async fn an_effect_flood_is_capped_per_invocation() {
    let rt = runtime();
    let r = hostile(&rt, json!({"mode": "flood"})).await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert_eq!(r.effects.messages.len(), paddock::caps::MAX_MESSAGES);
    let refused = 1_000 - paddock::caps::MAX_MESSAGES;
    assert!(r.logs.lines.iter().any(|l| l.message == format!("{refused} publishes refused")), "{:?}", r.logs.lines);
}

#[tokio::test]
async fn huge_log_output_is_truncated_not_fatal() {
    let rt = runtime();
    let r = hostile(&rt, json!({"mode": "logs"})).await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert!(r.logs.truncated);
    let bytes: usize = r.logs.lines.iter().map(|l| l.message.len()).sum();
    assert!(bytes <= paddock::caps::MAX_LOG_BYTES * 2, "log call bytes plus stdout bytes, each capped: {bytes}");
    let small = hostile(&rt, json!({"mode": "alloc", "mb": 1})).await;
    assert!(!small.logs.truncated);
}

#[tokio::test]
async fn a_write_to_the_invoking_channel_is_refused_with_a_clear_error() {
    let rt = runtime();
    let app = load(&rt, "hostile").await;
    let event = message_event(TANK, "commands", json!({"mode": "invoking"}));
    let r = run(&rt, &app, grant(&app, json!({})), event, &state()).await;
    match r.outcome {
        Outcome::Fail { reason } => {
            assert!(reason.contains("denied") && reason.contains("invoking channel \"commands\""), "{reason}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(r.effects.is_empty());
}

#[tokio::test]
async fn host_call_copies_are_capped() {
    let rt = runtime();
    let over_payload = hostile(&rt, json!({"mode": "bigcall", "kib": 512})).await;
    assert!(
        matches!(&over_payload.outcome, Outcome::Fail { reason } if reason.starts_with("limit:")),
        "{:?}",
        over_payload.outcome
    );
    let over_copy = hostile(&rt, json!({"mode": "bigcall", "kib": 2048})).await;
    assert!(
        matches!(&over_copy.outcome, Outcome::InvalidOutput { reason } if reason.contains("hostcall")),
        "{:?}",
        over_copy.outcome
    );
    let fine = hostile(&rt, json!({"mode": "bigcall", "kib": 100})).await;
    assert_eq!(fine.outcome, Outcome::Ok);
}

#[tokio::test]
async fn the_sandbox_denies_files_environment_and_arguments() {
    let rt = runtime();
    let r = hostile(&rt, json!({"mode": "sandbox"})).await;
    assert_eq!(r.outcome, Outcome::Ok);
    assert!(r.logs.lines.iter().any(|l| l.message == "file=false dir=false env=0 args=0"), "{:?}", r.logs.lines);
}

#[tokio::test]
async fn retry_and_fail_commit_nothing() {
    let rt = runtime();
    let retry = hostile(&rt, json!({"mode": "retry"})).await;
    assert_eq!(retry.outcome, Outcome::Retry { reason: "upstream unavailable".into() });
    assert!(retry.effects.is_empty(), "a retry must leave no partial state");
    let fail = hostile(&rt, json!({"mode": "fail"})).await;
    assert_eq!(fail.outcome, Outcome::Fail { reason: "bad input".into() });
    assert!(fail.effects.is_empty());
}

#[tokio::test]
async fn events_without_a_handler_are_skipped_without_instantiating() {
    let rt = runtime();
    let app = load(&rt, "hostile").await;
    let event = paddock::model::Event::Schedule { schedule_id: 1.into(), organisation_id: ORG.into() };
    let r = run(&rt, &app, grant(&app, json!({})), event, &state()).await;
    assert_eq!(r.outcome, Outcome::Skipped { hook: paddock::model::Hook::Schedule });
    assert_eq!(r.fuel_consumed, 0, "nothing ran");
    assert_eq!(r.memory_peak, 0, "nothing was instantiated");
}

//! Golden tests for schedule expressions: `tests/fixtures/schedules/cases.txt`
//! lists `expression | time zone | start`; `expected.txt` holds, per case,
//! the next three fire times (UTC) or the exact error. Regenerate with
//! `PADDOCK_UPDATE_GOLDEN=1 cargo test --test schedules` and check by hand.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, reason = "test code: failures should stop loudly")]

use chrono::{DateTime, SecondsFormat, Utc};
use paddock::model::ScheduleExpr;

fn render(expression: &str, tz: Option<&str>, start: &str) -> String {
    let start: DateTime<Utc> = start.parse().unwrap();
    let mut at = u64::try_from(start.timestamp_millis()).unwrap();
    let schedule = match ScheduleExpr::parse(expression, tz) {
        Ok(s) => s,
        Err(e) => return format!("error: {e}"),
    };
    let mut fires = Vec::new();
    for _ in 0..3 {
        match schedule.next_after(at) {
            Some(next) => {
                let t = DateTime::<Utc>::from_timestamp_millis(i64::try_from(next).unwrap()).unwrap();
                fires.push(t.to_rfc3339_opts(SecondsFormat::Secs, true));
                at = next;
            }
            None => {
                fires.push("never".into());
                break;
            }
        }
    }
    fires.join(", ")
}

#[test]
fn schedule_expressions_match_the_golden_file() {
    let dir = paddock_tests::repo().join("tests/fixtures/schedules");
    let cases = std::fs::read_to_string(dir.join("cases.txt")).unwrap();
    let mut out = String::new();
    for line in cases.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
        let parts: Vec<&str> = line.split('|').map(str::trim).collect();
        let tz = Some(parts[1]).filter(|t| !t.is_empty());
        out.push_str(&format!("{line}\n  => {}\n", render(parts[0], tz, parts[2])));
    }
    let expected = dir.join("expected.txt");
    if std::env::var_os("PADDOCK_UPDATE_GOLDEN").is_some() {
        std::fs::write(&expected, &out).unwrap();
    }
    assert_eq!(out, std::fs::read_to_string(&expected).unwrap_or_default(), "schedule goldens differ");
}

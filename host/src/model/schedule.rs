//! Schedule expressions, EventBridge style.
//!
//! - `rate(N unit)`: N ≥ 1; unit `minute`/`hour`/`day` when N = 1, else
//!   `minutes`/`hours`/`days` (EventBridge rejects `rate(1 minutes)` and
//!   `rate(5 minute)`, and so do we).
//! - `cron(min hour day-of-month month day-of-week year)`: six fields;
//!   exactly one of day-of-month and day-of-week is `?`; `L`, `W` and `#`
//!   as in EventBridge; weekdays 1–7 are SUN–SAT (or names).
//! - a plain 5-field Unix cron (`min hour dom month dow`, weekdays 0–6 =
//!   SUN–SAT) is normalised to the EventBridge form.
//!
//! Evaluation is croner's (L, W, #, ranges, steps, year field), in the
//! schedule's IANA time zone (UTC by default).

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed, evaluable schedule expression.
#[derive(Debug, Clone)]
pub enum ScheduleExpr {
    /// Every `every`, from an anchor.
    Rate {
        /// The period.
        every: Duration,
    },
    /// Calendar times in a time zone.
    Cron {
        /// The EventBridge form of the expression (what was evaluated).
        normalized: String,
        /// The compiled pattern.
        cron: Box<Cron>,
        /// The time zone it is evaluated in.
        tz: Tz,
    },
}

/// Why an expression was refused. The message is meant for the app author.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid schedule {expression:?}: {reason}")]
pub struct ScheduleError {
    /// The expression as given.
    pub expression: String,
    /// What is wrong.
    pub reason: String,
}

impl ScheduleExpr {
    /// Parse `expression`, evaluated in `timezone` (IANA name; UTC if none).
    pub fn parse(expression: &str, timezone: Option<&str>) -> Result<ScheduleExpr, ScheduleError> {
        let err = |reason: String| ScheduleError { expression: expression.to_owned(), reason };
        let text = expression.trim();
        if let Some(inner) = text.strip_prefix("rate(").and_then(|r| r.strip_suffix(')')) {
            return parse_rate(inner).map(|every| ScheduleExpr::Rate { every }).map_err(err);
        }
        let tz = match timezone {
            None => Tz::UTC,
            Some(name) => name.parse::<Tz>().map_err(|_| err(format!("unknown time zone {name:?}")))?,
        };
        let normalized = match text.strip_prefix("cron(").and_then(|r| r.strip_suffix(')')) {
            Some(inner) => check_eventbridge(inner).map_err(err)?,
            None if text.split_whitespace().count() == 5 => from_unix(text).map_err(err)?,
            None => return Err(err("expected rate(...), cron(...) or a 5-field cron expression".into())),
        };
        // croner's full form is `sec min hour dom month dow year`: EventBridge
        // fires on the minute, so seconds are 0. Quartz weekdays: 1 = SUN.
        let parser = CronParser::builder()
            .seconds(Seconds::Required)
            .year(Year::Required)
            .alternative_weekdays(true)
            // EventBridge's own examples write `0/15` for "every 15 from 0".
            .sloppy_ranges(true)
            .build();
        let cron = parser.parse(&format!("0 {normalized}")).map_err(|e| err(format!("{e}")))?;
        Ok(ScheduleExpr::Cron { normalized, cron: Box::new(cron), tz })
    }

    /// The first fire time strictly after `after_ms` (Unix ms), if any: a
    /// rate fires `every` after its anchor; a cron at its next match (none
    /// when its year field has passed).
    pub fn next_after(&self, after_ms: u64) -> Option<u64> {
        match self {
            ScheduleExpr::Rate { every } => after_ms.checked_add(u64::try_from(every.as_millis()).ok()?),
            ScheduleExpr::Cron { cron, tz, .. } => {
                let after = Utc.timestamp_millis_opt(i64::try_from(after_ms).ok()?).single()?.with_timezone(tz);
                let next: DateTime<Tz> = cron.find_next_occurrence(&after, false).ok()?;
                u64::try_from(next.timestamp_millis()).ok()
            }
        }
    }
}

fn parse_rate(inner: &str) -> Result<Duration, String> {
    let mut parts = inner.split_whitespace();
    let (Some(n), Some(unit), None) = (parts.next(), parts.next(), parts.next()) else {
        return Err("rate takes a value and a unit, e.g. rate(5 minutes)".into());
    };
    let n: u64 = n.parse().map_err(|_| format!("{n:?} is not a whole number"))?;
    if n == 0 {
        return Err("the rate must be at least 1".into());
    }
    let (secs, singular) = match unit {
        "minute" | "minutes" => (60, unit == "minute"),
        "hour" | "hours" => (3600, unit == "hour"),
        "day" | "days" => (86_400, unit == "day"),
        other => return Err(format!("unknown unit {other:?}: use minute(s), hour(s) or day(s)")),
    };
    if singular != (n == 1) {
        let want =
            if n == 1 { unit.trim_end_matches('s').to_owned() } else { format!("{}s", unit.trim_end_matches('s')) };
        return Err(format!("write rate({n} {want}): the unit is singular exactly when the value is 1"));
    }
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

/// Check the EventBridge-specific rules croner does not enforce.
fn check_eventbridge(inner: &str) -> Result<String, String> {
    let fields: Vec<&str> = inner.split_whitespace().collect();
    if fields.len() != 6 {
        return Err(format!(
            "cron takes 6 fields (minute hour day-of-month month day-of-week year), got {}",
            fields.len()
        ));
    }
    let (dom, dow) = (fields[2], fields[4]);
    match (dom == "?", dow == "?") {
        (true, true) => Err("only one of day-of-month and day-of-week may be '?'".into()),
        (false, false) => {
            Err("one of day-of-month and day-of-week must be '?' (EventBridge cannot combine them)".into())
        }
        _ => Ok(fields.join(" ")),
    }
}

/// Normalise a 5-field Unix cron to the EventBridge form: weekday numbers
/// shift from 0–6 to 1–7, the unrestricted day field becomes `?`, the year
/// is `*`.
fn from_unix(text: &str) -> Result<String, String> {
    let f: Vec<&str> = text.split_whitespace().collect();
    let dow = shift_weekdays(f[4])?;
    let (dom, dow) = match (f[2], dow.as_str()) {
        (dom, "*") => (dom.to_owned(), "?".to_owned()),
        ("*", dow) => ("?".to_owned(), dow.to_owned()),
        _ => {
            return Err(
                "a Unix cron restricting both day-of-month and day-of-week has no EventBridge equivalent".into()
            );
        }
    };
    Ok(format!("{} {} {dom} {} {dow} *", f[0], f[1], f[3]))
}

/// Unix weekday numbers (0–7, 0 and 7 = SUN) to EventBridge's (1–7 = SUN–SAT);
/// names, `*`, `L`, `#` suffixes and steps pass through.
fn shift_weekdays(field: &str) -> Result<String, String> {
    let mut out = String::with_capacity(field.len());
    let mut digits = String::new();
    let flush = |digits: &mut String, out: &mut String, after_hash: bool| -> Result<(), String> {
        if digits.is_empty() {
            return Ok(());
        }
        let n: u32 = digits.parse().map_err(|_| format!("bad weekday {digits:?}"))?;
        if after_hash {
            out.push_str(digits);
        } else {
            match n {
                0..=6 => out.push_str(&(n + 1).to_string()),
                7 => out.push('1'),
                _ => return Err(format!("weekday {n} is outside 0-7")),
            }
        }
        digits.clear();
        Ok(())
    };
    let mut after_special = false;
    for c in field.chars() {
        if c.is_ascii_digit() {
            digits.push(c);
        } else {
            flush(&mut digits, &mut out, after_special)?;
            // The number after `#` (nth) or `/` (step) is not a weekday.
            after_special = c == '#' || c == '/';
            out.push(c);
        }
    }
    flush(&mut digits, &mut out, after_special)?;
    Ok(out)
}

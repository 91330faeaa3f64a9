//! Human-readable rendering of a report.

use std::fmt::Write as _;

use serde_json::Value;

use crate::caps::{AggregateWrite, LogLevel};
use crate::model::{Message, WriteMode, well_known};
use crate::runtime::{Outcome, Report};

/// The report as text for a terminal.
pub fn report(app: &str, digest: &str, r: &Report) -> String {
    let mut out = String::new();
    let short = &digest[..digest.len().min(12)];
    let _ = writeln!(out, "app       {app} (sha256 {short})");
    let _ = writeln!(out, "outcome   {}", outcome(&r.outcome));
    let _ = writeln!(
        out,
        "cost      {:.3} ms, {} fuel, {:.1} KiB peak memory",
        r.duration.as_secs_f64() * 1000.0,
        r.fuel_consumed,
        r.memory_peak as f64 / 1024.0
    );
    if !r.effects.is_empty() {
        let _ = writeln!(out, "effects");
        for w in &r.effects.aggregates {
            let _ = writeln!(out, "  {}", aggregate(w));
        }
        for m in &r.effects.messages {
            let _ = writeln!(out, "  {}", message(m));
        }
    }
    if !r.logs.lines.is_empty() {
        let _ = writeln!(out, "logs{}", if r.logs.truncated { " (truncated)" } else { "" });
        for l in &r.logs.lines {
            let _ = writeln!(out, "  {:<5} {:<6} {}", level(l.level), l.source, l.message);
        }
    }
    out
}

fn outcome(o: &Outcome) -> String {
    match o {
        Outcome::Ok => "success".into(),
        Outcome::Skipped { hook } => format!("skipped (the app has no {} handler)", hook.op()),
        Outcome::Retry { reason } => format!("error: the app asked for a retry: {reason}"),
        Outcome::Fail { reason } => format!("error: the app failed: {reason}"),
        Outcome::Timeout { limit } => format!("error: timed out after {limit:?}"),
        Outcome::FuelExhausted { fuel } => format!("error: fuel exhausted ({fuel} units)"),
        Outcome::MemoryLimit { requested, limit } => {
            format!("error: memory limit: tried to reach {requested} bytes, limit {limit}")
        }
        Outcome::Trap { code, message, backtrace } => {
            let mut s = format!("error: trap {code}");
            if let Some(m) = message {
                let _ = write!(s, ": {m}");
            }
            for f in backtrace.iter().take(8) {
                let _ = write!(s, "\n            at {f}");
            }
            s
        }
        Outcome::InvalidOutput { reason } => format!("error: invalid output: {reason}"),
        Outcome::HostError { reason } => format!("error: host could not run the app: {reason}"),
    }
}

fn aggregate(w: &AggregateWrite) -> String {
    let ch = &w.channel;
    match ch.name.as_str() {
        well_known::TAG_VALUES => tags(&w.data),
        well_known::UI_STATE => "ui            schema published".into(),
        well_known::CONNECTION => format!("connection    {}", w.data.get("determination").unwrap_or(&Value::Null)),
        _ => {
            let mode = match &w.mode {
                WriteMode::Merge => "merge".to_string(),
                WriteMode::Replace => "replace".to_string(),
                WriteMode::ReplacePaths(p) => format!("replace {}", p.join(",")),
            };
            format!("aggregate     {}@{} {mode} {}", ch.name, ch.agent_id, w.data)
        }
    }
}

fn tags(patch: &Value) -> String {
    let mut parts = Vec::new();
    if let Value::Object(apps) = patch {
        for (app, tags) in apps {
            if let Value::Object(tags) = tags {
                for (k, v) in tags {
                    parts.push(if v.is_null() { format!("{app}.{k} deleted") } else { format!("{app}.{k} = {v}") });
                }
            }
        }
    }
    format!("tag           {}", parts.join(", "))
}

fn message(m: &Message) -> String {
    match m.channel.name.as_str() {
        well_known::NOTIFICATIONS => format!(
            "notification  severity {} {}",
            m.data.get("severity").unwrap_or(&Value::Null),
            m.data.get("message").unwrap_or(&Value::Null)
        ),
        well_known::CONNECTION => "message       doover_connection ping".into(),
        well_known::TAG_VALUES => format!("message       tag_values (tag log) {}", m.data),
        _ => format!("message       {}@{} {}", m.channel.name, m.channel.agent_id, m.data),
    }
}

fn level(l: LogLevel) -> &'static str {
    match l {
        LogLevel::Trace => "trace",
        LogLevel::Debug => "debug",
        LogLevel::Info => "info",
        LogLevel::Warn => "warn",
        LogLevel::Error => "error",
    }
}

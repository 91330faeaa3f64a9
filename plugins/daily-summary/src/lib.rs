//! Daily summary.
//!
//! On each schedule fire (or a manual invoke) the app pages back through
//! the configured channel's messages within the window, computes count,
//! min, max and mean of one numeric field, and replaces the summary
//! channel's aggregate with the result.

use std::time::{SystemTime, UNIX_EPOCH};

use paddock_sdk::prelude::*;

/// Installation settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The channel to summarise.
    #[serde(default = "defaults::channel")]
    pub source_channel: String,
    /// The numeric field of each message to summarise.
    #[serde(default = "defaults::field")]
    pub field: String,
    /// How far back to look, hours.
    #[serde(default = "defaults::window")]
    #[schemars(range(min = 1, max = 744))]
    pub window_hours: u64,
    /// The channel whose aggregate receives the summary.
    #[serde(default = "defaults::summary")]
    pub summary_channel: String,
}

mod defaults {
    pub fn channel() -> String {
        "tank_level".into()
    }
    pub fn field() -> String {
        "level_percent".into()
    }
    pub fn window() -> u64 {
        24
    }
    pub fn summary() -> String {
        "daily_summary".into()
    }
}

/// Pages of 100 messages read at most: bounds the work per run.
const MAX_PAGES: usize = 50;

#[derive(Default)]
struct DailySummary;

impl App for DailySummary {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::Schedule, Hook::ManualInvoke];

    fn on_schedule(&mut self, ctx: &Context<Config>, _event: &Schedule) -> Result<(), AppError> {
        summarise(ctx)
    }

    fn on_manual_invoke(&mut self, ctx: &Context<Config>, _event: &ManualInvoke) -> Result<(), AppError> {
        summarise(ctx)
    }
}

fn summarise(ctx: &Context<Config>) -> Result<(), AppError> {
    let cfg = &ctx.config;
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0);
    let since = now.saturating_sub(cfg.window_hours * 3_600_000);
    let mut values = Vec::new();
    let mut before = None;
    'pages: for _ in 0..MAX_PAGES {
        let page = channels::list_messages_of(None, &cfg.source_channel, before, 100)?;
        let Some(last) = page.last() else { break };
        before = Some(last.id);
        for m in &page {
            if m.timestamp < since {
                break 'pages;
            }
            if let Some(v) = m.data.get(&cfg.field).and_then(Value::as_f64) {
                values.push(v);
            }
        }
    }
    let summary = stats(&values);
    paddock_sdk::info!(
        "{} value(s) of {} on {} in the last {} h",
        values.len(),
        cfg.field,
        cfg.source_channel,
        cfg.window_hours
    );
    channels::put_aggregate(
        &cfg.summary_channel,
        &json!({
            "source_channel": cfg.source_channel,
            "field": cfg.field,
            "window_hours": cfg.window_hours,
            "from": since,
            "to": now,
            "stats": summary,
        }),
    )?;
    Ok(())
}

fn stats(values: &[f64]) -> Value {
    if values.is_empty() {
        return json!({"count": 0});
    }
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mean = values.iter().sum::<f64>() / values.len() as f64;
    json!({"count": values.len(), "min": min, "max": max, "mean": (mean * 100.0).round() / 100.0})
}

paddock_sdk::export_app!(DailySummary);

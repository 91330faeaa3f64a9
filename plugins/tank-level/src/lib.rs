//! Tank level processor.
//!
//! A device publishes raw ultrasonic readings on `sensor_data`
//! (`{"distance_mm": 812}`). For each reading this app:
//! - converts the distance to a level % using the tank's configured geometry;
//! - keeps `last_level`, `min_level`, `max_level` and `readings` in tags;
//! - publishes `{"level_percent": ...}` on `tank_level`;
//! - pings the device's connection;
//! - sends a severity-6 notification when the level falls below the
//!   threshold, once per crossing: the alarm re-arms only after the level
//!   rises above threshold + margin.
//!
//! On deployment it publishes its UI schema, with a "Reset min/max"
//! button: a person's click arrives as a message on `ui_cmds` (from the
//! console, as from Doover's site), and the range restarts at the last
//! level.

use paddock_sdk::notifications::Severity;
use paddock_sdk::prelude::*;

/// Installation settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Sensor-to-bottom distance (the reading of an empty tank), mm.
    #[serde(default = "defaults::empty")]
    #[schemars(range(min = 1.0))]
    pub empty_distance_mm: f64,
    /// Sensor-to-surface distance of a full tank, mm.
    #[serde(default = "defaults::full")]
    #[schemars(range(min = 0.0))]
    pub full_distance_mm: f64,
    /// Alarm when the level falls below this percentage.
    #[serde(default = "defaults::low")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub low_level_percent: f64,
    /// The alarm re-arms once the level is this far above the threshold.
    #[serde(default = "defaults::margin")]
    #[schemars(range(min = 0.0, max = 50.0))]
    pub rearm_margin_percent: f64,
}

mod defaults {
    pub fn empty() -> f64 {
        2000.0
    }
    pub fn full() -> f64 {
        200.0
    }
    pub fn low() -> f64 {
        20.0
    }
    pub fn margin() -> f64 {
        5.0
    }
}

#[derive(Default)]
struct TankLevel;

const SENSOR_CHANNEL: &str = "sensor_data";
const COMMANDS_CHANNEL: &str = "ui_cmds";
/// The UI button that restarts the min/max range.
const RESET: &str = "reset_range";

impl App for TankLevel {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::MessageCreate, Hook::Deployment];

    fn pre_hook_filter(&self, event: &Event) -> bool {
        match event {
            Event::MessageCreate(m) => [SENSOR_CHANNEL, COMMANDS_CHANNEL].contains(&m.message.channel.name.as_str()),
            _ => true,
        }
    }

    fn on_deployment(&mut self, ctx: &Context<Config>, _event: &Deployment) -> Result<(), AppError> {
        ui::publish_schema(&ui_schema(ctx))?;
        Ok(())
    }

    fn on_message_create(&mut self, ctx: &Context<Config>, event: &MessageCreate) -> Result<(), AppError> {
        if event.message.channel.name == COMMANDS_CHANNEL {
            return command(ctx, &event.message.data);
        }
        let cfg = &ctx.config;
        let distance = reading(&event.message.data)
            .ok_or_else(|| AppError::fail("reading has no numeric distance_mm (or raw_mm)"))?;
        let level = level_percent(cfg, distance);

        // Reads come from the start-of-invocation snapshot (no host call);
        // nothing below writes a tag before reading it.
        let readings: u64 = ctx.tag("readings").unwrap_or(0);
        let min = ctx.tag::<f64>("min_level").map_or(level, |m| m.min(level));
        let max = ctx.tag::<f64>("max_level").map_or(level, |m| m.max(level));
        tags::set("last_level", &level)?;
        tags::set("min_level", &min)?;
        tags::set("max_level", &max)?;
        tags::set("readings", &(readings + 1))?;
        channels::publish("tank_level", &json!({ "level_percent": level, "distance_mm": distance }))?;
        connection::ping(connection::Status::PeriodicUnknown)?;

        let armed = !ctx.tag::<bool>("low_alarm").unwrap_or(false);
        if armed && level < cfg.low_level_percent {
            let text = format!("{} is at {:.1}%, below {:.0}%", ctx.app_display_name, level, cfg.low_level_percent);
            notifications::send_full(&text, Some("Low tank level"), Severity::Info, Some("low_level"))?;
            tags::set_logged("low_alarm", &true)?;
        } else if !armed && level > cfg.low_level_percent + cfg.rearm_margin_percent {
            tags::set_logged("low_alarm", &false)?;
        }
        paddock_sdk::info!("distance {distance} mm -> level {level:.1}% (min {min:.1}, max {max:.1})");
        Ok(())
    }
}

/// A UI command for this app: "Reset min/max" restarts the range at the
/// last level. Other apps' commands and other keys are ignored.
fn command(ctx: &Context<Config>, data: &Value) -> Result<(), AppError> {
    let mine = data.get("app_key").and_then(Value::as_str) == Some(ctx.app_key.as_str());
    if !mine || data.get("key").and_then(Value::as_str) != Some(RESET) {
        return Ok(());
    }
    let Some(level) = ctx.tag::<f64>("last_level") else { return Ok(()) };
    tags::set("min_level", &level)?;
    tags::set("max_level", &level)?;
    paddock_sdk::info!("min/max reset to {level:.1}% from the UI");
    Ok(())
}

/// The distance from a reading: `distance_mm`, or the older `raw_mm`.
fn reading(data: &Value) -> Option<f64> {
    data.get("distance_mm").or_else(|| data.get("raw_mm")).and_then(Value::as_f64)
}

/// Level in percent, clamped to 0..=100.
fn level_percent(cfg: &Config, distance_mm: f64) -> f64 {
    let span = (cfg.empty_distance_mm - cfg.full_distance_mm).max(1.0);
    let pct = (cfg.empty_distance_mm - distance_mm) / span * 100.0;
    (pct.clamp(0.0, 100.0) * 10.0).round() / 10.0
}

fn ui_schema(ctx: &Context<Config>) -> Value {
    json!({
        "type": "uiContainer",
        "displayString": ctx.app_display_name,
        "children": {
            "last_level": {"type": "uiVariable", "name": "last_level", "displayString": "Level (%)", "varType": "float",
                "ranges": [
                    {"label": "Low", "min": 0, "max": ctx.config.low_level_percent, "colour": "red"},
                    {"label": "OK", "min": ctx.config.low_level_percent, "max": 100, "colour": "green"}
                ]},
            "min_level": {"type": "uiVariable", "name": "min_level", "displayString": "Minimum (%)", "varType": "float"},
            "max_level": {"type": "uiVariable", "name": "max_level", "displayString": "Maximum (%)", "varType": "float"},
            RESET: {"type": "uiButton", "name": RESET, "displayString": "Range", "labelString": "Reset min/max"}
        }
    })
}

paddock_sdk::export_app!(TankLevel);

//! Webhook integration.
//!
//! An external system posts a batch of readings to the installation's
//! ingestion endpoint, as JSON (an array, `{"readings": [...]}` or one
//! object) or CSV (a header row naming the columns). Each reading names a
//! device by serial number; the app finds that device through `agents` and
//! publishes the rest of the reading on the device's channel. Readings for
//! unknown serials are counted and logged, not fatal. The batch totals go
//! into the `last_batch` tag.

use paddock_sdk::prelude::*;

/// Installation settings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The channel each reading is published on, on its device.
    #[serde(default = "defaults::channel")]
    pub target_channel: String,
    /// The field (or CSV column) holding the device serial number.
    #[serde(default = "defaults::serial_field")]
    pub serial_field: String,
}

mod defaults {
    pub fn channel() -> String {
        "sensor_data".into()
    }
    pub fn serial_field() -> String {
        "serial".into()
    }
}

#[derive(Default)]
struct Webhook;

impl App for Webhook {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::Ingestion];

    fn on_ingestion_endpoint(&mut self, ctx: &Context<Config>, event: &Ingestion) -> Result<(), AppError> {
        let readings = parse(event)?;
        let (mut routed, mut unknown) = (0u64, Vec::new());
        for mut reading in readings {
            let Some(serial) = reading.remove(&ctx.config.serial_field).and_then(|s| as_serial(&s)) else {
                unknown.push("<missing serial>".to_string());
                continue;
            };
            match agents::find_by_serial(&serial)? {
                Some(device) => {
                    channels::publish_to(device.id, &ctx.config.target_channel, &Value::Object(reading))?;
                    routed += 1;
                }
                None => unknown.push(serial),
            }
        }
        if !unknown.is_empty() {
            paddock_sdk::warn!("no device for serial(s): {}", unknown.join(", "));
        }
        paddock_sdk::info!("routed {routed} reading(s), {} unknown", unknown.len());
        tags::set(
            "last_batch",
            &json!({"routed": routed, "unknown": unknown.len(), "event_id": ctx.event_id.to_string()}),
        )?;
        Ok(())
    }
}

fn as_serial(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// The readings in the body, as JSON objects.
fn parse(event: &Ingestion) -> Result<Vec<Map<String, Value>>, AppError> {
    let ct = event.content_type.to_ascii_lowercase();
    if ct.starts_with("text/csv") {
        return parse_csv(&event.text());
    }
    let body: Value =
        event.json().map_err(|e| AppError::fail(format!("body is not JSON ({}): {e}", event.content_type)))?;
    let items = match body {
        Value::Array(items) => items,
        Value::Object(mut o) => match o.remove("readings") {
            Some(Value::Array(items)) => items,
            _ => vec![Value::Object(o)],
        },
        other => return Err(AppError::fail(format!("expected readings, got {other}"))),
    };
    items
        .into_iter()
        .map(|v| match v {
            Value::Object(o) => Ok(o),
            other => Err(AppError::fail(format!("a reading must be an object, got {other}"))),
        })
        .collect()
}

/// CSV with a header row; numeric cells become numbers.
fn parse_csv(text: &str) -> Result<Vec<Map<String, Value>>, AppError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let header: Vec<&str> =
        lines.next().ok_or_else(|| AppError::fail("CSV body is empty"))?.split(',').map(str::trim).collect();
    lines
        .enumerate()
        .map(|(i, line)| {
            let cells: Vec<&str> = line.split(',').map(str::trim).collect();
            if cells.len() != header.len() {
                return Err(AppError::fail(format!(
                    "CSV row {} has {} cells, the header {}",
                    i + 2,
                    cells.len(),
                    header.len()
                )));
            }
            Ok(header.iter().zip(cells).map(|(k, v)| (k.to_string(), cell(v))).collect())
        })
        .collect()
}

fn cell(v: &str) -> Value {
    v.parse::<i64>().map(Value::from).or_else(|_| v.parse::<f64>().map(Value::from)).unwrap_or_else(|_| Value::from(v))
}

paddock_sdk::export_app!(Webhook);

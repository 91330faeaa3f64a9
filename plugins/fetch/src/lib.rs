//! Outbound HTTP fixture: sends the request a manual invoke describes and
//! records what came back (or the error) in the tag `fetch`. See README.md.

use std::time::Duration;

use paddock_sdk::http::{Method, Request};
use paddock_sdk::prelude::*;

/// No settings.
#[derive(Debug, Default, Deserialize, JsonSchema)]
pub struct Config {}

#[derive(Default)]
struct Fetch;

impl App for Fetch {
    type Config = Config;
    const HOOKS: &'static [Hook] = &[Hook::ManualInvoke];

    fn on_manual_invoke(&mut self, _ctx: &Context<Config>, event: &ManualInvoke) -> Result<(), AppError> {
        let args = &event.payload;
        let url = args.get("url").and_then(Value::as_str).unwrap_or_default();
        let repeat = args.get("repeat").and_then(Value::as_u64).unwrap_or(1);
        let results: Vec<Value> = (0..repeat).map(|_| fetch_once(url, args)).collect();
        tags::set("fetch", &results)?;
        Ok(())
    }
}

fn fetch_once(url: &str, args: &Value) -> Value {
    let method = match args.get("method").and_then(Value::as_str).unwrap_or("GET") {
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        _ => Method::Get,
    };
    let mut request = Request::new(method, url);
    if let Some(headers) = args.get("headers").and_then(Value::as_object) {
        for (name, value) in headers {
            request = request.header(name.as_str(), value.as_str().unwrap_or_default());
        }
    }
    if let Some(body) = args.get("body").and_then(Value::as_str) {
        request = request.body(body.as_bytes().to_vec());
    }
    if let Some(ms) = args.get("timeout_ms").and_then(Value::as_u64) {
        request = request.timeout(Duration::from_millis(ms));
    }
    match request.send() {
        Ok(resp) => {
            paddock_sdk::info!("{url}: {} ({} bytes)", resp.status, resp.body.len());
            json!({"status": resp.status, "body": resp.text(), "echo": resp.header("x-echo")})
        }
        Err(e) => {
            paddock_sdk::info!("{url}: {e}");
            json!({"error": e.to_string()})
        }
    }
}

paddock_sdk::export_app!(Fetch);

//! Property-based fuzzing of every parser that reads client or app-author
//! input (stable Rust: proptest loops, no nightly fuzzer). Each target
//! feeds arbitrary text and grammar-shaped token soup to a parser and
//! asserts that it answers (a value or a typed error), never panics, and
//! that what it accepts round-trips where a round trip exists.
//!
//! CI runs a few thousand cases per target; `make fuzz` runs a million
//! each (`PADDOCK_FUZZ_CASES`), in release, outside the CI test time.
//! Targets elsewhere (ingestion signatures, the query string) use
//! [`config`] too and are named `fuzz_*`.

use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

/// Cases per target: `PADDOCK_FUZZ_CASES`, else 2,000 (CI).
pub(crate) fn cases() -> u32 {
    std::env::var("PADDOCK_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2_000)
}

/// The proptest settings every target runs with: no persistence files,
/// no shrinking beyond a bounded effort.
pub(crate) fn config() -> Config {
    Config { cases: cases(), failure_persistence: None, max_shrink_iters: 2_000, ..Config::default() }
}

/// Run `check` on [`cases`] inputs from `strategy`; a panic or a failed
/// property fails the test with the (shrunk) input. Prints how many
/// inputs ran (`--nocapture` shows it; `make fuzz` quotes it).
pub(crate) fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value) -> Result<(), TestCaseError>) {
    let ran = AtomicU64::new(0);
    let result = TestRunner::new(config()).run(&strategy, |input| {
        ran.fetch_add(1, Ordering::Relaxed);
        check(input)
    });
    eprintln!("fuzz {name}: {} inputs", ran.load(Ordering::Relaxed));
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}

/// Text built from `tokens` and arbitrary characters: reaches deeper into
/// a grammar than uniform noise does.
pub(crate) fn soup(tokens: &'static [&'static str]) -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        4 => prop::sample::select(tokens).prop_map(str::to_owned),
        1 => any::<char>().prop_map(String::from),
        1 => "[0-9]{1,25}",
    ];
    prop::collection::vec(piece, 0..24).prop_map(|parts| parts.concat())
}

/// Any text: uniform noise or token soup.
pub(crate) fn text(tokens: &'static [&'static str]) -> impl Strategy<Value = String> {
    prop_oneof![any::<String>(), soup(tokens)]
}

#[rustfmt::skip]
const MANIFEST_TOKENS: &[&str] = &[
    "name = ", "\"x\"", "type = ", "\"PRO\"", "\"INT\"", "\"DEV\"", "\n", "[limits]", "timeout_ms = ",
    "memory_mb = ", "component = ", "\"../a.wasm\"", "\"/etc/passwd\"", "config_schema = ", "{", "}", "[", "]",
    "subscriptions = ", "schedules = ", "[[schedules]]", "expression = ", "\"rate(1 minute)\"", "allowed_hosts = ",
    "\"*.example.com\"", "config_schema_file = ", "\"", ",", ":", "null", "true", "\"lambda_config\"",
    "\"Timeout\"", "\"MemorySize\"", "\"type\"", "\"name\"", "\"config_schema\"", "\"subscriptions\"", "-1",
    "4294967296", "1e999", "\\u0000",
];

#[rustfmt::skip]
const SCHEDULE_TOKENS: &[&str] = &[
    "rate(", "cron(", ")", " ", "1", "0", "59", "60", "23", "31", "12", "7", "2099", "*", "?", "L", "W", "#", "/",
    "-", ",", "minute", "minutes", "hour", "hours", "day", "days", "MON", "FRI", "JAN", "DEC", "5L", "15W", "6#3",
    "LW", "18446744073709551615",
];

#[rustfmt::skip]
const EVENT_TOKENS: &[&str] = &[
    "{", "}", "[", "]", ":", ",", "\"op\"", "\"d\"", "\"on_message_create\"", "\"on_aggregate_update\"",
    "\"on_deployment\"", "\"on_schedule\"", "\"on_ingestion_endpoint\"", "\"on_manual_invoke\"",
    "\"on_oauth_callback\"", "\"organisation_id\"", "\"message\"", "\"id\"", "\"channel\"", "\"agent_id\"",
    "\"name\"", "\"data\"", "\"author_id\"", "\"payload\"", "\"aGVsbG8=\"", "\"aggregate\"", "\"request_data\"",
    "\"owner_id\"", "\"channel_name\"", "\"code\"", "\"state\"", "\"params\"", "\"12345\"", "12345", "-1",
    "18446744073709551616", "null", "true", "\"\"",
];

#[rustfmt::skip]
const PATH_TOKENS: &[&str] = &[
    "/", "v1", "orgs", "agents", "channels", "messages", "aggregate", "installations", "invoke", "invocations",
    "dead-letters", "redrive", "ingestions", "ingest", "tokens", "apps", "oauth", "callback", "health", "metrics",
    "openapi.json", "123", "18446744073709551615", "18446744073709551616", "-1", "..", ".", "%2e", "%2F", "%00",
    "//", "?", "&", "=", "+", "%", "%zz", "tag_values", "dv-proc-inv-1",
];

#[rustfmt::skip]
const PAYLOAD_TOKENS: &[&str] = &[
    "{", "}", "[", "]", ":", ",", "\"a\"", "\"a.b\"", "\"\"", "\"k-1_x\"", "\"é\"", "\" \"", "1", "-0", "1.5e3",
    "18446744073709551616", "-9223372036854775809", "null", "true", "\"\\u0000\"", "\"\\ud800\"", " ",
];

#[test]
fn fuzz_manifest_loaders() {
    fuzz("manifest loaders", text(MANIFEST_TOKENS), |t| {
        use crate::manifest::Manifest;
        for file in ["app/paddock.toml", "app/doover_config.json"] {
            if let Ok(m) = Manifest::parse(&t, std::path::Path::new(file)) {
                // Whatever is accepted names its component inside the app.
                prop_assert!(m.component.starts_with("app"), "{:?}", m.component);
                prop_assert!(!m.component.components().any(|c| c == std::path::Component::ParentDir));
            }
        }
        Ok(())
    });
}

#[test]
fn fuzz_schedule_grammar() {
    let tz = prop::option::of(prop_oneof![
        Just("Europe/London".to_owned()),
        Just("Nope/Nowhere".to_owned()),
        any::<String>()
    ]);
    fuzz("schedule grammar", (text(SCHEDULE_TOKENS), tz, any::<u64>()), |(t, tz, after)| {
        if let Ok(expr) = crate::model::ScheduleExpr::parse(&t, tz.as_deref())
            && let Some(next) = expr.next_after(after)
        {
            prop_assert!(next > after, "{t:?}: next {next} is not after {after}");
        }
        Ok(())
    });
}

#[test]
fn fuzz_event_envelope() {
    fuzz("event envelope", text(EVENT_TOKENS), |t| {
        if let Ok(event) = crate::model::Event::from_json(&t) {
            let again = crate::model::Event::from_envelope(event.to_envelope());
            prop_assert_eq!(again.ok(), Some(event), "an accepted event round-trips");
        }
        Ok(())
    });
}

#[test]
fn fuzz_http_paths_and_ids() {
    let methods = prop::sample::select(&["GET", "POST", "PUT", "PATCH", "DELETE"][..]);
    fuzz("http paths and ids", (text(PATH_TOKENS), methods), |(path, method)| {
        let method: hyper::Method = method.parse().unwrap_or(hyper::Method::GET);
        if let Ok((route, params)) = crate::api::routes::find(&method, &path) {
            prop_assert_eq!(&route.method, &method);
            for value in params.values() {
                prop_assert!(!value.contains('/'), "a parameter is one segment: {value:?}");
                let _ = value.parse::<crate::model::OrgId>();
            }
        }
        let _ = crate::api::percent_decode(&path);
        if let Ok(id) = path.parse::<crate::model::AgentId>() {
            prop_assert_eq!(id.to_string().parse::<crate::model::AgentId>().ok(), Some(id));
        }
        Ok(())
    });
}

#[test]
fn fuzz_payload_key_rules() {
    fuzz("payload key rules and strict JSON", text(PAYLOAD_TOKENS), |t| {
        let strict = crate::model::parse_strict(t.as_bytes());
        let lenient: Result<serde_json::Value, _> = serde_json::from_str(&t);
        if let Ok(v) = &strict {
            prop_assert_eq!(lenient.as_ref().ok(), Some(v), "strict accepts only what serde_json reads the same");
        }
        if let Ok(v) = crate::model::parse_object(&t) {
            prop_assert!(crate::model::check_object(&v).is_ok());
            prop_assert!(v.is_object());
        }
        Ok(())
    });
}

#[test]
fn fuzz_host_patterns() {
    let tokens = text(&["*.", "example", ".com", ":", "8080", "[", "::1", "]", "http://", "/", "*", "-", "99999"]);
    fuzz("allowed_hosts patterns", tokens, |t| {
        if let Ok(p) = crate::model::HostPattern::parse(&t) {
            let _ = p.matches("api.example.com", 443);
        }
        Ok(())
    });
}

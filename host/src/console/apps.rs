//! Apps and installations: what is loaded (a broken app shows its error),
//! installing with a form generated from the app's JSON Schema (every
//! violation shown next to its field), editing, uninstalling, invoking by
//! hand, and an installation's invocations with their logs.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use hyper::StatusCode;
use serde_json::{Map, Value, json};

use super::html::{Frame, esc, page};
use super::pages::{Console, not_found, org_crumbs, org_of};
use super::ui::plain;
use super::{Page, Request, Session};
use crate::engine::{EngineError, new_record};
use crate::model::{AgentId, InstallId, OrgId};
use crate::store::InstallRecord;

/// Summaries shown per installation.
const SUMMARIES: usize = 50;

fn frame<'a>(title: &'a str, crumbs: &'a [(String, String)], s: &'a Session, csrf: &'a str) -> Frame<'a> {
    Frame { title, crumbs, who: Some(&s.token_name), csrf: Some(csrf) }
}

fn hidden_csrf(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

/// `/console/orgs/{org}/apps`: the apps and this organisation's
/// installations.
pub fn apps(console: &Console<'_>, s: &Session, raw_org: &str) -> Result<Page, Page> {
    let (org, name) = org_of(console, s, raw_org)?;
    let csrf = s.csrf(console.key);
    let mut body = String::from(
        r#"<section><h2>Apps</h2><table class="apps"><thead><tr><th>App</th><th>Kind</th><th>Status</th><th></th></tr></thead><tbody>"#,
    );
    for app in console.engine.app_statuses() {
        let error = app.error.as_deref().map(|e| format!(r#"<div class="error">{}</div>"#, esc(e))).unwrap_or_default();
        let install = if app.status == "failed" {
            String::new()
        } else {
            format!(r#"<a href="/console/orgs/{org}/install?app={}">Install</a>"#, super::html::url(&app.name))
        };
        let _ = write!(
            body,
            r#"<tr><td>{}<br><small>{}</small></td><td>{}</td><td><span class="status status-{}">{}</span>{error}</td><td>{install}</td></tr>"#,
            esc(app.display_name.as_deref().unwrap_or(&app.name)),
            esc(&app.name),
            esc(app.kind.as_deref().unwrap_or("")),
            esc(app.status),
            esc(app.status),
        );
    }
    body.push_str(r#"</tbody></table></section><section><h2>Installations</h2><table class="installations"><thead><tr><th>Installation</th><th>App</th><th>On</th><th></th></tr></thead><tbody>"#);
    let store = console.engine.store();
    for rec in store.installs().unwrap_or_default().into_iter().filter(|r| r.organisation_id == org) {
        let target = store.agent(rec.agent_id).ok().flatten().map_or_else(|| rec.agent_id.to_string(), |a| a.name);
        let _ = write!(
            body,
            r#"<tr><td><a href="/console/orgs/{org}/installations/{id}">{}</a><br><small>{}</small></td><td>{}</td><td>{}</td><td><a href="/console/orgs/{org}/install?app={}&amp;install={id}">Edit</a> <form method="post" action="/console/orgs/{org}/installations/{id}/delete" class="inline" data-confirm="true">{}<button type="submit">Uninstall</button></form></td></tr>"#,
            esc(&rec.display_name),
            esc(&rec.app_key),
            esc(&rec.app),
            esc(&target),
            super::html::url(&rec.app),
            hidden_csrf(&csrf),
            id = rec.id,
        );
    }
    body.push_str("</tbody></table></section>");
    let mut crumbs = org_crumbs(s, org, &name);
    crumbs.push((format!("/console/orgs/{org}/apps"), "Apps".into()));
    Ok(Page::html(page(&frame("Apps and installations", &crumbs, s, &csrf), &body)))
}

/// What an install form shows: the values to fill in and the violations.
#[derive(Default)]
struct Filled {
    /// Field values as typed (`cfg.<name>`, `agent`, `app_key`, `display_name`).
    values: BTreeMap<String, String>,
    /// Violations per config field (`""`: the whole config).
    violations: BTreeMap<String, Vec<String>>,
}

/// `GET /console/orgs/{org}/install?app=…[&install=…]`.
pub fn install_form(console: &Console<'_>, req: &Request<'_>, s: &Session, raw_org: &str) -> Result<Page, Page> {
    let (org, _) = org_of(console, s, raw_org)?;
    let app = req.query.get("app").cloned().unwrap_or_default();
    let existing = existing(console, s, org, req.query.get("install"))?;
    let mut filled = Filled::default();
    if let Some(rec) = &existing {
        filled.values.insert("agent".into(), rec.agent_id.to_string());
        filled.values.insert("app_key".into(), rec.app_key.clone());
        filled.values.insert("display_name".into(), rec.display_name.clone());
        for (k, v) in rec.config.as_object().into_iter().flatten() {
            filled.values.insert(format!("cfg.{k}"), plain(v));
        }
    }
    form_page(console, s, org, &app, existing.as_ref(), &filled, StatusCode::OK)
}

fn existing(
    console: &Console<'_>,
    s: &Session,
    org: OrgId,
    raw: Option<&String>,
) -> Result<Option<InstallRecord>, Page> {
    let Some(raw) = raw.filter(|r| !r.is_empty()) else { return Ok(None) };
    let id: InstallId = raw.parse().map_err(|_| not_found(console, Some(s)))?;
    let rec = console.engine.installation_record(id).ok().flatten().filter(|r| r.organisation_id == org);
    rec.map(Some).ok_or_else(|| not_found(console, Some(s)))
}

fn form_page(
    console: &Console<'_>,
    s: &Session,
    org: OrgId,
    app_name: &str,
    existing: Option<&InstallRecord>,
    filled: &Filled,
    status: StatusCode,
) -> Result<Page, Page> {
    let app = console.engine.app(app_name).ok_or_else(|| not_found(console, Some(s)))?;
    let csrf = s.csrf(console.key);
    let v = |k: &str| filled.values.get(k).map(String::as_str).unwrap_or("");
    let mut body = format!(
        r#"<form method="post" action="/console/orgs/{org}/install" class="install" novalidate>{}"#,
        hidden_csrf(&csrf)
    );
    let _ = write!(body, r#"<input type="hidden" name="app" value="{}">"#, esc(app_name));
    if let Some(rec) = existing {
        let _ = write!(body, r#"<input type="hidden" name="install" value="{}">"#, rec.id);
    }
    if let Some(general) = filled.violations.get("") {
        for message in general {
            let _ = write!(body, r#"<p class="error violation" data-field="">{}</p>"#, esc(message));
        }
    }
    // Where it runs: a processor on a device, an integration on the
    // organisation's own agent.
    if app.manifest.kind == crate::manifest::AppKind::Processor && existing.is_none() {
        body.push_str(r#"<label>Device <select name="agent">"#);
        for agent in console.engine.store().list_agents(org, usize::MAX).unwrap_or_default() {
            let selected = if v("agent") == agent.id.to_string() { " selected" } else { "" };
            let _ = write!(body, r#"<option value="{}"{selected}>{}</option>"#, agent.id, esc(&agent.name));
        }
        body.push_str("</select></label>");
    }
    if existing.is_none() {
        let key = if v("app_key").is_empty() { app_name.replace('-', "_") } else { v("app_key").to_owned() };
        let _ = write!(body, r#"<label>App key <input name="app_key" value="{}"></label>"#, esc(&key));
    }
    let display =
        if v("display_name").is_empty() { app.manifest.display_name.clone() } else { v("display_name").to_owned() };
    let _ = write!(
        body,
        r#"<label>Display name <input name="display_name" value="{}"></label><fieldset><legend>Config</legend>"#,
        esc(&display)
    );
    let schema = app.manifest.config_schema.clone().unwrap_or(Value::Null);
    let empty = Map::new();
    let properties = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    if properties.is_empty() {
        body.push_str(r#"<p class="hint">This app takes no settings.</p>"#);
    }
    for (name, prop) in properties {
        body.push_str(&field(name, prop, v(&format!("cfg.{name}")), filled.violations.get(name.as_str())));
    }
    let _ = write!(
        body,
        r#"</fieldset><button type="submit">{}</button></form>"#,
        if existing.is_some() { "Save" } else { "Install" }
    );
    let title = format!("{} {}", if existing.is_some() { "Edit" } else { "Install" }, app.manifest.display_name);
    let crumbs = vec![(format!("/console/orgs/{org}/apps"), "Apps".to_owned())];
    Ok(Page::with_status(status, page(&frame(&title, &crumbs, s, &csrf), &body)))
}

/// One config field, from its schema: a number, a checkbox, a choice, text
/// or JSON; its description as help; its violations next to it.
fn field(name: &str, prop: &Value, value: &str, violations: Option<&Vec<String>>) -> String {
    let kind = prop.get("type").and_then(Value::as_str).unwrap_or("");
    let title = prop.get("title").and_then(Value::as_str).unwrap_or(name);
    let input_name = format!("cfg.{name}");
    let placeholder = prop.get("default").map(plain).unwrap_or_default();
    let control = if let Some(options) = prop.get("enum").and_then(Value::as_array) {
        let mut c = format!(r#"<select name="{}"><option value=""></option>"#, esc(&input_name));
        for o in options {
            let o = plain(o);
            let selected = if o == value { " selected" } else { "" };
            let _ = write!(c, r#"<option{selected}>{}</option>"#, esc(&o));
        }
        c + "</select>"
    } else {
        match kind {
            "number" | "integer" => {
                let step = if kind == "integer" { "1" } else { "any" };
                let mut bounds = String::new();
                for (attr, key) in [("min", "minimum"), ("max", "maximum")] {
                    if let Some(n) = prop.get(key).and_then(Value::as_f64) {
                        let _ = write!(bounds, r#" {attr}="{n}""#);
                    }
                }
                format!(
                    r#"<input type="number" step="{step}"{bounds} name="{}" value="{}" placeholder="{}">"#,
                    esc(&input_name),
                    esc(value),
                    esc(&placeholder)
                )
            }
            "boolean" => {
                let checked = if value == "true" { " checked" } else { "" };
                format!(
                    r#"<input type="hidden" name="{n}" value="false"><input type="checkbox" name="{n}" value="true"{checked}>"#,
                    n = esc(&input_name)
                )
            }
            "string" => format!(
                r#"<input name="{}" value="{}" placeholder="{}">"#,
                esc(&input_name),
                esc(value),
                esc(&placeholder)
            ),
            _ => format!(r#"<textarea name="{}" placeholder="JSON">{}</textarea>"#, esc(&input_name), esc(value)),
        }
    };
    let help = prop
        .get("description")
        .and_then(Value::as_str)
        .map(|d| format!(r#"<small class="hint">{}</small>"#, esc(d)))
        .unwrap_or_default();
    let mut errors = String::new();
    for message in violations.into_iter().flatten() {
        let _ = write!(errors, r#"<span class="error violation" data-field="{}">{}</span>"#, esc(name), esc(message));
    }
    format!(
        r#"<div class="field" data-field="{}"><label>{} {control}</label>{help}{errors}</div>"#,
        esc(name),
        esc(title)
    )
}

/// The config a form describes, typed by the schema; fields whose value
/// cannot be read get a violation instead.
fn config_from(
    form: &BTreeMap<String, String>,
    schema: &Value,
    violations: &mut BTreeMap<String, Vec<String>>,
) -> Value {
    let empty = Map::new();
    let properties = schema.get("properties").and_then(Value::as_object).unwrap_or(&empty);
    let mut config = Map::new();
    for (name, prop) in properties {
        // A checkbox sends its hidden "false" and, when ticked, "true" too:
        // the form parser keeps the last.
        let Some(raw) = form.get(&format!("cfg.{name}")).map(|v| v.trim()).filter(|v| !v.is_empty()) else { continue };
        let kind = prop.get("type").and_then(Value::as_str).unwrap_or("");
        let value = match kind {
            "number" => raw.parse::<f64>().map(|n| json!(n)).map_err(|_| format!("{raw:?} is not a number")),
            "integer" => raw.parse::<i64>().map(|n| json!(n)).map_err(|_| format!("{raw:?} is not a whole number")),
            "boolean" => Ok(json!(raw == "true")),
            "string" => Ok(json!(raw)),
            _ => serde_json::from_str(raw).map_err(|e| format!("not JSON: {e}")),
        };
        match value {
            Ok(v) => {
                config.insert(name.clone(), v);
            }
            Err(e) => violations.entry(name.clone()).or_default().push(e),
        }
    }
    Value::Object(config)
}

/// Violations as the engine words them (`/field: message`), by field.
fn by_field(violations: Vec<String>) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for v in violations {
        let (path, message) = v.split_once(": ").unwrap_or(("/", v.as_str()));
        let mut field = path.trim_start_matches('/').split('/').next().unwrap_or("").to_owned();
        // "\"x\" is a required property" belongs to x.
        if field.is_empty()
            && let Some(name) =
                message.strip_prefix('"').and_then(|m| m.split_once("\" is a required property")).map(|(n, _)| n)
        {
            field = name.to_owned();
        }
        out.entry(field).or_default().push(message.to_owned());
    }
    out
}

/// `POST /console/orgs/{org}/install`: create or update.
pub async fn install(console: &Console<'_>, req: &Request<'_>, s: &Session, raw_org: &str) -> Result<Page, Page> {
    let (org, _) = org_of(console, s, raw_org)?;
    let form = &req.form;
    let app_name = form.get("app").cloned().unwrap_or_default();
    let app = console.engine.app(&app_name).ok_or_else(|| not_found(console, Some(s)))?;
    let existing = existing(console, s, org, form.get("install"))?;
    let mut filled = Filled { values: form.clone(), violations: BTreeMap::new() };
    let schema = app.manifest.config_schema.clone().unwrap_or(Value::Null);
    let config = config_from(form, &schema, &mut filled.violations);
    if !filled.violations.is_empty() {
        return form_page(console, s, org, &app_name, existing.as_ref(), &filled, StatusCode::UNPROCESSABLE_ENTITY);
    }
    let display = form
        .get("display_name")
        .filter(|d| !d.trim().is_empty())
        .cloned()
        .unwrap_or_else(|| app.manifest.display_name.clone());
    let rec = match existing.clone() {
        Some(rec) => InstallRecord { config, display_name: display, ..rec },
        None => {
            let org_agent = console.engine.store().org(org).ok().flatten().map(|o| o.agent_id).unwrap_or_default();
            let agent = form.get("agent").and_then(|a| a.parse::<AgentId>().ok()).unwrap_or(org_agent);
            let key = form
                .get("app_key")
                .map(|k| k.trim().to_owned())
                .filter(|k| !k.is_empty())
                .unwrap_or_else(|| app_name.replace('-', "_"));
            new_record(&app_name, org, agent, &key, &display, config)
        }
    };
    match console.engine.put_installation(&rec).await {
        Ok(_) => Ok(Page::redirect(&format!("/console/orgs/{org}/installations/{}", rec.id))),
        Err(EngineError::InvalidConfig(violations)) => {
            filled.violations = by_field(violations);
            form_page(console, s, org, &app_name, existing.as_ref(), &filled, StatusCode::UNPROCESSABLE_ENTITY)
        }
        Err(e) => {
            filled.violations.insert(String::new(), vec![e.to_string()]);
            form_page(console, s, org, &app_name, existing.as_ref(), &filled, StatusCode::UNPROCESSABLE_ENTITY)
        }
    }
}

fn installation_of(console: &Console<'_>, s: &Session, org: OrgId, raw: &str) -> Result<InstallRecord, Page> {
    existing(console, s, org, Some(&raw.to_owned()))?.ok_or_else(|| not_found(console, Some(s)))
}

/// `/console/orgs/{org}/installations/{id}`: invocations with their logs,
/// and a manual invoke.
pub fn installation(console: &Console<'_>, s: &Session, raw_org: &str, raw_id: &str) -> Result<Page, Page> {
    let (org, name) = org_of(console, s, raw_org)?;
    let rec = installation_of(console, s, org, raw_id)?;
    let csrf = s.csrf(console.key);
    let mut body = format!(
        r#"<section><h2>Invoke</h2><form method="post" action="/console/orgs/{org}/installations/{}/invoke">{}<textarea name="payload" rows="3">{{}}</textarea> <button type="submit">Invoke</button></form></section>"#,
        rec.id,
        hidden_csrf(&csrf)
    );
    // The head before anything is read (see the device page).
    console.monitors.expect_view(org);
    let live = format!(
        "/console/orgs/{org}/installations/{}/live?since={}",
        rec.id,
        console.monitors.head().saturating_sub(1)
    );
    let _ = write!(
        body,
        r#"<section class="invocations-live" data-live="{}" data-refresh><h2>Invocations</h2>"#,
        esc(&live)
    );
    body.push_str(r#"<table class="invocations"><thead><tr><th>When</th><th>Event</th><th>Status</th><th>Attempt</th><th>Duration</th><th>Fuel</th><th>Error and logs</th></tr></thead><tbody>"#);
    for inv in console.engine.store().invocations(rec.id, SUMMARIES).unwrap_or_default() {
        let lines: Vec<String> =
            inv.logs.get("lines").and_then(Value::as_array).into_iter().flatten().map(plain).collect();
        let _ = write!(
            body,
            r#"<tr><td>{}</td><td>{}</td><td><span class="status status-{}">{}</span></td><td>{}</td><td>{:.1} ms</td><td>{}</td><td>{}<details><summary>{} log lines</summary><pre>{}</pre></details></td></tr>"#,
            esc(&crate::monitors::document::timestamp(inv.at_ms)),
            esc(&inv.op),
            esc(&inv.status),
            esc(&inv.status),
            inv.attempt,
            inv.duration_ms,
            inv.fuel,
            esc(inv.error.as_deref().unwrap_or("")),
            lines.len(),
            esc(&lines.join("\n")),
        );
    }
    body.push_str("</tbody></table></section>");
    let mut crumbs = org_crumbs(s, org, &name);
    crumbs.push((format!("/console/orgs/{org}/apps"), "Apps".into()));
    Ok(Page::html(page(&frame(&rec.display_name, &crumbs, s, &csrf), &body)))
}

/// `POST …/installations/{id}/invoke`: a manual invoke with a JSON payload.
pub async fn invoke(
    console: &Console<'_>,
    req: &Request<'_>,
    s: &Session,
    raw_org: &str,
    raw_id: &str,
) -> Result<Page, Page> {
    let (org, _) = org_of(console, s, raw_org)?;
    let rec = installation_of(console, s, org, raw_id)?;
    let raw = req.form.get("payload").map(|p| p.trim()).filter(|p| !p.is_empty()).unwrap_or("{}");
    let refused = |m: String| super::pages::error_page(console, Some(s), StatusCode::BAD_REQUEST, &m);
    let payload: Value = serde_json::from_str(raw).map_err(|e| refused(format!("The payload is not JSON: {e}")))?;
    console.engine.manual_invoke(rec.id, payload).await.map_err(|e| refused(format!("The invoke was refused: {e}")))?;
    Ok(Page::redirect(&format!("/console/orgs/{org}/installations/{}", rec.id)))
}

/// `POST …/installations/{id}/delete`.
pub async fn uninstall(console: &Console<'_>, s: &Session, raw_org: &str, raw_id: &str) -> Result<Page, Page> {
    let (org, _) = org_of(console, s, raw_org)?;
    let rec = installation_of(console, s, org, raw_id)?;
    console
        .engine
        .delete_installation(rec.id)
        .await
        .map_err(|e| super::pages::error_page(console, Some(s), StatusCode::SERVICE_UNAVAILABLE, &e.to_string()))?;
    Ok(Page::redirect(&format!("/console/orgs/{org}/apps")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn violations_are_filed_under_their_field() {
        let v = by_field(vec![
            "/low_level_percent: 150.0 is greater than the maximum of 100.0".into(),
            "/: \"target_channel\" is a required property".into(),
            "/: Additional properties are not allowed ('x' was unexpected)".into(),
        ]);
        assert_eq!(v["low_level_percent"], ["150.0 is greater than the maximum of 100.0"]);
        assert_eq!(v["target_channel"], ["\"target_channel\" is a required property"]);
        assert_eq!(v[""].len(), 1);
    }

    #[test]
    fn a_form_is_typed_by_the_schema_and_unreadable_fields_are_violations() {
        let schema = json!({"properties": {"n": {"type": "number"}, "i": {"type": "integer"}, "b": {"type": "boolean"},
            "s": {"type": "string"}, "o": {"type": "object"}, "unset": {"type": "number"}}});
        let form: BTreeMap<String, String> = [
            ("cfg.n", "2.5"),
            ("cfg.i", "x"),
            ("cfg.b", "true"),
            ("cfg.s", "<b>"),
            ("cfg.o", "{\"a\":1}"),
            ("cfg.unset", ""),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        let mut violations = BTreeMap::new();
        let config = config_from(&form, &schema, &mut violations);
        assert_eq!(config, json!({"n": 2.5, "b": true, "s": "<b>", "o": {"a": 1}}));
        assert_eq!(violations["i"], ["\"x\" is not a whole number"]);
        let html =
            field("s", &json!({"type": "string", "description": "<i>help</i>"}), "<b>", Some(&vec!["bad <x>".into()]));
        assert!(
            html.contains(r#"value="&lt;b&gt;""#) && html.contains("&lt;i&gt;help") && html.contains("bad &lt;x&gt;")
        );
    }
}

//! The device UI: what apps published in `ui_state` (pydoover's element
//! schema), rendered to HTML with values bound as Doover binds them.
//!
//! Each installation's schema sits at `ui_state.state.children.<app_key>`.
//! Values come from, in order: a `currentValue` lookup string
//! (`$tag.app().<name>[:type[:default]]` reads the app's tags in
//! `tag_values`, `$cmds.app().<name>[::default]` its UI commands in
//! `ui_cmds`), a literal `currentValue`, or — for variables — the app's
//! tag of the element's name. Interactions (buttons, parameters, switches,
//! selects, sliders, state commands) are forms that post the user's value
//! as a UI command for the app (see the console's command endpoint). Every
//! label and value is escaped: a schema is app-written data.

use std::fmt::Write as _;

use serde_json::{Map, Value};

use super::html::esc;

/// What a schema's values are bound to.
pub struct Bindings<'a> {
    /// `tag_values` aggregate data (`{app_key: {tag: value}}`).
    pub tags: &'a Value,
    /// `ui_cmds` aggregate data (`{"cmds": {...}}`, or `{app_key: {...}}`).
    pub cmds: &'a Value,
}

/// Most nesting rendered (a schema is app data; stop before it hurts).
const MAX_DEPTH: usize = 16;

/// Render every app's UI in `ui_state` data. `action` is the URL commands
/// post to, `csrf` the session's token.
pub fn render(ui_state: &Value, bindings: &Bindings<'_>, action: &str, csrf: &str) -> String {
    let Some(apps) = ui_state.pointer("/state/children").and_then(Value::as_object) else {
        return r#"<p class="empty">No app has published a UI for this device.</p>"#.to_owned();
    };
    let mut out = String::new();
    for (app_key, schema) in ordered(apps) {
        let ctx = Ctx { app_key, bindings, action, csrf };
        element(&mut out, &ctx, app_key, schema, 0);
    }
    out
}

struct Ctx<'a> {
    app_key: &'a str,
    bindings: &'a Bindings<'a>,
    action: &'a str,
    csrf: &'a str,
}

/// Children in `position` order where given, else as published.
fn ordered(children: &Map<String, Value>) -> Vec<(&str, &Value)> {
    let mut list: Vec<(usize, &str, &Value)> =
        children.iter().enumerate().map(|(i, (k, v))| (i, k.as_str(), v)).collect();
    list.sort_by_key(|(i, _, v)| (v.get("position").and_then(Value::as_i64).unwrap_or(i64::MAX), *i));
    list.into_iter().map(|(_, k, v)| (k, v)).collect()
}

fn text<'v>(e: &'v Value, key: &str) -> Option<&'v str> {
    e.get(key).and_then(Value::as_str)
}

fn label<'v>(e: &'v Value, name: &'v str) -> &'v str {
    text(e, "displayString").unwrap_or(name)
}

fn element(out: &mut String, ctx: &Ctx<'_>, name: &str, e: &Value, depth: usize) {
    if depth > MAX_DEPTH || e.get("hidden").and_then(Value::as_bool) == Some(true) {
        return;
    }
    let kind = text(e, "type").unwrap_or("");
    match kind {
        "uiContainer" | "uiSubmodule" | "uiApplication" => {
            let _ = write!(out, r#"<section class="ui-container"><h3>{}</h3>"#, esc(label(e, name)));
            if let Some(children) = e.get("children").and_then(Value::as_object) {
                for (child, value) in ordered(children) {
                    element(out, ctx, child, value, depth + 1);
                }
            }
            out.push_str("</section>");
        }
        "uiVariable" | "uiTimestamp" => variable(out, ctx, name, e, kind == "uiTimestamp"),
        "uiWarningIndicator" => {
            let _ = write!(out, r#"<div class="ui-warning" role="alert">⚠ {}</div>"#, esc(label(e, name)));
        }
        "uiButton" | "uiAction" => {
            let caption = text(e, "labelString").unwrap_or_else(|| label(e, name));
            let disabled = if e.get("disabled").and_then(Value::as_bool) == Some(true) { " disabled" } else { "" };
            form(
                out,
                ctx,
                name,
                "button",
                &format!(r#"<button type="submit" name="value" value="true"{disabled}>{}</button>"#, esc(caption)),
                e,
            );
        }
        "uiSwitch" | "uiBoolParam" => {
            let on = value(ctx, name, e).is_some_and(|v| v.as_bool() == Some(true));
            let next = if on { "false" } else { "true" };
            let state = if on { "on" } else { "off" };
            let control = format!(
                r#"<span class="ui-value" data-bind="{}">{state}</span> <button type="submit" name="value" value="{next}">Turn {}</button>"#,
                esc(&bind(ctx, name)),
                if on { "off" } else { "on" }
            );
            labelled(out, ctx, name, e, "bool", &control);
        }
        "uiSelect" | "uiStateCommand" => {
            let current = value(ctx, name, e).map(|v| plain(&v)).unwrap_or_default();
            let options = e.get("options").or_else(|| e.get("userOptions")).and_then(Value::as_object);
            let mut control = String::from(r#"<select name="value">"#);
            for (key, option) in options.map(ordered).unwrap_or_default() {
                let selected = if key == current { " selected" } else { "" };
                let _ =
                    write!(control, r#"<option value="{}"{selected}>{}</option>"#, esc(key), esc(label(option, key)));
            }
            control.push_str(r#"</select> <button type="submit">Set</button>"#);
            labelled(out, ctx, name, e, "text", &control);
        }
        "uiFloatInput" | "uiFloatParam" | "uiSlider" => {
            let current = value(ctx, name, e).map(|v| plain(&v)).unwrap_or_default();
            let mut bounds = String::new();
            for (attr, key) in [("min", "min"), ("max", "max"), ("step", "stepSize")] {
                if let Some(n) = e.get(key).and_then(Value::as_f64) {
                    let _ = write!(bounds, r#" {attr}="{n}""#);
                }
            }
            if bounds.contains("step") {
                bounds.push(' ');
            } else {
                bounds.push_str(r#" step="any""#);
            }
            let control = format!(
                r#"<input type="number" name="value" value="{}"{bounds}> <button type="submit">Set</button>"#,
                esc(&current)
            );
            labelled(out, ctx, name, e, "float", &control);
        }
        "uiTextInput" | "uiTextParam" | "uiDatetimeInput" | "uiTimeInput" => {
            let current = value(ctx, name, e).map(|v| plain(&v)).unwrap_or_default();
            let control = format!(
                r#"<input type="text" name="value" value="{}"> <button type="submit">Set</button>"#,
                esc(&current)
            );
            labelled(out, ctx, name, e, "text", &control);
        }
        other => {
            let _ = write!(
                out,
                r#"<div class="ui-unsupported">{} <small>({} is not shown in this console)</small></div>"#,
                esc(label(e, name)),
                esc(if other.is_empty() { "an element without a type" } else { other })
            );
        }
    }
}

fn variable(out: &mut String, ctx: &Ctx<'_>, name: &str, e: &Value, timestamp: bool) {
    let v = value(ctx, name, e);
    let precision = e.get("decPrecision").and_then(Value::as_u64).map(|p| p.min(10) as usize);
    let shown = match (&v, timestamp) {
        (None | Some(Value::Null), _) => "—".to_owned(),
        (Some(Value::Number(n)), true) => n
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map_or_else(|| n.to_string(), |t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string()),
        (Some(Value::Number(n)), false) => match (precision, n.as_f64()) {
            (Some(p), Some(f)) => format!("{f:.p$}"),
            _ => n.to_string(),
        },
        (Some(Value::Bool(b)), _) => if *b { "Yes" } else { "No" }.to_owned(),
        (Some(other), _) => plain(other),
    };
    let units = text(e, "units").map(|u| format!(" {}", esc(u))).unwrap_or_default();
    let range = v.as_ref().and_then(Value::as_f64).and_then(|x| range_of(e, x));
    let (colour, range_label) = match range {
        Some((label, colour)) => (
            format!(r#" data-colour="{}""#, esc(&colour)),
            format!(r#" <span class="ui-range">{}</span>"#, esc(&label)),
        ),
        None => (String::new(), String::new()),
    };
    let _ = write!(
        out,
        r#"<div class="ui-variable"><span class="ui-label">{}</span> <span class="ui-value" data-bind="{}"{colour}>{}</span>{units}{range_label}</div>"#,
        esc(label(e, name)),
        esc(&bind(ctx, name)),
        esc(&shown),
    );
}

/// The range (`ranges: [{label, min, max, colour}]`) `x` falls in.
fn range_of(e: &Value, x: f64) -> Option<(String, String)> {
    e.get("ranges")?.as_array()?.iter().find_map(|r| {
        let min = r.get("min").and_then(Value::as_f64).unwrap_or(f64::NEG_INFINITY);
        let max = r.get("max").and_then(Value::as_f64).unwrap_or(f64::INFINITY);
        (x >= min && x <= max).then(|| {
            let label = r.get("label").and_then(Value::as_str).unwrap_or_default().to_owned();
            (label, r.get("colour").and_then(Value::as_str).unwrap_or("grey").to_owned())
        })
    })
}

/// `app_key/name`: what live updates find an element by.
fn bind(ctx: &Ctx<'_>, name: &str) -> String {
    format!("{}/{}", ctx.app_key, name)
}

fn labelled(out: &mut String, ctx: &Ctx<'_>, name: &str, e: &Value, kind: &str, control: &str) {
    let inner = format!(r#"<span class="ui-label">{}</span> {control}"#, esc(label(e, name)));
    form(out, ctx, name, kind, &inner, e);
}

/// A command form: the app, the element's name and kind, the CSRF token.
fn form(out: &mut String, ctx: &Ctx<'_>, name: &str, kind: &str, inner: &str, e: &Value) {
    let confirm = if e.get("requiresConfirm").is_some_and(|c| c.as_bool() == Some(true) || c.is_object()) {
        r#" data-confirm="true""#
    } else {
        ""
    };
    let _ = write!(
        out,
        r#"<form class="ui-interaction" method="post" action="{}"{confirm}><input type="hidden" name="csrf" value="{}"><input type="hidden" name="app" value="{}"><input type="hidden" name="name" value="{}"><input type="hidden" name="kind" value="{kind}">{inner}</form>"#,
        esc(ctx.action),
        esc(ctx.csrf),
        esc(ctx.app_key),
        esc(name),
    );
}

/// The element's value, as Doover binds it (see the module docs).
fn value(ctx: &Ctx<'_>, name: &str, e: &Value) -> Option<Value> {
    match e.get("currentValue") {
        Some(Value::String(lookup)) if lookup.starts_with('$') => resolve(ctx, lookup),
        Some(literal) => Some(literal.clone()),
        None if text(e, "type") == Some("uiVariable") => ctx.bindings.tags.get(ctx.app_key)?.get(name).cloned(),
        None => command(ctx, name),
    }
}

/// A `$tag.…` or `$cmds.…` lookup, with its default when unset.
fn resolve(ctx: &Ctx<'_>, lookup: &str) -> Option<Value> {
    let (source, rest) = lookup
        .strip_prefix("$tag.")
        .map(|r| ("tag", r))
        .or_else(|| lookup.strip_prefix("$cmds.").map(|r| ("cmds", r)))?;
    let (app_scoped, rest) = match rest.strip_prefix("app().") {
        Some(r) => (true, r),
        None => (false, rest),
    };
    let mut parts = rest.splitn(3, ':');
    let key = parts.next().unwrap_or_default();
    let default = parts
        .nth(1)
        .filter(|d| !d.is_empty())
        .map(|d| serde_json::from_str(d).unwrap_or_else(|_| Value::String(d.to_owned())));
    let found = match source {
        "tag" if app_scoped => ctx.bindings.tags.get(ctx.app_key).and_then(|t| t.get(key)).cloned(),
        "tag" => ctx.bindings.tags.get(key).cloned(),
        _ => command(ctx, key),
    };
    found.filter(|v| !v.is_null()).or(default)
}

/// The app's UI command `name`: Paddock's `ui_cmds.cmds.<name>`, or
/// Doover's namespaced `ui_cmds.<app_key>.<name>`.
fn command(ctx: &Ctx<'_>, name: &str) -> Option<Value> {
    let cmds = ctx.bindings.cmds;
    cmds.get("cmds").and_then(|c| c.get(name)).or_else(|| cmds.get(ctx.app_key).and_then(|c| c.get(name))).cloned()
}

/// A value as plain text (strings without quotes).
pub fn plain(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn html(ui: Value, tags: Value, cmds: Value) -> String {
        render(&json!({"state": {"children": ui}}), &Bindings { tags: &tags, cmds: &cmds }, "/act", "tok")
    }

    /// tank-level's own schema: variables bound to its tags by name, with
    /// ranges and colours.
    #[test]
    fn variables_show_their_tag_value_range_and_colour() {
        let ui = json!({"tank_level": {"type": "uiContainer", "displayString": "North tank", "children": {
            "last_level": {"type": "uiVariable", "name": "last_level", "displayString": "Level (%)", "varType": "float",
                "decPrecision": 1, "units": "%",
                "ranges": [{"label": "Low", "min": 0, "max": 20, "colour": "red"}, {"label": "OK", "min": 20, "max": 100, "colour": "green"}]},
            "readings": {"type": "uiVariable", "name": "readings", "displayString": "Readings", "varType": "float"}}}});
        let out = html(ui, json!({"tank_level": {"last_level": 12.345, "readings": 7}}), json!({}));
        assert!(out.contains("<h3>North tank</h3>"));
        assert!(out.contains(r#"data-bind="tank_level/last_level" data-colour="red">12.3</span> %"#), "{out}");
        assert!(out.contains(r#"<span class="ui-range">Low</span>"#));
        assert!(out.contains(r#"data-bind="tank_level/readings">7</span>"#));
    }

    /// pydoover's serialisations (tests/test_ui.py): `$tag.app().speed:number:0`
    /// with its default, a timestamp in ms, a select with options, a button,
    /// a float input with bounds, a warning indicator, a submodule.
    #[test]
    fn pydoover_elements_render_with_their_bindings() {
        let ui = json!({"app": {"type": "uiApplication", "displayString": "Pump", "children": {
            "voltage": {"type": "uiVariable", "name": "voltage", "displayString": "Voltage", "varType": "float", "currentValue": "$tag.app().speed:number:0"},
            "seen": {"type": "uiTimestamp", "name": "seen", "displayString": "Last seen", "currentValue": 1_782_302_400_000_i64},
            "mode": {"type": "uiSelect", "name": "mode", "displayString": "Mode", "currentValue": "$cmds.app().mode",
                "options": {"auto": {"name": "auto", "displayString": "Automatic"}, "manual": {"name": "manual", "displayString": "Manual"}}},
            "start": {"type": "uiButton", "name": "start", "displayString": "Start", "labelString": "Start now", "requiresConfirm": true},
            "setpoint": {"type": "uiFloatInput", "name": "setpoint", "displayString": "Setpoint", "min": 0, "max": 10, "currentValue": "$cmds.app().setpoint::5"},
            "fault": {"type": "uiWarningIndicator", "name": "fault", "displayString": "Pump fault"},
            "more": {"type": "uiSubmodule", "displayString": "Details", "children": {
                "on": {"type": "uiSwitch", "name": "on", "displayString": "Power"}}},
            "secret": {"type": "uiVariable", "name": "secret", "hidden": true},
            "cam": {"type": "uiCamera", "name": "cam", "displayString": "Camera"}}}});
        let out = html(ui, json!({}), json!({"cmds": {"mode": "manual", "on": true}}));
        assert!(out.contains(r#"data-bind="app/voltage">0</span>"#), "the default when the tag is unset: {out}");
        assert!(out.contains("2026-06-24 12:00:00 UTC"));
        assert!(out.contains(r#"<option value="manual" selected>Manual</option>"#));
        assert!(out.contains(r#"data-confirm="true""#) && out.contains(">Start now</button>"));
        assert!(out.contains(r#"value="5" min="0" max="10" step="any""#), "{out}");
        assert!(out.contains(r#"role="alert">⚠ Pump fault"#));
        assert!(out.contains("<h3>Details</h3>") && out.contains(">on</span> <button") && out.contains("Turn off"));
        assert!(!out.contains("secret"));
        assert!(out.contains("uiCamera is not shown"));
        assert!(out.contains(r#"name="csrf" value="tok""#) && out.contains(r#"name="app" value="app""#));
    }

    #[test]
    fn labels_and_values_written_by_apps_are_inert() {
        let ui = json!({"x": {"type": "uiVariable", "name": "v", "displayString": "<script>alert(1)</script>", "currentValue": "<img src=x onerror=alert(2)>"},
                        "y\"><script>": {"type": "<b>bad</b>", "displayString": "<i>z</i>"}});
        let out = html(ui, json!({}), json!({}));
        assert!(
            !out.contains("<script>") && !out.contains("<img") && !out.contains("<b>") && !out.contains("<i>"),
            "{out}"
        );
        assert!(out.contains("&lt;script&gt;alert(1)&lt;/script&gt;"));
        let none = render(&json!({}), &Bindings { tags: &json!({}), cmds: &json!({}) }, "/a", "t");
        assert!(none.contains("No app has published a UI"));
    }
}

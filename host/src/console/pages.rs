//! The console's pages and the actions they post.

use std::fmt::Write as _;

use hyper::{Method, StatusCode};
use serde_json::{Value, json};

use super::html::{Frame, esc, page, url};
use super::ui::{Bindings, plain, render};
use super::{Page, Request, Session, admin, apps, asset, session};
use crate::engine::Engine;
use crate::model::{AgentId, ChannelName, ChannelRef, MessageId, OrgId, WriteMode, well_known};
use crate::tenants::hash_secret;

/// Devices shown on the organisation page at most (search narrows).
const MAX_DEVICES: usize = 1000;
/// Messages per page of a channel.
const PAGE: usize = 50;

/// What the pages need: the engine, the cookie key, and whether the
/// console is served over TLS (then cookies are `Secure`).
pub struct Console<'a> {
    /// The engine (store reads, writes through ingress).
    pub engine: &'a Engine,
    /// The monitors (their pages).
    pub monitors: &'a std::sync::Arc<crate::monitors::Monitors>,
    /// The base URL clients use (ingestion URLs).
    pub public_url: &'a str,
    /// The highest rate an ingestion endpoint may have.
    pub max_ingest_rate: u32,
    /// Signs session cookies.
    pub key: &'a [u8],
    /// Cookies are `Secure`.
    pub secure: bool,
}

/// Answer one console request.
pub async fn handle(console: &Console<'_>, req: Request<'_>) -> Page {
    if let Some(page) = asset(req.path) {
        return page;
    }
    let segments: Vec<&str> = req.path.trim_end_matches('/').split('/').skip(1).collect();
    let result = match (req.method, segments.as_slice()) {
        (&Method::GET, [] | ["console"] | ["console", "login"]) => Ok(home(console, &req)),
        (&Method::POST, ["console", "login"]) => Ok(login(console, &req)),
        (&Method::POST, ["console", "logout"]) => {
            signed_in(console, &req).map(|_| Page::redirect("/").with_cookie(session::end(console.secure)))
        }
        (&Method::GET, ["console", "orgs"]) => signed_in(console, &req).map(|s| organisations(console, &s)),
        (&Method::GET, ["console", "orgs", org]) => {
            signed_in(console, &req).and_then(|s| devices(console, &req, &s, org))
        }
        (&Method::GET, ["console", "orgs", org, "devices", agent]) => {
            signed_in(console, &req).and_then(|s| device(console, &req, &s, org, agent))
        }
        (&Method::POST, ["console", "orgs", org, "devices", agent, "command"]) => match signed_in(console, &req) {
            Ok(s) => command(console, &req, &s, org, agent).await,
            Err(e) => Err(e),
        },
        (&Method::GET, ["console", "orgs", org, "dead-letters"]) => {
            signed_in(console, &req).and_then(|s| admin::dead_letters(console, &s, org))
        }
        (&Method::POST, ["console", "orgs", org, "dead-letters", id, action @ ("redrive" | "delete")]) => {
            match signed_in(console, &req) {
                Ok(s) => admin::dead_letter_action(console, &s, org, id, *action == "redrive").await,
                Err(e) => Err(e),
            }
        }
        (&Method::GET, ["console", "orgs", org, "ingestions"]) => {
            signed_in(console, &req).and_then(|s| admin::ingestions(console, &s, org))
        }
        (&Method::POST, ["console", "orgs", org, "ingestions"]) => match signed_in(console, &req) {
            Ok(s) => admin::create_ingestion(console, &req, &s, org).await,
            Err(e) => Err(e),
        },
        (&Method::POST, ["console", "orgs", org, "ingestions", id, "delete"]) => match signed_in(console, &req) {
            Ok(s) => admin::delete_ingestion(console, &s, org, id).await,
            Err(e) => Err(e),
        },
        (&Method::GET, ["console", "orgs", org, "monitors"]) => {
            signed_in(console, &req).and_then(|s| admin::monitors(console, &s, org))
        }
        (&Method::POST, ["console", "orgs", org, "monitors", id, action @ ("reset" | "delete")]) => {
            match signed_in(console, &req) {
                Ok(s) => admin::monitor_action(console, &s, org, id, *action == "reset").await,
                Err(e) => Err(e),
            }
        }
        (&Method::GET, ["console", "orgs", org, "apps"]) => {
            signed_in(console, &req).and_then(|s| apps::apps(console, &s, org))
        }
        (&Method::GET, ["console", "orgs", org, "install"]) => {
            signed_in(console, &req).and_then(|s| apps::install_form(console, &req, &s, org))
        }
        (&Method::POST, ["console", "orgs", org, "install"]) => match signed_in(console, &req) {
            Ok(s) => apps::install(console, &req, &s, org).await,
            Err(e) => Err(e),
        },
        (&Method::GET, ["console", "orgs", org, "installations", id]) => {
            signed_in(console, &req).and_then(|s| apps::installation(console, &s, org, id))
        }
        (&Method::POST, ["console", "orgs", org, "installations", id, "invoke"]) => match signed_in(console, &req) {
            Ok(s) => apps::invoke(console, &req, &s, org, id).await,
            Err(e) => Err(e),
        },
        (&Method::POST, ["console", "orgs", org, "installations", id, "delete"]) => match signed_in(console, &req) {
            Ok(s) => apps::uninstall(console, &s, org, id).await,
            Err(e) => Err(e),
        },
        _ => Err(not_found(console, req.session.as_ref())),
    };
    result.unwrap_or_else(|page| page)
}

/// The session, if the request has one and (for a POST) its CSRF token.
fn signed_in(console: &Console<'_>, req: &Request<'_>) -> Result<Session, Page> {
    let Some(s) = req.session.clone() else { return Err(Page::redirect("/console/login")) };
    if req.method == Method::POST && !req.form.get("csrf").is_some_and(|t| s.csrf_ok(console.key, t)) {
        return Err(error_page(
            console,
            Some(&s),
            StatusCode::FORBIDDEN,
            "This form has expired. Reload the page and try again.",
        ));
    }
    Ok(s)
}

fn frame<'a>(
    title: &'a str,
    crumbs: &'a [(String, String)],
    s: Option<&'a Session>,
    csrf: Option<&'a str>,
) -> Frame<'a> {
    Frame { title, crumbs, who: s.map(|s| s.token_name.as_str()), csrf }
}

pub(super) fn error_page(console: &Console<'_>, s: Option<&Session>, status: StatusCode, message: &str) -> Page {
    let csrf = s.map(|s| s.csrf(console.key));
    let body = format!(r#"<p class="error">{}</p><p><a href="/">Back to the start</a></p>"#, esc(message));
    Page::with_status(
        status,
        page(&frame(status.canonical_reason().unwrap_or("Error"), &[], s, csrf.as_deref()), &body),
    )
}

pub(super) fn not_found(console: &Console<'_>, s: Option<&Session>) -> Page {
    error_page(console, s, StatusCode::NOT_FOUND, "There is nothing here, or it is not yours to see.")
}

/// `/`: where a signed-in person belongs, or the sign-in form.
fn home(console: &Console<'_>, req: &Request<'_>) -> Page {
    match &req.session {
        Some(Session { org: Some(org), .. }) => Page::redirect(&format!("/console/orgs/{org}")),
        Some(_) => Page::redirect("/console/orgs"),
        // A printed link (the demo's) may carry the token to fill in: the
        // person still clicks to sign in, with a POST.
        None => sign_in_form(console, StatusCode::OK, None, req.query.get("token").map(String::as_str)),
    }
}

fn sign_in_form(_console: &Console<'_>, status: StatusCode, error: Option<&str>, token: Option<&str>) -> Page {
    let error = error.map(|e| format!(r#"<p class="error">{}</p>"#, esc(e))).unwrap_or_default();
    let token = esc(token.unwrap_or(""));
    let body = format!(
        r#"{error}<form method="post" action="/console/login" class="sign-in">
<label>API token <input type="password" name="token" value="{token}" autocomplete="off" required autofocus></label>
<button type="submit">Sign in</button></form>
<p class="hint">An organisation's API token opens that organisation; the operator token opens every one.</p>"#
    );
    Page::with_status(status, page(&frame("Sign in", &[], None, None), &body))
}

/// `POST /console/login`: a token in, a session cookie out.
fn login(console: &Console<'_>, req: &Request<'_>) -> Page {
    let token = req.form.get("token").map(|t| t.trim()).unwrap_or_default();
    let record = console.engine.store().token(&hash_secret(token)).ok().flatten();
    match record {
        Some(rec) if !token.is_empty() => {
            let to = rec.organisation_id.map_or_else(|| "/console/orgs".to_owned(), |o| format!("/console/orgs/{o}"));
            Page::redirect(&to).with_cookie(session::start(console.key, rec.organisation_id, &rec.id, console.secure))
        }
        _ => sign_in_form(console, StatusCode::UNAUTHORIZED, Some("That token is not valid."), None),
    }
}

/// `/console/orgs`: the operator picks an organisation.
fn organisations(console: &Console<'_>, s: &Session) -> Page {
    if let Some(org) = s.org {
        return Page::redirect(&format!("/console/orgs/{org}"));
    }
    let mut body = String::from(r#"<ul class="orgs">"#);
    for org in console.engine.store().orgs().unwrap_or_default() {
        let _ = write!(body, r#"<li><a href="/console/orgs/{}">{}</a></li>"#, org.id, esc(&org.name));
    }
    body.push_str("</ul>");
    let csrf = s.csrf(console.key);
    Page::html(page(&frame("Organisations", &[], Some(s), Some(&csrf)), &body))
}

pub(super) fn org_of(console: &Console<'_>, s: &Session, raw: &str) -> Result<(OrgId, String), Page> {
    let org: OrgId = raw.parse().map_err(|_| not_found(console, Some(s)))?;
    if !s.may(org) {
        return Err(not_found(console, Some(s)));
    }
    let rec = console.engine.store().org(org).ok().flatten().ok_or_else(|| not_found(console, Some(s)))?;
    Ok((org, rec.name))
}

/// `/console/orgs/{org}`: the devices, their connection and last activity,
/// searchable by name or serial number.
fn devices(console: &Console<'_>, req: &Request<'_>, s: &Session, raw: &str) -> Result<Page, Page> {
    let (org, name) = org_of(console, s, raw)?;
    let store = console.engine.store();
    let q = req.query.get("q").map(|q| q.trim().to_lowercase()).unwrap_or_default();
    let all = store.list_agents(org, usize::MAX).map_err(|_| not_found(console, Some(s)))?;
    let matching = all.iter().filter(|a| {
        q.is_empty()
            || a.name.to_lowercase().contains(&q)
            || a.serial_number.as_deref().is_some_and(|n| n.to_lowercase().contains(&q))
    });
    let mut rows = String::new();
    let mut shown = 0;
    for agent in matching.take(MAX_DEVICES) {
        shown += 1;
        let connection = aggregate(console, agent.id, ChannelName::from_static(well_known::CONNECTION));
        let status = connection.pointer("/status/status").and_then(Value::as_str).unwrap_or("unknown");
        let last =
            connection.pointer("/status/last_ping").and_then(Value::as_u64).map(time).unwrap_or_else(|| "—".into());
        let _ = write!(
            rows,
            r#"<tr><td><a href="/console/orgs/{org}/devices/{}">{}</a></td><td>{}</td><td><span class="status status-{}">{}</span></td><td>{}</td></tr>"#,
            agent.id,
            esc(&agent.name),
            esc(agent.serial_number.as_deref().unwrap_or("")),
            esc(&status.to_lowercase().replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
            esc(status),
            esc(&last),
        );
    }
    let body = format!(
        r#"<form method="get" class="search"><input type="search" name="q" value="{}" placeholder="Name or serial number"> <button type="submit">Search</button></form>
<p class="count">{shown} of {} devices · <a href="/console/orgs/{org}/apps">Apps and installations</a> · <a href="/console/orgs/{org}/dead-letters">Dead letters</a> · <a href="/console/orgs/{org}/ingestions">Ingestion endpoints</a> · <a href="/console/orgs/{org}/monitors">Monitors</a></p>
<table class="devices"><thead><tr><th>Device</th><th>Serial number</th><th>Connection</th><th>Last seen</th></tr></thead><tbody>{rows}</tbody></table>"#,
        esc(&q),
        all.len(),
    );
    let crumbs = org_crumbs(s, org, &name);
    let csrf = s.csrf(console.key);
    Ok(Page::html(page(&frame(&name, &crumbs, Some(s), Some(&csrf)), &body)))
}

pub(super) fn org_crumbs(s: &Session, org: OrgId, name: &str) -> Vec<(String, String)> {
    let mut crumbs = Vec::new();
    if s.org.is_none() {
        crumbs.push(("/console/orgs".to_owned(), "Organisations".to_owned()));
    }
    crumbs.push((format!("/console/orgs/{org}"), name.to_owned()));
    crumbs
}

/// A channel's aggregate data (`null` when it has none).
fn aggregate(console: &Console<'_>, agent: AgentId, name: ChannelName) -> Value {
    let channel = ChannelRef { agent_id: agent, name };
    console.engine.store().get_aggregate(&channel).ok().flatten().map(|a| a.data).unwrap_or(Value::Null)
}

fn time(ms: u64) -> String {
    crate::monitors::document::timestamp(ms)
}

/// `/console/orgs/{org}/devices/{agent}`: the device's UI, its channels
/// (messages newest first, the aggregate), tags and notifications.
fn device(console: &Console<'_>, req: &Request<'_>, s: &Session, raw_org: &str, raw_agent: &str) -> Result<Page, Page> {
    let (org, org_name, agent_id) = device_of(console, s, raw_org, raw_agent)?;
    let store = console.engine.store();
    let agent = store.agent(agent_id).ok().flatten().ok_or_else(|| not_found(console, Some(s)))?;
    let csrf = s.csrf(console.key);
    let base = format!("/console/orgs/{org}/devices/{agent_id}");
    // The live view starts where this page starts: the head is taken
    // *before* anything is read, so a commit landing while the page is
    // written is pushed (at worst twice), never skipped.
    console.monitors.expect_view(org);
    let live = format!("{base}/live?since={}", console.monitors.head().saturating_sub(1));
    let (tags, cmds) = (
        aggregate(console, agent_id, ChannelName::from_static(well_known::TAG_VALUES)),
        aggregate(console, agent_id, ChannelName::from_static(well_known::UI_CMDS)),
    );
    let ui_state = aggregate(console, agent_id, ChannelName::from_static(well_known::UI_STATE));
    let mut body = format!(r#"<section class="device-ui" data-live="{}" data-refresh><h2>Device</h2>"#, esc(&live));
    body.push_str(&render(&ui_state, &Bindings { tags: &tags, cmds: &cmds }, &format!("{base}/command"), &csrf));
    body.push_str("</section>");

    // Notifications, newest first.
    let notes = messages(console, agent_id, well_known::NOTIFICATIONS, None, 20);
    body.push_str(r#"<section class="notifications" data-refresh><h2>Notifications</h2>"#);
    if notes.is_empty() {
        body.push_str(r#"<p class="empty">None.</p>"#);
    }
    for m in &notes {
        let _ = write!(
            body,
            r#"<div class="notification"><time>{}</time> <strong>{}</strong> {}</div>"#,
            esc(&time(m.id.0.unix_ms())),
            esc(m.data.get("title").and_then(Value::as_str).unwrap_or("")),
            esc(m.data.get("message").and_then(Value::as_str).unwrap_or("")),
        );
    }
    body.push_str("</section>");

    // Tags, per app.
    body.push_str(r#"<section class="tags" data-refresh><h2>Tags</h2><table><thead><tr><th>App</th><th>Tag</th><th>Value</th></tr></thead><tbody>"#);
    for (app, values) in tags.as_object().into_iter().flatten() {
        for (tag, value) in values.as_object().into_iter().flatten() {
            let _ = write!(body, "<tr><td>{}</td><td>{}</td><td>{}</td></tr>", esc(app), esc(tag), esc(&plain(value)));
        }
    }
    body.push_str("</tbody></table></section>");

    // Channels; the chosen one's messages and aggregate.
    let channels = store.list_channels(agent_id).unwrap_or_default();
    body.push_str(r#"<section class="channels" data-refresh><h2>Channels</h2><nav class="channel-list">"#);
    for c in &channels {
        let _ = write!(body, r#"<a href="{base}?channel={}">{}</a> "#, url(c), esc(c));
    }
    body.push_str("</nav>");
    if let Some(name) = req.query.get("channel").and_then(|c| ChannelName::new(c.clone()).ok()) {
        let before = req.query.get("before").and_then(|b| b.parse::<MessageId>().ok());
        let list = messages(console, agent_id, name.as_str(), before, PAGE);
        let _ = write!(body, r#"<h3>{}</h3>"#, esc(name.as_str()));
        body.push_str(&super::chart::section(store, agent_id, &name, req.query, &base));
        let aggregate = pretty(&aggregate(console, agent_id, name.clone()));
        let _ = write!(body, r#"<h4>Aggregate</h4><pre class="json">{}</pre><h4>Messages</h4>"#, esc(&aggregate));
        body.push_str(r#"<table class="messages"><thead><tr><th>Time</th><th>Data</th></tr></thead><tbody>"#);
        for m in &list {
            let _ = write!(
                body,
                r#"<tr><td>{}</td><td><pre class="json">{}</pre></td></tr>"#,
                esc(&time(m.id.0.unix_ms())),
                esc(&pretty(&m.data))
            );
        }
        body.push_str("</tbody></table>");
        if list.len() == PAGE
            && let Some(last) = list.last()
        {
            let _ = write!(
                body,
                r#"<a class="older" href="{base}?channel={}&amp;before={}">Older</a>"#,
                url(name.as_str()),
                last.id
            );
        }
    }
    body.push_str("</section>");
    let mut crumbs = org_crumbs(s, org, &org_name);
    crumbs.push((base.clone(), agent.name.clone()));
    Ok(Page::html(page(&frame(&agent.name, &crumbs, Some(s), Some(&csrf)), &body)))
}

fn messages(
    console: &Console<'_>,
    agent: AgentId,
    channel: &str,
    before: Option<MessageId>,
    limit: usize,
) -> Vec<crate::model::Message> {
    let Ok(name) = ChannelName::new(channel.to_owned()) else { return Vec::new() };
    let channel = ChannelRef { agent_id: agent, name };
    console.engine.store().list_messages(&channel, before, limit).unwrap_or_default()
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

/// The organisation and agent named in a device URL, if the session may
/// see that organisation and the agent is in it.
pub fn device_of(
    console: &Console<'_>,
    s: &Session,
    raw_org: &str,
    raw_agent: &str,
) -> Result<(OrgId, String, AgentId), Page> {
    let (org, name) = org_of(console, s, raw_org)?;
    let agent: AgentId = raw_agent.parse().map_err(|_| not_found(console, Some(s)))?;
    if console.engine.store().agent_org(agent).ok().flatten() != Some(org) {
        return Err(not_found(console, Some(s)));
    }
    Ok((org, name, agent))
}

/// The organisation and agent of an installation whose live view the
/// session may open.
pub fn live_installation(
    console: &Console<'_>,
    s: &Session,
    raw_org: &str,
    raw_install: &str,
) -> Result<(OrgId, AgentId), Page> {
    let (org, _) = org_of(console, s, raw_org)?;
    let id: crate::model::InstallId = raw_install.parse().map_err(|_| not_found(console, Some(s)))?;
    let rec = console.engine.installation_record(id).ok().flatten().filter(|r| r.organisation_id == org);
    rec.map(|r| (org, r.agent_id)).ok_or_else(|| not_found(console, Some(s)))
}

/// `POST …/command`: a person's UI action, written as Doover's site does:
/// the value merged into `ui_cmds` (`{"cmds": {name: value}}`) and a
/// message on `ui_cmds` naming the app, the element and the value, so a
/// processor subscribed to `ui_cmds` runs.
async fn command(
    console: &Console<'_>,
    req: &Request<'_>,
    s: &Session,
    raw_org: &str,
    raw_agent: &str,
) -> Result<Page, Page> {
    let (org, _, agent) = device_of(console, s, raw_org, raw_agent)?;
    let field = |k: &str| req.form.get(k).cloned().unwrap_or_default();
    let (app, name, kind, raw) = (field("app"), field("name"), field("kind"), field("value"));
    let value = match kind.as_str() {
        "button" => json!(true),
        "bool" => json!(raw == "true"),
        "float" => match raw.trim().parse::<f64>() {
            Ok(n) => json!(n),
            Err(_) => {
                return Err(error_page(
                    console,
                    Some(s),
                    StatusCode::BAD_REQUEST,
                    &format!("{raw:?} is not a number."),
                ));
            }
        },
        _ => json!(raw),
    };
    let bad = |e: &dyn std::fmt::Display| {
        error_page(console, Some(s), StatusCode::BAD_REQUEST, &format!("The command was refused: {e}"))
    };
    let channel = ChannelRef { agent_id: agent, name: ChannelName::from_static(well_known::UI_CMDS) };
    console
        .engine
        .write_aggregate(channel.clone(), json!({ "cmds": { name.clone(): value.clone() } }), WriteMode::Merge)
        .await
        .map_err(|e| bad(&e))?;
    let message =
        json!({ "cmds": { name.clone(): value.clone() }, "app_key": app, "key": name, "value": value, "type": "log" });
    console.engine.publish_message(channel, agent, message).await.map_err(|e| bad(&e))?;
    Ok(Page::redirect(&format!("/console/orgs/{org}/devices/{agent}")))
}

//! The organisation's delivery pages: dead letters (redrive, delete),
//! ingestion endpoints (create, with the token shown once; delete) and
//! monitors with their status (reset, delete).

use std::fmt::Write as _;

use hyper::StatusCode;

use super::html::{Frame, esc, page};
use super::pages::{Console, error_page, not_found, org_crumbs, org_of};
use super::{Page, Request, Session};
use crate::model::{EventId, IngestionId, InstallId, OrgId};
use crate::monitors::document::timestamp;
use crate::tenants;

/// Dead letters shown at most.
const MAX_LETTERS: usize = 200;

fn csrf_field(csrf: &str) -> String {
    format!(r#"<input type="hidden" name="csrf" value="{}">"#, esc(csrf))
}

fn button(action: &str, csrf: &str, label: &str, confirm: bool) -> String {
    let confirm = if confirm { r#" data-confirm="true""# } else { "" };
    format!(
        r#"<form method="post" action="{}" class="inline"{confirm}>{}<button type="submit">{}</button></form>"#,
        esc(action),
        csrf_field(csrf),
        esc(label)
    )
}

fn framed(console: &Console<'_>, s: &Session, org: OrgId, org_name: &str, title: &str, path: &str, body: &str) -> Page {
    let csrf = s.csrf(console.key);
    let mut crumbs = org_crumbs(s, org, org_name);
    crumbs.push((format!("/console/orgs/{org}/{path}"), title.to_owned()));
    Page::html(page(&Frame { title, crumbs: &crumbs, who: Some(&s.token_name), csrf: Some(&csrf) }, body))
}

/// `/console/orgs/{org}/dead-letters`.
pub fn dead_letters(console: &Console<'_>, s: &Session, raw_org: &str) -> Result<Page, Page> {
    let (org, name) = org_of(console, s, raw_org)?;
    let csrf = s.csrf(console.key);
    let store = console.engine.store();
    let letters = store.dead_letters_of(org, MAX_LETTERS).unwrap_or_default();
    let mut body = String::from(
        r#"<table class="dead-letters"><thead><tr><th>Given up</th><th>Event</th><th>Installation</th><th>Attempt</th><th>Reason</th><th></th></tr></thead><tbody>"#,
    );
    if letters.is_empty() {
        body.push_str(r#"<tr><td colspan="6" class="empty">None.</td></tr>"#);
    }
    for d in &letters {
        let install = store
            .install(d.event.install_id)
            .ok()
            .flatten()
            .map_or_else(|| d.event.install_id.to_string(), |r| r.display_name);
        let base = format!("/console/orgs/{org}/dead-letters/{}", d.event.id);
        let _ = write!(
            body,
            "<tr><td>{}</td><td>{} <small>{}</small></td><td>{}</td><td>{}</td><td>{}</td><td>{} {}</td></tr>",
            esc(&timestamp(d.dead_ms)),
            esc(&d.event.event.op),
            d.event.id,
            esc(&install),
            d.event.attempt,
            esc(&d.reason),
            button(&format!("{base}/redrive"), &csrf, "Redrive", false),
            button(&format!("{base}/delete"), &csrf, "Delete", true),
        );
    }
    body.push_str("</tbody></table>");
    // Queued events this version could not read, set aside with their bytes.
    let unreadable = store.unreadable_events(org, MAX_LETTERS).unwrap_or_default();
    if !unreadable.is_empty() {
        body.push_str(
            r#"<h2>Set aside: unreadable by this version</h2><table class="unreadable"><thead><tr><th>Set aside</th><th>Event</th><th>Installation</th><th>Reason</th></tr></thead><tbody>"#,
        );
        for u in &unreadable {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(&timestamp(u.set_aside_ms)),
                u.event_id,
                u.install_id,
                esc(&u.reason),
            );
        }
        body.push_str("</tbody></table>");
    }
    Ok(framed(console, s, org, &name, "Dead letters", "dead-letters", &body))
}

/// `POST /console/orgs/{org}/dead-letters/{event}/{redrive|delete}`.
pub async fn dead_letter_action(
    console: &Console<'_>,
    s: &Session,
    raw_org: &str,
    raw_id: &str,
    redrive: bool,
) -> Result<Page, Page> {
    let (org, _) = org_of(console, s, raw_org)?;
    let id: EventId = raw_id.parse().map_err(|_| not_found(console, Some(s)))?;
    let store = console.engine.store();
    if store.dead_letter_of(org, id).ok().flatten().is_none() {
        return Err(not_found(console, Some(s)));
    }
    let failed =
        |e: &dyn std::fmt::Display| error_page(console, Some(s), StatusCode::SERVICE_UNAVAILABLE, &e.to_string());
    if redrive {
        console.engine.redrive(org, id).await.map_err(|e| failed(&e))?;
    } else {
        let delete = move |store: &crate::store::Store| Ok(store.delete_dead_letter(org, id)?);
        console.engine.administer(org, delete).await.map_err(|e| failed(&e))?;
    }
    Ok(Page::redirect(&format!("/console/orgs/{org}/dead-letters")))
}

/// `/console/orgs/{org}/ingestions`.
pub fn ingestions(console: &Console<'_>, s: &Session, raw_org: &str) -> Result<Page, Page> {
    let (org, name) = org_of(console, s, raw_org)?;
    Ok(framed(console, s, org, &name, "Ingestion endpoints", "ingestions", &ingestion_body(console, s, org, None)))
}

fn ingestion_body(console: &Console<'_>, s: &Session, org: OrgId, created: Option<String>) -> String {
    let csrf = s.csrf(console.key);
    let store = console.engine.store();
    let mut body = created.unwrap_or_default();
    body.push_str(r#"<table class="ingestions"><thead><tr><th>Endpoint</th><th>Installation</th><th>Checks</th><th>Rate</th><th></th></tr></thead><tbody>"#);
    let installs: Vec<_> =
        store.installs().unwrap_or_default().into_iter().filter(|r| r.organisation_id == org).collect();
    for r in store.ingestions().unwrap_or_default().into_iter().filter(|r| r.organisation_id == org) {
        let install = installs
            .iter()
            .find(|i| i.id == r.install_id)
            .map_or_else(|| r.install_id.to_string(), |i| i.display_name.clone());
        let mut checks = vec!["token"];
        if r.hmac_secret.is_some() {
            checks.push("HMAC");
        }
        if r.webhook_secret.is_some() {
            checks.push("Standard Webhooks");
        }
        if !r.allow_cidrs.is_empty() {
            checks.push("CIDR");
        }
        let action = format!("/console/orgs/{org}/ingestions/{}/delete", r.id);
        let _ = write!(
            body,
            "<tr><td><code>{}/v1/ingest/{}</code></td><td>{}</td><td>{}</td><td>{}/s</td><td>{}</td></tr>",
            esc(console.public_url),
            r.id,
            esc(&install),
            checks.join(", "),
            r.rate_per_s,
            button(&action, &csrf, "Delete", true),
        );
    }
    body.push_str("</tbody></table>");
    let _ = write!(
        body,
        r#"<section><h2>New endpoint</h2><form method="post" action="/console/orgs/{org}/ingestions">{}<label>Installation <select name="install">"#,
        csrf_field(&csrf)
    );
    for i in &installs {
        let _ = write!(body, r#"<option value="{}">{}</option>"#, i.id, esc(&i.display_name));
    }
    let _ = write!(
        body,
        r#"</select></label> <label>Requests per second <input type="number" name="rate" min="1" max="{}" value="{}"></label> <button type="submit">Create</button></form></section>"#,
        console.max_ingest_rate,
        tenants::DEFAULT_RATE.min(console.max_ingest_rate),
    );
    body
}

/// `POST /console/orgs/{org}/ingestions`: the token is shown once.
pub async fn create_ingestion(
    console: &Console<'_>,
    req: &Request<'_>,
    s: &Session,
    raw_org: &str,
) -> Result<Page, Page> {
    let (org, name) = org_of(console, s, raw_org)?;
    let refused = |m: String| error_page(console, Some(s), StatusCode::BAD_REQUEST, &m);
    let install: InstallId = req
        .form
        .get("install")
        .and_then(|i| i.parse().ok())
        .ok_or_else(|| refused("Choose an installation.".into()))?;
    let mine = console.engine.installation_record(install).ok().flatten().is_some_and(|r| r.organisation_id == org);
    if !mine {
        return Err(not_found(console, Some(s)));
    }
    let rate = req.form.get("rate").and_then(|r| r.parse().ok());
    let token = tenants::new_secret("pdi_").map_err(|e| refused(e.to_string()))?;
    let settings = tenants::IngestionSettings {
        allow_cidrs: Vec::new(),
        hmac_secret: None,
        webhook_secret: None,
        rate_per_s: rate,
        max_body_bytes: None,
    };
    let owner = tenants::IngestionOwner {
        id: IngestionId::generate(),
        organisation_id: org,
        install_id: install,
        token: token.0.clone(),
        mini_token: None,
    };
    let max_rate = console.max_ingest_rate;
    // On the writer: its token is shown once, so only once it is durable.
    let add = move |store: &crate::store::Store| tenants::add_ingestion(store, settings, owner, max_rate);
    let rec = console.engine.administer(org, add).await.map_err(|e| match e {
        tenants::AdminError::Store(e) => error_page(console, Some(s), StatusCode::SERVICE_UNAVAILABLE, &e.to_string()),
        e => refused(e.to_string()),
    })?;
    let created = format!(
        r#"<section class="created"><p>Endpoint <code>{}/v1/ingest/{}</code> created. Its token is shown this once:</p><p><code class="secret">{}</code></p></section>"#,
        esc(console.public_url),
        rec.id,
        esc(&token.0)
    );
    Ok(framed(
        console,
        s,
        org,
        &name,
        "Ingestion endpoints",
        "ingestions",
        &ingestion_body(console, s, org, Some(created)),
    ))
}

/// `POST /console/orgs/{org}/ingestions/{id}/delete`.
pub async fn delete_ingestion(console: &Console<'_>, s: &Session, raw_org: &str, raw_id: &str) -> Result<Page, Page> {
    let (org, _) = org_of(console, s, raw_org)?;
    let id: IngestionId = raw_id.parse().map_err(|_| not_found(console, Some(s)))?;
    if console.engine.store().ingestion(id).ok().flatten().is_none_or(|r| r.organisation_id != org) {
        return Err(not_found(console, Some(s)));
    }
    let deleted = console.engine.administer(org, move |store| Ok(store.delete_ingestion(id)?)).await;
    deleted.map_err(|e| error_page(console, Some(s), StatusCode::SERVICE_UNAVAILABLE, &e.to_string()))?;
    Ok(Page::redirect(&format!("/console/orgs/{org}/ingestions")))
}

/// `/console/orgs/{org}/monitors`: each monitor's status and delivery.
pub fn monitors(console: &Console<'_>, s: &Session, raw_org: &str) -> Result<Page, Page> {
    let (org, name) = org_of(console, s, raw_org)?;
    let csrf = s.csrf(console.key);
    let mut body = String::from(
        r#"<table class="monitors"><thead><tr><th>Monitor</th><th>Topics</th><th>Type</th><th>Status</th><th>Last connect</th><th>Last sent</th><th>Batches</th><th></th></tr></thead><tbody>"#,
    );
    let list = console.monitors.list(org).unwrap_or_default();
    if list.is_empty() {
        body.push_str(
            r#"<tr><td colspan="8" class="empty">None. Create monitors with the API (docs/monitors.md).</td></tr>"#,
        );
    }
    for (rec, state) in list {
        let base = format!("/console/orgs/{org}/monitors/{}", rec.id);
        let _ = write!(
            body,
            r#"<tr><td>{}<br><small>{}</small></td><td><code>{}</code></td><td>{}</td><td><span class="status status-{}">{}</span></td><td>{}</td><td>{}</td><td>{} delivered, {} failed</td><td>{} {}</td></tr>"#,
            rec.id,
            esc(rec.spec.description.as_deref().unwrap_or("")),
            esc(&rec.spec.topic),
            rec.spec.transport.name(),
            state.status.name().to_ascii_lowercase(),
            state.status.name(),
            state.last_connect_ms.map(timestamp).unwrap_or_else(|| "—".into()),
            state.last_sent_ms.map(timestamp).unwrap_or_else(|| "—".into()),
            state.delivered,
            state.failed,
            button(&format!("{base}/reset"), &csrf, "Reset", false),
            button(&format!("{base}/delete"), &csrf, "Delete", true),
        );
    }
    body.push_str("</tbody></table>");
    Ok(framed(console, s, org, &name, "Monitors", "monitors", &body))
}

/// `POST /console/orgs/{org}/monitors/{id}/{reset|delete}`.
pub async fn monitor_action(
    console: &Console<'_>,
    s: &Session,
    raw_org: &str,
    raw_id: &str,
    reset: bool,
) -> Result<Page, Page> {
    let (org, _) = org_of(console, s, raw_org)?;
    let id: u32 = raw_id.parse().map_err(|_| not_found(console, Some(s)))?;
    let done =
        if reset { console.monitors.reset(org, id).await.map(|_| ()) } else { console.monitors.delete(org, id).await };
    match done {
        Ok(()) => Ok(Page::redirect(&format!("/console/orgs/{org}/monitors"))),
        Err(crate::monitors::MonitorError::NotFound(_)) => Err(not_found(console, Some(s))),
        Err(e) => Err(error_page(console, Some(s), StatusCode::SERVICE_UNAVAILABLE, &e.to_string())),
    }
}

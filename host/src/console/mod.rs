//! The web console: server-rendered pages at `/` for a person to see
//! every device's UI, data and apps, and act on them.
//!
//! - [`session`]: sign-in with an organisation (or the operator) token, a
//!   signed `HttpOnly; SameSite=Strict` cookie, a CSRF token per session.
//! - [`html`]: escaping and the page frame.
//! - [`ui`]: the device UI rendered from `ui_state` (pydoover's elements).
//! - `apps`: apps, installing with a form generated from the app's JSON
//!   Schema, installations' invocations and logs.
//! - `admin`: dead letters, ingestion endpoints, monitors.
//! - `chart`: a channel's numeric field over time, as server-drawn SVG.
//! - [`pages`]: the pages and the actions they post.
//!
//! Every answer carries a strict Content-Security-Policy (scripts and
//! styles from the console's own embedded assets only), and everything a
//! user or an app wrote is escaped. The assets are in the binary: no CDN,
//! no network at run time.

mod admin;
mod apps;
mod chart;
pub mod html;
pub mod pages;
pub mod session;
pub mod ui;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
use hyper::{Method, StatusCode};

pub use session::Session;

/// Largest form a console page posts.
pub const MAX_FORM: usize = 64 * 1024;

/// The Content-Security-Policy of every console answer: nothing but the
/// console's own assets, no inline script or style, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("static/console.css");
const JS: &str = include_str!("static/console.js");

/// Whether `path` is the console's (everything that is not the API).
pub fn owns(path: &str) -> bool {
    path == "/" || path == "/console" || path.starts_with("/console/")
}

/// An answer of the console.
pub struct Page {
    status: StatusCode,
    body: String,
    content_type: &'static str,
    headers: Vec<(hyper::header::HeaderName, String)>,
}

impl Page {
    /// 200 with an HTML page.
    pub fn html(body: String) -> Page {
        Page::with_status(StatusCode::OK, body)
    }

    /// `status` with an HTML page.
    pub fn with_status(status: StatusCode, body: String) -> Page {
        Page { status, body, content_type: "text/html; charset=utf-8", headers: Vec::new() }
    }

    /// 303 to `location`.
    pub fn redirect(location: &str) -> Page {
        let mut page = Page::with_status(StatusCode::SEE_OTHER, String::new());
        page.headers.push((hyper::header::LOCATION, location.to_owned()));
        page
    }

    /// 101 to a WebSocket with the handshake's accept key.
    pub fn switching(accept: String) -> Page {
        let mut page = Page::with_status(StatusCode::SWITCHING_PROTOCOLS, String::new());
        page.headers.push((hyper::header::UPGRADE, "websocket".into()));
        page.headers.push((hyper::header::CONNECTION, "Upgrade".into()));
        page.headers.push((hyper::header::SEC_WEBSOCKET_ACCEPT, accept));
        page
    }

    /// With a `Set-Cookie`.
    pub fn with_cookie(mut self, cookie: String) -> Page {
        self.headers.push((hyper::header::SET_COOKIE, cookie));
        self
    }

    /// The response, with the console's security headers.
    pub fn into_response(self) -> hyper::Response<Full<Bytes>> {
        let mut r = hyper::Response::new(Full::new(Bytes::from(self.body)));
        *r.status_mut() = self.status;
        let h = r.headers_mut();
        h.insert(CONTENT_TYPE, HeaderValue::from_static(self.content_type));
        h.insert("content-security-policy", HeaderValue::from_static(CSP));
        h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
        h.insert("x-frame-options", HeaderValue::from_static("DENY"));
        h.insert("referrer-policy", HeaderValue::from_static("same-origin"));
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        for (name, value) in self.headers {
            if let Ok(value) = HeaderValue::from_str(&value) {
                h.append(name, value);
            }
        }
        r
    }
}

/// The embedded assets.
pub fn asset(path: &str) -> Option<Page> {
    let (body, content_type) = match path {
        "/console/static/console.css" => (CSS, "text/css; charset=utf-8"),
        "/console/static/console.js" => (JS, "text/javascript; charset=utf-8"),
        _ => return None,
    };
    Some(Page { status: StatusCode::OK, body: body.to_owned(), content_type, headers: Vec::new() })
}

/// What a console request is: its method, path and query, the session
/// (if signed in) and, for a POST, the form.
pub struct Request<'a> {
    /// Method.
    pub method: &'a Method,
    /// Path.
    pub path: &'a str,
    /// Query parameters.
    pub query: &'a std::collections::BTreeMap<String, String>,
    /// The signed-in session.
    pub session: Option<Session>,
    /// A POST's form fields.
    pub form: std::collections::BTreeMap<String, String>,
}

pub use pages::handle;

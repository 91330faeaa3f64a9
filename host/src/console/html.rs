//! HTML building blocks: escaping (everything a user or an app wrote goes
//! through [`esc`]) and the page frame.

use std::fmt::Write as _;

/// Escape text for HTML element content and quoted attribute values.
pub use crate::model::escape_markup as esc;

/// Percent-encode a path segment or query value.
pub fn url(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => out.push(char::from(b)),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// What a page shows in its frame.
pub struct Frame<'a> {
    /// The title (text).
    pub title: &'a str,
    /// Breadcrumb links `(href, text)`, already safe hrefs.
    pub crumbs: &'a [(String, String)],
    /// The signed-in principal's label, if any.
    pub who: Option<&'a str>,
    /// The CSRF token for the sign-out form.
    pub csrf: Option<&'a str>,
}

/// A whole page around `body` (already HTML).
pub fn page(frame: &Frame<'_>, body: &str) -> String {
    let mut crumbs = String::new();
    for (href, text) in frame.crumbs {
        let _ = write!(crumbs, r#"<a href="{}">{}</a> / "#, esc(href), esc(text));
    }
    let session = match (frame.who, frame.csrf) {
        (Some(who), Some(csrf)) => format!(
            r#"<span class="who">{}</span><form method="post" action="/console/logout" class="inline"><input type="hidden" name="csrf" value="{}"><button type="submit">Sign out</button></form>"#,
            esc(who),
            esc(csrf)
        ),
        _ => String::new(),
    };
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title} · Paddock</title><link rel="stylesheet" href="/console/static/console.css"><script src="/console/static/console.js" defer></script></head>
<body><header><a class="brand" href="/">Paddock</a><nav>{crumbs}</nav><div class="session">{session}</div></header>
<main><h1>{title}</h1>
{body}
</main></body></html>"#,
        title = esc(frame.title),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped_and_urls_encoded() {
        assert_eq!(
            esc(r#"<script>alert("x")</script> & 'y'"#),
            "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt; &amp; &#39;y&#39;"
        );
        assert_eq!(url("a b/<c>"), "a%20b%2F%3Cc%3E");
    }
}

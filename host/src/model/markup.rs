//! Escaping text for HTML and XML: the console's pages and the monitors'
//! XML batches write user- and app-written strings through this one
//! function.

/// Escape `s` for element content and quoted attribute values of HTML and
/// XML alike (`&#39;` is valid in both), dropping the control characters
/// XML 1.0 does not allow at all.
pub fn escape_markup(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c if (c as u32) < 0x20 && !matches!(c, '\t' | '\n' | '\r') => {}
            c => out.push(c),
        }
    }
    out
}

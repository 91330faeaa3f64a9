//! A time-series chart of one numeric field of a channel's messages, drawn
//! on the server as SVG (no script, no library): the range picker and the
//! field picker are links.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::html::{esc, url};
use crate::model::{AgentId, ChannelName, ChannelRef, Message};
use crate::store::Store;

/// The ranges offered, `(query value, label, milliseconds)`.
const RANGES: [(&str, &str, u64); 4] = [
    ("1h", "1 hour", 3_600_000),
    ("6h", "6 hours", 21_600_000),
    ("24h", "24 hours", 86_400_000),
    ("7d", "7 days", 604_800_000),
];
/// Most messages read for one chart.
const MAX_POINTS: usize = 2000;
/// The drawing's size and margin, in SVG units.
const WIDTH: f64 = 720.0;
const HEIGHT: f64 = 220.0;
const PAD: f64 = 36.0;

/// The chart section for `channel` (nothing if its messages have no
/// numeric field). `base` is the device page's URL.
pub fn section(
    store: &Store,
    agent: AgentId,
    channel: &ChannelName,
    query: &BTreeMap<String, String>,
    base: &str,
) -> String {
    let channel_ref = ChannelRef { agent_id: agent, name: channel.clone() };
    let messages = store.list_messages(&channel_ref, None, MAX_POINTS).unwrap_or_default();
    let fields = numeric_fields(&messages);
    let Some(default) = fields.first() else { return String::new() };
    let field = query.get("field").filter(|f| fields.contains(f)).unwrap_or(default);
    let range = RANGES.iter().find(|r| query.get("range").is_some_and(|q| q == r.0)).unwrap_or(&RANGES[0]);
    let now = crate::model::now_ms();
    let since = now.saturating_sub(range.2);
    let mut points: Vec<(u64, f64)> = messages
        .iter()
        .filter_map(|m| Some((m.id.0.unix_ms(), m.data.get(field.as_str())?.as_f64()?)))
        .filter(|(t, _)| *t >= since)
        .collect();
    points.sort_by_key(|p| p.0);
    let link =
        |f: &str, r: &str| format!("{base}?channel={}&amp;field={}&amp;range={r}", url(channel.as_str()), url(f));
    let mut out = String::from(r#"<div class="chart"><div class="pickers">"#);
    for f in &fields {
        let class = if f == field { r#" class="on""# } else { "" };
        let _ = write!(out, r#"<a{class} href="{}">{}</a> "#, link(f, range.0), esc(f));
    }
    out.push_str(" · ");
    for r in RANGES {
        let class = if r.0 == range.0 { r#" class="on""# } else { "" };
        let _ = write!(out, r#"<a{class} href="{}">{}</a> "#, link(field, r.0), r.1);
    }
    out.push_str("</div>");
    out.push_str(&svg(&points, since, now, field));
    out.push_str("</div>");
    out
}

/// Top-level numeric fields of the newest messages, in first-seen order.
fn numeric_fields(messages: &[Message]) -> Vec<String> {
    let mut fields: Vec<String> = Vec::new();
    for m in messages.iter().take(50) {
        for (k, v) in m.data.as_object().into_iter().flatten() {
            if v.is_number() && !fields.contains(k) {
                fields.push(k.clone());
            }
        }
    }
    fields
}

fn svg(points: &[(u64, f64)], since: u64, now: u64, field: &str) -> String {
    if points.is_empty() {
        return format!(r#"<p class="empty">No {} values in this range.</p>"#, esc(field));
    }
    let (lo, hi) = points.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    let (lo, hi) = if (hi - lo).abs() < f64::EPSILON { (lo - 1.0, hi + 1.0) } else { (lo, hi) };
    let span = (now - since).max(1) as f64;
    let x = |t: u64| PAD + (t.saturating_sub(since) as f64 / span) * (WIDTH - 2.0 * PAD);
    let y = |v: f64| HEIGHT - PAD - (v - lo) / (hi - lo) * (HEIGHT - 2.0 * PAD);
    let mut path = String::new();
    for (t, v) in points {
        let _ = write!(path, "{:.1},{:.1} ", x(*t), y(*v));
    }
    let last = points.last().map_or(0.0, |p| p.1);
    format!(
        r#"<svg class="series" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{field} over time" data-points="{n}">
<line x1="{PAD}" y1="{b}" x2="{r}" y2="{b}" class="axis"/><line x1="{PAD}" y1="{PAD}" x2="{PAD}" y2="{b}" class="axis"/>
<text x="4" y="{PAD}" class="tick">{hi}</text><text x="4" y="{b}" class="tick">{lo}</text>
<polyline points="{path}" class="line"/>
<text x="{r}" y="{top}" class="tick" text-anchor="end">{field}: {last}</text></svg>"#,
        field = esc(field),
        n = points.len(),
        b = HEIGHT - PAD,
        r = WIDTH - PAD,
        top = PAD - 10.0,
        hi = round(hi),
        lo = round(lo),
        last = round(last),
        path = path.trim_end(),
    )
}

fn round(v: f64) -> String {
    let s = format!("{v:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_is_a_polyline_scaled_to_its_range() {
        let out = svg(&[(1000, 10.0), (2000, 20.0), (3000, 15.0)], 0, 4000, "level");
        assert!(out.contains(r#"data-points="3""#));
        assert!(out.contains("<text x=\"4\" y=\"36\" class=\"tick\">20</text>"), "{out}");
        // x: 36 + t/4000 * 648; y: 184 - (v-10)/10 * 148.
        assert!(out.contains("198.0,184.0 360.0,36.0 522.0,110.0"), "{out}");
        assert!(svg(&[], 0, 1, "<b>").contains("No &lt;b&gt; values"));
    }
}

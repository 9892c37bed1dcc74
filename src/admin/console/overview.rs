//! The overview (`/ui/overview`): calls, errors, latency, tokens and
//! violations over a time range, with server-rendered SVG charts.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::{Duration, DurationRound, Utc};

use super::events::store_error;
use super::filter::PRESETS;
use super::html::{esc, time, url_value, Section};
use super::{html_page, message_page, ConsoleState};
use crate::store::browse::{Overview, OverviewQuery};

/// `GET /ui/overview?range=1h|24h|7d` (24 h when absent).
pub async fn page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let reader = match state.reader(&headers) {
        Ok(reader) => reader,
        Err(detour) => return detour.into_response(),
    };
    let range = form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "range")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "24h".to_owned());
    let Some((key, label, secs)) = PRESETS.iter().find(|(k, _, _)| *k == range) else {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Range not understood",
            "`range`: range must be 1h, 24h or 7d",
        );
    };
    let end = Utc::now();
    // Ranges start on a whole minute, as per-minute rollups count them.
    let start = end - Duration::seconds(*secs);
    let start = start.duration_trunc(Duration::minutes(1)).unwrap_or(start);
    let query = OverviewQuery { start, end };
    let overview = match state.admin.store.overview(&query).await {
        Ok(o) => o,
        Err(error) => return store_error(error),
    };
    let body = render(key, label, &overview);
    html_page("Overview", Section::Overview, &reader, &body)
}

fn render(range: &str, label: &str, o: &Overview) -> String {
    let mut out = String::with_capacity(16 * 1024);
    out.push_str("<form method=\"get\" action=\"/ui/overview\" class=\"filters\" aria-label=\"Time range\">\
                  <div class=\"field\"><label for=\"range\">Time range</label><select id=\"range\" name=\"range\">");
    for (key, text, _) in PRESETS {
        let selected = if key == range { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{key}\"{selected}>{text}</option>");
    }
    out.push_str(
        "</select></div><div class=\"actions\"><button type=\"submit\">Show</button></div></form>",
    );
    let minutes = (o.bucket_secs as f64 / 60.0).max(1.0);
    let per_minute = if o.calls_by_bucket.is_empty() {
        0.0
    } else {
        o.calls as f64 / (o.calls_by_bucket.len() as f64 * minutes)
    };
    let ms = |v: Option<f64>| v.map_or_else(|| "–".to_owned(), |v| format!("{v:.0} ms"));
    let _ = write!(
        out,
        "<h2>{}</h2><dl class=\"tiles\">\
         <div><dt>Calls</dt><dd id=\"calls\">{}</dd></div>\
         <div><dt>Calls per minute</dt><dd>{per_minute:.2}</dd></div>\
         <div><dt>Error rate</dt><dd id=\"error-rate\">{:.1} %</dd></div>\
         <div><dt>Latency p50</dt><dd>{}</dd></div>\
         <div><dt>Latency p99</dt><dd>{}</dd></div>\
         <div><dt>Violations</dt><dd id=\"violations\">{}</dd></div></dl>",
        esc(label),
        o.calls,
        o.error_rate() * 100.0,
        ms(o.latency_p50_ms),
        ms(o.latency_p99_ms),
        o.violations_by_policy.values().sum::<u64>(),
    );
    if o.scan_limited {
        out.push_str("<p class=\"note\">This store has no rollups: the numbers cover the newest 20,000 calls and violations of the range.</p>");
    }
    let bar_label = if o.bucket_secs == 60 {
        "each bar one minute".to_owned()
    } else {
        format!("each bar {} minutes", o.bucket_secs / 60)
    };
    let _ = write!(
        out,
        "<section aria-labelledby=\"cpm-h\"><h2 id=\"cpm-h\">Calls over time ({bar_label})</h2>{}</section>",
        column_chart("chart-calls", "Calls over time", &o.calls_by_bucket)
    );
    out.push_str("<div class=\"charts\">");
    for (id, title, data) in [
        ("chart-tokens", "Tokens by model", &o.tokens_by_model),
        (
            "chart-policy",
            "Violations by policy",
            &o.violations_by_policy,
        ),
        (
            "chart-severity",
            "Violations by severity",
            &o.violations_by_severity,
        ),
    ] {
        let _ = write!(
            out,
            "<section aria-labelledby=\"{id}-h\"><h2 id=\"{id}-h\">{title}</h2>{}</section>",
            bar_chart(id, title, data)
        );
    }
    out.push_str(
        "</div><section aria-labelledby=\"recent-h\"><h2 id=\"recent-h\">Recent violations</h2>",
    );
    if o.recent_violations.is_empty() {
        out.push_str("<p>No violation in this range.</p>");
    } else {
        out.push_str(
            "<table><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Policy</th>\
             <th scope=\"col\">Severity</th><th scope=\"col\">Call</th></tr></thead><tbody>",
        );
        for v in &o.recent_violations {
            let call = match &v.request_id {
                Some(id) => format!(
                    "<a href=\"/ui/calls/{}\">{}</a>",
                    esc(&url_value(id)),
                    esc(id)
                ),
                None => String::new(),
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{call}</td></tr>",
                time(&v.timestamp),
                esc(&v.policy),
                esc(&v.severity)
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");
    out
}

/// Vertical bars, one per value, scaled to the largest; each with a
/// tooltip title, and the numbers as a table for screen readers.
pub fn column_chart(id: &str, title: &str, values: &[u64]) -> String {
    const W: f64 = 720.0;
    const H: f64 = 90.0;
    let max = values.iter().copied().max().unwrap_or(0).max(1) as f64;
    let n = values.len().max(1) as f64;
    let bar = W / n;
    let mut out = format!(
        "<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {W} {}\" role=\"img\" aria-label=\"{}\">",
        H + 20.0,
        esc(title)
    );
    for (i, v) in values.iter().enumerate() {
        let h = (*v as f64 / max) * H;
        let _ = write!(
            out,
            "<rect class=\"bar\" x=\"{:.2}\" y=\"{:.2}\" width=\"{:.2}\" height=\"{h:.2}\"><title>{v}</title></rect>",
            i as f64 * bar,
            H - h,
            (bar - 1.0).max(0.5),
        );
    }
    let _ = write!(
        out,
        "<line class=\"axis\" x1=\"0\" y1=\"{H}\" x2=\"{W}\" y2=\"{H}\"/>\
         <text class=\"label\" x=\"0\" y=\"{}\">max {}</text></svg>",
        H + 16.0,
        max as u64
    );
    out
}

/// Horizontal bars with their labels and values.
pub fn bar_chart(id: &str, title: &str, data: &BTreeMap<String, u64>) -> String {
    if data.is_empty() {
        return format!("<p id=\"{id}\" class=\"empty-chart\">Nothing in this range.</p>");
    }
    const W: f64 = 360.0;
    const ROW: f64 = 22.0;
    const LABEL: f64 = 140.0;
    let mut rows: Vec<(&String, &u64)> = data.iter().collect();
    rows.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    rows.truncate(12);
    let max = rows.first().map_or(1, |(_, v)| **v).max(1) as f64;
    let mut out = format!(
        "<svg id=\"{id}\" class=\"chart\" viewBox=\"0 0 {W} {}\" role=\"img\" aria-label=\"{}\">",
        rows.len() as f64 * ROW,
        esc(title)
    );
    for (i, (label, value)) in rows.iter().enumerate() {
        let y = i as f64 * ROW;
        let w = (**value as f64 / max) * (W - LABEL - 60.0);
        let shown: String = if label.is_empty() {
            "(none)".to_owned()
        } else {
            label.chars().take(20).collect()
        };
        let _ = write!(
            out,
            "<text class=\"label\" x=\"0\" y=\"{:.1}\">{}</text>\
             <rect class=\"bar\" x=\"{LABEL}\" y=\"{:.1}\" width=\"{w:.1}\" height=\"{:.1}\"><title>{}: {value}</title></rect>\
             <text class=\"label\" x=\"{:.1}\" y=\"{:.1}\">{value}</text>",
            y + 15.0,
            esc(&shown),
            y + 3.0,
            ROW - 6.0,
            esc(label),
            LABEL + w + 4.0,
            y + 15.0,
        );
    }
    out.push_str("</svg>");
    out
}

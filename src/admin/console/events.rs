//! The events page (`/ui/events`): newest first, filtered, paged on `seq`,
//! and its export (`/ui/export`), which streams exactly the filtered set
//! the way `/api/export` does.

use std::fmt::Write as _;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use futures_util::{StreamExt, TryStreamExt};
use serde_json::Value;

use super::filter::{ConsoleFilter, FilterError, PRESETS};
use super::html::{esc, marked, time, url_value, Section};
use super::{html_page, message_page, ConsoleState};
use crate::admin::export::{self, Format};
use crate::event::{EventRecord, EventType, Level};
use crate::store::browse::{SearchPage, SearchQuery, SCAN_LIMIT};
use crate::store::{scope_filter, EventFilter, EventQuery, RecordStream, SharedStore, StoreError};

/// Rows on one page.
pub const PAGE_ROWS: usize = 50;

/// The event types offered in the type filter.
const TYPES: [EventType; 10] = [
    EventType::Request,
    EventType::Response,
    EventType::ComplianceCheck,
    EventType::ComplianceViolation,
    EventType::Error,
    EventType::Authentication,
    EventType::Configuration,
    EventType::System,
    EventType::Custom,
    EventType::Checkpoint,
];

/// Records per search page read by an export.
const EXPORT_PAGE: usize = 1000;

/// Every match of `search`, newest first, read page by page.
fn searched(store: SharedStore, search: SearchQuery) -> RecordStream {
    futures_util::stream::try_unfold(Some(search), move |next| {
        let store = store.clone();
        async move {
            let Some(search) = next else {
                return Ok::<_, crate::store::StoreError>(None);
            };
            let page = store.search(&search).await?;
            let next = page.next_before_seq.map(|before| SearchQuery {
                before_seq: Some(before),
                ..search
            });
            Ok(Some((
                futures_util::stream::iter(page.records.into_iter().map(Ok)),
                next,
            )))
        }
    })
    .try_flatten()
    .boxed()
}

/// `GET /ui/events`.
pub async fn page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    let reader = match state.reader(&headers) {
        Ok(reader) => reader,
        Err(detour) => return detour.into_response(),
    };
    let raw = raw.unwrap_or_default();
    let filter = match ConsoleFilter::parse(&raw, chrono::Utc::now()) {
        Ok(filter) => filter,
        Err(error) => return filter_error(&error),
    };
    // A request id pasted into the search box opens its call.
    if let Some(request_id) = filter.q_as_request_id() {
        let probe = EventQuery {
            filter: EventFilter {
                request_id: Some(request_id.to_owned()),
                ..EventFilter::default()
            },
            limit: 1,
            before_seq: None,
        };
        if let Ok(page) = state.admin.store.query_records(&probe).await {
            if !page.events.is_empty() {
                return Redirect::to(&format!("/ui/calls/{}", url_value(request_id)))
                    .into_response();
            }
        }
    }
    let before_seq = cursor(&raw);
    let store = &state.admin.store;
    let found = match scoped(&state, &filter).await {
        Ok(Some(search)) => store.search(&search.search(PAGE_ROWS, before_seq)).await,
        Ok(None) => Ok(SearchPage::default()),
        Err(error) => Err(error),
    };
    let found = match found {
        Ok(found) => found,
        Err(error) => return store_error(error),
    };
    let mut body = String::with_capacity(16 * 1024);
    filter_form(&mut body, &filter, store.holds_many_sources());
    render_table(&mut body, &found.records);
    if found.records.is_empty() && before_seq.is_none() && filter.q_as_request_id().is_some() {
        body.push_str("<p>No call has this request id either.</p>");
    }
    let query = filter.query_string();
    let sep = if query.is_empty() { "" } else { "&amp;" };
    body.push_str("<nav aria-label=\"Pages\" class=\"pager\">");
    if before_seq.is_some() {
        let _ = write!(body, "<a href=\"/ui/events?{}\">Newest</a> ", esc(&query));
    }
    if let Some(next) = found.next_before_seq {
        let _ = write!(
            body,
            "<a href=\"/ui/events?{}{sep}cursor={next}\" rel=\"next\">Older events</a>",
            esc(&query)
        );
    }
    body.push_str("</nav>");
    if found.scan_limited {
        let _ = write!(
            body,
            "<p class=\"note\">This page stopped after reading {SCAN_LIMIT} events for the search \
             conditions; follow “Older events” to read on.</p>"
        );
    }
    body.push_str(
        "<section aria-labelledby=\"export-h\"><h2 id=\"export-h\">Export this view</h2><p>",
    );
    for (format, label) in [("csv", "CSV"), ("ndjson", "NDJSON"), ("json", "JSON")] {
        let _ = write!(
            body,
            "<a class=\"button\" id=\"export-{format}\" href=\"/ui/export?{}{sep}format={format}\" download>{label}</a> ",
            esc(&query)
        );
    }
    body.push_str("</p></section>");
    html_page("Events", Section::Events, &reader, &body)
}

/// `GET /ui/export`: the filtered set, streamed in the chosen format by
/// the same encoder as `/api/export`: oldest first, like it, or, for a
/// view with search conditions, newest first, page by page of the search.
pub async fn export(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    RawQuery(raw): RawQuery,
) -> Response {
    if let Err(detour) = state.reader(&headers) {
        return detour.into_response();
    }
    let raw = raw.unwrap_or_default();
    let filter = match ConsoleFilter::parse(&raw, chrono::Utc::now()) {
        Ok(filter) => filter,
        Err(error) => return filter_error(&error),
    };
    let format_raw = form_urlencoded::parse(raw.as_bytes())
        .find(|(k, _)| k == "format")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_else(|| "json".to_owned());
    let Some(format) = Format::parse(&format_raw) else {
        return filter_error(&FilterError {
            param: "format",
            message: "format must be one of json, ndjson, csv".to_owned(),
        });
    };
    let records = match scoped(&state, &filter).await {
        // Origin filters naming another store: nothing to export.
        Ok(None) => futures_util::stream::empty().boxed(),
        Ok(Some(scoped)) => {
            let search = scoped.search(EXPORT_PAGE, None);
            if search.is_plain() {
                state.admin.store.export_records(search.filter)
            } else {
                searched(state.admin.store.clone(), search)
            }
        }
        Err(error) => return store_error(error),
    };
    let columns = export::CsvColumns::of(state.admin.store.as_ref());
    export::attachment(
        format,
        Body::from_stream(export::encode_records(format, columns, records)),
    )
}

/// `filter` as the store applies it: on a store of one source the origin
/// filters name that store (or nothing, `None`), as in `/api/events`.
async fn scoped(
    state: &ConsoleState,
    filter: &ConsoleFilter,
) -> Result<Option<ConsoleFilter>, StoreError> {
    let scoped = scope_filter(
        state.admin.store.as_ref(),
        filter.store.clone(),
        state.admin.events.source(),
    )
    .await?;
    Ok(scoped.map(|store| ConsoleFilter {
        store,
        ..filter.clone()
    }))
}

fn filter_form(out: &mut String, f: &ConsoleFilter, many_sources: bool) {
    out.push_str(
        "<form method=\"get\" action=\"/ui/events\" class=\"filters\" role=\"search\" aria-label=\"Filter events\">",
    );
    let _ = write!(
        out,
        "<div class=\"field wide\"><label for=\"q\">Search prompts and answers, or paste a request id</label>\
         <input type=\"search\" id=\"q\" name=\"q\" value=\"{}\"></div>",
        esc(&f.q)
    );
    out.push_str("<div class=\"field\"><label for=\"range\">Time range</label><select id=\"range\" name=\"range\">");
    let custom_selected = if f.range.is_empty() || f.range == "custom" {
        " selected"
    } else {
        ""
    };
    let _ = write!(
        out,
        "<option value=\"\"{custom_selected}>All time / custom</option>"
    );
    for (key, label, _) in PRESETS {
        let selected = if f.range == key { " selected" } else { "" };
        let _ = write!(out, "<option value=\"{key}\"{selected}>{label}</option>");
    }
    out.push_str("</select></div>");
    for (name, label, value) in [("from", "From (UTC)", &f.from), ("to", "To (UTC)", &f.to)] {
        let _ = write!(
            out,
            "<div class=\"field\"><label for=\"{name}\">{label}</label>\
             <input type=\"datetime-local\" id=\"{name}\" name=\"{name}\" value=\"{}\"></div>",
            esc(value)
        );
    }
    out.push_str("<div class=\"field\"><label for=\"type\">Type</label><select id=\"type\" name=\"type\"><option value=\"\">Any</option>");
    for t in TYPES {
        let selected = if f.event_type == t.as_str() {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{selected}>{}</option>", t.as_str());
    }
    if !f.event_type.is_empty() && !TYPES.iter().any(|t| t.as_str() == f.event_type) {
        let _ = write!(out, "<option selected>{}</option>", esc(&f.event_type));
    }
    out.push_str("</select></div>");
    out.push_str("<div class=\"field\"><label for=\"level\">Level at least</label><select id=\"level\" name=\"level\"><option value=\"\">Any</option>");
    for l in Level::ALL {
        let selected = if f.level == l.as_str() {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{selected}>{}</option>", l.as_str());
    }
    out.push_str("</select></div>");
    for (name, label, value) in [
        ("request_id", "Request id", &f.request_id),
        ("model", "Model", &f.model),
        ("operation", "Operation", &f.operation),
        ("outcome", "Outcome", &f.outcome),
        ("policy", "Policy", &f.policy),
    ]
    .into_iter()
    .chain(
        [
            ("pod", "Pod", &f.pod),
            ("namespace", "Namespace", &f.namespace),
            ("source", "Source id", &f.source),
        ]
        .into_iter()
        .filter(|(_, _, value)| many_sources || !value.is_empty()),
    ) {
        let _ = write!(
            out,
            "<div class=\"field\"><label for=\"{name}\">{label}</label>\
             <input type=\"text\" id=\"{name}\" name=\"{name}\" value=\"{}\"></div>",
            esc(value)
        );
    }
    out.push_str("<div class=\"actions\"><button type=\"submit\">Apply</button> <a href=\"/ui/events\">Clear</a></div></form>");
}

/// The events as a table.
pub fn render_table(out: &mut String, records: &[EventRecord]) {
    let _ = write!(
        out,
        "<p id=\"count\" role=\"status\"><span id=\"row-count\">{}</span> events on this page</p>",
        records.len()
    );
    if records.is_empty() {
        out.push_str("<p>No event matches.</p>");
        return;
    }
    // Records of the central store say where they came from.
    let fleet = records.iter().any(|r| r.origin.is_some());
    let origin_header = if fleet {
        "<th scope=\"col\">Pod</th>"
    } else {
        ""
    };
    let _ = write!(
        out,
        "<table class=\"events\"><caption>Events, newest first</caption><thead><tr>\
         <th scope=\"col\">Time</th><th scope=\"col\">Seq</th>{origin_header}<th scope=\"col\">Type</th>\
         <th scope=\"col\">Level</th><th scope=\"col\">Request</th><th scope=\"col\">Model</th>\
         <th scope=\"col\">Message</th></tr></thead><tbody>",
    );
    for r in records {
        let metadata: Value = serde_json::from_str(r.metadata.get()).unwrap_or(Value::Null);
        let model = metadata["model"].as_str().unwrap_or("");
        let request = match &r.request_id {
            Some(id) => format!(
                "<a href=\"/ui/calls/{}\">{}</a>",
                esc(&url_value(id)),
                esc(short(id))
            ),
            None => String::new(),
        };
        let _ = write!(
            out,
            "<tr class=\"level-{}\"><td>{}</td><td>{}</td>{}<td>{}</td><td>{}</td><td>{request}</td><td>{}</td><td>{}</td></tr>",
            r.level.as_str().to_ascii_lowercase(),
            time(&r.timestamp),
            r.seq,
            origin_cell(r, fleet),
            esc(r.event_type.as_str()),
            r.level.as_str(),
            esc(model),
            marked(&r.message),
        );
    }
    out.push_str("</tbody></table>");
}

/// The pod an event of the central store came from (its source id when
/// it names no pod), with the source id on hover.
fn origin_cell(record: &EventRecord, fleet: bool) -> String {
    if !fleet {
        return String::new();
    }
    match &record.origin {
        Some(origin) => format!(
            "<td title=\"{}\">{}</td>",
            esc(&origin.source_id),
            esc(origin.pod.as_deref().unwrap_or(short(&origin.source_id)))
        ),
        None => "<td></td>".to_owned(),
    }
}

/// The last 12 characters of an id: enough to tell calls apart at a
/// glance (the full id is in the link).
fn short(id: &str) -> &str {
    let start = id.char_indices().rev().nth(11).map_or(0, |(i, _)| i);
    &id[start..]
}

/// The `cursor` parameter, when it is a valid seq.
fn cursor(raw: &str) -> Option<i64> {
    form_urlencoded::parse(raw.as_bytes())
        .find(|(k, _)| k == "cursor")
        .and_then(|(_, v)| v.parse::<i64>().ok())
        .filter(|seq| *seq >= 1)
}

pub fn filter_error(error: &FilterError) -> Response {
    message_page(
        StatusCode::BAD_REQUEST,
        "Filter not understood",
        &format!("`{}`: {}", error.param, error.message),
    )
}

pub fn store_error(error: crate::store::StoreError) -> Response {
    tracing::error!(%error, "Console page failed: the audit store failed.");
    message_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Store unavailable",
        "The audit store could not be read. Try again shortly.",
    )
}

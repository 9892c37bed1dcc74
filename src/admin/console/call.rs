//! One call (`/ui/calls/{request_id}`): everything recorded for a request
//! id on one page, and each event's raw JSON (`/ui/raw/{id}`) for bodies
//! too large to show inline.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::Value;

use super::events::store_error;
use super::html::{esc, marked, time, url_value, Section};
use super::{html_page, message_page, ConsoleState};
use crate::admin::params::valid_request_id;
use crate::event::{EventRecord, EventType};
use crate::store::{EventFilter, EventQuery};

/// Most events of one call read (a call has a handful; a flood of
/// custom events under one id is cut here).
pub const MAX_CALL_EVENTS: usize = 500;
/// Longest text of one message shown inline; the rest is behind the raw
/// link.
pub const INLINE_CHARS: usize = 8_000;
/// Largest event whose raw JSON is shown inline in a `<details>`.
pub const INLINE_RAW_BYTES: usize = 16 * 1024;

/// `GET /ui/calls/{request_id}`.
pub async fn page(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(request_id): Path<String>,
) -> Response {
    let reader = match state.reader(&headers) {
        Ok(reader) => reader,
        Err(detour) => return detour.into_response(),
    };
    if !valid_request_id(&request_id) {
        return message_page(
            StatusCode::BAD_REQUEST,
            "Not a request id",
            "A request id is 1 to 128 characters of letters, digits and -_.:",
        );
    }
    let query = EventQuery {
        filter: EventFilter {
            request_id: Some(request_id.clone()),
            ..EventFilter::default()
        },
        limit: MAX_CALL_EVENTS,
        before_seq: None,
    };
    let mut events = match state.admin.store.query_records(&query).await {
        Ok(page) => page.events,
        Err(error) => return store_error(error),
    };
    if events.is_empty() {
        return message_page(
            StatusCode::NOT_FOUND,
            "No such call",
            &format!("Nothing is recorded for request id {request_id}."),
        );
    }
    events.reverse();
    let parsed: Vec<(EventRecord, Value)> = events
        .into_iter()
        .map(|r| {
            let m = serde_json::from_str(r.metadata.get()).unwrap_or(Value::Null);
            (r, m)
        })
        .collect();
    let body = render(&request_id, &parsed);
    html_page(
        &format!("Call {request_id}"),
        Section::Events,
        &reader,
        &body,
    )
}

/// `GET /ui/raw/{id}`: one event as JSON, for bodies shown only in part.
pub async fn raw(
    State(state): State<ConsoleState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    if let Err(detour) = state.reader(&headers) {
        return detour.into_response();
    }
    if id.len() > 128 {
        return message_page(
            StatusCode::NOT_FOUND,
            "No such event",
            "No event has this id.",
        );
    }
    match state.admin.store.get(&id).await {
        Ok(Some(event)) => match serde_json::to_vec_pretty(&event) {
            Ok(json) => (
                [(header::CONTENT_TYPE, "application/json; charset=utf-8")],
                json,
            )
                .into_response(),
            Err(_) => message_page(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Unreadable event",
                "This event could not be written as JSON.",
            ),
        },
        Ok(None) => message_page(
            StatusCode::NOT_FOUND,
            "No such event",
            "No event has this id.",
        ),
        Err(error) => store_error(error),
    }
}

fn render(request_id: &str, events: &[(EventRecord, Value)]) -> String {
    let of = |t: EventType| events.iter().find(|(r, _)| r.event_type == t);
    let request = of(EventType::Request);
    let response = of(EventType::Response);
    let mut out = String::with_capacity(16 * 1024);
    summary(&mut out, request_id, request, response);

    out.push_str("<section aria-labelledby=\"conv-h\"><h2 id=\"conv-h\">Conversation</h2>");
    match request {
        Some((r, m)) => conversation(&mut out, r, &m["request_data"]),
        None => out.push_str("<p>No REQUEST event is recorded for this call.</p>"),
    }
    out.push_str("</section><section aria-labelledby=\"answer-h\"><h2 id=\"answer-h\">Answer</h2>");
    match response {
        Some((r, m)) => answer(&mut out, r, m),
        None => out.push_str("<p>No RESPONSE event is recorded for this call.</p>"),
    }
    out.push_str("</section>");

    if let Some((_, m)) = request {
        if let Some(headers) = m["headers"].as_object().filter(|h| !h.is_empty()) {
            out.push_str(
                "<section aria-labelledby=\"hdr-h\"><h2 id=\"hdr-h\">Request headers (sanitised)</h2>\
                 <table><thead><tr><th scope=\"col\">Header</th><th scope=\"col\">Value</th></tr></thead><tbody>",
            );
            for (name, value) in headers {
                let _ = write!(
                    out,
                    "<tr><th scope=\"row\">{}</th><td>{}</td></tr>",
                    esc(name),
                    marked(&text_of(value))
                );
            }
            out.push_str("</tbody></table></section>");
        }
    }

    let compliance: Vec<_> = events
        .iter()
        .filter(|(r, _)| {
            matches!(
                r.event_type,
                EventType::ComplianceCheck | EventType::ComplianceViolation
            )
        })
        .collect();
    out.push_str("<section aria-labelledby=\"comp-h\"><h2 id=\"comp-h\">Compliance findings</h2>");
    if compliance.is_empty() {
        out.push_str("<p>No policy check is recorded for this call.</p>");
    } else {
        out.push_str(
            "<table class=\"findings\"><thead><tr><th scope=\"col\">Policy</th><th scope=\"col\">Result</th>\
             <th scope=\"col\">Severity</th><th scope=\"col\">Action</th><th scope=\"col\">Direction</th>\
             <th scope=\"col\">Findings</th></tr></thead><tbody>",
        );
        for (r, m) in compliance {
            let result = if r.event_type == EventType::ComplianceViolation {
                "<strong class=\"bad\">violation</strong>"
            } else {
                "passed"
            };
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{result}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                esc(m["policy_name"].as_str().unwrap_or("")),
                esc(m["severity"].as_str().unwrap_or("")),
                esc(m["action"].as_str().unwrap_or("")),
                esc(m["direction"].as_str().unwrap_or("")),
                findings(&m["findings"]),
            );
        }
        out.push_str("</tbody></table>");
    }
    out.push_str("</section>");

    let errors: Vec<_> = events
        .iter()
        .filter(|(r, _)| r.event_type == EventType::Error)
        .collect();
    if !errors.is_empty() {
        out.push_str(
            "<section aria-labelledby=\"err-h\"><h2 id=\"err-h\">Errors</h2><ul class=\"errors\">",
        );
        for (r, m) in errors {
            let _ = write!(
                out,
                "<li>{} <strong>{}</strong>: {} {}</li>",
                time(&r.timestamp),
                esc(m["error_type"].as_str().unwrap_or("error")),
                marked(&r.message),
                marked(&text_of(&m["details"])),
            );
        }
        out.push_str("</ul></section>");
    }

    out.push_str(
        "<section aria-labelledby=\"all-h\"><h2 id=\"all-h\">Every event of this call</h2>\
         <table><thead><tr><th scope=\"col\">Time</th><th scope=\"col\">Seq</th><th scope=\"col\">Type</th>\
         <th scope=\"col\">Message</th><th scope=\"col\">Raw</th></tr></thead><tbody>",
    );
    for (r, _) in events {
        let raw_link = format!("/ui/raw/{}", esc(&url_value(&r.id)));
        let raw = if r.metadata.get().len() <= INLINE_RAW_BYTES {
            format!(
                "<details><summary>JSON</summary><pre>{}</pre></details>",
                marked(&pretty(r.metadata.get()))
            )
        } else {
            format!(
                "<a href=\"{raw_link}\">Load JSON ({} KiB)</a>",
                r.metadata.get().len() / 1024
            )
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{raw}</td></tr>",
            time(&r.timestamp),
            r.seq,
            esc(r.event_type.as_str()),
            marked(&r.message),
        );
    }
    out.push_str("</tbody></table></section>");
    out
}

fn summary(
    out: &mut String,
    request_id: &str,
    request: Option<&(EventRecord, Value)>,
    response: Option<&(EventRecord, Value)>,
) {
    let req = request.map(|(_, m)| m);
    let res = response.map(|(_, m)| m);
    let pick = |name: &str| -> String {
        res.and_then(|m| value_text(&m[name]))
            .or_else(|| req.and_then(|m| value_text(&m[name])))
            .unwrap_or_default()
    };
    let usage = res.map(|m| &m["usage"]);
    let tokens = |name: &str| {
        usage
            .and_then(|u| u[name].as_u64())
            .map(|n| n.to_string())
            .unwrap_or_default()
    };
    let ms = |name: &str| {
        res.and_then(|m| m[name].as_f64())
            .map(|n| format!("{n:.0} ms"))
            .unwrap_or_default()
    };
    out.push_str("<dl class=\"summary\">");
    let rows = [
        ("Request id", request_id.to_owned()),
        ("Model", pick("model")),
        ("Operation", pick("operation")),
        ("Provider", pick("provider")),
        ("Outcome", pick("outcome")),
        ("Status", pick("status")),
        ("Finish reason", pick("finish_reason")),
        ("Latency", ms("latency_ms")),
        ("Time to first byte", ms("ttfb_ms")),
        ("Prompt tokens", tokens("prompt_tokens")),
        ("Completion tokens", tokens("completion_tokens")),
        ("Total tokens", tokens("total_tokens")),
        ("Streamed", pick("stream")),
        (
            "Client",
            req.and_then(|m| value_text(&m["client_ip"]))
                .unwrap_or_default(),
        ),
        ("Upstream request id", pick("upstream_request_id")),
    ];
    for (label, value) in rows {
        if !value.is_empty() {
            let _ = write!(out, "<dt>{label}</dt><dd>{}</dd>", esc(&value));
        }
    }
    if let Some((r, _)) = request {
        let _ = write!(out, "<dt>Started</dt><dd>{}</dd>", time(&r.timestamp));
    }
    out.push_str("</dl>");
}

/// The request's messages (chat), input (Responses API) or prompt.
fn conversation(out: &mut String, record: &EventRecord, body: &Value) {
    out.push_str("<ol class=\"conversation\">");
    let mut any = false;
    if let Some(messages) = body["messages"].as_array() {
        for m in messages {
            any = true;
            let role = m["role"].as_str().unwrap_or("message");
            message(out, record, role, &content_text(&m["content"]));
            if let Some(calls) = m["tool_calls"].as_array() {
                tool_calls(out, calls);
            }
        }
    }
    match &body["input"] {
        Value::String(s) => {
            any = true;
            message(out, record, "user", s);
        }
        Value::Array(items) => {
            for item in items {
                any = true;
                let role = item["role"].as_str().unwrap_or("input");
                message(out, record, role, &content_text(&item["content"]));
            }
        }
        _ => {}
    }
    if let Some(instructions) = body["instructions"].as_str() {
        any = true;
        message(out, record, "instructions", instructions);
    }
    if let Some(prompt) = value_text(&body["prompt"]) {
        any = true;
        message(out, record, "prompt", &prompt);
    }
    out.push_str("</ol>");
    if !any {
        let _ = write!(
            out,
            "<p>The request body holds no messages. <a href=\"/ui/raw/{}\">Its JSON</a>.</p>",
            esc(&url_value(&record.id))
        );
    }
}

/// The answer: content and tool calls of each choice (a stream's
/// reassembled completion has the same shape), or Responses API output.
fn answer(out: &mut String, record: &EventRecord, metadata: &Value) {
    let body = &metadata["response_data"];
    out.push_str("<ol class=\"conversation\">");
    let mut any = false;
    if let Some(choices) = body["choices"].as_array() {
        for choice in choices {
            let m = &choice["message"];
            let text = if m.is_null() {
                value_text(&choice["text"]).unwrap_or_default()
            } else {
                content_text(&m["content"])
            };
            if !text.is_empty() {
                any = true;
                message(
                    out,
                    record,
                    m["role"].as_str().unwrap_or("assistant"),
                    &text,
                );
            }
            if let Some(calls) = m["tool_calls"].as_array() {
                any = true;
                tool_calls(out, calls);
            }
        }
    }
    if let Some(items) = body["output"].as_array() {
        for item in items {
            if item["type"] == "function_call" {
                any = true;
                tool_call(
                    out,
                    item["name"].as_str().unwrap_or(""),
                    &text_of(&item["arguments"]),
                );
            } else {
                let text = content_text(&item["content"]);
                if !text.is_empty() {
                    any = true;
                    message(
                        out,
                        record,
                        item["role"].as_str().unwrap_or("assistant"),
                        &text,
                    );
                }
            }
        }
    }
    out.push_str("</ol>");
    if !any {
        let _ = write!(
            out,
            "<p>The answer holds no text. <a href=\"/ui/raw/{}\">Its JSON</a>.</p>",
            esc(&url_value(&record.id))
        );
    }
}

fn message(out: &mut String, record: &EventRecord, role: &str, text: &str) {
    let _ = write!(
        out,
        "<li class=\"msg role-{}\"><p class=\"role\">{}</p><div class=\"text\">",
        esc(&role
            .to_ascii_lowercase()
            .replace(|c: char| !c.is_ascii_alphanumeric(), "-")),
        esc(role)
    );
    if text.chars().count() > INLINE_CHARS {
        let cut: String = text.chars().take(INLINE_CHARS).collect();
        let _ = write!(
            out,
            "{}</div><p><a href=\"/ui/raw/{}\">Load the whole body</a></p></li>",
            marked(&cut),
            esc(&url_value(&record.id))
        );
    } else {
        let _ = write!(out, "{}</div></li>", marked(text));
    }
}

fn tool_calls(out: &mut String, calls: &[Value]) {
    for call in calls {
        let function = &call["function"];
        tool_call(
            out,
            function["name"].as_str().unwrap_or(""),
            &text_of(&function["arguments"]),
        );
    }
}

fn tool_call(out: &mut String, name: &str, arguments: &str) {
    let _ = write!(
        out,
        "<li class=\"msg tool-call\"><p class=\"role\">tool call <code>{}</code></p><pre>{}</pre></li>",
        esc(name),
        marked(&pretty(arguments))
    );
}

/// Message content as text: a string, or the text parts of a list.
fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str().or_else(|| p.as_str()))
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

fn findings(value: &Value) -> String {
    match value {
        Value::Array(items) => items
            .iter()
            .map(|f| {
                let kind = f["entity_type"]
                    .as_str()
                    .or_else(|| f["type"].as_str())
                    .unwrap_or("finding");
                match f["count"].as_u64() {
                    Some(n) => format!("{} × {n}", esc(kind)),
                    None => esc(&text_of(f)),
                }
            })
            .collect::<Vec<_>>()
            .join(", "),
        Value::Null => String::new(),
        other => esc(&text_of(other)),
    }
}

fn value_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::String(s) if s.is_empty() => None,
        Value::String(s) => Some(s.clone()),
        other => Some(other.to_string()),
    }
}

fn text_of(v: &Value) -> String {
    value_text(v).unwrap_or_default()
}

/// JSON text pretty-printed when it parses.
fn pretty(text: &str) -> String {
    serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| text.to_owned())
}

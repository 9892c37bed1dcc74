//! `/api/events`: paged queries, one event by id, and custom events.

use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{Map, Value};

use super::error::AdminError;
use super::params::{self, Params, FILTER_PARAMS};
use super::AdminState;
use crate::event::{AuditEvent, EventType, Level, NewEvent};
use crate::store::{scope_filter, EventQuery, Sequenced, StoreError};

/// The largest `POST /api/events` body.
pub const MAX_BODY_BYTES: usize = 64 * 1024;
/// The longest custom event message, in characters.
pub const MAX_MESSAGE_CHARS: usize = 4096;

const POST_FIELDS: [&str; 5] = ["event_type", "message", "metadata", "level", "request_id"];

/// Rows read from the store at a time while a page is filled: the first
/// read of a default page is the whole page, and a page of large events
/// stops reading soon after its byte budget is spent.
const PAGE_CHUNK_ROWS: usize = 100;

/// `GET /api/events`: newest first, one page of at most `limit` events and
/// about `admin.page_max_bytes` bytes. The page ends before the event that
/// would take it past the budget (a single event larger than the budget
/// still makes a page of its own), and `next_cursor` continues from there.
/// Rows are read in chunks, so memory stays near the budget whatever the
/// limit.
pub async fn list(
    State(state): State<AdminState>,
    RawQuery(raw): RawQuery,
) -> Result<Response, AdminError> {
    let mut allowed = FILTER_PARAMS.to_vec();
    allowed.extend(["limit", "cursor"]);
    let params = Params::parse(raw.as_deref(), &allowed)?;
    let filter = params.filter()?;
    let mut remaining = params.limit()?;
    let mut before_seq = params.cursor()?;
    let Some(filter) = scope_filter(state.store.as_ref(), filter, state.events.source()).await?
    else {
        return Ok((
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"events":[],"next_cursor":null}"#,
        )
            .into_response());
    };
    let budget = state.page_max_bytes;
    let mut events: Vec<u8> = Vec::new();
    let mut count = 0usize;
    let next_cursor = 'fill: loop {
        // Sized so one chunk of rows like the ones seen so far fits the
        // budget left.
        let chunk = match count {
            0 => remaining.min(PAGE_CHUNK_ROWS),
            n => {
                let average = (events.len() / n).max(1);
                let room = budget.saturating_sub(events.len()) / average;
                remaining.min(room.clamp(1, PAGE_CHUNK_ROWS * 10))
            }
        };
        let page = state
            .store
            .query_records(&EventQuery {
                filter: filter.clone(),
                limit: chunk,
                before_seq,
            })
            .await?;
        for record in page.events {
            let json = serde_json::to_vec(&record).map_err(|e| {
                StoreError::Corrupt(format!("event {} does not serialise: {e}", record.seq))
            })?;
            if count > 0 && events.len() + json.len() > budget {
                break 'fill before_seq;
            }
            if count > 0 {
                events.push(b',');
            }
            events.extend_from_slice(&json);
            count += 1;
            remaining -= 1;
            // The store's order: `seq`, or the central store's row.
            before_seq = Some(Sequenced::seq(&record));
        }
        match page.next_before_seq {
            Some(next) if remaining > 0 => before_seq = Some(next),
            next => break 'fill next,
        }
    };
    let mut body = Vec::with_capacity(events.len() + 64);
    body.extend_from_slice(b"{\"events\":[");
    body.extend_from_slice(&events);
    body.extend_from_slice(b"],\"next_cursor\":");
    let cursor = next_cursor.map(params::encode_cursor);
    body.extend_from_slice(
        serde_json::to_string(&cursor)
            .map_err(|e| StoreError::Other(e.to_string()))?
            .as_bytes(),
    );
    body.push(b'}');
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `GET /api/events/{id}`.
pub async fn get_one(
    State(state): State<AdminState>,
    Path(id): Path<String>,
) -> Result<Json<AuditEvent>, AdminError> {
    // Ids are UUIDs; anything long cannot match and need not reach the store.
    if id.len() > 128 {
        return Err(AdminError::NotFound);
    }
    state
        .store
        .get(&id)
        .await?
        .map(Json)
        .ok_or(AdminError::NotFound)
}

/// `POST /api/events`: validates a custom event, stores it through the
/// pipeline (so it joins the hash chain) and answers with the stored event.
pub async fn create(State(state): State<AdminState>, body: Body) -> Result<Response, AdminError> {
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|error| {
            if is_length_limit(&error) {
                AdminError::BodyTooLarge {
                    limit: MAX_BODY_BYTES,
                }
            } else {
                AdminError::invalid("body", "the request body could not be read")
            }
        })?;
    let (event, mut metadata) = parse_custom_event(&bytes)?;
    // Callers' metadata is a body like any other: secrets and what the
    // policies do not keep never reach the store.
    state.sanitizer.redact_stored(&mut metadata);
    let mut event = event.with_metadata(metadata);
    event.message = state
        .sanitizer
        .redact_stored_text(&event.message, None)
        .into_owned();
    let stored = state
        .events
        .submit(event)
        .await
        .map_err(AdminError::Submit)?;
    let location = format!("/api/events/{}", stored.id);
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(stored),
    )
        .into_response())
}

fn is_length_limit(error: &axum::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        source = e.source();
    }
    false
}

/// Turns a request body into a custom event, naming the field at fault.
/// The event without its metadata, and the metadata apart (to be cleaned
/// before it is set).
fn parse_custom_event(body: &[u8]) -> Result<(NewEvent, Value), AdminError> {
    let value: Value = serde_json::from_slice(body)
        .map_err(|_| AdminError::invalid("body", "the request body must be a JSON object"))?;
    let Value::Object(mut fields) = value else {
        return Err(AdminError::invalid(
            "body",
            "the request body must be a JSON object",
        ));
    };
    if let Some(unknown) = fields.keys().find(|k| !POST_FIELDS.contains(&k.as_str())) {
        return Err(AdminError::invalid(
            unknown.as_str(),
            format!(
                "unknown field `{unknown}`; accepted: {}",
                POST_FIELDS.join(", ")
            ),
        ));
    }

    let event_type = match fields.remove("event_type") {
        Some(Value::String(s)) => s.parse::<EventType>().map_err(|_| {
            AdminError::invalid(
                "event_type",
                "`event_type` must be CUSTOM or an UPPER_SNAKE name of 1 to 64 characters",
            )
        })?,
        None | Some(Value::Null) => {
            return Err(AdminError::invalid(
                "event_type",
                "`event_type` is required",
            ))
        }
        Some(_) => {
            return Err(AdminError::invalid(
                "event_type",
                "`event_type` must be a string",
            ))
        }
    };
    if is_reserved(&event_type) {
        return Err(AdminError::invalid(
            "event_type",
            format!(
                "`event_type` {event_type} is reserved for events the proxy records; \
                 use CUSTOM or your own UPPER_SNAKE name"
            ),
        ));
    }

    let message = match fields.remove("message") {
        Some(Value::String(s)) if s.trim().is_empty() => {
            return Err(AdminError::invalid(
                "message",
                "`message` must not be empty",
            ))
        }
        Some(Value::String(s)) if s.chars().count() > MAX_MESSAGE_CHARS => {
            return Err(AdminError::invalid(
                "message",
                format!("`message` must be at most {MAX_MESSAGE_CHARS} characters"),
            ))
        }
        // PostgreSQL text cannot hold NUL, so such a message could never
        // reach a central store.
        Some(Value::String(s)) if s.contains('\0') => {
            return Err(AdminError::invalid(
                "message",
                "`message` must not contain NUL characters",
            ))
        }
        Some(Value::String(s)) => s,
        None | Some(Value::Null) => {
            return Err(AdminError::invalid("message", "`message` is required"))
        }
        Some(_) => return Err(AdminError::invalid("message", "`message` must be a string")),
    };

    let metadata = match fields.remove("metadata") {
        None | Some(Value::Null) => Value::Object(Map::new()),
        Some(Value::Object(m)) => Value::Object(m),
        Some(_) => {
            return Err(AdminError::invalid(
                "metadata",
                "`metadata` must be a JSON object",
            ))
        }
    };

    let mut event = NewEvent::new(event_type, message);

    match fields.remove("level") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => {
            let level = s.parse::<Level>().map_err(|_| {
                AdminError::invalid(
                    "level",
                    "`level` must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
                )
            })?;
            event = event.with_level(level);
        }
        Some(_) => return Err(AdminError::invalid("level", "`level` must be a string")),
    }

    match fields.remove("request_id") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if params::valid_request_id(&s) => {
            event = event.with_request_id(s);
        }
        Some(_) => {
            return Err(AdminError::invalid(
                "request_id",
                "`request_id` must be 1 to 128 characters of letters, digits and -_.:",
            ))
        }
    }
    Ok((event, metadata))
}

/// Types only the proxy itself records; accepting them from callers would
/// let anyone forge traffic or security records.
fn is_reserved(event_type: &EventType) -> bool {
    matches!(
        event_type,
        EventType::Request
            | EventType::Response
            | EventType::ComplianceCheck
            | EventType::ComplianceViolation
            | EventType::Authentication
            | EventType::Configuration
            | EventType::System
            | EventType::Error
            | EventType::Checkpoint
    )
}

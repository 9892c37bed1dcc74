//! The console's filter, read from and written back to the URL so a view
//! can be bookmarked and shared.
//!
//! Time, type, level, request id and policy make an [`EventFilter`]; text,
//! model, operation and outcome join it in a [`SearchQuery`], which the
//! store answers through [`AuditStore::search`](crate::store::AuditStore::search).

use crate::admin::params::valid_request_id;
use crate::event::{parse_timestamp, EventType, Level};
use crate::store::browse::SearchQuery;
use crate::store::EventFilter;
use chrono::{DateTime, Duration, NaiveDateTime, Utc};

use super::html::url_value;

/// Longest search text accepted.
pub const MAX_TEXT: usize = 200;

/// The time range presets.
pub const PRESETS: [(&str, &str, i64); 3] = [
    ("1h", "Last hour", 3600),
    ("24h", "Last 24 hours", 86_400),
    ("7d", "Last 7 days", 7 * 86_400),
];

/// A console view's filter.
#[derive(Debug, Clone, Default)]
pub struct ConsoleFilter {
    /// `1h`, `24h`, `7d`, or empty for all time / a custom range.
    pub range: String,
    /// The custom range as typed (`from`, `to`).
    pub from: String,
    pub to: String,
    pub event_type: String,
    pub level: String,
    pub request_id: String,
    pub model: String,
    pub operation: String,
    pub outcome: String,
    pub policy: String,
    /// The origin filters of a store of many sources (the central store);
    /// on a local store they match it or nothing, as in the API.
    pub source: String,
    pub pod: String,
    pub namespace: String,
    /// Free text: a request id jumps to its call, anything else searches
    /// prompts and answers.
    pub q: String,
    /// What the store answers.
    pub store: EventFilter,
}

/// A filter parameter that could not be used, named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilterError {
    pub param: &'static str,
    pub message: String,
}

// === impl ConsoleFilter ===

impl ConsoleFilter {
    /// Reads the filter from a query string; `now` anchors the presets.
    pub fn parse(raw: &str, now: DateTime<Utc>) -> Result<Self, FilterError> {
        let mut f = ConsoleFilter::default();
        for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
            let value = value.trim().to_owned();
            match name.as_ref() {
                "range" => f.range = value,
                "from" => f.from = value,
                "to" => f.to = value,
                "type" => f.event_type = value,
                "level" => f.level = value,
                "request_id" => f.request_id = value,
                "model" => f.model = value,
                "operation" => f.operation = value,
                "outcome" => f.outcome = value,
                "policy" => f.policy = value,
                "source" => f.source = value,
                "pod" => f.pod = value,
                "namespace" => f.namespace = value,
                "q" => f.q = value,
                // Paging and the export format are read by the pages.
                _ => {}
            }
        }
        f.resolve(now)?;
        Ok(f)
    }

    fn resolve(&mut self, now: DateTime<Utc>) -> Result<(), FilterError> {
        let mut store = EventFilter::default();
        match self.range.as_str() {
            "" | "all" | "custom" => {
                store.start_time = parse_input_time("from", &self.from)?;
                store.end_time = parse_input_time("to", &self.to)?;
            }
            preset => {
                let Some((_, _, secs)) = PRESETS.iter().find(|(k, _, _)| *k == preset) else {
                    return Err(bad("range", "range must be 1h, 24h, 7d or custom"));
                };
                store.start_time = Some(now - Duration::seconds(*secs));
            }
        }
        if let (Some(start), Some(end)) = (store.start_time, store.end_time) {
            if end <= start {
                return Err(bad("to", "the end of the range must be after its start"));
            }
        }
        if !self.event_type.is_empty() {
            let t: EventType = self
                .event_type
                .parse()
                .map_err(|_| bad("type", "type must be an UPPER_SNAKE event type"))?;
            store.event_types = vec![t];
        }
        if !self.level.is_empty() {
            store.min_level = Some(self.level.parse::<Level>().map_err(|_| {
                bad(
                    "level",
                    "level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
                )
            })?);
        }
        if !self.request_id.is_empty() {
            if !valid_request_id(&self.request_id) {
                return Err(bad(
                    "request_id",
                    "request_id must be 1 to 128 characters of letters, digits and -_.:",
                ));
            }
            store.request_id = Some(self.request_id.clone());
        }
        if !self.policy.is_empty() {
            store.policy_name = Some(self.policy.clone());
        }
        for (param, value, slot) in [
            ("source", &self.source, &mut store.source),
            ("pod", &self.pod, &mut store.pod),
            ("namespace", &self.namespace, &mut store.namespace),
        ] {
            if value.is_empty() {
                continue;
            }
            if value.len() > 253 || value.chars().any(char::is_control) {
                return Err(bad(
                    param,
                    &format!(
                        "{param} must be 1 to 253 characters, none of them control characters"
                    ),
                ));
            }
            *slot = Some(value.clone());
        }
        for (param, value) in [
            ("model", &self.model),
            ("operation", &self.operation),
            ("outcome", &self.outcome),
            ("policy", &self.policy),
            ("q", &self.q),
        ] {
            if value.chars().count() > MAX_TEXT {
                return Err(bad(
                    param,
                    &format!("{param} must be at most {MAX_TEXT} characters"),
                ));
            }
        }
        self.store = store;
        Ok(())
    }

    /// Whether `q` could be a request id (and so is tried as one first).
    pub fn q_as_request_id(&self) -> Option<&str> {
        valid_request_id(&self.q).then_some(self.q.as_str())
    }

    /// The search a page of this view asks the store for.
    pub fn search(&self, limit: usize, before_seq: Option<i64>) -> SearchQuery {
        let some = |v: &String| (!v.is_empty()).then(|| v.clone());
        SearchQuery {
            filter: self.store.clone(),
            text: some(&self.q),
            model: some(&self.model),
            operation: some(&self.operation),
            outcome: some(&self.outcome),
            limit,
            before_seq,
        }
    }

    /// The filter as a query string (without paging), for links.
    pub fn query_string(&self) -> String {
        let mut parts = Vec::new();
        for (name, value) in [
            ("range", &self.range),
            ("from", &self.from),
            ("to", &self.to),
            ("type", &self.event_type),
            ("level", &self.level),
            ("request_id", &self.request_id),
            ("model", &self.model),
            ("operation", &self.operation),
            ("outcome", &self.outcome),
            ("policy", &self.policy),
            ("source", &self.source),
            ("pod", &self.pod),
            ("namespace", &self.namespace),
            ("q", &self.q),
        ] {
            if !value.is_empty() {
                parts.push(format!("{name}={}", url_value(value)));
            }
        }
        parts.join("&")
    }
}

/// A time from the form: RFC 3339, or a `datetime-local` value
/// (`2026-01-02T03:04`, seconds optional) read as UTC.
fn parse_input_time(param: &'static str, raw: &str) -> Result<Option<DateTime<Utc>>, FilterError> {
    if raw.is_empty() {
        return Ok(None);
    }
    if let Some(t) = parse_timestamp(raw) {
        return Ok(Some(t));
    }
    for format in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(Some(t.and_utc()));
        }
    }
    Err(bad(
        param,
        &format!("{param} must be a UTC time such as 2026-01-02T03:04"),
    ))
}

fn bad(param: &'static str, message: &str) -> FilterError {
    FilterError {
        param,
        message: message.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        parse_timestamp("2026-06-01T12:00:00Z").unwrap()
    }

    #[test]
    fn presets_anchor_on_now_and_round_trip_through_the_url() {
        let f = ConsoleFilter::parse("range=24h&type=REQUEST&model=gpt-4o&q=hello+world", now())
            .unwrap();
        assert_eq!(f.store.start_time, parse_timestamp("2026-05-31T12:00:00Z"));
        assert_eq!(f.store.event_types, vec![EventType::Request]);
        let again = ConsoleFilter::parse(&f.query_string(), now()).unwrap();
        assert_eq!(again.store, f.store);
        assert_eq!(again.q, "hello world");
        assert_eq!(again.model, "gpt-4o");
    }

    #[test]
    fn custom_ranges_accept_form_times() {
        let f =
            ConsoleFilter::parse("from=2026-01-02T03:04&to=2026-01-03T00:00:00Z", now()).unwrap();
        assert_eq!(f.store.start_time, parse_timestamp("2026-01-02T03:04:00Z"));
        assert_eq!(f.store.end_time, parse_timestamp("2026-01-03T00:00:00Z"));
    }

    #[test]
    fn bad_input_names_its_parameter() {
        for (raw, param) in [
            ("range=2y", "range"),
            ("from=yesterday", "from"),
            ("from=2026-01-02T00:00&to=2026-01-01T00:00", "to"),
            ("type=not-a-type", "type"),
            ("level=LOUD", "level"),
            ("request_id=a%20b", "request_id"),
            ("pod=a%07b", "pod"),
            ("namespace=a%0Ab", "namespace"),
        ] {
            let err = ConsoleFilter::parse(raw, now()).unwrap_err();
            assert_eq!(err.param, param, "{raw}");
        }
        let long = format!("q={}", "x".repeat(MAX_TEXT + 1));
        assert_eq!(ConsoleFilter::parse(&long, now()).unwrap_err().param, "q");
        let long = format!("source={}", "s".repeat(254));
        assert_eq!(
            ConsoleFilter::parse(&long, now()).unwrap_err().param,
            "source"
        );
    }

    #[test]
    fn origin_filters_reach_the_store_and_the_url() {
        let f = ConsoleFilter::parse("pod=pod-a&namespace=team-x&source=s-1", now()).unwrap();
        assert_eq!(f.store.pod.as_deref(), Some("pod-a"));
        assert_eq!(f.store.namespace.as_deref(), Some("team-x"));
        assert_eq!(f.store.source.as_deref(), Some("s-1"));
        let again = ConsoleFilter::parse(&f.query_string(), now()).unwrap();
        assert_eq!(again.store, f.store);
    }
}

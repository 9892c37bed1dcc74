//! The metadata of a call's REQUEST, RESPONSE and ERROR events as typed
//! structs that serialise straight to the event's canonical JSON text.
//!
//! Fields are declared in sorted key order (the canonical form; debug
//! builds check it in [`Metadata::of`]), and each serialises to what the
//! contract in DESIGN.md names: optional fields that a record leaves out
//! are skipped, the others are written, as `null` when empty.

use std::borrow::Cow;
use std::net::IpAddr;

use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

use crate::capture::recorded_headers::RecordedHeaders;
use crate::capture::sanitize::{
    is_credential_header, redact_query, stored_path, Sanitizer, NON_UTF8,
};
use crate::event::Metadata;
use crate::policy::{Direction, Scan};

pub use crate::capture::stored_body::StoredBody;

/// REQUEST metadata.
#[derive(Serialize)]
pub struct RequestMetadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub azure_deployment: Option<String>,
    pub body_bytes: u64,
    /// `Some(false)` when the body did not reach its end.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_complete: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body_end: Option<&'static str>,
    pub client_ip: IpAddr,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compliance: Option<ComplianceSummary<'a>>,
    pub headers: StoredHeaders<'a>,
    pub method: &'a str,
    pub model: Option<&'a str>,
    pub operation: &'a str,
    pub path: &'a str,
    pub provider: &'a str,
    pub request_data: &'a StoredBody,
    pub stream: bool,
    pub truncated: bool,
}

/// RESPONSE metadata.
#[derive(Serialize)]
pub struct ResponseMetadata<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub blocked_by: Option<&'a str>,
    pub body_bytes: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compliance: Option<ComplianceSummary<'a>>,
    pub finish_reason: Option<&'a str>,
    /// Absent when upstream never answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<StoredHeaders<'a>>,
    pub latency_ms: f64,
    pub model: Option<&'a str>,
    pub operation: &'a str,
    pub outcome: &'a str,
    pub provider: &'a str,
    pub response_data: Option<&'a StoredBody>,
    pub status: Option<u16>,
    pub stream: bool,
    pub truncated: bool,
    pub ttfb_ms: Option<f64>,
    pub upstream_request_id: Option<&'a str>,
    pub usage: Option<&'a crate::capture::summary::Usage>,
}

/// ERROR metadata.
#[derive(Serialize)]
pub struct ErrorMetadata<'a> {
    pub details: ErrorDetails<'a>,
    pub error_type: &'a str,
}

#[derive(Serialize)]
pub struct ErrorDetails<'a> {
    pub message: Cow<'a, str>,
    pub operation: &'a str,
    pub provider: &'a str,
}

/// Which policies looked at one side of a call, and which found
/// something: `{"passed": [names], "violated": [names]}`, in policy order.
pub struct ComplianceSummary<'a>(&'a Scan);

/// Stored headers: one entry per name in sorted order, values of a name
/// joined with `", "`, credential headers left out, values cleaned as the
/// stored text of `direction` (secrets, policy matches, credential
/// parameters in URLs), non-UTF-8 values as [`NON_UTF8`].
pub struct StoredHeaders<'a> {
    pub headers: &'a RecordedHeaders,
    pub sanitizer: &'a Sanitizer,
    pub direction: Direction,
}

/// Writes typed metadata as an event's text.
pub fn metadata_of<T: Serialize>(typed: &T) -> Metadata {
    Metadata::of(typed)
}

// === impl ComplianceSummary ===

impl<'a> ComplianceSummary<'a> {
    /// `None` when no policy looked at this side.
    pub fn of(scan: &'a Scan) -> Option<Self> {
        (!scan.verdicts.is_empty()).then_some(Self(scan))
    }
}

impl Serialize for ComplianceSummary<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let names = |passed: bool| NamesWhere {
            scan: self.0,
            passed,
        };
        let mut out = s.serialize_struct("ComplianceSummary", 2)?;
        out.serialize_field("passed", &names(true))?;
        out.serialize_field("violated", &names(false))?;
        out.end()
    }
}

/// The names of the policies of a scan that passed (or not).
struct NamesWhere<'a> {
    scan: &'a Scan,
    passed: bool,
}

impl Serialize for NamesWhere<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(
            self.scan
                .verdicts
                .iter()
                .filter(|v| v.passed == self.passed)
                .map(|v| v.policy_name.as_str()),
        )
    }
}

// === impl StoredHeaders ===

/// Most header names sorted on the stack; more take a vector.
const NAMES_ON_STACK: usize = 32;

impl Serialize for StoredHeaders<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // `RecordedHeaders` already leaves credentials out; they are
        // checked again where the record is written, as a credential that
        // reached the store could not be taken back.
        let kept = self
            .headers
            .names()
            .filter(|name| !is_credential_header(name));
        let mut on_stack = [""; NAMES_ON_STACK];
        let mut spilled = Vec::new();
        let mut count = 0;
        for name in kept {
            if count < NAMES_ON_STACK {
                on_stack[count] = name;
            } else {
                if spilled.is_empty() {
                    spilled.extend_from_slice(&on_stack);
                }
                spilled.push(name);
            }
            count += 1;
        }
        let names: &mut [&str] = if spilled.is_empty() {
            &mut on_stack[..count]
        } else {
            &mut spilled
        };
        names.sort_unstable();
        let mut map = s.serialize_map(Some(names.len()))?;
        for name in names.iter() {
            map.serialize_entry(name, &self.stored_value(name))?;
        }
        map.end()
    }
}

impl<'a> StoredHeaders<'a> {
    /// Every value of `name`, cleaned and joined; borrowed from the
    /// request when one value needed no cleaning.
    fn stored_value(&self, name: &'a str) -> Cow<'a, str> {
        let stored = |value| stored_header_value(self.sanitizer, self.direction, value);
        let mut values = self.headers.get_all(name);
        let Some(first) = values.next() else {
            return Cow::Borrowed("");
        };
        let mut joined = stored(first);
        for value in values {
            let joined = joined.to_mut();
            joined.push_str(", ");
            joined.push_str(&stored(value));
        }
        joined
    }
}

/// [`stored_path`], borrowed when nothing in it is cleaned. Text without
/// `?` and `;` holds no query or path parameters, and `stored_path`
/// cleans such text as one stored string.
pub fn stored_path_of<'a>(sanitizer: &Sanitizer, text: &'a str) -> Cow<'a, str> {
    if text.contains(['?', ';']) {
        Cow::Owned(stored_path(text, sanitizer))
    } else {
        sanitizer.redact_stored_text(text, Some(Direction::Request))
    }
}

/// One header value as stored.
fn stored_header_value<'h>(
    sanitizer: &Sanitizer,
    direction: Direction,
    value: &'h [u8],
) -> Cow<'h, str> {
    match std::str::from_utf8(value) {
        Ok(text) if text.contains(['?', ';']) => Cow::Owned(
            sanitizer
                .redact_stored_text(&redact_query(text), Some(direction))
                .into_owned(),
        ),
        Ok(text) => sanitizer.redact_stored_text(text, Some(direction)),
        Err(_) => Cow::Borrowed(NON_UTF8),
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};

    use super::*;
    use crate::capture::sanitize::headers_to_value;

    #[test]
    fn stored_paths_borrow_only_what_stored_path_keeps() {
        let sanitizer = Sanitizer::baseline();
        for path in [
            "/v1/chat/completions",
            "chat.create",
            "POST /v1/x/sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
            "/v1/models;key=abc/x",
            "/v1/x?api_key=secret&a=1#frag",
            "/v1/x#frag sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
            "",
        ] {
            let fast = stored_path_of(&sanitizer, path);
            assert_eq!(fast, stored_path(path, &sanitizer), "{path}");
            if matches!(fast, Cow::Borrowed(_)) {
                assert_eq!(fast, path);
            }
        }
        assert!(matches!(
            stored_path_of(&sanitizer, "/v1/chat/completions"),
            Cow::Borrowed(_)
        ));
    }

    #[test]
    fn stored_headers_match_the_tree_they_replace() {
        let sanitizer = Sanitizer::baseline();
        let mut headers = HeaderMap::new();
        headers.insert("x-b", HeaderValue::from_static("two"));
        headers.insert("authorization", HeaderValue::from_static("Bearer sk-abc"));
        headers.append("accept", HeaderValue::from_static("a/b"));
        headers.append("accept", HeaderValue::from_static("c/d; q=1"));
        headers.insert(
            "referer",
            HeaderValue::from_static("https://x.test/p?api_key=secret&a=1"),
        );
        headers.insert("x-raw", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        for i in 0..40 {
            headers.insert(
                http::HeaderName::from_bytes(format!("x-many-{i:02}").as_bytes()).unwrap(),
                HeaderValue::from_static("v"),
            );
        }
        let recorded = RecordedHeaders::of(&headers);
        for direction in [Direction::Request, Direction::Response] {
            let typed = StoredHeaders {
                headers: &recorded,
                sanitizer: &sanitizer,
                direction,
            };
            assert_eq!(
                metadata_of(&typed),
                Metadata::from_value(&headers_to_value(&headers, &sanitizer, direction))
            );
        }
    }
}

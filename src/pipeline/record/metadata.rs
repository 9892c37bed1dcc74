//! The metadata of a call's REQUEST, RESPONSE and ERROR events as typed
//! structs that serialise straight to the event's canonical JSON text.
//!
//! Fields are declared in sorted key order (the canonical form; debug
//! builds check it in [`Metadata::of`]), and each serialises to what the
//! contract in DESIGN.md names: optional fields that a record leaves out
//! are skipped, the others are written, as `null` when empty.

use std::borrow::Cow;
use std::net::IpAddr;

use http::HeaderMap;
use serde::ser::{SerializeMap, SerializeStruct};
use serde::{Serialize, Serializer};

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
    pub usage: Option<&'a serde_json::Value>,
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
    pub headers: &'a HeaderMap,
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
        let kept = self
            .headers
            .keys()
            .map(|name| name.as_str())
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
        let values = self.stored_values(names);
        let mut map = s.serialize_map(Some(names.len()))?;
        let mut values = values.into_iter().peekable();
        for (n, name) in names.iter().enumerate() {
            // A header with one value is stored as it is, without joining.
            let mut joined: Cow<'_, str> = Cow::Borrowed("");
            let mut first = true;
            while let Some(value) = values.next_if(|v| v.name == n) {
                if first {
                    joined = value.stored;
                    first = false;
                } else {
                    let joined = joined.to_mut();
                    joined.push_str(", ");
                    joined.push_str(&value.stored);
                }
            }
            map.serialize_entry(name, &joined)?;
        }
        map.end()
    }
}

/// One header value on its way to the store.
struct HeaderText<'a> {
    /// Index of its header's name.
    name: usize,
    /// The value as stored: its text with credential parameters of URLs
    /// replaced, then cleaned; [`NON_UTF8`] for a value that is not text.
    stored: Cow<'a, str>,
    /// Not text: nothing to search.
    raw: bool,
}

impl AsRef<str> for HeaderText<'_> {
    fn as_ref(&self) -> &str {
        if self.raw {
            ""
        } else {
            &self.stored
        }
    }
}

impl<'a> StoredHeaders<'a> {
    /// Every value of each of `names`, in order, cleaned: all of them
    /// searched with one pass of the detectors, each value's findings
    /// those of a search of it alone. Values that need no cleaning are
    /// borrowed from the request.
    fn stored_values(&self, names: &[&str]) -> Vec<HeaderText<'a>> {
        let mut values = Vec::with_capacity(self.headers.len());
        for (n, name) in names.iter().enumerate() {
            for value in self.headers.get_all(*name) {
                values.push(match std::str::from_utf8(value.as_bytes()) {
                    Ok(text) if text.contains(['?', ';']) => HeaderText {
                        name: n,
                        stored: Cow::Owned(redact_query(text)),
                        raw: false,
                    },
                    Ok(text) => HeaderText {
                        name: n,
                        stored: Cow::Borrowed(text),
                        raw: false,
                    },
                    Err(_) => HeaderText {
                        name: n,
                        stored: Cow::Borrowed(NON_UTF8),
                        raw: true,
                    },
                });
            }
        }
        let mut cleaned = Vec::new();
        self.sanitizer
            .redact_stored_each(&values, Some(self.direction), |i, text| {
                cleaned.push((i, text));
            });
        for (i, text) in cleaned {
            values[i].stored = text;
        }
        values
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

#[cfg(test)]
mod tests {
    use http::HeaderValue;

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
    fn headers_searched_together_are_stored_as_each_alone() {
        let mut defs = crate::policy::load_pack("pii-basic").unwrap();
        defs.extend(crate::policy::load_pack("secrets").unwrap());
        let policies = std::sync::Arc::new(crate::policy::PolicySet::compile(&defs).unwrap());
        let sanitizer = Sanitizer::from_policies(policies);
        let mut headers = HeaderMap::new();
        // Values at the edges of their texts, next to each other.
        headers.insert("x-a-mail", HeaderValue::from_static("jane.doe@example.com"));
        headers.insert("x-b-phone", HeaderValue::from_static("+1 415 555 2671"));
        // A context word in one header does not confirm a number in the
        // next: a bare nine-digit number stays.
        headers.insert("x-c-word", HeaderValue::from_static("applicant ssn"));
        headers.insert("x-d-number", HeaderValue::from_static("219099999"));
        // One card split over two values of one header is not a card.
        headers.append("x-e-multi", HeaderValue::from_static("4111 1111"));
        headers.append("x-e-multi", HeaderValue::from_static("1111 1111"));
        headers.append("x-e-multi", HeaderValue::from_static(""));
        headers.append(
            "x-e-multi",
            HeaderValue::from_static("sk-proj-abcdefghijklmnopqrstuvwxyz0123456789"),
        );
        headers.insert("x-f-empty", HeaderValue::from_static(""));
        headers.insert(
            "x-g-raw",
            HeaderValue::from_bytes(b"\xffjane@example.com").unwrap(),
        );
        headers.insert(
            "x-h-url",
            HeaderValue::from_static("https://x.test/p?api_key=secret&to=jane.doe@example.com"),
        );
        for direction in [Direction::Request, Direction::Response] {
            let typed = StoredHeaders {
                headers: &headers,
                sanitizer: &sanitizer,
                direction,
            };
            let stored = metadata_of(&typed);
            assert_eq!(
                stored,
                Metadata::from_value(&headers_to_value(&headers, &sanitizer, direction))
            );
            let text = stored.as_str().to_owned();
            for gone in ["jane.doe@example.com", "415 555 2671", "sk-proj-"] {
                assert!(!text.contains(gone), "{text}");
            }
            for kept in ["219099999", "4111 1111, 1111 1111", "[NON_UTF8]"] {
                assert!(text.contains(kept), "{text}");
            }
        }
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
        for direction in [Direction::Request, Direction::Response] {
            let typed = StoredHeaders {
                headers: &headers,
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

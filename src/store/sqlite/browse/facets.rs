//! The fields of an event's metadata that the facets table, the rollups
//! and the text index keep, read in one pass over its JSON text: the
//! strings are borrowed from the text and no tree is built.

use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use crate::event::TextOf;

/// A top-level metadata value as the index reads it: a string, a number,
/// or anything else (ignored).
#[derive(Debug, Clone, Default, PartialEq)]
pub enum Scalar<'a> {
    Text(std::borrow::Cow<'a, str>),
    /// A non-negative integer.
    UInt(u64),
    /// A negative integer.
    Int(i64),
    Float(f64),
    #[default]
    Other,
}

/// What [`read`] found.
#[derive(Debug, Default)]
pub struct Facets<'a> {
    pub model: Scalar<'a>,
    pub operation: Scalar<'a>,
    pub outcome: Scalar<'a>,
    pub status: Scalar<'a>,
    pub latency_ms: Scalar<'a>,
    /// `usage.total_tokens`.
    pub total_tokens: Scalar<'a>,
    pub policy_name: Scalar<'a>,
    pub severity: Scalar<'a>,
}

/// Reads the facets of `metadata` and appends every string of its
/// `body_field` (depth first, separated by spaces) to `text`. Metadata
/// that is not a JSON object has no facets.
pub fn read<'a>(metadata: &'a str, body_field: Option<&str>, text: &mut String) -> Facets<'a> {
    let mut facets = Facets::default();
    let mut de = serde_json::Deserializer::from_str(metadata);
    let _ = de.deserialize_any(TopLevel {
        facets: &mut facets,
        body_field,
        text,
    });
    facets
}

// === impl Scalar ===

impl Scalar<'_> {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Text(s) => Some(s),
            _ => None,
        }
    }

    /// As `serde_json::Value::as_i64`.
    pub fn as_i64(&self) -> Option<i64> {
        match *self {
            Scalar::UInt(n) => i64::try_from(n).ok(),
            Scalar::Int(n) => Some(n),
            _ => None,
        }
    }

    /// As `serde_json::Value::as_u64`.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Scalar::UInt(n) => Some(n),
            _ => None,
        }
    }

    /// As `serde_json::Value::as_f64`.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Scalar::UInt(n) => Some(n as f64),
            Scalar::Int(n) => Some(n as f64),
            Scalar::Float(n) => Some(n),
            _ => None,
        }
    }
}

impl<'de> Deserialize<'de> for Scalar<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(s.into()))
    }
    fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Text(s.to_owned().into()))
    }
    fn visit_u64<E>(self, n: u64) -> Result<Self::Value, E> {
        Ok(Scalar::UInt(n))
    }
    fn visit_i64<E>(self, n: i64) -> Result<Self::Value, E> {
        Ok(if n >= 0 {
            Scalar::UInt(n as u64)
        } else {
            Scalar::Int(n)
        })
    }
    fn visit_f64<E>(self, n: f64) -> Result<Self::Value, E> {
        Ok(Scalar::Float(n))
    }
    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

/// The `visit_*` methods of a visitor for numbers, booleans and `null`,
/// each answering `$value`: the visitors below skip those values.
macro_rules! numbers_and_literals_give {
    ($value:expr) => {
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok($value)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok($value)
        }
    };
}

/// The top-level object.
struct TopLevel<'f, 'a, 't> {
    facets: &'f mut Facets<'a>,
    body_field: Option<&'t str>,
    text: &'t mut String,
}

impl<'a> Visitor<'a> for TopLevel<'_, 'a, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object")
    }

    fn visit_map<A: MapAccess<'a>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(TextOf(key)) = map.next_key::<TextOf<'a>>()? {
            let facets = &mut *self.facets;
            let slot = match &*key {
                "model" => &mut facets.model,
                "operation" => &mut facets.operation,
                "outcome" => &mut facets.outcome,
                "status" => &mut facets.status,
                "latency_ms" => &mut facets.latency_ms,
                "policy_name" => &mut facets.policy_name,
                "severity" => &mut facets.severity,
                "usage" => {
                    facets.total_tokens = map.next_value_seed(TotalTokens)?;
                    continue;
                }
                other if Some(other) == self.body_field => {
                    map.next_value_seed(StringsInto(&mut *self.text))?;
                    continue;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value()?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'a>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
    numbers_and_literals_give!(());
}

/// `total_tokens` of a `usage` object.
struct TotalTokens;

impl<'de> DeserializeSeed<'de> for TotalTokens {
    type Value = Scalar<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for TotalTokens {
    type Value = Scalar<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = Scalar::Other;
        while let Some(TextOf(key)) = map.next_key::<TextOf<'de>>()? {
            if key == "total_tokens" {
                found = map.next_value()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    numbers_and_literals_give!(Scalar::Other);
}

/// Keys of a request or response body whose values are identifiers or
/// protocol words, not text a reader searches for: left out of the text
/// index, so each call adds fewer terms to it (every distinct term of a
/// transaction costs the index an allocation). The model has its own
/// filter.
const NOT_SEARCHED: &[&str] = &[
    "id",
    "object",
    "model",
    "role",
    "type",
    "finish_reason",
    "system_fingerprint",
    "tool_call_id",
    "service_tier",
    "encoding_format",
];

/// Shortest unbroken run of base64 or hex characters taken for encoded
/// data (an image, an embedding, a hash) rather than words.
const ENCODED_MIN_LEN: usize = 64;

/// Whether a string is encoded data no reader types into a search box: a
/// `data:` URL with base64 content, or a long run of base64 characters
/// with no space.
fn is_encoded(s: &str) -> bool {
    if s.starts_with("data:") && s.contains(";base64,") {
        return true;
    }
    s.len() >= ENCODED_MIN_LEN
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'_' | b'-'))
}

/// Appends the searchable strings of a value to a text, depth first,
/// separated by spaces: every string except the values of
/// [`NOT_SEARCHED`] keys and encoded data (object keys are not part of
/// it).
struct StringsInto<'t>(&'t mut String);

impl<'de> DeserializeSeed<'de> for StringsInto<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StringsInto<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_str<E>(self, s: &str) -> Result<(), E> {
        if is_encoded(s) {
            return Ok(());
        }
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        self.0.push_str(s);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element_seed(StringsInto(&mut *self.0))?.is_some() {}
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(TextOf(key)) = map.next_key::<TextOf<'de>>()? {
            if NOT_SEARCHED.contains(&&*key) {
                map.next_value::<IgnoredAny>()?;
            } else {
                map.next_value_seed(StringsInto(&mut *self.0))?;
            }
        }
        Ok(())
    }
    numbers_and_literals_give!(());
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;

    #[test]
    fn ids_protocol_words_and_encoded_data_are_not_searched() {
        let metadata = json!({"response_data": {"id": "chatcmpl-9", "object": "chat.completion",
            "model": "gpt-4o", "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                "content": "The parcel is delayed.", "tool_calls": [{"id": "call_1", "type": "function",
                "function": {"name": "track", "arguments": "{\"parcel\": \"A1\"}"}}]}}],
            "data": [{"embedding": "AAAAgD8AAABA".repeat(8)}],
            "image": "data:image/png;base64,iVBORw0KGgo="}})
        .to_string();
        let mut text = String::new();
        read(&metadata, Some("response_data"), &mut text);
        assert_eq!(text, "The parcel is delayed. {\"parcel\": \"A1\"} track");
        // Short words without spaces, and long text with spaces, are words.
        assert!(!is_encoded("deadbeef"));
        assert!(!is_encoded(&"a word ".repeat(20)));
        assert!(is_encoded(&"0123456789abcdef".repeat(4)));
    }

    /// The searchable strings of `value`, read from its tree.
    fn strings_of(value: &Value, out: &mut String) {
        match value {
            Value::String(s) if !is_encoded(s) => {
                if !out.is_empty() {
                    out.push(' ');
                }
                out.push_str(s);
            }
            Value::Array(items) => items.iter().for_each(|v| strings_of(v, out)),
            Value::Object(map) => map
                .iter()
                .filter(|(k, _)| !NOT_SEARCHED.contains(&k.as_str()))
                .for_each(|(_, v)| strings_of(v, out)),
            _ => {}
        }
    }

    #[test]
    fn facets_read_as_a_tree_would() {
        let cases = [
            json!({"model": "gpt-4o", "operation": "chat.create", "outcome": "completed",
                   "status": 200, "latency_ms": 12.5, "usage": {"total_tokens": 42, "x": [1]},
                   "response_data": {"b": ["x\"y", {"c": "z"}], "a": 1, "d": null}}),
            json!({"model": null, "status": -1, "latency_ms": 3, "usage": null,
                   "policy_name": "pii", "severity": "high", "request_data": "one"}),
            json!({"status": 18446744073709551615u64, "model": 5, "usage": [1],
                   "request_data": [["deep", ["er"]], true]}),
            json!({"response_data": {"id": "chatcmpl-1", "object": "chat.completion",
                   "model": "m", "choices": [{"message": {"role": "assistant",
                   "content": "kept words"}, "finish_reason": "stop"}],
                   "data": [{"embedding": "QUJD".repeat(20)}]},
                   "request_data": {"messages": [{"role": "user", "content": [
                       {"type": "text", "text": "look"},
                       {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBO"}}]}],
                   "user": "u-1"}}),
            json!([1, 2]),
            json!("text"),
        ];
        for case in cases {
            let metadata = case.to_string();
            for body in ["request_data", "response_data"] {
                let mut text = String::new();
                let facets = read(&metadata, Some(body), &mut text);
                let m = &case;
                assert_eq!(facets.model.as_str(), m["model"].as_str(), "{m}");
                assert_eq!(facets.operation.as_str(), m["operation"].as_str());
                assert_eq!(facets.outcome.as_str(), m["outcome"].as_str());
                assert_eq!(facets.status.as_i64(), m["status"].as_i64(), "{m}");
                assert_eq!(facets.status.as_u64(), m["status"].as_u64(), "{m}");
                assert_eq!(facets.latency_ms.as_f64(), m["latency_ms"].as_f64());
                assert_eq!(
                    facets.total_tokens.as_i64(),
                    m["usage"]["total_tokens"].as_i64()
                );
                assert_eq!(facets.policy_name.as_str(), m["policy_name"].as_str());
                assert_eq!(facets.severity.as_str(), m["severity"].as_str());
                let mut expected = String::new();
                strings_of(&m[body], &mut expected);
                assert_eq!(text, expected, "{m}");
            }
        }
    }
}

//! [`Metadata`]: an event's metadata as the canonical JSON text that is
//! hashed, stored, shipped and returned.
//!
//! The text is the event's metadata; nothing keeps a parsed tree beside it.
//! Producers on the record path serialise typed structs straight to this
//! text, stores and exports pass it through, and the few readers that look
//! inside parse it (all of it with [`Metadata::value`], one top-level field
//! with [`Metadata::field`]).
//!
//! Canonical means compact, with every object's keys in sorted order: what
//! `serde_json` writes for a [`Value`] (its `Map` is a `BTreeMap`).

use std::borrow::Cow;
use std::fmt;
use std::sync::{Arc, LazyLock};

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// An event's metadata as canonical JSON. Cheap to clone: copies share
/// the text.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct Metadata(Arc<str>);

/// `{}`, shared by every event created without metadata.
static EMPTY_OBJECT: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from("{}"));

impl Metadata {
    /// An empty object.
    pub fn empty() -> Self {
        Self(EMPTY_OBJECT.clone())
    }

    /// The canonical text of `value`.
    pub fn from_value(value: &Value) -> Self {
        written(value)
    }

    /// The JSON text of `typed`, written directly without a tree in
    /// between. `typed` must serialise canonically: struct fields declared
    /// in sorted order, maps with sorted keys, no floats that are not
    /// finite. Debug builds check this on every call.
    pub fn of<T: Serialize + ?Sized>(typed: &T) -> Self {
        let metadata = written(typed);
        #[cfg(debug_assertions)]
        {
            let reparsed: Value = serde_json::from_str(&metadata.0).unwrap_or_default();
            let canonical = serde_json::to_string(&reparsed).unwrap_or_default();
            assert_eq!(
                &*metadata.0, canonical,
                "metadata written in non-canonical form"
            );
        }
        metadata
    }

    /// Any JSON text, made canonical (parsed and written again only when
    /// it differs from its canonical form).
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        let value: Value = serde_json::from_str(text)?;
        let canonical = serde_json::to_string(&value)?;
        Ok(if canonical == text {
            Self(text.into())
        } else {
            Self(canonical.into())
        })
    }

    /// The canonical text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Bytes of the text.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the text is empty (never, for metadata built here).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The metadata as a tree, for readers that look at several fields.
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap_or(Value::Null)
    }

    /// One top-level field, `Value::Null` when absent or when the metadata
    /// is not an object. Only that field is built; the others are skipped.
    pub fn field(&self, key: &str) -> Value {
        let mut de = serde_json::Deserializer::from_str(&self.0);
        FieldSeed { key }
            .deserialize(&mut de)
            .ok()
            .flatten()
            .unwrap_or(Value::Null)
    }

    /// The metadata with `key` set to `value`, when it is an object
    /// without that key; otherwise unchanged. The text is spliced at the
    /// key's sorted place without parsing the rest.
    pub fn with_field_if_absent(&self, key: &str, value: &Value) -> Self {
        let (at, comma_before) = match splice_point(&self.0, key) {
            Splice::At {
                offset,
                comma_before,
            } => (offset, comma_before),
            Splice::Leave => return self.clone(),
            Splice::Unknown => {
                // A key with escapes: compared as a tree does.
                let mut tree = self.value();
                return match tree.as_object_mut() {
                    Some(object) if !object.contains_key(key) => {
                        object.insert(key.to_owned(), value.clone());
                        Self::from_value(&tree)
                    }
                    _ => self.clone(),
                };
            }
        };
        let value = serde_json::to_string(value).unwrap_or_default();
        let key = serde_json::to_string(key).unwrap_or_default();
        let comma_after = !comma_before && self.0.len() > 2;
        let mut text = String::with_capacity(self.0.len() + key.len() + value.len() + 2);
        text.push_str(&self.0[..at]);
        if comma_before {
            text.push(',');
        }
        text.push_str(&key);
        text.push(':');
        text.push_str(&value);
        if comma_after {
            text.push(',');
        }
        text.push_str(&self.0[at..]);
        Self(text.into())
    }
}

/// Most bytes the per-thread buffer keeps between events; a larger
/// buffer is dropped after use.
const KEPT_BUFFER_BYTES: usize = 256 * 1024;

thread_local! {
    /// Where metadata is written before it is copied into its shared text:
    /// one allocation per event instead of a buffer grown by doubling.
    static BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// `typed` serialised as JSON, in one allocation of its exact size.
fn written<T: Serialize + ?Sized>(typed: &T) -> Metadata {
    let text = BUFFER.with(|buffer| {
        let Ok(mut buffer) = buffer.try_borrow_mut() else {
            // Serialising inside a serialisation: no shared buffer.
            return Arc::from(serde_json::to_string(typed).unwrap_or_else(|_| "null".into()));
        };
        buffer.clear();
        let text: Arc<str> = match serde_json::to_writer(&mut *buffer, typed) {
            // serde_json writes only UTF-8.
            Ok(()) => Arc::from(std::str::from_utf8(&buffer).unwrap_or("null")),
            Err(_) => Arc::from("null"),
        };
        if buffer.capacity() > KEPT_BUFFER_BYTES {
            *buffer = Vec::new();
        }
        text
    });
    Metadata(text)
}

/// What [`splice_point`] found.
enum Splice {
    /// Insert the new member at `offset`, after a comma when
    /// `comma_before` (it goes last), else before one (unless the object
    /// is empty).
    At { offset: usize, comma_before: bool },
    /// Not an object, or the key is there already.
    Leave,
    /// A member key with escapes, which this scan does not compare.
    Unknown,
}

/// Where a new top-level `key` goes in the canonical object `text`.
fn splice_point(text: &str, key: &str) -> Splice {
    let bytes = text.as_bytes();
    if bytes.first() != Some(&b'{') {
        return Splice::Leave;
    }
    if bytes.get(1) == Some(&b'}') {
        return Splice::At {
            offset: 1,
            comma_before: false,
        };
    }
    // At each member: read its key, compare, then skip its value.
    let mut at = 1;
    loop {
        let Some((member_key, after_key)) = read_plain_string(bytes, at) else {
            return Splice::Unknown;
        };
        match member_key.cmp(key.as_bytes()) {
            std::cmp::Ordering::Equal => return Splice::Leave,
            std::cmp::Ordering::Greater => {
                return Splice::At {
                    offset: at,
                    comma_before: false,
                }
            }
            std::cmp::Ordering::Less => {}
        }
        if bytes.get(after_key) != Some(&b':') {
            return Splice::Unknown;
        }
        let Some(end) = skip_value(bytes, after_key + 1) else {
            return Splice::Unknown;
        };
        match bytes.get(end) {
            Some(b',') => at = end + 1,
            Some(b'}') => {
                return Splice::At {
                    offset: end,
                    comma_before: true,
                }
            }
            _ => return Splice::Unknown,
        }
    }
}

/// A string without escapes starting at `at` (its opening quote): its
/// bytes and the offset after its closing quote.
fn read_plain_string(bytes: &[u8], at: usize) -> Option<(&[u8], usize)> {
    if bytes.get(at) != Some(&b'"') {
        return None;
    }
    let rest = &bytes[at + 1..];
    let end = rest.iter().position(|&b| b == b'"' || b == b'\\')?;
    if rest[end] == b'\\' {
        return None;
    }
    Some((&rest[..end], at + 1 + end + 1))
}

/// The offset just after the compact JSON value that starts at `at`: the
/// `,` or closing bracket that follows it.
fn skip_value(bytes: &[u8], mut at: usize) -> Option<usize> {
    let mut depth = 0usize;
    loop {
        match *bytes.get(at)? {
            b'"' => {
                at += 1;
                loop {
                    match *bytes.get(at)? {
                        b'\\' => at += 2,
                        b'"' => break,
                        _ => at += 1,
                    }
                }
                at += 1;
            }
            b'{' | b'[' => {
                depth += 1;
                at += 1;
            }
            b'}' | b']' if depth == 0 => return Some(at),
            b'}' | b']' => {
                depth -= 1;
                at += 1;
            }
            b',' if depth == 0 => return Some(at),
            _ => at += 1,
        }
    }
}

/// A JSON string, borrowed from the input unless it holds escapes: keys
/// and short fields read without an allocation each.
#[derive(Debug, Clone, PartialEq)]
pub struct TextOf<'de>(pub Cow<'de, str>);

impl<'de> Deserialize<'de> for TextOf<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct TextVisitor;
        impl<'de> Visitor<'de> for TextVisitor {
            type Value = TextOf<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Self::Value, E> {
                Ok(TextOf(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Self::Value, E> {
                Ok(TextOf(Cow::Owned(s.to_owned())))
            }
        }
        d.deserialize_str(TextVisitor)
    }
}

/// Finds one top-level field of an object, skipping the others.
struct FieldSeed<'k> {
    key: &'k str,
}

impl<'de> DeserializeSeed<'de> for FieldSeed<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for FieldSeed<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(TextOf(key)) = map.next_key::<TextOf<'de>>()? {
            if found.is_none() && key == self.key {
                found = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(found)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

impl Default for Metadata {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Value> for Metadata {
    fn from(value: Value) -> Self {
        Self::from_value(&value)
    }
}

impl From<&Value> for Metadata {
    fn from(value: &Value) -> Self {
        Self::from_value(value)
    }
}

impl fmt::Debug for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for Metadata {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Metadata {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        // Written as it is; the borrowed RawValue's parse only checks the
        // text, without building anything.
        let raw: &RawValue = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
        raw.serialize(s)
    }
}

impl<'de> Deserialize<'de> for Metadata {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Value::deserialize(d).map(|v| Self::from_value(&v))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn text_is_canonical_whatever_the_input() {
        let m = Metadata::from_json(r#"{ "b": 1, "a": {"z": [1, 2.5], "y": null} }"#).unwrap();
        assert_eq!(m.as_str(), r#"{"a":{"y":null,"z":[1,2.5]},"b":1}"#);
        assert_eq!(
            m,
            Metadata::from(json!({"b": 1, "a": {"y": null, "z": [1, 2.5]}}))
        );
        assert!(Metadata::from_json("{").is_err());
        assert_eq!(Metadata::default().as_str(), "{}");
    }

    #[test]
    fn serialises_as_the_json_it_holds() {
        let m = Metadata::from(json!({"a": "x\"y", "n": 3}));
        let wrapped = serde_json::to_string(&json!({"m": 1})).unwrap();
        assert_eq!(wrapped, r#"{"m":1}"#);
        #[derive(Serialize)]
        struct Outer<'a> {
            metadata: &'a Metadata,
        }
        assert_eq!(
            serde_json::to_string(&Outer { metadata: &m }).unwrap(),
            r#"{"metadata":{"a":"x\"y","n":3}}"#
        );
        let back: Metadata = serde_json::from_str(r#"{"n": 3, "a": "x\"y"}"#).unwrap();
        assert_eq!(back, m);
    }

    #[test]
    fn one_field_is_read_without_the_others() {
        let m = Metadata::from(json!({"a": [1, {"b": 2}], "details": {"x": 1}, "z": "s"}));
        assert_eq!(m.field("details"), json!({"x": 1}));
        assert_eq!(m.field("z"), "s");
        assert_eq!(m.field("missing"), Value::Null);
        assert_eq!(Metadata::from(json!([1, 2])).field("a"), Value::Null);
        assert_eq!(Metadata::from(json!("text")).field("a"), Value::Null);
        assert_eq!(m.value()["details"]["x"], 1);
    }

    #[test]
    #[should_panic(expected = "non-canonical")]
    #[cfg(debug_assertions)]
    fn typed_metadata_out_of_key_order_is_caught() {
        #[derive(Serialize)]
        struct Unsorted {
            b: u8,
            a: u8,
        }
        Metadata::of(&Unsorted { b: 1, a: 2 });
    }

    #[test]
    fn a_field_is_spliced_in_where_a_tree_would_put_it() {
        let source = json!({"pod": "p-1", "node": "n\"1"});
        let objects = [
            json!({}),
            json!({"a": 1}),
            json!({"z": 1}),
            json!({"a": {"source": 1, "t": [1, "}"]}, "t": "x,y:z", "u": null}),
            json!({"phase": "shutdown", "reason": "a\\\"b", "seq": 7}),
            json!({"a": [[], {}], "b": -1.5e-7, "c": true}),
            json!({"é": 1, "a": "\u{1}"}),
            json!({"source": "kept"}),
            json!({"a\"b": 1, "z": 2}),
            json!({"a\"b": 1, "source": 2}),
        ];
        for object in objects {
            let mut expected = object.clone();
            if !expected.as_object().unwrap().contains_key("source") {
                expected["source"] = source.clone();
            }
            let spliced = Metadata::from(&object).with_field_if_absent("source", &source);
            assert_eq!(spliced, Metadata::from(&expected), "{object}");
        }
        // Not an object: left alone.
        let list = Metadata::from(json!([1]));
        assert_eq!(list.with_field_if_absent("source", &source), list);
    }
}

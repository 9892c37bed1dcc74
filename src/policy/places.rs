//! Where in an OpenAI-style body the model's text lives, and the rest of
//! what a body holds.
//!
//! A string is text when the key that holds it (or holds the array it is
//! in) is one of [`TEXT_KEYS`]: message `content` (plain or the `text` of
//! multi-part items), tool-call `arguments`, Responses API `input`,
//! `instructions` and `output`, legacy `prompt`, embedding `input`,
//! `refusal`, a transcript's `text`. One rule covers requests, responses
//! and stream chunks (`delta.content`), so new shapes that reuse the names
//! are covered too. The text of a body is searched as one, in document
//! order, so a value typed over two messages is found.
//!
//! Every other string (ids, names, `user`, metadata) and every object key
//! is searched too, each on its own: a value in the wrong field is stored
//! like any other. Only inline binary is left alone: `data:` URIs and
//! base64 payloads (`b64_json`, `input_audio.data`).

use std::borrow::Cow;

use serde_json::Value;

use crate::capture::json_view::{At, JsonView, NodeId};

/// Keys whose string values (or arrays of strings) the model reads or
/// writes.
pub(crate) const TEXT_KEYS: &[&str] = &[
    "content",
    "text",
    "arguments",
    "input",
    "instructions",
    "prompt",
    "output",
    "output_text",
    "refusal",
    "revised_prompt",
    "system",
    "suffix",
    "query",
];

/// Keys whose strings are base64 payloads (generated images, audio in and
/// out), searched only when they do not look like base64.
const PAYLOAD_KEYS: &[&str] = &["b64_json", "data"];

/// What a string under a key is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Text,
    Other,
    /// Maybe a base64 payload: see [`PAYLOAD_KEYS`].
    Payload,
}

fn kind_of(key: &str) -> Kind {
    if TEXT_KEYS.contains(&key) {
        Kind::Text
    } else if PAYLOAD_KEYS.contains(&key) {
        Kind::Payload
    } else {
        Kind::Other
    }
}

/// Inline binary (images, audio, files) is data, not text, and holds no
/// value anyone could read: it is not searched.
fn is_binary(s: &str, kind: Kind) -> bool {
    is_data_uri(s) || (kind == Kind::Payload && is_base64(s))
}

fn is_data_uri(s: &str) -> bool {
    s.starts_with("data:") && s.contains(";base64,")
}

/// Long and only the base64 alphabet.
fn is_base64(s: &str) -> bool {
    s.len() >= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'=' | b'-' | b'_'))
}

/// The strings of a body, in document order, sorted into the model's text
/// and everything else (ids, names, fields, data URIs). Object keys are
/// gathered apart: they cannot be changed in place.
#[derive(Debug)]
pub(crate) struct Strings<S> {
    pub text: Vec<S>,
    pub other: Vec<S>,
}

/// Every string value of `body`, by place. A bare string body is text.
pub(crate) fn strings(body: &Value) -> Strings<&str> {
    let mut out = Strings {
        text: Vec::new(),
        other: Vec::new(),
    };
    let mut stack: Vec<(&Value, Kind)> = vec![(body, Kind::Text)];
    while let Some((v, kind)) = stack.pop() {
        match v {
            Value::String(s) if is_binary(s, kind) => {}
            Value::String(s) if kind == Kind::Text => out.text.push(s.as_str()),
            Value::String(s) => out.other.push(s.as_str()),
            // Pushed in reverse, so they are visited in document order: a
            // value split over two messages is searched as one.
            Value::Array(items) => stack.extend(items.iter().rev().map(|i| (i, kind))),
            Value::Object(map) => stack.extend(map.iter().rev().map(|(k, v)| (v, kind_of(k)))),
            _ => {}
        }
    }
    out
}

/// As [`strings`], mutable, in the same order.
pub(crate) fn strings_mut(body: &mut Value) -> Strings<&mut String> {
    let mut out = Strings {
        text: Vec::new(),
        other: Vec::new(),
    };
    let mut stack: Vec<(&mut Value, Kind)> = vec![(body, Kind::Text)];
    while let Some((v, kind)) = stack.pop() {
        match v {
            Value::String(s) => {
                if is_binary(s, kind) {
                    continue;
                }
                if kind == Kind::Text {
                    out.text.push(s);
                } else {
                    out.other.push(s);
                }
            }
            Value::Array(items) => stack.extend(items.iter_mut().rev().map(|i| (i, kind))),
            Value::Object(map) => stack.extend(map.iter_mut().rev().map(|(k, v)| {
                let kind = kind_of(k);
                (v, kind)
            })),
            _ => {}
        }
    }
    out
}

/// Every object key of `body`, in the order [`rename_keys`] visits them.
pub(crate) fn keys(body: &Value) -> Vec<&str> {
    let mut out = Vec::new();
    let mut stack = vec![body];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter()),
            Value::Object(map) => {
                out.extend(map.keys().map(String::as_str));
                stack.extend(map.values());
            }
            _ => {}
        }
    }
    out
}

/// Replaces object keys: `rename(i, key)` gets each key with its index in
/// [`keys`] order and returns the new name, if any. A new name that is
/// already taken in its object gets a `#n` suffix, so no value is lost.
pub(crate) fn rename_keys(
    body: &mut Value,
    rename: &mut impl FnMut(usize, &str) -> Option<String>,
) {
    let mut index = 0;
    let mut stack = vec![body];
    while let Some(v) = stack.pop() {
        match v {
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => {
                let renames: Vec<(usize, String, String)> = map
                    .keys()
                    .enumerate()
                    .filter_map(|(i, k)| rename(index + i, k).map(|new| (i, k.clone(), new)))
                    .collect();
                index += map.len();
                if renames.is_empty() {
                    stack.extend(map.values_mut());
                    continue;
                }
                // Where each value stood before the renames, so its keys
                // are still visited in the order `keys` saw them.
                let mut position: std::collections::HashMap<String, usize> = map
                    .keys()
                    .enumerate()
                    .map(|(i, k)| (k.clone(), i))
                    .collect();
                for (i, old, new) in renames {
                    if let Some(value) = map.remove(&old) {
                        position.remove(&old);
                        let mut name = new.clone();
                        let mut n = 2;
                        while map.contains_key(&name) {
                            name = format!("{new}#{n}");
                            n += 1;
                        }
                        position.insert(name.clone(), i);
                        map.insert(name, value);
                    }
                }
                let mut children: Vec<(usize, &mut Value)> = map
                    .iter_mut()
                    .map(|(k, v)| (position.get(k).copied().unwrap_or(usize::MAX), v))
                    .collect();
                children.sort_by_key(|(i, _)| *i);
                stack.extend(children.into_iter().map(|(_, v)| v));
            }
            _ => {}
        }
    }
}

/// Each string value of `body` with its JSON pointer, text first then the
/// rest, in the order of [`strings`]; for reports that say where a finding
/// is.
pub(crate) fn string_pointers(body: &Value) -> Strings<String> {
    let mut out = Strings {
        text: Vec::new(),
        other: Vec::new(),
    };
    let mut stack: Vec<(&Value, Kind, String)> = vec![(body, Kind::Text, String::new())];
    while let Some((v, kind, at)) = stack.pop() {
        match v {
            Value::String(s) if is_binary(s, kind) => {}
            Value::String(_) if kind == Kind::Text => out.text.push(at),
            Value::String(_) => out.other.push(at),
            Value::Array(items) => stack.extend(
                items
                    .iter()
                    .enumerate()
                    .rev()
                    .map(|(i, item)| (item, kind, format!("{at}/{i}"))),
            ),
            Value::Object(map) => stack.extend(map.iter().rev().map(|(k, v)| {
                let escaped = k.replace('~', "~0").replace('/', "~1");
                (v, kind_of(k), format!("{at}/{escaped}"))
            })),
            _ => {}
        }
    }
    out
}

/// As [`strings`], over a view of the raw text: each string with its node,
/// in the same order (the view orders members as the parsed `Value` does).
pub(crate) fn view_strings<'a>(view: &JsonView<'a>) -> Strings<(NodeId, Cow<'a, str>)> {
    // About half of a body's nodes are strings, and about half of the
    // strings in a chat body are text: room for them all up front.
    let mut out = Strings {
        text: Vec::with_capacity(view.len() / 4 + 1),
        other: Vec::with_capacity(view.len() / 2 + 1),
    };
    walk_view(view.root(), Kind::Text, &mut out);
    out
}

fn walk_view<'a>(at: At<'_, 'a>, kind: Kind, out: &mut Strings<(NodeId, Cow<'a, str>)>) {
    if let Some(s) = at.as_str() {
        if is_binary(&s, kind) {
            return;
        }
        if kind == Kind::Text {
            out.text.push((at.id(), s));
        } else {
            out.other.push((at.id(), s));
        }
    } else if let Some(items) = at.items() {
        for item in items {
            walk_view(item, kind, out);
        }
    } else if let Some(members) = at.members() {
        for (key, value) in members {
            walk_view(value, kind_of(&key), out);
        }
    }
}

/// Calls `f` with every object key of a view. Unlike [`keys`], in
/// document order: keys are each searched on their own, so their order
/// changes no finding.
pub(crate) fn for_each_view_key<'a>(view: &JsonView<'a>, f: &mut impl FnMut(Cow<'a, str>)) {
    fn walk<'a>(at: At<'_, 'a>, f: &mut impl FnMut(Cow<'a, str>)) {
        if let Some(items) = at.items() {
            for item in items {
                walk(item, f);
            }
        } else if let Some(members) = at.members() {
            for (key, value) in members {
                f(key);
                walk(value, f);
            }
        }
    }
    walk(view.root(), f);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renamed_keys_keep_the_visiting_order_of_nested_keys() {
        let mut body = json!({
            "a": {"secret-1": 1, "z": {"secret-2": 2}},
            "secret-0": {"b": 0, "secret-3": 3},
            "c": [{"secret-4": 4}],
        });
        let before: Vec<String> = keys(&body).into_iter().map(str::to_owned).collect();
        let mut seen = Vec::new();
        rename_keys(&mut body, &mut |i, k| {
            seen.push((i, k.to_owned()));
            k.starts_with("secret").then(|| format!("[X]{i}"))
        });
        let visited: Vec<String> = seen.iter().map(|(_, k)| k.clone()).collect();
        assert_eq!(visited, before);
        // Every secret key was renamed, with the index `keys` gave it.
        for (i, k) in before.iter().enumerate() {
            if k.starts_with("secret") {
                assert!(body.to_string().contains(&format!("[X]{i}")), "{k} {body}");
            }
        }
        assert!(!body.to_string().contains("secret"));
    }
}

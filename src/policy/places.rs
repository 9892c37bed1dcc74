//! Where in an OpenAI-style body the model's text lives.
//!
//! A string is text when the key that holds it (or holds the array it is
//! in) is one of [`TEXT_KEYS`]: message `content` (plain or the `text` of
//! multi-part items), tool-call `arguments`, Responses API `input`,
//! `instructions` and `output`, legacy `prompt`, embedding `input`,
//! `refusal`, a transcript's `text`. Everything else is not: object keys,
//! ids, model names, roles, URLs, and base64 payloads (`image_url`,
//! `b64_json`, `input_audio.data`), which are also skipped when they sit
//! under a text key as `data:` URIs. One rule covers requests, responses and
//! stream chunks (`delta.content`), so new shapes that reuse the names are
//! covered too.

use serde_json::Value;

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

fn is_text_key(key: &str) -> bool {
    TEXT_KEYS.contains(&key)
}

/// Inline base64 (images, audio, files) is data, not text.
fn is_data_uri(s: &str) -> bool {
    s.starts_with("data:") && s.contains(";base64,")
}

/// Calls `f` on every text string in `body`. A bare string body is text.
pub(crate) fn for_each_text<'a>(body: &'a Value, f: &mut impl FnMut(&'a str)) {
    let mut stack: Vec<(&Value, bool)> = vec![(body, true)];
    while let Some((v, text)) = stack.pop() {
        match v {
            Value::String(s) if text && !is_data_uri(s) => f(s),
            Value::Array(items) => stack.extend(items.iter().map(|i| (i, text))),
            Value::Object(map) => stack.extend(map.iter().map(|(k, v)| (v, is_text_key(k)))),
            _ => {}
        }
    }
}

/// Calls `f` on every string in `body` (object keys excepted), saying
/// whether it is text. Stored copies are cleaned of secrets everywhere, and
/// of policy matches in text.
pub(crate) fn for_each_string_mut(body: &mut Value, f: &mut impl FnMut(&mut String, bool)) {
    // An explicit stack: values built in code have no depth limit.
    let mut stack: Vec<(&mut Value, bool)> = vec![(body, true)];
    while let Some((v, text)) = stack.pop() {
        match v {
            Value::String(s) => {
                let text = text && !is_data_uri(s);
                f(s, text);
            }
            Value::Array(items) => stack.extend(items.iter_mut().map(|i| (i, text))),
            Value::Object(map) => stack.extend(map.iter_mut().map(|(k, v)| {
                let text = is_text_key(k);
                (v, text)
            })),
            _ => {}
        }
    }
}

//! AWS secret access keys: 40 characters of base64 alphabet. Alone that
//! shape is too common (hashes, base64 payloads), so a candidate counts only
//! with an AWS context word nearby or in a `key = value` form, and only if
//! it mixes digits, upper and lower case as random keys do.

use std::ops::Range;

use super::{byte_at, byte_before, unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "aws_secret_key",
    kind: "AWS_SECRET_KEY",
    pattern: r"[A-Za-z0-9/+]{40}",
    group: 0,
    validate: Some(validate),
    secret: true,
};

/// How far back a context word may be.
const CONTEXT: usize = 96;

fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    // `=` may precede (`KEY=…`) but not follow: padding ends base64 runs.
    let b64 = |b: u8| b.is_ascii_alphanumeric() || b == b'/' || b == b'+';
    if byte_before(text, span.start).is_some_and(b64)
        || byte_at(text, span.end).is_some_and(|b| b64(b) || b == b'=')
    {
        return None;
    }
    let key = &text.as_bytes()[span.clone()];
    let has = |f: fn(&u8) -> bool| key.iter().any(f);
    if !(has(u8::is_ascii_digit) && has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase)) {
        return None;
    }
    if !(near_aws_word(text, span.start) || after_key_assignment(text, span.start)) {
        return None;
    }
    unless_placeholder(text, span)
}

fn near_aws_word(text: &str, start: usize) -> bool {
    let from = start.saturating_sub(CONTEXT);
    let window = &text.as_bytes()[from..start];
    ["aws", "secret"].iter().any(|word| {
        window
            .windows(word.len())
            .any(|w| w.eq_ignore_ascii_case(word.as_bytes()))
    })
}

/// `…key = "<candidate>`, `…KEY: <candidate>`, `"…key": "<candidate>`.
fn after_key_assignment(text: &str, start: usize) -> bool {
    let before = text.as_bytes()[..start].trim_ascii_end();
    let before = before
        .strip_suffix(b"\"")
        .or_else(|| before.strip_suffix(b"'"))
        .unwrap_or(before);
    let before = before.trim_ascii_end();
    let Some(before) = before
        .strip_suffix(b"=")
        .or_else(|| before.strip_suffix(b":"))
    else {
        return false;
    };
    let before = before.trim_ascii_end();
    let before = before.strip_suffix(b"\"").unwrap_or(before);
    let name_start = before
        .iter()
        .rposition(|b| !(b.is_ascii_alphanumeric() || *b == b'_' || *b == b'-'))
        .map_or(0, |i| i + 1);
    let name = &before[name_start..];
    name.windows(3).any(|w| w.eq_ignore_ascii_case(b"key"))
}

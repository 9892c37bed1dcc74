//! Google API keys: `AIza` and 35 more characters.

use std::ops::Range;

use super::{byte_at, byte_before, is_word, unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "google_api_key",
    kind: "GOOGLE_API_KEY",
    pattern: r"AIza[0-9A-Za-z_-]{35}",
    group: 0,
    validate: Some(validate),
    secret: true,
};

/// A key may end in `-`, where `\b` would not hold, so the edges are
/// checked here: nothing key-like may touch either end.
fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let key_char = |b: u8| is_word(b) || b == b'-';
    let alone = !byte_before(text, span.start).is_some_and(key_char)
        && !byte_at(text, span.end).is_some_and(key_char);
    if !alone {
        return None;
    }
    unless_placeholder(text, span)
}

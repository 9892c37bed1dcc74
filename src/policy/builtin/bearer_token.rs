//! Generic bearer tokens: whatever follows the word `Bearer`. The word is
//! kept; only the token is reported.

use std::ops::Range;

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "bearer_token",
    pattern: r"(?i)(?-u:\b)bearer[ \t]+([A-Za-z0-9._~+/-]+=*)",
    group: 1,
    validate: Some(validate),
    secret: true,
};

/// Separates tokens from prose such as "bearer well-established": long
/// enough, and with a digit, token punctuation or mixed case.
fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let token = text[span.clone()].as_bytes();
    let has = |f: fn(&u8) -> bool| token.iter().any(f);
    let like = token.len() >= 16
        && (has(u8::is_ascii_digit)
            || has(|b| b"._~+/=".contains(b))
            || (has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase)));
    if !like {
        return None;
    }
    unless_placeholder(text, span)
}

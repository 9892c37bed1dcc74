//! Generic bearer tokens: whatever follows the word `Bearer`. The word is
//! kept; only the token is reported.

use std::ops::Range;

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "bearer_token",
    kind: "BEARER_TOKEN",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin::assert_placeholders_left_alone;

    #[test]
    fn placeholders_are_not_secrets() {
        assert_placeholders_left_alone(
            &DETECTOR,
            "Authorization: Bearer Ab12Cd34Ef56Gh78Ij90",
            &[
                "Authorization: Bearer sk-proj-...........",
                "Authorization: Bearer ****************",
                "Authorization: Bearer your-access-token.here",
                "Authorization: Bearer XXXXXXXXXXXXXXXXXXXX",
                "Authorization: Bearer <your-token>",
                "Authorization: Bearer $API_TOKEN",
            ],
        );
    }
}

//! Placeholders that look like secrets but hold none: what documentation,
//! config templates and code samples put where a key goes.
//!
//! A secret-shaped candidate is a placeholder when
//! - it names a variable instead of holding a value: right after `$`, `${`,
//!   `{{` or `%` (with `%` after it), or inside `<…>` without a digit;
//! - it is filled in: a run of 6 or more of one of `x`, `X`, `0`, `#`, or
//!   3 or more of `.`, `*`, `…` (`sk-xxxxxxxx…`, `AKIAXXXXXXXXXXXXXXXX`,
//!   `ghp_XXXXXXXX…`, `Bearer sk-proj-.........`);
//! - it says so: it holds `placeholder`, `redacted` or `changeme`, or its
//!   parts are words such as `your`, `token` or `here`
//!   (`xoxb-your-bot-token-here`) and it has no digit (or two such words).
//!
//! Real keys are random, so none of this happens in one by chance: a run
//! of six equal characters in a 40-character base62 key is a one in 10^7
//! event.

use std::ops::Range;

/// Characters that fill a template when repeated at least this often.
const FILLERS: &[(char, usize)] = &[
    ('x', 6),
    ('X', 6),
    ('0', 6),
    ('#', 6),
    ('.', 3),
    ('*', 3),
    ('…', 3),
];

/// Words that mark the whole candidate as a template, anywhere in it.
/// `example` is left out on purpose: AWS's documentation keys
/// (`AKIAIOSFODNN7EXAMPLE`) stand in for real ones in tests and samples,
/// and redacting them too is the safe side.
const MARKERS: &[&str] = &["placeholder", "redacted", "changeme"];

/// Words a template spells out between a key's prefix and its end.
const WORDS: &[&str] = &[
    "your", "my", "token", "here", "key", "secret", "insert", "replace", "dummy", "fake", "sample",
    "api", "goes", "put", "access", "bot", "user", "app", "value", "xxx",
];

/// Whether the secret-shaped candidate at `span` is a placeholder.
pub(crate) fn is_placeholder(text: &str, span: &Range<usize>) -> bool {
    names_a_variable(text, span) || is_template_value(&text[span.clone()])
}

/// Whether `value` itself is filled in or spells out a template, wherever
/// it stands (the body of a PEM block, say).
pub(crate) fn is_template_value(value: &str) -> bool {
    is_filled_in(value) || spells_a_template(value)
}

/// Whether `value` holds a filler run or a marker word such as `redacted`:
/// the part of the rule that also holds for long free-form material.
pub(crate) fn is_filled_in(value: &str) -> bool {
    has_filler_run(value) || {
        let lower = value.to_ascii_lowercase();
        MARKERS.iter().any(|m| lower.contains(m))
    }
}

/// `$TOKEN`, `${TOKEN}`, `{{token}}`, `%TOKEN%`, `<API_KEY>`.
fn names_a_variable(text: &str, span: &Range<usize>) -> bool {
    let b = text.as_bytes();
    let before = |n: usize| span.start.checked_sub(n).map(|i| b[i]);
    let after = b.get(span.end).copied();
    match before(1) {
        Some(b'$') => true,
        Some(b'{') => matches!(before(2), Some(b'$' | b'{')),
        Some(b'%') => after == Some(b'%'),
        Some(b'<') => {
            after == Some(b'>') && !text[span.clone()].bytes().any(|c| c.is_ascii_digit())
        }
        _ => false,
    }
}

fn has_filler_run(s: &str) -> bool {
    let mut last = None;
    let mut run = 0;
    for c in s.chars() {
        if Some(c) == last {
            run += 1;
        } else {
            last = Some(c);
            run = 1;
        }
        if FILLERS.iter().any(|&(f, n)| f == c && run >= n) {
            return true;
        }
    }
    false
}

fn spells_a_template(candidate: &str) -> bool {
    let lower = candidate.to_ascii_lowercase();
    let words = lower
        .split(|c: char| !c.is_ascii_alphanumeric())
        .filter(|part| WORDS.contains(part))
        .count();
    let digits = candidate.bytes().any(|c| c.is_ascii_digit());
    words >= 2 || (words == 1 && !digits)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn placeholder(text: &str, value: &str) -> bool {
        let start = text.find(value).unwrap();
        is_placeholder(text, &(start..start + value.len()))
    }

    #[test]
    fn templates_are_placeholders() {
        for (text, value) in [
            (
                "key sk-xxxxxxxxxxxxxxxxxxxxxxxx",
                "sk-xxxxxxxxxxxxxxxxxxxxxxxx",
            ),
            ("AKIAXXXXXXXXXXXXXXXX", "AKIAXXXXXXXXXXXXXXXX"),
            (
                "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            ),
            ("sk-…………", "sk-…………"),
            ("Bearer sk-proj-...........", "sk-proj-..........."),
            ("xoxb-your-bot-token-here", "xoxb-your-bot-token-here"),
            (
                "xoxb-000000000000-0000000000000-abc",
                "xoxb-000000000000-0000000000000-abc",
            ),
            ("AKIAREDACTEDREDACTED", "AKIAREDACTEDREDACTED"),
            ("token=$API_TOKEN", "API_TOKEN"),
            ("token=${GITHUB_TOKEN}", "GITHUB_TOKEN"),
            ("set %TOKEN% first", "TOKEN"),
            ("Authorization: <API_KEY>", "API_KEY"),
            ("{{slack_token}}", "slack_token"),
        ] {
            assert!(placeholder(text, value), "{text}");
        }
    }

    #[test]
    fn random_keys_are_not() {
        for (text, value) in [
            (
                "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12",
                "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12",
            ),
            ("AKIA2E0A8F3B244C9986", "AKIA2E0A8F3B244C9986"),
            ("AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE"),
            (
                "xoxb-123456789012-1234567890123-AbCdEf",
                "xoxb-123456789012-1234567890123-AbCdEf",
            ),
            (
                "<ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789>",
                "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            ),
            (
                "sk_test_4eC39HqLyjWDarjtT1zdp7dc.",
                "sk_test_4eC39HqLyjWDarjtT1zdp7dc",
            ),
            ("xoxp-2048-access-9f8e7d", "xoxp-2048-access-9f8e7d"),
        ] {
            assert!(!placeholder(text, value), "{text}");
        }
    }
}

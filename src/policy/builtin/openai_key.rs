//! OpenAI API keys: `sk-…`, `sk-proj-…`, `sk-svcacct-…`, `sk-admin-…`.

use std::ops::Range;

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "openai_key",
    kind: "OPENAI_KEY",
    pattern: r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}",
    group: 0,
    validate: Some(validate),
    secret: true,
};

/// Real keys are random: a slug such as `sk-learn-compatible-models` has
/// neither digits nor capitals. Anthropic keys are their own kind, even when
/// too short for that detector.
fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let key = &text[span.clone()];
    let body = key.strip_prefix("sk-").unwrap_or(key);
    let random = body
        .bytes()
        .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase());
    if body.starts_with("ant-") || !random {
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
            "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12",
            &[
                "sk-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                "sk-proj-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                "sk-proj-abc1-your-key-here-example",
                "$sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12",
            ],
        );
    }
}

//! Anthropic API keys (`sk-ant-…`).

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "anthropic_key",
    kind: "ANTHROPIC_KEY",
    // ASCII word boundaries: Unicode ones would make the regex engine give
    // up its fast DFA on non-ASCII text, and secrets are ASCII anyway.
    pattern: r"(?-u:\b)sk-ant-[A-Za-z0-9_-]{20,}",
    group: 0,
    validate: Some(unless_placeholder),
    secret: true,
};

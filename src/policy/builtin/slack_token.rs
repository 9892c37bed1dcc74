//! Slack tokens: bot, user, app-level, refresh and legacy
//! (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`).

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "slack_token",
    pattern: r"(?-u:\b)xox[abprs]-[0-9A-Za-z]+-[0-9A-Za-z-]{8,}",
    group: 0,
    validate: Some(unless_placeholder),
    secret: true,
};

//! Slack tokens: bot, user, app-level, refresh and legacy
//! (`xoxb-`, `xoxp-`, `xoxa-`, `xoxr-`, `xoxs-`).

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "slack_token",
    kind: "SLACK_TOKEN",
    pattern: r"(?-u:\b)xox[abprs]-[0-9A-Za-z]+-[0-9A-Za-z-]{8,}",
    group: 0,
    validate: Some(unless_placeholder),
    secret: true,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin::found_by;

    fn found(text: &str) -> usize {
        found_by(&DETECTOR, text).len()
    }

    #[test]
    fn placeholders_are_not_secrets() {
        assert_eq!(
            found("xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx"),
            1
        );
        for template in [
            "xoxb-your-bot-token-here",
            "xoxb-XXXXXXXXXXXX-XXXXXXXXXXXXX-XXXXXXXXXXXXXXXXXXXXXXXX",
            "xoxp-000000000000-000000000000-000000000000-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
            "xoxa-your-app-token-goes-here",
            "${xoxb-token-for-the-app}",
        ] {
            assert_eq!(found(template), 0, "{template}");
        }
    }
}

//! AWS access key ids, long-term (`AKIA…`) and temporary (`ASIA…`).

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "aws_access_key",
    kind: "AWS_ACCESS_KEY",
    pattern: r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)",
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
        assert_eq!(found("AKIA2E0A8F3B244C9986"), 1);
        // AWS's documentation key stands in for real ones: still a key.
        assert_eq!(found("AKIAIOSFODNN7EXAMPLE"), 1);
        for template in [
            "AKIAXXXXXXXXXXXXXXXX",
            "AKIAREDACTEDREDACTED",
            "${AKIA2E0A8F3B244C9986}",
        ] {
            assert_eq!(found(template), 0, "{template}");
        }
    }
}

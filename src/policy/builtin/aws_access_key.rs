//! AWS access key ids, long-term (`AKIA…`) and temporary (`ASIA…`).

use super::Builtin;

pub(super) const DETECTOR: Builtin = Builtin {
    name: "aws_access_key",
    pattern: r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)",
    group: 0,
    validate: None,
    secret: true,
};

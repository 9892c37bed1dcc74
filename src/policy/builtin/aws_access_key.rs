//! AWS access key ids, long-term (`AKIA…`) and temporary (`ASIA…`).

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "aws_access_key",
    pattern: r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)",
    group: 0,
    validate: Some(unless_placeholder),
    secret: true,
};

//! GitHub tokens: classic (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`) and
//! fine-grained (`github_pat_`).

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "github_token",
    kind: "GITHUB_TOKEN",
    pattern: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})(?-u:\b)",
    group: 0,
    validate: Some(unless_placeholder),
    secret: true,
};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin::assert_placeholders_left_alone;

    #[test]
    fn placeholders_are_not_secrets() {
        assert_placeholders_left_alone(
            &DETECTOR,
            "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
            &[
                "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
                "ghp_000000000000000000000000000000000000",
            ],
        );
    }
}

//! GitHub tokens: classic (`ghp_`, `gho_`, `ghu_`, `ghs_`, `ghr_`) and
//! fine-grained (`github_pat_`).

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "github_token",
    pattern: r"(?-u:\b)(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})(?-u:\b)",
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
        assert_eq!(found("ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"), 1);
        for template in [
            "ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
            "ghp_000000000000000000000000000000000000",
        ] {
            assert_eq!(found(template), 0, "{template}");
        }
    }
}

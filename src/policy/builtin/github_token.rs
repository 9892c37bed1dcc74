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

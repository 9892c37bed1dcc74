//! Stripe secret and restricted keys, live and test. Publishable keys
//! (`pk_…`) are meant to be public and are not reported.

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "stripe_key",
    kind: "STRIPE_KEY",
    pattern: r"(?-u:\b)[sr]k_(?:live|test)_[0-9A-Za-z]{16,}(?-u:\b)",
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
            "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
            &[
                "sk_live_xxxxxxxxxxxxxxxxxxxxxxxx",
                "sk_test_XXXXXXXXXXXXXXXXXXXXXXXX",
            ],
        );
    }
}

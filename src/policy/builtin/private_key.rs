//! PEM private keys: the whole `BEGIN … PRIVATE KEY` block, or from the
//! header to the end of the key material when the block is cut short.

use super::Builtin;

pub(super) const DETECTOR: Builtin = Builtin {
    name: "private_key",
    pattern: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[A-Za-z0-9+/=\s:,-]*)",
    group: 0,
    validate: None,
    secret: true,
};

//! Email addresses: a local part, `@`, and a domain whose last label is
//! alphabetic. Image names such as `icon@2x.png` are not addresses.

use std::ops::Range;

use super::{byte_before, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "email",
    kind: "EMAIL",
    pattern: r"(?-u:\b)[A-Za-z0-9][A-Za-z0-9._%+-]*@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*\.[A-Za-z]{2,24}(?-u:\b)",
    group: 0,
    validate: Some(validate),
    secret: false,
};

/// Top-level "domains" that are really file extensions.
const FILE_EXTENSIONS: &[&str] = &[
    "png", "jpg", "jpeg", "gif", "svg", "webp", "bmp", "ico", "pdf",
];

fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let candidate = &text[span.clone()];
    let (local, domain) = candidate.split_once('@')?;
    if local.ends_with('.') || local.contains("..") || byte_before(text, span.start) == Some(b'@') {
        return None;
    }
    let tld = domain.rsplit('.').next()?;
    if FILE_EXTENSIONS
        .iter()
        .any(|ext| tld.eq_ignore_ascii_case(ext))
    {
        return None;
    }
    Some(span)
}

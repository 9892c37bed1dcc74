//! PEM private keys: the whole `BEGIN … PRIVATE KEY` block, or from the
//! header to the end of the key material when the block is cut short (raw
//! or JSON-escaped, `\n` between lines). A block without key material
//! (`...`, `<your key>`, fewer than 32 base64 characters) or with
//! filled-in material (`XXXX…`) is a template, not a key.

use std::ops::Range;

use super::placeholder::is_filled_in;
use super::Builtin;

pub(super) const DETECTOR: Builtin = Builtin {
    name: "private_key",
    kind: "PRIVATE_KEY",
    pattern: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[A-Za-z0-9+/=\s:,\\-]*)",
    group: 0,
    validate: Some(validate),
    secret: true,
};

/// Base64 characters a block needs to hold key material.
const MIN_MATERIAL: usize = 32;

fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let block = &text[span.clone()];
    // Between the header's closing dashes and the footer, if any.
    let body = block.get(11..)?.split_once("-----")?.1;
    let (body, closed) = match body.split_once("-----END") {
        Some((body, _)) => (body, true),
        None => (body, false),
    };
    if is_filled_in(body) {
        return None;
    }
    // A block must hold material; one still open at the end of the text
    // (a stream still arriving) counts from its header on, so a stream is
    // held before the material passes.
    let material = body
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .count();
    let arriving = !closed && span.end == text.len();
    (arriving || material >= MIN_MATERIAL).then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin::found_by;

    fn found(text: &str) -> bool {
        !found_by(&DETECTOR, text).is_empty()
    }

    #[test]
    fn templates_are_not_keys() {
        let material = "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQC7";
        assert!(found(&format!(
            "-----BEGIN PRIVATE KEY-----\n{material}\n-----END PRIVATE KEY-----"
        )));
        assert!(found(&format!(
            "-----BEGIN RSA PRIVATE KEY-----\n{material}"
        )));
        // As a service account's JSON file holds it.
        assert!(found(&format!(
            r"-----BEGIN PRIVATE KEY-----\n{material}\n{material}\n-----END PRIVATE KEY-----"
        )));
        assert!(found(
            r"-----BEGIN RSA PRIVATE KEY-----\nvhXzDHQ+eA+dErjyIjLJ5zoLn2XyNpEJGBtPUnJ2XOAPDEQTBf43mELmBFuoba8F\nzEAuQ9O3PruYQcoy3qR/78KU4hpbA6QY3YErrs2i2YIOWIOfVJV7+tqnX24QOPWH\n-----END RSA PRIVATE KEY-----"
        ));
        // A header at the end of the text may be a key still arriving.
        assert!(found("-----BEGIN PRIVATE KEY-----"));
        assert!(!found("paste your -----BEGIN PRIVATE KEY----- block here."));
        for template in [
            "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY-----\n<your key here>\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC...\n-----END PRIVATE KEY-----",
            "-----BEGIN EC PRIVATE KEY-----\nXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\n-----END EC PRIVATE KEY-----",
        ] {
            assert!(!found(template), "{template}");
        }
    }
}

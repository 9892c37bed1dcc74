//! PEM private keys: the whole `BEGIN … PRIVATE KEY` block, or from the
//! header to the end of the key material when the block is cut short. A
//! block without key material (`...`, `<your key>`, fewer than 32 base64
//! characters) or with filled-in material is a template, not a key.

use std::ops::Range;

use super::placeholder::is_filled_in;
use super::Builtin;

pub(super) const DETECTOR: Builtin = Builtin {
    name: "private_key",
    pattern: r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----(?:[\s\S]*?-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----|[A-Za-z0-9+/=\s:,-]*)",
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
    let body = body.split("-----END").next().unwrap_or(body);
    let material = body
        .bytes()
        .filter(|b| b.is_ascii_alphanumeric() || *b == b'+' || *b == b'/')
        .count();
    (material >= MIN_MATERIAL && !is_filled_in(body)).then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn found(text: &str) -> bool {
        validate(text, 0..text.len()).is_some()
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
        for template in [
            "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
            "-----BEGIN RSA PRIVATE KEY-----\n<your key here>\n-----END RSA PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----",
            "-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC...\n-----END PRIVATE KEY-----",
            "-----BEGIN EC PRIVATE KEY-----\nXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\n-----END EC PRIVATE KEY-----",
        ] {
            assert!(!found(template), "{template}");
        }
    }
}

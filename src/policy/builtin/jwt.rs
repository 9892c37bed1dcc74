//! JSON Web Tokens: three base64url parts whose header decodes to a JSON
//! object with an `alg` member.

use std::ops::Range;

use super::{unless_placeholder, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "jwt",
    kind: "JWT",
    pattern: r"(?-u:\b)eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]*",
    group: 0,
    validate: Some(validate),
    secret: true,
};

fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let header = text[span.clone()].split('.').next()?;
    let decoded = decode_base64url(header)?;
    let value: serde_json::Value = serde_json::from_slice(&decoded).ok()?;
    value.get("alg")?;
    unless_placeholder(text, span)
}

/// Unpadded base64url; `None` on a character outside the alphabet.
fn decode_base64url(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in s.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_a_header() {
        assert_eq!(
            decode_base64url("eyJhbGciOiJIUzI1NiJ9").unwrap(),
            br#"{"alg":"HS256"}"#
        );
        assert!(decode_base64url("ab=c").is_none());
    }
}

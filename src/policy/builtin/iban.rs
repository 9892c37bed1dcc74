//! International Bank Account Numbers, compact or in groups of four, with
//! the country's length (where known) and the ISO 7064 mod-97 check.

use std::ops::Range;

use super::{glued, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "iban",
    kind: "IBAN",
    pattern: r"(?-u:\b)[A-Z]{2}[0-9]{2}(?:[ ]?[A-Z0-9]{4}){2,7}(?:[ ]?[A-Z0-9]{1,4})?(?-u:\b)",
    group: 0,
    validate: Some(validate),
    secret: false,
};

/// IBAN lengths of the countries most seen; others only need 15 to 34.
const LENGTHS: &[(&str, usize)] = &[
    ("AT", 20),
    ("BE", 16),
    ("BG", 22),
    ("CH", 21),
    ("CY", 28),
    ("CZ", 24),
    ("DE", 22),
    ("DK", 18),
    ("EE", 20),
    ("ES", 24),
    ("FI", 18),
    ("FR", 27),
    ("GB", 22),
    ("GR", 27),
    ("HR", 21),
    ("HU", 28),
    ("IE", 22),
    ("IT", 27),
    ("LT", 20),
    ("LU", 20),
    ("LV", 21),
    ("MT", 31),
    ("NL", 18),
    ("NO", 15),
    ("PL", 28),
    ("PT", 25),
    ("RO", 24),
    ("SE", 24),
    ("SI", 19),
    ("SK", 24),
    ("AE", 23),
    ("SA", 24),
    ("TR", 26),
    ("IL", 23),
    ("BR", 29),
    ("MC", 27),
];

fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let candidate = &text[span.clone()];
    let want = LENGTHS
        .iter()
        .find(|(cc, _)| candidate.starts_with(cc))
        .map(|&(_, n)| n);
    // The greedy regex may take a following word in; cut at the country's
    // length, on a character boundary of the original text.
    let mut seen = 0;
    let mut end = span.start;
    for (i, b) in candidate.bytes().enumerate() {
        if b != b' ' {
            seen += 1;
            end = span.start + i + 1;
            if Some(seen) == want {
                break;
            }
        }
    }
    if let Some(want) = want {
        if seen != want {
            return None;
        }
    } else if !(15..=34).contains(&seen) {
        return None;
    }
    let sub = span.start..end;
    if glued(text, &sub) {
        return None;
    }
    mod97(&text[sub.clone()]).then_some(sub)
}

/// Moves the first four characters to the end, reads letters as 10-35 and
/// checks the remainder mod 97 is 1.
fn mod97(iban: &str) -> bool {
    let chars: Vec<u8> = iban.bytes().filter(|b| *b != b' ').collect();
    if chars.len() < 5 {
        return false;
    }
    let mut rem: u32 = 0;
    for &c in chars[4..].iter().chain(&chars[..4]) {
        let v = match c {
            b'0'..=b'9' => u32::from(c - b'0'),
            b'A'..=b'Z' => u32::from(c - b'A') + 10,
            _ => return false,
        };
        rem = if v >= 10 {
            (rem * 100 + v) % 97
        } else {
            (rem * 10 + v) % 97
        };
    }
    rem == 1
}

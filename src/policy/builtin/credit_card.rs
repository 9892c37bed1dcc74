//! Payment card numbers: 13 to 19 digits, plain or grouped with spaces,
//! dashes or dots (mixed too: `5555-5555 5555.4444`) in groups of at least
//! three after a first group of four (4-4-4-4, Amex 4-6-5, Diners 4-6-4),
//! of a known brand's prefix and length, passing the Luhn check. A 16-digit
//! order number that fails Luhn is not a card, and neither is a run glued to
//! more digits (`…4444.12`).

use std::ops::Range;

use super::{continues_number, glued, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "credit_card",
    kind: "CREDIT_CARD",
    pattern: r"(?-u:\b)[0-9](?:[ .-]?[0-9]){12,18}(?-u:\b)",
    group: 0,
    validate: Some(validate),
    secret: false,
};

/// The regex is greedy (a card followed by ` 12` reads as 18 digits), so
/// shorter runs of whole groups are tried too, longest first.
fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let candidate = &text[span.clone()];
    let sep = candidate.bytes().find(|b| !b.is_ascii_digit());
    // Group end offsets within the candidate.
    let mut ends = Vec::new();
    let mut group_start = 0;
    for (i, b) in candidate.bytes().enumerate() {
        if !b.is_ascii_digit() {
            if i - group_start < 3 {
                return None;
            }
            ends.push(i);
            group_start = i + 1;
        }
    }
    ends.push(candidate.len());
    if sep.is_some() && ends[0] != 4 {
        return None;
    }
    if after_code_group(text, span.start) {
        return None;
    }
    for &end in ends.iter().rev() {
        let sub = span.start..span.start + end;
        let digits = super::digits(&text[sub.clone()]);
        if !(13..=19).contains(&digits.len()) {
            continue;
        }
        // A space may part a card from a following number (`… 4444 12`);
        // a dot or dash glues them into one (`….4444.12`).
        let glue: &[u8] = if sep.is_none() { b" -." } else { b"-." };
        if glued(text, &sub) || continues_number(text, &sub, glue) {
            continue;
        }
        if brand_fits(&digits) && luhn(&digits) {
            return Some(sub);
        }
    }
    None
}

/// Whether the candidate continues a code such as an IBAN (`DE38 4769 …`):
/// right after a space or dash that follows a token with a digit in it.
fn after_code_group(text: &str, start: usize) -> bool {
    let before = &text.as_bytes()[..start];
    let Some((&sep, rest)) = before.split_last() else {
        return false;
    };
    if sep != b' ' && sep != b'-' {
        return false;
    }
    rest.iter()
        .rev()
        .take_while(|b| b.is_ascii_alphanumeric())
        .any(u8::is_ascii_digit)
}

/// Luhn (mod 10) checksum.
pub(crate) fn luhn(digits: &[u8]) -> bool {
    let sum: u32 = digits
        .iter()
        .rev()
        .enumerate()
        .map(|(i, &d)| {
            let d = u32::from(d);
            if i % 2 == 1 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    sum % 10 == 0
}

/// Major brands' issuer prefixes and lengths: Visa, Mastercard, American
/// Express, Discover, JCB, Diners Club, UnionPay, Maestro.
fn brand_fits(d: &[u8]) -> bool {
    let len = d.len();
    let prefix = |n: usize| d[..n].iter().fold(0u32, |acc, &x| acc * 10 + u32::from(x));
    let p2 = prefix(2);
    let p3 = prefix(3);
    let p4 = prefix(4);
    let p6 = prefix(6);
    match d[0] {
        4 => matches!(len, 13 | 16 | 19),
        5 => {
            (51..=55).contains(&p2) && len == 16
                || (p2 == 50 || (56..=58).contains(&p2)) && (12..=19).contains(&len)
        }
        // Mastercard 2-series, and Mir (2200-2204).
        2 => ((2221..=2720).contains(&p4) || (2200..=2204).contains(&p4)) && len == 16,
        3 => {
            (p2 == 34 || p2 == 37) && len == 15
                || (3528..=3589).contains(&p4) && (16..=19).contains(&len)
                || ((300..=305).contains(&p3) || p2 == 36 || p2 == 38 || p2 == 39)
                    && (14..=19).contains(&len)
        }
        6 => {
            (p4 == 6011 || p2 == 65 || (644..=649).contains(&p3) || (622126..=622925).contains(&p6))
                && (16..=19).contains(&len)
                || p2 == 62 && (16..=19).contains(&len)
                || (p2 == 63 || p2 == 67) && (12..=19).contains(&len)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin::found_by;

    fn found(text: &str) -> Vec<&str> {
        found_by(&DETECTOR, text)
    }

    #[test]
    fn groups_may_be_parted_by_dots_and_mixed_separators() {
        for card in [
            "5555 5555 5555 4444",
            "5555.5555.5555.4444",
            "5555-5555 5555.4444",
            "3782 822463 10005",
            "3782.822463.10005",
            "3056 930902 5904",
            "4111111111111111",
        ] {
            assert_eq!(found(&format!("card: {card}.")), [card], "{card}");
        }
        // A card followed by a short number after a space is still a card.
        assert_eq!(found("4111 1111 1111 1111 12/27"), ["4111 1111 1111 1111"]);
    }

    #[test]
    fn look_alikes_are_not_cards() {
        for text in [
            "5555.5555.5555.4445",
            "5555.5555.5555.4444.12",
            "1.5555.5555.5555.4444",
            "5555-5555-5555-4444-9",
            "5555 5555.5555 444",
            "version 4111.1111.1111.1111.1",
            "10.0.19045.3803",
            "2024.03.18 10.42",
            "+1 415.555.2671 415.555.2672",
            "order 8821.3447.1002.7713",
            "55555.5555.5555.444",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }
}

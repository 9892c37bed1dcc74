//! Phone numbers: E.164 (`+` and country code, compact or grouped) and the
//! national formats of the US/Canada (`(415) 555-2671`, `415-555-2671`),
//! the UK, Germany and India (trunk `0`, area code, separated subscriber
//! number), France (`01 23 45 67 89`) and Indian mobiles (`98765 43210`).
//! National numbers must be grouped: an ungrouped run of ten digits is as
//! likely an order number as a phone.

use std::ops::Range;

use super::{continues_number, glued, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "phone",
    kind: "PHONE",
    pattern: concat!(
        // E.164, optionally with a trunk `(0)` and grouping.
        r"\+[1-9][0-9]{0,3}(?:[ .-]?(?:\(0?[0-9]{0,4}\)|[0-9]{1,8})){1,6}",
        // North American Numbering Plan; no leading `\b`, which would not
        // hold before `(`: the validator checks the left edge.
        r"|(?:1[ .-]?)?(?:\([2-9][0-9]{2}\)[ ]?|[2-9][0-9]{2}[ .-])[2-9][0-9]{2}[ .-][0-9]{4}(?-u:\b)",
        r"|\(0[1-9][0-9]{1,4}\)[ ]?[0-9]{3,8}(?:[ .-][0-9]{3,4})?(?-u:\b)",
        // Trunk 0 (UK, DE, IN); France is a special case of it.
        r"|(?-u:\b)0[1-9][0-9]{0,4}[ .-][0-9]{2,8}(?:[ .-][0-9]{2,4}){0,3}(?-u:\b)",
        // Indian mobiles.
        r"|(?-u:\b)[6-9][0-9]{4}[ -][0-9]{5}(?-u:\b)",
    ),
    group: 0,
    validate: Some(validate),
    secret: false,
};

fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let candidate = &text[span.clone()];
    // A space counts as glue too: `3416 073221 94719` is one number, not a
    // phone after `3416`.
    if continues_number(text, &span, b" .-/:") || glued(text, &span) {
        return None;
    }
    let n = candidate.bytes().filter(u8::is_ascii_digit).count();
    if let Some(rest) = candidate.strip_prefix('+') {
        // Not preceded by a word or digit: `a+12345678` is arithmetic.
        let trunk = rest.contains("(0)");
        return ((8..=15).contains(&(n - usize::from(trunk))) && !looks_like_date(candidate))
            .then_some(span);
    }
    // The lengths of the digit groups; no grouping below has more than
    // five, so a candidate with more than `MAX_GROUPS` is none of them.
    const MAX_GROUPS: usize = 8;
    let mut lens = [0usize; MAX_GROUPS];
    let mut count = 0;
    for group in candidate
        .split(|c: char| !c.is_ascii_digit())
        .filter(|g| !g.is_empty())
    {
        if count == MAX_GROUPS {
            return None;
        }
        lens[count] = group.len();
        count += 1;
    }
    let lens = &lens[..count];
    let first = candidate.trim_start_matches('(');
    if first.starts_with('0') {
        return trunk_zero(lens, n).then_some(span);
    }
    let nanp = matches!(lens, [3, 3, 4] | [1, 3, 3, 4]);
    let india = lens == [5, 5];
    (nanp || india).then_some(span)
}

/// National numbers after a trunk `0`: 10 to 12 digits in all, with the
/// groupings these countries use (`lens`: the digit groups' lengths).
fn trunk_zero(lens: &[usize], n: usize) -> bool {
    match lens {
        // France: 0X XX XX XX XX.
        [2, 2, 2, 2, 2] => true,
        // UK 020 7946 0958, 0161 496 0000; IN 011 2345 6789.
        [3, 4, 4] | [4, 3, 4] | [3, 3, 4] | [5, 3, 3] => (10..=12).contains(&n),
        // UK 07700 900123, DE 030 12345678, 0151 23456789, IN 098765 43210.
        [a, b] => (3..=6).contains(a) && (5..=8).contains(b) && (10..=12).contains(&n),
        _ => false,
    }
}

/// `+2024-01-15` style strings are dates, not numbers.
fn looks_like_date(candidate: &str) -> bool {
    candidate[1..].split('-').map(str::len).eq([4, 2, 2])
}

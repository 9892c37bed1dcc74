//! US Social Security numbers written `AAA-GG-SSSS` or `AAA GG SSSS`, with
//! the ranges the SSA never issues excluded: area 000, 666 and 900-999,
//! group 00, serial 0000.

use std::ops::Range;

use super::{continues_number, glued, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "us_ssn",
    pattern: r"(?-u:\b)[0-9]{3}(?:-[0-9]{2}-|[ ][0-9]{2}[ ])[0-9]{4}(?-u:\b)",
    group: 0,
    validate: Some(validate),
    secret: false,
};

fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    if glued(text, &span) || continues_number(text, &span, b" -./") {
        return None;
    }
    let d = super::digits(&text[span.clone()]);
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = d[3] * 10 + d[4];
    let serial = &d[5..9];
    let valid = area != 0 && area != 666 && area < 900 && group != 0 && serial != [0, 0, 0, 0];
    valid.then_some(span)
}

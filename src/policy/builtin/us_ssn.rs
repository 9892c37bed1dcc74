//! US Social Security numbers, with the ranges the SSA never issues
//! excluded: area 000, 666 and 900-999, group 00, serial 0000.
//!
//! How much context a number needs depends on how it is written:
//! - `AAA-GG-SSSS` counts on its own, as it always has;
//! - `AAA GG SSSS` counts unless the nearest context word names something
//!   else (`phone 219 09 9999`, `order`, `ticket`);
//! - `AAAGGSSSS`, `AAA.GG.SSSS` and mixed separators count only when the
//!   nearest context word names an SSN (`SSN`, `social security number`,
//!   `applicant_ssn`, a `ssn` table column): a bare nine-digit number is as
//!   likely an order id, a ticket or a phone fragment.

use std::ops::Range;

use super::context::{judge, Cue, Reach, Vocabulary};
use super::{continues_number, glued, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "us_ssn",
    kind: "US_SSN",
    // Both separators or none: a single one makes a zip+4 (`88213-4471`)
    // or other codes, and searching for them would cost every text with one.
    pattern: r"(?-u:\b)[0-9]{3}(?:[ .-][0-9]{2}[ .-]|[0-9]{2})[0-9]{4}(?-u:\b)",
    group: 0,
    validate: Some(validate),
    secret: false,
};

/// Words that name an SSN, and words that name the other things a
/// nine-digit number is.
const VOCABULARY: Vocabulary = Vocabulary::new(
    // Confirm.
    &[
        &["ssn"],
        &["ssns"],
        &["social", "security", "number"],
        &["social", "security", "no"],
        &["social", "security", "nr"],
        &["social", "security", "num"],
        &["social", "security"],
        &["soc", "sec"],
        &["ss", "number"],
        &["ss", "no"],
    ],
    // Veto.
    &[
        &["order"],
        &["orders"],
        &["id"],
        &["ids"],
        &["ticket"],
        &["tkt"],
        &["invoice"],
        &["inv"],
        &["ref"],
        &["reference"],
        &["tracking"],
        &["account"],
        &["acct"],
        &["phone"],
        &["tel"],
        &["telephone"],
        &["mobile"],
        &["cell"],
        &["fax"],
        &["zip"],
        &["postal"],
        &["postcode"],
        &["routing"],
        &["aba"],
        &["transaction"],
        &["txn"],
        &["case"],
        &["po"],
        &["sku"],
        &["isbn"],
        &["timestamp"],
        &["epoch"],
        &["port"],
        &["pid"],
        &["uid"],
        &["gid"],
        &["pin"],
        &["otp"],
        &["code"],
        &["ein"],
        &["npi"],
        &["batch"],
        &["job"],
        &["build"],
        &["version"],
        &["serial"],
        &["part"],
        &["item"],
        &["product"],
        &["claim"],
        &["policy"],
        &["member"],
        &["shipment"],
        &["parcel"],
        &["booking"],
        &["reservation"],
        &["confirmation"],
    ],
);

const REACH: Reach = Reach {
    before: 5,
    after: 3,
};

/// A spaced number is vetoed only by a word right beside it: a word
/// further off (a log line's `ts` key) is about something else.
const VETO_REACH: Reach = Reach {
    before: 2,
    after: 1,
};

/// How the number is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Form {
    Dashed,
    Spaced,
    /// No separators, dots, or a mix.
    Other,
}

fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    if glued(text, &span) || continues_number(text, &span, b" -./") {
        return None;
    }
    let candidate = &text.as_bytes()[span.clone()];
    let d = super::digits(&text[span.clone()]);
    let area = u32::from(d[0]) * 100 + u32::from(d[1]) * 10 + u32::from(d[2]);
    let group = d[3] * 10 + d[4];
    let serial = &d[5..9];
    if area == 0 || area == 666 || area >= 900 || group == 0 || serial == [0, 0, 0, 0] {
        return None;
    }
    let seps: Vec<u8> = candidate
        .iter()
        .copied()
        .filter(|b| !b.is_ascii_digit())
        .collect();
    let form = match seps.as_slice() {
        b"--" => Form::Dashed,
        b"  " => Form::Spaced,
        _ => Form::Other,
    };
    let fits = match form {
        Form::Dashed => true,
        Form::Spaced => judge(text, &span, VETO_REACH, &VOCABULARY) != Some(Cue::Veto),
        Form::Other => judge(text, &span, REACH, &VOCABULARY) == Some(Cue::Confirm),
    };
    fits.then_some(span)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin::found_by;

    fn found(text: &str) -> Vec<&str> {
        found_by(&DETECTOR, text)
    }

    #[test]
    fn dashed_numbers_need_no_context() {
        assert_eq!(found("call me re 219-09-9999 ok"), ["219-09-9999"]);
        assert_eq!(found("order 219-09-9999"), ["219-09-9999"]);
        for bad in [
            "000-12-3456",
            "666-12-3456",
            "912-12-3456",
            "219-00-9999",
            "219-09-0000",
        ] {
            assert!(found(&format!("SSN {bad}")).is_empty(), "{bad}");
        }
    }

    #[test]
    fn undashed_numbers_need_context_naming_an_ssn() {
        for text in [
            "SSN: 219099999",
            "ssn=219099999",
            r#"{"applicant_ssn": "219099999"}"#,
            r#"{"applicantSSN":219099999}"#,
            "My social security number is 219099999.",
            "Social Security No. 219.09.9999",
            "219099999 (SSN)",
            "SSN 219 09 9999",
            "ssn: 219-09 9999",
            "name,ssn\nAnn,219099999",
            "| name | SSN |\n|---|---|\n| Ann | 219099999 |",
        ] {
            assert_eq!(found(text).len(), 1, "{text}");
        }
    }

    #[test]
    fn bare_nine_digit_numbers_are_not_ssns() {
        for text in [
            "order 219099999 shipped",
            "ticket #219099999",
            "219099999",
            "ts=1700000000 id=219099999",
            r#"{"ssn": "219-09-9999", "order_id": "219099998"}"#,
            "phone 219 09 9999",
            "zip 12345-6789",
            "SSN 21909-9999",
            "SSN 219 099999",
            "SSN on file; order 219099999",
            "call 0219099999",
            "219.09.9999",
            "order,ssn\n219099999,x",
        ] {
            let found = found(text);
            assert!(found.iter().all(|f| f.contains('-')), "{text}: {found:?}");
        }
    }
}

//! The built-in detectors, one per file, and the helpers their validators
//! share.
//!
//! A detector is data: a regex that finds candidates, an optional capture
//! group that is the sensitive part, and an optional validator that sees the
//! candidate in its surrounding text (look-around, checksums and ranges a
//! regex cannot express) and may narrow it. `ALL` lists them in priority
//! order, most specific first: where two built-in detectors claim
//! overlapping text, the earlier one names it, so `Bearer sk-…` is an
//! OpenAI key, `Bearer eyJ…` a JWT, and a 15-digit card is not also a phone
//! number.
//!
//! Validators share two helpers: `context` reads the words around a
//! candidate to confirm or veto it (`SSN: 219099999`, `firmware 9.2.14.101`),
//! and `placeholder` tells templates (`sk-xxxx…`, `$API_TOKEN`) from
//! secrets; every secret detector drops placeholders.

mod anthropic_key;
mod aws_access_key;
mod aws_secret_key;
mod bearer_token;
mod context;
mod credit_card;
mod email;
mod github_token;
mod google_api_key;
mod iban;
mod ip_address;
mod jwt;
mod openai_key;
mod phone;
mod placeholder;
mod private_key;
mod slack_token;
mod stripe_key;
mod us_ssn;

use std::ops::Range;

/// Checks a candidate at `span` of `text` and returns the span to report
/// (possibly narrower), or `None` to drop it.
pub(crate) type Validate = fn(&str, Range<usize>) -> Option<Range<usize>>;

/// One built-in detector.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Builtin {
    /// The configuration name, e.g. `credit_card`.
    pub name: &'static str,
    /// The entity type it reports: the name in upper case.
    pub kind: &'static str,
    /// Finds candidates.
    pub pattern: &'static str,
    /// Which capture group is the sensitive part (0: the whole match).
    pub group: usize,
    pub validate: Option<Validate>,
    /// Secrets are always redacted in stored copies, whatever the policies.
    pub secret: bool,
}

/// Every built-in detector, highest priority first.
pub(crate) const ALL: &[Builtin] = &[
    private_key::DETECTOR,
    anthropic_key::DETECTOR,
    openai_key::DETECTOR,
    github_token::DETECTOR,
    stripe_key::DETECTOR,
    slack_token::DETECTOR,
    google_api_key::DETECTOR,
    aws_access_key::DETECTOR,
    // A JWT's header is checked (base64url JSON with `alg`): it names the
    // token rather than the generic shapes below, `Bearer eyJ…` included.
    jwt::DETECTOR,
    aws_secret_key::DETECTOR,
    bearer_token::DETECTOR,
    // An IBAN's digits may hold a Luhn-valid run; its own checks are
    // stricter (country, length, mod-97), so it names the text first.
    iban::DETECTOR,
    credit_card::DETECTOR,
    us_ssn::DETECTOR,
    email::DETECTOR,
    phone::DETECTOR,
    ip_address::DETECTOR,
];

/// The secrets the stored copy has always been cleaned of.
pub(crate) const BASELINE: &[&str] = &[
    "anthropic_key",
    "openai_key",
    "aws_access_key",
    "bearer_token",
];

#[cfg(test)]
pub(crate) use credit_card::luhn as credit_card_luhn;

/// Asserts that `detector` finds `real` and leaves every one of
/// `templates` alone, for the detectors' placeholder tests.
#[cfg(test)]
pub(crate) fn assert_placeholders_left_alone(detector: &Builtin, real: &str, templates: &[&str]) {
    assert_eq!(found_by(detector, real).len(), 1, "{real}");
    for template in templates {
        assert!(found_by(detector, template).is_empty(), "{template}");
    }
}

/// What `detector` alone reports in `text`, for the detectors' own tests.
#[cfg(test)]
pub(crate) fn found_by<'a>(detector: &Builtin, text: &'a str) -> Vec<&'a str> {
    let Ok(re) = regex::Regex::new(detector.pattern) else {
        return Vec::new();
    };
    re.captures_iter(text)
        .filter_map(|c| c.get(detector.group))
        .filter_map(|m| match detector.validate {
            Some(validate) => validate(text, m.range()),
            None => Some(m.range()),
        })
        .map(|r| &text[r])
        .collect()
}

#[cfg(test)]
#[test]
fn every_kind_is_its_name_in_upper_case() {
    for b in ALL {
        assert_eq!(b.kind, b.name.to_ascii_uppercase());
    }
}

/// The built-in detector called `name`.
pub(crate) fn by_name(name: &str) -> Option<&'static Builtin> {
    ALL.iter().find(|b| b.name == name)
}

/// The names of all built-in detectors, for error messages and docs.
pub fn names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = ALL.iter().map(|b| b.name).collect();
    names.sort_unstable();
    names
}

/// A secret detector's last word on a candidate: `None` for a placeholder
/// (see the `placeholder` module), the span otherwise.
pub(crate) fn unless_placeholder(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    (!placeholder::is_placeholder(text, &span)).then_some(span)
}

/// The byte before `at`, if any.
pub(crate) fn byte_before(text: &str, at: usize) -> Option<u8> {
    at.checked_sub(1).map(|i| text.as_bytes()[i])
}

/// The byte at `at`, if any.
pub(crate) fn byte_at(text: &str, at: usize) -> Option<u8> {
    text.as_bytes().get(at).copied()
}

pub(crate) fn is_word(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

/// Whether the candidate is glued to a longer number on either side, as in
/// `1.2.3.4.5` or `12-345-6789-0`: a separator followed by a digit.
pub(crate) fn continues_number(text: &str, span: &Range<usize>, seps: &[u8]) -> bool {
    let b = text.as_bytes();
    let before =
        span.start >= 2 && seps.contains(&b[span.start - 1]) && b[span.start - 2].is_ascii_digit();
    let after =
        span.end + 1 < b.len() && seps.contains(&b[span.end]) && b[span.end + 1].is_ascii_digit();
    before || after
}

/// Whether a digit or letter touches the candidate on either side.
pub(crate) fn glued(text: &str, span: &Range<usize>) -> bool {
    byte_before(text, span.start).is_some_and(is_word)
        || byte_at(text, span.end).is_some_and(is_word)
}

/// The ASCII digits of `s`, as values.
pub(crate) fn digits(s: &str) -> Vec<u8> {
    s.bytes()
        .filter(u8::is_ascii_digit)
        .map(|b| b - b'0')
        .collect()
}

//! IP addresses: dotted-quad IPv4 (each octet 0-255, no leading zeros) and
//! IPv6 as `std::net` parses it. Version strings such as `1.2.3.4.5`, times
//! and MAC addresses are not addresses.

use std::net::Ipv6Addr;
use std::ops::Range;

use super::{byte_at, byte_before, continues_number, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "ip_address",
    pattern: r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
    group: 0,
    validate: Some(validate),
    secret: false,
};

fn validate(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let candidate = &text[span.clone()];
    if candidate.contains(':') {
        return ipv6(text, span);
    }
    if continues_number(text, &span, b".") {
        return None;
    }
    let v4 = candidate
        .split('.')
        .all(|octet| octet.parse::<u8>().is_ok() && (octet.len() == 1 || !octet.starts_with('0')));
    v4.then_some(span)
}

/// Code such as `std::vec` or `a::b` parses as IPv6, so a candidate needs a
/// digit, at least four hex digits, and no word or `:` touching it.
fn ipv6(text: &str, span: Range<usize>) -> Option<Range<usize>> {
    let touching = |b: u8| b.is_ascii_alphanumeric() || b == b'_' || b == b':';
    if byte_before(text, span.start).is_some_and(touching)
        || byte_at(text, span.end).is_some_and(touching)
    {
        return None;
    }
    let candidate = &text[span.clone()];
    let hex = candidate.bytes().filter(u8::is_ascii_hexdigit).count();
    if hex < 4 || !candidate.bytes().any(|b| b.is_ascii_digit()) {
        return None;
    }
    candidate.parse::<Ipv6Addr>().is_ok().then_some(span)
}

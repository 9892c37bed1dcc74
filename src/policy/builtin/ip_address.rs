//! IP addresses: dotted-quad IPv4 (each octet 0-255, no leading zeros) and
//! IPv6 as `std::net` parses it. Version strings such as `1.2.3.4.5`, times
//! and MAC addresses are not addresses.
//!
//! Four-part versions look exactly like addresses, so context decides: a
//! dotted quad is left alone when the nearest context word names a version
//! (`version 5.1.20.33`, `firmware 9.2.14.101`, `build=3.7.0.12`,
//! `"appVersion": "…"`, `v 1.2.3.4`, a `version` table column), unless a
//! nearer word names an address (`host`, `ip`, `server`).

use std::net::Ipv6Addr;
use std::ops::Range;

use super::context::{judge, Cue, Reach, Vocabulary};
use super::{byte_at, byte_before, continues_number, Builtin};

pub(super) const DETECTOR: Builtin = Builtin {
    name: "ip_address",
    kind: "IP_ADDRESS",
    pattern: r"(?-u:\b)(?:[0-9]{1,3}\.){3}[0-9]{1,3}(?-u:\b)|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}",
    group: 0,
    validate: Some(validate),
    secret: false,
};

/// Words that name an address, and words that name a version.
const VOCABULARY: Vocabulary = Vocabulary::new(
    // Confirm.
    &[
        &["ip"],
        &["ips"],
        &["ipv4"],
        &["addr"],
        &["address"],
        &["host"],
        &["hostname"],
        &["server"],
        &["client"],
        &["remote"],
        &["peer"],
        &["src"],
        &["dst"],
        &["source"],
        &["destination"],
        &["gateway"],
        &["gw"],
        &["dns"],
        &["nameserver"],
        &["subnet"],
        &["inet"],
        &["listen"],
        &["bind"],
        &["proxy"],
        &["endpoint"],
        &["node"],
        &["pod"],
        &["vip"],
        &["router"],
        &["ping"],
        &["ssh"],
        &["forwarded"],
    ],
    // Veto.
    &[
        &["version"],
        &["versions"],
        &["ver"],
        &["vers"],
        &["v"],
        &["build"],
        &["builds"],
        &["firmware"],
        &["fw"],
        &["release"],
        &["released"],
        &["releases"],
        &["rel"],
        &["rev"],
        &["revision"],
        &["patch"],
        &["hotfix"],
        &["sdk"],
        &["driver"],
        &["kernel"],
        &["bios"],
        &["assembly"],
        &["fileversion"],
        &["productversion"],
        &["upgrade"],
        &["upgraded"],
        &["downgrade"],
        &["changelog"],
        &["tag"],
        &["semver"],
        &["edition"],
    ],
);

const REACH: Reach = Reach {
    before: 3,
    after: 1,
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
    if !v4 || written_as_version(text, &span) {
        return None;
    }
    if judge(text, &span, REACH, &VOCABULARY) == Some(Cue::Veto) {
        return None;
    }
    Some(span)
}

/// Versions by their punctuation: a product token (`Agent/5.1.20.33`), a
/// package pin (`pkg==1.2.3.4`, `>=`, `~=`, `^`, `~`), or a pre-release or
/// build suffix (`1.2.3.4-rc1`, `1.2.3.4+build5`).
fn written_as_version(text: &str, span: &Range<usize>) -> bool {
    let b = text.as_bytes();
    let before = |n: usize| span.start.checked_sub(n).map(|i| b[i]);
    let after = |n: usize| b.get(span.end + n).copied();
    let product = before(1) == Some(b'/') && before(2).is_some_and(|c| c.is_ascii_alphanumeric());
    let pin = matches!(before(1), Some(b'^' | b'~'))
        || (before(1) == Some(b'=') && matches!(before(2), Some(b'=' | b'>' | b'<' | b'~' | b'!')));
    let suffix = after(0) == Some(b'+')
        || (after(0) == Some(b'-') && after(1).is_some_and(|c| c.is_ascii_alphabetic()));
    product || pin || suffix
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin::found_by;

    fn found(text: &str) -> Vec<&str> {
        found_by(&DETECTOR, text)
    }

    #[test]
    fn versions_are_not_addresses() {
        for text in [
            "version 5.1.20.33",
            "firmware 9.2.14.101 installed",
            "build=3.7.0.12",
            "v0.9.1.250",
            "v 1.2.3.4",
            r#"{"version": "5.1.20.33"}"#,
            r#"{"appVersion":"5.1.20.33"}"#,
            "sw_ver: 1.2.3.4",
            "Release 10.4.1.2 is out",
            "upgraded router firmware from 9.2.14.100 to 9.2.14.101",
            "component,version\nagent,5.1.20.33",
            "| pkg | version |\n|---|---|\n| agent | 5.1.20.33 |",
            "10.2.0.1 release notes",
            "User-Agent: Agent/5.1.20.33 (linux)",
            "pip install pkg==1.2.3.4",
            "\"dep\": \"^1.2.3.4\"",
            "tag 1.2.3.4-rc1 and 5.1.20.33+build5",
        ] {
            assert!(found(text).is_empty(), "{text}: {:?}", found(text));
        }
    }

    #[test]
    fn addresses_stay_addresses() {
        for text in [
            "connect to 10.0.3.17 now",
            "host=10.0.3.17",
            r#"{"ip": "192.168.1.20"}"#,
            "version 2 of the server at 10.0.0.5",
            "release the lock on 10.1.2.3 first",
            "client 203.0.113.9 sent version=2",
            "host,version\n10.0.3.17,5",
            "http://10.0.3.17/api and 10.0.0.0/8",
            "range 10.0.0.1-10.0.0.20",
            "ssh admin@10.0.3.17",
        ] {
            // Each address holds three dots, and nothing else here does.
            assert_eq!(found(text).len(), text.matches('.').count() / 3, "{text}");
        }
    }
}

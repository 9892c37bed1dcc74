//! Header maps as the proxy passes them on: without hop-by-hop headers, and
//! with values that no longer borrow hyper's connection buffers.

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1),
/// plus `proxy-authorization`, which is meant for a proxy, not upstream.
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// `headers` without hop-by-hop headers, including those the
/// `Connection` header names.
pub fn forwardable(mut headers: HeaderMap) -> HeaderMap {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in HOP_BY_HOP.iter().chain(named.iter()) {
        headers.remove(name);
    }
    headers
}

/// A copy of `headers` to keep beyond the call's head (for the audit
/// record), with every value in one buffer of its own.
///
/// hyper parses header values as slices of the connection's read buffer
/// (8 KiB or more). While any of them lives, the connection cannot reuse
/// that buffer and allocates a second one for its next read, so a plain
/// clone kept while a long stream runs would hold two buffers per
/// connection instead of one. Maps that are only forwarded are dropped once
/// written and need no copy.
pub fn detached(headers: &HeaderMap) -> HeaderMap {
    let mut copy = headers.clone();
    detach_values(&mut copy);
    copy
}

/// Moves every value of `headers` into one buffer of its own.
fn detach_values(headers: &mut HeaderMap) {
    let total: usize = headers.values().map(|v| v.len()).sum();
    let mut owned = BytesMut::with_capacity(total);
    for value in headers.values() {
        owned.extend_from_slice(value.as_bytes());
    }
    let owned = owned.freeze();
    let mut at = 0;
    for value in headers.values_mut() {
        let len = value.len();
        // The bytes were a valid value a moment ago, so this cannot fail;
        // if it ever did, the borrowed value simply stays.
        if let Ok(mut copy) = HeaderValue::from_maybe_shared(owned.slice(at..at + len)) {
            copy.set_sensitive(value.is_sensitive());
            *value = copy;
        }
        at += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_headers_are_dropped() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            "keep-alive, x-secret-hop".parse().unwrap(),
        );
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert("x-secret-hop", "1".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer sk-x".parse().unwrap());
        h.insert("x-request-id", "abc".parse().unwrap());
        let out = forwardable(h);
        assert!(out.get(header::CONNECTION).is_none());
        assert!(out.get("keep-alive").is_none());
        assert!(out.get("x-secret-hop").is_none());
        assert!(out.get(header::TRANSFER_ENCODING).is_none());
        assert_eq!(out.get(header::AUTHORIZATION).unwrap(), "Bearer sk-x");
        assert_eq!(out.get("x-request-id").unwrap(), "abc");
    }

    #[test]
    fn detached_values_are_equal_and_release_the_read_buffer() {
        // A stand-in for hyper's read buffer: values are slices of it.
        let mut read_buf = BytesMut::with_capacity(8192);
        read_buf.extend_from_slice(b"application/jsonBearer sk-xabc");
        let head = read_buf.split().freeze();
        let base = head.as_ptr();
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_maybe_shared(head.slice(0..16)).unwrap(),
        );
        let mut auth = HeaderValue::from_maybe_shared(head.slice(16..27)).unwrap();
        auth.set_sensitive(true);
        h.insert(header::AUTHORIZATION, auth);
        h.append(
            "x-multi",
            HeaderValue::from_maybe_shared(head.slice(27..30)).unwrap(),
        );
        h.append("x-multi", HeaderValue::from_static("second"));
        drop(head);

        detach_values(&mut h);

        assert_eq!(h.get(header::CONTENT_TYPE).unwrap(), "application/json");
        assert_eq!(h.get(header::AUTHORIZATION).unwrap(), "Bearer sk-x");
        assert!(h.get(header::AUTHORIZATION).unwrap().is_sensitive());
        let multi: Vec<_> = h.get_all("x-multi").iter().collect();
        assert_eq!(multi, ["abc", "second"]);
        // No value refers to the read buffer any more, so a reader that
        // needs a whole buffer again gets the same allocation back.
        read_buf.reserve(8192);
        assert_eq!(read_buf.as_ptr(), base);
    }
}

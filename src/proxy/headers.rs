//! Header maps as the proxy passes them on: without hop-by-hop headers.

use http::header::{self, HeaderMap, HeaderName};

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
}

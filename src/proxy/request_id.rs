//! The id that ties one call's events together.

use http::HeaderMap;

/// The app's `x-request-id` when it is 1 to 128 characters of letters,
/// digits and `-_.:`; otherwise a new UUID v7.
pub fn request_id_for(headers: &HeaderMap) -> String {
    headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid(v))
        .map_or_else(crate::event::new_id, str::to_owned)
}

fn is_valid(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", id.parse().unwrap());
        h
    }

    #[test]
    fn keeps_valid_ids() {
        assert_eq!(request_id_for(&with("req_abc-1.2:3")), "req_abc-1.2:3");
        assert_eq!(request_id_for(&with(&"a".repeat(128))).len(), 128);
    }

    #[test]
    fn replaces_invalid_or_missing_ids() {
        for bad in ["", "has space", "semi;colon", &"a".repeat(129), "quote\""] {
            let mut h = HeaderMap::new();
            if let Ok(v) = bad.parse() {
                h.insert("x-request-id", v);
            }
            let id = request_id_for(&h);
            assert_ne!(id, bad);
            assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        }
    }
}

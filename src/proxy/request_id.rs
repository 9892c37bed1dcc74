//! The id that ties one call's events together.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderMap;

use crate::policy::{Direction, PolicySet};

/// The app's `x-request-id` when it is 1 to 128 characters of letters,
/// digits and `-_.:` and holds nothing the store would redact (a secret, or
/// a value a policy does not keep); otherwise a new UUID v7. The id is
/// stored with every event of the call and sent back to the app, so a
/// redacted copy would be no id at all.
pub fn request_id_for(headers: &HeaderMap, policies: &PolicySet) -> Arc<str> {
    let kept = headers
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_valid(v))
        .filter(|v| {
            matches!(
                policies.redact_stored_text(v, Some(Direction::Request)),
                Cow::Borrowed(_)
            )
        });
    match kept {
        Some(id) => Arc::from(id),
        None => crate::event::with_new_id(|id| Arc::from(id)),
    }
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

    fn id_for(headers: &HeaderMap) -> String {
        request_id_for(headers, &PolicySet::baseline().unwrap()).to_string()
    }

    fn with(id: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", id.parse().unwrap());
        h
    }

    #[test]
    fn keeps_valid_ids() {
        assert_eq!(id_for(&with("req_abc-1.2:3")), "req_abc-1.2:3");
        assert_eq!(id_for(&with(&"a".repeat(128))).len(), 128);
    }

    #[test]
    fn replaces_invalid_or_missing_ids() {
        for bad in ["", "has space", "semi;colon", &"a".repeat(129), "quote\""] {
            let mut h = HeaderMap::new();
            if let Ok(v) = bad.parse() {
                h.insert("x-request-id", v);
            }
            let id = id_for(&h);
            assert_ne!(id, bad);
            assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        }
    }

    #[test]
    fn replaces_ids_the_store_would_redact() {
        let set = PolicySet::compile(&[crate::policy::PolicyDef {
            name: Some("cards".into()),
            detectors: vec!["credit_card".into()],
            action: Some("redact".into()),
            ..Default::default()
        }])
        .unwrap();
        for secret in [
            "sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34",
            "AKIAIOSFODNN7EXAMPLE",
            "4111111111111111",
        ] {
            let id = request_id_for(&with(secret), &set);
            assert_ne!(&*id, secret);
            assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
        }
        assert_eq!(&*request_id_for(&with("req-123"), &set), "req-123");
    }
}

//! A body as its event stores it (`request_data` / `response_data`).

use serde::{Serialize, Serializer};
use serde_json::value::RawValue;
use serde_json::Value;

/// A stored body: JSON text written from the raw body, or a value.
#[derive(Debug, Clone)]
pub enum StoredBody {
    /// Canonical JSON (compact, keys sorted: as serde_json prints the
    /// parsed value), written without a tree in between.
    Json(Box<RawValue>),
    /// A body read the general way: not JSON (text, forms, binary
    /// summaries), a reassembled stream, or JSON left to serde_json.
    Value(Value),
}

// === impl StoredBody ===

impl StoredBody {
    /// `text` as a stored body; it must be canonical JSON (see
    /// [`crate::capture::json_view::JsonView::write`]). Text that does not
    /// parse is stored as `null`, never as invalid JSON.
    pub fn json(text: String) -> Self {
        match RawValue::from_string(text) {
            Ok(raw) => Self::Json(raw),
            Err(_) => Self::Value(Value::Null),
        }
    }
}

impl Serialize for StoredBody {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Json(raw) => raw.serialize(serializer),
            Self::Value(value) => value.serialize(serializer),
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_stored_body_serialises_as_its_text_or_value() {
        let text = r#"{"a":[1,"x"],"b":null}"#;
        let body = StoredBody::json(text.to_owned());
        assert_eq!(serde_json::to_string(&body).unwrap(), text);
        let parsed: Value = serde_json::from_str(&serde_json::to_string(&body).unwrap()).unwrap();
        assert_eq!(parsed, json!({"a": [1, "x"], "b": null}));
        let body = StoredBody::Value(json!({"z": 1, "a": 2}));
        assert_eq!(serde_json::to_string(&body).unwrap(), r#"{"a":2,"z":1}"#);
        assert!(matches!(
            StoredBody::json("{".into()),
            StoredBody::Value(Value::Null)
        ));
    }
}

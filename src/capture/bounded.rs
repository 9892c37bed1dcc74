//! Keeps a stored body within a size limit once serialised.
//!
//! The capture cap bounds the bytes read, and decoding is capped at the
//! same size, but the stored JSON can still be larger than what was read:
//! reassembled streams repeat their text, and escaping writes some bytes
//! as several. A body value whose JSON exceeds the limit is replaced by a
//! cut, printable copy of that JSON, so no record grows past the limit
//! however hostile the body.

use std::io;

use serde_json::{json, Value};

/// Room kept for the wrapper object around a cut preview.
const WRAPPER_ROOM: usize = 256;

/// A body value, and whether it had to be cut to fit `limit` bytes of JSON.
///
/// A value that fits is returned as is. One that does not becomes
/// `{"cut": true, "limit_bytes": limit, "preview": "<the value's JSON, cut>"}`,
/// whose own JSON is at most `limit` bytes: the preview holds at most
/// half the limit, because escaping the JSON text as a string at most
/// doubles it (a serialised value has no raw control characters, only `"`
/// and `\` that gain a backslash).
pub fn bound_serialised(value: Value, limit: usize) -> (Value, bool) {
    let mut counter = Counter::new(limit);
    if serde_json::to_writer(&mut counter, &value).is_ok() {
        return (value, false);
    }
    let keep = (limit / 2).saturating_sub(WRAPPER_ROOM);
    let mut preview = Prefix::new(keep);
    // Stops with an error once `keep` bytes are in: that is the point.
    let _ = serde_json::to_writer(&mut preview, &value);
    let preview =
        String::from_utf8_lossy(&preview.bytes[..utf8_floor(&preview.bytes)]).into_owned();
    (
        json!({"cut": true, "limit_bytes": limit, "preview": preview}),
        true,
    )
}

/// As [`bound_serialised`] for a body already written as JSON text: the
/// text itself when it fits, else the same cut object, as text.
pub fn bound_text(text: String, limit: usize) -> (String, bool) {
    if text.len() <= limit {
        return (text, false);
    }
    let keep = (limit / 2).saturating_sub(WRAPPER_ROOM);
    let mut end = keep.min(text.len());
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    let cut = json!({"cut": true, "limit_bytes": limit, "preview": &text[..end]});
    (cut.to_string(), true)
}

/// Counts what is written, failing once past the limit so serialising
/// stops early.
struct Counter {
    written: usize,
    limit: usize,
}

/// Keeps the first `keep` bytes written, then fails.
struct Prefix {
    bytes: Vec<u8>,
    keep: usize,
}

// === impl Counter ===

impl Counter {
    fn new(limit: usize) -> Self {
        Self { written: 0, limit }
    }
}

impl io::Write for Counter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.written = self.written.saturating_add(buf.len());
        if self.written > self.limit {
            return Err(io::Error::other("over the stored body limit"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

// === impl Prefix ===

impl Prefix {
    fn new(keep: usize) -> Self {
        Self {
            bytes: Vec::with_capacity(keep),
            keep,
        }
    }
}

impl io::Write for Prefix {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let room = self.keep.saturating_sub(self.bytes.len());
        self.bytes.extend_from_slice(&buf[..buf.len().min(room)]);
        if buf.len() > room {
            return Err(io::Error::other("preview full"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Length of the longest prefix of `bytes` that is whole UTF-8.
fn utf8_floor(bytes: &[u8]) -> usize {
    match std::str::from_utf8(bytes) {
        Ok(_) => bytes.len(),
        Err(e) => e.valid_up_to(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_that_fits_is_kept() {
        let v = json!({"model": "gpt-4o", "messages": [{"content": "hi"}]});
        assert_eq!(bound_serialised(v.clone(), 1024), (v, false));
    }

    #[test]
    fn a_text_is_bounded_as_its_value_is() {
        for (v, limit) in [
            (
                json!({"model": "gpt-4o", "messages": [{"content": "hi"}]}),
                1024,
            ),
            (json!({"text": "\"\\\u{0}é".repeat(1024)}), 1024),
            (json!({"text": "aé€😀".repeat(4096)}), 4096),
        ] {
            let (want, want_cut) = bound_serialised(v.clone(), limit);
            let (got, cut) = bound_text(v.to_string(), limit);
            assert_eq!(cut, want_cut);
            assert_eq!(got, want.to_string());
        }
    }

    #[test]
    fn a_value_over_the_limit_is_cut_to_fit() {
        for limit in [1024, 4096, 64 * 1024] {
            // Quotes and backslashes double when the JSON is escaped again.
            let v = json!({"text": "\"\\\u{0}é".repeat(limit)});
            let (cut, was_cut) = bound_serialised(v, limit);
            assert!(was_cut);
            assert_eq!(cut["cut"], json!(true));
            let stored = serde_json::to_string(&cut).unwrap();
            assert!(stored.len() <= limit, "{} > {limit}", stored.len());
            assert!(cut["preview"]
                .as_str()
                .unwrap()
                .starts_with(r#"{"text":"\"\\\u0000é"#));
        }
    }
}

//! The hash chain that makes tampering with stored events evident.
//!
//! Canonical encoding, hashed with SHA-256 and written as lower-case hex:
//! each of the fields below is written as its UTF-8 byte length in decimal,
//! a `:`, the bytes, and a `\n`, in this order:
//!
//! 1. `seq` in decimal
//! 2. `id`
//! 3. `timestamp` as stored (RFC 3339, microseconds, `Z`)
//! 4. `event_type`
//! 5. `level`
//! 6. `message`
//! 7. `request_id`, or the empty string when there is none
//! 8. `metadata` as compact JSON with object keys sorted
//! 9. `prev_hash`
//!
//! The first event of a store has `prev_hash` = [`GENESIS_HASH`]. Length
//! prefixes make the encoding unambiguous whatever the fields contain.

mod link;

use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{timestamp_text, AuditEvent, EventRecord};

pub use link::ChainLink;

/// The `prev_hash` of the first event in a store: 64 zeros.
pub const GENESIS_HASH: &str = "0000000000000000000000000000000000000000000000000000000000000000";

/// Where a chain check stopped, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub seq: i64,
    pub reason: String,
}

/// Checks events one at a time, in `seq` order, against the chain.
#[derive(Debug, Clone)]
pub struct ChainVerifier {
    prev_hash: String,
    prev_seq: Option<i64>,
    checked: u64,
}

/// The hash of `event` as the chain defines it (its own `hash` field is
/// ignored), from its metadata as it is now: what verification uses.
pub fn event_hash(event: &AuditEvent) -> String {
    hash_with_metadata(event, event.metadata.as_str())
}

/// As [`event_hash`], with the metadata's canonical JSON already at hand
/// (sealing reuses the text the producer serialised).
pub fn hash_with_metadata(event: &AuditEvent, metadata_json: &str) -> String {
    let mut seq = itoa::Buffer::new();
    hash_fields([
        decimal(event.seq, &mut seq),
        event.id.as_bytes(),
        timestamp_text(&event.timestamp).as_str().as_bytes(),
        event.event_type.as_str().as_bytes(),
        event.level.as_str().as_bytes(),
        event.message.as_bytes(),
        event.request_id.as_deref().unwrap_or("").as_bytes(),
        metadata_json.as_bytes(),
        event.prev_hash.as_bytes(),
    ])
}

/// Whether a stored record's `hash` matches its content. The metadata is
/// hashed as stored; only if that does not match is it re-encoded
/// canonically, so a record passes exactly when the event read from it
/// would.
pub fn record_matches(record: &EventRecord) -> bool {
    let stored = record.metadata.get();
    record_hash(record, stored) == record.hash
        || serde_json::from_str::<Value>(stored)
            .is_ok_and(|v| record_hash(record, &canonical_json(&v)) == record.hash)
}

/// The hash of a stored record, from its metadata text as stored: what
/// the store wrote is the canonical text that was hashed, so an untouched
/// record needs no parse and re-encoding of its metadata.
fn record_hash(record: &EventRecord, metadata_json: &str) -> String {
    hash_fields([
        decimal(record.seq, &mut itoa::Buffer::new()),
        record.id.as_bytes(),
        record.timestamp.as_bytes(),
        record.event_type.as_str().as_bytes(),
        record.level.as_str().as_bytes(),
        record.message.as_bytes(),
        record.request_id.as_deref().unwrap_or("").as_bytes(),
        metadata_json.as_bytes(),
        record.prev_hash.as_bytes(),
    ])
}

/// The encoding of a record's first eight fields (all but `prev_hash`), as
/// a [`ChainLink`] carries it: with the metadata text as stored when that
/// is what was hashed, else canonical.
fn record_prefix(record: &EventRecord) -> Vec<u8> {
    let stored = record.metadata.get();
    let metadata = if record_hash(record, stored) == record.hash {
        std::borrow::Cow::Borrowed(stored)
    } else {
        serde_json::from_str::<Value>(stored).map_or(std::borrow::Cow::Borrowed(stored), |v| {
            std::borrow::Cow::Owned(canonical_json(&v))
        })
    };
    let seq = record.seq.to_string();
    let fields: [&[u8]; 8] = [
        seq.as_bytes(),
        record.id.as_bytes(),
        record.timestamp.as_bytes(),
        record.event_type.as_str().as_bytes(),
        record.level.as_str().as_bytes(),
        record.message.as_bytes(),
        record.request_id.as_deref().unwrap_or("").as_bytes(),
        metadata.as_bytes(),
    ];
    let mut out = Vec::new();
    for bytes in fields {
        push_field(&mut out, bytes);
    }
    out
}

/// One field of the encoding: length, `:`, bytes, `\n`.
fn push_field(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(decimal(bytes.len(), &mut itoa::Buffer::new()));
    out.push(b':');
    out.extend_from_slice(bytes);
    out.push(b'\n');
}

/// The encoding described at the top of this module, hashed.
fn hash_fields(fields: [&[u8]; 9]) -> String {
    let mut staged = Staged::new();
    for bytes in fields {
        staged.push_field(bytes);
    }
    lower_hex(&staged.finish())
}

/// Bytes on their way into SHA-256, gathered into a buffer first: an
/// event's encoding is 36 pieces, most of a few bytes, and each update of
/// the hasher costs more than hashing such a piece, so the pieces go in
/// as a few large updates (the metadata, when longer than the buffer, as
/// one of its own).
struct Staged {
    hasher: Sha256,
    buf: [u8; 512],
    len: usize,
}

impl Staged {
    fn new() -> Self {
        Self {
            hasher: Sha256::new(),
            buf: [0; 512],
            len: 0,
        }
    }

    /// One field of the encoding. Its length, `:` and `\n` are a few
    /// bytes each, written a byte at a time: a copy call per piece costs
    /// more than the piece.
    fn push_field(&mut self, bytes: &[u8]) {
        let mut digits = itoa::Buffer::new();
        let digits = decimal(bytes.len(), &mut digits);
        self.push_small(digits);
        self.push_small(b":");
        self.push(bytes);
        self.push_small(b"\n");
    }

    /// As [`Self::push`], for a piece of a few bytes.
    fn push_small(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.hasher.update(&self.buf[..self.len]);
            self.len = 0;
        }
        for (to, &b) in self.buf[self.len..].iter_mut().zip(bytes) {
            *to = b;
        }
        self.len += bytes.len();
    }

    fn push(&mut self, bytes: &[u8]) {
        if self.len + bytes.len() > self.buf.len() {
            self.hasher.update(&self.buf[..self.len]);
            self.len = 0;
            if bytes.len() > self.buf.len() {
                self.hasher.update(bytes);
                return;
            }
        }
        self.buf[self.len..self.len + bytes.len()].copy_from_slice(bytes);
        self.len += bytes.len();
    }

    fn finish(mut self) -> [u8; 32] {
        self.hasher.update(&self.buf[..self.len]);
        self.hasher.finalize().into()
    }
}

/// `digest` as lower-case hex, written in place rather than a character
/// at a time.
fn lower_hex(digest: &[u8; 32]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (pair, byte) in out.chunks_exact_mut(2).zip(digest) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0xf)];
    }
    // Only ASCII hex digits are written.
    String::from_utf8_lossy(&out).into_owned()
}

/// `n` in decimal ASCII, written into `buf` (an event is hashed for every
/// call, so its seq and field lengths are not formatted into new strings).
fn decimal<N: itoa::Integer>(n: N, buf: &mut itoa::Buffer) -> &[u8] {
    buf.format(n).as_bytes()
}

/// Compact JSON with object keys in sorted order.
pub fn canonical_json(value: &Value) -> String {
    // serde_json's `Map` is a BTreeMap unless the `preserve_order` feature is
    // on, so plain serialisation already sorts keys. The test below guards
    // against a dependency turning that feature on.
    serde_json::to_string(value).unwrap_or_default()
}

// === impl ChainVerifier ===

impl Default for ChainVerifier {
    fn default() -> Self {
        Self::new()
    }
}

impl ChainVerifier {
    pub fn new() -> Self {
        Self {
            prev_hash: GENESIS_HASH.to_owned(),
            prev_seq: None,
            checked: 0,
        }
    }

    /// Starts from a known-good head instead of the genesis (for stores that
    /// have dropped their oldest events by retention).
    pub fn resume(prev_seq: i64, prev_hash: &str) -> Self {
        Self {
            prev_hash: prev_hash.to_owned(),
            prev_seq: Some(prev_seq),
            checked: 0,
        }
    }

    /// Checks the next event. Retention may remove the oldest events, so the
    /// very first event seen is trusted to link to whatever came before it.
    pub fn check(&mut self, event: &AuditEvent) -> Result<(), ChainBreak> {
        self.link(event.seq, &event.prev_hash, &event.hash, || {
            event_hash(event) == event.hash
        })
    }

    /// As [`check`](Self::check), for a record as the store holds it. The
    /// metadata is hashed as stored; only if that does not match is it
    /// re-encoded canonically, so a record passes exactly when the event
    /// read from it would.
    pub fn check_record(&mut self, record: &EventRecord) -> Result<(), ChainBreak> {
        self.link(record.seq, &record.prev_hash, &record.hash, || {
            record_matches(record)
        })
    }

    fn link(
        &mut self,
        seq: i64,
        prev_hash: &str,
        hash: &str,
        content_matches: impl FnOnce() -> bool,
    ) -> Result<(), ChainBreak> {
        let fail = |reason: &str| ChainBreak {
            seq,
            reason: reason.to_owned(),
        };
        if let Some(prev) = self.prev_seq {
            if seq <= prev {
                return Err(fail("seq does not increase"));
            }
            if prev_hash != self.prev_hash {
                return Err(fail("prev_hash does not match the previous event's hash"));
            }
        }
        if !content_matches() {
            return Err(fail("hash does not match the event's content"));
        }
        self.prev_hash = hash.to_owned();
        self.prev_seq = Some(seq);
        self.checked += 1;
        Ok(())
    }

    pub fn checked(&self) -> u64 {
        self.checked
    }

    /// The last good event's seq and hash.
    pub fn head(&self) -> Option<(i64, &str)> {
        self.prev_seq.map(|s| (s, self.prev_hash.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{EventType, NewEvent};
    use serde_json::json;

    fn chain(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let e = NewEvent::new(EventType::Custom, format!("event {seq}"))
                    .with_metadata(json!({"b": seq, "a": [1, 2]}))
                    .seal(seq, &prev);
                prev = e.hash.clone();
                e
            })
            .collect()
    }

    /// The encoding hashed piece by piece, as the module notes define it.
    fn reference_hash(fields: [&[u8]; 9]) -> String {
        let mut hasher = Sha256::new();
        for bytes in fields {
            hasher.update(bytes.len().to_string().as_bytes());
            hasher.update(b":");
            hasher.update(bytes);
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }

    #[test]
    fn staged_hashing_matches_the_encoding_hashed_piece_by_piece() {
        // Lengths around the staging buffer's size, one field at a time and
        // all together, so every way a piece meets the buffer is covered.
        let lengths = [
            0, 1, 7, 63, 64, 200, 499, 500, 505, 511, 512, 513, 1024, 5000,
        ];
        let text = "abcdefghijklmnopqrstuvwxyz0123456789".repeat(200);
        for (i, &a) in lengths.iter().enumerate() {
            for &b in &lengths {
                let c = lengths[(i * 5 + b) % lengths.len()];
                let fields: [&[u8]; 9] = [
                    b"42",
                    &text.as_bytes()[..a],
                    b"2026-12-03T18:00:00.000001Z",
                    b"REQUEST",
                    &text.as_bytes()[1..1 + c],
                    &text.as_bytes()[2..2 + b],
                    b"",
                    &text.as_bytes()[3..3 + b.max(a)],
                    GENESIS_HASH.as_bytes(),
                ];
                assert_eq!(hash_fields(fields), reference_hash(fields), "{a} {b} {c}");
            }
        }
    }

    #[test]
    fn lengths_are_written_as_decimal_text() {
        for n in [0, 7, 10, 99, 1000, 123_456_789, usize::MAX] {
            assert_eq!(
                decimal(n, &mut itoa::Buffer::new()),
                n.to_string().as_bytes()
            );
        }
    }

    #[test]
    fn sequence_numbers_are_written_as_decimal_text() {
        for n in [0, 1, -1, 42, -1000, i64::MAX, i64::MIN] {
            assert_eq!(
                decimal(n, &mut itoa::Buffer::new()),
                n.to_string().as_bytes()
            );
        }
    }

    #[test]
    fn canonical_json_sorts_keys() {
        let v: Value = serde_json::from_str(r#"{"z":1,"a":{"y":2,"b":3}}"#).unwrap();
        assert_eq!(canonical_json(&v), r#"{"a":{"b":3,"y":2},"z":1}"#);
    }

    #[test]
    fn intact_chain_verifies() {
        let mut v = ChainVerifier::new();
        for e in chain(5) {
            v.check(&e).unwrap();
        }
        assert_eq!(v.checked(), 5);
    }

    #[test]
    fn any_edit_breaks_the_chain_at_that_event() {
        let edits: Vec<fn(&mut AuditEvent)> = vec![
            |e| e.message.push('!'),
            |e| e.metadata = json!({"b": 0}).into(),
            |e| e.request_id = Some("x".into()),
            |e| e.level = crate::event::Level::Critical,
            |e| e.prev_hash = GENESIS_HASH.into(),
        ];
        for edit in edits {
            let mut events = chain(4);
            edit(&mut events[2]);
            let mut v = ChainVerifier::new();
            let err = events.iter().try_for_each(|e| v.check(e)).unwrap_err();
            assert_eq!(err.seq, 3);
        }
    }

    #[test]
    fn deleted_event_is_detected() {
        let mut events = chain(4);
        events.remove(1);
        let mut v = ChainVerifier::new();
        let err = events.iter().try_for_each(|e| v.check(e)).unwrap_err();
        assert_eq!(err.seq, 3);
    }

    #[test]
    fn field_boundaries_are_unambiguous() {
        let a = NewEvent::new(EventType::Custom, "ab").with_request_id("c");
        let mut b = a.clone();
        b.message = "a".into();
        b.request_id = Some("bc".into());
        assert_ne!(a.seal(1, GENESIS_HASH).hash, b.seal(1, GENESIS_HASH).hash);
    }

    #[test]
    fn records_verify_from_their_stored_text() {
        let events = chain(3);
        let records: Vec<EventRecord> = events
            .iter()
            .cloned()
            .map(|e| EventRecord::try_from(e).unwrap())
            .collect();
        let mut v = ChainVerifier::new();
        for r in &records {
            v.check_record(r).unwrap();
        }
        assert_eq!(v.checked(), 3);

        // Stored text that is not canonical but means the same still
        // verifies, as the event read from it would.
        let mut spaced = records[1].clone();
        spaced.metadata =
            serde_json::value::RawValue::from_string(r#"{ "b": 2, "a": [1, 2] }"#.into()).unwrap();
        let mut v = ChainVerifier::new();
        v.check_record(&records[0]).unwrap();
        v.check_record(&spaced).unwrap();

        // Changed content does not.
        let mut edited = records[1].clone();
        edited.metadata =
            serde_json::value::RawValue::from_string(r#"{"a":[1,2],"b":3}"#.into()).unwrap();
        let mut v = ChainVerifier::new();
        v.check_record(&records[0]).unwrap();
        let broken = v.check_record(&edited).unwrap_err();
        assert_eq!(broken.seq, 2);
        assert_eq!(broken.reason, "hash does not match the event's content");
        let mut renamed = records[2].clone();
        renamed.message.push('!');
        let mut v = ChainVerifier::new();
        v.check_record(&records[0]).unwrap();
        v.check_record(&records[1]).unwrap();
        assert_eq!(v.check_record(&renamed).unwrap_err().seq, 3);
    }
}

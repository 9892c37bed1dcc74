//! Chain links: an event's place in the chain without its content.
//!
//! An export of a range (or of a filtered set) must still reach the
//! checkpoint that signs it, across events it leaves out. For each such
//! event it carries a [`ChainLink`]: the SHA-256 state after the whole
//! 64-byte blocks of the event's encoding up to (not including) its
//! `prev_hash` field, the few bytes left over, and the total length. A
//! verifier finishes the hash itself from the `prev_hash` it computed for
//! the event before, so each link's hash is recomputed, never read.
//!
//! Soundness: to make a changed event in the range still reach the signed
//! hash, a forger would have to find a link whose hash, finished from a
//! *different* `prev_hash`, equals the original one: a preimage of the
//! SHA-256 compression function from a chosen starting state, for which no
//! attack better than brute force is known. The content of the left-out
//! events is not revealed (only their length and a hash state).

use serde::{Deserialize, Serialize};
use sha2::digest::generic_array::GenericArray;

use super::EventRecord;

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_IV: [u32; 8] = [
    0x6a09_e667,
    0xbb67_ae85,
    0x3c6e_f372,
    0xa54f_f53a,
    0x510e_527f,
    0x9b05_688c,
    0x1f83_d9ab,
    0x5be0_cd19,
];

/// One left-out event, as an export carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    /// For readers only: it is part of the hashed bytes, so a wrong one
    /// cannot be used to move the event.
    pub seq: i64,
    /// The hash state, as 8 big-endian words in hex.
    pub state: String,
    /// The bytes after the last whole block, in hex (fewer than 64).
    pub tail: String,
    /// Length of the encoding up to the `prev_hash` field, in bytes.
    pub length: u64,
}

// === impl ChainLink ===

impl ChainLink {
    /// The link of a stored record.
    pub fn of_record(record: &EventRecord) -> Self {
        let prefix = super::record_prefix(record);
        let whole = prefix.len() - prefix.len() % 64;
        let mut state = SHA256_IV;
        compress(&mut state, &prefix[..whole]);
        Self {
            seq: record.seq,
            state: state.iter().map(|w| format!("{w:08x}")).collect(),
            tail: hex::encode(&prefix[whole..]),
            length: prefix.len() as u64,
        }
    }

    /// The event's hash, finished from `prev_hash`; `None` if the link is
    /// malformed.
    pub fn hash_after(&self, prev_hash: &str) -> Option<String> {
        let mut state = self.parse_state()?;
        let tail = hex::decode(&self.tail).ok()?;
        let whole = self.length.checked_sub(tail.len() as u64)?;
        if tail.len() >= 64 || whole % 64 != 0 {
            return None;
        }
        let mut rest = tail;
        super::push_field(&mut rest, prev_hash.as_bytes());
        let total_bits = (whole + rest.len() as u64).checked_mul(8)?;
        rest.push(0x80);
        while rest.len() % 64 != 56 {
            rest.push(0);
        }
        rest.extend_from_slice(&total_bits.to_be_bytes());
        compress(&mut state, &rest);
        let mut digest = [0u8; 32];
        for (out, word) in digest.chunks_exact_mut(4).zip(state) {
            out.copy_from_slice(&word.to_be_bytes());
        }
        Some(hex::encode(digest))
    }

    fn parse_state(&self) -> Option<[u32; 8]> {
        let bytes = hex::decode(&self.state).ok()?;
        if bytes.len() != 32 {
            return None;
        }
        let mut state = [0u32; 8];
        for (word, chunk) in state.iter_mut().zip(bytes.chunks_exact(4)) {
            *word = u32::from_be_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
        }
        Some(state)
    }
}

/// Runs SHA-256's compression over whole 64-byte blocks.
fn compress(state: &mut [u32; 8], bytes: &[u8]) {
    let blocks: Vec<_> = bytes
        .chunks_exact(64)
        .map(|b| *GenericArray::from_slice(b))
        .collect();
    sha2::compress256(state, &blocks);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::chain::GENESIS_HASH;
    use crate::event::{EventType, NewEvent};
    use serde_json::json;

    #[test]
    fn a_link_finishes_to_the_event_hash_whatever_its_length() {
        for size in [0usize, 1, 10, 40, 55, 56, 63, 64, 65, 120, 500, 1000] {
            let event = NewEvent::new(EventType::Custom, "x".repeat(size))
                .with_metadata(json!({"pad": "y".repeat(size % 70)}))
                .seal(7, &"ab".repeat(32));
            let record = EventRecord::try_from(event.clone()).unwrap();
            let link = ChainLink::of_record(&record);
            assert_eq!(link.hash_after(&event.prev_hash), Some(event.hash.clone()));
            assert_ne!(link.hash_after(GENESIS_HASH), Some(event.hash.clone()));
        }
    }

    #[test]
    fn malformed_links_are_refused() {
        let event = NewEvent::new(EventType::Custom, "m").seal(1, GENESIS_HASH);
        let link = ChainLink::of_record(&EventRecord::try_from(event).unwrap());
        let mut short = link.clone();
        short.state.truncate(10);
        assert_eq!(short.hash_after(GENESIS_HASH), None);
        let mut long_tail = link.clone();
        long_tail.tail = "00".repeat(64);
        assert_eq!(long_tail.hash_after(GENESIS_HASH), None);
        let mut bad_length = link;
        bad_length.length += 1;
        assert_eq!(bad_length.hash_after(GENESIS_HASH), None);
    }
}

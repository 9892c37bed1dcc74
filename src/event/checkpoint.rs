//! Signed checkpoints: an Ed25519 signature over the head of the chain.
//!
//! The hash chain shows that stored events were not edited one by one, but
//! anyone who can write the store can rebuild the whole chain. A checkpoint
//! is a CHECKPOINT event whose metadata holds a signed [`Statement`]: "store
//! `source_id` held, at `seq`, an event with this `hash`, at `time`". Only
//! the holder of the private key can make one, so a rebuilt chain no longer
//! matches the hashes its checkpoints sign.
//!
//! The checkpoint event itself sits in the chain right after the event it
//! covers (its `prev_hash` is the signed `hash`), so checkpoints travel with
//! the events into exports and wherever events are shipped.
//!
//! Key text forms: a private key is the base64 of its 32-byte seed; a
//! public key is the base64 of its 32 bytes; a key id is the first 16 hex
//! digits of the SHA-256 of the public key.

use std::fmt;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::{format_timestamp, parse_timestamp};

/// The domain tag that starts every signed statement, so a checkpoint
/// signature can never be replayed as a signature over anything else.
const DOMAIN: &str = "llm-audit-proxy checkpoint v1";

/// Why the writer signed a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The first checkpoint of a process: it follows the start-up events.
    Start,
    /// `audit.checkpoint_every_events` events were written since the last.
    Events,
    /// `audit.checkpoint_interval_secs` passed; written even when idle, as
    /// a heartbeat that proves nothing was written in between.
    Interval,
    /// Asked for by an export, so that everything it holds is covered.
    Export,
    /// A clean stop: nothing follows it in this process.
    Stop,
}

/// What a checkpoint signs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    /// The store's stable id (made when the store was created).
    pub source_id: String,
    /// The covered event: the one just before the checkpoint in the chain.
    pub seq: i64,
    pub hash: String,
    pub time: DateTime<Utc>,
    pub key_id: String,
    pub reason: Reason,
    /// The heartbeat interval in force: the next checkpoint of the same
    /// process is due within it.
    pub interval_ms: u64,
}

/// A checkpoint as read back from an event's metadata.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub statement: Statement,
    /// Base64 of the 64-byte signature.
    pub signature: String,
}

/// The private key the writer signs with. Never printed.
#[derive(Clone)]
pub struct CheckpointSigner {
    key: SigningKey,
    key_id: String,
}

/// The public keys a verifier trusts, by key id.
#[derive(Debug, Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, VerifyingKey)>,
}

/// Why a key could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("must be the base64 of a 32-byte Ed25519 key")]
    NotAKey,
    #[error("cannot read {path}: {message}")]
    Read { path: String, message: String },
}

/// Why a checkpoint does not hold.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("metadata is not a checkpoint statement: {0}")]
    Malformed(String),
    #[error("signed with key id {0}, which is not among the trusted public keys")]
    UnknownKey(String),
    #[error("the signature does not verify with key id {0}")]
    BadSignature(String),
}

/// The key id of a public key: 16 hex digits of its SHA-256.
pub fn key_id(public: &VerifyingKey) -> String {
    hex::encode(&Sha256::digest(public.as_bytes())[..8])
}

/// A public key's text form.
pub fn public_key_text(public: &VerifyingKey) -> String {
    BASE64.encode(public.as_bytes())
}

/// Reads a public key from its text form.
pub fn parse_public_key(text: &str) -> Result<VerifyingKey, KeyError> {
    let bytes: [u8; 32] = decode32(text)?;
    VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAKey)
}

fn decode32(text: &str) -> Result<[u8; 32], KeyError> {
    BASE64
        .decode(text.trim())
        .ok()
        .and_then(|bytes| bytes.try_into().ok())
        .ok_or(KeyError::NotAKey)
}

// === impl Reason ===

impl Reason {
    pub fn as_str(&self) -> &'static str {
        match self {
            Reason::Start => "start",
            Reason::Events => "events",
            Reason::Interval => "interval",
            Reason::Export => "export",
            Reason::Stop => "stop",
        }
    }

    /// Reads a reason's text form.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "start" => Some(Reason::Start),
            "events" => Some(Reason::Events),
            "interval" => Some(Reason::Interval),
            "export" => Some(Reason::Export),
            "stop" => Some(Reason::Stop),
            _ => None,
        }
    }
}

// === impl Statement ===

impl Statement {
    /// The signed bytes: the domain tag and each field as its byte length,
    /// `:`, the bytes and `\n` (unambiguous whatever the fields hold).
    pub fn signed_bytes(&self) -> Vec<u8> {
        let fields = [
            DOMAIN.to_owned(),
            self.source_id.clone(),
            self.seq.to_string(),
            self.hash.clone(),
            format_timestamp(&self.time),
            self.key_id.clone(),
            self.reason.as_str().to_owned(),
            self.interval_ms.to_string(),
        ];
        let mut out = Vec::with_capacity(256);
        for field in fields {
            out.extend_from_slice(field.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(field.as_bytes());
            out.push(b'\n');
        }
        out
    }
}

// === impl Checkpoint ===

impl Checkpoint {
    /// The CHECKPOINT event's metadata.
    pub fn to_metadata(&self) -> Value {
        let s = &self.statement;
        json!({
            "source_id": s.source_id,
            "seq": s.seq,
            "hash": s.hash,
            "time": format_timestamp(&s.time),
            "key_id": s.key_id,
            "reason": s.reason.as_str(),
            "interval_ms": s.interval_ms,
            "signature": self.signature,
        })
    }

    /// Reads a checkpoint from a CHECKPOINT event's metadata.
    pub fn from_metadata(meta: &Value) -> Result<Self, SignatureError> {
        let text = |name: &str| {
            meta[name]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| SignatureError::Malformed(format!("`{name}` is missing")))
        };
        let int = |name: &str| {
            meta[name]
                .as_i64()
                .ok_or_else(|| SignatureError::Malformed(format!("`{name}` is missing")))
        };
        let time = parse_timestamp(&text("time")?)
            .ok_or_else(|| SignatureError::Malformed("`time` is not RFC 3339".into()))?;
        let reason = Reason::parse(&text("reason")?)
            .ok_or_else(|| SignatureError::Malformed("`reason` is unknown".into()))?;
        Ok(Self {
            statement: Statement {
                source_id: text("source_id")?,
                seq: int("seq")?,
                hash: text("hash")?,
                time,
                key_id: text("key_id")?,
                reason,
                interval_ms: u64::try_from(int("interval_ms")?).unwrap_or(0),
            },
            signature: text("signature")?,
        })
    }

    /// Checks the signature against the trusted keys.
    pub fn verify(&self, keys: &TrustedKeys) -> Result<(), SignatureError> {
        let key_id = &self.statement.key_id;
        let key = keys
            .get(key_id)
            .ok_or_else(|| SignatureError::UnknownKey(key_id.clone()))?;
        let bad = || SignatureError::BadSignature(key_id.clone());
        let bytes: [u8; 64] = BASE64
            .decode(&self.signature)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)?;
        key.verify_strict(
            &self.statement.signed_bytes(),
            &Signature::from_bytes(&bytes),
        )
        .map_err(|_| bad())
    }
}

// === impl CheckpointSigner ===

impl CheckpointSigner {
    /// A fresh key pair from the operating system's random source.
    pub fn generate() -> Result<Self, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::getrandom(&mut seed).map_err(|e| KeyError::Read {
            path: "the system random source".into(),
            message: e.to_string(),
        })?;
        Ok(Self::from_seed(&seed))
    }

    /// A signer from the private key's text form.
    pub fn from_text(text: &str) -> Result<Self, KeyError> {
        Ok(Self::from_seed(&decode32(text)?))
    }

    fn from_seed(seed: &[u8; 32]) -> Self {
        let key = SigningKey::from_bytes(seed);
        let key_id = key_id(&key.verifying_key());
        Self { key, key_id }
    }

    /// The private key's text form (what `keygen` writes to its file).
    pub fn private_key_text(&self) -> String {
        BASE64.encode(self.key.to_bytes())
    }

    pub fn public_key(&self) -> VerifyingKey {
        self.key.verifying_key()
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Signs `statement` (whose `key_id` must be this key's).
    pub fn sign(&self, statement: Statement) -> Checkpoint {
        let signature = self.key.sign(&statement.signed_bytes());
        Checkpoint {
            statement,
            signature: BASE64.encode(signature.to_bytes()),
        }
    }
}

impl fmt::Debug for CheckpointSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CheckpointSigner")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

impl PartialEq for CheckpointSigner {
    fn eq(&self, other: &Self) -> bool {
        self.key_id == other.key_id
    }
}

// === impl TrustedKeys ===

impl TrustedKeys {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a public key; a key already present is kept once.
    pub fn add(&mut self, key: VerifyingKey) {
        let id = key_id(&key);
        if self.get(&id).is_none() {
            self.keys.push((id, key));
        }
    }

    /// Adds every key in `text`: one per line, blank lines and `#`
    /// comments skipped.
    pub fn add_lines(&mut self, text: &str) -> Result<usize, KeyError> {
        let mut added = 0;
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            self.add(parse_public_key(line)?);
            added += 1;
        }
        Ok(added)
    }

    pub fn get(&self, key_id: &str) -> Option<&VerifyingKey> {
        self.keys
            .iter()
            .find(|(id, _)| id == key_id)
            .map(|(_, k)| k)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The key ids, in the order added.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn statement(key_id: &str) -> Statement {
        Statement {
            source_id: "0192d1c4-0000-7000-8000-000000000001".into(),
            seq: 41,
            hash: "ab".repeat(32),
            time: crate::event::now(),
            key_id: key_id.into(),
            reason: Reason::Events,
            interval_ms: 60_000,
        }
    }

    #[test]
    fn a_signed_checkpoint_round_trips_and_verifies() {
        let signer = CheckpointSigner::generate().unwrap();
        let checkpoint = signer.sign(statement(signer.key_id()));
        let read = Checkpoint::from_metadata(&checkpoint.to_metadata()).unwrap();
        assert_eq!(read, checkpoint);
        let mut keys = TrustedKeys::new();
        keys.add(signer.public_key());
        read.verify(&keys).unwrap();
    }

    #[test]
    fn any_changed_field_fails_the_signature() {
        let signer = CheckpointSigner::generate().unwrap();
        let mut keys = TrustedKeys::new();
        keys.add(signer.public_key());
        let good = signer.sign(statement(signer.key_id()));
        let edits: Vec<fn(&mut Statement)> = vec![
            |s| s.seq += 1,
            |s| s.hash = "cd".repeat(32),
            |s| s.source_id.push('x'),
            |s| s.reason = Reason::Stop,
            |s| s.interval_ms += 1,
            |s| s.time += chrono::Duration::seconds(1),
        ];
        for edit in edits {
            let mut forged = good.clone();
            edit(&mut forged.statement);
            assert_eq!(
                forged.verify(&keys),
                Err(SignatureError::BadSignature(signer.key_id().into()))
            );
        }
    }

    #[test]
    fn an_unknown_key_is_named() {
        let signer = CheckpointSigner::generate().unwrap();
        let other = CheckpointSigner::generate().unwrap();
        let mut keys = TrustedKeys::new();
        keys.add(other.public_key());
        let checkpoint = signer.sign(statement(signer.key_id()));
        assert_eq!(
            checkpoint.verify(&keys),
            Err(SignatureError::UnknownKey(signer.key_id().into()))
        );
    }

    #[test]
    fn key_texts_round_trip() {
        let signer = CheckpointSigner::generate().unwrap();
        let again = CheckpointSigner::from_text(&signer.private_key_text()).unwrap();
        assert_eq!(again.key_id(), signer.key_id());
        let public = parse_public_key(&public_key_text(&signer.public_key())).unwrap();
        assert_eq!(key_id(&public), signer.key_id());
        assert_eq!(signer.key_id().len(), 16);
        assert_eq!(
            CheckpointSigner::from_text("not a key").unwrap_err(),
            KeyError::NotAKey
        );
        let mut keys = TrustedKeys::new();
        let text = format!(
            "# two keys\n{}\n\n{}\n",
            public_key_text(&signer.public_key()),
            public_key_text(&signer.public_key())
        );
        assert_eq!(keys.add_lines(&text).unwrap(), 2);
        assert_eq!(keys.ids().count(), 1);
        assert!(!format!("{signer:?}").contains(&signer.private_key_text()));
    }
}

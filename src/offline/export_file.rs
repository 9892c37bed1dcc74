//! `verify --file`: an export checked alone, with no store and no network.
//!
//! A JSON export is one array, an NDJSON export one item per line; each
//! item is an event or a `{"chain_link": ...}` standing in for an event the
//! export left out. The walk starts from the first event's `prev_hash` and
//! must reach a checkpoint that covers every event in the file.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;

use serde::Deserialize;

use super::OfflineError;
use crate::event::chain::ChainLink;
use crate::event::evidence::{EvidenceVerifier, Expectations, Item};
use crate::event::{AuditEvent, EventRecord};
use crate::store::verify::{VerifyOptions, VerifyReport};
use crate::store::StoreError;

/// One item of an export file.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum ExportLine {
    Link { chain_link: ChainLink },
    Event(Box<AuditEvent>),
}

/// Checks the export at `path`.
pub(super) fn verify(path: &Path, options: VerifyOptions) -> Result<VerifyReport, OfflineError> {
    let read_err = |e: std::io::Error| OfflineError::BadFlag {
        param: "file".into(),
        message: format!("cannot read {}: {e}", path.display()),
    };
    let file = std::fs::File::open(path).map_err(read_err)?;
    let mut reader = BufReader::new(file);
    let mut verifier = EvidenceVerifier::new(Expectations {
        keys: options.keys,
        tolerate_unknown_keys: options.tolerate_unknown_keys,
        checkpoints: options.expect_checkpoints,
        require_covered: true,
    });
    let array = first_byte(&mut reader).map_err(read_err)? == Some(b'[');
    if array {
        let mut text = String::new();
        reader.read_to_string(&mut text).map_err(read_err)?;
        let lines: Vec<ExportLine> = serde_json::from_str(&text)
            .map_err(|e| corrupt(format!("not a JSON export of events: {e}")))?;
        for (i, line) in lines.into_iter().enumerate() {
            if !push(&mut verifier, line, i + 1)? {
                break;
            }
        }
    } else {
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(read_err)?;
            if line.trim().is_empty() {
                continue;
            }
            let item: ExportLine = serde_json::from_str(&line).map_err(|e| {
                corrupt(format!("line {}: not an event or a chain link: {e}", i + 1))
            })?;
            if !push(&mut verifier, item, i + 1)? {
                break;
            }
        }
    }
    Ok(VerifyReport::from_evidence(verifier.finish(), None))
}

fn push(verifier: &mut EvidenceVerifier, line: ExportLine, n: usize) -> Result<bool, OfflineError> {
    Ok(match line {
        ExportLine::Link { chain_link } => verifier.push(Item::Link(&chain_link)),
        ExportLine::Event(event) => {
            let record = EventRecord::try_from(*event)
                .map_err(|e| corrupt(format!("item {n}: metadata cannot be read: {e}")))?;
            verifier.push(Item::Event(&record))
        }
    })
}

/// The first byte that is not white space, left unread.
fn first_byte(reader: &mut impl BufRead) -> std::io::Result<Option<u8>> {
    loop {
        let buf = reader.fill_buf()?;
        let Some(&b) = buf.first() else {
            return Ok(None);
        };
        if b.is_ascii_whitespace() {
            reader.consume(1);
        } else {
            return Ok(Some(b));
        }
    }
}

fn corrupt(message: String) -> OfflineError {
    OfflineError::Store(StoreError::Corrupt(message))
}

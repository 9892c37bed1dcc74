//! Walking a store's hash chain, for `/api/verify`, `verify` and the check
//! `serve` runs at start.

use futures_util::StreamExt;
use serde::Serialize;

use super::{AuditStore, EventFilter, StoreError};
use crate::event::chain::ChainVerifier;

/// The outcome of a chain walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub events_checked: u64,
    pub first_bad_seq: Option<i64>,
    pub reason: Option<String>,
    /// The last event that checked out.
    pub head: Option<VerifiedHead>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedHead {
    pub seq: i64,
    pub hash: String,
}

/// Walks the whole store oldest first. Retention removes the oldest events,
/// so the first one seen is trusted to link to what came before it.
pub async fn verify_chain(store: &dyn AuditStore) -> Result<VerifyReport, StoreError> {
    let mut records = store.export_records(EventFilter::default());
    let mut verifier = ChainVerifier::new();
    let mut first_bad = None;
    while let Some(record) = records.next().await {
        if let Err(broken) = verifier.check_record(&record?) {
            first_bad = Some(broken);
            break;
        }
    }
    Ok(VerifyReport {
        ok: first_bad.is_none(),
        events_checked: verifier.checked(),
        first_bad_seq: first_bad.as_ref().map(|b| b.seq),
        reason: first_bad.map(|b| b.reason),
        head: verifier.head().map(|(seq, hash)| VerifiedHead {
            seq,
            hash: hash.to_owned(),
        }),
    })
}

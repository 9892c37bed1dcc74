//! Walking a store's hash chain and its signed checkpoints, for
//! `/api/verify`, `verify` and the check `serve` runs at start.

pub mod fleet;

use futures_util::StreamExt;
use serde::Serialize;

use super::{AuditStore, EventFilter, StoreError};
use crate::event::checkpoint::TrustedKeys;
use crate::event::evidence::{
    CheckpointSummary, EvidenceReport, EvidenceVerifier, Expectations, FaultKind, Item,
};

/// The outcome of a chain walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifyReport {
    pub ok: bool,
    pub events_checked: u64,
    pub first_bad_seq: Option<i64>,
    pub reason: Option<String>,
    /// The last event that checked out.
    pub head: Option<VerifiedHead>,
    /// What the fault shows: edited, deleted, inserted, reordered, rebuilt,
    /// signature, truncated or time_gap.
    pub fault: Option<FaultKind>,
    /// The store's stable id, when it keeps one.
    pub source_id: Option<String>,
    pub checkpoints: CheckpointSummary,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedHead {
    pub seq: i64,
    pub hash: String,
}

/// What a walk checks beyond the chain.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Public keys for the checkpoints' signatures; empty checks none.
    pub keys: TrustedKeys,
    /// Count checkpoints by other keys instead of failing on them (the
    /// server knows only its current key).
    pub tolerate_unknown_keys: bool,
    /// Checkpoints (own seq and hash) the store must still reach, e.g. one
    /// recorded elsewhere earlier.
    pub expect_checkpoints: Vec<(i64, String)>,
}

/// What verifying a store found: its one chain, or each source's.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Verification {
    Chain(Box<VerifyReport>),
    Fleet(fleet::FleetVerifyReport),
}

/// Verifies `store`: a store of one source as [`verify_store`] does, a
/// store of many (the central store) source by source (expected
/// checkpoints then do not apply: each names one source's chain).
pub async fn verify_any(
    store: &dyn AuditStore,
    options: VerifyOptions,
) -> Result<Verification, StoreError> {
    if store.holds_many_sources() {
        Ok(Verification::Fleet(
            fleet::verify_fleet(store, &options).await?,
        ))
    } else {
        Ok(Verification::Chain(Box::new(
            verify_store(store, options).await?,
        )))
    }
}

/// Walks the whole store oldest first, chain only. Retention removes the
/// oldest events, so the first one seen is trusted to link to what came
/// before it.
pub async fn verify_chain(store: &dyn AuditStore) -> Result<VerifyReport, StoreError> {
    verify_store(store, VerifyOptions::default()).await
}

/// Walks the whole store oldest first: the chain, every checkpoint (and
/// its signature, given keys), and the store's own record of its latest
/// checkpoint, which the events must still reach.
pub async fn verify_store(
    store: &dyn AuditStore,
    options: VerifyOptions,
) -> Result<VerifyReport, StoreError> {
    let mut checkpoints = options.expect_checkpoints;
    if let Some(latest) = store.latest_checkpoint().await? {
        checkpoints.push((latest.seq, latest.hash));
    }
    let mut verifier = EvidenceVerifier::new(Expectations {
        keys: options.keys,
        tolerate_unknown_keys: options.tolerate_unknown_keys,
        checkpoints,
        require_covered: false,
    });
    let mut records = store.export_records(EventFilter::default());
    while let Some(record) = records.next().await {
        if !verifier.push(Item::Event(&record?)) {
            break;
        }
    }
    let source_id = store.source_id().await?;
    Ok(VerifyReport::from_evidence(verifier.finish(), source_id))
}

// === impl VerifyReport ===

impl VerifyReport {
    /// The report of a walk over a store or an export.
    pub fn from_evidence(report: EvidenceReport, source_id: Option<String>) -> Self {
        let fault = report.fault;
        Self {
            ok: fault.is_none(),
            events_checked: report.events_checked,
            first_bad_seq: fault.as_ref().map(|f| f.seq),
            reason: fault.as_ref().map(|f| f.reason.clone()),
            head: report.head.map(|(seq, hash)| VerifiedHead { seq, hash }),
            fault: fault.map(|f| f.kind),
            source_id: source_id.or_else(|| {
                report
                    .checkpoints
                    .latest
                    .as_ref()
                    .map(|c| c.source_id.clone())
            }),
            checkpoints: report.checkpoints,
        }
    }
}

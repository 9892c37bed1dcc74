//! Verifying a store of many sources (the central store): each source's
//! chain is walked on its own, in `seq` order, and what is *missing* (a
//! run of seqs with no row: deleted centrally, or not shipped) is told
//! apart from what was *tampered with* (a row that is not what its hash
//! says, or does not link to the row before it).
//!
//! A gap ends one walk and the next row starts another, trusted to link to
//! what is missing, so one gap does not hide an edit further on.

use futures_util::StreamExt;
use serde::Serialize;

use super::VerifyOptions;
use crate::event::evidence::{
    CheckpointSummary, EvidenceReport, EvidenceVerifier, Expectations, FaultKind, Item,
};
use crate::event::EventRecord;
use crate::store::{AuditStore, EventFilter, StoreError};

/// The outcome of verifying every source of a central store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FleetVerifyReport {
    /// No tampering and nothing missing.
    pub ok: bool,
    /// No row is other than its hash and link say.
    pub intact: bool,
    /// No source misses a run of seqs between its first and last row.
    pub complete: bool,
    pub sources_checked: u64,
    pub events_checked: u64,
    /// The first fault of each source found tampered with.
    pub tampered: Vec<Tampered>,
    /// Every run of missing seqs, by source.
    pub missing: Vec<MissingRange>,
    pub sources: Vec<SourceReport>,
}

/// A source's first row that is not what it should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tampered {
    pub source_id: String,
    pub seq: i64,
    pub fault: FaultKind,
    pub reason: String,
}

/// Seqs `first_seq..=last_seq` of a source have no row.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MissingRange {
    pub source_id: String,
    pub first_seq: i64,
    pub last_seq: i64,
}

/// One source's walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SourceReport {
    pub source_id: String,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub node: Option<String>,
    /// No tampering found (missing runs are listed apart).
    pub intact: bool,
    pub events_checked: u64,
    /// The first and last seq the central store holds. Seqs before the
    /// first are outside what was shipped (or dropped by central
    /// retention); those after the last are not shipped yet.
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    pub fault: Option<FaultKind>,
    pub first_bad_seq: Option<i64>,
    pub reason: Option<String>,
    /// Runs of missing seqs, `[first, last]` each.
    pub missing: Vec<(i64, i64)>,
    pub checkpoints: CheckpointSummary,
}

/// Walks every source of `store`, each on its own.
pub async fn verify_fleet(
    store: &dyn AuditStore,
    options: &VerifyOptions,
) -> Result<FleetVerifyReport, StoreError> {
    let mut sources = Vec::new();
    for source_id in store.source_ids().await? {
        let mut walk = SourceWalk::new(source_id.clone(), options);
        let mut records = store.export_records(EventFilter {
            source: Some(source_id),
            ..EventFilter::default()
        });
        while let Some(record) = records.next().await {
            walk.push(&record?);
        }
        sources.push(walk.finish());
    }
    let tampered: Vec<Tampered> = sources
        .iter()
        .filter_map(|s| {
            Some(Tampered {
                source_id: s.source_id.clone(),
                seq: s.first_bad_seq?,
                fault: s.fault?,
                reason: s.reason.clone().unwrap_or_default(),
            })
        })
        .collect();
    let missing: Vec<MissingRange> = sources
        .iter()
        .flat_map(|s| {
            s.missing.iter().map(|&(first_seq, last_seq)| MissingRange {
                source_id: s.source_id.clone(),
                first_seq,
                last_seq,
            })
        })
        .collect();
    let intact = tampered.is_empty();
    let complete = missing.is_empty();
    Ok(FleetVerifyReport {
        ok: intact && complete,
        intact,
        complete,
        sources_checked: sources.len() as u64,
        events_checked: sources.iter().map(|s| s.events_checked).sum(),
        tampered,
        missing,
        sources,
    })
}

/// A source's walk so far: the current run's verifier, and what earlier
/// runs (ended by gaps) found.
struct SourceWalk<'a> {
    report: SourceReport,
    options: &'a VerifyOptions,
    verifier: Option<EvidenceVerifier>,
}

impl<'a> SourceWalk<'a> {
    fn new(source_id: String, options: &'a VerifyOptions) -> Self {
        Self {
            report: SourceReport {
                source_id,
                pod: None,
                namespace: None,
                node: None,
                intact: true,
                events_checked: 0,
                first_seq: None,
                last_seq: None,
                fault: None,
                first_bad_seq: None,
                reason: None,
                missing: Vec::new(),
                checkpoints: CheckpointSummary::default(),
            },
            options,
            verifier: None,
        }
    }

    fn push(&mut self, record: &EventRecord) {
        if self.report.first_seq.is_none() {
            self.report.first_seq = Some(record.seq);
            if let Some(origin) = &record.origin {
                self.report.pod = origin.pod.clone();
                self.report.namespace = origin.namespace.clone();
                self.report.node = origin.node.clone();
            }
        }
        if let Some(last) = self.report.last_seq {
            if record.seq > last + 1 {
                self.report.missing.push((last + 1, record.seq - 1));
                self.end_run();
            }
        }
        self.report.last_seq = Some(record.seq);
        let options = self.options;
        let verifier = self.verifier.get_or_insert_with(|| {
            EvidenceVerifier::new(Expectations {
                keys: options.keys.clone(),
                tolerate_unknown_keys: options.tolerate_unknown_keys,
                checkpoints: Vec::new(),
                require_covered: false,
            })
        });
        // A faulted run ignores the rest up to the next gap; the seqs are
        // still followed, so later gaps are reported.
        verifier.push(Item::Event(record));
    }

    /// Folds the current run's findings into the report.
    fn end_run(&mut self) {
        let Some(verifier) = self.verifier.take() else {
            return;
        };
        let EvidenceReport {
            events_checked,
            fault,
            checkpoints,
            ..
        } = verifier.finish();
        self.report.events_checked += events_checked;
        if let (Some(fault), None) = (fault, &self.report.fault) {
            self.report.intact = false;
            self.report.fault = Some(fault.kind);
            self.report.first_bad_seq = Some(fault.seq);
            self.report.reason = Some(fault.reason);
        }
        merge_checkpoints(&mut self.report.checkpoints, checkpoints);
    }

    fn finish(mut self) -> SourceReport {
        self.end_run();
        self.report
    }
}

fn merge_checkpoints(into: &mut CheckpointSummary, run: CheckpointSummary) {
    into.checked += run.checked;
    into.unknown_key += run.unknown_key;
    into.signatures_ok = match (into.signatures_ok, run.signatures_ok) {
        (Some(a), Some(b)) => Some(a && b),
        (a, b) => a.or(b),
    };
    if run.latest.is_some() {
        into.latest = run.latest;
    }
    for key in run.key_ids {
        if !into.key_ids.contains(&key) {
            into.key_ids.push(key);
        }
    }
    into.unsigned_tail = run.unsigned_tail;
}

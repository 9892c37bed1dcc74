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

/// Walks every source of `store`, each on its own. Expected checkpoints
/// do not apply here: each names one source's chain (see
/// [`verify_source`]).
pub async fn verify_fleet(
    store: &dyn AuditStore,
    options: &VerifyOptions,
) -> Result<FleetVerifyReport, StoreError> {
    walk_sources(store, store.source_ids().await?, options, &[]).await
}

/// Walks the one source `source_id` of `store`, which must reach each of
/// `options.expect_checkpoints` (checkpoints recorded elsewhere of this
/// source's chain): one that is not there, past the last row shipped, is
/// a truncated record (not shipped yet, or cut); one whose row has another
/// hash, a rebuilt one. A source with no row is an error naming it.
pub async fn verify_source(
    store: &dyn AuditStore,
    source_id: &str,
    options: &VerifyOptions,
) -> Result<FleetVerifyReport, StoreError> {
    let report = walk_sources(
        store,
        vec![source_id.to_owned()],
        options,
        &options.expect_checkpoints,
    )
    .await?;
    if report.events_checked == 0 {
        return Err(StoreError::Other(format!(
            "the central store holds no events of source {source_id}"
        )));
    }
    Ok(report)
}

async fn walk_sources(
    store: &dyn AuditStore,
    source_ids: Vec<String>,
    options: &VerifyOptions,
    expect: &[(i64, String)],
) -> Result<FleetVerifyReport, StoreError> {
    let mut sources = Vec::new();
    for source_id in source_ids {
        let mut walk = SourceWalk::new(source_id.clone(), options, expect);
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
    /// Checkpoints (seq, hash) the source must reach, and whether each
    /// was seen. Checked here rather than by each run's verifier, since a
    /// run ended by a gap does not reach the ones after it.
    expect: Vec<(i64, &'a str, bool)>,
}

impl<'a> SourceWalk<'a> {
    fn new(source_id: String, options: &'a VerifyOptions, expect: &'a [(i64, String)]) -> Self {
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
            expect: expect
                .iter()
                .map(|(seq, hash)| (*seq, hash.as_str(), false))
                .collect(),
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
        let mut rebuilt = None;
        for (seq, hash, met) in &mut self.expect {
            if *seq == record.seq {
                *met = true;
                if *hash != record.hash {
                    rebuilt = Some(format!(
                        "seq {seq} has hash {}, not the expected {hash}",
                        record.hash
                    ));
                }
            }
        }
        if let Some(reason) = rebuilt {
            self.fault(FaultKind::Rebuilt, record.seq, reason);
        }
    }

    /// Records `kind` at `seq` as the source's fault, unless an earlier
    /// one is already recorded.
    fn fault(&mut self, kind: FaultKind, seq: i64, reason: String) {
        if self.report.fault.is_none() {
            self.report.intact = false;
            self.report.fault = Some(kind);
            self.report.first_bad_seq = Some(seq);
            self.report.reason = Some(reason);
        }
    }

    /// Faults the first expected checkpoint past the last row: the record
    /// does not reach it. One before the first row is outside what was
    /// shipped (or dropped by central retention), and one inside a
    /// missing run is reported with that run.
    fn check_expected(&mut self) {
        let (first, last) = (self.report.first_seq, self.report.last_seq);
        let unmet = self.expect.iter().filter(|(seq, _, met)| {
            !met && first.is_none_or(|f| *seq >= f) && last.is_none_or(|l| *seq > l)
        });
        if let Some(&(seq, _, _)) = unmet.min_by_key(|(seq, _, _)| *seq) {
            let ends = last.map_or_else(
                || "holds no events".to_owned(),
                |l| format!("ends at seq {l}"),
            );
            self.fault(
                FaultKind::Truncated,
                last.map_or(seq, |l| l + 1),
                format!(
                    "the central record of this source {ends}, before the checkpoint at seq \
                     {seq} it must reach (not shipped yet, or cut)"
                ),
            );
        }
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
        if let Some(fault) = fault {
            self.fault(fault.kind, fault.seq, fault.reason);
        }
        merge_checkpoints(&mut self.report.checkpoints, checkpoints);
    }

    fn finish(mut self) -> SourceReport {
        self.end_run();
        self.check_expected();
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

//! Checking a run of events as evidence: the hash chain, every signed
//! checkpoint, and the promises checkpoints make (a heartbeat within its
//! interval, nothing cut from the end).
//!
//! The same walk serves a store (every event, oldest first) and an export
//! (its events, with [`ChainLink`]s standing in for events it leaves out).
//! It stops at the first fault and names what it found there and the first
//! seq at fault.

use std::collections::VecDeque;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;

use super::chain::{record_matches, ChainLink};
use super::checkpoint::{Checkpoint, Reason, SignatureError, TrustedKeys};
use super::{format_timestamp, parse_timestamp, EventRecord, EventType};

/// How far back a `prev_hash` is looked up to tell a moved event from a
/// missing one.
const RECENT: usize = 8;

/// A heartbeat may run late by half its interval (a slow store write, a
/// busy writer) before the gap counts as a fault.
const GAP_SLACK_NUM: u64 = 3;
const GAP_SLACK_DEN: u64 = 2;

/// What kind of tampering (or loss) a fault shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// An event's content no longer matches its hash.
    Edited,
    /// Events are missing (a gap in `seq`, or a link to nothing stored).
    Deleted,
    /// An event that is not part of the chain sits between two that are.
    Inserted,
    /// Events are out of their sealed order.
    Reordered,
    /// The chain no longer matches what a checkpoint signed: it was
    /// rebuilt without the key.
    Rebuilt,
    /// A checkpoint's signature fails, its key is unknown, or it is
    /// missing where one is required.
    Signature,
    /// The end is gone: the events stop before a checkpoint known to exist.
    Truncated,
    /// Longer than the heartbeat interval passed with no checkpoint.
    TimeGap,
}

/// The first fault found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub seq: i64,
    pub reason: String,
}

/// A checkpoint that verified, as reports show it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckpointSeen {
    /// The CHECKPOINT event's own seq and hash (what `--expect-checkpoint`
    /// takes).
    pub seq: i64,
    pub hash: String,
    /// The event it signs.
    pub covers_seq: i64,
    pub time: String,
    pub key_id: String,
    pub reason: String,
    pub source_id: String,
    #[serde(skip)]
    time_value: DateTime<Utc>,
    #[serde(skip)]
    interval_ms: u64,
}

/// What the walk found about checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct CheckpointSummary {
    /// Checkpoints seen.
    pub checked: u64,
    /// Whether every signature checked verified; `None` when no public key
    /// was given.
    pub signatures_ok: Option<bool>,
    /// Checkpoints signed by a key this verifier was not given (only when
    /// unknown keys are tolerated, as by `/api/verify`).
    pub unknown_key: u64,
    pub latest: Option<CheckpointSeen>,
    /// Key ids seen, in order of first use.
    pub key_ids: Vec<String>,
    /// Events after the latest checkpoint, which no signature covers yet.
    pub unsigned_tail: u64,
}

/// What the walk must also hold to.
#[derive(Debug, Clone, Default)]
pub struct Expectations {
    /// Public keys; empty means signatures are not checked.
    pub keys: TrustedKeys,
    /// Count a checkpoint signed by a key not in `keys` instead of failing
    /// (for a live check that knows only the current key).
    pub tolerate_unknown_keys: bool,
    /// Checkpoints (own seq and hash) the events must reach.
    pub checkpoints: Vec<(i64, String)>,
    /// Every full event must be covered by a later checkpoint (exports).
    pub require_covered: bool,
}

/// Walks events and links in `seq` order.
#[derive(Debug)]
pub struct EvidenceVerifier {
    expect: Expectations,
    /// The last item's seq and (computed or stored) hash.
    prev: Option<(i64, String)>,
    recent: VecDeque<String>,
    checked: u64,
    fault: Option<Fault>,
    summary: CheckpointSummary,
    /// The first seq after the last checkpoint that verified.
    unsigned_from: Option<i64>,
    /// Full events after the latest checkpoint (links do not count).
    uncovered_events: u64,
    /// The newest event timestamp after the latest checkpoint.
    tail_time: Option<DateTime<Utc>>,
    first_seq: Option<i64>,
    /// Expected checkpoints met so far.
    met: Vec<bool>,
    /// A forward jump in `seq`, judged on the next event: events missing,
    /// or (if it goes back) events out of order.
    jump: Option<(i64, Fault)>,
}

/// What a walk found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvidenceReport {
    pub events_checked: u64,
    /// The last item's seq and hash.
    pub head: Option<(i64, String)>,
    pub fault: Option<Fault>,
    pub checkpoints: CheckpointSummary,
}

/// One item of an export: an event, or the link of one left out.
#[derive(Debug, Clone)]
pub enum Item<'a> {
    Event(&'a EventRecord),
    Link(&'a ChainLink),
}

// === impl FaultKind ===

impl FaultKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            FaultKind::Edited => "edited",
            FaultKind::Deleted => "deleted",
            FaultKind::Inserted => "inserted",
            FaultKind::Reordered => "reordered",
            FaultKind::Rebuilt => "rebuilt",
            FaultKind::Signature => "signature",
            FaultKind::Truncated => "truncated",
            FaultKind::TimeGap => "time_gap",
        }
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl EvidenceVerifier ===

impl EvidenceVerifier {
    pub fn new(expect: Expectations) -> Self {
        let met = vec![false; expect.checkpoints.len()];
        let summary = CheckpointSummary {
            signatures_ok: (!expect.keys.is_empty()).then_some(true),
            ..CheckpointSummary::default()
        };
        Self {
            expect,
            prev: None,
            recent: VecDeque::with_capacity(RECENT),
            checked: 0,
            fault: None,
            summary,
            unsigned_from: None,
            uncovered_events: 0,
            tail_time: None,
            first_seq: None,
            met,
            jump: None,
        }
    }

    /// Checks the next item; returns false once a fault has been found
    /// (later items are then ignored).
    pub fn push(&mut self, item: Item<'_>) -> bool {
        if self.fault.is_some() {
            return false;
        }
        let result = match item {
            Item::Event(record) => self.event(record),
            Item::Link(link) => self.link(link),
        };
        if let Err(fault) = result {
            self.fault = Some(fault);
            return false;
        }
        true
    }

    /// Applies the end-of-run checks and returns what was found.
    pub fn finish(mut self) -> EvidenceReport {
        if self.fault.is_none() {
            self.fault = self.jump.take().map(|(_, f)| f);
        }
        if self.fault.is_none() {
            self.fault = self.end_checks().err();
        }
        if self.fault.is_some() && self.summary.signatures_ok.is_some() {
            let signature = matches!(
                self.fault.as_ref().map(|f| f.kind),
                Some(FaultKind::Signature | FaultKind::Rebuilt)
            );
            if signature {
                self.summary.signatures_ok = Some(false);
            }
        }
        self.summary.unsigned_tail = self.uncovered_events;
        EvidenceReport {
            events_checked: self.checked,
            head: self.prev,
            fault: self.fault,
            checkpoints: self.summary,
        }
    }

    fn event(&mut self, record: &EventRecord) -> Result<(), Fault> {
        let seq = record.seq;
        if let Some((jumped_to, missing)) = self.jump.take() {
            if seq < jumped_to {
                return Err(fault(
                    FaultKind::Reordered,
                    missing.seq,
                    format!("seq {seq} comes after seq {jumped_to}: events are out of order"),
                ));
            }
            return Err(missing);
        }
        if let Some((prev_seq, _)) = &self.prev {
            let prev_seq = *prev_seq;
            if seq <= prev_seq {
                return Err(fault(
                    FaultKind::Reordered,
                    seq,
                    format!("seq {seq} comes after seq {prev_seq}: events are out of order"),
                ));
            }
            if seq > prev_seq + 1 {
                let missing = fault(
                    FaultKind::Deleted,
                    prev_seq + 1,
                    format!(
                        "seq jumps from {prev_seq} to {seq}: events {}..={} are missing",
                        prev_seq + 1,
                        seq - 1
                    ),
                );
                self.jump = Some((seq, missing));
                return Ok(());
            }
        }
        if !record_matches(record) {
            return Err(content_fault(record));
        }
        if let Some((prev_seq, prev_hash)) = &self.prev {
            if &record.prev_hash != prev_hash {
                return Err(self.link_fault(*prev_seq, seq, &record.prev_hash));
            }
        }
        if record.event_type == EventType::Checkpoint {
            self.checkpoint(record)?;
        } else {
            self.uncovered_events += 1;
            self.unsigned_from.get_or_insert(seq);
            if let Some(t) = parse_timestamp(&record.timestamp) {
                self.tail_time = Some(self.tail_time.map_or(t, |old| old.max(t)));
            }
        }
        for (i, (want_seq, want_hash)) in self.expect.checkpoints.iter().enumerate() {
            if *want_seq == seq {
                if *want_hash != record.hash {
                    return Err(fault(
                        FaultKind::Rebuilt,
                        seq,
                        format!(
                            "seq {seq} has hash {}, not the expected {want_hash}",
                            record.hash
                        ),
                    ));
                }
                self.met[i] = true;
            }
        }
        self.advance(seq, record.hash.clone());
        Ok(())
    }

    fn link(&mut self, link: &ChainLink) -> Result<(), Fault> {
        // A link's seq is only a label: the next item's seq is checked
        // against it, and its hash is recomputed from the chain so far.
        let Some((prev_seq, prev_hash)) = self.prev.clone() else {
            return Err(fault(
                FaultKind::Deleted,
                link.seq,
                "the export starts with a chain link instead of an event".into(),
            ));
        };
        let seq = prev_seq + 1;
        if link.seq != seq {
            return Err(fault(
                FaultKind::Deleted,
                seq,
                format!("the link after seq {prev_seq} is labelled seq {}", link.seq),
            ));
        }
        let hash = link
            .hash_after(&prev_hash)
            .ok_or_else(|| fault(FaultKind::Edited, seq, "the chain link is malformed".into()))?;
        self.unsigned_from.get_or_insert(seq);
        self.advance(seq, hash);
        Ok(())
    }

    fn advance(&mut self, seq: i64, hash: String) {
        self.first_seq.get_or_insert(seq);
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        if let Some((_, old)) = self.prev.take() {
            self.recent.push_back(old);
        }
        self.prev = Some((seq, hash));
        self.checked += 1;
    }

    /// Names a broken link between `prev_seq` and `seq`.
    fn link_fault(&self, prev_seq: i64, seq: i64, links_to: &str) -> Fault {
        if self.recent.back().is_some_and(|h| h == links_to) {
            return fault(
                FaultKind::Inserted,
                prev_seq,
                format!(
                    "seq {seq} links to seq {}: the event at seq {prev_seq} was inserted",
                    prev_seq - 1
                ),
            );
        }
        if self.recent.iter().any(|h| h == links_to) {
            return fault(
                FaultKind::Reordered,
                seq,
                format!(
                    "seq {seq} links to an earlier event than seq {prev_seq}: events were moved"
                ),
            );
        }
        fault(
            FaultKind::Deleted,
            seq,
            format!(
                "seq {seq} does not link to seq {prev_seq}: the event it followed was removed or replaced"
            ),
        )
    }

    fn checkpoint(&mut self, record: &EventRecord) -> Result<(), Fault> {
        let seq = record.seq;
        let meta: Value = serde_json::from_str(record.metadata.get()).unwrap_or_default();
        let checkpoint = Checkpoint::from_metadata(&meta).map_err(|e| {
            fault(
                FaultKind::Signature,
                seq,
                format!("checkpoint at seq {seq}: {e}"),
            )
        })?;
        let st = &checkpoint.statement;
        let since = self
            .summary
            .latest
            .as_ref()
            .map_or_else(|| self.first_seq.unwrap_or(seq), |c| c.seq + 1);
        let covered_here = self.prev.as_ref().map_or(seq - 1, |(s, _)| *s);
        if st.seq != covered_here || st.hash != record.prev_hash {
            return Err(fault(
                FaultKind::Rebuilt,
                since,
                format!(
                    "checkpoint at seq {seq} signs seq {} with hash {}, but the chain holds {} there: \
                     the chain was rebuilt after seq {}",
                    st.seq,
                    st.hash,
                    record.prev_hash,
                    since - 1
                ),
            ));
        }
        if let Some(latest) = &self.summary.latest {
            if latest.source_id != st.source_id {
                return Err(fault(
                    FaultKind::Signature,
                    seq,
                    format!(
                        "checkpoint at seq {seq} belongs to store {}, not {}",
                        st.source_id, latest.source_id
                    ),
                ));
            }
        }
        if !self.expect.keys.is_empty() {
            match checkpoint.verify(&self.expect.keys) {
                Ok(()) => {}
                Err(SignatureError::UnknownKey(_)) if self.expect.tolerate_unknown_keys => {
                    self.summary.unknown_key += 1;
                }
                Err(e) => {
                    return Err(fault(
                        FaultKind::Signature,
                        seq,
                        format!("checkpoint at seq {seq}: {e}"),
                    ))
                }
            }
        }
        if let Some(latest) = &self.summary.latest {
            let allowed = allowed_gap_ms(latest.interval_ms);
            let gap = (st.time - latest.time_value).num_milliseconds();
            if st.reason != Reason::Start && gap > allowed {
                return Err(fault(
                    FaultKind::TimeGap,
                    latest.seq + 1,
                    format!(
                        "no checkpoint for {:.1} s between seq {} and seq {seq} (one is due every {:.1} s)",
                        gap as f64 / 1000.0,
                        latest.seq,
                        latest.interval_ms as f64 / 1000.0
                    ),
                ));
            }
        }
        if !self.summary.key_ids.contains(&st.key_id) {
            self.summary.key_ids.push(st.key_id.clone());
        }
        self.summary.checked += 1;
        self.summary.latest = Some(CheckpointSeen {
            seq,
            hash: record.hash.clone(),
            covers_seq: st.seq,
            time: format_timestamp(&st.time),
            key_id: st.key_id.clone(),
            reason: st.reason.as_str().to_owned(),
            source_id: st.source_id.clone(),
            time_value: st.time,
            interval_ms: st.interval_ms,
        });
        self.unsigned_from = None;
        self.uncovered_events = 0;
        self.tail_time = None;
        Ok(())
    }

    fn end_checks(&self) -> Result<(), Fault> {
        let head = self.prev.as_ref().map(|(s, _)| *s);
        for (i, (want_seq, _)) in self.expect.checkpoints.iter().enumerate() {
            // Met, or older than the first event here (removed by
            // retention, or before an export's range).
            if self.met[i] || self.first_seq.is_some_and(|first| *want_seq < first) {
                continue;
            }
            let ends = head.map_or_else(
                || "holds no events".to_owned(),
                |h| format!("ends at seq {h}"),
            );
            return Err(fault(
                FaultKind::Truncated,
                head.map_or(*want_seq, |h| h + 1),
                format!("the record {ends}, before the checkpoint at seq {want_seq} it must reach"),
            ));
        }
        if self.expect.require_covered && self.uncovered_events > 0 {
            let from = self.unsigned_from.unwrap_or(0);
            return Err(fault(
                FaultKind::Truncated,
                from,
                format!(
                    "{} events from seq {from} on are not covered by any checkpoint: the export \
                     was cut short, or made before the next checkpoint",
                    self.uncovered_events
                ),
            ));
        }
        if !self.expect.keys.is_empty() && self.summary.checked == 0 && self.checked > 0 {
            return Err(fault(
                FaultKind::Signature,
                self.first_seq.unwrap_or(0),
                "no checkpoint: nothing here is signed".into(),
            ));
        }
        if let (Some(latest), Some(tail)) = (&self.summary.latest, self.tail_time) {
            let gap = (tail - latest.time_value).num_milliseconds();
            if latest.reason != Reason::Stop.as_str() && gap > allowed_gap_ms(latest.interval_ms) {
                return Err(fault(
                    FaultKind::TimeGap,
                    latest.seq + 1,
                    format!(
                        "events run {:.1} s past the last checkpoint (seq {}) with none after it \
                         (one is due every {:.1} s): later checkpoints were removed",
                        gap as f64 / 1000.0,
                        latest.seq,
                        latest.interval_ms as f64 / 1000.0
                    ),
                ));
            }
        }
        Ok(())
    }
}

fn fault(kind: FaultKind, seq: i64, reason: String) -> Fault {
    Fault { kind, seq, reason }
}

/// The longest gap between checkpoints of one process that is accepted.
fn allowed_gap_ms(interval_ms: u64) -> i64 {
    i64::try_from(interval_ms.saturating_mul(GAP_SLACK_NUM) / GAP_SLACK_DEN).unwrap_or(i64::MAX)
}

/// Names a record whose content does not match its hash: if it matches
/// under a nearby seq, it was moved there; otherwise it was edited.
fn content_fault(record: &EventRecord) -> Fault {
    let seq = record.seq;
    for delta in [-1, 1, -2, 2] {
        let mut moved = record.clone();
        moved.seq = seq + delta;
        if record_matches(&moved) {
            return fault(
                FaultKind::Reordered,
                seq,
                format!(
                    "the event stored at seq {seq} was sealed as seq {}: events were moved",
                    seq + delta
                ),
            );
        }
    }
    fault(
        FaultKind::Edited,
        seq,
        format!("the event at seq {seq} was edited: its hash does not match its content"),
    )
}

#[cfg(test)]
mod tests;

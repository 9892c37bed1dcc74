//! Losses recorded in the store itself, so the record says where it has a
//! gap: ERROR events for dropped offers, failed record builds, abandoned
//! batches (naming their seq range) and what an earlier run could not
//! record. They ride at the end of the next batch written while the store
//! is healthy, and count as recorded only once that batch is stored.

use std::sync::atomic::Ordering;

use serde_json::json;

use super::Writer;
use crate::event::{EventType, NewEvent};

/// Loss counters as far as they are recorded in the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Noted {
    dropped: u64,
    over_budget: u64,
    after_close: u64,
    build_failures: u64,
}

/// A batch the writer gave up on.
#[derive(Debug, Clone)]
pub(super) struct LostBatch {
    /// The seq range it was sealed with. The chain continues from the
    /// store's head, so later events may carry these numbers again.
    pub first_seq: i64,
    pub last_seq: i64,
    pub events: u64,
    pub error: String,
}

/// What one batch records; noted or handed back once its write settles.
pub(super) struct Report {
    /// What was recorded before this report (batches settle one at a
    /// time, so nothing else moved it meanwhile).
    before: Noted,
    noted: Noted,
    lost_batches: Vec<LostBatch>,
    carried: Option<crate::pipeline::losses::Carried>,
    /// Losses this report accounts for.
    total: u64,
}

// === impl Writer ===

impl Writer {
    /// Appends an ERROR event for each kind of loss not yet recorded, when
    /// the store is healthy. Returns what they record.
    pub(super) fn report_losses(
        &mut self,
        batch: &mut Vec<crate::event::AuditEvent>,
    ) -> Option<Report> {
        if !self.health.get() || !self.head_known {
            return None;
        }
        let now = self.current();
        let fresh = Noted {
            dropped: now.dropped - self.noted.dropped,
            over_budget: now.over_budget - self.noted.over_budget,
            after_close: now.after_close - self.noted.after_close,
            build_failures: now.build_failures - self.noted.build_failures,
        };
        let lost_batches = std::mem::take(&mut self.lost_batches);
        let carried = self.carried.take();
        if fresh == Noted::default() && lost_batches.is_empty() && carried.is_none() {
            return None;
        }
        let mut events = Vec::new();
        if fresh.dropped > 0 {
            events.push(
                NewEvent::new(
                    EventType::Error,
                    format!(
                        "{} audit events were dropped: the event queue was full, over its byte budget or closed",
                        fresh.dropped
                    ),
                )
                .with_metadata(json!({
                    "error_type": "events_dropped",
                    "details": {
                        "dropped": fresh.dropped,
                        "over_byte_budget": fresh.over_budget,
                        "after_close": fresh.after_close,
                        "dropped_total": now.dropped,
                    },
                })),
            );
        }
        if fresh.build_failures > 0 {
            events.push(
                NewEvent::new(
                    EventType::Error,
                    format!(
                        "{} call records could not be built and were lost",
                        fresh.build_failures
                    ),
                )
                .with_metadata(json!({
                    "error_type": "record_build_failed",
                    "details": {
                        "records": fresh.build_failures,
                        "records_total": now.build_failures,
                    },
                })),
            );
        }
        for lost in &lost_batches {
            events.push(
                NewEvent::new(
                    EventType::Error,
                    format!(
                        "{} audit events sealed as seq {}-{} could not be stored",
                        lost.events, lost.first_seq, lost.last_seq
                    ),
                )
                .with_metadata(json!({
                    "error_type": "events_lost",
                    "details": {
                        "events": lost.events,
                        "first_seq": lost.first_seq,
                        "last_seq": lost.last_seq,
                        "error": lost.error,
                    },
                })),
            );
        }
        if let Some(carried) = carried {
            events.push(
                NewEvent::new(
                    EventType::Error,
                    format!(
                        "{} audit events were lost in earlier runs and could not be recorded then",
                        carried.events
                    ),
                )
                .with_metadata(json!({
                    "error_type": "events_lost_before_restart",
                    "details": {"events": carried.events, "runs": carried.runs},
                })),
            );
        }
        for mut event in events {
            crate::pipeline::stamp_source(&mut event, self.cfg.source.as_ref());
            batch.push(self.seal(event));
        }
        let report = Report {
            before: self.noted,
            total: fresh.dropped
                + fresh.build_failures
                + lost_batches.iter().map(|l| l.events).sum::<u64>(),
            noted: now,
            lost_batches,
            carried,
        };
        // Counted as recorded now, so the next batch does not report the
        // same losses; handed back if this write fails.
        self.noted = report.noted;
        Some(report)
    }

    /// Settles a report once its batch's write is done: on success its
    /// losses are recorded (and the ledger cleared); otherwise they are
    /// reported again with a later batch.
    pub(super) fn settle_report(&mut self, report: Report, stored: bool) {
        if stored {
            self.stats
                .reported
                .fetch_add(report.total, Ordering::Relaxed);
            if report.carried.is_some() {
                if let Some(ledger) = &self.cfg.ledger {
                    ledger.clear();
                }
            }
            return;
        }
        self.noted = report.before;
        self.lost_batches.splice(0..0, report.lost_batches);
        if self.carried.is_none() {
            self.carried = report.carried;
        }
    }

    fn current(&self) -> Noted {
        let s = &self.stats;
        Noted {
            dropped: s.dropped.load(Ordering::Relaxed),
            over_budget: s.dropped_over_budget.load(Ordering::Relaxed),
            after_close: s.dropped_after_close.load(Ordering::Relaxed),
            build_failures: s.build_failures.load(Ordering::Relaxed),
        }
    }
}

//! The WARN line for dropped events, at most one per interval.
//!
//! Drops come in bursts exactly when the proxy is already overloaded (a
//! full queue at saturation drops thousands of events a second); a log
//! line for each would spend CPU and log volume where there is least of
//! both. Every drop is still counted in [`super::PipelineStats`] and
//! recorded as an ERROR `events_dropped` event; the log only says that it
//! happens, how often and why: one line per interval with the drops since
//! the last line, by reason.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// How often at most a line about dropped events is logged.
pub(crate) const DROP_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// Why an offer was dropped, as the log line and the tests name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DropReason {
    QueueFull,
    OverBudget,
    Closed,
}

impl DropReason {
    fn index(self) -> usize {
        match self {
            DropReason::QueueFull => 0,
            DropReason::OverBudget => 1,
            DropReason::Closed => 2,
        }
    }
}

/// Drops since the last line, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct DropCounts {
    pub queue_full: u64,
    pub queue_bytes: u64,
    pub closed: u64,
}

impl DropCounts {
    pub(crate) fn total(&self) -> u64 {
        self.queue_full + self.queue_bytes + self.closed
    }

    /// The reason most of these drops had, for the line's `reason` field.
    fn main_reason(&self) -> &'static str {
        let mut reason = ("queue_full", self.queue_full);
        for other in [("queue_bytes", self.queue_bytes), ("closed", self.closed)] {
            if other.1 > reason.1 {
                reason = other;
            }
        }
        reason.0
    }
}

/// Counts drops and decides when a line is due. Shared by every clone of
/// a pipeline handle.
#[derive(Debug)]
pub(crate) struct DropLog {
    interval: Duration,
    /// Drops not yet in a line, by [`DropReason::index`].
    pending: [AtomicU64; 3],
    /// When the last line was logged; `None` before the first.
    last_line: Mutex<Option<Instant>>,
}

impl DropLog {
    pub(crate) fn new(interval: Duration) -> Self {
        Self {
            interval,
            pending: Default::default(),
            last_line: Mutex::new(None),
        }
    }

    /// Counts one drop at `now`, and returns the drops a line is due for:
    /// the first drop's, then at most one set per interval.
    pub(crate) fn count(&self, reason: DropReason, now: Instant) -> Option<DropCounts> {
        self.pending[reason.index()].fetch_add(1, Ordering::Relaxed);
        // Whoever holds the lock is logging already; this drop is in the
        // pending counts for the next line.
        let mut last_line = self.last_line.try_lock().ok()?;
        if last_line.is_some_and(|last| now.saturating_duration_since(last) < self.interval) {
            return None;
        }
        *last_line = Some(now);
        Some(self.take())
    }

    /// Drops counted since the last line, now taken out of the pending
    /// counts (for a last line at shutdown).
    pub(crate) fn take(&self) -> DropCounts {
        let [queue_full, queue_bytes, closed] =
            std::array::from_fn(|i| self.pending[i].swap(0, Ordering::Relaxed));
        DropCounts {
            queue_full,
            queue_bytes,
            closed,
        }
    }
}

/// Logs one line for `counts` (nothing when there are none).
pub(crate) fn log_drops(counts: DropCounts, dropped_total: u64) {
    if counts.total() == 0 {
        return;
    }
    tracing::warn!(
        dropped = counts.total(),
        reason = counts.main_reason(),
        queue_full = counts.queue_full,
        queue_bytes = counts.queue_bytes,
        closed = counts.closed,
        dropped_total,
        "Audit events dropped since the last report: the queue is full, over its byte budget or closed."
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_drop_is_reported_at_once() {
        let log = DropLog::new(Duration::from_secs(1));
        let counts = log.count(DropReason::QueueFull, Instant::now());
        assert_eq!(
            counts,
            Some(DropCounts {
                queue_full: 1,
                ..DropCounts::default()
            })
        );
    }

    #[test]
    fn a_burst_makes_one_line_per_interval_and_the_counts_add_up() {
        let log = DropLog::new(Duration::from_secs(1));
        let start = Instant::now();
        let mut lines = Vec::new();
        // 10,000 drops over 2.5 s of synthetic time, one every 250 µs.
        for i in 0..10_000u64 {
            let reason = if i % 10 == 0 {
                DropReason::OverBudget
            } else {
                DropReason::QueueFull
            };
            let now = start + Duration::from_micros(250 * i);
            lines.extend(log.count(reason, now));
        }
        let rest = log.take();
        // At 0 s, 1 s and 2 s.
        assert_eq!(lines.len(), 3);
        assert_eq!(lines[0].total(), 1);
        assert_eq!(lines[1].total(), 4_000);
        assert_eq!(lines[2].total(), 4_000);
        let all = lines
            .iter()
            .chain([&rest])
            .fold(DropCounts::default(), |a, c| DropCounts {
                queue_full: a.queue_full + c.queue_full,
                queue_bytes: a.queue_bytes + c.queue_bytes,
                closed: a.closed + c.closed,
            });
        assert_eq!(all.queue_bytes, 1_000);
        assert_eq!(all.queue_full, 9_000);
        assert_eq!(all.total(), 10_000);
        assert_eq!(lines[1].main_reason(), "queue_full");
    }

    #[test]
    fn pending_drops_wait_for_the_next_interval() {
        let log = DropLog::new(Duration::from_secs(1));
        let start = Instant::now();
        assert!(log.count(DropReason::Closed, start).is_some());
        assert!(log
            .count(DropReason::Closed, start + Duration::from_millis(999))
            .is_none());
        let line = log
            .count(DropReason::OverBudget, start + Duration::from_secs(1))
            .expect("a line after the interval");
        assert_eq!(
            line,
            DropCounts {
                queue_full: 0,
                queue_bytes: 1,
                closed: 1,
            }
        );
        assert_eq!(log.take(), DropCounts::default());
    }

    #[test]
    fn main_reason_names_the_most_frequent() {
        let counts = DropCounts {
            queue_full: 2,
            queue_bytes: 5,
            closed: 1,
        };
        assert_eq!(counts.main_reason(), "queue_bytes");
        let closed = DropCounts {
            closed: 3,
            ..DropCounts::default()
        };
        assert_eq!(closed.main_reason(), "closed");
    }
}

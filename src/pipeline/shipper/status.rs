//! What each shipping target has done so far, shared between its shipper
//! (which writes it) and `/metrics` and `/api/stats` (which read it).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// One target's progress. Cheap to update: atomics, plus the last error's
/// text behind a lock taken once per failure.
#[derive(Debug)]
pub struct TargetStatus {
    name: &'static str,
    /// Events in the local store not yet acknowledged by the target.
    lag_events: AtomicU64,
    /// Age in seconds of the oldest of those (0 when none).
    oldest_unshipped_age_secs: AtomicU64,
    /// The last seq the target acknowledged (-1 before the first).
    cursor: AtomicI64,
    /// Unix time of the last acknowledged batch (0 before the first).
    last_success_unix: AtomicI64,
    shipped: AtomicU64,
    /// Events removed from the local store before the target got them.
    lost: AtomicU64,
    errors: AtomicU64,
    last_error: Mutex<Option<String>>,
}

/// A snapshot of [`TargetStatus`], as `/api/stats` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TargetSnapshot {
    pub target: &'static str,
    pub lag_events: u64,
    pub oldest_unshipped_age_secs: u64,
    pub cursor: Option<i64>,
    /// RFC 3339, or `None` before the first success.
    pub last_success: Option<String>,
    pub shipped: u64,
    /// Events removed from the local store (size cap, memory ring) before
    /// the target got them.
    pub lost: u64,
    pub errors: u64,
    /// The last failure's message (never a credential: connection errors
    /// are reported without the connection string).
    pub last_error: Option<String>,
}

// === impl TargetStatus ===

impl TargetStatus {
    pub fn new(name: &'static str) -> Self {
        Self {
            name,
            lag_events: AtomicU64::new(0),
            oldest_unshipped_age_secs: AtomicU64::new(0),
            cursor: AtomicI64::new(-1),
            last_success_unix: AtomicI64::new(0),
            shipped: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            last_error: Mutex::new(None),
        }
    }

    /// The target's name (the metrics label and the cursor's key).
    pub fn name(&self) -> &'static str {
        self.name
    }

    pub(super) fn set_lag(&self, events: u64, oldest_age_secs: u64) {
        self.lag_events.store(events, Ordering::Relaxed);
        self.oldest_unshipped_age_secs
            .store(oldest_age_secs, Ordering::Relaxed);
    }

    pub(super) fn set_cursor(&self, seq: i64) {
        self.cursor.store(seq, Ordering::Relaxed);
    }

    pub(super) fn record_success(&self, events: u64, now_unix: i64) {
        self.shipped.fetch_add(events, Ordering::Relaxed);
        self.last_success_unix.store(now_unix, Ordering::Relaxed);
    }

    pub(super) fn record_lost(&self, events: u64) {
        self.lost.fetch_add(events, Ordering::Relaxed);
    }

    pub(super) fn record_error(&self, message: String) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        *self.last_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(message);
    }

    pub fn lag_events(&self) -> u64 {
        self.lag_events.load(Ordering::Relaxed)
    }

    pub fn oldest_unshipped_age_secs(&self) -> u64 {
        self.oldest_unshipped_age_secs.load(Ordering::Relaxed)
    }

    pub fn last_success_unix(&self) -> i64 {
        self.last_success_unix.load(Ordering::Relaxed)
    }

    pub fn shipped(&self) -> u64 {
        self.shipped.load(Ordering::Relaxed)
    }

    pub fn lost(&self) -> u64 {
        self.lost.load(Ordering::Relaxed)
    }

    pub fn errors(&self) -> u64 {
        self.errors.load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> TargetSnapshot {
        let cursor = self.cursor.load(Ordering::Relaxed);
        let last = self.last_success_unix();
        TargetSnapshot {
            target: self.name,
            lag_events: self.lag_events(),
            oldest_unshipped_age_secs: self.oldest_unshipped_age_secs(),
            cursor: (cursor >= 0).then_some(cursor),
            last_success: (last > 0)
                .then(|| chrono::DateTime::from_timestamp(last, 0))
                .flatten()
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
            shipped: self.shipped(),
            lost: self.lost(),
            errors: self.errors(),
            last_error: self
                .last_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
        }
    }
}

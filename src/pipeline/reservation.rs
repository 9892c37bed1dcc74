//! Queue room promised to one call admitted under `fail_closed` (see
//! [`super::admission`]): held from admission until the call's record has
//! queued its events, and grown as the call's bodies are captured.
//!
//! A call reserves 16 KiB at admission: its events' metadata and the
//! first 4 KiB of each body. Each body's capture
//! grows the reservation past that, in steps, by what it holds, and never
//! refuses: a call once admitted is served to its end. So a thousand open
//! streams with small bodies hold a thousand small reservations, while a
//! call that captures a large body holds room for it, and new calls wait
//! (or are refused) while the queue has none left. The writer takes a
//! call's events within its reservation even when growth has taken the
//! queue past `queue.max_bytes`: that room was promised.
//!
//! The room is given back when the last holder is gone: the record (and
//! its clones on the builder thread and for held events) and the captures'
//! growth handles.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::{PipelineStats, Refusal};
use crate::capture::tee::CaptureGrowth;

/// Events one call reserves: REQUEST, RESPONSE, and an ERROR or a
/// COMPLIANCE_VIOLATION.
pub(crate) const EVENTS_PER_CALL: u64 = 4;
/// Bytes one call reserves at admission: its events' metadata (headers,
/// usage, ids) and the first [`BODY_ALLOWANCE`] bytes of each body. Small,
/// so a thousand calls held open reserve 16 MiB of the default 64 MiB.
pub(crate) const BYTES_PER_CALL: u64 = 16 * 1024;
/// Bytes of each body that [`BYTES_PER_CALL`] covers; a capture grows the
/// reservation past them.
pub(crate) const BODY_ALLOWANCE: usize = 4 * 1024;

/// Queue room held for one admitted call. Cheap to clone; the room is
/// released once every clone and growth handle is dropped.
#[must_use]
#[derive(Clone)]
pub struct Reservation(Arc<Promised>);

/// The room still promised: counted in the stats' `reserved_*` too.
struct Promised {
    stats: Arc<PipelineStats>,
    events: u64,
    /// Less what the call's queued events have taken.
    bytes: AtomicU64,
}

// === impl Reservation ===

impl Reservation {
    /// Holds one call's room ([`EVENTS_PER_CALL`], [`BYTES_PER_CALL`]) if
    /// the queue, with everything already promised, has it under
    /// `capacity` events and `max_bytes`; else says why not.
    pub(crate) fn try_new(
        stats: &Arc<PipelineStats>,
        capacity: u64,
        max_bytes: u64,
    ) -> Result<Self, Refusal> {
        // Counted in first, then checked with it counted, so two calls
        // racing for the last room cannot both take it.
        let events = stats
            .reserved_events
            .fetch_add(EVENTS_PER_CALL, Ordering::AcqRel)
            + EVENTS_PER_CALL;
        let bytes = stats
            .reserved_bytes
            .fetch_add(BYTES_PER_CALL, Ordering::AcqRel)
            + BYTES_PER_CALL;
        let refusal = if stats.queue_depth.load(Ordering::Relaxed) + events > capacity {
            Refusal::QueueFull
        } else if stats.queue_bytes.load(Ordering::Relaxed) + bytes > max_bytes {
            Refusal::QueueBytes
        } else {
            return Ok(Self::holding(
                stats.clone(),
                EVENTS_PER_CALL,
                BYTES_PER_CALL,
            ));
        };
        // Given back without ringing: this call may itself be the waiter,
        // and would wake itself for ever.
        stats
            .reserved_events
            .fetch_sub(EVENTS_PER_CALL, Ordering::AcqRel);
        stats
            .reserved_bytes
            .fetch_sub(BYTES_PER_CALL, Ordering::AcqRel);
        Err(refusal)
    }

    /// Holds `events` and `bytes` whatever the queue holds, counting them
    /// in `stats`.
    #[cfg(test)]
    pub(crate) fn new(stats: &Arc<PipelineStats>, events: u64, bytes: u64) -> Self {
        stats.reserved_events.fetch_add(events, Ordering::AcqRel);
        stats.reserved_bytes.fetch_add(bytes, Ordering::AcqRel);
        Self::holding(stats.clone(), events, bytes)
    }

    /// Holds `events` and `bytes` already counted in `stats`.
    fn holding(stats: Arc<PipelineStats>, events: u64, bytes: u64) -> Self {
        Self(Arc::new(Promised {
            stats,
            events,
            bytes: AtomicU64::new(bytes),
        }))
    }

    /// What a body's capture grows this reservation through.
    pub fn growth(&self) -> Arc<dyn CaptureGrowth> {
        self.0.clone()
    }

    /// Bytes still promised.
    pub fn bytes(&self) -> u64 {
        self.0.bytes.load(Ordering::Acquire)
    }

    /// Takes `bytes` for one event out of the promise, if it holds that
    /// many; the caller then counts them as queued (or gives them back).
    pub(crate) fn take(&self, bytes: u64) -> bool {
        let taken = self
            .0
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(bytes)
            })
            .is_ok();
        if taken {
            self.0
                .stats
                .reserved_bytes
                .fetch_sub(bytes, Ordering::AcqRel);
        }
        taken
    }

    /// Returns what [`take`](Self::take) took for an event that was not
    /// queued after all.
    pub(crate) fn give_back(&self, bytes: u64) {
        self.0.grow(bytes);
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("events", &self.0.events)
            .field("bytes", &self.bytes())
            .finish()
    }
}

// === impl Promised ===

impl Promised {
    fn grow(&self, bytes: u64) {
        // The call's own count first: taking from it checks it alone.
        self.bytes.fetch_add(bytes, Ordering::AcqRel);
        self.stats.reserved_bytes.fetch_add(bytes, Ordering::AcqRel);
    }
}

impl CaptureGrowth for Promised {
    fn allowance(&self) -> usize {
        BODY_ALLOWANCE
    }

    fn grew(&self, bytes: u64) {
        self.grow(bytes);
    }
}

impl Drop for Promised {
    fn drop(&mut self) {
        let stats = &self.stats;
        stats
            .reserved_events
            .fetch_sub(self.events, Ordering::AcqRel);
        stats
            .reserved_bytes
            .fetch_sub(*self.bytes.get_mut(), Ordering::AcqRel);
        // The room given back may be what a waiting call waits for.
        if stats.room_waiters.load(Ordering::Relaxed) > 0 {
            stats.room.notify_one();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reserved(stats: &PipelineStats) -> (u64, u64) {
        (
            stats.reserved_events.load(Ordering::Relaxed),
            stats.reserved_bytes.load(Ordering::Relaxed),
        )
    }

    fn reservation(stats: &Arc<PipelineStats>) -> Reservation {
        Reservation::new(stats, EVENTS_PER_CALL, BYTES_PER_CALL)
    }

    #[test]
    fn growth_through_a_capture_handle_is_held_until_every_holder_is_gone() {
        let stats = Arc::new(PipelineStats::default());
        let held = reservation(&stats);
        let growth = held.growth();
        assert_eq!(growth.allowance(), BODY_ALLOWANCE);
        growth.grew(100_000);
        growth.grew(1);
        assert_eq!(held.bytes(), BYTES_PER_CALL + 100_001);
        assert_eq!(
            reserved(&stats),
            (EVENTS_PER_CALL, BYTES_PER_CALL + 100_001)
        );
        let clone = held.clone();
        drop(held);
        drop(growth);
        assert_eq!(reserved(&stats).1, BYTES_PER_CALL + 100_001);
        drop(clone);
        assert_eq!(reserved(&stats), (0, 0));
    }

    #[test]
    fn queued_events_take_their_bytes_out_of_the_promise_and_no_more() {
        let stats = Arc::new(PipelineStats::default());
        let held = reservation(&stats);
        assert!(held.take(BYTES_PER_CALL - 10));
        assert!(!held.take(11), "more than is left");
        assert_eq!(held.bytes(), 10);
        assert_eq!(reserved(&stats).1, 10);
        held.give_back(BYTES_PER_CALL - 10);
        assert_eq!(held.bytes(), BYTES_PER_CALL);
        drop(held);
        assert_eq!(reserved(&stats), (0, 0));
    }
}

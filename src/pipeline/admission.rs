//! Admission of calls under `audit.on_store_failure = "fail_closed"`: a
//! call is let through only while the store is healthy and the queue has
//! room for its events, and it holds that room until its record is queued.
//!
//! Reading the store's health flag alone is not enough: a full queue or a
//! slow store never trips it, and the calls let through then lose their
//! events. So each admitted call reserves a share of the queue, in events
//! and in bytes, and the reservation is released when the call's record
//! has been offered (the [`Reservation`] is dropped).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{Handle, PipelineStats, StoreHealth};

/// Events one call's record usually queues: REQUEST, RESPONSE, and an
/// ERROR or a COMPLIANCE_VIOLATION.
const EVENTS_PER_CALL: u64 = 4;
/// Bounds of the bytes one call reserves: twice its capture cap (both
/// bodies), within these limits. A typical stored call is far smaller than
/// its cap; reserving the cap itself would admit only a few dozen calls
/// into the default budget (64 KiB admits 1,024 calls into 64 MiB).
const MIN_BYTES_PER_CALL: u64 = 16 * 1024;
const MAX_BYTES_PER_CALL: u64 = 64 * 1024;

/// Decides whether a call may proceed. Cheap to clone.
#[derive(Clone)]
pub struct Admission {
    /// `None`: every call is admitted (fail_open, or auditing disabled).
    gate: Option<Arc<Gate>>,
}

struct Gate {
    stats: Arc<PipelineStats>,
    health: StoreHealth,
    capacity: u64,
    max_bytes: u64,
    bytes_per_call: u64,
}

/// Why a call was refused at admission.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The store's last write or health check failed.
    StoreUnhealthy,
    /// The queue holds (or has promised) as many events as it may.
    QueueFull,
    /// The queue's byte budget is spent.
    QueueBytes,
}

/// Queue room held for one admitted call; released when dropped.
#[must_use]
pub struct Reservation {
    stats: Arc<PipelineStats>,
    events: u64,
    bytes: u64,
}

// === impl Admission ===

impl Admission {
    /// Admits every call.
    pub fn open() -> Self {
        Self { gate: None }
    }

    /// Admits a call only while the store is healthy and the queue behind
    /// `handle` has room for one more call's events; `capture_cap` sizes the
    /// bytes a call reserves.
    pub fn closed(
        handle: &Handle,
        health: StoreHealth,
        capacity: usize,
        max_bytes: u64,
        capture_cap: usize,
    ) -> Self {
        let bytes_per_call = (2 * capture_cap as u64).clamp(MIN_BYTES_PER_CALL, MAX_BYTES_PER_CALL);
        Self {
            gate: Some(Arc::new(Gate {
                stats: handle.stats().clone(),
                health,
                capacity: capacity as u64,
                max_bytes,
                bytes_per_call,
            })),
        }
    }

    /// Lets a call in, holding room for its events (`None` when nothing
    /// needs holding), or says why not.
    pub fn admit(&self) -> Result<Option<Reservation>, Refusal> {
        let Some(gate) = &self.gate else {
            return Ok(None);
        };
        if !gate.health.is_writable() {
            return Err(Refusal::StoreUnhealthy);
        }
        let stats = &gate.stats;
        // Reserve first, then check with the reservation counted, so two
        // calls racing for the last room cannot both take it.
        let events = stats
            .reserved_events
            .fetch_add(EVENTS_PER_CALL, Ordering::AcqRel)
            + EVENTS_PER_CALL;
        let bytes = stats
            .reserved_bytes
            .fetch_add(gate.bytes_per_call, Ordering::AcqRel)
            + gate.bytes_per_call;
        let reservation = Reservation {
            stats: stats.clone(),
            events: EVENTS_PER_CALL,
            bytes: gate.bytes_per_call,
        };
        if stats.queue_depth.load(Ordering::Relaxed) + events > gate.capacity {
            return Err(Refusal::QueueFull);
        }
        if stats.queue_bytes.load(Ordering::Relaxed) + bytes > gate.max_bytes {
            return Err(Refusal::QueueBytes);
        }
        Ok(Some(reservation))
    }
}

// === impl Refusal ===

impl Refusal {
    /// A short, fixed label for logs and metrics.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::StoreUnhealthy => "store_unhealthy",
            Refusal::QueueFull => "queue_full",
            Refusal::QueueBytes => "queue_bytes",
        }
    }
}

// === impl Reservation ===

impl Drop for Reservation {
    fn drop(&mut self) {
        self.stats
            .reserved_events
            .fetch_sub(self.events, Ordering::AcqRel);
        self.stats
            .reserved_bytes
            .fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl std::fmt::Debug for Reservation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reservation")
            .field("events", &self.events)
            .field("bytes", &self.bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::health;

    fn gate(
        capacity: usize,
        max_bytes: u64,
    ) -> (Admission, Arc<PipelineStats>, health::StoreHealthSetter) {
        let stats = Arc::new(PipelineStats::default());
        let (setter, health) = health::channel();
        let admission = Admission {
            gate: Some(Arc::new(Gate {
                stats: stats.clone(),
                health,
                capacity: capacity as u64,
                max_bytes,
                bytes_per_call: MIN_BYTES_PER_CALL,
            })),
        };
        (admission, stats, setter)
    }

    #[test]
    fn an_open_admission_lets_every_call_in_without_holding_room() {
        assert!(Admission::open().admit().unwrap().is_none());
    }

    #[test]
    fn a_call_is_refused_while_the_store_is_unhealthy() {
        let (admission, _, setter) = gate(100, 1 << 30);
        setter.set(false);
        assert_eq!(admission.admit().unwrap_err(), Refusal::StoreUnhealthy);
        setter.set(true);
        assert!(admission.admit().unwrap().is_some());
    }

    #[test]
    fn reservations_hold_queue_room_until_dropped() {
        // Room for two calls' events.
        let (admission, stats, _setter) = gate(2 * EVENTS_PER_CALL as usize, 1 << 30);
        let first = admission.admit().unwrap();
        let second = admission.admit().unwrap();
        assert_eq!(admission.admit().unwrap_err(), Refusal::QueueFull);
        drop(first);
        let third = admission.admit().unwrap();
        drop((second, third));
        assert_eq!(stats.reserved_events.load(Ordering::Relaxed), 0);
        assert_eq!(stats.reserved_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_full_queue_refuses_calls() {
        let (admission, stats, _setter) = gate(100, 1 << 30);
        stats.queue_depth.store(97, Ordering::Relaxed);
        assert_eq!(admission.admit().unwrap_err(), Refusal::QueueFull);
    }

    #[test]
    fn a_spent_byte_budget_refuses_calls() {
        let (admission, stats, _setter) = gate(100, 1024 * 1024);
        stats
            .queue_bytes
            .store(1024 * 1024 - MIN_BYTES_PER_CALL + 1, Ordering::Relaxed);
        assert_eq!(admission.admit().unwrap_err(), Refusal::QueueBytes);
        stats.queue_bytes.store(0, Ordering::Relaxed);
        assert!(admission.admit().unwrap().is_some());
    }
}

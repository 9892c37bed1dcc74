//! A record's events that find no room in the queue: held on the
//! recording task until the writer takes a batch, for at most
//! `queue.full_wait_ms`, instead of being dropped at once.
//!
//! Admission ([`super::admission`]) paces new calls at a high-water mark
//! and leaves the quarter above it to the calls already in flight. A few
//! of those calls can carry bodies far above the queued average, and
//! their records overshoot that quarter although the store is healthy,
//! merely slower than the traffic. An event that finds no room is
//! therefore held, and offered again each time the writer takes a batch
//! off the queue. The wait is on the record's own task, never on a call's
//! response path. A record's later events are held behind its first
//! held one (a call's events keep their order), and while any record's
//! events are held, other records' events queue behind them (unless their
//! room was promised under `fail_closed`, see [`super::reservation`]), so
//! a large record is not starved by small ones taking every room the
//! writer makes. At the bound, what is still held is offered anyway and, finding
//! no room, dropped and counted as before. Nothing is held while the
//! store's health flag says it takes no writes (waiting would not bring
//! it back), nor when `queue.full_wait_ms` is 0.
//!
//! Held events count against admission's high-water mark at their actual
//! number and bytes (`held_events`, `held_bytes`), so new calls are paced
//! while they wait.
//!
//! The common case, room in the queue and nothing held, costs an offer one
//! counter read more: no lock, allocation or await.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;

use super::{queued_bytes, Handle, Reservation, StoreHealth, WriterMsg};
use crate::event::NewEvent;

/// When a record's events may be held, and for how long.
#[derive(Clone)]
pub struct Holding {
    /// `queue.full_wait_ms`: the longest an event is held.
    full_wait: Duration,
    /// A store that takes no writes holds nothing.
    health: StoreHealth,
}

/// The offers of one record-building job: queued at once while there is
/// room, else held (see the module doc).
pub(crate) struct Offers<'a> {
    handle: &'a Handle,
    /// `None`: nothing is ever held.
    holding: Option<&'a Holding>,
    /// The call's room under `fail_closed`, which its events are queued in.
    reservation: Option<&'a Reservation>,
    /// Events held so far, in the order offered.
    held: VecDeque<NewEvent>,
    /// When the first of them was held.
    since: Option<Instant>,
}

/// A record's held events, to be offered with [`Held::offer`] on the
/// record's task. Dropped unfinished, it offers what it still holds
/// without waiting.
#[must_use]
pub(crate) struct Held {
    handle: Handle,
    holding: Holding,
    /// Kept (room still promised) until the events are offered.
    reservation: Option<Reservation>,
    events: VecDeque<NewEvent>,
    /// When the first event was held: the bound runs from there.
    since: Instant,
}

// === impl Holding ===

impl Holding {
    /// Holds events for at most `full_wait` while `health` says the store
    /// takes writes; `None` when `full_wait` is zero.
    pub fn new(full_wait: Duration, health: StoreHealth) -> Option<Self> {
        (!full_wait.is_zero()).then_some(Self { full_wait, health })
    }

    fn may_hold(&self) -> bool {
        self.health.is_writable()
    }
}

// === impl Offers ===

impl<'a> Offers<'a> {
    pub(crate) fn new(
        handle: &'a Handle,
        holding: Option<&'a Holding>,
        reservation: Option<&'a Reservation>,
    ) -> Self {
        Self {
            handle,
            holding,
            reservation,
            held: VecDeque::new(),
            since: None,
        }
    }

    /// Queues `event` if there is room and nothing is held before it;
    /// else holds it, or drops and counts it where nothing may be held.
    pub(crate) fn offer(&mut self, event: NewEvent) {
        let handle = self.handle;
        let stats = &handle.stats;
        let Some(mut event) = handle.prepared(event) else {
            return;
        };
        stats.offered.fetch_add(1, Ordering::Relaxed);
        if self.held.is_empty() {
            // Behind another record's held events, unless this one may not
            // wait or has room promised.
            let behind_others = self.holding.is_some()
                && self.reservation.is_none()
                && stats.held_events.load(Ordering::Relaxed) > 0
                && self.may_hold();
            if !behind_others {
                match handle.queue(event, WriterMsg::Event, self.reservation) {
                    Ok(()) => return,
                    Err((refused, _)) if refused.is_closed() || !self.may_hold() => {
                        return handle.count_drop(refused);
                    }
                    Err((_, back)) => event = back,
                }
            }
        }
        self.hold(event);
    }

    /// What this job could not queue, to be offered by the record's task;
    /// `None` when everything was queued (or dropped).
    pub(crate) fn finish(self) -> Option<Held> {
        let (Some(holding), Some(since)) = (self.holding, self.since) else {
            return None;
        };
        Some(Held {
            handle: self.handle.clone(),
            holding: holding.clone(),
            reservation: self.reservation.cloned(),
            events: self.held,
            since,
        })
    }

    fn may_hold(&self) -> bool {
        self.holding.is_some_and(Holding::may_hold)
    }

    fn hold(&mut self, event: NewEvent) {
        let stats = &self.handle.stats;
        stats.events_held.fetch_add(1, Ordering::Relaxed);
        stats.held_events.fetch_add(1, Ordering::Relaxed);
        stats
            .held_bytes
            .fetch_add(queued_bytes(&event), Ordering::Relaxed);
        self.since.get_or_insert_with(Instant::now);
        self.held.push_back(event);
    }
}

// === impl Held ===

impl Held {
    /// Offers the held events in order, each as soon as the queue has room
    /// for it; once `queue.full_wait_ms` has passed since the first was
    /// held, or the store turns unwritable, the rest are offered at once
    /// (and dropped and counted if there is still no room).
    pub(crate) async fn offer(mut self) {
        let stats = self.handle.stats.clone();
        let mut deadline = pin!(tokio::time::sleep_until(
            self.since + self.holding.full_wait
        ));
        let mut health = self.holding.health.clone();
        let mut waiting = true;
        while let Some(first) = self.events.pop_front() {
            let bytes = queued_bytes(&first);
            let mut event = first;
            loop {
                // Registered before trying, so a batch taken between the
                // try and the wait still wakes this record.
                let mut rung = pin!(stats.held_room.notified());
                rung.as_mut().enable();
                match self
                    .handle
                    .queue(event, WriterMsg::Event, self.reservation.as_ref())
                {
                    Ok(()) => break,
                    Err((refused, _))
                        if refused.is_closed() || !waiting || !self.holding.may_hold() =>
                    {
                        self.handle.count_drop(refused);
                        break;
                    }
                    Err((_, back)) => event = back,
                }
                tokio::select! {
                    () = rung => {}
                    () = health.unwritable() => waiting = false,
                    () = deadline.as_mut() => waiting = false,
                }
            }
            release(&stats, bytes);
        }
    }
}

impl Drop for Held {
    /// Cancelled (the task ended before the events were offered): offers
    /// them without waiting, so none leaves uncounted.
    fn drop(&mut self) {
        let stats = self.handle.stats.clone();
        for event in self.events.drain(..) {
            release(&stats, queued_bytes(&event));
            let reservation = self.reservation.as_ref();
            if let Err((refused, _)) = self.handle.queue(event, WriterMsg::Event, reservation) {
                self.handle.count_drop(refused);
            }
        }
    }
}

/// One event leaves the held count (queued or dropped).
fn release(stats: &super::PipelineStats, bytes: u64) {
    stats.held_events.fetch_sub(1, Ordering::Relaxed);
    stats.held_bytes.fetch_sub(bytes, Ordering::Relaxed);
}

#[cfg(test)]
mod tests;

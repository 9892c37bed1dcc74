//! Admission of calls: back-pressure while the audit queue is full, and
//! under `audit.on_store_failure = "fail_closed"` a promise of room for
//! each call's events.
//!
//! **Back-pressure.** A store that is healthy but slower than the traffic
//! (SQLite at saturation writes fewer events a second than the request path
//! offers) would otherwise fill the bounded queue, and every offer past it
//! is a lost event although nothing failed. So while the queue is full a
//! new call waits, before anything goes upstream, until the writer has
//! taken events off the queue, for at most `queue.full_wait_ms`. The app
//! sees latency instead of the record losing events, and throughput
//! settles at what the writer stores. A wait is asynchronous (a
//! [`tokio::sync::Notify`] the writer rings after each batch it takes), and
//! fair: while anyone waits, later calls queue behind them, and a waiter
//! that goes on passes the turn to the next while room remains. When the
//! bound is reached, `fail_open` serves the call anyway (its events may
//! then be dropped and counted, as without a wait) and `fail_closed`
//! refuses it with 503. A store whose health flag says it takes no writes
//! makes no call wait: waiting would not bring it back.
//!
//! **What "full" means under `fail_open`.** The queue's actual contents:
//! its events or their bytes at or above a high-water mark, three quarters
//! of `queue.capacity` and of `queue.max_bytes`. Records already handed to
//! the record builder count too (their events are on their way; their
//! bytes are taken at the queued events' average size). Calls admitted
//! earlier have not offered their events yet; the quarter above the mark
//! is theirs, so the calls in flight when waiting starts still find room
//! (a quarter of the default 10,000 events holds the records of over 600
//! calls). Room promised to calls in flight is deliberately not counted: a
//! thousand open streams hold no queued events, and must neither make new
//! calls wait nor cost memory. Calls in flight with bodies near the
//! capture cap can still overshoot the byte headroom; their events are
//! then held on the record's task until the writer makes room
//! ([`super::held`]), and count as coming, at their actual size, while
//! they wait.
//!
//! **Under `fail_closed`** (and strict durability) each admitted call
//! reserves a share of the queue, in events and in bytes, until its record
//! has been offered (the [`Reservation`] is dropped): reading the store's
//! health flag alone is not enough, since a full queue or a slow store
//! never trips it. A call reserves little at admission (4 events and
//! 16 KiB) and its reservation grows with what its bodies' captures hold,
//! never refused once the call is in (see [`super::reservation`]), so open
//! streams with small bodies leave room for new calls while a large call
//! holds room for its own events. "Full" is then "no room left to promise"
//! (queued plus reserved, grown reservations included), and a call waits
//! for a reservation as above.
//!
//! The common case, room and nobody waiting, reads six counters and
//! neither allocates, locks nor awaits under `fail_open`; under
//! `fail_closed` an admitted call's reservation is one small allocation,
//! shared with its captures.

use std::pin::pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::reservation::{BYTES_PER_CALL, EVENTS_PER_CALL};
use super::{Handle, PipelineStats, Reservation, StoreHealth};

/// Events one record-building job offers: a REQUEST and a RESPONSE.
const EVENTS_PER_RECORD: u64 = 2;

/// Decides whether and when a call may proceed. Cheap to clone.
#[derive(Clone)]
pub struct Admission {
    /// `None`: every call is admitted at once (auditing disabled).
    gate: Option<Arc<Gate>>,
}

struct Gate {
    stats: Arc<PipelineStats>,
    health: StoreHealth,
    room: Room,
    /// Longest a call waits for room (`queue.full_wait_ms`); zero never
    /// waits.
    full_wait: Duration,
}

/// How a gate judges whether the queue has room for one more call.
enum Room {
    /// `fail_open`: the queued events and bytes are below these marks.
    Queued { high_events: u64, high_bytes: u64 },
    /// `fail_closed`: one more call's events can be promised.
    Reserved { capacity: u64, max_bytes: u64 },
}

/// What [`Admission::try_admit`] decided at once.
#[derive(Debug)]
pub enum Attempt {
    /// Admitted (holding room under `fail_closed`), or refused.
    Done(Result<Option<Reservation>, Refusal>),
    /// The queue is full: wait with [`Admission::wait_for_room`].
    Wait,
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

/// Counts a call among the waiters for as long as it waits.
struct Waiting<'a>(&'a PipelineStats);

// === impl Admission ===

impl Admission {
    /// Admits every call at once.
    pub fn open() -> Self {
        Self { gate: None }
    }

    /// `fail_open`: admits every call, but while the queue behind `handle`
    /// is full (see the module doc) a call first waits up to `full_wait`
    /// for room, unless the store is unhealthy.
    pub fn paced(
        handle: &Handle,
        health: StoreHealth,
        capacity: usize,
        max_bytes: u64,
        full_wait: Duration,
    ) -> Self {
        Self::with_room(
            handle.stats().clone(),
            health,
            Room::Queued {
                high_events: high_water(capacity as u64),
                high_bytes: high_water(max_bytes),
            },
            full_wait,
        )
    }

    /// `fail_closed`: admits a call only while the store is healthy and the
    /// queue behind `handle` has room for one more call's events, waiting
    /// up to `full_wait` for that room.
    pub fn closed(
        handle: &Handle,
        health: StoreHealth,
        capacity: usize,
        max_bytes: u64,
        full_wait: Duration,
    ) -> Self {
        Self::with_room(
            handle.stats().clone(),
            health,
            Room::Reserved {
                capacity: capacity as u64,
                max_bytes,
            },
            full_wait,
        )
    }

    fn with_room(
        stats: Arc<PipelineStats>,
        health: StoreHealth,
        room: Room,
        full_wait: Duration,
    ) -> Self {
        Self {
            gate: Some(Arc::new(Gate {
                stats,
                health,
                room,
                full_wait,
            })),
        }
    }

    /// Decides without waiting: admitted (holding room under
    /// `fail_closed`), refused, or to wait for room.
    pub fn try_admit(&self) -> Attempt {
        let Some(gate) = &self.gate else {
            return Attempt::Done(Ok(None));
        };
        // Later calls queue behind those already waiting.
        let others_wait = || gate.stats.room_waiters.load(Ordering::Relaxed) > 0;
        let may_wait = || !gate.full_wait.is_zero() && gate.health.is_writable();
        match &gate.room {
            Room::Queued { .. } => {
                if (gate.has_room() && !others_wait()) || !may_wait() {
                    Attempt::Done(Ok(None))
                } else {
                    Attempt::Wait
                }
            }
            Room::Reserved { .. } => {
                if !gate.health.is_writable() {
                    return Attempt::Done(Err(Refusal::StoreUnhealthy));
                }
                if others_wait() && may_wait() {
                    return Attempt::Wait;
                }
                match gate.reserve() {
                    Ok(reservation) => Attempt::Done(Ok(Some(reservation))),
                    Err(_) if may_wait() => Attempt::Wait,
                    Err(refusal) => Attempt::Done(Err(refusal)),
                }
            }
        }
    }

    /// Lets a call in, waiting first for room while the queue is full.
    pub async fn admit(&self) -> Result<Option<Reservation>, Refusal> {
        match self.try_admit() {
            Attempt::Done(result) => result,
            Attempt::Wait => self.wait_for_room().await,
        }
    }

    /// Waits for room, at most `queue.full_wait_ms`, after
    /// [`try_admit`](Self::try_admit) said [`Attempt::Wait`]. Under
    /// `fail_open` the call is then admitted whether room came or not.
    pub async fn wait_for_room(&self) -> Result<Option<Reservation>, Refusal> {
        let Some(gate) = &self.gate else {
            return Ok(None);
        };
        let started = Instant::now();
        let stats = &gate.stats;
        stats.queue_waits.fetch_add(1, Ordering::Relaxed);
        let waiting = Waiting::enter(stats);
        let mut deadline = pin!(tokio::time::sleep_until(started + gate.full_wait));
        // A store turning unhealthy ends the wait too.
        let mut health = gate.health.clone();
        let outcome = loop {
            // Registered before looking, so room made between the look and
            // the wait still wakes this call.
            let mut rung = pin!(stats.room.notified());
            rung.as_mut().enable();
            if !gate.health.is_writable() {
                break gate.without_room(Refusal::StoreUnhealthy);
            }
            match gate.try_room() {
                Ok(admitted) => break Ok(admitted),
                Err(refusal) => {
                    tokio::select! {
                        () = rung => {}
                        () = health.unwritable() => {}
                        () = deadline.as_mut() => {
                            stats.queue_wait_timeouts.fetch_add(1, Ordering::Relaxed);
                            break gate.without_room(refusal);
                        }
                    }
                }
            }
        };
        drop(waiting);
        // Pass the turn on while room remains; the writer rings again
        // after its next batch otherwise.
        if stats.room_waiters.load(Ordering::Relaxed) > 0 && gate.has_room() {
            stats.room.notify_one();
        }
        let waited = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        stats.queue_wait_micros.fetch_add(waited, Ordering::Relaxed);
        outcome
    }
}

/// Three quarters of `limit` (at least 1): the rest is left for the events
/// of calls already in flight.
fn high_water(limit: u64) -> u64 {
    (limit - limit / 4).max(1)
}

// === impl Gate ===

impl Gate {
    /// Whether one more call fits now (under `fail_closed`: could be
    /// promised room), ignoring anyone waiting.
    fn has_room(&self) -> bool {
        let stats = &self.stats;
        match self.room {
            Room::Queued {
                high_events,
                high_bytes,
            } => {
                let depth = stats.queue_depth.load(Ordering::Relaxed);
                let bytes = stats.queue_bytes.load(Ordering::Relaxed);
                let building = EVENTS_PER_RECORD * stats.records_building.load(Ordering::Relaxed);
                // The coming events' bytes are not known before they are
                // built: taken at the queued events' average size.
                let building_bytes = if building == 0 || depth == 0 {
                    0
                } else {
                    building.saturating_mul(bytes / depth)
                };
                // Events held for room are known exactly.
                let coming = building + stats.held_events.load(Ordering::Relaxed);
                let coming_bytes =
                    building_bytes.saturating_add(stats.held_bytes.load(Ordering::Relaxed));
                depth + coming < high_events && bytes.saturating_add(coming_bytes) < high_bytes
            }
            Room::Reserved {
                capacity,
                max_bytes,
            } => {
                let events = stats.queue_depth.load(Ordering::Relaxed)
                    + stats.reserved_events.load(Ordering::Relaxed);
                let bytes = stats.queue_bytes.load(Ordering::Relaxed)
                    + stats.reserved_bytes.load(Ordering::Relaxed);
                events + EVENTS_PER_CALL <= capacity && bytes + BYTES_PER_CALL <= max_bytes
            }
        }
    }

    /// Admits a waiting call if there is room now.
    fn try_room(&self) -> Result<Option<Reservation>, Refusal> {
        match self.room {
            Room::Queued { .. } if self.has_room() => Ok(None),
            Room::Queued { .. } => Err(Refusal::QueueFull),
            Room::Reserved { .. } => self.reserve().map(Some),
        }
    }

    /// What a call that found no room gets: `fail_open` serves it,
    /// `fail_closed` refuses it.
    fn without_room(&self, refusal: Refusal) -> Result<Option<Reservation>, Refusal> {
        match self.room {
            Room::Queued { .. } => Ok(None),
            Room::Reserved { .. } => Err(refusal),
        }
    }

    /// Holds room for one call's events, or says why there is none.
    fn reserve(&self) -> Result<Reservation, Refusal> {
        let Room::Reserved {
            capacity,
            max_bytes,
        } = self.room
        else {
            return Err(Refusal::QueueFull);
        };
        Reservation::try_new(&self.stats, capacity, max_bytes)
    }
}

// === impl Waiting ===

impl<'a> Waiting<'a> {
    fn enter(stats: &'a PipelineStats) -> Self {
        stats.room_waiters.fetch_add(1, Ordering::Relaxed);
        Self(stats)
    }
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.room_waiters.fetch_sub(1, Ordering::Relaxed);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::health;

    /// Long enough that a test's wait ends only when it is woken.
    const LONG: Duration = Duration::from_secs(120);
    /// Short enough that a test reaches the bound quickly.
    const SHORT: Duration = Duration::from_millis(20);

    type Gated = (Admission, Arc<PipelineStats>, health::StoreHealthSetter);

    /// A gate judging room by `room`, on fresh counters and a healthy store.
    fn gate(room: Room, full_wait: Duration) -> Gated {
        let stats = Arc::new(PipelineStats::default());
        let (setter, health) = health::channel();
        let admission = Admission::with_room(stats.clone(), health, room, full_wait);
        (admission, stats, setter)
    }

    /// `fail_closed`'s gate.
    fn reserved(capacity: usize, max_bytes: u64, full_wait: Duration) -> Gated {
        let room = Room::Reserved {
            capacity: capacity as u64,
            max_bytes,
        };
        gate(room, full_wait)
    }

    /// `fail_open`'s gate.
    fn queued(capacity: u64, max_bytes: u64, full_wait: Duration) -> Gated {
        let room = Room::Queued {
            high_events: high_water(capacity),
            high_bytes: high_water(max_bytes),
        };
        gate(room, full_wait)
    }

    fn done(attempt: Attempt) -> Result<Option<Reservation>, Refusal> {
        match attempt {
            Attempt::Done(result) => result,
            Attempt::Wait => panic!("expected a decision without waiting"),
        }
    }

    /// What the writer does after taking `n` events off the queue.
    fn take(stats: &PipelineStats, n: u64) {
        stats.queue_depth.fetch_sub(n, Ordering::Relaxed);
        stats.room.notify_one();
    }

    type Admitted = Result<Option<Reservation>, Refusal>;

    /// A call admitted on a task of its own, waiting if it must.
    fn spawn_admit(admission: &Admission) -> tokio::task::JoinHandle<Admitted> {
        let admission = admission.clone();
        tokio_util::task::TaskTracker::new().spawn(async move { admission.admit().await })
    }

    /// A call told to wait, waiting on a task of its own.
    fn spawn_wait(admission: &Admission) -> tokio::task::JoinHandle<Admitted> {
        let admission = admission.clone();
        tokio_util::task::TaskTracker::new().spawn(async move { admission.wait_for_room().await })
    }

    async fn until_waiting(stats: &PipelineStats, n: u64) {
        while stats.room_waiters.load(Ordering::Relaxed) < n {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn an_open_admission_lets_every_call_in_without_holding_room() {
        assert!(done(Admission::open().try_admit()).unwrap().is_none());
    }

    #[test]
    fn the_high_water_mark_leaves_a_quarter_for_calls_in_flight() {
        assert_eq!(high_water(10_000), 7_500);
        assert_eq!(high_water(64 * 1024 * 1024), 48 * 1024 * 1024);
        assert_eq!(high_water(1), 1);
    }

    #[test]
    fn a_call_is_refused_while_the_store_is_unhealthy() {
        let (admission, _, setter) = reserved(100, 1 << 30, LONG);
        setter.set(false);
        assert_eq!(
            done(admission.try_admit()).unwrap_err(),
            Refusal::StoreUnhealthy
        );
        setter.set(true);
        assert!(done(admission.try_admit()).unwrap().is_some());
    }

    #[test]
    fn reservations_hold_queue_room_until_dropped() {
        // Room for two calls' events; no waiting.
        let (admission, stats, _setter) =
            reserved(2 * EVENTS_PER_CALL as usize, 1 << 30, Duration::ZERO);
        let first = done(admission.try_admit()).unwrap();
        let second = done(admission.try_admit()).unwrap();
        assert_eq!(done(admission.try_admit()).unwrap_err(), Refusal::QueueFull);
        drop(first);
        let third = done(admission.try_admit()).unwrap();
        drop((second, third));
        assert_eq!(stats.reserved_events.load(Ordering::Relaxed), 0);
        assert_eq!(stats.reserved_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_reservation_grows_past_the_budget_and_new_calls_wait_until_it_is_released() {
        // Room for four calls' reservations at admission.
        let (admission, stats, _setter) = reserved(100, 4 * BYTES_PER_CALL, Duration::ZERO);
        let large = done(admission.try_admit()).unwrap().unwrap();
        let small = done(admission.try_admit()).unwrap().unwrap();
        // The large call's capture grows past what is left: never refused.
        large.growth().grew(3 * BYTES_PER_CALL);
        assert_eq!(large.bytes(), 4 * BYTES_PER_CALL);
        assert_eq!(
            stats.reserved_bytes.load(Ordering::Relaxed),
            5 * BYTES_PER_CALL
        );
        assert_eq!(
            done(admission.try_admit()).unwrap_err(),
            Refusal::QueueBytes
        );
        drop(large);
        let next = done(admission.try_admit()).unwrap();
        drop((small, next));
        assert_eq!(stats.reserved_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(stats.reserved_events.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn many_small_calls_held_open_leave_room_for_new_ones() {
        // The old rule reserved 64 KiB a call (twice a 1 MiB capture cap):
        // 16 calls filled 1 MiB.
        let (admission, _stats, _setter) = reserved(10_000, 4 << 20, Duration::ZERO);
        let open: Vec<_> = (0..200)
            .map(|_| done(admission.try_admit()).unwrap())
            .collect();
        assert!(done(admission.try_admit()).unwrap().is_some());
        drop(open);
    }

    #[test]
    fn without_a_wait_a_full_queue_refuses_calls_at_once_under_fail_closed() {
        let (admission, stats, _setter) = reserved(100, 1 << 30, Duration::ZERO);
        stats.queue_depth.store(97, Ordering::Relaxed);
        assert_eq!(done(admission.try_admit()).unwrap_err(), Refusal::QueueFull);
    }

    #[test]
    fn without_a_wait_a_spent_byte_budget_refuses_calls_at_once_under_fail_closed() {
        let (admission, stats, _setter) = reserved(100, 1024 * 1024, Duration::ZERO);
        stats
            .queue_bytes
            .store(1024 * 1024 - BYTES_PER_CALL + 1, Ordering::Relaxed);
        assert_eq!(
            done(admission.try_admit()).unwrap_err(),
            Refusal::QueueBytes
        );
        stats.queue_bytes.store(0, Ordering::Relaxed);
        assert!(done(admission.try_admit()).unwrap().is_some());
    }

    #[test]
    fn without_a_wait_a_full_queue_serves_calls_at_once_under_fail_open() {
        let (admission, stats, _setter) = queued(100, 1 << 30, Duration::ZERO);
        stats.queue_depth.store(100, Ordering::Relaxed);
        assert!(done(admission.try_admit()).unwrap().is_none());
        assert_eq!(stats.queue_waits.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_queue_with_room_admits_at_once() {
        let (admission, stats, _setter) = queued(100, 1 << 30, LONG);
        stats.queue_depth.store(74, Ordering::Relaxed);
        assert!(done(admission.try_admit()).unwrap().is_none());
        let (admission, _, _setter) = reserved(100, 1 << 30, LONG);
        assert!(done(admission.try_admit()).unwrap().is_some());
    }

    #[test]
    fn queued_events_or_bytes_at_the_high_water_mark_make_a_call_wait() {
        let (admission, stats, _setter) = queued(100, 1 << 20, LONG);
        stats.queue_depth.store(75, Ordering::Relaxed);
        assert!(matches!(admission.try_admit(), Attempt::Wait));
        stats.queue_depth.store(0, Ordering::Relaxed);
        stats.queue_bytes.store(3 << 18, Ordering::Relaxed);
        assert!(matches!(admission.try_admit(), Attempt::Wait));
    }

    #[test]
    fn records_being_built_count_as_coming_events() {
        let (admission, stats, _setter) = queued(100, 1 << 30, LONG);
        stats.queue_depth.store(50, Ordering::Relaxed);
        stats.records_building.store(12, Ordering::Relaxed);
        assert!(done(admission.try_admit()).unwrap().is_none());
        stats.records_building.store(13, Ordering::Relaxed);
        assert!(matches!(admission.try_admit(), Attempt::Wait));
    }

    #[test]
    fn records_being_built_count_at_the_average_queued_size_against_the_byte_mark() {
        // A mark of 3,000,000 bytes; 10 queued events of 100,000 bytes.
        let (admission, stats, _setter) = queued(1_000, 4_000_000, LONG);
        stats.queue_depth.store(10, Ordering::Relaxed);
        stats.queue_bytes.store(1_000_000, Ordering::Relaxed);
        stats.records_building.store(9, Ordering::Relaxed);
        assert!(done(admission.try_admit()).unwrap().is_none());
        stats.records_building.store(10, Ordering::Relaxed);
        assert!(matches!(admission.try_admit(), Attempt::Wait));
    }

    #[test]
    fn events_held_for_room_count_as_coming_at_their_own_size() {
        // Marks of 75 events and 3,000 bytes.
        let (admission, stats, _setter) = queued(100, 4_000, LONG);
        stats.held_events.store(74, Ordering::Relaxed);
        stats.held_bytes.store(2_999, Ordering::Relaxed);
        assert!(done(admission.try_admit()).unwrap().is_none());
        stats.held_events.store(75, Ordering::Relaxed);
        assert!(matches!(admission.try_admit(), Attempt::Wait));
        stats.held_events.store(1, Ordering::Relaxed);
        stats.held_bytes.store(3_000, Ordering::Relaxed);
        assert!(matches!(admission.try_admit(), Attempt::Wait));
    }

    #[test]
    fn long_held_calls_with_an_empty_queue_make_no_call_wait_under_fail_open() {
        // A thousand open streams admitted under fail_closed would hold this
        // much promised room; under fail_open only queued events count.
        let (admission, stats, _setter) = queued(1_000, 1 << 20, LONG);
        stats.reserved_events.store(4_000, Ordering::Relaxed);
        stats.reserved_bytes.store(64 << 20, Ordering::Relaxed);
        assert!(done(admission.try_admit()).unwrap().is_none());
    }

    #[test]
    fn an_unhealthy_store_makes_no_call_wait() {
        let (admission, stats, setter) = queued(100, 1 << 30, LONG);
        stats.queue_depth.store(100, Ordering::Relaxed);
        setter.set(false);
        assert!(done(admission.try_admit()).unwrap().is_none());
        let (admission, stats, setter) = reserved(100, 1 << 30, LONG);
        stats.queue_depth.store(100, Ordering::Relaxed);
        setter.set(false);
        assert_eq!(
            done(admission.try_admit()).unwrap_err(),
            Refusal::StoreUnhealthy
        );
    }

    #[tokio::test]
    async fn a_waiting_call_goes_on_when_the_writer_takes_events() {
        let (admission, stats, _setter) = queued(100, 1 << 30, LONG);
        stats.queue_depth.store(100, Ordering::Relaxed);
        let call = spawn_admit(&admission);
        until_waiting(&stats, 1).await;
        take(&stats, 50);
        assert!(call.await.unwrap().unwrap().is_none());
        assert_eq!(stats.queue_waits.load(Ordering::Relaxed), 1);
        assert_eq!(stats.queue_wait_timeouts.load(Ordering::Relaxed), 0);
        assert_eq!(stats.room_waiters.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn later_calls_queue_behind_a_waiting_one() {
        let (admission, stats, _setter) = queued(100, 1 << 30, LONG);
        stats.queue_depth.store(100, Ordering::Relaxed);
        let first = spawn_admit(&admission);
        until_waiting(&stats, 1).await;
        // Room, but someone waits: a new call does not jump the line.
        stats.queue_depth.store(0, Ordering::Relaxed);
        assert!(matches!(admission.try_admit(), Attempt::Wait));
        let second = spawn_wait(&admission);
        // One ring lets both through: the first passes the turn on.
        stats.room.notify_one();
        assert!(first.await.unwrap().unwrap().is_none());
        assert!(second.await.unwrap().unwrap().is_none());
        assert_eq!(stats.queue_wait_timeouts.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_waiting_call_under_fail_closed_is_admitted_when_a_reservation_is_released() {
        let (admission, stats, _setter) = reserved(EVENTS_PER_CALL as usize, 1 << 30, LONG);
        let held = done(admission.try_admit()).unwrap();
        assert!(matches!(admission.try_admit(), Attempt::Wait));
        let call = spawn_wait(&admission);
        until_waiting(&stats, 1).await;
        drop(held);
        let admitted = call.await.unwrap().unwrap();
        assert!(admitted.is_some(), "the call holds the room it waited for");
        assert_eq!(
            stats.reserved_events.load(Ordering::Relaxed),
            EVENTS_PER_CALL
        );
        assert_eq!(stats.queue_wait_timeouts.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn at_the_bound_fail_open_serves_the_call() {
        let (admission, stats, _setter) = queued(100, 1 << 30, SHORT);
        stats.queue_depth.store(100, Ordering::Relaxed);
        assert!(admission.admit().await.unwrap().is_none());
        assert_eq!(stats.queue_waits.load(Ordering::Relaxed), 1);
        assert_eq!(stats.queue_wait_timeouts.load(Ordering::Relaxed), 1);
        assert!(stats.queue_wait_micros.load(Ordering::Relaxed) > 0);
        assert_eq!(stats.room_waiters.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn at_the_bound_fail_closed_refuses_the_call() {
        let (admission, stats, _setter) = reserved(100, 1 << 30, SHORT);
        stats.queue_depth.store(100, Ordering::Relaxed);
        assert_eq!(admission.admit().await.unwrap_err(), Refusal::QueueFull);
        assert_eq!(stats.queue_wait_timeouts.load(Ordering::Relaxed), 1);
        assert_eq!(stats.reserved_events.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_store_turning_unhealthy_ends_the_wait_as_an_unhealthy_store_does() {
        let (admission, stats, setter) = reserved(100, 1 << 30, LONG);
        stats.queue_depth.store(100, Ordering::Relaxed);
        let call = spawn_admit(&admission);
        until_waiting(&stats, 1).await;
        setter.set(false);
        assert_eq!(call.await.unwrap().unwrap_err(), Refusal::StoreUnhealthy);
    }
}

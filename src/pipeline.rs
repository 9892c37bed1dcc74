//! From captured calls to stored events, off the request path.
//!
//! Producers hold a [`Handle`] and *offer* events: a full queue drops the
//! event and counts it, so an offer never waits. New calls are held back
//! for a bounded time while the queue is nearly full ([`admission`]), and
//! a call record whose events find no room waits for it on its own task
//! for as long ([`held`]), so a store slower than the traffic slows the
//! calls down instead of losing their events; what happens to calls while the store is broken is
//! `audit.on_store_failure`'s choice, enforced by the proxy through
//! [`health::StoreHealth`] and [`admission`]. One writer task
//! ([`writer`]) is the only place `seq` and the hash chain are stamped, so
//! the chain is a true record of write order.
//!
//! The queue is bounded twice: by events (`queue.capacity`) and by the
//! bytes those events hold (`queue.max_bytes`), so a stalled store with
//! large bodies cannot take the process's memory. Whatever is lost (an
//! offer over either bound, a batch the store never took, a record whose
//! building failed) is counted and, once the store takes writes again,
//! recorded as an ERROR event; what could not be recorded before a stop
//! is carried to the next start in a small side file ([`losses`]).

pub mod admission;
pub mod builder;
pub mod checkpoint;
mod drop_log;
pub mod health;
pub mod held;
pub mod losses;
pub mod maintenance;
pub mod record;
pub mod reservation;
pub mod shipper;
pub mod unclean;
pub mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot, Notify};

use crate::event::{AuditEvent, Level, NewEvent};

use drop_log::{DropLog, DropReason, DROP_LOG_INTERVAL};

pub use admission::{Admission, Attempt, Refusal};
pub use health::StoreHealth;
pub use reservation::Reservation;
pub use writer::{spawn_writer, WriterConfig};

/// Bytes an event is counted for in the queue's byte budget besides its
/// metadata and message: its id, type, times and the channel's own slot.
const EVENT_OVERHEAD_BYTES: u64 = 256;

/// What the writer receives.
pub(crate) enum WriterMsg {
    Event(NewEvent),
    /// An event whose producer waits for the stored result.
    EventAck(NewEvent, oneshot::Sender<Result<AuditEvent, SubmitError>>),
    /// Answered once everything queued before it has been written.
    Flush(oneshot::Sender<()>),
    /// As `Flush`, with a checkpoint written after everything queued
    /// before it: a stop checkpoint (a clean stop) or one over the head.
    Checkpoint {
        stop: bool,
        done: oneshot::Sender<()>,
    },
    /// Closes the queue: later offers are refused (and counted), what is
    /// queued is written, the store is closed, then this is answered.
    Close(oneshot::Sender<()>),
}

/// Counters shared by the handle and the writer.
#[derive(Debug)]
pub struct PipelineStats {
    pub offered: AtomicU64,
    /// Offered but not queued: the queue was full or closed, or its byte
    /// budget spent.
    pub dropped: AtomicU64,
    /// Of `dropped`: over `queue.max_bytes`.
    pub dropped_over_budget: AtomicU64,
    /// Of `dropped`: offered after the queue closed at shutdown.
    pub dropped_after_close: AtomicU64,
    /// Below `audit.log_level`, or auditing disabled.
    pub filtered: AtomicU64,
    pub written: AtomicU64,
    pub write_failures: AtomicU64,
    /// Events in batches the writer gave up on (a store error that is not
    /// retriable, or retries running out at shutdown).
    pub lost: AtomicU64,
    /// Call records whose building failed (a panic on the builder thread);
    /// each is one call's REQUEST or RESPONSE and its companions.
    pub build_failures: AtomicU64,
    /// Losses (of `dropped`, `lost` and `build_failures`) already recorded
    /// as an ERROR event in the store.
    pub reported: AtomicU64,
    pub queue_depth: AtomicU64,
    /// Bytes the queued events hold (see `queue.max_bytes`).
    pub queue_bytes: AtomicU64,
    /// Events and bytes held back for calls admitted under `fail_closed`.
    pub reserved_events: AtomicU64,
    pub reserved_bytes: AtomicU64,
    /// Calls held at admission while the queue was full (see
    /// [`admission`]), the microseconds they were held in all, and how
    /// many of them reached `queue.full_wait_ms`.
    pub queue_waits: AtomicU64,
    pub queue_wait_micros: AtomicU64,
    pub queue_wait_timeouts: AtomicU64,
    /// Record-building jobs handed to the builder and not yet run: each
    /// will offer a call's events.
    pub(crate) records_building: AtomicU64,
    /// Calls held at admission now.
    pub(crate) room_waiters: AtomicU64,
    /// Events that found no room in the queue and were held for it (see
    /// [`held`]), and of them, those held now and their bytes.
    pub events_held: AtomicU64,
    pub(crate) held_events: AtomicU64,
    pub(crate) held_bytes: AtomicU64,
    /// Rung (to every held record) by the writer after each batch it takes.
    pub(crate) held_room: Notify,
    /// Rung when the queue may have room again: by the writer after each
    /// batch it takes, and as `fail_closed` reservations are released.
    pub(crate) room: Notify,
    /// Seconds per batch append.
    pub write_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for PipelineStats {
    fn default() -> Self {
        Self {
            offered: AtomicU64::default(),
            dropped: AtomicU64::default(),
            dropped_over_budget: AtomicU64::default(),
            dropped_after_close: AtomicU64::default(),
            filtered: AtomicU64::default(),
            written: AtomicU64::default(),
            write_failures: AtomicU64::default(),
            lost: AtomicU64::default(),
            build_failures: AtomicU64::default(),
            reported: AtomicU64::default(),
            queue_depth: AtomicU64::default(),
            queue_bytes: AtomicU64::default(),
            reserved_events: AtomicU64::default(),
            reserved_bytes: AtomicU64::default(),
            queue_waits: AtomicU64::default(),
            queue_wait_micros: AtomicU64::default(),
            queue_wait_timeouts: AtomicU64::default(),
            records_building: AtomicU64::default(),
            room_waiters: AtomicU64::default(),
            room: Notify::new(),
            events_held: AtomicU64::default(),
            held_events: AtomicU64::default(),
            held_bytes: AtomicU64::default(),
            held_room: Notify::new(),
            // 100 µs to ~3 s.
            write_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
        }
    }
}

// === impl PipelineStats ===

impl PipelineStats {
    /// Every loss counted so far: dropped offers, abandoned batches and
    /// failed record builds.
    pub fn losses(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
            + self.lost.load(Ordering::Relaxed)
            + self.build_failures.load(Ordering::Relaxed)
    }

    /// Losses not yet recorded in the store.
    pub fn unreported_losses(&self) -> u64 {
        self.losses()
            .saturating_sub(self.reported.load(Ordering::Relaxed))
    }
}

/// Why a waited-for event was not stored.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("auditing is disabled")]
    Disabled,
    #[error("the event's level is below audit.log_level")]
    BelowLevel,
    #[error("the event queue is full")]
    QueueFull,
    #[error("the event queue's byte budget is spent")]
    OverBudget,
    #[error("the audit writer has stopped")]
    Closed,
    #[error("the store refused the event: {0}")]
    Store(String),
}

/// The producers' side of the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<WriterMsg>,
    min_level: Level,
    enabled: bool,
    stats: Arc<PipelineStats>,
    /// Where the proxy runs, added to every event's metadata.
    source: Option<Arc<serde_json::Value>>,
    /// `queue.max_bytes`.
    max_bytes: u64,
    /// Wakes the writer for a message someone waits for (a flush, an ack,
    /// a close) and once every handle is gone: a writer gathering a batch
    /// does not read the queue, so plain events wake nobody.
    waited_for: Arc<WriterBell>,
    /// Rate-limits the WARN line about dropped offers.
    drop_log: Arc<DropLog>,
}

/// Rings the writer; shared by the clones of a [`Handle`], the last one
/// dropped rings it too, so a writer gathering a batch sees the queue
/// close.
struct WriterBell(Arc<Notify>);

impl WriterBell {
    fn ring(&self) {
        self.0.notify_one();
    }
}

impl Drop for WriterBell {
    fn drop(&mut self) {
        self.ring();
    }
}

/// Why an offer was not queued.
#[derive(Clone, Copy)]
enum NotQueued {
    OverBudget,
    Full,
    Closed,
}

impl NotQueued {
    fn is_closed(&self) -> bool {
        matches!(self, NotQueued::Closed)
    }

    fn drop_reason(&self) -> DropReason {
        match self {
            NotQueued::OverBudget => DropReason::OverBudget,
            NotQueued::Full => DropReason::QueueFull,
            NotQueued::Closed => DropReason::Closed,
        }
    }
}

// === impl Handle ===

impl Handle {
    pub(crate) fn new(
        tx: mpsc::Sender<WriterMsg>,
        min_level: Level,
        enabled: bool,
        stats: Arc<PipelineStats>,
        source: Option<serde_json::Value>,
        max_bytes: u64,
        waited_for: Arc<Notify>,
    ) -> Self {
        Self {
            tx,
            min_level,
            enabled,
            stats,
            source: source.map(Arc::new),
            max_bytes,
            waited_for: Arc::new(WriterBell(waited_for)),
            drop_log: Arc::new(DropLog::new(DROP_LOG_INTERVAL)),
        }
    }

    /// Where this process runs (`instance.*`: pod, namespace, node), as
    /// stamped on each event's `metadata.source`.
    pub fn source(&self) -> Option<&serde_json::Value> {
        self.source.as_deref()
    }

    /// Adds the source here, on the producer's thread, so the single
    /// writer only hashes and appends.
    fn prepare(&self, event: &mut NewEvent) {
        stamp_source(event, self.source.as_deref());
    }

    /// Queues `event` without waiting. Returns false when it was filtered
    /// out or dropped (a full queue, a spent byte budget or a closed queue
    /// is counted in [`PipelineStats::dropped`]).
    pub fn offer(&self, event: NewEvent) -> bool {
        let Some(event) = self.prepared(event) else {
            return false;
        };
        self.enqueue(event, WriterMsg::Event, None).is_ok()
    }

    /// `event` ready to be queued, or `None` (counted as filtered) when
    /// its level is not recorded.
    fn prepared(&self, mut event: NewEvent) -> Option<NewEvent> {
        if !self.accepts(event.level) {
            self.stats.filtered.fetch_add(1, Ordering::Relaxed);
            return None;
        }
        self.prepare(&mut event);
        Some(event)
    }

    /// Queues `event` and waits until it is stored, returning it sealed.
    /// For callers that must answer with the stored event (the admin API,
    /// and the request path under `audit.durability = "strict"`).
    pub async fn submit(&self, event: NewEvent) -> Result<AuditEvent, SubmitError> {
        self.submit_within(event, None).await
    }

    /// As [`submit`](Self::submit), for an event of a call admitted under
    /// `fail_closed`: queued within the call's `reservation` (see
    /// [`reservation`]).
    pub async fn submit_within(
        &self,
        mut event: NewEvent,
        reservation: Option<&Reservation>,
    ) -> Result<AuditEvent, SubmitError> {
        if !self.enabled {
            return Err(SubmitError::Disabled);
        }
        if event.level < self.min_level {
            return Err(SubmitError::BelowLevel);
        }
        self.prepare(&mut event);
        let (ack_tx, ack_rx) = oneshot::channel();
        match self.enqueue(event, |e| WriterMsg::EventAck(e, ack_tx), reservation) {
            Ok(()) => {
                self.waited_for.ring();
                ack_rx.await.unwrap_or(Err(SubmitError::Closed))
            }
            Err(NotQueued::OverBudget) => Err(SubmitError::OverBudget),
            Err(NotQueued::Full) => Err(SubmitError::QueueFull),
            Err(NotQueued::Closed) => Err(SubmitError::Closed),
        }
    }

    /// Counts a prepared event into the queue's bounds and sends it; drops
    /// and counts it when it does not fit.
    fn enqueue(
        &self,
        event: NewEvent,
        msg: impl FnOnce(NewEvent) -> WriterMsg,
        within: Option<&Reservation>,
    ) -> Result<(), NotQueued> {
        self.stats.offered.fetch_add(1, Ordering::Relaxed);
        self.queue(event, msg, within).map_err(|(refused, _)| {
            self.count_drop(refused);
            refused
        })
    }

    /// Counts a prepared event into the queue's bounds and sends it as
    /// `msg`; gives it back, counted nowhere, when it does not fit. An
    /// event `within` its call's reservation takes its bytes from it and is
    /// queued even past `queue.max_bytes`: that room was promised.
    #[expect(
        clippy::result_large_err,
        reason = "a refused event comes back by value, to be held without an allocation"
    )]
    fn queue(
        &self,
        event: NewEvent,
        msg: impl FnOnce(NewEvent) -> WriterMsg,
        within: Option<&Reservation>,
    ) -> Result<(), (NotQueued, NewEvent)> {
        let bytes = queued_bytes(&event);
        // Counted before sending: the writer may take the event (and count
        // it out) before the send even returns. Counted in before taken
        // from the reservation, so the room never looks larger than it is.
        let before = self.stats.queue_bytes.fetch_add(bytes, Ordering::Relaxed);
        let promised = within.filter(|r| r.take(bytes));
        let refused = if promised.is_none() && before + bytes > self.max_bytes {
            NotQueued::OverBudget
        } else {
            self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
            match self.tx.try_reserve() {
                Ok(permit) => {
                    permit.send(msg(event));
                    return Ok(());
                }
                Err(error) => {
                    self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                    match error {
                        mpsc::error::TrySendError::Full(()) => NotQueued::Full,
                        mpsc::error::TrySendError::Closed(()) => NotQueued::Closed,
                    }
                }
            }
        };
        if let Some(reservation) = promised {
            reservation.give_back(bytes);
        }
        self.stats.queue_bytes.fetch_sub(bytes, Ordering::Relaxed);
        Err((refused, event))
    }

    /// Counts an offered event that was not queued as dropped.
    fn count_drop(&self, refused: NotQueued) {
        let dropped = self.stats.dropped.fetch_add(1, Ordering::Relaxed) + 1;
        match refused {
            NotQueued::OverBudget => {
                self.stats
                    .dropped_over_budget
                    .fetch_add(1, Ordering::Relaxed);
            }
            NotQueued::Full => {}
            NotQueued::Closed => {
                self.stats
                    .dropped_after_close
                    .fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(counts) = self
            .drop_log
            .count(refused.drop_reason(), tokio::time::Instant::now())
        {
            drop_log::log_drops(counts, dropped);
        }
    }

    /// Waits until every event queued before this call has been written
    /// (or the writer has stopped).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Flush(tx)).await.is_ok() {
            self.waited_for.ring();
            let _ = rx.await;
        }
    }

    /// As [`flush`](Self::flush), and then seals the record with a stop
    /// checkpoint when checkpoints are configured: a clean stop's last word.
    pub async fn flush_and_seal(&self) {
        self.checkpoint(true).await;
    }

    /// As [`flush`](Self::flush), and then has a checkpoint cover what was
    /// written (when checkpoints are configured), e.g. before an export.
    pub async fn flush_and_checkpoint(&self) {
        self.checkpoint(false).await;
    }

    async fn checkpoint(&self, stop: bool) {
        let (done, rx) = oneshot::channel();
        if self
            .tx
            .send(WriterMsg::Checkpoint { stop, done })
            .await
            .is_ok()
        {
            self.waited_for.ring();
            let _ = rx.await;
        }
    }

    /// Closes the queue for good: offers after this are refused and counted
    /// in [`PipelineStats::dropped_after_close`]. Returns once everything
    /// queued before has been written (or given up) and the store closed.
    pub async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Close(tx)).await.is_ok() {
            self.waited_for.ring();
            let _ = rx.await;
        }
        // Drops since the last line would otherwise go unlogged.
        drop_log::log_drops(
            self.drop_log.take(),
            self.stats.dropped.load(Ordering::Relaxed),
        );
    }

    /// Whether an event at `level` would be stored at all.
    pub fn accepts(&self, level: Level) -> bool {
        self.enabled && level >= self.min_level
    }

    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }
}

/// A handle on a queue of `capacity` events and `max_bytes` with no
/// writer behind it: tests read what it queues from the receiver.
#[cfg(test)]
pub(crate) fn test_handle(capacity: usize, max_bytes: u64) -> (Handle, mpsc::Receiver<WriterMsg>) {
    let (tx, rx) = mpsc::channel(capacity);
    let handle = Handle::new(
        tx,
        Level::Debug,
        true,
        Arc::new(PipelineStats::default()),
        None,
        max_bytes,
        Arc::new(Notify::new()),
    );
    (handle, rx)
}

/// What a prepared event counts for in the queue's byte budget.
pub(crate) fn queued_bytes(event: &NewEvent) -> u64 {
    (event.metadata.len() + event.message.len()) as u64 + EVENT_OVERHEAD_BYTES
}

/// Adds `source` to an object's metadata unless the producer set one.
pub(crate) fn stamp_source(event: &mut NewEvent, source: Option<&serde_json::Value>) {
    if let Some(source) = source {
        event.metadata = event.metadata.with_field_if_absent("source", source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use std::io::Write;
    use std::sync::Mutex;

    /// Log output kept in memory.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn handle(capacity: usize, max_bytes: u64) -> (Handle, mpsc::Receiver<WriterMsg>) {
        let (handle, rx) = test_handle(capacity, max_bytes);
        // An interval no test outlasts, so the lines do not depend on speed.
        let handle = Handle {
            drop_log: Arc::new(DropLog::new(std::time::Duration::from_secs(3_600))),
            ..handle
        };
        (handle, rx)
    }

    /// Every line about dropped events in `log`, as JSON.
    /// A JSON log subscriber whose lines land in the returned buffer.
    fn json_log() -> (Captured, impl tracing::Subscriber + Send + Sync) {
        let log = Captured::default();
        let writer = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .json()
            .with_writer(move || writer.clone())
            .finish();
        (log, subscriber)
    }

    fn drop_lines(log: &Captured) -> Vec<serde_json::Value> {
        let text = String::from_utf8(log.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|line| line["fields"]["dropped"].is_u64())
            .collect()
    }

    #[test]
    fn many_drops_make_few_log_lines_and_every_drop_is_counted() {
        let (log, subscriber) = json_log();
        let (handle, rx) = handle(1, u64::MAX);
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..1_000 {
                let queued = handle.offer(NewEvent::new(EventType::Custom, format!("e{i}")));
                assert_eq!(queued, i == 0, "only the first fits the queue");
            }
        });
        let stats = handle.stats();
        assert_eq!(stats.offered.load(Ordering::Relaxed), 1_000);
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 999);
        assert_eq!(stats.dropped_over_budget.load(Ordering::Relaxed), 0);
        let lines = drop_lines(&log);
        // The first drop at once; the other 998 wait for the next interval.
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["level"], "WARN");
        assert_eq!(lines[0]["fields"]["dropped"], 1);
        assert_eq!(lines[0]["fields"]["reason"], "queue_full");
        assert_eq!(lines[0]["fields"]["dropped_total"], 1);
        let pending = handle.drop_log.take();
        let logged: u64 = lines
            .iter()
            .map(|line| line["fields"]["dropped"].as_u64().unwrap())
            .sum();
        assert_eq!(logged + pending.total(), 999);
        assert_eq!(pending.queue_full, pending.total());
        drop(rx);
    }

    #[test]
    fn an_event_within_its_calls_reservation_is_queued_past_the_byte_budget() {
        let (handle, mut rx) = handle(16, 1024);
        let stats = handle.stats().clone();
        let event = || NewEvent::new(EventType::Custom, "x".repeat(2_000));
        let bytes = queued_bytes(&event());
        // A reservation grown to hold one such event, not two.
        let reservation = Reservation::new(&stats, 4, bytes + 10);
        let within = Some(&reservation);
        assert!(handle.queue(event(), WriterMsg::Event, within).is_ok());
        assert_eq!(reservation.bytes(), 10);
        assert_eq!(stats.reserved_bytes.load(Ordering::Relaxed), 10);
        assert_eq!(stats.queue_bytes.load(Ordering::Relaxed), bytes);
        // Past both the budget and the reservation: refused, and the
        // reservation keeps what it had.
        let (refused, _) = handle.queue(event(), WriterMsg::Event, within).unwrap_err();
        assert!(matches!(refused, NotQueued::OverBudget));
        assert_eq!(reservation.bytes(), 10);
        assert_eq!(stats.queue_bytes.load(Ordering::Relaxed), bytes);
        // Without one, over the budget.
        assert!(!handle.offer(event()));
        assert!(matches!(rx.try_recv(), Ok(WriterMsg::Event(_))));
        drop(reservation);
        assert_eq!(stats.reserved_bytes.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn a_refused_event_gives_back_what_it_took_from_its_reservation() {
        // A queue with no slot left.
        let (handle, _rx) = handle(1, u64::MAX);
        assert!(handle.offer(NewEvent::new(EventType::Custom, "first")));
        let stats = handle.stats().clone();
        let reservation = Reservation::new(&stats, 0, 10_000);
        let (refused, _) = handle
            .queue(
                NewEvent::new(EventType::Custom, "second"),
                WriterMsg::Event,
                Some(&reservation),
            )
            .unwrap_err();
        assert!(matches!(refused, NotQueued::Full));
        assert_eq!(reservation.bytes(), 10_000);
        assert_eq!(stats.reserved_bytes.load(Ordering::Relaxed), 10_000);
    }

    #[test]
    fn drops_over_the_byte_budget_are_counted_and_named() {
        let (log, subscriber) = json_log();
        // Room for no event at all.
        let (handle, _rx) = handle(16, 1);
        tracing::subscriber::with_default(subscriber, || {
            for _ in 0..50 {
                assert!(!handle.offer(NewEvent::new(EventType::Custom, "x")));
            }
        });
        let stats = handle.stats();
        assert_eq!(stats.dropped.load(Ordering::Relaxed), 50);
        assert_eq!(stats.dropped_over_budget.load(Ordering::Relaxed), 50);
        let lines = drop_lines(&log);
        assert_eq!(lines.len(), 1, "{lines:?}");
        assert_eq!(lines[0]["fields"]["reason"], "queue_bytes");
        assert_eq!(lines[0]["fields"]["queue_bytes"], 1);
        let logged: u64 = lines
            .iter()
            .map(|line| line["fields"]["dropped"].as_u64().unwrap())
            .sum();
        assert_eq!(logged + handle.drop_log.take().total(), 50);
    }
}

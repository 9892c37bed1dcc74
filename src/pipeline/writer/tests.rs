//! The writer against a store whose writes can be held or made to fail, so
//! a batch is sealed while the one before it is still being written.

use std::collections::VecDeque;
use std::sync::atomic::AtomicUsize;
use std::sync::Mutex;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::Semaphore;

use super::*;
use crate::event::chain::ChainVerifier;
use crate::event::EventType;
use crate::store::memory::MemoryStore;
use crate::store::{
    AuditStore, ChainHead, EventFilter, EventPage, EventQuery, EventStream, PurgeReport, StoreStats,
};

/// What the next write does before (or instead of) reaching the events.
#[derive(Debug, Clone, Copy)]
enum Fault {
    /// Fails, as a locked or briefly missing store does.
    Unavailable,
    /// Fails for good.
    Corrupt,
    /// Another process appends one event first, so this batch's `seq` is
    /// taken.
    Intrude,
}

/// A memory store whose writes wait on `gate` and follow `script`.
struct ScriptedStore {
    inner: MemoryStore,
    script: Mutex<VecDeque<Option<Fault>>>,
    gate: Semaphore,
    /// Writes begun (held ones included).
    calls: AtomicUsize,
    /// Reads of the head that fail before they answer again.
    head_failures: AtomicUsize,
    /// Times the writer closed the store.
    closed: AtomicUsize,
}

impl ScriptedStore {
    fn new(script: &[Option<Fault>], open: bool) -> Arc<Self> {
        Arc::new(Self {
            inner: MemoryStore::new(10_000),
            script: Mutex::new(script.iter().copied().collect()),
            gate: Semaphore::new(if open { Semaphore::MAX_PERMITS } else { 0 }),
            calls: AtomicUsize::new(0),
            head_failures: AtomicUsize::new(0),
            closed: AtomicUsize::new(0),
        })
    }

    async fn events(&self) -> Vec<AuditEvent> {
        self.inner
            .export(EventFilter::default())
            .map(|e| e.unwrap())
            .collect()
            .await
    }
}

#[async_trait]
impl AuditStore for ScriptedStore {
    fn kind(&self) -> &'static str {
        "scripted"
    }

    async fn append_batch(&self, events: Batch) -> Result<(), StoreError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        self.gate.acquire().await.unwrap().forget();
        let fault = self.script.lock().unwrap().pop_front().flatten();
        let head = self.inner.head().await?;
        match fault {
            Some(Fault::Unavailable) => return Err(StoreError::Unavailable("locked".into())),
            Some(Fault::Corrupt) => return Err(StoreError::Corrupt("bad page".into())),
            Some(Fault::Intrude) => {
                let (seq, prev) = head.map_or((0, GENESIS_HASH.to_owned()), |h| (h.seq, h.hash));
                let foreign = NewEvent::new(EventType::System, "purge").seal(seq + 1, &prev);
                self.inner.append_batch(vec![foreign].into()).await?;
            }
            None => {}
        }
        // What the SQLite store refuses: a `seq` already taken. (A gap
        // would pass, as it does there.)
        let head = self.inner.head().await?.map_or(0, |h| h.seq);
        if events.first().is_some_and(|e| e.seq <= head) {
            return Err(StoreError::Conflict(format!("seq {head} is taken")));
        }
        self.inner.append_batch(events).await
    }

    async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
        let failing = self
            .head_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if failing {
            return Err(StoreError::Unavailable("cannot read".into()));
        }
        self.inner.head().await
    }

    async fn close(&self) -> Result<(), StoreError> {
        self.closed.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }

    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.inner.query(query).await
    }

    async fn get(&self, id: &str) -> Result<Option<AuditEvent>, StoreError> {
        self.inner.get(id).await
    }

    fn export(&self, filter: EventFilter) -> EventStream {
        self.inner.export(filter)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }

    async fn health(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn purge_before(&self, before: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        self.inner.purge_before(before).await
    }

    async fn enforce_max_bytes(&self, max: u64) -> Result<PurgeReport, StoreError> {
        self.inner.enforce_max_bytes(max).await
    }
}

fn config() -> WriterConfig {
    WriterConfig::for_tests(1_000, 100)
}

fn event(i: usize) -> NewEvent {
    NewEvent::new(EventType::Request, format!("call {i}"))
}

/// Every stored event in one unbroken chain from the genesis, seq 1, 2, …
fn assert_one_chain(events: &[AuditEvent]) {
    let mut verifier = ChainVerifier::new();
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "seq of event {i}");
        verifier.check(e).unwrap();
    }
    assert_eq!(
        events.first().map(|e| e.prev_hash.as_str()),
        Some(GENESIS_HASH)
    );
}

/// Offers `first`, waits until its write has reached the (closed) store,
/// offers `second` (sealed while the first write is held), then opens the
/// store and waits for both. Returns the submit results of the first
/// batch's events.
async fn two_batches(
    store: &Arc<ScriptedStore>,
    first: usize,
    second: usize,
) -> (Handle, Vec<Result<AuditEvent, SubmitError>>) {
    let tracker = TaskTracker::new();
    let (handle, _health) = spawn_writer(store.clone(), config(), &tracker)
        .await
        .unwrap();
    let mut acks = Vec::new();
    for i in 0..first {
        let handle = handle.clone();
        acks.push(tracker.spawn(async move { handle.submit(event(i)).await }));
    }
    while store.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    for i in 0..second {
        assert!(handle.offer(event(first + i)));
    }
    // The second batch is sealed while the first write is held.
    while handle.stats().queue_depth.load(Ordering::Relaxed) > 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    store.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    handle.flush().await;
    let mut results = Vec::new();
    for ack in acks {
        results.push(ack.await.unwrap());
    }
    (handle, results)
}

#[tokio::test]
async fn a_batch_sealed_during_a_write_follows_it_in_the_chain() {
    let store = ScriptedStore::new(&[], false);
    let (handle, acks) = two_batches(&store, 3, 5).await;
    assert!(acks.iter().all(Result::is_ok));
    let events = store.events().await;
    assert_eq!(events.len(), 8);
    assert_one_chain(&events);
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        &messages[3..],
        ["call 3", "call 4", "call 5", "call 6", "call 7"]
    );
    assert_eq!(handle.stats().written.load(Ordering::Relaxed), 8);
    assert_eq!(store.calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_unavailable_store_is_retried_until_the_batch_lands_once() {
    let store = ScriptedStore::new(&[Some(Fault::Unavailable), Some(Fault::Unavailable)], false);
    let (handle, acks) = two_batches(&store, 2, 2).await;
    assert!(acks.iter().all(Result::is_ok));
    let events = store.events().await;
    assert_eq!(events.len(), 4);
    assert_one_chain(&events);
    let stats = handle.stats();
    assert_eq!(stats.write_failures.load(Ordering::Relaxed), 2);
    assert_eq!(stats.written.load(Ordering::Relaxed), 4);
    assert_eq!(stats.lost.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn an_abandoned_batch_is_counted_lost_and_the_next_one_takes_its_place() {
    let store = ScriptedStore::new(&[Some(Fault::Corrupt)], false);
    let (handle, acks) = two_batches(&store, 2, 3).await;
    assert!(acks
        .iter()
        .all(|a| matches!(a, Err(SubmitError::Store(m)) if m.contains("bad page"))));
    // The next write, with the store healthy again, records the loss.
    assert!(handle.offer(event(5)));
    handle.flush().await;
    let events = store.events().await;
    let calls: Vec<&str> = events
        .iter()
        .filter(|e| e.event_type == EventType::Request)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(calls, ["call 2", "call 3", "call 4", "call 5"]);
    assert_one_chain(&events);
    let lost: Vec<&AuditEvent> = events
        .iter()
        .filter(|e| e.event_type == EventType::Error)
        .collect();
    assert_eq!(lost.len(), 1);
    assert_eq!(
        lost[0].message,
        "2 audit events sealed as seq 1-2 could not be stored"
    );
    assert_eq!(lost[0].metadata.field("error_type"), "events_lost");
    assert_eq!(lost[0].metadata.field("details")["first_seq"], 1);
    assert_eq!(lost[0].metadata.field("details")["last_seq"], 2);
    let stats = handle.stats();
    assert_eq!(stats.lost.load(Ordering::Relaxed), 2);
    assert_eq!(stats.unreported_losses(), 0, "the loss is on record");
}

#[tokio::test]
async fn a_concurrent_append_reseals_the_batch_and_the_one_behind_it() {
    let store = ScriptedStore::new(&[Some(Fault::Intrude)], false);
    let (handle, acks) = two_batches(&store, 2, 3).await;
    let stored: Vec<i64> = acks.iter().map(|a| a.as_ref().unwrap().seq).collect();
    assert_eq!(
        stored,
        [2, 3],
        "acks carry the seq the events were stored at"
    );
    let events = store.events().await;
    let messages: Vec<&str> = events.iter().map(|e| e.message.as_str()).collect();
    assert_eq!(
        messages,
        ["purge", "call 0", "call 1", "call 2", "call 3", "call 4"]
    );
    assert_one_chain(&events);
    assert_eq!(handle.stats().lost.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn a_flush_waits_for_the_write_in_progress() {
    let store = ScriptedStore::new(&[], false);
    let (handle, _health) = spawn_writer(store.clone(), config(), &TaskTracker::new())
        .await
        .unwrap();
    assert!(handle.offer(event(0)));
    while store.calls.load(Ordering::SeqCst) == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let flushed = tokio::time::timeout(Duration::from_millis(100), handle.flush()).await;
    assert!(
        flushed.is_err(),
        "flush answered before the held write landed"
    );
    store.gate.add_permits(1);
    handle.flush().await;
    assert_eq!(store.events().await.len(), 1);
}

/// A writer whose batches hold at most two of [`event`]'s events by bytes
/// (and 100 by count), whose first write is held, and which has been
/// offered six more events meanwhile.
async fn byte_bounded_writer_behind_a_held_write() -> (Arc<ScriptedStore>, Handle) {
    let store = ScriptedStore::new(&[], false);
    let bytes = crate::pipeline::queued_bytes(&event(0));
    let cfg = WriterConfig {
        queue_max_bytes: BATCH_SHARES_OF_QUEUE * (2 * bytes + bytes / 2),
        ..config()
    };
    let (handle, _health) = spawn_writer(store.clone(), cfg, &TaskTracker::new())
        .await
        .unwrap();
    assert!(handle.offer(event(0)));
    wait_for_writes(&store, 1).await;
    for i in 1..=6 {
        assert!(handle.offer(event(i)));
    }
    (store, handle)
}

#[tokio::test]
async fn a_batch_takes_at_most_its_share_of_the_queues_bytes() {
    let (store, handle) = byte_bounded_writer_behind_a_held_write().await;
    store.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    handle.flush().await;
    let events = store.events().await;
    assert_eq!(events.len(), 7);
    assert_one_chain(&events);
    // The first event alone, then six in writes of two at most.
    assert!(store.calls.load(Ordering::SeqCst) >= 4);
}

#[tokio::test]
async fn closing_writes_what_one_batch_could_not_take() {
    let (store, handle) = byte_bounded_writer_behind_a_held_write().await;
    let closing = {
        let handle = handle.clone();
        TaskTracker::new().spawn(async move { handle.close().await })
    };
    store.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    closing.await.unwrap();
    let events = store.events().await;
    assert_eq!(events.len(), 7);
    assert_one_chain(&events);
    assert_eq!(handle.stats().dropped.load(Ordering::Relaxed), 0);
}

/// A writer whose writes start at most every `interval`.
async fn spaced_writer(store: &Arc<ScriptedStore>, interval: Duration) -> Handle {
    let cfg = WriterConfig {
        commit_interval: interval,
        ..config()
    };
    let (handle, _health) = spawn_writer(store.clone(), cfg, &TaskTracker::new())
        .await
        .unwrap();
    handle
}

/// Waits (5 s at most) until the store has begun `writes` writes.
async fn wait_for_writes(store: &ScriptedStore, writes: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while store.calls.load(Ordering::SeqCst) < writes && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(store.calls.load(Ordering::SeqCst), writes);
}

/// A writer spaced by `interval` that has written one event (at once, as
/// an idle writer does) and then been offered `more`.
async fn written_once_then_offered(
    interval: Duration,
    more: usize,
) -> (Arc<ScriptedStore>, Handle) {
    let store = ScriptedStore::new(&[], true);
    let handle = spaced_writer(&store, interval).await;
    assert!(handle.offer(event(0)));
    wait_for_writes(&store, 1).await;
    for i in 1..=more {
        assert!(handle.offer(event(i)));
    }
    (store, handle)
}

/// Flushes (failing with `why` after 5 s) and checks that the first event
/// and the five offered after it landed in two writes, as one chain.
async fn flush_and_expect_six_in_two_writes(store: &ScriptedStore, handle: &Handle, why: &str) {
    tokio::time::timeout(Duration::from_secs(5), handle.flush())
        .await
        .expect(why);
    assert_eq!(store.calls.load(Ordering::SeqCst), 2);
    let events = store.events().await;
    assert_eq!(events.len(), 6);
    assert_one_chain(&events);
}

#[tokio::test]
async fn a_busy_writer_holds_events_back_until_its_interval_has_passed() {
    // What follows the first write within the interval waits; a flush
    // writes it, in one go.
    let (store, handle) = written_once_then_offered(Duration::from_secs(3600), 5).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(store.calls.load(Ordering::SeqCst), 1);
    assert_eq!(store.events().await.len(), 1);
    flush_and_expect_six_in_two_writes(&store, &handle, "a flush does not wait for the interval")
        .await;
}

#[tokio::test]
async fn events_held_back_are_written_once_the_interval_has_passed() {
    let (store, handle) = written_once_then_offered(Duration::from_millis(200), 5).await;
    // No flush, no ack: the interval alone starts the write. (The flush
    // then only waits for that write to land.)
    wait_for_writes(&store, 2).await;
    flush_and_expect_six_in_two_writes(&store, &handle, "the write started by the interval lands")
        .await;
}

#[tokio::test]
async fn acks_are_answered_without_waiting_for_the_interval() {
    let (store, handle) = written_once_then_offered(Duration::from_secs(3600), 1).await;
    // A writer waiting out its hour would let this timeout fire.
    let sealed = tokio::time::timeout(Duration::from_secs(5), handle.submit(event(2)))
        .await
        .expect("an ack does not wait for the interval")
        .unwrap();
    assert_eq!(sealed.seq, 3);
    let events = store.events().await;
    assert_eq!(events.len(), 3);
    assert_one_chain(&events);
}

#[tokio::test]
async fn events_held_back_are_written_when_the_queue_closes() {
    let store = ScriptedStore::new(&[], true);
    let tracker = TaskTracker::new();
    let cfg = WriterConfig {
        commit_interval: Duration::from_secs(3600),
        ..config()
    };
    let (handle, _health) = spawn_writer(store.clone(), cfg, &tracker).await.unwrap();
    assert!(handle.offer(event(0)));
    wait_for_writes(&store, 1).await;
    assert!(handle.offer(event(1)));
    assert!(handle.offer(event(2)));
    drop(handle);
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("the writer stops once its queue is closed");
    let events = store.events().await;
    assert_eq!(events.len(), 3);
    assert_one_chain(&events);
}

#[tokio::test]
async fn a_failed_head_read_after_a_loss_never_chains_onto_the_lost_batch() {
    let store = ScriptedStore::new(&[Some(Fault::Corrupt)], true);
    // The re-read of the head after the loss fails twice.
    store.head_failures.store(0, Ordering::SeqCst);
    let tracker = TaskTracker::new();
    let (handle, _health) = spawn_writer(store.clone(), config(), &tracker)
        .await
        .unwrap();
    store.head_failures.store(2, Ordering::SeqCst);
    assert!(
        handle.submit(event(0)).await.is_err(),
        "the first batch is lost"
    );
    let sealed = handle.submit(event(1)).await.unwrap();
    assert_eq!(
        sealed.seq, 1,
        "the chain continues from what the store holds"
    );
    handle.flush().await;
    let events = store.events().await;
    assert_one_chain(&events);
    assert_eq!(events[0].message, "call 1");
}

#[tokio::test]
async fn offers_over_the_byte_budget_are_dropped_counted_and_recorded() {
    let store = ScriptedStore::new(&[], false);
    let tracker = TaskTracker::new();
    let big = "x".repeat(4096);
    let one = crate::pipeline::queued_bytes(
        &NewEvent::new(EventType::Request, "big").with_metadata(serde_json::json!({ "body": big })),
    );
    let cfg = WriterConfig {
        queue_max_bytes: 3 * one,
        ..config()
    };
    let (handle, _health) = spawn_writer(store.clone(), cfg, &tracker).await.unwrap();
    let offer_big = |h: &Handle| {
        h.offer(
            NewEvent::new(EventType::Request, "big")
                .with_metadata(serde_json::json!({ "body": big })),
        )
    };
    // The first write is held: the queue keeps what follows.
    assert!(offer_big(&handle));
    wait_for_writes(&store, 1).await;
    let accepted = (0..5).filter(|_| offer_big(&handle)).count();
    assert_eq!(accepted, 3, "three events fit the budget");
    let stats = handle.stats().clone();
    assert_eq!(stats.dropped_over_budget.load(Ordering::Relaxed), 2);
    assert_eq!(stats.dropped.load(Ordering::Relaxed), 2);
    store.gate.add_permits(Semaphore::MAX_PERMITS / 2);
    handle.flush().await;
    assert_eq!(stats.queue_bytes.load(Ordering::Relaxed), 0);
    let events = store.events().await;
    assert_eq!(events.len(), 5, "four offers and the report");
    // In the first batch after the drops (each batch here takes one
    // event: a share of the byte budget holds less than one).
    let report = events
        .iter()
        .find(|e| e.metadata.field("error_type") == "events_dropped")
        .unwrap();
    assert_eq!(report.metadata.field("details")["dropped"], 2);
    assert_eq!(report.metadata.field("details")["over_byte_budget"], 2);
    assert_eq!(stats.unreported_losses(), 0);
}

#[tokio::test]
async fn closing_writes_what_is_queued_closes_the_store_and_counts_later_offers() {
    let store = ScriptedStore::new(&[], true);
    let tracker = TaskTracker::new();
    let (handle, _health) = spawn_writer(store.clone(), config(), &tracker)
        .await
        .unwrap();
    let producer = handle.clone();
    assert!(handle.offer(event(0)));
    tokio::time::timeout(Duration::from_secs(5), handle.close())
        .await
        .expect("close returns once everything is written");
    assert_eq!(store.closed.load(Ordering::SeqCst), 1);
    assert!(!producer.offer(event(1)), "the queue is closed");
    let stats = producer.stats();
    assert_eq!(stats.dropped_after_close.load(Ordering::Relaxed), 1);
    assert_eq!(stats.unreported_losses(), 1);
    // The writer has ended although a producer handle is still alive.
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .expect("the writer ends at close");
    assert_eq!(store.events().await.len(), 1);
}

#[tokio::test]
async fn failed_record_builds_are_recorded_once_the_store_writes() {
    let store = ScriptedStore::new(&[], true);
    let (handle, _health) = spawn_writer(store.clone(), config(), &TaskTracker::new())
        .await
        .unwrap();
    handle
        .stats()
        .build_failures
        .fetch_add(1, Ordering::Relaxed);
    assert!(handle.offer(event(0)));
    handle.flush().await;
    let events = store.events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].metadata.field("error_type"),
        "record_build_failed"
    );
    assert_eq!(events[1].metadata.field("details")["records"], 1);
}

#[tokio::test]
async fn losses_left_by_an_earlier_run_are_recorded_and_the_side_file_removed() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = crate::pipeline::losses::LossLedger::in_dir(dir.path());
    ledger.add(7).unwrap();
    let store = ScriptedStore::new(&[], true);
    let cfg = WriterConfig {
        ledger: Some(ledger.clone()),
        ..config()
    };
    let (handle, _health) = spawn_writer(store.clone(), cfg, &TaskTracker::new())
        .await
        .unwrap();
    assert!(handle.offer(event(0)));
    handle.flush().await;
    let events = store.events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[1].metadata.field("error_type"),
        "events_lost_before_restart"
    );
    assert_eq!(events[1].metadata.field("details")["events"], 7);
    assert_eq!(ledger.read(), None, "the side file is gone once recorded");
}

#[test]
fn a_tip_tells_whether_the_chain_moved() {
    let hash = "ab".repeat(32);
    let tip = Tip::of(&hash);
    assert!(matches!(tip, Tip::Hash(_)));
    assert!(tip.is(&hash));
    assert!(!tip.is(&"cd".repeat(32)));
    assert!(!tip.is("ab"));
    let short = Tip::of("genesis");
    assert!(short.is("genesis"));
    assert!(!short.is(&hash));
}

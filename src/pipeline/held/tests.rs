use std::sync::Arc;

use tokio::sync::{mpsc, Notify};

use super::*;
use crate::event::{EventType, Level};
use crate::pipeline::{health, PipelineStats};

/// Long enough that a hold ends only when room comes.
const LONG: Duration = Duration::from_secs(120);
/// Short enough that a test reaches the bound quickly.
const SHORT: Duration = Duration::from_millis(20);

/// A producer's handle on a queue of `capacity` events and `max_bytes`,
/// with the queue's receiving end, events held up to `full_wait`, and the
/// store's health switch.
struct Queue {
    handle: Handle,
    rx: mpsc::Receiver<WriterMsg>,
    holding: Option<Holding>,
    health: health::StoreHealthSetter,
}

fn queue(capacity: usize, max_bytes: u64, full_wait: Duration) -> Queue {
    let (handle, rx) = crate::pipeline::test_handle(capacity, max_bytes);
    let (health, view) = health::channel();
    Queue {
        handle,
        rx,
        holding: Holding::new(full_wait, view),
        health,
    }
}

/// An event whose message is `len` bytes long, named by its first letter.
fn event(name: char, len: usize) -> NewEvent {
    NewEvent::new(EventType::Custom, name.to_string().repeat(len))
}

fn bytes_of(name: char, len: usize) -> u64 {
    queued_bytes(&event(name, len))
}

impl Queue {
    fn stats(&self) -> &PipelineStats {
        &self.handle.stats
    }

    fn offers(&self) -> Offers<'_> {
        Offers::new(&self.handle, self.holding.as_ref(), None)
    }

    /// What the writer does with a batch: takes every queued event off
    /// the queue, counts it out and rings the held records. Returns the
    /// first letter of each event taken.
    fn take_batch(&mut self) -> String {
        let mut taken = String::new();
        while let Ok(msg) = self.rx.try_recv() {
            if let WriterMsg::Event(e) = msg {
                let stats = &self.handle.stats;
                stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                stats
                    .queue_bytes
                    .fetch_sub(queued_bytes(&e), Ordering::Relaxed);
                taken.extend(e.message.chars().next());
            }
        }
        self.handle.stats.held_room.notify_waiters();
        taken
    }

    fn count(&self, counter: fn(&PipelineStats) -> &std::sync::atomic::AtomicU64) -> u64 {
        counter(self.stats()).load(Ordering::Relaxed)
    }
}

fn spawn_offer(held: Held) -> tokio::task::JoinHandle<()> {
    tokio_util::task::TaskTracker::new().spawn(held.offer())
}

/// Until `held` has tried its first event and waits for the writer.
async fn until_waiting(held: &tokio::task::JoinHandle<()>) {
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(!held.is_finished(), "the held record waits for room");
}

#[test]
fn events_with_room_are_queued_at_once_and_nothing_is_held() {
    let mut q = queue(8, 1 << 20, LONG);
    let mut offers = q.offers();
    offers.offer(event('a', 10));
    offers.offer(event('b', 10));
    assert!(offers.finish().is_none());
    assert_eq!(q.take_batch(), "ab");
    assert_eq!(q.count(|s| &s.events_held), 0);
    assert_eq!(q.count(|s| &s.offered), 2);
}

#[tokio::test]
async fn an_event_over_the_byte_budget_is_held_until_the_writer_takes_a_batch() {
    let big = bytes_of('b', 1_000);
    let mut q = queue(8, big + 100, LONG);
    let mut offers = q.offers();
    offers.offer(event('a', 10));
    // Fits alone, not beside `a`.
    offers.offer(event('b', 1_000));
    let held = offers.finish().expect("b is held");
    assert_eq!(q.count(|s| &s.held_events), 1);
    assert_eq!(q.count(|s| &s.held_bytes), big);
    let offering = spawn_offer(held);
    until_waiting(&offering).await;
    assert_eq!(q.take_batch(), "a");
    offering.await.unwrap();
    assert_eq!(q.take_batch(), "b");
    assert_eq!(q.count(|s| &s.events_held), 1);
    assert_eq!(q.count(|s| &s.held_events), 0);
    assert_eq!(q.count(|s| &s.held_bytes), 0);
    assert_eq!(q.count(|s| &s.dropped), 0);
    assert_eq!(q.count(|s| &s.offered), 2);
}

#[tokio::test]
async fn an_event_the_full_queue_has_no_slot_for_is_held_too() {
    let mut q = queue(1, 1 << 20, LONG);
    let mut offers = q.offers();
    offers.offer(event('a', 10));
    offers.offer(event('b', 10));
    let offering = spawn_offer(offers.finish().expect("b is held"));
    until_waiting(&offering).await;
    assert_eq!(q.take_batch(), "a");
    offering.await.unwrap();
    assert_eq!(q.take_batch(), "b");
    assert_eq!(q.count(|s| &s.dropped), 0);
}

#[tokio::test]
async fn a_records_later_events_queue_behind_its_held_one_in_order() {
    // Room for `b` and `c` together, not for `a` and `b`.
    let mut q = queue(8, bytes_of('b', 1_000) + bytes_of('c', 1) + 10, LONG);
    let mut offers = q.offers();
    offers.offer(event('a', 300));
    offers.offer(event('b', 1_000));
    // Would fit now, but follows `b`.
    offers.offer(event('c', 1));
    let held = offers.finish().expect("b and c are held");
    assert_eq!(q.count(|s| &s.held_events), 2);
    let offering = spawn_offer(held);
    until_waiting(&offering).await;
    assert_eq!(q.take_batch(), "a");
    offering.await.unwrap();
    assert_eq!(q.take_batch(), "bc");
    assert_eq!(q.count(|s| &s.held_events), 0);
}

#[tokio::test]
async fn other_records_queue_behind_held_events() {
    // Room for `b` and `c` together, not for `a` and `b`.
    let mut q = queue(8, bytes_of('b', 1_000) + bytes_of('c', 1) + 10, LONG);
    let mut first = q.offers();
    first.offer(event('a', 300));
    first.offer(event('b', 1_000));
    let first = first.finish().expect("b is held");
    // Room for `c`, but `b` was there first.
    let mut second = q.offers();
    second.offer(event('c', 1));
    let second = second.finish().expect("c is held behind b");
    let first = spawn_offer(first);
    until_waiting(&first).await;
    assert_eq!(q.take_batch(), "a");
    first.await.unwrap();
    spawn_offer(second).await.unwrap();
    assert_eq!(q.take_batch(), "bc");
}

#[tokio::test]
async fn at_the_bound_held_events_are_dropped_and_counted() {
    let q = queue(8, bytes_of('b', 1_000) + 100, SHORT);
    let mut offers = q.offers();
    offers.offer(event('a', 10));
    offers.offer(event('b', 1_000));
    offers.offer(event('c', 1_000));
    // Nobody takes a batch.
    offers.finish().expect("b and c are held").offer().await;
    assert_eq!(q.count(|s| &s.dropped), 2);
    assert_eq!(q.count(|s| &s.dropped_over_budget), 2);
    assert_eq!(q.count(|s| &s.held_events), 0);
    assert_eq!(q.count(|s| &s.held_bytes), 0);
}

#[test]
fn an_unwritable_store_holds_nothing() {
    let mut q = queue(8, bytes_of('b', 1_000) + 100, LONG);
    q.health.set(false);
    let mut offers = q.offers();
    offers.offer(event('a', 10));
    offers.offer(event('b', 1_000));
    assert!(offers.finish().is_none());
    assert_eq!(q.count(|s| &s.dropped), 1);
    assert_eq!(q.count(|s| &s.events_held), 0);
    assert_eq!(q.take_batch(), "a");
}

#[test]
fn without_a_wait_nothing_is_held() {
    let mut q = queue(8, bytes_of('b', 1_000) + 100, Duration::ZERO);
    assert!(q.holding.is_none());
    let mut offers = q.offers();
    offers.offer(event('a', 10));
    offers.offer(event('b', 1_000));
    assert!(offers.finish().is_none());
    assert_eq!(q.count(|s| &s.dropped), 1);
    assert_eq!(q.take_batch(), "a");
}

#[tokio::test]
async fn a_store_turning_unwritable_ends_the_hold() {
    let q = queue(8, bytes_of('b', 1_000) + 100, LONG);
    let mut offers = q.offers();
    offers.offer(event('a', 10));
    offers.offer(event('b', 1_000));
    let offering = spawn_offer(offers.finish().expect("b is held"));
    until_waiting(&offering).await;
    q.health.set(false);
    offering.await.unwrap();
    assert_eq!(q.count(|s| &s.dropped), 1);
    assert_eq!(q.count(|s| &s.held_events), 0);
}

#[test]
fn held_events_dropped_unoffered_are_offered_at_once() {
    let mut q = queue(8, bytes_of('b', 1_000) + 100, LONG);
    let mut offers = q.offers();
    offers.offer(event('a', 10));
    offers.offer(event('b', 1_000));
    let held = offers.finish().expect("b is held");
    assert_eq!(q.take_batch(), "a");
    drop(held);
    assert_eq!(q.take_batch(), "b");
    assert_eq!(q.count(|s| &s.held_events), 0);
    assert_eq!(q.count(|s| &s.dropped), 0);
}

#[test]
fn filtered_events_are_neither_queued_nor_held() {
    let (_, view) = health::channel();
    let holding = Holding::new(LONG, view);
    // Takes Info and above, and has room for no event at all.
    let (tx, _rx) = mpsc::channel(1);
    let quiet = Handle::new(
        tx,
        Level::Info,
        true,
        Arc::default(),
        None,
        1,
        Arc::new(Notify::new()),
    );
    let mut offers = Offers::new(&quiet, holding.as_ref(), None);
    offers.offer(event('a', 10).with_level(Level::Debug));
    assert!(offers.finish().is_none());
    assert_eq!(quiet.stats.filtered.load(Ordering::Relaxed), 1);
    assert_eq!(quiet.stats.events_held.load(Ordering::Relaxed), 0);
}

#[test]
fn an_event_within_its_calls_reservation_is_not_held_behind_others() {
    let mut q = queue(8, bytes_of('b', 1_000) + 100, LONG);
    let mut first = q.offers();
    first.offer(event('a', 10));
    first.offer(event('b', 1_000));
    let first = first.finish().expect("b is held");
    let stats = q.handle.stats.clone();
    let bytes = bytes_of('c', 2_000);
    let reservation = Reservation::new(&stats, 0, bytes);
    let mut admitted = Offers::new(&q.handle, q.holding.as_ref(), Some(&reservation));
    admitted.offer(event('c', 2_000));
    assert!(admitted.finish().is_none(), "queued in its promised room");
    assert_eq!(q.take_batch(), "ac");
    drop(first);
    assert_eq!(q.take_batch(), "b");
}

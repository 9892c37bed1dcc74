use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex as StdMutex;

use super::*;
use crate::event::AuditEvent;
use crate::pipeline::{spawn_writer, WriterConfig};
use crate::store::memory::MemoryStore;
use crate::store::{EventFilter, EventQuery};

/// A target that keeps what it was sent, and fails the next `fail` tries.
#[derive(Default)]
struct MockTarget {
    received: StdMutex<Vec<i64>>,
    fail: AtomicU32,
}

#[async_trait]
impl ShipTarget for MockTarget {
    fn name(&self) -> &'static str {
        "mock"
    }

    async fn write(&self, _source: &Source, batch: &[EventRecord]) -> Result<(), ShipError> {
        if self
            .fail
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
        {
            return Err(ShipError::Connect {
                target: "mock",
                message: "connection refused".into(),
            });
        }
        self.received
            .lock()
            .unwrap()
            .extend(batch.iter().map(|r| r.seq));
        Ok(())
    }
}

struct Harness {
    store: SharedStore,
    events: Handle,
    target: Arc<MockTarget>,
    status: Arc<TargetStatus>,
    shipper: ShipperHandle,
}

async fn harness(fail: u32) -> Harness {
    let store: SharedStore = Arc::new(MemoryStore::new(100_000));
    let tracker = TaskTracker::new();
    let cfg = WriterConfig::for_tests(1024, 64);
    let (events, _health) = spawn_writer(store.clone(), cfg, &tracker).await.unwrap();
    let target = Arc::new(MockTarget {
        fail: AtomicU32::new(fail),
        ..MockTarget::default()
    });
    let status = Arc::new(TargetStatus::new("mock"));
    let shipper = spawn(
        &tracker,
        Shipper {
            store: store.clone(),
            target: target.clone(),
            source: Source {
                source_id: "test-source".into(),
                pod: None,
                namespace: None,
                node: None,
            },
            config: ShipperConfig {
                batch_size: 7,
                poll_interval: Duration::from_millis(10),
                max_backoff: Duration::from_millis(20),
            },
            status: status.clone(),
            events: events.clone(),
        },
    );
    Harness {
        store,
        events,
        target,
        status,
        shipper,
    }
}

async fn record(events: &Handle, n: usize) {
    for i in 0..n {
        events.offer(NewEvent::new(EventType::Custom, format!("event {i}")));
    }
    events.flush().await;
}

async fn stored(store: &SharedStore) -> Vec<AuditEvent> {
    use futures_util::StreamExt;
    store
        .export(EventFilter::default())
        .map(Result::unwrap)
        .collect()
        .await
}

/// Waits (bounded) until the target holds every stored event.
async fn until_caught_up(h: &Harness) {
    for _ in 0..500 {
        let head = h.store.head().await.unwrap().map_or(0, |c| c.seq);
        if h.store.ship_cursor("mock").await.unwrap().unwrap_or(0) == head
            && h.status.lag_events() == 0
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the shipper did not catch up");
}

#[tokio::test]
async fn every_event_is_shipped_once_in_seq_order() {
    let h = harness(0).await;
    record(&h.events, 40).await;
    until_caught_up(&h).await;
    let expected: Vec<i64> = stored(&h.store).await.iter().map(|e| e.seq).collect();
    assert_eq!(*h.target.received.lock().unwrap(), expected);
    assert_eq!(h.status.shipped(), expected.len() as u64);
    assert_eq!(h.status.errors(), 0);
    assert!(h.status.last_success_unix() > 0);
}

#[tokio::test]
async fn failures_are_retried_recorded_once_and_lose_nothing() {
    let h = harness(5).await;
    record(&h.events, 20).await;
    // The SYSTEM event of the recovery is offered once the batch that
    // succeeded is acknowledged, so the shipper may look caught up before
    // it is stored: wait for it, then for it to be shipped too.
    let is_resumed = |e: &AuditEvent| {
        e.event_type == EventType::System && e.metadata.field("phase") == "shipping_resumed"
    };
    for _ in 0..500 {
        if stored(&h.store).await.iter().any(is_resumed) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    until_caught_up(&h).await;
    let events = stored(&h.store).await;
    let expected: Vec<i64> = events.iter().map(|e| e.seq).collect();
    assert_eq!(*h.target.received.lock().unwrap(), expected);
    assert_eq!(h.status.errors(), 5);
    let snapshot = h.status.snapshot();
    assert!(snapshot.last_error.unwrap().contains("connection refused"));
    let errors: Vec<_> = events
        .iter()
        .filter(|e| e.event_type == EventType::Error)
        .collect();
    assert_eq!(errors.len(), 1, "one ERROR per run of failures");
    assert_eq!(errors[0].metadata.field("error_type"), "shipping_failed");
    assert_eq!(errors[0].metadata.field("details")["target"], "mock");
    assert!(events.iter().any(is_resumed));
}

#[tokio::test]
async fn a_drain_sends_the_tail_before_stopping() {
    let h = harness(0).await;
    until_caught_up(&h).await;
    record(&h.events, 30).await;
    h.shipper
        .drain(Instant::now() + Duration::from_secs(10))
        .await;
    let head = h.store.head().await.unwrap().unwrap().seq;
    assert_eq!(h.store.ship_cursor("mock").await.unwrap(), Some(head));
    let page = h
        .store
        .query(&EventQuery {
            filter: EventFilter::default(),
            limit: 1000,
            before_seq: None,
        })
        .await
        .unwrap();
    assert_eq!(h.target.received.lock().unwrap().len(), page.events.len());
}

#[tokio::test]
async fn a_drain_against_a_dead_target_stops_at_its_deadline() {
    let h = harness(u32::MAX).await;
    record(&h.events, 10).await;
    h.shipper
        .drain(Instant::now() + Duration::from_millis(200))
        .await;
    assert_eq!(h.store.ship_cursor("mock").await.unwrap(), None);
    assert!(h.target.received.lock().unwrap().is_empty());
}

#[tokio::test]
async fn events_removed_before_shipping_are_counted_as_lost() {
    // A ring of 10 events: the first 15 of 25 are gone before the shipper,
    // whose cursor says it had seq 2, reads again.
    let store: SharedStore = Arc::new(MemoryStore::new(10));
    let events = crate::store::conformance::sample_events();
    store
        .append_batch(events[..25].to_vec().into())
        .await
        .unwrap();
    store.set_ship_cursor("mock", 2).await.unwrap();
    let h = harness(0).await;
    let shipper = Shipper {
        store: store.clone(),
        target: h.target.clone(),
        source: Source {
            source_id: "ring".into(),
            pod: None,
            namespace: None,
            node: None,
        },
        config: ShipperConfig {
            batch_size: 100,
            poll_interval: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        },
        status: Arc::new(TargetStatus::new("mock")),
        events: h.events.clone(),
    };
    let status = shipper.status.clone();
    let mut cursor = None;
    let mut ahead = ReadAhead::default();
    assert!(matches!(
        shipper.step(&mut cursor, &mut ahead).await,
        Ok(Step::Shipped)
    ));
    let first_kept = events[15].seq;
    assert_eq!(status.lost(), (first_kept - 3) as u64);
    assert_eq!(cursor, Some(events[24].seq));
}

#[tokio::test]
async fn the_batch_read_ahead_is_sent_next_and_dropped_when_a_write_fails() {
    let store: SharedStore = Arc::new(MemoryStore::new(100));
    let events = crate::store::conformance::sample_events();
    store
        .append_batch(events[..20].to_vec().into())
        .await
        .unwrap();
    let h = harness(0).await;
    // A target of its own: the harness's shipper writes to its own.
    let target = Arc::new(MockTarget::default());
    let shipper = Shipper {
        store: store.clone(),
        target: target.clone(),
        source: Source {
            source_id: "read-ahead".into(),
            pod: None,
            namespace: None,
            node: None,
        },
        config: ShipperConfig {
            batch_size: 8,
            poll_interval: Duration::from_millis(10),
            max_backoff: Duration::from_millis(20),
        },
        status: Arc::new(TargetStatus::new("mock")),
        events: h.events.clone(),
    };
    let seqs: Vec<i64> = events[..20].iter().map(|e| e.seq).collect();
    let (mut cursor, mut ahead) = (None, ReadAhead::default());
    assert!(matches!(
        shipper.step(&mut cursor, &mut ahead).await,
        Ok(Step::Shipped)
    ));
    assert_eq!(cursor, Some(seqs[7]));
    // The next batch was read while the first was written.
    assert_eq!(
        ahead.next.as_ref().map(|(after, b)| (*after, b.len())),
        Some((seqs[7], 8))
    );

    // The second write fails: the cursor stays, nothing read ahead is
    // kept, and the same batch goes again.
    target.fail.store(1, Ordering::SeqCst);
    assert!(shipper.step(&mut cursor, &mut ahead).await.is_err());
    assert_eq!(cursor, Some(seqs[7]));
    assert!(ahead.next.is_none());
    assert_eq!(store.ship_cursor("mock").await.unwrap(), Some(seqs[7]));
    while matches!(
        shipper.step(&mut cursor, &mut ahead).await,
        Ok(Step::Shipped)
    ) {}
    assert_eq!(cursor, Some(seqs[19]));
    assert_eq!(*target.received.lock().unwrap(), seqs);
}

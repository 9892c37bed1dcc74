use std::sync::Arc;

use futures_util::StreamExt;
use tokio_util::task::TaskTracker;

use super::*;
use crate::event::chain::ChainVerifier;
use crate::event::AuditEvent;
use crate::pipeline::{spawn_writer, WriterConfig};
use crate::store::memory::MemoryStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{EventFilter, EventQuery};

fn writer_config() -> WriterConfig {
    WriterConfig::for_tests(512, 64)
}

/// Writes `old` events stamped 100 days ago, then `new` ones stamped now,
/// through a real writer.
async fn fill(store: &SharedStore, old: usize, new: usize) -> Handle {
    let (events, _health) = spawn_writer(store.clone(), writer_config(), &TaskTracker::new())
        .await
        .unwrap();
    let long_ago = crate::event::now() - chrono::Duration::days(100);
    for i in 0..old + new {
        // Large enough that half of 400 events is well above what an empty
        // SQLite store takes (a 16 KiB page for each table and index).
        let mut e = NewEvent::new(EventType::Request, format!("call {i}"))
            .with_metadata(json!({"body": "x".repeat(4000)}));
        if i < old {
            e.timestamp = long_ago + chrono::Duration::seconds(i as i64);
        }
        assert!(events.offer(e));
    }
    events.flush().await;
    events
}

async fn exported(store: &SharedStore) -> Vec<AuditEvent> {
    store
        .export(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await
}

async fn purge_events(store: &SharedStore) -> Vec<AuditEvent> {
    let page = store
        .query(&EventQuery {
            filter: EventFilter {
                event_types: vec![EventType::System],
                ..Default::default()
            },
            limit: 100,
            before_seq: None,
        })
        .await
        .unwrap();
    page.events
}

fn verify(events: &[AuditEvent]) {
    let mut verifier = ChainVerifier::new();
    for e in events {
        verifier.check(e).unwrap();
    }
}

async fn retention(store: SharedStore) {
    let events = fill(&store, 30, 20).await;
    let cfg = MaintenanceConfig {
        retention_days: 30,
        max_store_bytes: 0,
        interval: Duration::from_secs(3600),
        ship_targets: Vec::new(),
    };
    let reports = run_once(&store, &events, &cfg).await.unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(
        (
            reports[0].removed,
            reports[0].first_seq,
            reports[0].last_seq
        ),
        (30, Some(1), Some(30))
    );
    events.flush().await;
    let system = purge_events(&store).await;
    assert_eq!(system.len(), 1);
    let m = system[0].metadata_value();
    assert_eq!(m["action"], "purge");
    assert_eq!(m["reason"], "retention");
    assert_eq!(m["removed"], 30);
    assert_eq!(
        (m["first_seq"].as_i64(), m["last_seq"].as_i64()),
        (Some(1), Some(30))
    );
    assert!(m["before"].is_string());
    let remaining = exported(&store).await;
    assert_eq!(remaining.len(), 21);
    assert_eq!(remaining[0].seq, 31);
    verify(&remaining);

    // A second run finds nothing to do and says nothing.
    let reports = run_once(&store, &events, &cfg).await.unwrap();
    assert_eq!(reports[0].removed, 0);
    events.flush().await;
    assert_eq!(purge_events(&store).await.len(), 1);

    // Both off: nothing runs.
    let off = MaintenanceConfig {
        retention_days: 0,
        max_store_bytes: 0,
        interval: Duration::from_secs(3600),
        ship_targets: Vec::new(),
    };
    assert!(run_once(&store, &events, &off).await.unwrap().is_empty());
}

#[tokio::test]
async fn memory_store_retention_records_a_system_event() {
    retention(Arc::new(MemoryStore::new(1000))).await;
}

#[tokio::test]
async fn sqlite_store_retention_records_a_system_event() {
    let dir = tempfile::tempdir().unwrap();
    retention(Arc::new(SqliteStore::open(dir.path()).await.unwrap())).await;
}

#[tokio::test]
async fn sqlite_size_cap_purges_oldest_and_records_it() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let events = fill(&store, 0, 400).await;
    let bytes = store.stats().await.unwrap().store_bytes;
    let cfg = MaintenanceConfig {
        retention_days: 90,
        max_store_bytes: bytes / 2,
        interval: Duration::from_secs(3600),
        ship_targets: Vec::new(),
    };
    let reports = run_once(&store, &events, &cfg).await.unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0].removed, 0);
    let cap = &reports[1];
    assert!(cap.removed > 0 && cap.bytes_after <= bytes / 2, "{cap:?}");
    events.flush().await;
    let system = purge_events(&store).await;
    assert_eq!(system.len(), 1);
    assert_eq!(system[0].metadata.field("reason"), "max_store_mb");
    assert_eq!(system[0].metadata.field("removed"), cap.removed);
    assert_eq!(system[0].metadata.field("max_store_bytes"), bytes / 2);
    verify(&exported(&store).await);
}

#[tokio::test]
async fn the_loop_runs_at_once_and_stops_when_cancelled() {
    let store: SharedStore = Arc::new(MemoryStore::new(1000));
    let events = fill(&store, 5, 1).await;
    let cfg = MaintenanceConfig {
        retention_days: 30,
        max_store_bytes: 0,
        interval: Duration::from_secs(3600),
        ship_targets: Vec::new(),
    };
    let shutdown = CancellationToken::new();
    let tracker = TaskTracker::new();
    tracker.spawn(run(store.clone(), events.clone(), cfg, shutdown.clone()));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while purge_events(&store).await.is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no purge recorded");
        tokio::time::sleep(Duration::from_millis(10)).await;
        events.flush().await;
    }
    assert_eq!(exported(&store).await[0].seq, 6);
    shutdown.cancel();
    tracker.close();
    tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .unwrap();
}

#[tokio::test]
async fn file_store_retention_records_a_system_event() {
    let dir = tempfile::tempdir().unwrap();
    let store = crate::store::file::FileStore::open(dir.path(), crate::store::Rotation::Daily);
    retention(Arc::new(store.unwrap())).await;
}

#[tokio::test]
async fn retention_keeps_events_not_yet_shipped() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let events = fill(&store, 30, 20).await;
    // The target has the first 10 old events only.
    store.set_ship_cursor("postgres", 10).await.unwrap();
    let cfg = MaintenanceConfig {
        retention_days: 30,
        max_store_bytes: 0,
        interval: Duration::from_secs(3600),
        ship_targets: vec!["postgres"],
    };
    let reports = run_once(&store, &events, &cfg).await.unwrap();
    assert_eq!(reports[0].removed, 10);
    assert_eq!(reports[0].last_seq, Some(10));
    // Once shipped, the rest of the old events go.
    store.set_ship_cursor("postgres", 40).await.unwrap();
    let reports = run_once(&store, &events, &cfg).await.unwrap();
    assert_eq!(reports[0].removed, 20);
}

#[tokio::test]
async fn the_size_cap_names_the_unshipped_range_it_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store: SharedStore = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
    let events = fill(&store, 0, 400).await;
    store.set_ship_cursor("postgres", 5).await.unwrap();
    let bytes = store.stats().await.unwrap().store_bytes;
    let cfg = MaintenanceConfig {
        retention_days: 0,
        max_store_bytes: bytes / 2,
        interval: Duration::from_secs(3600),
        ship_targets: vec!["postgres"],
    };
    let reports = run_once(&store, &events, &cfg).await.unwrap();
    let cap = &reports[0];
    assert!(cap.removed > 5, "{cap:?}");
    events.flush().await;
    let page = store
        .query(&EventQuery {
            filter: EventFilter {
                event_types: vec![EventType::Error],
                ..Default::default()
            },
            limit: 10,
            before_seq: None,
        })
        .await
        .unwrap();
    assert_eq!(page.events.len(), 1);
    let details = &page.events[0].metadata.field("details");
    assert_eq!(
        page.events[0].metadata.field("error_type"),
        "unshipped_events_purged"
    );
    assert_eq!(details["target"], "postgres");
    assert_eq!(details["first_seq"], 6);
    assert_eq!(details["last_seq"], cap.last_seq.unwrap());
}

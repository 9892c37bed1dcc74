//! `type_counts` and `violation_counts` trail the events with the other
//! deferred tables; whatever they hold at a moment, the stats count events
//! by type, and violations by policy and by severity, exactly as a count
//! over every stored event does, and as the file and memory stores count
//! them: a violation key that is not a string counts as the empty string.

use std::collections::BTreeMap;

use super::super::*;
use crate::event::chain::GENESIS_HASH;
use crate::event::NewEvent;
use crate::store::conformance::{violation_metadata, violations_by};

/// `n` events after seq `from - 1`: every second one a violation, the
/// rest requests and responses that carry the same keys (which must not
/// be counted), one second apart.
fn events_from(from: i64, prev: &str, n: i64) -> Vec<AuditEvent> {
    let base = crate::event::parse_timestamp("2026-05-01T00:00:00Z").unwrap();
    let mut prev = prev.to_owned();
    (from..from + n)
        .map(|seq| {
            let event_type = match seq % 4 {
                0 | 2 => EventType::ComplianceViolation,
                1 => EventType::Request,
                _ => EventType::Response,
            };
            let mut e = NewEvent::new(event_type, format!("event {seq}"))
                .with_metadata(violation_metadata(seq));
            e.timestamp = base + chrono::Duration::seconds(seq);
            let e = e.seal(seq, &prev);
            prev.clone_from(&e.hash);
            e
        })
        .collect()
}

async fn stats_agree(store: &SqliteStore, stored: &[AuditEvent]) {
    let stats = store.stats().await.unwrap();
    let mut by_type = BTreeMap::new();
    for e in stored {
        *by_type.entry(e.event_type.as_str().to_owned()).or_default() += 1;
    }
    assert_eq!(stats.by_type, by_type);
    assert_eq!(stats.total_events, stored.len() as u64);
    assert_eq!(
        stats.violations_by_policy,
        violations_by(stored, "policy_name")
    );
    assert_eq!(
        stats.violations_by_severity,
        violations_by(stored, "severity")
    );
}

/// The violations `violation_counts` holds, past the store; the events
/// `type_counts` holds must be every one up to the same mark.
fn kept(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    let sum = |table: &str| -> i64 {
        conn.query_row(
            &format!("SELECT coalesce(SUM(events), 0) FROM {table}"),
            [],
            |r| r.get(0),
        )
        .unwrap()
    };
    let up_to_mark: i64 = conn
        .query_row(
            &format!(
                "SELECT COUNT(*) FROM events WHERE seq <= {}",
                schema::indexed_upto_sql!()
            ),
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sum("type_counts"), up_to_mark);
    sum("violation_counts")
}

fn violations_in(stored: &[AuditEvent]) -> i64 {
    let violations = stored
        .iter()
        .filter(|e| e.event_type == EventType::ComplianceViolation);
    violations.count() as i64
}

async fn append_in_small_batches(store: &SqliteStore, events: &[AuditEvent]) {
    for batch in events.chunks(3) {
        store.append_batch(batch.to_vec().into()).await.unwrap();
    }
}

/// Right after small commits (nothing counted), after purging violations
/// never counted, read-only beside a writer that is behind, after a crash,
/// after purging counted ones, and after the close; with the console's
/// index and without.
#[tokio::test]
async fn type_and_violation_counts_trail_the_events_and_the_stats_stay_exact() {
    for search_index in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            search_index,
            ..SqliteOptions::default()
        };
        let events = events_from(1, GENESIS_HASH, 120);
        {
            let store = SqliteStore::open_with(dir.path(), options).await.unwrap();
            append_in_small_batches(&store, &events[..80]).await;
            assert_eq!(kept(dir.path()), 0, "none counted yet");
            stats_agree(&store, &events[..80]).await;
            store.purge_before(events[20].timestamp).await.unwrap();
            stats_agree(&store, &events[20..80]).await;
            let reader = SqliteStore::open_read_only(dir.path()).await.unwrap();
            stats_agree(&reader, &events[20..80]).await;
            // Dropped without `close`: the process died.
        }
        assert_eq!(kept(dir.path()), 0);
        let store = SqliteStore::open_with(dir.path(), options).await.unwrap();
        assert_eq!(
            kept(dir.path()),
            violations_in(&events[20..80]),
            "counted at the open"
        );
        append_in_small_batches(&store, &events[80..]).await;
        // Takes counted violations and some not yet counted.
        store.purge_before(events[90].timestamp).await.unwrap();
        stats_agree(&store, &events[90..]).await;
        store.close().await.unwrap();
        assert_eq!(kept(dir.path()), violations_in(&events[90..]));
        stats_agree(&store, &events[90..]).await;
        // The size cap leaves one event: a pair whose violations are all
        // gone is not listed.
        let store = SqliteStore::open_with(dir.path(), options).await.unwrap();
        store.enforce_max_bytes(0).await.unwrap();
        let stats = store.stats().await.unwrap();
        assert_eq!(stats.total_events, 1);
        stats_agree(&store, &events[119..]).await;
        assert!(stats.violations_by_policy.values().all(|&n| n > 0));
    }
}

/// A failed batch is rolled back whole: it adds no violation.
#[tokio::test]
async fn a_failed_batch_counts_no_violation() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let events = events_from(1, GENESIS_HASH, 30);
    store
        .append_batch(events[..20].to_vec().into())
        .await
        .unwrap();
    store.catch_up_now().await.unwrap();
    let mut dup = events[20..].to_vec();
    dup[5].seq = 3;
    assert!(store.append_batch(dup.into()).await.is_err());
    store.catch_up_now().await.unwrap();
    stats_agree(&store, &events[..20]).await;
    assert_eq!(kept(dir.path()), violations_in(&events[..20]));
}

#[tokio::test]
async fn migration_12_counts_the_types_and_violations_of_an_existing_store() {
    let dir = tempfile::tempdir().unwrap();
    let first = events_from(1, GENESIS_HASH, 50);
    let second = events_from(51, &first[49].hash, 30);
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.append_batch(first.clone().into()).await.unwrap();
        store.close().await.unwrap();
    }
    // The file as version 11 left it, with the newest events stored past
    // the mark.
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "DROP TRIGGER events_violation_counts_delete; DROP TABLE violation_counts; \
             DROP TRIGGER events_type_counts_delete; DROP TABLE type_counts; \
             PRAGMA user_version = 11;",
        )
        .unwrap();
        super::insert_past_the_mark(&conn, &second);
    }
    let stored: Vec<AuditEvent> = first.iter().chain(&second).cloned().collect();
    // Read-only, the older file is counted from the by-type table and the
    // violations' metadata.
    let reader = SqliteStore::open_read_only(dir.path()).await.unwrap();
    stats_agree(&reader, &stored).await;
    drop(reader);

    let store = SqliteStore::open(dir.path()).await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    assert_eq!(schema::user_version(&conn).unwrap(), schema::SCHEMA_VERSION);
    // Filled up to the mark by the migration, the rest by the open's
    // catch-up: each violation once.
    assert_eq!(kept(dir.path()), violations_in(&stored));
    stats_agree(&store, &stored).await;
    store.purge_before(stored[60].timestamp).await.unwrap();
    stats_agree(&store, &stored[60..]).await;
}

use std::sync::Arc;

use futures_util::StreamExt;
use serde_json::json;

use super::*;
use crate::event::chain::{ChainVerifier, GENESIS_HASH};
use crate::event::NewEvent;
use crate::store::conformance::{conformance_suite, sample_events};
use crate::store::SharedStore;

mod stats_counts;

fn chain(from_seq: i64, prev: &str, n: i64) -> Vec<AuditEvent> {
    let mut prev = prev.to_owned();
    (from_seq..from_seq + n)
        .map(|seq| {
            let e = NewEvent::new(EventType::Custom, format!("event {seq}"))
                .with_metadata(json!({"n": seq}))
                .seal(seq, &prev);
            prev.clone_from(&e.hash);
            e
        })
        .collect()
}

/// Every stored event, in order.
async fn every_event(store: &SqliteStore) -> Vec<AuditEvent> {
    store
        .export(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await
}

fn page_query(limit: usize) -> EventQuery {
    EventQuery {
        filter: EventFilter::default(),
        limit,
        before_seq: None,
    }
}

#[tokio::test]
async fn conforms() {
    conformance_suite(|| async {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        (Arc::new(store) as SharedStore, dir)
    })
    .await;
}

#[tokio::test]
async fn creates_the_folder_and_sets_the_schema_version() {
    let dir = tempfile::tempdir().unwrap();
    let nested = dir.path().join("a/b");
    let store = SqliteStore::open(&nested).await.unwrap();
    assert!(nested.join(DB_FILE).is_file());
    let conn = rusqlite::Connection::open(nested.join(DB_FILE)).unwrap();
    assert_eq!(schema::user_version(&conn).unwrap(), schema::SCHEMA_VERSION);
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
    drop(store);
}

#[tokio::test]
async fn reopened_store_keeps_its_events_and_head() {
    let dir = tempfile::tempdir().unwrap();
    let events = sample_events();
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.append_batch(events.clone().into()).await.unwrap();
    }
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let head = store.head().await.unwrap().unwrap();
    assert_eq!(head.seq, events.last().unwrap().seq);
    let page = store.query(&page_query(1000)).await.unwrap();
    let mut expected = events.clone();
    expected.reverse();
    assert_eq!(page.events, expected);
    assert!(store.stats().await.unwrap().store_bytes > 0);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).await.unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.pragma_update(None, "user_version", schema::SCHEMA_VERSION + 1)
        .unwrap();
    drop(conn);
    let err = SqliteStore::open(dir.path()).await.unwrap_err();
    assert!(err.to_string().contains("schema version"), "{err}");
}

#[tokio::test]
async fn a_reader_handle_sees_what_another_handle_writes() {
    let dir = tempfile::tempdir().unwrap();
    let writer = SqliteStore::open(dir.path()).await.unwrap();
    let reader = SqliteStore::open_read_only(dir.path()).await.unwrap();
    assert!(reader.head().await.unwrap().is_none());

    let first = chain(1, GENESIS_HASH, 50);
    writer.append_batch(first.clone().into()).await.unwrap();
    assert_eq!(reader.head().await.unwrap().unwrap().seq, 50);

    // The reader holds an export open while the writer keeps appending.
    let mut export = reader.export(EventFilter::default());
    let got = export.next().await.unwrap().unwrap();
    assert_eq!(got, first[0]);
    let more = chain(51, &first[49].hash, 50);
    writer.append_batch(more.into()).await.unwrap();
    let rest: Vec<_> = export.map(|e| e.unwrap().seq).collect().await;
    // The export is the store as it was when it began.
    assert_eq!(rest, (2..=50).collect::<Vec<i64>>());

    assert_eq!(
        reader.query(&page_query(10)).await.unwrap().events[0].seq,
        100
    );
    reader.health().await.unwrap();
    writer.health().await.unwrap();
    let err = reader
        .append_batch(chain(101, "x", 1).into())
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::Other(_)), "{err:?}");
}

#[tokio::test]
async fn read_only_open_of_a_missing_store_fails() {
    let dir = tempfile::tempdir().unwrap();
    let err = SqliteStore::open_read_only(dir.path()).await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
}

#[tokio::test]
async fn large_export_is_complete_and_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let mut prev = GENESIS_HASH.to_owned();
    let mut next = 1;
    for _ in 0..20 {
        let batch = chain(next, &prev, 1000);
        prev.clone_from(&batch[999].hash);
        next += 1000;
        store.append_batch(batch.into()).await.unwrap();
    }
    let mut verifier = ChainVerifier::new();
    let mut export = store.export(EventFilter::default());
    let mut expected_seq = 1;
    while let Some(event) = export.next().await {
        let event = event.unwrap();
        assert_eq!(event.seq, expected_seq);
        verifier.check(&event).unwrap();
        expected_seq += 1;
    }
    assert_eq!(verifier.checked(), 20_000);

    // Dropping a partly read export stops the reads without error.
    let mut export = store.export(EventFilter::default());
    assert!(export.next().await.is_some());
    drop(export);
    store.health().await.unwrap();
}

#[tokio::test]
async fn duplicate_seq_is_rejected_and_the_batch_is_atomic() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let events = chain(1, GENESIS_HASH, 3);
    store
        .append_batch(events[..2].to_vec().into())
        .await
        .unwrap();
    let err = store
        .append_batch(events[1..].to_vec().into())
        .await
        .unwrap_err();
    assert!(!err.is_retriable(), "{err:?}");
    // Event 3 came in the failed batch and must not be there.
    assert_eq!(store.head().await.unwrap().unwrap().seq, 2);
}

#[tokio::test]
async fn corrupt_rows_are_reported_with_their_seq() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    store
        .append_batch(chain(1, GENESIS_HASH, 3).into())
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute("UPDATE events SET metadata = '{not json' WHERE seq = 2", [])
        .unwrap();
    conn.execute(
        "UPDATE events SET timestamp = 'yesterday' WHERE seq = 3",
        [],
    )
    .unwrap();
    drop(conn);

    let err = store.query(&page_query(10)).await.unwrap_err();
    assert_corrupt(&err, "seq 3", "timestamp");
    let mut export = store.export(EventFilter::default());
    assert_eq!(export.next().await.unwrap().unwrap().seq, 1);
    assert_corrupt(
        &export.next().await.unwrap().unwrap_err(),
        "seq 2",
        "metadata",
    );
    assert!(export.next().await.is_none());

    // Records check every row as closely, though they keep the metadata
    // text: the bad metadata still stops the export at seq 2.
    let err = store.query_records(&page_query(10)).await.unwrap_err();
    assert_corrupt(&err, "seq 3", "timestamp");
    let mut export = store.export_records(EventFilter::default());
    assert_eq!(export.next().await.unwrap().unwrap().seq, 1);
    assert_corrupt(
        &export.next().await.unwrap().unwrap_err(),
        "seq 2",
        "metadata",
    );
    assert!(export.next().await.is_none());
}

/// Asserts `err` reports a corrupt row naming `seq` and the bad `field`.
fn assert_corrupt(err: &StoreError, seq: &str, field: &str) {
    assert!(
        matches!(err, StoreError::Corrupt(m) if m.contains(seq) && m.contains(field)),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_download_stops_at_metadata_that_is_almost_json() {
    use crate::admin::export::{encode, Format};

    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    store
        .append_batch(chain(1, GENESIS_HASH, 3).into())
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    // Each would pass a glance; none is one JSON value.
    for bad in [
        r#"{"n":2}}"#,
        r#"{"n":2,}"#,
        r#"{"n":"\x"}"#,
        "",
        "{\"n\":2} x",
    ] {
        conn.execute("UPDATE events SET metadata = ?1 WHERE seq = 2", [bad])
            .unwrap();
        for format in [Format::Json, Format::Ndjson, Format::Csv] {
            let chunks: Vec<_> = encode(format, store.export_records(EventFilter::default()))
                .collect()
                .await;
            assert!(
                matches!(chunks.last(), Some(Err(_))),
                "{format:?} export of {bad:?} completed"
            );
            let body: Vec<u8> = chunks
                .iter()
                .filter_map(|c| c.as_ref().ok())
                .flat_map(|b| b.to_vec())
                .collect();
            let body = String::from_utf8(body).unwrap();
            assert!(
                body.contains("event 1") && !body.contains("event 2"),
                "{body}"
            );
        }
    }
}

#[tokio::test]
async fn a_type_and_window_page_is_exact_when_time_and_seq_disagree() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    // Timestamps scattered against seq order, as concurrent producers can
    // leave them, so the newest by time are not the newest by seq.
    let base = chrono::Utc::now() - chrono::Duration::days(1);
    let mut prev = GENESIS_HASH.to_owned();
    let mut state: u64 = 0x9e37_79b9;
    let events: Vec<AuditEvent> = (1..=400)
        .map(|seq| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let kind = if seq % 3 == 0 {
                EventType::Request
            } else {
                EventType::Response
            };
            let mut new = NewEvent::new(kind, format!("event {seq}"));
            new.timestamp = base + chrono::Duration::seconds((state % 500) as i64);
            let e = new.seal(seq, &prev);
            prev.clone_from(&e.hash);
            e
        })
        .collect();
    store.append_batch(events.clone().into()).await.unwrap();
    for (from, to) in [(0, 500), (100, 300), (250, 260), (499, 500)] {
        let filter = EventFilter {
            event_types: vec![EventType::Response],
            start_time: Some(base + chrono::Duration::seconds(from)),
            end_time: Some(base + chrono::Duration::seconds(to)),
            ..Default::default()
        };
        let expected: Vec<i64> = events
            .iter()
            .rev()
            .filter(|e| filter.matches(e))
            .map(|e| e.seq)
            .collect();
        for limit in [1, 5, 50, 1000] {
            let q = EventQuery {
                filter: filter.clone(),
                limit,
                before_seq: None,
            };
            let page = store.query(&q).await.unwrap();
            let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
            let want = &expected[..limit.min(expected.len())];
            assert_eq!(seqs, want, "{from}..{to} limit {limit}");
            let more = expected.len() > limit;
            assert_eq!(page.next_before_seq, more.then(|| want[want.len() - 1]));
        }
    }
}

#[tokio::test]
async fn a_held_write_lock_makes_the_store_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let blocker = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    blocker.execute_batch("BEGIN IMMEDIATE").unwrap();
    // Shorten the wait so the test is quick; the mapping is what matters.
    store
        .writer
        .as_ref()
        .unwrap()
        .call(|c| {
            c.busy_timeout(Duration::from_millis(50))
                .map_err(StoreError::from)
        })
        .await
        .unwrap();
    let err = store.health().await.unwrap_err();
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let err = store
        .append_batch(chain(1, GENESIS_HASH, 1).into())
        .await
        .unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
    blocker.execute_batch("ROLLBACK").unwrap();
    store.health().await.unwrap();
}

#[test]
fn error_codes_map_to_store_errors() {
    let code = |c: i32| {
        StoreError::from(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(c),
            None,
        ))
    };
    assert!(matches!(
        code(rusqlite::ffi::SQLITE_BUSY),
        StoreError::Unavailable(_)
    ));
    assert!(matches!(
        code(rusqlite::ffi::SQLITE_LOCKED),
        StoreError::Unavailable(_)
    ));
    assert!(matches!(
        code(rusqlite::ffi::SQLITE_FULL),
        StoreError::Full(_)
    ));
    assert!(matches!(
        code(rusqlite::ffi::SQLITE_CORRUPT),
        StoreError::Corrupt(_)
    ));
    assert!(matches!(
        code(rusqlite::ffi::SQLITE_NOTADB),
        StoreError::Corrupt(_)
    ));
    assert!(matches!(
        code(rusqlite::ffi::SQLITE_CONSTRAINT),
        StoreError::Conflict(_)
    ));
    assert!(matches!(
        code(rusqlite::ffi::SQLITE_IOERR),
        StoreError::Unavailable(_)
    ));
}

#[tokio::test]
async fn new_stores_use_incremental_auto_vacuum() {
    let dir = tempfile::tempdir().unwrap();
    drop(SqliteStore::open(dir.path()).await.unwrap());
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let mode: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, schema::AUTO_VACUUM_INCREMENTAL);
}

/// `page_size` of the file and the writer's `wal_autocheckpoint`.
async fn page_settings(store: &SqliteStore) -> (i64, i64) {
    store
        .writer()
        .unwrap()
        .call(|conn| -> Result<_, StoreError> {
            let get = |name: &str| conn.pragma_query_value(None, name, |r| r.get::<_, i64>(0));
            Ok((get("page_size")?, get("wal_autocheckpoint")?))
        })
        .await
        .unwrap()
}

#[tokio::test]
async fn a_new_store_has_16_kib_pages_and_checkpoints_every_32_mib_of_wal() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    store.append_batch(sample_events().into()).await.unwrap();
    assert_eq!(page_settings(&store).await, (16384, 2048));
    drop(store);
    // The size is the file's: another connection reads it too.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let size: i64 = conn
        .pragma_query_value(None, "page_size", |r| r.get(0))
        .unwrap();
    assert_eq!(size, 16384);
}

#[tokio::test]
async fn a_store_made_with_4_kib_pages_keeps_them_and_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let events = sample_events();
    {
        // A store as earlier releases made it: SQLite's default page size.
        let mut conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "page_size", 4096).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        schema::migrate(&mut conn).unwrap();
    }
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.append_batch(events.clone().into()).await.unwrap();
    }
    let store = SqliteStore::open(dir.path()).await.unwrap();
    // The checkpoint interval is still 32 MiB of WAL, in its pages.
    assert_eq!(page_settings(&store).await, (4096, 8192));
    let exported = every_event(&store).await;
    assert_eq!(exported, events);
}

#[tokio::test]
async fn a_version_1_store_is_vacuumed_into_incremental_mode_and_keeps_its_events() {
    let dir = tempfile::tempdir().unwrap();
    let events = sample_events();
    {
        // A store as version 1 left it: WAL, no auto_vacuum, events in it.
        let mut conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.pragma_update(None, "journal_mode", "WAL").unwrap();
        schema::migrate_to(&mut conn, 1).unwrap();
        let mode: i64 = conn
            .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
            .unwrap();
        assert_eq!(mode, 0);
    }
    {
        // Fill it through the store, then take it back to version 1.
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.append_batch(events.clone().into()).await.unwrap();
    }
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch("PRAGMA auto_vacuum = NONE; VACUUM; PRAGMA user_version = 1;")
        .unwrap();
    let mode: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, 0);
    drop(conn);

    let store = SqliteStore::open(dir.path()).await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    assert_eq!(schema::user_version(&conn).unwrap(), schema::SCHEMA_VERSION);
    let mode: i64 = conn
        .pragma_query_value(None, "auto_vacuum", |r| r.get(0))
        .unwrap();
    assert_eq!(mode, schema::AUTO_VACUUM_INCREMENTAL);
    let exported = every_event(&store).await;
    assert_eq!(exported, events);
}

#[tokio::test]
async fn a_size_cap_purge_shrinks_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let events = crate::store::conformance::spread_events(1, GENESIS_HASH, 2000, 1000);
    for batch in events.chunks(500) {
        store.append_batch(batch.to_vec().into()).await.unwrap();
    }
    let before = store.stats().await.unwrap().store_bytes;
    let r = store.enforce_max_bytes(before / 4).await.unwrap();
    assert!(r.removed > 1000, "{r:?}");
    let db = std::fs::metadata(dir.path().join(DB_FILE)).unwrap().len();
    assert!(db <= before / 4, "{db} > {}", before / 4);
    assert_eq!(r.bytes_after, store.stats().await.unwrap().store_bytes);
}

#[tokio::test]
async fn the_source_id_and_latest_checkpoint_are_kept_apart_from_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let id = store.source_id().await.unwrap().unwrap();
    assert_eq!(store.latest_checkpoint().await.unwrap(), None);
    let mut events = chain(1, GENESIS_HASH, 2);
    let checkpoint = NewEvent::new(EventType::Checkpoint, "Checkpoint").seal(3, &events[1].hash);
    events.push(checkpoint.clone());
    events.extend(chain(4, &checkpoint.hash, 1));
    store.append_batch(events.into()).await.unwrap();
    drop(store);

    // Kept across opens, and readable without writing.
    let again = SqliteStore::open_read_only(dir.path()).await.unwrap();
    assert_eq!(again.source_id().await.unwrap(), Some(id.clone()));
    assert_eq!(
        again.latest_checkpoint().await.unwrap(),
        Some(ChainHead {
            seq: 3,
            hash: checkpoint.hash.clone()
        })
    );
    drop(again);
    let reopened = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(reopened.source_id().await.unwrap(), Some(id));
}

#[tokio::test]
async fn a_store_older_than_the_meta_table_reads_without_one() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store
            .append_batch(chain(1, GENESIS_HASH, 2).into())
            .await
            .unwrap();
    }
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch("DROP TABLE meta; PRAGMA user_version = 3;")
        .unwrap();
    drop(conn);
    let old = SqliteStore::open_read_only(dir.path()).await.unwrap();
    assert_eq!(old.source_id().await.unwrap(), None);
    assert_eq!(old.latest_checkpoint().await.unwrap(), None);
    drop(old);
    // Opened for writing, it gains the table and an id.
    let upgraded = SqliteStore::open(dir.path()).await.unwrap();
    assert!(upgraded.source_id().await.unwrap().is_some());
}

#[test]
fn io_read_only_and_cannot_open_errors_are_retried() {
    use rusqlite::ffi;
    for code in [
        ffi::SQLITE_IOERR,
        ffi::SQLITE_READONLY,
        ffi::SQLITE_CANTOPEN,
        ffi::SQLITE_BUSY,
    ] {
        let error: StoreError = rusqlite::Error::SqliteFailure(ffi::Error::new(code), None).into();
        assert!(error.is_retriable(), "code {code}: {error}");
    }
    let corrupt: StoreError =
        rusqlite::Error::SqliteFailure(ffi::Error::new(ffi::SQLITE_CORRUPT), None).into();
    assert!(!corrupt.is_retriable());
}

#[tokio::test]
async fn a_clean_close_leaves_the_whole_store_in_audit_db() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    store
        .append_batch(chain(1, GENESIS_HASH, 3).into())
        .await
        .unwrap();
    store.close().await.unwrap();
    let wal = dir.path().join("audit.db-wal");
    assert_eq!(std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0), 0);
    drop(store);
    // A copy of audit.db alone holds every event.
    let copy = tempfile::tempdir().unwrap();
    std::fs::copy(dir.path().join(DB_FILE), copy.path().join(DB_FILE)).unwrap();
    let restored = SqliteStore::open_read_only(copy.path()).await.unwrap();
    assert_eq!(restored.stats().await.unwrap().total_events, 3);
}

#[tokio::test]
async fn full_synchronous_is_applied_to_the_writer() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_with(
        dir.path(),
        SqliteOptions {
            synchronous: Synchronous::Full,
            ..SqliteOptions::default()
        },
    )
    .await
    .unwrap();
    let sync: i64 = store
        .writer()
        .unwrap()
        .call(|conn| -> Result<i64, StoreError> {
            Ok(conn.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
        })
        .await
        .unwrap();
    assert_eq!(sync, 2, "FULL");
}

/// Whether the file has a table, index or trigger of that name.
pub(super) fn has_schema_object(conn: &rusqlite::Connection, name: &str) -> bool {
    conn.query_row(
        "SELECT COUNT(*) FROM sqlite_master WHERE name = ?1",
        [name],
        |r| r.get::<_, i64>(0),
    )
    .unwrap()
        > 0
}

/// The steps of `EXPLAIN QUERY PLAN` for one statement.
pub(super) fn query_plan(conn: &rusqlite::Connection, sql: &str, params: &[SqlValue]) -> String {
    let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
    let rows = stmt
        .query_map(params_from_iter(params.iter()), |r| r.get::<_, String>(3))
        .unwrap();
    rows.map(Result::unwrap).collect::<Vec<_>>().join("; ")
}

/// Each secondary index and by-type table is there for a filter of the
/// API or for the counts of `/api/stats` (the per-level counts have a
/// table of their own, and the minimum-level filter walks the table by
/// seq): this is the plan that uses it.
/// Written per row, each index costs about 1 to 2 µs of CPU per event
/// (`store_bench index-cost`); a filter without its index walks the table
/// (seconds on a million events). A selection by type reads the by-type
/// table and, by seq, only the events past the mark.
#[tokio::test]
async fn every_index_serves_the_filter_it_is_kept_for() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    store
        .append_batch(chain(1, GENESIS_HASH, 50).into())
        .await
        .unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    let at = |s: &str| crate::event::parse_timestamp(s).unwrap();
    let plan = |filter: EventFilter, before_seq: Option<i64>| {
        let query = EventQuery {
            filter,
            limit: 100,
            before_seq,
        };
        let (sql, params) = page_sql(&query, 100, true);
        query_plan(&conn, &sql, &params)
    };
    let response = || EventFilter {
        event_types: vec![EventType::Response],
        ..EventFilter::default()
    };
    let window = |filter: EventFilter| EventFilter {
        start_time: Some(at("2026-01-01T00:00:00Z")),
        end_time: Some(at("2026-01-01T01:00:00Z")),
        ..filter
    };
    let past_the_mark = "SEARCH events USING INTEGER PRIMARY KEY (rowid>?)";
    let export = {
        let walk = by_type::Walk::Up { after: 0, head: 50 };
        let (seqs, params) = by_type::seqs_sql(&response(), walk, 1000);
        query_plan(
            &conn,
            &format!("SELECT seq FROM events WHERE seq IN ({seqs})"),
            &params,
        )
    };
    let cases = [
        (
            "request_id",
            plan(
                EventFilter {
                    request_id: Some("r1".into()),
                    ..response()
                },
                None,
            ),
            vec!["events_request_id (request_id=?)"],
        ),
        (
            "type",
            plan(response(), None),
            vec!["SEARCH k USING PRIMARY KEY (event_type=?)", past_the_mark],
        ),
        (
            "type, next page",
            plan(response(), Some(40)),
            vec![
                "SEARCH k USING PRIMARY KEY (event_type=? AND seq<?)",
                "SEARCH events USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
            ],
        ),
        (
            "type and level",
            plan(
                EventFilter {
                    min_level: Some(Level::Warning),
                    ..response()
                },
                None,
            ),
            vec![
                "SEARCH k USING PRIMARY KEY (event_type=?)",
                "SEARCH e USING INTEGER PRIMARY KEY (rowid=?)",
                past_the_mark,
            ],
        ),
        (
            "type in a time window",
            plan(window(response()), None),
            vec![
                "SEARCH events_by_type_time USING PRIMARY KEY \
                 (event_type=? AND timestamp>? AND timestamp<?)",
                past_the_mark,
            ],
        ),
        (
            "type in a time window, next page",
            plan(window(response()), Some(40)),
            vec!["SEARCH k USING PRIMARY KEY (event_type=? AND seq<?)"],
        ),
        (
            "type, exported",
            export,
            vec![
                "SEARCH k USING PRIMARY KEY (event_type=? AND seq>? AND seq<?)",
                "SEARCH events USING INTEGER PRIMARY KEY (rowid>? AND rowid<?)",
            ],
        ),
        (
            "time window",
            plan(window(EventFilter::default()), None),
            vec!["events_timestamp (timestamp>? AND timestamp<?)"],
        ),
    ];
    for (filter, plan, uses) in cases {
        for used in uses {
            assert!(plan.contains(used), "{filter}: {plan}");
        }
        assert!(!plan.contains("SCAN events"), "{filter}: {plan}");
    }
    let stats = [
        (by_type::COUNTS_SQL, "SCAN events_by_type"),
        (by_type::COUNTS_SQL, past_the_mark),
        (
            by_type::VIOLATION_SEQS_SQL,
            "SEARCH events_by_type USING PRIMARY KEY (event_type=?)",
        ),
        (TYPES_KEPT_AND_TAIL, "SCAN type_counts"),
        (TYPES_KEPT_AND_TAIL, past_the_mark),
        (VIOLATIONS_BY_POLICY, "SCAN violation_counts"),
        (VIOLATIONS_BY_POLICY, past_the_mark),
        (VIOLATIONS_BY_SEVERITY, "SCAN violation_counts"),
        (VIOLATIONS_BY_SEVERITY, past_the_mark),
        (
            "SELECT seq FROM events WHERE id = 'x'",
            "sqlite_autoindex_events_1 (id=?)",
        ),
        (
            OLDEST_SQL,
            "SEARCH events USING COVERING INDEX events_timestamp",
        ),
        (
            NEWEST_SQL,
            "SEARCH events USING COVERING INDEX events_timestamp",
        ),
    ];
    for (sql, index) in stats {
        let plan = query_plan(&conn, sql, &[]);
        assert!(plan.contains(index), "{sql}: {plan}");
        assert!(!plan.contains("SCAN events "), "{sql}: {plan}");
    }
    drop(store);
}

/// Events of every level, `n` of them, sealed from `from_seq`, an hour apart.
fn leveled(from_seq: i64, prev: &str, n: i64) -> Vec<AuditEvent> {
    let base = crate::event::parse_timestamp("2026-01-01T00:00:00Z").unwrap();
    let mut prev = prev.to_owned();
    (from_seq..from_seq + n)
        .map(|seq| {
            let level = Level::ALL[(seq as usize * 7) % Level::ALL.len()];
            let mut e = NewEvent::new(EventType::Custom, format!("event {seq}")).with_level(level);
            e.timestamp = base + chrono::Duration::hours(seq);
            let e = e.seal(seq, &prev);
            prev.clone_from(&e.hash);
            e
        })
        .collect()
}

/// The per-level counts as the events table holds them.
fn counted_levels(dir: &std::path::Path) -> BTreeMap<String, u64> {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    let mut stmt = conn
        .prepare("SELECT level, COUNT(*) FROM events GROUP BY level")
        .unwrap();
    let rows = stmt
        .query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64))
        })
        .unwrap();
    rows.map(Result::unwrap).collect()
}

#[tokio::test]
async fn level_counts_follow_appends_retention_and_the_size_cap() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let events = leveled(1, GENESIS_HASH, 60);
    for batch in events.chunks(9) {
        store.append_batch(batch.to_vec().into()).await.unwrap();
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.by_level.len(), Level::ALL.len());
    assert_eq!(stats.by_level, counted_levels(dir.path()));
    store.purge_before(events[25].timestamp).await.unwrap();
    assert_eq!(
        store.stats().await.unwrap().by_level,
        counted_levels(dir.path())
    );
    store.enforce_max_bytes(0).await.unwrap();
    let by_level = store.stats().await.unwrap().by_level;
    assert_eq!(by_level, counted_levels(dir.path()));
    // A level with no event left is not listed.
    assert_eq!(by_level.values().sum::<u64>(), 1, "{by_level:?}");
    // A failed batch adds nothing.
    let again = leveled(61, GENESIS_HASH, 3);
    let mut dup = again.clone();
    dup[2].seq = 61;
    assert!(store.append_batch(dup.into()).await.is_err());
    assert_eq!(store.stats().await.unwrap().by_level, by_level);
}

/// The events the `level_counts` table holds, past the store (the writer
/// adds them a few hundred at a time).
fn kept_level_total(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.query_row(
        "SELECT coalesce(SUM(events), 0) FROM level_counts",
        [],
        |r| r.get(0),
    )
    .unwrap()
}

/// Whatever the writer has not counted yet, the stats are exact: right
/// after small commits, after purging events never counted, after a crash,
/// read-only beside a writer that is behind, and with the console's index
/// left out (the counts trail the events all the same).
#[tokio::test]
async fn level_counts_trail_the_events_and_the_stats_stay_exact() {
    for search_index in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let options = SqliteOptions {
            search_index,
            ..SqliteOptions::default()
        };
        let events = leveled(1, GENESIS_HASH, 60);
        {
            let store = SqliteStore::open_with(dir.path(), options).await.unwrap();
            for batch in events[..40].chunks(3) {
                store.append_batch(batch.to_vec().into()).await.unwrap();
            }
            assert_eq!(kept_level_total(dir.path()), 0, "none counted yet");
            let by_level = store.stats().await.unwrap().by_level;
            assert_eq!(by_level.values().sum::<u64>(), 40);
            assert_eq!(by_level, counted_levels(dir.path()));
            // Retention takes events that were never counted.
            store.purge_before(events[10].timestamp).await.unwrap();
            assert_eq!(
                store.stats().await.unwrap().by_level,
                counted_levels(dir.path())
            );
            // Read-only, beside the writer that is behind.
            let reader = SqliteStore::open_read_only(dir.path()).await.unwrap();
            assert_eq!(
                reader.stats().await.unwrap().by_level,
                counted_levels(dir.path())
            );
            // Dropped without `close`: the process died.
        }
        assert_eq!(kept_level_total(dir.path()), 0);
        let store = SqliteStore::open_with(dir.path(), options).await.unwrap();
        assert_eq!(kept_level_total(dir.path()), 30, "counted at the open");
        store
            .append_batch(events[40..].to_vec().into())
            .await
            .unwrap();
        // Counted events purged are taken back out of the counts.
        store.purge_before(events[20].timestamp).await.unwrap();
        let by_level = store.stats().await.unwrap().by_level;
        assert_eq!(by_level.values().sum::<u64>(), 40);
        assert_eq!(by_level, counted_levels(dir.path()));
        store.close().await.unwrap();
        assert_eq!(kept_level_total(dir.path()), 40, "counted at the close");
        assert_eq!(store.stats().await.unwrap().by_level, by_level);
    }
}

#[tokio::test]
async fn migration_9_counts_the_levels_of_an_existing_store_and_drops_their_index() {
    let dir = tempfile::tempdir().unwrap();
    let events = leveled(1, GENESIS_HASH, 40);
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store
            .append_batch(events[..30].to_vec().into())
            .await
            .unwrap();
    }
    // The file as schema version 8 left it.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch(
        "DROP TRIGGER events_level_counts_delete; DROP TABLE level_counts; \
         CREATE INDEX events_level_seq ON events (level_rank, seq); \
         PRAGMA user_version = 8;",
    )
    .unwrap();
    drop(conn);
    // Read-only, it is not migrated and counts from the events.
    let old = SqliteStore::open_read_only(dir.path()).await.unwrap();
    let by_level = old.stats().await.unwrap().by_level;
    assert_eq!(by_level.values().sum::<u64>(), 30);
    assert_eq!(by_level, counted_levels(dir.path()));
    drop(old);
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    assert_eq!(schema::user_version(&conn).unwrap(), schema::SCHEMA_VERSION);
    assert!(!has_schema_object(&conn, "events_level_seq"));
    assert_eq!(
        store.stats().await.unwrap().by_level,
        counted_levels(dir.path())
    );
    store
        .append_batch(events[30..].to_vec().into())
        .await
        .unwrap();
    let by_level = store.stats().await.unwrap().by_level;
    assert_eq!(by_level.values().sum::<u64>(), 40);
    assert_eq!(by_level, counted_levels(dir.path()));
}

/// The stats are counted in one snapshot: read while the writer commits,
/// the total is always the sum by type and the sum by level, and the
/// newest timestamp belongs to the events counted.
#[tokio::test]
async fn stats_read_while_the_writer_commits_are_of_one_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let events = leveled(1, GENESIS_HASH, 600);
    let written = std::sync::atomic::AtomicBool::new(false);
    let write = async {
        for batch in events.chunks(3) {
            store.append_batch(batch.to_vec().into()).await.unwrap();
        }
        written.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    // The store's writer and reader are threads of their own: the two
    // futures below wait on them at once.
    let read = async {
        let base = crate::event::parse_timestamp("2026-01-01T00:00:00Z").unwrap();
        let mut reads = 0;
        while !written.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
            let stats = store.stats().await.unwrap();
            let by_type: u64 = stats.by_type.values().sum();
            let by_level: u64 = stats.by_level.values().sum();
            assert_eq!(stats.total_events, by_type, "{stats:?}");
            assert_eq!(stats.total_events, by_level, "{stats:?}");
            if stats.total_events > 0 {
                let newest = stats.newest_timestamp.as_deref().unwrap();
                let expected = base + chrono::Duration::hours(stats.total_events as i64);
                assert_eq!(
                    crate::event::parse_timestamp(newest).unwrap(),
                    expected,
                    "{stats:?}"
                );
            }
            reads += 1;
        }
        reads
    };
    let ((), reads) = tokio::join!(write, read);
    assert!(reads > 1, "{reads}");
    assert_eq!(store.stats().await.unwrap().total_events, 600);
}

/// Appends `events` as a build did between catch-ups: rows only, past
/// the mark.
pub(super) fn insert_past_the_mark(conn: &rusqlite::Connection, events: &[AuditEvent]) {
    for e in events {
        conn.execute(
            crate::store::sqlite::INSERT,
            rusqlite::params![
                e.seq,
                e.id,
                crate::event::timestamp_text(&e.timestamp).as_str(),
                e.event_type.as_str(),
                e.level.as_str(),
                e.level.rank(),
                e.message,
                e.request_id,
                e.metadata_text(),
                e.prev_hash,
                e.hash,
            ],
        )
        .unwrap();
    }
}

//! The console's index trails the events by up to [`INDEX_LAG_EVENTS`]
//! or [`INDEX_LAG`]; nothing a reader sees may show it.

use super::*;
use crate::store::sqlite::{INDEX_LAG, INDEX_LAG_EVENTS};
use rusqlite::OptionalExtension;

/// Rows in the facets table, read past the store (as another process
/// would see the file).
fn indexed_rows(dir: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.query_row("SELECT COUNT(*) FROM event_facets", [], |r| r.get(0))
        .unwrap()
}

fn indexed_upto(dir: &std::path::Path) -> Option<i64> {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.query_row(
        "SELECT value FROM meta WHERE key = 'indexed_upto'",
        [],
        |r| r.get::<_, String>(0),
    )
    .optional()
    .unwrap()
    .map(|v| v.parse().unwrap())
}

/// `calls(n)`, numbered to follow `events`.
fn calls_after(events: &[AuditEvent], n: i64) -> Vec<AuditEvent> {
    let mut more = calls(n);
    let mut prev = events.last().unwrap().hash.clone();
    for (i, e) in more.iter_mut().enumerate() {
        e.seq = events.len() as i64 + 1 + i as i64;
        e.prev_hash.clone_from(&prev);
        prev.clone_from(&e.hash);
    }
    more
}

async fn append_in_small_batches(store: &SqliteStore, events: &[AuditEvent]) {
    for chunk in events.chunks(4) {
        store.append_batch(chunk.to_vec().into()).await.unwrap();
    }
}

/// What the console shows of `store`, from the index and from a scan of
/// the events, for the words and facets `calls` writes.
async fn reads_agree(store: &SqliteStore) {
    for (indexed, scanned) in console_reads(store).await {
        assert_eq!(indexed, scanned);
    }
    let range = last_hour();
    assert_eq!(
        store.overview(&range).await.unwrap(),
        overview_by_scan(store, &range).await.unwrap()
    );
}

#[tokio::test]
async fn small_commits_leave_the_index_behind_until_a_read_or_the_event_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let events = calls(12);
    append_in_small_batches(&store, &events).await;
    // Stored, not yet indexed.
    assert_eq!(indexed_rows(dir.path()), 0);
    // A search is answered as if every event were indexed: the writer
    // catches up first.
    let newest = store.search(&text("animal11")).await.unwrap();
    assert_eq!(request_ids(&newest), ["REQUEST:call-11"]);
    assert_eq!(indexed_rows(dir.path()), events.len() as i64);
    assert_eq!(indexed_upto(dir.path()), events.last().map(|e| e.seq));
    reads_agree(&store).await;

    // An overview catches up as well.
    let more = calls_after(&events, 3);
    append_in_small_batches(&store, &more).await;
    assert_eq!(indexed_rows(dir.path()), events.len() as i64);
    let overview = store.overview(&last_hour()).await.unwrap();
    assert_eq!(overview.calls, 15);
    assert_eq!(indexed_rows(dir.path()), (events.len() + more.len()) as i64);
}

#[tokio::test]
async fn the_writer_catches_up_on_its_own_at_the_event_bound() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    // Enough calls to cross the bound once, in commits of four events.
    let n = (INDEX_LAG_EVENTS as i64 * 3 / 7) + 10;
    let events = calls(n);
    assert!(events.len() > INDEX_LAG_EVENTS);
    append_in_small_batches(&store, &events).await;
    let rows = indexed_rows(dir.path());
    // The commit that crossed the bound indexed everything up to it, and
    // nothing after it is indexed yet.
    assert!(rows >= INDEX_LAG_EVENTS as i64, "{rows}");
    assert!(rows < events.len() as i64, "{rows}");
    assert_eq!(indexed_upto(dir.path()), Some(rows));
    // Words of the first call, of the last indexed one and of the newest.
    let last_indexed = (rows / 7) * 3;
    for words in [
        "animal0,".to_owned(),
        format!("animal{last_indexed},"),
        format!("animal{},", n - 1),
    ] {
        let indexed = all_seqs(&store, text(&words), true).await;
        assert_eq!(indexed.len(), 1, "{words}");
        assert_eq!(indexed, all_seqs(&store, text(&words), false).await);
    }
    // The overview of a store that indexed everything in one commit (the
    // scan's percentiles are exact, the index's are rounded).
    let reference_dir = tempfile::tempdir().unwrap();
    let reference = SqliteStore::open(reference_dir.path()).await.unwrap();
    reference.append_batch(events.clone().into()).await.unwrap();
    let range = last_hour();
    assert_eq!(
        store.overview(&range).await.unwrap(),
        reference.overview(&range).await.unwrap()
    );
    assert_eq!(indexed_rows(dir.path()), events.len() as i64);
}

#[tokio::test]
async fn the_writer_catches_up_on_its_own_once_the_oldest_waited_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let events = calls(4);
    let (first, second) = events.split_at(3);
    store.append_batch(first.to_vec().into()).await.unwrap();
    assert_eq!(indexed_rows(dir.path()), 0);
    tokio::time::sleep(INDEX_LAG + Duration::milliseconds(50).to_std().unwrap()).await;
    store.append_batch(second.to_vec().into()).await.unwrap();
    assert_eq!(indexed_rows(dir.path()), events.len() as i64);
}

#[tokio::test]
async fn events_a_crash_left_unindexed_are_indexed_at_the_next_open() {
    let dir = tempfile::tempdir().unwrap();
    let events = calls(9);
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        append_in_small_batches(&store, &events).await;
        // Dropped without `close`: the process died.
    }
    assert_eq!(indexed_rows(dir.path()), 0);
    let store = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(indexed_rows(dir.path()), events.len() as i64);
    reads_agree(&store).await;
    // `close` leaves nothing behind either.
    let more = calls_after(&events, 2);
    store.append_batch(more.clone().into()).await.unwrap();
    store.close().await.unwrap();
    assert_eq!(indexed_rows(dir.path()), (events.len() + more.len()) as i64);
}

#[tokio::test]
async fn events_purged_before_they_were_indexed_leave_nothing_in_the_index() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let events = calls(12);
    // The first half indexed, the rest stored only.
    let half = events.len() / 2;
    store
        .append_batch(events[..half].to_vec().into())
        .await
        .unwrap();
    store.search(&text("animal0")).await.unwrap();
    append_in_small_batches(&store, &events[half..]).await;
    assert_eq!(indexed_rows(dir.path()), half as i64);
    // Retention takes indexed and unindexed events alike.
    let cut = events[half + 4].timestamp;
    let report = store.purge_before(cut).await.unwrap();
    assert_eq!(report.removed, (half + 4) as u64);
    reads_agree(&store).await;
    assert_eq!(
        indexed_rows(dir.path()),
        (events.len() - half - 4) as i64,
        "one row per remaining event, none for a purged one"
    );
    let purged = store.search(&text("animal0")).await.unwrap();
    assert!(purged.records.is_empty());
    let overview = store.overview(&last_hour()).await.unwrap();
    let responses_left = events[half + 4..]
        .iter()
        .filter(|e| e.event_type == EventType::Response)
        .count();
    assert_eq!(overview.calls, responses_left as u64);
}

#[tokio::test]
async fn a_read_only_open_reads_the_events_while_the_writer_is_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let events = calls(6);
    store
        .append_batch(events[..4].to_vec().into())
        .await
        .unwrap();
    store.search(&text("animal0")).await.unwrap();
    append_in_small_batches(&store, &events[4..]).await;
    assert_eq!(indexed_rows(dir.path()), 4);

    let reader = SqliteStore::open_read_only(dir.path()).await.unwrap();
    // Found though the writer has not indexed it: the reader scanned.
    let newest = reader.search(&text("animal5")).await.unwrap();
    assert_eq!(request_ids(&newest), ["REQUEST:call-5"]);
    let range = last_hour();
    assert_eq!(reader.overview(&range).await.unwrap().calls, 6);
    reads_agree(&reader).await;

    // Once the writer catches up, the reader sees the same from the index.
    store.close().await.unwrap();
    assert_eq!(indexed_rows(dir.path()), events.len() as i64);
    assert_eq!(
        request_ids(&reader.search(&text("animal5")).await.unwrap()),
        ["REQUEST:call-5"]
    );
    assert_eq!(
        reader.overview(&range).await.unwrap(),
        store.overview(&range).await.unwrap()
    );
}

#[tokio::test]
async fn migration_10_marks_an_existing_store_indexed_to_its_newest_event() {
    let dir = tempfile::tempdir().unwrap();
    let events = calls(5);
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.append_batch(events.clone().into()).await.unwrap();
        store.close().await.unwrap();
    }
    // The file as schema version 9 left it: every event indexed, no mark.
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch("DELETE FROM meta WHERE key = 'indexed_upto'; PRAGMA user_version = 9;")
            .unwrap();
    }
    // Read-only, the older file's index is trusted whole.
    let reader = SqliteStore::open_read_only(dir.path()).await.unwrap();
    assert_eq!(
        request_ids(&reader.search(&text("animal4")).await.unwrap()),
        ["REQUEST:call-4"]
    );
    let store = SqliteStore::open(dir.path()).await.unwrap();
    assert_eq!(indexed_upto(dir.path()), events.last().map(|e| e.seq));
    // Not indexed a second time.
    assert_eq!(indexed_rows(dir.path()), events.len() as i64);
    reads_agree(&store).await;
}

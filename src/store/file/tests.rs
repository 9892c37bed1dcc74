use std::sync::Arc;

use chrono::TimeZone;
use futures_util::StreamExt;

use super::*;
use crate::event::chain::{ChainVerifier, GENESIS_HASH};
use crate::store::conformance::{conformance_suite, sample_events, spread_events};
use crate::store::SharedStore;

fn page_query(limit: usize, before_seq: Option<i64>) -> EventQuery {
    EventQuery {
        filter: EventFilter::default(),
        limit,
        before_seq,
    }
}

/// The event files (not the store's `source_id` or its lock file).
fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name != SOURCE_ID_FILE && name != LOCK_FILE)
        .collect();
    names.sort();
    names
}

// Weekly rotation puts the purge cases' last 25 events in one file, which
// the size cap must keep, so its file handling is tested on its own below.
#[tokio::test]
async fn conforms_with_hourly_and_daily_rotation() {
    for rotation in [Rotation::Daily, Rotation::Hourly] {
        conformance_suite(|| async move {
            let dir = tempfile::tempdir().unwrap();
            let store = FileStore::open(dir.path(), rotation).unwrap();
            (Arc::new(store) as SharedStore, dir)
        })
        .await;
    }
}

#[test]
fn file_names_are_chrono_formats_of_the_period() {
    let mut buf = String::from("left over");
    let start = Utc.with_ymd_and_hms(2024, 12, 20, 22, 30, 0).unwrap();
    let mut times: Vec<_> = (0..24 * 30)
        .map(|h| start + chrono::Duration::hours(h))
        .collect();
    times.push(Utc.with_ymd_and_hms(9999, 12, 31, 23, 0, 0).unwrap());
    times.push(Utc.with_ymd_and_hms(10_000, 1, 1, 0, 0, 0).unwrap());
    times.push(Utc.with_ymd_and_hms(1, 1, 1, 0, 0, 0).unwrap());
    for ts in times {
        for (rotation, format) in [
            (Rotation::Hourly, "%Y-%m-%dT%H"),
            (Rotation::Daily, "%Y-%m-%d"),
            (Rotation::Weekly, "%G-W%V"),
        ] {
            let expected = format!("audit-{}.jsonl", ts.format(format));
            segment::write_file_name(rotation, &ts, &mut buf);
            assert_eq!(buf, expected, "{ts} {rotation}");
            assert_eq!(file_name(rotation, &ts), expected);
        }
    }
}

#[test]
fn file_names_sort_in_time_order() {
    let ts = Utc.with_ymd_and_hms(2026, 11, 26, 14, 5, 0).unwrap();
    assert_eq!(
        file_name(Rotation::Hourly, &ts),
        "audit-2026-11-26T14.jsonl"
    );
    assert_eq!(file_name(Rotation::Daily, &ts), "audit-2026-11-26.jsonl");
    assert_eq!(file_name(Rotation::Weekly, &ts), "audit-2026-W48.jsonl");
    // Week 1 of 2027 begins on 2026-12-28: the ISO week-year keeps order
    // across the new year.
    let days: Vec<_> = (0..800)
        .map(|d| Utc.with_ymd_and_hms(2025, 12, 1, 0, 0, 0).unwrap() + chrono::Duration::days(d))
        .collect();
    for rotation in [Rotation::Hourly, Rotation::Daily, Rotation::Weekly] {
        let names: Vec<String> = days.iter().map(|t| file_name(rotation, t)).collect();
        assert!(names.windows(2).all(|w| w[0] <= w[1]), "{rotation}");
    }
}

#[tokio::test]
async fn rotates_by_event_time_and_reopens_with_the_same_head() {
    let dir = tempfile::tempdir().unwrap();
    let events = spread_events(1, GENESIS_HASH, 40, 10);
    {
        let store = FileStore::open(dir.path(), Rotation::Weekly).unwrap();
        store
            .append_batch(events[..25].to_vec().into())
            .await
            .unwrap();
        store
            .append_batch(events[25..].to_vec().into())
            .await
            .unwrap();
    }
    assert_eq!(
        files(dir.path()),
        ["audit-2026-W01.jsonl", "audit-2026-W02.jsonl"]
    );
    // One event per line, exactly as serialised.
    let text = fs::read_to_string(dir.path().join("audit-2026-W01.jsonl")).unwrap();
    let first: Vec<&str> = text.lines().collect();
    assert_eq!(first.len(), 15);
    assert_eq!(first[0], serde_json::to_string(&events[0]).unwrap());

    let store = FileStore::open(dir.path(), Rotation::Weekly).unwrap();
    let head = store.head().await.unwrap().unwrap();
    assert_eq!(
        (head.seq, head.hash.as_str()),
        (40, events[39].hash.as_str())
    );
    let exported: Vec<_> = store
        .export(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(exported, events);
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total_events, 40);
    let on_disk: u64 = files(dir.path())
        .iter()
        .map(|n| fs::metadata(dir.path().join(n)).unwrap().len())
        .sum();
    assert_eq!(stats.store_bytes, on_disk);
}

#[tokio::test]
async fn an_event_never_goes_to_an_older_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), Rotation::Hourly).unwrap();
    let mut events = sample_events();
    events.truncate(3);
    // Event 2 was stamped an hour before event 1 but sealed after it.
    events[0].timestamp = Utc.with_ymd_and_hms(2026, 1, 1, 15, 0, 0).unwrap();
    events[1].timestamp = Utc.with_ymd_and_hms(2026, 1, 1, 14, 59, 59).unwrap();
    events[2].timestamp = Utc.with_ymd_and_hms(2026, 1, 1, 16, 0, 0).unwrap();
    // (Hashes are stale after the edits; the store stores rows as given.)
    store.append_batch(events.clone().into()).await.unwrap();
    assert_eq!(
        files(dir.path()),
        ["audit-2026-01-01T15.jsonl", "audit-2026-01-01T16.jsonl"]
    );
    let exported: Vec<i64> = store
        .export(EventFilter::default())
        .map(|e| e.unwrap().seq)
        .collect()
        .await;
    assert_eq!(exported, [1, 2, 3]);
}

#[tokio::test]
async fn a_torn_last_line_is_skipped_and_the_next_append_starts_fresh() {
    let dir = tempfile::tempdir().unwrap();
    let events = spread_events(1, GENESIS_HASH, 6, 10);
    {
        let store = FileStore::open(dir.path(), Rotation::Weekly).unwrap();
        store
            .append_batch(events[..3].to_vec().into())
            .await
            .unwrap();
    }
    // A crash in the middle of writing event 4.
    let path = dir.path().join("audit-2026-W01.jsonl");
    let line = serde_json::to_string(&events[3]).unwrap();
    let mut file = OpenOptions::new().append(true).open(&path).unwrap();
    file.write_all(&line.as_bytes()[..line.len() / 2]).unwrap();
    drop(file);

    let store = FileStore::open(dir.path(), Rotation::Weekly).unwrap();
    assert_eq!(store.head().await.unwrap().unwrap().seq, 3);
    assert_eq!(store.stats().await.unwrap().total_events, 3);
    // The writer continues from the head it finds: event 4 again.
    store
        .append_batch(events[3..].to_vec().into())
        .await
        .unwrap();
    let check = |store: FileStore| {
        let events = events.clone();
        async move {
            let exported: Vec<_> = store
                .export(EventFilter::default())
                .map(|e| e.unwrap())
                .collect()
                .await;
            assert_eq!(exported, events);
            let page = store.query(&page_query(2, Some(6))).await.unwrap();
            let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
            assert_eq!(seqs, [5, 4]);
        }
    };
    check(store).await;
    // The torn bytes stay, on a line of their own, and a reopen skips them.
    let text = fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 7);
    check(FileStore::open(dir.path(), Rotation::Weekly).unwrap()).await;
}

#[tokio::test]
async fn an_edited_line_is_reported_as_corrupt() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), Rotation::Daily).unwrap();
    store
        .append_batch(spread_events(1, GENESIS_HASH, 3, 10).into())
        .await
        .unwrap();
    let path = dir.path().join("audit-2026-01-01.jsonl");
    let text = fs::read_to_string(&path).unwrap();
    fs::write(&path, text.replacen("\"seq\":2,", "\"seq\":\"two\",", 1)).unwrap();
    let mut export = store.export(EventFilter::default());
    assert_eq!(export.next().await.unwrap().unwrap().seq, 1);
    let err = export.next().await.unwrap().unwrap_err();
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    assert!(export.next().await.is_none());
}

#[tokio::test]
async fn a_seq_at_or_below_the_head_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), Rotation::Daily).unwrap();
    let events = spread_events(1, GENESIS_HASH, 3, 10);
    store
        .append_batch(events[..2].to_vec().into())
        .await
        .unwrap();
    let err = store
        .append_batch(events[1..].to_vec().into())
        .await
        .unwrap_err();
    assert!(!err.is_retriable(), "{err:?}");
    assert_eq!(store.head().await.unwrap().unwrap().seq, 2);
    assert_eq!(store.stats().await.unwrap().total_events, 2);
}

#[tokio::test]
async fn large_files_page_backwards_and_export_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), Rotation::Weekly).unwrap();
    // Many events in few files, so pages cross block and file boundaries.
    let mut prev = GENESIS_HASH.to_owned();
    let mut all = Vec::new();
    for batch in 0..5 {
        let mut events = spread_events(batch * 1000 + 1, &prev, 1000, 0);
        for e in &mut events {
            // 10 minutes apart: about 5 weeks in all.
            e.timestamp = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap()
                + chrono::Duration::minutes(10 * e.seq);
        }
        let mut p = prev.clone();
        let events: Vec<AuditEvent> = events
            .into_iter()
            .map(|e| {
                let mut e = e;
                e.prev_hash.clone_from(&p);
                e.hash = crate::event::chain::event_hash(&e);
                p.clone_from(&e.hash);
                e
            })
            .collect();
        prev = p;
        all.extend(events.clone());
        store.append_batch(events.into()).await.unwrap();
    }
    assert!(files(dir.path()).len() >= 5);
    let mut walked = Vec::new();
    let mut cursor = None;
    loop {
        let page = store.query(&page_query(333, cursor)).await.unwrap();
        walked.extend(page.events.iter().map(|e| e.seq));
        match page.next_before_seq {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    assert_eq!(walked, (1..=5000).rev().collect::<Vec<i64>>());
    let mut verifier = ChainVerifier::new();
    let mut export = store.export(EventFilter::default());
    while let Some(e) = export.next().await {
        verifier.check(&e.unwrap()).unwrap();
    }
    assert_eq!(verifier.checked(), 5000);
    assert_eq!(
        store.get(&all[1234].id).await.unwrap().as_ref(),
        Some(&all[1234])
    );
    // A shipper's reads walk the whole store in seq order, across block
    // and file boundaries.
    let mut shipped = Vec::new();
    let mut after = 0;
    loop {
        let batch = store.records_after(after, 777).await.unwrap();
        let Some(last) = batch.last() else { break };
        after = last.seq;
        shipped.extend(batch.iter().map(|r| r.seq));
    }
    assert_eq!(shipped, (1..=5000).collect::<Vec<i64>>());
    let at_a_mark = store.records_after(255, 3).await.unwrap();
    assert_eq!(
        at_a_mark.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [256, 257, 258]
    );
    // Dropping a partly read export stops the reads without error.
    let mut export = store.export(EventFilter::default());
    assert!(export.next().await.is_some());
    drop(export);
    store.health().await.unwrap();
}

#[tokio::test]
async fn health_fails_when_the_folder_is_gone() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(&dir.path().join("store"), Rotation::Daily).unwrap();
    store.health().await.unwrap();
    assert!(!dir.path().join("store").join(HEALTH_PROBE).exists());
    fs::remove_dir_all(dir.path().join("store")).unwrap();
    let err = store.health().await.unwrap_err();
    assert!(err.is_retriable(), "{err:?}");
}

#[tokio::test]
async fn size_cap_never_removes_the_file_being_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), Rotation::Daily).unwrap();
    store
        .append_batch(spread_events(1, GENESIS_HASH, 12, 500).into())
        .await
        .unwrap();
    let r = store.enforce_max_bytes(0).await.unwrap();
    assert_eq!(files(dir.path()), ["audit-2026-01-04.jsonl"]);
    assert_eq!(
        (r.first_seq, r.last_seq, r.removed),
        (Some(1), Some(11), 11)
    );
    assert_eq!(r.bytes_after, store.stats().await.unwrap().store_bytes);
    assert!(r.bytes_after > 0);
}

#[tokio::test]
async fn the_source_id_is_made_once_and_kept() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileStore::open(dir.path(), Rotation::Daily).unwrap();
    let id = first.source_id().await.unwrap().unwrap();
    drop(first);
    let again = FileStore::open(dir.path(), Rotation::Daily).unwrap();
    assert_eq!(again.source_id().await.unwrap(), Some(id));
}

#[test]
fn a_second_writer_on_the_same_folder_is_refused_until_the_first_closes() {
    let dir = tempfile::tempdir().unwrap();
    let first = FileStore::open(dir.path(), Rotation::Daily).unwrap();
    let error = FileStore::open(dir.path(), Rotation::Daily).unwrap_err();
    assert!(
        error.to_string().contains("in use by another process"),
        "{error}"
    );
    // Readers need no lock.
    FileStore::open_for_reading(dir.path(), Rotation::Daily).unwrap();
    drop(first);
    FileStore::open(dir.path(), Rotation::Daily).unwrap();
}

#[tokio::test]
async fn a_failed_append_left_on_disk_is_marked_torn_and_never_read_as_events() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::open(dir.path(), Rotation::Weekly).unwrap();
    let events = spread_events(1, GENESIS_HASH, 6, 10);
    store
        .append_batch(events[..3].to_vec().into())
        .await
        .unwrap();
    // What a failed append that could not be cut back leaves: whole event
    // lines and a torn one.
    let path = dir.path().join(&files(dir.path())[0]);
    let mut leftover = String::new();
    for e in &events[3..5] {
        leftover.push_str(&serde_json::to_string(e).unwrap());
        leftover.push('\n');
    }
    leftover.push_str("{\"seq\": 6, \"torn");
    OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap()
        .write_all(leftover.as_bytes())
        .unwrap();
    {
        let mut state = lock(&store.state);
        state.open = None;
        state.mark_torn(0);
    }
    // The writer seals the lost events again and appends them.
    store
        .append_batch(events[3..].to_vec().into())
        .await
        .unwrap();
    let exported: Vec<_> = store
        .export(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(exported, events, "each event once, in order");
}

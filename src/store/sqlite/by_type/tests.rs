//! The by-type tables trail the events; whatever they hold at a moment,
//! a selection by type answers what a filter over every stored event
//! answers: pages (every page, through the cursor), exports and the stats.

use std::collections::BTreeMap;

use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use serde_json::json;

use crate::event::chain::GENESIS_HASH;
use crate::event::{AuditEvent, EventType, Level, NewEvent};
use crate::store::sqlite::{by_type, deferred, schema, SqliteOptions, SqliteStore, DB_FILE};
use crate::store::{AuditStore, EventFilter, EventQuery};

fn base() -> DateTime<Utc> {
    crate::event::parse_timestamp("2026-03-01T00:00:00Z").unwrap()
}

/// `n` events sealed after `after` (or from the start): five types, one
/// of them caller-defined, every level, a few request ids and policies,
/// 37 s apart, every seventh stamped 90 s early, so that time order and
/// seq order differ as they do between concurrent calls.
fn events_after(after: &[AuditEvent], n: i64) -> Vec<AuditEvent> {
    let mut prev = after
        .last()
        .map_or_else(|| GENESIS_HASH.to_owned(), |e| e.hash.clone());
    let first = after.last().map_or(1, |e| e.seq + 1);
    (first..first + n)
        .map(|seq| {
            let event_type = match seq % 6 {
                0 | 3 => EventType::Request,
                1 | 4 => EventType::Response,
                2 => EventType::ComplianceViolation,
                _ if seq % 12 == 5 => EventType::Custom,
                _ => EventType::Other("USER_LOGIN".into()),
            };
            let mut e = NewEvent::new(event_type, format!("event {seq}"))
                .with_level(Level::ALL[(seq as usize * 3) % Level::ALL.len()])
                .with_request_id(format!("r{}", seq % 5))
                .with_metadata(json!({
                    "policy_name": format!("policy-{}", seq % 3),
                    "severity": if seq % 2 == 0 { "high" } else { "low" },
                }));
            let early = if seq % 7 == 0 { 90 } else { 0 };
            e.timestamp = base() + Duration::seconds(seq * 37 - early);
            let sealed = e.seal(seq, &prev);
            prev.clone_from(&sealed.hash);
            sealed
        })
        .collect()
}

/// The filters a console or an API client sends that select by type.
fn filters() -> Vec<EventFilter> {
    let at = |minutes: i64| Some(base() + Duration::minutes(minutes));
    let of = |types: &[EventType]| EventFilter {
        event_types: types.to_vec(),
        ..EventFilter::default()
    };
    let violation = || of(&[EventType::ComplianceViolation]);
    vec![
        of(&[EventType::Request]),
        of(&[EventType::Other("USER_LOGIN".into())]),
        of(&[EventType::Response, EventType::ComplianceViolation]),
        of(&[EventType::Checkpoint]),
        EventFilter {
            start_time: at(20),
            end_time: at(70),
            ..of(&[EventType::Response])
        },
        EventFilter {
            start_time: at(45),
            ..violation()
        },
        EventFilter {
            end_time: at(30),
            ..of(&[EventType::Request, EventType::Custom])
        },
        EventFilter {
            min_level: Some(Level::Warning),
            ..of(&[EventType::Request])
        },
        EventFilter {
            policy_name: Some("policy-1".into()),
            start_time: at(10),
            ..violation()
        },
        EventFilter {
            request_id: Some("r2".into()),
            ..violation()
        },
    ]
}

/// Every page of `filter`, newest first, `limit` at a time.
async fn paged(store: &SqliteStore, filter: &EventFilter, limit: usize) -> Vec<i64> {
    let mut seqs = Vec::new();
    let mut before_seq = None;
    loop {
        let query = EventQuery {
            filter: filter.clone(),
            limit,
            before_seq,
        };
        let page = store.query(&query).await.unwrap();
        seqs.extend(page.events.iter().map(|e| e.seq));
        match page.next_before_seq {
            Some(next) => before_seq = Some(next),
            None => return seqs,
        }
    }
}

/// What `filter` selects of `stored`, newest first.
fn expected(stored: &[AuditEvent], filter: &EventFilter) -> Vec<i64> {
    stored
        .iter()
        .rev()
        .filter(|e| filter.matches(e))
        .map(|e| e.seq)
        .collect()
}

async fn exported(store: &SqliteStore, filter: &EventFilter) -> Vec<i64> {
    let mut seqs: Vec<i64> = store
        .export(filter.clone())
        .map(|e| e.unwrap().seq)
        .collect()
        .await;
    seqs.reverse();
    seqs
}

fn counts<'a>(
    events: impl Iterator<Item = &'a AuditEvent>,
    key: impl Fn(&AuditEvent) -> String,
) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(key(e)).or_insert(0) += 1;
    }
    counts
}

/// Pages (at two sizes), exports and the stats of `store` agree with a
/// filter over `stored`.
async fn selections_agree(store: &SqliteStore, stored: &[AuditEvent]) {
    for filter in filters() {
        let want = expected(stored, &filter);
        for limit in [1, 7, 1000] {
            assert_eq!(
                paged(store, &filter, limit).await,
                want,
                "{filter:?}, {limit} a page"
            );
        }
        assert_eq!(exported(store, &filter).await, want, "{filter:?}, exported");
    }
    let stats = store.stats().await.unwrap();
    assert_eq!(
        stats.by_type,
        counts(stored.iter(), |e| e.event_type.as_str().to_owned())
    );
    let violations = || {
        stored
            .iter()
            .filter(|e| e.event_type == EventType::ComplianceViolation)
    };
    let field = |name: &'static str| {
        move |e: &AuditEvent| {
            e.metadata
                .field(name)
                .as_str()
                .unwrap_or_default()
                .to_owned()
        }
    };
    assert_eq!(
        stats.violations_by_policy,
        counts(violations(), field("policy_name"))
    );
    assert_eq!(
        stats.violations_by_severity,
        counts(violations(), field("severity"))
    );
}

/// Rows in one by-type table, read past the store.
fn keyed_rows(dir: &std::path::Path, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
    conn.query_row(&format!("SELECT COUNT(*) FROM {table}"), [], |r| r.get(0))
        .unwrap()
}

async fn append_in_small_batches(store: &SqliteStore, events: &[AuditEvent]) {
    for chunk in events.chunks(3) {
        store.append_batch(chunk.to_vec().into()).await.unwrap();
    }
}

#[tokio::test]
async fn selections_by_type_are_exact_however_far_the_tables_trail() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    // Nothing in the tables yet: every answer comes from past the mark.
    let first = events_after(&[], 60);
    append_in_small_batches(&store, &first).await;
    assert_eq!(keyed_rows(dir.path(), "events_by_type"), 0);
    selections_agree(&store, &first).await;

    // Part in the tables, part past the mark.
    store.catch_up_now().await.unwrap();
    assert_eq!(keyed_rows(dir.path(), "events_by_type"), first.len() as i64);
    let second = events_after(&first, 45);
    append_in_small_batches(&store, &second).await;
    let stored: Vec<AuditEvent> = first.iter().chain(&second).cloned().collect();
    assert_eq!(
        keyed_rows(dir.path(), "events_by_type_time"),
        first.len() as i64
    );
    selections_agree(&store, &stored).await;

    // A reader in another process, which cannot make the writer catch up.
    let reader = SqliteStore::open_read_only(dir.path()).await.unwrap();
    selections_agree(&reader, &stored).await;

    // Everything in the tables.
    store.close().await.unwrap();
    assert_eq!(
        keyed_rows(dir.path(), "events_by_type"),
        stored.len() as i64
    );
    selections_agree(&reader, &stored).await;
}

/// The tables are kept without the console's search index too.
#[tokio::test]
async fn selections_by_type_are_exact_without_the_search_index() {
    let dir = tempfile::tempdir().unwrap();
    let options = SqliteOptions {
        search_index: false,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open_with(dir.path(), options).await.unwrap();
    let first = events_after(&[], 40);
    store.append_batch(first.clone().into()).await.unwrap();
    store.catch_up_now().await.unwrap();
    let second = events_after(&first, 30);
    append_in_small_batches(&store, &second).await;
    assert_eq!(keyed_rows(dir.path(), "events_by_type"), first.len() as i64);
    let stored: Vec<AuditEvent> = first.iter().chain(&second).cloned().collect();
    selections_agree(&store, &stored).await;
    store.close().await.unwrap();
    assert_eq!(
        keyed_rows(dir.path(), "events_by_type"),
        stored.len() as i64
    );
}

#[tokio::test]
async fn purged_events_leave_the_tables_whether_or_not_they_were_in_them() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path()).await.unwrap();
    let first = events_after(&[], 40);
    store.append_batch(first.clone().into()).await.unwrap();
    store.catch_up_now().await.unwrap();
    let second = events_after(&first, 40);
    append_in_small_batches(&store, &second).await;
    // Takes all of the first events, which are in the tables, and some
    // of the second, which are not.
    let cut = second[10].timestamp;
    store.purge_before(cut).await.unwrap();
    let stored: Vec<AuditEvent> = first
        .iter()
        .chain(&second)
        .filter(|e| e.timestamp >= cut)
        .cloned()
        .collect();
    assert!(stored.len() < second.len() && !stored.is_empty());
    selections_agree(&store, &stored).await;
    store.close().await.unwrap();
    for table in ["events_by_type", "events_by_type_time"] {
        assert_eq!(
            keyed_rows(dir.path(), table),
            stored.len() as i64,
            "{table}"
        );
    }
    let reopened = SqliteStore::open(dir.path()).await.unwrap();
    selections_agree(&reopened, &stored).await;
}

#[tokio::test]
async fn migration_11_moves_the_type_indexes_into_tables_that_trail_the_events() {
    let dir = tempfile::tempdir().unwrap();
    let first = events_after(&[], 30);
    let second = events_after(&first, 20);
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.append_batch(first.clone().into()).await.unwrap();
        store.close().await.unwrap();
    }
    // The file as version 10 left it: the by-type lookups as indexes of
    // the events, and the newest events stored past the mark.
    {
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "DROP TRIGGER events_type_keys_delete;
             DROP TABLE events_by_type; DROP TABLE events_by_type_time;
             CREATE INDEX events_type_seq ON events (event_type, seq);
             CREATE INDEX events_type_ts ON events (event_type, timestamp, seq);
             PRAGMA user_version = 10;",
        )
        .unwrap();
        crate::store::sqlite::tests::insert_past_the_mark(&conn, &second);
    }
    let stored: Vec<AuditEvent> = first.iter().chain(&second).cloned().collect();
    // Read-only, the older file is read through its indexes.
    let reader = SqliteStore::open_read_only(dir.path()).await.unwrap();
    assert!(!reader.type_keys);
    selections_agree(&reader, &stored).await;

    let store = SqliteStore::open(dir.path()).await.unwrap();
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    assert_eq!(schema::user_version(&conn).unwrap(), schema::SCHEMA_VERSION);
    let indexes: i64 = conn
        .query_row(
            "SELECT COUNT(*) FROM sqlite_schema \
             WHERE name IN ('events_type_seq', 'events_type_ts')",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(indexes, 0);
    // Filled up to the mark by the migration, the rest by the open's
    // catch-up: each event once.
    for table in ["events_by_type", "events_by_type_time"] {
        assert_eq!(
            keyed_rows(dir.path(), table),
            stored.len() as i64,
            "{table}"
        );
    }
    selections_agree(&store, &stored).await;
    let more = events_after(&stored, 10);
    append_in_small_batches(&store, &more).await;
    let stored: Vec<AuditEvent> = stored.into_iter().chain(more).collect();
    selections_agree(&store, &stored).await;
}

/// SQLite's count of virtual-machine steps for one run of `sql`: what a
/// query reads, independent of the machine's speed.
fn vm_steps(conn: &rusqlite::Connection, sql: &str, params: &[rusqlite::types::Value]) -> i32 {
    let mut stmt = conn.prepare(sql).unwrap();
    let rows = stmt
        .query_map(rusqlite::params_from_iter(params), |r| r.get::<_, i64>(0))
        .unwrap();
    assert!(rows.map(Result::unwrap).count() <= 5);
    stmt.get_status(rusqlite::StatementStatus::VmStep)
}

/// What a walk by type alone reads does not grow with the store: the
/// table arm seeks its keys, and the events past the mark are walked from
/// the mark (an export's first chunks start far below it). (A walk that
/// also filters on time or level reads the type's keys until a page
/// matches, as the index did.)
#[tokio::test]
async fn each_walk_reads_about_one_page_however_large_the_store() {
    let mut steps = Vec::new();
    for n in [300, 3000] {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let events = events_after(&[], n);
        store.append_batch(events.clone().into()).await.unwrap();
        store.close().await.unwrap();
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        let head = events.last().unwrap().seq;
        let walks = [
            by_type::Walk::Down { below: None },
            by_type::Walk::Down {
                below: Some(head / 2),
            },
            by_type::Walk::Up { after: 0, head },
            by_type::Walk::Up {
                after: head / 2,
                head,
            },
        ];
        let mut these = Vec::new();
        let by_type_alone = filters().into_iter().filter(|f| {
            by_type::applies(f)
                && *f
                    == EventFilter {
                        event_types: f.event_types.clone(),
                        ..EventFilter::default()
                    }
        });
        for filter in by_type_alone {
            for walk in walks {
                let (sql, params) = by_type::seqs_sql(&filter, walk, 5);
                these.push((
                    format!("{filter:?} {walk:?}"),
                    vm_steps(&conn, &sql, &params),
                ));
            }
        }
        steps.push(these);
    }
    for ((what, small), (_, large)) in steps[0].iter().zip(&steps[1]) {
        assert!(
            *large < small * 3,
            "{what}: {small} steps on 300 events, {large} on 3,000"
        );
    }
}

/// The SQL of the mark reads the key the catch-up writes.
#[test]
fn the_mark_in_sql_reads_the_key_the_catch_up_writes() {
    let key = format!("key = '{}'", deferred::META_INDEXED_UPTO);
    assert!(schema::indexed_upto_sql!().contains(&key));
}

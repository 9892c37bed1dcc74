//! The default store: one SQLite file, `audit.db`, in the configured folder.
//!
//! The file is in WAL mode, so readers (the admin API, an offline `events`
//! or `export` run in another process) never block the writer and the
//! writer never blocks them. Two connections live on tokio-rusqlite's own
//! threads: the writer, which the pipeline's single writer task drives, and
//! a reader for queries, so a page request never waits behind a batch.
//! Exports open a third, short-lived connection on a blocking thread and
//! push chunks through a bounded channel, so memory stays flat whatever
//! the size and the reads stop as soon as the consumer goes away.
//! Retention and the size cap live in `sqlite/purge.rs`.

mod browse;
mod by_type;
mod deferred;
mod purge;
mod schema;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, BoxStream, StreamExt};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, OpenFlags, OptionalExtension, TransactionBehavior};
use serde_json::value::RawValue;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_rusqlite::Connection;

use super::{
    chunk_stream, AuditStore, ChainHead, EventChunk, EventFilter, EventPage, EventQuery,
    EventStream, PurgeReport, RecordPage, RecordStream, Sequenced, StoreError, StoreStats,
    MAX_QUERY_LIMIT,
};
use crate::event::{
    canonical_timestamp, format_timestamp, timestamp_text, AuditEvent, EventRecord, EventType,
    Level,
};

/// The file name inside the store folder.
pub const DB_FILE: &str = "audit.db";

/// How long a statement waits for another connection's lock before the
/// store reports itself unavailable.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Page size of a new store. Every WAL frame is two `pwrite`s (its header
/// and its page) and a checkpoint copies it with a `pread` and a `pwrite`,
/// whatever the page holds; at 16 KiB instead of SQLite's default 4 KiB a
/// saturated writer makes about half the file syscalls per call for the
/// same bytes, and splits B-tree pages a quarter as often. A store created
/// with another size keeps it: the size is fixed when the file is made.
const PAGE_SIZE: i64 = 16 * 1024;
/// WAL bytes after which a commit checkpoints (`wal_autocheckpoint`, set
/// in pages of the store's own size): the WAL file stays near 32 MiB.
const WAL_CHECKPOINT_BYTES: i64 = 32 * 1024 * 1024;

/// The oldest and newest stored timestamps, for the stats: each read from
/// one end of `events_timestamp`.
const OLDEST_SQL: &str = "SELECT MIN(timestamp) FROM events";
const NEWEST_SQL: &str = "SELECT MAX(timestamp) FROM events";

/// Rows read per export step.
const EXPORT_CHUNK: usize = 1000;
/// Chunks an export may read ahead of its consumer.
const EXPORT_READ_AHEAD: usize = 2;

/// Every column, in the order [`read_row`] and [`read_record`] decode them.
const COLUMNS: &str =
    "seq, id, timestamp, event_type, level, message, request_id, metadata, prev_hash, hash";

const INSERT: &str = "INSERT INTO events \
    (seq, id, timestamp, event_type, level, level_rank, message, request_id, metadata, prev_hash, hash) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

/// How hard the writer syncs each commit (SQLite's `synchronous`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// The WAL is synced at checkpoints only: a commit survives a crash of
    /// the process, and a power loss may lose the last commits (the file
    /// stays consistent).
    #[default]
    Normal,
    /// The WAL is synced at every commit: a commit survives a power loss.
    Full,
}

/// How [`SqliteStore::open_with`] sets up the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqliteOptions {
    pub synchronous: Synchronous,
    /// Keep the console's search index (text index, facets and per-minute
    /// rollups) in each batch's transaction (`audit.sqlite_search_index`).
    /// Without it the console's search and overview read the events
    /// themselves, a bounded number per request, and each event written
    /// costs less.
    pub search_index: bool,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            synchronous: Synchronous::Normal,
            search_index: true,
        }
    }
}

/// Most events appended before the level counts and the console's index
/// catch up with them (`sqlite/deferred.rs`).
/// Each page of the index is then written once for thousands of events,
/// not once per commit. A catch-up takes a core for a while (20 to 40 µs
/// an event with the search index), and a call that arrives meanwhile on
/// a small host waits for the other: at 1,000 calls/s, catching up once a
/// second (the time bound below decides there) instead of every 512
/// events took the added p99 down by about 1 ms, the same CPU, and the
/// worst call no slower. The tail a reader adds (events past the mark,
/// read by seq) stays below about 2,048 events at any rate.
pub const INDEX_LAG_EVENTS: usize = 2048;
/// Longest time an appended event waits for them, while appends continue
/// (a search or an overview makes them catch up at once; the stats count
/// what they have not).
pub const INDEX_LAG: Duration = Duration::from_secs(1);

/// The SQLite store. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct SqliteStore {
    /// `None` when opened read-only.
    writer: Option<Connection>,
    reader: Connection,
    path: PathBuf,
    /// Whether the file holds the console's search index (see
    /// [`SqliteOptions::search_index`]); searches and overviews without it
    /// read the events.
    browse_index: bool,
    /// What the writer appended since the last catch-up; the writer's
    /// thread holds the lock across an append, readers only try it.
    index_lag: Arc<Mutex<IndexLag>>,
    /// Whether selections by type read the by-type tables (schema version
    /// 11 on); older files, opened read-only, have them as indexes.
    type_keys: bool,
}

/// Appended events the level counts and the console's index have not
/// taken in yet (see [`deferred::catch_up`]).
#[derive(Debug, Default)]
struct IndexLag {
    events: usize,
    /// When the oldest of them was appended.
    since: Option<Instant>,
}

/// A WHERE clause assembled from fixed fragments with `?` placeholders,
/// and the values bound to them in order. Values never enter the SQL text.
#[derive(Debug, Default, Clone)]
struct Conditions {
    fragments: Vec<String>,
    params: Vec<SqlValue>,
}

/// Decodes one row selected with [`COLUMNS`].
type ReadRow<E> = fn(&rusqlite::Row<'_>) -> Result<E, StoreError>;

// === impl SqliteStore ===

impl SqliteStore {
    /// Opens (creating if needed) `dir/audit.db` for reading and writing,
    /// creating `dir` too. Sets WAL mode, `synchronous=NORMAL` and a busy
    /// timeout, and applies any pending schema migrations.
    pub async fn open(dir: &Path) -> Result<SqliteStore, StoreError> {
        Self::open_with(dir, SqliteOptions::default()).await
    }

    /// As [`open`](Self::open), with the given options.
    pub async fn open_with(dir: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            StoreError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join(DB_FILE);
        let writer = Connection::open(&path).await.map_err(StoreError::from)?;
        writer
            .call(move |conn| {
                configure(conn)?;
                // Only takes effect on a file with no tables yet, and must
                // come before WAL mode is set.
                conn.pragma_update(None, "page_size", PAGE_SIZE)?;
                // WAL lets readers in other processes run beside the writer;
                // NORMAL is durable across application crashes, and WAL
                // keeps the file consistent across power loss.
                let mode: String =
                    conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
                if !mode.eq_ignore_ascii_case("wal") {
                    return Err(StoreError::Other(format!(
                        "cannot switch the store to WAL mode (journal_mode is {mode})"
                    )));
                }
                let sync = match options.synchronous {
                    Synchronous::Normal => "NORMAL",
                    Synchronous::Full => "FULL",
                };
                conn.pragma_update(None, "synchronous", sync)?;
                // Each checkpoint syncs the WAL and the file and rewrites the
                // index pages every batch touched; at the default 1,000 pages
                // a busy writer checkpointed about ten times a second.
                let page_size: i64 = conn.pragma_query_value(None, "page_size", |r| r.get(0))?;
                conn.pragma_update(
                    None,
                    "wal_autocheckpoint",
                    WAL_CHECKPOINT_BYTES / page_size.max(512),
                )?;
                schema::migrate(conn)?;
                // What a crash left uncounted and unindexed, before the
                // index may be rebuilt from the events or dropped.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                deferred::catch_up(&tx, schema::has_browse_index(&tx)?)?;
                tx.commit()?;
                schema::set_browse_index(conn, options.search_index)?;
                // Made once; later opens keep the first one.
                conn.execute(
                    "INSERT OR IGNORE INTO meta (key, value) VALUES (?1, ?2)",
                    params![schema::META_SOURCE_ID, uuid::Uuid::now_v7().to_string()],
                )?;
                Ok(())
            })
            .await
            .map_err(from_call)?;
        let reader = open_reader(&path).await?;
        Ok(SqliteStore {
            writer: Some(writer),
            reader,
            path,
            browse_index: options.search_index,
            index_lag: Arc::default(),
            type_keys: true,
        })
    }

    /// Opens an existing `dir/audit.db` for reading only, for offline
    /// commands that run while a server writes the same file. Appends fail;
    /// the schema is checked, never migrated.
    pub async fn open_read_only(dir: &Path) -> Result<SqliteStore, StoreError> {
        let path = dir.join(DB_FILE);
        if !path.is_file() {
            return Err(StoreError::Unavailable(format!(
                "no audit store at {}",
                path.display()
            )));
        }
        let reader = open_reader(&path).await?;
        let (browse_index, type_keys) = reader
            .call(|conn| {
                let version = schema::user_version(conn)?;
                schema::check_supported(version)?;
                Ok((
                    schema::has_browse_index(conn)?,
                    version >= schema::TYPE_KEYS_SINCE,
                ))
            })
            .await
            .map_err(from_call)?;
        Ok(SqliteStore {
            writer: None,
            reader,
            path,
            browse_index,
            index_lag: Arc::default(),
            type_keys,
        })
    }

    /// Makes the level counts and the console's index catch up with every
    /// appended event, so a search or an overview that follows misses none.
    async fn catch_up_now(&self) -> Result<(), StoreError> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        // Nothing pending, and no append under way (an append holds the
        // lock from counting its events to its commit): a read need not
        // queue behind the writer's work.
        if let Ok(lag) = self.index_lag.try_lock() {
            if lag.events == 0 {
                return Ok(());
            }
        }
        let browse_index = self.browse_index;
        let index_lag = Arc::clone(&self.index_lag);
        writer
            .call(move |conn| {
                let mut lag = index_lag.lock().unwrap_or_else(PoisonError::into_inner);
                if lag.events == 0 {
                    return Ok(());
                }
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                deferred::catch_up(&tx, browse_index)?;
                tx.commit()?;
                *lag = IndexLag::default();
                Ok(())
            })
            .await
            .map_err(from_call)
    }

    /// Whether searches and overviews can be answered from the console's
    /// index: it is kept, and it covers every stored event (the writer
    /// makes it; a read-only open, which cannot, reads the events instead
    /// while the writing process has not caught up).
    async fn index_is_current(&self) -> Result<bool, StoreError> {
        if !self.browse_index {
            return Ok(false);
        }
        if self.writer.is_some() {
            self.catch_up_now().await?;
            return Ok(true);
        }
        let (indexed, newest) = self.read(|conn| deferred::lag(conn)).await?;
        Ok(indexed >= newest)
    }

    /// One `meta` value; `None` when unset or when the file predates the
    /// table (a read-only open never migrates).
    async fn meta(&self, key: &'static str) -> Result<Option<String>, StoreError> {
        let conn = self.writer.as_ref().unwrap_or(&self.reader);
        conn.call(move |conn| {
            if schema::user_version(conn)? < schema::META_SINCE {
                return Ok(None);
            }
            let value = conn
                .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
                .query_row([key], |r| r.get(0))
                .optional()?;
            Ok(value)
        })
        .await
        .map_err(from_call)
    }

    /// The database file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn writer(&self) -> Result<&Connection, StoreError> {
        self.writer
            .as_ref()
            .ok_or_else(|| StoreError::Other("the store was opened read-only".into()))
    }

    /// One page, newest first, each row decoded by `read`.
    async fn page<E>(
        &self,
        query: &EventQuery,
        read: ReadRow<E>,
    ) -> Result<EventPage<E>, StoreError>
    where
        E: Sequenced + Send + 'static,
    {
        let limit = query.limit.clamp(1, MAX_QUERY_LIMIT);
        let (sql, params) = page_sql(query, limit, self.type_keys);
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&sql)?;
            let mut rows = stmt.query(params_from_iter(params.iter()))?;
            let mut events = Vec::new();
            while let Some(row) = rows.next()? {
                events.push(read(row)?);
            }
            Ok(EventPage::from_overfetched(events, limit))
        })
        .await
    }

    /// Every matching row, oldest first, decoded by `read` on a blocking
    /// thread of its own.
    fn export_with<E>(
        &self,
        filter: EventFilter,
        read: ReadRow<E>,
    ) -> BoxStream<'static, Result<E, StoreError>>
    where
        E: Sequenced + Send + 'static,
    {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            let error = StoreError::Other("export needs a tokio runtime".into());
            return stream::once(async move { Err(error) }).boxed();
        };
        let (tx, rx) = mpsc::channel::<EventChunk<E>>(EXPORT_READ_AHEAD);
        let path = self.path.clone();
        let type_keys = self.type_keys;
        // Detached on purpose: the task ends on its own when the export is
        // done or the receiver (the download) is dropped.
        drop(runtime.spawn_blocking(move || {
            if let Err(error) = export_chunks(&path, &filter, type_keys, &tx, read) {
                let _ = tx.blocking_send(Err(error));
            }
        }));
        chunk_stream(rx)
    }

    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut rusqlite::Connection) -> Result<R, StoreError> + Send + 'static,
        R: Send + 'static,
    {
        self.reader.call(f).await.map_err(from_call)
    }
}

#[async_trait]
impl AuditStore for SqliteStore {
    fn kind(&self) -> &'static str {
        "sqlite"
    }

    async fn append_batch(&self, events: super::Batch) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let browse_index = self.browse_index;
        let index_lag = Arc::clone(&self.index_lag);
        self.writer()?
            .call(move |conn| {
                // IMMEDIATE takes the write lock first, so contention shows
                // up as BUSY before any row is written.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                {
                    let mut insert = tx.prepare_cached(INSERT)?;
                    for e in events.iter() {
                        let metadata = e.metadata_text();
                        insert.execute(params![
                            e.seq,
                            e.id,
                            timestamp_text(&e.timestamp).as_str(),
                            e.event_type.as_str(),
                            e.level.as_str(),
                            e.level.rank(),
                            e.message,
                            e.request_id,
                            metadata,
                            e.prev_hash,
                            e.hash,
                        ])?;
                    }
                }
                let mut lag = index_lag.lock().unwrap_or_else(PoisonError::into_inner);
                lag.events += events.len();
                let since = *lag.since.get_or_insert_with(Instant::now);
                let catch_up = lag.events >= INDEX_LAG_EVENTS || since.elapsed() >= INDEX_LAG;
                if catch_up {
                    deferred::catch_up(&tx, browse_index)?;
                }
                if let Some(c) = events
                    .iter()
                    .rev()
                    .find(|e| e.event_type == EventType::Checkpoint)
                {
                    schema::set_meta(
                        &tx,
                        schema::META_LATEST_CHECKPOINT,
                        &format!("{}:{}", c.seq, c.hash),
                    )?;
                }
                tx.commit()?;
                if catch_up {
                    *lag = IndexLag::default();
                }
                Ok(())
            })
            .await
            .map_err(from_call)
    }

    async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
        // Read through the writer when there is one: it is the connection
        // that last committed, so the head is never behind the chain.
        let conn = self.writer.as_ref().unwrap_or(&self.reader);
        conn.call(|conn| {
            let head = conn
                .prepare_cached("SELECT seq, hash FROM events ORDER BY seq DESC LIMIT 1")?
                .query_row([], |r| {
                    Ok(ChainHead {
                        seq: r.get(0)?,
                        hash: r.get(1)?,
                    })
                })
                .optional()?;
            Ok(head)
        })
        .await
        .map_err(from_call)
    }

    async fn source_id(&self) -> Result<Option<String>, StoreError> {
        self.meta(schema::META_SOURCE_ID).await
    }

    async fn latest_checkpoint(&self) -> Result<Option<ChainHead>, StoreError> {
        let Some(value) = self.meta(schema::META_LATEST_CHECKPOINT).await? else {
            return Ok(None);
        };
        let parsed = value
            .split_once(':')
            .and_then(|(seq, hash)| Some((seq.parse().ok()?, hash.to_owned())));
        match parsed {
            Some((seq, hash)) => Ok(Some(ChainHead { seq, hash })),
            None => Err(StoreError::Corrupt(format!(
                "meta {}: {value:?} is not seq:hash",
                schema::META_LATEST_CHECKPOINT
            ))),
        }
    }

    async fn records_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let limit = limit.clamp(1, MAX_QUERY_LIMIT) as i64;
        self.read(move |conn| {
            let mut stmt = conn.prepare_cached(&format!(
                "SELECT {COLUMNS} FROM events WHERE seq > ?1 ORDER BY seq ASC LIMIT ?2"
            ))?;
            let mut rows = stmt.query(params![after_seq, limit])?;
            let mut records = Vec::new();
            while let Some(row) = rows.next()? {
                records.push(read_record(row)?);
            }
            Ok(records)
        })
        .await
    }

    async fn ship_cursor(&self, target: &str) -> Result<Option<i64>, StoreError> {
        let target = target.to_owned();
        let conn = self.writer.as_ref().unwrap_or(&self.reader);
        conn.call(move |conn| {
            // A read-only open never migrates: an older file has no cursor.
            if schema::user_version(conn)? < schema::SHIP_CURSOR_SINCE {
                return Ok(None);
            }
            let seq = conn
                .prepare_cached("SELECT seq FROM ship_cursor WHERE target = ?1")?
                .query_row([target], |r| r.get(0))
                .optional()?;
            Ok(seq)
        })
        .await
        .map_err(from_call)
    }

    async fn set_ship_cursor(&self, target: &str, seq: i64) -> Result<(), StoreError> {
        let target = target.to_owned();
        self.writer()?
            .call(move |conn| {
                conn.prepare_cached(
                    "INSERT INTO ship_cursor (target, seq) VALUES (?1, ?2) \
                     ON CONFLICT (target) DO UPDATE SET seq = excluded.seq",
                )?
                .execute(params![target, seq])?;
                Ok(())
            })
            .await
            .map_err(from_call)
    }

    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        self.page(query, read_row).await
    }

    async fn query_records(&self, query: &EventQuery) -> Result<RecordPage, StoreError> {
        self.page(query, read_record).await
    }

    async fn search(
        &self,
        query: &super::browse::SearchQuery,
    ) -> Result<super::browse::SearchPage, StoreError> {
        if query.is_plain() || !self.index_is_current().await? {
            return super::browse::search_by_scan(self, query).await;
        }
        let query = query.clone();
        self.read(move |conn| browse::search(conn, &query)).await
    }

    fn has_text_index(&self) -> bool {
        self.browse_index
    }

    async fn overview(
        &self,
        query: &super::browse::OverviewQuery,
    ) -> Result<super::browse::Overview, StoreError> {
        if !self.index_is_current().await? {
            return super::browse::overview_by_scan(self, query).await;
        }
        let query = *query;
        self.read(move |conn| browse::overview(conn, &query)).await
    }

    async fn get(&self, id: &str) -> Result<Option<AuditEvent>, StoreError> {
        let id = id.to_owned();
        self.read(move |conn| {
            let mut stmt =
                conn.prepare_cached(&format!("SELECT {COLUMNS} FROM events WHERE id = ?"))?;
            let mut rows = stmt.query([id])?;
            match rows.next()? {
                Some(row) => Ok(Some(read_row(row)?)),
                None => Ok(None),
            }
        })
        .await
    }

    fn export(&self, filter: EventFilter) -> EventStream {
        self.export_with(filter, read_row)
    }

    fn export_records(&self, filter: EventFilter) -> RecordStream {
        self.export_with(filter, read_record)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let path = self.path.clone();
        let type_keys = self.type_keys;
        self.read(move |conn| {
            // One read transaction, so that every count is of the same
            // snapshot while the writer commits (the total is the sum by
            // type, and by level).
            let conn = &conn.transaction()?;
            let mut stats = StoreStats::default();
            // Each alone: SQLite answers a lone MIN or MAX from one end of
            // `events_timestamp`; beside a COUNT in one statement it reads
            // every row (46 ms against 2.5 on 275,000 events).
            let oldest: Option<String> = conn
                .prepare_cached(OLDEST_SQL)?
                .query_row([], |r| r.get(0))?;
            let newest: Option<String> = conn
                .prepare_cached(NEWEST_SQL)?
                .query_row([], |r| r.get(0))?;
            stats.oldest_timestamp = oldest;
            stats.newest_timestamp = newest;
            let version = schema::user_version(conn)?;
            stats.by_type = group_counts(
                conn,
                if version >= schema::STATS_COUNTS_SINCE {
                    TYPES_KEPT_AND_TAIL
                } else if type_keys {
                    by_type::COUNTS_SQL
                } else {
                    "SELECT event_type, COUNT(*) FROM events GROUP BY event_type"
                },
            )?;
            // Every event has a type, and the counts are of one snapshot.
            stats.total_events = stats.by_type.values().sum();
            let by_rank: BTreeMap<i64, u64> = {
                // The counts kept, and those of the events the writer has
                // not counted yet (see `sqlite/deferred.rs`).
                let row = |r: &rusqlite::Row<'_>| Ok((r.get(0)?, r.get::<_, i64>(1)?));
                let mut stmt;
                let rows = if version < schema::LEVEL_COUNTS_SINCE {
                    stmt = conn.prepare_cached(LEVELS_COUNTED)?;
                    stmt.query_map([], row)?
                } else if version < schema::INDEXED_UPTO_SINCE {
                    stmt = conn.prepare_cached(LEVELS_KEPT)?;
                    stmt.query_map([], row)?
                } else {
                    stmt = conn.prepare_cached(LEVELS_KEPT_AND_TAIL)?;
                    stmt.query_map([], row)?
                };
                rows.map(|r| r.map(|(rank, n)| (rank, n.max(0) as u64)))
                    .collect::<Result<_, _>>()?
            };
            for (rank, count) in by_rank {
                let level = Level::ALL
                    .iter()
                    .find(|l| l.rank() == rank)
                    .ok_or_else(|| StoreError::Corrupt(format!("unknown level rank {rank}")))?;
                stats.by_level.insert(level.as_str().to_owned(), count);
            }
            if version >= schema::STATS_COUNTS_SINCE {
                stats.violations_by_policy = group_counts(conn, VIOLATIONS_BY_POLICY)?;
                stats.violations_by_severity = group_counts(conn, VIOLATIONS_BY_SEVERITY)?;
            } else {
                let policy = schema::violation_key_sql!("metadata", "policy_name");
                let severity = schema::violation_key_sql!("metadata", "severity");
                let by = |key| violations_read_by(key, type_keys);
                stats.violations_by_policy = group_counts(conn, &by(policy))?;
                stats.violations_by_severity = group_counts(conn, &by(severity))?;
            }
            stats.store_bytes = purge::disk_bytes(&path);
            Ok(stats)
        })
        .await
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        Ok(purge::disk_bytes(self.path()))
    }

    async fn health(&self) -> Result<(), StoreError> {
        let Some(writer) = &self.writer else {
            return self
                .read(|conn| {
                    conn.prepare_cached("SELECT seq FROM events ORDER BY seq DESC LIMIT 1")?
                        .query_row([], |r| r.get::<_, i64>(0))
                        .optional()?;
                    Ok(())
                })
                .await;
        };
        writer
            .call(|conn| {
                conn.prepare_cached("SELECT seq FROM events ORDER BY seq DESC LIMIT 1")?
                    .query_row([], |r| r.get::<_, i64>(0))
                    .optional()?;
                // Taking and releasing the write lock is the cheapest real
                // proof that the next append can commit.
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.rollback()?;
                Ok(())
            })
            .await
            .map_err(from_call)
    }

    async fn close(&self) -> Result<(), StoreError> {
        let Some(writer) = &self.writer else {
            return Ok(());
        };
        self.catch_up_now().await?;
        writer
            .call(|conn| {
                // Copies every committed page into audit.db and empties the
                // WAL, so audit.db alone holds the whole store. A reader in
                // another process may keep part of the WAL alive (the
                // first column says "busy"); the next open finishes it.
                let busy: i64 =
                    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| r.get(0))?;
                if busy != 0 {
                    tracing::warn!("Audit store WAL not fully checkpointed: a reader holds it.");
                }
                Ok(())
            })
            .await
            .map_err(from_call)
    }

    async fn purge_before(&self, before: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        self.purge_before_impl(before).await
    }

    async fn enforce_max_bytes(&self, max_bytes: u64) -> Result<PurgeReport, StoreError> {
        self.enforce_max_bytes_impl(max_bytes).await
    }
}

// === impl Conditions ===

impl Conditions {
    fn from_filter(filter: &EventFilter) -> Self {
        let mut c = Conditions::default();
        if !filter.event_types.is_empty() {
            let (fragment, values) = Self::types_in("event_type", &filter.event_types);
            c.fragments.push(fragment);
            c.params.extend(values);
        }
        // Stored timestamps are fixed-width UTC text, so text order is time
        // order and the bounds compare as strings.
        if let Some(start) = &filter.start_time {
            c.push("timestamp >= ?", format_timestamp(start));
        }
        if let Some(end) = &filter.end_time {
            c.push("timestamp < ?", format_timestamp(end));
        }
        if let Some(request_id) = &filter.request_id {
            c.push("request_id = ?", request_id.clone());
        }
        if let Some(level) = filter.min_level {
            c.push("level_rank >= ?", level.rank());
        }
        if let Some(policy) = &filter.policy_name {
            c.push(
                "json_extract(metadata, '$.policy_name') = ?",
                policy.clone(),
            );
        }
        c
    }

    /// `column IN (?, ...)` over `types`, and its values.
    fn types_in(column: &str, types: &[EventType]) -> (String, Vec<SqlValue>) {
        let placeholders = vec!["?"; types.len()].join(", ");
        let values = types
            .iter()
            .map(|t| SqlValue::Text(t.as_str().to_owned()))
            .collect();
        (format!("{column} IN ({placeholders})"), values)
    }

    fn push(&mut self, fragment: &'static str, value: impl Into<SqlValue>) {
        self.fragments.push(fragment.to_owned());
        self.params.push(value.into());
    }

    fn where_sql(&self) -> String {
        if self.fragments.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.fragments.join(" AND "))
        }
    }
}

// === impl StoreError ===

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ErrorCode as Code;
        let message = error.to_string();
        match error.sqlite_error_code() {
            // A disk that failed a write, a file system remounted read-only
            // or a file that cannot be opened right now may all come back
            // (a remount, an operator's fix): the writer retries these.
            Some(
                Code::DatabaseBusy
                | Code::DatabaseLocked
                | Code::SystemIoFailure
                | Code::ReadOnly
                | Code::CannotOpen
                | Code::PermissionDenied
                | Code::FileLockingProtocolFailed,
            ) => StoreError::Unavailable(message),
            Some(Code::DiskFull) => StoreError::Full(message),
            Some(Code::DatabaseCorrupt | Code::NotADatabase) => StoreError::Corrupt(message),
            Some(Code::ConstraintViolation) => StoreError::Conflict(message),
            _ => StoreError::Other(message),
        }
    }
}

/// The SQL and parameters of a page: `limit + 1` rows, newest first (the
/// extra one only says that another page exists).
///
/// The page's seqs are selected first, then its rows, so the seqs can come
/// from a covering index without reading every matching row only to sort
/// it away. A page that selects by type takes its seqs from the by-type
/// tables (`sqlite/by_type.rs`), or, in a file older than them (opened
/// read-only), from their indexes: one type in a time window, the common
/// audit question, walks that window in `events_type_ts`. Sorting the
/// whole window by seq costs most of the time, so a threshold is found
/// first: the window's newest `limit + 1` rows *by time* (a short walk
/// from the window's end in the index) have seqs at or above some `m`, so
/// at least `limit + 1` rows of the window do, and the page is exactly the
/// newest of those. Only rows at or above `m` then reach the sort; for
/// events stored roughly in time order, that is about one page. The unary
/// `+` keeps the planner from reading `seq >= m` as a range over the
/// table. With a cursor the default plan is kept: it walks
/// `events_type_seq` down from the cursor and stops after one page.
fn page_sql(query: &EventQuery, limit: usize, type_keys: bool) -> (String, Vec<SqlValue>) {
    let filter = &query.filter;
    if type_keys && by_type::applies(filter) {
        let walk = by_type::Walk::Down {
            below: query.before_seq,
        };
        let (seqs, params) = by_type::seqs_sql(filter, walk, limit + 1);
        let sql = format!("SELECT {COLUMNS} FROM events WHERE seq IN ({seqs}) ORDER BY seq DESC");
        return (sql, params);
    }
    let mut conditions = Conditions::from_filter(filter);
    let fetch = SqlValue::Integer(limit as i64 + 1);
    let type_in_window = filter.event_types.len() == 1
        && (filter.start_time.is_some() || filter.end_time.is_some())
        && filter.request_id.is_none()
        && filter.min_level.is_none()
        && filter.policy_name.is_none()
        && query.before_seq.is_none();
    let seqs = if type_in_window {
        let where_sql = conditions.where_sql();
        let mut params = conditions.params.clone();
        params.extend(conditions.params);
        params.push(fetch.clone());
        params.push(fetch);
        conditions.params = params;
        format!(
            "SELECT seq FROM events{where_sql} AND +seq >= \
             (SELECT MIN(seq) FROM (SELECT seq FROM events{where_sql} \
             ORDER BY timestamp DESC LIMIT ?)) ORDER BY seq DESC LIMIT ?"
        )
    } else {
        if let Some(before) = query.before_seq {
            conditions.push("seq < ?", before);
        }
        conditions.params.push(fetch);
        format!(
            "SELECT seq FROM events{} ORDER BY seq DESC LIMIT ?",
            conditions.where_sql()
        )
    };
    let sql = format!("SELECT {COLUMNS} FROM events WHERE seq IN ({seqs}) ORDER BY seq DESC");
    (sql, conditions.params)
}

fn from_call(error: tokio_rusqlite::Error<StoreError>) -> StoreError {
    match error {
        tokio_rusqlite::Error::Error(e) => e,
        tokio_rusqlite::Error::ConnectionClosed => {
            StoreError::Unavailable("the database connection is closed".into())
        }
        other => StoreError::Other(other.to_string()),
    }
}

/// Events by level rank in a file older than the `level_counts` table.
const LEVELS_COUNTED: &str = "SELECT level_rank, COUNT(*) FROM events GROUP BY level_rank";
/// Events by level rank from the `level_counts` table of a file whose
/// writer counted every event as it stored it.
const LEVELS_KEPT: &str = "SELECT level_rank, events FROM level_counts WHERE events > 0";
/// The counts a table keeps up to the mark, by its `$key` column, and the
/// events after it, keyed by `$tail_key` over the events (`$tail_filter`
/// narrows them), in one statement: one snapshot, since a catch-up
/// committed between two reads would count its events twice. Keys left
/// at zero by purges are not listed.
macro_rules! kept_and_tail {
    ($key:literal, $table:literal, $tail_key:expr, $tail_filter:literal) => {
        concat!(
            "SELECT ",
            $key,
            ", SUM(n) FROM (SELECT ",
            $key,
            ", events AS n FROM ",
            $table,
            " UNION ALL SELECT ",
            $tail_key,
            ", COUNT(*) FROM events NOT INDEXED WHERE seq > ",
            schema::indexed_upto_sql!(),
            $tail_filter,
            " GROUP BY 1) GROUP BY 1 HAVING SUM(n) > 0"
        )
    };
}
/// Events by level rank.
const LEVELS_KEPT_AND_TAIL: &str = kept_and_tail!("level_rank", "level_counts", "level_rank", "");
/// Events by type.
const TYPES_KEPT_AND_TAIL: &str = kept_and_tail!("event_type", "type_counts", "event_type", "");
/// Violations by policy and by severity (see `schema::violation_key_sql`).
const VIOLATIONS_BY_POLICY: &str = kept_and_tail!(
    "policy",
    "violation_counts",
    schema::violation_key_sql!("metadata", "policy_name"),
    " AND event_type = 'COMPLIANCE_VIOLATION'"
);
const VIOLATIONS_BY_SEVERITY: &str = kept_and_tail!(
    "severity",
    "violation_counts",
    schema::violation_key_sql!("metadata", "severity"),
    " AND event_type = 'COMPLIANCE_VIOLATION'"
);

/// Violations by one key of their metadata (`key_sql`, a
/// `schema::violation_key_sql`) in a file older than `violation_counts`
/// (opened read-only): every violation's metadata read.
fn violations_read_by(key_sql: &str, type_keys: bool) -> String {
    let violations = if type_keys {
        format!("seq IN ({})", by_type::VIOLATION_SEQS_SQL)
    } else {
        "event_type = 'COMPLIANCE_VIOLATION'".to_owned()
    };
    format!("SELECT {key_sql}, COUNT(*) FROM events WHERE {violations} GROUP BY 1")
}

fn configure(conn: &rusqlite::Connection) -> Result<(), StoreError> {
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // Queries differ by which filters are present; keep every shape hot.
    conn.set_prepared_statement_cache_capacity(64);
    Ok(())
}

fn read_only_flags() -> OpenFlags {
    OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX | OpenFlags::SQLITE_OPEN_URI
}

async fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let reader = Connection::open_with_flags(path, read_only_flags())
        .await
        .map_err(StoreError::from)?;
    reader
        .call(|conn| configure(conn))
        .await
        .map_err(from_call)?;
    Ok(reader)
}

/// Reads every matching event up to the head seen at the start, oldest
/// first, in keyset chunks. Runs on a blocking thread with its own
/// connection; returns early once the receiver is gone.
fn export_chunks<E: Sequenced>(
    path: &Path,
    filter: &EventFilter,
    type_keys: bool,
    tx: &mpsc::Sender<EventChunk<E>>,
    read: ReadRow<E>,
) -> Result<(), StoreError> {
    let conn = rusqlite::Connection::open_with_flags(path, read_only_flags())?;
    configure(&conn)?;
    // Fixing the upper bound first makes an export of a busy store finish,
    // and makes it the store as it was when the download began.
    let head: Option<i64> = conn.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))?;
    let Some(head) = head else {
        return Ok(());
    };
    // The next chunk's SQL (the same text every time) and values.
    let keyed = type_keys && by_type::applies(filter);
    let chunk_after = |after: i64| {
        if keyed {
            let walk = by_type::Walk::Up { after, head };
            let (seqs, params) = by_type::seqs_sql(filter, walk, EXPORT_CHUNK);
            let sql =
                format!("SELECT {COLUMNS} FROM events WHERE seq IN ({seqs}) ORDER BY seq ASC");
            return (sql, params);
        }
        let mut conditions = Conditions::from_filter(filter);
        conditions.push("seq <= ?", head);
        conditions.push("seq > ?", after);
        conditions
            .params
            .push(SqlValue::Integer(EXPORT_CHUNK as i64));
        let sql = format!(
            "SELECT {COLUMNS} FROM events{} ORDER BY seq ASC LIMIT ?",
            conditions.where_sql()
        );
        (sql, conditions.params)
    };
    let mut stmt = conn.prepare(&chunk_after(i64::MIN).0)?;
    let mut after = i64::MIN;
    loop {
        if tx.is_closed() {
            return Ok(());
        }
        let (_, params) = chunk_after(after);
        let mut rows = stmt.query(params_from_iter(params.iter()))?;
        let mut chunk = Vec::with_capacity(EXPORT_CHUNK);
        while let Some(row) = rows.next()? {
            match read(row) {
                Ok(event) => chunk.push(event),
                Err(error) => {
                    // Hand over the good rows before it, so the consumer
                    // stops exactly at the bad one.
                    if !chunk.is_empty() {
                        let _ = tx.blocking_send(Ok(chunk));
                    }
                    return Err(error);
                }
            }
        }
        drop(rows);
        let full = chunk.len() == EXPORT_CHUNK;
        match chunk.last() {
            Some(last) => after = last.seq(),
            None => return Ok(()),
        }
        if tx.blocking_send(Ok(chunk)).is_err() || !full {
            return Ok(());
        }
    }
}

/// Decodes one row selected with [`COLUMNS`]. A value that cannot be the
/// field it stands for makes the row corrupt, named by its seq.
fn read_row(row: &rusqlite::Row<'_>) -> Result<AuditEvent, StoreError> {
    let record = read_record(row)?;
    let seq = record.seq;
    record
        .into_event()
        .map_err(|what| StoreError::Corrupt(format!("event seq {seq}: {what}")))
}

/// Decodes one row selected with [`COLUMNS`] as a record: checks each
/// value as [`read_row`] does, but only validates the metadata text and
/// keeps it, instead of building a `Value` from it.
fn read_record(row: &rusqlite::Row<'_>) -> Result<EventRecord, StoreError> {
    let seq: i64 = row.get(0)?;
    let corrupt = |what: &str| StoreError::Corrupt(format!("event seq {seq}: {what}"));
    let text = |i: usize, name: &str| -> Result<String, StoreError> {
        row.get::<_, String>(i)
            .map_err(|_| corrupt(&format!("{name} is not text")))
    };
    let borrowed = |i: usize, name: &str| -> Result<&str, StoreError> {
        row.get_ref(i)
            .ok()
            .and_then(|v| v.as_str().ok())
            .ok_or_else(|| corrupt(&format!("{name} is not text")))
    };
    let timestamp = canonical_timestamp(text(2, "timestamp")?)
        .ok_or_else(|| corrupt("timestamp is not RFC 3339"))?;
    let event_type: EventType = borrowed(3, "event_type")?
        .parse()
        .map_err(|_| corrupt("event_type is not a valid type"))?;
    let level: Level = borrowed(4, "level")?
        .parse()
        .map_err(|_| corrupt("level is not a valid level"))?;
    let request_id: Option<String> = row
        .get(6)
        .map_err(|_| corrupt("request_id is not text or null"))?;
    let metadata = RawValue::from_string(text(7, "metadata")?)
        .map_err(|_| corrupt("metadata is not valid JSON"))?;
    Ok(EventRecord {
        id: text(1, "id")?,
        seq,
        timestamp,
        event_type,
        level,
        message: text(5, "message")?,
        request_id,
        metadata,
        prev_hash: text(8, "prev_hash")?,
        hash: text(9, "hash")?,
        origin: None,
    })
}

fn group_counts(
    conn: &rusqlite::Connection,
    sql: &str,
) -> Result<BTreeMap<String, u64>, StoreError> {
    let mut stmt = conn.prepare_cached(sql)?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
    let mut counts = BTreeMap::new();
    for row in rows {
        let (key, n) = row?;
        counts.insert(key, n.max(0) as u64);
    }
    Ok(counts)
}

fn wal_path(path: &Path) -> PathBuf {
    let mut wal = path.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

fn file_size(path: &Path) -> u64 {
    std::fs::metadata(path).map_or(0, |m| m.len())
}

#[cfg(test)]
mod tests;

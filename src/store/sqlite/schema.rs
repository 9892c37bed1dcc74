//! The SQLite schema and its migrations.
//!
//! The schema version lives in `PRAGMA user_version`. [`MIGRATIONS`] is
//! ordered: entry `i` takes the database from version `i` to `i + 1`. A
//! release that needs a new column appends a migration here and never edits
//! an old one, so every existing file upgrades in place.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// One schema step.
enum Migration {
    /// Statements run in one IMMEDIATE transaction with the version bump.
    Sql(&'static str),
    /// Switches the file to `auto_vacuum = INCREMENTAL`, so pages freed by
    /// retention can be handed back to the file system a few at a time
    /// (`PRAGMA incremental_vacuum`). The mode can only change on a file
    /// without tables or through a `VACUUM`, which rewrites the file and
    /// cannot run inside a transaction; it is a one-off, so a large store
    /// pays for the rewrite once, at the first start of this version.
    IncrementalAutoVacuum,
}

/// Ordered migrations; the schema version is the number applied.
const MIGRATIONS: &[Migration] = &[
    // 1: the events table and one index per query filter. `seq` is the
    // rowid, so keyset paging on it needs no extra index; the compound
    // indexes end in `seq` so a filtered page is read in `seq` order.
    Migration::Sql(
        "CREATE TABLE events (
        seq        INTEGER PRIMARY KEY,
        id         TEXT    NOT NULL UNIQUE,
        timestamp  TEXT    NOT NULL,
        event_type TEXT    NOT NULL,
        level      TEXT    NOT NULL,
        level_rank INTEGER NOT NULL,
        message    TEXT    NOT NULL,
        request_id TEXT,
        metadata   TEXT    NOT NULL,
        prev_hash  TEXT    NOT NULL,
        hash       TEXT    NOT NULL
    );
    CREATE INDEX events_timestamp ON events (timestamp);
    CREATE INDEX events_type_seq ON events (event_type, seq);
    CREATE INDEX events_request_id ON events (request_id);
    CREATE INDEX events_level_seq ON events (level_rank, seq);",
    ),
    // 2: retention and the size cap shrink the file.
    Migration::IncrementalAutoVacuum,
    // 3: type + time window queries. Without it, a page of one type in a
    // past window walks `events_type_seq` from the newest row back to the
    // window (seconds on a million events); with it the window is one
    // covering range, sorted by `seq` under the LIMIT.
    Migration::Sql(
        "CREATE INDEX IF NOT EXISTS events_type_ts ON events (event_type, timestamp, seq);",
    ),
    // 4: what the store knows about itself: its `source_id` (made once, when
    // the store is opened for writing by a build with this step) and the
    // newest checkpoint appended, kept apart from the events so that a
    // tail cut from the events is noticed.
    Migration::Sql("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"),
    // 5: one row per shipping target: the last seq it acknowledged. The
    // local store is the outbox, so the cursor commits beside the events.
    Migration::Sql(
        "CREATE TABLE IF NOT EXISTS ship_cursor (target TEXT PRIMARY KEY, seq INTEGER NOT NULL);",
    ),
    // 6: what the web console searches and counts without reading event
    // metadata: an FTS5 index over the text of prompts (REQUEST
    // `request_data`) and answers (RESPONSE `response_data`), contentless
    // so the text is not stored twice, and one narrow row of facets per
    // REQUEST, RESPONSE and COMPLIANCE_VIOLATION. The store's append writes
    // both in the transaction of the events (from the values it holds, see
    // `sqlite/browse.rs`); a trigger deletes their rows with the events,
    // whichever process purges. Existing rows are back-filled here (from
    // scratch, so a file whose version was set back is rebuilt, not
    // doubled).
    Migration::Sql(BROWSE_INDEX),
    // 7: fewer B-trees written per event. `event_facets_type_ts` answered
    // only the overview's latest violations, which `events_type_ts` answers
    // as well (the facets row is then read by its seq). The facet indexes
    // hold only rows that have the facet: a search asks for a value, never
    // for a missing one, and most rows lack one (a violation has no model
    // or operation, only a RESPONSE has an outcome), so each row written
    // costs 2 index entries here instead of 4.
    Migration::Sql(FACET_INDEXES),
    // 8: fewer passes of each posting through the text index's merges.
    // Every commit writes a new segment; FTS5 merges `automerge` segments
    // of a level into one of the next, so a posting is rewritten once per
    // level, and there are log base `automerge` of the segment count
    // levels. At 16 instead of the default 4 that is half the levels;
    // `crisismerge` (segments of a level that force a whole-level merge
    // at once, default 16) must stay above it, or it merges first.
    // Searches read up to 15 segments a level instead of 3, with half the
    // levels. Only later merges follow the setting.
    Migration::Sql(FTS_MERGE_SETTINGS),
    // 9: the per-level counts of `/api/stats` from a row per level instead
    // of the index `events_level_seq`, which served nothing else (the
    // minimum-level filter walks the table by seq). The index cost an entry
    // per event written (about 4,700 instructions); the writer now adds a
    // batch's counts with one upsert per level it holds, and a trigger takes
    // purged events back out.
    Migration::Sql(LEVEL_COUNTS),
    // 10: the level counts and the console's index may trail the events
    // (the writer adds a few hundred at a time, see `sqlite/deferred.rs`);
    // `meta` keeps the newest seq they cover. Every earlier build counted
    // and indexed in the events' own transaction, so an existing file is
    // covered up to its newest. The level counts' delete trigger takes
    // back only events at or before the mark: one deleted before it was
    // counted never will be.
    Migration::Sql(INDEXED_UPTO),
    // 11: the by-type lookups trail the events with the level counts. As
    // indexes of `events` they were written in every commit, and cost more
    // pages than the others: each type grows in the middle of the tree,
    // so a commit wrote a leaf per type, and a split there rewrote three
    // leaves and their parent (SQLite rebalances a page with its two
    // neighbours); at 1,000 calls/s the two took about 10 of a commit's
    // 23 pages. As tables of their own (the same keys) the catch-up
    // writes them a few hundred events at a time; readers add the events
    // past the mark.
    Migration::Sql(TYPE_KEYS),
    // 12: the counts of `/api/stats` by type and by violation policy and
    // severity from a row per key, as the level counts are, instead of
    // reading every key: on a million events (a third of them violations)
    // the types took 95 ms to count from `events_by_type`, and each
    // violation key 600 ms of `json_extract` over every violation. They
    // trail the events with the level counts; readers add the events past
    // the mark.
    Migration::Sql(STATS_COUNTS),
];

/// The newest seq the deferred tables cover (see `sqlite/deferred.rs`),
/// as SQL: 0 when unset. A macro so that SQL constants can `concat!` it;
/// its key is `deferred::META_INDEXED_UPTO`.
macro_rules! indexed_upto_sql {
    () => {
        "coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'indexed_upto'), 0)"
    };
}
pub(super) use indexed_upto_sql;

/// The key a violation is counted under in `/api/stats`: the metadata's
/// `policy_name` or `severity` when it is a string, else the empty string,
/// as the file and memory stores count it. `$metadata` is the column (or
/// `old.metadata` in a trigger), `$field` the key. A macro so that SQL
/// constants can `concat!` it; the writer, the delete trigger, the stats
/// and the migration must all use the very same expression, or a purge
/// takes back from a row the catch-up never added to.
macro_rules! violation_key_sql {
    ($metadata:literal, $field:literal) => {
        concat!(
            "CASE WHEN json_type(",
            $metadata,
            ", '$.",
            $field,
            "') = 'text' \
             THEN json_extract(",
            $metadata,
            ", '$.",
            $field,
            "') ELSE '' END"
        )
    };
}
pub(super) use violation_key_sql;

/// Migration 12 (see [`MIGRATIONS`]). Filled up to the mark (the
/// by-type table holds exactly the events up to it); an open catches up
/// with the rest.
const STATS_COUNTS: &str = concat!(
    "
    DROP TRIGGER IF EXISTS events_type_counts_delete;
    DROP TABLE IF EXISTS type_counts;
    CREATE TABLE type_counts (
        event_type TEXT PRIMARY KEY, events INTEGER NOT NULL
    ) WITHOUT ROWID;
    INSERT INTO type_counts SELECT event_type, COUNT(*) FROM events_by_type GROUP BY event_type;
    CREATE TRIGGER events_type_counts_delete AFTER DELETE ON events
    WHEN old.seq <= ",
    indexed_upto_sql!(),
    "
    BEGIN
        UPDATE type_counts SET events = events - 1 WHERE event_type = old.event_type;
    END;
    DROP TRIGGER IF EXISTS events_violation_counts_delete;
    DROP TABLE IF EXISTS violation_counts;
    CREATE TABLE violation_counts (
        policy TEXT NOT NULL, severity TEXT NOT NULL, events INTEGER NOT NULL,
        PRIMARY KEY (policy, severity)
    ) WITHOUT ROWID;
    INSERT INTO violation_counts
        SELECT ",
    violation_key_sql!("metadata", "policy_name"),
    ", ",
    violation_key_sql!("metadata", "severity"),
    ", COUNT(*) FROM events
        WHERE seq IN (SELECT seq FROM events_by_type WHERE event_type = 'COMPLIANCE_VIOLATION')
        AND seq <= ",
    indexed_upto_sql!(),
    " GROUP BY 1, 2;
    CREATE TRIGGER events_violation_counts_delete AFTER DELETE ON events
    WHEN old.event_type = 'COMPLIANCE_VIOLATION' AND old.seq <= ",
    indexed_upto_sql!(),
    "
    BEGIN
        UPDATE violation_counts SET events = events - 1
        WHERE policy = ",
    violation_key_sql!("old.metadata", "policy_name"),
    " AND severity = ",
    violation_key_sql!("old.metadata", "severity"),
    ";
    END;"
);

/// Migration 11 (see [`MIGRATIONS`]). Filled up to the mark; an open
/// catches up with the rest.
const TYPE_KEYS: &str = concat!(
    "
    DROP TRIGGER IF EXISTS events_type_keys_delete;
    DROP TABLE IF EXISTS events_by_type;
    DROP TABLE IF EXISTS events_by_type_time;
    CREATE TABLE events_by_type (
        event_type TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (event_type, seq)
    ) WITHOUT ROWID;
    CREATE TABLE events_by_type_time (
        event_type TEXT NOT NULL, timestamp TEXT NOT NULL, seq INTEGER NOT NULL,
        PRIMARY KEY (event_type, timestamp, seq)
    ) WITHOUT ROWID;
    INSERT INTO events_by_type
        SELECT event_type, seq FROM events WHERE seq <= ",
    indexed_upto_sql!(),
    " ORDER BY event_type, seq;
    INSERT INTO events_by_type_time
        SELECT event_type, timestamp, seq FROM events WHERE seq <= ",
    indexed_upto_sql!(),
    " ORDER BY event_type, timestamp, seq;
    CREATE TRIGGER events_type_keys_delete AFTER DELETE ON events
    WHEN old.seq <= ",
    indexed_upto_sql!(),
    "
    BEGIN
        DELETE FROM events_by_type WHERE event_type = old.event_type AND seq = old.seq;
        DELETE FROM events_by_type_time
        WHERE event_type = old.event_type AND timestamp = old.timestamp AND seq = old.seq;
    END;
    DROP INDEX IF EXISTS events_type_seq;
    DROP INDEX IF EXISTS events_type_ts;"
);

/// Migration 10 (see [`MIGRATIONS`]).
const INDEXED_UPTO: &str = "
    INSERT OR REPLACE INTO meta (key, value)
        SELECT 'indexed_upto', coalesce(MAX(seq), 0) FROM events;
    DROP TRIGGER IF EXISTS events_level_counts_delete;
    CREATE TRIGGER events_level_counts_delete AFTER DELETE ON events
    WHEN old.seq <= (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'indexed_upto')
    BEGIN
        UPDATE level_counts SET events = events - 1 WHERE level_rank = old.level_rank;
    END;";

/// Migration 9 (see [`MIGRATIONS`]). Rebuilt from the events, so a file
/// whose version was set back is counted again, not twice.
const LEVEL_COUNTS: &str = "
    DROP TRIGGER IF EXISTS events_level_counts_delete;
    DROP TABLE IF EXISTS level_counts;
    CREATE TABLE level_counts (level_rank INTEGER PRIMARY KEY, events INTEGER NOT NULL);
    INSERT INTO level_counts SELECT level_rank, COUNT(*) FROM events GROUP BY level_rank;
    CREATE TRIGGER events_level_counts_delete AFTER DELETE ON events BEGIN
        UPDATE level_counts SET events = events - 1 WHERE level_rank = old.level_rank;
    END;
    DROP INDEX IF EXISTS events_level_seq;";

/// Migration 7 (see [`MIGRATIONS`]).
const FACET_INDEXES: &str = "
    DROP INDEX IF EXISTS event_facets_type_ts;
    DROP INDEX IF EXISTS event_facets_model;
    DROP INDEX IF EXISTS event_facets_operation;
    DROP INDEX IF EXISTS event_facets_outcome;
    CREATE INDEX event_facets_model ON event_facets (model, seq) WHERE model IS NOT NULL;
    CREATE INDEX event_facets_operation ON event_facets (operation, seq)
        WHERE operation IS NOT NULL;
    CREATE INDEX event_facets_outcome ON event_facets (outcome, seq) WHERE outcome IS NOT NULL;";

/// The statements that remove the console's search index: the text index,
/// the facets, the rollups and the trigger that keeps them. A macro so
/// that [`BROWSE_INDEX`] starts with the same text (`concat!` takes only
/// literals).
macro_rules! drop_browse_index {
    () => {
        "
    DROP TRIGGER IF EXISTS events_browse_delete;
    DROP TABLE IF EXISTS events_fts;
    DROP TABLE IF EXISTS event_facets;
    DROP TABLE IF EXISTS call_minutes;
    DROP TABLE IF EXISTS latency_minutes;
    DROP TABLE IF EXISTS violation_minutes;"
    };
}

/// Removes the console's search index (`audit.sqlite_search_index =
/// false`). The events are untouched.
const DROP_BROWSE_INDEX: &str = drop_browse_index!();

/// Whether the file holds the console's search index. Migration 6 makes
/// it; [`set_browse_index`] may have removed it since.
pub fn has_browse_index(conn: &Connection) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_schema \
         WHERE type = 'trigger' AND name = 'events_browse_delete')",
        [],
        |r| r.get(0),
    )
}

/// Keeps or removes the console's search index, after the migrations
/// have run. Turned on over a file that lacks it (it was off before), the
/// index is built from every stored event, as migrations 6 to 8 built it,
/// in one transaction; turned off, it is dropped, so that a later switch
/// back on rebuilds it whole instead of trusting rows that stopped
/// following the events. Later migrations that touch these tables must
/// allow for their absence. An open calls it after the level counts and
/// any index caught up with the events (`sqlite/deferred.rs`), so a
/// rebuild covers exactly what the mark says is covered.
pub fn set_browse_index(conn: &mut Connection, on: bool) -> Result<(), StoreError> {
    if has_browse_index(conn)? == on {
        return Ok(());
    }
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    if on {
        tx.execute_batch(BROWSE_INDEX)?;
        tx.execute_batch(FACET_INDEXES)?;
        tx.execute_batch(FTS_MERGE_SETTINGS)?;
    } else {
        tx.execute_batch(DROP_BROWSE_INDEX)?;
    }
    tx.commit()?;
    Ok(())
}

/// Migration 8 (see [`MIGRATIONS`]); kept in FTS5's own config table.
pub const FTS_MERGE_SETTINGS: &str =
    "INSERT INTO events_fts (events_fts, rank) VALUES ('automerge', 16);
    INSERT INTO events_fts (events_fts, rank) VALUES ('crisismerge', 64);";

/// Migration 6 (see [`MIGRATIONS`]).
///
/// Besides the text index and the facets, per-minute rollups for the
/// overview: calls, errors and tokens by model, calls by latency bucket
/// (two significant digits, see `latency_bucket` in `sqlite/browse.rs`, the
/// same rounding as `printf('%.1e')` here), and violations by policy and
/// severity. The delete trigger takes a purged event back out of its
/// minute's rollups (reading its facets row before deleting it) and drops
/// rollup rows of minutes before it, so ranges over purged time count
/// nothing.
const BROWSE_INDEX: &str = concat!(
    drop_browse_index!(),
    "
    CREATE VIRTUAL TABLE events_fts USING fts5(
        body, content = '', contentless_delete = 1, tokenize = 'unicode61 remove_diacritics 2'
    );
    CREATE TABLE event_facets (
        seq          INTEGER PRIMARY KEY,
        timestamp    TEXT    NOT NULL,
        event_type   TEXT    NOT NULL,
        model        TEXT,
        operation    TEXT,
        outcome      TEXT,
        status       INTEGER,
        latency_ms   REAL,
        total_tokens INTEGER,
        policy       TEXT,
        severity     TEXT
    );
    CREATE INDEX event_facets_type_ts ON event_facets (event_type, timestamp);
    CREATE INDEX event_facets_model ON event_facets (model, seq);
    CREATE INDEX event_facets_operation ON event_facets (operation, seq);
    CREATE INDEX event_facets_outcome ON event_facets (outcome, seq);
    CREATE TABLE call_minutes (
        minute TEXT NOT NULL, model TEXT NOT NULL,
        calls INTEGER NOT NULL, errors INTEGER NOT NULL, tokens INTEGER NOT NULL,
        PRIMARY KEY (minute, model)
    ) WITHOUT ROWID;
    CREATE TABLE latency_minutes (
        minute TEXT NOT NULL, bucket INTEGER NOT NULL, calls INTEGER NOT NULL,
        PRIMARY KEY (minute, bucket)
    ) WITHOUT ROWID;
    CREATE TABLE violation_minutes (
        minute TEXT NOT NULL, policy TEXT NOT NULL, severity TEXT NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (minute, policy, severity)
    ) WITHOUT ROWID;
    CREATE TRIGGER events_browse_delete AFTER DELETE ON events
    WHEN old.event_type IN ('REQUEST', 'RESPONSE', 'COMPLIANCE_VIOLATION')
    BEGIN
        UPDATE call_minutes SET
            calls = calls - 1,
            errors = errors - (SELECT CASE WHEN coalesce(outcome, 'completed') != 'completed'
                OR coalesce(status, 200) >= 400 THEN 1 ELSE 0 END
                FROM event_facets WHERE seq = old.seq),
            tokens = tokens - (SELECT coalesce(total_tokens, 0) FROM event_facets WHERE seq = old.seq)
        WHERE old.event_type = 'RESPONSE' AND minute = substr(old.timestamp, 1, 16)
            AND model = (SELECT coalesce(model, '') FROM event_facets WHERE seq = old.seq);
        UPDATE latency_minutes SET calls = calls - 1
        WHERE old.event_type = 'RESPONSE' AND minute = substr(old.timestamp, 1, 16)
            AND bucket = (SELECT (CAST(substr(p, instr(p, 'e') + 1) AS INTEGER) + 10) * 100
                    + CAST(substr(p, 1, 1) || substr(p, 3, 1) AS INTEGER)
                FROM (SELECT printf('%.1e', latency_ms) AS p FROM event_facets
                      WHERE seq = old.seq AND latency_ms IS NOT NULL));
        UPDATE violation_minutes SET count = count - 1
        WHERE old.event_type = 'COMPLIANCE_VIOLATION' AND minute = substr(old.timestamp, 1, 16)
            AND policy = (SELECT coalesce(policy, '') FROM event_facets WHERE seq = old.seq)
            AND severity = (SELECT coalesce(severity, '') FROM event_facets WHERE seq = old.seq);
        DELETE FROM call_minutes WHERE minute < substr(old.timestamp, 1, 16);
        DELETE FROM latency_minutes WHERE minute < substr(old.timestamp, 1, 16);
        DELETE FROM violation_minutes WHERE minute < substr(old.timestamp, 1, 16);
        DELETE FROM event_facets WHERE seq = old.seq;
        DELETE FROM events_fts WHERE rowid = old.seq AND old.event_type IN ('REQUEST', 'RESPONSE');
    END;
    INSERT INTO event_facets
    SELECT seq, timestamp, event_type,
        json_extract(metadata, '$.model'),
        json_extract(metadata, '$.operation'),
        json_extract(metadata, '$.outcome'),
        json_extract(metadata, '$.status'),
        json_extract(metadata, '$.latency_ms'),
        json_extract(metadata, '$.usage.total_tokens'),
        json_extract(metadata, '$.policy_name'),
        json_extract(metadata, '$.severity')
    FROM events WHERE event_type IN ('REQUEST', 'RESPONSE', 'COMPLIANCE_VIOLATION');
    INSERT INTO events_fts (rowid, body)
    SELECT seq, (
        SELECT group_concat(value, ' ') FROM json_tree(
            metadata,
            CASE event_type WHEN 'REQUEST' THEN '$.request_data' ELSE '$.response_data' END
        ) WHERE type = 'text'
    )
    FROM events WHERE event_type IN ('REQUEST', 'RESPONSE');
    INSERT INTO call_minutes
    SELECT substr(timestamp, 1, 16), coalesce(model, ''), COUNT(*),
        SUM(CASE WHEN coalesce(outcome, 'completed') != 'completed'
            OR coalesce(status, 200) >= 400 THEN 1 ELSE 0 END),
        SUM(coalesce(total_tokens, 0))
    FROM event_facets WHERE event_type = 'RESPONSE' GROUP BY 1, 2;
    INSERT INTO latency_minutes
    SELECT minute, bucket, COUNT(*) FROM (
        SELECT substr(timestamp, 1, 16) AS minute,
            (CAST(substr(p, instr(p, 'e') + 1) AS INTEGER) + 10) * 100
                + CAST(substr(p, 1, 1) || substr(p, 3, 1) AS INTEGER) AS bucket
        FROM (SELECT timestamp, printf('%.1e', latency_ms) AS p FROM event_facets
              WHERE event_type = 'RESPONSE' AND latency_ms IS NOT NULL)
    ) GROUP BY 1, 2;
    INSERT INTO violation_minutes
    SELECT substr(timestamp, 1, 16), coalesce(policy, ''), coalesce(severity, ''), COUNT(*)
    FROM event_facets WHERE event_type = 'COMPLIANCE_VIOLATION' GROUP BY 1, 2, 3;
"
);

/// Sets one `meta` value (an upsert by key).
pub fn set_meta(conn: &Connection, key: &str, value: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT INTO meta (key, value) VALUES (?1, ?2) \
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )?
    .execute([key, value])?;
    Ok(())
}

/// `meta` key of the store's stable id.
pub const META_SOURCE_ID: &str = "source_id";
/// `meta` key of the newest checkpoint, as `seq:hash`.
pub const META_LATEST_CHECKPOINT: &str = "latest_checkpoint";
/// The first schema version with the `meta` table.
pub const META_SINCE: i64 = 4;

/// The first schema version with the `ship_cursor` table.
pub const SHIP_CURSOR_SINCE: i64 = 5;

/// The first schema version with the `level_counts` table; a store opened
/// read-only at an older version counts its levels from the events.
pub const LEVEL_COUNTS_SINCE: i64 = 9;

/// The first schema version that may keep events the level counts and the
/// console's index have not taken in yet; in older files they cover every
/// event.
pub const INDEXED_UPTO_SINCE: i64 = 10;

/// The first schema version whose by-type lookups are the tables
/// `events_by_type` and `events_by_type_time`, which trail the events
/// (older files have them as indexes of `events`).
pub const TYPE_KEYS_SINCE: i64 = 11;

/// The first schema version with the `type_counts` and `violation_counts`
/// tables; a store opened read-only at an older version counts types and
/// violations from the events.
pub const STATS_COUNTS_SINCE: i64 = 12;

/// `PRAGMA auto_vacuum`'s value for INCREMENTAL.
pub const AUTO_VACUUM_INCREMENTAL: i64 = 2;

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`].
///
/// Each step commits together with its version bump, and re-reads the
/// version under the write lock first, so two processes opening the same
/// file at once cannot both apply a step, and a failed step leaves the file
/// at the version before it.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    migrate_to(conn, SCHEMA_VERSION)
}

/// Applies the migrations up to `target` (tests build older files with it).
pub(super) fn migrate_to(conn: &mut Connection, target: i64) -> Result<(), StoreError> {
    let current = user_version(conn)?;
    check_supported(current)?;
    let steps = MIGRATIONS.iter().enumerate().take(target.max(0) as usize);
    for (i, migration) in steps.skip(current as usize) {
        let version = i as i64;
        match migration {
            Migration::Sql(sql) => {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if user_version(&tx)? != version {
                    continue;
                }
                tx.execute_batch(sql)?;
                tx.pragma_update(None, "user_version", version + 1)?;
                tx.commit()?;
            }
            Migration::IncrementalAutoVacuum => {
                let mode: i64 = conn.pragma_query_value(None, "auto_vacuum", |r| r.get(0))?;
                if mode != AUTO_VACUUM_INCREMENTAL {
                    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
                    conn.execute_batch("VACUUM")?;
                }
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                if user_version(&tx)? == version {
                    tx.pragma_update(None, "user_version", version + 1)?;
                }
                tx.commit()?;
            }
        }
    }
    Ok(())
}

/// Refuses a file written by a newer build, whose columns this one does
/// not know.
pub fn check_supported(version: i64) -> Result<(), StoreError> {
    if !(0..=SCHEMA_VERSION).contains(&version) {
        return Err(StoreError::Other(format!(
            "schema version {version} is not supported by this build (at most {SCHEMA_VERSION})"
        )));
    }
    Ok(())
}

pub fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

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
];

/// `meta` key of the store's stable id.
pub const META_SOURCE_ID: &str = "source_id";
/// `meta` key of the newest checkpoint, as `seq:hash`.
pub const META_LATEST_CHECKPOINT: &str = "latest_checkpoint";
/// The first schema version with the `meta` table.
pub const META_SINCE: i64 = 4;

/// The first schema version with the `ship_cursor` table.
pub const SHIP_CURSOR_SINCE: i64 = 5;

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

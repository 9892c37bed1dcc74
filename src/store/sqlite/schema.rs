//! The SQLite schema and its migrations.
//!
//! The schema version lives in `PRAGMA user_version`. [`MIGRATIONS`] is
//! ordered: entry `i` takes the database from version `i` to `i + 1`. A
//! release that needs a new column appends a migration here and never edits
//! an old one, so every existing file upgrades in place.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::StoreError;

/// Ordered migrations; the schema version is the number applied.
const MIGRATIONS: &[&str] = &[
    // 1: the events table and one index per query filter. `seq` is the
    // rowid, so keyset paging on it needs no extra index; the compound
    // indexes end in `seq` so a filtered page is read in `seq` order.
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
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Brings the database up to [`SCHEMA_VERSION`].
///
/// Runs in one IMMEDIATE transaction, so two processes opening the same
/// file at once cannot both apply a migration, and a failed migration
/// leaves the file at its old version.
pub fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let current = user_version(&tx)?;
    check_supported(current)?;
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)?;
    }
    tx.commit()?;
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

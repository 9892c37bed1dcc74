//! What the writer adds many events at a time instead of in every commit:
//! the counts of `/api/stats` by type, by level and by violation policy
//! and severity, the by-type lookups (`events_by_type`, `events_by_type_time`)
//! and, when kept, the console's index (facets, text index, rollups; see
//! `sqlite/browse.rs`).
//!
//! Each commit rewrites every page it touches, and these tables touch as
//! many pages as the events themselves, so the writer calls [`catch_up`]
//! every [`INDEX_LAG_EVENTS`](super::INDEX_LAG_EVENTS) events or
//! [`INDEX_LAG`](super::INDEX_LAG), in the transaction of the batch that
//! crosses either. [`META_INDEXED_UPTO`] says how far they go. Searches and
//! overviews make the writer catch up first, the stats and the by-type
//! queries add the events past the mark, and an open catches up with what
//! a crash left, so no reader misses a stored event. Events deleted before
//! their turn are simply never counted, keyed or indexed: the delete
//! triggers take back only what lies at or before the mark.

use rusqlite::{Connection, OptionalExtension};

use super::browse::Indexer;
use crate::event::Level;
use crate::store::StoreError;

/// `meta` key of the newest seq the level counts, the by-type tables and
/// the console's index cover: events after it are stored but not yet
/// counted, keyed or indexed.
pub const META_INDEXED_UPTO: &str = "indexed_upto";

/// Counts and keys by type, and with `index` indexes, every stored event
/// after [`META_INDEXED_UPTO`] in `tx`, reading them back from the events
/// table (their pages are in SQLite's cache; the text is borrowed, not
/// copied), and moves the mark to the newest seq.
pub fn catch_up(tx: &rusqlite::Transaction<'_>, index: bool) -> Result<(), StoreError> {
    let upto = indexed_upto(tx)?;
    let mut select = tx.prepare_cached(CATCH_UP_ROWS)?;
    let mut rows = select.query([upto])?;
    let mut indexer = index.then(|| Indexer::new(tx));
    let mut by_type =
        tx.prepare_cached("INSERT INTO events_by_type (event_type, seq) VALUES (?1, ?2)")?;
    let mut by_type_time = tx.prepare_cached(
        "INSERT INTO events_by_type_time (event_type, timestamp, seq) VALUES (?1, ?2, ?3)",
    )?;
    let mut levels = [0i64; Level::ALL.len()];
    // Few types and violation keys, so lists searched in order; a key is
    // copied once per catch-up, not per event.
    let mut types: Vec<(String, i64)> = Vec::new();
    let mut violations: Vec<(String, String, i64)> = Vec::new();
    let mut newest = upto;
    while let Some(row) = rows.next()? {
        newest = row.get(0)?;
        let rank: i64 = row.get(3)?;
        if let Some(i) = Level::ALL.iter().position(|l| l.rank() == rank) {
            levels[i] += 1;
        }
        // A row with a column that is not text cannot be keyed or indexed;
        // it must not stop the appends that carry the mark forward.
        let text = |i| row.get_ref(i).ok().and_then(|v| v.as_str().ok());
        // Counted as the delete triggers take them back: by type whatever
        // the other columns hold, a violation under the keys the select
        // read.
        if let Some(event_type) = text(2) {
            match types.iter_mut().find(|(t, _)| t == event_type) {
                Some((_, n)) => *n += 1,
                None => types.push((event_type.to_owned(), 1)),
            }
        }
        if let (Some(policy), Some(severity)) = (text(5), text(6)) {
            let kept = violations
                .iter_mut()
                .find(|(p, s, _)| p == policy && s == severity);
            match kept {
                Some((_, _, n)) => *n += 1,
                None => violations.push((policy.to_owned(), severity.to_owned(), 1)),
            }
        }
        let (Some(timestamp), Some(event_type)) = (text(1), text(2)) else {
            continue;
        };
        by_type.execute(rusqlite::params![event_type, newest])?;
        by_type_time.execute(rusqlite::params![event_type, timestamp, newest])?;
        let (Some(indexer), Some(metadata)) = (indexer.as_mut(), text(4)) else {
            continue;
        };
        let body = match event_type {
            "REQUEST" => Some("request_data"),
            "RESPONSE" => Some("response_data"),
            "COMPLIANCE_VIOLATION" => None,
            _ => continue,
        };
        indexer.add(newest, timestamp, event_type, body, metadata)?;
    }
    drop(rows);
    drop(select);
    drop(by_type);
    drop(by_type_time);
    if let Some(indexer) = indexer {
        indexer.finish()?;
    }
    if newest == upto {
        return Ok(());
    }
    let mut upsert = tx.prepare_cached(
        "INSERT INTO level_counts (level_rank, events) VALUES (?1, ?2) \
         ON CONFLICT (level_rank) DO UPDATE SET events = events + excluded.events",
    )?;
    for (level, n) in Level::ALL.iter().zip(levels) {
        if n > 0 {
            upsert.execute(rusqlite::params![level.rank(), n])?;
        }
    }
    let mut add_type = tx.prepare_cached(
        "INSERT INTO type_counts (event_type, events) VALUES (?1, ?2) \
         ON CONFLICT (event_type) DO UPDATE SET events = events + excluded.events",
    )?;
    for (event_type, n) in &types {
        add_type.execute(rusqlite::params![event_type, n])?;
    }
    let mut add_violations = tx.prepare_cached(
        "INSERT INTO violation_counts (policy, severity, events) VALUES (?1, ?2, ?3) \
         ON CONFLICT (policy, severity) DO UPDATE SET events = events + excluded.events",
    )?;
    for (policy, severity, n) in &violations {
        add_violations.execute(rusqlite::params![policy, severity, n])?;
    }
    super::schema::set_meta(tx, META_INDEXED_UPTO, &newest.to_string())?;
    Ok(())
}

/// The rows a catch-up reads back, with a violation's keys (null for
/// other events) read by the very expression the delete trigger takes it
/// back with (`schema::violation_key_sql`).
const CATCH_UP_ROWS: &str = concat!(
    "SELECT seq, timestamp, event_type, level_rank, metadata, \
     CASE WHEN event_type = 'COMPLIANCE_VIOLATION' THEN ",
    super::schema::violation_key_sql!("metadata", "policy_name"),
    " END, CASE WHEN event_type = 'COMPLIANCE_VIOLATION' THEN ",
    super::schema::violation_key_sql!("metadata", "severity"),
    " END FROM events WHERE seq > ?1 ORDER BY seq"
);

/// [`META_INDEXED_UPTO`]; 0 when unset.
pub fn indexed_upto(conn: &Connection) -> Result<i64, StoreError> {
    let value: Option<String> = conn
        .prepare_cached("SELECT value FROM meta WHERE key = ?1")?
        .query_row([META_INDEXED_UPTO], |r| r.get(0))
        .optional()?;
    Ok(value.and_then(|v| v.parse().ok()).unwrap_or(0))
}

/// The mark and the newest stored seq, for a reader that cannot make the
/// writer catch up (a read-only open). Files older than the mark counted
/// and indexed every event in its own transaction.
pub fn lag(conn: &Connection) -> Result<(i64, i64), StoreError> {
    let newest: Option<i64> = conn.query_row("SELECT MAX(seq) FROM events", [], |r| r.get(0))?;
    let newest = newest.unwrap_or(0);
    if super::schema::user_version(conn)? < super::schema::INDEXED_UPTO_SINCE {
        return Ok((newest, newest));
    }
    Ok((indexed_upto(conn)?, newest))
}

//! Retention and the size cap for the SQLite store.
//!
//! Both delete the oldest rows in `seq` order, in transactions of at most
//! [`DELETE_CHUNK`] rows, each its own call on the writer connection: an
//! append queued behind a purge waits for one chunk, never for the whole
//! purge. Freed pages are then handed back to the file system in steps
//! (`auto_vacuum = INCREMENTAL`, set by schema migration 2) and the WAL is
//! checkpointed, so the file really shrinks.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::{params, OptionalExtension, TransactionBehavior};

use super::{file_size, from_call, wal_path, SqliteStore, BUSY_TIMEOUT};
use crate::event::format_timestamp;
use crate::store::{PurgeReport, StoreError};

/// Most rows deleted in one transaction.
const DELETE_CHUNK: i64 = 10_000;
/// Fewest rows a size-cap step deletes, so the loop converges quickly when
/// it is close to the cap (pages are freed only once they are empty).
const MIN_CAP_STEP: i64 = 64;
/// Hands at most 512 pages (8 MiB of 16 KiB pages) back to the file system
/// per call, so appends interleave with a long vacuum. (PRAGMA arguments
/// cannot be bound.)
const VACUUM_STEP: &str = "PRAGMA incremental_vacuum(512)";
/// How long the closing checkpoint waits for readers before giving up; a
/// busy checkpoint is retried by SQLite's own auto-checkpoint later.
const CHECKPOINT_WAIT: Duration = Duration::from_millis(100);

/// One deleted run of the oldest rows.
struct Deleted {
    first: i64,
    last: i64,
    count: u64,
}

// === impl SqliteStore ===

impl SqliteStore {
    pub(super) async fn purge_before_impl(
        &self,
        before: DateTime<Utc>,
    ) -> Result<PurgeReport, StoreError> {
        let bytes_before = disk_bytes(&self.path);
        let before = format_timestamp(&before);
        let mut report = PurgeReport {
            bytes_before,
            ..PurgeReport::default()
        };
        loop {
            let before = before.clone();
            let deleted = self
                .writer()?
                .call(move |conn| delete_oldest(conn, DELETE_CHUNK, Some(&before)))
                .await
                .map_err(from_call)?;
            let Some(deleted) = deleted else { break };
            let full = deleted.count == DELETE_CHUNK as u64;
            add(&mut report, &deleted);
            // A short chunk stopped at a row that stays (or at the head).
            if !full {
                break;
            }
        }
        self.finish(report).await
    }

    pub(super) async fn enforce_max_bytes_impl(
        &self,
        max_bytes: u64,
    ) -> Result<PurgeReport, StoreError> {
        let mut report = PurgeReport {
            bytes_before: disk_bytes(&self.path),
            ..PurgeReport::default()
        };
        loop {
            let deleted = self
                .writer()?
                .call(move |conn| {
                    // Live pages, not the file size: pages already freed by
                    // earlier chunks go back to the file system below.
                    let live = live_bytes(conn)?;
                    if live <= max_bytes {
                        return Ok(None);
                    }
                    let (min, max): (Option<i64>, Option<i64>) =
                        conn.query_row("SELECT MIN(seq), MAX(seq) FROM events", [], |r| {
                            Ok((r.get(0)?, r.get(1)?))
                        })?;
                    let (Some(min), Some(max)) = (min, max) else {
                        return Ok(None);
                    };
                    // Seqs are dense unless events were lost, so the span
                    // is a good estimate of the row count, and the excess
                    // over the average row size of the rows to delete.
                    let rows = (max - min + 1).max(1) as u64;
                    let per_row = (live / rows).max(1);
                    let want = ((live - max_bytes).div_ceil(per_row)) as i64;
                    delete_oldest(conn, want.clamp(MIN_CAP_STEP, DELETE_CHUNK), None)
                })
                .await
                .map_err(from_call)?;
            match deleted {
                Some(deleted) => add(&mut report, &deleted),
                None => break,
            }
        }
        self.finish(report).await
    }

    /// Returns freed pages to the file system, checkpoints, and fills in
    /// what remains.
    async fn finish(&self, mut report: PurgeReport) -> Result<PurgeReport, StoreError> {
        if report.removed > 0 {
            loop {
                let more = self
                    .writer()?
                    .call(|conn| {
                        let mut stmt = conn.prepare_cached(VACUUM_STEP)?;
                        let mut rows = stmt.query([])?;
                        while rows.next()?.is_some() {}
                        drop(rows);
                        let free: i64 =
                            conn.pragma_query_value(None, "freelist_count", |r| r.get(0))?;
                        Ok(free > 0)
                    })
                    .await
                    .map_err(from_call)?;
                if !more {
                    break;
                }
            }
            self.writer()?
                .call(|conn| {
                    conn.busy_timeout(CHECKPOINT_WAIT)?;
                    let result = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |r| {
                        r.get::<_, i64>(0)
                    });
                    conn.busy_timeout(BUSY_TIMEOUT)?;
                    if let Err(error) = result {
                        tracing::debug!(%error, "Audit store checkpoint after purge deferred.");
                    }
                    Ok(())
                })
                .await
                .map_err(from_call)?;
        }
        report.oldest_remaining = self
            .writer()?
            .call(|conn| {
                let oldest: Option<String> =
                    conn.query_row("SELECT MIN(timestamp) FROM events", [], |r| r.get(0))?;
                Ok(oldest)
            })
            .await
            .map_err(from_call)?;
        report.bytes_after = disk_bytes(&self.path);
        Ok(report)
    }
}

/// Deletes up to `limit` of the oldest rows in one transaction, stopping at
/// the first row whose timestamp is not before `before` (when given) and
/// never touching the newest row. `None` when nothing could go.
fn delete_oldest(
    conn: &mut rusqlite::Connection,
    limit: i64,
    before: Option<&str>,
) -> Result<Option<Deleted>, StoreError> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
    let deleted = {
        let mut select = tx.prepare_cached(
            "SELECT seq, timestamp FROM events \
             WHERE seq < (SELECT MAX(seq) FROM events) ORDER BY seq LIMIT ?1",
        )?;
        let mut rows = select.query([limit])?;
        let mut deleted: Option<Deleted> = None;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            if let Some(before) = before {
                // Fixed-width UTC text: text order is time order.
                let timestamp: String = row.get(1)?;
                if timestamp.as_str() >= before {
                    break;
                }
            }
            let d = deleted.get_or_insert(Deleted {
                first: seq,
                last: seq,
                count: 0,
            });
            d.last = seq;
            d.count += 1;
        }
        deleted
    };
    if let Some(d) = &deleted {
        tx.prepare_cached("DELETE FROM events WHERE seq >= ?1 AND seq <= ?2")?
            .execute(params![d.first, d.last])?;
    }
    tx.commit()?;
    Ok(deleted)
}

/// Bytes in use by the database's pages (free pages excluded).
fn live_bytes(conn: &rusqlite::Connection) -> Result<u64, StoreError> {
    let pragma = |name: &str| -> Result<i64, StoreError> {
        Ok(conn
            .pragma_query_value(None, name, |r| r.get::<_, i64>(0))
            .optional()?
            .unwrap_or(0))
    };
    let pages = pragma("page_count")? - pragma("freelist_count")?;
    Ok((pages.max(0) as u64).saturating_mul(pragma("page_size")?.max(0) as u64))
}

/// The database file and its WAL, as `stats` counts them.
pub(super) fn disk_bytes(path: &Path) -> u64 {
    file_size(path) + file_size(&wal_path(path))
}

fn add(report: &mut PurgeReport, deleted: &Deleted) {
    report.removed += deleted.count;
    report.first_seq.get_or_insert(deleted.first);
    report.last_seq = Some(deleted.last);
}

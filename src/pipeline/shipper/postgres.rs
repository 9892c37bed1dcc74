//! The `postgres` shipping target: every source's events in one table,
//! partitioned by month, written idempotently.
//!
//! The proxy owns the schema. At connect it applies pending migrations in
//! one transaction under a transaction-level advisory lock, so fifty pods
//! starting at once apply each step once and the others wait for it. The
//! events table is partitioned by month on `timestamp`; the current and
//! next months are created at connect, and any other month a batch needs
//! just before the batch (under the same lock).
//!
//! The key is (`source_id`, `seq`, `timestamp`): a source's `seq` is unique
//! and its event's timestamp never changes, and PostgreSQL wants the
//! partition column in every unique key, which also makes writes
//! idempotent. Each batch is one transaction with a binary `COPY`:
//!
//! - straight into the events table when none of the batch's seqs is there
//!   yet (the usual case: the cursor moves after each commit). Should a row
//!   arrive meanwhile (a batch sent twice at once), the key refuses the
//!   `COPY` and the batch goes the other way;
//! - otherwise (a batch sent again after a crash between the commit and the
//!   cursor's move) into a temporary table of the connection, then
//!   `INSERT … SELECT … ON CONFLICT DO NOTHING` from it, which skips the
//!   rows already there.
//!
//! `metadata` keeps the exact text the local store holds, so each
//! source's hash chain is verifiable on the central side.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, Transaction};
use tokio_util::task::TaskTracker;

use super::{ShipError, ShipTarget, Source};
use crate::config::Secret;
use crate::event::{parse_timestamp, EventRecord};
use crate::store::postgres::schema::{
    create_partitions, describe, drop_months_before, migrate, month_of, next_month, tls_connector,
    CONNECT_TIMEOUT, SCHEMA_LOCK,
};

/// The target's name (its cursor key and metrics label).
pub const NAME: &str = "postgres";

/// The binary `COPY` of a batch straight into the events table, in
/// [`DIRECT_TYPES`] order.
const COPY_DIRECT: &str = "COPY audit_events
    (seq, \"timestamp\", id, event_type, level, level_rank, message, request_id, metadata,
     prev_hash, hash, source_id, pod, namespace, node)
    FROM STDIN (FORMAT binary)";

/// Whether any seq of a batch is in the events table already. A stored
/// event has the timestamp it was sent with, so only the partitions of
/// the batch's time span are looked at.
const ANY_SHIPPED: &str = "SELECT EXISTS (SELECT 1 FROM audit_events
    WHERE source_id = $1 AND seq BETWEEN $2 AND $3 AND \"timestamp\" BETWEEN $4 AND $5)";

/// The per-connection table a batch is copied into when some of it may be
/// in the events table already. Only the event's own columns travel: the
/// source's id, pod, namespace and node are the same for the whole batch,
/// so the `INSERT` adds them once as parameters. Its columns are taken
/// from the events table, so the two cannot drift apart.
const CREATE_INCOMING: &str = "CREATE TEMP TABLE IF NOT EXISTS audit_events_incoming
    ON COMMIT DELETE ROWS
    AS SELECT seq, \"timestamp\", id, event_type, level, level_rank, message, request_id,
        metadata, prev_hash, hash
    FROM audit_events WITH NO DATA";

/// The binary `COPY` of a batch; its column types are the first eleven of
/// [`DIRECT_TYPES`].
const COPY_INCOMING: &str = "COPY audit_events_incoming
    (seq, \"timestamp\", id, event_type, level, level_rank, message, request_id, metadata,
     prev_hash, hash)
    FROM STDIN (FORMAT binary)";

/// The column types of [`COPY_DIRECT`]; the first eleven are those of
/// [`COPY_INCOMING`].
const DIRECT_TYPES: [Type; 15] = [
    Type::INT8,
    Type::TIMESTAMPTZ,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::INT2,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
    Type::TEXT,
];

/// The event's own columns of a row.
const EVENT_COLUMNS: usize = 11;

/// Moves the copied batch into the events table; a (source, seq) already
/// there is skipped, so a batch sent again adds nothing.
const INSERT_INCOMING: &str = "INSERT INTO audit_events
    (source_id, seq, \"timestamp\", id, event_type, level, level_rank, message,
     request_id, metadata, prev_hash, hash, pod, namespace, node)
    SELECT $1, seq, \"timestamp\", id, event_type, level, level_rank, message,
           request_id, metadata, prev_hash, hash, $2, $3, $4
    FROM audit_events_incoming
    ON CONFLICT DO NOTHING";

/// A PostgreSQL database events are shipped to. One connection, opened
/// on first use and again after any failure.
pub struct PostgresTarget {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    state: Mutex<Connected>,
    /// Runs each connection's I/O task; a task ends with its client.
    connections: TaskTracker,
    /// `shipping.central_retention_days`, when not 0.
    retention: Option<chrono::Duration>,
}

/// The open connection, the months known to have a partition, and when
/// central retention runs next.
#[derive(Default)]
struct Connected {
    client: Option<Client>,
    /// Whether this connection made its incoming table.
    incoming: bool,
    months: BTreeSet<(i32, u32)>,
    /// `None`: at the next batch.
    retention_due: Option<tokio::time::Instant>,
}

/// How often a target applies central retention (every pod does, under
/// the schema lock; all but the first find nothing to drop).
const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

// === impl PostgresTarget ===

impl PostgresTarget {
    /// A target for `dsn` (checked when the configuration was loaded). No
    /// connection is made until the first batch. With `retention_days`
    /// above 0, months of the central table wholly older than that are
    /// dropped before the first batch and hourly after.
    pub fn new(dsn: &Secret, retention_days: u32) -> Result<Self, String> {
        let mut config: tokio_postgres::Config = dsn
            .expose()
            .parse()
            .map_err(|e| format!("shipping.postgres_dsn is not a valid connection string: {e}"))?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("llm-audit-proxy");
        }
        Ok(Self {
            config,
            tls: tls_connector(),
            state: Mutex::new(Connected::default()),
            connections: TaskTracker::new(),
            retention: (retention_days > 0)
                .then(|| chrono::Duration::days(i64::from(retention_days))),
        })
    }

    /// Drops the months past retention, when due. A failure is logged and
    /// tried again at the next interval: it never holds shipping.
    async fn apply_retention(&self, state: &mut Connected) {
        let (Some(retention), Some(client)) = (self.retention, state.client.as_mut()) else {
            return;
        };
        let now = tokio::time::Instant::now();
        if state.retention_due.is_some_and(|due| now < due) {
            return;
        }
        state.retention_due = Some(now + RETENTION_INTERVAL);
        let cutoff = crate::event::now() - retention;
        match drop_months_before(client, cutoff).await {
            Ok(dropped) if dropped.is_empty() => {}
            Ok(dropped) => {
                // A back-dated batch into a dropped month makes it again.
                state
                    .months
                    .retain(|&(y, m)| !dropped.contains(&format!("audit_events_{y:04}_{m:02}")));
                tracing::info!(
                    target = NAME,
                    partitions = ?dropped,
                    "Central retention dropped months older than shipping.central_retention_days."
                );
            }
            Err(error) => {
                tracing::warn!(target = NAME, error = %describe(&error), "Central retention failed; tried again later.");
            }
        }
    }

    /// Connects and brings the schema up to date.
    async fn connect(&self) -> Result<(Client, BTreeSet<(i32, u32)>), ShipError> {
        let (mut client, connection) =
            self.config
                .connect(self.tls.clone())
                .await
                .map_err(|e| ShipError::Connect {
                    target: NAME,
                    message: describe(&e),
                })?;
        self.connections.spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(target = NAME, error = %describe(&error), "Shipping connection closed.");
            }
        });
        let now = crate::event::now();
        let ahead: BTreeSet<(i32, u32)> = [month_of(now), next_month(month_of(now))].into();
        migrate(&mut client, &ahead).await.map_err(write_error)?;
        Ok((client, ahead))
    }
}

#[async_trait]
impl ShipTarget for PostgresTarget {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn write(&self, source: &Source, batch: &[EventRecord]) -> Result<(), ShipError> {
        let (Some(first), Some(last)) = (batch.first(), batch.last()) else {
            return Ok(());
        };
        let (first, last) = (first.seq, last.seq);
        let timestamps = batch
            .iter()
            .map(|r| {
                parse_timestamp(&r.timestamp).ok_or_else(|| ShipError::Write {
                    target: NAME,
                    message: format!("event seq {}: timestamp is not RFC 3339", r.seq),
                })
            })
            .collect::<Result<Vec<DateTime<Utc>>, _>>()?;
        // Back-dated events may come out of time order.
        let (Some(&earliest), Some(&latest)) = (timestamps.iter().min(), timestamps.iter().max())
        else {
            return Ok(());
        };
        let mut state = self.state.lock().await;
        if state.client.is_none() {
            let (client, months) = self.connect().await?;
            state.client = Some(client);
            state.months = months;
            state.incoming = false;
        }
        self.apply_retention(&mut state).await;
        let Connected {
            client,
            months,
            incoming,
            ..
        } = &mut *state;
        let Some(client) = client.as_mut() else {
            return Err(ShipError::Connect {
                target: NAME,
                message: "no connection".to_owned(),
            });
        };
        let needed: BTreeSet<(i32, u32)> = timestamps
            .iter()
            .map(|t| month_of(*t))
            .filter(|m| !months.contains(m))
            .collect();
        let result = async {
            if !needed.is_empty() {
                let tx = client.transaction().await?;
                tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
                    .await?;
                create_partitions(&tx, &needed).await?;
                tx.commit().await?;
            }
            let shipped: bool = client
                .query_one(
                    ANY_SHIPPED,
                    &[&source.source_id, &first, &last, &earliest, &latest],
                )
                .await?
                .get(0);
            if !shipped {
                match copy_direct(client, source, batch, &timestamps).await {
                    Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {}
                    done => return done,
                }
            }
            if !*incoming {
                client.batch_execute(CREATE_INCOMING).await?;
                *incoming = true;
            }
            copy_merged(client, source, batch, &timestamps).await
        }
        .await;
        match result {
            Ok(()) => {
                months.extend(needed);
                Ok(())
            }
            Err(error) => {
                // A fresh connection next time: this one may be broken.
                state.client = None;
                Err(write_error(error))
            }
        }
    }
}

/// Copies `batch` into the events table in one transaction. The commit
/// returns once PostgreSQL has the batch durably (synchronous_commit):
/// only then may the cursor move.
async fn copy_direct(
    client: &mut Client,
    source: &Source,
    batch: &[EventRecord],
    timestamps: &[DateTime<Utc>],
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    copy_rows(
        &tx,
        COPY_DIRECT,
        DIRECT_TYPES.len(),
        source,
        batch,
        timestamps,
    )
    .await?;
    tx.commit().await
}

/// Copies `batch` into the incoming table, then adds to the events table
/// the rows it does not hold yet, in one transaction. The commit also
/// empties the incoming table (`ON COMMIT DELETE ROWS`).
async fn copy_merged(
    client: &mut Client,
    source: &Source,
    batch: &[EventRecord],
    timestamps: &[DateTime<Utc>],
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    copy_rows(&tx, COPY_INCOMING, EVENT_COLUMNS, source, batch, timestamps).await?;
    tx.execute(
        INSERT_INCOMING,
        &[
            &source.source_id,
            &source.pod,
            &source.namespace,
            &source.node,
        ],
    )
    .await?;
    tx.commit().await
}

/// One binary `COPY` of `batch`, each row's first `columns` of
/// [`DIRECT_TYPES`] (the event's, then the source's). Binary: no text to
/// format here nor to parse on the server.
async fn copy_rows(
    tx: &Transaction<'_>,
    copy: &str,
    columns: usize,
    source: &Source,
    batch: &[EventRecord],
    timestamps: &[DateTime<Utc>],
) -> Result<u64, tokio_postgres::Error> {
    let sink = tx.copy_in(copy).await?;
    let writer = BinaryCopyInWriter::new(sink, &DIRECT_TYPES[..columns]);
    let mut writer = std::pin::pin!(writer);
    for (r, ts) in batch.iter().zip(timestamps) {
        let level_rank = i16::try_from(r.level.rank()).unwrap_or(i16::MAX);
        let row: [&(dyn ToSql + Sync); 15] = [
            &r.seq,
            ts,
            &r.id,
            &r.event_type.as_str(),
            &r.level.as_str(),
            &level_rank,
            &r.message,
            &r.request_id,
            &r.metadata.get(),
            &r.prev_hash,
            &r.hash,
            &source.source_id,
            &source.pod,
            &source.namespace,
            &source.node,
        ];
        writer.as_mut().write(&row[..columns]).await?;
    }
    writer.finish().await
}

fn write_error(error: tokio_postgres::Error) -> ShipError {
    let message = describe(&error);
    if error.is_closed() || error.as_db_error().is_none() {
        ShipError::Connect {
            target: NAME,
            message,
        }
    } else {
        ShipError::Write {
            target: NAME,
            message,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn months_roll_over_the_year() {
        assert_eq!(next_month((2026, 11)), (2026, 12));
        assert_eq!(next_month((2026, 12)), (2027, 1));
    }

    #[test]
    fn the_config_names_the_target_as_its_cursor_key() {
        let shipping = crate::config::ShippingConfig {
            postgres: Some(crate::config::PostgresTarget {
                dsn: Secret::new("postgres://a@h/db"),
            }),
            ..Default::default()
        };
        assert_eq!(shipping.target_names(), [NAME]);
    }

    #[test]
    fn a_target_never_shows_its_password() {
        let target = PostgresTarget::new(
            &Secret::new("postgres://audit:s3cr3t-pw@db.example/audit"),
            0,
        )
        .unwrap();
        assert!(!format!("{:?}", target.config).contains("s3cr3t-pw"));
    }
}

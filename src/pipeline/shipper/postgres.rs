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
//! partition column in every unique key. Each batch is one transaction of
//! one `INSERT … SELECT FROM unnest(…) ON CONFLICT DO NOTHING`: a batch
//! sent twice leaves one row per event. `metadata` keeps the exact text
//! the local store holds, so each source's hash chain is verifiable on the
//! central side.

use std::collections::BTreeSet;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use tokio::sync::Mutex;
use tokio_postgres::Client;
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

/// One batch, one statement: the columns travel as arrays.
const INSERT: &str = "INSERT INTO audit_events
    (source_id, seq, \"timestamp\", id, event_type, level, level_rank, message,
     request_id, metadata, prev_hash, hash, pod, namespace, node)
    SELECT $1, u.seq, u.ts, u.id, u.event_type, u.level, u.level_rank, u.message,
           u.request_id, u.metadata, u.prev_hash, u.hash, $13, $14, $15
    FROM unnest($2::bigint[], $3::timestamptz[], $4::text[], $5::text[], $6::text[],
                $7::int2[], $8::text[], $9::text[], $10::text[], $11::text[], $12::text[])
      AS u(seq, ts, id, event_type, level, level_rank, message, request_id, metadata,
           prev_hash, hash)
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
    months: BTreeSet<(i32, u32)>,
    /// `None`: at the next batch.
    retention_due: Option<tokio::time::Instant>,
}

/// How often a target applies central retention (every pod does, under
/// the schema lock; all but the first find nothing to drop).
const RETENTION_INTERVAL: std::time::Duration = std::time::Duration::from_secs(3600);

/// A batch's columns, as the INSERT binds them.
#[derive(Default)]
struct Columns<'a> {
    seq: Vec<i64>,
    ts: Vec<DateTime<Utc>>,
    id: Vec<&'a str>,
    event_type: Vec<&'a str>,
    level: Vec<&'static str>,
    level_rank: Vec<i16>,
    message: Vec<&'a str>,
    request_id: Vec<Option<&'a str>>,
    metadata: Vec<&'a str>,
    prev_hash: Vec<&'a str>,
    hash: Vec<&'a str>,
}

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
        let columns = Columns::of(batch)?;
        let mut state = self.state.lock().await;
        if state.client.is_none() {
            let (client, months) = self.connect().await?;
            state.client = Some(client);
            state.months = months;
        }
        self.apply_retention(&mut state).await;
        let Connected { client, months, .. } = &mut *state;
        let Some(client) = client.as_mut() else {
            return Err(ShipError::Connect {
                target: NAME,
                message: "no connection".to_owned(),
            });
        };
        let needed: BTreeSet<(i32, u32)> = columns
            .ts
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
            let tx = client.transaction().await?;
            tx.execute(
                INSERT,
                &[
                    &source.source_id,
                    &columns.seq,
                    &columns.ts,
                    &columns.id,
                    &columns.event_type,
                    &columns.level,
                    &columns.level_rank,
                    &columns.message,
                    &columns.request_id,
                    &columns.metadata,
                    &columns.prev_hash,
                    &columns.hash,
                    &source.pod,
                    &source.namespace,
                    &source.node,
                ],
            )
            .await?;
            // The commit returns once PostgreSQL has the batch durably
            // (synchronous_commit): only then may the cursor move.
            tx.commit().await
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

// === impl Columns ===

impl<'a> Columns<'a> {
    fn of(batch: &'a [EventRecord]) -> Result<Self, ShipError> {
        let mut c = Columns::default();
        for r in batch {
            let ts = parse_timestamp(&r.timestamp).ok_or_else(|| ShipError::Write {
                target: NAME,
                message: format!("event seq {}: timestamp is not RFC 3339", r.seq),
            })?;
            c.seq.push(r.seq);
            c.ts.push(ts);
            c.id.push(&r.id);
            c.event_type.push(r.event_type.as_str());
            c.level.push(r.level.as_str());
            c.level_rank
                .push(i16::try_from(r.level.rank()).unwrap_or(i16::MAX));
            c.message.push(&r.message);
            c.request_id.push(r.request_id.as_deref());
            c.metadata.push(r.metadata.get());
            c.prev_hash.push(&r.prev_hash);
            c.hash.push(&r.hash);
        }
        Ok(c)
    }
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

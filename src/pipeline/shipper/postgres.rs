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
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use rustls::RootCertStore;
use tokio::sync::Mutex;
use tokio_postgres::Client;
use tokio_util::task::TaskTracker;

use super::{ShipError, ShipTarget, Source};
use crate::config::Secret;
use crate::event::{parse_timestamp, EventRecord};

/// The target's name (its cursor key and metrics label).
pub const NAME: &str = "postgres";

/// The advisory lock key every schema change takes ("llm-audit" in ASCII),
/// so concurrent pods serialise on it.
const SCHEMA_LOCK: i64 = 0x6c6c_6d2d_6175_6469;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Ordered schema steps: entry `i` takes the schema from version `i` to
/// `i + 1`. Never edit a released step; append a new one.
const MIGRATIONS: &[&str] = &[
    // 1: the events table, partitioned by month, with one index per
    // `/api/events` filter and one for the source's pod.
    "CREATE TABLE IF NOT EXISTS audit_events (
        source_id   TEXT        NOT NULL,
        seq         BIGINT      NOT NULL,
        \"timestamp\" TIMESTAMPTZ NOT NULL,
        id          TEXT        NOT NULL,
        event_type  TEXT        NOT NULL,
        level       TEXT        NOT NULL,
        level_rank  SMALLINT    NOT NULL,
        message     TEXT        NOT NULL,
        request_id  TEXT,
        metadata    TEXT        NOT NULL,
        prev_hash   TEXT        NOT NULL,
        hash        TEXT        NOT NULL,
        pod         TEXT,
        namespace   TEXT,
        node        TEXT,
        shipped_at  TIMESTAMPTZ NOT NULL DEFAULT now(),
        PRIMARY KEY (source_id, seq, \"timestamp\")
    ) PARTITION BY RANGE (\"timestamp\");
    CREATE INDEX IF NOT EXISTS audit_events_timestamp ON audit_events (\"timestamp\");
    CREATE INDEX IF NOT EXISTS audit_events_type_ts ON audit_events (event_type, \"timestamp\");
    CREATE INDEX IF NOT EXISTS audit_events_request_id ON audit_events (request_id);
    CREATE INDEX IF NOT EXISTS audit_events_level_ts ON audit_events (level_rank, \"timestamp\");
    CREATE INDEX IF NOT EXISTS audit_events_namespace_pod ON audit_events (namespace, pod);",
];

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
}

/// The open connection, and the months known to have a partition.
#[derive(Default)]
struct Connected {
    client: Option<Client>,
    months: BTreeSet<(i32, u32)>,
}

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
    /// connection is made until the first batch.
    pub fn new(dsn: &Secret) -> Result<Self, String> {
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
        })
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
        let Connected { client, months } = &mut *state;
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

/// Applies pending migrations and makes the partitions of `months`, in one
/// transaction under the schema lock.
async fn migrate(
    client: &mut Client,
    months: &BTreeSet<(i32, u32)>,
) -> Result<(), tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS audit_schema_migrations (
            version    INTEGER     PRIMARY KEY,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let row = tx
        .query_one(
            "SELECT COALESCE(MAX(version), 0) FROM audit_schema_migrations",
            &[],
        )
        .await?;
    let current: i32 = row.get(0);
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(current.max(0) as usize) {
        tx.batch_execute(sql).await?;
        let version = i as i32 + 1;
        tx.execute(
            "INSERT INTO audit_schema_migrations (version) VALUES ($1)",
            &[&version],
        )
        .await?;
    }
    create_partitions(&tx, months).await?;
    tx.commit().await
}

/// Creates the partition of each month, if missing. The caller holds the
/// schema lock. DDL takes no bound parameters: the name and bounds are
/// written from the month's numbers, never from input text.
async fn create_partitions(
    tx: &tokio_postgres::Transaction<'_>,
    months: &BTreeSet<(i32, u32)>,
) -> Result<(), tokio_postgres::Error> {
    for &(year, month) in months {
        let (next_year, next) = next_month((year, month));
        let sql = format!(
            "CREATE TABLE IF NOT EXISTS audit_events_{year:04}_{month:02} PARTITION OF audit_events \
             FOR VALUES FROM ('{year:04}-{month:02}-01 00:00:00+00') \
             TO ('{next_year:04}-{next:02}-01 00:00:00+00')"
        );
        tx.batch_execute(&sql).await?;
    }
    Ok(())
}

/// The (year, month) of `t` in UTC.
fn month_of(t: DateTime<Utc>) -> (i32, u32) {
    (t.year(), t.month())
}

/// The month after `(year, month)`.
fn next_month((year, month): (i32, u32)) -> (i32, u32) {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.checked_add_months(Months::new(1)))
        .map_or((year + 1, 1), |d| (d.year(), d.month()))
}

/// Rustls with the web PKI roots; the DSN's `sslmode` decides whether TLS
/// is used (`prefer` by default, `require` to insist on it).
fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = match rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
    {
        Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
        // ring supports the default versions; this branch is not taken.
        Err(_) => rustls::ClientConfig::builder()
            .with_root_certificates(RootCertStore::empty())
            .with_no_client_auth(),
    };
    tokio_postgres_rustls::MakeRustlsConnect::new(config)
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

/// The error and its causes, one line. tokio-postgres never puts the
/// password in its messages.
fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    let mut text = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
        let target =
            PostgresTarget::new(&Secret::new("postgres://audit:s3cr3t-pw@db.example/audit"))
                .unwrap();
        assert!(!format!("{:?}", target.config).contains("s3cr3t-pw"));
    }
}

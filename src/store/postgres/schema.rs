//! The central table's schema and connections, shared by the shipping
//! target that writes it and the store that reads it back.
//!
//! The proxy owns the schema. Pending migrations are applied in one
//! transaction under a transaction-level advisory lock, so fifty pods
//! starting at once apply each step once and the others wait for it.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Datelike, Months, NaiveDate, Utc};
use rustls::RootCertStore;
use tokio_postgres::Client;

/// The advisory lock key every schema change takes ("llm-audit" in ASCII),
/// so concurrent pods serialise on it.
pub const SCHEMA_LOCK: i64 = 0x6c6c_6d2d_6175_6469;

/// How long one connection attempt may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Ordered schema steps: entry `i` takes the schema from version `i` to
/// `i + 1`. Never edit a released step; append a new one.
pub const MIGRATIONS: &[&str] = &[
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
    // 2: a row id in arrival order, which the fleet admin pages on (a
    // source's `seq` is unique only within that source); (`timestamp`,
    // `row_id`) serves what the `timestamp` index did, so that one goes
    // (every index costs each shipped row).
    "CREATE SEQUENCE IF NOT EXISTS audit_events_row_id_seq AS BIGINT;
    ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS row_id BIGINT NOT NULL
        DEFAULT nextval('audit_events_row_id_seq');
    CREATE INDEX IF NOT EXISTS audit_events_ts_row ON audit_events (\"timestamp\", row_id);
    DROP INDEX IF EXISTS audit_events_timestamp;
    CREATE INDEX IF NOT EXISTS audit_events_row_id ON audit_events (row_id);",
    // 3: messages and metadata compressed with lz4, which costs less CPU
    // per shipped row than the default pglz; left as it is on a server
    // built without lz4 (or older than PostgreSQL 14).
    "DO $$ BEGIN
        ALTER TABLE audit_events ALTER COLUMN metadata SET COMPRESSION lz4;
        ALTER TABLE audit_events ALTER COLUMN message SET COMPRESSION lz4;
    EXCEPTION WHEN feature_not_supported OR invalid_parameter_value OR syntax_error THEN
        NULL;
    END $$;",
    // 4: indexes for a `pod` filter without `namespace` (the (namespace,
    // pod) index serves only filters that name the namespace) and for the
    // `policy_name` filter. The policy is a generated column, so every
    // writer fills it, whatever its version: `strpos` skips the JSON parse
    // for the rows that do not name a policy (nearly all of them), and only
    // a string counts, as in the local stores. Both indexes are partial:
    // rows without a pod or a policy cost them nothing. The timestamp in
    // each serves the pages, which run newest first.
    "ALTER TABLE audit_events ADD COLUMN IF NOT EXISTS policy_name TEXT
        GENERATED ALWAYS AS (CASE
            WHEN strpos(metadata, '\"policy_name\"') = 0 THEN NULL
            WHEN jsonb_typeof(metadata::jsonb -> 'policy_name') = 'string'
                THEN metadata::jsonb ->> 'policy_name'
        END) STORED;
    CREATE INDEX IF NOT EXISTS audit_events_pod_ts ON audit_events (pod, \"timestamp\")
        WHERE pod IS NOT NULL;
    CREATE INDEX IF NOT EXISTS audit_events_policy_ts ON audit_events (policy_name, \"timestamp\")
        WHERE policy_name IS NOT NULL;",
];

/// Applies pending migrations and makes the partitions of `months`, in one
/// transaction under the schema lock.
pub async fn migrate(
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
pub async fn create_partitions(
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

/// Drops every monthly partition of the events table wholly older than
/// `cutoff` (its month ends at or before it), in one transaction under
/// the schema lock. Rows are never deleted one by one: a month goes whole
/// or stays. Returns the partitions dropped, oldest first.
pub async fn drop_months_before(
    client: &mut Client,
    cutoff: DateTime<Utc>,
) -> Result<Vec<String>, tokio_postgres::Error> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&SCHEMA_LOCK])
        .await?;
    let rows = tx
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'audit_events'::regclass",
            &[],
        )
        .await?;
    let mut months: Vec<(i32, u32)> = rows
        .iter()
        .filter_map(|row| partition_month(row.get::<_, &str>(0)))
        .filter(|&month| month_start(next_month(month)).is_some_and(|end| end <= cutoff))
        .collect();
    months.sort_unstable();
    let mut dropped = Vec::new();
    for (year, month) in months {
        // Written from the parsed numbers, never from the catalogue's text.
        let name = format!("audit_events_{year:04}_{month:02}");
        tx.batch_execute(&format!("DROP TABLE IF EXISTS {name}"))
            .await?;
        dropped.push(name);
    }
    tx.commit().await?;
    Ok(dropped)
}

/// The month a partition named `audit_events_YYYY_MM` holds.
pub fn partition_month(name: &str) -> Option<(i32, u32)> {
    let (year, month) = name.strip_prefix("audit_events_")?.split_once('_')?;
    let digits = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(year, 4) || !digits(month, 2) {
        return None;
    }
    let month: u32 = month.parse().ok()?;
    (1..=12)
        .contains(&month)
        .then_some((year.parse().ok()?, month))
}

/// The first instant of `(year, month)`, UTC.
fn month_start((year, month): (i32, u32)) -> Option<DateTime<Utc>> {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
}

/// The (year, month) of `t` in UTC.
pub fn month_of(t: DateTime<Utc>) -> (i32, u32) {
    (t.year(), t.month())
}

/// The month after `(year, month)`.
pub fn next_month((year, month): (i32, u32)) -> (i32, u32) {
    NaiveDate::from_ymd_opt(year, month, 1)
        .and_then(|d| d.checked_add_months(Months::new(1)))
        .map_or((year + 1, 1), |d| (d.year(), d.month()))
}

/// Rustls with the web PKI roots; the DSN's `sslmode` decides whether TLS
/// is used (`prefer` by default, `require` to insist on it).
pub fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
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

/// The error and its causes, one line. tokio-postgres never puts the
/// password in its messages.
pub fn describe(error: &tokio_postgres::Error) -> String {
    if let Some(db) = error.as_db_error() {
        return format!("{}: {}", db.severity(), db.message());
    }
    crate::telemetry::with_causes(error)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_partition_names_of_real_months_are_read() {
        assert_eq!(partition_month("audit_events_2026_11"), Some((2026, 11)));
        for other in [
            "audit_events",
            "audit_events_2026_13",
            "audit_events_2026_1",
            "audit_events_26_11",
            "audit_events_2026_11; DROP TABLE x",
            "other_2026_11",
        ] {
            assert_eq!(partition_month(other), None, "{other}");
        }
    }

    #[test]
    fn a_month_starts_at_midnight_utc() {
        assert_eq!(
            month_start((2027, 1)).map(|t| t.to_rfc3339()),
            Some("2027-01-01T00:00:00+00:00".to_owned())
        );
    }
}

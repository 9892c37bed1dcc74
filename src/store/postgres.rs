//! The central store read back: every source's shipped events in the
//! PostgreSQL table the `postgres` shipping target writes, served to the
//! fleet admin and the offline commands through the same [`AuditStore`]
//! interface as a local store.
//!
//! Events reach this table through shipping only, so appends and purges
//! are refused here (central retention drops whole partitions instead, see
//! `shipping.central_retention_days`). A `seq` is unique within its source
//! only: pages run newest first by (`timestamp`, `row_id`), the row id the
//! table hands out in arrival order, and their cursor is a row id. An
//! export of one source runs in `seq` order, which is what verifying that
//! source's chain walks.

pub mod schema;

use std::collections::BTreeMap;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio::sync::{mpsc, Mutex, Semaphore};
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row};
use tokio_util::task::TaskTracker;

use self::schema::{describe, migrate, month_of, tls_connector, CONNECT_TIMEOUT};
use super::{
    chunk_stream, AuditStore, Batch, ChainHead, EventFilter, EventPage, EventQuery, EventStream,
    PurgeReport, RecordPage, RecordStream, StoreError, StoreStats,
};
use crate::config::Secret;
use crate::event::{format_timestamp, AuditEvent, EventRecord, Origin};

/// Most connections one store holds open at once.
const MAX_CONNECTIONS: usize = 8;

/// Rows an export reads per round trip.
const EXPORT_CHUNK_ROWS: i64 = 1_000;

/// The columns every read selects, in the order [`record_of`] takes them.
const COLUMNS: &str = "id, seq, \"timestamp\", event_type, level, message, request_id, \
     metadata, prev_hash, hash, source_id, pod, namespace, node, row_id";

/// The central PostgreSQL store, read side.
pub struct PostgresStore {
    pool: Arc<Pool>,
}

/// A few connections, opened on demand and reused.
struct Pool {
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    idle: Mutex<Vec<Client>>,
    permits: Semaphore,
    /// Each connection's I/O task, and each export's reading task.
    tasks: TaskTracker,
}

/// A connection out of the pool; back in when dropped, unless it broke.
struct Lease<'a> {
    pool: &'a Pool,
    /// Taken out only by `drop`.
    client: Option<Client>,
    broken: bool,
    _permit: tokio::sync::SemaphorePermit<'a>,
}

/// SQL conditions and their parameters, numbered from `$1`.
#[derive(Default)]
struct Conditions {
    fragments: Vec<String>,
    params: Vec<Box<dyn ToSql + Sync + Send>>,
}

// === impl PostgresStore ===

impl PostgresStore {
    /// Connects to `dsn` and brings the schema up to date (the same
    /// migrations the shipping target applies, under the same lock), so
    /// the fleet admin may start before any proxy has shipped.
    pub async fn open(dsn: &Secret) -> Result<Self, StoreError> {
        let mut config: tokio_postgres::Config = dsn.expose().parse().map_err(|e| {
            StoreError::Other(format!(
                "the PostgreSQL DSN is not a valid connection string: {e}"
            ))
        })?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        if config.get_application_name().is_none() {
            config.application_name("llm-audit-proxy fleet admin");
        }
        let pool = Arc::new(Pool {
            config,
            tls: tls_connector(),
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(MAX_CONNECTIONS),
            tasks: TaskTracker::new(),
        });
        {
            let mut lease = pool.lease().await?;
            let now = crate::event::now();
            let month = month_of(now);
            let months = [month].into();
            let result = migrate(lease.client_mut()?, &months).await;
            lease.check(result)?;
        }
        Ok(Self { pool })
    }

    /// Central retention now: drops the months of the table wholly older
    /// than `cutoff`; returns the partitions dropped.
    pub async fn drop_months_before(
        &self,
        cutoff: DateTime<Utc>,
    ) -> Result<Vec<String>, StoreError> {
        let mut lease = self.pool.lease().await?;
        let result = schema::drop_months_before(lease.client_mut()?, cutoff).await;
        lease.check(result)
    }

    /// The plan PostgreSQL chooses for a page of `query` (`EXPLAIN`, one
    /// line per plan node), to see which index a fleet query uses.
    pub async fn explain_page(&self, query: &EventQuery) -> Result<String, StoreError> {
        let (sql, c) = page_sql(query);
        let rows = self
            .pool
            .query(&format!("EXPLAIN {sql}"), &c.params)
            .await?;
        Ok(rows
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect::<Vec<_>>()
            .join("\n"))
    }

    /// One page of records, newest first, from `query.before_seq` (a row
    /// id) down.
    async fn page(&self, query: &EventQuery) -> Result<RecordPage, StoreError> {
        let (sql, c) = page_sql(query);
        let rows = self.pool.query(&sql, &c.params).await?;
        let records = rows.iter().map(record_of).collect::<Result<Vec<_>, _>>()?;
        Ok(EventPage::from_overfetched(records, query.limit))
    }
}

#[async_trait]
impl AuditStore for PostgresStore {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    fn holds_many_sources(&self) -> bool {
        true
    }

    async fn source_ids(&self) -> Result<Vec<String>, StoreError> {
        let rows = self
            .pool
            .query(
                "SELECT source_id FROM audit_events GROUP BY source_id \
                 ORDER BY MIN(\"timestamp\"), source_id",
                &[],
            )
            .await?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn append_batch(&self, _events: Batch) -> Result<(), StoreError> {
        Err(read_only("append events"))
    }

    /// A store of many chains has no one head.
    async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
        Ok(None)
    }

    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        let page = self.page(query).await?;
        Ok(EventPage {
            events: page
                .events
                .into_iter()
                .map(event_of)
                .collect::<Result<_, _>>()?,
            next_before_seq: page.next_before_seq,
        })
    }

    async fn query_records(&self, query: &EventQuery) -> Result<RecordPage, StoreError> {
        self.page(query).await
    }

    async fn get(&self, id: &str) -> Result<Option<AuditEvent>, StoreError> {
        let sql = format!("SELECT {COLUMNS} FROM audit_events WHERE id = $1 LIMIT 1");
        let id = id.to_owned();
        let rows = self.pool.query(&sql, &[Box::new(id)]).await?;
        rows.first()
            .map(|row| record_of(row).and_then(event_of))
            .transpose()
    }

    fn export(&self, filter: EventFilter) -> EventStream {
        self.export_records(filter)
            .map(|record| record.and_then(event_of))
            .boxed()
    }

    /// Oldest first: by `seq` when the filter names one source (its chain's
    /// order), else by (`timestamp`, `row_id`). Read in chunks from a task
    /// of its own, so memory stays flat.
    fn export_records(&self, filter: EventFilter) -> RecordStream {
        let (tx, rx) = mpsc::channel(2);
        let pool = self.pool.clone();
        self.pool.tasks.spawn(async move {
            let by_seq = filter.source.is_some();
            let mut after: Option<(DateTime<Utc>, i64)> = None;
            loop {
                let mut c = Conditions::of(&filter);
                if let Some((ts, key)) = after {
                    if by_seq {
                        let n = c.bind(key);
                        c.fragments.push(format!("seq > ${n}"));
                    } else {
                        let t = c.bind(ts);
                        let n = c.bind(key);
                        c.fragments
                            .push(format!("(\"timestamp\", row_id) > (${t}, ${n})"));
                    }
                }
                let limit = c.bind(EXPORT_CHUNK_ROWS);
                let order = if by_seq {
                    "seq"
                } else {
                    "\"timestamp\", row_id"
                };
                let sql = format!(
                    "SELECT {COLUMNS} FROM audit_events{} ORDER BY {order} LIMIT ${limit}",
                    c.where_sql()
                );
                let chunk = match pool.query(&sql, &c.params).await {
                    Ok(rows) => {
                        if let Some(last) = rows.last() {
                            let key = if by_seq { last.get(1) } else { last.get(14) };
                            after = Some((last.get(2), key));
                        }
                        rows.iter().map(record_of).collect::<Result<Vec<_>, _>>()
                    }
                    Err(error) => Err(error),
                };
                let done = match &chunk {
                    Ok(records) => (records.len() as i64) < EXPORT_CHUNK_ROWS,
                    Err(_) => true,
                };
                if tx.send(chunk).await.is_err() || done {
                    break;
                }
            }
        });
        chunk_stream(rx)
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        // One snapshot, so that the counts agree while pods ship.
        let rows = self
            .pool
            .query_snapshot(&[
                "SELECT event_type, count(*) FROM audit_events GROUP BY event_type",
                "SELECT level, count(*) FROM audit_events GROUP BY level",
                // A key that is not a string counts as the empty string, as
                // in the local stores; the policy column already holds
                // only strings.
                "SELECT COALESCE(policy_name, ''), count(*) \
                 FROM audit_events WHERE event_type = 'COMPLIANCE_VIOLATION' GROUP BY 1",
                "SELECT CASE WHEN jsonb_typeof(metadata::jsonb -> 'severity') = 'string' \
                 THEN metadata::jsonb ->> 'severity' ELSE '' END, count(*) \
                 FROM audit_events WHERE event_type = 'COMPLIANCE_VIOLATION' GROUP BY 1",
                "SELECT MIN(\"timestamp\"), MAX(\"timestamp\") FROM audit_events",
            ])
            .await?;
        let [by_type, by_level, by_policy, by_severity, range] = rows.as_slice() else {
            return Err(StoreError::Other(
                "central store: the stats read fewer results than asked".into(),
            ));
        };
        let mut stats = StoreStats::default();
        stats.by_type = counts_of(by_type);
        stats.total_events = stats.by_type.values().sum();
        stats.by_level = counts_of(by_level);
        stats.violations_by_policy = counts_of(by_policy);
        stats.violations_by_severity = counts_of(by_severity);
        if let Some(row) = range.first() {
            stats.oldest_timestamp = row
                .get::<_, Option<DateTime<Utc>>>(0)
                .map(|t| format_timestamp(&t));
            stats.newest_timestamp = row
                .get::<_, Option<DateTime<Utc>>>(1)
                .map(|t| format_timestamp(&t));
        }
        stats.store_bytes = self.size_bytes().await?;
        Ok(stats)
    }

    async fn size_bytes(&self) -> Result<u64, StoreError> {
        let rows = self
            .pool
            .query(
                "SELECT COALESCE(SUM(pg_total_relation_size(inhrelid)), 0)::bigint \
                 FROM pg_inherits WHERE inhparent = 'audit_events'::regclass",
                &[],
            )
            .await?;
        Ok(rows.first().map_or(0, |r| r.get::<_, i64>(0).max(0) as u64))
    }

    async fn health(&self) -> Result<(), StoreError> {
        self.pool.query("SELECT 1", &[]).await.map(|_| ())
    }

    async fn purge_before(&self, _before: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        Err(read_only("purge events one by one"))
    }

    async fn enforce_max_bytes(&self, _max_bytes: u64) -> Result<PurgeReport, StoreError> {
        Err(read_only("enforce a size cap"))
    }
}

fn read_only(what: &str) -> StoreError {
    StoreError::Other(format!(
        "the central store cannot {what}: events reach it through shipping, and \
         shipping.central_retention_days drops whole months"
    ))
}

/// Rows of (name, count) as a map.
fn counts_of(rows: &[Row]) -> BTreeMap<String, u64> {
    rows.iter()
        .map(|r| (r.get::<_, String>(0), r.get::<_, i64>(1).max(0) as u64))
        .collect()
}

// === impl Pool ===

impl Pool {
    async fn lease(&self) -> Result<Lease<'_>, StoreError> {
        let permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| StoreError::Unavailable("the connection pool is closed".into()))?;
        let idle = self.idle.lock().await.pop();
        let client = match idle {
            Some(client) if !client.is_closed() => client,
            _ => {
                let (client, connection) =
                    self.config.connect(self.tls.clone()).await.map_err(|e| {
                        StoreError::Unavailable(format!(
                            "cannot connect to PostgreSQL: {}",
                            describe(&e)
                        ))
                    })?;
                self.tasks.spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!(error = %describe(&error), "Central store connection closed.");
                    }
                });
                client
            }
        };
        Ok(Lease {
            pool: self,
            client: Some(client),
            broken: false,
            _permit: permit,
        })
    }

    /// Runs each statement in one read-only `REPEATABLE READ`
    /// transaction: every result is of the same snapshot.
    async fn query_snapshot(&self, sqls: &[&str]) -> Result<Vec<Vec<Row>>, StoreError> {
        let mut lease = self.lease().await?;
        let client = lease.client_mut()?;
        let result = async {
            let tx = client
                .build_transaction()
                .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
                .read_only(true)
                .start()
                .await?;
            let mut results = Vec::with_capacity(sqls.len());
            for sql in sqls {
                results.push(tx.query(*sql, &[]).await?);
            }
            tx.commit().await?;
            Ok(results)
        }
        .await;
        lease.check(result)
    }

    async fn query(
        &self,
        sql: &str,
        params: &[Box<dyn ToSql + Sync + Send>],
    ) -> Result<Vec<Row>, StoreError> {
        let mut lease = self.lease().await?;
        let refs: Vec<&(dyn ToSql + Sync)> = params
            .iter()
            .map(|p| p.as_ref() as &(dyn ToSql + Sync))
            .collect();
        let result = lease.client_mut()?.query(sql, &refs).await;
        lease.check(result)
    }
}

// === impl Lease ===

impl Lease<'_> {
    fn client_mut(&mut self) -> Result<&mut Client, StoreError> {
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::Unavailable("central store: no connection".into()))
    }

    /// Maps a query's error; a connection that broke is not reused.
    fn check<T>(&mut self, result: Result<T, tokio_postgres::Error>) -> Result<T, StoreError> {
        result.map_err(|error| {
            let message = describe(&error);
            if error.is_closed() || error.as_db_error().is_none() {
                self.broken = true;
                StoreError::Unavailable(format!("central store: {message}"))
            } else {
                StoreError::Other(format!("central store: {message}"))
            }
        })
    }
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        if self.broken || client.is_closed() {
            return;
        }
        // A busy idle list just lets this connection close.
        if let Ok(mut idle) = self.pool.idle.try_lock() {
            idle.push(client);
        }
    }
}

// === impl Conditions ===

impl Conditions {
    /// The filter as SQL. Every field is named, so a filter field added
    /// later does not compile until this store applies it too.
    fn of(filter: &EventFilter) -> Self {
        let EventFilter {
            event_types,
            start_time,
            end_time,
            request_id,
            min_level,
            policy_name,
            source,
            pod,
            namespace,
        } = filter;
        let mut c = Self::default();
        if !event_types.is_empty() {
            let types: Vec<String> = event_types.iter().map(|t| t.as_str().to_owned()).collect();
            let n = c.bind(types);
            c.fragments.push(format!("event_type = ANY(${n})"));
        }
        if let Some(t) = start_time {
            let n = c.bind(*t);
            c.fragments.push(format!("\"timestamp\" >= ${n}"));
        }
        if let Some(t) = end_time {
            let n = c.bind(*t);
            c.fragments.push(format!("\"timestamp\" < ${n}"));
        }
        if let Some(level) = min_level {
            let n = c.bind(i16::try_from(level.rank()).unwrap_or(i16::MAX));
            c.fragments.push(format!("level_rank >= ${n}"));
        }
        for (column, value) in [
            ("request_id", request_id),
            ("policy_name", policy_name),
            ("source_id", source),
            ("pod", pod),
            ("namespace", namespace),
        ] {
            if let Some(value) = value {
                let n = c.bind(value.clone());
                c.fragments.push(format!("{column} = ${n}"));
            }
        }
        c
    }

    /// Adds a parameter; returns its number.
    fn bind(&mut self, value: impl ToSql + Sync + Send + 'static) -> usize {
        self.params.push(Box::new(value));
        self.params.len()
    }

    fn where_sql(&self) -> String {
        if self.fragments.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", self.fragments.join(" AND "))
        }
    }
}

/// The query of one page (one row more than the limit, to know whether
/// another page follows) and its parameters.
fn page_sql(query: &EventQuery) -> (String, Conditions) {
    let mut c = Conditions::of(&query.filter);
    if let Some(before) = query.before_seq {
        let n = c.bind(before);
        c.fragments.push(format!(
            "(\"timestamp\", row_id) < (SELECT \"timestamp\", row_id FROM audit_events \
             WHERE row_id = ${n} LIMIT 1)"
        ));
    }
    let limit = c.bind(query.limit as i64 + 1);
    let sql = format!(
        "SELECT {COLUMNS} FROM audit_events{} ORDER BY \"timestamp\" DESC, row_id DESC \
         LIMIT ${limit}",
        c.where_sql()
    );
    (sql, c)
}

/// A row read with [`COLUMNS`] as a record, naming what cannot be read.
fn record_of(row: &Row) -> Result<EventRecord, StoreError> {
    let seq: i64 = row.get(1);
    let corrupt = |what: &str| StoreError::Corrupt(format!("central event seq {seq}: {what}"));
    let metadata = serde_json::value::RawValue::from_string(row.get(7))
        .map_err(|_| corrupt("metadata is not valid JSON"))?;
    Ok(EventRecord {
        id: row.get(0),
        seq,
        timestamp: format_timestamp(&row.get::<_, DateTime<Utc>>(2)),
        event_type: row
            .get::<_, String>(3)
            .parse()
            .map_err(|_| corrupt("event_type is not a valid type"))?,
        level: row
            .get::<_, String>(4)
            .parse()
            .map_err(|_| corrupt("level is not a valid level"))?,
        message: row.get(5),
        request_id: row.get(6),
        metadata,
        prev_hash: row.get(8),
        hash: row.get(9),
        origin: Some(Box::new(Origin {
            source_id: row.get(10),
            pod: row.get(11),
            namespace: row.get(12),
            node: row.get(13),
            row_id: row.get(14),
        })),
    })
}

fn event_of(record: EventRecord) -> Result<AuditEvent, StoreError> {
    let seq = record.seq;
    record
        .into_event()
        .map_err(|what| StoreError::Corrupt(format!("central event seq {seq}: {what}")))
}

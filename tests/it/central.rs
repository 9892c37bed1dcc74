//! Shipping to a central PostgreSQL: the local store is the outbox, and
//! the database ends up with exactly the local events, once each, however
//! the database behaves meanwhile.
//!
//! Each test runs its own throwaway cluster (see `support::postgres`) and
//! skips when PostgreSQL is not installed, unless CI requires it.

use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use llm_audit_proxy::config::Secret;
use llm_audit_proxy::event::chain::{ChainVerifier, GENESIS_HASH};
use llm_audit_proxy::event::{format_timestamp, EventRecord, EventType, NewEvent};
use llm_audit_proxy::pipeline::shipper::postgres::PostgresTarget;
use llm_audit_proxy::pipeline::shipper::{ShipTarget, Source};
use llm_audit_proxy::store::sqlite::SqliteStore;
use llm_audit_proxy::store::{AuditStore, EventFilter};
use serde_json::value::RawValue;
use serde_json::{json, Value};

use crate::binary::command;
use crate::durability::{load, serve, sigkill};
use crate::support::postgres::{PgCluster, PASSWORD};
use crate::support::{dead_address, output_ok, MockUpstream, TestProxy};

/// How long PostgreSQL stays down in the outage test, under load.
const OUTAGE: Duration = Duration::from_secs(30);

/// The longest a test waits for shipping to catch up.
const CATCH_UP: Duration = Duration::from_secs(60);

/// Shipping settings for tests: quick polls and retries, a short grace.
pub(crate) fn shipping_env(dsn: &str) -> Vec<(&'static str, String)> {
    vec![
        ("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN", dsn.to_owned()),
        ("LLM_AUDIT_PROXY_SHIPPING_POLL_INTERVAL_MS", "50".into()),
        ("LLM_AUDIT_PROXY_SHIPPING_MAX_BACKOFF", "1".into()),
        ("LLM_AUDIT_PROXY_SHIPPING_BATCH_SIZE", "7".into()),
        ("LLM_AUDIT_PROXY_SHUTDOWN_GRACE", "5".into()),
        ("LLM_AUDIT_PROXY_POD_NAME", "pod-a".into()),
        ("LLM_AUDIT_PROXY_POD_NAMESPACE", "team-x".into()),
    ]
}

pub(crate) async fn start(mock: &MockUpstream, dir: &Path, dsn: &str) -> TestProxy {
    let env = shipping_env(dsn);
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestProxy::start_in(&mock.url(), dir, &pairs).await
}

pub(crate) async fn calls(proxy: &TestProxy, prefix: &str, n: usize) {
    for i in 0..n {
        let resp = proxy
            .post_call("/v1/chat/completions", format!("{prefix}-{i}"))
            .json(&json!({
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": "Hello"}]
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
}

/// Polls `/api/stats` (bounded) until `ok` holds for its body; returns that
/// body. `what` names what did not happen when the time runs out.
pub(crate) async fn until_stats(
    proxy: &TestProxy,
    what: &str,
    ok: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + CATCH_UP;
    loop {
        let (status, body) = proxy.admin_get("/api/stats").await;
        assert_eq!(status, 200, "{body}");
        if ok(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (bounded) until the target has every event stored so far.
pub(crate) async fn until_caught_up(proxy: &TestProxy) -> Value {
    let body = until_stats(proxy, "shipping did not catch up", |body| {
        let target = &body["shipping"][0];
        let head = body["total_events"].as_u64().unwrap_or(0);
        // The cursor, not this run's count: a restarted proxy ships only
        // what earlier runs left.
        target["lag_events"] == 0 && target["cursor"].as_u64() >= Some(head) && head > 0
    })
    .await;
    body["shipping"][0].clone()
}

/// Waits (bounded) until the target has failed at least `n` times.
pub(crate) async fn until_errors(proxy: &TestProxy, n: u64) -> Value {
    let body = until_stats(proxy, "no shipping errors", |body| {
        body["shipping"][0]["errors"].as_u64() >= Some(n)
    })
    .await;
    body["shipping"][0].clone()
}

/// Asserts that the proxy recorded an ERROR event for `target`'s failed
/// shipping.
pub(crate) async fn assert_shipping_failed_recorded(proxy: &TestProxy, target: &str) {
    let failed = proxy
        .wait_events("event_type=ERROR", 1)
        .await
        .into_iter()
        .find(|e| e["metadata"]["error_type"] == "shipping_failed")
        .expect("an ERROR event for the failed shipping");
    assert_eq!(failed["metadata"]["details"]["target"], target);
}

/// Every local event as (seq, hash, metadata text), in seq order.
pub(crate) async fn local_rows(dir: &Path) -> (String, Vec<(i64, String, String)>) {
    let store = SqliteStore::open_read_only(dir).await.unwrap();
    let source_id = store.source_id().await.unwrap().unwrap();
    let rows =
        futures_util::StreamExt::collect::<Vec<_>>(store.export_records(EventFilter::default()))
            .await
            .into_iter()
            .map(|r| {
                let r = r.unwrap();
                (r.seq, r.hash, r.metadata.get().to_owned())
            })
            .collect();
    (source_id, rows)
}

/// Every central row of `source_id` as (seq, hash, metadata text), in seq
/// order, and whether any (source, seq) appears twice.
pub(crate) async fn central_rows(
    pg: &PgCluster,
    source_id: &str,
) -> (Vec<(i64, String, String)>, bool) {
    let client = pg.client().await;
    let rows = client
        .query(
            "SELECT seq, hash, metadata FROM audit_events WHERE source_id = $1 ORDER BY seq",
            &[&source_id],
        )
        .await
        .unwrap();
    let rows: Vec<(i64, String, String)> = rows
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
    let mut seqs: Vec<i64> = rows.iter().map(|r| r.0).collect();
    seqs.dedup();
    let duplicates = seqs.len() != rows.len();
    (rows, duplicates)
}

/// Walks `source_id`'s chain as the central table holds it.
async fn central_chain_verifies(pg: &PgCluster, source_id: &str) -> u64 {
    let client = pg.client().await;
    let rows = client
        .query(
            "SELECT id, seq, \"timestamp\", event_type, level, message, request_id, metadata, \
             prev_hash, hash FROM audit_events WHERE source_id = $1 ORDER BY seq",
            &[&source_id],
        )
        .await
        .unwrap();
    let mut verifier = ChainVerifier::new();
    for row in rows {
        let record = EventRecord {
            id: row.get(0),
            seq: row.get(1),
            timestamp: format_timestamp(&row.get::<_, DateTime<Utc>>(2)),
            event_type: row.get::<_, String>(3).parse().unwrap(),
            level: row.get::<_, String>(4).parse().unwrap(),
            message: row.get(5),
            request_id: row.get(6),
            metadata: RawValue::from_string(row.get(7)).unwrap(),
            prev_hash: row.get(8),
            hash: row.get(9),
            origin: None,
        };
        verifier.check_record(&record).unwrap();
    }
    verifier.checked()
}

pub(crate) async fn assert_same_sets(pg: &PgCluster, dir: &Path) -> String {
    let (source_id, local) = local_rows(dir).await;
    let (central, duplicates) = central_rows(pg, &source_id).await;
    assert!(!duplicates, "duplicate (source, seq) rows");
    assert_eq!(central.len(), local.len());
    assert!(central == local, "central rows differ from the local store");
    source_id
}

#[tokio::test]
async fn steady_load_ships_the_local_set_exactly() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(&mock, dir.path(), &pg.dsn()).await;
    calls(&proxy, "steady", 15).await;
    let target = until_caught_up(&proxy).await;
    assert_eq!(target["target"], "postgres");
    assert_eq!(target["errors"], 0);
    assert!(target["last_success"].is_string());
    let (_, metrics) = {
        let r = proxy
            .http
            .get(format!("{}/metrics", proxy.admin_url))
            .send()
            .await
            .unwrap();
        (r.status(), r.text().await.unwrap())
    };
    assert!(metrics.contains("llm_audit_proxy_shipping_lag_events{target=\"postgres\"} 0"));
    proxy.stop().await;

    // The shutdown event was shipped at stop, too.
    let source_id = assert_same_sets(&pg, dir.path()).await;
    assert!(central_chain_verifies(&pg, &source_id).await > 30);
    let client = pg.client().await;
    let row = client
        .query_one(
            "SELECT pod, namespace, count(*) FROM audit_events WHERE source_id = $1 GROUP BY pod, namespace",
            &[&source_id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<String>>(0).as_deref(), Some("pod-a"));
    assert_eq!(row.get::<_, Option<String>>(1).as_deref(), Some("team-x"));
    // Partitions for this month and the next exist before any need them.
    let partitions: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_inherits WHERE inhparent = 'audit_events'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(partitions >= 2, "{partitions} partitions");
}

#[tokio::test]
async fn an_outage_under_load_loses_nothing_and_duplicates_nothing() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(&mock, dir.path(), &pg.dsn()).await;
    calls(&proxy, "before", 5).await;
    until_caught_up(&proxy).await;

    pg.stop();
    let outage_end = tokio::time::Instant::now() + OUTAGE;
    let mut n = 0;
    while tokio::time::Instant::now() < outage_end {
        calls(&proxy, &format!("during-{n}"), 2).await;
        n += 1;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The proxy kept recording while the database was down.
    assert!(proxy.call_events("during-0-0").await.len() >= 2);
    let target = until_errors(&proxy, 1).await;
    assert!(target["lag_events"].as_u64() > Some(0), "{target}");
    assert!(!target["last_error"].as_str().unwrap().contains(PASSWORD));

    pg.pg_ctl_start();
    calls(&proxy, "after", 5).await;
    let target = until_caught_up(&proxy).await;
    assert_eq!(target["lag_events"], 0);
    assert_eq!(target["oldest_unshipped_age_secs"], 0);
    assert_shipping_failed_recorded(&proxy, "postgres").await;
    proxy.stop().await;
    assert_same_sets(&pg, dir.path()).await;
}

#[tokio::test]
async fn a_batch_sent_again_after_a_crash_creates_no_duplicates() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let proxy = start(&mock, dir.path(), &pg.dsn()).await;
    calls(&proxy, "first", 5).await;
    until_caught_up(&proxy).await;
    proxy.stop().await;

    // As if the process died after the database committed but before the
    // cursor moved: the whole store is sent again.
    {
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.set_ship_cursor("postgres", 0).await.unwrap();
    }
    // Back-dated events across a month boundary need two partitions nobody
    // made ahead.
    let back_dated = ["2020-03-31T23:59:59.999999Z", "2020-04-01T00:00:00Z"].map(|t| {
        let mut e = NewEvent::new(EventType::Custom, "back-dated");
        e.timestamp = t.parse().unwrap();
        e
    });
    crate::support::append_to_store(dir.path(), back_dated.into()).await;

    let proxy = start(&mock, dir.path(), &pg.dsn()).await;
    calls(&proxy, "second", 3).await;
    until_caught_up(&proxy).await;
    proxy.stop().await;
    assert_same_sets(&pg, dir.path()).await;
    let client = pg.client().await;
    for partition in ["audit_events_2020_03", "audit_events_2020_04"] {
        let rows: i64 = client
            .query_one(
                "SELECT count(*) FROM audit_events a JOIN pg_class c ON c.oid = a.tableoid \
                 WHERE c.relname = $1",
                &[&partition],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(rows, 1, "{partition} holds its back-dated event");
    }
}

/// The same batch from two connections at once, then part of it again:
/// every write is acknowledged and each event is stored once, whichever
/// way each write went in (a `COPY` that meets the other's rows gives way
/// to the merge through the incoming table).
#[tokio::test]
async fn the_same_batch_written_twice_at_once_is_stored_once() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let dsn = Secret::new(pg.dsn());
    let (one, two) = (
        PostgresTarget::new(&dsn, 0).unwrap(),
        PostgresTarget::new(&dsn, 0).unwrap(),
    );
    let source = Source {
        source_id: "twice".into(),
        pod: Some("pod-t".into()),
        namespace: None,
        node: None,
    };
    let mut prev = GENESIS_HASH.to_owned();
    let batch: Vec<EventRecord> = (1..=500)
        .map(|seq| {
            let event = NewEvent::new(EventType::Custom, format!("event {seq}")).seal(seq, &prev);
            prev.clone_from(&event.hash);
            EventRecord::try_from(event).unwrap()
        })
        .collect();
    let (a, b) = tokio::join!(one.write(&source, &batch), two.write(&source, &batch));
    a.unwrap();
    b.unwrap();
    one.write(&source, &batch[400..]).await.unwrap();
    let row = pg
        .client()
        .await
        .query_one(
            "SELECT count(*), count(DISTINCT seq) FROM audit_events WHERE source_id = 'twice'",
            &[],
        )
        .await
        .unwrap();
    assert_eq!((row.get::<_, i64>(0), row.get::<_, i64>(1)), (500, 500));
}

/// A wrong password or a host nothing listens on: the proxy starts, serves
/// and records, retries shipping with an ERROR event, and stops cleanly.
#[tokio::test]
async fn a_refused_or_unreachable_database_is_retried_and_never_loses_local_events() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let dead = dead_address().await.replace("http://", "");
    for (case, dsn) in [
        ("wrong-password", pg.dsn_with_password("not-the-password")),
        (
            "unreachable",
            format!("postgres://postgres:{PASSWORD}@{dead}/postgres?sslmode=disable"),
        ),
    ] {
        let mock = MockUpstream::start().await;
        let dir = tempfile::tempdir().unwrap();
        let proxy = start(&mock, dir.path(), &dsn).await;
        calls(&proxy, case, 3).await;
        let target = until_errors(&proxy, 2).await;
        let last_error = target["last_error"].as_str().unwrap().to_owned();
        assert!(!last_error.contains(PASSWORD), "{case}: {last_error}");
        assert!(
            !last_error.contains("not-the-password"),
            "{case}: {last_error}"
        );
        if case == "wrong-password" {
            assert!(last_error.contains("password"), "{case}: {last_error}");
        }
        assert!(proxy.call_events(&format!("{case}-2")).await.len() >= 2);
        let errors = proxy.wait_events("event_type=ERROR", 1).await;
        assert!(
            errors
                .iter()
                .any(|e| e["metadata"]["error_type"] == "shipping_failed"),
            "{case}: {errors:#?}"
        );
        proxy.stop().await;
        // Nothing was shipped, and every event stayed in the local store.
        let store = SqliteStore::open_read_only(dir.path()).await.unwrap();
        assert_eq!(store.ship_cursor("postgres").await.unwrap(), None);
        let stats = store.stats().await.unwrap();
        assert!(stats.total_events >= 9, "{case}: {stats:?}");
    }
}

#[test]
fn check_config_names_a_malformed_dsn_without_showing_it() {
    let out = command()
        .args(["check-config", "/dev/null"])
        .env(
            "LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN",
            "postgres://audit:Hunter2-secret@db:port/audit",
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("shipping.postgres_dsn"), "{stderr}");
    assert!(
        stderr.contains("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN"),
        "{stderr}"
    );
    assert!(!stderr.contains("Hunter2-secret"), "{stderr}");
}

/// Eight proxies, each with its own store, start at once against one
/// empty database: the schema is made once, and every source's events
/// arrive complete and verifiable.
#[tokio::test]
async fn eight_proxies_ship_into_one_database_at_once() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dirs: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let dsn = pg.dsn();
    let proxies =
        futures_util::future::join_all(dirs.iter().map(|d| start(&mock, d.path(), &dsn))).await;
    futures_util::future::join_all(
        proxies
            .iter()
            .enumerate()
            .map(|(i, p)| calls(p, if i % 2 == 0 { "even" } else { "odd" }, 3)),
    )
    .await;
    for proxy in &proxies {
        let target = until_caught_up(proxy).await;
        assert_eq!(target["errors"], 0, "{target}");
    }
    futures_util::future::join_all(proxies.into_iter().map(TestProxy::stop)).await;
    for dir in &dirs {
        let source_id = assert_same_sets(&pg, dir.path()).await;
        assert!(central_chain_verifies(&pg, &source_id).await > 0);
    }
    let client = pg.client().await;
    let sources: i64 = client
        .query_one("SELECT count(DISTINCT source_id) FROM audit_events", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(sources, 8);
    let migrations: i64 = client
        .query_one("SELECT count(*) FROM audit_schema_migrations", &[])
        .await
        .unwrap()
        .get(0);
    let steps = llm_audit_proxy::store::postgres::schema::MIGRATIONS.len() as i64;
    assert_eq!(migrations, steps, "each schema step applied once");
}

/// The proxy SIGKILLed under load while shipping big batches, three times,
/// then restarted on the same store: what was in flight is sent again, and
/// the central set equals the local set, each event once.
#[tokio::test]
async fn a_sigkill_mid_batch_loses_nothing_and_duplicates_nothing() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dsn = pg.dsn();
    let env = [
        ("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN", dsn.as_str()),
        ("LLM_AUDIT_PROXY_SHIPPING_POLL_INTERVAL_MS", "20"),
        ("LLM_AUDIT_PROXY_SHIPPING_BATCH_SIZE", "500"),
        ("LLM_AUDIT_PROXY_SHIPPING_MAX_BACKOFF", "1"),
    ];
    let client = pg.client().await;
    // 0 until the first proxy made the table.
    let central_count = || async {
        client
            .query_one("SELECT count(*) FROM audit_events", &[])
            .await
            .map_or(0, |row| row.get::<_, i64>(0))
    };
    let mut left_unshipped = 0;
    for run in 0..3 {
        let (mut child, proxy, _) = serve(&mock.url(), dir.path(), &env);
        let load = tokio::spawn(async move { load(&proxy, run, 4).await });
        // Killed once this run's rows are arriving: shipping is under way.
        let before = central_count().await;
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        while central_count().await <= before {
            assert!(tokio::time::Instant::now() < deadline, "nothing shipped");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        tokio::task::spawn_blocking(move || sigkill(&mut child))
            .await
            .unwrap();
        load.await.unwrap();
        let store = SqliteStore::open_read_only(dir.path()).await.unwrap();
        let head = store.head().await.unwrap().unwrap().seq;
        let cursor = store.ship_cursor("postgres").await.unwrap().unwrap_or(0);
        if cursor < head {
            left_unshipped += 1;
        }
    }
    assert!(left_unshipped > 0, "no kill left events to ship");

    // The restart sends what the kills left (its own run ships little).
    let proxy = start(&mock, dir.path(), &dsn).await;
    until_caught_up(&proxy).await;
    proxy.stop().await;
    let source_id = assert_same_sets(&pg, dir.path()).await;
    assert!(central_chain_verifies(&pg, &source_id).await > 0);
}

/// The partitions of the central table, by name.
async fn partitions(pg: &PgCluster) -> Vec<String> {
    let client = pg.client().await;
    let mut names: Vec<String> = client
        .query(
            "SELECT c.relname::text FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid \
             WHERE i.inhparent = 'audit_events'::regclass",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| r.get(0))
        .collect();
    names.sort();
    names
}

fn back_dated(times: &[&str]) -> Vec<NewEvent> {
    times
        .iter()
        .map(|t| {
            let mut e = NewEvent::new(EventType::Custom, "back-dated");
            e.timestamp = t.parse().unwrap();
            e
        })
        .collect()
}

/// Central retention drops whole months older than
/// `shipping.central_retention_days`: with `purge --central`, and by a
/// shipper at its first batch. Newer months and their rows stay.
#[tokio::test]
async fn central_retention_drops_whole_old_months() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let dsn = pg.dsn();
    crate::support::append_to_store(
        dir.path(),
        back_dated(&["2020-03-31T23:59:59.999999Z", "2020-04-01T00:00:00Z"]),
    )
    .await;
    let proxy = start(&mock, dir.path(), &dsn).await;
    calls(&proxy, "kept", 2).await;
    until_caught_up(&proxy).await;
    proxy.stop().await;
    let before = partitions(&pg).await;
    assert!(
        before.contains(&"audit_events_2020_03".to_owned()),
        "{before:?}"
    );
    assert!(
        before.contains(&"audit_events_2020_04".to_owned()),
        "{before:?}"
    );

    let work = tempfile::tempdir().unwrap();
    let dsn_file = work.path().join("dsn");
    std::fs::write(&dsn_file, &dsn).unwrap();
    // Without days set, the command says which key to set.
    let out = command()
        .args(["purge", "--postgres-dsn-file"])
        .arg(&dsn_file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("shipping.central_retention_days"),
        "{stderr}"
    );

    let out = output_ok(
        command()
            .args(["purge", "--central"])
            .env("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN_FILE", &dsn_file)
            .env("LLM_AUDIT_PROXY_SHIPPING_CENTRAL_RETENTION_DAYS", "30"),
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        report["dropped_partitions"],
        json!(["audit_events_2020_03", "audit_events_2020_04"])
    );
    let after = partitions(&pg).await;
    assert_eq!(after.len(), before.len() - 2, "{after:?}");
    let (source_id, local) = local_rows(dir.path()).await;
    let (central, _) = central_rows(&pg, &source_id).await;
    assert_eq!(central.len(), local.len() - 2, "only the two old rows went");

    // A month shipped later, then a shipper with retention set drops it
    // before its first batch.
    crate::support::append_to_store(dir.path(), back_dated(&["2019-06-15T12:00:00Z"])).await;
    let proxy = start(&mock, dir.path(), &dsn).await;
    until_caught_up(&proxy).await;
    proxy.stop().await;
    assert!(partitions(&pg)
        .await
        .contains(&"audit_events_2019_06".to_owned()));
    let mut env = shipping_env(&dsn);
    env.push((
        "LLM_AUDIT_PROXY_SHIPPING_CENTRAL_RETENTION_DAYS",
        "30".to_owned(),
    ));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = TestProxy::start_in(&mock.url(), dir.path(), &pairs).await;
    calls(&proxy, "after", 1).await;
    until_caught_up(&proxy).await;
    proxy.stop().await;
    assert_eq!(
        partitions(&pg).await,
        after,
        "2019-06 dropped, the rest kept"
    );
}

//! The central store's rows keep their origin: CSV exports name each
//! row's source, pod, namespace and node (a local store's CSV is as it
//! always was); `verify --source` checks one source's chain against the
//! checkpoints expected of it; and the `pod` and `policy_name` filters are
//! served by indexes.

use std::path::Path;

use llm_audit_proxy::config::{self, FlagValues, Secret};
use llm_audit_proxy::event::EventType;
use llm_audit_proxy::fleet::{self, RunningFleet};
use llm_audit_proxy::store::postgres::PostgresStore;
use llm_audit_proxy::store::{AuditStore, EventFilter, EventQuery};

use crate::binary::command;
use crate::central::{calls, local_rows, shipping_env, until_caught_up};
use crate::support::postgres::PgCluster;
use crate::support::{output_ok, MockUpstream, TestProxy};

const EVENT_COLUMNS: [&str; 10] = [
    "id",
    "seq",
    "timestamp",
    "event_type",
    "level",
    "message",
    "request_id",
    "metadata",
    "prev_hash",
    "hash",
];

/// A proxy shipping as `pod` in `namespace`.
async fn start_as(mock: &MockUpstream, dir: &Path, dsn: &str, pod: &str) -> TestProxy {
    let mut env = shipping_env(dsn);
    env.retain(|(k, _)| !k.starts_with("LLM_AUDIT_PROXY_POD_"));
    env.push(("LLM_AUDIT_PROXY_POD_NAME", pod.into()));
    env.push(("LLM_AUDIT_PROXY_POD_NAMESPACE", "team-x".into()));
    env.push(("LLM_AUDIT_PROXY_NODE_NAME", "node-1".into()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    TestProxy::start_in(&mock.url(), dir, &pairs).await
}

async fn start_fleet(dsn: &str) -> RunningFleet {
    let env: std::collections::HashMap<String, String> = [
        ("LLM_AUDIT_PROXY_ADMIN_LISTEN", "127.0.0.1:0"),
        ("LLM_AUDIT_PROXY_SHIPPING_POSTGRES_DSN", dsn),
        ("LLM_AUDIT_PROXY_LOG_FORMAT", "text"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = config::load(None, &env, &FlagValues::new()).unwrap();
    fleet::start(config).await.unwrap()
}

async fn get_text(url: &str) -> String {
    let r = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .get(url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{url}");
    r.text().await.unwrap()
}

/// The header and rows of a CSV body.
fn csv_rows(body: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let mut reader = csv::Reader::from_reader(body.as_bytes());
    let header = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    let rows = reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect();
    (header, rows)
}

/// Checks a central CSV export: the event columns, then the origin ones,
/// each row's origin that of the proxy it came from.
fn assert_fleet_csv(body: &str, expected_rows: usize, origins: &[(&str, &str)], what: &str) {
    let (header, rows) = csv_rows(body);
    let mut want: Vec<&str> = EVENT_COLUMNS.to_vec();
    want.extend(["source_id", "pod", "namespace", "node"]);
    assert_eq!(header, want, "{what}");
    assert_eq!(rows.len(), expected_rows, "{what}");
    for row in &rows {
        assert_eq!(row.len(), 14, "{what}: {row:?}");
        let pod = origins
            .iter()
            .find(|(source, _)| *source == row[10])
            .map(|(_, pod)| *pod)
            .unwrap_or_else(|| panic!("{what}: unknown source in {row:?}"));
        assert_eq!(row[11..], [pod, "team-x", "node-1"], "{what}");
    }
}

/// Two proxies (pod-a and pod-b) that shipped a few calls each, stopped:
/// their store folders, and each store's id and rows.
struct Shipped {
    dir_a: tempfile::TempDir,
    id_a: String,
    local_a: Vec<(i64, String, String)>,
    id_b: String,
    local_b: Vec<(i64, String, String)>,
}

async fn ship_two_pods(dsn: &str) -> Shipped {
    let mock = MockUpstream::start().await;
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = start_as(&mock, dir_a.path(), dsn, "pod-a").await;
    let b = start_as(&mock, dir_b.path(), dsn, "pod-b").await;
    calls(&a, "alpha", 3).await;
    calls(&b, "beta", 2).await;
    until_caught_up(&a).await;
    until_caught_up(&b).await;
    a.stop().await;
    b.stop().await;
    let (id_a, local_a) = local_rows(dir_a.path()).await;
    let (id_b, local_b) = local_rows(dir_b.path()).await;
    Shipped {
        dir_a,
        id_a,
        local_a,
        id_b,
        local_b,
    }
}

/// A file holding `dsn`, for `--postgres-dsn-file`.
fn dsn_file(work: &tempfile::TempDir, dsn: &str) -> String {
    let path = work.path().join("dsn");
    std::fs::write(&path, dsn).unwrap();
    path.display().to_string()
}

#[tokio::test]
async fn central_csv_exports_name_each_rows_origin_and_local_ones_do_not() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let dsn = pg.dsn();
    // A local store's CSV keeps exactly the event columns.
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    calls(&proxy, "local", 2).await;
    let local_csv = proxy.admin_text("/api/export?format=csv").await;
    let (header, rows) = csv_rows(&local_csv);
    assert_eq!(header, EVENT_COLUMNS, "{local_csv}");
    assert!(
        !rows.is_empty() && rows.iter().all(|r| r.len() == 10),
        "{local_csv}"
    );
    assert!(local_csv.starts_with(&format!("{}\n", EVENT_COLUMNS.join(","))));
    proxy.stop().await;

    let Shipped {
        id_a,
        local_a,
        id_b,
        local_b,
        ..
    } = ship_two_pods(&dsn).await;
    let origins = [(id_a.as_str(), "pod-a"), (id_b.as_str(), "pod-b")];
    let total = local_a.len() + local_b.len();

    // The fleet admin's CSV, whole and filtered, and the console's.
    let fleet = start_fleet(&dsn).await;
    let url = format!("http://{}", fleet.admin_addr);
    let body = get_text(&format!("{url}/api/export?format=csv")).await;
    assert_fleet_csv(&body, total, &origins, "/api/export");
    let body = get_text(&format!("{url}/api/export?format=csv&pod=pod-b")).await;
    assert_fleet_csv(&body, local_b.len(), &origins, "/api/export?pod=pod-b");
    let body = get_text(&format!("{url}/ui/export?format=csv&pod=pod-a")).await;
    assert_fleet_csv(&body, local_a.len(), &origins, "/ui/export");
    fleet.stop().await;

    // The offline export of the central store.
    let work = tempfile::tempdir().unwrap();
    let dsn_flag = dsn_file(&work, &dsn);
    let out = work.path().join("fleet.csv");
    output_ok(
        command()
            .args(["export", "--postgres-dsn-file", &dsn_flag])
            .args(["--format", "csv", "--out"])
            .arg(&out),
    );
    let body = std::fs::read_to_string(&out).unwrap();
    assert_fleet_csv(&body, total, &origins, "export --central");
}

#[tokio::test]
async fn verify_checks_one_central_source_against_its_expected_checkpoint() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let dsn = pg.dsn();
    let Shipped {
        dir_a,
        id_a,
        local_a,
        id_b,
        ..
    } = ship_two_pods(&dsn).await;
    let work = tempfile::tempdir().unwrap();
    let dsn_flag = dsn_file(&work, &dsn);

    // verify --expect-checkpoint on the central store needs --source.
    let (seq, hash, _) = &local_a[2];
    let anchor = format!("{seq}:{hash}");
    let verify = |extra: &[&str]| {
        command()
            .args(["verify", "--postgres-dsn-file", &dsn_flag])
            .args(extra)
            .output()
            .unwrap()
    };
    let out = verify(&["--expect-checkpoint", &anchor]);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--expect-checkpoint") && stderr.contains("--source"),
        "{stderr}"
    );

    // With the source named: its chain alone, reaching the checkpoint.
    let out = verify(&["--source", &id_a, "--expect-checkpoint", &anchor]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["sources_checked"], 1, "{report}");
    assert_eq!(report["sources"][0]["source_id"], id_a.as_str());
    assert_eq!(report["events_checked"], local_a.len() as u64);

    // The same seq with another hash: a rebuilt chain.
    let forged = format!("{seq}:{}", "0".repeat(64));
    let out = verify(&["--source", &id_a, "--expect-checkpoint", &forged]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("(rebuilt) in source {id_a} at seq {seq}")),
        "{stderr}"
    );

    // A checkpoint past the last shipped row: the record does not reach it.
    let last = local_a.last().unwrap().0;
    let beyond = format!("{}:{hash}", last + 5);
    let out = verify(&["--source", &id_a, "--expect-checkpoint", &beyond]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("(truncated)") && stderr.contains(&format!("ends at seq {last}")),
        "{stderr}"
    );

    // The checkpoint belongs to source a: source b's chain does not hold
    // that hash at that seq.
    let out = verify(&["--source", &id_b, "--expect-checkpoint", &anchor]);
    assert_eq!(out.status.code(), Some(1));

    // A source the central store does not hold.
    let out = verify(&["--source", "no-such-source"]);
    assert_ne!(out.status.code(), Some(0));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no events of source no-such-source"),
        "{stderr}"
    );

    // On a local store --source names the store itself.
    let local = |source: &str| {
        command()
            .args(["verify", "--file-path"])
            .arg(dir_a.path())
            .args(["--source", source, "--expect-checkpoint", &anchor])
            .output()
            .unwrap()
    };
    assert_eq!(local(&id_a).status.code(), Some(0));
    let out = local(&id_b);
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--source"), "{stderr}");
}

#[tokio::test]
async fn the_pod_and_policy_filters_use_central_indexes() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let store = PostgresStore::open(&Secret::new(pg.dsn())).await.unwrap();
    // 20,000 rows of 200 pods (100 rows each, as in a large fleet) in the
    // current month; every 50th a violation
    // of one of four policies. Rows whose policy is a number, or sits
    // deeper than the top level, do not count as naming a policy.
    let client = pg.client().await;
    client
        .batch_execute(
            "INSERT INTO audit_events (source_id, seq, \"timestamp\", id, event_type, level,
                 level_rank, message, request_id, metadata, prev_hash, hash, pod, namespace, node)
             SELECT 'source-' || (i % 20), i,
                 date_trunc('month', now()) + i * interval '1 second',
                 'id-' || i,
                 CASE WHEN i % 50 = 0 THEN 'COMPLIANCE_VIOLATION' ELSE 'RESPONSE' END,
                 'INFO', 1, 'm', 'req-' || i,
                 CASE
                     WHEN i % 50 = 0 THEN '{\"policy_name\":\"policy-' || (i / 50 % 4) || '\"}'
                     WHEN i % 50 = 1 THEN '{\"policy_name\":7}'
                     WHEN i % 50 = 2 THEN '{\"nested\":{\"policy_name\":\"policy-1\"}}'
                     ELSE '{\"model\":\"gpt\"}'
                 END,
                 'p', 'h', 'pod-' || (i % 200), 'ns-' || (i % 2), 'node'
             FROM generate_series(1, 20000) AS i;
             ANALYZE audit_events;",
        )
        .await
        .unwrap();

    let page = |filter: EventFilter| EventQuery {
        filter,
        limit: 100,
        before_seq: None,
    };
    let by_pod = page(EventFilter {
        pod: Some("pod-3".into()),
        ..EventFilter::default()
    });
    let by_policy = page(EventFilter {
        policy_name: Some("policy-1".into()),
        ..EventFilter::default()
    });
    for (query, index) in [
        (&by_pod, "pod_timestamp_idx"),
        (&by_policy, "policy_name_timestamp_idx"),
    ] {
        let plan = store.explain_page(query).await.unwrap();
        assert!(
            plan.lines()
                .any(|line| line.contains("Index") && line.contains(index)),
            "{:?} does not use an index on {index}:\n{plan}",
            query.filter
        );
    }

    // The filters still select exactly their rows.
    let all = |filter: EventFilter| {
        let store = &store;
        async move {
            let query = EventQuery {
                filter,
                limit: 10_000,
                before_seq: None,
            };
            store.query_records(&query).await.unwrap().events
        }
    };
    let pod_3 = all(by_pod.filter.clone()).await;
    assert_eq!(pod_3.len(), 100);
    assert!(pod_3
        .iter()
        .all(|r| r.origin.as_ref().unwrap().pod.as_deref() == Some("pod-3")));
    let policy_1 = all(by_policy.filter.clone()).await;
    assert_eq!(
        policy_1.len(),
        100,
        "one violation in 200 rows names policy-1"
    );
    assert!(policy_1
        .iter()
        .all(|r| r.event_type == EventType::ComplianceViolation
            && r.metadata.get() == r#"{"policy_name":"policy-1"}"#));
    let numeric = all(EventFilter {
        policy_name: Some("7".into()),
        ..EventFilter::default()
    })
    .await;
    assert!(numeric.is_empty(), "a number is not a policy name");
}

/// The central store's stats are counted in one snapshot: read while
/// rows arrive, the total (the sum by type) is always the sum by level.
#[tokio::test]
async fn central_stats_read_while_rows_arrive_are_of_one_snapshot() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let store = PostgresStore::open(&Secret::new(pg.dsn())).await.unwrap();
    let client = pg.client().await;
    let written = std::sync::atomic::AtomicBool::new(false);
    let write = async {
        for round in 0..100 {
            let (first, last) = (round * 20 + 1, round * 20 + 20);
            client
                .batch_execute(&format!(
                    "INSERT INTO audit_events (source_id, seq, \"timestamp\", id, event_type,
                         level, level_rank, message, request_id, metadata, prev_hash, hash,
                         pod, namespace, node)
                     SELECT 'source-s', i, date_trunc('month', now()) + i * interval '1 second',
                         'id-' || i,
                         CASE WHEN i % 2 = 0 THEN 'REQUEST' ELSE 'RESPONSE' END,
                         CASE WHEN i % 3 = 0 THEN 'WARNING' ELSE 'INFO' END,
                         CASE WHEN i % 3 = 0 THEN 2 ELSE 1 END,
                         'm', 'req-' || i, '{{}}', 'p', 'h', 'pod', 'ns', 'node'
                     FROM generate_series({first}, {last}) AS i"
                ))
                .await
                .unwrap();
        }
        written.store(true, std::sync::atomic::Ordering::Relaxed);
    };
    let read = async {
        let mut reads = 0;
        while !written.load(std::sync::atomic::Ordering::Relaxed) || reads == 0 {
            let stats = store.stats().await.unwrap();
            let by_level: u64 = stats.by_level.values().sum();
            assert_eq!(stats.total_events, by_level, "{stats:?}");
            reads += 1;
        }
        reads
    };
    let ((), reads) = tokio::join!(write, read);
    assert!(reads > 1, "{reads}");
    assert_eq!(store.stats().await.unwrap().total_events, 2000);
}

/// Violations are counted by policy and severity as the local stores count
/// them: a key that is not a string counts as the empty string, and other
/// events that carry the keys are not counted.
#[tokio::test]
async fn central_stats_count_violations_under_string_keys_only() {
    let Some(pg) = PgCluster::start().await else {
        return;
    };
    let store = PostgresStore::open(&Secret::new(pg.dsn())).await.unwrap();
    let client = pg.client().await;
    let rows = [
        (
            "COMPLIANCE_VIOLATION",
            r#"{"policy_name": "pii-basic", "severity": "high"}"#,
        ),
        (
            "COMPLIANCE_VIOLATION",
            r#"{"policy_name": "pii-basic", "severity": "low"}"#,
        ),
        (
            "COMPLIANCE_VIOLATION",
            r#"{"policy_name": 42, "severity": {"level": "high"}}"#,
        ),
        (
            "COMPLIANCE_VIOLATION",
            r#"{"policy_name": null, "severity": "low"}"#,
        ),
        (
            "COMPLIANCE_VIOLATION",
            r#"{"detail": "no policy or severity"}"#,
        ),
        (
            "REQUEST",
            r#"{"policy_name": "secrets", "severity": "high"}"#,
        ),
    ];
    for (i, (event_type, metadata)) in rows.iter().enumerate() {
        let seq = i as i64 + 1;
        client
            .execute(
                "INSERT INTO audit_events (source_id, seq, \"timestamp\", id, event_type,
                     level, level_rank, message, request_id, metadata, prev_hash, hash)
                 VALUES ('source-v', $1::bigint,
                     date_trunc('month', now()) + $1::bigint * interval '1 second',
                     'id-' || $1::bigint, $2, 'INFO', 1, 'm', NULL, $3, 'p', 'h')",
                &[&seq, event_type, metadata],
            )
            .await
            .unwrap();
    }
    let stats = store.stats().await.unwrap();
    let counts = |pairs: &[(&str, u64)]| -> std::collections::BTreeMap<String, u64> {
        pairs.iter().map(|(k, n)| ((*k).to_owned(), *n)).collect()
    };
    assert_eq!(
        stats.violations_by_policy,
        counts(&[("", 3), ("pii-basic", 2)])
    );
    assert_eq!(
        stats.violations_by_severity,
        counts(&[("", 2), ("high", 1), ("low", 2)])
    );
}

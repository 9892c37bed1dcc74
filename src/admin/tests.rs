use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use axum::body::Body;
use axum::http::{header, HeaderMap, Method, Request, StatusCode};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use futures_util::stream;
use serde_json::{json, Value};
use tokio_util::task::TaskTracker;
use tower::ServiceExt;

use super::*;
use crate::event::{format_timestamp, AuditEvent, EventType, Level};
use crate::pipeline::{spawn_writer, WriterConfig};
use crate::store::conformance::sample_events;
use crate::store::memory::MemoryStore;
use crate::store::{
    AuditStore, ChainHead, EventFilter, EventPage, EventQuery, EventStream, PurgeReport,
    StoreError, StoreStats,
};

struct Harness {
    app: Router,
    events: Handle,
    refusals: Arc<super::refusals::RefusalLog>,
    readiness: Readiness,
    seeded: Vec<AuditEvent>,
    _tracker: TaskTracker,
}

async fn harness(tokens: &[&str]) -> Harness {
    let store = Arc::new(MemoryStore::new(10_000));
    let seeded = sample_events();
    store.append_batch(seeded.clone().into()).await.unwrap();
    harness_with(store, tokens, seeded).await
}

async fn harness_with(store: SharedStore, tokens: &[&str], seeded: Vec<AuditEvent>) -> Harness {
    harness_full(store, tokens, seeded, 8 * 1024 * 1024).await
}

/// With `tokens` (both scopes), the API also accepts `read-only-token` and
/// `write-only-token` with one scope each.
async fn harness_full(
    store: SharedStore,
    tokens: &[&str],
    seeded: Vec<AuditEvent>,
    page_max_bytes: usize,
) -> Harness {
    let tracker = TaskTracker::new();
    let cfg = WriterConfig::for_tests(64, 64);
    let (events, health) = spawn_writer(store.clone(), cfg, &tracker).await.unwrap();
    let readiness = Readiness::new(health);
    readiness.set_proxy_listening(true);
    let metrics = Arc::new(crate::telemetry::metrics::Metrics::new(
        events.stats().clone(),
    ));
    let refusals = Arc::new(super::refusals::RefusalLog::new(
        events.clone(),
        metrics.clone(),
        Duration::from_secs(3600),
    ));
    let app = router(AdminState {
        verify_keys: Default::default(),
        store,
        events: events.clone(),
        readiness: readiness.clone(),
        tokens: Arc::new(if tokens.is_empty() {
            super::auth::TokenSet::default()
        } else {
            super::auth::TokenSet::new(
                tokens.iter().copied(),
                ["read-only-token"],
                ["write-only-token"],
            )
        }),
        refusals: refusals.clone(),
        page_max_bytes,
        sanitizer: std::sync::Arc::new(crate::capture::sanitize::Sanitizer::baseline()),
        metrics,
    });
    Harness {
        app,
        events,
        refusals,
        readiness,
        seeded,
        _tracker: tracker,
    }
}

struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    fn error_param(&self) -> Option<String> {
        self.json()["error"]["param"].as_str().map(str::to_owned)
    }
}

impl Harness {
    async fn send(&self, method: Method, uri: &str, auth: Option<&str>, body: Body) -> Reply {
        let mut req = Request::builder().method(method).uri(uri);
        if let Some(auth) = auth {
            req = req.header(header::AUTHORIZATION, auth);
        }
        let response = self
            .app
            .clone()
            .oneshot(req.body(body).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let headers = response.headers().clone();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        Reply {
            status,
            headers,
            body,
        }
    }

    /// The stored AUTHENTICATION events, newest first.
    async fn authentication_events(&self) -> Vec<Value> {
        self.events.flush().await;
        let r = self
            .send(
                Method::GET,
                "/api/events?event_type=AUTHENTICATION&limit=100",
                Some("Bearer read-only-token"),
                Body::empty(),
            )
            .await;
        r.json()["events"].as_array().unwrap().clone()
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(Method::GET, uri, None, Body::empty()).await
    }

    async fn post(&self, body: Value) -> Reply {
        self.send(
            Method::POST,
            "/api/events",
            None,
            Body::from(body.to_string()),
        )
        .await
    }

    /// Seqs the API returns for `query`, walking every page.
    async fn seqs(&self, query: &str) -> Vec<i64> {
        let page = self.get(&format!("/api/events?{query}")).await;
        assert_eq!(page.status, StatusCode::OK, "{query}: {:?}", page.body);
        let body = page.json();
        assert!(body["next_cursor"].is_null(), "{query}");
        seqs_of(&body["events"])
    }

    fn expected(&self, filter: impl Fn(&AuditEvent) -> bool) -> Vec<i64> {
        self.seeded
            .iter()
            .rev()
            .filter(|e| filter(e))
            .map(|e| e.seq)
            .collect()
    }
}

fn seqs_of(events: &Value) -> Vec<i64> {
    events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect()
}

fn enc(s: &str) -> String {
    form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[tokio::test]
async fn probes_answer() {
    let h = harness(&["secret"]).await;
    let r = h.get("/healthz").await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, json!({"status": "ok"}))
    );
    let r = h.get("/readyz").await;
    assert_eq!(
        (r.status, r.json()),
        (StatusCode::OK, json!({"status": "ready"}))
    );
    h.readiness.start_draining();
    let r = h.get("/readyz").await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        r.json(),
        json!({"status": "not_ready", "reason": "draining"})
    );
}

#[tokio::test]
async fn events_are_newest_first_and_every_filter_applies() {
    let h = harness(&[]).await;
    assert_eq!(h.seqs("").await, h.expected(|_| true));

    let t10 = format_timestamp(&h.seeded[9].timestamp);
    let t30 = format_timestamp(&h.seeded[29].timestamp);
    let user_login = EventType::Other("USER_LOGIN".into());
    assert_eq!(
        h.seqs("event_type=REQUEST").await,
        h.expected(|e| e.event_type == EventType::Request)
    );
    assert_eq!(
        h.seqs("event_types=REQUEST,USER_LOGIN").await,
        h.expected(|e| e.event_type == EventType::Request || e.event_type == user_login)
    );
    assert_eq!(
        h.seqs("event_type=REQUEST&event_type=USER_LOGIN").await,
        h.expected(|e| e.event_type == EventType::Request || e.event_type == user_login)
    );
    let from10 = h.seqs(&format!("start_time={}", enc(&t10))).await;
    assert_eq!(from10, h.expected(|e| e.seq >= 10));
    let until10 = h.seqs(&format!("end_time={}", enc(&t10))).await;
    assert_eq!(until10, h.expected(|e| e.seq < 10));
    // Any offset is accepted and compared in UTC.
    let shifted = h.seeded[9]
        .timestamp
        .with_timezone(&chrono::FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339();
    assert_eq!(
        h.seqs(&format!("start_time={}", enc(&shifted))).await,
        from10
    );
    assert_eq!(
        h.seqs("request_id=req-2").await,
        h.expected(|e| e.request_id.as_deref() == Some("req-2"))
    );
    assert_eq!(
        h.seqs("level=warning").await,
        h.expected(|e| e.level >= Level::Warning)
    );
    assert_eq!(
        h.seqs(&format!(
            "event_type=RESPONSE,COMPLIANCE_VIOLATION&start_time={}&end_time={}&request_id=req-1&level=INFO",
            enc(&t10),
            enc(&t30)
        ))
        .await,
        h.expected(|e| matches!(
            e.event_type,
            EventType::Response | EventType::ComplianceViolation
        ) && (10..30).contains(&e.seq)
            && e.request_id.as_deref() == Some("req-1"))
    );
    assert!(h.seqs("request_id=nobody").await.is_empty());
}

#[tokio::test]
async fn cursor_pages_visit_every_event_once() {
    let h = harness(&[]).await;
    let mut seen = Vec::new();
    let mut uri = "/api/events?limit=7".to_owned();
    loop {
        let body = h.get(&uri).await.json();
        let page = seqs_of(&body["events"]);
        assert!(page.len() <= 7);
        seen.extend(page);
        match body["next_cursor"].as_str() {
            Some(cursor) => uri = format!("/api/events?limit=7&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, h.expected(|_| true));

    let body = h.get("/api/events?limit=1").await.json();
    assert_eq!(seqs_of(&body["events"]), [40]);
    assert_eq!(body["next_cursor"], "40");
}

#[tokio::test]
async fn bad_parameters_are_refused_by_name() {
    let h = harness(&[]).await;
    let cases = [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=abc", "limit"),
        ("limit=-1", "limit"),
        ("start_time=yesterday", "start_time"),
        ("end_time=2026-13-01T00:00:00Z", "end_time"),
        (
            "start_time=2026-01-02T00:00:00Z&end_time=2026-01-01T00:00:00Z",
            "end_time",
        ),
        ("level=loud", "level"),
        ("event_type=request", "event_type"),
        ("event_types=REQUEST,", "event_types"),
        ("cursor=abc", "cursor"),
        ("cursor=0", "cursor"),
        ("request_id=has%20space", "request_id"),
        ("evnt_type=REQUEST", "evnt_type"),
        ("limit=1&limit=2", "limit"),
    ];
    for (query, param) in cases {
        let r = h.get(&format!("/api/events?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(r.error_param().as_deref(), Some(param), "{query}");
        let body = r.json();
        assert_eq!(body["error"]["type"], "invalid_request_error");
        assert_eq!(body["error"]["code"], "invalid_parameter");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(param),
            "{query}"
        );
    }
    for (query, param) in [
        ("format=xml", "format"),
        ("limit=5", "limit"),
        ("cursor=5", "cursor"),
        ("level=nope", "level"),
    ] {
        let r = h.get(&format!("/api/export?{query}")).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(r.error_param().as_deref(), Some(param), "{query}");
    }
}

#[tokio::test]
async fn one_event_by_id_or_404() {
    let h = harness(&[]).await;
    let e = &h.seeded[4];
    let r = h.get(&format!("/api/events/{}", e.id)).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json(), serde_json::to_value(e).unwrap());
    let r = h
        .get("/api/events/0190b6c8-0000-7000-8000-000000000000")
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert_eq!(r.json()["error"]["code"], "not_found");
    let r = h.get("/api/nothing-here").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn exports_match_the_query_api_in_every_format() {
    let h = harness(&[]).await;
    for filter in [
        "",
        "event_type=REQUEST,ERROR",
        "level=ERROR&request_id=req-3",
    ] {
        let mut expected: Vec<Value> = h
            .get(&format!("/api/events?limit=10000&{filter}"))
            .await
            .json()["events"]
            .as_array()
            .unwrap()
            .clone();
        expected.reverse();

        let r = h.get(&format!("/api/export?{filter}")).await;
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/json");
        let disposition = r.headers[header::CONTENT_DISPOSITION].to_str().unwrap();
        assert!(disposition.starts_with("attachment; filename=\"audit-events-"));
        assert!(disposition.ends_with(".json\""));
        assert_eq!(r.json(), Value::Array(expected.clone()), "{filter}");

        let r = h.get(&format!("/api/export?format=ndjson&{filter}")).await;
        assert_eq!(r.headers[header::CONTENT_TYPE], "application/x-ndjson");
        let lines: Vec<Value> = std::str::from_utf8(&r.body)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines, expected, "{filter}");

        let r = h.get(&format!("/api/export?format=csv&{filter}")).await;
        assert_eq!(r.headers[header::CONTENT_TYPE], "text/csv; charset=utf-8");
        assert!(r.headers[header::CONTENT_DISPOSITION]
            .to_str()
            .unwrap()
            .ends_with(".csv\""));
        let rows = parse_csv(&r.body);
        assert_eq!(rows.len(), expected.len(), "{filter}");
        for (row, event) in rows.iter().zip(&expected) {
            assert_eq!(row, &csv_row_of(event), "{filter}");
        }
    }
    // An empty result is still a valid document.
    let r = h.get("/api/export?request_id=nobody").await;
    assert_eq!(r.json(), json!([]));
}

fn parse_csv(body: &[u8]) -> Vec<Vec<String>> {
    let mut reader = csv::Reader::from_reader(body);
    let header: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(header, export::CSV_HEADER);
    reader
        .records()
        .map(|r| r.unwrap().iter().map(str::to_owned).collect())
        .collect()
}

/// The CSV cells an event from `/api/events` should export as.
fn csv_row_of(e: &Value) -> Vec<String> {
    let text = |k: &str| e[k].as_str().unwrap_or("").to_owned();
    vec![
        text("id"),
        e["seq"].to_string(),
        text("timestamp"),
        text("event_type"),
        text("level"),
        export::inert_cell(&text("message")).into_owned(),
        text("request_id"),
        e["metadata"].to_string(),
        text("prev_hash"),
        text("hash"),
    ]
}

#[tokio::test]
async fn csv_formula_cells_are_inert() {
    let h = harness(&[]).await;
    for message in [
        "=HYPERLINK(\"http://x\",\"y\")",
        "+1",
        "-2",
        "@SUM(A1)",
        "\tx",
    ] {
        let r = h
            .post(json!({"event_type": "CUSTOM", "message": message, "request_id": "inj"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    }
    let r = h.get("/api/export?format=csv&request_id=inj").await;
    let messages: Vec<String> = parse_csv(&r.body)
        .into_iter()
        .map(|r| r[5].clone())
        .collect();
    assert_eq!(
        messages,
        [
            "'=HYPERLINK(\"http://x\",\"y\")",
            "'+1",
            "'-2",
            "'@SUM(A1)",
            "'\tx"
        ]
    );
}

#[tokio::test]
async fn custom_events_are_validated_and_stored_in_the_chain() {
    let h = harness(&[]).await;
    let r = h
        .post(json!({
            "event_type": "USER_LOGIN",
            "message": "alice logged in",
            "metadata": {"user": "alice"},
            "level": "warning",
            "request_id": "req-login",
        }))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{:?}", r.body);
    let stored = r.json();
    assert_eq!(stored["seq"], 41);
    assert_eq!(stored["prev_hash"], h.seeded[39].hash);
    assert_eq!(stored["event_type"], "USER_LOGIN");
    assert_eq!(stored["level"], "WARNING");
    assert_eq!(stored["metadata"], json!({"user": "alice"}));
    let id = stored["id"].as_str().unwrap();
    assert_eq!(r.headers[header::LOCATION], format!("/api/events/{id}"));
    assert_eq!(h.get(&format!("/api/events/{id}")).await.json(), stored);

    let r = h
        .post(json!({"event_type": "CUSTOM", "message": "defaults"}))
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.json()["level"], "INFO");
    assert_eq!(r.json()["metadata"], json!({}));

    let verify = h.get("/api/verify").await.json();
    assert_eq!(verify["ok"], true);
    assert_eq!(verify["events_checked"], 42);
    assert_eq!(verify["head"]["seq"], 42);

    let long = "x".repeat(query::MAX_MESSAGE_CHARS + 1);
    let cases = [
        (json!({"message": "m"}), "event_type"),
        (json!({"event_type": 5, "message": "m"}), "event_type"),
        (
            json!({"event_type": "user_login", "message": "m"}),
            "event_type",
        ),
        (
            json!({"event_type": "REQUEST", "message": "m"}),
            "event_type",
        ),
        (
            json!({"event_type": "AUTHENTICATION", "message": "m"}),
            "event_type",
        ),
        (
            json!({"event_type": "COMPLIANCE_VIOLATION", "message": "m"}),
            "event_type",
        ),
        (json!({"event_type": "CUSTOM"}), "message"),
        (json!({"event_type": "CUSTOM", "message": ""}), "message"),
        (json!({"event_type": "CUSTOM", "message": long}), "message"),
        (json!({"event_type": "CUSTOM", "message": ["m"]}), "message"),
        (
            json!({"event_type": "CUSTOM", "message": "a\0b"}),
            "message",
        ),
        (
            json!({"event_type": "CUSTOM", "message": "m", "metadata": [1]}),
            "metadata",
        ),
        (
            json!({"event_type": "CUSTOM", "message": "m", "level": "LOUD"}),
            "level",
        ),
        (
            json!({"event_type": "CUSTOM", "message": "m", "request_id": "a b"}),
            "request_id",
        ),
        (
            json!({"event_type": "CUSTOM", "message": "m", "seq": 1}),
            "seq",
        ),
        (json!(["not", "an", "object"]), "body"),
    ];
    for (body, param) in cases {
        let r = h.post(body.clone()).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{body}");
        assert_eq!(r.error_param().as_deref(), Some(param), "{body}");
    }
    let r = h
        .send(Method::POST, "/api/events", None, Body::from("{not json"))
        .await;
    assert_eq!(r.error_param().as_deref(), Some("body"));

    let huge =
        json!({"event_type": "CUSTOM", "message": "m", "metadata": {"pad": "x".repeat(70_000)}});
    let r = h.post(huge).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.error_param().as_deref(), Some("body"));

    // Nothing refused reached the store.
    assert_eq!(h.get("/api/stats").await.json()["total_events"], 42);
}

#[tokio::test]
async fn stats_combine_store_and_pipeline_counters() {
    let h = harness(&[]).await;
    h.post(json!({"event_type": "CUSTOM", "message": "m"}))
        .await;
    let stats = h.get("/api/stats").await.json();
    assert_eq!(stats["store"], "memory");
    assert_eq!(stats["total_events"], 41);
    assert_eq!(stats["by_type"]["CUSTOM"], 7);
    assert_eq!(stats["by_level"]["CRITICAL"], 7);
    assert_eq!(stats["violations_by_policy"]["policy-0"], 7);
    assert_eq!(stats["pipeline"]["written"], 1);
    assert_eq!(stats["pipeline"]["offered"], 1);
    assert_eq!(stats["pipeline"]["dropped"], 0);
}

#[tokio::test]
async fn api_requires_a_configured_token_and_records_refusals() {
    let h = harness(&["s3cret-one", "s3cret-two"]).await;
    for auth in [
        None,
        Some("Bearer wrong"),
        Some("Basic s3cret-one"),
        Some("Bearer "),
    ] {
        for path in ["/api/events", "/api/export", "/api/stats", "/api/nothing"] {
            let r = h.send(Method::GET, path, auth, Body::empty()).await;
            assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{path} {auth:?}");
            assert_eq!(r.headers[header::WWW_AUTHENTICATE], "Bearer");
            assert_eq!(r.json()["error"]["type"], "authentication_error");
        }
    }
    let r = h
        .send(Method::POST, "/api/events", None, Body::from("{}"))
        .await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    for token in ["s3cret-one", "s3cret-two"] {
        let auth = format!("Bearer {token}");
        let r = h
            .send(
                Method::GET,
                "/api/events?limit=1",
                Some(&auth),
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
    assert_eq!(h.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(h.get("/readyz").await.status, StatusCode::OK);

    // The first refusal from a client is recorded at once; the other 16
    // are summed into one event when the interval closes (here: flushed).
    let refused = h.authentication_events().await;
    assert_eq!(refused.len(), 1);
    let first = &refused[0];
    assert_eq!(first["level"], "WARNING");
    assert_eq!(
        first["metadata"],
        json!({"method": "GET", "path": "/api/events", "reason": "missing_token", "count": 1})
    );
    h.refusals.flush(true);
    let refused = h.authentication_events().await;
    assert_eq!(refused.len(), 2);
    let text = Value::Array(refused.clone()).to_string();
    assert!(!text.contains("wrong") && !text.contains("s3cret"));
    let summary = &refused[0]["metadata"];
    assert_eq!(summary["count"], 16);
    assert_eq!(summary["reasons"]["invalid_token"], 12);
    assert_eq!(summary["reasons"]["missing_token"], 4);
    assert_eq!(summary["last_path"], "/api/events");
    assert_eq!(summary["collapsed"], true);
}

#[tokio::test]
async fn tokens_carry_read_and_write_scopes() {
    let h = harness(&["s3cret-both-scopes"]).await;
    let custom = || Body::from(json!({"event_type": "CUSTOM", "message": "m"}).to_string());
    // A read token reads, and may not post.
    for path in ["/api/events", "/api/export", "/api/stats", "/api/verify"] {
        let r = h
            .send(
                Method::GET,
                path,
                Some("Bearer read-only-token"),
                Body::empty(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{path}");
    }
    let r = h
        .send(
            Method::POST,
            "/api/events",
            Some("Bearer read-only-token"),
            custom(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let error = &r.json()["error"];
    assert_eq!(error["type"], "permission_error");
    assert_eq!(error["code"], "insufficient_scope");
    assert!(error["message"].as_str().unwrap().contains("`write` scope"));
    // A write token posts, and may not read.
    let r = h
        .send(
            Method::POST,
            "/api/events",
            Some("Bearer write-only-token"),
            custom(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = h
        .send(
            Method::GET,
            "/api/events",
            Some("Bearer write-only-token"),
            Body::empty(),
        )
        .await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert!(r.json()["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`read` scope"));
    // The plain token has both.
    let r = h
        .send(
            Method::POST,
            "/api/events",
            Some("Bearer s3cret-both-scopes"),
            custom(),
        )
        .await;
    assert_eq!(r.status, StatusCode::CREATED);
    // Both refusals were recorded, as insufficient_scope.
    h.refusals.flush(true);
    let refused = h.authentication_events().await;
    let count: u64 = refused
        .iter()
        .map(|e| e["metadata"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(count, 2);
    assert_eq!(
        refused.last().unwrap()["metadata"]["reason"],
        "insufficient_scope"
    );
}

#[tokio::test]
async fn pages_stop_at_their_byte_budget_and_continue_by_cursor() {
    let store = Arc::new(MemoryStore::new(10_000));
    let seeded = sample_events();
    store.append_batch(seeded.clone().into()).await.unwrap();
    let budget = 32 * 1024;
    let h = harness_full(store, &[], seeded.clone(), budget).await;
    let big = "x".repeat(8 * 1024);
    for i in 0..10 {
        h.post(
            json!({"event_type": "BIG", "message": format!("big {i}"), "metadata": {"blob": big}}),
        )
        .await;
    }
    h.events.flush().await;
    let mut cursor: Option<String> = None;
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        let uri = match &cursor {
            Some(c) => format!("/api/events?limit=10000&cursor={c}"),
            None => "/api/events?limit=10000".to_owned(),
        };
        let r = h.get(&uri).await;
        assert_eq!(r.status, StatusCode::OK);
        assert!(
            r.body.len() <= budget + 256,
            "page of {} bytes",
            r.body.len()
        );
        let page = r.json();
        pages += 1;
        for e in page["events"].as_array().unwrap() {
            seen.push(e["seq"].as_i64().unwrap());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert!(pages >= 3, "ten 8 KiB events need several 32 KiB pages");
    assert_eq!(seen.len(), seeded.len() + 10, "every event once");
    assert!(
        seen.windows(2).all(|w| w[0] > w[1]),
        "newest first, no repeats"
    );
    // One event larger than the budget still makes a page of its own.
    let huge = "y".repeat(25 * 1024);
    h.post(json!({"event_type": "HUGE", "message": "m", "metadata": {"blob": huge, "more": huge}}))
        .await;
    h.events.flush().await;
    let page = h.get("/api/events?limit=5").await.json();
    assert_eq!(page["events"].as_array().unwrap().len(), 1);
    assert!(page["next_cursor"].is_string());
}

/// A store whose reads fail, and whose export fails after one event.
struct BrokenStore {
    event: AuditEvent,
}

#[async_trait]
impl AuditStore for BrokenStore {
    fn kind(&self) -> &'static str {
        "broken"
    }
    async fn append_batch(&self, _: crate::store::Batch) -> Result<(), StoreError> {
        Err(StoreError::Other("disk on fire at /secret/path".into()))
    }
    async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
        Ok(None)
    }
    async fn query(&self, _: &EventQuery) -> Result<EventPage, StoreError> {
        Err(StoreError::Corrupt("page 7 of /secret/path".into()))
    }
    async fn get(&self, _: &str) -> Result<Option<AuditEvent>, StoreError> {
        Err(StoreError::Other("/secret/path".into()))
    }
    fn export(&self, _: EventFilter) -> EventStream {
        let items = vec![
            Ok(self.event.clone()),
            Err(StoreError::Corrupt("/secret/path".into())),
        ];
        Box::pin(stream::iter(items))
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        Err(StoreError::Unavailable("/secret/path".into()))
    }
    async fn health(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("/secret/path".into()))
    }
    async fn purge_before(&self, _: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        Err(StoreError::Unavailable("/secret/path".into()))
    }
    async fn enforce_max_bytes(&self, _: u64) -> Result<PurgeReport, StoreError> {
        Err(StoreError::Unavailable("/secret/path".into()))
    }
}

#[tokio::test]
async fn store_failures_are_503_without_internals_and_break_exports() {
    let store = Arc::new(BrokenStore {
        event: sample_events().remove(0),
    });
    let h = harness_with(store, &[], Vec::new()).await;
    for path in ["/api/events", "/api/events/x", "/api/stats", "/api/verify"] {
        let r = h.get(path).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
        let body = r.json();
        assert_eq!(body["error"]["code"], "store_unavailable");
        assert!(!body.to_string().contains("secret"), "{path}");
    }
    let r = h
        .post(json!({"event_type": "CUSTOM", "message": "m"}))
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!r.json().to_string().contains("secret"));

    for format in ["json", "ndjson", "csv"] {
        let req = Request::builder()
            .uri(format!("/api/export?format={format}"))
            .body(Body::empty())
            .unwrap();
        let response = h.app.clone().oneshot(req).await.unwrap();
        // Headers were sent before the failure, so the status is 200 and
        // the body itself must end in an error.
        assert_eq!(response.status(), StatusCode::OK);
        let body = axum::body::to_bytes(response.into_body(), usize::MAX).await;
        assert!(
            body.is_err(),
            "{format} export completed despite a store failure"
        );
    }
}

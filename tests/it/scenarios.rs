//! The audit SDK's documented scenarios, and the `audit.*` switches, end
//! to end.

use std::path::Path;

use chrono::{DateTime, Duration as ChronoDuration, Utc};
use llm_audit_proxy::event::{format_timestamp, EventType, Level, NewEvent};
use serde_json::{json, Value};

use crate::support::{append_to_store, dead_address, MockUpstream, TestProxy};

/// Writes events of the given types and times, chained, into a new store.
async fn seed(dir: &Path, events: &[(EventType, Level, DateTime<Utc>)]) {
    let events = events
        .iter()
        .enumerate()
        .map(|(i, (t, level, at))| {
            let mut e = NewEvent::new(t.clone(), format!("seeded {i}"))
                .with_level(*level)
                .with_metadata(json!({"policy_name": "pci", "i": i}));
            e.timestamp = *at;
            e
        })
        .collect();
    append_to_store(dir, events).await;
}

#[tokio::test]
async fn compliance_violations_of_the_last_24_hours() {
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let now = llm_audit_proxy::event::now();
    seed(
        tmp.path(),
        &[
            (
                EventType::ComplianceViolation,
                Level::Warning,
                now - ChronoDuration::hours(30),
            ),
            (
                EventType::ComplianceViolation,
                Level::Error,
                now - ChronoDuration::hours(5),
            ),
            (
                EventType::ComplianceCheck,
                Level::Info,
                now - ChronoDuration::hours(4),
            ),
            (
                EventType::ComplianceViolation,
                Level::Critical,
                now - ChronoDuration::minutes(1),
            ),
        ],
    )
    .await;
    let proxy = TestProxy::start_in(&mock.url(), tmp.path(), &[]).await;
    let since = format_timestamp(&(now - ChronoDuration::hours(24)));
    let (status, page) = proxy
        .admin_get(&format!(
            "/api/events?event_type=COMPLIANCE_VIOLATION&start_time={since}"
        ))
        .await;
    assert_eq!(status, 200);
    let messages: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, ["seeded 3", "seeded 1"]);
    let (_, stats) = proxy.admin_get("/api/stats").await;
    assert_eq!(stats["violations_by_policy"]["pci"], 3);
    proxy.stop().await;
}

#[tokio::test]
async fn export_the_previous_month_as_json() {
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let at = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc);
    seed(
        tmp.path(),
        &[
            (
                EventType::Request,
                Level::Info,
                at("2026-09-30T23:59:59.999999Z"),
            ),
            (EventType::Request, Level::Info, at("2026-10-01T00:00:00Z")),
            (EventType::Response, Level::Info, at("2026-10-15T12:00:00Z")),
            (
                EventType::Request,
                Level::Info,
                at("2026-10-31T23:59:59.999999Z"),
            ),
            (EventType::Request, Level::Info, at("2026-11-01T00:00:00Z")),
        ],
    )
    .await;
    let proxy = TestProxy::start_in(&mock.url(), tmp.path(), &[]).await;
    let body = proxy
        .http
        .get(format!(
            "{}/api/export?format=json&start_time=2026-10-01T00:00:00Z&end_time=2026-11-01T00:00:00Z",
            proxy.admin_url
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events: Vec<Value> = serde_json::from_str(&body).unwrap();
    let messages: Vec<&str> = events
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["seeded 1", "seeded 2", "seeded 3"],
        "start inclusive, end exclusive, oldest first"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn memory_store_keeps_only_the_last_n() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[
            ("LLM_AUDIT_PROXY_STORAGE", "memory"),
            ("LLM_AUDIT_PROXY_MEMORY_LIMIT", "5"),
        ],
    )
    .await;
    for i in 0..10 {
        let r = proxy
            .http
            .post(format!("{}/api/events", proxy.admin_url))
            .json(&json!({"event_type": "USER_ACTION", "message": format!("action {i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let (_, page) = proxy.admin_get("/api/events").await;
    let messages: Vec<&str> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    assert_eq!(
        messages,
        ["action 9", "action 8", "action 7", "action 6", "action 5"]
    );
    let (_, stats) = proxy.admin_get("/api/stats").await;
    assert_eq!(stats["total_events"], 5);
    assert_eq!(
        stats["evicted"], 7,
        "SYSTEM, CONFIGURATION and actions 0-4 were pushed out"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn audit_disabled_forwards_without_recording() {
    let mock = MockUpstream::start().await;
    let proxy =
        TestProxy::start_with(&mock.url(), &[("LLM_AUDIT_PROXY_AUDIT_ENABLED", "false")]).await;
    let r = proxy
        .http
        .post(proxy.url("/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers().contains_key("x-audit-request-id"));
    let (_, page) = proxy.admin_get("/api/events").await;
    assert_eq!(page["events"], json!([]));
    let r = proxy
        .http
        .post(format!("{}/api/events", proxy.admin_url))
        .json(&json!({"event_type": "USER_ACTION", "message": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    proxy.stop().await;
}

#[tokio::test]
async fn log_level_drops_events_below_it() {
    let upstream = dead_address().await;
    let proxy = TestProxy::start_with(&upstream, &[("LLM_AUDIT_PROXY_LOG_LEVEL", "WARNING")]).await;
    let r = proxy
        .post_call("/v1/chat/completions", "lvl-1")
        .json(&json!({"model": "gpt-4o-mini"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 502);
    let events = proxy.wait_events("request_id=lvl-1", 1).await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        types,
        ["ERROR"],
        "INFO-level REQUEST and RESPONSE are not stored"
    );
    let (_, all) = proxy.admin_get("/api/events").await;
    assert!(all["events"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["level"] != "INFO"));
    proxy.stop().await;
}

#[tokio::test]
async fn start_records_system_and_configuration_with_masked_secrets() {
    let mock = MockUpstream::start().await;
    let token = "start-token-0123456789abcdef";
    let proxy = TestProxy::start_with(&mock.url(), &[("LLM_AUDIT_PROXY_ADMIN_TOKEN", token)]).await;
    // Start-up events are queued, not awaited: give the writer a moment.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let (text, page) = loop {
        let text = proxy
            .http
            .get(format!(
                "{}/api/events?event_type=SYSTEM,CONFIGURATION",
                proxy.admin_url
            ))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let page: Value = serde_json::from_str(&text).unwrap();
        if page["events"].as_array().unwrap().len() >= 2 || tokio::time::Instant::now() > deadline {
            break (text, page);
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    assert!(!text.contains(token));
    let events = page["events"].as_array().unwrap();
    let config = events
        .iter()
        .find(|e| e["event_type"] == "CONFIGURATION")
        .unwrap();
    assert_eq!(
        config["metadata"]["config"]["admin"]["tokens"],
        json!(["[MASKED]"])
    );
    assert_eq!(config["metadata"]["digest"].as_str().unwrap().len(), 64);
    assert!(events
        .iter()
        .any(|e| e["event_type"] == "SYSTEM" && e["metadata"]["phase"] == "startup"));
    proxy.stop().await;
}

#[tokio::test]
async fn file_store_serves_calls_queries_and_exports() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[
            ("LLM_AUDIT_PROXY_STORAGE", "file"),
            ("LLM_AUDIT_PROXY_FILE_ROTATION", "hourly"),
        ],
    )
    .await;
    for i in 0..3 {
        proxy
            .post_call("/v1/embeddings", format!("file-{i}"))
            .json(&json!({"model": "text-embedding-3-small", "input": "hello"}))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    let responses = proxy.wait_events("event_type=RESPONSE", 3).await;
    assert_eq!(responses.len(), 3);
    let ndjson = proxy
        .http
        .get(format!(
            "{}/api/export?format=ndjson&event_type=REQUEST",
            proxy.admin_url
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(ndjson.lines().count(), 3);
    let (_, verify) = proxy.admin_get("/api/verify").await;
    assert_eq!(verify["ok"], true);
    proxy.stop().await;
}

#[tokio::test]
async fn pod_identity_is_recorded_in_every_event() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[
            ("LLM_AUDIT_PROXY_POD_NAME", "app-7d9f-x2"),
            ("LLM_AUDIT_PROXY_POD_NAMESPACE", "payments"),
            ("LLM_AUDIT_PROXY_NODE_NAME", "node-3"),
        ],
    )
    .await;
    proxy
        .http
        .get(proxy.url("/v1/models"))
        .header("x-request-id", "pod-1")
        .send()
        .await
        .unwrap();
    proxy.call_events("pod-1").await;
    let (_, page) = proxy.admin_get("/api/events?limit=100").await;
    let events = page["events"].as_array().unwrap();
    assert!(events.len() >= 4);
    for e in events {
        assert_eq!(
            e["metadata"]["source"],
            json!({"pod": "app-7d9f-x2", "namespace": "payments", "node": "node-3"}),
            "{e}"
        );
    }
    proxy.stop().await;
}

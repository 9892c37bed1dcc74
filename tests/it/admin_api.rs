//! The admin listener over a real socket: queries, paging, exports, bad
//! parameters and custom events.

use serde_json::{json, Value};

use crate::support::{ndjson, MockUpstream, TestProxy};

async fn make_calls(proxy: &TestProxy, n: usize) {
    for i in 0..n {
        let stream = i % 2 == 1;
        proxy
        .post_call("/v1/chat/completions", format!("adm-{i}"))
            .json(&json!({"model": "gpt-4o-mini", "stream": stream, "messages": [{"role": "user", "content": "=cmd|' /C calc'!A0"}]}))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    proxy.wait_events("event_type=RESPONSE", n).await;
}

#[tokio::test]
async fn exports_in_every_format_match_the_query_api() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    make_calls(&proxy, 4).await;
    let (_, page) = proxy.admin_get("/api/events?limit=10000").await;
    let mut events = page["events"].as_array().unwrap().clone();
    events.reverse(); // exports are oldest first
    assert!(events.len() >= 10);

    let get = |format: &str| {
        let url = format!("{}/api/export?format={format}", proxy.admin_url);
        let http = proxy.http.clone();
        async move {
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200);
            assert!(r.headers()["content-disposition"]
                .to_str()
                .unwrap()
                .starts_with("attachment"));
            r.text().await.unwrap()
        }
    };

    let json_export: Vec<Value> = serde_json::from_str(&get("json").await).unwrap();
    assert_eq!(json_export, events);

    let lines: Vec<Value> = ndjson(&get("ndjson").await);
    assert_eq!(lines, events);

    let csv_text = get("csv").await;
    let mut reader = csv::Reader::from_reader(csv_text.as_bytes());
    let headers: Vec<String> = reader
        .headers()
        .unwrap()
        .iter()
        .map(str::to_owned)
        .collect();
    assert_eq!(
        headers,
        [
            "id",
            "seq",
            "timestamp",
            "event_type",
            "level",
            "message",
            "request_id",
            "metadata",
            "prev_hash",
            "hash"
        ]
    );
    let rows: Vec<csv::StringRecord> = reader.records().map(|r| r.unwrap()).collect();
    assert_eq!(rows.len(), events.len());
    for (row, event) in rows.iter().zip(&events) {
        assert_eq!(row[0], *event["id"].as_str().unwrap());
        assert_eq!(row[1], event["seq"].to_string());
        assert_eq!(row[3], *event["event_type"].as_str().unwrap());
        assert_eq!(row[9], *event["hash"].as_str().unwrap());
        // Formula-looking cells are made inert with a leading quote.
        let metadata = row[7].strip_prefix('\'').unwrap_or(&row[7]);
        let parsed: Value = serde_json::from_str(metadata).unwrap();
        assert_eq!(parsed, event["metadata"]);
    }
    // The prompt "=cmd|..." is inside the metadata JSON, so no cell starts with '='.
    assert!(rows
        .iter()
        .all(|r| r.iter().all(|cell| !cell.starts_with('='))));

    // Filters apply to exports too.
    let only: Vec<Value> = serde_json::from_str(&get("json&event_type=RESPONSE").await).unwrap();
    assert_eq!(only.len(), 4);
    assert!(only.iter().all(|e| e["event_type"] == "RESPONSE"));
    proxy.stop().await;
}

#[tokio::test]
async fn cursor_paging_walks_every_event_once() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    make_calls(&proxy, 3).await;
    let (_, all) = proxy.admin_get("/api/events?limit=10000").await;
    let all: Vec<i64> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["seq"].as_i64().unwrap())
        .collect();
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let q = match &cursor {
            Some(c) => format!("/api/events?limit=2&cursor={c}"),
            None => "/api/events?limit=2".to_owned(),
        };
        let (status, page) = proxy.admin_get(&q).await;
        assert_eq!(status, 200);
        seen.extend(
            page["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["seq"].as_i64().unwrap()),
        );
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, all);
    proxy.stop().await;
}

#[tokio::test]
async fn bad_parameters_are_refused_naming_them() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    for (query, param) in [
        ("limit=0", "limit"),
        ("limit=10001", "limit"),
        ("limit=ten", "limit"),
        ("event_type=not-a-type", "event_type"),
        ("start_time=yesterday", "start_time"),
        ("end_time=2026-13-01T00:00:00Z", "end_time"),
        ("level=LOUD", "level"),
        ("cursor=abc", "cursor"),
        ("evnt_type=REQUEST", "evnt_type"),
    ] {
        let (status, body) = proxy.admin_get(&format!("/api/events?{query}")).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert_eq!(body["error"]["param"], param, "{query}: {body}");
        assert!(
            body["error"]["message"].as_str().unwrap().contains(param),
            "{query}: {body}"
        );
    }
    let (status, body) = proxy.admin_get("/api/export?format=xml").await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["param"], "format");
    let (status, _) = proxy
        .admin_get("/api/events/01a2185f-0000-7000-8000-000000000000")
        .await;
    assert_eq!(status, 404);
    proxy.stop().await;
}

#[tokio::test]
async fn custom_events_are_stored_in_order_with_their_metadata() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let post = |body: Value| {
        let http = proxy.http.clone();
        let url = format!("{}/api/events", proxy.admin_url);
        async move { http.post(url).json(&body).send().await.unwrap() }
    };
    let r = post(json!({"event_type": "USER_LOGIN", "message": "alice logged in", "metadata": {"user": "alice", "note": "key sk-proj-AbCdEfGhIjKlMnOpQrStUvWx0123"}})).await;
    assert_eq!(r.status(), 201);
    let login: Value = r.json().await.unwrap();
    let r = post(json!({"event_type": "USER_ACTION", "message": "alice exported", "metadata": {"action": "export"}})).await;
    assert_eq!(r.status(), 201);
    let action: Value = r.json().await.unwrap();
    assert!(login["seq"].as_i64() < action["seq"].as_i64());
    assert_eq!(action["prev_hash"], login["hash"]);

    let (_, page) = proxy
        .admin_get("/api/events?event_type=USER_LOGIN,USER_ACTION")
        .await;
    let events = page["events"].as_array().unwrap();
    assert_eq!(events[0]["event_type"], "USER_ACTION");
    assert_eq!(events[0]["metadata"], json!({"action": "export"}));
    assert_eq!(events[1]["event_type"], "USER_LOGIN");
    assert_eq!(
        events[1]["metadata"],
        json!({"user": "alice", "note": "key [REDACTED:OPENAI_KEY]"})
    );

    let r = post(json!({"event_type": "user login", "message": "x"})).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "event_type");
    let r = post(json!({"event_type": "USER_LOGIN", "message": "x", "metadata": [1]})).await;
    assert_eq!(r.status(), 400);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["param"], "metadata");
    proxy.stop().await;
}

#[tokio::test]
async fn admin_token_is_required_when_configured() {
    let mock = MockUpstream::start().await;
    let token = "admin-token-0123456789abcdef";
    // Refusals from one client are collapsed per interval: the first is
    // recorded at once, the rest summed when the (short) interval closes.
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[
            ("LLM_AUDIT_PROXY_ADMIN_TOKEN", token),
            ("LLM_AUDIT_PROXY_ADMIN_REFUSAL_INTERVAL", "0.2"),
        ],
    )
    .await;
    let url = format!("{}/api/events", proxy.admin_url);
    let r = proxy.http.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = proxy
        .http
        .get(&url)
        .bearer_auth("wrong-token-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = proxy
        .http
        .get(format!("{}/healthz", proxy.admin_url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    let body = loop {
        let r = proxy
            .http
            .get(format!("{url}?event_type=AUTHENTICATION"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let body: Value = r.json().await.unwrap();
        if body["events"].as_array().unwrap().len() >= 2 || tokio::time::Instant::now() > deadline {
            break body;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let refused = body["events"].as_array().unwrap();
    assert_eq!(refused.len(), 2);
    assert_eq!(refused[0]["level"], "WARNING");
    assert_eq!(refused[1]["metadata"]["count"], 1);
    assert_eq!(refused[1]["metadata"]["reason"], "missing_token");
    assert_eq!(refused[0]["metadata"]["count"], 1);
    assert_eq!(refused[0]["metadata"]["reasons"]["invalid_token"], 1);
    assert!(!body.to_string().contains("wrong-token-0123456789"));
    proxy.stop().await;
}

#[tokio::test]
async fn metrics_expose_calls_latency_tokens_and_pipeline_series() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    make_calls(&proxy, 2).await;
    let text = proxy.admin_text("/metrics").await;
    for series in [
        "llm_audit_proxy_calls_total{operation=\"chat.create\",status=\"200\",outcome=\"completed\"} 2",
        "llm_audit_proxy_call_duration_seconds_count{operation=\"chat.create\"} 2",
        "llm_audit_proxy_time_to_first_byte_seconds_count{operation=\"chat.create\"} 2",
        "llm_audit_proxy_added_latency_seconds_count 2",
        "llm_audit_proxy_tokens_total{model=\"gpt-4o-mini-2024-07-18\",kind=\"prompt\"}",
        "llm_audit_proxy_events_written_total",
        "llm_audit_proxy_events_dropped_total 0",
        "llm_audit_proxy_queue_depth",
        "llm_audit_proxy_store_write_seconds_count",
        "llm_audit_proxy_store_bytes",
    ] {
        assert!(text.contains(series), "{series} missing from:\n{text}");
    }
    proxy.stop().await;
}

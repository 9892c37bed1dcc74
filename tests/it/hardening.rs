//! Hostile input: bodies that would blow up the store, paths that would
//! escape the upstream's prefix, methods that must not be forwarded,
//! clients that leave at awkward moments, and floods of connections and
//! wrong tokens on the admin side.

use serde_json::Value;

use crate::support::mock::gzip_bomb;
use crate::support::{of_type, MockUpstream, TestProxy};

/// The default capture cap, and the stored-body limit it gives (twice the
/// cap, at least 64 KiB).
const CAP: usize = 1024 * 1024;
const STORED_LIMIT: usize = 2 * CAP;

fn json_len(v: &Value) -> usize {
    serde_json::to_string(v).unwrap().len()
}

#[tokio::test]
async fn gzip_bombs_and_nul_bodies_store_bounded_rows() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;

    // A 1 MB request body that decodes to 1000 MiB of NULs.
    let resp = proxy
        .post_call("/v1/chat/completions", "bomb-request")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip_bomb(1000 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.bytes().await.unwrap();

    // A 1 MB answer that does the same.
    let resp = proxy
        .post_call("/v1/gzip-bomb", "bomb-response")
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o-mini"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.bytes().await.unwrap();

    // A plain body that is mostly NULs.
    let mut nul_rich = br#"{"prompt": ""#.to_vec();
    nul_rich.extend(std::iter::repeat_n(0u8, 32 * 1024));
    let resp = proxy
        .post_call("/v1/chat/completions", "nul-request")
        .header("content-type", "application/json")
        .body(nul_rich.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    for id in ["bomb-request", "bomb-response", "nul-request"] {
        let events = proxy.call_events(id).await;
        for event in &events {
            assert!(
                json_len(event) <= STORED_LIMIT + 8 * 1024,
                "{id}: {} event of {} bytes",
                event["event_type"],
                json_len(event)
            );
        }
        let req = &of_type(&events, "REQUEST")["metadata"];
        let resp = &of_type(&events, "RESPONSE")["metadata"];
        assert!(json_len(&req["request_data"]) <= STORED_LIMIT);
        assert!(json_len(&resp["response_data"]) <= STORED_LIMIT);
        if id == "bomb-response" {
            let data = &resp["response_data"];
            assert_eq!(data["binary"], true, "{data}");
            assert_eq!(data["bytes"], CAP, "decoded no further than the cap");
            assert_eq!(resp["truncated"], true);
        } else {
            let data = &req["request_data"];
            assert_eq!(data["binary"], true, "{data}");
            assert_eq!(data["sha256"].as_str().unwrap().len(), 64);
            if id == "nul-request" {
                assert_eq!(data["bytes"], nul_rich.len());
                assert_eq!(req["truncated"], false);
            } else {
                assert_eq!(data["bytes"], CAP, "decoded no further than the cap");
                assert_eq!(req["truncated"], true);
            }
        }
    }
    proxy.stop().await;
}

/// Sends one raw HTTP/1.1 request (so no client normalises its path) and
/// returns the whole answer.
async fn raw_call(proxy_url: &str, request_line: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = proxy_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "{request_line}\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap()
    .unwrap();
    String::from_utf8_lossy(&answer).into_owned()
}

fn error_code(answer: &str) -> Value {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let v: Value = serde_json::from_str(body).unwrap_or_else(|_| panic!("{answer}"));
    v["error"]["code"].clone()
}

#[tokio::test]
async fn connect_and_escaping_paths_are_refused_and_never_forwarded() {
    let mock = MockUpstream::start().await;
    // An upstream with a path prefix, which the paths below try to leave.
    let proxy = TestProxy::start(&format!("{}/tenant-a", mock.url())).await;

    let answer = raw_call(&proxy.proxy_url, "CONNECT example.com:443 HTTP/1.1").await;
    assert!(answer.starts_with("HTTP/1.1 405"), "{answer}");
    assert!(answer
        .to_ascii_lowercase()
        .contains("x-audit-proxy-error: method_not_allowed"));
    assert_eq!(error_code(&answer), "method_not_allowed");

    for path in [
        "/v1/../../tenant-b/v1/chat/completions",
        "/v1/./chat/completions",
        "/v1/%2e%2e/%2e%2e/tenant-b/v1/chat/completions",
        "/v1/%2E./%2E./tenant-b/v1/chat/completions",
        "/v1/.%2e/.%2e/tenant-b/v1/chat/completions",
        "/v1/..%2f..%2ftenant-b/v1/chat/completions",
        "/v1/%2e%2e%5c%2e%2e%5ctenant-b/v1/chat/completions",
    ] {
        let answer = raw_call(&proxy.proxy_url, &format!("POST {path} HTTP/1.1")).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{path}: {answer}");
        assert_eq!(error_code(&answer), "invalid_path", "{path}");
    }
    assert_eq!(mock.calls(), 0, "nothing refused reaches upstream");

    // An ordinary call still goes through, under the prefix.
    let answer = raw_call(&proxy.proxy_url, "POST /v1/chat/completions HTTP/1.1").await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(
        mock.seen()[0].path_and_query,
        "/tenant-a/v1/chat/completions"
    );
    let metrics = proxy.admin_text("/metrics").await;
    assert!(
        metrics.contains(r#"llm_audit_proxy_refused_calls_total{kind="invalid_path"} 7"#),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn a_client_that_leaves_after_the_terminal_event_completes_its_call() {
    let mock = MockUpstream::start().await;
    // With the whole stream captured, and with a capture far shorter than
    // the stream (its end then passes uncaptured).
    for cap in ["1048576", "256"] {
        let proxy = TestProxy::start_with(
            &mock.url(),
            &[("LLM_AUDIT_PROXY_CAPTURE_MAX_BODY_BYTES", cap)],
        )
        .await;
        leave_after_the_terminal_event(&proxy, cap).await;
        let metrics = proxy.admin_text("/metrics").await;
        assert!(metrics.contains(r#"outcome="completed""#), "{metrics}");
        assert!(
            !metrics.contains(r#"outcome="client_aborted""#),
            "{metrics}"
        );
        proxy.stop().await;
    }
}

async fn leave_after_the_terminal_event(proxy: &TestProxy, cap: &str) {
    // Upstream sends the whole stream, then keeps the body open; the app
    // leaves once it has the terminal event, as the Node SDK does.
    for (path, id, terminal) in [
        ("/v1/chat/completions", "done-chat", "data: [DONE]"),
        ("/v1/responses", "done-responses", "\"response.completed\""),
    ] {
        let mut resp = proxy
            .post_call(path, format!("{id}-{cap}"))
            .header("x-mock-hold-end", "1")
            .json(&serde_json::json!({"model": "gpt-4o-mini", "stream": true, "input": "hi", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        let mut seen = String::new();
        while !(seen.contains(terminal) && seen.ends_with("\n\n")) {
            let chunk = resp.chunk().await.unwrap().expect("stream ended early");
            seen.push_str(&String::from_utf8_lossy(&chunk));
        }
        drop(resp);
        let id = format!("{id}-{cap}");
        let events = proxy.call_events(&id).await;
        let response = &of_type(&events, "RESPONSE")["metadata"];
        assert_eq!(response["outcome"], "completed", "{id}: {response}");
    }
}

/// Sends a request head promising more body than is sent, then closes the
/// sending side; returns the answer's status line.
async fn send_broken_body(proxy_url: &str, id: &str, promised: usize, sent: usize) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = proxy_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nx-request-id: {id}\r\nContent-Length: {promised}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&vec![b' '; sent]).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        stream.read_to_end(&mut answer),
    )
    .await
    .unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test]
async fn a_request_body_that_breaks_off_is_a_client_body_error() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[("LLM_AUDIT_PROXY_CAPTURE_MAX_BODY_BYTES", "65536")],
    )
    .await;
    // Broken inside the prefix the proxy reads first, and broken while the
    // rest streams on to upstream.
    let status = send_broken_body(&proxy.proxy_url, "broken-prefix", 1000, 10).await;
    assert!(status.contains(" 400"), "{status}");
    let status = send_broken_body(&proxy.proxy_url, "broken-stream", 300_000, 100_000).await;
    assert!(status.contains(" 400"), "{status}");
    for id in ["broken-prefix", "broken-stream"] {
        let events = proxy.call_events(id).await;
        let error = &of_type(&events, "ERROR")["metadata"];
        assert_eq!(error["error_type"], "client_body_error", "{id}: {error}");
        let response = &of_type(&events, "RESPONSE")["metadata"];
        assert_eq!(response["outcome"], "client_aborted", "{id}: {response}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_admin_connection_flood_never_stops_app_traffic() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[
            ("LLM_AUDIT_PROXY_ADMIN_MAX_CONNECTIONS", "8"),
            ("LLM_AUDIT_PROXY_ADMIN_HEADER_READ_TIMEOUT", "1"),
            ("LLM_AUDIT_PROXY_ADMIN_IDLE_TIMEOUT", "1"),
        ],
    )
    .await;
    let admin = proxy.admin_url.trim_start_matches("http://").to_owned();
    // Twice the cap of connections that never send a byte.
    let mut idle = Vec::new();
    for _ in 0..16 {
        idle.push(tokio::net::TcpStream::connect(&admin).await.unwrap());
    }
    // The app's calls go through all the same.
    for i in 0..3 {
        let resp = proxy
            .post_call("/v1/chat/completions", format!("flood-{i}"))
            .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": []}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    // Silent connections are dropped after the header-read timeout, so
    // every one of them ends (those past the cap once admitted), and the
    // admin API answers again.
    for conn in &mut idle {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(std::time::Duration::from_secs(20), conn.read(&mut buf))
            .await
            .expect("an idle admin connection stayed open");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }
    let (status, _) = proxy.admin_get("/healthz").await;
    assert_eq!(status, 200);

    // A connection that sent its head but stalls in the body is closed
    // by the idle timeout.
    let mut stalled = tokio::net::TcpStream::connect(&admin).await.unwrap();
    stalled
        .write_all(b"POST /api/events HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
        .await
        .unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(20),
        stalled.read_to_end(&mut answer),
    )
    .await
    .expect("a stalled admin connection stayed open");
    assert!(read.is_ok() || answer.is_empty());

    let metrics = proxy.admin_text("/metrics").await;
    assert!(
        metrics.contains(r#"llm_audit_proxy_listener_cap_reached_total{kind="admin"}"#),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn wrong_token_floods_leave_a_bounded_count_of_events() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token = "admin-token-0123456789abcdef";
    let config = [
        ("LLM_AUDIT_PROXY_ADMIN_TOKEN", token),
        (
            "LLM_AUDIT_PROXY_ADMIN_READ_TOKENS",
            "reader-token-0123456789",
        ),
        // Room for every concurrent client: kept-alive connections hold
        // their slot until the header-read timeout.
        ("LLM_AUDIT_PROXY_ADMIN_MAX_CONNECTIONS", "512"),
    ];
    let proxy = TestProxy::start_in(&mock.url(), dir.path(), &config).await;
    let url = format!("{}/api/stats", proxy.admin_url);
    let calls = (0..200).map(|i| {
        let request = proxy.http.get(&url);
        async move {
            let request = match i % 3 {
                0 => request,
                1 => request.bearer_auth("wrong-token-0123456789"),
                _ => request.bearer_auth(format!("other-wrong-{i}-0123456789")),
            };
            request.send().await.unwrap().status().as_u16()
        }
    });
    let statuses = futures_util::future::join_all(calls).await;
    assert!(statuses.iter().all(|s| *s == 401));
    // A read token may not post.
    let r = proxy
        .http
        .post(format!("{}/api/events", proxy.admin_url))
        .bearer_auth("reader-token-0123456789")
        .json(&serde_json::json!({"event_type": "CUSTOM", "message": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"]["code"], "insufficient_scope");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("`write` scope"));
    // The rest of the interval's refusals are recorded at shutdown.
    proxy.stop().await;

    let proxy = TestProxy::start_in(&mock.url(), dir.path(), &config).await;
    let r = proxy
        .http
        .get(format!(
            "{}/api/events?event_type=AUTHENTICATION&limit=1000",
            proxy.admin_url
        ))
        .bearer_auth("reader-token-0123456789")
        .send()
        .await
        .unwrap();
    let body: Value = r.json().await.unwrap();
    let events = body["events"].as_array().unwrap();
    assert_eq!(
        events.len(),
        2,
        "one at the first refusal, one summing the rest"
    );
    let total: u64 = events
        .iter()
        .map(|e| e["metadata"]["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 201);
    assert!(!body.to_string().contains("wrong-token"));
    proxy.stop().await;
}

#[tokio::test]
async fn the_proxy_listener_waits_at_its_own_cap() {
    let mock = MockUpstream::start().await;
    let proxy =
        TestProxy::start_with(&mock.url(), &[("LLM_AUDIT_PROXY_MAX_CONNECTIONS", "2")]).await;
    let addr = proxy.proxy_url.trim_start_matches("http://").to_owned();
    let idle = [
        tokio::net::TcpStream::connect(&addr).await.unwrap(),
        tokio::net::TcpStream::connect(&addr).await.unwrap(),
    ];
    // Both slots are held, so the listener reports its cap reached and a
    // third connection waits in the accept queue; the admin API, on its
    // own cap, still answers.
    let call = tokio::spawn({
        let request = proxy
            .post_call("/v1/chat/completions", "queued-call")
            .json(&serde_json::json!({"model": "gpt-4o-mini", "messages": []}));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    let queued = r#"llm_audit_proxy_listener_cap_reached_total{kind="proxy"} 1"#;
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let metrics = proxy.admin_text("/metrics").await;
        if metrics.contains(queued) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{metrics}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(!call.is_finished());
    drop(idle);
    assert_eq!(call.await.unwrap(), 200);
    proxy.stop().await;
}

#[tokio::test]
async fn a_stored_body_over_its_limit_is_cut_and_marked_truncated() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[("LLM_AUDIT_PROXY_CAPTURE_MAX_BODY_BYTES", "65536")],
    )
    .await;
    // An event stream of NUL-filled events (the mock echoes it back): each
    // NUL would be stored as six bytes of `\u0000`.
    let event = format!("data: {}\n\n", "\0".repeat(200));
    let body = event.repeat(60 * 1024 / event.len());
    let resp = proxy
        .post_call("/v1/echo", "cut-stream")
        .header("content-type", "text/event-stream")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap().len(), body.len());
    let events = proxy.call_events("cut-stream").await;
    let limit = 2 * 65536;
    let response = &of_type(&events, "RESPONSE")["metadata"];
    let data = &response["response_data"];
    assert_eq!(data["cut"], true, "{data}");
    assert_eq!(data["limit_bytes"], limit);
    assert!(json_len(data) <= limit);
    assert_eq!(response["truncated"], true);
    let request = &of_type(&events, "REQUEST")["metadata"];
    assert_eq!(request["request_data"]["binary"], true);
    proxy.stop().await;
}

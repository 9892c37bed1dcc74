//! Calls through the proxy: what the app gets back, what upstream gets,
//! and what is stored.

use std::time::Duration;

use serde_json::{json, Value};

use crate::support::{dead_address, of_type, MockUpstream, TestProxy};

const OPENAI_KEY: &str = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789";

fn chat_body(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": format!("What is the capital of France? My key is {OPENAI_KEY}")}
        ]
    })
}

#[tokio::test]
async fn chat_completion_is_forwarded_and_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let resp = proxy
        .http
        .post(proxy.url("/v1/chat/completions"))
        .bearer_auth(OPENAI_KEY)
        .header("x-request-id", "chat-1")
        .header("cookie", "session=abc123secret")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-audit-request-id"], "chat-1");
    assert_eq!(resp.headers()["x-request-id"], "req_upstream_123");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Hello! The capital of France is Paris."
    );

    // Upstream got the request untouched, credentials included.
    let seen = mock.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path_and_query, "/v1/chat/completions");
    assert_eq!(
        seen[0].headers["authorization"],
        format!("Bearer {OPENAI_KEY}")
    );
    assert_eq!(seen[0].headers["host"], mock.addr.to_string());
    let sent: Value = serde_json::from_slice(&seen[0].body).unwrap();
    assert_eq!(sent, chat_body(false));

    let events = proxy.call_events("chat-1").await;
    let req = of_type(&events, "REQUEST");
    let m = &req["metadata"];
    assert_eq!(m["operation"], "chat.create");
    assert_eq!(m["provider"], "openai_compatible");
    assert_eq!(m["method"], "POST");
    assert_eq!(m["path"], "/v1/chat/completions");
    assert_eq!(m["model"], "gpt-4o-mini");
    assert_eq!(m["stream"], false);
    assert_eq!(m["client_ip"], "127.0.0.1");
    assert_eq!(m["truncated"], false);
    assert!(m["body_bytes"].as_u64().unwrap() > 100);
    assert!(m["headers"].get("authorization").is_none());
    assert!(m["headers"].get("cookie").is_none());
    let prompt = m["request_data"]["messages"][1]["content"]
        .as_str()
        .unwrap();
    assert!(prompt.contains("[REDACTED:OPENAI_KEY]"), "{prompt}");
    assert!(!prompt.contains(OPENAI_KEY));

    let res = of_type(&events, "RESPONSE");
    let m = &res["metadata"];
    assert_eq!(m["status"], 200);
    assert_eq!(m["outcome"], "completed");
    assert_eq!(m["model"], "gpt-4o-mini-2024-07-18");
    assert_eq!(
        m["usage"],
        json!({"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30})
    );
    assert_eq!(m["finish_reason"], "stop");
    assert_eq!(m["upstream_request_id"], "req_upstream_123");
    assert_eq!(
        m["response_data"]["choices"][0]["message"]["content"],
        "Hello! The capital of France is Paris."
    );
    assert!(m["latency_ms"].as_f64().unwrap() >= m["ttfb_ms"].as_f64().unwrap());
    assert_eq!(res["level"], "INFO");
    assert!(req["seq"].as_i64() < res["seq"].as_i64());
    proxy.stop().await;
}

#[tokio::test]
async fn streamed_tool_calls_are_reassembled() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let mut body = chat_body(true);
    body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]);
    body["stream_options"] = json!({"include_usage": true});
    let resp = proxy
        .post_call("/v1/chat/completions", "tools-1")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/event-stream"));
    let text = resp.text().await.unwrap();
    let fixture = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/fixtures/chat_stream_tools.sse"
    ))
    .unwrap();
    assert_eq!(text, fixture, "the stream reaches the app byte for byte");

    let events = proxy.call_events("tools-1").await;
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(m["stream"], true);
    assert_eq!(m["outcome"], "completed");
    assert_eq!(m["finish_reason"], "tool_calls");
    assert_eq!(m["usage"]["total_tokens"], 111);
    let message = &m["response_data"]["choices"][0]["message"];
    assert_eq!(m["response_data"]["object"], "chat.completion");
    let calls = message["tool_calls"].as_array().unwrap();
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0]["id"], "call_aaa");
    assert_eq!(calls[0]["function"]["name"], "get_weather");
    assert_eq!(
        calls[0]["function"]["arguments"],
        "{\"location\": \"Paris\"}"
    );
    assert_eq!(calls[1]["function"]["arguments"], "{\"tz\": \"CET\"}");
    assert_eq!(of_type(&events, "REQUEST")["metadata"]["stream"], true);
    proxy.stop().await;
}

#[tokio::test]
async fn app_speaking_http2_with_prior_knowledge_is_served_and_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    for (id, stream) in [("h2-plain", false), ("h2-stream", true)] {
        let resp = h2
            .post(proxy.url("/v1/chat/completions"))
            .header("x-request-id", id)
            .json(&chat_body(stream))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.version(), reqwest::Version::HTTP_2);
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-audit-request-id"], id);
        let text = resp.text().await.unwrap();
        let events = proxy.call_events(id).await;
        let m = &of_type(&events, "RESPONSE")["metadata"];
        assert_eq!(m["outcome"], "completed");
        assert_eq!(m["stream"], stream);
        let content = &m["response_data"]["choices"][0]["message"]["content"];
        if stream {
            assert_eq!(content, "Paris is the capital.");
            assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
        } else {
            assert!(text.contains(content.as_str().unwrap()), "{text}");
        }
    }
    // HTTP/1.1 on another connection to the same listener still works.
    let resp = proxy
        .post_call("/v1/chat/completions", "h1-after-h2")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status(), 200);
    assert_eq!(mock.seen().len(), 3);
    proxy.stop().await;
}

#[tokio::test]
async fn streamed_chat_text_and_usage_are_reassembled() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let resp = proxy
        .post_call("/v1/chat/completions", "stream-1")
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    let _ = resp.text().await.unwrap();
    let events = proxy.call_events("stream-1").await;
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(
        m["response_data"]["choices"][0]["message"]["content"],
        "Paris is the capital."
    );
    assert_eq!(
        m["usage"],
        json!({"prompt_tokens": 14, "completion_tokens": 5, "total_tokens": 19})
    );
    assert_eq!(m["finish_reason"], "stop");
    assert_eq!(m["upstream_request_id"], "req_upstream_stream");
    proxy.stop().await;
}

#[tokio::test]
async fn embeddings_and_responses_api() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    proxy
        .post_call("/v1/embeddings", "emb-1")
        .json(&json!({"model": "text-embedding-3-small", "input": "hello world"}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = proxy.call_events("emb-1").await;
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(m["operation"], "embeddings.create");
    assert_eq!(
        m["usage"],
        json!({"prompt_tokens": 8, "completion_tokens": 0, "total_tokens": 8})
    );
    assert_eq!(m["model"], "text-embedding-3-small");

    let text = proxy
        .post_call("/v1/responses", "resp-1")
        .json(&json!({"model": "gpt-4o-mini", "input": "Say something", "stream": true}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("response.completed"));
    let events = proxy.call_events("resp-1").await;
    assert_eq!(
        of_type(&events, "REQUEST")["metadata"]["operation"],
        "responses.create"
    );
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(m["response_data"]["object"], "response");
    assert_eq!(
        m["response_data"]["output"][0]["content"][0]["text"],
        "Streams are fun."
    );
    assert_eq!(
        m["usage"],
        json!({"prompt_tokens": 12, "completion_tokens": 4, "total_tokens": 16})
    );
    assert_eq!(m["finish_reason"], "completed");
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_429_passes_through_with_retry_after() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let resp = proxy
        .post_call("/v1/rate-limited", "rl-1")
        .json(&json!({"model": "gpt-4o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");
    assert!(resp.headers().get("x-audit-proxy-error").is_none());
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    let events = proxy.call_events("rl-1").await;
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(m["status"], 429);
    assert_eq!(m["outcome"], "completed");
    assert_eq!(m["response_data"]["error"]["code"], "rate_limit_exceeded");
    assert!(!events.iter().any(|e| e["event_type"] == "ERROR"));
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_down_gives_502_and_an_error_event() {
    let upstream = dead_address().await;
    let proxy = TestProxy::start(&upstream).await;
    let resp = proxy
        .post_call("/v1/chat/completions", "down-1")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    assert_eq!(resp.headers()["x-audit-request-id"], "down-1");
    assert_eq!(
        resp.headers()["x-audit-proxy-error"],
        "upstream_unreachable"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "upstream_unreachable");
    assert_eq!(body["error"]["type"], "api_error");
    assert!(body["error"]["message"].is_string());

    let events = proxy.call_events("down-1").await;
    let types: Vec<&str> = events
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["REQUEST", "ERROR", "RESPONSE"]);
    assert_eq!(events[1]["metadata"]["error_type"], "upstream_unreachable");
    assert_eq!(events[1]["level"], "ERROR");
    assert_eq!(events[2]["metadata"]["outcome"], "upstream_error");
    assert_eq!(events[2]["metadata"]["status"], 502);
    // The request body is recorded even though upstream never saw it.
    assert_eq!(
        events[0]["metadata"]["request_data"]["model"],
        "gpt-4o-mini"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_header_timeout_gives_504() {
    let mock = MockUpstream::start().await;
    let proxy =
        TestProxy::start_with(&mock.url(), &[("LLM_AUDIT_PROXY_UPSTREAM_TIMEOUT", "0.3")]).await;
    let resp = proxy
        .post_call("/v1/chat/completions", "slow-1")
        .header("x-mock-header-delay-ms", "3000")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 504);
    assert_eq!(resp.headers()["x-audit-proxy-error"], "upstream_timeout");
    let events = proxy.call_events("slow-1").await;
    assert_eq!(
        of_type(&events, "ERROR")["metadata"]["error_type"],
        "upstream_timeout"
    );
    assert_eq!(
        of_type(&events, "RESPONSE")["metadata"]["outcome"],
        "timeout"
    );
    assert_eq!(of_type(&events, "RESPONSE")["metadata"]["status"], 504);
    proxy.stop().await;
}

#[tokio::test]
async fn request_is_on_record_while_a_slow_upstream_is_still_answering() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let call = proxy
        .post_call("/v1/chat/completions", "slow-answer-1")
        .header("x-mock-header-delay-ms", "3000")
        .json(&chat_body(false))
        .send();
    let call = tokio::spawn(call);
    // The answer's head is 3 s away; the REQUEST must not wait for it.
    let events = proxy
        .wait_events("request_id=slow-answer-1&event_type=REQUEST", 1)
        .await;
    assert_eq!(events.len(), 1);
    assert!(
        !call.is_finished(),
        "the call was still waiting for upstream"
    );
    let resp = call.await.unwrap().unwrap();
    assert_eq!(resp.status(), 200);
    let events = proxy.call_events("slow-answer-1").await;
    assert_eq!(events[0]["event_type"], "REQUEST");
    assert_eq!(events[1]["event_type"], "RESPONSE");
    proxy.stop().await;
}

#[tokio::test]
async fn silent_stream_hits_the_idle_timeout() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[("LLM_AUDIT_PROXY_STREAM_IDLE_TIMEOUT", "0.3")],
    )
    .await;
    let resp = proxy
        .post_call("/v1/silent-stream", "idle-1")
        .json(&json!({"stream": true}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.text().await.is_err(), "the app sees the stream break");
    let events = proxy.call_events("idle-1").await;
    assert_eq!(
        of_type(&events, "ERROR")["metadata"]["error_type"],
        "stream_idle_timeout"
    );
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(m["outcome"], "timeout");
    assert!(m["body_bytes"].as_u64().unwrap() > 0);
    proxy.stop().await;
}

#[tokio::test]
async fn client_abort_mid_stream_cancels_upstream_and_is_recorded() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let mut resp = proxy
        .post_call("/v1/chat/completions", "abort-1")
        .header("x-mock-endless", "1")
        .json(&json!({"model": "gpt-4o-mini", "stream": true}))
        .send()
        .await
        .unwrap();
    let mut received = 0;
    while received < 3 {
        if resp.chunk().await.unwrap().is_some() {
            received += 1;
        }
    }
    drop(resp);
    let events = proxy.call_events("abort-1").await;
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(m["outcome"], "client_aborted");
    assert_eq!(m["status"], 200);
    let content = m["response_data"]["choices"][0]["message"]["content"]
        .as_str()
        .unwrap_or_else(|| panic!("{m:#}"));
    assert!(content.starts_with("tok0 tok1 tok2"), "{content}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while mock.streams_cancelled() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        mock.streams_cancelled(),
        1,
        "the upstream stream was cancelled"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn binary_body_is_forwarded_untouched() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let payload: Vec<u8> = (0..=255u8).cycle().take(5000).collect();
    let resp = proxy
        .post_call("/v1/echo", "bin-1")
        .header("content-type", "application/octet-stream")
        .body(payload.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.bytes().await.unwrap().to_vec(), payload);
    assert_eq!(mock.seen()[0].body.to_vec(), payload);
    assert_eq!(mock.seen()[0].method, "POST");
    let events = proxy.call_events("bin-1").await;
    let req = &of_type(&events, "REQUEST")["metadata"];
    assert_eq!(req["body_bytes"], 5000);
    assert_eq!(req["request_data"]["binary"], true);
    assert_eq!(req["operation"], "POST /v1/echo");
    proxy.stop().await;
}

#[tokio::test]
async fn non_json_text_body_is_stored_as_text() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    proxy
        .post_call("/v1/echo", "txt-1")
        .header("content-type", "text/plain")
        .body(format!("{{ not json, key {OPENAI_KEY}"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let events = proxy.call_events("txt-1").await;
    let data = of_type(&events, "REQUEST")["metadata"]["request_data"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(data.starts_with("{ not json"));
    assert!(data.contains("[REDACTED:OPENAI_KEY]"));
    proxy.stop().await;
}

#[tokio::test]
async fn bodies_over_the_capture_limit_are_forwarded_whole_and_stored_truncated() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[("LLM_AUDIT_PROXY_CAPTURE_MAX_BODY_BYTES", "1024")],
    )
    .await;
    let big = format!("{{\"input\": \"{}\"}}", "x".repeat(200_000));
    let resp = proxy
        .post_call("/v1/echo", "big-1")
        .header("content-type", "application/json")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.text().await.unwrap(), big);
    assert_eq!(mock.seen()[0].body.len(), big.len());
    let events = proxy.call_events("big-1").await;
    let req = &of_type(&events, "REQUEST")["metadata"];
    assert_eq!(req["truncated"], true);
    assert_eq!(req["body_bytes"], big.len());
    assert!(req["request_data"].as_str().unwrap().len() <= 1024);
    let res = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(res["truncated"], true);
    assert_eq!(res["body_bytes"], big.len());
    proxy.stop().await;
}

#[tokio::test]
async fn compressed_responses_pass_through_and_are_decoded_for_the_record() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let resp = proxy
        .post_call("/v1/chat/completions", "gz-1")
        .header("accept-encoding", "gzip")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    let compressed = resp.bytes().await.unwrap();
    let mut text = String::new();
    use std::io::Read;
    flate2::read::GzDecoder::new(&compressed[..])
        .read_to_string(&mut text)
        .unwrap();
    assert!(text.contains("chatcmpl-AbC123"));
    let events = proxy.call_events("gz-1").await;
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(m["body_bytes"], compressed.len());
    assert_eq!(m["response_data"]["id"], "chatcmpl-AbC123");
    assert_eq!(m["usage"]["total_tokens"], 30);
    proxy.stop().await;
}

#[tokio::test]
async fn invalid_request_ids_are_replaced() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let resp = proxy
        .http
        .get(proxy.url("/v1/models"))
        .header("x-request-id", "not valid!")
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-audit-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(uuid::Uuid::parse_str(&id).unwrap().get_version_num(), 7);
    // The app's own header still reaches upstream unchanged.
    assert_eq!(mock.seen()[0].headers["x-request-id"], "not valid!");
    let events = proxy.call_events(&id).await;
    assert_eq!(
        of_type(&events, "REQUEST")["metadata"]["operation"],
        "models.list"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn upstream_path_prefix_and_query_are_kept() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&format!("{}/gateway", mock.url())).await;
    proxy
        .post_call(
            "/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21",
            "az-1",
        )
        .header("api-key", "azure-secret-key-value")
        .json(&json!({"messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(
        mock.seen()[0].path_and_query,
        "/gateway/openai/deployments/my-gpt/chat/completions?api-version=2024-10-21"
    );
    let events = proxy.call_events("az-1").await;
    let req = &of_type(&events, "REQUEST")["metadata"];
    assert_eq!(req["operation"], "chat.create");
    assert_eq!(req["provider"], "azure_openai");
    assert_eq!(req["model"], "my-gpt");
    assert!(req["headers"].get("api-key").is_none());
    proxy.stop().await;
}

#[tokio::test]
async fn credential_query_parameters_are_not_stored() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    proxy
        .http
        .get(proxy.url("/v1/models?api-key=qs-secret-value-1&limit=5"))
        .header("x-request-id", "qs-1")
        .send()
        .await
        .unwrap();
    assert_eq!(
        mock.seen()[0].path_and_query,
        "/v1/models?api-key=qs-secret-value-1&limit=5"
    );
    let events = proxy.call_events("qs-1").await;
    let path = of_type(&events, "REQUEST")["metadata"]["path"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(!path.contains("qs-secret-value-1"), "{path}");
    assert!(path.contains("limit=5"));
    proxy.stop().await;
}

#[tokio::test]
async fn conflicting_length_headers_are_refused_without_reaching_upstream() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let addr = proxy.proxy_url.trim_start_matches("http://").to_owned();
    for raw in [
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    ] {
        let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
        s.write_all(raw.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
        let text = String::from_utf8_lossy(&out);
        assert!(text.starts_with("HTTP/1.1 400"), "{raw:?} got {text:?}");
    }
    assert_eq!(mock.calls(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn five_hundred_concurrent_calls_each_leave_one_request_and_one_response() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let mut tasks = Vec::new();
    for i in 0..500 {
        let http = proxy.http.clone();
        let url = proxy.url("/v1/chat/completions");
        let stream = i % 2 == 0;
        tasks.push(tokio::spawn(async move {
            let resp = http
                .post(url)
                .header("x-request-id", format!("conc-{i}"))
                .json(&chat_body(stream))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            resp.bytes().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(mock.calls(), 500);
    let requests = proxy.wait_events("event_type=REQUEST", 500).await;
    let responses = proxy.wait_events("event_type=RESPONSE", 500).await;
    assert_eq!(requests.len(), 500);
    assert_eq!(responses.len(), 500);
    for list in [&requests, &responses] {
        let mut ids: Vec<&str> = list
            .iter()
            .map(|e| e["request_id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 500);
    }
    proxy.stop().await;
}

#[tokio::test]
async fn events_survive_a_restart_and_no_credential_reaches_the_store_file() {
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_in(&mock.url(), tmp.path(), &[]).await;
    for i in 0..3 {
        proxy
            .http
            .post(proxy.url("/v1/chat/completions"))
            .bearer_auth(OPENAI_KEY)
            .header("x-api-key", "xapikey-secret-0001")
            .header("x-request-id", format!("rs-{i}"))
            .json(&chat_body(i == 1))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    proxy.wait_events("event_type=RESPONSE", 3).await;
    proxy.stop().await;

    let proxy = TestProxy::start_in(&mock.url(), tmp.path(), &[]).await;
    let responses = proxy.wait_events("event_type=RESPONSE", 3).await;
    assert_eq!(responses.len(), 3);
    let all = proxy.wait_events("", 1).await;
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "seq strictly increasing"
    );
    let stopped = all
        .iter()
        .filter(|e| e["event_type"] == "SYSTEM" && e["metadata"]["phase"] == "shutdown")
        .count();
    assert_eq!(stopped, 1, "the first run recorded its shutdown");
    proxy.stop().await;

    let raw = crate::support::raw_store(tmp.path());
    assert!(!raw.is_empty());
    for secret in [OPENAI_KEY, "xapikey-secret-0001"] {
        assert!(!raw.contains(secret), "{secret} found in the store");
    }
}

#[tokio::test]
async fn tls_upstream_with_an_extra_ca_speaks_http2() {
    let (mock, ca_pem) = MockUpstream::start_tls().await;
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ca_pem).unwrap();
    let upstream = format!("https://localhost:{}", mock.addr.port());
    let proxy = TestProxy::start_with(
        &upstream,
        &[("LLM_AUDIT_PROXY_CA_BUNDLE", ca.to_str().unwrap())],
    )
    .await;
    for i in 0..3 {
        let resp = proxy
            .post_call("/v1/chat/completions", format!("tls-{i}"))
            .json(&chat_body(i == 2))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        resp.bytes().await.unwrap();
    }
    let seen = mock.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.version == http::Version::HTTP_2));
    assert_eq!(
        seen[0].headers.get("host"),
        None,
        "HTTP/2 carries the authority instead"
    );
    let events = proxy.call_events("tls-2").await;
    assert_eq!(
        of_type(&events, "RESPONSE")["metadata"]["outcome"],
        "completed"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn tls_upstream_without_trust_is_unreachable() {
    let (mock, _ca) = MockUpstream::start_tls().await;
    let upstream = format!("https://localhost:{}", mock.addr.port());
    let proxy = TestProxy::start(&upstream).await;
    let resp = proxy
        .post_call("/v1/chat/completions", "tls-untrusted")
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let events = proxy.call_events("tls-untrusted").await;
    let details = of_type(&events, "ERROR")["metadata"]["details"]["message"].to_string();
    assert!(details.to_lowercase().contains("certificate"), "{details}");
    assert_eq!(mock.calls(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn calls_still_running_after_the_grace_are_cut_and_recorded_as_such() {
    use futures_util::StreamExt;
    use llm_audit_proxy::store::{AuditStore, EventFilter};
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_in(
        &mock.url(),
        tmp.path(),
        &[("LLM_AUDIT_PROXY_SHUTDOWN_GRACE", "0.3")],
    )
    .await;
    let mut resp = proxy
        .post_call("/v1/chat/completions", "cut-1")
        .header("x-mock-endless", "1")
        .json(&json!({"model": "gpt-4o-mini", "stream": true}))
        .send()
        .await
        .unwrap();
    resp.chunk().await.unwrap();
    let reader = tokio::spawn(async move { while let Ok(Some(_)) = resp.chunk().await {} });
    proxy.stop().await;
    reader.await.unwrap();
    let store = llm_audit_proxy::store::sqlite::SqliteStore::open_read_only(tmp.path())
        .await
        .unwrap();
    let events: Vec<_> = store
        .export(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await;
    let response = events
        .iter()
        .find(|e| e.request_id.as_deref() == Some("cut-1") && e.event_type.as_str() == "RESPONSE")
        .unwrap();
    assert_eq!(response.metadata.field("outcome"), "shutdown");
    let stopped = events.last().unwrap();
    assert_eq!(stopped.metadata.field("phase"), "shutdown");
    assert_eq!(stopped.metadata.field("drained"), false);
}

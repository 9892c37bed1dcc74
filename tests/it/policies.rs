//! Compliance policies end to end: block, redact and log, in requests,
//! responses and streams.

use serde_json::{json, Value};

use crate::support::{of_type, raw_store, MockUpstream, TestProxy};

const CARD: &str = "4111 1111 1111 1111";

fn digits_only(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

#[tokio::test]
async fn pci_pack_blocks_a_card_in_the_prompt_before_upstream() {
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_in(
        &mock.url(),
        tmp.path(),
        &[("LLM_AUDIT_PROXY_POLICY_PACKS", "pci")],
    )
    .await;
    let resp = proxy
        .post_call("/v1/chat/completions", "pci-1")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("Charge my card {CARD} please")}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-audit-request-id"], "pci-1");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "policy_violation");
    assert_eq!(body["error"]["policy"], "pci-card-block");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("pci-card-block"));
    assert!(!body.to_string().contains("4111"));
    assert_eq!(mock.calls(), 0, "the request never reached upstream");

    let events = proxy.call_events("pci-1").await;
    let violation = events
        .iter()
        .find(|e| {
            e["event_type"] == "COMPLIANCE_VIOLATION"
                && e["metadata"]["policy_name"] == "pci-card-block"
        })
        .unwrap();
    assert_eq!(violation["metadata"]["action"], "block");
    assert_eq!(violation["metadata"]["direction"], "request");
    assert_eq!(violation["metadata"]["severity"], "HIGH");
    assert_eq!(violation["level"], "ERROR");
    assert_eq!(violation["metadata"]["result"], false);
    assert_eq!(
        violation["metadata"]["findings"],
        json!([{"entity_type": "CREDIT_CARD", "count": 1}])
    );
    let response = of_type(&events, "RESPONSE");
    assert_eq!(response["metadata"]["outcome"], "blocked");
    assert_eq!(response["metadata"]["blocked_by"], "pci-card-block");
    assert_eq!(response["metadata"]["status"], 400);

    let (_, filtered) = proxy
        .admin_get("/api/events?event_type=COMPLIANCE_VIOLATION&policy_name=pci-card-block")
        .await;
    assert!(!filtered["events"].as_array().unwrap().is_empty());
    let (_, stats) = proxy.admin_get("/api/stats").await;
    assert!(
        stats["violations_by_policy"]["pci-card-block"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert!(stats["violations_by_severity"]["HIGH"].as_u64().unwrap() >= 1);
    proxy.stop().await;
    let raw = raw_store(tmp.path());
    assert!(
        !digits_only(&raw).contains("4111111111111111"),
        "the card number reached the store"
    );
}

#[tokio::test]
async fn a_streamed_card_number_is_cut_off() {
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_in(
        &mock.url(),
        tmp.path(),
        &[("LLM_AUDIT_PROXY_POLICY_PACKS", "pci")],
    )
    .await;
    let text = proxy
        .post_call("/v1/chat/completions", "pci-stream")
        .header("x-mock-card", "1")
        .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "show my card"}]}))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("policy_violation"), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(
        !text.contains("More text"),
        "the stream stopped at the violation: {text}"
    );
    let content = streamed_content(&text);
    assert!(
        !digits_only(&content).contains("4111111111111111"),
        "{content}"
    );

    let events = proxy.call_events("pci-stream").await;
    let response = of_type(&events, "RESPONSE");
    assert_eq!(response["metadata"]["outcome"], "blocked");
    assert_eq!(response["metadata"]["blocked_by"], "pci-card-block");
    let violations = proxy
        .wait_events("request_id=pci-stream&event_type=COMPLIANCE_VIOLATION", 1)
        .await;
    let v = &violations[0]["metadata"];
    assert_eq!(v["direction"], "response");
    assert_eq!(
        v["findings"],
        json!([{"entity_type": "CREDIT_CARD", "count": 1}])
    );
    proxy.stop().await;
    assert!(!digits_only(&raw_store(tmp.path())).contains("4111111111111111"));
}

#[tokio::test]
async fn a_completion_with_a_card_is_replaced_by_an_error() {
    let mock = MockUpstream::start().await;
    let proxy =
        TestProxy::start_with(&mock.url(), &[("LLM_AUDIT_PROXY_POLICY_PACKS", "pci")]).await;
    let resp = proxy
        .post_call("/v1/chat/completions", "pci-resp")
        .header("x-mock-card", "1")
        .header("accept-encoding", "gzip")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "show my card"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["policy"], "pci-card-block");
    assert!(
        mock.seen()[0].headers.get("accept-encoding").is_none(),
        "identity asked for, to inspect the answer"
    );
    let events = proxy.call_events("pci-resp").await;
    let response = of_type(&events, "RESPONSE");
    assert_eq!(response["metadata"]["outcome"], "blocked");
    let stored = response["metadata"]["response_data"].to_string();
    assert!(stored.contains("[REDACTED:CREDIT_CARD]"), "{stored}");
    proxy.stop().await;
}

#[tokio::test]
async fn redact_and_log_policies_record_without_blocking() {
    let mock = MockUpstream::start().await;
    let policies = json!([
        {"name": "emails-out", "detectors": ["email"], "action": "redact", "direction": "request", "redact_upstream": true, "severity": "low"},
        {"name": "phones-stored", "detectors": ["phone"], "action": "redact"},
        {"name": "project-words", "keywords": ["Project Falcon"], "action": "log", "severity": "MEDIUM"}
    ]);
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[
            ("LLM_AUDIT_PROXY_POLICIES", &policies.to_string()),
            ("LLM_AUDIT_PROXY_RECORD_COMPLIANCE_CHECKS", "true"),
        ],
    )
    .await;
    let prompt = "Mail jane.doe@example.com or call +1 415-555-0132 about project falcon.";
    let resp = proxy
        .post_call("/v1/chat/completions", "redact-1")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": prompt}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let seen = &mock.seen()[0];
    let sent: Value = serde_json::from_slice(&seen.body).unwrap();
    let sent_prompt = sent["messages"][0]["content"].as_str().unwrap();
    assert!(sent_prompt.contains("[REDACTED:EMAIL]"), "{sent_prompt}");
    assert!(
        sent_prompt.contains("+1 415-555-0132"),
        "only the stored copy loses the phone: {sent_prompt}"
    );
    assert_eq!(seen.headers["content-length"], seen.body.len().to_string());

    let events = proxy.call_events("redact-1").await;
    let stored = of_type(&events, "REQUEST")["metadata"]["request_data"]["messages"][0]["content"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        stored.contains("[REDACTED:EMAIL]") && stored.contains("[REDACTED:PHONE]"),
        "{stored}"
    );
    assert!(
        stored.contains("project falcon"),
        "log policies do not redact"
    );
    let violations: Vec<&str> = events
        .iter()
        .filter(|e| e["event_type"] == "COMPLIANCE_VIOLATION")
        .map(|e| e["metadata"]["policy_name"].as_str().unwrap())
        .collect();
    for name in ["emails-out", "phones-stored", "project-words"] {
        assert!(
            violations.contains(&name),
            "{name} missing from {violations:?}"
        );
    }
    let request = of_type(&events, "REQUEST");
    assert_eq!(
        request["metadata"]["compliance"]["violated"],
        json!(["emails-out", "phones-stored", "project-words"])
    );
    let checks = proxy
        .wait_events("request_id=redact-1&event_type=COMPLIANCE_CHECK", 1)
        .await;
    assert_eq!(checks.len(), 1, "one check event for the response side");
    assert_eq!(checks[0]["metadata"]["direction"], "response");
    assert_eq!(
        checks[0]["metadata"]["policies"],
        json!(["phones-stored", "project-words"])
    );
    assert_eq!(
        of_type(&events, "RESPONSE")["metadata"]["outcome"],
        "completed"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn bad_policies_fail_startup_naming_the_key() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_llm-audit-proxy"))
        .args(["check-config", "/dev/null"])
        .env("LLM_AUDIT_PROXY_POLICY_PACKS", "pci,no-such-pack")
        .env(
            "LLM_AUDIT_PROXY_POLICIES",
            r#"[{"name": "x", "detectors": ["credit_cards"]}, {"name": "y", "patterns": ["("]}]"#,
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "policy_packs[1]",
        "policies[0].detectors",
        "policies[1].patterns[0]",
    ] {
        assert!(stderr.contains(key), "{key} missing from {stderr}");
    }
}

/// A request that passes a blocking request policy was parsed and scanned
/// on its way upstream; its record must still be cleaned exactly as a
/// fresh look would clean it.
#[tokio::test]
async fn a_request_let_through_by_a_blocking_policy_is_recorded_clean() {
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let policies = json!([
        {"name": "cards-in", "detectors": ["credit_card"], "action": "block", "direction": "request"},
        {"name": "emails-stored", "detectors": ["email"], "action": "redact", "direction": "request"},
        {"name": "phones-out", "detectors": ["phone"], "action": "redact", "direction": "response"}
    ]);
    let proxy = TestProxy::start_in(
        &mock.url(),
        tmp.path(),
        &[("LLM_AUDIT_PROXY_POLICIES", &policies.to_string())],
    )
    .await;
    let token = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
    let cases = [
        // Clean text, a secret outside it.
        ("clean-1", "What is the capital of France?", token),
        // A pattern in the text that no blocking policy reports.
        (
            "mail-1",
            "Write to jane.doe@example.com today",
            "app-user-7",
        ),
        // One only a response policy knows.
        ("phone-1", "Call +1 415-555-0132 tomorrow", "app-user-8"),
    ];
    for (id, prompt, user) in cases {
        let resp = proxy
            .post_call("/v1/chat/completions", id)
            .json(&json!({"model": "gpt-4o-mini", "user": user, "messages": [{"role": "user", "content": prompt}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{id}");
    }
    let stored = |events: &[Value]| of_type(events, "REQUEST")["metadata"]["request_data"].clone();

    let clean = stored(&proxy.call_events("clean-1").await);
    assert_eq!(clean["user"], "[REDACTED:GITHUB_TOKEN]");
    assert_eq!(
        clean["messages"][0]["content"],
        "What is the capital of France?"
    );

    let events = proxy.call_events("mail-1").await;
    assert_eq!(
        stored(&events)["messages"][0]["content"],
        "Write to [REDACTED:EMAIL] today"
    );
    assert_eq!(
        of_type(&events, "REQUEST")["metadata"]["compliance"]["violated"],
        json!(["emails-stored"])
    );

    let phone = stored(&proxy.call_events("phone-1").await);
    assert_eq!(
        phone["messages"][0]["content"], "Call +1 415-555-0132 tomorrow",
        "a response policy leaves the request's copy alone"
    );
    proxy.stop().await;
    assert!(
        !raw_store(tmp.path()).contains(token),
        "the token reached the store"
    );
}

/// A proxy with one inline `block` policy for cards in both directions, a
/// 4 KiB capture cap, and `extra` settings.
async fn card_block_proxy(mock: &MockUpstream, extra: &[(&str, &str)]) -> TestProxy {
    let mut env = vec![
        (
            "LLM_AUDIT_PROXY_POLICIES",
            r#"[{"name": "payment-card-block", "detectors": ["credit_card"], "action": "block", "direction": "both"}]"#,
        ),
        ("LLM_AUDIT_PROXY_CAPTURE_MAX_BODY_BYTES", "4096"),
    ];
    env.extend_from_slice(extra);
    TestProxy::start_with(&mock.url(), &env).await
}

/// Sends a chat call whose answer comes in `form` (see the mock).
async fn answer_in_form(proxy: &TestProxy, form: &str, id: &str) -> reqwest::Response {
    proxy
        .post_call("/v1/chat/completions", id)
        .header("x-mock-answer-form", form)
        .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
}

/// The model text an SSE client reads from `text`.
fn streamed_content(text: &str) -> String {
    text.lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|v| {
            v["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect()
}

async fn assert_blocked_response(proxy: &TestProxy, id: &str) {
    let events = proxy.call_events(id).await;
    let response = of_type(&events, "RESPONSE");
    assert_eq!(response["metadata"]["outcome"], "blocked", "{response}");
    assert_eq!(response["metadata"]["blocked_by"], "payment-card-block");
}

#[tokio::test]
async fn a_card_split_across_stream_chunks_never_reaches_the_app() {
    let mock = MockUpstream::start().await;
    let proxy = card_block_proxy(&mock, &[]).await;
    for (form, id) in [("split-card", "split-1"), ("untyped-sse", "split-2")] {
        let resp = answer_in_form(&proxy, form, id).await;
        assert_eq!(resp.status(), 200);
        let text = resp.text().await.unwrap();
        assert!(text.contains("policy_violation"), "{form}: {text}");
        assert!(text.trim_end().ends_with("data: [DONE]"), "{form}: {text}");
        // Not a digit of the card went out: it was held until confirmed.
        assert_eq!(streamed_content(&text), "Your card: ", "{form}");
        assert_blocked_response(&proxy, id).await;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_gzip_compressed_stream_is_inspected() {
    use futures_util::StreamExt;
    use std::io::Write;

    let mock = MockUpstream::start().await;
    let proxy = card_block_proxy(&mock, &[]).await;
    let resp = answer_in_form(&proxy, "gzip-sse", "gz-1").await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-encoding"], "gzip");
    // Compressed frames go on as sent; the cut ends the body with an error,
    // as a compressed stream cannot take an appended error event.
    let mut received = Vec::new();
    let mut broke_off = false;
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        match chunk {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                broke_off = true;
                break;
            }
        }
    }
    assert!(broke_off, "the blocked stream must not end cleanly");
    let mut decoder = flate2::write::GzDecoder::new(Vec::new());
    let _ = decoder.write_all(&received);
    let _ = decoder.flush();
    let text = String::from_utf8_lossy(decoder.get_ref()).into_owned();
    assert!(
        !digits_only(&streamed_content(&text)).contains("4444"),
        "{text}"
    );
    assert_blocked_response(&proxy, "gz-1").await;
    proxy.stop().await;
}

#[tokio::test]
async fn text_and_long_json_answers_are_inspected_whole() {
    let mock = MockUpstream::start().await;
    let proxy = card_block_proxy(&mock, &[]).await;
    // A 40 KB answer, ten times the capture cap, is still inspected whole.
    for (form, id) in [("text", "whole-1"), ("big-json", "whole-2")] {
        let resp = answer_in_form(&proxy, form, id).await;
        assert_eq!(resp.status(), 400, "{form}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["policy"], "payment-card-block", "{form}");
        assert_blocked_response(&proxy, id).await;
    }
    proxy.stop().await;
}

#[tokio::test]
async fn an_answer_that_cannot_be_inspected_is_refused_with_a_502() {
    let mock = MockUpstream::start().await;
    let proxy = card_block_proxy(
        &mock,
        &[("LLM_AUDIT_PROXY_POLICY_MAX_INSPECTED_BYTES", "8192")],
    )
    .await;
    for (form, id, code) in [
        ("bad-encoding", "refused-1", "answer_not_decodable"),
        ("big-json", "refused-2", "answer_too_large_to_inspect"),
    ] {
        let resp = answer_in_form(&proxy, form, id).await;
        assert_eq!(resp.status(), 502, "{form}");
        assert_eq!(resp.headers()["x-audit-request-id"], id);
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], code, "{form}");
        assert!(!body.to_string().contains("5555"));
        let events = proxy.call_events(id).await;
        let response = of_type(&events, "RESPONSE");
        assert_ne!(response["metadata"]["outcome"], "completed", "{response}");
    }
    proxy.stop().await;
}

#[tokio::test]
async fn a_clean_prose_stream_arrives_byte_identical() {
    let mock = MockUpstream::start().await;
    let proxy = card_block_proxy(&mock, &[]).await;
    let text = answer_in_form(&proxy, "prose", "prose-1")
        .await
        .text()
        .await
        .unwrap();
    let sent = crate::support::mock::chat_sse(crate::support::mock::PROSE_CHUNKS);
    assert_eq!(text, sent.concat());
    assert_eq!(text.matches("data: ").count(), sent.len());
    proxy.stop().await;
}

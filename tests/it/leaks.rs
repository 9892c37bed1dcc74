//! Nothing a policy matched, and no secret, reaches the store or an export
//! by any route: every action, every field of the call, and the ways people
//! write a value to slip it past a pattern.

use std::io::Write;

use serde_json::{json, Value};

use crate::support::{of_type, raw_store, MockUpstream, TestProxy};

/// Luhn-valid test numbers and how they are written.
const CARD: &str = "5555 5555 5555 4444";
const CARD_DIGITS: &str = "5555555555554444";
const OPENAI_KEY: &str = "sk-proj-Zq81Wn5Rt0Yp3Lk7Hd2Fb6Xc9Vm4Ns1Qa";

fn digits_only(s: &str) -> String {
    s.chars().filter(char::is_ascii_digit).collect()
}

/// Everything a reader of the record can get: the store's files (the WAL
/// included) and every export format.
async fn record_text(proxy: &TestProxy, dir: &std::path::Path) -> String {
    let mut all = raw_store(dir);
    for format in ["json", "ndjson", "csv"] {
        let body = proxy
            .admin_text(&format!("/api/export?format={format}"))
            .await;
        all.push_str(&body);
    }
    all
}

fn card_policy(action: &str, keep: Option<bool>) -> String {
    let mut p = json!({"name": "payment-card", "detectors": ["credit_card"], "action": action, "direction": "both"});
    if let Some(keep) = keep {
        p["keep_matches"] = json!(keep);
    }
    json!([p]).to_string()
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

#[tokio::test]
async fn no_stored_copy_holds_what_a_block_redact_or_log_policy_matched() {
    for (action, keep, stored) in [
        ("block", None, false),
        ("redact", None, false),
        ("log", None, false),
        ("log", Some(false), false),
        // The documented choice: a log policy may keep what it matched.
        ("log", Some(true), true),
    ] {
        let mock = MockUpstream::start().await;
        let tmp = tempfile::tempdir().unwrap();
        let policies = card_policy(action, keep);
        let proxy = TestProxy::start_in(
            &mock.url(),
            tmp.path(),
            &[("LLM_AUDIT_PROXY_POLICIES", &policies)],
        )
        .await;
        let label = format!("{action} keep={keep:?}");
        let resp = proxy
            .post_call("/v1/chat/completions", format!("leak-{action}"))
            .json(&json!({"model": "gpt-4o-mini", "messages": [
                {"role": "user", "content": format!("Please bill {CARD} today")},
                {"role": "assistant", "tool_calls": [{"id": "call_1", "type": "function",
                  "function": {"name": "bill", "arguments": format!("{{\"card\":\"{CARD}\"}}")}}]},
            ]}))
            .send()
            .await
            .unwrap();
        let expected = if action == "block" { 400 } else { 200 };
        assert_eq!(resp.status(), expected, "{label}");
        // A custom event carries the number in its metadata and message.
        let resp = proxy
            .http
            .post(format!("{}/api/events", proxy.admin_url))
            .json(
                &json!({"event_type": "BILLING_NOTE", "message": format!("card {CARD}"),
                          "metadata": {"note": format!("charged {CARD}"), CARD: "as a key"}}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{label}");
        let events = proxy.call_events(&format!("leak-{action}")).await;
        let request = of_type(&events, "REQUEST");
        let text = request["metadata"]["request_data"].to_string();
        if !stored {
            assert!(text.contains("[REDACTED:CREDIT_CARD]"), "{label}: {text}");
        }
        let record = record_text(&proxy, tmp.path()).await;
        proxy.stop().await;
        let record = record + &raw_store(tmp.path());
        assert_eq!(
            record.contains(CARD) || digits_only(&record).contains(CARD_DIGITS),
            stored,
            "{label}: the card number is in the store or an export: {stored}"
        );
    }
}

/// The request bodies people use to get a card past a pattern, each sent
/// with the `pci` pack on; every one is refused before upstream.
fn card_evasions() -> Vec<(&'static str, Option<&'static str>, Vec<u8>)> {
    let chat = |content: Value| {
        serde_json::to_vec(
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": content}]}),
        )
        .unwrap()
    };
    let text = |s: &str| chat(json!(s));
    let mut cases: Vec<(&'static str, Option<&'static str>, Vec<u8>)> = vec![
        ("plain", None, text("bill 5555 5555 5555 4444")),
        ("full-width digits", None, text("bill ５５５５ ５５５５ ５５５５ ４４４４")),
        ("Arabic-Indic digits", None, text("bill ٥٥٥٥ ٥٥٥٥ ٥٥٥٥ ٤٤٤٤")),
        ("no-break spaces", None, text("bill 5555\u{a0}5555\u{a0}5555\u{a0}4444")),
        ("zero-width spaces", None, text("bill 5555\u{200b}5555\u{200b}5555\u{200b}4444")),
        ("zero-width joiner inside a group", None, text("bill 55\u{200d}55 5555 5555 4444")),
        ("dots", None, text("bill 5555.5555.5555.4444")),
        ("mixed separators", None, text("bill 5555-5555 5555.4444")),
        ("Amex 4-6-5", None, text("amex 3782 822463 10005")),
        (
            "two messages",
            None,
            serde_json::to_vec(&json!({"model": "m", "messages": [
                {"role": "user", "content": "my card is 5555 5555"},
                {"role": "user", "content": "5555 4444 thanks"}]}))
            .unwrap(),
        ),
        (
            "two content parts",
            None,
            chat(json!([{"type": "text", "text": "card 5555 5555"}, {"type": "text", "text": "5555 4444"}])),
        ),
        (
            "tool-call arguments",
            None,
            serde_json::to_vec(&json!({"model": "m", "messages": [{"role": "assistant", "tool_calls": [
                {"id": "c", "type": "function", "function": {"name": "pay", "arguments": "{\"pan\":\"5555555555554444\"}"}}]}]}))
            .unwrap(),
        ),
        ("the user field", None, serde_json::to_vec(&json!({"model": "m", "user": CARD, "messages": []})).unwrap()),
        (
            "a message name",
            None,
            serde_json::to_vec(&json!({"model": "m", "messages": [{"role": "user", "name": CARD_DIGITS, "content": "hi"}]}))
                .unwrap(),
        ),
        (
            "an object key",
            None,
            serde_json::to_vec(&json!({"model": "m", "metadata": {CARD_DIGITS: "x"}, "messages": []})).unwrap(),
        ),
        (
            "JSON escapes",
            None,
            br#"{"model":"m","messages":[{"role":"user","content":"bill \u0035555 5555 5555 4444"}]}"#.to_vec(),
        ),
        ("a BOM before the JSON", None, [b"\xEF\xBB\xBF".as_slice(), &text(CARD)].concat()),
        ("gzip", Some("gzip"), gzip(&text(CARD))),
    ];
    // Padded past the capture cap (1 MiB by default) with whitespace.
    let mut padded = text(CARD);
    padded.extend(std::iter::repeat_n(b' ', 1_200_000));
    cases.push(("padded past the capture cap", None, padded));
    cases
}

#[tokio::test]
async fn request_evasions_are_blocked_before_upstream() {
    let mock = MockUpstream::start().await;
    let proxy =
        TestProxy::start_with(&mock.url(), &[("LLM_AUDIT_PROXY_POLICY_PACKS", "pci")]).await;
    for (label, encoding, body) in card_evasions() {
        let mut req = proxy
            .post_call("/v1/chat/completions", "evasion")
            .header("content-type", "application/json")
            .body(body);
        if let Some(e) = encoding {
            req = req.header("content-encoding", e);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 400, "{label}: {body}");
        assert_eq!(body["error"]["code"], "policy_violation", "{label}: {body}");
    }
    assert_eq!(mock.calls(), 0, "no evasion reached upstream");
    proxy.stop().await;
}

#[tokio::test]
async fn an_email_written_with_json_escapes_is_found() {
    let mock = MockUpstream::start().await;
    let policies = json!([{"name": "no-mail", "detectors": ["email"], "action": "block", "direction": "request"}]);
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[("LLM_AUDIT_PROXY_POLICIES", &policies.to_string())],
    )
    .await;
    let resp = proxy
        .post_call("/v1/chat/completions", "escaped-mail")
        .header("content-type", "application/json")
        .body(r#"{"model":"m","messages":[{"role":"user","content":"write to jane\u0040example.com"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(mock.calls(), 0);
    proxy.stop().await;
}

#[tokio::test]
async fn bodies_that_cannot_be_checked_are_refused_only_while_a_block_policy_watches() {
    /// Label, Content-Encoding, body, expected status and error code.
    type Uncheckable = (
        &'static str,
        Option<&'static str>,
        Vec<u8>,
        u16,
        &'static str,
    );
    let cases: Vec<Uncheckable> = vec![
        (
            "unknown encoding",
            Some("x-custom"),
            b"{\"model\":\"m\"}".to_vec(),
            415,
            "request_encoding_not_inspectable",
        ),
        (
            "trailing bytes after the JSON",
            None,
            b"{\"model\":\"m\",\"messages\":[]} trailing".to_vec(),
            400,
            "request_not_parsable",
        ),
        (
            "broken JSON",
            None,
            b"{\"model\":\"m\",\"messages\":[".to_vec(),
            400,
            "request_not_parsable",
        ),
        (
            "longer than the inspection limit",
            None,
            [
                b"{\"model\":\"m\",\"pad\":\"".as_slice(),
                &vec![b'a'; 17 << 20],
                b"\"}",
            ]
            .concat(),
            413,
            "request_too_large_to_inspect",
        ),
    ];
    // With a block policy: refused, nothing upstream, recorded as blocked.
    let mock = MockUpstream::start().await;
    let proxy =
        TestProxy::start_with(&mock.url(), &[("LLM_AUDIT_PROXY_POLICY_PACKS", "pci")]).await;
    for (i, (label, encoding, body, status, code)) in cases.iter().enumerate() {
        let id = format!("refused-{i}");
        let mut req = proxy
            .post_call("/v1/chat/completions", &id)
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(e) = encoding {
            req = req.header("content-encoding", *e);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), *status, "{label}");
        assert_eq!(resp.headers()["x-audit-proxy-error"], *code, "{label}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], *code, "{label}");
        assert_eq!(body["error"]["type"], "invalid_request_error", "{label}");
        let events = proxy.call_events(&id).await;
        let response = of_type(&events, "RESPONSE");
        assert_eq!(response["metadata"]["outcome"], "blocked", "{label}");
        assert_eq!(response["metadata"]["blocked_by"], *code, "{label}");
    }
    assert_eq!(mock.calls(), 0);
    proxy.stop().await;

    // Without one: forwarded as sent, as before.
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    for (label, encoding, body, _, _) in &cases {
        let mut req = proxy
            .post_call("/v1/chat/completions", "passed")
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(e) = encoding {
            req = req.header("content-encoding", *e);
        }
        let resp = req.send().await.unwrap();
        assert_ne!(resp.status(), 413, "{label}");
        assert!(
            resp.headers().get("x-audit-proxy-error").is_none(),
            "{label}"
        );
    }
    assert_eq!(mock.calls(), cases.len());
    proxy.stop().await;
}

#[tokio::test]
async fn every_stored_string_is_cleaned_not_only_the_bodies() {
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_in(
        &mock.url(),
        tmp.path(),
        &[("LLM_AUDIT_PROXY_POLICIES", &card_policy("redact", None))],
    )
    .await;
    let aws_session = "FwoGZXIvYXdzEJr//////////wEaDNlUGtMYYY0e7WqB2yKsAT";
    /// Path and query, extra headers, JSON body.
    type Call = (String, Vec<(&'static str, String)>, Value);
    let calls: Vec<Call> = vec![
        (
            format!("/v1/chat/completions?code={OPENAI_KEY}&access_token=tok-secret-1&apikey=tok-secret-2"),
            vec![],
            json!({"model": "m", "messages": []}),
        ),
        (
            format!("/v1/{OPENAI_KEY}/chat/completions;key=tok-secret-3?x=1;key=tok-secret-4"),
            vec![],
            json!({"model": "m", "messages": []}),
        ),
        (
            format!("/v1/chat/completions?note={}", CARD.replace(' ', "%20")),
            vec![
                ("x-amz-security-token", aws_session.to_owned()),
                ("x-customer-card", CARD.to_owned()),
                ("x-debug", format!("key {OPENAI_KEY}")),
            ],
            json!({"model": OPENAI_KEY, "user": CARD, OPENAI_KEY: 1, "messages": [
                {"role": "user", "name": CARD_DIGITS, "content": "hi"}]}),
        ),
    ];
    for (i, (path, headers, body)) in calls.iter().enumerate() {
        let mut req = proxy.post_call(path, format!("clean-{i}")).json(body);
        for (name, value) in headers {
            req = req.header(*name, value);
        }
        let resp = req.send().await.unwrap();
        assert!(resp.status().as_u16() < 500, "{path}");
        let events = proxy.call_events(&format!("clean-{i}")).await;
        assert!(events.iter().any(|e| e["event_type"] == "REQUEST"));
    }
    // An id shaped like a secret is replaced, and the app learns the new one.
    let resp = proxy
        .post_call("/v1/chat/completions", OPENAI_KEY)
        .json(&json!({"model": "m", "messages": []}))
        .send()
        .await
        .unwrap();
    let id = resp.headers()["x-audit-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_ne!(id, OPENAI_KEY);
    assert_eq!(proxy.call_events(&id).await.len(), 2);

    let record = record_text(&proxy, tmp.path()).await;
    proxy.stop().await;
    let record = record + &raw_store(tmp.path());
    for secret in [
        OPENAI_KEY,
        "tok-secret-1",
        "tok-secret-2",
        "tok-secret-3",
        "tok-secret-4",
        aws_session,
        CARD,
    ] {
        assert!(!record.contains(secret), "{secret} is in the record");
    }
    assert!(
        !digits_only(&record).contains(CARD_DIGITS),
        "the card is in the record"
    );
}

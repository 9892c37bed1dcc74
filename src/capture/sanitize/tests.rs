use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::json;

use super::*;

const OPENAI_LEGACY: &str = "sk-Abc123XyZ456DefGhi789JklMnoPqrStuVwxYz0123456789";
const OPENAI_PROJECT: &str =
    "sk-proj-7sK2Qm9XbT4vLw8NcR3pYf6HdJ1gZa5UeW0oIq_-Vt2KmB8xCn4LsP9rYd3Fh6Gj";
const OPENAI_SVCACCT: &str = "sk-svcacct-Zr4Tq8Wm2Np6Kx0Vb3Lc7Hd1Jf5Gs9Ay";
const OPENAI_ADMIN: &str = "sk-admin-Q1w2E3r4T5y6U7i8O9p0AsDfGhJkL";
const ANTHROPIC: &str =
    "sk-ant-api03-Xk9Lm2Nq8Rp4St6Uv0Wx3Yz7Ab1Cd5Ef9Gh2Ij6Kl0Mn4Op8Qr2St6Uv0Wx3Yz7Ab-1Cd5Ef9GhAA";
const AWS: &str = "AKIAIOSFODNN7EXAMPLE";

fn redact(s: &str) -> String {
    Sanitizer::baseline().redact_text(s).into_owned()
}

#[test]
fn baseline_patterns_compile() {
    let set = PolicySet::baseline().unwrap();
    assert_eq!(
        set.secret_kinds(),
        [
            "ANTHROPIC_KEY",
            "OPENAI_KEY",
            "AWS_ACCESS_KEY",
            "BEARER_TOKEN"
        ]
    );
}

#[test]
fn openai_keys_of_every_prefix() {
    for key in [OPENAI_LEGACY, OPENAI_PROJECT, OPENAI_SVCACCT, OPENAI_ADMIN] {
        assert_eq!(
            redact(&format!("my key is {key}, keep it safe")),
            "my key is [REDACTED:OPENAI_KEY], keep it safe",
            "{key}"
        );
        assert_eq!(redact(key), "[REDACTED:OPENAI_KEY]");
    }
}

#[test]
fn anthropic_keys_are_not_reported_as_openai() {
    assert_eq!(
        redact(&format!("ANTHROPIC_API_KEY={ANTHROPIC}")),
        "ANTHROPIC_API_KEY=[REDACTED:ANTHROPIC_KEY]"
    );
    // Too short for the Anthropic detector, still not an OpenAI key.
    assert_eq!(redact("sk-ant-Abc123Def456Gh"), "sk-ant-Abc123Def456Gh");
}

#[test]
fn bearer_tokens_keep_the_word() {
    assert_eq!(
        redact("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"),
        "Authorization: Bearer [REDACTED:BEARER_TOKEN]"
    );
    assert_eq!(
        redact("curl -H 'authorization: bearer AbCdEfGhIjKlMnOpQrSt'"),
        "curl -H 'authorization: bearer [REDACTED:BEARER_TOKEN]'"
    );
    assert_eq!(
        redact("BEARER\tZ2hwX3Rva2VuXzEyMzQ1Njc4OTA="),
        "BEARER\t[REDACTED:BEARER_TOKEN]"
    );
}

#[test]
fn a_bearer_wrapped_key_is_named_by_the_key() {
    assert_eq!(
        redact(&format!("Bearer {OPENAI_PROJECT}")),
        "Bearer [REDACTED:OPENAI_KEY]"
    );
}

#[test]
fn aws_access_key_ids() {
    assert_eq!(
        redact(&format!("aws_access_key_id = {AWS}")),
        "aws_access_key_id = [REDACTED:AWS_ACCESS_KEY]"
    );
    assert_eq!(
        redact("ASIAY34FZKBOKMUTVV7A."),
        "[REDACTED:AWS_ACCESS_KEY]."
    );
    // Not word-bounded, or too short: not a key id.
    for s in [
        "XAKIAIOSFODNN7EXAMPLE",
        "AKIAIOSFODNN7EXAMPLEX",
        "AKIAIOSFODNN7EX",
    ] {
        assert_eq!(redact(s), s);
    }
}

#[test]
fn prose_is_left_alone() {
    let s = Sanitizer::baseline();
    for text in [
        "Please sketch a risk-assessment framework for 2024.",
        "sk- alone is not a key, nor is sk-short",
        "we use sk-learn-compatible-estimators-for-everything here",
        "The bearer of bad news arrived.",
        "Bearer well-established",
        "Bearer tokens are described in RFC 6750.",
        "task-1234567890abcdefghijklmnop is a ticket",
        "AKIA is a prefix; so is ASIA.",
        "Ünïcödé text with no secrets at all — 東京",
        "",
    ] {
        assert!(
            matches!(s.redact_text(text), Cow::Borrowed(_)),
            "{text:?} was changed to {:?}",
            s.redact_text(text)
        );
    }
}

#[test]
fn several_kinds_in_one_string_are_counted() {
    let s = Sanitizer::baseline();
    let text = format!("{OPENAI_LEGACY} {ANTHROPIC} {AWS} Bearer abcdefgh12345678 {OPENAI_ADMIN}");
    let (out, n) = s.redact_counted(&text);
    assert_eq!(n, 5);
    assert_eq!(
        out,
        "[REDACTED:OPENAI_KEY] [REDACTED:ANTHROPIC_KEY] [REDACTED:AWS_ACCESS_KEY] \
         Bearer [REDACTED:BEARER_TOKEN] [REDACTED:OPENAI_KEY]"
    );
}

#[test]
fn values_and_keys_are_redacted_in_place() {
    let s = Sanitizer::baseline();
    let mut v = json!({
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": format!("use {OPENAI_LEGACY} please")},
            {"role": "user", "content": [{"type": "text", "text": AWS}]},
        ],
        OPENAI_ADMIN: 1,
        "n": 3,
        "nested": {"deep": [[[format!("Bearer {ANTHROPIC}")]]]},
    });
    assert_eq!(s.redact_value(&mut v), 4);
    assert_eq!(
        v["messages"][0]["content"],
        "use [REDACTED:OPENAI_KEY] please"
    );
    assert_eq!(
        v["messages"][1]["content"][0]["text"],
        "[REDACTED:AWS_ACCESS_KEY]"
    );
    assert_eq!(
        v["nested"]["deep"][0][0][0],
        "Bearer [REDACTED:ANTHROPIC_KEY]"
    );
    // A key used as an object name is renamed, its value kept.
    assert!(v.get(OPENAI_ADMIN).is_none());
    assert_eq!(v["[REDACTED:OPENAI_KEY]"], 1);
    assert_eq!(v["model"], "gpt-4o");
    let mut clean = json!({"a": ["b", 1, null, true]});
    assert_eq!(s.redact_value(&mut clean), 0);
}

#[test]
fn a_policy_set_adds_every_secret_kind_and_its_redactions() {
    use crate::policy::PolicyDef;

    let def = PolicyDef {
        name: Some("cards".into()),
        detectors: vec!["credit_card".into()],
        action: Some("redact".into()),
        direction: Some("request".into()),
        ..PolicyDef::default()
    };
    let s = Sanitizer::from_policies(std::sync::Arc::new(PolicySet::compile(&[def]).unwrap()));
    assert_eq!(
        s.redact_text("token ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 and AKIAIOSFODNN7EXAMPLE"),
        "token [REDACTED:GITHUB_TOKEN] and [REDACTED:AWS_ACCESS_KEY]"
    );
    // Cards are a policy's business: in every string of a request only.
    let body = json!({"messages": [{"role": "user", "content": "card 4111 1111 1111 1111"}],
                      "user": "4111 1111 1111 1111"});
    let mut stored = body.clone();
    assert_eq!(s.redact_request(&mut stored), 2);
    assert_eq!(
        stored["messages"][0]["content"],
        "card [REDACTED:CREDIT_CARD]"
    );
    assert_eq!(stored["user"], "[REDACTED:CREDIT_CARD]");
    let mut response = body.clone();
    assert_eq!(s.redact_response(&mut response), 0);
    let mut plain = body;
    assert_eq!(s.redact_value(&mut plain), 0);
}

#[test]
fn a_withholding_sanitizer_stores_nothing() {
    let s = Sanitizer::withholding();
    assert_eq!(s.redact_text("anything"), "[REDACTED:UNAVAILABLE]");
    assert_eq!(s.redact_text(""), "");
}

#[test]
fn credential_headers() {
    for h in [
        "authorization",
        "Authorization",
        "PROXY-AUTHORIZATION",
        "api-key",
        "X-Api-Key",
        "cookie",
        "Set-Cookie",
    ] {
        assert!(is_credential_header(h), "{h}");
    }
    for h in [
        "content-type",
        "x-request-id",
        "openai-organization",
        "x-api-key-id",
    ] {
        assert!(!is_credential_header(h), "{h}");
    }
}

#[test]
fn headers_become_a_redacted_object() {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer sk-secret"),
    );
    h.insert("api-key", HeaderValue::from_static("azure-secret"));
    h.insert("x-api-key", HeaderValue::from_static("secret"));
    h.insert("cookie", HeaderValue::from_static("session=1"));
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.append("accept", HeaderValue::from_static("text/event-stream"));
    h.append("accept", HeaderValue::from_static("application/json"));
    h.insert(
        "x-debug",
        HeaderValue::from_str(&format!("key={OPENAI_LEGACY}")).unwrap(),
    );
    h.insert(
        HeaderName::from_static("x-raw"),
        HeaderValue::from_bytes(b"caf\xe9").unwrap(),
    );
    h.insert(
        "x-utf8",
        HeaderValue::from_bytes("café".as_bytes()).unwrap(),
    );
    h.insert(
        "location",
        HeaderValue::from_static("https://blob.example/f?sv=2024&sig=abc%2Bdef&se=1"),
    );
    let v = headers_to_value(&h, &Sanitizer::baseline(), Direction::Request);
    assert_eq!(
        v,
        json!({
            "content-type": "application/json",
            "accept": "text/event-stream, application/json",
            "x-debug": "key=[REDACTED:OPENAI_KEY]",
            "x-raw": "[NON_UTF8]",
            "x-utf8": "café",
            "location": "https://blob.example/f?sv=2024&sig=[REDACTED]&se=1",
        })
    );
}

#[test]
fn query_credentials_are_replaced_and_the_rest_is_untouched() {
    let cases = [
        ("/v1/models", "/v1/models"),
        ("/v1/models?", "/v1/models?"),
        (
            "/openai/deployments/d/chat/completions?api-version=2024-10-21&api-key=abc",
            "/openai/deployments/d/chat/completions?api-version=2024-10-21&api-key=[REDACTED]",
        ),
        (
            "/x?key=1&KEY=2&Token=3&sig=4&api_key=5",
            "/x?key=[REDACTED]&KEY=[REDACTED]&Token=[REDACTED]&sig=[REDACTED]&api_key=[REDACTED]",
        ),
        (
            "/x?api%5Fkey=s&a=%20b+c&&flag",
            "/x?api%5Fkey=[REDACTED]&a=%20b+c&&flag",
        ),
        (
            "/x?keys=1&monkey=2&token_type=bearer",
            "/x?keys=1&monkey=2&token_type=bearer",
        ),
        ("/x?key=&b=1#frag", "/x?key=[REDACTED]&b=1#frag"),
        ("/x?key", "/x?key"),
    ];
    for (input, want) in cases {
        assert_eq!(redact_query(input), want, "{input}");
    }
}

#[test]
fn long_clean_text_takes_the_fast_path() {
    let s = Sanitizer::baseline();
    let text = "The quick brown fox jumps over the lazy dog; risk-free tasks. ".repeat(20_000);
    assert!(matches!(s.redact_text(&text), Cow::Borrowed(_)));
    let with_secret = format!("{text}{AWS}");
    let (out, n) = s.redact_counted(&with_secret);
    assert_eq!(n, 1);
    assert!(out.ends_with("[REDACTED:AWS_ACCESS_KEY]"));
}

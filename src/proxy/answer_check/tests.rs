use super::*;

use std::io::Write;

use flate2::write::GzEncoder;
use serde_json::json;

use crate::policy::PolicyDef;

const CARD: &str = "5555 5555 5555 4444";
const LIMIT: usize = 64 * 1024;

fn policies() -> Arc<PolicySet> {
    Arc::new(
        PolicySet::compile(&[PolicyDef {
            name: Some("payment-card-block".into()),
            detectors: vec!["credit_card".into()],
            action: Some("block".into()),
            direction: Some("both".into()),
            ..Default::default()
        }])
        .unwrap(),
    )
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(bytes).unwrap();
    e.finish().unwrap()
}

fn completion(text: &str) -> Vec<u8> {
    json!({"object": "chat.completion", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]})
    .to_string()
    .into_bytes()
}

fn sse(pieces: &[&str]) -> Vec<u8> {
    let mut out = String::new();
    for p in pieces {
        let chunk = json!({"object": "chat.completion.chunk",
            "choices": [{"index": 0, "delta": {"content": p}}]});
        out.push_str(&format!("data: {chunk}\n\n"));
    }
    out.push_str("data: [DONE]\n\n");
    out.into_bytes()
}

fn check(encoding: Option<&str>, body: &[u8], is_sse: bool) -> AnswerCheck {
    check_answer(&policies(), encoding, body, true, is_sse, LIMIT)
}

fn blocked(check: &AnswerCheck) -> bool {
    matches!(check, AnswerCheck::Blocked(v) if v.policy_name == "payment-card-block")
}

#[test]
fn event_streams_are_told_from_json_and_text() {
    for sse in [
        &b"data: {}"[..],
        b"\n\nevent: x",
        b"\xEF\xBB\xBFdata:",
        b": ping",
        b"id: 1",
    ] {
        assert!(looks_like_sse(sse), "{sse:?}");
    }
    for other in [
        &b"{\"data\": 1}"[..],
        b"Your card",
        b"",
        b"[1, 2]",
        b"database",
    ] {
        assert!(!looks_like_sse(other), "{other:?}");
    }
}

#[test]
fn identity_is_not_an_encoding() {
    assert!(!is_encoded(None));
    assert!(!is_encoded(Some("identity")));
    assert!(!is_encoded(Some(" ")));
    assert!(is_encoded(Some("gzip")));
    assert!(is_encoded(Some("identity, br")));
}

#[test]
fn a_json_answer_with_a_card_is_blocked_and_a_clean_one_forwarded() {
    assert!(blocked(&check(
        None,
        &completion(&format!("Card {CARD}.")),
        false
    )));
    assert!(matches!(
        check(None, &completion("No numbers here."), false),
        AnswerCheck::Forward
    ));
}

#[test]
fn a_plain_text_answer_is_scanned_as_text() {
    assert!(blocked(&check(
        None,
        format!("Your card: {CARD}.").as_bytes(),
        false
    )));
    assert!(matches!(
        check(None, b"Nothing to see.", false),
        AnswerCheck::Forward
    ));
}

#[test]
fn a_compressed_answer_is_decoded_for_inspection() {
    let body = gzip(&completion(&format!("Card {CARD}.")));
    assert!(blocked(&check(Some("gzip"), &body, false)));
    let clean = gzip(&completion("Clean."));
    assert!(matches!(
        check(Some("gzip"), &clean, false),
        AnswerCheck::Forward
    ));
}

#[test]
fn a_compressed_or_undeclared_stream_is_inspected_as_a_stream() {
    let stream = sse(&[
        "Your card: ",
        "5555 55",
        "55 55",
        "55 4444",
        ". ",
        "more text",
    ]);
    assert!(blocked(&check(Some("gzip"), &gzip(&stream), true)));
    // No content type, no encoding: sniffed from the body.
    assert!(blocked(&check(None, &stream, false)));
    let clean = sse(&["Hello", " world."]);
    assert!(matches!(
        check(Some("gzip"), &gzip(&clean), true),
        AnswerCheck::Forward
    ));
}

#[test]
fn an_answer_that_cannot_be_inspected_is_refused() {
    let body = completion("Clean.");
    for (encoding, bytes) in [
        (Some("compress"), body.clone()),
        (Some("gzip"), body.clone()),
        (Some("gzip"), gzip(&body)[..10].to_vec()),
    ] {
        assert!(
            matches!(
                check(encoding, &bytes, false),
                AnswerCheck::Refused(ProxyError::AnswerUndecodable)
            ),
            "{encoding:?}"
        );
    }
    let long = completion(&"a ".repeat(LIMIT));
    assert!(matches!(
        check_answer(&policies(), None, &long, false, false, LIMIT),
        AnswerCheck::Refused(ProxyError::AnswerTooLarge)
    ));
    // A small gzip body that decodes past the limit (a bomb) is too large.
    let bomb = gzip(&vec![b' '; LIMIT * 4]);
    assert!(matches!(
        check(Some("gzip"), &bomb, false),
        AnswerCheck::Refused(ProxyError::AnswerTooLarge)
    ));
}

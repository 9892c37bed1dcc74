//! Property tests of the hold-back: for every detector type, an entity in
//! prose, split anywhere, never reaches the app whole and the stream is
//! cut; clean prose arrives byte-identical, frame for frame.

use std::sync::LazyLock;
use std::task::{Context, Poll, Waker};

use proptest::prelude::*;

use super::*;

/// One valid example of every built-in detector type, a user pattern and
/// a keyword, each caught by [`all_detectors`].
const ENTITIES: &[(&str, &str)] = &[
    (
        "private_key",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7bq98ZxT0uVqN3kQ2wX8pL5mR1sTz4\n-----END RSA PRIVATE KEY-----",
    ),
    (
        "anthropic_key",
        "sk-ant-api03-Xq7vT2mK9pL4nR8sW1yB6cD3fG5hJ0kQ",
    ),
    ("openai_key", "sk-proj-4fT9qLm2Xv8RzK1pN7wC3sY6bH0dJ5gA"),
    ("github_token", "ghp_Z8d7Kq2mV9xT4rL1pN6wB3sY0cH5fJ2gAaQe"),
    ("stripe_key", "sk_live_4eC39HqLyjWDarjtT1zdp7dc"),
    ("slack_token", "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOp"),
    ("google_api_key", "AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q"),
    ("aws_access_key", "AKIAIOSFODNN7EXAMPLE"),
    (
        "aws_secret_key",
        "aws secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
    ),
    ("bearer_token", "Bearer 9f8e7d6c5b4a3f2e1d0c9b8a7f6e5d4c"),
    (
        "jwt",
        "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
    ),
    ("iban", "DE89 3704 0044 0532 0130 00"),
    ("credit_card", "5555 5555 5555 4444"),
    ("us_ssn", "219-09-9999"),
    ("email", "jane.doe@example.com"),
    ("phone", "+1 415 555 2671"),
    ("ip_address", "203.0.113.42"),
    ("pattern", "ACME-482913"),
    ("keyword", "bluebird"),
];

/// One `block` policy over every detector, a user pattern and a keyword.
fn all_detectors() -> Arc<PolicySet> {
    static SET: LazyLock<Arc<PolicySet>> = LazyLock::new(|| {
        Arc::new(
            PolicySet::compile(&[PolicyDef {
                name: Some("pci".into()),
                detectors: ENTITIES
                    .iter()
                    .map(|(kind, _)| kind.to_string())
                    .filter(|kind| kind != "pattern" && kind != "keyword")
                    .collect(),
                patterns: vec![r"ACME-\d{6}".into()],
                keywords: vec!["bluebird".into()],
                action: Some("block".into()),
                direction: Some("response".into()),
                ..Default::default()
            }])
            .unwrap(),
        )
    });
    SET.clone()
}

/// How the upstream stream is shaped.
#[derive(Debug, Clone, Copy)]
enum Api {
    Chat,
    Responses,
}

/// The stream upstream sends for `pieces`, one event per frame.
fn upstream_frames(api: Api, pieces: &[&str]) -> Vec<Bytes> {
    let mut events = Vec::new();
    match api {
        Api::Chat => {
            events.push(chat_event(
                0,
                json!({"role": "assistant", "content": ""}),
                None,
            ));
            for p in pieces {
                events.push(content(p));
            }
            events.push(chat_event(0, json!({}), Some("stop")));
            events.push("data: [DONE]\n\n".to_owned());
        }
        Api::Responses => {
            for (i, p) in pieces.iter().enumerate() {
                let data = json!({"type": "response.output_text.delta", "sequence_number": i,
                    "output_index": 0, "content_index": 0, "delta": p});
                events.push(format!(
                    "event: response.output_text.delta\ndata: {data}\n\n"
                ));
            }
            let done = json!({"type": "response.completed", "response": {"status": "completed"}});
            events.push(format!("event: response.completed\ndata: {done}\n\n"));
        }
    }
    events.into_iter().map(Bytes::from).collect()
}

/// The frames the app receives, and whether the stream was cut; driven
/// without a runtime, as the upstream frames are all ready.
fn guard_frames(frames: Vec<Bytes>) -> (Vec<Bytes>, bool) {
    let stream =
        futures_util::stream::iter(frames.into_iter().map(|b| Ok::<_, String>(Frame::data(b))));
    let blocked = Arc::new(AtomicBool::new(false));
    let flag = blocked.clone();
    let mut guard = Box::pin(StreamGuard::new(
        StreamBody::new(stream),
        all_detectors(),
        Box::new(move |_| flag.store(true, Ordering::SeqCst)),
    ));
    let mut cx = Context::from_waker(Waker::noop());
    let mut out = Vec::new();
    loop {
        match guard.as_mut().poll_frame(&mut cx) {
            Poll::Ready(Some(Ok(frame))) => out.extend(frame.into_data().ok()),
            Poll::Ready(None) => break,
            Poll::Ready(Some(Err(error))) => panic!("{error}"),
            Poll::Pending => panic!("upstream frames are all ready"),
        }
    }
    (out, blocked.load(Ordering::SeqCst))
}

/// The model text the app's SSE parser reads from `bytes`, and whether the
/// last two events are the policy error and `[DONE]`.
fn app_text(bytes: &[u8]) -> (String, bool) {
    let events = client_events(bytes);
    let mut text = String::new();
    for event in &events {
        let Ok(value) = serde_json::from_str::<Value>(event) else {
            continue;
        };
        if let Some(t) = value
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            text.push_str(t);
        }
        if let Some(t) = value.get("delta").and_then(Value::as_str) {
            text.push_str(t);
        }
    }
    let cut = events.len() >= 2
        && events[events.len() - 1] == "[DONE]"
        && serde_json::from_str::<Value>(&events[events.len() - 2])
            .is_ok_and(|v| v["error"]["code"] == "policy_violation");
    (text, cut)
}

/// `text` split at the given byte offsets (snapped to char boundaries).
fn split_at<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut cuts: Vec<usize> = cuts
        .iter()
        .map(|&c| {
            let mut c = c.min(text.len());
            while !text.is_char_boundary(c) {
                c -= 1;
            }
            c
        })
        .collect();
    cuts.sort_unstable();
    cuts.dedup();
    let mut pieces = Vec::new();
    let mut from = 0;
    for c in cuts {
        if c > from {
            pieces.push(&text[from..c]);
            from = c;
        }
    }
    pieces.push(&text[from..]);
    pieces
}

fn in_prose(entity: &str) -> String {
    format!("Sure, here it is: {entity}. Let me know what else you need.")
}

fn assert_never_whole(kind: &str, entity: &str, api: Api, pieces: &[&str]) {
    let (out, blocked) = guard_frames(upstream_frames(api, pieces));
    let (text, cut) = app_text(&out.concat());
    assert!(blocked && cut, "{kind} {api:?} not cut: {pieces:?}");
    assert!(
        !text.contains(entity),
        "{kind} {api:?} reached the app whole: {pieces:?}"
    );
}

#[test]
fn every_entity_split_in_two_anywhere_never_reaches_the_app_whole() {
    for (kind, entity) in ENTITIES {
        let prose = in_prose(entity);
        for at in 0..=prose.len() {
            if !prose.is_char_boundary(at) {
                continue;
            }
            let pieces = split_at(&prose, &[at]);
            assert_never_whole(kind, entity, Api::Chat, &pieces);
        }
    }
}

#[test]
fn the_card_split_of_the_report_never_reaches_the_app() {
    let pieces = [
        "Your card: ",
        "5555 55",
        "55 55",
        "55 4444",
        ". ",
        "more text",
    ];
    for api in [Api::Chat, Api::Responses] {
        let (out, _) = guard_frames(upstream_frames(api, &pieces));
        let (text, cut) = app_text(&out.concat());
        assert!(cut);
        assert_eq!(text, "Your card: ");
    }
}

/// Words, numbers and punctuation as a model writes them, none of them an
/// entity.
fn prose_token() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(vec![
            " the", " card", " number", " is", " Hello", " world", ",", ".", " and",
            " version", " API", " e.g.", " end.", "\n\n", " (see", " below)", ":", " -",
            " sk", " ask", " Bearer", " token", " ok?", " it's", " 100%", " at",
        ]).prop_map(str::to_owned),
        1 => (0u32..100_000).prop_map(|n| format!(" {n}")),
        1 => (0u32..10, 0u32..100).prop_map(|(a, b)| format!(" {a}.{b}")),
        1 => (1990u32..2030, 1u32..13).prop_map(|(y, m)| format!(" {y}-{m:02}")),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn every_entity_split_in_several_pieces_never_reaches_the_app_whole(
        which in 0..ENTITIES.len(),
        cuts in prop::collection::vec(0usize..200, 1..8),
        responses in any::<bool>(),
    ) {
        let (kind, entity) = ENTITIES[which];
        let prose = in_prose(entity);
        let pieces = split_at(&prose, &cuts);
        let api = if responses { Api::Responses } else { Api::Chat };
        assert_never_whole(kind, entity, api, &pieces);
    }

    #[test]
    fn clean_prose_arrives_byte_identical_frame_for_frame(
        tokens in prop::collection::vec(prose_token(), 1..60),
        responses in any::<bool>(),
    ) {
        let text: String = tokens.concat();
        let mut scanner = StreamScanner::new(all_detectors(), Direction::Response);
        prop_assume!(scanner.feed(&text).is_none() && scanner.finish().is_none());
        let pieces: Vec<&str> = tokens.iter().map(String::as_str).collect();
        let api = if responses { Api::Responses } else { Api::Chat };
        let upstream = upstream_frames(api, &pieces);
        let (out, blocked) = guard_frames(upstream.clone());
        prop_assert!(!blocked);
        prop_assert_eq!(out.concat(), upstream.concat());
        prop_assert_eq!(out.len(), upstream.len());
    }
}

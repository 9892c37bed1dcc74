use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::{json, Value};

use crate::capture::json_view::JsonView;

use super::corpus::{generate, Sample, TYPES};
use super::*;

fn def(name: &str, detectors: &[&str], action: &str, direction: &str) -> PolicyDef {
    PolicyDef {
        name: Some(name.into()),
        detectors: detectors.iter().map(|d| (*d).to_owned()).collect(),
        action: Some(action.into()),
        direction: Some(direction.into()),
        ..PolicyDef::default()
    }
}

fn all_detectors(action: &str) -> PolicySet {
    PolicySet::compile(&[def("all", &builtin::names(), action, "both")]).unwrap()
}

#[test]
fn every_builtin_compiles_and_every_pack_loads() {
    assert_eq!(builtin::names().len(), 17);
    for name in PACK_NAMES {
        let defs = load_pack(name).unwrap();
        PolicySet::compile(&defs).unwrap();
    }
    let err = load_pack("no-such-pack").unwrap_err();
    assert_eq!(err.key, "policy_packs");
    assert!(err.message.contains("pci, pii-basic, secrets"), "{err}");
}

#[test]
fn a_pack_loads_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mine.toml");
    std::fs::write(
        &path,
        "[[policies]]\nname = \"codes\"\npatterns = ['PRJ-[0-9]{4}']\naction = \"redact\"\n",
    )
    .unwrap();
    let defs = load_pack(path.to_str().unwrap()).unwrap();
    assert_eq!(defs[0].name.as_deref(), Some("codes"));
    std::fs::write(&path, "[[policies]]\nname = \"x\"\nacton = \"log\"\n").unwrap();
    let err = load_pack(path.to_str().unwrap()).unwrap_err();
    assert!(err.message.contains("acton"), "{err}");
}

#[test]
fn compile_reports_every_mistake_with_its_key() {
    let defs: Vec<PolicyDef> = toml::from_str::<BTreeMap<String, Vec<PolicyDef>>>(
        r#"
        [[policies]]
        name = "a"
        detectors = ["credit_card", "passport"]
        patterns = ["ok", "("]
        action = "shout"
        severity = "urgent"

        [[policies]]
        name = "a"
        direction = "sideways"

        [[policies]]
        name = "b"
        keywords = ["fine", " "]
        redact_upstream = true
        "#,
    )
    .unwrap()
    .remove("policies")
    .unwrap();
    let errors = PolicySet::compile(&defs).unwrap_err();
    let keys: Vec<&str> = errors.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "policies[0].detectors",
            "policies[0].action",
            "policies[0].severity",
            "policies[0].patterns[1]",
            "policies[1].direction",
            "policies[1].detectors",
            "policies[1].name",
            "policies[2].redact_upstream",
            "policies[2].keywords[1]",
        ],
        "{errors:#?}"
    );
    assert!(errors[0].message.contains("\"passport\""));
    assert!(errors[0]
        .message
        .contains("valid: anthropic_key, aws_access_key"));
    assert!(
        errors[3].message.contains("unclosed group"),
        "{}",
        errors[3]
    );
    assert!(errors[6].message.contains("duplicate"));
    // Unknown keys are refused when parsing.
    assert!(toml::from_str::<PolicyDef>("name = \"x\"\nseverity = \"low\"\nactions = []").is_err());
    let err = PolicySet::compile(&[PolicyDef {
        name: Some("empty".into()),
        patterns: vec!["a*".into()],
        ..PolicyDef::default()
    }])
    .unwrap_err();
    assert!(err[0].message.contains("empty string"));
}

#[test]
fn severity_any_case_and_levels() {
    let mut d = def("p", &["email"], "BLOCK", "Request");
    d.severity = Some("critical".into());
    let set = PolicySet::compile(&[d]).unwrap();
    let p = &set.policies()[0];
    assert_eq!(
        (p.action(), p.applies_to(), p.severity()),
        (Action::Block, AppliesTo::Request, Severity::Critical)
    );
    assert_eq!(event_level(Severity::Low), Level::Warning);
    assert_eq!(event_level(Severity::Medium), Level::Warning);
    assert_eq!(event_level(Severity::High), Level::Error);
    assert_eq!(event_level(Severity::Critical), Level::Critical);
}

#[test]
fn scans_every_string_and_key_but_inline_data() {
    let set = all_detectors("log");
    let card = "4111 1111 1111 1111";
    let body = json!({
        "model": "gpt-4o",
        "user": "anna.smith@example.com",
        "metadata": {"ip": "10.1.2.3"},
        "messages": [
            {"role": "system", "content": "You help."},
            {"role": "user", "content": [
                {"type": "text", "text": format!("my card is {card}")},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,NDExMTExMTExMTExMTExMQ=="}},
            ]},
            {"role": "assistant", "tool_calls": [{"id": "call_4111111111111111", "type": "function",
              "function": {"name": "pay", "arguments": "{\"email\":\"bob@example.com\"}"}}]},
        ],
        "4111111111111111": "a key is scanned too",
    });
    let scan = set.scan_request(&body);
    let v = &scan.verdicts[0];
    // The text's card and email, the `user` email, the metadata address and
    // the card used as a key; not the id glued to digits, nor base64.
    assert_eq!(
        v.findings,
        BTreeMap::from([("CREDIT_CARD", 2), ("EMAIL", 2), ("IP_ADDRESS", 1)])
    );
    assert!(!v.passed);
    assert_eq!(v.direction, Direction::Request);
    // Responses API, legacy prompt, embeddings.
    for body in [
        json!({"input": [{"role": "user", "content": [{"type": "input_text", "text": card}]}], "instructions": "x"}),
        json!({"input": card}),
        json!({"input": ["hello", card]}),
        json!({"prompt": card}),
        json!({"output": [{"type": "message", "content": [{"type": "output_text", "text": card}]}]}),
        json!({"choices": [{"message": {"content": card}}]}),
        json!({"choices": [{"delta": {"content": card}}]}),
    ] {
        assert_eq!(
            set.scan_response(&body).verdicts[0]
                .findings
                .get("CREDIT_CARD"),
            Some(&1),
            "{body}"
        );
    }
    // Base64 payloads are not searched; the same field with readable text
    // is.
    let payload = "NDExMSAxMTExIDExMTEgMTExMQ".repeat(4);
    for body in [
        json!({"data": [{"b64_json": payload}]}),
        json!({"data": [{"embedding": [0.1], "index": 0}]}),
        json!({"messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": payload}}]}]}),
    ] {
        assert!(set.scan_response(&body).passed(), "{body}");
    }
    assert!(!set
        .scan_response(&json!({"data": [{"b64_json": card}]}))
        .passed());
}

#[test]
fn direction_picks_the_policies() {
    let set = PolicySet::compile(&[
        def("in", &["email"], "block", "request"),
        def("out", &["email"], "log", "response"),
        def("both", &["phone"], "redact", "both"),
    ])
    .unwrap();
    let names = |s: Scan| {
        s.verdicts
            .into_iter()
            .map(|v| v.policy_name)
            .collect::<Vec<_>>()
    };
    let body = json!({"input": "mail anna@example.com"});
    assert_eq!(names(set.scan_request(&body)), ["in", "both"]);
    assert_eq!(names(set.scan_response(&body)), ["out", "both"]);
    let scan = set.scan_request(&body);
    assert_eq!(scan.blocking().map(|v| v.policy_name.as_str()), Some("in"));
    assert!(set.scan_response(&body).blocking().is_none());
    assert!(set.blocks(Direction::Request) && !set.blocks(Direction::Response));
}

#[test]
fn stored_copies_lose_secrets_and_policy_matches_everywhere() {
    let set =
        PolicySet::compile(&[def("pii", &["email", "credit_card"], "redact", "request")]).unwrap();
    let mut body = json!({
        "user": "anna@example.com",
        "note": "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "messages": [{"role": "user", "content": "card 4111-1111-1111-1111, mail anna@example.com"}],
    });
    let inspection = set.inspect(&mut body, Direction::Request);
    assert_eq!(inspection.redacted, 3);
    assert_eq!(
        body,
        json!({
            "user": "[REDACTED:EMAIL]",
            "note": "[REDACTED:GITHUB_TOKEN]",
            "messages": [{"role": "user", "content": "card [REDACTED:CREDIT_CARD], mail [REDACTED:EMAIL]"}],
        })
    );
    assert_eq!(
        inspection.scan.verdicts[0].findings,
        BTreeMap::from([("CREDIT_CARD", 1), ("EMAIL", 2)])
    );
    // The same policy does not touch responses, secrets still go.
    let mut resp = json!({"choices": [{"message": {"content": "anna@example.com sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12"}}]});
    assert_eq!(set.redact_value_in_place(&mut resp, Direction::Response), 1);
    assert_eq!(
        resp["choices"][0]["message"]["content"],
        "anna@example.com [REDACTED:OPENAI_KEY]"
    );
}

#[test]
fn a_clean_text_scan_lets_the_stored_copy_skip_only_the_text() {
    let set = PolicySet::compile(&[
        def("pii-in", &["email"], "block", "request"),
        def("cards-out", &["credit_card"], "redact", "response"),
    ])
    .unwrap();
    let clean = json!({
        "user": "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        "messages": [{"role": "user", "content": "nothing to see"}],
    });
    let (scan, text_clean) = set.scan_counting(&clean, Direction::Request);
    assert!(text_clean && scan.verdicts.iter().all(|v| v.passed));
    let (mut known, mut full) = (clean.clone(), clean.clone());
    let skipped = set.inspect_after_scan(&mut known, Direction::Request, true);
    assert_eq!(skipped, set.inspect(&mut full, Direction::Request));
    assert_eq!(known, full);
    assert_eq!(
        known["user"], "[REDACTED:GITHUB_TOKEN]",
        "secrets outside the text still go"
    );

    // A match of a pattern no request policy reports (a response policy's
    // card, or a secret) still makes the text unclean.
    for text in [
        "card 4111-1111-1111-1111",
        "key sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12",
    ] {
        let body = json!({"messages": [{"role": "user", "content": text}]});
        let (scan, text_clean) = set.scan_counting(&body, Direction::Request);
        assert!(scan.verdicts.iter().all(|v| v.passed), "{text}");
        assert!(!text_clean, "{text}");
    }
}

#[test]
fn the_request_gate_blocks_exactly_as_the_full_scan() {
    // Block policies on a few detectors among many others, a custom
    // pattern, and a secret (`bearer_token`) that a higher-ranked one
    // (`openai_key`) hides: the gate must keep that ranking.
    let mut custom = def("ticket-block", &[], "block", "request");
    custom.patterns = vec![r"TICKET-[0-9]{4}".into()];
    let set = PolicySet::compile(&[
        def("bearer-block", &["bearer_token"], "block", "both"),
        def("cards-block", &["credit_card"], "block", "request"),
        def(
            "contacts-log",
            &["email", "phone", "ip_address"],
            "log",
            "both",
        ),
        def("ibans-out", &["iban"], "block", "response"),
        custom,
    ])
    .unwrap();
    let gate = set.request_gate.as_ref().unwrap();
    assert!(
        !gate.complete,
        "email, phone and ip stay off the request path"
    );
    let kinds: Vec<&str> = gate.matcher.entries().iter().map(|e| e.kind).collect();
    assert!(
        kinds.contains(&"OPENAI_KEY") && kinds.contains(&"IBAN"),
        "{kinds:?}"
    );
    assert!(
        !kinds.contains(&"EMAIL") && !kinds.contains(&"PHONE"),
        "{kinds:?}"
    );

    let mut texts: Vec<String> = generate(0x6A7E, 20).into_iter().map(|s| s.text).collect();
    texts.extend(
        [
            "Authorization: Bearer sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12",
            "Authorization: Bearer abc.def-123_456~xyz",
            "see TICKET-1234, mail a@example.com",
            "DE89 3704 0044 0532 0130 00 then 4111 1111 1111 1111",
            "nothing at all",
        ]
        .map(str::to_owned),
    );
    let mut blocked = 0;
    for text in &texts {
        let body = json!({"model": "m", "messages": [{"role": "user", "content": text}]});
        let full = set.scan_request(&body);
        let gated = set.gate_request(&body);
        assert_eq!(gated.blocking.as_ref(), full.blocking(), "{text}");
        assert!(
            !gated.text_clean,
            "an incomplete gate knows nothing of the rest: {text}"
        );
        blocked += usize::from(gated.blocking.is_some());
    }
    assert!(
        blocked > 20 && blocked < texts.len(),
        "{blocked} of {}",
        texts.len()
    );
}

#[test]
fn a_complete_request_gate_says_when_the_text_is_clean() {
    let set = PolicySet::compile(&[def("all", &builtin::names(), "block", "request")]).unwrap();
    assert!(set.request_gate.as_ref().unwrap().complete);
    for (text, clean) in [("nothing to see", true), ("mail a@example.com", false)] {
        let body = json!({"messages": [{"role": "user", "content": text}]});
        let gated = set.gate_request(&body);
        assert_eq!(gated.text_clean, clean, "{text}");
        assert_eq!(
            gated.text_clean,
            set.scan_counting(&body, Direction::Request).1
        );
        assert_eq!(gated.blocking.is_some(), !clean, "{text}");
    }

    // Without a request `block` policy the request path searches nothing.
    let set = PolicySet::compile(&[def("all", &builtin::names(), "block", "response")]).unwrap();
    assert!(set.request_gate.is_none());
    let body = json!({"messages": [{"role": "user", "content": "mail a@example.com"}]});
    let gated = set.gate_request(&body);
    assert!(gated.blocking.is_none() && !gated.text_clean);
}

#[test]
fn the_upstream_body_is_redacted_only_when_asked() {
    let mut d = def("emails", &["email"], "redact", "request");
    let body = br#"{"model":"m","user":"a@example.com","messages":[{"role":"user","content":"hi a@example.com"}]}"#;
    let set = PolicySet::compile(std::slice::from_ref(&d)).unwrap();
    assert!(!set.redacts_upstream());
    assert!(set.redact_upstream(body).is_none());
    d.redact_upstream = Some(true);
    let set = PolicySet::compile(&[d]).unwrap();
    let out = set.redact_upstream(body).unwrap();
    assert_eq!(out.replaced, 2);
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["messages"][0]["content"], "hi [REDACTED:EMAIL]");
    assert_eq!(v["user"], "[REDACTED:EMAIL]");
    assert!(set.redact_upstream(b"{\"messages\":[]}").is_none());
    assert!(set.redact_upstream(b"not json a@example.com").is_none());
}

#[test]
fn patterns_and_keywords() {
    let set = PolicySet::compile(&[
        PolicyDef {
            name: Some("codes".into()),
            patterns: vec![r"PRJ-[0-9]{4}".into()],
            keywords: vec!["Project Falcon".into(), "sk".into(), "c++".into()],
            action: Some("redact".into()),
            ..PolicyDef::default()
        },
        PolicyDef {
            name: Some("loose".into()),
            keywords: vec!["sk".into()],
            whole_word: Some(false),
            ..PolicyDef::default()
        },
    ])
    .unwrap();
    let mut body = json!({"input": "project falcon is PRJ-1234; sketch it in C++ (sk)"});
    let i = set.inspect(&mut body, Direction::Request);
    assert_eq!(
        body["input"],
        "[REDACTED:KEYWORD] is [REDACTED:CUSTOM_PATTERN]; sketch it in [REDACTED:KEYWORD] ([REDACTED:KEYWORD])"
    );
    assert_eq!(
        i.scan.verdicts[0].findings,
        BTreeMap::from([("CUSTOM_PATTERN", 1), ("KEYWORD", 3)])
    );
    assert_eq!(
        i.scan.verdicts[1].findings,
        BTreeMap::from([("KEYWORD", 2)])
    );
}

#[test]
fn events_carry_counts_never_values() {
    let set = PolicySet::compile(&[{
        let mut d = def("pci", &["credit_card"], "block", "both");
        d.severity = Some("high".into());
        d
    }])
    .unwrap();
    let card = "4111111111111111";
    let scan = set.scan_request(&json!({"input": format!("{card} and 5500 0000 0000 0004")}));
    let event = compliance_event(&scan.verdicts[0], "req-1");
    assert_eq!(event.event_type, EventType::ComplianceViolation);
    assert_eq!(event.level, Level::Error);
    assert_eq!(event.request_id.as_deref(), Some("req-1"));
    assert_eq!(
        event.metadata,
        json!({"policy_name": "pci", "result": false, "severity": "HIGH", "action": "block",
               "direction": "request", "findings": [{"entity_type": "CREDIT_CARD", "count": 2}]})
        .into()
    );
    assert!(!event.message.contains(card));
    assert!(scan.verdicts[0].block_message().contains("\"pci\""));
    let ok = compliance_events(&set.scan_response(&json!({"output_text": "fine"})), "req-2");
    assert_eq!(ok[0].event_type, EventType::ComplianceCheck);
    assert_eq!(ok[0].level, Level::Info);
    assert_eq!(ok[0].metadata.field("result"), true);
    assert_eq!(ok[0].metadata.field("findings"), json!([]));
}

#[test]
fn a_card_split_over_three_chunks_is_caught_when_complete() {
    let set = Arc::new(PolicySet::compile(&load_pack("pci").unwrap()).unwrap());
    let mut s = StreamScanner::new(set.clone(), Direction::Response);
    assert!(s.feed("Sure, the card is 4111 11").is_none());
    assert!(s.feed("11 1111 ").is_none());
    // Still open at the end: more digits could follow.
    assert!(s.feed("1111").is_none());
    let v = s.feed(". Anything else?").unwrap();
    assert_eq!(v.policy_name, "pci-card-block");
    assert_eq!(v.findings, BTreeMap::from([("CREDIT_CARD", 1)]));
    assert!(
        s.feed("more 4111 1111 1111 1111 ").is_none(),
        "reported once"
    );
    // At the very end of the stream.
    let mut s = StreamScanner::new(set.clone(), Direction::Response);
    assert!(s.feed("4111111111").is_none());
    assert!(s.feed("111111").is_none());
    assert!(s.finish().is_some());
    // An order number whose prefix passes Luhn is not cut short.
    let mut s = StreamScanner::new(set.clone(), Direction::Response);
    assert!(s.feed("order 4111111111111").is_none());
    assert!(s.feed("1112 shipped").is_none());
    assert!(s.finish().is_none());
}

#[test]
fn the_stream_window_stays_bounded() {
    let set = Arc::new(all_detectors("block"));
    let mut s = StreamScanner::new(set, Direction::Response);
    for _ in 0..10_000 {
        assert!(s.feed("lorem ipsum dolor sit amet ").is_none());
        assert!(s.held() <= stream::MAX_WINDOW);
    }
    // One endless token.
    for _ in 0..10_000 {
        s.feed("abcdefghij");
        assert!(s.held() <= stream::MAX_WINDOW + 10);
    }
}

/// The entity types `text` is redacted as, by every built-in detector.
fn redacted(set: &PolicySet, text: &str) -> String {
    let mut hits = Vec::new();
    set.matcher.find(text, &mut hits);
    set.matcher.redact(text, &hits, |_| true).0.into_owned()
}

#[test]
fn the_most_specific_type_names_a_span() {
    let set = all_detectors("redact");
    let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
    for (text, want) in [
        (
            format!("Authorization: Bearer {jwt}"),
            "Authorization: Bearer [REDACTED:JWT]",
        ),
        (format!("bearer {jwt}"), "bearer [REDACTED:JWT]"),
        (
            "Authorization: Bearer sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12".into(),
            "Authorization: Bearer [REDACTED:OPENAI_KEY]",
        ),
        (
            "Bearer ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789".into(),
            "Bearer [REDACTED:GITHUB_TOKEN]",
        ),
        (
            "Bearer sk_live_4eC39HqLyjWDarjtT1zdp7dc".into(),
            "Bearer [REDACTED:STRIPE_KEY]",
        ),
        (
            "Bearer xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx".into(),
            "Bearer [REDACTED:SLACK_TOKEN]",
        ),
        (
            "Bearer AIzaSyA1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q".into(),
            "Bearer [REDACTED:GOOGLE_API_KEY]",
        ),
        (
            "Bearer AKIA2E0A8F3B244C9986".into(),
            "Bearer [REDACTED:AWS_ACCESS_KEY]",
        ),
        (
            format!("Bearer sk-ant-api03-{}", "Ab1".repeat(10)),
            "Bearer [REDACTED:ANTHROPIC_KEY]",
        ),
        // A JWT-shaped token whose header has no `alg` is only a bearer token.
        (
            "Bearer eyJ0eXAiOiJKV1QifQ.eyJzdWIiOiIxIn0.c2lnbmF0dXJl".into(),
            "Bearer [REDACTED:BEARER_TOKEN]",
        ),
        (
            "Bearer Ab12Cd34Ef56Gh78Ij90".into(),
            "Bearer [REDACTED:BEARER_TOKEN]",
        ),
    ] {
        assert_eq!(redacted(&set, &text), want, "{text}");
    }
}

#[test]
fn placeholders_are_left_alone_by_every_secret_detector() {
    let set = all_detectors("redact");
    for text in [
        "export OPENAI_API_KEY=sk-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "OPENAI_API_KEY=sk-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "openai.api_key = \"sk-proj-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX\"",
        "ANTHROPIC_API_KEY=sk-ant-api03-XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "aws_access_key_id = AKIAXXXXXXXXXXXXXXXX",
        "aws_access_key_id = AKIAREDACTEDREDACTED",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYREDACTED00",
        "GITHUB_TOKEN=ghp_XXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "SLACK_BOT_TOKEN=xoxb-your-bot-token-here",
        "slack: xoxb-XXXXXXXXXXXX-XXXXXXXXXXXXX-XXXXXXXXXXXXXXXXXXXXXXXX",
        "slack: xoxp-000000000000-000000000000-000000000000-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
        "STRIPE_SECRET_KEY=sk_live_xxxxxxxxxxxxxxxxxxxxxxxx",
        "GOOGLE_API_KEY=AIzaXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "curl -H \"Authorization: Bearer $API_TOKEN\" https://api.example.com",
        "curl -H \"Authorization: Bearer ${GITHUB_TOKEN}\"",
        "Authorization: Bearer <your-token>",
        "Authorization: Bearer <API_KEY>",
        "set Authorization to Bearer %TOKEN%",
        "Authorization: Bearer sk-...",
        "Authorization: Bearer sk-proj-........................",
        "Authorization: Bearer ****************************",
        "Authorization: Bearer your-access-token.here",
        "token: eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.xxxxxxxxxxxxxxxx.xxxxxxxxxxxxxxxx",
        "-----BEGIN PRIVATE KEY-----\n...\n-----END PRIVATE KEY-----",
    ] {
        assert_eq!(redacted(&set, text), text, "{text}");
    }
}

/// Precision and recall per entity type over the corpus in prose, in JSON
/// request bodies and split across stream chunks.
#[test]
fn corpus_precision_and_recall() {
    let samples = generate(0x5EED_2024, 200);
    let set = Arc::new(all_detectors("block"));
    let mut tally: BTreeMap<&str, (u64, u64, u64)> =
        TYPES.iter().map(|t| (*t, (0, 0, 0))).collect();
    let mut misses: Vec<String> = Vec::new();
    let mut rng = corpus::Rng::new(7);
    for sample in &samples {
        let found = [
            prose_kinds(&set, sample),
            json_kinds(&set, sample),
            stream_kinds(&set, sample, &mut rng),
        ];
        for kinds in found {
            score(sample, &kinds, &mut tally, &mut misses);
        }
    }
    println!("\n| entity type | TP | FP | FN | precision | recall |");
    println!("|---|---:|---:|---:|---:|---:|");
    let mut failed = Vec::new();
    for (ty, (tp, fp, fn_)) in &tally {
        let precision = *tp as f64 / (*tp + *fp).max(1) as f64;
        let recall = *tp as f64 / (*tp + *fn_).max(1) as f64;
        println!("| {ty} | {tp} | {fp} | {fn_} | {precision:.3} | {recall:.3} |");
        if precision < 0.98 || recall < 0.99 {
            failed.push(*ty);
        }
    }
    for m in misses.iter().take(40) {
        println!("{m}");
    }
    assert!(failed.is_empty(), "below target: {failed:?}");
}

/// Entity types found in the sample's text, with whether they cover the
/// planted value.
fn prose_kinds(set: &PolicySet, sample: &Sample) -> Vec<(String, bool)> {
    let mut hits = Vec::new();
    set.matcher.find(&sample.text, &mut hits);
    hits.iter()
        .map(|h| {
            let kind = set.matcher.entries()[h.entry].kind.to_owned();
            (kind, h.start < sample.span.end && sample.span.start < h.end)
        })
        .collect()
}

fn json_kinds(set: &PolicySet, sample: &Sample) -> Vec<(String, bool)> {
    let body = json!({"model": "gpt-4o", "messages": [{"role": "user", "content": sample.text}]});
    let raw = serde_json::to_vec(&body).unwrap();
    let body: Value = serde_json::from_slice(&raw).unwrap();
    let mut out = Vec::new();
    for (kind, n) in &set.scan_request(&body).verdicts[0].findings {
        for _ in 0..*n {
            out.push(((*kind).to_owned(), true));
        }
    }
    out
}

fn stream_kinds(
    set: &Arc<PolicySet>,
    sample: &Sample,
    rng: &mut corpus::Rng,
) -> Vec<(String, bool)> {
    // Two cuts inside the planted value when it is long enough, so it
    // arrives in three pieces.
    let text = &sample.text;
    let mut cuts = vec![
        sample.span.start + rng.below(sample.span.len().max(1)),
        sample.span.start + rng.below(sample.span.len().max(1)),
    ];
    cuts.sort_unstable();
    let mut s = StreamScanner::new(set.clone(), Direction::Request);
    let mut last = 0;
    let mut verdict = None;
    for cut in cuts.into_iter().chain([text.len()]) {
        let mut cut = cut.max(last);
        while !text.is_char_boundary(cut) {
            cut += 1;
        }
        verdict = verdict.or_else(|| s.feed(&text[last..cut]));
        last = cut;
    }
    let verdict = verdict.or_else(|| s.finish());
    let mut out = Vec::new();
    if let Some(v) = verdict {
        for (kind, n) in &v.findings {
            for _ in 0..*n {
                out.push(((*kind).to_owned(), true));
            }
        }
    }
    out
}

fn score(
    sample: &Sample,
    kinds: &[(String, bool)],
    tally: &mut BTreeMap<&str, (u64, u64, u64)>,
    misses: &mut Vec<String>,
) {
    let label = sample.label.map(str::to_ascii_uppercase);
    let mut found_label = false;
    for (kind, covers) in kinds {
        let ty = kind.to_ascii_lowercase();
        let Some(entry) = tally.get_mut(ty.as_str()) else {
            continue;
        };
        if Some(kind) == label.as_ref() && *covers && !found_label {
            found_label = true;
            entry.0 += 1;
        } else {
            entry.1 += 1;
            misses.push(format!("FP {kind} in {:?} ({})", sample.text, sample.of));
        }
    }
    if let Some(label) = sample.label {
        if !found_label {
            if let Some(entry) = tally.get_mut(label) {
                entry.2 += 1;
            }
            misses.push(format!("FN {label} in {:?}", sample.text));
        }
    }
}

#[test]
fn a_request_searched_once_is_recorded_as_one_searched_twice() {
    let mut defs = load_pack("pii-basic").unwrap();
    defs.extend(load_pack("secrets").unwrap());
    let packs = PolicySet::compile(&defs).unwrap();
    let sets = [packs, all_detectors("redact"), all_detectors("block")];
    let mut bodies: Vec<serde_json::Value> = generate(0x5CA1, 40)
        .into_iter()
        .map(|s| json!({"model": "m", "messages": [{"role": "user", "content": s.text}]}))
        .collect();
    bodies.extend([
        // A phone number over two messages: found across the seam.
        json!({"messages": [{"role": "user", "content": "call +1 415"},
                            {"role": "user", "content": "555 0100 now"}]}),
        // A secret outside the text, and PII in a field.
        json!({"model": "m", "user": "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
               "metadata": {"email": "jane.doe@example.com"},
               "messages": [{"role": "user", "content": "hello"}]}),
        // A secret as an object key: renamed, so searched again.
        json!({"metadata": {"sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56": "x",
                            "note": "mail a@example.com"}}),
        json!({"messages": [{"role": "user", "content": "nothing at all"}]}),
        json!("a bare string with a@example.com"),
    ]);
    let mut found = 0;
    for set in &sets {
        for body in &bodies {
            let (verdict, findings) = set.gate_request_for_record(body);
            assert_eq!(verdict.blocking, set.gate_request(body).blocking, "{body}");
            let mut twice = body.clone();
            let expected = set.inspect(&mut twice, Direction::Request);
            let mut once = body.clone();
            let got = set.inspect_found(&mut once, findings);
            assert_eq!(once, twice, "{body}");
            assert_eq!(got, expected, "{body}");
            found += usize::from(got.redacted > 0);
        }
    }
    assert!(found > 40, "{found} bodies had something to redact");
}

#[test]
fn a_body_read_as_a_view_is_searched_and_stored_as_its_parsed_value() {
    let mut defs = load_pack("pii-basic").unwrap();
    defs.extend(load_pack("secrets").unwrap());
    let packs = PolicySet::compile(&defs).unwrap();
    let sets = [packs, all_detectors("redact"), all_detectors("block")];
    let mut texts: Vec<String> = generate(0x71E3, 30)
        .into_iter()
        .map(|s| {
            // Keys out of order, repeated, escaped: the view orders them as
            // the parsed value does.
            format!(
                r#"{{"stream":true,"model":"m","messages":[{{"role":"user","content":{}}},{{"content":"x","role":"system","content":"ok \u00e9"}}],"user":"u"}}"#,
                serde_json::to_string(&s.text).unwrap()
            )
        })
        .collect();
    texts.extend(
        [
            r#"{"messages":[{"role":"user","content":"call +1 415"},{"role":"user","content":"555 0100 now"}]}"#,
            r#"{"user":"ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789","metadata":{"email":"jane.doe@example.com"},"messages":[{"role":"user","content":"hello"}]}"#,
            r#"{"metadata":{"sk-proj-Ab12Cd34Ef56Gh78Ij90Kl12Mn34Op56":"x","note":"mail a@example.com"}}"#,
            r#"{"input":["mail a@exa\u006dple.com", "ssn 078-05-1120"],"data":"QUJD"}"#,
            r#"{"content":[{"type":"text","text":"my card 4111 1111"},{"type":"text","text":"1111 1111 thanks"}]}"#,
            r#""a bare string with a@example.com""#,
            r#"[1, 2.50, -0, {"b":"jane.doe@example.com","a":"x"}]"#,
        ]
        .map(str::to_owned),
    );
    let mut redacted = 0;
    let mut at_nodes = 0;
    for set in &sets {
        for text in &texts {
            let value: Value = serde_json::from_str(text).unwrap();
            let view = JsonView::parse(text.as_bytes()).unwrap();
            let strings = places::view_strings(&view);
            let plain = places::strings(&value);
            assert_eq!(as_strs(&strings.text), plain.text, "{text}");
            assert_eq!(as_strs(&strings.other), plain.other, "{text}");
            assert_eq!(
                set.gate_request_view(&view),
                set.gate_request(&value),
                "{text}"
            );

            let mut cleaned = value.clone();
            let expected = set.inspect(&mut cleaned, Direction::Request);
            let (verdict, findings) = set.gate_request_view_for_record(&view);
            let (by_value, by_value_findings) = set.gate_request_for_record(&value);
            assert_eq!(verdict, by_value, "{text}");
            assert_eq!(findings.counts, by_value_findings.counts, "{text}");
            // Replaced at the nodes the gate noted, and (without them) in
            // the listed strings: the same stored text either way.
            let mut listed = findings.clone();
            listed.text_nodes.clear();
            listed.other_nodes.clear();
            if !findings.text.is_empty() || !findings.other.is_empty() {
                at_nodes += usize::from(
                    replace_at_nodes(&set.matcher, &view, &findings, &|_| true).is_some(),
                );
            }
            for given in [None, Some(listed), Some(findings)] {
                match set.inspect_view(&view, Direction::Request, false, given) {
                    Some(got) => {
                        assert_eq!(got.scan, expected.scan, "{text}");
                        assert_eq!(view.write(&got.replaced), cleaned.to_string(), "{text}");
                        redacted += usize::from(!got.replaced.is_empty());
                    }
                    // Only a body with a key to rename is left to the value.
                    None => assert!(text.contains("sk-proj-"), "{text}"),
                }
            }
            let response = set.inspect_view(&view, Direction::Response, false, None);
            let mut cleaned = value.clone();
            let expected = set.inspect(&mut cleaned, Direction::Response);
            if let Some(got) = response {
                assert_eq!(got.scan, expected.scan, "{text}");
                assert_eq!(view.write(&got.replaced), cleaned.to_string(), "{text}");
            }
        }
    }
    assert!(redacted > 60, "{redacted} bodies had something to redact");
    assert!(at_nodes > 60, "{at_nodes} bodies replaced at their nodes");
}

#[test]
fn a_violation_message_names_the_policy_side_findings_and_action() {
    let verdict = |findings: &[(&'static str, u64)], direction, action| Verdict {
        policy_name: "pii-contact-redact".into(),
        action,
        severity: Severity::High,
        direction,
        passed: findings.is_empty(),
        findings: findings.iter().copied().collect::<BTreeMap<_, _>>(),
    };
    for (findings, direction, action) in [
        (&[("EMAIL", 1)][..], Direction::Request, Action::Redact),
        (
            &[("PHONE", 2), ("EMAIL", 1), ("IP_ADDRESS", u64::MAX)][..],
            Direction::Response,
            Action::Block,
        ),
        (&[][..], Direction::Request, Action::Log),
    ] {
        let v = verdict(findings, direction, action);
        assert_eq!(
            violation_message(&v),
            format!(
                "Policy {} violated in the {}: {} ({}).",
                v.policy_name,
                v.direction,
                v.summary(),
                v.action
            )
        );
    }
    let v = verdict(
        &[("PHONE", 2), ("EMAIL", 1)],
        Direction::Request,
        Action::Redact,
    );
    assert_eq!(
        compliance_event(&v, "req-1").message,
        "Policy pii-contact-redact violated in the request: EMAIL x1, PHONE x2 (redact)."
    );
}

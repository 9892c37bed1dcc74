//! What recording one body costs: read, searched and cleaned by the
//! policies, written as stored JSON; through a parsed `Value` (the old
//! record path) and through a view of the raw text. Bodies are those of
//! the overhead benchmark (`bench/run.sh`): its 1 KB chat request with a
//! little PII, the mock's completion, and the mock's streamed answer (20
//! content chunks, a usage chunk, `[DONE]`), folded into a value or into
//! JSON text. Prints µs per body. Run with `cargo bench --bench
//! body_record`.

#![expect(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall time with std's clock; no tokio runtime here"
)]
#![expect(clippy::print_stdout, reason = "the benchmark's report")]
#![expect(
    clippy::unwrap_used,
    reason = "a failed setup should stop the benchmark"
)]

use std::hint::black_box;
use std::time::Instant;

use llm_audit_proxy::capture::json_view::JsonView;
use llm_audit_proxy::capture::sse;
use llm_audit_proxy::capture::stored_body::StoredBody;
use llm_audit_proxy::capture::summary::{summarize_usage, Cleaned};
use llm_audit_proxy::policy::{load_pack, Direction, PolicySet};
use serde_json::Value;

#[path = "support/bodies.rs"]
mod bodies;
use bodies::{REQUEST, RESPONSE};

const ROUNDS: u32 = 20_000;

/// The mock upstream's streamed answer.
fn stream_body() -> String {
    let mut body = String::new();
    for i in 0..20 {
        let role = if i == 0 { r#""role":"assistant","# } else { "" };
        body.push_str(&format!(
            "data: {{\"id\":\"chatcmpl-bench1\",\"object\":\"chat.completion.chunk\",\"created\":1764115200,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{{\"index\":0,\"delta\":{{{role}\"content\":\"word{i} \"}},\"finish_reason\":null}}]}}\n\n"
        ));
    }
    body.push_str("data: {\"id\":\"chatcmpl-bench1\",\"object\":\"chat.completion.chunk\",\"created\":1764115200,\"model\":\"gpt-4o-mini-2024-07-18\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}],\"usage\":{\"prompt_tokens\":42,\"completion_tokens\":20,\"total_tokens\":62}}\n\ndata: [DONE]\n\n");
    body
}

/// µs per call of `f`: the best of five rounds, as other processes
/// share the cores.
fn measure(f: &dyn Fn() -> usize) -> f64 {
    for _ in 0..ROUNDS / 10 {
        black_box(f());
    }
    (0..5)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..ROUNDS {
                black_box(f());
            }
            start.elapsed().as_secs_f64() * 1e6 / f64::from(ROUNDS)
        })
        .fold(f64::INFINITY, f64::min)
}

/// What the record does with a body's JSON text: read through a view,
/// searched and cleaned, its usage summarised, stored as text. Returns the
/// stored JSON's length.
fn record_view(policies: &PolicySet, json: &[u8], direction: Direction) -> usize {
    let view = JsonView::parse(json).unwrap();
    let inspection = policies
        .inspect_view(&view, direction, false, None)
        .unwrap();
    let summary = summarize_usage(
        "chat.create",
        Cleaned {
            at: view.root(),
            replaced: &[],
        },
    );
    black_box((summary, &inspection.scan));
    let stored = StoredBody::json(view.write(&inspection.replaced));
    serde_json::to_string(&stored).unwrap().len()
}

fn main() {
    let mut defs = load_pack("pii-basic").unwrap();
    defs.extend(load_pack("secrets").unwrap());
    let policies = PolicySet::compile(&defs).unwrap();
    println!("| body | path | µs / body |");
    println!("|---|---|---:|");
    for (name, body, direction) in [
        ("1 KB chat request", REQUEST, Direction::Request),
        ("completion", RESPONSE, Direction::Response),
    ] {
        let by_value = || {
            let mut value: Value = serde_json::from_str(body).unwrap();
            let summary = summarize_usage("chat.create", &value);
            let scan = policies.inspect(&mut value, direction).scan;
            black_box((summary, scan));
            serde_json::to_string(&value).unwrap().len()
        };
        let by_view = || record_view(&policies, body.as_bytes(), direction);
        let parse_value = || serde_json::from_str::<Value>(body).unwrap().is_object() as usize;
        let parse_view = || JsonView::parse(body.as_bytes()).unwrap().root().is_object() as usize;
        let parsed = JsonView::parse(body.as_bytes()).unwrap();
        let search_view = || {
            policies
                .inspect_view(&parsed, direction, false, None)
                .unwrap()
                .replaced
                .len()
        };
        let write_view = || parsed.write(&[]).len();
        assert_eq!(by_value(), by_view());
        for (path, f) in [
            ("Value tree", &by_value as &dyn Fn() -> usize),
            ("view, stored as text", &by_view),
            ("(parse into a Value only)", &parse_value),
            ("(parse into a view only)", &parse_view),
            ("(search a parsed view only)", &search_view),
            ("(write a parsed view only)", &write_view),
        ] {
            let us = measure(f);
            println!("| {name} | {path} | {us:.1} |");
        }
    }

    let name = "20-chunk stream";
    let body = stream_body();
    let by_value = || {
        let events = sse::parse_events(body.as_bytes());
        let mut value = sse::reassemble("chat.create", &events).response;
        let summary = summarize_usage("chat.create", &value);
        let scan = policies.inspect(&mut value, Direction::Response).scan;
        black_box((summary, scan));
        serde_json::to_string(&value).unwrap().len()
    };
    let by_text = || {
        let events = sse::parse_events(body.as_bytes());
        let folded = sse::reassemble_text("chat.create", &events).unwrap();
        record_view(&policies, folded.json.as_bytes(), Direction::Response)
    };
    let fold_value = || {
        let events = sse::parse_events(body.as_bytes());
        sse::reassemble("chat.create", &events).complete as usize
    };
    let fold_text = || {
        let events = sse::parse_events(body.as_bytes());
        sse::reassemble_text("chat.create", &events)
            .unwrap()
            .json
            .len()
    };
    assert_eq!(by_value(), by_text());
    for (path, f) in [
        (
            "folded into a `Value` (the build before)",
            &by_value as &dyn Fn() -> usize,
        ),
        ("folded into JSON text, read through a view", &by_text),
        ("(fold into a `Value` only)", &fold_value),
        ("(fold into JSON text only)", &fold_text),
    ] {
        let us = measure(f);
        println!("| {name} | {path} | {us:.1} |");
    }
}

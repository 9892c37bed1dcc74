//! What the policy scan of one audited call costs, piece by piece, with
//! the `pii-basic` and `secrets` packs: the request body searched on the
//! request path and cleaned from those findings, the answer searched and
//! cleaned, the stored header values and path, and a 2.2 KB text with a
//! few entities. Bodies are those of the overhead benchmark
//! (`bench/run.sh`). Prints µs per call of each piece. Run with `cargo
//! bench --bench policy_scan`.
//!
//! `POLICY_SCAN_ONLY=TEXT` runs only the pieces whose name holds TEXT,
//! and `POLICY_SCAN_RUNS=N` runs each exactly N times after the warm-up:
//! to count allocations per call with uprobes on the allocator (see
//! bench/README.md, "The policy scan").

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
use llm_audit_proxy::policy::{load_pack, Direction, PolicySet};

#[path = "support/bodies.rs"]
mod bodies;
use bodies::{REQUEST, RESPONSE};

/// The header values and path a recorded call of the benchmark stores:
/// the request's (its credential header is never stored) and the answer's.
const REQUEST_TEXTS: &[&str] = &[
    "/v1/chat/completions",
    "127.0.0.1:40123",
    "application/json",
    "1024",
    "3f2b8c1e-6a0d-4f7e-9b5a-2c4d6e8f0a1b",
];
const RESPONSE_TEXTS: &[&str] = &["application/json", "412", "Thu, 03 Dec 2026 15:50:01 GMT"];

/// A 2.2 KB text of prose with a few entities.
fn text_2k() -> String {
    let prose = "Our checkout service (v2.14.3) timed out between 10:42 and 11:05 UTC on \
                 nodes 10.0.3.17 and 10.0.3.18; p99 latency went from 220 ms to 1.8 s. ";
    let mut text = String::new();
    while text.len() < 2000 {
        text.push_str(prose);
    }
    text.push_str(
        "Reach the customer at jane.doe@example.com or +1 415 555 2671; order #88213-4471.",
    );
    text.push_str(" The test card 4111 1111 1111 1111 is in the staging fixtures.");
    text
}

const ROUNDS: u32 = 20_000;

/// µs per call of `f`: the best of five rounds, as other processes
/// share the cores.
fn measure(f: &dyn Fn() -> usize, runs: Option<u32>) -> f64 {
    for _ in 0..ROUNDS / 10 {
        black_box(f());
    }
    if let Some(runs) = runs {
        let start = Instant::now();
        for _ in 0..runs {
            black_box(f());
        }
        return start.elapsed().as_secs_f64() * 1e6 / f64::from(runs.max(1));
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

fn main() {
    let mut defs = load_pack("pii-basic").unwrap();
    defs.extend(load_pack("secrets").unwrap());
    let policies = PolicySet::compile(&defs).unwrap();
    let text = text_2k();

    let request = || {
        let view = JsonView::parse(REQUEST.as_bytes()).unwrap();
        let (verdict, findings) = policies.gate_request_view_for_record(&view);
        let inspection = policies
            .inspect_view(
                &view,
                Direction::Request,
                verdict.text_clean,
                Some(findings),
            )
            .unwrap();
        inspection.replaced.len() + inspection.scan.verdicts.len()
    };
    let response = || {
        let view = JsonView::parse(RESPONSE.as_bytes()).unwrap();
        let inspection = policies
            .inspect_view(&view, Direction::Response, false, None)
            .unwrap();
        inspection.replaced.len() + inspection.scan.verdicts.len()
    };
    let parse_only = || {
        let a = JsonView::parse(REQUEST.as_bytes()).unwrap();
        let b = JsonView::parse(RESPONSE.as_bytes()).unwrap();
        a.len() + b.len()
    };
    let stored_texts = || {
        let mut n = 0;
        for (texts, direction) in [
            (REQUEST_TEXTS, Direction::Request),
            (RESPONSE_TEXTS, Direction::Response),
        ] {
            for t in texts {
                n += policies.redact_stored_text(t, Some(direction)).len();
            }
        }
        n
    };
    let long_text = || {
        policies
            .redact_stored_text(&text, Some(Direction::Request))
            .len()
    };
    let long_scan = || policies.scan_text(&text, Direction::Request).verdicts.len();

    let only = std::env::var("POLICY_SCAN_ONLY").ok();
    let runs: Option<u32> = std::env::var("POLICY_SCAN_RUNS")
        .ok()
        .and_then(|n| n.parse().ok());
    println!("| piece | µs / call |");
    println!("|---|---:|");
    let mut total = 0.0;
    for (name, f, counted) in [
        (
            "parse both bodies (not the scan)",
            &parse_only as &dyn Fn() -> usize,
            false,
        ),
        ("1 KB chat request: gate + clean", &request, true),
        ("completion: search + clean", &response, true),
        (
            "stored header values and path, one by one",
            &stored_texts,
            true,
        ),
        ("2.2 KB text: redact_stored_text", &long_text, false),
        ("2.2 KB text: scan_text", &long_scan, false),
    ] {
        if only.as_deref().is_some_and(|o| !name.contains(o)) {
            continue;
        }
        let us = measure(f, runs);
        if counted {
            total += us;
        }
        println!("| {name} | {us:.2} |");
    }
    if only.is_none() {
        println!("| the call's scan (request, completion, headers) | {total:.2} |");
    }
}

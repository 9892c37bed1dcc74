//! Throughput of the policy scanner with every built-in detector on, over a
//! realistic 8 KB chat request and a 1 MB one. Run with
//! `cargo bench --bench policy_throughput`; prints MB/s per case.

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
use std::time::{Duration, Instant};

use llm_audit_proxy::policy::{builtin, Direction, PolicyDef, PolicySet};
use serde_json::{json, Value};

/// Prose of a support conversation: numbers, dates, versions, code, a few
/// entities, the way real prompts look.
const TURNS: &[&str] = &[
    "Hi! I'm debugging our checkout service (v2.14.3) and the logs from 2024-03-18 show timeouts \
     between 10:42 and 11:05 UTC. The pods run on nodes 10.0.3.17 and 10.0.3.18, and the p99 \
     latency went from 220 ms to 1.8 s. Can you suggest what to look at first?",
    "Sure. Start with the connection pool: with 32 workers and a pool of 10, requests queue. \
     Check `max_connections`, the retry policy (3 retries, 250 ms backoff) and whether the \
     upstream's rate limit of 600 rpm was hit. A flame graph of one slow request helps.",
    "Here is the config:\n```yaml\npool:\n  size: 10\n  timeout_ms: 5000\nretry:\n  attempts: 3\n```\n\
     The customer who reported it is reachable at jane.doe@example.com or +1 415 555 2671, order \
     #88213-4471, invoice INV-2024-000381.",
    "Thanks. Look at `std::sync::Mutex` contention in `PaymentClient::charge`; with Rust 1.85 \
     and tokio 1.44 you can enable `tokio-console` to see tasks waiting. Also compare the \
     HashMap<String, Vec<u8>> cache size between releases 2.13.9 and 2.14.3.",
    "We also store a test card 4111 1111 1111 1111 in the staging fixtures, is that a problem? \
     Our PCI scope document (rev. 7, section 3.4) says no PAN in logs.",
];

/// The same kind of conversation in other scripts and with typographic
/// characters, so the Unicode folding runs on every string.
const TURNS_INTL: &[&str] = &[
    "Bonjour ! Le service de paiement (v2.14.3) répond lentement depuis le 18 mars — délai \
     « p99 » passé de 220 ms à 1,8 s. Où chercher d’abord ? Café, crème, déjà vu…",
    "Привет! Проверьте пул соединений: 32 рабочих потока и пул из 10 — запросы ждут в очереди. \
     Клиент: jane.doe@example.com, телефон +1 415 555 2671, заказ №88213-4471.",
    "了解しました。接続プールのサイズを確認してください。「タイムアウト」は５０００ミリ秒です。\
     顧客のメールは jane.doe@example.com です。請求書番号 INV-2024-000381。",
    "Danke schön – die Größe des Caches hat sich zwischen 2.13.9 und 2.14.3 verdoppelt. \
     Testkarte 4111 1111 1111 1111 liegt in den Staging-Daten; ist das ein Problem?",
    "हाँ, लॉग में कोई PAN नहीं होना चाहिए। संशोधन ७, अनुभाग ३.४ देखें। Ελέγξτε επίσης τα αρχεία.",
];

fn chat_body_from(turns: &[&str], target_bytes: usize) -> Value {
    let mut messages =
        vec![json!({"role": "system", "content": "You are a senior SRE assistant. Be concise."})];
    let mut size = 0;
    let mut i = 0;
    while size < target_bytes {
        let text = turns[i % turns.len()];
        let role = if i % 2 == 0 { "user" } else { "assistant" };
        messages.push(json!({"role": role, "content": text}));
        size += text.len() + 40;
        i += 1;
    }
    json!({"model": "gpt-4o-mini", "temperature": 0.2, "stream": true, "messages": messages})
}

fn text_bytes(body: &Value) -> usize {
    body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap().len())
        .sum()
}

/// `POLICY_BENCH_RUNS=N` runs each case exactly N times instead of for a
/// time, and `POLICY_BENCH_ONLY=TEXT` only the cases whose name holds
/// TEXT: for instruction counts under callgrind, which do not depend on how
/// busy the machine is.
fn measure(name: &str, bytes: usize, min_time: Duration, mut f: impl FnMut()) {
    if std::env::var("POLICY_BENCH_ONLY").is_ok_and(|only| !name.contains(&only)) {
        return;
    }
    let runs: Option<u64> = std::env::var("POLICY_BENCH_RUNS")
        .ok()
        .and_then(|n| n.parse().ok());
    // Warm up: the lazy DFA builds its states on first use.
    for _ in 0..3 {
        f();
    }
    let start = Instant::now();
    let mut iterations = 0u64;
    while runs.map_or(start.elapsed() < min_time, |n| iterations < n) {
        f();
        iterations += 1;
    }
    let secs = start.elapsed().as_secs_f64();
    let mbps = (bytes as f64 * iterations as f64) / secs / 1e6;
    println!(
        "{name:<44} {:>8.1} MB/s  ({:>7.1} µs per body, {iterations} runs)",
        mbps,
        secs * 1e6 / iterations as f64
    );
}

fn main() {
    let all = PolicyDef {
        name: Some("all".into()),
        detectors: builtin::names().iter().map(|n| (*n).to_owned()).collect(),
        action: Some("redact".into()),
        ..PolicyDef::default()
    };
    let set = PolicySet::compile(&[all]).unwrap();
    let min_time = Duration::from_secs(2);
    for (label, turns, target) in [
        ("8 KB chat request", TURNS, 8 * 1024),
        ("1 MB chat request", TURNS, 1024 * 1024),
        (
            "1 MB chat request, non-ASCII prose",
            TURNS_INTL,
            1024 * 1024,
        ),
    ] {
        let body = chat_body_from(turns, target);
        let raw = serde_json::to_vec(&body).unwrap();
        let text = text_bytes(&body);
        println!(
            "{label}: {} bytes of JSON, {} bytes of message text",
            raw.len(),
            text
        );
        measure(
            &format!("  scan_request ({label})"),
            raw.len(),
            min_time,
            || {
                black_box(set.scan_request(black_box(&body)));
            },
        );
        measure(
            &format!("  scan + redact stored copy ({label})"),
            raw.len(),
            min_time,
            || {
                let mut copy = body.clone();
                black_box(set.inspect(&mut copy, Direction::Request));
            },
        );
    }
}

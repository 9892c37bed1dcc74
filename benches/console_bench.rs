//! Page times of the web console on a large SQLite store (`bench/console.sh`).
//! Not part of the product.
//!
//! - `generate --dir DIR --events N [--plain]`: writes N events through the
//!   store API in batches of 10,000, sealed into one chain: per call a
//!   REQUEST and a RESPONSE (chat bodies of ~1 KB), one call every 100 ms
//!   of event time ending a minute ago, three models, and for every 50th
//!   call a COMPLIANCE_VIOLATION. Every prompt holds the word `refund`;
//!   one call in 10,000 also holds `quokka`. With `--plain`, the console's
//!   FTS5 and facets tables are first replaced by tables without indexes,
//!   so the same write runs without the index work. Prints events/s and the first call's time as `base`.
//! - `measure --admin HOST:PORT --events N --base TIME [--queries Q]`:
//!   against `serve` on that store (no admin token, loopback), the p50 and
//!   p99 time to fetch each page whole: the events page with a type and a
//!   one-hour window, a call page, the 24 h overview, and a full-text
//!   search for a rare and for a common word, then the server's RSS and
//!   peak RSS. One JSON line per figure.

#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::print_stdout,
    clippy::disallowed_methods,
    reason = "benchmark tool: a failed step should stop it loudly, and it spawns plain tasks"
)]

#[path = "support/common.rs"]
mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use llm_audit_proxy::event::chain::GENESIS_HASH;
use llm_audit_proxy::event::{format_timestamp, parse_timestamp, AuditEvent, EventType, NewEvent};
use llm_audit_proxy::store::sqlite::{SqliteStore, DB_FILE};
use llm_audit_proxy::store::AuditStore;
use serde_json::json;
use tokio::time::Instant;

use common::{connect, percentile, proc_status_kb, Sender};

const CALL_SPACING_MS: i64 = 100;
const BATCH: usize = 10_000;
const MODELS: [&str; 3] = ["gpt-4o-mini", "gpt-4o", "o3-mini"];
const POLICIES: [(&str, &str); 3] = [
    ("pii-email", "MEDIUM"),
    ("pci-card-redact", "HIGH"),
    ("secrets", "CRITICAL"),
];

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let cmd = args.next().unwrap_or_default();
    let mut dir = PathBuf::from("console-bench-store");
    let mut events: u64 = 1_000_000;
    let mut admin: SocketAddr = "127.0.0.1:9090".parse().unwrap();
    let mut queries: usize = 200;
    let mut base: Option<DateTime<Utc>> = None;
    let mut plain = false;
    let mut pid: u32 = 0;
    while let Some(arg) = args.next() {
        if arg == "--plain" {
            plain = true;
            continue;
        }
        let val = args.next().unwrap_or_default();
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(val),
            "--events" => events = val.parse().unwrap(),
            "--admin" => admin = val.parse().unwrap(),
            "--queries" => queries = val.parse().unwrap(),
            "--pid" => pid = val.parse().unwrap(),
            "--base" => base = Some(parse_timestamp(&val).expect("--base RFC 3339")),
            other => {
                eprintln!("console_bench: unknown argument {other}");
                std::process::exit(64);
            }
        }
    }
    match cmd.as_str() {
        "generate" => generate(dir, events, plain).await,
        "measure" => {
            measure(admin, events, base.expect("--base"), queries).await;
            println!(
                "{}",
                json!({"console": "server_memory", "rss_kb": proc_status_kb(pid, "VmRSS"),
                       "hwm_kb": proc_status_kb(pid, "VmHWM")})
            );
        }
        _ => {
            eprintln!("usage: console_bench generate|measure [options]");
            std::process::exit(64);
        }
    }
}

fn call_events(base: DateTime<Utc>, call: u64) -> Vec<NewEvent> {
    let at = base + chrono::Duration::milliseconds(call as i64 * CALL_SPACING_MS);
    let rid = format!("bench-{call:08}");
    let model = MODELS[(call % 3) as usize];
    let rare = if call % 10_000 == 7 {
        " The quokka photo is attached."
    } else {
        ""
    };
    let prompt = format!(
        "Hi, I am customer {call}. Please summarise the ticket history and suggest the next step. \
         The order was placed last week and the tracking page has not changed; the customer asks \
         whether a refund or a replacement is possible.{rare} {}",
        "Earlier messages were polite and brief. ".repeat(10)
    );
    let mut request = NewEvent::new(EventType::Request, "POST /v1/chat/completions (chat.create)")
        .with_request_id(rid.clone())
        .with_metadata(json!({
            "provider": "openai", "operation": "chat.create", "method": "POST",
            "path": "/v1/chat/completions", "model": model, "stream": false,
            "client_ip": "127.0.0.1",
            "headers": {"content-type": "application/json", "user-agent": "OpenAI/Python 1.54.0"},
            "request_data": {"model": model, "temperature": 0.2, "messages": [
                {"role": "system", "content": "You are a helpful support assistant for ACME. Answer briefly."},
                {"role": "user", "content": prompt}]},
            "body_bytes": 1024, "truncated": false
        }));
    request.timestamp = at;
    let failed = call % 100 == 42;
    let mut response = NewEvent::new(EventType::Response, "200 chat.create (completed)")
        .with_request_id(rid.clone())
        .with_metadata(json!({
            "provider": "openai", "operation": "chat.create",
            "status": if failed { 502 } else { 200 },
            "latency_ms": 300.0 + (call % 997) as f64, "ttfb_ms": 250.0,
            "model": model,
            "usage": {"prompt_tokens": 231, "completion_tokens": 64, "total_tokens": 295},
            "finish_reason": "stop", "stream": false,
            "response_data": {"id": format!("chatcmpl-{call:012}"), "object": "chat.completion",
                "model": model, "choices": [{"index": 0, "finish_reason": "stop", "message": {
                    "role": "assistant",
                    "content": "Thanks for your patience. The parcel is delayed at the carrier; I opened a trace."}}],
                "usage": {"prompt_tokens": 231, "completion_tokens": 64, "total_tokens": 295}},
            "body_bytes": 612, "truncated": false, "outcome": "completed"
        }));
    response.timestamp = at + chrono::Duration::milliseconds(50);
    let mut out = vec![request, response];
    if call % 50 == 0 {
        let (policy, severity) = POLICIES[((call / 50) % 3) as usize];
        let mut violation =
            NewEvent::new(EventType::ComplianceViolation, format!("{policy} matched"))
                .with_request_id(rid)
                .with_metadata(
                    json!({"policy_name": policy, "result": false, "severity": severity,
                "action": "redact", "direction": "request",
                "findings": [{"entity_type": "EMAIL", "count": 1}]}),
                );
        violation.timestamp = at + chrono::Duration::milliseconds(1);
        out.insert(1, violation);
    }
    out
}

async fn generate(dir: PathBuf, events: u64, plain: bool) {
    let store = Arc::new(SqliteStore::open(&dir).await.unwrap());
    if plain {
        let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
        // The same rows still go in, to tables without indexes: the
        // difference to an indexed run is the index work itself.
        conn.execute_batch(
            "DROP TABLE events_fts; CREATE TABLE events_fts (body TEXT); \
             DROP TABLE event_facets; CREATE TABLE event_facets (seq, timestamp, event_type, \
             model, operation, outcome, status, latency_ms, total_tokens, policy, severity);",
        )
        .unwrap();
    }
    let started = Instant::now();
    let mut prev = GENESIS_HASH.to_owned();
    let mut seq: i64 = 0;
    // About 2.04 events per call.
    let calls = (events as f64 / 2.04).ceil() as u64;
    let base = Utc::now().trunc_subsecs(0)
        - chrono::Duration::milliseconds(calls as i64 * CALL_SPACING_MS)
        - chrono::Duration::minutes(1);
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
    let mut write_secs = 0.0;
    'calls: for call in 0.. {
        for ev in call_events(base, call) {
            if seq as u64 >= events {
                break 'calls;
            }
            seq += 1;
            let sealed = ev.seal(seq, &prev);
            prev.clone_from(&sealed.hash);
            batch.push(sealed);
            if batch.len() >= BATCH {
                let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
                let t = Instant::now();
                store.append_batch(full.into()).await.unwrap();
                write_secs += t.elapsed().as_secs_f64();
            }
        }
    }
    if !batch.is_empty() {
        let t = Instant::now();
        store.append_batch(batch.into()).await.unwrap();
        write_secs += t.elapsed().as_secs_f64();
    }
    store.close().await.unwrap();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"console": if plain { "generate_plain" } else { "generate" }, "events": seq,
               "secs": secs, "write_secs": write_secs,
               "write_us_per_event": write_secs * 1e6 / seq as f64,
               "base": format_timestamp(&base)})
    );
}

/// A tiny xorshift generator: cheap, repeatable picks.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

async fn get(sender: &mut Sender, addr: SocketAddr, path: &str) -> (u16, Bytes) {
    sender.ready().await.unwrap();
    let req = Request::get(path)
        .header("host", addr.to_string())
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, body)
}

async fn measure(admin: SocketAddr, events: u64, base: DateTime<Utc>, queries: usize) {
    let mut sender = connect(admin).await.unwrap();
    let calls = (events as f64 / 2.04) as u64;
    let span_ms = calls as i64 * CALL_SPACING_MS;
    let mut rng = Rng(0x5eed_1234_5678_9abc);
    let ms = |us: u64| us as f64 / 1000.0;
    let kinds: [(&str, usize); 6] = [
        ("events_type_time", queries),
        ("call", queries),
        ("overview_24h", queries.min(50)),
        ("search_rare_word", queries.min(100)),
        ("search_common_word", queries.min(100)),
        ("events_unfiltered", queries),
    ];
    for (kind, n) in kinds {
        let mut lat = Vec::with_capacity(n);
        let mut bytes = 0usize;
        for _ in 0..n {
            let path = match kind {
                "events_type_time" => {
                    let window = 3_600_000.min(span_ms);
                    let from = rng.below((span_ms - window).max(1) as u64) as i64;
                    let start = base + chrono::Duration::milliseconds(from);
                    let end = start + chrono::Duration::milliseconds(window);
                    format!(
                        "/ui/events?type=RESPONSE&from={}&to={}",
                        format_timestamp(&start),
                        format_timestamp(&end)
                    )
                }
                "call" => format!("/ui/calls/bench-{:08}", rng.below(calls)),
                "overview_24h" => "/ui/overview?range=24h".to_owned(),
                "search_rare_word" => "/ui/events?q=quokka".to_owned(),
                "search_common_word" => "/ui/events?q=refund".to_owned(),
                _ => "/ui/events".to_owned(),
            };
            let path = path.replace(':', "%3A");
            let t = Instant::now();
            let (status, body) = get(&mut sender, admin, &path).await;
            lat.push(t.elapsed().as_micros() as u64);
            assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
            bytes = bytes.max(body.len());
        }
        lat.sort_unstable();
        println!(
            "{}",
            json!({"console": kind, "requests": lat.len(), "largest_page_bytes": bytes,
                   "p50_ms": ms(percentile(&lat, 50.0)), "p99_ms": ms(percentile(&lat, 99.0)),
                   "max_ms": ms(*lat.last().unwrap_or(&0))})
        );
    }
}

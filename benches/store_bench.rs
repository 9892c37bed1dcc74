//! Store figures for the overhead benchmark (`bench/run.sh`). Not part of
//! the product.
//!
//! - `generate --dir DIR --events N`: writes N realistic events (a REQUEST
//!   and a RESPONSE per call, ~1 KB chat bodies, one call every 100 ms of
//!   event time ending a minute ago, request ids `bench-00000000`…)
//!   into a fresh SQLite store through the library, sealed into one chain,
//!   in batches of 10,000.
//!   Recent times, so the server's retention keeps them; prints the first
//!   call's time as `base`.
//!   `--violations V` adds V COMPLIANCE_VIOLATION events to each call (a
//!   policy run whose every prompt holds an entity the packs find).
//! - `measure --admin HOST:PORT --events N --base TIME --pid PID [--queries Q]`: against
//!   `serve` on that store, the p50/p99 of Q filtered queries of each kind
//!   (RESPONSE in a random one-hour window, limit 100; one random
//!   request_id), of up to 50 reads of `/api/stats`, then each export
//!   format read to the end, with events/s, MB/s and the server's RSS
//!   around it. Give it the `--violations` the store was generated with.
//!   Each query kind stops early after `--max-secs` (120). Prints one
//!   JSON line per figure.
//! - `index-cost --dir DIR --events N`: the cost of each secondary index
//!   on writes. For each set of indexes (today's, each one left out, the
//!   ones kept), a fresh store in DIR gets N pre-sealed events of the
//!   sizes above in batches of 40 (`--batch`; a busy writer's commit), and the
//!   process's CPU time (utime + stime) over the appends is divided by N.
//!   Prints one JSON line per set. `--set today` (or another set's name)
//!   runs that set alone, e.g. under `perf stat` to count its allocations;
//!   `--batch B` appends B events a transaction (at 5 ms commits a proxy
//!   serving 500 calls/s writes about 5); `--sql S` runs S on each fresh
//!   store first (to try a setting); `--violations V` as for `generate`.

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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, SubsecRound, Utc};
use http_body_util::{BodyExt, Full};
use hyper::Request;
use llm_audit_proxy::event::chain::GENESIS_HASH;
use llm_audit_proxy::event::{format_timestamp, parse_timestamp, AuditEvent, EventType, NewEvent};
use llm_audit_proxy::store::sqlite::SqliteStore;
use llm_audit_proxy::store::AuditStore;
use serde_json::json;
use tokio::time::Instant;

use common::{connect, percentile, proc_status_kb, Sender};

/// Event time between two calls.
const CALL_SPACING_MS: i64 = 100;
const BATCH: usize = 10_000;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1).filter(|a| a != "--bench");
    let cmd = args.next().unwrap_or_default();
    let mut dir = PathBuf::from("bench-store");
    let mut events: u64 = 1_000_000;
    let mut admin: SocketAddr = "127.0.0.1:9090".parse().unwrap();
    let mut pid: u32 = 0;
    let mut queries: usize = 1000;
    let mut base: Option<DateTime<Utc>> = None;
    // Keeps the whole run bounded even when a query kind is slow.
    let mut max_secs: f64 = 120.0;
    let mut only_set: Option<String> = None;
    let mut batch: usize = 40;
    let mut sql = String::new();
    let mut violations: u64 = 0;
    while let Some(arg) = args.next() {
        let val = args.next().unwrap_or_default();
        match arg.as_str() {
            "--dir" => dir = PathBuf::from(val),
            "--events" => events = val.parse().unwrap(),
            "--admin" => admin = val.parse().unwrap(),
            "--pid" => pid = val.parse().unwrap(),
            "--queries" => queries = val.parse().unwrap(),
            "--max-secs" => max_secs = val.parse().unwrap(),
            "--set" => only_set = Some(val),
            "--batch" => batch = val.parse().unwrap(),
            "--sql" => sql = val,
            "--violations" => violations = val.parse().unwrap(),
            "--base" => base = Some(parse_timestamp(&val).expect("--base RFC 3339")),
            other => {
                eprintln!("store_bench: unknown argument {other}");
                std::process::exit(64);
            }
        }
    }
    match cmd.as_str() {
        "generate" => generate(dir, events, violations).await,
        "measure" => {
            let base = base.expect("--base");
            let calls = events.div_ceil(2 + violations).max(1);
            measure(admin, events, calls, base, pid, queries, max_secs).await
        }
        "index-cost" => index_cost(dir, events, violations, batch, only_set, &sql).await,
        _ => {
            eprintln!("usage: store_bench generate|measure [options]");
            std::process::exit(64);
        }
    }
}

fn call_events(base: DateTime<Utc>, call: u64, violations: u64) -> Vec<NewEvent> {
    let at = base + chrono::Duration::milliseconds(call as i64 * CALL_SPACING_MS);
    let rid = format!("bench-{call:08}");
    let prompt = format!(
        "Hi, I am customer {call}. Please summarise the attached ticket history and suggest the next step. \
         The order was placed last week and the tracking page has not changed since; the customer has written \
         twice and asks whether a refund or a replacement is possible. {}",
        "Earlier messages were polite and brief. ".repeat(12)
    );
    let mut request = NewEvent::new(EventType::Request, "POST /v1/chat/completions (chat.create)")
        .with_request_id(rid.clone())
        .with_metadata(json!({
            "provider": "openai",
            "operation": "chat.create",
            "method": "POST",
            "path": "/v1/chat/completions",
            "model": "gpt-4o-mini",
            "stream": false,
            "client_ip": "127.0.0.1",
            "headers": {"content-type": "application/json", "user-agent": "OpenAI/Python 1.54.0", "x-stainless-lang": "python"},
            "request_data": {
                "model": "gpt-4o-mini",
                "temperature": 0.2,
                "messages": [
                    {"role": "system", "content": "You are a helpful support assistant for ACME. Answer briefly."},
                    {"role": "user", "content": prompt}
                ]
            },
            "body_bytes": 1024,
            "truncated": false
        }));
    request.timestamp = at;
    let mut response = NewEvent::new(EventType::Response, "200 chat.create (completed)")
        .with_request_id(rid)
        .with_metadata(json!({
            "provider": "openai",
            "operation": "chat.create",
            "status": 200,
            "latency_ms": 812.4,
            "ttfb_ms": 790.1,
            "model": "gpt-4o-mini-2024-07-18",
            "usage": {"prompt_tokens": 231, "completion_tokens": 64, "total_tokens": 295},
            "finish_reason": "stop",
            "stream": false,
            "response_data": {
                "id": format!("chatcmpl-{call:012}"),
                "object": "chat.completion",
                "model": "gpt-4o-mini-2024-07-18",
                "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant",
                    "content": "Thanks for your patience. The parcel is delayed at the carrier; I have opened a trace and, if it does not move within 48 hours, we will send a replacement at no cost."}}],
                "usage": {"prompt_tokens": 231, "completion_tokens": 64, "total_tokens": 295}
            },
            "upstream_request_id": format!("req_{call:016x}"),
            "headers": {"content-type": "application/json", "openai-processing-ms": "790"},
            "body_bytes": 612,
            "truncated": false,
            "outcome": "completed"
        }));
    response.timestamp = at + chrono::Duration::milliseconds(812);
    let mut events = vec![request];
    for i in 0..violations {
        let (policy, severity, entity) = if (call + i) % 3 == 0 {
            ("secrets", "high", "api_key")
        } else {
            ("pii-basic", "medium", "email")
        };
        let mut violation = NewEvent::new(
            EventType::ComplianceViolation,
            format!("Policy {policy} violated in the request: {entity} x1 (redact)."),
        )
        .with_request_id(format!("bench-{call:08}"))
        .with_metadata(json!({
            "action": "redact",
            "direction": "request",
            "findings": [{"entity_type": entity, "count": 1}],
            "policy_name": policy,
            "result": false,
            "severity": severity
        }));
        violation.timestamp = at;
        events.push(violation);
    }
    events.push(response);
    events
}

async fn generate(dir: PathBuf, events: u64, violations: u64) {
    let started = Instant::now();
    let store = Arc::new(SqliteStore::open(&dir).await.unwrap());
    let mut prev = GENESIS_HASH.to_owned();
    let mut seq: i64 = 0;
    let calls = events.div_ceil(2 + violations);
    let base = Utc::now().trunc_subsecs(0)
        - chrono::Duration::milliseconds(calls as i64 * CALL_SPACING_MS)
        - chrono::Duration::minutes(1);
    let mut batch: Vec<AuditEvent> = Vec::with_capacity(BATCH);
    // The next batch is sealed while the store writes the previous one.
    let mut pending: Option<tokio::task::JoinHandle<()>> = None;
    for call in 0..calls {
        for ev in call_events(base, call, violations) {
            if seq as u64 >= events {
                break;
            }
            seq += 1;
            let sealed = ev.seal(seq, &prev);
            prev.clone_from(&sealed.hash);
            batch.push(sealed);
        }
        if batch.len() >= BATCH || call + 1 == calls {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(BATCH));
            if let Some(p) = pending.take() {
                p.await.unwrap();
            }
            let store = store.clone();
            pending = Some(tokio::spawn(async move {
                store.append_batch(full.into()).await.unwrap();
            }));
        }
    }
    if let Some(p) = pending.take() {
        p.await.unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{}",
        json!({"store": "generate", "events": seq, "secs": secs, "events_per_s": seq as f64 / secs,
               "base": format_timestamp(&base)})
    );
}

/// Secondary indexes of the events table (the lookups by type are tables
/// the writer's catch-up fills, not indexes; see `sqlite/by_type.rs`).
const INDEXES: &[&str] = &["events_timestamp", "events_request_id"];

async fn index_cost(
    dir: PathBuf,
    events: u64,
    violations: u64,
    batch: usize,
    only_set: Option<String>,
    sql: &str,
) {
    let base = Utc::now().trunc_subsecs(0);
    let mut sealed = Vec::with_capacity(events as usize);
    let mut prev = GENESIS_HASH.to_owned();
    for call in 0..events.div_ceil(2 + violations) {
        for ev in call_events(base, call, violations) {
            let e = ev.seal(sealed.len() as i64 + 1, &prev);
            prev.clone_from(&e.hash);
            sealed.push(e);
        }
    }
    sealed.truncate(events as usize);
    let batches: Vec<llm_audit_proxy::store::Batch> =
        sealed.chunks(batch).map(|c| c.to_vec().into()).collect();
    let mut sets: Vec<(String, Vec<&str>)> = vec![("today".into(), Vec::new())];
    for index in INDEXES {
        sets.push((format!("without {index}"), vec![*index]));
    }
    sets.push(("none".into(), INDEXES.to_vec()));
    if let Some(only) = &only_set {
        sets.retain(|(name, _)| name == only);
    }
    for (name, dropped) in sets {
        let at = dir.join(name.replace(' ', "-"));
        let _ = std::fs::remove_dir_all(&at);
        let store = SqliteStore::open(&at).await.unwrap();
        {
            let conn = rusqlite::Connection::open(at.join("audit.db")).unwrap();
            conn.execute_batch(sql).unwrap();
            for index in &dropped {
                conn.execute_batch(&format!("DROP INDEX IF EXISTS {index}"))
                    .unwrap();
            }
        }
        let cpu0 = process_cpu_us();
        for batch in &batches {
            store.append_batch(batch.clone()).await.unwrap();
        }
        let cpu_us = process_cpu_us() - cpu0;
        println!(
            "{}",
            json!({"store": "index_cost", "set": name, "events": events,
                   "cpu_us_per_event": cpu_us as f64 / events as f64})
        );
        drop(store);
        let _ = std::fs::remove_dir_all(&at);
    }
}

/// utime + stime of this process, in microseconds.
fn process_cpu_us() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // CLK_TCK is 100 on Linux.
    ticks * 10_000
}

/// A tiny xorshift generator: the benchmark needs cheap, repeatable picks,
/// not good randomness.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self(seed | 1)
    }

    pub fn below(&mut self, n: u64) -> u64 {
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

async fn measure(
    admin: SocketAddr,
    events: u64,
    calls: u64,
    base: DateTime<Utc>,
    pid: u32,
    queries: usize,
    max_secs: f64,
) {
    let mut sender = connect(admin).await.unwrap();
    let span_ms = calls as i64 * CALL_SPACING_MS;
    let mut rng = Rng::new(0x5eed);
    let ms = |us: u64| us as f64 / 1000.0;

    // Type + one-hour time range + limit 100.
    let mut lat = Vec::with_capacity(queries);
    let mut found = 0u64;
    let began = Instant::now();
    for _ in 0..queries {
        if began.elapsed().as_secs_f64() > max_secs {
            break;
        }
        let window = 3_600_000.min(span_ms);
        let from = rng.below((span_ms - window).max(1) as u64) as i64;
        let start = base + chrono::Duration::milliseconds(from);
        let end = start + chrono::Duration::milliseconds(window);
        let path = format!(
            "/api/events?event_type=RESPONSE&start_time={}&end_time={}&limit=100",
            format_timestamp(&start),
            format_timestamp(&end)
        );
        let t = Instant::now();
        let (status, body) = get(&mut sender, admin, &path).await;
        lat.push(t.elapsed().as_micros() as u64);
        assert_eq!(status, 200, "{path}: {}", String::from_utf8_lossy(&body));
        found += u64::from(body.len() > 20);
    }
    lat.sort_unstable();
    println!(
        "{}",
        json!({"store": "query_type_time", "queries": lat.len(), "nonempty": found,
               "p50_ms": ms(percentile(&lat, 50.0)), "p99_ms": ms(percentile(&lat, 99.0))})
    );

    // One call's events by request_id.
    let mut lat = Vec::with_capacity(queries);
    let mut hits = 0u64;
    let began = Instant::now();
    for _ in 0..queries {
        if began.elapsed().as_secs_f64() > max_secs {
            break;
        }
        let rid = format!("bench-{:08}", rng.below(calls));
        let path = format!("/api/events?request_id={rid}");
        let t = Instant::now();
        let (status, body) = get(&mut sender, admin, &path).await;
        lat.push(t.elapsed().as_micros() as u64);
        assert_eq!(status, 200, "{path}");
        hits += u64::from(body.windows(rid.len()).any(|w| w == rid.as_bytes()));
    }
    lat.sort_unstable();
    println!(
        "{}",
        json!({"store": "query_request_id", "queries": lat.len(), "hits": hits,
               "p50_ms": ms(percentile(&lat, 50.0)), "p99_ms": ms(percentile(&lat, 99.0))})
    );
    // The stats the console's overview and `/api/stats` read: counts by
    // type, level, policy and severity, and the time range.
    let mut lat = Vec::new();
    let began = Instant::now();
    for _ in 0..queries.min(50) {
        if began.elapsed().as_secs_f64() > max_secs {
            break;
        }
        let t = Instant::now();
        let (status, body) = get(&mut sender, admin, "/api/stats").await;
        lat.push(t.elapsed().as_micros() as u64);
        assert_eq!(
            status,
            200,
            "/api/stats: {}",
            String::from_utf8_lossy(&body)
        );
    }
    lat.sort_unstable();
    println!(
        "{}",
        json!({"store": "stats", "queries": lat.len(),
               "p50_ms": ms(percentile(&lat, 50.0)), "p99_ms": ms(percentile(&lat, 99.0))})
    );
    drop(sender);

    for format in ["json", "ndjson", "csv"] {
        let mut sender = connect(admin).await.unwrap();
        let rss_before = proc_status_kb(pid, "VmRSS");
        let hwm_before = proc_status_kb(pid, "VmHWM");
        // Sample the server's RSS while the export runs: VmHWM only ever
        // rises, so it cannot show the peak of one export after another.
        let peak = Arc::new(AtomicU64::new(rss_before));
        let done = Arc::new(AtomicBool::new(false));
        let sampler = {
            let peak = peak.clone();
            let done = done.clone();
            tokio::spawn(async move {
                while !done.load(Ordering::Relaxed) {
                    peak.fetch_max(proc_status_kb(pid, "VmRSS"), Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            })
        };
        sender.ready().await.unwrap();
        let req = Request::get(format!("/api/export?format={format}"))
            .header("host", admin.to_string())
            .body(Full::new(Bytes::new()))
            .unwrap();
        let t = Instant::now();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        let mut body = resp.into_body();
        let mut bytes = 0u64;
        let mut lines = 0u64;
        while let Some(frame) = body.frame().await {
            if let Ok(data) = frame.unwrap().into_data() {
                bytes += data.len() as u64;
                lines += data.iter().filter(|b| **b == b'\n').count() as u64;
            }
        }
        let secs = t.elapsed().as_secs_f64();
        done.store(true, Ordering::Relaxed);
        sampler.await.unwrap();
        let hwm_after = proc_status_kb(pid, "VmHWM");
        let peak_kb = peak.load(Ordering::Relaxed);
        println!(
            "{}",
            json!({"store": "export", "format": format, "events": events, "bytes": bytes, "lines": lines,
                   "secs": secs, "events_per_s": events as f64 / secs, "mb_per_s": bytes as f64 / 1e6 / secs,
                   "rss_before_kb": rss_before, "rss_peak_kb": peak_kb,
                   "rss_growth_kb": peak_kb.saturating_sub(rss_before),
                   "hwm_before_kb": hwm_before, "hwm_after_kb": hwm_after})
        );
    }
}

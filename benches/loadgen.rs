//! Load driver for the overhead benchmark (`bench/run.sh`). Not part of the
//! product.
//!
//! Sends OpenAI chat-completion calls over keep-alive HTTP/1.1 connections
//! and prints one JSON line of results on stdout.
//!
//! Modes (`--mode`):
//! - `closed`: `--conns` connections each send the next call as soon as the
//!   last one ended, for `--duration` seconds (throughput at saturation).
//! - `rate`: open loop at `--rate` calls/s spread over `--conns`
//!   connections. Latency counts from the *scheduled* send time, so a stall
//!   is charged to every call that should have gone out during it (no
//!   coordinated omission).
//! - `hold`: opens `--streams` streaming calls at once, waits until each has
//!   its first byte, then reads `/proc/--pid/status` (VmRSS, VmHWM) and
//!   drops them all.
//!
//! `--body BYTES` sizes the JSON chat body; `--stream` asks for SSE and
//! measures time to first byte and the gaps between body frames;
//! `--chunk-delay-ms` is passed to the mock as `x-mock-chunk-delay-ms`.
//!
//! `--warmup SECS` (closed and rate modes) runs the load that long before
//! `--duration` starts, and records nothing of the calls sent meanwhile
//! (they still count in `sent`). In closed mode the connections also start
//! spread over the warm-up, one every `SECS / --conns`, so that they do not
//! all send their first calls in the same instant and keep doing so in
//! lockstep for the next rounds: steady-state latency, not a start-up
//! burst, is what the figures then show.

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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use serde_json::json;
use tokio::time::Instant;

use common::{connect, percentile, proc_status_kb, Sender};

#[derive(Clone)]
struct Opts {
    mode: String,
    addr: SocketAddr,
    path: String,
    conns: usize,
    duration: Duration,
    rate: f64,
    body: usize,
    stream: bool,
    /// Leave the PII out of the prompt (traffic policies have nothing to
    /// find in).
    plain: bool,
    chunk_delay_ms: u64,
    warmup: Duration,
    streams: usize,
    pid: u32,
    label: String,
}

/// What one connection measured, in microseconds.
#[derive(Default)]
struct Samples {
    latency: Vec<u64>,
    ttfb: Vec<u64>,
    gaps: Vec<u64>,
    frames: u64,
    sse_events: u64,
    bytes_in: u64,
    errors: u64,
    sent: u64,
}

#[tokio::main]
async fn main() {
    let opts = parse_args();
    let line = match opts.mode.as_str() {
        "closed" | "rate" => run_load(&opts).await,
        "hold" => run_hold(&opts).await,
        other => {
            eprintln!("loadgen: unknown mode {other}");
            std::process::exit(64);
        }
    };
    println!("{line}");
}

fn parse_args() -> Opts {
    let mut o = Opts {
        mode: "closed".into(),
        addr: "127.0.0.1:8080".parse().unwrap(),
        path: "/v1/chat/completions".into(),
        conns: 64,
        duration: Duration::from_secs(5),
        rate: 1000.0,
        body: 1024,
        stream: false,
        plain: false,
        chunk_delay_ms: 0,
        warmup: Duration::ZERO,
        streams: 1000,
        pid: 0,
        label: String::new(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut val = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--mode" => o.mode = val(),
            "--addr" => o.addr = val().parse().expect("--addr HOST:PORT"),
            "--path" => o.path = val(),
            "--conns" => o.conns = val().parse().unwrap(),
            "--duration" => o.duration = Duration::from_secs_f64(val().parse().unwrap()),
            "--rate" => o.rate = val().parse().unwrap(),
            "--body" => o.body = val().parse().unwrap(),
            "--stream" => o.stream = true,
            "--plain" => o.plain = true,
            "--chunk-delay-ms" => o.chunk_delay_ms = val().parse().unwrap(),
            "--warmup" => o.warmup = Duration::from_secs_f64(val().parse().unwrap()),
            "--streams" => o.streams = val().parse().unwrap(),
            "--pid" => o.pid = val().parse().unwrap(),
            "--label" => o.label = val(),
            "--bench" => {}
            other => {
                eprintln!("loadgen: unknown argument {other}");
                std::process::exit(64);
            }
        }
    }
    o
}

/// A chat body of about `size` bytes, with the stream flag first so the
/// mock finds it without reading the whole body, and (unless `plain`) a
/// little PII so sanitising and policies have work to do.
fn chat_body(size: usize, stream: bool, plain: bool) -> Bytes {
    let who = if plain {
        "a customer"
    } else {
        "Jane Doe (jane.doe@example.com, +1 415 555 0100)"
    };
    let head = format!(
        r#"{{"stream":{stream},"model":"gpt-4o-mini","temperature":0.2,"max_tokens":256,"messages":[{{"role":"system","content":"You are a helpful support assistant for ACME. Answer briefly."}},{{"role":"user","content":"Hi, I am {who}. My account was locked. "#
    );
    let tail = r#""}]}"#;
    let words =
        "Please summarise the attached ticket history and suggest the next step for the customer. ";
    let mut s = String::with_capacity(size + 128);
    s.push_str(&head);
    while s.len() + tail.len() < size {
        let room = size - s.len() - tail.len();
        s.push_str(&words[..room.min(words.len())]);
    }
    s.push_str(tail);
    Bytes::from(s)
}

fn request(o: &Opts, body: &Bytes) -> Request<Full<Bytes>> {
    let mut b = Request::post(o.path.as_str())
        .header("host", o.addr.to_string())
        .header("content-type", "application/json")
        .header(
            "authorization",
            "Bearer sk-bench-not-a-real-key-000000000000",
        );
    if o.chunk_delay_ms > 0 {
        b = b.header("x-mock-chunk-delay-ms", o.chunk_delay_ms.to_string());
    }
    b.body(Full::new(body.clone())).unwrap()
}

/// Sends one call and reads its body to the end, recording into `s`.
/// `origin` is when the call counts as started (the scheduled time in
/// open-loop mode).
async fn one_call(
    o: &Opts,
    sender: &mut Sender,
    body: &Bytes,
    origin: Instant,
    s: &mut Samples,
) -> bool {
    if sender.ready().await.is_err() {
        s.errors += 1;
        return false;
    }
    s.sent += 1;
    let sent_at = Instant::now();
    let resp = match sender.send_request(request(o, body)).await {
        Ok(r) => r,
        Err(_) => {
            s.errors += 1;
            return false;
        }
    };
    let ok_status = resp.status().is_success();
    let mut body = resp.into_body();
    let mut last: Option<Instant> = None;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            s.errors += 1;
            return false;
        };
        if let Ok(data) = frame.into_data() {
            let now = Instant::now();
            match last {
                None => s.ttfb.push(micros(now - sent_at)),
                Some(prev) => s.gaps.push(micros(now - prev)),
            }
            last = Some(now);
            s.frames += 1;
            s.bytes_in += data.len() as u64;
            if o.stream {
                s.sse_events += data.windows(6).filter(|w| w == b"data: ").count() as u64;
            }
        }
    }
    s.latency.push(micros(Instant::now() - origin));
    if !ok_status {
        s.errors += 1;
    }
    true
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

async fn run_load(o: &Opts) -> String {
    let body = chat_body(o.body, o.stream, o.plain);
    let start = Instant::now();
    let measured_from = start + o.warmup;
    let deadline = measured_from + o.duration;
    let mut tasks = Vec::new();
    for i in 0..o.conns {
        let o = o.clone();
        let body = body.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = Samples::default();
            let mut warm = Samples::default();
            let mut sender = None;
            if o.mode == "closed" {
                tokio::time::sleep_until(start + o.warmup.mul_f64(i as f64 / o.conns as f64)).await;
            }
            // Open loop: this connection's share of the schedule, offset so
            // the connections interleave evenly.
            let interval = Duration::from_secs_f64(o.conns as f64 / o.rate);
            let mut next = start + Duration::from_secs_f64(i as f64 / o.rate);
            loop {
                let origin = if o.mode == "rate" {
                    if next >= deadline {
                        break;
                    }
                    tokio::time::sleep_until(next).await;
                    let at = next;
                    next += interval;
                    at
                } else {
                    let now = Instant::now();
                    if now >= deadline {
                        break;
                    }
                    now
                };
                if sender.is_none() {
                    match connect(o.addr).await {
                        Ok(c) => sender = Some(c),
                        Err(_) => {
                            s.errors += 1;
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                }
                let Some(conn) = sender.as_mut() else {
                    continue;
                };
                let into = if origin < measured_from {
                    &mut warm
                } else {
                    &mut s
                };
                if !one_call(&o, conn, &body, origin, into).await {
                    sender = None;
                }
            }
            (s, warm)
        }));
    }
    let mut all = Samples::default();
    let mut warmup_calls = 0;
    for t in tasks {
        let (s, warm) = t.await.unwrap();
        warmup_calls += warm.latency.len();
        all.errors += warm.errors;
        all.sent += warm.sent;
        all.latency.extend(s.latency);
        all.ttfb.extend(s.ttfb);
        all.gaps.extend(s.gaps);
        all.frames += s.frames;
        all.sse_events += s.sse_events;
        all.bytes_in += s.bytes_in;
        all.errors += s.errors;
        all.sent += s.sent;
    }
    let elapsed = measured_from.elapsed().as_secs_f64();
    all.latency.sort_unstable();
    all.ttfb.sort_unstable();
    all.gaps.sort_unstable();
    let n = all.latency.len() as u64;
    let ms = |us: u64| us as f64 / 1000.0;
    json!({
        "label": o.label,
        "mode": o.mode,
        "conns": o.conns,
        "body_bytes": body.len(),
        "stream": o.stream,
        "target_rate": if o.mode == "rate" { Some(o.rate) } else { None },
        "duration_s": elapsed,
        "warmup_s": o.warmup.as_secs_f64(),
        "warmup_calls": warmup_calls,
        "sent": all.sent,
        "requests": n,
        "errors": all.errors,
        "rps": n as f64 / elapsed,
        "p50_ms": ms(percentile(&all.latency, 50.0)),
        "p90_ms": ms(percentile(&all.latency, 90.0)),
        "p99_ms": ms(percentile(&all.latency, 99.0)),
        "max_ms": ms(all.latency.last().copied().unwrap_or(0)),
        "ttfb_p50_ms": ms(percentile(&all.ttfb, 50.0)),
        "ttfb_p99_ms": ms(percentile(&all.ttfb, 99.0)),
        "gap_p50_ms": ms(percentile(&all.gaps, 50.0)),
        "gap_p99_ms": ms(percentile(&all.gaps, 99.0)),
        "frames_per_call": if n > 0 { all.frames as f64 / n as f64 } else { 0.0 },
        "sse_events_per_call": if n > 0 { all.sse_events as f64 / n as f64 } else { 0.0 },
        "bytes_in": all.bytes_in,
    })
    .to_string()
}

async fn run_hold(o: &Opts) -> String {
    let body = chat_body(o.body, true, o.plain);
    let opened = Arc::new(AtomicU64::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = Vec::new();
    for _ in 0..o.streams {
        let o = o.clone();
        let body = body.clone();
        let opened = opened.clone();
        let sent = sent.clone();
        let mut stop = stop_rx.clone();
        tasks.push(tokio::spawn(async move {
            let Ok(mut conn) = connect(o.addr).await else {
                return;
            };
            if conn.ready().await.is_err() {
                return;
            }
            sent.fetch_add(1, Ordering::Relaxed);
            let Ok(resp) = conn.send_request(request(&o, &body)).await else {
                return;
            };
            let mut body = resp.into_body();
            let mut first = true;
            loop {
                tokio::select! {
                    frame = body.frame() => match frame {
                        Some(Ok(_)) => {
                            if first {
                                first = false;
                                opened.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                        _ => return,
                    },
                    _ = stop.changed() => return,
                }
            }
        }));
    }
    let t0 = Instant::now();
    let wait_limit = Duration::from_secs(30);
    while (opened.load(Ordering::Relaxed) as usize) < o.streams && t0.elapsed() < wait_limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open_secs = t0.elapsed().as_secs_f64();
    // Let every stream reach a steady state (buffers allocated, a few
    // chunks through) before reading the process's memory.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = proc_status_kb(o.pid, "VmRSS");
    let hwm = proc_status_kb(o.pid, "VmHWM");
    let still_open = opened.load(Ordering::Relaxed);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    json!({
        "label": o.label,
        "mode": "hold",
        "streams": o.streams,
        "sent": sent.load(Ordering::Relaxed),
        "opened": still_open,
        "open_s": open_secs,
        "rss_kb": rss,
        "hwm_kb": hwm,
    })
    .to_string()
}

//! Cost of the stream guard on a clean prose completion, and whether prose
//! waits. Streams a realistic answer (words, numbers, versions, code, as a
//! model's tokens: one SSE chat chunk each) through
//! `StreamGuard` with a `block` policy over every built-in detector, and
//! through the same guard without block policies (a pass-through).
//! Run with `cargo bench --bench stream_guard`; prints ns per chunk, frames
//! in and out, and how many frames were held past their arrival.

#![expect(
    clippy::disallowed_methods,
    reason = "a benchmark measures wall time with std's clock; no tokio runtime here"
)]
#![expect(clippy::print_stdout, reason = "the benchmark's report")]
#![expect(
    clippy::unwrap_used,
    reason = "a failed setup should stop the benchmark"
)]

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame};
use llm_audit_proxy::policy::{builtin, PolicyDef, PolicySet};
use llm_audit_proxy::proxy::policy_guard::StreamGuard;
use serde_json::json;

/// An answer the way a support assistant writes one.
const ANSWER: &str = "Sure. Start with the connection pool: with 32 workers and a pool of 10, \
requests queue. Check `max_connections`, the retry policy (3 retries, 250 ms backoff) and whether \
the upstream's rate limit of 600 rpm was hit on 2024-03-18 between 10:42 and 11:05 UTC. A flame \
graph of one slow request helps. Look at `std::sync::Mutex` contention in \
`PaymentClient::charge`; with Rust 1.85 and tokio 1.44 you can enable `tokio-console` to see \
tasks waiting. Also compare the HashMap<String, Vec<u8>> cache size between releases 2.13.9 and \
2.14.3, e.g. with a heap profile. If p99 latency is still above 1.8 s after that, raise the pool \
to 20 and watch the error rate for 15 minutes.\n\n```yaml\npool:\n  size: 20\n  timeout_ms: \
5000\n```\n";

/// Frames released one at a time, so the guard's output per arriving frame
/// can be seen.
struct Feed {
    frames: VecDeque<Bytes>,
    /// Frames the bench has let through so far.
    open: Arc<AtomicUsize>,
}

impl Body for Feed {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        if self.open.load(Ordering::Relaxed) == 0 {
            return if self.frames.is_empty() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            };
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
        Poll::Ready(self.frames.pop_front().map(|b| Ok(Frame::data(b))))
    }
}

/// The answer as model tokens: each word with its leading space, and
/// punctuation on its own.
fn tokens(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    for c in text.chars() {
        let boundary = c == ' ' || c == '\n' || (c.is_ascii_punctuation() && c != '\'');
        if boundary && !current.trim().is_empty() {
            out.push(std::mem::take(&mut current));
        }
        current.push(c);
    }
    out.push(current);
    out
}

fn upstream(tokens: &[String]) -> Vec<Bytes> {
    let mut frames = Vec::new();
    for t in tokens {
        let chunk = json!({"id": "chatcmpl-bench1", "object": "chat.completion.chunk",
            "created": 1_764_115_200, "model": "gpt-4o-mini-2024-07-18",
            "choices": [{"index": 0, "delta": {"content": t}, "finish_reason": null}]});
        frames.push(Bytes::from(format!("data: {chunk}\n\n")));
    }
    frames.push(Bytes::from_static(b"data: [DONE]\n\n"));
    frames
}

/// Streams `frames` through a guard, one upstream frame at a time; returns
/// frames out and the upstream frames after which nothing came out.
fn stream(set: &Arc<PolicySet>, frames: &[Bytes]) -> (usize, usize, usize) {
    let open = Arc::new(AtomicUsize::new(0));
    let mut guard = Box::pin(StreamGuard::new(
        Feed {
            frames: frames.iter().cloned().collect(),
            open: open.clone(),
        },
        set.clone(),
        Box::new(|_| {}),
    ));
    let mut cx = Context::from_waker(Waker::noop());
    let (mut out, mut bytes, mut waited) = (0, 0, 0);
    for frame in frames {
        open.fetch_add(1, Ordering::Relaxed);
        let before = out;
        while let Poll::Ready(Some(Ok(frame))) = guard.as_mut().poll_frame(&mut cx) {
            bytes += frame.data_ref().map_or(0, Bytes::len);
            out += 1;
        }
        if out == before {
            waited += 1;
            if std::env::var_os("SHOW_HELD").is_some() {
                println!("  held: {}", String::from_utf8_lossy(frame).trim_end());
            }
        }
    }
    while let Poll::Ready(Some(Ok(frame))) = guard.as_mut().poll_frame(&mut cx) {
        bytes += frame.data_ref().map_or(0, Bytes::len);
        out += 1;
    }
    (out, waited, bytes)
}

fn main() {
    let guarded = Arc::new(
        PolicySet::compile(&[PolicyDef {
            name: Some("all".into()),
            detectors: builtin::names().iter().map(|n| (*n).to_owned()).collect(),
            action: Some("block".into()),
            direction: Some("response".into()),
            ..PolicyDef::default()
        }])
        .unwrap(),
    );
    let open = Arc::new(PolicySet::compile(&[]).unwrap());
    let tokens = tokens(ANSWER);
    let frames = upstream(&tokens);
    let in_bytes: usize = frames.iter().map(Bytes::len).sum();
    for (label, set) in [
        ("block policy, all detectors", &guarded),
        ("no block policy", &open),
    ] {
        let (out, waited, bytes) = stream(set, &frames);
        assert_eq!(bytes, in_bytes, "{label}: bytes changed");
        let started = Instant::now();
        let mut runs = 0u32;
        while started.elapsed() < Duration::from_secs(2) {
            std::hint::black_box(stream(set, &frames));
            runs += 1;
        }
        let per_chunk = started.elapsed().as_nanos() as f64 / f64::from(runs) / frames.len() as f64;
        println!(
            "{label}: {per_chunk:.0} ns per chunk; frames in {}, out {out}; frames held past \
             their arrival {waited}",
            frames.len()
        );
    }
}

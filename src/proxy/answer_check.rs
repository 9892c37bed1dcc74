//! Inspecting a whole answer before any of it goes to the app, for
//! response-direction `block` policies: answers that are not an event
//! stream (JSON, text, anything else, compressed or not), and event streams
//! under a list of codings (`gzip, br`), which cannot be decoded as they
//! stream. Plain and singly compressed event streams are guarded as they
//! stream instead (`StreamGuard`, `EncodedStreamGuard`).
//!
//! The answer is read up to `policy.max_inspected_bytes`, decoded whatever
//! its `Content-Encoding`, and then inspected as what it is: an SSE stream
//! (declared, or sniffed from its first bytes) through the same scanners as
//! [`StreamGuard`], JSON through the model-text places, and anything else
//! as plain text. A clean answer is forwarded as sent (still compressed); a
//! blocked one is replaced by the policy error. One longer than the limit,
//! or whose encoding cannot be undone, is refused: it is never forwarded
//! unchecked.

use std::pin::pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http_body::Body;
use http_body_util::Full;

use super::policy_guard::StreamGuard;
use super::respond::ProxyError;
use crate::capture::decode::decode;
use crate::policy::{Direction, PolicySet, Verdict};

/// What to do with a whole answer.
#[derive(Debug)]
pub enum AnswerCheck {
    /// Clean: forward it as sent.
    Forward,
    /// A `block` policy matched: answer with the policy error instead.
    Blocked(Verdict),
    /// It could not be inspected: answer with this 502 instead.
    Refused(ProxyError),
}

/// Lines an SSE body may start with, after blank lines or a BOM.
const SSE_STARTS: &[&[u8]] = &[b"data:", b"event:", b"id:", b"retry:", b":"];

/// Bytes needed to tell an SSE body from anything else.
pub const SNIFF_BYTES: usize = 8;

/// Whether `prefix` (the first bytes of a body) starts like Server-Sent
/// Events: its first non-empty line is a `data:`, `event:`, `id:`,
/// `retry:` or comment line. JSON and text answers never start so.
pub fn looks_like_sse(prefix: &[u8]) -> bool {
    let rest = prefix.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(prefix);
    let rest = rest.trim_ascii_start();
    SSE_STARTS.iter().any(|start| rest.starts_with(start))
}

/// Whether `encoding` (a `Content-Encoding` value) changes the bytes.
pub fn is_encoded(encoding: Option<&str>) -> bool {
    encoding.is_some_and(|e| {
        e.split(',')
            .map(str::trim)
            .any(|c| !c.is_empty() && !c.eq_ignore_ascii_case("identity"))
    })
}

/// Inspects a whole answer of `body` bytes (as received, `complete` when
/// it ended within `limit`), declared SSE or not by `is_sse`.
pub fn check_answer(
    policies: &Arc<PolicySet>,
    encoding: Option<&str>,
    body: &[u8],
    complete: bool,
    is_sse: bool,
    limit: usize,
) -> AnswerCheck {
    if !complete {
        return AnswerCheck::Refused(ProxyError::AnswerTooLarge);
    }
    let decoded = match decode(encoding, body, limit) {
        Ok(d) if !d.truncated => d.bytes,
        Ok(d) if d.bytes.len() >= limit => return AnswerCheck::Refused(ProxyError::AnswerTooLarge),
        // Unknown coding, corrupt, or a compressed stream cut short.
        _ => return AnswerCheck::Refused(ProxyError::AnswerUndecodable),
    };
    let verdict = if is_sse || looks_like_sse(&decoded) {
        stream_verdict(policies, decoded)
    } else if let Ok(value) = serde_json::from_slice::<serde_json::Value>(&decoded) {
        policies.scan_response(&value).blocking().cloned()
    } else {
        let text = String::from_utf8_lossy(&decoded);
        policies
            .scan_text(&text, Direction::Response)
            .blocking()
            .cloned()
    };
    match verdict {
        Some(verdict) => AnswerCheck::Blocked(verdict),
        None => AnswerCheck::Forward,
    }
}

/// The verdict the stream guard reaches over a whole SSE body.
fn stream_verdict(policies: &Arc<PolicySet>, body: Bytes) -> Option<Verdict> {
    let found: Arc<Mutex<Option<Verdict>>> = Arc::default();
    let sink = found.clone();
    let mut guard = pin!(StreamGuard::new(
        Full::new(body),
        policies.clone(),
        Box::new(move |verdict| {
            *sink.lock().unwrap_or_else(PoisonError::into_inner) = Some(verdict);
        }),
    ));
    // The body is in memory: every poll is ready, and no waker is needed.
    let mut cx = Context::from_waker(Waker::noop());
    while let Poll::Ready(Some(Ok(_))) = guard.as_mut().poll_frame(&mut cx) {}
    let verdict = found.lock().unwrap_or_else(PoisonError::into_inner).take();
    verdict
}

#[cfg(test)]
mod tests;

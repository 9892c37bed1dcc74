//! Enforcing response-direction `block` policies on a streamed completion
//! while it passes, without buffering the stream.
//!
//! [`StreamGuard`] wraps the upstream body of a `text/event-stream`
//! response. It splits each frame into Server-Sent Events lines, reads the
//! JSON of every `data:` line, and feeds the text the model writes to one
//! [`StreamScanner`] per choice and field, so a card number spread over
//! three chunks is caught while digits of two different choices are never
//! joined into one.
//!
//! What reaches the app is always upstream's bytes, never re-encoded, and
//! only whole lines that have been inspected: a line that is still open at
//! the end of a frame is held back until its end arrives (up to
//! [`MAX_LINE`]). Frame boundaries may therefore move to line ends, but the
//! bytes are the same. When a line trips a scanner, the frame holding it is
//! withheld, the app gets one SSE error event (the [`blocked_response_json`]
//! object) and `data: [DONE]`, and the upstream body is dropped, which
//! cancels the upstream call. The same error shape is used for chat,
//! legacy and Responses API streams: the official OpenAI SDKs raise an
//! `APIError` for any `data:` event whose JSON has an `error` member.
//!
//! A scanner confirms a match only once text follows it, so a match at the
//! very end of a field is judged when the stream ends: at `data: [DONE]`, at
//! a terminal Responses API event (`response.completed`,
//! `response.incomplete`, `response.failed`), or when upstream's body ends.
//! Its text has then already been forwarded; the error event replaces the
//! end of the stream (the terminator line is withheld), so the app still
//! learns that the completion was blocked.

use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde_json::{json, Value};

use super::body::BoxError;
use crate::policy::{Direction, PolicySet, StreamScanner, Verdict};

/// Longest SSE line held back for inspection. A longer line is passed on
/// uninspected as it arrives, so a single runaway line cannot make the
/// proxy hold unbounded memory.
pub const MAX_LINE: usize = 1 << 20;

/// Most scanners kept for one stream. Fields past this bound share one
/// extra scanner: their text is still inspected, at the risk of joining
/// text of different fields.
pub const MAX_SCANNERS: usize = 64;

/// Called once, with the verdict, when a stream is cut.
pub type OnBlock = Box<dyn FnOnce(Verdict) + Send + 'static>;

pin_project! {
    /// A response body that passes an SSE completion on frame by frame and
    /// cuts it when a response-direction `block` policy matches the text.
    pub struct StreamGuard<B> {
        // `None` once cut or ended: dropping upstream's body cancels the
        // upstream call.
        #[pin]
        inner: Option<B>,
        // `None` when no block policy watches responses: the guard then
        // passes everything through untouched.
        state: Option<Box<GuardState>>,
    }
}

/// The guard's bookkeeping, apart from the pinned body.
struct GuardState {
    lines: LineSplitter,
    inspector: Inspector,
    /// Frames to emit before polling upstream again.
    queued: VecDeque<Frame<Bytes>>,
    /// Upstream ended, failed or was cut: only `queued` remains.
    done: bool,
    on_block: Option<OnBlock>,
}

/// Incremental SSE line splitting, tracking what the app's SSE parser has
/// seen of the bytes forwarded so far.
#[derive(Debug, Default)]
struct LineSplitter {
    /// The open line at the end of the last frame, not yet forwarded.
    carry: Vec<u8>,
    /// The open line outgrew [`MAX_LINE`]: it is forwarded uninspected up
    /// to its end.
    skipping: bool,
    /// The last byte forwarded was a `\r`, so a `\n` starting the next
    /// frame completes that line ending instead of making an empty line.
    after_cr: bool,
    /// A field line was forwarded since the last empty line: the app holds
    /// an event that has not been dispatched yet.
    event_open: bool,
}

/// What the app's parser holds at the last forwarded byte; decides how the
/// error event must start to be read as an event of its own.
#[derive(Debug, Clone, Copy)]
struct ParserAt {
    mid_line: bool,
    after_cr: bool,
    event_open: bool,
}

/// The scanners of one stream.
struct Inspector {
    policies: Arc<PolicySet>,
    scanners: BTreeMap<FieldKey, StreamScanner>,
}

/// One stream of model text: a choice's (or Responses API output item's)
/// field, and for tool calls which call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct FieldKey {
    choice: u64,
    field: Field,
    item: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Field {
    Content,
    Refusal,
    ToolArguments,
    FunctionCallArguments,
    LegacyText,
    OutputText,
    OutputRefusal,
    OutputFunctionArguments,
    /// The shared scanner past [`MAX_SCANNERS`].
    Overflow,
}

/// What one upstream data frame turns into.
enum Step {
    /// Pass these bytes on (possibly empty: all held back).
    Forward(Bytes),
    /// Cut the stream; the error event starts with `prefix`.
    Cut(Verdict, &'static [u8]),
}

/// The OpenAI-style error object for a call blocked by `verdict`, for a
/// refused request, a replaced non-stream response and the error event that
/// ends a cut stream: `{"error": {"message", "type": "policy_violation",
/// "param": null, "code": "policy_violation", "policy": <name>}}`. The
/// message names the policy and the entity types, never the matched text.
pub fn blocked_response_json(verdict: &Verdict) -> Value {
    json!({
        "error": {
            "message": verdict.block_message(),
            "type": "policy_violation",
            "param": null,
            "code": "policy_violation",
            "policy": verdict.policy_name,
        }
    })
}

/// The last frame of a cut stream: `prefix`, the error event and the
/// terminator.
fn cut_frame(prefix: &[u8], verdict: &Verdict) -> Bytes {
    let payload = blocked_response_json(verdict).to_string();
    let mut out = BytesMut::with_capacity(prefix.len() + payload.len() + 32);
    out.extend_from_slice(prefix);
    out.extend_from_slice(b"data: ");
    out.extend_from_slice(payload.as_bytes());
    out.extend_from_slice(b"\n\ndata: [DONE]\n\n");
    out.freeze()
}

// === impl StreamGuard ===

impl<B> StreamGuard<B> {
    /// Guards `inner` with the response-direction block policies of
    /// `policies`. `on_block` is called once, with the verdict, when the
    /// stream is cut. Without such policies the guard is a pass-through.
    pub fn new(inner: B, policies: Arc<PolicySet>, on_block: OnBlock) -> Self {
        let state = policies.blocks(Direction::Response).then(|| {
            Box::new(GuardState {
                lines: LineSplitter::default(),
                inspector: Inspector {
                    policies,
                    scanners: BTreeMap::new(),
                },
                queued: VecDeque::new(),
                done: false,
                on_block: Some(on_block),
            })
        });
        Self {
            inner: Some(inner),
            state,
        }
    }
}

impl<B> Body for StreamGuard<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let mut this = self.project();
        let Some(state) = this.state.as_mut() else {
            return match this.inner.as_pin_mut() {
                Some(inner) => inner
                    .poll_frame(cx)
                    .map(|f| f.map(|f| f.map_err(Into::into))),
                None => Poll::Ready(None),
            };
        };
        loop {
            if let Some(frame) = state.queued.pop_front() {
                return Poll::Ready(Some(Ok(frame)));
            }
            let inner = match this.inner.as_mut().as_pin_mut() {
                Some(inner) if !state.done => inner,
                _ => return Poll::Ready(None),
            };
            match ready!(inner.poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => match state.lines.frame(&data, &mut state.inspector) {
                        Step::Forward(bytes) if bytes.is_empty() && !data.is_empty() => continue,
                        Step::Forward(bytes) => return Poll::Ready(Some(Ok(Frame::data(bytes)))),
                        Step::Cut(verdict, prefix) => {
                            this.inner.set(None);
                            state.cut(prefix, verdict);
                        }
                    },
                    Err(frame) => {
                        // Trailers close the body: what is still open is
                        // judged before they go, as nothing may follow them.
                        if state.end() {
                            this.inner.set(None);
                        } else {
                            state.queued.push_back(frame);
                        }
                    }
                },
                Some(Err(error)) => {
                    // A failed body is over: nothing is judged or emitted
                    // after the error.
                    state.done = true;
                    this.inner.set(None);
                    return Poll::Ready(Some(Err(error.into())));
                }
                None => {
                    state.end();
                    this.inner.set(None);
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.state {
            None => self.inner.as_ref().is_none_or(|b| b.is_end_stream()),
            // Upstream's end alone is not ours: judging the end may still
            // add the error event.
            Some(state) => state.done && state.queued.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match (&self.state, &self.inner) {
            (None, Some(inner)) => inner.size_hint(),
            (Some(state), _) if state.done && state.queued.is_empty() => SizeHint::with_exact(0),
            (None, None) => SizeHint::with_exact(0),
            // The stream may be cut and end with an error event: neither
            // bound is known.
            (Some(_), _) => SizeHint::new(),
        }
    }
}

// === impl GuardState ===

impl GuardState {
    /// Queues the error event, reports the verdict and ends the body.
    fn cut(&mut self, prefix: &[u8], verdict: Verdict) {
        self.queued.clear();
        self.queued
            .push_back(Frame::data(cut_frame(prefix, &verdict)));
        self.done = true;
        if let Some(on_block) = self.on_block.take() {
            on_block(verdict);
        }
    }

    /// Upstream finished: judges the open line and what every scanner still
    /// holds. Returns whether the stream was cut; otherwise the held-back
    /// line is queued and the body ends after the queue.
    fn end(&mut self) -> bool {
        self.done = true;
        let at = self.lines.parser_at();
        let carry = std::mem::take(&mut self.lines.carry);
        let mut verdict = None;
        if !carry.is_empty() && !self.lines.skipping {
            verdict = self.inspector.line(&carry);
        }
        if verdict.is_none() {
            verdict = self.inspector.finish();
        }
        match verdict {
            Some(verdict) => {
                self.cut(at.cut_prefix(), verdict);
                true
            }
            None => {
                if !carry.is_empty() {
                    self.queued.push_back(Frame::data(Bytes::from(carry)));
                }
                false
            }
        }
    }
}

// === impl LineSplitter ===

impl LineSplitter {
    /// Splits `data` into lines, inspects each complete one, and says what
    /// to forward: every complete line (and the line held from the last
    /// frame), unchanged, unless one of them trips a scanner.
    fn frame(&mut self, data: &Bytes, inspector: &mut Inspector) -> Step {
        if data.is_empty() {
            return Step::Forward(data.clone());
        }
        // Nothing of this frame has been forwarded yet, so the app's parser
        // is where the last forwarded frame left it.
        let at = self.parser_at();
        let bytes = &data[..];
        let mut pos = 0;
        if std::mem::take(&mut self.after_cr) && bytes[0] == b'\n' {
            pos = 1;
        }
        let held = self.carry.len();
        // The held line, once its end arrives in this frame.
        let mut flushed: Option<Vec<u8>> = None;
        while let Some(offset) = bytes[pos..].iter().position(|&b| b == b'\n' || b == b'\r') {
            let end = pos + offset;
            let terminator = match (bytes[end], bytes.get(end + 1)) {
                (b'\r', Some(b'\n')) => 2,
                (b'\r', None) => {
                    self.after_cr = true;
                    1
                }
                _ => 1,
            };
            if self.skipping {
                self.skipping = false;
                self.event_open = true;
            } else {
                let verdict = if self.carry.is_empty() {
                    inspector.line(&bytes[pos..end])
                } else {
                    self.carry.extend_from_slice(&bytes[pos..end]);
                    let verdict = inspector.line(&self.carry);
                    self.carry.truncate(held);
                    flushed = Some(std::mem::take(&mut self.carry));
                    verdict
                };
                if let Some(verdict) = verdict {
                    return Step::Cut(verdict, at.cut_prefix());
                }
                self.track(&bytes[pos..end]);
            }
            pos = end + terminator;
        }
        let mut ready = pos;
        if pos < bytes.len() {
            let rest = &bytes[pos..];
            if self.skipping {
                ready = bytes.len();
            } else if self.carry.len() + rest.len() > MAX_LINE {
                // Too long to hold: pass the line on as it comes.
                self.skipping = true;
                ready = bytes.len();
                if !self.carry.is_empty() {
                    flushed = Some(std::mem::take(&mut self.carry));
                }
            } else {
                self.carry.extend_from_slice(rest);
            }
        }
        let out = match flushed {
            None if ready == bytes.len() => data.clone(),
            None => data.slice(..ready),
            Some(mut line) => {
                line.extend_from_slice(&bytes[..ready]);
                Bytes::from(line)
            }
        };
        Step::Forward(out)
    }

    /// Follows event boundaries over a forwarded complete line.
    fn track(&mut self, line: &[u8]) {
        if line.is_empty() {
            self.event_open = false;
        } else if !line.starts_with(b":") {
            self.event_open = true;
        }
    }

    fn parser_at(&self) -> ParserAt {
        ParserAt {
            mid_line: self.skipping,
            after_cr: self.after_cr,
            event_open: self.event_open,
        }
    }
}

// === impl ParserAt ===

impl ParserAt {
    /// What must precede the error event so the app's parser reads it as an
    /// event of its own: the end of an open line and an empty line that
    /// dispatches (or discards) what the app already holds. After a `\r`,
    /// a lone `\n` would only complete that line ending.
    fn cut_prefix(&self) -> &'static [u8] {
        if self.mid_line {
            b"\n\n"
        } else if !self.event_open {
            b""
        } else if self.after_cr {
            b"\r\n"
        } else {
            b"\n"
        }
    }
}

// === impl Inspector ===

impl Inspector {
    /// Feeds the model text of one complete SSE line to its scanners;
    /// returns the first violation. Lines other than `data:` with a JSON
    /// object are ignored.
    fn line(&mut self, line: &[u8]) -> Option<Verdict> {
        let payload = line.strip_prefix(b"data:")?;
        let payload = payload.strip_prefix(b" ").unwrap_or(payload).trim_ascii();
        if payload == b"[DONE]" {
            return self.finish();
        }
        if !payload.starts_with(b"{") {
            return None;
        }
        let value: Value = serde_json::from_slice(payload).ok()?;
        let mut verdict = None;
        model_text(&value, &mut |key, text| {
            if verdict.is_none() {
                verdict = self.feed(key, text);
            }
        });
        if verdict.is_none() && is_terminal_event(&value) {
            verdict = self.finish();
        }
        verdict
    }

    fn feed(&mut self, key: FieldKey, text: &str) -> Option<Verdict> {
        let key = if self.scanners.len() >= MAX_SCANNERS && !self.scanners.contains_key(&key) {
            FieldKey {
                choice: u64::MAX,
                field: Field::Overflow,
                item: 0,
            }
        } else {
            key
        };
        self.scanners
            .entry(key)
            .or_insert_with(|| StreamScanner::new(self.policies.clone(), Direction::Response))
            .feed(text)
    }

    /// Ends every scanner; the most severe violation, the first field's
    /// among equals.
    fn finish(&mut self) -> Option<Verdict> {
        self.scanners
            .values_mut()
            .filter_map(StreamScanner::finish)
            .fold(None, |best: Option<Verdict>, v| match best {
                Some(b) if b.severity >= v.severity => Some(b),
                _ => Some(v),
            })
    }
}

/// Whether `value` is a Responses API event that ends the stream.
fn is_terminal_event(value: &Value) -> bool {
    matches!(
        value.get("type").and_then(Value::as_str),
        Some("response.completed" | "response.incomplete" | "response.failed")
    )
}

/// Calls `f` with each piece of text the model writes in one stream event:
/// chat chunks' `delta.content`, `delta.refusal`, tool call and legacy
/// function call `arguments`, legacy completions' `text`, and the `delta`
/// of Responses API text, refusal and function-argument events.
fn model_text(value: &Value, f: &mut impl FnMut(FieldKey, &str)) {
    let index = |v: &Value, position: usize| {
        v.get("index")
            .and_then(Value::as_u64)
            .unwrap_or(position as u64)
    };
    if let Some(choices) = value.get("choices").and_then(Value::as_array) {
        for (position, choice) in choices.iter().enumerate() {
            let choice_index = index(choice, position);
            let mut emit = |field, item, text: Option<&Value>| {
                if let Some(text) = text.and_then(Value::as_str) {
                    let key = FieldKey {
                        choice: choice_index,
                        field,
                        item,
                    };
                    f(key, text);
                }
            };
            emit(Field::LegacyText, 0, choice.get("text"));
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            emit(Field::Content, 0, delta.get("content"));
            emit(Field::Refusal, 0, delta.get("refusal"));
            emit(
                Field::FunctionCallArguments,
                0,
                delta.pointer("/function_call/arguments"),
            );
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for (position, call) in calls.iter().enumerate() {
                    emit(
                        Field::ToolArguments,
                        index(call, position),
                        call.pointer("/function/arguments"),
                    );
                }
            }
        }
        return;
    }
    let field = match value.get("type").and_then(Value::as_str) {
        Some("response.output_text.delta") => Field::OutputText,
        Some("response.refusal.delta") => Field::OutputRefusal,
        Some("response.function_call_arguments.delta") => Field::OutputFunctionArguments,
        _ => return,
    };
    if let Some(text) = value.get("delta").and_then(Value::as_str) {
        let number = |name| value.get(name).and_then(Value::as_u64).unwrap_or(0);
        let key = FieldKey {
            choice: number("output_index"),
            field,
            item: number("content_index"),
        };
        f(key, text);
    }
}

#[cfg(test)]
mod tests;

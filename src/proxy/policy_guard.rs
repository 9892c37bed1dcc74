//! Enforcing response-direction `block` policies on a streamed completion
//! while it passes, without buffering the stream.
//!
//! [`StreamGuard`] wraps the upstream body of an SSE response. It splits
//! each frame into Server-Sent Events lines, reads the JSON of every
//! `data:` line, and feeds the text the model writes to one
//! [`StreamScanner`] per choice and field, so a card number spread over
//! three chunks is caught while digits of two different choices are never
//! joined into one.
//!
//! What reaches the app is always upstream's bytes, never re-encoded, and
//! only whole lines that have been inspected: a line that is still open at
//! the end of a frame is held back until its end arrives (up to
//! [`MAX_LINE`]).
//!
//! # Holding back the tail
//!
//! A line is forwarded only once all the text it carries lies before its
//! field's hold point ([`StreamScanner::hold_from`]): text that is, or could
//! still grow into, the whole of a blocked entity waits (the digits of a
//! card, `sk-pro…`), and is released as soon as the next text shows it can
//! no longer become one. Lines after a held line, of any field and non-data
//! lines alike, wait behind it in order. Released lines go out in the
//! frames they arrived in, so a clean prose stream keeps its frame count,
//! and ordinary words are never held. At most [`MAX_HELD`] bytes wait: past
//! that, the oldest lines are released (each field's own hold is already
//! bounded by the scanner's window).
//!
//! # Cutting
//!
//! When a line trips a scanner, it and every held line are dropped, the app
//! gets one SSE error event (the [`blocked_response_json`] object) and
//! `data: [DONE]`, and the upstream body is dropped, which cancels the
//! upstream call. The error event is framed for what the app's SSE parser
//! has really seen, that is the lines forwarded so far. The same error
//! shape is used for chat, legacy and Responses API streams: the official
//! OpenAI SDKs raise an `APIError` for any `data:` event whose JSON has an
//! `error` member.
//!
//! A match at the very end of a field is judged when the stream ends: at
//! `data: [DONE]`, at a terminal Responses API event (`response.completed`,
//! `response.incomplete`, `response.failed`), or when upstream's body ends.
//! It is held until then, and the error event replaces it.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use serde_json::{json, Value};

use super::body::BoxError;
use crate::capture::json_view::{JsonView, Scratch};
use crate::capture::summary::{Cleaned, JsonRead};
use crate::policy::{Direction, PolicySet, StreamScanner, Verdict};

/// Longest SSE line held back for inspection. A longer line is passed on
/// uninspected as it arrives, so a single runaway line cannot make the
/// proxy hold unbounded memory.
pub const MAX_LINE: usize = 1 << 20;

/// Most bytes of inspected lines waiting behind a held tail. Past it the
/// oldest are released, so lines of other fields or non-data lines cannot
/// pile up without bound behind a field that stays held.
pub const MAX_HELD: usize = 1 << 20;

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
    held: Held,
    /// What the app's SSE parser holds, over the bytes really forwarded.
    app: ParserAt,
    /// Frames to emit before polling upstream again.
    queued: VecDeque<Frame<Bytes>>,
    /// Upstream ended, failed or was cut: only `queued` remains.
    done: bool,
    on_block: Option<OnBlock>,
}

/// Incremental SSE line splitting over upstream's frames.
#[derive(Debug, Default)]
struct LineSplitter {
    /// The open line at the end of the last frame, not yet inspected.
    carry: Vec<u8>,
    /// The open line outgrew [`MAX_LINE`]: it is passed on uninspected up
    /// to its end.
    skipping: bool,
    /// The last byte seen was a `\r`, so a `\n` starting the next frame
    /// completes that line ending instead of making an empty line.
    after_cr: bool,
    /// Upstream frames seen: released pieces are regrouped by it.
    frame: u64,
}

/// Inspected pieces of the stream waiting for their fields' hold points,
/// in upstream order.
#[derive(Default)]
struct Held {
    pieces: VecDeque<Piece>,
    bytes: usize,
}

/// A run of upstream bytes: a whole line with its ending, the `\n` that
/// completes a `\r\n` split over two frames, or a stretch of an overlong
/// line passed on uninspected.
struct Piece {
    /// The frame's bytes (or the line joined from two frames); the piece is
    /// `source[start..end]`, so adjacent pieces of one frame go out as one
    /// slice of it.
    source: Bytes,
    start: usize,
    end: usize,
    /// The upstream frame it ended in.
    frame: u64,
    kind: PieceKind,
    /// Per field fed by this line: the field's text offset after it. The
    /// line may go once every field's hold point has reached its offset.
    marks: Vec<(FieldKey, u64)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PieceKind {
    /// A complete line: empty (dispatches), a comment, or a field line.
    Line { empty: bool, comment: bool },
    /// The `\n` of a `\r\n` whose `\r` ended the last frame.
    LineEndRest,
    /// Part of an overlong line; `ends` when its line ending is included.
    Overlong { ends: bool },
}

/// What the app's parser holds at the last forwarded byte; decides how the
/// error event must start to be read as an event of its own.
#[derive(Debug, Clone, Copy, Default)]
struct ParserAt {
    mid_line: bool,
    after_cr: bool,
    event_open: bool,
}

/// The scanners of one stream.
struct Inspector {
    policies: Arc<PolicySet>,
    scanners: BTreeMap<FieldKey, StreamScanner>,
    /// The JSON reader's buffers, kept from line to line.
    scratch: Scratch,
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
                    scratch: Scratch::default(),
                },
                held: Held::default(),
                app: ParserAt::default(),
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
                    Ok(data) => {
                        if let Some(verdict) = state.data(&data) {
                            this.inner.set(None);
                            state.cut(verdict);
                        }
                    }
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
                    // after the error, and held lines are dropped.
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
    /// Inspects one upstream data frame and queues what may go; returns the
    /// verdict when a line trips a scanner.
    fn data(&mut self, data: &Bytes) -> Option<Verdict> {
        if data.is_empty() {
            return None;
        }
        if let Some(verdict) = self.lines.frame(data, &mut self.inspector, &mut self.held) {
            return Some(verdict);
        }
        self.release(false);
        None
    }

    /// Drops what is held, queues the error event, reports the verdict and
    /// ends the body.
    fn cut(&mut self, verdict: Verdict) {
        self.held = Held::default();
        self.queued
            .push_back(Frame::data(cut_frame(self.app.cut_prefix(), &verdict)));
        self.done = true;
        if let Some(on_block) = self.on_block.take() {
            on_block(verdict);
        }
    }

    /// Upstream finished: judges the open line and what every scanner still
    /// holds. Returns whether the stream was cut; otherwise everything held
    /// is queued and the body ends after the queue.
    fn end(&mut self) -> bool {
        self.done = true;
        let carry = std::mem::take(&mut self.lines.carry);
        let mut verdict = None;
        let mut marks = Vec::new();
        if !carry.is_empty() && !self.lines.skipping {
            verdict = self.inspector.line(&carry, &mut marks);
        }
        if verdict.is_none() {
            verdict = self.inspector.finish();
        }
        if let Some(verdict) = verdict {
            self.cut(verdict);
            return true;
        }
        if !carry.is_empty() {
            let kind = if self.lines.skipping {
                PieceKind::Overlong { ends: false }
            } else {
                PieceKind::Line {
                    empty: false,
                    comment: carry.starts_with(b":"),
                }
            };
            let end = carry.len();
            self.held.push(Piece {
                source: Bytes::from(carry),
                start: 0,
                end,
                frame: self.lines.frame + 1,
                kind,
                marks,
            });
        }
        self.release(true);
        false
    }

    /// Moves the pieces whose fields' hold points have passed them (all of
    /// them when `all`) from the front of the held queue to the output,
    /// one frame per upstream frame.
    fn release(&mut self, all: bool) {
        let pieces = &self.held.pieces;
        let mut due = if all {
            pieces.len()
        } else {
            pieces
                .iter()
                .position(|piece| {
                    !piece
                        .marks
                        .iter()
                        .all(|(key, end)| self.inspector.hold_from(key) >= *end)
                })
                .unwrap_or(pieces.len())
        };
        // A frame goes out whole or waits whole, so frames keep their
        // count; an `event:` line waits with the `data:` line it names.
        if let (Some(last), Some(next)) = (
            due.checked_sub(1).and_then(|i| pieces.get(i)),
            pieces.get(due),
        ) {
            if last.frame == next.frame {
                due = pieces
                    .iter()
                    .position(|piece| piece.frame == next.frame)
                    .unwrap_or(0);
            }
        }
        // Past the bound, the oldest go whatever they hold.
        let mut over = self.held.bytes.saturating_sub(MAX_HELD);
        for piece in pieces.iter().skip(due) {
            if over == 0 {
                break;
            }
            over = over.saturating_sub(piece.end - piece.start);
            due += 1;
        }
        let mut out = FrameOut::default();
        for _ in 0..due {
            let Some(piece) = self.held.pop() else {
                break;
            };
            self.app.forwarded(&piece);
            out.add(piece, &mut self.queued);
        }
        out.flush(&mut self.queued);
    }
}

/// Regroups released pieces into one frame per upstream frame.
#[derive(Default)]
struct FrameOut {
    frame: u64,
    /// Finished runs of the current frame.
    parts: Vec<Bytes>,
    /// The open run: a slice of one source, grown while pieces follow on.
    run: Option<(Bytes, usize, usize)>,
}

// === impl FrameOut ===

impl FrameOut {
    fn add(&mut self, piece: Piece, queued: &mut VecDeque<Frame<Bytes>>) {
        if piece.frame != self.frame {
            self.flush(queued);
            self.frame = piece.frame;
        }
        match &mut self.run {
            Some((source, _, end))
                if *end == piece.start
                    && source.as_ptr() == piece.source.as_ptr()
                    && source.len() == piece.source.len() =>
            {
                *end = piece.end;
            }
            run => {
                if let Some((source, start, end)) = run.take() {
                    self.parts.push(source.slice(start..end));
                }
                *run = Some((piece.source, piece.start, piece.end));
            }
        }
    }

    /// Queues the current frame, if any: zero-copy when it is one run.
    fn flush(&mut self, queued: &mut VecDeque<Frame<Bytes>>) {
        if let Some((source, start, end)) = self.run.take() {
            self.parts.push(source.slice(start..end));
        }
        let bytes = match self.parts.len() {
            0 => return,
            1 => self.parts.pop().unwrap_or_default(),
            _ => {
                let mut joined = BytesMut::new();
                for part in self.parts.drain(..) {
                    joined.extend_from_slice(&part);
                }
                joined.freeze()
            }
        };
        queued.push_back(Frame::data(bytes));
    }
}

// === impl Held ===

impl Held {
    fn push(&mut self, piece: Piece) {
        self.bytes += piece.end - piece.start;
        self.pieces.push_back(piece);
    }

    fn pop(&mut self) -> Option<Piece> {
        let piece = self.pieces.pop_front()?;
        self.bytes -= piece.end - piece.start;
        Some(piece)
    }
}

// === impl LineSplitter ===

impl LineSplitter {
    /// Splits `data` into lines, inspects each complete one and adds it to
    /// `held`; returns the verdict if one trips a scanner.
    fn frame(
        &mut self,
        data: &Bytes,
        inspector: &mut Inspector,
        held: &mut Held,
    ) -> Option<Verdict> {
        self.frame += 1;
        let frame = self.frame;
        let bytes = &data[..];
        let mut pos = 0;
        if std::mem::take(&mut self.after_cr) && bytes[0] == b'\n' {
            pos = 1;
            held.push(Piece {
                source: data.clone(),
                start: 0,
                end: 1,
                frame,
                kind: PieceKind::LineEndRest,
                marks: Vec::new(),
            });
        }
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
            let next = end + terminator;
            if self.skipping {
                self.skipping = false;
                held.push(Piece {
                    source: data.clone(),
                    start: pos,
                    end: next,
                    frame,
                    kind: PieceKind::Overlong { ends: true },
                    marks: Vec::new(),
                });
            } else {
                let mut marks = Vec::new();
                let (source, start, stop, line_len) = if self.carry.is_empty() {
                    (data.clone(), pos, next, end - pos)
                } else {
                    let mut line = std::mem::take(&mut self.carry);
                    line.extend_from_slice(&bytes[pos..next]);
                    let len = line.len() - terminator;
                    let stop = line.len();
                    (Bytes::from(line), 0, stop, len)
                };
                let text = &source[start..start + line_len];
                if let Some(verdict) = inspector.line(text, &mut marks) {
                    return Some(verdict);
                }
                let kind = PieceKind::Line {
                    empty: text.is_empty(),
                    comment: text.starts_with(b":"),
                };
                held.push(Piece {
                    source,
                    start,
                    end: stop,
                    frame,
                    kind,
                    marks,
                });
            }
            pos = next;
        }
        if pos < bytes.len() {
            let rest = &bytes[pos..];
            if self.skipping {
                held.push(Piece {
                    source: data.clone(),
                    start: pos,
                    end: bytes.len(),
                    frame,
                    kind: PieceKind::Overlong { ends: false },
                    marks: Vec::new(),
                });
            } else if self.carry.len() + rest.len() > MAX_LINE {
                // Too long to hold: pass the line on as it comes.
                self.skipping = true;
                let mut line = std::mem::take(&mut self.carry);
                line.extend_from_slice(rest);
                let end = line.len();
                held.push(Piece {
                    source: Bytes::from(line),
                    start: 0,
                    end,
                    frame,
                    kind: PieceKind::Overlong { ends: false },
                    marks: Vec::new(),
                });
            } else {
                self.carry.extend_from_slice(rest);
            }
        }
        None
    }
}

// === impl ParserAt ===

impl ParserAt {
    /// Follows the app's parser over a piece just forwarded.
    fn forwarded(&mut self, piece: &Piece) {
        if piece.end > piece.start {
            self.after_cr = piece.source[piece.end - 1] == b'\r';
        }
        match piece.kind {
            PieceKind::Line { empty: true, .. } => {
                self.mid_line = false;
                self.event_open = false;
            }
            PieceKind::Line { comment, .. } => {
                self.mid_line = false;
                self.event_open |= !comment;
            }
            PieceKind::LineEndRest => {}
            PieceKind::Overlong { ends } => {
                self.mid_line = !ends;
                self.event_open = true;
            }
        }
    }

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
    fn line(&mut self, line: &[u8], marks: &mut Vec<(FieldKey, u64)>) -> Option<Verdict> {
        let payload = line.strip_prefix(b"data:")?;
        let payload = payload.strip_prefix(b" ").unwrap_or(payload).trim_ascii();
        if payload == b"[DONE]" {
            return self.finish();
        }
        if !payload.starts_with(b"{") {
            return None;
        }
        // Read through a view of the line; JSON the view leaves to
        // serde_json (deep nesting) is still inspected, as a value.
        match JsonView::parse_with(payload, &mut self.scratch) {
            Some(view) => self.event(
                Cleaned {
                    at: view.root(),
                    replaced: &[],
                },
                marks,
            ),
            None => {
                let value: Value = serde_json::from_slice(payload).ok()?;
                self.event(&value, marks)
            }
        }
    }

    /// Feeds one event's model text; a terminal event ends every scanner.
    fn event<'s>(
        &mut self,
        event: impl JsonRead<'s>,
        marks: &mut Vec<(FieldKey, u64)>,
    ) -> Option<Verdict> {
        let mut verdict = None;
        model_text(event, &mut |key, text| {
            if verdict.is_none() {
                verdict = self.feed(key, text, marks);
            }
        });
        if verdict.is_none() && is_terminal_event(event) {
            verdict = self.finish();
        }
        verdict
    }

    fn feed(
        &mut self,
        key: FieldKey,
        text: &str,
        marks: &mut Vec<(FieldKey, u64)>,
    ) -> Option<Verdict> {
        let key = if self.scanners.len() >= MAX_SCANNERS && !self.scanners.contains_key(&key) {
            FieldKey {
                choice: u64::MAX,
                field: Field::Overflow,
                item: 0,
            }
        } else {
            key
        };
        let scanner = self
            .scanners
            .entry(key)
            .or_insert_with(|| StreamScanner::new(self.policies.clone(), Direction::Response));
        let verdict = scanner.feed(text);
        marks.push((key, scanner.fed()));
        verdict
    }

    /// The text offset of `key`'s field up to which lines may go.
    fn hold_from(&self, key: &FieldKey) -> u64 {
        self.scanners
            .get(key)
            .map_or(u64::MAX, StreamScanner::hold_from)
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
fn is_terminal_event<'s>(value: impl JsonRead<'s>) -> bool {
    matches!(
        value.get("type").and_then(JsonRead::text).as_deref(),
        Some("response.completed" | "response.incomplete" | "response.failed")
    )
}

/// The items of an array, or nothing.
fn items<'s, J: JsonRead<'s>>(array: Option<J>) -> impl Iterator<Item = J> {
    let array = array.filter(|a| a.is_array());
    (0..).map_while(move |i| array?.item(i))
}

/// Calls `f` with each piece of text the model writes in one stream event:
/// chat chunks' `delta.content`, `delta.refusal`, tool call and legacy
/// function call `arguments`, legacy completions' `text`, and the `delta`
/// of Responses API text, refusal and function-argument events.
fn model_text<'s>(value: impl JsonRead<'s>, f: &mut impl FnMut(FieldKey, &str)) {
    fn index<'s>(v: impl JsonRead<'s>, position: usize) -> u64 {
        v.get("index")
            .and_then(JsonRead::as_u64)
            .unwrap_or(position as u64)
    }
    if let Some(choices) = value.get("choices").filter(|c| c.is_array()) {
        for (position, choice) in items(Some(choices)).enumerate() {
            let choice_index = index(choice, position);
            let mut emit = |field, item, text: Option<Cow<'_, str>>| {
                if let Some(text) = text {
                    let key = FieldKey {
                        choice: choice_index,
                        field,
                        item,
                    };
                    f(key, &text);
                }
            };
            emit(
                Field::LegacyText,
                0,
                choice.get("text").and_then(JsonRead::text),
            );
            let Some(delta) = choice.get("delta") else {
                continue;
            };
            emit(
                Field::Content,
                0,
                delta.get("content").and_then(JsonRead::text),
            );
            emit(
                Field::Refusal,
                0,
                delta.get("refusal").and_then(JsonRead::text),
            );
            emit(
                Field::FunctionCallArguments,
                0,
                delta
                    .get("function_call")
                    .and_then(|c| c.get("arguments"))
                    .and_then(JsonRead::text),
            );
            for (position, call) in items(delta.get("tool_calls")).enumerate() {
                emit(
                    Field::ToolArguments,
                    index(call, position),
                    call.get("function")
                        .and_then(|c| c.get("arguments"))
                        .and_then(JsonRead::text),
                );
            }
        }
        return;
    }
    let field = match value.get("type").and_then(JsonRead::text).as_deref() {
        Some("response.output_text.delta") => Field::OutputText,
        Some("response.refusal.delta") => Field::OutputRefusal,
        Some("response.function_call_arguments.delta") => Field::OutputFunctionArguments,
        _ => return,
    };
    if let Some(text) = value.get("delta").and_then(JsonRead::text) {
        let number = |name| value.get(name).and_then(JsonRead::as_u64).unwrap_or(0);
        let key = FieldKey {
            choice: number("output_index"),
            field,
            item: number("content_index"),
        };
        f(key, &text);
    }
}

#[cfg(test)]
mod tests;

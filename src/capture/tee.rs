//! A body wrapper that forwards every frame untouched and keeps a capped
//! copy for the audit record.
//!
//! The copy is handed over exactly once, when the body ends, fails or is
//! dropped. Drop is how a client that went away is noticed: hyper drops the
//! response body when the connection closes, and the wrapped upstream body
//! goes with it, which cancels the upstream call.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;

/// How a captured body ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// The last frame was passed on.
    Complete,
    /// The body failed; the message is the error's text.
    Error(String),
    /// The body was dropped before its end (the reader went away).
    Dropped,
}

/// What a tee saw of one body.
#[derive(Debug, Clone)]
pub struct Captured {
    /// Up to the cap, from the start of the body.
    pub bytes: Bytes,
    /// Every data byte that passed, captured or not.
    pub total_bytes: u64,
    /// True when `total_bytes` exceeds what `bytes` holds.
    pub truncated: bool,
    pub end: BodyEnd,
    pub first_byte_at: Option<Instant>,
    pub ended_at: Instant,
    /// An event stream's terminal event (`data: [DONE]`, or a Responses
    /// API `response.completed`, `.incomplete` or `.failed`) passed after
    /// the capture was full, where the record cannot see it.
    pub terminal_past_cap: bool,
}

/// Event-stream markers of a stream's end, looked for in the bytes that
/// pass after the capture is full.
const TERMINAL_MARKERS: [&[u8]; 4] = [
    b"data: [DONE]",
    b"response.completed\"",
    b"response.incomplete\"",
    b"response.failed\"",
];

/// Bytes kept from the end of one chunk past the cap, so a marker split
/// across two chunks is still found.
const MARKER_CARRY: usize = 32;

/// The error text of a body that upstream left idle too long, so records
/// can tell a timeout from other failures.
pub const IDLE_TIMEOUT_MESSAGE: &str = "upstream stream idle timeout";

/// Called once with the capture.
pub type OnDone = Box<dyn FnOnce(Captured) + Send + 'static>;

/// Takes the capture once it ends: a sink its owner already shares, so
/// the capture needs no callback of its own (see [`Capture::into_sink`]).
pub trait CaptureSink: Send + Sync {
    fn captured(&self, captured: Captured);
}

/// Told as a capture comes to hold more bytes, so that what the call holds
/// can be accounted for (a `fail_closed` reservation grows by it).
pub trait CaptureGrowth: Send + Sync {
    /// Bytes a capture may hold before it reports any growth.
    fn allowance(&self) -> usize;
    /// The capture may now hold `bytes` more than last reported.
    fn grew(&self, bytes: u64);
}

/// Growth is reported in steps of this many bytes, so a stream of small
/// chunks costs one report a step rather than one a chunk.
const GROWTH_STEP: usize = 16 * 1024;

/// A capture's growth reports, and how far they cover.
struct Growth {
    to: Arc<dyn CaptureGrowth>,
    covered: usize,
}

/// Where the capture goes when the body ends.
enum Done {
    Call(OnDone),
    Sink(Arc<dyn CaptureSink>),
}

/// Tells whoever waits for a body to begin that it has, by being dropped
/// once its first byte has passed (or with the capture, when none did).
pub enum FirstByteSignal {
    /// The waiter holds the receiver.
    Channel(tokio::sync::oneshot::Sender<()>),
    /// The waiter shares state that it already allocated.
    Shared(Arc<dyn FirstByteWatch>),
}

/// Told by a [`FirstByteSignal::Shared`] when the signal is dropped.
pub trait FirstByteWatch: Send + Sync {
    fn first_byte_passed(&self);
}

impl Drop for FirstByteSignal {
    fn drop(&mut self) {
        if let FirstByteSignal::Shared(watch) = self {
            watch.first_byte_passed();
        }
    }
}

impl From<tokio::sync::oneshot::Sender<()>> for FirstByteSignal {
    fn from(sender: tokio::sync::oneshot::Sender<()>) -> Self {
        FirstByteSignal::Channel(sender)
    }
}

/// The copy being built.
pub struct Capture {
    buf: BytesMut,
    /// Bytes shared rather than copied (see [`Capture::observe_shared`]),
    /// while they are all the capture holds; `buf` is then empty.
    shared: Option<Bytes>,
    cap: usize,
    total: u64,
    first_byte_at: Option<Instant>,
    on_done: Option<Done>,
    /// Dropped when the first byte passes (or with the capture), which
    /// wakes whoever waits for the body to begin.
    on_first_byte: Option<FirstByteSignal>,
    /// The last bytes seen past the cap (at most [`MARKER_CARRY`]).
    carry: Vec<u8>,
    terminal_past_cap: bool,
    /// Told as the capture grows past its allowance.
    growth: Option<Growth>,
}

pin_project! {
    /// Forwards `inner` frame by frame while copying data into a [`Capture`].
    pub struct TeeBody<B> {
        #[pin]
        inner: B,
        capture: Option<Capture>,
        // An empty body may never be polled; its drop is its end.
        ended_at_start: bool,
    }

    impl<B> PinnedDrop for TeeBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(capture) = this.capture.take() {
                let end = if *this.ended_at_start {
                    BodyEnd::Complete
                } else {
                    BodyEnd::Dropped
                };
                capture.finish(end);
            }
        }
    }
}

// === impl Capture ===

impl Capture {
    /// A capture that keeps at most `cap` bytes and calls `on_done` once.
    pub fn new(cap: usize, on_done: OnDone) -> Self {
        Self::ending(cap, Done::Call(on_done))
    }

    /// A capture that keeps at most `cap` bytes and hands them to `sink`
    /// once.
    pub fn into_sink(cap: usize, sink: Arc<dyn CaptureSink>) -> Self {
        Self::ending(cap, Done::Sink(sink))
    }

    fn ending(cap: usize, on_done: Done) -> Self {
        Self {
            buf: BytesMut::new(),
            shared: None,
            cap,
            total: 0,
            first_byte_at: None,
            on_done: Some(on_done),
            on_first_byte: None,
            carry: Vec::new(),
            terminal_past_cap: false,
            growth: None,
        }
    }

    /// Reports to `to` as the capture comes to hold more than its
    /// allowance, in steps, never past the cap.
    pub fn report_growth(&mut self, to: Option<Arc<dyn CaptureGrowth>>) {
        self.growth = to.map(|to| Growth {
            covered: to.allowance(),
            to,
        });
        self.report_held();
    }

    /// Reports what the capture holds beyond what was reported.
    fn report_held(&mut self) {
        let held = self.held();
        let cap = self.cap;
        if let Some(growth) = &mut self.growth {
            if held > growth.covered {
                let covered = held.next_multiple_of(GROWTH_STEP).min(cap).max(held);
                growth.to.grew((covered - growth.covered) as u64);
                growth.covered = covered;
            }
        }
    }

    /// Drops `signal` once the first byte has passed.
    pub fn signal_first_byte(&mut self, signal: Option<impl Into<FirstByteSignal>>) {
        self.on_first_byte = signal.map(Into::into);
    }

    /// Records `data` as having passed.
    pub fn observe(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.mark_first_byte();
        self.total += data.len() as u64;
        if let Some(shared) = self.shared.take() {
            self.buf.extend_from_slice(&shared);
        }
        let room = self.cap.saturating_sub(self.buf.len());
        if room > 0 {
            self.buf.extend_from_slice(&data[..data.len().min(room)]);
            if data.len() > room {
                // A marker may straddle the cap.
                let kept = self.buf.len().saturating_sub(MARKER_CARRY);
                self.carry.extend_from_slice(&self.buf[kept..]);
            }
        }
        if data.len() > room {
            self.watch_past_cap(&data[room..]);
        }
        self.report_held();
    }

    /// As [`Self::observe`], for bytes the caller already holds in one
    /// piece (a request body read before it goes on): when they are the
    /// first and fit under the cap, the capture shares them instead of
    /// copying them.
    pub fn observe_shared(&mut self, data: &Bytes) {
        if data.is_empty() || self.total > 0 || data.len() > self.cap {
            self.observe(data);
            return;
        }
        self.mark_first_byte();
        self.total = data.len() as u64;
        self.shared = Some(data.clone());
        self.report_held();
    }

    /// Notes when the first byte passed, and lets whoever waits for it go.
    fn mark_first_byte(&mut self) {
        if self.first_byte_at.is_none() {
            self.first_byte_at = Some(Instant::now());
            self.on_first_byte = None;
        }
    }

    /// Looks for a terminal event in bytes the capture does not keep, so a
    /// stream longer than the cap that the app leaves after its end is
    /// still known to be complete. Costs nothing below the cap.
    fn watch_past_cap(&mut self, beyond: &[u8]) {
        let head = &beyond[..beyond.len().min(MARKER_CARRY)];
        self.carry.extend_from_slice(head);
        let found = |hay: &[u8]| {
            TERMINAL_MARKERS
                .iter()
                .any(|m| memchr::memmem::find(hay, m).is_some())
        };
        if found(&self.carry) || found(beyond) {
            self.terminal_past_cap = true;
        }
        let tail_from = beyond.len().saturating_sub(MARKER_CARRY);
        if beyond.len() > MARKER_CARRY {
            self.carry.clear();
        } else {
            let excess = self.carry.len().saturating_sub(MARKER_CARRY);
            self.carry.drain(..excess);
            return;
        }
        self.carry.extend_from_slice(&beyond[tail_from..]);
    }

    pub fn total(&self) -> u64 {
        self.total
    }

    /// True once the capture holds all it may.
    pub fn is_full(&self) -> bool {
        self.held() >= self.cap
    }

    /// How many bytes the capture holds.
    fn held(&self) -> usize {
        self.shared.as_ref().map_or(self.buf.len(), Bytes::len)
    }

    /// Hands the capture over, the first time only.
    fn hand_over(&mut self, end: BodyEnd) {
        match self.on_done.take() {
            Some(Done::Call(on_done)) => on_done(self.captured(end)),
            Some(Done::Sink(sink)) => sink.captured(self.captured(end)),
            None => {}
        }
    }

    /// What was captured, as handed over at the end.
    fn captured(&mut self, end: BodyEnd) -> Captured {
        let bytes = match self.shared.take() {
            Some(shared) => shared,
            None => std::mem::take(&mut self.buf).freeze(),
        };
        Captured {
            truncated: self.total > bytes.len() as u64,
            bytes,
            total_bytes: self.total,
            end,
            first_byte_at: self.first_byte_at,
            ended_at: Instant::now(),
            terminal_past_cap: self.terminal_past_cap,
        }
    }

    /// Ends the capture and hands it over.
    pub fn finish(mut self, end: BodyEnd) {
        self.hand_over(end);
    }

    /// The bytes captured so far.
    pub fn bytes(&self) -> &[u8] {
        self.shared.as_deref().unwrap_or(&self.buf)
    }
}

impl Drop for Capture {
    /// A capture dropped unfinished (its request was cancelled while the
    /// proxy was still reading) is reported as dropped, so every call's
    /// record is completed.
    fn drop(&mut self) {
        self.hand_over(BodyEnd::Dropped);
    }
}

// === impl Captured ===

impl Captured {
    /// Whether an event stream's terminal event passed (`data: [DONE]`, or
    /// a Responses API `response.completed`, `.incomplete` or `.failed`),
    /// in the captured bytes or after them. Searches the capture, so meant
    /// for the rare body that did not end normally.
    pub fn saw_terminal_event(&self) -> bool {
        self.terminal_past_cap
            || TERMINAL_MARKERS
                .iter()
                .any(|m| memchr::memmem::find(&self.bytes, m).is_some())
    }
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture")
            .field("captured", &self.held())
            .field("cap", &self.cap)
            .field("total", &self.total)
            .finish()
    }
}

// === impl TeeBody ===

impl<B: Body> TeeBody<B> {
    pub fn new(inner: B, capture: Capture) -> Self {
        Self {
            ended_at_start: inner.is_end_stream(),
            inner,
            capture: Some(capture),
        }
    }
}

impl<B> Body for TeeBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let mut this = self.project();
        let polled = this.inner.as_mut().poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(capture)) = (frame.data_ref(), this.capture.as_mut()) {
                    capture.observe(data);
                }
                // A body of known length is done after its last byte;
                // hyper may never poll it again to see the end.
                if this.inner.is_end_stream() {
                    if let Some(capture) = this.capture.take() {
                        capture.finish(BodyEnd::Complete);
                    }
                }
            }
            Poll::Ready(Some(Err(error))) => {
                if let Some(capture) = this.capture.take() {
                    capture.finish(BodyEnd::Error(error.to_string()));
                }
            }
            Poll::Ready(None) => {
                if let Some(capture) = this.capture.take() {
                    capture.finish(BodyEnd::Complete);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};
    use std::sync::{Arc, Mutex};

    type Slot = Arc<Mutex<Option<Captured>>>;

    fn tee_of(
        chunks: Vec<Result<&'static str, &'static str>>,
        cap: usize,
    ) -> (impl Body<Data = Bytes, Error = String> + Unpin, Slot) {
        let slot: Slot = Arc::default();
        let s = slot.clone();
        let stream = futures_util::stream::iter(chunks.into_iter().map(|c| {
            c.map(|s| Frame::data(Bytes::from_static(s.as_bytes())))
                .map_err(str::to_owned)
        }));
        let capture = Capture::new(cap, Box::new(move |c| *s.lock().unwrap() = Some(c)));
        (TeeBody::new(StreamBody::new(stream), capture), slot)
    }

    async fn drain<B: Body<Data = Bytes> + Unpin>(mut body: B) -> (Vec<u8>, bool) {
        let mut out = Vec::new();
        while let Some(frame) = body.frame().await {
            match frame {
                Ok(f) => out.extend_from_slice(&f.into_data().unwrap_or_default()),
                Err(_) => return (out, false),
            }
        }
        (out, true)
    }

    #[tokio::test]
    async fn forwards_everything_and_caps_the_copy() {
        let (body, slot) = tee_of(vec![Ok("hello "), Ok("world")], 8);
        let (out, ok) = drain(body).await;
        assert!(ok);
        assert_eq!(out, b"hello world");
        let c = slot.lock().unwrap().take().unwrap();
        assert_eq!(&c.bytes[..], b"hello wo");
        assert_eq!(c.total_bytes, 11);
        assert!(c.truncated);
        assert_eq!(c.end, BodyEnd::Complete);
        assert!(c.first_byte_at.is_some());
    }

    #[test]
    fn shared_bytes_are_kept_as_they_are_and_copied_once_more_follows() {
        let done = |cap: usize, first: &'static [u8], more: &[u8]| {
            let slot: Slot = Arc::default();
            let s = slot.clone();
            let mut capture = Capture::new(cap, Box::new(move |c| *s.lock().unwrap() = Some(c)));
            let first = Bytes::from_static(first);
            capture.observe_shared(&first);
            assert_eq!(capture.bytes(), &first[..first.len().min(cap)]);
            capture.observe(more);
            capture.finish(BodyEnd::Complete);
            let captured = slot.lock().unwrap().take().unwrap();
            (first, captured)
        };
        // The whole body, under the cap: the same bytes, not a copy.
        let (first, c) = done(16, b"hello", b"");
        assert_eq!(c.bytes.as_ptr(), first.as_ptr());
        assert_eq!(
            (&c.bytes[..], c.total_bytes, c.truncated),
            (&b"hello"[..], 5, false)
        );
        assert!(c.first_byte_at.is_some());
        // More after them: copied together, up to the cap.
        let (_, c) = done(8, b"hello", b" world");
        assert_eq!(
            (&c.bytes[..], c.total_bytes, c.truncated),
            (&b"hello wo"[..], 11, true)
        );
        // Longer than the cap: copied up to it.
        let (first, c) = done(4, b"hello", b"");
        assert_ne!(c.bytes.as_ptr(), first.as_ptr());
        assert_eq!(
            (&c.bytes[..], c.total_bytes, c.truncated),
            (&b"hell"[..], 5, true)
        );
    }

    #[tokio::test]
    async fn reports_errors() {
        let (body, slot) = tee_of(vec![Ok("part"), Err("reset")], 100);
        let (out, ok) = drain(body).await;
        assert!(!ok);
        assert_eq!(out, b"part");
        let c = slot.lock().unwrap().take().unwrap();
        assert_eq!(c.end, BodyEnd::Error("reset".into()));
        assert!(!c.truncated);
    }

    #[tokio::test]
    async fn reports_drop_before_the_end() {
        let (mut body, slot) = tee_of(vec![Ok("a"), Ok("b"), Ok("c")], 100);
        let _ = body.frame().await;
        drop(body);
        let c = slot.lock().unwrap().take().unwrap();
        assert_eq!(c.end, BodyEnd::Dropped);
        assert_eq!(&c.bytes[..], b"a");
    }

    #[tokio::test]
    async fn terminal_events_past_the_cap_are_noticed() {
        let chunk = "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}\n\n";
        for (chunks, terminal) in [
            (vec![Ok(chunk), Ok(chunk), Ok("data: [DONE]\n\n")], true),
            // Split across chunks, and across the cap.
            (vec![Ok(chunk), Ok("data: [DO"), Ok("NE]\n\n")], true),
            (vec![Ok("data: [DONE]\n\n")], false),
            (
                vec![
                    Ok(chunk),
                    Ok("event: response.completed\ndata: {\"type\":\"response.completed\"}\n\n"),
                ],
                true,
            ),
            (vec![Ok(chunk), Ok(chunk), Ok(chunk)], false),
        ] {
            let cap = if terminal { chunk.len() - 4 } else { 64 };
            let (body, slot) = tee_of(chunks.clone(), cap);
            let _ = drain(body).await;
            let c = slot.lock().unwrap().take().unwrap();
            assert_eq!(c.terminal_past_cap, terminal, "{chunks:?}");
        }
    }

    #[test]
    fn first_byte_signal_is_dropped_by_the_first_data_or_the_end() {
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let mut capture = Capture::new(16, Box::new(|_| {}));
        capture.signal_first_byte(Some(tx));
        capture.observe(b"");
        assert!(rx
            .try_recv()
            .is_err_and(|e| e == tokio::sync::oneshot::error::TryRecvError::Empty));
        capture.observe(b"data: {}");
        assert!(rx
            .try_recv()
            .is_err_and(|e| e == tokio::sync::oneshot::error::TryRecvError::Closed));

        // A body that ends without a byte still lets the waiter go.
        let (tx, mut rx) = tokio::sync::oneshot::channel::<()>();
        let mut capture = Capture::new(16, Box::new(|_| {}));
        capture.signal_first_byte(Some(tx));
        capture.finish(BodyEnd::Complete);
        assert!(rx
            .try_recv()
            .is_err_and(|e| e == tokio::sync::oneshot::error::TryRecvError::Closed));
    }

    /// Sums what a capture reports.
    #[derive(Default)]
    struct Grown(std::sync::atomic::AtomicU64);

    impl CaptureGrowth for Grown {
        fn allowance(&self) -> usize {
            100
        }
        fn grew(&self, bytes: u64) {
            self.0
                .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn growth_past_the_allowance_is_reported_in_steps_up_to_the_cap() {
        let grown = Arc::new(Grown::default());
        let reported = || grown.0.load(std::sync::atomic::Ordering::Relaxed);
        let cap = 3 * GROWTH_STEP;
        let mut capture = Capture::new(cap, Box::new(|_| {}));
        capture.report_growth(Some(grown.clone()));
        capture.observe(&[b'a'; 100]);
        assert_eq!(reported(), 0, "within the allowance");
        capture.observe(b"b");
        assert_eq!(reported(), (GROWTH_STEP - 100) as u64, "a step at once");
        capture.observe(&vec![b'c'; GROWTH_STEP - 200]);
        assert_eq!(reported(), (GROWTH_STEP - 100) as u64, "within the step");
        capture.observe(&vec![b'd'; 4 * GROWTH_STEP]);
        assert_eq!(reported(), (cap - 100) as u64, "never past the cap");
        // Shared bytes count as held too.
        let grown = Arc::new(Grown::default());
        let mut capture = Capture::new(cap, Box::new(|_| {}));
        capture.report_growth(Some(grown.clone()));
        capture.observe_shared(&Bytes::from(vec![b'e'; GROWTH_STEP + 1]));
        assert_eq!(
            grown.0.load(std::sync::atomic::Ordering::Relaxed),
            (2 * GROWTH_STEP - 100) as u64
        );
    }
}

//! What the request path hands one call's record task: the request
//! capture, what request policies learnt, the response's outcome, and the
//! signal that the answer has begun.
//!
//! Each is sent at most once, by a different part of the proxy, and read
//! by the one record task. Four channels cost four allocations per call;
//! these slots share one, and the task's one waker.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;

use super::{RequestPrescan, ResponseOutcome};
use crate::capture::tee::{BodyEnd, CaptureSink, Captured, FirstByteSignal, FirstByteWatch};

/// The slots of one call.
pub(super) struct Shared {
    request: Slot<Captured>,
    prescan: Slot<RequestPrescan>,
    response: Slot<ResponseOutcome>,
    answer_started: Slot<()>,
    /// Set when the app's request body broke off (see
    /// [`CallFlags::request_body_failed`]).
    request_failed: AtomicBool,
    /// The record task's, registered before it looks at a slot.
    waker: AtomicWaker,
}

/// One value on its way, or why none will come.
struct Slot<T>(Mutex<State<T>>);

enum State<T> {
    Waiting,
    Sent(T),
    /// The sender went away without sending, or the value was taken.
    Closed,
}

/// Which slot a sender or a read is for.
type Pick<T> = fn(&Shared) -> &Slot<T>;

/// Sends one value into its slot; dropped unsent, it tells the record
/// that none will come (as a channel's sender does).
pub struct Sender<T: Send + 'static> {
    shared: Arc<Shared>,
    pick: Pick<T>,
    sent: bool,
}

/// What the request path reads back from the hand-off.
pub(super) struct CallFlags {
    shared: Arc<Shared>,
}

/// The record task's end.
pub(super) struct Receiver {
    shared: Arc<Shared>,
}

/// The four senders and the receiver of one call.
pub(super) struct Ends {
    pub request: Sender<Captured>,
    pub prescan: Sender<RequestPrescan>,
    pub response: Sender<ResponseOutcome>,
    /// Never sent: dropped once the answer's first byte has passed.
    pub answer_started: Sender<()>,
    pub flags: CallFlags,
    pub receiver: Receiver,
}

/// A new call's slots.
pub(super) fn ends() -> Ends {
    let shared = Arc::new(Shared {
        request: Slot::new(),
        prescan: Slot::new(),
        response: Slot::new(),
        answer_started: Slot::new(),
        request_failed: AtomicBool::new(false),
        waker: AtomicWaker::new(),
    });
    fn sender<T: Send + 'static>(shared: &Arc<Shared>, pick: Pick<T>) -> Sender<T> {
        Sender {
            shared: shared.clone(),
            pick,
            sent: false,
        }
    }
    Ends {
        request: sender(&shared, |s| &s.request),
        prescan: sender(&shared, |s| &s.prescan),
        response: sender(&shared, |s| &s.response),
        answer_started: sender(&shared, |s| &s.answer_started),
        flags: CallFlags {
            shared: shared.clone(),
        },
        receiver: Receiver { shared },
    }
}

// === impl Slot ===

impl<T> Slot<T> {
    fn new() -> Self {
        Self(Mutex::new(State::Waiting))
    }

    /// Puts `state` in a slot still waiting; `false` when it was not.
    fn fill(&self, state: State<T>) -> bool {
        let Ok(mut current) = self.0.lock() else {
            return false;
        };
        if !matches!(*current, State::Waiting) {
            return false;
        }
        *current = state;
        true
    }

    /// The value once sent (`Some(None)` when none will come); `None`
    /// while waiting.
    fn take(&self) -> Option<Option<T>> {
        let Ok(mut current) = self.0.lock() else {
            return Some(None);
        };
        match std::mem::replace(&mut *current, State::Closed) {
            State::Sent(value) => Some(Some(value)),
            State::Closed => Some(None),
            State::Waiting => {
                *current = State::Waiting;
                None
            }
        }
    }
}

// === impl Sender ===

impl<T: Send + 'static> Sender<T> {
    pub fn send(mut self, value: T) {
        self.sent = true;
        if (self.pick)(&self.shared).fill(State::Sent(value)) {
            self.shared.waker.wake();
        }
    }
}

impl<T: Send + 'static> Drop for Sender<T> {
    fn drop(&mut self) {
        if !self.sent && (self.pick)(&self.shared).fill(State::Closed) {
            self.shared.waker.wake();
        }
    }
}

impl<T: Send + 'static> std::fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender").field("sent", &self.sent).finish()
    }
}

impl Sender<()> {
    /// The answer-started sender as the response capture holds it: the
    /// capture drops it once the first byte has passed.
    pub fn into_first_byte_signal(mut self) -> FirstByteSignal {
        self.sent = true;
        FirstByteSignal::Shared(self.shared.clone())
    }
}

impl Sender<Captured> {
    /// The request sender as the request capture holds it: the capture
    /// hands itself over through the shared slots, with no callback.
    pub fn into_capture_sink(mut self) -> Arc<dyn CaptureSink> {
        self.sent = true;
        self.shared.clone()
    }
}

impl CaptureSink for Shared {
    fn captured(&self, captured: Captured) {
        if matches!(captured.end, BodyEnd::Error(_)) {
            self.request_failed.store(true, Ordering::Release);
        }
        if self.request.fill(State::Sent(captured)) {
            self.waker.wake();
        }
    }
}

impl FirstByteWatch for Shared {
    fn first_byte_passed(&self) {
        if self.answer_started.fill(State::Closed) {
            self.waker.wake();
        }
    }
}

// === impl CallFlags ===

impl CallFlags {
    /// Whether the app's request body broke off while it was read or
    /// streamed on: an upstream call that then fails is the client's doing.
    pub fn request_body_failed(&self) -> bool {
        self.shared.request_failed.load(Ordering::Acquire)
    }
}

// === impl Receiver ===

impl Receiver {
    pub async fn request(&self) -> Option<Captured> {
        self.recv(|s| &s.request).await
    }

    pub async fn prescan(&self) -> Option<RequestPrescan> {
        self.recv(|s| &s.prescan).await
    }

    pub async fn response(&self) -> Option<ResponseOutcome> {
        self.recv(|s| &s.response).await
    }

    /// Once the answer's first byte has passed, or nothing more will.
    pub async fn answer_started(&self) {
        self.recv(|s| &s.answer_started).await;
    }

    /// The response's outcome if it has come.
    pub fn try_response(&self) -> Option<ResponseOutcome> {
        self.shared.response.take().flatten()
    }

    async fn recv<T>(&self, pick: Pick<T>) -> Option<T> {
        std::future::poll_fn(|cx| self.poll_slot(cx, pick)).await
    }

    fn poll_slot<T>(&self, cx: &mut Context<'_>, pick: Pick<T>) -> Poll<Option<T>> {
        // Registered first, so a value sent between the look and the
        // registration still wakes the task.
        self.shared.waker.register(cx.waker());
        match pick(&self.shared).take() {
            Some(value) => Poll::Ready(value),
            None => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn values_arrive_and_senders_dropped_unsent_say_none_will() {
        let tracker = tokio_util::task::TaskTracker::new();
        let ends = ends();
        let receiver = ends.receiver;
        let waiting = tracker.spawn(async move {
            receiver.answer_started().await;
            let prescan = receiver.prescan().await.is_some();
            let response = receiver.try_response().is_some();
            let blocked = matches!(
                receiver.response().await,
                Some(ResponseOutcome::ClientAborted { .. })
            );
            (prescan, response, blocked)
        });
        tokio::task::yield_now().await;
        drop(ends.answer_started);
        drop(ends.prescan);
        drop(ends.request);
        tokio::task::yield_now().await;
        ends.response.send(ResponseOutcome::ClientAborted {
            at: tokio::time::Instant::now(),
        });
        assert_eq!(waiting.await.unwrap(), (false, false, true));
    }

    #[tokio::test]
    async fn the_first_byte_signal_lets_the_record_go_when_dropped() {
        let tracker = tokio_util::task::TaskTracker::new();
        let ends = ends();
        let signal = ends.answer_started.into_first_byte_signal();
        let receiver = ends.receiver;
        let waiting = tracker.spawn(async move { receiver.answer_started().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        drop(signal);
        waiting.await.unwrap();
    }

    #[tokio::test]
    async fn the_request_capture_arrives_through_its_sink_with_its_failure() {
        let ends = ends();
        let sink = ends.request.into_capture_sink();
        assert!(!ends.flags.request_body_failed());
        let mut capture = crate::capture::tee::Capture::into_sink(16, sink);
        capture.observe(b"part");
        capture.finish(BodyEnd::Error("reset".into()));
        assert!(ends.flags.request_body_failed());
        let captured = ends.receiver.request().await.unwrap();
        assert_eq!(&captured.bytes[..], b"part");
        assert_eq!(captured.end, BodyEnd::Error("reset".into()));
    }

    #[tokio::test]
    async fn a_value_sent_before_the_read_is_there_once() {
        let ends = ends();
        ends.response.send(ResponseOutcome::ClientAborted {
            at: tokio::time::Instant::now(),
        });
        assert!(ends.receiver.try_response().is_some());
        assert!(ends.receiver.try_response().is_none());
        assert!(ends.receiver.response().await.is_none());
    }
}

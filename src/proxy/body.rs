//! The body types the proxy sends upstream and back to the app.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};

use crate::capture::tee::TeeBody;

/// Errors crossing the proxy's bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The body of every response the proxy sends: upstream's (teed, with an
/// idle timeout, perhaps guarded by stream policies) or one the proxy made
/// itself. Boxed because those compose differently per call.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// The request body sent upstream: the prefix read while the proxy looked
/// at the request, then the rest of the app's body, still streaming.
/// Boxed because hyper's client keeps a queue of request slots per
/// upstream connection, each as large as the request; a small body type
/// keeps an open stream's connection several KiB smaller.
pub type UpstreamBody = Pin<Box<PrefixedBody<TeeBody<Incoming>>>>;

pin_project! {
    /// Bytes already read, then the rest of the body they came from.
    pub struct PrefixedBody<B> {
        prefix: Option<Bytes>,
        #[pin]
        rest: Option<B>,
    }
}

pin_project! {
    /// Fails the body when upstream sends nothing for `idle`.
    pub struct IdleTimeoutBody<B> {
        #[pin]
        inner: B,
        #[pin]
        sleep: Sleep,
        idle: Duration,
    }
}

/// The error an idle upstream body ends with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdleTimeout;

/// A body the proxy made itself, in the boxed form.
pub fn full(bytes: impl Into<Bytes>) -> ProxyBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

// === impl PrefixedBody ===

impl<B> PrefixedBody<B> {
    pub fn new(prefix: Bytes, rest: Option<B>) -> Self {
        Self {
            prefix: (!prefix.is_empty()).then_some(prefix),
            rest,
        }
    }
}

impl<B: Body<Data = Bytes>> Body for PrefixedBody<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.project();
        if let Some(prefix) = this.prefix.take() {
            return Poll::Ready(Some(Ok(Frame::data(prefix))));
        }
        match this.rest.as_pin_mut() {
            Some(rest) => rest.poll_frame(cx),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.prefix.is_none() && self.rest.as_ref().is_none_or(|r| r.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        let prefix = self.prefix.as_ref().map_or(0, |p| p.len() as u64);
        match &self.rest {
            None => SizeHint::with_exact(prefix),
            Some(rest) => {
                let r = rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(r.lower() + prefix);
                if let Some(upper) = r.upper() {
                    hint.set_upper(upper + prefix);
                }
                hint
            }
        }
    }
}

// === impl IdleTimeoutBody ===

impl<B> IdleTimeoutBody<B> {
    pub fn new(inner: B, idle: Duration) -> Self {
        Self {
            inner,
            sleep: tokio::time::sleep(idle),
            idle,
        }
    }
}

impl<B> Body for IdleTimeoutBody<B>
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
        match this.inner.poll_frame(cx) {
            Poll::Ready(frame) => {
                this.sleep.as_mut().reset(Instant::now() + *this.idle);
                Poll::Ready(frame.map(|f| f.map_err(Into::into)))
            }
            Poll::Pending => match this.sleep.poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(Box::new(IdleTimeout)))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

// === impl IdleTimeout ===

impl IdleTimeout {
    /// The text the error displays, which the recorder matches to tell a
    /// timeout from other stream failures.
    pub const MESSAGE: &'static str = crate::capture::tee::IDLE_TIMEOUT_MESSAGE;
}

impl fmt::Display for IdleTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(Self::MESSAGE)
    }
}

impl std::error::Error for IdleTimeout {}

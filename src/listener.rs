//! Accepting connections under a cap, and noticing idle ones.
//!
//! Each listener (the proxy's, the admin API's) has its own cap, so a
//! flood on one never takes the file descriptors the other needs. At the
//! cap a listener stops accepting: further connections wait in the
//! kernel's accept queue (and are refused by the kernel once that is full)
//! until a connection closes. Nothing is accepted only to be closed, so a
//! flood costs the process no descriptors beyond the cap.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::telemetry::metrics::{KindLabels, Metrics};

/// A listener's connection cap, and its metrics.
#[derive(Clone)]
pub struct ConnectionCap {
    slots: Arc<Semaphore>,
    /// `proxy` or `admin`: the metric label.
    kind: &'static str,
    metrics: Arc<Metrics>,
}

/// One accepted connection's place under the cap; freed on drop.
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    kind: &'static str,
    metrics: Arc<Metrics>,
}

/// Time of the last byte moved on a connection, shared with whoever
/// watches it for idleness.
#[derive(Debug, Clone)]
pub struct Activity {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

pin_project_lite::pin_project! {
    /// An I/O stream that notes the time of every read and write that
    /// moves bytes.
    pub struct ActivityIo<T> {
        #[pin]
        inner: T,
        activity: Activity,
    }
}

// === impl ConnectionCap ===

impl ConnectionCap {
    /// A cap of `max` open connections for the listener named `kind`.
    pub fn new(max: usize, kind: &'static str, metrics: Arc<Metrics>) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(max)),
            kind,
            metrics,
        }
    }

    /// Waits for a free slot, then for a connection. Accept errors (most
    /// often out of descriptors) are logged and retried after a pause
    /// rather than spinning. Cancel-safe: a slot taken before a dropped
    /// accept is given back.
    pub async fn accept(&self, listener: &TcpListener) -> (TcpStream, SocketAddr, Slot) {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                self.metrics
                    .listener_cap_reached
                    .get_or_create(&self.label())
                    .inc();
                match self.slots.clone().acquire_owned().await {
                    Ok(permit) => permit,
                    // The semaphore is never closed.
                    Err(_) => std::future::pending().await,
                }
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, peer)) => {
                    self.metrics
                        .open_connections
                        .get_or_create(&self.label())
                        .inc();
                    let slot = Slot {
                        _permit: permit,
                        kind: self.kind,
                        metrics: self.metrics.clone(),
                    };
                    return (stream, peer, slot);
                }
                Err(error) => {
                    tracing::warn!(listener = self.kind, %error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn label(&self) -> KindLabels {
        KindLabels {
            kind: self.kind.into(),
        }
    }
}

// === impl Slot ===

impl Drop for Slot {
    fn drop(&mut self) {
        self.metrics
            .open_connections
            .get_or_create(&KindLabels {
                kind: self.kind.into(),
            })
            .dec();
    }
}

// === impl Activity ===

impl Activity {
    /// Activity that starts now.
    pub fn new() -> Self {
        Self {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.origin.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.origin + Duration::from_millis(self.last_ms.load(Ordering::Relaxed))
    }

    /// Resolves once no byte has moved for `idle`.
    pub async fn idle_for(&self, idle: Duration) {
        loop {
            let deadline = self.last() + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    }
}

impl Default for Activity {
    fn default() -> Self {
        Self::new()
    }
}

// === impl ActivityIo ===

impl<T> ActivityIo<T> {
    /// Wraps `inner`, noting its traffic in `activity`.
    pub fn new(inner: T, activity: Activity) -> Self {
        activity.touch();
        Self { inner, activity }
    }
}

impl<T: AsyncRead> AsyncRead for ActivityIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if buf.filled().len() > before {
            this.activity.touch();
        }
        polled
    }
}

impl<T: AsyncWrite> AsyncWrite for ActivityIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let polled = this.inner.poll_write(cx, buf);
        if matches!(polled, Poll::Ready(Ok(n)) if n > 0) {
            this.activity.touch();
        }
        polled
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

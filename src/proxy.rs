//! The app-facing listener: accepts connections (HTTP/1.1, and HTTP/2 with
//! prior knowledge), forwards each call through [`forward`], and drains
//! gracefully on shutdown.

pub mod answer_check;
pub mod body;
pub mod client;
pub mod encoded_stream;
pub mod forward;
pub mod framing_guard;
pub mod headers;
pub mod path_guard;
pub mod policy_guard;
pub mod request_id;
pub mod respond;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::{http1, http2};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::listener::ConnectionCap;
use framing_guard::FramingGuard;

pub use forward::ProxyState;

/// How long a client may take to send a request head (and, before that,
/// the bytes that tell HTTP/1 from HTTP/2).
const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How the drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Whether every connection finished within the grace period.
    pub drained: bool,
}

/// Serves `listener` until `shutdown` fires, then stops accepting, lets
/// in-flight calls finish for up to `grace`, and cuts what remains. At
/// most `cap` connections are open at once (see [`crate::listener`]).
pub async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
    grace: Duration,
    tracker: TaskTracker,
    cap: ConnectionCap,
) -> DrainReport {
    let mut http1 = http1::Builder::new();
    http1
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_READ_TIMEOUT);
    let mut http2 = http2::Builder::new(TokioExecutor::new());
    http2.timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    let cut = CancellationToken::new();
    loop {
        let (stream, peer, slot) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = cap.accept(&listener) => accepted,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let client_ip = peer_ip(peer);
        let service = service_fn(move |req| boxed_call(state.clone(), req, client_ip));
        let (http1, http2) = (http1.clone(), http2.clone());
        let watcher = graceful.watcher();
        let (shutdown, cut) = (shutdown.clone(), cut.clone());
        tracker.spawn(async move {
            // Held until the connection ends.
            let _slot = slot;
            let mut io = FramingGuard::new(stream);
            let sniffed = tokio::select! {
                sniffed = tokio::time::timeout(HEAD_READ_TIMEOUT, io.starts_with_h2_preface()) => sniffed,
                // Nothing has been asked on this connection yet.
                () = shutdown.cancelled() => return,
            };
            let Ok(Ok(is_h2)) = sniffed else {
                return;
            };
            let io = TokioIo::new(io);
            let served = if is_h2 {
                // Boxed: the task is sized for its largest branch, and an
                // HTTP/2 connection's state is the larger and the rarer.
                let conn = Box::pin(watcher.watch(http2.serve_connection(io, service)));
                tokio::select! {
                    result = conn => result,
                    () = cut.cancelled() => return,
                }
            } else {
                let conn = watcher.watch(http1.serve_connection(io, service));
                tokio::select! {
                    result = conn => result,
                    () = cut.cancelled() => return,
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "Client connection ended with an error.");
            }
        });
    }
    drop(listener);
    let drained = tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_ok();
    if !drained {
        tracing::warn!(
            grace_secs = grace.as_secs_f64(),
            "Calls still running after the shutdown grace period were cut."
        );
        state
            .cut_at_shutdown
            .store(true, std::sync::atomic::Ordering::Release);
        cut.cancel();
    }
    DrainReport { drained }
}

fn peer_ip(peer: SocketAddr) -> std::net::IpAddr {
    peer.ip().to_canonical()
}

/// One call, its future boxed. hyper keeps a slot the size of a service's
/// future for as long as the connection lives, and a call's future is a
/// few KB; the box goes once the answer's head is out, so an open stream
/// or an idle keep-alive connection holds a pointer instead.
fn boxed_call(
    state: Arc<ProxyState>,
    req: hyper::Request<hyper::body::Incoming>,
    client_ip: std::net::IpAddr,
) -> impl std::future::Future<Output = Result<hyper::Response<body::ProxyBody>, Infallible>> + Send
{
    let call = Box::pin(forward::handle(state, req, client_ip));
    async move { Ok(call.await) }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, F>(_: impl Fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    #[test]
    fn a_connection_keeps_a_pointer_to_its_call_not_the_call() {
        let slot = future_size(boxed_call);
        let call = future_size(forward::handle);
        assert!(slot <= 64, "{slot} bytes held per connection");
        assert!(call > 16 * slot, "a call's future is {call} bytes");
    }
}

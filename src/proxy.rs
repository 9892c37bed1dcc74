//! The app-facing listener: accepts connections (HTTP/1.1, and HTTP/2 with
//! prior knowledge), forwards each call through [`forward`], and drains
//! gracefully on shutdown.

pub mod body;
pub mod client;
pub mod forward;
pub mod framing_guard;
pub mod policy_guard;
pub mod request_id;
pub mod respond;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use framing_guard::FramingGuard;

pub use forward::ProxyState;

/// How the drain went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Whether every connection finished within the grace period.
    pub drained: bool,
}

/// Serves `listener` until `shutdown` fires, then stops accepting, lets
/// in-flight calls finish for up to `grace`, and cuts what remains.
pub async fn serve(
    listener: TcpListener,
    state: Arc<ProxyState>,
    shutdown: CancellationToken,
    grace: Duration,
    tracker: TaskTracker,
) -> DrainReport {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    let cut = CancellationToken::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(error) => {
                    // Usually out of file descriptors: back off instead of
                    // spinning.
                    tracing::warn!(%error, "Accept failed.");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let client_ip = peer_ip(peer);
        let service = service_fn(move |req| {
            let state = state.clone();
            async move { Ok::<_, Infallible>(forward::handle(state, req, client_ip).await) }
        });
        let conn = builder
            .serve_connection(TokioIo::new(FramingGuard::new(stream)), service)
            .into_owned();
        let conn = graceful.watch(conn);
        let cut = cut.clone();
        tracker.spawn(async move {
            tokio::select! {
                result = conn => {
                    if let Err(error) = result {
                        tracing::debug!(%error, "Client connection ended with an error.");
                    }
                }
                () = cut.cancelled() => {}
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

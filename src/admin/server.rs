//! The admin listener's accept loop.
//!
//! The admin port is reachable by more than the app (a scraper, an
//! operator, anyone on the pod network), so it must not be able to take
//! the process down: at most `max_connections` are open at once (further
//! ones wait in the kernel's accept queue, see [`crate::listener`]), a
//! client that does not send its request head within
//! `header_read_timeout` is dropped, and a connection with no byte moving
//! either way for `idle_timeout` is closed. Its cap is separate from the
//! proxy listener's, so admin load never stops app traffic.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower_service::Service;

use crate::listener::{Activity, ActivityIo, ConnectionCap};

/// How long open admin connections get to finish once the listener stops.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

/// The admin listener's limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_read_timeout: Duration,
    pub idle_timeout: Duration,
}

/// Serves `router` on `listener` until `stop` fires, then lets open
/// requests finish for a few seconds.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: Limits,
    cap: ConnectionCap,
    stop: CancellationToken,
) {
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    let graceful = GracefulShutdown::new();
    let connections = TaskTracker::new();
    // Fired when the drain grace has run out: what is still open is closed.
    let cut = CancellationToken::new();
    loop {
        let (stream, peer, slot) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = cap.accept(&listener) => accepted,
        };
        let router = router.clone();
        let service = service_fn(move |mut req: hyper::Request<Incoming>| {
            req.extensions_mut().insert(ConnectInfo(peer));
            let mut router = router.clone();
            async move {
                Ok::<_, Infallible>(
                    router
                        .call(req)
                        .await
                        .unwrap_or_else(|never| match never {}),
                )
            }
        });
        let activity = Activity::new();
        let io = TokioIo::new(ActivityIo::new(stream, activity.clone()));
        let conn = graceful.watch(http.serve_connection(io, service));
        let cut = cut.clone();
        connections.spawn(async move {
            let _slot = slot;
            tokio::select! {
                served = conn => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "Admin connection ended with an error.");
                    }
                }
                () = activity.idle_for(limits.idle_timeout) => {
                    tracing::debug!("Idle admin connection closed.");
                }
                () = cut.cancelled() => {}
            }
        });
    }
    drop(listener);
    connections.close();
    if tokio::time::timeout(DRAIN_GRACE, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::debug!("Admin connections still open at shutdown were closed.");
    }
    cut.cancel();
    connections.wait().await;
}

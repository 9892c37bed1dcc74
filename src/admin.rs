//! The admin listener's HTTP API, on its own port.
//!
//! | method path | does |
//! |---|---|
//! | `GET /healthz` | liveness: `{"status":"ok"}` while the process serves |
//! | `GET /readyz` | readiness from [`Readiness::check`]: 200 or 503 with a reason |
//! | `GET /api/events` | a page, newest first, filtered; `next_cursor` for the next |
//! | `GET /api/events/{id}` | one event, 404 if absent |
//! | `POST /api/events` | a custom event, stored through the pipeline; 201 with it |
//! | `GET /api/export` | every matching event, oldest first, streamed as json, ndjson or csv; verifiable (checkpoints and chain links) when signing |
//! | `GET /api/stats` | the store's counts and size, the pipeline's counters, and each shipping target's progress |
//! | `GET /api/verify` | checks the stored hash chain and its signed checkpoints |
//! | `GET /ui/...` | the web console ([`console`]), with its own sign-in |
//!
//! With tokens configured, every `/api/*` route requires one of them as a
//! bearer token, with the `read` scope, or `write` for `POST /api/events`
//! ([`auth`]); probes stay open. Refusals are collapsed per client and
//! interval ([`refusals`]). The listener caps its connections and closes
//! slow and idle ones ([`server`]). Reads go through
//! [`AuditStore`](crate::store::AuditStore); custom events go through the
//! pipeline [`Handle`], so the writer stays the only source of `seq` and
//! the hash chain. Errors are JSON, mapped in one place ([`error`]).

pub mod auth;
pub mod console;
pub mod error;
pub mod export;
pub mod params;
pub mod query;
pub mod refusals;
pub mod server;

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{middleware, Json, Router};
use serde::Serialize;
use serde_json::json;

use crate::pipeline::Handle;
use crate::readiness::Readiness;
use crate::store::{SharedStore, StoreStats};

pub use error::AdminError;

/// What the admin handlers share. Cheap to clone.
#[derive(Clone)]
pub struct AdminState {
    pub store: SharedStore,
    pub events: Handle,
    pub readiness: Readiness,
    /// Accepted bearer tokens and their scopes; empty means no
    /// authentication (the listener must then be bound to loopback, which
    /// `serve` enforces).
    pub tokens: std::sync::Arc<auth::TokenSet>,
    /// Where refused calls are counted and recorded.
    pub refusals: std::sync::Arc<refusals::RefusalLog>,
    /// Most bytes of events in one `/api/events` page.
    pub page_max_bytes: usize,
    /// Applied to custom events before they are stored.
    pub sanitizer: std::sync::Arc<crate::capture::sanitize::Sanitizer>,
    pub metrics: std::sync::Arc<crate::telemetry::metrics::Metrics>,
    /// The public key of the checkpoint signing key in use, for
    /// `/api/verify` (checkpoints by earlier keys are counted, not
    /// checked: `verify --public-key` checks them offline).
    pub verify_keys: crate::event::checkpoint::TrustedKeys,
}

/// `GET /api/stats` body: the store's numbers, flattened, plus the
/// pipeline's counters.
#[derive(Debug, Serialize)]
struct StatsBody {
    store: &'static str,
    #[serde(flatten)]
    stats: StoreStats,
    pipeline: PipelineCounters,
    /// Each shipping target's progress; absent when shipping is off.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    shipping: Vec<crate::pipeline::shipper::status::TargetSnapshot>,
}

#[derive(Debug, Serialize)]
struct PipelineCounters {
    offered: u64,
    dropped: u64,
    filtered: u64,
    written: u64,
    write_failures: u64,
    lost: u64,
    queue_depth: u64,
}

/// Builds the admin router.
pub fn router(state: AdminState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/api/events", get(query::list).post(query::create))
        .route("/api/events/{id}", get(query::get_one))
        .route("/api/export", get(export::export))
        .route("/api/stats", get(stats))
        .route("/api/verify", get(verify))
        .fallback(no_route)
        // On the whole router, not per route, so unknown `/api/*` paths
        // are refused without a token too rather than revealing a 404.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .with_state(state.clone())
        .merge(console::router(state))
}

async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

async fn metrics(State(state): State<AdminState>) -> Response {
    if let Ok(bytes) = state.store.size_bytes().await {
        state
            .metrics
            .store_bytes
            .set(i64::try_from(bytes).unwrap_or(i64::MAX));
    }
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.metrics.encode(),
    )
        .into_response()
}

async fn readyz(State(state): State<AdminState>) -> Response {
    match state.readiness.check() {
        Ok(()) => Json(json!({"status": "ready"})).into_response(),
        Err(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "reason": reason.as_str()})),
        )
            .into_response(),
    }
}

async fn stats(State(state): State<AdminState>) -> Result<Response, AdminError> {
    let stats = state.store.stats().await?;
    let p = state.events.stats();
    let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
    Ok(Json(StatsBody {
        store: state.store.kind(),
        stats,
        pipeline: PipelineCounters {
            offered: load(&p.offered),
            dropped: load(&p.dropped),
            filtered: load(&p.filtered),
            written: load(&p.written),
            write_failures: load(&p.write_failures),
            lost: load(&p.lost),
            queue_depth: load(&p.queue_depth),
        },
        shipping: state
            .metrics
            .shipping()
            .iter()
            .map(|t| t.snapshot())
            .collect(),
    })
    .into_response())
}

async fn verify(State(state): State<AdminState>) -> Result<Response, AdminError> {
    let options = crate::store::verify::VerifyOptions {
        keys: state.verify_keys.clone(),
        tolerate_unknown_keys: true,
        expect_checkpoints: Vec::new(),
    };
    let report = crate::store::verify::verify_any(state.store.as_ref(), options).await?;
    Ok(Json(report).into_response())
}

async fn no_route() -> AdminError {
    AdminError::NoRoute
}

#[cfg(test)]
mod tests;

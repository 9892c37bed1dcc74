//! The fleet admin (`llm-audit-proxy fleet-admin`): the admin API over the
//! central store, so one place searches, exports and verifies every
//! proxy's shipped events.
//!
//! It is the same router as `serve`'s admin listener, with the same
//! `admin.*` settings (tokens, limits, page size), reading the database
//! `shipping.postgres_dsn(_file)` names through
//! [`PostgresStore`]. It records nothing: no proxy runs here, so the
//! pipeline behind the router is disabled and `POST /api/events` answers
//! that auditing is disabled. `/readyz` follows the database's health.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::auth::TokenSet;
use crate::admin::refusals::RefusalLog;
use crate::admin::{self, AdminState};
use crate::app::StartError;
use crate::capture::sanitize::Sanitizer;
use crate::config::{keys, Config};
use crate::event::checkpoint::TrustedKeys;
use crate::listener::ConnectionCap;
use crate::pipeline::{spawn_writer, WriterConfig};
use crate::readiness::Readiness;
use crate::store::postgres::PostgresStore;
use crate::store::SharedStore;
use crate::telemetry::metrics::Metrics;

/// A started fleet admin.
pub struct RunningFleet {
    pub admin_addr: SocketAddr,
    stop: CancellationToken,
    tracker: TaskTracker,
}

/// Opens the central store and starts the admin listener on
/// `admin.listen`; returns once it listens.
pub async fn start(config: Config) -> Result<RunningFleet, StartError> {
    let Some(target) = &config.shipping.postgres else {
        return Err(StartError::Shipping(format!(
            "the fleet admin reads the central store: set shipping.postgres_dsn ({}) or \
             shipping.postgres_dsn_file ({}), or pass --postgres-dsn-file",
            keys::SHIPPING_POSTGRES_DSN.env,
            keys::SHIPPING_POSTGRES_DSN_FILE.env
        )));
    };
    let store: SharedStore = Arc::new(PostgresStore::open(&target.dsn).await.map_err(
        |source| StartError::Store {
            kind: "postgres",
            source,
        },
    )?);
    let tracker = TaskTracker::new();
    let (events, health) = spawn_writer(
        store.clone(),
        WriterConfig {
            enabled: false,
            min_level: config.audit.log_level,
            queue_capacity: 16,
            queue_max_bytes: 1024 * 1024,
            max_batch: 16,
            commit_interval: Duration::ZERO,
            health_interval: Duration::from_secs(5),
            shutdown_attempts: 1,
            source: config.instance.source(),
            checkpoints: None,
            ledger: None,
        },
        &tracker,
    )
    .await
    .map_err(|source| StartError::Store {
        kind: "postgres",
        source,
    })?;
    let readiness = Readiness::new(health);
    let listener = tokio::net::TcpListener::bind(config.admin.listen)
        .await
        .map_err(|source| StartError::Bind {
            key: "admin.listen",
            addr: config.admin.listen,
            source,
        })?;
    let admin_addr = listener.local_addr().map_err(|source| StartError::Bind {
        key: "admin.listen",
        addr: config.admin.listen,
        source,
    })?;
    let metrics = Arc::new(Metrics::new(events.stats().clone()));
    let stop = CancellationToken::new();
    let refusals = Arc::new(RefusalLog::new(
        events.clone(),
        metrics.clone(),
        config.admin.refusal_interval,
    ));
    tracker.spawn(refusals.clone().run(stop.clone()));
    let state = AdminState {
        store,
        events,
        readiness: readiness.clone(),
        tokens: Arc::new(TokenSet::from_config(&config.admin)),
        refusals,
        page_max_bytes: config.admin.page_max_bytes,
        sanitizer: Arc::new(Sanitizer::from_policies(config.policies.clone())),
        metrics: metrics.clone(),
        // Checkpoint signatures are counted here, not checked: `verify
        // --central --public-key` checks them.
        verify_keys: TrustedKeys::new(),
    };
    // No proxy listens here: the admin is ready once its store is.
    readiness.set_proxy_listening(true);
    tracker.spawn(admin::server::serve(
        listener,
        admin::router(state),
        admin::server::Limits {
            header_read_timeout: config.admin.header_read_timeout,
            idle_timeout: config.admin.idle_timeout,
        },
        ConnectionCap::new(config.admin.max_connections, "admin", metrics),
        stop.clone(),
    ));
    tracker.close();
    tracing::info!(admin = %admin_addr, "Fleet admin listening on the central store.");
    Ok(RunningFleet {
        admin_addr,
        stop,
        tracker,
    })
}

/// Runs the fleet admin until SIGTERM or Ctrl-C.
pub async fn run(config: Config) -> Result<(), StartError> {
    let signal = crate::app::stop_signal();
    let running = start(config).await?;
    signal.await;
    running.stop().await;
    Ok(())
}

// === impl RunningFleet ===

impl RunningFleet {
    /// Stops listening, lets open requests finish, and waits.
    pub async fn stop(self) {
        self.stop.cancel();
        self.tracker.wait().await;
    }
}

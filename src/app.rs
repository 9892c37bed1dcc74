//! Builds every subsystem from its slice of the configuration, runs them,
//! and shuts them down in order.
//!
//! Shutdown phases, in this order:
//! 1. readiness turns 503 (the admin listener keeps answering);
//! 2. the proxy stops accepting and in-flight calls, streams included, get
//!    `proxy.shutdown_grace` to finish; what remains is cut;
//! 3. call records still being built finish;
//! 4. the SYSTEM shutdown event is queued and the queue flushed to the
//!    store;
//! 5. the admin listener stops; the process exits 0.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::{self, AdminState};
use crate::capture::sanitize::Sanitizer;
use crate::config::{self, AuditConfig, Config, StorageKind};
use crate::event::chain::canonical_json;
use crate::event::{EventType, NewEvent};
use crate::pipeline::maintenance::{self, MaintenanceConfig};
use crate::pipeline::record::Recorder;
use crate::pipeline::{spawn_writer, Handle, WriterConfig};
use crate::proxy::{self, ProxyState};
use crate::readiness::Readiness;
use crate::store::file::FileStore;
use crate::store::memory::MemoryStore;
use crate::store::sqlite::SqliteStore;
use crate::store::verify::verify_chain;
use crate::store::{SharedStore, StoreError};
use crate::telemetry::metrics::Metrics;

/// Why `serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("{key}: cannot listen on {addr}: {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("audit.storage: cannot open the {kind} store: {source}")]
    Store {
        kind: &'static str,
        source: StoreError,
    },
    #[error(transparent)]
    Client(#[from] proxy::client::ClientError),
}

/// A started server: addresses it listens on, and its shutdown.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
    done: JoinHandle<()>,
}

/// Opens the configured store.
pub async fn open_store(audit: &AuditConfig) -> Result<SharedStore, StartError> {
    let kind = audit.storage.as_str();
    let store: SharedStore = match audit.storage {
        StorageKind::Sqlite => Arc::new(
            SqliteStore::open(&audit.file_path)
                .await
                .map_err(|source| StartError::Store { kind, source })?,
        ),
        StorageKind::Memory => Arc::new(MemoryStore::new(audit.memory_limit)),
        StorageKind::File => Arc::new(
            FileStore::open(&audit.file_path, rotation(audit.file_rotation))
                .map_err(|source| StartError::Store { kind, source })?,
        ),
    };
    Ok(store)
}

/// The store's rotation setting for the configured one.
pub fn rotation(r: config::Rotation) -> crate::store::Rotation {
    match r {
        config::Rotation::Hourly => crate::store::Rotation::Hourly,
        config::Rotation::Daily => crate::store::Rotation::Daily,
        config::Rotation::Weekly => crate::store::Rotation::Weekly,
    }
}

/// How often retention and the size cap run in the background.
const MAINTENANCE_INTERVAL: Duration = Duration::from_secs(600);

/// Starts the proxy and admin listeners; returns once both listen.
pub async fn start(config: Config) -> Result<Running, StartError> {
    let store = open_store(&config.audit).await?;
    start_with_store(config, store).await
}

/// As [`start`], on a store the caller opened (tests use failing stores).
pub async fn start_with_store(config: Config, store: SharedStore) -> Result<Running, StartError> {
    let writer_tracker = TaskTracker::new();
    let (events, store_health) = spawn_writer(
        store.clone(),
        WriterConfig {
            enabled: config.audit.enabled,
            min_level: config.audit.log_level,
            queue_capacity: config.queue.capacity,
            max_batch: config.queue.max_batch,
            commit_interval: config.queue.commit_interval,
            health_interval: Duration::from_secs(5),
            shutdown_attempts: 3,
            source: config.instance.source(),
        },
        &writer_tracker,
    )
    .await
    .map_err(|source| StartError::Store {
        kind: config.audit.storage.as_str(),
        source,
    })?;
    let readiness = Readiness::new(store_health.clone());
    let client = proxy::client::build(config.proxy.ca_bundle.as_deref())?;

    let proxy_listener = bind("proxy.listen", config.proxy.listen).await?;
    let admin_listener = bind("admin.listen", config.admin.listen).await?;
    let proxy_addr = local_addr(&proxy_listener, "proxy.listen", config.proxy.listen)?;
    let admin_addr = local_addr(&admin_listener, "admin.listen", config.admin.listen)?;

    let calls = TaskTracker::new();
    let metrics = Arc::new(Metrics::new(events.stats().clone()));
    let sanitizer = Arc::new(Sanitizer::from_policies(config.policies.clone()));
    let cut_at_shutdown = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let recorder = config.audit.enabled.then(|| {
        Recorder::new(
            events.clone(),
            sanitizer.clone(),
            calls.clone(),
            config.capture.max_body_bytes,
            metrics.clone(),
            cut_at_shutdown.clone(),
            config.audit.record_compliance_checks,
        )
    });
    let state = Arc::new(ProxyState {
        client,
        upstream: config.proxy.upstream.clone(),
        provider_override: config.proxy.provider.clone(),
        capture_cap: if config.audit.enabled {
            config.capture.max_body_bytes
        } else {
            0
        },
        upstream_timeout: config.proxy.upstream_timeout,
        stream_idle_timeout: config.proxy.stream_idle_timeout,
        recorder,
        fail_mode: config.audit.on_store_failure,
        store_health,
        metrics: metrics.clone(),
        policies: config.policies.clone(),
        max_inspected_bytes: config.inspection.max_inspected_bytes,
        cut_at_shutdown,
    });

    record_startup(&events, &config);
    let background = CancellationToken::new();
    spawn_chain_check(&writer_tracker, store.clone(), events.clone());
    {
        let store = store.clone();
        let events = events.clone();
        let stop = background.clone();
        let cfg = MaintenanceConfig {
            retention_days: config.audit.retention_days,
            max_store_bytes: config.audit.max_store_mb.saturating_mul(1024 * 1024),
            interval: MAINTENANCE_INTERVAL,
        };
        writer_tracker.spawn(maintenance::run(store, events, cfg, stop));
    }

    let shutdown = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let admin_state = AdminState {
        store,
        events: events.clone(),
        readiness: readiness.clone(),
        tokens: config
            .admin
            .tokens
            .iter()
            .map(|t| t.expose().to_owned())
            .collect(),
        sanitizer,
        metrics,
    };
    let admin_task = {
        let stop = admin_stop.clone();
        let app = admin::router(admin_state).into_make_service_with_connect_info::<SocketAddr>();
        writer_tracker.spawn(async move {
            let served = axum::serve(admin_listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "Admin listener failed.");
            }
        })
    };

    readiness.set_proxy_listening(true);
    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        upstream = %config.proxy.upstream,
        storage = config.audit.storage.as_str(),
        "Audit proxy listening."
    );

    let done = {
        let shutdown = shutdown.clone();
        let grace = config.proxy.shutdown_grace;
        let proxy_tracker = TaskTracker::new();
        let proxy_task = proxy::serve(
            proxy_listener,
            state.clone(),
            shutdown.clone(),
            grace,
            proxy_tracker.clone(),
        );
        writer_tracker.spawn(async move {
            let report = proxy_task.await;
            // Phase 1 happened when `shutdown` fired (see `Running::shutdown`).
            // Phase 2: connections drained or cut.
            proxy_tracker.close();
            proxy_tracker.wait().await;
            drop(state);
            // Phase 3: records of the last calls.
            calls.close();
            let _ = tokio::time::timeout(Duration::from_secs(5), calls.wait()).await;
            // Phase 4: the shutdown event, then everything flushed.
            events.offer(
                NewEvent::new(EventType::System, "Audit proxy stopped")
                    .with_metadata(json!({"phase": "shutdown", "drained": report.drained})),
            );
            background.cancel();
            // A dead store must not hold the process past its grace.
            if tokio::time::timeout(Duration::from_secs(10), events.flush())
                .await
                .is_err()
            {
                tracing::error!("Audit events still queued at exit could not be written.");
            }
            // Phase 5.
            admin_stop.cancel();
            let _ = admin_task.await;
            tracing::info!(drained = report.drained, "Audit proxy stopped.");
        })
    };

    Ok(Running {
        proxy_addr,
        admin_addr,
        readiness,
        shutdown,
        done,
    })
}

/// Runs until SIGTERM or Ctrl-C, then shuts down in phases.
pub async fn run(config: Config) -> Result<(), StartError> {
    let running = start(config).await?;
    wait_for_signal().await;
    running.shutdown();
    running.wait().await;
    Ok(())
}

// === impl Running ===

impl Running {
    /// Starts the shutdown phases (readiness turns 503 at once).
    pub fn shutdown(&self) {
        self.readiness.start_draining();
        self.shutdown.cancel();
    }

    /// Waits until shutdown has finished.
    pub async fn wait(self) {
        let _ = self.done.await;
    }
}

/// Walks the chain in the background: a broken chain must not stop the
/// app's traffic, but it is recorded as an ERROR naming the first bad seq.
fn spawn_chain_check(tracker: &TaskTracker, store: SharedStore, events: Handle) {
    tracker.spawn(async move {
        match verify_chain(store.as_ref()).await {
            Ok(report) if report.ok => {
                tracing::info!(
                    checked = report.events_checked,
                    "Audit hash chain verified."
                );
            }
            Ok(report) => {
                tracing::error!(
                    first_bad_seq = report.first_bad_seq,
                    "Audit hash chain is broken."
                );
                events.offer(
                    NewEvent::new(
                        EventType::Error,
                        format!(
                            "Stored hash chain is broken at seq {}",
                            report.first_bad_seq.unwrap_or_default()
                        ),
                    )
                    .with_metadata(json!({
                        "error_type": "chain_broken",
                        "details": {
                            "first_bad_seq": report.first_bad_seq,
                            "reason": report.reason,
                            "events_checked": report.events_checked,
                        },
                    })),
                );
            }
            Err(error) => {
                tracing::error!(%error, "Audit hash chain could not be checked.");
            }
        }
    });
}

fn record_startup(events: &Handle, config: &Config) {
    let effective = config.to_masked_json();
    let digest = {
        use sha2::{Digest, Sha256};
        hex::encode(Sha256::digest(canonical_json(&effective).as_bytes()))
    };
    events.offer(
        NewEvent::new(EventType::System, "Audit proxy started").with_metadata(json!({
            "phase": "startup",
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
        })),
    );
    events.offer(
        NewEvent::new(EventType::Configuration, "Effective configuration").with_metadata(json!({
            "config": effective,
            "digest": digest,
        })),
    );
}

async fn bind(key: &'static str, addr: SocketAddr) -> Result<TcpListener, StartError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { key, addr, source })
}

fn local_addr(
    listener: &TcpListener,
    key: &'static str,
    addr: SocketAddr,
) -> Result<SocketAddr, StartError> {
    listener
        .local_addr()
        .map_err(|source| StartError::Bind { key, addr, source })
}

async fn wait_for_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}

//! Builds every subsystem from its slice of the configuration, runs them,
//! and shuts them down in order.
//!
//! Shutdown phases, in this order:
//! 1. readiness turns 503 (the admin listener keeps answering);
//! 2. the proxy stops accepting and in-flight calls, streams included, get
//!    `proxy.shutdown_grace` to finish; what remains is cut;
//! 3. call records still being built finish;
//! 4. the admin listener stops (no more AUTHENTICATION or custom events),
//!    and refused admin calls still being counted are recorded;
//! 5. the SYSTEM shutdown event is queued, sealed with a stop checkpoint
//!    when signing is on, and written; shipping targets get what is left
//!    of the grace period to send the tail (what remains is logged with
//!    its seq range); then the queue is closed, the store is closed (for SQLite, the WAL is checkpointed into
//!    `audit.db`), and anything offered later is counted as dropped;
//! 6. losses the store never recorded are written to a side file for the
//!    next start; the process exits 0, or non-zero when events were lost.
//!
//! At start, a store whose newest event is not the clean-stop SYSTEM event
//! (or a checkpoint after it) gets an ERROR `unclean_shutdown` naming its
//! last seq and time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::admin::auth::TokenSet;
use crate::admin::refusals::RefusalLog;
use crate::admin::{self, AdminState};
use crate::capture::sanitize::Sanitizer;
use crate::config::{self, AuditConfig, Config, StorageKind};
use crate::config::{Durability, FailMode, SqliteSynchronous};
use crate::event::chain::canonical_json;
use crate::event::{EventType, NewEvent};
use crate::listener::ConnectionCap;
use crate::pipeline::checkpoint::CheckpointConfig;
use crate::pipeline::held::Holding;
use crate::pipeline::losses::LossLedger;
use crate::pipeline::maintenance::{self, MaintenanceConfig};
use crate::pipeline::record::Recorder;
use crate::pipeline::shipper::http::HttpTarget;
use crate::pipeline::shipper::postgres::PostgresTarget;
use crate::pipeline::shipper::status::TargetStatus;
use crate::pipeline::shipper::{self, ShipTarget, Shipper, ShipperConfig, ShipperHandle, Source};
use crate::pipeline::unclean::unclean_shutdown_event;
use crate::pipeline::{spawn_writer, Admission, Handle, WriterConfig};
use crate::proxy::{self, ProxyState};
use crate::readiness::Readiness;
use crate::store::file::FileStore;
use crate::store::memory::MemoryStore;
use crate::store::sqlite::{SqliteOptions, SqliteStore, Synchronous};
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
    #[error("shipping: {0}")]
    Shipping(String),
}

/// A started server: addresses it listens on, and its shutdown.
pub struct Running {
    pub proxy_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    readiness: Readiness,
    shutdown: CancellationToken,
    done: JoinHandle<Stopped>,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stopped {
    /// Audit events lost during the run: dropped offers (a full queue, a
    /// spent byte budget, or offered after the queue closed), batches the
    /// store never took, and call records that could not be built.
    pub events_lost: u64,
    /// Of those, losses not recorded in the store (carried to the next
    /// start in the side file).
    pub unrecorded: u64,
}

/// Opens the configured store.
pub async fn open_store(audit: &AuditConfig) -> Result<SharedStore, StartError> {
    let kind = audit.storage.as_str();
    let store: SharedStore = match audit.storage {
        StorageKind::Sqlite => Arc::new(
            SqliteStore::open_with(
                &audit.file_path,
                SqliteOptions {
                    synchronous: synchronous(audit.sqlite_synchronous),
                    search_index: audit.sqlite_search_index,
                },
            )
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

/// The store's `synchronous` setting for the configured one.
pub fn synchronous(s: SqliteSynchronous) -> Synchronous {
    match s {
        SqliteSynchronous::Normal => Synchronous::Normal,
        SqliteSynchronous::Full => Synchronous::Full,
    }
}

/// Where losses a run could not record are kept for the next start: next
/// to the store on disk (none for the memory store, which a restart
/// empties anyway).
fn ledger(audit: &AuditConfig) -> Option<LossLedger> {
    (audit.storage != StorageKind::Memory).then(|| LossLedger::in_dir(&audit.file_path))
}

/// The least time shipping targets get to send the tail at shutdown, even
/// when draining the calls used up the grace period.
const MIN_SHIPPING_DRAIN: Duration = Duration::from_secs(1);

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
            queue_max_bytes: config.queue.max_bytes,
            max_batch: config.queue.max_batch,
            commit_interval: config.queue.commit_interval,
            health_interval: Duration::from_secs(5),
            shutdown_attempts: 3,
            source: config.instance.source(),
            checkpoints: config
                .audit
                .signing_key
                .clone()
                .map(|signer| CheckpointConfig {
                    signer,
                    every_events: config.audit.checkpoint_every_events,
                    interval: config.audit.checkpoint_interval,
                }),
            ledger: ledger(&config.audit),
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
    let shippers = start_shippers(&config, &store, &events, &writer_tracker).await?;
    let metrics = {
        let mut metrics = Metrics::new(events.stats().clone());
        metrics.register_shipping(shippers.iter().map(|(_, status)| status.clone()).collect());
        Arc::new(metrics)
    };
    let shippers: Vec<ShipperHandle> = shippers.into_iter().map(|(handle, _)| handle).collect();
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
        .commit_requests_first(config.audit.durability == Durability::Strict)
        .hold_offers(Holding::new(config.queue.full_wait, store_health.clone()))
    });
    // Strict durability admits calls as fail_closed does: a call whose
    // REQUEST cannot be committed must not be let in to wait for it.
    let closed = config.audit.on_store_failure == FailMode::FailClosed
        || config.audit.durability == Durability::Strict;
    let admission = if !config.audit.enabled {
        Admission::open()
    } else if closed {
        Admission::closed(
            &events,
            store_health.clone(),
            config.queue.capacity,
            config.queue.max_bytes,
            config.queue.full_wait,
        )
    } else {
        Admission::paced(
            &events,
            store_health.clone(),
            config.queue.capacity,
            config.queue.max_bytes,
            config.queue.full_wait,
        )
    };
    let state = Arc::new(ProxyState {
        client,
        upstream: config.proxy.upstream.clone(),
        upstream_host: crate::proxy::client::host_header(&config.proxy.upstream),
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
        admission,
        metrics: metrics.clone(),
        policies: config.policies.clone(),
        max_inspected_bytes: config.inspection.max_inspected_bytes,
        cut_at_shutdown,
    });

    record_last_stop(store.as_ref(), &events).await;
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
            ship_targets: config.shipping.target_names(),
        };
        writer_tracker.spawn(maintenance::run(store, events, cfg, stop));
    }

    let shutdown = CancellationToken::new();
    let admin_stop = CancellationToken::new();
    let refusals = Arc::new(RefusalLog::new(
        events.clone(),
        metrics.clone(),
        config.admin.refusal_interval,
    ));
    writer_tracker.spawn(refusals.clone().run(background.clone()));
    let pending_refusals = refusals.clone();
    let mut verify_keys = crate::event::checkpoint::TrustedKeys::new();
    if let Some(signer) = &config.audit.signing_key {
        verify_keys.add(signer.public_key());
    }
    let admin_state = AdminState {
        verify_keys,
        store,
        events: events.clone(),
        readiness: readiness.clone(),
        tokens: Arc::new(TokenSet::from_config(&config.admin)),
        refusals,
        page_max_bytes: config.admin.page_max_bytes,
        sanitizer,
        metrics: metrics.clone(),
    };
    let admin_task = writer_tracker.spawn(admin::server::serve(
        admin_listener,
        admin::router(admin_state),
        admin::server::Limits {
            header_read_timeout: config.admin.header_read_timeout,
            idle_timeout: config.admin.idle_timeout,
        },
        ConnectionCap::new(config.admin.max_connections, "admin", metrics.clone()),
        admin_stop.clone(),
    ));

    readiness.set_proxy_listening(true);
    tracing::info!(
        proxy = %proxy_addr,
        admin = %admin_addr,
        upstream = %config.proxy.upstream,
        storage = config.audit.storage.as_str(),
        "Audit proxy listening."
    );

    let ledger = ledger(&config.audit);
    let done = {
        let writer_tracker = writer_tracker.clone();
        // Its own tracker: this task waits for `writer_tracker` to empty.
        let shutdown_tracker = TaskTracker::new();
        let shutdown = shutdown.clone();
        let grace = config.proxy.shutdown_grace;
        let proxy_tracker = TaskTracker::new();
        let proxy_task = proxy::serve(
            proxy_listener,
            state.clone(),
            shutdown.clone(),
            grace,
            proxy_tracker.clone(),
            ConnectionCap::new(config.proxy.max_connections, "proxy", metrics),
        );
        shutdown_tracker.spawn(async move {
            let started = {
                let shutdown = shutdown.clone();
                async move {
                    shutdown.cancelled().await;
                    tokio::time::Instant::now()
                }
            };
            let (report, started) = tokio::join!(proxy_task, started);
            // Phase 1 happened when `shutdown` fired (see `Running::shutdown`).
            // Phase 2: connections drained or cut.
            proxy_tracker.close();
            proxy_tracker.wait().await;
            drop(state);
            // Phase 3: records of the last calls.
            calls.close();
            let _ = tokio::time::timeout(Duration::from_secs(5), calls.wait()).await;
            // Phase 4: nothing else writes custom or AUTHENTICATION events;
            // refusals still being counted are recorded.
            admin_stop.cancel();
            let _ = admin_task.await;
            pending_refusals.flush(true);
            background.cancel();
            // Phase 5: the shutdown event, sealed by the stop checkpoint
            // (when signing), then the queue closed and written.
            events.offer(
                NewEvent::new(EventType::System, "Audit proxy stopped")
                    .with_metadata(json!({"phase": "shutdown", "drained": report.drained})),
            );
            // A dead store must not hold the process past its grace.
            let sealed = tokio::time::timeout(Duration::from_secs(10), events.flush_and_seal())
                .await
                .is_ok();
            // Shippers send the tail, the shutdown event included, in what
            // is left of the grace period.
            let deadline = (started + grace).max(tokio::time::Instant::now() + MIN_SHIPPING_DRAIN);
            futures_util::future::join_all(shippers.into_iter().map(|s| s.drain(deadline))).await;
            let closed = tokio::time::timeout(Duration::from_secs(10), events.close())
                .await
                .is_ok();
            if !(sealed && closed) {
                tracing::error!("Audit events still queued at exit could not be written.");
            }
            // Phase 6.
            let stopped = account_losses(&events, ledger.as_ref());
            drop(events);
            writer_tracker.close();
            let _ = tokio::time::timeout(Duration::from_secs(5), writer_tracker.wait()).await;
            tracing::info!(
                drained = report.drained,
                events_lost = stopped.events_lost,
                "Audit proxy stopped."
            );
            stopped
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

/// Starts one shipper per configured target, each with its progress for
/// `/metrics` and `/api/stats`.
async fn start_shippers(
    config: &Config,
    store: &SharedStore,
    events: &Handle,
    tracker: &TaskTracker,
) -> Result<Vec<(ShipperHandle, Arc<TargetStatus>)>, StartError> {
    if !config.shipping.is_enabled() {
        return Ok(Vec::new());
    }
    let source_id = store
        .source_id()
        .await
        .map_err(|e| StartError::Shipping(format!("the store's source_id cannot be read: {e}")))?
        .ok_or_else(|| {
            StartError::Shipping(format!(
                "the {} store keeps no source_id to ship under",
                store.kind()
            ))
        })?;
    let source = Source {
        source_id,
        pod: config.instance.pod_name.clone(),
        namespace: config.instance.pod_namespace.clone(),
        node: config.instance.node_name.clone(),
    };
    // Each target has its own shipper and cursor.
    let mut targets: Vec<Arc<dyn ShipTarget>> = Vec::new();
    if let Some(pg) = &config.shipping.postgres {
        targets.push(Arc::new(
            PostgresTarget::new(&pg.dsn, config.shipping.central_retention_days)
                .map_err(StartError::Shipping)?,
        ));
    }
    if let Some(http) = &config.shipping.http {
        targets.push(Arc::new(
            HttpTarget::new(http).map_err(StartError::Shipping)?,
        ));
    }
    let mut shippers = Vec::new();
    for target in targets {
        let status = Arc::new(TargetStatus::new(target.name()));
        let handle = shipper::spawn(
            tracker,
            Shipper {
                store: store.clone(),
                target,
                source: source.clone(),
                config: ShipperConfig {
                    batch_size: config.shipping.batch_size,
                    poll_interval: config.shipping.poll_interval,
                    max_backoff: config.shipping.max_backoff,
                },
                status: status.clone(),
                events: events.clone(),
            },
        );
        shippers.push((handle, status));
    }
    Ok(shippers)
}

/// Runs until SIGTERM or Ctrl-C, then shuts down in phases.
pub async fn run(config: Config) -> Result<Stopped, StartError> {
    let stop = stop_signal();
    let running = start(config).await?;
    stop.await;
    running.shutdown();
    Ok(running.wait().await)
}

// === impl Running ===

impl Running {
    /// Starts the shutdown phases (readiness turns 503 at once).
    pub fn shutdown(&self) {
        self.readiness.start_draining();
        self.shutdown.cancel();
    }

    /// Waits until shutdown has finished, and says what was lost.
    pub async fn wait(self) -> Stopped {
        self.done.await.unwrap_or_default()
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

/// Records an ERROR `unclean_shutdown` when the store's last run did not
/// end with its clean-stop event. Offered before the startup events.
async fn record_last_stop(store: &dyn crate::store::AuditStore, events: &Handle) {
    match unclean_shutdown_event(store).await {
        Ok(Some(event)) => {
            tracing::warn!("The previous run did not stop cleanly.");
            events.offer(event);
        }
        Ok(None) => {}
        Err(error) => {
            tracing::error!(%error, "Audit store's last event could not be read.");
        }
    }
}

/// Sums up the run's losses once the queue has closed, and keeps those
/// the store never recorded for the next start.
fn account_losses(events: &Handle, ledger: Option<&LossLedger>) -> Stopped {
    let stats = events.stats();
    let stopped = Stopped {
        events_lost: stats.losses(),
        unrecorded: stats.unreported_losses(),
    };
    if stopped.unrecorded > 0 {
        tracing::error!(
            unrecorded = stopped.unrecorded,
            "Audit events were lost and the store could not record it."
        );
        if let Some(ledger) = ledger {
            if let Err(error) = ledger.add(stopped.unrecorded) {
                tracing::error!(%error, file = %ledger.path().display(), "Cannot keep the count of unrecorded losses.");
            }
        }
    }
    stopped
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

/// Listens for SIGTERM from the moment it is called, so a signal sent as
/// soon as the start-up line is logged is not met by the default action
/// (which would kill the process before its shutdown phases). Resolves on
/// SIGTERM or Ctrl-C.
pub(crate) fn stop_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
    async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            match term {
                Some(mut s) => {
                    s.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
    }
}

//! From captured calls to stored events, off the request path.
//!
//! Producers hold a [`Handle`] and *offer* events: a full queue drops the
//! event and counts it, so a slow or broken store never slows the app's
//! calls (what happens to the calls then is `audit.on_store_failure`'s
//! choice, enforced by the proxy through [`health::StoreHealth`]). One
//! writer task ([`writer`]) is the only place `seq` and the hash chain are
//! stamped, so the chain is a true record of write order.

pub mod builder;
pub mod checkpoint;
pub mod health;
pub mod maintenance;
pub mod record;
pub mod writer;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::event::{AuditEvent, Level, NewEvent};

pub use health::StoreHealth;
pub use writer::{spawn_writer, WriterConfig};

/// What the writer receives.
pub(crate) enum WriterMsg {
    Event(NewEvent),
    /// An event whose producer waits for the stored result.
    EventAck(NewEvent, oneshot::Sender<Result<AuditEvent, SubmitError>>),
    /// Answered once everything queued before it has been written.
    Flush(oneshot::Sender<()>),
    /// As `Flush`, with a checkpoint written after everything queued
    /// before it: a stop checkpoint (a clean stop) or one over the head.
    Checkpoint {
        stop: bool,
        done: oneshot::Sender<()>,
    },
}

/// Counters shared by the handle and the writer.
#[derive(Debug)]
pub struct PipelineStats {
    pub offered: AtomicU64,
    /// Offered but not queued because the queue was full or closed.
    pub dropped: AtomicU64,
    /// Below `audit.log_level`, or auditing disabled.
    pub filtered: AtomicU64,
    pub written: AtomicU64,
    pub write_failures: AtomicU64,
    /// Events lost after the writer gave up on a batch at shutdown.
    pub lost: AtomicU64,
    pub queue_depth: AtomicU64,
    /// Seconds per batch append.
    pub write_seconds: prometheus_client::metrics::histogram::Histogram,
}

impl Default for PipelineStats {
    fn default() -> Self {
        Self {
            offered: AtomicU64::default(),
            dropped: AtomicU64::default(),
            filtered: AtomicU64::default(),
            written: AtomicU64::default(),
            write_failures: AtomicU64::default(),
            lost: AtomicU64::default(),
            queue_depth: AtomicU64::default(),
            // 100 µs to ~3 s.
            write_seconds: prometheus_client::metrics::histogram::Histogram::new(
                prometheus_client::metrics::histogram::exponential_buckets(0.0001, 2.0, 16),
            ),
        }
    }
}

/// Why a waited-for event was not stored.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("auditing is disabled")]
    Disabled,
    #[error("the event's level is below audit.log_level")]
    BelowLevel,
    #[error("the event queue is full")]
    QueueFull,
    #[error("the audit writer has stopped")]
    Closed,
    #[error("the store refused the event: {0}")]
    Store(String),
}

/// The producers' side of the pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Handle {
    tx: mpsc::Sender<WriterMsg>,
    min_level: Level,
    enabled: bool,
    stats: Arc<PipelineStats>,
    /// Where the proxy runs, added to every event's metadata.
    source: Option<Arc<serde_json::Value>>,
}

// === impl Handle ===

impl Handle {
    pub(crate) fn new(
        tx: mpsc::Sender<WriterMsg>,
        min_level: Level,
        enabled: bool,
        stats: Arc<PipelineStats>,
        source: Option<serde_json::Value>,
    ) -> Self {
        Self {
            tx,
            min_level,
            enabled,
            stats,
            source: source.map(Arc::new),
        }
    }

    /// Adds the source and serialises the metadata here, on the producer's
    /// thread, so the single writer only hashes and appends.
    fn prepare(&self, event: &mut NewEvent) {
        stamp_source(event, self.source.as_deref());
        event.prepare();
    }

    /// Queues `event` without waiting. Returns false when it was filtered
    /// out or dropped (a full queue is counted in [`PipelineStats::dropped`]).
    pub fn offer(&self, mut event: NewEvent) -> bool {
        if !self.accepts(event.level) {
            self.stats.filtered.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.prepare(&mut event);
        self.stats.offered.fetch_add(1, Ordering::Relaxed);
        // Counted before sending: the writer may take the event (and count
        // it out) before `try_send` even returns.
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(WriterMsg::Event(event)) {
            Ok(()) => true,
            Err(_) => {
                self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
                self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    dropped_total = self.stats.dropped.load(Ordering::Relaxed),
                    "Audit event dropped: the queue is full or closed."
                );
                false
            }
        }
    }

    /// Queues `event` and waits until it is stored, returning it sealed.
    /// For callers that must answer with the stored event (the admin API);
    /// never used on the proxy's request path.
    pub async fn submit(&self, mut event: NewEvent) -> Result<AuditEvent, SubmitError> {
        if !self.enabled {
            return Err(SubmitError::Disabled);
        }
        if event.level < self.min_level {
            return Err(SubmitError::BelowLevel);
        }
        self.prepare(&mut event);
        let (ack_tx, ack_rx) = oneshot::channel();
        self.stats.offered.fetch_add(1, Ordering::Relaxed);
        self.stats.queue_depth.fetch_add(1, Ordering::Relaxed);
        if self
            .tx
            .try_send(WriterMsg::EventAck(event, ack_tx))
            .is_err()
        {
            self.stats.queue_depth.fetch_sub(1, Ordering::Relaxed);
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return Err(SubmitError::QueueFull);
        }
        ack_rx.await.unwrap_or(Err(SubmitError::Closed))
    }

    /// Waits until every event queued before this call has been written
    /// (or the writer has stopped).
    pub async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(WriterMsg::Flush(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// As [`flush`](Self::flush), and then seals the record with a stop
    /// checkpoint when checkpoints are configured: a clean stop's last word.
    pub async fn flush_and_seal(&self) {
        self.checkpoint(true).await;
    }

    /// As [`flush`](Self::flush), and then has a checkpoint cover what was
    /// written (when checkpoints are configured), e.g. before an export.
    pub async fn flush_and_checkpoint(&self) {
        self.checkpoint(false).await;
    }

    async fn checkpoint(&self, stop: bool) {
        let (done, rx) = oneshot::channel();
        if self
            .tx
            .send(WriterMsg::Checkpoint { stop, done })
            .await
            .is_ok()
        {
            let _ = rx.await;
        }
    }

    /// Whether an event at `level` would be stored at all.
    pub fn accepts(&self, level: Level) -> bool {
        self.enabled && level >= self.min_level
    }

    pub fn stats(&self) -> &Arc<PipelineStats> {
        &self.stats
    }
}

/// Adds `source` to an object's metadata unless the producer set one.
pub(crate) fn stamp_source(event: &mut NewEvent, source: Option<&serde_json::Value>) {
    if let (Some(source), serde_json::Value::Object(meta)) = (source, &mut event.metadata) {
        if !meta.contains_key("source") {
            meta.insert("source".to_owned(), source.clone());
            event.metadata_json = Default::default();
        }
    }
}

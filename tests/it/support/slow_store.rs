//! A store that works but is slower than the traffic, or stalls without
//! failing until it is released: the writer falls behind while the store's
//! health stays good.

use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use llm_audit_proxy::event::AuditEvent;
use llm_audit_proxy::store::memory::MemoryStore;
use llm_audit_proxy::store::{
    AuditStore, Batch, ChainHead, EventFilter, EventPage, EventQuery, EventStream, PurgeReport,
    StoreError, StoreStats,
};
use tokio::sync::watch;

/// A memory store whose every append first waits while it is stalled,
/// then takes `per_batch`.
pub struct SlowStore {
    inner: MemoryStore,
    per_batch: Duration,
    flowing: watch::Sender<bool>,
}

impl SlowStore {
    /// Takes each batch after `per_batch`.
    pub fn new(per_batch: Duration) -> Self {
        Self {
            inner: MemoryStore::new(100_000),
            per_batch,
            flowing: watch::Sender::new(true),
        }
    }

    /// Holds every append (its health check still passes) until
    /// [`release`](Self::release).
    pub fn stall(&self) {
        self.flowing.send_replace(false);
    }

    pub fn release(&self) {
        self.flowing.send_replace(true);
    }
}

#[async_trait]
impl AuditStore for SlowStore {
    fn kind(&self) -> &'static str {
        "slow"
    }
    async fn append_batch(&self, batch: Batch) -> Result<(), StoreError> {
        let mut flowing = self.flowing.subscribe();
        let _ = flowing.wait_for(|f| *f).await;
        tokio::time::sleep(self.per_batch).await;
        self.inner.append_batch(batch).await
    }
    async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
        self.inner.head().await
    }
    async fn query(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        self.inner.query(q).await
    }
    async fn get(&self, id: &str) -> Result<Option<AuditEvent>, StoreError> {
        self.inner.get(id).await
    }
    fn export(&self, filter: EventFilter) -> EventStream {
        self.inner.export(filter)
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.inner.stats().await
    }
    async fn health(&self) -> Result<(), StoreError> {
        self.inner.health().await
    }
    async fn purge_before(&self, before: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        self.inner.purge_before(before).await
    }
    async fn enforce_max_bytes(&self, max: u64) -> Result<PurgeReport, StoreError> {
        self.inner.enforce_max_bytes(max).await
    }
}

//! A bounded in-memory store: the newest `limit` events, oldest dropped.
//!
//! For tests, demos and sidecars whose events are shipped elsewhere. It
//! answers queries, exports and stats exactly like the persistent stores;
//! events pushed out of the ring are counted in [`MemoryStore::dropped`].

use std::collections::{BTreeMap, VecDeque};
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, StreamExt};

use super::{
    AuditStore, Batch, ChainHead, EventFilter, EventPage, EventQuery, EventStream, PurgeReport,
    StoreError, StoreStats, MAX_QUERY_LIMIT,
};
use crate::event::{format_timestamp, AuditEvent, EventType};

/// The in-memory ring store.
#[derive(Debug)]
pub struct MemoryStore {
    limit: usize,
    inner: Mutex<Ring>,
    /// Made with the store: a memory store lives as long as its process.
    source_id: String,
}

#[derive(Debug, Default)]
struct Ring {
    /// Ascending `seq`, as appended.
    events: VecDeque<Stored>,
    dropped: u64,
    /// Shipping cursors by target: they live as long as the events do.
    ship_cursors: BTreeMap<String, i64>,
}

/// One event of the ring: a share of the batch the writer appended, so
/// appending copies no event (their metadata trees are the larger part of
/// an event). A batch lives until its last event leaves the ring, which
/// bounds the extra memory to one batch.
#[derive(Debug, Clone)]
struct Stored {
    batch: Batch,
    index: usize,
}

impl Deref for Stored {
    type Target = AuditEvent;

    fn deref(&self) -> &AuditEvent {
        &self.batch[self.index]
    }
}

// === impl MemoryStore ===

impl MemoryStore {
    /// A store keeping at most `limit` events (at least one, so the chain
    /// head is never lost).
    pub fn new(limit: usize) -> Self {
        let limit = limit.max(1);
        Self {
            limit,
            inner: Mutex::new(Ring {
                events: VecDeque::with_capacity(limit.min(4096)),
                dropped: 0,
                ship_cursors: BTreeMap::new(),
            }),
            source_id: uuid::Uuid::now_v7().to_string(),
        }
    }

    /// Events pushed out of the ring so far.
    pub fn dropped(&self) -> u64 {
        self.ring().dropped
    }

    pub fn limit(&self) -> usize {
        self.limit
    }

    fn ring(&self) -> MutexGuard<'_, Ring> {
        // No code path panics while holding the lock, and the ring is
        // consistent between statements, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[async_trait]
impl AuditStore for MemoryStore {
    fn kind(&self) -> &'static str {
        "memory"
    }

    async fn append_batch(&self, events: super::Batch) -> Result<(), StoreError> {
        let mut ring = self.ring();
        // Only the newest `limit` of a batch can stay.
        let skipped = events.len().saturating_sub(self.limit);
        ring.dropped += skipped as u64;
        for index in skipped..events.len() {
            if ring.events.len() == self.limit {
                ring.events.pop_front();
                ring.dropped += 1;
            }
            ring.events.push_back(Stored {
                batch: Arc::clone(&events),
                index,
            });
        }
        Ok(())
    }

    async fn source_id(&self) -> Result<Option<String>, StoreError> {
        Ok(Some(self.source_id.clone()))
    }

    async fn ship_cursor(&self, target: &str) -> Result<Option<i64>, StoreError> {
        Ok(self.ring().ship_cursors.get(target).copied())
    }

    async fn set_ship_cursor(&self, target: &str, seq: i64) -> Result<(), StoreError> {
        self.ring().ship_cursors.insert(target.to_owned(), seq);
        Ok(())
    }

    async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
        Ok(self.ring().events.back().map(|e| ChainHead {
            seq: e.seq,
            hash: e.hash.clone(),
        }))
    }

    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
        let limit = query.limit.clamp(1, MAX_QUERY_LIMIT);
        let ring = self.ring();
        // Events are in ascending seq, so the cursor is a binary search.
        let end = match query.before_seq {
            Some(before) => ring.events.partition_point(|e| e.seq < before),
            None => ring.events.len(),
        };
        let events = ring
            .events
            .range(..end)
            .rev()
            .filter(|e| query.filter.matches(e))
            .take(limit + 1)
            .map(|e| AuditEvent::clone(e))
            .collect();
        Ok(EventPage::from_overfetched(events, limit))
    }

    async fn get(&self, id: &str) -> Result<Option<AuditEvent>, StoreError> {
        Ok(self
            .ring()
            .events
            .iter()
            .find(|e| e.id == id)
            .map(|e| AuditEvent::clone(e)))
    }

    fn export(&self, filter: EventFilter) -> EventStream {
        // A snapshot is bounded by `limit`, so it cannot grow memory
        // beyond what the store already holds.
        let snapshot: Vec<AuditEvent> = self
            .ring()
            .events
            .iter()
            .filter(|e| filter.matches(e))
            .map(|e| AuditEvent::clone(e))
            .collect();
        stream::iter(snapshot.into_iter().map(Ok)).boxed()
    }

    async fn stats(&self) -> Result<StoreStats, StoreError> {
        let ring = self.ring();
        let mut stats = StoreStats {
            total_events: ring.events.len() as u64,
            evicted: ring.dropped,
            oldest_timestamp: ring
                .events
                .iter()
                .map(|e| e.timestamp)
                .min()
                .map(|t| format_timestamp(&t)),
            newest_timestamp: ring
                .events
                .iter()
                .map(|e| e.timestamp)
                .max()
                .map(|t| format_timestamp(&t)),
            ..StoreStats::default()
        };
        let count = |map: &mut BTreeMap<String, u64>, key: &str| {
            *map.entry(key.to_owned()).or_default() += 1;
        };
        for e in &ring.events {
            count(&mut stats.by_type, e.event_type.as_str());
            count(&mut stats.by_level, e.level.as_str());
            if e.event_type == EventType::ComplianceViolation {
                let policy = e.metadata.field("policy_name");
                count(
                    &mut stats.violations_by_policy,
                    policy.as_str().unwrap_or_default(),
                );
                let severity = e.metadata.field("severity");
                count(
                    &mut stats.violations_by_severity,
                    severity.as_str().unwrap_or_default(),
                );
            }
        }
        Ok(stats)
    }

    async fn health(&self) -> Result<(), StoreError> {
        drop(self.ring());
        Ok(())
    }

    async fn purge_before(&self, before: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        let mut ring = self.ring();
        let mut report = PurgeReport::default();
        // Oldest first, stopping at the first event that stays and always
        // keeping the newest, so what remains is an unbroken chain tail.
        while ring.events.len() > 1 && ring.events.front().is_some_and(|e| e.timestamp < before) {
            if let Some(e) = ring.events.pop_front() {
                report.removed += 1;
                report.first_seq.get_or_insert(e.seq);
                report.last_seq = Some(e.seq);
            }
        }
        report.oldest_remaining = oldest(&ring);
        Ok(report)
    }

    /// Memory occupies nothing on disk, so there is never anything to
    /// remove; `audit.memory_limit` bounds this store instead.
    async fn enforce_max_bytes(&self, _max_bytes: u64) -> Result<PurgeReport, StoreError> {
        Ok(PurgeReport {
            oldest_remaining: oldest(&self.ring()),
            ..PurgeReport::default()
        })
    }
}

fn oldest(ring: &Ring) -> Option<String> {
    ring.events
        .iter()
        .map(|e| e.timestamp)
        .min()
        .map(|t| format_timestamp(&t))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{chain::GENESIS_HASH, NewEvent};

    /// Events 1..=n, sealed into one chain.
    fn sealed(n: i64) -> Vec<AuditEvent> {
        let mut prev = GENESIS_HASH.to_owned();
        (1..=n)
            .map(|seq| {
                let e = NewEvent::new(EventType::Custom, format!("e{seq}")).seal(seq, &prev);
                prev.clone_from(&e.hash);
                e
            })
            .collect()
    }

    #[tokio::test]
    async fn conforms() {
        crate::store::conformance::conformance_suite(|| async {
            (
                std::sync::Arc::new(MemoryStore::new(10_000)) as crate::store::SharedStore,
                (),
            )
        })
        .await;
    }

    #[tokio::test]
    async fn ring_drops_oldest_and_counts_them() {
        let store = MemoryStore::new(3);
        let events = sealed(5);
        store.append_batch(events.clone().into()).await.unwrap();
        assert_eq!(store.dropped(), 2);
        let page = store
            .query(&EventQuery {
                filter: EventFilter::default(),
                limit: 10,
                before_seq: None,
            })
            .await
            .unwrap();
        let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [5, 4, 3]);
        assert_eq!(store.head().await.unwrap().unwrap().seq, 5);
        assert!(store.get(&events[0].id).await.unwrap().is_none());
        assert_eq!(store.stats().await.unwrap().total_events, 3);
    }

    #[tokio::test]
    async fn append_shares_the_batch_instead_of_copying_events() {
        let store = MemoryStore::new(3);
        let events = sealed(2);
        let batch: Batch = events.into();
        store.append_batch(Arc::clone(&batch)).await.unwrap();
        // Ours, plus one per stored event.
        assert_eq!(Arc::strong_count(&batch), 3);
        let ring = store.ring();
        assert!(std::ptr::eq(&*ring.events[0], &batch[0]));
        assert!(std::ptr::eq(&*ring.events[1], &batch[1]));
    }

    #[tokio::test]
    async fn a_batch_larger_than_the_ring_keeps_its_newest_events() {
        let store = MemoryStore::new(2);
        let events = sealed(5);
        store.append_batch(events.into()).await.unwrap();
        assert_eq!(store.dropped(), 3);
        let seqs: Vec<i64> = store.ring().events.iter().map(|e| e.seq).collect();
        assert_eq!(seqs, [4, 5]);
    }
}

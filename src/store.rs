//! Storage of audit events behind one narrow interface.
//!
//! Stores write rows exactly as given: ids, times, `seq` and hashes are
//! stamped by the pipeline's writer. Every backend answers queries the same
//! way (newest first, keyset cursor on `seq`) and exports oldest first.

#[cfg(test)]
pub(crate) mod conformance;
pub mod memory;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::BoxStream;
use serde::Serialize;

use crate::event::{AuditEvent, EventType, Level};

/// The largest page `query` returns.
pub const MAX_QUERY_LIMIT: usize = 10_000;
/// The page size when the caller names none.
pub const DEFAULT_QUERY_LIMIT: usize = 100;

/// Which events a query or export selects. Every condition present must hold.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EventFilter {
    /// Any of these types; empty means all.
    pub event_types: Vec<EventType>,
    /// Inclusive lower bound.
    pub start_time: Option<DateTime<Utc>>,
    /// Exclusive upper bound.
    pub end_time: Option<DateTime<Utc>>,
    pub request_id: Option<String>,
    /// Minimum level.
    pub min_level: Option<Level>,
}

/// A page request: newest first, below `before_seq` when paging on.
#[derive(Debug, Clone, PartialEq)]
pub struct EventQuery {
    pub filter: EventFilter,
    /// 1..=MAX_QUERY_LIMIT.
    pub limit: usize,
    /// Only events with `seq` strictly below this (the cursor of the
    /// previous page).
    pub before_seq: Option<i64>,
}

/// One page of a query.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage {
    pub events: Vec<AuditEvent>,
    /// `seq` to pass as `before_seq` for the next page; `None` on the last.
    pub next_before_seq: Option<i64>,
}

/// The newest event of a store, which the writer continues the chain from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainHead {
    pub seq: i64,
    pub hash: String,
}

/// Counts for `/api/stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StoreStats {
    pub total_events: u64,
    pub by_type: std::collections::BTreeMap<String, u64>,
    pub by_level: std::collections::BTreeMap<String, u64>,
    /// Bytes the store occupies on disk (0 for memory).
    pub store_bytes: u64,
    pub oldest_timestamp: Option<String>,
    pub newest_timestamp: Option<String>,
    /// COMPLIANCE_VIOLATION events by their `policy_name` metadata.
    pub violations_by_policy: std::collections::BTreeMap<String, u64>,
}

/// A store failure. `retriable` tells the writer whether trying the same
/// batch again may succeed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store is unavailable: {0}")]
    Unavailable(String),
    #[error("store is full: {0}")]
    Full(String),
    #[error("store data is corrupt: {0}")]
    Corrupt(String),
    #[error("store operation failed: {0}")]
    Other(String),
}

/// Stream of events, in the order the call defines.
pub type EventStream = BoxStream<'static, Result<AuditEvent, StoreError>>;

/// The one interface every backend implements.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// A short name for logs and stats: `sqlite`, `memory`, `file`.
    fn kind(&self) -> &'static str;

    /// Persists a batch atomically, in order. Events arrive sealed.
    async fn append_batch(&self, events: Vec<AuditEvent>) -> Result<(), StoreError>;

    /// The newest event's seq and hash, if any.
    async fn head(&self) -> Result<Option<ChainHead>, StoreError>;

    /// A page, newest first.
    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError>;

    /// One event by id.
    async fn get(&self, id: &str) -> Result<Option<AuditEvent>, StoreError>;

    /// Every matching event, oldest first, read in bounded chunks so memory
    /// stays flat whatever the size.
    fn export(&self, filter: EventFilter) -> EventStream;

    /// Counts by type and level, and size on disk.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Runs a real, cheap operation of the store (a read that touches it).
    async fn health(&self) -> Result<(), StoreError>;
}

pub type SharedStore = Arc<dyn AuditStore>;

// === impl StoreError ===

impl StoreError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Full(_))
    }
}

// === impl EventPage ===

impl EventPage {
    /// Builds a page from up to `limit + 1` events read newest first: the
    /// extra one only says that another page exists.
    pub(crate) fn from_overfetched(mut events: Vec<AuditEvent>, limit: usize) -> Self {
        let next_before_seq = if events.len() > limit {
            events.truncate(limit);
            events.last().map(|e| e.seq)
        } else {
            None
        };
        Self {
            events,
            next_before_seq,
        }
    }
}

// === impl EventFilter ===

impl EventFilter {
    /// Whether `event` passes the filter (for stores that filter in memory).
    pub fn matches(&self, event: &AuditEvent) -> bool {
        (self.event_types.is_empty() || self.event_types.contains(&event.event_type))
            && self.start_time.is_none_or(|t| event.timestamp >= t)
            && self.end_time.is_none_or(|t| event.timestamp < t)
            && self
                .request_id
                .as_deref()
                .is_none_or(|r| event.request_id.as_deref() == Some(r))
            && self.min_level.is_none_or(|l| event.level >= l)
    }
}

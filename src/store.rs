//! Storage of audit events behind one narrow interface.
//!
//! Stores write rows exactly as given: ids, times, `seq` and hashes are
//! stamped by the pipeline's writer. Every backend answers queries the same
//! way (newest first, keyset cursor on `seq`) and exports oldest first.
//!
//! Retention and the size cap remove the *oldest* events only, as a run
//! from the start of the chain, and never the newest event: what remains is
//! an unbroken tail of the chain (which [`ChainVerifier`] accepts, since it
//! trusts the first event it sees), and the writer always finds the head it
//! continues from, so `seq` never restarts.
//!
//! [`ChainVerifier`]: crate::event::chain::ChainVerifier

pub mod browse;
#[cfg(test)]
pub(crate) mod conformance;
pub mod file;
pub mod memory;
pub mod postgres;
pub mod sqlite;
pub mod verify;

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures_util::stream::{self, BoxStream, StreamExt};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::event::{format_timestamp, AuditEvent, EventRecord, EventType, Level};

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
    /// Compliance events of this policy (`metadata.policy_name`).
    pub policy_name: Option<String>,
    /// Events of this source (a store's `source_id`). The central store
    /// holds many; a local store holds one, so there the filter matches
    /// everything or nothing (see [`scope_filter`]).
    pub source: Option<String>,
    /// Events of sources in this pod (as in `source`).
    pub pod: Option<String>,
    /// Events of sources in this namespace (as in `source`).
    pub namespace: Option<String>,
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

/// One page of a query: of events, or of [`EventRecord`]s.
#[derive(Debug, Clone, PartialEq)]
pub struct EventPage<E = AuditEvent> {
    pub events: Vec<E>,
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
    /// COMPLIANCE_VIOLATION events by their `severity` metadata.
    pub violations_by_severity: std::collections::BTreeMap<String, u64>,
    /// Events the memory store pushed out of its ring (`audit.memory_limit`).
    pub evicted: u64,
}

/// What a purge removed, and the store's size around it.
///
/// `first_seq..=last_seq` is the removed run (purges only ever remove the
/// oldest events, so it is contiguous).
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PurgeReport {
    pub removed: u64,
    pub first_seq: Option<i64>,
    pub last_seq: Option<i64>,
    /// The oldest timestamp still stored, as events carry it.
    pub oldest_remaining: Option<String>,
    /// Bytes on disk before and after (0 for memory).
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// When the file store starts a new file, by the event's UTC timestamp
/// (`audit.file_rotation`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Rotation {
    Hourly,
    #[default]
    Daily,
    Weekly,
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
    /// The batch's `seq` is already taken: another process appended to the
    /// store (an offline `purge` recording its SYSTEM event). The writer
    /// re-reads the head and seals the batch again.
    #[error("another writer appended to the store: {0}")]
    Conflict(String),
    #[error("store operation failed: {0}")]
    Other(String),
}

/// A sealed batch, shared between the writer (which may retry it) and the
/// store.
pub type Batch = Arc<[AuditEvent]>;

/// Stream of events, in the order the call defines.
pub type EventStream = BoxStream<'static, Result<AuditEvent, StoreError>>;

/// Stream of records, in the order the call defines.
pub type RecordStream = BoxStream<'static, Result<EventRecord, StoreError>>;

/// A page of records, as `/api/events` serialises it.
pub type RecordPage = EventPage<EventRecord>;

/// What an export's reading thread hands to the stream: a chunk of events
/// (or records), or the error that ends it.
pub(crate) type EventChunk<E = AuditEvent> = Result<Vec<E>, StoreError>;

/// Anything with a place in the chain (for paging).
pub trait Sequenced {
    fn seq(&self) -> i64;
}

/// The one interface every backend implements.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    /// A short name for logs and stats: `sqlite`, `memory`, `file`,
    /// `postgres`.
    fn kind(&self) -> &'static str;

    /// Whether the store holds the events of many sources (the central
    /// store): it then filters on `source`, `pod` and `namespace` itself,
    /// pages on its own row order, and each source's chain is verified on
    /// its own.
    fn holds_many_sources(&self) -> bool {
        false
    }

    /// The sources the store holds, oldest first; a store of one source
    /// answers its own id (none when it keeps none).
    async fn source_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(self.source_id().await?.into_iter().collect())
    }

    /// Persists a batch atomically, in order. Events arrive sealed.
    async fn append_batch(&self, events: Batch) -> Result<(), StoreError>;

    /// The newest event's seq and hash, if any.
    async fn head(&self) -> Result<Option<ChainHead>, StoreError>;

    /// The store's stable id (a UUID made when the store was created), which
    /// signed checkpoints name; `None` for a store that keeps none.
    async fn source_id(&self) -> Result<Option<String>, StoreError> {
        Ok(None)
    }

    /// The seq and hash of the newest CHECKPOINT event appended, as the
    /// store records it apart from the events, so that `verify` notices a
    /// tail cut from the events alone; `None` when it keeps no such record.
    async fn latest_checkpoint(&self) -> Result<Option<ChainHead>, StoreError> {
        Ok(None)
    }

    /// Up to `limit` records with `seq` above `after_seq`, oldest first:
    /// what a shipper sends next. The default reads through
    /// [`export_records`](Self::export_records); stores with an index on
    /// `seq` answer it directly.
    async fn records_after(
        &self,
        after_seq: i64,
        limit: usize,
    ) -> Result<Vec<EventRecord>, StoreError> {
        let mut stream = self.export_records(EventFilter::default());
        let mut records = Vec::new();
        while let Some(record) = stream.next().await {
            let record = record?;
            if record.seq > after_seq {
                records.push(record);
                if records.len() >= limit {
                    break;
                }
            }
        }
        Ok(records)
    }

    /// The last `seq` shipping target `target` has acknowledged, kept in
    /// the store itself so it survives a restart; `None` before the first.
    /// Stores that keep no cursor refuse (the default).
    async fn ship_cursor(&self, target: &str) -> Result<Option<i64>, StoreError> {
        Err(no_ship_cursor(self.kind(), target))
    }

    /// Moves `target`'s cursor to `seq`, durably. Called only after the
    /// target acknowledged every event up to `seq`.
    async fn set_ship_cursor(&self, target: &str, _seq: i64) -> Result<(), StoreError> {
        Err(no_ship_cursor(self.kind(), target))
    }

    /// A page, newest first.
    async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError>;

    /// The page [`query`](Self::query) returns, as records to serialise.
    /// Stores that keep metadata as JSON text hand that text over instead
    /// of building values from it.
    async fn query_records(&self, query: &EventQuery) -> Result<RecordPage, StoreError> {
        let page = self.query(query).await?;
        Ok(EventPage {
            events: page
                .events
                .into_iter()
                .map(to_record)
                .collect::<Result<_, _>>()?,
            next_before_seq: page.next_before_seq,
        })
    }

    /// One event by id.
    async fn get(&self, id: &str) -> Result<Option<AuditEvent>, StoreError>;

    /// Every matching event, oldest first, read in bounded chunks so memory
    /// stays flat whatever the size.
    fn export(&self, filter: EventFilter) -> EventStream;

    /// What [`export`](Self::export) streams, as records to serialise (see
    /// [`query_records`](Self::query_records)).
    fn export_records(&self, filter: EventFilter) -> RecordStream {
        self.export(filter)
            .map(|event| event.and_then(to_record))
            .boxed()
    }

    /// A page of events matching a search over their content (text, call
    /// facets), newest first. The default reads through
    /// [`query_records`](Self::query_records) and checks each record,
    /// reading a bounded number ([`browse::SCAN_LIMIT`]); stores with a
    /// text index answer directly.
    async fn search(&self, query: &browse::SearchQuery) -> Result<browse::SearchPage, StoreError> {
        browse::search_by_scan(self, query).await
    }

    /// Whether [`search`](Self::search) uses a text index (and so reads
    /// every match, not a bounded number of events).
    fn has_text_index(&self) -> bool {
        false
    }

    /// Calls, errors, latency, tokens and violations over a time range.
    /// The default reads the range's events (bounded, see
    /// [`browse::overview_by_scan`]); stores with rollups answer directly.
    async fn overview(
        &self,
        query: &browse::OverviewQuery,
    ) -> Result<browse::Overview, StoreError> {
        browse::overview_by_scan(self, query).await
    }

    /// Counts by type and level, and size on disk.
    async fn stats(&self) -> Result<StoreStats, StoreError>;

    /// Bytes the store occupies on disk, cheaply (for `/metrics`).
    async fn size_bytes(&self) -> Result<u64, StoreError> {
        Ok(self.stats().await?.store_bytes)
    }

    /// Runs a real, cheap operation of the store (a read that touches it).
    async fn health(&self) -> Result<(), StoreError>;

    /// Leaves the store whole on disk at a clean stop, so a copy of its
    /// files alone is complete (SQLite: the WAL checkpointed into the main
    /// file and truncated). Called by the writer after its last write.
    async fn close(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Removes events with timestamp < `before`. Returns what was removed.
    ///
    /// Only a run of the oldest events goes (in `seq` order, stopping at the
    /// first one that must stay), and never the newest event, so the rest
    /// of the chain stays verifiable and the writer keeps its head. Stores
    /// may keep more than asked: the file store removes whole files only.
    async fn purge_before(&self, before: DateTime<Utc>) -> Result<PurgeReport, StoreError>;

    /// Removes the oldest events until the store occupies at most
    /// `max_bytes` on disk. Returns what was removed (count 0 if nothing had
    /// to go). The newest event always stays, so a cap below what one event
    /// (or, for the file store, the file being written) needs is not reached.
    async fn enforce_max_bytes(&self, max_bytes: u64) -> Result<PurgeReport, StoreError>;
}

pub type SharedStore = Arc<dyn AuditStore>;

/// Turns the chunks an export's reading thread sends into a stream of
/// events (or records); the stream ends after the first error.
pub(crate) fn chunk_stream<E: Send + 'static>(
    rx: mpsc::Receiver<EventChunk<E>>,
) -> BoxStream<'static, Result<E, StoreError>> {
    stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|chunk| (chunk, rx))
    })
    .flat_map(|chunk| {
        let (events, error) = match chunk {
            Ok(events) => (events, None),
            Err(error) => (Vec::new(), Some(error)),
        };
        stream::iter(events.into_iter().map(Ok).chain(error.map(Err)))
    })
    .boxed()
}

/// The filter a store of one source applies: `source`, `pod` and
/// `namespace` name the store itself there, so each is dropped when it
/// equals the store's own (its `source_id`; the `pod` and `namespace` of
/// `instance`, the process's `instance.*` settings) and makes the filter
/// match nothing (`None`) otherwise. A store of many sources gets the
/// filter unchanged.
pub async fn scope_filter(
    store: &dyn AuditStore,
    mut filter: EventFilter,
    instance: Option<&serde_json::Value>,
) -> Result<Option<EventFilter>, StoreError> {
    if store.holds_many_sources() {
        return Ok(Some(filter));
    }
    if let Some(source) = filter.source.take() {
        if store.source_id().await?.as_deref() != Some(source.as_str()) {
            return Ok(None);
        }
    }
    for (key, wanted) in [
        ("pod", filter.pod.take()),
        ("namespace", filter.namespace.take()),
    ] {
        if let Some(wanted) = wanted {
            let own = instance.and_then(|i| i[key].as_str());
            if own != Some(wanted.as_str()) {
                return Ok(None);
            }
        }
    }
    Ok(Some(filter))
}

fn no_ship_cursor(kind: &str, target: &str) -> StoreError {
    StoreError::Other(format!(
        "the {kind} store keeps no shipping cursor (target {target})"
    ))
}

pub(crate) fn to_record(event: AuditEvent) -> Result<EventRecord, StoreError> {
    let seq = event.seq;
    EventRecord::try_from(event).map_err(|error| {
        StoreError::Corrupt(format!(
            "event seq {seq}: metadata cannot be written: {error}"
        ))
    })
}

// === impl Rotation ===

impl Rotation {
    pub fn as_str(&self) -> &'static str {
        match self {
            Rotation::Hourly => "hourly",
            Rotation::Daily => "daily",
            Rotation::Weekly => "weekly",
        }
    }
}

impl FromStr for Rotation {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "hourly" => Ok(Rotation::Hourly),
            "daily" => Ok(Rotation::Daily),
            "weekly" => Ok(Rotation::Weekly),
            _ => Err("rotation must be one of hourly, daily, weekly".to_owned()),
        }
    }
}

impl fmt::Display for Rotation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl StoreError ===

impl StoreError {
    pub fn is_retriable(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Full(_))
    }
}

// === impl EventPage ===

impl<E: Sequenced> EventPage<E> {
    /// Builds a page from up to `limit + 1` events read newest first: the
    /// extra one only says that another page exists.
    pub(crate) fn from_overfetched(mut events: Vec<E>, limit: usize) -> Self {
        let next_before_seq = if events.len() > limit {
            events.truncate(limit);
            events.last().map(Sequenced::seq)
        } else {
            None
        };
        Self {
            events,
            next_before_seq,
        }
    }
}

// === impl Sequenced ===

impl Sequenced for AuditEvent {
    fn seq(&self) -> i64 {
        self.seq
    }
}

impl Sequenced for EventRecord {
    /// The record's place in its store's order: its `seq`, or in the
    /// central store (where a `seq` is unique only per source) its row.
    fn seq(&self) -> i64 {
        self.origin.as_ref().map_or(self.seq, |o| o.row_id)
    }
}

// === impl EventFilter ===

impl EventFilter {
    /// Whether a stored record passes the filter. Timestamps are compared
    /// as text (they have one fixed-width form); the metadata is parsed
    /// only for a policy filter.
    pub fn matches_record(&self, record: &EventRecord) -> bool {
        let after_start = self
            .start_time
            .is_none_or(|t| record.timestamp.as_str() >= format_timestamp(&t).as_str());
        let before_end = self
            .end_time
            .is_none_or(|t| record.timestamp.as_str() < format_timestamp(&t).as_str());
        (self.event_types.is_empty() || self.event_types.contains(&record.event_type))
            && after_start
            && before_end
            && self
                .request_id
                .as_deref()
                .is_none_or(|r| record.request_id.as_deref() == Some(r))
            && self.min_level.is_none_or(|l| record.level >= l)
            && self.policy_name.as_deref().is_none_or(|p| {
                serde_json::from_str::<serde_json::Value>(record.metadata.get())
                    .is_ok_and(|m| m["policy_name"].as_str() == Some(p))
            })
    }

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
            && self
                .policy_name
                .as_deref()
                .is_none_or(|p| event.metadata.field("policy_name").as_str() == Some(p))
    }
}

#[cfg(test)]
mod scope_tests {
    use super::*;
    use crate::store::memory::MemoryStore;

    /// A store of one source with a fixed id.
    struct Named(MemoryStore);

    #[async_trait]
    impl AuditStore for Named {
        fn kind(&self) -> &'static str {
            "named"
        }
        async fn source_id(&self) -> Result<Option<String>, StoreError> {
            Ok(Some("src-1".into()))
        }
        async fn append_batch(&self, events: Batch) -> Result<(), StoreError> {
            self.0.append_batch(events).await
        }
        async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
            self.0.head().await
        }
        async fn query(&self, query: &EventQuery) -> Result<EventPage, StoreError> {
            self.0.query(query).await
        }
        async fn get(&self, id: &str) -> Result<Option<AuditEvent>, StoreError> {
            self.0.get(id).await
        }
        fn export(&self, filter: EventFilter) -> EventStream {
            self.0.export(filter)
        }
        async fn stats(&self) -> Result<StoreStats, StoreError> {
            self.0.stats().await
        }
        async fn health(&self) -> Result<(), StoreError> {
            Ok(())
        }
        async fn purge_before(&self, before: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
            self.0.purge_before(before).await
        }
        async fn enforce_max_bytes(&self, max_bytes: u64) -> Result<PurgeReport, StoreError> {
            self.0.enforce_max_bytes(max_bytes).await
        }
    }

    #[tokio::test]
    async fn a_local_store_matches_its_own_origin_only() {
        let store = Named(MemoryStore::new(10));
        let instance = serde_json::json!({"pod": "pod-a", "namespace": "team-x"});
        let with = |source: Option<&str>, pod: Option<&str>, namespace: Option<&str>| EventFilter {
            source: source.map(Into::into),
            pod: pod.map(Into::into),
            namespace: namespace.map(Into::into),
            request_id: Some("r-1".into()),
            ..EventFilter::default()
        };
        for (filter, kept) in [
            (with(Some("src-1"), Some("pod-a"), Some("team-x")), true),
            (with(None, None, None), true),
            (with(Some("src-2"), None, None), false),
            (with(None, Some("pod-b"), None), false),
            (with(None, None, Some("team-y")), false),
        ] {
            let scoped = scope_filter(&store, filter.clone(), Some(&instance))
                .await
                .unwrap();
            match scoped {
                // The origin conditions are met, so dropped; the rest stays.
                Some(f) if kept => assert_eq!(f, with(None, None, None)),
                None if !kept => {}
                other => panic!("{filter:?} gave {other:?}"),
            }
        }
        // Outside Kubernetes a pod filter matches nothing.
        let scoped = scope_filter(&store, with(None, Some("pod-a"), None), None)
            .await
            .unwrap();
        assert_eq!(scoped, None);
    }
}

//! What the web console asks of a store beyond pages of events: a search
//! over prompt and answer text and call facets, and a time range's
//! overview.
//!
//! Both have a default every store gets, which reads events through
//! [`AuditStore::query_records`] and looks into their metadata, reading at
//! most [`SCAN_LIMIT`] records (a page says when it stopped there). A store
//! with its own index answers them directly (SQLite: an FTS5 index and a
//! narrow per-event facets table, kept by triggers in the transaction that
//! writes the events).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::{AuditStore, EventFilter, EventQuery, Sequenced, StoreError};
use crate::event::{parse_timestamp, EventRecord, EventType};

/// Most records a fallback search or overview reads.
pub const SCAN_LIMIT: usize = 20_000;
/// Records read per round by the fallbacks.
const SCAN_BATCH: usize = 500;
/// Recent violations an overview lists.
pub const RECENT_VIOLATIONS: usize = 10;
/// Most bars in the calls-per-minute chart.
pub const MAX_BUCKETS: i64 = 120;

/// A page request over events with conditions inside their content.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SearchQuery {
    pub filter: EventFilter,
    /// Words that must all occur in the prompt or answer text (or, in the
    /// fallback, anywhere in the event), case-insensitively.
    pub text: Option<String>,
    /// `metadata.model`, `metadata.operation`, `metadata.outcome`, exactly.
    pub model: Option<String>,
    pub operation: Option<String>,
    pub outcome: Option<String>,
    pub limit: usize,
    pub before_seq: Option<i64>,
}

/// A page of a search.
#[derive(Debug, Clone, Default)]
pub struct SearchPage {
    pub records: Vec<EventRecord>,
    /// Where the next page starts; `None` on the last.
    pub next_before_seq: Option<i64>,
    /// Whether the page ended because [`SCAN_LIMIT`] records were read
    /// (the next page reads on).
    pub scan_limited: bool,
}

/// The overview's time range and bar width.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverviewQuery {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// A time range at a glance.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overview {
    /// Seconds each entry of `calls_by_bucket` spans.
    pub bucket_secs: i64,
    /// Calls (RESPONSE events) per bucket, oldest first.
    pub calls_by_bucket: Vec<u64>,
    pub calls: u64,
    /// Calls that did not complete, or completed with status 400 or above.
    pub errors: u64,
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    pub tokens_by_model: BTreeMap<String, u64>,
    pub violations_by_policy: BTreeMap<String, u64>,
    pub violations_by_severity: BTreeMap<String, u64>,
    /// Newest first.
    pub recent_violations: Vec<RecentViolation>,
    /// Whether the counts stop at [`SCAN_LIMIT`] events (fallback only).
    pub scan_limited: bool,
}

/// One violation, for the overview's list.
#[derive(Debug, Clone, PartialEq)]
pub struct RecentViolation {
    pub seq: i64,
    pub timestamp: String,
    pub request_id: Option<String>,
    pub policy: String,
    pub severity: String,
}

// === impl SearchQuery ===

impl SearchQuery {
    /// Whether a record passes the conditions the filter does not hold.
    pub fn matches(&self, record: &EventRecord) -> bool {
        if let Some(text) = &self.text {
            let words = || text.split_whitespace();
            let hit = |w: &str| {
                contains_folded(&record.message, w) || contains_folded(record.metadata.get(), w)
            };
            if !words().all(hit) {
                return false;
            }
        }
        if self.model.is_none() && self.operation.is_none() && self.outcome.is_none() {
            return true;
        }
        let Ok(metadata) = serde_json::from_str::<Value>(record.metadata.get()) else {
            return false;
        };
        let field = |name: &str, want: &Option<String>| {
            want.as_deref()
                .is_none_or(|w| metadata[name].as_str() == Some(w))
        };
        field("model", &self.model)
            && field("operation", &self.operation)
            && field("outcome", &self.outcome)
    }

    /// Whether nothing beyond the filter is asked.
    pub fn is_plain(&self) -> bool {
        self.text.is_none()
            && self.model.is_none()
            && self.operation.is_none()
            && self.outcome.is_none()
    }
}

// === impl OverviewQuery ===

impl OverviewQuery {
    /// The bar width: whole minutes, at most [`MAX_BUCKETS`] bars.
    pub fn bucket_secs(&self) -> i64 {
        let span = (self.end - self.start).num_seconds().max(60);
        let per_bar = (span + MAX_BUCKETS - 1) / MAX_BUCKETS;
        ((per_bar + 59) / 60).max(1) * 60
    }

    /// Number of bars.
    pub fn buckets(&self) -> usize {
        let span = (self.end - self.start).num_seconds().max(1);
        usize::try_from((span + self.bucket_secs() - 1) / self.bucket_secs()).unwrap_or(1)
    }

    /// The bar a timestamp falls in, if inside the range.
    pub fn bucket_of(&self, t: DateTime<Utc>) -> Option<usize> {
        if t < self.start || t >= self.end {
            return None;
        }
        usize::try_from((t - self.start).num_seconds() / self.bucket_secs()).ok()
    }
}

/// The default search: pages through the filter's events, newest first,
/// keeping those that match, reading at most [`SCAN_LIMIT`].
pub async fn search_by_scan<S: AuditStore + ?Sized>(
    store: &S,
    query: &SearchQuery,
) -> Result<SearchPage, StoreError> {
    let mut before_seq = query.before_seq;
    if query.is_plain() {
        let page = store
            .query_records(&EventQuery {
                filter: query.filter.clone(),
                limit: query.limit,
                before_seq,
            })
            .await?;
        return Ok(SearchPage {
            records: page.events,
            next_before_seq: page.next_before_seq,
            scan_limited: false,
        });
    }
    let mut records = Vec::new();
    let mut scanned = 0usize;
    loop {
        let page = store
            .query_records(&EventQuery {
                filter: query.filter.clone(),
                limit: SCAN_BATCH,
                before_seq,
            })
            .await?;
        for record in page.events {
            scanned += 1;
            before_seq = Some(Sequenced::seq(&record));
            if query.matches(&record) {
                records.push(record);
                if records.len() == query.limit {
                    return Ok(SearchPage {
                        records,
                        next_before_seq: before_seq,
                        scan_limited: false,
                    });
                }
            }
        }
        match page.next_before_seq {
            None => {
                return Ok(SearchPage {
                    records,
                    next_before_seq: None,
                    scan_limited: false,
                })
            }
            Some(_) if scanned >= SCAN_LIMIT => {
                return Ok(SearchPage {
                    records,
                    next_before_seq: before_seq,
                    scan_limited: true,
                })
            }
            Some(next) => before_seq = Some(next),
        }
    }
}

/// The default overview: reads the range's RESPONSE and
/// COMPLIANCE_VIOLATION events, newest first, at most [`SCAN_LIMIT`] of
/// each.
pub async fn overview_by_scan<S: AuditStore + ?Sized>(
    store: &S,
    query: &OverviewQuery,
) -> Result<Overview, StoreError> {
    let mut overview = Overview {
        bucket_secs: query.bucket_secs(),
        calls_by_bucket: vec![0; query.buckets()],
        ..Overview::default()
    };
    let mut latencies = Vec::new();
    let responses = scan(store, query, EventType::Response, |record, m| {
        let summary = CallFacts::of(m);
        let t = parse_timestamp(&record.timestamp);
        overview.add_call(query, t, &summary);
        if let Some(l) = summary.latency_ms {
            latencies.push(l);
        }
    })
    .await?;
    overview.set_latencies(&mut latencies);
    let violations = scan(store, query, EventType::ComplianceViolation, |record, m| {
        let policy = m["policy_name"].as_str().unwrap_or("").to_owned();
        let severity = m["severity"].as_str().unwrap_or("").to_owned();
        overview.add_violation(record, policy, severity);
    })
    .await?;
    overview.scan_limited = responses || violations;
    Ok(overview)
}

/// The facts of one RESPONSE that an overview counts.
#[derive(Debug, Clone, Default)]
pub struct CallFacts {
    pub model: Option<String>,
    pub error: bool,
    pub latency_ms: Option<f64>,
    pub total_tokens: u64,
}

// === impl CallFacts ===

impl CallFacts {
    pub fn of(metadata: &Value) -> Self {
        let outcome = metadata["outcome"].as_str().unwrap_or("completed");
        let status = metadata["status"].as_u64().unwrap_or(200);
        Self {
            model: metadata["model"].as_str().map(str::to_owned),
            error: outcome != "completed" || status >= 400,
            latency_ms: metadata["latency_ms"].as_f64(),
            total_tokens: metadata["usage"]["total_tokens"].as_u64().unwrap_or(0),
        }
    }
}

// === impl Overview ===

impl Overview {
    /// Counts one call at time `t`.
    pub fn add_call(&mut self, query: &OverviewQuery, t: Option<DateTime<Utc>>, call: &CallFacts) {
        self.calls += 1;
        self.errors += u64::from(call.error);
        if let Some(bucket) = t.and_then(|t| query.bucket_of(t)) {
            if let Some(n) = self.calls_by_bucket.get_mut(bucket) {
                *n += 1;
            }
        }
        if call.total_tokens > 0 {
            let model = call.model.clone().unwrap_or_else(|| "unknown".to_owned());
            *self.tokens_by_model.entry(model).or_default() += call.total_tokens;
        }
    }

    /// Counts one violation; records arrive newest first.
    pub fn add_violation(&mut self, record: &EventRecord, policy: String, severity: String) {
        *self.violations_by_policy.entry(policy.clone()).or_default() += 1;
        *self
            .violations_by_severity
            .entry(severity.clone())
            .or_default() += 1;
        if self.recent_violations.len() < RECENT_VIOLATIONS {
            self.recent_violations.push(RecentViolation {
                seq: record.seq,
                timestamp: record.timestamp.clone(),
                request_id: record.request_id.clone(),
                policy,
                severity,
            });
        }
    }

    /// Sets p50 and p99 from every latency seen (sorted here).
    pub fn set_latencies(&mut self, latencies: &mut [f64]) {
        latencies.sort_by(f64::total_cmp);
        self.latency_p50_ms = percentile(latencies, 0.50);
        self.latency_p99_ms = percentile(latencies, 0.99);
    }

    /// Errors as a share of calls, 0 when there were none.
    pub fn error_rate(&self) -> f64 {
        if self.calls == 0 {
            0.0
        } else {
            self.errors as f64 / self.calls as f64
        }
    }
}

/// The nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Calls `each` on the range's events of one type, newest first, at most
/// [`SCAN_LIMIT`]; returns whether it stopped there.
async fn scan<S: AuditStore + ?Sized>(
    store: &S,
    query: &OverviewQuery,
    event_type: EventType,
    mut each: impl FnMut(&EventRecord, &Value) + Send,
) -> Result<bool, StoreError> {
    let filter = EventFilter {
        event_types: vec![event_type],
        start_time: Some(query.start),
        end_time: Some(query.end),
        ..EventFilter::default()
    };
    let mut before_seq = None;
    let mut scanned = 0usize;
    loop {
        let page = store
            .query_records(&EventQuery {
                filter: filter.clone(),
                limit: SCAN_BATCH,
                before_seq,
            })
            .await?;
        for record in &page.events {
            let metadata = serde_json::from_str(record.metadata.get()).unwrap_or(Value::Null);
            each(record, &metadata);
        }
        scanned += page.events.len();
        match page.next_before_seq {
            None => return Ok(false),
            Some(_) if scanned >= SCAN_LIMIT => return Ok(true),
            next => before_seq = next,
        }
    }
}

/// Case-insensitive substring test (ASCII case folding).
pub fn contains_folded(haystack: &str, needle: &str) -> bool {
    let needle = needle.as_bytes();
    if needle.is_empty() {
        return true;
    }
    haystack
        .as_bytes()
        .windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_whole_minutes_and_at_most_the_cap() {
        let start = parse_timestamp("2026-01-01T00:00:00Z").unwrap();
        for (hours, secs) in [(1, 60), (24, 720), (168, 5040)] {
            let q = OverviewQuery {
                start,
                end: start + chrono::Duration::hours(hours),
            };
            assert_eq!(q.bucket_secs(), secs, "{hours} h");
            assert!(q.buckets() as i64 <= MAX_BUCKETS);
            assert_eq!(q.bucket_of(start), Some(0));
            assert_eq!(q.bucket_of(q.end), None);
        }
    }

    #[test]
    fn percentiles_take_the_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(50.0));
        assert_eq!(percentile(&v, 0.99), Some(99.0));
        assert_eq!(percentile(&[7.0], 0.99), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
    }

    #[test]
    fn text_search_folds_case_and_needs_every_word() {
        assert!(contains_folded("The Quick fox", "quick"));
        assert!(!contains_folded("The Quick fox", "slow"));
    }
}

//! The console's search and overview answered from the FTS5 index and the
//! `event_facets` table (schema migrations 6 and 7), so neither reads event
//! metadata.
//!
//! Both are written by [`Indexer`] from the stored metadata text, read in
//! one pass with no tree, a few hundred events at a time (see
//! `sqlite/deferred.rs`); a trigger removes their rows when retention or
//! the size cap deletes events.
//!
//! A search walks candidate seqs newest first, in batches: from the text
//! index when there is text, else from the facets index of the first
//! facet given. Each batch is then checked against the rest of the
//! filter. A page reads at most [`MAX_CANDIDATES`] candidates; one that
//! stops there says so and its cursor continues the walk.

mod facets;

use rusqlite::types::Value as SqlValue;
use rusqlite::{params_from_iter, CachedStatement, Connection};

use std::collections::BTreeMap;

use super::{read_record, Conditions, COLUMNS};
use crate::event::{format_timestamp, parse_timestamp, EventRecord};
use crate::store::browse::{
    Overview, OverviewQuery, RecentViolation, SearchPage, SearchQuery, RECENT_VIOLATIONS,
};
use crate::store::{StoreError, MAX_QUERY_LIMIT};

/// Candidates read per batch.
const BATCH: i64 = 1000;
/// Most candidates one page reads.
pub const MAX_CANDIDATES: usize = 50_000;

/// Writes the facets, searchable text and rollups of events handed to it
/// one at a time (REQUEST, RESPONSE and COMPLIANCE_VIOLATION; others have
/// none), for [`catch_up`](super::deferred::catch_up).
pub(super) struct Indexer<'t> {
    tx: &'t rusqlite::Transaction<'t>,
    // Each statement is fetched from the cache only when the batch needs
    // it: every fetch allocates its cache key again.
    facets: Option<CachedStatement<'t>>,
    fts: Option<CachedStatement<'t>>,
    /// The searchable text, in a buffer the store's thread keeps between
    /// batches.
    text: String,
    rollups: Rollups,
}

impl<'t> Indexer<'t> {
    pub(super) fn new(tx: &'t rusqlite::Transaction<'t>) -> Self {
        Indexer {
            tx,
            facets: None,
            fts: None,
            text: SEARCH_TEXT.take(),
            rollups: Rollups::default(),
        }
    }

    pub(super) fn add(
        &mut self,
        seq: i64,
        timestamp: &str,
        event_type: &str,
        body: Option<&str>,
        metadata: &str,
    ) -> Result<(), StoreError> {
        self.text.clear();
        // One pass over the metadata text, no tree.
        let m = facets::read(metadata, body, &mut self.text);
        self.rollups.add(timestamp, event_type, &m);
        let tx = self.tx;
        let facets = match &mut self.facets {
            Some(s) => s,
            slot => slot.insert(tx.prepare_cached(
                "INSERT INTO event_facets (seq, timestamp, event_type, model, operation, \
                 outcome, status, latency_ms, total_tokens, policy, severity) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?),
        };
        facets.execute(rusqlite::params![
            seq,
            timestamp,
            event_type,
            m.model.as_str(),
            m.operation.as_str(),
            m.outcome.as_str(),
            m.status.as_i64(),
            m.latency_ms.as_f64(),
            m.total_tokens.as_i64(),
            m.policy_name.as_str(),
            m.severity.as_str(),
        ])?;
        if body.is_some() {
            let fts = match &mut self.fts {
                Some(s) => s,
                slot => slot.insert(
                    tx.prepare_cached("INSERT INTO events_fts (rowid, body) VALUES (?1, ?2)")?,
                ),
            };
            fts.execute(rusqlite::params![seq, self.text])?;
        }
        Ok(())
    }

    pub(super) fn finish(self) -> Result<(), StoreError> {
        let Indexer {
            tx,
            facets,
            fts,
            text,
            rollups,
        } = self;
        drop((facets, fts));
        rollups.write(tx)?;
        // A buffer grown by a very large body is not kept.
        if text.capacity() <= SEARCH_TEXT_KEPT {
            SEARCH_TEXT.set(text);
        }
        Ok(())
    }
}

/// Most bytes of searchable-text buffer kept between batches.
const SEARCH_TEXT_KEPT: usize = 64 * 1024;

thread_local! {
    /// See [`Indexer`].
    static SEARCH_TEXT: std::cell::Cell<String> = const { std::cell::Cell::new(String::new()) };
}

/// The additions of the events indexed together to the per-minute
/// rollups, keyed by minute (`YYYY-MM-DDTHH:MM`). Keys are copied once,
/// when first seen: the events indexed together span a minute or two and
/// a few models.
#[derive(Default)]
struct Rollups {
    minutes: Keyed<MinuteRollup>,
}

/// One minute's additions.
#[derive(Default)]
struct MinuteRollup {
    /// Model to (calls, errors, tokens).
    calls: Keyed<(i64, i64, i64)>,
    latency: BTreeMap<i64, i64>,
    /// Policy to severity to violations.
    violations: Keyed<Keyed<i64>>,
}

/// A few values by name, searched in order: minutes, models and policies
/// indexed together are few.
type Keyed<V> = Vec<(String, V)>;

/// The value of `key` in `list`, added (and the key copied) when new.
fn entry_of<'m, V: Default>(list: &'m mut Keyed<V>, key: &str) -> &'m mut V {
    let at = match list.iter().position(|(k, _)| k == key) {
        Some(at) => at,
        None => {
            list.push((key.to_owned(), V::default()));
            list.len() - 1
        }
    };
    &mut list[at].1
}

impl Rollups {
    fn add(&mut self, timestamp: &str, event_type: &str, m: &facets::Facets<'_>) {
        match event_type {
            "RESPONSE" => {
                let rollup = entry_of(&mut self.minutes, minute_of(timestamp));
                // As `CallFacts::of` counts an error.
                let error = m.outcome.as_str().unwrap_or("completed") != "completed"
                    || m.status.as_u64().unwrap_or(200) >= 400;
                let tokens = m.total_tokens.as_i64().unwrap_or(0);
                let entry = entry_of(&mut rollup.calls, m.model.as_str().unwrap_or(""));
                entry.0 += 1;
                entry.1 += i64::from(error);
                entry.2 += tokens;
                if let Some(ms) = m.latency_ms.as_f64() {
                    *rollup.latency.entry(latency_bucket(ms)).or_default() += 1;
                }
            }
            "COMPLIANCE_VIOLATION" => {
                let rollup = entry_of(&mut self.minutes, minute_of(timestamp));
                let policy = m.policy_name.as_str().unwrap_or("");
                let by_severity = entry_of(&mut rollup.violations, policy);
                *entry_of(by_severity, m.severity.as_str().unwrap_or("")) += 1;
            }
            _ => {}
        }
    }

    fn write(self, tx: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
        // Only the statements this batch needs (most batches have no
        // violation): each one fetched from the cache allocates.
        let rollups = self.minutes.iter().map(|(_, r)| r);
        if rollups.clone().any(|r| !r.calls.is_empty()) {
            let mut calls = tx.prepare_cached(
                "INSERT INTO call_minutes VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (minute, model) \
                 DO UPDATE SET calls = calls + excluded.calls, errors = errors + excluded.errors, \
                 tokens = tokens + excluded.tokens",
            )?;
            for (minute, rollup) in &self.minutes {
                for (model, (n, errors, tokens)) in &rollup.calls {
                    calls.execute(rusqlite::params![minute, model, n, errors, tokens])?;
                }
            }
        }
        if rollups.clone().any(|r| !r.latency.is_empty()) {
            let mut latency = tx.prepare_cached(
                "INSERT INTO latency_minutes VALUES (?1, ?2, ?3) ON CONFLICT (minute, bucket) \
                 DO UPDATE SET calls = calls + excluded.calls",
            )?;
            for (minute, rollup) in &self.minutes {
                for (bucket, n) in &rollup.latency {
                    latency.execute(rusqlite::params![minute, bucket, n])?;
                }
            }
        }
        if rollups.clone().any(|r| !r.violations.is_empty()) {
            let mut violations = tx.prepare_cached(
                "INSERT INTO violation_minutes VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (minute, policy, severity) DO UPDATE SET count = count + excluded.count",
            )?;
            for (minute, rollup) in &self.minutes {
                for (policy, by_severity) in &rollup.violations {
                    for (severity, n) in by_severity {
                        violations.execute(rusqlite::params![minute, policy, severity, n])?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// The minute of a stored timestamp, as rollups key it.
fn minute_of(timestamp: &str) -> &str {
    timestamp.get(..16).unwrap_or(timestamp)
}

/// A latency rounded to two significant digits, as an ordered key:
/// `(exponent + 10) * 100 + mantissa digits` (`812.4` → `1281`, i.e.
/// 8.1e2). The migration computes the same key with `printf('%.1e')`.
pub fn latency_bucket(ms: f64) -> i64 {
    // Formatted on the stack: every RESPONSE appended computes one.
    let mut buf = StackText::default();
    let text = match std::fmt::Write::write_fmt(&mut buf, format_args!("{:.1e}", ms.max(0.0))) {
        Ok(()) => buf.as_str(),
        Err(_) => "",
    };
    let (mantissa, exponent) = text.split_once('e').unwrap_or(("0.0", "0"));
    let mut digits: i64 = 0;
    for b in mantissa.bytes().filter(|&b| b != b'.') {
        if !b.is_ascii_digit() {
            digits = 0;
            break;
        }
        digits = digits * 10 + i64::from(b - b'0');
    }
    let exponent: i64 = exponent.parse().unwrap_or(0);
    (exponent + 10) * 100 + digits
}

/// A short text written without allocating (a float in `{:.1e}` form).
#[derive(Default)]
struct StackText {
    bytes: [u8; 32],
    len: usize,
}

impl StackText {
    fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("")
    }
}

impl std::fmt::Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let end = self.len + s.len();
        let slot = self.bytes.get_mut(self.len..end).ok_or(std::fmt::Error)?;
        slot.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

/// The latency a bucket key stands for.
pub fn bucket_latency(bucket: i64) -> f64 {
    let exponent = bucket / 100 - 10;
    (bucket % 100) as f64 * 10f64.powi(i32::try_from(exponent - 1).unwrap_or(0))
}

/// One page of `query`, newest first.
pub fn search(conn: &Connection, query: &SearchQuery) -> Result<SearchPage, StoreError> {
    let limit = query.limit.clamp(1, MAX_QUERY_LIMIT);
    let facets = facet_conditions(query);
    let text = query
        .text
        .as_deref()
        .map(fts_query)
        .filter(|q| !q.is_empty());
    let (candidate_sql, candidate_param) = match (&text, facets.first()) {
        (Some(q), _) => (
            "SELECT rowid FROM events_fts WHERE events_fts MATCH ?1 AND rowid < ?2 \
             ORDER BY rowid DESC LIMIT ?3"
                .to_owned(),
            SqlValue::Text(q.clone()),
        ),
        (None, Some((column, value))) => {
            (facet_candidates_sql(column), SqlValue::Text(value.clone()))
        }
        (None, None) => {
            return Err(StoreError::Other(
                "a search needs text or a facet; plain pages are queries".into(),
            ))
        }
    };
    let mut conditions = Conditions::from_filter(&query.filter);
    for (column, value) in &facets {
        conditions.fragments.push(format!(
            "EXISTS (SELECT 1 FROM event_facets f WHERE f.seq = events.seq AND f.{column} = ?)"
        ));
        conditions.params.push(SqlValue::Text(value.clone()));
    }
    conditions
        .fragments
        .push("seq IN (SELECT value FROM json_each(?))".to_owned());
    let events_sql = format!(
        "SELECT {COLUMNS} FROM events{} ORDER BY seq DESC LIMIT ?",
        conditions.where_sql()
    );
    let mut candidates_stmt = conn.prepare_cached(&candidate_sql)?;
    let mut events_stmt = conn.prepare_cached(&events_sql)?;
    let mut before = query.before_seq.unwrap_or(i64::MAX);
    let mut records: Vec<EventRecord> = Vec::new();
    let mut read = 0usize;
    loop {
        let batch: Vec<i64> = candidates_stmt
            .query_map(
                rusqlite::params![candidate_param.clone(), before, BATCH],
                |r| r.get(0),
            )?
            .collect::<Result<_, _>>()?;
        read += batch.len();
        let Some(&lowest) = batch.last() else {
            return Ok(SearchPage {
                records,
                next_before_seq: None,
                scan_limited: false,
            });
        };
        let mut params = conditions.params.clone();
        params.push(SqlValue::Text(
            serde_json::to_string(&batch).map_err(|e| StoreError::Other(e.to_string()))?,
        ));
        params.push(SqlValue::Integer((limit - records.len() + 1) as i64));
        let mut rows = events_stmt.query(params_from_iter(params.iter()))?;
        while let Some(row) = rows.next()? {
            if records.len() == limit {
                let next = records.last().map(|r| r.seq);
                return Ok(SearchPage {
                    records,
                    next_before_seq: next,
                    scan_limited: false,
                });
            }
            records.push(read_record(row)?);
        }
        if (batch.len() as i64) < BATCH {
            return Ok(SearchPage {
                records,
                next_before_seq: None,
                scan_limited: false,
            });
        }
        before = lowest;
        if read >= MAX_CANDIDATES {
            return Ok(SearchPage {
                records,
                next_before_seq: Some(before),
                scan_limited: true,
            });
        }
    }
}

/// Candidate seqs of a search by one facet, newest first, from that
/// facet's index (which holds only the rows that have the facet).
fn facet_candidates_sql(column: &str) -> String {
    format!(
        "SELECT seq FROM event_facets WHERE {column} = ?1 AND seq < ?2 \
         ORDER BY seq DESC LIMIT ?3"
    )
}

/// The newest violations of a range, walked in `events_by_type_time`,
/// each with its policy and severity from its facets row. An overview
/// reads the index only once it covers every stored event, and the
/// by-type tables trail the events with it.
const RECENT_VIOLATIONS_SQL: &str =
    "SELECT e.seq, e.timestamp, e.request_id, coalesce(f.policy, ''), coalesce(f.severity, '') \
     FROM events_by_type_time k CROSS JOIN events e ON e.seq = k.seq \
     JOIN event_facets f ON f.seq = k.seq \
     WHERE k.event_type = 'COMPLIANCE_VIOLATION' AND k.timestamp >= ?1 AND k.timestamp < ?2 \
     ORDER BY k.timestamp DESC LIMIT ?3";

/// As [`RECENT_VIOLATIONS_SQL`], for a file older than the by-type tables
/// (opened read-only), walked in its index `events_type_ts`.
const RECENT_VIOLATIONS_BEFORE_TYPE_KEYS_SQL: &str =
    "SELECT e.seq, e.timestamp, e.request_id, coalesce(f.policy, ''), coalesce(f.severity, '') \
     FROM events e JOIN event_facets f ON f.seq = e.seq \
     WHERE e.event_type = 'COMPLIANCE_VIOLATION' AND e.timestamp >= ?1 AND e.timestamp < ?2 \
     ORDER BY e.timestamp DESC LIMIT ?3";

/// The range's calls and violations, from the per-minute rollups (whole
/// minutes: the console asks for ranges that start on one) and, for the
/// latest violations, the facets.
pub fn overview(conn: &Connection, query: &OverviewQuery) -> Result<Overview, StoreError> {
    let mut overview = Overview {
        bucket_secs: query.bucket_secs(),
        calls_by_bucket: vec![0; query.buckets()],
        ..Overview::default()
    };
    let start = format_timestamp(&query.start);
    let end = format_timestamp(&query.end);
    let first_minute = minute_of(&start).to_owned();
    // The minute of the last instant before `end`.
    let last_minute = format_timestamp(&(query.end - chrono::Duration::microseconds(1)));
    let last_minute = minute_of(&last_minute).to_owned();
    let bounds = [&first_minute, &last_minute];
    let bar =
        |minute: &str| parse_timestamp(&format!("{minute}:00Z")).and_then(|t| query.bucket_of(t));
    {
        let mut stmt = conn.prepare_cached(
            "SELECT minute, model, calls, errors, tokens FROM call_minutes \
             WHERE minute >= ?1 AND minute <= ?2 AND calls > 0",
        )?;
        let mut rows = stmt.query(bounds)?;
        while let Some(row) = rows.next()? {
            let minute: String = row.get(0)?;
            let model: String = row.get(1)?;
            let (calls, errors, tokens): (i64, i64, i64) = (row.get(2)?, row.get(3)?, row.get(4)?);
            let calls = calls.max(0) as u64;
            overview.calls += calls;
            overview.errors += errors.max(0) as u64;
            if let Some(n) = bar(&minute).and_then(|b| overview.calls_by_bucket.get_mut(b)) {
                *n += calls;
            }
            if tokens > 0 {
                let model = if model.is_empty() {
                    "unknown".to_owned()
                } else {
                    model
                };
                *overview.tokens_by_model.entry(model).or_default() += tokens as u64;
            }
        }
    }
    {
        let mut stmt = conn.prepare_cached(
            "SELECT bucket, SUM(calls) FROM latency_minutes \
             WHERE minute >= ?1 AND minute <= ?2 GROUP BY bucket ORDER BY bucket",
        )?;
        let histogram: Vec<(i64, i64)> = stmt
            .query_map(bounds, |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        overview.latency_p50_ms = histogram_percentile(&histogram, 0.50);
        overview.latency_p99_ms = histogram_percentile(&histogram, 0.99);
    }
    {
        let mut stmt = conn.prepare_cached(
            "SELECT policy, severity, SUM(count) FROM violation_minutes \
             WHERE minute >= ?1 AND minute <= ?2 GROUP BY 1, 2",
        )?;
        let mut rows = stmt.query(bounds)?;
        while let Some(row) = rows.next()? {
            let (policy, severity): (String, String) = (row.get(0)?, row.get(1)?);
            let n = row.get::<_, i64>(2)?.max(0) as u64;
            if n > 0 {
                *overview.violations_by_policy.entry(policy).or_default() += n;
                *overview.violations_by_severity.entry(severity).or_default() += n;
            }
        }
    }
    let recent_sql = if super::schema::user_version(conn)? >= super::schema::TYPE_KEYS_SINCE {
        RECENT_VIOLATIONS_SQL
    } else {
        RECENT_VIOLATIONS_BEFORE_TYPE_KEYS_SQL
    };
    let mut stmt = conn.prepare_cached(recent_sql)?;
    let recent = stmt.query_map(
        rusqlite::params![start, end, RECENT_VIOLATIONS as i64],
        |r| {
            Ok(RecentViolation {
                seq: r.get(0)?,
                timestamp: r.get(1)?,
                request_id: r.get(2)?,
                policy: r.get(3)?,
                severity: r.get(4)?,
            })
        },
    )?;
    overview.recent_violations = recent.collect::<Result<_, _>>()?;
    Ok(overview)
}

/// The nearest-rank percentile of a latency histogram (bucket, count),
/// ordered by bucket.
fn histogram_percentile(histogram: &[(i64, i64)], p: f64) -> Option<f64> {
    let total: i64 = histogram.iter().map(|(_, n)| (*n).max(0)).sum();
    if total == 0 {
        return None;
    }
    let rank = ((p * total as f64).ceil() as i64).clamp(1, total);
    let mut seen = 0;
    for (bucket, n) in histogram {
        seen += (*n).max(0);
        if seen >= rank {
            return Some(bucket_latency(*bucket));
        }
    }
    None
}

/// The facets a search names, as (column, value), most selective first
/// (a model or operation narrows more than an outcome).
fn facet_conditions(query: &SearchQuery) -> Vec<(&'static str, String)> {
    [
        ("model", &query.model),
        ("operation", &query.operation),
        ("outcome", &query.outcome),
    ]
    .into_iter()
    .filter_map(|(column, value)| value.clone().map(|v| (column, v)))
    .collect()
}

/// Search text as an FTS5 query: each word a quoted string (quotes
/// doubled), all required. Nothing the reader types is FTS5 syntax.
pub fn fts_query(text: &str) -> String {
    text.split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use chrono::{Duration, DurationRound, Utc};
    use serde_json::json;

    use super::*;
    use crate::event::chain::GENESIS_HASH;
    use crate::event::{AuditEvent, EventType, NewEvent};
    use crate::store::browse::{overview_by_scan, search_by_scan};
    use crate::store::sqlite::{schema, SqliteOptions, SqliteStore, DB_FILE};
    use crate::store::{AuditStore, EventFilter};

    mod lag;

    /// `n` calls a minute apart ending now: REQUEST, RESPONSE and, for
    /// every third, a violation. Call `i` asks about `animal i`.
    fn calls(n: i64) -> Vec<AuditEvent> {
        let start = Utc::now() - Duration::minutes(n);
        let mut out: Vec<AuditEvent> = Vec::new();
        let mut prev = GENESIS_HASH.to_owned();
        let mut push = |mut e: NewEvent, at| {
            e.timestamp = at;
            let sealed = e.seal(out.len() as i64 + 1, &prev);
            prev.clone_from(&sealed.hash);
            out.push(sealed);
        };
        for i in 0..n {
            let at = start + Duration::minutes(i);
            let id = format!("call-{i}");
            let model = if i % 2 == 0 { "gpt-a" } else { "gpt-b" };
            push(
                NewEvent::new(EventType::Request, "POST /v1/chat/completions")
                    .with_request_id(&id)
                    .with_metadata(json!({"model": model, "operation": "chat.create",
                        "request_data": {"model": model, "messages": [
                            {"role": "user", "content": format!("Tell me about animal{i}, please.\nThanks")}]}})),
                at,
            );
            push(
                NewEvent::new(EventType::Response, "200")
                    .with_request_id(&id)
                    .with_metadata(json!({"model": model, "operation": "chat.create",
                        "outcome": if i == 1 { "timeout" } else { "completed" },
                        "status": 200, "latency_ms": 10 * (i + 1), "usage": {"total_tokens": 5},
                        "response_data": {"choices": [{"message": {"role": "assistant",
                            "content": format!("Answer{i} follows")}}]}})),
                at + Duration::seconds(1),
            );
            if i % 3 == 0 {
                push(
                    NewEvent::new(EventType::ComplianceViolation, "violation")
                        .with_request_id(&id)
                        .with_metadata(json!({"policy_name": "pii", "severity": "HIGH"})),
                    at + Duration::seconds(2),
                );
            }
        }
        out
    }

    #[test]
    fn latency_buckets_round_as_printf_does() {
        // The text-based rounding this replaced.
        let by_text = |ms: f64| -> i64 {
            let text = format!("{:.1e}", ms.max(0.0));
            let (mantissa, exponent) = text.split_once('e').unwrap_or(("0.0", "0"));
            let digits: i64 = mantissa.replace('.', "").parse().unwrap_or(0);
            let exponent: i64 = exponent.parse().unwrap_or(0);
            (exponent + 10) * 100 + digits
        };
        let mut samples = vec![
            0.0,
            -3.0,
            f64::NAN,
            f64::INFINITY,
            f64::MAX,
            f64::MIN_POSITIVE,
            1e-300,
            0.05,
            0.95,
            9.95,
            99.5,
            812.4,
            1e6,
        ];
        samples.extend((0..2000).map(|i| f64::from(i) * 0.37));
        for ms in samples {
            assert_eq!(latency_bucket(ms), by_text(ms), "{ms}");
        }
        assert_eq!(latency_bucket(812.4), 1281);
    }

    /// The hour before now, from a whole minute, to a minute from now.
    fn last_hour() -> OverviewQuery {
        OverviewQuery {
            start: (Utc::now() - Duration::hours(1))
                .duration_trunc(Duration::minutes(1))
                .unwrap(),
            end: Utc::now() + Duration::minutes(1),
        }
    }

    fn text(words: &str) -> SearchQuery {
        SearchQuery {
            text: Some(words.to_owned()),
            limit: 50,
            ..SearchQuery::default()
        }
    }

    fn request_ids(page: &SearchPage) -> Vec<String> {
        page.records
            .iter()
            .map(|r| {
                format!(
                    "{}:{}",
                    r.event_type,
                    r.request_id.clone().unwrap_or_default()
                )
            })
            .collect()
    }

    #[tokio::test]
    async fn text_search_finds_prompt_and_answer_words_and_follows_purges() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let events = calls(6);
        store.append_batch(events.clone().into()).await.unwrap();

        let page = store.search(&text("animal2")).await.unwrap();
        assert_eq!(request_ids(&page), ["REQUEST:call-2"]);
        // Words after an escaped newline are words too; case folds.
        let page = store.search(&text("THANKS")).await.unwrap();
        assert_eq!(page.records.len(), 6);
        let page = store.search(&text("answer4 follows")).await.unwrap();
        assert_eq!(request_ids(&page), ["RESPONSE:call-4"]);
        // FTS5 syntax typed by a reader is only words.
        for hostile in ["\"animal2", "animal2 OR animal3", "NEAR(", "*", "col:x"] {
            let page = store.search(&text(hostile)).await.unwrap();
            assert!(page.records.len() <= 1, "{hostile}");
        }

        // Retention removes the index rows with the events.
        store.purge_before(events[5].timestamp).await.unwrap();
        assert!(store
            .search(&text("animal0"))
            .await
            .unwrap()
            .records
            .is_empty());
        assert!(store
            .search(&text("animal1"))
            .await
            .unwrap()
            .records
            .is_empty());
        assert_eq!(
            store.search(&text("animal2")).await.unwrap().records.len(),
            1
        );
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        let (facets, stored): (i64, i64) = conn
            .query_row(
                "SELECT (SELECT COUNT(*) FROM event_facets), \
                 (SELECT COUNT(*) FROM events WHERE event_type IN \
                 ('REQUEST', 'RESPONSE', 'COMPLIANCE_VIOLATION'))",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(facets, stored);
    }

    #[tokio::test]
    async fn facets_and_pages_agree_with_the_scan_every_store_has() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.append_batch(calls(30).into()).await.unwrap();
        let queries = [
            SearchQuery {
                model: Some("gpt-a".into()),
                limit: 7,
                ..SearchQuery::default()
            },
            SearchQuery {
                outcome: Some("timeout".into()),
                limit: 7,
                ..SearchQuery::default()
            },
            SearchQuery {
                model: Some("gpt-b".into()),
                operation: Some("chat.create".into()),
                filter: EventFilter {
                    event_types: vec![EventType::Response],
                    ..EventFilter::default()
                },
                limit: 4,
                ..SearchQuery::default()
            },
        ];
        for query in queries {
            let mut indexed = Vec::new();
            let mut scanned = Vec::new();
            let (mut a, mut b) = (query.clone(), query.clone());
            loop {
                let page = store.search(&a).await.unwrap();
                indexed.extend(page.records.iter().map(|r| r.seq));
                match page.next_before_seq {
                    Some(next) => a.before_seq = Some(next),
                    None => break,
                }
            }
            loop {
                let page = search_by_scan(&store, &b).await.unwrap();
                scanned.extend(page.records.iter().map(|r| r.seq));
                match page.next_before_seq {
                    Some(next) => b.before_seq = Some(next),
                    None => break,
                }
            }
            assert!(!indexed.is_empty(), "{query:?}");
            assert_eq!(indexed, scanned, "{query:?}");
        }

        let range = last_hour();
        let rolled = store.overview(&range).await.unwrap();
        let scanned = overview_by_scan(&store, &range).await.unwrap();
        assert_eq!(rolled, scanned);
        assert_eq!(rolled.calls, 30);
        assert_eq!(rolled.errors, 1);
        assert_eq!(rolled.violations_by_policy["pii"], 10);
        assert_eq!(rolled.tokens_by_model["gpt-a"], 75);
        assert_eq!(rolled.latency_p50_ms, Some(150.0));
        assert_eq!(
            rolled.recent_violations[0].request_id.as_deref(),
            Some("call-27")
        );

        // Retention takes purged calls out of the rollups too.
        let oldest_kept = store
            .search(&SearchQuery {
                text: Some("animal12".into()),
                limit: 1,
                ..SearchQuery::default()
            })
            .await
            .unwrap()
            .records[0]
            .timestamp
            .clone();
        store
            .purge_before(parse_timestamp(&oldest_kept).unwrap())
            .await
            .unwrap();
        let rolled = store.overview(&range).await.unwrap();
        let scanned = overview_by_scan(&store, &range).await.unwrap();
        assert_eq!(rolled, scanned);
        assert_eq!(rolled.calls, 18);
        assert_eq!(rolled.violations_by_policy["pii"], 6);
    }

    #[tokio::test]
    async fn the_migration_back_fills_an_older_store() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            store.append_batch(calls(4).into()).await.unwrap();
        }
        // The file as the build before the console left it.
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "DROP TRIGGER events_browse_delete; \
             DROP TABLE events_fts; DROP TABLE event_facets; PRAGMA user_version = 5;",
        )
        .unwrap();
        drop(conn);
        let store = Arc::new(SqliteStore::open(dir.path()).await.unwrap());
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        assert_eq!(schema::user_version(&conn).unwrap(), schema::SCHEMA_VERSION);
        let page = store.search(&text("animal3")).await.unwrap();
        assert_eq!(request_ids(&page), ["REQUEST:call-3"]);
        let page = store
            .search(&SearchQuery {
                model: Some("gpt-b".into()),
                limit: 50,
                ..SearchQuery::default()
            })
            .await
            .unwrap();
        assert_eq!(page.records.len(), 4);
        // The rollups are back-filled with the same buckets the append uses.
        let range = last_hour();
        let rolled = store.overview(&range).await.unwrap();
        assert_eq!(
            rolled,
            overview_by_scan(store.as_ref(), &range).await.unwrap()
        );
        assert_eq!(rolled.calls, 4);
    }

    fn without_index() -> SqliteOptions {
        SqliteOptions {
            search_index: false,
            ..SqliteOptions::default()
        }
    }

    /// The names a `SELECT name …` over the schema returns, in its order.
    fn schema_names(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
        conn.prepare(sql)
            .unwrap()
            .query_map([], |r| r.get(0))
            .unwrap()
            .map(Result::unwrap)
            .collect()
    }

    fn facet_indexes(conn: &rusqlite::Connection) -> Vec<String> {
        schema_names(
            conn,
            "SELECT name FROM sqlite_schema WHERE type = 'index' \
             AND tbl_name = 'event_facets' ORDER BY name",
        )
    }

    fn browse_tables(dir: &std::path::Path) -> Vec<String> {
        let conn = rusqlite::Connection::open(dir.join(DB_FILE)).unwrap();
        schema_names(
            &conn,
            "SELECT name FROM sqlite_schema WHERE name IN ('events_fts', 'event_facets', \
             'call_minutes', 'latency_minutes', 'violation_minutes', 'events_browse_delete') \
             ORDER BY name",
        )
    }

    /// Every kind of console read, answered by `store`, beside the answers
    /// of the scan every store has.
    async fn console_reads(store: &SqliteStore) -> Vec<(Vec<String>, Vec<String>)> {
        let queries = [
            text("animal2"),
            text("THANKS"),
            text("answer4 follows"),
            text("animal2 OR animal3"),
            SearchQuery {
                model: Some("gpt-b".into()),
                limit: 50,
                ..SearchQuery::default()
            },
            SearchQuery {
                outcome: Some("completed".into()),
                text: Some("animal1".into()),
                limit: 50,
                ..SearchQuery::default()
            },
        ];
        let mut out = Vec::new();
        for q in &queries {
            let page = store.search(q).await.unwrap();
            let scanned = search_by_scan(store, q).await.unwrap();
            out.push((request_ids(&page), request_ids(&scanned)));
        }
        out
    }

    #[tokio::test]
    async fn without_the_search_index_no_index_rows_are_kept_and_reads_scan() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open_with(dir.path(), without_index())
            .await
            .unwrap();
        let events = calls(9);
        store.append_batch(events.clone().into()).await.unwrap();
        assert!(browse_tables(dir.path()).is_empty());
        assert!(!store.has_text_index());

        // Search and overview read the events: the same answers as the scan.
        let page = store.search(&text("animal2")).await.unwrap();
        assert_eq!(request_ids(&page), ["REQUEST:call-2"]);
        for (indexed, scanned) in console_reads(&store).await {
            assert_eq!(indexed, scanned);
        }
        let range = last_hour();
        let overview = store.overview(&range).await.unwrap();
        assert_eq!(overview, overview_by_scan(&store, &range).await.unwrap());
        assert_eq!(overview.calls, 9);
        assert_eq!(overview.violations_by_policy.values().sum::<u64>(), 3);

        // Retention still deletes events (no trigger is left to fail).
        store.purge_before(events[5].timestamp).await.unwrap();
        assert!(store
            .search(&text("animal0"))
            .await
            .unwrap()
            .records
            .is_empty());

        // A read-only open (an offline command) sees the same store.
        drop(store);
        let read_only = SqliteStore::open_read_only(dir.path()).await.unwrap();
        assert!(!read_only.has_text_index());
        let page = read_only.search(&text("animal7")).await.unwrap();
        assert_eq!(request_ids(&page), ["REQUEST:call-7"]);
    }

    #[tokio::test]
    async fn the_search_index_is_dropped_when_turned_off_and_rebuilt_whole_when_back_on() {
        let dir = tempfile::tempdir().unwrap();
        let all = calls(12);
        let always_on = tempfile::tempdir().unwrap();
        let reference = SqliteStore::open(always_on.path()).await.unwrap();
        reference.append_batch(all.clone().into()).await.unwrap();

        // On, then off (events written meanwhile are in no index), then on.
        let (first, rest) = all.split_at(10);
        let (second, third) = rest.split_at(1);
        {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            store.append_batch(first.to_vec().into()).await.unwrap();
        }
        {
            let store = SqliteStore::open_with(dir.path(), without_index())
                .await
                .unwrap();
            assert!(browse_tables(dir.path()).is_empty());
            store.append_batch(second.to_vec().into()).await.unwrap();
        }
        let store = SqliteStore::open(dir.path()).await.unwrap();
        assert_eq!(browse_tables(dir.path()).len(), 6);
        assert!(store.has_text_index());
        store.append_batch(third.to_vec().into()).await.unwrap();

        // The rebuilt index answers as one that was never off, for events
        // written before, while and after it was off.
        assert_eq!(console_reads(&store).await, console_reads(&reference).await);
        // Event 10 is call 4's REQUEST, the one written while it was off.
        assert_eq!(second[0].request_id.as_deref(), Some("call-4"));
        let call_4 = store.search(&text("animal4")).await.unwrap();
        assert_eq!(request_ids(&call_4), ["REQUEST:call-4"]);
        let range = last_hour();
        assert_eq!(
            store.overview(&range).await.unwrap(),
            reference.overview(&range).await.unwrap()
        );
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        assert_eq!(
            fts_merge_settings(&conn),
            [("automerge".to_owned(), 16), ("crisismerge".to_owned(), 64)]
        );
        assert_eq!(
            facet_indexes(&conn),
            [
                "event_facets_model",
                "event_facets_operation",
                "event_facets_outcome"
            ]
        );
    }

    /// The plans behind migration 7: a facet search reads its facet's
    /// partial index, and the latest violations walk `events_by_type_time`
    /// (before migration 11 the index `events_type_ts`), so no other index
    /// of `event_facets` is needed.
    #[tokio::test]
    async fn facet_searches_and_latest_violations_use_the_kept_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        store.append_batch(calls(30).into()).await.unwrap();
        store.close().await.unwrap();
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        let plan = |sql: &str, params: &[SqlValue]| {
            crate::store::sqlite::tests::query_plan(&conn, sql, params)
        };
        for column in ["model", "operation", "outcome"] {
            let params = [
                SqlValue::Text("x".into()),
                SqlValue::Integer(i64::MAX),
                SqlValue::Integer(10),
            ];
            let plan = plan(&facet_candidates_sql(column), &params);
            let index = format!("event_facets_{column} ({column}=? AND seq<?)");
            assert!(plan.contains(&index), "{column}: {plan}");
        }
        let params = [
            SqlValue::Text("2026-01-01T00:00:00Z".into()),
            SqlValue::Text("2027-01-01T00:00:00Z".into()),
            SqlValue::Integer(10),
        ];
        let plan = plan(RECENT_VIOLATIONS_SQL, &params);
        assert!(
            plan.contains("SEARCH k USING PRIMARY KEY (event_type=? AND timestamp>?"),
            "{plan}"
        );
        assert!(!plan.contains("SCAN"), "{plan}");
        // Only rows with the facet are in its index.
        let entries = |index: &str| -> i64 {
            conn.query_row(
                &format!(
                    "SELECT COUNT(*) FROM event_facets INDEXED BY {index} WHERE {} IS NOT NULL",
                    &index[13..]
                ),
                [],
                |r| r.get(0),
            )
            .unwrap()
        };
        assert_eq!(entries("event_facets_outcome"), 30);
        assert_eq!(entries("event_facets_model"), 60);
        assert_eq!(
            facet_indexes(&conn),
            [
                "event_facets_model",
                "event_facets_operation",
                "event_facets_outcome"
            ]
        );
    }

    #[tokio::test]
    async fn migration_7_rebuilds_the_facet_indexes_of_an_existing_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut events = calls(12);
        let split = events
            .iter()
            .position(|e| e.request_id.as_deref() == Some("call-9"))
            .unwrap();
        let later = events.split_off(split);
        {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            store.append_batch(events.into()).await.unwrap();
            // Builds of version 6 indexed every batch as they stored it.
            store.close().await.unwrap();
        }
        // The file as schema version 6 left it.
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "DROP INDEX event_facets_model; DROP INDEX event_facets_operation; \
             DROP INDEX event_facets_outcome; \
             CREATE INDEX event_facets_type_ts ON event_facets (event_type, timestamp); \
             CREATE INDEX event_facets_model ON event_facets (model, seq); \
             CREATE INDEX event_facets_operation ON event_facets (operation, seq); \
             CREATE INDEX event_facets_outcome ON event_facets (outcome, seq); \
             PRAGMA user_version = 6;",
        )
        .unwrap();
        drop(conn);
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        assert_eq!(schema::user_version(&conn).unwrap(), schema::SCHEMA_VERSION);
        let partial: i64 = conn
            .query_row(
                "SELECT COUNT(*) FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name = 'event_facets' AND sql LIKE '%IS NOT NULL'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(partial, 3);
        assert!(!crate::store::sqlite::tests::has_schema_object(
            &conn,
            "event_facets_type_ts"
        ));
        // Searches and the overview answer as before, and new rows are
        // indexed too.
        store.append_batch(later.into()).await.unwrap();
        let query = SearchQuery {
            model: Some("gpt-b".into()),
            limit: 50,
            ..SearchQuery::default()
        };
        let indexed = store.search(&query).await.unwrap();
        let scanned = search_by_scan(&store, &query).await.unwrap();
        let seqs = |p: &SearchPage| p.records.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(&indexed), seqs(&scanned));
        assert!(!indexed.records.is_empty());
        let range = last_hour();
        let rolled = store.overview(&range).await.unwrap();
        assert_eq!(rolled, overview_by_scan(&store, &range).await.unwrap());
        assert_eq!(rolled.calls, 12);
        assert!(!rolled.recent_violations.is_empty());
    }

    /// The text index's merge settings (migration 8), as FTS5 keeps them.
    fn fts_merge_settings(conn: &rusqlite::Connection) -> Vec<(String, i64)> {
        conn.prepare(
            "SELECT k, v FROM events_fts_config WHERE k IN ('automerge', 'crisismerge') ORDER BY k",
        )
        .unwrap()
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .unwrap()
        .map(Result::unwrap)
        .collect()
    }

    /// Every seq a search returns, page after page.
    async fn all_seqs(store: &SqliteStore, mut query: SearchQuery, indexed: bool) -> Vec<i64> {
        let mut seqs = Vec::new();
        loop {
            let page = if indexed {
                store.search(&query).await.unwrap()
            } else {
                search_by_scan(store, &query).await.unwrap()
            };
            seqs.extend(page.records.iter().map(|r| r.seq));
            match page.next_before_seq {
                Some(next) => query.before_seq = Some(next),
                None => return seqs,
            }
        }
    }

    /// One commit per call, as a proxy at low load writes: each commit is
    /// a segment of the text index, and the segments are merged many
    /// times over. Every search still finds what the scan finds, and an
    /// event is found as soon as its commit returns.
    #[tokio::test]
    async fn text_search_agrees_with_the_scan_across_many_small_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let events = calls(120);
        let mut start = 0;
        while start < events.len() {
            let end = (start + 1 + start % 4).min(events.len());
            store
                .append_batch(events[start..end].to_vec().into())
                .await
                .unwrap();
            let newest = &events[end - 1];
            if newest.event_type == EventType::Request {
                let call = newest.request_id.as_deref().unwrap_or_default();
                let word = format!("animal{},", call.trim_start_matches("call-"));
                let page = store.search(&text(&word)).await.unwrap();
                assert_eq!(
                    page.records.first().map(|r| r.seq),
                    Some(newest.seq),
                    "{word}"
                );
            }
            start = end;
        }
        for words in [
            "thanks",
            "animal7,",
            "animal119,",
            "answer42 follows",
            "please thanks",
            "tell",
        ] {
            let query = SearchQuery {
                limit: 25,
                ..text(words)
            };
            let indexed = all_seqs(&store, query.clone(), true).await;
            let scanned = all_seqs(&store, query, false).await;
            assert!(!indexed.is_empty(), "{words}");
            assert_eq!(indexed, scanned, "{words}");
        }
        assert_eq!(all_seqs(&store, text("thanks"), true).await.len(), 120);
    }

    #[tokio::test]
    async fn new_stores_merge_the_text_index_sixteen_segments_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let _store = SqliteStore::open(dir.path()).await.unwrap();
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        assert_eq!(
            fts_merge_settings(&conn),
            [("automerge".to_owned(), 16), ("crisismerge".to_owned(), 64)]
        );
    }

    #[tokio::test]
    async fn migration_8_sets_the_merge_settings_of_an_existing_store() {
        let dir = tempfile::tempdir().unwrap();
        let mut events = calls(40);
        let later = events.split_off(60);
        {
            let store = SqliteStore::open(dir.path()).await.unwrap();
            for chunk in events.chunks(7) {
                store.append_batch(chunk.to_vec().into()).await.unwrap();
            }
            store.close().await.unwrap();
        }
        // The file as schema version 7 left it: FTS5's defaults.
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        conn.execute_batch(
            "DELETE FROM events_fts_config WHERE k IN ('automerge', 'crisismerge'); \
             PRAGMA user_version = 7;",
        )
        .unwrap();
        assert!(fts_merge_settings(&conn).is_empty());
        drop(conn);
        let store = SqliteStore::open(dir.path()).await.unwrap();
        let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
        assert_eq!(schema::user_version(&conn).unwrap(), schema::SCHEMA_VERSION);
        assert_eq!(
            fts_merge_settings(&conn),
            [("automerge".to_owned(), 16), ("crisismerge".to_owned(), 64)]
        );
        // What was indexed before is found, and so is what comes after.
        for chunk in later.chunks(5) {
            store.append_batch(chunk.to_vec().into()).await.unwrap();
        }
        for words in ["animal3,", "animal35,", "thanks", "answer20 follows"] {
            let indexed = all_seqs(&store, text(words), true).await;
            let scanned = all_seqs(&store, text(words), false).await;
            assert!(!indexed.is_empty(), "{words}");
            assert_eq!(indexed, scanned, "{words}");
        }
        // Retention still takes purged events out of the index.
        let cut = later[0].timestamp;
        store.purge_before(cut).await.unwrap();
        assert!(all_seqs(&store, text("animal3,"), true).await.is_empty());
        assert_eq!(all_seqs(&store, text("animal35,"), true).await.len(), 1);
    }

    #[test]
    fn latency_buckets_keep_two_digits_and_their_order() {
        for (ms, key, back) in [
            (812.4, 1281, 810.0),
            (0.125, 912, 0.12),
            (150.0, 1215, 150.0),
            (10.0, 1110, 10.0),
            (0.427, 943, 0.43),
            (0.0, 1000, 0.0),
        ] {
            assert_eq!(latency_bucket(ms), key, "{ms}");
            assert!((bucket_latency(key) - back).abs() < 1e-9, "{ms}");
        }
        let keys: Vec<i64> = [0.05, 0.9, 1.0, 9.9, 10.0, 99.0, 100.0, 5000.0]
            .iter()
            .map(|ms| latency_bucket(*ms))
            .collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
    }

    #[test]
    fn search_text_is_quoted_words() {
        assert_eq!(fts_query(" a  \"b\" "), "\"a\" \"\"\"b\"\"\"");
        assert_eq!(fts_query("   "), "");
    }
}

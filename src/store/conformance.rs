//! One behaviour suite every [`AuditStore`] backend must pass.
//!
//! The expected answer of every query is computed from the appended events
//! with [`EventFilter::matches`], so each backend is held to the same
//! oracle: newest first for pages, oldest first for exports, a keyset
//! cursor that visits every event exactly once. Purges are held to the
//! rules every backend shares: only a run of the oldest events goes, never
//! the newest, and what remains still verifies as a chain.

use std::collections::BTreeMap;
use std::future::Future;

use chrono::{DateTime, Duration, TimeZone, Utc};
use futures_util::StreamExt;
use serde_json::json;

use super::{AuditStore, EventFilter, EventQuery, PurgeReport, SharedStore};
use crate::event::chain::{ChainVerifier, GENESIS_HASH};
use crate::event::{AuditEvent, EventRecord, EventType, Level, NewEvent};

/// How many events the suite appends.
const EVENTS: i64 = 40;

/// Runs the suite. `make` returns a fresh, empty store and a guard that
/// keeps whatever backs it (a temporary folder) alive.
pub(crate) async fn conformance_suite<F, Fut, G>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = (SharedStore, G)>,
{
    let (store, _guard) = make().await;
    empty_store(&*store).await;

    let events = sample_events();
    // Several batches, as the writer would send them.
    for batch in events.chunks(15) {
        store.append_batch(batch.to_vec().into()).await.unwrap();
    }
    store.append_batch(Vec::new().into()).await.unwrap();

    let head = store.head().await.unwrap().unwrap();
    let last = events.last().unwrap();
    assert_eq!(
        (head.seq, head.hash.as_str()),
        (last.seq, last.hash.as_str())
    );
    store.health().await.unwrap();

    for filter in sample_filters(&events) {
        check_filter(&*store, &events, &filter).await;
    }
    limits(&*store, &events).await;
    get_by_id(&*store, &events).await;
    stats(&*store, &events).await;
    outbox(&*store, &events).await;

    // The stored chain is intact after a round trip through the store.
    let mut verifier = ChainVerifier::new();
    let mut export = store.export(EventFilter::default());
    while let Some(e) = export.next().await {
        verifier.check(&e.unwrap()).unwrap();
    }
    assert_eq!(verifier.checked(), EVENTS as u64);
    drop(store);

    let (store, _guard) = make().await;
    purges(&*store).await;

    let (store, _guard) = make().await;
    violation_keys(&*store).await;
}

/// What a violation's metadata may hold under `policy_name` and
/// `severity`: the packs' names and severities, and what an imported or
/// hand-written record may carry instead (a number, an object, null,
/// nothing). Varies with `seq` over every case.
pub(crate) fn violation_metadata(seq: i64) -> serde_json::Value {
    let policy = match seq % 7 {
        0 => json!(42),
        1 => serde_json::Value::Null,
        2 | 5 => json!("pii-basic"),
        3 => json!("secrets"),
        _ => json!("team-policy"),
    };
    let severity = match seq % 5 {
        0 => json!({"level": "high"}),
        1 | 3 => json!("high"),
        2 => json!("medium"),
        _ => json!("low"),
    };
    if seq % 11 == 0 {
        return json!({"detail": "no policy or severity"});
    }
    json!({"policy_name": policy, "severity": severity})
}

/// Violations counted by one key of their metadata, as every store counts
/// them: a key that is not a string counts as the empty string.
pub(crate) fn violations_by(events: &[AuditEvent], field: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for e in events {
        if e.event_type == EventType::ComplianceViolation {
            let key = e.metadata.field(field);
            *counts
                .entry(key.as_str().unwrap_or_default().to_owned())
                .or_default() += 1;
        }
    }
    counts
}

/// Violations whose policy or severity is not a string are counted under
/// the empty string, never refused or counted under their JSON text;
/// other events that carry the same keys are not counted.
async fn violation_keys(store: &dyn AuditStore) {
    let mut prev = GENESIS_HASH.to_owned();
    let events: Vec<AuditEvent> = (1..=60)
        .map(|seq| {
            let event_type = if seq % 3 == 0 {
                EventType::Request
            } else {
                EventType::ComplianceViolation
            };
            let mut e = NewEvent::new(event_type, format!("event {seq}"))
                .with_metadata(violation_metadata(seq));
            e.timestamp = ts(seq);
            let sealed = e.seal(seq, &prev);
            prev.clone_from(&sealed.hash);
            sealed
        })
        .collect();
    store.append_batch(events.clone().into()).await.unwrap();
    let stats = store.stats().await.unwrap();
    assert_eq!(
        stats.violations_by_policy,
        violations_by(&events, "policy_name")
    );
    assert_eq!(
        stats.violations_by_severity,
        violations_by(&events, "severity")
    );
    for key in ["", "pii-basic", "secrets", "team-policy"] {
        assert!(stats.violations_by_policy.contains_key(key), "{stats:?}");
    }
    for key in ["", "high", "medium", "low"] {
        assert!(stats.violations_by_severity.contains_key(key), "{stats:?}");
    }
}

/// Events six hours apart, `seq * 6h` after 2026-01-01T00:00Z (a
/// Thursday), each with about `pad` bytes of metadata. Seq 16 is Monday
/// 2026-01-05T00:00Z, the first event of ISO week 2: a cutoff there falls
/// on an hour, a day and a week boundary at once.
pub(crate) fn spread_events(from_seq: i64, prev_hash: &str, n: i64, pad: usize) -> Vec<AuditEvent> {
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let mut prev = prev_hash.to_owned();
    (from_seq..from_seq + n)
        .map(|seq| {
            let mut e = NewEvent::new(EventType::Request, format!("event {seq}"))
                .with_request_id(format!("req-{seq}"))
                .with_metadata(json!({"seq": seq, "pad": "x".repeat(pad)}));
            e.timestamp = base + Duration::hours(6 * seq);
            let sealed = e.seal(seq, &prev);
            prev.clone_from(&sealed.hash);
            sealed
        })
        .collect()
}

/// Retention and the size cap on one store.
async fn purges(store: &dyn AuditStore) {
    let far_future = Utc.with_ymd_and_hms(2100, 1, 1, 0, 0, 0).unwrap();
    let r = store.purge_before(far_future).await.unwrap();
    assert_eq!((r.removed, r.first_seq, r.last_seq), (0, None, None));
    let r = store.enforce_max_bytes(0).await.unwrap();
    assert_eq!(r.removed, 0);

    // Events large enough that half the store is more than an empty one
    // takes (SQLite: a 16 KiB page for each table and index, about 400 KB),
    // so the cap below is reachable.
    let mut events = spread_events(1, GENESIS_HASH, 40, 24_000);
    for batch in events.chunks(7) {
        store.append_batch(batch.to_vec().into()).await.unwrap();
    }
    let mut kept = 0;

    // Nothing is older than the first event, and nothing is over no cap.
    let r = store.purge_before(events[0].timestamp).await.unwrap();
    expect_removed(&r, &events, &mut kept);
    assert_eq!(r.removed, 0);
    let r = store.enforce_max_bytes(u64::MAX).await.unwrap();
    expect_removed(&r, &events, &mut kept);
    assert_eq!(r.removed, 0);
    assert!(r.bytes_after <= r.bytes_before);

    // A cutoff on a period boundary removes exactly the older events.
    let r = store.purge_before(events[15].timestamp).await.unwrap();
    expect_removed(&r, &events, &mut kept);
    assert_eq!(
        (r.removed, r.first_seq, r.last_seq),
        (15, Some(1), Some(15))
    );
    check_remaining(store, &events[kept..]).await;

    // Inside a period, a store may keep events of the period (the file
    // store removes whole files), but what goes is older than the cutoff.
    let cutoff = events[20].timestamp + Duration::hours(3);
    let r = store.purge_before(cutoff).await.unwrap();
    expect_removed(&r, &events, &mut kept);
    assert!(kept <= 21, "removed events at or after the cutoff");
    check_remaining(store, &events[kept..]).await;

    // The size cap removes the oldest until the store fits.
    let bytes = store.stats().await.unwrap().store_bytes;
    let cap = bytes / 2;
    let r = store.enforce_max_bytes(cap).await.unwrap();
    expect_removed(&r, &events, &mut kept);
    if bytes > 0 {
        assert!(r.removed > 0, "{r:?}");
        assert!(r.bytes_after <= cap, "{r:?}");
        assert!(store.stats().await.unwrap().store_bytes <= cap);
    } else {
        assert_eq!((r.removed, r.bytes_before, r.bytes_after), (0, 0, 0));
    }
    check_remaining(store, &events[kept..]).await;

    // Everything is old: all but the newest goes, and the head stays.
    let head = store.head().await.unwrap().unwrap();
    let r = store.purge_before(far_future).await.unwrap();
    expect_removed(&r, &events, &mut kept);
    assert_eq!(kept, events.len() - 1, "{r:?}");
    assert_eq!(store.head().await.unwrap(), Some(head.clone()));
    check_remaining(store, &events[kept..]).await;

    // The chain continues from the head, and verifies across the purges.
    let more = spread_events(head.seq + 1, &head.hash, 5, 100);
    store.append_batch(more.clone().into()).await.unwrap();
    events.extend(more);
    check_remaining(store, &events[kept..]).await;
}

/// Checks that `r` reports the run of oldest events after `kept`, and
/// moves `kept` past it.
fn expect_removed(r: &PurgeReport, events: &[AuditEvent], kept: &mut usize) {
    if r.removed == 0 {
        assert_eq!((r.first_seq, r.last_seq), (None, None), "{r:?}");
    } else {
        assert_eq!(r.first_seq, Some(events[*kept].seq), "{r:?}");
        *kept += r.removed as usize;
        assert_eq!(r.last_seq, Some(events[*kept - 1].seq), "{r:?}");
    }
    let oldest = events[*kept..].iter().map(|e| e.timestamp).min();
    assert_eq!(
        r.oldest_remaining,
        oldest.map(|t| crate::event::format_timestamp(&t)),
        "{r:?}"
    );
}

/// The store holds exactly `expected`, and it verifies as a chain.
async fn check_remaining(store: &dyn AuditStore, expected: &[AuditEvent]) {
    let exported: Vec<AuditEvent> = store
        .export(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(exported, expected);
    let mut verifier = ChainVerifier::new();
    for e in &exported {
        verifier.check(e).unwrap();
    }
    let page = store
        .query(&query(EventFilter::default(), 1000, None))
        .await
        .unwrap();
    assert!(page.events.iter().rev().eq(expected.iter()));
    assert_eq!(
        store.stats().await.unwrap().total_events,
        expected.len() as u64
    );
    let head = store.head().await.unwrap().unwrap();
    assert_eq!(head.seq, expected[expected.len() - 1].seq);
    store.health().await.unwrap();
}

/// Events with a spread of types, levels, request ids and metadata;
/// timestamp `i` seconds after a fixed base, so time order is seq order.
pub(crate) fn sample_events() -> Vec<AuditEvent> {
    let mut prev = GENESIS_HASH.to_owned();
    (1..=EVENTS)
        .map(|seq| {
            let (event_type, level) = match seq % 6 {
                0 => (EventType::Request, None),
                1 => (EventType::Response, None),
                2 => (EventType::ComplianceViolation, Some(Level::Error)),
                3 => (EventType::Error, Some(Level::Critical)),
                4 => (EventType::Other("USER_LOGIN".into()), Some(Level::Debug)),
                _ => (EventType::Custom, None),
            };
            let mut e = NewEvent::new(
                event_type.clone(),
                format!("event {seq}: =cmd|' naïve \"q\""),
            )
            .with_metadata(json!({
                "seq": seq,
                "policy_name": format!("policy-{}", seq % 2),
                "nested": {"list": [1, "two", null], "text": "line\nbreak, comma"},
            }));
            e.timestamp = ts(seq);
            if let Some(level) = level {
                e = e.with_level(level);
            }
            if seq % 3 != 0 {
                e = e.with_request_id(format!("req-{}", seq % 5));
            }
            let sealed = e.seal(seq, &prev);
            prev.clone_from(&sealed.hash);
            sealed
        })
        .collect()
}

/// The timestamp of sample event `seq`.
pub(crate) fn ts(seq: i64) -> DateTime<Utc> {
    let base = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    base + Duration::seconds(seq) + Duration::microseconds(123_456)
}

fn sample_filters(events: &[AuditEvent]) -> Vec<EventFilter> {
    let t10 = events[9].timestamp;
    let t30 = events[29].timestamp;
    vec![
        EventFilter::default(),
        EventFilter {
            event_types: vec![EventType::Request],
            ..Default::default()
        },
        EventFilter {
            event_types: vec![EventType::Request, EventType::Other("USER_LOGIN".into())],
            ..Default::default()
        },
        EventFilter {
            event_types: vec![EventType::System],
            ..Default::default()
        },
        EventFilter {
            start_time: Some(t10),
            ..Default::default()
        },
        EventFilter {
            end_time: Some(t10),
            ..Default::default()
        },
        EventFilter {
            start_time: Some(t10),
            end_time: Some(t30),
            ..Default::default()
        },
        EventFilter {
            request_id: Some("req-2".into()),
            ..Default::default()
        },
        EventFilter {
            request_id: Some("absent".into()),
            ..Default::default()
        },
        EventFilter {
            min_level: Some(Level::Warning),
            ..Default::default()
        },
        EventFilter {
            min_level: Some(Level::Critical),
            ..Default::default()
        },
        EventFilter {
            event_types: vec![EventType::Response, EventType::ComplianceViolation],
            start_time: Some(t10),
            end_time: Some(t30),
            request_id: Some("req-1".into()),
            min_level: Some(Level::Info),
            policy_name: None,
            source: None,
            pod: None,
            namespace: None,
        },
        EventFilter {
            policy_name: Some("policy-1".into()),
            ..Default::default()
        },
        // One type in a window: SQLite's threshold plan.
        EventFilter {
            event_types: vec![EventType::Request],
            start_time: Some(t10),
            end_time: Some(t30),
            ..Default::default()
        },
        EventFilter {
            event_types: vec![EventType::Response],
            start_time: Some(t10),
            ..Default::default()
        },
    ]
}

async fn empty_store(store: &dyn AuditStore) {
    assert!(store.head().await.unwrap().is_none());
    let page = store
        .query(&query(EventFilter::default(), 10, None))
        .await
        .unwrap();
    assert!(page.events.is_empty());
    assert_eq!(page.next_before_seq, None);
    assert!(store.export(EventFilter::default()).next().await.is_none());
    assert!(store.get("missing").await.unwrap().is_none());
    let stats = store.stats().await.unwrap();
    assert_eq!(stats.total_events, 0);
    assert!(stats.by_type.is_empty() && stats.oldest_timestamp.is_none());
    store.health().await.unwrap();
}

async fn check_filter(store: &dyn AuditStore, events: &[AuditEvent], filter: &EventFilter) {
    let oldest_first: Vec<&AuditEvent> = events.iter().filter(|e| filter.matches(e)).collect();
    let newest_first: Vec<&AuditEvent> = oldest_first.iter().rev().copied().collect();

    let page = store
        .query(&query(filter.clone(), 100, None))
        .await
        .unwrap();
    assert_eq!(
        page.events.iter().collect::<Vec<_>>(),
        newest_first,
        "{filter:?}"
    );
    assert_eq!(page.next_before_seq, None, "{filter:?}");

    // Paging with a small limit visits every match once, in order.
    let mut walked = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .query(&query(filter.clone(), 3, cursor))
            .await
            .unwrap();
        assert!(page.events.len() <= 3);
        walked.extend(page.events.iter().map(|e| e.seq));
        match page.next_before_seq {
            Some(next) => {
                assert_eq!(Some(next), page.events.last().map(|e| e.seq));
                cursor = Some(next);
            }
            None => break,
        }
    }
    let expected: Vec<i64> = newest_first.iter().map(|e| e.seq).collect();
    assert_eq!(walked, expected, "paging {filter:?}");

    let exported: Vec<AuditEvent> = store
        .export(filter.clone())
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(
        exported.iter().collect::<Vec<_>>(),
        oldest_first,
        "export {filter:?}"
    );

    // Records serialise exactly as the events they stand for, page by page.
    for limit in [100, 3, 1] {
        let events = store
            .query(&query(filter.clone(), limit, None))
            .await
            .unwrap();
        let records = store
            .query_records(&query(filter.clone(), limit, None))
            .await
            .unwrap();
        assert_eq!(
            json_lines(&records.events),
            json_lines(&events.events),
            "records {filter:?} limit {limit}"
        );
        assert_eq!(records.next_before_seq, events.next_before_seq);
    }
    let records: Vec<EventRecord> = store
        .export_records(filter.clone())
        .map(|e| e.unwrap())
        .collect()
        .await;
    assert_eq!(
        json_lines(&records),
        json_lines(&exported),
        "export records {filter:?}"
    );
}

fn json_lines<T: serde::Serialize>(items: &[T]) -> Vec<String> {
    items
        .iter()
        .map(|i| serde_json::to_string(i).unwrap())
        .collect()
}

async fn limits(store: &dyn AuditStore, events: &[AuditEvent]) {
    let all = EventFilter::default();
    let page = store.query(&query(all.clone(), 1, None)).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].seq, EVENTS);
    assert_eq!(page.next_before_seq, Some(EVENTS));

    // Exactly as many as match: no next page.
    let page = store
        .query(&query(all.clone(), EVENTS as usize, None))
        .await
        .unwrap();
    assert_eq!(page.events.len(), events.len());
    assert_eq!(page.next_before_seq, None);

    let page = store.query(&query(all.clone(), 5, Some(1))).await.unwrap();
    assert!(page.events.is_empty());
    let page = store.query(&query(all, 5, Some(3))).await.unwrap();
    let seqs: Vec<i64> = page.events.iter().map(|e| e.seq).collect();
    assert_eq!(seqs, [2, 1]);

    // Start is inclusive, end exclusive.
    let at = EventFilter {
        start_time: Some(events[9].timestamp),
        end_time: Some(events[10].timestamp),
        ..Default::default()
    };
    let page = store.query(&query(at, 10, None)).await.unwrap();
    assert_eq!(page.events.len(), 1);
    assert_eq!(page.events[0].seq, 10);
}

async fn get_by_id(store: &dyn AuditStore, events: &[AuditEvent]) {
    for e in [&events[0], &events[17], &events[events.len() - 1]] {
        assert_eq!(store.get(&e.id).await.unwrap().as_ref(), Some(e));
    }
    assert!(store
        .get("0190b6c8-0000-7000-8000-000000000000")
        .await
        .unwrap()
        .is_none());
    assert!(store.get("").await.unwrap().is_none());
}

async fn stats(store: &dyn AuditStore, events: &[AuditEvent]) {
    let stats = store.stats().await.unwrap();
    let mut by_type = BTreeMap::new();
    let mut by_level = BTreeMap::new();
    let mut by_policy = BTreeMap::new();
    for e in events {
        *by_type.entry(e.event_type.to_string()).or_insert(0u64) += 1;
        *by_level.entry(e.level.to_string()).or_insert(0u64) += 1;
        if e.event_type == EventType::ComplianceViolation {
            let policy = e.metadata.field("policy_name").as_str().unwrap().to_owned();
            *by_policy.entry(policy).or_insert(0u64) += 1;
        }
    }
    assert_eq!(stats.total_events, EVENTS as u64);
    assert_eq!(stats.by_type, by_type);
    assert_eq!(stats.by_level, by_level);
    assert_eq!(stats.violations_by_policy, by_policy);
    assert_eq!(
        stats.oldest_timestamp.as_deref(),
        Some(crate::event::format_timestamp(&events[0].timestamp).as_str())
    );
    assert_eq!(
        stats.newest_timestamp.as_deref(),
        Some(crate::event::format_timestamp(&events[events.len() - 1].timestamp).as_str())
    );
}

/// What a shipper relies on: records after a seq, oldest first, exactly as
/// exports write them, and a cursor per target.
async fn outbox(store: &dyn AuditStore, events: &[AuditEvent]) {
    let first = events[0].seq;
    let page = store.records_after(first - 1, 5).await.unwrap();
    assert_eq!(
        page.iter().map(|r| r.seq).collect::<Vec<_>>(),
        events[..5].iter().map(|e| e.seq).collect::<Vec<_>>()
    );
    let exported: Vec<EventRecord> = store
        .export_records(EventFilter::default())
        .map(Result::unwrap)
        .collect()
        .await;
    assert_eq!(json_lines(&page), json_lines(&exported[..5]));
    let last = events[events.len() - 1].seq;
    let tail = store.records_after(last - 2, 100).await.unwrap();
    assert_eq!(
        tail.iter().map(|r| r.seq).collect::<Vec<_>>(),
        [last - 1, last]
    );
    assert!(store.records_after(last, 100).await.unwrap().is_empty());

    assert_eq!(store.ship_cursor("postgres").await.unwrap(), None);
    store.set_ship_cursor("postgres", first + 6).await.unwrap();
    store.set_ship_cursor("postgres", first + 9).await.unwrap();
    store.set_ship_cursor("http", first).await.unwrap();
    assert_eq!(
        store.ship_cursor("postgres").await.unwrap(),
        Some(first + 9)
    );
    assert_eq!(store.ship_cursor("http").await.unwrap(), Some(first));
}

fn query(filter: EventFilter, limit: usize, before_seq: Option<i64>) -> EventQuery {
    EventQuery {
        filter,
        limit,
        before_seq,
    }
}

/// A REQUEST and RESPONSE pair as the proxy records a chat call: about
/// 1 KB of sanitised body in each, plus the documented metadata.
pub(crate) fn realistic_events(n: i64) -> Vec<AuditEvent> {
    let prompt = "Summarise the attached quarterly report for the board. \
        Focus on revenue, churn and the hiring plan; keep it under 200 words. "
        .repeat(6);
    let answer = "Revenue grew 12% quarter on quarter, led by the enterprise tier. \
        Churn fell to 2.1%. Hiring is on plan with 14 of 16 roles filled. "
        .repeat(6);
    let mut prev = GENESIS_HASH.to_owned();
    (1..=n)
        .map(|seq| {
            let request_id = crate::event::new_id();
            let e = if seq % 2 == 1 {
                NewEvent::new(EventType::Request, "POST /v1/chat/completions").with_metadata(json!({
                    "provider": "openai", "operation": "chat.create", "method": "POST",
                    "path": "/v1/chat/completions", "model": "gpt-4o-mini", "stream": false,
                    "client_ip": "10.0.3.17",
                    "headers": {"content-type": "application/json", "user-agent": "OpenAI/Python 1.54.3"},
                    "request_data": {"model": "gpt-4o-mini", "temperature": 0.2, "messages": [
                        {"role": "system", "content": "You are a concise analyst."},
                        {"role": "user", "content": prompt},
                    ]},
                    "body_bytes": 1180, "truncated": false,
                }))
            } else {
                NewEvent::new(EventType::Response, "200 chat.create gpt-4o-mini").with_metadata(json!({
                    "provider": "openai", "operation": "chat.create", "status": 200,
                    "latency_ms": 1840, "ttfb_ms": 412, "model": "gpt-4o-mini-2024-07-18",
                    "usage": {"prompt_tokens": 231, "completion_tokens": 198, "total_tokens": 429},
                    "finish_reason": "stop", "stream": false,
                    "response_data": {"id": "chatcmpl-AbCdEf0123456789", "object": "chat.completion",
                        "created": 1_767_225_600, "model": "gpt-4o-mini-2024-07-18",
                        "choices": [{"index": 0, "finish_reason": "stop",
                            "message": {"role": "assistant", "content": answer}}],
                        "usage": {"prompt_tokens": 231, "completion_tokens": 198, "total_tokens": 429}},
                    "upstream_request_id": "req_7f3a9c2e4b1d",
                    "body_bytes": 1214, "truncated": false, "outcome": "completed",
                }))
            };
            let sealed = e.with_request_id(request_id).seal(seq, &prev);
            prev.clone_from(&sealed.hash);
            sealed
        })
        .collect()
}

/// Prints the average bytes per stored event of the persistent stores:
/// `cargo test --lib bytes_per_event -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement, not a check"]
async fn bytes_per_event() {
    const N: i64 = 10_000;
    let events = realistic_events(N);
    let json_bytes: usize = events
        .iter()
        .map(|e| serde_json::to_vec(e).unwrap().len())
        .sum();
    println!(
        "serialised event: {} bytes on average",
        json_bytes / N as usize
    );

    let dir = tempfile::tempdir().unwrap();
    {
        let store = super::sqlite::SqliteStore::open(dir.path()).await.unwrap();
        for batch in events.chunks(100) {
            store.append_batch(batch.to_vec().into()).await.unwrap();
        }
        let bytes = store.stats().await.unwrap().store_bytes;
        println!(
            "sqlite, db + wal while open: {} bytes/event",
            bytes / N as u64
        );
    }
    // Closing the last connection checkpoints and removes the WAL.
    let db = std::fs::metadata(dir.path().join(super::sqlite::DB_FILE))
        .unwrap()
        .len();
    println!("sqlite, db after close: {} bytes/event", db / N as u64);

    let dir = tempfile::tempdir().unwrap();
    let store = super::file::FileStore::open(dir.path(), super::Rotation::Daily).unwrap();
    for batch in events.chunks(100) {
        store.append_batch(batch.to_vec().into()).await.unwrap();
    }
    let bytes = store.stats().await.unwrap().store_bytes;
    println!("file: {} bytes/event", bytes / N as u64);
}

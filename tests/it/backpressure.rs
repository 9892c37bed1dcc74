//! Back-pressure at admission: a store that works but is slower than the
//! traffic makes calls wait for room instead of losing their events; a
//! stalled store still serves calls under fail_open (and counts the drops)
//! and refuses them under fail_closed, each after a bounded wait.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use llm_audit_proxy::event::EventType;
use llm_audit_proxy::store::{AuditStore, EventFilter, EventQuery, MAX_QUERY_LIMIT};
use serde_json::json;

use crate::support::slow_store::SlowStore;
use crate::support::{MockUpstream, TestProxy};

/// Concurrent clients, and calls each sends one after another.
const CLIENTS: usize = 4;
const CALLS_EACH: usize = 40;

/// A writer of 8 events per batch behind `store`, a queue of `capacity`
/// events, and the given wait for room. Under fail_open a quarter of the
/// queue is left for calls already in flight when waiting starts: 80
/// leaves 20 events, room for two calls' records per client.
async fn proxy_on(
    mock: &MockUpstream,
    store: &Arc<SlowStore>,
    capacity: &str,
    full_wait_ms: &str,
    extra: &[(&str, &str)],
) -> TestProxy {
    let mut env = vec![
        ("LLM_AUDIT_PROXY_QUEUE_CAPACITY", capacity),
        ("LLM_AUDIT_PROXY_QUEUE_MAX_BATCH", "8"),
        ("LLM_AUDIT_PROXY_QUEUE_COMMIT_INTERVAL_MS", "0"),
        ("LLM_AUDIT_PROXY_QUEUE_FULL_WAIT_MS", full_wait_ms),
    ];
    env.extend_from_slice(extra);
    TestProxy::start_on_store(&mock.url(), store.clone(), &env).await
}

/// Sends `CLIENTS` × `CALLS_EACH` calls, each client one after another;
/// returns each call's request id and status.
fn send_calls(proxy: &TestProxy, prefix: &str) -> Vec<tokio::task::JoinHandle<Vec<(String, u16)>>> {
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    send_many(proxy, prefix, CLIENTS, CALLS_EACH, chat, &[])
}

/// Sends `clients` × `calls_each` calls of `body` with `headers`, each
/// client one after another; returns each call's request id and status.
fn send_many(
    proxy: &TestProxy,
    prefix: &str,
    clients: usize,
    calls_each: usize,
    body: serde_json::Value,
    headers: &[(&'static str, &'static str)],
) -> Vec<tokio::task::JoinHandle<Vec<(String, u16)>>> {
    let body = Arc::new(serde_json::to_vec(&body).unwrap());
    (0..clients)
        .map(|c| {
            let http = proxy.http.clone();
            let url = proxy.url("/v1/chat/completions");
            let prefix = prefix.to_owned();
            let body = body.clone();
            let headers = headers.to_vec();
            tokio::spawn(async move {
                let mut done = Vec::new();
                for i in 0..calls_each {
                    let id = format!("{prefix}-{c}-{i}");
                    let mut call = http
                        .post(&url)
                        .header("x-request-id", &id)
                        .header("content-type", "application/json");
                    for (name, value) in &headers {
                        call = call.header(*name, *value);
                    }
                    let status = call
                        .body(body.to_vec())
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16();
                    done.push((id, status));
                }
                done
            })
        })
        .collect()
}

async fn statuses(calls: Vec<tokio::task::JoinHandle<Vec<(String, u16)>>>) -> Vec<(String, u16)> {
    let mut all = Vec::new();
    for c in calls {
        all.extend(c.await.unwrap());
    }
    all
}

/// Waits (bounded) until `metric` is above zero.
async fn until_positive(proxy: &TestProxy, metric: &str) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let value = proxy.metric(metric).await;
        if value > 0.0 || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Waits (bounded) until `metric` is at least `floor`.
async fn until_at_least(proxy: &TestProxy, metric: &str, floor: f64) -> f64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let value = proxy.metric(metric).await;
        if value >= floor || tokio::time::Instant::now() > deadline {
            return value;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Request ids of the stored events of `event_type` among `prefix`'s calls.
async fn stored_ids(
    proxy: &TestProxy,
    event_type: &str,
    prefix: &str,
    n: usize,
) -> BTreeSet<String> {
    proxy
        .wait_events(&format!("event_type={event_type}"), n)
        .await
        .iter()
        .filter_map(|e| e["request_id"].as_str())
        .filter(|id| id.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

#[tokio::test]
async fn a_store_slower_than_the_traffic_loses_no_event_under_fail_open() {
    let mock = MockUpstream::start().await;
    let store = Arc::new(SlowStore::new(Duration::from_millis(20)));
    // A bound far above any real wait here: the outcome is what is tested.
    let proxy = proxy_on(&mock, &store, "80", "30000", &[]).await;
    // The store holds its writes until calls are seen waiting, so the
    // queue surely fills; then it drains slowly, 8 events per write.
    store.stall();
    let calls = send_calls(&proxy, "paced");
    assert!(until_positive(&proxy, "llm_audit_proxy_queue_waits_total").await > 0.0);
    store.release();
    let all = statuses(calls).await;
    assert!(all.iter().all(|(_, s)| *s == 200), "{all:?}");
    let expected: BTreeSet<String> = all.into_iter().map(|(id, _)| id).collect();
    let n = expected.len();
    assert_eq!(stored_ids(&proxy, "REQUEST", "paced-", n).await, expected);
    assert_eq!(stored_ids(&proxy, "RESPONSE", "paced-", n).await, expected);
    assert_eq!(
        proxy.metric("llm_audit_proxy_events_dropped_total").await,
        0.0
    );
    assert_eq!(
        proxy
            .metric("llm_audit_proxy_queue_wait_timeouts_total")
            .await,
        0.0
    );
    assert!(
        proxy
            .metric("llm_audit_proxy_queue_wait_seconds_total")
            .await
            > 0.0
    );
    assert_eq!(mock.calls(), n);
    proxy.stop().await;
}

#[tokio::test]
async fn without_a_wait_the_same_traffic_drops_and_counts_events() {
    let mock = MockUpstream::start().await;
    let store = Arc::new(SlowStore::new(Duration::from_millis(20)));
    let proxy = proxy_on(&mock, &store, "80", "0", &[]).await;
    store.stall();
    let all = statuses(send_calls(&proxy, "unpaced")).await;
    assert!(all.iter().all(|(_, s)| *s == 200), "{all:?}");
    store.release();
    // 320 events offered into a queue of 80 behind a store that took none.
    let dropped = proxy.metric("llm_audit_proxy_events_dropped_total").await;
    assert!(dropped > 0.0);
    assert_eq!(proxy.metric("llm_audit_proxy_queue_waits_total").await, 0.0);
    let n = all.len();
    let requests = stored_ids(&proxy, "REQUEST", "unpaced-", n).await;
    assert!(requests.len() < n, "some REQUESTs were dropped");
    proxy.stop().await;
}

#[tokio::test]
async fn a_stalled_store_still_serves_calls_under_fail_open_and_counts_drops() {
    let mock = MockUpstream::start().await;
    let store = Arc::new(SlowStore::new(Duration::ZERO));
    let proxy = proxy_on(&mock, &store, "20", "20", &[]).await;
    store.stall();
    let all = statuses(send_calls(&proxy, "stalled")).await;
    assert!(all.iter().all(|(_, s)| *s == 200), "{all:?}");
    assert_eq!(mock.calls(), all.len());
    assert!(
        proxy
            .metric("llm_audit_proxy_queue_wait_timeouts_total")
            .await
            > 0.0
    );
    assert!(proxy.metric("llm_audit_proxy_events_dropped_total").await > 0.0);
    store.release();
    proxy.stop().await;
}

#[tokio::test]
async fn a_stalled_store_under_fail_closed_refuses_calls_after_the_wait() {
    let mock = MockUpstream::start().await;
    let store = Arc::new(SlowStore::new(Duration::ZERO));
    let proxy = proxy_on(
        &mock,
        &store,
        "16",
        "20",
        &[("LLM_AUDIT_PROXY_ON_STORE_FAILURE", "fail_closed")],
    )
    .await;
    store.stall();
    let all = statuses(send_calls(&proxy, "closed")).await;
    let served = all.iter().filter(|(_, s)| *s == 200).count();
    let refused = all.iter().filter(|(_, s)| *s == 503).count();
    assert_eq!(served + refused, all.len(), "{all:?}");
    assert!(
        refused > 0,
        "a full queue behind a stalled store refuses calls"
    );
    assert_eq!(mock.calls(), served, "refused calls never reach upstream");
    assert!(
        proxy
            .metric("llm_audit_proxy_queue_wait_timeouts_total")
            .await
            > 0.0
    );
    assert_eq!(
        proxy.metric("llm_audit_proxy_events_dropped_total").await,
        0.0
    );
    store.release();
    proxy.stop().await;
}

#[tokio::test]
async fn a_burst_under_fail_closed_waits_for_room_instead_of_being_refused() {
    let mock = MockUpstream::start().await;
    let store = Arc::new(SlowStore::new(Duration::from_millis(20)));
    // Room for the events of 4 calls; 4 clients each send 40.
    let proxy = proxy_on(
        &mock,
        &store,
        "16",
        "30000",
        &[("LLM_AUDIT_PROXY_ON_STORE_FAILURE", "fail_closed")],
    )
    .await;
    store.stall();
    let calls = send_calls(&proxy, "burst");
    assert!(until_positive(&proxy, "llm_audit_proxy_queue_waits_total").await > 0.0);
    store.release();
    let all = statuses(calls).await;
    assert!(all.iter().all(|(_, s)| *s == 200), "{all:?}");
    let expected: BTreeSet<String> = all.into_iter().map(|(id, _)| id).collect();
    let n = expected.len();
    assert_eq!(stored_ids(&proxy, "RESPONSE", "burst-", n).await, expected);
    assert_eq!(
        proxy.metric("llm_audit_proxy_events_dropped_total").await,
        0.0
    );
    proxy.stop().await;
}

/// Clients sending calls with request bodies near the capture cap at
/// once, and calls each sends.
const LARGE_CLIENTS: usize = 16;
const LARGE_CALLS_EACH: usize = 4;
/// The capture cap (256 KiB) and the text of each request body, just
/// under it.
const CAPTURE_CAP: &str = "262144";
const LARGE_TEXT: usize = 250 * 1024;
/// Upstream answers each call this late, so every client's first call is
/// admitted (the queue still empty) before any record is queued.
const LATE_ANSWER: (&str, &str) = ("x-mock-header-delay-ms", "50");

/// A proxy behind `store` whose queue holds about four records of large
/// bodies (`queue.max_bytes` at its 1 MiB minimum) and whose writer takes
/// one event at a time: sixteen such calls in flight overshoot the
/// quarter above admission's mark many times over.
async fn large_body_proxy(
    mock: &MockUpstream,
    store: &Arc<SlowStore>,
    full_wait_ms: &str,
) -> TestProxy {
    let env = [
        ("LLM_AUDIT_PROXY_QUEUE_MAX_BYTES", "1048576"),
        ("LLM_AUDIT_PROXY_CAPTURE_MAX_BODY_BYTES", CAPTURE_CAP),
        ("LLM_AUDIT_PROXY_QUEUE_MAX_BATCH", "1"),
        ("LLM_AUDIT_PROXY_QUEUE_COMMIT_INTERVAL_MS", "0"),
        ("LLM_AUDIT_PROXY_QUEUE_FULL_WAIT_MS", full_wait_ms),
    ];
    TestProxy::start_on_store(&mock.url(), store.clone(), &env).await
}

fn large_calls(
    proxy: &TestProxy,
    prefix: &str,
) -> Vec<tokio::task::JoinHandle<Vec<(String, u16)>>> {
    let chat = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "a".repeat(LARGE_TEXT)}],
    });
    send_many(
        proxy,
        prefix,
        LARGE_CLIENTS,
        LARGE_CALLS_EACH,
        chat,
        &[LATE_ANSWER],
    )
}

/// Request ids of `prefix`'s events of `event_type` in `store`, read from
/// the store itself (a page of large REQUESTs is more than the admin API
/// serves at once).
async fn ids_in_store(store: &SlowStore, event_type: &EventType, prefix: &str) -> BTreeSet<String> {
    let query = EventQuery {
        filter: EventFilter {
            event_types: vec![event_type.clone()],
            ..EventFilter::default()
        },
        limit: MAX_QUERY_LIMIT,
        before_seq: None,
    };
    store
        .query(&query)
        .await
        .unwrap()
        .events
        .into_iter()
        .filter_map(|e| e.request_id)
        .filter(|id| id.starts_with(prefix))
        .collect()
}

/// Waits (bounded) until `store` holds an event of `event_type` for each
/// of `expected`, and returns the ids it holds.
async fn until_stored(
    store: &SlowStore,
    event_type: &EventType,
    prefix: &str,
    expected: &BTreeSet<String>,
) -> BTreeSet<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let stored = ids_in_store(store, event_type, prefix).await;
        if stored == *expected || tokio::time::Instant::now() > deadline {
            return stored;
        }
        // Each look copies every large event: not too often.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn large_bodies_behind_a_slow_store_lose_no_event_under_fail_open() {
    let mock = MockUpstream::start().await;
    let store = Arc::new(SlowStore::new(Duration::from_millis(5)));
    let proxy = large_body_proxy(&mock, &store, "30000").await;
    store.stall();
    let calls = large_calls(&proxy, "large");
    assert!(until_positive(&proxy, "llm_audit_proxy_events_held_total").await > 0.0);
    store.release();
    let all = statuses(calls).await;
    assert!(all.iter().all(|(_, s)| *s == 200), "{all:?}");
    let expected: BTreeSet<String> = all.into_iter().map(|(id, _)| id).collect();
    for event_type in [EventType::Request, EventType::Response] {
        let stored = until_stored(&store, &event_type, "large-", &expected).await;
        assert_eq!(stored, expected, "every {event_type:?} is stored");
    }
    assert_eq!(
        proxy.metric("llm_audit_proxy_events_dropped_total").await,
        0.0
    );
    proxy.stop().await;
}

#[tokio::test]
async fn large_bodies_without_a_wait_are_dropped_and_counted() {
    let mock = MockUpstream::start().await;
    let store = Arc::new(SlowStore::new(Duration::from_millis(5)));
    let proxy = large_body_proxy(&mock, &store, "0").await;
    store.stall();
    let all = statuses(large_calls(&proxy, "unheld")).await;
    assert!(all.iter().all(|(_, s)| *s == 200), "{all:?}");
    // The records are built after the calls end.
    let dropped = until_positive(&proxy, "llm_audit_proxy_events_dropped_over_budget_total").await;
    assert!(dropped > 0.0);
    assert_eq!(proxy.metric("llm_audit_proxy_events_held_total").await, 0.0);
    store.release();
    proxy.stop().await;
}

#[tokio::test]
async fn large_bodies_behind_a_stalled_store_are_dropped_and_counted_after_the_wait() {
    let mock = MockUpstream::start().await;
    let store = Arc::new(SlowStore::new(Duration::ZERO));
    let proxy = large_body_proxy(&mock, &store, "50").await;
    store.stall();
    let all = statuses(large_calls(&proxy, "stalled")).await;
    assert!(all.iter().all(|(_, s)| *s == 200), "{all:?}");
    assert!(until_positive(&proxy, "llm_audit_proxy_events_held_total").await > 0.0);
    // Held events end at the bound although the store never moves.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let still_held = loop {
        let held = proxy.metric("llm_audit_proxy_queue_held_events").await;
        if held == 0.0 || tokio::time::Instant::now() > deadline {
            break held;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(still_held, 0.0);
    assert!(until_positive(&proxy, "llm_audit_proxy_events_dropped_total").await > 0.0);
    store.release();
    proxy.stop().await;
}

/// A proxy under fail_closed with a queue of `max_bytes` that never waits
/// for room: no room is a 503.
async fn fail_closed_proxy(
    mock: &MockUpstream,
    store: &Arc<SlowStore>,
    max_bytes: &str,
    extra: &[(&str, &str)],
) -> TestProxy {
    let mut env = vec![
        ("LLM_AUDIT_PROXY_ON_STORE_FAILURE", "fail_closed"),
        ("LLM_AUDIT_PROXY_QUEUE_MAX_BYTES", max_bytes),
        ("LLM_AUDIT_PROXY_QUEUE_FULL_WAIT_MS", "0"),
    ];
    env.extend_from_slice(extra);
    TestProxy::start_on_store(&mock.url(), store.clone(), &env).await
}

/// Streams held open at once under fail_closed.
const OPEN_STREAMS: usize = 200;

#[tokio::test]
async fn open_streams_under_fail_closed_leave_room_for_new_calls() {
    let mock = MockUpstream::start().await;
    let store = Arc::new(SlowStore::new(Duration::ZERO));
    // 4 MiB: reserving twice the default 1 MiB capture cap (64 KiB) a call
    // would hold it all with 64 streams.
    let proxy = fail_closed_proxy(&mock, &store, "4194304", &[]).await;
    let opening: Vec<_> = (0..OPEN_STREAMS)
        .map(|i| {
            proxy
                .post_call("/v1/chat/completions", format!("open-{i}"))
                .header("x-mock-endless", "1")
                .header("x-mock-chunk-delay-ms", "1000")
                .json(&json!({"model": "gpt-4o-mini", "stream": true}))
                .send()
        })
        .collect();
    let mut open = Vec::new();
    for stream in opening {
        let stream = stream.await.unwrap();
        assert_eq!(stream.status(), 200);
        open.push(stream);
    }
    let status = proxy
        .post_call("/v1/chat/completions", "after-open")
        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(
        status, 200,
        "a new call is admitted beside the open streams"
    );
    let ids = proxy.wait_events("request_id=after-open", 2).await;
    assert_eq!(ids.len(), 2, "its REQUEST and RESPONSE are stored");
    drop(open);
    proxy.stop().await;
}

#[tokio::test]
async fn large_calls_admitted_under_fail_closed_have_every_event_stored() {
    let mock = MockUpstream::start().await;
    let store = Arc::new(SlowStore::new(Duration::ZERO));
    // A 1 MiB queue, the default 1 MiB capture cap and no wait: a few
    // large calls admitted together grow their reservations past the
    // queue's budget, and nothing but their reservations keeps their
    // events from being dropped.
    let proxy = fail_closed_proxy(
        &mock,
        &store,
        "1048576",
        &[
            ("LLM_AUDIT_PROXY_QUEUE_MAX_BATCH", "1"),
            ("LLM_AUDIT_PROXY_QUEUE_COMMIT_INTERVAL_MS", "0"),
        ],
    )
    .await;
    store.stall();
    let chat = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "a".repeat(600 * 1024)}],
    });
    let all = statuses(send_many(&proxy, "admitted", 4, 2, chat, &[LATE_ANSWER])).await;
    let served: BTreeSet<String> = all
        .iter()
        .filter(|(_, s)| *s == 200)
        .map(|(id, _)| id.clone())
        .collect();
    let refused = all.iter().filter(|(_, s)| *s == 503).count();
    assert_eq!(served.len() + refused, all.len(), "{all:?}");
    assert!(served.len() >= 3, "the first calls are admitted together");
    assert_eq!(
        mock.calls(),
        served.len(),
        "refused calls never reach upstream"
    );
    // The store moves only once every record has been offered.
    let offered = until_at_least(
        &proxy,
        "llm_audit_proxy_events_offered_total",
        2.0 * served.len() as f64,
    )
    .await;
    assert!(offered >= 2.0 * served.len() as f64);
    store.release();
    for event_type in [EventType::Request, EventType::Response] {
        let stored = until_stored(&store, &event_type, "admitted-", &served).await;
        assert_eq!(
            stored, served,
            "every admitted call's {event_type:?} is stored"
        );
    }
    assert_eq!(
        proxy.metric("llm_audit_proxy_events_dropped_total").await,
        0.0
    );
    proxy.stop().await;
}

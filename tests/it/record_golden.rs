//! The events a fixed set of calls records, compared field by field with
//! `fixtures/record_golden.json`. The record path may be reworked for
//! speed; what it stores and what the API returns must not change.
//!
//! Fields that differ from run to run (ids, times, latencies, hashes,
//! ports) are replaced by a marker of their kind before the comparison.
//! `UPDATE_GOLDEN=1 cargo test --test it record_golden` rewrites the file
//! after an intended change of the record.

use serde_json::{json, Map, Value};

use crate::support::{MockUpstream, TestProxy};

const GOLDEN: &str = "tests/it/fixtures/record_golden.json";

/// One call of the set: request id, path, body, extra headers.
struct Call {
    id: &'static str,
    path: &'static str,
    body: Value,
    headers: &'static [(&'static str, &'static str)],
}

fn calls() -> Vec<Call> {
    let pii = "Hi, I am Jane Doe (jane.doe@example.com, +1 415 555 0100). My account was locked.";
    vec![
        Call {
            id: "golden-chat",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4o-mini", "temperature": 0.2, "user": "app-user-1",
                "messages": [{"role": "system", "content": "You are a helpful assistant."},
                             {"role": "user", "content": "What is the capital of France?"}]}),
            headers: &[],
        },
        Call {
            id: "golden-chat-pii",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": pii}]}),
            headers: &[("x-customer-note", "reach me at jane.doe@example.com")],
        },
        Call {
            id: "golden-chat-stream",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4o-mini", "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": "Tell me a joke."}]}),
            headers: &[],
        },
        Call {
            id: "golden-chat-tools",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4o-mini", "stream": true,
                "tools": [{"type": "function", "function": {"name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}],
                "messages": [{"role": "user", "content": "Weather in Paris?"}]}),
            headers: &[],
        },
        Call {
            id: "golden-responses",
            path: "/v1/responses",
            body: json!({"model": "gpt-4o-mini", "input": "Say hello."}),
            headers: &[],
        },
        Call {
            id: "golden-responses-stream",
            path: "/v1/responses",
            body: json!({"model": "gpt-4o-mini", "input": "Say hello.", "stream": true}),
            headers: &[],
        },
        Call {
            id: "golden-embeddings",
            path: "/v1/embeddings",
            body: json!({"model": "text-embedding-3-small", "input": ["call +1 415 555 0100"]}),
            headers: &[],
        },
        Call {
            id: "golden-error",
            path: "/v1/rate-limited",
            body: json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
            headers: &[],
        },
        Call {
            id: "golden-blocked",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4o-mini", "messages": [{"role": "user",
                "content": "my token is ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"}]}),
            headers: &[],
        },
        Call {
            id: "golden-card-answer",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "card?"}]}),
            headers: &[("x-mock-card", "1")],
        },
    ]
}

#[tokio::test]
async fn record_of_a_fixed_call_set_matches_the_golden_file() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[("LLM_AUDIT_PROXY_POLICY_PACKS", "pii-basic,secrets")],
    )
    .await;
    let mut recorded = Map::new();
    for call in calls() {
        let mut request = proxy.post_call(call.path, call.id).json(&call.body);
        for (name, value) in call.headers {
            request = request.header(*name, *value);
        }
        let response = request.send().await.unwrap();
        // The whole answer, so the call ends before its events are read.
        let _ = response.bytes().await.unwrap();
        let events = proxy.call_events(call.id).await;
        let events: Vec<Value> = events.into_iter().map(normalised).collect();
        recorded.insert(call.id.to_owned(), Value::Array(events));
    }
    // The export returns the same events as the query API.
    let export = proxy.admin_text("/api/export?format=ndjson").await;
    let mut exported: Map<String, Value> = Map::new();
    for line in export.lines() {
        let event: Value = serde_json::from_str(line).unwrap();
        if let Some(id) = event["request_id"]
            .as_str()
            .filter(|id| recorded.contains_key(*id))
        {
            let calls = exported.entry(id.to_owned()).or_insert_with(|| json!([]));
            calls.as_array_mut().unwrap().push(normalised(event));
        }
    }
    proxy.stop().await;
    let recorded = Value::Object(recorded);
    let mut differences = Vec::new();
    compare(
        "export",
        &recorded,
        &Value::Object(exported),
        &mut differences,
    );
    assert!(
        differences.is_empty(),
        "the export differs from the query API:\n{}",
        differences.join("\n")
    );

    let path = format!("{}/{GOLDEN}", env!("CARGO_MANIFEST_DIR"));
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        let text = serde_json::to_string_pretty(&recorded).unwrap();
        std::fs::write(&path, text + "\n").unwrap();
        return;
    }
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut differences = Vec::new();
    compare("", &golden, &recorded, &mut differences);
    assert!(
        differences.is_empty(),
        "the record differs from {GOLDEN}:\n{}",
        differences.join("\n")
    );
}

/// Every place where `got` differs from `want`, by JSON path.
fn compare(at: &str, want: &Value, got: &Value, out: &mut Vec<String>) {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (k, wv) in w {
                match g.get(k) {
                    Some(gv) => compare(&format!("{at}.{k}"), wv, gv, out),
                    None => out.push(format!("{at}.{k}: missing (want {wv})")),
                }
            }
            for (k, gv) in g {
                if !w.contains_key(k) {
                    out.push(format!("{at}.{k}: unexpected {gv}"));
                }
            }
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => {
            for (i, (wv, gv)) in w.iter().zip(g).enumerate() {
                compare(&format!("{at}[{i}]"), wv, gv, out);
            }
        }
        _ if want != got => out.push(format!("{at}: want {want}, got {got}")),
        _ => {}
    }
}

/// The event with every value that differs between runs replaced by a
/// marker naming its kind.
fn normalised(mut event: Value) -> Value {
    for key in ["id", "timestamp", "hash", "prev_hash", "seq"] {
        if event.get(key).is_some() {
            event[key] = json!(format!("<{key}>"));
        }
    }
    if let Some(meta) = event.get_mut("metadata") {
        normalise_metadata(meta);
    }
    event
}

/// Keys whose values are times, durations, addresses or ids made per run.
fn varies(key: &str) -> bool {
    key.ends_with("_ms")
        || key.ends_with("_at")
        || key.ends_with("_us")
        || key.contains("latency")
        || key.contains("duration")
        || matches!(
            key,
            "client_ip" | "event_id" | "request_event_id" | "timestamp" | "host" | "date"
        )
}

fn normalise_metadata(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                if varies(k) && !v.is_null() {
                    *v = json!(format!("<{k}>"));
                } else {
                    normalise_metadata(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(normalise_metadata),
        _ => {}
    }
}

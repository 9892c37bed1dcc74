//! The official OpenAI Python and Node SDKs, pointed at the proxy with
//! their base URL.
//!
//! The Python test needs `python3` with the `openai` package; the Node test
//! needs `node` and the SDK installed by `npm ci --prefix tests/sdk/node`.
//! Without them a test says so and passes, unless
//! LLM_AUDIT_PROXY_REQUIRE_SDK_TEST=1 (CI sets it), when their absence
//! fails it.

use std::process::Command;

use serde_json::Value;

use crate::support::{of_type, MockUpstream, TestProxy};

fn sdk_available() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether a missing SDK fails its test instead of skipping it.
fn sdk_required() -> bool {
    std::env::var("LLM_AUDIT_PROXY_REQUIRE_SDK_TEST").as_deref() == Ok("1")
}

/// The Node SDK's folder, with `node_modules` once `npm ci` has run.
const NODE_SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/node");

fn node_sdk_available() -> bool {
    Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
        && std::path::Path::new(NODE_SDK_DIR)
            .join("node_modules/openai/package.json")
            .is_file()
}

/// Runs an SDK script against the proxy and returns what it printed.
async fn run_sdk_script(mut command: Command, proxy: &TestProxy) -> Value {
    command
        .env("OPENAI_BASE_URL", format!("{}/v1", proxy.proxy_url))
        .env("OPENAI_API_KEY", "sk-proj-SdkTestKey0123456789abcdefghij")
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("ALL_PROXY");
    let output = tokio::task::spawn_blocking(move || command.output().unwrap())
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Each call is on record under its request id, as the operation it was,
/// with no credential among the stored headers.
async fn assert_recorded(proxy: &TestProxy, calls: [(&str, &str); 5]) {
    for (id, operation) in calls {
        let events = proxy.call_events(id).await;
        let req = of_type(&events, "REQUEST");
        assert_eq!(req["metadata"]["operation"], operation, "{id}");
        assert!(req["metadata"]["headers"].get("authorization").is_none());
        assert_eq!(
            of_type(&events, "RESPONSE")["metadata"]["outcome"],
            "completed",
            "{id}"
        );
    }
}

#[tokio::test]
async fn official_openai_node_sdk_works_through_the_proxy() {
    if !node_sdk_available() {
        assert!(
            !sdk_required(),
            "node and the OpenAI Node SDK are required (npm ci --prefix tests/sdk/node)"
        );
        eprintln!("skipped: node or the OpenAI Node SDK (tests/sdk/node) is not installed");
        return;
    }
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let mut node = Command::new("node");
    node.arg(format!("{NODE_SDK_DIR}/openai_sdk_calls.mjs"));
    let out = run_sdk_script(node, &proxy).await;
    assert_eq!(out["chat"], "Hello! The capital of France is Paris.");
    assert_eq!(out["stream"], "Paris is the capital.");
    assert_eq!(out["stream_usage"], 19);
    assert_eq!(out["responses"], "Hi there.");
    assert_eq!(out["responses_stream"], "Streams are fun.");
    // The vector went through as base64 and the SDK decoded it.
    let vector: Vec<f64> = serde_json::from_value(out["embedding"].clone()).unwrap();
    let expected = [0.0023064255f32, -0.009327292, 0.015797347, -0.0077780345];
    assert_eq!(vector.len(), expected.len());
    for (got, want) in vector.iter().zip(expected) {
        assert_eq!(*got as f32, want);
    }
    let sent = mock.seen();
    let asked = sent
        .iter()
        .find(|s| s.path_and_query.ends_with("/embeddings"))
        .unwrap();
    let body: Value = serde_json::from_slice(&asked.body).unwrap();
    assert_eq!(body["encoding_format"], "base64");
    assert_recorded(
        &proxy,
        [
            ("node-chat", "chat.create"),
            ("node-stream", "chat.create"),
            ("node-emb", "embeddings.create"),
            ("node-resp", "responses.create"),
            ("node-resp-stream", "responses.create"),
        ],
    )
    .await;
    // The record keeps the vector as upstream sent it.
    let events = proxy.call_events("node-emb").await;
    let stored = &of_type(&events, "RESPONSE")["metadata"]["response_data"]["data"][0];
    assert!(stored["embedding"].is_string(), "{stored}");
    let events = proxy.call_events("node-stream").await;
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(
        m["response_data"]["choices"][0]["message"]["content"],
        "Paris is the capital."
    );
    proxy.stop().await;
}

#[tokio::test]
async fn official_openai_sdk_works_through_the_proxy() {
    if !sdk_available() {
        assert!(
            !sdk_required(),
            "python3 with the openai package is required (pip install openai)"
        );
        eprintln!("skipped: python3 with the openai package is not installed");
        return;
    }
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let mut python = Command::new("python3");
    python.arg(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/sdk/openai_sdk_calls.py"
    ));
    let out = run_sdk_script(python, &proxy).await;
    assert_eq!(out["chat"], "Hello! The capital of France is Paris.");
    assert_eq!(out["stream"], "Paris is the capital.");
    assert_eq!(out["stream_usage"], 19);
    assert_eq!(out["embedding_len"], 4);
    assert_eq!(out["responses"], "Hi there.");
    assert_eq!(out["responses_stream"], "Streams are fun.");

    assert_recorded(
        &proxy,
        [
            ("sdk-chat", "chat.create"),
            ("sdk-stream", "chat.create"),
            ("sdk-emb", "embeddings.create"),
            ("sdk-resp", "responses.create"),
            ("sdk-resp-stream", "responses.create"),
        ],
    )
    .await;
    let events = proxy.call_events("sdk-stream").await;
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(
        m["response_data"]["choices"][0]["message"]["content"],
        "Paris is the capital."
    );
    proxy.stop().await;
}

//! The official OpenAI Python SDK, pointed at the proxy with `base_url`.
//!
//! Needs `python3` with the `openai` package. Without them the test says so
//! and passes, unless LLM_AUDIT_PROXY_REQUIRE_SDK_TEST=1 (CI sets it), when
//! their absence fails it.

use std::process::Command;

use serde_json::Value;

use crate::support::{of_type, MockUpstream, TestProxy};

fn sdk_available() -> bool {
    Command::new("python3")
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test]
async fn official_openai_sdk_works_through_the_proxy() {
    if !sdk_available() {
        assert!(
            std::env::var("LLM_AUDIT_PROXY_REQUIRE_SDK_TEST").as_deref() != Ok("1"),
            "python3 with the openai package is required (pip install openai)"
        );
        eprintln!("skipped: python3 with the openai package is not installed");
        return;
    }
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/openai_sdk_calls.py");
    let base_url = format!("{}/v1", proxy.proxy_url);
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("OPENAI_BASE_URL", base_url)
            .env("OPENAI_API_KEY", "sk-proj-SdkTestKey0123456789abcdefghij")
            .env_remove("HTTP_PROXY")
            .env_remove("HTTPS_PROXY")
            .env_remove("ALL_PROXY")
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "SDK script failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let out: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(out["chat"], "Hello! The capital of France is Paris.");
    assert_eq!(out["stream"], "Paris is the capital.");
    assert_eq!(out["stream_usage"], 19);
    assert_eq!(out["embedding_len"], 4);
    assert_eq!(out["responses"], "Hi there.");
    assert_eq!(out["responses_stream"], "Streams are fun.");

    for (id, operation) in [
        ("sdk-chat", "chat.create"),
        ("sdk-stream", "chat.create"),
        ("sdk-emb", "embeddings.create"),
        ("sdk-resp", "responses.create"),
        ("sdk-resp-stream", "responses.create"),
    ] {
        let events = proxy.call_events(id).await;
        let req = of_type(&events, "REQUEST");
        assert_eq!(req["metadata"]["operation"], operation);
        assert!(req["metadata"]["headers"].get("authorization").is_none());
        assert_eq!(
            of_type(&events, "RESPONSE")["metadata"]["outcome"],
            "completed"
        );
    }
    let events = proxy.call_events("sdk-stream").await;
    let m = &of_type(&events, "RESPONSE")["metadata"];
    assert_eq!(
        m["response_data"]["choices"][0]["message"]["content"],
        "Paris is the capital."
    );
    proxy.stop().await;
}

//! JSON bodies are stored as serde_json reads them, whether the record
//! writes them from a view of their text or falls back to a parsed value:
//! key order and repeated keys, escapes, numbers, deep nesting, and the
//! inputs the view leaves to serde_json.

use serde_json::Value;

use crate::support::{of_type, MockUpstream, TestProxy};

/// Sends `raw` as a JSON body to the echo route and returns the stored
/// request and response bodies.
async fn stored(proxy: &TestProxy, id: &str, raw: &str) -> (Value, Value) {
    let response = proxy
        .post_call("/v1/echo", id)
        .header("content-type", "application/json")
        .body(raw.to_owned())
        .send()
        .await
        .unwrap();
    let _ = response.bytes().await.unwrap();
    let events = proxy.call_events(id).await;
    (
        of_type(&events, "REQUEST")["metadata"]["request_data"].clone(),
        of_type(&events, "RESPONSE")["metadata"]["response_data"].clone(),
    )
}

#[tokio::test]
async fn json_bodies_are_stored_as_serde_json_reads_them() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start(&mock.url()).await;
    let deep = format!(
        "{{\"model\":\"m\",\"x\":{}1{}}}",
        "[".repeat(120),
        "]".repeat(120)
    );
    let bodies = [
        // Repeated and unsorted keys, escapes, numbers serde_json rewrites.
        r#"{"z":1,"model":"a","model":"b","n":[1.50,1e3,-0,0.1,18446744073709551616,-9223372036854775808],"s":"\u00e9\ud83d\ude00 \/ \"q\" \u0001"}"#,
        // Whitespace everywhere, an empty object and array.
        " { \"a\" : { } , \"b\" : [ ] , \"c\" : null } \n",
        // Nesting the view leaves to serde_json.
        deep.as_str(),
    ];
    for (i, raw) in bodies.iter().enumerate() {
        let want: Value = serde_json::from_str(raw).unwrap();
        let (request, response) = stored(&proxy, &format!("odd-{i}"), raw).await;
        assert_eq!(request, want, "{raw}");
        assert_eq!(response, want, "{raw}");
    }
    // A lone surrogate escape: not JSON to serde_json, so stored as text.
    let raw = r#"{"model":"m","s":"\ud800"}"#;
    let (request, response) = stored(&proxy, "lone-surrogate", raw).await;
    assert_eq!(request, Value::String(raw.to_owned()));
    assert_eq!(response, Value::String(raw.to_owned()));
    proxy.stop().await;
}

#[tokio::test]
async fn a_secret_sent_as_a_key_is_replaced_by_the_fallback() {
    let block_cards = r#"[{"name": "cards", "detectors": ["credit_card"], "action": "block", "direction": "request"}]"#;
    // Without and with a request `block` policy: the record searches the
    // body itself, or takes what the request path found.
    for extra in [None, Some(block_cards)] {
        let mock = MockUpstream::start().await;
        let mut env = vec![("LLM_AUDIT_PROXY_POLICY_PACKS", "pii-basic")];
        if let Some(policies) = extra {
            env.push(("LLM_AUDIT_PROXY_POLICIES", policies));
        }
        let proxy = TestProxy::start_with(&mock.url(), &env).await;
        let key = "sk-proj-Zq81Wn5Rt0Yp3Lk7Hd2Fb6Xc9Vm4Ns1Qa";
        let raw = format!(
            r#"{{"model":"m","metadata":{{"{key}":"x"}},"messages":[{{"role":"user","content":"mail jane.doe@example.com"}}]}}"#
        );
        let (request, response) = stored(&proxy, "key-secret", &raw).await;
        for body in [request, response] {
            let text = body.to_string();
            assert!(!text.contains(key), "{text}");
            assert!(!text.contains("jane.doe@example.com"), "{text}");
            let keys: Vec<&String> = body["metadata"].as_object().unwrap().keys().collect();
            assert_eq!(keys.len(), 1, "{text}");
            assert!(keys[0].starts_with("[REDACTED:"), "{text}");
            assert_eq!(body["model"], "m", "{text}");
        }
        proxy.stop().await;
    }
}

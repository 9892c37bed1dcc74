//! Hostile input: bodies that would blow up the store, paths that would
//! escape the upstream's prefix, methods that must not be forwarded, and
//! clients that leave at awkward moments.

use serde_json::Value;

use crate::support::mock::gzip_bomb;
use crate::support::{of_type, MockUpstream, TestProxy};

/// Capture cap used by the body tests, and the stored-body limit it gives
/// (twice the cap, at least 64 KiB).
const CAP: usize = 64 * 1024;
const STORED_LIMIT: usize = 2 * CAP;

fn json_len(v: &Value) -> usize {
    serde_json::to_string(v).unwrap().len()
}

#[tokio::test]
async fn gzip_bombs_and_nul_bodies_store_bounded_rows() {
    let mock = MockUpstream::start().await;
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[("LLM_AUDIT_PROXY_CAPTURE_MAX_BODY_BYTES", "65536")],
    )
    .await;

    // A request body that decodes to 64 MiB of NULs.
    let resp = proxy
        .post_call("/v1/chat/completions", "bomb-request")
        .header("content-type", "application/json")
        .header("content-encoding", "gzip")
        .body(gzip_bomb(64 << 20))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.bytes().await.unwrap();

    // An answer that does the same.
    let resp = proxy
        .post_call("/v1/gzip-bomb", "bomb-response")
        .header("content-type", "application/json")
        .body(r#"{"model":"gpt-4o-mini"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.bytes().await.unwrap();

    // A plain body that is mostly NULs.
    let mut nul_rich = br#"{"prompt": ""#.to_vec();
    nul_rich.extend(std::iter::repeat_n(0u8, 32 * 1024));
    let resp = proxy
        .post_call("/v1/chat/completions", "nul-request")
        .header("content-type", "application/json")
        .body(nul_rich.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);

    for id in ["bomb-request", "bomb-response", "nul-request"] {
        let events = proxy.call_events(id).await;
        for event in &events {
            assert!(
                json_len(event) <= STORED_LIMIT + 8 * 1024,
                "{id}: {} event of {} bytes",
                event["event_type"],
                json_len(event)
            );
        }
        let req = &of_type(&events, "REQUEST")["metadata"];
        let resp = &of_type(&events, "RESPONSE")["metadata"];
        assert!(json_len(&req["request_data"]) <= STORED_LIMIT);
        assert!(json_len(&resp["response_data"]) <= STORED_LIMIT);
        if id == "bomb-response" {
            let data = &resp["response_data"];
            assert_eq!(data["binary"], true, "{data}");
            assert_eq!(data["bytes"], CAP, "decoded no further than the cap");
            assert_eq!(resp["truncated"], true);
        } else {
            let data = &req["request_data"];
            assert_eq!(data["binary"], true, "{data}");
            assert_eq!(data["sha256"].as_str().unwrap().len(), 64);
            if id == "nul-request" {
                assert_eq!(data["bytes"], nul_rich.len());
                assert_eq!(req["truncated"], false);
            } else {
                assert_eq!(data["bytes"], CAP, "decoded no further than the cap");
                assert_eq!(req["truncated"], true);
            }
        }
    }
    proxy.stop().await;
}

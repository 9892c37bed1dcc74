use super::*;

#[test]
fn chat_completion() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-2024-08-06",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"},
            {"index": 1, "message": {"role": "assistant", "content": "yo"}, "finish_reason": "length"},
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15,
                  "prompt_tokens_details": {"cached_tokens": 0}},
    });
    assert_eq!(
        summarize("chat.create", &body),
        Summary {
            model: Some("gpt-4o-2024-08-06".into()),
            usage: Some(json!({"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15})),
            finish_reason: Some("stop".into()),
        }
    );
}

#[test]
fn responses_api_usage_and_status() {
    let body = json!({
        "object": "response", "model": "gpt-4.1-2025-04-14", "status": "completed",
        "usage": {"input_tokens": 81, "output_tokens": 35, "total_tokens": 116,
                  "input_tokens_details": {"cached_tokens": 0}},
    });
    let s = summarize("responses.create", &body);
    assert_eq!(
        s.usage,
        Some(json!({"prompt_tokens": 81, "completion_tokens": 35, "total_tokens": 116}))
    );
    assert_eq!(s.finish_reason.as_deref(), Some("completed"));

    let incomplete = json!({"object": "response", "status": "incomplete",
                            "incomplete_details": {"reason": "max_output_tokens"}});
    assert_eq!(
        summarize("responses.create", &incomplete)
            .finish_reason
            .as_deref(),
        Some("max_output_tokens")
    );
    let bare = json!({"object": "response", "status": "incomplete"});
    assert_eq!(
        summarize("responses.create", &bare)
            .finish_reason
            .as_deref(),
        Some("incomplete")
    );
    let failed = json!({"status": "failed", "incomplete_details": {"reason": "x"}});
    assert_eq!(
        summarize("responses.create", &failed)
            .finish_reason
            .as_deref(),
        Some("failed")
    );
}

#[test]
fn embeddings_have_no_completion_tokens() {
    let body = json!({"object": "list", "model": "text-embedding-3-small",
                      "usage": {"prompt_tokens": 8, "total_tokens": 8}});
    let s = summarize("embeddings.create", &body);
    assert_eq!(
        s.usage,
        Some(json!({"prompt_tokens": 8, "completion_tokens": 0, "total_tokens": 8}))
    );
    assert_eq!(s.finish_reason, None);
    let no_total = json!({"usage": {"prompt_tokens": 5}});
    assert_eq!(
        summarize("embeddings.create", &no_total).usage,
        Some(json!({"prompt_tokens": 5, "completion_tokens": 0, "total_tokens": 5}))
    );
}

#[test]
fn missing_total_is_computed_and_floats_are_accepted() {
    let body = json!({"usage": {"prompt_tokens": 4.0, "completion_tokens": 6}});
    assert_eq!(
        summarize("chat.create", &body).usage,
        Some(json!({"prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10}))
    );
}

#[test]
fn absent_or_null_usage_and_model() {
    let body = json!({"model": "", "usage": null, "choices": [{"finish_reason": null}]});
    assert_eq!(summarize("chat.create", &body), Summary::default());
    assert_eq!(summarize("chat.create", &json!("text")), Summary::default());
    assert_eq!(
        summarize("chat.create", &json!({"usage": {"foo": 1}})).usage,
        None
    );
}

#[test]
fn legacy_completions() {
    let body = json!({"object": "text_completion", "model": "gpt-3.5-turbo-instruct",
                      "choices": [{"text": "x", "index": 0, "finish_reason": "length"}],
                      "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}});
    let s = summarize("completions.create", &body);
    assert_eq!(s.finish_reason.as_deref(), Some("length"));
    assert_eq!(s.usage.unwrap()["total_tokens"], 12);
}

#[test]
fn request_model_and_stream_flag() {
    assert_eq!(
        request_model_and_stream(&json!({"model": "gpt-4o", "stream": true})),
        (Some("gpt-4o".into()), true)
    );
    assert_eq!(
        request_model_and_stream(&json!({"model": "gpt-4o", "stream": "yes"})),
        (Some("gpt-4o".into()), false)
    );
    assert_eq!(request_model_and_stream(&json!({})), (None, false));
    assert_eq!(request_model_and_stream(&Value::Null), (None, false));
    assert_eq!(request_model_and_stream(&json!("text")), (None, false));
}

#[test]
fn request_model_from_multipart_fields() {
    let body = json!({"multipart": [
        {"name": "file", "filename": "a.wav", "content_type": "audio/wav", "bytes": 1000},
        {"name": "model", "filename": null, "content_type": null, "bytes": 9, "text": "whisper-1"},
        {"name": "stream", "filename": null, "content_type": null, "bytes": 4, "text": "true"},
    ]});
    assert_eq!(
        request_model_and_stream(&body),
        (Some("whisper-1".into()), true)
    );
}

#[test]
fn a_view_of_the_raw_body_summarises_as_its_parsed_value() {
    use crate::capture::json_view::JsonView;

    let texts = [
        r#"{"model":"gpt-4o","choices":[{"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":4,"total_tokens":7}}"#,
        r#"{"object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"usage":{"input_tokens":2.0,"output_tokens":5}}"#,
        r#"{"model":"","usage":{"total_tokens":9,"prompt_tokens":4},"choices":[]}"#,
        r#"{"model":"a","model":"b\u0021","stream":true,"usage":{"foo":1}}"#,
        r#"{"multipart":[{"name":"model","text":" whisper-1 "},{"name":"stream","text":"TRUE"}]}"#,
        r#"{"multipart":[]}"#,
        r#"{"usage":{"prompt_tokens":-1,"completion_tokens":1e3}}"#,
        r#"["model"]"#,
        r#""text""#,
        "null",
    ];
    for text in texts {
        let value: Value = serde_json::from_str(text).unwrap();
        let view = JsonView::parse(text.as_bytes()).unwrap();
        let cleaned = Cleaned {
            at: view.root(),
            replaced: &[],
        };
        for operation in ["chat.create", "responses.create", "embeddings.create"] {
            assert_eq!(
                summarize(operation, cleaned),
                summarize(operation, &value),
                "{text}"
            );
        }
        assert_eq!(
            request_model_and_stream(cleaned),
            request_model_and_stream(&value),
            "{text}"
        );
    }
    // A replaced string reads as its replacement.
    let text = r#"{"model":"sk-secret","stream":true}"#;
    let view = JsonView::parse(text.as_bytes()).unwrap();
    let model = view.root().get("model").unwrap().id();
    let replaced = [(model, "[REDACTED:X]".to_owned())];
    let cleaned = Cleaned {
        at: view.root(),
        replaced: &replaced,
    };
    assert_eq!(
        request_model_and_stream(cleaned),
        (Some("[REDACTED:X]".into()), true)
    );
}

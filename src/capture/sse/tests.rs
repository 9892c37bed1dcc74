use serde_json::json;

use super::*;

const CHAT_TEXT: &str = include_str!("fixtures/chat_text.sse");
const CHAT_TOOLS: &str = include_str!("fixtures/chat_parallel_tools.sse");
const CHAT_ERROR: &str = include_str!("fixtures/chat_error.sse");
const COMPLETIONS: &str = include_str!("fixtures/completions.sse");
const RESPONSES: &str = include_str!("fixtures/responses_function_call.sse");

fn ev(event: Option<&str>, data: &str) -> SseEvent<'static> {
    SseEvent {
        event: event.map(|e| Cow::Owned(e.to_owned())),
        data: Cow::Owned(data.to_owned()),
    }
}

fn fold(operation: &str, body: &str) -> Reassembled {
    checked(operation, &parse_events(body.as_bytes()))
}

/// Folds into a value, checking that the text fold writes what
/// serialising that value (with its `stream_error`) prints.
fn checked(operation: &str, events: &[SseEvent<'_>]) -> Reassembled {
    let folded = reassemble(operation, events);
    let expected = value_fold_text(operation, events);
    let text = reassemble_text(operation, events).expect("every event is read by the view");
    assert_eq!(text, expected, "{operation}: {events:?}");
    folded
}

/// The value fold's answer as the record stored it: serialised, with the
/// first error as `stream_error`.
fn value_fold_text(operation: &str, events: &[SseEvent<'_>]) -> FoldedText {
    let folded = reassemble(operation, events);
    let mut value = folded.response;
    if let (Some(error), Value::Object(object)) = (folded.error, &mut value) {
        object.insert("stream_error".into(), error);
    }
    FoldedText {
        json: serde_json::to_string(&value).expect("a value serialises"),
        complete: folded.complete,
    }
}

/// The body cut just before the first line containing `marker`.
fn cut_before<'a>(body: &'a str, marker: &str) -> &'a str {
    let at = body.find(marker).unwrap();
    let line_start = body[..at].rfind('\n').map_or(0, |i| i + 1);
    &body[..line_start]
}

// --- parsing ---

#[test]
fn content_type_detection() {
    assert!(is_event_stream(Some("text/event-stream")));
    assert!(is_event_stream(Some("Text/Event-Stream; charset=utf-8")));
    assert!(!is_event_stream(Some("application/json")));
    assert!(!is_event_stream(None));
}

#[test]
fn line_endings_are_all_accepted() {
    for body in [
        "data: a\n\ndata: b\n\n",
        "data: a\r\n\r\ndata: b\r\n\r\n",
        "data: a\r\rdata: b\r\r",
        "data: a\n\r\ndata: b\r\n",
    ] {
        let events = parse_events(body.as_bytes());
        assert_eq!(events, vec![ev(None, "a"), ev(None, "b")], "{body:?}");
    }
}

#[test]
fn multi_line_data_comments_and_fields() {
    let body = ": keep-alive\n\
                event: update\n\
                id: 7\n\
                retry: 100\n\
                data: first\n\
                data:second\n\
                data:  two spaces\n\
                \n\
                : another comment\n\
                \n\
                event: ignored-without-data\n\
                \n\
                data\n\
                \n";
    assert_eq!(
        parse_events(body.as_bytes()),
        vec![
            ev(Some("update"), "first\nsecond\n two spaces"),
            ev(None, ""),
        ]
    );
}

#[test]
fn a_last_event_without_a_blank_line_still_counts() {
    assert_eq!(
        parse_events(b"data: a\n\ndata: b"),
        vec![ev(None, "a"), ev(None, "b")]
    );
    assert_eq!(parse_events(b"data: {\"cut"), vec![ev(None, "{\"cut")]);
    assert!(parse_events(b"").is_empty());
    assert!(parse_events(b": only a comment\n\n").is_empty());
}

#[test]
fn bom_and_bad_utf8_are_tolerated() {
    let events = parse_events(b"\xEF\xBB\xBFdata: ok\n\ndata: \xff\xfe\n\n");
    assert_eq!(events[0], ev(None, "ok"));
    assert_eq!(events[1].data, "\u{FFFD}\u{FFFD}");
}

#[test]
fn empty_event_name_is_none() {
    assert_eq!(parse_events(b"event:\ndata: x\n\n"), vec![ev(None, "x")]);
}

// --- chat.create ---

#[test]
fn chat_text_stream_folds_into_a_chat_completion() {
    let r = fold("chat.create", CHAT_TEXT);
    assert!(r.complete);
    assert_eq!(r.error, None);
    assert_eq!(
        r.response,
        json!({
            "id": "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT",
            "object": "chat.completion",
            "created": 1741569952,
            "model": "gpt-4o-mini-2024-07-18",
            "service_tier": "default",
            "system_fingerprint": "fp_06737a9306",
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! How can I assist you today?"},
                "finish_reason": "stop",
                "logprobs": null,
            }],
            "usage": {
                "prompt_tokens": 19,
                "completion_tokens": 10,
                "total_tokens": 29,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {
                    "reasoning_tokens": 0,
                    "audio_tokens": 0,
                    "accepted_prediction_tokens": 0,
                    "rejected_prediction_tokens": 0,
                },
            },
        })
    );
}

#[test]
fn parallel_tool_calls_are_joined_by_index() {
    let r = fold("chat.create", CHAT_TOOLS);
    assert!(r.complete);
    let choice = &r.response["choices"][0];
    assert_eq!(choice["finish_reason"], "tool_calls");
    assert_eq!(
        choice["message"],
        json!({
            "role": "assistant",
            "content": null,
            "tool_calls": [
                {
                    "id": "call_Kx3VG0jV8gYqHn5pQ2aTfN1d",
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "arguments": "{\"location\": \"Paris, France\", \"unit\": \"celsius\"}",
                    },
                },
                {
                    "id": "call_9QmZt2XcWb4Rk7sLd1NvPe0A",
                    "type": "function",
                    "function": {
                        "name": "get_local_time",
                        "arguments": "{\"timezone\": \"Europe/Paris\"}",
                    },
                },
            ],
        })
    );
    // Without include_usage there is no usage, but the key is there.
    assert_eq!(r.response["usage"], Value::Null);
    for call in choice["message"]["tool_calls"].as_array().unwrap() {
        let args = call["function"]["arguments"].as_str().unwrap();
        serde_json::from_str::<Value>(args).unwrap();
    }
}

#[test]
fn interleaved_tool_call_fragments_keep_their_order_per_index() {
    let events = vec![
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"a","type":"function","function":{"name":"f","arguments":"[1"}},{"index":1,"id":"b","type":"function","function":{"name":"g","arguments":"[3"}}]}}]}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":1,"function":{"arguments":",4]"}}]}}]}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"function":{"arguments":",2]"}}]}}]}"#,
        ),
    ];
    let r = checked("chat.create", &events);
    let calls = &r.response["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["function"]["arguments"], "[1,2]");
    assert_eq!(calls[1]["function"]["arguments"], "[3,4]");
    assert!(!r.complete);
}

#[test]
fn tool_calls_without_index_are_told_apart_by_id() {
    let events = vec![
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"a","function":{"name":"f","arguments":"{"}}]}}]}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"function":{"arguments":"}"}}]}}]}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"tool_calls":[{"id":"b","function":{"name":"g","arguments":"[]"}}]}}]}"#,
        ),
    ];
    let r = checked("chat.create", &events);
    let calls = &r.response["choices"][0]["message"]["tool_calls"];
    assert_eq!(calls[0]["id"], "a");
    assert_eq!(calls[0]["function"]["arguments"], "{}");
    assert_eq!(calls[1]["id"], "b");
    assert_eq!(calls[1]["function"]["name"], "g");
}

#[test]
fn legacy_function_call_deltas() {
    let events = vec![
        ev(
            None,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-3.5-turbo-0613","choices":[{"index":0,"delta":{"role":"assistant","content":null,"function_call":{"name":"lookup","arguments":""}},"finish_reason":null}]}"#,
        ),
        ev(
            None,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-3.5-turbo-0613","choices":[{"index":0,"delta":{"function_call":{"arguments":"{\"q\":"}},"finish_reason":null}]}"#,
        ),
        ev(
            None,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-3.5-turbo-0613","choices":[{"index":0,"delta":{"function_call":{"arguments":"\"x\"}"}},"finish_reason":null}]}"#,
        ),
        ev(
            None,
            r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-3.5-turbo-0613","choices":[{"index":0,"delta":{},"finish_reason":"function_call"}]}"#,
        ),
    ];
    let r = checked("chat.create", &events);
    assert!(r.complete, "every choice finished");
    let message = &r.response["choices"][0]["message"];
    assert_eq!(
        message["function_call"],
        json!({"name": "lookup", "arguments": "{\"q\":\"x\"}"})
    );
    assert_eq!(message["content"], Value::Null);
    assert!(message.get("tool_calls").is_none());
}

#[test]
fn several_choices_fold_separately() {
    let events = vec![
        ev(
            None,
            r#"{"id":"x","choices":[{"index":1,"delta":{"role":"assistant","content":"B"}}]}"#,
        ),
        ev(
            None,
            r#"{"id":"x","choices":[{"index":0,"delta":{"role":"assistant","content":"A"}}]}"#,
        ),
        ev(
            None,
            r#"{"id":"x","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":"stop"}]}"#,
        ),
        ev(
            None,
            r#"{"id":"x","choices":[{"index":1,"delta":{"content":"b"}}]}"#,
        ),
    ];
    let r = checked("chat.create", &events);
    assert!(!r.complete, "choice 1 never finished");
    assert_eq!(r.response["choices"][0]["index"], 0);
    assert_eq!(r.response["choices"][0]["message"]["content"], "Aa");
    assert_eq!(r.response["choices"][1]["message"]["content"], "Bb");
    assert_eq!(r.response["choices"][1]["finish_reason"], Value::Null);
}

#[test]
fn refusals_and_logprobs() {
    let events = vec![
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":null,"refusal":""},"logprobs":null}]}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"refusal":"I'm sorry, "},"logprobs":null}]}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"refusal":"I can't help."},"logprobs":null,"finish_reason":"stop"}]}"#,
        ),
    ];
    let r = checked("chat.create", &events);
    let message = &r.response["choices"][0]["message"];
    assert_eq!(message["refusal"], "I'm sorry, I can't help.");
    assert_eq!(message["content"], Value::Null);

    let events = vec![
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"content":"Hi"},"logprobs":{"content":[{"token":"Hi","logprob":-0.1,"bytes":[72,105],"top_logprobs":[]}]}}]}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"content":"!"},"logprobs":{"content":[{"token":"!","logprob":-0.2,"bytes":[33],"top_logprobs":[]}]}}]}"#,
        ),
    ];
    let r = checked("chat.create", &events);
    let lp = r.response["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(lp.len(), 2);
    assert_eq!(lp[1]["token"], "!");
}

#[test]
fn empty_content_without_tool_calls_stays_an_empty_string() {
    let events = vec![
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
        ),
    ];
    let r = checked("chat.create", &events);
    assert_eq!(r.response["choices"][0]["message"]["content"], "");
}

#[test]
fn a_chat_stream_cut_short_keeps_what_arrived() {
    let body = cut_before(CHAT_TEXT, "\" assist\"");
    let r = fold("chat.create", body);
    assert!(!r.complete);
    assert_eq!(
        r.response["choices"][0]["message"]["content"],
        "Hello! How can I"
    );
    assert_eq!(r.response["choices"][0]["finish_reason"], Value::Null);
    assert_eq!(r.response["usage"], Value::Null);
    assert_eq!(r.response["model"], "gpt-4o-mini-2024-07-18");

    // Cut in the middle of a line: the partial last event is skipped.
    let at = CHAT_TEXT.find("\" can\"").unwrap();
    let r = fold("chat.create", &CHAT_TEXT[..at]);
    assert_eq!(r.response["choices"][0]["message"]["content"], "Hello! How");
}

#[test]
fn a_tool_call_stream_cut_short_keeps_partial_arguments() {
    let body = cut_before(CHAT_TOOLS, "call_9QmZt2XcWb4Rk7sLd1NvPe0A");
    let r = fold("chat.create", body);
    assert!(!r.complete);
    let calls = r.response["choices"][0]["message"]["tool_calls"]
        .as_array()
        .unwrap();
    assert_eq!(calls.len(), 1);
    assert_eq!(
        calls[0]["function"]["arguments"],
        "{\"location\": \"Paris, France\", \"unit\": \"celsius\"}"
    );
}

#[test]
fn done_without_finish_reason_is_complete() {
    let events = vec![
        ev(None, r#"{"choices":[{"index":0,"delta":{"content":"x"}}]}"#),
        ev(None, "[DONE]"),
    ];
    assert!(checked("chat.create", &events).complete);
}

#[test]
fn azure_prompt_filter_chunk_does_not_blank_the_header() {
    let events = vec![
        ev(
            None,
            r#"{"choices":[],"created":0,"id":"","model":"","object":"","prompt_filter_results":[{"prompt_index":0,"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}}}]}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"content_filter_results":{},"delta":{"content":"","role":"assistant"},"finish_reason":null,"index":0,"logprobs":null}],"created":1741570100,"id":"chatcmpl-az1","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"content_filter_results":{"hate":{"filtered":false,"severity":"safe"}},"delta":{"content":"Hi"},"finish_reason":null,"index":0,"logprobs":null}],"created":1741570100,"id":"chatcmpl-az1","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"}"#,
        ),
        ev(
            None,
            r#"{"choices":[{"content_filter_results":{},"delta":{},"finish_reason":"stop","index":0,"logprobs":null}],"created":1741570100,"id":"chatcmpl-az1","model":"gpt-4o-2024-11-20","object":"chat.completion.chunk","system_fingerprint":"fp_b705f0c291"}"#,
        ),
        ev(None, "[DONE]"),
    ];
    let r = checked("chat.create", &events);
    assert_eq!(r.response["id"], "chatcmpl-az1");
    assert_eq!(r.response["model"], "gpt-4o-2024-11-20");
    assert_eq!(r.response["created"], 1741570100);
    assert_eq!(r.response["choices"][0]["message"]["content"], "Hi");
    assert_eq!(
        r.response["prompt_filter_results"][0]["prompt_index"],
        json!(0)
    );
    assert_eq!(
        r.response["choices"][0]["content_filter_results"]["hate"]["filtered"],
        false
    );
}

#[test]
fn an_in_band_error_is_reported() {
    let r = fold("chat.create", CHAT_ERROR);
    assert!(!r.complete);
    assert_eq!(r.error.unwrap()["type"], "server_error");
    assert_eq!(r.response["choices"][0]["message"]["content"], "The answer");
}

#[test]
fn an_error_only_stream_keeps_its_events() {
    let events = vec![ev(
        Some("error"),
        r#"{"message":"Rate limit reached","type":"rate_limit_error"}"#,
    )];
    let r = checked("chat.create", &events);
    assert_eq!(r.error.unwrap()["type"], "rate_limit_error");
    assert_eq!(r.response["object"], "sse_events");
    assert_eq!(r.response["events"][0]["message"], "Rate limit reached");
}

// --- completions.create ---

#[test]
fn legacy_completions_fold() {
    let r = fold("completions.create", COMPLETIONS);
    assert!(r.complete);
    assert_eq!(
        r.response,
        json!({
            "id": "cmpl-AzY1kP4bS2u9Xc8Vn3Lq0RtW6mJhD",
            "object": "text_completion",
            "created": 1739204000,
            "model": "gpt-3.5-turbo-instruct",
            "choices": [{
                "index": 0,
                "text": "\n\nThis is a test.",
                "finish_reason": "stop",
                "logprobs": null,
            }],
            "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12},
        })
    );
}

// --- responses.create ---

#[test]
fn a_completed_responses_stream_is_the_final_response() {
    let r = fold("responses.create", RESPONSES);
    assert!(r.complete);
    assert_eq!(r.error, None);
    let events = parse_events(RESPONSES.as_bytes());
    let last: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(r.response, last["response"]);
    assert_eq!(r.response["status"], "completed");
    assert_eq!(r.response["output"][1]["type"], "function_call");
    assert_eq!(r.response["usage"]["output_tokens"], 35);
}

#[test]
fn a_responses_stream_cut_in_function_arguments_is_rebuilt() {
    let body = cut_before(RESPONSES, "\"delta\":\"Boston\"");
    let r = fold("responses.create", body);
    assert!(!r.complete);
    let resp = &r.response;
    assert_eq!(
        resp["id"],
        "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c45c1d41"
    );
    assert_eq!(resp["status"], "in_progress");
    let output = resp["output"].as_array().unwrap();
    assert_eq!(output.len(), 2);
    assert_eq!(output[0]["status"], "completed");
    assert_eq!(
        output[0]["content"][0]["text"],
        "Let me check the weather in Boston."
    );
    assert_eq!(output[1]["type"], "function_call");
    assert_eq!(output[1]["name"], "get_current_weather");
    assert_eq!(output[1]["call_id"], "call_unLAR8MvFNptuiZK6K6HCy5k");
    assert_eq!(output[1]["arguments"], "{\"location\":\"");
    assert_eq!(output[1]["status"], "in_progress");
}

#[test]
fn a_responses_stream_cut_in_text_keeps_the_deltas() {
    let body = cut_before(RESPONSES, "\"delta\":\" weather\"");
    let r = fold("responses.create", body);
    assert!(!r.complete);
    let output = r.response["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    assert_eq!(output[0]["type"], "message");
    assert_eq!(
        output[0]["content"],
        json!([{"type": "output_text", "annotations": [], "logprobs": [], "text": "Let me check the"}])
    );
}

#[test]
fn responses_events_without_event_lines_are_recognised_by_type() {
    let events = vec![
        ev(
            None,
            r#"{"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":"Hi"}"#,
        ),
        ev(
            None,
            r#"{"type":"response.output_text.delta","output_index":0,"content_index":0,"delta":" there"}"#,
        ),
    ];
    let r = checked("responses.create", &events);
    assert!(!r.complete);
    assert_eq!(r.response["object"], "response");
    assert_eq!(r.response["output"][0]["role"], "assistant");
    assert_eq!(r.response["output"][0]["content"][0]["text"], "Hi there");
}

#[test]
fn failed_and_incomplete_responses_are_terminal() {
    let failed = vec![
        ev(
            Some("response.created"),
            r#"{"type":"response.created","response":{"id":"resp_1","object":"response","status":"in_progress","output":[]}}"#,
        ),
        ev(
            Some("response.failed"),
            r#"{"type":"response.failed","response":{"id":"resp_1","object":"response","status":"failed","error":{"code":"server_error","message":"The model failed to generate a response."},"output":[]}}"#,
        ),
    ];
    let r = checked("responses.create", &failed);
    assert!(r.complete);
    assert_eq!(r.response["status"], "failed");
    assert_eq!(r.error.unwrap()["code"], "server_error");

    let incomplete = vec![ev(
        Some("response.incomplete"),
        r#"{"type":"response.incomplete","response":{"id":"resp_2","object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},"output":[]}}"#,
    )];
    let r = checked("responses.create", &incomplete);
    assert!(r.complete);
    assert_eq!(
        r.response["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    assert_eq!(r.error, None);
}

#[test]
fn a_responses_error_event_is_reported() {
    let events = vec![
        ev(
            Some("response.created"),
            r#"{"type":"response.created","response":{"id":"resp_3","object":"response","status":"in_progress","output":[]}}"#,
        ),
        ev(
            Some("error"),
            r#"{"type":"error","code":"ERR_SOMETHING","message":"Something went wrong","param":null,"sequence_number":1}"#,
        ),
    ];
    let r = checked("responses.create", &events);
    assert!(!r.complete);
    assert_eq!(r.error.unwrap()["code"], "ERR_SOMETHING");
    assert_eq!(r.response["id"], "resp_3");
    assert_eq!(r.response["output"], json!([]));
}

// --- anything else ---

#[test]
fn other_operations_keep_the_events() {
    let events = vec![
        ev(Some("progress"), r#"{"pct":50}"#),
        ev(None, "plain text"),
        ev(None, "[DONE]"),
    ];
    let r = checked("POST /v1/custom", &events);
    assert!(r.complete);
    assert_eq!(
        r.response,
        json!({"object": "sse_events", "events": [{"pct": 50}, "plain text", "[DONE]"]})
    );
}

#[test]
fn a_chat_stream_of_unknown_shape_keeps_the_events() {
    let events = vec![ev(None, r#"{"token":"a"}"#), ev(None, r#"{"token":"b"}"#)];
    let r = checked("chat.create", &events);
    assert_eq!(r.response["object"], "sse_events");
    assert!(!r.complete);
}

#[test]
fn raw_events_are_capped() {
    let events: Vec<SseEvent> = (0..MAX_RAW_EVENTS + 5)
        .map(|i| ev(None, &i.to_string()))
        .collect();
    let r = checked("audio.transcribe", &events);
    assert_eq!(
        r.response["events"].as_array().unwrap().len(),
        MAX_RAW_EVENTS
    );
    assert_eq!(r.response["omitted_events"], 5);
}

mod text_fold;

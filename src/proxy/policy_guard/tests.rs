use super::*;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use futures_util::StreamExt;
use http::HeaderMap;
use http_body_util::{BodyExt, StreamBody};

use crate::policy::PolicyDef;

const CARD: &str = "4111 1111 1111 1111";

fn policies() -> Arc<PolicySet> {
    Arc::new(
        PolicySet::compile(&[PolicyDef {
            name: Some("pci".into()),
            detectors: vec!["credit_card".into()],
            action: Some("block".into()),
            direction: Some("response".into()),
            ..Default::default()
        }])
        .unwrap(),
    )
}

/// One `chat.completion.chunk` event as OpenAI sends it.
fn chat_event(choice: u64, delta: Value, finish: Option<&str>) -> String {
    let chunk = json!({
        "id": "chatcmpl-9uQ2mZ8kL1xYb3TnR7aVfE0cD4sHg",
        "object": "chat.completion.chunk",
        "created": 1_723_046_400,
        "model": "gpt-4o-mini-2024-07-18",
        "system_fingerprint": "fp_48196bc67a",
        "choices": [{"index": choice, "delta": delta, "logprobs": null, "finish_reason": finish}],
    });
    format!("data: {chunk}\n\n")
}

fn content(text: &str) -> String {
    chat_event(0, json!({"content": text}), None)
}

/// A chat stream: role chunk, one chunk per piece, stop chunk, `[DONE]`.
fn chat_stream(pieces: &[&str]) -> String {
    let mut s = chat_event(
        0,
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    );
    for p in pieces {
        s.push_str(&content(p));
    }
    s.push_str(&chat_event(0, json!({}), Some("stop")));
    s.push_str("data: [DONE]\n\n");
    s
}

/// `text` cut into frames of `size` bytes.
fn frames(text: &str, size: usize) -> Vec<Bytes> {
    text.as_bytes()
        .chunks(size)
        .map(Bytes::copy_from_slice)
        .collect()
}

/// `text` cut between the two line ends that close each event, so the app
/// already holds an event whose dispatching empty line is in the next frame.
fn frames_mid_event_end(text: &str, newline: &str) -> Vec<Bytes> {
    let end = newline.repeat(2);
    let mut cuts = vec![0];
    let mut from = 0;
    while let Some(at) = text[from..].find(&end) {
        cuts.push(from + at + newline.len());
        from += at + end.len();
    }
    cuts.push(text.len());
    cuts.windows(2)
        .map(|w| Bytes::copy_from_slice(&text.as_bytes()[w[0]..w[1]]))
        .collect()
}

/// Flips its flag when dropped, to see upstream's body go.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[derive(Debug, Default)]
struct Outcome {
    frames: Vec<Bytes>,
    error: Option<String>,
    trailers: Option<HeaderMap>,
    blocked: Vec<Verdict>,
    /// Upstream frames polled.
    polled: usize,
    upstream_dropped: bool,
}

impl Outcome {
    fn bytes(&self) -> Vec<u8> {
        self.frames.concat()
    }

    fn text(&self) -> String {
        String::from_utf8(self.bytes()).unwrap()
    }
}

async fn run(items: Vec<Result<Frame<Bytes>, String>>) -> Outcome {
    let dropped = Arc::new(AtomicBool::new(false));
    let polled = Arc::new(Mutex::new(0usize));
    let (flag, counter) = (SetOnDrop(dropped.clone()), polled.clone());
    let stream = futures_util::stream::iter(items).map(move |item| {
        let _ = &flag;
        *counter.lock().unwrap() += 1;
        item
    });
    let blocked = Arc::new(Mutex::new(Vec::new()));
    let sink = blocked.clone();
    let mut guard = StreamGuard::new(
        StreamBody::new(stream),
        policies(),
        Box::new(move |v| sink.lock().unwrap().push(v)),
    );
    let mut out = Outcome::default();
    while let Some(frame) = guard.frame().await {
        match frame {
            Ok(frame) => match frame.into_data() {
                Ok(data) => out.frames.push(data),
                Err(frame) => out.trailers = frame.into_trailers().ok(),
            },
            Err(error) => {
                out.error = Some(error.to_string());
                break;
            }
        }
    }
    assert!(out.error.is_some() || guard.is_end_stream());
    out.upstream_dropped = dropped.load(Ordering::SeqCst);
    drop(guard);
    out.blocked = std::mem::take(&mut *blocked.lock().unwrap());
    out.polled = *polled.lock().unwrap();
    out
}

async fn run_frames(frames: Vec<Bytes>) -> Outcome {
    run(frames.into_iter().map(|b| Ok(Frame::data(b))).collect()).await
}

/// The `data` of each event an SSE client dispatches from `bytes`, per the
/// WHATWG parsing rules.
fn client_events(bytes: &[u8]) -> Vec<String> {
    let text = std::str::from_utf8(bytes).unwrap();
    let (mut events, mut data, mut has_data) = (Vec::new(), String::new(), false);
    let mut rest = text;
    while let Some(end) = rest.find(['\r', '\n']) {
        let line = &rest[..end];
        let skip = if rest[end..].starts_with("\r\n") {
            2
        } else {
            1
        };
        rest = &rest[end + skip..];
        if line.is_empty() {
            if has_data {
                events.push(std::mem::take(&mut data));
            }
            has_data = false;
        } else if let Some(value) = line.strip_prefix("data:") {
            if has_data {
                data.push('\n');
            }
            data.push_str(value.strip_prefix(' ').unwrap_or(value));
            has_data = true;
        }
    }
    events
}

fn cut_suffix() -> String {
    "data: {\"error\":{\"code\":\"policy_violation\",\"message\":\"Response blocked by compliance \
     policy \\\"pci\\\": it contains CREDIT_CARD.\",\"param\":null,\"policy\":\"pci\",\"type\":\
     \"policy_violation\"}}\n\ndata: [DONE]\n\n"
        .to_owned()
}

/// Checks a cut stream as the app sees it: every event before the error is
/// a whole upstream event, then the error, then `[DONE]`.
fn assert_cut(out: &Outcome, original: &str) {
    let text = out.text();
    assert!(text.ends_with(&cut_suffix()), "{text}");
    let forwarded = &text[..text.len() - cut_suffix().len()];
    let forwarded = forwarded.trim_end_matches(['\r', '\n']);
    assert!(original.starts_with(forwarded), "{text}");
    let events = client_events(text.as_bytes());
    let (last, rest) = events.split_last().unwrap();
    assert_eq!(last, "[DONE]");
    let (error, clean) = rest.split_last().unwrap();
    let error: Value = serde_json::from_str(error).unwrap();
    assert_eq!(error["error"]["code"], "policy_violation");
    assert_eq!(error["error"]["policy"], "pci");
    for event in clean {
        let _: Value = serde_json::from_str(event).unwrap();
    }
    assert_eq!(out.blocked.len(), 1);
    assert_eq!(out.blocked[0].policy_name, "pci");
    assert!(out.upstream_dropped);
}

#[test]
fn blocked_response_json_names_the_policy_not_the_value() {
    let mut findings = BTreeMap::new();
    findings.insert("CREDIT_CARD", 1);
    let verdict = Verdict {
        policy_name: "pci".into(),
        action: crate::policy::Action::Block,
        severity: crate::policy::Severity::High,
        direction: Direction::Response,
        findings,
        passed: false,
    };
    assert_eq!(
        blocked_response_json(&verdict),
        json!({"error": {
            "message": "Response blocked by compliance policy \"pci\": it contains CREDIT_CARD.",
            "type": "policy_violation",
            "param": null,
            "code": "policy_violation",
            "policy": "pci",
        }})
    );
    assert_eq!(
        cut_frame(b"", &verdict),
        Bytes::from(cut_suffix().into_bytes())
    );
}

#[tokio::test]
async fn clean_stream_passes_byte_identical() {
    let stream = chat_stream(&["Hello", "! Your order ", "#1234 ships ", "today."]);
    // Frames on event boundaries pass one for one.
    let events: Vec<Bytes> = stream
        .split_inclusive("\n\n")
        .map(|e| Bytes::copy_from_slice(e.as_bytes()))
        .collect();
    let out = run_frames(events.clone()).await;
    assert_eq!(out.frames, events);
    assert!(out.blocked.is_empty());
    assert!(!out.text().is_empty() && out.text().ends_with("data: [DONE]\n\n"));
    // Any other framing keeps the bytes.
    for size in [1, 7, 50, 4096] {
        let out = run_frames(frames(&stream, size)).await;
        assert_eq!(out.text(), stream, "frame size {size}");
        assert!(out.blocked.is_empty());
    }
}

#[tokio::test]
async fn card_split_over_chunks_and_frames_is_cut() {
    let pieces = [
        "Sure, the card on file is 4111 11",
        "11 1111 11",
        "11 1111, ok?",
    ];
    for newline in ["\n", "\r\n", "\r"] {
        let stream = chat_stream(&pieces).replace('\n', newline);
        let framings = (1..=90)
            .map(|size| frames(&stream, size))
            .chain([frames_mid_event_end(&stream, newline)]);
        for framing in framings {
            let out = run_frames(framing).await;
            assert_cut(&out, &stream);
            let text = out.text();
            assert!(
                !text.contains(CARD) && !text.contains("11 1111, ok?"),
                "{text}"
            );
            assert!(!text.contains("\"finish_reason\":\"stop\""));
        }
    }
}

#[tokio::test]
async fn digits_of_different_choices_are_not_joined() {
    let mut stream = String::new();
    for (choice, text) in [
        (0, "4111 1111 "),
        (1, "1111 1111 "),
        (0, "is one"),
        (1, "is two"),
    ] {
        stream.push_str(&chat_event(choice, json!({"content": text}), None));
    }
    stream.push_str(&chat_event(0, json!({}), Some("stop")));
    stream.push_str(&chat_event(1, json!({}), Some("stop")));
    stream.push_str("data: [DONE]\n\n");
    let out = run_frames(frames(&stream, 33)).await;
    assert_eq!(out.text(), stream);
    assert!(out.blocked.is_empty());
}

#[tokio::test]
async fn card_in_tool_call_arguments_is_cut() {
    let call = |args: &str| {
        chat_event(
            0,
            json!({"tool_calls": [{"index": 0, "function": {"arguments": args}}]}),
            None,
        )
    };
    let mut stream = chat_event(
        0,
        json!({"role": "assistant", "content": null, "tool_calls": [{"index": 0,
            "id": "call_Qm3f9ZxT2cV8", "type": "function",
            "function": {"name": "charge_card", "arguments": ""}}], "refusal": null}),
        None,
    );
    for args in [
        "{\"number\":\"4111",
        " 1111 1111",
        " 1111\",\"amount\":",
        "42}",
    ] {
        stream.push_str(&call(args));
    }
    stream.push_str(&chat_event(0, json!({}), Some("tool_calls")));
    stream.push_str("data: [DONE]\n\n");
    let out = run_frames(frames(&stream, 64)).await;
    assert_cut(&out, &stream);
    assert!(!out.text().contains("\"amount\":"));
}

#[tokio::test]
async fn responses_api_text_deltas_are_cut() {
    let event = |kind: &str, data: Value| format!("event: {kind}\ndata: {data}\n\n");
    let delta = |seq: u64, text: &str| {
        event(
            "response.output_text.delta",
            json!({"type": "response.output_text.delta", "sequence_number": seq,
                "item_id": "msg_67ccd3acc8d48190a77525dc6de64b4104becb25c69f9e9e",
                "output_index": 0, "content_index": 0, "delta": text, "logprobs": []}),
        )
    };
    let mut stream = event(
        "response.created",
        json!({"type": "response.created", "sequence_number": 0,
            "response": {"id": "resp_67ccd3a9da748190baa7f1570fe91ac604becb25c69f9e9e",
                "object": "response", "status": "in_progress", "output": []}}),
    );
    for (i, text) in ["Charge ", "4111 1111 ", "1111 1111", " today."]
        .iter()
        .enumerate()
    {
        stream.push_str(&delta(i as u64 + 4, text));
    }
    for size in [1, 13, 100, 4096] {
        let out = run_frames(frames(&stream, size)).await;
        assert_cut(&out, &stream);
        assert!(!out.text().contains(" today."));
    }
}

#[tokio::test]
async fn sixteen_digits_failing_luhn_pass() {
    let stream = chat_stream(&["Your tracking number is 4111 11", "11 1111 1112", ", ok?"]);
    let out = run_frames(frames(&stream, 40)).await;
    assert_eq!(out.text(), stream);
    assert!(out.blocked.is_empty());
}

#[tokio::test]
async fn card_at_the_very_end_is_judged_at_done() {
    let stream = chat_stream(&["The number is 4111 1111", " 1111 1111"]);
    let events: Vec<Bytes> = stream
        .split_inclusive("\n\n")
        .map(|e| Bytes::copy_from_slice(e.as_bytes()))
        .collect();
    let out = run_frames(events.clone()).await;
    assert_cut(&out, &stream);
    // The card's digits were held until the end showed it was complete:
    // none of them went out, and the error event replaced them.
    assert!(!out.text().contains("4111"));
    assert!(!out.text().contains("\"finish_reason\":\"stop\""));
    assert_eq!(out.text().matches("data: [DONE]").count(), 1);
    // Without `[DONE]`, upstream's end decides.
    let out = run_frames(events[..events.len() - 1].to_vec()).await;
    assert_cut(&out, &stream);
    for size in [1, 25, 4096] {
        let out = run_frames(frames(&stream, size)).await;
        assert_cut(&out, &stream);
    }
}

#[tokio::test]
async fn upstream_error_passes_through() {
    let first = content("Hello");
    let out = run(vec![
        Ok(Frame::data(Bytes::from(first.clone()))),
        Err("connection reset by upstream".into()),
        Ok(Frame::data(Bytes::from(content("never")))),
    ])
    .await;
    assert_eq!(out.text(), first);
    assert_eq!(out.error.as_deref(), Some("connection reset by upstream"));
    assert!(out.blocked.is_empty());
}

#[tokio::test]
async fn upstream_is_dropped_when_cut() {
    // One frame per event, and more events after the card: none of them
    // may be read once the stream is cut.
    let stream = chat_stream(&["card: ", CARD, " thanks", "more", "and more"]);
    let events: Vec<_> = stream
        .split_inclusive("\n\n")
        .map(|e| Ok(Frame::data(Bytes::copy_from_slice(e.as_bytes()))))
        .collect();
    let total = events.len();
    let out = run(events).await;
    assert_cut(&out, &stream);
    assert!(out.polled < total, "{} of {total} polled", out.polled);
}

#[tokio::test]
async fn trailers_pass_after_the_held_line() {
    let stream = chat_stream(&["fine"]);
    let unterminated = "data: {\"choices\":[]}";
    let mut trailers = HeaderMap::new();
    trailers.insert("x-upstream-status", "done".parse().unwrap());
    let out = run(vec![
        Ok(Frame::data(Bytes::from(stream.clone()))),
        Ok(Frame::data(Bytes::from(unterminated))),
        Ok(Frame::trailers(trailers.clone())),
    ])
    .await;
    assert_eq!(out.text(), format!("{stream}{unterminated}"));
    assert_eq!(out.trailers, Some(trailers));
    assert!(out.blocked.is_empty());
}

#[tokio::test]
async fn overlong_line_passes_uninspected() {
    let long = format!("data: {}", "x".repeat(MAX_LINE + 10));
    let stream = format!("{long}\n\n{}", chat_stream(&["ok"]));
    let out = run_frames(frames(&stream, 1 << 16)).await;
    assert_eq!(out.text(), stream);
    assert!(out.blocked.is_empty());
}

#[tokio::test]
async fn without_block_policies_the_guard_passes_through() {
    let set = Arc::new(PolicySet::compile(&[]).unwrap());
    let body = http_body_util::Full::new(Bytes::from(content(CARD)));
    let guard = StreamGuard::new(body, set, Box::new(|_| unreachable!()));
    assert_eq!(guard.size_hint().exact(), Some(content(CARD).len() as u64));
}

mod properties;

#[tokio::test]
async fn escaped_and_repeated_fields_are_read_as_serde_json_reads_them() {
    // The card's digits sent as `\u` escapes, and a decoy `content` that
    // the later one overrides, as in serde_json's map.
    let lines = [
        r#"data: {"choices":[{"index":0,"delta":{"content":"card \u0034111 1111"}}]}"#,
        r#"data: {"choices":[{"index":0,"delta":{"content":"x","content":" 1111 1111 ok"}}]}"#,
        "data: [DONE]",
    ];
    let stream = lines.map(|l| format!("{l}\n\n")).concat();
    let out = run_frames(frames(&stream, 40)).await;
    assert_cut(&out, &stream);
    assert!(!out.text().contains("1111 ok"));
}

#[tokio::test]
async fn deeply_nested_events_are_still_inspected() {
    // Nesting the view leaves to serde_json: read as a value instead.
    let deep = format!(
        "{}{}",
        "[".repeat(crate::capture::json_view::MAX_DEPTH + 5),
        "]".repeat(crate::capture::json_view::MAX_DEPTH + 5)
    );
    let line = |text: &str| {
        format!(
            "data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}}}}],\"pad\":{deep}}}\n\n"
        )
    };
    let stream = format!(
        "{}{}data: [DONE]\n\n",
        line("card 4111 1111"),
        line(" 1111 1111 ok")
    );
    let out = run_frames(frames(&stream, 64)).await;
    assert_cut(&out, &stream);
    assert!(!out.text().contains("1111 ok"));
}

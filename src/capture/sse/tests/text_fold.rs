//! The text fold against the value fold, on generated streams: many chunk
//! shapes, odd JSON spellings, SSE framing variants and captures cut
//! anywhere.

use serde_json::{json, Map, Value};

use super::*;

const OPERATIONS: [&str; 4] = [
    "chat.create",
    "completions.create",
    "responses.create",
    "embeddings.create",
];

/// A small deterministic generator (SplitMix64), so a failing case is
/// reproduced from its seed.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// True one time in `n`.
    fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }

    fn text(&mut self) -> Value {
        const PIECES: &[&str] = &[
            "",
            "Hello",
            " world",
            "é",
            "😀",
            "日本語",
            "line\nbreak",
            "quote\"s",
            "back\\slash",
            "tab\t",
            "\u{1}ctl",
            "\u{2028}",
            "/slash",
            "4111 1111 ",
            "1111 1111",
            "mail a@b.co",
            "{\"city\": ",
            "\"Paris\"}",
        ];
        let n = self.below(3) + 1;
        Value::String((0..n).map(|_| *self.pick(PIECES)).collect())
    }

    /// A value a field may hold when it does not hold what is expected.
    fn odd(&mut self) -> Value {
        match self.below(7) {
            0 => Value::Null,
            1 => json!(0),
            2 => json!(1.5),
            3 => json!(-0.0),
            4 => json!([]),
            5 => json!({}),
            _ => json!(true),
        }
    }

    fn index(&mut self) -> Option<Value> {
        match self.below(8) {
            0 => None,
            1 => Some(json!(1.0)),
            2 => Some(json!("1")),
            3 => Some(json!(-1)),
            n => Some(json!(n % 3)),
        }
    }

    /// Sets `key` to `value` most of the time, to an odd value sometimes,
    /// and leaves it out sometimes.
    fn maybe(&mut self, object: &mut Map<String, Value>, key: &str, value: Value) {
        match self.below(10) {
            0 => {}
            1 => {
                object.insert(key.into(), self.odd());
            }
            _ => {
                object.insert(key.into(), value);
            }
        }
    }

    fn header(&mut self, object: &mut Map<String, Value>, kind: &str) {
        let id = self.pick(&["chatcmpl-1", "", "cmpl-2"]).to_string();
        self.maybe(object, "id", json!(id));
        self.maybe(object, "object", json!(kind));
        let created = self
            .pick(&[json!(0), json!(1_741_569_952), json!(17.5)])
            .clone();
        self.maybe(object, "created", created);
        let model = self.pick(&["", "gpt-4o-mini", "m\u{e9}"]).to_string();
        self.maybe(object, "model", json!(model));
        if self.one_in(3) {
            self.maybe(object, "system_fingerprint", json!("fp_1"));
            self.maybe(object, "service_tier", json!("default"));
        }
        if self.one_in(4) {
            let usage =
                json!({"prompt_tokens": 3, "completion_tokens": self.below(9), "total_tokens": 12});
            self.maybe(object, "usage", usage);
        } else if self.one_in(3) {
            object.insert("usage".into(), Value::Null);
        }
        if self.one_in(5) {
            let pfr = self
                .pick(&[
                    json!([]),
                    json!([{"prompt_index": 0, "content_filter_results": {}}]),
                ])
                .clone();
            object.insert("prompt_filter_results".into(), pfr);
        }
    }

    fn tool_call(&mut self) -> Value {
        let mut call = Map::new();
        if let Some(index) = self.index() {
            call.insert("index".into(), index);
        }
        if self.one_in(2) {
            let id = self.pick(&["call_a", "call_b", ""]).to_string();
            self.maybe(&mut call, "id", json!(id));
            self.maybe(&mut call, "type", json!("function"));
        }
        let mut function = Map::new();
        if self.one_in(2) {
            let name = self.pick(&["get_weather", "", "lookup"]).to_string();
            self.maybe(&mut function, "name", json!(name));
        }
        let arguments = self.text();
        self.maybe(&mut function, "arguments", arguments);
        if self.one_in(6) {
            // Some servers put the function's fields on the call itself.
            call.extend(function);
        } else {
            call.insert("function".into(), Value::Object(function));
        }
        Value::Object(call)
    }

    fn chat_chunk(&mut self) -> Value {
        let mut chunk = Map::new();
        self.header(&mut chunk, "chat.completion.chunk");
        let mut choices = Vec::new();
        for _ in 0..self.below(3) {
            let mut choice = Map::new();
            if let Some(index) = self.index() {
                choice.insert("index".into(), index);
            }
            let mut delta = Map::new();
            if self.one_in(3) {
                self.maybe(&mut delta, "role", json!("assistant"));
            }
            if self.one_in(2) {
                let content = self.text();
                self.maybe(&mut delta, "content", content);
            }
            if self.one_in(6) {
                let refusal = self.text();
                self.maybe(&mut delta, "refusal", refusal);
            }
            if self.one_in(3) {
                let calls = (0..self.below(3)).map(|_| self.tool_call()).collect();
                self.maybe(&mut delta, "tool_calls", Value::Array(calls));
            }
            if self.one_in(8) {
                let call = json!({"name": "f", "arguments": self.text()});
                self.maybe(&mut delta, "function_call", call);
            }
            let key = if self.one_in(8) { "message" } else { "delta" };
            self.maybe(&mut choice, key, Value::Object(delta));
            let reason = self
                .pick(&[Value::Null, json!("stop"), json!("tool_calls")])
                .clone();
            self.maybe(&mut choice, "finish_reason", reason);
            if self.one_in(6) {
                let lp = json!({"content": [{"token": "a", "logprob": -0.25, "bytes": [97]}]});
                self.maybe(&mut choice, "logprobs", lp);
            }
            if self.one_in(6) {
                let cfr = self
                    .pick(&[json!({}), json!({"hate": {"filtered": false}})])
                    .clone();
                choice.insert("content_filter_results".into(), cfr);
            }
            choices.push(Value::Object(choice));
        }
        self.maybe(&mut chunk, "choices", Value::Array(choices));
        Value::Object(chunk)
    }

    fn completion_chunk(&mut self) -> Value {
        let mut chunk = Map::new();
        self.header(&mut chunk, "text_completion");
        let mut choices = Vec::new();
        for _ in 0..self.below(3) {
            let mut choice = Map::new();
            if let Some(index) = self.index() {
                choice.insert("index".into(), index);
            }
            let text = self.text();
            self.maybe(&mut choice, "text", text);
            let reason = self
                .pick(&[Value::Null, json!("stop"), json!("length")])
                .clone();
            self.maybe(&mut choice, "finish_reason", reason);
            choices.push(Value::Object(choice));
        }
        chunk.insert("choices".into(), Value::Array(choices));
        Value::Object(chunk)
    }

    /// A Responses API event, and its name.
    fn responses_event(&mut self) -> (&'static str, Value) {
        const KINDS: &[&str] = &[
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_item.done",
            "response.content_part.added",
            "response.content_part.done",
            "response.output_text.delta",
            "response.output_text.done",
            "response.refusal.delta",
            "response.refusal.done",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.completed",
            "response.incomplete",
            "response.failed",
            "error",
        ];
        let kind = *self.pick(KINDS);
        let mut event = Map::new();
        event.insert("type".into(), json!(kind));
        if let Some(index) = self.index() {
            event.insert("output_index".into(), index);
        }
        if self.one_in(2) {
            event.insert("content_index".into(), json!(self.below(2)));
        }
        let text = self.text();
        match kind {
            "response.created"
            | "response.in_progress"
            | "response.completed"
            | "response.incomplete"
            | "response.failed" => {
                let mut response = json!({"id": "resp_1", "object": "response",
                    "status": "in_progress", "output": [{"type": "message"}]});
                if kind == "response.failed" && self.one_in(2) {
                    response["error"] = json!({"code": "server_error", "message": "boom"});
                }
                self.maybe(&mut event, "response", response);
            }
            "response.output_item.added" | "response.output_item.done" => {
                let item = self
                    .pick(&[
                        json!({"type": "message", "role": "assistant", "content": [], "status": "in_progress"}),
                        json!({"type": "function_call", "name": "f", "arguments": "", "call_id": "c"}),
                        json!({"type": "reasoning", "summary": []}),
                        json!({"type": "message", "content": "x"}),
                    ])
                    .clone();
                self.maybe(&mut event, "item", item);
            }
            "response.content_part.added" | "response.content_part.done" => {
                let part = self
                    .pick(&[
                        json!({"type": "output_text", "text": "", "annotations": []}),
                        json!({"type": "refusal", "refusal": ""}),
                    ])
                    .clone();
                self.maybe(&mut event, "part", part);
            }
            "response.output_text.done" => self.maybe(&mut event, "text", text),
            "response.refusal.done" => self.maybe(&mut event, "refusal", text),
            "response.function_call_arguments.done" => self.maybe(&mut event, "arguments", text),
            "error" => {
                event.insert("message".into(), text);
            }
            _ => self.maybe(&mut event, "delta", text),
        }
        (kind, Value::Object(event))
    }

    /// One event's `event:` name and data text.
    fn event(&mut self, operation: &str) -> (Option<String>, String) {
        let roll = self.below(20);
        let (name, value) = match roll {
            0 => return (None, "[DONE]".into()),
            1 => {
                let data = self.pick(&["hello world", "{broken", "", " [DONE] "]);
                return (self.one_in(2).then(|| "error".into()), data.to_string());
            }
            2 => (
                None,
                json!({"error": {"message": "overloaded", "type": "server_error"}}),
            ),
            3 => (None, json!("just a string")),
            _ => match operation {
                "completions.create" => (None, self.completion_chunk()),
                "responses.create" => {
                    let (kind, value) = self.responses_event();
                    let name = match self.below(3) {
                        0 => None,
                        1 => Some(kind.to_owned()),
                        _ => Some("response.output_text.delta".to_owned()),
                    };
                    return (name, self.render(&value));
                }
                _ if self.one_in(6) => (None, self.responses_event().1),
                _ => (None, self.chat_chunk()),
            },
        };
        (name, self.render(&value))
    }

    /// Writes `value` as JSON in one of the many ways a server may: members
    /// in any order, repeated keys (the last one counts), escapes, spaces
    /// and line breaks between tokens.
    fn render(&mut self, value: &Value) -> String {
        let mut out = String::new();
        self.render_into(value, &mut out);
        out
    }

    fn space(&mut self, out: &mut String) {
        match self.below(12) {
            0 => out.push(' '),
            1 => out.push('\n'),
            2 => out.push_str("\t "),
            _ => {}
        }
    }

    fn render_into(&mut self, value: &Value, out: &mut String) {
        self.space(out);
        match value {
            Value::String(s) => self.render_string(s, out),
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    self.render_into(item, out);
                }
                out.push(']');
            }
            Value::Object(members) => {
                let mut members: Vec<_> = members.iter().collect();
                for i in (1..members.len()).rev() {
                    let j = self.below(i as u64 + 1) as usize;
                    members.swap(i, j);
                }
                out.push('{');
                for (i, (key, value)) in members.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    if self.one_in(15) {
                        // A decoy the later member overrides.
                        self.render_string(key, out);
                        out.push(':');
                        let decoy = self.odd();
                        self.render_into(&decoy, out);
                        out.push(',');
                    }
                    self.render_string(key, out);
                    self.space(out);
                    out.push(':');
                    self.render_into(value, out);
                }
                out.push('}');
            }
            other => out.push_str(&other.to_string()),
        }
        self.space(out);
    }

    fn render_string(&mut self, s: &str, out: &mut String) {
        if !self.one_in(3) {
            out.push_str(&serde_json::to_string(s).expect("a string serialises"));
            return;
        }
        out.push('"');
        for c in s.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '/' => out.push_str("\\/"),
                c if (c as u32) < 0x20 || !c.is_ascii() || self.one_in(10) => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04X}"));
                    }
                }
                c => out.push(c),
            }
        }
        out.push('"');
    }

    /// A whole captured body: events with comments, ids, names, several
    /// `data:` lines, one line ending style, sometimes a BOM, sometimes cut
    /// at any byte.
    fn body(&mut self, operation: &str) -> Vec<u8> {
        let eol = *self.pick(&["\n", "\r\n", "\r"]);
        let mut body = String::new();
        if self.one_in(10) {
            body.push('\u{feff}');
        }
        for _ in 0..self.below(12) {
            if self.one_in(6) {
                body.push_str(": keep-alive");
                body.push_str(eol);
            }
            let (name, data) = self.event(operation);
            if let Some(name) = name {
                body.push_str("event: ");
                body.push_str(&name);
                body.push_str(eol);
            }
            if self.one_in(8) {
                body.push_str("id: 7");
                body.push_str(eol);
            }
            for line in data.split('\n') {
                body.push_str(if self.one_in(4) { "data:" } else { "data: " });
                body.push_str(line);
                body.push_str(eol);
            }
            body.push_str(eol);
        }
        let mut bytes = body.into_bytes();
        if self.one_in(4) && !bytes.is_empty() {
            let cut = self.below(bytes.len() as u64) as usize;
            bytes.truncate(cut);
        }
        bytes
    }
}

#[test]
fn generated_streams_fold_to_the_same_text_as_values() {
    // How many folded answers hold each of these, so the generator is
    // known to reach them.
    let mut reached = [
        ("\"object\":\"chat.completion\"", 0),
        ("\"tool_calls\":[", 0),
        ("\"function_call\":{", 0),
        ("\"refusal\":\"", 0),
        ("\"logprobs\":{", 0),
        ("\"object\":\"text_completion\"", 0),
        ("\"output\":[", 0),
        ("\"object\":\"sse_events\"", 0),
        ("\"stream_error\":", 0),
        ("\"content_filter_results\":", 0),
        ("\"prompt_filter_results\":", 0),
    ];
    let mut complete = 0;
    for seed in 0..3000 {
        let mut gen = Gen(seed);
        let operation = OPERATIONS[seed as usize % OPERATIONS.len()];
        let body = gen.body(operation);
        let events = parse_events(&body);
        for operation in OPERATIONS {
            let expected = value_fold_text(operation, &events);
            let text = reassemble_text(operation, &events);
            assert_eq!(
                text.as_ref(),
                Some(&expected),
                "seed {seed}, {operation}, body {:?}",
                String::from_utf8_lossy(&body)
            );
            for (needle, count) in &mut reached {
                *count += usize::from(expected.json.contains(*needle));
            }
            complete += usize::from(expected.complete);
        }
    }
    for (needle, count) in reached {
        assert!(count >= 20, "{needle} reached {count} times");
    }
    assert!(complete >= 100, "{complete} complete streams");
}

#[test]
fn fixtures_cut_at_every_line_fold_to_the_same_text() {
    for (operation, body) in [
        ("chat.create", CHAT_TEXT),
        ("chat.create", CHAT_TOOLS),
        ("chat.create", CHAT_ERROR),
        ("completions.create", COMPLETIONS),
        ("responses.create", RESPONSES),
    ] {
        let ends = body.match_indices('\n').map(|(i, _)| i + 1);
        for end in ends.chain([body.len()]) {
            let events = parse_events(&body.as_bytes()[..end]);
            assert_eq!(
                reassemble_text(operation, &events),
                Some(value_fold_text(operation, &events)),
                "{operation} cut at {end}"
            );
        }
    }
}

#[test]
fn single_data_lines_are_borrowed_from_the_body() {
    let body = b"event: message\ndata: {\"a\":1}\n\ndata: one\ndata: two\n\n";
    let events = parse_events(body);
    assert!(matches!(events[0].data, Cow::Borrowed("{\"a\":1}")));
    assert!(matches!(events[0].event, Some(Cow::Borrowed("message"))));
    assert_eq!(events[1].data, "one\ntwo");
}

#[test]
fn nesting_the_view_leaves_to_serde_json_is_folded_as_a_value() {
    let deep = format!(
        "{}{}",
        "[".repeat(crate::capture::json_view::MAX_DEPTH + 5),
        "]".repeat(crate::capture::json_view::MAX_DEPTH + 5)
    );
    let chunk = format!(r#"{{"choices":[{{"index":0,"delta":{{"content":"hi"}}}}],"x":{deep}}}"#);
    let events = vec![ev(None, &chunk)];
    assert_eq!(reassemble_text("chat.create", &events), None);
    let folded = reassemble("chat.create", &events);
    assert_eq!(folded.response["choices"][0]["message"]["content"], "hi");

    // Nesting serde_json refuses too is not JSON to either fold.
    let deeper = format!("{}{}", "[".repeat(200), "]".repeat(200));
    let events = vec![ev(None, &deeper)];
    assert_eq!(
        reassemble_text("chat.create", &events),
        Some(value_fold_text("chat.create", &events))
    );
}

//! Server-Sent Events: parsing a captured `text/event-stream` body and
//! folding its events back into the object the same call returns without
//! streaming, so a RESPONSE event looks the same whether or not the app
//! streamed.
//!
//! Captures may be cut short (capture cap, client gone, upstream failure), so
//! every fold is best effort: it keeps what arrived and says whether the
//! stream reached its end.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Map, Value};

/// One dispatched event of a stream, borrowing from the body where it
/// can (a single `data:` line of valid UTF-8, as model streams send).
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent<'a> {
    /// The `event:` field; `None` when absent or empty (a plain `message`).
    pub event: Option<Cow<'a, str>>,
    /// The `data:` lines, joined with `\n`.
    pub data: Cow<'a, str>,
}

/// A stream folded back into one value.
#[derive(Debug, Clone, PartialEq)]
pub struct Reassembled {
    /// For chat and legacy completions a `chat.completion` /
    /// `text_completion` object, for the Responses API the `response`
    /// object, otherwise `{"object": "sse_events", "events": [...]}`.
    pub response: Value,
    /// The stream reached its end: `[DONE]`, a terminal Responses API event,
    /// or every choice finished.
    pub complete: bool,
    /// The first error the stream reported, if any.
    pub error: Option<Value>,
}

mod fold;

pub use fold::{reassemble_text, FoldedText};

/// How many events an unrecognised stream keeps in its `events` list.
pub const MAX_RAW_EVENTS: usize = 1000;

/// Whether a `Content-Type` value names an event stream.
pub fn is_event_stream(content_type: Option<&str>) -> bool {
    content_type
        .and_then(|ct| ct.split(';').next())
        .is_some_and(|essence| essence.trim().eq_ignore_ascii_case("text/event-stream"))
}

/// Parses a stream as the HTML living standard describes: lines end in
/// `\n`, `\r\n` or `\r`; `:` starts a comment; one space after a field's
/// colon is dropped; several `data:` lines join with `\n`; a blank line
/// dispatches. Unlike a live client, a last event with no blank line after
/// it still counts, because a capture may end anywhere. Invalid UTF-8 is
/// replaced, never fatal.
pub fn parse_events<'a>(body: &'a [u8]) -> Vec<SseEvent<'a>> {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let mut events = Vec::new();
    let mut event: Option<&'a [u8]> = None;
    let mut data = Data::None;

    let mut dispatch = |event: &mut Option<&'a [u8]>, data: &mut Data<'a>| {
        let joined = match std::mem::replace(data, Data::None) {
            Data::None => None,
            Data::One(line) => Some(String::from_utf8_lossy(line)),
            Data::Many(text) => Some(Cow::Owned(text)),
        };
        if let Some(data) = joined {
            events.push(SseEvent {
                event: event
                    .take()
                    .filter(|e| !e.is_empty())
                    .map(String::from_utf8_lossy),
                data,
            });
        }
        *event = None;
    };

    for line in lines(body) {
        if line.is_empty() {
            dispatch(&mut event, &mut data);
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let value = &line[i + 1..];
                (&line[..i], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => event = Some(value),
            b"data" => {
                data = match std::mem::replace(&mut data, Data::None) {
                    Data::None => Data::One(value),
                    Data::One(first) => {
                        let mut text = String::from_utf8_lossy(first).into_owned();
                        text.push('\n');
                        text.push_str(&String::from_utf8_lossy(value));
                        Data::Many(text)
                    }
                    Data::Many(mut text) => {
                        text.push('\n');
                        text.push_str(&String::from_utf8_lossy(value));
                        Data::Many(text)
                    }
                }
            }
            // `id` and `retry` only matter to a reconnecting client.
            _ => {}
        }
    }
    dispatch(&mut event, &mut data);
    events
}

/// The `data:` lines of the event being read.
enum Data<'a> {
    None,
    /// One line, borrowed until the event is dispatched.
    One(&'a [u8]),
    /// Several lines, joined with `\n`.
    Many(String),
}

/// Folds a stream's events into one value, by operation (see
/// [`Reassembled::response`]). Unrecognised operations or shapes keep the
/// events themselves, each `data` parsed as JSON where it is JSON.
pub fn reassemble(operation: &str, events: &[SseEvent<'_>]) -> Reassembled {
    let parsed: Vec<Parsed<'_>> = events.iter().map(Parsed::new).collect();
    let done = parsed.iter().any(|p| p.done);
    let error = parsed.iter().find_map(Parsed::error);

    let folded = match operation {
        "chat.create" => fold_chat(&parsed, done),
        "completions.create" => fold_completions(&parsed, done),
        "responses.create" => fold_responses(&parsed),
        _ => None,
    };
    let (response, complete) = folded.unwrap_or_else(|| (raw_events(&parsed), done));
    Reassembled {
        response,
        complete,
        error,
    }
}

/// An event with its data parsed once.
struct Parsed<'a> {
    /// The event name, or failing that the data's own `type` (the Responses
    /// API repeats it there, and some servers send no `event:` lines).
    name: Option<&'a str>,
    /// The data as JSON, or as a JSON string when it is not JSON.
    data: Value,
    done: bool,
}

/// Accumulated state of one chat choice.
#[derive(Default)]
struct ChatChoice {
    role: Option<String>,
    content: String,
    saw_content: bool,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCall>,
    function_call: Option<ToolCall>,
    finish_reason: Option<Value>,
    logprobs: Vec<Value>,
    content_filter_results: Option<Value>,
}

#[derive(Default)]
struct ToolCall {
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

/// Top-level fields shared by chat and legacy completion chunks. Azure's
/// first chunk carries empty `id`/`model` and `created: 0`, so the first
/// *meaningful* value wins.
#[derive(Default)]
struct Header {
    id: Option<Value>,
    created: Option<Value>,
    model: Option<Value>,
    system_fingerprint: Option<Value>,
    service_tier: Option<Value>,
    usage: Option<Value>,
    prompt_filter_results: Option<Value>,
}

// === impl Parsed ===

impl<'a> Parsed<'a> {
    fn new(event: &'a SseEvent<'_>) -> Self {
        let trimmed = event.data.trim();
        let done = trimmed == "[DONE]";
        let data = serde_json::from_str(trimmed)
            .unwrap_or_else(|_| Value::String(event.data.clone().into_owned()));
        Parsed {
            name: event.event.as_deref(),
            data,
            done,
        }
    }

    fn kind(&self) -> Option<&str> {
        self.name
            .or_else(|| self.data.get("type").and_then(Value::as_str))
    }

    fn error(&self) -> Option<Value> {
        if let Some(e) = self.data.get("error").filter(|e| !e.is_null()) {
            return Some(e.clone());
        }
        match self.kind() {
            Some("error") => Some(self.data.clone()),
            Some("response.failed") => self
                .data
                .pointer("/response/error")
                .filter(|e| !e.is_null())
                .cloned(),
            _ => None,
        }
    }
}

// === impl Header ===

impl Header {
    fn absorb(&mut self, chunk: &Map<String, Value>) {
        fn first(slot: &mut Option<Value>, v: Option<&Value>) {
            let meaningful = v.is_some_and(|v| match v {
                Value::Null => false,
                Value::String(s) => !s.is_empty(),
                Value::Number(n) => n.as_u64() != Some(0),
                _ => true,
            });
            if slot.is_none() && meaningful {
                *slot = v.cloned();
            }
        }
        first(&mut self.id, chunk.get("id"));
        first(&mut self.created, chunk.get("created"));
        first(&mut self.model, chunk.get("model"));
        first(
            &mut self.system_fingerprint,
            chunk.get("system_fingerprint"),
        );
        first(&mut self.service_tier, chunk.get("service_tier"));
        first(
            &mut self.prompt_filter_results,
            chunk
                .get("prompt_filter_results")
                .filter(|v| !is_empty_array(v)),
        );
        // Usage arrives once, usually in a last chunk with no choices; a
        // later non-null value is the more complete one.
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(u.clone());
        }
    }

    fn into_object(self, object: &str, choices: Vec<Value>) -> Value {
        let mut out = Map::new();
        out.insert("id".into(), self.id.unwrap_or(Value::Null));
        out.insert("object".into(), object.into());
        out.insert("created".into(), self.created.unwrap_or(Value::Null));
        out.insert("model".into(), self.model.unwrap_or(Value::Null));
        if let Some(fp) = self.system_fingerprint {
            out.insert("system_fingerprint".into(), fp);
        }
        if let Some(tier) = self.service_tier {
            out.insert("service_tier".into(), tier);
        }
        out.insert("choices".into(), Value::Array(choices));
        out.insert("usage".into(), self.usage.unwrap_or(Value::Null));
        if let Some(pfr) = self.prompt_filter_results {
            out.insert("prompt_filter_results".into(), pfr);
        }
        Value::Object(out)
    }
}

// === impl ChatChoice ===

impl ChatChoice {
    fn absorb(&mut self, choice: &Map<String, Value>) {
        // A whole `chat.completion` sent as one event carries `message`.
        let delta = choice
            .get("delta")
            .or_else(|| choice.get("message"))
            .and_then(Value::as_object);
        if let Some(delta) = delta {
            if let Some(role) = delta.get("role").and_then(Value::as_str) {
                self.role.get_or_insert_with(|| role.to_owned());
            }
            if let Some(text) = delta.get("content").and_then(Value::as_str) {
                self.content.push_str(text);
                self.saw_content = true;
            }
            if let Some(text) = delta.get("refusal").and_then(Value::as_str) {
                self.refusal.get_or_insert_with(String::new).push_str(text);
            }
            if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
                for call in calls.iter().filter_map(Value::as_object) {
                    self.absorb_tool_call(call);
                }
            }
            if let Some(call) = delta.get("function_call").and_then(Value::as_object) {
                self.function_call
                    .get_or_insert_with(ToolCall::default)
                    .absorb(call, call);
            }
        }
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.finish_reason = Some(reason.clone());
        }
        if let Some(lp) = choice
            .get("logprobs")
            .and_then(|l| l.get("content"))
            .and_then(Value::as_array)
        {
            self.logprobs.extend(lp.iter().cloned());
        }
        if let Some(cfr) = choice
            .get("content_filter_results")
            .filter(|v| v.as_object().is_some_and(|o| !o.is_empty()))
        {
            self.content_filter_results = Some(cfr.clone());
        }
    }

    /// Fragments of one call share an `index`. Some OpenAI-compatible
    /// servers leave it out; then a new `id` starts a new call and anything
    /// else continues the latest one.
    fn absorb_tool_call(&mut self, call: &Map<String, Value>) {
        let id = call.get("id").and_then(Value::as_str);
        let index = match call.get("index").and_then(Value::as_u64) {
            Some(i) => i,
            None => {
                let known = self
                    .tool_calls
                    .iter()
                    .find(|(_, t)| id.is_some() && t.id.as_deref() == id)
                    .map(|(i, _)| *i);
                let last = self.tool_calls.keys().next_back().copied();
                match (known, id, last) {
                    (Some(i), _, _) => i,
                    (None, Some(_), Some(last)) => last + 1,
                    (None, None, Some(last)) => last,
                    (None, _, None) => 0,
                }
            }
        };
        let function = call
            .get("function")
            .and_then(Value::as_object)
            .unwrap_or(call);
        self.tool_calls
            .entry(index)
            .or_default()
            .absorb(call, function);
    }

    fn into_value(self, index: u64) -> Value {
        let has_calls = !self.tool_calls.is_empty() || self.function_call.is_some();
        let content = if !self.content.is_empty() {
            Value::String(self.content)
        } else if has_calls || self.refusal.is_some() || !self.saw_content {
            Value::Null
        } else {
            Value::String(String::new())
        };
        let mut message = Map::new();
        message.insert(
            "role".into(),
            self.role.unwrap_or_else(|| "assistant".into()).into(),
        );
        message.insert("content".into(), content);
        if let Some(refusal) = self.refusal {
            message.insert("refusal".into(), refusal.into());
        }
        if !self.tool_calls.is_empty() {
            let calls = self
                .tool_calls
                .into_values()
                .map(|t| {
                    json!({
                        "id": t.id,
                        "type": t.kind.unwrap_or_else(|| "function".into()),
                        "function": {"name": t.name, "arguments": t.arguments},
                    })
                })
                .collect();
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some(f) = self.function_call {
            message.insert(
                "function_call".into(),
                json!({"name": f.name, "arguments": f.arguments}),
            );
        }
        let logprobs = if self.logprobs.is_empty() {
            Value::Null
        } else {
            json!({"content": self.logprobs})
        };
        let mut choice = Map::new();
        choice.insert("index".into(), index.into());
        choice.insert("message".into(), Value::Object(message));
        choice.insert(
            "finish_reason".into(),
            self.finish_reason.unwrap_or(Value::Null),
        );
        choice.insert("logprobs".into(), logprobs);
        if let Some(cfr) = self.content_filter_results {
            choice.insert("content_filter_results".into(), cfr);
        }
        Value::Object(choice)
    }
}

// === impl ToolCall ===

impl ToolCall {
    /// `call` holds `id`/`type`, `function` holds `name`/`arguments`; for a
    /// legacy `function_call` both are the same object.
    fn absorb(&mut self, call: &Map<String, Value>, function: &Map<String, Value>) {
        let text = |m: &Map<String, Value>, k: &str| {
            m.get(k)
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
        };
        if self.id.is_none() {
            self.id = text(call, "id");
        }
        if self.kind.is_none() {
            self.kind = text(call, "type");
        }
        if self.name.is_none() {
            self.name = text(function, "name");
        }
        if let Some(args) = function.get("arguments").and_then(Value::as_str) {
            self.arguments.push_str(args);
        }
    }
}

fn is_empty_array(v: &Value) -> bool {
    v.as_array().is_some_and(Vec::is_empty)
}

/// Chunks are recognised by their `choices` list, so servers that get
/// `object` wrong still fold.
fn chunks<'p>(parsed: &'p [Parsed<'_>]) -> impl Iterator<Item = &'p Map<String, Value>> {
    parsed
        .iter()
        .filter_map(|p| p.data.as_object())
        .filter(|o| o.get("choices").is_some_and(Value::is_array))
}

fn choice_index(choice: &Map<String, Value>) -> u64 {
    choice.get("index").and_then(Value::as_u64).unwrap_or(0)
}

fn fold_chat(parsed: &[Parsed<'_>], done: bool) -> Option<(Value, bool)> {
    let mut header = Header::default();
    let mut choices: BTreeMap<u64, ChatChoice> = BTreeMap::new();
    let mut seen = false;
    for chunk in chunks(parsed) {
        seen = true;
        header.absorb(chunk);
        let list = chunk.get("choices").and_then(Value::as_array);
        for choice in list.into_iter().flatten().filter_map(Value::as_object) {
            choices
                .entry(choice_index(choice))
                .or_default()
                .absorb(choice);
        }
    }
    if !seen {
        return None;
    }
    let finished = !choices.is_empty() && choices.values().all(|c| c.finish_reason.is_some());
    let choices = choices.into_iter().map(|(i, c)| c.into_value(i)).collect();
    Some((
        header.into_object("chat.completion", choices),
        done || finished,
    ))
}

fn fold_completions(parsed: &[Parsed<'_>], done: bool) -> Option<(Value, bool)> {
    let mut header = Header::default();
    let mut choices: BTreeMap<u64, (String, Option<Value>)> = BTreeMap::new();
    let mut seen = false;
    for chunk in chunks(parsed) {
        seen = true;
        header.absorb(chunk);
        let list = chunk.get("choices").and_then(Value::as_array);
        for choice in list.into_iter().flatten().filter_map(Value::as_object) {
            let (text, finish) = choices.entry(choice_index(choice)).or_default();
            if let Some(t) = choice.get("text").and_then(Value::as_str) {
                text.push_str(t);
            }
            if let Some(r) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                *finish = Some(r.clone());
            }
        }
    }
    if !seen {
        return None;
    }
    let finished = !choices.is_empty() && choices.values().all(|(_, f)| f.is_some());
    let choices = choices
        .into_iter()
        .map(|(index, (text, finish))| {
            json!({
                "index": index,
                "text": text,
                "finish_reason": finish,
                "logprobs": null,
            })
        })
        .collect();
    Some((
        header.into_object("text_completion", choices),
        done || finished,
    ))
}

/// Responses API streams end with `response.completed`, `.incomplete` or
/// `.failed`, whose `response` is exactly the non-streaming result. When the
/// stream was cut before that, the output is rebuilt from the items and
/// deltas that did arrive, on top of the `response.created` snapshot.
fn fold_responses(parsed: &[Parsed<'_>]) -> Option<(Value, bool)> {
    #[derive(Default)]
    struct Output {
        items: BTreeMap<u64, Value>,
        done_items: BTreeSet<u64>,
        parts: BTreeMap<(u64, u64), Value>,
        done_parts: BTreeSet<(u64, u64)>,
        texts: BTreeMap<(u64, u64), String>,
        refusals: BTreeMap<(u64, u64), String>,
        arguments: BTreeMap<u64, String>,
    }

    let mut base: Option<&Value> = None;
    let mut out = Output::default();
    for p in parsed {
        let Some(kind) = p.kind() else { continue };
        let d = &p.data;
        let oi = d.get("output_index").and_then(Value::as_u64).unwrap_or(0);
        let ci = d.get("content_index").and_then(Value::as_u64).unwrap_or(0);
        let s = |k: &str| d.get(k).and_then(Value::as_str).unwrap_or_default();
        match kind {
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(r) = d.get("response").filter(|r| r.is_object()) {
                    return Some((r.clone(), true));
                }
            }
            "response.created" | "response.in_progress" | "response.queued" => {
                base = d.get("response").filter(|r| r.is_object()).or(base);
            }
            "response.output_item.added" => {
                if let Some(item) = d.get("item") {
                    out.items.entry(oi).or_insert_with(|| item.clone());
                }
            }
            "response.output_item.done" => {
                if let Some(item) = d.get("item") {
                    out.items.insert(oi, item.clone());
                    out.done_items.insert(oi);
                }
            }
            "response.content_part.added" => {
                if let Some(part) = d.get("part") {
                    out.parts.entry((oi, ci)).or_insert_with(|| part.clone());
                }
            }
            "response.content_part.done" => {
                if let Some(part) = d.get("part") {
                    out.parts.insert((oi, ci), part.clone());
                    out.done_parts.insert((oi, ci));
                }
            }
            "response.output_text.delta" => {
                out.texts.entry((oi, ci)).or_default().push_str(s("delta"));
            }
            "response.output_text.done" => {
                out.texts.insert((oi, ci), s("text").to_owned());
            }
            "response.refusal.delta" => {
                out.refusals
                    .entry((oi, ci))
                    .or_default()
                    .push_str(s("delta"));
            }
            "response.refusal.done" => {
                out.refusals.insert((oi, ci), s("refusal").to_owned());
            }
            "response.function_call_arguments.delta" => {
                out.arguments.entry(oi).or_default().push_str(s("delta"));
            }
            "response.function_call_arguments.done" => {
                out.arguments.insert(oi, s("arguments").to_owned());
            }
            _ => {}
        }
    }

    let indexes: BTreeSet<u64> = out
        .items
        .keys()
        .copied()
        .chain(out.texts.keys().map(|(o, _)| *o))
        .chain(out.refusals.keys().map(|(o, _)| *o))
        .chain(out.arguments.keys().copied())
        .collect();
    if base.is_none() && indexes.is_empty() {
        return None;
    }

    let mut output = Vec::with_capacity(indexes.len());
    for oi in indexes {
        let mut item = match out.items.get(&oi) {
            Some(item) => item.clone(),
            None if out.arguments.contains_key(&oi) => {
                json!({"type": "function_call", "status": "in_progress"})
            }
            None => json!({"type": "message", "role": "assistant", "status": "in_progress"}),
        };
        if out.done_items.contains(&oi) {
            output.push(item);
            continue;
        }
        let Some(obj) = item.as_object_mut() else {
            output.push(item);
            continue;
        };
        match obj.get("type").and_then(Value::as_str) {
            Some("message") => {
                let cis: BTreeSet<u64> = out
                    .parts
                    .keys()
                    .chain(out.texts.keys())
                    .chain(out.refusals.keys())
                    .filter(|(o, _)| *o == oi)
                    .map(|(_, c)| *c)
                    .collect();
                let content = cis
                    .into_iter()
                    .map(|ci| {
                        let key = (oi, ci);
                        let mut part = out.parts.get(&key).cloned().unwrap_or_else(|| {
                            if out.refusals.contains_key(&key) {
                                json!({"type": "refusal"})
                            } else {
                                json!({"type": "output_text", "annotations": []})
                            }
                        });
                        if !out.done_parts.contains(&key) {
                            if let Some(p) = part.as_object_mut() {
                                if let Some(t) = out.texts.get(&key) {
                                    p.insert("text".into(), t.clone().into());
                                }
                                if let Some(r) = out.refusals.get(&key) {
                                    p.insert("refusal".into(), r.clone().into());
                                }
                            }
                        }
                        part
                    })
                    .collect();
                obj.insert("content".into(), Value::Array(content));
            }
            Some("function_call") => {
                if let Some(args) = out.arguments.get(&oi) {
                    obj.insert("arguments".into(), args.clone().into());
                }
            }
            _ => {}
        }
        output.push(item);
    }

    let mut response = base
        .cloned()
        .unwrap_or_else(|| json!({"object": "response"}));
    if let Some(r) = response.as_object_mut() {
        r.insert("output".into(), Value::Array(output));
    }
    Some((response, false))
}

fn raw_events(parsed: &[Parsed<'_>]) -> Value {
    let events: Vec<Value> = parsed
        .iter()
        .take(MAX_RAW_EVENTS)
        .map(|p| p.data.clone())
        .collect();
    let mut out = json!({"object": "sse_events", "events": events});
    let omitted = parsed.len().saturating_sub(MAX_RAW_EVENTS);
    if omitted > 0 {
        if let Some(o) = out.as_object_mut() {
            o.insert("omitted_events".into(), omitted.into());
        }
    }
    out
}

/// Splits on `\r\n`, `\n` or a lone `\r`; a last line without an ending is
/// still yielded.
fn lines(body: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = body;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.iter().position(|&b| b == b'\n' || b == b'\r') {
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') {
                    2
                } else {
                    1
                };
                rest = &rest[i + skip..];
                Some(line)
            }
            None => {
                let line = rest;
                rest = &[];
                Some(line)
            }
        }
    })
}

#[cfg(test)]
mod tests;

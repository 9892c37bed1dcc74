//! Folding a stream's events into the JSON text of the answer, read from a
//! [`JsonView`] of each event's data instead of a `serde_json::Value`.
//!
//! The text is exactly what serializing [`super::reassemble`]'s value (with
//! its `stream_error` put in) prints: keys in serde_json's order, values
//! copied from the events written as serde_json writes them. Only the few
//! strings that grow while folding (content, arguments, refusals) are
//! owned; everything else is a node of an event's view, written once at
//! the end.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use serde_json::Value;

use super::{SseEvent, MAX_RAW_EVENTS};
use crate::capture::json_view::{At, JsonView, Scratch};

/// A stream folded into the text of one JSON object.
#[derive(Debug, Clone, PartialEq)]
pub struct FoldedText {
    /// Compact JSON, keys sorted, as serde_json prints the folded value.
    pub json: String,
    /// The stream reached its end (see [`super::Reassembled::complete`]).
    pub complete: bool,
}

/// Folds `events` as [`super::reassemble`] does, with the first error the
/// stream reported as the answer's `stream_error`. `None` when an event's
/// data is JSON the view leaves to serde_json (nesting deeper than
/// [`crate::capture::json_view::MAX_DEPTH`]): such a stream is folded as a
/// value.
pub fn reassemble_text(operation: &str, events: &[SseEvent<'_>]) -> Option<FoldedText> {
    let mut views = Vec::with_capacity(events.len());
    let mut scratch = Scratch::default();
    for event in events {
        let trimmed = event.data.trim();
        let view = JsonView::parse_with(trimmed.as_bytes(), &mut scratch);
        if view.is_none() && trimmed.starts_with(['{', '[']) && is_json(trimmed) {
            return None;
        }
        views.push(view);
    }
    let parsed: Vec<Parsed<'_>> = events
        .iter()
        .zip(&views)
        .map(|(event, view)| Parsed {
            name: event.event.as_deref(),
            raw: &event.data,
            data: view.as_ref().map(JsonView::root),
            done: event.data.trim() == "[DONE]",
        })
        .collect();
    let done = parsed.iter().any(|p| p.done);
    let error = parsed.iter().find_map(Parsed::error);

    let mut out = Vec::with_capacity(256 + events.iter().map(|e| e.data.len()).sum::<usize>() / 4);
    let folded = match operation {
        "chat.create" => fold_chat(&parsed, done, error, &mut out),
        "completions.create" => fold_completions(&parsed, done, error, &mut out),
        "responses.create" => fold_responses(&parsed, error, &mut out),
        _ => None,
    };
    let complete = match folded {
        Some(complete) => complete,
        None => {
            out.clear();
            raw_events(&parsed, error, &mut out);
            done
        }
    };
    // Every piece written is UTF-8 (see `JsonView::write`).
    let json = String::from_utf8(out).ok()?;
    Some(FoldedText { json, complete })
}

/// Whether serde_json reads `text` as JSON; asked only of the rare text
/// the view refuses.
fn is_json(text: &str) -> bool {
    serde_json::from_str::<Value>(text).is_ok()
}

/// One event: its name and its data's view.
struct Parsed<'v> {
    /// The `event:` name; the data's own `type` stands in (see
    /// [`Self::kind`]).
    name: Option<&'v str>,
    /// The data as sent, kept as a string when it is not JSON.
    raw: &'v str,
    data: Option<At<'v, 'v>>,
    done: bool,
}

/// A value to copy into the answer: a node, or an event's data that is not
/// JSON (copied as a string).
#[derive(Clone, Copy)]
enum Data<'v> {
    Node(At<'v, 'v>),
    Text(&'v str),
}

/// Accumulated state of one chat choice.
#[derive(Default)]
struct ChatChoice<'v> {
    role: Option<Cow<'v, str>>,
    content: String,
    saw_content: bool,
    refusal: Option<String>,
    tool_calls: BTreeMap<u64, ToolCall<'v>>,
    function_call: Option<ToolCall<'v>>,
    finish_reason: Option<At<'v, 'v>>,
    logprobs: Vec<At<'v, 'v>>,
    content_filter_results: Option<At<'v, 'v>>,
}

#[derive(Default)]
struct ToolCall<'v> {
    id: Option<Cow<'v, str>>,
    kind: Option<Cow<'v, str>>,
    name: Option<Cow<'v, str>>,
    arguments: String,
}

/// Top-level fields shared by chat and legacy completion chunks; the first
/// meaningful value wins (see `super::Header`).
#[derive(Default)]
struct Header<'v> {
    id: Option<At<'v, 'v>>,
    created: Option<At<'v, 'v>>,
    model: Option<At<'v, 'v>>,
    system_fingerprint: Option<At<'v, 'v>>,
    service_tier: Option<At<'v, 'v>>,
    usage: Option<At<'v, 'v>>,
    prompt_filter_results: Option<At<'v, 'v>>,
}

/// Writes one object's members in the order given, which must be
/// serde_json's (sorted by key).
struct ObjectWriter<'o> {
    out: &'o mut Vec<u8>,
    first: bool,
}

/// Writes one value.
type Write<'f> = &'f dyn Fn(&mut Vec<u8>);

/// A member to put into an object: its key and how to write its value.
type Member<'f> = (&'f str, Option<Write<'f>>);

// === impl Parsed ===

impl<'v> Parsed<'v> {
    fn kind(&self) -> Option<Cow<'v, str>> {
        self.name
            .map(Cow::Borrowed)
            .or_else(|| self.data?.get("type")?.as_str())
    }

    fn whole(&self) -> Data<'v> {
        match self.data {
            Some(at) => Data::Node(at),
            None => Data::Text(self.raw),
        }
    }

    fn error(&self) -> Option<Data<'v>> {
        if let Some(e) = self
            .data
            .and_then(|d| d.get("error"))
            .filter(|e| !e.is_null())
        {
            return Some(Data::Node(e));
        }
        match self.kind().as_deref() {
            Some("error") => Some(self.whole()),
            Some("response.failed") => self
                .data?
                .get("response")?
                .get("error")
                .filter(|e| !e.is_null())
                .map(Data::Node),
            _ => None,
        }
    }
}

// === impl Data ===

impl Data<'_> {
    fn write(self, out: &mut Vec<u8>) {
        match self {
            Self::Node(at) => at.write_to(out),
            Self::Text(text) => write_str(text, out),
        }
    }
}

// === impl Header ===

impl<'v> Header<'v> {
    fn absorb(&mut self, chunk: At<'v, 'v>) {
        fn first<'v>(slot: &mut Option<At<'v, 'v>>, v: Option<At<'v, 'v>>) {
            if slot.is_none() {
                *slot = v.filter(|v| is_meaningful(*v));
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
                .filter(|v| !is_empty_array(*v)),
        );
        if let Some(u) = chunk.get("usage").filter(At::is_object) {
            self.usage = Some(u);
        }
    }

    /// Writes the folded object, `write_choices` writing its `choices`.
    fn write(
        &self,
        object: &str,
        error: Option<Data<'_>>,
        out: &mut Vec<u8>,
        write_choices: impl FnOnce(&mut Vec<u8>),
    ) {
        let mut o = ObjectWriter::open(out);
        write_choices(o.key("choices"));
        write_or_null(self.created, o.key("created"));
        write_or_null(self.id, o.key("id"));
        write_or_null(self.model, o.key("model"));
        write_str(object, o.key("object"));
        if let Some(pfr) = self.prompt_filter_results {
            pfr.write_to(o.key("prompt_filter_results"));
        }
        if let Some(tier) = self.service_tier {
            tier.write_to(o.key("service_tier"));
        }
        if let Some(error) = error {
            error.write(o.key("stream_error"));
        }
        if let Some(fp) = self.system_fingerprint {
            fp.write_to(o.key("system_fingerprint"));
        }
        write_or_null(self.usage, o.key("usage"));
        o.close();
    }
}

/// Azure's first chunk carries empty `id`/`model` and `created: 0`.
fn is_meaningful(v: At<'_, '_>) -> bool {
    if v.is_null() {
        return false;
    }
    if let Some(s) = v.as_str() {
        return !s.is_empty();
    }
    if let Some(n) = v.as_number() {
        return n.as_u64() != Some(0);
    }
    true
}

fn is_empty_array(v: At<'_, '_>) -> bool {
    v.items().is_some_and(|mut items| items.next().is_none())
}

// === impl ChatChoice ===

impl<'v> ChatChoice<'v> {
    fn absorb(&mut self, choice: At<'v, 'v>) {
        // A whole `chat.completion` sent as one event carries `message`.
        let delta = choice
            .get("delta")
            .or_else(|| choice.get("message"))
            .filter(At::is_object);
        if let Some(delta) = delta {
            if let Some(role) = delta.get("role").and_then(|r| r.as_str()) {
                self.role.get_or_insert(role);
            }
            if let Some(text) = delta.get("content").and_then(|t| t.as_str()) {
                self.content.push_str(&text);
                self.saw_content = true;
            }
            if let Some(text) = delta.get("refusal").and_then(|t| t.as_str()) {
                self.refusal.get_or_insert_with(String::new).push_str(&text);
            }
            if let Some(calls) = delta.get("tool_calls") {
                for call in calls.items().into_iter().flatten() {
                    if call.is_object() {
                        self.absorb_tool_call(call);
                    }
                }
            }
            if let Some(call) = delta.get("function_call").filter(At::is_object) {
                self.function_call
                    .get_or_insert_with(ToolCall::default)
                    .absorb(call, call);
            }
        }
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            self.finish_reason = Some(reason);
        }
        if let Some(lp) = choice.get("logprobs").and_then(|l| l.get("content")) {
            self.logprobs.extend(lp.items().into_iter().flatten());
        }
        if let Some(cfr) = choice
            .get("content_filter_results")
            .filter(|v| v.members().is_some_and(|mut m| m.next().is_some()))
        {
            self.content_filter_results = Some(cfr);
        }
    }

    /// As `super::ChatChoice::absorb_tool_call`: fragments share an
    /// `index`, or failing that a new `id` starts a new call.
    fn absorb_tool_call(&mut self, call: At<'v, 'v>) {
        let id = call.get("id").and_then(|i| i.as_str());
        let index = match call.get("index").and_then(|i| i.as_number()?.as_u64()) {
            Some(i) => i,
            None => {
                let known = self
                    .tool_calls
                    .iter()
                    .find(|(_, t)| id.is_some() && t.id.as_deref() == id.as_deref())
                    .map(|(i, _)| *i);
                let last = self.tool_calls.keys().next_back().copied();
                match (known, &id, last) {
                    (Some(i), _, _) => i,
                    (None, Some(_), Some(last)) => last + 1,
                    (None, None, Some(last)) => last,
                    (None, _, None) => 0,
                }
            }
        };
        let function = call.get("function").filter(At::is_object).unwrap_or(call);
        self.tool_calls
            .entry(index)
            .or_default()
            .absorb(call, function);
    }

    fn write(&self, index: u64, out: &mut Vec<u8>) {
        let has_calls = !self.tool_calls.is_empty() || self.function_call.is_some();
        let mut choice = ObjectWriter::open(out);
        if let Some(cfr) = self.content_filter_results {
            cfr.write_to(choice.key("content_filter_results"));
        }
        write_or_null(self.finish_reason, choice.key("finish_reason"));
        write_u64(index, choice.key("index"));
        let out = choice.key("logprobs");
        if self.logprobs.is_empty() {
            out.extend_from_slice(b"null");
        } else {
            let mut logprobs = ObjectWriter::open(out);
            write_array(self.logprobs.iter(), logprobs.key("content"), |lp, out| {
                lp.write_to(out)
            });
            logprobs.close();
        }

        let mut message = ObjectWriter::open(choice.key("message"));
        let out = message.key("content");
        if !self.content.is_empty() {
            write_str(&self.content, out);
        } else if has_calls || self.refusal.is_some() || !self.saw_content {
            out.extend_from_slice(b"null");
        } else {
            out.extend_from_slice(b"\"\"");
        }
        if let Some(f) = &self.function_call {
            let mut call = ObjectWriter::open(message.key("function_call"));
            write_str(&f.arguments, call.key("arguments"));
            write_str_or_null(f.name.as_deref(), call.key("name"));
            call.close();
        }
        if let Some(refusal) = &self.refusal {
            write_str(refusal, message.key("refusal"));
        }
        write_str(
            self.role.as_deref().unwrap_or("assistant"),
            message.key("role"),
        );
        if !self.tool_calls.is_empty() {
            write_array(
                self.tool_calls.values(),
                message.key("tool_calls"),
                |t, out| {
                    let mut call = ObjectWriter::open(out);
                    let mut function = ObjectWriter::open(call.key("function"));
                    write_str(&t.arguments, function.key("arguments"));
                    write_str_or_null(t.name.as_deref(), function.key("name"));
                    function.close();
                    write_str_or_null(t.id.as_deref(), call.key("id"));
                    write_str(t.kind.as_deref().unwrap_or("function"), call.key("type"));
                    call.close();
                },
            );
        }
        message.close();
        choice.close();
    }
}

// === impl ToolCall ===

impl<'v> ToolCall<'v> {
    /// `call` holds `id`/`type`, `function` holds `name`/`arguments`; for a
    /// legacy `function_call` both are the same object.
    fn absorb(&mut self, call: At<'v, 'v>, function: At<'v, 'v>) {
        let text = |m: At<'v, 'v>, k: &str| m.get(k)?.as_str().filter(|s| !s.is_empty());
        if self.id.is_none() {
            self.id = text(call, "id");
        }
        if self.kind.is_none() {
            self.kind = text(call, "type");
        }
        if self.name.is_none() {
            self.name = text(function, "name");
        }
        if let Some(args) = function.get("arguments").and_then(|a| a.as_str()) {
            self.arguments.push_str(&args);
        }
    }
}

// === impl ObjectWriter ===

impl<'o> ObjectWriter<'o> {
    fn open(out: &'o mut Vec<u8>) -> Self {
        out.push(b'{');
        Self { out, first: true }
    }

    /// Writes `key` and its colon; the value goes into the buffer returned.
    fn key(&mut self, key: &str) -> &mut Vec<u8> {
        if !self.first {
            self.out.push(b',');
        }
        self.first = false;
        write_str(key, self.out);
        self.out.push(b':');
        self.out
    }

    fn close(self) {
        self.out.push(b'}');
    }
}

/// Writes the object `base` with `members` (sorted by key; those without
/// a writer left out) put in: each replaces the member of its key, as
/// inserting into serde_json's map does.
fn write_merged(base: At<'_, '_>, members: &[Member<'_>], out: &mut Vec<u8>) {
    let mut members = members
        .iter()
        .filter_map(|(k, w)| Some((*k, (*w)?)))
        .peekable();
    let mut o = ObjectWriter::open(out);
    for (key, value) in base.members().into_iter().flatten() {
        while let Some((k, write)) = members.next_if(|(k, _)| *k < key.as_ref()) {
            write(o.key(k));
        }
        match members.next_if(|(k, _)| *k == key.as_ref()) {
            Some((k, write)) => write(o.key(k)),
            None => value.write_to(o.key(&key)),
        }
    }
    for (k, write) in members {
        write(o.key(k));
    }
    o.close();
}

fn write_str(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, s);
}

fn write_str_or_null(s: Option<&str>, out: &mut Vec<u8>) {
    match s {
        Some(s) => write_str(s, out),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_or_null(at: Option<At<'_, '_>>, out: &mut Vec<u8>) {
    match at {
        Some(at) => at.write_to(out),
        None => out.extend_from_slice(b"null"),
    }
}

fn write_u64(n: u64, out: &mut Vec<u8>) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn write_array<T>(
    items: impl Iterator<Item = T>,
    out: &mut Vec<u8>,
    mut write: impl FnMut(T, &mut Vec<u8>),
) {
    out.push(b'[');
    for (i, item) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(item, out);
    }
    out.push(b']');
}

/// Chunks are recognised by their `choices` list, so servers that get
/// `object` wrong still fold.
fn chunks<'p, 'v>(parsed: &'p [Parsed<'v>]) -> impl Iterator<Item = At<'v, 'v>> + 'p {
    parsed
        .iter()
        .filter_map(|p| p.data)
        .filter(|o| o.get("choices").is_some_and(|c| c.is_array()))
}

fn choice_index(choice: At<'_, '_>) -> u64 {
    choice
        .get("index")
        .and_then(|i| i.as_number()?.as_u64())
        .unwrap_or(0)
}

/// Whether the stream is complete, once written; `None` (nothing written)
/// when no event is a chunk.
fn fold_chat(
    parsed: &[Parsed<'_>],
    done: bool,
    error: Option<Data<'_>>,
    out: &mut Vec<u8>,
) -> Option<bool> {
    let mut header = Header::default();
    let mut choices: BTreeMap<u64, ChatChoice<'_>> = BTreeMap::new();
    let mut seen = false;
    for chunk in chunks(parsed) {
        seen = true;
        header.absorb(chunk);
        let list = chunk.get("choices").and_then(|c| c.items());
        for choice in list.into_iter().flatten().filter(At::is_object) {
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
    header.write("chat.completion", error, out, |out| {
        write_array(choices.iter(), out, |(i, c), out| c.write(*i, out));
    });
    Some(done || finished)
}

fn fold_completions(
    parsed: &[Parsed<'_>],
    done: bool,
    error: Option<Data<'_>>,
    out: &mut Vec<u8>,
) -> Option<bool> {
    let mut header = Header::default();
    let mut choices: BTreeMap<u64, (String, Option<At<'_, '_>>)> = BTreeMap::new();
    let mut seen = false;
    for chunk in chunks(parsed) {
        seen = true;
        header.absorb(chunk);
        let list = chunk.get("choices").and_then(|c| c.items());
        for choice in list.into_iter().flatten().filter(At::is_object) {
            let (text, finish) = choices.entry(choice_index(choice)).or_default();
            if let Some(t) = choice.get("text").and_then(|t| t.as_str()) {
                text.push_str(&t);
            }
            if let Some(r) = choice.get("finish_reason").filter(|r| !r.is_null()) {
                *finish = Some(r);
            }
        }
    }
    if !seen {
        return None;
    }
    let finished = !choices.is_empty() && choices.values().all(|(_, f)| f.is_some());
    header.write("text_completion", error, out, |out| {
        write_array(choices.iter(), out, |(index, (text, finish)), out| {
            let mut choice = ObjectWriter::open(out);
            write_or_null(*finish, choice.key("finish_reason"));
            write_u64(*index, choice.key("index"));
            choice.key("logprobs").extend_from_slice(b"null");
            write_str(text, choice.key("text"));
            choice.close();
        });
    });
    Some(done || finished)
}

/// The objects a Responses API stream cut short is rebuilt on when its
/// events did not send them.
struct Defaults {
    response: JsonView<'static>,
    message: JsonView<'static>,
    function_call: JsonView<'static>,
    text_part: JsonView<'static>,
    refusal_part: JsonView<'static>,
}

static DEFAULTS: LazyLock<Option<Defaults>> = LazyLock::new(|| {
    let view = |text: &'static str| JsonView::parse(text.as_bytes());
    Some(Defaults {
        response: view(r#"{"object":"response"}"#)?,
        message: view(r#"{"role":"assistant","status":"in_progress","type":"message"}"#)?,
        function_call: view(r#"{"status":"in_progress","type":"function_call"}"#)?,
        text_part: view(r#"{"annotations":[],"type":"output_text"}"#)?,
        refusal_part: view(r#"{"type":"refusal"}"#)?,
    })
});

/// As `super::fold_responses`: a terminal event's `response` as it is, or
/// the output rebuilt from the items and deltas that arrived.
fn fold_responses(
    parsed: &[Parsed<'_>],
    error: Option<Data<'_>>,
    out: &mut Vec<u8>,
) -> Option<bool> {
    #[derive(Default)]
    struct Output<'v> {
        items: BTreeMap<u64, At<'v, 'v>>,
        done_items: BTreeSet<u64>,
        parts: BTreeMap<(u64, u64), At<'v, 'v>>,
        done_parts: BTreeSet<(u64, u64)>,
        texts: BTreeMap<(u64, u64), String>,
        refusals: BTreeMap<(u64, u64), String>,
        arguments: BTreeMap<u64, String>,
    }

    let write_error = |out: &mut Vec<u8>| {
        if let Some(error) = error {
            error.write(out);
        }
    };
    let error_member: Member<'_> = (
        "stream_error",
        error.is_some().then_some(&write_error as Write<'_>),
    );

    let mut base: Option<At<'_, '_>> = None;
    let mut o = Output::default();
    for p in parsed {
        let Some(kind) = p.kind() else { continue };
        let d = p.data;
        let get = |k: &str| d.and_then(|d| d.get(k));
        let number = |k: &str| get(k).and_then(|n| n.as_number()?.as_u64()).unwrap_or(0);
        let (oi, ci) = (number("output_index"), number("content_index"));
        let s = |k: &str| get(k).and_then(|s| s.as_str()).unwrap_or_default();
        match kind.as_ref() {
            "response.completed" | "response.incomplete" | "response.failed" => {
                if let Some(r) = get("response").filter(At::is_object) {
                    write_merged(r, &[error_member], out);
                    return Some(true);
                }
            }
            "response.created" | "response.in_progress" | "response.queued" => {
                base = get("response").filter(At::is_object).or(base);
            }
            "response.output_item.added" => {
                if let Some(item) = get("item") {
                    o.items.entry(oi).or_insert(item);
                }
            }
            "response.output_item.done" => {
                if let Some(item) = get("item") {
                    o.items.insert(oi, item);
                    o.done_items.insert(oi);
                }
            }
            "response.content_part.added" => {
                if let Some(part) = get("part") {
                    o.parts.entry((oi, ci)).or_insert(part);
                }
            }
            "response.content_part.done" => {
                if let Some(part) = get("part") {
                    o.parts.insert((oi, ci), part);
                    o.done_parts.insert((oi, ci));
                }
            }
            "response.output_text.delta" => {
                o.texts.entry((oi, ci)).or_default().push_str(&s("delta"));
            }
            "response.output_text.done" => {
                o.texts.insert((oi, ci), s("text").into_owned());
            }
            "response.refusal.delta" => {
                o.refusals
                    .entry((oi, ci))
                    .or_default()
                    .push_str(&s("delta"));
            }
            "response.refusal.done" => {
                o.refusals.insert((oi, ci), s("refusal").into_owned());
            }
            "response.function_call_arguments.delta" => {
                o.arguments.entry(oi).or_default().push_str(&s("delta"));
            }
            "response.function_call_arguments.done" => {
                o.arguments.insert(oi, s("arguments").into_owned());
            }
            _ => {}
        }
    }

    let indexes: BTreeSet<u64> = o
        .items
        .keys()
        .copied()
        .chain(o.texts.keys().map(|(oi, _)| *oi))
        .chain(o.refusals.keys().map(|(oi, _)| *oi))
        .chain(o.arguments.keys().copied())
        .collect();
    if base.is_none() && indexes.is_empty() {
        return None;
    }
    let defaults = DEFAULTS.as_ref()?;

    let write_item = |oi: u64, out: &mut Vec<u8>| {
        let item = match o.items.get(&oi) {
            Some(item) => *item,
            None if o.arguments.contains_key(&oi) => defaults.function_call.root(),
            None => defaults.message.root(),
        };
        if o.done_items.contains(&oi) || !item.is_object() {
            item.write_to(out);
            return;
        }
        let kind = item.get("type").and_then(|t| t.as_str());
        match kind.as_deref() {
            Some("message") => {
                let cis: BTreeSet<u64> = o
                    .parts
                    .keys()
                    .chain(o.texts.keys())
                    .chain(o.refusals.keys())
                    .filter(|(o, _)| *o == oi)
                    .map(|(_, c)| *c)
                    .collect();
                let write_content = |out: &mut Vec<u8>| {
                    write_array(cis.iter(), out, |ci, out| {
                        let key = (oi, *ci);
                        let part = match o.parts.get(&key) {
                            Some(part) => *part,
                            None if o.refusals.contains_key(&key) => defaults.refusal_part.root(),
                            None => defaults.text_part.root(),
                        };
                        if o.done_parts.contains(&key) || !part.is_object() {
                            part.write_to(out);
                            return;
                        }
                        let refusal = o.refusals.get(&key);
                        let text = o.texts.get(&key);
                        let write_refusal =
                            |out: &mut Vec<u8>| write_str(refusal.map_or("", String::as_str), out);
                        let write_text =
                            |out: &mut Vec<u8>| write_str(text.map_or("", String::as_str), out);
                        write_merged(
                            part,
                            &[
                                (
                                    "refusal",
                                    refusal.is_some().then_some(&write_refusal as Write<'_>),
                                ),
                                ("text", text.is_some().then_some(&write_text as Write<'_>)),
                            ],
                            out,
                        );
                    });
                };
                write_merged(item, &[("content", Some(&write_content as Write<'_>))], out);
            }
            Some("function_call") => match o.arguments.get(&oi) {
                Some(args) => {
                    let write_args = |out: &mut Vec<u8>| write_str(args, out);
                    write_merged(item, &[("arguments", Some(&write_args as Write<'_>))], out);
                }
                None => item.write_to(out),
            },
            _ => item.write_to(out),
        }
    };
    let write_output = |out: &mut Vec<u8>| {
        write_array(indexes.iter(), out, |oi, out| write_item(*oi, out));
    };
    let response = base.unwrap_or_else(|| defaults.response.root());
    write_merged(
        response,
        &[("output", Some(&write_output as Write<'_>)), error_member],
        out,
    );
    Some(false)
}

fn raw_events(parsed: &[Parsed<'_>], error: Option<Data<'_>>, out: &mut Vec<u8>) {
    let mut o = ObjectWriter::open(out);
    write_array(
        parsed.iter().take(MAX_RAW_EVENTS),
        o.key("events"),
        |p, out| p.whole().write(out),
    );
    write_str("sse_events", o.key("object"));
    let omitted = parsed.len().saturating_sub(MAX_RAW_EVENTS);
    if omitted > 0 {
        write_u64(omitted as u64, o.key("omitted_events"));
    }
    if let Some(error) = error {
        error.write(o.key("stream_error"));
    }
    o.close();
}

//! A borrowed view of a JSON text, and the text serde_json would print for
//! it, without building a `serde_json::Value` tree.
//!
//! A body is read into one flat list of nodes whose strings and numbers are
//! spans of the raw text; a string is unescaped only when it holds escapes.
//! Each object's members are ordered and de-duplicated as serde_json's map
//! keeps them (sorted by key, the last of equal keys winning), so walking
//! the view visits strings in the same order as walking the parsed `Value`,
//! and [`JsonView::write`] prints exactly what `serde_json::to_string` of
//! that `Value` prints, with chosen strings replaced while writing.
//!
//! The reader is strict: whatever it does not take (invalid UTF-8, a lone
//! surrogate escape, a number serde_json would refuse, nesting deeper than
//! [`MAX_DEPTH`]) makes [`JsonView::parse`] return `None`, and callers fall
//! back to serde_json, which accepts or refuses the text as before.

use std::borrow::Cow;
use std::cell::RefCell;
use std::cmp::Ordering;
use std::sync::Mutex;

use serde_json::Number;

/// Deepest nesting read; deeper texts are left to serde_json (which itself
/// refuses past 127 levels).
pub const MAX_DEPTH: usize = 100;

/// One node of a view: its index in the view's list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(u32);

/// A parsed JSON text.
#[derive(Debug)]
pub struct JsonView<'a> {
    text: &'a str,
    nodes: Vec<Node>,
    /// Children of arrays (one id each) and members of objects (key id,
    /// then value id), each container's a contiguous run.
    items: Vec<u32>,
    root: u32,
}

/// A view's nodes apart from its text, to hand a parsed body on (with the
/// bytes it was read from) to a reader that would otherwise parse it again.
#[derive(Debug)]
pub struct ViewNodes {
    nodes: Vec<Node>,
    items: Vec<u32>,
    root: u32,
    text_len: usize,
}

/// Working buffers of the reader, kept between parses.
#[derive(Debug, Default)]
pub struct Scratch {
    pending: Vec<u32>,
    pending_pairs: Vec<(u32, u32)>,
}

/// A node and its view, to read it.
#[derive(Debug, Clone, Copy)]
pub struct At<'v, 'a> {
    view: &'v JsonView<'a>,
    id: u32,
}

/// What a node is. Strings and numbers hold their span of the text
/// (strings without their quotes); arrays and objects their run of `items`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Null,
    True,
    False,
    /// An integer serde_json prints as written.
    Integer,
    /// Any other number: printed as serde_json prints its value.
    Float,
    /// A string without escapes: its raw text is its value.
    Plain,
    /// A string with escapes.
    Escaped,
    Array,
    Object,
}

#[derive(Debug, Clone, Copy)]
struct Node {
    kind: Kind,
    start: u32,
    end: u32,
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
    nodes: Vec<Node>,
    items: Vec<u32>,
    /// Children of the containers being read, innermost last.
    pending: Vec<u32>,
    pending_pairs: Vec<(u32, u32)>,
}

// === impl JsonView ===

impl<'a> JsonView<'a> {
    /// Reads `bytes` as one JSON value (whitespace around it allowed).
    /// `None` for anything that is not JSON, and for the rare JSON this
    /// reader leaves to serde_json (see the module notes).
    pub fn parse(bytes: &'a [u8]) -> Option<Self> {
        // Every body of every call is parsed here: the working buffers are
        // kept per thread rather than allocated per parse.
        thread_local! {
            static SCRATCH: RefCell<Scratch> = RefCell::default();
        }
        SCRATCH.with(|scratch| match scratch.try_borrow_mut() {
            Ok(mut scratch) => {
                let view = Self::parse_with(bytes, &mut scratch);
                scratch.release_if_large();
                view
            }
            Err(_) => Self::parse_with(bytes, &mut Scratch::default()),
        })
    }

    /// As [`Self::parse`], with working buffers kept between the parses of
    /// many small texts (the events of a stream).
    pub fn parse_with(bytes: &'a [u8], scratch: &mut Scratch) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        if text.len() >= u32::MAX as usize {
            return None;
        }
        let mut pending = std::mem::take(&mut scratch.pending);
        let mut pending_pairs = std::mem::take(&mut scratch.pending_pairs);
        pending.clear();
        pending_pairs.clear();
        // Room for the members of a few open containers, so most bodies
        // never grow these.
        pending.reserve(32);
        pending_pairs.reserve(32);
        // Chat requests hold about one node per 24 bytes, answers with
        // their ids, numbers and usage one per 12: sized for the denser, so
        // neither list grows while most bodies are read.
        let (mut nodes, mut items) = NodeLists::take();
        nodes.reserve(bytes.len() / 10 + 8);
        items.reserve(bytes.len() / 10 + 8);
        let mut parser = Parser {
            text,
            bytes,
            pos: 0,
            nodes,
            items,
            pending,
            pending_pairs,
        };
        let root = parser.read_root();
        scratch.pending = std::mem::take(&mut parser.pending);
        scratch.pending_pairs = std::mem::take(&mut parser.pending_pairs);
        let Some(root) = root else {
            NodeLists::give_back(parser.nodes, parser.items);
            return None;
        };
        Some(Self {
            text,
            nodes: parser.nodes,
            items: parser.items,
            root,
        })
    }

    /// The nodes, to be joined again with the same text by
    /// [`Self::with_nodes`].
    pub fn into_nodes(mut self) -> ViewNodes {
        ViewNodes {
            nodes: std::mem::take(&mut self.nodes),
            items: std::mem::take(&mut self.items),
            root: self.root,
            text_len: self.text.len(),
        }
    }

    /// The view of `bytes` that `nodes` were read from, without reading
    /// them again. `bytes` must be the text they were read from; `None`
    /// when it plainly is not (another length, or not UTF-8).
    pub fn with_nodes(bytes: &'a [u8], mut nodes: ViewNodes) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        (text.len() == nodes.text_len).then(|| Self {
            text,
            nodes: std::mem::take(&mut nodes.nodes),
            items: std::mem::take(&mut nodes.items),
            root: nodes.root,
        })
    }

    /// How many nodes the view holds (strings, numbers, containers and
    /// keys alike): a bound on how many strings it has.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the view is empty; never, as a view holds its root.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The node `id` of this view; `None` when the view has no such node.
    pub fn at(&self, id: NodeId) -> Option<At<'_, 'a>> {
        (usize::try_from(id.0).ok()? < self.nodes.len()).then_some(At {
            view: self,
            id: id.0,
        })
    }

    pub fn root(&self) -> At<'_, 'a> {
        At {
            view: self,
            id: self.root,
        }
    }

    /// The text serde_json prints for this value (`to_string` of the parsed
    /// `Value`), with the strings `replaced` names (sorted by node) written
    /// as the given text instead.
    pub fn write(&self, replaced: &[(NodeId, String)]) -> String {
        // Written into a buffer kept per thread, then copied once into a
        // string of its exact length: a stored body is kept as a boxed
        // `str`, which a string with room to spare would be reallocated
        // into.
        thread_local! {
            static OUT: RefCell<Vec<u8>> = RefCell::default();
        }
        OUT.with(|out| match out.try_borrow_mut() {
            Ok(mut out) => {
                out.clear();
                self.write_node(self.root, replaced, &mut out);
                let text = utf8_text(&out);
                if out.capacity() > KEPT_OUTPUT_BYTES {
                    *out = Vec::new();
                }
                text
            }
            Err(_) => {
                let mut out = Vec::with_capacity(self.text.len() + 16 * replaced.len());
                self.write_node(self.root, replaced, &mut out);
                utf8_text(&out)
            }
        })
    }

    fn write_node(&self, id: u32, replaced: &[(NodeId, String)], out: &mut Vec<u8>) {
        let node = self.nodes[id as usize];
        match node.kind {
            Kind::Null => out.extend_from_slice(b"null"),
            Kind::True => out.extend_from_slice(b"true"),
            Kind::False => out.extend_from_slice(b"false"),
            Kind::Integer => out.extend_from_slice(self.span(node).as_bytes()),
            Kind::Float => {
                if let Ok(n) = self.span(node).parse::<Number>() {
                    let _ = serde_json::to_writer(&mut *out, &n);
                }
            }
            Kind::Plain | Kind::Escaped => {
                match replaced.binary_search_by_key(&NodeId(id), |(n, _)| *n) {
                    Ok(i) => write_string(&replaced[i].1, out),
                    Err(_) => self.write_string_node(node, out),
                }
            }
            Kind::Array => {
                out.push(b'[');
                for (i, &child) in self.run(node).iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_node(child, replaced, out);
                }
                out.push(b']');
            }
            Kind::Object => {
                out.push(b'{');
                for (i, pair) in self.run(node).chunks_exact(2).enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    self.write_string_node(self.nodes[pair[0] as usize], out);
                    out.push(b':');
                    self.write_node(pair[1], replaced, out);
                }
                out.push(b'}');
            }
        }
    }

    fn write_string_node(&self, node: Node, out: &mut Vec<u8>) {
        if node.kind == Kind::Plain {
            // No escapes and (the reader checked) no control characters:
            // serde_json would write the same bytes.
            out.push(b'"');
            out.extend_from_slice(self.span(node).as_bytes());
            out.push(b'"');
        } else {
            write_string(&unescape(self.span(node)), out);
        }
    }

    fn span(&self, node: Node) -> &'a str {
        &self.text[node.start as usize..node.end as usize]
    }

    fn run(&self, node: Node) -> &[u32] {
        &self.items[node.start as usize..node.end as usize]
    }

    fn string_of(&self, node: Node) -> Cow<'a, str> {
        match node.kind {
            Kind::Plain => Cow::Borrowed(self.span(node)),
            _ => Cow::Owned(unescape(self.span(node))),
        }
    }
}

impl Drop for JsonView<'_> {
    fn drop(&mut self) {
        NodeLists::give_back(
            std::mem::take(&mut self.nodes),
            std::mem::take(&mut self.items),
        );
    }
}

impl Drop for ViewNodes {
    fn drop(&mut self) {
        NodeLists::give_back(
            std::mem::take(&mut self.nodes),
            std::mem::take(&mut self.items),
        );
    }
}

/// Node lists of views that were dropped, for the next parse. Shared by
/// every thread rather than kept per thread: a request body is read on
/// the request path and its view dropped where the record is built, so
/// lists kept per thread would pile up on one side and be missing on the
/// other.
struct NodeLists;

/// Lists of a parse and its items, kept for the next.
type Lists = (Vec<Node>, Vec<u32>);

static KEPT_LISTS: Mutex<Vec<Lists>> = Mutex::new(Vec::new());

impl NodeLists {
    /// Lists kept at most: a few per core covers the views alive at once.
    const KEPT: usize = 16;
    /// Entries a kept list may hold (a body of about 40 KB); a rare large
    /// body's lists are let go rather than held.
    const KEPT_ENTRIES: usize = 4096;

    /// Empty lists, with room from an earlier parse when there are some.
    fn take() -> Lists {
        KEPT_LISTS
            .lock()
            .ok()
            .and_then(|mut kept| kept.pop())
            .unwrap_or_default()
    }

    fn give_back(mut nodes: Vec<Node>, mut items: Vec<u32>) {
        let keep = |capacity: usize| (1..=Self::KEPT_ENTRIES).contains(&capacity);
        if !keep(nodes.capacity()) || !keep(items.capacity()) {
            return;
        }
        nodes.clear();
        items.clear();
        if let Ok(mut kept) = KEPT_LISTS.lock() {
            if kept.len() < Self::KEPT {
                // Room for every list is made once, not on each return.
                let room = Self::KEPT - kept.len();
                kept.reserve_exact(room);
                kept.push((nodes, items));
            }
        }
    }
}

// === impl Scratch ===

impl Scratch {
    /// Entries a kept buffer may hold; a rare huge body's are let go
    /// rather than held for the life of the thread.
    const KEPT_ENTRIES: usize = 4096;

    fn release_if_large(&mut self) {
        if self.pending.capacity() > Self::KEPT_ENTRIES {
            self.pending = Vec::new();
        }
        if self.pending_pairs.capacity() > Self::KEPT_ENTRIES {
            self.pending_pairs = Vec::new();
        }
    }
}

/// Most bytes of written output kept per thread between writes.
const KEPT_OUTPUT_BYTES: usize = 64 * 1024;

/// Written output as text. Every piece written is UTF-8: spans of a `str`
/// on character boundaries, ASCII punctuation, and serde_json's own output.
fn utf8_text(out: &[u8]) -> String {
    std::str::from_utf8(out).unwrap_or_default().to_owned()
}

/// Writes `s` as serde_json writes a string.
fn write_string(s: &str, out: &mut Vec<u8>) {
    let _ = serde_json::to_writer(out, s);
}

// === impl At ===

impl<'v, 'a> At<'v, 'a> {
    pub fn id(&self) -> NodeId {
        NodeId(self.id)
    }

    fn node(&self) -> Node {
        self.view.nodes[self.id as usize]
    }

    fn at(&self, id: u32) -> Self {
        Self {
            view: self.view,
            id,
        }
    }

    /// The member `key` of an object (the one serde_json keeps).
    pub fn get(&self, key: &str) -> Option<Self> {
        self.members()?
            .find(|(k, _)| k.as_ref() == key)
            .map(|(_, v)| v)
    }

    /// An object's members in serde_json's order; `None` for other nodes.
    pub fn members(self) -> Option<impl Iterator<Item = (Cow<'a, str>, At<'v, 'a>)> + 'v> {
        let node = self.node();
        (node.kind == Kind::Object).then(|| {
            let view = self.view;
            view.run(node).chunks_exact(2).map(move |pair| {
                (
                    view.string_of(view.nodes[pair[0] as usize]),
                    self.at(pair[1]),
                )
            })
        })
    }

    /// An array's items; `None` for other nodes.
    pub fn items(self) -> Option<impl Iterator<Item = At<'v, 'a>> + 'v> {
        let node = self.node();
        (node.kind == Kind::Array).then(|| self.view.run(node).iter().map(move |&i| self.at(i)))
    }

    pub fn as_str(&self) -> Option<Cow<'a, str>> {
        let node = self.node();
        matches!(node.kind, Kind::Plain | Kind::Escaped).then(|| self.view.string_of(node))
    }

    pub fn as_bool(&self) -> Option<bool> {
        match self.node().kind {
            Kind::True => Some(true),
            Kind::False => Some(false),
            _ => None,
        }
    }

    /// The number as serde_json reads it.
    pub fn as_number(&self) -> Option<Number> {
        let node = self.node();
        matches!(node.kind, Kind::Integer | Kind::Float)
            .then(|| self.view.span(node).parse().ok())
            .flatten()
    }

    pub fn is_object(&self) -> bool {
        self.node().kind == Kind::Object
    }

    pub fn is_array(&self) -> bool {
        self.node().kind == Kind::Array
    }

    pub fn is_null(&self) -> bool {
        self.node().kind == Kind::Null
    }

    /// Appends the text serde_json prints for this value.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        self.view.write_node(self.id, &[], out);
    }
}

// === impl Parser ===

impl<'a> Parser<'a> {
    /// The whole text as one value, whitespace around it allowed.
    fn read_root(&mut self) -> Option<u32> {
        self.skip_ws();
        let root = self.value(0)?;
        self.skip_ws();
        (self.pos == self.bytes.len()).then_some(root)
    }

    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\n' | b'\r' | b'\t') = self.bytes.get(self.pos) {
            self.pos += 1;
        }
    }

    fn push(&mut self, kind: Kind, start: usize, end: usize) -> u32 {
        let id = self.nodes.len() as u32;
        self.nodes.push(Node {
            kind,
            start: start as u32,
            end: end as u32,
        });
        id
    }

    fn literal(&mut self, word: &[u8], kind: Kind) -> Option<u32> {
        if !self.bytes[self.pos..].starts_with(word) {
            return None;
        }
        self.pos += word.len();
        Some(self.push(kind, 0, 0))
    }

    fn value(&mut self, depth: usize) -> Option<u32> {
        match *self.bytes.get(self.pos)? {
            b'n' => self.literal(b"null", Kind::Null),
            b't' => self.literal(b"true", Kind::True),
            b'f' => self.literal(b"false", Kind::False),
            b'"' => self.string(),
            b'-' | b'0'..=b'9' => self.number(),
            b'[' if depth < MAX_DEPTH => self.array(depth + 1),
            b'{' if depth < MAX_DEPTH => self.object(depth + 1),
            _ => None,
        }
    }

    fn string(&mut self) -> Option<u32> {
        self.pos += 1;
        let start = self.pos;
        let mut escaped = false;
        loop {
            let at = memchr::memchr2(b'"', b'\\', &self.bytes[self.pos..])? + self.pos;
            // JSON allows no raw control characters in a string.
            if self.bytes[self.pos..at].iter().any(|&b| b < 0x20) {
                return None;
            }
            if self.bytes[at] == b'"' {
                self.pos = at + 1;
                let kind = if escaped { Kind::Escaped } else { Kind::Plain };
                return Some(self.push(kind, start, at));
            }
            escaped = true;
            self.pos = at + 1;
            self.escape()?;
        }
    }

    /// Checks one escape after its backslash.
    fn escape(&mut self) -> Option<()> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        match b {
            b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Some(()),
            b'u' => {
                let unit = self.hex4()?;
                match unit {
                    // A leading surrogate must be followed by a trailing one;
                    // serde_json refuses lone ones.
                    0xD800..=0xDBFF => {
                        if !self.bytes[self.pos..].starts_with(b"\\u") {
                            return None;
                        }
                        self.pos += 2;
                        matches!(self.hex4()?, 0xDC00..=0xDFFF).then_some(())
                    }
                    0xDC00..=0xDFFF => None,
                    _ => Some(()),
                }
            }
            _ => None,
        }
    }

    fn hex4(&mut self) -> Option<u32> {
        let digits = self.text.get(self.pos..self.pos + 4)?;
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        self.pos += 4;
        u32::from_str_radix(digits, 16).ok()
    }

    fn number(&mut self) -> Option<u32> {
        let start = self.pos;
        let digits = |p: &mut Self| {
            let from = p.pos;
            while p.bytes.get(p.pos).is_some_and(u8::is_ascii_digit) {
                p.pos += 1;
            }
            p.pos > from
        };
        let negative = self.bytes[self.pos] == b'-';
        if negative {
            self.pos += 1;
        }
        match self.bytes.get(self.pos) {
            Some(b'0') => {
                self.pos += 1;
                if self.bytes.get(self.pos).is_some_and(u8::is_ascii_digit) {
                    return None;
                }
            }
            Some(b'1'..=b'9') => {
                digits(self);
            }
            _ => return None,
        }
        let mut integer = true;
        if self.bytes.get(self.pos) == Some(&b'.') {
            self.pos += 1;
            integer = false;
            if !digits(self) {
                return None;
            }
        }
        if let Some(b'e' | b'E') = self.bytes.get(self.pos) {
            self.pos += 1;
            integer = false;
            if let Some(b'+' | b'-') = self.bytes.get(self.pos) {
                self.pos += 1;
            }
            if !digits(self) {
                return None;
            }
        }
        let token = &self.text[start..self.pos];
        // serde_json keeps integers that fit u64 (or, negative and not
        // zero, i64) as written; every other number becomes an f64, which
        // it prints its own way.
        let kept = integer
            && if negative {
                token.parse::<i64>().is_ok_and(|n| n != 0)
            } else {
                token.parse::<u64>().is_ok()
            };
        if kept {
            return Some(self.push(Kind::Integer, start, self.pos));
        }
        // A number serde_json refuses (out of range) is left to it.
        token.parse::<Number>().ok()?;
        Some(self.push(Kind::Float, start, self.pos))
    }

    fn array(&mut self, depth: usize) -> Option<u32> {
        self.pos += 1;
        let id = self.push(Kind::Array, 0, 0);
        let mark = self.pending.len();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b']') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                let child = self.value(depth)?;
                self.pending.push(child);
                self.skip_ws();
                match *self.bytes.get(self.pos)? {
                    b',' => self.pos += 1,
                    b']' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        let start = self.items.len();
        self.items.extend(self.pending.drain(mark..));
        self.nodes[id as usize].start = start as u32;
        self.nodes[id as usize].end = self.items.len() as u32;
        Some(id)
    }

    fn object(&mut self, depth: usize) -> Option<u32> {
        self.pos += 1;
        let id = self.push(Kind::Object, 0, 0);
        let mark = self.pending_pairs.len();
        self.skip_ws();
        if self.bytes.get(self.pos) == Some(&b'}') {
            self.pos += 1;
        } else {
            loop {
                self.skip_ws();
                if self.bytes.get(self.pos) != Some(&b'"') {
                    return None;
                }
                let key = self.string()?;
                self.skip_ws();
                if self.bytes.get(self.pos) != Some(&b':') {
                    return None;
                }
                self.pos += 1;
                self.skip_ws();
                let value = self.value(depth)?;
                self.pending_pairs.push((key, value));
                self.skip_ws();
                match *self.bytes.get(self.pos)? {
                    b',' => self.pos += 1,
                    b'}' => {
                        self.pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        self.order_members(mark);
        let start = self.items.len();
        for (key, value) in self.pending_pairs.drain(mark..) {
            self.items.push(key);
            self.items.push(value);
        }
        self.nodes[id as usize].start = start as u32;
        self.nodes[id as usize].end = self.items.len() as u32;
        Some(id)
    }

    /// Sorts the members read since `mark` by key and keeps the last of
    /// equal keys, as serde_json's map does.
    fn order_members(&mut self, mark: usize) {
        let (nodes, text) = (&self.nodes, self.text);
        let key = |id: u32| {
            let node = nodes[id as usize];
            let raw = &text[node.start as usize..node.end as usize];
            match node.kind {
                Kind::Plain => Cow::Borrowed(raw),
                _ => Cow::Owned(unescape(raw)),
            }
        };
        let cmp = |a: u32, b: u32| -> Ordering {
            let (ka, kb) = (nodes[a as usize], nodes[b as usize]);
            if ka.kind == Kind::Plain && kb.kind == Kind::Plain {
                let ra = &text[ka.start as usize..ka.end as usize];
                let rb = &text[kb.start as usize..kb.end as usize];
                ra.cmp(rb)
            } else {
                key(a).cmp(&key(b))
            }
        };
        let members = &mut self.pending_pairs[mark..];
        if members
            .windows(2)
            .all(|w| cmp(w[0].0, w[1].0) == Ordering::Less)
        {
            return;
        }
        // Stable: equal keys keep their order, so the last is the one sent
        // last.
        members.sort_by(|a, b| cmp(a.0, b.0));
        let mut kept = mark;
        for i in mark..self.pending_pairs.len() {
            let next_equal = i + 1 < self.pending_pairs.len()
                && cmp(self.pending_pairs[i].0, self.pending_pairs[i + 1].0) == Ordering::Equal;
            if !next_equal {
                self.pending_pairs[kept] = self.pending_pairs[i];
                kept += 1;
            }
        }
        self.pending_pairs.truncate(kept);
    }
}

/// The value of a string's raw text (between its quotes), which the reader
/// has checked.
fn unescape(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(at) = rest.find('\\') {
        out.push_str(&rest[..at]);
        let esc = rest.as_bytes()[at + 1];
        rest = &rest[at + 2..];
        let c = match esc {
            b'b' => '\u{8}',
            b'f' => '\u{c}',
            b'n' => '\n',
            b'r' => '\r',
            b't' => '\t',
            b'u' => {
                let unit = u32::from_str_radix(&rest[..4], 16).unwrap_or(0xFFFD);
                rest = &rest[4..];
                if (0xD800..0xDC00).contains(&unit) {
                    let low = u32::from_str_radix(&rest[2..6], 16).unwrap_or(0xDC00);
                    rest = &rest[6..];
                    char::from_u32(0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00))
                        .unwrap_or('\u{FFFD}')
                } else {
                    char::from_u32(unit).unwrap_or('\u{FFFD}')
                }
            }
            other => char::from(other),
        };
        out.push(c);
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests;

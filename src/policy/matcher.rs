//! The one-pass scanner behind every policy: all detectors of all policies
//! compiled into one [`RegexSet`] that tells, in a single scan, whether any
//! of them can match a text at all. Most texts hold nothing, and then that
//! scan is all it costs.
//!
//! When something matches, one more pass over the text, a lazy DFA of all
//! detectors that reports every place a match of each detector ends, says
//! which detectors match and where their first and last matches end. Each
//! of those then searches only from the earliest place its first match can
//! start to its last match's end (the whole text when a detector's matches
//! have no longest length), so a detector that matches once in a long text
//! reads a few bytes around that match, not the text. Validators (Luhn,
//! mod-97, ranges, parsing) run on the candidates alone.
//!
//! Short texts that passed the quick test are remembered with what was
//! found in them, per thread (see [`Recent`]): header values, paths, model
//! names and object kinds recur from call to call, and the same text
//! always holds the same matches. Texts holding a secret are not kept.

use std::borrow::Cow;
use std::cell::RefCell;
use std::fmt;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use regex::{Regex, RegexSet, RegexSetBuilder};
use regex_automata::hybrid::dfa::{Cache, OverlappingState, DFA};
use regex_automata::util::pool::Pool;
use regex_automata::{Input, MatchKind};
use regex_syntax::hir::{Class, Hir, HirKind};

use super::builtin::{Builtin, Validate};
use super::normalize::Folded;

/// One compiled detector: a built-in one, a user pattern or a keyword list.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    /// Entity type, upper case: `CREDIT_CARD`, `CUSTOM_PATTERN`, `KEYWORD`.
    /// Static, so verdicts name it without a copy.
    pub kind: &'static str,
    pub marker: String,
    regex: Regex,
    group: usize,
    validate: Option<Validate>,
    /// Built-in detectors compete for text (a card is not also a phone);
    /// user patterns and keywords stand apart, so a policy's own pattern
    /// is never hidden by a built-in detector.
    pub builtin: bool,
    pub secret: bool,
    /// The fewest bytes a match holds (0: unknown, or it can be empty).
    min_len: usize,
    /// The most bytes a match holds; `None` when unbounded or unknown.
    max_len: Option<usize>,
    /// What a match of each branch of the pattern (the pattern itself
    /// when it is not an alternation) needs: that many bytes at least, and
    /// one of a set of bytes (`None`: no byte in particular).
    shapes: Vec<Shape>,
}

/// What a match of one branch of a pattern needs: that many bytes at
/// least, and one of a set of bytes (`None`: no byte in particular).
type Shape = (usize, Option<ByteSet>);

/// A set of bytes, one bit each.
type ByteSet = [u64; 4];

/// One accepted match; never holds the matched text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hit {
    pub entry: usize,
    pub start: usize,
    pub end: usize,
}

/// The compiled detectors, in priority order.
#[derive(Debug, Clone)]
pub(crate) struct Matcher {
    /// Tells this matcher's remembered texts from another's (0: none are
    /// remembered); clones share it, as they find the same matches.
    id: u64,
    entries: Vec<Entry>,
    set: RegexSet,
    /// Where each detector's matches end; `None` when the detectors do not
    /// fit in one lazy DFA (then the set says which match, and each of
    /// those searches the whole text).
    ends: Option<Arc<Ends>>,
    /// No detector matches fewer bytes: shorter ASCII texts (roles, most
    /// keys, short ids) need no scan at all.
    min_len: usize,
    /// By length up to [`QUICK_LEN`]: the bytes of which an ASCII text of
    /// that length must hold one for some detector to match it (the needed
    /// bytes of every detector branch that short a text can hold).
    quick: Vec<ByteSet>,
}

/// Room for the set's lazy DFA: the set holds many patterns, and a cache
/// that is too small is cleared over and over, which is slow.
const DFA_BYTES: usize = 16 << 20;

/// Builds a lazy DFA's cache for the pool of one thread.
type MakeCache = Box<dyn Fn() -> Cache + Send + Sync + UnwindSafe + RefUnwindSafe>;

/// All detectors as one lazy DFA that reports, in one pass, every place
/// a match of each detector ends (overlapping matches included).
struct Ends {
    dfa: DFA,
    caches: Pool<Cache, MakeCache>,
}

/// Where the matches of one detector end in a text: the first and the
/// last end.
type Span = Option<(usize, usize)>;

thread_local! {
    /// Per detector, where its matches end in the text being searched;
    /// one per thread, kept between searches (as long as the detectors).
    static SPANS: RefCell<Vec<Span>> = const { RefCell::new(Vec::new()) };
    /// The matches of one text, for [`Matcher::find_with`].
    static HITS: RefCell<Vec<Hit>> = const { RefCell::new(Vec::new()) };
    /// Short texts searched lately on this thread, with their matches.
    static RECENT: RefCell<Recent> = const { RefCell::new(Recent { slots: Vec::new() }) };
}

/// Numbers the matchers, for [`Matcher::id`].
static NEXT_MATCHER: AtomicU64 = AtomicU64::new(1);

/// Longest text remembered with its matches.
const RECENT_LEN: usize = 64;

/// How many texts a thread remembers (a power of two): one per slot, the
/// slot chosen by the text's hash, the newest text keeping it.
const RECENT_SLOTS: usize = 256;

/// Most matches of a text that is remembered; a text with more is
/// searched each time.
const RECENT_HITS: usize = 4;

/// Short texts searched lately, with their matches: what a search found
/// in a text it finds there again, so a text seen before costs a hash
/// and a comparison. The text is kept whole and compared, never trusted
/// to its hash.
struct Recent {
    /// Allocated on the first search of the thread.
    slots: Vec<Remembered>,
}

/// One remembered text: its matcher, bytes and matches (in its offsets;
/// the entry's index fits 16 bits, offsets 8).
#[derive(Clone, Copy)]
struct Remembered {
    matcher: u64,
    len: u8,
    hits: u8,
    text: [u8; RECENT_LEN],
    found: [(u16, u8, u8); RECENT_HITS],
}

impl Recent {
    const EMPTY: Remembered = Remembered {
        matcher: 0,
        len: 0,
        hits: 0,
        text: [0; RECENT_LEN],
        found: [(0, 0, 0); RECENT_HITS],
    };

    /// The slot of `text`: a multiplicative hash of its bytes, eight at a
    /// time.
    fn slot(matcher: u64, text: &[u8]) -> usize {
        const K: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut h = (matcher ^ text.len() as u64).wrapping_mul(K);
        let mut chunks = text.chunks_exact(8);
        for chunk in &mut chunks {
            let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            h = (h.rotate_left(5) ^ word).wrapping_mul(K);
        }
        let mut tail = [0u8; 8];
        tail[..chunks.remainder().len()].copy_from_slice(chunks.remainder());
        h = (h.rotate_left(5) ^ u64::from_le_bytes(tail)).wrapping_mul(K);
        (h >> 56) as usize & (RECENT_SLOTS - 1)
    }

    /// Fills `out` with the matches remembered for `text`; `false` when it
    /// is not remembered.
    fn recall(&self, matcher: u64, text: &[u8], out: &mut Vec<Hit>) -> bool {
        let Some(r) = self.slots.get(Self::slot(matcher, text)) else {
            return false;
        };
        if r.matcher != matcher || usize::from(r.len) != text.len() || &r.text[..text.len()] != text
        {
            return false;
        }
        out.extend(
            r.found[..usize::from(r.hits)]
                .iter()
                .map(|&(entry, start, end)| Hit {
                    entry: usize::from(entry),
                    start: usize::from(start),
                    end: usize::from(end),
                }),
        );
        true
    }

    /// Remembers `found` as the matches of `text` (at most
    /// [`RECENT_LEN`] bytes), unless there are too many.
    fn remember(&mut self, matcher: u64, text: &[u8], found: &[Hit]) {
        if found.len() > RECENT_HITS {
            return;
        }
        let mut r = Self::EMPTY;
        for (slot, h) in r.found.iter_mut().zip(found) {
            let (Ok(entry), Ok(start), Ok(end)) = (
                u16::try_from(h.entry),
                u8::try_from(h.start),
                u8::try_from(h.end),
            ) else {
                return;
            };
            *slot = (entry, start, end);
        }
        let (Ok(len), Ok(hits)) = (u8::try_from(text.len()), u8::try_from(found.len())) else {
            return;
        };
        if self.slots.is_empty() {
            self.slots = vec![Self::EMPTY; RECENT_SLOTS];
        }
        r.matcher = matcher;
        r.len = len;
        r.hits = hits;
        r.text[..text.len()].copy_from_slice(text);
        self.slots[Self::slot(matcher, text)] = r;
    }
}

/// Most matches whose buffer a thread keeps for its next text.
const KEPT_HITS: usize = 1024;

/// Short ASCII texts (header values, keys, roles, ids) are first checked
/// against each detector's length and needed bytes, which tells most of
/// them clean without a search.
const QUICK_LEN: usize = 64;

/// The fewest and the most bytes `pattern` can match (0 and `None` when
/// unknown), and the length and bytes a match of each branch needs.
fn match_shape(pattern: &str) -> (usize, Option<usize>, Vec<Shape>) {
    let Ok(hir) = regex_syntax::parse(pattern) else {
        return (0, None, vec![(0, None)]);
    };
    let shape = |h: &Hir| (h.properties().minimum_len().unwrap_or(0), needed_bytes(h));
    let shapes = match hir.kind() {
        HirKind::Alternation(branches) => branches.iter().map(shape).collect(),
        _ => vec![shape(&hir)],
    };
    (
        hir.properties().minimum_len().unwrap_or(0),
        hir.properties().maximum_len(),
        shapes,
    )
}

/// Bytes of which every match of `hir` holds at least one, chosen to be
/// rare in ordinary text (a concatenation needs what any of its parts
/// needs, so the rarest part's bytes are taken); `None` when a match may
/// hold any bytes at all.
fn needed_bytes(hir: &Hir) -> Option<ByteSet> {
    match hir.kind() {
        HirKind::Empty | HirKind::Look(_) => None,
        HirKind::Literal(literal) => literal
            .0
            .iter()
            .map(|&b| with_byte(b..=b))
            .min_by_key(commonness),
        HirKind::Class(Class::Bytes(class)) => Some(
            class
                .ranges()
                .iter()
                .fold([0; 4], |set, r| union(set, with_byte(r.start()..=r.end()))),
        ),
        HirKind::Class(Class::Unicode(class)) => {
            // A character's first byte is in the text with it, and first
            // bytes grow with the character.
            let mut set = [0; 4];
            for r in class.ranges() {
                let first = |c: char| {
                    let mut buf = [0; 4];
                    c.encode_utf8(&mut buf).as_bytes()[0]
                };
                set = union(set, with_byte(first(r.start())..=first(r.end())));
            }
            Some(set)
        }
        HirKind::Repetition(rep) if rep.min == 0 => None,
        HirKind::Repetition(rep) => needed_bytes(&rep.sub),
        HirKind::Capture(capture) => needed_bytes(&capture.sub),
        HirKind::Concat(parts) => parts.iter().filter_map(needed_bytes).min_by_key(commonness),
        HirKind::Alternation(branches) => branches
            .iter()
            .try_fold([0; 4], |set, b| Some(union(set, needed_bytes(b)?))),
    }
}

fn with_byte(bytes: std::ops::RangeInclusive<u8>) -> ByteSet {
    let mut set = [0; 4];
    for b in bytes {
        set[usize::from(b >> 6)] |= 1 << (b & 63);
    }
    set
}

fn union(a: ByteSet, b: ByteSet) -> ByteSet {
    [a[0] | b[0], a[1] | b[1], a[2] | b[2], a[3] | b[3]]
}

/// How often text holds some byte of `set`, roughly: spaces and small
/// letters most, then punctuation that ends words, capitals and digits.
fn commonness(set: &ByteSet) -> u32 {
    (0..=255u8)
        .filter(|&b| set[usize::from(b >> 6)] & (1 << (b & 63)) != 0)
        .map(|b| match b {
            b' ' => 20,
            b'a'..=b'z' => 10,
            b'.' | b',' => 5,
            b'A'..=b'Z' => 4,
            b'0'..=b'9' => 3,
            _ => 1,
        })
        .sum()
}

// === impl Entry ===

impl Entry {
    pub fn builtin(b: &Builtin) -> Result<Self, regex::Error> {
        Ok(Self::new(
            b.kind,
            Regex::new(b.pattern)?,
            b.group,
            b.validate,
            true,
            b.secret,
        ))
    }

    pub fn custom(kind: &'static str, regex: Regex) -> Self {
        Self::new(kind, regex, 0, None, false, false)
    }

    fn new(
        kind: &'static str,
        regex: Regex,
        group: usize,
        validate: Option<Validate>,
        builtin: bool,
        secret: bool,
    ) -> Self {
        let (min_len, max_len, shapes) = match_shape(regex.as_str());
        Self {
            marker: format!("[REDACTED:{kind}]"),
            kind,
            regex,
            group,
            validate,
            builtin,
            secret,
            min_len,
            max_len,
            shapes,
        }
    }

    /// Spans the pattern finds in `text` before any validator has looked
    /// at them (text is folded first, as for [`Matcher::find`]).
    pub fn candidates(&self, text: &str) -> Vec<(usize, usize)> {
        let folded = Folded::new(text);
        let mut out = Vec::new();
        for caps in self.regex.captures_iter(folded.text()) {
            if let Some(m) = caps.get(self.group) {
                out.push(folded.original_span(m.start(), m.end()));
            }
        }
        out
    }

    /// Keeps the candidate `start..end` if it is not empty and its
    /// validator (if any) accepts it.
    fn accept(&self, index: usize, text: &str, start: usize, end: usize, out: &mut Vec<Hit>) {
        // An empty match (a user pattern such as `\b`) marks nothing.
        if start == end {
            return;
        }
        let span = match self.validate {
            Some(validate) => validate(text, start..end),
            None => Some(start..end),
        };
        if let Some(span) = span {
            out.push(Hit {
                entry: index,
                start: span.start,
                end: span.end,
            });
        }
    }

    /// Every match of the pattern in `text`, searched from its start.
    fn find(&self, index: usize, text: &str, out: &mut Vec<Hit>) {
        if self.group == 0 {
            for m in self.regex.find_iter(text) {
                self.accept(index, text, m.start(), m.end(), out);
            }
        } else {
            for caps in self.regex.captures_iter(text) {
                if let Some(m) = caps.get(self.group) {
                    self.accept(index, text, m.start(), m.end(), out);
                }
            }
        }
    }

    /// As [`Self::find`], knowing that the pattern's matches end between
    /// `first_end` and `last_end` (both included): no match starts before
    /// `first_end` less the longest match, and none ends after `last_end`,
    /// so the search starts there and stops at the first match that
    /// reaches `last_end`. It finds what [`Self::find`] finds: the matches
    /// of a search from the start, one after the other, begin no earlier.
    fn find_between(
        &self,
        index: usize,
        text: &str,
        (first_end, last_end): (usize, usize),
        out: &mut Vec<Hit>,
    ) {
        // An empty match moves the next search on by a character, which
        // the loop below does not do.
        if self.min_len == 0 {
            return self.find(index, text, out);
        }
        let mut at = self.max_len.map_or(0, |max| first_end.saturating_sub(max));
        while !text.is_char_boundary(at) {
            at -= 1;
        }
        while at < last_end {
            let end = if self.group == 0 {
                let Some(m) = self.regex.find_at(text, at) else {
                    break;
                };
                self.accept(index, text, m.start(), m.end(), out);
                m.end()
            } else {
                let Some(caps) = self.regex.captures_at(text, at) else {
                    break;
                };
                if let Some(m) = caps.get(self.group) {
                    self.accept(index, text, m.start(), m.end(), out);
                }
                caps.get(0).map_or(text.len(), |m| m.end())
            };
            at = end;
        }
    }
}

// === impl Ends ===

impl Ends {
    fn new(patterns: &[&str]) -> Option<Self> {
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .cache_capacity(DFA_BYTES)
                    .skip_cache_capacity_check(true)
                    // ASCII texts are searched even by patterns with
                    // Unicode word boundaries; other texts with them fall
                    // back to the set (see `Matcher::find_folded`).
                    .unicode_word_boundary(true),
            )
            .build_many(patterns)
            .ok()?;
        let for_pool = dfa.clone();
        let make: MakeCache = Box::new(move || for_pool.create_cache());
        Some(Self {
            dfa,
            caches: Pool::new(make),
        })
    }

    /// Fills `spans` (one per detector) with where each detector's matches
    /// end in `text`; `false` when the DFA cannot search this text.
    fn scan(&self, text: &str, spans: &mut Vec<Span>, detectors: usize) -> bool {
        spans.clear();
        spans.resize(detectors, None);
        let mut cache = self.caches.get();
        let input = Input::new(text);
        let mut state = OverlappingState::start();
        loop {
            if self
                .dfa
                .try_search_overlapping_fwd(&mut cache, &input, &mut state)
                .is_err()
            {
                return false;
            }
            let Some(m) = state.get_match() else {
                return true;
            };
            let end = m.offset();
            let span = &mut spans[m.pattern().as_usize()];
            *span = Some(match *span {
                Some((first, last)) => (first.min(end), last.max(end)),
                None => (end, end),
            });
        }
    }
}

impl fmt::Debug for Ends {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ends").finish_non_exhaustive()
    }
}

// === impl Matcher ===

impl Matcher {
    pub fn new(entries: Vec<Entry>) -> Result<Self, regex::Error> {
        let patterns: Vec<&str> = entries.iter().map(|e| e.regex.as_str()).collect();
        let set = RegexSetBuilder::new(&patterns)
            .dfa_size_limit(DFA_BYTES)
            .build()?;
        let ends = (!patterns.is_empty())
            .then(|| Ends::new(&patterns))
            .flatten()
            .map(Arc::new);
        let min_len = entries.iter().map(|e| e.min_len).min().unwrap_or(0);
        let quick = (0..=QUICK_LEN)
            .map(|len| {
                entries
                    .iter()
                    .flat_map(|e| &e.shapes)
                    .filter(|(min, _)| *min <= len)
                    .fold([0; 4], |set, (_, needs)| {
                        union(set, needs.unwrap_or([u64::MAX; 4]))
                    })
            })
            .collect();
        Ok(Self {
            id: NEXT_MATCHER.fetch_add(1, Ordering::Relaxed),
            entries,
            set,
            ends,
            min_len,
            quick,
        })
    }

    /// No detectors: finds nothing.
    pub fn empty() -> Self {
        Self {
            id: 0,
            entries: Vec::new(),
            set: RegexSet::empty(),
            ends: None,
            min_len: usize::MAX,
            quick: vec![[0; 4]; QUICK_LEN + 1],
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Every accepted match in `text`, by start, in `text`'s offsets.
    /// Detectors see the text folded (see [`Folded`]): full-width and other
    /// scripts' digits as ASCII, zero-width characters gone, exotic spaces
    /// plain. Overlapping built-in matches are settled by priority (the
    /// earlier entry keeps the text).
    pub fn find(&self, text: &str, out: &mut Vec<Hit>) {
        out.clear();
        // ASCII text is its own folded form, so its length decides.
        if text.is_empty() || (text.len() < self.min_len && text.is_ascii()) {
            return;
        }
        if text.len() <= QUICK_LEN && text.is_ascii() && !self.may_match(text) {
            return;
        }
        if text.len() > RECENT_LEN || self.id == 0 {
            return self.search(text, out);
        }
        // Not remembered while the thread's memory is in use (a search
        // inside a search) or gone (the thread ends): then the text is
        // searched.
        let recalled = RECENT
            .try_with(|cell| {
                cell.try_borrow()
                    .is_ok_and(|recent| recent.recall(self.id, text.as_bytes(), out))
            })
            .unwrap_or(false);
        if recalled {
            return;
        }
        self.search(text, out);
        // A credential is not held on to after its call: a text with one
        // is searched each time it comes.
        if out.iter().any(|h| self.entries[h.entry].secret) {
            return;
        }
        // A thread being torn down has no memory left: nothing to keep.
        let _ = RECENT.try_with(|cell| {
            if let Ok(mut recent) = cell.try_borrow_mut() {
                recent.remember(self.id, text.as_bytes(), out);
            }
        });
    }

    /// [`Self::find`] past its quick tests: the folded text searched.
    fn search(&self, text: &str, out: &mut Vec<Hit>) {
        let folded = Folded::new(text);
        self.find_folded(folded.text(), out);
        if !folded.is_unchanged() {
            for hit in out.iter_mut() {
                (hit.start, hit.end) = folded.original_span(hit.start, hit.end);
            }
        }
    }

    /// `f` of the matches in `text` (see [`Self::find`]), found into a
    /// buffer this thread keeps, so a value with a match costs no new
    /// list.
    pub fn find_with<R>(&self, text: &str, f: impl FnOnce(&[Hit]) -> R) -> R {
        HITS.with(|cell| match cell.try_borrow_mut() {
            Ok(mut hits) => {
                self.find(text, &mut hits);
                let out = f(&hits);
                if hits.capacity() > KEPT_HITS {
                    *hits = Vec::new();
                }
                out
            }
            Err(_) => {
                let mut hits = Vec::new();
                self.find(text, &mut hits);
                f(&hits)
            }
        })
    }

    /// Whether some detector branch is short enough for `text` (an ASCII
    /// text of at most [`QUICK_LEN`] bytes, its own folded form) and finds
    /// a byte it needs there.
    fn may_match(&self, text: &str) -> bool {
        let needs = &self.quick[text.len()];
        text.bytes()
            .any(|b| needs[usize::from(b >> 6)] & (1 << (b & 63)) != 0)
    }

    fn find_folded(&self, text: &str, out: &mut Vec<Hit>) {
        // Most strings hold nothing; telling that is one pass that stops
        // at the first match.
        if !self.set.is_match(text) {
            return;
        }
        let searched = self.ends.as_ref().is_some_and(|ends| {
            SPANS.with(|cell| {
                // Validators never search, so the spans are free; were they
                // not, the set's way below would do.
                let Ok(mut spans) = cell.try_borrow_mut() else {
                    return false;
                };
                let spans = &mut *spans;
                if !ends.scan(text, spans, self.entries.len()) {
                    return false;
                }
                for (i, span) in spans.iter().enumerate() {
                    if let Some(span) = *span {
                        self.entries[i].find_between(i, text, span, out);
                    }
                }
                true
            })
        });
        if !searched {
            out.clear();
            for i in self.set.matches(text).iter() {
                self.entries[i].find(i, text, out);
            }
        }
        settle(&self.entries, out);
    }

    /// `text` with the hits `redact` selects replaced by their markers;
    /// overlapping selected hits become one marker, the higher priority's.
    /// Borrowed when nothing was selected. Also returns the marker count.
    pub fn redact<'a>(
        &self,
        text: &'a str,
        hits: &[Hit],
        redact: impl Fn(usize) -> bool,
    ) -> (Cow<'a, str>, usize) {
        self.redact_hits(text, hits.iter().copied().filter(|h| redact(h.entry)))
    }

    /// As [`Self::redact`], replacing every hit of `hits` (ordered by
    /// start), without gathering them first.
    pub fn redact_hits<'a>(
        &self,
        text: &'a str,
        hits: impl IntoIterator<Item = Hit>,
    ) -> (Cow<'a, str>, usize) {
        let mut out: Option<String> = None;
        // Up to where `text` is copied into `out`.
        let mut copied = 0;
        let mut markers = 0;
        // The marker being grown: start, end and entry of its hits so far.
        let mut open: Option<(usize, usize, usize)> = None;
        let mut write = |(start, end, entry): (usize, usize, usize)| {
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied..start]);
            out.push_str(&self.entries[entry].marker);
            copied = end;
            markers += 1;
        };
        for hit in hits {
            match &mut open {
                Some(span) if hit.start < span.1 => {
                    span.1 = span.1.max(hit.end);
                    span.2 = span.2.min(hit.entry);
                }
                _ => {
                    if let Some(span) = open.replace((hit.start, hit.end, hit.entry)) {
                        write(span);
                    }
                }
            }
        }
        if let Some(span) = open {
            write(span);
        }
        match out {
            None => (Cow::Borrowed(text), 0),
            Some(mut out) => {
                out.push_str(&text[copied..]);
                (Cow::Owned(out), markers)
            }
        }
    }
}

/// Settles overlapping built-in matches by priority (the earlier entry
/// keeps the text; a match that lost still outranks later entries), then
/// orders the matches by start and priority.
fn settle(entries: &[Entry], out: &mut Vec<Hit>) {
    /// Matches of one text that fit the flags on the stack.
    const STACK: usize = 64;
    let mut on_stack = [false; STACK];
    let mut on_heap = Vec::new();
    let beaten: &mut [bool] = if out.len() <= STACK {
        &mut on_stack[..out.len()]
    } else {
        on_heap.resize(out.len(), false);
        &mut on_heap
    };
    for (flag, hit) in beaten.iter_mut().zip(out.iter()) {
        *flag = entries[hit.entry].builtin
            && out.iter().any(|other| {
                other.entry < hit.entry
                    && entries[other.entry].builtin
                    && other.start < hit.end
                    && hit.start < other.end
            });
    }
    let mut flags = beaten.iter();
    out.retain(|_| flags.next().is_some_and(|beaten| !beaten));
    // One entry's matches never overlap, so (start, entry) orders them
    // all, and an unstable sort (which needs no buffer) is exact.
    out.sort_unstable_by_key(|h| (h.start, h.entry));
}

// === impl Entry (pattern text) ===

impl Entry {
    /// The detector's pattern text, for automata built beside the matcher
    /// (the stream guard's prefix test).
    pub(crate) fn pattern(&self) -> &str {
        self.regex.as_str()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{builtin, compile_keywords, compile_pattern};

    fn builtin_entries() -> Vec<Entry> {
        builtin::ALL
            .iter()
            .map(|b| Entry::builtin(b).unwrap())
            .collect()
    }

    /// The built-in detectors alone.
    fn builtin_only() -> Matcher {
        Matcher::new(builtin_entries()).unwrap()
    }

    /// Every built-in detector, user patterns (anchored ones too) and two
    /// keyword lists, one of them non-ASCII (Unicode word boundaries).
    fn everything() -> Matcher {
        let mut entries = builtin_entries();
        for pattern in [
            r"^ticket-[0-9]+$",
            r"(?m)^ID: [0-9]{3,}",
            r"\bINV-[0-9]{4}\b",
            r"[a-z]+\$",
            r"\bAB\b|x+",
        ] {
            entries.push(Entry::custom(
                "CUSTOM_PATTERN",
                compile_pattern(pattern).unwrap(),
            ));
        }
        for (words, whole) in [
            (&["project falcon", "c++"][..], true),
            (&["geheimnis", "über"][..], true),
            (&["acme"][..], false),
        ] {
            let words: Vec<String> = words.iter().map(|w| (*w).to_owned()).collect();
            entries.push(Entry::custom(
                "KEYWORD",
                compile_keywords("k", &words, whole).unwrap(),
            ));
        }
        Matcher::new(entries).unwrap()
    }

    /// The plain search: each detector's regex alone over the whole folded
    /// text, the overlap rule written out again, spans mapped back.
    fn reference(matcher: &Matcher, text: &str) -> Vec<Hit> {
        let folded = Folded::new(text);
        let mut all = Vec::new();
        for (i, entry) in matcher.entries.iter().enumerate() {
            entry.find(i, folded.text(), &mut all);
        }
        let entries = &matcher.entries;
        let mut kept: Vec<Hit> = all
            .iter()
            .filter(|hit| {
                !(entries[hit.entry].builtin
                    && all.iter().any(|other| {
                        other.entry < hit.entry
                            && entries[other.entry].builtin
                            && other.start < hit.end
                            && hit.start < other.end
                    }))
            })
            .copied()
            .collect();
        kept.sort_by_key(|h| (h.start, h.entry));
        for hit in &mut kept {
            (hit.start, hit.end) = folded.original_span(hit.start, hit.end);
        }
        kept
    }

    /// Pieces of text with the shapes every detector looks for, near
    /// misses, and text around them.
    const PIECES: &[&str] = &[
        "jane.doe@example.com",
        "x@y.io",
        "logo@2x.png",
        "+1 415 555 2671",
        "(415) 555-2671",
        "020 7946 0958",
        "98765 43210",
        "+44 (0)20 7946 0958",
        "4111 1111 1111 1111",
        "5555-5555-5555-4444",
        "4111111111111112",
        "219-09-9999",
        "123-45-6789",
        "SSN: 078051120",
        "DE89 3704 0044 0532 0130 00",
        "GB82WEST12345698765432",
        "10.0.3.17",
        "127.0.0.1:40123",
        "2001:db8::8a2e:370:7334",
        "fe80::1",
        "v1.2.3.4",
        "15:50:01",
        "sk-proj-Abc123def456GHI789jkl012MNO",
        "sk-ant-api03-Abc123def456GHI789jkl012",
        "sk-learn-compatible-models-here",
        "AKIAZ7Q3L5XW2N4R6T8Y",
        "AKIAIOSFODNN7EXAMPLE",
        "ghp_A1b2C3d4E5f6G7h8I9j0K1l2M3n4O5p6Q7r8",
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",
        "xoxb-123456789012-abcdefGHIJKL",
        "AIzaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY",
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
        "aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYzq8Rk2pL9a",
        "Authorization: Bearer abc123.DEF456-ghi789",
        "bearer well-established",
        "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA7bq98s1Ck2dGv0aZ1xv3H7e9f+Q2w==\n-----END RSA PRIVATE KEY-----",
        "ticket-4471",
        "ID: 88213",
        "INV-2024",
        "price$",
        "AB",
        "xxx",
        "project falcon",
        "c++",
        "Geheimnis",
        "über",
        "überall",
        "ACME",
        "café",
        "日本語のテキスト",
        "４１１１ １１１１ １１１１ １１１１",
        "٤١١١ ١١١١ ١١١١ ١١١١",
        "jane\u{200B}.doe@example.com",
        "415\u{00A0}555\u{00A0}2671",
        "ｓｋ－ｐｒｏｊ－Ａｂｃ１２３ｄｅｆ４５６ＧＨＩ７８９ｊｋｌ",
        "ﬁle",
        "the quick brown fox",
        "order #88213-4471",
        "12",
        "9",
        "a",
        ".",
        ":",
        "-",
    ];

    const SEPARATORS: &[&str] = &[" ", "", "\n", ", ", ". ", ":", "-", "\t", "/"];

    /// A small deterministic generator (xorshift), so a failure repeats.
    struct Rng(u64);

    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    #[test]
    fn find_equals_each_detector_searched_alone() {
        let matcher = everything();
        assert!(matcher.ends.is_some());
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
        let mut out = Vec::new();
        let mut texts = 0;
        let mut with_hits = 0;
        for round in 0..3000 {
            let mut text = String::new();
            for _ in 0..=rng.below(8) {
                text.push_str(SEPARATORS[rng.below(SEPARATORS.len())]);
                text.push_str(PIECES[rng.below(PIECES.len())]);
            }
            // Every third text is cut short, mostly inside an entity, and
            // some shorter than the shortest match.
            if round % 3 == 0 {
                let mut cut = rng.below(text.len() + 1);
                while !text.is_char_boundary(cut) {
                    cut -= 1;
                }
                text.truncate(cut);
            }
            matcher.find(&text, &mut out);
            let expected = reference(&matcher, &text);
            assert_eq!(out, expected, "{text:?}");
            // The quick test never calls a text with a match clean.
            if text.is_ascii() && text.len() <= QUICK_LEN && !expected.is_empty() {
                assert!(matcher.may_match(&text), "{text:?}");
            }
            texts += 1;
            with_hits += usize::from(!out.is_empty());
        }
        // The texts exercise the search, not only the quick no.
        assert_eq!(texts, 3000);
        assert!(with_hits > 2000, "{with_hits}");
    }

    #[test]
    fn find_equals_the_reference_on_the_pieces_alone() {
        let matcher = everything();
        let mut out = Vec::new();
        for piece in PIECES {
            matcher.find(piece, &mut out);
            assert_eq!(out, reference(&matcher, piece), "{piece:?}");
        }
    }

    #[test]
    fn short_clean_values_are_told_clean_without_a_search() {
        let builtin = builtin_only();
        for value in [
            "1024",
            "412",
            "application/json",
            "user",
            "assistant",
            "stop",
        ] {
            assert!(!builtin.may_match(value), "{value}");
        }
        // A user pattern short enough for a value lets it through.
        let mut entries = builtin.entries.clone();
        entries.push(Entry::custom(
            "CUSTOM_PATTERN",
            compile_pattern("[0-9]{3}").unwrap(),
        ));
        assert!(Matcher::new(entries).unwrap().may_match("412"));
        for value in ["127.0.0.1:40123", "a@b.io", "+1 415 555 2671", "Bearer x"] {
            assert!(builtin.may_match(value), "{value}");
        }
    }

    /// Whether `text` is remembered for `matcher` on this thread.
    fn remembered(matcher: &Matcher, text: &str) -> bool {
        RECENT.with(|cell| {
            cell.borrow()
                .recall(matcher.id, text.as_bytes(), &mut Vec::new())
        })
    }

    #[test]
    fn a_remembered_text_gives_what_a_search_finds() {
        let matcher = everything();
        let mut rng = Rng(0x2545_F491_4F6C_DD1D);
        let mut out = Vec::new();
        let mut recalled = 0;
        for _ in 0..3000 {
            // Short texts: up to three pieces, cut to at most the length
            // remembered, so matches end at the text's end as often as not.
            let mut text = String::new();
            for _ in 0..=rng.below(3) {
                text.push_str(SEPARATORS[rng.below(SEPARATORS.len())]);
                text.push_str(PIECES[rng.below(PIECES.len())]);
            }
            let mut cut = text.len().min(rng.below(RECENT_LEN + 8));
            while !text.is_char_boundary(cut) {
                cut -= 1;
            }
            text.truncate(cut);
            let expected = reference(&matcher, &text);
            matcher.find(&text, &mut out);
            assert_eq!(out, expected, "{text:?}");
            recalled += usize::from(remembered(&matcher, &text));
            // Found again, from memory when it was remembered.
            matcher.find(&text, &mut out);
            assert_eq!(out, expected, "again: {text:?}");
        }
        assert!(recalled > 1000, "{recalled}");
    }

    #[test]
    fn what_is_remembered_belongs_to_one_text_and_one_matcher() {
        let builtin = builtin_only();
        let mut entries = builtin.entries.clone();
        entries.push(Entry::custom(
            "CUSTOM_PATTERN",
            compile_pattern("[0-9]{3}").unwrap(),
        ));
        let custom = Matcher::new(entries).unwrap();
        let mut out = Vec::new();
        // The same text, clean for one matcher and a match for the other.
        for _ in 0..2 {
            builtin.find("order 412", &mut out);
            assert!(out.is_empty());
            custom.find("order 412", &mut out);
            assert_eq!(out.len(), 1);
        }
        // A clone finds what its original finds, and shares its memory.
        let copy = custom.clone();
        copy.find("order 412", &mut out);
        assert_eq!(out.len(), 1);
        // A text one byte longer than remembered is searched each time.
        let long = format!("mail jane.doe@example.com {}", "x".repeat(RECENT_LEN));
        let long = &long[..RECENT_LEN + 1];
        builtin.find(long, &mut out);
        assert_eq!(out, reference(&builtin, long));
        assert!(!remembered(&builtin, long));
        // Texts that differ in one byte at the end are told apart.
        builtin.find("ip 10.0.3.17", &mut out);
        assert_eq!(out.len(), 1);
        builtin.find("ip 10.0.3.1x", &mut out);
        assert_eq!(out, reference(&builtin, "ip 10.0.3.1x"));
        // More matches than are remembered: searched each time, found
        // all the same.
        let many = "1.2.3.4 5.6.7.8 9.9.9.9 8.8.4.4 1.1.1.1";
        for _ in 0..2 {
            builtin.find(many, &mut out);
            assert_eq!(out, reference(&builtin, many));
        }
        assert!(!remembered(&builtin, many));
        // Non-ASCII text is remembered in its own offsets.
        let wide = "card ４１１１ １１１１ １１１１ １１１１";
        assert!(wide.len() <= RECENT_LEN);
        for _ in 0..2 {
            builtin.find(wide, &mut out);
            assert_eq!(out, reference(&builtin, wide));
            assert_eq!(out.len(), 1);
        }
        assert!(remembered(&builtin, wide));
        // A text holding a secret is found each time, never kept.
        let key = "key AKIAZ7Q3L5XW2N4R6T8Y";
        for _ in 0..2 {
            builtin.find(key, &mut out);
            assert_eq!(out, reference(&builtin, key));
            assert!(builtin.entries[out[0].entry].secret);
        }
        assert!(!remembered(&builtin, key));
        // The empty matcher remembers nothing.
        let empty = Matcher::empty();
        empty.find("10.0.3.17", &mut out);
        assert!(out.is_empty());
        assert!(!remembered(&empty, "10.0.3.17"));
    }

    #[test]
    fn a_match_after_a_long_prefix_is_found_where_it_is() {
        let matcher = everything();
        let prose = "no entity here at all. ".repeat(200);
        let text = format!("{prose}mail jane.doe@example.com or call +1 415 555 2671 {prose}");
        let mut out = Vec::new();
        matcher.find(&text, &mut out);
        assert_eq!(out, reference(&matcher, &text));
        // The user pattern `x+` matches inside `example` too.
        let found: Vec<(&str, &str)> = out
            .iter()
            .filter(|h| matcher.entries[h.entry].builtin)
            .map(|h| (matcher.entries[h.entry].kind, &text[h.start..h.end]))
            .collect();
        assert_eq!(
            found,
            [
                ("EMAIL", "jane.doe@example.com"),
                ("PHONE", "+1 415 555 2671")
            ]
        );
    }
}

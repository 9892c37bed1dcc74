//! The one-pass scanner behind every policy: all detectors of all policies
//! compiled into one [`RegexSet`] that tells, in a single scan, which of
//! them can match a text at all. Only those then search for their matches,
//! and validators (Luhn, mod-97, ranges, parsing) run on the candidates
//! alone. Most texts hold nothing, and then the set's scan is all it costs.

use std::borrow::Cow;

use regex::{Regex, RegexSet, RegexSetBuilder};

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
}

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
    entries: Vec<Entry>,
    set: RegexSet,
    /// No detector matches fewer bytes: shorter ASCII texts (roles, most
    /// keys, short ids) need no scan at all.
    min_len: usize,
}

/// Room for the set's lazy DFA: the set holds many patterns, and a cache
/// that is too small is cleared over and over, which is slow.
const DFA_BYTES: usize = 16 << 20;

/// The fewest bytes `pattern` can match (0 when unknown).
fn shortest_match(pattern: &str) -> usize {
    regex_syntax::parse(pattern)
        .ok()
        .and_then(|hir| hir.properties().minimum_len())
        .unwrap_or(0)
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
        Self {
            marker: format!("[REDACTED:{kind}]"),
            kind,
            regex,
            group,
            validate,
            builtin,
            secret,
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

    fn find(&self, index: usize, text: &str, out: &mut Vec<Hit>) {
        let mut push = |start: usize, end: usize| {
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
        };
        if self.group == 0 {
            for m in self.regex.find_iter(text) {
                push(m.start(), m.end());
            }
        } else {
            for caps in self.regex.captures_iter(text) {
                if let Some(m) = caps.get(self.group) {
                    push(m.start(), m.end());
                }
            }
        }
    }
}

// === impl Matcher ===

impl Matcher {
    pub fn new(entries: Vec<Entry>) -> Result<Self, regex::Error> {
        let set = RegexSetBuilder::new(entries.iter().map(|e| e.regex.as_str()))
            .dfa_size_limit(DFA_BYTES)
            .build()?;
        let min_len = entries
            .iter()
            .map(|e| shortest_match(e.regex.as_str()))
            .min()
            .unwrap_or(0);
        Ok(Self {
            entries,
            set,
            min_len,
        })
    }

    /// No detectors: finds nothing.
    pub fn empty() -> Self {
        Self {
            entries: Vec::new(),
            set: RegexSet::empty(),
            min_len: usize::MAX,
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
        let folded = Folded::new(text);
        self.find_folded(folded.text(), out);
        if !folded.is_unchanged() {
            for hit in out.iter_mut() {
                (hit.start, hit.end) = folded.original_span(hit.start, hit.end);
            }
        }
    }

    fn find_folded(&self, text: &str, out: &mut Vec<Hit>) {
        // Most strings hold nothing; telling that needs no allocation,
        // where the set of detectors that matched is a new one per call.
        if !self.set.is_match(text) {
            return;
        }
        let which = self.set.matches(text);
        if !which.matched_any() {
            return;
        }
        for i in which.iter() {
            self.entries[i].find(i, text, out);
        }
        // Entries ran in priority order, so a stable sort by start keeps
        // the priority order among equal starts.
        let mut kept: Vec<Hit> = Vec::with_capacity(out.len());
        for hit in out.iter() {
            let entry = &self.entries[hit.entry];
            let beaten = entry.builtin
                && out.iter().any(|other| {
                    other.entry < hit.entry
                        && self.entries[other.entry].builtin
                        && other.start < hit.end
                        && hit.start < other.end
                });
            if !beaten {
                kept.push(*hit);
            }
        }
        kept.sort_by_key(|h| (h.start, h.entry));
        *out = kept;
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
        let mut spans: Vec<(usize, usize, usize)> = Vec::new();
        for hit in hits.iter().filter(|h| redact(h.entry)) {
            match spans.last_mut() {
                Some(last) if hit.start < last.1 => {
                    last.1 = last.1.max(hit.end);
                    last.2 = last.2.min(hit.entry);
                }
                _ => spans.push((hit.start, hit.end, hit.entry)),
            }
        }
        if spans.is_empty() {
            return (Cow::Borrowed(text), 0);
        }
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for &(start, end, entry) in &spans {
            out.push_str(&text[last..start]);
            out.push_str(&self.entries[entry].marker);
            last = end;
        }
        out.push_str(&text[last..]);
        (Cow::Owned(out), spans.len())
    }
}

// === impl Entry (pattern text) ===

impl Entry {
    /// The detector's pattern text, for automata built beside the matcher
    /// (the stream guard's prefix test).
    pub(crate) fn pattern(&self) -> &str {
        self.regex.as_str()
    }
}

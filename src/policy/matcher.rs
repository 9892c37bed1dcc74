//! The one-pass scanner behind every policy: all detectors of all policies
//! compiled into one [`RegexSet`] that tells, in a single scan, which of
//! them can match a text at all. Only those then search for their matches,
//! and validators (Luhn, mod-97, ranges, parsing) run on the candidates
//! alone. Most texts hold nothing, and then the set's scan is all it costs.

use std::borrow::Cow;
use std::cell::RefCell;

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
    /// Some detector uses a text or line anchor (`^`, `$`, `\A`): it may
    /// match a text alone and not the same text inside a longer one, so
    /// [`Self::find_each`] cannot search texts together.
    anchored: bool,
}

/// The joined text of [`Matcher::find_each`] and where each text starts
/// in it, kept per thread so a call allocates nothing.
#[derive(Default)]
struct Each {
    joined: String,
    starts: Vec<usize>,
}

thread_local! {
    static EACH: RefCell<Each> = RefCell::new(Each::default());
}

/// Joins the texts [`Matcher::find_each`] searches together. Any byte
/// would do, as matches are mapped back by offset; a control character
/// keeps most detectors from reaching across.
const EACH_JOIN: char = '\0';

/// Room for the set's lazy DFA: the set holds many patterns, and a cache
/// that is too small is cleared over and over, which is slow.
const DFA_BYTES: usize = 16 << 20;

/// Whether `pattern` holds a text or line anchor (true when unknown).
fn has_anchor(pattern: &str) -> bool {
    regex_syntax::parse(pattern).map_or(true, |hir| {
        let looks = hir.properties().look_set();
        looks.contains_anchor_haystack() || looks.contains_anchor_line()
    })
}

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
        let anchored = entries.iter().any(|e| has_anchor(e.regex.as_str()));
        Ok(Self {
            entries,
            set,
            min_len,
            anchored,
        })
    }

    /// No detectors: finds nothing.
    pub fn empty() -> Self {
        Self {
            entries: Vec::new(),
            set: RegexSet::empty(),
            min_len: usize::MAX,
            anchored: false,
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

    /// [`Self::find`] over each of `texts`, calling `found(i, hits)` for
    /// every text `i` that holds a match, in order. The texts are searched
    /// as one by the detector set (one pass instead of one per text), and
    /// only those a detector's pattern touches in that pass are searched
    /// on their own, exactly as [`Self::find`] does: validators and
    /// context checks never see a neighbouring text, so the hits are the
    /// same as searching each text alone.
    ///
    /// A pattern with no text or line anchor that matches a text alone
    /// also matches the joined texts, with a match that touches that text
    /// (the joining byte is no word character, as a text's edge is none),
    /// so no text with a match is passed over. With an anchored detector
    /// each text is searched alone.
    pub fn find_each<T: AsRef<str>>(&self, texts: &[T], mut found: impl FnMut(usize, &[Hit])) {
        let mut hits = Vec::new();
        let searched = |t: &str| !t.is_empty() && (t.len() >= self.min_len || !t.is_ascii());
        if self.anchored || texts.iter().filter(|t| searched(t.as_ref())).count() < 2 {
            for (i, t) in texts.iter().enumerate() {
                self.find(t.as_ref(), &mut hits);
                if !hits.is_empty() {
                    found(i, &hits);
                }
            }
            return;
        }
        // The texts a pattern's match touches; filled only when the set
        // matched, which most calls' header values never do.
        let touched: Vec<usize> = EACH.with(|each| {
            let mut each = each.borrow_mut();
            let Each { joined, starts } = &mut *each;
            joined.clear();
            starts.clear();
            for (i, t) in texts.iter().enumerate() {
                if i > 0 {
                    joined.push(EACH_JOIN);
                }
                starts.push(joined.len());
                joined.push_str(t.as_ref());
            }
            let folded = Folded::new(joined);
            if !self.set.is_match(folded.text()) {
                return Vec::new();
            }
            let mut touched = Vec::new();
            for e in self.set.matches(folded.text()).iter() {
                for m in self.entries[e].regex.find_iter(folded.text()) {
                    let (start, end) = folded.original_span(m.start(), m.end());
                    // Closed ranges: a text next to a match's edge is
                    // searched too, which costs a search and changes nothing.
                    let first = starts.partition_point(|&s| s <= start).saturating_sub(2);
                    for (k, &from) in starts.iter().enumerate().skip(first) {
                        if from > end {
                            break;
                        }
                        if start <= from + texts[k].as_ref().len() {
                            touched.push(k);
                        }
                    }
                }
            }
            touched.sort_unstable();
            touched.dedup();
            touched
        });
        for i in touched {
            self.find(texts[i].as_ref(), &mut hits);
            if !hits.is_empty() {
                found(i, &hits);
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin;

    fn every_builtin_and(custom: &[&str]) -> Matcher {
        let mut entries: Vec<Entry> = builtin::ALL
            .iter()
            .map(|b| Entry::builtin(b).unwrap())
            .collect();
        for pattern in custom {
            entries.push(Entry::custom(
                "CUSTOM_PATTERN",
                Regex::new(pattern).unwrap(),
            ));
        }
        Matcher::new(entries).unwrap()
    }

    /// Each text searched alone, as the texts were before `find_each`.
    fn alone(matcher: &Matcher, texts: &[&str]) -> Vec<(usize, Vec<Hit>)> {
        let mut out = Vec::new();
        let mut hits = Vec::new();
        for (i, t) in texts.iter().enumerate() {
            matcher.find(t, &mut hits);
            if !hits.is_empty() {
                out.push((i, hits.clone()));
            }
        }
        out
    }

    fn together(matcher: &Matcher, texts: &[&str]) -> Vec<(usize, Vec<Hit>)> {
        let mut out = Vec::new();
        matcher.find_each(texts, |i, hits| out.push((i, hits.to_vec())));
        out
    }

    fn spans<'a>(texts: &[&'a str], found: &[(usize, Vec<Hit>)]) -> Vec<(usize, &'a str)> {
        found
            .iter()
            .flat_map(|(i, hits)| hits.iter().map(move |h| (*i, &texts[*i][h.start..h.end])))
            .collect()
    }

    #[test]
    fn values_at_the_edges_of_their_texts_keep_their_own_offsets() {
        let m = every_builtin_and(&[]);
        let texts = [
            "jane.doe@example.com",
            "+1 415 555 2671",
            "",
            "text/plain",
            "x 4111 1111 1111 1111",
        ];
        let found = together(&m, &texts);
        assert_eq!(found, alone(&m, &texts));
        assert_eq!(
            spans(&texts, &found),
            [
                (0, "jane.doe@example.com"),
                (1, "+1 415 555 2671"),
                (4, "4111 1111 1111 1111")
            ]
        );
    }

    #[test]
    fn a_context_check_never_reads_a_neighbouring_text() {
        let m = every_builtin_and(&[]);
        // Alone, a bare nine-digit number is no SSN; after `ssn` it is.
        let texts = ["applicant ssn", "219099999", "ssn 219099999"];
        let found = together(&m, &texts);
        assert_eq!(found, alone(&m, &texts));
        assert_eq!(spans(&texts, &found), [(2, "219099999")]);
        // Nor is a value split over two texts one value.
        let texts = ["4111 1111", "1111 1111"];
        assert!(together(&m, &texts).is_empty());
    }

    #[test]
    fn patterns_that_cross_the_join_or_are_anchored_find_what_they_find_alone() {
        // `.` crosses the joining byte; the texts it touches are searched
        // alone, where it finds nothing.
        let m = every_builtin_and(&["ab.cd", "^token$"]);
        for texts in [
            &["xab", "cdx", "token"][..],
            &["abxcd", "a", "token", "tokens"][..],
            &["ab", "cd"][..],
        ] {
            assert_eq!(together(&m, texts), alone(&m, texts), "{texts:?}");
        }
        let texts = ["abxcd", "a", "token", "tokens"];
        assert_eq!(
            spans(&texts, &together(&m, &texts)),
            [(0, "abxcd"), (2, "token")]
        );
    }

    #[test]
    fn folded_texts_map_back_to_their_own_characters() {
        let m = every_builtin_and(&[]);
        let texts = [
            "café",
            "４１１１ １１１１ １１１１ １１１１",
            "a\u{200B}b",
            "jane.doe@example.com",
        ];
        let found = together(&m, &texts);
        assert_eq!(found, alone(&m, &texts));
        assert_eq!(found.len(), 2);
    }

    #[test]
    fn texts_searched_together_find_what_each_finds_alone() {
        let pieces = [
            "",
            " ",
            "application/json",
            "jane.doe@example.com",
            "+1 415 555 2671",
            "(415) 555-2671",
            "4111 1111 1111 1111",
            "219-09-9999",
            "ssn",
            "219099999",
            "order",
            "10.0.3.17",
            "v2.14.3",
            "DE89 3704 0044 0532 0130 00",
            "sk-proj-abcdefghijklmnopqrstuvwxyz0123456789",
            "ghp_abcdefghijklmnopqrstuvwxyz0123456789",
            "AKIAIOSFODNN7EXAMPLE",
            "Bearer abcdefghijklmnopqrstuvwxyz012345",
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c",
            "café ４１１１",
            "\u{200B}",
            "1024",
            "Thu, 03 Dec 2026 15:50:01 GMT",
            "ab",
            "cd",
            "token",
        ];
        let m = every_builtin_and(&["ab.cd", "ken$"]);
        let plain = every_builtin_and(&["ab.cd"]);
        let mut rng = crate::policy::corpus::Rng::new(18);
        for round in 0..2000 {
            let n = 1 + rng.below(6);
            let mut owned = Vec::new();
            for _ in 0..n {
                let mut text = String::new();
                for _ in 0..rng.below(4) {
                    if !text.is_empty() && rng.below(2) == 0 {
                        text.push(' ');
                    }
                    text.push_str(pieces[rng.below(pieces.len())]);
                }
                owned.push(text);
            }
            let texts: Vec<&str> = owned.iter().map(String::as_str).collect();
            for matcher in [&m, &plain] {
                assert_eq!(
                    together(matcher, &texts),
                    alone(matcher, &texts),
                    "round {round}: {texts:?}"
                );
            }
        }
    }
}

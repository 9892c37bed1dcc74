//! Searching several strings as one: the messages and content parts of a
//! request are one conversation, so a card number typed over two messages
//! is one card number.
//!
//! Each string is searched on its own first, as most text holds nothing
//! and a detector then runs only where the scanner's one pass says it can
//! match. Then, for the model's text, the seams between strings are
//! searched: a window either side of each seam (the unbroken run of
//! characters touching it and [`REACH`] bytes more), in the strings joined
//! by a space, wherever the characters on both sides of the seam could
//! belong to one value. A match that crosses a seam is cut back
//! into pieces, one per string it touches, in that string's own offsets;
//! it is counted once, and each piece is redacted in its own string.
//! Overlaps between a seam match and a match inside one string are settled
//! by detector priority, as within one text.

use std::borrow::Cow;
use std::cell::RefCell;

use super::matcher::{Hit, Matcher};
use crate::capture::json_view::NodeId;

/// Joins the model's text: a space, which patterns that allow spaced groups
/// (cards, phone numbers, SSNs) cross, so a value split between two
/// messages is found.
pub(crate) const TEXT_JOIN: char = ' ';

/// Joins fields that are not the model's text (ids, names, keys): they are
/// never searched across.
pub(crate) const FIELD_JOIN: char = '\0';

/// Bytes searched on each side of a seam beyond the unbroken run of
/// non-space characters that touches it: room for the spaced groups of a
/// card, an IBAN or a phone number. The run itself (a key, a token, a JWT)
/// is searched whole, up to [`MAX_RUN`].
pub(crate) const REACH: usize = 64;

/// Longest field remembered as clean within one body.
const MEMO_LEN: usize = 64;

/// How many clean fields are remembered at once (the most recent ones).
const MEMO_SLOTS: usize = 16;

/// Largest joined text whose buffer a thread keeps for its next search: a
/// huge body's buffers are not held on to.
const KEPT_BYTES: usize = 64 << 10;

/// Something searched as one string: a borrowed text, a view's string, a
/// view's string with its node.
pub(crate) trait AsText {
    fn as_text(&self) -> &str;
}

impl AsText for &str {
    fn as_text(&self) -> &str {
        self
    }
}

impl AsText for Cow<'_, str> {
    fn as_text(&self) -> &str {
        self
    }
}

impl AsText for (NodeId, Cow<'_, str>) {
    fn as_text(&self) -> &str {
        &self.1
    }
}

thread_local! {
    /// Each thread's search buffers, kept between bodies.
    static SEARCH: RefCell<Search> = RefCell::new(Search::default());
}

/// Runs `f` with this thread's search buffers (fresh ones if they are in
/// use), then drops buffers a huge body grew.
pub(crate) fn with_search<R>(f: impl FnOnce(&mut Search) -> R) -> R {
    SEARCH.with(|cell| match cell.try_borrow_mut() {
        Ok(mut search) => {
            let out = f(&mut search);
            if search.joined.capacity() > KEPT_BYTES || search.found.capacity() > KEPT_BYTES {
                *search = Search::default();
            }
            out
        }
        Err(_) => f(&mut Search::default()),
    })
}

/// Longest run of non-space characters next to a seam that is searched.
pub(crate) const MAX_RUN: usize = 4096;

/// One piece of a match, in one of the searched strings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    /// Index of the string in the searched slice.
    pub string: usize,
    /// Scanner entry of the match.
    pub entry: usize,
    pub start: usize,
    pub end: usize,
}

/// Fields (repeated keys, roles) found clean in one body, the most recent
/// [`MEMO_SLOTS`] of them: fields repeat (every message has a `role` and a
/// `content` key, most roles are `user` or `assistant`), and a short one
/// found clean once is not searched again in the body.
#[derive(Debug, Default)]
pub(crate) struct Memo<'s> {
    clean: [&'s str; MEMO_SLOTS],
    remembered: usize,
}

/// Reusable buffers of a joined search.
#[derive(Debug, Default)]
pub(crate) struct Search {
    joined: String,
    starts: Vec<usize>,
    hits: Vec<Hit>,
    /// Matches in joined offsets: inside one string, then across seams.
    found: Vec<Hit>,
}

// === impl Search ===

impl Search {
    /// Searches `strings`, across their seams when `join` is
    /// [`TEXT_JOIN`]. Adds one to `counts[entry]` per match and appends its
    /// pieces to `pieces`.
    pub fn run<T: AsText>(
        &mut self,
        matcher: &Matcher,
        strings: &[T],
        join: char,
        counts: &mut [u64],
        pieces: &mut Vec<Piece>,
    ) {
        if join != TEXT_JOIN || strings.len() < 2 {
            let mut memo = Memo::default();
            for (i, s) in strings.iter().enumerate() {
                let s = s.as_text();
                self.field(matcher, i, s, Some(s), &mut memo, counts, pieces);
            }
            return;
        }
        self.joined.clear();
        self.starts.clear();
        self.found.clear();
        for (i, s) in strings.iter().enumerate() {
            let s = s.as_text();
            if i > 0 {
                self.joined.push(join);
            }
            self.starts.push(self.joined.len());
            self.joined.push_str(s);
            matcher.find(s, &mut self.hits);
            let base = self.starts[i];
            self.found.extend(self.hits.iter().map(|h| Hit {
                entry: h.entry,
                start: base + h.start,
                end: base + h.end,
            }));
        }
        let within = self.found.len();
        for &next in &self.starts[1..] {
            let seam = next - 1;
            if !may_cross(&self.joined, seam) {
                continue;
            }
            let (from, to) = window(&self.joined, seam);
            matcher.find(&self.joined[from..to], &mut self.hits);
            for h in &self.hits {
                let (start, end) = (from + h.start, from + h.end);
                // Only what crosses this seam is new; the same match found
                // again from the next seam is kept once.
                let crosses = start <= seam && seam < end;
                let known = self.found[within..]
                    .iter()
                    .any(|f| f.entry == h.entry && f.start == start && f.end == end);
                if crosses && !known {
                    self.found.push(Hit {
                        entry: h.entry,
                        start,
                        end,
                    });
                }
            }
        }
        if self.found.len() > within {
            settle_overlaps(matcher, &mut self.found, within);
        }
        for h in &self.found {
            counts[h.entry] += 1;
            self.cut(strings, h, pieces);
        }
    }

    /// Searches field `i` of a body, `s`, on its own, unless `memo` knows
    /// it is clean; a clean short field `remember`ed (a borrow that lives
    /// as long as the memo) is not searched again.
    #[expect(
        clippy::too_many_arguments,
        reason = "one field of a search: its place, text and memo, and where results go"
    )]
    pub fn field<'s>(
        &mut self,
        matcher: &Matcher,
        i: usize,
        s: &str,
        remember: Option<&'s str>,
        memo: &mut Memo<'s>,
        counts: &mut [u64],
        pieces: &mut Vec<Piece>,
    ) {
        // The empty string is clean and never searched, so the unused
        // slots holding it change nothing.
        let short = s.len() <= MEMO_LEN;
        if short && memo.clean.contains(&s) {
            return;
        }
        matcher.find(s, &mut self.hits);
        if let Some(known) = remember.filter(|_| short && self.hits.is_empty()) {
            memo.clean[memo.remembered % MEMO_SLOTS] = known;
            memo.remembered += 1;
        }
        for h in &self.hits {
            counts[h.entry] += 1;
            pieces.push(Piece {
                string: i,
                entry: h.entry,
                start: h.start,
                end: h.end,
            });
        }
    }

    /// The pieces of joined-text hit `h`, one per string it overlaps.
    fn cut<T: AsText>(&self, strings: &[T], h: &Hit, pieces: &mut Vec<Piece>) {
        // The last string starting at or before the hit.
        let first = self.starts.partition_point(|&s| s <= h.start).max(1) - 1;
        for (i, &start) in self.starts.iter().enumerate().skip(first) {
            if start >= h.end {
                break;
            }
            let end = start + strings[i].as_text().len();
            let (from, to) = (h.start.max(start), h.end.min(end));
            if from < to {
                pieces.push(Piece {
                    string: i,
                    entry: h.entry,
                    start: from - start,
                    end: to - start,
                });
            }
        }
    }
}

/// Whether a value could run across the seam at `seam` (the joining
/// space): the nearest non-space characters on both sides could both be
/// part of one (digits, letters, the punctuation inside keys, addresses
/// and numbers). A sentence's final `.` is not, unless a digit precedes it
/// and a digit follows the seam (`5555.5555.` then `5555.4444`). Most seams
/// in a conversation end a sentence, and are not searched.
fn may_cross(joined: &str, seam: usize) -> bool {
    let before = joined[..seam].trim_end();
    let after = joined[seam + 1..].trim_start();
    let (Some(a), Some(b)) = (before.chars().next_back(), after.chars().next()) else {
        return false;
    };
    let inner = |c: char| c.is_alphanumeric() || !c.is_ascii() || "+-_@:/=%#*".contains(c);
    let a_ok = inner(a)
        || (a == '.'
            && before[..before.len() - 1]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_digit()));
    // After a number's `.`, only a digit continues it (`5555.` `5555`).
    if a == '.' {
        return a_ok && b.is_ascii_digit();
    }
    a_ok && (inner(b) || b == '.')
}

/// The joined text searched around `seam`: on each side the run of
/// non-space characters that touches it (at most [`MAX_RUN`] bytes) and
/// [`REACH`] bytes more, on character boundaries.
fn window(joined: &str, seam: usize) -> (usize, usize) {
    let bytes = joined.as_bytes();
    let run_before = bytes[..seam]
        .iter()
        .rev()
        .take(MAX_RUN)
        .take_while(|b| !b.is_ascii_whitespace())
        .count();
    let run_after = bytes[seam + 1..]
        .iter()
        .take(MAX_RUN)
        .take_while(|b| !b.is_ascii_whitespace())
        .count();
    let mut from = seam.saturating_sub(run_before + REACH);
    while !joined.is_char_boundary(from) {
        from -= 1;
    }
    let mut to = (seam + 1 + run_after + REACH).min(joined.len());
    while !joined.is_char_boundary(to) {
        to += 1;
    }
    (from, to)
}

/// Settles overlaps between seam matches (`found[within..]`) and matches
/// inside one string as [`Matcher::find`] does within one text: of two
/// overlapping built-in matches the higher priority (earlier entry) keeps
/// the text; user patterns and keywords never hide or are hidden.
fn settle_overlaps(matcher: &Matcher, found: &mut Vec<Hit>, within: usize) {
    let entries = matcher.entries();
    let beats = |a: &Hit, b: &Hit| {
        entries[a.entry].builtin
            && entries[b.entry].builtin
            && a.entry < b.entry
            && a.start < b.end
            && b.start < a.end
    };
    let (inside, across) = found.split_at(within);
    let keep: Vec<bool> = found
        .iter()
        .enumerate()
        .map(|(i, h)| {
            let rivals = if i < within { across } else { inside };
            !rivals.iter().any(|r| beats(r, h))
        })
        .collect();
    let mut i = 0;
    found.retain(|_| {
        i += 1;
        keep[i - 1]
    });
    found.sort_by_key(|h| (h.start, h.entry));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::builtin;
    use crate::policy::matcher::Entry;

    fn cards() -> Matcher {
        let entries = builtin::ALL
            .iter()
            .filter(|b| b.name == "credit_card")
            .map(|b| Entry::builtin(b).unwrap())
            .collect();
        Matcher::new(entries).unwrap()
    }

    #[test]
    fn a_value_split_over_two_strings_is_one_match_in_two_pieces() {
        let strings = ["bill 5555 5555", "5555 4444 today"];
        let mut counts = vec![0];
        let mut pieces = Vec::new();
        Search::default().run(&cards(), &strings, TEXT_JOIN, &mut counts, &mut pieces);
        assert_eq!(counts, vec![1]);
        assert_eq!(pieces.len(), 2);
        assert_eq!(&strings[0][pieces[0].start..pieces[0].end], "5555 5555");
        assert_eq!(&strings[1][pieces[1].start..pieces[1].end], "5555 4444");
    }

    #[test]
    fn fields_are_never_searched_across() {
        let strings = ["5555 5555", "5555 4444"];
        let mut counts = vec![0];
        let mut pieces = Vec::new();
        Search::default().run(&cards(), &strings, FIELD_JOIN, &mut counts, &mut pieces);
        assert_eq!(counts, vec![0]);
        assert!(pieces.is_empty());
    }

    #[test]
    fn a_value_over_three_strings_is_found_once() {
        let strings = ["card 5555", "5555", "5555 4444 ok"];
        let mut counts = vec![0];
        let mut pieces = Vec::new();
        Search::default().run(&cards(), &strings, TEXT_JOIN, &mut counts, &mut pieces);
        assert_eq!(counts, vec![1]);
        let parts: Vec<&str> = pieces
            .iter()
            .map(|p| &strings[p.string][p.start..p.end])
            .collect();
        assert_eq!(parts, ["5555", "5555", "5555 4444"]);
    }

    #[test]
    fn a_long_token_split_over_two_strings_is_searched_whole() {
        let jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkpvaG4gRG9lIiwiaWF0IjoxNTE2MjM5MDIyfQ.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c";
        let (a, b) = jwt.split_at(100);
        let joined = format!("token {a} {b} end");
        let seam = "token ".len() + a.len();
        let (from, to) = window(&joined, seam);
        assert!(joined[from..to].contains(a) && joined[from..to].contains(b));
        // Prose around a seam is searched only REACH bytes deep.
        let prose = format!("{} 12 34 {}", "word ".repeat(40), "word ".repeat(40));
        let seam = prose.find("12 ").unwrap() + 2;
        let (from, to) = window(&prose, seam);
        assert!(to - from <= 2 * (REACH + 3) + 1);
    }

    #[test]
    fn seams_that_end_a_sentence_are_not_searched() {
        assert!(!may_cross("Paris. Next", 6));
        assert!(!may_cross("done? 5555", 5));
        assert!(may_cross("5555 5555", 4));
        assert!(may_cross("5555.5555. 5555", 10));
        assert!(!may_cross("INV-2024-000381. Thanks", 16));
        assert!(may_cross("a@b .com", 3));
        assert!(!may_cross("  ", 1));
    }

    #[test]
    fn matches_inside_one_string_keep_its_offsets() {
        let strings = ["none", "x 4111 1111 1111 1111", "", "y"];
        let mut counts = vec![0];
        let mut pieces = Vec::new();
        Search::default().run(&cards(), &strings, TEXT_JOIN, &mut counts, &mut pieces);
        assert_eq!(
            pieces,
            vec![Piece {
                string: 1,
                entry: 0,
                start: 2,
                end: 21
            }]
        );
    }
}

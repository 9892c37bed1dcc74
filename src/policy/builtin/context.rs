//! Context words around a candidate, to confirm or veto it.
//!
//! Some values are told apart only by what surrounds them: `219099999` is a
//! Social Security number after `SSN:` and an order id after `order`, and
//! `5.1.20.33` is a version after `firmware`. A validator hands its
//! candidate and a [`Vocabulary`] to [`judge`], which reads a few words on
//! each side (the name of a `key=value`, a JSON key, or the header cell of
//! a CSV or Markdown table column counts as the nearest word) and reports
//! what the nearest cue says, the words before speaking first.
//!
//! This runs on candidates only, never on whole texts, and reads at most
//! [`MAX_BYTES`] on each side (plus a few lines up for a table header), so
//! its cost does not grow with the text.
//!
//! Words are runs of ASCII letters and digits; `_`, `-`, punctuation,
//! spaces and camelCase humps separate them (`applicant_ssn`,
//! `firmwareVersion`), and a dot between digits joins them (`9.2.14.100` is
//! one word). Numbers are not context words and are skipped. Matching
//! ignores case.

use std::ops::Range;

/// Most bytes read on each side of a candidate.
pub(crate) const MAX_BYTES: usize = 64;

/// Bytes a table row may reach on each side of a cell.
const ROW_BYTES: usize = 512;

/// Lines looked up for a table's header row, and the bytes they may span.
const HEADER_LINES: usize = 24;
const HEADER_BYTES: usize = 4096;

/// Most words a context side holds; longer reaches are cut to this.
const MAX_WORDS: usize = 8;

/// How many words a detector reads on each side of its candidate.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reach {
    pub before: usize,
    pub after: usize,
}

/// What the nearest cue says about a candidate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cue {
    /// The context names the detector's entity (`SSN`, `ip`).
    Confirm,
    /// The context names something else (`order`, `version`).
    Veto,
}

/// A cue: one or more lower-case words in reading order
/// (`&["social", "security", "number"]`).
pub(crate) type Phrase = &'static [&'static str];

/// A detector's cue phrases, with a summary of their words (a 256-bit
/// filter keyed by first letter, last letter and length) that turns most
/// context words away in one test.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Vocabulary {
    confirm: &'static [Phrase],
    veto: &'static [Phrase],
    /// Bit [`slot`] is set for every cue word.
    filter: [u64; 4],
}

/// The words on one side of a candidate, nearest first.
struct Side<'a> {
    words: [&'a [u8]; MAX_WORDS],
    len: usize,
}

// === impl Side ===

impl<'a> Side<'a> {
    fn new() -> Self {
        Self {
            words: [&[]; MAX_WORDS],
            len: 0,
        }
    }

    fn push(&mut self, word: &'a [u8]) -> bool {
        if self.len == MAX_WORDS {
            return false;
        }
        self.words[self.len] = word;
        self.len += 1;
        true
    }

    fn get(&self, i: usize) -> Option<&'a [u8]> {
        (i < self.len).then(|| self.words[i])
    }

    /// The last `n` (at most [`MAX_WORDS`]) of `words`, last first.
    fn last(words: impl Iterator<Item = &'a [u8]>, n: usize) -> Self {
        let n = n.min(MAX_WORDS);
        // A ring of the last `n` seen, then read backwards.
        let mut ring: [&[u8]; MAX_WORDS] = [&[]; MAX_WORDS];
        let mut seen = 0;
        for word in words {
            ring[seen % MAX_WORDS] = word;
            seen += 1;
        }
        let mut side = Self::new();
        for k in 0..n.min(seen) {
            side.push(ring[(seen - 1 - k) % MAX_WORDS]);
        }
        side
    }
}

// === impl Vocabulary ===

impl Vocabulary {
    /// Cues that confirm a candidate and cues that veto it, lower case.
    pub(crate) const fn new(confirm: &'static [Phrase], veto: &'static [Phrase]) -> Self {
        let mut filter = [0u64; 4];
        let lists = [confirm, veto];
        let mut l = 0;
        while l < lists.len() {
            let mut p = 0;
            while p < lists[l].len() {
                let phrase = lists[l][p];
                let mut w = 0;
                while w < phrase.len() {
                    let bit = slot(phrase[w].as_bytes());
                    filter[bit / 64] |= 1 << (bit % 64);
                    w += 1;
                }
                p += 1;
            }
            l += 1;
        }
        Self {
            confirm,
            veto,
            filter,
        }
    }

    /// Whether `word` may be a cue word at all.
    fn may_hold(&self, word: &[u8]) -> bool {
        let bit = slot(word);
        self.filter[bit / 64] & (1 << (bit % 64)) != 0
    }

    /// The nearest cue among `side` (nearest word first); `reversed` when
    /// the side runs backwards from the candidate, so phrases are matched
    /// from their last word. Returns the cue and its distance in words.
    fn nearest(&self, side: &Side<'_>, reversed: bool) -> Option<(Cue, usize)> {
        for at in 0..side.len {
            if !side.get(at).is_some_and(|w| self.may_hold(w)) {
                continue;
            }
            for (cue, phrases) in [(Cue::Veto, self.veto), (Cue::Confirm, self.confirm)] {
                if phrases
                    .iter()
                    .any(|phrase| phrase_at(side, at, phrase, reversed))
                {
                    return Some((cue, at));
                }
            }
        }
        None
    }
}

/// What the nearest cue around `span` says, if any cue is within `reach`.
/// A table column's header, when there is one, speaks first; then the
/// nearest cue before the candidate; then the nearest after it.
pub(crate) fn judge(
    text: &str,
    span: &Range<usize>,
    reach: Reach,
    vocab: &Vocabulary,
) -> Option<Cue> {
    if in_table_cell(text, span) {
        if let Some(cue) = column_cue(text, span, vocab) {
            return Some(cue);
        }
    }
    // Names precede values (`SSN: …`, `"version": …`), so the words before
    // speak first; the words after only when those say nothing.
    let before = words_before(text, span.start, reach.before);
    if let Some((cue, _)) = vocab.nearest(&before, true) {
        return Some(cue);
    }
    let after = words_after(text, span.end, reach.after);
    vocab.nearest(&after, false).map(|(cue, _)| cue)
}

/// A word's bit in a [`Vocabulary`]'s filter: a hash of its first and last
/// letters (any case) and its length.
const fn slot(word: &[u8]) -> usize {
    let Some((&first, _)) = word.split_first() else {
        return 0;
    };
    let last = word[word.len() - 1];
    let first = first.to_ascii_lowercase() as usize;
    let last = last.to_ascii_lowercase() as usize;
    (first * 31 + last * 17 + word.len() * 7) % 256
}

/// Whether `phrase` occurs in `side` at word `at` (its last word there when
/// `reversed`, its first otherwise).
fn phrase_at(side: &Side<'_>, at: usize, phrase: Phrase, reversed: bool) -> bool {
    let n = phrase.len();
    phrase.iter().enumerate().all(|(k, part)| {
        let index = if reversed { at + n - 1 - k } else { at + k };
        // `eq_ignore_ascii_case` compares lengths first: most pairs cost
        // one comparison.
        side.get(index)
            .is_some_and(|w| w.eq_ignore_ascii_case(part.as_bytes()))
    })
}

/// Up to `n` whole words in the [`MAX_BYTES`] before `at`, nearest first.
fn words_before(text: &str, at: usize, n: usize) -> Side<'_> {
    let b = text.as_bytes();
    let mut from = at.saturating_sub(MAX_BYTES);
    // A word cut by the window's edge is not a word.
    if from > 0 {
        while from < at && is_word_byte(b[from]) && is_word_byte(b[from - 1]) {
            from += 1;
        }
    }
    let mut side = Side::new();
    for word in words_backwards(&b[from..at]).filter(is_text).take(n) {
        side.push(word);
    }
    side
}

/// Up to `n` whole words in the [`MAX_BYTES`] after `at`, nearest first.
fn words_after(text: &str, at: usize, n: usize) -> Side<'_> {
    let b = text.as_bytes();
    let mut to = (at + MAX_BYTES).min(b.len());
    if to < b.len() {
        while to > at && is_word_byte(b[to - 1]) && is_word_byte(b[to]) {
            to -= 1;
        }
    }
    let mut side = Side::new();
    for word in words(&b[at..to]).filter(is_text).take(n) {
        side.push(word);
    }
    side
}

/// Numbers say nothing about their neighbours (`from 9.2.14.100 to
/// 9.2.14.101`), so they are not counted as context words.
fn is_text(word: &&[u8]) -> bool {
    word.iter().any(u8::is_ascii_alphabetic)
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric()
}

/// Whether byte `i` of `s` belongs to a word: a letter or digit, or a dot
/// between digits.
fn inside(s: &[u8], i: usize) -> bool {
    let c = s[i];
    is_word_byte(c)
        || (c == b'.'
            && i > 0
            && s[i - 1].is_ascii_digit()
            && s.get(i + 1).is_some_and(u8::is_ascii_digit))
}

/// Whether a camelCase hump parts byte `i` of `s` from the one before.
fn hump(s: &[u8], i: usize) -> bool {
    s[i].is_ascii_uppercase() && s[i - 1].is_ascii_lowercase()
}

/// The words of `s` from the last to the first, lazily: the words before a
/// candidate are read nearest first and only as far as needed.
fn words_backwards(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut end = s.len();
    std::iter::from_fn(move || {
        while end > 0 && !inside(s, end - 1) {
            end -= 1;
        }
        if end == 0 {
            return None;
        }
        let mut start = end - 1;
        while start > 0 && inside(s, start - 1) && !hump(s, start) {
            start -= 1;
        }
        let word = &s[start..end];
        end = start;
        Some(word)
    })
}

/// The words of `s` in reading order: runs of ASCII letters and digits, cut
/// at camelCase humps, with dots between digits kept inside.
fn words(s: &[u8]) -> impl Iterator<Item = &[u8]> {
    let inside = move |i: usize| inside(s, i);
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < s.len() && !inside(i) {
            i += 1;
        }
        if i == s.len() {
            return None;
        }
        let start = i;
        i += 1;
        while i < s.len() && inside(i) && !hump(s, i) {
            i += 1;
        }
        Some(&s[start..i])
    })
}

/// Whether `span` fills a cell: a separator (`,` `;` `|` tab) or a line's
/// edge on each side, past spaces and quotes. Cheap, so the header search
/// runs only for candidates in tables.
fn in_table_cell(text: &str, span: &Range<usize>) -> bool {
    let b = text.as_bytes();
    let pad = |c: &u8| matches!(c, b' ' | b'"' | b'\'');
    let edge =
        |c: Option<&u8>| matches!(c, None | Some(b',' | b';' | b'|' | b'\t' | b'\n' | b'\r'));
    let before = b[..span.start].iter().rev().find(|c| !pad(c));
    let after = b[span.end..].iter().find(|c| !pad(c));
    let separated = |c: Option<&u8>| matches!(c, Some(b',' | b';' | b'|' | b'\t'));
    edge(before) && edge(after) && (separated(before) || separated(after))
}

/// What the table column `span` sits in says: for a CSV, TSV or Markdown
/// table row, the cells at the same position in the rows above with as many
/// separators, nearest first, until one holds a cue (the header, or a
/// header-like row of a table pasted into a log line). `None` outside
/// tables, when no row names the column, or when the rows above run too far.
fn column_cue(text: &str, span: &Range<usize>, vocab: &Vocabulary) -> Option<Cue> {
    let b = text.as_bytes();
    // A row is a line of its own; a longer line is prose or one-line JSON,
    // and searching further would cost more than the check is worth.
    let floor = span.start.saturating_sub(ROW_BYTES);
    let line_start = b[floor..span.start]
        .iter()
        .rposition(|&c| c == b'\n')
        .map(|i| floor + i + 1)?;
    let ceiling = (span.end + ROW_BYTES).min(b.len());
    let line_end = b[span.end..ceiling]
        .iter()
        .position(|&c| c == b'\n')
        .map_or(ceiling, |i| span.end + i);
    let line = &b[line_start..line_end];
    let sep = [b'|', b'\t', b',', b';']
        .into_iter()
        .find(|&s| line.contains(&s))?;
    let count = cells(line, sep).count();
    if count < 2 {
        return None;
    }
    let column = cells(line, sep).position(|cell| {
        let (from, to) = (line_start + cell.start, line_start + cell.end);
        from <= span.start && span.end <= to
    })?;
    // Walk up while rows have the same shape.
    let floor = line_start.saturating_sub(HEADER_BYTES);
    let mut end = line_start - 1;
    for _ in 0..HEADER_LINES {
        let start = b[floor..end]
            .iter()
            .rposition(|&c| c == b'\n')
            .map_or(floor, |i| floor + i + 1);
        if start == floor && floor > 0 {
            // The window cut this row: too far up to tell.
            return None;
        }
        let row = &b[start..end];
        if cells(row, sep).count() != count {
            return None;
        }
        if !is_rule_row(row) {
            let cell = cells(row, sep).nth(column)?;
            let side = Side::last(words(&row[cell]), MAX_WORDS);
            if let Some((cue, _)) = vocab.nearest(&side, true) {
                return Some(cue);
            }
        }
        if start == 0 {
            return None;
        }
        end = start - 1;
    }
    None
}

/// The cells of a row as ranges, honouring double quotes; Markdown's outer
/// pipes make no empty first or last cell.
fn cells(row: &[u8], sep: u8) -> impl Iterator<Item = Range<usize>> + '_ {
    let trimmed_start = if sep == b'|' {
        row.iter()
            .position(|c| !c.is_ascii_whitespace())
            .filter(|&i| row[i] == b'|')
            .map_or(0, |i| i + 1)
    } else {
        0
    };
    let trimmed_end = if sep == b'|' {
        row.iter()
            .rposition(|c| !c.is_ascii_whitespace())
            .filter(|&i| row[i] == b'|' && i >= trimmed_start)
            .unwrap_or(row.len())
    } else {
        row.len()
    };
    let mut at = trimmed_start;
    let mut done = trimmed_start > trimmed_end;
    std::iter::from_fn(move || {
        if done {
            return None;
        }
        let start = at;
        let mut quoted = false;
        while at < trimmed_end {
            let c = row[at];
            if c == b'"' {
                quoted = !quoted;
            } else if c == sep && !quoted {
                break;
            }
            at += 1;
        }
        let cell = start..at;
        if at >= trimmed_end {
            done = true;
        } else {
            at += 1;
        }
        Some(cell)
    })
}

/// A Markdown rule row such as `|---|:--:|`.
fn is_rule_row(row: &[u8]) -> bool {
    row.contains(&b'-')
        && row
            .iter()
            .all(|c| matches!(c, b'|' | b'-' | b':' | b' ' | b'\t'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const VOCAB: Vocabulary = Vocabulary::new(
        &[&["ssn"], &["social", "security", "number"]],
        &[&["order"], &["version"]],
    );
    const REACH: Reach = Reach {
        before: 5,
        after: 3,
    };

    fn judge_at(text: &str, value: &str) -> Option<Cue> {
        let start = text.find(value).unwrap();
        judge(text, &(start..start + value.len()), REACH, &VOCAB)
    }

    #[test]
    fn words_split_at_humps_and_join_dotted_numbers() {
        let w: Vec<&[u8]> = words(b"applicant_ssn firmwareVersion=9.2.14.101. SSN#").collect();
        assert_eq!(
            w,
            [
                &b"applicant"[..],
                b"ssn",
                b"firmware",
                b"Version",
                b"9.2.14.101",
                b"SSN"
            ]
        );
    }

    #[test]
    fn the_filter_lets_every_cue_word_through_in_any_case() {
        for word in [
            "ssn", "SSN", "Social", "security", "NUMBER", "order", "Version",
        ] {
            assert!(VOCAB.may_hold(word.as_bytes()), "{word}");
        }
    }

    #[test]
    fn words_read_backwards_are_the_same_words() {
        let text = b"applicant_ssn firmwareVersion=9.2.14.101. SSN# x";
        let mut back: Vec<&[u8]> = words_backwards(text).collect();
        back.reverse();
        assert_eq!(back, words(text).collect::<Vec<_>>());
    }

    #[test]
    fn the_nearest_cue_decides() {
        assert_eq!(judge_at("SSN: 219099999", "219099999"), Some(Cue::Confirm));
        assert_eq!(
            judge_at(r#"{"applicant_ssn": "219099999"}"#, "219099999"),
            Some(Cue::Confirm)
        );
        assert_eq!(
            judge_at("My Social Security Number is 219099999.", "219099999"),
            Some(Cue::Confirm)
        );
        assert_eq!(
            judge_at("219099999 is my ssn", "219099999"),
            Some(Cue::Confirm)
        );
        assert_eq!(
            judge_at(r#"{"ssn": "x", "order_id": 219099999}"#, "219099999"),
            Some(Cue::Veto)
        );
        assert_eq!(judge_at("ticket 219099999 closed", "219099999"), None);
        // Too far, and cut words are not words.
        assert_eq!(
            judge_at("ssn one two three four five six 219099999", "219099999"),
            None
        );
        let far = format!("assn{} 219099999", " ".repeat(MAX_BYTES - 4));
        assert_eq!(judge_at(&far, "219099999"), None);
    }

    #[test]
    fn a_table_header_names_the_column() {
        let csv = "id,ssn,order\n1,219099999,123456789\n2,219099998,123456788\n";
        assert_eq!(judge_at(csv, "219099998"), Some(Cue::Confirm));
        assert_eq!(judge_at(csv, "123456788"), Some(Cue::Veto));
        let md = "| name | SSN |\n|---|---|\n| Ann | 219 09 9999 |\n";
        // A log line of the same shape above the header says nothing.
        let logged = "{\"a\":1,\"b\":2,\"msg\":\"\nname,ssn,status\nAnn,219099999,ok\n";
        assert_eq!(judge_at(logged, "219099999"), Some(Cue::Confirm));
        assert_eq!(judge_at(md, "219 09 9999"), Some(Cue::Confirm));
        let quoted = "\"name, full\",ssn\n\"Smith, Ann\",219099999\n";
        assert_eq!(judge_at(quoted, "219099999"), Some(Cue::Confirm));
        // A header the window cannot reach says nothing.
        let long = format!("x,ssn\n{}1,219099999\n", "1,2\n".repeat(HEADER_LINES + 1));
        assert_eq!(judge_at(&long, "219099999"), None);
    }
}

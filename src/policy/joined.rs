//! Searching several strings as one: the messages and content parts of a
//! request are one conversation, so a card number typed over two messages
//! is one card number.
//!
//! The strings are joined with a separator into one text, searched once,
//! and every match is cut back into pieces, one per string it touches, in
//! that string's own offsets. A match is counted once however many pieces
//! it has; each piece is redacted in its own string.

use super::matcher::{Hit, Matcher};

/// Joins the model's text: a space, which patterns that allow spaced groups
/// (cards, phone numbers, SSNs) cross, so a value split between two
/// messages is found.
pub(crate) const TEXT_JOIN: char = ' ';

/// Joins fields that are not the model's text (ids, names, keys): NUL,
/// which no detector crosses, so two adjacent fields never make a match.
pub(crate) const FIELD_JOIN: char = '\0';

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

/// Reusable buffers of a joined search.
#[derive(Debug, Default)]
pub(crate) struct Search {
    joined: String,
    starts: Vec<usize>,
    hits: Vec<Hit>,
}

// === impl Search ===

impl Search {
    /// Searches `strings` joined by `join`. Adds one to `counts[entry]` per
    /// match and appends its pieces to `pieces`.
    pub fn run(
        &mut self,
        matcher: &Matcher,
        strings: &[&str],
        join: char,
        counts: &mut [u64],
        pieces: &mut Vec<Piece>,
    ) {
        match strings {
            [] => {}
            [only] => {
                // One string needs no copy.
                matcher.find(only, &mut self.hits);
                for h in &self.hits {
                    counts[h.entry] += 1;
                    pieces.push(Piece {
                        string: 0,
                        entry: h.entry,
                        start: h.start,
                        end: h.end,
                    });
                }
            }
            _ => {
                self.joined.clear();
                self.starts.clear();
                for (i, s) in strings.iter().enumerate() {
                    if i > 0 {
                        self.joined.push(join);
                    }
                    self.starts.push(self.joined.len());
                    self.joined.push_str(s);
                }
                matcher.find(&self.joined, &mut self.hits);
                for h in &self.hits {
                    counts[h.entry] += 1;
                    self.cut(strings, h, pieces);
                }
            }
        }
    }

    /// The pieces of joined-text hit `h`, one per string it overlaps.
    fn cut(&self, strings: &[&str], h: &Hit, pieces: &mut Vec<Piece>) {
        // The last string starting at or before the hit.
        let first = self.starts.partition_point(|&s| s <= h.start).max(1) - 1;
        for (i, &start) in self.starts.iter().enumerate().skip(first) {
            if start >= h.end {
                break;
            }
            let end = start + strings[i].len();
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
    fn fields_joined_by_nul_never_make_a_match() {
        let strings = ["5555 5555", "5555 4444"];
        let mut counts = vec![0];
        let mut pieces = Vec::new();
        Search::default().run(&cards(), &strings, FIELD_JOIN, &mut counts, &mut pieces);
        assert_eq!(counts, vec![0]);
        assert!(pieces.is_empty());
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

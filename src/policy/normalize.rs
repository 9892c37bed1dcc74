//! Text as detectors see it: the forms people use to slip a value past a
//! pattern folded back to plain ASCII, with a map from every position of
//! the folded text to the original one, so a match is reported (and
//! redacted) where it really is.
//!
//! Each character is folded on its own:
//! - format characters (zero-width space and joiners, word joiner, soft
//!   hyphen, BOM, bidi controls) are dropped, so `4111\u{200B}1111…` is
//!   seen as `41111111…`;
//! - space separators other than the ASCII space (no-break, thin, ideographic
//!   spaces) become a plain space;
//! - decimal digits of every script (Arabic-Indic `٤`, Devanagari `४`,
//!   full-width `４`) become ASCII digits;
//! - everything else takes its NFKC form (full-width letters and signs,
//!   ligatures, compatibility forms).
//!
//! Folding character by character rather than normalising whole sequences
//! keeps the position map exact and cheap; combining sequences only matter
//! to detectors through their base characters. ASCII text is returned as
//! it is, without a copy: that is nearly all traffic.

use std::borrow::Cow;
use std::sync::OnceLock;

use unicode_normalization::{is_nfkc_quick, IsNormalized, UnicodeNormalization};
use unicode_properties::{GeneralCategory, UnicodeGeneralCategory};

/// A text folded for detection, with the way back to the original.
#[derive(Debug)]
pub(crate) struct Folded<'a> {
    text: Cow<'a, str>,
    /// Where the folded text differs from the original, in order; empty
    /// when nothing was folded.
    changes: Vec<Change>,
}

/// One original character whose folded form differs from it.
#[derive(Debug, Clone, Copy)]
struct Change {
    /// Where its folded form starts in the folded text.
    folded_at: usize,
    /// Length of its folded form (0: dropped).
    folded_len: usize,
    /// Where the character starts in the original text.
    original_at: usize,
    /// Its length in the original text.
    original_len: usize,
}

// === impl Folded ===

impl<'a> Folded<'a> {
    /// Folds `text`; borrows it when there is nothing to fold.
    pub fn new(text: &'a str) -> Self {
        if text.is_ascii() {
            return Self::unchanged(text);
        }
        let mut out: Option<String> = None;
        let mut changes = Vec::new();
        // Start of the unchanged text not yet copied into `out`.
        let mut copied_to = 0;
        for (at, c) in text.char_indices() {
            let len = c.len_utf8();
            let folded = fold_char(c);
            if matches!(folded, Fold::Same) {
                continue;
            }
            let out = out.get_or_insert_with(|| String::with_capacity(text.len()));
            out.push_str(&text[copied_to..at]);
            copied_to = at + len;
            let folded_at = out.len();
            match folded {
                Fold::Same | Fold::Drop => {}
                Fold::Char(f) => out.push(f),
                Fold::Nfkc => out.extend(std::iter::once(c).nfkc()),
            }
            changes.push(Change {
                folded_at,
                folded_len: out.len() - folded_at,
                original_at: at,
                original_len: len,
            });
        }
        match out {
            None => Self::unchanged(text),
            Some(mut out) => {
                out.push_str(&text[copied_to..]);
                Self {
                    text: Cow::Owned(out),
                    changes,
                }
            }
        }
    }

    fn unchanged(text: &'a str) -> Self {
        Self {
            text: Cow::Borrowed(text),
            changes: Vec::new(),
        }
    }

    /// The folded text.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Whether the folded text is the original.
    pub fn is_unchanged(&self) -> bool {
        self.changes.is_empty()
    }

    /// The original span of the folded span `start..end`: from the start
    /// of the character that gave `start` to the end of the one that gave
    /// the byte before `end`, so a dropped character inside the span is
    /// covered too.
    pub fn original_span(&self, start: usize, end: usize) -> (usize, usize) {
        if self.changes.is_empty() {
            return (start, end);
        }
        let from = self.original_pos(start, false);
        let to = if end > start {
            self.original_pos(end - 1, true)
        } else {
            from
        };
        (from, to.max(from))
    }

    /// Maps one folded byte position back: to the start of its original
    /// character, or (`after`) past its end.
    fn original_pos(&self, pos: usize, after: bool) -> usize {
        // The last change that starts at or before `pos` and produced
        // output; dropped characters map nothing.
        let i = self
            .changes
            .partition_point(|c| c.folded_at + c.folded_len <= pos);
        if let Some(c) = self.changes.get(i) {
            if c.folded_at <= pos && pos < c.folded_at + c.folded_len {
                return if after {
                    c.original_at + c.original_len
                } else {
                    c.original_at
                };
            }
        }
        // `pos` lies in unchanged text after change `i - 1` (if any): the
        // offset between the two texts is that change's.
        let (folded_end, original_end) = match i.checked_sub(1).map(|j| self.changes[j]) {
            Some(c) => (c.folded_at + c.folded_len, c.original_at + c.original_len),
            None => (0, 0),
        };
        let original = original_end + (pos - folded_end);
        if after {
            original + 1
        } else {
            original
        }
    }
}

/// What one character folds to.
enum Fold {
    Same,
    Drop,
    Char(char),
    Nfkc,
}

/// Bit `c` is set when the BMP character `c` folds to something else:
/// built once, so folding a common non-ASCII character costs one lookup.
static BMP_FOLDS: OnceLock<Box<[u64]>> = OnceLock::new();

fn fold_char(c: char) -> Fold {
    if c.is_ascii() {
        return Fold::Same;
    }
    let code = c as usize;
    if code < 0x10000 {
        let bits = BMP_FOLDS.get_or_init(bmp_folds);
        if bits[code / 64] & (1 << (code % 64)) == 0 {
            return Fold::Same;
        }
    }
    fold_slow(c)
}

fn bmp_folds() -> Box<[u64]> {
    let mut bits = vec![0u64; 0x10000 / 64];
    for c in (0x80..0x10000u32).filter_map(char::from_u32) {
        if !matches!(fold_slow(c), Fold::Same) {
            let code = c as usize;
            bits[code / 64] |= 1 << (code % 64);
        }
    }
    bits.into_boxed_slice()
}

fn fold_slow(c: char) -> Fold {
    match c.general_category() {
        GeneralCategory::Format => return Fold::Drop,
        GeneralCategory::SpaceSeparator => return Fold::Char(' '),
        GeneralCategory::DecimalNumber => {
            if let Some(d) = decimal_value(c) {
                return Fold::Char(char::from(b'0' + d));
            }
        }
        _ => {}
    }
    if is_nfkc_quick(std::iter::once(c)) == IsNormalized::Yes {
        return Fold::Same;
    }
    // A character whose NFKC form is itself needs no copy of its own.
    let mut nfkc = std::iter::once(c).nfkc();
    if nfkc.next() == Some(c) && nfkc.next().is_none() {
        return Fold::Same;
    }
    Fold::Nfkc
}

/// The value of a decimal digit of any script. Unicode encodes each
/// script's digits as a run of ten from zero to nine, so the value is the
/// distance from the run's start; adjacent runs (mathematical digits) are
/// runs of ten too.
fn decimal_value(c: char) -> Option<u8> {
    let mut first = c as u32;
    while let Some(prev) = first.checked_sub(1).and_then(char::from_u32) {
        if prev.general_category() != GeneralCategory::DecimalNumber || c as u32 - prev as u32 > 60
        {
            break;
        }
        first = prev as u32;
    }
    u8::try_from((c as u32 - first) % 10).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fold(s: &str) -> String {
        Folded::new(s).text().to_owned()
    }

    #[test]
    fn ascii_is_borrowed_and_maps_to_itself() {
        let f = Folded::new("card 4111 1111");
        assert!(f.is_unchanged());
        assert!(matches!(f.text, Cow::Borrowed(_)));
        assert_eq!(f.original_span(5, 14), (5, 14));
    }

    #[test]
    fn digits_of_every_script_become_ascii() {
        assert_eq!(fold("４１１１"), "4111");
        assert_eq!(fold("٤١١١ ١١١١"), "4111 1111");
        assert_eq!(fold("۴۱۱۱"), "4111");
        assert_eq!(fold("४१११"), "4111");
        assert_eq!(fold("𝟒𝟏𝟏𝟏"), "4111");
        for (i, c) in ('٠'..='٩').enumerate() {
            assert_eq!(fold(&c.to_string()), i.to_string());
        }
    }

    #[test]
    fn format_characters_are_dropped_and_spaces_made_plain() {
        assert_eq!(
            fold("4111\u{200B}1111\u{2060}1111\u{FEFF}1111"),
            "4111111111111111"
        );
        assert_eq!(
            fold("4111\u{00A0}1111\u{202F}1111\u{3000}1111"),
            "4111 1111 1111 1111"
        );
        assert_eq!(fold("sk\u{00AD}-proj"), "sk-proj");
        assert_eq!(fold("\u{200D}"), "");
    }

    #[test]
    fn compatibility_forms_take_their_nfkc_form() {
        assert_eq!(fold("ｓｋ－ｐｒｏｊ"), "sk-proj");
        assert_eq!(fold("ﬁle"), "file");
        // Already normal: kept, and borrowed.
        let f = Folded::new("café ünïcödé 日本語");
        assert!(f.is_unchanged());
    }

    #[test]
    fn the_bmp_table_agrees_with_folding_each_character() {
        for c in (0x80..0x10000u32).filter_map(char::from_u32) {
            let quick = matches!(fold_char(c), Fold::Same);
            let slow = matches!(fold_slow(c), Fold::Same);
            assert_eq!(quick, slow, "U+{:04X}", c as u32);
        }
    }

    #[test]
    fn spans_map_back_to_the_original_characters() {
        let original = "pay ４１\u{200B}１１ now";
        let f = Folded::new(original);
        assert_eq!(f.text(), "pay 4111 now");
        let start = f.text().find("4111").unwrap();
        let (a, b) = f.original_span(start, start + 4);
        assert_eq!(&original[a..b], "４１\u{200B}１１");
        // Unchanged text after a change keeps its offset.
        let now = f.text().find("now").unwrap();
        let (a, b) = f.original_span(now, now + 3);
        assert_eq!(&original[a..b], "now");
        // And before the first change.
        assert_eq!(f.original_span(0, 3), (0, 3));
    }

    #[test]
    fn a_folded_form_longer_than_its_character_maps_whole() {
        let original = "x ﬁ y";
        let f = Folded::new(original);
        assert_eq!(f.text(), "x fi y");
        // Half of the ligature's folded form still covers the ligature.
        let (a, b) = f.original_span(2, 3);
        assert_eq!(&original[a..b], "ﬁ");
        let y = f.text().find('y').unwrap();
        let (a, b) = f.original_span(y, y + 1);
        assert_eq!(&original[a..b], "y");
    }
}

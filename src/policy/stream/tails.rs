//! Which tail of a stream's text could still grow into a match.
//!
//! The stream guard must not forward the whole of an entity that a `block`
//! policy would stop, yet a detector only confirms a match once text follows
//! it. So besides confirmed matches, the scanner asks: from which offset on
//! could the text seen so far still be the start of a match? That tail is
//! held back until more text decides it.
//!
//! [`Tails`] answers this with one lazy DFA built from the blocking
//! detectors' patterns. ASCII word boundaries (`(?-u:\b)`, which every
//! built-in detector uses) are kept, and evaluated with the byte before the
//! tail; every other look-around assertion (Unicode `\b`, `^`, `$`) is
//! removed. Removing an assertion only widens what a pattern matches, so
//! "this DFA cannot reach a match from here" implies "the detector cannot
//! either": the test may hold too much, never too little. The DFA runs
//! anchored from each candidate start; a dead state means no continuation
//! of that tail can match, and every other state (including a quit or a
//! cache failure) keeps the tail held. Keeping the ASCII boundaries matters
//! for prose: the `0` of `word0 ` cannot start a card, as no boundary
//! precedes it.
//!
//! Not every live tail is held. A tail that is an *ordinary word* (see
//! [`ordinary_word`]) may go on: it is not itself a match (complete matches
//! are held by the scanner's own rule), so releasing it releases a strict
//! prefix of any entity it may begin, never the whole entity, and it carries
//! no digits and no key-shaped run. Without this, every word would wait,
//! since `[A-Za-z0-9/+]{40}` (AWS secret keys) or an e-mail address may
//! begin with any word.

use regex_automata::hybrid::dfa::{Cache, DFA};
use regex_automata::hybrid::LazyStateID;
use regex_automata::nfa::thompson;
use regex_automata::util::start;
use regex_automata::{Anchored, MatchKind};
use regex_syntax::hir::{Hir, HirKind, Look, Repetition};

/// Longest letters-only tail treated as an ordinary word.
const MAX_WORD: usize = 24;

/// Longest run of capitals in an ordinary word (`HTTPS`, `HashMap`); a
/// longer one may be an access key (`AKIAIOSF…`).
const MAX_CAPITALS: usize = 5;

/// Room for the lazy DFA's states; cleared and rebuilt when full.
const CACHE_BYTES: usize = 2 << 20;

/// The prefix automaton of a set of patterns.
#[derive(Debug)]
pub(crate) struct Tails {
    dfa: DFA,
}

/// A state of the prefix automaton.
pub(crate) type StateId = LazyStateID;

/// Where a tail stands after some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Step {
    /// No continuation can match.
    Dead,
    /// Some continuation may match.
    Alive(StateId),
    /// The automaton gave up (a quit byte or a failing cache): treated as
    /// alive, and walked again from its start next time.
    Unknown,
}

/// Per-stream scratch for [`Tails`]: the lazy DFA's state cache.
#[derive(Debug)]
pub(crate) struct TailCache {
    cache: Cache,
}

// === impl Tails ===

impl Tails {
    /// Builds the automaton; `None` if a pattern cannot be parsed or
    /// compiled, and then every tail is held (see the scanner).
    pub fn build<'a>(patterns: impl IntoIterator<Item = &'a str>) -> Option<Self> {
        let mut hirs = Vec::new();
        for pattern in patterns {
            let hir = regex_syntax::ParserBuilder::new()
                .build()
                .parse(pattern)
                .ok()?;
            hirs.push(without_look(&hir));
        }
        if hirs.is_empty() {
            return None;
        }
        let nfa = thompson::Compiler::new()
            .configure(thompson::Config::new().which_captures(thompson::WhichCaptures::None))
            .build_many_from_hir(&hirs)
            .ok()?;
        let dfa = DFA::builder()
            .configure(
                DFA::config()
                    .match_kind(MatchKind::All)
                    .cache_capacity(CACHE_BYTES)
                    .skip_cache_capacity_check(true),
            )
            .build_from_nfa(nfa)
            .ok()?;
        Some(Self { dfa })
    }

    pub fn cache(&self) -> TailCache {
        TailCache {
            cache: self.dfa.create_cache(),
        }
    }

    /// The state before any byte of a tail that follows `before` (`None`
    /// at the start of the text).
    pub fn start(&self, cache: &mut TailCache, before: Option<u8>) -> Step {
        let config = start::Config::new()
            .anchored(Anchored::Yes)
            .look_behind(before);
        match self.dfa.start_state(&mut cache.cache, &config) {
            Ok(start) => Step::Alive(start),
            Err(_) => Step::Unknown,
        }
    }

    /// The state after `byte`. Every state id obtained before a cache
    /// clear ([`TailCache::clears`]) is stale; only the one returned here
    /// stays valid.
    pub fn step(&self, cache: &mut TailCache, state: StateId, byte: u8) -> Step {
        match self.dfa.next_state(&mut cache.cache, state, byte) {
            Ok(next) if next.is_dead() => Step::Dead,
            Ok(next) if next.is_quit() => Step::Unknown,
            Ok(next) => Step::Alive(next),
            Err(_) => Step::Unknown,
        }
    }

    /// The state after all of `tail`, which follows `before`.
    pub fn walk(&self, cache: &mut TailCache, before: Option<u8>, tail: &[u8]) -> Step {
        let mut step = self.start(cache, before);
        for &b in tail {
            step = match step {
                Step::Alive(state) => self.step(cache, state, b),
                done => return done,
            };
        }
        step
    }

    /// Whether some continuation of `tail` could match a pattern, with the
    /// match starting at the first byte of `tail`.
    #[cfg(test)]
    pub fn alive(&self, cache: &mut TailCache, tail: &[u8]) -> bool {
        !matches!(self.walk(cache, Some(b' '), tail), Step::Dead)
    }
}

// === impl TailCache ===

impl TailCache {
    /// How often the lazy DFA's cache has been cleared.
    pub fn clears(&self) -> usize {
        self.cache.clear_count()
    }
}

/// `hir` with every look-around assertion but ASCII word boundaries
/// replaced by the empty string, and capture groups dropped: a superset of
/// what it matched.
fn without_look(hir: &Hir) -> Hir {
    match hir.kind() {
        HirKind::Look(Look::WordAscii | Look::WordAsciiNegate) => hir.clone(),
        HirKind::Look(_) => Hir::empty(),
        HirKind::Capture(capture) => without_look(&capture.sub),
        HirKind::Repetition(rep) => Hir::repetition(Repetition {
            min: rep.min,
            max: rep.max,
            greedy: rep.greedy,
            sub: Box::new(without_look(&rep.sub)),
        }),
        HirKind::Concat(subs) => Hir::concat(subs.iter().map(without_look).collect()),
        HirKind::Alternation(subs) => Hir::alternation(subs.iter().map(without_look).collect()),
        HirKind::Empty | HirKind::Literal(_) | HirKind::Class(_) => hir.clone(),
    }
}

/// Whether a live tail may be forwarded although it could still begin a
/// match: it holds no ASCII letter or digit at all (`:`, `-`, a space), or
/// it is 1 to [`MAX_WORD`] ASCII letters, optionally followed by one of
/// `.,;:!?`, with no run of more than [`MAX_CAPITALS`] capitals. Such a tail carries no digit, no `-`, `_` or `/` that
/// joins a key prefix to its body (`sk-pro`, `ghp_`), and no long
/// key-shaped run; and as it is no match itself, releasing it never
/// releases a whole entity.
pub(crate) fn ordinary_word(tail: &str) -> bool {
    if !tail.bytes().any(|b| b.is_ascii_alphanumeric()) {
        return true;
    }
    let word = tail
        .strip_suffix(['.', ',', ';', ':', '!', '?'])
        .unwrap_or(tail);
    if word.is_empty() || word.len() > MAX_WORD || !word.bytes().all(|b| b.is_ascii_alphabetic()) {
        return false;
    }
    let mut run = 0;
    for b in word.bytes() {
        run = if b.is_ascii_uppercase() { run + 1 } else { 0 };
        if run > MAX_CAPITALS {
            return false;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tails(patterns: &[&str]) -> Tails {
        Tails::build(patterns.iter().copied()).unwrap()
    }

    #[test]
    fn a_digit_run_stays_alive_until_a_card_cannot_follow() {
        let t = tails(&[r"(?-u:\b)[0-9](?:[ -]?[0-9]){12,18}(?-u:\b)"]);
        let mut c = t.cache();
        assert!(t.alive(&mut c, b"5555 55"));
        assert!(t.alive(&mut c, b"5555 5555 5555 4444"));
        assert!(!t.alive(&mut c, b"5555."));
        assert!(!t.alive(&mut c, b"Your"));
        // No boundary before the digit: `word0 ` cannot start a card.
        assert!(matches!(t.walk(&mut c, Some(b'd'), b"0 "), Step::Dead));
    }

    #[test]
    fn a_key_prefix_is_alive_and_a_complete_keyword_too() {
        let t = tails(&[
            r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}",
            r"(?i:(?-u:\b)secret(?-u:\b))",
        ]);
        let mut c = t.cache();
        assert!(t.alive(&mut c, b"sk-pro"));
        assert!(t.alive(&mut c, b"SECRET"));
        assert!(!t.alive(&mut c, b"sky"));
        assert!(!t.alive(&mut c, b"secrets!"));
    }

    #[test]
    fn unicode_word_boundaries_are_widened_not_refused() {
        let t = tails(&[r"\bprojekt-ä\b"]);
        let mut c = t.cache();
        assert!(t.alive(&mut c, "projekt-".as_bytes()));
        assert!(!t.alive(&mut c, b"proj x"));
    }

    #[test]
    fn ordinary_words_are_letters_with_one_closing_mark() {
        for word in [
            "Your", "card", "end.", "Bearer", "HTTPS", "sk", "", " ", ": -",
        ] {
            assert!(ordinary_word(word), "{word:?}");
        }
        for tail in [
            "5555", "sk-pro", "ghp_x", "AKIAIOSF", "end. ", "e.g.", "abc1",
        ] {
            assert!(!ordinary_word(tail), "{tail:?}");
        }
    }
}

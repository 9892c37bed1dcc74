//! Watching a streamed body for `block` policies as it passes.
//!
//! The scanner keeps a small look-behind window of the text already seen
//! and scans it together with each new delta, so a match split across
//! chunks (a card number in three SSE chunks) is found as soon as its last
//! piece arrives. Memory stays bounded: the window keeps the last
//! [`LOOK_BEHIND`] bytes, or, while a match or token is still open at the
//! end of the text, from its start up to [`MAX_WINDOW`] bytes.
//!
//! # What must be held back
//!
//! Besides violations, the scanner reports its *hold point*
//! ([`StreamScanner::hold_from`]): the offset in the field's text from which
//! nothing may be forwarded yet. It is the earliest of
//! - the start of every match found but not yet confirmed (fewer than
//!   [`RIGHT_CONTEXT`] bytes follow it, so the next delta may still turn it
//!   into something else, or confirm it), and
//! - the start of every tail that could still grow into a match of a
//!   blocking detector, a user pattern or a keyword (trailing digits and
//!   separators for a card, `sk-pro` for a key), unless that tail is an
//!   ordinary word (letters only; see `tails.rs` for the exact rule).
//!
//! Why this is enough: an entity is a match `[s, e)`. Once its last byte
//! has arrived the detector either finds it, and it is held from `s` until
//! confirmed, which trips the stream; or it cannot be found yet because the
//! validator needs the bytes after it, and then it is unconfirmed and held
//! just the same. Before its last byte arrived, the text from `s` was a tail
//! that could still grow into that match: held, unless it was an ordinary
//! word, which is a strict prefix and so never the whole entity. The one
//! assumption is the one the scanner already makes: validators look at most
//! [`RIGHT_CONTEXT`] bytes past a match.
//!
//! Held text is bounded by the window: a tail still open after
//! [`MAX_WINDOW`] bytes (a PEM block that never ends) is judged on what
//! has arrived and released.

use std::sync::{Arc, Mutex, PoisonError, Weak};

use super::matcher::Hit;
use super::{Action, Direction, PolicySet, Verdict};

mod tails;

use tails::{ordinary_word, Step, TailCache, Tails};

/// Bytes of earlier text kept between deltas: longer than any structured
/// value (card, IBAN, phone, SSN, address).
pub const LOOK_BEHIND: usize = 256;

/// Most bytes ever held: a still-open match or token longer than this (a
/// long JWT, a PEM block) is judged on what has arrived.
pub const MAX_WINDOW: usize = 4096;

/// Bytes after a match that validators look at (`1.2.3.4` is an address
/// unless `.5` follows): a match closer than this to the end of the text so
/// far waits for more.
const RIGHT_CONTEXT: usize = 2;

/// Detectors whose candidates the words after them can confirm, not only
/// veto: a bare nine-digit number followed by `(SSN)` is an SSN.
const CONFIRMED_BY_WORDS_AFTER: &[&str] = &["US_SSN"];

/// How far after a candidate those words are read (the context reach of
/// the detectors' validators).
const WORDS_AFTER_REACH: usize = 64;

/// Feeds on the text deltas of one streamed field (e.g. the
/// `choices[0].delta.content` of each SSE chunk, or one tool call's
/// `arguments`) and reports the first `block` violation. Use one scanner per
/// choice and field; the final stored copy is scanned again as a whole for
/// the COMPLIANCE_* events.
#[derive(Debug)]
pub struct StreamScanner {
    set: Arc<PolicySet>,
    direction: Direction,
    /// Whether any block policy watches this direction.
    active: bool,
    window: String,
    hits: Vec<Hit>,
    /// A violation was reported; the caller ends the stream.
    tripped: bool,
    /// Bytes of text fed so far; `window` ends here.
    fed: u64,
    /// The tails still able to grow into a match, by start.
    live: Vec<Live>,
    /// The prefix cache's clear count when `live`'s states were taken.
    clears: usize,
    /// Window offset from which text is held (see the module docs).
    hold: usize,
    /// The prefix test; `None` when it could not be built, and then the
    /// whole window is held.
    tails: Option<Arc<Tails>>,
    /// Scanner entries of blocking detectors that words after a candidate
    /// can confirm (see [`CONFIRMED_BY_WORDS_AFTER`]).
    confirmed_after: Vec<usize>,
    cache: Option<TailCache>,
}

/// A tail of the window that could still grow into a match.
#[derive(Debug, Clone, Copy)]
struct Live {
    /// Window offset of its first byte.
    start: usize,
    /// Its automaton state; `Unknown` ones are walked again from `start`.
    state: Step,
}

/// The byte before `at` in `text`; `None` at the start of the window, which
/// the prefix test reads as the start of the text (a word boundary there
/// can only widen what it finds alive).
fn byte_before(text: &[u8], at: usize) -> Option<u8> {
    at.checked_sub(1).map(|i| text[i])
}

/// Prefix automata already built, one per policy set alive: building one
/// costs a few milliseconds, far too much per stream, and a policy set is
/// built once per configuration.
static TAILS: Mutex<Vec<BuiltTails>> = Mutex::new(Vec::new());

/// A policy set, while it lives, and its prefix automaton (`None`: it
/// could not be built).
type BuiltTails = (Weak<PolicySet>, Option<Arc<Tails>>);

/// The prefix automaton of the detectors that `block` policies watching
/// `direction` count.
fn tails_for(set: &Arc<PolicySet>, direction: Direction) -> Option<Arc<Tails>> {
    let mut built = TAILS.lock().unwrap_or_else(PoisonError::into_inner);
    built.retain(|(weak, _)| weak.strong_count() > 0);
    let key = Arc::downgrade(set);
    if let Some((_, tails)) = built.iter().find(|(weak, _)| weak.ptr_eq(&key)) {
        return tails.clone();
    }
    let mut entries: Vec<usize> = set
        .policies
        .iter()
        .filter(|p| p.action == Action::Block && p.applies_to.covers(direction))
        .flat_map(|p| p.entries.iter().copied())
        .collect();
    entries.sort_unstable();
    entries.dedup();
    let all = set.matcher.entries();
    let tails = Tails::build(
        entries
            .iter()
            .filter_map(|&e| all.get(e))
            .map(|e| e.pattern()),
    )
    .map(Arc::new);
    built.push((key, tails.clone()));
    tails
}

// === impl StreamScanner ===

impl StreamScanner {
    /// A scanner for the `block` policies of `set` that watch `direction`.
    pub fn new(set: Arc<PolicySet>, direction: Direction) -> Self {
        let active = set.blocks(direction);
        let tails = if active {
            tails_for(&set, direction)
        } else {
            None
        };
        let confirmed_after = if active {
            set.blocking_entries(direction)
                .into_iter()
                .filter(|&e| CONFIRMED_BY_WORDS_AFTER.contains(&set.matcher.entries()[e].kind))
                .collect()
        } else {
            Vec::new()
        };
        Self {
            confirmed_after,
            set,
            direction,
            active,
            window: String::new(),
            hits: Vec::new(),
            tripped: false,
            fed: 0,
            live: Vec::new(),
            clears: 0,
            hold: 0,
            tails,
            cache: None,
        }
    }

    /// Adds `delta` and returns the violated `block` policy (the most
    /// severe), once, as soon as the text seen so far contains a match. A
    /// match that reaches the end of the text so far waits for the next
    /// delta (or [`Self::finish`]), as does one followed by fewer than two
    /// bytes: the next chunk may turn it into something else, as more digits
    /// turn a Luhn-valid prefix into an order number.
    pub fn feed(&mut self, delta: &str) -> Option<Verdict> {
        if !self.active || self.tripped || delta.is_empty() {
            return None;
        }
        let old_len = self.window.len();
        self.window.push_str(delta);
        self.fed += delta.len() as u64;
        let verdict = self.check(false);
        self.update_hold(old_len);
        self.trim();
        verdict
    }

    /// Bytes of text fed so far.
    pub fn fed(&self) -> u64 {
        self.fed
    }

    /// The offset, in bytes of all text fed so far, from which text must not
    /// be forwarded yet: it is, or could still grow into, the whole of a
    /// blocked entity. Equal to the bytes fed when nothing is held.
    pub fn hold_from(&self) -> u64 {
        let held = self.window.len().saturating_sub(self.hold);
        self.fed - held as u64
    }

    /// The stream ended: judges what is still open at the end.
    pub fn finish(&mut self) -> Option<Verdict> {
        if !self.active || self.tripped {
            return None;
        }
        let verdict = self.check(true);
        self.window.clear();
        self.live.clear();
        self.hold = 0;
        verdict
    }

    /// Bytes of text held, for the bound's tests.
    #[cfg(test)]
    pub(crate) fn held(&self) -> usize {
        self.window.len()
    }

    /// Whether a violation has been reported.
    pub fn tripped(&self) -> bool {
        self.tripped
    }

    fn check(&mut self, at_end: bool) -> Option<Verdict> {
        let len = self.window.len();
        self.set.matcher.find(&self.window, &mut self.hits);
        let mut counts = vec![0u64; self.set.matcher.entries().len()];
        let mut any = false;
        for h in &self.hits {
            if at_end || h.end + RIGHT_CONTEXT <= len || len >= MAX_WINDOW {
                counts[h.entry] += 1;
                any = true;
            }
        }
        if !any {
            return None;
        }
        let scan = self.set.verdicts(&counts, self.direction);
        let verdict = scan
            .violations()
            .filter(|v| v.action == Action::Block)
            .fold(None, |best: Option<&Verdict>, v| match best {
                Some(b) if b.severity >= v.severity => Some(b),
                _ => Some(v),
            })
            .cloned();
        if verdict.is_some() {
            self.tripped = true;
        }
        verdict
    }

    /// Recomputes the hold point after the text from `old_len` on was added.
    ///
    /// The tails still alive advance byte by byte over the new text, and a
    /// new tail starts at each new character. Two tails in the same state
    /// have the same future, so only the earlier is kept: if the later one
    /// is not an ordinary word the earlier is not either (a word's suffix is
    /// a word), so the hold point is the same. This keeps the work per byte
    /// bounded by the automaton's live states, not the window's length.
    fn update_hold(&mut self, old_len: usize) {
        let len = self.window.len();
        let mut hold = len;
        if len < MAX_WINDOW {
            for h in &self.hits {
                if h.end + RIGHT_CONTEXT > len {
                    hold = hold.min(h.start);
                }
            }
            // A candidate that only words after it can confirm (`219099999
            // (SSN)`) waits until those words could have arrived.
            for &e in &self.confirmed_after {
                let candidates = self.set.matcher.entries()[e].candidates(&self.window);
                for (start, end) in candidates {
                    if end + WORDS_AFTER_REACH > len {
                        hold = hold.min(start);
                    }
                }
            }
        }
        let Some(tails) = &self.tails else {
            // No prefix test: everything within the window waits.
            self.hold = 0;
            return;
        };
        let cache = self.cache.get_or_insert_with(|| tails.cache());
        let text = self.window.as_bytes();
        let mut live = std::mem::take(&mut self.live);
        if cache.clears() != self.clears {
            for tail in &mut live {
                tail.state = Step::Unknown;
            }
        }
        // Tails whose state was lost are walked again over the old text.
        for tail in &mut live {
            if tail.state == Step::Unknown {
                let before = byte_before(text, tail.start);
                tail.state = tails.walk(cache, before, &text[tail.start..old_len]);
            }
        }
        live.retain(|tail| tail.state != Step::Dead);
        for at in old_len..len {
            if self.window.is_char_boundary(at) {
                let state = tails.start(cache, byte_before(text, at));
                live.push(Live { start: at, state });
            }
            let clears = cache.clears();
            for tail in &mut live {
                tail.state = match tail.state {
                    Step::Alive(state) => tails.step(cache, state, text[at]),
                    Step::Dead => Step::Dead,
                    Step::Unknown => {
                        let before = byte_before(text, tail.start);
                        tails.walk(cache, before, &text[tail.start..=at])
                    }
                };
                if cache.clears() != clears {
                    break;
                }
            }
            if cache.clears() != clears {
                // Every state id taken before the clear is stale: all are
                // walked again from their starts, past this byte.
                for tail in &mut live {
                    let before = byte_before(text, tail.start);
                    tail.state = tails.walk(cache, before, &text[tail.start..=at]);
                }
            }
            let mut kept = 0;
            for read in 0..live.len() {
                let tail = live[read];
                let same = matches!(tail.state, Step::Alive(_))
                    && live[..kept].iter().any(|k| k.state == tail.state);
                if tail.state != Step::Dead && !same {
                    live[kept] = tail;
                    kept += 1;
                }
            }
            live.truncate(kept);
        }
        self.clears = cache.clears();
        for tail in &live {
            if !ordinary_word(&self.window[tail.start..]) {
                hold = hold.min(tail.start);
                break;
            }
        }
        self.live = live;
        self.hold = hold;
    }

    /// Drops all but the look-behind, keeping an open match, a live or held
    /// tail, or the trailing token whole while the window allows.
    fn trim(&mut self) {
        let len = self.window.len();
        let mut keep_from = len.saturating_sub(LOOK_BEHIND);
        // A match not yet confirmed (too close to the end for its right
        // context) is kept whole, so the next delta judges all of it.
        if let Some(open) = self
            .hits
            .iter()
            .filter(|h| h.end + RIGHT_CONTEXT > len)
            .map(|h| h.start)
            .min()
        {
            keep_from = keep_from.min(open);
        }
        let token_start = self
            .window
            .rfind(|c: char| c.is_whitespace())
            .map_or(0, |i| i + 1);
        keep_from = keep_from.min(token_start).min(self.hold);
        if let Some(first) = self.live.first() {
            keep_from = keep_from.min(first.start);
        }
        keep_from = keep_from.max(len.saturating_sub(MAX_WINDOW));
        while !self.window.is_char_boundary(keep_from) {
            keep_from += 1;
        }
        self.window.drain(..keep_from);
        // Tails that began before the kept text are past the bound: judged
        // on what has arrived, and released.
        self.live.retain(|tail| tail.start >= keep_from);
        for tail in &mut self.live {
            tail.start -= keep_from;
        }
        self.hold = self.hold.max(keep_from) - keep_from;
    }
}

#[cfg(test)]
mod tests;

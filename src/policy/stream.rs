//! Watching a streamed body for `block` policies as it passes.
//!
//! The scanner keeps a small look-behind window of the text already seen
//! and scans it together with each new delta, so a match split across
//! chunks (a card number in three SSE chunks) is found as soon as its last
//! piece arrives. Memory stays bounded: the window keeps the last
//! [`LOOK_BEHIND`] bytes, or, while a match or token is still open at the
//! end of the text, from its start up to [`MAX_WINDOW`] bytes.

use std::sync::Arc;

use super::matcher::Hit;
use super::{Action, Direction, PolicySet, Verdict};

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
}

// === impl StreamScanner ===

impl StreamScanner {
    pub fn new(set: Arc<PolicySet>, direction: Direction) -> Self {
        let active = set.blocks(direction);
        Self {
            set,
            direction,
            active,
            window: String::new(),
            hits: Vec::new(),
            tripped: false,
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
        self.window.push_str(delta);
        let verdict = self.check(false);
        self.trim();
        verdict
    }

    /// The stream ended: judges what is still open at the end.
    pub fn finish(&mut self) -> Option<Verdict> {
        if !self.active || self.tripped {
            return None;
        }
        let verdict = self.check(true);
        self.window.clear();
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

    /// Drops all but the look-behind, keeping an open match or trailing
    /// token whole while the window allows.
    fn trim(&mut self) {
        let len = self.window.len();
        let mut keep_from = len.saturating_sub(LOOK_BEHIND);
        if let Some(open) = self
            .hits
            .iter()
            .filter(|h| h.end == len)
            .map(|h| h.start)
            .min()
        {
            keep_from = keep_from.min(open);
        }
        let token_start = self
            .window
            .rfind(|c: char| c.is_whitespace())
            .map_or(0, |i| i + 1);
        keep_from = keep_from.min(token_start);
        keep_from = keep_from.max(len.saturating_sub(MAX_WINDOW));
        while !self.window.is_char_boundary(keep_from) {
            keep_from += 1;
        }
        self.window.drain(..keep_from);
    }
}

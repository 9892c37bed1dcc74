//! Text that is nearly always short: a model name, a finish reason.
//!
//! Every call's record reads a few of these from its bodies and keeps them
//! until its events are written; kept in place up to [`INLINE`] bytes, they
//! cost no allocation each.

use std::fmt;
use std::ops::Deref;

/// Bytes kept in place; longer text goes on the heap.
pub const INLINE: usize = 46;

/// A string, in place when it is at most [`INLINE`] bytes.
#[derive(Clone)]
pub enum ShortText {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<str>),
}

// === impl ShortText ===

impl ShortText {
    pub fn new(text: &str) -> Self {
        if text.len() > INLINE {
            return ShortText::Heap(text.into());
        }
        let mut bytes = [0; INLINE];
        bytes[..text.len()].copy_from_slice(text.as_bytes());
        ShortText::Inline {
            len: text.len() as u8,
            bytes,
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            // Copied whole from a `str`, so always UTF-8.
            ShortText::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..usize::from(*len)]).unwrap_or_default()
            }
            ShortText::Heap(text) => text,
        }
    }
}

impl Deref for ShortText {
    type Target = str;

    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for ShortText {
    fn from(text: &str) -> Self {
        ShortText::new(text)
    }
}

impl From<String> for ShortText {
    fn from(text: String) -> Self {
        if text.len() > INLINE {
            ShortText::Heap(text.into_boxed_str())
        } else {
            ShortText::new(&text)
        }
    }
}

impl PartialEq for ShortText {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl Eq for ShortText {}

impl fmt::Debug for ShortText {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_text_is_kept_in_place_and_long_text_whole() {
        for text in ["", "stop", "gpt-4o-2024-08-06", "é€😀", &"m".repeat(INLINE)] {
            let kept = ShortText::from(text);
            assert!(matches!(kept, ShortText::Inline { .. }), "{text}");
            assert_eq!(&*kept, text);
            assert_eq!(kept, ShortText::from(text.to_owned()));
        }
        let long = format!("ft:gpt-4o-mini-2024-07-18:{}", "x".repeat(INLINE));
        for kept in [ShortText::from(&*long), ShortText::from(long.clone())] {
            assert!(matches!(kept, ShortText::Heap(_)));
            assert_eq!(kept.as_str(), long);
        }
        assert_ne!(ShortText::from("stop"), ShortText::from("length"));
        assert_eq!(format!("{:?}", ShortText::from("a\"b")), r#""a\"b""#);
    }
}

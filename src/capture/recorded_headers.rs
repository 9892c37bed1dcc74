//! A call's headers as its record keeps them: names and values copied into
//! one buffer, credential headers left out.
//!
//! hyper parses header values as slices of the connection's read buffer
//! (8 KiB or more). While any of them lives, the connection cannot reuse
//! that buffer and allocates a second one for its next read, so a plain
//! clone of the map kept while a long stream runs would hold two buffers
//! per connection instead of one. A clone costs several allocations too
//! (the map's tables, and each custom name's shared bytes); this copy is
//! one, whatever the headers: the table of where each header is and the
//! text share one buffer.

use http::HeaderMap;

use super::sanitize::is_credential_header;

/// Headers copied for a record, in the map's order (each name's values
/// together, in the order they came).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordedHeaders {
    /// `count` table entries of [`ENTRY_LEN`] bytes, then every name and
    /// value, one after the other.
    buf: Vec<u8>,
    count: usize,
}

/// One header: where its name and value are in the text (offsets from the
/// end of the table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    name_start: u32,
    value_start: u32,
    value_end: u32,
}

/// Bytes of one entry in the table: three `u32`s.
const ENTRY_LEN: usize = 12;

// === impl RecordedHeaders ===

impl RecordedHeaders {
    /// A copy of `headers` without its credential headers (which no
    /// record stores).
    pub fn of(headers: &HeaderMap) -> Self {
        let kept = || {
            headers
                .iter()
                .filter(|(name, _)| !is_credential_header(name.as_str()))
        };
        let (mut count, mut bytes) = (0, 0);
        for (name, value) in kept() {
            count += 1;
            bytes += name.as_str().len() + value.len();
        }
        // A header block is far under 4 GiB (hyper caps it at a few
        // hundred KiB), so offsets fit in u32; anything larger is not kept.
        if u32::try_from(bytes).is_err() {
            return Self::default();
        }
        let table_len = count * ENTRY_LEN;
        let mut buf = Vec::with_capacity(table_len + bytes);
        buf.resize(table_len, 0);
        let mut at = 0;
        for (name, value) in kept() {
            let name_start = (buf.len() - table_len) as u32;
            buf.extend_from_slice(name.as_str().as_bytes());
            let value_start = (buf.len() - table_len) as u32;
            buf.extend_from_slice(value.as_bytes());
            let value_end = (buf.len() - table_len) as u32;
            for word in [name_start, value_start, value_end] {
                buf[at..at + 4].copy_from_slice(&word.to_ne_bytes());
                at += 4;
            }
        }
        Self { buf, count }
    }

    /// The first value of `name` (any case), as text; `None` when absent
    /// or not UTF-8.
    pub fn get_str(&self, name: &str) -> Option<&str> {
        let entry = self.entries().find(|e| self.is_named(e, name))?;
        std::str::from_utf8(self.value(&entry)).ok()
    }

    /// Every value of `name` (any case), in the order they came.
    pub fn get_all<'h>(&'h self, name: &'h str) -> impl Iterator<Item = &'h [u8]> + 'h {
        self.entries()
            .filter(move |e| self.is_named(e, name))
            .map(|e| self.value(&e))
    }

    /// Each name once (lower case, as `http` keeps them), in the order
    /// first seen.
    pub fn names(&self) -> impl Iterator<Item = &str> + '_ {
        // A map's values of one name are adjacent, so a name is new when
        // it differs from the one before.
        let mut previous = None;
        self.entries().filter_map(move |e| {
            let name = self.name(&e);
            (previous.replace(name) != Some(name)).then_some(name)
        })
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn entries(&self) -> impl Iterator<Item = Entry> + '_ {
        self.buf[..self.count * ENTRY_LEN]
            .chunks_exact(ENTRY_LEN)
            .map(|entry| {
                let word = |i: usize| {
                    let mut bytes = [0; 4];
                    bytes.copy_from_slice(&entry[i * 4..i * 4 + 4]);
                    u32::from_ne_bytes(bytes)
                };
                Entry {
                    name_start: word(0),
                    value_start: word(1),
                    value_end: word(2),
                }
            })
    }

    fn text(&self) -> &[u8] {
        &self.buf[self.count * ENTRY_LEN..]
    }

    /// Compared as bytes: lookups need not check the name is UTF-8.
    fn is_named(&self, entry: &Entry, name: &str) -> bool {
        self.text()[entry.name_start as usize..entry.value_start as usize]
            .eq_ignore_ascii_case(name.as_bytes())
    }

    fn name(&self, entry: &Entry) -> &str {
        // Names were copied from `HeaderName::as_str`: ASCII.
        std::str::from_utf8(&self.text()[entry.name_start as usize..entry.value_start as usize])
            .unwrap_or_default()
    }

    fn value(&self, entry: &Entry) -> &[u8] {
        &self.text()[entry.value_start as usize..entry.value_end as usize]
    }
}

impl From<&HeaderMap> for RecordedHeaders {
    fn from(headers: &HeaderMap) -> Self {
        Self::of(headers)
    }
}

#[cfg(test)]
mod tests {
    use bytes::BytesMut;
    use http::header::{self, HeaderValue};

    use super::*;

    #[test]
    fn values_are_kept_by_name_in_order_without_credentials() {
        let mut h = HeaderMap::new();
        h.insert(header::CONTENT_TYPE, "application/json".parse().unwrap());
        h.insert(header::AUTHORIZATION, "Bearer sk-x".parse().unwrap());
        h.append("x-multi", "one".parse().unwrap());
        h.insert("x-api-key", "secret".parse().unwrap());
        h.append("x-multi", "two".parse().unwrap());
        h.insert("x-raw", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        h.insert("x-empty", HeaderValue::from_static(""));
        let kept = RecordedHeaders::of(&h);

        assert_eq!(kept.get_str("content-type"), Some("application/json"));
        assert_eq!(kept.get_str("Content-Type"), Some("application/json"));
        assert_eq!(
            kept.get_all("x-multi").collect::<Vec<_>>(),
            [b"one", b"two"]
        );
        assert_eq!(kept.get_all("x-raw").next(), Some(&b"\xff\xfe"[..]));
        assert_eq!(kept.get_str("x-raw"), None);
        assert_eq!(kept.get_str("x-empty"), Some(""));
        assert_eq!(kept.get_str("x-absent"), None);
        // Credentials are not copied at all.
        assert_eq!(kept.get_all("authorization").count(), 0);
        assert_eq!(kept.get_all("x-api-key").count(), 0);
        let expected: Vec<&str> = h
            .keys()
            .map(|n| n.as_str())
            .filter(|n| !is_credential_header(n))
            .collect();
        assert_eq!(kept.names().collect::<Vec<_>>(), expected);
        assert!(RecordedHeaders::of(&HeaderMap::new()).is_empty());
    }

    #[test]
    fn the_copy_does_not_hold_the_read_buffer() {
        // A stand-in for hyper's read buffer: values are slices of it.
        let mut read_buf = BytesMut::with_capacity(8192);
        read_buf.extend_from_slice(b"application/jsonabc");
        let head = read_buf.split().freeze();
        let base = head.as_ptr();
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_maybe_shared(head.slice(0..16)).unwrap(),
        );
        h.insert(
            "x-id",
            HeaderValue::from_maybe_shared(head.slice(16..19)).unwrap(),
        );
        drop(head);

        let kept = RecordedHeaders::of(&h);
        drop(h);

        assert_eq!(kept.get_str("content-type"), Some("application/json"));
        assert_eq!(kept.get_str("x-id"), Some("abc"));
        // Nothing refers to the read buffer any more, so a reader that
        // needs a whole buffer again gets the same allocation back.
        read_buf.reserve(8192);
        assert_eq!(read_buf.as_ptr(), base);
    }
}

//! Turns a captured, decoded body into the value an event stores
//! (`request_data` / `response_data`).
//!
//! Events are for auditing, not for replaying traffic: JSON is kept as
//! JSON, text as text, and file uploads and other binary content are
//! described (name, type, size) rather than copied. The caller sanitises the
//! result.

use std::borrow::Cow;

use memchr::memmem;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

/// Multipart text fields up to this size are stored with their text
/// (prompts, model names); larger ones and files only by size.
pub const MAX_FIELD_TEXT: usize = 16 * 1024;

/// At most this many multipart parts are described.
pub const MAX_PARTS: usize = 1000;

/// Characters of printable preview in a [`binary_summary`].
pub const PREVIEW_CHARS: usize = 64;

/// A body with more than one control character in this many bytes is
/// stored as a [`binary_summary`], not as escaped text.
const CONTROL_HEAVY_RATIO: usize = 16;

/// Media types whose bodies are binary however they happen to decode.
const BINARY_PREFIXES: &[&str] = &["image/", "audio/", "video/", "font/", "model/"];
const BINARY_TYPES: &[&str] = &[
    "application/octet-stream",
    "application/pdf",
    "application/zip",
    "application/gzip",
    "application/x-protobuf",
    "application/protobuf",
    "application/grpc",
    "application/msgpack",
    "application/x-msgpack",
    "application/vnd.apache.arrow.stream",
];

/// The event value for a body.
///
/// - empty: `null`
/// - JSON (by type, or untyped text starting with `{` or `[`): the parsed
///   value; JSON that does not parse (typically cut short) is stored as text
/// - `multipart/*`: `{"multipart": [{"name", "filename", "content_type",
///   "bytes", "text"?}]}`, `text` only for small non-file UTF-8 fields; a
///   part cut short also says `"truncated": true`
/// - other text: a string (invalid UTF-8 replaced; a sequence cut by
///   truncation dropped)
/// - anything else, and text where control characters (other than tab, CR
///   and LF) are more than one byte in sixteen: a [`binary_summary`]
pub fn body_to_value(bytes: &[u8], content_type: Option<&str>, truncated: bool) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    let media = content_type.map(MediaType::parse);
    let essence = media.as_ref().map_or("", |m| &*m.essence);

    if essence.starts_with("multipart/") {
        if let Some(boundary) = media.as_ref().and_then(|m| m.param("boundary")) {
            return multipart(bytes, boundary);
        }
    }
    let binary_type = is_binary_type(essence);
    if tries_json(essence, bytes) {
        if let Ok(v) = serde_json::from_slice::<Value>(bytes) {
            return v;
        }
    }
    if !binary_type && !is_control_heavy(bytes) {
        if let Some(text) = utf8_text(bytes, truncated) {
            if is_text_type(essence) || !text.contains('\0') {
                return Value::String(text.to_owned());
            }
        } else if is_text_type(essence) {
            return Value::String(lossy_text(bytes, truncated));
        }
    }
    binary_summary(bytes, content_type)
}

/// The description stored for a body kept only as evidence that it passed:
/// `{"binary": true, "content_type", "bytes", "sha256", "preview"}`. The
/// digest is of the decoded bytes captured (a prefix when the body was
/// truncated), so a copy of the payload held elsewhere can be matched to
/// the record; the preview is the first [`PREVIEW_CHARS`] printable ASCII
/// characters, others shown as `.`.
pub fn binary_summary(bytes: &[u8], content_type: Option<&str>) -> Value {
    let preview: String = bytes
        .iter()
        .take(PREVIEW_CHARS)
        .map(|&b| {
            if b == b' ' || b.is_ascii_graphic() {
                char::from(b)
            } else {
                '.'
            }
        })
        .collect();
    json!({
        "binary": true,
        "content_type": content_type.map(str::trim),
        "bytes": bytes.len(),
        "sha256": hex::encode(Sha256::digest(bytes)),
        "preview": preview,
    })
}

/// Whether storing `bytes` as a JSON string would mostly store escapes:
/// each control character other than tab, CR and LF is written as
/// `\u00XX`, six bytes for one, so a NUL-filled body would grow sixfold in
/// the store. Such bodies are described by [`binary_summary`] instead.
fn is_control_heavy(bytes: &[u8]) -> bool {
    let controls = bytes
        .iter()
        .filter(|&&b| (b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r')) || b == 0x7f)
        .count();
    controls.saturating_mul(CONTROL_HEAVY_RATIO) > bytes.len()
}

/// Whether [`body_to_value`] reads `bytes` as JSON when they parse, so a
/// caller that has parsed them already may use its value instead.
pub fn body_is_parsed_as_json(bytes: &[u8], content_type: Option<&str>) -> bool {
    if bytes.is_empty() {
        return false;
    }
    let media = content_type.map(MediaType::parse);
    let essence = media.as_ref().map_or("", |m| &*m.essence);
    !(essence.starts_with("multipart/")
        && media
            .as_ref()
            .is_some_and(|m| m.param("boundary").is_some()))
        && tries_json(essence, bytes)
}

/// Whether a body of this type and start is read as JSON when it parses.
fn tries_json(essence: &str, bytes: &[u8]) -> bool {
    is_json_type(essence) || (!is_binary_type(essence) && starts_like_json(bytes))
}

/// A parsed `Content-Type` (or `Content-Disposition`) value.
struct MediaType<'a> {
    /// Lower-cased, without parameters (borrowed when already lower case).
    essence: Cow<'a, str>,
    /// Names lower-cased, values unquoted.
    params: Vec<(String, String)>,
}

// === impl MediaType ===

impl<'a> MediaType<'a> {
    fn parse(value: &'a str) -> Self {
        // The usual value (`application/json`) has no parameters: read
        // without splitting or copying.
        if !value.contains(';') {
            return Self {
                essence: lower_case(value.trim()),
                params: Vec::new(),
            };
        }
        let mut pieces = split_params(value).into_iter();
        let essence = lower_case(pieces.next().unwrap_or_default().trim());
        let params = pieces
            .filter_map(|p| {
                let (name, value) = p.split_once('=')?;
                Some((name.trim().to_ascii_lowercase(), unquote(value.trim())))
            })
            .collect();
        Self { essence, params }
    }

    fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
            .filter(|v| !v.is_empty())
    }
}

fn is_json_type(essence: &str) -> bool {
    essence == "application/json" || essence.ends_with("+json") || essence == "text/json"
}

fn is_text_type(essence: &str) -> bool {
    essence.starts_with("text/")
        || is_json_type(essence)
        || essence.ends_with("+xml")
        || matches!(
            essence,
            "application/xml"
                | "application/x-www-form-urlencoded"
                | "application/javascript"
                | "application/x-ndjson"
                | "application/jsonl"
                | "application/yaml"
                | "application/x-yaml"
        )
}

fn is_binary_type(essence: &str) -> bool {
    BINARY_PREFIXES.iter().any(|p| essence.starts_with(p)) || BINARY_TYPES.contains(&essence)
}

fn starts_like_json(bytes: &[u8]) -> bool {
    matches!(
        bytes.iter().find(|b| !b.is_ascii_whitespace()),
        Some(b'{' | b'[')
    )
}

/// The body as UTF-8, if it is; a truncated body may end inside a
/// character, which is dropped rather than making the whole body "binary".
fn utf8_text(bytes: &[u8], truncated: bool) -> Option<&str> {
    match std::str::from_utf8(bytes) {
        Ok(s) => Some(s),
        Err(e) if truncated && e.error_len().is_none() => {
            std::str::from_utf8(&bytes[..e.valid_up_to()]).ok()
        }
        Err(_) => None,
    }
}

fn lossy_text(bytes: &[u8], truncated: bool) -> String {
    let end = if truncated {
        incomplete_tail_start(bytes)
    } else {
        bytes.len()
    };
    String::from_utf8_lossy(&bytes[..end]).into_owned()
}

/// Where a UTF-8 sequence cut off at the very end begins (or the length, if
/// the end is not inside one).
fn incomplete_tail_start(bytes: &[u8]) -> usize {
    // A sequence is at most 4 bytes, so look back at most 3.
    for back in 1..=bytes.len().min(3) {
        let i = bytes.len() - back;
        let b = bytes[i];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let need = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => return bytes.len(),
        };
        return if need > back { i } else { bytes.len() };
    }
    bytes.len()
}

/// Splits on `;` outside double quotes.
fn lower_case(text: &str) -> Cow<'_, str> {
    if text.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(text.to_ascii_lowercase())
    } else {
        Cow::Borrowed(text)
    }
}

fn split_params(value: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (i, c) in value.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ';' if !quoted => {
                out.push(&value[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&value[start..]);
    out
}

fn unquote(value: &str) -> String {
    match value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"').or(Some(v)))
    {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(next) = chars.next() {
                        out.push(next);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => value.to_owned(),
    }
}

/// Where `needle` next occurs in `haystack` at or after `from`. Linear in
/// the haystack whatever the needle's length (memchr's two-way search), so
/// a hostile boundary hundreds of KiB long costs no more than a short one.
fn find(haystack: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    find_with(&memmem::Finder::new(needle), haystack, from)
}

/// As [`find`], with a needle prepared once for repeated searches.
fn find_with(finder: &memmem::Finder<'_>, haystack: &[u8], from: usize) -> Option<usize> {
    finder.find(haystack.get(from..)?).map(|i| i + from)
}

/// Describes the parts of a `multipart/*` body (RFC 7578). Lenient about
/// bare `\n` line ends; a capture may stop anywhere, so a part without its
/// closing delimiter is described with what arrived.
fn multipart(body: &[u8], boundary: &str) -> Value {
    let delimiter = format!("--{boundary}");
    let delimiter = delimiter.as_bytes();
    let finder = memmem::Finder::new(delimiter);
    let mut parts = Vec::new();
    let mut pos = match find_with(&finder, body, 0) {
        Some(p) => p,
        None => return json!({ "multipart": parts }),
    };
    while parts.len() < MAX_PARTS {
        pos += delimiter.len();
        if body.get(pos..pos + 2) == Some(b"--") {
            break;
        }
        // The rest of the delimiter line (transport padding) is ignored.
        let Some(eol) = find(body, b"\n", pos) else {
            break;
        };
        let header_start = eol + 1;
        // A part's headers end before the next delimiter, so each search
        // below stays inside one part and the whole walk stays linear.
        let next = find_with(&finder, body, header_start);
        let part = &body[..next.unwrap_or(body.len())];
        let (headers, content_start) = if body[header_start..].starts_with(b"\r\n") {
            (&body[header_start..header_start], header_start + 2)
        } else if body[header_start..].starts_with(b"\n") {
            (&body[header_start..header_start], header_start + 1)
        } else {
            let crlf = find(part, b"\r\n\r\n", header_start).map(|i| (i, 4));
            let lf = find(part, b"\n\n", header_start).map(|i| (i, 2));
            let end = match (crlf, lf) {
                (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
                (a, b) => a.or(b),
            };
            let Some((end, len)) = end else {
                break;
            };
            (&body[header_start..end], end + len)
        };
        let (content, complete) = match next {
            Some(d) => {
                // The line break before a delimiter belongs to it.
                let mut end = d;
                if end > content_start && body[end - 1] == b'\n' {
                    end -= 1;
                    if end > content_start && body[end - 1] == b'\r' {
                        end -= 1;
                    }
                }
                (&body[content_start..end], true)
            }
            None => (&body[content_start..], false),
        };
        parts.push(describe_part(headers, content, complete));
        match next {
            Some(d) => pos = d,
            None => break,
        }
    }
    json!({ "multipart": parts })
}

fn describe_part(headers: &[u8], content: &[u8], complete: bool) -> Value {
    let headers = String::from_utf8_lossy(headers);
    let mut disposition = None;
    let mut content_type = None;
    for line in headers.lines() {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name.eq_ignore_ascii_case("content-disposition") {
            disposition = Some(MediaType::parse(value));
        } else if name.eq_ignore_ascii_case("content-type") {
            content_type = Some(value.trim().to_owned());
        }
    }
    let param = |n: &str| {
        disposition
            .as_ref()
            .and_then(|d| d.param(n))
            .map(str::to_owned)
    };
    let name = param("name");
    let filename = param("filename").or_else(|| param("filename*").map(|v| ext_value(&v)));

    let mut part = Map::new();
    part.insert("name".into(), name.into());
    part.insert("content_type".into(), content_type.clone().into());
    part.insert("bytes".into(), content.len().into());
    let texty = content_type
        .as_deref()
        .is_none_or(|ct| MediaType::parse(ct).essence.starts_with("text/"));
    if filename.is_none() && texty && content.len() <= MAX_FIELD_TEXT {
        if let Some(text) = utf8_text(content, !complete) {
            part.insert("text".into(), text.into());
        }
    }
    part.insert("filename".into(), filename.into());
    if !complete {
        part.insert("truncated".into(), true.into());
    }
    Value::Object(part)
}

/// An RFC 8187 `charset'lang'value` extended parameter, percent-decoded.
fn ext_value(v: &str) -> String {
    let encoded = v.splitn(3, '\'').nth(2).unwrap_or(v);
    let mut bytes = Vec::with_capacity(encoded.len());
    let mut it = encoded.bytes();
    while let Some(b) = it.next() {
        if b == b'%' {
            let hex = [it.next(), it.next()];
            if let [Some(h), Some(l)] = hex {
                if let Ok(byte) = u8::from_str_radix(&String::from_utf8_lossy(&[h, l]), 16) {
                    bytes.push(byte);
                    continue;
                }
            }
            return encoded.to_owned();
        }
        bytes.push(b);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[cfg(test)]
mod tests;

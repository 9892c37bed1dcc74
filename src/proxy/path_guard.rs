//! Refuses request paths that could climb out of the upstream's path prefix.
//!
//! The app's path is appended to the upstream URL as is. A `..` segment,
//! written plainly or percent-encoded (`%2e%2e`, `%2E.`, `.%2e`), or an
//! encoded slash or backslash (`%2f`, `%5c`) that upstream or a gateway in
//! front of it decodes, would reach paths beside the configured prefix
//! (`https://gateway/tenant-a/v1` + `/../tenant-b/v1/...`). No
//! OpenAI-compatible API has such paths, so the proxy refuses them with
//! 400 rather than rewriting them into something the app did not send.

/// Whether `path` (without its query) has a segment that is `.` or `..`
/// once percent-decoded, or one that holds an encoded `/` or `\`, or a raw
/// `\` (which some servers treat as `/`).
pub fn is_unsafe(path: &str) -> bool {
    path.split('/').any(|segment| {
        if segment.contains('\\') {
            return true;
        }
        if !segment.contains('%') {
            return segment == "." || segment == "..";
        }
        let decoded = percent_decode(segment);
        decoded == b"." || decoded == b".." || decoded.contains(&b'/') || decoded.contains(&b'\\')
    })
}

/// Decodes `%XX` escapes; a `%` not followed by two hex digits stays as is.
fn percent_decode(segment: &str) -> Vec<u8> {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| std::str::from_utf8(hex).ok())
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_segments_and_encoded_slashes_are_unsafe() {
        for path in [
            "/v1/../admin",
            "/..",
            "/v1/./chat/completions",
            "/v1/%2e%2e/admin",
            "/v1/%2E%2E/admin",
            "/v1/%2E./admin",
            "/v1/.%2e/admin",
            "/v1/%2e/chat",
            "/v1/..%2fadmin",
            "/v1/a%2Fb",
            "/v1/a%5cb",
            "/v1\\..\\admin",
        ] {
            assert!(is_unsafe(path), "{path}");
        }
    }

    #[test]
    fn ordinary_paths_are_safe() {
        for path in [
            "/",
            "/v1/chat/completions",
            "/openai/deployments/gpt-4o/chat/completions",
            "/v1/files/file-abc.jsonl",
            "/v1/...",
            "/v1/..a",
            "/v1/a%20b",
            "/v1/100%",
            "/v1/%zz",
            "//v1//models",
        ] {
            assert!(!is_unsafe(path), "{path}");
        }
    }
}

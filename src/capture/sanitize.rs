//! Baseline redaction of everything an event stores: credentials in headers
//! and query strings never reach the store, and secret-shaped strings in
//! bodies become `[REDACTED:<KIND>]`. This is always on; policies add to it
//! but cannot turn it off.
//!
//! Detectors are data (a kind, a regex, which group is the secret, and an
//! optional check on the match), so the policy engine can build a
//! [`Sanitizer`] from more of them. Most strings hold no secret, so a single
//! [`RegexSet`] pass decides whether any detector needs to run at all.

use std::borrow::Cow;

use http::HeaderMap;
use regex::{Regex, RegexSet};
use serde_json::{Map, Value};

/// One kind of secret and how to find it.
#[derive(Debug, Clone)]
pub struct Detector {
    kind: String,
    marker: String,
    regex: Regex,
    secret_group: usize,
    check: Option<fn(&str) -> bool>,
}

/// A compiled set of detectors. Build once and share (it is `Send + Sync`;
/// wrap it in an `Arc`).
#[derive(Debug, Clone)]
pub struct Sanitizer {
    detectors: Vec<Detector>,
    prefilter: RegexSet,
    /// Set only if the baseline patterns failed to compile (a build defect
    /// the tests rule out): then every non-empty string is withheld, because
    /// storing unredacted text is worse than storing none.
    withhold_all: bool,
}

/// Headers that carry credentials; they are left out of events entirely.
const CREDENTIAL_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "api-key",
    "x-api-key",
    "cookie",
    "set-cookie",
];

/// Query parameters that carry credentials; their values are replaced.
const CREDENTIAL_PARAMS: &[&str] = &["key", "api-key", "api_key", "token", "sig"];

/// What replaces a credential query parameter's value.
pub const QUERY_MARKER: &str = "[REDACTED]";

/// What every string becomes if the baseline detectors are unavailable.
const WITHHELD: &str = "[REDACTED:UNAVAILABLE]";

/// What a header value that is not UTF-8 is stored as.
pub const NON_UTF8: &str = "[NON_UTF8]";

// ASCII word boundaries: Unicode ones would make the regex engine give up
// its fast DFA on non-ASCII text, and secrets are ASCII anyway.
const ANTHROPIC_KEY: &str = r"(?-u:\b)sk-ant-[A-Za-z0-9_-]{20,}";
const OPENAI_KEY: &str = r"(?-u:\b)sk-[A-Za-z0-9_-]{20,}";
const BEARER_TOKEN: &str = r"(?i)(?-u:\b)bearer[ \t]+([A-Za-z0-9._~+/-]+=*)";
const AWS_ACCESS_KEY: &str = r"(?-u:\b)(?:AKIA|ASIA)[A-Z0-9]{16}(?-u:\b)";

// === impl Detector ===

impl Detector {
    /// A detector whose whole match is the secret. `kind` is shown upper
    /// case in the marker: `openai_key` redacts as `[REDACTED:OPENAI_KEY]`.
    pub fn new(kind: &str, pattern: &str) -> Result<Self, regex::Error> {
        let kind = kind.to_ascii_uppercase();
        Ok(Self {
            marker: format!("[REDACTED:{kind}]"),
            kind,
            regex: Regex::new(pattern)?,
            secret_group: 0,
            check: None,
        })
    }

    /// Only capture group `group` is replaced; the rest of the match (such
    /// as the word `Bearer`) is kept.
    pub fn secret_group(mut self, group: usize) -> Self {
        self.secret_group = group;
        self
    }

    /// A match is only redacted when `check` accepts the secret; this is
    /// where conditions a regex cannot express (no look-around) live.
    pub fn check(mut self, check: fn(&str) -> bool) -> Self {
        self.check = Some(check);
        self
    }

    /// The upper-case kind, as it appears in the marker.
    pub fn kind(&self) -> &str {
        &self.kind
    }

    pub fn pattern(&self) -> &str {
        self.regex.as_str()
    }

    /// `s` with every accepted match replaced, or `None` if there was none.
    fn replace(&self, s: &str, count: &mut usize) -> Option<String> {
        let mut out = String::new();
        let mut last = 0;
        let mut hits = 0;
        let mut hit = |start: usize, end: usize, out: &mut String| {
            if self.check.is_some_and(|check| !check(&s[start..end])) {
                return;
            }
            out.push_str(&s[last..start]);
            out.push_str(&self.marker);
            last = end;
            hits += 1;
        };
        if self.secret_group == 0 {
            for m in self.regex.find_iter(s) {
                hit(m.start(), m.end(), &mut out);
            }
        } else {
            for caps in self.regex.captures_iter(s) {
                if let Some(m) = caps.get(self.secret_group) {
                    hit(m.start(), m.end(), &mut out);
                }
            }
        }
        if hits == 0 {
            return None;
        }
        *count += hits;
        out.push_str(&s[last..]);
        Some(out)
    }
}

// === impl Sanitizer ===

impl Sanitizer {
    /// A sanitizer running `detectors` in order. Order matters where kinds
    /// overlap: an earlier detector's marker hides the secret from later
    /// ones.
    pub fn new(detectors: Vec<Detector>) -> Result<Self, regex::Error> {
        let prefilter = RegexSet::new(detectors.iter().map(Detector::pattern))?;
        Ok(Self {
            detectors,
            prefilter,
            withhold_all: false,
        })
    }

    /// The always-on detectors: Anthropic and OpenAI API keys, bearer
    /// tokens and AWS access key ids.
    pub fn baseline() -> Self {
        Self::try_baseline().unwrap_or_else(|_| Self::withholding())
    }

    /// The detectors in the order they run, for a policy engine to extend.
    pub fn detectors(&self) -> &[Detector] {
        &self.detectors
    }

    /// `s` with every secret replaced by its marker; borrowed when nothing
    /// matched, which is the common case and costs one scan.
    pub fn redact_text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        self.redact_counted(s).0
    }

    /// Like [`Self::redact_text`], also returning how many secrets were
    /// replaced.
    pub fn redact_counted<'a>(&self, s: &'a str) -> (Cow<'a, str>, usize) {
        if self.withhold_all && !s.is_empty() {
            return (Cow::Borrowed(WITHHELD), 1);
        }
        let mut count = 0;
        if !self.prefilter.is_match(s) {
            return (Cow::Borrowed(s), 0);
        }
        let mut text = Cow::Borrowed(s);
        for d in &self.detectors {
            if let Some(replaced) = d.replace(&text, &mut count) {
                text = Cow::Owned(replaced);
            }
        }
        (text, count)
    }

    /// Redacts every string value in `v` in place (object keys are left
    /// alone) and returns the number of replacements.
    pub fn redact_value(&self, v: &mut Value) -> usize {
        let mut count = 0;
        // An explicit stack: values built in code have no depth limit.
        let mut stack = vec![v];
        while let Some(v) = stack.pop() {
            match v {
                Value::String(s) => {
                    let (redacted, n) = self.redact_counted(s);
                    if let Cow::Owned(new) = redacted {
                        *s = new;
                    }
                    count += n;
                }
                Value::Array(items) => stack.extend(items.iter_mut()),
                Value::Object(map) => stack.extend(map.values_mut()),
                Value::Null | Value::Bool(_) | Value::Number(_) => {}
            }
        }
        count
    }

    fn try_baseline() -> Result<Self, regex::Error> {
        // Anthropic first: its keys also look like OpenAI's `sk-…`.
        Self::new(vec![
            Detector::new("anthropic_key", ANTHROPIC_KEY)?,
            Detector::new("openai_key", OPENAI_KEY)?.check(is_openai_key),
            Detector::new("bearer_token", BEARER_TOKEN)?
                .secret_group(1)
                .check(is_token_like),
            Detector::new("aws_access_key", AWS_ACCESS_KEY)?,
        ])
    }

    fn withholding() -> Self {
        Self {
            detectors: Vec::new(),
            prefilter: RegexSet::empty(),
            withhold_all: true,
        }
    }
}

/// Whether a header carries credentials and must never be stored.
pub fn is_credential_header(name: &str) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// Headers as an event stores them: `{name: value}`, repeated headers
/// joined with `", "`, credential headers left out, values redacted (secrets
/// and credential query parameters in URLs), non-UTF-8 values as
/// [`NON_UTF8`].
pub fn headers_to_value(headers: &HeaderMap, s: &Sanitizer) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        if is_credential_header(name.as_str()) {
            continue;
        }
        let mut joined = String::new();
        for (i, value) in headers.get_all(name).iter().enumerate() {
            if i > 0 {
                joined.push_str(", ");
            }
            match std::str::from_utf8(value.as_bytes()) {
                Ok(text) if text.contains('?') => {
                    joined.push_str(&s.redact_text(&redact_query(text)));
                }
                Ok(text) => joined.push_str(&s.redact_text(text)),
                Err(_) => joined.push_str(NON_UTF8),
            }
        }
        out.insert(name.as_str().to_owned(), Value::String(joined));
    }
    Value::Object(out)
}

/// `path_and_query` with the values of credential query parameters (`key`,
/// `api-key`, `api_key`, `token`, `sig`, any case, percent-encoded or not)
/// replaced by [`QUERY_MARKER`]. Everything else is kept byte for byte.
pub fn redact_query(path_and_query: &str) -> String {
    let Some((path, rest)) = path_and_query.split_once('?') else {
        return path_and_query.to_owned();
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(path_and_query.len());
    out.push_str(path);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_credential_param(name) => {
                out.push_str(name);
                out.push('=');
                out.push_str(QUERY_MARKER);
            }
            _ => out.push_str(pair),
        }
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn is_credential_param(raw_name: &str) -> bool {
    // Decode so `api%5Fkey` cannot slip past.
    let decoded: String = form_urlencoded::parse(raw_name.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    let name = decoded.trim();
    CREDENTIAL_PARAMS
        .iter()
        .any(|p| p.eq_ignore_ascii_case(name))
}

/// Real OpenAI keys are random: a slug such as `sk-learn-compatible-models`
/// has neither digits nor capitals. Anthropic keys are their own kind, even
/// when too short for that detector.
fn is_openai_key(key: &str) -> bool {
    let body = key.strip_prefix("sk-").unwrap_or(key);
    !body.starts_with("ant-")
        && body
            .bytes()
            .any(|b| b.is_ascii_digit() || b.is_ascii_uppercase())
}

/// Separates tokens from prose such as "bearer well-established": long
/// enough, and with a digit, token punctuation or mixed case.
fn is_token_like(token: &str) -> bool {
    let has = |f: fn(&u8) -> bool| token.as_bytes().iter().any(f);
    token.len() >= 16
        && (has(u8::is_ascii_digit)
            || has(|b| b"._~+/=".contains(b))
            || (has(u8::is_ascii_uppercase) && has(u8::is_ascii_lowercase)))
}

#[cfg(test)]
mod tests;

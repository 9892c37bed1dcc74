//! Baseline redaction of everything an event stores: credentials in headers
//! and query strings never reach the store, and secret-shaped strings in
//! bodies become `[REDACTED:<KIND>]`. This is always on; policies add to it
//! but cannot turn it off.
//!
//! Bodies are cleaned by the policy engine's one-pass scanner
//! ([`crate::policy::PolicySet`]): a [`Sanitizer`] wraps a compiled set, so
//! one configuration decides what never reaches the store. Most strings hold
//! no secret, and then a single scan is all they cost.

use std::borrow::Cow;
use std::sync::Arc;

use http::HeaderMap;
use serde_json::{Map, Value};

use crate::policy::{Direction, PolicySet};

/// Cleans what events store. Build once and share (it is `Send + Sync`;
/// wrap it in an `Arc`).
#[derive(Debug, Clone)]
pub struct Sanitizer {
    policies: Arc<PolicySet>,
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
    "x-amz-security-token",
    "x-goog-api-key",
    "ocp-apim-subscription-key",
    "x-auth-token",
];

/// Query and path parameters that carry credentials; their values are
/// replaced whatever they look like. Compared without case, and with `-`
/// and `_` taken as the same.
const CREDENTIAL_PARAMS: &[&str] = &[
    "key",
    "api_key",
    "apikey",
    "token",
    "access_token",
    "id_token",
    "refresh_token",
    "auth",
    "sig",
    "signature",
    "client_secret",
    "password",
    "x_amz_security_token",
    "x_amz_signature",
    "x_amz_credential",
];

/// What replaces a credential query parameter's value.
pub const QUERY_MARKER: &str = "[REDACTED]";

/// What every string becomes if the baseline detectors are unavailable.
const WITHHELD: &str = "[REDACTED:UNAVAILABLE]";

/// What a header value that is not UTF-8 is stored as.
pub const NON_UTF8: &str = "[NON_UTF8]";

// === impl Sanitizer ===

impl Sanitizer {
    /// The always-on secrets of the original proxy: Anthropic and OpenAI API
    /// keys, AWS access key ids and bearer tokens.
    pub fn baseline() -> Self {
        match PolicySet::baseline() {
            Ok(set) => Self::from_policies(Arc::new(set)),
            Err(_) => Self::withholding(),
        }
    }

    /// Cleans with `policies`: every built-in secret kind everywhere, plus
    /// the matches of its `redact` policies in the model's text (see
    /// [`Self::redact_request`]).
    pub fn from_policies(policies: Arc<PolicySet>) -> Self {
        Self {
            policies,
            withhold_all: false,
        }
    }

    /// The policy set this sanitizer cleans with.
    pub fn policies(&self) -> &Arc<PolicySet> {
        &self.policies
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
        self.policies.redact_secrets_text(s)
    }

    /// Redacts secrets in every string value and key of `v` in place and
    /// returns the number of replacements.
    pub fn redact_value(&self, v: &mut Value) -> usize {
        if self.withhold_all {
            return withhold(v);
        }
        self.policies.redact_secrets(v)
    }

    /// Cleans a stored value of no direction (a custom event's metadata):
    /// secrets, and every match a policy of either direction does not
    /// keep, in every string and key.
    pub fn redact_stored(&self, v: &mut Value) -> usize {
        if self.withhold_all {
            return withhold(v);
        }
        self.policies.redact_stored(v)
    }

    /// A stored string outside the bodies (a path, a header value, a model
    /// name, a message): secrets, and matches a policy watching
    /// `direction` (either, for `None`) does not keep, replaced.
    pub fn redact_stored_text<'a>(&self, s: &'a str, direction: Option<Direction>) -> Cow<'a, str> {
        if self.withhold_all && !s.is_empty() {
            return Cow::Borrowed(WITHHELD);
        }
        self.policies.redact_stored_text(s, direction)
    }

    /// Cleans a stored request body: secrets everywhere, plus matches of
    /// `redact` policies that watch requests, in the model's text.
    pub fn redact_request(&self, v: &mut Value) -> usize {
        self.redact_direction(v, Direction::Request)
    }

    /// Cleans a stored response body like [`Self::redact_request`], with
    /// the policies that watch responses.
    pub fn redact_response(&self, v: &mut Value) -> usize {
        self.redact_direction(v, Direction::Response)
    }

    fn redact_direction(&self, v: &mut Value, direction: Direction) -> usize {
        if self.withhold_all {
            return withhold(v);
        }
        self.policies.redact_value_in_place(v, direction)
    }

    fn withholding() -> Self {
        Self {
            policies: Arc::new(PolicySet::empty()),
            withhold_all: true,
        }
    }
}

/// Replaces every non-empty string in `v`.
fn withhold(v: &mut Value) -> usize {
    let mut count = 0;
    let mut stack = vec![v];
    while let Some(v) = stack.pop() {
        match v {
            Value::String(s) if !s.is_empty() => {
                *s = WITHHELD.to_owned();
                count += 1;
            }
            Value::Array(items) => stack.extend(items.iter_mut()),
            Value::Object(map) => stack.extend(map.values_mut()),
            _ => {}
        }
    }
    count
}

/// Whether a header carries credentials and must never be stored.
pub fn is_credential_header(name: &str) -> bool {
    CREDENTIAL_HEADERS
        .iter()
        .any(|h| h.eq_ignore_ascii_case(name))
}

/// Headers as an event stores them: `{name: value}`, repeated headers
/// joined with `", "`, credential headers left out, values cleaned as the
/// stored text of `direction` (secrets, policy matches, credential
/// parameters in URLs), non-UTF-8 values as [`NON_UTF8`].
pub fn headers_to_value(headers: &HeaderMap, s: &Sanitizer, direction: Direction) -> Value {
    let mut out = Map::new();
    for name in headers.keys() {
        if is_credential_header(name.as_str()) {
            continue;
        }
        let stored = |value: &http::HeaderValue| match std::str::from_utf8(value.as_bytes()) {
            Ok(text) if text.contains(['?', ';']) => s
                .redact_stored_text(&redact_query(text), Some(direction))
                .into_owned(),
            Ok(text) => s.redact_stored_text(text, Some(direction)).into_owned(),
            Err(_) => NON_UTF8.to_owned(),
        };
        let mut values = headers.get_all(name).iter();
        // Most headers hold one value: stored as is, without joining.
        let mut joined = values.next().map(stored).unwrap_or_default();
        for value in values {
            joined.push_str(", ");
            joined.push_str(&stored(value));
        }
        out.insert(name.as_str().to_owned(), Value::String(joined));
    }
    Value::Object(out)
}

/// A request's path and query as stored: credential parameters replaced
/// (see [`redact_query`]), then secrets and policy matches in the path and
/// in every decoded query value replaced by markers.
pub fn stored_path(path_and_query: &str, s: &Sanitizer) -> String {
    let without_credentials = redact_query(path_and_query);
    let (path, query) = match without_credentials.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (without_credentials.as_str(), None),
    };
    let mut out = s
        .redact_stored_text(path, Some(Direction::Request))
        .into_owned();
    if let Some(query) = query {
        out.push('?');
        let (query, fragment) = match query.split_once('#') {
            Some((q, f)) => (q, Some(f)),
            None => (query, None),
        };
        for (i, pair) in query.split('&').enumerate() {
            if i > 0 {
                out.push('&');
            }
            let Some((name, value)) = pair.split_once('=') else {
                out.push_str(&s.redact_stored_text(pair, Some(Direction::Request)));
                continue;
            };
            out.push_str(&s.redact_stored_text(name, Some(Direction::Request)));
            out.push('=');
            // Values are searched decoded, so `4111%201111…` is a card too.
            let decoded = percent_decode(value);
            match s.redact_stored_text(&decoded, Some(Direction::Request)) {
                Cow::Borrowed(_) => out.push_str(value),
                Cow::Owned(clean) => out.extend(form_urlencoded::byte_serialize(clean.as_bytes())),
            }
        }
        if let Some(f) = fragment {
            out.push('#');
            out.push_str(&s.redact_stored_text(f, Some(Direction::Request)));
        }
    }
    out
}

fn percent_decode(value: &str) -> String {
    form_urlencoded::parse(format!("v={value}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// `path_and_query` with the values of credential parameters (see
/// `CREDENTIAL_PARAMS`; any case, percent-encoded or not, `&`- or
/// `;`-separated, in the query or as `;name=value` path parameters)
/// replaced by [`QUERY_MARKER`]. Everything else is kept byte for byte.
pub fn redact_query(path_and_query: &str) -> String {
    let (path, rest) = match path_and_query.split_once('?') {
        Some((path, rest)) => (path, Some(rest)),
        None => (path_and_query, None),
    };
    let mut out = String::with_capacity(path_and_query.len());
    // Path parameters: `/v1/models;key=…/x`.
    for (i, segment) in path.split('/').enumerate() {
        if i > 0 {
            out.push('/');
        }
        let mut params = segment.split(';');
        out.push_str(params.next().unwrap_or_default());
        for param in params {
            out.push(';');
            push_param(&mut out, param);
        }
    }
    let Some(rest) = rest else {
        return out;
    };
    let (query, fragment) = match rest.split_once('#') {
        Some((q, f)) => (q, Some(f)),
        None => (rest, None),
    };
    out.push('?');
    let mut start = 0;
    for (at, sep) in query.match_indices(['&', ';']) {
        push_param(&mut out, &query[start..at]);
        out.push_str(sep);
        start = at + sep.len();
    }
    push_param(&mut out, &query[start..]);
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

fn push_param(out: &mut String, pair: &str) {
    match pair.split_once('=') {
        Some((name, _)) if is_credential_param(name) => {
            out.push_str(name);
            out.push('=');
            out.push_str(QUERY_MARKER);
        }
        _ => out.push_str(pair),
    }
}

fn is_credential_param(raw_name: &str) -> bool {
    // Decode so `api%5Fkey` cannot slip past.
    let decoded: String = form_urlencoded::parse(raw_name.as_bytes())
        .map(|(k, _)| k.into_owned())
        .collect();
    let name = decoded.trim().to_ascii_lowercase().replace('-', "_");
    CREDENTIAL_PARAMS.contains(&name.as_str())
}

#[cfg(test)]
mod tests;

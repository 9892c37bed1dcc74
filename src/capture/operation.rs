//! Names the API operation of a request from its method and path.
//!
//! Apps reach the proxy with whatever base URL their SDK or gateway uses
//! (`/v1`, none, `/openai/v1`, `/api/v1`, Azure's
//! `/openai/deployments/{name}`), so operations are recognised by how the
//! path *ends*, never by a fixed prefix.

use std::borrow::Cow;

use http::Method;

/// The operation a request performs, as stored in REQUEST and RESPONSE
/// events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    /// `chat.create`, `completions.create`, `embeddings.create`,
    /// `responses.create`, `models.list`, `images.generate`,
    /// `audio.transcribe`, `moderations.create`, or `"{METHOD} {path}"` for
    /// anything else (path without its query). A known name is not copied.
    pub name: Cow<'static, str>,
    /// The Azure OpenAI deployment named in the path, if any.
    pub azure_deployment: Option<String>,
    /// The `api-version` query parameter, if present.
    pub api_version: Option<String>,
}

/// Path endings (compared segment by segment, ASCII case-insensitively) and
/// the operation each names. Order matters: the longer `chat/completions`
/// must win over `completions`.
const KNOWN: &[(&str, &[&str], &str)] = &[
    ("POST", &["chat", "completions"], "chat.create"),
    ("POST", &["completions"], "completions.create"),
    ("POST", &["embeddings"], "embeddings.create"),
    ("POST", &["responses"], "responses.create"),
    ("GET", &["models"], "models.list"),
    ("POST", &["images", "generations"], "images.generate"),
    ("POST", &["audio", "transcriptions"], "audio.transcribe"),
    ("POST", &["moderations"], "moderations.create"),
];

/// Most path segments read without a vector.
const SEGMENTS_ON_STACK: usize = 16;

/// The names [`classify`] gives known operations.
pub fn known_names() -> impl Iterator<Item = &'static str> {
    KNOWN.iter().map(|(_, _, name)| *name)
}

/// Classifies a request. `path` should not carry the query; if it does, the
/// query is ignored for matching and left out of a fallback name.
pub fn classify(method: &Method, path: &str, query: Option<&str>) -> Operation {
    let path = path.split(['?', '#']).next().unwrap_or_default();
    // Most paths have a handful of segments: they are kept on the stack.
    let mut on_stack = [""; SEGMENTS_ON_STACK];
    let mut spilled = Vec::new();
    let mut count = 0;
    for segment in path.split('/').filter(|s| !s.is_empty()) {
        if count < SEGMENTS_ON_STACK {
            on_stack[count] = segment;
        } else {
            if spilled.is_empty() {
                spilled.extend_from_slice(&on_stack);
            }
            spilled.push(segment);
        }
        count += 1;
    }
    let segments: &[&str] = if spilled.is_empty() {
        &on_stack[..count]
    } else {
        &spilled
    };

    let name = KNOWN
        .iter()
        .find(|(m, suffix, _)| method.as_str() == *m && ends_with(segments, suffix))
        .map(|(_, _, name)| Cow::Borrowed(*name))
        .unwrap_or_else(|| Cow::Owned(format!("{} {}", method.as_str(), path)));

    Operation {
        name,
        azure_deployment: azure_deployment(segments),
        api_version: query.and_then(|q| query_param(q, "api-version")),
    }
}

/// The provider label stored in events, from the upstream host (with or
/// without a port) and the request path.
pub fn provider_for(upstream_host: &str, path: &str) -> &'static str {
    // Compared in any case rather than lower-cased into a copy: every call
    // asks.
    let host = strip_port(upstream_host.trim()).trim_end_matches('.');
    let ends_with = |suffix: &str| {
        host.len() >= suffix.len()
            && host.as_bytes()[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
    };
    if host.eq_ignore_ascii_case("api.openai.com") {
        "openai"
    } else if ends_with(".openai.azure.com")
        || ends_with(".cognitiveservices.azure.com")
        || path.starts_with("/openai/deployments/")
    {
        "azure_openai"
    } else {
        "openai_compatible"
    }
}

fn ends_with(segments: &[&str], suffix: &[&str]) -> bool {
    segments.len() >= suffix.len()
        && segments[segments.len() - suffix.len()..]
            .iter()
            .zip(suffix)
            .all(|(a, b)| a.eq_ignore_ascii_case(b))
}

/// Azure puts the deployment right after `openai/deployments/`; gateways may
/// add their own prefix in front, so look for the pair anywhere.
fn azure_deployment(segments: &[&str]) -> Option<String> {
    segments.windows(3).find_map(|w| {
        (w[0].eq_ignore_ascii_case("openai") && w[1].eq_ignore_ascii_case("deployments"))
            .then(|| w[2].to_owned())
    })
}

fn query_param(query: &str, name: &str) -> Option<String> {
    let query = query.strip_prefix('?').unwrap_or(query);
    form_urlencoded::parse(query.as_bytes())
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

fn strip_port(host: &str) -> &str {
    // Bracketed IPv6 literals carry colons of their own.
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or(rest);
    }
    match host.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests;

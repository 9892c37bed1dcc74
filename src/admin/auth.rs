//! Bearer-token check for `/api/*`.
//!
//! Probes and scrapers (`/healthz`, `/readyz`, `/metrics`) stay open. A
//! refused call is answered 401 and recorded as an AUTHENTICATION event;
//! the presented token is never logged or stored.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use sha2::{Digest, Sha256};

use super::error::{AdminError, AuthFailure};
use super::AdminState;
use crate::event::{EventType, Level, NewEvent};

/// Middleware: lets the request through when no token is configured, the
/// path is outside `/api`, or the bearer token matches a configured one.
pub async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if state.tokens.is_empty() || !is_protected(req.uri().path()) {
        return next.run(req).await;
    }
    let failure = match bearer_token(req.headers()) {
        None => AuthFailure::MissingToken,
        Some(presented) if token_matches(&state.tokens, presented) => {
            return next.run(req).await;
        }
        Some(_) => AuthFailure::InvalidToken,
    };
    let method = req.method().as_str();
    let path = req.uri().path();
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_string());
    tracing::warn!(
        method,
        path,
        client_ip = client_ip.as_deref().unwrap_or("unknown"),
        reason = failure.as_str(),
        "Admin request refused."
    );
    let mut metadata = json!({"method": method, "path": path, "reason": failure.as_str()});
    if let Some(ip) = client_ip {
        metadata["client_ip"] = json!(ip);
    }
    // Offered, never awaited: a flood of bad requests fills the bounded
    // queue and is counted as dropped instead of slowing anything down.
    state.events.offer(
        NewEvent::new(
            EventType::Authentication,
            format!("Admin API request refused: {}", failure.as_str()),
        )
        .with_level(Level::Warning)
        .with_metadata(metadata),
    );
    AdminError::Unauthorized { reason: failure }.into_response()
}

fn is_protected(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

/// The token of an `Authorization: Bearer <token>` header. A header with
/// another scheme counts as a presented (and so invalid) token.
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?;
    let value = value.to_str().unwrap_or("");
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Some(token.trim()),
        _ => Some(""),
    }
}

/// Compares digests, not the tokens, so the time taken depends on neither
/// the tokens' contents nor their lengths; every configured token is
/// checked, so neither does which one matched.
fn token_matches(configured: &[String], presented: &str) -> bool {
    if presented.is_empty() {
        return false;
    }
    let presented = Sha256::digest(presented.as_bytes());
    let mut matched = 0u8;
    for token in configured {
        let expected = Sha256::digest(token.as_bytes());
        let diff = expected
            .iter()
            .zip(presented.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b));
        matched |= u8::from(diff == 0);
    }
    matched == 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let tokens = vec!["alpha".to_owned(), "beta".to_owned()];
        assert!(token_matches(&tokens, "alpha"));
        assert!(token_matches(&tokens, "beta"));
        assert!(!token_matches(&tokens, "alph"));
        assert!(!token_matches(&tokens, "alphaa"));
        assert!(!token_matches(&tokens, ""));
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(header::AUTHORIZATION, "bearer abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some("abc"));
        headers.insert(header::AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&headers), Some(""));
    }

    #[test]
    fn only_api_paths_are_protected() {
        assert!(is_protected("/api/events"));
        assert!(is_protected("/api"));
        assert!(!is_protected("/healthz"));
        assert!(!is_protected("/apiary"));
    }
}

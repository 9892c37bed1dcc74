//! Bearer tokens and their scopes, checked on `/api/*`.
//!
//! A token carries the `read` scope (query, export, verify, stats), the
//! `write` scope (`POST /api/events`), or both. Write does not imply read:
//! an app that posts custom events needs no access to other calls' records.
//! Tokens from `admin.tokens` have both scopes. Several tokens can be
//! active at once, so one can be rotated in before the old one is removed.
//!
//! Probes and scrapers (`/healthz`, `/readyz`, `/metrics`) stay open. A
//! refused call is answered 401 (no valid token) or 403 (a valid token
//! without the scope) and counted by the [`RefusalLog`](super::refusals::RefusalLog); the presented
//! token is never logged or stored.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::error::{AdminError, AuthFailure};
use super::refusals::Refusal;
use super::AdminState;
use crate::config::AdminConfig;

/// What a token may do.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Scopes {
    pub read: bool,
    pub write: bool,
}

/// A scope an endpoint requires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Read,
    Write,
}

/// The accepted tokens, kept only as digests.
#[derive(Debug, Clone, Default)]
pub struct TokenSet {
    entries: Vec<([u8; 32], Scopes)>,
}

/// Middleware: lets the request through when no token is configured, the
/// path is outside `/api`, or the bearer token matches a configured one
/// that has the scope the endpoint needs.
pub async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if state.tokens.is_empty() || !is_protected(req.uri().path()) {
        return next.run(req).await;
    }
    let needed = required_scope(req.method(), req.uri().path());
    let error = match bearer_token(req.headers()) {
        None => AdminError::Unauthorized {
            reason: AuthFailure::MissingToken,
        },
        Some(presented) => match state.tokens.scopes_of(presented) {
            Some(scopes) if scopes.allow(needed) => return next.run(req).await,
            Some(_) => AdminError::Forbidden { scope: needed },
            None => AdminError::Unauthorized {
                reason: AuthFailure::InvalidToken,
            },
        },
    };
    let reason = match &error {
        AdminError::Unauthorized { reason } => reason.as_str(),
        _ => "insufficient_scope",
    };
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_canonical().to_string());
    state.refusals.refused(Refusal {
        client_ip,
        method: req.method().as_str().to_owned(),
        path: req.uri().path().to_owned(),
        reason,
    });
    error.into_response()
}

/// `POST /api/events` writes; everything else under `/api` reads.
fn required_scope(method: &Method, path: &str) -> Scope {
    if method == Method::POST && path == "/api/events" {
        Scope::Write
    } else {
        Scope::Read
    }
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

// === impl Scopes ===

impl Scopes {
    /// Read and write: the scopes of `admin.tokens`.
    pub const BOTH: Scopes = Scopes {
        read: true,
        write: true,
    };

    fn allow(self, scope: Scope) -> bool {
        match scope {
            Scope::Read => self.read,
            Scope::Write => self.write,
        }
    }
}

// === impl Scope ===

impl Scope {
    /// The scope's name, as configured and as error messages give it.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Read => "read",
            Scope::Write => "write",
        }
    }
}

// === impl TokenSet ===

impl TokenSet {
    /// Tokens with both scopes, read-only ones and write-only ones. A token
    /// listed more than once has every scope it is listed with.
    pub fn new<'a>(
        both: impl IntoIterator<Item = &'a str>,
        read: impl IntoIterator<Item = &'a str>,
        write: impl IntoIterator<Item = &'a str>,
    ) -> Self {
        let mut entries = Vec::new();
        let mut add = |token: &str, scopes: Scopes| {
            entries.push((Sha256::digest(token.as_bytes()).into(), scopes));
        };
        both.into_iter().for_each(|t| add(t, Scopes::BOTH));
        read.into_iter().for_each(|t| {
            add(
                t,
                Scopes {
                    read: true,
                    write: false,
                },
            )
        });
        write.into_iter().for_each(|t| {
            add(
                t,
                Scopes {
                    read: false,
                    write: true,
                },
            )
        });
        Self { entries }
    }

    /// The tokens of the admin configuration.
    pub fn from_config(admin: &AdminConfig) -> Self {
        Self::new(
            admin.tokens.iter().map(|t| t.expose()),
            admin.read_tokens.iter().map(|t| t.expose()),
            admin.write_tokens.iter().map(|t| t.expose()),
        )
    }

    /// No token at all: the API is open (on a loopback listener).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The scopes of `presented`, `None` when it matches no token.
    ///
    /// Compares digests, not the tokens, so the time taken depends on
    /// neither the tokens' contents nor their lengths; every configured
    /// token is checked, so neither does which one matched.
    pub fn scopes_of(&self, presented: &str) -> Option<Scopes> {
        if presented.is_empty() {
            return None;
        }
        let presented = Sha256::digest(presented.as_bytes());
        let mut matched = false;
        let mut scopes = Scopes::default();
        for (expected, granted) in &self.entries {
            let diff = expected
                .iter()
                .zip(presented.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            let hit = diff == 0;
            matched |= hit;
            scopes.read |= hit & granted.read;
            scopes.write |= hit & granted.write;
        }
        matched.then_some(scopes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_match_exactly() {
        let tokens = TokenSet::new(["alpha", "beta"], [], []);
        assert_eq!(tokens.scopes_of("alpha"), Some(Scopes::BOTH));
        assert_eq!(tokens.scopes_of("beta"), Some(Scopes::BOTH));
        assert_eq!(tokens.scopes_of("alph"), None);
        assert_eq!(tokens.scopes_of("alphaa"), None);
        assert_eq!(tokens.scopes_of(""), None);
    }

    #[test]
    fn scopes_come_from_every_list_a_token_is_in() {
        let tokens = TokenSet::new([], ["reader", "both"], ["writer", "both"]);
        let read_only = Scopes {
            read: true,
            write: false,
        };
        let write_only = Scopes {
            read: false,
            write: true,
        };
        assert_eq!(tokens.scopes_of("reader"), Some(read_only));
        assert_eq!(tokens.scopes_of("writer"), Some(write_only));
        assert_eq!(tokens.scopes_of("both"), Some(Scopes::BOTH));
        assert!(!read_only.allow(Scope::Write) && !write_only.allow(Scope::Read));
    }

    #[test]
    fn only_posting_events_needs_write() {
        assert_eq!(required_scope(&Method::POST, "/api/events"), Scope::Write);
        assert_eq!(required_scope(&Method::GET, "/api/events"), Scope::Read);
        assert_eq!(required_scope(&Method::GET, "/api/export"), Scope::Read);
        assert_eq!(required_scope(&Method::GET, "/api/verify"), Scope::Read);
        assert_eq!(required_scope(&Method::GET, "/api/stats"), Scope::Read);
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

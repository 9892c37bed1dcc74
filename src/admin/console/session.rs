//! Console sessions: a random id in an HttpOnly cookie, the session itself
//! (its expiry and CSRF token) only in this process's memory.
//!
//! A session is made by signing in with a read-scope admin token; the
//! token itself is never kept, only the fact that it was valid. Sessions
//! end at sign-out, at expiry, or when the process stops. The table is
//! capped: when full, expired sessions go first, then the oldest.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use axum::http::{header, HeaderMap};
use tokio::time::Instant;

/// The session cookie's name.
pub const COOKIE: &str = "audit_console";
/// How long a session lasts after sign-in.
pub const LIFETIME: Duration = Duration::from_secs(8 * 3600);
/// Most sessions kept at once.
pub const MAX_SESSIONS: usize = 1024;

/// One signed-in reader.
#[derive(Debug, Clone)]
pub struct Session {
    /// Sent back with every state-changing form.
    pub csrf: String,
    expires: Instant,
}

/// The sessions of this process.
#[derive(Debug, Default)]
pub struct Sessions {
    table: Mutex<HashMap<String, Session>>,
}

// === impl Sessions ===

impl Sessions {
    /// Starts a session; returns its id (the cookie value).
    pub fn create(&self) -> (String, Session) {
        self.create_at(Instant::now())
    }

    fn create_at(&self, now: Instant) -> (String, Session) {
        let id = random_hex();
        let session = Session {
            csrf: random_hex(),
            expires: now + LIFETIME,
        };
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        if table.len() >= MAX_SESSIONS {
            table.retain(|_, s| s.expires > now);
        }
        if table.len() >= MAX_SESSIONS {
            if let Some(oldest) = table
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
            {
                table.remove(&oldest);
            }
        }
        table.insert(id.clone(), session.clone());
        (id, session)
    }

    /// The live session named by the request's cookie.
    pub fn find(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        self.find_at(headers, Instant::now())
    }

    fn find_at(&self, headers: &HeaderMap, now: Instant) -> Option<(String, Session)> {
        let id = cookie_value(headers, COOKIE)?;
        let mut table = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        match table.get(id) {
            Some(s) if s.expires > now => Some((id.to_owned(), s.clone())),
            Some(_) => {
                table.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends a session.
    pub fn remove(&self, id: &str) {
        self.table
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

// === impl Session ===

impl Session {
    /// Whether `presented` is this session's CSRF token (compared in time
    /// independent of where they differ).
    pub fn csrf_matches(&self, presented: &str) -> bool {
        let (a, b) = (self.csrf.as_bytes(), presented.as_bytes());
        a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
    }
}

/// The `Set-Cookie` value for session `id`; `secure` when the console is
/// reached over TLS (a terminating proxy says so with
/// `X-Forwarded-Proto: https`).
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{COOKIE}={id}; Path=/ui; HttpOnly; SameSite=Strict; Max-Age={}{}",
        LIFETIME.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that ends the session in the browser.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{COOKIE}=; Path=/ui; HttpOnly; SameSite=Strict; Max-Age=0{}",
        if secure { "; Secure" } else { "" }
    )
}

/// Whether the request reached us over TLS (terminated in front).
pub fn is_tls(headers: &HeaderMap) -> bool {
    headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("https"))
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty())
}

/// 32 bytes from the OS random source, as hex. Falls back to two UUID v7
/// (74 random bits each, from a seeded generator) if reading it fails.
fn random_hex() -> String {
    let mut bytes = [0u8; 32];
    match getrandom::getrandom(&mut bytes) {
        Ok(()) => hex::encode(bytes),
        Err(_) => format!(
            "{}{}",
            uuid::Uuid::now_v7().simple(),
            uuid::Uuid::now_v7().simple()
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cookie(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::COOKIE, value.parse().unwrap());
        headers
    }

    #[test]
    fn a_session_is_found_by_its_cookie_and_ends_at_removal() {
        let sessions = Sessions::default();
        let (id, session) = sessions.create();
        assert_eq!(id.len(), 64);
        let headers = with_cookie(&format!("other=1; {COOKIE}={id}"));
        let (found, s) = sessions.find(&headers).unwrap();
        assert_eq!(found, id);
        assert!(s.csrf_matches(&session.csrf));
        assert!(!s.csrf_matches("nope"));
        assert!(!s.csrf_matches(""));
        sessions.remove(&id);
        assert!(sessions.find(&headers).is_none());
        assert!(sessions
            .find(&with_cookie(&format!("{COOKIE}=deadbeef")))
            .is_none());
        assert!(sessions.find(&with_cookie(&format!("{COOKIE}="))).is_none());
    }

    #[test]
    fn a_session_ends_at_its_expiry() {
        let sessions = Sessions::default();
        let start = Instant::now();
        let (id, _) = sessions.create_at(start);
        let headers = with_cookie(&format!("{COOKIE}={id}"));
        let almost = start + LIFETIME - Duration::from_secs(1);
        assert!(sessions.find_at(&headers, almost).is_some());
        assert!(sessions.find_at(&headers, start + LIFETIME).is_none());
        // An expired session is gone, not just refused once.
        assert!(sessions.find_at(&headers, almost).is_none());
    }

    #[test]
    fn the_table_stays_capped() {
        let sessions = Sessions::default();
        for _ in 0..MAX_SESSIONS + 10 {
            sessions.create();
        }
        let len = sessions.table.lock().unwrap().len();
        assert_eq!(len, MAX_SESSIONS);
    }

    #[test]
    fn cookies_are_http_only_strict_and_secure_under_tls() {
        let plain = set_cookie("abc", false);
        assert!(plain.contains("HttpOnly") && plain.contains("SameSite=Strict"));
        assert!(plain.contains("Max-Age=28800") && !plain.contains("Secure"));
        assert!(set_cookie("abc", true).ends_with("; Secure"));
        let mut headers = HeaderMap::new();
        assert!(!is_tls(&headers));
        headers.insert("x-forwarded-proto", "HTTPS".parse().unwrap());
        assert!(is_tls(&headers));
    }
}

//! The web console under `/ui`: server-rendered pages for the people who
//! read the audit (browse and search events, one call, an overview, the
//! chain's integrity, exports).
//!
//! Pages are HTML written by Rust with every stored value escaped
//! ([`html::esc`]); one stylesheet and one small script are compiled into
//! the binary, and a strict Content-Security-Policy lets a page load
//! nothing else, from anywhere. The console only reads: no page changes
//! or deletes an event. Where admin tokens are configured, a reader signs
//! in once with a read-scope token and gets a session cookie
//! ([`session`]); failed sign-ins are refused and recorded like refused
//! API calls. State-changing forms (sign-out, run verify) carry the
//! session's CSRF token.
//!
//! Every page reads through [`AuditStore`](crate::store::AuditStore), so
//! the console works on any store the admin API serves; each page reads a
//! bounded number of events.

pub mod call;
pub mod events;
pub mod filter;
pub mod html;
pub mod integrity;
pub mod overview;
pub mod session;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use super::refusals::Refusal;
use super::AdminState;
use html::{esc, Section};
use session::{Session, Sessions};

/// Largest form body accepted (sign-in, sign-out, verify).
const MAX_FORM_BYTES: usize = 8 * 1024;

/// Nothing loads from anywhere but this listener; no inline script.
const CSP: &str = "default-src 'none'; style-src 'self'; script-src 'self'; img-src 'self'; \
                   form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const CSS: &str = include_str!("console/assets/console.css");
const JS: &str = include_str!("console/assets/console.js");

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    pub admin: AdminState,
    pub sessions: Arc<Sessions>,
    /// The result of the last verify run from the console.
    pub last_verify: Arc<Mutex<Option<integrity::VerifyRun>>>,
    /// Without tokens there are no sessions; forms carry this token.
    open_csrf: Arc<Session>,
}

/// The reader of a page: their session (for the CSRF token of forms).
#[derive(Debug, Clone)]
pub struct Reader {
    pub session_id: Option<String>,
    pub session: Session,
}

/// A response given instead of the page asked for: the way to sign-in,
/// or a page saying what went wrong (boxed: it travels in `Err`).
pub struct Detour(Box<Response>);

impl From<Response> for Detour {
    fn from(response: Response) -> Self {
        Detour(Box::new(response))
    }
}

impl IntoResponse for Detour {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// The console's routes, with their own state; merged into the admin
/// router.
pub fn router(admin: AdminState) -> Router {
    let sessions = Arc::new(Sessions::default());
    let (_, open_csrf) = Sessions::default().create();
    let state = ConsoleState {
        admin,
        sessions,
        last_verify: Arc::new(Mutex::new(None)),
        open_csrf: Arc::new(open_csrf),
    };
    Router::new()
        .route("/ui", get(|| async { Redirect::to("/ui/overview") }))
        .route("/ui/", get(|| async { Redirect::to("/ui/overview") }))
        .route("/ui/login", get(login_page).post(login))
        .route("/ui/logout", post(logout))
        .route("/ui/overview", get(overview::page))
        .route("/ui/events", get(events::page))
        .route("/ui/export", get(events::export))
        .route("/ui/calls/{request_id}", get(call::page))
        .route("/ui/raw/{id}", get(call::raw))
        .route("/ui/integrity", get(integrity::page))
        .route("/ui/verify", post(integrity::run))
        .route("/ui/assets/console.css", get(css))
        .route("/ui/assets/console.js", get(js))
        .layer(middleware::from_fn(security_headers))
        .with_state(state)
}

/// Every console response: the CSP, no sniffing, no referrer, no caching
/// (pages hold audit content).
async fn security_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers
        .entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    response
}

async fn css() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        CSS,
    )
        .into_response()
}

async fn js() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        JS,
    )
        .into_response()
}

// === impl ConsoleState ===

impl ConsoleState {
    /// The reader of a request, or the redirect to sign-in.
    pub fn reader(&self, headers: &HeaderMap) -> Result<Reader, Detour> {
        if self.admin.tokens.is_empty() {
            return Ok(Reader {
                session_id: None,
                session: (*self.open_csrf).clone(),
            });
        }
        match self.sessions.find(headers) {
            Some((id, session)) => Ok(Reader {
                session_id: Some(id),
                session,
            }),
            None => Err(Redirect::to("/ui/login").into_response().into()),
        }
    }

    /// A reader's form, checked: its CSRF token must be their session's.
    pub async fn checked_form(
        &self,
        headers: &HeaderMap,
        body: Body,
    ) -> Result<(Reader, Vec<(String, String)>), Detour> {
        let reader = self.reader(headers)?;
        let form = read_form(body).await?;
        let presented = form
            .iter()
            .find(|(k, _)| k == "csrf")
            .map(|(_, v)| v.as_str())
            .unwrap_or("");
        if !reader.session.csrf_matches(presented) {
            return Err(Detour::from(message_page(
                StatusCode::FORBIDDEN,
                "Form expired",
                "This form's security token does not match your session. Reload the page and try again.",
            )));
        }
        Ok((reader, form))
    }
}

/// A whole page as a 200 response.
pub fn html_page(title: &str, section: Section, reader: &Reader, body: &str) -> Response {
    html_response(
        StatusCode::OK,
        html::page(title, section, Some(&reader.session.csrf), body),
    )
}

/// A short page that says what went wrong, with the given status.
pub fn message_page(status: StatusCode, title: &str, message: &str) -> Response {
    let body = format!(
        "<p role=\"alert\">{}</p><p><a href=\"/ui/overview\">Back to the console</a></p>",
        esc(message)
    );
    html_response(status, html::page(title, Section::SignIn, None, &body))
}

fn html_response(status: StatusCode, body: String) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response()
}

/// The fields of a urlencoded form body, bounded.
async fn read_form(body: Body) -> Result<Vec<(String, String)>, Detour> {
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES)
        .await
        .map_err(|_| {
            Detour::from(message_page(
                StatusCode::PAYLOAD_TOO_LARGE,
                "Form too large",
                "The form could not be read.",
            ))
        })?;
    Ok(form_urlencoded::parse(&bytes).into_owned().collect())
}

async fn login_page(State(state): State<ConsoleState>, headers: HeaderMap) -> Response {
    if state.admin.tokens.is_empty() || state.sessions.find(&headers).is_some() {
        return Redirect::to("/ui/overview").into_response();
    }
    sign_in_form(StatusCode::OK, None)
}

fn sign_in_form(status: StatusCode, error: Option<&str>) -> Response {
    let alert = error
        .map(|e| {
            format!(
                "<p role=\"alert\" class=\"error\" id=\"signin-error\">{}</p>",
                esc(e)
            )
        })
        .unwrap_or_default();
    let body = format!(
        "<p>Sign in with an admin token that has the read scope.</p>{alert}\
         <form method=\"post\" action=\"/ui/login\" class=\"signin\">\
         <label for=\"token\">Admin token</label>\
         <input type=\"password\" id=\"token\" name=\"token\" autocomplete=\"current-password\" required autofocus>\
         <button type=\"submit\">Sign in</button></form>"
    );
    html_response(status, html::page("Sign in", Section::SignIn, None, &body))
}

/// `POST /ui/login`: a valid read-scope token starts a session; anything
/// else is refused and recorded as an AUTHENTICATION event, as a refused
/// API call is.
async fn login(State(state): State<ConsoleState>, req: Request) -> Response {
    if state.admin.tokens.is_empty() {
        return Redirect::to("/ui/overview").into_response();
    }
    let client_ip = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(addr)| addr.ip().to_canonical().to_string());
    let secure = session::is_tls(req.headers());
    let form = match read_form(req.into_body()).await {
        Ok(form) => form,
        Err(detour) => return detour.into_response(),
    };
    let token = form
        .iter()
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim())
        .unwrap_or("");
    let refused = match state.admin.tokens.scopes_of(token) {
        Some(scopes) if scopes.read => None,
        Some(_) => Some("insufficient_scope"),
        None if token.is_empty() => Some("missing_token"),
        None => Some("invalid_token"),
    };
    if let Some(reason) = refused {
        state.admin.refusals.refused(Refusal {
            client_ip,
            method: Method::POST.as_str().to_owned(),
            path: "/ui/login".to_owned(),
            reason,
        });
        let message = if reason == "insufficient_scope" {
            "This token cannot read events: the console needs a token with the read scope."
        } else {
            "That token is not valid."
        };
        return sign_in_form(StatusCode::UNAUTHORIZED, Some(message));
    }
    let (id, _) = state.sessions.create();
    // 303: the browser follows with a GET.
    let mut response = Redirect::to("/ui/overview").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::set_cookie(&id, secure)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

/// `POST /ui/logout`: ends the session (CSRF-checked).
async fn logout(State(state): State<ConsoleState>, req: Request) -> Response {
    let secure = session::is_tls(req.headers());
    let (parts, body) = req.into_parts();
    let reader = match state.checked_form(&parts.headers, body).await {
        Ok((reader, _)) => reader,
        Err(detour) => return detour.into_response(),
    };
    if let Some(id) = reader.session_id {
        state.sessions.remove(&id);
    }
    let mut response = Redirect::to("/ui/login").into_response();
    if let Ok(cookie) = HeaderValue::from_str(&session::clear_cookie(secure)) {
        response.headers_mut().insert(header::SET_COOKIE, cookie);
    }
    response
}

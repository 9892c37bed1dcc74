//! Admin API errors and their one mapping to HTTP.
//!
//! Every refusal is JSON in the OpenAI error shape, so clients need one
//! parser. Server-side failures carry fixed messages: the store's own
//! error text is logged here, once, and never sent to the caller.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use super::auth::Scope;
use crate::pipeline::SubmitError;
use crate::store::StoreError;

/// Why an admin request was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A query parameter or body field is missing, malformed or unknown.
    #[error("{message}")]
    InvalidParameter { param: String, message: String },
    #[error("the request body exceeds {limit} bytes")]
    BodyTooLarge { limit: usize },
    #[error("no event with this id")]
    NotFound,
    #[error("no such endpoint")]
    NoRoute,
    #[error("a valid bearer token is required")]
    Unauthorized { reason: AuthFailure },
    /// A valid token without the scope the endpoint needs.
    #[error("this token lacks the `{}` scope", scope.as_str())]
    Forbidden { scope: Scope },
    #[error("store failure: {0}")]
    Store(#[from] StoreError),
    #[error("the event could not be stored: {0}")]
    Submit(SubmitError),
}

/// Why a token was refused; also the `reason` of the AUTHENTICATION event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthFailure {
    MissingToken,
    InvalidToken,
}

// === impl AdminError ===

impl AdminError {
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> Self {
        AdminError::InvalidParameter {
            param: param.into(),
            message: message.into(),
        }
    }

    fn status(&self) -> StatusCode {
        match self {
            AdminError::InvalidParameter { .. } => StatusCode::BAD_REQUEST,
            AdminError::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            AdminError::NotFound | AdminError::NoRoute => StatusCode::NOT_FOUND,
            AdminError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            AdminError::Forbidden { .. } => StatusCode::FORBIDDEN,
            AdminError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            AdminError::Submit(SubmitError::BelowLevel) => StatusCode::BAD_REQUEST,
            AdminError::Submit(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        let status = self.status();
        let (kind, code, param, message): (&str, &str, Option<String>, String) = match &self {
            AdminError::InvalidParameter { param, message } => (
                "invalid_request_error",
                "invalid_parameter",
                Some(param.clone()),
                message.clone(),
            ),
            AdminError::BodyTooLarge { .. } => (
                "invalid_request_error",
                "body_too_large",
                Some("body".into()),
                self.to_string(),
            ),
            AdminError::NotFound => (
                "invalid_request_error",
                "not_found",
                None,
                self.to_string(),
            ),
            AdminError::NoRoute => (
                "invalid_request_error",
                "unknown_endpoint",
                None,
                self.to_string(),
            ),
            AdminError::Unauthorized { reason } => (
                "authentication_error",
                reason.as_str(),
                None,
                "a valid bearer token is required: Authorization: Bearer <token>".into(),
            ),
            AdminError::Forbidden { scope } => (
                "permission_error",
                "insufficient_scope",
                None,
                format!(
                    "this token lacks the `{}` scope this endpoint needs; use a token with it",
                    scope.as_str()
                ),
            ),
            AdminError::Store(error) => {
                tracing::error!(%error, "Admin request failed: the audit store failed.");
                (
                    "server_error",
                    "store_unavailable",
                    None,
                    "the audit store is unavailable; try again later".into(),
                )
            }
            AdminError::Submit(SubmitError::BelowLevel) => (
                "invalid_request_error",
                "invalid_parameter",
                Some("level".into()),
                "the event's level is below the configured audit.log_level, so it would not be stored"
                    .into(),
            ),
            AdminError::Submit(error) => {
                tracing::warn!(%error, "Admin custom event not stored.");
                let (code, message) = match error {
                    SubmitError::Disabled => ("audit_disabled", "auditing is disabled"),
                    SubmitError::QueueFull => {
                        ("queue_full", "the audit event queue is full; try again later")
                    }
                    _ => (
                        "store_unavailable",
                        "the audit store is unavailable; try again later",
                    ),
                };
                ("server_error", code, None, message.into())
            }
        };
        let body =
            json!({"error": {"message": message, "type": kind, "code": code, "param": param}});
        let mut response = (status, Json(body)).into_response();
        let headers = response.headers_mut();
        match &self {
            AdminError::Unauthorized { .. } => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            AdminError::Store(_) | AdminError::Submit(SubmitError::QueueFull) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            }
            _ => {}
        }
        response
    }
}

// === impl AuthFailure ===

impl AuthFailure {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthFailure::MissingToken => "missing_token",
            AuthFailure::InvalidToken => "invalid_token",
        }
    }
}

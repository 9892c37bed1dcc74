//! Responses the proxy makes itself, in the OpenAI error shape.
//!
//! Each carries `x-audit-proxy-error: <code>` so clients and operators can
//! tell the proxy's own errors from upstream's.

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use serde_json::json;

use super::body::{full, ProxyBody};

/// Header naming the proxy's own error code on responses it made.
pub const PROXY_ERROR_HEADER: &str = "x-audit-proxy-error";
/// Header carrying the call's request id on every response.
pub const REQUEST_ID_HEADER: &str = "x-audit-request-id";

/// A failure the proxy answers for itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyError {
    /// No connection to upstream, or it failed before answering.
    UpstreamUnreachable,
    /// Upstream sent no response headers within the configured timeout.
    UpstreamTimeout,
    /// `fail_closed` is set and the store cannot take events.
    AuditStoreUnavailable,
    /// The app's request could not be read.
    BadRequest,
    /// The proxy is shutting down.
    ShuttingDown,
    /// A `block` policy watches requests and the body is longer than the
    /// inspection limit: it cannot be checked, so it is not forwarded.
    RequestTooLargeToInspect,
    /// A `block` policy watches requests and the body's `Content-Encoding`
    /// cannot be decoded.
    RequestEncodingNotInspectable,
    /// A `block` policy watches requests and the body claims to be JSON
    /// but does not parse.
    RequestNotParsable,
    /// `CONNECT`: the proxy forwards API calls, it opens no tunnels.
    MethodNotAllowed,
    /// A path with `.`/`..` segments or encoded slashes (see
    /// [`path_guard`](super::path_guard)).
    UnsafePath,
    /// A response `block` policy is on and the answer is longer than
    /// `policy.max_inspected_bytes`: it cannot be inspected whole.
    AnswerTooLarge,
    /// A response `block` policy is on and the answer's `Content-Encoding`
    /// is unknown or its body is corrupt: it cannot be inspected.
    AnswerUndecodable,
}

// === impl ProxyError ===

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::UpstreamUnreachable
            | ProxyError::AnswerTooLarge
            | ProxyError::AnswerUndecodable => StatusCode::BAD_GATEWAY,
            ProxyError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::AuditStoreUnavailable | ProxyError::ShuttingDown => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::BadRequest | ProxyError::RequestNotParsable | ProxyError::UnsafePath => {
                StatusCode::BAD_REQUEST
            }
            ProxyError::RequestTooLargeToInspect => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::RequestEncodingNotInspectable => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ProxyError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        }
    }

    /// Short, fixed code: the `code` field, the marker header and the
    /// metric label.
    pub fn code(&self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable => "upstream_unreachable",
            ProxyError::UpstreamTimeout => "upstream_timeout",
            ProxyError::AuditStoreUnavailable => "audit_store_unavailable",
            ProxyError::BadRequest => "bad_request",
            ProxyError::ShuttingDown => "shutting_down",
            ProxyError::RequestTooLargeToInspect => "request_too_large_to_inspect",
            ProxyError::RequestEncodingNotInspectable => "request_encoding_not_inspectable",
            ProxyError::RequestNotParsable => "request_not_parsable",
            ProxyError::MethodNotAllowed => "method_not_allowed",
            ProxyError::UnsafePath => "invalid_path",
            ProxyError::AnswerTooLarge => "answer_too_large_to_inspect",
            ProxyError::AnswerUndecodable => "answer_not_decodable",
        }
    }

    fn message(&self) -> &'static str {
        match self {
            ProxyError::UpstreamUnreachable => {
                "The audit proxy could not reach the upstream API. Try again later."
            }
            ProxyError::UpstreamTimeout => {
                "The upstream API did not answer in time (audit proxy upstream timeout)."
            }
            ProxyError::AuditStoreUnavailable => {
                "The audit store is unavailable and the proxy is configured to fail closed."
            }
            ProxyError::BadRequest => "The audit proxy could not read the request.",
            ProxyError::ShuttingDown => "The audit proxy is shutting down.",
            ProxyError::RequestTooLargeToInspect => {
                "The request body is longer than the compliance inspection limit, so the audit proxy cannot check it against its block policies and did not forward it."
            }
            ProxyError::RequestEncodingNotInspectable => {
                "The request body's Content-Encoding cannot be decoded, so the audit proxy cannot check it against its block policies and did not forward it."
            }
            ProxyError::RequestNotParsable => {
                "The request body is declared or shaped as JSON but does not parse, so the audit proxy cannot check it against its block policies and did not forward it."
            }
            ProxyError::MethodNotAllowed => {
                "The audit proxy does not forward CONNECT requests; send API calls to it directly."
            }
            ProxyError::UnsafePath => {
                "The request path has a '.' or '..' segment or an encoded slash, which the audit proxy refuses."
            }
            ProxyError::AnswerTooLarge => {
                "The upstream answer is longer than the audit proxy's inspection limit \
                 (policy.max_inspected_bytes) and a block policy watches answers, so it was \
                 not forwarded."
            }
            ProxyError::AnswerUndecodable => {
                "The upstream answer's Content-Encoding could not be decoded for inspection \
                 and a block policy watches answers, so it was not forwarded."
            }
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            ProxyError::BadRequest
            | ProxyError::RequestTooLargeToInspect
            | ProxyError::RequestEncodingNotInspectable
            | ProxyError::RequestNotParsable
            | ProxyError::MethodNotAllowed
            | ProxyError::UnsafePath => "invalid_request_error",
            _ => "api_error",
        }
    }

    /// The OpenAI-style JSON body.
    pub fn body_json(&self) -> serde_json::Value {
        json!({"error": {
            "message": self.message(),
            "type": self.kind(),
            "param": null,
            "code": self.code(),
        }})
    }

    pub fn into_response(self, request_id: &str) -> Response<ProxyBody> {
        let body = Bytes::from(self.body_json().to_string());
        let mut response = Response::new(full(body));
        *response.status_mut() = self.status();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(PROXY_ERROR_HEADER, HeaderValue::from_static(self.code()));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert(REQUEST_ID_HEADER, v);
        }
        match self {
            ProxyError::ShuttingDown => {
                headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            ProxyError::MethodNotAllowed => {
                headers.insert(header::ALLOW, HeaderValue::from_static("GET, POST, DELETE"));
            }
            _ => {}
        }
        response
    }
}

/// The answer to a call a `block` policy stopped: 400 in the OpenAI error
/// shape, naming the policy and what it found (never the matched text).
pub fn policy_violation(request_id: &str, verdict: &crate::policy::Verdict) -> Response<ProxyBody> {
    let body = super::policy_guard::blocked_response_json(verdict);
    let mut response = Response::new(full(body.to_string()));
    *response.status_mut() = StatusCode::BAD_REQUEST;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    headers.insert(
        PROXY_ERROR_HEADER,
        HeaderValue::from_static("policy_violation"),
    );
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(REQUEST_ID_HEADER, v);
    }
    response
}

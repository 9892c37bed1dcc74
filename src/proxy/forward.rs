//! Forwarding one call: read the request's capped prefix, send the request
//! upstream, and stream the response back through a capture tee.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use std::sync::OnceLock;
use tokio::time::Instant;

use super::answer_check::{check_answer, is_encoded, looks_like_sse, AnswerCheck, SNIFF_BYTES};
use super::body::{full, IdleTimeoutBody, PrefixedBody, ProxyBody};
use super::client::UpstreamClient;
use super::encoded_stream::{streams_decodable, EncodedStreamGuard};
use super::headers::forwardable;
use super::path_guard;
use super::policy_guard::{OnBlock, StreamGuard};
use super::request_id::request_id_for;
use super::respond::{self, ProxyError, REQUEST_ID_HEADER};

/// Longest a call waits for its REQUEST's commit under strict durability
/// before it is refused with 503.
const STRICT_COMMIT_TIMEOUT: Duration = Duration::from_secs(5);

use crate::capture::body::{body_is_parsed_as_json, body_to_value};
use crate::capture::decode::decode_shared;
use crate::capture::json_view::JsonView;
use crate::capture::operation::{classify, provider_for};
use crate::capture::recorded_headers::RecordedHeaders;
use crate::capture::tee::{BodyEnd, Capture, Captured, TeeBody, IDLE_TIMEOUT_MESSAGE};
use crate::config::{FailMode, Upstream};
use crate::pipeline::record::{
    CallInfo, CallRecord, Failure, ParsedBody, Recorder, RequestPrescan, ResponseOutcome,
};
use crate::pipeline::{Admission, Attempt, Reservation, StoreHealth};
use crate::policy::{Direction, PolicySet, Verdict};
use crate::telemetry::metrics::{
    operation_label, CallLabels, KindLabels, Metrics, OperationLabels,
};

/// Everything a call needs, shared by all connections.
pub struct ProxyState {
    pub client: UpstreamClient,
    pub upstream: Upstream,
    /// The `Host` header sent upstream (see [`super::client::host_header`]).
    pub upstream_host: Option<HeaderValue>,
    /// Set by configuration; otherwise derived from the upstream host.
    pub provider_override: Option<String>,
    /// Bytes captured per body (0 when auditing is off).
    pub capture_cap: usize,
    pub upstream_timeout: Duration,
    pub stream_idle_timeout: Duration,
    /// `None` when auditing is disabled: calls are forwarded, not recorded.
    pub recorder: Option<Recorder>,
    pub fail_mode: FailMode,
    pub store_health: StoreHealth,
    /// Holds calls while the queue is full; under `fail_closed`, lets a
    /// call in only while its events have room.
    pub admission: Admission,
    pub metrics: Arc<Metrics>,
    /// The compliance policies; `block` and `redact_upstream` ones act here.
    pub policies: Arc<PolicySet>,
    /// Most bytes of a request body, or of a non-stream answer, read and
    /// decoded to inspect it whole while a `block` policy watches that
    /// direction (`policy.max_inspected_bytes`).
    pub max_inspected_bytes: usize,
    /// Set when the shutdown grace ran out and remaining calls were cut,
    /// so their records say so instead of blaming the client.
    pub cut_at_shutdown: Arc<std::sync::atomic::AtomicBool>,
}

/// Handles one call end to end. Never fails: every problem becomes an
/// OpenAI-style error response.
pub async fn handle(
    state: Arc<ProxyState>,
    req: Request<Incoming>,
    client_ip: IpAddr,
) -> Response<ProxyBody> {
    let started_at = Instant::now();
    // One copy shared by the call's log line, its record and its events.
    let request_id = request_id_for(req.headers(), &state.policies);
    // Refused before anything else: neither goes upstream or starts a
    // record (the metrics count them).
    let refused = if req.method() == http::Method::CONNECT {
        Some(ProxyError::MethodNotAllowed)
    } else if path_guard::is_unsafe(req.uri().path()) {
        Some(ProxyError::UnsafePath)
    } else {
        None
    };
    if let Some(error) = refused {
        state.metrics.refused_call(error.code());
        return error.into_response(&request_id);
    }
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let uri = match state.upstream.uri_for(path_and_query) {
        Ok(uri) => uri,
        Err(_) => return ProxyError::BadRequest.into_response(&request_id),
    };

    let operation = classify(&parts.method, parts.uri.path(), parts.uri.query());
    let call_log = CallLog {
        cut_at_shutdown: state.cut_at_shutdown.clone(),
        metrics: state.metrics.clone(),
        request_id: request_id.clone(),
        operation: operation_label(&operation.name),
        started_at,
    };
    // While the queue is full, a call waits here for room (bounded by
    // `queue.full_wait_ms`); under fail_closed nothing reaches upstream
    // unless its events have room.
    let admitted = match state.admission.try_admit() {
        Attempt::Done(admitted) => admitted,
        Attempt::Wait => state.admission.wait_for_room().await,
    };
    let reservation = match admitted {
        Ok(reservation) => reservation,
        Err(refusal) => {
            tracing::debug!(request_id = %request_id, reason = refusal.as_str(), "Call refused: the audit store cannot take its events.");
            call_log.failed(ProxyError::AuditStoreUnavailable, "refused");
            return ProxyError::AuditStoreUnavailable.into_response(&request_id);
        }
    };
    // Under fail_closed, the call's room grows with what its bodies'
    // captures hold.
    let growth = reservation.as_ref().map(Reservation::growth);
    let mut record = state.recorder.as_ref().map(|recorder| {
        let provider = match &state.provider_override {
            Some(provider) => Cow::Owned(provider.clone()),
            None => Cow::Borrowed(provider_for(state.upstream.host(), parts.uri.path())),
        };
        recorder.start(CallInfo {
            request_id: request_id.clone(),
            method: parts.method.clone(),
            path_and_query: path_and_query.to_owned(),
            operation,
            provider,
            client_ip,
            headers: RecordedHeaders::of(&parts.headers),
            started_at,
            reservation,
        })
    });
    // The path is a slice of hyper's read buffer too (see
    // `RecordedHeaders`);
    // everything needed from it has been copied above.
    parts.uri = http::Uri::default();

    // Set when the app's body breaks off, so an upstream call that fails
    // because of it is not blamed on upstream. A recorded call's capture
    // goes to its record, which keeps the flag; others keep one here.
    let own_failed_flag = record
        .is_none()
        .then(|| Arc::new(std::sync::atomic::AtomicBool::new(false)));
    let request_capture = match record.as_mut().and_then(CallRecord::request_sink) {
        Some(sink) => {
            let mut capture = Capture::into_sink(state.capture_cap, sink);
            capture.report_growth(growth.clone());
            capture
        }
        None => Capture::new(state.capture_cap, {
            let failed = own_failed_flag.clone();
            Box::new(move |captured: Captured| {
                if let (Some(failed), BodyEnd::Error(_)) = (failed, &captured.end) {
                    failed.store(true, std::sync::atomic::Ordering::Release);
                }
            })
        }),
    };
    let request_body_failed = |record: Option<&CallRecord>| {
        record.is_some_and(CallRecord::request_body_failed)
            || own_failed_flag
                .as_deref()
                .is_some_and(|f| f.load(std::sync::atomic::Ordering::Acquire))
    };
    let committed = record.as_mut().and_then(CallRecord::request_committed);
    // While a `block` policy watches requests, the whole body is read up
    // to the inspection limit before anything goes upstream; otherwise
    // only the capped prefix, and the rest streams through.
    let inspects_requests = state.policies.blocks(Direction::Request);
    let read_limit = if inspects_requests {
        state.max_inspected_bytes.max(state.capture_cap)
    } else {
        state.capture_cap
    };
    let (mut prefix, rest) =
        match read_prefix(body, request_capture, read_limit, committed.is_some()).await {
            Ok(b) => b,
            Err(()) => {
                // The app's body broke off while being read: nothing was sent.
                if let Some(r) = record.as_mut() {
                    r.fail(
                        Failure::ClientBody,
                        ProxyError::BadRequest.status(),
                        "request body could not be read from the client".into(),
                    );
                }
                call_log.failed(ProxyError::BadRequest, "client_aborted");
                return ProxyError::BadRequest.into_response(&request_id);
            }
        };

    let mut headers = forwardable(parts.headers);
    // Sent below if request policies parse the body, dropped otherwise:
    // the record waits for one or the other.
    let mut prescan_sender = record.as_mut().and_then(CallRecord::prescan_sender);
    if inspects_requests && rest.is_some() {
        return refuse_uninspectable(
            record.as_mut(),
            &call_log,
            &request_id,
            ProxyError::RequestTooLargeToInspect,
        );
    }
    // Without request `block` policies, `redact_upstream` ones see the
    // whole body only when it fit under the cap; a longer one streams on
    // unchanged (its record says truncated).
    if rest.is_none() {
        let (verdict, prescan) = apply_request_policies(
            &state.policies,
            &headers,
            &prefix,
            state.max_inspected_bytes,
            prescan_sender.is_some().then_some(state.capture_cap),
        );
        if let (Some(tx), Some(prescan)) = (prescan_sender.take(), prescan) {
            tx.send(prescan);
        }
        match verdict {
            RequestVerdict::Forward => {}
            RequestVerdict::Rewritten(body) => {
                headers.remove(header::CONTENT_ENCODING);
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
                prefix = body;
            }
            RequestVerdict::Block(verdict) => {
                let response = respond::policy_violation(&request_id, &verdict);
                if let Some(r) = record.as_mut() {
                    r.blocked(response.status(), verdict.policy_name.to_string());
                }
                call_log.end(response.status().as_u16(), "blocked", Instant::now());
                return response;
            }
            RequestVerdict::Refuse(error) => {
                return refuse_uninspectable(record.as_mut(), &call_log, &request_id, error);
            }
        }
    }
    drop(prescan_sender);
    if let Some(committed) = committed {
        // Strict durability: the REQUEST is on disk before the call leaves.
        // A store that keeps failing holds the commit in its retries; the
        // call is refused rather than held.
        let stored = tokio::time::timeout(STRICT_COMMIT_TIMEOUT, committed).await;
        if !matches!(stored, Ok(Ok(Ok(())))) {
            if let Some(r) = record.as_mut() {
                r.refused(ProxyError::AuditStoreUnavailable.status());
            }
            call_log.failed(ProxyError::AuditStoreUnavailable, "refused");
            return ProxyError::AuditStoreUnavailable.into_response(&request_id);
        }
    }
    if state.policies.blocks(Direction::Response) {
        // A compressed answer could not be inspected as it streams.
        headers.remove(header::ACCEPT_ENCODING);
    }
    let mut upstream_req = Request::new(Box::pin(PrefixedBody::new(prefix, rest)));
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = headers;
    match &state.upstream_host {
        // Shared bytes: cloning it copies nothing.
        Some(host) => upstream_req
            .headers_mut()
            .insert(header::HOST, host.clone()),
        None => upstream_req.headers_mut().remove(header::HOST),
    };

    let prepared_in = started_at.elapsed();
    let sent =
        tokio::time::timeout(state.upstream_timeout, state.client.request(upstream_req)).await;
    let response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(_)) if request_body_failed(record.as_ref()) => {
            // The app's body broke off while streaming on; the record reads
            // the same from the request capture.
            let e = ProxyError::BadRequest;
            if let Some(r) = record.as_mut() {
                r.fail(
                    Failure::ClientBody,
                    e.status(),
                    "request body broke off while being forwarded".into(),
                );
            }
            call_log.failed(e, "client_aborted");
            return e.into_response(&request_id);
        }
        Ok(Err(error)) => {
            let detail = error_chain(&error);
            tracing::warn!(request_id = %request_id, error = %detail, "Upstream request failed.");
            let e = ProxyError::UpstreamUnreachable;
            if let Some(r) = record.as_mut() {
                r.fail(Failure::Unreachable, e.status(), detail);
            }
            call_log.failed(e, "upstream_error");
            return e.into_response(&request_id);
        }
        Err(_) => {
            tracing::warn!(request_id = %request_id, "Upstream response headers timed out.");
            let e = ProxyError::UpstreamTimeout;
            if let Some(r) = record.as_mut() {
                r.fail(
                    Failure::Timeout,
                    e.status(),
                    format!(
                        "no response headers within {} s",
                        state.upstream_timeout.as_secs_f64()
                    ),
                );
            }
            call_log.failed(e, "timeout");
            return e.into_response(&request_id);
        }
    };
    let headers_at = Instant::now();
    let (mut parts, incoming) = response.into_parts();
    let response_sender = record.as_mut().and_then(CallRecord::response_sender);
    let answer_started = record.as_mut().and_then(CallRecord::answer_started);
    let status = parts.status;
    let upstream_headers = response_sender
        .as_ref()
        .map(|_| RecordedHeaders::of(&parts.headers));
    let guard_responses = state.policies.blocks(Direction::Response) && state.capture_cap > 0;
    // Set by a response policy that replaced or cut the answer, before the
    // capture completes, so the record and the log both see it; only
    // response `block` policies set it.
    let blocked_by: Option<Arc<OnceLock<Verdict>>> = guard_responses.then(Arc::default);
    let mut response_capture = {
        let blocked_by = blocked_by.clone();
        Capture::new(
            state.capture_cap,
            Box::new(move |body| {
                let blocked_by = blocked_by
                    .as_deref()
                    .and_then(OnceLock::get)
                    .cloned()
                    .map(Box::new);
                call_log.finished(status, &body, headers_at, blocked_by.is_some());
                if let (Some(tx), Some(headers)) = (response_sender, upstream_headers) {
                    tx.send(ResponseOutcome::Upstream {
                        status,
                        headers,
                        headers_at,
                        body,
                        blocked_by,
                    });
                }
            }),
        )
    };
    response_capture.signal_first_byte(answer_started);
    response_capture.report_growth(growth);
    let is_sse = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim_start().starts_with("text/event-stream"));
    let encoding = parts
        .headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    parts.headers = forwardable(parts.headers);
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        parts.headers.insert(REQUEST_ID_HEADER, v);
    }
    let incoming = IdleTimeoutBody::new(incoming, state.stream_idle_timeout);
    let encoded = is_encoded(encoding.as_deref());
    let on_block = |blocked_by: Option<Arc<OnceLock<Verdict>>>| -> OnBlock {
        Box::new(move |verdict: Verdict| {
            if let Some(blocked_by) = blocked_by {
                let _ = blocked_by.set(verdict);
            }
        })
    };
    let body: ProxyBody = if !guard_responses {
        // Boxed once, with its capture.
        TeeBody::new(incoming, response_capture).boxed_unsync()
    } else {
        let mut incoming = Box::pin(incoming);
        if is_sse && !encoded {
            TeeBody::new(
                StreamGuard::new(incoming, state.policies.clone(), on_block(blocked_by)),
                response_capture,
            )
            .boxed_unsync()
        } else if let Some(coding) = encoding
            .as_deref()
            .filter(|e| is_sse && streams_decodable(e))
        {
            // A compressed event stream: inspected through its decoded text,
            // forwarded as sent.
            TeeBody::new(
                EncodedStreamGuard::new(
                    incoming,
                    coding,
                    state.policies.clone(),
                    on_block(blocked_by),
                ),
                response_capture,
            )
            .boxed_unsync()
        } else {
            // Not a plain event stream: sniff the first bytes, for a stream
            // sent without its content type.
            let limit = state.max_inspected_bytes;
            let sniff = if encoded || is_sse { 0 } else { SNIFF_BYTES };
            let (prefix, ended) = match read_raw(&mut incoming, sniff).await {
                Ok(read) => read,
                Err(error) => {
                    response_capture.finish(BodyEnd::Error(error));
                    return ProxyError::UpstreamUnreachable.into_response(&request_id);
                }
            };
            if sniff > 0 && looks_like_sse(&prefix) {
                TeeBody::new(
                    StreamGuard::new(
                        PrefixedBody::new(prefix, (!ended).then_some(incoming)),
                        state.policies.clone(),
                        on_block(blocked_by),
                    ),
                    response_capture,
                )
                .boxed_unsync()
            } else {
                // A whole answer can be replaced only if it is held until
                // checked: read it up to the inspection limit.
                let (body, complete) = if ended {
                    (prefix, true)
                } else {
                    match read_more(&mut incoming, prefix, limit).await {
                        Ok(read) => read,
                        Err(error) => {
                            response_capture.finish(BodyEnd::Error(error));
                            return ProxyError::UpstreamUnreachable.into_response(&request_id);
                        }
                    }
                };
                response_capture.observe(&body);
                let check = check_answer(
                    &state.policies,
                    encoding.as_deref(),
                    &body,
                    complete,
                    is_sse,
                    limit,
                );
                match check {
                    AnswerCheck::Forward => {
                        response_capture.finish(BodyEnd::Complete);
                        full(body)
                    }
                    AnswerCheck::Blocked(verdict) => {
                        if let Some(blocked_by) = &blocked_by {
                            let _ = blocked_by.set(verdict.clone());
                        }
                        response_capture.finish(BodyEnd::Complete);
                        return respond::policy_violation(&request_id, &verdict);
                    }
                    AnswerCheck::Refused(error) => {
                        let why = match error {
                            ProxyError::AnswerTooLarge => format!(
                                "answer refused uninspected: longer than \
                                 policy.max_inspected_bytes ({limit})"
                            ),
                            _ => "answer refused uninspected: its Content-Encoding could not be \
                                  decoded"
                                .to_owned(),
                        };
                        response_capture.finish(BodyEnd::Error(why));
                        return error.into_response(&request_id);
                    }
                }
            }
        }
    };
    state
        .metrics
        .added_latency
        .observe((prepared_in + headers_at.elapsed()).as_secs_f64());
    Response::from_parts(parts, body)
}

/// The call's line in the diagnostic log and its metrics, written once
/// when the call ends. Never holds a body, a header value or a credential.
struct CallLog {
    cut_at_shutdown: Arc<std::sync::atomic::AtomicBool>,
    metrics: Arc<Metrics>,
    request_id: Arc<str>,
    operation: Arc<str>,
    started_at: Instant,
}

// === impl CallLog ===

impl CallLog {
    fn finished(
        &self,
        status: http::StatusCode,
        body: &Captured,
        headers_at: Instant,
        blocked: bool,
    ) {
        let outcome = match &body.end {
            _ if blocked => "blocked",
            BodyEnd::Complete => "completed",
            BodyEnd::Error(e) if e == IDLE_TIMEOUT_MESSAGE => {
                self.upstream_error("stream_idle_timeout");
                "timeout"
            }
            BodyEnd::Error(_) => {
                self.upstream_error("stream_error");
                "upstream_error"
            }
            BodyEnd::Dropped
                if self
                    .cut_at_shutdown
                    .load(std::sync::atomic::Ordering::Acquire) =>
            {
                "shutdown"
            }
            // The app left after the stream's end had passed to it.
            BodyEnd::Dropped if body.saw_terminal_event() => "completed",
            BodyEnd::Dropped => "client_aborted",
        };
        let ttfb = body.first_byte_at.unwrap_or(headers_at) - self.started_at;
        self.metrics
            .ttfb
            .get_or_create(&OperationLabels {
                operation: self.operation.clone(),
            })
            .observe(ttfb.as_secs_f64());
        self.end(status.as_u16(), outcome, body.ended_at);
    }

    fn failed(&self, error: ProxyError, outcome: &'static str) {
        match error {
            ProxyError::UpstreamUnreachable => self.upstream_error("unreachable"),
            ProxyError::UpstreamTimeout => self.upstream_error("timeout"),
            _ => {}
        }
        self.end(error.status().as_u16(), outcome, Instant::now());
    }

    fn upstream_error(&self, kind: &str) {
        self.metrics
            .upstream_errors
            .get_or_create(&KindLabels { kind: kind.into() })
            .inc();
    }

    pub(super) fn end(&self, status: u16, outcome: &'static str, ended_at: Instant) {
        let latency = ended_at.saturating_duration_since(self.started_at);
        self.metrics
            .calls
            .get_or_create(&CallLabels {
                operation: self.operation.clone(),
                status,
                outcome,
            })
            .inc();
        self.metrics
            .call_duration
            .get_or_create(&OperationLabels {
                operation: self.operation.clone(),
            })
            .observe(latency.as_secs_f64());
        // The audit store already holds a record of every call; this line
        // is a second, opt-in copy for log pipelines. Formatting and writing
        // it costs about a tenth of the proxy's CPU per call, so it is a
        // debug line (`RUST_LOG=info,llm_audit_proxy::access=debug`).
        tracing::debug!(
            target: "llm_audit_proxy::access",
            request_id = %self.request_id,
            operation = %self.operation,
            status,
            outcome,
            latency_ms = latency.as_secs_f64() * 1e3,
            "Call finished."
        );
    }
}

/// Reads `body` into one buffer until it ends or holds `cap` bytes
/// (at most one frame more), then hands what was read to `capture`. Returns
/// the bytes and whether the body ended. The capture is left open: the caller
/// finishes it, or hands it on with the rest of the body.
async fn read_up_to<B>(
    body: &mut B,
    capture: &mut Capture,
    cap: usize,
) -> Result<(Bytes, bool), String>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut prefix = BytesMut::new();
    // The capture shares the prefix once it is read rather than copying
    // each frame as it comes.
    let done = |prefix: BytesMut, capture: &mut Capture| {
        let prefix = prefix.freeze();
        capture.observe_shared(&prefix);
        prefix
    };
    while prefix.len() < cap {
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    prefix.extend_from_slice(data);
                }
            }
            Some(Err(error)) => {
                done(prefix, capture);
                return Err(error.to_string());
            }
            None => return Ok((done(prefix, capture), true)),
        }
    }
    Ok((done(prefix, capture), body.is_end_stream()))
}

/// Reads `body` until it ends or holds at least `want` bytes (at least one
/// frame unless it ends first). Returns the bytes and whether it ended.
async fn read_raw<B>(body: &mut B, want: usize) -> Result<(Bytes, bool), String>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    read_more(body, Bytes::new(), want.max(1)).await
}

/// Reads on after `prefix` until `body` ends or `prefix` and what was read
/// hold more than `limit` bytes. Returns the bytes and whether it ended
/// within the limit.
async fn read_more<B>(body: &mut B, prefix: Bytes, limit: usize) -> Result<(Bytes, bool), String>
where
    B: http_body::Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    let mut out = BytesMut::from(prefix);
    loop {
        if out.len() > limit {
            return Ok((out.freeze(), false));
        }
        match body.frame().await {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    out.extend_from_slice(data);
                }
            }
            Some(Err(error)) => return Err(error.to_string()),
            None => return Ok((out.freeze(), true)),
        }
    }
}

/// Reads the request body up to the capture cap, so the whole of a typical
/// LLM request is known before it goes upstream; anything longer streams
/// on through the tee. With `capture_prefix_only` (strict durability, whose
/// REQUEST is committed before the body goes on), a longer body's capture
/// ends with the prefix, marked truncated.
async fn read_prefix(
    mut body: Incoming,
    mut capture: Capture,
    cap: usize,
    capture_prefix_only: bool,
) -> Result<(Bytes, Option<TeeBody<Incoming>>), ()> {
    match read_up_to(&mut body, &mut capture, cap).await {
        Ok((prefix, true)) => {
            capture.finish(BodyEnd::Complete);
            Ok((prefix, None))
        }
        Ok((prefix, false)) if capture_prefix_only => {
            capture.finish(BodyEnd::Complete);
            let rest = Capture::new(0, Box::new(|_| {}));
            Ok((prefix, Some(TeeBody::new(body, rest))))
        }
        Ok((prefix, false)) => Ok((prefix, Some(TeeBody::new(body, capture)))),
        Err(error) => {
            capture.finish(BodyEnd::Error(error));
            Err(())
        }
    }
}

/// What request policies decided about a whole request body.
enum RequestVerdict {
    Forward,
    /// `redact_upstream` policies replaced matches: send this instead.
    Rewritten(Bytes),
    Block(Verdict),
    /// A `block` policy watches requests and this body cannot be checked.
    Refuse(ProxyError),
}

/// Answers a call whose body request `block` policies cannot check, and
/// records it as blocked, `blocked_by` naming the reason (the error code).
fn refuse_uninspectable(
    record: Option<&mut CallRecord>,
    call_log: &CallLog,
    request_id: &str,
    error: ProxyError,
) -> Response<ProxyBody> {
    if let Some(r) = record {
        r.blocked(error.status(), error.code().to_owned());
    }
    call_log.end(error.status().as_u16(), "blocked", Instant::now());
    error.into_response(request_id)
}

/// Runs `block` and `redact_upstream` request policies over a complete
/// body. Only these hold the request back, and the block check searches
/// only the detectors that can decide it; everything else is found and
/// recorded after the fact, off the request path. A body parsed here is
/// handed to the record too, which then does not parse it again (nor
/// search its text, when the search here covered every detector and found
/// nothing).
///
/// While a `block` policy watches requests, a body that cannot be checked
/// is refused rather than forwarded: an encoding that cannot be decoded,
/// one that decodes past the inspection limit, and JSON (by type or by
/// shape) that does not parse, trailing bytes included. A UTF-8 BOM before
/// JSON is skipped. Other bodies are checked as what the record stores:
/// text as text, multipart forms by their text fields; binary uploads
/// (audio, images) hold no text to check.
fn apply_request_policies(
    policies: &PolicySet,
    headers: &HeaderMap,
    body: &Bytes,
    max_inspected_bytes: usize,
    record_cap: Option<usize>,
) -> (RequestVerdict, Option<RequestPrescan>) {
    // `Some(capture cap)` when the call is recorded.
    let for_record = record_cap.is_some();
    let blocks = policies.blocks(Direction::Request);
    if !(blocks || policies.redacts_upstream()) || body.is_empty() {
        return (RequestVerdict::Forward, None);
    }
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
    };
    let decoded = match decode_shared(header(header::CONTENT_ENCODING), body, max_inspected_bytes) {
        Ok(d) if !d.truncated => d.bytes,
        Ok(_) if blocks => {
            return (
                RequestVerdict::Refuse(ProxyError::RequestTooLargeToInspect),
                None,
            )
        }
        Err(_) if blocks => {
            return (
                RequestVerdict::Refuse(ProxyError::RequestEncodingNotInspectable),
                None,
            )
        }
        // Without block policies, such a body is forwarded as sent.
        _ => return (RequestVerdict::Forward, None),
    };
    let mut prescan = None;
    if blocks {
        let content_type = header(header::CONTENT_TYPE);
        let json = if decoded.starts_with(UTF8_BOM) {
            decoded.slice(UTF8_BOM.len()..)
        } else {
            decoded.clone()
        };
        // JSON is searched from a view of its text; the rare JSON the view
        // leaves to serde_json (see `JsonView::parse`) is parsed.
        let is_json = body_is_parsed_as_json(&json, content_type);
        let mut parsed = None;
        let (gate, findings) = match (is_json, JsonView::parse(&json)) {
            // A recorded JSON body is searched here with every detector,
            // once: its record takes the view and what was found instead of
            // reading and searching it again.
            (true, Some(view)) if for_record => {
                let (gate, findings) = policies.gate_request_view_for_record(&view);
                // The record can take the view only when its capture holds
                // this whole body; a longer one would only be kept waiting
                // for the record, with its nodes.
                let captured_whole =
                    record_cap.is_some_and(|cap| body.len() <= cap && decoded.len() <= cap);
                if captured_whole {
                    parsed = Some(ParsedBody {
                        nodes: view.into_nodes(),
                        text: json.clone(),
                    });
                }
                (gate, Some(findings))
            }
            (true, Some(view)) => (policies.gate_request_view(&view), None),
            (true, None) => match serde_json::from_slice::<serde_json::Value>(&json) {
                Ok(value) if for_record => {
                    let (gate, findings) = policies.gate_request_for_record(&value);
                    (gate, Some(findings))
                }
                Ok(value) => (policies.gate_request(&value), None),
                Err(_) => return (RequestVerdict::Refuse(ProxyError::RequestNotParsable), None),
            },
            (false, _) => (
                policies.gate_request(&body_to_value(&decoded, content_type, false)),
                None,
            ),
        };
        if let Some(verdict) = gate.blocking {
            return (RequestVerdict::Block(verdict), None);
        }
        prescan = Some(RequestPrescan {
            decoded_len: decoded.len(),
            text_clean: gate.text_clean,
            findings,
            parsed,
        });
    }
    let verdict = match policies.redact_upstream(&decoded) {
        Some(rewritten) => RequestVerdict::Rewritten(Bytes::from(rewritten.body)),
        None => RequestVerdict::Forward,
    };
    (verdict, prescan)
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// The error and its sources on one line (hyper's top-level messages alone
/// say little, e.g. "client error (Connect)").
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

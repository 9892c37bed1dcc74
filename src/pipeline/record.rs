//! One call's record: REQUEST, then ERROR if any, then RESPONSE.
//!
//! The proxy starts a record when a call arrives and hands it two
//! captures as they complete. All interpretation (decoding, SSE
//! reassembly, sanitising, summarising) happens off the request path: on
//! the low-priority builder thread ([`super::builder`]), or in the record's
//! own task when that thread is behind.
//! The REQUEST is offered once the request body is known and upstream's
//! answer has begun, failed or been awaited for 200 ms,
//! so a call whose response never ends still leaves its REQUEST.

use std::borrow::Cow;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

mod counters;
mod handoff;
mod metadata;

use http::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::builder::RecordBuilder;
use super::held::{Held, Holding, Offers};
use super::{Handle, SubmitError};
use crate::capture::body::{body_is_parsed_as_json, body_to_value};
use crate::capture::bounded::{bound_serialised, bound_text};
use crate::capture::decode::decode_borrowed;
use crate::capture::json_view::{JsonView, ViewNodes};
use crate::capture::operation::Operation;
use crate::capture::recorded_headers::RecordedHeaders;
use crate::capture::sanitize::Sanitizer;
use crate::capture::short_text::ShortText;
use crate::capture::sse;
use crate::capture::stored_body::StoredBody;
use crate::capture::summary::{request_model_and_stream, summarize_usage, Cleaned, Summary, Usage};
use crate::capture::tee::{BodyEnd, CaptureSink, Captured, FirstByteSignal};
use crate::event::{EventType, NewEvent};
use crate::policy::{compliance_event, BodyFindings, Direction, Scan, Verdict};
use crate::telemetry::metrics::Metrics;
use counters::RecordCounters;
pub use handoff::Sender;
use metadata::{
    metadata_of, ComplianceSummary, ErrorDetails, ErrorMetadata, RequestMetadata, ResponseMetadata,
    StoredHeaders,
};

/// Longest a REQUEST waits for upstream's answer to begin before it is
/// built anyway.
const REQUEST_RECORD_DELAY: Duration = Duration::from_millis(200);

/// How long the RESPONSE of a streamed answer waits after the stream has
/// ended before it is built (see `Recorder::record`).
const STREAMED_RESPONSE_RECORD_DELAY: Duration = Duration::from_millis(2);

/// Records waiting for the builder thread before the calls' own tasks
/// build them. Each holds its call's captured bodies, so the queue is short.
const RECORD_BUILDER_QUEUE: usize = 32;

/// Starts call records. Cheap to clone.
#[derive(Clone)]
pub struct Recorder {
    handle: Handle,
    sanitizer: Arc<Sanitizer>,
    tracker: TaskTracker,
    /// Most bytes a captured body may decode to: the capture cap, so a
    /// compression bomb stores no more than a plain body would.
    max_decoded_bytes: usize,
    /// Most bytes of JSON a stored `request_data` or `response_data` may
    /// take (see [`stored_body_limit`]).
    stored_body_limit: usize,
    metrics: Arc<Metrics>,
    counters: Arc<RecordCounters>,
    /// Record COMPLIANCE_CHECK events for passed policies.
    record_compliance_checks: bool,
    /// Set when shutdown cut the calls still running after the grace.
    cut_at_shutdown: Arc<AtomicBool>,
    /// Where the REQUEST and RESPONSE are built.
    builder: RecordBuilder,
    /// `audit.durability = "strict"`: each REQUEST is built at once and
    /// committed with an ack the proxy waits for before forwarding.
    commit_requests: bool,
    /// Whether and how long events that find no room in the queue wait
    /// for it (see [`super::held`]); `None` drops them at once.
    holding: Option<Holding>,
    /// Where a record built by a job nobody awaits waits for room.
    runtime: Option<tokio::runtime::Handle>,
}

/// What the proxy knows when a call arrives.
#[derive(Debug)]
pub struct CallInfo {
    /// Shared with the call's log line; copied into each event.
    pub request_id: Arc<str>,
    pub method: Method,
    /// Path and query as the app sent them.
    pub path_and_query: String,
    pub operation: Operation,
    /// Borrowed unless configured (`proxy.provider`).
    pub provider: Cow<'static, str>,
    pub client_ip: IpAddr,
    /// Copied for the record (see [`RecordedHeaders`]).
    pub headers: RecordedHeaders,
    pub started_at: Instant,
    /// Queue room held for this call's events under `fail_closed`,
    /// released once the record has offered them.
    pub reservation: Option<super::Reservation>,
}

/// Why no upstream response arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    Unreachable,
    Timeout,
    /// The app's request body broke off while it was being read (or
    /// streamed on), so there was nothing whole to send.
    ClientBody,
}

/// How the response side of a call ended.
#[derive(Debug)]
pub enum ResponseOutcome {
    /// Upstream answered; `body` is what passed to the app.
    Upstream {
        status: StatusCode,
        headers: RecordedHeaders,
        headers_at: Instant,
        body: Captured,
        /// The policy verdict that replaced or cut the response, if any.
        blocked_by: Option<Box<Verdict>>,
    },
    /// A request policy blocked the call; nothing was sent upstream.
    Blocked {
        status: StatusCode,
        policy: String,
        at: Instant,
    },
    /// Upstream did not answer; the app got the proxy's error `status`.
    Failed {
        failure: Failure,
        status: StatusCode,
        detail: String,
        at: Instant,
    },
    /// The app went away before upstream answered.
    ClientAborted { at: Instant },
    /// The proxy refused the call for the record's sake (strict durability
    /// could not commit the REQUEST); nothing was sent upstream.
    Refused { status: StatusCode, at: Instant },
}

/// The proxy's ends of one record.
pub struct CallRecord {
    request: Option<Sender<Captured>>,
    response: Option<Sender<ResponseOutcome>>,
    /// Never sent: dropped when the answer's first byte has gone to the
    /// app (see [`CallRecord::answer_started`]), or with the record when
    /// there is no answer to wait for; that is when the REQUEST is built.
    answer_started: Option<Sender<()>>,
    prescan: Option<Sender<RequestPrescan>>,
    flags: handoff::CallFlags,
    /// Answered once the REQUEST is committed (strict durability only).
    committed: Option<oneshot::Receiver<Result<(), SubmitError>>>,
}

/// What request policies learnt searching a whole request body on the
/// request path, so its record does not search it again (nor its text,
/// when that search covered every detector and found nothing).
#[derive(Debug)]
pub struct RequestPrescan {
    /// Length of the decoded body that was parsed, to tell it is the same
    /// body the record decodes.
    pub decoded_len: usize,
    /// The search on the request path covered every detector and none
    /// matched the body's text (see `PolicySet::gate_request`).
    pub text_clean: bool,
    /// What every detector found in the body on the request path, when it
    /// searched with all of them: the record redacts from it instead of
    /// searching again.
    pub findings: Option<BodyFindings>,
    /// The JSON view the search read, when it read one: the record reads
    /// the body from it instead of parsing the same text again.
    pub parsed: Option<ParsedBody>,
}

/// A request body's JSON text (decoded, without a BOM) and the nodes of
/// its view.
#[derive(Debug)]
pub struct ParsedBody {
    pub text: bytes::Bytes,
    pub nodes: ViewNodes,
}

/// What the request path learnt about a request body that its record
/// reuses.
#[derive(Debug, Default)]
enum Searched {
    /// Nothing: the record searches the body.
    #[default]
    No,
    /// No detector matched the body's text.
    TextClean,
    /// Every match of every detector.
    Found(BodyFindings),
}

/// A captured, decoded body: JSON to read from its text (an event stream's
/// folded answer among them), or a value.
enum Read<'c> {
    Json {
        bytes: Cow<'c, [u8]>,
        truncated: bool,
        /// As [`Interpreted::stream_complete`].
        stream_complete: bool,
    },
    Value(Interpreted),
}

/// A request body as its REQUEST stores it, with what was read from it.
struct CleanRequest {
    body: StoredBody,
    truncated: bool,
    /// Cut to the stored-body limit.
    cut: bool,
    scan: Scan,
    model: Option<ShortText>,
    stream: bool,
}

/// A response body as its RESPONSE stores it, with what was read from it.
struct CleanResponse {
    body: StoredBody,
    summary: Summary<Usage>,
    scan: Scan,
    truncated: bool,
    stream_complete: bool,
    cut: bool,
}

/// A captured body as the record reads it.
struct Interpreted {
    value: Value,
    /// Incomplete: capture or decoding hit a limit.
    truncated: bool,
    /// An event stream that reached its end (`[DONE]`, a terminal
    /// Responses API event, or every choice finished).
    stream_complete: bool,
}

/// The record task's ends of what the proxy fills in.
struct Captures {
    handoff: handoff::Receiver,
    /// Strict durability: told once the REQUEST is committed.
    committed: Option<oneshot::Sender<Result<(), SubmitError>>>,
}

/// What was learnt from the request that the RESPONSE needs too.
#[derive(Default)]
struct RequestFacts {
    model: Option<ShortText>,
    stream: bool,
    /// The operation as stored, once the REQUEST has cleaned it.
    operation: Option<String>,
}

// === impl Recorder ===

impl Recorder {
    pub fn new(
        handle: Handle,
        sanitizer: Arc<Sanitizer>,
        tracker: TaskTracker,
        capture_cap: usize,
        metrics: Arc<Metrics>,
        cut_at_shutdown: Arc<AtomicBool>,
        record_compliance_checks: bool,
    ) -> Self {
        Self {
            builder: RecordBuilder::start(RECORD_BUILDER_QUEUE, handle.stats().clone()),
            handle,
            sanitizer,
            tracker,
            metrics,
            counters: Arc::default(),
            cut_at_shutdown,
            record_compliance_checks,
            max_decoded_bytes: capture_cap,
            stored_body_limit: stored_body_limit(capture_cap),
            commit_requests: false,
            holding: None,
            runtime: tokio::runtime::Handle::try_current().ok(),
        }
    }

    /// Holds a record's events that find no room in the queue, as
    /// `holding` says, instead of dropping them at once.
    pub fn hold_offers(mut self, holding: Option<Holding>) -> Self {
        self.holding = holding;
        self
    }

    /// Under `audit.durability = "strict"`: every call's REQUEST is built
    /// as soon as its body is read and committed to the store, and
    /// [`CallRecord::request_committed`] says when.
    pub fn commit_requests_first(mut self, yes: bool) -> Self {
        self.commit_requests = yes;
        self
    }

    /// Starts the record of one call; its task waits for the captures.
    pub fn start(&self, info: CallInfo) -> CallRecord {
        let ends = handoff::ends();
        let (committed_tx, committed_rx) = if self.commit_requests {
            let (tx, rx) = oneshot::channel();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let this = self.clone();
        self.tracker.spawn(async move {
            this.record(
                info,
                Captures {
                    handoff: ends.receiver,
                    committed: committed_tx,
                },
            )
            .await
        });
        CallRecord {
            request: Some(ends.request),
            response: Some(ends.response),
            answer_started: Some(ends.answer_started),
            prescan: Some(ends.prescan),
            flags: ends.flags,
            committed: committed_rx,
        }
    }

    pub fn sanitizer(&self) -> &Arc<Sanitizer> {
        &self.sanitizer
    }

    async fn record(self, info: CallInfo, captures: Captures) {
        let Captures { handoff, committed } = captures;
        let request = handoff.request().await;
        // Why the request body broke off, if it did: then a failed
        // upstream call is the client's doing, not upstream's.
        let request_broke = request.as_ref().and_then(|c| match &c.end {
            BodyEnd::Error(e) => Some(e.clone()),
            _ => None,
        });
        // Building the REQUEST is CPU work the call does not wait for. Done
        // while a fast upstream is answering, it competes for the same
        // cores as the forwarding and shows up in the app's time to first
        // byte; so it waits until the answer's first byte has been passed
        // on, but no longer than REQUEST_RECORD_DELAY, so a slow call's
        // REQUEST is still on record while it runs.
        // (Under strict durability the call itself waits for the REQUEST.)
        if committed.is_none() {
            let _ = tokio::time::timeout(REQUEST_RECORD_DELAY, handoff.answer_started()).await;
        }
        // Sent or dropped by the proxy before the request goes upstream.
        let prescan = handoff.prescan().await;
        let strict = committed.is_some();
        // An answer of known length is complete when its first byte is
        // passed on, so most calls have ended by now: both records are then
        // built in one job, one hand-off to the builder thread and back
        // instead of two.
        let ended = if strict { None } else { handoff.try_response() };
        let ended = match ended {
            Some(outcome) if !outcome.was_streamed() => {
                let outcome = outcome.blaming_client_body(request_broke);
                let this = self.clone();
                // Nothing waits for this job, so nothing is woken when it
                // ends; the token keeps shutdown waiting for it.
                let running = self.tracker.token();
                self.builder.spawn(move || {
                    let mut offers = this.offers(&info);
                    let (event, facts, scan) = this.request_event(&info, request.as_ref(), prescan);
                    offers.offer(event);
                    this.offer_compliance(&info, &scan, &mut offers);
                    this.offer_response(&info, &facts, outcome, &mut offers);
                    if let Some(held) = offers.finish() {
                        this.offer_held_later(held);
                    }
                    drop(running);
                });
                return;
            }
            other => other,
        };
        // Shared by the REQUEST's job and the RESPONSE's.
        let info = Arc::new(info);
        let built = {
            let (this, info) = (self.clone(), info.clone());
            let job = move || {
                let mut offers = this.offers(&info);
                let (event, facts, scan) = this.request_event(&info, request.as_ref(), prescan);
                let to_commit = if strict {
                    Some(event)
                } else {
                    offers.offer(event);
                    None
                };
                this.offer_compliance(&info, &scan, &mut offers);
                (facts, to_commit, offers.finish())
            };
            // Under strict durability the call waits for this REQUEST.
            if strict {
                self.builder.run_now(job).await
            } else {
                self.builder.run(job).await
            }
        };
        let (facts, to_commit, held) = built.unwrap_or_default();
        if let (Some(committed), Some(event)) = (committed, to_commit) {
            let reservation = info.reservation.as_ref();
            // Boxed: only strict durability gets here, and the record's
            // task, alive as long as its call, should not carry this
            // future's size for every other call.
            let stored = match Box::pin(self.handle.submit_within(event, reservation)).await {
                Ok(_) | Err(SubmitError::BelowLevel | SubmitError::Disabled) => Ok(()),
                Err(error) => Err(error),
            };
            let _ = committed.send(stored);
        }
        // Here rather than on the builder thread, so the REQUEST's events
        // are queued before the RESPONSE's; after a strict commit, which
        // the call waits for.
        // Held events (the queue was full) are rare; boxed for the same
        // reason.
        if let Some(held) = held {
            Box::pin(held.offer()).await;
        }
        let outcome = match ended {
            Some(outcome) => outcome,
            None => handoff
                .response()
                .await
                .unwrap_or(ResponseOutcome::ClientAborted { at: Instant::now() }),
        }
        .blaming_client_body(request_broke);
        if outcome.was_streamed() {
            // A streamed answer's RESPONSE is the dearest record to build
            // (every chunk is parsed and folded), and a chat client sends
            // its next request a fraction of a millisecond after the stream
            // ends, often on the same connection. Built right then, the
            // record would sit in front of that request on the core; a
            // short wait lets the request reach upstream first.
            tokio::time::sleep(STREAMED_RESPONSE_RECORD_DELAY).await;
        }
        let this = self.clone();
        let held = self
            .builder
            .run(move || {
                let mut offers = this.offers(&info);
                this.offer_response(&info, &facts, outcome, &mut offers);
                offers.finish()
            })
            .await;
        if let Some(held) = held.flatten() {
            Box::pin(held.offer()).await;
        }
    }

    /// Where a job's events of `info`'s call are offered.
    fn offers<'a>(&'a self, info: &'a CallInfo) -> Offers<'a> {
        Offers::new(
            &self.handle,
            self.holding.as_ref(),
            info.reservation.as_ref(),
        )
    }

    /// Offers `held` on a task of its own, for a job nobody awaits.
    fn offer_held_later(&self, held: Held) {
        match &self.runtime {
            Some(runtime) => {
                self.tracker.spawn_on(held.offer(), runtime);
            }
            // Offered at once, as without holding.
            None => drop(held),
        }
    }

    /// Builds and offers the RESPONSE (after an ERROR event, when the call
    /// failed) and its compliance events.
    fn offer_response(
        &self,
        info: &CallInfo,
        facts: &RequestFacts,
        outcome: ResponseOutcome,
        offers: &mut Offers<'_>,
    ) {
        if let Some(error) = self.error_event(info, facts, &outcome) {
            offers.offer(error);
        }
        let (event, scan) = self.response_event(info, facts, outcome);
        offers.offer(event);
        self.offer_compliance(info, &scan, offers);
    }

    /// A COMPLIANCE_VIOLATION for each policy that found something; with
    /// `audit.record_compliance_checks`, one COMPLIANCE_CHECK listing the
    /// policies that passed. (Every REQUEST and RESPONSE already lists the
    /// policies checked, so passes cost no event by default: one event per
    /// policy per call would outrun the store.)
    fn offer_compliance(&self, info: &CallInfo, scan: &Scan, offers: &mut Offers<'_>) {
        let mut passed: Vec<&str> = Vec::new();
        let mut direction = None;
        for verdict in &scan.verdicts {
            direction = Some(verdict.direction);
            if verdict.passed {
                if self.record_compliance_checks {
                    passed.push(&verdict.policy_name);
                }
                continue;
            }
            self.counters
                .violation(&self.metrics, &verdict.policy_name, verdict.severity);
            offers.offer(compliance_event(verdict, &info.request_id));
        }
        if let (true, false, Some(direction)) =
            (self.record_compliance_checks, passed.is_empty(), direction)
        {
            offers.offer(
                NewEvent::new(
                    EventType::ComplianceCheck,
                    format!(
                        "{} polic{} passed ({}).",
                        passed.len(),
                        if passed.len() == 1 { "y" } else { "ies" },
                        direction.as_str()
                    ),
                )
                .with_request_id(&*info.request_id)
                .with_metadata(crate::policy::passed_check_metadata(&passed, direction)),
            );
        }
    }

    fn request_event(
        &self,
        info: &CallInfo,
        captured: Option<&Captured>,
        prescan: Option<RequestPrescan>,
    ) -> (NewEvent, RequestFacts, Scan) {
        let CleanRequest {
            body: data,
            truncated,
            cut,
            scan,
            model,
            stream,
        } = match captured {
            Some(c) => self.clean_request(&info.headers, c, prescan),
            None => self.clean_request_value(Value::Null, false, Searched::No, None, &info.headers),
        };
        let body_bytes = captured.map_or(0, |c| c.total_bytes);
        let model = model.or_else(|| {
            info.operation
                .azure_deployment
                .as_deref()
                .map(|d| self.stored_text(d, Direction::Request).into())
        });
        let path = self.stored_path(&info.path_and_query);
        let operation = self.stored_operation(info);
        let body_end = captured
            .map(|c| &c.end)
            .filter(|e| **e != BodyEnd::Complete)
            .map(end_label);
        let metadata = metadata_of(&RequestMetadata {
            api_version: info
                .operation
                .api_version
                .as_deref()
                .map(|v| self.stored_text(v, Direction::Request)),
            azure_deployment: info
                .operation
                .azure_deployment
                .as_deref()
                .map(|d| self.stored_text(d, Direction::Request)),
            body_bytes,
            body_complete: body_end.map(|_| false),
            body_end,
            client_ip: info.client_ip,
            compliance: ComplianceSummary::of(&scan),
            headers: StoredHeaders {
                headers: &info.headers,
                sanitizer: &self.sanitizer,
                direction: Direction::Request,
            },
            method: info.method.as_str(),
            model: model.as_deref(),
            operation: &operation,
            path: &path,
            provider: &info.provider,
            request_data: &data,
            stream,
            truncated: truncated || cut,
        });
        let event = NewEvent::new(
            EventType::Request,
            message_of(&[
                info.method.as_str(),
                " ",
                path.split('?').next().unwrap_or_default(),
                " (",
                &operation,
                ")",
            ]),
        )
        .with_request_id(&*info.request_id)
        .with_metadata(metadata);
        let facts = RequestFacts {
            model,
            stream,
            // Kept only when cleaning changed it: else the borrowed name
            // is as cheap to take again.
            operation: match operation {
                Cow::Owned(operation) => Some(operation),
                Cow::Borrowed(_) => None,
            },
        };
        (event, facts, scan)
    }

    fn error_event(
        &self,
        info: &CallInfo,
        facts: &RequestFacts,
        outcome: &ResponseOutcome,
    ) -> Option<NewEvent> {
        let (error_type, message, detail) = match outcome {
            ResponseOutcome::Failed {
                failure, detail, ..
            } => match failure {
                Failure::Unreachable => (
                    "upstream_unreachable",
                    "Upstream could not be reached",
                    detail.as_str(),
                ),
                Failure::Timeout => (
                    "upstream_timeout",
                    "Upstream sent no response headers in time",
                    detail.as_str(),
                ),
                Failure::ClientBody => (
                    "client_body_error",
                    "The client's request body broke off before its end",
                    detail.as_str(),
                ),
            },
            ResponseOutcome::Upstream { body, .. } => match &body.end {
                BodyEnd::Error(e) if is_idle_timeout(e) => (
                    "stream_idle_timeout",
                    "Upstream went silent in the middle of the response body",
                    e.as_str(),
                ),
                BodyEnd::Error(e) => (
                    "upstream_stream_error",
                    "Upstream's response body failed before its end",
                    e.as_str(),
                ),
                _ => return None,
            },
            ResponseOutcome::ClientAborted { .. }
            | ResponseOutcome::Blocked { .. }
            | ResponseOutcome::Refused { .. } => return None,
        };
        let operation = self.operation_of(info, facts);
        let metadata = metadata_of(&ErrorMetadata {
            details: ErrorDetails {
                message: self.sanitizer.redact_stored_text(detail, None),
                operation: &operation,
                provider: &info.provider,
            },
            error_type,
        });
        Some(
            NewEvent::new(EventType::Error, format!("{message} ({operation})"))
                .with_request_id(&*info.request_id)
                .with_metadata(metadata),
        )
    }

    fn response_event(
        &self,
        info: &CallInfo,
        facts: &RequestFacts,
        outcome: ResponseOutcome,
    ) -> (NewEvent, Scan) {
        let ms = |at: Instant| at.saturating_duration_since(info.started_at).as_secs_f64() * 1e3;
        let operation = self.operation_of(info, facts);
        let mut scan = Scan::default();
        // The RESPONSE of a call upstream never answered.
        let no_answer = |status: Option<StatusCode>,
                         outcome: &str,
                         blocked_by: Option<&str>,
                         at: Instant,
                         scan: &Scan| {
            metadata_of(&ResponseMetadata {
                blocked_by,
                body_bytes: 0,
                compliance: ComplianceSummary::of(scan),
                finish_reason: None,
                headers: None,
                latency_ms: round_ms(ms(at)),
                model: facts.model.as_deref(),
                operation: &operation,
                outcome,
                provider: &info.provider,
                response_data: None,
                status: status.map(|s| s.as_u16()),
                stream: facts.stream,
                truncated: false,
                ttfb_ms: None,
                upstream_request_id: None,
                usage: None,
            })
        };
        let (status, outcome_label, metadata) = match outcome {
            ResponseOutcome::Upstream {
                status,
                headers,
                headers_at,
                body,
                blocked_by,
            } => {
                let is_sse = sse::is_event_stream(header_str(&headers, "content-type"));
                let CleanResponse {
                    body: data,
                    summary,
                    scan: found,
                    truncated,
                    stream_complete,
                    cut,
                } = self.clean_response(&headers, &body, is_sse, &info.operation.name);
                scan = found;
                self.count_tokens(
                    summary.model.as_deref().or(facts.model.as_deref()),
                    summary.usage.as_ref(),
                );
                if let Some(verdict) = &blocked_by {
                    // A cut stream's record lacks the text that tripped the
                    // policy; the verdict itself is the evidence.
                    let seen = scan
                        .verdicts
                        .iter_mut()
                        .find(|v| v.policy_name == verdict.policy_name);
                    match seen {
                        Some(v) if !v.passed => {}
                        Some(v) => *v = (**verdict).clone(),
                        None => scan.verdicts.push((**verdict).clone()),
                    }
                }
                let outcome_label = match &body.end {
                    _ if blocked_by.is_some() => "blocked",
                    BodyEnd::Complete => "completed",
                    // The app had the whole answer (`[DONE]` or a terminal
                    // Responses API event passed) and closed before the
                    // body's formal end, as SDKs may: nothing was missed.
                    BodyEnd::Dropped if stream_complete => "completed",
                    BodyEnd::Error(e) if is_idle_timeout(e) => "timeout",
                    BodyEnd::Error(_) => "upstream_error",
                    BodyEnd::Dropped if self.was_cut() => "shutdown",
                    BodyEnd::Dropped => "client_aborted",
                };
                let model = summary.model.as_deref().map(|m| {
                    self.sanitizer
                        .redact_stored_text(m, Some(Direction::Response))
                });
                let upstream_request_id = header_str(&headers, "x-request-id").map(|id| {
                    self.sanitizer
                        .redact_stored_text(id, Some(Direction::Response))
                });
                let metadata = metadata_of(&ResponseMetadata {
                    blocked_by: blocked_by.as_deref().map(|v| v.policy_name.as_str()),
                    body_bytes: body.total_bytes,
                    compliance: ComplianceSummary::of(&scan),
                    finish_reason: summary.finish_reason.as_deref(),
                    headers: Some(StoredHeaders {
                        headers: &headers,
                        sanitizer: &self.sanitizer,
                        direction: Direction::Response,
                    }),
                    latency_ms: round_ms(ms(body.ended_at)),
                    model: model.as_deref().or(facts.model.as_deref()),
                    operation: &operation,
                    outcome: outcome_label,
                    provider: &info.provider,
                    response_data: Some(&data),
                    status: Some(status.as_u16()),
                    stream: facts.stream || is_sse,
                    truncated: truncated || cut,
                    ttfb_ms: Some(round_ms(ms(body.first_byte_at.unwrap_or(headers_at)))),
                    upstream_request_id: upstream_request_id.as_deref(),
                    usage: summary.usage.as_ref(),
                });
                (Some(status), outcome_label, metadata)
            }
            ResponseOutcome::Failed {
                failure,
                status,
                at,
                ..
            } => {
                let outcome_label = match failure {
                    Failure::Unreachable => "upstream_error",
                    Failure::Timeout => "timeout",
                    Failure::ClientBody => "client_aborted",
                };
                let metadata = no_answer(Some(status), outcome_label, None, at, &scan);
                (Some(status), outcome_label, metadata)
            }
            ResponseOutcome::Blocked { status, policy, at } => {
                let metadata = no_answer(Some(status), "blocked", Some(&policy), at, &scan);
                (Some(status), "blocked", metadata)
            }
            ResponseOutcome::Refused { status, at } => {
                let metadata = no_answer(Some(status), "refused", None, at, &scan);
                (Some(status), "refused", metadata)
            }
            ResponseOutcome::ClientAborted { at } => {
                let outcome_label = if self.was_cut() {
                    "shutdown"
                } else {
                    "client_aborted"
                };
                let metadata = no_answer(None, outcome_label, None, at, &scan);
                (None, outcome_label, metadata)
            }
        };
        let mut code = itoa::Buffer::new();
        let message = match status {
            Some(status) => message_of(&[
                &operation,
                " ",
                code.format(status.as_u16()),
                " (",
                outcome_label,
                ")",
            ]),
            None => message_of(&[&operation, " no status (", outcome_label, ")"]),
        };
        let event = NewEvent::new(EventType::Response, message)
            .with_request_id(&*info.request_id)
            .with_metadata(metadata);
        (event, scan)
    }

    /// The operation's name as stored: for an unknown path it is
    /// `METHOD /path`, cleaned like the path.
    fn stored_operation<'a>(&self, info: &'a CallInfo) -> Cow<'a, str> {
        self.stored_path(&info.operation.name)
    }

    fn stored_path<'a>(&self, text: &'a str) -> Cow<'a, str> {
        metadata::stored_path_of(&self.sanitizer, text)
    }

    /// [`Self::stored_operation`], as the REQUEST stored it when it was
    /// cleaned there.
    fn operation_of<'a>(&self, info: &'a CallInfo, facts: &'a RequestFacts) -> Cow<'a, str> {
        match &facts.operation {
            Some(operation) => Cow::Borrowed(operation),
            None => self.stored_operation(info),
        }
    }

    /// A stored string outside the bodies, cleaned like them.
    fn stored_text(&self, text: &str, direction: Direction) -> String {
        self.sanitizer
            .redact_stored_text(text, Some(direction))
            .into_owned()
    }

    /// Keeps a stored body value within the stored-body limit (see
    /// [`Self::measures`]).
    fn bound_body(
        &self,
        value: Value,
        captured: Option<&Captured>,
        headers: &RecordedHeaders,
    ) -> (Value, bool) {
        if !self.measures(captured, headers) {
            return (value, false);
        }
        bound_serialised(value, self.stored_body_limit)
    }

    /// As [`Self::bound_body`] for a body written as JSON text.
    fn bound_json(
        &self,
        text: String,
        captured: Option<&Captured>,
        headers: &RecordedHeaders,
    ) -> (String, bool) {
        if !self.measures(captured, headers) {
            return (text, false);
        }
        bound_text(text, self.stored_body_limit)
    }

    /// Whether a stored body could reach the stored-body limit. Measuring
    /// a value means serialising it; a body whose decoded size is under an
    /// eighth of the limit cannot reach it (escaping writes at most six
    /// bytes per byte, and redaction markers and reformatted numbers grow
    /// less), so it is kept without measuring.
    fn measures(&self, captured: Option<&Captured>, headers: &RecordedHeaders) -> bool {
        let encoded = header_str(headers, "content-encoding")
            .is_some_and(|e| !e.trim().is_empty() && !e.trim().eq_ignore_ascii_case("identity"));
        let decoded_at_most = match captured {
            None => 0,
            Some(_) if encoded => self.max_decoded_bytes,
            Some(c) => c.bytes.len(),
        };
        decoded_at_most.saturating_mul(8) > self.stored_body_limit
    }

    fn was_cut(&self) -> bool {
        self.cut_at_shutdown.load(Ordering::Acquire)
    }

    fn count_tokens(&self, model: Option<&str>, usage: Option<&Usage>) {
        let Some(usage) = usage else { return };
        self.counters.add_tokens(
            &self.metrics,
            model.unwrap_or("unknown"),
            [usage.prompt_tokens, usage.completion_tokens],
        );
    }

    /// Reads, cleans and bounds a request body, taking what the proxy's
    /// search of it learnt when it searched these very bytes.
    fn clean_request(
        &self,
        headers: &RecordedHeaders,
        captured: &Captured,
        prescan: Option<RequestPrescan>,
    ) -> CleanRequest {
        let content_type = header_str(headers, "content-type");
        let (bytes, truncated) = match self.read(headers, captured, false, "") {
            Read::Json {
                bytes, truncated, ..
            } => (bytes, truncated),
            Read::Value(interpreted) => {
                return self.clean_request_value(
                    interpreted.value,
                    interpreted.truncated,
                    Searched::No,
                    Some(captured),
                    headers,
                )
            }
        };
        // The proxy parsed the body without a leading BOM, and its search
        // holds for exactly the bytes it decoded.
        let prescan =
            prescan.filter(|p| !truncated && !captured.truncated && bytes.len() == p.decoded_len);
        let json = match &prescan {
            Some(_) => bytes.strip_prefix(UTF8_BOM).unwrap_or(&bytes),
            None => &bytes[..],
        };
        let (text_clean, findings, parsed) = match prescan {
            Some(p) => (p.text_clean && p.findings.is_none(), p.findings, p.parsed),
            None => (false, None, None),
        };
        let searched = |findings: Option<BodyFindings>| match findings {
            Some(findings) => Searched::Found(findings),
            None if text_clean => Searched::TextClean,
            None => Searched::No,
        };
        // The view the request path read these very bytes into, else a
        // new one.
        let parsed_text = parsed.as_ref().map(|p| p.text.clone());
        let view = match (&parsed_text, parsed) {
            (Some(text), Some(parsed)) => JsonView::with_nodes(text, parsed.nodes),
            _ => None,
        };
        let Some(view) = view.or_else(|| JsonView::parse(json)) else {
            // JSON the view leaves to serde_json.
            let value = match serde_json::from_slice(json) {
                Ok(value) => value,
                Err(_) => {
                    let value = body_to_value(&bytes, content_type, truncated);
                    return self.clean_request_value(
                        value,
                        truncated,
                        Searched::No,
                        Some(captured),
                        headers,
                    );
                }
            };
            return self.clean_request_value(
                value,
                truncated,
                searched(findings),
                Some(captured),
                headers,
            );
        };
        let policies = self.sanitizer.policies();
        let Some(inspection) =
            policies.inspect_view(&view, Direction::Request, text_clean, findings)
        else {
            // A key to rename: cleaned as a value, searched again.
            let value = serde_json::from_slice(json).unwrap_or(Value::Null);
            return self.clean_request_value(
                value,
                truncated,
                Searched::No,
                Some(captured),
                headers,
            );
        };
        // Read from the cleaned body, so a key sent as the model name is
        // not stored beside its marker.
        let (model, stream) = request_model_and_stream(Cleaned {
            at: view.root(),
            replaced: &inspection.replaced,
        });
        let (text, cut) =
            self.bound_json(view.write(&inspection.replaced), Some(captured), headers);
        CleanRequest {
            body: StoredBody::json(text),
            truncated,
            cut,
            scan: inspection.scan,
            model,
            stream,
        }
    }

    /// As [`Self::clean_request`] for a body read as a value.
    fn clean_request_value(
        &self,
        mut data: Value,
        truncated: bool,
        searched: Searched,
        captured: Option<&Captured>,
        headers: &RecordedHeaders,
    ) -> CleanRequest {
        let policies = self.sanitizer.policies();
        let scan = match searched {
            Searched::Found(findings) => policies.inspect_found(&mut data, findings),
            Searched::TextClean => policies.inspect_after_scan(&mut data, Direction::Request, true),
            Searched::No => policies.inspect_after_scan(&mut data, Direction::Request, false),
        }
        .scan;
        // Read from the cleaned body, as above.
        let (model, stream) = request_model_and_stream(&data);
        let (data, cut) = self.bound_body(data, captured, headers);
        CleanRequest {
            body: StoredBody::Value(data),
            truncated,
            cut,
            scan,
            model,
            stream,
        }
    }

    /// Reads, summarises, cleans and bounds a response body.
    fn clean_response(
        &self,
        headers: &RecordedHeaders,
        captured: &Captured,
        is_sse: bool,
        operation: &str,
    ) -> CleanResponse {
        let policies = self.sanitizer.policies();
        let read = self.read(headers, captured, is_sse, operation);
        if let Read::Json {
            bytes,
            truncated,
            stream_complete,
        } = &read
        {
            if let Some(view) = JsonView::parse(bytes) {
                if let Some(inspection) =
                    policies.inspect_view(&view, Direction::Response, false, None)
                {
                    let summary = summarize_usage(
                        operation,
                        Cleaned {
                            at: view.root(),
                            replaced: &[],
                        },
                    );
                    let (text, cut) =
                        self.bound_json(view.write(&inspection.replaced), Some(captured), headers);
                    return CleanResponse {
                        body: StoredBody::json(text),
                        summary,
                        scan: inspection.scan,
                        truncated: *truncated,
                        stream_complete: *stream_complete,
                        cut,
                    };
                }
            }
        }
        let Interpreted {
            value: mut data,
            truncated,
            stream_complete,
        } = match read {
            Read::Value(interpreted) => interpreted,
            Read::Json {
                bytes,
                truncated,
                stream_complete,
            } => Interpreted {
                value: body_to_value(&bytes, header_str(headers, "content-type"), truncated),
                truncated,
                stream_complete,
            },
        };
        let summary = summarize_usage(operation, &data);
        let scan = policies.inspect(&mut data, Direction::Response).scan;
        let (data, cut) = self.bound_body(data, Some(captured), headers);
        CleanResponse {
            body: StoredBody::Value(data),
            summary,
            scan,
            truncated,
            stream_complete,
            cut,
        }
    }

    /// Decodes a captured body: JSON (by type or shape) is left as text to
    /// read, anything else is interpreted as [`Self::interpret`] does.
    fn read<'c>(
        &self,
        headers: &RecordedHeaders,
        captured: &'c Captured,
        is_sse: bool,
        operation: &str,
    ) -> Read<'c> {
        let content_type = header_str(headers, "content-type");
        if !is_sse {
            let encoding = header_str(headers, "content-encoding");
            if let Ok(d) = decode_borrowed(encoding, &captured.bytes, self.max_decoded_bytes) {
                let truncated = d.truncated || captured.truncated;
                if body_is_parsed_as_json(&d.bytes, content_type) {
                    return Read::Json {
                        bytes: d.bytes,
                        truncated,
                        stream_complete: false,
                    };
                }
                return Read::Value(Interpreted {
                    value: body_to_value(&d.bytes, content_type, truncated),
                    truncated,
                    stream_complete: false,
                });
            }
        }
        self.interpret(headers, captured, is_sse, operation)
    }

    /// Decodes and parses a captured body; an event stream is folded into
    /// its answer's JSON text.
    fn interpret<'c>(
        &self,
        headers: &RecordedHeaders,
        captured: &'c Captured,
        is_sse: bool,
        operation: &str,
    ) -> Read<'c> {
        let encoding = header_str(headers, "content-encoding");
        let content_type = header_str(headers, "content-type");
        let (bytes, mut truncated) = match decode_borrowed(
            encoding,
            &captured.bytes,
            self.max_decoded_bytes,
        ) {
            Ok(d) => (d.bytes, d.truncated),
            Err(_) => {
                // Unknown encoding: describe the body rather than store
                // bytes that cannot be read.
                return Read::Value(Interpreted {
                    value: json!({"undecodable": true, "content_encoding": encoding, "bytes": captured.bytes.len()}),
                    truncated: captured.truncated,
                    stream_complete: false,
                });
            }
        };
        truncated |= captured.truncated;
        if is_sse {
            let events = sse::parse_events(&bytes);
            // Gateways with unusual paths still stream chat chunks; fold
            // them as chat completions rather than keeping raw events.
            let operation = match events.first() {
                Some(first)
                    if !operation.contains('.')
                        && first.data.contains("\"chat.completion.chunk\"") =>
                {
                    "chat.create"
                }
                _ => operation,
            };
            if let Some(folded) = sse::reassemble_text(operation, &events) {
                return Read::Json {
                    bytes: Cow::Owned(folded.json.into_bytes()),
                    truncated,
                    // A stream longer than the capture: the tee watched
                    // the rest for its end.
                    stream_complete: folded.complete || captured.terminal_past_cap,
                };
            }
            // An event the view leaves to serde_json.
            let reassembled = sse::reassemble(operation, &events);
            let mut value = reassembled.response;
            if let (Some(error), Value::Object(obj)) = (reassembled.error, &mut value) {
                obj.insert("stream_error".into(), error);
            }
            return Read::Value(Interpreted {
                value,
                truncated,
                stream_complete: reassembled.complete || captured.terminal_past_cap,
            });
        }
        Read::Value(Interpreted {
            value: body_to_value(&bytes, content_type, truncated),
            truncated,
            stream_complete: false,
        })
    }
}

// === impl ResponseOutcome ===

impl ResponseOutcome {
    /// An upstream call that failed because the app's request body broke
    /// off (`request_broke` holds why) is the client's failure, and the
    /// body's own error is the detail.
    fn blaming_client_body(self, request_broke: Option<String>) -> Self {
        match (self, request_broke) {
            (
                Self::Failed {
                    failure: Failure::Unreachable | Failure::ClientBody,
                    status,
                    at,
                    ..
                },
                Some(detail),
            ) => Self::Failed {
                failure: Failure::ClientBody,
                status,
                detail,
                at,
            },
            (outcome, _) => outcome,
        }
    }

    /// Whether upstream answered with an event stream.
    fn was_streamed(&self) -> bool {
        match self {
            Self::Upstream { headers, .. } => {
                sse::is_event_stream(header_str(headers, "content-type"))
            }
            _ => false,
        }
    }
}

// === impl CallRecord ===

impl CallRecord {
    /// Hands over the request body's capture, used once: the capture goes
    /// to the record through this sink, without a callback of its own.
    pub fn request_sink(&mut self) -> Option<Arc<dyn CaptureSink>> {
        self.request.take().map(Sender::into_capture_sink)
    }

    /// Whether the request body broke off, as its capture (taken through
    /// [`Self::request_sink`]) ended.
    pub fn request_body_failed(&self) -> bool {
        self.flags.request_body_failed()
    }

    /// The signal that the answer has begun, for the response capture to
    /// drop once the first byte has passed; used once. Until it is taken,
    /// the record itself holds it.
    pub fn answer_started(&mut self) -> Option<FirstByteSignal> {
        self.answer_started
            .take()
            .map(Sender::into_first_byte_signal)
    }

    /// Strict durability: resolves once the REQUEST is committed (or could
    /// not be); `None` in buffered mode. The REQUEST is built only once the
    /// request body has been read and the prescan sender sent or dropped.
    pub fn request_committed(&mut self) -> Option<oneshot::Receiver<Result<(), SubmitError>>> {
        self.committed.take()
    }

    /// Hands over the request body as request policies saw it; used once.
    /// Dropping it unsent tells the record to read the capture itself.
    pub fn prescan_sender(&mut self) -> Option<Sender<RequestPrescan>> {
        self.prescan.take()
    }

    /// Hands over the response side's end; used once.
    pub fn response_sender(&mut self) -> Option<Sender<ResponseOutcome>> {
        self.response.take()
    }

    /// Records that a request policy stopped the call.
    pub fn blocked(&mut self, status: StatusCode, policy: String) {
        if let Some(tx) = self.response.take() {
            tx.send(ResponseOutcome::Blocked {
                status,
                policy,
                at: Instant::now(),
            });
        }
    }

    /// Records that the proxy refused the call before forwarding it.
    pub fn refused(&mut self, status: StatusCode) {
        if let Some(tx) = self.response.take() {
            tx.send(ResponseOutcome::Refused {
                status,
                at: Instant::now(),
            });
        }
    }

    /// Records that upstream did not answer.
    pub fn fail(&mut self, failure: Failure, status: StatusCode, detail: String) {
        if let Some(tx) = self.response.take() {
            tx.send(ResponseOutcome::Failed {
                failure,
                status,
                detail,
                at: Instant::now(),
            });
        }
    }
}

/// Most bytes of JSON a stored body value may take: twice the capture cap
/// (ordinary text grows at most twofold when escaped; control-heavy bodies
/// are summarised instead), and never under 64 KiB so a small cap still
/// leaves room for redaction markers.
pub fn stored_body_limit(capture_cap: usize) -> usize {
    capture_cap.saturating_mul(2).max(64 * 1024)
}

const UTF8_BOM: &[u8] = b"\xEF\xBB\xBF";

/// An event's message from its pieces, in one allocation of its exact
/// length (`format!` grows its string as it writes).
fn message_of(pieces: &[&str]) -> String {
    let mut message = String::with_capacity(pieces.iter().map(|p| p.len()).sum());
    for piece in pieces {
        message.push_str(piece);
    }
    message
}

fn header_str<'a>(headers: &'a RecordedHeaders, name: &str) -> Option<&'a str> {
    headers.get_str(name)
}

fn is_idle_timeout(message: &str) -> bool {
    message == crate::capture::tee::IDLE_TIMEOUT_MESSAGE
}

fn end_label(end: &BodyEnd) -> &'static str {
    match end {
        BodyEnd::Complete => "complete",
        BodyEnd::Error(_) => "error",
        BodyEnd::Dropped => "dropped",
    }
}

fn round_ms(ms: f64) -> f64 {
    (ms * 1000.0).round() / 1000.0
}

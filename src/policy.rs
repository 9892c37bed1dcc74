//! Compliance policies: detect, redact or block personal data and secrets in
//! what the model reads and writes.
//!
//! A [`PolicySet`] is compiled once from [`PolicyDef`]s (the `[[policies]]`
//! tables of the config and the shipped packs, see [`load_pack`]). All
//! detectors of all policies run as one scanner: a single `RegexSet` pass
//! over a text says which detectors can match, only those search, and
//! validators (Luhn, mod-97, SSN ranges, address parsing, JWT headers)
//! confirm candidates. A scan yields one [`Verdict`] per policy that applies
//! to the direction; findings hold entity types and counts, never the
//! matched text.
//!
//! The same set cleans stored copies. Secret detectors (API keys, tokens,
//! private keys) always redact every string of a stored body, whatever the
//! policies say; `redact` policies add their matches in the model's text.
//! [`PolicySet::baseline`] is the secrets-only set the proxy used before
//! policies existed. [`StreamScanner`] watches a streamed completion with a
//! bounded look-behind window, so a card number split over chunks is found
//! without buffering the stream.
//!
//! Entity types are the detector names in upper case (`CREDIT_CARD`); user
//! patterns report `CUSTOM_PATTERN` and keyword lists `KEYWORD`. A redacted
//! match becomes `[REDACTED:<ENTITY TYPE>]`.

pub mod builtin;
mod joined;
mod matcher;
mod normalize;
mod pack;
mod places;
mod stream;
pub mod tester;

#[cfg(test)]
mod corpus;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::capture::json_view::{JsonView, NodeId};
use crate::event::{EventType, Level, Metadata, NewEvent};
use joined::{with_search, AsText, Memo, Piece, Search, FIELD_JOIN, TEXT_JOIN};
use matcher::{Entry, Hit, Matcher};

pub use pack::{load_pack, PACK_NAMES};
pub use stream::StreamScanner;

/// One policy as written in the config file or a pack, before checking.
/// Every field is optional so that [`PolicySet::compile`] can report all
/// mistakes with their keys at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyDef {
    /// Unique; appears as `policy_name` in events.
    pub name: Option<String>,
    /// Built-in detector names, see [`builtin::names`].
    #[serde(default)]
    pub detectors: Vec<String>,
    /// Regular expressions (Rust `regex` syntax); matches report as
    /// `CUSTOM_PATTERN`.
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Words or phrases matched case-insensitively; report as `KEYWORD`.
    #[serde(default)]
    pub keywords: Vec<String>,
    /// Keywords match whole words only (default true): `sk` does not match
    /// inside `sketch`.
    pub whole_word: Option<bool>,
    /// `log` (default), `redact` or `block`.
    pub action: Option<String>,
    /// `request`, `response` or `both` (default).
    pub direction: Option<String>,
    /// `LOW`, `MEDIUM` (default), `HIGH` or `CRITICAL`, any case.
    pub severity: Option<String>,
    /// With `action = "redact"`: also redact the body sent upstream
    /// (default false: only the stored copy).
    pub redact_upstream: Option<bool>,
    /// With `action = "log"`: keep what the policy matched in stored
    /// copies (`true`) or replace it with markers (`false`). By default
    /// matches of built-in detectors are replaced and matches of
    /// `patterns` and `keywords` kept. `redact` and `block` policies never
    /// keep their matches.
    pub keep_matches: Option<bool>,
}

/// What a policy does when it finds something.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Record the violation only.
    Log,
    /// Replace matches with markers in stored events (and upstream with
    /// `redact_upstream`).
    Redact,
    /// Refuse the request, replace the response, or cut the stream.
    Block,
}

/// Which side of a call a policy watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppliesTo {
    Request,
    Response,
    Both,
}

/// The side of a call being scanned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Request,
    Response,
}

/// How serious a violation is; decides the violation event's level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

/// A mistake in a policy definition or pack, with the key it is at, such as
/// `policies[2].detectors` or `policies[0].patterns[1]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {message}")]
pub struct PolicyError {
    pub key: String,
    pub message: String,
}

/// A checked policy.
#[derive(Debug, Clone)]
pub struct Policy {
    name: PolicyName,
    action: Action,
    applies_to: AppliesTo,
    severity: Severity,
    redact_upstream: bool,
    keep_matches: Option<bool>,
    /// Indices of the scanner entries this policy counts.
    entries: Vec<usize>,
}

/// Compiled policies plus the always-on secret detectors, sharing one
/// scanner. Build once and share it (`Arc`); it is `Send + Sync`.
#[derive(Debug, Clone)]
pub struct PolicySet {
    policies: Vec<Policy>,
    matcher: Matcher,
    /// Per scanner entry: redacted in stored copies whatever the policies.
    always: Vec<bool>,
    /// Per scanner entry: replaced in stored copies of that direction,
    /// because a `redact` or `block` policy watching it counts the entry,
    /// or a `log` policy that does not keep its matches.
    stored_request: Vec<bool>,
    stored_response: Vec<bool>,
    /// Per scanner entry: replaced in stored copies of either direction.
    stored_any: Vec<bool>,
    /// Per scanner entry: redacted in the body sent upstream.
    upstream: Vec<bool>,
    /// What the request path searches before forwarding; `None` when no
    /// `block` policy watches requests.
    request_gate: Option<RequestGate>,
}

/// The detectors a request must be searched with before it is forwarded:
/// those of the `block` policies that watch requests, plus every built-in
/// detector that outranks one of them (an outranking match hides the lower
/// one, so leaving it out could block a call the full scan lets through).
/// The other detectors run when the record is built, off the request path.
#[derive(Debug, Clone)]
struct RequestGate {
    matcher: Matcher,
    /// Gate entry to the entry of the full scanner it copies.
    full_index: Vec<usize>,
    /// The gate holds every entry: finding nothing means the text is clean.
    complete: bool,
}

/// What [`PolicySet::gate_request`] found before forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GateVerdict {
    /// The `block` policy that refuses the call, if any.
    pub blocking: Option<Verdict>,
    /// The gate holds every detector and none matched the text: then
    /// [`PolicySet::inspect_after_scan`] need not search the text again.
    pub text_clean: bool,
}

/// Everything every detector found in one request body, searched on the
/// request path ([`PolicySet::gate_request_for_record`]) and handed to the
/// body's record ([`PolicySet::inspect_found`]), which then does not search
/// it again. Offsets only, never the matched text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyFindings {
    counts: Vec<u64>,
    text: Vec<Piece>,
    other: Vec<Piece>,
    keys: Vec<Piece>,
    /// For a body searched as a view, the node of each piece of `text`
    /// and of `other` (empty otherwise): the record replaces those
    /// strings without listing the view's strings again.
    text_nodes: Vec<NodeId>,
    other_nodes: Vec<NodeId>,
}

/// Per-entry match counts of one search, on the stack for up to
/// [`Counts::STACK`] detectors.
#[expect(
    clippy::large_enum_variant,
    reason = "the counts live on the stack of one search, so it needs no allocation"
)]
enum Counts {
    Stack([u64; Counts::STACK], usize),
    Heap(Vec<u64>),
}

impl Counts {
    const STACK: usize = 64;

    fn zeroed(n: usize) -> Self {
        if n <= Self::STACK {
            Self::Stack([0; Self::STACK], n)
        } else {
            Self::Heap(vec![0; n])
        }
    }
}

impl std::ops::Deref for Counts {
    type Target = [u64];

    fn deref(&self) -> &[u64] {
        match self {
            Self::Stack(counts, n) => &counts[..*n],
            Self::Heap(counts) => counts,
        }
    }
}

impl std::ops::DerefMut for Counts {
    fn deref_mut(&mut self) -> &mut [u64] {
        match self {
            Self::Stack(counts, n) => &mut counts[..*n],
            Self::Heap(counts) => counts,
        }
    }
}

/// One policy's outcome for one side of a call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub policy_name: PolicyName,
    pub action: Action,
    pub severity: Severity,
    pub direction: Direction,
    /// Entity type to number of matches. Never the matched values.
    pub findings: BTreeMap<&'static str, u64>,
    /// True when nothing was found.
    pub passed: bool,
}

/// A policy's name, held once by the compiled set and shared by every
/// verdict: cloning it copies a pointer, not the text.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PolicyName(Arc<str>);

/// The verdicts of every policy that applies to one side of a call, in
/// policy order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scan {
    pub verdicts: Vec<Verdict>,
}

/// What [`PolicySet::inspect`] did to a stored copy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub scan: Scan,
    /// Markers written into the stored copy.
    pub redacted: usize,
}

/// What [`PolicySet::inspect_view`] found in a body read as a
/// [`JsonView`], and how its stored copy differs from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewInspection {
    pub scan: Scan,
    /// The new text of each string value that holds markers, by node,
    /// sorted: what [`JsonView::write`] replaces.
    pub replaced: Vec<(NodeId, String)>,
}

/// One piece of a finding and where it is, for [`PolicySet::explain`].
/// Holds offsets, never the matched text.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Located {
    pub entity_type: String,
    /// JSON pointer of the string (`/messages/1/content`; empty for a
    /// bare text), or `(key) NAME` for an object key.
    pub pointer: String,
    /// Byte offsets in that string.
    pub start: usize,
    pub end: usize,
    /// Always replaced in stored copies.
    pub secret: bool,
    /// The policies watching the direction that count this detector.
    pub policies: Vec<(String, Action)>,
}

/// What a cleaning pass rewrites.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Clean {
    /// A stored copy: string values and object keys.
    Stored,
    /// The body sent upstream: string values only.
    Upstream,
}

/// A request body with `redact_upstream` matches replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamBody {
    /// Re-serialised JSON; send it with a corrected `Content-Length`.
    pub body: Vec<u8>,
    /// Markers written.
    pub replaced: usize,
}

const CUSTOM_PATTERN: &str = "CUSTOM_PATTERN";
const KEYWORD: &str = "KEYWORD";

/// Longest compiled form of one user pattern: enough for real patterns,
/// small enough that a pathological one cannot eat the memory.
const PATTERN_SIZE_LIMIT: usize = 1 << 20;

/// What every `Level` of a violation is, by severity: LOW and MEDIUM warn,
/// HIGH is an error, CRITICAL is critical.
pub fn event_level(severity: Severity) -> Level {
    match severity {
        Severity::Low | Severity::Medium => Level::Warning,
        Severity::High => Level::Error,
        Severity::Critical => Level::Critical,
    }
}

/// The event recording `verdict`: COMPLIANCE_CHECK (INFO) when it passed,
/// otherwise COMPLIANCE_VIOLATION at [`event_level`]. Metadata:
/// `policy_name`, `result` (bool, passed), `severity`, `action`,
/// `direction` and `findings`, an array of `{"entity_type", "count"}`
/// sorted by entity type (empty when passed).
pub fn compliance_event(verdict: &Verdict, request_id: &str) -> NewEvent {
    let metadata = Metadata::of(&ComplianceMetadata {
        action: Some(verdict.action.as_str()),
        direction: verdict.direction.as_str(),
        findings: FindingCounts(&verdict.findings),
        policies: None,
        policy_name: &verdict.policy_name,
        result: verdict.passed,
        severity: Some(verdict.severity.as_str()),
    });
    let event = if verdict.passed {
        NewEvent::new(
            EventType::ComplianceCheck,
            format!(
                "Policy {} passed ({}).",
                verdict.policy_name, verdict.direction
            ),
        )
    } else {
        NewEvent::new(EventType::ComplianceViolation, violation_message(verdict))
            .with_level(event_level(verdict.severity))
    };
    event.with_request_id(request_id).with_metadata(metadata)
}

/// `Policy NAME violated in the DIRECTION: SUMMARY (ACTION).`, written
/// into one string of the right size (one is made for every violation).
fn violation_message(verdict: &Verdict) -> String {
    let name = verdict.policy_name.as_str();
    let (direction, action) = (verdict.direction.as_str(), verdict.action.as_str());
    let summary: usize = verdict
        .findings
        .keys()
        .map(|kind| kind.len() + ", x".len() + 20)
        .sum();
    let mut out = String::with_capacity(40 + name.len() + direction.len() + summary + action.len());
    out.push_str("Policy ");
    out.push_str(name);
    out.push_str(" violated in the ");
    out.push_str(direction);
    out.push_str(": ");
    for (i, (kind, n)) in verdict.findings.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(kind);
        out.push_str(" x");
        out.push_str(itoa::Buffer::new().format(*n));
    }
    out.push_str(" (");
    out.push_str(action);
    out.push_str(").");
    out
}

/// The metadata of one COMPLIANCE_CHECK listing the policies that passed
/// on one side of a call: `policy_name` (their names joined with `,`),
/// `policies`, `result` true, `severity` and `action` null, `direction`,
/// and no findings.
pub fn passed_check_metadata(passed: &[&str], direction: Direction) -> Metadata {
    Metadata::of(&ComplianceMetadata {
        action: None,
        direction: direction.as_str(),
        findings: FindingCounts(&BTreeMap::new()),
        policies: Some(passed),
        policy_name: &passed.join(","),
        result: true,
        severity: None,
    })
}

/// COMPLIANCE_* metadata, fields in canonical (sorted) order.
#[derive(Serialize)]
struct ComplianceMetadata<'a> {
    action: Option<&'a str>,
    direction: &'a str,
    findings: FindingCounts<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    policies: Option<&'a [&'a str]>,
    policy_name: &'a str,
    result: bool,
    severity: Option<&'a str>,
}

/// `[{"count", "entity_type"}]`, sorted by entity type.
struct FindingCounts<'a>(&'a BTreeMap<&'static str, u64>);

impl Serialize for FindingCounts<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Count<'a> {
            count: u64,
            entity_type: &'a str,
        }
        s.collect_seq(
            self.0
                .iter()
                .map(|(&entity_type, &count)| Count { count, entity_type }),
        )
    }
}

/// One event per verdict of `scan`, in order.
pub fn compliance_events(scan: &Scan, request_id: &str) -> Vec<NewEvent> {
    scan.verdicts
        .iter()
        .map(|v| compliance_event(v, request_id))
        .collect()
}

// === impl PolicyDef ===

impl PolicyDef {
    fn check(
        &self,
        key: &str,
        errors: &mut Vec<PolicyError>,
    ) -> Option<(String, Action, AppliesTo, Severity, bool)> {
        let before = errors.len();
        let mut err = |field: &str, message: String| {
            errors.push(PolicyError {
                key: format!("{key}.{field}"),
                message,
            })
        };
        let name = match self.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() => n.to_owned(),
            Some(_) => {
                err("name", "must not be empty".into());
                String::new()
            }
            None => {
                err("name", "missing: every policy needs a name".into());
                String::new()
            }
        };
        let action = parse_field(self.action.as_deref(), Action::Log, "action", &mut err);
        let applies_to = parse_field(
            self.direction.as_deref(),
            AppliesTo::Both,
            "direction",
            &mut err,
        );
        let severity = parse_field(
            self.severity.as_deref(),
            Severity::Medium,
            "severity",
            &mut err,
        );
        let redact_upstream = self.redact_upstream.unwrap_or(false);
        if redact_upstream && action != Action::Redact {
            err(
                "redact_upstream",
                "only applies to action = \"redact\"".into(),
            );
        }
        if redact_upstream && applies_to == AppliesTo::Response {
            err(
                "redact_upstream",
                "needs direction \"request\" or \"both\": only requests go upstream".into(),
            );
        }
        if self.keep_matches.is_some() && action != Action::Log {
            err(
                "keep_matches",
                "only applies to action = \"log\": redact and block policies never keep their matches".into(),
            );
        }
        if self.detectors.is_empty() && self.patterns.is_empty() && self.keywords.is_empty() {
            err(
                "detectors",
                "the policy detects nothing: give detectors, patterns or keywords".into(),
            );
        }
        if self.whole_word.is_some() && self.keywords.is_empty() {
            err(
                "whole_word",
                "only applies to keywords, and there are none".into(),
            );
        }
        (errors.len() == before).then_some((name, action, applies_to, severity, redact_upstream))
    }
}

fn parse_field<T: FromStr<Err = String>>(
    raw: Option<&str>,
    default: T,
    field: &str,
    err: &mut impl FnMut(&str, String),
) -> T {
    match raw.map(T::from_str) {
        None => default,
        Some(Ok(v)) => v,
        Some(Err(message)) => {
            err(field, message);
            default
        }
    }
}

// === impl Action ===

impl Action {
    pub fn as_str(&self) -> &'static str {
        match self {
            Action::Log => "log",
            Action::Redact => "redact",
            Action::Block => "block",
        }
    }
}

impl FromStr for Action {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "log" => Ok(Action::Log),
            "redact" => Ok(Action::Redact),
            "block" => Ok(Action::Block),
            _ => Err(format!("{s:?} is not an action: use log, redact or block")),
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl AppliesTo ===

impl AppliesTo {
    pub fn covers(&self, direction: Direction) -> bool {
        matches!(
            (self, direction),
            (AppliesTo::Both, _)
                | (AppliesTo::Request, Direction::Request)
                | (AppliesTo::Response, Direction::Response)
        )
    }
}

impl FromStr for AppliesTo {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "request" => Ok(AppliesTo::Request),
            "response" => Ok(AppliesTo::Response),
            "both" => Ok(AppliesTo::Both),
            _ => Err(format!(
                "{s:?} is not a direction: use request, response or both"
            )),
        }
    }
}

// === impl Direction ===

impl Direction {
    pub fn as_str(&self) -> &'static str {
        match self {
            Direction::Request => "request",
            Direction::Response => "response",
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Severity ===

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Low => "LOW",
            Severity::Medium => "MEDIUM",
            Severity::High => "HIGH",
            Severity::Critical => "CRITICAL",
        }
    }
}

impl FromStr for Severity {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "LOW" => Ok(Severity::Low),
            "MEDIUM" => Ok(Severity::Medium),
            "HIGH" => Ok(Severity::High),
            "CRITICAL" => Ok(Severity::Critical),
            _ => Err(format!(
                "{s:?} is not a severity: use LOW, MEDIUM, HIGH or CRITICAL"
            )),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// === impl Policy ===

impl Policy {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn action(&self) -> Action {
        self.action
    }

    pub fn applies_to(&self) -> AppliesTo {
        self.applies_to
    }

    pub fn severity(&self) -> Severity {
        self.severity
    }

    pub fn redact_upstream(&self) -> bool {
        self.redact_upstream
    }

    pub fn keep_matches(&self) -> Option<bool> {
        self.keep_matches
    }
}

// === impl PolicySet ===

impl PolicySet {
    /// Checks and compiles `defs`; errors are keyed `policies[<index>]…`.
    pub fn compile(defs: &[PolicyDef]) -> Result<Self, Vec<PolicyError>> {
        let labeled: Vec<(String, PolicyDef)> = defs
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("policies[{i}]"), d.clone()))
            .collect();
        Self::compile_labeled(&labeled)
    }

    /// Like [`Self::compile`], with each definition's key given, so that
    /// policies from packs and from the config file can be checked together
    /// (`policy_packs[0].policies[1]`, `policies[0]`). Every error is
    /// reported, not only the first.
    pub fn compile_labeled(defs: &[(String, PolicyDef)]) -> Result<Self, Vec<PolicyError>> {
        let mut errors = Vec::new();
        let mut names = HashSet::new();
        // Built-in detectors: all secrets, plus those any policy names.
        let mut wanted: HashSet<&str> = builtin::ALL
            .iter()
            .filter(|b| b.secret)
            .map(|b| b.name)
            .collect();
        for (key, def) in defs {
            let mut unknown = Vec::new();
            for d in &def.detectors {
                match builtin::by_name(d.trim()) {
                    Some(b) => {
                        wanted.insert(b.name);
                    }
                    None => unknown.push(d.as_str()),
                }
            }
            if !unknown.is_empty() {
                errors.push(PolicyError {
                    key: format!("{key}.detectors"),
                    message: format!(
                        "unknown detector{} {}; valid: {}",
                        if unknown.len() > 1 { "s" } else { "" },
                        unknown
                            .iter()
                            .map(|u| format!("{u:?}"))
                            .collect::<Vec<_>>()
                            .join(", "),
                        builtin::names().join(", ")
                    ),
                });
            }
        }
        let mut entries = Vec::new();
        for b in builtin::ALL.iter().filter(|b| wanted.contains(b.name)) {
            match Entry::builtin(b) {
                Ok(e) => entries.push(e),
                Err(e) => errors.push(PolicyError {
                    key: format!("detector {}", b.name),
                    message: format!("built-in pattern failed to compile: {e}"),
                }),
            }
        }
        let entry_of = |entries: &[Entry], name: &str| {
            let kind = name.to_ascii_uppercase();
            entries.iter().position(|e| e.builtin && e.kind == kind)
        };
        let mut policies = Vec::new();
        for (key, def) in defs {
            let checked = def.check(key, &mut errors);
            let name = def.name.as_deref().map(str::trim).filter(|n| !n.is_empty());
            if let Some(name) = name {
                if !names.insert(name.to_owned()) {
                    errors.push(PolicyError {
                        key: format!("{key}.name"),
                        message: format!("duplicate policy name {name:?}"),
                    });
                }
            }
            let mut own = Vec::new();
            for d in &def.detectors {
                if let Some(i) = entry_of(&entries, d.trim()) {
                    if !own.contains(&i) {
                        own.push(i);
                    }
                }
            }
            for (i, pattern) in def.patterns.iter().enumerate() {
                match compile_pattern(pattern) {
                    Ok(regex) => {
                        own.push(entries.len());
                        entries.push(Entry::custom(CUSTOM_PATTERN, regex));
                    }
                    Err(message) => errors.push(PolicyError {
                        key: format!("{key}.patterns[{i}]"),
                        message,
                    }),
                }
            }
            if !def.keywords.is_empty() {
                match compile_keywords(key, &def.keywords, def.whole_word.unwrap_or(true)) {
                    Ok(regex) => {
                        own.push(entries.len());
                        entries.push(Entry::custom(KEYWORD, regex));
                    }
                    Err(mut e) => errors.append(&mut e),
                }
            }
            if let Some((name, action, applies_to, severity, redact_upstream)) = checked {
                policies.push(Policy {
                    name: PolicyName(name.into()),
                    action,
                    applies_to,
                    severity,
                    redact_upstream,
                    keep_matches: def.keep_matches,
                    entries: own,
                });
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Self::assemble(policies, entries).map_err(|e| {
            vec![PolicyError {
                key: "policies".into(),
                message: format!("the detectors do not fit in one scanner: {e}"),
            }]
        })
    }

    /// No policies; stored copies are cleaned of the original four secret
    /// kinds only (`ANTHROPIC_KEY`, `OPENAI_KEY`, `AWS_ACCESS_KEY`,
    /// `BEARER_TOKEN`), exactly as before policies existed.
    pub fn baseline() -> Result<Self, regex::Error> {
        let mut entries = Vec::new();
        for b in builtin::ALL
            .iter()
            .filter(|b| builtin::BASELINE.contains(&b.name))
        {
            entries.push(Entry::builtin(b)?);
        }
        Self::assemble(Vec::new(), entries)
    }

    /// No policies and no detectors: finds and redacts nothing.
    pub(crate) fn empty() -> Self {
        Self {
            policies: Vec::new(),
            matcher: Matcher::empty(),
            always: Vec::new(),
            stored_request: Vec::new(),
            stored_response: Vec::new(),
            stored_any: Vec::new(),
            upstream: Vec::new(),
            request_gate: None,
        }
    }

    fn assemble(policies: Vec<Policy>, entries: Vec<Entry>) -> Result<Self, regex::Error> {
        let n = entries.len();
        let always = entries.iter().map(|e| e.secret).collect();
        let mut stored_request = vec![false; n];
        let mut stored_response = vec![false; n];
        let mut upstream = vec![false; n];
        for p in &policies {
            for &e in &p.entries {
                let stored = match (p.action, p.keep_matches) {
                    (Action::Redact | Action::Block, _) => true,
                    (Action::Log, Some(keep)) => !keep,
                    (Action::Log, None) => entries[e].builtin,
                };
                if p.applies_to.covers(Direction::Request) {
                    stored_request[e] |= stored;
                    upstream[e] |= p.action == Action::Redact && p.redact_upstream;
                }
                if p.applies_to.covers(Direction::Response) {
                    stored_response[e] |= stored;
                }
            }
        }
        let request_gate = RequestGate::new(&policies, &entries)?;
        let stored_any = stored_request
            .iter()
            .zip(&stored_response)
            .map(|(a, b)| *a || *b)
            .collect();
        Ok(Self {
            policies,
            matcher: Matcher::new(entries)?,
            always,
            stored_request,
            stored_response,
            stored_any,
            upstream,
            request_gate,
        })
    }

    pub fn policies(&self) -> &[Policy] {
        &self.policies
    }

    /// Entity types of the detectors that always redact stored copies, in
    /// priority order.
    pub fn secret_kinds(&self) -> Vec<&str> {
        self.matcher
            .entries()
            .iter()
            .filter(|e| e.secret)
            .map(|e| e.kind)
            .collect()
    }

    /// Whether any `block` policy watches `direction`: the proxy needs to
    /// hold the request body back (or watch the stream) only then.
    pub fn blocks(&self, direction: Direction) -> bool {
        self.policies
            .iter()
            .any(|p| p.action == Action::Block && p.applies_to.covers(direction))
    }

    /// Scanner entries counted by `block` policies that watch `direction`.
    pub(crate) fn blocking_entries(&self, direction: Direction) -> Vec<usize> {
        let mut entries: Vec<usize> = self
            .policies
            .iter()
            .filter(|p| p.action == Action::Block && p.applies_to.covers(direction))
            .flat_map(|p| p.entries.iter().copied())
            .collect();
        entries.sort_unstable();
        entries.dedup();
        entries
    }

    /// Whether any policy rewrites the body sent upstream.
    pub fn redacts_upstream(&self) -> bool {
        self.upstream.contains(&true)
    }

    /// Verdicts of the policies that watch requests, over the request
    /// body.
    pub fn scan_request(&self, body: &Value) -> Scan {
        self.scan(body, Direction::Request)
    }

    /// Verdicts of the policies that watch responses, over the response
    /// body (a completion, a reassembled stream, a Responses API object).
    pub fn scan_response(&self, body: &Value) -> Scan {
        self.scan(body, Direction::Response)
    }

    /// Verdicts for `direction` over `body`: its text searched as one (so a
    /// value split over two messages is found), every other string and
    /// every object key on its own.
    pub fn scan(&self, body: &Value, direction: Direction) -> Scan {
        self.scan_counting(body, direction).0
    }

    /// As [`Self::scan`], and whether no pattern at all (whatever policy
    /// or direction it serves) matched the text: then
    /// [`Self::inspect_after_scan`] need not search the text again.
    pub fn scan_counting(&self, body: &Value, direction: Direction) -> (Scan, bool) {
        let (counts, text_clean) = count_body(&self.matcher, body);
        (self.verdicts(&counts, direction), text_clean)
    }

    /// Searches a request body with only the detectors that can decide a
    /// `block` policy watching requests: theirs, and the built-in ones that
    /// outrank them. Says whether such a policy refuses the call (exactly
    /// as a full scan would), and whether the body is known to be clean.
    /// Without request `block` policies nothing is searched and nothing is
    /// known.
    pub fn gate_request(&self, body: &Value) -> GateVerdict {
        self.gate_with(|matcher| count_body(matcher, body))
    }

    /// As [`Self::gate_request`], over a body read as a [`JsonView`].
    pub fn gate_request_view(&self, view: &JsonView<'_>) -> GateVerdict {
        self.gate_with(|matcher| count_view(matcher, view))
    }

    /// The gate's verdict from `count`, which searches the body with the
    /// matcher it is given.
    fn gate_with(&self, count: impl FnOnce(&Matcher) -> (Vec<u64>, bool)) -> GateVerdict {
        let Some(gate) = &self.request_gate else {
            return GateVerdict {
                blocking: None,
                text_clean: false,
            };
        };
        let (gate_counts, gate_text_clean) = count(&gate.matcher);
        let mut counts = vec![0u64; self.matcher.entries().len()];
        for (i, n) in gate_counts.iter().enumerate() {
            counts[gate.full_index[i]] += n;
        }
        // Counts of entries outside the gate stay zero, so only the verdicts
        // of `block` policies, whose entries are all in the gate, are whole.
        let blocking = self.blocking_verdict(&counts);
        GateVerdict {
            blocking,
            text_clean: gate.complete && gate_text_clean,
        }
    }

    /// As [`Self::gate_request`], but searching with every detector and
    /// keeping what was found, for a request whose call is recorded: its
    /// body is then searched once, here, instead of by the gate here and
    /// again, whole, by the record. The verdict is the gate's: the counts
    /// of the entries of `block` policies are the same in both searches.
    pub fn gate_request_for_record(&self, body: &Value) -> (GateVerdict, BodyFindings) {
        let strings = places::strings(body);
        let keys = places::keys(body);
        self.gate_places_for_record(&strings.text, &strings.other, |search, counts, pieces| {
            search.run(&self.matcher, &keys, FIELD_JOIN, counts, pieces);
        })
    }

    /// As [`Self::gate_request_for_record`], over a body read as a
    /// [`JsonView`]; the findings are for [`Self::inspect_view`] (or, as
    /// the view orders strings as the parsed `Value` does,
    /// [`Self::inspect_found`]).
    pub fn gate_request_view_for_record(&self, view: &JsonView<'_>) -> (GateVerdict, BodyFindings) {
        let strings = places::view_strings(view);
        let (verdict, mut findings) =
            self.gate_places_for_record(&strings.text, &strings.other, |search, counts, pieces| {
                search_view_keys(&self.matcher, search, view, counts, pieces);
            });
        findings.text_nodes = nodes_of(&findings.text, &strings.text);
        findings.other_nodes = nodes_of(&findings.other, &strings.other);
        (verdict, findings)
    }

    /// The gate over a body's text and other strings, and its keys, which
    /// `search_keys` searches.
    fn gate_places_for_record<T: AsText>(
        &self,
        text: &[T],
        other: &[T],
        search_keys: impl FnOnce(&mut Search, &mut [u64], &mut Vec<Piece>),
    ) -> (GateVerdict, BodyFindings) {
        let mut findings = BodyFindings {
            counts: vec![0u64; self.matcher.entries().len()],
            text: Vec::new(),
            other: Vec::new(),
            keys: Vec::new(),
            text_nodes: Vec::new(),
            other_nodes: Vec::new(),
        };
        with_search(|search| {
            let counts = &mut findings.counts;
            search.run(&self.matcher, text, TEXT_JOIN, counts, &mut findings.text);
            search.run(
                &self.matcher,
                other,
                FIELD_JOIN,
                counts,
                &mut findings.other,
            );
            search_keys(search, counts, &mut findings.keys);
        });
        let blocking = self
            .request_gate
            .is_some()
            .then(|| self.blocking_verdict(&findings.counts))
            .flatten();
        let verdict = GateVerdict {
            blocking,
            text_clean: findings.text.is_empty(),
        };
        (verdict, findings)
    }

    /// As [`Self::inspect_after_scan`] (or, given the `findings` of
    /// [`Self::gate_request_view_for_record`] for this very body,
    /// [`Self::inspect_found`]) over a body read as a [`JsonView`]: the
    /// verdicts, and the strings its stored copy replaces. `None` when an
    /// object key would be replaced: renaming keys reorders the body, so
    /// the caller cleans its parsed `Value` instead (rare: a secret sent
    /// as a key).
    pub fn inspect_view(
        &self,
        view: &JsonView<'_>,
        direction: Direction,
        text_clean: bool,
        findings: Option<BodyFindings>,
    ) -> Option<ViewInspection> {
        let stored = self.stored_for(Some(direction));
        let select = |e: usize| self.always[e] || stored[e];
        if let Some(found) = &findings {
            if found.keys.iter().any(|p| select(p.entry)) {
                return None;
            }
            if let Some(replaced) = replace_at_nodes(&self.matcher, view, found, &select) {
                return Some(ViewInspection {
                    scan: self.verdicts(&found.counts, direction),
                    replaced,
                });
            }
        }
        let strings = places::view_strings(view);
        let (text, other) = (&strings.text, &strings.other);
        let (counts, text_pieces, other_pieces) = match findings {
            Some(found) => (Counts::Heap(found.counts), found.text, found.other),
            None => {
                let mut counts = Counts::zeroed(self.matcher.entries().len());
                let searched = with_search(|search| {
                    let mut key_pieces = Vec::new();
                    search_view_keys(&self.matcher, search, view, &mut counts, &mut key_pieces);
                    if key_pieces.iter().any(|p| select(p.entry)) {
                        return None;
                    }
                    let mut text_pieces = Vec::new();
                    if !text_clean {
                        search.run(
                            &self.matcher,
                            text,
                            TEXT_JOIN,
                            &mut counts,
                            &mut text_pieces,
                        );
                    }
                    let mut other_pieces = Vec::new();
                    search.run(
                        &self.matcher,
                        other,
                        FIELD_JOIN,
                        &mut counts,
                        &mut other_pieces,
                    );
                    Some((text_pieces, other_pieces))
                });
                let (text_pieces, other_pieces) = searched?;
                (counts, text_pieces, other_pieces)
            }
        };
        let mut replaced = Vec::new();
        for (group, pieces) in [(text, &text_pieces), (other, &other_pieces)] {
            self.replace_each(group, pieces, &select, |i, new| {
                replaced.push((group[i].0, new));
            });
        }
        replaced.sort_unstable_by_key(|(node, _)| *node);
        Some(ViewInspection {
            scan: self.verdicts(&counts, direction),
            replaced,
        })
    }

    /// As [`Self::inspect`] for a request body, from what
    /// [`Self::gate_request_for_record`] found in this very body: matches
    /// become markers without a second search. A key to rename would
    /// reorder the body's strings, so such a body is searched again.
    pub fn inspect_found(&self, body: &mut Value, findings: BodyFindings) -> Inspection {
        let direction = Direction::Request;
        if !findings.keys.is_empty() {
            return self.inspect(body, direction);
        }
        let stored = self.stored_for(Some(direction));
        let select = |e: usize| self.always[e] || stored[e];
        let mut redacted = 0;
        let mut strings = places::strings_mut(body);
        for (group, pieces) in [
            (&mut strings.text, &findings.text),
            (&mut strings.other, &findings.other),
        ] {
            if pieces.is_empty() {
                continue;
            }
            let replaced = {
                let views: Vec<&str> = group.iter().map(|s| s.as_str()).collect();
                self.replace_pieces(&views, pieces, &select)
            };
            redacted += replaced.len();
            for (i, text) in replaced {
                *group[i] = text;
            }
        }
        Inspection {
            scan: self.verdicts(&findings.counts, direction),
            redacted,
        }
    }

    /// Verdicts for `direction` over one plain text.
    pub fn scan_text(&self, text: &str, direction: Direction) -> Scan {
        self.scan(&Value::String(text.to_owned()), direction)
    }

    /// Scans `body` (a stored copy) and cleans it in the same pass: secrets
    /// and every match a policy watching `direction` does not keep (see
    /// [`PolicyDef::keep_matches`]) become markers, in every string and
    /// object key.
    pub fn inspect(&self, body: &mut Value, direction: Direction) -> Inspection {
        self.inspect_after_scan(body, direction, false)
    }

    /// As [`Self::inspect`]; `text_clean` says that a [`Self::scan_counting`]
    /// (or a [`Self::gate_request`] that said so) of this very body found
    /// nothing, so its text is not searched again (its other strings and
    /// keys are: they are cheap, and the record keeps them).
    pub fn inspect_after_scan(
        &self,
        body: &mut Value,
        direction: Direction,
        text_clean: bool,
    ) -> Inspection {
        let stored = self.stored_for(Some(direction));
        let (counts, redacted) = self.clean(body, Clean::Stored, !text_clean, &|e| {
            self.always[e] || stored[e]
        });
        Inspection {
            scan: self.verdicts(&counts, direction),
            redacted,
        }
    }

    /// Cleans a stored copy like [`Self::inspect`], without the verdicts;
    /// returns the number of markers written.
    pub fn redact_value_in_place(&self, body: &mut Value, direction: Direction) -> usize {
        self.inspect(body, direction).redacted
    }

    /// Cleans a stored value that belongs to no direction (a custom event's
    /// metadata): secrets, and every match that a policy of either
    /// direction would not keep, in every string and key.
    pub fn redact_stored(&self, body: &mut Value) -> usize {
        let stored = self.stored_for(None);
        self.clean(body, Clean::Stored, true, &|e| self.always[e] || stored[e])
            .1
    }

    /// Secrets only, in every string and key of `body`: the always-on
    /// cleaning.
    pub fn redact_secrets(&self, body: &mut Value) -> usize {
        self.clean(body, Clean::Stored, true, &|e| self.always[e]).1
    }

    /// `text` with secrets replaced, borrowed when there were none (the
    /// common case, which costs one scan); also the number replaced.
    pub fn redact_secrets_text<'a>(&self, text: &'a str) -> (Cow<'a, str>, usize) {
        self.matcher.find_with(text, |hits| {
            self.matcher.redact(text, hits, |e| self.always[e])
        })
    }

    /// `text` (a path, a header value, a model name) as stored: secrets
    /// and every match that a policy watching `direction` (either, for
    /// `None`) does not keep replaced by markers. Borrowed when nothing
    /// matched.
    pub fn redact_stored_text<'a>(
        &self,
        text: &'a str,
        direction: Option<Direction>,
    ) -> Cow<'a, str> {
        let stored = self.stored_for(direction);
        self.matcher.find_with(text, |hits| {
            self.matcher
                .redact(text, hits, |e| self.always[e] || stored[e])
                .0
        })
    }

    /// Whether `text` holds a secret (the always-redacted kinds).
    pub fn has_secret(&self, text: &str) -> bool {
        self.matcher
            .find_with(text, |hits| hits.iter().any(|h| self.always[h.entry]))
    }

    /// The request body to send upstream when `redact_upstream` policies
    /// matched: JSON re-serialised with their matches replaced. `None` when
    /// nothing changed, no policy asks for it, or the body is not JSON (it
    /// is then forwarded as is).
    pub fn redact_upstream(&self, body: &[u8]) -> Option<UpstreamBody> {
        if !self.redacts_upstream() {
            return None;
        }
        let mut value: Value = serde_json::from_slice(body).ok()?;
        let (_, replaced) = self.clean(&mut value, Clean::Upstream, true, &|e| self.upstream[e]);
        if replaced == 0 {
            return None;
        }
        let body = serde_json::to_vec(&value).ok()?;
        Some(UpstreamBody { body, replaced })
    }

    /// Every finding in `body` with where it is, for reports that help
    /// tune policies (`policy test`). Text places are searched as one, as
    /// everywhere else; each piece of a match names the string it is in.
    pub fn explain(&self, body: &Value, direction: Direction) -> Vec<Located> {
        let strings = places::strings(body);
        let pointers = places::string_pointers(body);
        let keys = places::keys(body);
        let mut counts = vec![0u64; self.matcher.entries().len()];
        let mut out = Vec::new();
        let mut search = Search::default();
        let mut pieces = Vec::new();
        let groups: [(&[&str], &[String], char, bool); 3] = [
            (&strings.text, &pointers.text, TEXT_JOIN, false),
            (&strings.other, &pointers.other, FIELD_JOIN, false),
            (&keys, &[], FIELD_JOIN, true),
        ];
        for (group, at, join, is_key) in groups {
            pieces.clear();
            search.run(&self.matcher, group, join, &mut counts, &mut pieces);
            for piece in &pieces {
                let entry = &self.matcher.entries()[piece.entry];
                let policies = self
                    .policies
                    .iter()
                    .filter(|p| p.applies_to.covers(direction) && p.entries.contains(&piece.entry))
                    .map(|p| (p.name.to_string(), p.action))
                    .collect();
                out.push(Located {
                    entity_type: entry.kind.to_owned(),
                    pointer: if is_key {
                        format!("(key) {}", group[piece.string])
                    } else {
                        at.get(piece.string).cloned().unwrap_or_default()
                    },
                    start: piece.start,
                    end: piece.end,
                    secret: entry.secret,
                    policies,
                });
            }
        }
        out
    }

    /// Searches and cleans `body` in place: every string (the text as one)
    /// and, for stored copies, every object key. Pieces whose entry
    /// `select` accepts become markers. Returns per-entry counts and the
    /// markers written.
    fn clean(
        &self,
        body: &mut Value,
        what: Clean,
        search_text: bool,
        select: &dyn Fn(usize) -> bool,
    ) -> (Vec<u64>, usize) {
        let mut counts = vec![0u64; self.matcher.entries().len()];
        let redacted = with_search(|search| {
            let mut redacted = 0;
            let mut pieces = Vec::new();
            if what == Clean::Stored {
                let renames = {
                    let keys = places::keys(body);
                    search.run(&self.matcher, &keys, FIELD_JOIN, &mut counts, &mut pieces);
                    self.replace_pieces(&keys, &pieces, select)
                };
                if !renames.is_empty() {
                    redacted += renames.len();
                    let mut renames = renames.into_iter().peekable();
                    places::rename_keys(body, &mut |i, _| {
                        renames.next_if(|(at, _)| *at == i).map(|(_, name)| name)
                    });
                }
            }
            let mut strings = places::strings_mut(body);
            for (group, join, searched) in [
                (&mut strings.text, TEXT_JOIN, search_text),
                (&mut strings.other, FIELD_JOIN, true),
            ] {
                if !searched {
                    continue;
                }
                pieces.clear();
                let replaced = {
                    let views: Vec<&str> = group.iter().map(|s| s.as_str()).collect();
                    search.run(&self.matcher, &views, join, &mut counts, &mut pieces);
                    self.replace_pieces(&views, &pieces, select)
                };
                redacted += replaced.len();
                for (i, text) in replaced {
                    *group[i] = text;
                }
            }
            redacted
        });
        (counts, redacted)
    }

    /// The new text of each string that has a selected piece, by index.
    fn replace_pieces<T: AsText>(
        &self,
        strings: &[T],
        pieces: &[Piece],
        select: &dyn Fn(usize) -> bool,
    ) -> Vec<(usize, String)> {
        let mut out = Vec::new();
        self.replace_each(strings, pieces, select, |i, new| out.push((i, new)));
        out
    }

    /// As [`Self::replace_pieces`], handing each new text to `put` as it
    /// is made. Pieces come from a search ordered by string and start
    /// nearly always; only otherwise are they copied and sorted.
    fn replace_each<T: AsText>(
        &self,
        strings: &[T],
        pieces: &[Piece],
        select: &dyn Fn(usize) -> bool,
        mut put: impl FnMut(usize, String),
    ) {
        if !pieces.iter().any(|p| select(p.entry)) {
            return;
        }
        let key = |p: &Piece| (p.string, p.start, p.entry);
        let sorted;
        let pieces = if pieces.is_sorted_by_key(key) {
            pieces
        } else {
            let mut copy = pieces.to_vec();
            copy.sort_by_key(key);
            sorted = copy;
            &sorted[..]
        };
        for group in pieces.chunk_by(|a, b| a.string == b.string) {
            let hits = group.iter().filter(|p| select(p.entry)).map(|p| Hit {
                entry: p.entry,
                start: p.start,
                end: p.end,
            });
            let string = group[0].string;
            if let (Cow::Owned(new), _) = self.matcher.redact_hits(strings[string].as_text(), hits)
            {
                put(string, new);
            }
        }
    }

    /// Per entry: whether stored copies of `direction` (either, for `None`)
    /// replace its matches.
    fn stored_for(&self, direction: Option<Direction>) -> &[bool] {
        match direction {
            Some(Direction::Request) => &self.stored_request,
            Some(Direction::Response) => &self.stored_response,
            None => &self.stored_any,
        }
    }

    /// The verdict of the `block` policy watching requests that refuses
    /// the call, as [`Scan::blocking`] over the request's verdicts would
    /// name it, without building the other verdicts.
    fn blocking_verdict(&self, counts: &[u64]) -> Option<Verdict> {
        let mut best: Option<&Policy> = None;
        for p in self.policies.iter().filter(|p| {
            p.action == Action::Block
                && p.applies_to.covers(Direction::Request)
                && p.entries.iter().any(|&e| counts[e] > 0)
        }) {
            match best {
                Some(b) if b.severity >= p.severity => {}
                _ => best = Some(p),
            }
        }
        best.map(|p| self.verdict(p, counts, Direction::Request))
    }

    /// One verdict per policy watching `direction`, from per-entry counts.
    fn verdicts(&self, counts: &[u64], direction: Direction) -> Scan {
        let verdicts = self
            .policies
            .iter()
            .filter(|p| p.applies_to.covers(direction))
            .map(|p| self.verdict(p, counts, direction))
            .collect();
        Scan { verdicts }
    }

    fn verdict(&self, p: &Policy, counts: &[u64], direction: Direction) -> Verdict {
        let mut findings = BTreeMap::new();
        for &e in &p.entries {
            if counts[e] > 0 {
                *findings.entry(self.matcher.entries()[e].kind).or_insert(0) += counts[e];
            }
        }
        Verdict {
            policy_name: p.name.clone(),
            action: p.action,
            severity: p.severity,
            direction,
            passed: findings.is_empty(),
            findings,
        }
    }
}

// === impl RequestGate ===

impl RequestGate {
    fn new(policies: &[Policy], entries: &[Entry]) -> Result<Option<Self>, regex::Error> {
        let blocking: Vec<usize> = policies
            .iter()
            .filter(|p| p.action == Action::Block && p.applies_to.covers(Direction::Request))
            .flat_map(|p| p.entries.iter().copied())
            .collect();
        if blocking.is_empty() {
            return Ok(None);
        }
        // Built-in entries come first, in priority order, so the ones that
        // can outrank a gate entry are a prefix of the list.
        let outranking = blocking
            .iter()
            .filter(|&&e| entries[e].builtin)
            .max()
            .map_or(0, |&last| last + 1);
        let full_index: Vec<usize> = (0..entries.len())
            .filter(|&e| e < outranking || blocking.contains(&e))
            .collect();
        let matcher = Matcher::new(full_index.iter().map(|&e| entries[e].clone()).collect())?;
        Ok(Some(Self {
            complete: full_index.len() == entries.len(),
            matcher,
            full_index,
        }))
    }
}

// === impl PolicyName ===

impl PolicyName {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::ops::Deref for PolicyName {
    type Target = str;

    fn deref(&self) -> &str {
        &self.0
    }
}

impl From<&str> for PolicyName {
    fn from(name: &str) -> Self {
        Self(name.into())
    }
}

impl PartialEq<str> for PolicyName {
    fn eq(&self, other: &str) -> bool {
        *self.0 == *other
    }
}

impl PartialEq<&str> for PolicyName {
    fn eq(&self, other: &&str) -> bool {
        *self.0 == **other
    }
}

impl fmt::Display for PolicyName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for PolicyName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

// === impl Verdict ===

impl Verdict {
    /// `CREDIT_CARD x2, EMAIL x1`: entity types and counts, safe to show.
    pub fn summary(&self) -> String {
        self.findings
            .iter()
            .map(|(kind, n)| format!("{kind} x{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The message of the error the app gets when this verdict blocks its
    /// call; names the policy and the entity types, never the values.
    pub fn block_message(&self) -> String {
        let what = self.findings.keys().copied().collect::<Vec<_>>().join(", ");
        match self.direction {
            Direction::Request => format!(
                "Request blocked by compliance policy \"{}\": it contains {what}.",
                self.policy_name
            ),
            Direction::Response => format!(
                "Response blocked by compliance policy \"{}\": it contains {what}.",
                self.policy_name
            ),
        }
    }
}

// === impl Scan ===

impl Scan {
    /// True when every policy passed.
    pub fn passed(&self) -> bool {
        self.verdicts.iter().all(|v| v.passed)
    }

    /// Verdicts that found something.
    pub fn violations(&self) -> impl Iterator<Item = &Verdict> {
        self.verdicts.iter().filter(|v| !v.passed)
    }

    /// The violated `block` policy to name when refusing the call: the most
    /// severe, the first listed among equals. `None`: let the call through.
    pub fn blocking(&self) -> Option<&Verdict> {
        self.violations()
            .filter(|v| v.action == Action::Block)
            .fold(None, |best: Option<&Verdict>, v| match best {
                Some(b) if b.severity >= v.severity => Some(b),
                _ => Some(v),
            })
    }
}

/// Per-entry match counts over every string of `body` (the text searched
/// as one) and its object keys.
/// Also says whether the text itself was clean.
fn count_body(matcher: &Matcher, body: &Value) -> (Vec<u64>, bool) {
    let strings = places::strings(body);
    let keys = places::keys(body);
    count_places(
        matcher,
        &strings.text,
        &strings.other,
        |search, counts, pieces| {
            search.run(matcher, &keys, FIELD_JOIN, counts, pieces);
        },
    )
}

/// Per-entry match counts over a body's text (searched as one), its other
/// strings and its keys (which `search_keys` searches), and whether the
/// text was clean.
fn count_places<T: AsText>(
    matcher: &Matcher,
    text: &[T],
    other: &[T],
    search_keys: impl FnOnce(&mut Search, &mut [u64], &mut Vec<Piece>),
) -> (Vec<u64>, bool) {
    let mut counts = vec![0u64; matcher.entries().len()];
    let mut pieces = Vec::new();
    let text_clean = with_search(|search| {
        search.run(matcher, text, TEXT_JOIN, &mut counts, &mut pieces);
        let text_clean = pieces.is_empty();
        search.run(matcher, other, FIELD_JOIN, &mut counts, &mut pieces);
        search_keys(search, &mut counts, &mut pieces);
        text_clean
    });
    (counts, text_clean)
}

/// As [`count_body`], over a body read as a [`JsonView`].
fn count_view(matcher: &Matcher, view: &JsonView<'_>) -> (Vec<u64>, bool) {
    let strings = places::view_strings(view);
    count_places(
        matcher,
        &strings.text,
        &strings.other,
        |search, counts, pieces| {
            search_view_keys(matcher, search, view, counts, pieces);
        },
    )
}

/// The node of the string each of `pieces` is in.
fn nodes_of(pieces: &[Piece], strings: &[(NodeId, Cow<'_, str>)]) -> Vec<NodeId> {
    pieces.iter().map(|p| strings[p.string].0).collect()
}

/// The stored text of each string of `view` that holds a piece of
/// `found` that `select` accepts, by node, sorted, taken from the nodes
/// the request path's search noted: what [`PolicySet::inspect_view`]
/// replaces, without listing the view's strings again. `None` when the
/// findings hold no nodes, or pieces out of order (a value found across a
/// seam), or a node that is not a string: then the strings are listed.
fn replace_at_nodes(
    matcher: &Matcher,
    view: &JsonView<'_>,
    found: &BodyFindings,
    select: &dyn Fn(usize) -> bool,
) -> Option<Vec<(NodeId, String)>> {
    let key = |p: &Piece| (p.string, p.start, p.entry);
    let groups = [
        (&found.text, &found.text_nodes),
        (&found.other, &found.other_nodes),
    ];
    if groups
        .iter()
        .any(|(pieces, nodes)| pieces.len() != nodes.len() || !pieces.is_sorted_by_key(key))
    {
        return None;
    }
    let mut replaced = Vec::new();
    for (pieces, nodes) in groups {
        let mut first = 0;
        for group in pieces.chunk_by(|a, b| a.string == b.string) {
            let node = nodes[first];
            first += group.len();
            if !group.iter().any(|p| select(p.entry)) {
                continue;
            }
            let text = view.at(node)?.as_str()?;
            let hits = group.iter().filter(|p| select(p.entry)).map(|p| Hit {
                entry: p.entry,
                start: p.start,
                end: p.end,
            });
            if let (Cow::Owned(new), _) = matcher.redact_hits(&text, hits) {
                replaced.push((node, new));
            }
        }
    }
    replaced.sort_unstable_by_key(|(node, _)| *node);
    Some(replaced)
}

/// Searches every object key of a view on its own, in document order, as
/// [`Search::run`] searches a list of fields, without gathering the keys
/// first.
fn search_view_keys(
    matcher: &Matcher,
    search: &mut Search,
    view: &JsonView<'_>,
    counts: &mut [u64],
    pieces: &mut Vec<Piece>,
) {
    let mut memo = Memo::default();
    let mut i = 0;
    places::for_each_view_key(view, &mut |key| {
        let remember = match key {
            Cow::Borrowed(k) => Some(k),
            Cow::Owned(_) => None,
        };
        search.field(matcher, i, &key, remember, &mut memo, counts, pieces);
        i += 1;
    });
}

/// The texts of a view's strings, for the tests that compare them.
#[cfg(test)]
fn as_strs<'s>(strings: &'s [(NodeId, Cow<'_, str>)]) -> Vec<&'s str> {
    strings.iter().map(|(_, s)| s.as_ref()).collect()
}

/// A user regex, refused when it is invalid or would match everywhere.
pub(crate) fn compile_pattern(pattern: &str) -> Result<Regex, String> {
    let regex = RegexBuilder::new(pattern)
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| format!("invalid regex {pattern:?}: {e}"))?;
    if regex.is_match("") {
        return Err(format!(
            "regex {pattern:?} matches the empty string, so it would match everywhere"
        ));
    }
    Ok(regex)
}

/// One case-insensitive alternation of the keywords. Whole-word edges are
/// only required where the keyword itself starts or ends with a word
/// character, so `c++` still works.
pub(crate) fn compile_keywords(
    key: &str,
    keywords: &[String],
    whole_word: bool,
) -> Result<Regex, Vec<PolicyError>> {
    let mut errors = Vec::new();
    let mut alternatives = Vec::new();
    for (i, kw) in keywords.iter().enumerate() {
        let kw = kw.trim();
        if kw.is_empty() {
            errors.push(PolicyError {
                key: format!("{key}.keywords[{i}]"),
                message: "must not be empty".into(),
            });
            continue;
        }
        // ASCII boundaries keep the fast DFA; a non-ASCII keyword needs
        // Unicode ones to see `é` as part of a word.
        let boundary = if kw.is_ascii() { r"(?-u:\b)" } else { r"\b" };
        let is_word = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric() || c == '_');
        let mut alt = String::new();
        if whole_word && is_word(kw.chars().next()) {
            alt.push_str(boundary);
        }
        alt.push_str(&regex::escape(kw));
        if whole_word && is_word(kw.chars().last()) {
            alt.push_str(boundary);
        }
        alternatives.push(alt);
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    // The flag is written into the pattern, not set on the builder: the
    // scanner's shared set compiles the pattern text again.
    RegexBuilder::new(&format!("(?i:{})", alternatives.join("|")))
        .size_limit(PATTERN_SIZE_LIMIT)
        .build()
        .map_err(|e| {
            vec![PolicyError {
                key: format!("{key}.keywords"),
                message: format!("too many or too long keywords: {e}"),
            }]
        })
}

#[cfg(test)]
mod tests;

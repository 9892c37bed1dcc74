//! The audit event model shared by every part of the proxy.
//!
//! A [`NewEvent`] is what producers (the proxy, the admin API, the app itself)
//! offer to the pipeline. The pipeline's single writer turns it into an
//! [`AuditEvent`] by stamping `seq` and the hash chain (see [`chain`]); stores
//! persist `AuditEvent`s exactly as given.

pub mod chain;
pub mod checkpoint;
pub mod evidence;
mod metadata;
mod record;

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, SubsecRound, Timelike, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

pub use metadata::{Metadata, TextOf};
pub use record::{canonical_timestamp, EventRecord, Origin};

/// One stored audit record, as every store, query and export returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    pub id: String,
    pub seq: i64,
    #[serde(with = "timestamp_format")]
    pub timestamp: DateTime<Utc>,
    pub event_type: EventType,
    pub level: Level,
    pub message: String,
    pub request_id: Option<String>,
    /// Canonical JSON text: what is hashed, stored and returned.
    pub metadata: Metadata,
    pub prev_hash: String,
    pub hash: String,
}

/// An event before the writer has placed it in the chain.
#[derive(Debug, Clone, PartialEq)]
pub struct NewEvent {
    pub id: String,
    pub timestamp: DateTime<Utc>,
    pub event_type: EventType,
    pub level: Level,
    pub message: String,
    pub request_id: Option<String>,
    /// Canonical JSON text, written on the producer's thread so the
    /// single writer only hashes and appends it.
    pub metadata: Metadata,
}

/// The standard event types, plus caller-defined `UPPER_SNAKE` names.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventType {
    Request,
    Response,
    ComplianceCheck,
    ComplianceViolation,
    Error,
    Authentication,
    Configuration,
    System,
    Custom,
    /// A signed checkpoint over the chain (see [`checkpoint`]); written by
    /// the writer only.
    Checkpoint,
    /// A caller-defined type such as `USER_LOGIN`; always a valid
    /// `UPPER_SNAKE` name that is not one of the standard ones.
    Other(String),
}

/// Event severity, ordered from least to most severe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Level {
    Debug,
    Info,
    Warning,
    Error,
    Critical,
}

/// Why a string is not an acceptable event type or level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("event type must be 1 to 64 characters of A-Z, 0-9 and _, starting with a letter")]
    BadEventType,
    #[error("level must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")]
    BadLevel,
}

/// Formats a timestamp the way every event carries it: RFC 3339, UTC,
/// microseconds, `Z` suffix. Fixed width, so text order is time order.
pub fn format_timestamp(ts: &DateTime<Utc>) -> String {
    timestamp_text(ts).as_str().to_owned()
}

/// A timestamp's text as [`format_timestamp`] writes it, on the stack
/// (hashing and storing an event need it for a moment only).
pub enum TimestampText {
    Fixed([u8; 27]),
    Other(String),
}

impl TimestampText {
    pub fn as_str(&self) -> &str {
        match self {
            // Only ASCII digits and separators are ever written there.
            TimestampText::Fixed(bytes) => std::str::from_utf8(bytes).unwrap_or_default(),
            TimestampText::Other(text) => text,
        }
    }
}

/// [`format_timestamp`] without a new string for the usual timestamp.
pub fn timestamp_text(ts: &DateTime<Utc>) -> TimestampText {
    // Every event is formatted several times (hash, row, export), and
    // chrono's format strings are interpreted on each call; four-digit
    // years, the only ones an event carries in practice, take a direct path.
    // Events of one second share their date and time of day: those are
    // worked out once per second per thread, and only the microseconds per
    // call.
    thread_local! {
        static SECOND: Cell<Option<(i64, [u8; 20])>> = const { Cell::new(None) };
    }
    let micros = ts.nanosecond() / 1_000;
    if micros >= 1_000_000 {
        return chrono_text(ts);
    }
    let second = ts.timestamp();
    let head = match SECOND.get() {
        Some((cached, head)) if cached == second => head,
        _ => {
            let Some(head) = second_text(ts) else {
                return chrono_text(ts);
            };
            SECOND.set(Some((second, head)));
            head
        }
    };
    let mut out = [0u8; 27];
    out[..20].copy_from_slice(&head);
    write_digits(micros, &mut out[20..26]);
    out[26] = b'Z';
    TimestampText::Fixed(out)
}

/// `YYYY-MM-DDTHH:MM:SS.` of a four-digit year; `None` for other years.
fn second_text(ts: &DateTime<Utc>) -> Option<[u8; 20]> {
    let year = ts.year();
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut out = [0u8; 20];
    let fields = [
        (year as u32, 4, b'-'),
        (ts.month(), 2, b'-'),
        (ts.day(), 2, b'T'),
        (ts.hour(), 2, b':'),
        (ts.minute(), 2, b':'),
        (ts.second(), 2, b'.'),
    ];
    let mut at = 0;
    for (value, width, separator) in fields {
        write_digits(value, &mut out[at..at + width]);
        out[at + width] = separator;
        at += width + 1;
    }
    Some(out)
}

/// `value` in decimal, zero-padded to fill `out`.
fn write_digits(mut value: u32, out: &mut [u8]) {
    for place in out.iter_mut().rev() {
        *place = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

fn chrono_text(ts: &DateTime<Utc>) -> TimestampText {
    TimestampText::Other(ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string())
}

/// Parses an RFC 3339 timestamp with any offset into UTC.
pub fn parse_timestamp(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// The current time at the precision events keep, so a stored and re-read
/// timestamp compares equal to the one that was hashed.
pub fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

/// A fresh time-ordered id (UUID v7), as text.
pub fn new_id() -> String {
    with_new_id(str::to_owned)
}

/// A fresh id as [`new_id`] writes it, handed to `keep` from the stack
/// (written without the formatting machinery, and copied once).
pub fn with_new_id<T>(keep: impl FnOnce(&str) -> T) -> T {
    let mut buf = Uuid::encode_buffer();
    keep(Uuid::now_v7().hyphenated().encode_lower(&mut buf))
}

// === impl NewEvent ===

impl NewEvent {
    /// A new event of `event_type` at its default level, stamped now.
    pub fn new(event_type: EventType, message: impl Into<String>) -> Self {
        let level = event_type.default_level();
        Self {
            id: new_id(),
            timestamp: now(),
            event_type,
            level,
            message: message.into(),
            request_id: None,
            metadata: Metadata::empty(),
        }
    }

    pub fn with_level(mut self, level: Level) -> Self {
        self.level = level;
        self
    }

    pub fn with_request_id(mut self, request_id: impl Into<String>) -> Self {
        self.request_id = Some(request_id.into());
        self
    }

    /// Sets the metadata: a `serde_json::Value`, or [`Metadata`] already
    /// written (see [`Metadata::of`]).
    pub fn with_metadata(mut self, metadata: impl Into<Metadata>) -> Self {
        self.metadata = metadata.into();
        self
    }

    /// Places the event in the chain after `prev_hash` with number `seq`.
    pub fn seal(self, seq: i64, prev_hash: &str) -> AuditEvent {
        let mut event = AuditEvent {
            id: self.id,
            seq,
            timestamp: self.timestamp,
            event_type: self.event_type,
            level: self.level,
            message: self.message,
            request_id: self.request_id,
            metadata: self.metadata,
            prev_hash: prev_hash.to_owned(),
            hash: String::new(),
        };
        event.hash = chain::event_hash(&event);
        event
    }

    /// The metadata as a tree (parsed from its text).
    pub fn metadata_value(&self) -> serde_json::Value {
        self.metadata.value()
    }
}

// === impl AuditEvent ===

impl AuditEvent {
    /// `metadata` as canonical JSON: the text that is hashed and stored.
    pub fn metadata_text(&self) -> &str {
        self.metadata.as_str()
    }

    /// The metadata as a tree (parsed from its text), for readers that
    /// look inside it.
    pub fn metadata_value(&self) -> serde_json::Value {
        self.metadata.value()
    }
}

// === impl EventType ===

impl EventType {
    const STANDARD: [(EventType, &'static str); 10] = [
        (EventType::Request, "REQUEST"),
        (EventType::Response, "RESPONSE"),
        (EventType::ComplianceCheck, "COMPLIANCE_CHECK"),
        (EventType::ComplianceViolation, "COMPLIANCE_VIOLATION"),
        (EventType::Error, "ERROR"),
        (EventType::Authentication, "AUTHENTICATION"),
        (EventType::Configuration, "CONFIGURATION"),
        (EventType::System, "SYSTEM"),
        (EventType::Custom, "CUSTOM"),
        (EventType::Checkpoint, "CHECKPOINT"),
    ];

    pub fn as_str(&self) -> &str {
        match self {
            EventType::Request => "REQUEST",
            EventType::Response => "RESPONSE",
            EventType::ComplianceCheck => "COMPLIANCE_CHECK",
            EventType::ComplianceViolation => "COMPLIANCE_VIOLATION",
            EventType::Error => "ERROR",
            EventType::Authentication => "AUTHENTICATION",
            EventType::Configuration => "CONFIGURATION",
            EventType::System => "SYSTEM",
            EventType::Custom => "CUSTOM",
            EventType::Checkpoint => "CHECKPOINT",
            EventType::Other(name) => name,
        }
    }

    /// The level an event of this type gets when its producer names none.
    pub fn default_level(&self) -> Level {
        match self {
            EventType::ComplianceViolation | EventType::Authentication => Level::Warning,
            EventType::Error => Level::Error,
            _ => Level::Info,
        }
    }

    pub fn is_standard(&self) -> bool {
        !matches!(self, EventType::Other(_))
    }
}

impl FromStr for EventType {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some((t, _)) = Self::STANDARD.iter().find(|(_, name)| *name == s) {
            return Ok(t.clone());
        }
        let valid = (1..=64).contains(&s.len())
            && s.starts_with(|c: char| c.is_ascii_uppercase())
            && s.chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        if valid {
            Ok(EventType::Other(s.to_owned()))
        } else {
            Err(ParseError::BadEventType)
        }
    }
}

impl fmt::Display for EventType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

// === impl Level ===

impl Level {
    pub const ALL: [Level; 5] = [
        Level::Debug,
        Level::Info,
        Level::Warning,
        Level::Error,
        Level::Critical,
    ];

    pub fn as_str(&self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
            Level::Critical => "CRITICAL",
        }
    }

    /// A number that sorts like the level, for stores that filter by minimum.
    pub fn rank(&self) -> i64 {
        match self {
            Level::Debug => 10,
            Level::Info => 20,
            Level::Warning => 30,
            Level::Error => 40,
            Level::Critical => 50,
        }
    }
}

impl FromStr for Level {
    type Err = ParseError;

    /// Accepts any case, and `WARN` for `WARNING`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        // Compared in place: every stored row's level goes through here.
        if s.eq_ignore_ascii_case("WARN") {
            return Ok(Level::Warning);
        }
        Level::ALL
            .into_iter()
            .find(|l| s.eq_ignore_ascii_case(l.as_str()))
            .ok_or(ParseError::BadLevel)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Level {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Level {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod timestamp_format {
    use super::*;

    pub fn serialize<S: Serializer>(ts: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(ts))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let s = String::deserialize(d)?;
        parse_timestamp(&s).ok_or_else(|| serde::de::Error::custom("timestamp is not RFC 3339"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_format_as_chrono_does() {
        let chrono_format = |ts: &DateTime<Utc>| ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        let mut secs: i64 = -62_135_596_800; // 0001-01-01
        let mut nanos: u32 = 0;
        for _ in 0..20_000 {
            let ts = DateTime::from_timestamp(secs, nanos).unwrap_or_default();
            assert_eq!(format_timestamp(&ts), chrono_format(&ts), "{secs} {nanos}");
            secs = secs.wrapping_add(15_778_463_987);
            nanos = (nanos + 123_456_789) % 1_000_000_000;
            if secs > 253_402_300_799 {
                secs -= 253_402_300_799 + 62_135_596_800;
            }
        }
        // Outside four-digit years and inside a leap second: chrono's own path.
        let far = DateTime::from_timestamp(260_000_000_000, 5_000).unwrap_or_default();
        assert_eq!(format_timestamp(&far), chrono_format(&far));
        let leap = DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap_or_default();
        assert_eq!(format_timestamp(&leap), chrono_format(&leap));
        assert_eq!(
            format_timestamp(&DateTime::from_timestamp(1_700_000_000, 42_000).unwrap_or_default()),
            "2023-11-14T22:13:20.000042Z"
        );
    }

    #[test]
    fn timestamps_of_one_second_and_the_next_format_as_chrono_does() {
        // The date and time of day are kept per second: events within one
        // second, across a second, a day and a year's end, and back in time.
        let chrono_format = |ts: &DateTime<Utc>| ts.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        for secs in [
            1_700_000_000_i64,
            1_704_067_199,
            1_704_067_200,
            1_700_000_000,
        ] {
            for nanos in [0, 1_000, 999_999_000, 500_000_000, 1_999_000, 0] {
                let ts = DateTime::from_timestamp(secs, nanos).unwrap_or_default();
                assert_eq!(format_timestamp(&ts), chrono_format(&ts), "{secs} {nanos}");
                // A leap second, then a far year, then the same second again.
                for other in [
                    DateTime::from_timestamp(secs, 1_000_000_000 + nanos),
                    DateTime::from_timestamp(secs + 300_000_000_000, nanos),
                    Some(ts),
                ] {
                    let other = other.unwrap_or_default();
                    assert_eq!(format_timestamp(&other), chrono_format(&other));
                }
            }
        }
    }

    #[test]
    fn event_types_round_trip_and_reject_bad_names() {
        for (t, name) in EventType::STANDARD.iter() {
            assert_eq!(name.parse::<EventType>().unwrap(), *t);
            assert_eq!(t.as_str(), *name);
        }
        assert_eq!(
            "USER_LOGIN".parse::<EventType>().unwrap(),
            EventType::Other("USER_LOGIN".into())
        );
        for bad in ["", "user_login", "1ABC", "A-B", "A B", &"A".repeat(65)] {
            assert!(bad.parse::<EventType>().is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn levels_order_and_parse_any_case() {
        assert!(Level::Debug < Level::Info && Level::Error < Level::Critical);
        assert_eq!("warn".parse::<Level>().unwrap(), Level::Warning);
        assert_eq!("Critical".parse::<Level>().unwrap(), Level::Critical);
        assert!("loud".parse::<Level>().is_err());
    }

    #[test]
    fn default_levels_follow_the_contract() {
        assert_eq!(EventType::Request.default_level(), Level::Info);
        assert_eq!(
            EventType::ComplianceViolation.default_level(),
            Level::Warning
        );
        assert_eq!(EventType::Authentication.default_level(), Level::Warning);
        assert_eq!(EventType::Error.default_level(), Level::Error);
        assert_eq!(
            EventType::Other("USER_LOGIN".into()).default_level(),
            Level::Info
        );
    }

    #[test]
    fn timestamps_have_fixed_width_microseconds() {
        let ts = parse_timestamp("2026-01-02T03:04:05.5+01:00").unwrap();
        assert_eq!(format_timestamp(&ts), "2026-01-02T02:04:05.500000Z");
        let json =
            serde_json::to_value(NewEvent::new(EventType::System, "x").seal(1, "00")).unwrap();
        let s = json["timestamp"].as_str().unwrap();
        assert_eq!(s.len(), 27);
        assert!(s.ends_with('Z'));
    }
}

//! [`EventRecord`]: an event as pages and exports serialise it, with its
//! metadata kept as JSON text.
//!
//! Serialising an [`AuditEvent`] turns its metadata `Value` back into text.
//! A store that keeps that text (SQLite) hands it over as it is, after a
//! validation pass that costs a fraction of building the `Value` and
//! writing it out again. A record serialises to the same bytes as the
//! event it stands for.

use std::ops::Range;

use serde::Serialize;
use serde_json::value::RawValue;

use super::{format_timestamp, parse_timestamp, AuditEvent, EventType, Level, Metadata};

/// One stored event, ready to serialise: the fields of [`AuditEvent`], in
/// the same order and with the same encodings.
#[derive(Debug, Clone, Serialize)]
pub struct EventRecord {
    pub id: String,
    pub seq: i64,
    /// As [`format_timestamp`] writes it.
    pub timestamp: String,
    pub event_type: EventType,
    pub level: Level,
    pub message: String,
    pub request_id: Option<String>,
    /// Always valid JSON: a [`RawValue`] cannot hold anything else.
    pub metadata: Box<RawValue>,
    pub prev_hash: String,
    pub hash: String,
    /// Where the event came from, in a store of many sources (the central
    /// store); absent from a local store's records, which then serialise
    /// exactly as their events.
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    pub origin: Option<Box<Origin>>,
}

/// The source of a central store's record: the store it was shipped from
/// and where that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Origin {
    pub source_id: String,
    pub pod: Option<String>,
    pub namespace: Option<String>,
    pub node: Option<String>,
    /// The central row's place in arrival order, which pages continue
    /// from.
    #[serde(skip)]
    pub row_id: i64,
}

/// The width of a timestamp as [`format_timestamp`] writes it.
const TIMESTAMP_LEN: usize = "2000-01-01T00:00:00.000000Z".len();

/// Takes `text` as a timestamp in the form [`format_timestamp`] writes, or
/// `None` when it is not RFC 3339.
///
/// Text already in that form (every timestamp this product stores) is
/// checked and returned as it is; anything else goes through a parse and
/// is written out again.
pub fn canonical_timestamp(text: String) -> Option<String> {
    if is_canonical_timestamp(text.as_bytes()) {
        Some(text)
    } else {
        parse_timestamp(&text).map(|t| format_timestamp(&t))
    }
}

/// Whether `b` is `YYYY-MM-DDTHH:MM:SS.ffffffZ` naming a real instant, so
/// that a parse and format would give it back unchanged. Leap seconds and
/// other offsets are left to the slow path.
fn is_canonical_timestamp(b: &[u8]) -> bool {
    const SHAPE: &[u8; TIMESTAMP_LEN] = b"dddd-dd-ddTdd:dd:dd.ddddddZ";
    if b.len() != TIMESTAMP_LEN {
        return false;
    }
    let shaped = b.iter().zip(SHAPE).all(|(c, s)| match s {
        b'd' => c.is_ascii_digit(),
        _ => c == s,
    });
    if !shaped {
        return false;
    }
    let num = |r: Range<usize>| b[r].iter().fold(0u32, |n, d| n * 10 + u32::from(d - b'0'));
    let year = num(0..4);
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    let days = match num(5..7) {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if leap => 29,
        2 => 28,
        _ => return false,
    };
    (1..=days).contains(&num(8..10)) && num(11..13) < 24 && num(14..16) < 60 && num(17..19) < 60
}

// === impl EventRecord ===

impl TryFrom<AuditEvent> for EventRecord {
    type Error = serde_json::Error;

    fn try_from(event: AuditEvent) -> Result<Self, Self::Error> {
        let metadata = RawValue::from_string(event.metadata.as_str().to_owned())?;
        Ok(Self {
            id: event.id,
            seq: event.seq,
            timestamp: format_timestamp(&event.timestamp),
            event_type: event.event_type,
            level: event.level,
            message: event.message,
            request_id: event.request_id,
            metadata,
            prev_hash: event.prev_hash,
            hash: event.hash,
            origin: None,
        })
    }
}

impl EventRecord {
    /// The event this record stands for, with its metadata parsed. Fails
    /// naming the field that cannot be what it stands for.
    pub fn into_event(self) -> Result<AuditEvent, &'static str> {
        let timestamp = parse_timestamp(&self.timestamp).ok_or("timestamp is not RFC 3339")?;
        let metadata =
            Metadata::from_json(self.metadata.get()).map_err(|_| "metadata is not valid JSON")?;
        Ok(AuditEvent {
            id: self.id,
            seq: self.seq,
            timestamp,
            event_type: self.event_type,
            level: self.level,
            message: self.message,
            request_id: self.request_id,
            metadata,
            prev_hash: self.prev_hash,
            hash: self.hash,
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::{TimeZone, Utc};
    use serde_json::json;

    use super::*;
    use crate::event::NewEvent;

    #[test]
    fn a_record_serialises_like_its_event() {
        let new = NewEvent::new(EventType::Response, "200 chat.create")
            .with_request_id("req-1")
            .with_metadata(json!({"b": [1, 2.5, "x\"y\n"], "a": {"z": null, "é": true}}));
        let event = new.seal(7, "00");
        let record = EventRecord::try_from(event.clone()).unwrap();
        assert_eq!(
            serde_json::to_string(&record).unwrap(),
            serde_json::to_string(&event).unwrap()
        );
        assert_eq!(record.into_event().unwrap(), event);
    }

    #[test]
    fn canonical_timestamps_pass_through_and_others_are_normalised() {
        let stamps = [
            Utc.with_ymd_and_hms(2024, 2, 29, 23, 59, 59).unwrap(),
            Utc.with_ymd_and_hms(2000, 2, 29, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(1999, 12, 31, 12, 30, 5).unwrap(),
        ];
        for t in stamps {
            let text = format_timestamp(&t);
            assert!(is_canonical_timestamp(text.as_bytes()), "{text}");
            assert_eq!(canonical_timestamp(text.clone()).as_deref(), Some(&*text));
        }
        // Other RFC 3339 spellings take the slow path, as before.
        for (other, normal) in [
            ("2024-03-01T01:02:03+01:00", "2024-03-01T00:02:03.000000Z"),
            ("2024-01-01 00:00:00.000000Z", "2024-01-01T00:00:00.000000Z"),
            ("2024-01-01T00:00:00.5Z", "2024-01-01T00:00:00.500000Z"),
        ] {
            assert!(!is_canonical_timestamp(other.as_bytes()), "{other}");
            assert_eq!(canonical_timestamp(other.into()).as_deref(), Some(normal));
        }
        // Impossible dates and times are not canonical, and chrono rejects
        // them too, so the row they sit in reads as corrupt.
        for bad in [
            "2023-02-29T00:00:00.000000Z",
            "2100-02-29T00:00:00.000000Z",
            "2024-04-31T00:00:00.000000Z",
            "2024-13-01T00:00:00.000000Z",
            "2024-01-00T00:00:00.000000Z",
            "2024-01-01T24:00:00.000000Z",
            "2024-01-01T00:60:00.000000Z",
            "2024-01-01T00:00:00.000000",
            "not a time",
            "",
        ] {
            assert!(!is_canonical_timestamp(bad.as_bytes()), "{bad}");
            assert_eq!(canonical_timestamp(bad.into()), None, "{bad}");
        }
    }

    #[test]
    fn every_day_of_a_leap_cycle_agrees_with_chrono() {
        let mut t = Utc.with_ymd_and_hms(1999, 12, 25, 23, 59, 58).unwrap();
        while t.format("%Y").to_string() != "2004" {
            let text = format_timestamp(&t);
            assert!(is_canonical_timestamp(text.as_bytes()), "{text}");
            t += chrono::Duration::hours(23);
        }
    }
}

//! Query-string parsing shared by `/api/events` and `/api/export`.
//!
//! Unknown parameters are refused rather than ignored, so a typo such as
//! `evnt_type` cannot silently widen a query to every event. Each error
//! names the parameter it is about.

use std::collections::BTreeMap;

use crate::event::{parse_timestamp, EventType, Level};
use crate::store::{EventFilter, DEFAULT_QUERY_LIMIT, MAX_QUERY_LIMIT};

use super::error::AdminError;

/// The filter parameters both endpoints accept.
pub const FILTER_PARAMS: [&str; 10] = [
    "event_type",
    "event_types",
    "start_time",
    "end_time",
    "request_id",
    "level",
    "policy_name",
    "source",
    "pod",
    "namespace",
];

/// Parsed query parameters: each accepted name with the values given.
#[derive(Debug, Default)]
pub struct Params {
    values: BTreeMap<String, Vec<String>>,
}

// === impl Params ===

impl Params {
    /// Parses `raw`, refusing any name outside `allowed`.
    pub fn parse(raw: Option<&str>, allowed: &[&str]) -> Result<Self, AdminError> {
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (name, value) in form_urlencoded::parse(raw.unwrap_or("").as_bytes()) {
            if !allowed.contains(&name.as_ref()) {
                return Err(AdminError::invalid(
                    name.as_ref(),
                    format!(
                        "unknown query parameter `{name}`; accepted: {}",
                        allowed.join(", ")
                    ),
                ));
            }
            values
                .entry(name.into_owned())
                .or_default()
                .push(value.into_owned());
        }
        Ok(Self { values })
    }

    /// The one value of `name`, refusing repeats.
    pub fn single(&self, name: &str) -> Result<Option<&str>, AdminError> {
        match self.values.get(name).map(Vec::as_slice) {
            None | Some([]) => Ok(None),
            Some([one]) => Ok(Some(one)),
            Some(_) => Err(AdminError::invalid(
                name,
                format!("`{name}` may be given only once"),
            )),
        }
    }

    /// `limit`: 1 to [`MAX_QUERY_LIMIT`], default [`DEFAULT_QUERY_LIMIT`].
    pub fn limit(&self) -> Result<usize, AdminError> {
        let Some(raw) = self.single("limit")? else {
            return Ok(DEFAULT_QUERY_LIMIT);
        };
        match raw.parse::<usize>() {
            Ok(n) if (1..=MAX_QUERY_LIMIT).contains(&n) => Ok(n),
            _ => Err(AdminError::invalid(
                "limit",
                format!("`limit` must be an integer from 1 to {MAX_QUERY_LIMIT}"),
            )),
        }
    }

    /// `cursor`: the opaque `next_cursor` of a previous page.
    pub fn cursor(&self) -> Result<Option<i64>, AdminError> {
        let Some(raw) = self.single("cursor")? else {
            return Ok(None);
        };
        decode_cursor(raw).map(Some).ok_or_else(|| {
            AdminError::invalid(
                "cursor",
                "`cursor` is not a cursor returned by this API (use `next_cursor` as given)",
            )
        })
    }

    /// The event filter from `event_type`/`event_types`, `start_time`,
    /// `end_time`, `request_id` and `level`.
    pub fn filter(&self) -> Result<EventFilter, AdminError> {
        let mut filter = EventFilter::default();
        for name in ["event_type", "event_types"] {
            for list in self.values.get(name).into_iter().flatten() {
                for item in list.split(',') {
                    let event_type: EventType = item.trim().parse().map_err(|_| {
                        AdminError::invalid(
                            name,
                            format!(
                                "`{name}` must be a comma-separated list of event types \
                                 (UPPER_SNAKE names such as REQUEST or USER_LOGIN)"
                            ),
                        )
                    })?;
                    if !filter.event_types.contains(&event_type) {
                        filter.event_types.push(event_type);
                    }
                }
            }
        }
        filter.start_time = self.time("start_time")?;
        filter.end_time = self.time("end_time")?;
        if let (Some(start), Some(end)) = (filter.start_time, filter.end_time) {
            if end <= start {
                return Err(AdminError::invalid(
                    "end_time",
                    "`end_time` must be later than `start_time`",
                ));
            }
        }
        if let Some(request_id) = self.single("request_id")? {
            if !valid_request_id(request_id) {
                return Err(AdminError::invalid(
                    "request_id",
                    "`request_id` must be 1 to 128 characters of letters, digits and -_.:",
                ));
            }
            filter.request_id = Some(request_id.to_owned());
        }
        if let Some(policy) = self.single("policy_name")? {
            if policy.is_empty() || policy.len() > 200 {
                return Err(AdminError::invalid(
                    "policy_name",
                    "`policy_name` must be 1 to 200 characters",
                ));
            }
            filter.policy_name = Some(policy.to_owned());
        }
        filter.source = self.origin("source")?;
        filter.pod = self.origin("pod")?;
        filter.namespace = self.origin("namespace")?;
        if let Some(level) = self.single("level")? {
            filter.min_level = Some(level.parse::<Level>().map_err(|_| {
                AdminError::invalid(
                    "level",
                    "`level` must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL",
                )
            })?);
        }
        Ok(filter)
    }

    /// `source`, `pod` or `namespace`: 1 to 253 characters (a DNS name's
    /// most), no control characters.
    fn origin(&self, name: &str) -> Result<Option<String>, AdminError> {
        let Some(value) = self.single(name)? else {
            return Ok(None);
        };
        if value.is_empty() || value.len() > 253 || value.chars().any(char::is_control) {
            return Err(AdminError::invalid(
                name,
                format!("`{name}` must be 1 to 253 characters, none of them control characters"),
            ));
        }
        Ok(Some(value.to_owned()))
    }

    fn time(&self, name: &str) -> Result<Option<chrono::DateTime<chrono::Utc>>, AdminError> {
        let Some(raw) = self.single(name)? else {
            return Ok(None);
        };
        parse_timestamp(raw).map(Some).ok_or_else(|| {
            AdminError::invalid(
                name,
                format!("`{name}` must be an RFC 3339 timestamp such as 2026-01-02T03:04:05Z"),
            )
        })
    }
}

/// The cursor handed to clients for a page's `next_before_seq`.
pub fn encode_cursor(before_seq: i64) -> String {
    before_seq.to_string()
}

fn decode_cursor(raw: &str) -> Option<i64> {
    // Plain digits only: no sign, no spaces, and a seq is never below 1.
    if raw.is_empty() || !raw.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    raw.parse::<i64>().ok().filter(|seq| *seq >= 1)
}

/// The request id rule of the contract: 1 to 128 characters of letters,
/// digits and `-_.:`.
pub fn valid_request_id(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_reject_junk() {
        assert_eq!(decode_cursor(&encode_cursor(42)), Some(42));
        for bad in [
            "",
            "0",
            "-1",
            "+3",
            " 1",
            "1e3",
            "abc",
            "99999999999999999999",
        ] {
            assert_eq!(decode_cursor(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn origin_filters_are_kept_or_refused_by_name() {
        let p = Params::parse(
            Some("source=abc-1&pod=pod-a&namespace=team-x"),
            &FILTER_PARAMS,
        )
        .unwrap();
        let f = p.filter().unwrap();
        assert_eq!(f.source.as_deref(), Some("abc-1"));
        assert_eq!(f.pod.as_deref(), Some("pod-a"));
        assert_eq!(f.namespace.as_deref(), Some("team-x"));
        let long = format!("pod={}", "a".repeat(254));
        for (query, param) in [
            ("pod=", "pod"),
            ("namespace=a%01b", "namespace"),
            (long.as_str(), "pod"),
            ("source=a&source=b", "source"),
        ] {
            match Params::parse(Some(query), &FILTER_PARAMS).unwrap().filter() {
                Err(AdminError::InvalidParameter { param: p, .. }) => assert_eq!(p, param),
                other => panic!("{query}: {other:?}"),
            }
        }
    }

    #[test]
    fn event_type_lists_merge_aliases() {
        let p = Params::parse(
            Some("event_type=REQUEST,RESPONSE&event_types=USER_LOGIN"),
            &FILTER_PARAMS,
        )
        .unwrap();
        let f = p.filter().unwrap();
        assert_eq!(f.event_types.len(), 3);
    }
}

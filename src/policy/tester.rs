//! `llm-audit-proxy policy test`: what the policies make of a text or a
//! request body, before they are deployed. Reports every finding with its
//! place and span, the verdict the proxy would reach, and the copy it
//! would store.

use std::fmt::Write as _;

use serde::Serialize;
use serde_json::Value;

use super::{Action, Direction, Located, PolicySet};

/// What the policies make of one input.
#[derive(Debug, Clone, Serialize)]
pub struct TestReport {
    pub direction: Direction,
    /// Whether the input was read as JSON (otherwise as one text).
    pub json: bool,
    pub findings: Vec<Located>,
    /// `clean`, `logged`, `redacted` or `blocked`.
    pub verdict: &'static str,
    /// The `block` policy that would refuse the call or cut the answer.
    pub blocked_by: Option<String>,
    /// Policies that found something, in policy order.
    pub violated: Vec<String>,
    /// The copy the store would keep.
    pub redacted: Value,
}

/// Runs `set` over `input` for `direction`. Input that parses as JSON (a
/// leading BOM skipped) is read as a body; anything else as one text.
pub fn test_input(set: &PolicySet, input: &[u8], direction: Direction) -> TestReport {
    let bytes = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let (body, json) = match serde_json::from_slice::<Value>(bytes) {
        Ok(v) if v.is_object() || v.is_array() => (v, true),
        _ => (
            Value::String(String::from_utf8_lossy(bytes).into_owned()),
            false,
        ),
    };
    let findings = set.explain(&body, direction);
    let scan = set.scan(&body, direction);
    let mut redacted = body;
    set.inspect(&mut redacted, direction);
    let blocked_by = scan.blocking().map(|v| v.policy_name.to_string());
    let violated: Vec<String> = scan
        .violations()
        .map(|v| v.policy_name.to_string())
        .collect();
    let verdict = if blocked_by.is_some() {
        "blocked"
    } else if scan.violations().any(|v| v.action == Action::Redact)
        || findings.iter().any(|f| f.secret)
    {
        "redacted"
    } else if !violated.is_empty() {
        "logged"
    } else {
        "clean"
    };
    TestReport {
        direction,
        json,
        findings,
        verdict,
        blocked_by,
        violated,
        redacted,
    }
}

// === impl TestReport ===

impl TestReport {
    /// Whether nothing at all was found.
    pub fn is_clean(&self) -> bool {
        self.findings.is_empty()
    }

    /// The report for people: one line per finding, the verdict, then the
    /// stored copy.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "Input read as {} ({}).",
            if self.json { "a JSON body" } else { "text" },
            self.direction
        );
        if self.findings.is_empty() {
            out.push_str("Findings: none.\n");
        } else {
            out.push_str("Findings:\n");
            for f in &self.findings {
                let place = if f.pointer.is_empty() {
                    "text".to_owned()
                } else {
                    f.pointer.clone()
                };
                let mut by: Vec<String> = f
                    .policies
                    .iter()
                    .map(|(name, action)| format!("{name} ({action})"))
                    .collect();
                if f.secret {
                    by.push("always redacted (secret)".into());
                }
                if by.is_empty() {
                    by.push("no policy for this direction".into());
                }
                let _ = writeln!(
                    out,
                    "  {:<16} {place} [{}..{}]  {}",
                    f.entity_type,
                    f.start,
                    f.end,
                    by.join(", ")
                );
            }
        }
        let _ = match &self.blocked_by {
            Some(policy) => writeln!(out, "Verdict: blocked by {policy}."),
            None if self.violated.is_empty() => writeln!(out, "Verdict: {}.", self.verdict),
            None => writeln!(
                out,
                "Verdict: {} (violated: {}).",
                self.verdict,
                self.violated.join(", ")
            ),
        };
        out.push_str("Stored as:\n");
        match &self.redacted {
            Value::String(s) => out.push_str(s),
            other => out.push_str(&serde_json::to_string_pretty(other).unwrap_or_default()),
        }
        out.push('\n');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{load_pack, PolicySet};

    fn pci() -> PolicySet {
        PolicySet::compile(&load_pack("pci").unwrap()).unwrap()
    }

    #[test]
    fn a_text_with_a_card_is_blocked_and_stored_redacted() {
        let text = "Please bill 5555 5555 5555 4444 today";
        let report = test_input(&pci(), text.as_bytes(), Direction::Request);
        assert!(!report.json);
        assert_eq!(report.verdict, "blocked");
        assert_eq!(report.blocked_by.as_deref(), Some("pci-card-block"));
        assert_eq!(report.findings.len(), 1);
        let f = &report.findings[0];
        assert_eq!(f.entity_type, "CREDIT_CARD");
        assert_eq!(&text[f.start..f.end], "5555 5555 5555 4444");
        assert_eq!(report.redacted, "Please bill [REDACTED:CREDIT_CARD] today");
        let shown = report.render();
        assert!(shown.contains("CREDIT_CARD"), "{shown}");
        assert!(shown.contains("pci-card-block (block)"), "{shown}");
        assert!(!shown.contains("5555 5555"), "{shown}");
        assert!(!report.is_clean());
    }

    #[test]
    fn a_json_body_reports_pointers_and_pieces_over_messages() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"card 5555 5555"},{"role":"user","content":"5555 4444"}]}"#;
        let report = test_input(&pci(), body, Direction::Request);
        assert!(report.json);
        assert_eq!(report.verdict, "blocked");
        let places: Vec<&str> = report.findings.iter().map(|f| f.pointer.as_str()).collect();
        assert_eq!(places, ["/messages/0/content", "/messages/1/content"]);
        assert_eq!(
            report.redacted["messages"][1]["content"],
            "[REDACTED:CREDIT_CARD]"
        );
    }

    #[test]
    fn clean_text_is_clean_and_secrets_are_redacted_without_policies() {
        let set = PolicySet::compile(&[]).unwrap();
        let clean = test_input(&set, b"nothing to see", Direction::Response);
        assert!(clean.is_clean());
        assert_eq!(clean.verdict, "clean");
        let secret = test_input(
            &set,
            b"key sk-proj-Zq81Wn5Rt0Yp3Lk7Hd2Fb6Xc9Vm4Ns1Qa",
            Direction::Request,
        );
        assert_eq!(secret.verdict, "redacted");
        assert!(!secret.is_clean());
        assert!(secret.render().contains("always redacted (secret)"));
    }
}

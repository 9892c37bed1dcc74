//! `llm-audit-proxy policy test`, the real binary: reports, verdicts and
//! exit codes for operators tuning a policy.

use std::io::Write;
use std::process::{Command, Stdio};

const BIN: &str = env!("CARGO_BIN_EXE_llm-audit-proxy");

/// Runs `policy test` with `args`, `input` on stdin; exit code and stdout.
fn policy_test(args: &[&str], input: &str) -> (i32, String, String) {
    let mut child = Command::new(BIN)
        .args(["policy", "test"])
        .args(args)
        .env_remove("LLM_AUDIT_PROXY_CONFIG")
        .env_remove("LLM_AUDIT_PROXY_POLICY_PACKS")
        .env_remove("LLM_AUDIT_PROXY_POLICIES")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A command refused for its flags exits without reading its input.
    let written = child.stdin.take().unwrap().write_all(input.as_bytes());
    if let Err(error) = written {
        assert_eq!(error.kind(), std::io::ErrorKind::BrokenPipe, "{error}");
    }
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn a_violation_exits_1_and_shows_finding_verdict_and_stored_copy() {
    let (code, out, _) = policy_test(&["--pack", "pci"], "Please bill 5555 5555 5555 4444 today");
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("CREDIT_CARD"), "{out}");
    assert!(out.contains("[12..31]"), "{out}");
    assert!(out.contains("blocked by pci-card-block"), "{out}");
    assert!(
        out.contains("Please bill [REDACTED:CREDIT_CARD] today"),
        "{out}"
    );
}

#[test]
fn clean_text_exits_0() {
    let (code, out, _) = policy_test(
        &["--pack", "pci", "--pack", "pii-basic", "-"],
        "Nothing to see here.",
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("Verdict: clean"), "{out}");
}

#[test]
fn a_json_body_from_a_file_reports_as_json() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("body.json");
    std::fs::write(
        &file,
        r#"{"model":"m","messages":[{"role":"user","content":"mail jane@example.com"}]}"#,
    )
    .unwrap();
    let (code, out, _) = policy_test(
        &[
            "--pack",
            "pii-basic",
            "--json",
            "--direction",
            "response",
            file.to_str().unwrap(),
        ],
        "",
    );
    assert_eq!(code, 1, "{out}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["direction"], "response");
    assert_eq!(report["findings"][0]["entity_type"], "EMAIL");
    assert_eq!(report["findings"][0]["pointer"], "/messages/0/content");
    assert_eq!(
        report["redacted"]["messages"][0]["content"],
        "mail [REDACTED:EMAIL]"
    );
}

#[test]
fn bad_arguments_exit_64_naming_the_flag() {
    let (code, _, err) = policy_test(&["--pack", "no-such-pack"], "x");
    assert_eq!(code, 64);
    assert!(err.contains("--pack"), "{err}");
    let (code, _, err) = policy_test(&["--direction", "sideways"], "x");
    assert_eq!(code, 64);
    assert!(err.contains("--direction"), "{err}");
}

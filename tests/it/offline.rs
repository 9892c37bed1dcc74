//! The offline commands on a real store, while `serve` runs and after.

use std::path::Path;
use std::process::{Command, Output};

use chrono::Duration as ChronoDuration;
use llm_audit_proxy::event::{EventType, NewEvent};
use serde_json::{json, Value};

use crate::support::{append_to_store, MockUpstream, TestProxy};

const BIN: &str = env!("CARGO_BIN_EXE_llm-audit-proxy");

fn cli(dir: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(BIN);
    for (key, _) in std::env::vars() {
        if key.starts_with("LLM_AUDIT_PROXY_") {
            cmd.env_remove(key);
        }
    }
    cmd.args(args).arg("--file-path").arg(dir).output().unwrap()
}

fn stdout_json(out: &Output) -> Value {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn calls(proxy: &TestProxy, n: usize) {
    for i in 0..n {
        proxy
            .post_call("/v1/chat/completions", format!("off-{i}"))
            .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
    }
    proxy.wait_events("event_type=RESPONSE", n).await;
}

#[tokio::test]
async fn offline_events_and_export_answer_like_the_api_while_serve_runs() {
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_in(&mock.url(), tmp.path(), &[]).await;
    calls(&proxy, 3).await;

    for (api, flags) in [
        ("limit=100", vec![]),
        (
            "event_type=RESPONSE,REQUEST&limit=4",
            vec!["--event-type", "RESPONSE,REQUEST", "--limit", "4"],
        ),
        ("request_id=off-1", vec!["--request-id", "off-1"]),
        (
            "level=INFO&start_time=2000-01-01T00:00:00Z",
            vec!["--level", "INFO", "--start-time", "2000-01-01T00:00:00Z"],
        ),
    ] {
        let (_, from_api) = proxy.admin_get(&format!("/api/events?{api}")).await;
        let mut args = vec!["events", "--json"];
        args.extend(flags);
        let from_cli = stdout_json(&cli(tmp.path(), &args));
        assert_eq!(from_cli, from_api, "{api}");
    }

    let table = cli(tmp.path(), &["events", "--limit", "2"]);
    assert!(table.status.success());
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.starts_with("     SEQ  TIMESTAMP"), "{table}");
    assert!(table.contains("(more: --cursor"), "{table}");

    for format in ["json", "ndjson", "csv"] {
        let out_file = tmp.path().join(format!("export.{format}"));
        let out = cli(
            tmp.path(),
            &[
                "export",
                "--format",
                format,
                "--event-types",
                "REQUEST,RESPONSE",
                "--out",
                out_file.to_str().unwrap(),
            ],
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            out_file.to_str().unwrap()
        );
        let from_api = proxy
            .admin_text(&format!(
                "/api/export?format={format}&event_types=REQUEST,RESPONSE"
            ))
            .await;
        assert_eq!(
            std::fs::read_to_string(&out_file).unwrap(),
            from_api,
            "{format}"
        );
    }
    proxy.stop().await;
}

#[test]
fn bad_flags_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    for (args, flag) in [
        (vec!["events", "--limit", "0"], "--limit"),
        (vec!["events", "--start-time", "yesterday"], "--start-time"),
        (vec!["events", "--event-type", "bad type"], "--event-type"),
        (
            vec!["export", "--format", "xml", "--out", "/dev/null"],
            "--format",
        ),
    ] {
        let out = cli(tmp.path(), &args);
        assert_eq!(out.status.code(), Some(64), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(flag), "{args:?}: {stderr}");
    }
    let out = cli(tmp.path(), &["events", "--storage", "memory"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("audit.storage"));
    // No store yet: a clear failure, not an empty answer.
    let out = cli(tmp.path(), &["events"]);
    assert_eq!(out.status.code(), Some(70));
}

/// Writes `n` chained events stamped `age` ago.
async fn seed_old(dir: &Path, n: i64, age: ChronoDuration) {
    let events = (0..n)
        .map(|i| {
            let mut e = NewEvent::new(EventType::Other("USER_ACTION".into()), format!("old {i}"));
            e.timestamp = llm_audit_proxy::event::now() - age;
            e
        })
        .collect();
    append_to_store(dir, events).await;
}

#[tokio::test]
async fn purge_applies_retention_records_it_and_keeps_the_chain_valid() {
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    seed_old(tmp.path(), 5, ChronoDuration::days(200)).await;
    let proxy = TestProxy::start_in(
        &mock.url(),
        tmp.path(),
        &[("LLM_AUDIT_PROXY_RETENTION_DAYS", "36500")],
    )
    .await;
    calls(&proxy, 2).await;

    // Purge from the command line while serve keeps writing.
    let purge = Command::new(BIN)
        .args(["purge", "--file-path"])
        .arg(tmp.path())
        .env("LLM_AUDIT_PROXY_RETENTION_DAYS", "90")
        .output()
        .unwrap();
    let report = stdout_json(&purge);
    assert_eq!(report["purges"][0]["removed"], 5, "{report}");
    calls(&proxy, 2).await;

    let (_, page) = proxy
        .admin_get("/api/events?event_type=SYSTEM&limit=100")
        .await;
    let purges: Vec<&Value> = page["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["metadata"]["action"] == "purge")
        .collect();
    assert_eq!(purges.len(), 1);
    assert_eq!(purges[0]["metadata"]["removed"], 5);
    assert_eq!(purges[0]["metadata"]["reason"], "retention");
    let (_, old) = proxy.admin_get("/api/events?event_type=USER_ACTION").await;
    assert_eq!(old["events"].as_array().unwrap().len(), 0);

    let (_, verify) = proxy.admin_get("/api/verify").await;
    assert_eq!(verify["ok"], true, "{verify}");
    proxy.stop().await;
    let verify = stdout_json(&cli(tmp.path(), &["verify"]));
    assert_eq!(verify["ok"], true);
}

#[tokio::test]
async fn tampering_is_detected_by_verify_and_reported_by_serve() {
    let mock = MockUpstream::start().await;
    let tmp = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_in(&mock.url(), tmp.path(), &[]).await;
    calls(&proxy, 2).await;
    let (_, page) = proxy
        .admin_get("/api/events?event_type=REQUEST&request_id=off-0")
        .await;
    let target_seq = page["events"][0]["seq"].as_i64().unwrap();
    proxy.stop().await;

    let conn = rusqlite::Connection::open(tmp.path().join("audit.db")).unwrap();
    conn.execute(
        "UPDATE events SET message = 'edited' WHERE seq = ?1",
        [target_seq],
    )
    .unwrap();
    drop(conn);

    let out = cli(tmp.path(), &["verify"]);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad_seq"], target_seq);

    // serve still starts, serves, and records the break.
    let proxy = TestProxy::start_in(&mock.url(), tmp.path(), &[]).await;
    calls(&proxy, 1).await;
    let errors = proxy.wait_events("event_type=ERROR", 1).await;
    let broken = errors
        .iter()
        .find(|e| e["metadata"]["error_type"] == "chain_broken")
        .unwrap();
    assert_eq!(broken["metadata"]["details"]["first_bad_seq"], target_seq);
    let (_, verify) = proxy.admin_get("/api/verify").await;
    assert_eq!(verify["first_bad_seq"], target_seq);
    proxy.stop().await;
}

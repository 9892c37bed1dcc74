//! The real binary: configuration errors, start-up, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt;
use llm_audit_proxy::store::sqlite::SqliteStore;
use llm_audit_proxy::store::{AuditStore, EventFilter};
use serde_json::{json, Value};

use crate::support::{output_ok, MockUpstream};

const BIN: &str = env!("CARGO_BIN_EXE_llm-audit-proxy");

pub(crate) fn command() -> Command {
    let mut cmd = Command::new(BIN);
    // Nothing from the developer's environment may change what is tested.
    for (key, _) in std::env::vars() {
        if key.starts_with("LLM_AUDIT_PROXY_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

#[test]
fn reference_config_is_valid() {
    output_ok(command().args([
        "check-config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/llm-audit-proxy.toml"),
    ]));
}

#[test]
fn check_config_lists_every_bad_key_and_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[proxy]\nlisten = \"nowhere\"\n[audit]\nlog_level = \"LOUD\"\nretention_days = -3\n[admin]\ntokenz = []\n",
    )
    .unwrap();
    let out = command().arg("check-config").arg(&file).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for key in [
        "proxy.listen",
        "audit.log_level",
        "audit.retention_days",
        "admin.tokenz: unknown key",
    ] {
        assert!(stderr.contains(key), "{key} missing from:\n{stderr}");
    }
}

#[test]
fn serve_refuses_bad_configuration_naming_the_key() {
    let out = command()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "0.0.0.0:0",
        ])
        .env("LLM_AUDIT_PROXY_STORAGE", "postgres")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.listen"), "{stderr}");
    assert!(stderr.contains("audit.storage"), "{stderr}");
    assert!(stderr.contains("LLM_AUDIT_PROXY_STORAGE"), "{stderr}");
}

/// Starts `serve` on ephemeral ports; returns the child and its addresses,
/// read from its start-up log line.
fn spawn_serve(upstream: &str, dir: &std::path::Path) -> (Child, String, String) {
    let (child, proxy, admin, _) = spawn_serve_logged(upstream, dir, "info", &[]);
    (child, proxy, admin)
}

pub(crate) type LogLines = std::sync::Arc<std::sync::Mutex<Vec<String>>>;

/// Sends SIGTERM to `child`.
pub(crate) fn sigterm(child: &Child) {
    let sent = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
}

/// Waits for `child` to exit, off the async workers; returns its code.
pub(crate) async fn exit_code(mut child: Child) -> Option<i32> {
    tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap()
        .code()
}

/// As [`spawn_serve`] with `RUST_LOG` set to `rust_log` and `env` on top,
/// also collecting every stderr line.
pub(crate) fn spawn_serve_logged(
    upstream: &str,
    dir: &std::path::Path,
    rust_log: &str,
    env: &[(&str, &str)],
) -> (Child, String, String, LogLines) {
    let mut child = command()
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--upstream", upstream, "--log-format", "json"])
        .arg("--file-path")
        .arg(dir)
        .env("RUST_LOG", rust_log)
        .envs(env.iter().copied())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let logs: LogLines = Default::default();
    let (proxy, admin) = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
        logs.lock().unwrap().push(line.clone());
        let Ok(v) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if v["message"] == "Audit proxy listening." {
            break (
                v["proxy"].as_str().unwrap().to_owned(),
                v["admin"].as_str().unwrap().to_owned(),
            );
        }
    };
    // Keep draining stderr so the child never blocks on a full pipe.
    let sink = logs.clone();
    std::thread::spawn(move || {
        for line in lines.map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    (child, proxy, admin, logs)
}

#[tokio::test]
async fn sigterm_drains_flushes_and_exits_zero() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (child, proxy, admin, logs) = spawn_serve_logged(
        &mock.url(),
        dir.path(),
        "info,llm_audit_proxy::access=debug",
        &[],
    );
    let http = reqwest::Client::builder().no_proxy().build().unwrap();

    assert_eq!(
        http.get(format!("http://{admin}/healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        http.get(format!("http://{admin}/readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    // A slow stream is in flight when SIGTERM arrives; it must finish.
    let slow = {
        let http = http.clone();
        let url = format!("http://{proxy}/v1/chat/completions");
        tokio::spawn(async move {
            http.post(url)
                .header("x-request-id", "term-stream")
                .header("x-mock-chunk-delay-ms", "100")
                .bearer_auth("sk-proj-LogCheckKey0123456789abcdefghij")
                .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": [{"role": "user", "content": "a very private prompt"}]}))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        })
    };
    tokio::time::sleep(Duration::from_millis(150)).await;
    sigterm(&child);
    let body = slow.await.unwrap();
    assert!(
        body.contains("[DONE]"),
        "the in-flight stream completed: {body}"
    );

    assert_eq!(exit_code(child).await, Some(0));

    let store = SqliteStore::open_read_only(dir.path()).await.unwrap();
    let events: Vec<_> = store
        .export(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await;
    let types: Vec<String> = events.iter().map(|e| e.event_type.to_string()).collect();
    assert_eq!(types.first().map(String::as_str), Some("SYSTEM"));
    assert!(types.contains(&"CONFIGURATION".to_owned()));
    assert_eq!(
        types.last().map(String::as_str),
        Some("SYSTEM"),
        "{types:?}"
    );
    assert_eq!(events.last().unwrap().metadata.field("phase"), "shutdown");
    let call: Vec<_> = events
        .iter()
        .filter(|e| e.request_id.as_deref() == Some("term-stream"))
        .collect();
    assert_eq!(call.len(), 2);
    assert_eq!(call[1].metadata.field("outcome"), "completed");

    // Asked for, one JSON line per call, and never a body or a credential.
    let logs = logs.lock().unwrap();
    let access: Vec<Value> = logs
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["request_id"] == "term-stream")
        .collect();
    assert_eq!(access.len(), 1, "{logs:#?}");
    assert_eq!(access[0]["target"], "llm_audit_proxy::access");
    assert_eq!(access[0]["operation"], "chat.create");
    assert_eq!(access[0]["status"], 200);
    assert!(access[0]["latency_ms"].as_f64().unwrap() > 0.0);
    for line in logs.iter() {
        assert!(
            !line.contains("LogCheckKey") && !line.contains("private prompt"),
            "{line}"
        );
    }
}

#[tokio::test]
async fn sigterm_under_load_loses_no_event() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (child, proxy, admin) = spawn_serve(&mock.url(), dir.path());
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let mut streams = Vec::new();
    for i in 0..50 {
        let http = http.clone();
        let url = format!("http://{proxy}/v1/chat/completions");
        streams.push(tokio::spawn(async move {
            http.post(url)
                .header("x-request-id", format!("drain-{i}"))
                .header("x-mock-chunk-delay-ms", "150")
                .json(&json!({"model": "gpt-4o-mini", "stream": true, "messages": []}))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        }));
    }
    // Every stream is open before the signal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mock.calls() < 50 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(mock.calls(), 50);
    sigterm(&child);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let ready = http
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 503, "readiness turns 503 while draining");
    let refused = http
        .post(format!("http://{proxy}/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini"}))
        .send()
        .await;
    assert!(
        refused.is_err(),
        "new connections are refused while draining"
    );

    for s in streams {
        let body = s.await.unwrap();
        assert!(body.contains("[DONE]"), "stream cut: {body}");
    }
    assert_eq!(exit_code(child).await, Some(0));

    let store = SqliteStore::open_read_only(dir.path()).await.unwrap();
    let events: Vec<_> = store
        .export(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await;
    for i in 0..50 {
        let id = format!("drain-{i}");
        let call: Vec<_> = events
            .iter()
            .filter(|e| e.request_id.as_deref() == Some(id.as_str()))
            .collect();
        assert_eq!(call.len(), 2, "{id}");
        assert_eq!(call[0].event_type.to_string(), "REQUEST");
        assert_eq!(call[1].metadata.field("outcome"), "completed", "{id}");
    }
    assert_eq!(events.last().unwrap().metadata.field("phase"), "shutdown");
}

#[tokio::test]
async fn calls_log_no_access_line_unless_asked_for() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (child, proxy, _admin, logs) = spawn_serve_logged(&mock.url(), dir.path(), "info", &[]);
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let status = http
        .post(format!("http://{proxy}/v1/chat/completions"))
        .header("x-request-id", "quiet-call")
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(status, 200);
    sigterm(&child);
    assert_eq!(exit_code(child).await, Some(0));
    // The pipe is closed; give the draining thread its last lines.
    tokio::time::sleep(Duration::from_millis(200)).await;

    let logs = logs.lock().unwrap();
    assert!(
        logs.iter().any(|l| l.contains("Audit proxy stopped.")),
        "the last line was read: {logs:#?}"
    );
    assert!(
        !logs.iter().any(|l| l.contains("llm_audit_proxy::access")),
        "{logs:#?}"
    );
}

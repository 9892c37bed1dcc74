//! Signed checkpoints end to end: keygen, a signing proxy, `verify` with
//! public keys on the store and on exports, key rotation, and the tamper
//! matrix (edit, delete, insert, reorder, truncate, rebuild without the
//! key), each caught and named with its first seq.

use std::path::Path;
use std::process::{Command, Output};

use llm_audit_proxy::event::chain::event_hash;
use llm_audit_proxy::event::{parse_timestamp, AuditEvent, EventType, Metadata, NewEvent};
use serde_json::{json, Value};

use crate::binary::command;
use crate::support::{ndjson, output_ok, MockUpstream, TestProxy};

const BIN: &str = env!("CARGO_BIN_EXE_llm-audit-proxy");

/// Runs the binary with no `LLM_AUDIT_PROXY_*` variables from outside.
fn cli(args: &[&str]) -> Output {
    command().args(args).output().unwrap()
}

fn json_of(out: &Output) -> Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "stdout: {} stderr: {}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// `keygen --out dir/name`; returns (private key path, public key path,
/// key id).
fn keygen(dir: &Path, name: &str) -> (String, String, String) {
    let out_path = dir.join(name);
    let out = output_ok(command().args(["keygen", "--out", out_path.to_str().unwrap()]));
    let report = json_of(&out);
    (
        report["private_key_file"].as_str().unwrap().to_owned(),
        report["public_key_file"].as_str().unwrap().to_owned(),
        report["key_id"].as_str().unwrap().to_owned(),
    )
}

fn verify_store(dir: &Path, storage: &str, extra: &[&str]) -> Output {
    let mut args = vec![
        "verify",
        "--storage",
        storage,
        "--file-path",
        dir.to_str().unwrap(),
    ];
    args.extend(extra);
    cli(&args)
}

/// Asserts `out` is a failed verify naming `fault` at `seq`.
fn assert_fault(out: &Output, fault: &str, seq: i64, case: &str) {
    let report = json_of(out);
    assert_eq!(out.status.code(), Some(1), "{case}: {report}");
    assert_eq!(report["ok"], false, "{case}: {report}");
    assert_eq!(report["fault"], fault, "{case}: {report}");
    assert_eq!(report["first_bad_seq"], seq, "{case}: {report}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(fault),
        "{case}: stderr names the fault"
    );
}

async fn signing_proxy(
    mock: &MockUpstream,
    dir: &Path,
    key: &str,
    extra: &[(&str, &str)],
) -> TestProxy {
    let mut env = vec![
        ("LLM_AUDIT_PROXY_SIGNING_KEY_FILE", key),
        ("LLM_AUDIT_PROXY_CHECKPOINT_EVERY_EVENTS", "4"),
    ];
    env.extend_from_slice(extra);
    TestProxy::start_in(&mock.url(), dir, &env).await
}

async fn calls(proxy: &TestProxy, prefix: &str, n: usize) {
    for i in 0..n {
        proxy
            .post_call("/v1/chat/completions", format!("{prefix}-{i}"))
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

// --- the store's rows, read and rewritten as someone with write access
// --- (but without the key) would.

fn read_rows(dir: &Path) -> Vec<AuditEvent> {
    let conn = rusqlite::Connection::open(dir.join("audit.db")).unwrap();
    let mut stmt = conn
        .prepare(
            "SELECT seq, id, timestamp, event_type, level, message, request_id, metadata, \
             prev_hash, hash FROM events ORDER BY seq",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok(AuditEvent {
            seq: r.get(0)?,
            id: r.get(1)?,
            timestamp: parse_timestamp(&r.get::<_, String>(2)?).unwrap(),
            event_type: r.get::<_, String>(3)?.parse().unwrap(),
            level: r.get::<_, String>(4)?.parse().unwrap(),
            message: r.get(5)?,
            request_id: r.get(6)?,
            metadata: Metadata::from_json(&r.get::<_, String>(7)?).unwrap(),
            prev_hash: r.get(8)?,
            hash: r.get(9)?,
        })
    })
    .unwrap()
    .map(Result::unwrap)
    .collect()
}

fn write_rows(dir: &Path, events: &[AuditEvent]) {
    let mut conn = rusqlite::Connection::open(dir.join("audit.db")).unwrap();
    let tx = conn.transaction().unwrap();
    tx.execute("DELETE FROM events", []).unwrap();
    for e in events {
        tx.execute(
            "INSERT INTO events (seq, id, timestamp, event_type, level, level_rank, message, \
             request_id, metadata, prev_hash, hash) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            rusqlite::params![
                e.seq,
                e.id,
                llm_audit_proxy::event::format_timestamp(&e.timestamp),
                e.event_type.as_str(),
                e.level.as_str(),
                e.level.rank(),
                e.message,
                e.request_id,
                e.metadata.to_string(),
                e.prev_hash,
                e.hash,
            ],
        )
        .unwrap();
    }
    tx.commit().unwrap();
}

/// The tampering cases, applied to events in chain order. `k` is the seq
/// of an ordinary event with another ordinary event after it, and at
/// least one checkpoint before it.
fn tamper(case: &str, events: &mut Vec<AuditEvent>, k: i64, store: bool) {
    let at = |events: &Vec<AuditEvent>, seq: i64| events.iter().position(|e| e.seq == seq).unwrap();
    match case {
        "edit" => {
            let i = at(events, k);
            events[i].message.push_str(" (edited)");
        }
        "delete" => {
            let i = at(events, k);
            events.remove(i);
        }
        "insert" => {
            // A forged event after k with a valid hash; the rest renumbered
            // and re-hashed one by one (their links kept).
            let i = at(events, k);
            let forged = NewEvent::new(EventType::Custom, "forged").seal(k + 1, &events[i].hash);
            events.insert(i + 1, forged);
            for e in events.iter_mut().skip(i + 2) {
                e.seq += 1;
                e.hash = event_hash(e);
            }
        }
        "reorder" => {
            // Two events swapped, each taking the other's seq.
            let i = at(events, k);
            events.swap(i, i + 1);
            events[i].seq = k;
            events[i + 1].seq = k + 1;
        }
        "truncate" => {
            // A store loses its last three rows (its stop checkpoint
            // among them); an export, its covering checkpoint.
            let cut = if store { 3 } else { 1 };
            let keep = events.len() - cut;
            events.truncate(keep);
        }
        "rebuild" => {
            // An edit, and every hash after it recomputed: a consistent
            // chain that only the signatures can catch.
            let i = at(events, k);
            events[i].message.push_str(" (edited)");
            for j in i..events.len() {
                if j > 0 {
                    events[j].prev_hash = events[j - 1].hash.clone();
                }
                events[j].hash = event_hash(&events[j]);
            }
        }
        other => panic!("unknown case {other}"),
    }
}

/// The case's expected fault and first seq.
fn expected(case: &str, events: &[AuditEvent], k: i64, store: bool) -> (&'static str, i64) {
    let checkpoint_before = events
        .iter()
        .filter(|e| e.event_type == EventType::Checkpoint && e.seq < k)
        .map(|e| e.seq)
        .max()
        .unwrap();
    match case {
        "edit" => ("edited", k),
        "delete" => ("deleted", k),
        "insert" => ("inserted", k + 1),
        "reorder" => ("reordered", k),
        // The store's own record of its latest checkpoint is not reached;
        // an export's events after its last checkpoint are not covered.
        "truncate" if store => ("truncated", events[events.len() - 3].seq),
        "truncate" => {
            let kept = &events[..events.len() - 1];
            let last = kept
                .iter()
                .rposition(|e| e.event_type == EventType::Checkpoint)
                .unwrap();
            ("truncated", kept[last + 1].seq)
        }
        "rebuild" => ("rebuilt", checkpoint_before + 1),
        _ => unreachable!(),
    }
}

const CASES: [&str; 6] = ["edit", "delete", "insert", "reorder", "truncate", "rebuild"];

/// The seq of an ordinary event, followed by another, after the first
/// checkpoint.
fn target(events: &[AuditEvent]) -> i64 {
    let first_checkpoint = events
        .iter()
        .position(|e| e.event_type == EventType::Checkpoint)
        .unwrap();
    events
        .windows(2)
        .skip(first_checkpoint + 1)
        .find(|w| w.iter().all(|e| e.event_type != EventType::Checkpoint))
        .map(|w| w[0].seq)
        .unwrap()
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

#[tokio::test]
async fn keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites() {
    let tmp = tempfile::tempdir().unwrap();
    let (private, public, key_id) = keygen(tmp.path(), "signing.key");
    assert_eq!(key_id.len(), 16);
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&private).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let public_text = std::fs::read_to_string(&public).unwrap();
    assert_eq!(public_text.trim().len(), 44, "base64 of 32 bytes");

    let again = cli(&["keygen", "--out", &private]);
    assert_eq!(again.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&again.stderr).contains("--force"));
    let forced = cli(&["keygen", "--out", &private, "--force"]);
    assert!(forced.status.success());
    assert_ne!(json_of(&forced)["key_id"], key_id);
}

#[tokio::test]
async fn a_bad_signing_key_is_a_config_error_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let bad = tmp.path().join("bad.key");
    std::fs::write(&bad, "not a key\n").unwrap();
    let out = cli(&[
        "check-config",
        concat!(env!("CARGO_MANIFEST_DIR"), "/config/llm-audit-proxy.toml"),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut cmd = Command::new(BIN);
    let out = cmd
        .args([
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("LLM_AUDIT_PROXY_SIGNING_KEY_FILE", &bad)
        .env("LLM_AUDIT_PROXY_FILE_PATH", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit.signing_key_file"), "{stderr}");
    assert!(stderr.contains("keygen"), "{stderr}");

    let (private, _, _) = keygen(tmp.path(), "good.key");
    let key = std::fs::read_to_string(&private).unwrap();
    let out = Command::new(BIN)
        .args([
            "serve",
            "--admin-listen",
            "127.0.0.1:0",
            "--listen",
            "127.0.0.1:0",
        ])
        .env("LLM_AUDIT_PROXY_SIGNING_KEY_FILE", &private)
        .env("LLM_AUDIT_PROXY_SIGNING_KEY", key.trim())
        .env("LLM_AUDIT_PROXY_FILE_PATH", tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("audit.signing_key"), "{stderr}");
    assert!(
        !stderr.contains(key.trim()),
        "the key itself is never printed"
    );
}

#[tokio::test]
async fn a_signed_sqlite_store_verifies_and_each_tampering_is_named() {
    let mock = MockUpstream::start().await;
    let keys = tempfile::tempdir().unwrap();
    let (private, public, key_id) = keygen(keys.path(), "signing.key");
    let tmp = tempfile::tempdir().unwrap();
    let proxy = signing_proxy(&mock, tmp.path(), &private, &[]).await;
    calls(&proxy, "ev", 6).await;

    // The CONFIGURATION event names the key.
    let config = proxy.wait_events("event_type=CONFIGURATION", 1).await;
    let signing = &config[0]["metadata"]["config"]["audit"]["signing_key"];
    assert_eq!(signing["key_id"], key_id);
    assert_eq!(
        signing["public_key"].as_str().unwrap(),
        std::fs::read_to_string(&public).unwrap().trim()
    );
    // The live check reports the checkpoints.
    proxy.wait_events("event_type=CHECKPOINT", 3).await;
    let (_, live) = proxy.admin_get("/api/verify").await;
    assert_eq!(live["ok"], true, "{live}");
    assert_eq!(live["checkpoints"]["signatures_ok"], true, "{live}");
    assert_eq!(live["checkpoints"]["latest"]["key_id"], key_id, "{live}");
    assert!(live["source_id"].is_string(), "{live}");
    proxy.stop().await;

    let intact = verify_store(tmp.path(), "sqlite", &["--public-key", &public]);
    let report = json_of(&intact);
    assert!(intact.status.success(), "{report}");
    assert_eq!(
        report["checkpoints"]["latest"]["reason"], "stop",
        "{report}"
    );
    assert_eq!(report["checkpoints"]["unsigned_tail"], 0, "{report}");
    let latest = report["checkpoints"]["latest"].clone();
    let anchor = format!("{}:{}", latest["seq"], latest["hash"].as_str().unwrap());

    let original = read_rows(tmp.path());
    let k = target(&original);
    for case in CASES {
        let copy = tempfile::tempdir().unwrap();
        copy_dir(tmp.path(), copy.path());
        let mut events = original.clone();
        tamper(case, &mut events, k, true);
        write_rows(copy.path(), &events);
        let (fault, seq) = expected(case, &original, k, true);
        let out = verify_store(copy.path(), "sqlite", &["--public-key", &public]);
        assert_fault(&out, fault, seq, case);
    }

    // A cut tail whose writer also erased the store's own record of its
    // latest checkpoint: caught by a checkpoint recorded elsewhere.
    let copy = tempfile::tempdir().unwrap();
    copy_dir(tmp.path(), copy.path());
    let mut events = original.clone();
    tamper("truncate", &mut events, k, true);
    write_rows(copy.path(), &events);
    let conn = rusqlite::Connection::open(copy.path().join("audit.db")).unwrap();
    conn.execute("DELETE FROM meta WHERE key = 'latest_checkpoint'", [])
        .unwrap();
    drop(conn);
    let head = events.last().unwrap().seq;
    let out = verify_store(
        copy.path(),
        "sqlite",
        &["--public-key", &public, "--expect-checkpoint", &anchor],
    );
    assert_fault(&out, "truncated", head + 1, "truncate with meta erased");

    // Verified with a key that did not sign: every checkpoint is refused.
    let (_, stranger, _) = keygen(keys.path(), "stranger.key");
    let first_checkpoint = original
        .iter()
        .find(|e| e.event_type == EventType::Checkpoint)
        .unwrap()
        .seq;
    let out = verify_store(tmp.path(), "sqlite", &["--public-key", &stranger]);
    assert_fault(&out, "signature", first_checkpoint, "wrong key");
}

#[tokio::test]
async fn a_signed_file_store_shares_the_verify() {
    let mock = MockUpstream::start().await;
    let keys = tempfile::tempdir().unwrap();
    let (private, public, _) = keygen(keys.path(), "signing.key");
    let tmp = tempfile::tempdir().unwrap();
    let proxy = signing_proxy(
        &mock,
        tmp.path(),
        &private,
        &[("LLM_AUDIT_PROXY_STORAGE", "file")],
    )
    .await;
    calls(&proxy, "fs", 4).await;
    proxy.stop().await;
    let out = verify_store(tmp.path(), "file", &["--public-key", &public]);
    assert!(out.status.success(), "{}", json_of(&out));

    // Edit one line of the event file.
    let file = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .unwrap();
    let lines: Vec<Value> = ndjson(&std::fs::read_to_string(&file).unwrap());
    let events: Vec<AuditEvent> = lines
        .iter()
        .map(|l| serde_json::from_value(l.clone()).unwrap())
        .collect();
    let k = target(&events);
    let text: String = lines
        .iter()
        .map(|l| {
            let mut l = l.clone();
            if l["seq"] == k {
                l["message"] = json!("edited");
            }
            format!("{l}\n")
        })
        .collect();
    std::fs::write(&file, text).unwrap();
    let out = verify_store(tmp.path(), "file", &["--public-key", &public]);
    assert_fault(&out, "edited", k, "file store edit");
}

// --- exports

fn write_ndjson(path: &Path, items: &[Value]) {
    let text: String = items.iter().map(|v| format!("{v}\n")).collect();
    std::fs::write(path, text).unwrap();
}

fn verify_file(path: &Path, public: &str) -> Output {
    cli(&[
        "verify",
        "--file",
        path.to_str().unwrap(),
        "--public-key",
        public,
    ])
}

#[tokio::test]
async fn verifiable_exports_check_alone_and_each_tampering_is_named() {
    let mock = MockUpstream::start().await;
    let keys = tempfile::tempdir().unwrap();
    let (private, public, _) = keygen(keys.path(), "signing.key");
    let tmp = tempfile::tempdir().unwrap();
    let proxy = signing_proxy(&mock, tmp.path(), &private, &[]).await;
    calls(&proxy, "ex", 8).await;
    let out_dir = tempfile::tempdir().unwrap();

    // The whole store, in each format the verifier reads; taken while the
    // proxy runs, so the export asks for a checkpoint over its end.
    for format in ["json", "ndjson"] {
        let body = proxy
            .admin_text(&format!("/api/export?format={format}"))
            .await;
        let path = out_dir.path().join(format!("all.{format}"));
        std::fs::write(&path, body).unwrap();
        let out = verify_file(&path, &public);
        assert!(out.status.success(), "{format}: {}", json_of(&out));
    }

    // A range: one call's events, with links to the checkpoint after them
    // (a call whose RESPONSE is not itself followed by a checkpoint).
    let all: Vec<Value> = std::fs::read_to_string(out_dir.path().join("all.ndjson"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ranged = all
        .windows(2)
        .find(|w| w[0]["event_type"] == "RESPONSE" && w[1]["event_type"] != "CHECKPOINT")
        .map(|w| w[0]["request_id"].as_str().unwrap().to_owned())
        .expect("a RESPONSE followed by another event");
    let body = proxy
        .admin_text(&format!("/api/export?format=ndjson&request_id={ranged}"))
        .await;
    let items: Vec<Value> = ndjson(&body);
    assert!(items.iter().any(|i| i["request_id"] == ranged.as_str()));
    assert!(items.iter().any(|i| i["event_type"] == "CHECKPOINT"));
    assert!(
        items.iter().any(|i| i.get("chain_link").is_some()),
        "{body}"
    );
    assert!(
        items.iter().all(|i| i["request_id"] == ranged.as_str()
            || i["event_type"] == "CHECKPOINT"
            || i.get("chain_link").is_some()),
        "no other call's content: {body}"
    );
    let range = out_dir.path().join("range.ndjson");
    std::fs::write(&range, &body).unwrap();
    let out = verify_file(&range, &public);
    assert!(out.status.success(), "{}", json_of(&out));
    // The same range, edited: an event changed and re-hashed no longer
    // reaches the signed checkpoint through the links.
    let mut edited = items.clone();
    let i = edited
        .iter()
        .position(|i| i["request_id"] == ranged.as_str())
        .unwrap();
    let mut event: AuditEvent = serde_json::from_value(edited[i].clone()).unwrap();
    event.message.push('!');
    event.hash = event_hash(&event);
    edited[i] = serde_json::to_value(&event).unwrap();
    write_ndjson(&range, &edited);
    let out = verify_file(&range, &public);
    assert_eq!(out.status.code(), Some(1), "{}", json_of(&out));
    proxy.stop().await;

    // The offline export of a range, after a clean stop: its stop
    // checkpoint covers the end.
    let offline = out_dir.path().join("offline.json");
    let out = cli(&[
        "export",
        "--file-path",
        tmp.path().to_str().unwrap(),
        "--format",
        "json",
        "--request-id",
        "ex-5",
        "--verifiable",
        "true",
        "--out",
        offline.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = verify_file(&offline, &public);
    assert!(out.status.success(), "{}", json_of(&out));

    // The tamper matrix on a whole-store NDJSON export.
    let all: Vec<AuditEvent> =
        ndjson(&std::fs::read_to_string(out_dir.path().join("all.ndjson")).unwrap());
    let k = target(&all);
    for case in CASES {
        let mut events = all.clone();
        tamper(case, &mut events, k, false);
        let path = out_dir.path().join(format!("{case}.ndjson"));
        let items: Vec<Value> = events
            .iter()
            .map(|e| serde_json::to_value(e).unwrap())
            .collect();
        write_ndjson(&path, &items);
        let (fault, seq) = expected(case, &all, k, false);
        assert_fault(&verify_file(&path, &public), fault, seq, case);
    }
}

#[tokio::test]
async fn a_rotated_key_signs_after_its_configuration_event_and_verify_takes_both() {
    let mock = MockUpstream::start().await;
    let keys = tempfile::tempdir().unwrap();
    let (old_private, old_public, old_id) = keygen(keys.path(), "old.key");
    let (new_private, new_public, new_id) = keygen(keys.path(), "new.key");
    let tmp = tempfile::tempdir().unwrap();

    let proxy = signing_proxy(&mock, tmp.path(), &old_private, &[]).await;
    calls(&proxy, "old", 3).await;
    proxy.stop().await;
    let proxy = signing_proxy(&mock, tmp.path(), &new_private, &[]).await;
    calls(&proxy, "new", 6).await;
    let configs = proxy.wait_events("event_type=CONFIGURATION", 2).await;
    proxy.stop().await;

    // Newest first: the new key's CONFIGURATION, then the old one's.
    assert_eq!(
        configs[0]["metadata"]["config"]["audit"]["signing_key"]["key_id"],
        new_id
    );
    assert_eq!(
        configs[1]["metadata"]["config"]["audit"]["signing_key"]["key_id"],
        old_id
    );
    let rotated_at = configs[0]["seq"].as_i64().unwrap();
    let events = read_rows(tmp.path());
    for e in events
        .iter()
        .filter(|e| e.event_type == EventType::Checkpoint)
    {
        let expected = if e.seq > rotated_at { &new_id } else { &old_id };
        assert_eq!(
            e.metadata.field("key_id"),
            expected.as_str(),
            "checkpoint {}",
            e.seq
        );
    }

    // Both keys, as two flags or one file of keys.
    let both = verify_store(
        tmp.path(),
        "sqlite",
        &["--public-key", &old_public, "--public-key", &new_public],
    );
    let report = json_of(&both);
    assert!(both.status.success(), "{report}");
    assert_eq!(report["checkpoints"]["key_ids"], json!([old_id, new_id]));
    let keyring = keys.path().join("keyring");
    std::fs::write(
        &keyring,
        format!(
            "# old, then new\n{}{}",
            std::fs::read_to_string(&old_public).unwrap(),
            std::fs::read_to_string(&new_public).unwrap()
        ),
    )
    .unwrap();
    let out = verify_store(
        tmp.path(),
        "sqlite",
        &["--public-key", keyring.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", json_of(&out));

    // The old key alone refuses the first checkpoint of the new one.
    let first_new = events
        .iter()
        .find(|e| e.event_type == EventType::Checkpoint && e.seq > rotated_at)
        .unwrap()
        .seq;
    let out = verify_store(tmp.path(), "sqlite", &["--public-key", &old_public]);
    assert_fault(&out, "signature", first_new, "old key only");
}

#[tokio::test]
async fn an_idle_proxy_writes_heartbeat_checkpoints() {
    let mock = MockUpstream::start().await;
    let keys = tempfile::tempdir().unwrap();
    let (private, public, _) = keygen(keys.path(), "signing.key");
    let tmp = tempfile::tempdir().unwrap();
    let proxy = signing_proxy(
        &mock,
        tmp.path(),
        &private,
        &[("LLM_AUDIT_PROXY_CHECKPOINT_INTERVAL_SECS", "1")],
    )
    .await;
    let checkpoints = proxy.wait_events("event_type=CHECKPOINT", 3).await;
    assert!(
        checkpoints
            .iter()
            .any(|c| c["metadata"]["reason"] == "interval"),
        "{checkpoints:?}"
    );
    proxy.stop().await;
    let out = verify_store(tmp.path(), "sqlite", &["--public-key", &public]);
    assert!(out.status.success(), "{}", json_of(&out));
}

#[tokio::test]
async fn without_a_key_the_proxy_writes_no_checkpoints_and_verify_asks_for_them() {
    let mock = MockUpstream::start().await;
    let keys = tempfile::tempdir().unwrap();
    let (_, public, _) = keygen(keys.path(), "signing.key");
    let tmp = tempfile::tempdir().unwrap();
    let proxy = TestProxy::start_in(&mock.url(), tmp.path(), &[]).await;
    calls(&proxy, "plain", 2).await;
    // Nobody but the writer makes a CHECKPOINT event.
    let forged = proxy
        .http
        .post(format!("{}/api/events", proxy.admin_url))
        .json(&json!({"event_type": "CHECKPOINT", "message": "forged", "metadata": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 400);
    let body: Value = forged.json().await.unwrap();
    assert_eq!(body["error"]["param"], "event_type", "{body}");
    let (_, live) = proxy.admin_get("/api/verify").await;
    assert_eq!(live["ok"], true);
    assert_eq!(live["checkpoints"]["checked"], 0);
    assert_eq!(live["checkpoints"]["signatures_ok"], Value::Null);
    proxy.stop().await;
    assert!(read_rows(tmp.path())
        .iter()
        .all(|e| e.event_type != EventType::Checkpoint));
    let out = verify_store(tmp.path(), "sqlite", &[]);
    assert!(out.status.success());
    let out = verify_store(tmp.path(), "sqlite", &["--public-key", &public]);
    assert_fault(&out, "signature", 1, "no checkpoints");
}

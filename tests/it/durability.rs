//! The durability contract: fail_closed refusals, strict durability, clean
//! and unclean stops, losses in the exit code, and a SIGKILL loop under
//! load against the real binary.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use llm_audit_proxy::store::sqlite::SqliteStore;
use llm_audit_proxy::store::{AuditStore, EventFilter};
use serde_json::{json, Value};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use llm_audit_proxy::store::memory::MemoryStore;
use llm_audit_proxy::store::{
    Batch, ChainHead, EventPage, EventQuery, EventStream, PurgeReport, StoreError, StoreStats,
};

use crate::binary::{command, exit_code, sigterm};
use crate::support::{output_ok, MockUpstream, TestProxy};

/// Starts `serve` on ephemeral ports with `env`, returning the child and
/// its proxy and admin addresses (read from its start-up log line).
pub(crate) fn serve(upstream: &str, dir: &Path, env: &[(&str, &str)]) -> (Child, String, String) {
    let mut cmd = command();
    cmd.args([
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--log-format",
        "json",
        "--upstream",
        upstream,
    ])
    .arg("--file-path")
    .arg(dir)
    .env("RUST_LOG", "info")
    .stderr(Stdio::piped())
    .stdout(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (proxy, admin) = loop {
        let line = lines
            .next()
            .expect("serve exited before listening")
            .unwrap();
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
    std::thread::spawn(move || for _ in lines.map_while(Result::ok) {});
    (child, proxy, admin)
}

pub(crate) fn sigkill(child: &mut Child) {
    child.kill().unwrap();
    child.wait().unwrap();
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

async fn stored(dir: &Path) -> Vec<llm_audit_proxy::event::AuditEvent> {
    let store = SqliteStore::open_read_only(dir).await.unwrap();
    store
        .export(EventFilter::default())
        .map(|e| e.unwrap())
        .collect()
        .await
}

#[tokio::test]
async fn fail_closed_refuses_a_call_whose_events_have_no_room_before_upstream() {
    let mock = MockUpstream::start().await;
    // A queue smaller than one call's events: no call can be admitted.
    let proxy = TestProxy::start_with(
        &mock.url(),
        &[
            ("LLM_AUDIT_PROXY_ON_STORE_FAILURE", "fail_closed"),
            ("LLM_AUDIT_PROXY_QUEUE_CAPACITY", "2"),
        ],
    )
    .await;
    let r = proxy
        .post_call("/v1/chat/completions", "refused-1")
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["x-audit-request-id"], "refused-1");
    let body: Value = r.json().await.unwrap();
    assert!(body["error"]["message"].is_string(), "{body}");
    assert_eq!(mock.calls(), 0, "nothing reached upstream");
    let metrics = proxy.admin_text("/metrics").await;
    assert!(
        metrics
            .lines()
            .any(|l| l.contains("outcome=\"refused\"") && l.contains("status=\"503\"")),
        "{metrics}"
    );
    proxy.stop().await;
}

#[tokio::test]
async fn fail_open_serves_the_same_call() {
    let mock = MockUpstream::start().await;
    let proxy =
        TestProxy::start_with(&mock.url(), &[("LLM_AUDIT_PROXY_QUEUE_CAPACITY", "2")]).await;
    let r = proxy
        .post_call("/v1/chat/completions", "open-1")
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(mock.calls(), 1);
    proxy.stop().await;
}

#[tokio::test]
async fn strict_durability_commits_the_request_before_upstream_sees_the_call() {
    let mock = MockUpstream::start().await;
    let proxy =
        TestProxy::start_with(&mock.url(), &[("LLM_AUDIT_PROXY_DURABILITY", "strict")]).await;
    let call = {
        let request = proxy
            .post_call("/v1/chat/completions", "strict-1")
            .header("x-mock-header-delay-ms", "1500")
            .json(
                &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
            );
        tokio::spawn(async move { request.send().await.unwrap().status() })
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while mock.calls() == 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(mock.calls(), 1);
    // Upstream holds its answer: the REQUEST is already stored.
    let (_, page) = proxy
        .admin_get("/api/events?request_id=strict-1&event_type=REQUEST")
        .await;
    assert_eq!(page["events"].as_array().unwrap().len(), 1, "{page}");
    assert_eq!(call.await.unwrap(), 200);
    let events = proxy.call_events("strict-1").await;
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event_type"] == "REQUEST")
            .count(),
        1,
        "the REQUEST is stored once"
    );
    proxy.stop().await;
}

/// A store that reads but never takes a write, as a disk remounted
/// read-only does.
struct ReadOnlyStore(MemoryStore);

#[async_trait]
impl AuditStore for ReadOnlyStore {
    fn kind(&self) -> &'static str {
        "read-only"
    }
    async fn append_batch(&self, _: Batch) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("read-only file system".into()))
    }
    async fn head(&self) -> Result<Option<ChainHead>, StoreError> {
        self.0.head().await
    }
    async fn query(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        self.0.query(q).await
    }
    async fn get(
        &self,
        id: &str,
    ) -> Result<Option<llm_audit_proxy::event::AuditEvent>, StoreError> {
        self.0.get(id).await
    }
    fn export(&self, filter: EventFilter) -> EventStream {
        self.0.export(filter)
    }
    async fn stats(&self) -> Result<StoreStats, StoreError> {
        self.0.stats().await
    }
    async fn health(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("read-only file system".into()))
    }
    async fn purge_before(&self, before: DateTime<Utc>) -> Result<PurgeReport, StoreError> {
        self.0.purge_before(before).await
    }
    async fn enforce_max_bytes(&self, max: u64) -> Result<PurgeReport, StoreError> {
        self.0.enforce_max_bytes(max).await
    }
}

#[tokio::test]
async fn strict_durability_refuses_calls_while_the_store_takes_no_write() {
    let mock = MockUpstream::start().await;
    let mut env = std::collections::HashMap::new();
    for (k, v) in [
        ("LLM_AUDIT_PROXY_LISTEN", "127.0.0.1:0"),
        ("LLM_AUDIT_PROXY_ADMIN_LISTEN", "127.0.0.1:0"),
        ("LLM_AUDIT_PROXY_STORAGE", "memory"),
        ("LLM_AUDIT_PROXY_DURABILITY", "strict"),
    ] {
        env.insert(k.to_owned(), v.to_owned());
    }
    env.insert("LLM_AUDIT_PROXY_UPSTREAM".to_owned(), mock.url());
    let config = llm_audit_proxy::config::load(None, &env, &Default::default()).unwrap();
    let store = Arc::new(ReadOnlyStore(MemoryStore::new(100)));
    let running = llm_audit_proxy::app::start_with_store(config, store)
        .await
        .unwrap();
    let http = http();
    // The start-up events fail to land: readiness says so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ready = http
            .get(format!("http://{}/readyz", running.admin_addr))
            .send()
            .await
            .unwrap()
            .status();
        if ready == 503 || tokio::time::Instant::now() > deadline {
            assert_eq!(ready, 503);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r = http
        .post(format!("http://{}/v1/chat/completions", running.proxy_addr))
        .header("x-request-id", "strict-refused")
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(
        r.headers()["x-audit-proxy-error"],
        "audit_store_unavailable"
    );
    assert_eq!(mock.calls(), 0, "no call reaches the model unrecorded");
    running.shutdown();
    running.wait().await;
}

#[tokio::test]
async fn a_clean_stop_checkpoints_the_wal_and_a_kill_is_recorded_at_the_next_start() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (child, proxy, _) = serve(&mock.url(), dir.path(), &[]);
    let r = http()
        .post(format!("http://{proxy}/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o-mini", "messages": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    sigterm(&child);
    assert_eq!(exit_code(child).await, Some(0));
    let wal = dir.path().join("audit.db-wal");
    assert_eq!(
        std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0),
        0,
        "the WAL is checkpointed into audit.db"
    );

    // A clean stop: the next start records no unclean shutdown. Then a kill.
    let (mut child, _, _) = serve(&mock.url(), dir.path(), &[]);
    tokio::time::sleep(Duration::from_millis(300)).await;
    sigkill(&mut child);
    let before = stored(dir.path()).await;
    let last = before.last().unwrap();
    assert_ne!(last.metadata.field("phase"), "shutdown");

    let (child, _, _) = serve(&mock.url(), dir.path(), &[]);
    sigterm(&child);
    assert_eq!(exit_code(child).await, Some(0));
    let events = stored(dir.path()).await;
    let unclean: Vec<_> = events
        .iter()
        .filter(|e| e.metadata.field("error_type") == "unclean_shutdown")
        .collect();
    assert_eq!(unclean.len(), 1, "only the killed run is unclean");
    assert_eq!(unclean[0].metadata.field("details")["last_seq"], last.seq);
    assert!(unclean[0].message.contains(&format!("seq {}", last.seq)));
}

#[tokio::test]
async fn serve_exits_non_zero_when_events_were_lost() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    // One queue slot: with this many calls at once, some events find it
    // taken however fast the writer drains it.
    let (child, proxy, _) = serve(
        &mock.url(),
        dir.path(),
        &[("LLM_AUDIT_PROXY_QUEUE_CAPACITY", "1")],
    );
    let http = http();
    let calls: Vec<_> = (0..100)
        .map(|_| {
            let r = http
                .post(format!("http://{proxy}/v1/chat/completions"))
                .json(&json!({"model": "gpt-4o-mini", "messages": []}));
            tokio::spawn(async move { r.send().await.unwrap().status() })
        })
        .collect();
    for c in calls {
        assert_eq!(c.await.unwrap(), 200, "fail_open serves every call");
    }
    sigterm(&child);
    assert_eq!(exit_code(child).await, Some(3));
    let events = stored(dir.path()).await;
    let recorded: u64 = events
        .iter()
        .filter(|e| e.metadata.field("error_type") == "events_dropped")
        .map(|e| e.metadata.field("details")["dropped"].as_u64().unwrap())
        .sum();
    let carried = std::fs::read(dir.path().join("unrecorded-losses.json"))
        .ok()
        .map(|b| {
            serde_json::from_slice::<Value>(&b).unwrap()["events"]
                .as_u64()
                .unwrap()
        })
        .unwrap_or(0);
    assert!(recorded + carried > 0, "the drops are on record or carried");
}

#[tokio::test]
async fn a_second_writer_of_a_file_store_is_refused_with_a_clear_message() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file_store = [("LLM_AUDIT_PROXY_STORAGE", "file")];
    let (child, _, _) = serve(&mock.url(), dir.path(), &file_store);
    for args in [
        &["purge"][..],
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
    ] {
        let out = command()
            .args(args)
            .args(["--storage", "file", "--file-path"])
            .arg(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} ran beside serve");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("in use by another process"),
            "{args:?}: {stderr}"
        );
    }
    // Reading needs no lock.
    output_ok(
        command()
            .args(["events", "--storage", "file", "--file-path"])
            .arg(dir.path()),
    );
    sigterm(&child);
    assert_eq!(exit_code(child).await, Some(0));
}

/// Calls through `proxy` from `workers` loops until the proxy goes away;
/// returns the request ids whose whole answer reached the client.
pub(crate) async fn load(proxy: &str, run: usize, workers: usize) -> Vec<String> {
    let done = Arc::new(Mutex::new(Vec::new()));
    let http = http();
    let tasks: Vec<_> = (0..workers)
        .map(|w| {
            let (http, done) = (http.clone(), done.clone());
            let url = format!("http://{proxy}/v1/chat/completions");
            tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("kill-{run}-{w}-{i}");
                    let sent = http
                        .post(&url)
                        .header("x-request-id", &id)
                        .json(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}))
                        .send()
                        .await;
                    let Ok(response) = sent else { break };
                    let ok = response.status() == 200;
                    if response.text().await.is_ok() && ok {
                        done.lock().unwrap().push(id);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        let _ = t.await;
    }
    let ids = done.lock().unwrap().clone();
    ids
}

/// Kills the proxy about every `every` under load, `kills` times,
/// restarting it on the same store, then checks the store.
async fn kill_loop(durability: &str, kills: usize, every: Duration) {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("LLM_AUDIT_PROXY_DURABILITY", durability)];
    let mut completed: Vec<String> = Vec::new();
    // seq -> event id, as seen after each kill: a seq never changes owner.
    let mut owners: BTreeMap<i64, String> = BTreeMap::new();
    for run in 0..kills {
        let (mut child, proxy, _) = serve(&mock.url(), dir.path(), &env);
        let load = tokio::spawn({
            let proxy = proxy.clone();
            async move { load(&proxy, run, 4).await }
        });
        tokio::time::sleep(every).await;
        let child = tokio::task::spawn_blocking(move || {
            sigkill(&mut child);
            child
        })
        .await
        .unwrap();
        drop(child);
        completed.extend(load.await.unwrap());
        for e in stored(dir.path()).await {
            let owner = owners.entry(e.seq).or_insert_with(|| e.id.clone());
            assert_eq!(*owner, e.id, "seq {} was reused after a kill", e.seq);
        }
    }
    // One last start records the last kill, then a clean stop.
    let (child, _, _) = serve(&mock.url(), dir.path(), &env);
    sigterm(&child);
    assert_eq!(exit_code(child).await, Some(0));

    let events = stored(dir.path()).await;
    for e in &events {
        if let Some(owner) = owners.get(&e.seq) {
            assert_eq!(*owner, e.id, "seq {} was reused", e.seq);
        }
    }
    assert!(events.windows(2).all(|w| w[0].seq < w[1].seq));
    let unclean = events
        .iter()
        .filter(|e| e.metadata.field("error_type") == "unclean_shutdown")
        .count();
    assert_eq!(unclean, kills, "each kill is recorded at the next start");
    assert!(!completed.is_empty(), "the load made calls");
    if durability == "strict" {
        let requests: HashSet<&str> = events
            .iter()
            .filter(|e| e.event_type.to_string() == "REQUEST")
            .filter_map(|e| e.request_id.as_deref())
            .collect();
        let missing: Vec<_> = completed
            .iter()
            .filter(|id| !requests.contains(id.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "answered calls without a REQUEST: {missing:?}"
        );
    }

    let integrity: String = rusqlite::Connection::open(dir.path().join("audit.db"))
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(integrity, "ok");
    let verify = command()
        .arg("verify")
        .arg("--file-path")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[tokio::test]
async fn strict_mode_keeps_every_answered_request_through_ten_kills() {
    kill_loop("strict", 10, Duration::from_millis(1800)).await;
}

#[tokio::test]
async fn buffered_mode_keeps_the_store_whole_through_kills() {
    kill_loop("buffered", 4, Duration::from_millis(1500)).await;
}

//! Shared test helpers: the mock upstream and an in-process proxy.

pub mod console;
pub mod mock;
pub mod postgres;
pub mod slow_store;
pub mod webdriver;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use llm_audit_proxy::app::{self, Running};
use llm_audit_proxy::config::{self, FlagValues};
use serde_json::Value;

pub use mock::MockUpstream;

/// How long a test waits for events to be stored. Generous: a debug build
/// on a loaded machine can take seconds to take in and record a 17 MiB
/// body, and the wait ends as soon as the events are there.
const EVENT_WAIT: Duration = Duration::from_secs(30);

/// The proxy running in this process on ephemeral loopback ports, with its
/// store in a temporary folder.
pub struct TestProxy {
    running: Option<Running>,
    pub proxy_url: String,
    pub admin_url: String,
    _tmp: Option<tempfile::TempDir>,
    pub http: reqwest::Client,
}

/// The configuration of a test proxy: loopback listeners on ephemeral
/// ports, `upstream`, text logs, then `base` and `extra` pairs.
fn test_config(upstream: &str, base: &[(&str, &str)], extra: &[(&str, &str)]) -> config::Config {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("LLM_AUDIT_PROXY_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("LLM_AUDIT_PROXY_ADMIN_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("LLM_AUDIT_PROXY_UPSTREAM".into(), upstream.into());
    env.insert("LLM_AUDIT_PROXY_LOG_FORMAT".into(), "text".into());
    for (k, v) in base.iter().chain(extra) {
        env.insert((*k).into(), (*v).into());
    }
    config::load(None, &env, &FlagValues::new()).unwrap()
}

impl TestProxy {
    pub async fn start(upstream: &str) -> Self {
        Self::start_with(upstream, &[]).await
    }

    /// Starts with extra configuration as environment-style pairs.
    pub async fn start_with(upstream: &str, extra: &[(&str, &str)]) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut proxy = Self::start_in(upstream, tmp.path(), extra).await;
        proxy._tmp = Some(tmp);
        proxy
    }

    /// Starts on an existing store folder (for restart tests).
    pub async fn start_in(upstream: &str, dir: &Path, extra: &[(&str, &str)]) -> Self {
        let dir = dir.display().to_string();
        let config = test_config(upstream, &[("LLM_AUDIT_PROXY_FILE_PATH", &dir)], extra);
        Self::around(app::start(config).await.unwrap())
    }

    /// Starts on `store` instead of one the configuration opens (the
    /// storage kind is set to memory so nothing is opened on disk).
    pub async fn start_on_store(
        upstream: &str,
        store: llm_audit_proxy::store::SharedStore,
        extra: &[(&str, &str)],
    ) -> Self {
        let config = test_config(upstream, &[("LLM_AUDIT_PROXY_STORAGE", "memory")], extra);
        Self::around(app::start_with_store(config, store).await.unwrap())
    }

    fn around(running: Running) -> Self {
        let proxy_url = format!("http://{}", running.proxy_addr);
        let admin_url = format!("http://{}", running.admin_addr);
        Self {
            running: Some(running),
            proxy_url,
            admin_url,
            _tmp: None,
            http: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        }
    }

    /// One counter of `/metrics` (its value; 0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        let text = self.admin_text("/metrics").await;
        text.lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.strip_prefix(' '))
                    .map(|v| v.trim().parse::<f64>().unwrap())
            })
            .unwrap_or(0.0)
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.proxy_url)
    }

    /// A POST through the proxy carrying the app's `x-request-id`.
    pub fn post_call(&self, path: &str, request_id: impl AsRef<str>) -> reqwest::RequestBuilder {
        self.http
            .post(self.url(path))
            .header("x-request-id", request_id.as_ref())
    }

    /// GET on the admin API; returns status and JSON body.
    pub async fn admin_get(&self, path_and_query: &str) -> (u16, Value) {
        let r = self
            .http
            .get(format!("{}{path_and_query}", self.admin_url))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        let body = r.json().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// GET on the admin API; the body as text (metrics, exports).
    pub async fn admin_text(&self, path_and_query: &str) -> String {
        self.http
            .get(format!("{}{path_and_query}", self.admin_url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Events matching `query` (newest first), waiting until at least `n`
    /// are stored (bounded: 10 s).
    pub async fn wait_events(&self, query: &str, n: usize) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        loop {
            let (status, body) = self
                .admin_get(&format!("/api/events?limit=10000&{query}"))
                .await;
            assert_eq!(status, 200, "{body}");
            let events = body["events"].as_array().cloned().unwrap_or_default();
            if events.len() >= n || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The REQUEST and RESPONSE (and other) events of one call, oldest
    /// first, once both REQUEST and RESPONSE are stored.
    pub async fn call_events(&self, request_id: &str) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + EVENT_WAIT;
        loop {
            let mut events = self
                .wait_events(&format!("request_id={request_id}"), 2)
                .await;
            events.reverse();
            let has = |t: &str| events.iter().any(|e| e["event_type"] == t);
            if (has("REQUEST") && has("RESPONSE")) || tokio::time::Instant::now() > deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shuts down in phases and waits until done.
    pub async fn stop(mut self) {
        if let Some(running) = self.running.take() {
            running.shutdown();
            running.wait().await;
        }
    }
}

/// The event of `event_type` among `events`.
pub fn of_type<'a>(events: &'a [Value], event_type: &str) -> &'a Value {
    events
        .iter()
        .find(|e| e["event_type"] == event_type)
        .unwrap_or_else(|| panic!("no {event_type} in {events:#?}"))
}

/// A loopback address that nothing listens on (yet).
pub async fn unused_addr() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// The URL of a loopback address that nothing listens on.
pub async fn dead_address() -> String {
    format!("http://{}", unused_addr().await)
}

/// Appends `events` to the SQLite store in `dir`, chained after its head,
/// as the writer would (for stores with events of chosen times and types).
pub async fn append_to_store(dir: &Path, events: Vec<llm_audit_proxy::event::NewEvent>) {
    use llm_audit_proxy::store::AuditStore;
    let store = llm_audit_proxy::store::sqlite::SqliteStore::open(dir)
        .await
        .unwrap();
    let head = store.head().await.unwrap();
    let (mut seq, mut prev) = head.map_or(
        (0, llm_audit_proxy::event::chain::GENESIS_HASH.to_owned()),
        |h| (h.seq, h.hash),
    );
    let mut batch = Vec::new();
    for event in events {
        seq += 1;
        let sealed = event.seal(seq, &prev);
        prev = sealed.hash.clone();
        batch.push(sealed);
    }
    store.append_batch(batch.into()).await.unwrap();
}

/// Every byte of every file in a store folder, as text.
/// A running store may remove a file between the listing and the read (the
/// WAL after a checkpoint): such a file is skipped.
pub fn raw_store(dir: &Path) -> String {
    let mut raw = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        match std::fs::read(&path) {
            Ok(bytes) => raw.extend(bytes),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => panic!("{}: {e}", path.display()),
        }
    }
    String::from_utf8_lossy(&raw).into_owned()
}

/// Runs `cmd` to its end and returns its output, failing the test with the
/// command's stderr when it does not exit 0.
pub fn output_ok(cmd: &mut std::process::Command) -> std::process::Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Each line of NDJSON `text`, parsed.
pub fn ndjson<T: serde::de::DeserializeOwned>(text: &str) -> Vec<T> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

//! Shipping to the `http` target: gzip-compressed NDJSON batches with a
//! bearer token and an idempotency key, against a local receiver that
//! refuses connections, then stalls, then answers 500, then accepts.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use llm_audit_proxy::store::sqlite::SqliteStore;
use llm_audit_proxy::store::AuditStore;
use serde_json::Value;

use crate::binary::{command, exit_code, sigterm, spawn_serve_logged};
use crate::central::{
    assert_shipping_failed_recorded, calls, local_rows, until_caught_up, until_errors, until_stats,
};
use crate::support::{ndjson, unused_addr, MockUpstream, TestProxy};

const TOKEN: &str = "ship-token-7f3a";

const STALL: u8 = 0;
const FAIL: u8 = 1;
const ACCEPT: u8 = 2;

/// One accepted batch, as the receiver saw it.
#[derive(Debug, Clone)]
struct Batch {
    key: String,
    authorization: String,
    encoding: String,
    lines: Vec<Value>,
}

/// A receiver on loopback whose answer the test switches.
#[derive(Clone)]
struct Receiver {
    mode: Arc<AtomicU8>,
    /// Requests seen in each mode.
    seen: Arc<[AtomicUsize; 3]>,
    accepted: Arc<Mutex<Vec<Batch>>>,
}

impl Receiver {
    fn new() -> Self {
        Self {
            mode: Arc::new(AtomicU8::new(STALL)),
            seen: Arc::new(Default::default()),
            accepted: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// The seqs of every accepted line, sorted, each once (a retried batch
    /// may be accepted twice).
    fn accepted_seqs(&self) -> Vec<i64> {
        let mut seqs: Vec<i64> = self
            .accepted
            .lock()
            .unwrap()
            .iter()
            .flat_map(|b| b.lines.iter().map(|l| l["seq"].as_i64().unwrap()))
            .collect();
        seqs.sort_unstable();
        seqs.dedup();
        seqs
    }

    /// Serves on `addr` from now on.
    async fn listen(&self, addr: SocketAddr) {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let receiver = self.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let receiver = receiver.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let receiver = receiver.clone();
                        async move { receiver.answer(req).await }
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
    }

    async fn answer(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
        let mode = self.mode.load(Ordering::SeqCst);
        self.seen[mode as usize].fetch_add(1, Ordering::SeqCst);
        let header = |name: &str| {
            req.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let (key, authorization, encoding) = (
            header("idempotency-key"),
            header("authorization"),
            header("content-encoding"),
        );
        let body = req.into_body().collect().await.unwrap().to_bytes();
        match mode {
            STALL => std::future::pending().await,
            FAIL => Ok(Response::builder()
                .status(500)
                .body(Full::new(Bytes::from_static(b"ingest is down")))
                .unwrap()),
            _ => {
                let mut text = String::new();
                flate2::read::GzDecoder::new(&body[..])
                    .read_to_string(&mut text)
                    .unwrap();
                let lines = ndjson(&text);
                self.accepted.lock().unwrap().push(Batch {
                    key,
                    authorization,
                    encoding,
                    lines,
                });
                Ok(Response::new(Full::new(Bytes::from_static(b"{}"))))
            }
        }
    }

    async fn until_seen(&self, mode: u8) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while self.seen[mode as usize].load(Ordering::SeqCst) == 0 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no request in mode {mode}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

#[tokio::test]
async fn an_http_receiver_that_refuses_stalls_and_fails_gets_every_event_once_it_accepts() {
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("ship-token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    // A port nothing listens on yet: connections are refused.
    let addr = unused_addr().await;
    let url = format!("http://{addr}/ingest");
    let token_path = token_file.display().to_string();
    let env = [
        ("LLM_AUDIT_PROXY_SHIPPING_HTTP_URL", url.as_str()),
        (
            "LLM_AUDIT_PROXY_SHIPPING_HTTP_TOKEN_FILE",
            token_path.as_str(),
        ),
        ("LLM_AUDIT_PROXY_SHIPPING_HTTP_TIMEOUT", "1"),
        ("LLM_AUDIT_PROXY_SHIPPING_POLL_INTERVAL_MS", "50"),
        ("LLM_AUDIT_PROXY_SHIPPING_MAX_BACKOFF", "0.5"),
        ("LLM_AUDIT_PROXY_SHIPPING_BATCH_SIZE", "7"),
        ("LLM_AUDIT_PROXY_SHUTDOWN_GRACE", "5"),
        ("LLM_AUDIT_PROXY_POD_NAME", "pod-h"),
    ];
    let proxy = TestProxy::start_in(&mock.url(), dir.path(), &env).await;
    calls(&proxy, "refused", 3).await;
    let target = until_errors(&proxy, 1).await;
    assert_eq!(target["target"], "http");
    assert!(target["lag_events"].as_u64() > Some(0), "{target}");

    let receiver = Receiver::new();
    receiver.listen(addr).await;
    receiver.until_seen(STALL).await;
    let errors = until_errors(&proxy, 2).await["errors"].as_u64().unwrap();
    let target = until_errors(&proxy, errors + 1).await;
    assert!(
        target["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer")),
        "{target}"
    );

    receiver.mode.store(FAIL, Ordering::SeqCst);
    receiver.until_seen(FAIL).await;
    let last_error = |body: &Value| {
        body["shipping"][0]["last_error"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let body = until_stats(&proxy, "no HTTP 500 recorded", |body| {
        last_error(body).contains("HTTP 500")
    })
    .await;
    assert!(last_error(&body).contains("ingest is down"), "{body}");
    // The proxy kept recording all along.
    calls(&proxy, "failing", 2).await;

    receiver.mode.store(ACCEPT, Ordering::SeqCst);
    calls(&proxy, "accepted", 2).await;
    until_caught_up(&proxy).await;
    assert_shipping_failed_recorded(&proxy, "http").await;
    proxy.stop().await;

    // Every local event arrived; one copy of each after dedup by key.
    let (source_id, local) = local_rows(dir.path()).await;
    let mut by_key: BTreeMap<String, Batch> = BTreeMap::new();
    for batch in receiver.accepted.lock().unwrap().iter() {
        assert_eq!(batch.authorization, format!("Bearer {TOKEN}"));
        assert_eq!(batch.encoding, "gzip");
        let first = batch.lines.first().unwrap()["seq"].as_i64().unwrap();
        let last = batch.lines.last().unwrap()["seq"].as_i64().unwrap();
        assert_eq!(batch.key, format!("{source_id}:{first}-{last}"));
        by_key.insert(batch.key.clone(), batch.clone());
    }
    let mut received: Vec<(i64, String, String)> = by_key
        .values()
        .flat_map(|b| b.lines.iter())
        .map(|l| {
            assert_eq!(l["source_id"], source_id.as_str());
            assert_eq!(l["pod"], "pod-h");
            (
                l["seq"].as_i64().unwrap(),
                l["hash"].as_str().unwrap().to_owned(),
                l["metadata"].to_string(),
            )
        })
        .collect();
    received.sort();
    let local: Vec<(i64, String)> = local.into_iter().map(|(s, h, _)| (s, h)).collect();
    let received: Vec<(i64, String)> = received.into_iter().map(|(s, h, _)| (s, h)).collect();
    assert_eq!(
        received, local,
        "the received set differs from the local set"
    );
}

#[test]
fn check_config_names_a_bad_http_target_by_key_without_showing_the_token() {
    for (env, key) in [
        (
            vec![(
                "LLM_AUDIT_PROXY_SHIPPING_HTTP_URL",
                "https://ingest.example/v1",
            )],
            "shipping.http_token",
        ),
        (
            vec![
                (
                    "LLM_AUDIT_PROXY_SHIPPING_HTTP_URL",
                    "ftp://ingest.example/v1",
                ),
                ("LLM_AUDIT_PROXY_SHIPPING_HTTP_TOKEN", "tok-Hunter2"),
            ],
            "shipping.http_url",
        ),
        (
            vec![
                (
                    "LLM_AUDIT_PROXY_SHIPPING_HTTP_URL",
                    "https://ingest.example/v1",
                ),
                ("LLM_AUDIT_PROXY_SHIPPING_HTTP_TOKEN", "tok Hunter2"),
            ],
            "shipping.http_token",
        ),
        (
            vec![
                (
                    "LLM_AUDIT_PROXY_SHIPPING_HTTP_URL",
                    "https://ingest.example/v1",
                ),
                (
                    "LLM_AUDIT_PROXY_SHIPPING_HTTP_TOKEN_FILE",
                    "/nonexistent/token",
                ),
            ],
            "shipping.http_token_file",
        ),
    ] {
        let out = command()
            .args(["check-config", "/dev/null"])
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(64), "{env:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(key), "{env:?}: {stderr}");
        assert!(!stderr.contains("Hunter2"), "{env:?}: {stderr}");
    }
}

async fn call_with(proxy: &str, id: &str, content: &str) {
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .unwrap()
        .post(format!("http://{proxy}/v1/chat/completions"))
        .header("x-request-id", id)
        .json(&serde_json::json!({
            "model": "gpt-4o-mini",
            "messages": [{"role": "user", "content": content}]
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

/// On SIGTERM the shipper sends the tail within the grace period; what a
/// stalled receiver leaves unshipped is logged with its seq range (and no
/// body), stays in the local store, and the stop is still clean.
#[tokio::test]
async fn sigterm_ships_the_tail_or_logs_the_unshipped_range() {
    let mock = MockUpstream::start().await;
    for (case, mode) in [("tail-sent", ACCEPT), ("receiver-stalled", STALL)] {
        let dir = tempfile::tempdir().unwrap();
        let receiver = Receiver::new();
        receiver.mode.store(mode, Ordering::SeqCst);
        let addr = unused_addr().await;
        receiver.listen(addr).await;
        let url = format!("http://{addr}/ingest");
        // A caught-up shipper looks again only after a minute: what the
        // calls record is still to send when SIGTERM comes (or the drain
        // wakes it).
        let env = [
            ("LLM_AUDIT_PROXY_SHIPPING_HTTP_URL", url.as_str()),
            ("LLM_AUDIT_PROXY_SHIPPING_HTTP_TOKEN", TOKEN),
            ("LLM_AUDIT_PROXY_SHIPPING_HTTP_TIMEOUT", "30"),
            ("LLM_AUDIT_PROXY_SHIPPING_POLL_INTERVAL_MS", "60000"),
            ("LLM_AUDIT_PROXY_SHUTDOWN_GRACE", "2"),
        ];
        let (child, proxy, _admin, logs) =
            spawn_serve_logged(&mock.url(), dir.path(), "info", &env);
        for i in 0..3 {
            call_with(&proxy, &format!("{case}-{i}"), "body-marker-5c1e").await;
        }
        sigterm(&child);
        assert_eq!(exit_code(child).await, Some(0), "{case}");

        let (source_id, local) = local_rows(dir.path()).await;
        let head = local.last().unwrap().0;
        let logs = logs.lock().unwrap().clone();
        assert!(
            !logs.iter().any(|l| l.contains("body-marker-5c1e")),
            "{case}: a body reached the log"
        );
        let stopped: Vec<&String> = logs
            .iter()
            .filter(|l| l.contains("Shipper stopped"))
            .collect();
        assert_eq!(stopped.len(), 1, "{case}: {logs:#?}");
        if mode == ACCEPT {
            // Everything, the shutdown event included, reached the receiver.
            let local: Vec<i64> = local.iter().map(|r| r.0).collect();
            assert_eq!(receiver.accepted_seqs(), local, "{case}");
            assert!(
                stopped[0].contains("every event shipped"),
                "{case}: {stopped:?}"
            );
            assert!(stopped[0].contains(&format!("\"shipped_up_to_seq\":{head}")));
        } else {
            assert!(receiver.accepted.lock().unwrap().is_empty());
            let line: Value = serde_json::from_str(stopped[0]).unwrap();
            assert_eq!(line["level"], "WARN", "{case}: {line}");
            assert_eq!(line["first_seq"], 1, "{case}: {line}");
            assert_eq!(line["last_seq"], head, "{case}: {line}");
            assert!(stopped[0].contains("http"), "{case}: {line}");
            // Still in the local store, for the next start.
            let store = SqliteStore::open_read_only(dir.path()).await.unwrap();
            assert_eq!(store.ship_cursor("http").await.unwrap(), None);
            assert_eq!(
                store.source_id().await.unwrap().as_deref(),
                Some(source_id.as_str())
            );
        }
    }
}

/// Both targets on at once: each has its own shipper, cursor and stats
/// entry, and each gets every event.
#[tokio::test]
async fn postgres_and_http_targets_ship_side_by_side() {
    let Some(pg) = crate::support::postgres::PgCluster::start().await else {
        return;
    };
    let mock = MockUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::new();
    receiver.mode.store(ACCEPT, Ordering::SeqCst);
    let addr = unused_addr().await;
    receiver.listen(addr).await;
    let mut env = crate::central::shipping_env(&pg.dsn());
    env.push((
        "LLM_AUDIT_PROXY_SHIPPING_HTTP_URL",
        format!("http://{addr}/in"),
    ));
    env.push(("LLM_AUDIT_PROXY_SHIPPING_HTTP_TOKEN", TOKEN.to_owned()));
    let pairs: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let proxy = TestProxy::start_in(&mock.url(), dir.path(), &pairs).await;
    calls(&proxy, "both", 4).await;
    until_stats(&proxy, "a target did not catch up", |body| {
        let targets = body["shipping"].as_array().unwrap();
        let names: Vec<&str> = targets
            .iter()
            .map(|t| t["target"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["postgres", "http"]);
        targets
            .iter()
            .all(|t| t["lag_events"] == 0 && t["cursor"].as_u64() >= body["total_events"].as_u64())
    })
    .await;
    proxy.stop().await;
    crate::central::assert_same_sets(&pg, dir.path()).await;
    let (_, local) = local_rows(dir.path()).await;
    assert_eq!(
        receiver.accepted_seqs(),
        local.iter().map(|r| r.0).collect::<Vec<_>>()
    );
    let store = SqliteStore::open_read_only(dir.path()).await.unwrap();
    let head = local.last().unwrap().0;
    for target in ["postgres", "http"] {
        assert_eq!(
            store.ship_cursor(target).await.unwrap(),
            Some(head),
            "{target}"
        );
    }
}

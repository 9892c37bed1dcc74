//! A mock OpenAI-compatible upstream on 127.0.0.1 with an ephemeral port.
//! It replays fixture JSON and SSE, counts calls, and can misbehave on
//! request (slow streams, 429s, compressed answers).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::{combinators::BoxBody, BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

type Body = BoxBody<Bytes, Infallible>;

/// What the mock saw of one call.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub version: http::Version,
    pub path_and_query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

#[derive(Default)]
struct Shared {
    calls: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    /// Streams dropped by the proxy before their end.
    streams_cancelled: AtomicUsize,
}

pub struct MockUpstream {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl MockUpstream {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let s = s.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(route(s, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        Self { addr, shared, task }
    }

    /// A mock on TLS with a fresh self-signed certificate for `localhost`,
    /// offering HTTP/2 and HTTP/1.1 by ALPN. Returns the CA PEM to trust.
    pub async fn start_tls() -> (Self, String) {
        let rcgen::CertifiedKey { cert, signing_key } =
            rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let cert_pem = cert.pem();
        let key = rustls_pki_types::PrivateKeyDer::try_from(signing_key.serialize_der()).unwrap();
        let mut tls = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert.der().clone()], key)
        .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(std::sync::Arc::new(tls));

        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let s = s.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let Ok(stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let svc = service_fn(move |req| {
                        let s = s.clone();
                        async move { Ok::<_, Infallible>(route(s, req).await) }
                    });
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        (Self { addr, shared, task }, cert_pem)
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn calls(&self) -> usize {
        self.shared.calls.load(Ordering::SeqCst)
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().unwrap().clone()
    }

    pub fn streams_cancelled(&self) -> usize {
        self.shared.streams_cancelled.load(Ordering::SeqCst)
    }
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-request-id", "req_upstream_123")
        .header("openai-processing-ms", "12")
        .body(Full::new(body.into()).boxed())
        .unwrap()
}

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/it/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// SSE `data:` lines of a fixture file, one chunk per event, sent with
/// `delay` between them; counts a cancellation if the reader goes away.
fn sse(shared: Arc<Shared>, events: Vec<String>, delay: Duration) -> Response<Body> {
    struct CancelGuard(Arc<Shared>, bool);
    impl Drop for CancelGuard {
        fn drop(&mut self) {
            if !self.1 {
                self.0.streams_cancelled.fetch_add(1, Ordering::SeqCst);
            }
        }
    }
    let stream = async_stream::stream! {
        let mut guard = CancelGuard(shared, false);
        for event in events {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            yield Ok::<_, Infallible>(Frame::data(Bytes::from(event)));
        }
        guard.1 = true;
    };
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .header("x-request-id", "req_upstream_stream")
        .body(StreamBody::new(stream).boxed())
        .unwrap()
}

fn split_sse(text: &str) -> Vec<String> {
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| format!("{e}\n\n"))
        .collect()
}

async fn route(shared: Arc<Shared>, req: Request<Incoming>) -> Response<Body> {
    shared.calls.fetch_add(1, Ordering::SeqCst);
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.to_string())
        .unwrap_or_default();
    shared.seen.lock().unwrap().push(Seen {
        method: parts.method.to_string(),
        version: parts.version,
        path_and_query: pq.clone(),
        headers: parts.headers.clone(),
        body: body.clone(),
    });
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let stream = json["stream"].as_bool().unwrap_or(false);
    let path = parts.uri.path().to_owned();
    let delay_ms: u64 = parts
        .headers
        .get("x-mock-chunk-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let delay = Duration::from_millis(delay_ms);
    if let Some(ms) = parts
        .headers
        .get("x-mock-header-delay-ms")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
    {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    if let Some(form) = parts.headers.get("x-mock-answer-form") {
        let form = form.to_str().unwrap_or_default().to_owned();
        return answer_in_form(shared, &form);
    }
    match path.as_str() {
        p if parts.headers.contains_key("x-mock-hold-end") => {
            // The whole stream, its terminal event included, then a body
            // that stays open: its end would come in a later packet.
            let name = if p.ends_with("/responses") {
                "responses_stream.sse"
            } else {
                "chat_stream.sse"
            };
            let events = split_sse(&fixture(name));
            let stream = async_stream::stream! {
                for event in events {
                    yield Ok::<_, Infallible>(Frame::data(Bytes::from(event)));
                }
                std::future::pending::<()>().await;
            };
            Response::builder()
                .header("content-type", "text/event-stream; charset=utf-8")
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
        p if p.ends_with("/chat/completions") && parts.headers.contains_key("x-mock-endless") => {
            let events: Vec<String> = (0..1000)
                .map(|i| format!("data: {{\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"tok{i} \"}},\"finish_reason\":null}}]}}\n\n"))
                .collect();
            sse(shared, events, Duration::from_millis(delay_ms.max(20)))
        }
        p if p.ends_with("/chat/completions") && parts.headers.contains_key("x-mock-card") => {
            if stream {
                let chunk = |content: &str| {
                    format!("data: {{\"id\":\"chatcmpl-C\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n", serde_json::Value::String(content.to_owned()))
                };
                let events = vec![
                    chunk("Your card is 4111 "),
                    chunk("1111 11"),
                    chunk("11 1111, keep it safe."),
                    chunk(" More text."),
                    "data: [DONE]\n\n".to_owned(),
                ];
                sse(shared, events, delay)
            } else {
                full(
                    StatusCode::OK,
                    "application/json",
                    r#"{"id":"chatcmpl-C","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"The card on file is 4111-1111-1111-1111."},"finish_reason":"stop"}],"usage":{"prompt_tokens":5,"completion_tokens":9,"total_tokens":14}}"#,
                )
            }
        }
        p if p.ends_with("/chat/completions") && stream => {
            let name = if json["tools"].is_array() {
                "chat_stream_tools.sse"
            } else {
                "chat_stream.sse"
            };
            sse(shared, split_sse(&fixture(name)), delay)
        }
        p if p.ends_with("/chat/completions") => {
            let body = fixture("chat_completion.json");
            if parts
                .headers
                .get("accept-encoding")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|v| v.contains("gzip"))
            {
                use std::io::Write;
                let mut enc =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                enc.write_all(body.as_bytes()).unwrap();
                let gz = enc.finish().unwrap();
                let mut r = full(StatusCode::OK, "application/json", gz);
                r.headers_mut()
                    .insert("content-encoding", "gzip".parse().unwrap());
                return r;
            }
            full(StatusCode::OK, "application/json", body)
        }
        // As OpenAI does: vectors as base64 of little-endian f32s when the
        // request asks for them so (the Node SDK does by default).
        p if p.ends_with("/embeddings") && json["encoding_format"] == "base64" => {
            let mut answer: serde_json::Value =
                serde_json::from_str(&fixture("embeddings.json")).unwrap();
            let floats: Vec<u8> = answer["data"][0]["embedding"]
                .as_array()
                .unwrap()
                .iter()
                .flat_map(|f| (f.as_f64().unwrap() as f32).to_le_bytes())
                .collect();
            use base64::Engine as _;
            answer["data"][0]["embedding"] = base64::engine::general_purpose::STANDARD
                .encode(floats)
                .into();
            full(StatusCode::OK, "application/json", answer.to_string())
        }
        p if p.ends_with("/embeddings") => full(
            StatusCode::OK,
            "application/json",
            fixture("embeddings.json"),
        ),
        p if p.ends_with("/responses") && stream => {
            sse(shared, split_sse(&fixture("responses_stream.sse")), delay)
        }
        p if p.ends_with("/responses") => full(
            StatusCode::OK,
            "application/json",
            fixture("responses.json"),
        ),
        p if p.ends_with("/models") => full(
            StatusCode::OK,
            "application/json",
            r#"{"object":"list","data":[{"id":"gpt-4o-mini","object":"model"}]}"#,
        ),
        "/v1/rate-limited" => {
            let mut r = full(
                StatusCode::TOO_MANY_REQUESTS,
                "application/json",
                r#"{"error":{"message":"Rate limit reached","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
            );
            r.headers_mut().insert("retry-after", "7".parse().unwrap());
            r
        }
        "/v1/echo" => {
            let ct = parts.headers.get("content-type").cloned();
            let mut r = full(StatusCode::OK, "application/octet-stream", body);
            if let Some(ct) = ct {
                r.headers_mut().insert("content-type", ct);
            }
            r
        }
        "/v1/gzip-bomb" => {
            // 1000 MiB of NUL bytes, gzip-compressed to about 1 MB.
            let mut r = full(StatusCode::OK, "application/json", gzip_bomb(1000 << 20));
            r.headers_mut()
                .insert("content-encoding", "gzip".parse().unwrap());
            r
        }
        "/v1/silent-stream" => {
            // Sends one chunk, then nothing, forever.
            let stream = async_stream::stream! {
                yield Ok::<_, Infallible>(Frame::data(Bytes::from_static(b"data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"}}]}\n\n")));
                std::future::pending::<()>().await;
            };
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(StreamBody::new(stream).boxed())
                .unwrap()
        }
        _ => full(
            StatusCode::NOT_FOUND,
            "application/json",
            r#"{"error":{"message":"Unknown path","type":"invalid_request_error","param":null,"code":null}}"#,
        ),
    }
}

/// About `decoded_len` NUL bytes (whole MiBs), gzip-compressed: a small
/// body that decodes to a very large one. One member of 1 MiB of NULs
/// repeated: gzip decoders run on through concatenated members, so 1000
/// members make a 1 MB body that decodes to 1 GiB, built in no time.
pub fn gzip_bomb(decoded_len: usize) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    enc.write_all(&vec![0u8; 1 << 20]).unwrap();
    let member = enc.finish().unwrap();
    member.repeat((decoded_len >> 20).max(1))
}

/// The chunks of the streamed answer in which a card is split across
/// chunks, as an independent review reported it.
pub const SPLIT_CARD_CHUNKS: &[&str] = &[
    "Your card: ",
    "5555 55",
    "55 55",
    "55 4444",
    ". ",
    "more text",
];

/// A clean prose answer with numbers and punctuation, one token a chunk.
pub const PROSE_CHUNKS: &[&str] = &[
    "Sure",
    ".",
    " Start",
    " with",
    " the",
    " pool",
    ":",
    " 32",
    " workers",
    " and",
    " a",
    " pool",
    " of",
    " 10",
    ",",
    " so",
    " requests",
    " queue",
    ".",
    " Check",
    " `max",
    "_connections",
    "`",
    " and",
    " the",
    " retry",
    " policy",
    " (3",
    " retries",
    ",",
    " 250",
    " ms",
    ").",
    "\n\n",
    "Version",
    " 2",
    ".14",
    ".3",
    " fixed",
    " it",
    ".",
];

/// The SSE events of a chat stream writing `chunks`, then `[DONE]`.
pub fn chat_sse(chunks: &[&str]) -> Vec<String> {
    let mut events: Vec<String> = chunks
        .iter()
        .map(|c| {
            format!(
                "data: {{\"id\":\"chatcmpl-F\",\"object\":\"chat.completion.chunk\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":{}}},\"finish_reason\":null}}]}}\n\n",
                serde_json::Value::String((*c).to_owned())
            )
        })
        .collect();
    events.push("data: [DONE]\n\n".to_owned());
    events
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Answers in the forms an upstream may use, chosen by the
/// `x-mock-answer-form` header: `split-card` (the split card as a plain
/// event stream), `gzip-sse` (the same, gzip-compressed), `untyped-sse` (the
/// same as `application/json`), `text` (a card in `text/plain`), `big-json`
/// (a card in a 40 KB completion), `bad-encoding` (`Content-Encoding:
/// compress`), `prose` (a clean prose stream).
fn answer_in_form(shared: Arc<Shared>, form: &str) -> Response<Body> {
    let with = |mut r: Response<Body>, name: &'static str, value: &'static str| {
        r.headers_mut().insert(name, value.parse().unwrap());
        r
    };
    let card_completion = |pad: usize| {
        serde_json::json!({"id": "chatcmpl-B", "object": "chat.completion", "model": "gpt-4o-mini",
            "choices": [{"index": 0, "message": {"role": "assistant",
                "content": format!("{}Your card: 5555 5555 5555 4444. more text", " ".repeat(pad))},
                "finish_reason": "stop"}]})
        .to_string()
    };
    match form {
        "split-card" => sse(shared, chat_sse(SPLIT_CARD_CHUNKS), Duration::ZERO),
        "prose" => sse(shared, chat_sse(PROSE_CHUNKS), Duration::ZERO),
        "gzip-sse" => {
            // Compressed once, sent in small frames as a stream would be.
            let gz = gzip(chat_sse(SPLIT_CARD_CHUNKS).concat().as_bytes());
            let frames: Vec<Result<Frame<Bytes>, Infallible>> = gz
                .chunks(16)
                .map(|c| Ok(Frame::data(Bytes::copy_from_slice(c))))
                .collect();
            Response::builder()
                .header("content-type", "text/event-stream")
                .header("content-encoding", "gzip")
                .body(StreamBody::new(futures_util::stream::iter(frames)).boxed())
                .unwrap()
        }
        "untyped-sse" => {
            let mut r = sse(shared, chat_sse(SPLIT_CARD_CHUNKS), Duration::ZERO);
            r.headers_mut()
                .insert("content-type", "application/json".parse().unwrap());
            r
        }
        "text" => full(
            StatusCode::OK,
            "text/plain; charset=utf-8",
            "Your card: 5555 5555 5555 4444. more text",
        ),
        "big-json" => full(StatusCode::OK, "application/json", card_completion(40_000)),
        "bad-encoding" => with(
            full(StatusCode::OK, "application/json", card_completion(0)),
            "content-encoding",
            "compress",
        ),
        _ => full(StatusCode::BAD_REQUEST, "text/plain", "unknown answer form"),
    }
}
